//! The command line and the process: webhook server, probe/metrics server, leader election, reconcilers, logs,
//! graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::{Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource as _;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use plexus_api::ipam_claim::{ClaimLookup, IpamClaim};
use plexus_api::nad::NetworkAttachmentDefinition;
use tokio::sync::watch;

use crate::admission::{LookupError, NadLookup};
use crate::leader::Election;
use crate::metrics::Metrics;
use crate::reconcile::Context;
pub use crate::rule_args::RuleArgs;
use crate::webhook::{Limits, WebhookState, router};
use plexus_serve::connection::IdleLimitAcceptor;

#[derive(Parser, Debug)]
#[command(
    name = "plexus-controller",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PLEXUS_COMMIT"), ")"),
    about = "Plexus controller: admission webhook and reconcilers for NetworkAttachmentDefinitions and the pods that use them"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the validating webhook and, while holding the leader Lease, run the reconcilers.
    Run(Box<RunArgs>),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// kubeconfig to reach the API server; without it, the in-cluster service account (or ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the webhook's HTTPS listener (POST /validate).
    #[arg(long, env = "PLEXUS_WEBHOOK_ADDR", default_value = "127.0.0.1:9443")]
    pub webhook_addr: SocketAddr,

    /// PEM certificate chain the webhook serves; read again whenever the file changes.
    #[arg(long, env = "PLEXUS_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// PEM private key of the webhook certificate; read again whenever the file changes.
    #[arg(long, env = "PLEXUS_TLS_KEY")]
    pub tls_key: PathBuf,

    /// How often to look for a changed certificate or key, in seconds.
    #[arg(long, env = "PLEXUS_TLS_RELOAD_SECONDS", default_value_t = 2.0)]
    pub tls_reload_seconds: f64,

    /// How much of the webhook one client can take: concurrent reviews, timeouts, idle connections.
    #[command(flatten)]
    pub limits: Limits,

    /// Address of the plain-HTTP listener for /metrics, /healthz and /readyz (a port of its own: the webhook's
    /// serves /validate only).
    #[arg(long, env = "PLEXUS_PROBE_ADDR", default_value = "127.0.0.1:9464")]
    pub probe_addr: SocketAddr,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "PLEXUS_LEASE_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, env = "PLEXUS_LEASE_NAME", default_value = "plexus-controller")]
    pub lease_name: String,

    /// Seconds a leader keeps the Lease without renewing it (it renews every third of that).
    #[arg(long, env = "PLEXUS_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

    /// This replica's name in the Lease and in Events (default: host name and process id).
    #[arg(long, env = "PLEXUS_IDENTITY")]
    pub identity: Option<String>,

    /// Do not run the reconcilers at all (webhook only).
    #[arg(long, env = "PLEXUS_NO_RECONCILE")]
    pub no_reconcile: bool,

    /// The plugin's keys and the cluster's plugin type rules the webhook applies.
    #[command(flatten)]
    pub rules: RuleArgs,

    /// Log format on stderr.
    #[arg(long, env = "PLEXUS_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `plexus_controller=debug`).
    #[arg(long, env = "PLEXUS_LOG", default_value = "info")]
    pub log: String,
}

/// The webhook's NAD lookup: the watch cache, then a GET for a NAD created a moment ago that the cache has not seen.
pub struct CachedNads {
    store: Store<NetworkAttachmentDefinition>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    client: Client,
}

impl NadLookup for CachedNads {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<NetworkAttachmentDefinition>>, LookupError> {
        if let Some(nad) = self.store.get(&ObjectRef::new(name).within(namespace)) {
            return Ok(Some(nad));
        }
        let api: Api<NetworkAttachmentDefinition> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map(|n| n.map(Arc::new))
            .map_err(|e| LookupError(e.to_string()))
    }

