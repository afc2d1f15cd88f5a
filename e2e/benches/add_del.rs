//! ADD + DEL of one sandbox with three networks, measured five ways in one interleaved run:
//!
//! * `bare`          — the three delegates run directly, as a runtime runs a conflist (the floor);
//! * `plexus`        — the release `plexus` binary, static mode (`delegates`);
//! * `multus`        — Multus (thin plugin, built from source at the pinned version), static mode, same delegates;
//! * `plexus-k8s`    — `plexus` in Kubernetes mode: the pod + 3 NADs read from a real kube-apiserver, network-status
//!   written back, one event per network;
//! * `multus-k8s`    — Multus in Kubernetes mode against the same API server, same pod shape and NADs.
//!
//! The networks: bridge + host-local (the default), a macvlan + static + tuning conflist, ptp + host-local.
//! Every iteration uses a fresh netns and container id (made outside the timed region) and checks after DEL that no
//! interface or host-local lease is left. Round-robin order spreads drift over all modes. API requests per ADD and
//! per DEL come from the API server's audit log.
//!
//! Run: `scripts/bench` (builds everything, then `cargo bench -p plexus-e2e --bench add_del`).
//! `BENCH_ITERATIONS` (default 30) sets the measured rounds; 3 warm-up rounds come first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plexus_api::cni::NetworkConfigList;
use plexus_api::cni::config::RequestExtras;
use plexus_api::cni::result::CniResult;
use plexus_cni::invoke::{CniCommand, Invocation, invoke};
use plexus_e2e::{PrivateCluster, pod_args, repo, tool_bin};
use plexus_tests::*;
use serde_json::{Value, json};

const MODES: [&str; 5] = ["bare", "plexus", "multus", "plexus-k8s", "multus-k8s"];

fn main() {
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let warmup = 3;
    let release = plexus_release_bin();
    let plugins = plugins_dir();
    let multus = tool_bin("multus").join("multus");
    let cluster = PrivateCluster::up();

    let work = tempfile::tempdir().unwrap();
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
    let mv_net = json!({"cniVersion": "1.0.0", "name": "mv-net", "plugins": [
        {"type": "macvlan", "master": master.name, "mode": "bridge",
         "ipam": {"type": "static", "addresses": [{"address": format!("{p2}.5/24")}]}},
        {"type": "tuning", "mac": "0a:58:c6:12:00:05"}]});
    let p2p_net = json!({"cniVersion": "1.0.0", "name": "p2p-net", "plugins": [
        {"type": "ptp", "ipam": {"type": "host-local", "subnet": s3, "dataDir": data}}]});
    let delegates = [pod_net.clone(), mv_net.clone(), p2p_net.clone()];

    // The API objects: the default network's NAD in the "system" namespace, the two others in each pod namespace,
    // and one pod per timed iteration and mode, all made before timing starts.
    let total = warmup + iterations;
    cluster.kubectl(&["create", "namespace", "bench-system"], "");
    for ns in ["bench-plexus", "bench-multus"] {
        cluster.kubectl(&["create", "namespace", ns], "");
        let mut objects = vec![
            nad("bench-system", "pod-net", &pod_net),
            nad(ns, "mv-net", &mv_net),
            nad(ns, "p2p-net", &p2p_net),
        ];
        for i in 0..total {
            objects.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("pod-{i}"), "namespace": ns,
                             "annotations": {"k8s.v1.cni.cncf.io/networks": "mv-net,p2p-net"}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}}));
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        cluster.kubectl(&["apply", "-f", "-"], &list.to_string());
    }
    let uids = |ns: &str| -> Vec<String> {
        (0..total)
            .map(|i| {
                cluster.kubectl(
                    &[
                        "get",
                        "pod",
                        "-n",
                        ns,
                        &format!("pod-{i}"),
                        "-o",
                        "jsonpath={.metadata.uid}",
                    ],
                    "",
                )
            })
            .collect()
    };
    let plexus_uids = uids("bench-plexus");
    let multus_uids = uids("bench-multus");
    let mark = audit_lines(&cluster);

    let cni_dir = |name: &str| work.path().join(name);
    let static_plexus = json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "binDir": plugins,
        "cniDir": cni_dir("plexus"), "logLevel": "error", "delegates": delegates});
    let static_multus = json!({"cniVersion": "1.0.0", "name": "multus-net", "type": "multus", "binDir": plugins,
        "cniDir": cni_dir("multus"), "logFile": work.path().join("multus.log"), "logLevel": "panic",
        "delegates": delegates});
    let k8s_plexus = json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "binDir": plugins,
        "cniDir": cni_dir("plexus-k8s"), "logLevel": "error", "kubeconfig": cluster.kubeconfig,
        "clusterNetwork": "pod-net", "multusNamespace": "bench-system"});
    let k8s_multus = json!({"cniVersion": "1.0.0", "name": "multus-net", "type": "multus", "binDir": plugins,
        "cniDir": cni_dir("multus-k8s"), "logFile": work.path().join("multus-k8s.log"), "logLevel": "panic",
        "kubeconfig": cluster.kubeconfig, "clusterNetwork": "pod-net", "multusNamespace": "bench-system"});
    let lists: Vec<NetworkConfigList> = delegates
        .iter()
        .map(|d| NetworkConfigList::from_value(d.clone()).unwrap())
        .collect();

    let mut samples: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); MODES.len()];
    let mut api: Vec<(usize, usize)> = vec![(0, 0); MODES.len()];
    for round in 0..total {
        for (m, mode) in MODES.iter().enumerate() {
            let ns = Netns::new();
            let id = format!("bench-{m}-{round}");
            let netns = ns.path();
            let run = |command: &str, binary: &Path, config: &Value, args: &str| {
                exec(binary, command, &id, &netns, &plugins, args, config)
            };
            let before = api_requests(&cluster, mark);
            let (add, del) = match *mode {
                "bare" => bare(&lists, &plugins, &id, &netns),
                "plexus" => (
                    run("ADD", &release, &static_plexus, ""),
                    run("DEL", &release, &static_plexus, ""),
                ),
                "multus" => (
                    run("ADD", &multus, &static_multus, ""),
                    run("DEL", &multus, &static_multus, ""),
                ),
                "plexus-k8s" | "multus-k8s" => {
                    let (binary, config, ns, uids) = if *mode == "plexus-k8s" {
                        (&release, &k8s_plexus, "bench-plexus", &plexus_uids)
                    } else {
                        (&multus, &k8s_multus, "bench-multus", &multus_uids)
                    };
                    let args = pod_args(ns, &format!("pod-{round}"), &uids[round], &id);
                    let add = run("ADD", binary, config, &args);
                    let middle = api_requests(&cluster, mark);
                    let del = run("DEL", binary, config, &args);
                    if round >= warmup {
                        api[m].0 += middle - before;
                        api[m].1 += api_requests(&cluster, mark) - middle;
                    }
                    (add, del)
                }
                _ => unreachable!(),
            };
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
                samples[m].push((add, del));
            }
        }
    }

    report(&samples, &api, iterations);
}

