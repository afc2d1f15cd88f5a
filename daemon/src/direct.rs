//! Each request thread's own HTTP/1.1 connection to the API server, for the network-status PATCH of its ADDs.
//!
//! The daemon's shared client ([`crate::cache::ApiThread`]) lives on a thread of its own: a PATCH sent through it
//! crosses to that thread and back, and rides HTTP/2. Both cost time on every ADD's path (the daemon's debug trace
//! measured about 0.3 ms each way for the crossings). A request thread instead sends the PATCH itself, on a
//! connection that lives on its own runtime (`plexus_cni::thread_runtime`): the only wake-up left is the
//! response's. The watches and the cache-miss GETs stay on the shared client.
//!
//! What keeps a TLS handshake off the ADD's path, and TLS handshakes few:
//! - A thread makes its connection after the reply of an ADD that found none (the runtime has its answer by then),
//!   whose PATCH went through over the shared client; only while ADDs come often to the thread, i.e. when its
//!   previous ADD was less than [`FIRST_REQUEST_LIMIT`] before (a node starting pods). ADDs further apart all go
//!   over the shared client, which the watches keep open: a connection made after one of them would be closed
//!   before the next. A thread serves DELs without one.
//! - k8s.io/apiserver closes an HTTP/1.1 connection that sends no request for 32 s after it is opened
//!   (`ReadHeaderTimeout`), and one idle for 90 s after a request (`IdleTimeout`). So a connection is not used once
//!   [`FIRST_REQUEST_LIMIT`] passed without a request on it, nor [`IDLE_LIMIT`] after its last one: it is dropped,
//!   and the PATCH goes over the shared client.
//! - A PATCH that fails on the thread's connection without an answer from the API server (the connection was closed
//!   under it: a proxy's shorter idle timeout, an API server restart) is sent again over the shared client, within
//!   what is left of `apiTimeoutSeconds`. The merge patch sets a value, so a second one that lands changes nothing.
//!   A PATCH the API server answered with an error, or that did not finish within `apiTimeoutSeconds`, is not sent
//!   again.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::HttpConnector;
use plexus_cni::source::SourceError;
use tower::{BoxError, ServiceExt};
use tracing::{debug, warn};

/// A thread's connection unused for this long after a request is not used again (the API server closes it at 90 s).
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// A thread's connection without a request this long after it was made is not used (the API server closes it at
/// 32 s); and only an ADD that comes within this long of the thread's previous one makes a connection.
pub const FIRST_REQUEST_LIMIT: Duration = Duration::from_secs(30);

type Sender = hyper::client::conn::http1::SendRequest<kube::client::Body>;

/// What each thread's connection is made from: the daemon's client settings and its TLS connector (HTTP/1.1 only).
pub struct Dialer {
    config: kube::Config,
    connector: hyper_rustls::HttpsConnector<HttpConnector>,
    timeout: Duration,
    /// kube's authentication layer, made once: every thread's client shares its token and its refresh (an exec
    /// plugin runs at the daemon's start and when its token expires, not for each connection).
    auth: Option<kube::client::middleware::AuthLayer>,
}

/// One thread's connection and kube's client over it.
struct ThreadConnection {
    client: kube::Client,
    sender: Arc<Mutex<Option<Sender>>>,
    made: Instant,
    /// When its last request ended.
    used: Option<Instant>,
}

impl ThreadConnection {
    /// Open, and within the API server's limits: [`FIRST_REQUEST_LIMIT`] after it was made until its first request,
    /// [`IDLE_LIMIT`] after its last one.
    fn usable(&self) -> bool {
        fresh(self.made, self.used, Instant::now())
            && self
                .sender
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|s| !s.is_closed())
    }
}

