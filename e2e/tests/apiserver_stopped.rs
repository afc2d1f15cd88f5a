//! DEL with the API server really stopped: this test starts a control plane of its own (`e2e/cluster up` with a
//! private state dir), attaches a pod through it, stops it (`e2e/cluster down`), and then deletes the pod's networks.
//! One pod in thin mode and one in thick mode (a daemon whose client is on that control plane), on the same
//! control plane: starting one is the expensive part.

#![forbid(unsafe_code)]

use plexus_e2e::thick::Daemon;
use plexus_e2e::*;
use serde_json::json;

#[test]
fn del_with_the_api_server_stopped() {
    let mut cluster = PrivateCluster::up();
    let sb = PodSandbox::new();
    let (s1, p1) = subnet();
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "side", "namespace": "default"},
        "spec": {"config": json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&s1)}).to_string()}
    });
    cluster.kubectl(&["apply", "-f", "-"], &nad.to_string());
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stopped", "namespace": "default",
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "side"}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    });
    let mut thick_pod = pod.clone();
    thick_pod["metadata"]["name"] = json!("stopped-thick");
    cluster.kubectl(&["apply", "-f", "-"], &pod.to_string());
    cluster.kubectl(&["apply", "-f", "-"], &thick_pod.to_string());
    let uid_of =
        |name: &str| cluster.kubectl(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"], "");
    let args = pod_args("default", "stopped", &uid_of("stopped"), &sb.container_id);
    let config = sb.config(json!({"kubeconfig": cluster.kubeconfig, "apiTimeoutSeconds": 3}));
    sb.call("ADD", &args).ok(&config);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&p1));

    // Thick mode: the same through a daemon on this control plane.
    let daemon = Daemon::start(json!({"kubeconfig": cluster.kubeconfig}));
    let thick = PodSandbox::new();
    let thick_args = pod_args(
        "default",
        "stopped-thick",
        &uid_of("stopped-thick"),
        &thick.container_id,
    );
    let thick_config = daemon.shim_config(&thick.config(json!({"apiTimeoutSeconds": 3})));
    thick.call("ADD", &thick_args).ok(&thick_config);
    assert!(thick.netns.ipv4("net1")[0].starts_with(&p1));

    let server = std::fs::read_to_string(&cluster.kubeconfig)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://").map(str::to_owned))
        .expect("server in the kubeconfig");
    cluster.down();
    assert!(
        std::net::TcpStream::connect(&server).is_err(),
        "the API server at {server} still accepts connections"
    );
    sb.call("DEL", &args).ok(&config);
    thick.call("DEL", &thick_args).ok(&thick_config);
    // The NAD's leases of both pods are in `sb`'s data dir.
    sb.assert_clean();
    thick.assert_clean();
}