/// Runs one CNI command of a plugin binary as a runtime does; panics (with its output) when it fails.
fn exec(
    binary: &Path,
    command: &str,
    id: &str,
    netns: &str,
    path: &Path,
    args: &str,
    config: &Value,
) -> Duration {
    let stdin = config.to_string();
    let start = Instant::now();
    let mut child = Command::new(binary)
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
    assert!(
        out.status.success(),
        "{} {command} failed: {}{}",
        binary.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The three delegates run directly: each conflist's plugins in order with prevResult chaining, then DEL in
/// reverse with the final result — what libcni does for a runtime.
fn bare(lists: &[NetworkConfigList], path: &Path, id: &str, netns: &str) -> (Duration, Duration) {
    let dirs = [path.to_path_buf()];
    let call = |list: &NetworkConfigList,
                i: usize,
                command: CniCommand,
                ifname: &str,
                prev: Option<&Value>| {
        let conf = list.request_config(
            i,
            "1.0.0",
            &RequestExtras {
                prev_result: prev,
                ..RequestExtras::default()
            },
        );
        let stdin = conf.to_string();
        let out = invoke(&Invocation {
            command,
            plugin: list.plugins[i].plugin_type(),
            container_id: id,
            netns,
            ifname,
            cni_args: "",
            path: &dirs,
            stdin: stdin.as_bytes(),
            timeout: Duration::from_secs(60),
        })
        .unwrap_or_else(|e| panic!("bare {command:?} {}: {e}", list.name));
        out.stdout
    };
    let ifname = |n: usize| {
        if n == 0 {
            "eth0".to_string()
        } else {
            format!("net{n}")
        }
    };
    let start = Instant::now();
    let mut results = Vec::new();
    for (n, list) in lists.iter().enumerate() {
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let stdout = call(list, i, CniCommand::Add, &ifname(n), prev.as_ref());
            prev = Some(
                CniResult::from_json(&stdout, "1.0.0")
                    .unwrap()
                    .to_value("1.0.0")
                    .unwrap(),
            );
        }
        results.push(prev);
    }
    let add = start.elapsed();
    let start = Instant::now();
    for (n, list) in lists.iter().enumerate().rev() {
        for i in (0..list.plugins.len()).rev() {
            call(list, i, CniCommand::Del, &ifname(n), results[n].as_ref());
        }
    }
    (add, start.elapsed())
}

fn nad(namespace: &str, name: &str, config: &Value) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"config": config.to_string()}})
}

