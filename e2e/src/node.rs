//! Real nodes (`e2e/cluster up --nodes N`): pods run by the kubelet and containerd, networked by Plexus. The tests
//! create Pod objects bound to a node, wait for the kubelet to run them, look inside them with `kubectl exec`, and
//! inside the node (its own mount and network namespaces) through `nsenter`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{kubectl, kubectl_output};

/// The taint every harness node carries, so that only pods meant for a real node (they tolerate it) run there;
/// the pods of the runtime-playing tests stay Pending as before.
pub const NODE_TAINT: &str = "plexus.e2e/real-node";

/// The nodes `e2e/cluster env` describes (NODE_NAMES, PLEXUS_E2E_NODES_DIR, WORKLOAD_IMAGE, NODE_LAN_IF).
#[derive(Debug, Clone)]
pub struct Nodes {
    pub names: Vec<String>,
    pub dir: PathBuf,
    pub lan_if: String,
    pub image: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start nodes with `e2e/cluster up --nodes 2` and eval \"$(e2e/cluster env)\"")
    })
}

impl Nodes {
    pub fn from_env() -> Self {
        Self {
            names: env("NODE_NAMES").split(',').map(String::from).collect(),
            dir: PathBuf::from(env("PLEXUS_E2E_NODES_DIR")),
            lan_if: env("NODE_LAN_IF"),
            image: env("WORKLOAD_IMAGE"),
        }
    }

