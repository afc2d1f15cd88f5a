//! Whether a pod got the networks it asked for: its networks annotation (the request) against its network-status
//! (what the plugin attached). The controller sets the pod condition `k8s.cni.cncf.io/NetworksReady` from this.

use std::net::IpAddr;

use crate::selection::NetworkSelection;
use crate::status::NetworkStatus;

/// The pod condition type the controller sets.
pub const NETWORKS_READY_CONDITION: &str = "k8s.cni.cncf.io/NetworksReady";

/// One difference between the request and the network-status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("network {network} ({interface}) is missing from network-status")]
    Missing { network: String, interface: String },
    #[error(
        "network {network} on {interface}: requested IP {ip} is not among its addresses [{found}]"
    )]
    MissingIp {
        network: String,
        interface: String,
        ip: String,
        found: String,
    },
    #[error("network {network} on {interface}: MAC is {found}, requested {requested}")]
    WrongMac {
        network: String,
        interface: String,
        requested: String,
        found: String,
    },
    #[error(
        "interface {interface} of network {network} is in network-status but was not requested"
    )]
    Extra { network: String, interface: String },
}

/// Compares a pod's selections (as parsed by [`crate::selection::parse_selections`]) with its network-status.
///
/// A selection matches a non-default status entry named `namespace/name` (or the bare `name` when the NAD is in
/// the pod's namespace, as older writers did) on the requested interface, or, without a requested interface, the
/// first such entry not matched yet. Requested `ips` (prefix lengths ignored) must all be among the entry's
/// addresses; a requested `mac` must equal the entry's. Non-default entries that match no selection are extra,
/// unless their name is in `expected_extra` (the cluster's `defaultNetworks`, which every pod gets).
///
/// Returns every mismatch, in request order, then the extra entries.
pub fn compare(
    pod_namespace: &str,
    selections: &[NetworkSelection],
    statuses: &[NetworkStatus],
    expected_extra: &[String],
) -> Vec<Mismatch> {
    let mut used = vec![false; statuses.len()];
    let mut mismatches = Vec::new();
    for sel in selections {
        let network = format!("{}/{}", sel.namespace, sel.name);
        let named = |s: &NetworkStatus| {
            s.name == network || (sel.namespace == pod_namespace && s.name == sel.name)
        };
        let found = statuses.iter().enumerate().position(|(i, s)| {
            !used[i]
                && !s.default
                && named(s)
                && match &sel.interface {
                    Some(want) => s.interface.as_deref() == Some(want.as_str()),
                    None => true,
                }
        });
        let interface = sel
            .interface
            .clone()
            .unwrap_or_else(|| "a generated interface".into());
        let Some(index) = found else {
            mismatches.push(Mismatch::Missing { network, interface });
            continue;
        };
        used[index] = true;
        let entry = &statuses[index];
        let interface = entry.interface.clone().unwrap_or(interface);
        for ip in sel.ips.iter().flatten() {
            let address = ip.split('/').next().unwrap_or(ip);
            let wanted = address.parse::<IpAddr>().ok();
            let present = entry.ips.iter().any(|have| {
                have == address || (wanted.is_some() && have.parse::<IpAddr>().ok() == wanted)
            });
            if !present {
                mismatches.push(Mismatch::MissingIp {
                    network: network.clone(),
                    interface: interface.clone(),
                    ip: ip.clone(),
                    found: entry.ips.join(", "),
                });
            }
        }
        if let Some(requested) = &sel.mac {
            let found = entry.mac.clone().unwrap_or_default();
            if !found.eq_ignore_ascii_case(requested) {
                mismatches.push(Mismatch::WrongMac {
                    network: network.clone(),
                    interface: interface.clone(),
                    requested: requested.clone(),
                    found: if found.is_empty() {
                        "absent".into()
                    } else {
                        found
                    },
                });
            }
        }
    }
    for (i, s) in statuses.iter().enumerate() {
        let expected = expected_extra
            .iter()
            .any(|e| *e == s.name || s.name.rsplit_once('/').is_some_and(|(_, n)| n == e));
        if !used[i] && !s.default && !expected {
            mismatches.push(Mismatch::Extra {
                network: s.name.clone(),
                interface: s.interface.clone().unwrap_or_else(|| "(none)".into()),
            });
        }
    }
    mismatches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::parse_selections;
    use crate::status::parse_statuses;

    fn check(annotation: &str, status: &str) -> Vec<String> {
        let sels = parse_selections(annotation, "ns").unwrap();
        let statuses = parse_statuses(status).unwrap();
        compare("ns", &sels, &statuses, &[])
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const DEFAULT: &str =
        r#"{"name":"pod-net","interface":"eth0","ips":["198.18.0.2"],"default":true}"#;

    #[test]
    fn all_attached_is_no_mismatch() {
        let status = format!(
            r#"[{DEFAULT},
               {{"name":"ns/a","interface":"net1","ips":["198.18.1.2"]}},
               {{"name":"other/b","interface":"data0","ips":["198.18.2.5","2001:db8::5"],"mac":"0A:58:00:00:00:01"}},
               {{"name":"a","interface":"net3"}}]"#
        );
        let got = check(
            r#"[{"name":"a"},
                {"name":"b","namespace":"other","interface":"data0","ips":["198.18.2.5/24","2001:db8:0::5/64"],"mac":"0a:58:00:00:00:01"},
                {"name":"a"}]"#,
            &status,
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn missing_wrong_and_extra_are_all_reported() {
        let status = format!(
            r#"[{DEFAULT},
               {{"name":"ns/b","interface":"data0","ips":["198.18.2.6"],"mac":"0a:58:00:00:00:02"}},
               {{"name":"ns/z","interface":"net9"}}]"#
        );
        let got = check(
            r#"[{"name":"a","interface":"net1"},
                {"name":"b","interface":"data0","ips":["198.18.2.5/24"],"mac":"0a:58:00:00:00:01"}]"#,
            &status,
        );
        assert_eq!(
            got,
            [
                "network ns/a (net1) is missing from network-status",
                "network ns/b on data0: requested IP 198.18.2.5/24 is not among its addresses [198.18.2.6]",
                "network ns/b on data0: MAC is 0a:58:00:00:00:02, requested 0a:58:00:00:00:01",
                "interface net9 of network ns/z is in network-status but was not requested",
            ]
        );
    }

    #[test]
    fn interface_must_match_and_default_entries_never_count() {
        let status = r#"[{"name":"ns/a","interface":"net1","default":true}]"#;
        assert_eq!(
            check("a@net1", status),
            ["network ns/a (net1) is missing from network-status"]
        );
        let status = r#"[{"name":"ns/a","interface":"net2"}]"#;
        assert_eq!(check("a@net1", status).len(), 2);
    }

    #[test]
    fn default_networks_are_expected_extras() {
        let sels = parse_selections("a", "ns").unwrap();
        let statuses = parse_statuses(
            r#"[{"name":"ns/a","interface":"net2"},{"name":"kube-system/mon","interface":"net1"}]"#,
        )
        .unwrap();
        assert!(compare("ns", &sels, &statuses, &["mon".into()]).is_empty());
        assert_eq!(compare("ns", &sels, &statuses, &[]).len(), 1);
    }
}
