//! What the webhook decides for one object: a NetworkAttachmentDefinition (CREATE, UPDATE) or a pod that carries
//! the networks annotation (CREATE). The rules are `plexus_api`'s, the ones the plugin applies at ADD, so the
//! webhook refuses at `kubectl apply` what the plugin would refuse on the node.

use std::collections::BTreeMap;
use std::sync::Arc;

use plexus_api::cni::NetworkConfigList;
use plexus_api::nad::{NetworkAttachmentDefinition, nad_config};
use plexus_api::selection::{NETWORKS_ANNOTATION, parse_selections};
use plexus_api::validate::{nad_warnings, validate_nad};

/// The webhook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// `None`: allowed. `Some(message)`: denied, with a message naming the field or element.
    pub denial: Option<String>,
    /// Shown by `kubectl` as `Warning: ...` whether or not the object is admitted.
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn allow(warnings: Vec<String>) -> Self {
        Self {
            denial: None,
            warnings,
        }
    }

    pub fn deny(message: String) -> Self {
        Self {
            denial: Some(message),
            warnings: Vec::new(),
        }
    }
}

/// How the plugin on the nodes is configured, as far as admission depends on it.
#[derive(Debug, Clone, Default)]
pub struct PodPolicy {
    /// `namespaceIsolation`: a pod may select NADs of its own namespace and of `global_namespaces` only.
    pub namespace_isolation: bool,
    /// `globalNamespaces`.
    pub global_namespaces: Vec<String>,
    /// How many `defaultNetworks` every pod gets before its selections (they shift the generated `net<i>`).
    pub default_networks: usize,
}

/// Why a NAD could not be looked up (the API server did not answer).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// Where the webhook finds NADs: a watch cache, falling back to a GET for one not seen yet.
pub trait NadLookup {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Arc<NetworkAttachmentDefinition>>, LookupError>> + Send;
}

/// A NAD: denied when [`validate_nad`] finds problems (all are listed, each naming its field); warnings from
/// [`nad_warnings`].
pub fn review_nad(nad: &NetworkAttachmentDefinition) -> Verdict {
    match validate_nad(nad) {
        Ok(()) => Verdict::allow(nad_warnings(nad)),
        Err(problems) => Verdict::deny(problems.join("; ")),
    }
}

