//! The hollow run's API side: its objects (NADs, pods, churn) written with a kube client, the API server's own
//! metrics, and the daemons' requests read from the audit log.

use super::*;
use crate::hollow_lag::*;

pub(crate) const NS: &str = "hollow";

pub(crate) fn node_name(i: usize) -> String {
    format!("hollow-{i}")
}

/// The API server's counters that the rows are made of.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApiServer {
    pub(crate) cpu_s: f64,
    pub(crate) rss_mib: f64,
    pub(crate) watches: f64,
    /// Time the API server spent calling plexus-controller's admission webhooks, and the calls.
    pub(crate) webhook_s: f64,
    pub(crate) webhook_calls: f64,
}

pub(crate) fn api_server(cluster: &PrivateCluster) -> ApiServer {
    let text = cluster.kubectl(&["get", "--raw", "/metrics"], "");
    let sum = |name: &str, labels: &[&str]| plexus_e2e::thick::metric_sum(&text, name, labels);
    ApiServer {
        cpu_s: sum("process_cpu_seconds_total", &[]),
        rss_mib: sum("process_resident_memory_bytes", &[]) / (1024.0 * 1024.0),
        watches: sum("apiserver_longrunning_requests", &["verb=\"WATCH\""]),
        webhook_s: sum(
            "apiserver_admission_webhook_admission_duration_seconds_sum",
            &["plexus"],
        ),
        webhook_calls: sum(
            "apiserver_admission_webhook_admission_duration_seconds_count",
            &["plexus"],
        ),
    }
}

/// plexus-controller's RSS (MiB) and CPU-seconds so far (`e2e/cluster up` always starts it).
pub(crate) fn controller(cluster: &PrivateCluster) -> (f64, f64) {
    let pid = control_plane_pids(cluster)[2]
        .clone()
        .expect("plexus-controller runs in the control plane");
    (
        proc_rss_mib(&pid, "VmRSS"),
        process_cpu_s(&pid).map_or(0.0, |(own, _)| own),
    )
}

/// plexus-controller during a window: its RSS at the end, its CPU, and its admission webhooks as the API server
/// saw them (calls, mean time per call).
pub(crate) fn controller_window(
    before: (ApiServer, (f64, f64)),
    after: (ApiServer, (f64, f64)),
) -> Value {
    let calls = after.0.webhook_calls - before.0.webhook_calls;
    json!({"rss_mib": after.1.0, "cpu_s": after.1.1 - before.1.1, "webhook_calls": calls,
           "webhook_mean_ms": (calls > 0.0).then(|| (after.0.webhook_s - before.0.webhook_s) / calls * 1000.0)})
}

/// The audit log read on from where the last read stopped.
pub(crate) struct Audit {
    file: PathBuf,
    offset: u64,
}

impl Audit {
    pub(crate) fn new(cluster: &PrivateCluster) -> Self {
        let file = cluster.audit_log();
        let offset = std::fs::metadata(&file).map_or(0, |m| m.len());
        Self { file, offset }
    }

    /// The daemons' (of `kind`) requests since the last call (a watch when it starts, the others when they
    /// complete): count per verb, and per resource for get, list and watch (e.g. "list pods").
    pub(crate) fn requests(&mut self, kind: &str) -> BTreeMap<String, usize> {
        use std::io::{BufRead, Seek};
        let mut counts = BTreeMap::new();
        let Ok(mut file) = std::fs::File::open(&self.file) else {
            return counts;
        };
        file.seek(std::io::SeekFrom::Start(self.offset)).unwrap();
        let mut reader = std::io::BufReader::new(file);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).unwrap();
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.offset += n as u64;
            let Ok(e) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let verb = e["verb"].as_str().unwrap_or_default().to_owned();
            // A watch is counted when it starts (it completes only when it ends), the rest when they complete.
            let counted = if verb == "watch" {
                "ResponseStarted"
            } else {
                "ResponseComplete"
            };
            if e["stage"] != counted || !by_daemon(&e, kind) {
                continue;
            }
            let resource = e["objectRef"]["resource"].as_str().unwrap_or_default();
            *counts.entry(verb.clone()).or_default() += 1;
            if matches!(verb.as_str(), "list" | "watch" | "get") {
                *counts.entry(format!("{verb} {resource}")).or_default() += 1;
            }
        }
        counts
    }
}

/// Whether an audit entry is a request of a `kind` daemon: plexus-daemon names itself in its user agent;
/// multus-daemon runs as its own service account.
pub(crate) fn by_daemon(e: &Value, kind: &str) -> bool {
    match kind {
        "plexus" => e["userAgent"]
            .as_str()
            .is_some_and(|a| a.starts_with("plexus/") && a.contains("(daemon)")),
        _ => e["user"]["username"] == "system:serviceaccount:bench-system:multus",
    }
}

