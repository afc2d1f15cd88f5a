//! Pods run by a real kubelet, containerd and runc, networked by Plexus: the node calls Plexus exactly as a cluster
//! does. Needs `e2e/cluster up --nodes 2` (scripts/test starts them) and `eval "$(e2e/cluster env)"`.
//!
//! Every test runs twice from one body: `<name>::thin` (the node's CNI config is `plexus`) and `<name>::thick` (the
//! pods' RuntimeClass makes containerd use the shim config, which forwards to the node's `plexus-daemon`).

#![forbid(unsafe_code)]

use std::time::Duration;

use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::{Value, json};

/// Covers the kubelet's retries after a failed sandbox (its back-off starts at 10 s).
const READY: Duration = Duration::from_secs(120);

fn bridge_nad(namespace: &str, name: &str, bridge: &str, subnet: &str) {
    create_nad(
        namespace,
        name,
        Some(&json!({"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": bridge, "ipam": {"type": "host-local", "subnet": subnet}}
        ]})),
    );
}

/// A NAD whose addresses come from the selection's `ips` (static IPAM) on top of `plugin`.
fn static_nad(namespace: &str, name: &str, mut plugin: Value) {
    plugin["capabilities"] = json!({"ips": true});
    plugin["ipam"] = json!({"type": "static"});
    create_nad(
        namespace,
        name,
        Some(&json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]})),
    );
}

