//! ADD + DEL of one sandbox with three networks, measured seven ways in one interleaved run:
//!
//! * `bare`          — the three delegates run directly, as a runtime runs a conflist (the floor);
//! * `plexus`        — the release `plexus` binary, static mode (`delegates`);
//! * `multus`        — Multus (thin plugin, built from source at the pinned version), static mode, same delegates;
//! * `plexus-k8s`    — `plexus` in Kubernetes mode: the pod + 3 NADs read from a real kube-apiserver, network-status
//!   written back, one event per network;
//! * `multus-k8s`    — Multus in Kubernetes mode against the same API server, same pod shape and NADs;
//! * `plexus-thick`  — `plexus` as a shim (`daemonSocketDir`) in front of `plexus-daemon` (watch caches);
//! * `multus-thick`  — `multus-shim` in front of `multus-daemon` (same version as the thin Multus), in-cluster
//!   service-account credentials, in a mount namespace of its own that holds the token.
//!
//! The networks: bridge + host-local (the default), a macvlan + static + tuning conflist, ptp + host-local.
//! Every iteration uses a fresh netns and container id (made outside the timed region) and checks after DEL that no
//! interface or host-local lease is left. Round-robin order spreads drift over all modes. API requests per ADD and
//! per DEL come from the API server's audit log, reads (get/list/watch) and writes apart; events are counted apart
//! (thick daemons send them after the reply). Each round ends with the floor of a thick design: exec of a trivial
//! static binary, then (after a bare ADD's time of busy CPU) one PATCH on a kept-alive connection. After the rounds,
//! each plugin's peak RSS comes from a pass through a small static helper (`RssProbe`), and plexus-daemon's phase
//! metrics say where a thick request's time goes; the floor is also measured back to back.
//!
//! Then, unless disabled:
//! * a concurrency run: `BENCH_CONCURRENCY` sandboxes (default 100) × 3 networks ADDed, then DELeted, with
//!   parallelism `BENCH_PARALLELISM` (default 10), per mode: wall times, the daemons' peak RSS, leaks;
//! * a scale run (`BENCH_SCALE=1`): 1,000 NADs and 10,000 pods over 100 node names created in the API server, then
//!   each daemon's RSS, and a restarted daemon's cache-sync time and RSS.
//!
//! Run: `scripts/bench` (builds everything, then `cargo bench -p plexus-e2e --bench add_del`).
//! `BENCH_ITERATIONS` (default 30) sets the measured rounds; 3 warm-up rounds come first; `BENCH_SETTLE_MS`
//! (default 200) is the pause before each ADD of the interleaved run, so that what one call leaves running (netns
//! teardown, a daemon's events) does not land in the next one's time. `BENCH_MODES` (a
//! space-separated subset) picks modes; `plexus-thick` runs when `plexus-daemon` is built next to `plexus`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plexus_api::cni::NetworkConfigList;
use plexus_api::cni::config::RequestExtras;
use plexus_api::cni::result::CniResult;
use plexus_cni::invoke::{CniCommand, Invocation, invoke};
use plexus_e2e::{PrivateCluster, pod_args, repo, tool_bin};
use plexus_tests::*;
use serde_json::{Value, json};

const ALL_MODES: [&str; 7] = [
    "bare",
    "plexus",
    "multus",
    "plexus-k8s",
    "multus-k8s",
    "plexus-thick",
    "multus-thick",
];
/// The node the thick daemons serve; the bench's pods are bound to it.
const NODE: &str = "bench-node";

