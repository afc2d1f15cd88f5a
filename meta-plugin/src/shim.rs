//! Thick mode, runtime side: when the stdin config has `daemonSocketDir`, `plexus-shim` (the installer's thick conf
//! names it; `src/bin/plexus-shim.rs`), or `plexus` given the same config, forwards the request (the CNI
//! environment and stdin) to the node daemon's socket `<daemonSocketDir>/plexus.sock` and prints the daemon's reply,
//! which is exactly what thin mode would have printed. A daemon that is down (no socket, or nothing listening: it is
//! restarting, say during a rolling upgrade) is waited for, `daemonWaitSeconds` at most, as multus-shim waits for its
//! daemon; a daemon still down then, or silent for `daemonTimeoutSeconds`, is a CNI error with code 11 ("try again
//! later") naming the socket: never a hang. `STATUS` does not wait: the runtime asks it to learn whether the plugin
//! is ready now.
//!
//! This path runs before anything else in `plexus` (no tokio, no kube client, no TLS): a std `UnixStream` and one
//! small JSON header. The wire format lives here for both ends (the daemon reads with [`read_request`] and answers
//! with [`write_reply`]):
//! - request: a 4-byte big-endian length, that many bytes of a JSON header (`env`: the `CNI_*` variables;
//!   `deadlineMs`: when the shim stops waiting, in milliseconds since the Unix epoch), then the stdin bytes up to the
//!   end of the stream (the shim shuts its writing half down);
//! - reply: one byte (0 success, 1 failure), then what `plexus` prints on stdout, up to the end of the stream.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plexus_api::cni::{CniError, ErrorCode};
use serde::{Deserialize, Serialize};

/// The socket's file name inside `daemonSocketDir`.
pub const SOCKET_NAME: &str = "plexus.sock";
/// How long the shim waits for the daemon's whole reply unless `daemonTimeoutSeconds` says otherwise. Longer than
/// a typical ADD of several networks, shorter than the kubelet's two-minute CRI timeout.
pub const DEFAULT_TIMEOUT_SECONDS: f64 = 100.0;
/// How long the shim waits for a daemon that is down to take the connection unless `daemonWaitSeconds` says
/// otherwise: multus-shim's wait for its daemon (60 s), within `daemonTimeoutSeconds`. A daemon restarted by its
/// DaemonSet is back within seconds; one that stays down fails each ADD after this wait.
pub const DEFAULT_WAIT_SECONDS: f64 = 60.0;
/// How often the shim tries a daemon that is down again while it waits.
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// The CNI variables a request carries.
pub const FORWARDED_VARIABLES: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];
/// The largest env header a daemon accepts.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The largest stdin a daemon accepts.
pub const MAX_STDIN_BYTES: usize = 16 * 1024 * 1024;
/// The largest reply the shim reads: more is an error, not a result (a result is at most what one delegate may
/// print, `plexus_cni::invoke::MAX_DELEGATE_STDOUT_BYTES`, converted).
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

/// The keys of a shim config (everything else in it goes to the daemon untouched).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShimKeys {
    #[serde(default)]
    cni_version: Option<String>,
    #[serde(default)]
    daemon_socket_dir: Option<String>,
    #[serde(default)]
    daemon_timeout_seconds: Option<f64>,
    #[serde(default)]
    daemon_wait_seconds: Option<f64>,
}

/// Where and how long to ask the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Shim {
    pub socket: PathBuf,
    pub timeout: Duration,
    /// How long a daemon that is down is waited for (at most `timeout`).
    pub wait: Duration,
    cni_version: String,
}

/// What the daemon answered: what `plexus` prints and whether it exits with success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub success: bool,
    pub stdout: String,
}

