//! The Plexus config, read from stdin. Its keys are Multus's, so a Multus config file loads unchanged; keys Plexus
//! does not know are ignored (and logged at debug level).

use std::path::PathBuf;
use std::time::Duration;

use plexus_api::cni::{NetworkConfigList, version};
use plexus_api::policy::Policy;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::PlexusError;

pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/plexus";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
pub const DEFAULT_DELEGATE_TIMEOUT_SECONDS: f64 = 60.0;
pub const DEFAULT_API_TIMEOUT_SECONDS: f64 = 10.0;
/// The kubelet's PodResources socket, its device manager's checkpoint and the device-info directory (device-info
/// spec): where device networks learn a pod's devices.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
pub const DEFAULT_DEVICE_CHECKPOINT_FILE: &str =
    "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";
/// As long as Multus waits for the kubelet's PodResources answer.
pub const DEFAULT_KUBELET_TIMEOUT_SECONDS: f64 = 10.0;
/// As long as Multus waits for its readiness indicator file.
pub const DEFAULT_READINESS_TIMEOUT_SECONDS: f64 = 45.0;

/// The config as written (Multus key names).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawConfig {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub plugin_type: String,
    #[serde(default)]
    pub delegates: Vec<Value>,
    #[serde(default)]
    pub cluster_network: Option<String>,
    #[serde(default)]
    pub default_networks: Vec<String>,
    #[serde(default)]
    pub bin_dir: Option<String>,
    #[serde(default)]
    pub cni_dir: Option<String>,
    #[serde(default)]
    pub conf_dir: Option<String>,
    #[serde(default)]
    pub kubeconfig: Option<String>,
    #[serde(default)]
    pub log_file: Option<String>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub log_to_stderr: Option<bool>,
    #[serde(default)]
    pub namespace_isolation: bool,
    /// Comma-separated, as in Multus.
    #[serde(default)]
    pub global_namespaces: Option<String>,
    #[serde(default)]
    pub system_namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub multus_namespace: Option<String>,
    #[serde(default, rename = "readinessindicatorfile")]
    pub readiness_indicator_file: Option<String>,
    #[serde(default)]
    pub capabilities: Map<String, Value>,
    #[serde(default)]
    pub runtime_config: Map<String, Value>,
    /// Plexus's own key: how long one delegate call may take, in seconds.
    #[serde(default)]
    pub delegate_timeout_seconds: Option<f64>,
    /// Plexus's own key: how long ADD and DEL wait for `readinessindicatorfile`, in seconds.
    #[serde(default)]
    pub readiness_timeout_seconds: Option<f64>,
    /// Plexus's own key: how long one Kubernetes API call may take, in seconds.
    #[serde(default)]
    pub api_timeout_seconds: Option<f64>,
    /// Plexus's own key: record an Event on the pod for each attached network (default true).
    #[serde(default)]
    pub pod_events: Option<bool>,
    /// Plexus's own key: a capability key on a network that does not declare the capability fails the ADD (R18,
    /// R20) instead of being passed on as Multus does (Decision 7). Default false.
    #[serde(default)]
    pub strict_capabilities: bool,
    /// Plexus's own key: the most attachments one pod may have, its default network included (default 32).
    #[serde(default)]
    pub max_networks_per_pod: Option<u64>,
    /// Plexus's own key: the only plugin types a NAD's config may run (unset: any bare name in binDir).
    #[serde(default)]
    pub allowed_plugin_types: Option<Vec<String>>,
    /// Plexus's own key: `false` refuses every selection's `portMappings` (host ports) on this node (default true).
    #[serde(default)]
    pub allow_port_mappings: Option<bool>,
    /// Plexus's own key: the kubelet's PodResources socket (device networks).
    #[serde(default)]
    pub pod_resources_socket: Option<String>,
    /// Plexus's own key: the kubelet device manager's checkpoint, read when the kubelet does not answer.
    #[serde(default)]
    pub device_checkpoint_file: Option<String>,
    /// Plexus's own key: the device-info directory (`dp/` from device plugins, `cni/` for delegates).
    #[serde(default)]
    pub device_info_dir: Option<String>,
    /// Plexus's own key: how long the kubelet's PodResources call may take, in seconds.
    #[serde(default)]
    pub kubelet_timeout_seconds: Option<f64>,
    /// Everything else (other Multus keys, `prevResult`, `args`, ...).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub file: Option<PathBuf>,
    pub to_stderr: bool,
    /// A `tracing` filter directive (e.g. `debug`).
    pub level: String,
}

