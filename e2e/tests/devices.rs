//! The fake NICs of the real nodes (`e2e/cluster up --nodes N --devices K`, e2e/lib/devices.sh), checked on their own
//! with real pods, before any device support of Plexus: the device plugin's resource is allocatable and handed out by
//! the kubelet, the DRA driver's devices are allocated to ResourceClaims through the scheduler and prepared by the
//! kubelet, a pod asking for more than a node has stays Pending, the kubelet finds both again after a restart, and the
//! test delegate hands the link a deviceID designates to a pod and gets it back at DEL.
//!
//! Needs nodes with devices and `eval "$(e2e/cluster env)"` (NODE_DEVICE_COUNT, NODE_DEVICE_RESOURCE, NODE_DRA_CLASS,
//! NODE_DRA_RESOURCE, NODE_DEVICE_DELEGATE); scripts/test starts them.

#![forbid(unsafe_code)]

use std::sync::RwLock;
use std::time::Duration;

use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(120);

/// The kubelet-restart test takes it for writing: the other tests' pods must not start on a node whose kubelet is
/// down.
static NODE_DAEMONS: RwLock<()> = RwLock::new(());

struct Devices {
    count: usize,
    resource: String,
    class: String,
    dra_resource: String,
    delegate: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start nodes with `e2e/cluster up --nodes 2 --devices 2` and eval \"$(e2e/cluster env)\"")
    })
}

impl Devices {
    fn from_env() -> Self {
        Self {
            count: env("NODE_DEVICE_COUNT").parse().expect("NODE_DEVICE_COUNT"),
            resource: env("NODE_DEVICE_RESOURCE"),
            class: env("NODE_DRA_CLASS"),
            dra_resource: env("NODE_DRA_RESOURCE"),
            delegate: env("NODE_DEVICE_DELEGATE"),
        }
    }
}

/// A pod of [`pod_manifest`] placed by the scheduler (a node selector instead of `nodeName`): extended resources and
/// ResourceClaims are accounted for and allocated there.
fn scheduled_pod(nodes: &Nodes, node: usize, namespace: &str, name: &str) -> Value {
    let mut pod = pod_manifest(namespace, name, nodes.name(node), &nodes.image, None);
    scheduled_on(&mut pod, nodes.name(node));
    pod
}

fn get_json(args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&kubectl(&all, None)).unwrap()
}

/// Waits until the scheduler reports the pod unschedulable, and returns its message.
fn wait_unschedulable(namespace: &str, name: &str) -> String {
    wait_until(
        &format!("{namespace}/{name} reported Unschedulable"),
        READY,
        || {
            let pod = get_json(&["pod", "-n", namespace, name]);
            pod["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| {
                    c["type"] == "PodScheduled"
                        && c["status"] == "False"
                        && c["reason"] == "Unschedulable"
                })
                .map(|c| c["message"].as_str().unwrap_or_default().to_owned())
        },
        || describe_pod(namespace, name),
    )
}

