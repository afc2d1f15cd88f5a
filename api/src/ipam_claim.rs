//! Persistent IPs (multi-network spec v1.3, SPEC A.8, R37, R38, R64): the `IPAMClaim` custom resource, how a
//! selection's `ipam-claim-reference` reaches the delegates, and what the webhook says about one.
//!
//! The spec names no transport from the meta-plugin to the IPAM plugin, and none is settled elsewhere: Multus drops
//! the key, OVN-Kubernetes reads the selection from the pod itself, and whereabouts' proposal leaves the choice open.
//! Plexus passes the claim two ways, both only for an attachment whose selection names a claim:
//!
//! * in every plugin's `args.cni`: [`CLAIM_ARG`] (the claim's name, the selection key's own spelling) and
//!   [`CLAIM_NAMESPACE_ARG`] (the pod's namespace, where the claim lives) — a plugin that reads `args.cni` finds it
//!   whether Plexus or a `cni-args` entry put it there; the selection key wins over a `cni-args` entry of the same
//!   name;
//! * in `runtimeConfig` as [`CLAIM_CAPABILITY`] (the claim's name, a string), only to the plugins that declare that
//!   capability. A network that declares none gets no warning and no error: delegates that do not know the key
//!   ignore it (R37).
//!
//! ADD, CHECK and DEL all carry it (the record keeps it), so the IPAM plugin knows on DEL that the address belongs
//! to a claim and must not be freed before the claim is deleted (R64).
//!
//! The plugin accepts `ips` together with a claim (Decision 3); the webhook refuses the pair ([`check_claim`], R38).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::config::NetworkConfigList;
use crate::nad::NadCondition;
use crate::selection::NetworkSelection;

/// The `args.cni` key that carries the claim's name.
pub const CLAIM_ARG: &str = "ipam-claim-reference";

/// The `args.cni` key that carries the claim's namespace (the pod's).
pub const CLAIM_NAMESPACE_ARG: &str = "ipam-claim-namespace";

/// The capability (and `runtimeConfig` key) that carries the claim's name to the plugins that declare it.
pub const CLAIM_CAPABILITY: &str = "ipamClaimReference";

/// The CRD's name.
pub const CLAIM_CRD: &str = "ipamclaims.k8s.cni.cncf.io";

// An IPAMClaim: the addresses an IPAM plugin keeps for an owner other than the pod (a VM, a StatefulSet member).
// `spec` says which network and interface; the IPAM plugin writes `status`.
//
// (A plain comment: the CRD's description comes from the `doc` attribute below.)
#[derive(
    CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq,
)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1alpha1",
    kind = "IPAMClaim",
    root = "IpamClaim",
    namespaced,
    plural = "ipamclaims",
    singular = "ipamclaim",
    status = "IpamClaimStatus",
    doc = "Addresses an IPAM plugin keeps for a pod interface beyond the pod's life (multi-network spec v1.3)."
)]
pub struct IpamClaimSpec {
    /// The network (its CNI config's name) the addresses are allocated on.
    pub network: String,
    /// The pod interface the addresses are for.
    pub interface: String,
}

/// What the IPAM plugin reports about a claim.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IpamClaimStatus {
    /// The addresses allocated (IPv4 and/or IPv6, CIDR form).
    pub ips: Vec<String>,
    /// The pod that holds the claim now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pod: Option<IpamClaimOwnerPod>,
    /// Conditions of the allocation, in the shape of Kubernetes' `metav1.Condition`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NadCondition>,
}

/// The pod holding a claim.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct IpamClaimOwnerPod {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Adds a selection's claim to what one attachment's delegates get: `args.cni` always, `runtimeConfig` through the
/// capability arguments (each plugin gets only the capabilities it declares, so it is offered only when one does).
pub fn pass_claim(
    sel: &NetworkSelection,
    pod_namespace: &str,
    config: &NetworkConfigList,
    capability_args: &mut Map<String, Value>,
    cni_args: &mut Map<String, Value>,
) {
    let Some(claim) = &sel.ipam_claim_reference else {
        return;
    };
    cni_args.insert(CLAIM_ARG.to_owned(), Value::String(claim.clone()));
    cni_args.insert(
        CLAIM_NAMESPACE_ARG.to_owned(),
        Value::String(pod_namespace.to_owned()),
    );
    if config.any_plugin_has_capability(CLAIM_CAPABILITY) {
        capability_args.insert(CLAIM_CAPABILITY.to_owned(), Value::String(claim.clone()));
    }
}

