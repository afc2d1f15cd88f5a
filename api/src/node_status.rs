//! What each node's Plexus publishes about itself through the API server, for `kubectl plexus status`: one
//! `coordination.k8s.io/v1` Lease per node in Plexus's namespace, named [`lease_name`] and labelled [`LABEL`], with
//! two annotations, each written by one component with its own server-side-apply field manager:
//! - [`INSTALL_ANNOTATION`] by the installer (both modes): the mode, the version, whether the conf is in place and
//!   which cluster network it delegates to, what it waits for, its last error;
//! - [`DAEMON_ANNOTATION`] by `plexus-daemon` (thick mode): ready (caches synced), records, the ADDs and DELs that
//!   failed in the last hour.
//!
//! Each part is written when it changes (the daemon's records count only with the heartbeat) and at least every
//! [`HEARTBEAT_SECONDS`]; a part older than
//! [`STALE_AFTER_SECONDS`] is stale (its writer stopped). Nothing is served on a node port: readers need only `list`
//! on leases. The API server holds each node's writer to its own node's Lease (the chart's admission policy).

use serde::{Deserialize, Serialize};

/// A Lease name is a DNS-1123 subdomain: at most this long.
const MAX_NAME: usize = 253;
pub const LEASE_PREFIX: &str = "plexus-node-";
/// The label every node-status Lease carries (value `"true"`): what `kubectl plexus status` lists by.
pub const LABEL: &str = "plexus.io/node-status";
pub const INSTALL_ANNOTATION: &str = "plexus.io/install";
pub const DAEMON_ANNOTATION: &str = "plexus.io/daemon";
/// The field managers of the two parts.
pub const INSTALL_MANAGER: &str = "plexus-install";
pub const DAEMON_MANAGER: &str = "plexus-daemon";
/// Each part is written again at least this often when nothing changed.
pub const HEARTBEAT_SECONDS: i64 = 60;
/// A part not written for this long is stale.
pub const STALE_AFTER_SECONDS: i64 = 3 * HEARTBEAT_SECONDS;
/// Failures kept: the last hour's, at most this many (newest kept).
pub const MAX_FAILURES: usize = 20;
pub const FAILURE_WINDOW_SECONDS: i64 = 3600;
/// A failure's message is cut to this many bytes (at a character boundary).
pub const MAX_MESSAGE: usize = 512;

/// The Lease of `node`, or `None` when the name would be too long for one.
pub fn lease_name(node: &str) -> Option<String> {
    (!node.is_empty() && LEASE_PREFIX.len() + node.len() <= MAX_NAME)
        .then(|| format!("{LEASE_PREFIX}{node}"))
}

/// The installer's part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallStatus {
    /// `thin` or `thick`.
    pub mode: String,
    /// `plexus --version`'s text.
    pub version: String,
    /// The conf, as a path on the node.
    pub conf: String,
    pub conf_in_place: bool,
    /// The cluster network the conf delegates to: the file found in the conf dir, or the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_network: Option<String>,
    /// What the installer waits for before it can write the conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Its last pass's error, if that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339.
    pub updated: String,
}

/// An ADD or DEL the daemon answered with an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// RFC 3339.
    pub at: String,
    /// `namespace/name`, when the request named a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub container_id: String,
    /// `ADD`, `DEL`, ...
    pub command: String,
    pub code: u32,
    pub message: String,
}

/// The daemon's part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    pub version: String,
    /// Its watch caches have synced (it answers `/readyz`).
    pub ready: bool,
    /// Sandboxes it holds a record of.
    pub records: usize,
    /// The last hour's failures, newest first, at most [`MAX_FAILURES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
    /// RFC 3339.
    pub updated: String,
}

/// One of the two parts.
pub trait Part: Serialize + Clone {
    /// The annotation it is written to.
    const ANNOTATION: &'static str;
    /// The field manager that writes it.
    const MANAGER: &'static str;
    /// Sets when it was written (RFC 3339).
    fn set_updated(&mut self, at: String);
    /// Whether `other` says something else than `self`, ignoring when each was written.
    fn differs(&self, other: &Self) -> bool {
        let (mut a, mut b) = (self.clone(), other.clone());
        a.set_updated(String::new());
        b.set_updated(String::new());
        serde_json::to_value(a).ok() != serde_json::to_value(b).ok()
    }
}

impl Part for InstallStatus {
    const ANNOTATION: &'static str = INSTALL_ANNOTATION;
    const MANAGER: &'static str = INSTALL_MANAGER;
    fn set_updated(&mut self, at: String) {
        self.updated = at;
    }
}

