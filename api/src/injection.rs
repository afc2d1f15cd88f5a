//! Resource injection: the JSON patch a mutating webhook gives a pod so that it requests the devices its networks
//! need, with network-resources-injector's (NRI's) contract, so pods written for NRI get the same result:
//!
//! * for each `k8s.v1.cni.cncf.io/resourceName` the pod's selections need, one device per selection, as a request
//!   and a limit of container 0 (its `requests` and `limits` added as `{}` first when it has none); a resource that
//!   any container already requests or limits is left as it is;
//! * when a resource was needed, the downward-API volume `podnetinfo` (the pod's labels and annotations, those it
//!   has) mounted read-only at `/etc/podnetinfo` in every container, unless already there;
//! * `spec.nodeSelector` merged with each NAD's `k8s.v1.cni.cncf.io/nodeSelector` (`key=value` or `key`).
//!
//! The caller finds the NADs; this module only reads them and the pod. The validating side,
//! [`check_requests`], refuses a pod that requests fewer devices than its selections need.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde::Serialize;
use serde_json::{Value, json};

use crate::devices::{DeviceError, DeviceNeed, needed, resource_name};
use crate::nad::RESOURCE_NAME_ANNOTATION;

/// The NAD annotation naming the node label a pod using the network must be scheduled by (NRI's key).
pub const NODE_SELECTOR_ANNOTATION: &str = "k8s.v1.cni.cncf.io/nodeSelector";
/// The downward-API volume that shows the pod its labels and annotations (NRI's name).
pub const POD_NET_INFO_VOLUME: &str = "podnetinfo";
/// Where that volume is mounted in every container (NRI's path).
pub const POD_NET_INFO_DIR: &str = "/etc/podnetinfo";

/// What resource injection reads from one NAD a pod selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectedNad {
    /// `namespace/name`, for messages.
    pub network: String,
    /// Its `k8s.v1.cni.cncf.io/resourceName`, checked.
    pub resource_name: Option<String>,
    /// Its `k8s.v1.cni.cncf.io/nodeSelector`: a label key and value (`""` for a bare key).
    pub node_selector: Option<(String, String)>,
}

impl SelectedNad {
    /// Reads the NAD's two annotations. A resource name that is not a qualified name and a node selector with more
    /// than one `=` are errors (the second as NRI).
    pub fn from_annotations(
        network: &str,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, InjectionError> {
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let resource_name = resource_name(network, get(RESOURCE_NAME_ANNOTATION))?;
        let node_selector = match get(NODE_SELECTOR_ANNOTATION).map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                let parts: Vec<&str> = text.split('=').collect();
                match parts[..] {
                    [key] => Some((key.trim().to_owned(), String::new())),
                    [key, value] => Some((key.trim().to_owned(), value.trim().to_owned())),
                    _ => {
                        return Err(InjectionError::NodeSelector {
                            network: network.to_owned(),
                            value: text.chars().take(300).collect(),
                        });
                    }
                }
            }
        };
        Ok(Self {
            network: network.to_owned(),
            resource_name,
            node_selector,
        })
    }
}

/// Why a pod cannot be injected or admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectionError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(
        "NAD {network}: annotation {NODE_SELECTOR_ANNOTATION} {value:?} has more than one '=' (it names one label: \
         key=value or key)"
    )]
    NodeSelector { network: String, value: String },
    #[error(
        "pod {pod}: networks {networks} need {needed} device(s) of resource {resource:?}, but the pod's containers \
         request {requested}; request {needed} {resource:?} in the pod's containers"
    )]
    TooFewRequested {
        pod: String,
        resource: String,
        networks: String,
        needed: usize,
        requested: u64,
    },
}

/// One JSON patch (RFC 6902) operation; injection only adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOperation {
    pub op: &'static str,
    pub path: String,
    pub value: Value,
}

fn add(path: String, value: Value) -> PatchOperation {
    PatchOperation {
        op: "add",
        path,
        value,
    }
}

/// A key as one JSON pointer segment: `~` becomes `~0`, `/` becomes `~1` (RFC 6901).
pub fn json_pointer_key(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Whether the pod gets devices through ResourceClaims (DRA): its device networks' resource names are then those of
/// its claimed devices' slice attributes, not extended resources, so nothing is requested for them and their count is
/// left to the node's ADD (`docs/devices.md`).
pub fn uses_resource_claims(spec: &PodSpec) -> bool {
    spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty())
}

