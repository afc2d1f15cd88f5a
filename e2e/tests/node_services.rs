//! Services on real nodes: kube-proxy (iptables mode) runs in each node's namespaces (`e2e/cluster up --nodes 2`,
//! see e2e/lib/node.sh), so pods networked by Plexus reach ClusterIP Services — one backed by another pod, and the
//! API server's own `kubernetes` Service, the way in-cluster clients (a service account token and
//! KUBERNETES_SERVICE_HOST) reach it. Needs `eval "$(e2e/cluster env)"`.

#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Duration;

use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::{Value, json};

/// Covers the kubelet's retries (the service account token may be requested before the ServiceAccount exists).
const READY: Duration = Duration::from_secs(120);
/// From a Service's creation to kube-proxy's rules for it in every node (the EndpointSlice controller, then
/// kube-proxy's sync).
const SYNCED: Duration = Duration::from_secs(60);

/// Runs `script` with `sh -c` in the pod; its stdout when it exits 0.
fn try_in_pod(namespace: &str, pod: &str, script: &str) -> Option<String> {
    let out = kubectl_output(
        &["exec", "-n", namespace, pod, "--", "sh", "-c", script],
        None,
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn last_error(namespace: &str, pod: &str, script: &str) -> String {
    let out = kubectl_output(
        &["exec", "-n", namespace, pod, "--", "sh", "-c", script],
        None,
    );
    format!(
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `iptables-save -t nat` in node `i`'s network namespace, or on the host with `None`.
fn nat_rules(nodes: &Nodes, node: Option<usize>) -> String {
    let args = ["iptables-save", "-t", "nat"];
    match node {
        Some(i) => nodes.exec(i, &args),
        None => {
            let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
            assert!(out.status.success(), "iptables-save on the host");
            String::from_utf8(out.stdout).unwrap()
        }
    }
}

#[test]
fn pods_on_either_node_reach_a_cluster_ip_service_backed_by_a_pod() {
    let nodes = Nodes::from_env();
    assert!(
        nodes.names.len() >= 2,
        "needs two nodes (e2e/cluster up --nodes 2): {:?}",
        nodes.names
    );
    let ns = KubeNamespace::new("node-svc");
    // The backend, on node 0: busybox httpd serving its own hostname (the pod's name).
    let mut web = pod_manifest(&ns.name, "web", nodes.name(0), &nodes.image, None);
    web["metadata"]["labels"] = json!({"app": "web"});
    web["spec"]["containers"][0]["command"] = json!([
        "/bin/sh",
        "-c",
        "mkdir -p /tmp/www && hostname >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    ]);
    kubectl(&["create", "-f", "-"], Some(&web.to_string()));
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": ns.name},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    });
    kubectl(&["create", "-f", "-"], Some(&service.to_string()));
    let cluster_ip = kubectl(
        &[
            "get",
            "service",
            "-n",
            &ns.name,
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    );
    assert!(cluster_ip.starts_with("10.0.0."), "{cluster_ip}");
    // Clients on the backend's node (the reply crosses the node's bridge) and on the other node.
    create_node_pod(&nodes, 0, &ns.name, "near", None);
    create_node_pod(&nodes, 1, &ns.name, "far", None);
    for pod in ["web", "near", "far"] {
        wait_ready(&ns.name, pod, READY);
    }
    let web_ip = network_status(&ns.name, "web")[0]["ips"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let fetch = format!("timeout 5 wget -q -O - http://{cluster_ip}/");
    for client in ["near", "far"] {
        let body = wait_until(
            &format!("{client} → Service web ({cluster_ip}:80 → {web_ip}:8080)"),
            SYNCED,
            || try_in_pod(&ns.name, client, &fetch),
            || last_error(&ns.name, client, &fetch),
        );
        assert_eq!(body.trim(), "web", "{client} got the backend's page");
    }
    // kube-proxy's rules are in the nodes' network namespaces, never on the host.
    for i in 0..2 {
        let rules = nat_rules(&nodes, Some(i));
        assert!(
            rules.contains(&format!("{}/web", ns.name)) && rules.contains(&web_ip),
            "node {i}'s nat table has the Service web → {web_ip}:\n{rules}"
        );
    }
    let host = nat_rules(&nodes, None);
    assert!(
        !host.contains("KUBE-SERVICES"),
        "kube-proxy's chains on the host:\n{host}"
    );
}

#[test]
fn a_pod_reaches_the_api_server_through_the_kubernetes_service_with_its_token() {
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("node-apisvc");
    let mut pod = pod_manifest(
        &ns.name,
        "client",
        nodes.name(nodes.names.len() - 1),
        &nodes.image,
        None,
    );
    with_service_account_token(&mut pod);
    kubectl(&["create", "-f", "-"], Some(&pod.to_string()));
    wait_ready(&ns.name, "client", READY);

    // The kubelet tells the pod where the API server is, as on any cluster: the `kubernetes` Service.
    let kubernetes_ip = kubectl(
        &[
            "get",
            "service",
            "-n",
            "default",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    );
    let address = pod_exec(
        &ns.name,
        "client",
        &[
            "sh",
            "-c",
            "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
        ],
    );
    assert_eq!(address.trim(), format!("{kubernetes_ip}:443"));

    // Unauthenticated: /version answers anyone.
    let version = "timeout 10 wget -q --no-check-certificate -O - \
        https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/version";
    let body = wait_until(
        "GET /version through the kubernetes Service",
        SYNCED,
        || try_in_pod(&ns.name, "client", version),
        || last_error(&ns.name, "client", version),
    );
    let got: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let want: Value = serde_json::from_str(&kubectl(&["get", "--raw", "/version"], None)).unwrap();
    assert_eq!(got["gitVersion"], want["gitVersion"], "{body}");

    // With the pod's service account token: the API server knows who is asking.
    let review = format!(
        "timeout 10 wget -q --no-check-certificate -O - \
         --header \"Authorization: Bearer $(cat {SERVICE_ACCOUNT_DIR}/token)\" \
         --header 'Content-Type: application/json' \
         --post-data '{{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"SelfSubjectReview\"}}' \
         https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/apis/authentication.k8s.io/v1/selfsubjectreviews"
    );
    let body = try_in_pod(&ns.name, "client", &review)
        .unwrap_or_else(|| panic!("{}", last_error(&ns.name, "client", &review)));
    let got: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(
        got["status"]["userInfo"]["username"],
        format!("system:serviceaccount:{}:default", ns.name),
        "{body}"
    );
    let namespace = pod_exec(
        &ns.name,
        "client",
        &["cat", &format!("{SERVICE_ACCOUNT_DIR}/namespace")],
    );
    assert_eq!(namespace, ns.name);
}
