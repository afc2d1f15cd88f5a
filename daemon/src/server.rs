//! The unix socket: who may call (file mode and `SO_PEERCRED`), how many requests run at once (a pool of worker
//! threads, see [`serve`]), and each request run by `plexus_cni::run_with` on the worker that accepted it (namespace
//! work calls `setns`, which is per thread: never on a tokio worker), answered with exactly what thin mode would
//! print.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_api::cni::{CniError, ErrorCode};
use plexus_cni::Logging;
use plexus_cni::shim::{SOCKET_NAME, encode_reply, read_request};
use tokio::net::UnixListener;
use tracing::{error, info, warn};

use crate::cache::CacheProvider;
use crate::config::DaemonConfig;
use crate::metrics::{CommandLabels, Metrics, OutcomeLabels};

/// How long a caller may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the socket can't be served.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("socket {path}: {what}: {source}")]
    Io {
        path: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// Binds `<daemonSocketDir>/plexus.sock`, replacing a socket a killed daemon left behind: mode 0600 (root only), or
/// 0660 owned by `socketGroup`.
pub fn bind(config: &DaemonConfig) -> Result<UnixListener, SocketError> {
    let path = config.socket_path();
    let io = |what: &'static str| {
        let path = path.display().to_string();
        move |source| SocketError::Io { path, what, source }
    };
    std::fs::create_dir_all(&config.socket_dir).map_err(io("creating its directory"))?;
    match std::fs::remove_file(&path) {
        Ok(()) => info!(socket = %path.display(), "replaced a socket left behind"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing the old socket")(e)),
    }
    // No moment with a wider mode: the socket is created under a umask that leaves the owner only.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(&path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(io("binding"))?;
    if let Some(gid) = config.socket_group {
        std::os::unix::fs::chown(&path, None, Some(gid)).map_err(io("setting its group"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
            .map_err(io("setting its mode"))?;
    }
    Ok(listener)
}

/// Serves until `shutdown` completes, then stops accepting, removes the socket and waits for the requests in
/// flight to finish.
///
/// Requests are served by worker threads that each block in `accept` and run the request they accepted on their own
/// thread (namespace work calls `setns`, which is per thread: never on a tokio worker): a connection wakes one
/// waiting worker and nothing else. The pool starts with one worker and grows while every worker is busy (the worker
/// that took the last idle place starts one more before its request), up to `maxConcurrentDelegates`; beyond that, callers wait in the socket's
/// backlog until a worker is free (within the shim's timeout).
pub async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    config: Arc<DaemonConfig>,
    provider: CacheProvider,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let listener = match listener
        .into_std()
        .and_then(|l| l.set_nonblocking(false).map(|()| l))
    {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "the socket can't be served");
            return;
        }
    };
    let pool = Arc::new(Pool {
        listener,
        config,
        provider,
        metrics,
        sandboxes: SandboxOrder::default(),
        idle: AtomicUsize::new(0),
        workers: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        threads: Mutex::new(Vec::new()),
    });
    Pool::grow(&pool);
    shutdown.await;
    pool.stopping.store(true, Ordering::SeqCst);
    // Workers blocked in accept are woken by connections of the daemon's own (each sees `stopping` and ends; busy
    // ones end after their request), through a second name of the socket, so that the public one goes now.
    let wake = socket.with_file_name(format!(".{SOCKET_NAME}.stopping"));
    let _ = std::fs::remove_file(&wake);
    let wake = match std::fs::hard_link(&socket, &wake) {
        Ok(()) => wake,
        Err(e) => {
            warn!(error = %e, "no second name for the socket: waking the workers through it before removing it");
            socket.clone()
        }
    };
    if wake != socket {
        let _ = std::fs::remove_file(&socket);
    }
    info!("socket closed; waiting for the requests in flight");
    let waker = pool.clone();
    let _ = tokio::task::spawn_blocking(move || {
        while waker.workers.load(Ordering::SeqCst) > 0 {
            if waker.idle.load(Ordering::SeqCst) > 0 {
                wake_one(&wake);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&wake);
        let threads = std::mem::take(&mut *waker.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
}

/// One connection to the socket, never waiting (a full backlog is tried again by the caller), closed at once.
fn wake_one(socket: &std::path::Path) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket as open};
    let Ok(fd) = open(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return;
    };
    if let Ok(address) = UnixAddr::new(socket) {
        let _ = connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address);
    }
}

/// The worker threads and what they share.
struct Pool {
    listener: std::os::unix::net::UnixListener,
    config: Arc<DaemonConfig>,
    provider: CacheProvider,
    metrics: Arc<Metrics>,
    sandboxes: SandboxOrder,
    /// Workers waiting in `accept`.
    idle: AtomicUsize,
    /// Workers started.
    workers: AtomicUsize,
    stopping: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Pool {
    /// Starts one more worker unless there are `maxConcurrentDelegates` already.
    fn grow(pool: &Arc<Self>) {
        let max = pool.config.max_concurrent;
        if pool.stopping.load(Ordering::SeqCst)
            || pool
                .workers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_err()
        {
            return;
        }
        let worker = pool.clone();
        match std::thread::Builder::new()
            .name("plexus-request".into())
            .spawn(move || worker.work())
        {
            Ok(thread) => pool
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(thread),
            Err(e) => {
                pool.workers.fetch_sub(1, Ordering::SeqCst);
                error!(error = %e, "cannot start a request thread");
            }
        }
    }

    fn work(self: Arc<Self>) {
        self.serve_until_stopped();
        self.workers.fetch_sub(1, Ordering::SeqCst);
    }

    fn serve_until_stopped(self: &Arc<Self>) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            self.idle.fetch_add(1, Ordering::SeqCst);
            let accepted = self.listener.accept();
            let idle = self.idle.fetch_sub(1, Ordering::SeqCst) - 1;
            let mut stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "accepting a connection");
                    continue;
                }
            };
            if self.stopping.load(Ordering::SeqCst) {
                // A caller that came in as the daemon stops: code 11, nothing ran (the daemon's own wake-up
                // connections send nothing and get nothing).
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                if read_request(&mut stream).is_ok() {
                    let e = CniError::new(
                        ErrorCode::TryAgainLater,
                        "the plexus daemon is stopping; it did not run this request",
                    );
                    let _ = stream.write_all(&encode_reply(false, &e.to_json()));
                }
                return;
            }
            // Keep one worker waiting for the next caller while this one works.
            if idle == 0 {
                Self::grow(self);
            }
            let refused = match nix::sys::socket::getsockopt(
                &stream,
                nix::sys::socket::sockopt::PeerCredentials,
            ) {
                Ok(cred) if allowed(cred.uid(), cred.gid(), self.config.socket_group) => None,
                Ok(cred) => Some(format!(
                    "uid {} gid {} may not use the plexus daemon socket (root{} only)",
                    cred.uid(),
                    cred.gid(),
                    self.config
                        .socket_group
                        .map(|g| format!(" and group {g}"))
                        .unwrap_or_default()
                )),
                Err(e) => Some(format!("the caller can't be identified: {e}")),
            };
            if let Some(why) = refused {
                warn!(reason = %why, "caller refused");
                // Read the request first: closing with it unread would reset the connection before the caller
                // reads why. Briefly: a refused caller must not hold a worker.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = read_request(&mut stream);
                let e = CniError::new(ErrorCode::InvalidEnvironment, why);
                let _ = stream.write_all(&encode_reply(false, &e.to_json()));
                continue;
            }
            handle(
                stream,
                &self.config,
                &self.provider,
                &self.metrics,
                &self.sandboxes,
            );
        }
    }
}

