//! What the mutating webhook (`POST /mutate`, opt-in in the chart) does for one pod at CREATE: resource injection
//! with network-resources-injector's contract. The pod's selections come from `plexus_api`'s parser with the
//! webhook's policy, each NAD they name is looked up (a missing one denies the pod, as NRI), and the patch is
//! [`injection_patch`]'s. The validating webhook runs after it, so an injected pod passes the device count.

use k8s_openapi::api::core::v1::Pod;
use plexus_api::injection::{PatchOperation, injection_patch};
use plexus_api::policy::PodView;

use crate::admission::{NadLookup, Rules, decide};

/// The mutating webhook's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Injection {
    /// `Some(message)`: the pod is denied (its patch is then empty).
    pub denial: Option<String>,
    /// The JSON patch; empty when there is nothing to add.
    pub patch: Vec<PatchOperation>,
}

impl Injection {
    fn deny(message: String) -> Self {
        Self {
            denial: Some(message),
            patch: Vec::new(),
        }
    }
}

/// The patch for `pod` (`view` is its namespace, name and annotations). A pod without the networks and
/// default-network annotations gets none. Denied: an annotation the rules refuse (the validating webhook would refuse
/// it with the same message), a NAD that does not exist or could not be looked up, a bad resourceName or
/// nodeSelector annotation.
pub async fn inject_pod(
    view: &PodView,
    pod: &Pod,
    nads: &impl NadLookup,
    rules: &Rules,
) -> Injection {
    if plexus_api::admission::networks_field(view).is_none() {
        return Injection::default();
    }
    let selected = match decide(nads, |answers| {
        plexus_api::admission::injected_nads(view, rules, answers)
    })
    .await
    {
        Ok(selected) => selected,
        Err(denial) => return Injection::deny(denial),
    };
    Injection {
        denial: None,
        patch: injection_patch(pod, &selected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::LookupError;
    use plexus_api::ipam_claim::ClaimLookup;
    use plexus_api::nad::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
    use plexus_api::policy::Policy;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// Two NADs in memory: `ns/sriov` (a resource and a node selector) and `ns/plain`.
    struct Nads;

    impl NadLookup for Nads {
        async fn get(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<Arc<NetworkAttachmentDefinition>>, LookupError> {
            let annotations: BTreeMap<String, String> = match (namespace, name) {
                ("ns", "sriov") => [
                    ("k8s.v1.cni.cncf.io/resourceName", "intel.com/sriov"),
                    ("k8s.v1.cni.cncf.io/nodeSelector", "sriov=yes"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
                ("ns", "plain") => BTreeMap::new(),
                ("ns", "unreachable") => return Err(LookupError("connection refused".into())),
                _ => return Ok(None),
            };
            let mut nad = NetworkAttachmentDefinition::new(
                name,
                NetworkAttachmentDefinitionSpec {
                    config: Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#.into()),
                },
            );
            nad.metadata.namespace = Some(namespace.into());
            nad.metadata.annotations = Some(annotations);
            Ok(Some(Arc::new(nad)))
        }

        async fn namespace_labels(
            &self,
            _namespace: &str,
        ) -> Result<BTreeMap<String, String>, LookupError> {
            Ok(BTreeMap::new())
        }

        async fn ipam_claim(&self, _namespace: &str, _name: &str) -> ClaimLookup {
            ClaimLookup::Missing
        }
    }

    fn inject(annotations: Value) -> Injection {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "i", "resources": {}}]}
        }))
        .unwrap();
        let view = PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: String::new(),
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        };
        let rules = Rules {
            policy: Policy {
                static_delegates: 1,
                ..Policy::default()
            },
            ..Rules::default()
        };
        futures::executor::block_on(inject_pod(&view, &pod, &Nads, &rules))
    }

    fn requests_of(injection: &Injection) -> Vec<(String, Value)> {
        injection
            .patch
            .iter()
            .filter(|op| {
                op.path
                    .starts_with("/spec/containers/0/resources/requests/")
            })
            .map(|op| (op.path.clone(), op.value.clone()))
            .collect()
    }

    #[test]
    fn both_annotations_and_both_forms_count_one_device_per_selection() {
        for annotations in [
            json!({"k8s.v1.cni.cncf.io/networks": "sriov, plain, sriov@net9"}),
            json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name":"sriov"},{"name":"sriov","namespace":"ns"}]"#}),
            json!({"k8s.v1.cni.cncf.io/networks": "sriov", "v1.multus-cni.io/default-network": "ns/sriov"}),
        ] {
            let injection = inject(annotations.clone());
            assert_eq!(injection.denial, None, "{annotations}");
            assert_eq!(
                requests_of(&injection),
                [(
                    "/spec/containers/0/resources/requests/intel.com~1sriov".to_owned(),
                    json!("2")
                )],
                "{annotations}"
            );
            let selector = injection.patch.last().unwrap();
            assert_eq!(
                (selector.path.as_str(), &selector.value),
                ("/spec/nodeSelector", &json!({"sriov": "yes"}))
            );
        }
    }

    #[test]
    fn a_missing_nad_or_a_bad_annotation_denies_and_no_annotation_skips() {
        let denial = inject(json!({"k8s.v1.cni.cncf.io/networks": "sriov, nowhere"}))
            .denial
            .unwrap();
        assert!(
            denial.starts_with("metadata.annotations[k8s.v1.cni.cncf.io/networks]: ")
                && denial.contains("network ns/nowhere: no such NetworkAttachmentDefinition"),
            "{denial}"
        );
        let denial = inject(json!({"k8s.v1.cni.cncf.io/networks": "unreachable"}))
            .denial
            .unwrap();
        assert!(denial.contains("connection refused"), "{denial}");
        let denial = inject(json!({"k8s.v1.cni.cncf.io/networks": "a@b@c"}))
            .denial
            .unwrap();
        assert!(denial.contains("k8s.v1.cni.cncf.io/networks"), "{denial}");
        assert_eq!(
            inject(json!({"other": "x"})),
            Injection::default(),
            "no networks annotation: nothing to do"
        );
        let plain = inject(json!({"k8s.v1.cni.cncf.io/networks": "plain"}));
        assert_eq!(plain, Injection::default());
    }
}
