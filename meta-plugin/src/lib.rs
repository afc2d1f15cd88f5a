//! The Plexus CNI meta-plugin as a library; `main.rs` is a thin shell over [`run`].
//!
//! The runtime execs `plexus` like any CNI plugin. Plexus works out the plan (which networks, which interface
//! names), runs the delegate plugins in order, records what it attached so DEL and CHECK never need anything but the
//! node, and returns the default network's result.

pub mod config;
pub mod error;
pub mod invoke;
pub mod logging;
pub mod ops;
pub mod plan;
pub mod record;

use std::path::PathBuf;

use plexus_api::cni::result::VersionInfo;
use plexus_api::cni::version;
use serde_json::Value;
use tracing::{debug, info_span};

use crate::config::Config;
use crate::error::PlexusError;
use crate::invoke::CniCommand;
use crate::ops::{Context, Sandbox};
use crate::plan::{Plan, valid_interface_name};

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

/// What a successful command prints on stdout (nothing for DEL, CHECK, STATUS and GC).
pub type Output = Option<String>;

/// Runs one CNI request. The error carries the version to put in the error object when one is known.
pub fn run(
    env_lookup: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Output, (PlexusError, String)> {
    let no_version = |e| (e, String::new());
    let env = CniEnv::from_lookup(env_lookup).map_err(no_version)?;
    if env.command == CniCommand::Version {
        return version_reply(stdin).map(Some).map_err(no_version);
    }
    let config = Config::load(stdin).map_err(no_version)?;
    let _log = logging::init(&config.log);
    let reply_version = config.result_version().to_owned();
    let span = info_span!(
        "cni",
        command = env.command.as_str(),
        container = %env.sandbox.container_id,
        ifname = %env.sandbox.ifname,
    );
    let _entered = span.enter();
    if !config.ignored_keys.is_empty() {
        debug!(keys = ?config.ignored_keys, "config keys Plexus does not use were ignored");
    }
    let outcome = dispatch(&env, config, stdin);
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "request failed");
    }
    outcome.map_err(|e| (e, reply_version))
}

fn dispatch(env: &CniEnv, config: Config, stdin: &[u8]) -> Result<Output, PlexusError> {
    if config.kubeconfig.is_some() {
        debug!(
            "kubeconfig is set; Kubernetes lookups are not part of this build, using the static delegates"
        );
    }
    let ctx = Context::new(config, &env.path);
    match env.command {
        CniCommand::Add => {
            let plan =
                Plan::from_static_config(&ctx.config, &env.sandbox.ifname, &env.sandbox.args)?;
            let result = ops::add(&ctx, &env.sandbox, &plan)?;
            Ok(Some(
                serde_json::to_string(&result).expect("results serialise"),
            ))
        }
        CniCommand::Del => ops::del(&ctx, &env.sandbox).map(|()| None),
        CniCommand::Check => ops::check(&ctx, &env.sandbox).map(|()| None),
        CniCommand::Status => ops::status(&ctx).map(|()| None),
        CniCommand::Gc => ops::gc(&ctx, &valid_attachments(stdin)?).map(|()| None),
        CniCommand::Version => unreachable!("answered before the config is loaded"),
    }
}

/// VERSION (C36): echo the requested version with the list Plexus speaks.
fn version_reply(stdin: &[u8]) -> Result<String, PlexusError> {
    let requested = if stdin.iter().all(u8::is_ascii_whitespace) {
        version::CURRENT.to_owned()
    } else {
        let v: Value =
            serde_json::from_slice(stdin).map_err(|e| PlexusError::Decode(e.to_string()))?;
        v.get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or(version::CURRENT)
            .to_owned()
    };
    let info = VersionInfo {
        cni_version: requested,
        supported_versions: version::SUPPORTED.iter().map(|s| (*s).to_owned()).collect(),
    };
    Ok(serde_json::to_string(&info).expect("serialises"))
}

/// The GC request's `cni.dev/valid-attachments` (or the 1.1.0 tag's `cni.dev/attachments`).
fn valid_attachments(stdin: &[u8]) -> Result<Vec<(String, String)>, PlexusError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| PlexusError::Decode(e.to_string()))?;
    let list = v
        .get("cni.dev/valid-attachments")
        .or_else(|| v.get("cni.dev/attachments"));
    let Some(list) = list.filter(|l| !l.is_null()) else {
        return Ok(Vec::new());
    };
    let items = list.as_array().ok_or_else(|| {
        PlexusError::InvalidConfig("cni.dev/valid-attachments must be a list".into())
    })?;
    items
        .iter()
        .map(|a| {
            let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
            match (field("containerID"), field("ifname")) {
                (Some(c), Some(i)) => Ok((c, i)),
                _ => Err(PlexusError::InvalidConfig(format!(
                    "cni.dev/valid-attachments entry {a} needs string containerID and ifname"
                ))),
            }
        })
        .collect()
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

    #[test]
    fn version_command() {
        let out = run(
            |k| (k == "CNI_COMMAND").then(|| "VERSION".into()),
            br#"{"cniVersion":"0.4.0"}"#,
        )
        .unwrap()
        .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"].as_array().unwrap().len(),
            version::SUPPORTED.len()
        );
    }

    #[test]
    fn gc_attachments() {
        let got =
            valid_attachments(br#"{"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}"#)
                .unwrap();
        assert_eq!(got, [("a".to_string(), "eth0".to_string())]);
        assert!(
            valid_attachments(br#"{"cni.dev/valid-attachments":[{"containerID":1}]}"#).is_err()
        );
        assert!(valid_attachments(b"{}").unwrap().is_empty());
    }
}
