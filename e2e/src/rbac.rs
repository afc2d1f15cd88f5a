//! The rules Plexus's node identity needs, from their one source: the chart's `<release>-node` ClusterRole, rendered
//! by the pinned helm. The RBAC tests grant exactly these rules; `rbac::the_documented_node_rules_are_the_charts`
//! checks that `docs/install.md` lists the same ones.

use std::collections::BTreeSet;

use serde_json::Value;

/// One permission: (API group, resource, verb); the core group is `""`.
pub type Permission = (String, String, String);

/// The rules of the chart's node ClusterRole, for thick (`true`) or thin mode, as the API server takes them.
pub fn node_cluster_role_rules(thick: bool) -> Vec<Value> {
    let mode = format!("node.mode={}", if thick { "thick" } else { "thin" });
    let documents = crate::render_chart("plexus", "templates/node.yaml", &[mode]);
    let roles: Vec<&Value> = documents
        .iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .collect();
    assert_eq!(roles.len(), 1, "one node ClusterRole: {documents:?}");
    roles[0]["rules"]
        .as_array()
        .expect("the ClusterRole has rules")
        .clone()
}

/// Every (group, resource, verb) the rules grant.
pub fn permissions(rules: &[Value]) -> BTreeSet<Permission> {
    let strings = |rule: &Value, key: &str| -> Vec<String> {
        rule[key]
            .as_array()
            .unwrap_or_else(|| panic!("a rule without {key}: {rule}"))
            .iter()
            .map(|s| s.as_str().expect("strings").to_owned())
            .collect()
    };
    let mut all = BTreeSet::new();
    for rule in rules {
        for group in strings(rule, "apiGroups") {
            for resource in strings(rule, "resources") {
                for verb in strings(rule, "verbs") {
                    all.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    all
}
