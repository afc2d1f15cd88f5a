//! Hollow nodes (`scripts/bench scale`): N node daemons on one control plane, each with a node name, socket,
//! records dir and metrics port of its own and no kubelet, for N in `BENCH_HOLLOW_NODES` (default "10 50 100"), first
//! N `plexus-daemon`s, then N `multus-daemon`s (the pinned Multus), against the same API objects: `BENCH_HOLLOW_NADS`
//! NADs (default 1,000) and `BENCH_HOLLOW_PODS` pods per node (default 110, the kubelet's default maximum). For each
//! kind and N:
//!
//! * **start**: all N started at once, the time until each and all are ready (caches synced), the API server's CPU
//!   and the daemons' requests (from the audit log) meanwhile;
//! * **steady**: each daemon's RSS, the API server's RSS and its open watches;
//! * **churn** (`BENCH_HOLLOW_CHURN_S`, default 60 s): pods created on the N nodes at 10% of their pods per minute
//!   (each deleted a minute after its creation), a NAD changed every 2 s, and an ADD + DEL (the cluster network
//!   only: ptp + host-local, in a netns of its own) through three daemons' sockets every second: CPU of the API
//!   server and of the daemons per pod change, ADD latency and failures;
//! * **rolling restart**: each daemon stopped (SIGTERM), an ADD sent to its socket while it is down, the daemon
//!   started again; the next one once it is ready: how long it took, how long each ADD waited, failures;
//! * **all at once**: every daemon stopped, an ADD sent to ten of them, all started again: the time until all are
//!   ready, the ADDs' waits, failures, the API server's CPU and requests meanwhile.
//!
//! Before the daemons, the same churn with no daemon gives the API server's own cost of the churn, which the rows'
//! per-daemon costs are taken net of. In each churn, plexus-controller (in the control plane, its webhooks on for the
//! bench's namespace) is measured too: its RSS and CPU, and its webhooks' calls and mean time as the API server saw
//! them. Writes target/bench/hollow.json.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::hollow_api::*;

/// What the hollow run needs from the bench's setup.
pub(crate) struct HollowSetup<'a> {
    pub(crate) cluster: &'a PrivateCluster,
    pub(crate) apiserver: &'a str,
    pub(crate) work: &'a Path,
    pub(crate) plugins: &'a Path,
    pub(crate) plexus: &'a Path,
    pub(crate) plexus_daemon: &'a Path,
    pub(crate) multus_shim: &'a Path,
    pub(crate) multus_daemon: &'a Path,
}

const KINDS: [&str; 2] = ["plexus", "multus"];

/// One kind's daemons on nodes 0..N, with everything needed to start each again and to send it an ADD.
struct Fleet<'a> {
    kind: &'static str,
    setup: &'a HollowSetup<'a>,
    credentials: PathBuf,
    primary: Value,
    daemons: Vec<Option<Daemon>>,
    dirs: Vec<PathBuf>,
    ports: Vec<u16>,
}

impl<'a> Fleet<'a> {
    fn new(kind: &'static str, setup: &'a HollowSetup<'a>, n: usize, primary: &Value) -> Self {
        let root = setup.work.join(format!("{kind}-{n}"));
        let dirs = (0..n).map(|i| root.join(format!("node-{i}"))).collect();
        Self {
            kind,
            setup,
            credentials: multus_credentials(setup.cluster, setup.work),
            primary: primary.clone(),
            daemons: (0..n).map(|_| None).collect(),
            dirs,
            ports: quiet_ports(n),
        }
    }

    fn socket_dir(&self, i: usize) -> PathBuf {
        self.dirs[i].join("run")
    }

    fn start(&mut self, i: usize) {
        let dir = &self.dirs[i];
        std::fs::create_dir_all(dir).unwrap();
        let s = self.setup;
        let common = json!({"cniVersion": "1.0.0", "binDir": s.plugins, "clusterNetwork": "hollow-net",
                            "multusNamespace": "bench-system", "cniDir": dir.join("cni")});
        let daemon = match self.kind {
            "plexus" => {
                let mut config = common;
                for (k, v) in [
                    ("kubeconfig", json!(s.cluster.kubeconfig)),
                    ("logLevel", json!("error")),
                    ("daemonSocketDir", json!(self.socket_dir(i))),
                    ("nodeName", json!(node_name(i))),
                    (
                        "metricsAddress",
                        json!(format!("127.0.0.1:{}", self.ports[i])),
                    ),
                ] {
                    config[k] = v;
                }
                Daemon::plexus(s.plexus_daemon, dir, &config)
            }
            _ => {
                let mut config = common;
                for (k, v) in [
                    ("logLevel", json!("panic")),
                    ("logFile", json!(dir.join("multus-daemon.log"))),
                    ("socketDir", json!(self.socket_dir(i))),
                    ("cniConfigDir", json!(dir.join("conf"))),
                    ("multusAutoconfigDir", json!(dir.join("conf"))),
                    ("multusConfigFile", json!("auto")),
                ] {
                    config[k] = v;
                }
                Daemon::multus(
                    s.multus_daemon,
                    dir,
                    &config,
                    &self.primary,
                    &self.credentials,
                    s.apiserver,
                    &node_name(i),
                )
            }
        };
        self.daemons[i] = Some(daemon);
    }

