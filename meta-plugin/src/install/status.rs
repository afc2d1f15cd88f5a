//! The installer's part of the node's status Lease (`plexus_api::node_status`, `kubectl plexus status`): what it
//! publishes after each pass, in a Lease it makes owned by its DaemonSet.

use std::fs;

use plexus_api::node_status::InstallStatus;
use tracing::{info, warn};

use super::{CONF_NAME, InstallArgs, InstallError, Layout, Mode, Pass};
use crate::VERSION;
use crate::node_status::Publisher;

/// The installer's part of the node's status Lease (`kubectl plexus status`), when it knows its node and namespace.
pub(super) struct StatusWriter {
    node: Option<String>,
    /// `namespace/name` of the DaemonSet, the Lease's owner.
    daemonset: Option<String>,
    namespace: Option<String>,
    publisher: Option<Publisher<InstallStatus>>,
    /// The last failure, said once.
    failed: Option<String>,
}

impl StatusWriter {
    pub(super) fn new(args: &InstallArgs) -> Self {
        let namespace = args.status_namespace.clone().or_else(|| {
            fs::read_to_string(args.service_account_dir.join("namespace"))
                .ok()
                .map(|n| n.trim().to_owned())
        });
        let node = args.node_name.clone().filter(|n| !n.is_empty());
        if node.is_none() || namespace.as_deref().is_none_or(str::is_empty) {
            info!("no node name or namespace: the node's status is not published");
        }
        Self {
            node,
            daemonset: args.daemonset.clone(),
            namespace: namespace.filter(|n| !n.is_empty()),
            publisher: None,
            failed: None,
        }
    }

    pub(super) async fn write(
        &mut self,
        mode: Mode,
        layout: &Layout,
        pass: &Result<Pass, InstallError>,
    ) {
        let (Some(node), Some(namespace)) = (&self.node, &self.namespace) else {
            return;
        };
        if self.publisher.is_none() {
            let made = match kube::Client::try_default().await {
                Ok(client) => {
                    // Owned by the DaemonSet: the garbage collector removes it with the DaemonSet (uninstall).
                    let owner = match &self.daemonset {
                        Some(reference) => match owner_reference(&client, reference).await {
                            Ok(owner) => Some(owner),
                            Err(e) => return self.failed(e),
                        },
                        None => None,
                    };
                    Publisher::new(client, namespace, node)
                        .map(|p| p.making(owner))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("no API client: {e}")),
            };
            match made {
                Ok(p) => self.publisher = Some(p),
                Err(e) => return self.failed(e),
            }
        }
        let Some(publisher) = self.publisher.as_mut() else {
            return;
        };
        let conf = layout.host_conf_dir.join(CONF_NAME);
        let part = InstallStatus {
            mode: match mode {
                Mode::Thin => "thin",
                Mode::Thick => "thick",
            }
            .to_owned(),
            version: VERSION.to_owned(),
            conf: conf.display().to_string(),
            conf_in_place: match pass {
                Ok(p) => p.conf_present,
                Err(_) => layout.conf().exists(),
            },
            cluster_network: pass.as_ref().ok().and_then(|p| p.cluster_network.clone()),
            waiting_for: pass.as_ref().ok().and_then(|p| p.waiting_for.clone()),
            error: pass.as_ref().err().map(|e| e.to_string()),
            updated: String::new(),
        };
        match publisher.publish(part).await {
            Ok(_) => {
                if self.failed.take().is_some() {
                    info!(
                        lease = publisher.lease(),
                        "publishing the node's status again"
                    );
                }
            }
            Err(e) => self.failed(e.to_string()),
        }
    }

    fn failed(&mut self, error: String) {
        if self.failed.as_ref() != Some(&error) {
            warn!(%error, "could not publish the node's status; trying again");
            self.failed = Some(error);
        }
    }
}

/// The owner reference to the DaemonSet `namespace/name`.
async fn owner_reference(
    client: &kube::Client,
    reference: &str,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference, String> {
    let ds = super::daemonset::read(client, reference)
        .await?
        .ok_or_else(|| format!("the DaemonSet {reference} does not exist"))?;
    let name = ds.metadata.name.clone().unwrap_or_default();
    Ok(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name,
            uid: ds.metadata.uid.unwrap_or_default(),
            ..Default::default()
        },
    )
}
