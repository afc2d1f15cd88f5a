//! The runtime around Plexus on a real node: containerd and the kubelet (and, in thick mode, the node's
//! plexus-daemon) restarted with pods running, in both modes (`<name>::thin`, `<name>::thick`), and the CNI STATUS
//! verb (containerd v2.4.2 calls it, through go-cni's `Status`, for a config list of cniVersion ≥ 1.1.0, and reports
//! a failure as the node's network not being ready). These tests change node-wide state, so this binary runs them
//! one at a time, apart from the other node tests (cargo runs test binaries one after another).

#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::time::Duration;

use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(120);

/// One node-wide change at a time.
static NODE: Mutex<()> = Mutex::new(());

fn interfaces_by_name(namespace: &str, pod: &str) -> Vec<PodInterface> {
    let mut i = pod_interfaces(namespace, pod);
    i.sort_by(|a, b| a.name.cmp(&b.name));
    i
}

on_nodes_in_both_modes!(
    restarting_containerd_and_the_kubelet_keeps_pods_and_later_deletes_clean_up
);

/// In thick mode the node's plexus-daemon is restarted too (after containerd and the kubelet): the pods keep their
/// interfaces, and the later DELs, through the restarted daemon, still clean up.
fn restarting_containerd_and_the_kubelet_keeps_pods_and_later_deletes_clean_up(mode: NodeMode) {
    let _node = NODE.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("node-restart");
    let bridge = unique("nr");
    let (subnet, _) = node_subnet();
    let network = format!("{}-lan", ns.name);
    create_nad(
        &ns.name,
        "lan",
        Some(&json!({"cniVersion": "1.0.0", "name": network, "plugins": [
            {"type": "bridge", "bridge": bridge, "ipam": {"type": "host-local", "subnet": subnet}}
        ]})),
    );
    for pod in ["a", "b"] {
        create_node_pod_in(mode, &nodes, 0, &ns.name, pod, Some("lan"));
    }
    wait_ready(&ns.name, "a", READY);
    wait_ready(&ns.name, "b", READY);
    let handler = match mode {
        NodeMode::Thin => "",
        NodeMode::Thick => THICK_RUNTIME_CLASS,
    };
    for pod in ["a", "b"] {
        assert_eq!(
            nodes.sandbox_runtime_handler(0, &ns.name, pod),
            handler,
            "{pod}'s runtime handler"
        );
    }
    let before = [
        interfaces_by_name(&ns.name, "a"),
        interfaces_by_name(&ns.name, "b"),
    ];
    let status_before = [network_status(&ns.name, "a"), network_status(&ns.name, "b")];
    let b_net1 = before[1].iter().find(|i| i.name == "net1").unwrap().ips[0].clone();

    let daemons: &[&str] = match mode {
        NodeMode::Thin => &["containerd", "kubelet"],
        NodeMode::Thick => &["containerd", "kubelet", "plexus-daemon"],
    };
    for &daemon in daemons {
        nodes.restart(0, daemon);
        for (i, pod) in ["a", "b"].into_iter().enumerate() {
            wait_ready(&ns.name, pod, READY);
            let after = wait_until(
                &format!("kubectl exec into {pod} after the {daemon} restart"),
                Duration::from_secs(60),
                || {
                    let out = kubectl_output(
                        &["exec", "-n", &ns.name, pod, "--", "ip", "addr", "show"],
                        None,
                    );
                    out.status.success().then(|| {
                        let mut i = parse_ip_addr(&String::from_utf8_lossy(&out.stdout));
                        i.retain(|i| i.name != "lo");
                        i.sort_by(|a, b| a.name.cmp(&b.name));
                        i
                    })
                },
                || describe_pod(&ns.name, pod),
            );
            assert_eq!(
                after, before[i],
                "{pod}'s interfaces after the {daemon} restart"
            );
            assert_eq!(
                network_status(&ns.name, pod),
                status_before[i],
                "{pod}'s network-status"
            );
        }
        let out = pod_exec(&ns.name, "a", &["ping", "-c", "1", "-W", "5", &b_net1]);
        assert!(
            out.contains("1 packets received"),
            "after the {daemon} restart: {out}"
        );
    }
    // The sandboxes were not re-created: Plexus still holds exactly one record per pod.
    let sandboxes: Vec<String> = files_in(&nodes.leases_dir(0, &network))
        .iter()
        .map(|ip| {
            let lease = std::fs::read_to_string(nodes.leases_dir(0, &network).join(ip)).unwrap();
            lease.lines().next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(sandboxes.len(), 2, "{sandboxes:?}");
    for pod in ["a", "b"] {
        delete_pod(&ns.name, pod);
    }
    let left = || {
        let records: Vec<String> = files_in(&nodes.records_dir(0))
            .into_iter()
            .filter(|r| sandboxes.iter().any(|s| r.contains(s.as_str())))
            .collect();
        let leases = files_in(&nodes.leases_dir(0, &network));
        let ports = nodes.exec(0, &["ip", "-o", "link", "show", "master", &bridge]);
        (records, leases, ports)
    };
    wait_until(
        "DEL's effects on the node after the restarts",
        Duration::from_secs(60),
        || (left() == (vec![], vec![], String::new())).then_some(()),
        || format!("(records, leases, ports) left: {:?}", left()),
    );
}

/// Puts the node's CNI config back on drop.
struct ConfBackup {
    path: std::path::PathBuf,
    text: String,
}

impl Drop for ConfBackup {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.text);
    }
}

