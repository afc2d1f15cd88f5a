//! Monitoring with a real Prometheus (`e2e/tools/install prometheus`): it scrapes every node's plexus-daemon on its
//! secure metrics port (`secureMetricsAddress`, e2e/lib/node.sh) with the token of a ServiceAccount that the chart's
//! metrics reader ClusterRole allows, and the harness plexus-controller; the chart's alert rules (rendered by the
//! pinned helm) pass promtool's checks and unit tests (e2e/monitoring/alerts-test.yaml), and fire on real faults and
//! clear after the fix; every query of the chart's Grafana dashboard evaluates. Needs `e2e/cluster up --nodes 2`
//! and `eval "$(e2e/cluster env)"` (scripts/test does both).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::{Value, json};

/// `NODE_SECURE_METRICS_PORT` of e2e/lib/node.sh.
const SECURE_METRICS_PORT: u16 = 9466;
const READY: Duration = Duration::from_secs(120);
/// How long an alert may take to fire or clear: the rules' `for` and windows below, plus scrapes and evaluations.
const ALERT: Duration = Duration::from_secs(120);
const MODE: NodeMode = NodeMode::Thick;

/// One test at a time: one of them stops a node's daemon.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The chart's monitoring objects, rendered by the pinned helm in thick mode with the secure metrics port on.
fn render(release: &str, sets: &[String]) -> Vec<Value> {
    let mut all: Vec<String> = [
        "node.mode=thick",
        "node.daemon.secureMetrics.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.dashboard.enabled=true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend_from_slice(sets);
    render_chart(release, "templates/monitoring.yaml", &all)
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

/// The rule file (JSON, which Prometheus reads as YAML) of the chart's PrometheusRule, rendered with `sets`.
fn write_rules(dir: &Path, sets: &[String]) -> PathBuf {
    let documents = render("plexus", sets);
    let rules = of_kind(&documents, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let path = dir.join("rules.json");
    std::fs::write(&path, rules[0]["spec"].to_string()).unwrap();
    path
}

fn promtool() -> PathBuf {
    tool_bin("prometheus").join("promtool")
}

/// A Prometheus on 127.0.0.1 with `scrape_configs`, scraping and evaluating every second. Stopped on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scrape_configs: Value, rules: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        });
        if let Some(rules) = rules {
            config["rule_files"] = json!([rules]);
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(tool_bin("prometheus").join("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Self { child, port, dir };
        wait_until(
            "Prometheus ready",
            Duration::from_secs(60),
            || prometheus.get("/-/ready").map(|_| ()),
            || prometheus.log(),
        );
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` (with `query` URL-encoded as ?query=), the body when the answer is 2xx.
    fn get_query(&self, path: &str, query: Option<&str>) -> Option<String> {
        let mut curl = Command::new("curl");
        curl.args(["-fsS", "--max-time", "10"]);
        if let Some(query) = query {
            curl.args(["-G", "--data-urlencode", &format!("query={query}")]);
        }
        let out = curl
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("run curl");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn get(&self, path: &str) -> Option<String> {
        self.get_query(path, None)
    }

    fn api(&self, path: &str, query: Option<&str>) -> Value {
        let body = self
            .get_query(path, query)
            .unwrap_or_else(|| panic!("GET {path} {query:?} failed; log:\n{}", self.log()));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
        v["data"].clone()
    }

    /// The result vector of an instant query; a query Prometheus refuses fails the test.
    fn query(&self, expr: &str) -> Vec<Value> {
        self.api("/api/v1/query", Some(expr))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn targets(&self) -> Vec<Value> {
        self.api("/api/v1/targets", None)["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Active alerts (pending and firing).
    fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts", None)["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn firing(&self, name: &str) -> Vec<Value> {
        self.alerts()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .collect()
    }

    fn wait_firing(&self, name: &str) -> Vec<Value> {
        wait_until(
            &format!("{name} firing"),
            ALERT,
            || {
                let firing = self.firing(name);
                (!firing.is_empty()).then_some(firing)
            },
            || format!("{:#}", json!(self.alerts())),
        )
    }

    /// Waits until no alert `name` is active, pending or firing.
    fn wait_cleared(&self, name: &str) {
        wait_until(
            &format!("{name} cleared"),
            ALERT,
            || {
                (!self
                    .alerts()
                    .iter()
                    .any(|a| a["labels"]["alertname"] == name))
                .then_some(())
            },
            || format!("{:#}", json!(self.alerts())),
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cluster-scoped RBAC objects of one test (the chart's metrics reader ClusterRole and its binding), deleted on
/// drop.
struct ClusterObjects(Vec<(String, String)>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let _ = kubectl_output(&["delete", kind, name, "--ignore-not-found"], None);
        }
    }
}

/// Two ServiceAccounts in `namespace`: `scraper`, bound by the chart's own metrics reader ClusterRole (rendered with
/// `monitoring.metricsReaders` naming it), and `stranger`, bound to nothing. Returns their tokens' files in `dir`.
fn scraper_tokens(namespace: &str, dir: &Path) -> (ClusterObjects, PathBuf, PathBuf) {
    let release = unique("mon");
    let documents = render(
        &release,
        &[
            "monitoring.metricsReaders[0].kind=ServiceAccount".into(),
            "monitoring.metricsReaders[0].name=scraper".into(),
            format!("monitoring.metricsReaders[0].namespace={namespace}"),
        ],
    );
    let mut objects = ClusterObjects(Vec::new());
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        let found = of_kind(&documents, kind);
        assert_eq!(found.len(), 1, "one {kind}");
        kubectl(&["create", "-f", "-"], Some(&found[0].to_string()));
        objects.0.push((
            kind.to_lowercase(),
            found[0]["metadata"]["name"].as_str().unwrap().to_owned(),
        ));
    }
    let token = |account: &str| {
        kubectl(
            &["create", "serviceaccount", "-n", namespace, account],
            None,
        );
        let token = kubectl(
            &["create", "token", "-n", namespace, account, "--duration=1h"],
            None,
        );
        let path = dir.join(account);
        std::fs::write(&path, token.trim()).unwrap();
        path
    };
    let scraper = token("scraper");
    let stranger = token("stranger");
    (objects, scraper, stranger)
}

/// Prometheus's scrape config of the node daemons' secure port as `job`, with the token in `token` (or none).
fn daemon_job(nodes: &Nodes, job: &str, token: Option<&Path>) -> Value {
    let targets: Vec<String> = (0..nodes.names.len())
        .map(|i| format!("{}:{SECURE_METRICS_PORT}", nodes.ip(i)))
        .collect();
    let mut job = json!({
        "job_name": job,
        "scheme": "https",
        "tls_config": {"insecure_skip_verify": true},
        "static_configs": [{"targets": targets}],
    });
    if let Some(token) = token {
        job["authorization"] = json!({"type": "Bearer", "credentials_file": token});
    }
    job
}

/// The harness controller's probe port (e2e/lib/controller.sh writes it to the state dir).
fn controller_job() -> Value {
    let env = std::fs::read_to_string(plexus_e2e::controller::state_dir().join("controller.env"))
        .expect("the harness controller's env file (e2e/cluster up)");
    let port = env
        .lines()
        .find_map(|l| l.strip_prefix("CONTROLLER_PROBE_PORT="))
        .expect("CONTROLLER_PROBE_PORT");
    json!({"job_name": "plexus-controller", "static_configs": [{"targets": [format!("127.0.0.1:{port}")]}]})
}

/// Records the last minute of `selectors` from `prometheus` (a 1 s step), writes a promtool test of `rules` with
/// those series as its input and the `fired` alerts (as Prometheus's API gave them: labels and annotations) expected
/// at the last step, and runs `promtool test rules` on it.
fn promtool_agrees_on_recorded_series(
    prometheus: &Prometheus,
    rules: &Path,
    selectors: &[&str],
    fired: &[Value],
) {
    // The alerts fired within the last seconds; a few more scrapes and evaluations with the fault still there give
    // promtool (which evaluates on the 1 s grid of the recording) the same `for` to see.
    std::thread::sleep(Duration::from_secs(5));
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        // The newest second may not be scraped yet.
        - 1;
    let start = end - 60;
    let steps = (end - start + 1) as usize;
    let mut input = Vec::new();
    for selector in selectors {
        let path = format!("/api/v1/query_range?start={start}&end={end}&step=1");
        let data = prometheus.api(&path, Some(selector));
        for series in data["result"].as_array().unwrap() {
            let labels = series["metric"].as_object().unwrap();
            let name = labels["__name__"].as_str().unwrap();
            let rest: Vec<String> = labels
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut values = vec!["_".to_owned(); steps];
            for point in series["values"].as_array().unwrap() {
                let at = point[0].as_f64().unwrap() as u64;
                values[(at - start) as usize] = point[1].as_str().unwrap().to_owned();
            }
            input.push(json!({
                "series": format!("{name}{{{}}}", rest.join(",")),
                "values": values.join(" "),
            }));
        }
    }
    assert!(!input.is_empty(), "nothing recorded for {selectors:?}");
    let mut cases: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for alert in fired {
        let mut labels = alert["labels"].as_object().unwrap().clone();
        let name = labels
            .remove("alertname")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        cases.entry(name).or_default().push(json!({
            "exp_labels": labels,
            "exp_annotations": alert["annotations"],
        }));
    }
    let tests = json!({
        "rule_files": [rules],
        "evaluation_interval": "1s",
        "tests": [{
            "interval": "1s",
            "input_series": input,
            "alert_rule_test": cases.into_iter().map(|(name, alerts)| json!({
                "eval_time": format!("{}s", steps - 1),
                "alertname": name,
                "exp_alerts": alerts,
            })).collect::<Vec<_>>(),
        }],
    });
    let dir = rules.parent().unwrap();
    let file = dir.join("recorded-test.json");
    std::fs::write(&file, tests.to_string()).unwrap();
    let run = Command::new(promtool())
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "promtool test rules on the recorded series: {}{}\n{tests:#}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The targets of `job` once each was scraped at least once: (health, lastError) each.
fn scraped(prometheus: &Prometheus, job: &str, count: usize) -> Vec<(String, String)> {
    wait_until(
        &format!("{count} scraped targets of {job}"),
        Duration::from_secs(60),
        || {
            let targets: Vec<(String, String)> = prometheus
                .targets()
                .iter()
                .filter(|t| t["labels"]["job"] == job && t["health"] != "unknown")
                .map(|t| {
                    (
                        t["health"].as_str().unwrap_or_default().to_owned(),
                        t["lastError"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            (targets.len() == count).then_some(targets)
        },
        || format!("{:#}", json!(prometheus.targets())),
    )
}

/// A bridge + host-local NAD config with a network name of its own.
fn bridge_config() -> Value {
    let (subnet, _) = node_subnet();
    json!({"cniVersion": "1.0.0", "name": unique("mon"), "plugins": [
        {"type": "bridge", "bridge": unique("mb"), "ipam": {"type": "host-local", "subnet": subnet}}
    ]})
}

#[test]
fn the_charts_alert_rules_pass_promtool_and_each_has_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path(), &[]);
    let check = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let tests_file = repo().join("e2e/monitoring/alerts-test.yaml");
    let tests = std::fs::read_to_string(&tests_file).unwrap();
    std::fs::write(dir.path().join("alerts-test.yaml"), &tests).unwrap();
    let run = Command::new(promtool())
        .args(["test", "rules", "alerts-test.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    // Every alert of the chart is exercised by a case that expects it to fire.
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(&rules).unwrap()).unwrap();
    let names: Vec<&str> = spec["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");
    let cases: Value = serde_saphyr::from_str(&tests).unwrap();
    for name in names {
        let fires = cases["tests"].as_array().unwrap().iter().any(|t| {
            t["alert_rule_test"].as_array().is_some_and(|cases| {
                cases.iter().any(|c| {
                    c["alertname"] == name
                        && c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())
                })
            })
        });
        assert!(fires, "no case of {tests_file:?} expects {name} to fire");
    }
}

#[test]
fn the_charts_monitor_and_rule_objects_fit_prometheus_operators_crds() {
    let crds = tool_bin("prometheus-operator-crds");
    let mut applied = ClusterObjects(Vec::new());
    for crd in ["podmonitors", "servicemonitors", "prometheusrules"] {
        let path = crds.join(format!("monitoring.coreos.com_{crd}.yaml"));
        kubectl(
            &["apply", "--server-side", "-f", &path.display().to_string()],
            None,
        );
        applied.0.push((
            "customresourcedefinition".into(),
            format!("{crd}.monitoring.coreos.com"),
        ));
    }
    for crd in &applied.0 {
        kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                &crd.1,
            ],
            None,
        );
    }
    let ns = KubeNamespace::new("mon-crds");
    let documents = render(
        "plexus",
        &[
            "monitoring.podMonitor.enabled=true".into(),
            "monitoring.podMonitor.labels.team=net".into(),
        ],
    );
    for kind in ["PodMonitor", "ServiceMonitor", "PrometheusRule"] {
        let found = of_kind(&documents, kind);
        assert_eq!(found.len(), 1, "one {kind}");
        let mut object = found[0].clone();
        object["metadata"]["namespace"] = json!(ns.name);
        // Server-side dry run with strict field validation: the API server checks the object against the CRD's
        // schema and refuses a field the schema does not have.
        kubectl(
            &["create", "--dry-run=server", "--validate=strict", "-f", "-"],
            Some(&object.to_string()),
        );
    }
}

#[test]
fn prometheus_scrapes_the_daemons_only_with_an_allowed_token_and_every_dashboard_query_evaluates() {
    let _serial = serial();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::new("mon-scrape");
    let dir = tempfile::tempdir().unwrap();
    let (_rbac, scraper, stranger) = scraper_tokens(&ns.name, dir.path());
    let prometheus = Prometheus::start(
        json!([
            daemon_job(&nodes, "plexus-daemon", Some(&scraper)),
            daemon_job(&nodes, "stranger", Some(&stranger)),
            daemon_job(&nodes, "anonymous", None),
            controller_job(),
        ]),
        None,
    );
    // A thick pod with a secondary network: ADD data on node 0.
    create_nad(&ns.name, "net", Some(&bridge_config()));
    create_node_pod_in(MODE, &nodes, 0, &ns.name, "p", Some("net"));
    wait_ready_in(MODE, &nodes, &ns.name, "p", READY);

    let count = nodes.names.len();
    for (health, error) in scraped(&prometheus, "plexus-daemon", count) {
        assert_eq!((health.as_str(), error.as_str()), ("up", ""));
    }
    for (health, error) in scraped(&prometheus, "stranger", count) {
        assert_eq!(health, "down");
        assert!(error.contains("403"), "{error}");
    }
    for (health, error) in scraped(&prometheus, "anonymous", count) {
        assert_eq!(health, "down");
        assert!(error.contains("401"), "{error}");
    }
    assert_eq!(
        scraped(&prometheus, "plexus-controller", 1),
        [("up".to_owned(), String::new())]
    );

    // The node gauges: every node's runtime uses Plexus's conf; node 0 holds the pod's record.
    let node0 = format!("{}:{SECURE_METRICS_PORT}", nodes.ip(0));
    wait_until(
        "node 0's ADD, record and conf in Prometheus",
        Duration::from_secs(60),
        || {
            let adds = prometheus.query(&format!(
                r#"plexus_daemon_requests_total{{command="ADD",outcome="success",instance="{node0}"}}"#
            ));
            let records = prometheus.query(&format!(
                r#"plexus_daemon_records{{instance="{node0}"}} >= 1"#
            ));
            let confs = prometheus
                .query(r#"plexus_daemon_runtime_conf{job="plexus-daemon",state="plexus"} == 1"#);
            (!adds.is_empty() && !records.is_empty() && confs.len() == count).then_some(())
        },
        || {
            format!(
                "{:#}",
                json!(prometheus.query("{job=\"plexus-daemon\"}").len())
            )
        },
    );

    // Every query of the dashboard evaluates; the panels this run feeds have data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("charts/plexus/files/grafana-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let with_data = [
        "Daemons ready",
        "Requests in flight",
        "Runtime conf not Plexus's",
        "Invalid NADs",
        "Pods with NetworksReady=False",
        "Leader",
        "CNI requests by command and outcome",
        "ADD latency p50/p99",
        "ADD phase latency p99 by phase",
        "Delegate latency p99 by plugin",
        "Cache hit ratio",
        "Records on nodes vs cached pods",
        "Webhook reviews by kind and outcome",
        "Webhook latency p99 by kind",
    ];
    let mut seen = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            // Evaluates (a query Prometheus refuses fails the test at once); rates need two samples in their window,
            // so the panels with data may take a few scrapes.
            let result = prometheus.query(&expr);
            if with_data.contains(&title) && result.is_empty() {
                wait_until(
                    &format!("data for panel {title:?}"),
                    Duration::from_secs(60),
                    || (!prometheus.query(&expr).is_empty()).then_some(()),
                    || expr.clone(),
                );
            }
        }
        seen.push(title);
    }
    for title in with_data {
        assert!(
            seen.contains(&title),
            "the dashboard has no panel {title:?}"
        );
    }
    delete_pod(&ns.name, "p");
}

#[test]
fn alerts_fire_on_a_broken_nad_and_a_stopped_daemon_and_clear_after_the_fix() {
    let _serial = serial();
    let nodes = Nodes::from_env();
    let ns = KubeNamespace::without_admission("mon-alerts");
    let dir = tempfile::tempdir().unwrap();
    let (_rbac, scraper, _) = scraper_tokens(&ns.name, dir.path());
    // The chart's rules with the test's durations: conditions fire after a second, rates over 15 s.
    let rules = write_rules(
        dir.path(),
        &[
            "monitoring.prometheusRule.for=1s".into(),
            "monitoring.prometheusRule.rateWindow=15s".into(),
            "monitoring.prometheusRule.daemonJob=plexus-daemon".into(),
            "monitoring.prometheusRule.controllerJob=plexus-controller".into(),
        ],
    );
    let prometheus = Prometheus::start(
        json!([
            daemon_job(&nodes, "plexus-daemon", Some(&scraper)),
            controller_job()
        ]),
        Some(&rules),
    );
    scraped(&prometheus, "plexus-daemon", nodes.names.len());
    // The cluster is shared with the suites before this one: their namespaces (and the invalid NADs and stuck pods
    // some hold on purpose) may still be terminating. Start once none of the alerts below is active.
    for alert in [
        "PlexusDaemonDown",
        "PlexusCNIAddErrors",
        "PlexusInvalidNADs",
    ] {
        prometheus.wait_cleared(alert);
    }

    // A broken NAD (its plugin type is a path: the controller marks it invalid, the plugin refuses it at ADD; the
    // namespace skips the webhook, which would refuse it), and a pod that selects it.
    let broken = json!({"cniVersion": "1.0.0", "name": "broken", "type": "../../bin/sh"});
    create_nad(&ns.name, "net", Some(&broken));
    create_node_pod_in(MODE, &nodes, 0, &ns.name, "p", Some("net"));
    let invalid = prometheus.wait_firing("PlexusInvalidNADs");
    assert_eq!(invalid.len(), 1);
    let errors = prometheus.wait_firing("PlexusCNIAddErrors");
    let node0 = format!("{}:{SECURE_METRICS_PORT}", nodes.ip(0));
    assert!(
        errors.iter().any(|a| a["labels"]["instance"] == node0
            && a["labels"]["code"].as_str().is_some_and(|c| c != "0")),
        "{errors:#?}"
    );
    // The same rules, run by promtool on the series this run recorded, fire the same alerts with the same labels and
    // annotations.
    let fired: Vec<Value> = invalid.iter().chain(&errors).cloned().collect();
    promtool_agrees_on_recorded_series(
        &prometheus,
        &rules,
        &[
            r#"plexus_daemon_requests_total{command="ADD"}"#,
            "plexus_controller_invalid_nads",
        ],
        &fired,
    );

    // The fix: the NAD made valid, the stuck pod replaced by one that gets the network.
    let mut nad: Value = serde_json::from_str(&kubectl(
        &["get", "net-attach-def", "-n", &ns.name, "net", "-o", "json"],
        None,
    ))
    .unwrap();
    nad["spec"]["config"] = json!(bridge_config().to_string());
    kubectl(&["replace", "-f", "-"], Some(&nad.to_string()));
    delete_pod(&ns.name, "p");
    create_node_pod_in(MODE, &nodes, 0, &ns.name, "q", Some("net"));
    wait_ready_in(MODE, &nodes, &ns.name, "q", READY);
    prometheus.wait_cleared("PlexusInvalidNADs");
    prometheus.wait_cleared("PlexusCNIAddErrors");
    delete_pod(&ns.name, "q");

    // A stopped daemon: node 2's goes down, then comes back.
    let node1 = format!("{}:{SECURE_METRICS_PORT}", nodes.ip(1));
    nodes.stop(1, "plexus-daemon");
    let restarted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let down = prometheus.wait_firing("PlexusDaemonDown");
        assert_eq!(down.len(), 1, "{down:#?}");
        assert_eq!(down[0]["labels"]["instance"], node1.as_str());
    }));
    nodes.restart(1, "plexus-daemon");
    if let Err(panic) = restarted {
        std::panic::resume_unwind(panic);
    }
    prometheus.wait_cleared("PlexusDaemonDown");
}
