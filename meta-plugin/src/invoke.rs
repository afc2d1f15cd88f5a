//! Running one delegate plugin: find its binary, exec it with the CNI environment and a request config on stdin,
//! enforce a timeout (killing the delegate's whole process group), and turn its output into a result or an error.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use plexus_api::cni::CniError;
use plexus_api::cni::config::check_binary_name;

/// The most a delegate may print on stdout (a CNI result, or its error object). A delegate that prints more is
/// killed with its process group, and the call fails naming it: its output is never held in memory past this.
pub const MAX_DELEGATE_STDOUT_BYTES: usize = 4 * 1024 * 1024;
/// How much of a delegate's stderr is kept: the last this many bytes (the rest is read and dropped, so a chatty
/// delegate neither blocks nor grows Plexus's memory).
pub const MAX_DELEGATE_STDERR_BYTES: usize = 64 * 1024;

/// The CNI commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl CniCommand {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

/// Why running a delegate failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("plugin {0:?} is not a bare binary name")]
    UnsafeName(String),
    #[error("plugin binary {name:?} not found in {dirs}")]
    NotFound { name: String, dirs: String },
    #[error("could not start {path}: {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The plugin exited non-zero; the error is what it printed (or what libcni would make of its output).
    #[error("{}", .0.msg)]
    Plugin(CniError),
    #[error("waiting for the plugin failed: {0}")]
    Wait(std::io::Error),
    #[error(
        "it printed more than {MAX_DELEGATE_STDOUT_BYTES} bytes on stdout (the most a delegate may print) and was \
         killed"
    )]
    OutputTooLarge,
}

/// One delegate execution.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: CniCommand,
    pub plugin: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    /// Directories searched for the binary, in order; also passed to the delegate as its `CNI_PATH`.
    pub path: &'a [PathBuf],
    pub stdin: &'a [u8],
    pub timeout: Duration,
}

/// What a delegate printed on success.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Finds a plugin binary by bare name in `dirs` (never a path, never outside them).
pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, InvokeError> {
    check_binary_name(name).map_err(|_| InvokeError::UnsafeName(name.to_owned()))?;
    for dir in dirs {
        let candidate = dir.join(name);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
        {
            return Ok(candidate);
        }
    }
    Err(InvokeError::NotFound {
        name: name.to_owned(),
        dirs: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    })
}

/// Runs one delegate and waits for it, at most `timeout`.
pub fn invoke(inv: &Invocation<'_>) -> Result<Output, InvokeError> {
    let path = find_plugin(inv.plugin, inv.path)?;
    // A phase of the request (see [`crate::PHASE_SPANS`]): the node daemon times it per plugin type. Only once the
    // binary was found, so that its label is the name of a file in the path, never any name a NAD makes up.
    let _phase = tracing::info_span!(
        "delegate",
        plugin = inv.plugin,
        command = inv.command.as_str()
    )
    .entered();
    let cni_path = std::env::join_paths(inv.path).unwrap_or_default();
    let mut cmd = Command::new(&path);
    cmd.env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.cni_args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills whatever the delegate started too.
        .process_group(0);
    let mut child = spawn_retrying(&mut cmd, &path)?;
    let pid = child.id();

    let stdin = child.stdin.take();
    let input = inv.stdin.to_vec();
    let writer = thread::spawn(move || {
        if let Some(mut pipe) = stdin {
            // A plugin that exits without reading its stdin closes the pipe; that is not our error.
            let _ = pipe.write_all(&input);
        }
    });
    // A waiter thread reaps the child; this thread waits on the channel with the deadline, so a fast delegate is
    // seen the moment it exits (no polling) and a hung one can still be killed by its process group. The stdout
    // reader says on the same channel when the delegate printed too much.
    let (events_tx, events) = mpsc::channel();
    let stdout_reader = read_capped(child.stdout.take(), Some(events_tx.clone()));
    let stderr_reader = read_capped(child.stderr.take(), None);
    thread::spawn(move || {
        let _ = events_tx.send(Event::Exited(child.wait()));
    });
    let killed = match events.recv_timeout(inv.timeout) {
        Ok(Event::Exited(Ok(status))) => Ok(status),
        Ok(Event::Exited(Err(e))) => return Err(InvokeError::Wait(e)),
        Ok(Event::TooMuchOutput) => Err(InvokeError::OutputTooLarge),
        Err(_) => Err(InvokeError::Timeout(inv.timeout)),
    };
    let status = match killed {
        Ok(status) => status,
        Err(why) => {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            while let Ok(event) = events.recv_timeout(Duration::from_secs(5)) {
                if matches!(event, Event::Exited(_)) {
                    break;
                }
            }
            // The readers end once every process holding the pipes is gone.
            let _ = writer.join();
            let _ = stdout_reader.recv_timeout(Duration::from_secs(2));
            let _ = stderr_reader.recv_timeout(Duration::from_secs(2));
            return Err(why);
        }
    };
    let _ = writer.join();
    let (stdout, stdout_whole) = stdout_reader.recv().unwrap_or_default();
    let (stderr, _) = stderr_reader.recv().unwrap_or_default();
    if !stdout_whole {
        // It exited before the reader's word on the channel was read.
        return Err(InvokeError::OutputTooLarge);
    }
    if status.success() {
        return Ok(Output { stdout, stderr });
    }
    Err(InvokeError::Plugin(plugin_error(
        &stdout,
        &stderr,
        status.code(),
    )))
}

