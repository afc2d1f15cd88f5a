//! Thick mode in the tests: a `plexus-daemon` of the test's own (its socket, config, log and metrics port in a
//! temp dir, its own node name), and the shim config that makes `plexus` forward to it.
//!
//! The daemon takes every plugin key from its own file, none from its caller (`docs/configuration.md`, thick mode).
//! So that each test body can still run in both modes from one config, a test daemon *follows its callers*: before
//! a [`crate::Call`] starts `plexus` (and when [`crate::PodSandbox::config`] makes a shim config), the plugin keys of
//! its stdin are written into the daemon's own file, which the daemon reads again when it changes. A daemon that
//! must not follow (a test of what a caller can't do) is made with [`Daemon::start_fixed`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{built_beside_plexus, free_port, kubectl, kubectl_output, unique};

/// The built `plexus-daemon` (`PLEXUS_DAEMON_BIN`, else next to `plexus`).
pub fn daemon_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PLEXUS_DAEMON_BIN") {
        return PathBuf::from(p);
    }
    built_beside_plexus("plexus-daemon")
}

/// A Node object (no kubelet behind it) for a daemon's pods, deleted on drop. Pods bound to a node that does not
/// exist are deleted by kube-controller-manager's pod garbage collector when one runs (`e2e/cluster up --nodes`).
pub struct KubeNode {
    pub name: String,
}

impl KubeNode {
    pub fn new() -> Self {
        let name = format!("thick-{}", unique("").trim_start_matches('-'));
        // Unschedulable and tainted: the scheduler of `e2e/cluster up --nodes` never puts a real pod here.
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"unschedulable": true,
                     "taints": [{"key": "plexus.test/no-kubelet", "effect": "NoSchedule"}]}});
        kubectl(&["apply", "-f", "-"], Some(&node.to_string()));
        Self { name }
    }
}

impl Default for KubeNode {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        let _ = kubectl_output(&["delete", "node", &self.name, "--wait=false"], None);
    }
}

/// The keys of a caller's config that never go into a daemon's file when it follows its caller: the shim's, the
/// client's (the daemon has its own) and the logging (the daemon's log is the test's).
const NOT_FOLLOWED: [&str; 7] = [
    "daemonSocketDir",
    "daemonTimeoutSeconds",
    "daemonWaitSeconds",
    "kubeconfig",
    "logFile",
    "logLevel",
    "logToStderr",
];

/// A test daemon's file, kept in line with its callers' plugin keys.
struct DaemonFile {
    path: PathBuf,
    /// The keys it started with (its own, the client, the logging, the test's extra keys).
    base: Value,
    /// What the file holds now.
    written: Mutex<Value>,
}

/// The test daemons that follow their callers, by socket directory.
static FOLLOWING: Mutex<BTreeMap<PathBuf, Arc<DaemonFile>>> = Mutex::new(BTreeMap::new());

impl DaemonFile {
    fn write(&self, config: &Value) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if *written == *config {
            return;
        }
        // The previous version keeps its inode while the new one is made (a link of its own), so the new file never
        // gets it back: the daemon sees the change by inode, whatever the clock's granularity.
        let previous = self.path.with_extension("json.previous");
        let _ = std::fs::remove_file(&previous);
        let _ = std::fs::hard_link(&self.path, &previous);
        let next = self.path.with_extension("json.next");
        std::fs::write(&next, config.to_string()).unwrap();
        std::fs::rename(&next, &self.path).unwrap();
        *written = config.clone();
    }
}

/// Writes the plugin keys of a shim config (`stdin` of a `plexus` about to start) into the file of the test daemon
/// its `daemonSocketDir` names, when that daemon follows its callers; nothing otherwise.
pub fn follow_caller(stdin: &[u8]) {
    let Ok(Value::Object(caller)) = serde_json::from_slice::<Value>(stdin) else {
        return;
    };
    let Some(dir) = caller.get("daemonSocketDir").and_then(Value::as_str) else {
        return;
    };
    let file = FOLLOWING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(Path::new(dir))
        .cloned();
    let Some(file) = file else {
        return;
    };
    let mut config = file.base.clone();
    for (k, v) in caller {
        if !NOT_FOLLOWED.contains(&k.as_str())
            && let Some(o) = config.as_object_mut()
        {
            o.insert(k, v);
        }
    }
    file.write(&config);
}

/// A running `plexus-daemon`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    child: std::sync::Mutex<Option<Child>>,
    pub dir: tempfile::TempDir,
    pub node: KubeNode,
    pub metrics_port: u16,
    config: Value,
    /// In-cluster mode: the directory bind-mounted on the service account's directory.
    service_account: Option<PathBuf>,
    /// Whether it follows its callers' plugin keys (see the module's doc).
    following: bool,
}

