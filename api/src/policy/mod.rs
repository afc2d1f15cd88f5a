//! The rules that decide what a pod gets, shared by the plugin's plan and the controller's admission webhook.
//!
//! Everything here is pure: the caller reads the pod and the NADs (from the API server, a watch cache or an
//! admission request) and passes them in. A [`Policy`] holds the few config keys the rules need, so the webhook does
//! not need the plugin's config.
//!
//! The rules, in the order a pod request meets them:
//! 1. which networks the pod asks for ([`pod_requests`]): the default network (the pod's
//!    `v1.multus-cni.io/default-network`, else `clusterNetwork`, else the first static delegate), then
//!    `defaultNetworks` (not for pods in `systemNamespaces`), then the networks annotation (Decision 1: a present
//!    annotation is parsed, so an empty or whitespace-only one is an error);
//! 2. namespace isolation (`namespaceIsolation`, `globalNamespaces`, R62): [`check_namespace`];
//! 3. at most one default-route gateway per IP family ([`check_gateways`]);
//! 4. NAD → delegate config ([`delegate_from_nad`], [`delegate_from_disk`], R7–R9);
//! 5. interface names: the runtime's for the default network, the requested one or `net<i>` for the others, each
//!    valid for the kernel and unique in the pod ([`interface_name`], [`check_interface_names`]);
//! 6. the capability gate (R18–R36, Decision 7): [`grant_capabilities`]; a selection's `ipam-claim-reference` is
//!    passed on beside it ([`crate::ipam_claim::pass_claim`]).
//!
//! [`plan_pod`] applies them all to one pod and its resolved networks, exactly as the plugin's ADD does;
//! [`validate_pod`] does the same for a caller that may not know every network's config (the webhook).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::cni::config::{ConfigError, NetworkConfigList};
use crate::devices::{AssignedDevice, DeviceError};
use crate::ipam_claim::pass_claim;
use crate::nad::NadError;
use crate::selection::{DEFAULT_NETWORK_ANNOTATION, NetworkSelection, SelectionError};

mod capabilities;
mod delegates;
mod devices;
mod interfaces;
mod requests;

pub use capabilities::{CAPABILITY_KEYS, CapabilityGrant, grant_capabilities};
pub use delegates::{check_plugin_types, delegate_from_disk, delegate_from_nad, plugin_types};
pub use devices::give_devices;
pub use interfaces::{check_interface_names, interface_name};
pub use requests::{
    POD_SECURITY_ENFORCE_LABEL, check_gateways, check_namespace, configured_default_networks,
    default_network, default_networks, host_ports_refused_in, pod_requests,
};

/// The pod annotation kubelet sets to where a pod came from (`api`, `file`, `http`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// The annotation kubelet puts on the mirror pod of a static pod.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The config keys the rules need. [`Policy::default`] has Multus's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `namespaceIsolation`: a pod may use NADs of its own namespace and of `global_namespaces` only.
    pub namespace_isolation: bool,
    /// `globalNamespaces`.
    pub global_namespaces: Vec<String>,
    /// `systemNamespaces`: pods here do not get `default_networks`.
    pub system_namespaces: Vec<String>,
    /// `multusNamespace`: where `clusterNetwork`, `defaultNetworks` and a bare `default-network` name are looked up.
    pub multus_namespace: String,
    /// `clusterNetwork`: a NAD or conf name, or an absolute path.
    pub cluster_network: Option<String>,
    /// `defaultNetworks`.
    pub default_networks: Vec<String>,
    /// How many static `delegates` the config has: the first is the default network when `clusterNetwork` is unset.
    pub static_delegates: usize,
    /// `strictCapabilities`: a capability key on a network that does not declare the capability fails the ADD (R18,
    /// R20) instead of Multus's behaviour (Decision 7).
    pub strict_capabilities: bool,
    /// `maxNetworksPerPod`: the most attachments one pod may have, its default network and `defaultNetworks`
    /// included. A pod asking for more is refused before anything runs.
    pub max_networks_per_pod: usize,
    /// `allowedPluginTypes`: when set, the only plugin types (plugin `type`, conflist member `type`, `ipam.type`) a
    /// NAD's `spec.config` may name. Unset: any bare name found in binDir, meta-plugins excepted.
    pub allowed_plugin_types: Option<Vec<String>>,
    /// Why a selection's `portMappings` are refused here, when they are: the node's `allowPortMappings: false`, or
    /// (in the webhook) a namespace whose Pod Security level forbids host ports. `None`: they are passed on.
    pub port_mappings_refused: Option<String>,
}

/// How many attachments a pod may have unless `maxNetworksPerPod` says otherwise: every one is a delegate call of up
/// to `delegateTimeoutSeconds`, made while the node's runtime waits.
pub const DEFAULT_MAX_NETWORKS_PER_POD: usize = 32;