/// The validated config with defaults applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// The version the runtime speaks: ADD results are converted to it.
    pub cni_version: String,
    pub name: String,
    pub delegates: Vec<NetworkConfigList>,
    pub cluster_network: Option<String>,
    pub default_networks: Vec<String>,
    pub bin_dirs: Vec<PathBuf>,
    pub cni_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub log: LogSettings,
    pub namespace_isolation: bool,
    pub global_namespaces: Vec<String>,
    pub system_namespaces: Vec<String>,
    pub multus_namespace: String,
    pub readiness_indicator_file: Option<PathBuf>,
    pub readiness_timeout: Duration,
    /// runtimeConfig the runtime passed (kubelet/CRI capability args): for the default network only (R63).
    pub runtime_config: Map<String, Value>,
    pub delegate_timeout: Duration,
    pub api_timeout: Duration,
    pub pod_events: bool,
    pub strict_capabilities: bool,
    pub max_networks_per_pod: usize,
    pub allowed_plugin_types: Option<Vec<String>>,
    pub allow_port_mappings: bool,
    pub pod_resources_socket: PathBuf,
    pub device_checkpoint_file: PathBuf,
    pub device_info_dir: PathBuf,
    pub kubelet_timeout: Duration,
    /// Keys Plexus ignored.
    pub ignored_keys: Vec<String>,
}

