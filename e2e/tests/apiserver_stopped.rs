//! DEL with the API server really stopped: this test starts a control plane of its own (`e2e/cluster up` with a
//! private state dir), attaches a pod through it, stops it (`e2e/cluster down`), and then deletes the pod's networks.

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
    cluster.kubectl(&["apply", "-f", "-"], &pod.to_string());
    let uid = cluster.kubectl(
        &["get", "pod", "stopped", "-o", "jsonpath={.metadata.uid}"],
        "",
    );
    let args = pod_args("default", "stopped", &uid, &sb.container_id);
    let config = sb.config(json!({"kubeconfig": cluster.kubeconfig, "apiTimeoutSeconds": 3}));
    sb.call("ADD", &args).ok(&config);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&p1));

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
    sb.assert_clean();
}