impl Default for Policy {
    fn default() -> Self {
        Self {
            namespace_isolation: false,
            global_namespaces: vec!["default".to_owned()],
            system_namespaces: vec!["kube-system".to_owned()],
            multus_namespace: "kube-system".to_owned(),
            cluster_network: None,
            default_networks: Vec::new(),
            static_delegates: 0,
            strict_capabilities: false,
            max_networks_per_pod: DEFAULT_MAX_NETWORKS_PER_POD,
            allowed_plugin_types: None,
            port_mappings_refused: None,
        }
    }
}

/// The parts of a pod the rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
}

impl PodView {
    /// `namespace/name`, for messages.
    pub fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// A static pod (run by kubelet from a file or URL): the API server only knows its mirror pod, whose UID differs
    /// from the one the runtime passes.
    pub fn is_static(&self) -> bool {
        self.annotations.contains_key(CONFIG_MIRROR_ANNOTATION)
            || self
                .annotations
                .get(CONFIG_SOURCE_ANNOTATION)
                .is_some_and(|s| s != "api")
    }
}

/// Where one network's delegate config comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkRef {
    /// A NetworkAttachmentDefinition; it must exist.
    Nad { namespace: String, name: String },
    /// An admin-configured name (`clusterNetwork`, `defaultNetworks`): the NAD of that name in `multusNamespace`,
    /// or else the conf/conflist in `confDir` whose network name it is.
    NadOrConf { namespace: String, name: String },
    /// A conf or conflist file (or a directory holding one), by absolute path.
    Path(PathBuf),
    /// An entry of the config's own `delegates`.
    Delegate(usize),
}

impl NetworkRef {
    /// The network's display name before resolution (`namespace/name` for NADs).
    pub fn label(&self) -> String {
        match self {
            NetworkRef::Nad { namespace, name } | NetworkRef::NadOrConf { namespace, name } => {
                format!("{namespace}/{name}")
            }
            NetworkRef::Path(p) => p.display().to_string(),
            NetworkRef::Delegate(i) => format!("delegates[{i}]"),
        }
    }
}

/// One network the pod gets, before its config is fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkRequest {
    pub reference: NetworkRef,
    /// The selection element that asked for it (none for the default network and `defaultNetworks`).
    pub selection: Option<NetworkSelection>,
}

/// A network whose config was found.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedNetwork {
    /// `namespace/name` for a NAD; the config's `name` for a file or a static delegate.
    pub display: String,
    pub config: NetworkConfigList,
    /// The NAD's `k8s.v1.cni.cncf.io/resourceName` (checked, [`crate::devices::resource_name`]): the attachment
    /// gets one of the pod's devices of that resource.
    pub resource_name: Option<String>,
}

/// Why a pod request was refused. Every variant names the pod (when there is one) and the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("pod {pod}: annotation {annotation}: {source}")]
    Annotation {
        pod: String,
        annotation: &'static str,
        source: Box<SelectionError>,
    },
    #[error(
        "pod {pod}: annotation {DEFAULT_NETWORK_ANNOTATION} must name exactly one network, not {count}"
    )]
    DefaultNetworkCount { pod: String, count: usize },
    #[error(
        "no default network: set \"clusterNetwork\" or give at least one entry in \"delegates\""
    )]
    NoDefaultNetwork,
    #[error("no networks to attach: \"delegates\" is empty and no kubeconfig is set")]
    NoStaticDelegates,
    #[error(
        "pod {pod}: network {network} is in another namespace, which namespaceIsolation forbids (allowed: {allowed})"
    )]
    NamespaceIsolation {
        pod: String,
        network: String,
        allowed: String,
    },
    #[error(
        "pod {pod}: network {network}: default-route lists two gateways of one family ({first} and {second}); one \
         default gateway per family is supported"
    )]
    SeveralGateways {
        pod: String,
        network: String,
        first: IpAddr,
        second: IpAddr,
    },
    #[error("{}network {network:?}: interface name {ifname:?} is not a valid Linux interface name", pod_prefix(.pod))]
    InvalidInterface {
        pod: Option<String>,
        network: String,
        ifname: String,
    },
    #[error(
        "{}network {network:?}: interface name {ifname:?} is already used by an earlier attachment of this pod",
        pod_prefix(.pod)
    )]
    DuplicateInterface {
        pod: Option<String>,
        network: String,
        ifname: String,
    },
    #[error(
        "pod {pod}: network {network} was asked for \"{key}\", but no plugin of its config declares the \"{capability}\" \
         capability (strictCapabilities is on)"
    )]
    MissingCapability {
        pod: String,
        network: String,
        key: &'static str,
        capability: &'static str,
    },
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error("pod {pod}: network {network}: {source}")]
    NadConfig {
        pod: String,
        network: String,
        source: NadError,
    },
    #[error("network {network:?}: {source}")]
    InvalidDelegate {
        network: String,
        source: ConfigError,
    },
    #[error("pod {pod}: network {network}: no such NetworkAttachmentDefinition")]
    NoSuchNad { pod: String, network: String },
    #[error(
        "pod {pod}: network {network}: {} and no config named {name:?} in {conf_dir} (R8)",
        nad_state(*.nad_exists)
    )]
    NotOnDisk {
        pod: String,
        network: String,
        name: String,
        nad_exists: bool,
        conf_dir: String,
    },
    #[error(
        "pod {pod}: its UID is {found} but the runtime asked for {requested}: the pod was replaced"
    )]
    PodReplaced {
        pod: String,
        found: String,
        requested: String,
    },
    #[error(
        "pod {pod}: it asks for {count} networks (its default network included), more than the {max} this node \
         allows (maxNetworksPerPod); nothing was attached"
    )]
    TooManyNetworks {
        pod: String,
        count: usize,
        max: usize,
    },
    #[error(
        "pod {pod}: network {network} asks for portMappings (host ports), which are refused here: {why}"
    )]
    PortMappingsRefused {
        pod: String,
        network: String,
        why: String,
    },
    #[error(
        "network {network}: plugin type {plugin:?} is not in this node's allowedPluginTypes ({allowed})"
    )]
    PluginTypeNotAllowed {
        network: String,
        plugin: String,
        allowed: String,
    },
    #[error("pod {pod}: {requests} networks requested but {resolved} resolved")]
    ResolvedCount {
        pod: String,
        requests: usize,
        resolved: usize,
    },
}