/// The devices the pod's selections need, per resource (first-use order).
pub fn device_needs(selected: &[SelectedNad]) -> Vec<DeviceNeed> {
    needed(
        selected
            .iter()
            .map(|s| (s.network.as_str(), s.resource_name.as_deref())),
    )
}

fn has_resource(container: &Container, resource: &str) -> bool {
    container.resources.as_ref().is_some_and(|r| {
        r.requests
            .as_ref()
            .is_some_and(|q| q.contains_key(resource))
            || r.limits.as_ref().is_some_and(|q| q.contains_key(resource))
    })
}

/// The JSON patch that makes `pod` request what its selections (`selected`, one entry per selection, in order)
/// need, as NRI builds it with its default switches: resources, then the volume mounts, then the volume (these three
/// only when a resource is needed), then the node selector (whenever the merged selector is not empty). Empty when
/// there is nothing to add.
pub fn injection_patch(pod: &Pod, selected: &[SelectedNad]) -> Vec<PatchOperation> {
    let mut patch = Vec::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let needs = if uses_resource_claims(&spec) {
        Vec::new()
    } else {
        device_needs(selected)
    };
    if !needs.is_empty() {
        // NRI would fail on a pod without containers; the API server refuses such a pod after admission anyway.
        if let Some(first) = spec.containers.first() {
            let resources = first.resources.clone().unwrap_or_default();
            for (field, present) in [
                ("requests", resources.requests.as_ref()),
                ("limits", resources.limits.as_ref()),
            ] {
                if present.is_none_or(BTreeMap::is_empty) {
                    patch.push(add(
                        format!("/spec/containers/0/resources/{field}"),
                        json!({}),
                    ));
                }
            }
            for need in &needs {
                if spec
                    .containers
                    .iter()
                    .any(|c| has_resource(c, &need.resource))
                {
                    continue;
                }
                let key = json_pointer_key(&need.resource);
                for field in ["requests", "limits"] {
                    patch.push(add(
                        format!("/spec/containers/0/resources/{field}/{key}"),
                        Value::String(need.count().to_string()),
                    ));
                }
            }
        }
        patch.extend(pod_net_info(pod, &spec));
    }
    let mut node_selector = spec.node_selector.clone().unwrap_or_default();
    for (key, value) in selected.iter().filter_map(|s| s.node_selector.as_ref()) {
        node_selector.insert(key.clone(), value.clone());
    }
    if !node_selector.is_empty() {
        patch.push(add("/spec/nodeSelector".into(), json!(node_selector)));
    }
    patch
}

/// The `podnetinfo` mount in every container that lacks it, then the volume unless the pod has it.
fn pod_net_info(pod: &Pod, spec: &PodSpec) -> Vec<PatchOperation> {
    let mut patch = Vec::new();
    let mount =
        json!({"name": POD_NET_INFO_VOLUME, "readOnly": true, "mountPath": POD_NET_INFO_DIR});
    for (i, container) in spec.containers.iter().enumerate() {
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        if mounts.iter().any(|m| m.name == POD_NET_INFO_VOLUME) {
            continue;
        }
        if mounts.is_empty() {
            patch.push(add(format!("/spec/containers/{i}/volumeMounts"), json!([])));
        }
        patch.push(add(
            format!("/spec/containers/{i}/volumeMounts/-"),
            mount.clone(),
        ));
    }
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    if volumes.iter().any(|v| v.name == POD_NET_INFO_VOLUME) {
        return patch;
    }
    if volumes.is_empty() {
        patch.push(add("/spec/volumes".into(), json!([])));
    }
    let mut items = Vec::new();
    for (present, field) in [
        (&pod.metadata.labels, "labels"),
        (&pod.metadata.annotations, "annotations"),
    ] {
        if present.as_ref().is_some_and(|m| !m.is_empty()) {
            items.push(
                json!({"path": field, "fieldRef": {"fieldPath": format!("metadata.{field}")}}),
            );
        }
    }
    let downward = if items.is_empty() {
        json!({})
    } else {
        json!({ "items": items })
    };
    patch.push(add(
        "/spec/volumes/-".into(),
        json!({"name": POD_NET_INFO_VOLUME, "downwardAPI": downward}),
    ));
    patch
}

