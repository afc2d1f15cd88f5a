//! Device networks: a NAD whose `k8s.v1.cni.cncf.io/resourceName` annotation names a device-plugin resource gets one
//! of the devices the kubelet allocated to the pod for that resource. This module decides which device each
//! attachment gets, and how its delegate learns it; finding the pod's devices (the kubelet) is the node's job.
//!
//! The order (docs/devices.md): a resource's devices are taken container by container, containers in name order,
//! and within a container in device-ID order; the attachments that need the resource take them in the annotation's
//! order. No device is given twice. The order depends only on what the kubelet allocated, never on the order the
//! kubelet or its checkpoint happen to list them in, so a pod gets the same assignment on every path.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::config::NetworkConfigList;
use crate::validate::valid_dns1123_subdomain;

/// The delegate config key (every plugin of the list) and the capability argument that carry the device ID.
pub const DEVICE_ID_KEY: &str = "deviceID";
/// The delegate config key that carries the device ID as a PCI address (Multus sets both).
pub const PCI_BUS_ID_KEY: &str = "pciBusID";
/// The capability argument naming the device-info file the delegate may read or write (device-info spec).
pub const DEVICE_INFO_FILE_CAPABILITY: &str = "CNIDeviceInfoFile";

/// The ResourceSlice device attributes that make a DRA device a device-network device (Multus's keys, which
/// dra-driver-sriov publishes): its device ID, and the resource name NADs name it by.
pub const ATTRIBUTE_DEVICE_ID: &str = "k8s.cni.cncf.io/deviceID";
pub const ATTRIBUTE_RESOURCE_NAME: &str = "k8s.cni.cncf.io/resourceName";

/// A device of a ResourceClaim a container uses (DRA), as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDevice {
    pub container: String,
    pub claim_namespace: String,
    pub claim_name: String,
    pub driver: String,
    pub pool: String,
    pub device: String,
}

/// A DRA device's device-network attributes, from its ResourceSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceDevice {
    pub driver: String,
    pub pool: String,
    pub device: String,
    pub device_id: String,
    pub resource_name: String,
}

/// The devices of a ResourceSlice that carry both attributes (the others are not for networks).
pub fn slice_devices(slice: &k8s_openapi::api::resource::v1::ResourceSlice) -> Vec<SliceDevice> {
    let spec = &slice.spec;
    spec.devices
        .iter()
        .flatten()
        .filter_map(|d| {
            let attributes = d.attributes.as_ref()?;
            let text = |key: &str| attributes.get(key).and_then(|a| a.string.clone());
            Some(SliceDevice {
                driver: spec.driver.clone(),
                pool: spec.pool.name.clone(),
                device: d.name.clone(),
                device_id: text(ATTRIBUTE_DEVICE_ID)?,
                resource_name: text(ATTRIBUTE_RESOURCE_NAME)?,
            })
        })
        .collect()
}

/// A pod's DRA devices as device-network devices: each claimed device that a ResourceSlice gives both attributes,
/// under its container, by its `resourceName` attribute and with its `deviceID` attribute as the device ID.
pub fn claimed_as_container_devices(
    claimed: &[ClaimedDevice],
    slices: &[SliceDevice],
) -> Vec<ContainerDevices> {
    claimed
        .iter()
        .filter_map(|c| {
            let s = slices
                .iter()
                .find(|s| s.driver == c.driver && s.pool == c.pool && s.device == c.device)?;
            Some(ContainerDevices {
                container: c.container.clone(),
                resource_name: s.resource_name.clone(),
                device_ids: vec![s.device_id.clone()],
            })
        })
        .collect()
}

/// One container's devices of one resource, as the kubelet reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerDevices {
    pub container: String,
    pub resource_name: String,
    pub device_ids: Vec<String>,
}

/// The device an attachment was given, as recorded and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedDevice {
    pub resource_name: String,
    #[serde(rename = "deviceID")]
    pub device_id: String,
    /// The device-info file passed as `CNIDeviceInfoFile` (removed at DEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_file: Option<String>,
    /// The device-info object read from that file after ADD: network-status's `device-info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    /// The ResourceClaim the device was allocated to (DRA): its status gets the interface (KEP-4817).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<DeviceClaim>,
}