/// A pod: its networks annotation must parse (both forms), name NADs that exist and that the plugin could run, and
/// pass the plugin's plan rules. The denial names the annotation element.
pub async fn review_pod(
    namespace: &str,
    annotations: &BTreeMap<String, String>,
    nads: &impl NadLookup,
    policy: &PodPolicy,
) -> Verdict {
    let Some(text) = annotations
        .get(NETWORKS_ANNOTATION)
        .filter(|a| !a.trim().is_empty())
    else {
        return Verdict::default();
    };
    let field = format!("metadata.annotations[{NETWORKS_ANNOTATION}]");
    let selections = match parse_selections(text, namespace) {
        Ok(s) => s,
        Err(e) => return Verdict::deny(format!("{field}: {e}")),
    };
    if let Err(e) = crate::plan_rules::check(namespace, &selections, policy) {
        return Verdict::deny(format!("{field}: {e}"));
    }
    for (index, sel) in selections.iter().enumerate() {
        let element = format!("{field}: element {index} ({}/{})", sel.namespace, sel.name);
        let nad = match nads.get(&sel.namespace, &sel.name).await {
            Ok(Some(nad)) => nad,
            Ok(None) => {
                return Verdict::deny(format!(
                    "{element}: NetworkAttachmentDefinition {}/{} does not exist",
                    sel.namespace, sel.name
                ));
            }
            Err(e) => {
                return Verdict::deny(format!(
                    "{element}: could not look up NetworkAttachmentDefinition {}/{}: {e}",
                    sel.namespace, sel.name
                ));
            }
        };
        let config = match nad_config(&sel.name, nad.spec.config.as_deref()) {
            // A file-backed network: its config is on the nodes, nothing more to check here.
            Ok(None) => continue,
            Ok(Some(config)) => NetworkConfigList::from_value(config).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                return Verdict::deny(format!(
                    "{element}: NetworkAttachmentDefinition {}/{} is not usable: {e}",
                    sel.namespace, sel.name
                ));
            }
        };
        if let Err(e) = crate::plan_rules::check_capabilities(sel, &config) {
            return Verdict::deny(format!("{element}: {e}"));
        }
    }
    Verdict::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_api::nad::NetworkAttachmentDefinitionSpec;
    use std::collections::HashMap;

    /// NADs held in memory: the lookup's contract (found, absent, API error) without an API server.
    struct Nads(HashMap<(String, String), Arc<NetworkAttachmentDefinition>>);

    impl NadLookup for Nads {
        async fn get(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<Arc<NetworkAttachmentDefinition>>, LookupError> {
            if name == "unreachable" {
                return Err(LookupError("connection refused".into()));
            }
            Ok(self
                .0
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned())
        }
    }

    fn nads() -> Nads {
        let mut map = HashMap::new();
        for (ns, name, config) in [
            (
                "ns",
                "plain",
                Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#),
            ),
            ("ns", "ondisk", None),
            (
                "ns",
                "static",
                Some(
                    r#"{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","capabilities":{"ips":true}}]}"#,
                ),
            ),
            ("ns", "broken", Some("{oops")),
            (
                "other",
                "plain",
                Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#),
            ),
        ] {
            let mut nad = NetworkAttachmentDefinition::new(
                name,
                NetworkAttachmentDefinitionSpec {
                    config: config.map(str::to_owned),
                },
            );
            nad.metadata.namespace = Some(ns.into());
            map.insert((ns.to_owned(), name.to_owned()), Arc::new(nad));
        }
        Nads(map)
    }

    fn pod(annotation: &str, policy: &PodPolicy) -> Verdict {
        let annotations = BTreeMap::from([(NETWORKS_ANNOTATION.to_owned(), annotation.to_owned())]);
        futures::executor::block_on(review_pod("ns", &annotations, &nads(), policy))
    }

    fn denial(annotation: &str, policy: &PodPolicy) -> String {
        pod(annotation, policy)
            .denial
            .unwrap_or_else(|| panic!("{annotation} was allowed"))
    }

    #[test]
    fn legal_pods_are_allowed() {
        let policy = PodPolicy::default();
        for ok in [
            "plain",
            "plain, plain",
            "ondisk@data0, other/plain",
            r#"[{"name":"static","ips":["198.18.0.5/24"]},{"name":"plain","interface":"net3"}]"#,
            "plain@net1, plain",
            " ",
        ] {
            assert_eq!(pod(ok, &policy), Verdict::default(), "{ok}");
        }
        let none = BTreeMap::new();
        assert_eq!(
            futures::executor::block_on(review_pod("ns", &none, &nads(), &policy)),
            Verdict::default()
        );
    }

    #[test]
    fn each_refusal_names_the_element() {
        let policy = PodPolicy::default();
        let field = format!("metadata.annotations[{NETWORKS_ANNOTATION}]");
        let cases = [
            ("plain,,plain", "element 1 ``: the entry is empty"),
            (
                "missing",
                "element 0 (ns/missing): NetworkAttachmentDefinition ns/missing does not exist",
            ),
            (
                "plain@net2, plain",
                "element 1 (ns/plain): interface name \"net2\" is already used",
            ),
            (
                "plain@eth0",
                "element 0 (ns/plain): interface name \"eth0\" is already used",
            ),
            ("plain@a:b", "interface name \"a:b\" is not valid"),
            (
                r#"[{"name":"plain","ips":["198.18.0.5/24"]}]"#,
                "element 0 (ns/plain): \"ips\" was asked for, but no plugin",
            ),
            (
                r#"[{"name":"plain","mac":"nope"}]"#,
                "\"mac\" \"nope\" is not a 6-byte MAC",
            ),
            (
                "broken",
                "element 0 (ns/broken): NetworkAttachmentDefinition ns/broken is not usable",
            ),
            (
                "unreachable",
                "could not look up NetworkAttachmentDefinition ns/unreachable: connection refused",
            ),
            (
                r#"[{"name":"plain","default-route":["198.18.0.1"]},{"name":"plain","default-route":["198.18.0.2"]}]"#,
                "both set \"default-route\"",
            ),
            (
                r#"[{"name":"plain","default-route":["198.18.0.1","198.18.0.2"]}]"#,
                "element 0 (ns/plain): default-route lists two gateways of one family",
            ),
        ];
        for (annotation, want) in cases {
            let got = denial(annotation, &policy);
            assert!(got.starts_with(&field), "{got}");
            assert!(got.contains(want), "{annotation}: {got}\nwanted: {want}");
        }
    }

    #[test]
    fn namespace_isolation_and_default_networks_follow_the_policy() {
        let isolated = PodPolicy {
            namespace_isolation: true,
            global_namespaces: vec!["default".into()],
            default_networks: 0,
        };
        let got = denial("other/plain", &isolated);
        assert!(
            got.contains("element 0 (other/plain): the network is in another namespace"),
            "{got}"
        );
        assert_eq!(pod("plain", &isolated), Verdict::default());
        let shifted = PodPolicy {
            default_networks: 1,
            ..PodPolicy::default()
        };
        // With one default network, the first selection is generated as net2.
        assert!(denial("plain, plain@net2", &shifted).contains("\"net2\" is already used"));
        assert_eq!(pod("plain, plain@net1", &shifted), Verdict::default());
    }

    #[test]
    fn nads_denied_with_fields_and_warned() {
        let mut bad = NetworkAttachmentDefinition::new(
            "a",
            NetworkAttachmentDefinitionSpec {
                config: Some(r#"{"cniVersion":"1.0.0","type":"/bin/sh"}"#.into()),
            },
        );
        let v = review_nad(&bad);
        assert!(
            v.denial.as_deref().unwrap().starts_with("spec.config"),
            "{v:?}"
        );
        bad.spec.config = Some(r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#.into());
        let v = review_nad(&bad);
        assert_eq!(v.denial, None);
        assert_eq!(v.warnings.len(), 1);
    }
}
