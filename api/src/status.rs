//! The pod's `k8s.v1.cni.cncf.io/network-status` annotation (SPEC A.5), built from CNI ADD results.
//!
//! Plexus writes the shape Multus writes, because that is what consumers parse (Decision 2), and also meets the
//! spec where the two differ:
//!
//! * `name` is whatever the caller passes: `namespace/name` for a NAD (R44), the CNI network name for the default
//!   network, as Multus does.
//! * `ips` are **bare addresses** (`10.1.2.3`, not `10.1.2.3/24`), as Multus writes them. The spec's examples show
//!   prefixes but its text only says "IPs", and consumers written against Multus call a plain IP parser on them.
//! * `default` is written on **every** entry, `false` included (the spec requires the key; Multus leaves `false`
//!   out). Exactly one entry of an attachment is marked, and only for the default network (R43).
//! * `gateway` lists the gateways of the result's default routes (`0.0.0.0/0`, `::/0`), as Multus does;
//!   `default-route` (the spec's key, R49) carries the same list, and only when the caller says the attachment asked
//!   for the default route.
//! * An attachment whose result has no sandbox interface, or that returned no result at all, still gets one
//!   minimal entry (R43, R51), where Multus writes none.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::cni::result::{CniResult, Dns};

/// The pod annotation Plexus writes after ADD (R42).
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// One entry of the network-status annotation: one pod interface of one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `namespace/name` of the NAD, or the default network's name.
    pub name: String,
    /// The pod-side interface name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Bare addresses, without prefix length.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// True on exactly one entry of the pod: the default network's.
    #[serde(default, deserialize_with = "null_as_default")]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Gateways of the result's default routes (Multus's key).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gateway: Vec<String>,
    /// The same gateways, written when the attachment asked for the default route (the spec's key).
    #[serde(
        default,
        rename = "default-route",
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_route: Vec<String>,
    /// Device Information Spec object, when the attachment has one.
    #[serde(
        default,
        rename = "device-info",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<Value>,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The network-status annotation could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the network-status annotation is not a JSON list of status objects: {0}")]
pub struct StatusError(pub String);

/// Builds the entries of one attachment from its ADD result.
///
/// * `network_name`: what goes into `name` (`namespace/name` for a NAD).
/// * `is_default`: this is the cluster default network; one of the returned entries gets `default: true`.
/// * `result`: the ADD result, or `None` when the delegate returned none (old CNI versions may).
/// * `requested_default_route`: the attachment carries the pod's default route (its selection had
///   `default-route`, or it is the default network and no selection took the route away); `default-route` is then
///   written with the gateways found.
///
/// The reference algorithm (Multus `CreateNetworkStatuses`), with Plexus's changes marked:
///
/// * exactly one interface in the result: one entry; `interface`, `mac` and `mtu` only if it has a `sandbox`;
///   every IP of the result, whatever its `interface` index;
/// * several interfaces, some in the sandbox: one entry per sandbox interface, holding the IPs whose index points
///   at it; IPs without an index go to the last sandbox entry; IPs of host-side interfaces are not reported. The
///   entry that counts for `default`/`default-route` is the first sandbox interface an IP with a gateway points at,
///   else the first sandbox interface (Plexus: an IP with a gateway on a *host* interface does not leave the
///   default network without a `default: true` entry, as it can in Multus);
/// * no sandbox interface at all (or no interfaces): Plexus writes one entry without `interface`, holding the IPs
///   that point at no host-side interface (Multus writes nothing);
/// * no result: Plexus writes one entry with only `name` and `default` (R51).
///
/// `gateway` and `dns` are the result's and go on every entry, as in Multus; `device-info` is left for the caller.
pub fn statuses_from_result(
    network_name: &str,
    is_default: bool,
    result: Option<&CniResult>,
    requested_default_route: bool,
) -> Vec<NetworkStatus> {
    let minimal = NetworkStatus {
        name: network_name.to_owned(),
        default: is_default,
        ..NetworkStatus::default()
    };
    let Some(result) = result else {
        return vec![minimal];
    };
    let gateway: Vec<String> = result
        .routes
        .iter()
        .filter(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_unspecified())
        .filter_map(|r| {
            // A default route without `gw` goes through its family's gateway from `ips` (CNI: "if gw is
            // missing, the matching ips[].gateway may be used").
            r.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .filter_map(|ip| ip.gateway)
                    .find(|gw| gw.is_ipv4() == r.dst.addr().is_ipv4())
            })
            .map(|gw| gw.to_string())
        })
        .fold(Vec::new(), |mut seen, gw| {
            if !seen.contains(&gw) {
                seen.push(gw);
            }
            seen
        });
    let base = NetworkStatus {
        dns: (!result.dns.is_empty()).then(|| result.dns.clone()),
        gateway: gateway.clone(),
        ..minimal
    };
    let mark_primary = |entry: &mut NetworkStatus| {
        entry.default = is_default;
        if requested_default_route {
            entry.default_route = gateway.clone();
        }
    };
    let bare = |ip: &crate::cni::result::IpConfig| ip.address.addr().to_string();
    let in_sandbox = |index: usize| {
        result
            .interfaces
            .get(index)
            .is_some_and(|i| !i.sandbox.is_empty())
    };

    if let [only] = result.interfaces.as_slice() {
        let mut entry = NetworkStatus {
            ips: result.ips.iter().map(bare).collect(),
            ..base
        };
        if !only.sandbox.is_empty() {
            fill_interface(&mut entry, only);
        }
        mark_primary(&mut entry);
        return vec![entry];
    }

    let sandboxes: Vec<usize> = (0..result.interfaces.len())
        .filter(|i| in_sandbox(*i))
        .collect();
    if sandboxes.is_empty() {
        let mut entry = NetworkStatus {
            ips: result
                .ips
                .iter()
                .filter(|ip| ip.interface.is_none_or(|i| i >= result.interfaces.len()))
                .map(bare)
                .collect(),
            ..base
        };
        mark_primary(&mut entry);
        return vec![entry];
    }

    let mut entries: Vec<NetworkStatus> = sandboxes
        .iter()
        .map(|&i| {
            let mut entry = NetworkStatus {
                default: false,
                ..base.clone()
            };
            fill_interface(&mut entry, &result.interfaces[i]);
            entry
        })
        .collect();
    let position = |index: usize| sandboxes.iter().position(|&s| s == index);
    for ip in &result.ips {
        let target = match ip.interface {
            Some(index) => position(index),
            None => Some(entries.len() - 1),
        };
        if let Some(at) = target {
            entries[at].ips.push(bare(ip));
        }
    }
    let primary = result
        .ips
        .iter()
        .filter(|ip| ip.gateway.is_some())
        .find_map(|ip| ip.interface.and_then(position))
        .unwrap_or(0);
    mark_primary(&mut entries[primary]);
    entries
}