/// Why the webhook refuses a selection's claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "pod {pod}: network {network} asks for both \"ips\" and \"ipam-claim-reference\" ({claim:?}); the spec makes \
         that an error (R38): the addresses come from the IPAMClaim, so drop \"ips\""
    )]
    WithIps {
        pod: String,
        network: String,
        claim: String,
    },
}

/// The webhook's rule for one selection (R38): a claim and static `ips` together are refused.
pub fn check_claim(pod: &str, network: &str, sel: &NetworkSelection) -> Result<(), ClaimError> {
    match (&sel.ipam_claim_reference, &sel.ips) {
        (Some(claim), Some(_)) => Err(ClaimError::WithIps {
            pod: pod.to_owned(),
            network: network.to_owned(),
            claim: claim.clone(),
        }),
        _ => Ok(()),
    }
}

/// What the webhook found when it looked a claim up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimLookup {
    /// The claim exists; its `spec.network`.
    Found { network: String },
    /// The CRD is served but there is no such claim.
    Missing,
    /// The IPAMClaim CRD is not installed.
    NotServed,
    /// The claim could not be read (why).
    Unreadable(String),
}

/// The admission warning for a selection's claim, if any: the claim does not exist (yet), it is for another network
/// than the selected NAD's (`nad_network`: its CNI config's name, when the NAD has a config), or it could not be
/// checked. Never a refusal: a claim may be created after the pod, by another controller.
pub fn claim_warning(
    network: &str,
    namespace: &str,
    claim: &str,
    nad_network: Option<&str>,
    lookup: &ClaimLookup,
) -> Option<String> {
    let what = format!("network {network}: IPAMClaim {namespace}/{claim}");
    match lookup {
        ClaimLookup::Found { network: claimed } => match nad_network {
            Some(nad_network) if nad_network != claimed => Some(format!(
                "{what} is for network {claimed:?} (its spec.network), but the NetworkAttachmentDefinition's network \
                 is {nad_network:?}; the IPAM plugin may refuse it or allocate elsewhere"
            )),
            _ => None,
        },
        ClaimLookup::Missing => Some(format!(
            "{what} does not exist; the IPAM plugin needs it when the pod starts"
        )),
        ClaimLookup::NotServed => Some(format!(
            "{what} can't be checked: the IPAMClaim CRD ({CLAIM_CRD}) is not installed"
        )),
        ClaimLookup::Unreadable(why) => Some(format!("{what} can't be checked: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::parse_selections;
    use serde_json::json;

    fn selection(text: &str) -> NetworkSelection {
        parse_selections(text, "pods").unwrap().remove(0)
    }

    fn config(capabilities: Value) -> NetworkConfigList {
        NetworkConfigList::from_value(json!({"cniVersion":"1.0.0","name":"blue","plugins":[
            {"type":"bridge"},{"type":"tuning","capabilities":capabilities}]}))
        .unwrap()
    }

    #[test]
    fn a_claim_goes_to_args_cni_always_and_to_runtime_config_only_when_declared() {
        let sel = selection(
            r#"[{"name":"a","ipam-claim-reference":"vm-1.blue","cni-args":{"ipam-claim-reference":"other","k":1}}]"#,
        );
        let (mut caps, mut args) = (Map::new(), sel.cni_args.clone().unwrap());
        pass_claim(&sel, "pods", &config(json!({})), &mut caps, &mut args);
        assert_eq!(
            Value::Object(args),
            json!({"ipam-claim-reference":"vm-1.blue","k":1,"ipam-claim-namespace":"pods"}),
            "the selection key wins over cni-args"
        );
        assert!(caps.is_empty(), "no plugin declares ipamClaimReference");

        let (mut caps, mut args) = (Map::new(), Map::new());
        let declared = config(json!({"ipamClaimReference": true}));
        pass_claim(&sel, "pods", &declared, &mut caps, &mut args);
        assert_eq!(
            Value::Object(caps.clone()),
            json!({"ipamClaimReference":"vm-1.blue"})
        );
        // Each plugin's stdin: only the declaring plugin has runtimeConfig; both have args.cni.
        let extras = crate::cni::config::RequestExtras {
            capability_args: Some(&caps),
            cni_args: Some(&args),
            prev_result: None,
        };
        let bridge = declared.request_config(0, "1.0.0", &extras);
        let tuning = declared.request_config(1, "1.0.0", &extras);
        assert!(bridge.get("runtimeConfig").is_none(), "{bridge}");
        assert_eq!(tuning["runtimeConfig"]["ipamClaimReference"], "vm-1.blue");
        for stdin in [bridge, tuning] {
            assert_eq!(stdin["args"]["cni"]["ipam-claim-reference"], "vm-1.blue");
            assert_eq!(stdin["args"]["cni"]["ipam-claim-namespace"], "pods");
        }
    }

    #[test]
    fn without_a_claim_nothing_is_added() {
        let sel = selection(r#"[{"name":"a","cni-args":{"k":1}}]"#);
        let (mut caps, mut args) = (Map::new(), Map::new());
        let declared = config(json!({"ipamClaimReference": true}));
        pass_claim(&sel, "pods", &declared, &mut caps, &mut args);
        assert!(caps.is_empty() && args.is_empty());
    }

    #[test]
    fn the_webhook_refuses_ips_with_a_claim() {
        let both = selection(r#"[{"name":"a","ips":["10.0.0.5/24"],"ipam-claim-reference":"c"}]"#);
        let e = check_claim("pods/p", "pods/a", &both).unwrap_err();
        assert!(
            e.to_string().contains(
                "network pods/a asks for both \"ips\" and \"ipam-claim-reference\" (\"c\")"
            ),
            "{e}"
        );
        for ok in [
            r#"[{"name":"a","ipam-claim-reference":"c"}]"#,
            r#"[{"name":"a","ips":["10.0.0.5/24"]}]"#,
        ] {
            assert_eq!(check_claim("pods/p", "pods/a", &selection(ok)), Ok(()));
        }
    }

    #[test]
    fn warnings_for_a_missing_claim_another_network_and_an_unknown_state() {
        let warn = |nad: Option<&str>, lookup: ClaimLookup| {
            claim_warning("pods/a", "pods", "c", nad, &lookup)
        };
        let found = || ClaimLookup::Found {
            network: "blue".into(),
        };
        assert_eq!(warn(Some("blue"), found()), None);
        assert_eq!(warn(None, found()), None, "an on-disk network: not judged");
        let other = warn(Some("red"), found()).unwrap();
        assert!(
            other.contains("IPAMClaim pods/c is for network \"blue\"")
                && other.contains("network is \"red\""),
            "{other}"
        );
        assert!(
            warn(Some("blue"), ClaimLookup::Missing)
                .unwrap()
                .contains("IPAMClaim pods/c does not exist")
        );
        assert!(
            warn(Some("blue"), ClaimLookup::NotServed)
                .unwrap()
                .contains("can't be checked: the IPAMClaim CRD (ipamclaims.k8s.cni.cncf.io) is not installed")
        );
        assert!(
            warn(None, ClaimLookup::Unreadable("forbidden".into()))
                .unwrap()
                .ends_with("can't be checked: forbidden")
        );
    }

    #[test]
    fn a_claim_reads_in_the_upstream_shape() {
        let claim: IpamClaim = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim",
            "metadata": {"name": "vm-1.blue", "namespace": "pods"},
            "spec": {"network": "blue", "interface": "net1"},
            "status": {"ips": ["10.0.0.5/24"], "ownerPod": {"name": "virt-launcher-x"},
                       "conditions": [{"type": "IPsAllocated", "status": "True", "reason": "Done", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        assert_eq!(claim.spec.network, "blue");
        assert_eq!(
            claim.status.unwrap().owner_pod.unwrap().name,
            "virt-launcher-x"
        );
    }
}