impl Part for DaemonStatus {
    const ANNOTATION: &'static str = DAEMON_ANNOTATION;
    const MANAGER: &'static str = DAEMON_MANAGER;
    fn set_updated(&mut self, at: String) {
        self.updated = at;
    }
    /// The records count changes with every pod on the node: it goes out with the heartbeat only, so that pod churn
    /// does not turn into a write per node every few seconds.
    fn differs(&self, other: &Self) -> bool {
        let strip = |s: &Self| Self {
            records: 0,
            updated: String::new(),
            ..s.clone()
        };
        strip(self) != strip(other)
    }
}

/// Cuts `message` to [`MAX_MESSAGE`] bytes at a character boundary.
pub fn cut_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Adds `failure` (at `now_seconds`, Unix time) to `failures` (newest first, each with its Unix time), dropping
/// those older than [`FAILURE_WINDOW_SECONDS`] and keeping at most [`MAX_FAILURES`].
pub fn push_failure(failures: &mut Vec<(i64, Failure)>, now_seconds: i64, failure: Failure) {
    failures.insert(0, (now_seconds, failure));
    prune_failures(failures, now_seconds);
}

/// Drops the failures older than [`FAILURE_WINDOW_SECONDS`] and those past [`MAX_FAILURES`].
pub fn prune_failures(failures: &mut Vec<(i64, Failure)>, now_seconds: i64) {
    failures.retain(|(at, _)| now_seconds.saturating_sub(*at) <= FAILURE_WINDOW_SECONDS);
    failures.truncate(MAX_FAILURES);
}

/// Whether a part written at `updated_seconds` is stale at `now_seconds`.
pub fn is_stale(updated_seconds: i64, now_seconds: i64) -> bool {
    now_seconds.saturating_sub(updated_seconds) > STALE_AFTER_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(pod: &str) -> Failure {
        Failure {
            at: "2026-12-07T10:00:00Z".into(),
            pod: Some(pod.into()),
            container_id: "c".into(),
            command: "ADD".into(),
            code: 7,
            message: "m".into(),
        }
    }

    #[test]
    fn a_lease_name_is_a_valid_name_or_none() {
        assert_eq!(lease_name("node-1").as_deref(), Some("plexus-node-node-1"));
        assert_eq!(lease_name(""), None);
        assert_eq!(lease_name(&"a".repeat(241)).map(|n| n.len()), Some(253));
        assert_eq!(lease_name(&"a".repeat(242)), None);
    }

    #[test]
    fn failures_keep_the_last_hours_newest_first_and_at_most_twenty() {
        let mut failures = Vec::new();
        push_failure(&mut failures, 0, failure("ns/old"));
        push_failure(&mut failures, 3000, failure("ns/a"));
        assert_eq!(failures.len(), 2);
        push_failure(&mut failures, 3601, failure("ns/b"));
        let pods: Vec<_> = failures
            .iter()
            .map(|(_, f)| f.pod.clone().unwrap())
            .collect();
        assert_eq!(pods, ["ns/b", "ns/a"]);
        for i in 0..30 {
            push_failure(&mut failures, 3602 + i, failure(&format!("ns/p{i}")));
        }
        assert_eq!(failures.len(), MAX_FAILURES);
        assert_eq!(failures[0].1.pod.as_deref(), Some("ns/p29"));
        prune_failures(&mut failures, 3602 + 29 + FAILURE_WINDOW_SECONDS + 1);
        assert!(failures.is_empty());
    }

    #[test]
    fn a_change_is_what_is_said_not_when() {
        let a = DaemonStatus {
            ready: true,
            updated: "t1".into(),
            ..DaemonStatus::default()
        };
        let b = DaemonStatus {
            updated: "t2".into(),
            ..a.clone()
        };
        assert!(!a.differs(&b));
        assert!(a.differs(&DaemonStatus {
            ready: false,
            ..b.clone()
        }));
        // The records count waits for the heartbeat.
        assert!(!a.differs(&DaemonStatus { records: 1, ..b }));
        let install = InstallStatus::default();
        assert!(install.differs(&InstallStatus {
            conf_in_place: true,
            ..InstallStatus::default()
        }));
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(400);
        let cut = cut_message(&long);
        assert!(cut.len() <= MAX_MESSAGE + "…".len());
        assert!(cut.ends_with('…'));
        assert_eq!(cut_message("short"), "short");
    }

    #[test]
    fn staleness_is_three_heartbeats() {
        assert!(!is_stale(0, STALE_AFTER_SECONDS));
        assert!(is_stale(0, STALE_AFTER_SECONDS + 1));
    }
}
