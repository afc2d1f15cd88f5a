//! One measured call: `plexus`, Multus or the bare delegates exec'd as a runtime execs them, and each plugin's peak
//! RSS.

use super::*;

/// A pod of the bench, bound to `node` (no kubelet runs: it stays Pending).
pub(crate) fn bench_pod(namespace: &str, name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "mv-net,p2p-net"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}})
}

/// Runs one CNI command of a plugin binary as a runtime does; panics (with its output) when it fails.
#[allow(clippy::too_many_arguments)]
pub(crate) fn exec(
    probe: Option<&RssProbe>,
    binary: &Path,
    command: &str,
    id: &str,
    netns: &str,
    path: &Path,
    args: &str,
    config: &Value,
) -> Call {
    try_exec(probe, binary, command, id, netns, path, args, config)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`exec`], with a failure returned (the plugin's output) rather than a panic. With a probe, the plugin runs under
/// it and the call's peak RSS is the plugin's; without, `maxrss_kib` is 0.
#[allow(clippy::too_many_arguments)]
pub(crate) fn try_exec(
    probe: Option<&RssProbe>,
    binary: &Path,
    command: &str,
    id: &str,
    netns: &str,
    path: &Path,
    args: &str,
    config: &Value,
) -> Result<Call, String> {
    let stdin = config.to_string();
    // The CPU of the children reaped meanwhile: the plugin's process alone when calls run one at a time (the
    // interleaved rounds, the only ones that read `Call::cpu`); meaningless in the concurrency run.
    let (_, children_before) = bench_cpu_s();
    let start = Instant::now();
    let mut child = probe
        .map_or_else(|| Command::new(binary), |p| p.command(binary))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", path)
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A program that exits without reading its stdin (a trivial one) closes the pipe: not an error here; its exit
    // status says how it went.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    let cpu = Duration::from_secs_f64((bench_cpu_s().1 - children_before).max(0.0));
    if !out.status.success() {
        return Err(format!(
            "{} {command} failed ({}): {}{}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Call {
        took,
        cpu,
        maxrss_kib: probe.map_or(0, RssProbe::peak_kib),
    })
}

/// A plugin's peak RSS, measured by a small static helper that forks and execs it and reads `ru_maxrss` from
/// `wait4`. Not by the bench itself: a child's `ru_maxrss` starts from its parent's RSS at the fork (the bench's,
/// tens of MiB) and survives the exec, so the bench's own `wait4` would report its own size for any small plugin.
/// The helper is a few hundred KiB at its fork. Used in a pass of its own, outside the timed rounds.
pub(crate) struct RssProbe {
    pub(crate) helper: PathBuf,
    pub(crate) out: PathBuf,
}

impl RssProbe {
    pub(crate) fn build(work: &Path) -> Self {
        let helper = gcc_static(
            work,
            "rss-probe",
            r#"#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
/* rss-probe OUT PROGRAM [ARGS...]: runs PROGRAM, writes its ru_maxrss (KiB) to OUT, exits with its status. */
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) { execv(argv[2], argv + 2); _exit(127); }
    int status; struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid) return 2;
    FILE *f = fopen(argv[1], "w");
    if (!f) return 2;
    fprintf(f, "%ld\n", ru.ru_maxrss);
    fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
"#,
        );
        Self {
            helper,
            out: work.join("rss-probe.out"),
        }
    }

    pub(crate) fn command(&self, binary: &Path) -> Command {
        let mut c = Command::new(&self.helper);
        c.arg(&self.out).arg(binary);
        c
    }

    pub(crate) fn peak_kib(&self) -> u64 {
        std::fs::read_to_string(&self.out)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The three delegates run directly: each conflist's plugins in order with prevResult chaining, then DEL in
/// reverse with the final result — what libcni does for a runtime. (ADD time, DEL time).
pub(crate) fn bare(
    lists: &[NetworkConfigList],
    path: &Path,
    id: &str,
    netns: &str,
    between: impl FnOnce(),
) -> (Duration, Duration) {
    let dirs = [path.to_path_buf()];
    let start = Instant::now();
    let results = bare_add(lists, &dirs, id, netns);
    let add = start.elapsed();
    between();
    let start = Instant::now();
    bare_del(lists, &dirs, id, netns, &results);
    (add, start.elapsed())
}

/// ADD of each conflist's plugins in order, prevResult chained; each list's final result.
pub(crate) fn bare_add(
    lists: &[NetworkConfigList],
    dirs: &[PathBuf],
    id: &str,
    netns: &str,
) -> Vec<Option<Value>> {
    lists
        .iter()
        .enumerate()
        .map(|(n, list)| {
            let mut prev: Option<Value> = None;
            for i in 0..list.plugins.len() {
                let stdout = bare_call(list, i, CniCommand::Add, dirs, id, netns, n, prev.as_ref());
                prev = Some(
                    CniResult::from_json(&stdout, "1.0.0")
                        .unwrap()
                        .to_value("1.0.0")
                        .unwrap(),
                );
            }
            prev
        })
        .collect()
}

/// DEL of the lists in reverse, each list's plugins in reverse, with its final result.
pub(crate) fn bare_del(
    lists: &[NetworkConfigList],
    dirs: &[PathBuf],
    id: &str,
    netns: &str,
    results: &[Option<Value>],
) {
    for (n, list) in lists.iter().enumerate().rev() {
        for i in (0..list.plugins.len()).rev() {
            bare_call(
                list,
                i,
                CniCommand::Del,
                dirs,
                id,
                netns,
                n,
                results[n].as_ref(),
            );
        }
    }
}

/// Plugin `i` of `list`, the `n`th network (eth0, net1, …), as libcni calls it; its stdout.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bare_call(
    list: &NetworkConfigList,
    i: usize,
    command: CniCommand,
    dirs: &[PathBuf],
    id: &str,
    netns: &str,
    n: usize,
    prev: Option<&Value>,
) -> Vec<u8> {
    let conf = list.request_config(
        i,
        "1.0.0",
        &RequestExtras {
            prev_result: prev,
            ..RequestExtras::default()
        },
    );
    let stdin = conf.to_string();
    let ifname = if n == 0 {
        "eth0".to_string()
    } else {
        format!("net{n}")
    };
    invoke(&Invocation {
        command,
        plugin: list.plugins[i].plugin_type(),
        container_id: id,
        netns,
        ifname: &ifname,
        cni_args: "",
        path: dirs,
        stdin: stdin.as_bytes(),
        timeout: Duration::from_secs(60),
    })
    .unwrap_or_else(|e| panic!("bare {command:?} {}: {e}", list.name))
    .stdout
}

pub(crate) fn nad(namespace: &str, name: &str, config: &Value) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"config": config.to_string()}})
}

/// `BENCH_PLEXUS_BIN` (scripts/bench sets it to the static build that ships), else target/release/plexus, next to
/// this bench executable (target/release/deps/add_del-…).
pub(crate) fn plexus_release_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BENCH_PLEXUS_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("plexus");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p plexus-cni` (scripts/bench does)",
        bin.display()
    );
    bin
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
