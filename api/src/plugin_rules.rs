//! A cluster admin's rules for which plugin types NADs in which namespaces may use, enforced by the admission
//! webhook: for example `host-device` (which moves a node's NIC into a pod) only in namespaces an admin labelled, or
//! `macvlan` only on a given `master`.
//!
//! A plugin type that no rule names is allowed everywhere (subject to the node's `allowedPluginTypes`). A type that
//! some rule names is allowed in a NAD only when one of those rules selects the NAD's namespace and every field the
//! rule constrains holds one of the values it lists.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::config::{NetworkConfigList, PluginConfig};

/// One rule: these plugin types, in the namespaces the selector picks, with these field values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginTypeRule {
    /// Plugin types (a plugin's `type` or an `ipam.type`) the rule governs.
    pub types: Vec<String>,
    /// The namespaces whose NADs may use them (a Kubernetes label selector; empty selects every namespace).
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    /// Optional: plugin fields that must hold one of the listed strings (an absent field holds none), e.g.
    /// `{"master": ["eth1"]}` for macvlan.
    #[serde(default)]
    pub fields: BTreeMap<String, Vec<String>>,
}

/// Why a rule set can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("plugin type rules are not valid JSON: {0}")]
    Json(String),
    #[error("plugin type rule {index}: {msg}")]
    Invalid { index: usize, msg: String },
}

/// The admin's rules, checked once when loaded.
#[derive(Debug, Clone, Default)]
pub struct PluginTypeRules {
    rules: Vec<(PluginTypeRule, Selector)>,
}

impl PluginTypeRules {
    /// Parses a JSON list of [`PluginTypeRule`]s (empty text: no rules).
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let rules: Vec<PluginTypeRule> =
            serde_json::from_str(text).map_err(|e| RuleError::Json(e.to_string()))?;
        Self::new(rules)
    }

    pub fn new(rules: Vec<PluginTypeRule>) -> Result<Self, RuleError> {
        rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| {
                if rule.types.is_empty() {
                    return Err(RuleError::Invalid {
                        index,
                        msg: "it names no types".into(),
                    });
                }
                let selector =
                    Selector::try_from(rule.namespace_selector.clone()).map_err(|e| {
                        RuleError::Invalid {
                            index,
                            msg: format!("namespaceSelector: {e}"),
                        }
                    })?;
                Ok((rule, selector))
            })
            .collect::<Result<_, _>>()
            .map(|rules| Self { rules })
    }

    /// True when some rule governs a plugin type of `config`: only then do the namespace's labels matter.
    pub fn governs(&self, config: &NetworkConfigList) -> bool {
        plugin_objects(config).any(|(t, _)| self.for_type(t).next().is_some())
    }

    /// Every plugin of `config` (a NAD's in `namespace`, whose labels are `labels`) that no rule allows, one
    /// sentence each.
    pub fn problems(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        config: &NetworkConfigList,
    ) -> Vec<String> {
        plugin_objects(config)
            .filter_map(|(plugin_type, object)| {
                let mut governing = self.for_type(plugin_type).peekable();
                governing.peek()?;
                let allowed = governing.any(|(rule, selector)| {
                    selector.matches(labels)
                        && rule.fields.iter().all(|(field, values)| {
                            object
                                .get(field)
                                .and_then(Value::as_str)
                                .is_some_and(|v| values.iter().any(|allowed| allowed == v))
                        })
                });
                (!allowed).then(|| {
                    let conditions: Vec<String> = self
                        .for_type(plugin_type)
                        .map(|(rule, selector)| describe(rule, selector))
                        .collect();
                    format!(
                        "plugin type {plugin_type:?} is not allowed in namespace {namespace} by the cluster's plugin \
                         type rules; it is allowed {}",
                        conditions.join(", or ")
                    )
                })
            })
            .collect()
    }

    fn for_type<'s>(
        &'s self,
        plugin_type: &'s str,
    ) -> impl Iterator<Item = &'s (PluginTypeRule, Selector)> + 's {
        self.rules
            .iter()
            .filter(move |(rule, _)| rule.types.iter().any(|t| t == plugin_type))
    }
}

