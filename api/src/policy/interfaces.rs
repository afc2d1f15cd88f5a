//! Rule 5: the interface name each attachment gets, valid for the kernel and unique in the pod.

use super::{PodView, PolicyError};
use crate::validate::valid_interface_name;

/// Rule 5: the interface an attachment gets: the runtime's for the default network (index 0), else the one the
/// selection asked for, else `net<index>`.
pub fn interface_name(index: usize, requested: Option<&str>, runtime_ifname: &str) -> String {
    match (index, requested) {
        (0, _) => runtime_ifname.to_owned(),
        (_, Some(name)) => name.to_owned(),
        (i, None) => format!("net{i}"),
    }
}

/// Rule 5 (R22, R41): every interface name is valid for the kernel and unique within the pod. `pod` names the pod
/// in the error (none in static mode).
pub fn check_interface_names<'a>(
    pod: Option<&PodView>,
    attachments: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), PolicyError> {
    let mut seen = std::collections::HashSet::new();
    for (network, ifname) in attachments {
        if !valid_interface_name(ifname) {
            return Err(PolicyError::InvalidInterface {
                pod: pod.map(PodView::label),
                network: network.to_owned(),
                ifname: ifname.to_owned(),
            });
        }
        if !seen.insert(ifname) {
            return Err(PolicyError::DuplicateInterface {
                pod: pod.map(PodView::label),
                network: network.to_owned(),
                ifname: ifname.to_owned(),
            });
        }
    }
    Ok(())
}