/// Creates objects with up to 16 requests in flight.
pub(crate) fn apply_all(kubeconfig: &Path, objects: Vec<Value>) {
    let kubeconfig = kubeconfig.to_owned();
    runtime().block_on(async move {
        use futures::StreamExt;
        let client = client(&kubeconfig).await;
        futures::stream::iter(objects)
            .for_each_concurrent(16, |object| {
                let client = client.clone();
                async move { write_object(&client, &object, false).await }
            })
            .await;
    });
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Creates, merge-patches (an object labelled `bench.plexus.io/patch`: a NAD's new config) or deletes one pod or
/// NAD; a failure is the bench's bug and panics.
pub(crate) async fn write_object(client: &kube::Client, object: &Value, delete: bool) {
    use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};
    let resource = if object["kind"] == "Pod" {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Pod"), "pods")
    } else {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
            "network-attachment-definitions",
        )
    };
    let namespace = object["metadata"]["namespace"].as_str().unwrap();
    let name = object["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let outcome = if delete {
        api.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .map(|_| ())
    } else if object["metadata"]["labels"]["bench.plexus.io/patch"] == "true" {
        api.patch(name, &PatchParams::default(), &Patch::Merge(object))
            .await
            .map(|_| ())
    } else {
        let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        api.create(&PostParams::default(), &object)
            .await
            .map(|_| ())
    };
    if let Err(e) = outcome {
        panic!("writing {namespace}/{name}: {e}");
    }
}

pub(crate) fn pod(name: &str, node: &str, networks: Option<&str>) -> Value {
    let mut pod = bench_pod(NS, name, node);
    match networks {
        Some(n) => pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = json!(n),
        None => {
            pod["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
        }
    }
    pod
}

pub(crate) fn uid(cluster: &PrivateCluster, name: &str) -> String {
    cluster.kubectl(
        &[
            "get",
            "pod",
            "-n",
            NS,
            name,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        "",
    )
}

/// What a churn window did, and plexus-controller's reconcile lag in it ([`Lags`]).
pub(crate) struct Churn {
    pub(crate) pod_changes: usize,
    pub(crate) nad_changes: usize,
    pub(crate) reconcile_lag: Value,
}

/// Pods created on nodes 0..n at 10% of their `n * pods` per minute, each deleted a minute later, and a NAD changed
/// every 2 s (each change a new config, so a new generation), for `seconds`. Pods still alive then are deleted after
/// the window, once the controller's status for every write was seen (or 30 s passed).
pub(crate) fn churn(
    kubeconfig: &Path,
    n: usize,
    pods: usize,
    nads: usize,
    seconds: f64,
    tag: &str,
) -> Churn {
    // NAD changes are numbered across the run's windows: each changes a NAD not changed before (while fewer than
    // `nads`), to a config version it never had.
    static NAD_CHANGES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let per_second = (n * pods) as f64 * 0.10 / 60.0;
    let lifetime = 60.0;
    let kubeconfig = kubeconfig.to_owned();
    let tag = tag.to_owned();
    runtime().block_on(async move {
        let client = client(&kubeconfig).await;
        let mut lags = Lags::watch(&client, NS, &tag);
        let started = Instant::now();
        let (mut created, mut deleted, mut nad_changes) = (0usize, 0usize, 0usize);
        let mut live: std::collections::VecDeque<(Instant, Value)> = Default::default();
        let mut next_nad = Duration::ZERO;
        let mut tasks = tokio::task::JoinSet::new();
        while started.elapsed().as_secs_f64() < seconds {
            let now = started.elapsed();
            let due = (now.as_secs_f64() * per_second) as usize;
            while created < due {
                let name = format!("churn-{tag}-{created}");
                let networks = format!("net-{}", created % nads);
                let mut object = pod(&name, &node_name(created % n), Some(&networks));
                object["metadata"]["labels"] = json!({CHURN_LABEL: &tag});
                live.push_back((Instant::now(), object.clone()));
                lags.pod_sent(&name);
                let client = client.clone();
                tasks.spawn(async move { write_object(&client, &object, false).await });
                created += 1;
            }
            while live
                .front()
                .is_some_and(|(at, _)| at.elapsed().as_secs_f64() >= lifetime)
            {
                let (_, object) = live.pop_front().unwrap();
                let client = client.clone();
                tasks.spawn(async move { write_object(&client, &object, true).await });
                deleted += 1;
            }
            if now >= next_nad {
                let change = NAD_CHANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let i = change % nads;
                let name = format!("{tag}-{nad_changes}");
                let patch = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                    "metadata": {"name": format!("net-{i}"), "namespace": NS,
                                 "labels": {"bench.plexus.io/patch": "true"},
                                 "annotations": {CHANGE_ANNOTATION: &name}},
                    "spec": {"config": nad_config(i, 1 + change % 199).to_string()}});
                lags.nad_sent(&name);
                let client = client.clone();
                tasks.spawn(async move { write_object(&client, &patch, false).await });
                nad_changes += 1;
                next_nad += Duration::from_secs(2);
            }
            while let Some(done) = tasks.try_join_next() {
                done.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let reconcile_lag = lags.finish(Duration::from_secs(30)).await;
        // What is still alive goes now (outside the window).
        for (_, object) in live {
            write_object(&client, &object, true).await;
        }
        Churn {
            pod_changes: created + deleted,
            nad_changes,
            reconcile_lag,
        }
    })
}

/// NAD `net-{i}`'s config at `version` (0 when created; 1..=199 as changed: each a different `mtu`).
pub(crate) fn nad_config(i: usize, version: usize) -> Value {
    json!({"cniVersion": "1.0.0", "name": format!("net-{i}"), "type": "macvlan", "master": "eth1",
           "mtu": 1300 + version % 200,
           "ipam": {"type": "host-local", "subnet": "198.19.0.0/24"}})
}
