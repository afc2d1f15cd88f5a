//! CNI network configurations (SPEC B.2) and the per-plugin request config a runtime builds (SPEC B.7).
//!
//! A plugin object is kept as the JSON map it was written as, so every field Plexus does not know is passed to the
//! delegate unchanged (C4, C52). Both a single config (`type` at the top) and a config list are accepted; a single
//! config becomes a one-plugin list, as libcni's `ConfListFromConf` does.

use serde_json::{Map, Value};

use super::version;

/// Why a network config was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("network config is not valid JSON: {0}")]
    Json(String),
    #[error("network config must be a JSON object")]
    NotAnObject,
    #[error("network config has no \"name\"")]
    MissingName,
    #[error(
        "network name {0:?} is invalid: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
    )]
    InvalidName(String),
    #[error("field {field:?} has the wrong type: expected {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("plugin {index} of network {network:?} has no \"type\"")]
    MissingType { network: String, index: usize },
    #[error(
        "plugin type {0:?} is not a bare binary name: it must not contain a path separator or \"..\""
    )]
    UnsafeType(String),
    #[error(
        "plugin type {0:?} is a meta-plugin ({list}): a network's plugins are the plugins that attach it, never \
         another multi-network plugin, whose config would come from the network's author",
        list = META_PLUGINS.join(", ")
    )]
    MetaPlugin(String),
    #[error("network {0:?} has no plugins")]
    NoPlugins(String),
    #[error("network {0:?} sets loadOnlyInlinedPlugins without a \"plugins\" list")]
    InlinedWithoutPlugins(String),
    #[error(
        "network {network:?} asks for CNI version {version:?}, which Plexus does not support (supported: {supported})"
    )]
    UnsupportedVersion {
        network: String,
        version: String,
        supported: String,
    },
}

/// One plugin object of a config list, kept as written.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    raw: Map<String, Value>,
}

impl PluginConfig {
    /// The plugin binary name (already checked to be a bare name).
    pub fn plugin_type(&self) -> &str {
        self.raw
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The IPAM plugin's binary name, if the plugin delegates to one.
    pub fn ipam_type(&self) -> Option<&str> {
        self.raw.get("ipam")?.get("type")?.as_str()
    }

    /// True when the plugin declares `capabilities.<name>: true`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.raw
            .get("capabilities")
            .and_then(|c| c.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The plugin object exactly as configured.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }
}

/// A network config list: what one attachment runs.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    /// `cniVersion` as written ("" when absent).
    pub cni_version: String,
    pub cni_versions: Vec<String>,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub load_only_inlined_plugins: bool,
    pub plugins: Vec<PluginConfig>,
    /// True when this came from a single config rather than a list.
    pub from_single_config: bool,
}

/// Extra information a runtime adds to one plugin's request config (B.7).
#[derive(Debug, Clone, Default)]
pub struct RequestExtras<'a> {
    /// Capability arguments offered for this attachment; each plugin gets only those it declares.
    pub capability_args: Option<&'a Map<String, Value>>,
    /// `args` to merge into the plugin's own `args` (the selection's `cni-args` go under `args.cni`).
    pub cni_args: Option<&'a Map<String, Value>>,
    /// The previous result, already in the list's version.
    pub prev_result: Option<&'a Value>,
}

