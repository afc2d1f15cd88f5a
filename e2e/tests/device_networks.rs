//! Device networks on real nodes: NADs with `k8s.v1.cni.cncf.io/resourceName` naming the device plugin's resource of
//! the harness nodes (fake NICs, e2e/lib/devices.sh), pods that request it, run by the real kubelet and containerd;
//! Plexus asks the kubelet which devices the pod got and hands each attachment its own (`docs/devices.md`). The
//! delegate is the test-only `plexus-test-device` (the link a deviceID designates, then the real host-device).
//!
//! Every test runs in thin and thick mode. Needs nodes with devices (`e2e/cluster up --nodes 2 --devices K`, K ≥ 2)
//! and `eval "$(e2e/cluster env)"`; scripts/test starts them.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(120);

/// The restart test takes it for writing: no other test's pod may be started or deleted while a node's kubelet or
/// daemon is down. Devices per test: node 1 holds at most 4 at once (two pods of two), node 2 the order test's 4.
static NODE_DAEMONS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    NODE_DAEMONS.read().unwrap_or_else(|e| e.into_inner())
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start nodes with `e2e/cluster up --nodes 2 --devices 2` and eval \"$(e2e/cluster env)\"")
    })
}

/// A device network: the test delegate with host-local addresses, tied to the node's device-plugin resource.
fn device_nad(namespace: &str, name: &str) {
    let (subnet, _) = node_subnet();
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {"k8s.v1.cni.cncf.io/resourceName": env("NODE_DEVICE_RESOURCE")}},
        "spec": {"config": json!({"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": env("NODE_DEVICE_DELEGATE"), "ipam": {"type": "host-local", "subnet": subnet}}
        ]}).to_string()}
    });
    kubectl(&["apply", "-f", "-"], Some(&nad.to_string()));
}

/// A pod on node `node` placed by the scheduler (extended resources are accounted for there), whose containers
/// (name, devices requested) each run the workload.
fn device_pod(
    mode: NodeMode,
    nodes: &Nodes,
    node: usize,
    namespace: &str,
    name: &str,
    networks: &str,
    containers: &[(&str, usize)],
) {
    let mut pod = pod_manifest(
        namespace,
        name,
        nodes.name(node),
        &nodes.image,
        Some(networks),
    );
    scheduled_on(&mut pod, nodes.name(node));
    let template = pod["spec"]["containers"][0].clone();
    let resource = env("NODE_DEVICE_RESOURCE");
    pod["spec"]["containers"] = containers
        .iter()
        .map(|(container, count)| {
            let mut c = template.clone();
            c["name"] = json!(container);
            if *count > 0 {
                let n = count.to_string();
                c["resources"] = json!({"requests": {&resource: n}, "limits": {&resource: n}});
            }
            c
        })
        .collect();
    mode.apply(&mut pod);
    kubectl(&["create", "-f", "-"], Some(&pod.to_string()));
}

fn uid(namespace: &str, pod: &str) -> String {
    kubectl(
        &[
            "get",
            "pod",
            "-n",
            namespace,
            pod,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    )
}

/// What the kubelet allocated to the pod, per container, from its device manager checkpoint on the node.
fn allocated(nodes: &Nodes, node: usize, pod_uid: &str) -> BTreeMap<String, Vec<String>> {
    let path = nodes
        .node_dir(node)
        .join("var-lib/kubelet/device-plugins/kubelet_internal_checkpoint");
    let checkpoint: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in checkpoint["Data"]["PodDeviceEntries"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if entry["PodUID"] == pod_uid
            && entry["ResourceName"] == env("NODE_DEVICE_RESOURCE").as_str()
        {
            let ids = out
                .entry(entry["ContainerName"].as_str().unwrap().to_owned())
                .or_default();
            for per_numa in entry["DeviceIDs"].as_object().unwrap().values() {
                ids.extend(
                    per_numa
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_str().unwrap().to_owned()),
                );
            }
            ids.sort();
        }
    }
    out
}

/// The link of the harness's device-plugin NIC with this device ID (`0000:d1:<i/8>.<i%8>` is `dpnic<i>`).
fn link_of(device_id: &str) -> String {
    let (_, rest) = device_id
        .split_once(":d1:")
        .unwrap_or_else(|| panic!("not a harness NIC: {device_id}"));
    let (dev, func) = rest.split_once('.').unwrap();
    let i = u32::from_str_radix(dev, 16).unwrap() * 8 + func.parse::<u32>().unwrap();
    format!("dpnic{i}")
}

