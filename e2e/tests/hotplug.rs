//! Hot-plug on the real nodes: editing a running pod's networks annotation adds and removes its interfaces, through
//! the node's `plexus-daemon` (thick mode's pods: the RuntimeClass `plexus-thick`), without restarting the pod. Needs
//! `e2e/cluster up --nodes 2` and `eval "$(e2e/cluster env)"` (scripts/test does both).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(120);
/// How long a change may take to show: generous, for a loaded CI machine (the bench measures the real latency).
const CHANGE: Duration = Duration::from_secs(60);
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const MODE: NodeMode = NodeMode::Thick;

/// The tests that restart node 1's daemon hold this for writing; the others for reading (a pod created while the
/// daemon is down would wait for the kubelet's retry, and a change would wait for the daemon's resync).
static NODE_DAEMONS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    NODE_DAEMONS.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    NODE_DAEMONS.write().unwrap_or_else(|e| e.into_inner())
}

/// A bridge + host-local NAD `name` on its own bridge and subnet; returns its config's network name (unique: the
/// directory of its leases on the node).
fn bridge_nad(namespace: &str, name: &str) -> String {
    let (subnet, _) = node_subnet();
    let network = unique("hpn");
    create_nad(
        namespace,
        name,
        Some(&json!({"cniVersion": "1.0.0", "name": network, "plugins": [
            {"type": "bridge", "bridge": unique("hb"), "ipam": {"type": "host-local", "subnet": subnet}}
        ]})),
    );
    network
}

/// host-local's leases of `network` on node `i` (the address files, not its bookkeeping).
fn leases(nodes: &Nodes, i: usize, network: &str) -> Vec<String> {
    files_in(&nodes.leases_dir(i, network))
        .into_iter()
        .filter(|f| f.contains('.') && !f.starts_with("last_reserved"))
        .collect()
}

fn annotate(namespace: &str, pod: &str, networks: Option<&str>) {
    let arg = match networks {
        Some(n) => format!("{NETWORKS}={n}"),
        None => format!("{NETWORKS}-"),
    };
    kubectl(
        &["annotate", "--overwrite", "pod", "-n", namespace, pod, &arg],
        None,
    );
}

/// Pod `p` on node 0 in thick mode, with `networks` (or none), once Ready.
fn running_pod(nodes: &Nodes, namespace: &str, networks: Option<&str>) {
    create_node_pod_in(MODE, nodes, 0, namespace, "p", networks);
    wait_ready_in(MODE, nodes, namespace, "p", READY);
}

/// Waits for a `HotplugFailed` event on pod `p` and returns the messages of those there are.
fn hotplug_failures(namespace: &str) -> Vec<String> {
    wait_until(
        "a HotplugFailed event",
        CHANGE,
        || {
            let e = events_with(namespace, "p", "HotplugFailed");
            (!e.is_empty()).then_some(e)
        },
        || format!("{:?}", pod_events(namespace, "p")),
    )
}

/// The pod (on node 0) was not restarted since `before` ([`incarnation`]).
fn assert_not_restarted(nodes: &Nodes, namespace: &str, pod: &str, before: &(String, String)) {
    assert_eq!(
        &incarnation(nodes, 0, namespace, pod),
        before,
        "the pod was restarted"
    );
}

/// The interfaces network-status names, in order.
fn status_interfaces(namespace: &str, pod: &str) -> Vec<String> {
    let annotations = pod_annotations(namespace, pod);
    let Some(text) = annotations
        .get("k8s.v1.cni.cncf.io/network-status")
        .and_then(Value::as_str)
    else {
        return Vec::new();
    };
    let status: Vec<Value> = serde_json::from_str(text).unwrap();
    status
        .iter()
        .filter_map(|e| e["interface"].as_str().map(str::to_owned))
        .collect()
}

fn interfaces_in_pod(namespace: &str, pod: &str) -> Vec<String> {
    let mut names: Vec<String> = pod_interfaces(namespace, pod)
        .into_iter()
        .map(|i| i.name)
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
}

