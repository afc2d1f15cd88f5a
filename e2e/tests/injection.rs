//! Resource injection against the real API server: the mutating webhook `e2e/cluster up` registers (as the chart
//! does with `controller.resourceInjection.enabled`) gives a pod that selects a device network the requests and
//! limits of the NAD's `k8s.v1.cni.cncf.io/resourceName`, the `podnetinfo` volume and the NAD's
//! `k8s.v1.cni.cncf.io/nodeSelector`, as network-resources-injector does; the stored pod (`kubectl get -o json`)
//! shows it. The pods stay Pending (no node needs to run them).

#![forbid(unsafe_code)]

use plexus_e2e::*;
use serde_json::{Value, json};

const RESOURCE: &str = "plexus.test/nic";
const MUTATING: &str = "inject.pods.plexus.k8s.cni.cncf.io";
const VALIDATING: &str = "pods.plexus.k8s.cni.cncf.io";

fn device_nad(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns, "annotations": {
            "k8s.v1.cni.cncf.io/resourceName": RESOURCE,
            "k8s.v1.cni.cncf.io/nodeSelector": "plexus.test/nic-node=yes"}},
        "spec": {"config": r#"{"cniVersion":"1.0.0","type":"bridge"}"#}
    })
}

/// A pod with two containers and a label, selecting `networks`; `requested` devices in container 0's limits.
fn pod(ns: &str, name: &str, networks: &str, requested: Option<u32>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "inject"},
                     "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
        "spec": {"containers": [
            {"name": "app", "image": "registry.invalid/app:1"},
            {"name": "side", "image": "registry.invalid/side:1"}
        ]}
    });
    if let Some(n) = requested {
        pod["spec"]["containers"][0]["resources"] = json!({"limits": {RESOURCE: n.to_string()}});
    }
    pod
}

/// `kubectl create`: the stored pod, or the error when refused.
fn create(object: &Value) -> Result<Value, String> {
    let out = kubectl_output(
        &["create", "-o", "json", "-f", "-"],
        Some(&object.to_string()),
    );
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn stored(ns: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl(
        &["get", "pod", "-n", ns, name, "-o", "json"],
        None,
    ))
    .unwrap()
}

fn mounts_podnetinfo(container: &Value) -> bool {
    container["volumeMounts"].as_array().is_some_and(|mounts| {
        mounts.iter().any(|m| {
            m["name"] == "podnetinfo"
                && m["mountPath"] == "/etc/podnetinfo"
                && m["readOnly"] == true
        })
    })
}

/// The NAD created in kube-system, deleted on drop.
struct SystemNad(String);

impl Drop for SystemNad {
    fn drop(&mut self) {
        let _ = kubectl_output(
            &[
                "delete",
                "network-attachment-definitions",
                "-n",
                "kube-system",
                &self.0,
            ],
            None,
        );
    }
}

#[test]
fn a_pod_selecting_a_device_network_twice_is_stored_with_two_devices_podnetinfo_and_the_node_selector()
 {
    let ns = KubeNamespace::new("inject");
    let n = &ns.name;
    kubectl(
        &["apply", "-f", "-"],
        Some(&device_nad(n, "nic").to_string()),
    );
    create(&pod(n, "twice", "nic, nic", None)).expect("the pod is admitted");
    let p = stored(n, "twice");
    let spec = &p["spec"];
    let app = &spec["containers"][0];
    assert_eq!(app["resources"]["requests"][RESOURCE], "2", "{p}");
    assert_eq!(app["resources"]["limits"][RESOURCE], "2", "{p}");
    assert!(
        spec["containers"][1]["resources"].get("requests").is_none(),
        "only container 0 gets the devices: {p}"
    );
    for container in spec["containers"].as_array().unwrap() {
        assert!(mounts_podnetinfo(container), "{container}");
    }
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "podnetinfo")
        .unwrap_or_else(|| panic!("no podnetinfo volume: {p}"));
    let items: Vec<(&str, &str)> = volume["downwardAPI"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap(),
                i["fieldRef"]["fieldPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            ("labels", "metadata.labels"),
            ("annotations", "metadata.annotations")
        ]
    );
    assert_eq!(spec["nodeSelector"], json!({"plexus.test/nic-node": "yes"}));
}

#[test]
fn a_pod_that_requests_its_devices_keeps_its_requests_and_a_missing_nad_is_denied() {
    let ns = KubeNamespace::new("inject-own");
    let n = &ns.name;
    kubectl(
        &["apply", "-f", "-"],
        Some(&device_nad(n, "nic").to_string()),
    );
    // Its own request (a limit; the API server makes the request the limit) is left as it is: not added to.
    create(&pod(n, "own", "nic, nic", Some(2))).expect("the pod is admitted");
    let p = stored(n, "own");
    let containers = p["spec"]["containers"].as_array().unwrap();
    assert_eq!(
        containers[0]["resources"],
        json!({"limits": {RESOURCE: "2"}, "requests": {RESOURCE: "2"}}),
        "{p}"
    );
    assert_eq!(containers[1]["resources"], json!({}), "{p}");

    let err = create(&pod(n, "missing", "nic, gone", None)).expect_err("admitted");
    assert!(
        err.contains(&format!(
            "admission webhook \"{MUTATING}\" denied the request"
        )) && err.contains(&format!(
            "network {n}/gone: no such NetworkAttachmentDefinition"
        )),
        "{err}"
    );
    assert!(
        kubectl_output(&["get", "pod", "-n", n, "missing"], None)
            .status
            .code()
            .is_some_and(|c| c != 0)
    );
}

/// The validating webhook's device count, on pods the mutating webhook leaves short: a pod that requests one device
/// itself (injection skips a resource the pod already requests) and a pod in kube-system (which injection skips, as
/// network-resources-injector). Both are refused naming the resource, the networks and both numbers.
#[test]
fn pods_that_injection_leaves_short_are_refused_by_the_validating_webhook() {
    let ns = KubeNamespace::new("inject-short");
    let n = &ns.name;
    kubectl(
        &["apply", "-f", "-"],
        Some(&device_nad(n, "nic").to_string()),
    );
    let err = create(&pod(n, "short", "nic, nic", Some(1))).expect_err("admitted");
    assert!(
        err.contains(&format!("admission webhook \"{VALIDATING}\" denied the request"))
            && err.contains(&format!(
                "networks {n}/nic, {n}/nic need 2 device(s) of resource \"{RESOURCE}\", but the pod's containers request 1"
            )),
        "{err}"
    );

    let name = unique("plexus-inject-");
    let _nad = SystemNad(name.clone());
    kubectl(
        &["apply", "-f", "-"],
        Some(&device_nad("kube-system", &name).to_string()),
    );
    let err = create(&pod("kube-system", &name, &name, None)).expect_err("admitted");
    assert!(
        err.contains(&format!("admission webhook \"{VALIDATING}\" denied the request"))
            && err.contains(&format!(
                "networks kube-system/{name} need 1 device(s) of resource \"{RESOURCE}\", but the pod's containers request 0"
            )),
        "{err}"
    );
}