    /// Stops daemon `i` (SIGTERM, then SIGKILL after 10 s) and waits for its exit.
    fn stop(&mut self, i: usize) {
        self.daemons[i] = None;
    }

    /// Waits until every running daemon is ready; each one's time from its own start.
    fn wait_all_ready(&mut self) -> Vec<f64> {
        let mut ready: BTreeMap<usize, f64> = BTreeMap::new();
        let running = self.daemons.iter().filter(|d| d.is_some()).count();
        while ready.len() < running {
            for (i, d) in self.daemons.iter_mut().enumerate() {
                if let Some(d) = d
                    && !ready.contains_key(&i)
                    && d.poll_ready(Duration::from_secs(600))
                {
                    ready.insert(i, d.started.elapsed().as_secs_f64());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ready.into_values().collect()
    }

    /// RSS (MiB) and CPU seconds of each running daemon.
    fn usage(&self) -> (Vec<f64>, f64) {
        let live = self.daemons.iter().flatten();
        (
            live.clone().map(|d| d.rss_mib("VmRSS")).collect(),
            live.map(|d| d.cpu_s().0).sum(),
        )
    }

    /// One ADD then one DEL of pod `add-<i>` (`uid`) to daemon `i`'s socket through the kind's shim, to run on
    /// another thread; the ADD's time, or the failure.
    fn adder(&self, i: usize, uid: &str) -> impl Fn() -> Result<Duration, String> + Send + 'static {
        let socket_dir = self.socket_dir(i);
        let (binary, config) = match self.kind {
            "plexus" => (
                self.setup.plexus.with_file_name("plexus-shim"),
                json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus-shim",
                       "daemonSocketDir": socket_dir}),
            ),
            _ => (
                self.setup.multus_shim.to_owned(),
                json!({"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim",
                       "daemonSocketDir": socket_dir, "logLevel": "panic",
                       "logFile": self.dirs[i].join("multus-shim.log")}),
            ),
        };
        let plugins = self.setup.plugins.to_owned();
        let pod = format!("add-{i}");
        let uid = uid.to_owned();
        move || one_add(&binary, &config, &plugins, &pod, &uid)
    }
}

/// `n` ports nothing listens on, below the kernel's ephemeral range (32768 and up), so that none is taken by an
/// outgoing connection between now and the daemon's bind (as `e2e/cluster` picks its own, between 20000 and 31999).
fn quiet_ports(n: usize) -> Vec<u16> {
    (28000..32000)
        .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .take(n)
        .collect()
}

/// Times (ms) and failures of a set of ADDs.
#[derive(Default)]
struct Adds {
    took_ms: Vec<f64>,
    failures: Vec<String>,
}

impl Adds {
    fn record(&mut self, outcome: Result<Duration, String>) {
        match outcome {
            Ok(took) => self.took_ms.push(ms(took)),
            Err(e) => self.failures.push(e),
        }
    }

    fn summary(&self) -> Value {
        let at = |q: f64| (!self.took_ms.is_empty()).then(|| quantile(&self.took_ms, q));
        json!({"adds": self.took_ms.len() + self.failures.len(), "failed": self.failures.len(),
               "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0),
               "first_failures": self.failures.iter().take(3).collect::<Vec<_>>()})
    }
}

