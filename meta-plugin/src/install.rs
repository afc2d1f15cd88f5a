//! The node installer, `plexus install`: what the Helm chart's DaemonSet runs on every node (thin mode).
//!
//! - copies the `plexus` binary into the host's CNI bin dir atomically (a temporary file in the same dir, then a
//!   rename: a runtime calling `plexus` meanwhile runs either the old or the new file, never a half-written one, and
//!   never hits "text file busy");
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
//! Thick mode (`--mode thick`): the conf makes `plexus` a shim that forwards each request to the node daemon's socket
//! (`daemonSocketDir`); no kubeconfig is written (the daemon has its own credentials), and one left by thin mode is
//! removed.
//!
//! Of several installers on one node (the old and the new pod during a rolling update), only the one that started
//! last writes: each claims the node at start (`plexus.d/owner`) and stops writing once another claimed it.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_api::cni::NetworkConfigList;
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::config::Config;
use crate::files;

/// The conf file the installer writes into the CNI conf dir (sorted first, so the runtime loads it).
pub const CONF_NAME: &str = "00-plexus.conflist";
/// The installer's own directory inside the CNI conf dir: the kubeconfig and the owner claim.
pub const STATE_DIR_NAME: &str = "plexus.d";
pub const KUBECONFIG_NAME: &str = "plexus.kubeconfig";
const OWNER_NAME: &str = "owner";
/// The name of the binary in the CNI bin dir (what the conf's `type` names).
pub const BINARY_NAME: &str = "plexus";
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
    /// Remove what the installer wrote, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Exit 0 when the ready file exists (the readiness probe), 1 otherwise.
    #[arg(long)]
    pub check: bool,
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
    pub fn host_kubeconfig(&self) -> PathBuf {
        self.host_conf_dir
            .join(STATE_DIR_NAME)
            .join(KUBECONFIG_NAME)
    }
    pub fn binary(&self) -> PathBuf {
        self.bin_dir.join(BINARY_NAME)
    }
    fn owner(&self) -> PathBuf {
        self.state_dir().join(OWNER_NAME)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory (named so that libcni ignores it) and a
/// rename, so readers see the old or the new content, never a mix; `mode` is set before the rename, and the
/// directory is synced after it. The temporary file is new and unique to this call ([`files::create_temp`]): two
/// installers (a rolling update's old and new pod) never write the same one. A directory watcher (containerd's)
/// sees a rename event, which it reloads on.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mut f, tmp) =
        files::create_temp(dir, &name, mode).map_err(io("create a temporary file for", path))?;
    let result = (|| {
        f.write_all(bytes).map_err(io("write", &tmp))?;
        // The mode given to open is masked by the umask.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("chmod", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        files::sync_dir(dir).map_err(io("sync", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` unless `path` already holds exactly them; true when it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, InstallError> {
    let same_content = fs::read(path).is_ok_and(|current| current == bytes);
    let same_mode = fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode);
    if same_content && same_mode {
        return Ok(false);
    }
    write_atomically(path, bytes, mode)?;
    Ok(true)
}

/// Copies the binary into the bin dir (atomically, mode 0755) unless the same bytes are there already.
pub fn install_binary(source: &Path, layout: &Layout) -> Result<bool, InstallError> {
    let bytes = fs::read(source).map_err(io("read", source))?;
    write_if_changed(&layout.binary(), &bytes, 0o755)
}

/// The pod's service account as the kubeconfig needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub server: String,
    pub ca_pem: Vec<u8>,
    pub token: String,
}