thread_local! {
    static CONNECTION: RefCell<Option<ThreadConnection>> = const { RefCell::new(None) };
    /// This thread's last ADD had no connection to use, and ADDs come often to this thread (or its connection broke
    /// under it), and its PATCH went through the shared client: one is made after its reply.
    static WANTED: Cell<bool> = const { Cell::new(false) };
    /// When this thread's previous ADD wrote network-status.
    static LAST_ADD: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// How a PATCH on the thread's connection ended, when it did not succeed.
pub enum Failed {
    /// The API server answered, or the time ran out: this is the PATCH's outcome.
    Final(SourceError),
    /// No answer from the API server (logged): the connection is dropped; send it over the shared client.
    Retry,
}

impl Dialer {
    pub fn new(config: &kube::Config, timeout: Duration) -> Result<Self, kube::Error> {
        Ok(Self {
            config: config.clone(),
            connector: plexus_cni::source::api_connector(config, timeout, false)?,
            timeout,
            auth: kube::client::ConfigExt::auth_layer(config)?,
        })
    }

    /// For an ADD's network-status: kube's client over this thread's connection, when it has a usable one;
    /// otherwise `None`, and when ADDs come often to this thread, the thread makes one after its reply
    /// ([`Self::connect_if_wanted`]) if the PATCH goes through over the shared client ([`Self::shared_written`]).
    /// Requests go to the thread that has waited longest, so with several idle threads each sees ADDs less often
    /// than the daemon does: they then all write over the shared client, and none makes a connection it won't use.
    pub fn client(&self) -> Option<kube::Client> {
        let now = Instant::now();
        let previous = LAST_ADD.replace(Some(now));
        let client = CONNECTION.with_borrow_mut(|slot| {
            if !slot.as_ref().is_some_and(ThreadConnection::usable) && slot.take().is_some() {
                debug!("this thread's API connection is idle or closed: dropped");
            }
            slot.as_ref().map(|c| c.client.clone())
        });
        if client.is_none() {
            WANTED.set(often(previous, now));
        }
        client
    }

    /// The outcome of a PATCH on the thread's connection: success keeps the connection fresh; a failure without an
    /// answer drops it.
    pub fn outcome(&self, result: Result<(), SourceError>) -> Result<(), Failed> {
        match result {
            Ok(()) => {
                CONNECTION.with_borrow_mut(|slot| {
                    if let Some(c) = slot.as_mut() {
                        c.used = Some(Instant::now());
                    }
                });
                Ok(())
            }
            Err(e) if !unanswered(&e) => Err(Failed::Final(e)),
            Err(e) => {
                warn!(error = %e, "the PATCH failed on this thread's API connection: dropped; sending it on the shared one");
                CONNECTION.set(None);
                WANTED.set(true);
                Err(Failed::Retry)
            }
        }
    }

    /// How the PATCH went over the shared client: only after one that went through does the thread connect (an API
    /// server that can't be reached would hold the thread in the attempt).
    pub fn shared_written(&self, written: bool) {
        if !written {
            WANTED.set(false);
        }
    }

    /// After a reply: makes this thread's connection if its last ADD wanted one (a TLS handshake, within the
    /// daemon's `apiTimeoutSeconds`). Runs on the thread's runtime; `Ok(false)` when none was wanted.
    pub async fn connect_if_wanted(&self) -> Result<bool, BoxError> {
        if !WANTED.replace(false) {
            return Ok(false);
        }
        let connection = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| format!("no connection within {}s", self.timeout.as_secs_f64()))??;
        CONNECTION.set(Some(connection));
        Ok(true)
    }

    async fn connect(&self) -> Result<ThreadConnection, BoxError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.config.cluster_url.clone())
            .await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        // Driven while the thread's runtime runs a request; it ends once the sender is dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "this thread's API connection ended");
            }
        });
        let sender = Arc::new(Mutex::new(Some(sender)));
        let inner = {
            let sender = sender.clone();
            tower::service_fn(move |request| send(sender.clone(), request))
        };
        let client = plexus_cni::source::layered_client(&self.config, self.auth.as_ref(), inner)?;
        Ok(ThreadConnection {
            client,
            sender,
            made: Instant::now(),
            used: None,
        })
    }
}

/// Whether a connection made at `made`, whose last request ended at `used`, is still within the API server's limits
/// at `now`.
fn fresh(made: Instant, used: Option<Instant>, now: Instant) -> bool {
    match used {
        Some(used) => now.duration_since(used) < IDLE_LIMIT,
        None => now.duration_since(made) < FIRST_REQUEST_LIMIT,
    }
}

/// Whether ADDs come often enough to this thread, at `now`, for a connection made after this one's reply to be used:
/// the thread's previous ADD came within [`FIRST_REQUEST_LIMIT`].
fn often(previous: Option<Instant>, now: Instant) -> bool {
    previous.is_some_and(|p| now.duration_since(p) < FIRST_REQUEST_LIMIT)
}

/// Whether the PATCH failed in the connection (the request could not be sent, or its answer read): it is then sent
/// again over the shared client. Not when the API server answered with an error status, nor when the time ran out,
/// nor for what a second connection would not change (authentication, the request itself).
fn unanswered(e: &SourceError) -> bool {
    matches!(
        e,
        SourceError::Api {
            source: kube::Error::Service(_) | kube::Error::HyperError(_),
            ..
        }
    )
}

/// Sends one request on the connection, in origin form with a `Host` header (what an HTTP/1.1 server expects; kube's
/// layers give an absolute URI).
async fn send(
    slot: Arc<Mutex<Option<Sender>>>,
    request: http::Request<kube::client::Body>,
) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
    let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    let mut sender = taken.ok_or("this thread's API connection is closed")?;
    let (mut parts, body) = request.into_parts();
    if let Some(authority) = parts.uri.authority()
        && !parts.headers.contains_key(http::header::HOST)
    {
        let host = http::HeaderValue::from_str(authority.as_str())?;
        parts.headers.insert(http::header::HOST, host);
    }
    if let Some(path) = parts.uri.path_and_query() {
        parts.uri = http::Uri::from(path.clone());
    }
    sender.ready().await?;
    let response = sender
        .send_request(http::Request::from_parts(parts, body))
        .await?;
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_used_within_the_api_servers_limits() {
        let made = Instant::now();
        let s = Duration::from_secs;
        assert!(fresh(made, None, made + s(29)));
        assert!(
            !fresh(made, None, made + s(30)),
            "no first request within 30 s"
        );
        assert!(fresh(made, Some(made + s(20)), made + s(79)));
        assert!(!fresh(made, Some(made + s(20)), made + s(80)), "idle 60 s");
    }

    #[test]
    fn only_adds_that_come_often_make_a_connection() {
        let now = Instant::now() + Duration::from_secs(100);
        assert!(!often(None, now), "the thread's first ADD");
        assert!(often(Some(now - Duration::from_secs(29)), now));
        assert!(!often(Some(now - Duration::from_secs(30)), now));
    }

    #[test]
    fn only_an_error_without_an_answer_is_sent_again() {
        let timeout = SourceError::Timeout {
            what: "PATCH".into(),
            seconds: 1.0,
        };
        assert!(!unanswered(&timeout));
        let status = kube::core::Status::failure("conflict", "Conflict").with_code(409);
        let answered = SourceError::Api {
            what: "PATCH".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        assert!(!unanswered(&answered));
        let closed = SourceError::Api {
            what: "PATCH".into(),
            source: kube::Error::Service("connection closed before message completed".into()),
        };
        assert!(unanswered(&closed));
        let auth = SourceError::Api {
            what: "PATCH".into(),
            source: kube::Error::Auth(kube::client::AuthError::ExecMissingClusterInfo),
        };
        assert!(!unanswered(&auth));
    }
}