fn nad_state(nad_exists: bool) -> &'static str {
    if nad_exists {
        "the NetworkAttachmentDefinition has no spec.config"
    } else {
        "there is no such NetworkAttachmentDefinition"
    }
}

fn pod_prefix(pod: &Option<String>) -> String {
    pod.as_deref()
        .map(|p| format!("pod {p}: "))
        .unwrap_or_default()
}

/// Something the caller should tell the pod's owner (the plugin records it as a Warning event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyWarning {
    /// Decision 7: a capability key on a network that does not declare the capability.
    CapabilityNotDeclared {
        network: String,
        key: &'static str,
        capability: &'static str,
        /// The `CNI_ARGS` key the value was passed as instead (`IP`, `MAC`), or `None` when it was dropped.
        passed_as: Option<&'static str>,
    },
}

impl std::fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyWarning::CapabilityNotDeclared {
                network,
                key,
                capability,
                passed_as,
            } => {
                write!(
                    f,
                    "network {network}: \"{key}\" was requested but no plugin of the network declares the \
                     \"{capability}\" capability; "
                )?;
                match passed_as {
                    Some(arg) => write!(f, "passed as CNI_ARGS {arg}= instead (as Multus does)"),
                    None => write!(f, "it was ignored (as Multus does)"),
                }
            }
        }
    }
}

/// One interface to give the pod, as the rules decide it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAttachment {
    pub index: usize,
    /// Display name: `namespace/name` for a NAD, the config's `name` otherwise.
    pub network: String,
    pub ifname: String,
    pub is_default: bool,
    pub delegate: NetworkConfigList,
    pub capability_args: Map<String, Value>,
    pub cni_args: Map<String, Value>,
    /// `CNI_ARGS` pairs added to the runtime's for this attachment (Decision 7).
    pub env_args: Vec<(String, String)>,
    /// Whether this attachment carries the pod's default route (for network-status).
    pub default_route_requested: bool,
    /// Gateways from the selection's `default-route`: this attachment takes the pod's default route (R33).
    pub default_route: Option<Vec<IpAddr>>,
    /// The device-plugin resource the network's NAD names.
    pub resource_name: Option<String>,
    /// The device given to it ([`give_devices`]).
    pub device: Option<AssignedDevice>,
    /// The selection's `ipam-claim-reference`: an IPAMClaim in the pod's namespace (already in `cni_args`, and in
    /// `capability_args` when a plugin declares the capability; [`crate::ipam_claim::pass_claim`]).
    pub ipam_claim_reference: Option<String>,
}

/// The rules' answer for one pod: its attachments in order, and what to warn about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodPlan {
    pub attachments: Vec<PlannedAttachment>,
    pub warnings: Vec<PolicyWarning>,
}

