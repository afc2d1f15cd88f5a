//! What Plexus may do in the API server: the least-privilege rules it needs, and what happens when network-status
//! cannot be written (the ADD is undone, nothing is left attached).

#![forbid(unsafe_code)]

use plexus_e2e::rbac;
use plexus_e2e::thick::Mode;
use plexus_e2e::*;
use serde_json::json;

/// The chart's node ClusterRole (thick: the daemon's, which also lists and watches), under `name`; with
/// `patch_pods` false, the same rules without `patch` of pods.
fn cluster_role(name: &str, patch_pods: bool, thick: bool) -> serde_json::Value {
    let mut rules = rbac::node_cluster_role_rules(thick);
    if !patch_pods {
        // Without "patch pods" (network-status can't be written); a rule left with no verb goes.
        for rule in &mut rules {
            let pods = rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == "pods"));
            if let Some(verbs) = rule["verbs"].as_array_mut().filter(|_| pods) {
                verbs.retain(|v| v != "patch");
            }
        }
        rules.retain(|rule| rule["verbs"].as_array().is_some_and(|v| !v.is_empty()));
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
        "rules": rules
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

/// The rules `docs/install.md` lists for the node's ClusterRole, from its table (`thick` picks the column).
fn documented_node_permissions(thick: bool) -> std::collections::BTreeSet<rbac::Permission> {
    let doc = std::fs::read_to_string(repo().join("docs/install.md")).unwrap();
    let header = "| resource (API group) | thin mode | thick mode |";
    let table = doc
        .split_once(header)
        .unwrap_or_else(|| panic!("docs/install.md has no table headed {header}"))
        .1;
    let mut all = std::collections::BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "{row}");
        let (resource, group) = cells[0]
            .split_once(' ')
            .unwrap_or_else(|| panic!("resource (group) in {row}"));
        let group = match group.trim_matches(['(', ')']) {
            "core" => String::new(),
            other => other.trim_matches('`').to_owned(),
        };
        for verb in cells[if thick { 2 } else { 1 }].split(',') {
            all.insert((
                group.clone(),
                resource.trim_matches('`').to_owned(),
                verb.trim().trim_matches('`').to_owned(),
            ));
        }
    }
    assert!(!all.is_empty(), "no rows under {header}");
    all
}

/// The node rules the tests above grant (the chart's, rendered) are the ones the docs list, in both modes, and
/// events are created in the core group only (what `KubeSource::record_events` posts).
#[test]
fn the_documented_node_rules_are_the_charts() {
    for thick in [false, true] {
        let granted = rbac::permissions(&rbac::node_cluster_role_rules(thick));
        assert_eq!(
            granted,
            documented_node_permissions(thick),
            "thick: {thick}"
        );
        let events: Vec<_> = granted.iter().filter(|p| p.1 == "events").collect();
        assert_eq!(
            events,
            [&(String::new(), "events".to_owned(), "create".to_owned())]
        );
    }
}
