//! Hot-plug latency on a real node (kubelet + containerd + runc, `e2e/cluster up --node`, thick mode: the node's
//! `plexus-daemon` does hot-plug): one running pod, its networks annotation edited `BENCH_HOTPLUG_CHANGES` times
//! (default 50) to add a bridge + host-local network and as many times to remove it. Each change is timed from the
//! annotation PATCH returning to the pod's network-status, seen through a watch, naming the interface (plug) or no
//! longer naming it (unplug): the daemon writes network-status after the interface is in the pod, so this is
//! "interface present and network-status written". After each change the interface is checked inside the pod's
//! network namespace (outside the timing).
//!
//! The same through multus-dynamic-networks-controller is not measured: the controller is not built here (see
//! docs/benchmarks.md).
//!
//! Run: `scripts/bench hotplug`. Writes target/bench/hotplug.json.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

fn interfaces(pod: &Pod) -> Vec<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS))
        .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["interface"].as_str().map(str::to_owned))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut times: Vec<f64>) -> Value {
    times.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
    );
    println!(
        "{name:<7} n={:<3} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        times.len(),
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3
    );
    json!({"n": times.len(), "p50_s": p50, "p99_s": p99, "max_s": max, "all_s": times})
}

fn main() {
    let changes: usize = std::env::var("BENCH_HOTPLUG_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("bench-hp");
    let (subnet, _) = node_subnet();
    create_nad(
        &ns.name,
        "hp",
        Some(
            &json!({"cniVersion": "1.0.0", "name": unique("hpb"), "plugins": [
                {"type": "bridge", "bridge": unique("hb"), "ipam": {"type": "host-local", "subnet": subnet}}
            ]}),
        ),
    );
    create_node_pod_in(NodeMode::Thick, &nodes, 0, &ns.name, "p", None);
    wait_ready_in(
        NodeMode::Thick,
        &nodes,
        &ns.name,
        "p",
        Duration::from_secs(120),
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (plug, unplug) = runtime.block_on(async {
        let client = kube::Client::try_default().await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client, &ns.name);
        let (latest, mut seen) = tokio::sync::watch::channel(Vec::<String>::new());
        let stream = watcher(
            pods.clone(),
            watcher::Config::default().fields("metadata.name=p"),
        )
        .applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(pod)) = stream.next().await {
                let _ = latest.send(interfaces(&pod));
            }
        });
        let (mut plug, mut unplug) = (Vec::new(), Vec::new());
        for _ in 0..changes {
            for (adding, times) in [(true, &mut plug), (false, &mut unplug)] {
                let value = if adding { json!("hp") } else { Value::Null };
                let patch = json!({"metadata": {"annotations": {NETWORKS: value}}});
                let started = Instant::now();
                pods.patch("p", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                let done = tokio::time::timeout(
                    Duration::from_secs(60),
                    seen.wait_for(|i| i.contains(&"net1".to_owned()) == adding),
                )
                .await;
                assert!(
                    matches!(done, Ok(Ok(_))),
                    "no {} within 60 s",
                    if adding { "plug" } else { "unplug" }
                );
                times.push(started.elapsed().as_secs_f64());
                let inside = pod_interfaces(&ns.name, "p")
                    .iter()
                    .any(|i| i.name == "net1");
                assert_eq!(inside, adding, "network-status and the pod disagree");
            }
        }
        (plug, unplug)
    });
    println!(
        "hot-plug on one node, thick mode: annotation PATCH → network-status (interface in the pod)"
    );
    let report = json!({
        "changes": changes,
        "plug": summary("plug", plug),
        "unplug": summary("unplug", unplug),
    });
    let dir = repo().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hotplug.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}
