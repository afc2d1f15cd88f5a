//! The shim alone: what a thick ADD pays to exec its shim and cross the socket, apart from any daemon, delegate or
//! API server. A small static C server reads each request and answers at once; `plexus-shim`, `plexus`
//! with the same shim config, and the floor's trivial static binary are exec'd in turn (rotated each round) as the
//! bench execs every plugin ([`super::try_exec`]: an ADD's variables, timed from spawn to exit, its CPU the children's
//! rusage across the call, user + system, the kernel's exec and page faults included; a failure stops the bench).

use super::*;

/// Rounds of the three programs, after as many warm-up rounds as a tenth of them.
const ROUNDS: usize = 300;

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
    let config = |kind: &str| json!({"cniVersion": "1.0.0", "name": "plexus", "type": kind, "daemonSocketDir": dir});
    let programs: [(&str, &Path, Value); 3] = [
        ("plexus-shim", shim, config("plexus-shim")),
        ("plexus", plexus, config("plexus")),
        ("trivial static exec", trivial, config("none")),
    ];
    let mut samples: Vec<Vec<Call>> = programs.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS + ROUNDS / 10 {
        for k in 0..programs.len() {
            let i = (round + k) % programs.len();
            let (_, binary, config) = &programs[i];
            let e = exec(
                None,
                binary,
                "ADD",
                "shim-alone",
                "/run/netns/none",
                Path::new("/nowhere"),
                "",
                config,
            );
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
                median(s.iter().map(|e| ms(e.took)).collect()),
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