/// Waits until both network-status and the pod itself show exactly `want` (sorted names).
fn wait_interfaces(namespace: &str, pod: &str, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    wait_until(
        &format!("{namespace}/{pod} with interfaces {want:?}"),
        CHANGE,
        || {
            let mut status = status_interfaces(namespace, pod);
            status.sort();
            (status == want && interfaces_in_pod(namespace, pod) == want).then_some(())
        },
        || {
            format!(
                "status {:?}, pod {:?}, events {:?}",
                status_interfaces(namespace, pod),
                interfaces_in_pod(namespace, pod),
                pod_events(namespace, pod)
            )
        },
    );
}

/// What shows the pod was not restarted: its sandbox, its container's start time and restart count.
fn incarnation(nodes: &Nodes, node: usize, namespace: &str, pod: &str) -> (String, String) {
    let container = kubectl(
        &[
            "get",
            "pod",
            "-n",
            namespace,
            pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].state.running.startedAt}/{.status.containerStatuses[0].restartCount}",
        ],
        None,
    );
    (nodes.sandbox_id(node, namespace, pod), container)
}

fn events_with(namespace: &str, pod: &str, reason: &str) -> Vec<String> {
    pod_events(namespace, pod)
        .into_iter()
        .filter(|(r, _)| r == reason)
        .map(|(_, m)| m)
        .collect()
}

fn ip_of(namespace: &str, pod: &str, interface: &str) -> String {
    network_status(namespace, pod)
        .iter()
        .find(|e| e["interface"] == interface)
        .and_then(|e| e["ips"][0].as_str())
        .unwrap_or_else(|| panic!("no {interface} with an address in {pod}"))
        .to_owned()
}

/// A test delegate in node `i`'s binDir: a script that appends its `CNI_COMMAND` to a log and runs `plugin`, removed on
/// drop.
struct LoggedDelegate {
    path: PathBuf,
    log: PathBuf,
}

