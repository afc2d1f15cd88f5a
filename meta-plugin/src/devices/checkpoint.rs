//! The kubelet device manager's checkpoint (`/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint`): which
//! devices each pod's containers hold, kept by the kubelet across its restarts. Read when the kubelet does not answer.

use std::collections::BTreeMap;
use std::path::Path;

use plexus_api::devices::ContainerDevices;
use serde::Deserialize;

/// The largest checkpoint read.
const MAX_CHECKPOINT_BYTES: u64 = 16 << 20;

#[derive(Deserialize)]
struct Checkpoint {
    #[serde(rename = "Data")]
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "PodDeviceEntries", default)]
    entries: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "PodUID")]
    pod_uid: String,
    #[serde(rename = "ContainerName")]
    container: String,
    #[serde(rename = "ResourceName")]
    resource: String,
    /// Device IDs per NUMA node.
    #[serde(rename = "DeviceIDs", default)]
    device_ids: BTreeMap<String, Vec<String>>,
}

/// The pod's devices in the checkpoint: `Ok(None)` when the pod has no entry.
pub fn pod_devices(path: &Path, pod_uid: &str) -> Result<Option<Vec<ContainerDevices>>, String> {
    use std::io::Read;
    let mut text = Vec::new();
    crate::files::no_follow()
        .read(true)
        .open(path)
        .and_then(|f| f.take(MAX_CHECKPOINT_BYTES + 1).read_to_end(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Err(format!(
            "{}: larger than {MAX_CHECKPOINT_BYTES} bytes",
            path.display()
        ));
    }
    parse(&text, pod_uid).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(text: &[u8], pod_uid: &str) -> Result<Option<Vec<ContainerDevices>>, serde_json::Error> {
    let checkpoint: Checkpoint = serde_json::from_slice(text)?;
    let devices: Vec<ContainerDevices> = checkpoint
        .data
        .entries
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !pod_uid.is_empty() && e.pod_uid == pod_uid)
        .map(|e| ContainerDevices {
            container: e.container,
            resource_name: e.resource,
            device_ids: e.device_ids.into_values().flatten().collect(),
        })
        .collect();
    Ok((!devices.is_empty()).then_some(devices))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kubelet's format (v2: device IDs per NUMA node).
    #[test]
    fn the_pods_entries_are_read_by_uid() {
        let text = br#"{"Data":{"PodDeviceEntries":[
            {"PodUID":"u1","ContainerName":"c","ResourceName":"plexus.test/nic","DeviceIDs":{"-1":["b","a"]},"AllocResp":"CgA="},
            {"PodUID":"u2","ContainerName":"c","ResourceName":"plexus.test/nic","DeviceIDs":{"0":["x"]},"AllocResp":"CgA="}
          ],"RegisteredDevices":{"plexus.test/nic":["a","b","x"]}},"Checksum":1}"#;
        let got = parse(text, "u1").unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].device_ids, ["b", "a"]);
        assert_eq!(parse(text, "u3").unwrap(), None);
        assert_eq!(parse(text, "").unwrap(), None);
        assert_eq!(
            parse(br#"{"Data":{"PodDeviceEntries":null},"Checksum":0}"#, "u1").unwrap(),
            None
        );
        assert!(parse(b"{", "u1").is_err());
    }
}
