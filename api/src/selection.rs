//! The pod's `k8s.v1.cni.cncf.io/networks` annotation (SPEC A.4, A.11): which secondary networks a pod wants.
//!
//! Two forms are accepted (R12). The string is read as JSON when it contains `[`, `{` or `"` anywhere, and as the
//! comma form otherwise, exactly like the reference parser:
//!
//! * comma form: `net-a, other-ns/net-b@eth5` — items split on `,`, each `[namespace/]name[@interface]`, with
//!   whitespace around items and around `/` and `@` trimmed;
//! * JSON form: a list of objects (`[{"name":"net-a","interface":"eth5",...}]`).
//!
//! Plexus is stricter than the reference parser (see `docs/compatibility.md`): an invalid annotation is an error
//! naming the bad element (Decision 1), including empty entries and `null` elements; JSON keys match exactly and
//! unknown keys are ignored (Decision 4); interface names follow the kernel rule in both forms (Decision 5); and
//! every value the spec constrains (R16, R19, R21, R26, R29, R32, R35) is checked here, so a bad value never reaches
//! a delegate.
//!
//! Normalisation done while parsing (so two spellings of one request compare equal): `mac` and `infiniband-guid`
//! become lower-case, colon-separated; a port mapping's `protocol` becomes lower-case and defaults to `tcp`; an
//! empty `namespace` becomes the pod's namespace. `ips` are kept exactly as written (only checked).

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::validate::{
    json_kind, valid_dns1123_label, valid_dns1123_subdomain, valid_interface_name, valid_nad_name,
};

/// The pod annotation that selects secondary networks (R11).
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

/// The pod annotation that replaces the cluster default network for one pod (Multus convention, SPEC A.12).
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// One element of the networks annotation: a request to attach one network (DESIGN: "selection").
///
/// Built by [`parse_selections`], which fills `namespace` and validates every field. Deserialising it directly
/// validates the element too but leaves an empty `namespace` empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct NetworkSelection {
    /// The NetworkAttachmentDefinition's name.
    pub name: String,
    /// The NAD's namespace; the pod's own when the annotation left it out.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Requested pod-side interface name (`interface`, legacy `interfaceRequest`, or the comma form's `@ifname`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Static addresses (`runtimeConfig.ips`), each an IP or CIDR, as written. At least one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
    /// A 6-byte MAC (`runtimeConfig.mac`), lower-case and colon-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Free-form arguments merged into each plugin's `args.cni` (R24, R25).
    #[serde(rename = "cni-args", skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// `runtimeConfig.portMappings`. At least one.
    #[serde(rename = "portMappings", skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    /// `runtimeConfig.bandwidth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// This attachment gets the pod's default route via these gateways (possibly none listed). At most one
    /// selection of a pod carries it.
    #[serde(rename = "default-route", skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Vec<IpAddr>>,
    /// An 8-byte InfiniBand GUID (`runtimeConfig.infinibandGUID`), lower-case and colon-separated.
    #[serde(rename = "infiniband-guid", skip_serializing_if = "Option::is_none")]
    pub infiniband_guid: Option<String>,
    /// The name of an `IPAMClaim` (in the pod's namespace) whose addresses the IPAM plugin should use (v1.3, A.8).
    /// Accepted together with `ips` (Decision 3).
    #[serde(
        rename = "ipam-claim-reference",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_claim_reference: Option<String>,
}

/// One port mapping, in the shape of the CNI `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (lower-case, as kubelet sends it).
    pub protocol: String,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// Traffic shaping, in the shape of the CNI `bandwidth` capability: rates in bit/s, bursts in bits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

/// Why the networks annotation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("the networks annotation is empty")]
    Empty,
    #[error("the networks annotation is not valid JSON: {0}")]
    Json(String),
    #[error("the networks annotation must be a JSON list of objects, but it is {0}")]
    NotAList(&'static str),
    /// `index` counts from 0; `text` is the element as written (JSON elements re-printed compactly, long ones cut).
    #[error("networks annotation element {index} `{text}`: {reason}")]
    Element {
        index: usize,
        text: String,
        reason: ElementError,
    },
    #[error(
        "networks annotation elements {first} and {second} both set \"default-route\"; at most one element may (R32)"
    )]
    SeveralDefaultRoutes { first: usize, second: usize },
}

/// What is wrong with one element of the annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElementError {
    #[error("the entry is empty")]
    EmptyEntry,
    #[error("more than one '/' (expected [namespace/]name[@interface])")]
    SeveralSlashes,
    #[error("more than one '@' (expected [namespace/]name[@interface])")]
    SeveralAts,
    #[error("the element must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    #[error("the network name is missing or empty")]
    MissingName,
    #[error(
        "network name {0:?} is not valid: use lower-case letters, digits and '-', starting and ending with a letter or digit (DNS-1123 label)"
    )]
    InvalidName(String),
    #[error(
        "namespace {0:?} is not valid: use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters (DNS-1123 label)"
    )]
    InvalidNamespace(String),
    #[error(
        "interface name {0:?} is not valid: it must be 1 to 15 bytes, not \".\" or \"..\", without '/', ':' or whitespace"
    )]
    InvalidInterface(String),
    #[error("{field:?} must be {expected}, not {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("\"ips\" must list at least one address")]
    EmptyIps,
    #[error("\"ips\" entry {0:?} is not an IP address or CIDR")]
    InvalidIp(String),
    #[error("\"mac\" {0:?} is not a 6-byte MAC address (like 0a:58:0a:f4:03:11)")]
    InvalidMac(String),
    #[error("\"infiniband-guid\" {0:?} is not an 8-byte GUID (like aa:bb:cc:dd:ee:ff:00:11)")]
    InvalidGuid(String),
    #[error("\"portMappings\" must list at least one mapping")]
    EmptyPortMappings,
    #[error("\"portMappings\" entry {index}: {reason}")]
    PortMapping { index: usize, reason: String },
    #[error("\"bandwidth\": {0}")]
    Bandwidth(String),
    #[error("\"default-route\" entry {0:?} is not an IP address")]
    InvalidGateway(String),
    #[error(
        "\"ipam-claim-reference\" {0:?} is not a valid object name (DNS-1123 subdomain, at most 253 characters)"
    )]
    InvalidClaimReference(String),
}