/// Whether a mode reads the pod and NADs from the API server.
fn kube(mode: &str) -> bool {
    mode.contains("-k8s") || mode.contains("-thick")
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One plugin call: how long it took and the process's peak RSS (KiB; 0 when not a process of its own).
#[derive(Debug, Clone, Copy, Default)]
struct Call {
    took: Duration,
    maxrss_kib: u64,
}

/// API requests seen in one window, reads and writes (events apart).
#[derive(Debug, Clone, Copy, Default)]
struct Requests {
    reads: usize,
    writes: usize,
}

#[derive(Default)]
struct ModeSamples {
    add: Vec<Call>,
    del: Vec<Call>,
    api_add: Requests,
    api_del: Requests,
}

/// Everything a mode needs to run one sandbox.
struct Setup {
    plugins: PathBuf,
    release: PathBuf,
    /// `BENCH_BASELINE`: another `plexus` binary (say, the previous commit's), run as `plexus-base` and
    /// `plexus-k8s-base` beside the others for a before/after in one run.
    baseline: Option<PathBuf>,
    multus: PathBuf,
    multus_shim: PathBuf,
    lists: Vec<NetworkConfigList>,
    configs: BTreeMap<&'static str, Value>,
    /// The static helper that runs a plugin and reports its peak RSS (see [`RssProbe`]).
    rss_probe: Option<RssProbe>,
}

impl Setup {
    /// The plugin binary a mode execs.
    fn binary(&self, mode: &str) -> &Path {
        match mode {
            "plexus" | "plexus-k8s" | "plexus-thick" => &self.release,
            "plexus-base" | "plexus-k8s-base" => self.baseline.as_deref().expect("BENCH_BASELINE"),
            "multus" | "multus-k8s" => &self.multus,
            "multus-thick" => &self.multus_shim,
            _ => unreachable!("{mode}"),
        }
    }

    /// ADD then DEL of one sandbox in `mode`; `pod` = (namespace, name, uid) for the Kubernetes modes.
    fn add_del(
        &self,
        mode: &str,
        id: &str,
        netns: &str,
        pod: Option<(&str, &str, &str)>,
        between: impl FnOnce(),
    ) -> (Call, Call) {
        let args = pod
            .map(|(ns, name, uid)| pod_args(ns, name, uid, id))
            .unwrap_or_default();
        let binary = match mode {
            "bare" => {
                let (add, del) = bare(&self.lists, &self.plugins, id, netns, between);
                return (
                    Call {
                        took: add,
                        maxrss_kib: 0,
                    },
                    Call {
                        took: del,
                        maxrss_kib: 0,
                    },
                );
            }
            _ => self.binary(mode),
        };
        let config = &self.configs[mode];
        let probe = self.rss_probe.as_ref();
        let add = exec(
            probe,
            binary,
            "ADD",
            id,
            netns,
            &self.plugins,
            &args,
            config,
        );
        between();
        let del = exec(
            probe,
            binary,
            "DEL",
            id,
            netns,
            &self.plugins,
            &args,
            config,
        );
        (add, del)
    }
}

fn main() {
    let iterations = env_usize("BENCH_ITERATIONS", 30);
    let settle = Duration::from_millis(env_usize("BENCH_SETTLE_MS", 200) as u64);
    let warmup = 3;
    let release = plexus_release_bin();
    // target/release/plexus-daemon, next to this bench executable (target/release/deps/add_del-…).
    let daemon_bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("plexus-daemon");
    let mut modes: Vec<&'static str> = match std::env::var("BENCH_MODES") {
        Ok(list) if !list.trim().is_empty() => ALL_MODES
            .iter()
            .copied()
            .filter(|m| list.split_whitespace().any(|w| w == *m))
            .collect(),
        _ => ALL_MODES.to_vec(),
    };
    let baseline = std::env::var_os("BENCH_BASELINE").map(PathBuf::from);
    if baseline.is_some() {
        modes.extend(["plexus-base", "plexus-k8s-base"]);
    }
    if modes.contains(&"plexus-thick") && !daemon_bin.exists() {
        println!(
            "plexus-thick skipped: {} is not built (`cargo build --release -p plexus-daemon`)",
            daemon_bin.display()
        );
        modes.retain(|m| *m != "plexus-thick");
    }
    let plugins = plugins_dir();
    let multus_dir = tool_bin("multus");
    let multus_thick_dir = tool_bin("multus-thick");
    let cluster = PrivateCluster::up();
    let apiserver = std::fs::read_to_string(&cluster.kubeconfig)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://").map(str::to_owned))
        .expect("server in the kubeconfig");

    let work = tempfile::tempdir().unwrap();
    // Made first, so that /run/netns is a mount point before the thick daemons' mount namespaces are made.
    let _first_netns = Netns::new();
    let data = work.path().join("ipam");
    let bridge = unique("plxbb");
    let _bridge = HostLink::adopt(&bridge);
    let master = HostLink::veth();
    let (s1, _) = subnet();
    let (_, p2) = subnet();
    let (s3, _) = subnet();
    let pod_net = json!({"cniVersion": "1.0.0", "name": "pod-net", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": true,
         "ipam": {"type": "host-local", "subnet": s1, "dataDir": data}}]});
    let mv_plugins = |tuning: Value| {
        json!([{"type": "macvlan", "master": master.name, "mode": "bridge",
                "ipam": {"type": "static", "addresses": [{"address": format!("{p2}.5/24")}]}},
               tuning])
    };
    let mv_net = json!({"cniVersion": "1.0.0", "name": "mv-net",
        "plugins": mv_plugins(json!({"type": "tuning", "mac": "0a:58:c6:12:00:05"}))});
    // For sandboxes attached at the same time: macvlans on one master need distinct MACs, so no fixed one.
    let mv_net_concurrent = json!({"cniVersion": "1.0.0", "name": "mv-net",
        "plugins": mv_plugins(json!({"type": "tuning"}))});
    let p2p_net = json!({"cniVersion": "1.0.0", "name": "p2p-net", "plugins": [
        {"type": "ptp", "ipam": {"type": "host-local", "subnet": s3, "dataDir": data}}]});
    let delegates = [pod_net.clone(), mv_net.clone(), p2p_net.clone()];
    let delegates_concurrent = [pod_net.clone(), mv_net_concurrent.clone(), p2p_net.clone()];

    // The API objects: the default network's NAD in the "system" namespace, the two others in each mode's pod
    // namespace (bench-<mode>), and one pod per round, bound to NODE, all made before timing starts.
    let total = warmup + iterations;
    let concurrency = env_usize("BENCH_CONCURRENCY", 100);
    let parallelism = env_usize("BENCH_PARALLELISM", 10).max(1);
    let kube_modes: Vec<&str> = modes.iter().copied().filter(|m| kube(m)).collect();
    cluster.kubectl(&["create", "namespace", "bench-system"], "");
    cluster.kubectl(
        &["apply", "-f", "-"],
        &nad("bench-system", "pod-net", &pod_net).to_string(),
    );
    let mut uids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (prefix, count, mv) in [
        ("bench", total, &mv_net),
        ("bench-c", concurrency, &mv_net_concurrent),
    ] {
        if count == 0 {
            continue;
        }
        for mode in &kube_modes {
            let ns = format!("{prefix}-{mode}");
            cluster.kubectl(&["create", "namespace", &ns], "");
            let mut objects = vec![nad(&ns, "mv-net", mv), nad(&ns, "p2p-net", &p2p_net)];
            objects.extend((0..count).map(|i| bench_pod(&ns, &format!("pod-{i}"), NODE)));
            let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
            cluster.kubectl(&["apply", "-f", "-"], &list.to_string());
            let text = cluster.kubectl(
                &[
                    "get",
                    "pods",
                    "-n",
                    &ns,
                    "-o",
                    r#"jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}"#,
                ],
                "",
            );
            let by_name: BTreeMap<&str, &str> =
                text.lines().filter_map(|l| l.split_once('=')).collect();
            uids.insert(
                ns.clone(),
                (0..count)
                    .map(|i| by_name[format!("pod-{i}").as_str()].to_owned())
                    .collect(),
            );
        }
    }

    let cni_dir = |name: &str| work.path().join("cni").join(name);
    let k8s_keys =
        json!({"binDir": plugins, "clusterNetwork": "pod-net", "multusNamespace": "bench-system"});
    let with = |base: Value, extra: &Value| {
        let mut v = base;
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let mut configs: BTreeMap<&'static str, Value> = BTreeMap::new();
    configs.insert(
        "plexus",
        json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "binDir": plugins,
        "cniDir": cni_dir("plexus"), "logLevel": "error", "delegates": delegates}),
    );
    configs.insert(
        "multus",
        json!({"cniVersion": "1.0.0", "name": "multus-net", "type": "multus",
        "binDir": plugins, "cniDir": cni_dir("multus"), "logFile": work.path().join("multus.log"),
        "logLevel": "panic", "delegates": delegates}),
    );
    configs.insert("plexus-base", configs["plexus"].clone());
    configs.insert(
        "plexus-k8s",
        with(
            json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "cniDir": cni_dir("plexus-k8s"),
                   "logLevel": "error", "kubeconfig": cluster.kubeconfig}),
            &k8s_keys,
        ),
    );
    configs.insert(
        "multus-k8s",
        with(
            json!({"cniVersion": "1.0.0", "name": "multus-net", "type": "multus",
                   "cniDir": cni_dir("multus-k8s"), "logFile": work.path().join("multus-k8s.log"),
                   "logLevel": "panic", "kubeconfig": cluster.kubeconfig}),
            &k8s_keys,
        ),
    );
    configs.insert(
        "plexus-k8s-base",
        with(
            configs["plexus-k8s"].clone(),
            &json!({"cniDir": cni_dir("plexus-k8s-base")}),
        ),
    );
    let plexus_socket = work.path().join("plexus-run");
    let multus_socket = work.path().join("multus-run");
    configs.insert(
        "plexus-thick",
        json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "daemonSocketDir": plexus_socket}),
    );
    configs.insert(
        "multus-thick",
        json!({"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim",
               "daemonSocketDir": multus_socket, "logLevel": "panic",
               "logFile": work.path().join("multus-shim.log")}),
    );
    // The daemons' own configs: the thin configs' keys plus the daemon keys.
    let plexus_daemon_config = with(
        configs["plexus-k8s"].clone(),
        &json!({"cniDir": cni_dir("plexus-thick"), "daemonSocketDir": plexus_socket, "nodeName": NODE,
                "metricsAddress": format!("127.0.0.1:{}", free_port())}),
    );
    let multus_daemon_config = with(
        json!({"cniVersion": "1.0.0", "cniDir": cni_dir("multus-thick"), "logLevel": "panic",
               "logFile": work.path().join("multus-daemon.log"), "socketDir": multus_socket,
               "cniConfigDir": work.path().join("multus-conf"),
               "multusAutoconfigDir": work.path().join("multus-conf"), "multusConfigFile": "auto"}),
        &k8s_keys,
    );
    let setup = Setup {
        plugins: plugins.clone(),
        release: release.clone(),
        baseline,
        multus: multus_dir.join("multus"),
        multus_shim: multus_thick_dir.join("multus-shim"),
        lists: delegates
            .iter()
            .map(|d| NetworkConfigList::from_value(d.clone()).unwrap())
            .collect(),
        configs,
        rss_probe: None,
    };
    let mut daemons: BTreeMap<&'static str, Daemon> = BTreeMap::new();
    let start_daemons = |daemons: &mut BTreeMap<&'static str, Daemon>| {
        if modes.contains(&"plexus-thick") {
            daemons.insert(
                "plexus-thick",
                Daemon::plexus(&daemon_bin, work.path(), &plexus_daemon_config),
            );
        }
        if modes.contains(&"multus-thick") {
            daemons.insert(
                "multus-thick",
                Daemon::multus(
                    &multus_thick_dir.join("multus-daemon"),
                    work.path(),
                    &multus_daemon_config,
                    &pod_net,
                    &cluster,
                    &apiserver,
                ),
            );
        }
    };
    start_daemons(&mut daemons);
    for daemon in daemons.values_mut() {
        let took = daemon.wait_ready(Duration::from_secs(120));
        println!(
            "{} ready {:.2} s after its start",
            daemon.name,
            took.as_secs_f64()
        );
    }

    // The interleaved run.
    let mark = audit_lines(&cluster);
    let mut samples: BTreeMap<&str, ModeSamples> = BTreeMap::new();
    let mut events_mark = mark;
    // plexus-daemon's metrics: its phase histograms, before and after the measured rounds.
    let daemon_metrics = modes.contains(&"plexus-thick").then(|| {
        format!(
            "http://{}/metrics",
            plexus_daemon_config["metricsAddress"].as_str().unwrap()
        )
    });
    let mut phases_before = None;
    let mut floor = FloorProbe::new(work.path(), &cluster);
    let mut floor_samples = Vec::new();
    for round in 0..total {
        if round == warmup {
            // Events of the warm-up rounds that thick daemons send late are left out of the counts below.
            std::thread::sleep(Duration::from_secs(1));
            events_mark = audit_lines(&cluster);
            phases_before = daemon_metrics.as_deref().map(curl_text);
        }
        for (m, mode) in modes.iter().enumerate() {
            let ns = Netns::new();
            // Work that the previous call left running (the kernel tearing down its netns, a daemon's events after
            // its reply, the API server writing them) finishes before this call's clock starts, rather than land
            // on whichever mode comes next.
            std::thread::sleep(settle);
            let id = format!("bench-{m}-{round}");
            let namespace = format!("bench-{mode}");
            let pod_name = format!("pod-{round}");
            let pod = uids
                .get(&namespace)
                .map(|u| (namespace.as_str(), pod_name.as_str(), u[round].as_str()));
            let before = audit_lines(&cluster);
            let mut middle = before;
            let (add, del) = setup.add_del(mode, &id, &ns.path(), pod, || {
                middle = audit_lines(&cluster)
            });
            let after = audit_lines(&cluster);
            assert_eq!(
                ns.link_names(),
                Vec::<String>::new(),
                "{mode}: interfaces left after DEL"
            );
            assert_eq!(
                leases(&data),
                Vec::<String>::new(),
                "{mode}: leases left after DEL"
            );
            if round >= warmup {
                let s = samples.entry(mode).or_default();
                s.add.push(add);
                s.del.push(del);
                if pod.is_some() {
                    let (a, d) = (
                        requests(&cluster, before, middle, &namespace),
                        requests(&cluster, middle, after, &namespace),
                    );
                    s.api_add.reads += a.reads;
                    s.api_add.writes += a.writes;
                    s.api_del.reads += d.reads;
                    s.api_del.writes += d.writes;
                }
            }
        }
        // The floor's round: the pause, the exec, a bare ADD's time of busy CPU, the PATCH.
        std::thread::sleep(settle);
        let exec = floor.exec();
        let delegates = samples
            .get("bare")
            .and_then(|s| s.add.last())
            .map_or(Duration::from_millis(30), |c| c.took);
        let busy = Instant::now();
        while busy.elapsed() < delegates {
            std::hint::spin_loop();
        }
        let patch = floor.patch();
        if round >= warmup {
            floor_samples.push((exec, patch));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let events = events_per_namespace(&cluster, events_mark);
    let server_writes = pod_write_server_ms(&cluster, events_mark, audit_lines(&cluster));
    let phases_after = daemon_metrics.as_deref().map(curl_text);
    let daemon_rss: BTreeMap<&str, (f64, f64)> = daemons
        .iter()
        .map(|(m, d)| (*m, (d.rss_mib("VmRSS"), d.rss_mib("VmHWM"))))
        .collect();
    // The plugin processes' peak RSS, in a pass of their own through the RSS probe (3 ADD+DEL per mode).
    let mut setup = setup;
    setup.rss_probe = Some(RssProbe::build(work.path()));
    let mut proc_rss: BTreeMap<&str, f64> = BTreeMap::new();
    for (m, mode) in modes.iter().enumerate() {
        if *mode == "bare" {
            continue;
        }
        for round in 0..3 {
            let ns = Netns::new();
            let namespace = format!("bench-{mode}");
            let pod_name = format!("pod-{round}");
            let pod = uids
                .get(&namespace)
                .map(|u| (namespace.as_str(), pod_name.as_str(), u[round].as_str()));
            let (add, del) =
                setup.add_del(mode, &format!("rss-{m}-{round}"), &ns.path(), pod, || {});
            let peak = add.maxrss_kib.max(del.maxrss_kib) as f64 / 1024.0;
            let entry = proc_rss.entry(mode).or_insert(0.0);
            *entry = entry.max(peak);
        }
    }
    setup.rss_probe = None;
    let mut doc = report(
        &modes,
        &samples,
        &events,
        &daemon_rss,
        &proc_rss,
        iterations,
    );
    doc["pod_writes_at_api_server"] = server_write_report(&server_writes, &modes);
    if let (Some(before), Some(after)) = (&phases_before, &phases_after) {
        doc["plexus_daemon_phases"] = phase_report(before, after, &samples["plexus-thick"]);
    }

    // The floor of a thick design: in the run (what the targets use), and back to back.
    doc["floor"] = floor_in_run(&floor_samples);
    doc["floor_back_to_back"] = measure_floor(&mut floor);
    doc["add_targets_paired"] = paired_targets(&samples, &floor_samples);

    // Concurrency.
    if concurrency > 0 {
        let mut conc_setup = Setup {
            lists: delegates_concurrent
                .iter()
                .map(|d| NetworkConfigList::from_value(d.clone()).unwrap())
                .collect(),
            configs: setup.configs.clone(),
            plugins: setup.plugins.clone(),
            release: setup.release.clone(),
            baseline: setup.baseline.clone(),
            multus: setup.multus.clone(),
            multus_shim: setup.multus_shim.clone(),
            rss_probe: None,
        };
        for mode in ["plexus", "plexus-base", "multus"] {
            if let Some(c) = conc_setup.configs.get_mut(mode) {
                c["delegates"] = json!(delegates_concurrent);
            }
        }
        // With BENCH_SPLIT_CPUS=1, the run once more with the control plane on the last CPU and the node's side (this
        // bench, the plugins, the daemons) on the others, as if the control plane ran elsewhere.
        let passes: &[bool] = if std::env::var("BENCH_SPLIT_CPUS").is_ok_and(|v| v == "1") {
            &[false, true]
        } else {
            &[false]
        };
        for &split in passes {
            if split {
                pin_split(&cluster, &daemons, true);
            }
            let mut rows = serde_json::Map::new();
            println!(
                "\nConcurrency{}: {concurrency} sandboxes × 3 networks, parallelism {parallelism}; wall time of all ADDs, then of all DELs\n",
                if split {
                    " with the control plane on a CPU of its own"
                } else {
                    ""
                }
            );
            println!(
                "{:<15} {:>9} {:>9} {:>9} {:>12} {:>6} {:>7} {:>10} {:>12}",
                "mode",
                "ADD s",
                "DEL s",
                "ADD/bare",
                "daemon peak",
                "leaks",
                "failed",
                "node CPU s (bench/its children/daemon/its children)",
                "cp CPU s (etcd/apiserver/controller)"
            );
            let mut bare_add = None;
            for mode in &modes {
                let hwm_before = daemons.get(mode).map(|d| d.rss_mib("VmHWM"));
                // Let the previous mode's late work (events, the controller's reconciles) end first.
                std::thread::sleep(Duration::from_secs(3));
                let cpu_before = control_plane_cpu_by_process(&cluster);
                // The bench process, the plugins or shims it ran, the daemon, the delegates the daemon ran.
                let node_cpu = || {
                    let (bench, children) = bench_cpu_s();
                    let (daemon, delegates) = daemons.get(mode).map_or((0.0, 0.0), |d| d.cpu_s());
                    [bench, children, daemon, delegates]
                };
                let node_before = node_cpu();
                let mut node_split = [0.0; 4];
                let mut node_adds = 0.0;
                let mut cpu_adds = 0.0;
                let mut cpu_split = [0.0; 3];
                let (add, del, leaks, failed) = concurrent_run(
                    &conc_setup,
                    mode,
                    concurrency,
                    parallelism,
                    &data,
                    uids.get(&format!("bench-c-{mode}")),
                    || {
                        cpu_split = since(control_plane_cpu_by_process(&cluster), cpu_before);
                        cpu_adds = cpu_split.iter().sum();
                        node_split = since(node_cpu(), node_before);
                        node_adds = node_split.iter().sum();
                    },
                );
                if *mode == "bare" {
                    bare_add = Some(add);
                }
                let ratio = bare_add.map(|b| add.as_secs_f64() / b.as_secs_f64());
                let peak = daemons.get(mode).map(|d| d.rss_mib("VmHWM"));
                println!(
                    "{mode:<15} {:>9.2} {:>9.2} {:>9} {:>12} {leaks:>6} {failed:>7} {node_adds:>10.2} ({:.2}/{:.2}/{:.2}/{:.2}) {cpu_adds:>12.2} ({:.2}/{:.2}/{:.2})",
                    add.as_secs_f64(),
                    del.as_secs_f64(),
                    ratio.map_or("-".into(), |r| format!("{r:.2}")),
                    peak.map_or("-".into(), |p| format!("{p:.1} MiB")),
                    node_split[0],
                    node_split[1],
                    node_split[2],
                    node_split[3],
                    cpu_split[0],
                    cpu_split[1],
                    cpu_split[2],
                );
                rows.insert(
                    (*mode).into(),
                    json!({"add_wall_s": add.as_secs_f64(), "del_wall_s": del.as_secs_f64(),
                           "add_vs_bare": ratio, "daemon_peak_rss_mib": peak,
                           "node_cpu_s_during_adds": node_adds,
                           "node_cpu_s_during_adds_by_process": {"bench": node_split[0],
                               "bench_children": node_split[1], "daemon": node_split[2],
                               "daemon_children": node_split[3]},
                           "control_plane_cpu_s_during_adds": cpu_adds,
                           "control_plane_cpu_s_during_adds_by_process":
                               {"etcd": cpu_split[0], "kube-apiserver": cpu_split[1], "plexus-controller": cpu_split[2]},
                           "daemon_peak_rss_before_mib": hwm_before, "leaks": leaks, "failed_calls": failed}),
                );
            }
            let key = if split {
                "concurrency_split_cpus"
            } else {
                "concurrency"
            };
            doc[key] = json!({"sandboxes": concurrency, "parallelism": parallelism, "modes": rows});
            if split {
                pin_split(&cluster, &daemons, false);
            }
        }
    }

    // Scale.
    if std::env::var("BENCH_SCALE").is_ok_and(|v| v == "1") && !daemons.is_empty() {
        doc["scale"] = scale_run(&cluster, &mut daemons, start_daemons);
    }

    drop(daemons);
    write_doc(&doc);
}

/// A pod of the bench, bound to `node` (no kubelet runs: it stays Pending).
fn bench_pod(namespace: &str, name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "mv-net,p2p-net"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}})
}