/// Static mode (no pod): every entry of `delegates`, in order. The first is the default network and gets the
/// runtime's interface name and runtimeConfig; entry i (i ≥ 1) gets `net<i>` and no runtime arguments (R63).
pub fn plan_static(
    delegates: &[NetworkConfigList],
    runtime_ifname: &str,
    runtime_config: &Map<String, Value>,
) -> Result<Vec<PlannedAttachment>, PolicyError> {
    if delegates.is_empty() {
        return Err(PolicyError::NoStaticDelegates);
    }
    let attachments: Vec<PlannedAttachment> = delegates
        .iter()
        .enumerate()
        .map(|(index, delegate)| PlannedAttachment {
            index,
            network: delegate.name.clone(),
            ifname: interface_name(index, None, runtime_ifname),
            is_default: index == 0,
            delegate: delegate.clone(),
            capability_args: if index == 0 {
                runtime_config.clone()
            } else {
                Map::new()
            },
            cni_args: Map::new(),
            env_args: Vec::new(),
            default_route_requested: false,
            default_route: None,
            resource_name: None,
            device: None,
            ipam_claim_reference: None,
        })
        .collect();
    check_interface_names(
        None,
        attachments
            .iter()
            .map(|a| (a.network.as_str(), a.ifname.as_str())),
    )?;
    Ok(attachments)
}

/// Kubernetes mode, every rule at once: one attachment per request (from [`pod_requests`]), in order, each with its
/// resolved network. The default network gets the runtime's interface name and `runtime_config` (R63); selected
/// networks get their interface name, their capability arguments through the gate, their `cni-args` and their
/// `default-route`.
pub fn plan_pod(
    policy: &Policy,
    pod: &PodView,
    requests: &[NetworkRequest],
    resolved: &[ResolvedNetwork],
    runtime_ifname: &str,
    runtime_config: &Map<String, Value>,
) -> Result<PodPlan, PolicyError> {
    if requests.len() != resolved.len() {
        return Err(PolicyError::ResolvedCount {
            pod: pod.label(),
            requests: requests.len(),
            resolved: resolved.len(),
        });
    }
    let default_route_taken = requests.iter().any(|r| {
        r.selection
            .as_ref()
            .is_some_and(|s| s.default_route.is_some())
    });
    let mut plan = PodPlan::default();
    for (index, (request, network)) in requests.iter().zip(resolved).enumerate() {
        let sel = request.selection.as_ref();
        let ifname = interface_name(
            index,
            sel.and_then(|s| s.interface.as_deref()),
            runtime_ifname,
        );
        let grant = match sel {
            None if index == 0 => CapabilityGrant {
                capability_args: runtime_config.clone(),
                ..CapabilityGrant::default()
            },
            None => CapabilityGrant::default(),
            Some(sel) => grant_capabilities(policy, pod, &network.display, sel, &network.config)?,
        };
        plan.warnings.extend(grant.warnings);
        let mut capability_args = grant.capability_args;
        let mut cni_args = sel.and_then(|s| s.cni_args.clone()).unwrap_or_default();
        if let Some(sel) = sel {
            pass_claim(
                sel,
                &pod.namespace,
                &network.config,
                &mut capability_args,
                &mut cni_args,
            );
        }
        plan.attachments.push(PlannedAttachment {
            index,
            network: network.display.clone(),
            ifname,
            is_default: index == 0,
            delegate: network.config.clone(),
            capability_args,
            cni_args,
            env_args: grant.env_args,
            default_route_requested: if index == 0 {
                !default_route_taken
            } else {
                sel.is_some_and(|s| s.default_route.is_some())
            },
            default_route: sel.and_then(|s| s.default_route.clone()),
            resource_name: network.resource_name.clone(),
            device: None,
            ipam_claim_reference: sel.and_then(|s| s.ipam_claim_reference.clone()),
        });
    }
    check_interface_names(
        Some(pod),
        plan.attachments
            .iter()
            .map(|a| (a.network.as_str(), a.ifname.as_str())),
    )?;
    Ok(plan)
}

/// For a caller that may not know every network's config (the admission webhook: on-disk configs, NADs not
/// created yet): every rule of [`plan_pod`] that can be judged. `lookup` gives a request's resolved network, or
/// `Ok(None)` when it cannot be known here (its capability gate is then skipped), or an error (an unusable NAD).
/// Returns the warnings the plugin would give.
pub fn validate_pod(
    policy: &Policy,
    pod: &PodView,
    runtime_ifname: &str,
    mut lookup: impl FnMut(&NetworkRef) -> Result<Option<ResolvedNetwork>, PolicyError>,
) -> Result<Vec<PolicyWarning>, PolicyError> {
    let requests = pod_requests(policy, pod)?;
    let mut warnings = Vec::new();
    let mut names = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        let sel = request.selection.as_ref();
        let network = lookup(&request.reference)?;
        let display = network
            .as_ref()
            .map_or_else(|| request.reference.label(), |n| n.display.clone());
        if let (Some(sel), Some(network)) = (sel, &network) {
            warnings
                .extend(grant_capabilities(policy, pod, &display, sel, &network.config)?.warnings);
        }
        names.push((
            display,
            interface_name(
                index,
                sel.and_then(|s| s.interface.as_deref()),
                runtime_ifname,
            ),
        ));
    }
    check_interface_names(
        Some(pod),
        names.iter().map(|(n, i)| (n.as_str(), i.as_str())),
    )?;
    Ok(warnings)
}

