//! The conf the installer writes: which conf in the host's CNI conf dir is the cluster network, and the conflist that
//! makes Plexus the node's CNI plugin, delegating to it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use plexus_api::cni::NetworkConfigList;
use serde_json::{Map, Value, json};

use super::{BINARY_NAME, CONF_NAME, InstallError, Mode, NETWORK_NAME, SHIM_BINARY_NAME, io};
use crate::config::Config;

/// The cluster network found in the conf dir: the file and its content.
#[derive(Debug, Clone, PartialEq)]
pub struct Primary {
    pub path: PathBuf,
    pub config: Value,
}

/// Why a conf file in the conf dir is not the cluster network: the plugin's parser refuses it, which it does for every
/// conf naming a meta-plugin (Plexus itself, `multus`, or Multus thick's `multus-shim`): a delegate that delegates back
/// would loop, or attach the secondary networks twice.
fn disqualified(value: &Value) -> Option<String> {
    NetworkConfigList::from_value(value.clone())
        .err()
        .map(|e| e.to_string())
}

/// The cluster network: the first file (by name, as libcni orders them) ending in .conf, .conflist or .json that is
/// not the installer's own, parses, has plugins with types, and is not a meta-plugin (Plexus, Multus).
pub fn find_primary(conf_dir: &Path) -> Result<Option<Primary>, InstallError> {
    let names = match conf_files(conf_dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("list", conf_dir)(e)),
    };
    for path in names
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != CONF_NAME))
    {
        let Ok(text) = fs::read(&path) else { continue };
        let value: Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(file = %path.display(), error = %e, "not the cluster network: not JSON");
                continue;
            }
        };
        if let Some(why) = disqualified(&value) {
            tracing::debug!(file = %path.display(), %why, "not the cluster network");
            continue;
        }
        return Ok(Some(Primary {
            path,
            config: value,
        }));
    }
    Ok(None)
}

/// The conf dir's files ending in .conf, .conflist or .json, by name: the order libcni (and containerd's go-cni) read
/// them in.
fn conf_files(conf_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut names: Vec<PathBuf> = fs::read_dir(conf_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                )
        })
        .collect();
    names.sort();
    Ok(names)
}

/// What the container runtime uses from its CNI conf dir: the first conf by name that is JSON (as libcni and
/// go-cni choose), which is Plexus's, another plugin's, or none at all. The node daemon exports it as
/// `plexus_daemon_runtime_conf`, so an alert can say that a node's pods no longer go through Plexus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeConf {
    Plexus,
    Other,
    Missing,
}

impl RuntimeConf {
    pub const ALL: [Self; 3] = [Self::Plexus, Self::Other, Self::Missing];

    /// The `state` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Plexus => "plexus",
            Self::Other => "other",
            Self::Missing => "none",
        }
    }

    /// Looks at `conf_dir` now.
    pub fn of(conf_dir: &Path) -> Self {
        for path in conf_files(conf_dir).unwrap_or_default() {
            let Some(value) = fs::read(&path)
                .ok()
                .and_then(|t| serde_json::from_slice::<Value>(&t).ok())
            else {
                continue;
            };
            let plexus =
                is_plexus_type(&value["type"]) || is_plexus_type(&value["plugins"][0]["type"]);
            return if plexus { Self::Plexus } else { Self::Other };
        }
        Self::Missing
    }
}

/// What the written conflist is made of, besides the cluster network.
#[derive(Debug, Clone, Default)]
pub struct ConfSettings {
    /// More of Plexus's config keys (from the chart's values).
    pub plugin_config: Map<String, Value>,
    pub host_bin_dir: PathBuf,
    pub host_kubeconfig: PathBuf,
    pub cluster_network: Option<String>,
    pub host_readiness_file: Option<PathBuf>,
    pub cni_version: Option<String>,
    pub mode: Mode,
    /// thick: written as `daemonSocketDir`.
    pub daemon_socket_dir: PathBuf,
}

