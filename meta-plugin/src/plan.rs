//! From a config (and, in Kubernetes mode, a pod and its NADs) to a plan: the ordered attachments of one sandbox.
//! No I/O happens here; the rules themselves live in [`plexus_api::policy`], shared with the controller's webhook.

use plexus_api::policy::{self, PlannedAttachment, PolicyError, PolicyWarning};
use plexus_api::selection::NetworkSelection;

use crate::config::Config;
use crate::error::PlexusError;
use crate::record::RecordedAttachment;

pub use plexus_api::policy::{NetworkRef, NetworkRequest, PodView, ResolvedNetwork};
pub use plexus_api::validate::valid_interface_name;

/// The `CNI_ARGS` of one attachment: the runtime's (with the pod identity in Kubernetes mode), then the
/// attachment's own pairs (`IP=`, `MAC=`; Decision 7).
pub fn attachment_env_args(env_args: &str, planned: &PlannedAttachment) -> String {
    let mut args = env_args.to_owned();
    for (k, v) in &planned.env_args {
        if !args.is_empty() {
            args.push(';');
        }
        args.push_str(&format!("{k}={v}"));
    }
    args
}

impl RecordedAttachment {
    /// The record of an attachment about to run (no result yet).
    pub fn planned(planned: &PlannedAttachment, env_args: &str) -> Self {
        RecordedAttachment {
            index: planned.index,
            network: planned.network.clone(),
            ifname: planned.ifname.clone(),
            is_default: planned.is_default,
            delegate: planned.delegate.to_value(),
            capability_args: planned.capability_args.clone(),
            cni_args: planned.cni_args.clone(),
            env_args: attachment_env_args(env_args, planned),
            result: None,
            default_route_requested: planned.default_route_requested,
            default_route: planned.default_route.clone(),
            device: planned.device.clone(),
            pending: None,
            ipam_claim_reference: planned.ipam_claim_reference.clone(),
        }
    }
}

/// The ordered attachments of one sandbox; the default network first.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub attachments: Vec<PlannedAttachment>,
    /// The runtime's `CNI_ARGS` for every delegate (with the pod identity in Kubernetes mode).
    pub env_args: String,
    /// What the pod's owner should hear about (Decision 7); recorded as Warning events.
    pub warnings: Vec<PolicyWarning>,
    /// Kubernetes mode: how many leading attachments do not come from the networks annotation.
    pub fixed: Option<usize>,
}

impl Plan {
    /// The records of every attachment, before any runs.
    pub fn to_records(&self) -> Vec<RecordedAttachment> {
        self.attachments
            .iter()
            .map(|a| RecordedAttachment::planned(a, &self.env_args))
            .collect()
    }

    /// Static mode (no kubeconfig): every entry of `delegates`, in order ([`policy::plan_static`]).
    pub fn from_static_config(
        config: &Config,
        runtime_ifname: &str,
        env_args: &str,
    ) -> Result<Plan, PlexusError> {
        Ok(Plan {
            attachments: policy::plan_static(
                &config.delegates,
                runtime_ifname,
                &config.runtime_config,
            )?,
            env_args: env_args.to_owned(),
            warnings: Vec::new(),
            fixed: None,
        })
    }

    /// Kubernetes mode: one attachment per request, in order, each with its resolved config, as
    /// [`policy::plan_pod`] decides.
    pub fn for_pod(
        config: &Config,
        pod: &PodView,
        requests: &[NetworkRequest],
        resolved: &[ResolvedNetwork],
        runtime_ifname: &str,
        env_args: &str,
    ) -> Result<Plan, PlexusError> {
        let planned = policy::plan_pod(
            &config.policy(),
            pod,
            requests,
            resolved,
            runtime_ifname,
            &config.runtime_config,
        )?;
        Ok(Plan {
            attachments: planned.attachments,
            env_args: env_args.to_owned(),
            warnings: planned.warnings,
            fixed: Some(requests.iter().filter(|r| r.selection.is_none()).count()),
        })
    }
}