fn fill_interface(entry: &mut NetworkStatus, iface: &crate::cni::result::Interface) {
    entry.interface = Some(iface.name.clone());
    entry.mac = (!iface.mac.is_empty()).then(|| iface.mac.clone());
    entry.mtu = iface.mtu;
}

/// Reads a network-status annotation, Plexus's or Multus's (`default` may be missing, `dns` may be `{}`).
pub fn parse_statuses(annotation: &str) -> Result<Vec<NetworkStatus>, StatusError> {
    serde_json::from_str(annotation).map_err(|e| StatusError(e.to_string()))
}

/// The annotation value: a compact JSON list.
pub fn print_statuses(statuses: &[NetworkStatus]) -> String {
    serde_json::to_string(statuses).expect("a network status always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::{Interface, IpConfig, Route};
    use serde_json::json;

    fn iface(name: &str, mac: &str, sandbox: &str) -> Interface {
        Interface {
            name: name.into(),
            mac: mac.into(),
            sandbox: sandbox.into(),
            ..Interface::default()
        }
    }

    fn ip(address: &str, gateway: Option<&str>, interface: Option<usize>) -> IpConfig {
        IpConfig {
            address: address.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            interface,
        }
    }

    fn route(dst: &str, gw: Option<&str>) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            gw: gw.map(|g| g.parse().unwrap()),
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    const NETNS: &str = "/var/run/netns/pod";

    #[test]
    fn single_interface_result() {
        let result = CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                mtu: Some(1450),
                ..iface("eth0", "0a:58:0a:f4:03:11", NETNS)
            }],
            ips: vec![
                ip("10.244.3.17/24", Some("10.244.3.1"), Some(0)),
                ip("fd00::11/64", None, None),
            ],
            routes: vec![
                route("0.0.0.0/0", Some("10.244.3.1")),
                route("10.96.0.0/12", Some("10.244.3.254")),
                route("::/0", Some("fd00::1")),
                route("0.0.0.0/0", None),
            ],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                search: vec!["svc.cluster.local".into()],
                ..Dns::default()
            },
        };
        let statuses = statuses_from_result("pod-net", true, Some(&result), true);
        assert_eq!(
            serde_json::to_value(&statuses).unwrap(),
            json!([{
                "name": "pod-net", "interface": "eth0", "ips": ["10.244.3.17", "fd00::11"],
                "mac": "0a:58:0a:f4:03:11", "mtu": 1450, "default": true,
                "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
                "gateway": ["10.244.3.1", "fd00::1"], "default-route": ["10.244.3.1", "fd00::1"]
            }])
        );
        // A secondary attachment without the default route: `default: false` is written, `default-route` is not.
        let statuses = statuses_from_result("team-a/net", false, Some(&result), false);
        let v = serde_json::to_value(&statuses).unwrap();
        assert_eq!(v[0]["default"], false);
        assert!(v[0].get("default-route").is_none());
        assert_eq!(v[0]["gateway"], json!(["10.244.3.1", "fd00::1"]));
    }

    #[test]
    fn single_interface_without_sandbox_has_no_interface_but_all_ips() {
        let result = CniResult {
            interfaces: vec![iface("cni0", "aa:aa:aa:aa:aa:aa", "")],
            ips: vec![ip("10.0.0.5/24", None, Some(0))],
            ..CniResult::default()
        };
        let statuses = statuses_from_result("ns/a", false, Some(&result), false);
        assert_eq!(
            statuses,
            [NetworkStatus {
                name: "ns/a".into(),
                ips: vec!["10.0.0.5".into()],
                ..NetworkStatus::default()
            }]
        );
    }

    #[test]
    fn bridge_style_result_reports_only_the_sandbox_interface() {
        let result = CniResult {
            cni_version: "1.0.0".into(),
            interfaces: vec![
                iface("cni0", "aa:aa:aa:aa:aa:01", ""),
                iface("veth1234", "aa:aa:aa:aa:aa:02", ""),
                iface("net1", "0a:58:0a:14:00:09", NETNS),
            ],
            ips: vec![ip("10.20.0.9/24", Some("10.20.0.1"), Some(2))],
            routes: vec![],
            dns: Dns::default(),
        };
        let statuses = statuses_from_result("team-a/storage-net", false, Some(&result), false);
        assert_eq!(
            print_statuses(&statuses),
            r#"[{"name":"team-a/storage-net","interface":"net1","ips":["10.20.0.9"],"mac":"0a:58:0a:14:00:09","default":false}]"#
        );
    }

    #[test]
    fn multi_sandbox_result_gives_one_entry_per_pod_interface() {
        let result = CniResult {
            interfaces: vec![
                iface("net1", "0a:00:00:00:00:01", NETNS),
                iface("host-side", "0a:00:00:00:00:02", ""),
                iface("net2", "0a:00:00:00:00:03", NETNS),
            ],
            ips: vec![
                ip("10.1.0.5/24", None, Some(0)),
                ip("10.2.0.5/24", None, Some(1)),
                ip("10.3.0.5/24", None, Some(2)),
                ip("10.4.0.5/24", None, None),
            ],
            routes: vec![route("0.0.0.0/0", Some("10.3.0.1"))],
            ..CniResult::default()
        };
        let statuses = statuses_from_result("ns/multi", false, Some(&result), true);
        assert_eq!(statuses.len(), 2);
        assert_eq!(statuses[0].interface.as_deref(), Some("net1"));
        assert_eq!(statuses[0].ips, ["10.1.0.5"]);
        assert_eq!(statuses[1].interface.as_deref(), Some("net2"));
        assert_eq!(
            statuses[1].ips,
            ["10.3.0.5", "10.4.0.5"],
            "unindexed IPs go to the last sandbox entry; host-side IPs are not reported"
        );
        assert!(statuses.iter().all(|s| !s.default));
        assert!(statuses.iter().all(|s| s.gateway == ["10.3.0.1"]));
        assert_eq!(
            statuses[0].default_route,
            ["10.3.0.1"],
            "no gateway IP: the first sandbox entry"
        );
        assert!(statuses[1].default_route.is_empty());
    }

    #[test]
    fn a_default_route_without_gw_uses_its_familys_ip_gateway() {
        let result = CniResult {
            interfaces: vec![iface("eth0", "0a:00:00:00:00:01", NETNS)],
            ips: vec![
                ip("fd00::5/64", Some("fd00::1"), Some(0)),
                ip("10.1.0.5/24", Some("10.1.0.1"), Some(0)),
            ],
            routes: vec![route("0.0.0.0/0", None), route("10.8.0.0/16", None)],
            ..CniResult::default()
        };
        let statuses = statuses_from_result("cluster", true, Some(&result), true);
        assert_eq!(statuses[0].gateway, ["10.1.0.1"]);
        assert_eq!(statuses[0].default_route, ["10.1.0.1"]);
    }

    #[test]
    fn default_network_gateway_selection() {
        let mut result = CniResult {
            interfaces: vec![
                iface("eth0", "0a:00:00:00:00:01", NETNS),
                iface("veth0", "0a:00:00:00:00:02", ""),
                iface("eth1", "0a:00:00:00:00:03", NETNS),
            ],
            ips: vec![
                ip("10.1.0.5/24", None, Some(0)),
                ip("10.9.0.5/24", Some("10.9.0.1"), Some(1)),
                ip("10.3.0.5/24", Some("10.3.0.1"), Some(2)),
            ],
            ..CniResult::default()
        };
        // The first sandbox interface an IP with a gateway points at wins (the host-side one is passed over).
        let statuses = statuses_from_result("cluster", true, Some(&result), true);
        let marked: Vec<_> = statuses
            .iter()
            .filter(|s| s.default)
            .map(|s| s.interface.as_deref().unwrap())
            .collect();
        assert_eq!(marked, ["eth1"]);
        // No IP has a gateway: the first sandbox interface.
        for ip in &mut result.ips {
            ip.gateway = None;
        }
        let statuses = statuses_from_result("cluster", true, Some(&result), false);
        let marked: Vec<_> = statuses
            .iter()
            .filter(|s| s.default)
            .map(|s| s.interface.as_deref().unwrap())
            .collect();
        assert_eq!(marked, ["eth0"]);
    }

    #[test]
    fn no_result_gives_a_minimal_entry() {
        for (is_default, want) in [
            (true, r#"[{"name":"cluster","default":true}]"#),
            (false, r#"[{"name":"ns/a","default":false}]"#),
        ] {
            let name = if is_default { "cluster" } else { "ns/a" };
            assert_eq!(
                print_statuses(&statuses_from_result(name, is_default, None, true)),
                want
            );
        }
    }

    #[test]
    fn ips_without_interface_index_and_no_interfaces() {
        // An IPAM-style (or converted 0.2.0) result: no interfaces, IPs without an index.
        let result = CniResult {
            cni_version: "0.2.0".into(),
            interfaces: vec![],
            ips: vec![
                ip("10.0.0.7/24", Some("10.0.0.1"), None),
                ip("fd00::7/64", None, None),
            ],
            routes: vec![route("0.0.0.0/0", Some("10.0.0.1"))],
            dns: Dns::default(),
        };
        let statuses = statuses_from_result("ns/ipam-only", false, Some(&result), true);
        assert_eq!(
            print_statuses(&statuses),
            r#"[{"name":"ns/ipam-only","ips":["10.0.0.7","fd00::7"],"default":false,"gateway":["10.0.0.1"],"default-route":["10.0.0.1"]}]"#
        );
        // Host-side interfaces only: their IPs are not the pod's.
        let result = CniResult {
            interfaces: vec![iface("h1", "", ""), iface("h2", "", "")],
            ips: vec![
                ip("10.0.0.8/24", None, Some(1)),
                ip("10.0.0.9/24", None, None),
            ],
            ..CniResult::default()
        };
        let statuses = statuses_from_result("ns/host", true, Some(&result), false);
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].ips, ["10.0.0.9"]);
        assert!(statuses[0].default);
        assert_eq!(statuses[0].interface, None);
        assert_eq!(statuses[0].mac, None, "no mac without an interface (R47)");
    }

    #[test]
    fn parses_what_multus_writes_and_round_trips_its_own() {
        let multus = r#"[{"name":"cbr0","interface":"eth0","ips":["10.244.1.5"],"mac":"0a:58:0a:f4:01:05","mtu":1450,"default":true,"dns":{},"gateway":["10.244.1.1"]},
                         {"name":"ns/macvlan","interface":"net1","ips":["192.168.1.200"],"mac":"86:1d:96:ff:55:0d","dns":{},"device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.2"}}},
                         {"name":"ns/x","ips":null,"gateway":null,"default":null}]"#;
        let statuses = parse_statuses(multus).unwrap();
        assert_eq!(statuses.len(), 3);
        assert!(statuses[0].default);
        assert_eq!(statuses[0].mtu, Some(1450));
        assert_eq!(statuses[0].dns, Some(Dns::default()));
        assert!(!statuses[1].default, "a missing default is false");
        assert_eq!(
            statuses[1].device_info.as_ref().unwrap()["pci"]["pci-address"],
            "0000:03:02.2"
        );
        assert_eq!(
            statuses[2],
            NetworkStatus {
                name: "ns/x".into(),
                ..NetworkStatus::default()
            }
        );
        assert_eq!(
            parse_statuses(&print_statuses(&statuses)).unwrap(),
            statuses
        );
        assert!(parse_statuses(r#"{"name":"a"}"#).is_err());
        assert!(
            parse_statuses(r#"[{"interface":"eth0"}]"#).is_err(),
            "name is required"
        );
    }
}