/// A DRA device of a ResourceClaim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceClaim {
    pub namespace: String,
    pub name: String,
    pub driver: String,
    pub pool: String,
    pub device: String,
}

/// The claimed device that is `device_id` of `resource` by its slice's attributes, if one is.
pub fn claim_of(
    claimed: &[ClaimedDevice],
    slices: &[SliceDevice],
    resource: &str,
    device_id: &str,
) -> Option<DeviceClaim> {
    claimed.iter().find_map(|c| {
        slices
            .iter()
            .find(|s| {
                s.driver == c.driver
                    && s.pool == c.pool
                    && s.device == c.device
                    && s.resource_name == resource
                    && s.device_id == device_id
            })
            .map(|_| DeviceClaim {
                namespace: c.claim_namespace.clone(),
                name: c.claim_name.clone(),
                driver: c.driver.clone(),
                pool: c.pool.clone(),
                device: c.device.clone(),
            })
    })
}

/// The ResourceClaim status of the devices Plexus configured (KEP-4817 `status.devices[].networkData`), as a
/// server-side apply body: one entry per (driver, pool, device) with the pod's interface name, its addresses in CIDR
/// form and its MAC.
pub fn claim_status_apply(
    claim_namespace: &str,
    claim_name: &str,
    devices: &[(&DeviceClaim, &str, Vec<String>, Option<String>)],
) -> Value {
    let entries: Vec<Value> = devices
        .iter()
        .map(|(c, ifname, ips, mac)| {
            let mut data = serde_json::Map::new();
            data.insert("interfaceName".into(), Value::String((*ifname).to_owned()));
            if !ips.is_empty() {
                data.insert(
                    "ips".into(),
                    ips.iter().cloned().map(Value::String).collect(),
                );
            }
            if let Some(mac) = mac {
                data.insert("hardwareAddress".into(), Value::String(mac.clone()));
            }
            serde_json::json!({
                "driver": c.driver, "pool": c.pool, "device": c.device,
                "networkData": Value::Object(data),
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": claim_name, "namespace": claim_namespace},
        "status": {"devices": entries},
    })
}

/// Why devices could not be given out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "pod {pod}: networks {networks} need {needed} device(s) of resource {resource:?}, but the kubelet allocated \
         {available} to the pod; request {needed} {resource:?} in the pod's containers (no delegate ran)"
    )]
    TooFew {
        pod: String,
        resource: String,
        networks: String,
        needed: usize,
        available: usize,
    },
    #[error(
        "NAD {network}: annotation k8s.v1.cni.cncf.io/resourceName {value:?} is not a resource name \
         (<DNS subdomain>/<name>, the name at most 63 letters, digits, '-', '_' or '.')"
    )]
    BadResourceName { network: String, value: String },
}

/// A device-plugin resource name as the kubelet accepts it for extended resources: `<DNS subdomain>/<name>`, the
/// name 1–63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit. It ends up in file names
/// (device-info) and in the pod's resource requests, so nothing else passes.
pub fn valid_resource_name(value: &str) -> bool {
    let Some((prefix, name)) = value.split_once('/') else {
        return false;
    };
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    valid_dns1123_subdomain(prefix)
        && !name.is_empty()
        && name.len() <= 63
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The NAD's resource name, checked: `None` when the NAD has none.
pub fn resource_name(
    network: &str,
    annotation: Option<&str>,
) -> Result<Option<String>, DeviceError> {
    match annotation.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if valid_resource_name(v) => Ok(Some(v.to_owned())),
        Some(v) => Err(DeviceError::BadResourceName {
            network: network.to_owned(),
            value: v.chars().take(300).collect(),
        }),
    }
}

