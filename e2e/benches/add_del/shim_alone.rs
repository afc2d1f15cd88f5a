//! The shim alone: what a thick ADD pays to exec its shim and cross the socket, apart from any daemon, delegate or
//! API server. A small static C server reads each request and answers at once; `plexus-shim`, `plexus`
//! with the same shim config, and the floor's trivial static binary are exec'd in turn (rotated each round), each
//! timed from spawn to exit, with its CPU from `wait4`'s rusage (user + system, the kernel's exec and page faults
//! included).

use std::os::unix::process::ExitStatusExt;

use super::*;

/// Rounds of the three programs, after as many warm-up rounds as a tenth of them.
const ROUNDS: usize = 300;

/// One exec: wall time from spawn to exit, and the child's CPU.
struct Exec {
    wall: Duration,
    cpu: Duration,
}

/// Spawns `binary` with the CNI variables of an ADD and `stdin`, and reaps it with `wait4` (for its rusage, which
/// `Child::wait` does not give: hence no `wait` on the `Child`).
#[allow(clippy::zombie_processes)]
fn exec(binary: &Path, stdin: &[u8]) -> Exec {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "shim-alone")
        .env("CNI_NETNS", "/run/netns/none")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nowhere")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A program that does not read its stdin (the trivial one) closes the pipe: not an error here.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let mut status = 0;
    // SAFETY: wait4 fills the struct we own; the child is ours and reaped exactly once (Child never waits here).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let pid = libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
        assert_eq!(pid, child.id() as libc::pid_t, "wait4");
        usage
    };
    let wall = started.elapsed();
    let exit = std::process::ExitStatus::from_raw(status);
    // A shim that failed (no server, a bad config) would be timed as if it had answered.
    assert!(exit.success(), "{}: {exit}", binary.display());
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Exec {
        wall,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
    }
}

/// Runs the three programs `ROUNDS` times each and prints and returns their medians (wall and CPU) and the shims'
/// excess over the trivial exec.
pub(crate) fn shim_alone(work: &Path, plexus: &Path, shim: &Path, trivial: &Path) -> Value {
    let dir = work.join("shim-alone");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join(plexus_cni::shim::SOCKET_NAME);
    // The socket's other end is a small static C server of its own (not a thread of this large, busy process):
    // it reads each request to its end (the shim shuts its writing half down) and answers a successful ADD.
    let server = gcc_static(
        work,
        "shim-alone-server",
        r#"#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  /* A caller that left before the reply is not the end of the server. */
  signal(SIGPIPE, SIG_IGN);
  if (strlen(argv[1]) >= sizeof a.sun_path) return 2;
  strcpy(a.sun_path, argv[1]);
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64)) return 1;
  static const char reply[] = "\0{\"cniVersion\":\"1.0.0\"}";
  char buf[65536];
  for (;;) {
    int c = accept(s, 0, 0);
    if (c < 0) continue;
    while (read(c, buf, sizeof buf) > 0) {}
    (void)!write(c, reply, sizeof reply - 1);
    close(c);
  }
}
"#,
    );
    let mut server = Command::new(server).arg(&socket).spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            server.try_wait().unwrap().is_none() && Instant::now() < until,
            "the shim-alone server did not bind {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let config = |kind: &str| {
        json!({"cniVersion": "1.0.0", "name": "plexus", "type": kind, "daemonSocketDir": dir})
            .to_string()
            .into_bytes()
    };
    let programs: [(&str, &Path, Vec<u8>); 3] = [
        ("plexus-shim", shim, config("plexus-shim")),
        ("plexus", plexus, config("plexus")),
        ("trivial static exec", trivial, config("none")),
    ];
    let mut samples: Vec<Vec<Exec>> = programs.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS + ROUNDS / 10 {
        for k in 0..programs.len() {
            let i = (round + k) % programs.len();
            let (_, binary, stdin) = &programs[i];
            let e = exec(binary, stdin);
            if round >= ROUNDS / 10 {
                samples[i].push(e);
            }
        }
    }
    let median = |v: Vec<f64>| quantile(&v, 0.5);
    let medians: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                median(s.iter().map(|e| ms(e.wall)).collect()),
                median(s.iter().map(|e| ms(e.cpu)).collect()),
            )
        })
        .collect();
    let _ = server.kill();
    let _ = server.wait();
    let (trivial_wall, trivial_cpu) = medians[2];
    println!(
        "\nthe shim alone (a socket answering at once; {ROUNDS} execs each, rotated; medians, ms)\n{:<22} {:>8} {:>8} {:>14} {:>13}",
        "program", "wall", "CPU", "wall - trivial", "CPU - trivial"
    );
    let mut rows = serde_json::Map::new();
    for ((name, _, _), (wall, cpu)) in programs.iter().zip(&medians) {
        println!(
            "{name:<22} {wall:>8.3} {cpu:>8.3} {:>14.3} {:>13.3}",
            wall - trivial_wall,
            cpu - trivial_cpu
        );
        rows.insert(
            (*name).into(),
            json!({"wall_ms": wall, "cpu_ms": cpu, "wall_over_trivial_ms": wall - trivial_wall,
                   "cpu_over_trivial_ms": cpu - trivial_cpu}),
        );
    }
    Value::Object(rows)
}
