//! The scale model: per-unit costs from the hollow run's rows (means, or least-squares lines against the number of
//! nodes where a cost grows with it), carried to 1,000 and 5,000 nodes × 110 pods, 1,000 NADs and 10% pod churn per
//! minute, for each kind of daemon; printed, added to hollow.json and drawn (PNG) next to it. `docs/scale.md` states
//! the assumptions.

use super::*;

/// The cluster sizes the model is carried to.
const MODEL_NODES: [f64; 2] = [1000.0, 5000.0];
/// Pods per node in the model (the kubelet's default maximum).
const MODEL_PODS: f64 = 110.0;

/// y = a + b·x, fitted by least squares.
#[derive(Debug, Clone, Copy)]
struct Line {
    a: f64,
    b: f64,
}

impl Line {
    fn fit(points: &[(f64, f64)]) -> Self {
        let n = points.len().max(1) as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        Self { a: my - b * mx, b }
    }

    fn at(&self, x: f64) -> f64 {
        self.a + self.b * x
    }
}

/// One kind's costs, from its rows.
struct Costs {
    kind: String,
    /// A daemon's RSS (MiB): the mean over the rows. Each daemon watches its own node's pods and every NAD, both as
    /// many as in the model, so the number of nodes does not enter (the rows show it flat).
    daemon_rss: f64,
    /// Watches each daemon holds open in the API server.
    watches_per_daemon: f64,
    /// API server CPU-seconds to start N daemons at once, against N.
    start_cpu: Line,
    /// API server cores beyond what the churn costs it with no daemon (the daemons' watches under the churn, the
    /// NAD changes each daemon is sent, the ADDs' writes), against N.
    extra_churn_cores: Line,
    /// A daemon's own CPU (cores) under the churn: the mean over the rows.
    daemon_cores: f64,
}

fn costs(kind: &str, rows: &[&Value]) -> Costs {
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let pts = |f: &dyn Fn(&Value) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (num(&r["nodes"]), f(r))).collect()
    };
    let mean = |points: Vec<(f64, f64)>| {
        points.iter().map(|p| p.1).sum::<f64>() / points.len().max(1) as f64
    };
    Costs {
        kind: kind.to_owned(),
        daemon_rss: mean(pts(&|r| num(&r["steady"]["daemon_rss_mean_mib"]))),
        watches_per_daemon: mean(pts(&|r| {
            num(&r["steady"]["watches_added"]) / num(&r["nodes"]).max(1.0)
        })),
        start_cpu: Line::fit(&pts(&|r| num(&r["start"]["apiserver_cpu_s"]))),
        extra_churn_cores: Line::fit(&pts(&extra_churn_cores)),
        daemon_cores: mean(pts(&|r| {
            let c = &r["churn"];
            num(&c["daemons_cpu_s"]) / num(&c["seconds"]).max(1.0) / num(&r["nodes"]).max(1.0)
        })),
    }
}

/// A row's API server cores during its churn beyond the same churn's cost with no daemon.
fn extra_churn_cores(r: &Value) -> f64 {
    let c = &r["churn"];
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    (num(&c["apiserver_cpu_s"]) - num(&c["apiserver_cpu_s_without_daemons"]))
        / num(&c["seconds"]).max(1.0)
}

/// Pod changes per second in the model: 10% of the pods created per minute and as many deleted.
fn changes_per_s(nodes: f64) -> f64 {
    nodes * MODEL_PODS * 0.10 / 60.0 * 2.0
}

/// The model at `nodes` for one kind.
fn project(c: &Costs, nodes: f64, base_per_change_s: f64) -> Value {
    let rate = changes_per_s(nodes);
    json!({
        "nodes": nodes,
        "daemon_rss_mib": c.daemon_rss,
        "all_daemons_gib": c.daemon_rss * nodes / 1024.0,
        "apiserver_watches": c.watches_per_daemon * nodes,
        "pod_changes_per_s": rate,
        "adds_per_s": rate / 2.0,
        "apiserver_cores_for_the_churn_itself": rate * base_per_change_s,
        "apiserver_cores_for_the_daemons": c.extra_churn_cores.at(nodes).max(0.0),
        "daemon_cores": c.daemon_cores,
        "restart_all_apiserver_cpu_s": c.start_cpu.at(nodes).max(0.0),
    })
}