/// The device-info files the device plugin left on node `i`: (file name, pci-address inside).
fn device_info_files(nodes: &Nodes, i: usize) -> Vec<(String, String)> {
    let dir = nodes.node_dir(i).join("run/k8s.cni.cncf.io/devinfo/dp");
    files_in(&dir)
        .into_iter()
        .map(|f| {
            let info: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(&f)).unwrap()).unwrap();
            assert_eq!(info["type"], "pci", "{f}: {info}");
            assert_eq!(info["version"], "1.1.0", "{f}: {info}");
            (f, info["pci"]["pci-address"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The devices of the DRA driver's ResourceSlice for node `i`.
fn slice_devices(nodes: &Nodes, devices: &Devices, i: usize) -> Vec<Value> {
    let slices = get_json(&[
        "resourceslices",
        "--field-selector",
        &format!(
            "spec.nodeName={},spec.driver={}",
            nodes.name(i),
            devices.class
        ),
    ]);
    slices["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["spec"]["devices"].as_array().unwrap().clone())
        .collect()
}

fn string_attribute<'a>(device: &'a Value, key: &str) -> &'a str {
    device["attributes"][key]["string"]
        .as_str()
        .unwrap_or_else(|| panic!("no string attribute {key} in {device}"))
}

#[test]
fn device_plugin_nics_are_allocatable_and_handed_out_by_the_kubelet() {
    let _shared = NODE_DAEMONS.read().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let devices = Devices::from_env();
    let k = devices.count;
    for i in 0..nodes.names.len() {
        let node = get_json(&["node", nodes.name(i)]);
        assert_eq!(
            node["status"]["allocatable"][&devices.resource],
            k.to_string(),
            "allocatable of {}",
            nodes.name(i)
        );
        // One NPWG device-info file per device, named after the resource and the device ID, as Multus reads them.
        let files = device_info_files(&nodes, i);
        assert_eq!(
            files.len(),
            k,
            "device-info files on {}: {files:?}",
            nodes.name(i)
        );
        for (f, id) in &files {
            assert_eq!(
                *f,
                format!("{}-{id}-device.json", devices.resource.replace('/', "-"))
            );
        }
    }
    let ids: Vec<String> = device_info_files(&nodes, 0)
        .into_iter()
        .map(|(_, id)| id)
        .collect();

    let ns = KubeNamespace::new("dev-plugin");
    let mut one = scheduled_pod(&nodes, 0, &ns.name, "one");
    one["spec"]["containers"][0]["resources"] = json!({"limits": {&devices.resource: "1"}});
    kubectl(&["create", "-f", "-"], Some(&one.to_string()));
    let mut too_many = scheduled_pod(&nodes, 0, &ns.name, "too-many");
    too_many["spec"]["containers"][0]["resources"] =
        json!({"limits": {&devices.resource: (k + 1).to_string()}});
    kubectl(&["create", "-f", "-"], Some(&too_many.to_string()));

    wait_ready(&ns.name, "one", READY);
    // The kubelet allocated one device: the plugin's Allocate answer reached the container.
    let env = pod_exec(&ns.name, "one", &["env"]);
    let given: Vec<&str> = env
        .lines()
        .filter_map(|l| l.strip_prefix("PCIDEVICE_PLEXUS_TEST_NIC="))
        .collect();
    assert_eq!(given.len(), 1, "{env}");
    assert!(
        ids.iter().any(|id| id == given[0]),
        "{given:?} not among {ids:?}"
    );

    let message = wait_unschedulable(&ns.name, "too-many");
    assert!(
        message.contains(&format!("Insufficient {}", devices.resource)),
        "{message}"
    );
    delete_pod(&ns.name, "one");
    delete_pod(&ns.name, "too-many");
}

#[test]
fn dra_claims_get_nics_whose_slice_attributes_carry_the_multus_keys() {
    let _shared = NODE_DAEMONS.read().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let devices = Devices::from_env();
    let k = devices.count;
    let last = nodes.names.len() - 1;
    for i in 0..nodes.names.len() {
        let slice = slice_devices(&nodes, &devices, i);
        assert_eq!(slice.len(), k, "devices of {}: {slice:?}", nodes.name(i));
        for d in &slice {
            assert_eq!(
                string_attribute(d, "k8s.cni.cncf.io/resourceName"),
                devices.dra_resource
            );
            assert!(
                string_attribute(d, "k8s.cni.cncf.io/deviceID").starts_with("0000:"),
                "{d}"
            );
        }
    }

    let ns = KubeNamespace::new("dev-dra");
    let template = |name: &str, count: usize| {
        json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": ns.name},
            "spec": {"spec": {"devices": {"requests": [{"name": "nic", "exactly": {
                "deviceClassName": devices.class, "allocationMode": "ExactCount", "count": count
            }}]}}}
        })
    };
    kubectl(
        &["create", "-f", "-"],
        Some(&template("one", 1).to_string()),
    );
    kubectl(
        &["create", "-f", "-"],
        Some(&template("too-many", k + 1).to_string()),
    );
    for (pod, tmpl) in [("one", "one"), ("too-many", "too-many")] {
        let mut manifest = scheduled_pod(&nodes, last, &ns.name, pod);
        manifest["spec"]["resourceClaims"] =
            json!([{"name": "nic", "resourceClaimTemplateName": tmpl}]);
        manifest["spec"]["containers"][0]["resources"] = json!({"claims": [{"name": "nic"}]});
        kubectl(&["create", "-f", "-"], Some(&manifest.to_string()));
    }

    // Ready: the scheduler allocated the claim and the kubelet had the driver prepare it.
    wait_ready(&ns.name, "one", READY);
    let pod = get_json(&["pod", "-n", &ns.name, "one"]);
    let claim_name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
        .as_str()
        .unwrap_or_else(|| panic!("no claim in {}", pod["status"]));
    let claim = get_json(&["resourceclaim", "-n", &ns.name, claim_name]);
    let results = claim["status"]["allocation"]["devices"]["results"]
        .as_array()
        .unwrap();
    assert_eq!(results.len(), 1, "{claim}");
    let result = &results[0];
    assert_eq!(result["driver"], devices.class.as_str());
    assert_eq!(result["pool"], nodes.name(last));
    assert_eq!(claim["status"]["reservedFor"][0]["name"], "one", "{claim}");
    let device = slice_devices(&nodes, &devices, last)
        .into_iter()
        .find(|d| d["name"] == result["device"])
        .unwrap_or_else(|| panic!("{} is not in the slice", result["device"]));
    assert_eq!(
        string_attribute(&device, "k8s.cni.cncf.io/resourceName"),
        devices.dra_resource
    );
    let id = string_attribute(&device, "k8s.cni.cncf.io/deviceID");
    assert!(id.starts_with("0000:"), "{device}");
    // The device stands for a link of the node.
    let link = string_attribute(&device, "nic.plexus.test/link");
    assert!(
        nodes.links(last).iter().any(|l| l == link),
        "{link} on {}",
        nodes.name(last)
    );

    let message = wait_unschedulable(&ns.name, "too-many");
    assert!(message.contains("cannot allocate all claims"), "{message}");
    delete_pod(&ns.name, "one");
    delete_pod(&ns.name, "too-many");
    // The claim of a template goes with its pod.
    wait_until(
        &format!("claim {claim_name} deleted"),
        READY,
        || {
            let out = kubectl_output(&["get", "resourceclaim", "-n", &ns.name, claim_name], None);
            (!out.status.success()).then_some(())
        },
        String::new,
    );
}

