//! The node installer, `plexus install`: what the Helm chart's DaemonSet runs on every node (thin mode).
//!
//! - copies the `plexus` binary (and `plexus-shim`, thick mode's plugin) into the host's CNI bin dir atomically (a
//!   temporary file in the same dir, then a rename: a runtime calling either meanwhile runs the old or the new file,
//!   never a half-written one, and never hits "text file busy");
//! - writes the plugin's kubeconfig (mode 0600) from the pod's service account (token, CA, KUBERNETES_SERVICE_HOST
//!   and _PORT) and writes it again whenever the projected token changes (the kubelet rotates it well before it
//!   expires);
//! - waits for the cluster network's config in the host's CNI conf dir (the first conf file libcni would load that is
//!   not Plexus's own, nor another meta-plugin's, and that parses), then writes `00-plexus.conflist` delegating to it
//!   (or to a configured `clusterNetwork`), and writes it again when that config changes;
//! - on exit leaves everything in place (a restart or an upgrade: pods created meanwhile still get all their
//!   networks); [`cleanup`] removes what the installer wrote, and only that (the chart runs it when the DaemonSet
//!   itself is gone, i.e. on `helm uninstall`).
//!
//! Thick mode (`--mode thick`): the conf names `plexus-shim`, which forwards each request to the node daemon's socket
//! (`daemonSocketDir`); no kubeconfig is written (the daemon has its own credentials), and one left by thin mode is
//! removed.
//!
//! Of several installers on one node (the old and the new pod during a rolling update), only the one that started
//! last writes: each claims the node at start (`plexus.d/owner`) and stops writing once another claimed it.

use std::path::{Path, PathBuf};

/// The conf file the installer writes into the CNI conf dir (sorted first, so the runtime loads it).
pub const CONF_NAME: &str = "00-plexus.conflist";
/// The installer's own directory inside the CNI conf dir: the kubeconfig and the owner claim.
pub const STATE_DIR_NAME: &str = "plexus.d";
pub const KUBECONFIG_NAME: &str = "plexus.kubeconfig";
/// Thick mode: the cluster network's conf, copied for the daemon (the chart's `clusterNetwork` of the daemon names it).
pub const CLUSTER_NETWORK_NAME: &str = "cluster-network.conflist";
const OWNER_NAME: &str = "owner";
/// The name of the binary in the CNI bin dir (what the conf's `type` names in thin mode).
pub const BINARY_NAME: &str = "plexus";
/// Thick mode's plugin in the CNI bin dir (what the conf's `type` names in thick mode): the shim alone, a small
/// binary of its own (`src/bin/plexus-shim.rs`).
pub const SHIM_BINARY_NAME: &str = "plexus-shim";
/// The network name of the written conflist.
pub const NETWORK_NAME: &str = "plexus-cni-network";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the service account: {0}")]
    ServiceAccount(String),
    #[error("the plugin config {path}: {msg}")]
    PluginConfig { path: PathBuf, msg: String },
    #[error("the generated conf would not load: {0}")]
    Generated(String),
    #[error("{0}")]
    Runtime(String),
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// How the runtime's `plexus` works on this node.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `plexus` asks the API server itself, with the kubeconfig the installer writes.
    #[default]
    Thin,
    /// `plexus` forwards each request to `plexus-daemon` on the node.
    Thick,
}

/// `plexus install`: the command line (each flag also an environment variable, for the DaemonSet's spec).
#[derive(clap::Args, Debug, Clone)]
pub struct InstallArgs {
    /// Where the host's root (or the parts of it the chart mounts) is visible in this container; every host path
    /// below is read and written under it.
    #[arg(long, env = "PLEXUS_HOST_ROOT", default_value = "/host")]
    pub host_root: PathBuf,
    /// thin: write the plugin's kubeconfig; thick: a shim conf pointing at the node daemon's socket.
    #[arg(long, env = "PLEXUS_MODE", value_enum, default_value = "thin")]
    pub mode: Mode,
    /// thick: the host dir of the node daemon's socket (`daemonSocketDir`).
    #[arg(long, env = "PLEXUS_DAEMON_SOCKET_DIR", default_value = "/run/plexus")]
    pub daemon_socket_dir: PathBuf,
    /// The host's CNI bin dir (host path).
    #[arg(long, env = "PLEXUS_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// The host's CNI conf dir (host path).
    #[arg(long, env = "PLEXUS_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The binary to copy (default: the running one).
    #[arg(long, env = "PLEXUS_BINARY")]
    pub binary: Option<PathBuf>,
    /// The `plexus-shim` binary to copy (default: `plexus-shim` beside the binary above). Needed in thick mode, whose
    /// conf names it; in thin mode copied when it is there.
    #[arg(long, env = "PLEXUS_SHIM_BINARY")]
    pub shim_binary: Option<PathBuf>,
    /// A JSON file with more keys of Plexus's config (namespaceIsolation, logLevel, ...), merged into the plugin.
    #[arg(long, env = "PLEXUS_PLUGIN_CONFIG")]
    pub plugin_config: Option<PathBuf>,
    /// Delegate to this network (a NAD or conf name, or an absolute path) instead of the first conf in the conf dir.
    #[arg(long, env = "PLEXUS_CLUSTER_NETWORK")]
    pub cluster_network: Option<String>,
    /// A host file that must exist before the conf is written; also written into the conf
    /// (`readinessindicatorfile`), so each ADD waits for it too.
    #[arg(long, env = "PLEXUS_READINESS_INDICATOR_FILE")]
    pub readiness_indicator_file: Option<PathBuf>,
    /// cniVersion of the written conflist (default: the cluster network's).
    #[arg(long, env = "PLEXUS_CNI_VERSION")]
    pub cni_version: Option<String>,
    /// The service account's projected volume (token, ca.crt).
    #[arg(
        long,
        env = "PLEXUS_SERVICE_ACCOUNT_DIR",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount"
    )]
    pub service_account_dir: PathBuf,
    /// How often to look at the token, the cluster network's config and the written files, in seconds.
    #[arg(long, env = "PLEXUS_INSTALL_INTERVAL_SECONDS", default_value_t = 1.0)]
    pub interval_seconds: f64,
    /// Written (in this container) once the binary, the kubeconfig and the conf are in place: the readiness probe
    /// (`plexus install --check`) looks for it.
    #[arg(
        long,
        env = "PLEXUS_READY_FILE",
        default_value = "/run/plexus/installed"
    )]
    pub ready_file: PathBuf,
    /// The DaemonSet running this installer, `namespace/name`: on SIGTERM, when it no longer exists (helm uninstall),
    /// the installer removes what it wrote; otherwise (restart, upgrade) it leaves everything in place.
    #[arg(long, env = "PLEXUS_DAEMONSET")]
    pub daemonset: Option<String>,
    /// This node's name (the chart passes the pod's `spec.nodeName`): with it the installer publishes its status
    /// to the node's status Lease (`kubectl plexus status`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The namespace of the status Lease (default: the service account's, from `namespace` in its dir).
    #[arg(long, env = "PLEXUS_STATUS_NAMESPACE")]
    pub status_namespace: Option<String>,
    /// Remove what the installer wrote, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Exit 0 when the ready file exists (the readiness probe), 1 otherwise.
    #[arg(long)]
    pub check: bool,
}

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub kubeconfig_written: bool,
    pub conf_written: bool,
    /// The conf is in place (written now or earlier).
    pub conf_present: bool,
    /// Why the conf is not (yet) written, if it is not.
    pub waiting_for: Option<String>,
    /// The cluster network the conf delegates to (a host path, or the configured name), once known.
    pub cluster_network: Option<String>,
}