impl ServiceAccount {
    /// Reads the token and CA from `dir` and the API server's address from KUBERNETES_SERVICE_HOST/PORT.
    pub fn read(dir: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Self, InstallError> {
        let host = env("KUBERNETES_SERVICE_HOST")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                InstallError::ServiceAccount("KUBERNETES_SERVICE_HOST is not set".into())
            })?;
        let port = env("KUBERNETES_SERVICE_PORT")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "443".into());
        if port.parse::<u16>().is_err() {
            return Err(InstallError::ServiceAccount(format!(
                "KUBERNETES_SERVICE_PORT={port:?} is not a port number"
            )));
        }
        let server = if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        };
        let token_path = dir.join("token");
        let token = fs::read_to_string(&token_path)
            .map_err(io("read", &token_path))?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(InstallError::ServiceAccount(format!(
                "{} is empty",
                token_path.display()
            )));
        }
        let ca_path = dir.join("ca.crt");
        let ca_pem = fs::read(&ca_path).map_err(io("read", &ca_path))?;
        Ok(Self {
            server,
            ca_pem,
            token,
        })
    }

    /// The plugin's kubeconfig (JSON, which is YAML too): the server, the CA inline, the token inline.
    pub fn kubeconfig(&self) -> Vec<u8> {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": "plexus", "user": {"token": self.token}}],
            "contexts": [{"name": "plexus", "context": {"cluster": "local", "user": "plexus"}}],
            "current-context": "plexus",
        });
        let mut text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        text.push(b'\n');
        text
    }
}

/// The cluster network found in the conf dir: the file and its content.
#[derive(Debug, Clone, PartialEq)]
pub struct Primary {
    pub path: PathBuf,
    pub config: Value,
}

/// Why a conf file in the conf dir is not the cluster network: the plugin's parser refuses it, which it does for every
/// conf naming a meta-plugin (Plexus itself, `multus`, or Multus thick's `multus-shim`): a delegate that delegates back
/// would loop, or attach the secondary networks twice.
fn disqualified(value: &Value) -> Option<String> {
    NetworkConfigList::from_value(value.clone())
        .err()
        .map(|e| e.to_string())
}

/// The cluster network: the first file (by name, as libcni orders them) ending in .conf, .conflist or .json that is
/// not the installer's own, parses, has plugins with types, and is not a meta-plugin (Plexus, Multus).
pub fn find_primary(conf_dir: &Path) -> Result<Option<Primary>, InstallError> {
    let mut names: Vec<PathBuf> = match fs::read_dir(conf_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("conf" | "conflist" | "json")
                    )
                    && p.file_name().is_some_and(|n| n != CONF_NAME)
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("list", conf_dir)(e)),
    };
    names.sort();
    for path in names {
        let Ok(text) = fs::read(&path) else { continue };
        let value: Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(file = %path.display(), error = %e, "not the cluster network: not JSON");
                continue;
            }
        };
        if let Some(why) = disqualified(&value) {
            tracing::debug!(file = %path.display(), %why, "not the cluster network");
            continue;
        }
        return Ok(Some(Primary {
            path,
            config: value,
        }));
    }
    Ok(None)
}

/// What the written conflist is made of, besides the cluster network.
#[derive(Debug, Clone, Default)]
pub struct ConfSettings {
    /// More of Plexus's config keys (from the chart's values).
    pub plugin_config: Map<String, Value>,
    pub host_bin_dir: PathBuf,
    pub host_kubeconfig: PathBuf,
    pub cluster_network: Option<String>,
    pub host_readiness_file: Option<PathBuf>,
    pub cni_version: Option<String>,
    pub mode: Mode,
    /// thick: written as `daemonSocketDir`.
    pub daemon_socket_dir: PathBuf,
}

