//! What Plexus may do in the API server: the least-privilege rules it needs, and what happens when network-status
//! cannot be written (the ADD is undone, nothing is left attached).

#![forbid(unsafe_code)]

use plexus_e2e::thick::Mode;
use plexus_e2e::*;
use serde_json::json;

/// The rules the plugin needs, and nothing more; `watch`: the daemon's too (its caches list and watch).
fn cluster_role(name: &str, patch_pods: bool, watch: bool) -> serde_json::Value {
    let mut pod_verbs = vec!["get"];
    let mut nad_verbs = vec!["get"];
    if watch {
        pod_verbs.extend(["list", "watch"]);
        nad_verbs.extend(["list", "watch"]);
    }
    if patch_pods {
        pod_verbs.push("patch");
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": pod_verbs},
            {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["network-attachment-definitions"], "verbs": nad_verbs},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
        ]
    })
}

fn bind(user: &str, role: &str) {
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": format!("{user}-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    });
    kubectl(&["apply", "-f", "-"], Some(&binding.to_string()));
}

/// In thick mode the daemon runs as the user (and needs `list` and `watch` too); the plugin config's kubeconfig is
/// then not used.
fn least_privilege_rules_suffice_and_a_refused_status_update_undoes_the_add(mode: &Mode) {
    let ns = KubeNamespace::new("rbac");
    let creds = tempfile::tempdir().unwrap();
    let user = format!("plexus-node-{}", ns.name);
    let kubeconfig = user_kubeconfig(&user, creds.path());

    // Without "patch pods", network-status can't be written: the ADD fails and leaves nothing behind.
    let read_only = format!("{user}-read-only");
    kubectl(
        &["apply", "-f", "-"],
        Some(&cluster_role(&read_only, false, mode.is_thick()).to_string()),
    );
    bind(&user, &read_only);
    mode.start_daemon(json!({"kubeconfig": kubeconfig}));
    let sb = mode.sandbox();
    let (s1, _) = subnet();
    create_nad(
        &ns.name,
        "side",
        Some(&json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&s1)})),
    );
    let config = sb.config(json!({"kubeconfig": kubeconfig}));
    let uid = mode.create_pod(
        &ns.name,
        "refused",
        &[("k8s.v1.cni.cncf.io/networks", "side")],
    );
    let args = pod_args(&ns.name, "refused", &uid, &sb.container_id);
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    let msg = e["msg"].as_str().unwrap();
    assert_eq!(e["code"], 103, "{e}");
    assert!(
        msg.contains("network-status could not be written") && msg.contains("forbidden"),
        "{msg}"
    );
    sb.assert_clean();
    assert!(
        !pod_annotations(&ns.name, "refused").contains_key("k8s.v1.cni.cncf.io/network-status")
    );
    // Only Plexus's events count: with real nodes up, the scheduler records FailedScheduling on this pod too.
    let events = pod_events(&ns.name, "refused");
    assert!(
        !events.iter().any(|(reason, _)| reason == "AddedInterface"),
        "no AddedInterface events for an undone ADD: {events:?}"
    );

    // get pods, patch pods, get NADs, create events: enough for a full ADD, and DEL needs nothing.
    let needed = format!("{user}-plugin");
    kubectl(
        &["apply", "-f", "-"],
        Some(&cluster_role(&needed, true, mode.is_thick()).to_string()),
    );
    bind(&user, &needed);
    let uid = mode.create_pod(
        &ns.name,
        "allowed",
        &[("k8s.v1.cni.cncf.io/networks", "side")],
    );
    let args = pod_args(&ns.name, "allowed", &uid, &sb.container_id);
    // RBAC changes reach the authorizer within moments; retry the first ADD briefly.
    let mut attempts = 0;
    loop {
        let out = sb.call("ADD", &args).run(config.to_string().as_bytes());
        if out.status.success() {
            break;
        }
        attempts += 1;
        assert!(
            attempts < 20,
            "ADD still refused: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(network_status(&ns.name, "allowed").len(), 2);
    assert!(
        mode.pod_events(&ns.name, "allowed", |events| events
            .iter()
            .any(|(r, _)| r == "AddedInterface"))
            .iter()
            .any(|(r, _)| r == "AddedInterface")
    );
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

plexus_e2e::in_both_modes!(
    least_privilege_rules_suffice_and_a_refused_status_update_undoes_the_add
);