/// The conflist Plexus's conf file holds: one plugin, `plexus`, in Kubernetes mode, delegating to `primary` (inline,
/// as its first delegate) or to the configured `clusterNetwork`. It declares the capabilities the cluster network's
/// plugins declare, so the runtime passes their arguments (port mappings, bandwidth, ...) on to Plexus, which hands
/// them to the default network. Checked by loading it with the plugin's own config parser.
pub fn plexus_conflist(
    primary: Option<&Primary>,
    settings: &ConfSettings,
) -> Result<Value, InstallError> {
    let mut plugin = settings.plugin_config.clone();
    match settings.mode {
        Mode::Thin => {
            plugin.insert("type".into(), json!(BINARY_NAME));
            plugin.remove("daemonSocketDir");
            plugin.insert(
                "kubeconfig".into(),
                json!(settings.host_kubeconfig.display().to_string()),
            );
        }
        Mode::Thick => {
            plugin.insert("type".into(), json!(SHIM_BINARY_NAME));
            plugin.remove("kubeconfig");
            plugin.insert(
                "daemonSocketDir".into(),
                json!(settings.daemon_socket_dir.display().to_string()),
            );
        }
    }
    plugin.insert(
        "binDir".into(),
        json!(settings.host_bin_dir.display().to_string()),
    );
    if let Some(file) = &settings.host_readiness_file {
        plugin.insert(
            "readinessindicatorfile".into(),
            json!(file.display().to_string()),
        );
    }
    let mut capabilities: BTreeSet<String> = BTreeSet::new();
    let primary_version = match (&settings.cluster_network, primary) {
        (Some(network), _) => {
            plugin.insert("clusterNetwork".into(), json!(network));
            plugin.remove("delegates");
            None
        }
        (None, Some(p)) => {
            let list = NetworkConfigList::from_value(p.config.clone())
                .map_err(|e| InstallError::Generated(format!("{}: {e}", p.path.display())))?;
            for plugin in &list.plugins {
                if let Some(Value::Object(caps)) = plugin.raw().get("capabilities") {
                    capabilities.extend(
                        caps.iter()
                            .filter(|(_, v)| v.as_bool() == Some(true))
                            .map(|(k, _)| k.clone()),
                    );
                }
            }
            plugin.remove("clusterNetwork");
            plugin.insert("delegates".into(), json!([p.config]));
            Some(list.cni_version).filter(|v| !v.is_empty())
        }
        (None, None) => {
            return Err(InstallError::Generated(
                "no cluster network: neither a conf file nor clusterNetwork".into(),
            ));
        }
    };
    if !capabilities.is_empty() {
        let caps = plugin
            .entry("capabilities")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(caps) = caps {
            for c in capabilities {
                caps.entry(c).or_insert(json!(true));
            }
        }
    }
    let cni_version = settings
        .cni_version
        .clone()
        .or(primary_version)
        .unwrap_or_else(|| "1.0.0".into());
    let conflist = json!({
        "cniVersion": cni_version,
        "name": NETWORK_NAME,
        "plugins": [plugin],
    });
    // What the runtime will hand the plugin: the plugin object with the list's name and version.
    let mut as_called = conflist["plugins"][0].clone();
    as_called["cniVersion"] = json!(cni_version);
    as_called["name"] = json!(NETWORK_NAME);
    let text = serde_json::to_vec(&as_called).unwrap_or_default();
    let config = Config::load(&text).map_err(|e| InstallError::Generated(e.to_string()))?;
    let credentials = match settings.mode {
        Mode::Thin => config.kubeconfig.is_some(),
        Mode::Thick => crate::shim::Shim::from_stdin(&text).is_some_and(|s| s.is_ok()),
    };
    if !credentials || (config.cluster_network.is_none() && config.delegates.is_empty()) {
        return Err(InstallError::Generated(
            "it has no kubeconfig (thin) or daemon socket (thick), or no cluster network".into(),
        ));
    }
    Ok(conflist)
}

