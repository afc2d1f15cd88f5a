//! The daemon's [`NetworkSource`]: watch-backed caches of this node's pods (metadata only, field selector
//! `spec.nodeName`) and of every NAD, with one bounded GET when the cache can't answer; network-status written on a
//! kept-alive connection (the request thread's own, see [`crate::direct`]); events queued and sent after the reply.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use plexus_api::devices::SliceDevice;
use plexus_api::nad::NetworkAttachmentDefinition;
use plexus_cni::config::Config;
use plexus_cni::plan::PodView;
use plexus_cni::source::{
    KubeSource, NadView, NetworkSource, PodEvent, SourceError, SourceProvider, pod_view,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::direct::{Dialer, Failed};
use crate::metrics::Metrics;

/// How many event batches wait to be sent before new ones are dropped (and counted as failed).
const EVENT_QUEUE: usize = 4096;
/// How long a batch of events may wait for a moment without CNI requests in flight: events are informational, and
/// while requests run (a node starting many pods) their POSTs would compete with the network-status PATCHes.
const EVENT_DEFER: Duration = Duration::from_secs(2);
/// How often a deferred batch looks again whether requests are still in flight.
const EVENT_POLL: Duration = Duration::from_millis(10);

/// A pod of this node by namespace and name: what the pod watch tells hot-plug about.
pub type PodKey = (String, String);

/// One ADD's events for one pod, and when they were queued.
type EventBatch = (PodView, Vec<PodEvent>, tokio::time::Instant);

/// Whether a batch of events queued `waited` ago waits longer: while CNI requests are in flight, for up to
/// [`EVENT_DEFER`].
fn defer_events(in_flight: i64, waited: Duration) -> bool {
    in_flight > 0 && waited < EVENT_DEFER
}

/// The daemon's shared client, and the thread where the requests' own API calls run when they don't go over the
/// request thread's own connection ([`crate::direct`]): the GETs of a cache miss, and the network-status PATCH of a
/// thread without a fresh connection. The client speaks HTTP/2 (offered by ALPN, as thin mode's): the watches and every call
/// share one connection, which the watches keep open, so that an ADD after a quiet hour pays no TLS handshake. Its
/// connection's task, kube's buffer and the requests' calls all run on this thread's single-threaded runtime: a
/// request's thread hands it the call and gets the answer, two thread wake-ups, rather than hops between the
/// worker threads that decode the watches. Never a request thread's runtime, which runs only while a request does:
/// the watches' connection needs one that always runs (hyper spawns a connection's task where it is made).
pub struct ApiThread {
    runtime: tokio::runtime::Handle,
    client: kube::Client,
    /// The request threads' own connections, for the network-status PATCH ([`crate::direct`]).
    dialer: Dialer,
}

impl ApiThread {
    /// Starts the thread (it runs for the life of the process) and makes the client.
    pub fn start(config: kube::Config) -> Result<Self, String> {
        let (made, started) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("plexus-api".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = made.send(Err(format!("the API thread's runtime: {e}")));
                        return;
                    }
                };
                let clients = {
                    let _on = runtime.enter();
                    let connect_timeout = config.connect_timeout.unwrap_or(Duration::from_secs(30));
                    plexus_cni::source::http2_client(&config, connect_timeout, Default::default())
                        .and_then(|client| Ok((client, Dialer::new(&config, connect_timeout)?)))
                        .map_err(|e| e.to_string())
                };
                let _ = made.send(clients.map(|(client, dialer)| Self {
                    runtime: runtime.handle().clone(),
                    client,
                    dialer,
                }));
                runtime.block_on(std::future::pending::<()>());
            })
            .map_err(|e| format!("starting the API thread: {e}"))?;
        started
            .recv()
            .map_err(|_| "the API thread stopped while starting".to_owned())?
    }
}

/// The caches and the clients, shared by every request.
pub struct Caches {
    /// The client, whose connection lives on [`ApiThread`].
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    dialer: Dialer,
    pods: Store<PartialObjectMeta<Pod>>,
    nads: Store<NetworkAttachmentDefinition>,
    /// This node's ResourceSlices (DRA device networks).
    slices: Store<ResourceSlice>,
    events: mpsc::Sender<Option<EventBatch>>,
    metrics: Arc<Metrics>,
}

