//! The CNI error object (SPEC B.9.7) and the well-known codes.

use serde::{Deserialize, Serialize};

/// Well-known CNI error codes. Codes 0–99 are reserved by the spec; Plexus's own start at 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decoding = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    NotAvailableLimitedConnectivity = 51,
    /// A delegate plugin failed; the message names the network and the delegate.
    DelegateFailed = 100,
    /// A delegate did not answer within its timeout and was killed.
    DelegateTimeout = 101,
    /// The pod's network selection could not be resolved (bad annotation, unknown NAD, policy).
    Selection = 102,
    /// Talking to the Kubernetes API failed.
    Kubernetes = 103,
    /// The on-node record of an attachment could not be read or written.
    Record = 104,
    /// The pod the runtime named does not exist in the API server (after a short retry).
    PodNotFound = 105,
    /// The pod in the API server has another UID than the runtime's `K8S_POD_UID`: it was deleted and re-created.
    PodReplaced = 106,
    /// Moving the pod's default route to the selected interface (`default-route`) failed.
    RouteChange = 107,
    /// A bug or an unexpected internal condition.
    Internal = 999,
}

impl ErrorCode {
    /// Every code, in order: what `docs/errors.md` documents, one row each.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::IncompatibleVersion,
        ErrorCode::UnsupportedField,
        ErrorCode::UnknownContainer,
        ErrorCode::InvalidEnvironment,
        ErrorCode::Io,
        ErrorCode::Decoding,
        ErrorCode::InvalidConfig,
        ErrorCode::TryAgainLater,
        ErrorCode::NotAvailable,
        ErrorCode::NotAvailableLimitedConnectivity,
        ErrorCode::DelegateFailed,
        ErrorCode::DelegateTimeout,
        ErrorCode::Selection,
        ErrorCode::Kubernetes,
        ErrorCode::Record,
        ErrorCode::PodNotFound,
        ErrorCode::PodReplaced,
        ErrorCode::RouteChange,
        ErrorCode::Internal,
    ];

    pub fn code(self) -> u32 {
        self as u32
    }
}

/// A CNI error object, as printed on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniError {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            cni_version: String::new(),
            code: code.code(),
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn with_code(mut self, code: u32) -> Self {
        self.code = code;
        self
    }

    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.cni_version = version.into();
        self
    }

    /// The JSON text printed on stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a CNI error always serialises")
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_like_the_spec_example() {
        let e = CniError::new(ErrorCode::InvalidConfig, "invalid network config")
            .with_details("ipam.subnet has no usable addresses")
            .with_version("1.1.0");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "invalid network config");
        assert_eq!(v["details"], "ipam.subnet has no usable addresses");
    }

    #[test]
    fn empty_details_are_left_out() {
        let v: serde_json::Value =
            serde_json::from_str(&CniError::new(ErrorCode::Io, "x").to_json()).unwrap();
        assert!(v.get("details").is_none());
        assert!(v.get("cniVersion").is_none());
    }

    #[test]
    fn parses_a_delegate_error() {
        let e: CniError =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"x"}"#)
                .unwrap();
        assert_eq!(e.code, ErrorCode::TryAgainLater.code());
    }
}
