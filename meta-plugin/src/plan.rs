//! From a config (and, in Kubernetes mode, a pod and its NADs) to a plan: the ordered attachments of one sandbox.
//! No I/O happens here.

use plexus_api::cni::NetworkConfigList;
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

/// The kernel's rule: 1–15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
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

    #[test]
    fn interface_name_rule() {
        for ok in ["eth0", "net1", "a", "eth0.1", "net_1", "x234567890abcde"] {
            assert!(valid_interface_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "x234567890abcdef"] {
            assert!(!valid_interface_name(bad), "{bad}");
        }
    }
}
