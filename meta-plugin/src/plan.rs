//! From a config (and, in Kubernetes mode, a pod and its NADs) to a plan: the ordered attachments of one sandbox.
//! No I/O happens here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use plexus_api::cni::NetworkConfigList;
use plexus_api::selection::{
    DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, NetworkSelection, parse_selections,
};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::PlexusError;
use crate::record::RecordedAttachment;

/// One interface to give the pod: a delegate, its interface name and what is passed to it.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub index: usize,
    /// Display name: `namespace/name` for a NAD, the config's `name` otherwise.
    pub network: String,
    pub ifname: String,
    pub is_default: bool,
    pub delegate: NetworkConfigList,
    pub capability_args: Map<String, Value>,
    pub cni_args: Map<String, Value>,
    /// `CNI_ARGS` for the delegate.
    pub env_args: String,
    pub default_route_requested: bool,
    /// Gateways from the selection's `default-route`: this attachment takes the pod's default route (R33).
    pub default_route: Option<Vec<IpAddr>>,
}

impl Attachment {
    pub fn to_record(&self) -> RecordedAttachment {
        RecordedAttachment {
            index: self.index,
            network: self.network.clone(),
            ifname: self.ifname.clone(),
            is_default: self.is_default,
            delegate: self.delegate.to_value(),
            capability_args: self.capability_args.clone(),
            cni_args: self.cni_args.clone(),
            env_args: self.env_args.clone(),
            result: None,
            default_route_requested: self.default_route_requested,
            default_route: self.default_route.clone(),
        }
    }
}

/// The ordered attachments of one sandbox; the default network first.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub attachments: Vec<Attachment>,
}

impl Plan {
    /// Static mode (no kubeconfig): every entry of `delegates`, in order. The first is the default network and gets
    /// the runtime's interface name and runtimeConfig; entry i (i ≥ 1) gets `net<i>` and no runtime arguments (R63).
    pub fn from_static_config(
        config: &Config,
        runtime_ifname: &str,
        env_args: &str,
    ) -> Result<Plan, PlexusError> {
        if config.delegates.is_empty() {
            return Err(PlexusError::InvalidConfig(
                "no networks to attach: \"delegates\" is empty and no kubeconfig is set".into(),
            ));
        }
        let attachments = config
            .delegates
            .iter()
            .enumerate()
            .map(|(index, delegate)| Attachment {
                index,
                network: delegate.name.clone(),
                ifname: if index == 0 {
                    runtime_ifname.to_owned()
                } else {
                    format!("net{index}")
                },
                is_default: index == 0,
                delegate: delegate.clone(),
                capability_args: if index == 0 {
                    config.runtime_config.clone()
                } else {
                    Map::new()
                },
                cni_args: Map::new(),
                env_args: env_args.to_owned(),
                default_route_requested: false,
                default_route: None,
            })
            .collect();
        let plan = Plan { attachments };
        plan.check_interface_names()?;
        Ok(plan)
    }

    /// R22/R41: every interface name is unique within the sandbox and valid for the kernel.
    pub fn check_interface_names(&self) -> Result<(), PlexusError> {
        let mut seen = std::collections::HashSet::new();
        for a in &self.attachments {
            if !valid_interface_name(&a.ifname) {
                return Err(PlexusError::Plan(format!(
                    "network {:?}: interface name {:?} is not a valid Linux interface name",
                    a.network, a.ifname
                )));
            }
            if !seen.insert(a.ifname.as_str()) {
                return Err(PlexusError::Plan(format!(
                    "network {:?}: interface name {:?} is already used by an earlier attachment of this pod",
                    a.network, a.ifname
                )));
            }
        }
        Ok(())
    }
}

pub use plexus_api::validate::valid_interface_name;

