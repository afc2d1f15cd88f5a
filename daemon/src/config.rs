//! The daemon's config file: the plugin's config (the same keys, the same validation: `plexus_cni::config`) plus
//! the daemon's own keys, which the plugin never sees.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use plexus_cni::config::Config;
use serde_json::{Map, Value};

/// Where the socket goes unless `daemonSocketDir` says otherwise (the socket is `plexus.sock` in it).
pub const DEFAULT_SOCKET_DIR: &str = "/run/plexus";
/// Where `/metrics`, `/healthz` and `/readyz` are served unless `metricsAddress` says otherwise.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9464";
/// How many requests run at once unless `maxConcurrentDelegates` says otherwise; more wait their turn.
pub const DEFAULT_MAX_CONCURRENT: usize = 32;

/// The socket of Multus thick's HTTP API in `multusApiSocketDir` (the name multus-daemon gives it).
pub const MULTUS_SOCKET_NAME: &str = "multus.sock";

/// The daemon's own keys, removed before the rest is used as a plugin config.
const DAEMON_KEYS: [&str; 9] = [
    "daemonSocketDir",
    "nodeName",
    "metricsAddress",
    "maxConcurrentDelegates",
    "socketGroup",
    "multusApiSocketDir",
    "secureMetricsAddress",
    "runtimeConfDir",
    "nodeStatusNamespace",
];
/// Keys of a request's stdin config that belong to that request (the runtime's conf file and what the runtime adds
/// per call), besides every `cni.dev/` key (GC's attachments): the only keys a request's config takes from its
/// caller. Every other key comes from the daemon's file, or is the default: whoever may call the socket chooses no
/// directory, binary, delegate or network of the node.
pub const REQUEST_KEYS: [&str; 7] = [
    "cniVersion",
    "name",
    "type",
    "runtimeConfig",
    "capabilities",
    "prevResult",
    "args",
];

/// Whether a stdin key belongs to the request ([`REQUEST_KEYS`], `cni.dev/…`).
pub fn is_request_key(key: &str) -> bool {
    REQUEST_KEYS.contains(&key) || key.starts_with("cni.dev/")
}

/// Why the config file can't be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {msg}")]
    File { path: String, msg: String },
}

/// The validated daemon config.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub socket_dir: PathBuf,
    pub node_name: String,
    pub metrics_address: Option<SocketAddr>,
    pub max_concurrent: usize,
    /// With a group, the socket is mode 0660 and that group's members may call; otherwise 0600, root only.
    pub socket_group: Option<u32>,
    /// Where Multus thick's HTTP API is served too (`multus.sock` in it), when set (`crate::multus_api`).
    pub multus_api_socket_dir: Option<PathBuf>,
    /// Where `/metrics` is also served to scrapers off the node, over TLS and only to a bearer token the API server
    /// authorizes for it (`crate::secure_metrics`), when set.
    pub secure_metrics_address: Option<SocketAddr>,
    /// The container runtime's CNI conf dir, when set: `plexus_daemon_runtime_conf` says whether the conf the runtime
    /// uses there is Plexus's.
    pub runtime_conf_dir: Option<PathBuf>,
    /// The namespace of the node's status Lease, when set: the daemon publishes its part of it
    /// (`plexus_api::node_status`, `crate::node_status`).
    pub node_status_namespace: Option<String>,
    /// The plugin keys of the file: each request's config (see [`DaemonConfig::request_config`]).
    pub plugin_keys: Map<String, Value>,
    /// The same keys, validated with the plugin's rules.
    pub plugin: Config,
    /// The file it was read from ([`ConfigFile`] reads it again when it changes), and `NODE_NAME` then.
    source: Option<(PathBuf, Option<String>)>,
}

