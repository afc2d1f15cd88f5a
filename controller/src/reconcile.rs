//! The reconcilers (run by the leader only): NAD status (condition `Valid`, `observedGeneration`, the number of
//! pods attached), the pod condition `k8s.cni.cncf.io/NetworksReady` (the request against network-status), and
//! Events when a NAD is deleted or changed while pods use it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use plexus_api::nad::validate_nad;
use plexus_api::nad::{
    NadCondition, NetworkAttachmentDefinition, NetworkAttachmentDefinitionStatus, VALID_CONDITION,
};
use plexus_api::readiness::{NETWORKS_READY_CONDITION, compare};
use plexus_api::selection::{NETWORKS_ANNOTATION, parse_selections};
use plexus_api::status::{NETWORK_STATUS_ANNOTATION, parse_statuses};
use serde_json::json;

use crate::index::{Key, PodIndex, PodNetworks};
use crate::metrics::{ChangeLabels, ControllerLabels, Metrics};

/// The name the controller's Events and field manager carry.
pub const CONTROLLER_NAME: &str = "plexus-controller";

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing the status of {object} failed: {source}")]
    Patch {
        object: String,
        #[source]
        source: kube::Error,
    },
}

/// What the reconcilers share.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// `defaultNetworks` of the plugin: network-status entries every pod has without asking.
    pub default_networks: Vec<String>,
    index: Mutex<PodIndex>,
    mismatched: Mutex<HashSet<Key>>,
    invalid: Mutex<HashSet<Key>>,
}

impl Context {
    pub fn new(
        client: Client,
        identity: &str,
        metrics: Arc<Metrics>,
        default_networks: Vec<String>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_NAME.into(),
                instance: Some(identity.to_owned()),
            },
        );
        Arc::new(Self {
            client,
            recorder,
            metrics,
            default_networks,
            index: Mutex::default(),
            mismatched: Mutex::default(),
            invalid: Mutex::default(),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, PodIndex> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mark(
        &self,
        set: &Mutex<HashSet<Key>>,
        gauge: &prometheus_client::metrics::gauge::Gauge,
        key: Key,
        on: bool,
    ) {
        let mut set = set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            set.insert(key);
        } else {
            set.remove(&key);
        }
        gauge.set(i64::try_from(set.len()).unwrap_or(i64::MAX));
    }

    async fn event(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(reason, error = %e, "could not record an event");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn key_of<K: Resource>(obj: &K) -> Key {
    (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

/// Keeps only what the pod reconciler reads (metadata without managedFields, the node name, status conditions), so 10,000 pods
/// stay small in memory.
fn slim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        ..PodSpec::default()
    });
    let conditions = pod.status.take().and_then(|s| s.conditions);
    pod.status = Some(PodStatus {
        conditions,
        ..PodStatus::default()
    });
}

fn pod_networks(pod: &Pod) -> PodNetworks {
    PodNetworks::of(
        pod.namespace().as_deref().unwrap_or_default(),
        pod.metadata
            .annotations
            .as_ref()
            .unwrap_or(&Default::default()),
    )
}

fn nad_ref(key: &Key) -> ObjectRef<NetworkAttachmentDefinition> {
    ObjectRef::new(&key.1).within(&key.0)
}

/// Runs both reconcilers until `stop` resolves.
pub async fn run(
    ctx: Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let (nad_trigger, nad_triggers) = mpsc::unbounded::<ObjectRef<NetworkAttachmentDefinition>>();

    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let pod_ctx = ctx.clone();
    let trigger = nad_trigger.clone();
    let pod_stream = watcher(pods.clone(), watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(slim_pod)
        .reflect(pod_writer)
        .inspect_ok(move |event| {
            let touched = {
                let mut index = pod_ctx.index();
                match event {
                    watcher::Event::Init => {
                        index.begin_relist();
                        Vec::new()
                    }
                    watcher::Event::InitDone => index.end_relist(),
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        index.set(key_of(pod), Some(pod_networks(pod)))
                    }
                    watcher::Event::Delete(pod) => {
                        pod_ctx.mark(
                            &pod_ctx.mismatched,
                            &pod_ctx.metrics.mismatched_pods,
                            key_of(pod),
                            false,
                        );
                        index.set(key_of(pod), None)
                    }
                }
            };
            for nad in touched {
                let _ = trigger.unbounded_send(nad_ref(&nad));
            }
        })
        .applied_objects();

    let nads: Api<NetworkAttachmentDefinition> = Api::all(ctx.client.clone());
    let (nad_store, nad_writer) = reflector::store::<NetworkAttachmentDefinition>();
    let nad_ctx = ctx.clone();
    let nad_stream = watcher(nads, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|nad: &mut NetworkAttachmentDefinition| nad.managed_fields_mut().clear())
        .reflect(nad_writer)
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(nad) = event {
                let ctx = nad_ctx.clone();
                let nad = nad.clone();
                tokio::spawn(async move { nad_deleted(&ctx, &nad).await });
            }
        })
        .applied_objects();

    let pod_controller = Controller::for_stream(pod_stream, pod_store.clone())
        .graceful_shutdown_on(stop.clone())
        .run(reconcile_pod, pod_error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    let nad_ctx = ctx.clone();
    let nad_stop = stop.clone();
    let nad_controller = async move {
        // Counts are right only once every pod has been seen.
        tokio::select! {
            _ = pod_store.wait_until_ready() => {}
            _ = nad_stop.clone() => return,
        }
        Controller::for_stream(nad_stream, nad_store)
            .reconcile_on(nad_triggers)
            .graceful_shutdown_on(nad_stop)
            .run(reconcile_nad, nad_error_policy, nad_ctx)
            .for_each(|_| futures::future::ready(()))
            .await;
    };
    tokio::join!(pod_controller, nad_controller);
    drop(nad_trigger);
    tracing::info!("reconcilers stopped");
}