/// The pod's devices of `resource` in the documented order: containers by name, device IDs sorted within each, each
/// ID once.
pub fn device_order(devices: &[ContainerDevices], resource: &str) -> Vec<String> {
    let mut per_container: Vec<(&str, Vec<&str>)> = Vec::new();
    for d in devices.iter().filter(|d| d.resource_name == resource) {
        match per_container.iter_mut().find(|(c, _)| *c == d.container) {
            Some((_, ids)) => ids.extend(d.device_ids.iter().map(String::as_str)),
            None => per_container.push((
                d.container.as_str(),
                d.device_ids.iter().map(String::as_str).collect(),
            )),
        }
    }
    per_container.sort_by(|a, b| a.0.cmp(b.0));
    let mut order: Vec<String> = Vec::new();
    for (_, mut ids) in per_container {
        ids.sort_unstable();
        for id in ids {
            if !order.iter().any(|o| o == id) {
                order.push(id.to_owned());
            }
        }
    }
    order
}

/// Which device each attachment gets: `wanted[i]` is attachment i's (network, resource name), `None` for a network
/// without one. Attachments take their resource's devices in [`device_order`], in the order given (the
/// annotation's). Fails, naming the resource and the networks, when a resource has fewer devices than attachments.
pub fn assign(
    pod: &str,
    wanted: &[(&str, Option<&str>)],
    devices: &[ContainerDevices],
) -> Result<Vec<Option<(String, String)>>, DeviceError> {
    let mut resources: Vec<&str> = Vec::new();
    for (_, r) in wanted {
        if let Some(r) = r
            && !resources.contains(r)
        {
            resources.push(r);
        }
    }
    let mut given: Vec<Option<(String, String)>> = vec![None; wanted.len()];
    for resource in resources {
        let takers: Vec<usize> = (0..wanted.len())
            .filter(|i| wanted[*i].1 == Some(resource))
            .collect();
        let order = device_order(devices, resource);
        if order.len() < takers.len() {
            return Err(DeviceError::TooFew {
                pod: pod.to_owned(),
                resource: resource.to_owned(),
                networks: takers
                    .iter()
                    .map(|i| wanted[*i].0)
                    .collect::<Vec<_>>()
                    .join(", "),
                needed: takers.len(),
                available: order.len(),
            });
        }
        for (i, id) in takers.into_iter().zip(order) {
            given[i] = Some((resource.to_owned(), id));
        }
    }
    Ok(given)
}

/// The devices of one resource a pod's networks need: one per selection of a network with that resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNeed {
    pub resource: String,
    /// The networks that need it, in order, once per selection.
    pub networks: Vec<String>,
}

impl DeviceNeed {
    /// How many devices: one per selection.
    pub fn count(&self) -> usize {
        self.networks.len()
    }
}

/// How many devices of each resource a pod's attachments need, from each attachment's (network, resource name);
/// resources in first-use order.
pub fn needed<'a>(wanted: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Vec<DeviceNeed> {
    let mut needs: Vec<DeviceNeed> = Vec::new();
    for (network, resource) in wanted {
        let Some(resource) = resource else { continue };
        match needs.iter_mut().find(|n| n.resource == resource) {
            Some(need) => need.networks.push(network.to_owned()),
            None => needs.push(DeviceNeed {
                resource: resource.to_owned(),
                networks: vec![network.to_owned()],
            }),
        }
    }
    needs
}

/// Tells a delegate its device as Multus does: `deviceID` and `pciBusID` in every plugin of its list.
pub fn inject_device_id(delegate: &mut NetworkConfigList, device_id: &str) {
    delegate.set_in_every_plugin(DEVICE_ID_KEY, Value::String(device_id.to_owned()));
    delegate.set_in_every_plugin(PCI_BUS_ID_KEY, Value::String(device_id.to_owned()));
}

/// A file name part with `/` made `-` (as the device-info spec's file names do).
fn file_part(s: &str) -> String {
    s.replace('/', "-")
}

/// The device plugin's device-info file of a device: `<dir>/dp/<resource>-<device ID>-device.json` (device-info
/// spec), `/` made `-`.
pub fn plugin_info_file(dir: &str, resource: &str, device_id: &str) -> String {
    format!(
        "{}/dp/{}-{}-device.json",
        dir.trim_end_matches('/'),
        file_part(resource),
        file_part(device_id)
    )
}

