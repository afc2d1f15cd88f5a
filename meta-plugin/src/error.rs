//! Plexus's errors, and the one place where each maps to a CNI error code.

use plexus_api::cni::{CniError, ErrorCode, config::ConfigError};
use plexus_api::policy::PolicyError;

use crate::netns::NetnsError;

/// A source failure: the API server said no, or could not be reached in time.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("{what}: no answer within {seconds}s")]
    Timeout { what: String, seconds: f64 },
    #[error("kubeconfig {path}: {msg}")]
    Kubeconfig { path: String, msg: String },
    /// The node daemon's client task ended before answering (the daemon is stopping).
    #[error("{what}: the client stopped: {msg}")]
    ClientStopped { what: String, msg: String },
}

/// Code 11 (try again later) when the API server did not answer in time, could not be reached or said it is
/// overloaded or unavailable; 103 for every other API failure (forbidden, bad kubeconfig, ...).
fn source_error_code(e: &SourceError) -> ErrorCode {
    match e {
        SourceError::Timeout { .. } => ErrorCode::TryAgainLater,
        SourceError::Api { source, .. } => match source {
            kube::Error::Api(status) if matches!(status.code, 429 | 500 | 502 | 503 | 504) => {
                ErrorCode::TryAgainLater
            }
            kube::Error::Api(_) => ErrorCode::Kubernetes,
            kube::Error::HyperError(_) | kube::Error::Service(_) => ErrorCode::TryAgainLater,
            _ => ErrorCode::Kubernetes,
        },
        SourceError::Kubeconfig { .. } => ErrorCode::Kubernetes,
        SourceError::ClientStopped { .. } => ErrorCode::TryAgainLater,
    }
}

/// The code for a delegate config that can't be used.
fn config_error_code(e: &ConfigError) -> ErrorCode {
    match e {
        ConfigError::Json(_) => ErrorCode::Decoding,
        ConfigError::UnsupportedVersion { .. } => ErrorCode::IncompatibleVersion,
        _ => ErrorCode::InvalidConfig,
    }
}

/// A delegate plugin that returned an error, with the network and interface it was working on.
#[derive(Debug, thiserror::Error)]
#[error("network {network:?} (interface {ifname}): delegate {delegate:?} {command} failed: {msg}")]
pub struct DelegateFailure {
    pub network: String,
    pub ifname: String,
    pub delegate: String,
    pub command: &'static str,
    pub code: u32,
    pub msg: String,
    pub details: String,
}

/// Everything that can make a Plexus command fail.
#[derive(Debug, thiserror::Error)]
pub enum PlexusError {
    #[error("reading stdin failed: {0}")]
    Stdin(std::io::Error),
    #[error("stdin is not a valid JSON config: {0}")]
    Decode(String),
    #[error("missing or invalid environment variables: {}", .0.join(", "))]
    Environment(Vec<String>),
    #[error("CNI version {requested:?} is not supported (supported: {supported})")]
    IncompatibleVersion {
        requested: String,
        supported: String,
    },
    #[error("invalid Plexus config: {0}")]
    InvalidConfig(String),
    #[error("network {network:?}: {source}")]
    InvalidDelegate {
        network: String,
        source: ConfigError,
    },
    /// A rule of the pod request refused it (bad annotation, unknown NAD, namespace isolation, interface names,
    /// capability gate, pod replaced).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("Kubernetes API: {0}")]
    Kubernetes(#[from] SourceError),
    #[error("pod {namespace}/{name} was not found in the API server")]
    PodNotFound { namespace: String, name: String },
    #[error(
        "pod {pod}: networks attached but network-status could not be written, so the ADD was undone: {source}"
    )]
    StatusNotWritten { pod: String, source: SourceError },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read confDir {}: {source}", dir.display())]
    ConfDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("clusterNetwork {path}: {msg}")]
    ClusterNetwork { path: String, msg: String },
    #[error(
        "container {container_id:?} interface {ifname:?} is already attached; DEL it before adding it again"
    )]
    AlreadyAttached {
        container_id: String,
        ifname: String,
    },
    #[error("container {container_id:?}: its ADD did not complete (record state {state})")]
    Incomplete { container_id: String, state: String },
    #[error("network {network:?}: cannot give interface {ifname} the default route: {source}")]
    RouteChange {
        network: String,
        ifname: String,
        source: NetnsError,
    },
    #[error("network {network:?}: its result can't be given in CNI version {version}: {msg}")]
    ResultVersion {
        network: String,
        version: String,
        msg: String,
    },
    #[error("{0}")]
    Delegate(Box<DelegateFailure>),
    #[error(
        "network {network:?} (interface {ifname}): delegate {delegate:?} {command} did not finish within {seconds}s and was killed"
    )]
    DelegateTimeout {
        network: String,
        ifname: String,
        delegate: String,
        command: &'static str,
        seconds: f64,
    },
    #[error(
        "the caller stopped waiting before network {network:?} was attached (thick mode: the shim's \
         daemonTimeoutSeconds passed); the ADD was rolled back"
    )]
    CallerGone { network: String },
    #[error("record {path}: {msg}")]
    Record { path: String, msg: String },
    /// The pod's devices could not be learnt (device networks): the kubelet did not answer and its checkpoint did
    /// not help.
    #[error("pod {pod}: the devices the kubelet allocated can't be read: {msg}")]
    Kubelet { pod: String, msg: String },
    #[error(
        "no record of container {container_id:?} interface {ifname:?}: it was never added, or was deleted"
    )]
    UnknownContainer {
        container_id: String,
        ifname: String,
    },
    /// The default network is not ready: code 50 for STATUS, 11 (try again later) when an ADD gave up waiting.
    #[error("{msg}")]
    NotReady { msg: String, retry: bool },
    #[error("{summary}")]
    Several {
        summary: String,
        errors: Vec<PlexusError>,
    },
}