impl LoggedDelegate {
    fn new(nodes: &Nodes, i: usize, plugin: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let name = unique("logged");
        let bin = nodes.node_dir(i).join("cni-bin");
        let path = bin.join(&name);
        let log = std::env::temp_dir().join(format!("{name}.calls"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$CNI_COMMAND $CNI_IFNAME\" >> {}\nexec {} \"$@\"\n",
                log.display(),
                bin.join(plugin).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { path, log }
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl LoggedDelegate {
    /// A logged delegate whose first ADD runs `plugin`, then creates `<log>.reached` and waits (up to a minute) for
    /// `<log>.go`; later calls run straight through.
    fn holding_first_add(nodes: &Nodes, i: usize, plugin: &str) -> Self {
        let d = Self::new(nodes, i, plugin);
        let bin = nodes.node_dir(i).join("cni-bin");
        let log = d.log.display().to_string();
        std::fs::write(
            &d.path,
            format!(
                "#!/bin/sh\necho \"$CNI_COMMAND $CNI_IFNAME\" >> {log}\n\
                 if [ \"$CNI_COMMAND\" = ADD ] && [ ! -e {log}.once ]; then\n\
                 touch {log}.once\n\
                 out=$({plugin} \"$@\") || exit 1\n\
                 touch {log}.reached\n\
                 for i in $(seq 600); do [ -e {log}.go ] && break; sleep 0.1; done\n\
                 echo \"$out\"; exit 0\nfi\n\
                 exec {plugin} \"$@\"\n",
                plugin = bin.join(plugin).display()
            ),
        )
        .unwrap();
        d
    }

    fn reached(&self) -> bool {
        self.log.with_extension("calls.reached").exists()
    }
}

impl Drop for LoggedDelegate {
    fn drop(&mut self) {
        let _ = std::fs::write(self.log.with_extension("calls.go"), "");
        let _ = std::fs::remove_file(&self.path);
        for ext in ["calls", "calls.once", "calls.reached"] {
            let _ = std::fs::remove_file(self.log.with_extension(ext));
        }
    }
}

/// A network added to a running pod that started without the annotation: the interface appears in the pod and in
/// network-status with an `AddedInterface` event, the pod is not restarted (same sandbox, same container start), and
/// it carries traffic to a pod on the other node; removed again, it is gone from both, with a `RemovedInterface` event.
#[test]
fn a_network_added_to_a_running_pod_carries_traffic_across_nodes_and_goes_again() {
    let _daemons = shared();
    let nodes = Nodes::from_env();
    assert!(nodes.names.len() >= 2, "needs two nodes: {:?}", nodes.names);
    let ns = KubeNamespace::new("hp-add");
    let (_, m) = node_subnet();
    create_nad(
        &ns.name,
        "shared",
        Some(
            &json!({"cniVersion": "1.0.0", "name": "shared", "plugins": [
                {"type": "macvlan", "master": nodes.lan_if, "mode": "bridge",
                 "capabilities": {"ips": true}, "ipam": {"type": "static"}}
            ]}),
        ),
    );
    create_node_pod_in(MODE, &nodes, 0, &ns.name, "a", None);
    let b = json!([{"name": "shared", "ips": [format!("{m}.11/24")]}]).to_string();
    create_node_pod_in(MODE, &nodes, 1, &ns.name, "b", Some(&b));
    wait_ready_in(MODE, &nodes, &ns.name, "a", READY);
    wait_ready_in(MODE, &nodes, &ns.name, "b", READY);
    let before = incarnation(&nodes, 0, &ns.name, "a");

    let a = json!([{"name": "shared", "ips": [format!("{m}.10/24")]}]).to_string();
    annotate(&ns.name, "a", Some(&a));
    wait_interfaces(&ns.name, "a", &["eth0", "net1"]);
    assert_eq!(ip_of(&ns.name, "a", "net1"), format!("{m}.10"));
    let out = pod_exec(
        &ns.name,
        "a",
        &["ping", "-c", "2", "-W", "5", &format!("{m}.11")],
    );
    assert!(out.contains("2 packets received"), "a → b over net1: {out}");
    assert_not_restarted(&nodes, &ns.name, "a", &before);
    let added = events_with(&ns.name, "a", "AddedInterface");
    assert!(
        added
            .iter()
            .any(|e| e == &format!("Add net1 [{m}.10/24] from {}/shared", ns.name)),
        "{added:?}"
    );

    annotate(&ns.name, "a", None);
    wait_interfaces(&ns.name, "a", &["eth0"]);
    assert_not_restarted(&nodes, &ns.name, "a", &before);
    let removed = events_with(&ns.name, "a", "RemovedInterface");
    assert!(
        removed
            .iter()
            .any(|e| e == &format!("Remove net1 from {}/shared", ns.name)),
        "{removed:?}"
    );
}

/// Interfaces attached at the pod's creation can be removed, the others keep their names, and an added selection
/// without `interface` takes the lowest free `netN`; the removed network's address lease is given back.
#[test]
fn interfaces_from_creation_can_be_removed_and_no_interface_is_renamed() {
    let _daemons = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-names");
    let x = bridge_nad(&ns.name, "x");
    bridge_nad(&ns.name, "y");
    bridge_nad(&ns.name, "z");
    running_pod(&nodes, &ns.name, Some("x, y"));
    wait_interfaces(&ns.name, "p", &["eth0", "net1", "net2"]);
    let before = incarnation(&nodes, 0, &ns.name, "p");
    let y_ip = ip_of(&ns.name, "p", "net2");
    assert_eq!(leases(&nodes, 0, &x).len(), 1);

    annotate(&ns.name, "p", Some("y"));
    wait_interfaces(&ns.name, "p", &["eth0", "net2"]);
    assert_eq!(ip_of(&ns.name, "p", "net2"), y_ip, "y was touched");
    assert!(leases(&nodes, 0, &x).is_empty(), "x's lease was kept");

    annotate(&ns.name, "p", Some("y, z"));
    wait_interfaces(&ns.name, "p", &["eth0", "net1", "net2"]);
    let status = network_status(&ns.name, "p");
    let z = status.iter().find(|e| e["interface"] == "net1").unwrap();
    assert_eq!(z["name"], format!("{}/z", ns.name), "{status:?}");
    assert_not_restarted(&nodes, &ns.name, "p", &before);
}

/// Two edits in quick succession end in what the last one asks for.
#[test]
fn two_quick_changes_end_in_the_last_one() {
    let _daemons = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-quick");
    bridge_nad(&ns.name, "x");
    bridge_nad(&ns.name, "y");
    running_pod(&nodes, &ns.name, None);
    annotate(&ns.name, "p", Some("x"));
    annotate(&ns.name, "p", Some("x, y@fast0"));
    wait_interfaces(&ns.name, "p", &["eth0", "fast0", "net1"]);
}

/// A change made while the node's daemon is down is made when it is back; a change the daemon is killed in the middle
/// of is finished or rolled back and then made, never left half-done.
#[test]
fn changes_survive_a_daemon_restart() {
    let _daemons = exclusive();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-restart");
    bridge_nad(&ns.name, "x");
    bridge_nad(&ns.name, "y");
    running_pod(&nodes, &ns.name, None);
    annotate(&ns.name, "p", Some("x"));
    // Restarted right after the edit: the change is made before, during or after the restart.
    nodes.restart(0, "plexus-daemon");
    wait_interfaces(&ns.name, "p", &["eth0", "net1"]);
    annotate(&ns.name, "p", Some("x, y"));
    nodes.restart(0, "plexus-daemon");
    wait_interfaces(&ns.name, "p", &["eth0", "net1", "net2"]);
}

/// The daemon stopped while a delegate of a change is running (its ADD done, the change's record still the intent):
/// the restarted daemon rolls the unfinished addition back (DEL), then makes the change again; nothing is left
/// half-done and the pod ends with what its annotation asks for.
#[test]
fn a_daemon_stopped_in_the_middle_of_a_change_finishes_it_on_restart() {
    let _daemons = exclusive();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-kill");
    let held = LoggedDelegate::holding_first_add(&nodes, 0, "bridge");
    let (subnet, _) = node_subnet();
    let network = unique("hpn");
    create_nad(
        &ns.name,
        "x",
        Some(&json!({"cniVersion": "1.0.0", "name": network, "plugins": [
            {"type": held.name(), "bridge": unique("hb"), "ipam": {"type": "host-local", "subnet": subnet}}
        ]})),
    );
    running_pod(&nodes, &ns.name, None);
    annotate(&ns.name, "p", Some("x"));
    wait_until(
        "the change's delegate to be held",
        CHANGE,
        || held.reached().then_some(()),
        || format!("{:?}", held.calls()),
    );
    assert_eq!(
        interfaces_in_pod(&ns.name, "p"),
        ["eth0", "net1"],
        "the held ADD attached net1"
    );
    nodes.restart(0, "plexus-daemon");
    wait_interfaces(&ns.name, "p", &["eth0", "net1"]);
    assert_eq!(held.calls(), ["ADD net1", "DEL net1", "ADD net1"]);
    assert_eq!(leases(&nodes, 0, &network).len(), 1, "one address, not two");
}

/// The validating webhook checks an edit of the networks annotation as it checks a create: a malformed annotation or
/// a NAD that does not exist is refused, and the pod keeps its interfaces.
#[test]
fn the_webhook_checks_annotation_edits_as_it_checks_creates() {
    let _daemons = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-webhook");
    bridge_nad(&ns.name, "x");
    running_pod(&nodes, &ns.name, Some("x"));
    for (annotation, refusal) in [("x@", "interface"), ("x, missing", "missing")] {
        let out = kubectl_output(
            &[
                "annotate",
                "--overwrite",
                "pod",
                "-n",
                &ns.name,
                "p",
                &format!("{NETWORKS}={annotation}"),
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{annotation:?} was accepted");
        assert!(
            stderr.contains("denied the request") && stderr.contains(refusal),
            "{annotation:?}: {stderr}"
        );
    }
    assert_eq!(
        pod_annotations(&ns.name, "p")[NETWORKS],
        "x",
        "a refused edit changed the annotation"
    );
    wait_interfaces(&ns.name, "p", &["eth0", "net1"]);
}

/// A network-status write the API server refuses (a ValidatingAdmissionPolicy denying the daemon's pod updates): the
/// interface is attached once; the write is retried with back-off, without running the delegate again, and goes
/// through once the policy is gone.
#[test]
fn a_refused_status_write_is_retried_without_running_the_delegate_again() {
    let _daemons = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-status");
    let logged = LoggedDelegate::new(&nodes, 0, "bridge");
    let (subnet, _) = node_subnet();
    create_nad(
        &ns.name,
        "x",
        Some(
            &json!({"cniVersion": "1.0.0", "name": unique("hpn"), "plugins": [
                {"type": logged.name(), "bridge": unique("hb"), "ipam": {"type": "host-local", "subnet": subnet}}
            ]}),
        ),
    );
    running_pod(&nodes, &ns.name, None);
    let policy = format!("{}-deny-daemon", ns.name);
    let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": policy},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                      "operations": ["UPDATE"], "resources": ["pods"]}]},
                  "validations": [{"expression": "request.userInfo.username != 'plexus-daemon'",
                                   "message": "the test refuses the daemon's pod updates"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": policy},
         "spec": {"policyName": policy, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels":
                      {"kubernetes.io/metadata.name": ns.name}}}}}
    ]});
    kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()));
    struct Policy(String);
    impl Drop for Policy {
        fn drop(&mut self) {
            let _ = kubectl_output(
                &[
                    "delete",
                    "validatingadmissionpolicybinding,validatingadmissionpolicy",
                    &self.0,
                    "--ignore-not-found",
                ],
                None,
            );
        }
    }
    let guard = Policy(policy.clone());
    // The binding takes effect within a moment; the daemon's test user is what it denies.
    wait_until(
        "the policy denying the daemon's updates to be in force",
        CHANGE,
        || {
            let out = kubectl_output(
                &[
                    "annotate",
                    "--overwrite",
                    "pod",
                    "-n",
                    &ns.name,
                    "p",
                    "probe=1",
                    "--as",
                    "plexus-daemon",
                ],
                None,
            );
            (!out.status.success()).then_some(())
        },
        || "the daemon's user can still update the pod".into(),
    );

