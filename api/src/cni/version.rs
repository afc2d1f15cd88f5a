//! CNI spec versions: which ones Plexus speaks, how they compare, and the version negotiation rules (SPEC B.3).

use std::cmp::Ordering;

/// Every spec version Plexus accepts on input and can render results in, oldest first.
pub const SUPPORTED: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest spec version Plexus implements.
pub const CURRENT: &str = "1.1.0";

/// The version libcni assumes for a config that names none.
pub const IMPLICIT: &str = "0.1.0";

/// A parsed `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// Parses `x.y.z` (no pre-release or build parts: CNI versions never carry them).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let mut next = || {
            parts.next().and_then(|p| {
                if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
                    None
                } else {
                    p.parse::<u64>().ok()
                }
            })
        };
        let v = Version(next()?, next()?, next()?);
        if parts.next().is_some() {
            None
        } else {
            Some(v)
        }
    }

    /// True for versions that carry the 0.1/0.2 `ip4`/`ip6` result shape.
    pub fn is_legacy_result(self) -> bool {
        self < Version(0, 3, 0)
    }

    /// True for versions whose results carry `ips[].version` (0.3.0 – 0.4.0).
    pub fn has_ip_version_field(self) -> bool {
        self >= Version(0, 3, 0) && self < Version(1, 0, 0)
    }

    /// CHECK exists from 0.4.0 on.
    pub fn supports_check(self) -> bool {
        self >= Version(0, 4, 0)
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn supports_status_and_gc(self) -> bool {
        self >= Version(1, 1, 0)
    }

    /// DEL carries `prevResult` from 0.4.0 on.
    pub fn sends_prev_result_on_del(self) -> bool {
        self >= Version(0, 4, 0)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// True if Plexus speaks this exact version.
pub fn is_supported(text: &str) -> bool {
    SUPPORTED.contains(&text)
}

/// Compares two version strings; unparsable ones sort first.
pub fn compare(a: &str, b: &str) -> Ordering {
    Version::parse(a).cmp(&Version::parse(b))
}

/// The version a config list runs with (C7): the highest of `cniVersion` and `cniVersions` that Plexus supports.
/// An empty `cniVersion` counts as 0.1.0, as in libcni. Returns `None` when no listed version is supported.
pub fn negotiate<'a>(cni_version: &'a str, cni_versions: &'a [String]) -> Option<&'static str> {
    let primary = if cni_version.is_empty() {
        IMPLICIT
    } else {
        cni_version
    };
    std::iter::once(primary)
        .chain(cni_versions.iter().map(String::as_str))
        .filter_map(|v| SUPPORTED.iter().copied().find(|s| *s == v))
        .max_by(|a, b| compare(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert!(Version::parse("0.3.1").unwrap() < Version::parse("0.4.0").unwrap());
        assert!(Version::parse("1.0.0").unwrap() < Version::parse("1.1.0").unwrap());
        assert_eq!(Version::parse("1.1"), None);
        assert_eq!(Version::parse("1.1.0.0"), None);
        assert_eq!(Version::parse("01.1.0"), None);
        assert_eq!(Version::parse(""), None);
    }

    #[test]
    fn negotiation_takes_the_highest_supported() {
        let list = vec!["0.4.0".to_string(), "1.1.0".into(), "9.0.0".into()];
        assert_eq!(negotiate("1.0.0", &list), Some("1.1.0"));
        assert_eq!(negotiate("", &[]), Some("0.1.0"));
        assert_eq!(negotiate("2.0.0", &[]), None);
        assert_eq!(negotiate("0.3.1", &[]), Some("0.3.1"));
    }

    #[test]
    fn gates() {
        let v = |s| Version::parse(s).unwrap();
        assert!(!v("0.3.1").supports_check());
        assert!(v("0.4.0").supports_check());
        assert!(!v("1.0.0").supports_status_and_gc());
        assert!(v("1.1.0").supports_status_and_gc());
        assert!(v("0.2.0").is_legacy_result());
        assert!(v("0.3.0").has_ip_version_field());
        assert!(!v("1.0.0").has_ip_version_field());
    }
}
