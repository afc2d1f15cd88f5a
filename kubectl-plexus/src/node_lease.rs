//! The nodes' status Leases (`plexus_api::node_status`) as `kubectl plexus` reads them: listed by their label, and
//! each judged — its two parts, whether each is stale, what is wrong on the node. `status` shows them per node, `why`
//! takes the daemon's failures for one pod from them.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};
use plexus_api::node_status::{
    DAEMON_ANNOTATION, DaemonStatus, INSTALL_ANNOTATION, InstallStatus, LABEL, is_stale,
};
use serde::{Deserialize, Serialize};

/// Every node's status Lease, in whichever namespace Plexus runs (by their label).
pub async fn node_leases(client: &Client) -> Result<Vec<Lease>, kube::Error> {
    Ok(Api::<Lease>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{LABEL}=true")))
        .await?
        .items)
}

/// The node a status Lease is of.
pub fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// One node's status Lease, judged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlexus {
    /// `namespace/name` of the Lease.
    pub lease: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallStatus>,
    /// The installer's part is older than three heartbeats: its writer stopped.
    pub install_stale: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonStatus>,
    pub daemon_stale: bool,
    /// What is wrong on the node, per this Lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl NodePlexus {
    /// Reads a Lease's two parts and says what is wrong at `now` (Unix seconds).
    pub fn judge(lease: &Lease, now: i64) -> Self {
        let annotations = lease.metadata.annotations.clone().unwrap_or_default();
        let mut out = Self {
            lease: format!(
                "{}/{}",
                lease.metadata.namespace.as_deref().unwrap_or_default(),
                lease.metadata.name.as_deref().unwrap_or_default()
            ),
            ..Self::default()
        };
        let stale = |updated: &str| {
            updated
                .parse::<Timestamp>()
                .map_or(true, |t| is_stale(t.as_second(), now))
        };
        match annotations
            .get(INSTALL_ANNOTATION)
            .map(|v| serde_json::from_str::<InstallStatus>(v))
        {
            Some(Ok(install)) => {
                out.install_stale = stale(&install.updated);
                if out.install_stale {
                    out.problems.push(format!(
                        "the installer has not published since {} (is its pod running?)",
                        install.updated
                    ));
                }
                if !install.conf_in_place {
                    out.problems.push(format!(
                        "the conf {} is not in place{}",
                        install.conf,
                        install
                            .waiting_for
                            .as_deref()
                            .map(|w| format!(": waiting for {w}"))
                            .unwrap_or_default()
                    ));
                }
                if let Some(e) = &install.error {
                    out.problems
                        .push(format!("the installer's last pass failed: {e}"));
                }
                out.install = Some(install);
            }
            Some(Err(e)) => out
                .problems
                .push(format!("the installer's status can't be read: {e}")),
            None => out.problems.push("no installer status".to_owned()),
        }
        let thick = out.install.as_ref().is_some_and(|i| i.mode == "thick");
        match annotations
            .get(DAEMON_ANNOTATION)
            .map(|v| serde_json::from_str::<DaemonStatus>(v))
        {
            Some(Ok(daemon)) => {
                out.daemon_stale = stale(&daemon.updated);
                if out.daemon_stale && thick {
                    out.problems.push(format!(
                        "plexus-daemon has not published since {} (is it running?)",
                        daemon.updated
                    ));
                } else if !daemon.ready && thick {
                    out.problems
                        .push("plexus-daemon is not ready (its caches have not synced)".to_owned());
                }
                out.daemon = Some(daemon);
            }
            Some(Err(e)) => out
                .problems
                .push(format!("the daemon's status can't be read: {e}")),
            None if thick => out
                .problems
                .push("thick mode, but plexus-daemon publishes no status".to_owned()),
            None => {}
        }
        out
    }
}