impl DaemonConfig {
    /// Reads the file; `node_name_env` is `NODE_NAME` from the environment.
    pub fn load(path: &Path, node_name_env: Option<String>) -> Result<Self, ConfigError> {
        let err = |msg: String| ConfigError::File {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let mut config = Self::parse(&text, node_name_env.clone()).map_err(err)?;
        config.source = Some((path.to_owned(), node_name_env));
        Ok(config)
    }

    pub fn parse(text: &[u8], node_name_env: Option<String>) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        let Value::Object(mut keys) = value else {
            return Err("the config must be a JSON object".into());
        };
        let text_key = |keys: &Map<String, Value>, key: &str| -> Result<Option<String>, String> {
            match keys.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("{key} must be a string, not {other}")),
            }
        };
        let socket_dir = PathBuf::from(
            text_key(&keys, "daemonSocketDir")?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_SOCKET_DIR.to_owned()),
        );
        if !socket_dir.is_absolute() {
            return Err(format!(
                "daemonSocketDir {:?} must be an absolute path",
                socket_dir.display().to_string()
            ));
        }
        let node_name = text_key(&keys, "nodeName")?
            .or(node_name_env)
            .filter(|s| !s.is_empty())
            .ok_or("no node name: set nodeName or the environment variable NODE_NAME")?;
        let metrics_address = match text_key(&keys, "metricsAddress")? {
            None => Some(DEFAULT_METRICS_ADDRESS.parse().expect("a valid address")),
            Some(s) => address("metricsAddress", &s)?,
        };
        let max_concurrent = match keys.get("maxConcurrentDelegates") {
            None | Some(Value::Null) => DEFAULT_MAX_CONCURRENT,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=4096).contains(n))
                .ok_or_else(|| {
                    format!("maxConcurrentDelegates must be a whole number from 1 to 4096, not {v}")
                })? as usize,
        };
        let socket_group = match keys.get("socketGroup") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("socketGroup must be a numeric group id, not {v}"))?,
            ),
        };
        let multus_api_socket_dir =
            absolute_dir("multusApiSocketDir", text_key(&keys, "multusApiSocketDir")?)?;
        let secure_metrics_address = match text_key(&keys, "secureMetricsAddress")? {
            None => None,
            Some(s) => address("secureMetricsAddress", &s)?,
        };
        let runtime_conf_dir = absolute_dir("runtimeConfDir", text_key(&keys, "runtimeConfDir")?)?;
        let node_status_namespace = match text_key(&keys, "nodeStatusNamespace")? {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) if plexus_api::validate::valid_dns1123_label(&s) => Some(s),
            Some(s) => return Err(format!("nodeStatusNamespace {s:?} is not a namespace name")),
        };
        for key in DAEMON_KEYS {
            keys.remove(key);
        }
        let plugin = Config::load(Value::Object(keys.clone()).to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(Self {
            socket_dir,
            node_name,
            metrics_address,
            max_concurrent,
            socket_group,
            multus_api_socket_dir,
            secure_metrics_address,
            runtime_conf_dir,
            node_status_namespace,
            plugin_keys: keys,
            plugin,
            source: None,
        })
    }

    /// The socket's path.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(plexus_cni::shim::SOCKET_NAME)
    }

    /// The path of Multus's API socket, when `multusApiSocketDir` is set.
    pub fn multus_socket_path(&self) -> Option<PathBuf> {
        self.multus_api_socket_dir
            .as_ref()
            .map(|d| d.join(MULTUS_SOCKET_NAME))
    }

    /// The config one request runs with: the daemon file's plugin keys (a key the file does not set takes its
    /// default, never the caller's), and from the stdin config only the keys that belong to the request
    /// ([`is_request_key`]). An empty stdin is an empty object; a stdin that is not a JSON object is passed on as it
    /// is, so the request fails as in thin mode, before anything runs.
    pub fn request_config(&self, stdin: &[u8]) -> Vec<u8> {
        let request = if stdin.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(stdin) {
                Ok(Value::Object(request)) => request,
                _ => return stdin.to_vec(),
            }
        };
        let mut config: Map<String, Value> = self
            .plugin_keys
            .iter()
            .filter(|(key, _)| !is_request_key(key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in request {
            if is_request_key(&key) {
                config.insert(key, value);
            }
        }
        serde_json::to_vec(&Value::Object(config)).expect("JSON serialises")
    }

    /// The daemon's own keys differ (they take effect at a start only).
    fn own_keys_differ(&self, other: &Self) -> bool {
        (
            &self.socket_dir,
            &self.node_name,
            self.metrics_address,
            self.max_concurrent,
            self.socket_group,
            &self.multus_api_socket_dir,
            self.secure_metrics_address,
            &self.runtime_conf_dir,
            &self.node_status_namespace,
        ) != (
            &other.socket_dir,
            &other.node_name,
            other.metrics_address,
            other.max_concurrent,
            other.socket_group,
            &other.multus_api_socket_dir,
            other.secure_metrics_address,
            &other.runtime_conf_dir,
            &other.node_status_namespace,
        )
    }
}

/// An address key's value: empty is none (not served), anything else must be `host:port`.
fn address(key: &str, value: &str) -> Result<Option<SocketAddr>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e| format!("{key} {value:?} is not an address like 127.0.0.1:9464: {e}"))
}

/// A directory key's value: empty is none, anything else must be an absolute path.
fn absolute_dir(key: &str, value: Option<String>) -> Result<Option<PathBuf>, String> {
    match value.filter(|s| !s.is_empty()).map(PathBuf::from) {
        Some(dir) if !dir.is_absolute() => Err(format!(
            "{key} {:?} must be an absolute path",
            dir.display().to_string()
        )),
        dir => Ok(dir),
    }
}

/// What identifies one version of the file: device, inode, size, modification and change times.
type Stamp = (u64, u64, u64, i64, i64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| {
        (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    })
}