    async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, String>, LookupError> {
        let cached = self.namespaces.get(&ObjectRef::new(namespace));
        let meta = match cached {
            Some(ns) => Some(ns.metadata.clone()),
            None => Api::<PartialObjectMeta<Namespace>>::all(self.client.clone())
                .get_opt(namespace)
                .await
                .map_err(|e| LookupError(e.to_string()))?
                .map(|ns| ns.metadata),
        };
        Ok(meta.and_then(|m| m.labels).unwrap_or_default())
    }

    /// One GET of the claim (the chart grants `get` on ipamclaims, nothing more). A 404 is either no such claim or
    /// no such resource: the API group's discovery document (readable by every authenticated client) tells which.
    async fn ipam_claim(&self, namespace: &str, name: &str) -> ClaimLookup {
        let api: Api<IpamClaim> = Api::namespaced(self.client.clone(), namespace);
        let found = api.get_opt(name).await;
        let not_found = match &found {
            Ok(None) => true,
            // Without the CRD the path is not served at all: a 404 whose body is not even a Status.
            Err(kube::Error::Api(status)) => status.code == 404,
            _ => false,
        };
        if not_found {
            let version = IpamClaim::api_version(&());
            return match self.client.list_api_group_resources(&version).await {
                Ok(list)
                    if list
                        .resources
                        .iter()
                        .any(|r| r.name == IpamClaim::plural(&())) =>
                {
                    ClaimLookup::Missing
                }
                Ok(_) => ClaimLookup::NotServed,
                Err(kube::Error::Api(status)) if status.code == 404 => ClaimLookup::NotServed,
                Err(e) => ClaimLookup::Unreadable(e.to_string()),
            };
        }
        match found {
            Ok(Some(claim)) => ClaimLookup::Found {
                network: claim.spec.network,
            },
            Ok(None) => ClaimLookup::Missing,
            Err(e) => ClaimLookup::Unreadable(e.to_string()),
        }
    }
}

fn init_logging(args: &RunArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn main(cli: Cli) -> anyhow::Result<()> {
    let Command::Run(args) = cli.command;
    init_logging(&args);
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(run(*args))
}

async fn client(args: &RunArgs) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("use kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context("find the API server")?,
    };
    Client::try_from(config).context("build the API client")
}

struct Probes {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let limits = args.limits.durations().map_err(anyhow::Error::msg)?;
    let client = client(&args).await?;
    let metrics = Metrics::new();
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let (stop_tx, stop_rx) = watch::channel(false);

