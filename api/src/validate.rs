//! Validation rules shared by the plugin (annotation parsing, NAD resolution) and the controller's admission webhook.
//!
//! Every rule here is a pure function of its input, so the plugin and the webhook accept and refuse exactly the same
//! things.

use serde_json::Value;

use crate::cni::config::{ConfigError, NetworkConfigList};
use crate::nad::{NadError, NetworkAttachmentDefinition, nad_config};

/// Longest interface name the kernel accepts (`IFNAMSIZ` minus the terminating NUL).
pub const MAX_INTERFACE_NAME_BYTES: usize = 15;

/// Longest DNS-1123 label (namespace names).
pub const MAX_DNS1123_LABEL: usize = 63;

/// Longest DNS-1123 subdomain (Kubernetes object names).
pub const MAX_DNS1123_SUBDOMAIN: usize = 253;

/// The kernel's rule for a network interface name (`dev_valid_name`), which CNI's `ValidateInterfaceName` also
/// applies: 1–15 bytes, not `.` or `..`, and no `/`, `:`, whitespace or NUL anywhere.
///
/// Whitespace is judged with Unicode's definition, a superset of the kernel's ASCII `isspace`, as libcni does.
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_BYTES
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$` without a length limit: the character rule of one DNS-1123 label.
fn dns1123_label_chars(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// A DNS-1123 label: lower-case letters, digits and `-`, starting and ending with a letter or digit, at most 63
/// characters. Namespace names follow this rule.
pub fn valid_dns1123_label(s: &str) -> bool {
    s.len() <= MAX_DNS1123_LABEL && dns1123_label_chars(s)
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters in all. Most Kubernetes object
/// names (an `IPAMClaim`'s, for instance) follow this rule.
pub fn valid_dns1123_subdomain(s: &str) -> bool {
    s.len() <= MAX_DNS1123_SUBDOMAIN && s.split('.').all(dns1123_label_chars)
}

/// A name that can select a NetworkAttachmentDefinition from the networks annotation (SPEC A.2, R6): the DNS-1123
/// label character rule (no dots, since the comma form could not tell them apart from nothing at all and the spec
/// asks for label units), with the 253-character limit of a Kubernetes object name. The spec only *recommends*
/// 63 characters per unit and Kubernetes lets such NADs be created, so a longer name is not refused.
pub fn valid_nad_name(s: &str) -> bool {
    s.len() <= MAX_DNS1123_SUBDOMAIN && dns1123_label_chars(s)
}

pub use crate::nad::MAX_NAD_CONFIG_BYTES;

/// Keys the container runtime fills in (SPEC C5): an admin's config must not set them, at the top of the config or
/// in any plugin. (`args` is reserved too, but a NAD's own `args` are merged with the selection's `cni-args`
/// (R25), so it stays allowed.)
pub const RESERVED_CONFIG_KEYS: &[&str] = &["runtimeConfig"];

/// The key prefix the CNI spec reserves for the runtime (SPEC C5).
pub const RESERVED_KEY_PREFIX: &str = "cni.dev/";

/// Checks a NetworkAttachmentDefinition the way the admission webhook does: the name can be selected from a pod
/// annotation (R6), and a non-empty `spec.config` is a JSON object that, after `name` injection (R9), is a CNI
/// config or config list Plexus can run, whose every plugin `type` (and IPAM `type`) is a bare binary name.
///
/// Returns every problem found, one sentence each, so the webhook can show them all at once.
pub fn validate_nad(nad: &NetworkAttachmentDefinition) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let name = nad.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        problems.push("metadata.name is missing".to_owned());
    } else if !valid_nad_name(name) {
        problems.push(format!(
            "metadata.name {name:?} cannot be selected from a pod: it must be lower-case letters, digits and '-', \
             starting and ending with a letter or digit (DNS-1123 label), at most {MAX_DNS1123_SUBDOMAIN} characters"
        ));
    }
    match nad_config(name, nad.spec.config.as_deref()) {
        Ok(None) => {}
        Ok(Some(config)) => {
            problems.extend(reserved_key_problems(&config));
            if let Err(e) = NetworkConfigList::from_value(config) {
                problems.push(config_problem(&e));
            }
        }
        Err(e) => problems.push(nad_problem(&e)),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Warnings for a NAD that is valid but probably not what its author meant (the webhook returns them to `kubectl`):
/// a CNI `name` other than the object's name (R10: allowed, but the network-status and the on-disk lookup then
/// disagree about the network's name).
pub fn nad_warnings(nad: &NetworkAttachmentDefinition) -> Vec<String> {
    let name = nad.metadata.name.as_deref().unwrap_or_default();
    let mut warnings = Vec::new();
    if let Ok(Some(config)) = nad_config(name, nad.spec.config.as_deref())
        && let Some(cni_name) = config.get("name").and_then(Value::as_str)
        && cni_name != name
    {
        warnings.push(format!(
            "spec.config \"name\" is {cni_name:?} but the object is named {name:?}; the two should be the same (R10)"
        ));
    }
    warnings
}

/// Reserved keys (C5) set in a config: at the top, or in `plugins[i]`.
fn reserved_key_problems(config: &Value) -> Vec<String> {
    let reserved =
        |key: &str| RESERVED_CONFIG_KEYS.contains(&key) || key.starts_with(RESERVED_KEY_PREFIX);
    let mut problems = Vec::new();
    let mut check = |object: &Value, path: &str| {
        if let Some(map) = object.as_object() {
            for key in map.keys().filter(|k| reserved(k)) {
                problems.push(format!(
                    "spec.config{path} sets {key:?}, a key the container runtime reserves (CNI spec); remove it"
                ));
            }
        }
    };
    check(config, "");
    if let Some(plugins) = config.get("plugins").and_then(Value::as_array) {
        for (i, plugin) in plugins.iter().enumerate() {
            check(plugin, &format!(".plugins[{i}]"));
        }
    }
    problems
}

fn config_problem(e: &ConfigError) -> String {
    format!("spec.config is not a usable CNI config: {e}")
}

fn nad_problem(e: &NadError) -> String {
    match e {
        NadError::InvalidJson { reason, .. } => {
            format!("spec.config is not valid JSON: {reason}")
        }
        NadError::NotAnObject { found, .. } => {
            format!("spec.config must be a JSON object, not {found}")
        }
        NadError::TooLarge { size, .. } => {
            format!("spec.config is {size} bytes, more than the limit of {MAX_NAD_CONFIG_BYTES}")
        }
    }
}

/// A short English name for the kind of a JSON value, for error messages.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nad::NetworkAttachmentDefinitionSpec;

    #[test]
    fn interface_names_follow_the_kernel_rule() {
        for good in [
            "eth0",
            "net1",
            "eth0.1",
            "net_1",
            "Eth1",
            "a",
            "123456789012345",
            "veth-é",
        ] {
            assert!(valid_interface_name(good), "{good:?} should be valid");
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\u{a0}b",
            "a\0b",
            "ééééééééé",
        ] {
            assert!(!valid_interface_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn dns1123_rules() {
        for good in ["a", "net-a", "0", "a-0-b", &"a".repeat(63)] {
            assert!(valid_dns1123_label(good), "{good:?}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a b", &"a".repeat(64)] {
            assert!(!valid_dns1123_label(bad), "{bad:?}");
        }
        assert!(valid_dns1123_subdomain("pod-1.net-a.eth1"));
        assert!(!valid_dns1123_subdomain("a..b"));
        assert!(!valid_dns1123_subdomain(".a"));
        assert!(!valid_dns1123_subdomain(""));
        assert!(valid_nad_name(&"a".repeat(70)));
        assert!(!valid_nad_name(&"a".repeat(254)));
        assert!(!valid_nad_name("a.b"));
    }

    fn nad(name: &str, config: Option<&str>) -> NetworkAttachmentDefinition {
        NetworkAttachmentDefinition::new(
            name,
            NetworkAttachmentDefinitionSpec {
                config: config.map(str::to_owned),
            },
        )
    }

    #[test]
    fn validate_nad_accepts_good_ones() {
        assert_eq!(validate_nad(&nad("storage-net", None)), Ok(()));
        assert_eq!(validate_nad(&nad("storage-net", Some(""))), Ok(()));
        assert_eq!(
            validate_nad(&nad(
                "storage-net",
                Some(
                    r#"{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","master":"eth1","ipam":{"type":"host-local"}}]}"#
                )
            )),
            Ok(())
        );
        assert_eq!(
            validate_nad(&nad(
                "a",
                Some(r#"{"cniVersion":"0.3.1","name":"other","type":"bridge"}"#)
            )),
            Ok(()),
            "a CNI name that differs from the NAD name is allowed (R10)"
        );
    }

    #[test]
    fn nad_warnings_name_mismatch_only() {
        assert!(nad_warnings(&nad("a", None)).is_empty());
        assert!(nad_warnings(&nad("a", Some(r#"{"type":"bridge"}"#))).is_empty());
        assert!(nad_warnings(&nad("a", Some(r#"{"name":"a","type":"bridge"}"#))).is_empty());
        let w = nad_warnings(&nad("a", Some(r#"{"name":"b","type":"bridge"}"#)));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("\"b\"") && w[0].contains("(R10)"), "{w:?}");
    }

    #[test]
    fn validate_nad_reports_every_problem() {
        let problems = validate_nad(&nad("Bad_Name", Some("{not json"))).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("\"Bad_Name\""), "{problems:?}");
        assert!(problems[1].contains("not valid JSON"), "{problems:?}");

        let problems = validate_nad(&nad("a.b", None)).unwrap_err();
        assert!(problems[0].contains("cannot be selected"), "{problems:?}");

        let problems = validate_nad(&nad("a", Some("[1]"))).unwrap_err();
        assert!(
            problems[0].contains("JSON object, not a list"),
            "{problems:?}"
        );

        let problems = validate_nad(&nad(
            "a",
            Some(r#"{"cniVersion":"1.0.0","type":"../../bin/sh"}"#),
        ))
        .unwrap_err();
        assert!(problems[0].contains("bare binary name"), "{problems:?}");

        let problems = validate_nad(&nad(
            "a",
            Some(r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"/opt/x"}}"#),
        ))
        .unwrap_err();
        assert!(problems[0].contains("bare binary name"), "{problems:?}");

        let problems =
            validate_nad(&nad("a", Some(r#"{"cniVersion":"1.0.0","plugins":[]}"#))).unwrap_err();
        assert!(problems[0].contains("no plugins"), "{problems:?}");

        let problems = validate_nad(&nad(
            "a",
            Some(r#"{"cniVersion":"1.0.0","runtimeConfig":{},"plugins":[{"type":"bridge","cni.dev/x":1}]}"#),
        ))
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("spec.config sets \"runtimeConfig\""),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("spec.config.plugins[0] sets \"cni.dev/x\""),
            "{problems:?}"
        );

        let big = format!(
            r#"{{"cniVersion":"1.0.0","type":"bridge","pad":"{}"}}"#,
            "x".repeat(MAX_NAD_CONFIG_BYTES)
        );
        let problems = validate_nad(&nad("a", Some(&big))).unwrap_err();
        assert!(problems[0].contains("more than the limit"), "{problems:?}");

        let mut unnamed = nad("a", None);
        unnamed.metadata.name = None;
        assert_eq!(
            validate_nad(&unnamed),
            Err(vec!["metadata.name is missing".to_owned()])
        );
    }
}
