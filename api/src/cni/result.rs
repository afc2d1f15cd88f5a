//! CNI ADD results.
//!
//! [`CniResult`] is the canonical, version-neutral form: the 1.1.0 shape, which is a superset of every other
//! version. Results of any version (0.1.0 … 1.1.0) are parsed into it, and rendered back into any version with
//! libcni's conversion rules (SPEC B.9.5).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::version::{self, Version};

/// One interface the attachment created (SPEC B.9.1). `sandbox` is empty for host-side interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    /// 1.1.0 only.
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

/// One address the attachment assigned. `interface` indexes [`CniResult::interfaces`]; IPAM results leave it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route. The fields after `gw` exist in 1.1.0 only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

/// DNS settings of a result (also the shape of the well-known `dns` config key).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A CNI ADD result in canonical (1.1.0-superset) form. `cni_version` is the version it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl Interface {
    /// True if any field that only 1.1.0 results carry is set.
    pub fn has_v11_fields(&self) -> bool {
        self.mtu.is_some_and(|m| m != 0) || !self.socket_path.is_empty() || !self.pci_id.is_empty()
    }

    /// A copy without the 1.1.0-only fields.
    fn without_v11_fields(&self) -> Self {
        Self {
            name: self.name.clone(),
            mac: self.mac.clone(),
            sandbox: self.sandbox.clone(),
            ..Self::default()
        }
    }
}

impl IpConfig {
    /// True for an IPv4 address.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.address, IpNet::V4(_))
    }
}

impl Route {
    /// A route to `dst` with only the 1.0.0 fields.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Self {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    /// True if any field that only 1.1.0 results carry is set.
    pub fn has_v11_fields(&self) -> bool {
        self.mtu.is_some_and(|m| m != 0)
            || self.advmss.is_some_and(|m| m != 0)
            || self.priority.is_some_and(|m| m != 0)
            || self.table.is_some()
            || self.scope.is_some()
    }

    /// A copy without the 1.1.0-only fields.
    fn without_v11_fields(&self) -> Self {
        Self::new(self.dst, self.gw)
    }
}

/// Why a result could not be parsed or rendered.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ResultError {
    /// The text is not JSON, or not a JSON object.
    #[error("result is not valid JSON: {0}")]
    Json(String),
    /// The result (or the requested rendering) names a CNI version Plexus does not speak.
    #[error("unsupported CNI result version {0:?} (supported: {supported})", supported = version::SUPPORTED.join(", "))]
    UnsupportedVersion(String),
    /// A 0.1.0/0.2.0 result needs at least one IP address, and this result has none.
    #[error(
        "cannot convert result to CNI version {version}: it has no IP address, and results of that version need one"
    )]
    NoAddressForLegacy { version: String },
    /// A field is missing, has the wrong type or an invalid value; the message names it.
    #[error("invalid result: {0}")]
    Invalid(String),
}

impl CniResult {
    /// Parses a result of any supported version (0.1.0 … 1.1.0), detected from its `cniVersion`. A result without
    /// (or with an empty) `cniVersion` takes `fallback_version`, as libcni does.
    ///
    /// 0.1/0.2 `ip4`/`ip6` become `ips` entries (IPv4 first) and their routes are appended to `routes`. The
    /// `ips[].version` of 0.3.x/0.4.0 results is checked against the address family and dropped. The 1.1.0-only
    /// fields are read from 1.0.0 and 1.1.0 results (libcni reads both with one type) and ignored in older ones.
    /// Zero `mtu`/`advmss`/`priority` mean "not set" and parse as `None`. Unknown fields are ignored; `null`
    /// counts as absent.
    pub fn from_json(text: &[u8], fallback_version: &str) -> Result<Self, ResultError> {
        let value: Value =
            serde_json::from_slice(text).map_err(|e| ResultError::Json(e.to_string()))?;
        Self::from_value(&value, fallback_version)
    }

    /// Like [`CniResult::from_json`], from an already parsed JSON value.
    pub fn from_value(value: &Value, fallback_version: &str) -> Result<Self, ResultError> {
        let Value::Object(map) = value else {
            return Err(ResultError::Json(format!(
                "expected a JSON object, found {}",
                kind(value)
            )));
        };
        let top = Obj {
            map,
            path: String::new(),
        };
        let declared = top.string("cniVersion")?;
        let version_text = if declared.is_empty() {
            fallback_version.to_string()
        } else {
            declared
        };
        let ver = supported_version(&version_text)?;
        let mut result = if ver.is_legacy_result() {
            parse_legacy(&top)?
        } else {
            parse_current(&top, ver)?
        };
        result.cni_version = version_text;
        result.validate()?;
        Ok(result)
    }

    /// Checks what the types cannot: every `ips[].interface` indexes `interfaces` (when there are interfaces; IPAM
    /// results have none).
    pub fn validate(&self) -> Result<(), ResultError> {
        if self.interfaces.is_empty() {
            return Ok(());
        }
        for (n, ip) in self.ips.iter().enumerate() {
            if let Some(index) = ip.interface
                && index >= self.interfaces.len()
            {
                return Err(ResultError::Invalid(format!(
                    "ips[{n}].interface is {index}, but the result has only {} interface(s)",
                    self.interfaces.len()
                )));
            }
        }
        Ok(())
    }

    /// True if any field that only 1.1.0 results carry is set (lost when rendering an older version).
    pub fn has_v11_fields(&self) -> bool {
        self.interfaces.iter().any(Interface::has_v11_fields)
            || self.routes.iter().any(Route::has_v11_fields)
    }

