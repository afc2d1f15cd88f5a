//! Writes one part of this node's status Lease ([`plexus_api::node_status`]): when it changes, and at least every
//! heartbeat. The installer makes the Lease (server-side apply, owned by its DaemonSet, so that the garbage collector
//! removes it with the DaemonSet at uninstall) and writes its part; `plexus-daemon` only patches its own part into the
//! Lease the installer made, so that nothing but the installer ever makes one.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{Patch, PatchParams};
use plexus_api::node_status::{HEARTBEAT_SECONDS, LABEL, Part, lease_name};
use serde_json::json;

/// How long one write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a part was not written.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the status Lease of node {0:?} would have a name longer than 253 characters")]
    Name(String),
    #[error("writing {lease}: {source}")]
    Write {
        lease: String,
        source: Box<kube::Error>,
    },
    #[error("writing {0}: no answer within 10s")]
    Timeout(String),
    #[error("serializing the status: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The writer of one part `P` of one node's Lease.
pub struct Publisher<P: Part> {
    api: Api<Lease>,
    name: String,
    node: String,
    /// The installer: makes the Lease, with this owner.
    maker: Option<Option<OwnerReference>>,
    last: Option<(P, Instant)>,
}

impl<P: Part> Publisher<P> {
    pub fn new(client: kube::Client, namespace: &str, node: &str) -> Result<Self, PublishError> {
        let name = lease_name(node).ok_or_else(|| PublishError::Name(node.to_owned()))?;
        Ok(Self {
            api: Api::namespaced(client, namespace),
            name,
            node: node.to_owned(),
            maker: None,
            last: None,
        })
    }

    /// Makes the Lease when it is missing (the installer), owned by `owner`.
    pub fn making(mut self, owner: Option<OwnerReference>) -> Self {
        self.maker = Some(owner);
        self
    }

    /// The Lease's name.
    pub fn lease(&self) -> &str {
        &self.name
    }

    /// Writes `part` when it says something new or the last write is a heartbeat old; `Ok(true)` when written.
    /// A failed write is tried again at the next call.
    pub async fn publish(&mut self, mut part: P) -> Result<bool, PublishError> {
        let due = match &self.last {
            None => true,
            Some((last, at)) => {
                last.differs(&part) || at.elapsed() >= Duration::from_secs(HEARTBEAT_SECONDS as u64)
            }
        };
        if !due {
            return Ok(false);
        }
        part.set_updated(k8s_openapi::jiff::Timestamp::now().to_string());
        let annotations = json!({P::ANNOTATION: serde_json::to_string(&part)?});
        let (params, patch) = match &self.maker {
            Some(owner) => {
                let mut metadata = json!({
                    "name": self.name,
                    "labels": {LABEL: "true"},
                    "annotations": annotations,
                });
                if let Some(owner) = owner {
                    metadata["ownerReferences"] = json!([owner]);
                }
                let body = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": metadata,
                    "spec": {"holderIdentity": self.node},
                });
                (PatchParams::apply(P::MANAGER).force(), Patch::Apply(body))
            }
            // A merge patch: NotFound while the installer has not made the Lease.
            None => (
                PatchParams {
                    field_manager: Some(P::MANAGER.to_owned()),
                    ..PatchParams::default()
                },
                Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            ),
        };
        match tokio::time::timeout(WRITE_TIMEOUT, self.api.patch(&self.name, &params, &patch)).await
        {
            Ok(Ok(_)) => {
                self.last = Some((part, Instant::now()));
                Ok(true)
            }
            Ok(Err(e)) => Err(PublishError::Write {
                lease: self.name.clone(),
                source: Box::new(e),
            }),
            Err(_) => Err(PublishError::Timeout(self.name.clone())),
        }
    }
}
