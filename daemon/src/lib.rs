//! `plexus-daemon`: thick mode, node side. One long-lived process per node serves the CNI requests that `plexus`
//! forwards as a shim (`plexus_cni::shim`), each one a call of the same `plexus_cni::run_with` that thin mode runs,
//! with the source, the client and the logging passed in rather than built per call.
//!
//! Why a crate of its own rather than a module of `plexus-cni`: the daemon needs kube's runtime (watches and
//! reflectors), an HTTP server and a metrics registry; as a separate crate none of that is linked into `plexus`,
//! the binary the runtime execs for every request, which stays small and starts fast. The daemon reuses the
//! library's config, plan, ops, record and source code; it adds only what is its own:
//! - [`config`]: the daemon's file (the plugin's keys plus `daemonSocketDir`, `nodeName`, `metricsAddress`,
//!   `maxConcurrentDelegates`, `socketGroup`, `multusApiSocketDir`, `nodeStatusNamespace`, ...) and how it is laid over each request's config;
//! - [`cache`]: the watch-backed `NetworkSource`;
//! - [`direct`]: each request thread's own API connection for the network-status PATCH;
//! - [`server`]: the unix socket;
//! - [`multus_api`]: Multus thick's HTTP API on a second socket (`multusApiSocketDir`), for multus-shim and
//!   multus-dynamic-networks-controller;
//! - [`hotplug`]: networks added to and removed from running pods when their annotation changes;
//! - [`metrics`]: Prometheus metrics, phase timing, `/metrics`, `/healthz`, `/readyz`;
//! - [`node_status`]: the daemon's part of the node's status Lease (`kubectl plexus status`);
//! - [`secure_metrics`]: `/metrics` over HTTPS for scrapers off the node, to tokens the API server authorizes.

// Denied, not forbidden: `server::peer_groups` allows it for one getsockopt (SO_PEERGROUPS).
#![deny(unsafe_code)]

pub mod cache;
pub mod config;
pub mod direct;
pub mod hotplug;
pub mod metrics;
pub mod multus_api;
pub mod node_status;
pub mod secure_metrics;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::info;

use crate::cache::{CacheProvider, Caches};
use crate::config::DaemonConfig;
use crate::metrics::{Metrics, PhaseTimer};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Kubernetes client: {0}")]
    Client(String),
    #[error(transparent)]
    Socket(#[from] server::SocketError),
    #[error("metrics address {address}: {source}")]
    Metrics {
        address: String,
        source: std::io::Error,
    },
}

/// The client's settings: from the config's `kubeconfig` when it names one, else inferred (`KUBECONFIG`, then the
/// pod's service account: its token file is read again at least once a minute, so a rotated token is picked up).
/// The daemon's one client is made from them ([`cache::ApiThread`]).
pub async fn client_config(config: &DaemonConfig) -> Result<kube::Config, StartError> {
    let err = |e: &dyn std::fmt::Display| StartError::Client(e.to_string());
    let mut kube_config = match &config.plugin.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| StartError::Client(format!("kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => kube::Config::infer().await.map_err(|e| err(&e))?,
    };
    kube_config.connect_timeout = Some(config.plugin.api_timeout);
    // Names Plexus in the API server's audit log, as thin mode does.
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("plexus/", env!("CARGO_PKG_VERSION"), " (daemon)")),
    ));
    Ok(kube_config)
}

/// Runs the daemon until `shutdown` completes (SIGTERM in the binary), then finishes the requests in flight and
/// sends the queued events.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let metrics = Metrics::new();
    plexus_cni::logging::init_with(&config.plugin.log, Some(PhaseTimer::layer(metrics.clone())));
    metrics.watch_node(metrics::NodePaths {
        records: config.plugin.cni_dir.clone(),
        runtime_conf: config.runtime_conf_dir.clone(),
    });
    let kube_config = client_config(&config).await?;
    let secure_metrics = match config.secure_metrics_address {
        Some(address) => {
            let listener = secure_metrics::Listener::bind(address, &config.node_name)
                .await
                .map_err(|e| StartError::Metrics {
                    address: address.to_string(),
                    source: std::io::Error::other(e),
                })?;
            let client = kube::Client::try_from(kube_config.clone())
                .map_err(|e| StartError::Client(e.to_string()))?;
            Some((listener, client))
        }
        None => None,
    };
    let status = match &config.node_status_namespace {
        Some(namespace) => {
            let client = kube::Client::try_from(kube_config.clone())
                .map_err(|e| StartError::Client(e.to_string()))?;
            Some(tokio::spawn(node_status::run(
                client,
                namespace.clone(),
                config.node_name.clone(),
                metrics.clone(),
            )))
        }
        None => None,
    };
    let api = cache::ApiThread::start(kube_config).map_err(StartError::Client)?;
    let (pod_changes, changed_pods) = std::sync::mpsc::channel();
    let (caches, events) = Caches::start(
        api,
        &config.node_name,
        config.plugin.api_timeout,
        metrics.clone(),
        pod_changes,
    );
    {
        let worker = hotplug::Worker::new(caches.clone(), config.plugin.clone());
        std::thread::Builder::new()
            .name("plexus-hotplug".into())
            .spawn(move || worker.run(changed_pods))
            .map_err(|e| StartError::Client(format!("starting the hot-plug worker: {e}")))?;
    }
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match config.metrics_address {
        Some(address) => {
            let listener = metrics::bind(address)
                .await
                .map_err(|source| StartError::Metrics {
                    address: address.to_string(),
                    source,
                })?;
            info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics");
            Some(tokio::spawn(metrics::serve(
                listener,
                metrics.clone(),
                async {
                    let _ = metrics_stopped.await;
                },
            )))
        }
        None => None,
    };
    let (stop_secure, secure_stopped) = tokio::sync::oneshot::channel::<()>();
    let secure_metrics = secure_metrics.map(|(listener, client)| {
        info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "secure metrics");
        tokio::spawn(listener.serve(metrics.clone(), client, async {
            let _ = secure_stopped.await;
        }))
    });
    let listener = server::bind(&config)?;
    let socket = config.socket_path();
    info!(socket = %socket.display(), node = %config.node_name, "serving");
    let multus = match config.multus_socket_path() {
        Some(path) => {
            let listener = server::bind_at(&path, config.socket_group)?;
            info!(socket = %path.display(), "serving Multus's API");
            Some((listener, path))
        }
        None => None,
    };
    let config = Arc::new(config);
    let shared = Arc::new(server::Shared::new(config, CacheProvider(caches), metrics));
    let shutdown = futures::FutureExt::shared(shutdown);
    let plexus = server::serve(
        listener,
        socket,
        server::PLEXUS,
        shared.clone(),
        shutdown.clone(),
    );
    match multus {
        Some((listener, path)) => {
            let multus = server::serve(listener, path, multus_api::MULTUS, shared, shutdown);
            futures::future::join(plexus, multus).await;
        }
        None => plexus.await,
    }
    events.flush(Duration::from_secs(10)).await;
    if let Some(status) = status {
        status.abort();
    }
    let _ = stop_metrics.send(());
    let _ = stop_secure.send(());
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    if let Some(server) = secure_metrics {
        let _ = server.await;
    }
    info!("stopped");
    Ok(())
}