/// libcni's reading of a failed plugin's output: a JSON error on stdout; else stderr as the message; else the raw
/// stdout. What the plugin wrote on stderr is kept in the error's details either way (C54).
fn plugin_error(stdout: &[u8], stderr: &[u8], exit: Option<i32>) -> CniError {
    let mut e = plugin_error_without_stderr(stdout, stderr, exit);
    let err_text = String::from_utf8_lossy(stderr);
    if !err_text.trim().is_empty() {
        let forwarded = format!("delegate stderr: {}", last_lines(&err_text, 20));
        e.details = if e.details.is_empty() {
            forwarded
        } else {
            format!("{}; {forwarded}", e.details)
        };
    }
    e
}

fn plugin_error_without_stderr(stdout: &[u8], stderr: &[u8], exit: Option<i32>) -> CniError {
    use plexus_api::cni::ErrorCode;
    let text = String::from_utf8_lossy(stdout);
    let err_text = String::from_utf8_lossy(stderr);
    let exit = exit.map_or_else(
        || "killed by a signal".to_owned(),
        |c| format!("exit status {c}"),
    );
    if !text.trim().is_empty() {
        if let Ok(e) = serde_json::from_slice::<CniError>(stdout) {
            return e;
        }
        return CniError::new(
            ErrorCode::DelegateFailed,
            format!("plugin failed ({exit}) and its output is not a CNI error"),
        )
        .with_details(text.trim().to_owned());
    }
    if !err_text.trim().is_empty() {
        return CniError::new(
            ErrorCode::DelegateFailed,
            format!("plugin failed ({exit}): {}", last_lines(&err_text, 5)),
        );
    }
    CniError::new(
        ErrorCode::DelegateFailed,
        format!("plugin failed ({exit}) with no output"),
    )
}

