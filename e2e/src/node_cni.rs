//! A harness node's CNI config switched between meta-plugins for the real-node benchmarks: the config file swapped
//! the way containerd notices, Multus thin given the node's admin credentials, and multus-daemon (Multus thick)
//! running inside a node's namespaces behind the thick runtime handler's CNI config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::node::Nodes;
use crate::{kubeconfig, kubectl};

/// Makes `conf` (as `file`) the only CNI config in `conf_dir`, and waits until containerd has had time to reload.
/// containerd v2.4.2 ignores Create events in the conf dir (a file renamed in from elsewhere is not loaded): the new
/// file is renamed within the dir, then the others removed; each Rename/Remove event reloads.
pub fn install_conf(conf_dir: &Path, file: &str, conf: &Value) {
    let tmp = conf_dir.join("new.tmp");
    std::fs::write(&tmp, conf.to_string()).unwrap();
    std::fs::rename(&tmp, conf_dir.join(file)).unwrap();
    for entry in std::fs::read_dir(conf_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != file {
            std::fs::remove_file(path).unwrap();
        }
    }
    // containerd reloads the CNI config on a file event; give it a moment.
    std::thread::sleep(Duration::from_secs(2));
}

/// The cluster network's conflist of node `i` (bridge + host-local), as the node's own config would delegate to.
pub fn cluster_network(nodes: &Nodes, i: usize) -> Value {
    let file = nodes.node_dir(i).join("cluster-network/10-pods.conflist");
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// An admin kubeconfig (mode 0600) in node `i`'s directory, pointed at the node's forwarder of the API server
/// (127.0.0.1:6443 inside the node). Multus thin gets it: it updates pods/status, which Plexus's node user may not.
pub fn admin_kubeconfig(nodes: &Nodes, i: usize) -> PathBuf {
    let admin: String = std::fs::read_to_string(kubeconfig())
        .unwrap()
        .lines()
        .map(|l| match l.trim_start().strip_prefix("server: ") {
            Some(_) => "    server: https://127.0.0.1:6443\n".to_owned(),
            None => format!("{l}\n"),
        })
        .collect();
    let path = nodes.node_dir(i).join("admin.kubeconfig");
    std::fs::write(&path, admin).unwrap();
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(&path, mode).unwrap();
    path
}

/// Places `bin` in node `i`'s CNI bin dir under its own file name (a symlink).
fn link_bin(nodes: &Nodes, i: usize, bin: &Path) {
    let link = nodes
        .node_dir(i)
        .join("cni-bin")
        .join(bin.file_name().unwrap());
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(bin, &link).unwrap();
}

/// Multus thin's config for node `i` (its binary `multus_bin` linked into the node's bin dir): the admin
/// kubeconfig, the cluster network's conflist as `clusterNetwork`, named by its network name in a `confDir`
/// (Multus v4.3.0 loses the plugins' own keys, host-local's `ranges` among them, from the copy it keeps for DEL when
/// `clusterNetwork` is a `.conflist` path: `LoadDelegateNetConfFromConfList` re-marshals the list from libcni's typed
/// `PluginConf`, and `CmdDel` hands those bytes to `conflistDel`; a conf found by name goes through
/// `LoadDelegateNetConf`, which keeps the raw bytes).
pub fn multus_thin_conf(nodes: &Nodes, i: usize, multus_bin: &Path) -> Value {
    link_bin(nodes, i, multus_bin);
    let dir = nodes.node_dir(i);
    json!({"cniVersion": "1.0.0", "name": "multus", "type": "multus",
           "kubeconfig": admin_kubeconfig(nodes, i), "clusterNetwork": "pods",
           "confDir": dir.join("cluster-network"), "binDir": dir.join("cni-bin"),
           "cniDir": "/var/lib/cni/multus", "logFile": dir.join("multus.log"), "logLevel": "error"})
}

/// multus-daemon (Multus thick) inside node `i`'s mount and network namespaces, its socket in the node's
/// `/run/multus`, and the thick runtime handler's CNI config (`cni-conf-thick`) switched to multus-shim while it
/// runs; on drop the daemon is stopped and that config put back as it was.
pub struct MultusDaemon {
    child: Child,
    conf_dir: PathBuf,
    saved: Vec<(PathBuf, Vec<u8>)>,
}

impl MultusDaemon {
    /// Starts multus-daemon (`bin_dir` holds `multus-daemon` and `multus-shim`, built from source by
    /// `e2e/tools/install multus-thick`) on node `i` with in-cluster credentials of a ServiceAccount bound to
    /// cluster-admin (bench only), and waits until its socket answers `/healthz` (it serves only after its informers
    /// synced).
    pub fn start(nodes: &Nodes, i: usize, bin_dir: &Path) -> Self {
        let dir = nodes.node_dir(i);
        link_bin(nodes, i, &bin_dir.join("multus-shim"));
        // In-cluster credentials where client-go looks (/var/run is /run, the node's own).
        let secrets = dir.join("run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::write(secrets.join("token"), multus_token().trim()).unwrap();
        let state = nodes.dir.parent().expect("nodes dir has a parent");
        std::fs::copy(state.join("pki/ca.crt"), secrets.join("ca.crt")).unwrap();
        std::fs::write(secrets.join("namespace"), "kube-system").unwrap();
        // multus-daemon keeps running only with `multusConfigFile: auto`, which writes a node CNI config (unused
        // here) from the primary one it finds in cniConfigDir.
        let auto = dir.join("multus-auto");
        std::fs::create_dir_all(&auto).unwrap();
        std::fs::write(
            auto.join("10-pods.conflist"),
            cluster_network(nodes, i).to_string(),
        )
        .unwrap();
        let config = json!({"cniVersion": "1.0.0", "cniDir": "/var/lib/cni/multus-thick", "logLevel": "error",
            "logFile": dir.join("multus-daemon.log"), "socketDir": "/run/multus",
            "cniConfigDir": auto, "multusAutoconfigDir": auto, "multusConfigFile": "auto",
            "clusterNetwork": "pods", "confDir": dir.join("cluster-network"), "binDir": dir.join("cni-bin")});
        let file = dir.join("multus-daemon.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let holder = std::fs::read_to_string(state.join(format!("node{}-holder.pid", i + 1)))
            .unwrap_or_else(|e| panic!("holder of {}: {e}", nodes.name(i)));
        let socket = dir.join("run/multus/multus.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("nsenter")
            .args(["-t", holder.trim(), "-m", "-n", "--"])
            .arg(bin_dir.join("multus-daemon"))
            .arg("--config")
            .arg(&file)
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", "6443")
            .env("MULTUS_NODE_NAME", nodes.name(i))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("multus-daemon.stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("multus-daemon.stderr")).unwrap())
            .spawn()
            .expect("run nsenter multus-daemon");
        let conf_dir = dir.join("cni-conf-thick");
        let saved = std::fs::read_dir(&conf_dir)
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                (path, bytes)
            })
            .collect();
        let mut daemon = Self {
            child,
            conf_dir,
            saved,
        };
        let node = nodes.name(i);
        crate::node::wait_until(
            &format!("multus-daemon on {node} answering /healthz"),
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = daemon.child.try_wait() {
                    panic!(
                        "multus-daemon on {node} exited ({status}): {}",
                        std::fs::read_to_string(dir.join("multus-daemon.stderr"))
                            .unwrap_or_default()
                    );
                }
                Command::new("curl")
                    .args(["-sf", "-m", "2", "--unix-socket"])
                    .arg(&socket)
                    .arg("http://multus/healthz")
                    .output()
                    .is_ok_and(|o| o.status.success())
                    .then_some(())
            },
            || format!("its log is {}", dir.join("multus-daemon.log").display()),
        );
        install_conf(
            &daemon.conf_dir,
            "00-multus.conf",
            &json!({"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim",
                    "daemonSocketDir": "/run/multus", "logLevel": "error",
                    "logFile": dir.join("multus-shim.log")}),
        );
        daemon
    }
}

impl Drop for MultusDaemon {
    fn drop(&mut self) {
        // Our own child (nsenter exec'd multus-daemon), not reaped yet.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The thick handler's config as it was (the plexus shim's), with the same rename-in as install_conf.
        for (path, bytes) in &self.saved {
            let tmp = self.conf_dir.join("restore.tmp");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
        let _ = std::fs::remove_file(self.conf_dir.join("00-multus.conf"));
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A token of the ServiceAccount `kube-system/plexus-bench-multus` (made once, bound to cluster-admin).
fn multus_token() -> String {
    let exists = crate::kubectl_output(
        &[
            "get",
            "serviceaccount",
            "plexus-bench-multus",
            "-n",
            "kube-system",
        ],
        None,
    )
    .status
    .success();
    if !exists {
        kubectl(
            &[
                "create",
                "serviceaccount",
                "plexus-bench-multus",
                "-n",
                "kube-system",
            ],
            None,
        );
        kubectl(
            &[
                "create",
                "clusterrolebinding",
                "plexus-bench-multus",
                "--clusterrole=cluster-admin",
                "--serviceaccount=kube-system:plexus-bench-multus",
            ],
            None,
        );
    }
    kubectl(
        &[
            "create",
            "token",
            "plexus-bench-multus",
            "-n",
            "kube-system",
            "--duration=12h",
        ],
        None,
    )
}
