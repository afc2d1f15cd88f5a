//! The NetworkAttachmentDefinition custom resource (SPEC A.2) and how one turns into a delegate config (A.3).
//!
//! The CRD has exactly one field, `spec.config`: the JSON text of a CNI config or config list (R3). Both `spec` and
//! `config` are optional, because a NAD without a config names a network that is configured on disk (R4), and such
//! NADs are common in Multus clusters (`spec` is often left out altogether).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::config::NetworkConfigList;
use crate::validate::json_kind;

mod review;
pub use review::{RESERVED_CONFIG_KEYS, RESERVED_KEY_PREFIX, nad_warnings, validate_nad};

/// NAD annotation tying the network to a device-plugin resource (Multus convention, SPEC A.12).
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

// The spec of a NetworkAttachmentDefinition: `config`, the JSON text of one CNI config or config list. Absent or
// empty means "the on-disk config whose `name` is the NAD's name" (R4, R7).
//
// (A plain comment, not a doc comment: schemars treats the type as a transparent `Option<SpecSchema>` only while
// the type carries no schema metadata, and that is what keeps `spec` out of the CRD's `required` list.)
#[derive(
    CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq,
)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    namespaced,
    plural = "network-attachment-definitions",
    singular = "network-attachment-definition",
    shortname = "net-attach-def",
    status = "NetworkAttachmentDefinitionStatus",
    printcolumn(
        name = "VALID",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status",
        description = "Whether spec.config is a network Plexus can attach (set by plexus-controller)"
    ),
    printcolumn(
        name = "PODS",
        type_ = "integer",
        json_path = ".status.attachedPods",
        description = "Pods whose network-status lists this network (set by plexus-controller)"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "A network a pod can attach to: a CNI config or config list (`spec.config`), or the name of one on disk."
)]
#[serde(from = "Option<SpecSchema>")]
#[schemars(with = "Option<SpecSchema>")]
pub struct NetworkAttachmentDefinitionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// The network's CNI configuration. Only `config` is defined.
//
// What a NAD's `spec` looks like on the wire; a missing or `null` spec reads as an empty one.
#[derive(JsonSchema, Deserialize, Default)]
struct SpecSchema {
    /// JSON text of a CNI network config or config list. When absent or empty, the network is the on-disk CNI
    /// config whose "name" equals this object's name.
    #[serde(default)]
    config: Option<String>,
}

impl From<Option<SpecSchema>> for NetworkAttachmentDefinitionSpec {
    fn from(spec: Option<SpecSchema>) -> Self {
        Self {
            config: spec.unwrap_or_default().config,
        }
    }
}

/// The condition type that says whether a NAD's `spec.config` is a network Plexus can attach.
pub const VALID_CONDITION: &str = "Valid";

/// What plexus-controller reports about a NAD (the `status` subresource; Multus neither reads nor writes it, so a
/// NAD written for Multus applies unchanged).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachmentDefinitionStatus {
    /// `Valid`: True when `spec.config` is empty (an on-disk network) or a CNI config Plexus can run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NadCondition>,
    /// The `metadata.generation` these conditions were computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many pods' network-status lists this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_pods: Option<u32>,
}

/// One condition (of a NAD, of an IPAMClaim), in the shape of Kubernetes' `metav1.Condition`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NadCondition {
    /// The condition's name, e.g. `Valid`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word saying why.
    #[serde(default)]
    pub reason: String,
    /// A sentence for people.
    #[serde(default)]
    pub message: String,
    /// The metadata.generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Largest `spec.config` Plexus uses, in bytes: the webhook refuses a larger one and the plugin and the daemon refuse
/// to read it ([`nad_config`]). A CNI config is a few hundred bytes to a few KiB; the limit keeps a NAD far below
/// etcd's object limit and bounds the work every ADD does to parse it.
pub const MAX_NAD_CONFIG_BYTES: usize = 64 * 1024;

/// Why a NAD's `spec.config` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NadError {
    #[error("NetworkAttachmentDefinition {nad:?}: spec.config is not valid JSON: {reason}")]
    InvalidJson { nad: String, reason: String },
    #[error("NetworkAttachmentDefinition {nad:?}: spec.config must be a JSON object, not {found}")]
    NotAnObject { nad: String, found: &'static str },
    #[error(
        "NetworkAttachmentDefinition {nad:?}: spec.config is {size} bytes, more than the limit of {limit}",
        limit = MAX_NAD_CONFIG_BYTES
    )]
    TooLarge { nad: String, size: usize },
}

