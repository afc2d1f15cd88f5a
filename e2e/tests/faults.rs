//! The fault matrix in Kubernetes mode (docs/testing.md has it as a table): `plexus` against the real
//! kube-apiserver, with the faults made by real means — a TCP proxy this test runs in front of the API server (it
//! forwards, stalls, or is gone), a delegate wrapper script that holds the ADD at a chosen step, SIGKILL, objects
//! deleted with kubectl. Every test ends with `assert_no_leftovers`: no link, lease, record, iptables rule or netns
//! file is left. Every test runs in thin and in thick mode (in thick mode the proxy is in front of the daemon's
//! client, and SIGKILL hits the daemon).

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_e2e::thick::Mode;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// A TCP proxy on 127.0.0.1 in front of the API server. Forwarding, it is transparent (TLS passes through; the
/// serving certificate is valid for 127.0.0.1). Stalled, it accepts connections and holds every byte: the API
/// server is "slow" without bound. Stopped, its port is closed: the API server is down.
struct Proxy {
    port: u16,
    stalled: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// The accepting thread: it owns the listener, so the port closes when it ends.
    acceptor: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Proxy {
    fn start() -> Self {
        let upstream = api_server_address();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            stalled: Arc::default(),
            stopped: Arc::default(),
            accepted: Arc::default(),
            open: Arc::default(),
            acceptor: Mutex::default(),
        };
        let (stalled, stopped, accepted, open) = (
            Arc::clone(&proxy.stalled),
            Arc::clone(&proxy.stopped),
            Arc::clone(&proxy.accepted),
            Arc::clone(&proxy.open),
        );
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut open = open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let stalled = Arc::clone(&stalled);
                    std::thread::spawn(move || pipe(from, to, &stalled));
                }
            }
        });
        *proxy.acceptor.lock().unwrap() = Some(acceptor);
        proxy
    }

    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Closes the port and every open connection: the API server is down. The port is closed once the accepting
    /// thread, the listener's only owner, has ended ([`Proxy::close`] joins it, and fails if it panicked). It is not
    /// checked by probing the port: another test's proxy can be given the same port at once (seen in a run as "the
    /// proxy still listens").
    fn stop(&self) {
        self.close();
    }

    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        kubeconfig_via(dir, self.port)
    }
}

impl Proxy {
    fn close(&self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            // Wakes the accepting thread, which sees the flag and ends, closing the listener.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
        }
        if let Some(acceptor) = self.acceptor.lock().unwrap().take() {
            acceptor
                .join()
                .expect("the proxy's accepting thread ended without a panic");
        }
        self.cut();
    }

    /// Closes every open connection (both ends), and goes on forwarding new ones.
    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.close();
    }
}