    /// Node `i` (0-based): its name.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Node `i`'s directory on the host (what is bind-mounted over /run, /var/lib, /var/log inside it).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}", i + 1))
    }

    /// Plexus's records on node `i`, seen from the host.
    pub fn records_dir(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("var-lib/cni/plexus")
    }

    /// host-local's leases for `network` on node `i`, seen from the host.
    pub fn leases_dir(&self, i: usize, network: &str) -> PathBuf {
        self.node_dir(i).join("var-lib/cni/networks").join(network)
    }

    /// The node's CNI config file (plexus), seen from the host.
    pub fn cni_conf(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("cni-conf/00-plexus.conf")
    }

    /// The node's InternalIP.
    pub fn ip(&self, i: usize) -> String {
        kubectl(
            &[
                "get",
                "node",
                self.name(i),
                "-o",
                "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
            ],
            None,
        )
    }

    /// Runs a command inside node `i`'s mount and network namespaces; panics with its output on failure.
    pub fn exec(&self, i: usize, args: &[&str]) -> String {
        let out = self.exec_output(i, args);
        assert!(
            out.status.success(),
            "{args:?} on {}: {}{}",
            self.name(i),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn exec_output(&self, i: usize, args: &[&str]) -> std::process::Output {
        let state = self.dir.parent().expect("nodes dir has a parent");
        let pid = std::fs::read_to_string(state.join(format!("node{}-holder.pid", i + 1)))
            .unwrap_or_else(|e| panic!("holder of {}: {e}", self.name(i)));
        Command::new("nsenter")
            .args(["-t", pid.trim(), "-m", "-n", "--"])
            .args(args)
            .output()
            .expect("run nsenter")
    }

    /// The pod's one ready sandbox on node `i`, as crictl prints it.
    fn ready_sandbox(&self, i: usize, namespace: &str, pod: &str) -> Value {
        let endpoint = format!(
            "unix://{}",
            self.node_dir(i).join("containerd.sock").display()
        );
        let out = Command::new("crictl")
            .args([
                "--runtime-endpoint",
                &endpoint,
                "pods",
                "--namespace",
                namespace,
            ])
            .args([
                "--name",
                &format!("^{pod}$"),
                "--state",
                "ready",
                "-o",
                "json",
            ])
            .output()
            .expect("run crictl (on PATH after eval \"$(e2e/cluster env)\")");
        assert!(
            out.status.success(),
            "crictl pods on {}: {}",
            self.name(i),
            String::from_utf8_lossy(&out.stderr)
        );
        let pods: Value = serde_json::from_slice(&out.stdout).unwrap();
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            items.len(),
            1,
            "one ready sandbox of {namespace}/{pod}: {pods}"
        );
        items[0].clone()
    }

    /// The containerd runtime handler of the pod's sandbox on node `i` (empty: the default one), from crictl.
    pub fn sandbox_runtime_handler(&self, i: usize, namespace: &str, pod: &str) -> String {
        self.ready_sandbox(i, namespace, pod)["runtimeHandler"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The ID of the pod's ready sandbox on node `i` (the container ID its CNI calls carry), from crictl.
    pub fn sandbox_id(&self, i: usize, namespace: &str, pod: &str) -> String {
        let sandbox = self.ready_sandbox(i, namespace, pod);
        sandbox["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no sandbox id in {sandbox}"))
            .to_owned()
    }

    /// The names of the links in node `i`'s network namespace.
    pub fn links(&self, i: usize) -> Vec<String> {
        self.exec(i, &["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_owned())
            .collect()
    }

    /// `e2e/cluster node-restart <k> <daemon>` for node `i` (also starts a stopped one).
    pub fn restart(&self, i: usize, daemon: &str) {
        self.cluster("node-restart", i, daemon);
    }

    /// `e2e/cluster node-stop <k> <daemon>` for node `i`.
    pub fn stop(&self, i: usize, daemon: &str) {
        self.cluster("node-stop", i, daemon);
    }

    fn cluster(&self, command: &str, i: usize, daemon: &str) {
        let state = self.dir.parent().expect("nodes dir has a parent");
        let status = Command::new(crate::repo().join("e2e/cluster"))
            .args([command, &(i + 1).to_string(), daemon])
            .env("PLEXUS_E2E_STATE", state)
            .status()
            .expect("run e2e/cluster");
        assert!(
            status.success(),
            "e2e/cluster {command} {} {daemon} failed",
            i + 1
        );
    }
}

/// A /24 of 198.19.0.0/16 (the range the harness leaves to the tests' own networks) unique within this process:
/// (subnet, first three octets).
pub fn node_subnet() -> (String, String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let c = (std::process::id().wrapping_mul(37) + NEXT.fetch_add(1, Ordering::Relaxed)) % 255;
    (format!("198.19.{c}.0/24"), format!("198.19.{c}"))
}

/// A link created inside a node for one test (a vxlan, a bridge), deleted on drop.
pub struct NodeLink<'a> {
    pub nodes: &'a Nodes,
    pub node: usize,
    pub name: String,
}

impl Drop for NodeLink<'_> {
    fn drop(&mut self) {
        let _ = self
            .nodes
            .exec_output(self.node, &["ip", "link", "del", &self.name]);
    }
}

/// A pod for a real node: the workload image (busybox), bound to `node`, tolerating the harness taint, ending at
/// once on SIGTERM.
pub fn pod_manifest(
    namespace: &str,
    name: &str,
    node: &str,
    image: &str,
    networks: Option<&str>,
) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(n) = networks {
        annotations.insert("k8s.v1.cni.cncf.io/networks".into(), json!(n));
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "nodeName": node,
            "tolerations": [{"key": NODE_TAINT, "operator": "Exists"}],
            "terminationGracePeriodSeconds": 2,
            // No cluster DNS here: the node's resolv.conf, without a MissingClusterDNS event.
            "dnsPolicy": "Default",
            "containers": [{
                "name": "app", "image": image, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]
            }]
        }
    })
}

/// Makes a pod of [`pod_manifest`] placed by the scheduler on `node` (a node selector instead of `nodeName`):
/// extended resources and ResourceClaims are accounted for and allocated there.
pub fn scheduled_on(pod: &mut Value, node: &str) {
    let spec = pod["spec"]
        .as_object_mut()
        .expect("a pod manifest has a spec");
    spec.remove("nodeName");
    spec.insert(
        "nodeSelector".into(),
        json!({"kubernetes.io/hostname": node}),
    );
}