/// Runs one CNI command of a plugin binary as a runtime does; panics (with its output) when it fails.
#[allow(clippy::too_many_arguments)]
fn exec(
    probe: Option<&RssProbe>,
    binary: &Path,
    command: &str,
    id: &str,
    netns: &str,
    path: &Path,
    args: &str,
    config: &Value,
) -> Call {
    try_exec(probe, binary, command, id, netns, path, args, config)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`exec`], with a failure returned (the plugin's output) rather than a panic. With a probe, the plugin runs under
/// it and the call's peak RSS is the plugin's; without, `maxrss_kib` is 0.
#[allow(clippy::too_many_arguments)]
fn try_exec(
    probe: Option<&RssProbe>,
    binary: &Path,
    command: &str,
    id: &str,
    netns: &str,
    path: &Path,
    args: &str,
    config: &Value,
) -> Result<Call, String> {
    let stdin = config.to_string();
    let start = Instant::now();
    let mut child = probe
        .map_or_else(|| Command::new(binary), |p| p.command(binary))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", path)
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} {command} failed ({}): {}{}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Call {
        took,
        maxrss_kib: probe.map_or(0, RssProbe::peak_kib),
    })
}

/// A plugin's peak RSS, measured by a small static helper that forks and execs it and reads `ru_maxrss` from
/// `wait4`. Not by the bench itself: a child's `ru_maxrss` starts from its parent's RSS at the fork (the bench's,
/// tens of MiB) and survives the exec, so the bench's own `wait4` would report its own size for any small plugin.
/// The helper is a few hundred KiB at its fork. Used in a pass of its own, outside the timed rounds.
struct RssProbe {
    helper: PathBuf,
    out: PathBuf,
}