/// The pod identity the runtime passes in `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodArgs {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl PodArgs {
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME` and `K8S_POD_UID` from `K=V;K=V`; `None` without namespace and name.
    pub fn from_cni_args(args: &str) -> Option<Self> {
        let get = |key: &str| {
            args.split(';')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Some(Self {
            namespace: get("K8S_POD_NAMESPACE")?,
            name: get("K8S_POD_NAME")?,
            uid: get("K8S_POD_UID"),
        })
    }
}

/// The parts of a pod Plexus reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
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
#[derive(Debug, Clone)]
pub struct ResolvedNetwork {
    /// `namespace/name` for a NAD; the config's `name` for a file or a static delegate.
    pub display: String,
    pub config: NetworkConfigList,
}

/// Works out which networks a pod gets, in order (R53, R54): the default network (the pod's
/// `v1.multus-cni.io/default-network` override, else `clusterNetwork`, else the first static delegate), then
/// `defaultNetworks` (not for pods in `systemNamespaces`), then the selection annotation. Fails on a bad annotation
/// and on a namespace the pod may not use (R62), before anything runs.
pub fn pod_requests(config: &Config, pod: &PodView) -> Result<Vec<NetworkRequest>, PlexusError> {
    let pod_label = format!("pod {}/{}", pod.namespace, pod.name);
    let mut requests = Vec::new();
    let default = match pod
        .annotations
        .get(DEFAULT_NETWORK_ANNOTATION)
        .filter(|a| !a.trim().is_empty())
    {
        Some(text) => {
            let mut parsed = parse_selections(text, &pod.namespace).map_err(|e| {
                PlexusError::Plan(format!(
                    "{pod_label}: annotation {DEFAULT_NETWORK_ANNOTATION}: {e}"
                ))
            })?;
            if parsed.len() != 1 {
                return Err(PlexusError::Plan(format!(
                    "{pod_label}: annotation {DEFAULT_NETWORK_ANNOTATION} must name exactly one network, not {}",
                    parsed.len()
                )));
            }
            let sel = parsed.remove(0);
            check_namespace(config, pod, &sel.namespace, &sel.name)?;
            NetworkRef::Nad {
                namespace: sel.namespace,
                name: sel.name,
            }
        }
        None => match &config.cluster_network {
            Some(path) if path.starts_with('/') => NetworkRef::Path(PathBuf::from(path)),
            Some(name) => NetworkRef::NadOrConf {
                namespace: config.multus_namespace.clone(),
                name: name.clone(),
            },
            None if !config.delegates.is_empty() => NetworkRef::Delegate(0),
            None => {
                return Err(PlexusError::InvalidConfig(
                    "no default network: set \"clusterNetwork\" or give at least one entry in \"delegates\"".into(),
                ));
            }
        },
    };
    requests.push(NetworkRequest {
        reference: default,
        selection: None,
    });

    if !config.system_namespaces.contains(&pod.namespace) {
        for name in &config.default_networks {
            requests.push(NetworkRequest {
                reference: NetworkRef::NadOrConf {
                    namespace: config.multus_namespace.clone(),
                    name: name.clone(),
                },
                selection: None,
            });
        }
    }

    if let Some(text) = pod
        .annotations
        .get(NETWORKS_ANNOTATION)
        .filter(|a| !a.trim().is_empty())
    {
        let selections = parse_selections(text, &pod.namespace).map_err(|e| {
            PlexusError::Plan(format!(
                "{pod_label}: annotation {NETWORKS_ANNOTATION}: {e}"
            ))
        })?;
        let mut gateway_families = [None::<IpAddr>; 2];
        for sel in selections {
            check_namespace(config, pod, &sel.namespace, &sel.name)?;
            for gw in sel.default_route.iter().flatten() {
                let slot = &mut gateway_families[usize::from(gw.is_ipv6())];
                if let Some(first) = slot {
                    return Err(PlexusError::Plan(format!(
                        "{pod_label}: network {}/{}: default-route lists two gateways of one family ({first} and \
                         {gw}); one default gateway per family is supported",
                        sel.namespace, sel.name
                    )));
                }
                *slot = Some(*gw);
            }
            requests.push(NetworkRequest {
                reference: NetworkRef::Nad {
                    namespace: sel.namespace.clone(),
                    name: sel.name.clone(),
                },
                selection: Some(sel),
            });
        }
    }
    Ok(requests)
}

/// `namespaceIsolation`: a pod may use NADs of its own namespace and of `globalNamespaces` only (R62).
fn check_namespace(
    config: &Config,
    pod: &PodView,
    namespace: &str,
    name: &str,
) -> Result<(), PlexusError> {
    if config.namespace_isolation
        && namespace != pod.namespace
        && !config.global_namespaces.iter().any(|g| g == namespace)
    {
        return Err(PlexusError::Plan(format!(
            "pod {}/{}: network {namespace}/{name} is in another namespace, which namespaceIsolation forbids \
             (allowed: {}, {})",
            pod.namespace,
            pod.name,
            pod.namespace,
            config.global_namespaces.join(", ")
        )));
    }
    Ok(())
}

/// The capability each selection key needs (R18–R36), and the runtimeConfig key it fills.
const CAPABILITY_KEYS: &[(&str, &str)] = &[
    ("ips", "ips"),
    ("mac", "mac"),
    ("portMappings", "portMappings"),
    ("bandwidth", "bandwidth"),
    ("infiniband-guid", "infinibandGUID"),
];

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
        sel.port_mappings
            .as_ref()
            .map(|v| serde_json::to_value(v).expect("serialises")),
    );
    put(
        "bandwidth",
        sel.bandwidth
            .as_ref()
            .map(|v| serde_json::to_value(v).expect("serialises")),
    );
    put(
        "infinibandGUID",
        sel.infiniband_guid.as_ref().map(|v| serde_json::json!(v)),
    );
    args
}

impl Plan {
    /// Kubernetes mode: one attachment per request, in order, each with its resolved config. The default network
    /// gets the runtime's interface name and runtimeConfig (R63); selected networks get their own interface name
    /// or `net<i>`, their capability arguments (only when some plugin declares the capability — else the pod's ADD
    /// fails, R18–R36), their `cni-args` and their `default-route`.
    pub fn for_pod(
        config: &Config,
        pod: &PodView,
        requests: &[NetworkRequest],
        resolved: Vec<ResolvedNetwork>,
        runtime_ifname: &str,
        env_args: &str,
    ) -> Result<Plan, PlexusError> {
        assert_eq!(
            requests.len(),
            resolved.len(),
            "one resolved network per request"
        );
        let default_route_taken = requests.iter().any(|r| {
            r.selection
                .as_ref()
                .is_some_and(|s| s.default_route.is_some())
        });
        let mut attachments = Vec::with_capacity(requests.len());
        for (index, (request, network)) in requests.iter().zip(resolved).enumerate() {
            let sel = request.selection.as_ref();
            let ifname = match (index, sel.and_then(|s| s.interface.clone())) {
                (0, _) => runtime_ifname.to_owned(),
                (_, Some(name)) => name,
                (i, None) => format!("net{i}"),
            };
            let capability_args = match sel {
                None if index == 0 => config.runtime_config.clone(),
                None => Map::new(),
                Some(sel) => {
                    let args = selection_capability_args(sel);
                    for (key, cap) in CAPABILITY_KEYS {
                        if args.contains_key(*cap) && !network.config.any_plugin_has_capability(cap)
                        {
                            return Err(PlexusError::Plan(format!(
                                "pod {}/{}: network {} was asked for \"{key}\", but no plugin of its config declares \
                                 the \"{cap}\" capability",
                                pod.namespace, pod.name, network.display
                            )));
                        }
                    }
                    args
                }
            };
            attachments.push(Attachment {
                index,
                network: network.display,
                ifname,
                is_default: index == 0,
                delegate: network.config,
                capability_args,
                cni_args: sel.and_then(|s| s.cni_args.clone()).unwrap_or_default(),
                env_args: env_args.to_owned(),
                default_route_requested: if index == 0 {
                    !default_route_taken
                } else {
                    sel.is_some_and(|s| s.default_route.is_some())
                },
                default_route: sel.and_then(|s| s.default_route.clone()),
            });
        }
        let plan = Plan { attachments };
        plan.check_interface_names().map_err(|e| match e {
            PlexusError::Plan(msg) => {
                PlexusError::Plan(format!("pod {}/{}: {msg}", pod.namespace, pod.name))
            }
            other => other,
        })?;
        Ok(plan)
    }
}

/// `CNI_ARGS` for delegates in Kubernetes mode: the runtime's, with `IgnoreUnknown=true` and the pod identity added
/// where missing (the Multus convention).
pub fn delegate_cni_args(runtime_args: &str, pod: &PodView, container_id: &str) -> String {
    let mut parts: Vec<String> = runtime_args
        .split(';')
        .filter(|p| !p.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let has = |parts: &[String], key: &str| {
        parts
            .iter()
            .any(|p| p.split('=').next().is_some_and(|k| k.trim() == key))
    };
    for (key, value) in [
        ("IgnoreUnknown", "true"),
        ("K8S_POD_NAMESPACE", pod.namespace.as_str()),
        ("K8S_POD_NAME", pod.name.as_str()),
        ("K8S_POD_INFRA_CONTAINER_ID", container_id),
        ("K8S_POD_UID", pod.uid.as_str()),
    ] {
        if !has(&parts, key) {
            parts.push(format!("{key}={value}"));
        }
    }
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(delegates: &str) -> Config {
        Config::load(format!(r#"{{"cniVersion":"1.0.0","runtimeConfig":{{"portMappings":[]}},"delegates":{delegates}}}"#).as_bytes())
            .unwrap()
    }

    #[test]
    fn static_plan_names_and_runtime_config() {
        let c = config(
            r#"[{"name":"a","cniVersion":"1.0.0","type":"bridge"},{"name":"b","cniVersion":"1.0.0","type":"ptp"},{"name":"c","cniVersion":"1.0.0","type":"macvlan"}]"#,
        );
        let p = Plan::from_static_config(&c, "eth0", "IgnoreUnknown=1").unwrap();
        let names: Vec<_> = p.attachments.iter().map(|a| a.ifname.as_str()).collect();
        assert_eq!(names, ["eth0", "net1", "net2"]);
        assert!(p.attachments[0].is_default && !p.attachments[1].is_default);
        assert!(
            p.attachments[0]
                .capability_args
                .contains_key("portMappings")
        );
        assert!(
            p.attachments[1].capability_args.is_empty(),
            "R63: runtime config goes to the default network only"
        );
    }

    #[test]
    fn duplicate_or_invalid_names_fail() {
        let c = config(
            r#"[{"name":"a","cniVersion":"1.0.0","type":"bridge"},{"name":"b","cniVersion":"1.0.0","type":"ptp"}]"#,
        );
        assert!(Plan::from_static_config(&c, "net1", "").is_err());
        assert!(Plan::from_static_config(&c, "way-too-long-name0", "").is_err());
        assert!(Plan::from_static_config(&config("[]"), "eth0", "").is_err());
    }
}