/// The device each interface of the pod got, from its network-status `device-info`.
fn devices_in_status(namespace: &str, pod: &str) -> BTreeMap<String, String> {
    network_status(namespace, pod)
        .iter()
        .filter(|e| e.get("device-info").is_some())
        .map(|e| {
            let info = &e["device-info"];
            assert_eq!(info["type"], "pci", "{e}");
            (
                e["interface"].as_str().unwrap().to_owned(),
                info["pci"]["pci-address"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The device-info files Plexus wrote for attachments on node `i`.
fn attachment_info_files(nodes: &Nodes, i: usize) -> Vec<String> {
    files_in(&nodes.node_dir(i).join("run/k8s.cni.cncf.io/devinfo/cni"))
}

fn ready(mode: NodeMode, nodes: &Nodes, namespace: &str, pod: &str) {
    wait_ready_in(mode, nodes, namespace, pod, READY);
}

/// One device network: the pod's one device becomes its net1 (the link leaves the node's namespace), network-status
/// names it in `device-info` (copied from the device plugin's file), and deleting the pod gives the link back and
/// removes the attachment's device-info file.
fn one_device_network_gets_the_pods_device_and_gives_it_back(mode: NodeMode) {
    let _shared = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("dev1");
    device_nad(&ns.name, "nic");
    device_pod(mode, &nodes, 0, &ns.name, "p", "nic", &[("app", 1)]);
    ready(mode, &nodes, &ns.name, "p");
    let allocated = allocated(&nodes, 0, &uid(&ns.name, "p"));
    let device = allocated["app"][0].clone();
    assert_eq!(
        devices_in_status(&ns.name, "p"),
        BTreeMap::from([("net1".to_owned(), device.clone())])
    );
    let names: Vec<String> = pod_interfaces(&ns.name, "p")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(names.contains(&"net1".to_owned()), "{names:?}");
    let link = link_of(&device);
    assert!(
        !nodes.links(0).contains(&link),
        "{link} is still on the node"
    );
    // This pod's file only: other tests' pods on the same node have files of the same shape.
    let info_file = format!("nic-{}_net1", nodes.sandbox_id(0, &ns.name, "p"));
    assert!(
        attachment_info_files(&nodes, 0).contains(&info_file),
        "no attachment device-info file {info_file}"
    );

    delete_pod(&ns.name, "p");
    assert!(
        nodes.links(0).contains(&link),
        "{link} did not come back to the node"
    );
    assert!(
        !attachment_info_files(&nodes, 0).contains(&info_file),
        "{info_file} left behind after DEL"
    );
}

/// Two containers holding one device each and the network selected twice: net1 gets the device of the container
/// first by name, net2 the other one's, whatever order the containers are declared in; never the same device; a
/// pod created again follows the same rule with whatever devices the kubelet gives it then.
fn devices_follow_the_documented_order_across_containers_and_recreation(mode: NodeMode) {
    let _shared = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("dev2");
    device_nad(&ns.name, "nic");
    for round in 0..2 {
        device_pod(
            mode,
            &nodes,
            1 % nodes.names.len(),
            &ns.name,
            "p",
            "nic, nic",
            &[("zeta", 1), ("alpha", 1)],
        );
        let node = 1 % nodes.names.len();
        ready(mode, &nodes, &ns.name, "p");
        let allocated = allocated(&nodes, node, &uid(&ns.name, "p"));
        let got = devices_in_status(&ns.name, "p");
        assert_eq!(
            got,
            BTreeMap::from([
                ("net1".to_owned(), allocated["alpha"][0].clone()),
                ("net2".to_owned(), allocated["zeta"][0].clone()),
            ]),
            "round {round}: allocated {allocated:?}"
        );
        assert_ne!(got["net1"], got["net2"]);
        delete_pod(&ns.name, "p");
    }
}

/// A pod with one device and a device network selected twice never starts: its sandbox fails naming the resource
/// and both counts, no delegate runs (its device stays on the node). The namespace is one the webhook skips, as
/// the webhook would refuse the pod itself.
fn too_few_devices_hold_the_pod_and_run_nothing(mode: NodeMode) {
    let _shared = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::without_admission("dev3");
    device_nad(&ns.name, "nic");
    device_pod(mode, &nodes, 0, &ns.name, "p", "nic, nic", &[("app", 1)]);
    let resource = env("NODE_DEVICE_RESOURCE");
    wait_until(
        "the sandbox failure naming the devices",
        READY,
        || {
            pod_events(&ns.name, "p")
                .iter()
                .any(|(reason, message)| {
                    reason == "FailedCreatePodSandBox"
                        && message.contains(&format!(
                            "need 2 device(s) of resource \"{resource}\", but the kubelet allocated 1"
                        ))
                        && message.contains("(no delegate ran)")
                })
                .then_some(())
        },
        || describe_pod(&ns.name, "p"),
    );
    let allocated = allocated(&nodes, 0, &uid(&ns.name, "p"));
    let link = link_of(&allocated["app"][0]);
    assert!(nodes.links(0).contains(&link), "{link} left the node");
    delete_pod(&ns.name, "p");
}

/// A device network of the DRA driver's devices: the NAD names the `k8s.cni.cncf.io/resourceName` attribute of the
/// driver's devices; the pod gets a device through a ResourceClaimTemplate of the driver's DeviceClass. Its net1 is
/// that device (the one its claim was allocated, by the slice's `deviceID` attribute), and the claim's status names
/// the interface, its address and MAC (KEP-4817). Deleting the pod gives the link back.
fn a_dra_claimed_device_becomes_net1_and_its_claim_says_so(mode: NodeMode) {
    let _shared = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("dra");
    let (subnet, _) = node_subnet();
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "dranic", "namespace": &ns.name,
                     "annotations": {"k8s.v1.cni.cncf.io/resourceName": env("NODE_DRA_RESOURCE")}},
        "spec": {"config": json!({"cniVersion": "1.0.0", "name": "dranic", "plugins": [
            {"type": env("NODE_DEVICE_DELEGATE"), "ipam": {"type": "host-local", "subnet": subnet}}
        ]}).to_string()}
    });
    kubectl(&["apply", "-f", "-"], Some(&nad.to_string()));
    let template = json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
        "metadata": {"name": "nic", "namespace": &ns.name},
        "spec": {"spec": {"devices": {"requests": [
            {"name": "nic", "exactly": {"deviceClassName": env("NODE_DRA_CLASS")}}
        ]}}}
    });
    kubectl(&["apply", "-f", "-"], Some(&template.to_string()));
    let mut pod = pod_manifest(&ns.name, "p", nodes.name(0), &nodes.image, Some("dranic"));
    scheduled_on(&mut pod, nodes.name(0));
    pod["spec"]["resourceClaims"] = json!([{"name": "nic", "resourceClaimTemplateName": "nic"}]);
    pod["spec"]["containers"][0]["resources"] = json!({"claims": [{"name": "nic"}]});
    mode.apply(&mut pod);
    kubectl(&["create", "-f", "-"], Some(&pod.to_string()));
    ready(mode, &nodes, &ns.name, "p");

    let claim_name = kubectl(
        &[
            "get",
            "pod",
            "-n",
            &ns.name,
            "p",
            "-o",
            "jsonpath={.status.resourceClaimStatuses[0].resourceClaimName}",
        ],
        None,
    );
    let claim: Value = serde_json::from_str(&kubectl(
        &[
            "get",
            "resourceclaim",
            "-n",
            &ns.name,
            &claim_name,
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let allocated = &claim["status"]["allocation"]["devices"]["results"][0];
    let (driver, pool, device) = (
        allocated["driver"].as_str().unwrap(),
        allocated["pool"].as_str().unwrap(),
        allocated["device"].as_str().unwrap(),
    );
    let slices: Value = serde_json::from_str(&kubectl(
        &[
            "get",
            "resourceslices",
            "--field-selector",
            &format!("spec.driver={driver}"),
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let device_id = slices["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["spec"]["pool"]["name"] == pool)
        .flat_map(|s| s["spec"]["devices"].as_array().unwrap().clone())
        .find(|d| d["name"] == device)
        .and_then(|d| {
            d["attributes"]["k8s.cni.cncf.io/deviceID"]["string"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no deviceID attribute for {driver}/{pool}/{device}: {slices}"));
    let status = network_status(&ns.name, "p");
    let net1 = status
        .iter()
        .find(|e| e["interface"] == "net1")
        .unwrap_or_else(|| panic!("no net1 in {status:?}"));
    let link = device_id.replace(":d2:", ":d1:");
    let link = link_of(&link).replace("dpnic", "dranic");
    assert!(
        !nodes.links(0).contains(&link),
        "{link} ({device_id}) is still on the node"
    );

    let entry = claim["status"]["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no status.devices in the claim: {claim}"))
        .iter()
        .find(|d| d["driver"] == driver && d["pool"] == pool && d["device"] == device)
        .unwrap_or_else(|| panic!("no status entry for the device: {claim}"))
        .clone();
    let data = &entry["networkData"];
    assert_eq!(data["interfaceName"], "net1", "{entry}");
    assert_eq!(data["hardwareAddress"], net1["mac"], "{entry}");
    let ip = net1["ips"][0].as_str().unwrap();
    assert!(
        data["ips"][0]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("{ip}/"))),
        "{entry} vs {net1}"
    );

    delete_pod(&ns.name, "p");
    assert!(
        nodes.links(0).contains(&link),
        "{link} did not come back to the node"
    );
}

/// A device pod keeps its device across a restart of the node's kubelet and of `plexus-daemon`; a pod created after
/// them gets another device (the kubelet and Plexus agree again), and deleting both gives both links back.
fn device_pods_outlive_kubelet_and_daemon_restarts(mode: NodeMode) {
    let _alone = NODE_DAEMONS.write().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let node = 1 % nodes.names.len();
    let ns = KubeNamespace::new("devrestart");
    device_nad(&ns.name, "nic");
    device_pod(mode, &nodes, node, &ns.name, "before", "nic", &[("app", 1)]);
    ready(mode, &nodes, &ns.name, "before");
    let first = devices_in_status(&ns.name, "before")["net1"].clone();
    nodes.restart(node, "kubelet");
    nodes.restart(node, "plexus-daemon");
    device_pod(mode, &nodes, node, &ns.name, "after", "nic", &[("app", 1)]);
    ready(mode, &nodes, &ns.name, "after");
    let second = devices_in_status(&ns.name, "after")["net1"].clone();
    assert_eq!(
        allocated(&nodes, node, &uid(&ns.name, "after"))["app"],
        std::slice::from_ref(&second)
    );
    assert_ne!(first, second);
    assert_eq!(devices_in_status(&ns.name, "before")["net1"], first);
    for (pod, device) in [("before", &first), ("after", &second)] {
        delete_pod(&ns.name, pod);
        let link = link_of(device);
        assert!(
            nodes.links(node).contains(&link),
            "{link} of {pod} did not come back"
        );
    }
}

/// A device pod whose record is gone (a node's disk wiped, a record corrupted): DEL works out the pod's networks from
/// the pod and its NADs, and its device from the kubelet, so the delegate's DEL gets the `deviceID` and the device
/// comes back to the node.
fn a_device_pod_deleted_without_its_record_gives_its_device_back(mode: NodeMode) {
    let _shared = shared();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("dev-norec");
    device_nad(&ns.name, "nic");
    device_pod(mode, &nodes, 0, &ns.name, "p", "nic", &[("app", 1)]);
    ready(mode, &nodes, &ns.name, "p");
    let device = allocated(&nodes, 0, &uid(&ns.name, "p"))["app"][0].clone();
    let link = link_of(&device);
    assert!(
        !nodes.links(0).contains(&link),
        "{link} is still on the node"
    );
    let sandbox = nodes.sandbox_id(0, &ns.name, "p");
    let records: Vec<String> = files_in(&nodes.records_dir(0))
        .into_iter()
        .filter(|f| f.contains(&sandbox) && f.ends_with(".json"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    std::fs::remove_file(nodes.records_dir(0).join(&records[0])).unwrap();
    delete_pod(&ns.name, "p");
    assert!(
        nodes.links(0).contains(&link),
        "{link} did not come back to the node"
    );
}

/// A file of node `node` changed for one test and put back as it was on drop (also when the test fails).
struct ChangedFile {
    path: std::path::PathBuf,
    original: String,
}

impl ChangedFile {
    /// Sets `key` to `value` in the JSON object the file holds.
    fn set(path: std::path::PathBuf, key: &str, value: Value) -> Self {
        let original = std::fs::read_to_string(&path).unwrap();
        let mut config: Value = serde_json::from_str(&original).unwrap();
        config[key] = value;
        let next = path.with_extension("next");
        std::fs::write(&next, config.to_string()).unwrap();
        std::fs::rename(&next, &path).unwrap();
        Self { path, original }
    }
}

impl Drop for ChangedFile {
    fn drop(&mut self) {
        let next = self.path.with_extension("next");
        let _ = std::fs::write(&next, &self.original);
        let _ = std::fs::rename(&next, &self.path);
    }
}

/// The kubelet's PodResources API out of reach (`podResourcesSocket` naming no socket: in the node's conf in thin
/// mode, in the daemon's file in thick mode): Plexus says so in its log and reads the kubelet device manager's
/// checkpoint instead, and the pod still gets the device the kubelet allocated to it.
fn without_the_pod_resources_api_the_checkpoint_names_the_device(mode: NodeMode) {
    let _alone = NODE_DAEMONS.write().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::from_env();
    let (conf, log) = match mode {
        NodeMode::Thin => (nodes.cni_conf(0), nodes.node_dir(0).join("plexus.log")),
        NodeMode::Thick => (
            nodes.node_dir(0).join("plexus-daemon.json"),
            nodes.node_dir(0).join("plexus-daemon.log"),
        ),
    };
    let _changed = ChangedFile::set(
        conf,
        "podResourcesSocket",
        json!("/run/plexus-test/no-such-kubelet.sock"),
    );
    let ns = KubeNamespace::new("dev-ckpt");
    device_nad(&ns.name, "nic");
    device_pod(mode, &nodes, 0, &ns.name, "p", "nic", &[("app", 1)]);
    ready(mode, &nodes, &ns.name, "p");
    let device = allocated(&nodes, 0, &uid(&ns.name, "p"))["app"][0].clone();
    assert_eq!(
        devices_in_status(&ns.name, "p"),
        BTreeMap::from([("net1".to_owned(), device.clone())])
    );
    let pod = format!("{}/p", ns.name);
    let fell_back = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .any(|l| l.contains("reading the device manager's checkpoint") && l.contains(&pod));
    assert!(
        fell_back,
        "no checkpoint fallback for {pod} in {}",
        log.display()
    );
    delete_pod(&ns.name, "p");
    assert!(
        nodes.links(0).contains(&link_of(&device)),
        "the device did not come back to the node"
    );
}

on_nodes_in_both_modes!(
    without_the_pod_resources_api_the_checkpoint_names_the_device,
    a_device_pod_deleted_without_its_record_gives_its_device_back,
    device_pods_outlive_kubelet_and_daemon_restarts,
    a_dra_claimed_device_becomes_net1_and_its_claim_says_so,
    one_device_network_gets_the_pods_device_and_gives_it_back,
    devices_follow_the_documented_order_across_containers_and_recreation,
    too_few_devices_hold_the_pod_and_run_nothing,
);

/// Hot-plug of a device network (thick mode: the node's daemon does hot-plug): a pod holding two devices starts with
/// one device network; the annotation edited to select it twice gives the new `net2` the pod's other device (never
/// the one `net1` holds); edited back, `net2` goes and its device returns to the node, `net1` untouched.
#[test]
fn a_device_network_hot_plugged_into_a_running_pod_gets_its_free_device() {
    let _shared = shared();
    let mode = NodeMode::Thick;
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("dev-hp");
    device_nad(&ns.name, "nic");
    device_pod(mode, &nodes, 0, &ns.name, "p", "nic", &[("app", 2)]);
    ready(mode, &nodes, &ns.name, "p");
    let devices = allocated(&nodes, 0, &uid(&ns.name, "p"))["app"].clone();
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert_eq!(
        devices_in_status(&ns.name, "p"),
        BTreeMap::from([("net1".to_owned(), devices[0].clone())])
    );
    let annotate = |networks: &str| {
        kubectl(
            &[
                "annotate",
                "--overwrite",
                "pod",
                "-n",
                &ns.name,
                "p",
                &format!("k8s.v1.cni.cncf.io/networks={networks}"),
            ],
            None,
        )
    };
    annotate("nic, nic");
    let both = BTreeMap::from([
        ("net1".to_owned(), devices[0].clone()),
        ("net2".to_owned(), devices[1].clone()),
    ]);
    wait_until(
        "net2 with the pod's other device",
        READY,
        || (devices_in_status(&ns.name, "p") == both).then_some(()),
        || {
            format!(
                "{:?}, events {:?}",
                devices_in_status(&ns.name, "p"),
                pod_events(&ns.name, "p")
            )
        },
    );
    assert!(!nodes.links(0).contains(&link_of(&devices[1])));
    annotate("nic");
    wait_until(
        "net2 gone",
        READY,
        || {
            (devices_in_status(&ns.name, "p").len() == 1
                && nodes.links(0).contains(&link_of(&devices[1])))
            .then_some(())
        },
        || format!("{:?}", devices_in_status(&ns.name, "p")),
    );
    assert_eq!(
        devices_in_status(&ns.name, "p"),
        BTreeMap::from([("net1".to_owned(), devices[0].clone())])
    );
}