impl Plan {
    /// Device networks: whether an attachment needs one of the pod's devices.
    pub fn needs_devices(&self) -> bool {
        self.attachments.iter().any(|a| a.resource_name.is_some())
    }

    /// Gives each device network its device from the pod's ([`policy::give_devices`]), before anything runs.
    pub fn give_devices(
        &mut self,
        config: &Config,
        pod: &PodView,
        devices: &[plexus_api::devices::ContainerDevices],
        container_id: &str,
    ) -> Result<(), PlexusError> {
        Ok(policy::give_devices(
            pod,
            &mut self.attachments,
            devices,
            &config.device_info_dir.to_string_lossy(),
            container_id,
        )?)
    }

    /// DEL without a record: the plan of the networks that could be resolved (`None` for the others), each with the
    /// interface name it would have had in the full plan. Fails when the default network (index 0) is missing.
    pub fn for_pod_partial(
        config: &Config,
        pod: &PodView,
        requests: &[NetworkRequest],
        resolved: Vec<Option<ResolvedNetwork>>,
        runtime_ifname: &str,
        env_args: &str,
    ) -> Result<Plan, PlexusError> {
        let mut kept_requests = Vec::new();
        let mut kept = Vec::new();
        for (index, (request, network)) in requests.iter().zip(resolved).enumerate() {
            let Some(network) = network else {
                if index == 0 {
                    return Err(PolicyError::NoDefaultNetwork.into());
                }
                continue;
            };
            let mut request = request.clone();
            if index > 0 {
                let (namespace, name) = match &request.reference {
                    NetworkRef::Nad { namespace, name }
                    | NetworkRef::NadOrConf { namespace, name } => {
                        (namespace.clone(), name.clone())
                    }
                    other => (String::new(), other.label()),
                };
                let sel = request.selection.get_or_insert_with(|| NetworkSelection {
                    name,
                    namespace,
                    ..NetworkSelection::default()
                });
                sel.interface.get_or_insert_with(|| format!("net{index}"));
            }
            kept_requests.push(request);
            kept.push(network);
        }
        Self::for_pod(config, pod, &kept_requests, &kept, runtime_ifname, env_args)
    }
}

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

/// Works out which networks a pod gets, in order ([`policy::pod_requests`]).
pub fn pod_requests(config: &Config, pod: &PodView) -> Result<Vec<NetworkRequest>, PlexusError> {
    Ok(policy::pod_requests(&config.policy(), pod)?)
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
    fn a_partial_plan_keeps_each_networks_interface_name() {
        let c = config(r#"[{"name":"a","cniVersion":"1.0.0","type":"bridge"}]"#);
        let pod = PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            annotations: [(
                plexus_api::selection::NETWORKS_ANNOTATION.to_owned(),
                "gone,kept,named@mine".to_owned(),
            )]
            .into(),
        };
        let requests = pod_requests(&c, &pod).unwrap();
        let resolved = |i: usize| ResolvedNetwork {
            display: requests[i].reference.label(),
            config: c.delegates[0].clone(),
            resource_name: None,
        };
        let plan = Plan::for_pod_partial(
            &c,
            &pod,
            &requests,
            vec![
                Some(resolved(0)),
                None,
                Some(resolved(2)),
                Some(resolved(3)),
            ],
            "eth0",
            "",
        )
        .unwrap();
        let names: Vec<_> = plan.attachments.iter().map(|a| a.ifname.as_str()).collect();
        assert_eq!(
            names,
            ["eth0", "net2", "mine"],
            "the gone network's net1 is skipped"
        );
        let no_default = Plan::for_pod_partial(
            &c,
            &pod,
            &requests,
            vec![None, None, None, None],
            "eth0",
            "",
        );
        assert!(no_default.is_err());
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