/// Whether the pod the API server returned is the one the runtime asked for (`K8S_POD_UID`). A static pod always
/// is: the API server only has its mirror pod, with another UID.
pub fn check_pod_uid(pod: &PodView, requested: Option<&str>) -> Result<(), PolicyError> {
    match requested {
        Some(uid) if !pod.uid.is_empty() && pod.uid != uid && !pod.is_static() => {
            Err(PolicyError::PodReplaced {
                pod: pod.label(),
                found: pod.uid.clone(),
                requested: uid.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nad::OnDiskSearch;
    use crate::selection::NETWORKS_ANNOTATION;

    fn pod(ns: &str, annotations: &[(&str, &str)]) -> PodView {
        PodView {
            namespace: ns.into(),
            name: "p".into(),
            uid: "u1".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn policy() -> Policy {
        Policy {
            cluster_network: Some("cluster".into()),
            ..Policy::default()
        }
    }

    fn conf(name: &str, capabilities: &str) -> NetworkConfigList {
        NetworkConfigList::parse(
            format!(
                r#"{{"cniVersion":"1.0.0","name":"{name}","type":"bridge","capabilities":{{{capabilities}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn resolve_all(requests: &[NetworkRequest], caps: &str) -> Vec<ResolvedNetwork> {
        requests
            .iter()
            .map(|r| ResolvedNetwork {
                display: r.reference.label(),
                config: conf("n", caps),
                resource_name: None,
            })
            .collect()
    }

    #[test]
    fn requests_in_order_default_then_default_networks_then_selections() {
        let p = Policy {
            default_networks: vec!["extra".into()],
            ..policy()
        };
        let r = pod_requests(&p, &pod("a", &[(NETWORKS_ANNOTATION, "x,b/y@eth5")])).unwrap();
        let labels: Vec<_> = r.iter().map(|r| r.reference.label()).collect();
        assert_eq!(
            labels,
            ["kube-system/cluster", "kube-system/extra", "a/x", "b/y"]
        );
        let r = pod_requests(&p, &pod("kube-system", &[])).unwrap();
        assert_eq!(r.len(), 1, "system namespaces get no defaultNetworks");
    }

    #[test]
    fn at_most_max_networks_per_pod_attachments_default_network_included() {
        let p = Policy {
            max_networks_per_pod: 3,
            default_networks: vec!["extra".into()],
            ..policy()
        };
        assert_eq!(
            pod_requests(&p, &pod("a", &[(NETWORKS_ANNOTATION, "x")]))
                .unwrap()
                .len(),
            3
        );
        let e = pod_requests(&p, &pod("a", &[(NETWORKS_ANNOTATION, "x,y")])).unwrap_err();
        assert!(
            matches!(
                e,
                PolicyError::TooManyNetworks {
                    count: 4,
                    max: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            Policy::default().max_networks_per_pod,
            DEFAULT_MAX_NETWORKS_PER_POD
        );
    }

    #[test]
    fn port_mappings_are_refused_where_host_ports_are() {
        let ports = r#"[{"name":"x","portMappings":[{"hostPort":22,"containerPort":22,"protocol":"tcp"}]}]"#;
        assert!(pod_requests(&policy(), &pod("a", &[(NETWORKS_ANNOTATION, ports)])).is_ok());
        let refused = Policy {
            port_mappings_refused: Some("allowPortMappings is false on this node".into()),
            ..policy()
        };
        let e = pod_requests(&refused, &pod("a", &[(NETWORKS_ANNOTATION, ports)])).unwrap_err();
        assert!(e.to_string().contains("a/x asks for portMappings"), "{e}");
        assert!(pod_requests(&refused, &pod("a", &[(NETWORKS_ANNOTATION, "x")])).is_ok());
        let level =
            |v: &str| BTreeMap::from([(POD_SECURITY_ENFORCE_LABEL.to_owned(), v.to_owned())]);
        assert!(host_ports_refused_in("n", &level("baseline")).is_some());
        assert!(host_ports_refused_in("n", &level("restricted")).is_some());
        assert!(host_ports_refused_in("n", &level("privileged")).is_none());
        assert!(host_ports_refused_in("n", &BTreeMap::new()).is_none());
    }

    #[test]
    fn decision_1_a_present_empty_or_blank_annotation_is_an_error() {
        for text in ["", "   ", "\t\n"] {
            for annotation in [NETWORKS_ANNOTATION, DEFAULT_NETWORK_ANNOTATION] {
                let e = pod_requests(&policy(), &pod("a", &[(annotation, text)])).unwrap_err();
                assert!(
                    matches!(&e, PolicyError::Annotation { source, .. } if **source == SelectionError::Empty),
                    "{annotation}={text:?}: {e}"
                );
            }
        }
    }

    #[test]
    fn a_bare_default_network_name_is_looked_up_in_multus_namespace() {
        let p = Policy {
            multus_namespace: "infra".into(),
            namespace_isolation: true,
            ..policy()
        };
        let r = pod_requests(&p, &pod("a", &[(DEFAULT_NETWORK_ANNOTATION, "alt")])).unwrap();
        assert_eq!(
            r[0].reference,
            NetworkRef::Nad {
                namespace: "infra".into(),
                name: "alt".into()
            }
        );
        let r = pod_requests(&p, &pod("a", &[(DEFAULT_NETWORK_ANNOTATION, "a/alt")])).unwrap();
        assert_eq!(r[0].reference.label(), "a/alt");
        let e =
            pod_requests(&p, &pod("a", &[(DEFAULT_NETWORK_ANNOTATION, "other/alt")])).unwrap_err();
        assert!(matches!(e, PolicyError::NamespaceIsolation { .. }), "{e}");
        let e = pod_requests(&p, &pod("a", &[(DEFAULT_NETWORK_ANNOTATION, "x,y")])).unwrap_err();
        assert!(
            matches!(e, PolicyError::DefaultNetworkCount { count: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn namespace_isolation() {
        let p = Policy {
            namespace_isolation: true,
            global_namespaces: vec!["default".into(), "shared".into()],
            ..policy()
        };
        assert!(
            pod_requests(
                &p,
                &pod("a", &[(NETWORKS_ANNOTATION, "x,shared/y,default/z")])
            )
            .is_ok()
        );
        let e = pod_requests(&p, &pod("a", &[(NETWORKS_ANNOTATION, "b/x")])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("a/p") && msg.contains("b/x") && msg.contains("namespaceIsolation"),
            "{msg}"
        );
        assert!(msg.contains("allowed: a, default, shared"), "{msg}");
        assert!(pod_requests(&policy(), &pod("a", &[(NETWORKS_ANNOTATION, "b/x")])).is_ok());
    }

    #[test]
    fn one_gateway_per_family() {
        let ok = r#"[{"name":"x","default-route":["198.18.0.1","2001:db8::1"]}]"#;
        assert!(pod_requests(&policy(), &pod("a", &[(NETWORKS_ANNOTATION, ok)])).is_ok());
        let bad = r#"[{"name":"x","default-route":["198.18.0.1","198.18.0.2"]}]"#;
        let e = pod_requests(&policy(), &pod("a", &[(NETWORKS_ANNOTATION, bad)])).unwrap_err();
        assert!(matches!(e, PolicyError::SeveralGateways { .. }), "{e}");
    }

    #[test]
    fn no_default_network() {
        let p = Policy::default();
        assert_eq!(
            pod_requests(&p, &pod("a", &[])).unwrap_err(),
            PolicyError::NoDefaultNetwork
        );
        let p = Policy {
            static_delegates: 2,
            ..Policy::default()
        };
        assert_eq!(default_network(&p).unwrap(), NetworkRef::Delegate(0));
        let p = Policy {
            cluster_network: Some("/etc/cni/net.d/10-x.conf".into()),
            default_networks: vec!["d".into()],
            ..Policy::default()
        };
        let refs = default_networks(&p).unwrap();
        assert_eq!(refs[0], NetworkRef::Path("/etc/cni/net.d/10-x.conf".into()));
        assert_eq!(refs[1].label(), "kube-system/d");
    }

    #[test]
    fn interface_names_generated_requested_and_unique() {
        let pod = pod("a", &[(NETWORKS_ANNOTATION, "x,y@net1")]);
        let requests = pod_requests(&policy(), &pod).unwrap();
        let e = plan_pod(
            &policy(),
            &pod,
            &requests,
            &resolve_all(&requests, ""),
            "eth0",
            &Map::new(),
        )
        .unwrap_err();
        assert!(
            matches!(&e, PolicyError::DuplicateInterface { ifname, .. } if ifname == "net1"),
            "{e}"
        );
        assert!(e.to_string().starts_with("pod a/p: "), "{e}");

        let pod2 = PodView {
            annotations: [(NETWORKS_ANNOTATION.to_owned(), "x,y@mine".to_owned())].into(),
            ..pod.clone()
        };
        let requests = pod_requests(&policy(), &pod2).unwrap();
        let plan = plan_pod(
            &policy(),
            &pod2,
            &requests,
            &resolve_all(&requests, ""),
            "eth0",
            &Map::new(),
        )
        .unwrap();
        let names: Vec<_> = plan.attachments.iter().map(|a| a.ifname.as_str()).collect();
        assert_eq!(names, ["eth0", "net1", "mine"]);

        let e = check_interface_names(None, [("n", "way-too-long-name0")]).unwrap_err();
        assert!(matches!(e, PolicyError::InvalidInterface { .. }));
        assert!(!e.to_string().contains("pod "), "{e}");
    }

    #[test]
    fn static_plan_names_and_runtime_config() {
        let runtime: Map<String, Value> = serde_json::from_str(r#"{"portMappings":[]}"#).unwrap();
        let d = [conf("a", ""), conf("b", ""), conf("c", "")];
        let p = plan_static(&d, "eth0", &runtime).unwrap();
        let names: Vec<_> = p.iter().map(|a| a.ifname.as_str()).collect();
        assert_eq!(names, ["eth0", "net1", "net2"]);
        assert!(p[0].capability_args.contains_key("portMappings"));
        assert!(
            p[1].capability_args.is_empty(),
            "R63: the default network only"
        );
        assert!(plan_static(&d, "net1", &runtime).is_err());
        assert_eq!(
            plan_static(&[], "eth0", &runtime).unwrap_err(),
            PolicyError::NoStaticDelegates
        );
    }

    const EVERY_KEY: &str = r#"[{"name":"x","ips":["198.18.0.5/24","198.18.1.5/24"],"mac":"0a:58:00:00:00:01",
        "portMappings":[{"hostPort":8080,"containerPort":80}],"bandwidth":{"ingressRate":1000,"ingressBurst":10},
        "infiniband-guid":"00:11:22:33:44:55:66:77"}]"#;

    #[test]
    fn decision_7_capability_keys_without_the_capability_go_as_cni_args_with_warnings() {
        let pod = pod("a", &[(NETWORKS_ANNOTATION, EVERY_KEY)]);
        let requests = pod_requests(&policy(), &pod).unwrap();
        let plan = plan_pod(
            &policy(),
            &pod,
            &requests,
            &resolve_all(&requests, ""),
            "eth0",
            &Map::new(),
        )
        .unwrap();
        let a = &plan.attachments[1];
        assert!(a.capability_args.is_empty());
        assert_eq!(
            a.env_args,
            [
                ("IP".to_owned(), "198.18.0.5/24,198.18.1.5/24".to_owned()),
                ("MAC".to_owned(), "0a:58:00:00:00:01".to_owned())
            ]
        );
        assert_eq!(plan.warnings.len(), 5);
        let text = plan.warnings[2].to_string();
        assert!(
            text.contains("a/x") && text.contains("portMappings") && text.contains("ignored"),
            "{text}"
        );
        assert!(plan.warnings[0].to_string().contains("CNI_ARGS IP="));
        // The webhook gets the same warnings.
        let warnings = validate_pod(&policy(), &pod, "eth0", |r| {
            Ok(Some(ResolvedNetwork {
                display: r.label(),
                config: conf("n", ""),
                resource_name: None,
            }))
        })
        .unwrap();
        assert_eq!(warnings, plan.warnings);
    }

    #[test]
    fn declared_capabilities_go_to_runtime_config_and_strict_mode_refuses_the_rest() {
        let pod = pod("a", &[(NETWORKS_ANNOTATION, EVERY_KEY)]);
        let requests = pod_requests(&policy(), &pod).unwrap();
        let all =
            r#""ips":true,"mac":true,"portMappings":true,"bandwidth":true,"infinibandGUID":true"#;
        let plan = plan_pod(
            &policy(),
            &pod,
            &requests,
            &resolve_all(&requests, all),
            "eth0",
            &Map::new(),
        )
        .unwrap();
        assert_eq!(plan.attachments[1].capability_args.len(), 5);
        assert!(plan.attachments[1].env_args.is_empty() && plan.warnings.is_empty());

        let strict = Policy {
            strict_capabilities: true,
            ..policy()
        };
        let e = plan_pod(
            &strict,
            &pod,
            &requests,
            &resolve_all(&requests, r#""mac":true"#),
            "eth0",
            &Map::new(),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                PolicyError::MissingCapability {
                    key: "ips",
                    capability: "ips",
                    ..
                }
            ),
            "{e}"
        );
        let e = validate_pod(&strict, &pod, "eth0", |r| {
            Ok(Some(ResolvedNetwork {
                display: r.label(),
                config: conf("n", ""),
                resource_name: None,
            }))
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("a/p") && e.to_string().contains("\"ips\""),
            "{e}"
        );
        // Networks the webhook cannot see are not gated.
        assert!(
            validate_pod(&strict, &pod, "eth0", |_| Ok(None))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_ipam_claim_is_kept_in_the_plan_and_never_gated_even_in_strict_mode() {
        let strict = Policy {
            strict_capabilities: true,
            ..policy()
        };
        let pod = pod(
            "a",
            &[(
                NETWORKS_ANNOTATION,
                r#"[{"name":"x","ipam-claim-reference":"vm.x"},{"name":"y"}]"#,
            )],
        );
        let requests = pod_requests(&strict, &pod).unwrap();
        for (caps, runtime) in [("", None), (r#""ipamClaimReference":true"#, Some("vm.x"))] {
            let plan = plan_pod(
                &strict,
                &pod,
                &requests,
                &resolve_all(&requests, caps),
                "eth0",
                &Map::new(),
            )
            .unwrap();
            let claimed = &plan.attachments[1];
            assert_eq!(claimed.ipam_claim_reference.as_deref(), Some("vm.x"));
            assert_eq!(
                Value::Object(claimed.cni_args.clone()),
                serde_json::json!({"ipam-claim-reference":"vm.x","ipam-claim-namespace":"a"})
            );
            assert_eq!(
                claimed
                    .capability_args
                    .get("ipamClaimReference")
                    .and_then(Value::as_str),
                runtime
            );
            assert!(plan.warnings.is_empty());
            let plain = &plan.attachments[2];
            assert!(plain.ipam_claim_reference.is_none() && plain.cni_args.is_empty());
        }
    }

    #[test]
    fn resolved_count_mismatch_is_an_error_not_a_panic() {
        let pod = pod("a", &[]);
        let requests = pod_requests(&policy(), &pod).unwrap();
        let e = plan_pod(&policy(), &pod, &requests, &[], "eth0", &Map::new()).unwrap_err();
        assert!(matches!(
            e,
            PolicyError::ResolvedCount {
                requests: 1,
                resolved: 0,
                ..
            }
        ));
    }

    #[test]
    fn nad_to_delegate() {
        let pod = pod("a", &[]);
        let r = delegate_from_nad(
            &Policy::default(),
            &pod,
            "a",
            "n",
            Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.display, "a/n");
        assert_eq!(r.config.name, "n", "R9: the NAD's name is injected");
        assert_eq!(
            delegate_from_nad(&Policy::default(), &pod, "a", "n", Some("  ")).unwrap(),
            None
        );
        assert!(matches!(
            delegate_from_nad(&Policy::default(), &pod, "a", "n", Some("{x")).unwrap_err(),
            PolicyError::NadConfig { .. }
        ));
        assert!(matches!(
            delegate_from_nad(
                &Policy::default(),
                &pod,
                "a",
                "n",
                Some(r#"{"cniVersion":"1.0.0","type":"../sh"}"#)
            )
            .unwrap_err(),
            PolicyError::InvalidDelegate { .. }
        ));
        // The node refuses what the webhook refuses: a config over 64 KiB (before parsing it), a meta-plugin.
        let big = format!(
            r#"{{"cniVersion":"1.0.0","type":"bridge","pad":"{}"}}"#,
            "x".repeat(crate::nad::MAX_NAD_CONFIG_BYTES)
        );
        let e = delegate_from_nad(&Policy::default(), &pod, "a", "n", Some(&big)).unwrap_err();
        assert!(
            matches!(
                &e,
                PolicyError::NadConfig {
                    source: NadError::TooLarge { .. },
                    ..
                }
            ),
            "{e}"
        );
        let e = delegate_from_nad(
            &Policy::default(),
            &pod,
            "a",
            "n",
            Some(r#"{"cniVersion":"1.0.0","type":"plexus","binDir":"/tmp/evil"}"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("is a meta-plugin"), "{e}");
        // allowedPluginTypes: every plugin and IPAM type of the NAD's config.
        let allowlist = Policy {
            allowed_plugin_types: Some(vec!["bridge".into(), "host-local".into()]),
            ..Policy::default()
        };
        let ok = r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"host-local"}}"#;
        assert!(delegate_from_nad(&allowlist, &pod, "a", "n", Some(ok)).is_ok());
        let dhcp = r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge","ipam":{"type":"dhcp"}}]}"#;
        let e = delegate_from_nad(&allowlist, &pod, "a", "n", Some(dhcp)).unwrap_err();
        assert!(
            matches!(&e, PolicyError::PluginTypeNotAllowed { plugin, .. } if plugin == "dhcp"),
            "{e}"
        );
        let e = delegate_from_disk(
            &pod,
            "a",
            "n",
            true,
            OnDiskSearch::default(),
            "/etc/cni/multus/net.d",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("has no spec.config")
                && e.to_string().contains("/etc/cni/multus/net.d")
        );
    }

    #[test]
    fn static_pods_pass_the_uid_check() {
        let mut p = pod("a", &[]);
        assert!(check_pod_uid(&p, Some("u1")).is_ok());
        assert!(check_pod_uid(&p, None).is_ok());
        assert!(matches!(
            check_pod_uid(&p, Some("u2")),
            Err(PolicyError::PodReplaced { .. })
        ));
        p.annotations
            .insert(CONFIG_SOURCE_ANNOTATION.into(), "file".into());
        assert!(check_pod_uid(&p, Some("u2")).is_ok());
        p.annotations
            .insert(CONFIG_SOURCE_ANNOTATION.into(), "api".into());
        assert!(check_pod_uid(&p, Some("u2")).is_err());
        p.annotations
            .insert(CONFIG_MIRROR_ANNOTATION.into(), "x".into());
        assert!(check_pod_uid(&p, Some("u2")).is_ok());
    }
}
