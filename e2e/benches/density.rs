//! Pod density on the real nodes, in the shape of kube-burner's `node-density-cni` as Multus's CI runs it (PR #1530:
//! pods per node on two workers, one macvlan NAD, P50/P99 pod-Ready), which cannot be built here (the Go module proxy
//! refuses `github.com/kube-burner/kube-burner`). Built from the same parts instead:
//!
//! * two real nodes (`e2e/cluster up --nodes 2`: kubelet + containerd + runc each), filled to what each holds: the
//!   kubelet's allocatable `pods` (its max-pods, 110) less the pods already bound there (`BENCH_DENSITY_PODS` sets
//!   fewer);
//! * pods in pairs as node-density-cni's webserver and curl pods: a server on one node and its client on the other,
//!   so every pair crosses nodes; each pod has the cluster network and one macvlan network (`dense`, master the
//!   nodes' shared `lan0`, static IPAM, the pod's address asked for in its selection's `ips`);
//! * each client pings its server's macvlan address until it answers, then logs `reached`: after the pods are Ready
//!   the bench waits until every client has reached its server over the secondary network (node-density-cni's curl
//!   readiness, moved out of the Ready time so that probe periods do not quantise it);
//! * all pods of a round created with one `kubectl create`; Ready seen on a watch (kube's watcher) as it happens;
//!   then all deleted at once, timed, and each node checked for leftover cluster-network leases and records.
//!
//! Modes, rounds interleaved (bare, plexus, thick, multus, multus-thick, bare, …):
//! * `bare`   — the cluster network alone (bridge + host-local), no secondary network and no ping: the floor;
//! * `plexus` — the checkout's `plexus`, thin (the nodes' own CNI config);
//! * `thick`  — the nodes' `plexus-daemon`s through the shim (the pods' RuntimeClass picks containerd's thick handler);
//! * `multus` — Multus thin v4.3.0 (built from source), admin kubeconfig, the same cluster network;
//! * `multus-thick` — multus-daemon v4.3.0 started in each node's namespaces for the mode, the thick handler's config
//!   switched to multus-shim meanwhile (`plexus_e2e::node_cni::MultusDaemon`).
//!
//! Run: `scripts/bench density`. `BENCH_DENSITY_ROUNDS` (default 1), `BENCH_DENSITY_WARMUP` (uncounted rounds of the
//! first mode before them, default 1), `BENCH_DENSITY_PODS` (per node), `BENCH_DENSITY_MODES` (space-separated). Writes `target/bench/density.json`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_e2e::node::*;
use plexus_e2e::node_cni::*;
use plexus_e2e::*;
use serde_json::{Value, json};

const MODES: [&str; 5] = ["bare", "plexus", "thick", "multus", "multus-thick"];

/// What one round of one mode measured.
struct Round {
    /// create → Ready of each pod, seconds.
    ready: Vec<f64>,
    /// create → the last pod Ready.
    all_ready: f64,
    /// create → every client reached its server over the macvlan network (none in `bare`).
    all_reached: Option<f64>,
    /// `kubectl delete pods --all --wait` of the round's pods.
    delete_all: f64,
    /// FailedCreatePodSandBox events (the kubelet retries; each is a failed CNI ADD or a runtime error), by their
    /// message with sandbox ids and pod names taken out.
    sandbox_failures: BTreeMap<String, usize>,
}

/// How many more pods node `name` takes: its allocatable `pods` less the pods bound to it that have not ended.
fn room_on(name: &str) -> usize {
    let allocatable: usize = kubectl(
        &[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.allocatable.pods}",
        ],
        None,
    )
    .trim()
    .parse()
    .unwrap();
    let bound = kubectl(
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={name},status.phase!=Succeeded,status.phase!=Failed"),
            "-o",
            "name",
        ],
        None,
    )
    .lines()
    .count();
    allocatable.saturating_sub(bound)
}