    annotate(&ns.name, "p", Some("x"));
    wait_until(
        "net1 in the pod",
        CHANGE,
        || {
            interfaces_in_pod(&ns.name, "p")
                .contains(&"net1".to_owned())
                .then_some(())
        },
        || format!("{:?}", interfaces_in_pod(&ns.name, "p")),
    );
    wait_until(
        "a failed hot-plug pass",
        CHANGE,
        || (!events_with(&ns.name, "p", "HotplugFailed").is_empty()).then_some(()),
        || format!("{:?}", pod_events(&ns.name, "p")),
    );
    assert_eq!(
        status_interfaces(&ns.name, "p"),
        ["eth0"],
        "the refused write went through"
    );
    drop(guard);
    wait_interfaces(&ns.name, "p", &["eth0", "net1"]);
    let adds = logged
        .calls()
        .iter()
        .filter(|c| c.starts_with("ADD"))
        .count();
    assert_eq!(adds, 1, "the delegate ran again: {:?}", logged.calls());
}

/// A delegate that fails: the attachment is rolled back (no interface, the pod runs on), a `HotplugFailed` event names
/// the network, and the change is retried until the NAD is fixed.
#[test]
fn a_failing_delegate_is_rolled_back_reported_and_retried() {
    let _daemons = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-fail");
    let (subnet, _) = node_subnet();
    let network = unique("hpn");
    create_nad(
        &ns.name,
        "x",
        Some(&json!({"cniVersion": "1.0.0", "name": network, "plugins": [
            {"type": "macvlan", "master": "nosuchlink0", "ipam": {"type": "host-local", "subnet": subnet}}
        ]})),
    );
    running_pod(&nodes, &ns.name, None);
    let before = incarnation(&nodes, 0, &ns.name, "p");
    annotate(&ns.name, "p", Some("x"));
    let failed = hotplug_failures(&ns.name);
    assert!(
        failed
            .iter()
            .any(|m| m.starts_with(&format!("net1 from {}/x: ", ns.name))
                && m.contains("delegate \"macvlan\" ADD failed")),
        "{failed:?}"
    );
    assert_eq!(interfaces_in_pod(&ns.name, "p"), ["eth0"]);
    assert!(leases(&nodes, 0, &network).is_empty(), "a lease leaked");
    // Fixed: the retry attaches it.
    let fixed = json!({"cniVersion": "1.0.0", "name": network, "plugins": [
        {"type": "macvlan", "master": nodes.lan_if, "mode": "bridge", "ipam": {"type": "host-local", "subnet": subnet}}
    ]});
    kubectl(
        &[
            "patch",
            "network-attachment-definitions",
            "-n",
            &ns.name,
            "x",
            "--type",
            "merge",
            "-p",
            &json!({"spec": {"config": fixed.to_string()}}).to_string(),
        ],
        None,
    );
    wait_interfaces(&ns.name, "p", &["eth0", "net1"]);
    assert_not_restarted(&nodes, &ns.name, "p", &before);
}