impl Config {
    /// Decodes and validates the stdin config. Empty stdin is an empty config (DEL must work with it).
    pub fn load(stdin: &[u8]) -> Result<Self, PlexusError> {
        let value: Value = if stdin.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(stdin).map_err(|e| PlexusError::Decode(e.to_string()))?
        };
        if !value.is_object() {
            return Err(PlexusError::Decode(
                "the config must be a JSON object".into(),
            ));
        }
        let raw: RawConfig =
            serde_json::from_value(value).map_err(|e| PlexusError::InvalidConfig(e.to_string()))?;
        Self::from_raw(raw)
    }

    pub fn from_raw(raw: RawConfig) -> Result<Self, PlexusError> {
        if !raw.cni_version.is_empty() && !version::is_supported(&raw.cni_version) {
            return Err(PlexusError::IncompatibleVersion {
                requested: raw.cni_version,
                supported: version::SUPPORTED.join(", "),
            });
        }
        if !raw.name.is_empty() && !plexus_api::cni::config::valid_network_name(&raw.name) {
            return Err(PlexusError::InvalidConfig(format!(
                "name {:?} is not a valid network name: it must start with a letter or digit and hold only letters, \
                 digits, '_', '.' and '-'",
                raw.name
            )));
        }
        let delegates = raw
            .delegates
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let label = d
                    .get("name")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("delegates[{i}]"), str::to_owned);
                NetworkConfigList::from_value(d).map_err(|source| PlexusError::InvalidDelegate {
                    network: label,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let seconds = |key: &str, value: Option<f64>, default: f64| {
            let v = value.unwrap_or(default);
            match Duration::try_from_secs_f64(v) {
                Ok(d) if v > 0.0 && v <= MAX_SECONDS => Ok(d),
                _ => Err(PlexusError::InvalidConfig(format!(
                    "{key} must be a positive number of seconds, at most {MAX_SECONDS}, not {v}"
                ))),
            }
        };
        let delegate_timeout = seconds(
            "delegateTimeoutSeconds",
            raw.delegate_timeout_seconds,
            DEFAULT_DELEGATE_TIMEOUT_SECONDS,
        )?;
        let readiness_timeout = seconds(
            "readinessTimeoutSeconds",
            raw.readiness_timeout_seconds,
            DEFAULT_READINESS_TIMEOUT_SECONDS,
        )?;
        let api_timeout = seconds(
            "apiTimeoutSeconds",
            raw.api_timeout_seconds,
            DEFAULT_API_TIMEOUT_SECONDS,
        )?;
        let kubelet_timeout = seconds(
            "kubeletTimeoutSeconds",
            raw.kubelet_timeout_seconds,
            DEFAULT_KUBELET_TIMEOUT_SECONDS,
        )?;
        for (key, value) in [
            ("podResourcesSocket", &raw.pod_resources_socket),
            ("deviceCheckpointFile", &raw.device_checkpoint_file),
            ("deviceInfoDir", &raw.device_info_dir),
            ("cniDir", &raw.cni_dir),
            ("confDir", &raw.conf_dir),
            ("kubeconfig", &raw.kubeconfig),
            ("logFile", &raw.log_file),
            ("readinessindicatorfile", &raw.readiness_indicator_file),
        ] {
            absolute(key, value.as_deref().unwrap_or_default())?;
        }
        for dir in raw.bin_dir.as_deref().unwrap_or_default().split(':') {
            absolute("binDir", dir)?;
        }
        let max_networks_per_pod = match raw.max_networks_per_pod {
            None => plexus_api::policy::DEFAULT_MAX_NETWORKS_PER_POD,
            Some(n @ 1..=MAX_NETWORKS_PER_POD) => n as usize,
            Some(n) => {
                return Err(PlexusError::InvalidConfig(format!(
                    "maxNetworksPerPod must be a whole number from 1 to {MAX_NETWORKS_PER_POD}, not {n}"
                )));
            }
        };
        if let Some(types) = &raw.allowed_plugin_types {
            for t in types {
                plexus_api::cni::config::check_binary_name(t)
                    .map_err(|e| PlexusError::InvalidConfig(format!("allowedPluginTypes: {e}")))?;
            }
        }
        let log = LogSettings {
            file: raw.log_file.filter(|f| !f.is_empty()).map(PathBuf::from),
            to_stderr: raw.log_to_stderr.unwrap_or(true),
            level: log_level(raw.log_level.as_deref())?,
        };
        let path_list = |s: Option<String>, default: &str| {
            let s = s
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| default.to_owned());
            s.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        };
        let one_path = |s: Option<String>, default: &str| {
            PathBuf::from(
                s.filter(|s| !s.is_empty())
                    .unwrap_or_else(|| default.to_owned()),
            )
        };
        let global_namespaces = match raw.global_namespaces {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            None => vec!["default".to_owned()],
        };
        let ignored_keys: Vec<String> = raw.other.keys().cloned().collect();
        Ok(Config {
            cni_version: raw.cni_version,
            name: raw.name,
            delegates,
            cluster_network: raw.cluster_network.filter(|s| !s.is_empty()),
            default_networks: raw.default_networks,
            bin_dirs: path_list(raw.bin_dir, DEFAULT_BIN_DIR),
            cni_dir: one_path(raw.cni_dir, DEFAULT_CNI_DIR),
            conf_dir: one_path(raw.conf_dir, DEFAULT_CONF_DIR),
            kubeconfig: raw.kubeconfig.filter(|s| !s.is_empty()).map(PathBuf::from),
            log,
            namespace_isolation: raw.namespace_isolation,
            global_namespaces,
            system_namespaces: raw
                .system_namespaces
                .unwrap_or_else(|| vec!["kube-system".to_owned()]),
            multus_namespace: raw
                .multus_namespace
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "kube-system".to_owned()),
            readiness_indicator_file: raw
                .readiness_indicator_file
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            runtime_config: raw.runtime_config,
            delegate_timeout,
            readiness_timeout,
            api_timeout,
            pod_events: raw.pod_events.unwrap_or(true),
            strict_capabilities: raw.strict_capabilities,
            max_networks_per_pod,
            allowed_plugin_types: raw.allowed_plugin_types,
            allow_port_mappings: raw.allow_port_mappings.unwrap_or(true),
            pod_resources_socket: one_path(raw.pod_resources_socket, DEFAULT_POD_RESOURCES_SOCKET),
            device_checkpoint_file: one_path(
                raw.device_checkpoint_file,
                DEFAULT_DEVICE_CHECKPOINT_FILE,
            ),
            device_info_dir: one_path(raw.device_info_dir, DEFAULT_DEVICE_INFO_DIR),
            kubelet_timeout,
            ignored_keys,
        })
    }

    /// The keys the shared pod rules ([`plexus_api::policy`]) read.
    pub fn policy(&self) -> Policy {
        Policy {
            namespace_isolation: self.namespace_isolation,
            global_namespaces: self.global_namespaces.clone(),
            system_namespaces: self.system_namespaces.clone(),
            multus_namespace: self.multus_namespace.clone(),
            cluster_network: self.cluster_network.clone(),
            default_networks: self.default_networks.clone(),
            static_delegates: self.delegates.len(),
            strict_capabilities: self.strict_capabilities,
            max_networks_per_pod: self.max_networks_per_pod,
            allowed_plugin_types: self.allowed_plugin_types.clone(),
            port_mappings_refused: (!self.allow_port_mappings)
                .then(|| "allowPortMappings is false on this node".to_owned()),
        }
    }

    /// The version results are rendered in for the runtime (an empty `cniVersion` means 0.1.0, as in libcni).
    pub fn result_version(&self) -> &str {
        if self.cni_version.is_empty() {
            version::IMPLICIT
        } else {
            &self.cni_version
        }
    }
}