impl Shim {
    /// The shim settings of a stdin config, or `None` when it is not a shim config (no `daemonSocketDir`, or not
    /// a JSON object at all: thin mode then reports what is wrong with it). A bad `daemonTimeoutSeconds` is a
    /// config error.
    pub fn from_stdin(stdin: &[u8]) -> Option<Result<Self, CniError>> {
        let keys: ShimKeys = serde_json::from_slice(stdin).ok()?;
        let dir = keys.daemon_socket_dir.filter(|d| !d.is_empty())?;
        let cni_version = keys.cni_version.unwrap_or_default();
        let invalid = |msg: String| {
            Some(Err(
                CniError::new(ErrorCode::InvalidConfig, msg).with_version(cni_version.clone())
            ))
        };
        if !dir.starts_with('/') {
            return invalid(format!("daemonSocketDir {dir:?} must be an absolute path"));
        }
        let max = crate::config::MAX_SECONDS;
        let seconds = keys
            .daemon_timeout_seconds
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        let timeout = match Duration::try_from_secs_f64(seconds) {
            Ok(d) if seconds > 0.0 && seconds <= max => d,
            _ => {
                return invalid(format!(
                    "daemonTimeoutSeconds must be a positive number of seconds, at most {max}, not {seconds}"
                ));
            }
        };
        let seconds = keys.daemon_wait_seconds.unwrap_or(DEFAULT_WAIT_SECONDS);
        let wait = match Duration::try_from_secs_f64(seconds) {
            Ok(d) if seconds <= max => d,
            _ => {
                return invalid(format!(
                    "daemonWaitSeconds must be a number of seconds from 0 to {max}, not {seconds}"
                ));
            }
        };
        Some(Ok(Self {
            socket: Path::new(&dir).join(SOCKET_NAME),
            timeout,
            wait: wait.min(timeout),
            cni_version,
        }))
    }

    /// Sends the request and waits for the reply, at most the timeout in all.
    pub fn forward(
        &self,
        env_lookup: impl Fn(&str) -> Option<String>,
        stdin: &[u8],
    ) -> Result<Reply, CniError> {
        let deadline = Instant::now() + self.timeout;
        let unavailable = |what: String| {
            CniError::new(
                ErrorCode::TryAgainLater,
                format!(
                    "the plexus daemon at {} {what}; try again later",
                    self.socket.display()
                ),
            )
            .with_version(self.cni_version.clone())
        };
        let env = FORWARDED_VARIABLES
            .iter()
            .filter_map(|k| env_lookup(k).map(|v| ((*k).to_owned(), v)))
            .collect();
        let header =
            encode_request_header(env, unix_ms(std::time::SystemTime::now() + self.timeout));
        let remaining = |deadline: Instant| {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
        };
        // STATUS asks whether the plugin is ready now: it does not wait for a daemon that is down.
        let wait = match env_lookup("CNI_COMMAND").as_deref() {
            Some("STATUS") => Duration::ZERO,
            _ => self.wait,
        };
        let stop_waiting = Instant::now() + wait;
        let mut stream = loop {
            let left = remaining(deadline).unwrap_or(Duration::from_micros(1));
            match connect(&self.socket, left) {
                Ok(stream) => break stream,
                Err(e) if down(&e) && Instant::now() < stop_waiting => {
                    let left = stop_waiting.saturating_duration_since(Instant::now());
                    std::thread::sleep(RETRY_EVERY.min(left));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(unavailable(format!(
                        "did not take the connection within {}s (daemonTimeoutSeconds)",
                        self.timeout.as_secs_f64()
                    )));
                }
                Err(e) if !wait.is_zero() => {
                    return Err(unavailable(format!(
                        "can't be reached: {e} (waited {}s for it, daemonWaitSeconds)",
                        wait.as_secs_f64()
                    )));
                }
                Err(e) => return Err(unavailable(format!("can't be reached: {e}"))),
            }
        };
        let send = (|| {
            stream.set_write_timeout(Some(self.timeout))?;
            stream.write_all(&header)?;
            stream.write_all(stdin)?;
            stream.shutdown(std::net::Shutdown::Write)
        })();
        // A daemon that refuses the caller answers and closes without reading: its answer is still there to read.
        let not_sent = send.err();
        let mut reply = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let Some(left) = remaining(deadline) else {
                return Err(unavailable(format!(
                    "did not answer within {}s (daemonTimeoutSeconds)",
                    self.timeout.as_secs_f64()
                )));
            };
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| unavailable(format!("can't be read: {e}")))?;
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) if reply.len() + n > MAX_REPLY_BYTES + 1 => {
                    return Err(CniError::new(
                        ErrorCode::Io,
                        format!(
                            "the plexus daemon at {} sent a reply of more than {MAX_REPLY_BYTES} bytes",
                            self.socket.display()
                        ),
                    )
                    .with_version(self.cni_version.clone()));
                }
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) if not_sent.is_some() => break,
                Err(e) => return Err(unavailable(format!("broke off its reply: {e}"))),
            }
        }
        let Some((&status, stdout)) = reply.split_first() else {
            return Err(unavailable(match not_sent {
                Some(e) => format!("did not take the request: {e}"),
                None => "closed the connection without an answer".into(),
            }));
        };
        Ok(Reply {
            success: status == 0,
            stdout: String::from_utf8_lossy(stdout).into_owned(),
        })
    }
}