fn node_ready(name: &str) -> (String, String) {
    let node: Value =
        serde_json::from_str(&kubectl(&["get", "node", name, "-o", "json"], None)).unwrap();
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    (
        ready["status"].as_str().unwrap_or_default().to_owned(),
        ready["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Thin mode only: containerd asks for the network's status of the default runtime handler's CNI config alone —
/// `criService.Status` in containerd's internal/cri/server/status.go calls `Status()` on
/// `c.netPlugin[defaultNetworkPlugin]` and on no other handler's plugin (the same at v2.4.0-beta.0 and on main at
/// 301026e58c61), so STATUS never reaches the thick handler's shim, and the daemon's readiness cannot show in the
/// node's conditions.
#[test]
fn a_missing_readinessindicatorfile_makes_the_node_network_not_ready_through_status() {
    let _node = NODE.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let name = nodes.name(0).to_owned();
    let conf = nodes.cni_conf(0);
    let text = std::fs::read_to_string(&conf).unwrap();
    let _restore = ConfBackup {
        path: conf.clone(),
        text: text.clone(),
    };
    let indicator = nodes.node_dir(0).join(unique("ready-"));
    let _ = std::fs::remove_file(&indicator);
    let mut config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        config["cniVersion"], "1.1.0",
        "STATUS is only called for 1.1.0 and later"
    );
    config["readinessindicatorfile"] = json!(indicator);
    // Written whole and renamed in, so containerd never loads half a file.
    let tmp = conf.with_extension("tmp");
    std::fs::write(&tmp, config.to_string()).unwrap();
    std::fs::rename(&tmp, &conf).unwrap();

    let message = wait_until(
        &format!("{name} NotReady"),
        Duration::from_secs(90),
        || {
            let (status, message) = node_ready(&name);
            (status == "False").then_some(message)
        },
        || format!("{:?}", node_ready(&name)),
    );
    assert!(message.contains("NetworkReady=false"), "{message}");
    assert!(
        message.contains(&indicator.display().to_string()),
        "Plexus's message names the file: {message}"
    );

    std::fs::write(&indicator, "").unwrap();
    wait_until(
        &format!("{name} Ready again"),
        Duration::from_secs(90),
        || (node_ready(&name).0 == "True").then_some(()),
        || format!("{:?}", node_ready(&name)),
    );
    drop(_restore);
    let _ = std::fs::remove_file(&indicator);
}