/// The longest timeout a config may set, in seconds (a day): far beyond any sensible value, and far inside what a
/// duration and a deadline computed from it can hold.
pub const MAX_SECONDS: f64 = 86_400.0;

/// The largest `maxNetworksPerPod` accepted.
pub const MAX_NETWORKS_PER_POD: u64 = 1024;

/// A path key of Plexus's own config must be absolute (or unset): a relative one would be resolved against whatever
/// directory the runtime runs the plugin in.
fn absolute(key: &str, value: &str) -> Result<(), PlexusError> {
    if value.is_empty() || value.starts_with('/') {
        Ok(())
    } else {
        Err(PlexusError::InvalidConfig(format!(
            "{key} {value:?} must be an absolute path"
        )))
    }
}

/// Maps Multus's log levels (`debug`, `verbose`, `error`, `panic`) and tracing's own to a tracing filter.
fn log_level(level: Option<&str>) -> Result<String, PlexusError> {
    let level = level.unwrap_or("").trim().to_ascii_lowercase();
    Ok(match level.as_str() {
        "" => "info",
        "panic" | "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "verbose" | "debug" => "debug",
        "trace" => "trace",
        other => {
            return Err(PlexusError::InvalidConfig(format!(
                "logLevel {other:?} is not one of debug, verbose, info, warn, error, panic, trace"
            )));
        }
    }
    .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multus_config_loads_unchanged() {
        let text = br#"{
            "cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus",
            "confDir": "/etc/cni/multus/net.d", "cniDir": "/var/lib/cni/multus", "binDir": "/opt/cni/bin",
            "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
            "logFile": "/var/log/multus.log", "logLevel": "verbose", "logToStderr": false,
            "logOptions": {"maxAge": 5}, "namespaceIsolation": true, "globalNamespaces": "default,infra",
            "systemNamespaces": ["kube-system", "openshift"], "multusNamespace": "kube-system",
            "readinessindicatorfile": "/run/ready", "retryDeleteOnError": true,
            "clusterNetwork": "k8s-pod-network", "defaultNetworks": ["extra"],
            "capabilities": {"portMappings": true, "bandwidth": true},
            "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]},
            "delegates": [{"cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "bridge"}]
        }"#;
        let c = Config::load(text).unwrap();
        assert_eq!(c.cni_version, "0.3.1");
        assert_eq!(c.delegates.len(), 1);
        assert_eq!(c.log.level, "debug");
        assert!(!c.log.to_stderr);
        assert_eq!(c.global_namespaces, ["default", "infra"]);
        assert_eq!(c.system_namespaces, ["kube-system", "openshift"]);
        assert_eq!(c.cluster_network.as_deref(), Some("k8s-pod-network"));
        assert_eq!(
            c.readiness_indicator_file,
            Some(PathBuf::from("/run/ready"))
        );
        assert!(c.runtime_config.contains_key("portMappings"));
        assert!(c.ignored_keys.contains(&"logOptions".to_string()));
        assert!(c.ignored_keys.contains(&"retryDeleteOnError".to_string()));
    }

    #[test]
    fn defaults() {
        let c = Config::load(b"").unwrap();
        assert_eq!(c.bin_dirs, [PathBuf::from(DEFAULT_BIN_DIR)]);
        assert_eq!(c.cni_dir, PathBuf::from(DEFAULT_CNI_DIR));
        assert_eq!(c.delegate_timeout, Duration::from_secs(60));
        assert_eq!(c.result_version(), "0.1.0");
        assert_eq!(c.global_namespaces, ["default"]);
        assert_eq!(c.system_namespaces, ["kube-system"]);
    }

    #[test]
    fn errors_map_to_the_right_codes() {
        let code = |t: &[u8]| Config::load(t).unwrap_err().to_cni().code;
        assert_eq!(code(b"{not json"), 6);
        assert_eq!(code(b"[1]"), 6);
        assert_eq!(code(br#"{"cniVersion":"9.9.9"}"#), 1);
        assert_eq!(code(br#"{"namespaceIsolation":"yes"}"#), 7);
        assert_eq!(
            code(br#"{"delegates":[{"name":"x","cniVersion":"1.0.0","type":"../bin/sh"}]}"#),
            7
        );
        assert_eq!(code(br#"{"delegateTimeoutSeconds":0}"#), 7);
        // Out of range: duration conversion would panic (it came back as code 999 before).
        assert_eq!(code(br#"{"delegateTimeoutSeconds":1e308}"#), 7);
        assert_eq!(code(br#"{"apiTimeoutSeconds":18446744073709551616}"#), 7);
        assert_eq!(code(br#"{"readinessTimeoutSeconds":86401}"#), 7);
        let e = Config::load(br#"{"apiTimeoutSeconds":1e308}"#).unwrap_err();
        assert!(e.to_string().contains("apiTimeoutSeconds"), "{e}");
        for key in [
            "cniDir",
            "confDir",
            "kubeconfig",
            "logFile",
            "readinessindicatorfile",
            "binDir",
        ] {
            let e = Config::load(format!(r#"{{"{key}":"relative/dir"}}"#).as_bytes()).unwrap_err();
            assert_eq!(e.to_cni().code, 7, "{key}");
            assert!(e.to_string().contains(key), "{e}");
        }
        assert_eq!(code(br#"{"binDir":"/opt/cni/bin:rel"}"#), 7);
        assert_eq!(code(br#"{"maxNetworksPerPod":0}"#), 7);
        assert_eq!(code(br#"{"allowedPluginTypes":["plexus"]}"#), 7);
        assert_eq!(code(br#"{"allowedPluginTypes":["../x"]}"#), 7);
        assert_eq!(
            code(br#"{"delegates":[{"name":"x","cniVersion":"1.0.0","type":"multus-shim"}]}"#),
            7
        );
        assert_eq!(code(br#"{"logLevel":"loud"}"#), 7);
    }
}