impl NetworkConfigList {
    /// Parses a conf or conflist from JSON text.
    pub fn parse(text: &[u8]) -> Result<Self, ConfigError> {
        let value: Value =
            serde_json::from_slice(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        Self::from_value(value)
    }

    /// Builds from an already decoded JSON value (a conf or a conflist).
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        let Value::Object(mut top) = value else {
            return Err(ConfigError::NotAnObject);
        };
        let name = match top.get("name") {
            None | Some(Value::Null) => return Err(ConfigError::MissingName),
            Some(Value::String(s)) if s.is_empty() => return Err(ConfigError::MissingName),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(wrong("name", "a string")),
        };
        if !valid_network_name(&name) {
            return Err(ConfigError::InvalidName(name));
        }
        let cni_version = opt_string(&top, "cniVersion")?;
        let cni_versions = match top.get("cniVersions") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| wrong("cniVersions", "a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(wrong("cniVersions", "a list of strings")),
        };
        let disable_check = loose_bool(&top, "disableCheck")?;
        let disable_gc = loose_bool(&top, "disableGC")?;
        let load_only_inlined_plugins = loose_bool(&top, "loadOnlyInlinedPlugins")?;

        let (plugins, from_single_config) = match top.remove("plugins") {
            Some(Value::Array(items)) => {
                let plugins = items
                    .into_iter()
                    .map(|p| match p {
                        Value::Object(raw) => Ok(PluginConfig { raw }),
                        _ => Err(wrong("plugins", "a list of objects")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (plugins, false)
            }
            Some(Value::Null) | None if top.contains_key("type") => {
                (vec![PluginConfig { raw: top }], true)
            }
            Some(Value::Null) | None if load_only_inlined_plugins => {
                return Err(ConfigError::InlinedWithoutPlugins(name));
            }
            Some(Value::Null) | None => return Err(ConfigError::NoPlugins(name)),
            Some(_) => return Err(wrong("plugins", "a list of objects")),
        };
        if plugins.is_empty() {
            return Err(ConfigError::NoPlugins(name));
        }
        for (index, plugin) in plugins.iter().enumerate() {
            match plugin.raw.get("type") {
                Some(Value::String(t)) if !t.is_empty() => check_binary_name(t)?,
                Some(Value::String(_)) | None | Some(Value::Null) => {
                    return Err(ConfigError::MissingType {
                        network: name.clone(),
                        index,
                    });
                }
                Some(_) => return Err(wrong("type", "a string")),
            }
            if let Some(ipam) = plugin.raw.get("ipam").filter(|v| !v.is_null()) {
                match ipam.get("type") {
                    Some(Value::String(t)) => check_binary_name(t)?,
                    None | Some(Value::Null) => {}
                    Some(_) => return Err(wrong("ipam.type", "a string")),
                }
            }
        }
        let list = Self {
            name,
            cni_version,
            cni_versions,
            disable_check,
            disable_gc,
            load_only_inlined_plugins,
            plugins,
            from_single_config,
        };
        list.negotiated_version()?;
        Ok(list)
    }

    /// The version this list runs with (C7), or an error naming the unsupported version (C37).
    pub fn negotiated_version(&self) -> Result<&'static str, ConfigError> {
        version::negotiate(&self.cni_version, &self.cni_versions).ok_or_else(|| {
            ConfigError::UnsupportedVersion {
                network: self.name.clone(),
                version: if self.cni_version.is_empty() {
                    version::IMPLICIT.into()
                } else {
                    self.cni_version.clone()
                },
                supported: version::SUPPORTED.join(", "),
            }
        })
    }

    /// The JSON form, for storing in a record: a conflist (single configs are stored as the list they became).
    pub fn to_value(&self) -> Value {
        let mut top = Map::new();
        if !self.cni_version.is_empty() {
            top.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        }
        if !self.cni_versions.is_empty() {
            top.insert(
                "cniVersions".into(),
                self.cni_versions
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            );
        }
        top.insert("name".into(), Value::String(self.name.clone()));
        for (key, set) in [
            ("disableCheck", self.disable_check),
            ("disableGC", self.disable_gc),
            ("loadOnlyInlinedPlugins", self.load_only_inlined_plugins),
        ] {
            if set {
                top.insert(key.into(), Value::Bool(true));
            }
        }
        top.insert(
            "plugins".into(),
            self.plugins
                .iter()
                .map(|p| Value::Object(p.raw.clone()))
                .collect(),
        );
        Value::Object(top)
    }

    /// Sets a top-level key in every plugin of the list (what Multus does with `deviceID`), replacing what the
    /// config said.
    pub fn set_in_every_plugin(&mut self, key: &str, value: Value) {
        for plugin in &mut self.plugins {
            plugin.raw.insert(key.to_owned(), value.clone());
        }
    }

    /// True when at least one plugin declares the capability (the R18–R36 check).
    pub fn any_plugin_has_capability(&self, name: &str) -> bool {
        self.plugins.iter().any(|p| p.has_capability(name))
    }

    /// Builds the stdin config for plugin `index` (B.7): the plugin object untouched except that `cniVersion` and
    /// `name` are set to the list's, `runtimeConfig` holds only the declared capabilities that have a value (and is
    /// left out when empty), `args` gets the extra args merged in (extras win), and `prevResult` is set when given.
    /// `capabilities` is left in, as libcni does; plugins tolerate it (C51).
    pub fn request_config(
        &self,
        index: usize,
        cni_version: &str,
        extras: &RequestExtras<'_>,
    ) -> Value {
        let plugin = &self.plugins[index];
        let mut conf = plugin.raw.clone();
        conf.insert("cniVersion".into(), Value::String(cni_version.to_owned()));
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.remove("runtimeConfig");
        conf.remove("prevResult");
        if let Some(args) = extras.capability_args {
            let runtime: Map<String, Value> = args
                .iter()
                .filter(|(cap, _)| plugin.has_capability(cap))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !runtime.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(runtime));
            }
        }
        if let Some(extra) = extras.cni_args.filter(|a| !a.is_empty()) {
            let args = conf
                .entry("args")
                .or_insert_with(|| Value::Object(Map::new()));
            if !args.is_object() {
                *args = Value::Object(Map::new());
            }
            let args = args.as_object_mut().expect("just made an object");
            let cni = args
                .entry("cni")
                .or_insert_with(|| Value::Object(Map::new()));
            if !cni.is_object() {
                *cni = Value::Object(Map::new());
            }
            let cni = cni.as_object_mut().expect("just made an object");
            for (k, v) in extra {
                cni.insert(k.clone(), v.clone());
            }
        }
        if let Some(prev) = extras.prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        Value::Object(conf)
    }
}