/// Parses the networks annotation (R12–R14) and checks every element. An empty `namespace` becomes
/// `pod_namespace`.
///
/// A missing annotation means "no secondary networks"; callers should not call this for it. An empty or
/// whitespace-only string is [`SelectionError::Empty`]; `[]` is an empty list.
pub fn parse_selections(
    annotation: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    if annotation.trim().is_empty() {
        return Err(SelectionError::Empty);
    }
    let mut selections = if annotation.contains(['[', '{', '"']) {
        parse_json_form(annotation)?
    } else {
        parse_comma_form(annotation)?
    };
    let mut with_route = selections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.default_route.is_some())
        .map(|(i, _)| i);
    if let (Some(first), Some(second)) = (with_route.next(), with_route.next()) {
        return Err(SelectionError::SeveralDefaultRoutes { first, second });
    }
    for s in &mut selections {
        if s.namespace.is_empty() {
            s.namespace = pod_namespace.to_owned();
        }
    }
    Ok(selections)
}

fn parse_comma_form(annotation: &str) -> Result<Vec<NetworkSelection>, SelectionError> {
    annotation
        .split(',')
        .enumerate()
        .map(|(index, item)| {
            parse_comma_item(item).map_err(|reason| SelectionError::Element {
                index,
                text: shorten(item.trim()),
                reason,
            })
        })
        .collect()
}

fn parse_comma_item(item: &str) -> Result<NetworkSelection, ElementError> {
    let item = item.trim();
    if item.is_empty() {
        return Err(ElementError::EmptyEntry);
    }
    // Split on '/' before '@', as the reference does: `ns@x/net` is a bad namespace, not an interface.
    let (namespace, rest) = match item.split('/').collect::<Vec<_>>()[..] {
        [rest] => ("", rest),
        [namespace, rest] => (namespace.trim(), rest),
        _ => return Err(ElementError::SeveralSlashes),
    };
    let (name, interface) = match rest.split('@').collect::<Vec<_>>()[..] {
        [name] => (name.trim(), None),
        [name, interface] => (name.trim(), Some(interface.trim())),
        _ => return Err(ElementError::SeveralAts),
    };
    check_name(name)?;
    check_namespace(namespace)?;
    if let Some(interface) = interface {
        check_interface(interface)?;
    }
    Ok(NetworkSelection {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        interface: interface.map(str::to_owned),
        ..NetworkSelection::default()
    })
}

fn parse_json_form(annotation: &str) -> Result<Vec<NetworkSelection>, SelectionError> {
    let value: Value =
        serde_json::from_str(annotation).map_err(|e| SelectionError::Json(e.to_string()))?;
    let Value::Array(elements) = value else {
        return Err(SelectionError::NotAList(json_kind(&value)));
    };
    elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| {
            let text = shorten(&element.to_string());
            let result = match element {
                Value::Object(map) => NetworkSelection::try_from(map),
                other => Err(ElementError::NotAnObject(json_kind(&other))),
            };
            result.map_err(|reason| SelectionError::Element {
                index,
                text,
                reason,
            })
        })
        .collect()
}

