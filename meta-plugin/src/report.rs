//! What an ADD reports about a pod's attachments: the network-status entries and the pod's events, from its record.

use plexus_api::cni::result::CniResult;
use plexus_api::cni::version;
use plexus_api::status::{NetworkStatus, statuses_from_result};
use serde_json::Value;

use crate::record;
use crate::source::PodEvent;

/// The network-status entries of every attachment, in order. When a selection took the default route (R33), its
/// entry shows the requested gateways and the other attachments show none.
pub fn network_statuses(record: &record::Record) -> Vec<NetworkStatus> {
    let taken = record
        .attachments
        .iter()
        .find(|a| !a.is_default && a.default_route.is_some());
    record
        .attachments
        .iter()
        .flat_map(|a| {
            let result = recorded_result(a);
            let mut entries = statuses_from_result(
                &a.network,
                a.is_default,
                result.as_ref(),
                a.default_route_requested,
            );
            if let Some(info) = a.device.as_ref().and_then(|d| d.info.clone()) {
                for entry in entries
                    .iter_mut()
                    .filter(|e| e.interface.as_deref().is_none_or(|i| i == a.ifname))
                {
                    entry.device_info = Some(info.clone());
                }
            }
            if let Some(chosen) = taken {
                let requested: Vec<String> = chosen
                    .default_route
                    .iter()
                    .flatten()
                    .map(ToString::to_string)
                    .collect();
                for entry in &mut entries {
                    if a.index != chosen.index {
                        entry.gateway.clear();
                        entry.default_route.clear();
                    } else if !requested.is_empty()
                        && entry.interface.as_deref().is_none_or(|i| i == a.ifname)
                    {
                        entry.gateway = requested.clone();
                        entry.default_route = requested.clone();
                    }
                }
            }
            entries
        })
        .collect()
}

/// One `AddedInterface` event per attachment, worded as Multus words it: every IP of the result with its prefix
/// (`Add eth0 [198.18.0.7/24] from ns/net`).
pub fn attach_events(record: &record::Record) -> Vec<PodEvent> {
    record
        .attachments
        .iter()
        .map(|a| {
            let ips: Vec<String> = recorded_result(a)
                .map(|r| r.ips.iter().map(|ip| ip.address.to_string()).collect())
                .unwrap_or_default();
            PodEvent {
                reason: "AddedInterface".into(),
                message: format!("Add {} [{}] from {}", a.ifname, ips.join(", "), a.network),
                warning: false,
            }
        })
        .collect()
}

/// A Warning event for each thing the pod's owner should hear about (Decision 7).
pub fn warning_events(warnings: &[plexus_api::policy::PolicyWarning]) -> Vec<PodEvent> {
    warnings
        .iter()
        .map(|w| PodEvent {
            reason: "CapabilityNotDeclared".into(),
            message: w.to_string(),
            warning: true,
        })
        .collect()
}

/// The ResourceClaim statuses of an ADD (KEP-4817): per claim, a server-side apply body naming the pod's interface,
/// addresses (CIDR) and MAC for each of its devices that an attachment got.
pub fn claim_statuses(record: &record::Record) -> Vec<((String, String), Value)> {
    let mut per_claim: Vec<((String, String), Vec<_>)> = Vec::new();
    for a in &record.attachments {
        let Some(claim) = a.device.as_ref().and_then(|d| d.claim.as_ref()) else {
            continue;
        };
        let result = recorded_result(a);
        let in_pod = result.as_ref().and_then(|r| {
            r.interfaces
                .iter()
                .position(|i| i.name == a.ifname && !i.sandbox.is_empty())
        });
        let (ips, mac) = match (&result, in_pod) {
            (Some(r), Some(index)) => (
                r.ips
                    .iter()
                    .filter(|ip| ip.interface == Some(index))
                    .map(|ip| ip.address.to_string())
                    .collect(),
                Some(r.interfaces[index].mac.clone()).filter(|m| !m.is_empty()),
            ),
            (Some(r), None) => (
                r.ips.iter().map(|ip| ip.address.to_string()).collect(),
                None,
            ),
            (None, _) => (Vec::new(), None),
        };
        let key = (claim.namespace.clone(), claim.name.clone());
        let entry = (claim, a.ifname.as_str(), ips, mac);
        match per_claim.iter_mut().find(|(k, _)| *k == key) {
            Some((_, devices)) => devices.push(entry),
            None => per_claim.push((key, vec![entry])),
        }
    }
    per_claim
        .into_iter()
        .map(|((namespace, name), devices)| {
            let body = plexus_api::devices::claim_status_apply(&namespace, &name, &devices);
            ((namespace, name), body)
        })
        .collect()
}

/// An attachment's recorded ADD result, parsed in its delegate's version.
fn recorded_result(a: &record::RecordedAttachment) -> Option<CniResult> {
    let version = a
        .delegate
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(version::IMPLICIT);
    a.result
        .as_ref()
        .and_then(|r| CniResult::from_value(r, version).ok())
}
