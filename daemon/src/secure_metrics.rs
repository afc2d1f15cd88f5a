//! `/metrics` for a scraper off the node (`secureMetricsAddress`; the chart's PodMonitor): HTTPS with a certificate
//! the daemon makes at start (the scraper skips verification or pins it; the token, not the certificate, is the
//! trust here), and only to a bearer token the API server authenticates and authorizes for `get` on `/metrics`
//! (`plexus_serve::access`). Nothing else is served on it. The connection limits are the webhook's
//! (`plexus_serve::connection`): a client that connects and stalls holds nothing for long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use plexus_serve::access::{Access, Verdict, bearer_token};
use plexus_serve::connection::IdleLimitAcceptor;

use crate::metrics::Metrics;

/// The TLS handshake's time limit, and a request's headers' (HTTP/1.1).
const HANDSHAKE: Duration = Duration::from_secs(5);
/// A connection without a byte either way for this long is closed (a scraper opens a new one).
const IDLE: Duration = Duration::from_secs(90);

struct Served {
    metrics: Arc<Metrics>,
    access: Access,
}

/// A bound listener and its TLS config, ready to serve.
pub struct Listener {
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
}

impl Listener {
    /// Binds `address` and makes a self-signed certificate for `node_name` (and the address's IP).
    pub async fn bind(address: SocketAddr, node_name: &str) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut names = vec![node_name.to_owned()];
        if !address.ip().is_unspecified() {
            names.push(address.ip().to_string());
        }
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names)
                .map_err(|e| format!("making a certificate: {e}"))?;
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.pem().into_bytes(),
            signing_key.serialize_pem().into_bytes(),
        )
        .await
        .map_err(|e| format!("loading the certificate: {e}"))?;
        let listener = std::net::TcpListener::bind(address).map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(Self { listener, tls })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` completes; `client` reviews the callers' tokens.
    pub async fn serve(
        self,
        metrics: Arc<Metrics>,
        client: kube::Client,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let served = Arc::new(Served {
            metrics,
            access: Access::new(client, "/metrics"),
        });
        let app = Router::new()
            .route("/metrics", get(metrics_text))
            .with_state(served);
        let handle = axum_server::Handle::new();
        let stopping = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopping.graceful_shutdown(Some(Duration::from_secs(2)));
        });
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(self.tls)
            .handshake_timeout(HANDSHAKE)
            .acceptor(IdleLimitAcceptor { idle: IDLE });
        let mut server = axum_server::from_tcp(self.listener).acceptor(acceptor);
        server
            .http_builder()
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HANDSHAKE);
        if let Err(e) = server.handle(handle).serve(app.into_make_service()).await {
            tracing::error!(error = %e, "the secure metrics server stopped");
        }
    }
}

async fn metrics_text(State(served): State<Arc<Served>>, headers: HeaderMap) -> Response {
    let token = bearer_token(headers.get(header::AUTHORIZATION));
    match served.access.verdict(token).await {
        Ok(Verdict::Allowed) => crate::metrics::exposition(&served.metrics),
        Ok(Verdict::Unauthenticated) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token the API server authenticates is needed\n",
        )
            .into_response(),
        Ok(Verdict::Forbidden) => (
            StatusCode::FORBIDDEN,
            "this identity may not get /metrics (a ClusterRole with nonResourceURLs [/metrics], verb get)\n",
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "a metrics scrape could not be authorized");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
    }
}
