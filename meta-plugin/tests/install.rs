//! `plexus install` (the node installer) as the chart's DaemonSet runs it, against real files: a host root with a
//! CNI bin and conf dir, a service-account dir laid out as the kubelet writes projected volumes (`token` ->
//! `..data/token`, `..data` -> a timestamped dir, swapped by a rename on rotation).

#![forbid(unsafe_code)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");
const PLEXUS_SHIM: &str = env!("CARGO_BIN_EXE_plexus-shim");

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let host = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["root/opt/cni/bin", "root/etc/cni/net.d", "sa", "run"] {
            std::fs::create_dir_all(host.path(d)).unwrap();
        }
        std::fs::write(host.path("sa/ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        host.rotate_token("first-token");
        host
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn conf_dir(&self) -> PathBuf {
        self.path("root/etc/cni/net.d")
    }

    fn conf(&self) -> PathBuf {
        self.conf_dir().join("00-plexus.conflist")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.conf_dir().join("plexus.d/plexus.kubeconfig")
    }

    /// Writes a new token the way the kubelet updates a projected volume: a new timestamped dir, then `..data`
    /// swapped to it by a rename.
    fn rotate_token(&self, token: &str) {
        let sa = self.path("sa");
        let stamp = format!("..{}", token);
        std::fs::create_dir_all(sa.join(&stamp)).unwrap();
        std::fs::write(sa.join(&stamp).join("token"), token).unwrap();
        let tmp = sa.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&stamp, &tmp).unwrap();
        std::fs::rename(&tmp, sa.join("..data")).unwrap();
        if !sa.join("token").exists() {
            symlink("..data/token", sa.join("token")).unwrap();
        }
    }

    fn write_primary(&self, name: &str, config: &Value) {
        std::fs::write(self.conf_dir().join(name), config.to_string()).unwrap();
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(PLEXUS);
        cmd.arg("install")
            .arg("--host-root")
            .arg(self.path("root"))
            .arg("--service-account-dir")
            .arg(self.path("sa"))
            .arg("--ready-file")
            .arg(self.path("run/installed"))
            .args(["--interval-seconds", "0.1"])
            .args(extra)
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", "6443")
            .env("PLEXUS_LOG", "debug");
        cmd
    }

    fn start(&self, extra: &[&str]) -> Installer {
        let child = self
            .command(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Installer { child }
    }

    fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in walk(&self.path("root")) {
            out.push(
                entry
                    .strip_prefix(self.path("root"))
                    .unwrap()
                    .display()
                    .to_string(),
            );
        }
        out.sort();
        out
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

struct Installer {
    child: Child,
}

impl Installer {
    /// SIGTERM, as the kubelet stops a container; returns its stderr.
    fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        assert!(out.status.success(), "installer exit: {:?}", out.status);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 20s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn bridge(name: &str, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": "pods0", "ipam": {"type": "host-local", "subnet": subnet}}
    ]})
}

fn delegate(conf: &Path) -> Option<Value> {
    read_json(conf).map(|c| c["plugins"][0]["delegates"][0].clone())
}

