//! Hot-plug: the daemon makes a running pod's edited networks annotation true in its sandbox. The pod watch tells this
//! worker which pods changed; the worker finds each pod's sandbox in the node's records (by pod UID), and when the
//! annotation asks for something the record does not hold, runs `plexus_cni::hotplug::sync` (under the sandbox's
//! lock: a CNI request for the same sandbox waits, and so does the change). One change runs at a time, on this
//! worker's own thread, so hot-plug holds at most one delegate besides the CNI requests' `maxConcurrentDelegates`.
//! A failed change is retried with back-off; every record is looked at again on start (a change a killed daemon left
//! is finished) and once a minute.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use plexus_api::selection::NETWORKS_ANNOTATION;
use plexus_cni::config::Config;
use plexus_cni::hotplug::{self, NotReady};
use plexus_cni::plan::PodView;
use plexus_cni::record::{Record, RecordStore};
use plexus_cni::source::PodEvent;
use tracing::{debug, info, warn};

use crate::cache::{CacheProvider, Caches, PodKey};

/// How often every record is looked at again, whatever the watch said.
const RESYNC: Duration = Duration::from_secs(60);
/// The first retry of a failed change; each next one waits twice as long, up to [`MAX_BACKOFF`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a sandbox whose ADD has not completed is waited for before it is looked at again.
const NOT_READY_RETRY: Duration = Duration::from_millis(250);
/// The record directory is read again to find a pod's sandbox at most this often.
const RESCAN: Duration = Duration::from_millis(200);

/// Where a pod's sandbox record is.
#[derive(Clone)]
struct Sandbox {
    store: RecordStore,
    container_id: String,
    ifname: String,
}

/// A pod whose change failed or could not run yet.
struct Retry {
    due: Instant,
    failures: u32,
}

/// The worker's state.
pub struct Worker {
    caches: Arc<Caches>,
    provider: CacheProvider,
    config: Config,
    records_dir: PathBuf,
    api_timeout: Duration,
    /// The annotation each pod had when it was last settled (by UID).
    settled: HashMap<String, Option<String>>,
    /// Sandboxes by pod UID, from the records.
    sandboxes: HashMap<String, Sandbox>,
    scanned: Option<Instant>,
    retries: BTreeMap<PodKey, Retry>,
    /// The annotation of each hostNetwork pod already told it can't be hot-plugged.
    refused: HashMap<String, Option<String>>,
}

impl Worker {
    pub fn new(caches: Arc<Caches>, config: Config) -> Self {
        Self {
            provider: CacheProvider(caches.clone()),
            caches,
            records_dir: config.cni_dir.clone(),
            api_timeout: config.api_timeout,
            config,
            settled: HashMap::new(),
            sandboxes: HashMap::new(),
            scanned: None,
            retries: BTreeMap::new(),
            refused: HashMap::new(),
        }
    }