pub(super) fn conf_bytes(conflist: &Value) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(conflist).unwrap_or_default();
    text.push(b'\n');
    text
}

/// True when the file at `path` is a conf the installer wrote (its only plugin is `plexus`, or `plexus-shim`).
pub(super) fn is_plexus_conf(path: &Path) -> bool {
    fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice::<Value>(&t).ok())
        .is_some_and(|v| is_plexus_type(&v["plugins"][0]["type"]) && v["name"] == NETWORK_NAME)
}

/// Whether a plugin `type` is one of Plexus's two plugins (thin mode's `plexus`, thick mode's `plexus-shim`).
fn is_plexus_type(t: &Value) -> bool {
    *t == BINARY_NAME || *t == SHIM_BINARY_NAME
}

/// Reads the plugin config file (a JSON object).
pub fn read_plugin_config(path: &Path) -> Result<Map<String, Value>, InstallError> {
    let text = fs::read(path).map_err(io("read", path))?;
    match serde_json::from_slice(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(InstallError::PluginConfig {
            path: path.to_owned(),
            msg: "not a JSON object".into(),
        }),
        Err(e) => Err(InstallError::PluginConfig {
            path: path.to_owned(),
            msg: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(name: &str) -> Value {
        json!({"cniVersion": "0.4.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "198.19.0.0/24"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]})
    }

    fn settings() -> ConfSettings {
        ConfSettings {
            host_bin_dir: "/opt/cni/bin".into(),
            host_kubeconfig: "/etc/cni/net.d/plexus.d/plexus.kubeconfig".into(),
            ..ConfSettings::default()
        }
    }

    #[test]
    fn the_conf_delegates_to_the_cluster_network_inline_with_its_capabilities_and_version() {
        let primary = Primary {
            path: "/etc/cni/net.d/10-bridge.conflist".into(),
            config: bridge("pods"),
        };
        let conf = plexus_conflist(Some(&primary), &settings()).unwrap();
        assert_eq!(conf["cniVersion"], "0.4.0");
        assert_eq!(conf["name"], NETWORK_NAME);
        let plugin = &conf["plugins"][0];
        assert_eq!(plugin["type"], "plexus");
        assert_eq!(plugin["delegates"][0], bridge("pods"));
        assert_eq!(plugin["capabilities"], json!({"portMappings": true}));
        assert_eq!(
            plugin["kubeconfig"],
            "/etc/cni/net.d/plexus.d/plexus.kubeconfig"
        );
        assert_eq!(plugin["binDir"], "/opt/cni/bin");
        assert!(plugin.get("clusterNetwork").is_none());
    }

    #[test]
    fn a_configured_cluster_network_wins_and_extra_keys_are_kept_but_not_the_installers() {
        let mut s = settings();
        s.cluster_network = Some("k8s-pod-network".into());
        s.cni_version = Some("1.1.0".into());
        s.host_readiness_file = Some("/run/ready".into());
        s.plugin_config = serde_json::from_value(json!({
            "namespaceIsolation": true, "type": "something-else", "kubeconfig": "/elsewhere",
            "delegates": [bridge("x")]
        }))
        .unwrap();
        let conf = plexus_conflist(None, &s).unwrap();
        let plugin = &conf["plugins"][0];
        assert_eq!(conf["cniVersion"], "1.1.0");
        assert_eq!(plugin["clusterNetwork"], "k8s-pod-network");
        assert_eq!(plugin["namespaceIsolation"], true);
        assert_eq!(plugin["type"], "plexus");
        assert_eq!(plugin["readinessindicatorfile"], "/run/ready");
        assert_ne!(plugin["kubeconfig"], "/elsewhere");
        assert!(plugin.get("delegates").is_none());
    }

    #[test]
    fn a_thick_conf_is_a_shim_conf_without_a_kubeconfig() {
        let mut s = settings();
        s.mode = Mode::Thick;
        s.daemon_socket_dir = "/run/plexus".into();
        s.plugin_config = serde_json::from_value(json!({"kubeconfig": "/elsewhere"})).unwrap();
        let primary = Primary {
            path: "/x.conflist".into(),
            config: bridge("pods"),
        };
        let conf = plexus_conflist(Some(&primary), &s).unwrap();
        let plugin = &conf["plugins"][0];
        assert_eq!(plugin["type"], "plexus-shim");
        assert_eq!(plugin["daemonSocketDir"], "/run/plexus");
        assert!(plugin.get("kubeconfig").is_none());
        assert_eq!(plugin["delegates"][0], bridge("pods"));
    }

    #[test]
    fn no_cluster_network_is_no_conf() {
        assert!(matches!(
            plexus_conflist(None, &settings()),
            Err(InstallError::Generated(_))
        ));
    }

    #[test]
    fn plugin_config_the_plugin_refuses_is_no_conf() {
        let mut s = settings();
        s.plugin_config = serde_json::from_value(json!({"logLevel": "loud"})).unwrap();
        let primary = Primary {
            path: "/x.conflist".into(),
            config: bridge("pods"),
        };
        assert!(matches!(
            plexus_conflist(Some(&primary), &s),
            Err(InstallError::Generated(_))
        ));
    }

    #[test]
    fn meta_plugins_and_broken_files_are_never_the_cluster_network() {
        for bad in [
            json!({"cniVersion": "1.0.0", "name": "plexus-cni-network", "plugins": [{"type": "plexus"}]}),
            json!({"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus"}),
            // Multus thick's leftover 00-multus.conf.
            json!({"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus-shim", "socketDir": "/run/multus/"}),
            json!({"cniVersion": "1.0.0", "name": "nested", "plugins": [{"type": "bridge", "ipam": {"type": "plexus"}}]}),
            json!({"cniVersion": "1.0.0", "name": "empty", "plugins": []}),
            json!({"cniVersion": "1.0.0", "name": "untyped", "plugins": [{"bridge": "x"}]}),
            json!({}),
            json!([]),
        ] {
            assert!(disqualified(&bad).is_some(), "{bad}");
        }
        assert_eq!(disqualified(&bridge("pods")), None);
        assert_eq!(
            disqualified(&json!({"cniVersion": "0.3.1", "name": "single", "type": "bridge"})),
            None
        );
    }

    #[test]
    fn the_runtime_conf_is_the_first_json_file_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        assert_eq!(
            RuntimeConf::of(&dir.path().join("absent")),
            RuntimeConf::Missing
        );
        assert_eq!(RuntimeConf::of(dir.path()), RuntimeConf::Missing);
        write("README", "not a conf");
        write("05-broken.conf", "{");
        assert_eq!(RuntimeConf::of(dir.path()), RuntimeConf::Missing);
        write("10-pods.conflist", &bridge("pods").to_string());
        assert_eq!(RuntimeConf::of(dir.path()), RuntimeConf::Other);
        write(
            "00-plexus.conflist",
            r#"{"name":"plexus","plugins":[{"type":"plexus"}]}"#,
        );
        assert_eq!(RuntimeConf::of(dir.path()), RuntimeConf::Plexus);
        write("00-a.conf", r#"{"name":"x","type":"plexus"}"#);
        assert_eq!(
            RuntimeConf::of(dir.path()),
            RuntimeConf::Plexus,
            "the .conf form"
        );
        write("0-other.json", r#"{"name":"x","type":"bridge"}"#);
        assert_eq!(RuntimeConf::of(dir.path()), RuntimeConf::Other);
        let labels: Vec<_> = RuntimeConf::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(labels, ["plexus", "other", "none"]);
    }
}