/// The shim's part of a request, for both binaries: the daemon's reply when `stdin` is a shim config, `None` when it
/// is not (or for VERSION, which is never forwarded: the caller answers it, as in thin mode).
pub fn forward_if_shim(
    env_lookup: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Option<Result<Reply, CniError>> {
    if env_lookup("CNI_COMMAND").as_deref() == Some("VERSION") {
        return None;
    }
    Shim::from_stdin(stdin).map(|shim| shim.and_then(|shim| shim.forward(env_lookup, stdin)))
}

/// What `plexus-shim` does with one request: [`forward_if_shim`], VERSION answered here as `plexus` answers it. It has
/// no thin mode: stdin that is not JSON is code 6 (as `plexus` reports it), and a config without `daemonSocketDir`,
/// which `plexus` would run in thin mode, is code 7.
pub fn shim_only(
    env_lookup: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Reply, CniError> {
    if let Some(reply) = forward_if_shim(&env_lookup, stdin) {
        return reply;
    }
    if env_lookup("CNI_COMMAND").as_deref() == Some("VERSION") {
        return crate::request::version_output(stdin).map(|stdout| Reply {
            success: true,
            stdout,
        });
    }
    let cni_version = match serde_json::from_slice::<serde_json::Value>(stdin) {
        Ok(config) => config["cniVersion"].as_str().unwrap_or_default().to_owned(),
        Err(e) => return Err(crate::error::PlexusError::Decode(e.to_string()).to_cni()),
    };
    Err(CniError::new(
        ErrorCode::InvalidConfig,
        "plexus-shim forwards each request to plexus-daemon and needs daemonSocketDir (an absolute path) in its \
         config; a conf without a node daemon names the plexus plugin instead",
    )
    .with_version(cni_version))
}

/// Whether a connect failed because no daemon is there (no socket file, or nothing listening on it), rather than
/// because one is there and busy.
fn down(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// Connects to the daemon's socket, waiting at most `timeout` for it to take the connection: a daemon whose
/// backlog is full (every worker busy) makes a blocking connect wait, and the kernel bounds that wait by the
/// socket's send timeout (`SO_SNDTIMEO`), after which connect fails with `WouldBlock`.
fn connect(socket: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, setsockopt, sockopt};
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout))?;
    let address = UnixAddr::new(socket)?;
    nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address)?;
    Ok(UnixStream::from(fd))
}

/// A timeout as the kernel's `timeval` (a zero one would mean "no timeout": at least one microsecond).
fn timeval(d: Duration) -> nix::sys::time::TimeVal {
    let micros = d.as_micros().clamp(1, i64::MAX as u128) as i64;
    nix::sys::time::TimeVal::new(
        micros / 1_000_000,
        (micros % 1_000_000) as nix::sys::time::suseconds_t,
    )
}

/// Reads from a stream until an overall deadline: each read waits at most what is left of it, and a read after it
/// fails with `TimedOut`. What the daemon reads a request through, so that a caller sending slowly, or never
/// finishing, holds a worker no longer than the deadline.
pub struct UntilDeadline<'s> {
    pub stream: &'s UnixStream,
    pub deadline: Instant,
}

