//! The unix socket: who may call (file mode and `SO_PEERCRED`), how many requests run at once, and each request run
//! by `plexus_cni::run_with` on a thread of its own (namespace work calls `setns`, which is per thread: never on a
//! tokio worker), answered with exactly what thin mode would print.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_api::cni::{CniError, ErrorCode};
use plexus_cni::Logging;
use plexus_cni::shim::{encode_reply, read_request};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
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
pub async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    config: Arc<DaemonConfig>,
    provider: CacheProvider,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(config.max_concurrent));
    let sandboxes = Arc::new(SandboxOrder::default());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "accepting a connection");
                    continue;
                }
            },
        };
        let refused = match stream.peer_cred() {
            Ok(cred) if allowed(cred.uid(), cred.gid(), config.socket_group) => None,
            Ok(cred) => Some(format!(
                "uid {} gid {} may not use the plexus daemon socket (root{} only)",
                cred.uid(),
                cred.gid(),
                config
                    .socket_group
                    .map(|g| format!(" and group {g}"))
                    .unwrap_or_default()
            )),
            Err(e) => Some(format!("the caller can't be identified: {e}")),
        };
        let Ok(mut stream) = stream.into_std() else {
            continue;
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        if let Some(why) = refused {
            warn!(reason = %why, "caller refused");
            // Read the request first: closing with it unread would reset the connection before the caller reads
            // why.
            let _ = std::thread::Builder::new()
                .name("plexus-refused".into())
                .spawn(move || {
                    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
                    let _ = read_request(&mut stream);
                    let e = CniError::new(ErrorCode::InvalidEnvironment, why);
                    let _ = stream.write_all(&encode_reply(false, &e.to_json()));
                });
            continue;
        }
        // All slots busy: wait for one, or for the shutdown (the caller then gets code 11 and nothing ran).
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (config, provider, metrics, sandboxes) = (
            config.clone(),
            provider.clone(),
            metrics.clone(),
            sandboxes.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("plexus-request".into())
            .spawn(move || {
                handle(stream, &config, &provider, &metrics, &sandboxes);
                drop(slot);
            });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start a request thread");
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    info!("socket closed; waiting for the requests in flight");
    let _ = slots.acquire_many(config.max_concurrent as u32).await;
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
