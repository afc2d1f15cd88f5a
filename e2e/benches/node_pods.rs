//! Real pods on a real node (kubelet + containerd + runc, `e2e/cluster up --node`): 30 pods created at once, each
//! with three networks (the cluster network + two NADs), timed from `kubectl create` to each pod's Ready, with the
//! node's CNI config switched between:
//!
//! * `bare`   — the cluster network's conflist alone (bridge + host-local): one interface, the floor;
//! * `plexus` — the checkout's `plexus` (Kubernetes mode, thin), the conflist as `clusterNetwork`;
//! * `thick`  — the same settings in the node's `plexus-daemon`; the pods' RuntimeClass makes containerd use the shim
//!   config, which forwards each request to the daemon (e2e/lib/node.sh);
//! * `multus` — Multus thin (built from source at the pinned version), the same conflist as `clusterNetwork`
//!   (`plexus_e2e::node_cni::multus_thin_conf` says how, and why by name).
//!
//! Besides create → Ready seen from the API server, the kubelet's own sandbox creation time is read from its metrics
//! (`kubelet_runtime_operations_duration_seconds{operation_type="run_podsandbox"}`, through the API server's node
//! proxy) before and after each round: the RunPodSandbox call into containerd, which includes the CNI ADD. (Not
//! `kubelet_run_podsandbox_duration_seconds`: kubelet v1.34.12 observes it in a `defer` whose argument, the elapsed
//! time, is evaluated when the defer is set up, so it records about 0 s for every sandbox —
//! pkg/kubelet/kuberuntime/instrumented_services.go, `RunPodSandbox`.)
//!
//! Rounds are interleaved (bare, plexus, multus, bare, …) so drift hits every mode alike. Ready is observed by
//! polling the API server every 100 ms, so times are ± 0.1 s. Each round deletes its pods and checks that the node is
//! left with no record, lease or bridge port.
//!
//! Device networks (on a node with at least 2 devices per pod, `e2e/cluster up --node --devices 64`): the same pods
//! each requesting two of the node's device-plugin NICs, with
//!
//! * `devices`    — no secondary network (Plexus thin, the cluster network alone): the floor for device pods;
//! * `plexus-dev`, `thick-dev`, `multus-dev` — two device networks (the NAD's `resourceName` is the node's resource;
//!   the test delegate hands each its device's link), in each meta-plugin;
//!
//! and, per pod, the kubelet's PodResources calls (`kubelet_pod_resources_endpoint_requests_{get,list}`).
//!
//! Run: `scripts/bench` (it starts a control plane and a node of its own). `BENCH_NODE_ROUNDS` (default 3) and
//! `BENCH_NODE_PODS` (default 30) set the size.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_e2e::node::*;
use plexus_e2e::node_cni::{cluster_network, install_conf, multus_thin_conf};
use plexus_e2e::*;
use serde_json::{Value, json};

const MODES: [&str; 8] = [
    "bare",
    "plexus",
    "thick",
    "multus",
    "devices",
    "plexus-dev",
    "thick-dev",
    "multus-dev",
];

/// The modes whose pods request two devices.
fn with_devices(mode: &str) -> bool {
    mode == "devices" || mode.ends_with("-dev")
}

/// The kubelet's PodResources calls so far: (Get, List), from its metrics through the API server's node proxy.
fn pod_resources_calls(node: &str) -> (f64, f64) {
    let text = kubectl(
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}/proxy/metrics"),
        ],
        None,
    );
    let sum = |metric: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    };
    (
        sum("kubelet_pod_resources_endpoint_requests_get"),
        sum("kubelet_pod_resources_endpoint_requests_list"),
    )
}

