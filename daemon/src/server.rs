//! The unix sockets: who may call (file mode, `SO_PEERCRED` and `SO_PEERGROUPS`), how many requests run at once (a
//! pool of worker threads per socket, see [`serve`], bounded together), and each request run by
//! `plexus_cni::run_until` on the worker that accepted it (namespace work calls `setns`, which is per thread: never on
//! a tokio worker), answered with exactly what thin mode would print. The socket `plexus.sock` speaks the shim's
//! protocol; the optional `multus.sock` speaks Multus thick's HTTP API ([`crate::multus_api`]) over the same
//! workers, caller checks and per-sandbox order.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_api::cni::{CniError, ErrorCode};
use plexus_api::node_status::{Failure, cut_message};
use plexus_cni::Logging;
use plexus_cni::invoke::CniCommand;
use plexus_cni::shim::{SOCKET_NAME, UntilDeadline, encode_reply, read_request};
use tokio::net::UnixListener;
use tracing::{error, info, warn};

use crate::cache::CacheProvider;
use crate::config::{ConfigFile, DaemonConfig, Reload};
use crate::metrics::{CommandLabels, Metrics, OutcomeLabels};

/// How long a caller may take to send its whole request (the shim sends it at once); then the connection is
/// answered with an error and closed, and the worker is free. Besides this, a request is at most
/// `plexus_cni::shim::MAX_HEADER_BYTES` of header and `MAX_STDIN_BYTES` of stdin.
pub const REQUEST_READ_DEADLINE: Duration = Duration::from_secs(10);
/// How long a refused caller's request is read (and dropped) before its answer, so that the answer is not lost to
/// a reset.
const REFUSED_READ_DEADLINE: Duration = Duration::from_secs(1);

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