async fn nad_deleted(ctx: &Context, nad: &NetworkAttachmentDefinition) {
    let key = key_of(nad);
    ctx.mark(&ctx.invalid, &ctx.metrics.invalid_nads, key.clone(), false);
    let users = ctx.index().users(&key);
    if users.is_empty() {
        return;
    }
    ctx.metrics
        .networks_changed_under_pods
        .get_or_create(&ChangeLabels { change: "deleted" })
        .inc();
    let network = format!("{}/{}", key.0, key.1);
    tracing::warn!(%network, pods = users.len(), "NetworkAttachmentDefinition deleted while pods use it");
    ctx.event(
        &nad.object_ref(&()),
        "NetworkDeleted",
        format!(
            "deleted while {} pod(s) use it: {}",
            users.len(),
            names(&users)
        ),
    )
    .await;
    for pod in users {
        ctx.event(
            &pod_ref(&pod),
            "NetworkDeleted",
            format!("NetworkAttachmentDefinition {network}, which this pod uses, was deleted"),
        )
        .await;
    }
}

fn names(pods: &[Key]) -> String {
    let mut list: Vec<String> = pods
        .iter()
        .take(20)
        .map(|(ns, n)| format!("{ns}/{n}"))
        .collect();
    if pods.len() > 20 {
        list.push(format!("and {} more", pods.len() - 20));
    }
    list.join(", ")
}

fn pod_ref(pod: &Key) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.0.clone()),
        name: Some(pod.1.clone()),
        ..Default::default()
    }
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn reconcile_nad(
    nad: Arc<NetworkAttachmentDefinition>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    ctx.metrics
        .reconciles
        .get_or_create(&ControllerLabels { controller: "nad" })
        .inc();
    let key = key_of(nad.as_ref());
    let (attached, users) = {
        let index = ctx.index();
        (index.attached_count(&key), index.users(&key))
    };
    let generation = nad.metadata.generation;
    let old = nad.status.clone().unwrap_or_default();
    if let (Some(seen), Some(generation)) = (old.observed_generation, generation)
        && seen != generation
        && !users.is_empty()
    {
        ctx.metrics
            .networks_changed_under_pods
            .get_or_create(&ChangeLabels { change: "changed" })
            .inc();
        let network = format!("{}/{}", key.0, key.1);
        tracing::warn!(%network, pods = users.len(), "NetworkAttachmentDefinition changed while pods use it");
        ctx.event(
            &nad.object_ref(&()),
            "NetworkChanged",
            format!(
                "spec changed (generation {seen} to {generation}) while {} pod(s) use it: {}; they keep the config \
                 they were attached with",
                users.len(),
                names(&users)
            ),
        )
        .await;
        for pod in &users {
            ctx.event(
                &pod_ref(pod),
                "NetworkChanged",
                format!("NetworkAttachmentDefinition {network}, which this pod uses, changed since it was attached"),
            )
            .await;
        }
    }
    let (status, reason, message) = match validate_nad(&nad) {
        Ok(())
            if nad
                .spec
                .config
                .as_deref()
                .is_none_or(|c| c.trim().is_empty()) =>
        {
            (
                "True",
                "OnDisk",
                "no spec.config: the nodes' CNI config named after this NAD is used".to_owned(),
            )
        }
        Ok(()) => (
            "True",
            "Valid",
            "spec.config is a CNI config Plexus can run".to_owned(),
        ),
        Err(problems) => ("False", "Invalid", problems.join("; ")),
    };
    ctx.mark(
        &ctx.invalid,
        &ctx.metrics.invalid_nads,
        key.clone(),
        status == "False",
    );
    let previous = old.conditions.iter().find(|c| c.type_ == VALID_CONDITION);
    let condition = NadCondition {
        type_: VALID_CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Some(now()),
        },
    };
    let new = NetworkAttachmentDefinitionStatus {
        conditions: vec![condition],
        observed_generation: generation,
        attached_pods: Some(u32::try_from(attached).unwrap_or(u32::MAX)),
    };
    if new != old {
        let api: Api<NetworkAttachmentDefinition> = Api::namespaced(ctx.client.clone(), &key.0);
        api.patch_status(
            &key.1,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": new})),
        )
        .await
        .map_err(|source| ReconcileError::Patch {
            object: format!("NetworkAttachmentDefinition {}/{}", key.0, key.1),
            source,
        })?;
    }
    Ok(Action::await_change())
}