/// A quantity's value when it is a whole number (`2`, `1k`, `2Ki`, `3e2`, `2000m`); `None` otherwise. Extended
/// resources (devices) only take whole numbers.
pub fn whole_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') || number.len() > 30 {
        return None;
    }
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => (s[1..].parse().ok().filter(|e: &i32| e.abs() <= 40)?, 0),
        _ => return None,
    };
    let mut value: u128 = format!("{int}{frac}").parse().ok()?;
    let mut exp = exp10 - i32::try_from(frac.len()).ok()?;
    while exp < 0 {
        if !value.is_multiple_of(10) {
            return None;
        }
        value /= 10;
        exp += 1;
    }
    for _ in 0..exp {
        value = value.checked_mul(10)?;
    }
    value = value.checked_mul(1u128 << exp2)?;
    u64::try_from(value).ok()
}

/// How many of `resource` the pod's containers request together: each container's request, or its limit when it
/// has no request (the API server makes the request the limit for extended resources). `None` when a quantity is
/// not a whole number (the API server refuses that pod itself).
pub fn requested(spec: &PodSpec, resource: &str) -> Option<u64> {
    let mut total: u64 = 0;
    for container in &spec.containers {
        let Some(resources) = &container.resources else {
            continue;
        };
        let quantity = resources
            .requests
            .as_ref()
            .and_then(|q| q.get(resource))
            .or_else(|| resources.limits.as_ref().and_then(|q| q.get(resource)));
        if let Some(q) = quantity {
            total = total.saturating_add(whole_quantity(&q.0)?);
        }
    }
    Some(total)
}