impl RssProbe {
    fn build(work: &Path) -> Self {
        let helper = gcc_static(
            work,
            "rss-probe",
            r#"#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
/* rss-probe OUT PROGRAM [ARGS...]: runs PROGRAM, writes its ru_maxrss (KiB) to OUT, exits with its status. */
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) { execv(argv[2], argv + 2); _exit(127); }
    int status; struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid) return 2;
    FILE *f = fopen(argv[1], "w");
    if (!f) return 2;
    fprintf(f, "%ld\n", ru.ru_maxrss);
    fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
"#,
        );
        Self {
            helper,
            out: work.join("rss-probe.out"),
        }
    }

    fn command(&self, binary: &Path) -> Command {
        let mut c = Command::new(&self.helper);
        c.arg(&self.out).arg(binary);
        c
    }

    fn peak_kib(&self) -> u64 {
        std::fs::read_to_string(&self.out)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The three delegates run directly: each conflist's plugins in order with prevResult chaining, then DEL in
/// reverse with the final result — what libcni does for a runtime. (ADD time, DEL time).
fn bare(
    lists: &[NetworkConfigList],
    path: &Path,
    id: &str,
    netns: &str,
    between: impl FnOnce(),
) -> (Duration, Duration) {
    let dirs = [path.to_path_buf()];
    let start = Instant::now();
    let results = bare_add(lists, &dirs, id, netns);
    let add = start.elapsed();
    between();
    let start = Instant::now();
    bare_del(lists, &dirs, id, netns, &results);
    (add, start.elapsed())
}

/// ADD of each conflist's plugins in order, prevResult chained; each list's final result.
fn bare_add(
    lists: &[NetworkConfigList],
    dirs: &[PathBuf],
    id: &str,
    netns: &str,
) -> Vec<Option<Value>> {
    lists
        .iter()
        .enumerate()
        .map(|(n, list)| {
            let mut prev: Option<Value> = None;
            for i in 0..list.plugins.len() {
                let stdout = bare_call(list, i, CniCommand::Add, dirs, id, netns, n, prev.as_ref());
                prev = Some(
                    CniResult::from_json(&stdout, "1.0.0")
                        .unwrap()
                        .to_value("1.0.0")
                        .unwrap(),
                );
            }
            prev
        })
        .collect()
}

/// DEL of the lists in reverse, each list's plugins in reverse, with its final result.
fn bare_del(
    lists: &[NetworkConfigList],
    dirs: &[PathBuf],
    id: &str,
    netns: &str,
    results: &[Option<Value>],
) {
    for (n, list) in lists.iter().enumerate().rev() {
        for i in (0..list.plugins.len()).rev() {
            bare_call(
                list,
                i,
                CniCommand::Del,
                dirs,
                id,
                netns,
                n,
                results[n].as_ref(),
            );
        }
    }
}

/// Plugin `i` of `list`, the `n`th network (eth0, net1, …), as libcni calls it; its stdout.
#[allow(clippy::too_many_arguments)]
fn bare_call(
    list: &NetworkConfigList,
    i: usize,
    command: CniCommand,
    dirs: &[PathBuf],
    id: &str,
    netns: &str,
    n: usize,
    prev: Option<&Value>,
) -> Vec<u8> {
    let conf = list.request_config(
        i,
        "1.0.0",
        &RequestExtras {
            prev_result: prev,
            ..RequestExtras::default()
        },
    );
    let stdin = conf.to_string();
    let ifname = if n == 0 {
        "eth0".to_string()
    } else {
        format!("net{n}")
    };
    invoke(&Invocation {
        command,
        plugin: list.plugins[i].plugin_type(),
        container_id: id,
        netns,
        ifname: &ifname,
        cni_args: "",
        path: dirs,
        stdin: stdin.as_bytes(),
        timeout: Duration::from_secs(60),
    })
    .unwrap_or_else(|e| panic!("bare {command:?} {}: {e}", list.name))
    .stdout
}

fn nad(namespace: &str, name: &str, config: &Value) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"config": config.to_string()}})
}