/// Each plugin type of a config with the object that names it (the plugin, or its `ipam` object).
fn plugin_objects(
    config: &NetworkConfigList,
) -> impl Iterator<Item = (&str, &serde_json::Map<String, Value>)> {
    config.plugins.iter().flat_map(|p: &PluginConfig| {
        let ipam = p
            .raw()
            .get("ipam")
            .and_then(Value::as_object)
            .and_then(|o| o.get("type").and_then(Value::as_str).map(|t| (t, o)));
        std::iter::once((p.plugin_type(), p.raw())).chain(ipam)
    })
}

fn describe(rule: &PluginTypeRule, selector: &Selector) -> String {
    let mut text = if selector.selects_all() {
        "in every namespace".to_owned()
    } else {
        format!("in namespaces labelled {selector}")
    };
    for (field, values) in &rule.fields {
        text.push_str(&format!(" with {field:?} one of {values:?}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> NetworkConfigList {
        NetworkConfigList::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rules() -> PluginTypeRules {
        PluginTypeRules::parse(
            r#"[
              {"types": ["host-device"], "namespaceSelector": {"matchLabels": {"plexus.test/host-device": "yes"}}},
              {"types": ["macvlan"], "fields": {"master": ["eth1"]}},
              {"types": ["macvlan"], "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["net"]}]}}
            ]"#,
        )
        .unwrap()
    }

    #[test]
    fn a_governed_type_needs_a_rule_that_selects_the_namespace() {
        let host_device = config(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "host-device", "device": "eth9"}),
        );
        let r = rules();
        assert!(r.governs(&host_device));
        assert_eq!(
            r.problems(
                "ok",
                &labels(&[("plexus.test/host-device", "yes")]),
                &host_device
            ),
            Vec::<String>::new()
        );
        let denied = r.problems("tenant", &labels(&[("other", "x")]), &host_device);
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert!(
            denied[0].contains("\"host-device\"") && denied[0].contains("tenant"),
            "{denied:?}"
        );
        assert!(
            denied[0].contains("plexus.test/host-device=yes"),
            "{denied:?}"
        );
    }

    #[test]
    fn fields_constrain_the_plugin_object_and_rules_add_up() {
        let r = rules();
        let on = |master: Option<&str>| {
            let mut v = json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan"});
            if let Some(m) = master {
                v["master"] = json!(m);
            }
            config(v)
        };
        assert!(
            r.problems("any", &labels(&[]), &on(Some("eth1")))
                .is_empty()
        );
        assert_eq!(r.problems("any", &labels(&[]), &on(Some("eth0"))).len(), 1);
        assert_eq!(
            r.problems("any", &labels(&[]), &on(None)).len(),
            1,
            "an absent field holds no value"
        );
        // The second macvlan rule allows any master in namespaces of team net.
        assert!(
            r.problems("net", &labels(&[("team", "net")]), &on(Some("eth0")))
                .is_empty()
        );
    }

    #[test]
    fn ungoverned_types_and_ipam_types() {
        let r = PluginTypeRules::parse(
            r#"[{"types": ["dhcp"], "namespaceSelector": {"matchLabels": {"dhcp": "on"}}}]"#,
        )
        .unwrap();
        let bridge = config(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": {"type": "host-local"}}),
        );
        assert!(!r.governs(&bridge));
        assert!(r.problems("x", &labels(&[]), &bridge).is_empty());
        let dhcp = config(
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge", "ipam": {"type": "dhcp"}}]}),
        );
        assert!(r.governs(&dhcp));
        assert_eq!(r.problems("x", &labels(&[]), &dhcp).len(), 1);
        assert!(
            r.problems("x", &labels(&[("dhcp", "on")]), &dhcp)
                .is_empty()
        );
    }

    #[test]
    fn bad_rules_are_refused_when_loaded() {
        assert!(PluginTypeRules::parse("").unwrap().rules.is_empty());
        assert!(matches!(
            PluginTypeRules::parse("{"),
            Err(RuleError::Json(_))
        ));
        assert!(matches!(
            PluginTypeRules::parse(r#"[{"types": []}]"#),
            Err(RuleError::Invalid { index: 0, .. })
        ));
        assert!(matches!(
            PluginTypeRules::parse(r#"[{"types": ["x"], "typo": 1}]"#),
            Err(RuleError::Json(_))
        ));
        assert!(matches!(
            PluginTypeRules::parse(
                r#"[{"types": ["x"], "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}]"#
            ),
            Err(RuleError::Invalid { index: 0, .. })
        ));
    }
}