/// The validating side: a pod whose selections need more devices of a resource than its containers request is
/// refused, naming the resource, the networks and both numbers (the kubelet would give it too few devices, and the
/// ADD would fail on the node).
pub fn check_requests(
    pod: &str,
    spec: &PodSpec,
    selected: &[SelectedNad],
) -> Result<(), InjectionError> {
    if uses_resource_claims(spec) {
        return Ok(());
    }
    for need in device_needs(selected) {
        let Some(requested) = requested(spec, &need.resource) else {
            continue;
        };
        if requested < need.count() as u64 {
            return Err(InjectionError::TooFewRequested {
                pod: pod.to_owned(),
                resource: need.resource.clone(),
                needed: need.count(),
                networks: need.networks.join(", "),
                requested,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRIOV: &str = "intel.com/sriov";

    fn nad(network: &str, annotations: &[(&str, &str)]) -> Result<SelectedNad, InjectionError> {
        let map: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SelectedNad::from_annotations(network, Some(&map))
    }

    fn sriov() -> SelectedNad {
        nad(
            "ns/sriov-a",
            &[
                (RESOURCE_NAME_ANNOTATION, SRIOV),
                (
                    NODE_SELECTOR_ANNOTATION,
                    "feature.node.kubernetes.io/network-sriov.capable = true",
                ),
            ],
        )
        .unwrap()
    }

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    /// The patch as JSON, to compare with NRI's (network-resources-injector's MutateHandler with its default
    /// switches, for the same pod and NADs; its resources come in Go map order, ours in first-use order).
    fn patch_json(pod: &Pod, selected: &[SelectedNad]) -> Value {
        serde_json::to_value(injection_patch(pod, selected)).unwrap()
    }

    #[test]
    fn a_pod_selecting_a_device_network_twice_gets_nris_patch() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"},
                         "annotations": {"k8s.v1.cni.cncf.io/networks": "sriov-a, sriov-a"}},
            "spec": {"containers": [{"name": "app", "image": "i", "resources": {}}]}
        }));
        let nri: Value = serde_json::from_str(
            r#"[
            {"op":"add","path":"/spec/containers/0/resources/requests","value":{}},
            {"op":"add","path":"/spec/containers/0/resources/limits","value":{}},
            {"op":"add","path":"/spec/containers/0/resources/requests/intel.com~1sriov","value":"2"},
            {"op":"add","path":"/spec/containers/0/resources/limits/intel.com~1sriov","value":"2"},
            {"op":"add","path":"/spec/containers/0/volumeMounts","value":[]},
            {"op":"add","path":"/spec/containers/0/volumeMounts/-","value":{"name":"podnetinfo","readOnly":true,"mountPath":"/etc/podnetinfo"}},
            {"op":"add","path":"/spec/volumes","value":[]},
            {"op":"add","path":"/spec/volumes/-","value":{"name":"podnetinfo","downwardAPI":{"items":[
                {"path":"labels","fieldRef":{"fieldPath":"metadata.labels"}},
                {"path":"annotations","fieldRef":{"fieldPath":"metadata.annotations"}}]}}},
            {"op":"add","path":"/spec/nodeSelector","value":{"feature.node.kubernetes.io/network-sriov.capable":"true"}}
        ]"#,
        )
        .unwrap();
        assert_eq!(patch_json(&p, &[sriov(), sriov()]), nri);
    }

    #[test]
    fn what_the_pod_has_is_kept_and_what_it_requests_is_skipped() {
        // Container 0 has requests (cpu) but no limits; container 1 already requests the first resource and has a
        // mount of its own; the pod has a volume and a node selector; no labels.
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": {"k8s.v1.cni.cncf.io/networks": "a, b, c"}},
            "spec": {
                "nodeSelector": {"zone": "1"},
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [
                    {"name": "app", "image": "i", "resources": {"requests": {"cpu": "1"}}},
                    {"name": "side", "image": "i", "resources": {"limits": {"intel.com/sriov": "1"}},
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
                ]
            }
        }));
        let selected = [
            sriov(),
            nad("ns/b", &[(RESOURCE_NAME_ANNOTATION, "example.com/dpdk")]).unwrap(),
            nad("ns/c", &[(NODE_SELECTOR_ANNOTATION, "rack")]).unwrap(),
        ];
        let nri: Value = serde_json::from_str(
            r#"[
            {"op":"add","path":"/spec/containers/0/resources/limits","value":{}},
            {"op":"add","path":"/spec/containers/0/resources/requests/example.com~1dpdk","value":"1"},
            {"op":"add","path":"/spec/containers/0/resources/limits/example.com~1dpdk","value":"1"},
            {"op":"add","path":"/spec/containers/0/volumeMounts","value":[]},
            {"op":"add","path":"/spec/containers/0/volumeMounts/-","value":{"name":"podnetinfo","readOnly":true,"mountPath":"/etc/podnetinfo"}},
            {"op":"add","path":"/spec/containers/1/volumeMounts/-","value":{"name":"podnetinfo","readOnly":true,"mountPath":"/etc/podnetinfo"}},
            {"op":"add","path":"/spec/volumes/-","value":{"name":"podnetinfo","downwardAPI":{"items":[
                {"path":"annotations","fieldRef":{"fieldPath":"metadata.annotations"}}]}}},
            {"op":"add","path":"/spec/nodeSelector","value":{
                "feature.node.kubernetes.io/network-sriov.capable":"true","rack":"","zone":"1"}}
        ]"#,
        )
        .unwrap();
        assert_eq!(patch_json(&p, &selected), nri);
    }

    #[test]
    fn an_existing_podnetinfo_volume_and_mount_are_not_added_again() {
        let p = pod(json!({
            "metadata": {"name": "p", "annotations": {"k8s.v1.cni.cncf.io/networks": "a"}},
            "spec": {
                "volumes": [{"name": "podnetinfo", "emptyDir": {}}],
                "containers": [{"name": "app", "image": "i",
                    "resources": {"requests": {"intel.com/sriov": "1"}, "limits": {"intel.com/sriov": "1"}},
                    "volumeMounts": [{"name": "podnetinfo", "mountPath": "/x"}]}]
            }
        }));
        let only_sriov = SelectedNad {
            node_selector: None,
            ..sriov()
        };
        // The resource is requested already: nothing to add at all (NRI: no operation either).
        assert_eq!(patch_json(&p, &[only_sriov]), json!([]));
    }

    #[test]
    fn without_a_resource_only_the_node_selector_is_added() {
        let p = pod(json!({
            "metadata": {"name": "p", "annotations": {"k8s.v1.cni.cncf.io/networks": "c"}},
            "spec": {"containers": [{"name": "app", "image": "i"}]}
        }));
        let c = nad("ns/c", &[(NODE_SELECTOR_ANNOTATION, "rack=r1")]).unwrap();
        assert_eq!(
            patch_json(&p, &[c]),
            json!([{"op": "add", "path": "/spec/nodeSelector", "value": {"rack": "r1"}}])
        );
        let plain = nad("ns/plain", &[]).unwrap();
        assert_eq!(patch_json(&p, std::slice::from_ref(&plain)), json!([]));
        // A pod without containers (the API server refuses it later) gets no resources, and no panic.
        let empty = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        let ops = injection_patch(&empty, &[sriov(), plain]);
        assert!(ops.iter().all(|o| !o.path.contains("resources")), "{ops:?}");
    }

    /// A DRA pod's devices come from its claims: no extended resource is requested for them and none is counted.
    #[test]
    fn a_pod_with_resource_claims_gets_no_requests_and_no_count() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"resourceClaims": [{"name": "nic", "resourceClaimTemplateName": "nic"}],
                     "containers": [{"name": "app", "resources": {"claims": [{"name": "nic"}]}}]}
        }))
        .unwrap();
        let selected = [nad(
            "ns/dranic",
            &[(RESOURCE_NAME_ANNOTATION, "plexus.test/dra-nic")],
        )
        .unwrap()];
        assert_eq!(injection_patch(&pod, &selected), Vec::new());
        assert!(check_requests("ns/p", pod.spec.as_ref().unwrap(), &selected).is_ok());
    }

    #[test]
    fn nad_annotations_are_hostile_input() {
        let e = nad("ns/x", &[(NODE_SELECTOR_ANNOTATION, "a=b=c")]).unwrap_err();
        assert!(
            e.to_string().contains(
                "ns/x: annotation k8s.v1.cni.cncf.io/nodeSelector \"a=b=c\" has more than one '='"
            ),
            "{e}"
        );
        let e = nad("ns/x", &[(RESOURCE_NAME_ANNOTATION, "../../etc")]).unwrap_err();
        assert!(
            matches!(
                e,
                InjectionError::Device(DeviceError::BadResourceName { .. })
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains(
                "annotation k8s.v1.cni.cncf.io/resourceName \"../../etc\" is not a resource name"
            ),
            "{e}"
        );
        assert_eq!(
            nad("ns/x", &[(NODE_SELECTOR_ANNOTATION, "  ")])
                .unwrap()
                .node_selector,
            None
        );
        assert_eq!(
            SelectedNad::from_annotations("ns/x", None).unwrap(),
            SelectedNad {
                network: "ns/x".into(),
                ..SelectedNad::default()
            }
        );
        assert_eq!(json_pointer_key("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn quantities_count_only_as_whole_numbers() {
        for (text, want) in [
            ("2", Some(2)),
            ("+3", Some(3)),
            ("1k", Some(1000)),
            ("2Ki", Some(2048)),
            ("3e2", Some(300)),
            ("2000m", Some(2)),
            ("1.0", Some(1)),
            ("1.5", None),
            ("1500m", None),
            ("-1", None),
            ("", None),
            ("1x", None),
            ("1e", None),
            ("16Ei", None),
            ("1e40", None),
        ] {
            assert_eq!(whole_quantity(text), want, "{text}");
        }
    }

    #[test]
    fn a_pod_requesting_fewer_devices_than_its_selections_need_is_refused() {
        let spec = |containers: Value| -> PodSpec {
            serde_json::from_value(json!({ "containers": containers })).unwrap()
        };
        let selected = [sriov(), nad("ns/plain", &[]).unwrap(), sriov()];
        let none = spec(json!([{"name": "a"}]));
        let e = check_requests("ns/p", &none, &selected).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pod ns/p: networks ns/sriov-a, ns/sriov-a need 2 device(s) of resource \"intel.com/sriov\", but the \
             pod's containers request 0; request 2 \"intel.com/sriov\" in the pod's containers"
        );
        // Over containers, a request or else a limit.
        let split = spec(json!([
            {"name": "a", "resources": {"requests": {SRIOV: "1"}, "limits": {SRIOV: "1"}}},
            {"name": "b", "resources": {"limits": {SRIOV: "1"}}}
        ]));
        assert_eq!(requested(&split, SRIOV), Some(2));
        assert!(check_requests("ns/p", &split, &selected).is_ok());
        let one = spec(json!([{"name": "a", "resources": {"limits": {SRIOV: "1"}}}]));
        assert!(matches!(
            check_requests("ns/p", &one, &selected),
            Err(InjectionError::TooFewRequested {
                needed: 2,
                requested: 1,
                ..
            })
        ));
        // The injected pod passes.
        let mut injected: Value = json!({"spec": {"containers": [{"name": "a", "resources": {}}]}});
        for op in injection_patch(&pod(injected.clone()), &selected) {
            if let Some(array) = op.path.strip_suffix("/-") {
                let target = injected.pointer_mut(array).unwrap();
                target.as_array_mut().unwrap().push(op.value);
                continue;
            }
            let (parent, key) = op.path.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            let target = injected.pointer_mut(parent).unwrap();
            target.as_object_mut().unwrap().insert(key, op.value);
        }
        let injected: Pod = serde_json::from_value(injected).unwrap();
        assert!(check_requests("ns/p", &injected.spec.unwrap(), &selected).is_ok());
    }
}
