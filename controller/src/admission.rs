//! What the webhook decides for one object: a NetworkAttachmentDefinition (CREATE, UPDATE) or a pod that carries
//! the networks annotation (CREATE). The rules are `plexus_api::admission`'s (the plugin's rules, and the ones
//! `kubectl plexus validate` runs on files); this module answers the lookups they ask for from [`NadLookup`].

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;
use plexus_api::admission::{self, Answers, Decision, Question};
use plexus_api::ipam_claim::{ClaimLookup, claim_warning};
use plexus_api::nad::NetworkAttachmentDefinition;
use plexus_api::policy::PodView;
use plexus_api::policy::{NetworkRef, delegate_from_nad, pod_requests};

pub use plexus_api::admission::{RUNTIME_IFNAME, Rules, Verdict};

/// Why a NAD could not be looked up (the API server did not answer).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// Where the webhook finds NADs and namespaces' labels: watch caches, falling back to a GET for an object not seen
/// yet.
pub trait NadLookup {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Arc<NetworkAttachmentDefinition>>, LookupError>> + Send;

    /// The labels of a namespace (none when it does not exist).
    fn namespace_labels(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, LookupError>> + Send;

    /// An IPAMClaim, for the warnings about a selection's `ipam-claim-reference`. Never fails: what could not be
    /// read is [`ClaimLookup::Unreadable`] or [`ClaimLookup::NotServed`].
    fn ipam_claim(&self, namespace: &str, name: &str) -> impl Future<Output = ClaimLookup> + Send;
}

/// Runs `rule`, answering what it asks from `lookup`, until it decides (the asynchronous twin of
/// [`plexus_api::admission::decide`]; [`Answers::open`] makes each round answer something new or close).
pub async fn decide<T>(lookup: &impl NadLookup, rule: impl Fn(&Answers) -> Decision<T>) -> T {
    let mut answers = Answers::default();
    loop {
        match rule(&answers) {
            Ok(decided) => return decided,
            Err(asked) => {
                for question in answers.open(asked) {
                    match question {
                        Question::Nad { namespace, name } => {
                            let answer = lookup.get(&namespace, &name).await;
                            answers.set_nad(&namespace, &name, answer.map_err(|e| e.to_string()));
                        }
                        Question::NamespaceLabels { namespace } => {
                            let answer = lookup.namespace_labels(&namespace).await;
                            answers.set_namespace_labels(
                                &namespace,
                                answer.map_err(|e| e.to_string()),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// [`plexus_api::admission::review_nad`] with its lookups answered by `lookup`.
pub async fn review_nad(
    nad: &NetworkAttachmentDefinition,
    lookup: &impl NadLookup,
    rules: &Rules,
) -> Verdict {
    decide(lookup, |answers| admission::review_nad(nad, rules, answers)).await
}

/// [`plexus_api::admission::review_pod`] with its lookups answered by `nads`.
pub async fn review_pod(
    pod: &PodView,
    spec: &PodSpec,
    nads: &impl NadLookup,
    rules: &Rules,
) -> Verdict {
    let mut verdict = decide(nads, |answers| {
        admission::review_pod(pod, spec, rules, answers)
    })
    .await;
    if verdict.denial.is_none() {
        verdict
            .warnings
            .extend(claim_warnings(pod, rules, nads).await);
    }
    verdict
}

/// The warnings about the pod's IPAMClaims (`ipam-claim-reference`, in the pod's namespace): one that does not
/// exist, one for another network than the selected NAD's, one that could not be checked ([`claim_warning`]). They
/// need the cluster (the claims), so they are the webhook's, beside the shared rules (which refuse `ips` with a claim).
async fn claim_warnings(pod: &PodView, rules: &Rules, nads: &impl NadLookup) -> Vec<String> {
    let Ok(requests) = pod_requests(&rules.policy, pod) else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for request in &requests {
        let Some(claim) = request
            .selection
            .as_ref()
            .and_then(|s| s.ipam_claim_reference.as_deref())
        else {
            continue;
        };
        // The selected NAD's network name (its config's `name`), for the claim's `spec.network`.
        let network_name = match &request.reference {
            NetworkRef::Nad { namespace, name } => match nads.get(namespace, name).await {
                Ok(Some(nad)) => delegate_from_nad(
                    &rules.policy,
                    pod,
                    namespace,
                    name,
                    nad.spec.config.as_deref(),
                )
                .ok()
                .flatten()
                .map(|n| n.config.name),
                _ => None,
            },
            _ => None,
        };
        let lookup = nads.ipam_claim(&pod.namespace, claim).await;
        warnings.extend(claim_warning(
            &request.reference.label(),
            &pod.namespace,
            claim,
            network_name.as_deref(),
            &lookup,
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_api::nad::NetworkAttachmentDefinitionSpec;
    use plexus_api::plugin_rules::PluginTypeRules;
    use plexus_api::policy::Policy;
    use plexus_api::selection::NETWORKS_ANNOTATION;
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

        /// Namespace `baseline` enforces Pod Security level baseline; `devices` is labelled for host-device.
        async fn namespace_labels(
            &self,
            namespace: &str,
        ) -> Result<BTreeMap<String, String>, LookupError> {
            Ok(match namespace {
                "baseline" => [(
                    plexus_api::policy::POD_SECURITY_ENFORCE_LABEL.to_owned(),
                    "baseline".to_owned(),
                )]
                .into(),
                "devices" => [("plexus.test/host-device".to_owned(), "yes".to_owned())].into(),
                "unreadable" => return Err(LookupError("connection refused".into())),
                _ => BTreeMap::new(),
            })
        }

        /// Claims `ns/for-plain` (network `plain`) and `ns/for-red` (network `red`); `ns/forbidden` can't be read;
        /// namespace `nocrd` has no IPAMClaim CRD.
        async fn ipam_claim(&self, namespace: &str, name: &str) -> ClaimLookup {
            match (namespace, name) {
                ("nocrd", _) => ClaimLookup::NotServed,
                ("ns", "for-plain") => ClaimLookup::Found {
                    network: "plain".into(),
                },
                ("ns", "for-red") => ClaimLookup::Found {
                    network: "red".into(),
                },
                ("ns", "forbidden") => ClaimLookup::Unreadable("forbidden".into()),
                _ => ClaimLookup::Missing,
            }
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

    fn view(annotation: &str) -> PodView {
        PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: String::new(),
            annotations: [(NETWORKS_ANNOTATION.to_owned(), annotation.to_owned())].into(),
        }
    }

    fn default_policy() -> Policy {
        Policy {
            static_delegates: 1,
            ..Policy::default()
        }
    }

    fn rules(policy: &Policy) -> Rules {
        Rules {
            policy: policy.clone(),
            ..Rules::default()
        }
    }

    fn pod(annotation: &str, policy: &Policy) -> Verdict {
        futures::executor::block_on(review_pod(
            &view(annotation),
            &PodSpec::default(),
            &nads(),
            &rules(policy),
        ))
    }

    fn nad_verdict(namespace: &str, config: &str, rules: &Rules) -> Verdict {
        let mut nad = NetworkAttachmentDefinition::new(
            "n",
            NetworkAttachmentDefinitionSpec {
                config: Some(config.to_owned()),
            },
        );
        nad.metadata.namespace = Some(namespace.into());
        futures::executor::block_on(review_nad(&nad, &nads(), rules))
    }

    fn denial(annotation: &str, policy: &Policy) -> String {
        pod(annotation, policy)
            .denial
            .unwrap_or_else(|| panic!("{annotation} was allowed"))
    }

    #[test]
    fn legal_pods_are_allowed() {
        let policy = default_policy();
        for ok in [
            "plain",
            "plain, plain",
            "ondisk@data0, other/plain",
            r#"[{"name":"static","ips":["198.18.0.5/24"]},{"name":"plain","interface":"net3"}]"#,
            "plain@net1, plain",
        ] {
            assert_eq!(pod(ok, &policy), Verdict::default(), "{ok}");
        }
        let mut none = view("");
        none.annotations.clear();
        assert_eq!(
            futures::executor::block_on(review_pod(
                &none,
                &PodSpec::default(),
                &nads(),
                &rules(&policy)
            )),
            Verdict::default()
        );
    }

    #[test]
    fn each_refusal_names_the_element_or_network() {
        let policy = default_policy();
        let field = format!("metadata.annotations[{NETWORKS_ANNOTATION}]");
        let cases = [
            (" ", "the networks annotation is empty"),
            ("plain,,plain", "element 1 ``: the entry is empty"),
            (
                "missing",
                "network ns/missing: no such NetworkAttachmentDefinition",
            ),
            (
                "plain@net2, plain",
                "network \"ns/plain\": interface name \"net2\" is already used",
            ),
            ("plain@eth0", "interface name \"eth0\" is already used"),
            ("plain@a:b", "interface name \"a:b\" is not valid"),
            (
                r#"[{"name":"plain","mac":"nope"}]"#,
                "\"mac\" \"nope\" is not a 6-byte MAC",
            ),
            (
                "broken",
                "network ns/broken: NetworkAttachmentDefinition \"broken\": spec.config is not valid JSON",
            ),
            (
                "unreachable",
                "network ns/unreachable: could not look up the NetworkAttachmentDefinition: connection refused",
            ),
            (
                r#"[{"name":"plain","default-route":["198.18.0.1"]},{"name":"plain","default-route":["198.18.0.2"]}]"#,
                "both set \"default-route\"",
            ),
            (
                r#"[{"name":"plain","default-route":["198.18.0.1","198.18.0.2"]}]"#,
                "network ns/plain: default-route lists two gateways of one family",
            ),
        ];
        for (annotation, want) in cases {
            let got = denial(annotation, &policy);
            assert!(got.starts_with(&field), "{got}");
            assert!(got.contains(want), "{annotation}: {got}\nwanted: {want}");
        }
    }

    #[test]
    fn ipam_claims_with_ips_are_refused_and_missing_or_mismatched_claims_warned() {
        let policy = default_policy();
        let got = denial(
            r#"[{"name":"static","ips":["198.18.0.5/24"],"ipam-claim-reference":"for-plain"}]"#,
            &policy,
        );
        assert!(
            got.starts_with(&format!(
                "metadata.annotations[{NETWORKS_ANNOTATION}]: pod ns/p: network ns/static"
            )) && got
                .contains("asks for both \"ips\" and \"ipam-claim-reference\" (\"for-plain\")")
                && got.contains(
                    "; the spec makes that an error (R38): the addresses come from the IPAMClaim"
                ),
            "{got}"
        );
        let warned = |claim: &str| {
            let v = pod(
                &format!(r#"[{{"name":"plain","ipam-claim-reference":"{claim}"}}]"#),
                &policy,
            );
            assert_eq!(v.denial, None, "{v:?}");
            v.warnings
        };
        assert_eq!(warned("for-plain"), Vec::<String>::new());
        let other = warned("for-red");
        assert!(
            other.len() == 1
                && other[0]
                    .contains("network ns/plain: IPAMClaim ns/for-red is for network \"red\"")
                && other[0].contains("network is \"plain\""),
            "{other:?}"
        );
        let missing = warned("nothing");
        assert!(
            missing.len() == 1 && missing[0].contains("IPAMClaim ns/nothing does not exist"),
            "{missing:?}"
        );
        let forbidden = warned("forbidden");
        assert!(
            forbidden[0].ends_with("can't be checked: forbidden"),
            "{forbidden:?}"
        );
        // A NAD with no config (an on-disk network): the claim's network is not judged, its existence is.
        let v = pod(
            r#"[{"name":"ondisk","ipam-claim-reference":"for-red"}]"#,
            &policy,
        );
        assert_eq!(v, Verdict::default());
        // Without the CRD: admitted, with the warning that the claim can't be checked.
        let mut nocrd = view(r#"[{"name":"plain","namespace":"ns","ipam-claim-reference":"c"}]"#);
        nocrd.namespace = "nocrd".into();
        let v = futures::executor::block_on(review_pod(
            &nocrd,
            &PodSpec::default(),
            &nads(),
            &rules(&policy),
        ));
        assert_eq!(v.denial, None);
        assert_eq!(
            v.warnings,
            [
                "network ns/plain: IPAMClaim nocrd/c can't be checked: the IPAMClaim CRD \
              (ipamclaims.k8s.cni.cncf.io) is not installed"
            ]
        );
    }

    #[test]
    fn capabilities_warn_by_default_and_refuse_when_strict() {
        let annotation = r#"[{"name":"plain","ips":["198.18.0.5/24"]}]"#;
        let v = pod(annotation, &default_policy());
        assert_eq!(v.denial, None);
        assert_eq!(v.warnings.len(), 1, "{v:?}");
        assert!(
            v.warnings[0].contains("\"ips\" was requested but no plugin"),
            "{v:?}"
        );
        let strict = Policy {
            strict_capabilities: true,
            ..default_policy()
        };
        assert!(denial(annotation, &strict).contains("strictCapabilities is on"));
    }

    #[test]
    fn namespace_isolation_and_default_networks_follow_the_policy() {
        let isolated = Policy {
            namespace_isolation: true,
            ..default_policy()
        };
        let got = denial("other/plain", &isolated);
        assert!(
            got.contains(
                "network other/plain is in another namespace, which namespaceIsolation forbids"
            ),
            "{got}"
        );
        assert_eq!(pod("plain", &isolated), Verdict::default());
        let shifted = Policy {
            default_networks: vec!["mon".into()],
            ..default_policy()
        };
        // With one default network, the first selection is generated as net2.
        assert!(denial("plain, plain@net2", &shifted).contains("\"net2\" is already used"));
        // ... and the default network itself takes net1.
        assert!(denial("plain@net1", &shifted).contains("\"net1\" is already used"));
        assert_eq!(pod("plain, plain@net3", &shifted), Verdict::default());
    }

    #[test]
    fn nads_denied_with_fields_and_warned() {
        let mut bad = NetworkAttachmentDefinition::new(
            "a",
            NetworkAttachmentDefinitionSpec {
                config: Some(r#"{"cniVersion":"1.0.0","type":"/bin/sh"}"#.into()),
            },
        );
        let review = |nad: &NetworkAttachmentDefinition| {
            futures::executor::block_on(review_nad(nad, &nads(), &Rules::default()))
        };
        let v = review(&bad);
        assert!(
            v.denial.as_deref().unwrap().starts_with("spec.config"),
            "{v:?}"
        );
        bad.spec.config = Some(r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#.into());
        let v = review(&bad);
        assert_eq!(v.denial, None);
        assert_eq!(v.warnings.len(), 1);
    }

    #[test]
    fn nads_nesting_a_meta_plugin_are_denied_wherever_it_is() {
        for config in [
            r#"{"cniVersion":"1.0.0","type":"plexus","binDir":"/tmp/x","delegates":[{"type":"x"}]}"#,
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"},{"type":"multus"}]}"#,
            r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"multus-shim"}}"#,
        ] {
            let v = nad_verdict("ns", config, &Rules::default());
            let denial = v.denial.unwrap_or_else(|| panic!("{config} was allowed"));
            assert!(denial.contains("is a meta-plugin"), "{denial}");
        }
    }

    #[test]
    fn allowed_plugin_types_and_namespace_rules_decide_a_nads_plugins() {
        let allowlist = Rules {
            policy: Policy {
                allowed_plugin_types: Some(vec!["bridge".into(), "host-local".into()]),
                ..default_policy()
            },
            ..Rules::default()
        };
        let bridge = r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"host-local"}}"#;
        assert_eq!(nad_verdict("ns", bridge, &allowlist).denial, None);
        let dhcp = r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"dhcp"}}"#;
        let denial = nad_verdict("ns", dhcp, &allowlist).denial.unwrap();
        assert!(
            denial.contains("\"dhcp\" is not in this node's allowedPluginTypes"),
            "{denial}"
        );

        let by_namespace = Rules {
            plugin_types: PluginTypeRules::parse(
                r#"[{"types":["host-device"],"namespaceSelector":{"matchLabels":{"plexus.test/host-device":"yes"}}}]"#,
            )
            .unwrap(),
            ..Rules::default()
        };
        let host_device = r#"{"cniVersion":"1.0.0","type":"host-device","device":"eth9"}"#;
        assert_eq!(
            nad_verdict("devices", host_device, &by_namespace).denial,
            None
        );
        let denial = nad_verdict("tenant", host_device, &by_namespace)
            .denial
            .unwrap();
        assert!(
            denial.contains("not allowed in namespace tenant"),
            "{denial}"
        );
        let denial = nad_verdict("unreadable", host_device, &by_namespace)
            .denial
            .unwrap();
        assert!(denial.contains("could not be read"), "{denial}");
        // Types no rule names need no namespace lookup.
        assert_eq!(
            nad_verdict("unreadable", bridge, &by_namespace).denial,
            None
        );
    }

    #[test]
    fn too_many_networks_and_host_ports_are_refused_like_on_the_node() {
        let policy = Policy {
            max_networks_per_pod: 3,
            ..default_policy()
        };
        assert_eq!(pod("plain, plain", &policy), Verdict::default());
        assert!(denial("plain, plain, plain", &policy).contains("asks for 4 networks"));

        let ports = r#"[{"name":"plain","portMappings":[{"hostPort":22,"containerPort":22,"protocol":"tcp"}]}]"#;
        assert_eq!(pod(ports, &default_policy()).denial, None);
        let mut in_baseline = view(ports);
        in_baseline.namespace = "baseline".into();
        let v = futures::executor::block_on(review_pod(
            &in_baseline,
            &PodSpec::default(),
            &nads(),
            &rules(&default_policy()),
        ));
        let refused = v.denial.unwrap();
        assert!(refused.contains("forbids host ports"), "{refused}");
        let refused = Policy {
            port_mappings_refused: Some("allowPortMappings is false on this node".into()),
            ..default_policy()
        };
        assert!(denial(ports, &refused).contains("allowPortMappings is false"));
    }
}