/// Makes `mode` the nodes' CNI config (plexus thin is their own; thick pods use the other runtime handler). Returns
/// the multus-daemons of `multus-thick`, which run until dropped.
fn switch_mode(nodes: &Nodes, mode: &str, plexus_confs: &[Value]) -> Vec<MultusDaemon> {
    let mut daemons = vec![];
    for (i, plexus_conf) in plexus_confs.iter().enumerate() {
        let (file, conf) = match mode {
            "bare" => ("00-bare.conflist", cluster_network(nodes, i)),
            "plexus" | "thick" => ("00-plexus.conf", plexus_conf.clone()),
            "multus" => (
                "00-multus.conf",
                multus_thin_conf(nodes, i, &tool_bin("multus").join("multus")),
            ),
            "multus-thick" => {
                daemons.push(MultusDaemon::start(nodes, i, &tool_bin("multus-thick")));
                ("00-plexus.conf", plexus_conf.clone())
            }
            _ => unreachable!("{mode}"),
        };
        install_conf(&nodes.node_dir(i).join("cni-conf"), file, &conf);
    }
    daemons
}

/// The round's pods: `pairs` servers and as many clients, pair k's server on node k % 2 and its client on the
/// other, each with the `dense` network at `prefix.(2k+2)` (server) and `prefix.(2k+3)` (client) unless `bare`.
fn pods(nodes: &Nodes, ns: &str, mode: &str, pairs: usize, prefix: &str) -> Vec<Value> {
    let mut out = vec![];
    for k in 0..pairs {
        let (server_ip, client_ip) = (
            format!("{prefix}.{}", 2 * k + 2),
            format!("{prefix}.{}", 2 * k + 3),
        );
        for (role, node, ip) in [("s", k % 2, &server_ip), ("c", (k + 1) % 2, &client_ip)] {
            let networks = (mode != "bare").then(|| {
                json!([{"name": "dense", "interface": "net1", "ips": [format!("{ip}/24")]}])
                    .to_string()
            });
            let mut pod = pod_manifest(
                ns,
                &format!("{role}{k}"),
                nodes.name(node),
                &nodes.image,
                networks.as_deref(),
            );
            if mode == "thick" || mode == "multus-thick" {
                NodeMode::Thick.apply(&mut pod);
            }
            pod["metadata"]["labels"] = json!({"role": role});
            let command = match (role, mode) {
                ("c", m) if m != "bare" => format!(
                    "trap 'exit 0' TERM; until ping -c 1 -W 1 {server_ip} >/dev/null 2>&1; do sleep 0.2; done; \
                     echo reached; sleep 86400 & wait $!"
                ),
                _ => "trap 'exit 0' TERM; sleep 86400 & wait $!".to_owned(),
            };
            pod["spec"]["containers"][0]["command"] = json!(["/bin/sh", "-c", command]);
            out.push(pod);
        }
    }
    out
}

/// Watches the namespace's pods (kube's watcher, which resumes a broken watch) in a thread of its own and records
/// when each is first seen Ready, in seconds after `start`, until `stop` is set.
fn watch_ready(
    ns: &str,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Arc<Mutex<BTreeMap<String, f64>>> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{WatchStreamExt, watcher};
    let ready = Arc::new(Mutex::new(BTreeMap::new()));
    let seen = ready.clone();
    let ns = ns.to_owned();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(kubeconfig()).unwrap(),
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .unwrap();
            let pods: kube::Api<Pod> =
                kube::Api::namespaced(kube::Client::try_from(config).unwrap(), &ns);
            let mut stream = std::pin::pin!(
                watcher(pods, watcher::Config::default())
                    .default_backoff()
                    .applied_objects()
            );
            let _ = started_tx.send(());
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_millis(200), stream.next()).await
                else {
                    continue;
                };
                let Ok(pod) = event else { continue };
                let now = start.elapsed().as_secs_f64();
                let is_ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if let (true, Some(name)) = (is_ready, pod.metadata.name) {
                    seen.lock().unwrap().entry(name).or_insert(now);
                }
            }
        });
    });
    started_rx.recv().expect("the watch thread started");
    ready
}