/// The conflist Plexus's conf file holds: one plugin, `plexus`, in Kubernetes mode, delegating to `primary` (inline,
/// as its first delegate) or to the configured `clusterNetwork`. It declares the capabilities the cluster network's
/// plugins declare, so the runtime passes their arguments (port mappings, bandwidth, ...) on to Plexus, which hands
/// them to the default network. Checked by loading it with the plugin's own config parser.
pub fn plexus_conflist(
    primary: Option<&Primary>,
    settings: &ConfSettings,
) -> Result<Value, InstallError> {
    let mut plugin = settings.plugin_config.clone();
    plugin.insert("type".into(), json!(BINARY_NAME));
    match settings.mode {
        Mode::Thin => {
            plugin.remove("daemonSocketDir");
            plugin.insert(
                "kubeconfig".into(),
                json!(settings.host_kubeconfig.display().to_string()),
            );
        }
        Mode::Thick => {
            plugin.remove("kubeconfig");
            plugin.insert(
                "daemonSocketDir".into(),
                json!(settings.daemon_socket_dir.display().to_string()),
            );
        }
    }
    plugin.insert(
        "binDir".into(),
        json!(settings.host_bin_dir.display().to_string()),
    );
    if let Some(file) = &settings.host_readiness_file {
        plugin.insert(
            "readinessindicatorfile".into(),
            json!(file.display().to_string()),
        );
    }
    let mut capabilities: BTreeSet<String> = BTreeSet::new();
    let primary_version = match (&settings.cluster_network, primary) {
        (Some(network), _) => {
            plugin.insert("clusterNetwork".into(), json!(network));
            plugin.remove("delegates");
            None
        }
        (None, Some(p)) => {
            let list = NetworkConfigList::from_value(p.config.clone())
                .map_err(|e| InstallError::Generated(format!("{}: {e}", p.path.display())))?;
            for plugin in &list.plugins {
                if let Some(Value::Object(caps)) = plugin.raw().get("capabilities") {
                    capabilities.extend(
                        caps.iter()
                            .filter(|(_, v)| v.as_bool() == Some(true))
                            .map(|(k, _)| k.clone()),
                    );
                }
            }
            plugin.remove("clusterNetwork");
            plugin.insert("delegates".into(), json!([p.config]));
            Some(list.cni_version).filter(|v| !v.is_empty())
        }
        (None, None) => {
            return Err(InstallError::Generated(
                "no cluster network: neither a conf file nor clusterNetwork".into(),
            ));
        }
    };
    if !capabilities.is_empty() {
        let caps = plugin
            .entry("capabilities")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(caps) = caps {
            for c in capabilities {
                caps.entry(c).or_insert(json!(true));
            }
        }
    }
    let cni_version = settings
        .cni_version
        .clone()
        .or(primary_version)
        .unwrap_or_else(|| "1.0.0".into());
    let conflist = json!({
        "cniVersion": cni_version,
        "name": NETWORK_NAME,
        "plugins": [plugin],
    });
    // What the runtime will hand the plugin: the plugin object with the list's name and version.
    let mut as_called = conflist["plugins"][0].clone();
    as_called["cniVersion"] = json!(cni_version);
    as_called["name"] = json!(NETWORK_NAME);
    let text = serde_json::to_vec(&as_called).unwrap_or_default();
    let config = Config::load(&text).map_err(|e| InstallError::Generated(e.to_string()))?;
    let credentials = match settings.mode {
        Mode::Thin => config.kubeconfig.is_some(),
        Mode::Thick => crate::shim::Shim::from_stdin(&text).is_some_and(|s| s.is_ok()),
    };
    if !credentials || (config.cluster_network.is_none() && config.delegates.is_empty()) {
        return Err(InstallError::Generated(
            "it has no kubeconfig (thin) or daemon socket (thick), or no cluster network".into(),
        ));
    }
    Ok(conflist)
}

fn conf_bytes(conflist: &Value) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(conflist).unwrap_or_default();
    text.push(b'\n');
    text
}

/// True when the file at `path` is a conf the installer wrote (its only plugin is `plexus`).
fn is_plexus_conf(path: &Path) -> bool {
    fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice::<Value>(&t).ok())
        .is_some_and(|v| v["plugins"][0]["type"] == BINARY_NAME && v["name"] == NETWORK_NAME)
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
}

/// The long-running part: everything but the binary, once per interval.
pub struct Installer {
    pub layout: Layout,
    pub settings: ConfSettings,
    pub service_account_dir: PathBuf,
    pub identity: String,
    env: fn(&str) -> Option<String>,
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Installer {
    pub fn new(layout: Layout, settings: ConfSettings, service_account_dir: PathBuf) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let identity = format!(
            "{}-{}-{}",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id(),
            now.as_nanos()
        );
        Self {
            layout,
            settings,
            service_account_dir,
            identity,
            env: process_env,
        }
    }