/// Fits the costs, prints the model, draws it into `out_dir`; returns the model for hollow.json.
pub(crate) fn model(result: &Value, out_dir: &Path) -> Value {
    let rows: Vec<&Value> = result["rows"].as_array().unwrap().iter().collect();
    let base_per_change_s = result["baseline"]["apiserver_cpu_ms_per_pod_change"]
        .as_f64()
        .unwrap_or(0.0)
        / 1000.0;
    let mut kinds = serde_json::Map::new();
    let mut fitted = Vec::new();
    println!(
        "\nScale model ({MODEL_PODS} pods per node, 1,000 NADs, 10% pod churn per minute), from the rows above\n"
    );
    println!(
        "{:<8} {:>6} {:>11} {:>9} {:>9} {:>9} {:>13} {:>13} {:>12} {:>14}",
        "daemon",
        "nodes",
        "daemon MiB",
        "all GiB",
        "watches",
        "ADDs/s",
        "churn cores",
        "daemon cores",
        "daemon core",
        "restart CPU-s"
    );
    for kind in ["plexus", "multus"] {
        let of_kind: Vec<&Value> = rows.iter().copied().filter(|r| r["kind"] == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let c = costs(kind, &of_kind);
        let at: Vec<Value> = MODEL_NODES
            .iter()
            .map(|&n| project(&c, n, base_per_change_s))
            .collect();
        for p in &at {
            let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
            println!(
                "{kind:<8} {:>6.0} {:>11.1} {:>9.1} {:>9.0} {:>9.0} {:>13.1} {:>13.2} {:>12.5} {:>14.0}",
                f("nodes"),
                f("daemon_rss_mib"),
                f("all_daemons_gib"),
                f("apiserver_watches"),
                f("adds_per_s"),
                f("apiserver_cores_for_the_churn_itself"),
                f("apiserver_cores_for_the_daemons"),
                f("daemon_cores"),
                f("restart_all_apiserver_cpu_s"),
            );
        }
        kinds.insert(
            kind.into(),
            json!({
                "costs": {
                    "daemon_rss_mib": c.daemon_rss,
                    "watches_per_daemon": c.watches_per_daemon,
                    "start_apiserver_cpu_s": {"a": c.start_cpu.a, "per_daemon": c.start_cpu.b},
                    "extra_churn_apiserver_cores": {"a": c.extra_churn_cores.a, "per_daemon": c.extra_churn_cores.b},
                    "daemon_cores": c.daemon_cores,
                },
                "at": at,
            }),
        );
        fitted.push((c, of_kind));
    }
    println!(
        "(churn cores: the API server's CPU for the pod churn itself, with no daemon, {:.1} ms per pod change; daemon \
         cores: its CPU beyond that with the daemons, fitted against the number of nodes; daemon core: one daemon's \
         own CPU; restart CPU-s: the API server's CPU to start every daemon at once)",
        base_per_change_s * 1000.0
    );
    if let Err(e) = draw(&fitted, out_dir) {
        println!("the plots were not drawn: {e}");
    }
    Value::Object(kinds)
}

/// The font the plots' text is drawn with (Debian's fonts-dejavu-core).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// scale-daemon-rss.png, scale-apiserver-cpu.png and scale-restart.png: each measured point and the fitted line
/// carried to 5,000 nodes, Plexus and Multus.
fn draw(fitted: &[(Costs, Vec<&Value>)], out_dir: &Path) -> Result<(), String> {
    let font =
        std::fs::read(FONT).map_err(|e| format!("{FONT}: {e} (Debian: fonts-dejavu-core)"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, font)
        .map_err(|_| format!("{FONT} is not a font"))?;
    let charts = [
        Chart {
            file: "scale-daemon-rss.png",
            title: "node daemon RSS (MiB) against nodes",
            unit: "MiB",
            model: |c, _| c.daemon_rss,
            measured: |r| r["steady"]["daemon_rss_mean_mib"].as_f64(),
        },
        Chart {
            file: "scale-apiserver-cpu.png",
            title: "API server cores for the daemons under the churn",
            unit: "cores",
            model: |c, n| c.extra_churn_cores.at(n).max(0.0),
            measured: |r| Some(extra_churn_cores(r)),
        },
        Chart {
            file: "scale-restart.png",
            title: "API server CPU-s to start every daemon at once",
            unit: "CPU-s",
            model: |c, n| c.start_cpu.at(n).max(0.0),
            measured: |r| r["start"]["apiserver_cpu_s"].as_f64(),
        },
    ];
    for chart in &charts {
        let file = out_dir.join(chart.file);
        draw_one(fitted, &file, chart).map_err(|e| format!("{}: {e}", chart.file))?;
        println!("drawn: {}", file.display());
    }
    Ok(())
}

/// One plot: a kind's model against the number of nodes (a line) and its rows (points).
struct Chart {
    file: &'static str,
    title: &'static str,
    unit: &'static str,
    model: fn(&Costs, f64) -> f64,
    measured: fn(&Value) -> Option<f64>,
}

fn draw_one(
    fitted: &[(Costs, Vec<&Value>)],
    file: &Path,
    chart_of: &Chart,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let xs: Vec<f64> = (0..=50)
        .map(|i| 10f64 * 500f64.powf(i as f64 / 50.0))
        .collect();
    let mut top: f64 = 0.0;
    for (c, rows) in fitted {
        for &x in &xs {
            top = top.max((chart_of.model)(c, x));
        }
        for r in rows {
            top = top.max((chart_of.measured)(r).unwrap_or(0.0));
        }
    }
    let root = BitMapBackend::new(file, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(chart_of.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((10f64..5000f64).log_scale(), 0f64..(top * 1.1).max(1e-6))?;
    chart
        .configure_mesh()
        .x_desc("nodes (log scale)")
        .y_desc(chart_of.unit)
        .draw()?;
    for (i, (c, rows)) in fitted.iter().enumerate() {
        let color = if i == 0 { BLUE } else { RED };
        chart
            .draw_series(LineSeries::new(
                xs.iter().map(|&x| (x, (chart_of.model)(c, x))),
                color.stroke_width(2),
            ))?
            .label(format!("{} (model)", c.kind))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(rows.iter().filter_map(|r| {
            let n = r["nodes"].as_f64()?;
            (chart_of.measured)(r).map(|y| Circle::new((n, y), 5, color.filled()))
        }))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
