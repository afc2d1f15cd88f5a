//! What the webhook decides for one object: a NetworkAttachmentDefinition (CREATE, UPDATE) or a pod that carries
//! the networks annotation (CREATE). The rules are `plexus_api`'s, the ones the plugin applies at ADD, so the
//! webhook refuses at `kubectl apply` what the plugin would refuse on the node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;
use plexus_api::cni::NetworkConfigList;
use plexus_api::injection::{SelectedNad, check_requests};
use plexus_api::ipam_claim::{ClaimLookup, check_claim, claim_warning};
use plexus_api::nad::{NetworkAttachmentDefinition, nad_config, nad_warnings, validate_nad};
use plexus_api::plugin_rules::PluginTypeRules;
use plexus_api::policy::{
    NetworkRef, NetworkRequest, PodView, Policy, PolicyError, check_plugin_types,
    delegate_from_nad, host_ports_refused_in, pod_requests, validate_pod,
};
use plexus_api::selection::{DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION};

/// The interface name kubelet gives the default network (CNI_IFNAME).
pub const RUNTIME_IFNAME: &str = "eth0";

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

/// The admin's rules the webhook applies beyond the plugin's config keys.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// The plugin's config keys the pod and NAD rules read (shared with the plugin).
    pub policy: Policy,
    /// Which plugin types NADs in which namespaces may use.
    pub plugin_types: PluginTypeRules,
}

/// A NAD: denied when [`validate_nad`] finds problems (all are listed, each naming its field), when a plugin type is
/// not in `allowedPluginTypes`, or when the cluster's plugin type rules do not allow one of its plugins in its
/// namespace; warnings from [`nad_warnings`].
pub async fn review_nad(
    nad: &NetworkAttachmentDefinition,
    lookup: &impl NadLookup,
    rules: &Rules,
) -> Verdict {
    if let Err(problems) = validate_nad(nad) {
        return Verdict::deny(problems.join("; "));
    }
    let name = nad.metadata.name.as_deref().unwrap_or_default();
    let namespace = nad.metadata.namespace.as_deref().unwrap_or("default");
    // validate_nad has read it: a config that is there parses.
    let config = nad_config(name, nad.spec.config.as_deref())
        .ok()
        .flatten()
        .and_then(|v| NetworkConfigList::from_value(v).ok());
    if let Some(config) = config {
        let mut problems = Vec::new();
        if let Err(e) = check_plugin_types(&rules.policy, &format!("{namespace}/{name}"), &config) {
            problems.push(e.to_string());
        }
        if rules.plugin_types.governs(&config) {
            match lookup.namespace_labels(namespace).await {
                Ok(labels) => problems.extend(rules.plugin_types.problems(namespace, &labels, &config)),
                Err(e) => problems.push(format!(
                    "the plugin type rules need namespace {namespace}'s labels, which could not be read: {e}"
                )),
            }
        }
        if !problems.is_empty() {
            return Verdict::deny(problems.join("; "));
        }
    }
    Verdict::allow(nad_warnings(nad))
}

/// The annotation a pod's denial starts with (`metadata.annotations[...]`), or `None` when the pod carries neither
/// the networks nor the default-network annotation (then there is nothing to review or inject).
pub fn networks_field(pod: &PodView) -> Option<String> {
    let field = if pod.annotations.contains_key(NETWORKS_ANNOTATION) {
        NETWORKS_ANNOTATION
    } else if pod.annotations.contains_key(DEFAULT_NETWORK_ANNOTATION) {
        DEFAULT_NETWORK_ANNOTATION
    } else {
        return None;
    };
    Some(format!("metadata.annotations[{field}]"))
}

/// The NADs a pod's requests name, keyed by (namespace, name), each looked up once (`None`: it does not exist).
/// `Err` is the denial when one could not be looked up.
pub type FoundNads = HashMap<(String, String), Option<Arc<NetworkAttachmentDefinition>>>;

pub async fn find_nads(
    field: &str,
    requests: &[NetworkRequest],
    nads: &impl NadLookup,
) -> Result<FoundNads, String> {
    let mut found = FoundNads::new();
    for request in requests {
        if let NetworkRef::Nad { namespace, name } = &request.reference {
            let key = (namespace.clone(), name.clone());
            if found.contains_key(&key) {
                continue;
            }
            let nad = nads.get(namespace, name).await.map_err(|e| {
                format!(
                    "{field}: network {namespace}/{name}: could not look up the NetworkAttachmentDefinition: {e}"
                )
            })?;
            found.insert(key, nad);
        }
    }
    Ok(found)
}

