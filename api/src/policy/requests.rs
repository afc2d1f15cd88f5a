//! Rules 1–3: which networks a pod asks for, in order, and the limits on what it may ask for (the number of
//! networks, namespaces, host ports, default-route gateways).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use super::{NetworkRef, NetworkRequest, PodView, Policy, PolicyError};
use crate::selection::{
    DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, NetworkSelection, parse_selections,
};

/// Rule 1: the networks a pod asks for, in order (R53, R54). Fails on a bad annotation and on a namespace the pod
/// may not use (R62), before anything runs.
pub fn pod_requests(policy: &Policy, pod: &PodView) -> Result<Vec<NetworkRequest>, PolicyError> {
    let annotation_error = |annotation, source| PolicyError::Annotation {
        pod: pod.label(),
        annotation,
        source: Box::new(source),
    };
    let mut requests = Vec::new();
    let default = match pod.annotations.get(DEFAULT_NETWORK_ANNOTATION) {
        Some(text) => {
            // As Multus: a bare name is looked up in multusNamespace, not in the pod's namespace.
            let mut parsed = parse_selections(text, &policy.multus_namespace)
                .map_err(|e| annotation_error(DEFAULT_NETWORK_ANNOTATION, e))?;
            if parsed.len() != 1 {
                return Err(PolicyError::DefaultNetworkCount {
                    pod: pod.label(),
                    count: parsed.len(),
                });
            }
            let sel = parsed.remove(0);
            if sel.namespace != policy.multus_namespace {
                check_namespace(policy, pod, &sel.namespace, &sel.name)?;
            }
            NetworkRef::Nad {
                namespace: sel.namespace,
                name: sel.name,
            }
        }
        None => default_network(policy)?,
    };
    requests.push(NetworkRequest {
        reference: default,
        selection: None,
    });

    if !policy.system_namespaces.contains(&pod.namespace) {
        for name in &policy.default_networks {
            requests.push(NetworkRequest {
                reference: NetworkRef::NadOrConf {
                    namespace: policy.multus_namespace.clone(),
                    name: name.clone(),
                },
                selection: None,
            });
        }
    }

    // Decision 1: a present annotation is parsed, so an empty or whitespace-only one is an error.
    let selections = match pod.annotations.get(NETWORKS_ANNOTATION) {
        Some(text) => parse_selections(text, &pod.namespace)
            .map_err(|e| annotation_error(NETWORKS_ANNOTATION, e))?,
        None => Vec::new(),
    };
    let count = requests.len() + selections.len();
    if count > policy.max_networks_per_pod {
        return Err(PolicyError::TooManyNetworks {
            pod: pod.label(),
            count,
            max: policy.max_networks_per_pod,
        });
    }
    check_gateways(pod, &selections)?;
    for sel in selections {
        check_namespace(policy, pod, &sel.namespace, &sel.name)?;
        if let (Some(why), Some(_)) = (&policy.port_mappings_refused, &sel.port_mappings) {
            return Err(PolicyError::PortMappingsRefused {
                pod: pod.label(),
                network: format!("{}/{}", sel.namespace, sel.name),
                why: why.clone(),
            });
        }
        requests.push(NetworkRequest {
            reference: NetworkRef::Nad {
                namespace: sel.namespace.clone(),
                name: sel.name.clone(),
            },
            selection: Some(sel),
        });
    }
    Ok(requests)
}

/// The namespace label that sets the Pod Security level the API server enforces there.
pub const POD_SECURITY_ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Why a namespace's pods may not open host ports, from its labels: Pod Security `baseline` and `restricted` forbid
/// `hostPort` in the pod spec, so the networks annotation must not open one either (through `portMappings`).
/// `None` for `privileged` or no level.
pub fn host_ports_refused_in(namespace: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    let level = labels.get(POD_SECURITY_ENFORCE_LABEL)?;
    matches!(level.as_str(), "baseline" | "restricted").then(|| {
        format!(
            "namespace {namespace} enforces Pod Security level {level:?} ({POD_SECURITY_ENFORCE_LABEL}), which \
             forbids host ports"
        )
    })
}

/// The network every pod gets unless it overrides it: `clusterNetwork` (a path, or a NAD/conf name in
/// `multusNamespace`), else the first static delegate.
pub fn default_network(policy: &Policy) -> Result<NetworkRef, PolicyError> {
    match &policy.cluster_network {
        Some(path) if path.starts_with('/') => Ok(NetworkRef::Path(PathBuf::from(path))),
        Some(name) => Ok(NetworkRef::NadOrConf {
            namespace: policy.multus_namespace.clone(),
            name: name.clone(),
        }),
        None if policy.static_delegates > 0 => Ok(NetworkRef::Delegate(0)),
        None => Err(PolicyError::NoDefaultNetwork),
    }
}

/// The networks every pod of a non-system namespace gets without asking: the default network, then
/// `defaultNetworks`. (STATUS is passed on to each of them.)
pub fn default_networks(policy: &Policy) -> Result<Vec<NetworkRef>, PolicyError> {
    let mut refs = vec![default_network(policy)?];
    refs.extend(configured_default_networks(policy));
    Ok(refs)
}

/// `defaultNetworks` alone: each a NAD in `multusNamespace` or a conf name.
pub fn configured_default_networks(policy: &Policy) -> impl Iterator<Item = NetworkRef> + '_ {
    policy
        .default_networks
        .iter()
        .map(|name| NetworkRef::NadOrConf {
            namespace: policy.multus_namespace.clone(),
            name: name.clone(),
        })
}

/// Rule 2 (R62): with `namespaceIsolation`, a pod may use NADs of its own namespace and of `globalNamespaces` only.
pub fn check_namespace(
    policy: &Policy,
    pod: &PodView,
    namespace: &str,
    name: &str,
) -> Result<(), PolicyError> {
    if policy.namespace_isolation
        && namespace != pod.namespace
        && !policy.global_namespaces.iter().any(|g| g == namespace)
    {
        let mut allowed = vec![pod.namespace.as_str()];
        allowed.extend(policy.global_namespaces.iter().map(String::as_str));
        return Err(PolicyError::NamespaceIsolation {
            pod: pod.label(),
            network: format!("{namespace}/{name}"),
            allowed: allowed.join(", "),
        });
    }
    Ok(())
}

/// Rule 3: at most one default-route gateway per IP family over the pod's selections (as Multus).
pub fn check_gateways(pod: &PodView, selections: &[NetworkSelection]) -> Result<(), PolicyError> {
    let mut families = [None::<IpAddr>; 2];
    for sel in selections {
        for gw in sel.default_route.iter().flatten() {
            let slot = &mut families[usize::from(gw.is_ipv6())];
            if let Some(first) = slot {
                return Err(PolicyError::SeveralGateways {
                    pod: pod.label(),
                    network: format!("{}/{}", sel.namespace, sel.name),
                    first: *first,
                    second: *gw,
                });
            }
            *slot = Some(*gw);
        }
    }
    Ok(())
}