/// Deleting a pod after hot-plugs deletes what they attached: no link, lease or record is left.
#[test]
fn deleting_a_pod_after_hot_plugs_leaves_nothing() {
    let _daemons = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-del");
    let (subnet, _) = node_subnet();
    let (bridge, network) = (unique("hb"), unique("hpn"));
    create_nad(
        &ns.name,
        "x",
        Some(&json!({"cniVersion": "1.0.0", "name": network, "plugins": [
            {"type": "bridge", "bridge": bridge, "ipam": {"type": "host-local", "subnet": subnet}}
        ]})),
    );
    running_pod(&nodes, &ns.name, None);
    annotate(&ns.name, "p", Some("x, x"));
    wait_interfaces(&ns.name, "p", &["eth0", "net1", "net2"]);
    let uid = kubectl(
        &[
            "get",
            "pod",
            "-n",
            &ns.name,
            "p",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    );
    let sandbox = nodes.sandbox_id(0, &ns.name, "p");
    delete_pod(&ns.name, "p");
    assert_eq!(
        leases(&nodes, 0, &network).len(),
        0,
        "leases left (pod {uid})"
    );
    let records: Vec<String> = files_in(&nodes.records_dir(0))
        .into_iter()
        .filter(|f| f.contains(&sandbox))
        .collect();
    assert!(records.is_empty(), "records left: {records:?}");
    // The bridge stays (the bridge plugin never deletes it); no veth of the pod is left on it.
    let ports = nodes.exec(0, &["ip", "-o", "link", "show", "master", &bridge]);
    assert!(ports.trim().is_empty(), "ports left on {bridge}: {ports}");
    let _ = nodes.exec_output(0, &["ip", "link", "del", &bridge]);
}

/// A hostNetwork pod has no network namespace of its own: an edit of its annotation gets a Warning event saying so,
/// and nothing else happens.
#[test]
fn a_host_network_pod_is_refused_with_an_event() {
    let _daemons = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-host");
    bridge_nad(&ns.name, "x");
    let mut pod = pod_manifest(&ns.name, "p", nodes.name(0), &nodes.image, None);
    MODE.apply(&mut pod);
    pod["spec"]["hostNetwork"] = json!(true);
    kubectl(&["create", "-f", "-"], Some(&pod.to_string()));
    wait_ready(&ns.name, "p", READY);
    // Seen by the daemon without the annotation first, then edited.
    std::thread::sleep(Duration::from_secs(2));
    annotate(&ns.name, "p", Some("x"));
    let refused = hotplug_failures(&ns.name);
    assert!(
        refused.iter().any(|m| m.contains("hostNetwork")),
        "{refused:?}"
    );
    assert!(status_interfaces(&ns.name, "p").is_empty());
}

/// `ipam-claim-reference` of a hot-plugged selection reaches its IPAM as at creation: in `args.cni` (the claim and the
/// pod's namespace) and, the bridge declaring the capability, in `runtimeConfig.ipamClaimReference`; the address comes
/// from the real host-local under the recording IPAM.
#[test]
fn an_ipam_claim_reaches_the_ipam_of_a_hot_plugged_attachment() {
    use std::os::unix::fs::PermissionsExt;
    let _daemons = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("hp-claim");
    let bin = nodes.node_dir(0).join("cni-bin");
    let ipam = LoggedDelegate::new(&nodes, 0, "host-local");
    let stdin = ipam.log.with_extension("calls.stdin");
    std::fs::write(
        &ipam.path,
        format!(
            "#!/bin/sh\ncat > {stdin}.$CNI_COMMAND\necho \"$CNI_COMMAND\" >> {log}\nexec {host_local} < {stdin}.$CNI_COMMAND\n",
            stdin = stdin.display(),
            log = ipam.log.display(),
            host_local = bin.join("host-local").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ipam.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (subnet, prefix) = node_subnet();
    create_nad(
        &ns.name,
        "x",
        Some(
            &json!({"cniVersion": "1.0.0", "name": unique("hpn"), "plugins": [
                {"type": "bridge", "bridge": unique("hb"), "capabilities": {"ipamClaimReference": true},
                 "ipam": {"type": ipam.name(), "subnet": subnet}}
            ]}),
        ),
    );
    running_pod(&nodes, &ns.name, None);
    annotate(
        &ns.name,
        "p",
        Some(&json!([{"name": "x", "ipam-claim-reference": "vm-1.x"}]).to_string()),
    );
    wait_interfaces(&ns.name, "p", &["eth0", "net1"]);
    assert!(ip_of(&ns.name, "p", "net1").starts_with(&format!("{prefix}.")));
    let add: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.ADD", stdin.display())).unwrap())
            .unwrap();
    assert_eq!(
        add["args"]["cni"],
        json!({"ipam-claim-reference": "vm-1.x", "ipam-claim-namespace": ns.name}),
        "{add}"
    );
    assert_eq!(
        add["runtimeConfig"],
        json!({"ipamClaimReference": "vm-1.x"}),
        "{add}"
    );
    annotate(&ns.name, "p", None);
    wait_interfaces(&ns.name, "p", &["eth0"]);
    let del: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.DEL", stdin.display())).unwrap())
            .unwrap();
    assert_eq!(
        del["args"]["cni"]["ipam-claim-reference"], "vm-1.x",
        "{del}"
    );
    for command in ["ADD", "DEL"] {
        let _ = std::fs::remove_file(format!("{}.{command}", stdin.display()));
    }
}

/// In a namespace the webhook does not check, an annotation edited into something unusable changes nothing: the pod
/// keeps its interfaces and gets a `HotplugFailed` event saying why; fixed, the edit is made.
#[test]
fn an_unusable_annotation_changes_nothing_and_says_why() {
    let _daemons = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::without_admission("hp-bad");
    bridge_nad(&ns.name, "x");
    bridge_nad(&ns.name, "y");
    running_pod(&nodes, &ns.name, Some("x"));
    annotate(&ns.name, "p", Some("[{\"name\": "));
    let said = hotplug_failures(&ns.name);
    assert!(
        said.iter()
            .any(|m| m.starts_with("the networks annotation can't be used, nothing changed: ")),
        "{said:?}"
    );
    wait_interfaces(&ns.name, "p", &["eth0", "net1"]);
    annotate(&ns.name, "p", Some("y"));
    wait_interfaces(&ns.name, "p", &["eth0", "net1"]);
    let status = network_status(&ns.name, "p");
    assert_eq!(
        status.iter().find(|e| e["interface"] == "net1").unwrap()["name"],
        format!("{}/y", ns.name)
    );
}