/// The delegate config a NAD's `spec.config` holds (R7 step 1), with `name` set to the NAD's name when it is
/// missing, `null` or `""` (R9). Returns `Ok(None)` when the config is absent, empty or only whitespace: the caller
/// then looks on disk (R4, R7 steps 2–3; see [`pick_on_disk_config`]).
///
/// Only the size ([`MAX_NAD_CONFIG_BYTES`], before anything is parsed)
/// and the JSON are checked here; [`NetworkConfigList::from_value`] checks that it is a CNI config. The webhook and
/// the plugin both read NADs through this function, so the size cap holds on the node whatever the webhook did.
pub fn nad_config(nad_name: &str, config: Option<&str>) -> Result<Option<Value>, NadError> {
    if let Some(size) = config
        .map(str::len)
        .filter(|&size| size > MAX_NAD_CONFIG_BYTES)
    {
        return Err(NadError::TooLarge {
            nad: nad_name.to_owned(),
            size,
        });
    }
    let Some(text) = config.filter(|c| !c.trim().is_empty()) else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(text).map_err(|e| NadError::InvalidJson {
        nad: nad_name.to_owned(),
        reason: e.to_string(),
    })?;
    let Value::Object(mut map) = value else {
        return Err(NadError::NotAnObject {
            nad: nad_name.to_owned(),
            found: json_kind(&value),
        });
    };
    let unnamed = match map.get("name") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    if unnamed {
        map.insert("name".into(), Value::String(nad_name.to_owned()));
    }
    Ok(Some(Value::Object(map)))
}

/// The on-disk config chosen for a NAD (R7 steps 2–3).
#[derive(Debug, Clone, PartialEq)]
pub struct OnDiskConfig {
    /// The file name it came from.
    pub file: String,
    /// The parsed config; a single config is already a one-plugin list.
    pub config: NetworkConfigList,
    /// The JSON as read.
    pub raw: Value,
}

/// A candidate file that was left out, and why (for the caller to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    pub file: String,
    pub reason: String,
}

/// The result of looking on disk for a NAD's network.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OnDiskSearch {
    /// The config to run, if one matched (`None` means R8: the network request fails).
    pub chosen: Option<OnDiskConfig>,
    /// Files that could not be read as JSON, and files whose `name` matched but which are not a usable CNI config.
    pub skipped: Vec<SkippedFile>,
}

