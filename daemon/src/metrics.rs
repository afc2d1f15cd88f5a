//! The daemon's Prometheus metrics, the tracing layer that times the phases of each request from the library's
//! phase spans (`plexus_cni::PHASE_SPANS`), and the HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use plexus_api::node_status::{Failure, prune_failures, push_failure};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub command: String,
    /// `success` or `error`.
    pub outcome: &'static str,
    /// The CNI error code, `0` on success.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// One of `plexus_cni::PHASE_SPANS`: `lookup`, `delegate`, `status_write`, `record_lock`, `record_write`,
    /// `record_remove`.
    pub phase: &'static str,
    /// The delegate's plugin type (empty for the other phases): the name of a binary found in `binDir` (the
    /// library opens the phase only then), at most [`MAX_PLUGIN_LABEL`] bytes.
    pub plugin: String,
    /// The delegate's command; for the other phases the command of the request they belong to.
    pub command: String,
}

/// The longest `plugin` label; a longer plugin name is cut to this (at a character boundary).
pub const MAX_PLUGIN_LABEL: usize = 64;

fn plugin_label(mut plugin: String) -> String {
    if plugin.len() > MAX_PLUGIN_LABEL {
        let mut end = MAX_PLUGIN_LABEL;
        while !plugin.is_char_boundary(end) {
            end -= 1;
        }
        plugin.truncate(end);
    }
    plugin
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `pod` or `nad`.
    pub kind: &'static str,
    /// `hit`, `miss`, or `absent` (a NAD that `clusterNetwork` or `defaultNetworks` name, not in the synced cache:
    /// no such NAD, and no request).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `pod` or `nad`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `thread` (the request thread's own connection) or `shared` (the daemon's shared client).
    pub connection: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `plexus`, `other` or `none` (`plexus_cni::install::RuntimeConf`).
    pub state: &'static str,
}

