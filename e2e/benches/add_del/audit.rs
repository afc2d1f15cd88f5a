//! API requests per ADD and per DEL, and the API server's own time per pod write, from its audit log.

use super::*;

pub(crate) fn audit_lines(cluster: &PrivateCluster) -> usize {
    std::fs::read_to_string(cluster.audit_log())
        .unwrap_or_default()
        .lines()
        .count()
}

/// Completed requests of lines `from..to` of the audit log, not made by kubectl or by plexus-controller (whose
/// reconciler writes the pods' NetworksReady condition after each ADD).
pub(crate) fn audit_entries(cluster: &PrivateCluster, from: usize, to: usize) -> Vec<Value> {
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

pub(crate) fn is_event(e: &Value) -> bool {
    e["objectRef"]["resource"] == "events"
}

/// Reads and writes (events left out) on `namespace` and on `bench-system` (the default network's NAD) in lines
/// `from..to`.
pub(crate) fn requests(
    cluster: &PrivateCluster,
    from: usize,
    to: usize,
    namespace: &str,
) -> Requests {
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
pub(crate) fn events_per_namespace(
    cluster: &PrivateCluster,
    from: usize,
) -> BTreeMap<String, usize> {
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
pub(crate) fn pod_write_server_ms(
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
pub(crate) fn server_write_report(times: &BTreeMap<String, Vec<f64>>, modes: &[&str]) -> Value {
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