/// Copies bytes one way; while `stalled`, holds what it read.
fn pipe(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool) {
    let mut buf = [0u8; 16384];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A pod in a namespace of its own selecting two NADs: `side` (ptp with ipMasq: iptables rules) and `lan` (bridge
/// + host-local, then tuning). `lan`'s tuning can be a wrapper that holds the ADD (see [`Pod::holding`]).
struct Pod {
    ns: KubeNamespace,
    sb: PodSandbox,
    bridge: String,
    _bridge: HostLink,
    bin: tempfile::TempDir,
    args: String,
    uid: String,
}

impl Pod {
    fn new(prefix: &str, mode: &Mode) -> Self {
        Self::with_last_delegate(prefix, mode, "tuning")
    }

    /// A pod whose `lan` ends with a wrapper that, on ADD, creates `<bin>/reached` and waits for `<bin>/go` before
    /// running the real tuning plugin ([`Pod::held_delegate`] gives the two paths). The wrapper is in the NAD from
    /// its creation on: a NAD changed afterwards could reach a thick daemon's cache only after the ADD.
    fn holding(prefix: &str, mode: &Mode) -> Self {
        let pod = Self::with_last_delegate(prefix, mode, "held-tuning");
        let (reached, go) = pod.held_delegate();
        script(
            pod.bin.path(),
            "held-tuning",
            &format!(
                "if [ \"$CNI_COMMAND\" = ADD ]; then touch {}; while [ ! -e {} ]; do sleep 0.05; done; fi\nexec {}",
                reached.display(),
                go.display(),
                plugins_dir().join("tuning").display()
            ),
        );
        pod
    }

    /// A pod whose `lan` ends with a wrapper that appends each `CNI_COMMAND` it gets to `<bin>/calls`
    /// ([`Pod::delegate_calls`]) before running the real tuning plugin.
    fn logging(prefix: &str, mode: &Mode) -> Self {
        let pod = Self::with_last_delegate(prefix, mode, "logged-tuning");
        script(
            pod.bin.path(),
            "logged-tuning",
            &format!(
                "echo \"$CNI_COMMAND\" >> {}\nexec {}",
                pod.bin.path().join("calls").display(),
                plugins_dir().join("tuning").display()
            ),
        );
        pod
    }

    /// The commands a [`Pod::logging`]'s wrapper delegate got, in order.
    fn delegate_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn with_last_delegate(prefix: &str, mode: &Mode, last: &str) -> Self {
        let ns = KubeNamespace::new(prefix);
        let sb = mode.sandbox();
        let bridge = unique("plxe");
        let bin = tempfile::tempdir().unwrap();
        create_nad(
            &ns.name,
            "side",
            Some(
                &json!({"cniVersion": "1.0.0", "type": "ptp", "ipMasq": true, "ipam": sb.host_local(&subnet().0)}),
            ),
        );
        let lan = json!({"cniVersion": "1.0.0", "plugins": [
            {"type": "bridge", "bridge": bridge, "ipam": sb.host_local(&subnet().0)},
            {"type": last}
        ]});
        create_nad(&ns.name, "lan", Some(&lan));
        let uid = mode.create_pod(&ns.name, "victim", &[(NETWORKS, "side, lan")]);
        let args = pod_args(&ns.name, "victim", &uid, &sb.container_id);
        Self {
            ns,
            sb,
            _bridge: HostLink::adopt(&bridge),
            bridge,
            bin,
            args,
            uid,
        }
    }

    /// The Plexus config, with `kubeconfig` and `extra` keys on top; wrapper delegates are found first.
    /// (A shim config in thick mode: the daemon has its own client.)
    fn config(&self, kubeconfig: &Path, extra: Value) -> Value {
        let mut config = self.sb.config(extra);
        if self.sb.shim_socket_dir.is_none() {
            config["kubeconfig"] = json!(kubeconfig);
        }
        config["binDir"] = json!(format!(
            "{}:{}",
            self.bin.path().display(),
            plugins_dir().display()
        ));
        config
    }

    fn call(&self, command: &'static str) -> Call<'_> {
        self.sb.call(command, &self.args)
    }

    fn link_names(&self) -> Vec<String> {
        let mut names = self.sb.netns.link_names();
        names.sort();
        names
    }

    fn record_state(&self) -> Option<String> {
        let path = record_path(
            self.sb.cni_dir.path(),
            "plexus",
            &self.sb.container_id,
            "eth0",
        );
        let record: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        record["state"].as_str().map(str::to_owned)
    }

    fn has_network_status(&self) -> bool {
        pod_annotations(&self.ns.name, "victim").contains_key(NETWORK_STATUS)
    }

    /// `kubectl plexus why` on the victim names the cause of the failed ADD whose CNI error object is `error`, once
    /// the kubelet has reported it. These faults are made outside a kubelet (the test runs `plexus` as the runtime
    /// would), so the test writes the kubelet's FailedCreatePodSandBox event itself, in the kubelet's format and with
    /// the error as libcni renders it (`msg; details`); `kubectl_plexus::why_on_a_real_node_…` has real kubelets'.
    fn assert_why_names_the_cause(&self, error: &Value) {
        let mut cause = error["msg"].as_str().expect("msg").to_owned();
        if let Some(details) = error["details"].as_str().filter(|d| !d.is_empty()) {
            cause = format!("{cause}; {details}");
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "victim.", "namespace": self.ns.name},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "victim", "namespace": self.ns.name,
                "uid": self.uid},
            "reason": "FailedCreatePodSandBox",
            "type": "Warning",
            "source": {"component": "kubelet", "host": "faults"},
            "count": 1,
            "message": format!(
                "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox \
                 \"{}\": plugin type=\"plexus\" name=\"plexus\" failed (add): {cause}",
                self.sb.container_id
            ),
        });
        kubectl(&["create", "-f", "-"], Some(&event.to_string()));
        let out = kubectl_plexus(&["why", "victim", "-n", &self.ns.name, "-o", "json"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let reasons: Vec<&str> = report["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&report))
            .flat_map(|n| n["findings"].as_array().into_iter().flatten())
            .filter_map(|f| f["reason"].as_str())
            .collect();
        assert!(
            reasons.iter().any(|r| r.contains(&cause)),
            "why does not name {cause:?}: {reasons:#?}"
        );
        println!(
            "$ kubectl plexus why victim -n {}\n{}",
            self.ns.name,
            String::from_utf8_lossy(
                &kubectl_plexus(&["why", "victim", "-n", &self.ns.name]).stdout
            )
        );
    }

    /// The files of a [`Pod::holding`]'s wrapper: the one it creates when reached, the one it waits for.
    fn held_delegate(&self) -> (PathBuf, PathBuf) {
        (self.bin.path().join("reached"), self.bin.path().join("go"))
    }

    fn assert_no_leftovers(self) {
        let Pod {
            sb,
            bridge,
            _bridge,
            ..
        } = self;
        let PodSandbox {
            netns,
            data,
            cni_dir,
            container_id,
            ..
        } = sb;
        assert_no_leftovers(
            netns,
            Some(&bridge),
            data.path(),
            cni_dir.path(),
            &container_id,
        );
    }
}

/// A [`Pod`] made by `make` ([`Pod::new`] or [`Pod::holding`]) whose config reaches the API server through a new
/// [`Proxy`], each call bounded by `api_timeout` seconds (in thick mode, the daemon's client goes through the
/// proxy). The temporary directory holds the kubeconfig.
fn behind_proxy(
    prefix: &str,
    api_timeout: u32,
    mode: &Mode,
    make: fn(&str, &Mode) -> Pod,
) -> (Pod, Proxy, tempfile::TempDir, Value) {
    let proxy = Proxy::start();
    let dir = tempfile::tempdir().unwrap();
    mode.start_daemon(json!({"kubeconfig": proxy.kubeconfig(dir.path())}));
    let pod = make(prefix, mode);
    let config = pod.config(
        &proxy.kubeconfig(dir.path()),
        json!({"apiTimeoutSeconds": api_timeout}),
    );
    (pod, proxy, dir, config)
}

/// Waits until the held delegate was reached; fails with the ADD's output if the ADD ended first.
fn wait_until_reached(add: &mut std::process::Child, reached: &Path) {
    wait_for("the last delegate", || {
        if let Ok(Some(status)) = add.try_wait() {
            let mut out = String::new();
            if let Some(mut stdout) = add.stdout.take() {
                let _ = stdout.read_to_string(&mut out);
            }
            panic!("the ADD ended ({status}) before its last delegate: {out}");
        }
        reached.exists()
    });
}

/// Waits (bounded, so that a broken build fails instead of hanging) until `done` holds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What an ADD does when the API server can't answer (down, or `slow`: stalled past `apiTimeoutSeconds`, applied after
/// the pod was created): thin mode reads
/// the pod and its NADs from the API server, so it fails before any delegate runs. Thick mode reads them from the
/// daemon's caches, filled before the fault: the delegates run, the network-status PATCH can't be sent, and the ADD
/// is rolled back (each delegate's DEL) before the same code 11 is returned.
fn api_server_fails_during_add(prefix: &str, mode: &Mode, slow: bool) {
    let (pod, proxy, _dir, config) =
        behind_proxy(prefix, if slow { 1 } else { 2 }, mode, Pod::logging);
    if slow {
        proxy.stall();
    } else {
        proxy.stop();
    }
    let e = pod.call("ADD").err(config.to_string().as_bytes());
    assert_eq!(e["code"], 11, "try again later: {e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("victim"), "{e}");
    if mode.is_thick() {
        assert!(msg.contains("network-status"), "{e}");
        assert_eq!(
            pod.delegate_calls(),
            ["ADD", "DEL"],
            "the delegates ran from the caches, then were rolled back"
        );
    } else {
        assert_eq!(
            pod.delegate_calls(),
            Vec::<String>::new(),
            "no delegate ran"
        );
    }
    assert_eq!(pod.link_names(), Vec::<String>::new(), "nothing attached");
    assert_eq!(pod.record_state(), None, "no record of the ADD");
    assert!(!pod.has_network_status());
    // The proxy forwards again for `why` (through the test's own kubeconfig, not the proxy).
    pod.assert_why_names_the_cause(&e);
    if slow {
        assert!(
            proxy.accepted.load(Ordering::SeqCst) > 0,
            "plexus went through the proxy"
        );
    }
    pod.call("DEL").ok(&config);
    pod.assert_no_leftovers();
}

fn api_server_down_during_add(mode: &Mode) {
    api_server_fails_during_add("down-add", mode, false);
}

fn api_server_slow_during_add(mode: &Mode) {
    api_server_fails_during_add("slow-add", mode, true);
}

fn api_server_slow_at_the_status_patch(mode: &Mode) {
    let (pod, proxy, _dir, config) = behind_proxy("slow-patch", 2, mode, Pod::holding);
    let (reached, go) = pod.held_delegate();
    let mut child = pod.call("ADD").spawn(config.to_string().as_bytes());
    // The pod and NADs were read; the last delegate runs. From now on the API server does not answer.
    wait_until_reached(&mut child, &reached);
    proxy.stall();
    std::fs::write(&go, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(e["msg"].as_str().unwrap().contains("network-status"), "{e}");
    assert_eq!(pod.link_names(), Vec::<String>::new(), "the ADD was undone");
    assert!(!pod.has_network_status());
    pod.assert_why_names_the_cause(&e);
    pod.call("DEL").ok(&config);
    pod.assert_no_leftovers();
}

fn killed_before_the_status_patch_then_del(mode: &Mode) {
    let (pod, proxy, _dir, config) = behind_proxy("kill-patch", 60, mode, Pod::holding);
    let (reached, go) = pod.held_delegate();
    let mut child = pod.call("ADD").spawn(config.to_string().as_bytes());
    wait_until_reached(&mut child, &reached);
    // Hold the PATCH at the proxy, let the ADD finish its delegates and its record, then SIGKILL plexus.
    proxy.stall();
    std::fs::write(&go, b"").unwrap();
    wait_for("the final record", || {
        pod.record_state().as_deref() == Some("added")
    });
    // Thin mode: plexus is the process that dies; thick mode: the daemon (restarted before the DEL).
    match mode.daemon() {
        None => child.kill().unwrap(),
        Some(daemon) => daemon.kill(),
    }
    child.wait().unwrap();
    assert_eq!(pod.link_names(), ["eth0", "net1", "net2"]);
    assert!(
        !pod.has_network_status(),
        "the PATCH never reached the API server"
    );
    if let Some(daemon) = mode.daemon() {
        daemon.spawn();
    }
    pod.call("DEL").ok(&config);
    pod.assert_no_leftovers();
}

/// The record can't be completed at the end of an ADD (its file system fills up after the last delegate):
/// the ADD is rolled back and fails with code 104, and publishes nothing — no network-status, no event. The
/// runtime's DEL then cleans up, and a following ADD of the same pod publishes its own.
fn record_unwritable_at_the_end_of_add_publishes_nothing(mode: &Mode) {
    let pod = Pod::with_last_delegate("ro-record", mode, "then-read-only");
    let records = pod.sb.cni_dir.path().to_owned();
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=1m,mode=0700",
        "tmpfs",
        &records.display().to_string(),
    ]);
    let unmount = Unmount(records.clone());
    script(
        pod.bin.path(),
        "then-read-only",
        &format!(
            "{} || exit $?\nif [ \"$CNI_COMMAND\" = ADD ]; then dd if=/dev/zero of={} bs=64k 2>/dev/null; fi\nexit 0",
            plugins_dir().join("tuning").display(),
            records.join(".fill").display()
        ),
    );
    let config = pod.config(&kubeconfig(), json!({}));
    let e = pod.call("ADD").err(config.to_string().as_bytes());
    assert_eq!(e["code"], 104, "{e}");
    assert_eq!(
        pod.link_names(),
        Vec::<String>::new(),
        "the ADD was rolled back"
    );
    assert!(
        !pod.has_network_status(),
        "a rolled-back ADD wrote network-status"
    );
    pod.assert_why_names_the_cause(&e);

    std::fs::remove_file(records.join(".fill")).unwrap();
    pod.call("DEL").ok(&config);
    // The same pod again, with a file system that stays writable: its ADD stands and publishes.
    std::fs::write(
        pod.bin.path().join("then-read-only"),
        format!(
            "#!/bin/sh\nexec {}\n",
            plugins_dir().join("tuning").display()
        ),
    )
    .unwrap();
    pod.call("ADD").ok(&config);
    assert!(pod.has_network_status());
    let added = |events: &[(String, String)]| {
        events
            .iter()
            .filter(|(reason, _)| reason == "AddedInterface")
            .count()
    };
    let events = mode.pod_events(&pod.ns.name, "victim", |e| added(e) >= 3);
    assert_eq!(
        added(&events),
        3,
        "only the standing ADD's events: {events:?}"
    );
    pod.call("DEL").ok(&config);
    drop(unmount);
    pod.assert_no_leftovers();
}

/// Unmounts a test's tmpfs on drop (also when the test fails).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn api_server_down_during_del(mode: &Mode) {
    let (pod, proxy, _dir, config) = behind_proxy("down-del", 2, mode, Pod::new);
    pod.call("ADD").ok(&config);
    assert_eq!(pod.link_names(), ["eth0", "net1", "net2"]);
    proxy.stop();
    pod.call("DEL").ok(&config);
    pod.assert_no_leftovers();
}

fn api_server_slow_during_del(mode: &Mode) {
    let (pod, proxy, _dir, config) = behind_proxy("slow-del", 2, mode, Pod::new);
    pod.call("ADD").ok(&config);
    proxy.stall();
    let before = proxy.accepted.load(Ordering::SeqCst);
    pod.call("DEL").ok(&config);
    assert_eq!(
        proxy.accepted.load(Ordering::SeqCst),
        before,
        "DEL with a record opens no connection to the API server"
    );
    pod.assert_no_leftovers();
}

/// An object the ADD read is deleted before the DEL: the DEL goes by the record and cleans up.
fn deleted_between_add_and_del(prefix: &str, mode: &Mode, delete: impl Fn(&str)) {
    let pod = Pod::new(prefix, mode);
    let config = pod.config(&kubeconfig(), json!({}));
    pod.call("ADD").ok(&config);
    assert_eq!(pod.link_names(), ["eth0", "net1", "net2"]);
    delete(&pod.ns.name);
    pod.call("DEL").ok(&config);
    pod.assert_no_leftovers();
}

fn nad_deleted_between_add_and_del(mode: &Mode) {
    deleted_between_add_and_del("nad-gone", mode, |ns| {
        for nad in ["side", "lan"] {
            kubectl(
                &["delete", "network-attachment-definition", "-n", ns, nad],
                None,
            );
        }
    });
}

fn pod_deleted_between_add_and_del(mode: &Mode) {
    deleted_between_add_and_del("pod-gone", mode, |ns| {
        kubectl(&["delete", "pod", "-n", ns, "victim", "--wait=false"], None);
    });
}

impl Pod {
    /// Wipes the record directory (a node restored from a backup, `cniDir` on a lost disk).
    fn wipe_records(&self) {
        for entry in std::fs::read_dir(self.sb.cni_dir.path()).unwrap().flatten() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
}

fn del_with_the_record_gone(mode: &Mode) {
    let pod = Pod::new("no-record", mode);
    let config = pod.config(&kubeconfig(), json!({}));
    pod.call("ADD").ok(&config);
    pod.wipe_records();
    // DEL derives the attachments from the pod and its NADs.
    pod.call("DEL").ok(&config);
    pod.assert_no_leftovers();
}

/// The API server fails (`fault`) while the record is gone: the DEL still finishes, falling back to the default
/// network; nothing on the node or in reach says what else the pod had.
fn api_server_fails_during_del_with_the_record_gone(prefix: &str, mode: &Mode, fault: fn(&Proxy)) {
    let (pod, proxy, _dir, config) = behind_proxy(prefix, 2, mode, Pod::new);
    pod.call("ADD").ok(&config);
    pod.wipe_records();
    fault(&proxy);
    pod.call("DEL").ok(&config);
    if mode.is_thick() {
        // The daemon's caches still know the pod and its NADs: everything went.
        assert_eq!(pod.link_names(), Vec::<String>::new());
        pod.assert_no_leftovers();
        return;
    }
    assert_eq!(
        pod.link_names(),
        ["net1", "net2"],
        "the default network went"
    );
    // Once the API server answers again, a DEL (GC, a retry) finds the rest through the pod and its NADs.
    pod.call("DEL").ok(&pod.config(&kubeconfig(), json!({})));
    pod.assert_no_leftovers();
}

fn api_server_down_during_del_with_the_record_gone(mode: &Mode) {
    api_server_fails_during_del_with_the_record_gone("no-record-down", mode, Proxy::stop);
}

fn api_server_slow_during_del_with_the_record_gone(mode: &Mode) {
    api_server_fails_during_del_with_the_record_gone("no-record-slow", mode, Proxy::stall);
}

/// Thick mode: while ADDs come often, a request thread writes network-status over its own connection (the daemon's
/// first ADD writes over the shared client and makes none; the second, coming soon after, writes over the shared
/// client and its thread connects after the reply; the third uses that connection). When the connections are cut,
/// the next ADD's PATCH goes over the shared client, the ADD stands, and the thread connects again after its reply.
/// When the API server stops answering, the PATCH on the thread's connection runs out of time and is not sent again.
#[test]
fn thick_status_patch_on_the_threads_connection_cut_or_stalled() {
    let mode = Mode::thick();
    let proxy = Proxy::start();
    let dir = tempfile::tempdir().unwrap();
    // One request thread: every request meets the same thread's connection.
    mode.start_daemon(
        json!({"kubeconfig": proxy.kubeconfig(dir.path()), "maxConcurrentDelegates": 1}),
    );
    let daemon = mode.daemon().unwrap();
    let pod = Pod::new("cut-conn", &mode);
    let config = pod.config(&proxy.kubeconfig(dir.path()), json!({}));
    let writes = || {
        let on = |connection: &str| {
            let label = format!("connection=\"{connection}\"");
            daemon.metric("plexus_daemon_status_writes_total", &[&label])
        };
        (on("shared"), on("thread"))
    };
    let connections = |result: &str| {
        let label = format!("result=\"{result}\"");
        daemon.metric("plexus_daemon_thread_connections_total", &[&label])
    };
    let add_then_del = |round: usize| {
        let result = pod.call("ADD").ok(&config);
        assert!(
            result["interfaces"]
                .as_array()
                .is_some_and(|i| !i.is_empty()),
            "round {round}: {result}"
        );
        assert!(pod.has_network_status(), "round {round}");
        pod.call("DEL").ok(&config);
    };

    add_then_del(1);
    assert_eq!(writes(), (1.0, 0.0), "the daemon's first ADD");
    add_then_del(2);
    assert_eq!(
        writes(),
        (2.0, 0.0),
        "the second ADD: no connection of its own yet"
    );
    daemon.wait_for("the thread's connection", |_| connections("made") == 1.0);
    let accepted = proxy.accepted.load(Ordering::SeqCst);
    add_then_del(3);
    assert_eq!(
        writes(),
        (2.0, 1.0),
        "the third ADD: its thread's connection"
    );
    assert_eq!(
        proxy.accepted.load(Ordering::SeqCst),
        accepted,
        "no new connection on the ADD's path"
    );

    proxy.cut();
    add_then_del(4);
    assert_eq!(
        writes(),
        (3.0, 1.0),
        "after the cut: over the shared client"
    );
    // The thread's runtime did not run between the cut and the PATCH: the connection looked open, the PATCH got
    // no answer on it, and went again over the shared client.
    assert_eq!(connections("broken"), 1.0);
    daemon.wait_for("the thread's new connection", |_| {
        connections("made") == 2.0
    });
    add_then_del(5);
    assert_eq!(writes(), (3.0, 2.0), "its new connection");
    assert_eq!(
        daemon.metric("plexus_daemon_requests_total", &["outcome=\"error\""]),
        0.0
    );

    // The API server stops answering: the PATCH on the thread's connection runs out of time, is not sent again, and
    // the ADD is undone.
    proxy.stall();
    let slow = pod.config(
        &proxy.kubeconfig(dir.path()),
        json!({"apiTimeoutSeconds": 2}),
    );
    let e = pod.call("ADD").err(slow.to_string().as_bytes());
    assert!(e["msg"].as_str().unwrap().contains("network-status"), "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("no answer within 2s"),
        "{e}"
    );
    assert_eq!(pod.link_names(), Vec::<String>::new(), "the ADD was undone");
    assert_eq!(writes(), (3.0, 2.0), "no PATCH went through");
    assert_eq!(
        connections("broken"),
        1.0,
        "a PATCH that ran out of time is not sent again"
    );
    pod.call("DEL").ok(&slow);
    proxy.cut();
    pod.assert_no_leftovers();
}

plexus_e2e::in_both_modes!(
    api_server_down_during_add,
    api_server_slow_during_add,
    api_server_slow_at_the_status_patch,
    killed_before_the_status_patch_then_del,
    api_server_down_during_del,
    api_server_slow_during_del,
    nad_deleted_between_add_and_del,
    pod_deleted_between_add_and_del,
    del_with_the_record_gone,
    api_server_down_during_del_with_the_record_gone,
    api_server_slow_during_del_with_the_record_gone,
    record_unwritable_at_the_end_of_add_publishes_nothing,
);
