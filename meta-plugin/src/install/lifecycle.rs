//! The installer's life on a node: claim the node, write what is missing or changed, again every interval, and
//! clean up only when the DaemonSet itself is gone.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Map;
use tracing::{info, warn};

use super::conf::{conf_bytes, is_plexus_conf};
use super::{
    ConfSettings, InstallArgs, InstallError, Layout, Mode, Pass, ServiceAccount, find_primary,
    install_binary, io, plexus_conflist, read_plugin_config, write_atomically, write_if_changed,
};

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
        // Thick mode: the daemon trusts only its own config, never a network the runtime's request carries; the
        // cluster network found here reaches it through a root-owned file its `clusterNetwork` names, written first.
        if let (Mode::Thick, Some(p)) = (self.settings.mode, &primary) {
            write_if_changed(
                &self.layout.cluster_network_file(),
                &conf_bytes(&p.config),
                0o644,
            )?;
        }
        pass.cluster_network = match &primary {
            Some(p) => Some(
                p.path
                    .file_name()
                    .map(|f| self.layout.host_conf_dir.join(f))
                    .unwrap_or_else(|| p.path.clone())
                    .display()
                    .to_string(),
            ),
            None => self.settings.cluster_network.clone(),
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
/// owner), and each binary when it holds the bytes of the one the installer copied there (`binaries`: `plexus` and
/// `plexus-shim`). Anything else in the dirs stays. Returns the paths removed.
pub fn cleanup(layout: &Layout, binaries: &Binaries) -> Result<Vec<PathBuf>, InstallError> {
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
    for (source, installed) in [
        (&binaries.plexus, layout.binary()),
        (&binaries.shim, layout.shim_binary()),
    ] {
        if let (Ok(ours), Ok(there)) = (fs::read(source), fs::read(&installed))
            && ours == there
        {
            fs::remove_file(&installed).map_err(io("remove", &installed))?;
            removed.push(installed);
        }
    }
    Ok(removed)
}

/// The binaries the installer copies into the bin dir, where it copies them from.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `plexus` (default: the running binary).
    pub plexus: PathBuf,
    /// `plexus-shim` (default: beside `plexus`).
    pub shim: PathBuf,
}

impl Binaries {
    /// From the command line: `--binary` or the running binary, `--shim-binary` or `plexus-shim` beside it.
    pub fn of(args: &InstallArgs) -> Result<Self, InstallError> {
        let plexus = match &args.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(io("find", Path::new("the running binary")))?,
        };
        let shim = args
            .shim_binary
            .clone()
            .unwrap_or_else(|| plexus.with_file_name(super::SHIM_BINARY_NAME));
        Ok(Self { plexus, shim })
    }

    /// Copies both into the bin dir (each only when its bytes changed). `plexus-shim` is needed in thick mode, whose
    /// conf names it; in thin mode it is copied when it is there (so that a switch to thick mode finds it).
    pub fn install(&self, layout: &Layout, mode: Mode) -> Result<(), InstallError> {
        if install_binary(&self.plexus, &layout.binary())? {
            info!(binary = %layout.binary().display(), "installed the plexus binary");
        }
        if mode == Mode::Thin && !self.shim.exists() {
            return Ok(());
        }
        if install_binary(&self.shim, &layout.shim_binary())? {
            info!(binary = %layout.shim_binary().display(), "installed the plexus-shim binary");
        }
        Ok(())
    }
}

/// Whether the DaemonSet `namespace/name` is gone (deleted or being deleted). `None` when the API server could not
/// tell (then nothing is removed).
async fn daemonset_gone(reference: &str) -> Option<bool> {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "no API client; leaving the files in place");
            return None;
        }
    };
    match super::daemonset::read(&client, reference).await {
        Ok(None) => Some(true),
        Ok(Some(ds)) => Some(ds.metadata.deletion_timestamp.is_some()),
        Err(e) => {
            warn!(error = %e, "leaving the files in place");
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
    let binaries = Binaries::of(&args)?;
    if args.cleanup {
        let removed = cleanup(&layout, &binaries)?;
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
    runtime.block_on(run(args, layout, settings, binaries))
}

async fn run(
    args: InstallArgs,
    layout: Layout,
    settings: ConfSettings,
    binaries: Binaries,
) -> Result<(), InstallError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| InstallError::Runtime(e.to_string()))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| InstallError::Runtime(e.to_string()))?;
    let installer = Installer::new(layout.clone(), settings, args.service_account_dir.clone());
    installer.claim()?;
    binaries.install(&layout, installer.settings.mode)?;
    let interval = Duration::from_secs_f64(args.interval_seconds);
    let mut waiting: Option<String> = None;
    let mut last_error: Option<String> = None;
    let mut passive = false;
    let mut status = super::status::StatusWriter::new(&args);
    loop {
        if installer.owns() {
            let result = installer.pass();
            status
                .write(installer.settings.mode, &layout, &result)
                .await;
            match result {
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
        let removed = cleanup(&layout, &binaries)?;
        info!(
            ?removed,
            "the DaemonSet is gone (uninstall): removed what the installer wrote"
        );
    } else {
        info!("stopping; the binary, the kubeconfig and the conf stay in place");
    }
    Ok(())
}