    /// Renders the result in `version` with libcni's conversion rules (SPEC B.9.5):
    /// * 1.1.0: every field;
    /// * 1.0.0: without interface `mtu`/`socketPath`/`pciID` and route `mtu`/`advmss`/`priority`/`table`/`scope`;
    /// * 0.3.0/0.3.1/0.4.0: as 1.0.0, plus `ips[].version` (`"4"`/`"6"`) from the address family;
    /// * 0.1.0/0.2.0: `ip4`/`ip6` from the first address of each family (with its gateway); each route goes to the
    ///   family of its `dst` with only `dst`/`gw` (dropped when that family has no address). Fails with
    ///   [`ResultError::NoAddressForLegacy`] when there is no address at all.
    ///
    /// Empty `dns` and empty lists are left out, zero `mtu`/`advmss`/`priority` are left out, `table` and `scope`
    /// are written whenever set. `cniVersion` is always `version`.
    pub fn to_value(&self, version: &str) -> Result<Value, ResultError> {
        let ver = supported_version(version)?;
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::String(version.to_string()));
        if ver.is_legacy_result() {
            let v4 = self.ips.iter().find(|ip| ip.is_ipv4());
            let v6 = self.ips.iter().find(|ip| !ip.is_ipv4());
            if v4.is_none() && v6.is_none() {
                return Err(ResultError::NoAddressForLegacy {
                    version: version.to_string(),
                });
            }
            for (key, ip, want_v4) in [("ip4", v4, true), ("ip6", v6, false)] {
                let Some(ip) = ip else { continue };
                let mut entry = Map::new();
                entry.insert("ip".into(), Value::String(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    entry.insert("gateway".into(), Value::String(gw.to_string()));
                }
                let routes: Vec<Value> = self
                    .routes
                    .iter()
                    .filter(|r| matches!(r.dst, IpNet::V4(_)) == want_v4)
                    .map(|r| render_route(r, false))
                    .collect();
                if !routes.is_empty() {
                    entry.insert("routes".into(), Value::Array(routes));
                }
                out.insert(key.into(), Value::Object(entry));
            }
        } else {
            let v11 = ver >= Version(1, 1, 0);
            let with_ip_version = ver.has_ip_version_field();
            if !self.interfaces.is_empty() {
                let list = self
                    .interfaces
                    .iter()
                    .map(|i| render_interface(i, v11))
                    .collect();
                out.insert("interfaces".into(), Value::Array(list));
            }
            if !self.ips.is_empty() {
                let list = self
                    .ips
                    .iter()
                    .map(|ip| render_ip(ip, with_ip_version))
                    .collect();
                out.insert("ips".into(), Value::Array(list));
            }
            if !self.routes.is_empty() {
                let list = self.routes.iter().map(|r| render_route(r, v11)).collect();
                out.insert("routes".into(), Value::Array(list));
            }
        }
        if !self.dns.is_empty() {
            let dns = serde_json::to_value(&self.dns)
                .map_err(|e| ResultError::Invalid(format!("dns: {e}")))?;
            out.insert("dns".into(), dns);
        }
        Ok(Value::Object(out))
    }

    /// [`CniResult::to_value`] as compact JSON text.
    pub fn to_json(&self, version: &str) -> Result<String, ResultError> {
        let value = self.to_value(version)?;
        serde_json::to_string(&value).map_err(|e| ResultError::Json(e.to_string()))
    }

    /// The canonical form of this result after a trip through `version`: what a plugin of that version would see
    /// as `prevResult`. `cni_version` becomes `version`.
    pub fn converted(&self, version: &str) -> Result<Self, ResultError> {
        let ver = supported_version(version)?;
        if ver.is_legacy_result() {
            return Self::from_value(&self.to_value(version)?, version);
        }
        let mut out = self.clone();
        out.cni_version = version.to_string();
        if ver < Version(1, 1, 0) {
            out.interfaces = self
                .interfaces
                .iter()
                .map(Interface::without_v11_fields)
                .collect();
            out.routes = self.routes.iter().map(Route::without_v11_fields).collect();
        } else {
            for i in &mut out.interfaces {
                i.mtu = i.mtu.filter(|m| *m != 0);
            }
            for r in &mut out.routes {
                r.mtu = r.mtu.filter(|m| *m != 0);
                r.advmss = r.advmss.filter(|m| *m != 0);
                r.priority = r.priority.filter(|m| *m != 0);
            }
        }
        Ok(out)
    }

    /// Convenience for status/logs: the first interface with a non-empty sandbox, and its index.
    pub fn first_sandbox_interface(&self) -> Option<(usize, &Interface)> {
        self.interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| !i.sandbox.is_empty())
    }
}

/// The reply to CNI VERSION (SPEC B.3, B.9.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// What a plugin that does not know the VERSION command supports: only 0.1.0.
    pub fn legacy() -> Self {
        Self {
            cni_version: "0.1.0".into(),
            supported_versions: vec!["0.1.0".into()],
        }
    }

    /// Parses a delegate's VERSION reply with libcni's rules: `cniVersion` is required; a reply of `cniVersion`
    /// "0.1.0" or "0.2.0" without `supportedVersions` means ["0.1.0", "0.2.0"]; any other reply without
    /// `supportedVersions` is an error. (A CNI error "unknown CNI_COMMAND: VERSION" is the caller's to map to
    /// [`VersionInfo::legacy`].)
    pub fn from_json(text: &[u8]) -> Result<Self, ResultError> {
        let value: Value = serde_json::from_slice(text)
            .map_err(|e| ResultError::Json(format!("version info: {e}")))?;
        let Value::Object(map) = &value else {
            return Err(ResultError::Json(format!(
                "version info: expected a JSON object, found {}",
                kind(&value)
            )));
        };
        let top = Obj {
            map,
            path: String::new(),
        };
        let cni_version = top.string("cniVersion")?;
        if cni_version.is_empty() {
            return Err(ResultError::Invalid(
                "version info: missing field cniVersion".into(),
            ));
        }
        let supported_versions = top.strings("supportedVersions")?;
        if supported_versions.is_empty() {
            if cni_version == "0.1.0" || cni_version == "0.2.0" {
                return Ok(Self {
                    cni_version,
                    supported_versions: vec!["0.1.0".into(), "0.2.0".into()],
                });
            }
            return Err(ResultError::Invalid(
                "version info: missing field supportedVersions".into(),
            ));
        }
        Ok(Self {
            cni_version,
            supported_versions,
        })
    }

    /// True if the plugin lists exactly this version.
    pub fn supports(&self, version: &str) -> bool {
        self.supported_versions.iter().any(|v| v == version)
    }
}