/// target/release/plexus, next to this bench executable (target/release/deps/add_del-…).
fn plexus_release_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("plexus");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p plexus-cni` (scripts/bench does)",
        bin.display()
    );
    bin
}

/// API requests on the bench namespaces, not made by kubectl, completed after the first `skip` lines of the log.
fn api_requests(cluster: &PrivateCluster, skip: usize) -> usize {
    let text = std::fs::read_to_string(cluster.audit_log()).unwrap_or_default();
    text.lines()
        .skip(skip)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            let ns = e["objectRef"]["namespace"].as_str().unwrap_or_default();
            e["stage"] == "ResponseComplete"
                && ns.starts_with("bench-")
                && !e["userAgent"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("kubectl")
        })
        .count()
}

fn audit_lines(cluster: &PrivateCluster) -> usize {
    std::fs::read_to_string(cluster.audit_log())
        .unwrap_or_default()
        .lines()
        .count()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (median, p90, min) in ms.
fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.9), ms(v[0]))
}

fn report(samples: &[Vec<(Duration, Duration)>], api: &[(usize, usize)], iterations: usize) {
    println!(
        "\nADD + DEL of a sandbox with three networks; {iterations} interleaved rounds per mode; milliseconds\n"
    );
    println!(
        "{:<11} {:>8} {:>8} {:>8} | {:>8} {:>8} | {:>9} {:>8} {:>8} | {:>7} {:>7}",
        "mode",
        "ADD med",
        "ADD p90",
        "ADD min",
        "DEL med",
        "DEL p90",
        "A+D med",
        "A+D p90",
        "A+D min",
        "API/ADD",
        "API/DEL"
    );
    let mut json_modes = serde_json::Map::new();
    let mut medians = Vec::new();
    for (m, mode) in MODES.iter().enumerate() {
        let add = stats(samples[m].iter().map(|s| s.0).collect());
        let del = stats(samples[m].iter().map(|s| s.1).collect());
        let both = stats(samples[m].iter().map(|s| s.0 + s.1).collect());
        let (api_add, api_del) = (
            api[m].0 as f64 / iterations as f64,
            api[m].1 as f64 / iterations as f64,
        );
        let api_cols = if mode.ends_with("k8s") {
            format!("{api_add:>7.1} {api_del:>7.1}")
        } else {
            format!("{:>7} {:>7}", "-", "-")
        };
        println!(
            "{mode:<11} {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} | {:>9.2} {:>8.2} {:>8.2} | {api_cols}",
            add.0, add.1, add.2, del.0, del.1, both.0, both.1, both.2
        );
        medians.push(both.0);
        json_modes.insert(
            (*mode).into(),
            json!({
                "add": {"median": add.0, "p90": add.1, "min": add.2},
                "del": {"median": del.0, "p90": del.1, "min": del.2},
                "add_del": {"median": both.0, "p90": both.1, "min": both.2},
                "api_requests_per_add": mode.ends_with("k8s").then_some(api_add),
                "api_requests_per_del": mode.ends_with("k8s").then_some(api_del),
            }),
        );
    }
    let ratio = |a: usize, b: usize| medians[a] / medians[b];
    let ratios = json!({
        "plexus/bare": ratio(1, 0), "multus/bare": ratio(2, 0), "plexus/multus": ratio(1, 2),
        "plexus-k8s/bare": ratio(3, 0), "multus-k8s/bare": ratio(4, 0), "plexus-k8s/multus-k8s": ratio(3, 4),
    });
    println!("\nratios of the ADD+DEL medians:");
    for (k, v) in ratios.as_object().unwrap() {
        println!("  {k:<24} {:.3}", v.as_f64().unwrap());
    }
    let multus_version = std::fs::read_to_string(repo().join("e2e/tools/versions.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MULTUS_VERSION=").map(str::to_owned))
        .unwrap_or_default();
    println!(
        "\nplexus {} (release build), multus {multus_version}, CNI plugins from e2e/tools/versions.env",
        env!("CARGO_PKG_VERSION")
    );
    let out_dir = plexus_release_bin()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let doc = json!({"iterations": iterations, "modes": json_modes, "ratios": ratios,
                     "plexus": env!("CARGO_PKG_VERSION"), "multus": multus_version});
    std::fs::write(
        out_dir.join("add_del.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    println!("written: {}", out_dir.join("add_del.json").display());
}