/// Where the mode's meta-plugin keeps what it needs for DEL on node `i` (the `cniDir`s its configs here set).
fn records_dir(nodes: &Nodes, i: usize, mode: &str) -> Option<std::path::PathBuf> {
    let lib = nodes.node_dir(i).join("var-lib/cni");
    match mode {
        "plexus" | "thick" => Some(nodes.records_dir(i)),
        "multus" => Some(lib.join("multus/results")),
        "multus-thick" => Some(lib.join("multus-thick/results")),
        _ => None,
    }
}

/// What node `i` still holds of the round: cluster-network leases, and records (or their lock files) of the mode's
/// meta-plugin.
fn leftovers(nodes: &Nodes, i: usize, mode: &str) -> Vec<String> {
    let mut left: Vec<String> = files_in(&nodes.leases_dir(i, "pods"))
        .into_iter()
        .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
        .collect();
    if let Some(dir) = records_dir(nodes, i, mode) {
        left.extend(files_in(&dir));
    }
    left
}

/// The namespace's FailedCreatePodSandBox events, counted (an event the kubelet repeated carries its count) by
/// message, with what differs between pods (sandbox ids, pod names, uids) replaced by `…`.
fn sandbox_failures(ns: &str) -> BTreeMap<String, usize> {
    let events: Value = serde_json::from_str(&kubectl(
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "reason=FailedCreatePodSandBox",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let mut out = BTreeMap::new();
    for event in events["items"].as_array().into_iter().flatten() {
        let message = event["message"].as_str().unwrap_or_default();
        let shape: String = message
            .split(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '[' || c == ']')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let varying = w.len() >= 32 && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
                    || (w.len() > 1
                        && (w.starts_with('s') || w.starts_with('c'))
                        && w[1..].chars().all(|c| c.is_ascii_digit()))
                    || w.starts_with(ns);
                if varying { "…" } else { w }
            })
            .collect::<Vec<_>>()
            .join(" ");
        *out.entry(shape).or_default() += event["count"].as_u64().unwrap_or(1) as usize;
    }
    out
}

