//! The plugin's plan rules as the webhook needs them: namespace isolation, interface names (requested and
//! generated `net<i>`) unique, one default-route gateway per IP family, and the capability gate.
//!
//! These mirror `meta-plugin/src/plan.rs` until they move into `plexus_api::policy`; then this module becomes
//! calls into it.

use std::collections::HashSet;
use std::net::IpAddr;

use plexus_api::cni::NetworkConfigList;
use plexus_api::selection::NetworkSelection;

use crate::admission::PodPolicy;

/// The runtime's interface name for the default network (what kubelet passes as CNI_IFNAME).
const DEFAULT_IFNAME: &str = "eth0";

/// Checks the rules that concern all selections together.
pub fn check(
    pod_namespace: &str,
    selections: &[NetworkSelection],
    policy: &PodPolicy,
) -> Result<(), String> {
    let mut names: HashSet<String> = HashSet::from([DEFAULT_IFNAME.to_owned()]);
    let mut gateways = [None::<IpAddr>; 2];
    for (i, sel) in selections.iter().enumerate() {
        let element = format!("element {i} ({}/{})", sel.namespace, sel.name);
        if policy.namespace_isolation
            && sel.namespace != pod_namespace
            && !policy.global_namespaces.contains(&sel.namespace)
        {
            return Err(format!(
                "{element}: the network is in another namespace, which namespaceIsolation forbids (allowed: {})",
                std::iter::once(pod_namespace)
                    .chain(policy.global_namespaces.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for gw in sel.default_route.iter().flatten() {
            let slot = &mut gateways[usize::from(gw.is_ipv6())];
            if let Some(first) = slot {
                return Err(format!(
                    "{element}: default-route lists two gateways of one family ({first} and {gw}); one default \
                     gateway per family is supported"
                ));
            }
            *slot = Some(*gw);
        }
        let index = 1 + policy.default_networks + i;
        let ifname = sel
            .interface
            .clone()
            .unwrap_or_else(|| format!("net{index}"));
        if !names.insert(ifname.clone()) {
            return Err(format!(
                "{element}: interface name {ifname:?} is already used by an earlier attachment of this pod"
            ));
        }
    }
    Ok(())
}

/// Selection keys that need a capability of the network's plugins (R18–R36), and that capability.
const CAPABILITY_KEYS: &[(&str, &str)] = &[
    ("ips", "ips"),
    ("mac", "mac"),
    ("portMappings", "portMappings"),
    ("bandwidth", "bandwidth"),
    ("infiniband-guid", "infinibandGUID"),
];

/// The capability gate: every capability key the selection sets is declared by some plugin of the network.
pub fn check_capabilities(
    sel: &NetworkSelection,
    config: &NetworkConfigList,
) -> Result<(), String> {
    let set = |key: &str| match key {
        "ips" => sel.ips.is_some(),
        "mac" => sel.mac.is_some(),
        "portMappings" => sel.port_mappings.is_some(),
        "bandwidth" => sel.bandwidth.is_some(),
        _ => sel.infiniband_guid.is_some(),
    };
    for (key, cap) in CAPABILITY_KEYS {
        if set(key) && !config.any_plugin_has_capability(cap) {
            return Err(format!(
                "\"{key}\" was asked for, but no plugin of the network's config declares the \"{cap}\" capability"
            ));
        }
    }
    Ok(())
}