/// The node's paths that the scrape-time gauges look at.
#[derive(Debug, Clone)]
pub struct NodePaths {
    /// Plexus's records (`cniDir`).
    pub records: PathBuf,
    /// The runtime's CNI conf dir (`runtimeConfDir`), when set.
    pub runtime_conf: Option<PathBuf>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Events: `sent` or `failed` (not accepted by the API server, or dropped because the queue was full).
    /// Thread connections: `made` (after a reply), `failed` (could not be made), `broken` (a PATCH on it got no
    /// answer: dropped). Config reloads: `applied` or `failed`.
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Every metric the daemon exports, and whether its caches have synced.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<OutcomeLabels, Counter>,
    pub request_duration: Family<CommandLabels, Histogram, fn() -> Histogram>,
    pub phase_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    pub cache_lookups: Family<CacheLabels, Counter>,
    pub events: Family<ResultLabels, Counter>,
    pub status_writes: Family<ConnectionLabels, Counter>,
    pub thread_connections: Family<ResultLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub hotplug_syncs: Family<ResultLabels, Counter>,
    pub cached: Family<KindLabels, Gauge>,
    pub in_flight: Gauge,
    pub ready: AtomicBool,
    ready_gauge: Gauge,
    records: Gauge,
    runtime_conf: Family<StateLabels, Gauge>,
    node: OnceLock<NodePaths>,
    /// The last hour's failed requests with their Unix time, newest first (the node's status Lease).
    failures: Mutex<Vec<(i64, Failure)>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("plexus_daemon");
        let requests = Family::<OutcomeLabels, Counter>::default();
        let request_duration =
            Family::<CommandLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let phase_duration =
            Family::<PhaseLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        let events = Family::<ResultLabels, Counter>::default();
        let cached = Family::<KindLabels, Gauge>::default();
        let status_writes = Family::<ConnectionLabels, Counter>::default();
        let thread_connections = Family::<ResultLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        let hotplug_syncs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "hotplug_syncs",
            "Hot-plug passes over a running pod whose networks annotation or record asked for one: changed (interfaces \
             added or removed, network-status written), failed (retried with back-off), not_ready (its ADD had not \
             completed), refused (a hostNetwork pod)",
            hotplug_syncs.clone(),
        );
        registry.register(
            "config_reloads",
            "Changes of the config file seen: applied, or failed (the previous config stays)",
            config_reloads.clone(),
        );
        registry.register(
            "status_writes",
            "network-status PATCHes written, by connection: the request thread's own (thread) or the shared \
             client's (shared)",
            status_writes.clone(),
        );
        registry.register(
            "thread_connections",
            "Request threads' own API connections: made after a reply, failed to be made, or broken under a PATCH",
            thread_connections.clone(),
        );
        let in_flight = Gauge::default();
        let ready_gauge = Gauge::default();
        let records = Gauge::default();
        let runtime_conf = Family::<StateLabels, Gauge>::default();
        registry.register(
            "ready",
            "1 once the watch caches have synced (the daemon answers /readyz), else 0",
            ready_gauge.clone(),
        );
        registry.register(
            "records",
            "Records on the node (one for each sandbox and network it attached): far more than the node's pods means \
             DELs or GC are not removing them",
            records.clone(),
        );
        registry.register(
            "runtime_conf",
            "1 for what the container runtime's CNI conf dir (runtimeConfDir) holds first: plexus (Plexus's conf), \
             other (pods would skip Plexus) or none; absent without runtimeConfDir",
            runtime_conf.clone(),
        );
        registry.register(
            "cached_objects",
            "Objects in the watch caches: this node's pods, all NADs",
            cached.clone(),
        );
        registry.register(
            "requests",
            "CNI requests answered, by command, outcome and CNI error code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer one CNI request, by command",
            request_duration.clone(),
        );
        registry.register(
            "phase_duration_seconds",
            "Time of one phase of a request: lookup (pod and NADs), delegate (by plugin type and command), \
             status_write (the network-status PATCH)",
            phase_duration.clone(),
        );
        registry.register(
            "cache_lookups",
            "Pod and NAD lookups answered from the watch caches (hit), by the API server (miss), or as absent from the \
             synced cache without a request (absent: a NAD clusterNetwork or defaultNetworks name, which may be a conf)",
            cache_lookups.clone(),
        );
        registry.register(
            "events",
            "Pod events sent after the reply, by result",
            events.clone(),
        );
        registry.register(
            "in_flight_requests",
            "CNI requests being served",
            in_flight.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            request_duration,
            phase_duration,
            cache_lookups,
            events,
            status_writes,
            thread_connections,
            config_reloads,
            hotplug_syncs,
            cached,
            in_flight,
            ready: AtomicBool::new(false),
            failures: Mutex::default(),
            ready_gauge,
            records,
            runtime_conf,
            node: OnceLock::new(),
        })
    }

    /// The paths the node's gauges (`records`, `runtime_conf`) are read from at each scrape; set once.
    pub fn watch_node(&self, paths: NodePaths) {
        let _ = self.node.set(paths);
    }

    /// Reads the gauges that are looked up rather than counted: readiness, the records dir and the runtime's conf.
    fn refresh(&self) {
        self.ready_gauge
            .set(i64::from(self.ready.load(Ordering::Relaxed)));
        let Some(node) = self.node.get() else { return };
        let records = self.records();
        self.records.set(i64::try_from(records).unwrap_or(i64::MAX));
        if let Some(dir) = &node.runtime_conf {
            let now = plexus_cni::install::RuntimeConf::of(dir);
            for state in plexus_cni::install::RuntimeConf::ALL {
                self.runtime_conf
                    .get_or_create(&StateLabels {
                        state: state.label(),
                    })
                    .set(i64::from(state == now));
            }
        }
    }

    /// The sandboxes the node holds a record of (0 before [`Self::watch_node`]).
    pub fn records(&self) -> usize {
        self.node.get().map_or(0, |node| {
            plexus_cni::record::RecordStore::count_all(&node.records)
        })
    }

    /// A request answered with an error now (its `at` is set here), kept for an hour (at most
    /// [`plexus_api::node_status::MAX_FAILURES`]).
    pub fn failure(&self, mut failure: Failure) {
        let now = k8s_openapi::jiff::Timestamp::now();
        failure.at = now.to_string();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        push_failure(&mut failures, now.as_second(), failure);
    }

    /// The last hour's failures, newest first.
    pub fn recent_failures(&self) -> Vec<Failure> {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        prune_failures(&mut failures, now);
        failures.iter().map(|(_, f)| f.clone()).collect()
    }

    pub fn cache(&self, kind: &'static str, hit: bool) {
        self.cache_lookup(kind, if hit { "hit" } else { "miss" });
    }

    /// A lookup the synced cache answered with "no such object".
    pub fn cache_absent(&self, kind: &'static str) {
        self.cache_lookup(kind, "absent");
    }

    fn cache_lookup(&self, kind: &'static str, result: &'static str) {
        self.cache_lookups
            .get_or_create(&CacheLabels { kind, result })
            .inc();
    }

    pub fn status_write(&self, connection: &'static str) {
        self.status_writes
            .get_or_create(&ConnectionLabels { connection })
            .inc();
    }

    pub fn thread_connection(&self, result: &'static str) {
        self.thread_connections
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn hotplug(&self, result: &'static str) {
        self.hotplug_syncs
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn events(&self, result: &'static str, n: usize) {
        self.events
            .get_or_create(&ResultLabels { result })
            .inc_by(n as u64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        self.refresh();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// Times the library's phase spans and records them in `phase_duration_seconds`.
pub struct PhaseTimer {
    pub metrics: Arc<Metrics>,
}

impl PhaseTimer {
    /// The layer, filtered to the library's own spans at every level (whatever the log level), and nothing else: a
    /// layer without a filter makes every span of every crate exist at every level (h2 opens trace-level spans for
    /// each frame it reads or writes), allocated in the registry, entered and closed for nothing.
    pub fn layer(metrics: Arc<Metrics>) -> plexus_cni::logging::ExtraLayer {
        use tracing_subscriber::Layer as _;
        Box::new(
            Self { metrics }.with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("plexus_cni", tracing::Level::TRACE),
            ),
        )
    }
}

struct Phase {
    started: Instant,
    labels: PhaseLabels,
}

/// The command of the request a span belongs to (kept on its `cni` span).
struct RequestCommand(String);

#[derive(Default)]
struct DelegateFields {
    plugin: String,
    command: String,
}

impl Visit for DelegateFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = value.to_owned(),
            "command" => self.command = value.to_owned(),
            _ => {}
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S> tracing_subscriber::Layer<S> for PhaseTimer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if !meta.target().starts_with("plexus_cni") {
            return;
        }
        if meta.name() == "cni" {
            // The request's span: its command labels the phases inside it.
            let mut fields = DelegateFields::default();
            attrs.record(&mut fields);
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(RequestCommand(fields.command));
            }
            return;
        }
        let Some(phase) = plexus_cni::PHASE_SPANS.iter().find(|p| **p == meta.name()) else {
            return;
        };
        let mut fields = DelegateFields::default();
        attrs.record(&mut fields);
        if fields.command.is_empty()
            && let Some(request) = ctx.span(id).and_then(|span| {
                span.scope()
                    .skip(1)
                    .find_map(|s| s.extensions().get::<RequestCommand>().map(|c| c.0.clone()))
            })
        {
            fields.command = request;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Phase {
                started: Instant::now(),
                labels: PhaseLabels {
                    phase,
                    plugin: plugin_label(fields.plugin),
                    command: fields.command,
                },
            });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(phase) = span.extensions().get::<Phase>()
        {
            self.metrics
                .phase_duration
                .get_or_create(&phase.labels)
                .observe(phase.started.elapsed().as_secs_f64());
        }
    }
}

