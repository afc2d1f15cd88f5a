//! Medians, ratios and the JSON written to target/bench/add_del.json.

use super::*;

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (median, p90, min) in ms.
pub(crate) fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.9), ms(v[0]))
}

pub(crate) fn report(
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

pub(crate) fn write_doc(doc: &Value) {
    write_json("add_del.json", doc);
}

/// Writes `doc` to target/bench/`name` (this bench executable is target/release/deps/add_del-…).
pub(crate) fn write_json(name: &str, doc: &Value) {
    let out_dir = bench_dir();
    std::fs::write(
        out_dir.join(name),
        serde_json::to_string_pretty(doc).unwrap(),
    )
    .unwrap();
    println!("written: {}", out_dir.join(name).display());
}

/// target/bench, made if missing.
pub(crate) fn bench_dir() -> PathBuf {
    let out_dir = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .join("bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    out_dir
}

/// The q-th quantile (0–1) of `values`, the nearest rank after sorting; 0 for none.
pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}