/// The condition a pod should carry, and the Event to record when it is a mismatch.
fn pod_verdict(
    pod: &Pod,
    default_networks: &[String],
) -> Option<(bool, &'static str, String, bool)> {
    let namespace = pod.namespace().unwrap_or_default();
    let annotations = pod.metadata.annotations.as_ref()?;
    let request = annotations
        .get(NETWORKS_ANNOTATION)
        .filter(|a| !a.trim().is_empty())?;
    let selections = match parse_selections(request, &namespace) {
        Ok(s) => s,
        Err(e) => return Some((false, "InvalidRequest", e.to_string(), true)),
    };
    let Some(status) = annotations.get(NETWORK_STATUS_ANNOTATION) else {
        let where_ = match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(node) => format!("on node {node}"),
            None => "(no node yet)".to_owned(),
        };
        return Some((
            false,
            "NotAttached",
            format!(
                "no network-status yet: {} network(s) requested, none attached {where_}",
                selections.len()
            ),
            false,
        ));
    };
    let statuses = match parse_statuses(status) {
        Ok(s) => s,
        Err(e) => return Some((false, "InvalidStatus", e.to_string(), true)),
    };
    let mismatches = compare(&namespace, &selections, &statuses, default_networks);
    if mismatches.is_empty() {
        Some((
            true,
            "Attached",
            format!(
                "all {} requested network(s) are in network-status",
                selections.len()
            ),
            false,
        ))
    } else {
        let text: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        Some((false, "Mismatch", text.join("; "), true))
    }
}

async fn reconcile_pod(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key_of(pod.as_ref());
    let Some((ready, reason, message, warn)) = pod_verdict(&pod, &ctx.default_networks) else {
        ctx.mark(&ctx.mismatched, &ctx.metrics.mismatched_pods, key, false);
        return Ok(Action::await_change());
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ControllerLabels { controller: "pod" })
        .inc();
    ctx.mark(
        &ctx.mismatched,
        &ctx.metrics.mismatched_pods,
        key.clone(),
        warn,
    );
    let status = if ready { "True" } else { "False" };
    let existing: Option<&PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == NETWORKS_READY_CONDITION));
    if existing.is_some_and(|c| {
        c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(&message)
    }) {
        return Ok(Action::await_change());
    }
    let transition = match existing {
        Some(c) if c.status == status => c.last_transition_time.as_ref().map(|t| t.0.to_string()),
        _ => None,
    }
    .unwrap_or_else(now);
    let patch = json!({"status": {"conditions": [{
        "type": NETWORKS_READY_CONDITION,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }]}});
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);
    api.patch_status(&key.1, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|source| ReconcileError::Patch {
            object: format!("pod {}/{}", key.0, key.1),
            source,
        })?;
    if warn {
        tracing::info!(pod = %format!("{}/{}", key.0, key.1), reason, %message, "pod networks do not match the request");
        ctx.event(&pod.object_ref(&()), "NetworksMismatch", message)
            .await;
    }
    Ok(Action::await_change())
}

fn error_policy(controller: &'static str, error: &ReconcileError, ctx: &Context) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ControllerLabels { controller })
        .inc();
    tracing::warn!(controller, error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn pod_error_policy(_: Arc<Pod>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    error_policy("pod", error, &ctx)
}

fn nad_error_policy(
    _: Arc<NetworkAttachmentDefinition>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    error_policy("nad", error, &ctx)
}