/// Serves `/metrics`, `/healthz` (the process answers) and `/readyz` (200 once the caches synced, 503 before)
/// until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics address (before serving, so that a taken port fails the start).
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> Response {
    exposition(&metrics)
}

/// `/metrics`'s answer: the text exposition format (also `crate::secure_metrics`'s once the caller is allowed).
pub fn exposition(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/operations.md's metrics reference holds one row for each metric, with the HELP text the code exports.
    #[test]
    fn the_operations_doc_lists_every_metric_with_its_help() {
        let metrics = Metrics::new();
        // A family is printed once it has a series: one each.
        let _ = metrics.requests.get_or_create(&OutcomeLabels {
            command: "ADD".into(),
            outcome: "success",
            code: "0".into(),
        });
        let _ = metrics.request_duration.get_or_create(&CommandLabels {
            command: "ADD".into(),
        });
        let _ = metrics.phase_duration.get_or_create(&PhaseLabels {
            phase: "lookup",
            plugin: String::new(),
            command: "ADD".into(),
        });
        metrics.cache("pod", true);
        metrics.events("sent", 1);
        metrics.status_write("thread");
        metrics.thread_connection("made");
        metrics.config_reload("applied");
        metrics.hotplug("changed");
        let _ = metrics.cached.get_or_create(&KindLabels { kind: "pod" });
        let _ = metrics
            .runtime_conf
            .get_or_create(&StateLabels { state: "plexus" });
        plexus_tests::metrics_reference::assert_documented(&metrics.encode());
    }

    #[test]
    fn the_node_gauges_are_read_at_each_scrape() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        assert!(text.contains("plexus_daemon_ready 0\n"), "{text}");
        assert!(!text.contains("plexus_daemon_runtime_conf{"), "{text}");
        let records = tempfile::tempdir().unwrap();
        let conf = tempfile::tempdir().unwrap();
        metrics.watch_node(NodePaths {
            records: records.path().to_owned(),
            runtime_conf: Some(conf.path().to_owned()),
        });
        let text = metrics.encode();
        assert!(text.contains("plexus_daemon_records 0\n"), "{text}");
        assert!(
            text.contains("plexus_daemon_runtime_conf{state=\"none\"} 1\n"),
            "{text}"
        );
        std::fs::write(records.path().join("pods~c1-eth0.json"), "{}").unwrap();
        std::fs::write(records.path().join(".pods~c1.lock"), "").unwrap();
        std::fs::write(conf.path().join("00-plexus.conf"), r#"{"type":"plexus"}"#).unwrap();
        metrics.ready.store(true, Ordering::Relaxed);
        let text = metrics.encode();
        assert!(text.contains("plexus_daemon_ready 1\n"), "{text}");
        assert!(text.contains("plexus_daemon_records 1\n"), "{text}");
        assert!(
            text.contains("plexus_daemon_runtime_conf{state=\"plexus\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("plexus_daemon_runtime_conf{state=\"none\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn a_plugin_label_is_cut_at_a_character_boundary() {
        assert_eq!(plugin_label("ptp".into()), "ptp");
        assert_eq!(plugin_label("x".repeat(500)).len(), MAX_PLUGIN_LABEL);
        let cut = plugin_label(format!("{}é", "x".repeat(MAX_PLUGIN_LABEL - 1)));
        assert_eq!(cut.len(), MAX_PLUGIN_LABEL - 1);
    }
}
