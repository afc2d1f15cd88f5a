//! The admission rules for a whole NetworkAttachmentDefinition, which the webhook applies at `kubectl apply` and the
//! reconciler reports in the NAD's status: the name can be selected from a pod, and the config is one the plugin can
//! run (the plugin reads NADs through [`nad_config`] and [`NetworkConfigList::from_value`], the same functions).

use serde_json::Value;

use super::{
    MAX_NAD_CONFIG_BYTES, NadError, NetworkAttachmentDefinition, RESOURCE_NAME_ANNOTATION,
    nad_config,
};
use crate::cni::config::{ConfigError, NetworkConfigList};
use crate::validate::{MAX_DNS1123_SUBDOMAIN, valid_nad_name};

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
    let resource_name = nad
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESOURCE_NAME_ANNOTATION));
    if let Err(e) = crate::devices::resource_name(name, resource_name.map(String::as_str)) {
        problems.push(format!(
            "metadata.annotations[{RESOURCE_NAME_ANNOTATION:?}]: {e}"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nad::NetworkAttachmentDefinitionSpec;

    #[test]
    fn a_resource_name_that_is_not_a_qualified_name_is_refused() {
        let mut n = nad("sriov", None);
        assert!(validate_nad(&n).is_ok());
        n.metadata.annotations = Some(
            [(
                RESOURCE_NAME_ANNOTATION.to_owned(),
                "intel.com/sriov_vf".to_owned(),
            )]
            .into(),
        );
        assert!(validate_nad(&n).is_ok());
        n.metadata.annotations = Some(
            [(
                RESOURCE_NAME_ANNOTATION.to_owned(),
                "../../etc/x".to_owned(),
            )]
            .into(),
        );
        let problems = validate_nad(&n).unwrap_err();
        assert!(problems[0].contains("resourceName"), "{problems:?}");
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
