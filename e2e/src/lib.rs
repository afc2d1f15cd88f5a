//! Helpers for the end-to-end tests: a real kube-apiserver (started by `e2e/cluster up`, found through
//! `KUBECONFIG`), objects applied with the real kubectl, and `plexus` run as the runtime runs it for a pod.
//!
//! Every test works in a Kubernetes namespace of its own and a network namespace of its own; both go away on drop.

#![forbid(unsafe_code)]

pub mod admission;
pub mod controller;
pub mod node;
pub mod node_cni;
pub mod oci;
pub mod rbac;
pub mod thick;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use plexus_tests::*;
use serde_json::{Value, json};

/// The admin kubeconfig of the running test control plane.
pub fn kubeconfig() -> PathBuf {
    let path = std::env::var("KUBECONFIG")
        .expect("KUBECONFIG is not set: start the control plane with `e2e/cluster up` and export what it prints");
    PathBuf::from(path)
}

/// The built `kubectl-plexus`: `PLEXUS_KUBECTL_PLEXUS_BIN`, or the one next to the test executable
/// (target/<profile>/kubectl-plexus, which `scripts/test`'s `cargo build --workspace --bins` makes).
pub fn kubectl_plexus_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PLEXUS_KUBECTL_PLEXUS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join("kubectl-plexus");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p kubectl-plexus` first",
        bin.display()
    );
    bin
}

/// `kubectl plexus ARGS` against the test control plane.
pub fn kubectl_plexus(args: &[&str]) -> Output {
    Command::new(kubectl_plexus_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("run kubectl-plexus")
}

/// Runs kubectl against the test control plane; panics with its output on failure.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_output(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The pinned kubectl, built by `e2e/tools/install kubernetes` (instant when cached).
pub fn kubectl_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| tool_bin("kubernetes").join("kubectl"))
        .clone()
}

/// The bin dir of a pinned tool, built by `e2e/tools/install <tool>` if it is not cached yet.
pub fn tool_bin(tool: &str) -> PathBuf {
    let out = Command::new(repo().join("e2e/tools/install"))
        .arg(tool)
        .stderr(Stdio::inherit())
        .output()
        .expect("run e2e/tools/install");
    assert!(out.status.success(), "e2e/tools/install {tool} failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The documents of one template of the chart (`charts/plexus`), rendered by the pinned helm as release `release`
/// with `--set` values `sets`.
pub fn render_chart(release: &str, template: &str, sets: &[String]) -> Vec<Value> {
    let chart = repo().join("charts/plexus");
    let mut helm = Command::new(tool_bin("helm").join("helm"));
    helm.args(["template", release])
        .arg(&chart)
        .args(["--show-only", template]);
    for set in sets {
        helm.args(["--set", set]);
    }
    let out = helm.output().expect("run helm");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8(out.stdout).expect("helm's output is UTF-8"))
        .expect("the rendered chart parses")
}

pub fn kubectl_output(args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_against(&kubeconfig(), args, stdin.unwrap_or(""))
}

/// Runs the pinned kubectl against the control plane of `kubeconfig`, feeding it `stdin`.
fn kubectl_against(kubeconfig: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(kubectl_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A Kubernetes namespace for one test. Deleted on drop (it stays Terminating unless a controller-manager runs:
/// `e2e/cluster up --node(s)` starts one).
pub struct KubeNamespace {
    pub name: String,
}

impl KubeNamespace {
    pub fn new(prefix: &str) -> Self {
        let name = format!("{prefix}-{}", unique("").trim_start_matches('-'));
        kubectl(&["create", "namespace", &name], None);
        Self { name }
    }

    /// A namespace labelled `plexus/admission=off`: plexus-controller's webhook does not validate it, so a test can
    /// give the plugin input the webhook would refuse and check the plugin's own refusal.
    pub fn without_admission(prefix: &str) -> Self {
        let ns = Self::new(prefix);
        kubectl(
            &["label", "namespace", &ns.name, "plexus/admission=off"],
            None,
        );
        ns
    }
}

impl Drop for KubeNamespace {
    fn drop(&mut self) {
        let _ = kubectl_output(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// Creates a NetworkAttachmentDefinition; `config` of `None` leaves `spec` empty.
pub fn create_nad(namespace: &str, name: &str, config: Option<&Value>) {
    let spec = match config {
        Some(c) => json!({"config": c.to_string()}),
        None => json!({}),
    };
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec
    });
    kubectl(&["apply", "-f", "-"], Some(&nad.to_string()));
}

/// Creates a Pod object (it stays Pending: no scheduler, no kubelet — the test plays the runtime) and returns its
/// UID.
pub fn create_pod(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
    create_pod_on(namespace, name, annotations, None)
}

/// [`create_pod`], bound to `node` when given (`spec.nodeName`: what a thick-mode daemon's pod cache watches).
pub fn create_pod_on(
    namespace: &str,
    name: &str,
    annotations: &[(&str, &str)],
    node: Option<&str>,
) -> String {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    kubectl(&["apply", "-f", "-"], Some(&pod.to_string()));
    kubectl(
        &[
            "get",
            "pod",
            "-n",
            namespace,
            name,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    )
}

/// The pod's annotations.
pub fn pod_annotations(namespace: &str, name: &str) -> serde_json::Map<String, Value> {
    let pod: Value = serde_json::from_str(&kubectl(
        &["get", "pod", "-n", namespace, name, "-o", "json"],
        None,
    ))
    .unwrap();
    pod["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// The pod's network-status entries.
pub fn network_status(namespace: &str, name: &str) -> Vec<Value> {
    let annotations = pod_annotations(namespace, name);
    let text = annotations
        .get("k8s.v1.cni.cncf.io/network-status")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("pod {namespace}/{name} has no network-status: {annotations:?}"));
    serde_json::from_str(text).unwrap()
}

/// Events recorded on the pod: (reason, message).
pub fn pod_events(namespace: &str, name: &str) -> Vec<(String, String)> {
    let selector = format!("involvedObject.name={name}");
    let list: Value = serde_json::from_str(&kubectl(
        &[
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            &selector,
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_owned(),
                e["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// A pod sandbox under test: its network namespace, its lease store and record directory, and a default network
/// (ptp + host-local) given as the config's first delegate.
pub struct PodSandbox {
    pub netns: Netns,
    pub data: tempfile::TempDir,
    pub cni_dir: tempfile::TempDir,
    pub conf_dir: tempfile::TempDir,
    pub container_id: String,
    pub default_prefix: String,
    /// Thick mode: the daemon's socket dir; [`PodSandbox::config`] then gives the shim config.
    pub shim_socket_dir: Option<PathBuf>,
}

impl PodSandbox {
    pub fn new() -> Self {
        let (_, prefix) = subnet();
        Self {
            netns: Netns::new(),
            data: tempfile::tempdir().unwrap(),
            cni_dir: tempfile::tempdir().unwrap(),
            conf_dir: tempfile::tempdir().unwrap(),
            container_id: unique("ctr"),
            default_prefix: prefix,
            shim_socket_dir: None,
        }
    }

    /// A Plexus config in Kubernetes mode; `extra` keys are merged in on top. In thick mode, the shim config of it
    /// (without `kubeconfig`: the daemon's client is used).
    pub fn config(&self, extra: Value) -> Value {
        let mut config = json!({
            "cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
            "kubeconfig": std::env::var("KUBECONFIG").ok(), "binDir": plugins_dir(), "cniDir": self.cni_dir.path(),
            "confDir": self.conf_dir.path(), "logLevel": "debug",
            "delegates": [{"cniVersion": "1.0.0", "name": "pod-net", "type": "ptp",
                "ipam": {"type": "host-local", "subnet": format!("{}.0/24", self.default_prefix),
                         "dataDir": self.data.path()}}]
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            config[k] = v;
        }
        match &self.shim_socket_dir {
            Some(dir) => {
                let shim = thick::shim_config(&config, dir);
                // Also for a config that reaches plexus other than through a `Call` (cnitool reads it from a file).
                thick::follow_caller(shim.to_string().as_bytes());
                shim
            }
            None => config,
        }
    }

    /// host-local IPAM keeping its leases in this sandbox's data dir.
    pub fn host_local(&self, subnet: &str) -> Value {
        json!({"type": "host-local", "subnet": subnet, "dataDir": self.data.path()})
    }

    /// A `plexus` call for pod `namespace/name`.
    pub fn call<'a>(&'a self, command: &'a str, pod_args: &'a str) -> Call<'a> {
        let mut call = Call::new(
            command,
            &self.container_id,
            Box::leak(self.netns.path().into_boxed_str()),
        );
        call.args = pod_args;
        call
    }

    pub fn assert_clean(&self) {
        assert_nothing_left(&self.netns, self.data.path(), self.cni_dir.path());
    }
}

impl Default for PodSandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// `CNI_ARGS` as kubelet/containerd pass them.
pub fn pod_args(namespace: &str, name: &str, uid: &str, container_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
    )
}

/// A kubeconfig like the real one but pointing at a port where nothing listens: the API server is down.
pub fn dead_kubeconfig(dir: &Path) -> PathBuf {
    kubeconfig_via(dir, free_port())
}

/// A port on 127.0.0.1 where nothing listens (at the moment of the call).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A kubeconfig like the real one but with the API server at `127.0.0.1:<port>` (e.g. a proxy in front of it; the
/// serving certificate is valid for 127.0.0.1).
pub fn kubeconfig_via(dir: &Path, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig()).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("server:") {
            out.push_str(&format!("    server: https://127.0.0.1:{port}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let path = dir.join(format!("via-{port}.kubeconfig"));
    std::fs::write(&path, out).unwrap();
    path
}

/// The API server's `host:port`, from the kubeconfig.
pub fn api_server_address() -> String {
    std::fs::read_to_string(kubeconfig())
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://").map(str::to_owned))
        .expect("server in the kubeconfig")
}

/// The API requests Plexus made (user agent `plexus/…`) on objects in `namespace`, from the API server's audit log
/// (written next to the kubeconfig by `e2e/cluster`): (verb, resource, name), in order.
pub fn plexus_api_requests(namespace: &str) -> Vec<(String, String, String)> {
    let log = kubeconfig()
        .parent()
        .expect("kubeconfig has a folder")
        .join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            e["userAgent"]
                .as_str()
                .is_some_and(|ua| ua.starts_with("plexus/"))
        })
        .filter(|e| e["objectRef"]["namespace"] == namespace)
        .map(|e| {
            let field = |k: &str| e["objectRef"][k].as_str().unwrap_or_default().to_owned();
            (
                e["verb"].as_str().unwrap_or_default().to_owned(),
                field("resource"),
                field("name"),
            )
        })
        .collect()
}

/// A control plane of a test's (or the benchmark's) own: `e2e/cluster up` with a private state dir, stopped on drop.
pub struct PrivateCluster {
    pub state: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    running: bool,
}

impl PrivateCluster {
    pub fn up() -> Self {
        let state = tempfile::tempdir().unwrap();
        let out = cluster_command(state.path(), "up");
        let last = out.lines().last().unwrap_or_default();
        let kubeconfig = PathBuf::from(
            last.strip_prefix("KUBECONFIG=")
                .expect("up ends with KUBECONFIG=<path>"),
        );
        Self {
            state,
            kubeconfig,
            running: true,
        }
    }

    pub fn down(&mut self) {
        cluster_command(self.state.path(), "down");
        self.running = false;
    }

    /// kubectl against this control plane; panics when it fails.
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> String {
        let out = kubectl_against(&self.kubeconfig, args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The API server's audit log (one JSON line per request).
    pub fn audit_log(&self) -> PathBuf {
        self.state.path().join("audit.log")
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new(repo().join("e2e/cluster"))
                .arg("down")
                .env("PLEXUS_E2E_STATE", self.state.path())
                .status();
        }
    }
}

fn cluster_command(state: &Path, command: &str) -> String {
    let out = Command::new(repo().join("e2e/cluster"))
        .arg(command)
        .env("PLEXUS_E2E_STATE", state)
        .stderr(Stdio::inherit())
        .output()
        .expect("run e2e/cluster");
    assert!(out.status.success(), "e2e/cluster {command} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// A kubeconfig for user `user` (client certificate signed by the test control plane's CA, no groups), written into
/// `dir` with mode 0600. What the user may do is up to the RBAC objects a test creates.
pub fn user_kubeconfig(user: &str, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let admin = kubeconfig();
    let pki = admin.parent().expect("kubeconfig has a folder").join("pki");
    let (key, csr, crt) = (
        dir.join(format!("{user}.key")),
        dir.join(format!("{user}.csr")),
        dir.join(format!("{user}.crt")),
    );
    let openssl = |args: &[&str]| {
        sh(&[&["openssl"], args].concat());
    };
    let path = |p: &Path| p.display().to_string();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &path(&key),
        "-subj",
        &format!("/CN={user}"),
        "-out",
        &path(&csr),
    ]);
    // A serial of its own: `-CAcreateserial` reads and rewrites the CA's serial file, which tests signing at the
    // same time corrupt for each other ("Unable to load number").
    static SIGNED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let signed = SIGNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let serial = format!("0x{nanos:x}{signed:08x}");
    // Extensions make it an X.509 v3 certificate (rustls refuses v1).
    let ext = dir.join(format!("{user}.ext"));
    let extensions = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";
    std::fs::write(&ext, extensions).unwrap();
    openssl(&[
        "x509",
        "-extfile",
        &path(&ext),
        "-req",
        "-in",
        &path(&csr),
        "-CA",
        &path(&pki.join("ca.crt")),
        "-CAkey",
        &path(&pki.join("ca.key")),
        "-set_serial",
        &serial,
        "-days",
        "1",
        "-sha256",
        "-out",
        &path(&crt),
    ]);
    let server = std::fs::read_to_string(&admin)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_owned))
        .expect("server in the admin kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {}\n\
         users:\n- name: {user}\n  user:\n    client-certificate: {}\n    client-key: {}\n\
         contexts:\n- name: {user}\n  context: {{cluster: e2e, user: {user}}}\ncurrent-context: {user}\n",
        path(&pki.join("ca.crt")),
        path(&crt),
        path(&key)
    );
    let out = dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&out, text).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
    out
}

/// The p-th percentile (0–100) of `sorted` by nearest rank: the smallest value with at least p% of the values at or
/// below it.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A bench's size setting: the variable `name` as a number, or `default` when unset or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deletes every pod of `namespace` and waits until they are gone (their sandboxes torn down: CNI DEL done).
pub fn delete_all_pods(namespace: &str, timeout: &str) {
    kubectl(
        &[
            "delete",
            "pods",
            "--all",
            "-n",
            namespace,
            "--wait=true",
            &format!("--timeout={timeout}"),
        ],
        None,
    );
}