/// What the daemon hands `plexus_cni::run_with`: every request is in Kubernetes mode and reads the caches.
#[derive(Clone)]
pub struct CacheProvider(pub Arc<Caches>);

impl CacheProvider {
    /// After a request's reply, on its thread: makes the thread's own API connection if its ADD had none to use
    /// ([`crate::direct`]).
    pub fn after_reply(&self) {
        let caches = &self.0;
        // Outside any request's guard: a panic here must not end the request thread.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            plexus_cni::thread_runtime(|rt| rt.block_on(caches.dialer.connect_if_wanted()))
        }))
        .unwrap_or_else(|_| Ok(Err("the attempt panicked".into())))
        .unwrap_or_else(|e| Err(e.to_string().into()));
        match made {
            Ok(true) => caches.metrics.thread_connection("made"),
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "this thread's API connection can't be made; its ADDs write over the shared one");
                caches.metrics.thread_connection("failed");
            }
        }
    }
}

/// Sends queued events until it receives `None`.
pub struct EventSender {
    task: tokio::task::JoinHandle<()>,
    queue: mpsc::Sender<Option<EventBatch>>,
}

impl EventSender {
    /// Sends what is queued, then stops (at most `within`).
    pub async fn flush(self, within: Duration) {
        let _ = self.queue.send(None).await;
        if tokio::time::timeout(within, self.task).await.is_err() {
            warn!("events still queued at shutdown were not sent");
        }
    }
}

impl Caches {
    /// Starts the watches and the event sender on the current tokio runtime, with `api`'s client; the requests' own
    /// calls run on `api`'s thread. `metrics.ready` turns true once both caches have their first full list.
    pub fn start(
        api: ApiThread,
        node_name: &str,
        api_timeout: Duration,
        metrics: Arc<Metrics>,
        pod_changes: std::sync::mpsc::Sender<PodKey>,
    ) -> (Arc<Self>, EventSender) {
        let client = api.client.clone();
        let (pod_reader, pod_writer) = reflector::store();
        let pods: Api<PartialObjectMeta<Pod>> = Api::all(client.clone());
        let pod_watch = {
            let (store, metrics) = (pod_reader.clone(), metrics.clone());
            watcher(
                pods,
                watch_config().fields(&format!("spec.nodeName={node_name}")),
            )
            .default_backoff()
            .modify(keep_what_a_pod_lookup_needs)
            .reflect(pod_writer)
            .for_each(move |event| {
                watched("pod", &event, store.len(), &metrics);
                // After the store has it: hot-plug reads the pod from the cache.
                if let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = &event
                    && let (Some(namespace), Some(name)) =
                        (&pod.metadata.namespace, &pod.metadata.name)
                {
                    let _ = pod_changes.send((namespace.clone(), name.clone()));
                }
                async {}
            })
        };
        tokio::spawn(pod_watch);
        let (nad_reader, nad_writer) = reflector::store();
        let nads: Api<NetworkAttachmentDefinition> = Api::all(client.clone());
        let nad_watch = {
            let (store, metrics) = (nad_reader.clone(), metrics.clone());
            watcher(nads, watch_config())
                .default_backoff()
                .modify(keep_what_a_nad_lookup_needs)
                .reflect(nad_writer)
                .for_each(move |event| {
                    watched("nad", &event, store.len(), &metrics);
                    async {}
                })
        };
        tokio::spawn(nad_watch);
        let (slice_reader, slice_writer) = reflector::store();
        let slices: Api<ResourceSlice> = Api::all(client.clone());
        let slice_watch = {
            let (store, metrics) = (slice_reader.clone(), metrics.clone());
            watcher(
                slices,
                watch_config().fields(&format!("spec.nodeName={node_name}")),
            )
            .default_backoff()
            .modify(|s: &mut ResourceSlice| s.metadata.managed_fields = None)
            .reflect(slice_writer)
            .for_each(move |event| {
                watched("resourceslice", &event, store.len(), &metrics);
                async {}
            })
        };
        tokio::spawn(slice_watch);
        {
            let (pods, nads, metrics) = (pod_reader.clone(), nad_reader.clone(), metrics.clone());
            tokio::spawn(async move {
                if pods.wait_until_ready().await.is_ok() && nads.wait_until_ready().await.is_ok() {
                    info!(pods = pods.len(), nads = nads.len(), "caches synced: ready");
                    metrics.ready.store(true, Ordering::Relaxed);
                }
            });
        }
        let (queue, mut received) = mpsc::channel::<Option<EventBatch>>(EVENT_QUEUE);
        let sender = KubeSource::from_client(client.clone(), api_timeout);
        let task = {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                while let Some(Some((pod, events, queued))) = received.recv().await {
                    while defer_events(metrics.in_flight.get(), queued.elapsed()) {
                        tokio::time::sleep(EVENT_POLL).await;
                    }
                    match sender.record_events(&pod, &events).await {
                        Ok(()) => metrics.events("sent", events.len()),
                        Err(e) => {
                            warn!(pod = %pod.label(), error = %e, "could not record the pod's events");
                            metrics.events("failed", events.len());
                        }
                    }
                }
            })
        };
        let caches = Arc::new(Self {
            client: api.client,
            runtime: api.runtime,
            dialer: api.dialer,
            pods: pod_reader,
            nads: nad_reader,
            slices: slice_reader,
            events: queue.clone(),
            metrics,
        });
        (caches, EventSender { task, queue })
    }
}

