//! ADD + DEL of one sandbox with three networks, measured seven ways in one interleaved run:
//!
//! * `bare`          — the three delegates run directly, as a runtime runs a conflist (the floor);
//! * `plexus`        — the release `plexus` binary, static mode (`delegates`);
//! * `multus`        — Multus (thin plugin, built from source at the pinned version), static mode, same delegates;
//! * `plexus-k8s`    — `plexus` in Kubernetes mode: the pod + 3 NADs read from a real kube-apiserver, network-status
//!   written back, one event per network;
//! * `multus-k8s`    — Multus in Kubernetes mode against the same API server, same pod shape and NADs;
//! * `plexus-thick`  — `plexus-shim` (`daemonSocketDir`) in front of `plexus-daemon` (watch caches);
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
//! metrics say where a thick request's time goes; the floor is also measured back to back, and the shim alone
//! (`plexus-shim` and `plexus` against a socket that answers at once, beside the floor's trivial exec).
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

mod audit;
mod calls;
mod concurrency;
mod daemons;
mod floor;
mod hollow;
mod hollow_api;
mod hollow_lag;
mod hollow_model;
mod report;
mod scale;
mod shim_alone;

use audit::*;
use calls::*;
use concurrency::*;
use daemons::*;
use floor::*;
use hollow::*;
use report::*;
use scale::*;
use shim_alone::*;

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

/// One plugin call: how long it took, the CPU of the process the bench exec'd (user + system; zero for the bare
/// delegates, which the bench runs itself; only for calls made one at a time) and its peak RSS (KiB; 0 when not a process of its own).
#[derive(Debug, Clone, Copy, Default)]
struct Call {
    took: Duration,
    cpu: Duration,
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
    /// Thick modes: the daemon's CPU from each ADD's start to its DEL's start (the reply included; its events, which
    /// plexus-daemon holds back while a request is in flight, and the watch events its PATCH causes mostly not; not
    /// its delegates, which are other processes).
    daemon_cpu_add: Vec<Duration>,
    api_add: Requests,
    api_del: Requests,
}

/// Everything a mode needs to run one sandbox.
struct Setup {
    plugins: PathBuf,
    release: PathBuf,
    /// Thick mode's plugin, `plexus-shim`, built beside `release`.
    release_shim: PathBuf,
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
            "plexus" | "plexus-k8s" => &self.release,
            "plexus-thick" => &self.release_shim,
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
                        cpu: Duration::ZERO,
                        maxrss_kib: 0,
                    },
                    Call {
                        took: del,
                        cpu: Duration::ZERO,
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
    // The scale model again from a saved run (its tables and plots), with no run.
    if let Some(saved) = std::env::var_os("BENCH_HOLLOW_FROM") {
        let mut result: Value =
            serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
        result["model"] = hollow_model::model(&result, &bench_dir());
        std::fs::write(&saved, serde_json::to_string_pretty(&result).unwrap()).unwrap();
        return;
    }
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
    if std::env::var("BENCH_SECTION").as_deref() == Ok("hollow") {
        let mut result = hollow_run(&HollowSetup {
            cluster: &cluster,
            apiserver: &apiserver,
            work: work.path(),
            plugins: &plugins,
            plexus: &release,
            plexus_daemon: &daemon_bin,
            multus_shim: &multus_thick_dir.join("multus-shim"),
            multus_daemon: &multus_thick_dir.join("multus-daemon"),
        });
        result["model"] = hollow_model::model(&result, &bench_dir());
        write_json("hollow.json", &result);
        return;
    }
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
        json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus-shim", "daemonSocketDir": plexus_socket}),
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
        release_shim: release.with_file_name("plexus-shim"),
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
                    &multus_credentials(&cluster, work.path()),
                    &apiserver,
                    NODE,
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
            let daemon_pid = daemons.get(mode).map(|d| d.child.id());
            let daemon_cpu = || daemon_pid.and_then(process_cpu_clock);
            let cpu_before = daemon_cpu();
            let mut cpu_middle = None;
            let (add, del) = setup.add_del(mode, &id, &ns.path(), pod, || {
                cpu_middle = daemon_cpu();
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
                if let (Some(a), Some(b)) = (cpu_before, cpu_middle) {
                    s.daemon_cpu_add.push(b.saturating_sub(a));
                }
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
    // The shim alone, apart from daemon, delegates and API server (thick mode's exec and socket).
    doc["shim_alone"] = shim_alone(
        work.path(),
        &setup.release,
        &setup.release_shim,
        &floor.binary,
    );
    // Per warm thick ADD: the CPU of the shim and of its daemon, beyond the trivial exec.
    doc["thick_add_cpu"] = thick_cpu_report(
        &samples,
        doc["shim_alone"]["trivial static exec"]["cpu_ms"]
            .as_f64()
            .unwrap_or_default(),
    );

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
            release_shim: setup.release_shim.clone(),
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
