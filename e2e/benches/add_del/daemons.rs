//! The thick modes' daemons (plexus-daemon, multus-daemon), CPU accounting, and plexus-daemon's phase metrics.

use super::*;

/// A thick-mode daemon the bench started; stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct Daemon {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) started: Instant,
    pub(crate) ready: Box<dyn Fn() -> bool>,
    pub(crate) log: PathBuf,
}

impl Daemon {
    /// `plexus-daemon --config FILE`; ready when its `/readyz` answers 200.
    pub(crate) fn plexus(bin: &Path, work: &Path, config: &Value) -> Self {
        let file = work.join("plexus-daemon.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let log = work.join("plexus-daemon.log");
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("--config")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(work.join("plexus-daemon.stderr")).unwrap())
            .spawn()
            .unwrap();
        let port: u16 = config["metricsAddress"]
            .as_str()
            .and_then(|a| a.rsplit_once(':')?.1.parse().ok())
            .expect("metricsAddress 127.0.0.1:PORT");
        Self {
            name: "plexus-daemon",
            child,
            started,
            ready: Box::new(move || plexus_e2e::thick::http_get(port, "/readyz").0 == 200),
            log,
        }
    }

    /// `multus-daemon --config FILE` for node `node`, with in-cluster credentials (`credentials`, made once by
    /// [`multus_credentials`]) bind-mounted at the in-cluster path inside a mount namespace of its own (mounts from
    /// the host, such as new netns files, still propagate in). Ready when its socket answers `/healthz`, which it
    /// serves only after its informers synced.
    pub(crate) fn multus(
        bin: &Path,
        work: &Path,
        config: &Value,
        primary: &Value,
        credentials: &Path,
        apiserver: &str,
        node: &str,
    ) -> Self {
        // multus-daemon keeps running only with `multusConfigFile: auto` (with a file of the user's, its main
        // returns once the server started), which writes a node CNI config from the primary one it finds here.
        let conf_dir = Path::new(config["cniConfigDir"].as_str().unwrap());
        std::fs::create_dir_all(conf_dir).unwrap();
        std::fs::write(conf_dir.join("10-primary.conflist"), primary.to_string()).unwrap();
        let mount_point = Path::new("/run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(mount_point).unwrap();
        let file = work.join("multus-daemon.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let (host, port) = apiserver.rsplit_once(':').unwrap();
        let log = PathBuf::from(config["logFile"].as_str().unwrap());
        let started = Instant::now();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" "$1" && shift && exec "$@""#)
            .arg(credentials)
            .arg(mount_point)
            .arg(bin)
            .arg("--config")
            .arg(&file)
            .env("KUBERNETES_SERVICE_HOST", host)
            .env("KUBERNETES_SERVICE_PORT", port)
            .env("MULTUS_NODE_NAME", node)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(work.join("multus-daemon.stdout")).unwrap())
            .stderr(std::fs::File::create(work.join("multus-daemon.stderr")).unwrap())
            .spawn()
            .unwrap();
        let socket = PathBuf::from(config["socketDir"].as_str().unwrap()).join("multus.sock");
        Self {
            name: "multus-daemon",
            child,
            started,
            ready: Box::new(move || unix_http_ok(&socket, "/healthz")),
            log,
        }
    }

    /// Waits until ready; returns the time since the start.
    pub(crate) fn wait_ready(&mut self, limit: Duration) -> Duration {
        loop {
            if self.poll_ready(limit) {
                return self.started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is ready now; panics when it exited, or is still not ready `limit` after its start.
    pub(crate) fn poll_ready(&mut self, limit: Duration) -> bool {
        if (self.ready)() {
            return true;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            // The log goes with the bench's temporary dir: its end is in the message.
            let tail = |file: &Path| {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(10)..].join("\n")
            };
            panic!(
                "{} exited ({status}) before it was ready; log {}:\n{}\nstderr:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log),
                tail(&self.log.with_extension("stderr")),
            );
        }
        assert!(
            self.started.elapsed() < limit,
            "{} not ready after {limit:?}; log {}",
            self.name,
            self.log.display()
        );
        false
    }

    /// CPU seconds used so far by the daemon and the delegates it ran.
    pub(crate) fn cpu_s(&self) -> (f64, f64) {
        process_cpu_s(&self.child.id().to_string()).unwrap_or_default()
    }

    /// VmRSS or VmHWM from /proc, in MiB.
    pub(crate) fn rss_mib(&self, field: &str) -> f64 {
        proc_rss_mib(&self.child.id().to_string(), field)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS or VmHWM of process `pid` from /proc, in MiB; panics when the process is gone.
pub(crate) fn proc_rss_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

/// Each counter's growth from `before` to `now`.
pub(crate) fn since<const N: usize>(now: [f64; N], before: [f64; N]) -> [f64; N] {
    std::array::from_fn(|i| now[i] - before[i])
}

/// CPU seconds (user + system) used so far by process `pid`, and by its children it waited for.
pub(crate) fn process_cpu_s(pid: &str) -> Option<(f64, f64)> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
    // Fields after the command name (which is in parentheses): utime, stime, cutime and cstime are the 12th to 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    (fields.len() == 4).then(|| {
        (
            (fields[0] + fields[1]) / ticks,
            (fields[2] + fields[3]) / ticks,
        )
    })
}

/// The CPU time used so far by process `pid`, all its threads together (those that ended too), to the nanosecond:
/// its CPU-time clock (`clock_getcpuclockid`). `None` when it is gone.
pub(crate) fn process_cpu_clock(pid: u32) -> Option<Duration> {
    // SAFETY: both calls fill values we own; a pid that is gone is an error return, not undefined behaviour.
    unsafe {
        let mut clock: libc::clockid_t = 0;
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
            return None;
        }
        let mut t: libc::timespec = std::mem::zeroed();
        (libc::clock_gettime(clock, &mut t) == 0)
            .then(|| Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    }
}

/// Per warm thick ADD (medians over the measured rounds): the shim's CPU (its process, exec included), the daemon's
/// from the ADD's start to the DEL's start, and their sum beyond `trivial_cpu_ms`, the CPU of the trivial static exec
/// any plugin pays (from [`super::shim_alone`]). The daemon's part includes launching the delegates (the same four
/// for both daemons) and the client side of its API requests; the delegates' own processes are not in it.
pub(crate) fn thick_cpu_report(
    samples: &BTreeMap<&str, ModeSamples>,
    trivial_cpu_ms: f64,
) -> Value {
    println!(
        "\nCPU per warm thick ADD (medians, ms): shim process, daemon (ADD start to DEL start), sum beyond a trivial \
         exec ({trivial_cpu_ms:.3})\n{:<14} {:>8} {:>8} {:>14}",
        "mode", "shim", "daemon", "sum - trivial"
    );
    let mut rows = serde_json::Map::new();
    for mode in ["plexus-thick", "multus-thick"] {
        let Some(s) = samples.get(mode).filter(|s| !s.daemon_cpu_add.is_empty()) else {
            continue;
        };
        let shim = quantile(&s.add.iter().map(|c| ms(c.cpu)).collect::<Vec<_>>(), 0.5);
        let daemon = quantile(
            &s.daemon_cpu_add.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            0.5,
        );
        let beyond = shim + daemon - trivial_cpu_ms;
        println!("{mode:<14} {shim:>8.3} {daemon:>8.3} {beyond:>14.3}");
        rows.insert(
            mode.into(),
            json!({"shim_cpu_ms": shim, "daemon_cpu_ms": daemon, "beyond_trivial_exec_ms": beyond}),
        );
    }
    Value::Object(rows)
}

/// CPU seconds used so far by this process (which runs the bare mode's delegates, with the same invocation code as
/// plexus), and by its children it waited for (the plugins or shims it ran).
pub(crate) fn bench_cpu_s() -> (f64, f64) {
    let used = |who| {
        // SAFETY: getrusage fills the struct we own.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(who, &mut usage);
            usage
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    };
    (used(libc::RUSAGE_SELF), used(libc::RUSAGE_CHILDREN))
}

/// Pins (or, with `on` false, unpins) the control plane's processes to the last CPU and this process's threads and
/// the daemons' to the others, so that the node's side and the control plane do not share a core. Children started
/// later (plugins, shims) inherit this process's CPUs.
pub(crate) fn pin_split(
    cluster: &PrivateCluster,
    daemons: &BTreeMap<&'static str, Daemon>,
    on: bool,
) {
    // SAFETY: sysconf has no preconditions. (Not available_parallelism: it reads this process's affinity.)
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    assert!(cpus >= 2, "BENCH_SPLIT_CPUS needs at least 2 CPUs");
    let all = format!("0-{}", cpus - 1);
    let (node, control) = if on {
        (format!("0-{}", cpus - 2), format!("{}", cpus - 1))
    } else {
        (all.clone(), all)
    };
    let taskset = |cpus: &str, pid: &str| {
        sh(&["taskset", "-a", "-p", "-c", cpus, pid.trim()]);
    };
    for pid in control_plane_pids(cluster).into_iter().flatten() {
        taskset(&control, &pid);
    }
    for daemon in daemons.values() {
        taskset(&node, &daemon.child.id().to_string());
    }
    taskset(&node, &std::process::id().to_string());
}

/// CPU seconds (user + system) used so far by the control plane the bench started, per process: etcd,
/// kube-apiserver, plexus-controller (0 for one not running). On this machine they share the cores with the plugins,
/// so their work for the Kubernetes modes' writes shows in those modes' wall times.
pub(crate) fn control_plane_cpu_by_process(cluster: &PrivateCluster) -> [f64; 3] {
    control_plane_pids(cluster).map(|pid| {
        pid.and_then(|pid| process_cpu_s(&pid))
            .map_or(0.0, |(own, _)| own)
    })
}

/// The process ids of etcd, kube-apiserver and plexus-controller (none for one not running).
pub(crate) fn control_plane_pids(cluster: &PrivateCluster) -> [Option<String>; 3] {
    ["etcd", "kube-apiserver", "plexus-controller"].map(|name| {
        std::fs::read_to_string(cluster.state.path().join(format!("{name}.pid")))
            .ok()
            .map(|pid| pid.trim().to_owned())
    })
}

/// The body of a GET (the daemon's `/metrics`).
pub(crate) fn curl_text(url: &str) -> String {
    sh(&["curl", "-fsS", "-m", "5", url])
}

/// Where plexus-thick's ADD and DEL go: the means per request of each phase the daemon times
/// (`plexus_daemon_phase_duration_seconds`, the measured rounds only), what the daemon spends outside them (config
/// parse, plan, result), and what the bench sees outside the daemon (the shim's exec, the socket, the reply).
pub(crate) fn phase_report(before: &str, after: &str, samples: &ModeSamples) -> Value {
    use plexus_e2e::thick::metric_sum;
    let delta = |name: &str, labels: &[&str]| {
        metric_sum(after, name, labels) - metric_sum(before, name, labels)
    };
    println!(
        "
plexus-thick, where a request's time goes (means over the measured rounds; milliseconds)
"
    );
    println!(
        "{:<8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "command",
        "at bench",
        "shim+io",
        "daemon",
        "lookup",
        "delegates",
        "status",
        "lock",
        "rec write",
        "rec rm",
        "other"
    );
    let mut rows = serde_json::Map::new();
    for (command, calls) in [("ADD", &samples.add), ("DEL", &samples.del)] {
        let c = format!("command=\"{command}\"");
        let requests = delta("plexus_daemon_request_duration_seconds_count", &[&c]);
        if requests < 1.0 {
            continue;
        }
        let mean_ms = |name: &str, labels: &[&str]| delta(name, labels) / requests * 1000.0;
        let daemon = mean_ms("plexus_daemon_request_duration_seconds_sum", &[&c]);
        let phase = |p: &str| {
            mean_ms(
                "plexus_daemon_phase_duration_seconds_sum",
                &[&format!("phase=\"{p}\""), &c],
            )
        };
        let phases: BTreeMap<&str, f64> = plexus_cni::PHASE_SPANS
            .iter()
            .map(|p| (*p, phase(p)))
            .collect();
        let at_bench = calls.iter().map(|c| ms(c.took)).sum::<f64>() / calls.len() as f64;
        let other = daemon - phases.values().sum::<f64>();
        println!(
            "{command:<8} {at_bench:>9.2} {:>8.2} {daemon:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {other:>9.2}",
            at_bench - daemon,
            phases["lookup"],
            phases["delegate"],
            phases["status_write"],
            phases["record_lock"],
            phases["record_write"],
            phases["record_remove"],
        );
        rows.insert(
            command.into(),
            json!({"at_bench_ms": at_bench, "outside_daemon_ms": at_bench - daemon, "daemon_ms": daemon,
                   "phases_ms": phases, "daemon_other_ms": other}),
        );
    }
    println!(
        "(shim+io: the bench's time minus the daemon's: the shim's exec, the socket and the request thread; rest: the \
         daemon's time outside the phases (config, plan, result), understated for ADD, whose second record write runs \
         beside the status write)"
    );
    let writes = |connection: &str| {
        delta(
            "plexus_daemon_status_writes_total",
            &[&format!("connection=\"{connection}\"")],
        )
    };
    let (thread, shared) = (writes("thread"), writes("shared"));
    println!(
        "network-status PATCHes in the measured rounds: {thread} on the request thread's own connection, {shared} on \
         the shared client"
    );
    rows.insert(
        "status_writes".into(),
        json!({"thread": thread, "shared": shared}),
    );
    Value::Object(rows)
}

/// Credentials for multus-daemons, made once in `work`: a service-account token (cluster-admin, as the bench needs
/// no finer RBAC), the cluster's CA and the namespace, as the in-cluster path holds them.
pub(crate) fn multus_credentials(cluster: &PrivateCluster, work: &Path) -> PathBuf {
    let secrets = work.join("multus-serviceaccount");
    if secrets.exists() {
        return secrets;
    }
    std::fs::create_dir_all(&secrets).unwrap();
    cluster.kubectl(
        &["create", "serviceaccount", "multus", "-n", "bench-system"],
        "",
    );
    cluster.kubectl(
        &[
            "create",
            "clusterrolebinding",
            "bench-multus",
            "--clusterrole=cluster-admin",
            "--serviceaccount=bench-system:multus",
        ],
        "",
    );
    let token = cluster.kubectl(
        &[
            "create",
            "token",
            "multus",
            "-n",
            "bench-system",
            "--duration=12h",
        ],
        "",
    );
    std::fs::write(secrets.join("token"), token.trim()).unwrap();
    std::fs::copy(
        cluster.state.path().join("pki/ca.crt"),
        secrets.join("ca.crt"),
    )
    .unwrap();
    std::fs::write(secrets.join("namespace"), "bench-system").unwrap();
    secrets
}

/// Whether `GET path` over the unix socket answers 2xx (multus-daemon's API), within a second.
pub(crate) fn unix_http_ok(socket: &Path, path: &str) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: multus\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 2")
}