/// Checks the pod's network-status entry by entry against what `ip` shows inside the pod (through kubectl exec):
/// the same interfaces, each with the MAC and the addresses the status names. Returns the status.
fn assert_status_matches_pod(namespace: &str, pod: &str) -> Vec<Value> {
    let status = network_status(namespace, pod);
    let interfaces = pod_interfaces(namespace, pod);
    let mut in_status: Vec<&str> = status
        .iter()
        .map(|e| e["interface"].as_str().unwrap())
        .collect();
    let mut in_pod: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
    in_status.sort();
    in_pod.sort();
    assert_eq!(
        in_status, in_pod,
        "interfaces of {pod}: status {status:?}, pod {interfaces:?}"
    );
    for entry in &status {
        let iface = interfaces
            .iter()
            .find(|i| entry["interface"] == i.name.as_str())
            .unwrap();
        assert_eq!(
            entry["mac"],
            iface.mac.as_str(),
            "mac of {} in {pod}",
            iface.name
        );
        let ips: Vec<&str> = entry["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap())
            .collect();
        assert_eq!(ips, iface.ips, "ips of {} in {pod}", iface.name);
    }
    assert_eq!(
        status.iter().filter(|e| e["default"] == true).count(),
        1,
        "{status:?}"
    );
    status
}

fn ready(mode: NodeMode, nodes: &Nodes, namespace: &str, pod: &str) {
    wait_ready_in(mode, nodes, namespace, pod, READY);
}

fn ip_of(status: &[Value], interface: &str) -> String {
    status
        .iter()
        .find(|e| e["interface"] == interface)
        .and_then(|e| e["ips"][0].as_str())
        .unwrap_or_else(|| panic!("no {interface} with an address in {status:?}"))
        .to_owned()
}

fn ping(namespace: &str, from: &str, to_ip: &str) {
    let out = pod_exec(namespace, from, &["ping", "-c", "2", "-W", "5", to_ip]);
    assert!(
        out.contains("2 packets received"),
        "{from} → {to_ip}: {out}"
    );
}

fn both_annotation_forms_and_selection_keys_on_a_real_pod(mode: NodeMode) {
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("node-forms");
    let (blue_bridge, rich_bridge) = (unique("nb"), unique("nr"));
    let (blue_subnet, blue) = node_subnet();
    let (_, rich) = node_subnet();
    bridge_nad(&ns.name, "blue", &blue_bridge, &blue_subnet);
    create_nad(
        &ns.name,
        "rich",
        Some(&json!({"cniVersion": "1.0.0", "name": "rich", "plugins": [
            {"type": "bridge", "bridge": rich_bridge, "capabilities": {"ips": true}, "ipam": {"type": "static"}},
            {"type": "tuning", "capabilities": {"mac": true}}
        ]})),
    );
    create_node_pod_in(
        mode,
        &nodes,
        0,
        &ns.name,
        "comma",
        Some("blue, blue@extra1"),
    );
    let json_form = json!([
        {"name": "rich", "interface": "rich0", "ips": [format!("{rich}.7/24")], "mac": "0a:58:c6:13:00:07"},
        {"name": "blue", "namespace": ns.name, "default-route": [format!("{blue}.1")]}
    ]);
    create_node_pod_in(
        mode,
        &nodes,
        0,
        &ns.name,
        "json",
        Some(&json_form.to_string()),
    );
    ready(mode, &nodes, &ns.name, "comma");
    ready(mode, &nodes, &ns.name, "json");

    let comma = assert_status_matches_pod(&ns.name, "comma");
    let names: Vec<&str> = comma
        .iter()
        .map(|e| e["interface"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eth0", "net1", "extra1"]);
    assert!(
        ip_of(&comma, "eth0").starts_with("198.18."),
        "cluster network address: {comma:?}"
    );
    assert!(ip_of(&comma, "net1").starts_with(&format!("{blue}.")));
    assert!(ip_of(&comma, "extra1").starts_with(&format!("{blue}.")));
    assert_eq!(comma[1]["name"], format!("{}/blue", ns.name));

    let json_status = assert_status_matches_pod(&ns.name, "json");
    let names: Vec<&str> = json_status
        .iter()
        .map(|e| e["interface"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eth0", "rich0", "net2"]);
    assert_eq!(
        ip_of(&json_status, "rich0"),
        format!("{rich}.7"),
        "ips → static IPAM"
    );
    assert_eq!(json_status[1]["mac"], "0a:58:c6:13:00:07", "mac → tuning");
    let routes = pod_exec(&ns.name, "json", &["ip", "-4", "route", "show", "default"]);
    assert_eq!(
        routes.trim(),
        format!("default via {blue}.1 dev net2"),
        "default-route"
    );
    // Plexus recorded one AddedInterface event per network, as the runtime-playing tests see too.
    let added = pod_events(&ns.name, "json")
        .into_iter()
        .filter(|(r, _)| r == "AddedInterface")
        .count();
    assert_eq!(added, 3);
}

fn deleting_a_pod_runs_del_records_leases_and_links_go(mode: NodeMode) {
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("node-del");
    let bridge = unique("nd");
    let (subnet, _) = node_subnet();
    let network = format!("{}-green", ns.name);
    // The NAD's network name is what host-local names its lease folder after.
    create_nad(
        &ns.name,
        "green",
        Some(&json!({"cniVersion": "1.0.0", "name": network, "plugins": [
            {"type": "bridge", "bridge": bridge, "ipam": {"type": "host-local", "subnet": subnet}}
        ]})),
    );
    create_node_pod_in(mode, &nodes, 0, &ns.name, "doomed", Some("green"));
    ready(mode, &nodes, &ns.name, "doomed");
    let status = assert_status_matches_pod(&ns.name, "doomed");
    let net1_ip = ip_of(&status, "net1");
    // host-local's lease file holds the sandbox (container) id.
    let lease = std::fs::read_to_string(nodes.leases_dir(0, &network).join(&net1_ip))
        .expect("net1's lease");
    let sandbox = lease.lines().next().unwrap().to_owned();
    let records = || {
        files_in(&nodes.records_dir(0))
            .into_iter()
            .filter(|f| f.contains(&sandbox))
            .collect::<Vec<_>>()
    };
    // The record and its lock file.
    assert_eq!(
        records(),
        [
            // Keyed by the Plexus network's name (`plexus`, see e2e/lib/node.sh).
            format!("plexus~{sandbox}-eth0.json"),
            format!("plexus~{sandbox}-eth0.lock")
        ],
        "one record for sandbox {sandbox}"
    );
    let ports = || nodes.exec(0, &["ip", "-o", "link", "show", "master", &bridge]);
    assert_eq!(ports().lines().count(), 1, "net1's host veth on {bridge}");
    let pod_leases = || {
        files_in(&nodes.leases_dir(0, "pods"))
            .into_iter()
            .filter(|f| {
                std::fs::read_to_string(nodes.leases_dir(0, "pods").join(f))
                    .is_ok_and(|c| c.contains(&sandbox))
            })
            .count()
    };
    assert_eq!(pod_leases(), 1, "eth0's lease on the cluster network");

    delete_pod(&ns.name, "doomed");
    // The API object goes once the kubelet has stopped the sandbox (CNI DEL ran then); poll in case removal lags.
    wait_until(
        "DEL's effects on the node",
        Duration::from_secs(60),
        || {
            (records().is_empty()
                && files_in(&nodes.leases_dir(0, &network)).is_empty()
                && pod_leases() == 0
                && ports().is_empty())
            .then_some(())
        },
        || {
            format!(
                "records {:?}, net1 leases {:?}, eth0 leases {}, ports on {bridge}: {:?}",
                records(),
                files_in(&nodes.leases_dir(0, &network)),
                pod_leases(),
                ports()
            )
        },
    );
}

// The namespace is labelled plexus/admission=off: plexus-controller's webhook would deny both pods at creation
// (its own tests cover that); this test shows what the plugin itself does when such a pod reaches a node.
fn a_bad_annotation_or_a_missing_nad_holds_the_pod_until_fixed(mode: NodeMode) {
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::without_admission("node-fail");
    create_node_pod_in(
        mode,
        &nodes,
        0,
        &ns.name,
        "bad",
        Some(r#"[{"name": "later""#),
    );
    create_node_pod_in(mode, &nodes, 0, &ns.name, "missing", Some("later"));
    let failed = |pod: &str, needle: &str| {
        wait_until(
            &format!("FailedCreatePodSandBox on {pod} with {needle:?}"),
            READY,
            || {
                pod_events(&ns.name, pod)
                    .into_iter()
                    .find(|(reason, message)| {
                        reason == "FailedCreatePodSandBox" && message.contains(needle)
                    })
            },
            || describe_pod(&ns.name, pod),
        )
    };
    let (_, message) = failed("bad", "the networks annotation is not valid JSON");
    assert!(message.contains("plexus"), "{message}");
    let (_, message) = failed("missing", "no such NetworkAttachmentDefinition");
    assert!(message.contains("later"), "{message}");
    for pod in ["bad", "missing"] {
        let phase = kubectl(
            &[
                "get",
                "pod",
                "-n",
                &ns.name,
                pod,
                "-o",
                "jsonpath={.status.phase}",
            ],
            None,
        );
        assert_eq!(phase, "Pending", "{pod} stays in ContainerCreating");
    }
    let (subnet, _) = node_subnet();
    bridge_nad(&ns.name, "later", &unique("nl"), &subnet);
    kubectl(
        &[
            "annotate",
            "pod",
            "-n",
            &ns.name,
            "bad",
            "--overwrite",
            "k8s.v1.cni.cncf.io/networks=later",
        ],
        None,
    );
    ready(mode, &nodes, &ns.name, "missing");
    ready(mode, &nodes, &ns.name, "bad");
    for pod in ["bad", "missing"] {
        let status = assert_status_matches_pod(&ns.name, pod);
        assert_eq!(status.len(), 2, "{status:?}");
    }
}

fn two_pods_on_one_node_ping_over_net1(mode: NodeMode) {
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("node-ping");
    let (subnet, _) = node_subnet();
    bridge_nad(&ns.name, "lan", &unique("np"), &subnet);
    create_node_pod_in(mode, &nodes, 0, &ns.name, "a", Some("lan"));
    create_node_pod_in(mode, &nodes, 0, &ns.name, "b", Some("lan"));
    ready(mode, &nodes, &ns.name, "a");
    ready(mode, &nodes, &ns.name, "b");
    let b = assert_status_matches_pod(&ns.name, "b");
    ping(&ns.name, "a", &ip_of(&b, "net1"));
}

fn pods_on_two_nodes_reach_each_other_over_macvlan_and_over_vxlan(mode: NodeMode) {
    let nodes = Nodes::from_env();
    assert!(
        nodes.names.len() >= 2,
        "needs two nodes (e2e/cluster up --nodes 2): {:?}",
        nodes.names
    );
    let ns = KubeNamespace::new("node-span");

    // macvlan on the shared segment every node's lan0 is plugged into.
    let (_, m) = node_subnet();
    static_nad(
        &ns.name,
        "shared",
        json!({"type": "macvlan", "master": nodes.lan_if, "mode": "bridge"}),
    );
    // A bridge in each node with a vxlan port towards the other node, over the management network.
    let (_, v) = node_subnet();
    let (bridge, vxlan) = (unique("vb"), unique("vx"));
    // Unique per run and per mode: both modes' vxlans share the nodes' eth0 and port.
    let vni =
        (std::process::id() % 8_000_000 * 2 + 1 + (mode == NodeMode::Thick) as u32).to_string();
    let ips = [nodes.ip(0), nodes.ip(1)];
    let mut links = Vec::new();
    for (i, other) in [(0, 1), (1, 0)] {
        nodes.exec(i, &["ip", "link", "add", &bridge, "type", "bridge"]);
        links.push(NodeLink {
            nodes: &nodes,
            node: i,
            name: bridge.clone(),
        });
        nodes.exec(
            i,
            &[
                "ip",
                "link",
                "add",
                &vxlan,
                "type",
                "vxlan",
                "id",
                &vni,
                "local",
                &ips[i],
                "remote",
                &ips[other],
                "dstport",
                "4789",
                "dev",
                "eth0",
            ],
        );
        links.push(NodeLink {
            nodes: &nodes,
            node: i,
            name: vxlan.clone(),
        });
        nodes.exec(i, &["ip", "link", "set", &vxlan, "master", &bridge, "up"]);
        nodes.exec(i, &["ip", "link", "set", &bridge, "up"]);
    }
    static_nad(
        &ns.name,
        "overlay",
        json!({"type": "bridge", "bridge": bridge}),
    );

    for (pod, node, host) in [("a", 0, 10), ("b", 1, 11)] {
        let selection = json!([
            {"name": "shared", "ips": [format!("{m}.{host}/24")]},
            {"name": "overlay", "ips": [format!("{v}.{host}/24")]}
        ]);
        create_node_pod_in(
            mode,
            &nodes,
            node,
            &ns.name,
            pod,
            Some(&selection.to_string()),
        );
    }
    ready(mode, &nodes, &ns.name, "a");
    ready(mode, &nodes, &ns.name, "b");
    assert_status_matches_pod(&ns.name, "a");
    assert_status_matches_pod(&ns.name, "b");
    ping(&ns.name, "a", &format!("{m}.11"));
    ping(&ns.name, "b", &format!("{m}.10"));
    ping(&ns.name, "a", &format!("{v}.11"));
    ping(&ns.name, "b", &format!("{v}.10"));
    // The cluster network spans the nodes too: pod subnets are routed between them.
    let b = network_status(&ns.name, "b");
    ping(&ns.name, "a", &ip_of(&b, "eth0"));
    delete_pod(&ns.name, "a");
    delete_pod(&ns.name, "b");
    drop(links);
}

plexus_e2e::on_nodes_in_both_modes!(
    both_annotation_forms_and_selection_keys_on_a_real_pod,
    deleting_a_pod_runs_del_records_leases_and_links_go,
    a_bad_annotation_or_a_missing_nad_holds_the_pod_until_fixed,
    two_pods_on_one_node_ping_over_net1,
    pods_on_two_nodes_reach_each_other_over_macvlan_and_over_vxlan,
);
