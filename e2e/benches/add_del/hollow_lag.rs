//! plexus-controller's reconcile lag in a churn window: from the moment the bench sends a write (a pod's create, a
//! NAD's changed config) to the first moment a watch on the namespace shows the status the controller writes for it
//! (the pod's `k8s.cni.cncf.io/NetworksReady` condition; the NAD's `status.observedGeneration` caught up with the
//! change's generation). It includes the write's own round trip and the watch's delivery, as a user would see it.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};

use super::*;

/// The annotation on a changed NAD that names the change.
pub(crate) const CHANGE_ANNOTATION: &str = "bench.plexus.io/changed";
/// The label of a churn window's pods (its tag), so the watch lists only them.
pub(crate) const CHURN_LABEL: &str = "bench.plexus.io/churn";

/// Sent and seen times, keyed by pod name or by NAD change (the annotation's value).
#[derive(Default)]
pub(crate) struct Lags {
    pod_sent: HashMap<String, Instant>,
    nad_sent: HashMap<String, Instant>,
    pod_seen: Arc<Mutex<HashMap<String, Instant>>>,
    nad_seen: Arc<Mutex<HashMap<String, Instant>>>,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Lags {
    /// Starts the two watches (on the current runtime) in `namespace` for the churn window tagged `tag`.
    pub(crate) fn watch(client: &kube::Client, namespace: &str, tag: &str) -> Self {
        let mut lags = Lags::default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let seen = lags.pod_seen.clone();
        let config = watcher::Config::default()
            .labels(&format!("{CHURN_LABEL}={tag}"))
            .any_semantic();
        lags.watches.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(pods, config).applied_objects());
            while let Some(Ok(pod)) = stream.next().await {
                let reconciled = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "k8s.cni.cncf.io/NetworksReady"));
                if let (true, Some(name)) = (reconciled, pod.metadata.name) {
                    seen.lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        }));
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
            "network-attachment-definitions",
        );
        let nads: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let seen = lags.nad_seen.clone();
        let config = watcher::Config::default()
            .labels("bench.plexus.io/patch=true")
            .any_semantic();
        lags.watches.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(nads, config).applied_objects());
            while let Some(Ok(nad)) = stream.next().await {
                let generation = nad.metadata.generation;
                let observed = nad.data["status"]["observedGeneration"].as_i64();
                let change = nad
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CHANGE_ANNOTATION));
                if let (Some(change), true) =
                    (change, generation.is_some() && observed == generation)
                {
                    seen.lock()
                        .unwrap()
                        .entry(change.clone())
                        .or_insert_with(Instant::now);
                }
            }
        }));
        lags
    }

    pub(crate) fn pod_sent(&mut self, name: &str) {
        self.pod_sent.insert(name.to_owned(), Instant::now());
    }

    pub(crate) fn nad_sent(&mut self, change: &str) {
        self.nad_sent.insert(change.to_owned(), Instant::now());
    }

    /// Waits (up to `limit`) until every write was seen reconciled, stops the watches, and summarises: per kind
    /// p50, p99 and max in ms, and how many were never seen.
    pub(crate) async fn finish(self, limit: Duration) -> Value {
        let started = Instant::now();
        let all_seen = |sent: &HashMap<String, Instant>, seen: &Mutex<HashMap<String, Instant>>| {
            let seen = seen.lock().unwrap();
            sent.keys().all(|k| seen.contains_key(k))
        };
        while started.elapsed() < limit
            && !(all_seen(&self.pod_sent, &self.pod_seen)
                && all_seen(&self.nad_sent, &self.nad_seen))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for watch in &self.watches {
            watch.abort();
        }
        let summary = |sent: &HashMap<String, Instant>, seen: &Mutex<HashMap<String, Instant>>| {
            let seen = seen.lock().unwrap();
            let lags: Vec<f64> = sent
                .iter()
                .filter_map(|(k, at)| {
                    seen.get(k)
                        .map(|s| s.saturating_duration_since(*at).as_secs_f64() * 1000.0)
                })
                .collect();
            json!({"writes": sent.len(), "never_seen": sent.len() - lags.len(),
                   "p50_ms": (!lags.is_empty()).then(|| quantile(&lags, 0.5)),
                   "p99_ms": (!lags.is_empty()).then(|| quantile(&lags, 0.99)),
                   "max_ms": (!lags.is_empty()).then(|| quantile(&lags, 1.0))})
        };
        json!({"pod": summary(&self.pod_sent, &self.pod_seen),
               "nad": summary(&self.nad_sent, &self.nad_seen)})
    }
}