/// The delegate, configured with a deviceID by hand (what a meta-plugin will inject): the link that ID designates
/// becomes the pod's interface, with its MAC, and is back in the node's namespace after the pod is deleted.
fn delegate_moves_the_designated_link_into_the_pod_and_back(mode: NodeMode) {
    let _shared = NODE_DAEMONS.read().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let devices = Devices::from_env();
    // A different NIC per mode (both bodies run at once): the DRA driver's last one, the device plugin's last one.
    let (id, link) = match mode {
        NodeMode::Thin => {
            let slice = slice_devices(&nodes, &devices, 0);
            let d = slice
                .iter()
                .find(|d| d["name"] == format!("nic{}", devices.count - 1))
                .expect("last DRA device");
            (
                string_attribute(d, "k8s.cni.cncf.io/deviceID").to_owned(),
                string_attribute(d, "nic.plexus.test/link").to_owned(),
            )
        }
        NodeMode::Thick => {
            let (_, id) = device_info_files(&nodes, 0).pop().unwrap();
            (id, format!("dpnic{}", devices.count - 1))
        }
    };
    let mac = |out: &str| {
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    let node_mac = mac(&nodes.exec(0, &["ip", "-o", "link", "show", &link]));
    assert!(!node_mac.is_empty());

    let ns = KubeNamespace::new("dev-delegate");
    create_nad(
        &ns.name,
        "nic",
        Some(
            &json!({"cniVersion": "1.0.0", "name": "nic", "type": devices.delegate, "deviceID": id}),
        ),
    );
    create_node_pod_in(mode, &nodes, 0, &ns.name, "nic", Some("nic"));
    wait_ready(&ns.name, "nic", READY);
    let inside = pod_interfaces(&ns.name, "nic");
    let net1 = inside
        .iter()
        .find(|i| i.name == "net1")
        .unwrap_or_else(|| panic!("{inside:?}"));
    assert_eq!(net1.mac, node_mac, "{link} ({id}) is the pod's net1");
    assert!(
        !nodes.links(0).contains(&link),
        "{link} left the node's namespace"
    );

    delete_pod(&ns.name, "nic");
    assert!(
        nodes.links(0).contains(&link),
        "{link} is back in the node's namespace"
    );
}

on_nodes_in_both_modes!(delegate_moves_the_designated_link_into_the_pod_and_back);

/// The fake NICs are real data paths: two pods, each given a NIC through the delegate (one of the device plugin's, on
/// the first node; one of the DRA driver's, on the last), with static addresses, ping each other over them (the
/// macvlans' shared segment, `lan0`).
#[test]
fn pods_ping_each_other_over_their_fake_nics() {
    let _shared = NODE_DAEMONS.read().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let devices = Devices::from_env();
    assert!(devices.count >= 2, "needs --devices 2 or more");
    let last = nodes.names.len() - 1;
    // The second-to-last NIC of each kind: the delegate tests hold the last ones meanwhile.
    let (_, dp_id) = device_info_files(&nodes, 0).swap_remove(devices.count - 2);
    let dra = slice_devices(&nodes, &devices, last);
    let dra_device = dra
        .iter()
        .find(|d| d["name"] == format!("nic{}", devices.count - 2))
        .expect("DRA device");
    let dra_id = string_attribute(dra_device, "k8s.cni.cncf.io/deviceID");
    let (_, prefix) = node_subnet();

    let ns = KubeNamespace::new("dev-ping");
    for (nad, id) in [("nic-a", dp_id.as_str()), ("nic-b", dra_id)] {
        create_nad(
            &ns.name,
            nad,
            Some(
                &json!({"cniVersion": "1.0.0", "name": nad, "type": devices.delegate, "deviceID": id,
                         "capabilities": {"ips": true}, "ipam": {"type": "static"}}),
            ),
        );
    }
    for (pod, node, nad, host) in [("a", 0, "nic-a", 1), ("b", last, "nic-b", 2)] {
        let selection = json!([{"name": nad, "ips": [format!("{prefix}.{host}/24")]}]);
        create_node_pod(&nodes, node, &ns.name, pod, Some(&selection.to_string()));
    }
    wait_ready(&ns.name, "a", READY);
    wait_ready(&ns.name, "b", READY);
    let out = pod_exec(
        &ns.name,
        "a",
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "5",
            "-I",
            "net1",
            &format!("{prefix}.2"),
        ],
    );
    assert!(out.contains("2 packets received"), "{out}");
    delete_pod(&ns.name, "a");
    delete_pod(&ns.name, "b");
}

