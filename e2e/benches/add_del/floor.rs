//! The floor of a thick design (exec of a trivial static binary, one PATCH), and the thick targets checked round by
//! round with bootstrap intervals.

use super::*;

/// Compiles a C program statically (`gcc -O2 -static`) into `work/<name>`.
pub(crate) fn gcc_static(work: &Path, name: &str, source: &str) -> PathBuf {
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
pub(crate) struct FloorProbe {
    pub(crate) binary: PathBuf,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) pods: kube::Api<k8s_openapi::api::core::v1::Pod>,
    pub(crate) patches: usize,
}

impl FloorProbe {
    pub(crate) fn new(work: &Path, cluster: &PrivateCluster) -> Self {
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

    pub(crate) fn exec(&self) -> Duration {
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
    pub(crate) fn patch(&mut self) -> Duration {
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
pub(crate) fn measure_floor(probe: &mut FloorProbe) -> Value {
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
pub(crate) fn floor_in_run(samples: &[(Duration, Duration)]) -> Value {
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
pub(crate) fn paired_targets(
    samples: &BTreeMap<&str, ModeSamples>,
    floor: &[(Duration, Duration)],
) -> Value {
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
pub(crate) const VERDICT_ROUNDS: usize = 20;

/// Met (the whole interval at or under the target), missed (all of it over), or can't tell.
pub(crate) fn verdict(lo: f64, hi: f64, target: f64, rounds: usize) -> &'static str {
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

pub(crate) fn median(v: &[f64]) -> f64 {
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
pub(crate) fn bootstrap(
    values: &[f64],
    unit: usize,
    statistic: impl Fn(&[f64]) -> f64,
) -> (f64, f64, f64) {
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
