//! The daemon's part of the node's status Lease (`plexus_api::node_status`): ready, records, the last hour's
//! failed requests. Looked at every few seconds, written when it changes and at least every heartbeat, into the Lease
//! the installer makes (the daemon never makes one).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use plexus_api::node_status::DaemonStatus;
use plexus_cni::node_status::Publisher;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// How often the daemon looks at what it would publish.
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// What the daemon would publish now.
pub fn current(metrics: &Metrics) -> DaemonStatus {
    DaemonStatus {
        version: plexus_cni::VERSION.to_owned(),
        ready: metrics.ready.load(Ordering::Relaxed),
        records: metrics.records(),
        failures: metrics.recent_failures(),
        updated: String::new(),
    }
}

/// Publishes until the task is dropped; a failed write is said once and tried again.
pub async fn run(client: kube::Client, namespace: String, node: String, metrics: Arc<Metrics>) {
    let mut publisher = match Publisher::<DaemonStatus>::new(client, &namespace, &node) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "the node's status is not published");
            return;
        }
    };
    info!(namespace = %namespace, lease = publisher.lease(), "publishing the daemon's status");
    let mut failed: Option<String> = None;
    loop {
        match publisher.publish(current(&metrics)).await {
            Ok(_) => {
                if failed.take().is_some() {
                    info!(
                        lease = publisher.lease(),
                        "publishing the daemon's status again"
                    );
                }
            }
            Err(e) => {
                let e = e.to_string();
                if failed.as_ref() != Some(&e) {
                    warn!(error = %e, "could not publish the daemon's status; trying again");
                    failed = Some(e);
                }
            }
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}