fn supported_version(text: &str) -> Result<Version, ResultError> {
    if !version::is_supported(text) {
        return Err(ResultError::UnsupportedVersion(text.to_string()));
    }
    Version::parse(text).ok_or_else(|| ResultError::UnsupportedVersion(text.to_string()))
}

fn parse_legacy(top: &Obj<'_>) -> Result<CniResult, ResultError> {
    let mut result = CniResult::default();
    for (key, want_v4) in [("ip4", true), ("ip6", false)] {
        let Some(entry) = top.object(key)? else {
            continue;
        };
        let address = entry.cidr("ip")?;
        if matches!(address, IpNet::V4(_)) != want_v4 {
            return Err(ResultError::Invalid(format!(
                "{} is {address}, not an IPv{} address",
                entry.field("ip"),
                if want_v4 { 4 } else { 6 }
            )));
        }
        result.ips.push(IpConfig {
            address,
            gateway: entry.ip("gateway")?,
            interface: None,
        });
        for route in entry.objects("routes")? {
            result
                .routes
                .push(Route::new(route.cidr("dst")?, route.ip("gw")?));
        }
    }
    result.dns = parse_dns(top)?;
    Ok(result)
}

fn parse_current(top: &Obj<'_>, ver: Version) -> Result<CniResult, ResultError> {
    let v11_fields = ver >= Version(1, 0, 0);
    let mut result = CniResult::default();
    for entry in top.objects("interfaces")? {
        let mut interface = Interface {
            name: entry.string("name")?,
            mac: entry.string("mac")?,
            sandbox: entry.string("sandbox")?,
            ..Interface::default()
        };
        if v11_fields {
            interface.mtu = entry.uint::<u32>("mtu")?.filter(|m| *m != 0);
            interface.socket_path = entry.string("socketPath")?;
            interface.pci_id = entry.string("pciID")?;
        }
        result.interfaces.push(interface);
    }
    for entry in top.objects("ips")? {
        let address = entry.cidr("address")?;
        if ver.has_ip_version_field()
            && let Some(declared) = entry.opt_string("version")?
        {
            let family = match declared.as_str() {
                "4" => true,
                "6" => false,
                other => {
                    return Err(ResultError::Invalid(format!(
                        "{} is {other:?}; it must be \"4\" or \"6\"",
                        entry.field("version")
                    )));
                }
            };
            if family != matches!(address, IpNet::V4(_)) {
                return Err(ResultError::Invalid(format!(
                    "{} is \"{declared}\" but the address {address} is IPv{}",
                    entry.field("version"),
                    if family { 6 } else { 4 }
                )));
            }
        }
        result.ips.push(IpConfig {
            address,
            gateway: entry.ip("gateway")?,
            interface: entry.uint::<usize>("interface")?,
        });
    }
    for entry in top.objects("routes")? {
        let mut route = Route::new(entry.cidr("dst")?, entry.ip("gw")?);
        if v11_fields {
            route.mtu = entry.uint::<u32>("mtu")?.filter(|m| *m != 0);
            route.advmss = entry.uint::<u32>("advmss")?.filter(|m| *m != 0);
            route.priority = entry.uint::<u32>("priority")?.filter(|m| *m != 0);
            route.table = entry.uint::<u32>("table")?;
            route.scope = entry.uint::<u8>("scope")?;
        }
        result.routes.push(route);
    }
    result.dns = parse_dns(top)?;
    Ok(result)
}

fn parse_dns(top: &Obj<'_>) -> Result<Dns, ResultError> {
    let Some(dns) = top.object("dns")? else {
        return Ok(Dns::default());
    };
    Ok(Dns {
        nameservers: dns.strings("nameservers")?,
        domain: dns.string("domain")?,
        search: dns.strings("search")?,
        options: dns.strings("options")?,
    })
}

fn render_interface(interface: &Interface, v11: bool) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), Value::String(interface.name.clone()));
    if !interface.mac.is_empty() {
        out.insert("mac".into(), Value::String(interface.mac.clone()));
    }
    if v11 && let Some(mtu) = interface.mtu.filter(|m| *m != 0) {
        out.insert("mtu".into(), Value::from(mtu));
    }
    if !interface.sandbox.is_empty() {
        out.insert("sandbox".into(), Value::String(interface.sandbox.clone()));
    }
    if v11 && !interface.socket_path.is_empty() {
        out.insert(
            "socketPath".into(),
            Value::String(interface.socket_path.clone()),
        );
    }
    if v11 && !interface.pci_id.is_empty() {
        out.insert("pciID".into(), Value::String(interface.pci_id.clone()));
    }
    Value::Object(out)
}

fn render_ip(ip: &IpConfig, with_version: bool) -> Value {
    let mut out = Map::new();
    if with_version {
        let family = if ip.is_ipv4() { "4" } else { "6" };
        out.insert("version".into(), Value::String(family.into()));
    }
    if let Some(index) = ip.interface {
        out.insert("interface".into(), Value::from(index));
    }
    out.insert("address".into(), Value::String(ip.address.to_string()));
    if let Some(gw) = ip.gateway {
        out.insert("gateway".into(), Value::String(gw.to_string()));
    }
    Value::Object(out)
}

