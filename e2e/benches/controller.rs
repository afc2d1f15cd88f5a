//! plexus-controller benchmark, against a control plane of its own (`e2e/cluster up`, which starts the release
//! controller and registers its webhook):
//!
//! 1. webhook latency, p50/p99 over 2,000 reviews per kind at concurrency 16, sent straight to the webhook over
//!    HTTPS (a valid NAD; a pod selecting two NADs), on connections that are already open (as the API server keeps
//!    its webhook connections): each measurement starts with 64 warm-up reviews, left out of the figures, which
//!    open the client's connections. Two clients, as the API server has two: HTTP/1.1 with one kept-alive TLS
//!    connection per review in flight (kube's client; what the API server uses for a webhook behind a Service,
//!    kubernetes/kubernetes#82090), and HTTP/2 negotiated by ALPN, one multiplexed connection (what it uses for a
//!    webhook URL on a loopback address, kubernetes/kubernetes#122558, as in `e2e/cluster`). The time of a review
//!    that opens a new connection (TLS handshake included) is reported apart;
//! 2. the same end to end through the API server: server-side dry-run creates at concurrency 16;
//! 3. the controller's resident memory after 1,000 NADs and 10,000 pods (each selecting one of them) were created
//!    and every pod was reconciled (its NetworksReady condition written).
//!
//! Run with `scripts/bench controller` (or `cargo bench -p plexus-e2e --bench controller`).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DynamicObject, PostParams};
use kube::config::{Cluster, Context, KubeConfigOptions, Kubeconfig, NamedCluster, NamedContext};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use plexus_e2e::PrivateCluster;
use serde_json::{Value, json};

const CONCURRENCY: usize = 16;
const REVIEWS: usize = 2000;
const NADS: usize = 1000;
const PODS: usize = 10_000;
const NS: &str = "bench";

fn nad_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    )
}

fn nad(name: &str) -> Value {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"config": format!(r#"{{"cniVersion":"1.0.0","type":"macvlan","master":"eth1","ipam":{{"type":"host-local","subnet":"198.18.{}.0/24"}}}}"#, 0)}
    })
}

fn pod(name: &str, networks: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    })
}

fn review(kind: &str, group: &str, resource: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000001",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "namespace": NS, "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": object, "dryRun": false
        }
    }))
    .unwrap()
}

