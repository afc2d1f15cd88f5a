//! Reads what `why` needs from the API server: the pod, each NAD it selects, a dry-run of the pod's creation (the
//! admission webhook's verdict today), the pod's Events, and what its node's plexus-daemon says of it (the failed
//! requests in the node's status Lease). Only GET/LIST and one dry-run create: nothing changes.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use plexus_api::nad::{NetworkAttachmentDefinition, VALID_CONDITION, validate_nad};
use plexus_api::node_status::Failure;
use plexus_api::readiness::NETWORKS_READY_CONDITION;
use plexus_api::selection::{NETWORKS_ANNOTATION, parse_selections};
use plexus_api::status::NETWORK_STATUS_ANNOTATION;

use crate::node_lease::{NodePlexus, holder, node_leases};

use super::diagnose::{Condition, EventFact, Facts, NadFact, WebhookFact};

/// Who reports Events `why` shows: Plexus's plugin, daemon and controller.
const PLEXUS_COMPONENTS: &[&str] = &["plexus", "plexus-daemon", "plexus-controller"];

/// Why `why` could not even start.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("pod {namespace}/{name} not found")]
    NoSuchPod { namespace: String, name: String },
    #[error("reading pod {namespace}/{name}: {source}")]
    Pod {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

pub async fn gather(client: &Client, namespace: &str, name: &str) -> Result<Facts, GatherError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods
        .get_opt(name)
        .await
        .map_err(|source| GatherError::Pod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| GatherError::NoSuchPod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let networks = annotations.get(NETWORKS_ANNOTATION).cloned();
    let mut facts = Facts {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
        networks: networks.clone(),
        network_status: annotations.get(NETWORK_STATUS_ANNOTATION).cloned(),
        networks_ready: pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == NETWORKS_READY_CONDITION))
            .map(|c| Condition {
                status: c.status.clone(),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            }),
        ..Facts::default()
    };
    if let Some(Ok(selections)) = networks.as_deref().map(|a| parse_selections(a, namespace)) {
        for s in selections {
            let key = format!("{}/{}", s.namespace, s.name);
            if facts.nads.contains_key(&key) {
                continue;
            }
            let api: Api<NetworkAttachmentDefinition> =
                Api::namespaced(client.clone(), &s.namespace);
            let fact = match api.get_opt(&s.name).await {
                Ok(None) => NadFact::Missing,
                Ok(Some(nad)) => nad_fact(&nad),
                Err(e) => NadFact::Unreadable {
                    error: e.to_string(),
                },
            };
            facts.nads.insert(key, fact);
        }
    }
    if networks.is_some() {
        facts.webhook = Some(dry_run(&pods, pod).await);
    }
    facts.events = events(client, namespace, name).await;
    if let Some(node) = &facts.node {
        facts.daemon_failures = daemon_failures(client, node, &format!("{namespace}/{name}")).await;
    }
    Ok(facts)
}

/// The failed requests for `pod` that the plexus-daemon of `node` published (its status Lease, read as `status`
/// reads it), newest first; none when there is no such Lease or it can't be listed.
async fn daemon_failures(client: &Client, node: &str, pod: &str) -> Vec<Failure> {
    let Ok(leases) = node_leases(client).await else {
        return Vec::new();
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    leases
        .iter()
        .filter(|l| holder(l) == Some(node))
        .filter_map(|l| NodePlexus::judge(l, now).daemon)
        .flat_map(|d| d.failures)
        .filter(|f| f.pod.as_deref() == Some(pod))
        .collect()
}

pub fn nad_fact(nad: &NetworkAttachmentDefinition) -> NadFact {
    let status = nad.status.as_ref();
    NadFact::Found {
        problems: validate_nad(nad).err().unwrap_or_default(),
        valid: status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == VALID_CONDITION))
            .map(|c| (c.status.clone(), c.message.clone())),
        attached_pods: status.and_then(|s| s.attached_pods),
    }
}

/// The pod as it stands, created again with `dryRun=All`: the API server runs every admission webhook on it and
/// stores nothing. A pod the webhooks admit then fails as AlreadyExists (storage comes after admission), which is an
/// admission too.
async fn dry_run(pods: &Api<Pod>, mut pod: Pod) -> WebhookFact {
    let meta = &mut pod.metadata;
    meta.resource_version = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.managed_fields = None;
    meta.generation = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    pod.status = None;
    let params = PostParams {
        dry_run: true,
        field_manager: Some("kubectl-plexus".into()),
    };
    match pods.create(&params, &pod).await {
        Ok(_) => WebhookFact::Admitted { warnings: vec![] },
        Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => {
            WebhookFact::Admitted { warnings: vec![] }
        }
        Err(kube::Error::Api(status)) if status.message.contains("denied the request") => {
            let message = status
                .message
                .split_once("denied the request: ")
                .map(|(_, m)| m.to_owned())
                .unwrap_or(status.message.clone());
            WebhookFact::Refused { message }
        }
        Err(e) => WebhookFact::Unknown {
            error: e.to_string(),
        },
    }
}

/// The pod's Events from Plexus and the kubelet's sandbox failures, newest first.
async fn events(client: &Client, namespace: &str, name: &str) -> Vec<EventFact> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&format!(
        "involvedObject.name={name},involvedObject.kind=Pod"
    ));
    let Ok(list) = api.list(&params).await else {
        return Vec::new();
    };
    let mut events: Vec<(String, EventFact)> = list
        .items
        .into_iter()
        .filter_map(|e| {
            let from = e
                .reporting_component
                .clone()
                .filter(|c| !c.is_empty())
                .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
                .unwrap_or_default();
            let reason = e.reason.clone().unwrap_or_default();
            let shown =
                PLEXUS_COMPONENTS.contains(&from.as_str()) || reason == "FailedCreatePodSandBox";
            if !shown {
                return None;
            }
            let last = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                .unwrap_or_default();
            Some((
                last.clone(),
                EventFact {
                    reason,
                    message: e.message.clone().unwrap_or_default(),
                    warning: e.type_.as_deref() == Some("Warning"),
                    from,
                    count: e
                        .count
                        .or_else(|| e.series.as_ref().map(|s| s.count.unwrap_or(1)))
                        .unwrap_or(1),
                    last: Some(last).filter(|l| !l.is_empty()),
                },
            ))
        })
        .collect();
    events.sort_by(|a, b| b.0.cmp(&a.0));
    events.into_iter().map(|(_, e)| e).collect()
}