/// What [`ConfigFile::current`] did with a changed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The new plugin keys apply from this request on.
    Applied,
    /// The file can't be used (the message says why): the previous config stays.
    Failed(String),
}

/// The config the requests run with: the file as read at the start, read again when it changes (another inode,
/// size or time: an atomic replacement, as a ConfigMap update makes, or an edit). The new plugin keys apply to the
/// requests after the change; the daemon's own keys (`daemonSocketDir`, `nodeName`, `metricsAddress`,
/// `maxConcurrentDelegates`, `socketGroup`) and the logging and client settings keep their values until the next
/// start. A file that can't be read or is not valid leaves the previous config in force.
pub struct ConfigFile {
    current: Mutex<(Option<Stamp>, Arc<DaemonConfig>)>,
}

impl ConfigFile {
    pub fn new(config: Arc<DaemonConfig>) -> Self {
        let stamp = config.source.as_ref().and_then(|(path, _)| stamp(path));
        Self {
            current: Mutex::new((stamp, config)),
        }
    }

    /// The config for a request starting now, and what was done if the file changed since the last request.
    pub fn current(&self) -> (Arc<DaemonConfig>, Option<Reload>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some((path, node_name_env)) = current.1.source.clone() else {
            return (current.1.clone(), None);
        };
        let now = stamp(&path);
        if now.is_none() || now == current.0 {
            return (current.1.clone(), None);
        }
        current.0 = now;
        let reload = match DaemonConfig::load(&path, node_name_env) {
            Ok(mut new) => {
                let old = &current.1;
                if new.own_keys_differ(old) {
                    tracing::warn!(file = %path.display(), "the daemon's own keys changed: they take effect at the next start");
                }
                new.socket_dir = old.socket_dir.clone();
                new.node_name = old.node_name.clone();
                new.metrics_address = old.metrics_address;
                new.max_concurrent = old.max_concurrent;
                new.socket_group = old.socket_group;
                new.multus_api_socket_dir = old.multus_api_socket_dir.clone();
                new.secure_metrics_address = old.secure_metrics_address;
                new.runtime_conf_dir = old.runtime_conf_dir.clone();
                new.node_status_namespace = old.node_status_namespace.clone();
                tracing::info!(file = %path.display(), "config file changed: its plugin keys apply from now on");
                current.1 = Arc::new(new);
                Reload::Applied
            }
            Err(e) => {
                tracing::error!(error = %e, "the changed config file can't be used: the previous config stays");
                Reload::Failed(e.to_string())
            }
        };
        (current.1.clone(), Some(reload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_daemon_keys() {
        let c = DaemonConfig::parse(b"{}", Some("node-a".into())).unwrap();
        assert_eq!(c.socket_path(), Path::new("/run/plexus/plexus.sock"));
        assert_eq!(c.node_name, "node-a");
        assert_eq!(c.metrics_address, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.max_concurrent, DEFAULT_MAX_CONCURRENT);
        assert_eq!(c.multus_socket_path(), None, "Multus's API is opt-in");
        assert_eq!(c.secure_metrics_address, None, "secure metrics are opt-in");
        assert_eq!(c.runtime_conf_dir, None);
        assert_eq!(
            c.node_status_namespace, None,
            "no status Lease unless asked"
        );
        let c = DaemonConfig::parse(
            br#"{"nodeName":"n","metricsAddress":"","daemonSocketDir":"/x","maxConcurrentDelegates":4,
                 "socketGroup":7,"logLevel":"debug","multusApiSocketDir":"/run/multus",
                 "secureMetricsAddress":"0.0.0.0:9466","runtimeConfDir":"/etc/cni/net.d",
                 "nodeStatusNamespace":"plexus-system"}"#,
            None,
        )
        .unwrap();
        assert_eq!(c.metrics_address, None);
        assert_eq!(c.socket_path(), Path::new("/x/plexus.sock"));
        assert_eq!(
            c.multus_socket_path().as_deref(),
            Some(Path::new("/run/multus/multus.sock"))
        );
        assert_eq!((c.max_concurrent, c.socket_group), (4, Some(7)));
        assert_eq!(
            c.secure_metrics_address,
            Some("0.0.0.0:9466".parse().unwrap())
        );
        assert_eq!(
            c.runtime_conf_dir.as_deref(),
            Some(Path::new("/etc/cni/net.d"))
        );
        assert_eq!(c.node_status_namespace.as_deref(), Some("plexus-system"));
        assert_eq!(c.plugin.log.level, "debug");
        assert!(
            c.plugin.ignored_keys.is_empty(),
            "{:?}",
            c.plugin.ignored_keys
        );
    }

    #[test]
    fn bad_configs_name_the_key() {
        let bad = |text: &str| DaemonConfig::parse(text.as_bytes(), Some("n".into())).unwrap_err();
        assert!(bad("{}x").contains("line"));
        assert!(
            DaemonConfig::parse(b"{}", None)
                .unwrap_err()
                .contains("NODE_NAME")
        );
        assert!(bad(r#"{"metricsAddress":"nowhere"}"#).contains("metricsAddress"));
        assert!(bad(r#"{"maxConcurrentDelegates":0}"#).contains("maxConcurrentDelegates"));
        assert!(bad(r#"{"secureMetricsAddress":"all"}"#).contains("secureMetricsAddress"));
        assert!(bad(r#"{"runtimeConfDir":"net.d"}"#).contains("runtimeConfDir"));
        assert!(bad(r#"{"socketGroup":"wheel"}"#).contains("socketGroup"));
        assert!(bad(r#"{"nodeStatusNamespace":"Plexus System"}"#).contains("nodeStatusNamespace"));
        assert!(bad(r#"{"logLevel":"loud"}"#).contains("logLevel"));
        assert!(bad(r#"{"daemonSocketDir":"run/plexus"}"#).contains("daemonSocketDir"));
        assert!(bad(r#"{"multusApiSocketDir":"run/multus"}"#).contains("multusApiSocketDir"));
        assert!(bad(r#"{"multusApiSocketDir":7}"#).contains("multusApiSocketDir"));
        assert!(bad(r#"{"cniDir":"records"}"#).contains("cniDir"));
    }

    #[test]
    fn a_request_takes_only_its_own_keys_from_the_caller() {
        let c = DaemonConfig::parse(
            br#"{"nodeName":"n","cniVersion":"0.4.0","name":"node","binDir":"/node/bin","multusNamespace":"infra"}"#,
            None,
        )
        .unwrap();
        // Every key a caller could use to pick a directory, a binary, a delegate or a network of the node.
        let stdin = json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "binDir": "/x",
            "cniDir": "/tmp/evil", "confDir": "/tmp/evil", "delegates": [{"type": "evil"}],
            "clusterNetwork": "/tmp/evil.conf", "defaultNetworks": ["evil"], "kubeconfig": "/tmp/k",
            "readinessindicatorfile": "/tmp/ready", "namespaceIsolation": false, "logFile": "/etc/shadow",
            "delegateTimeoutSeconds": 1000, "daemonSocketDir": "/run/plexus", "daemonTimeoutSeconds": 3,
            "runtimeConfig": {"mac": "x"}, "capabilities": {"mac": true}, "prevResult": {"ips": []},
            "args": {"cni": {}}, "cni.dev/valid-attachments": []});
        let merged: Value =
            serde_json::from_slice(&c.request_config(stdin.to_string().as_bytes())).unwrap();
        assert_eq!(
            merged,
            json!({"binDir": "/node/bin", "multusNamespace": "infra", "cniVersion": "1.0.0", "name": "plexus",
                "type": "plexus", "runtimeConfig": {"mac": "x"}, "capabilities": {"mac": true},
                "prevResult": {"ips": []}, "args": {"cni": {}}, "cni.dev/valid-attachments": []})
        );
        // An empty stdin (a DEL may come with one) still runs with the node's keys.
        let empty: Value = serde_json::from_slice(&c.request_config(b" ")).unwrap();
        assert_eq!(
            empty,
            json!({"binDir": "/node/bin", "multusNamespace": "infra"})
        );
        assert_eq!(c.request_config(b"not json"), b"not json");
    }

    #[test]
    fn a_changed_file_applies_its_plugin_keys_and_keeps_the_daemons_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        let write = |text: &str| {
            let tmp = dir.path().join("new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write(r#"{"nodeName":"a","binDir":"/one","maxConcurrentDelegates":2}"#);
        let file = ConfigFile::new(Arc::new(DaemonConfig::load(&path, None).unwrap()));
        let (c, reload) = file.current();
        assert_eq!(
            (c.plugin_keys["binDir"].as_str(), reload),
            (Some("/one"), None)
        );
        write(r#"{"nodeName":"b","binDir":"/two","maxConcurrentDelegates":9}"#);
        let (c, reload) = file.current();
        assert_eq!(reload, Some(Reload::Applied));
        assert_eq!(c.plugin_keys["binDir"], "/two");
        assert_eq!((c.node_name.as_str(), c.max_concurrent), ("a", 2));
        assert_eq!(file.current().1, None, "read once per change");
        write(r#"{"nodeName":"b","logLevel":"loud"}"#);
        let (c, reload) = file.current();
        assert!(matches!(reload, Some(Reload::Failed(e)) if e.contains("logLevel")));
        assert_eq!(c.plugin_keys["binDir"], "/two", "the previous config stays");
    }
}