/// What resource injection reads from each NAD the pod selects (the networks annotation and the default-network
/// annotation; not `clusterNetwork` or `defaultNetworks`), once per selection, in order. `Err` is the denial: a NAD
/// that does not exist (as network-resources-injector), a bad resourceName or nodeSelector annotation.
pub fn selected_nads(
    field: &str,
    pod: &PodView,
    requests: &[NetworkRequest],
    found: &FoundNads,
) -> Result<Vec<SelectedNad>, String> {
    let mut selected = Vec::new();
    for request in requests {
        let NetworkRef::Nad { namespace, name } = &request.reference else {
            continue;
        };
        let network = format!("{namespace}/{name}");
        let Some(Some(nad)) = found.get(&(namespace.clone(), name.clone())) else {
            let e = PolicyError::NoSuchNad {
                pod: pod.label(),
                network,
            };
            return Err(format!("{field}: {e}"));
        };
        selected.push(
            SelectedNad::from_annotations(&network, nad.metadata.annotations.as_ref())
                .map_err(|e| format!("{field}: {e}"))?,
        );
    }
    Ok(selected)
}

/// A pod that carries the networks (or default-network) annotation: every rule of the plugin's plan
/// ([`validate_pod`]) with the NADs it names fetched first, then the device count ([`check_requests`]): the pod's
/// containers (`spec`) must request at least one device of each NAD's resourceName per selection. A network the
/// webhook cannot judge (an on-disk config named by `clusterNetwork` or `defaultNetworks`) is left to the plugin.
/// The denial starts with the annotation and names the network or element; the plugin's warnings (Decision 7) come
/// back as admission warnings.
///
/// `portMappings` are refused as the node refuses them (`allowPortMappings`), and in a namespace whose Pod Security
/// level forbids host ports ([`host_ports_refused_in`]).
pub async fn review_pod(
    pod: &PodView,
    spec: &PodSpec,
    nads: &impl NadLookup,
    rules: &Rules,
) -> Verdict {
    let Some(field) = networks_field(pod) else {
        return Verdict::default();
    };
    let namespace_policy;
    let policy = if rules.policy.port_mappings_refused.is_none() {
        let labels = match nads.namespace_labels(&pod.namespace).await {
            Ok(labels) => labels,
            Err(e) => {
                return Verdict::deny(format!(
                    "{field}: namespace {} could not be read to apply its Pod Security level: {e}",
                    pod.namespace
                ));
            }
        };
        namespace_policy = Policy {
            port_mappings_refused: host_ports_refused_in(&pod.namespace, &labels),
            ..rules.policy.clone()
        };
        &namespace_policy
    } else {
        &rules.policy
    };
    let requests = match pod_requests(policy, pod) {
        Ok(r) => r,
        Err(e) => return Verdict::deny(format!("{field}: {e}")),
    };
    for request in &requests {
        if let Some(sel) = &request.selection
            && let Err(e) = check_claim(&pod.label(), &request.reference.label(), sel)
        {
            return Verdict::deny(format!("{field}: {e}"));
        }
    }
    let found = match find_nads(&field, &requests, nads).await {
        Ok(found) => found,
        Err(denial) => return Verdict::deny(denial),
    };
    // Each NAD's network name (its config's `name`), for the claims' `spec.network`.
    let mut network_names = HashMap::new();
    let verdict = validate_pod(policy, pod, RUNTIME_IFNAME, |reference| match reference {
        NetworkRef::Nad { namespace, name } => {
            match found.get(&(namespace.clone(), name.clone())) {
                Some(Some(nad)) => {
                    let resolved = delegate_from_nad(
                        policy,
                        pod,
                        namespace,
                        name,
                        nad.spec.config.as_deref(),
                    )?;
                    if let Some(network) = &resolved {
                        network_names.insert(reference.clone(), network.config.name.clone());
                    }
                    Ok(resolved)
                }
                _ => Err(PolicyError::NoSuchNad {
                    pod: pod.label(),
                    network: format!("{namespace}/{name}"),
                }),
            }
        }
        // On-disk configs and paths live on the nodes: the plugin judges them.
        _ => Ok(None),
    });
    let mut warnings: Vec<String> = match verdict {
        Ok(warnings) => warnings.iter().map(ToString::to_string).collect(),
        Err(e) => return Verdict::deny(format!("{field}: {e}")),
    };
    let devices = selected_nads(&field, pod, &requests, &found).and_then(|selected| {
        check_requests(&pod.label(), spec, &selected).map_err(|e| format!("{field}: {e}"))
    });
    if let Err(denial) = devices {
        return Verdict::deny(denial);
    }
    warnings.extend(claim_warnings(pod, &requests, &network_names, nads).await);
    Verdict::allow(warnings)
}

/// The warnings about the pod's IPAMClaims (`ipam-claim-reference`, in the pod's namespace): one that does not
/// exist, one for another network than the selected NAD's, one that could not be checked ([`claim_warning`]).
async fn claim_warnings(
    pod: &PodView,
    requests: &[NetworkRequest],
    network_names: &HashMap<NetworkRef, String>,
    nads: &impl NadLookup,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for request in requests {
        let Some(claim) = request
            .selection
            .as_ref()
            .and_then(|s| s.ipam_claim_reference.as_deref())
        else {
            continue;
        };
        let lookup = nads.ipam_claim(&pod.namespace, claim).await;
        warnings.extend(claim_warning(
            &request.reference.label(),
            &pod.namespace,
            claim,
            network_names.get(&request.reference).map(String::as_str),
            &lookup,
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_api::nad::NetworkAttachmentDefinitionSpec;

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