impl Caches {
    /// The cached pod, if the watch has it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<plexus_cni::plan::PodView> {
        self.pods
            .get(&ObjectRef::new(name).within(namespace))
            .map(|p| pod_view(&p.metadata))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The UIDs of the cached pods.
    pub fn pod_uids(&self) -> std::collections::HashSet<String> {
        self.pods
            .state()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect()
    }

    /// Whether the pods cache has its first full list.
    pub fn synced(&self) -> bool {
        self.metrics.ready.load(Ordering::Relaxed)
    }

    /// Whether the pod runs in the node's network namespace (`spec.hostNetwork`), with one GET (the pod cache keeps
    /// metadata only), within `timeout`.
    pub fn host_network(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<bool, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let name = name.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let got = tokio::time::timeout(timeout, api.get(&name)).await;
            let _ = tx.send(got);
        });
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(Ok(Ok(pod))) => Ok(pod.spec.and_then(|s| s.host_network).unwrap_or(false)),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            _ => Err(format!("no answer within {} s", timeout.as_secs_f64())),
        }
    }

    /// Queues events for the pod (sent by the event sender, as a request's are).
    pub fn queue_events(&self, pod: &plexus_cni::plan::PodView, events: &[PodEvent]) {
        if events.is_empty() {
            return;
        }
        if self
            .events
            .try_send(Some((
                pod.clone(),
                events.to_vec(),
                tokio::time::Instant::now(),
            )))
            .is_err()
        {
            warn!(pod = %pod.label(), "the event queue is full: these events are dropped");
            self.metrics.events("failed", events.len());
        }
    }
}

/// What the pod cache keeps of a pod: name, namespace, UID, resource version and annotations (the networks, the
/// default network, a static pod's mirror annotation) but not its managed fields, labels, owners or kubectl's copy
/// of the last applied manifest.
fn keep_what_a_pod_lookup_needs(pod: &mut PartialObjectMeta<Pod>) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What the NAD cache keeps of a NAD: name, namespace, UID, resource version, the resourceName annotation and
/// `spec.config`; nothing a NAD author could grow the daemon's memory with besides the config itself (managed
/// fields, labels, other annotations, status).
fn keep_what_a_nad_lookup_needs(nad: &mut NetworkAttachmentDefinition) {
    let meta = &mut nad.metadata;
    let resource_name = meta
        .annotations
        .as_mut()
        .and_then(|a| a.remove(plexus_api::nad::RESOURCE_NAME_ANNOTATION));
    *meta = kube::api::ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        annotations: resource_name.map(|r| {
            [(plexus_api::nad::RESOURCE_NAME_ANNOTATION.to_owned(), r)]
                .into_iter()
                .collect()
        }),
        ..Default::default()
    };
    nad.status = None;
}