pub(crate) fn hollow_run(setup: &HollowSetup) -> Value {
    let sizes: Vec<usize> = std::env::var("BENCH_HOLLOW_NODES")
        .unwrap_or_else(|_| "10 50 100".into())
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let nads = env_usize("BENCH_HOLLOW_NADS", 1000).max(1);
    let pods = env_usize("BENCH_HOLLOW_PODS", 110);
    let churn_s = env_usize("BENCH_HOLLOW_CHURN_S", 60) as f64;
    let max_n = sizes.iter().copied().max().unwrap_or(0);
    let cluster = setup.cluster;
    let kubeconfig = &cluster.kubeconfig;

    // The API objects: the cluster network's NAD, K NADs and P pods on each of the largest run's nodes, and one
    // pod per node for the ADDs (the cluster network only).
    let (subnet, _) = subnet();
    let data = setup.work.join("ipam");
    let primary = json!({"cniVersion": "1.0.0", "name": "hollow-net", "plugins": [
        {"type": "ptp", "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data}}]});
    cluster.kubectl(&["create", "namespace", "bench-system"], "");
    cluster.kubectl(
        &["apply", "-f", "-"],
        &nad("bench-system", "hollow-net", &primary).to_string(),
    );
    // plexus-controller's webhooks review the namespace's NADs and pods, as in a cluster that runs it.
    cluster.kubectl(&["create", "namespace", NS], "");
    let started = Instant::now();
    apply_all(
        kubeconfig,
        (0..nads)
            .map(|i| nad(NS, &format!("net-{i}"), &nad_config(i, 0)))
            .collect(),
    );
    let mut objects: Vec<Value> = (0..max_n)
        .flat_map(|i| {
            (0..pods).map(move |j| {
                pod(
                    &format!("pod-{i}-{j}"),
                    &node_name(i),
                    Some(&format!("net-{}", (i * pods + j) % nads)),
                )
            })
        })
        .collect();
    objects.extend((0..max_n).map(|i| pod(&format!("add-{i}"), &node_name(i), None)));
    apply_all(kubeconfig, objects);
    let uids: Vec<String> = (0..max_n)
        .map(|i| uid(cluster, &format!("add-{i}")))
        .collect();
    println!(
        "\nHollow nodes: {nads} NADs, {pods} pods on each of {max_n} nodes (+1 for ADDs), created in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // The churn's own cost, with no daemon.
    let before = api_server(cluster);
    let controller_before = controller(cluster);
    let base_churn = churn(kubeconfig, max_n, pods, nads, churn_s, "base");
    let (changes, nad_changes) = (base_churn.pod_changes, base_churn.nad_changes);
    let after = api_server(cluster);
    let mut base_controller =
        controller_window((before, controller_before), (after, controller(cluster)));
    base_controller["reconcile_lag"] = base_churn.reconcile_lag;
    println!("plexus-controller during the churn with no daemon: {base_controller}");
    let base_cpu_per_change_ms = (after.cpu_s - before.cpu_s) * 1000.0 / changes.max(1) as f64;
    println!(
        "churn with no daemon ({max_n} nodes' rate): {changes} pod changes, {nad_changes} NAD changes in {churn_s:.0} s; \
         API server {:.1} CPU-s ({base_cpu_per_change_ms:.2} ms per pod change), RSS {:.0} MiB, {} watches",
        after.cpu_s - before.cpu_s,
        after.rss_mib,
        after.watches
    );
    let baseline = json!({"nodes_rate": max_n, "pod_changes": changes, "nad_changes": nad_changes,
        "apiserver_cpu_s": after.cpu_s - before.cpu_s, "apiserver_rss_mib": after.rss_mib,
        "apiserver_watches": after.watches, "apiserver_cpu_ms_per_pod_change": base_cpu_per_change_ms,
        "controller": base_controller});

    let mut rows = Vec::new();
    for &n in &sizes {
        for kind in KINDS {
            let row = fleet_run(
                setup, kind, n, pods, nads, churn_s, &primary, &uids, &baseline,
            );
            rows.push(row);
        }
    }
    print_table(&rows);
    json!({"nads": nads, "pods_per_node": pods, "churn_s": churn_s, "baseline": baseline, "rows": rows})
}

#[allow(clippy::too_many_arguments)]
fn fleet_run(
    setup: &HollowSetup,
    kind: &'static str,
    n: usize,
    pods: usize,
    nads: usize,
    churn_s: f64,
    primary: &Value,
    uids: &[String],
    baseline: &Value,
) -> Value {
    let cluster = setup.cluster;
    let mut fleet = Fleet::new(kind, setup, n, primary);
    let mut audit = Audit::new(cluster);
    let idle = api_server(cluster);

    // Start: all at once.
    let started = Instant::now();
    for i in 0..n {
        fleet.start(i);
    }
    let ready = fleet.wait_all_ready();
    let all_ready = started.elapsed().as_secs_f64();
    let at_ready = api_server(cluster);
    let start_requests = audit.requests(kind);
    std::thread::sleep(Duration::from_secs(5));
    let steady = api_server(cluster);
    let (rss, _) = fleet.usage();
    let rss_mean = rss.iter().sum::<f64>() / rss.len().max(1) as f64;
    println!(
        "\n{kind} × {n}: all ready {all_ready:.2} s after the start (each: p50 {:.2} s, max {:.2} s); API server {:.1} \
         CPU-s meanwhile; requests {start_requests:?}; RSS per daemon {rss_mean:.1} MiB (max {:.1}); API server RSS \
         {:.0} MiB, {} watches (+{} with no daemon)",
        quantile(&ready, 0.5),
        quantile(&ready, 1.0),
        at_ready.cpu_s - idle.cpu_s,
        quantile(&rss, 1.0),
        steady.rss_mib,
        steady.watches,
        steady.watches - idle.watches,
    );

    // Churn, with ADDs through three daemons.
    let (_, cpu_before) = fleet.usage();
    let before = api_server(cluster);
    let controller_before = controller(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let add_thread = {
        let stop = stop.clone();
        let calls: Vec<_> = (0..n.min(3)).map(|i| fleet.adder(i, &uids[i])).collect();
        std::thread::spawn(move || {
            let mut adds = Adds::default();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                if !calls.is_empty() {
                    adds.record(calls[k % calls.len()]());
                    k += 1;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            adds
        })
    };
    let Churn {
        pod_changes: changes,
        nad_changes,
        reconcile_lag,
    } = churn(
        &cluster.kubeconfig,
        n,
        pods,
        nads,
        churn_s,
        &format!("{kind}-{n}"),
    );
    stop.store(true, Ordering::Relaxed);
    let churn_adds = add_thread.join().unwrap();
    let after = api_server(cluster);
    let mut churn_controller =
        controller_window((before, controller_before), (after, controller(cluster)));
    churn_controller["reconcile_lag"] = reconcile_lag;
    let (_, cpu_after) = fleet.usage();
    let churn_requests = audit.requests(kind);
    let api_cpu = after.cpu_s - before.cpu_s;
    let base_cpu = baseline["apiserver_cpu_ms_per_pod_change"]
        .as_f64()
        .unwrap()
        * changes as f64
        / 1000.0;
    let daemon_cpu = cpu_after - cpu_before;
    println!(
        "{kind} × {n} churn: {changes} pod changes, {nad_changes} NAD changes in {churn_s:.0} s; API server {api_cpu:.1} \
         CPU-s (with no daemon, about {base_cpu:.1}); daemons {daemon_cpu:.1} CPU-s ({:.3} ms per pod change per \
         daemon); requests {churn_requests:?}; ADDs {}",
        daemon_cpu * 1000.0 / (changes.max(1) * n) as f64,
        churn_adds.summary()
    );
    println!("{kind} × {n} churn: plexus-controller {churn_controller}");

    // Rolling restart: each daemon in turn, with an ADD sent while it is down.
    let before = api_server(cluster);
    let started = Instant::now();
    let mut rolling_adds = Adds::default();
    let mut rolling_ready = Vec::new();
    for (i, uid) in uids.iter().enumerate().take(n) {
        fleet.stop(i);
        let add = std::thread::spawn(fleet.adder(i, uid));
        fleet.start(i);
        let d = fleet.daemons[i].as_mut().unwrap();
        rolling_ready.push(d.wait_ready(Duration::from_secs(600)).as_secs_f64());
        rolling_adds.record(add.join().unwrap());
    }
    let rolling_s = started.elapsed().as_secs_f64();
    let after = api_server(cluster);
    let rolling_requests = audit.requests(kind);
    println!(
        "{kind} × {n} rolling restart: {rolling_s:.1} s; each ready p50 {:.2} s, max {:.2} s after its start; API \
         server {:.1} CPU-s; requests {rolling_requests:?}; ADDs sent while down: {}",
        quantile(&rolling_ready, 0.5),
        quantile(&rolling_ready, 1.0),
        after.cpu_s - before.cpu_s,
        rolling_adds.summary()
    );
    let rolling = json!({"total_s": rolling_s, "ready_p50_s": quantile(&rolling_ready, 0.5),
        "ready_max_s": quantile(&rolling_ready, 1.0), "apiserver_cpu_s": after.cpu_s - before.cpu_s,
        "requests": rolling_requests, "adds": rolling_adds.summary()});

    // All at once.
    let before = api_server(cluster);
    for i in 0..n {
        fleet.stop(i);
    }
    let waiting: Vec<_> = (0..n.min(10))
        .map(|i| std::thread::spawn(fleet.adder(i, &uids[i])))
        .collect();
    let started = Instant::now();
    for i in 0..n {
        fleet.start(i);
    }
    let ready_again = fleet.wait_all_ready();
    let all_again = started.elapsed().as_secs_f64();
    let mut at_once_adds = Adds::default();
    for add in waiting {
        at_once_adds.record(add.join().unwrap());
    }
    let after = api_server(cluster);
    let at_once_requests = audit.requests(kind);
    println!(
        "{kind} × {n} all restarted at once: all ready {all_again:.2} s after (each p50 {:.2} s); API server {:.1} \
         CPU-s; requests {at_once_requests:?}; ADDs sent while down: {}",
        quantile(&ready_again, 0.5),
        after.cpu_s - before.cpu_s,
        at_once_adds.summary()
    );
    let (rss_after, _) = fleet.usage();
    drop(fleet);
    json!({"kind": kind, "nodes": n,
        "start": {"all_ready_s": all_ready, "ready_p50_s": quantile(&ready, 0.5), "ready_max_s": quantile(&ready, 1.0),
                  "apiserver_cpu_s": at_ready.cpu_s - idle.cpu_s, "requests": start_requests},
        "steady": {"daemon_rss_mean_mib": rss_mean, "daemon_rss_max_mib": quantile(&rss, 1.0),
                   "apiserver_rss_mib": steady.rss_mib, "apiserver_watches": steady.watches,
                   "watches_added": steady.watches - idle.watches},
        "churn": {"seconds": churn_s, "pod_changes": changes, "nad_changes": nad_changes,
                  "apiserver_cpu_s": api_cpu, "apiserver_cpu_s_without_daemons": base_cpu,
                  "daemons_cpu_s": daemon_cpu, "requests": churn_requests, "adds": churn_adds.summary(),
                  "controller": churn_controller},
        "rolling_restart": rolling,
        "all_at_once": {"all_ready_s": all_again, "ready_p50_s": quantile(&ready_again, 0.5),
                        "apiserver_cpu_s": after.cpu_s - before.cpu_s, "requests": at_once_requests,
                        "adds": at_once_adds.summary(),
                        "daemon_rss_mean_mib": rss_after.iter().sum::<f64>() / rss_after.len().max(1) as f64}})
}

/// One ADD then one DEL of `pod` (the cluster network only) in a netns of its own; the ADD's time.
fn one_add(
    binary: &Path,
    config: &Value,
    plugins: &Path,
    pod: &str,
    uid: &str,
) -> Result<Duration, String> {
    let netns = Netns::new();
    let id = unique("hollow");
    let args = pod_args(NS, pod, uid, &id);
    let add = try_exec(
        None,
        binary,
        "ADD",
        &id,
        &netns.path(),
        plugins,
        &args,
        config,
    );
    let del = try_exec(
        None,
        binary,
        "DEL",
        &id,
        &netns.path(),
        plugins,
        &args,
        config,
    );
    let add = add?;
    del.map_err(|e| format!("DEL: {e}"))?;
    Ok(add.took)
}

fn print_table(rows: &[Value]) {
    println!(
        "\nHollow nodes, side by side (per daemon: RSS; start: all ready; churn: daemons' CPU per pod change per \
         daemon; rolling: whole restart, ADDs that waited p50/max, failed)\n"
    );
    println!(
        "{:<8} {:>5} {:>9} {:>9} {:>10} {:>12} {:>10} {:>14} {:>8}",
        "daemon",
        "nodes",
        "RSS MiB",
        "ready s",
        "watches+",
        "CPU ms/chg",
        "rolling s",
        "ADD wait ms",
        "failed"
    );
    for r in rows {
        let n = r["nodes"].as_f64().unwrap();
        let churn = &r["churn"];
        let per_change = churn["daemons_cpu_s"].as_f64().unwrap() * 1000.0
            / (churn["pod_changes"].as_f64().unwrap().max(1.0) * n);
        let adds = &r["rolling_restart"]["adds"];
        let failed = adds["failed"].as_u64().unwrap()
            + churn["adds"]["failed"].as_u64().unwrap()
            + r["all_at_once"]["adds"]["failed"].as_u64().unwrap();
        println!(
            "{:<8} {:>5} {:>9.1} {:>9.2} {:>10.0} {:>12.3} {:>10.1} {:>6.0}/{:<7.0} {:>8}",
            r["kind"].as_str().unwrap(),
            n,
            r["steady"]["daemon_rss_mean_mib"].as_f64().unwrap(),
            r["start"]["all_ready_s"].as_f64().unwrap(),
            r["steady"]["watches_added"].as_f64().unwrap_or(0.0),
            per_change,
            r["rolling_restart"]["total_s"].as_f64().unwrap(),
            adds["p50_ms"].as_f64().unwrap_or(0.0),
            adds["max_ms"].as_f64().unwrap_or(0.0),
            failed,
        );
    }
}