    /// Replaces where KUBERNETES_SERVICE_HOST/PORT come from (tests).
    pub fn with_env(mut self, env: fn(&str) -> Option<String>) -> Self {
        self.env = env;
        self
    }

    /// Claims the node: from now on this installer writes, and an older one on the same node stops.
    pub fn claim(&self) -> Result<(), InstallError> {
        let dir = self.layout.state_dir();
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io("chmod", &dir))?;
        write_atomically(&self.layout.owner(), self.identity.as_bytes(), 0o600)
    }

    /// True while no other installer claimed the node after this one.
    pub fn owns(&self) -> bool {
        fs::read_to_string(self.layout.owner()).is_ok_and(|o| o == self.identity)
    }

    /// One pass: the kubeconfig from the current token, then the conf from the current cluster network. Files are
    /// only written when their content differs.
    pub fn pass(&self) -> Result<Pass, InstallError> {
        let mut pass = Pass::default();
        match self.settings.mode {
            Mode::Thin => {
                let account = ServiceAccount::read(&self.service_account_dir, self.env)?;
                pass.kubeconfig_written =
                    write_if_changed(&self.layout.kubeconfig(), &account.kubeconfig(), 0o600)?;
            }
            // The daemon has its own credentials: no token on the host (one left by thin mode goes).
            Mode::Thick => {
                let kubeconfig = self.layout.kubeconfig();
                if kubeconfig.exists() {
                    fs::remove_file(&kubeconfig).map_err(io("remove", &kubeconfig))?;
                }
            }
        }
        if let Some(file) = &self.layout.readiness_file
            && !file.exists()
        {
            pass.conf_present = self.layout.conf().exists();
            pass.waiting_for = Some(format!(
                "the readiness indicator file {}",
                self.settings
                    .host_readiness_file
                    .as_deref()
                    .unwrap_or(file)
                    .display()
            ));
            return Ok(pass);
        }
        let primary = if self.settings.cluster_network.is_some() {
            None
        } else {
            match find_primary(&self.layout.conf_dir)? {
                Some(p) => Some(p),
                None => {
                    // The cluster network's file went away (or never came): keep what is there.
                    pass.conf_present = self.layout.conf().exists();
                    pass.waiting_for = Some(format!(
                        "the cluster network's conf file in {}",
                        self.layout.host_conf_dir.display()
                    ));
                    return Ok(pass);
                }
            }
        };
        let conflist = plexus_conflist(primary.as_ref(), &self.settings)?;
        pass.conf_written = write_if_changed(&self.layout.conf(), &conf_bytes(&conflist), 0o600)?;
        pass.conf_present = true;
        if pass.conf_written {
            match &primary {
                Some(p) => {
                    info!(conf = %self.layout.conf().display(), cluster_network = %p.path.display(), "wrote the conf")
                }
                None => info!(conf = %self.layout.conf().display(), "wrote the conf"),
            }
        }
        Ok(pass)
    }
}

/// Removes what the installer writes: the conf (when it is Plexus's), the installer's directory (kubeconfig,
/// owner), and the binary when it holds the bytes of `binary` (the one the installer copied). Anything else in the
/// dirs stays. Returns the paths removed.
pub fn cleanup(layout: &Layout, binary: Option<&Path>) -> Result<Vec<PathBuf>, InstallError> {
    let mut removed = Vec::new();
    let conf = layout.conf();
    if is_plexus_conf(&conf) {
        fs::remove_file(&conf).map_err(io("remove", &conf))?;
        removed.push(conf);
    }
    let state = layout.state_dir();
    if state.exists() {
        fs::remove_dir_all(&state).map_err(io("remove", &state))?;
        removed.push(state);
    }
    let installed = layout.binary();
    if let Some(source) = binary
        && let (Ok(ours), Ok(there)) = (fs::read(source), fs::read(&installed))
        && ours == there
    {
        fs::remove_file(&installed).map_err(io("remove", &installed))?;
        removed.push(installed);
    }
    Ok(removed)
}