/// The watches' settings: lists served from the API server's watch cache (`resourceVersion=0`), as client-go's
/// informers list (Multus's among them), rather than a quorum read: an API server without consistent lists from its
/// cache (before 1.31, or with the feature off) reads every pod from etcd to filter this node's by `spec.nodeName`.
/// The watch goes on from the list's version, so nothing is missed; a pod the cache lags behind on is read with one
/// GET (`CacheSource::pod`).
fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// After each watch event: the cache's size, or the watch's error (it retries with a backoff).
fn watched<K>(
    kind: &'static str,
    event: &Result<watcher::Event<K>, watcher::Error>,
    len: usize,
    metrics: &Metrics,
) {
    match event {
        Ok(_) => {
            metrics
                .cached
                .get_or_create(&crate::metrics::KindLabels { kind })
                .set(len as i64);
        }
        Err(e) => warn!(kind, error = %e, "watch failed; retrying"),
    }
}

/// One request's view: the shared caches and a fallback source bounded by the request's `apiTimeoutSeconds`.
pub struct CacheSource {
    caches: Arc<Caches>,
    api: KubeSource,
}

impl SourceProvider for CacheProvider {
    type Source = CacheSource;

    fn kubernetes(&self, _: &Config) -> bool {
        true
    }

    async fn source(&self, config: &Config) -> Result<CacheSource, SourceError> {
        Ok(CacheSource {
            caches: self.0.clone(),
            api: KubeSource::from_client(self.0.client.clone(), config.api_timeout),
        })
    }
}

impl CacheSource {
    /// Runs an API call on the [`ApiThread`].
    async fn on_daemon_runtime<T: Send + 'static>(
        &self,
        what: String,
        call: impl Future<Output = Result<T, SourceError>> + Send + 'static,
    ) -> Result<T, SourceError> {
        self.caches.runtime.spawn(call).await.unwrap_or_else(|e| {
            Err(SourceError::ClientStopped {
                what,
                msg: e.to_string(),
            })
        })
    }
}