fn wrong(field: &str, expected: &'static str) -> ConfigError {
    ConfigError::WrongType {
        field: field.into(),
        expected,
    }
}

fn opt_string(map: &Map<String, Value>, key: &str) -> Result<String, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(wrong(key, "a string")),
    }
}

/// A boolean that libcni also accepts as the strings "true"/"false".
fn loose_bool(map: &Map<String, Value>, key: &str) -> Result<bool, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(wrong(key, "a boolean")),
    }
}

/// C2: starts with an ASCII letter or digit, then letters, digits, `_`, `.` and `-`.
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Meta-plugins: Plexus itself (the two binaries the installer puts in binDir: `plexus`, and thick mode's
/// `plexus-shim`, which hands its stdin to the node daemon), and the Multus binaries it replaces. No
/// network's plugin (`type`, a conflist member's `type`, `ipam.type`) may be one: a meta-plugin reads its own
/// config (binary dirs, credentials, record and log paths) from its stdin, which would then be the network author's.
pub const META_PLUGINS: &[&str] = &["plexus", "plexus-shim", "multus", "multus-shim"];

/// C3 plus Plexus's security rules: a plugin `type` is a bare file name, never a path, and never a meta-plugin.
pub fn check_binary_name(name: &str) -> Result<(), ConfigError> {
    let unsafe_name =
        name.is_empty() || name.contains(['/', '\\', '\0']) || name.contains("..") || name == ".";
    if unsafe_name {
        Err(ConfigError::UnsafeType(name.to_owned()))
    } else if META_PLUGINS.contains(&name) {
        Err(ConfigError::MetaPlugin(name.to_owned()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(v: Value) -> Result<NetworkConfigList, ConfigError> {
        NetworkConfigList::from_value(v)
    }

    #[test]
    fn single_config_becomes_a_one_plugin_list() {
        let l = list(json!({"cniVersion":"0.3.1","name":"a","type":"bridge","bridge":"br0","ipam":{"type":"host-local"}}))
            .unwrap();
        assert!(l.from_single_config);
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0].plugin_type(), "bridge");
        assert_eq!(l.plugins[0].ipam_type(), Some("host-local"));
        assert_eq!(l.negotiated_version().unwrap(), "0.3.1");
    }

    #[test]
    fn conflist_keeps_unknown_fields_and_order() {
        let text = br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"macvlan","zeta":1,"alpha":{"x":[1,2.5,"s"]},"master":"eth0"}]}"#;
        let l = NetworkConfigList::parse(text).unwrap();
        let conf = l.request_config(0, "1.0.0", &RequestExtras::default());
        assert_eq!(
            serde_json::to_string(&conf).unwrap(),
            r#"{"type":"macvlan","zeta":1,"alpha":{"x":[1,2.5,"s"]},"master":"eth0","cniVersion":"1.0.0","name":"n"}"#
        );
    }

    #[test]
    fn names_and_types_are_checked() {
        assert_eq!(
            list(json!({"type":"bridge"})),
            Err(ConfigError::MissingName)
        );
        assert!(matches!(
            list(json!({"name":"-x","type":"bridge"})),
            Err(ConfigError::InvalidName(_))
        ));
        assert!(matches!(
            list(json!({"name":"a b","type":"bridge"})),
            Err(ConfigError::InvalidName(_))
        ));
        for bad in [
            "../bridge",
            "/usr/bin/bridge",
            "a/b",
            "..",
            ".",
            "a\\b",
            "x..y",
        ] {
            assert_eq!(
                list(json!({"name":"n","cniVersion":"1.0.0","type":bad})),
                Err(ConfigError::UnsafeType(bad.into())),
                "{bad}"
            );
        }
        assert!(matches!(
            list(json!({"name":"n","cniVersion":"1.0.0","type":"bridge","ipam":{"type":"../x"}})),
            Err(ConfigError::UnsafeType(_))
        ));
        // A meta-plugin as the type, a conflist member, or IPAM: its config would come from the network's author.
        for nested in [
            json!({"name":"n","cniVersion":"1.0.0","type":"plexus","binDir":"/tmp","delegates":[]}),
            json!({"name":"n","cniVersion":"1.0.0","plugins":[{"type":"bridge"},{"type":"multus"}]}),
            json!({"name":"n","cniVersion":"1.0.0","type":"bridge","ipam":{"type":"multus-shim"}}),
            json!({"name":"n","cniVersion":"1.0.0","plugins":[{"type":"plexus-shim","daemonSocketDir":"/run/plexus"}]}),
        ] {
            assert!(
                matches!(list(nested.clone()), Err(ConfigError::MetaPlugin(_))),
                "{nested}"
            );
        }
        assert!(check_binary_name("plexus-like").is_ok());
        assert!(matches!(
            list(json!({"name":"n","cniVersion":"1.0.0","plugins":[{"ipam":{}}]})),
            Err(ConfigError::MissingType { .. })
        ));
        assert!(matches!(
            list(json!({"name":"n","plugins":[]})),
            Err(ConfigError::NoPlugins(_))
        ));
        assert!(matches!(
            list(json!({"name":"n","loadOnlyInlinedPlugins":true})),
            Err(ConfigError::InlinedWithoutPlugins(_))
        ));
    }

    #[test]
    fn unsupported_version_is_refused() {
        assert!(matches!(
            list(json!({"name":"n","cniVersion":"3.0.0","type":"bridge"})),
            Err(ConfigError::UnsupportedVersion { .. })
        ));
        let l = list(json!({"name":"n","cniVersion":"1.0.0","cniVersions":["1.1.0","7.0.0"],"type":"bridge"})).unwrap();
        assert_eq!(l.negotiated_version().unwrap(), "1.1.0");
    }

    #[test]
    fn loose_booleans() {
        let l =
            list(json!({"name":"n","cniVersion":"1.0.0","disableCheck":"true","type":"bridge"}))
                .unwrap();
        assert!(l.disable_check);
    }

    #[test]
    fn request_config_filters_capabilities_and_merges_args() {
        let l = list(json!({"name":"n","cniVersion":"1.0.0","plugins":[
            {"type":"bridge","args":{"cni":{"keep":1,"over":"nad"}},"runtimeConfig":{"stale":true}},
            {"type":"tuning","capabilities":{"mac":true,"ips":false}}
        ]}))
        .unwrap();
        let caps = json!({"mac":"0a:00:00:00:00:01","ips":["10.0.0.2/24"]});
        let args = json!({"over":"annotation","new":true});
        let prev = json!({"cniVersion":"1.0.0"});
        let extras = RequestExtras {
            capability_args: caps.as_object(),
            cni_args: args.as_object(),
            prev_result: Some(&prev),
        };
        let first = l.request_config(0, "1.0.0", &extras);
        assert!(
            first.get("runtimeConfig").is_none(),
            "no declared capability, no runtimeConfig"
        );
        assert_eq!(
            first["args"]["cni"],
            json!({"keep":1,"over":"annotation","new":true})
        );
        let second = l.request_config(1, "1.0.0", &extras);
        assert_eq!(second["runtimeConfig"], json!({"mac":"0a:00:00:00:00:01"}));
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["name"], "n");
        assert!(l.any_plugin_has_capability("mac"));
        assert!(!l.any_plugin_has_capability("ips"));
    }

    #[test]
    fn round_trips_through_to_value() {
        let l = list(json!({"name":"n","cniVersion":"0.4.0","disableGC":true,"plugins":[{"type":"ptp","mtu":1400}]}))
            .unwrap();
        assert_eq!(NetworkConfigList::from_value(l.to_value()).unwrap(), l);
    }
}
