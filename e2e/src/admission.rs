//! The admission webhook's table of refused pods, in one place for the two suites that use it: the controller's
//! (`controller::bad_pods_are_refused_naming_the_element`: each row refused at creation) and `kubectl plexus why`'s
//! (`kubectl_plexus::why_gives_the_webhooks_reason_for_every_pod_of_its_refusal_table`: each row's reason in `why`'s
//! answer for a pod that exists already).

/// A bridge NAD config with host-local IPAM.
pub const BRIDGE: &str = r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"host-local","subnet":"198.18.90.0/24"}}"#;
/// A NAD config that honours the `ips` capability (static IPAM).
pub const STATIC_IPS: &str = r#"{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","master":"lo","capabilities":{"ips":true},"ipam":{"type":"static"}}]}"#;

/// The NADs the table's pods select, by name: `plain` ([`BRIDGE`]) and `fixed` ([`STATIC_IPS`]).
pub const TABLE_NADS: [(&str, &str); 2] = [("plain", BRIDGE), ("fixed", STATIC_IPS)];

/// Each row: a networks annotation for a pod in namespace `n` (where [`TABLE_NADS`] exist), and a part of the
/// webhook's refusal message.
pub fn bad_pod_rows(n: &str) -> Vec<(String, String)> {
    [
        ("plain,,plain", "networks annotation element 1 ``: the entry is empty".to_owned()),
        ("", "the networks annotation is empty".to_owned()),
        ("no-such-net", format!("network {n}/no-such-net: no such NetworkAttachmentDefinition")),
        ("plain@net2, plain", format!(r#"network "{n}/plain": interface name "net2" is already used"#)),
        ("plain@eth0", r#"interface name "eth0" is already used"#.to_owned()),
        ("plain@a:b", r#"interface name "a:b" is not valid"#.to_owned()),
        (r#"[{"name":"plain","mac":"zz"}]"#, r#""mac" "zz" is not a 6-byte MAC address"#.to_owned()),
        (r#"[{"name":"fixed","ips":["nope"]}]"#, r#""ips" entry "nope" is not an IP address or CIDR"#.to_owned()),
        (
            r#"[{"name":"plain","default-route":["198.18.91.1"]},{"name":"fixed","default-route":["198.18.91.2"]}]"#,
            r#"elements 0 and 1 both set "default-route""#.to_owned(),
        ),
        (
            r#"[{"name":"plain","default-route":["198.18.91.1","198.18.91.2"]}]"#,
            format!("network {n}/plain: default-route lists two gateways of one family"),
        ),
        ("Bad_Name", r#"network name "Bad_Name" is not valid"#.to_owned()),
        ("[{", "not valid JSON".to_owned()),
    ]
    .into_iter()
    .map(|(networks, want)| (networks.to_owned(), want))
    .collect()
}