/// The paths the installer reads and writes, as seen in this container, and as the plugin on the host sees them.
#[derive(Debug, Clone)]
pub struct Layout {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub host_bin_dir: PathBuf,
    pub host_conf_dir: PathBuf,
    pub readiness_file: Option<PathBuf>,
    pub host_readiness_file: Option<PathBuf>,
}

impl Layout {
    pub fn new(args: &InstallArgs) -> Self {
        let under_root = |p: &Path| args.host_root.join(p.strip_prefix("/").unwrap_or(p));
        Self {
            bin_dir: under_root(&args.cni_bin_dir),
            conf_dir: under_root(&args.cni_conf_dir),
            host_bin_dir: args.cni_bin_dir.clone(),
            host_conf_dir: args.cni_conf_dir.clone(),
            readiness_file: args.readiness_indicator_file.as_deref().map(under_root),
            host_readiness_file: args.readiness_indicator_file.clone(),
        }
    }

    pub fn conf(&self) -> PathBuf {
        self.conf_dir.join(CONF_NAME)
    }
    pub fn state_dir(&self) -> PathBuf {
        self.conf_dir.join(STATE_DIR_NAME)
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.state_dir().join(KUBECONFIG_NAME)
    }
    /// Thick mode: the cluster network's conf as the installer found it, for the daemon, whose `clusterNetwork`
    /// names it (the daemon takes no network from the runtime's request).
    pub fn cluster_network_file(&self) -> PathBuf {
        self.state_dir().join(CLUSTER_NETWORK_NAME)
    }
    pub fn host_kubeconfig(&self) -> PathBuf {
        self.host_conf_dir
            .join(STATE_DIR_NAME)
            .join(KUBECONFIG_NAME)
    }
    pub fn binary(&self) -> PathBuf {
        self.bin_dir.join(BINARY_NAME)
    }
    pub fn shim_binary(&self) -> PathBuf {
        self.bin_dir.join(SHIM_BINARY_NAME)
    }
    fn owner(&self) -> PathBuf {
        self.state_dir().join(OWNER_NAME)
    }
}

mod binary;
mod conf;
mod credentials;
mod daemonset;
mod lifecycle;
mod status;

pub use binary::{install_binary, write_atomically, write_if_changed};
pub use conf::{
    ConfSettings, Primary, RuntimeConf, find_primary, plexus_conflist, read_plugin_config,
};
pub use credentials::ServiceAccount;
pub use lifecycle::{Binaries, Installer, cleanup, main};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_read_under_the_host_root() {
        let args = InstallArgs {
            mode: Mode::Thin,
            daemon_socket_dir: "/run/plexus".into(),
            host_root: "/host".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            binary: None,
            shim_binary: None,
            plugin_config: None,
            cluster_network: None,
            readiness_indicator_file: Some("/run/flannel/ready".into()),
            cni_version: None,
            service_account_dir: "/sa".into(),
            interval_seconds: 1.0,
            ready_file: "/run/plexus/installed".into(),
            daemonset: None,
            node_name: None,
            status_namespace: None,
            cleanup: false,
            check: false,
        };
        let l = Layout::new(&args);
        assert_eq!(l.bin_dir, Path::new("/host/opt/cni/bin"));
        assert_eq!(
            l.conf(),
            Path::new("/host/etc/cni/net.d/00-plexus.conflist")
        );
        assert_eq!(
            l.host_kubeconfig(),
            Path::new("/etc/cni/net.d/plexus.d/plexus.kubeconfig")
        );
        assert_eq!(
            l.readiness_file.as_deref(),
            Some(Path::new("/host/run/flannel/ready"))
        );
    }
}