/// `BENCH_PLEXUS_BIN` (scripts/bench sets it to the static build that ships), else target/release/plexus, next to
/// this bench executable (target/release/deps/add_del-…).
fn plexus_release_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BENCH_PLEXUS_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("plexus");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p plexus-cni` (scripts/bench does)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- daemons ---------------------------------------------------------------------------------------------------

/// A thick-mode daemon the bench started; stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    name: &'static str,
    child: Child,
    started: Instant,
    ready: Box<dyn Fn() -> bool>,
    log: PathBuf,
}

impl Daemon {
    /// `plexus-daemon --config FILE`; ready when its `/readyz` answers 200.
    fn plexus(bin: &Path, work: &Path, config: &Value) -> Self {
        let file = work.join("plexus-daemon.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let log = work.join("plexus-daemon.log");
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("--config")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(work.join("plexus-daemon.stderr")).unwrap())
            .spawn()
            .unwrap();
        let url = format!(
            "http://{}/readyz",
            config["metricsAddress"].as_str().unwrap()
        );
        Self {
            name: "plexus-daemon",
            child,
            started,
            ready: Box::new(move || curl_ok(&["-fsS", "-m", "1", &url])),
            log,
        }
    }

    /// `multus-daemon --config FILE` with in-cluster credentials: a service-account token (cluster-admin, as the
    /// bench needs no finer RBAC) bind-mounted at the in-cluster path inside a mount namespace of its own (mounts
    /// from the host, such as new netns files, still propagate in). Ready when its socket answers `/healthz`,
    /// which it serves only after its informers synced.
    fn multus(
        bin: &Path,
        work: &Path,
        config: &Value,
        primary: &Value,
        cluster: &PrivateCluster,
        apiserver: &str,
    ) -> Self {
        let secrets = work.join("multus-serviceaccount");
        if !secrets.exists() {
            std::fs::create_dir_all(&secrets).unwrap();
            cluster.kubectl(
                &["create", "serviceaccount", "multus", "-n", "bench-system"],
                "",
            );
            cluster.kubectl(
                &[
                    "create",
                    "clusterrolebinding",
                    "bench-multus",
                    "--clusterrole=cluster-admin",
                    "--serviceaccount=bench-system:multus",
                ],
                "",
            );
            let token = cluster.kubectl(
                &[
                    "create",
                    "token",
                    "multus",
                    "-n",
                    "bench-system",
                    "--duration=12h",
                ],
                "",
            );
            std::fs::write(secrets.join("token"), token.trim()).unwrap();
            std::fs::copy(
                cluster.state.path().join("pki/ca.crt"),
                secrets.join("ca.crt"),
            )
            .unwrap();
            std::fs::write(secrets.join("namespace"), "bench-system").unwrap();
            // multus-daemon keeps running only with `multusConfigFile: auto` (with a file of the user's, its main
            // returns once the server started), which writes a node CNI config from the primary one it finds here.
            let conf_dir = Path::new(config["cniConfigDir"].as_str().unwrap());
            std::fs::create_dir_all(conf_dir).unwrap();
            std::fs::write(conf_dir.join("10-primary.conflist"), primary.to_string()).unwrap();
        }
        let mount_point = Path::new("/run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(mount_point).unwrap();
        let file = work.join("multus-daemon.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let (host, port) = apiserver.rsplit_once(':').unwrap();
        let log = PathBuf::from(config["logFile"].as_str().unwrap());
        let started = Instant::now();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" "$1" && shift && exec "$@""#)
            .arg(&secrets)
            .arg(mount_point)
            .arg(bin)
            .arg("--config")
            .arg(&file)
            .env("KUBERNETES_SERVICE_HOST", host)
            .env("KUBERNETES_SERVICE_PORT", port)
            .env("MULTUS_NODE_NAME", NODE)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(work.join("multus-daemon.stdout")).unwrap())
            .stderr(std::fs::File::create(work.join("multus-daemon.stderr")).unwrap())
            .spawn()
            .unwrap();
        let socket = PathBuf::from(config["socketDir"].as_str().unwrap()).join("multus.sock");
        Self {
            name: "multus-daemon",
            child,
            started,
            ready: Box::new(move || {
                curl_ok(&[
                    "-fsS",
                    "-m",
                    "1",
                    "--unix-socket",
                    socket.to_str().unwrap(),
                    "http://multus/healthz",
                ])
            }),
            log,
        }
    }

    /// Waits until ready; returns the time since the start.
    fn wait_ready(&mut self, limit: Duration) -> Duration {
        loop {
            if self.poll_ready(limit) {
                return self.started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is ready now; panics when it exited, or is still not ready `limit` after its start.
    fn poll_ready(&mut self, limit: Duration) -> bool {
        if (self.ready)() {
            return true;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}) before it was ready; log {}",
                self.name,
                self.log.display()
            );
        }
        assert!(
            self.started.elapsed() < limit,
            "{} not ready after {limit:?}; log {}",
            self.name,
            self.log.display()
        );
        false
    }

    /// CPU seconds used so far by the daemon and the delegates it ran.
    fn cpu_s(&self) -> (f64, f64) {
        process_cpu_s(&self.child.id().to_string()).unwrap_or_default()
    }

    /// VmRSS or VmHWM from /proc, in MiB.
    fn rss_mib(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap()
            / 1024.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each counter's growth from `before` to `now`.
fn since<const N: usize>(now: [f64; N], before: [f64; N]) -> [f64; N] {
    std::array::from_fn(|i| now[i] - before[i])
}

/// CPU seconds (user + system) used so far by process `pid`, and by its children it waited for.
fn process_cpu_s(pid: &str) -> Option<(f64, f64)> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
    // Fields after the command name (which is in parentheses): utime, stime, cutime and cstime are the 12th to 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    (fields.len() == 4).then(|| {
        (
            (fields[0] + fields[1]) / ticks,
            (fields[2] + fields[3]) / ticks,
        )
    })
}

/// CPU seconds used so far by this process (which runs the bare mode's delegates, with the same invocation code as
/// plexus), and by its children it waited for (the plugins or shims it ran).
fn bench_cpu_s() -> (f64, f64) {
    let used = |who| {
        // SAFETY: getrusage fills the struct we own.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(who, &mut usage);
            usage
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    };
    (used(libc::RUSAGE_SELF), used(libc::RUSAGE_CHILDREN))
}

/// Pins (or, with `on` false, unpins) the control plane's processes to the last CPU and this process's threads and
/// the daemons' to the others, so that the node's side and the control plane do not share a core. Children started
/// later (plugins, shims) inherit this process's CPUs.
fn pin_split(cluster: &PrivateCluster, daemons: &BTreeMap<&'static str, Daemon>, on: bool) {
    // SAFETY: sysconf has no preconditions. (Not available_parallelism: it reads this process's affinity.)
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    assert!(cpus >= 2, "BENCH_SPLIT_CPUS needs at least 2 CPUs");
    let all = format!("0-{}", cpus - 1);
    let (node, control) = if on {
        (format!("0-{}", cpus - 2), format!("{}", cpus - 1))
    } else {
        (all.clone(), all)
    };
    let taskset = |cpus: &str, pid: &str| {
        sh(&["taskset", "-a", "-p", "-c", cpus, pid.trim()]);
    };
    for pid in control_plane_pids(cluster).into_iter().flatten() {
        taskset(&control, &pid);
    }
    for daemon in daemons.values() {
        taskset(&node, &daemon.child.id().to_string());
    }
    taskset(&node, &std::process::id().to_string());
}

/// CPU seconds (user + system) used so far by the control plane the bench started, per process: etcd,
/// kube-apiserver, plexus-controller (0 for one not running). On this machine they share the cores with the plugins,
/// so their work for the Kubernetes modes' writes shows in those modes' wall times.
fn control_plane_cpu_by_process(cluster: &PrivateCluster) -> [f64; 3] {
    control_plane_pids(cluster).map(|pid| {
        pid.and_then(|pid| process_cpu_s(&pid))
            .map_or(0.0, |(own, _)| own)
    })
}

/// The process ids of etcd, kube-apiserver and plexus-controller (none for one not running).
fn control_plane_pids(cluster: &PrivateCluster) -> [Option<String>; 3] {
    ["etcd", "kube-apiserver", "plexus-controller"].map(|name| {
        std::fs::read_to_string(cluster.state.path().join(format!("{name}.pid")))
            .ok()
            .map(|pid| pid.trim().to_owned())
    })
}

/// The body of a GET (the daemon's `/metrics`).
fn curl_text(url: &str) -> String {
    sh(&["curl", "-fsS", "-m", "5", url])
}

/// Where plexus-thick's ADD and DEL go: the means per request of each phase the daemon times
/// (`plexus_daemon_phase_duration_seconds`, the measured rounds only), what the daemon spends outside them (config
/// parse, plan, result), and what the bench sees outside the daemon (the shim's exec, the socket, the reply).
fn phase_report(before: &str, after: &str, samples: &ModeSamples) -> Value {
    use plexus_e2e::thick::metric_sum;
    let delta = |name: &str, labels: &[&str]| {
        metric_sum(after, name, labels) - metric_sum(before, name, labels)
    };
    println!(
        "
plexus-thick, where a request's time goes (means over the measured rounds; milliseconds)
"
    );
    println!(
        "{:<8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "command",
        "at bench",
        "shim+io",
        "daemon",
        "lookup",
        "delegates",
        "status",
        "lock",
        "rec write",
        "rec rm",
        "other"
    );
    let mut rows = serde_json::Map::new();
    for (command, calls) in [("ADD", &samples.add), ("DEL", &samples.del)] {
        let c = format!("command=\"{command}\"");
        let requests = delta("plexus_daemon_request_duration_seconds_count", &[&c]);
        if requests < 1.0 {
            continue;
        }
        let mean_ms = |name: &str, labels: &[&str]| delta(name, labels) / requests * 1000.0;
        let daemon = mean_ms("plexus_daemon_request_duration_seconds_sum", &[&c]);
        let phase = |p: &str| {
            mean_ms(
                "plexus_daemon_phase_duration_seconds_sum",
                &[&format!("phase=\"{p}\""), &c],
            )
        };
        let phases: BTreeMap<&str, f64> = plexus_cni::PHASE_SPANS
            .iter()
            .map(|p| (*p, phase(p)))
            .collect();
        let at_bench = calls.iter().map(|c| ms(c.took)).sum::<f64>() / calls.len() as f64;
        let other = daemon - phases.values().sum::<f64>();
        println!(
            "{command:<8} {at_bench:>9.2} {:>8.2} {daemon:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {other:>9.2}",
            at_bench - daemon,
            phases["lookup"],
            phases["delegate"],
            phases["status_write"],
            phases["record_lock"],
            phases["record_write"],
            phases["record_remove"],
        );
        rows.insert(
            command.into(),
            json!({"at_bench_ms": at_bench, "outside_daemon_ms": at_bench - daemon, "daemon_ms": daemon,
                   "phases_ms": phases, "daemon_other_ms": other}),
        );
    }
    println!(
        "(shim+io: the bench's time minus the daemon's: the shim's exec, the socket and the request thread; rest: the \
         daemon's time outside the phases (config, plan, result), understated for ADD, whose second record write runs \
         beside the status write)"
    );
    let writes = |connection: &str| {
        delta(
            "plexus_daemon_status_writes_total",
            &[&format!("connection=\"{connection}\"")],
        )
    };
    let (thread, shared) = (writes("thread"), writes("shared"));
    println!(
        "network-status PATCHes in the measured rounds: {thread} on the request thread's own connection, {shared} on \
         the shared client"
    );
    rows.insert(
        "status_writes".into(),
        json!({"thread": thread, "shared": shared}),
    );
    Value::Object(rows)
}

fn curl_ok(args: &[&str]) -> bool {
    Command::new("curl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---- audit log -------------------------------------------------------------------------------------------------

fn audit_lines(cluster: &PrivateCluster) -> usize {
    std::fs::read_to_string(cluster.audit_log())
        .unwrap_or_default()
        .lines()
        .count()
}

/// Completed requests of lines `from..to` of the audit log, not made by kubectl or by plexus-controller (whose
/// reconciler writes the pods' NetworksReady condition after each ADD).
fn audit_entries(cluster: &PrivateCluster, from: usize, to: usize) -> Vec<Value> {
    std::fs::read_to_string(cluster.audit_log())
        .unwrap_or_default()
        .lines()
        .skip(from)
        .take(to.saturating_sub(from))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && !e["userAgent"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("kubectl")
                && e["user"]["username"] != "plexus-controller"
        })
        .collect()
}

fn is_event(e: &Value) -> bool {
    e["objectRef"]["resource"] == "events"
}

/// Reads and writes (events left out) on `namespace` and on `bench-system` (the default network's NAD) in lines
/// `from..to`.
fn requests(cluster: &PrivateCluster, from: usize, to: usize, namespace: &str) -> Requests {
    let mut r = Requests::default();
    for e in audit_entries(cluster, from, to) {
        let ns = &e["objectRef"]["namespace"];
        if (ns != namespace && ns != "bench-system") || is_event(&e) {
            continue;
        }
        match e["verb"].as_str().unwrap_or_default() {
            "get" | "list" | "watch" => r.reads += 1,
            _ => r.writes += 1,
        }
    }
    r
}

/// Events created per namespace from line `from` on.
fn events_per_namespace(cluster: &PrivateCluster, from: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in audit_entries(cluster, from, usize::MAX) {
        if is_event(&e) && e["verb"] == "create" {
            let ns = e["objectRef"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *counts.entry(ns).or_insert(0) += 1;
        }
    }
    counts
}

/// The API server's own time for each write of a pod (PATCH or PUT of the pod or its status) in lines `from..to`,
/// from the audit log's timestamps (request received → response complete), in milliseconds, per namespace.
fn pod_write_server_ms(
    cluster: &PrivateCluster,
    from: usize,
    to: usize,
) -> BTreeMap<String, Vec<f64>> {
    let at = |e: &Value, key: &str| {
        e[key]
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    };
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for e in audit_entries(cluster, from, to) {
        if e["objectRef"]["resource"] != "pods"
            || !matches!(e["verb"].as_str(), Some("patch" | "update"))
        {
            continue;
        }
        let (Some(received), Some(complete)) =
            (at(&e, "requestReceivedTimestamp"), at(&e, "stageTimestamp"))
        else {
            continue;
        };
        let ns = e["objectRef"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let took = complete.duration_since(received).as_secs_f64() * 1000.0;
        times.entry(ns).or_default().push(took);
    }
    times
}

/// Median and mean of the API server's time per pod write, for the floor's PATCHes and each Kubernetes mode's.
fn server_write_report(times: &BTreeMap<String, Vec<f64>>, modes: &[&str]) -> Value {
    println!("\nWrites of a pod at the API server (audit log: received → response complete), ms");
    println!("{:<15} {:>7} {:>7} {:>7}", "who", "count", "median", "mean");
    let mut rows = serde_json::Map::new();
    let names = std::iter::once(("floor", "floor".to_owned()))
        .chain(modes.iter().map(|m| (*m, format!("bench-{m}"))));
    for (who, ns) in names {
        let Some(v) = times.get(&ns).filter(|v| !v.is_empty()) else {
            continue;
        };
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        let (median, mean) = (v[v.len() / 2], v.iter().sum::<f64>() / v.len() as f64);
        println!("{who:<15} {:>7} {median:>7.2} {mean:>7.2}", v.len());
        rows.insert(
            who.into(),
            json!({"count": v.len(), "median_ms": median, "mean_ms": mean}),
        );
    }
    Value::Object(rows)
}

// ---- report ----------------------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (median, p90, min) in ms.
fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.9), ms(v[0]))
}

fn report(
    modes: &[&str],
    samples: &BTreeMap<&str, ModeSamples>,
    events: &BTreeMap<String, usize>,
    daemon_rss: &BTreeMap<&str, (f64, f64)>,
    proc_rss: &BTreeMap<&str, f64>,
    iterations: usize,
) -> Value {
    println!(
        "\nADD + DEL of a sandbox with three networks; {iterations} interleaved rounds per mode; milliseconds\n"
    );
    println!(
        "{:<15} {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>9} {:>9} {:>6} | {:>8} | {:>11}",
        "mode",
        "ADD med",
        "ADD p90",
        "DEL med",
        "DEL p90",
        "A+D med",
        "A+D p90",
        "A+D min",
        "ADD r/w",
        "DEL r/w",
        "ev/ADD",
        "proc MiB",
        "daemon MiB"
    );
    let mut json_modes = serde_json::Map::new();
    let mut medians = BTreeMap::new();
    let mut add_medians = BTreeMap::new();
    let n = iterations as f64;
    for mode in modes {
        let Some(s) = samples.get(mode) else { continue };
        let add = stats(s.add.iter().map(|c| c.took).collect());
        let del = stats(s.del.iter().map(|c| c.took).collect());
        let both = stats(
            s.add
                .iter()
                .zip(&s.del)
                .map(|(a, d)| a.took + d.took)
                .collect(),
        );
        let api = kube(mode).then(|| {
            (
                s.api_add.reads as f64 / n,
                s.api_add.writes as f64 / n,
                s.api_del.reads as f64 / n,
                s.api_del.writes as f64 / n,
                *events.get(&format!("bench-{mode}")).unwrap_or(&0) as f64 / n,
            )
        });
        let peak_proc = proc_rss.get(mode).copied().unwrap_or(0.0);
        let api_cols = match api {
            Some((ar, aw, dr, dw, ev)) => format!(
                "{:>9} {:>9} {ev:>6.1}",
                format!("{ar:.1}/{aw:.1}"),
                format!("{dr:.1}/{dw:.1}")
            ),
            None => format!("{:>9} {:>9} {:>6}", "-", "-", "-"),
        };
        let daemon = daemon_rss.get(mode);
        println!(
            "{mode:<15} {:>7.2} {:>7.2} | {:>7.2} {:>7.2} | {:>7.2} {:>7.2} {:>7.2} | {api_cols} | {:>8} | {:>11}",
            add.0,
            add.1,
            del.0,
            del.1,
            both.0,
            both.1,
            both.2,
            if *mode == "bare" {
                "-".to_owned()
            } else {
                format!("{peak_proc:.1}")
            },
            daemon.map_or("-".to_owned(), |(rss, hwm)| format!("{rss:.1}/{hwm:.1}"))
        );
        medians.insert(*mode, both.0);
        add_medians.insert(*mode, add.0);
        json_modes.insert(
            (*mode).into(),
            json!({
                "add": {"median": add.0, "p90": add.1, "min": add.2},
                "del": {"median": del.0, "p90": del.1, "min": del.2},
                "add_del": {"median": both.0, "p90": both.1, "min": both.2},
                "api_per_add": api.map(|a| json!({"reads": a.0, "writes": a.1, "events": a.4})),
                "api_per_del": api.map(|a| json!({"reads": a.2, "writes": a.3})),
                "plugin_process_peak_rss_mib": (*mode != "bare").then_some(peak_proc),
                "daemon_rss_mib": daemon.map(|d| json!({"rss": d.0, "peak": d.1})),
            }),
        );
    }
    println!(
        "\nr/w: API reads (get/list/watch) and writes per call, events apart (ev/ADD, counted over the run per \
         namespace: thick daemons send them after the reply); proc MiB: the plugin process's peak RSS (shim in thick \
         modes; 3 ADD+DEL under a static helper, after the rounds); daemon MiB: RSS now / peak"
    );
    let mut ratios = serde_json::Map::new();
    for (a, b) in [
        ("plexus", "bare"),
        ("multus", "bare"),
        ("plexus", "multus"),
        ("plexus-k8s", "bare"),
        ("multus-k8s", "bare"),
        ("plexus-k8s", "multus-k8s"),
        ("plexus-thick", "bare"),
        ("multus-thick", "bare"),
        ("plexus-thick", "multus-thick"),
        ("plexus", "plexus-base"),
        ("plexus-k8s", "plexus-k8s-base"),
    ] {
        if let (Some(x), Some(y)) = (medians.get(a), medians.get(b)) {
            ratios.insert(format!("{a}/{b}"), json!(x / y));
        }
    }
    println!("\nratios of the ADD+DEL medians:");
    for (k, v) in &ratios {
        println!("  {k:<28} {:.3}", v.as_f64().unwrap());
    }
    let mut overheads = serde_json::Map::new();
    if let Some(bare) = add_medians.get("bare") {
        println!("\nADD median overhead over bare:");
        for (mode, add) in &add_medians {
            if *mode != "bare" {
                println!("  {mode:<15} {:>7.2} ms", add - bare);
                overheads.insert((*mode).into(), json!(add - bare));
            }
        }
    }
    let multus_version = std::fs::read_to_string(repo().join("e2e/tools/versions.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MULTUS_VERSION=").map(str::to_owned))
        .unwrap_or_default();
    println!(
        "\nplexus {} (release build: {}), multus {multus_version}, CNI plugins from e2e/tools/versions.env",
        env!("CARGO_PKG_VERSION"),
        plexus_release_bin().display()
    );
    json!({"iterations": iterations, "modes": json_modes, "ratios": ratios,
           "add_overhead_over_bare_ms": overheads,
           "plexus": env!("CARGO_PKG_VERSION"), "multus": multus_version})
}

fn write_doc(doc: &Value) {
    // target/bench: this bench executable is target/release/deps/add_del-….
    let out_dir = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .join("bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(
        out_dir.join("add_del.json"),
        serde_json::to_string_pretty(doc).unwrap(),
    )
    .unwrap();
    println!("written: {}", out_dir.join("add_del.json").display());
}

// ---- the floor -------------------------------------------------------------------------------------------------

/// Compiles a C program statically (`gcc -O2 -static`) into `work/<name>`.
fn gcc_static(work: &Path, name: &str, source: &str) -> PathBuf {
    let c = work.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let binary = work.join(name);
    sh(&[
        "gcc",
        "-O2",
        "-static",
        "-o",
        &binary.display().to_string(),
        &c.display().to_string(),
    ]);
    binary
}

/// What any thick design pays per ADD: one exec of a trivial static binary (the shim's least cost) and one PATCH on
/// a kept-alive connection (the network-status write).
struct FloorProbe {
    binary: PathBuf,
    runtime: tokio::runtime::Runtime,
    pods: kube::Api<k8s_openapi::api::core::v1::Pod>,
    patches: usize,
}

impl FloorProbe {
    fn new(work: &Path, cluster: &PrivateCluster) -> Self {
        let binary = gcc_static(work, "floor-static", "int main(void) { return 0; }\n");
        cluster.kubectl(&["create", "namespace", "floor"], "");
        cluster.kubectl(
            &["apply", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "floor", "namespace": "floor"},
                    "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}})
            .to_string(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let kubeconfig = cluster.kubeconfig.clone();
        let pods = runtime.block_on(async move {
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .unwrap();
            kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "floor")
        });
        Self {
            binary,
            runtime,
            pods,
            patches: 0,
        }
    }

    fn exec(&self) -> Duration {
        let start = Instant::now();
        let status = Command::new(&self.binary)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        start.elapsed()
    }

    /// One PATCH of the pod's network-status annotation (a new value each time, so the API server writes).
    fn patch(&mut self) -> Duration {
        use kube::api::{Patch, PatchParams};
        self.patches += 1;
        let patch = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status":
            format!("[{{\"name\":\"n{}\"}}]", self.patches)}}});
        let start = Instant::now();
        self.runtime
            .block_on(
                self.pods
                    .patch("floor", &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .unwrap();
        start.elapsed()
    }
}

/// The floor back to back: medians of 200 execs and of 100 PATCHes, one right after the other (a warm API server:
/// a lower bound, which a real ADD's PATCH, coming after its delegates ran, does not see).
fn measure_floor(probe: &mut FloorProbe) -> Value {
    let mut execs: Vec<Duration> = (0..220).map(|_| probe.exec()).skip(20).collect();
    let mut patches: Vec<Duration> = (0..110).map(|_| probe.patch()).skip(10).collect();
    execs.sort();
    patches.sort();
    let median = |v: &[Duration]| ms(v[v.len() / 2]);
    let (exec_ms, patch_ms) = (median(&execs), median(&patches));
    println!(
        "floor back to back: exec of a trivial static binary {exec_ms:.2} ms (median of {}) + one PATCH on a \
         kept-alive connection {patch_ms:.2} ms (median of {}) = {:.2} ms",
        execs.len(),
        patches.len(),
        exec_ms + patch_ms
    );
    json!({"exec_static_ms": exec_ms, "patch_kept_alive_ms": patch_ms, "floor_ms": exec_ms + patch_ms})
}

/// The floor inside the interleaved run, as a thick ADD meets it: after the same pause as every mode, the exec of
/// the static binary, then the CPU kept busy (not timed) for as long as this round's bare ADD took (the
/// delegates' run, during which the API server idles), then the PATCH. Medians of exec, PATCH and their sum.
fn floor_in_run(samples: &[(Duration, Duration)]) -> Value {
    let (exec, patch, sum) = (
        stats(samples.iter().map(|s| s.0).collect()).0,
        stats(samples.iter().map(|s| s.1).collect()).0,
        stats(samples.iter().map(|s| s.0 + s.1).collect()).0,
    );
    println!(
        "\nfloor of a thick ADD, in the interleaved run: exec of a trivial static binary {exec:.2} ms + one PATCH on a \
         kept-alive connection after a bare ADD's time {patch:.2} ms: {sum:.2} ms (median of the sums, {} rounds)",
        samples.len()
    );
    json!({"exec_static_ms": exec, "patch_kept_alive_ms": patch, "floor_ms": sum})
}

/// The thick ADD targets, estimated round by round: in round `i`, plexus-thick's ADD overhead is its ADD minus
/// the same round's bare ADD, and its excess over the floor is that minus the round's floor (exec + PATCH). The
/// medians of those paired values come with a 90% bootstrap interval (2,000 resamplings of the rounds), so that a
/// run says whether it meets a target, misses it, or cannot tell: the delegates' own spread (bare ADD's p90 is
/// often 10 ms over its median here) is far larger than the 1 ms the floor target allows, and the difference of
/// two medians carries it whole.
fn paired_targets(samples: &BTreeMap<&str, ModeSamples>, floor: &[(Duration, Duration)]) -> Value {
    let (Some(bare), Some(thick)) = (samples.get("bare"), samples.get("plexus-thick")) else {
        return Value::Null;
    };
    let overhead = |mode: &ModeSamples| -> Vec<f64> {
        mode.add
            .iter()
            .zip(&bare.add)
            .map(|(m, b)| ms(m.took) - ms(b.took))
            .collect()
    };
    let thick_over = overhead(thick);
    if thick_over.is_empty() || floor.len() != thick_over.len() {
        return Value::Null;
    }
    let mut doc = serde_json::Map::new();
    println!(
        "\nthick ADD targets, paired by round (median over the rounds, 90% bootstrap interval in brackets):"
    );
    let excess: Vec<f64> = thick_over
        .iter()
        .zip(floor)
        .map(|(o, (exec, patch))| o - ms(*exec + *patch))
        .collect();
    let (m, lo, hi) = bootstrap(&excess, 1, median);
    println!(
        "  plexus-thick ADD overhead over bare, minus the floor: {m:+.2} ms [{lo:+.2}, {hi:+.2}]; target <= +1 ms: {}",
        verdict(lo, hi, 1.0, excess.len())
    );
    doc.insert(
        "thick_excess_over_floor_ms".into(),
        json!({"median": m, "p5": lo, "p95": hi}),
    );
    if let Some(multus) = samples.get("multus-thick") {
        let multus_over = overhead(multus);
        let pairs: Vec<f64> = thick_over
            .iter()
            .zip(&multus_over)
            .flat_map(|(t, m)| [*t, *m])
            .collect();
        // Resampled by round: each round keeps its two overheads together.
        let (r, lo, hi) = bootstrap(&pairs, 2, |v| {
            let (t, m): (Vec<f64>, Vec<f64>) = v.chunks(2).map(|c| (c[0], c[1])).unzip();
            median(&t) / median(&m)
        });
        println!(
            "  plexus-thick / multus-thick ADD overhead over bare: {r:.2} [{lo:.2}, {hi:.2}]; target <= 0.33: {}",
            verdict(lo, hi, 1.0 / 3.0, thick_over.len())
        );
        doc.insert(
            "thick_over_multus_thick_overhead".into(),
            json!({"ratio": r, "p5": lo, "p95": hi}),
        );
    }
    Value::Object(doc)
}

/// Fewer rounds than this give no verdict: a bootstrap over a handful of values draws from a few distinct
/// resamples, and its interval is far narrower than the spread it should show (a run of 3 rounds gave [-1.40,
/// +0.71] ms, where run Q's 30 rounds had given [+2.71, +7.09]).
const VERDICT_ROUNDS: usize = 20;

/// Met (the whole interval at or under the target), missed (all of it over), or can't tell.
fn verdict(lo: f64, hi: f64, target: f64, rounds: usize) -> &'static str {
    if rounds < VERDICT_ROUNDS {
        "no verdict from fewer than 20 rounds"
    } else if hi <= target {
        "met"
    } else if lo > target {
        "missed"
    } else {
        "this run can't tell"
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `statistic` of `values` and its 5th and 95th percentiles over 2,000 resamplings of `values` with replacement,
/// `unit` values at a time (a round's values stay together). A fixed seed: the same run gives the same interval.
fn bootstrap(values: &[f64], unit: usize, statistic: impl Fn(&[f64]) -> f64) -> (f64, f64, f64) {
    let whole = statistic(values);
    let units = values.len() / unit;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut estimates: Vec<f64> = (0..2000)
        .map(|_| {
            let resample: Vec<f64> = (0..units)
                .flat_map(|_| {
                    let u = (next() % units as u64) as usize;
                    values[u * unit..(u + 1) * unit].to_vec()
                })
                .collect();
            statistic(&resample)
        })
        .collect();
    estimates.sort_by(f64::total_cmp);
    (whole, estimates[100], estimates[1899])
}

// ---- concurrency -----------------------------------------------------------------------------------------------

/// `count` sandboxes ADDed by `parallelism` workers, then DELeted the same way: (ADD wall time, DEL wall time,
/// leaks: interfaces and leases left after the DELs, failed calls). A failed call is reported and counted, not fatal.
fn concurrent_run(
    setup: &Setup,
    mode: &str,
    count: usize,
    parallelism: usize,
    lease_dir: &Path,
    uids: Option<&Vec<String>>,
    after_adds: impl FnOnce(),
) -> (Duration, Duration, usize, usize) {
    let namespace = format!("bench-c-{mode}");
    let netns: Vec<Netns> = (0..count).map(|_| Netns::new()).collect();
    let ids: Vec<String> = (0..count).map(|i| format!("conc-{mode}-{i}")).collect();
    let args: Vec<String> = (0..count)
        .map(|i| match uids {
            Some(u) => pod_args(&namespace, &format!("pod-{i}"), &u[i], &ids[i]),
            None => String::new(),
        })
        .collect();
    // bare keeps each sandbox's results for its DEL.
    let bare_results: Vec<Mutex<Vec<Option<Value>>>> =
        (0..count).map(|_| Mutex::new(Vec::new())).collect();
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let run = |command: CniCommand| {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..parallelism {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        let path = netns[i].path();
                        if mode == "bare" {
                            bare_one(setup, command, &ids[i], &path, &bare_results[i]);
                        } else {
                            let binary = setup.binary(mode);
                            if let Err(e) = try_exec(
                                None,
                                binary,
                                command.as_str(),
                                &ids[i],
                                &path,
                                &setup.plugins,
                                &args[i],
                                &setup.configs[mode],
                            ) {
                                eprintln!("{mode}: {e}");
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        start.elapsed()
    };
    let add = run(CniCommand::Add);
    after_adds();
    let del = run(CniCommand::Del);
    let leaks = netns.iter().map(|n| n.link_names().len()).sum::<usize>() + leases(lease_dir).len();
    (add, del, leaks, failed.into_inner())
}

/// One sandbox's three delegates, ADD in order or DEL in reverse, as [`bare`] does.
fn bare_one(
    setup: &Setup,
    command: CniCommand,
    id: &str,
    netns: &str,
    results: &Mutex<Vec<Option<Value>>>,
) {
    let dirs = [setup.plugins.clone()];
    let mut kept = results.lock().unwrap();
    if command == CniCommand::Add {
        *kept = bare_add(&setup.lists, &dirs, id, netns);
    } else {
        bare_del(&setup.lists, &dirs, id, netns, &kept);
    }
}

// ---- scale -----------------------------------------------------------------------------------------------------

/// 1,000 NADs and 10,000 pods (100 node names, the daemons' node among them) created in the API server; then each
/// running daemon's RSS, and each daemon restarted: time until ready (caches synced) and RSS then.
fn scale_run(
    cluster: &PrivateCluster,
    daemons: &mut BTreeMap<&'static str, Daemon>,
    start_daemons: impl Fn(&mut BTreeMap<&'static str, Daemon>),
) -> Value {
    const NADS: usize = 1000;
    const PODS: usize = 10_000;
    const NODES: usize = 100;
    let ns = "scale";
    // The controller would reconcile every pod meanwhile; its webhook is off for this namespace.
    cluster.kubectl(&["create", "namespace", ns], "");
    cluster.kubectl(&["label", "namespace", ns, "plexus/admission=off"], "");
    let kubeconfig = cluster.kubeconfig.clone();
    let started = Instant::now();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            use futures::StreamExt;
            use k8s_openapi::api::core::v1::Pod;
            use kube::api::{Api, DynamicObject, PostParams};
            use kube::core::{ApiResource, GroupVersionKind};
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .unwrap();
            let client = kube::Client::try_from(config).unwrap();
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
                "network-attachment-definitions",
            );
            let nads: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
            futures::stream::iter(0..NADS)
                .for_each_concurrent(16, |i| {
                    let nads = nads.clone();
                    async move {
                        let config = json!({"cniVersion": "1.0.0", "name": format!("net-{i}"), "type": "macvlan",
                            "master": "eth1", "ipam": {"type": "host-local", "subnet": "198.19.0.0/24"}});
                        let object: DynamicObject =
                            serde_json::from_value(nad(ns, &format!("net-{i}"), &config)).unwrap();
                        nads.create(&PostParams::default(), &object).await.unwrap();
                    }
                })
                .await;
            let pods: Api<Pod> = Api::namespaced(client, ns);
            futures::stream::iter(0..PODS)
                .for_each_concurrent(16, |i| {
                    let pods = pods.clone();
                    async move {
                        let node = if i % NODES == 0 {
                            NODE.to_owned()
                        } else {
                            format!("scale-node-{}", i % NODES)
                        };
                        let mut object = bench_pod(ns, &format!("pod-{i}"), &node);
                        object["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] =
                            json!(format!("net-{}", i % NADS));
                        let object: Pod = serde_json::from_value(object).unwrap();
                        pods.create(&PostParams::default(), &object).await.unwrap();
                    }
                })
                .await;
        });
    let created = started.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    println!(
        "\nScale: {NADS} NADs and {PODS} pods over {NODES} node names created in {:.0} s ({} pods on {NODE})\n",
        created.as_secs_f64(),
        PODS / NODES
    );
    let mut rows = serde_json::Map::new();
    for (mode, d) in daemons.iter() {
        let (rss, hwm) = (d.rss_mib("VmRSS"), d.rss_mib("VmHWM"));
        println!(
            "{:<14} running through the creates: RSS {rss:.1} MiB (peak {hwm:.1} MiB)",
            d.name
        );
        rows.insert(
            (*mode).into(),
            json!({"running_rss_mib": rss, "running_peak_rss_mib": hwm}),
        );
    }
    daemons.clear();
    start_daemons(daemons);
    // Every restarted daemon is watched at once: each one's time is from its own start to the first poll that sees
    // it ready (one after the other, a daemon's wait would include the previous one's).
    let mut synced_at: BTreeMap<&'static str, Duration> = BTreeMap::new();
    while synced_at.len() < daemons.len() {
        for (mode, d) in daemons.iter_mut() {
            if !synced_at.contains_key(mode) && d.poll_ready(Duration::from_secs(300)) {
                synced_at.insert(*mode, d.started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(3));
    for (mode, d) in daemons.iter_mut() {
        let synced = synced_at[mode];
        let (rss, hwm) = (d.rss_mib("VmRSS"), d.rss_mib("VmHWM"));
        println!(
            "{:<14} restarted: ready (caches synced) {:.2} s after its start; RSS {rss:.1} MiB (peak {hwm:.1} MiB)",
            d.name,
            synced.as_secs_f64()
        );
        let row = rows.get_mut(*mode).unwrap();
        row["restart_sync_s"] = json!(synced.as_secs_f64());
        row["restart_rss_mib"] = json!(rss);
        row["restart_peak_rss_mib"] = json!(hwm);
    }
    json!({"nads": NADS, "pods": PODS, "nodes": NODES, "create_s": created.as_secs_f64(), "daemons": rows})
}