/// The lines of node `i`'s Plexus and containerd logs that name the sandbox of a leftover `file` (its 64-hex
/// container id; an address for a lease).
fn log_lines_naming(nodes: &Nodes, i: usize, file: &str) -> Vec<String> {
    let id = file
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .unwrap_or(file);
    ["plexus.log", "plexus-daemon.log", "containerd.log"]
        .iter()
        .flat_map(|log| {
            std::fs::read_to_string(nodes.node_dir(i).join(log))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(id))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn round(nodes: &Nodes, mode: &str, pairs: usize) -> Round {
    let ns = KubeNamespace::new(&format!("density-{mode}"));
    let (_, prefix) = node_subnet();
    if mode != "bare" {
        create_nad(
            &ns.name,
            "dense",
            Some(
                &json!({"cniVersion": "1.0.0", "name": format!("{}-dense", ns.name),
                "plugins": [{"type": "macvlan", "master": &nodes.lan_if, "mode": "bridge",
                             "capabilities": {"ips": true}, "ipam": {"type": "static"}}]}),
            ),
        );
    }
    let items = pods(nodes, &ns.name, mode, pairs, &prefix);
    let count = items.len();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = watch_ready(&ns.name, start, stop.clone());
    kubectl(&["create", "-f", "-"], Some(&list));
    loop {
        let done = ready.lock().unwrap().len();
        if done == count {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "{mode}: {done} of {count} pods Ready after 900 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let ready: Vec<f64> = ready.lock().unwrap().values().copied().collect();
    let all_ready = ready.iter().copied().fold(0.0, f64::max);
    // Every client has reached its server over the macvlan network (their logs say so).
    let all_reached = (mode != "bare").then(|| {
        loop {
            let logs = kubectl(
                &[
                    "logs",
                    "-n",
                    &ns.name,
                    "-l",
                    "role=c",
                    "--prefix",
                    "--tail=-1",
                    "--max-log-requests=500",
                ],
                None,
            );
            let reached = logs.lines().filter(|l| l.ends_with("reached")).count();
            if reached == pairs {
                break start.elapsed().as_secs_f64();
            }
            assert!(
                start.elapsed() < Duration::from_secs(1200),
                "{mode}: {reached} of {pairs} clients reached their server over the macvlan network"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    if mode != "bare" {
        let status = network_status(&ns.name, "c0");
        assert_eq!(status.len(), 2, "{mode}: two networks in {status:?}");
    }
    let sandbox_failures = sandbox_failures(&ns.name);
    // The mode's meta-plugin networked the pods: its records on each node, one or more per pod there.
    for i in 0..nodes.names.len() {
        if let Some(dir) = records_dir(nodes, i, mode) {
            let held = files_in(&dir).len();
            assert!(
                held >= pairs,
                "{mode}: {held} records in {} for {pairs} pods",
                dir.display()
            );
        }
    }
    let deleting = Instant::now();
    delete_all_pods(&ns.name, "900s");
    let delete_all = deleting.elapsed().as_secs_f64();
    // Nothing left on the nodes: no cluster-network lease, no record of the mode's meta-plugin. The runtime may still
    // be running a late DEL of a sandbox whose pod is gone (containerd repeats the teardown when it removes the
    // sandbox), which holds the sandbox's lock file meanwhile: what is left must be gone within a minute.
    let settling = Instant::now();
    let left_on_nodes = || -> Vec<(usize, String)> {
        (0..nodes.names.len())
            .flat_map(|i| leftovers(nodes, i, mode).into_iter().map(move |f| (i, f)))
            .collect()
    };
    wait_until(
        &format!("{mode}: the nodes emptied of the round's leases and records"),
        Duration::from_secs(60),
        || left_on_nodes().is_empty().then_some(()),
        || {
            let left = left_on_nodes();
            let logs: Vec<String> = left
                .iter()
                .flat_map(|(i, file)| log_lines_naming(nodes, *i, file))
                .collect();
            format!(
                "left {left:?}; the node logs' lines naming them:\n{}",
                logs.join("\n")
            )
        },
    );
    let settle = settling.elapsed().as_secs_f64();
    if settle > 0.6 {
        eprintln!("{mode}: the nodes' leftovers were gone {settle:.1} s after the delete returned");
    }
    Round {
        ready,
        all_ready,
        all_reached,
        delete_all,
        sandbox_failures,
    }
}

fn main() {
    let nodes = Nodes::from_env();
    assert!(
        nodes.names.len() >= 2,
        "two nodes: e2e/cluster up --nodes 2"
    );
    let rounds = env_usize("BENCH_DENSITY_ROUNDS", 1);
    let room = room_on(nodes.name(0)).min(room_on(nodes.name(1)));
    let per_node = env_usize("BENCH_DENSITY_PODS", room).min(room);
    // Two addresses per pair in one /24 of the macvlan network: .2 to .254.
    assert!(
        per_node <= 126,
        "at most 126 pods per node (one /24 for the pairs), not {per_node}"
    );
    let modes: Vec<&str> = match std::env::var("BENCH_DENSITY_MODES") {
        Ok(v) => MODES
            .into_iter()
            .filter(|m| v.split_whitespace().any(|w| w == *m))
            .collect(),
        Err(_) => MODES.to_vec(),
    };
    let plexus_confs: Vec<Value> = (0..2)
        .map(|i| {
            serde_json::from_str(&std::fs::read_to_string(nodes.cni_conf(i)).unwrap()).unwrap()
        })
        .collect();
    eprintln!("{per_node} pods per node ({room} fit), 2 nodes, {rounds} round(s), modes {modes:?}");
    // A warm-up round, not counted: the first pods on fresh nodes pay for what later ones find done (the image's
    // snapshots, the kubelet's and containerd's first sandboxes, the cluster network's bridge), and whichever mode
    // came first paid for it (bare, in the first runs: all Ready 79 s against 50 s when warm).
    let warmup = env_usize("BENCH_DENSITY_WARMUP", 1);
    for _ in 0..warmup {
        let daemons = switch_mode(&nodes, modes[0], &plexus_confs);
        let one = round(&nodes, modes[0], per_node);
        drop(daemons);
        eprintln!(
            "warm-up {}: all Ready {:.1} s (not counted)",
            modes[0], one.all_ready
        );
    }
    let mut results: BTreeMap<&str, Vec<Round>> = BTreeMap::new();
    for r in 0..rounds {
        for mode in &modes {
            let daemons = switch_mode(&nodes, mode, &plexus_confs);
            let one = round(&nodes, mode, per_node);
            drop(daemons);
            eprintln!(
                "round {r} {mode}: all Ready {:.1} s, all reached {}, delete {:.1} s, sandbox failures {}",
                one.all_ready,
                one.all_reached.map_or("-".into(), |s| format!("{s:.1} s")),
                one.delete_all,
                one.sandbox_failures.values().sum::<usize>()
            );
            for (message, n) in &one.sandbox_failures {
                eprintln!("  {n} × {message}");
            }
            results.entry(mode).or_default().push(one);
        }
    }
    switch_mode(&nodes, "plexus", &plexus_confs);

    let total = 2 * per_node;
    println!(
        "\n{total} pods ({per_node} per node, in cross-node pairs) created at once, one macvlan network each, \
         {rounds} round(s); seconds:\n"
    );
    println!(
        "| mode | Ready p50 | p90 | p99 | max | all reached (median) | delete all (median) | sandbox failures |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut json_out = serde_json::Map::new();
    for mode in &modes {
        let runs = &results[mode];
        let mut ready: Vec<f64> = runs.iter().flat_map(|r| r.ready.clone()).collect();
        ready.sort_by(f64::total_cmp);
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| percentile(&v, 50.0))
        };
        let reached = median(runs.iter().filter_map(|r| r.all_reached).collect());
        let delete = median(runs.iter().map(|r| r.delete_all).collect()).unwrap();
        let mut messages: BTreeMap<&str, usize> = BTreeMap::new();
        for (message, n) in runs.iter().flat_map(|r| &r.sandbox_failures) {
            *messages.entry(message).or_default() += n;
        }
        let failures: usize = messages.values().sum();
        let (p50, p90, p99, max) = (
            percentile(&ready, 50.0),
            percentile(&ready, 90.0),
            percentile(&ready, 99.0),
            percentile(&ready, 100.0),
        );
        println!(
            "| {mode} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} | {} | {delete:.1} | {failures} |",
            reached.map_or("-".into(), |s| format!("{s:.1}"))
        );
        json_out.insert(
            (*mode).into(),
            json!({"p50": p50, "p90": p90, "p99": p99, "max": max, "ready": ready,
                   "all_ready": runs.iter().map(|r| r.all_ready).collect::<Vec<_>>(),
                   "all_reached": runs.iter().map(|r| r.all_reached).collect::<Vec<_>>(),
                   "delete_all": runs.iter().map(|r| r.delete_all).collect::<Vec<_>>(),
                   "sandbox_failures": failures, "sandbox_failure_messages": messages}),
        );
    }
    let p = |m: &str, k: &str| json_out.get(m).and_then(|v| v[k].as_f64());
    for (a, b) in [
        ("plexus", "bare"),
        ("thick", "bare"),
        ("plexus", "multus"),
        ("thick", "multus-thick"),
    ] {
        if let (Some(a50), Some(b50), Some(a99), Some(b99)) =
            (p(a, "p50"), p(b, "p50"), p(a, "p99"), p(b, "p99"))
        {
            println!("{a} / {b}: p50 {:.3}, p99 {:.3}", a50 / b50, a99 / b99);
        }
    }
    json_out.insert("pods_per_node".into(), json!(per_node));
    json_out.insert("rounds".into(), json!(rounds));
    let out = repo().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("density.json"),
        Value::Object(json_out).to_string(),
    )
    .unwrap();
}