impl NetworkSource for CacheSource {
    async fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Option<PodView>, SourceError> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(cached) = self.caches.pods.get(&key) {
            let view = pod_view(&cached.metadata);
            // Another UID (a pod replaced under the same name, or a watch event not here yet): ask the API
            // server, unless the shared rule accepts it (a static pod's mirror).
            if plexus_api::policy::check_pod_uid(&view, uid).is_ok() {
                self.caches.metrics.cache("pod", true);
                return Ok(Some(view));
            }
        }
        self.caches.metrics.cache("pod", false);
        let (api, namespace, name, uid) = (
            self.api.clone(),
            namespace.to_owned(),
            name.to_owned(),
            uid.map(str::to_owned),
        );
        self.on_daemon_runtime(format!("GET pod {namespace}/{name}"), async move {
            api.pod(&namespace, &name, uid.as_deref()).await
        })
        .await
    }

    async fn nad(&self, namespace: &str, name: &str) -> Result<Option<NadView>, SourceError> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(nad) = self.caches.nads.get(&key) {
            self.caches.metrics.cache("nad", true);
            return Ok(Some(NadView::of(&nad)));
        }
        self.caches.metrics.cache("nad", false);
        let (api, namespace, name) = (self.api.clone(), namespace.to_owned(), name.to_owned());
        self.on_daemon_runtime(
            format!("GET network-attachment-definition {namespace}/{name}"),
            async move { api.nad(&namespace, &name).await },
        )
        .await
    }

    /// Absent when the caches have synced and the NAD cache does not hold it (no GET: `clusterNetwork` naming a conf
    /// would otherwise cost one on every ADD); before that, as [`Self::nad`].
    async fn nad_or_conf(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<NadView>, SourceError> {
        let key = ObjectRef::new(name).within(namespace);
        if self.caches.synced() && self.caches.nads.get(&key).is_none() {
            self.caches.metrics.cache_absent("nad");
            return Ok(None);
        }
        self.nad(namespace, name).await
    }

    /// From the cache of this node's ResourceSlices; a pool not seen there yet is read with one LIST.
    async fn pool_devices(
        &self,
        driver: &str,
        pool: &str,
    ) -> Result<Vec<SliceDevice>, SourceError> {
        let cached: Vec<Arc<ResourceSlice>> = self
            .caches
            .slices
            .state()
            .into_iter()
            .filter(|s| s.spec.driver == driver && s.spec.pool.name == pool)
            .collect();
        if !cached.is_empty() {
            self.caches.metrics.cache("resourceslice", true);
            return Ok(cached
                .iter()
                .flat_map(|s| plexus_api::devices::slice_devices(s))
                .collect());
        }
        self.caches.metrics.cache("resourceslice", false);
        let (api, driver, pool) = (self.api.clone(), driver.to_owned(), pool.to_owned());
        self.on_daemon_runtime(
            format!("LIST resourceslices of driver {driver}"),
            async move { api.pool_devices(&driver, &pool).await },
        )
        .await
    }

    async fn publish_claim_status(
        &self,
        namespace: &str,
        name: &str,
        apply: &serde_json::Value,
    ) -> Result<(), SourceError> {
        let (api, namespace, name, apply) = (
            self.api.clone(),
            namespace.to_owned(),
            name.to_owned(),
            apply.clone(),
        );
        self.on_daemon_runtime(
            format!("APPLY resourceclaim {namespace}/{name} status"),
            async move { api.publish_claim_status(&namespace, &name, &apply).await },
        )
        .await
    }

    /// On the request thread's own connection when it has a fresh one ([`crate::direct`]), else (or when that
    /// connection broke without an answer) on the shared client.
    async fn publish_status(&self, pod: &PodView, status: &str) -> Result<(), SourceError> {
        let metrics = &self.caches.metrics;
        let timeout = self.api.timeout();
        let deadline = Instant::now() + timeout;
        if let Some(client) = self.caches.dialer.client() {
            let result = KubeSource::from_client(client, timeout)
                .publish_status(pod, status)
                .await;
            match self.caches.dialer.outcome(result) {
                Ok(()) => {
                    metrics.status_write("thread");
                    return Ok(());
                }
                Err(Failed::Final(e)) => return Err(e),
                Err(Failed::Retry) => metrics.thread_connection("broken"),
            }
        }
        // What is left of apiTimeoutSeconds (all of it unless the thread's connection failed first).
        let left = deadline.saturating_duration_since(Instant::now());
        let (api, pod, status) = (
            KubeSource::from_client(self.caches.client.clone(), left),
            pod.clone(),
            status.to_owned(),
        );
        let written = self
            .on_daemon_runtime(
                format!("PATCH pod {} network-status", pod.label()),
                async move { api.publish_status(&pod, &status).await },
            )
            .await;
        self.caches.dialer.shared_written(written.is_ok());
        written?;
        metrics.status_write("shared");
        Ok(())
    }

    /// Queued: sent after the reply by the daemon's event sender, once no request is in flight (at most
    /// [`EVENT_DEFER`] later).
    async fn record_events(&self, pod: &PodView, events: &[PodEvent]) -> Result<(), SourceError> {
        self.caches.queue_events(pod, events);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nad_cache_keeps_only_what_a_lookup_needs() {
        let mut nad: NetworkAttachmentDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "n", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "labels": {"a": "b"},
                "annotations": {"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov", "big": "x".repeat(1000)},
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {}}}]},
            "spec": {"config": "{\"type\":\"ptp\"}"},
            "status": {"attachedPods": 3}
        }))
        .unwrap();
        keep_what_a_nad_lookup_needs(&mut nad);
        let kept = serde_json::to_value(&nad).unwrap();
        assert_eq!(
            kept,
            serde_json::json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "n", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                    "annotations": {"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov"}},
                "spec": {"config": "{\"type\":\"ptp\"}"}})
        );
    }

    #[test]
    fn events_wait_for_an_idle_moment_but_not_for_long() {
        assert!(!defer_events(0, Duration::ZERO));
        assert!(defer_events(3, Duration::from_millis(100)));
        assert!(!defer_events(3, EVENT_DEFER));
    }
}
