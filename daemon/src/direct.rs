//! Each request thread's own HTTP/1.1 connection to the API server, for the network-status PATCH of its ADDs.
//!
//! The daemon's shared client ([`crate::cache::ApiThread`]) lives on a thread of its own: a PATCH sent through it
//! crosses to that thread and back, and rides HTTP/2. Both cost time on every ADD's path (the daemon's debug trace
//! measured about 0.3 ms each way for the crossings). A request thread instead sends the PATCH itself, on a
//! connection that lives on its own runtime (`plexus_cni::thread_runtime`): the only wake-up left is the
//! response's. The watches and the cache-miss GETs stay on the shared client.
//!
//! What keeps a TLS handshake off the ADD's path:
//! - A thread makes its connection after the reply of an ADD that found none (the runtime has its answer by then),
//!   and that ADD's PATCH goes over the shared client. A thread serves DELs without one.
//! - The API server closes an HTTP/1.1 connection after 90 s without a request (`IdleTimeout` in k8s.io/apiserver),
//!   so a connection unused for [`IDLE_LIMIT`] is not used again: it is dropped, the PATCH goes over the shared
//!   client (kept open by the watches), and the thread connects again after the reply.
//! - A PATCH that fails on the thread's connection without an answer from the API server (the connection was closed
//!   under it: a proxy's shorter idle timeout, an API server restart) is sent again over the shared client. The
//!   merge patch sets a value, so a second one that lands changes nothing. A PATCH the API server answered with an
//!   error, or that did not finish within `apiTimeoutSeconds`, is not sent again.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::HttpConnector;
use plexus_cni::source::SourceError;
use tower::{BoxError, ServiceExt};
use tracing::{debug, warn};

/// A thread's connection unused for this long is not used again (the API server closes it at 90 s).
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

type Sender = hyper::client::conn::http1::SendRequest<kube::client::Body>;

/// What each thread's connection is made from: the daemon's client settings and its TLS connector (HTTP/1.1 only).
pub struct Dialer {
    config: kube::Config,
    connector: hyper_rustls::HttpsConnector<HttpConnector>,
    timeout: Duration,
}

/// One thread's connection and kube's client over it.
struct ThreadConnection {
    client: kube::Client,
    sender: Arc<Mutex<Option<Sender>>>,
    used: Instant,
}

impl ThreadConnection {
    fn open(&self) -> bool {
        self.sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|s| !s.is_closed())
    }
}

thread_local! {
    static CONNECTION: RefCell<Option<ThreadConnection>> = const { RefCell::new(None) };
    /// This thread's last ADD had no connection to use: one is made after its reply.
    static WANTED: Cell<bool> = const { Cell::new(false) };
}

/// How a PATCH on the thread's connection ended, when it did not succeed.
pub enum Failed {
    /// The API server answered, or the time ran out: this is the PATCH's outcome.
    Final(SourceError),
    /// No answer from the API server: the connection is dropped; send it over the shared client.
    Retry(SourceError),
}

impl Dialer {
    pub fn new(config: &kube::Config, timeout: Duration) -> Result<Self, kube::Error> {
        Ok(Self {
            config: config.clone(),
            connector: plexus_cni::source::api_connector(config, timeout, false)?,
            timeout,
        })
    }

    /// kube's client over this thread's connection, when it has one that is open and was used within
    /// [`IDLE_LIMIT`]; otherwise `None`, and the thread makes one after its reply ([`Self::connect_if_wanted`]).
    pub fn client(&self) -> Option<kube::Client> {
        let client = CONNECTION.with_borrow_mut(|slot| {
            let usable = slot
                .as_ref()
                .is_some_and(|c| c.used.elapsed() < IDLE_LIMIT && c.open());
            if !usable && slot.take().is_some() {
                debug!("this thread's API connection is idle or closed: dropped");
            }
            slot.as_ref().map(|c| c.client.clone())
        });
        if client.is_none() {
            WANTED.set(true);
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
                        c.used = Instant::now();
                    }
                });
                Ok(())
            }
            Err(e) if answered_or_timed_out(&e) => Err(Failed::Final(e)),
            Err(e) => {
                warn!(error = %e, "the PATCH failed on this thread's API connection: dropped; sending it on the shared one");
                CONNECTION.set(None);
                WANTED.set(true);
                Err(Failed::Retry(e))
            }
        }
    }

    /// After a reply: makes this thread's connection if its last ADD had none (a TLS handshake, within the
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
        let client = plexus_cni::source::layered_client(&self.config, inner)?;
        Ok(ThreadConnection {
            client,
            sender,
            used: Instant::now(),
        })
    }
}

/// Whether the API server answered (an error status) or the call ran out of time: either way the PATCH is not
/// sent again.
fn answered_or_timed_out(e: &SourceError) -> bool {
    matches!(
        e,
        SourceError::Timeout { .. }
            | SourceError::Api {
                source: kube::Error::Api(_),
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
    fn only_an_error_without_an_answer_is_sent_again() {
        let timeout = SourceError::Timeout {
            what: "PATCH".into(),
            seconds: 1.0,
        };
        assert!(answered_or_timed_out(&timeout));
        let status = kube::core::Status::failure("conflict", "Conflict").with_code(409);
        let answered = SourceError::Api {
            what: "PATCH".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        assert!(answered_or_timed_out(&answered));
        let closed = SourceError::Api {
            what: "PATCH".into(),
            source: kube::Error::Service("connection closed before message completed".into()),
        };
        assert!(!answered_or_timed_out(&closed));
    }
}