#[test]
fn installs_waits_for_the_cluster_network_follows_it_and_the_token_and_leaves_everything_on_stop() {
    let host = Host::new();
    // A meta-plugin's conf is there first: never a cluster network (no conf delegating to Multus or to itself).
    host.write_primary(
        "00-multus.conf",
        &json!({"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus"}),
    );
    host.write_primary("05-broken.conflist", &json!({"name": "x", "plugins": []}));
    let installer = host.start(&[]);

    // The binary and the kubeconfig come at once; the conf waits for a cluster network.
    let binary = host.path("root/opt/cni/bin/plexus");
    wait_for("the binary", || binary.exists());
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(PLEXUS).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // Thick mode's plugin comes too (from beside the running binary), so that a switch of mode finds it.
    let shim = host.path("root/opt/cni/bin/plexus-shim");
    wait_for("the shim binary", || shim.exists());
    assert_eq!(
        std::fs::read(&shim).unwrap(),
        std::fs::read(PLEXUS_SHIM).unwrap()
    );
    wait_for("the kubeconfig", || host.kubeconfig().exists());
    assert_eq!(
        std::fs::metadata(host.kubeconfig())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let kubeconfig = kube::config::Kubeconfig::read_from(host.kubeconfig()).unwrap();
    assert_eq!(
        kubeconfig.clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .server
            .as_deref(),
        Some("https://127.0.0.1:6443")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!host.conf().exists(), "a conf without a cluster network");
    assert!(!host.path("run/installed").exists());

    host.write_primary("10-pods.conflist", &bridge("pods", "198.19.0.0/24"));
    wait_for("the conf", || host.conf().exists());
    let conf = read_json(&host.conf()).unwrap();
    assert_eq!(conf["plugins"][0]["type"], "plexus");
    assert_eq!(
        conf["plugins"][0]["kubeconfig"],
        "/etc/cni/net.d/plexus.d/plexus.kubeconfig"
    );
    assert_eq!(conf["plugins"][0]["binDir"], "/opt/cni/bin");
    assert_eq!(
        delegate(&host.conf()),
        Some(bridge("pods", "198.19.0.0/24"))
    );
    wait_for("the ready file", || host.path("run/installed").exists());
    let check = host.command(&["--check"]).status().unwrap();
    assert!(check.success());

    // The cluster network's config changes: the conf follows.
    host.write_primary("10-pods.conflist", &bridge("pods", "198.19.1.0/24"));
    wait_for("the conf to follow the cluster network", || {
        delegate(&host.conf()) == Some(bridge("pods", "198.19.1.0/24"))
    });

    // The token rotates: the kubeconfig follows.
    host.rotate_token("second-token");
    wait_for("the kubeconfig to carry the new token", || {
        read_json(&host.kubeconfig())
            .is_some_and(|k| k["users"][0]["user"]["token"] == "second-token")
    });
    assert!(kube::config::Kubeconfig::read_from(host.kubeconfig()).is_ok());

    // The cluster network's file goes away (an upgrade of it): the conf stays as it was.
    std::fs::remove_file(host.conf_dir().join("10-pods.conflist")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        delegate(&host.conf()),
        Some(bridge("pods", "198.19.1.0/24"))
    );

    // Stopped (a restart or an upgrade): everything stays.
    let before = host.files();
    let log = installer.stop();
    assert!(log.contains("stay in place"), "{log}");
    assert_eq!(host.files(), before);
}

#[test]
fn a_newer_installer_takes_over_and_the_older_stops_writing() {
    let host = Host::new();
    host.write_primary("10-pods.conflist", &bridge("pods", "198.19.2.0/24"));
    let old = host.start(&[]);
    wait_for("the conf", || host.conf().exists());
    let new = host.start(&["--cni-version", "1.1.0"]);
    wait_for("the newer installer's conf", || {
        read_json(&host.conf()).is_some_and(|c| c["cniVersion"] == "1.1.0")
    });
    // The older one does not write its version back.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(read_json(&host.conf()).unwrap()["cniVersion"], "1.1.0");
    let log = old.stop();
    assert!(log.contains("newer installer claimed"), "{log}");
    new.stop();
    assert!(host.conf().exists());
}

#[test]
fn cleanup_removes_what_the_installer_wrote_and_nothing_else() {
    let host = Host::new();
    host.write_primary("10-pods.conflist", &bridge("pods", "198.19.3.0/24"));
    std::fs::write(host.path("root/opt/cni/bin/bridge"), "a plugin").unwrap();
    let installer = host.start(&[]);
    wait_for("the ready file", || host.path("run/installed").exists());
    installer.stop();
    assert!(host.path("root/opt/cni/bin/plexus-shim").exists());
    let out = host.command(&["--cleanup"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        host.files(),
        ["etc/cni/net.d/10-pods.conflist", "opt/cni/bin/bridge"]
    );
    assert!(!host.conf_dir().join("plexus.d").exists());
}

#[test]
fn a_configured_cluster_network_needs_no_conf_file_and_the_readiness_file_is_waited_for() {
    let host = Host::new();
    let installer = host.start(&[
        "--cluster-network",
        "k8s-pod-network",
        "--readiness-indicator-file",
        "/run/flannel/ready",
    ]);
    wait_for("the kubeconfig", || host.kubeconfig().exists());
    std::thread::sleep(Duration::from_millis(500));
    assert!(!host.conf().exists(), "conf before the readiness file");
    std::fs::create_dir_all(host.path("root/run/flannel")).unwrap();
    std::fs::write(host.path("root/run/flannel/ready"), "").unwrap();
    wait_for("the conf", || host.conf().exists());
    let plugin = read_json(&host.conf()).unwrap()["plugins"][0].clone();
    assert_eq!(plugin["clusterNetwork"], "k8s-pod-network");
    assert_eq!(plugin["readinessindicatorfile"], "/run/flannel/ready");
    installer.stop();
}

#[test]
fn thick_mode_writes_a_shim_conf_and_removes_the_thin_kubeconfig() {
    let host = Host::new();
    host.write_primary("10-pods.conflist", &bridge("pods", "198.19.4.0/24"));
    let thin = host.start(&[]);
    wait_for("the thin conf", || host.conf().exists());
    assert!(host.kubeconfig().exists());
    let thick = host.start(&["--mode", "thick", "--daemon-socket-dir", "/run/plexus"]);
    wait_for("the shim conf", || {
        read_json(&host.conf()).is_some_and(|c| c["plugins"][0]["daemonSocketDir"] == "/run/plexus")
    });
    let plugin = read_json(&host.conf()).unwrap()["plugins"][0].clone();
    assert!(plugin.get("kubeconfig").is_none(), "{plugin}");
    // Thick mode's conf names the small shim binary, which the installer put beside `plexus`.
    assert_eq!(plugin["type"], "plexus-shim", "{plugin}");
    assert_eq!(
        std::fs::read(host.path("root/opt/cni/bin/plexus-shim")).unwrap(),
        std::fs::read(PLEXUS_SHIM).unwrap()
    );
    assert_eq!(plugin["delegates"][0], bridge("pods", "198.19.4.0/24"));
    // The daemon's own copy of the cluster network (its `clusterNetwork` names it; it takes none from requests).
    assert_eq!(
        read_json(&host.conf_dir().join("plexus.d/cluster-network.conflist")),
        Some(bridge("pods", "198.19.4.0/24"))
    );
    wait_for("the thin kubeconfig gone", || !host.kubeconfig().exists());
    thin.stop();
    thick.stop();
}

#[test]
fn thick_mode_without_the_shim_binary_writes_no_conf_and_says_which_file() {
    let host = Host::new();
    host.write_primary("10-pods.conflist", &bridge("pods", "198.19.5.0/24"));
    let missing = host.path("nowhere/plexus-shim");
    let out = host
        .command(&["--mode", "thick", "--shim-binary"])
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    assert!(
        !host.conf().exists(),
        "a conf naming a plugin that is not there"
    );
}

/// `plexus` as the image ships it when scripts/test built it (scripts/build-image-binaries, PLEXUS_NODE_PLEXUS_BIN:
/// static, release), else cargo's build of it.
fn shipped_plexus() -> PathBuf {
    std::env::var_os("PLEXUS_NODE_PLEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PLEXUS))
}

/// The command line comes from the C `main`'s argv (not from std's start-up capture, which musl does not feed): with
/// arguments, `plexus` is the installer. As the CNI plugin it would instead read stdin and print a CNI error object.
#[test]
fn install_help_and_check_run_the_installer_from_mains_argv() {
    let plexus = shipped_plexus();
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(&plexus)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let help = run(&["install".as_ref(), "--help".as_ref()]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    assert!(
        text.contains("Usage: plexus install")
            && text.contains("--check")
            && text.contains("--host-root"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("installed");
    let check = run(&[
        "install".as_ref(),
        "--check".as_ref(),
        "--ready-file".as_ref(),
        ready.as_os_str(),
    ]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert!(
        check.stdout.is_empty(),
        "no CNI answer on stdout: {check:?}"
    );
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("not installed yet") && err.contains(&*ready.to_string_lossy()),
        "{err}"
    );
    std::fs::write(&ready, "").unwrap();
    let check = run(&[
        "install".as_ref(),
        "--check".as_ref(),
        "--ready-file".as_ref(),
        ready.as_os_str(),
    ]);
    assert!(check.status.success(), "{check:?}");

    // An argument that is not UTF-8 (a path) reaches the installer byte for byte.
    use std::os::unix::ffi::OsStrExt;
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"ready-\xff"));
    std::fs::write(&odd, "").unwrap();
    let check = run(&[
        "install".as_ref(),
        "--check".as_ref(),
        "--ready-file".as_ref(),
        odd.as_os_str(),
    ]);
    assert!(check.status.success(), "{check:?}");

    // An unknown flag is the installer's usage error (clap's exit status 2), not a CNI call.
    let bad = run(&["install".as_ref(), "--no-such-flag".as_ref()]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(bad.stdout.is_empty(), "{bad:?}");
}