/// Runs `count` calls of `call` with `CONCURRENCY` in flight; returns each call's duration, sorted.
async fn measure<F, Fut>(count: usize, call: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let call = &call;
    let mut times: Vec<Duration> = futures::stream::iter(0..count)
        .map(|i| async move {
            let start = Instant::now();
            call(i).await;
            start.elapsed()
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    times.sort();
    times
}

fn pct(times: &[Duration], p: f64) -> f64 {
    let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
    times[i].as_secs_f64() * 1000.0
}

fn report(what: &str, times: &[Duration]) -> Value {
    let (p50, p99) = (pct(times, 0.50), pct(times, 0.99));
    println!(
        "{what:<52} n={:<6} p50 {p50:>7.3} ms   p99 {p99:>7.3} ms",
        times.len()
    );
    json!({"what": what, "n": times.len(), "p50_ms": p50, "p99_ms": p99})
}

fn env_value(file: &std::path::Path, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("{key} in {}", file.display()))
}

/// A client for the webhook itself: HTTPS to 127.0.0.1 with the cluster CA, no credentials; kube's own stack
/// (HTTP/1.1) or the plugin's HTTP/2 one.
async fn webhook_client(state: &std::path::Path, port: &str, http2: bool) -> Client {
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "webhook".into(),
            cluster: Some(Cluster {
                server: Some(format!("https://127.0.0.1:{port}")),
                certificate_authority: Some(state.join("pki/ca.crt").display().to_string()),
                ..Cluster::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "webhook".into(),
            context: Some(Context {
                cluster: "webhook".into(),
                ..Context::default()
            }),
            other: Default::default(),
        }],
        current_context: Some("webhook".into()),
        ..Kubeconfig::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    if http2 {
        plexus_cni::source::http2_client(&config, Duration::from_secs(10), Default::default())
            .unwrap()
    } else {
        Client::try_from(config).unwrap()
    }
}

/// One review sent straight to the webhook; panics unless it is allowed.
async fn send_review(client: &Client, body: Vec<u8>) {
    let request = http::Request::post("/validate")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let text = client.request_text(request).await.unwrap();
    assert!(text.contains(r#""allowed":true"#), "{text}");
}

fn rss_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() {
    let cluster = PrivateCluster::up();
    let state = cluster.state.path().to_path_buf();
    let env = state.join("controller.env");
    let webhook_port = env_value(&env, "CONTROLLER_WEBHOOK_PORT");
    let probe_port = env_value(&env, "CONTROLLER_PROBE_PORT");
    let pid = std::fs::read_to_string(state.join("plexus-controller.pid"))
        .unwrap()
        .trim()
        .to_owned();
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&cluster.kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let mut results = Vec::new();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    let nads: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &nad_resource());
    let created = measure(NADS, |i| {
        let nads = nads.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(nad(&format!("net-{i}"))).unwrap();
            nads.create(&PostParams::default(), &object).await.unwrap();
        }
    })
    .await;
    results.push(report("create NAD via apiserver (webhook on)", &created));

    // 1. At the webhook.
    let nad_review = review(
        "NetworkAttachmentDefinition",
        "k8s.cni.cncf.io",
        "network-attachment-definitions",
        nad("bench-nad"),
    );
    let pod_review = review("Pod", "", "pods", pod("bench-pod", "net-1, net-2@data0"));
    for http2 in [false, true] {
        let protocol = if http2 { "HTTP/2" } else { "HTTP/1.1" };
        // A review on a connection of its own: TLS handshake + one request (a fresh client each time).
        let mut fresh = Vec::new();
        for _ in 0..50 {
            let client = webhook_client(&state, &webhook_port, http2).await;
            let start = Instant::now();
            send_review(&client, nad_review.clone()).await;
            fresh.push(start.elapsed());
        }
        fresh.sort();
        results.push(report(
            &format!("webhook direct {protocol}: new connection + NAD review"),
            &fresh,
        ));
        for (kind, body) in [("NAD", &nad_review), ("pod", &pod_review)] {
            let direct = Arc::new(webhook_client(&state, &webhook_port, http2).await);
            let send = |_| {
                let client = direct.clone();
                let body = body.clone();
                async move { send_review(&client, body).await }
            };
            // Opens the client's connections (one per review in flight over HTTP/1.1).
            measure(4 * CONCURRENCY, send).await;
            let times = measure(REVIEWS, send).await;
            results.push(report(
                &format!("webhook direct {protocol}: {kind} review"),
                &times,
            ));
        }
    }

    // 2. End to end through the API server (server-side dry run: admission runs, nothing is stored).
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let times = measure(REVIEWS, |i| {
        let nads = nads.clone();
        let dry = dry.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(nad(&format!("dry-{i}"))).unwrap();
            nads.create(&dry, &object).await.unwrap();
        }
    })
    .await;
    results.push(report("apiserver dry-run create: NAD", &times));
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let times = measure(REVIEWS, |i| {
        let pods = pods.clone();
        let dry = dry.clone();
        async move {
            let object: Pod =
                serde_json::from_value(pod(&format!("dry-{i}"), "net-1, net-2@data0")).unwrap();
            pods.create(&dry, &object).await.unwrap();
        }
    })
    .await;
    results.push(report("apiserver dry-run create: pod", &times));
    let times = measure(REVIEWS, |i| {
        let pods = pods.clone();
        let dry = dry.clone();
        async move {
            let mut object: Pod = serde_json::from_value(pod(&format!("plain-{i}"), "")).unwrap();
            object.metadata.annotations = None;
            pods.create(&dry, &object).await.unwrap();
        }
    })
    .await;
    results.push(report(
        "apiserver dry-run create: pod, no annotation",
        &times,
    ));

    // 3. Memory after syncing 1,000 NADs and 10,000 pods (BENCH_CONTROLLER_SCALE=0 skips it).
    if std::env::var("BENCH_CONTROLLER_SCALE").is_ok_and(|v| v == "0") {
        write_results(&results);
        return;
    }
    let rss_before = rss_kib(&pid, "VmRSS");
    let started = Instant::now();
    let times = measure(PODS, |i| {
        let pods = pods.clone();
        async move {
            let object: Pod =
                serde_json::from_value(pod(&format!("pod-{i}"), &format!("net-{}", i % NADS)))
                    .unwrap();
            pods.create(&PostParams::default(), &object).await.unwrap();
        }
    })
    .await;
    results.push(report("create pod via apiserver (webhook on)", &times));
    let metrics_url = format!("http://127.0.0.1:{probe_port}/metrics");
    let reconciled = loop {
        let out = std::process::Command::new("curl")
            .args(["-fsS", &metrics_url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let n = metric(
            &text,
            "plexus_controller_reconciles_total{controller=\"pod\"}",
        );
        if n >= PODS as f64 || started.elapsed() > Duration::from_secs(600) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let synced_after = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm) = (rss_kib(&pid, "VmRSS"), rss_kib(&pid, "VmHWM"));
    println!(
        "controller RSS: {:.1} MiB before the pods, {:.1} MiB after syncing {NADS} NADs + {PODS} pods (peak {:.1} MiB); \
         {reconciled} pod reconciles, {:.0} s from the first create",
        rss_before as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        synced_after.as_secs_f64()
    );
    results.push(json!({"rss_mib": rss as f64 / 1024.0, "peak_rss_mib": hwm as f64 / 1024.0,
                        "rss_before_pods_mib": rss_before as f64 / 1024.0, "pod_reconciles": reconciled}));
    write_results(&results);
    drop(cluster);
}

fn write_results(results: &[Value]) {
    let out = plexus_e2e::repo().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("controller.json"),
        serde_json::to_string_pretty(results).unwrap(),
    )
    .unwrap();
}
