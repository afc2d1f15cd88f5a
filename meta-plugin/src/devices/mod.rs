//! Device networks on the node: which devices the kubelet gave the pod (PodResources `Get`, then `List`, then the
//! device manager's checkpoint), and the device-info files of the attachments that got one.

mod checkpoint;
mod info;
mod podresources;

pub use info::{prepare_info_file, read_info_file, remove_info_file};

use std::time::Instant;

use plexus_api::devices::{ClaimedDevice, ContainerDevices};
use plexus_api::policy::PodView;
use tracing::{debug, warn};

use crate::config::Config;
use crate::error::PlexusError;
use podresources::{CallError, Kubelet};

/// A pod's devices as the kubelet reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDevices {
    /// Device-plugin devices.
    pub plugin: Vec<ContainerDevices>,
    /// DRA devices of the ResourceClaims its containers use (their attributes are in ResourceSlices).
    pub claimed: Vec<ClaimedDevice>,
    pub found: Found,
}

/// Where a pod's devices were found (for the log and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Get,
    List,
    Checkpoint,
}

/// The pod's device-plugin devices: one PodResources `Get`; a `List` when the kubelet answers `Get` with an error
/// (a kubelet with `Get` disabled, or one that does not know the pod by name); the device manager's checkpoint (by
/// pod UID) when the kubelet can't be reached within `kubeletTimeoutSeconds`. Fails with code 11 (try again later)
/// naming what was tried.
pub async fn pod_devices(config: &Config, pod: &PodView) -> Result<PodDevices, PlexusError> {
    let started = Instant::now();
    let timeout = config.kubelet_timeout;
    let socket = &config.pod_resources_socket;
    let asked = async {
        let kubelet = Kubelet::connect(socket).await?;
        match kubelet.get(&pod.namespace, &pod.name).await {
            Ok(found) => Ok((Some(found), Found::Get)),
            Err(get_error @ CallError::Status { .. }) => {
                debug!(pod = %pod.label(), error = %get_error, "PodResources Get failed; trying List");
                kubelet
                    .list_one(&pod.namespace, &pod.name)
                    .await
                    .map(|found| (found, Found::List))
            }
            Err(e) => Err(e),
        }
    };
    let kubelet_error = match tokio::time::timeout(timeout, asked).await {
        Ok(Ok((Some(found), how))) => {
            debug!(pod = %pod.label(), via = ?how, elapsed_ms = started.elapsed().as_millis() as u64, "pod devices from the kubelet");
            return Ok(PodDevices {
                claimed: found.claimed_devices(),
                plugin: found.devices(),
                found: how,
            });
        }
        Ok(Ok((None, _))) => format!(
            "the kubelet's PodResources List does not list pod {}",
            pod.label()
        ),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "no answer from {} within kubeletTimeoutSeconds ({}s)",
            socket.display(),
            timeout.as_secs_f64()
        ),
    };
    warn!(pod = %pod.label(), error = %kubelet_error, "PodResources failed; reading the device manager's checkpoint");
    let checkpoint = &config.device_checkpoint_file;
    let from_checkpoint = match checkpoint::pod_devices(checkpoint, &pod.uid) {
        Ok(Some(devices)) => {
            return Ok(PodDevices {
                plugin: devices,
                claimed: Vec::new(),
                found: Found::Checkpoint,
            });
        }
        Ok(None) => format!(
            "{} has no entry for pod UID {:?}",
            checkpoint.display(),
            pod.uid
        ),
        Err(e) => e,
    };
    Err(PlexusError::Kubelet {
        pod: pod.label(),
        msg: format!("{kubelet_error}; {from_checkpoint}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        Config::load(
            serde_json::json!({
                "podResourcesSocket": dir.join("kubelet.sock"),
                "deviceCheckpointFile": dir.join("checkpoint"),
                "kubeletTimeoutSeconds": 2,
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn pod() -> PodView {
        PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u1".into(),
            annotations: Default::default(),
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// No kubelet socket and no checkpoint entry for the pod: code 11, naming both.
    #[test]
    fn an_unreachable_kubelet_without_a_checkpoint_entry_is_try_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let e = run(pod_devices(&config, &pod())).unwrap_err();
        let cni = e.to_cni();
        assert_eq!(cni.code, 11, "{e}");
        assert!(
            cni.msg.contains("kubelet.sock") && cni.msg.contains("checkpoint"),
            "{}",
            cni.msg
        );
        std::fs::write(
            dir.path().join("checkpoint"),
            r#"{"Data":{"PodDeviceEntries":[{"PodUID":"other","ContainerName":"c","ResourceName":"r/x","DeviceIDs":{"-1":["a"]}}]},"Checksum":1}"#,
        )
        .unwrap();
        let e = run(pod_devices(&config, &pod())).unwrap_err();
        assert_eq!(e.to_cni().code, 11);
        assert!(e.to_string().contains("no entry for pod UID \"u1\""), "{e}");
    }

    /// The kubelet down (its socket gone, as while it restarts): the checkpoint it keeps has the pod's devices.
    #[test]
    fn the_checkpoint_answers_while_the_kubelet_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::write(
            dir.path().join("checkpoint"),
            r#"{"Data":{"PodDeviceEntries":[{"PodUID":"u1","ContainerName":"c","ResourceName":"r/x","DeviceIDs":{"-1":["b","a"]}}]},"Checksum":1}"#,
        )
        .unwrap();
        let devices = run(pod_devices(&config, &pod())).unwrap();
        assert_eq!(devices.found, Found::Checkpoint);
        assert!(devices.claimed.is_empty());
        assert_eq!(
            plexus_api::devices::device_order(&devices.plugin, "r/x"),
            ["a", "b"]
        );
    }
}