fn render_route(route: &Route, v11: bool) -> Value {
    let mut out = Map::new();
    out.insert("dst".into(), Value::String(route.dst.to_string()));
    if let Some(gw) = route.gw {
        out.insert("gw".into(), Value::String(gw.to_string()));
    }
    if v11 {
        for (key, field) in [
            ("mtu", route.mtu),
            ("advmss", route.advmss),
            ("priority", route.priority),
        ] {
            if let Some(n) = field.filter(|n| *n != 0) {
                out.insert(key.into(), Value::from(n));
            }
        }
        if let Some(table) = route.table {
            out.insert("table".into(), Value::from(table));
        }
        if let Some(scope) = route.scope {
            out.insert("scope".into(), Value::from(scope));
        }
    }
    Value::Object(out)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON object being read, with its path for error messages (`""` for the top level, `ips[1]` …).
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value at `key`; `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> ResultError {
        ResultError::Invalid(format!(
            "{} must be {expected}, found {}",
            self.field(key),
            kind(found)
        ))
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>, ResultError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// A string field; absent means empty.
    fn string(&self, key: &str) -> Result<String, ResultError> {
        Ok(self.opt_string(key)?.unwrap_or_default())
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, ResultError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(n, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ResultError::Invalid(format!(
                        "{}[{n}] must be a string, found {}",
                        self.field(key),
                        kind(other)
                    ))),
                })
                .collect(),
            Some(other) => Err(self.wrong_type(key, "a list of strings", other)),
        }
    }

    fn uint<T: TryFrom<u64>>(&self, key: &str) -> Result<Option<T>, ResultError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let bad = || {
            ResultError::Invalid(format!(
                "{} must be an unsigned integer of at most {} bits, found {value}",
                self.field(key),
                std::mem::size_of::<T>() * 8
            ))
        };
        let n = value.as_u64().ok_or_else(bad)?;
        T::try_from(n).map(Some).map_err(|_| bad())
    }

    /// A required CIDR (`10.0.0.5/24`); host bits are kept.
    fn cidr(&self, key: &str) -> Result<IpNet, ResultError> {
        match self.get(key) {
            None => Err(ResultError::Invalid(format!(
                "{} is missing",
                self.field(key)
            ))),
            Some(Value::String(s)) => s.parse::<IpNet>().map_err(|_| {
                ResultError::Invalid(format!(
                    "{} is {s:?}, not an address in CIDR notation",
                    self.field(key)
                ))
            }),
            Some(other) => Err(self.wrong_type(key, "a CIDR string", other)),
        }
    }

    /// An optional IP address; an empty string means absent (as Go's `net.IP` reads it).
    fn ip(&self, key: &str) -> Result<Option<IpAddr>, ResultError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.parse::<IpAddr>().map(Some).map_err(|_| {
                ResultError::Invalid(format!("{} is {s:?}, not an IP address", self.field(key)))
            }),
            Some(other) => Err(self.wrong_type(key, "an IP address string", other)),
        }
    }

    fn object(&self, key: &str) -> Result<Option<Obj<'a>>, ResultError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                map,
                path: self.field(key),
            })),
            Some(other) => Err(self.wrong_type(key, "an object", other)),
        }
    }

    /// A list of objects; absent means empty.
    fn objects(&self, key: &str) -> Result<Vec<Obj<'a>>, ResultError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(n, item)| match item {
                    Value::Object(map) => Ok(Obj {
                        map,
                        path: format!("{}[{n}]", self.field(key)),
                    }),
                    other => Err(ResultError::Invalid(format!(
                        "{}[{n}] must be an object, found {}",
                        self.field(key),
                        kind(other)
                    ))),
                })
                .collect(),
            Some(other) => Err(self.wrong_type(key, "a list", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const BRIDGE_100: &str = r#"{
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "6a:1c:8e:52:d4:01"},
            {"name": "veth3a9c1f2e", "mac": "ce:60:4c:ab:7e:11"},
            {"name": "eth0", "mac": "2e:f1:0a:77:90:3c", "sandbox": "/var/run/netns/cni-5b1e8f0a"}
        ],
        "ips": [{"interface": 2, "address": "10.22.0.5/16", "gateway": "10.22.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    }"#;

    /// A realistic result of every version, as the reference plugins print them.
    fn samples() -> Vec<(&'static str, Value)> {
        vec![
            // host-local, 0.1.0, dual stack.
            (
                "0.1.0",
                json!({
                    "cniVersion": "0.1.0",
                    "ip4": {"ip": "10.10.0.5/16", "gateway": "10.10.0.1",
                            "routes": [{"dst": "0.0.0.0/0"}]},
                    "ip6": {"ip": "fd00:10::5/64", "gateway": "fd00:10::1",
                            "routes": [{"dst": "::/0", "gw": "fd00:10::1"}]},
                    "dns": {}
                }),
            ),
            // host-local, 0.2.0.
            (
                "0.2.0",
                json!({
                    "cniVersion": "0.2.0",
                    "ip4": {"ip": "172.30.0.9/24", "gateway": "172.30.0.1",
                            "routes": [{"dst": "0.0.0.0/0", "gw": "172.30.0.1"}]},
                    "dns": {"nameservers": ["172.30.0.2"], "domain": "cluster.local"}
                }),
            ),
            // bridge, 0.3.0.
            (
                "0.3.0",
                json!({
                    "cniVersion": "0.3.0",
                    "interfaces": [
                        {"name": "cni0", "mac": "6a:1c:8e:52:d4:01"},
                        {"name": "veth1f0e2d3c", "mac": "ce:60:4c:ab:7e:11"},
                        {"name": "eth0", "mac": "2e:f1:0a:77:90:3c", "sandbox": "/var/run/netns/test"}
                    ],
                    "ips": [{"version": "4", "interface": 2, "address": "10.1.0.5/16", "gateway": "10.1.0.1"}],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dns": {}
                }),
            ),
            // ptp, 0.3.1, dual stack.
            (
                "0.3.1",
                json!({
                    "cniVersion": "0.3.1",
                    "interfaces": [
                        {"name": "veth8d1c0e9b", "mac": "a6:43:1b:2c:9e:00"},
                        {"name": "eth0", "mac": "1a:2b:3c:4d:5e:6f", "sandbox": "/var/run/netns/pod"}
                    ],
                    "ips": [
                        {"version": "4", "interface": 1, "address": "10.1.1.7/24", "gateway": "10.1.1.1"},
                        {"version": "6", "interface": 1, "address": "2001:db8:1::7/64", "gateway": "2001:db8:1::1"}
                    ],
                    "routes": [
                        {"dst": "0.0.0.0/0", "gw": "10.1.1.1"},
                        {"dst": "::/0", "gw": "2001:db8:1::1"}
                    ],
                    "dns": {"nameservers": ["10.1.1.1"], "search": ["svc.cluster.local"], "options": ["ndots:5"]}
                }),
            ),
            // host-local IPAM result, 0.4.0: no interfaces, no interface index.
            (
                "0.4.0",
                json!({
                    "cniVersion": "0.4.0",
                    "ips": [{"version": "4", "address": "10.88.0.12/16", "gateway": "10.88.0.1"}],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.88.0.254"}],
                    "dns": {}
                }),
            ),
            ("1.0.0", serde_json::from_str(BRIDGE_100).unwrap()),
            // A 1.1.0 result with every new field.
            (
                "1.1.0",
                json!({
                    "cniVersion": "1.1.0",
                    "interfaces": [
                        {"name": "br0", "mac": "6a:1c:8e:52:d4:01", "mtu": 9000},
                        {"name": "net1", "mac": "2e:f1:0a:77:90:3c", "mtu": 1500,
                         "sandbox": "/var/run/netns/pod", "socketPath": "/run/vhost/net1.sock",
                         "pciID": "0000:3b:00.2"}
                    ],
                    "ips": [
                        {"interface": 1, "address": "192.168.10.5/24", "gateway": "192.168.10.1"},
                        {"interface": 1, "address": "fd00::5/64"}
                    ],
                    "routes": [
                        {"dst": "0.0.0.0/0", "gw": "192.168.10.1", "mtu": 1400, "advmss": 1360,
                         "priority": 100, "table": 0, "scope": 0},
                        {"dst": "192.168.10.0/24", "table": 200, "scope": 253}
                    ],
                    "dns": {"nameservers": ["192.168.10.1"]}
                }),
            ),
        ]
    }

    /// Reference plugins print `"dns": {}`; libcni-style rendering leaves it out.
    fn without_empty_dns(mut value: Value) -> Value {
        if let Some(map) = value.as_object_mut()
            && map.get("dns") == Some(&json!({}))
        {
            map.remove("dns");
        }
        value
    }

    #[test]
    fn every_version_round_trips() {
        let samples = samples();
        assert_eq!(samples.len(), version::SUPPORTED.len());
        for (ver, text) in samples {
            let bytes = serde_json::to_vec(&text).unwrap();
            let parsed =
                CniResult::from_json(&bytes, "1.1.0").unwrap_or_else(|e| panic!("{ver}: {e}"));
            assert_eq!(parsed.cni_version, ver);
            let rendered = parsed.to_value(ver).unwrap();
            assert_eq!(rendered, without_empty_dns(text), "{ver}");
            // The text form says the same.
            let again: Value = serde_json::from_str(&parsed.to_json(ver).unwrap()).unwrap();
            assert_eq!(again, rendered, "{ver}");
        }
    }

    #[test]
    fn parses_the_bridge_result() {
        let r = CniResult::from_json(BRIDGE_100.as_bytes(), "0.1.0").unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.interfaces.len(), 3);
        assert!(r.dns.is_empty());
        assert_eq!(r.ips[0].address.to_string(), "10.22.0.5/16");
        assert_eq!(r.ips[0].gateway, Some("10.22.0.1".parse().unwrap()));
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(
            r.routes,
            vec![Route::new("0.0.0.0/0".parse().unwrap(), None)]
        );
        let (index, eth0) = r.first_sandbox_interface().unwrap();
        assert_eq!((index, eth0.name.as_str()), (2, "eth0"));
        assert_eq!(eth0.sandbox, "/var/run/netns/cni-5b1e8f0a");
    }

    #[test]
    fn legacy_input_becomes_ips_and_routes() {
        let (_, text) = &samples()[0];
        let r = CniResult::from_value(text, "1.1.0").unwrap();
        assert!(r.interfaces.is_empty());
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.ips[0].address.to_string(), "10.10.0.5/16");
        assert_eq!(r.ips[0].gateway, Some("10.10.0.1".parse().unwrap()));
        assert_eq!(r.ips[0].interface, None);
        assert_eq!(r.ips[1].address.to_string(), "fd00:10::5/64");
        let dsts: Vec<String> = r.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["0.0.0.0/0", "::/0"]);
        assert_eq!(r.routes[1].gw, Some("fd00:10::1".parse().unwrap()));
        // Up-conversion to 0.4.0 adds the version field.
        assert_eq!(
            r.to_value("0.4.0").unwrap(),
            json!({
                "cniVersion": "0.4.0",
                "ips": [
                    {"version": "4", "address": "10.10.0.5/16", "gateway": "10.10.0.1"},
                    {"version": "6", "address": "fd00:10::5/64", "gateway": "fd00:10::1"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:10::1"}]
            })
        );
    }

    fn full_v11() -> CniResult {
        let text = json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "br0", "mac": "6a:1c:8e:52:d4:01", "mtu": 9000},
                {"name": "eth0", "mac": "2e:f1:0a:77:90:3c", "mtu": 1500, "sandbox": "/var/run/netns/pod",
                 "socketPath": "/run/vhost/eth0.sock", "pciID": "0000:3b:00.2"}
            ],
            "ips": [
                {"interface": 1, "address": "fd00::5/64", "gateway": "fd00::1"},
                {"interface": 1, "address": "10.0.0.5/24", "gateway": "10.0.0.1"},
                {"interface": 1, "address": "10.0.1.5/24", "gateway": "10.0.1.1"},
                {"interface": 1, "address": "fd01::5/64"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "advmss": 1360, "priority": 10,
                 "table": 0, "scope": 0},
                {"dst": "::/0", "gw": "fd00::1", "table": 100},
                {"dst": "10.96.0.0/12", "scope": 253}
            ],
            "dns": {"nameservers": ["10.0.0.2"], "domain": "example.org", "search": ["a.example.org"],
                    "options": ["ndots:2"]}
        });
        CniResult::from_value(&text, "1.1.0").unwrap()
    }

    #[test]
    fn conversion_to_1_0_drops_the_1_1_fields() {
        let r = full_v11();
        assert!(r.has_v11_fields());
        let v = r.to_value("1.0.0").unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(
            v["interfaces"],
            json!([
                {"name": "br0", "mac": "6a:1c:8e:52:d4:01"},
                {"name": "eth0", "mac": "2e:f1:0a:77:90:3c", "sandbox": "/var/run/netns/pod"}
            ])
        );
        assert_eq!(
            v["routes"],
            json!([
                {"dst": "0.0.0.0/0", "gw": "10.0.0.1"},
                {"dst": "::/0", "gw": "fd00::1"},
                {"dst": "10.96.0.0/12"}
            ])
        );
        for ip in v["ips"].as_array().unwrap() {
            assert!(ip.get("version").is_none());
        }
        assert_eq!(v["ips"].as_array().unwrap().len(), 4);
        assert_eq!(v["dns"]["domain"], "example.org");
        // Back up: the same result without the 1.1 fields.
        let back = CniResult::from_value(&v, "1.1.0").unwrap();
        assert!(!back.has_v11_fields());
        assert_eq!(back, r.converted("1.0.0").unwrap());
        assert_eq!(back.ips, r.ips);
        assert_eq!(back.dns, r.dns);
        assert_eq!(back.to_value("1.1.0").unwrap()["cniVersion"], "1.1.0");
    }

    #[test]
    fn conversion_to_0_3_and_0_4_adds_the_ip_version() {
        let r = full_v11();
        for ver in ["0.3.0", "0.3.1", "0.4.0"] {
            let v = r.to_value(ver).unwrap();
            assert_eq!(v["cniVersion"], ver);
            let families: Vec<&str> = v["ips"]
                .as_array()
                .unwrap()
                .iter()
                .map(|ip| ip["version"].as_str().unwrap())
                .collect();
            assert_eq!(families, ["6", "4", "4", "6"], "{ver}");
            assert_eq!(v["ips"][1]["interface"], 1);
            assert_eq!(v["ips"][1]["gateway"], "10.0.0.1");
            assert!(v["interfaces"][1].get("mtu").is_none());
            assert!(v["interfaces"][1].get("pciID").is_none());
            assert!(v["interfaces"][1].get("socketPath").is_none());
            assert_eq!(
                v["routes"][0],
                json!({"dst": "0.0.0.0/0", "gw": "10.0.0.1"})
            );
            assert_eq!(v["routes"][2], json!({"dst": "10.96.0.0/12"}));
            let back = CniResult::from_value(&v, "1.1.0").unwrap();
            assert_eq!(back.cni_version, ver);
            assert_eq!(back, r.converted(ver).unwrap());
            // And up again: no version field in 1.x.
            let up = back.to_value("1.1.0").unwrap();
            assert!(up["ips"][0].get("version").is_none());
            assert_eq!(up["interfaces"], r.to_value("1.0.0").unwrap()["interfaces"]);
        }
    }

    #[test]
    fn conversion_to_legacy_keeps_the_first_address_per_family() {
        let r = full_v11();
        for ver in ["0.1.0", "0.2.0"] {
            let v = r.to_value(ver).unwrap();
            assert_eq!(
                v,
                json!({
                    "cniVersion": ver,
                    "ip4": {"ip": "10.0.0.5/24", "gateway": "10.0.0.1",
                            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "10.96.0.0/12"}]},
                    "ip6": {"ip": "fd00::5/64", "gateway": "fd00::1",
                            "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
                    "dns": {"nameservers": ["10.0.0.2"], "domain": "example.org",
                            "search": ["a.example.org"], "options": ["ndots:2"]}
                })
            );
            let back = CniResult::from_value(&v, "1.1.0").unwrap();
            assert_eq!(back.cni_version, ver);
            assert!(back.interfaces.is_empty());
            // IPv4 first, interface indexes gone.
            let addrs: Vec<String> = back.ips.iter().map(|i| i.address.to_string()).collect();
            assert_eq!(addrs, ["10.0.0.5/24", "fd00::5/64"]);
            assert!(back.ips.iter().all(|i| i.interface.is_none()));
            assert_eq!(back.routes.len(), 3);
            assert!(!back.has_v11_fields());
            assert_eq!(back, r.converted(ver).unwrap());
        }
    }

    #[test]
    fn legacy_drops_routes_of_a_family_without_address_and_fails_without_any() {
        let mut r = CniResult {
            cni_version: "1.1.0".into(),
            ips: vec![IpConfig {
                address: "10.0.0.5/24".parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            routes: vec![
                Route::new("::/0".parse().unwrap(), None),
                Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.0.0.1".parse().unwrap()),
                ),
            ],
            ..CniResult::default()
        };
        assert_eq!(
            r.to_value("0.2.0").unwrap(),
            json!({"cniVersion": "0.2.0",
                   "ip4": {"ip": "10.0.0.5/24", "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]}})
        );
        r.ips.clear();
        for ver in ["0.1.0", "0.2.0"] {
            assert_eq!(
                r.to_value(ver),
                Err(ResultError::NoAddressForLegacy {
                    version: ver.into()
                })
            );
            assert!(r.to_json(ver).is_err());
        }
        // Newer versions are fine without addresses.
        assert_eq!(
            r.to_value("0.4.0").unwrap(),
            json!({"cniVersion": "0.4.0", "routes": [{"dst": "::/0"}, {"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]})
        );
    }

    #[test]
    fn serialisation_details() {
        let r = CniResult {
            cni_version: "0.3.1".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mtu: Some(0),
                ..Interface::default()
            }],
            routes: vec![Route {
                mtu: Some(0),
                advmss: Some(0),
                priority: Some(0),
                table: Some(0),
                scope: Some(0),
                ..Route::new("10.0.0.0/8".parse().unwrap(), None)
            }],
            ..CniResult::default()
        };
        // cniVersion is always the requested one; zero mtu/advmss/priority left out; table/scope 0 written.
        assert_eq!(
            r.to_value("1.1.0").unwrap(),
            json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}],
                   "routes": [{"dst": "10.0.0.0/8", "table": 0, "scope": 0}]})
        );
        assert_eq!(
            CniResult::default().to_value("1.0.0").unwrap(),
            json!({"cniVersion": "1.0.0"})
        );
        // Zero on input means unset.
        let parsed = CniResult::from_value(
            &json!({"cniVersion": "1.1.0", "interfaces": [{"name": "a", "mtu": 0}],
                    "routes": [{"dst": "10.0.0.0/8", "priority": 0, "table": 0}]}),
            "1.1.0",
        )
        .unwrap();
        assert_eq!(parsed.interfaces[0].mtu, None);
        assert_eq!(parsed.routes[0].priority, None);
        assert_eq!(parsed.routes[0].table, Some(0));
    }

    #[test]
    fn host_bits_and_legacy_gateway_are_kept() {
        let text =
            br#"{"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.5/24", "gateway": "10.0.0.1"}}"#;
        let r = CniResult::from_json(text, "1.1.0").unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.5/24");
        assert_eq!(r.ips[0].gateway, Some("10.0.0.1".parse().unwrap()));
        let v = r.to_value("1.1.0").unwrap();
        assert_eq!(
            v["ips"][0],
            json!({"address": "10.0.0.5/24", "gateway": "10.0.0.1"})
        );
        assert_eq!(r.to_value("0.2.0").unwrap()["ip4"]["gateway"], "10.0.0.1");
    }

    #[test]
    fn version_detection_and_fallback() {
        let body = json!({"ips": [{"version": "4", "address": "10.0.0.5/24"}]});
        let r = CniResult::from_value(&body, "0.4.0").unwrap();
        assert_eq!(r.cni_version, "0.4.0");
        let mut with_empty = body.clone();
        with_empty["cniVersion"] = json!("");
        assert_eq!(
            CniResult::from_value(&with_empty, "1.0.0")
                .unwrap()
                .cni_version,
            "1.0.0"
        );
        // Fallback to a legacy version reads the legacy shape.
        let legacy = json!({"ip4": {"ip": "10.0.0.5/24"}});
        assert_eq!(
            CniResult::from_value(&legacy, "0.2.0").unwrap().ips.len(),
            1
        );
        assert_eq!(
            CniResult::from_value(&body, "0.5.0"),
            Err(ResultError::UnsupportedVersion("0.5.0".into()))
        );
        assert_eq!(
            CniResult::from_json(br#"{"cniVersion": "2.0.0"}"#, "1.1.0"),
            Err(ResultError::UnsupportedVersion("2.0.0".into()))
        );
        assert_eq!(
            full_v11().to_value("1.2.0"),
            Err(ResultError::UnsupportedVersion("1.2.0".into()))
        );
        assert!(full_v11().to_json("1.0").is_err());
    }

    #[test]
    fn unknown_fields_and_nulls_are_ignored() {
        let text = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/ns", "flavour": "vanilla"}],
            "ips": [{"address": "10.0.0.5/24", "gateway": null, "interface": 0, "version": "6"}],
            "routes": null,
            "dns": null,
            "extra": {"anything": [1, 2, 3]}
        });
        let r = CniResult::from_value(&text, "1.1.0").unwrap();
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.routes.is_empty());
        assert!(r.dns.is_empty());
        // An empty gateway string reads as absent, as in libcni.
        let r = CniResult::from_value(
            &json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.5/24", "gateway": ""}]}),
            "1.1.0",
        )
        .unwrap();
        assert_eq!(r.ips[0].gateway, None);
        // 1.1-only fields are not read from 0.x results.
        let r = CniResult::from_value(
            &json!({"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "mtu": 1500}],
                    "routes": [{"dst": "0.0.0.0/0", "table": 5}]}),
            "1.1.0",
        )
        .unwrap();
        assert!(!r.has_v11_fields());
    }

    fn invalid(value: Value) -> String {
        match CniResult::from_value(&value, "1.1.0") {
            Err(ResultError::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn bad_input_gives_clear_errors() {
        assert!(matches!(
            CniResult::from_json(b"{not json", "1.1.0"),
            Err(ResultError::Json(_))
        ));
        assert!(matches!(
            CniResult::from_json(b"[1, 2]", "1.1.0"),
            Err(ResultError::Json(msg)) if msg.contains("an array")
        ));
        let msg = invalid(
            json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "fd00::1/64"}]}),
        );
        assert!(
            msg.contains("ips[0].version") && msg.contains("IPv6"),
            "{msg}"
        );
        let msg = invalid(
            json!({"cniVersion": "0.4.0", "ips": [{"version": "5", "address": "10.0.0.1/8"}]}),
        );
        assert!(msg.contains("ips[0].version"), "{msg}");
        let msg = invalid(json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}));
        assert!(
            msg.contains("ips[0].address") && msg.contains("CIDR"),
            "{msg}"
        );
        let msg = invalid(json!({"cniVersion": "1.0.0", "ips": [{"gateway": "10.0.0.1"}]}));
        assert!(msg.contains("ips[0].address is missing"), "{msg}");
        let msg =
            invalid(json!({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "gw": "nope"}]}));
        assert!(msg.contains("routes[0].gw"), "{msg}");
        let msg =
            invalid(json!({"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "scope": 300}]}));
        assert!(msg.contains("routes[0].scope"), "{msg}");
        let msg = invalid(json!({"cniVersion": "1.1.0", "interfaces": [{"name": 7}]}));
        assert!(msg.contains("interfaces[0].name must be a string"), "{msg}");
        let msg = invalid(json!({"cniVersion": "1.1.0", "interfaces": {"name": "eth0"}}));
        assert!(msg.contains("interfaces must be a list"), "{msg}");
        let msg = invalid(
            json!({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.1/8", "interface": -1}]}),
        );
        assert!(msg.contains("ips[0].interface"), "{msg}");
        let msg = invalid(json!({"cniVersion": "1.1.0", "dns": {"nameservers": "1.1.1.1"}}));
        assert!(msg.contains("dns.nameservers"), "{msg}");
        let msg = invalid(json!({"cniVersion": "0.2.0", "ip4": {"ip": "fd00::1/64"}}));
        assert!(msg.contains("ip4.ip"), "{msg}");
        let msg = invalid(json!({"cniVersion": 1}));
        assert!(msg.contains("cniVersion"), "{msg}");
    }

    #[test]
    fn interface_index_must_exist() {
        let msg = invalid(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/ns"}],
            "ips": [{"address": "10.0.0.5/24", "interface": 1}]
        }));
        assert!(msg.contains("ips[0].interface is 1"), "{msg}");
        // IPAM results carry no interfaces and no indexes.
        let ipam = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/24"}]});
        let r = CniResult::from_value(&ipam, "1.1.0").unwrap();
        assert!(r.first_sandbox_interface().is_none());
    }

    #[test]
    fn version_info() {
        let info = VersionInfo::from_json(
            br#"{"cniVersion": "1.1.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}"#,
        )
        .unwrap();
        assert_eq!(info.cni_version, "1.1.0");
        assert!(info.supports("0.4.0") && info.supports("1.1.0"));
        assert!(!info.supports("0.2.0") && !info.supports("1.1"));
        for old in ["0.1.0", "0.2.0"] {
            let text = format!(r#"{{"cniVersion": "{old}"}}"#);
            let info = VersionInfo::from_json(text.as_bytes()).unwrap();
            assert_eq!(info.supported_versions, ["0.1.0", "0.2.0"]);
            assert!(info.supports("0.2.0") && !info.supports("0.3.0"));
        }
        assert!(matches!(
            VersionInfo::from_json(br#"{"cniVersion": "0.3.1"}"#),
            Err(ResultError::Invalid(msg)) if msg.contains("supportedVersions")
        ));
        assert!(matches!(
            VersionInfo::from_json(br#"{"supportedVersions": ["1.0.0"]}"#),
            Err(ResultError::Invalid(msg)) if msg.contains("cniVersion")
        ));
        assert!(matches!(
            VersionInfo::from_json(b"garbage"),
            Err(ResultError::Json(_))
        ));
        assert!(
            VersionInfo::from_json(br#"{"cniVersion": "1.0.0", "supportedVersions": "1.0.0"}"#)
                .is_err()
        );
        let legacy = VersionInfo::legacy();
        assert!(legacy.supports("0.1.0") && !legacy.supports("0.2.0"));
        // Serialises as the spec's VERSION reply.
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }

    fn ipnet() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<std::net::Ipv4Addr>(), 0u8..=32)
                .prop_map(|(a, p)| IpNet::V4(ipnet::Ipv4Net::new(a, p).unwrap())),
            (any::<std::net::Ipv6Addr>(), 0u8..=128)
                .prop_map(|(a, p)| IpNet::V6(ipnet::Ipv6Net::new(a, p).unwrap())),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9:./-]{1,12}"]
    }

    fn interface() -> impl Strategy<Value = Interface> {
        (
            "[a-z0-9]{0,8}",
            text(),
            proptest::option::of(1u32..=65535),
            text(),
            text(),
            text(),
        )
            .prop_map(|(name, mac, mtu, sandbox, socket_path, pci_id)| Interface {
                name,
                mac,
                mtu,
                sandbox,
                socket_path,
                pci_id,
            })
    }

    fn route() -> impl Strategy<Value = Route> {
        let nonzero = || proptest::option::of(1u32..);
        (
            ipnet(),
            proptest::option::of(any::<IpAddr>()),
            nonzero(),
            nonzero(),
            nonzero(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u8>()),
        )
            .prop_map(|(dst, gw, mtu, advmss, priority, table, scope)| Route {
                dst,
                gw,
                mtu,
                advmss,
                priority,
                table,
                scope,
            })
    }

    fn dns() -> impl Strategy<Value = Dns> {
        let list = || proptest::collection::vec("[a-z0-9.:]{1,10}", 0..3);
        (list(), text(), list(), list()).prop_map(|(nameservers, domain, search, options)| Dns {
            nameservers,
            domain,
            search,
            options,
        })
    }

    fn result() -> impl Strategy<Value = CniResult> {
        proptest::collection::vec(interface(), 0..4).prop_flat_map(|interfaces| {
            let count = interfaces.len();
            let index = if count == 0 {
                Just(None).boxed()
            } else {
                proptest::option::of(0..count).boxed()
            };
            let ip = (ipnet(), proptest::option::of(any::<IpAddr>()), index).prop_map(
                |(address, gateway, interface)| IpConfig {
                    address,
                    gateway,
                    interface,
                },
            );
            (
                Just(interfaces),
                proptest::collection::vec(ip, 0..4),
                proptest::collection::vec(route(), 0..4),
                dns(),
            )
                .prop_map(|(interfaces, ips, routes, dns)| CniResult {
                    cni_version: "1.1.0".into(),
                    interfaces,
                    ips,
                    routes,
                    dns,
                })
        })
    }

    proptest! {
        #[test]
        fn v11_round_trip_is_lossless(r in result()) {
            let v = r.to_value("1.1.0").unwrap();
            prop_assert_eq!(CniResult::from_value(&v, "0.1.0").unwrap(), r.clone());
            let text = r.to_json("1.1.0").unwrap();
            prop_assert_eq!(CniResult::from_json(text.as_bytes(), "0.1.0").unwrap(), r);
        }

        #[test]
        fn older_round_trips_without_v11_fields(r in result()) {
            for ver in ["1.0.0", "0.4.0", "0.3.1"] {
                let mut expected = r.converted(ver).unwrap();
                prop_assert!(!expected.has_v11_fields());
                let back = CniResult::from_value(&r.to_value(ver).unwrap(), "1.1.0").unwrap();
                prop_assert_eq!(&back, &expected);
                // A result that had no 1.1 fields to begin with is unchanged.
                expected.cni_version = "1.1.0".into();
                if !r.has_v11_fields() {
                    prop_assert_eq!(&expected, &r);
                }
            }
        }

        #[test]
        fn legacy_keeps_first_address_per_family(r in result()) {
            let has_ip = !r.ips.is_empty();
            match r.to_value("0.2.0") {
                Err(e) => {
                    prop_assert!(!has_ip);
                    prop_assert_eq!(e, ResultError::NoAddressForLegacy { version: "0.2.0".into() });
                }
                Ok(v) => {
                    prop_assert!(has_ip);
                    let back = CniResult::from_value(&v, "1.1.0").unwrap();
                    let first4 = r.ips.iter().find(|i| i.is_ipv4()).map(|i| (i.address, i.gateway));
                    let first6 = r.ips.iter().find(|i| !i.is_ipv4()).map(|i| (i.address, i.gateway));
                    let want: Vec<_> = first4.into_iter().chain(first6).collect();
                    let got: Vec<_> = back.ips.iter().map(|i| (i.address, i.gateway)).collect();
                    prop_assert_eq!(got, want);
                    prop_assert!(back.routes.iter().all(|r| !r.has_v11_fields()));
                    prop_assert_eq!(back.dns, r.dns);
                }
            }
        }
    }
}