/// Picks the on-disk config for a NAD that has no `spec.config` (R7): among files named `*.conf`, `*.conflist` and
/// `*.json` whose JSON `name` equals `nad_name`, a config list (a file with a `plugins` key) beats a single config,
/// and among files of the same kind the lexically first file name wins. Which kind a file is depends on its
/// content, not on its extension.
///
/// Files that are not JSON objects, and name-matching files that [`NetworkConfigList::from_value`] refuses, are
/// skipped and reported in [`OnDiskSearch::skipped`]; the search goes on without them.
pub fn pick_on_disk_config(nad_name: &str, candidates: &[(String, String)]) -> OnDiskSearch {
    let mut files: Vec<&(String, String)> = candidates
        .iter()
        .filter(|(file, _)| {
            [".conf", ".conflist", ".json"]
                .iter()
                .any(|ext| file.ends_with(ext))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let mut search = OnDiskSearch::default();
    let mut best_single: Option<OnDiskConfig> = None;
    for (file, content) in files {
        let skip = |reason: String| SkippedFile {
            file: file.clone(),
            reason,
        };
        let value: Value = match serde_json::from_str(content) {
            Ok(Value::Object(map)) => Value::Object(map),
            Ok(other) => {
                let found = json_kind(&other);
                search
                    .skipped
                    .push(skip(format!("not a JSON object but {found}")));
                continue;
            }
            Err(e) => {
                search.skipped.push(skip(format!("not valid JSON: {e}")));
                continue;
            }
        };
        if value.get("name").and_then(Value::as_str) != Some(nad_name) {
            continue;
        }
        let is_list = value.get("plugins").is_some_and(|p| !p.is_null());
        if !is_list && best_single.is_some() {
            continue;
        }
        match NetworkConfigList::from_value(value.clone()) {
            Ok(config) => {
                let found = OnDiskConfig {
                    file: file.clone(),
                    config,
                    raw: value,
                };
                if is_list {
                    search.chosen = Some(found);
                    return search;
                }
                best_single = Some(found);
            }
            Err(e) => search.skipped.push(skip(e.to_string())),
        }
    }
    search.chosen = best_single;
    search
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::CustomResourceExt;
    use serde_json::json;

    #[test]
    fn resource_identity() {
        use kube::Resource;
        assert_eq!(NetworkAttachmentDefinition::group(&()), "k8s.cni.cncf.io");
        assert_eq!(NetworkAttachmentDefinition::version(&()), "v1");
        assert_eq!(
            NetworkAttachmentDefinition::plural(&()),
            "network-attachment-definitions"
        );
        assert_eq!(
            NetworkAttachmentDefinition::crd_name(),
            "network-attachment-definitions.k8s.cni.cncf.io"
        );
        assert_eq!(
            NetworkAttachmentDefinition::shortnames(),
            &["net-attach-def"]
        );
        let crd = NetworkAttachmentDefinition::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.singular.as_deref(),
            Some("network-attachment-definition")
        );
    }

    #[test]
    fn crd_schema_has_only_an_optional_string_config() {
        let crd = NetworkAttachmentDefinition::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        assert_eq!(schema.type_.as_deref(), Some("object"));
        assert!(
            schema.required.as_ref().is_none_or(|r| r.is_empty()),
            "spec must not be required: {:?}",
            schema.required
        );
        let spec = &schema.properties.as_ref().unwrap()["spec"];
        assert_eq!(spec.type_.as_deref(), Some("object"));
        let props = spec.properties.as_ref().unwrap();
        assert_eq!(props.len(), 1);
        assert_eq!(props["config"].type_.as_deref(), Some("string"));
        assert!(spec.required.as_ref().is_none_or(|r| r.is_empty()));
    }

    #[test]
    fn crd_has_a_status_subresource_and_printer_columns() {
        let crd = NetworkAttachmentDefinition::crd();
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<(&str, &str)> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("VALID", ".status.conditions[?(@.type==\"Valid\")].status"),
                ("PODS", ".status.attachedPods"),
                ("AGE", ".metadata.creationTimestamp")
            ]
        );
        let schema = version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let status = &schema.properties.as_ref().unwrap()["status"];
        let props = status.properties.as_ref().unwrap();
        assert!(props.contains_key("conditions") && props.contains_key("attachedPods"));
    }

    #[test]
    fn status_round_trips_and_a_multus_nad_has_none() {
        let multus: NetworkAttachmentDefinition = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "macvlan-conf"},
            "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"type\":\"macvlan\"}"}
        }))
        .unwrap();
        assert_eq!(multus.status, None);
        let status = json!({
            "conditions": [{"type": "Valid", "status": "True", "reason": "Valid", "message": "ok",
                            "observedGeneration": 2, "lastTransitionTime": "2026-11-28T10:00:00Z"}],
            "observedGeneration": 2, "attachedPods": 3
        });
        let parsed: NetworkAttachmentDefinitionStatus =
            serde_json::from_value(status.clone()).unwrap();
        assert_eq!(parsed.attached_pods, Some(3));
        assert_eq!(parsed.conditions[0].type_, VALID_CONDITION);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), status);
    }

    #[test]
    fn reads_nads_with_and_without_spec() {
        let with: NetworkAttachmentDefinition = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"config": "{\"type\":\"bridge\"}"}
        }))
        .unwrap();
        assert_eq!(with.spec.config.as_deref(), Some("{\"type\":\"bridge\"}"));
        for spec in [json!({}), json!(null)] {
            let nad: NetworkAttachmentDefinition = serde_json::from_value(json!({
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "a"}, "spec": spec
            }))
            .unwrap();
            assert_eq!(nad.spec.config, None);
        }
        let without: NetworkAttachmentDefinition = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "macvlan-conf-2"}
        }))
        .unwrap();
        assert_eq!(without.spec.config, None);
        let back = serde_json::to_value(&without).unwrap();
        assert_eq!(back["spec"], json!({}));
    }

    #[test]
    fn nad_config_injects_the_name() {
        assert_eq!(nad_config("a", None), Ok(None));
        assert_eq!(nad_config("a", Some("")), Ok(None));
        assert_eq!(nad_config("a", Some(" \n")), Ok(None));
        for text in [
            r#"{"type":"bridge"}"#,
            r#"{"name":"","type":"bridge"}"#,
            r#"{"name":null,"type":"bridge"}"#,
        ] {
            let v = nad_config("storage-net", Some(text)).unwrap().unwrap();
            assert_eq!(v["name"], "storage-net", "{text}");
            assert_eq!(v["type"], "bridge");
        }
        let v = nad_config("a", Some(r#"{"name":"other","type":"bridge"}"#))
            .unwrap()
            .unwrap();
        assert_eq!(v["name"], "other", "a name that is set is kept (R10)");
        // Key order is kept, name is appended at the end when injected.
        let v = nad_config("a", Some(r#"{"cniVersion":"1.0.0","plugins":[]}"#))
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"cniVersion":"1.0.0","plugins":[],"name":"a"}"#
        );
    }

    #[test]
    fn nad_config_errors_name_the_nad() {
        let e = nad_config("storage-net", Some("{oops")).unwrap_err();
        assert!(matches!(e, NadError::InvalidJson { ref nad, .. } if nad == "storage-net"));
        assert!(e.to_string().contains("\"storage-net\""), "{e}");
        let e = nad_config("x", Some("\"str\"")).unwrap_err();
        assert_eq!(
            e,
            NadError::NotAnObject {
                nad: "x".into(),
                found: "a string"
            }
        );
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect()
    }

    const SINGLE: &str = r#"{"cniVersion":"0.3.1","name":"net-a","type":"bridge"}"#;
    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"net-a","plugins":[{"type":"macvlan"}]}"#;

    #[test]
    fn conflist_beats_single_config_whatever_the_file_order() {
        let found = pick_on_disk_config(
            "net-a",
            &files(&[("00-a.conf", SINGLE), ("99-a.conflist", LIST)]),
        );
        let chosen = found.chosen.unwrap();
        assert_eq!(chosen.file, "99-a.conflist");
        assert!(!chosen.config.from_single_config);
        assert!(found.skipped.is_empty());
    }

    #[test]
    fn kind_comes_from_content_not_extension() {
        let found = pick_on_disk_config(
            "net-a",
            &files(&[("10-a.conflist", SINGLE), ("20-a.json", LIST)]),
        );
        assert_eq!(found.chosen.unwrap().file, "20-a.json");
    }

    #[test]
    fn lexical_order_among_equals_and_extension_filter() {
        let found = pick_on_disk_config(
            "net-a",
            &files(&[
                ("20-b.conf", SINGLE),
                ("10-a.conf", SINGLE),
                ("05-x.yaml", LIST),
                ("06-x.conflist.bak", LIST),
            ]),
        );
        assert_eq!(found.chosen.unwrap().file, "10-a.conf");
        let found = pick_on_disk_config(
            "net-a",
            &files(&[("b.conflist", LIST), ("a.conflist", LIST)]),
        );
        assert_eq!(found.chosen.unwrap().file, "a.conflist");
    }

    #[test]
    fn unparsable_and_broken_files_are_skipped_and_reported() {
        let found = pick_on_disk_config(
            "net-a",
            &files(&[
                ("00-broken.conf", "{not json"),
                ("01-array.json", "[1]"),
                ("02-other.conf", r#"{"name":"net-b","type":"bridge"}"#),
                ("03-notype.conflist", r#"{"name":"net-a","plugins":[{}]}"#),
                ("04-notype.conf", r#"{"name":"net-a"}"#),
                ("05-good.conf", SINGLE),
            ]),
        );
        assert_eq!(found.chosen.unwrap().file, "05-good.conf");
        let skipped: Vec<&str> = found.skipped.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(
            skipped,
            [
                "00-broken.conf",
                "01-array.json",
                "03-notype.conflist",
                "04-notype.conf"
            ]
        );
        assert!(found.skipped[0].reason.contains("not valid JSON"));
    }

    #[test]
    fn nothing_matches() {
        let found = pick_on_disk_config("net-z", &files(&[("a.conf", SINGLE)]));
        assert_eq!(found, OnDiskSearch::default());
    }
}