/// Makes sure of a socket's directory `dir`: created mode 0750, owned by this process's user (root) and group
/// `group` (`socketGroup`, else its own group) when missing; refused when it is a symbolic link, is not a directory,
/// is owned by another user, or is writable by its group or others. So nobody else can put a file or a symbolic link
/// where the socket goes, and what the daemon does there (remove, bind, change owner and mode) touches its own socket
/// only.
fn socket_dir(dir: &Path, group: Option<u32>) -> Result<(), SocketError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |what: &'static str, source: std::io::Error| SocketError::Io {
        path: dir.display().to_string(),
        what,
        source,
    };
    let refuse = |why: String| err("refused", std::io::Error::other(why));
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err("creating its parent", e))?;
    }
    match std::fs::DirBuilder::new().mode(0o750).create(dir) {
        Ok(()) => {
            std::os::unix::fs::lchown(dir, None, group).map_err(|e| err("setting its group", e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                .map_err(|e| err("setting its mode", e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err("creating it", e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err("reading it", e))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_dir() {
        return Err(refuse(
            "it is not a directory (a symbolic link is refused too)".into(),
        ));
    }
    if meta.uid() != me {
        return Err(refuse(format!(
            "it is owned by uid {}, not by the daemon's uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "its mode {:o} lets its group or others write in it (0750 or tighter)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Binds `<daemonSocketDir>/plexus.sock` ([`bind_at`]).
pub fn bind(config: &DaemonConfig) -> Result<UnixListener, SocketError> {
    bind_at(&config.socket_path(), config.socket_group)
}

/// Binds the socket `path` in a directory [`socket_dir`] accepts, replacing a socket a killed daemon left behind:
/// mode 0600 (root only), or 0660 owned by `group` (`socketGroup`).
pub fn bind_at(path: &Path, group: Option<u32>) -> Result<UnixListener, SocketError> {
    let path = path.to_owned();
    let io = |what: &'static str| {
        let path = path.display().to_string();
        move |source| SocketError::Io { path, what, source }
    };
    socket_dir(path.parent().unwrap_or(Path::new("/")), group)?;
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
    if let Some(gid) = group {
        // Nobody else writes in the directory, so this is the socket just bound; lchown follows no link anyway.
        std::os::unix::fs::lchown(&path, None, Some(gid)).map_err(io("setting its group"))?;
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
/// that took the last idle place starts one more before its request), up to `maxConcurrentDelegates` workers for all
/// the sockets of `shared` together (each socket keeps its first worker); beyond that, callers wait in the socket's
/// backlog until a worker is free (within the shim's timeout).
pub async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    protocol: Protocol,
    shared: Arc<Shared>,
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
        protocol,
        shared,
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
    let name = socket
        .file_name()
        .map_or_else(|| SOCKET_NAME.into(), |n| n.to_string_lossy().into_owned());
    let wake = socket.with_file_name(format!(".{name}.stopping"));
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

/// What a socket speaks: how a worker reads, runs and answers the request of a caller it accepted, and how it answers
/// one it does not run. [`PLEXUS`] for `plexus.sock`; `crate::multus_api::MULTUS` for `multus.sock`.
#[derive(Clone, Copy)]
pub struct Protocol {
    /// Reads one request, runs it (through [`Runner`]) and answers it.
    pub(crate) handle: fn(std::os::unix::net::UnixStream, &Runner<'_>),
    /// The reply to a request that is not run, after reading the request from `reader` (briefly); `None`: no reply
    /// (nothing was sent: the daemon's own wake-up connections).
    pub(crate) refusal: fn(&mut UntilDeadline<'_>, &CniError, Refusal) -> Option<Vec<u8>>,
}

/// The `plexus` shim's protocol (`plexus_cni::shim`).
pub const PLEXUS: Protocol = Protocol {
    handle,
    refusal: |reader, error, why| match (read_request(reader), why) {
        // The daemon's own wake-up connections send nothing and get nothing.
        (Err(_), Refusal::Stopping) => None,
        _ => Some(encode_reply(false, &error.to_json())),
    },
};

/// What the sockets' worker pools share: the config, the source, the metrics, one order per sandbox and the bound on
/// the workers.
pub struct Shared {
    /// The config as started: the daemon's own keys.
    config: Arc<DaemonConfig>,
    /// The config the requests run with (read again when the file changes).
    file: ConfigFile,
    provider: CacheProvider,
    metrics: Arc<Metrics>,
    sandboxes: SandboxOrder,
    /// Workers started, all sockets together.
    workers: AtomicUsize,
}

impl Shared {
    pub fn new(config: Arc<DaemonConfig>, provider: CacheProvider, metrics: Arc<Metrics>) -> Self {
        Self {
            file: ConfigFile::new(config.clone()),
            config,
            provider,
            metrics,
            sandboxes: SandboxOrder::default(),
            workers: AtomicUsize::new(0),
        }
    }
}

/// The worker threads of one socket.
struct Pool {
    listener: std::os::unix::net::UnixListener,
    protocol: Protocol,
    shared: Arc<Shared>,
    /// Workers waiting in `accept`.
    idle: AtomicUsize,
    /// Workers started for this socket.
    workers: AtomicUsize,
    stopping: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Pool {
    /// Starts one more worker unless there are `maxConcurrentDelegates` already (all sockets together), or the
    /// first one of this socket.
    fn grow(pool: &Arc<Self>) {
        let max = pool.shared.config.max_concurrent;
        let first = pool.workers.load(Ordering::SeqCst) == 0;
        if pool.stopping.load(Ordering::SeqCst)
            || pool
                .shared
                .workers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < max || first).then_some(n + 1)
                })
                .is_err()
        {
            return;
        }
        pool.workers.fetch_add(1, Ordering::SeqCst);
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
                pool.shared.workers.fetch_sub(1, Ordering::SeqCst);
                error!(error = %e, "cannot start a request thread");
            }
        }
    }

    fn work(self: Arc<Self>) {
        self.serve_until_stopped();
        self.workers.fetch_sub(1, Ordering::SeqCst);
        self.shared.workers.fetch_sub(1, Ordering::SeqCst);
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
                let e = CniError::new(
                    ErrorCode::TryAgainLater,
                    "the plexus daemon is stopping; it did not run this request",
                );
                self.refuse(&mut stream, &e, Refusal::Stopping);
                return;
            }
            // Keep one worker waiting for the next caller while this one works.
            if idle == 0 {
                Self::grow(self);
            }
            let group = self.shared.config.socket_group;
            let refused = match caller(&stream, group) {
                Ok(c) if allowed(&c, group) => None,
                Ok(c) => Some(format!(
                    "uid {} gid {} (groups {:?}) may not use the plexus daemon socket (root{} only)",
                    c.uid,
                    c.gid,
                    c.groups,
                    group.map(|g| format!(" and group {g}")).unwrap_or_default()
                )),
                Err(e) => Some(format!("the caller can't be identified: {e}")),
            };
            if let Some(why) = refused {
                warn!(reason = %why, "caller refused");
                let e = CniError::new(ErrorCode::InvalidEnvironment, why);
                self.refuse(&mut stream, &e, Refusal::Caller);
                continue;
            }
            let shared = &self.shared;
            let (config, reload) = shared.file.current();
            match reload {
                Some(Reload::Applied) => shared.metrics.config_reload("applied"),
                Some(Reload::Failed(_)) => shared.metrics.config_reload("failed"),
                None => {}
            }
            let runner = Runner {
                config: &config,
                provider: &shared.provider,
                metrics: &shared.metrics,
                sandboxes: &shared.sandboxes,
            };
            (self.protocol.handle)(stream, &runner);
        }
    }

    /// Answers a request that is not run with `error`, in the socket's protocol. The request is read first (briefly:
    /// a refused caller must not hold a worker), since closing with it unread would reset the connection before the
    /// caller reads why.
    fn refuse(&self, stream: &mut std::os::unix::net::UnixStream, error: &CniError, why: Refusal) {
        let mut reader = UntilDeadline {
            stream: &*stream,
            deadline: Instant::now() + REFUSED_READ_DEADLINE,
        };
        if let Some(reply) = (self.protocol.refusal)(&mut reader, error, why) {
            let _ = stream.write_all(&reply);
        }
    }
}

/// Why a request is not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The daemon is stopping.
    Stopping,
    /// The caller may not use the socket.
    Caller,
}

/// Who is at the other end of a connection, as the kernel recorded it when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Caller {
    uid: u32,
    gid: u32,
    /// Its supplementary groups, when they decide (see [`caller`]).
    groups: Vec<u32>,
}

/// The caller's credentials; its supplementary groups only when they decide (not root, a `socketGroup` set, and not
/// its primary group): no system call more per request of the runtime (root).
fn caller(stream: &std::os::unix::net::UnixStream, group: Option<u32>) -> std::io::Result<Caller> {
    use std::os::fd::AsFd;
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    let groups = match group {
        Some(g) if cred.uid() != 0 && cred.gid() != g => peer_groups(stream.as_fd())?,
        _ => Vec::new(),
    };
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        groups,
    })
}

/// The supplementary groups of the process at the other end of a unix socket, as they were when it connected
/// (`getsockopt(SO_PEERGROUPS)`, Linux 4.13 and later; nix 0.30 has no socket option for it). The kernel writes
/// at most the buffer's length and says how long the list is: a longer list (`ERANGE`) is read again with a buffer
/// that fits, up to the kernel's limit of 65536 groups.
#[allow(unsafe_code)]
fn peer_groups(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * GID) as libc::socklen_t;
        // SAFETY: `groups` is a live, writable buffer of `len` bytes, which is all the kernel may write; `len` is a
        // valid socklen_t the kernel sets to the list's length.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / GID;
        if rc == 0 {
            groups.truncate(needed.min(groups.len()));
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() && needed <= 65536 {
            groups.resize(needed, 0);
            continue;
        }
        return Err(e);
    }
}

/// Root, or a member of `socketGroup` (its primary group or one of its supplementary groups).
fn allowed(caller: &Caller, group: Option<u32>) -> bool {
    caller.uid == 0 || group.is_some_and(|g| caller.gid == g || caller.groups.contains(&g))
}

/// Code 4 when `netns` (a request's `CNI_NETNS`) is the network namespace of the daemon or of PID 1, the node's
/// own: a caller of the socket never makes the daemon's delegates add or delete interfaces, addresses or routes of
/// the node itself. Another path (a pod's namespace, or one that does not exist) is left to the request.
pub(crate) fn node_netns(netns: &str) -> Option<CniError> {
    use std::os::unix::fs::MetadataExt;
    if netns.is_empty() {
        return None;
    }
    let id = |path: &str| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let requested = id(netns)?;
    ["/proc/self/ns/net", "/proc/1/ns/net"]
        .iter()
        .any(|own| id(own) == Some(requested))
        .then(|| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "CNI_NETNS={netns:?} is the node's own network namespace (the daemon's or PID 1's): refused"
                ),
            )
        })
}