/// Cuts an element's text for an error message.
fn shorten(text: &str) -> String {
    const MAX: usize = 120;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn check_name(name: &str) -> Result<(), ElementError> {
    if name.is_empty() {
        Err(ElementError::MissingName)
    } else if valid_nad_name(name) {
        Ok(())
    } else {
        Err(ElementError::InvalidName(name.to_owned()))
    }
}

fn check_namespace(namespace: &str) -> Result<(), ElementError> {
    if namespace.is_empty() || valid_dns1123_label(namespace) {
        Ok(())
    } else {
        Err(ElementError::InvalidNamespace(namespace.to_owned()))
    }
}

fn check_interface(interface: &str) -> Result<(), ElementError> {
    if valid_interface_name(interface) {
        Ok(())
    } else {
        Err(ElementError::InvalidInterface(interface.to_owned()))
    }
}

/// One JSON element, checked field by field. `null` counts as absent for every optional key (as in Go).
impl TryFrom<Map<String, Value>> for NetworkSelection {
    type Error = ElementError;

    fn try_from(mut map: Map<String, Value>) -> Result<Self, ElementError> {
        let mut take = |key: &str| map.remove(key).filter(|v| !v.is_null());

        let name = opt_string(take("name"), "name")?.unwrap_or_default();
        check_name(&name)?;
        let namespace = opt_string(take("namespace"), "namespace")?.unwrap_or_default();
        check_namespace(&namespace)?;

        // `interface` wins over the legacy `interfaceRequest` when both are given.
        let interface = match take("interface") {
            Some(v) => Some(string(v, "interface")?),
            None => opt_string(take("interfaceRequest"), "interfaceRequest")?,
        };
        if let Some(interface) = &interface {
            check_interface(interface)?;
        }

        let ips = opt_list(take("ips"), "ips", "a list of strings")?
            .map(|items| {
                if items.is_empty() {
                    return Err(ElementError::EmptyIps);
                }
                items
                    .into_iter()
                    .map(|item| {
                        let ip = string(item, "ips")?;
                        if IpAddr::from_str(&ip).is_ok() || IpNet::from_str(&ip).is_ok() {
                            Ok(ip)
                        } else {
                            Err(ElementError::InvalidIp(ip))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;

        let mac = opt_string(take("mac"), "mac")?
            .map(|mac| normalize_hardware_address(&mac, 6).ok_or(ElementError::InvalidMac(mac)))
            .transpose()?;

        let cni_args = match take("cni-args") {
            None => None,
            Some(Value::Object(args)) => Some(args),
            Some(other) => return Err(wrong("cni-args", "an object", &other)),
        };

        let port_mappings = opt_list(take("portMappings"), "portMappings", "a list of objects")?
            .map(|items| {
                if items.is_empty() {
                    return Err(ElementError::EmptyPortMappings);
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(index, item)| {
                        port_mapping(item)
                            .map_err(|reason| ElementError::PortMapping { index, reason })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;

        let bandwidth = take("bandwidth")
            .map(|v| bandwidth(v).map_err(ElementError::Bandwidth))
            .transpose()?;

        let default_route = opt_list(take("default-route"), "default-route", "a list of strings")?
            .map(|items| {
                items
                    .into_iter()
                    .map(|item| {
                        let gw = string(item, "default-route")?;
                        IpAddr::from_str(&gw).map_err(|_| ElementError::InvalidGateway(gw))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;

        let infiniband_guid = opt_string(take("infiniband-guid"), "infiniband-guid")?
            .map(|guid| normalize_hardware_address(&guid, 8).ok_or(ElementError::InvalidGuid(guid)))
            .transpose()?;

        let ipam_claim_reference =
            opt_string(take("ipam-claim-reference"), "ipam-claim-reference")?
                .map(|claim| {
                    if valid_dns1123_subdomain(&claim) {
                        Ok(claim)
                    } else {
                        Err(ElementError::InvalidClaimReference(claim))
                    }
                })
                .transpose()?;

        Ok(Self {
            name,
            namespace,
            interface,
            ips,
            mac,
            cni_args,
            port_mappings,
            bandwidth,
            default_route,
            infiniband_guid,
            ipam_claim_reference,
        })
    }
}

fn wrong(field: &'static str, expected: &'static str, found: &Value) -> ElementError {
    ElementError::WrongType {
        field,
        expected,
        found: json_kind(found),
    }
}

fn string(v: Value, field: &'static str) -> Result<String, ElementError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(wrong(field, "a string", &other)),
    }
}

fn opt_string(v: Option<Value>, field: &'static str) -> Result<Option<String>, ElementError> {
    v.map(|v| string(v, field)).transpose()
}

fn opt_list(
    v: Option<Value>,
    field: &'static str,
    expected: &'static str,
) -> Result<Option<Vec<Value>>, ElementError> {
    match v {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(other) => Err(wrong(field, expected, &other)),
    }
}

fn port_mapping(v: Value) -> Result<PortMapping, String> {
    let Value::Object(mut map) = v else {
        return Err(format!("must be an object, not {}", json_kind(&v)));
    };
    let mut port = |key: &str| -> Result<u16, String> {
        match map.remove(key) {
            None | Some(Value::Null) => Err(format!("{key:?} is required")),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{key:?} must be a port number from 1 to 65535, not {n}")),
            Some(other) => Err(format!(
                "{key:?} must be a port number from 1 to 65535, not {}",
                json_kind(&other)
            )),
        }
    };
    let host_port = port("hostPort")?;
    let container_port = port("containerPort")?;
    let protocol = match map.remove("protocol") {
        None | Some(Value::Null) => "tcp".to_owned(),
        Some(Value::String(p)) => match p.to_ascii_lowercase().as_str() {
            proto @ ("tcp" | "udp" | "sctp") => proto.to_owned(),
            _ => return Err(format!("\"protocol\" {p:?} is not TCP, UDP or SCTP")),
        },
        Some(other) => {
            return Err(format!(
                "\"protocol\" must be a string, not {}",
                json_kind(&other)
            ));
        }
    };
    let host_ip = match map.remove("hostIP") {
        None | Some(Value::Null) => None,
        Some(Value::String(ip)) if ip.is_empty() => None,
        Some(Value::String(ip)) => Some(
            IpAddr::from_str(&ip).map_err(|_| format!("\"hostIP\" {ip:?} is not an IP address"))?,
        ),
        Some(other) => {
            return Err(format!(
                "\"hostIP\" must be a string, not {}",
                json_kind(&other)
            ));
        }
    };
    Ok(PortMapping {
        host_port,
        container_port,
        protocol,
        host_ip,
    })
}

fn bandwidth(v: Value) -> Result<Bandwidth, String> {
    let Value::Object(mut map) = v else {
        return Err(format!("must be an object, not {}", json_kind(&v)));
    };
    let mut amount = |key: &str| -> Result<Option<u64>, String> {
        match map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|a| *a != 0)
                .map(Some)
                .ok_or_else(|| format!("{key:?} must be a positive integer, not {n}")),
            Some(other) => Err(format!(
                "{key:?} must be a positive integer, not {}",
                json_kind(&other)
            )),
        }
    };
    let bw = Bandwidth {
        ingress_rate: amount("ingressRate")?,
        ingress_burst: amount("ingressBurst")?,
        egress_rate: amount("egressRate")?,
        egress_burst: amount("egressBurst")?,
    };
    if bw == Bandwidth::default() {
        return Err(
            "set at least one of ingressRate, ingressBurst, egressRate, egressBurst".to_owned(),
        );
    }
    if bw.ingress_burst.is_some() && bw.ingress_rate.is_none() {
        return Err("\"ingressBurst\" needs \"ingressRate\"".to_owned());
    }
    if bw.egress_burst.is_some() && bw.egress_rate.is_none() {
        return Err("\"egressBurst\" needs \"egressRate\"".to_owned());
    }
    Ok(bw)
}

/// Parses a hardware address of exactly `bytes` bytes, written in any notation Go's `net.ParseMAC` accepts
/// (`0a:1b:..`, `0a-1b-..`, `0a1b.2c3d...`), and returns it lower-case and colon-separated.
fn normalize_hardware_address(text: &str, bytes: usize) -> Option<String> {
    fn hex_pair(s: &str) -> Option<&str> {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s)
    }
    let groups: Vec<&str> = if text.contains(':') || text.contains('-') {
        let sep = if text.contains(':') { ':' } else { '-' };
        let parts: Vec<&str> = text.split(sep).collect();
        if parts.len() != bytes {
            return None;
        }
        parts
            .into_iter()
            .map(hex_pair)
            .collect::<Option<Vec<_>>>()?
    } else if text.contains('.') {
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() * 2 != bytes {
            return None;
        }
        let mut pairs = Vec::with_capacity(bytes);
        for part in parts {
            if part.len() != 4 || !part.is_ascii() {
                return None;
            }
            pairs.push(hex_pair(&part[..2])?);
            pairs.push(hex_pair(&part[2..])?);
        }
        pairs
    } else {
        return None;
    };
    Some(groups.join(":").to_ascii_lowercase())
}

/// The comma form of `selections` (`ns/name@ifname,...`, namespace always written when set), or `None` when a
/// selection has something the comma form cannot hold: a key other than name/namespace/interface, or a value that
/// would not read back the same. An empty list has no comma form (`""` is the empty annotation, an error).
pub fn print_comma_form(selections: &[NetworkSelection]) -> Option<String> {
    if selections.is_empty() {
        return None;
    }
    let mut items = Vec::with_capacity(selections.len());
    for s in selections {
        let only_names = NetworkSelection {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            interface: s.interface.clone(),
            ..NetworkSelection::default()
        };
        let representable = *s == only_names
            && valid_nad_name(&s.name)
            && check_namespace(&s.namespace).is_ok()
            && s.interface
                .as_deref()
                .is_none_or(|i| valid_interface_name(i) && !i.contains([',', '@', '[', '{', '"']));
        if !representable {
            return None;
        }
        let mut item = String::new();
        if !s.namespace.is_empty() {
            item.push_str(&s.namespace);
            item.push('/');
        }
        item.push_str(&s.name);
        if let Some(interface) = &s.interface {
            item.push('@');
            item.push_str(interface);
        }
        items.push(item);
    }
    Some(items.join(","))
}

/// The JSON list form of `selections`: only the keys that are set, with the spec's key names.
pub fn print_json_form(selections: &[NetworkSelection]) -> String {
    serde_json::to_string(selections).expect("a selection always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const POD_NS: &str = "podns";

    /// (namespace, name, interface) of each parsed selection.
    fn names(input: &str) -> Vec<(String, String, Option<String>)> {
        parse_selections(input, POD_NS)
            .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
            .into_iter()
            .map(|s| (s.namespace, s.name, s.interface))
            .collect()
    }

    fn n(ns: &str, name: &str, interface: Option<&str>) -> (String, String, Option<String>) {
        (ns.into(), name.into(), interface.map(Into::into))
    }

    fn error(input: &str) -> SelectionError {
        match parse_selections(input, POD_NS) {
            Ok(v) => panic!("{input:?} should be refused, got {v:?}"),
            Err(e) => e,
        }
    }

    /// The reason of an element error (and check the index).
    fn element_error(input: &str, want_index: usize) -> ElementError {
        match error(input) {
            SelectionError::Element { index, reason, .. } => {
                assert_eq!(index, want_index, "{input:?}: {reason}");
                reason
            }
            other => panic!("{input:?}: expected an element error, got {other}"),
        }
    }

    fn one(input: &str) -> NetworkSelection {
        let mut v = parse_selections(input, POD_NS)
            .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        assert_eq!(v.len(), 1, "{input:?}");
        v.remove(0)
    }

    // Every row of SPEC A.11's edge-case table, in order. "DIFFERS" marks where Plexus's result is not the
    // reference client's; docs/compatibility.md lists each one.
    #[test]
    fn a11_edge_cases() {
        // `net-a`
        assert_eq!(names("net-a"), [n(POD_NS, "net-a", None)]);
        // `net-a,net-b, other-ns/net-c`
        assert_eq!(
            names("net-a,net-b, other-ns/net-c"),
            [
                n(POD_NS, "net-a", None),
                n(POD_NS, "net-b", None),
                n("other-ns", "net-c", None)
            ]
        );
        // `net-a\n,\tnet-b`, and other Unicode whitespace
        assert_eq!(
            names("net-a\n,\tnet-b\u{a0}"),
            [n(POD_NS, "net-a", None), n(POD_NS, "net-b", None)]
        );
        // `ns /  net-a`, `ns/net-a@ eth1 `
        assert_eq!(names("ns /  net-a"), [n("ns", "net-a", None)]);
        assert_eq!(names("ns/net-a@ eth1 "), [n("ns", "net-a", Some("eth1"))]);
        // `na me`
        assert!(matches!(
            element_error("na me", 0),
            ElementError::InvalidName(_)
        ));
        // DIFFERS: `net-a,` / `a,,b` / `,` / `   ` are errors (Decision 1), not empty names.
        assert_eq!(element_error("net-a,", 1), ElementError::EmptyEntry);
        assert_eq!(element_error("a,,b", 1), ElementError::EmptyEntry);
        assert_eq!(element_error(",", 0), ElementError::EmptyEntry);
        assert_eq!(error("   "), SelectionError::Empty);
        assert_eq!(error(""), SelectionError::Empty);
        // `ns/net-a`
        assert_eq!(names("ns/net-a"), [n("ns", "net-a", None)]);
        // `/net-a`: an empty namespace is the pod's
        assert_eq!(names("/net-a"), [n(POD_NS, "net-a", None)]);
        // DIFFERS: `ns/` is an error.
        assert_eq!(element_error("ns/", 0), ElementError::MissingName);
        // `a/b/c`, `ns/net-a/`
        assert_eq!(element_error("a/b/c", 0), ElementError::SeveralSlashes);
        assert_eq!(element_error("ns/net-a/", 0), ElementError::SeveralSlashes);
        // `net-a@eth1`
        assert_eq!(names("net-a@eth1"), [n(POD_NS, "net-a", Some("eth1"))]);
        // DIFFERS: `net-a@` is an error (an empty interface name), not "no interface".
        assert_eq!(
            element_error("net-a@", 0),
            ElementError::InvalidInterface(String::new())
        );
        // DIFFERS: `@eth1` is an error.
        assert_eq!(element_error("@eth1", 0), ElementError::MissingName);
        // `a@b@c`, `net-a@eth1@`
        assert_eq!(element_error("a@b@c", 0), ElementError::SeveralAts);
        assert_eq!(element_error("net-a@eth1@", 0), ElementError::SeveralAts);
        // `ns/net-a@eth1`
        assert_eq!(names("ns/net-a@eth1"), [n("ns", "net-a", Some("eth1"))]);
        // `ns@x/net`: the '/' split comes first, so `ns@x` is a bad namespace
        assert_eq!(
            element_error("ns@x/net", 0),
            ElementError::InvalidNamespace("ns@x".into())
        );
        // `Net-A`, `net_a`, `a.b`, `-net`, `net-`
        for bad in ["Net-A", "net_a", "a.b", "-net", "net-"] {
            assert_eq!(element_error(bad, 0), ElementError::InvalidName(bad.into()));
        }
        // DIFFERS (from the client; same as Multus): `net-a@eth0.1`, `net-a@Eth1` are accepted (kernel rule).
        assert_eq!(names("net-a@eth0.1"), [n(POD_NS, "net-a", Some("eth0.1"))]);
        assert_eq!(names("net-a@Eth1"), [n(POD_NS, "net-a", Some("Eth1"))]);
        // 70-character name: accepted. DIFFERS (from the client; same as Multus): 23-character @ifname refused.
        let long = "a".repeat(70);
        assert_eq!(names(&long), [n(POD_NS, &long, None)]);
        let long_if = format!("net-a@{}", "e".repeat(23));
        assert!(matches!(
            element_error(&long_if, 0),
            ElementError::InvalidInterface(_)
        ));
        // `null` is the comma form: a network named "null"
        assert_eq!(names("null"), [n(POD_NS, "null", None)]);
        // `[]`
        assert_eq!(parse_selections("[]", POD_NS), Ok(vec![]));
        // `  [ {"name":"a"} ]  `
        assert_eq!(names(r#"  [ {"name":"a"} ]  "#), [n(POD_NS, "a", None)]);
        // `{"name":"a"}`: a single object is not a list
        assert_eq!(
            error(r#"{"name":"a"}"#),
            SelectionError::NotAList("an object")
        );
        // `["net-a"]`
        assert_eq!(
            element_error(r#"["net-a"]"#, 0),
            ElementError::NotAnObject("a string")
        );
        // `net-a,"x"`: the quote forces JSON
        assert!(matches!(error(r#"net-a,"x""#), SelectionError::Json(_)));
        // `[{"name":"a"}] trailing`
        assert!(matches!(
            error(r#"[{"name":"a"}] trailing"#),
            SelectionError::Json(_)
        ));
        // DIFFERS: `[null]` is an error (the reference panics).
        assert_eq!(
            element_error("[null]", 0),
            ElementError::NotAnObject("null")
        );
        // DIFFERS: `[{}]`, `[{"name":""}]` are errors.
        assert_eq!(element_error("[{}]", 0), ElementError::MissingName);
        assert_eq!(
            element_error(r#"[{"name":""}]"#, 0),
            ElementError::MissingName
        );
        // DIFFERS: `[{"name":"ns/a"}]`, `[{"name":"a@eth1"}]` are refused while parsing (the reference takes them
        // literally and fails the NAD lookup later).
        assert_eq!(
            element_error(r#"[{"name":"ns/a"}]"#, 0),
            ElementError::InvalidName("ns/a".into())
        );
        assert_eq!(
            element_error(r#"[{"name":"a@eth1"}]"#, 0),
            ElementError::InvalidName("a@eth1".into())
        );
        // DIFFERS: keys are case-sensitive (Decision 4), so `NAME` is not `name`.
        assert_eq!(
            element_error(r#"[{"NAME":"a","Namespace":"x"}]"#, 0),
            ElementError::MissingName
        );
        // `[{"name":"a","name":"b"}]`: the last duplicate wins
        assert_eq!(
            names(r#"[{"name":"a","name":"b"}]"#),
            [n(POD_NS, "b", None)]
        );
        // `[{"name":"a","unknown":1}]`: unknown keys are ignored
        assert_eq!(
            names(r#"[{"name":"a","unknown":1,"io.example/x":{}}]"#),
            [n(POD_NS, "a", None)]
        );
        // `[{"name":"a","namespace":""}]`
        assert_eq!(
            names(r#"[{"name":"a","namespace":""}]"#),
            [n(POD_NS, "a", None)]
        );
        // `"ips":"10.0.0.1"` is a type error; DIFFERS (from the client; same as Multus): `"ips":["bogus"]` refused.
        assert_eq!(
            element_error(r#"[{"name":"a","ips":"10.0.0.1"}]"#, 0),
            ElementError::WrongType {
                field: "ips",
                expected: "a list of strings",
                found: "a string"
            }
        );
        assert_eq!(
            element_error(r#"[{"name":"a","ips":["bogus"]}]"#, 0),
            ElementError::InvalidIp("bogus".into())
        );
        // `"default-route":["bogus"]`
        assert_eq!(
            element_error(r#"[{"name":"a","default-route":["bogus"]}]"#, 0),
            ElementError::InvalidGateway("bogus".into())
        );
        // `"default-route":[]`: accepted, kept as "requested, no gateway listed"
        assert_eq!(
            one(r#"[{"name":"a","default-route":[]}]"#).default_route,
            Some(vec![])
        );
        // `"cni-args":"x"` is an error; `"cni-args":null` is absent
        assert_eq!(
            element_error(r#"[{"name":"a","cni-args":"x"}]"#, 0),
            ElementError::WrongType {
                field: "cni-args",
                expected: "an object",
                found: "a string"
            }
        );
        assert_eq!(one(r#"[{"name":"a","cni-args":null}]"#).cni_args, None);
        // `"bandwidth":{"ingressRate":"1"}`
        assert!(matches!(
            element_error(r#"[{"name":"a","bandwidth":{"ingressRate":"1"}}]"#, 0),
            ElementError::Bandwidth(m) if m.contains("ingressRate")
        ));
        // `"portMappings":[{"hostPort":8080,"containerPort":80}]`: accepted, protocol tcp
        assert_eq!(
            one(r#"[{"name":"a","portMappings":[{"hostPort":8080,"containerPort":80}]}]"#)
                .port_mappings,
            Some(vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None
            }])
        );
        // `"ips":[..],"ipam-claim-reference":"c"`: accepted (Decision 3)
        let s = one(r#"[{"name":"a","ips":["10.0.0.1/24"],"ipam-claim-reference":"c"}]"#);
        assert_eq!(s.ips, Some(vec!["10.0.0.1/24".into()]));
        assert_eq!(s.ipam_claim_reference.as_deref(), Some("c"));
    }

    #[test]
    fn errors_name_the_element() {
        let e = error(r#"[{"name":"a"},{"name":"b","mac":"zz"}]"#);
        assert_eq!(
            e.to_string(),
            r#"networks annotation element 1 `{"name":"b","mac":"zz"}`: "mac" "zz" is not a 6-byte MAC address (like 0a:58:0a:f4:03:11)"#
        );
        let e = error("net-a, Bad");
        assert_eq!(
            e.to_string(),
            "networks annotation element 1 `Bad`: network name \"Bad\" is not valid: use lower-case letters, digits \
             and '-', starting and ending with a letter or digit (DNS-1123 label)"
        );
        let long = format!(r#"[{{"name":"{}"}}]"#, "X".repeat(300));
        let SelectionError::Element { text, .. } = error(&long) else {
            panic!()
        };
        assert!(text.chars().count() <= 121 && text.ends_with('…'), "{text}");
    }

    #[test]
    fn the_spec_example_parses() {
        let v = parse_selections(
            r#"[
              {"name": "storage-net"},
              {"name": "fast-net", "namespace": "infra", "interface": "fast0",
               "ips": ["192.168.50.7/24", "fd00:50::7/64"], "mac": "0a:58:c0:a8:32:07",
               "default-route": ["192.168.50.1"],
               "cni-args": {"vlan": 42},
               "portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "udp"}],
               "bandwidth": {"ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000}}
            ]"#,
            "team-a",
        )
        .unwrap();
        assert_eq!(v[0].namespace, "team-a");
        let s = &v[1];
        assert_eq!(
            (s.name.as_str(), s.namespace.as_str()),
            ("fast-net", "infra")
        );
        assert_eq!(s.interface.as_deref(), Some("fast0"));
        assert_eq!(s.mac.as_deref(), Some("0a:58:c0:a8:32:07"));
        assert_eq!(s.default_route, Some(vec!["192.168.50.1".parse().unwrap()]));
        assert_eq!(s.cni_args.as_ref().unwrap()["vlan"], 42);
        assert_eq!(
            s.bandwidth,
            Some(Bandwidth {
                ingress_rate: Some(100_000_000),
                ingress_burst: Some(1_000_000),
                egress_rate: Some(100_000_000),
                egress_burst: Some(1_000_000)
            })
        );
        // The runtimeConfig shapes are the CNI capability shapes.
        assert_eq!(
            serde_json::to_value(s.port_mappings.as_ref().unwrap()).unwrap(),
            json!([{"hostPort": 9090, "containerPort": 90, "protocol": "udp"}])
        );
        assert_eq!(
            serde_json::to_value(s.bandwidth.as_ref().unwrap()).unwrap(),
            json!({"ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000})
        );
    }

    #[test]
    fn interface_request_is_a_legacy_alias() {
        assert_eq!(
            one(r#"[{"name":"a","interfaceRequest":"net5"}]"#)
                .interface
                .as_deref(),
            Some("net5")
        );
        assert_eq!(
            one(r#"[{"name":"a","interface":"eth1","interfaceRequest":"net5"}]"#)
                .interface
                .as_deref(),
            Some("eth1"),
            "interface wins"
        );
        assert_eq!(
            one(r#"[{"name":"a","interface":null,"interfaceRequest":"net5"}]"#)
                .interface
                .as_deref(),
            Some("net5")
        );
        assert!(matches!(
            element_error(r#"[{"name":"a","interfaceRequest":"a/b"}]"#, 0),
            ElementError::InvalidInterface(_)
        ));
    }

    #[test]
    fn interface_names_follow_the_kernel_rule_in_json_too() {
        for good in ["eth0.1", "net_1", "Eth1", "123456789012345"] {
            assert_eq!(
                one(&format!(r#"[{{"name":"a","interface":"{good}"}}]"#))
                    .interface
                    .as_deref(),
                Some(good)
            );
        }
        for bad in ["", ".", "..", "1234567890123456", "a/b", "a:b", "a b"] {
            assert_eq!(
                element_error(&format!(r#"[{{"name":"a","interface":"{bad}"}}]"#), 0),
                ElementError::InvalidInterface(bad.into())
            );
        }
        assert!(matches!(
            element_error("net-a@a:b", 0),
            ElementError::InvalidInterface(_)
        ));
    }

    #[test]
    fn namespaces_are_dns1123_labels() {
        assert_eq!(
            element_error(r#"[{"name":"a","namespace":"Team"}]"#, 0),
            ElementError::InvalidNamespace("Team".into())
        );
        let long = "n".repeat(64);
        assert!(matches!(
            element_error(&format!("{long}/a"), 0),
            ElementError::InvalidNamespace(_)
        ));
        assert!(matches!(
            element_error(r#"[{"name":"a","namespace":7}]"#, 0),
            ElementError::WrongType {
                field: "namespace",
                ..
            }
        ));
    }

    #[test]
    fn ips_are_ips_or_cidrs() {
        let s = one(r#"[{"name":"a","ips":["10.0.0.5","10.0.0.5/24","fd00::5","fd00::5/64"]}]"#);
        assert_eq!(s.ips.unwrap().len(), 4);
        assert_eq!(
            element_error(r#"[{"name":"a","ips":[]}]"#, 0),
            ElementError::EmptyIps
        );
        for bad in [
            "10.0.0.256",
            "10.0.0.5/33",
            "fd00::5/129",
            "",
            "010.0.0.1",
            "fe80::1%eth0",
        ] {
            assert_eq!(
                element_error(&format!(r#"[{{"name":"a","ips":["{bad}"]}}]"#), 0),
                ElementError::InvalidIp(bad.into()),
                "{bad}"
            );
        }
        assert!(matches!(
            element_error(r#"[{"name":"a","ips":[5]}]"#, 0),
            ElementError::WrongType { field: "ips", .. }
        ));
    }

    #[test]
    fn macs_are_six_bytes_in_any_go_notation() {
        for (written, normal) in [
            ("0a:58:0a:f4:03:11", "0a:58:0a:f4:03:11"),
            ("0A:58:0A:F4:03:11", "0a:58:0a:f4:03:11"),
            ("0a-58-0a-f4-03-11", "0a:58:0a:f4:03:11"),
            ("0a58.0af4.0311", "0a:58:0a:f4:03:11"),
        ] {
            assert_eq!(
                one(&format!(r#"[{{"name":"a","mac":"{written}"}}]"#))
                    .mac
                    .as_deref(),
                Some(normal)
            );
        }
        for bad in [
            "0a:58:0a:f4:03",
            "0a:58:0a:f4:03:11:22:33",
            "0a:58:0a:f4:03:1",
            "0a:58-0a:f4:03:11",
            "0a:58:0a:f4:03:1g",
            "0a580af40311",
            "",
            "0a58.0af4.0311.2233",
        ] {
            assert_eq!(
                element_error(&format!(r#"[{{"name":"a","mac":"{bad}"}}]"#), 0),
                ElementError::InvalidMac(bad.into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn infiniband_guids_are_eight_bytes() {
        assert_eq!(
            one(r#"[{"name":"a","infiniband-guid":"AA:bb:cc:dd:ee:ff:00:11"}]"#)
                .infiniband_guid
                .as_deref(),
            Some("aa:bb:cc:dd:ee:ff:00:11")
        );
        assert_eq!(
            one(r#"[{"name":"a","infiniband-guid":"aabb.ccdd.eeff.0011"}]"#)
                .infiniband_guid
                .as_deref(),
            Some("aa:bb:cc:dd:ee:ff:00:11")
        );
        for bad in [
            "aa:bb:cc:dd:ee:ff",
            "00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00",
        ] {
            assert_eq!(
                element_error(&format!(r#"[{{"name":"a","infiniband-guid":"{bad}"}}]"#), 0),
                ElementError::InvalidGuid(bad.into())
            );
        }
    }

    #[test]
    fn port_mappings_are_checked_and_normalised() {
        let s = one(r#"[{"name":"a","portMappings":[
                {"hostPort":1,"containerPort":65535,"protocol":"UDP"},
                {"hostPort":80,"containerPort":80,"protocol":"Sctp","hostIP":"10.0.0.1"},
                {"hostPort":81,"containerPort":81,"hostIP":""}]}]"#);
        let pm = s.port_mappings.unwrap();
        assert_eq!(pm[0].protocol, "udp");
        assert_eq!(pm[1].protocol, "sctp");
        assert_eq!(pm[1].host_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            serde_json::to_value(&pm[1]).unwrap(),
            json!({"hostPort":80,"containerPort":80,"protocol":"sctp","hostIP":"10.0.0.1"})
        );
        assert_eq!(pm[2].host_ip, None);
        assert_eq!(
            element_error(r#"[{"name":"a","portMappings":[]}]"#, 0),
            ElementError::EmptyPortMappings
        );
        for (bad, needle) in [
            (r#"{"containerPort":80}"#, "\"hostPort\" is required"),
            (r#"{"hostPort":0,"containerPort":80}"#, "not 0"),
            (r#"{"hostPort":65536,"containerPort":80}"#, "not 65536"),
            (r#"{"hostPort":-1,"containerPort":80}"#, "not -1"),
            (r#"{"hostPort":80.5,"containerPort":80}"#, "not 80.5"),
            (r#"{"hostPort":"80","containerPort":80}"#, "not a string"),
            (
                r#"{"hostPort":80,"containerPort":80,"protocol":"icmp"}"#,
                "\"icmp\"",
            ),
            (
                r#"{"hostPort":80,"containerPort":80,"hostIP":"x"}"#,
                "hostIP",
            ),
            ("7", "must be an object"),
        ] {
            let input = format!(
                r#"[{{"name":"a","portMappings":[{{"hostPort":1,"containerPort":1}},{bad}]}}]"#
            );
            match element_error(&input, 0) {
                ElementError::PortMapping { index: 1, reason } => {
                    assert!(reason.contains(needle), "{bad}: {reason}")
                }
                other => panic!("{bad}: {other}"),
            }
        }
    }

    #[test]
    fn bandwidth_rules() {
        assert_eq!(
            one(r#"[{"name":"a","bandwidth":{"egressRate":1000}}]"#).bandwidth,
            Some(Bandwidth {
                egress_rate: Some(1000),
                ..Bandwidth::default()
            })
        );
        for (bad, needle) in [
            (r#"{}"#, "at least one"),
            (r#"{"ingressRate":0}"#, "positive"),
            (r#"{"ingressRate":-5}"#, "positive"),
            (
                r#"{"ingressBurst":10}"#,
                "\"ingressBurst\" needs \"ingressRate\"",
            ),
            (r#"{"egressRate":1,"egressBurst":0}"#, "egressBurst"),
            (
                r#"{"egressBurst":10,"ingressRate":1}"#,
                "\"egressBurst\" needs \"egressRate\"",
            ),
            (r#"[1]"#, "must be an object"),
        ] {
            match element_error(&format!(r#"[{{"name":"a","bandwidth":{bad}}}]"#), 0) {
                ElementError::Bandwidth(m) => assert!(m.contains(needle), "{bad}: {m}"),
                other => panic!("{bad}: {other}"),
            }
        }
    }

    #[test]
    fn at_most_one_default_route() {
        assert_eq!(
            error(
                r#"[{"name":"a","default-route":[]},{"name":"b"},{"name":"c","default-route":["10.0.0.1"]}]"#
            ),
            SelectionError::SeveralDefaultRoutes {
                first: 0,
                second: 2
            }
        );
        let v = parse_selections(
            r#"[{"name":"a","default-route":null},{"name":"c","default-route":["10.0.0.1","fd00::1"]}]"#,
            POD_NS,
        )
        .unwrap();
        assert_eq!(v[0].default_route, None);
        assert_eq!(v[1].default_route.as_ref().unwrap().len(), 2);
        assert!(matches!(
            element_error(r#"[{"name":"a","default-route":["10.0.0.1/24"]}]"#, 0),
            ElementError::InvalidGateway(_)
        ));
    }

    #[test]
    fn ipam_claim_reference_is_an_object_name() {
        assert_eq!(
            one(r#"[{"name":"a","ipam-claim-reference":"vm-1.net-a.eth1"}]"#)
                .ipam_claim_reference
                .as_deref(),
            Some("vm-1.net-a.eth1")
        );
        // At most 253 characters, like every object name.
        let longest = format!("{}.{}", "a".repeat(63), "b".repeat(189));
        assert_eq!(
            one(&format!(
                r#"[{{"name":"a","ipam-claim-reference":"{longest}"}}]"#
            ))
            .ipam_claim_reference
            .map(|c| c.len()),
            Some(253)
        );
        let too_long = format!("{longest}c");
        for bad in ["", "Claim", "a_b", "a..b", ".a", "a.", too_long.as_str()] {
            assert_eq!(
                element_error(
                    &format!(r#"[{{"name":"a","ipam-claim-reference":"{bad}"}}]"#),
                    0
                ),
                ElementError::InvalidClaimReference(bad.into())
            );
        }
        assert!(matches!(
            element_error(r#"[{"name":"a","ipam-claim-reference":7}]"#, 0),
            ElementError::WrongType {
                field: "ipam-claim-reference",
                ..
            }
        ));
    }

    #[test]
    fn null_means_absent_for_optional_keys() {
        let s = one(
            r#"[{"name":"a","namespace":null,"interface":null,"ips":null,"mac":null,"cni-args":null,
                 "portMappings":null,"bandwidth":null,"default-route":null,"infiniband-guid":null,
                 "ipam-claim-reference":null}]"#,
        );
        assert_eq!(
            s,
            NetworkSelection {
                name: "a".into(),
                namespace: POD_NS.into(),
                ..NetworkSelection::default()
            }
        );
        assert_eq!(
            element_error(r#"[{"name":null}]"#, 0),
            ElementError::MissingName
        );
    }

    #[test]
    fn printing() {
        let v = parse_selections("ns/a@eth1, b", POD_NS).unwrap();
        assert_eq!(print_comma_form(&v).as_deref(), Some("ns/a@eth1,podns/b"));
        assert_eq!(
            print_json_form(&v),
            r#"[{"name":"a","namespace":"ns","interface":"eth1"},{"name":"b","namespace":"podns"}]"#
        );
        let with_mac =
            parse_selections(r#"[{"name":"a","mac":"0a:00:00:00:00:01"}]"#, POD_NS).unwrap();
        assert_eq!(print_comma_form(&with_mac), None);
        let awkward = parse_selections(r#"[{"name":"a","interface":"e,1"}]"#, POD_NS).unwrap();
        assert_eq!(print_comma_form(&awkward), None);
        assert_eq!(print_comma_form(&[]), None);
        assert_eq!(print_json_form(&[]), "[]");
    }

    #[test]
    fn deserialising_one_element_validates_it() {
        let s: NetworkSelection =
            serde_json::from_value(json!({"name":"a","mac":"0A-00-00-00-00-01"})).unwrap();
        assert_eq!(s.mac.as_deref(), Some("0a:00:00:00:00:01"));
        assert_eq!(s.namespace, "");
        assert!(serde_json::from_value::<NetworkSelection>(json!({"name":"A"})).is_err());
    }

    // ---- property tests: printing then parsing gives back what was printed ----

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?"
    }

    fn interface() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.,@\\[{\"-]{1,15}".prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    fn hardware(bytes: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<u8>(), bytes).prop_map(|b| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
    }

    fn ip_or_cidr() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
            (any::<std::net::Ipv4Addr>(), 0u8..=32).prop_map(|(ip, p)| format!("{ip}/{p}")),
            (any::<std::net::Ipv6Addr>(), 0u8..=128).prop_map(|(ip, p)| format!("{ip}/{p}")),
        ]
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[ -~]{0,8}".prop_map(Value::String),
        ]
    }

    fn cni_args() -> impl Strategy<Value = Map<String, Value>> {
        let value = json_leaf().prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map("[a-z.]{1,6}", value, 0..4)
            .prop_map(|m| m.into_iter().collect())
    }

    fn port_mapping() -> impl Strategy<Value = PortMapping> {
        (
            1u16..,
            1u16..,
            prop_oneof![Just("tcp"), Just("udp"), Just("sctp")],
            proptest::option::of(any::<IpAddr>()),
        )
            .prop_map(
                |(host_port, container_port, protocol, host_ip)| PortMapping {
                    host_port,
                    container_port,
                    protocol: protocol.into(),
                    host_ip,
                },
            )
    }

    fn bandwidth() -> impl Strategy<Value = Bandwidth> {
        let pair = || proptest::option::of((1u64.., proptest::option::of(1u64..)));
        (pair(), pair())
            .prop_filter("at least one", |(i, e)| i.is_some() || e.is_some())
            .prop_map(|(ingress, egress)| Bandwidth {
                ingress_rate: ingress.map(|(r, _)| r),
                ingress_burst: ingress.and_then(|(_, b)| b),
                egress_rate: egress.map(|(r, _)| r),
                egress_burst: egress.and_then(|(_, b)| b),
            })
    }

    fn full_selection() -> impl Strategy<Value = NetworkSelection> {
        use proptest::collection::vec;
        use proptest::option::of;
        (
            (label(), label(), of(interface())),
            (
                of(vec(ip_or_cidr(), 1..3)),
                of(hardware(6)),
                of(cni_args()),
                of(vec(port_mapping(), 1..3)),
            ),
            (
                of(bandwidth()),
                of(hardware(8)),
                of("[a-z0-9]{1,5}(\\.[a-z0-9]{1,5}){0,2}"),
            ),
        )
            .prop_map(
                |(
                    (name, namespace, interface),
                    (ips, mac, cni_args, port_mappings),
                    (bandwidth, infiniband_guid, ipam_claim_reference),
                )| NetworkSelection {
                    name,
                    namespace,
                    interface,
                    ips,
                    mac,
                    cni_args,
                    port_mappings,
                    bandwidth,
                    default_route: None,
                    infiniband_guid,
                    ipam_claim_reference,
                },
            )
    }

    fn selections() -> impl Strategy<Value = Vec<NetworkSelection>> {
        (
            proptest::collection::vec(full_selection(), 0..4),
            proptest::option::of((
                any::<prop::sample::Index>(),
                proptest::collection::vec(any::<IpAddr>(), 0..3),
            )),
        )
            .prop_map(|(mut v, route)| {
                if let (Some((at, gateways)), false) = (route, v.is_empty()) {
                    let i = at.index(v.len());
                    v[i].default_route = Some(gateways);
                }
                v
            })
    }

    fn names_only() -> impl Strategy<Value = Vec<NetworkSelection>> {
        proptest::collection::vec(
            (label(), label(), proptest::option::of(interface())).prop_map(
                |(name, namespace, interface)| NetworkSelection {
                    name,
                    namespace,
                    interface,
                    ..NetworkSelection::default()
                },
            ),
            1..5,
        )
    }

    proptest! {
        #[test]
        fn json_form_round_trips(v in selections()) {
            let text = print_json_form(&v);
            prop_assert_eq!(parse_selections(&text, "elsewhere"), Ok(v), "{}", text);
        }

        #[test]
        fn comma_form_round_trips(v in names_only()) {
            if let Some(text) = print_comma_form(&v) {
                prop_assert_eq!(parse_selections(&text, "elsewhere"), Ok(v), "{}", text);
            } else {
                let awkward = v.iter().any(|s| {
                    s.interface.as_deref().is_some_and(|i| i.contains([',', '@', '[', '{', '"']))
                });
                prop_assert!(awkward);
            }
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = parse_selections(&s, POD_NS);
        }
    }
}