impl Read for UntilDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "the deadline passed");
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(timed_out)?;
        self.stream.set_read_timeout(Some(left))?;
        match (&mut &*self.stream).read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(timed_out()),
            other => other,
        }
    }
}

/// The request's header.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    env: BTreeMap<String, String>,
    deadline_ms: u64,
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A request as the daemon receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub env: BTreeMap<String, String>,
    pub stdin: Vec<u8>,
    /// When the shim stops waiting for the reply (milliseconds since the Unix epoch).
    pub deadline_ms: u64,
}

impl Request {
    /// Whether the shim has stopped waiting: a request that has not started by then must not start (its caller
    /// got code 11 and goes on, e.g. with a DEL).
    pub fn abandoned(&self) -> bool {
        unix_ms(std::time::SystemTime::now()) >= self.deadline_ms
    }

    /// [`Request::deadline_ms`] on this process's monotonic clock (at most a day ahead, whatever the caller sent).
    pub fn deadline(&self) -> Instant {
        let left = self
            .deadline_ms
            .saturating_sub(unix_ms(std::time::SystemTime::now()));
        Instant::now() + Duration::from_millis(left.min(24 * 3600 * 1000))
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
    #[error("the request's header is {0} bytes, more than {MAX_HEADER_BYTES}")]
    HeaderTooLarge(usize),
    #[error("the request's stdin is more than {MAX_STDIN_BYTES} bytes")]
    StdinTooLarge,
    #[error("the request's header is not valid: {0}")]
    Header(serde_json::Error),
}

/// The bytes of a request before its stdin: the header's length (4 bytes, big-endian), then the header. What
/// [`Shim::forward`] sends and [`read_request`] reads.
pub fn encode_request_header(env: BTreeMap<String, String>, deadline_ms: u64) -> Vec<u8> {
    let header = serde_json::to_vec(&Header { env, deadline_ms }).expect("the header serialises");
    let mut out = Vec::with_capacity(4 + header.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out
}

/// Reads one request (the daemon side of [`Shim::forward`]).
pub fn read_request(stream: &mut impl Read) -> Result<Request, RequestError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER_BYTES {
        return Err(RequestError::HeaderTooLarge(len));
    }
    let mut header = vec![0u8; len];
    stream.read_exact(&mut header)?;
    let header: Header = serde_json::from_slice(&header).map_err(RequestError::Header)?;
    let mut stdin = Vec::new();
    stream
        .take(MAX_STDIN_BYTES as u64 + 1)
        .read_to_end(&mut stdin)?;
    if stdin.len() > MAX_STDIN_BYTES {
        return Err(RequestError::StdinTooLarge);
    }
    Ok(Request {
        env: header.env,
        stdin,
        deadline_ms: header.deadline_ms,
    })
}

/// The reply bytes for what `plexus` would print and its exit status.
pub fn encode_reply(success: bool, stdout: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(stdout.len() + 1);
    out.push(if success { 0 } else { 1 });
    out.extend_from_slice(stdout.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_a_config_with_daemon_socket_dir_is_a_shim_config() {
        assert!(Shim::from_stdin(b"").is_none());
        assert!(Shim::from_stdin(b"[1]").is_none());
        assert!(Shim::from_stdin(br#"{"name":"x"}"#).is_none());
        assert!(Shim::from_stdin(br#"{"daemonSocketDir":""}"#).is_none());
        let shim = Shim::from_stdin(br#"{"cniVersion":"1.0.0","daemonSocketDir":"/run/p"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(shim.socket, Path::new("/run/p/plexus.sock"));
        assert_eq!(
            shim.timeout,
            Duration::from_secs_f64(DEFAULT_TIMEOUT_SECONDS)
        );
        assert_eq!(shim.wait, Duration::from_secs_f64(DEFAULT_WAIT_SECONDS));
        // The wait is part of the timeout.
        let shim = Shim::from_stdin(
            br#"{"daemonSocketDir":"/run/p","daemonTimeoutSeconds":5,"daemonWaitSeconds":60}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(shim.wait, Duration::from_secs(5));
        for bad in [
            r#"{"daemonSocketDir":"/run/p","daemonTimeoutSeconds":0}"#,
            // Out of range: duration conversion would panic.
            r#"{"daemonSocketDir":"/run/p","daemonTimeoutSeconds":1e308}"#,
            r#"{"daemonSocketDir":"run/p"}"#,
            r#"{"daemonSocketDir":"/run/p","daemonWaitSeconds":-1}"#,
        ] {
            let e = Shim::from_stdin(bad.as_bytes()).unwrap().unwrap_err();
            assert_eq!(e.code, 7, "{bad}: {e:?}");
        }
    }

    #[test]
    fn plexus_shim_answers_version_itself_and_has_no_thin_mode() {
        let env =
            |command: &'static str| move |k: &str| (k == "CNI_COMMAND").then(|| command.to_owned());
        // No daemon anywhere: VERSION is answered here, whatever the config says.
        let v = shim_only(
            env("VERSION"),
            br#"{"cniVersion":"0.4.0","daemonSocketDir":"/nowhere"}"#,
        )
        .unwrap();
        assert!(v.success);
        let v: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        // A config without daemonSocketDir is not run some other way: code 7, naming the key.
        let e = shim_only(
            env("ADD"),
            br#"{"cniVersion":"1.0.0","name":"x","kubeconfig":"/k"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 7, "{e:?}");
        assert!(e.msg.contains("daemonSocketDir"), "{e:?}");
        assert_eq!(e.cni_version, "1.0.0", "{e:?}");
        // Not JSON at all: the decoding error `plexus` gives.
        assert_eq!(shim_only(env("ADD"), b"not json").unwrap_err().code, 6);
        // A bad shim key is the same error as `plexus` gives.
        let e = shim_only(env("ADD"), br#"{"daemonSocketDir":"run/p"}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("absolute"), "{e:?}");
    }

    #[test]
    fn a_request_and_its_reply_cross_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join(SOCKET_NAME)).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let request = read_request(&mut conn).unwrap();
            conn.write_all(&encode_reply(false, "{\"code\":7}"))
                .unwrap();
            request
        });
        let stdin = format!(
            r#"{{"daemonSocketDir":"{}","cniVersion":"1.0.0"}}"#,
            dir.path().display()
        );
        let shim = Shim::from_stdin(stdin.as_bytes()).unwrap().unwrap();
        let reply = shim
            .forward(
                |k| (k != "CNI_NETNS").then(|| format!("v-{k}")),
                stdin.as_bytes(),
            )
            .unwrap();
        assert_eq!(
            reply,
            Reply {
                success: false,
                stdout: "{\"code\":7}".into()
            }
        );
        let request = server.join().unwrap();
        assert_eq!(request.stdin, stdin.as_bytes());
        assert_eq!(request.env.len(), 5);
        assert_eq!(request.env["CNI_COMMAND"], "v-CNI_COMMAND");
        assert!(!request.abandoned());
    }

    #[test]
    fn no_daemon_is_code_11_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let stdin = format!(
            r#"{{"daemonSocketDir":"{}","daemonWaitSeconds":0}}"#,
            dir.path().display()
        );
        let shim = Shim::from_stdin(stdin.as_bytes()).unwrap().unwrap();
        let e = shim.forward(|_| None, stdin.as_bytes()).unwrap_err();
        assert_eq!(e.code, 11);
        assert!(e.msg.contains(&shim.socket.display().to_string()), "{e}");
        assert!(!e.msg.contains("daemonWaitSeconds"), "{e}");
    }

    #[test]
    fn a_daemon_that_is_down_is_waited_for_daemon_wait_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let stdin = format!(
            r#"{{"daemonSocketDir":"{}","daemonWaitSeconds":0.4}}"#,
            dir.path().display()
        );
        let shim = Shim::from_stdin(stdin.as_bytes()).unwrap().unwrap();
        assert_eq!(shim.wait, Duration::from_millis(400));
        // Still down when the wait is over: code 11, after the wait, saying so.
        let started = Instant::now();
        let e = shim.forward(|_| None, stdin.as_bytes()).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(400), "{e}");
        assert_eq!(e.code, 11);
        assert!(e.msg.contains("daemonWaitSeconds"), "{e}");
        // STATUS does not wait: its error names no wait.
        let status = |k: &str| (k == "CNI_COMMAND").then(|| "STATUS".to_owned());
        let e = shim.forward(status, stdin.as_bytes()).unwrap_err();
        assert_eq!(e.code, 11);
        assert!(!e.msg.contains("daemonWaitSeconds"), "{e}");
        // Back within the wait (its socket appears 200 ms later): the request goes through.
        let socket = shim.socket.clone();
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let listener = UnixListener::bind(socket).unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            read_request(&mut conn).unwrap();
            conn.write_all(&encode_reply(true, "{}")).unwrap();
        });
        let reply = shim.forward(|_| None, stdin.as_bytes()).unwrap();
        assert!(reply.success);
        server.join().unwrap();
    }

    #[test]
    fn a_full_backlog_or_an_endless_reply_is_an_error_within_the_timeout() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, socket};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_NAME);
        let listener = UnixListener::bind(&path).unwrap();
        // Fill the backlog of a daemon that accepts nothing (a connect that would wait fails at once here).
        let mut held = Vec::new();
        for _ in 0..100_000 {
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            let addr = UnixAddr::new(&path).unwrap();
            match nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
                Ok(()) => held.push(fd),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let stdin = format!(
            r#"{{"daemonSocketDir":"{}","daemonTimeoutSeconds":0.3}}"#,
            dir.path().display()
        );
        let shim = Shim::from_stdin(stdin.as_bytes()).unwrap().unwrap();
        let e = shim.forward(|_| None, stdin.as_bytes()).unwrap_err();
        assert_eq!(e.code, 11);
        assert!(e.msg.contains("did not take the connection"), "{e}");
        drop(held);
        drop(listener);
        std::fs::remove_file(&path).unwrap();

        // A daemon whose reply never ends: cut off at the cap.
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = read_request(&mut conn);
            let chunk = vec![b'x'; 64 * 1024];
            while conn.write_all(&chunk).is_ok() {}
        });
        let stdin = format!(r#"{{"daemonSocketDir":"{}"}}"#, dir.path().display());
        let shim = Shim::from_stdin(stdin.as_bytes()).unwrap().unwrap();
        let e = shim.forward(|_| None, stdin.as_bytes()).unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("more than"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn a_request_that_never_ends_is_cut_off_at_the_deadline() {
        let (a, mut b) = UnixStream::pair().unwrap();
        // A length, then nothing more: a plain read would wait forever.
        b.write_all(&100u32.to_be_bytes()).unwrap();
        let mut reader = UntilDeadline {
            stream: &a,
            deadline: Instant::now() + Duration::from_millis(200),
        };
        let e = read_request(&mut reader).unwrap_err();
        assert!(
            matches!(&e, RequestError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut),
            "{e:?}"
        );
        // Too long a header is refused before anything of it is read.
        let (c, mut d) = UnixStream::pair().unwrap();
        d.write_all(&(MAX_HEADER_BYTES as u32 + 1).to_be_bytes())
            .unwrap();
        let mut reader = UntilDeadline {
            stream: &c,
            deadline: Instant::now() + Duration::from_secs(5),
        };
        assert!(matches!(
            read_request(&mut reader),
            Err(RequestError::HeaderTooLarge(_))
        ));
    }

    #[test]
    fn a_silent_daemon_is_code_11_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let _listener = UnixListener::bind(dir.path().join(SOCKET_NAME)).unwrap();
        let stdin = format!(
            r#"{{"daemonSocketDir":"{}","daemonTimeoutSeconds":0.3}}"#,
            dir.path().display()
        );
        let shim = Shim::from_stdin(stdin.as_bytes()).unwrap().unwrap();
        let e = shim.forward(|_| None, stdin.as_bytes()).unwrap_err();
        assert_eq!(e.code, 11);
        assert!(e.msg.contains("daemonTimeoutSeconds"), "{e}");
    }
}