impl PlexusError {
    /// The CNI error object for this failure. This is the only mapping from Plexus errors to codes.
    pub fn to_cni(&self) -> CniError {
        let (code, details) = match self {
            PlexusError::Stdin(_) => (ErrorCode::Io.code(), String::new()),
            PlexusError::Decode(_) => (ErrorCode::Decoding.code(), String::new()),
            PlexusError::Environment(_) => (ErrorCode::InvalidEnvironment.code(), String::new()),
            PlexusError::IncompatibleVersion { .. } => {
                (ErrorCode::IncompatibleVersion.code(), String::new())
            }
            PlexusError::InvalidConfig(_) => (ErrorCode::InvalidConfig.code(), String::new()),
            PlexusError::InvalidDelegate { source, .. } => {
                (config_error_code(source).code(), String::new())
            }
            PlexusError::Policy(e) => (
                match e {
                    PolicyError::InvalidDelegate { source, .. } => config_error_code(source),
                    PolicyError::NoDefaultNetwork
                    | PolicyError::NoStaticDelegates
                    | PolicyError::PluginTypeNotAllowed { .. } => ErrorCode::InvalidConfig,
                    PolicyError::PodReplaced { .. } => ErrorCode::PodReplaced,
                    _ => ErrorCode::Selection,
                }
                .code(),
                String::new(),
            ),
            PlexusError::Kubernetes(e) | PlexusError::StatusNotWritten { source: e, .. } => {
                (source_error_code(e).code(), String::new())
            }
            PlexusError::PodNotFound { .. } => (ErrorCode::PodNotFound.code(), String::new()),
            PlexusError::Runtime(_) | PlexusError::ConfDir { .. } => {
                (ErrorCode::Io.code(), String::new())
            }
            PlexusError::ClusterNetwork { .. } => (ErrorCode::InvalidConfig.code(), String::new()),
            PlexusError::AlreadyAttached { .. } | PlexusError::Incomplete { .. } => {
                (ErrorCode::Record.code(), String::new())
            }
            PlexusError::RouteChange { .. } => (ErrorCode::RouteChange.code(), String::new()),
            PlexusError::ResultVersion { .. } => {
                (ErrorCode::IncompatibleVersion.code(), String::new())
            }
            // A delegate's own code is kept so that the runtime's handling (e.g. 11, try again later) still applies.
            PlexusError::Delegate(f) => (f.code, f.details.clone()),
            PlexusError::DelegateTimeout { .. } => {
                (ErrorCode::DelegateTimeout.code(), String::new())
            }
            PlexusError::CallerGone { .. } => (ErrorCode::TryAgainLater.code(), String::new()),
            PlexusError::Record { .. } => (ErrorCode::Record.code(), String::new()),
            PlexusError::Kubelet { .. } => (ErrorCode::TryAgainLater.code(), String::new()),
            PlexusError::UnknownContainer { .. } => {
                (ErrorCode::UnknownContainer.code(), String::new())
            }
            PlexusError::NotReady { retry: false, .. } => {
                (ErrorCode::NotAvailable.code(), String::new())
            }
            PlexusError::NotReady { retry: true, .. } => {
                (ErrorCode::TryAgainLater.code(), String::new())
            }
            PlexusError::Several { errors, .. } => (
                errors
                    .first()
                    .map(|e| e.to_cni().code)
                    .unwrap_or(ErrorCode::Internal.code()),
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        CniError::new(ErrorCode::Internal, self.to_string())
            .with_details(details)
            .with_code(code)
    }

    /// Folds a list of errors into one (R60): `None` when the list is empty.
    pub fn combine(what: &str, mut errors: Vec<PlexusError>) -> Option<PlexusError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            n => Some(PlexusError::Several {
                summary: format!("{what}: {n} errors, first: {}", errors[0]),
                errors,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> PlexusError {
        PlexusError::Kubernetes(SourceError::Api {
            what: "GET pod a/b".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            ),
        })
    }

    #[test]
    fn api_failures_that_may_pass_are_try_again_later() {
        for code in [429, 500, 502, 503, 504] {
            assert_eq!(api(code).to_cni().code, 11, "HTTP {code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert_eq!(api(code).to_cni().code, 103, "HTTP {code}");
        }
        let timeout = PlexusError::Kubernetes(SourceError::Timeout {
            what: "GET pod a/b".into(),
            seconds: 1.0,
        });
        assert_eq!(timeout.to_cni().code, 11);
        let status = PlexusError::StatusNotWritten {
            pod: "a/b".into(),
            source: SourceError::Kubeconfig {
                path: "/k".into(),
                msg: "bad".into(),
            },
        };
        assert_eq!(status.to_cni().code, 103);
        let gone = PlexusError::PodNotFound {
            namespace: "a".into(),
            name: "b".into(),
        };
        assert_eq!(gone.to_cni().code, 105);
    }
}
