//! The CNI environment of one request (SPEC C10, C11): the command, the sandbox, the runtime's plugin path.

use std::path::PathBuf;

use crate::error::PlexusError;
use crate::invoke::CniCommand;
use crate::ops::Sandbox;
use crate::plan::valid_interface_name;

/// The CNI environment variables of one request.
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: CniCommand,
    pub sandbox: Sandbox,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads and checks the variables the command needs (C10, C11); code 4 names every bad one.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, PlexusError> {
        let command_text = get("CNI_COMMAND").unwrap_or_default();
        let Some(command) = CniCommand::parse(&command_text) else {
            return Err(PlexusError::Environment(vec![if command_text.is_empty() {
                "CNI_COMMAND is missing".into()
            } else {
                format!(
                    "CNI_COMMAND={command_text:?} is not ADD, DEL, CHECK, STATUS, GC or VERSION"
                )
            }]));
        };
        let var = |k: &str| get(k).unwrap_or_default();
        let sandbox = Sandbox {
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        };
        let path = std::env::split_paths(&var("CNI_PATH"))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let mut bad = Vec::new();
        if matches!(
            command,
            CniCommand::Add | CniCommand::Del | CniCommand::Check
        ) {
            if sandbox.container_id.is_empty() {
                bad.push("CNI_CONTAINERID is missing".to_owned());
            } else if !valid_container_id(&sandbox.container_id) {
                bad.push(format!(
                    "CNI_CONTAINERID={:?} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
                    sandbox.container_id
                ));
            }
            if sandbox.ifname.is_empty() {
                bad.push("CNI_IFNAME is missing".to_owned());
            } else if !valid_interface_name(&sandbox.ifname) {
                bad.push(format!(
                    "CNI_IFNAME={:?} is not a valid interface name",
                    sandbox.ifname
                ));
            }
            if command != CniCommand::Del && sandbox.netns.is_empty() {
                bad.push("CNI_NETNS is missing".to_owned());
            }
        }
        if bad.is_empty() {
            Ok(Self {
                command,
                sandbox,
                path,
            })
        } else {
            Err(PlexusError::Environment(bad))
        }
    }
}

/// C11.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<CniEnv, PlexusError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn environment_rules() {
        assert!(matches!(env(&[]), Err(PlexusError::Environment(_))));
        assert!(matches!(
            env(&[("CNI_COMMAND", "FOO")]),
            Err(PlexusError::Environment(_))
        ));
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
        let Err(PlexusError::Environment(bad)) = env(&[("CNI_COMMAND", "ADD")]) else {
            panic!()
        };
        assert_eq!(bad.len(), 3, "{bad:?}");
        let Err(e) = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "-x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/n"),
        ]) else {
            panic!()
        };
        assert_eq!(e.to_cni().code, 4);
        assert!(e.to_string().contains("CNI_CONTAINERID"));
        assert!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", "eth0")
            ])
            .is_ok()
        );
    }
}