/// Gives a pod of [`pod_manifest`] what the ServiceAccount admission plugin gives every pod of a real cluster (the
/// plugin is off in this control plane, see e2e/README.md): the `default` ServiceAccount and, at the path in-cluster
/// clients read, a projected volume with its token (requested by the kubelet), the cluster CA and the namespace.
pub fn with_service_account_token(pod: &mut Value) {
    pod["spec"]["serviceAccountName"] = json!("default");
    pod["spec"]["volumes"] = json!([{
        "name": "token",
        "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
        ]}
    }]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([{
        "name": "token", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": true
    }]);
}

/// Where in-cluster clients find the service account's token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Creates a pod on node `node` of `nodes` with the given networks annotation (thin mode).
pub fn create_node_pod(
    nodes: &Nodes,
    node: usize,
    namespace: &str,
    name: &str,
    networks: Option<&str>,
) {
    create_node_pod_in(NodeMode::Thin, nodes, node, namespace, name, networks);
}

/// [`create_node_pod`] in `mode`.
pub fn create_node_pod_in(
    mode: NodeMode,
    nodes: &Nodes,
    node: usize,
    namespace: &str,
    name: &str,
    networks: Option<&str>,
) {
    let mut pod = pod_manifest(namespace, name, nodes.name(node), &nodes.image, networks);
    mode.apply(&mut pod);
    kubectl(&["create", "-f", "-"], Some(&pod.to_string()));
}

/// How a harness node networks a pod. Both run side by side on every node (e2e/lib/node.sh): the node's CNI config is
/// `plexus` itself; pods of the RuntimeClass [`THICK_RUNTIME_CLASS`] get containerd's second runtime handler, whose
/// CNI config is the shim that forwards to the node's `plexus-daemon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMode {
    Thin,
    Thick,
}

/// The RuntimeClass (and containerd runtime handler) of thick mode on the harness nodes.
pub const THICK_RUNTIME_CLASS: &str = "plexus-thick";

impl NodeMode {
    /// Makes a pod manifest use this mode.
    pub fn apply(self, pod: &mut Value) {
        if self == NodeMode::Thick {
            pod["spec"]["runtimeClassName"] = json!(THICK_RUNTIME_CLASS);
        }
    }
}

/// Waits until the pod is Ready, then checks that containerd ran its sandbox with the runtime handler of `mode` (so
/// the CNI config of that mode networked it).
pub fn wait_ready_in(mode: NodeMode, nodes: &Nodes, namespace: &str, pod: &str, timeout: Duration) {
    wait_ready(namespace, pod, timeout);
    let node = kubectl(
        &[
            "get",
            "pod",
            "-n",
            namespace,
            pod,
            "-o",
            "jsonpath={.spec.nodeName}",
        ],
        None,
    );
    let i = nodes
        .names
        .iter()
        .position(|n| *n == node)
        .unwrap_or_else(|| panic!("{namespace}/{pod} runs on {node:?}, not a harness node"));
    let want = match mode {
        NodeMode::Thin => "",
        NodeMode::Thick => THICK_RUNTIME_CLASS,
    };
    assert_eq!(
        nodes.sandbox_runtime_handler(i, namespace, pod),
        want,
        "runtime handler of {namespace}/{pod}"
    );
}

/// Runs each named node test body (`fn name(mode: NodeMode)`) in both modes, as tests `name::thin` and
/// `name::thick`.
#[macro_export]
macro_rules! on_nodes_in_both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn thin() {
                    super::$name($crate::node::NodeMode::Thin)
                }
                #[test]
                fn thick() {
                    super::$name($crate::node::NodeMode::Thick)
                }
            }
        )*
    };
}