    /// Runs until the pod watch's sender is gone.
    pub fn run(mut self, changes: Receiver<PodKey>) {
        // Nothing until the caches have synced: a pod missing from a cache that is still listing is not gone.
        while !self.caches.synced() {
            match changes.recv_timeout(Duration::from_millis(50)) {
                Err(RecvTimeoutError::Disconnected) => return,
                _ => continue,
            }
        }
        self.resync();
        let mut last_resync = Instant::now();
        loop {
            let wait = self
                .retries
                .values()
                .map(|r| r.due.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(RESYNC)
                .min(RESYNC.saturating_sub(last_resync.elapsed()));
            match changes.recv_timeout(wait) {
                Ok(key) => self.pod_changed(&key, false),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let due: Vec<PodKey> = self
                .retries
                .iter()
                .filter(|(_, r)| r.due <= Instant::now())
                .map(|(k, _)| k.clone())
                .collect();
            for key in due {
                self.pod_changed(&key, true);
            }
            if last_resync.elapsed() >= RESYNC {
                self.resync();
                last_resync = Instant::now();
            }
        }
    }

    /// Every record with a pod: looked at as if its pod had changed (on start, this finishes what a killed daemon
    /// left; later, it catches what a lost watch event hid).
    fn resync(&mut self) {
        self.rescan();
        let live = self.caches.pod_uids();
        self.settled.retain(|uid, _| live.contains(uid));
        self.refused.retain(|uid, _| live.contains(uid));
        let keys: Vec<PodKey> = plexus_cni::record::RecordStore::list_all(&self.records_dir)
            .into_iter()
            .filter_map(|(_, r)| r.pod.map(|p| (p.namespace, p.name)))
            .collect();
        for key in keys {
            self.pod_changed(&key, true);
        }
    }

    fn rescan(&mut self) {
        self.sandboxes = RecordStore::list_all(&self.records_dir)
            .into_iter()
            .filter_map(|(store, r)| {
                let uid = r.pod.as_ref()?.uid.clone();
                Some((
                    uid,
                    Sandbox {
                        store,
                        container_id: r.container_id,
                        ifname: r.ifname,
                    },
                ))
            })
            .collect();
        self.scanned = Some(Instant::now());
    }

    fn sandbox_of(&mut self, uid: &str) -> Option<(Sandbox, Record)> {
        let load = |s: &Sandbox| match s.store.load(&s.container_id, &s.ifname) {
            plexus_cni::record::Loaded::Found(r)
                if r.pod.as_ref().is_some_and(|p| p.uid == uid) =>
            {
                Some(r)
            }
            _ => None,
        };
        if let Some(s) = self.sandboxes.get(uid)
            && let Some(r) = load(s)
        {
            return Some((s.clone(), r));
        }
        if self.scanned.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.rescan();
        }
        let s = self.sandboxes.get(uid)?.clone();
        load(&s).map(|r| (s, r))
    }

    /// Looks at one pod: nothing when its annotation is the one last settled (unless `force`); else the change its
    /// sandbox needs, if any.
    fn pod_changed(&mut self, key: &PodKey, force: bool) {
        let Some(pod) = self.caches.pod(&key.0, &key.1) else {
            self.retries.remove(key);
            return;
        };
        let annotation = pod.annotations.get(NETWORKS_ANNOTATION).cloned();
        let seen = self.settled.get(&pod.uid).cloned();
        if !force && seen.as_ref() == Some(&annotation) && !self.retries.contains_key(key) {
            return;
        }
        let Some((sandbox, record)) = self.sandbox_of(&pod.uid) else {
            // No sandbox (yet): its ADD will read the annotation. A pod that runs without one and whose annotation
            // changed after we first saw it is a hostNetwork pod (or one whose sandbox is gone).
            if let Some(before) = seen
                && before != annotation
            {
                self.maybe_refuse(&pod, &annotation);
            }
            self.settled.insert(pod.uid.clone(), annotation);
            self.retries.remove(key);
            return;
        };
        if !hotplug::wants_change(&self.config, &record, &pod) {
            self.settled.insert(pod.uid.clone(), annotation);
            self.retries.remove(key);
            return;
        }
        let metrics = self.caches.metrics().clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hotplug::sync(
                &self.provider,
                &self.config,
                &sandbox.store,
                &sandbox.container_id,
                &sandbox.ifname,
                &pod,
            )
        }))
        .unwrap_or_else(|_| {
            Err(plexus_cni::error::PlexusError::InvalidConfig(
                "hot-plug hit a bug (a panic, logged) and will try again".into(),
            ))
        });
        match outcome {
            Ok(Ok(synced)) if synced.settled() => {
                if !synced.added.is_empty() || !synced.removed.is_empty() {
                    metrics.hotplug("changed");
                }
                self.settled.insert(pod.uid.clone(), annotation);
                self.retries.remove(key);
            }
            Ok(Ok(synced)) => {
                metrics.hotplug("failed");
                warn!(pod = %pod.label(), failed = ?synced.failed, "hot-plug: not everything could be done; retrying");
                self.retry(key);
            }
            Ok(Err(NotReady(why))) => {
                metrics.hotplug("not_ready");
                debug!(pod = %pod.label(), why, "hot-plug: the sandbox is not ready");
                self.retries.insert(
                    key.clone(),
                    Retry {
                        due: Instant::now() + NOT_READY_RETRY,
                        failures: 0,
                    },
                );
            }
            Err(e) => {
                metrics.hotplug("failed");
                warn!(pod = %pod.label(), error = %e, "hot-plug failed; retrying");
                self.retry(key);
            }
        }
    }

    fn retry(&mut self, key: &PodKey) {
        let failures = self.retries.get(key).map_or(0, |r| r.failures) + 1;
        let backoff = FIRST_RETRY
            .saturating_mul(1 << (failures - 1).min(16))
            .min(MAX_BACKOFF);
        self.retries.insert(
            key.clone(),
            Retry {
                due: Instant::now() + backoff,
                failures,
            },
        );
    }

    /// A pod in the node's network namespace can't be hot-plugged: a Warning event, once per annotation.
    fn maybe_refuse(&mut self, pod: &PodView, annotation: &Option<String>) {
        if self.refused.get(&pod.uid) == Some(annotation) {
            return;
        }
        match self
            .caches
            .host_network(&pod.namespace, &pod.name, self.api_timeout)
        {
            Ok(true) => {
                info!(pod = %pod.label(), "hot-plug refused: a hostNetwork pod");
                self.caches.metrics().hotplug("refused");
                self.caches.queue_events(
                    pod,
                    &[PodEvent {
                        reason: "HotplugFailed".into(),
                        message: "the pod uses the node's network namespace (hostNetwork): networks can't be \
                                  added to or removed from it"
                            .into(),
                        warning: true,
                    }],
                );
                self.refused.insert(pod.uid.clone(), annotation.clone());
            }
            Ok(false) => {}
            Err(e) => {
                debug!(pod = %pod.label(), error = %e, "hot-plug: can't tell whether the pod is hostNetwork")
            }
        }
    }
}