/// The `command` label of a request: one of the CNI commands, or `other` for whatever else a caller sends.
pub(crate) fn command_label(command: &str) -> &'static str {
    CniCommand::parse(command).map_or("other", CniCommand::as_str)
}

/// The `code` label: a CNI error code (0 to 999), or `other`.
fn code_label(code: u32) -> String {
    if code < 1000 {
        code.to_string()
    } else {
        "other".into()
    }
}

/// One request at a time per sandbox (container id and interface) inside the daemon, for the request's whole
/// duration: with the check that the shim still waits ([`plexus_cni::shim::Request::abandoned`]), an ADD whose shim
/// gave up either runs to its end before the runtime's following DEL, or does not run at all.
#[derive(Default)]
pub(crate) struct SandboxOrder(Mutex<HashMap<String, Arc<Mutex<()>>>>);

impl SandboxOrder {
    pub(crate) fn run<T>(&self, key: String, request: impl FnOnce() -> T) -> T {
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

/// What a worker runs a request with: the config of the moment and what the workers share.
pub(crate) struct Runner<'a> {
    pub(crate) config: &'a DaemonConfig,
    pub(crate) provider: &'a CacheProvider,
    pub(crate) metrics: &'a Metrics,
    pub(crate) sandboxes: &'a SandboxOrder,
}

/// What a CNI request ends with: what `plexus` would print, or its CNI error.
pub(crate) type Outcome = Result<Option<String>, CniError>;

impl Runner<'_> {
    /// Runs one CNI request (`env`, the stdin config `stdin`) as the daemon runs every request, whichever socket it
    /// came in on: with the daemon's config ([`DaemonConfig::request_config`]: the caller chooses no directory,
    /// binary or delegate), the node's own network namespace refused, one request at a time per sandbox, not started
    /// once `deadline` (when the caller stops waiting) has passed, by `plexus_cni::run_until`; then `reply` answers
    /// the caller, and the request is counted.
    pub(crate) fn cni_request(
        &self,
        env: &BTreeMap<String, String>,
        stdin: &[u8],
        deadline: Instant,
        reply: impl FnOnce(&Outcome),
    ) {
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let var = |k: &str| env.get(k).map(String::as_str).unwrap_or_default();
        let command = command_label(var("CNI_COMMAND"));
        let stdin = self.config.request_config(stdin);
        let sandbox = format!("{}/{}", var("CNI_CONTAINERID"), var("CNI_IFNAME"));
        let outcome = self.sandboxes.run(sandbox, || {
            if let Some(refused) = node_netns(var("CNI_NETNS")) {
                warn!(command = %command, netns = var("CNI_NETNS"), "refused: the node's own network namespace");
                return Err(refused);
            }
            if Instant::now() >= deadline {
                warn!(command = %command, container = var("CNI_CONTAINERID"), "the caller stopped waiting before this request started: not run");
                return Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    "the plexus daemon got to this request after its caller stopped waiting; it was not run",
                ));
            }
            plexus_cni::guard(|| {
                plexus_cni::run_until(
                    self.provider,
                    Logging::Installed,
                    // The caller's CNI_PATH is not used: delegates are found in the file's binDir only.
                    |k| (k != "CNI_PATH").then(|| env.get(k).cloned()).flatten(),
                    &stdin,
                    Some(deadline),
                )
            })
        });
        reply(&outcome);
        if let Err(e) = &outcome {
            let pod = plexus_cni::plan::PodArgs::from_cni_args(var("CNI_ARGS"))
                .map(|p| format!("{}/{}", p.namespace, p.name));
            self.metrics.failure(Failure {
                at: String::new(),
                pod,
                container_id: var("CNI_CONTAINERID").chars().take(64).collect(),
                command: command.to_owned(),
                code: e.code,
                message: cut_message(&if e.details.is_empty() {
                    e.msg.clone()
                } else {
                    format!("{}; {}", e.msg, e.details)
                }),
            });
        }
        self.counted(command, &outcome, started);
    }

    /// Counts a request that ended with `outcome` (in flight until now).
    pub(crate) fn counted<T>(
        &self,
        command: &'static str,
        outcome: &Result<T, CniError>,
        started: Instant,
    ) {
        let labels = match outcome {
            Ok(_) => OutcomeLabels {
                command: command.into(),
                outcome: "success",
                code: "0".into(),
            },
            Err(e) => OutcomeLabels {
                command: command.into(),
                outcome: "error",
                code: code_label(e.code),
            },
        };
        self.metrics.in_flight.dec();
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .request_duration
            .get_or_create(&CommandLabels {
                command: command.into(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.provider.after_reply();
    }
}

/// Reads one request of the shim's, runs it and answers it.
fn handle(mut stream: std::os::unix::net::UnixStream, runner: &Runner<'_>) {
    let request = match read_request(&mut UntilDeadline {
        stream: &stream,
        deadline: Instant::now() + REQUEST_READ_DEADLINE,
    }) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "unreadable request");
            let e = CniError::new(ErrorCode::Io, e.to_string());
            let _ = stream.write_all(&encode_reply(false, &e.to_json()));
            return;
        }
    };
    // The shim's deadline: a request it gave up on before it started does not start.
    runner.cni_request(
        &request.env,
        &request.stdin,
        request.deadline(),
        |outcome| {
            let reply = match outcome {
                Ok(output) => encode_reply(true, output.as_deref().unwrap_or_default()),
                Err(e) => encode_reply(false, &e.to_json()),
            };
            if let Err(e) = stream.write_all(&reply) {
                warn!(error = %e, "the caller left before the reply");
            }
            drop(stream);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_or_the_socket_group() {
        let c = |uid, gid, groups: &[u32]| Caller {
            uid,
            gid,
            groups: groups.to_vec(),
        };
        assert!(allowed(&c(0, 0, &[]), None));
        assert!(allowed(&c(0, 5, &[]), Some(7)));
        assert!(!allowed(&c(1000, 1000, &[7]), None));
        assert!(allowed(&c(1000, 7, &[]), Some(7)));
        assert!(allowed(&c(1000, 8, &[3, 7]), Some(7)));
        assert!(!allowed(&c(1000, 8, &[3, 9]), Some(7)));
    }

    #[test]
    fn the_kernel_reports_the_peers_supplementary_groups() {
        use std::os::fd::AsFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut seen = peer_groups(a.as_fd()).unwrap();
        mine.sort();
        seen.sort();
        assert_eq!(seen, mine);
    }

    #[test]
    fn the_socket_directory_is_made_0750_and_a_link_or_a_writable_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("a/run");
        socket_dir(&made, Some(4243)).unwrap();
        let meta = std::fs::symlink_metadata(&made).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o750, 4243));
        // Made again by the next start: accepted as it is.
        socket_dir(&made, Some(4243)).unwrap();

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        let e = socket_dir(&link, Some(4243)).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = socket_dir(&open, Some(4243)).unwrap_err().to_string();
        assert!(e.contains("lets its group or others write"), "{e}");

        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let e = socket_dir(&theirs, Some(4243)).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }

    #[test]
    fn the_nodes_own_network_namespace_is_refused() {
        // PID 1's only where this sandbox lets it be read.
        for own in ["/proc/self/ns/net", "/proc/1/ns/net"] {
            if std::fs::metadata(own).is_err() {
                continue;
            }
            let e = node_netns(own).unwrap();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains("node's own network namespace"), "{e:?}");
        }
        assert!(node_netns("").is_none());
        assert!(node_netns("/nonexistent/netns").is_none());
        let other = tempfile::NamedTempFile::new().unwrap();
        assert!(node_netns(&other.path().display().to_string()).is_none());
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(command_label("ADD"), "ADD");
        assert_eq!(command_label("x".repeat(10_000).as_str()), "other");
        assert_eq!(code_label(11), "11");
        assert_eq!(code_label(u32::MAX), "other");
    }
}