/// The attachment's device-info file, passed to the delegate as `CNIDeviceInfoFile`:
/// `<dir>/cni/<network name>-<container ID>_<interface>` (Multus's name), `/` made `-`.
pub fn attachment_info_file(dir: &str, network: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "{}/cni/{}",
        dir.trim_end_matches('/'),
        file_part(&format!("{network}-{container_id}_{ifname}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(container: &str, resource: &str, ids: &[&str]) -> ContainerDevices {
        ContainerDevices {
            container: container.into(),
            resource_name: resource.into(),
            device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn resource_names_are_qualified_and_bounded() {
        for ok in [
            "intel.com/sriov",
            "plexus.test/nic",
            "a/b",
            "openshift.io/mlx_vf.1",
        ] {
            assert!(valid_resource_name(ok), "{ok}");
        }
        for bad in [
            "nic",
            "/nic",
            "a/",
            "a/b/c",
            "../x",
            "a/-x",
            "A_B/nic",
            "a/ b",
            &format!("a/{}", "x".repeat(64)),
        ] {
            assert!(!valid_resource_name(bad), "{bad}");
        }
        assert_eq!(resource_name("ns/n", Some(" ")), Ok(None));
        assert!(matches!(
            resource_name("ns/n", Some("a/../../etc")),
            Err(DeviceError::BadResourceName { .. })
        ));
    }

    #[test]
    fn the_order_is_by_container_name_then_device_id_whatever_the_listing_order() {
        let a = [
            dev("web", "r/x", &["0000:03:00.3", "0000:03:00.1"]),
            dev("agent", "r/x", &["0000:04:00.2"]),
            dev("agent", "r/y", &["y1"]),
        ];
        let b = [
            dev("agent", "r/y", &["y1"]),
            dev("agent", "r/x", &["0000:04:00.2"]),
            dev("web", "r/x", &["0000:03:00.1", "0000:03:00.3"]),
        ];
        let want = ["0000:04:00.2", "0000:03:00.1", "0000:03:00.3"];
        assert_eq!(device_order(&a, "r/x"), want);
        assert_eq!(device_order(&b, "r/x"), want);
        assert_eq!(device_order(&a, "r/z"), Vec::<String>::new());
    }

    #[test]
    fn attachments_take_devices_in_annotation_order_and_never_share_one() {
        let devices = [
            dev("c1", "r/x", &["b", "a"]),
            dev("c2", "r/x", &["a", "c"]),
            dev("c1", "r/y", &["y"]),
        ];
        let got = assign(
            "ns/p",
            &[
                ("eth0", None),
                ("ns/x1", Some("r/x")),
                ("ns/y", Some("r/y")),
                ("ns/x2", Some("r/x")),
            ],
            &devices,
        )
        .unwrap();
        let ids: Vec<Option<&str>> = got
            .iter()
            .map(|g| g.as_ref().map(|(_, id)| id.as_str()))
            .collect();
        // c1's a, b then c2's c (its "a" is the same device, given once).
        assert_eq!(ids, [None, Some("a"), Some("y"), Some("b")]);
        let too_few = assign(
            "ns/p",
            &[("ns/y1", Some("r/y")), ("ns/y2", Some("r/y"))],
            &devices,
        )
        .unwrap_err();
        assert_eq!(
            too_few,
            DeviceError::TooFew {
                pod: "ns/p".into(),
                resource: "r/y".into(),
                networks: "ns/y1, ns/y2".into(),
                needed: 2,
                available: 1
            }
        );
        assert!(too_few.to_string().contains("\"r/y\""));
    }

    #[test]
    fn claimed_dra_devices_become_devices_by_their_slice_attributes() {
        let slice: k8s_openapi::api::resource::v1::ResourceSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node1-nic"},
            "spec": {"driver": "nic.plexus.test", "nodeName": "node1",
                     "pool": {"name": "node1", "generation": 1, "resourceSliceCount": 1},
                     "devices": [
                         {"name": "nic0", "attributes": {
                             "k8s.cni.cncf.io/deviceID": {"string": "0000:d2:00.0"},
                             "k8s.cni.cncf.io/resourceName": {"string": "plexus.test/dra-nic"}}},
                         {"name": "gpu0", "attributes": {"model": {"string": "x"}}}
                     ]}
        }))
        .unwrap();
        let slices = slice_devices(&slice);
        assert_eq!(slices.len(), 1, "only devices with both attributes");
        let claimed = |device: &str| ClaimedDevice {
            container: "app".into(),
            claim_namespace: "ns".into(),
            claim_name: "c".into(),
            driver: "nic.plexus.test".into(),
            pool: "node1".into(),
            device: device.into(),
        };
        assert_eq!(
            claimed_as_container_devices(&[claimed("nic0"), claimed("gpu0")], &slices),
            [ContainerDevices {
                container: "app".into(),
                resource_name: "plexus.test/dra-nic".into(),
                device_ids: vec!["0000:d2:00.0".into()],
            }]
        );
    }

    #[test]
    fn claim_status_names_the_interface_addresses_and_mac() {
        let claim = DeviceClaim {
            namespace: "ns".into(),
            name: "p-nic".into(),
            driver: "nic.plexus.test".into(),
            pool: "node1".into(),
            device: "nic0".into(),
        };
        let body = claim_status_apply(
            "ns",
            "p-nic",
            &[(
                &claim,
                "net1",
                vec!["198.18.0.5/24".into()],
                Some("aa:bb:cc:dd:ee:ff".into()),
            )],
        );
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": "p-nic", "namespace": "ns"},
                "status": {"devices": [{"driver": "nic.plexus.test", "pool": "node1", "device": "nic0",
                    "networkData": {"interfaceName": "net1", "ips": ["198.18.0.5/24"],
                                    "hardwareAddress": "aa:bb:cc:dd:ee:ff"}}]}
            })
        );
        let slices = [SliceDevice {
            driver: "nic.plexus.test".into(),
            pool: "node1".into(),
            device: "nic0".into(),
            device_id: "0000:d2:00.0".into(),
            resource_name: "plexus.test/dra-nic".into(),
        }];
        let claimed = [ClaimedDevice {
            container: "app".into(),
            claim_namespace: "ns".into(),
            claim_name: "p-nic".into(),
            driver: "nic.plexus.test".into(),
            pool: "node1".into(),
            device: "nic0".into(),
        }];
        assert_eq!(
            claim_of(&claimed, &slices, "plexus.test/dra-nic", "0000:d2:00.0"),
            Some(claim)
        );
        assert_eq!(
            claim_of(&claimed, &slices, "plexus.test/nic", "0000:d2:00.0"),
            None
        );
    }

    #[test]
    fn needs_are_counted_per_resource() {
        let needs = needed([
            ("a", None),
            ("x1", Some("r/x")),
            ("y", Some("r/y")),
            ("x2", Some("r/x")),
        ]);
        let counts: Vec<(&str, usize)> = needs
            .iter()
            .map(|n| (n.resource.as_str(), n.count()))
            .collect();
        assert_eq!(counts, [("r/x", 2), ("r/y", 1)]);
        assert_eq!(needs[0].networks, ["x1", "x2"]);
    }

    #[test]
    fn the_device_reaches_every_plugin_and_the_files_are_named_as_the_spec_says() {
        let mut list = NetworkConfigList::parse(
            br#"{"cniVersion":"1.0.0","name":"sriov-net","plugins":[{"type":"sriov"},{"type":"tuning"}]}"#,
        )
        .unwrap();
        inject_device_id(&mut list, "0000:03:02.2");
        for p in &list.plugins {
            assert_eq!(p.raw()["deviceID"], "0000:03:02.2");
            assert_eq!(p.raw()["pciBusID"], "0000:03:02.2");
        }
        assert_eq!(
            plugin_info_file(
                "/var/run/k8s.cni.cncf.io/devinfo/",
                "intel.com/sriov",
                "0000:03:02.2"
            ),
            "/var/run/k8s.cni.cncf.io/devinfo/dp/intel.com-sriov-0000:03:02.2-device.json"
        );
        assert_eq!(
            attachment_info_file("/d", "sriov/net", "abc", "net1"),
            "/d/cni/sriov-net-abc_net1"
        );
    }
}