/// The last `n` lines of a text, for error messages.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Spawns, retrying a few times on "text file busy" as libcni does (a binary still being written).
fn spawn_retrying(cmd: &mut Command, path: &Path) -> Result<Child, InvokeError> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return Ok(child),
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 5 => {
                tries += 1;
                thread::sleep(Duration::from_millis(200));
            }
            Err(source) => {
                return Err(InvokeError::Spawn {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
    }
}

/// What the waiter and the stdout reader tell the waiting thread.
enum Event {
    Exited(std::io::Result<std::process::ExitStatus>),
    TooMuchOutput,
}

/// Reads a pipe to its end on a thread of its own. With `overflow` (stdout): keeps at most
/// [`MAX_DELEGATE_STDOUT_BYTES`], says so on `overflow` when there is more and stops keeping; the result is the
/// bytes and whether they are all of it. Without (stderr): keeps the last [`MAX_DELEGATE_STDERR_BYTES`]. Either
/// way the pipe is read to its end, so the delegate never blocks on a full pipe.
fn read_capped(
    pipe: Option<impl Read + Send + 'static>,
    overflow: Option<mpsc::Sender<Event>>,
) -> mpsc::Receiver<(Vec<u8>, bool)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let mut whole = true;
        if let Some(mut p) = pipe {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let n = match p.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                match &overflow {
                    Some(_) if !whole => {}
                    Some(tell) => {
                        if buf.len() + n > MAX_DELEGATE_STDOUT_BYTES {
                            whole = false;
                            buf = Vec::new();
                            let _ = tell.send(Event::TooMuchOutput);
                        } else {
                            buf.extend_from_slice(&chunk[..n]);
                        }
                    }
                    None => {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.len() > 2 * MAX_DELEGATE_STDERR_BYTES {
                            buf.drain(..buf.len() - MAX_DELEGATE_STDERR_BYTES);
                        }
                    }
                }
            }
        }
        if overflow.is_none() && buf.len() > MAX_DELEGATE_STDERR_BYTES {
            buf.drain(..buf.len() - MAX_DELEGATE_STDERR_BYTES);
        }
        let _ = tx.send((buf, whole));
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn run(dir: &Path, plugin: &str, timeout: Duration) -> Result<Output, InvokeError> {
        let path = [dir.to_path_buf()];
        invoke(&Invocation {
            command: CniCommand::Add,
            plugin,
            container_id: "c1",
            netns: "/run/netns/x",
            ifname: "eth0",
            cni_args: "",
            path: &path,
            stdin: b"{\"cniVersion\":\"1.0.0\"}",
            timeout,
        })
    }

    #[test]
    fn passes_env_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "echoer",
            r#"printf '%s %s %s ' "$CNI_COMMAND" "$CNI_IFNAME" "$CNI_PATH"; cat"#,
        );
        let out = run(dir.path(), "echoer", Duration::from_secs(10)).unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            text,
            format!(
                "ADD eth0 {} {{\"cniVersion\":\"1.0.0\"}}",
                dir.path().display()
            )
        );
    }

    #[test]
    fn reads_errors_like_libcni() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "json",
            r#"echo '{"code":11,"msg":"busy"}'; exit 1"#,
        );
        script(dir.path(), "stderr", "echo one >&2; echo two >&2; exit 3");
        script(dir.path(), "garbage", "echo not-json; exit 1");
        let err = |p| match run(dir.path(), p, Duration::from_secs(10)) {
            Err(InvokeError::Plugin(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(err("json").code, 11);
        script(
            dir.path(),
            "both",
            r#"echo 'no lease left' >&2; echo '{"code":11,"msg":"busy","details":"pool"}'; exit 1"#,
        );
        let e = err("both");
        assert_eq!((e.code, e.msg.as_str()), (11, "busy"));
        assert_eq!(
            e.details, "pool; delegate stderr: no lease left",
            "C54: stderr is kept"
        );
        assert!(err("stderr").details.contains("one | two"));
        assert!(
            err("stderr").msg.contains("one | two"),
            "{:?}",
            err("stderr")
        );
        assert!(err("garbage").details.contains("not-json"));
        // A delegate that fails without a CNI error object: code 100 (delegate failed), never 999 (a bug of Plexus's).
        script(dir.path(), "silent", "exit 1");
        for plain in ["stderr", "garbage", "silent"] {
            assert_eq!(err(plain).code, 100, "{plain}: {:?}", err(plain));
        }
        assert!(err("silent").msg.contains("with no output"));
    }

    #[test]
    fn kills_a_hung_plugin_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child.pid");
        script(
            dir.path(),
            "hang",
            &format!("sleep 300 & echo $! > {}; wait", marker.display()),
        );
        let e = run(dir.path(), "hang", Duration::from_millis(500)).unwrap_err();
        assert!(matches!(e, InvokeError::Timeout(_)), "{e:?}");
        let child: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was in the delegate's process group, so it is gone too (kill(0) fails with ESRCH).
        let mut gone = false;
        for _ in 0..100 {
            if nix::sys::signal::kill(Pid::from_raw(child), None).is_err() {
                gone = true;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "grandchild {child} survived");
    }

    #[test]
    fn a_delegate_printing_past_the_cap_is_killed_and_named() {
        let dir = tempfile::tempdir().unwrap();
        // Never ends by itself: only the cap stops it (well before the 60 s timeout).
        script(dir.path(), "flood", "yes plexus");
        let e = run(dir.path(), "flood", Duration::from_secs(60)).unwrap_err();
        assert!(matches!(e, InvokeError::OutputTooLarge), "{e:?}");
        // Just under the cap is fine, and a flood of stderr only keeps its tail.
        script(
            dir.path(),
            "big",
            &format!(
                "head -c {} /dev/zero | tr '\\0' x; head -c 300000 /dev/zero | tr '\\0' e >&2; echo last >&2",
                MAX_DELEGATE_STDOUT_BYTES
            ),
        );
        let out = run(dir.path(), "big", Duration::from_secs(60)).unwrap();
        assert_eq!(out.stdout.len(), MAX_DELEGATE_STDOUT_BYTES);
        assert!(out.stderr.len() <= MAX_DELEGATE_STDERR_BYTES);
        assert!(out.stderr.ends_with(b"last\n"));
    }

    #[test]
    fn refuses_paths_and_missing_binaries() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            find_plugin("../sh", &[dir.path().into()]),
            Err(InvokeError::UnsafeName(_))
        ));
        assert!(matches!(
            find_plugin("/bin/sh", &[dir.path().into()]),
            Err(InvokeError::UnsafeName(_))
        ));
        assert!(matches!(
            find_plugin("nope", &[dir.path().into()]),
            Err(InvokeError::NotFound { .. })
        ));
    }
}