/// Where a pod's service account credentials are mounted (what kube's in-cluster config reads).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl Daemon {
    /// Starts a daemon with the admin kubeconfig, a node of its own and `extra` keys on top; returns once it
    /// serves its socket and its caches synced.
    pub fn start(extra: Value) -> Self {
        let d = Self::start_unready(extra);
        d.wait_ready();
        d
    }

    /// [`Daemon::start`] without waiting for the caches (e.g. with an API server that can't be reached).
    pub fn start_unready(extra: Value) -> Self {
        Self::launch(extra, None, true)
    }

    /// [`Daemon::start`] for a daemon that keeps its file as started, whatever its callers send: what a node's
    /// daemon does.
    pub fn start_fixed(extra: Value) -> Self {
        let d = Self::launch(extra, None, false);
        d.wait_ready();
        d
    }

    /// A daemon as in a pod: no kubeconfig, `KUBERNETES_SERVICE_HOST`/`_PORT` set to the test API server, and
    /// `service_account` (holding `token`, `ca.crt`, `namespace`) bind-mounted on [`SERVICE_ACCOUNT_DIR`] in a
    /// mount namespace of the daemon's own (a slave of the host's, so that network namespaces made later reach it).
    /// Returns once its caches synced.
    pub fn start_in_cluster(service_account: &Path, extra: Value) -> Self {
        let d = Self::launch(extra, Some(service_account.to_owned()), true);
        d.wait_ready();
        d
    }

    fn launch(extra: Value, service_account: Option<PathBuf>, following: bool) -> Self {
        crate::set_before_call(follow_caller);
        let dir = tempfile::tempdir().unwrap();
        let node = KubeNode::new();
        let metrics_port = free_port();
        let mut config = json!({
            "kubeconfig": std::env::var("KUBECONFIG").ok(),
            "nodeName": node.name,
            "daemonSocketDir": dir.path().join("run"),
            "metricsAddress": format!("127.0.0.1:{metrics_port}"),
            "logLevel": "debug",
            "logToStderr": true,
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            config[k] = v;
        }
        if service_account.is_some() {
            config.as_object_mut().unwrap().remove("kubeconfig");
        }
        std::fs::write(dir.path().join("daemon.json"), config.to_string()).unwrap();
        let d = Self {
            child: std::sync::Mutex::new(None),
            dir,
            node,
            metrics_port,
            config,
            service_account,
            following,
        };
        if following {
            FOLLOWING.lock().unwrap_or_else(|p| p.into_inner()).insert(
                d.socket_dir(),
                Arc::new(DaemonFile {
                    path: d.dir.path().join("daemon.json"),
                    base: d.config.clone(),
                    written: Mutex::new(d.config.clone()),
                }),
            );
        }
        d.spawn();
        d
    }

    /// Starts the process again (after [`Daemon::kill`]); returns once it serves its socket.
    pub fn spawn(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let mut command = match &self.service_account {
            None => Command::new(daemon_bin()),
            Some(credentials) => {
                std::fs::create_dir_all(SERVICE_ACCOUNT_DIR).unwrap();
                let (host, port) = crate::api_server_address()
                    .rsplit_once(':')
                    .map(|(h, p)| (h.to_owned(), p.to_owned()))
                    .expect("host:port");
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "slave", "--", "sh", "-c"])
                    .arg(format!(
                        "mount --bind \"$0\" {SERVICE_ACCOUNT_DIR} && exec \"$@\""
                    ))
                    .arg(credentials)
                    .arg(daemon_bin())
                    .env_remove("KUBECONFIG")
                    .env("KUBERNETES_SERVICE_HOST", host)
                    .env("KUBERNETES_SERVICE_PORT", port);
                c
            }
        };
        let child = command
            .arg("--config")
            .arg(self.dir.path().join("daemon.json"))
            .env_remove("NODE_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start plexus-daemon");
        *self.child() = Some(child);
        self.wait_for("its socket and /healthz", |d| {
            d.socket().exists() && d.get("/healthz").0 == 200
        });
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pid(&self) -> i32 {
        self.child().as_ref().expect("running").id() as i32
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: &str) {
        crate::sh(&["kill", &format!("-{signal}"), &self.pid().to_string()]);
    }

    /// kill -9, and waits for the process to be gone.
    pub fn kill(&self) {
        let taken = self.child().take();
        if let Some(mut child) = taken {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself (e.g. after SIGTERM); returns whether it exited with success.
    pub fn wait_exit(&self, within: Duration) -> bool {
        let mut child = self.child().take().expect("running");
        let until = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "plexus-daemon did not exit within {within:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.socket_dir().join("plexus.sock")
    }

    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The shim config for a plugin `config`: the same keys without `kubeconfig` (the daemon has the client),
    /// plus `daemonSocketDir`.
    pub fn shim_config(&self, config: &Value) -> Value {
        shim_config(config, &self.socket_dir())
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `GET path` on the metrics address: (status, body); (0, "") when nothing answers.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port, path)
    }

    /// The sum of every sample of `name` whose labels contain each of `labels` (`key="value"`).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics: {text}");
        metric_sum(&text, name, labels)
    }

    /// Waits until /readyz answers 200 (the caches synced).
    pub fn wait_ready(&self) {
        self.wait_for("/readyz", |d| d.get("/readyz").0 == 200);
    }

    /// Polls `done` for up to 30 s; panics with the daemon's log when it never holds.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let until = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(
                Instant::now() < until,
                "plexus-daemon: no {what} within 30 s. Log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.following {
            FOLLOWING
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.socket_dir());
        }
        let taken = self.child().take();
        if let Some(mut child) = taken {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plugin config made a shim config as the installer writes one: `type` `plexus-shim` (thick mode's binary, which a
/// [`Call`] runs for it), without `kubeconfig`, with `daemonSocketDir`.
pub fn shim_config(config: &Value, socket_dir: &Path) -> Value {
    let mut shim = config.clone();
    if let Some(o) = shim.as_object_mut() {
        o.remove("kubeconfig");
        o.insert("type".into(), json!("plexus-shim"));
        o.insert("daemonSocketDir".into(), json!(socket_dir));
    }
    shim
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`: (status, body); (0, "") when nothing answers.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The sum of the samples of `name` (exact metric name, e.g. `plexus_daemon_cache_lookups_total`) whose labels
/// contain every one of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|want| label_text.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// How a test body runs `plexus`: thin (the plugin reads the API server itself, with the config's kubeconfig) or
/// thick (a daemon of the test's own serves the requests and `plexus` is its shim). The Kubernetes-mode tests run
/// each body in both ([`in_both_modes!`](crate::in_both_modes)), so the two modes cannot drift apart.
pub struct Mode {
    thick: bool,
    daemon: std::sync::OnceLock<Daemon>,
}

impl Mode {
    pub fn thin() -> Self {
        Self {
            thick: false,
            daemon: std::sync::OnceLock::new(),
        }
    }

    /// Thick mode; the daemon starts at first use, with the admin kubeconfig unless [`Mode::start_daemon`] came
    /// first.
    pub fn thick() -> Self {
        Self {
            thick: true,
            daemon: std::sync::OnceLock::new(),
        }
    }

    pub fn is_thick(&self) -> bool {
        self.thick
    }

    /// Thick mode: starts the daemon with `extra` keys (e.g. a kubeconfig through a proxy). Call it before anything
    /// else uses the daemon.
    pub fn start_daemon(&self, extra: Value) {
        if self.thick {
            assert!(
                self.daemon.set(Daemon::start(extra)).is_ok(),
                "the daemon was already started"
            );
        }
    }

    /// The daemon in thick mode.
    pub fn daemon(&self) -> Option<&Daemon> {
        self.thick
            .then(|| self.daemon.get_or_init(|| Daemon::start(json!({}))))
    }

    /// A pod sandbox whose configs ([`crate::PodSandbox::config`]) are shim configs in thick mode.
    pub fn sandbox(&self) -> crate::PodSandbox {
        let mut sb = crate::PodSandbox::new();
        sb.shim_socket_dir = self.daemon().map(Daemon::socket_dir);
        sb
    }

    /// [`crate::create_pod`]; in thick mode bound to the daemon's node, returning once the daemon's cache holds it
    /// (so the ADD is a warm one; `thick::a_pod_missing_from_the_cache_is_read_with_one_get` covers the other case).
    pub fn create_pod(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
        let Some(daemon) = self.daemon() else {
            return crate::create_pod(namespace, name, annotations);
        };
        let cached = |d: &Daemon| d.metric("plexus_daemon_cached_objects", &["kind=\"pod\""]);
        let before = cached(daemon);
        let uid = crate::create_pod_on(namespace, name, annotations, Some(&daemon.node.name));
        daemon.wait_for("the new pod in its cache", |d| cached(d) > before);
        uid
    }

    /// The pod's events once `done` holds for them (thick mode sends them after the reply), at most 30 s.
    pub fn pod_events(
        &self,
        namespace: &str,
        name: &str,
        done: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let events = crate::pod_events(namespace, name);
            if done(&events) || Instant::now() > until {
                return events;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs each named test body (`fn name(mode: &Mode)`) in both modes, as tests `name::thin` and `name::thick`.
#[macro_export]
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn thin() {
                    super::$name(&$crate::thick::Mode::thin())
                }
                #[test]
                fn thick() {
                    super::$name(&$crate::thick::Mode::thick())
                }
            }
        )*
    };
}