/// Without a deviceID (no meta-plugin injected one) the delegate fails with a CNI error naming it, and the pod's sandbox
/// is not created: a missing injection cannot pass unnoticed.
#[test]
fn delegate_without_a_device_id_fails_the_sandbox() {
    let _shared = NODE_DAEMONS.read().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let devices = Devices::from_env();
    let ns = KubeNamespace::new("dev-no-id");
    create_nad(
        &ns.name,
        "nic",
        Some(&json!({"cniVersion": "1.0.0", "name": "nic", "type": devices.delegate})),
    );
    create_node_pod(&nodes, 0, &ns.name, "no-id", Some("nic"));
    let message = wait_until(
        "a FailedCreatePodSandBox event naming the deviceID",
        READY,
        || {
            pod_events(&ns.name, "no-id")
                .into_iter()
                .find(|(reason, m)| {
                    reason == "FailedCreatePodSandBox" && m.contains("no \"deviceID\"")
                })
                .map(|(_, m)| m)
        },
        || describe_pod(&ns.name, "no-id"),
    );
    assert!(message.contains(&devices.delegate), "{message}");
    delete_pod(&ns.name, "no-id");
}

/// What a meta-plugin will read: the kubelet's PodResources `Get` (v1, over the node's
/// /var/lib/kubelet/pod-resources/kubelet.sock) names each container's device plugin IDs and DRA claim devices, and the
/// kubelet counts the call in its metric `kubelet_pod_resources_endpoint_requests_get` (read through the API server's
/// node proxy: what the benchmark counts calls with).
#[test]
fn the_kubelet_reports_both_kinds_through_pod_resources_get() {
    // Alone: it takes two devices of each node's K.
    let _exclusive = NODE_DAEMONS.write().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let devices = Devices::from_env();
    let ns = KubeNamespace::new("dev-podres");
    kubectl(
        &["create", "-f", "-"],
        Some(
            &json!({
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                "metadata": {"name": "nic", "namespace": ns.name},
                "spec": {"spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": devices.class}}]}}}
            })
            .to_string(),
        ),
    );
    let mut pod = scheduled_pod(&nodes, 0, &ns.name, "two");
    pod["spec"]["resourceClaims"] = json!([{"name": "nic", "resourceClaimTemplateName": "nic"}]);
    let mut b = pod["spec"]["containers"][0].clone();
    b["name"] = json!("b");
    pod["spec"]["containers"][0]["resources"] =
        json!({"limits": {&devices.resource: "1"}, "claims": [{"name": "nic"}]});
    b["resources"] = json!({"limits": {&devices.resource: "1"}});
    pod["spec"]["containers"].as_array_mut().unwrap().push(b);
    kubectl(&["create", "-f", "-"], Some(&pod.to_string()));
    wait_ready(&ns.name, "two", READY);

    let metric = || {
        let text = kubectl(
            &[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{}/proxy/metrics", nodes.name(0)),
            ],
            None,
        );
        text.lines()
            .filter(|l| l.starts_with("kubelet_pod_resources_endpoint_requests_get{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = metric();
    let tool = tool_bin("plexus-test-devices").join("plexus-test-podresources");
    let answer: Value =
        serde_json::from_str(&nodes.exec(0, &[tool.to_str().unwrap(), "get", &ns.name, "two"]))
            .unwrap();
    assert!(
        metric() >= before + 1.0,
        "the Get was counted ({before} before)"
    );

    let containers = answer["podResources"]["containers"].as_array().unwrap();
    let ids = |c: &Value| -> Vec<String> {
        c["devices"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter(|d| d["resourceName"] == devices.resource.as_str())
                    .flat_map(|d| d["deviceIds"].as_array().unwrap().iter())
                    .map(|i| i.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let known: Vec<String> = device_info_files(&nodes, 0)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let (a_ids, b_ids) = (ids(&containers[0]), ids(&containers[1]));
    assert_eq!((a_ids.len(), b_ids.len()), (1, 1), "{answer}");
    assert_ne!(a_ids, b_ids, "two containers, two devices: {answer}");
    assert!(
        a_ids.iter().chain(&b_ids).all(|id| known.contains(id)),
        "{answer}"
    );
    let claim = &containers[0]["dynamicResources"][0];
    assert_eq!(claim["claimNamespace"], ns.name.as_str(), "{answer}");
    let resources = claim["claimResources"].as_array().unwrap();
    assert_eq!(resources.len(), 1, "{answer}");
    assert_eq!(resources[0]["driverName"], devices.class.as_str());
    assert_eq!(resources[0]["poolName"], nodes.name(0));
    assert!(
        containers[1]["dynamicResources"]
            .as_array()
            .is_none_or(|d| d.is_empty()),
        "{answer}"
    );
    delete_pod(&ns.name, "two");
}

/// The kubelet restarted: the device plugin registers again, and both kinds of devices go to new pods.
#[test]
fn devices_survive_a_kubelet_restart() {
    let _exclusive = NODE_DAEMONS.write().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let devices = Devices::from_env();
    let last = nodes.names.len() - 1;
    // `node-restart kubelet` returns once the plugin registered again and the devices are allocatable and published.
    nodes.restart(last, "kubelet");
    let log = std::fs::read_to_string(nodes.node_dir(last).join("device-plugin.log")).unwrap();
    assert!(log.matches(" registered ").count() >= 2, "{log}");

    let ns = KubeNamespace::new("dev-restart");
    let mut all = scheduled_pod(&nodes, last, &ns.name, "all");
    all["spec"]["containers"][0]["resources"] =
        json!({"limits": {&devices.resource: devices.count.to_string()}});
    kubectl(&["create", "-f", "-"], Some(&all.to_string()));
    kubectl(
        &["create", "-f", "-"],
        Some(
            &json!({
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                "metadata": {"name": "nic", "namespace": ns.name},
                "spec": {"spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": devices.class}}]}}}
            })
            .to_string(),
        ),
    );
    let mut claimed = scheduled_pod(&nodes, last, &ns.name, "claimed");
    claimed["spec"]["resourceClaims"] =
        json!([{"name": "nic", "resourceClaimTemplateName": "nic"}]);
    claimed["spec"]["containers"][0]["resources"] = json!({"claims": [{"name": "nic"}]});
    kubectl(&["create", "-f", "-"], Some(&claimed.to_string()));
    wait_ready(&ns.name, "all", READY);
    wait_ready(&ns.name, "claimed", READY);
    let env = pod_exec(&ns.name, "all", &["env"]);
    let given = env
        .lines()
        .find_map(|l| l.strip_prefix("PCIDEVICE_PLEXUS_TEST_NIC="))
        .unwrap_or_else(|| panic!("{env}"));
    assert_eq!(given.split(',').count(), devices.count, "{given}");
    delete_pod(&ns.name, "all");
    delete_pod(&ns.name, "claimed");
}
