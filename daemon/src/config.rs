//! The daemon's config file: the plugin's config (the same keys, the same validation: `plexus_cni::config`) plus
//! the daemon's own keys, which the plugin never sees.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use plexus_cni::config::Config;
use serde_json::{Map, Value};

/// Where the socket goes unless `daemonSocketDir` says otherwise (the socket is `plexus.sock` in it).
pub const DEFAULT_SOCKET_DIR: &str = "/run/plexus";
/// Where `/metrics`, `/healthz` and `/readyz` are served unless `metricsAddress` says otherwise.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9464";
/// How many requests run at once unless `maxConcurrentDelegates` says otherwise; more wait their turn.
pub const DEFAULT_MAX_CONCURRENT: usize = 32;

/// The daemon's own keys, removed before the rest is used as a plugin config.
const DAEMON_KEYS: [&str; 5] = [
    "daemonSocketDir",
    "nodeName",
    "metricsAddress",
    "maxConcurrentDelegates",
    "socketGroup",
];
/// The shim's keys: they only matter to `plexus` on the runtime side.
const SHIM_KEYS: [&str; 2] = ["daemonSocketDir", "daemonTimeoutSeconds"];
/// Keys of a request's stdin config that belong to that request (the runtime's conf file and what the runtime adds
/// per call): the daemon's file never overrides them.
const REQUEST_KEYS: [&str; 9] = [
    "cniVersion",
    "name",
    "type",
    "runtimeConfig",
    "capabilities",
    "prevResult",
    "args",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
];

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
    /// The plugin keys of the file, laid over each request's stdin config (see [`DaemonConfig::request_config`]).
    pub plugin_keys: Map<String, Value>,
    /// The same keys, validated with the plugin's rules.
    pub plugin: Config,
}

impl DaemonConfig {
    /// Reads the file; `node_name_env` is `NODE_NAME` from the environment.
    pub fn load(path: &Path, node_name_env: Option<String>) -> Result<Self, ConfigError> {
        let err = |msg: String| ConfigError::File {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text, node_name_env).map_err(err)
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
        let node_name = text_key(&keys, "nodeName")?
            .or(node_name_env)
            .filter(|s| !s.is_empty())
            .ok_or("no node name: set nodeName or the environment variable NODE_NAME")?;
        let metrics_address = match text_key(&keys, "metricsAddress")? {
            None => Some(DEFAULT_METRICS_ADDRESS.parse().expect("a valid address")),
            Some(s) if s.is_empty() => None,
            Some(s) => Some(s.parse().map_err(|e| {
                format!("metricsAddress {s:?} is not an address like 127.0.0.1:9464: {e}")
            })?),
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
            plugin_keys: keys,
            plugin,
        })
    }

    /// The socket's path.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(plexus_cni::shim::SOCKET_NAME)
    }

    /// The config one request runs with: its stdin config with the daemon file's plugin keys laid over it (the
    /// node's settings win, as with Multus's daemon), except the keys that belong to the request, and without the
    /// shim's keys. A stdin that is not a JSON object is passed on as it is, so the request fails as in thin mode.
    pub fn request_config(&self, stdin: &[u8]) -> Vec<u8> {
        let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(stdin) else {
            return stdin.to_vec();
        };
        for key in SHIM_KEYS {
            request.remove(key);
        }
        for (key, value) in &self.plugin_keys {
            if !REQUEST_KEYS.contains(&key.as_str()) {
                request.insert(key.clone(), value.clone());
            }
        }
        serde_json::to_vec(&Value::Object(request)).expect("JSON serialises")
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
        let c = DaemonConfig::parse(
            br#"{"nodeName":"n","metricsAddress":"","daemonSocketDir":"/x","maxConcurrentDelegates":4,
                 "socketGroup":7,"logLevel":"debug"}"#,
            None,
        )
        .unwrap();
        assert_eq!(c.metrics_address, None);
        assert_eq!(c.socket_path(), Path::new("/x/plexus.sock"));
        assert_eq!((c.max_concurrent, c.socket_group), (4, Some(7)));
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
        assert!(bad(r#"{"socketGroup":"wheel"}"#).contains("socketGroup"));
        assert!(bad(r#"{"logLevel":"loud"}"#).contains("logLevel"));
    }

    #[test]
    fn the_node_settings_win_except_the_requests_own_keys() {
        let c = DaemonConfig::parse(
            br#"{"nodeName":"n","cniVersion":"0.4.0","name":"node","binDir":"/node/bin","multusNamespace":"infra"}"#,
            None,
        )
        .unwrap();
        let stdin = json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "binDir": "/x",
            "daemonSocketDir": "/run/plexus", "daemonTimeoutSeconds": 3, "runtimeConfig": {"mac": "x"}});
        let merged: Value =
            serde_json::from_slice(&c.request_config(stdin.to_string().as_bytes())).unwrap();
        assert_eq!(
            merged,
            json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "binDir": "/node/bin",
                "multusNamespace": "infra", "runtimeConfig": {"mac": "x"}})
        );
        assert_eq!(c.request_config(b"not json"), b"not json");
    }
}
