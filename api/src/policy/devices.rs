//! Device networks in a plan: each attachment whose NAD names a resource gets one of the pod's devices
//! ([`crate::devices::assign`]), and its delegate is told which (Multus's keys and capabilities).

use serde_json::Value;

use super::{PlannedAttachment, PodView, PolicyError};
use crate::devices::{
    AssignedDevice, ContainerDevices, DEVICE_ID_KEY, DEVICE_INFO_FILE_CAPABILITY, assign,
    attachment_info_file, inject_device_id,
};

/// Gives every attachment with a resource name its device, before any delegate runs: `deviceID` and `pciBusID` in
/// every plugin of its delegate, the `deviceID` and `CNIDeviceInfoFile` capability arguments (each plugin gets only
/// those it declares), and the device in the attachment (for the record and network-status). `info_dir` is the
/// device-info directory (`/var/run/k8s.cni.cncf.io/devinfo`). Fails, before anything runs, when a resource has
/// fewer devices than attachments.
pub fn give_devices(
    pod: &PodView,
    attachments: &mut [PlannedAttachment],
    devices: &[ContainerDevices],
    info_dir: &str,
    container_id: &str,
) -> Result<(), PolicyError> {
    let wanted: Vec<(&str, Option<&str>)> = attachments
        .iter()
        .map(|a| (a.network.as_str(), a.resource_name.as_deref()))
        .collect();
    let given = assign(&pod.label(), &wanted, devices)?;
    for (attachment, given) in attachments.iter_mut().zip(given) {
        let Some((resource_name, device_id)) = given else {
            continue;
        };
        inject_device_id(&mut attachment.delegate, &device_id);
        let info_file = attachment_info_file(
            info_dir,
            &attachment.delegate.name,
            container_id,
            &attachment.ifname,
        );
        attachment
            .capability_args
            .insert(DEVICE_ID_KEY.into(), Value::String(device_id.clone()));
        attachment.capability_args.insert(
            DEVICE_INFO_FILE_CAPABILITY.into(),
            Value::String(info_file.clone()),
        );
        attachment.device = Some(AssignedDevice {
            resource_name,
            device_id,
            info_file: Some(info_file),
            info: None,
            claim: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::NetworkConfigList;
    use crate::policy::{NetworkRef, NetworkRequest, Policy, ResolvedNetwork, plan_pod};
    use crate::selection::NetworkSelection;

    #[test]
    fn each_device_network_gets_its_own_device_and_the_others_none() {
        let pod = PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            annotations: Default::default(),
        };
        let conf = |name: &str, caps: &str| {
            NetworkConfigList::parse(
                format!(r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[{{"type":"sriov"{caps}}}]}}"#)
                    .as_bytes(),
            )
            .unwrap()
        };
        let request = |name: &str| NetworkRequest {
            reference: NetworkRef::Nad {
                namespace: "ns".into(),
                name: name.into(),
            },
            selection: Some(NetworkSelection {
                name: name.into(),
                namespace: "ns".into(),
                ..NetworkSelection::default()
            }),
        };
        let resolved = |name: &str, caps: &str, resource: Option<&str>| ResolvedNetwork {
            display: format!("ns/{name}"),
            config: conf(name, caps),
            resource_name: resource.map(str::to_owned),
        };
        let requests = [
            NetworkRequest {
                reference: NetworkRef::Delegate(0),
                selection: None,
            },
            request("a"),
            request("b"),
        ];
        let networks = [
            resolved("default", "", None),
            resolved("a", r#","capabilities":{"deviceID":true}"#, Some("r/x")),
            resolved("b", "", Some("r/x")),
        ];
        let mut plan = plan_pod(
            &Policy::default(),
            &pod,
            &requests,
            &networks,
            "eth0",
            &Default::default(),
        )
        .unwrap();
        let devices = [ContainerDevices {
            container: "c".into(),
            resource_name: "r/x".into(),
            device_ids: vec!["2".into(), "1".into()],
        }];
        give_devices(&pod, &mut plan.attachments, &devices, "/d", "cid").unwrap();
        let [default, a, b] = &plan.attachments[..] else {
            panic!("three attachments")
        };
        assert!(default.device.is_none() && default.capability_args.is_empty());
        assert_eq!(a.device.as_ref().unwrap().device_id, "1");
        assert_eq!(b.device.as_ref().unwrap().device_id, "2");
        assert_eq!(a.delegate.plugins[0].raw()["pciBusID"], "1");
        assert_eq!(
            a.device.as_ref().unwrap().info_file.as_deref(),
            Some("/d/cni/a-cid_net1")
        );
        // Only a plugin that declares the capability gets it in runtimeConfig.
        let req = a.delegate.request_config(
            0,
            "1.0.0",
            &crate::cni::config::RequestExtras {
                capability_args: Some(&a.capability_args),
                ..Default::default()
            },
        );
        assert_eq!(req["runtimeConfig"]["deviceID"], "1");
        let req = b.delegate.request_config(
            0,
            "1.0.0",
            &crate::cni::config::RequestExtras {
                capability_args: Some(&b.capability_args),
                ..Default::default()
            },
        );
        assert!(req.get("runtimeConfig").is_none());
        assert_eq!(req["deviceID"], "2");

        let mut again = plan.attachments.clone();
        let too_few = give_devices(&pod, &mut again, &devices[..0], "/d", "cid").unwrap_err();
        assert!(matches!(too_few, PolicyError::Devices(_)), "{too_few}");
    }
}