/// Polls `probe` every 200 ms until it returns Some, for at most `timeout`; panics with `what` and the last
/// value of `describe` otherwise.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}: {}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pod_json(namespace: &str, name: &str) -> Option<Value> {
    let out = kubectl_output(&["get", "pod", "-n", namespace, name, "-o", "json"], None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Waits until the pod is Ready (the kubelet ran its sandbox and container); the timeout covers the kubelet's
/// retries after a failed sandbox.
pub fn wait_ready(namespace: &str, name: &str, timeout: Duration) {
    wait_until(
        &format!("pod {namespace}/{name} Ready"),
        timeout,
        || pod_json(namespace, name).filter(pod_ready).map(|_| ()),
        || describe_pod(namespace, name),
    );
}

/// The pod's status and events, for failure messages.
pub fn describe_pod(namespace: &str, name: &str) -> String {
    let status = pod_json(namespace, name)
        .map(|p| p["status"].to_string())
        .unwrap_or_default();
    let events = crate::pod_events(namespace, name);
    format!("status {status}; events {events:?}")
}

/// Deletes the pod and waits until the API server no longer has it (the kubelet stopped it and its sandbox went
/// through CNI DEL first).
pub fn delete_pod(namespace: &str, name: &str) {
    kubectl(
        &[
            "delete",
            "pod",
            "-n",
            namespace,
            name,
            "--wait=true",
            "--timeout=90s",
        ],
        None,
    );
}

/// Runs a command in the pod's container through the API server and the kubelet.
pub fn pod_exec(namespace: &str, name: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", "-n", namespace, name, "--"];
    args.extend_from_slice(cmd);
    kubectl(&args, None)
}

/// One interface inside a pod, as `ip` there shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    pub name: String,
    pub mac: String,
    /// Global IPv4 and IPv6 addresses, without prefix length.
    pub ips: Vec<String>,
}

/// Parses `ip addr show` output (busybox's or iproute2's).
pub fn parse_ip_addr(text: &str) -> Vec<PodInterface> {
    let mut out: Vec<PodInterface> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') {
            if let Some(name) = line.split(": ").nth(1) {
                out.push(PodInterface {
                    name: name.split('@').next().unwrap().to_owned(),
                    mac: String::new(),
                    ips: vec![],
                });
            }
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(current) = out.last_mut() else {
            continue;
        };
        match words.as_slice() {
            ["link/ether", mac, ..] => current.mac = (*mac).to_owned(),
            [family, addr, rest @ ..]
                if (*family == "inet" || *family == "inet6") && rest.contains(&"global") =>
            {
                current.ips.push(addr.split('/').next().unwrap().to_owned());
            }
            _ => {}
        }
    }
    out
}

/// The pod's interfaces other than lo.
pub fn pod_interfaces(namespace: &str, name: &str) -> Vec<PodInterface> {
    parse_ip_addr(&pod_exec(namespace, name, &["ip", "addr", "show"]))
        .into_iter()
        .filter(|i| i.name != "lo")
        .collect()
}

/// Files in a directory (empty when it does not exist), without the `lock` files host-local and Plexus keep.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| n != "lock" && !n.starts_with("last_reserved_ip"));
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_ip_addr_output_parses() {
        let text = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue qlen 1000\n    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n    inet 127.0.0.1/8 scope host lo\n       valid_lft forever preferred_lft forever\n2: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP,M-DOWN> mtu 1500 qdisc noqueue \n    link/ether 0a:58:c6:12:11:05 brd ff:ff:ff:ff:ff:ff\n    inet 198.18.17.5/24 brd 198.18.17.255 scope global eth0\n       valid_lft forever preferred_lft forever\n    inet6 fe80::858:c6ff:fe12:1105/64 scope link \n       valid_lft forever preferred_lft forever\n";
        assert_eq!(
            parse_ip_addr(text),
            [
                PodInterface {
                    name: "lo".into(),
                    mac: String::new(),
                    ips: vec![]
                },
                PodInterface {
                    name: "eth0".into(),
                    mac: "0a:58:c6:12:11:05".into(),
                    ips: vec!["198.18.17.5".into()]
                },
            ]
        );
    }
}