/// Root, or a member (primary group) of `socketGroup`.
fn allowed(uid: u32, gid: u32, group: Option<u32>) -> bool {
    uid == 0 || group == Some(gid)
}

/// One request at a time per sandbox (container id and interface) inside the daemon, for the request's whole
/// duration: with the check that the shim still waits ([`plexus_cni::shim::Request::abandoned`]), an ADD whose shim
/// gave up either runs to its end before the runtime's following DEL, or does not run at all.
#[derive(Default)]
struct SandboxOrder(Mutex<HashMap<String, Arc<Mutex<()>>>>);

impl SandboxOrder {
    fn run<T>(&self, key: String, request: impl FnOnce() -> T) -> T {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let out = {
            let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
            request()
        };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this request hold it: nobody waits, forget it.
        if Arc::strong_count(&lock) == 2 {
            map.remove(&key);
        }
        out
    }
}

/// Runs one request and answers it.
fn handle(
    mut stream: std::os::unix::net::UnixStream,
    config: &DaemonConfig,
    provider: &CacheProvider,
    metrics: &Metrics,
    sandboxes: &SandboxOrder,
) {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let request = match read_request(&mut stream) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "unreadable request");
            let e = CniError::new(ErrorCode::Io, e.to_string());
            let _ = stream.write_all(&encode_reply(false, &e.to_json()));
            return;
        }
    };
    metrics.in_flight.inc();
    let command = request.env.get("CNI_COMMAND").cloned().unwrap_or_default();
    let stdin = config.request_config(&request.stdin);
    let var = |k: &str| request.env.get(k).map(String::as_str).unwrap_or_default();
    let sandbox = format!("{}/{}", var("CNI_CONTAINERID"), var("CNI_IFNAME"));
    let outcome = sandboxes.run(sandbox, || {
        if request.abandoned() {
            warn!(command = %command, container = var("CNI_CONTAINERID"), "the shim stopped waiting before this request started: not run");
            return Err(CniError::new(
                ErrorCode::TryAgainLater,
                "the plexus daemon got to this request after the shim stopped waiting; it was not run",
            ));
        }
        plexus_cni::guard(|| {
            plexus_cni::run_with(
                provider,
                Logging::Installed,
                |k| request.env.get(k).cloned(),
                &stdin,
            )
        })
    });
    let (reply, labels) = match outcome {
        Ok(output) => (
            encode_reply(true, output.as_deref().unwrap_or_default()),
            OutcomeLabels {
                command: command.clone(),
                outcome: "success",
                code: "0".into(),
            },
        ),
        Err(e) => (
            encode_reply(false, &e.to_json()),
            OutcomeLabels {
                command: command.clone(),
                outcome: "error",
                code: e.code.to_string(),
            },
        ),
    };
    if let Err(e) = stream.write_all(&reply) {
        warn!(error = %e, command = %command, "the caller left before the reply");
    }
    drop(stream);
    metrics.in_flight.dec();
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .request_duration
        .get_or_create(&CommandLabels { command })
        .observe(started.elapsed().as_secs_f64());
    provider.after_reply();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_or_the_socket_group() {
        assert!(allowed(0, 0, None));
        assert!(allowed(0, 5, Some(7)));
        assert!(!allowed(1000, 1000, None));
        assert!(allowed(1000, 7, Some(7)));
        assert!(!allowed(1000, 8, Some(7)));
    }
}
