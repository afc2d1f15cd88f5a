//! Rule 6, the capability gate (R18–R36, Decision 7): what a selection's capability keys give the delegate.

use serde_json::{Map, Value};

use super::{PodView, Policy, PolicyError, PolicyWarning};
use crate::cni::config::NetworkConfigList;
use crate::selection::NetworkSelection;

/// The capability each selection key needs (R18–R36), and the runtimeConfig key it fills.
pub const CAPABILITY_KEYS: &[(&str, &str)] = &[
    ("ips", "ips"),
    ("mac", "mac"),
    ("portMappings", "portMappings"),
    ("bandwidth", "bandwidth"),
    ("infiniband-guid", "infinibandGUID"),
];

/// What a selection's capability keys give the delegate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapabilityGrant {
    /// runtimeConfig values, keyed by capability (each plugin gets only those it declares).
    pub capability_args: Map<String, Value>,
    /// `CNI_ARGS` pairs added for keys the network does not declare (Decision 7): `IP=a,b` and `MAC=m`.
    pub env_args: Vec<(String, String)>,
    pub warnings: Vec<PolicyWarning>,
}

/// The capability arguments a selection asks for, keyed by capability name.
fn selection_capability_args(sel: &NetworkSelection) -> Map<String, Value> {
    let mut args = Map::new();
    let mut put = |cap: &str, v: Option<Value>| {
        if let Some(v) = v {
            args.insert(cap.to_owned(), v);
        }
    };
    put("ips", sel.ips.as_ref().map(|v| serde_json::json!(v)));
    put("mac", sel.mac.as_ref().map(|v| serde_json::json!(v)));
    put(
        "portMappings",
        sel.port_mappings.as_ref().map(|v| serde_json::json!(v)),
    );
    put(
        "bandwidth",
        sel.bandwidth.as_ref().map(|v| serde_json::json!(v)),
    );
    put(
        "infinibandGUID",
        sel.infiniband_guid.as_ref().map(|v| serde_json::json!(v)),
    );
    args
}

/// Rule 6, the capability gate (R18–R36, Decision 7). A key whose capability some plugin of the network declares
/// goes to runtimeConfig. Otherwise: with `strictCapabilities` the request fails; by default (as Multus) `ips` and
/// `mac` are passed as `CNI_ARGS` `IP=`/`MAC=` (what the static IPAM and tuning plugins read), other keys are
/// dropped, and each such key gives a warning.
pub fn grant_capabilities(
    policy: &Policy,
    pod: &PodView,
    network: &str,
    sel: &NetworkSelection,
    config: &NetworkConfigList,
) -> Result<CapabilityGrant, PolicyError> {
    let mut grant = CapabilityGrant::default();
    let wanted = selection_capability_args(sel);
    for (key, cap) in CAPABILITY_KEYS {
        let Some(value) = wanted.get(*cap) else {
            continue;
        };
        if config.any_plugin_has_capability(cap) {
            grant
                .capability_args
                .insert((*cap).to_owned(), value.clone());
            continue;
        }
        if policy.strict_capabilities {
            return Err(PolicyError::MissingCapability {
                pod: pod.label(),
                network: network.to_owned(),
                key,
                capability: cap,
            });
        }
        let passed_as = match *key {
            "ips" => sel.ips.as_ref().map(|ips| ("IP", ips.join(","))),
            "mac" => sel.mac.clone().map(|mac| ("MAC", mac)),
            _ => None,
        };
        if let Some((arg, v)) = &passed_as {
            grant.env_args.push(((*arg).to_owned(), v.clone()));
        }
        grant.warnings.push(PolicyWarning::CapabilityNotDeclared {
            network: network.to_owned(),
            key,
            capability: cap,
            passed_as: passed_as.map(|(arg, _)| arg),
        });
    }
    Ok(grant)
}