/// Reads the plugin config file (a JSON object).
pub fn read_plugin_config(path: &Path) -> Result<Map<String, Value>, InstallError> {
    let text = fs::read(path).map_err(io("read", path))?;
    match serde_json::from_slice(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(InstallError::PluginConfig {
            path: path.to_owned(),
            msg: "not a JSON object".into(),
        }),
        Err(e) => Err(InstallError::PluginConfig {
            path: path.to_owned(),
            msg: e.to_string(),
        }),
    }
}

/// Whether the DaemonSet `namespace/name` is gone (deleted or being deleted), asked with the pod's own service
/// account. `None` when the API server could not tell (then nothing is removed).
async fn daemonset_gone(reference: &str) -> Option<bool> {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let (namespace, name) = reference.split_once('/')?;
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "no API client; leaving the files in place");
            return None;
        }
    };
    let api: kube::Api<DaemonSet> = kube::Api::namespaced(client, namespace);
    match tokio::time::timeout(Duration::from_secs(10), api.get_opt(name)).await {
        Ok(Ok(None)) => Some(true),
        Ok(Ok(Some(ds))) => Some(ds.metadata.deletion_timestamp.is_some()),
        // The release's RBAC or service account already went with it.
        Ok(Err(kube::Error::Api(status))) if matches!(status.code, 401 | 403 | 404) => Some(true),
        Ok(Err(e)) => {
            warn!(error = %e, "could not ask whether the DaemonSet still exists; leaving the files in place");
            None
        }
        Err(_) => {
            warn!("no answer about the DaemonSet within 10s; leaving the files in place");
            None
        }
    }
}

/// `plexus install ...`: runs until SIGTERM/SIGINT (or `--cleanup`, `--check` once).
pub fn main(args: InstallArgs) -> Result<(), InstallError> {
    if args.check {
        return if args.ready_file.exists() {
            Ok(())
        } else {
            Err(InstallError::Runtime(format!(
                "not installed yet ({} is missing)",
                args.ready_file.display()
            )))
        };
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let layout = Layout::new(&args);
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(io("find", Path::new("the running binary")))?,
    };
    if args.cleanup {
        let removed = cleanup(&layout, Some(&binary))?;
        info!(?removed, "removed what the installer wrote");
        return Ok(());
    }
    if !(args.interval_seconds.is_finite() && args.interval_seconds > 0.0) {
        return Err(InstallError::Runtime(
            "--interval-seconds must be a positive number".into(),
        ));
    }
    let settings = ConfSettings {
        plugin_config: match &args.plugin_config {
            Some(p) => read_plugin_config(p)?,
            None => Map::new(),
        },
        host_bin_dir: layout.host_bin_dir.clone(),
        host_kubeconfig: layout.host_kubeconfig(),
        cluster_network: args.cluster_network.clone().filter(|c| !c.is_empty()),
        host_readiness_file: layout.host_readiness_file.clone(),
        cni_version: args.cni_version.clone().filter(|v| !v.is_empty()),
        mode: args.mode,
        daemon_socket_dir: args.daemon_socket_dir.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| InstallError::Runtime(e.to_string()))?;
    runtime.block_on(run(args, layout, settings, binary))
}