/// Makes `mode` the node's CNI config: the conf dir then holds only that file (containerd loads the first one).
fn switch_mode(nodes: &Nodes, mode: &str, plexus_conf: &Value, multus_bin: &Path) {
    let (file, conf): (&str, Value) = match mode.trim_end_matches("-dev") {
        "bare" => ("00-bare.conflist", cluster_network(nodes, 0)),
        // Thick pods use the runtime handler whose CNI config is the shim; the node's own config stays plexus.
        "plexus" | "thick" | "devices" => ("00-plexus.conf", plexus_conf.clone()),
        "multus" => ("00-multus.conf", multus_thin_conf(nodes, 0, multus_bin)),
        _ => unreachable!(),
    };
    install_conf(&nodes.node_dir(0).join("cni-conf"), file, &conf);
}

/// A histogram of the kubelet's metrics, summed over its label sets: (sum, count, cumulative count per bucket bound).
#[derive(Debug, Clone, Default)]
struct Histogram {
    sum: f64,
    count: f64,
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// `metric` (`<name>{labels}`) from the node's kubelet, through the API server's node proxy. `filter` keeps only
    /// the label sets that contain it.
    fn scrape(node: &str, metric: &str, filter: &str) -> Self {
        let text = kubectl(
            &[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{node}/proxy/metrics"),
            ],
            None,
        );
        let mut h = Histogram::default();
        for line in text.lines().filter(|l| l.contains(filter)) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if series.starts_with(&format!("{metric}_sum")) {
                h.sum += value;
            } else if series.starts_with(&format!("{metric}_count")) {
                h.count += value;
            } else if series.starts_with(&format!("{metric}_bucket")) {
                let le = series
                    .split("le=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(|b| b.parse::<f64>().unwrap_or(f64::INFINITY))
                    .unwrap_or(f64::INFINITY);
                match h.buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, c)) => *c += value,
                    None => h.buckets.push((le, value)),
                }
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h
    }

    /// What was observed between `before` and `self`.
    fn since(&self, before: &Histogram) -> Histogram {
        let prior = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c)
        };
        Histogram {
            sum: self.sum - before.sum,
            count: self.count - before.count,
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| (*le, c - prior(*le)))
                .collect(),
        }
    }

    fn add(&mut self, other: &Histogram) {
        self.sum += other.sum;
        self.count += other.count;
        for (le, c) in &other.buckets {
            match self.buckets.iter_mut().find(|(b, _)| b == le) {
                Some((_, mine)) => *mine += c,
                None => self.buckets.push((*le, *c)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// The upper bound of the bucket that holds the p-th percentile.
    fn percentile_bound(&self, p: f64) -> f64 {
        let rank = (p / 100.0) * self.count;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= rank)
            .map_or(f64::INFINITY, |(le, _)| *le)
    }
}

/// The kubelet's RunPodSandbox histogram on `node`.
fn sandbox_histogram(node: &str) -> Histogram {
    Histogram::scrape(
        node,
        "kubelet_runtime_operations_duration_seconds",
        "operation_type=\"run_podsandbox\"",
    )
}

/// `plexus-daemon`'s time per phase of its ADD requests so far on node 0, keyed by `phase` (`delegate/<plugin>` for
/// a delegate's), with `request` for the whole request: (seconds, observations). Read inside the node's network
/// namespace, where the daemon's `metricsAddress` is; empty when no daemon answers (thin modes).
fn daemon_add_phases(nodes: &Nodes) -> BTreeMap<String, (f64, f64)> {
    let out = nodes.exec_output(0, &["curl", "-sf", "http://127.0.0.1:9464/metrics"]);
    let mut phases: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| {
            labels
                .trim_end_matches('}')
                .split("\",")
                .filter_map(|kv| kv.split_once("=\""))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        if label("command") != "ADD" {
            continue;
        }
        let (key, is_sum) = match name {
            "plexus_daemon_request_duration_seconds_sum" => ("request".to_owned(), true),
            "plexus_daemon_request_duration_seconds_count" => ("request".to_owned(), false),
            "plexus_daemon_phase_duration_seconds_sum"
            | "plexus_daemon_phase_duration_seconds_count" => {
                let phase = label("phase");
                let plugin = label("plugin");
                let key = if plugin.is_empty() {
                    phase
                } else {
                    format!("{phase}/{plugin}")
                };
                (key, name.ends_with("_sum"))
            }
            _ => continue,
        };
        let entry = phases.entry(key).or_default();
        if is_sum {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    phases
}

/// What one round measured.
struct Round {
    ready: Vec<f64>,
    total: f64,
    sandboxes: Histogram,
    /// PodResources (Get, List) calls during the round.
    pod_resources: (f64, f64),
}

/// Creates `count` pods at once and returns each one's create→Ready time, the total, in seconds, and the kubelet's
/// sandbox creation times for them.
fn round(nodes: &Nodes, mode: &str, count: usize) -> Round {
    let ns = KubeNamespace::new(&format!("bench-{}", mode.trim_end_matches("-dev")));
    let (s1, _) = node_subnet();
    let (s2, _) = node_subnet();
    let bridges = [unique("bb"), unique("bb")];
    let resource = std::env::var("NODE_DEVICE_RESOURCE").unwrap_or_default();
    for (name, bridge, subnet) in [("n1", &bridges[0], &s1), ("n2", &bridges[1], &s2)] {
        if with_devices(mode) {
            // A device network: the test delegate hands the pod the link of its device (host-device).
            let delegate = std::env::var("NODE_DEVICE_DELEGATE").expect("NODE_DEVICE_DELEGATE");
            let nad = json!({
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": &ns.name,
                             "annotations": {"k8s.v1.cni.cncf.io/resourceName": &resource}},
                "spec": {"config": json!({"cniVersion": "1.0.0", "name": format!("{}-{name}", ns.name),
                    "plugins": [{"type": delegate, "ipam": {"type": "host-local", "subnet": subnet}}]}).to_string()}
            });
            kubectl(&["apply", "-f", "-"], Some(&nad.to_string()));
            continue;
        }
        create_nad(
            &ns.name,
            name,
            Some(
                &json!({"cniVersion": "1.0.0", "name": format!("{}-{name}", ns.name), "plugins": [
                {"type": "bridge", "bridge": bridge, "ipam": {"type": "host-local", "subnet": subnet}}]}),
            ),
        );
    }
    let networks = if mode == "devices" {
        None
    } else {
        Some("n1,n2")
    };
    let items: Vec<Value> = (0..count)
        .map(|i| {
            let mut pod = pod_manifest(
                &ns.name,
                &format!("p{i}"),
                nodes.name(0),
                &nodes.image,
                networks,
            );
            if mode.starts_with("thick") {
                NodeMode::Thick.apply(&mut pod);
            }
            if with_devices(mode) {
                // The scheduler places it (extended resources are accounted there), on the node.
                scheduled_on(&mut pod, nodes.name(0));
                pod["spec"]["containers"][0]["resources"] =
                    json!({"requests": {&resource: "2"}, "limits": {&resource: "2"}});
            }
            pod
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let sandboxes_before = sandbox_histogram(nodes.name(0));
    let calls_before = pod_resources_calls(nodes.name(0));
    let start = Instant::now();
    kubectl(&["create", "-f", "-"], Some(&list));
    let mut ready: Vec<Option<f64>> = vec![None; count];
    while ready.iter().any(Option::is_none) {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{mode}: pods not Ready after 600 s"
        );
        let pods: Value = serde_json::from_str(&kubectl(
            &["get", "pods", "-n", &ns.name, "-o", "json"],
            None,
        ))
        .unwrap();
        let now = start.elapsed().as_secs_f64();
        for pod in pods["items"].as_array().unwrap() {
            let i: usize = pod["metadata"]["name"].as_str().unwrap()[1..]
                .parse()
                .unwrap();
            let is_ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if is_ready && ready[i].is_none() {
                ready[i] = Some(now);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let total = start.elapsed().as_secs_f64();
    let sandboxes = sandbox_histogram(nodes.name(0)).since(&sandboxes_before);
    let calls_after = pod_resources_calls(nodes.name(0));
    if mode != "bare" && mode != "devices" {
        let status = network_status(&ns.name, "p0");
        assert_eq!(status.len(), 3, "{mode}: three networks in {status:?}");
    }
    delete_all_pods(&ns.name, "300s");
    // The bare cluster network never creates the NADs' bridges (nor do device networks).
    for bridge in bridges
        .iter()
        .filter(|_| mode != "bare" && !with_devices(mode))
    {
        let ports = nodes.exec(0, &["ip", "-o", "link", "show", "master", bridge]);
        assert_eq!(ports, "", "{mode}: ports left on {bridge}");
        let _ = nodes.exec_output(0, &["ip", "link", "del", bridge]);
    }
    if with_devices(mode) {
        let links = nodes.links(0);
        let home = links.iter().filter(|l| l.starts_with("dpnic")).count();
        let k: usize = std::env::var("NODE_DEVICE_COUNT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert_eq!(
            home, k,
            "{mode}: device links not back on the node: {links:?}"
        );
    }
    Round {
        ready: ready.into_iter().map(Option::unwrap).collect(),
        total,
        sandboxes,
        pod_resources: (
            calls_after.0 - calls_before.0,
            calls_after.1 - calls_before.1,
        ),
    }
}

fn main() {
    let rounds = env_usize("BENCH_NODE_ROUNDS", 3);
    // BENCH_NODE_MODES (space-separated) picks modes; see docs/benchmarks.md for why Multus may be left out.
    let modes: Vec<&str> = match std::env::var("BENCH_NODE_MODES") {
        Ok(v) => MODES
            .into_iter()
            .filter(|m| v.split_whitespace().any(|w| w == *m))
            .collect(),
        // Device modes need two devices per pod on the node.
        Err(_) => {
            let pods = env_usize("BENCH_NODE_PODS", 30);
            let devices = env_usize("NODE_DEVICE_COUNT", 0);
            MODES
                .into_iter()
                .filter(|m| !with_devices(m) || devices >= 2 * pods)
                .collect()
        }
    };
    let count = env_usize("BENCH_NODE_PODS", 30);
    let nodes = Nodes::from_env();
    let multus_bin = tool_bin("multus").join("multus");
    let plexus_conf: Value =
        serde_json::from_str(&std::fs::read_to_string(nodes.cni_conf(0)).unwrap()).unwrap();
    let mut ready: Vec<Vec<f64>> = vec![vec![]; modes.len()];
    let mut totals: Vec<Vec<f64>> = vec![vec![]; modes.len()];
    let mut sandboxes: Vec<Histogram> = vec![Histogram::default(); modes.len()];
    let mut calls: Vec<(f64, f64)> = vec![(0.0, 0.0); modes.len()];
    let mut phases: Vec<BTreeMap<String, (f64, f64)>> = vec![BTreeMap::new(); modes.len()];
    for r in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            switch_mode(&nodes, mode, &plexus_conf, &multus_bin);
            let thick = mode.starts_with("thick");
            let phases_before = if thick {
                daemon_add_phases(&nodes)
            } else {
                BTreeMap::new()
            };
            let Round {
                ready: times,
                total,
                sandboxes: sandbox,
                pod_resources,
            } = round(&nodes, mode, count);
            eprintln!(
                "round {r} {mode}: total {total:.2} s; kubelet: {} sandboxes, mean {:.2} s; PodResources Get {}, List {}",
                sandbox.count,
                sandbox.sum / sandbox.count,
                pod_resources.0,
                pod_resources.1
            );
            if thick {
                for (key, (sum, n)) in daemon_add_phases(&nodes) {
                    let (sum0, n0) = phases_before.get(&key).copied().unwrap_or_default();
                    let entry = phases[m].entry(key).or_default();
                    entry.0 += sum - sum0;
                    entry.1 += n - n0;
                }
            }
            ready[m].extend(times);
            totals[m].push(total);
            sandboxes[m].add(&sandbox);
            calls[m].0 += pod_resources.0;
            calls[m].1 += pod_resources.1;
        }
    }
    switch_mode(&nodes, "plexus", &plexus_conf, &multus_bin);

    println!("\n{count} pods created at once, {rounds} rounds; create → Ready (s):\n");
    // The kubelet's buckets (0.005 s × 2.5ⁿ: … 3.05, 7.63, 19.07 s) are too coarse for percentiles here: the table
    // gives the mean; the JSON keeps the bucket bounds too.
    println!(
        "| mode | p50 | p90 | total (median of rounds) | kubelet RunPodSandbox mean | sandboxes run | PodResources Get/pod | List/pod |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut json_out = serde_json::Map::new();
    for (m, mode) in modes.iter().enumerate() {
        let mut r = ready[m].clone();
        r.sort_by(f64::total_cmp);
        let mut t = totals[m].clone();
        t.sort_by(f64::total_cmp);
        let (p50, p90, total) = (
            percentile(&r, 50.0),
            percentile(&r, 90.0),
            percentile(&t, 50.0),
        );
        let sb = &sandboxes[m];
        let (sb_mean, sb_p50, sb_p90) = (
            sb.sum / sb.count,
            sb.percentile_bound(50.0),
            sb.percentile_bound(90.0),
        );
        let pods = (count * rounds) as f64;
        let (get, list) = (calls[m].0 / pods, calls[m].1 / pods);
        println!(
            "| {mode} | {p50:.2} | {p90:.2} | {total:.2} | {sb_mean:.2} | {} | {get:.2} | {list:.2} |",
            sb.count
        );
        json_out.insert(
            (*mode).into(),
            json!({"p50": p50, "p90": p90, "total_median": total, "ready": r, "totals": t,
                   "pod_resources_per_pod": {"get": get, "list": list},
                   "kubelet_run_podsandbox": {"mean": sb_mean, "p50_le": sb_p50, "p90_le": sb_p90,
                                              "count": sb.count, "sum": sb.sum, "buckets": sb.buckets}}),
        );
    }
    // Thick modes: where plexus-daemon's time per ADD goes (its phase metrics), to tell Plexus's part from the
    // delegates'. A phase's mean is per ADD request; a delegate runs once per attachment it serves.
    for (m, mode) in modes.iter().enumerate() {
        let Some(&(request, adds)) = phases[m].get("request").filter(|(_, n)| *n > 0.0) else {
            continue;
        };
        println!(
            "\n{mode}: plexus-daemon, ms per ADD request ({adds:.0} ADDs; calls per ADD in brackets):"
        );
        println!("  request (socket to reply) {:.1}", 1000.0 * request / adds);
        for (key, (sum, n)) in phases[m].iter().filter(|(k, _)| *k != "request") {
            println!("  {key} {:.1} [{:.1}]", 1000.0 * sum / adds, n / adds);
        }
        json_out[*mode]["daemon_ms_per_add"] = Value::Object(
            phases[m]
                .iter()
                .map(|(k, (sum, n))| {
                    (
                        k.clone(),
                        json!({"ms": 1000.0 * sum / adds, "calls": n / adds}),
                    )
                })
                .collect(),
        );
    }
    // The device-network targets (issue 23): p50 against the same pods without secondary networks, and against Multus.
    let p50_of = |name: &str| json_out.get(name).and_then(|v| v["p50"].as_f64());
    for (a, b) in [
        ("plexus-dev", "devices"),
        ("thick-dev", "devices"),
        ("multus-dev", "devices"),
        ("plexus-dev", "multus-dev"),
        ("thick-dev", "multus-dev"),
    ] {
        if let (Some(x), Some(y)) = (p50_of(a), p50_of(b)) {
            println!("p50 {a} / {b}: {:.3}", x / y);
        }
    }
    let out = repo().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("node_pods.json"),
        Value::Object(json_out).to_string(),
    )
    .unwrap();
}
