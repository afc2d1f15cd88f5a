//! Name rules shared by the plugin (annotation parsing, NAD resolution) and the controller's admission webhook:
//! interface names, DNS-1123 names, NAD names. The rules for a whole NAD are in [`crate::nad`].
//!
//! Every rule here is a pure function of its input, so the plugin and the webhook accept and refuse exactly the same
//! things. This module imports nothing else of the crate.

use serde_json::Value;

/// Longest interface name the kernel accepts (`IFNAMSIZ` minus the terminating NUL).
pub const MAX_INTERFACE_NAME_BYTES: usize = 15;

/// Longest DNS-1123 label (namespace names).
pub const MAX_DNS1123_LABEL: usize = 63;

/// Longest DNS-1123 subdomain (Kubernetes object names).
pub const MAX_DNS1123_SUBDOMAIN: usize = 253;

/// The kernel's rule for a network interface name (`dev_valid_name`), which CNI's `ValidateInterfaceName` also
/// applies: 1–15 bytes, not `.` or `..`, and no `/`, `:`, whitespace or NUL anywhere.
///
/// Whitespace is judged with Unicode's definition, a superset of the kernel's ASCII `isspace`, as libcni does.
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_BYTES
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$` without a length limit: the character rule of one DNS-1123 label.
fn dns1123_label_chars(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// A DNS-1123 label: lower-case letters, digits and `-`, starting and ending with a letter or digit, at most 63
/// characters. Namespace names follow this rule.
pub fn valid_dns1123_label(s: &str) -> bool {
    s.len() <= MAX_DNS1123_LABEL && dns1123_label_chars(s)
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters in all. Most Kubernetes object
/// names (an `IPAMClaim`'s, for instance) follow this rule.
pub fn valid_dns1123_subdomain(s: &str) -> bool {
    s.len() <= MAX_DNS1123_SUBDOMAIN && s.split('.').all(dns1123_label_chars)
}

/// A name that can select a NetworkAttachmentDefinition from the networks annotation (SPEC A.2, R6): the DNS-1123
/// label character rule (no dots, since the comma form could not tell them apart from nothing at all and the spec
/// asks for label units), with the 253-character limit of a Kubernetes object name. The spec only *recommends*
/// 63 characters per unit and Kubernetes lets such NADs be created, so a longer name is not refused.
pub fn valid_nad_name(s: &str) -> bool {
    s.len() <= MAX_DNS1123_SUBDOMAIN && dns1123_label_chars(s)
}

/// A short English name for the kind of a JSON value, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rule() {
        for good in [
            "eth0",
            "net1",
            "eth0.1",
            "net_1",
            "Eth1",
            "a",
            "123456789012345",
            "veth-é",
        ] {
            assert!(valid_interface_name(good), "{good:?} should be valid");
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\u{a0}b",
            "a\0b",
            "ééééééééé",
        ] {
            assert!(!valid_interface_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn dns1123_rules() {
        for good in ["a", "net-a", "0", "a-0-b", &"a".repeat(63)] {
            assert!(valid_dns1123_label(good), "{good:?}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a b", &"a".repeat(64)] {
            assert!(!valid_dns1123_label(bad), "{bad:?}");
        }
        assert!(valid_dns1123_subdomain("pod-1.net-a.eth1"));
        assert!(!valid_dns1123_subdomain("a..b"));
        assert!(!valid_dns1123_subdomain(".a"));
        assert!(!valid_dns1123_subdomain(""));
        assert!(valid_nad_name(&"a".repeat(70)));
        assert!(!valid_nad_name(&"a".repeat(254)));
        assert!(!valid_nad_name("a.b"));
    }
}