async fn run(
    args: InstallArgs,
    layout: Layout,
    settings: ConfSettings,
    binary: PathBuf,
) -> Result<(), InstallError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| InstallError::Runtime(e.to_string()))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| InstallError::Runtime(e.to_string()))?;
    let installer = Installer::new(layout.clone(), settings, args.service_account_dir.clone());
    installer.claim()?;
    if install_binary(&binary, &layout)? {
        info!(binary = %layout.binary().display(), "installed the plexus binary");
    }
    let interval = Duration::from_secs_f64(args.interval_seconds);
    let mut waiting: Option<String> = None;
    let mut last_error: Option<String> = None;
    let mut passive = false;
    loop {
        if installer.owns() {
            match installer.pass() {
                Ok(pass) => {
                    last_error = None;
                    if pass.kubeconfig_written {
                        info!(kubeconfig = %layout.kubeconfig().display(), "wrote the kubeconfig");
                    }
                    if pass.waiting_for != waiting {
                        if let Some(what) = &pass.waiting_for {
                            info!(conf_in_place = pass.conf_present, "waiting for {what}");
                        }
                        waiting = pass.waiting_for.clone();
                    }
                    if pass.conf_present && !args.ready_file.exists() {
                        if let Some(dir) = args.ready_file.parent() {
                            let _ = fs::create_dir_all(dir);
                        }
                        fs::write(&args.ready_file, b"").map_err(io("write", &args.ready_file))?;
                        info!("installed");
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_ref() != Some(&text) {
                        warn!(error = %text, "install pass failed; trying again");
                        last_error = Some(text);
                    }
                }
            }
        } else if !passive {
            info!("a newer installer claimed this node; no longer writing");
            passive = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    if let Some(ds) = &args.daemonset
        && installer.owns()
        && daemonset_gone(ds).await == Some(true)
    {
        let removed = cleanup(&layout, Some(&binary))?;
        info!(
            ?removed,
            "the DaemonSet is gone (uninstall): removed what the installer wrote"
        );
    } else {
        info!("stopping; the binary, the kubeconfig and the conf stay in place");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(name: &str) -> Value {
        json!({"cniVersion": "0.4.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "198.19.0.0/24"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]})
    }

    fn settings() -> ConfSettings {
        ConfSettings {
            host_bin_dir: "/opt/cni/bin".into(),
            host_kubeconfig: "/etc/cni/net.d/plexus.d/plexus.kubeconfig".into(),
            ..ConfSettings::default()
        }
    }

    #[test]
    fn concurrent_installers_never_share_a_temporary_file() {
        // Two installers (a rolling update's old and new pod) writing the same conf at once: every read sees one
        // whole version, and no temporary file is left.
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("00-plexus.conflist");
        let versions = [vec![b'a'; 64 * 1024], vec![b'b'; 32 * 1024]];
        std::thread::scope(|scope| {
            for version in &versions {
                let conf = &conf;
                scope.spawn(move || {
                    for _ in 0..200 {
                        write_atomically(conf, version, 0o644).unwrap();
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..400 {
                    if let Ok(seen) = fs::read(&conf) {
                        assert!(
                            versions.contains(&seen),
                            "a mixed or partial conf: {} bytes",
                            seen.len()
                        );
                    }
                }
            });
        });
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("00-plexus.conflist")]);
        let mode = fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn the_conf_delegates_to_the_cluster_network_inline_with_its_capabilities_and_version() {
        let primary = Primary {
            path: "/etc/cni/net.d/10-bridge.conflist".into(),
            config: bridge("pods"),
        };
        let conf = plexus_conflist(Some(&primary), &settings()).unwrap();
        assert_eq!(conf["cniVersion"], "0.4.0");
        assert_eq!(conf["name"], NETWORK_NAME);
        let plugin = &conf["plugins"][0];
        assert_eq!(plugin["type"], "plexus");
        assert_eq!(plugin["delegates"][0], bridge("pods"));
        assert_eq!(plugin["capabilities"], json!({"portMappings": true}));
        assert_eq!(
            plugin["kubeconfig"],
            "/etc/cni/net.d/plexus.d/plexus.kubeconfig"
        );
        assert_eq!(plugin["binDir"], "/opt/cni/bin");
        assert!(plugin.get("clusterNetwork").is_none());
    }

    #[test]
    fn a_configured_cluster_network_wins_and_extra_keys_are_kept_but_not_the_installers() {
        let mut s = settings();
        s.cluster_network = Some("k8s-pod-network".into());
        s.cni_version = Some("1.1.0".into());
        s.host_readiness_file = Some("/run/ready".into());
        s.plugin_config = serde_json::from_value(json!({
            "namespaceIsolation": true, "type": "something-else", "kubeconfig": "/elsewhere",
            "delegates": [bridge("x")]
        }))
        .unwrap();
        let conf = plexus_conflist(None, &s).unwrap();
        let plugin = &conf["plugins"][0];
        assert_eq!(conf["cniVersion"], "1.1.0");
        assert_eq!(plugin["clusterNetwork"], "k8s-pod-network");
        assert_eq!(plugin["namespaceIsolation"], true);
        assert_eq!(plugin["type"], "plexus");
        assert_eq!(plugin["readinessindicatorfile"], "/run/ready");
        assert_ne!(plugin["kubeconfig"], "/elsewhere");
        assert!(plugin.get("delegates").is_none());
    }

    #[test]
    fn a_thick_conf_is_a_shim_conf_without_a_kubeconfig() {
        let mut s = settings();
        s.mode = Mode::Thick;
        s.daemon_socket_dir = "/run/plexus".into();
        s.plugin_config = serde_json::from_value(json!({"kubeconfig": "/elsewhere"})).unwrap();
        let primary = Primary {
            path: "/x.conflist".into(),
            config: bridge("pods"),
        };
        let conf = plexus_conflist(Some(&primary), &s).unwrap();
        let plugin = &conf["plugins"][0];
        assert_eq!(plugin["daemonSocketDir"], "/run/plexus");
        assert!(plugin.get("kubeconfig").is_none());
        assert_eq!(plugin["delegates"][0], bridge("pods"));
    }

    #[test]
    fn no_cluster_network_is_no_conf() {
        assert!(matches!(
            plexus_conflist(None, &settings()),
            Err(InstallError::Generated(_))
        ));
    }

    #[test]
    fn plugin_config_the_plugin_refuses_is_no_conf() {
        let mut s = settings();
        s.plugin_config = serde_json::from_value(json!({"logLevel": "loud"})).unwrap();
        let primary = Primary {
            path: "/x.conflist".into(),
            config: bridge("pods"),
        };
        assert!(matches!(
            plexus_conflist(Some(&primary), &s),
            Err(InstallError::Generated(_))
        ));
    }

    #[test]
    fn meta_plugins_and_broken_files_are_never_the_cluster_network() {
        for bad in [
            json!({"cniVersion": "1.0.0", "name": "plexus-cni-network", "plugins": [{"type": "plexus"}]}),
            json!({"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus"}),
            // Multus thick's leftover 00-multus.conf.
            json!({"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus-shim", "socketDir": "/run/multus/"}),
            json!({"cniVersion": "1.0.0", "name": "nested", "plugins": [{"type": "bridge", "ipam": {"type": "plexus"}}]}),
            json!({"cniVersion": "1.0.0", "name": "empty", "plugins": []}),
            json!({"cniVersion": "1.0.0", "name": "untyped", "plugins": [{"bridge": "x"}]}),
            json!({}),
            json!([]),
        ] {
            assert!(disqualified(&bad).is_some(), "{bad}");
        }
        assert_eq!(disqualified(&bridge("pods")), None);
        assert_eq!(
            disqualified(&json!({"cniVersion": "0.3.1", "name": "single", "type": "bridge"})),
            None
        );
    }

    #[test]
    fn the_kubeconfig_names_the_server_the_ca_and_the_token() {
        let account = ServiceAccount::read(Path::new("/nonexistent"), |_| None);
        assert!(matches!(account, Err(InstallError::ServiceAccount(_))));
        let account = ServiceAccount {
            server: "https://[fd00::1]:6443".into(),
            ca_pem: b"PEM".to_vec(),
            token: "abc".into(),
        };
        let doc: Value = serde_json::from_slice(&account.kubeconfig()).unwrap();
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://[fd00::1]:6443"
        );
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(doc["users"][0]["user"]["token"], "abc");
    }

    #[test]
    fn host_paths_are_read_under_the_host_root() {
        let args = InstallArgs {
            mode: Mode::Thin,
            daemon_socket_dir: "/run/plexus".into(),
            host_root: "/host".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            binary: None,
            plugin_config: None,
            cluster_network: None,
            readiness_indicator_file: Some("/run/flannel/ready".into()),
            cni_version: None,
            service_account_dir: "/sa".into(),
            interval_seconds: 1.0,
            ready_file: "/run/plexus/installed".into(),
            daemonset: None,
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