    // The webhook's NAD cache.
    let (nad_store, nad_writer) = reflector::store::<NetworkAttachmentDefinition>();
    let nad_watch = watcher(
        Api::<NetworkAttachmentDefinition>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(|nad: &mut NetworkAttachmentDefinition| {
        kube::ResourceExt::managed_fields_mut(nad).clear()
    })
    .reflect(nad_writer);
    let nad_watch = tokio::spawn(async move {
        use futures::StreamExt;
        nad_watch.for_each(|_| futures::future::ready(())).await;
    });

    // Namespaces' labels (metadata only): the plugin type rules and the Pod Security level read them.
    let (namespace_store, namespace_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let namespace_watch = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(|ns: &mut PartialObjectMeta<Namespace>| {
        kube::ResourceExt::managed_fields_mut(ns).clear()
    })
    .reflect(namespace_writer);
    let namespace_watch = tokio::spawn(async move {
        use futures::StreamExt;
        namespace_watch
            .for_each(|_| futures::future::ready(()))
            .await;
    });

    let state = Arc::new(WebhookState::new(
        CachedNads {
            store: nad_store.clone(),
            namespaces: namespace_store,
            client: client.clone(),
        },
        args.rules.rules()?,
        metrics.clone(),
        args.limits.max_concurrent,
        limits.request,
    ));

    // Webhook over HTTPS.
    let tls = crate::tls::load(&args.tls_cert, &args.tls_key).await?;
    tokio::spawn(crate::tls::reload_on_change(
        tls.clone(),
        args.tls_cert.clone(),
        args.tls_key.clone(),
        Duration::from_secs_f64(args.tls_reload_seconds.max(0.1)),
    ));
    let handle = axum_server::Handle::new();
    let listener = std::net::TcpListener::bind(args.webhook_addr)
        .with_context(|| format!("listen on {}", args.webhook_addr))?;
    listener.set_nonblocking(true)?;
    // TCP_NODELAY on every accepted connection: over HTTP/2 (which the API server negotiates with a webhook on a
    // loopback address) a response is several TLS records, and with Nagle's algorithm the later ones wait for the
    // API server's ACK of the first. Measured with `scripts/bench controller` (e2e/benches/controller.rs) on a loaded
    // machine, reviews over one HTTP/2 connection at concurrency 16: p99 9.7 ms without it.
    // Below TLS, each connection is closed after `idle` without a byte either way (plexus_serve::connection); the handshake and,
    // for HTTP/1.1, a request's headers have timeouts of their own.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .handshake_timeout(limits.handshake)
        .acceptor(IdleLimitAcceptor { idle: limits.idle });
    let mut server = axum_server::from_tcp(listener).acceptor(acceptor);
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let webhook = server
        .handle(handle.clone())
        .serve(router(state).into_make_service());
    let webhook = tokio::spawn(webhook);
    tracing::info!(addr = %args.webhook_addr, "webhook listening");

    // Probes and metrics.
    let probes = Arc::new(Probes {
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
    });
    let probe_app = Router::new()
        .route(
            "/metrics",
            get(|State(p): State<Arc<Probes>>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    p.metrics.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(p): State<Arc<Probes>>| async move {
                if p.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the NAD cache has not synced yet",
                    )
                }
            }),
        )
        .with_state(probes.clone());
    let probe_listener = tokio::net::TcpListener::bind(args.probe_addr)
        .await
        .with_context(|| format!("listen on {}", args.probe_addr))?;
    let mut probe_stop = stop_rx.clone();
    let probe_server = tokio::spawn(async move {
        axum::serve(probe_listener, probe_app)
            .with_graceful_shutdown(async move {
                let _ = probe_stop.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(addr = %args.probe_addr, "probes and metrics listening");

    {
        let probes = probes.clone();
        let store = nad_store.clone();
        tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                probes.ready.store(true, Ordering::Relaxed);
                tracing::info!("NAD cache synced; ready");
            }
        });
    }

    // Leader election and the reconcilers.
    let (leading_tx, leading_rx) = watch::channel(false);
    let election = if args.no_reconcile {
        None
    } else {
        let election = Election {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(args.lease_seconds.max(3)),
        };
        let api: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
        let election = tokio::spawn(election.run(api, leading_tx, stop_rx.clone()));
        let ctx = Context::new(
            client.clone(),
            &identity,
            metrics.clone(),
            args.rules.default_networks.clone(),
        );
        let supervisor = tokio::spawn(supervise(ctx, leading_rx, metrics.clone()));
        Some((election, supervisor))
    };

    shutdown_signal().await;
    tracing::info!("shutting down");
    probes.ready.store(false, Ordering::Relaxed);
    stop_tx.send_replace(true);
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
    if let Some((election, supervisor)) = election {
        let _ = election.await;
        let _ = supervisor.await;
    }
    let _ = webhook.await;
    let _ = probe_server.await;
    nad_watch.abort();
    namespace_watch.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Runs the reconcilers whenever this replica leads, and stops them when it no longer does.
async fn supervise(ctx: Arc<Context>, mut leading: watch::Receiver<bool>, metrics: Arc<Metrics>) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        metrics.leader.set(1);
        let mut rx = leading.clone();
        let stop = async move {
            let _ = rx.wait_for(|l| !*l).await;
        };
        crate::reconcile::run(ctx.clone(), futures::FutureExt::shared(Box::pin(stop))).await;
        metrics.leader.set(0);
        if leading.has_changed().is_err() {
            return;
        }
    }
}
