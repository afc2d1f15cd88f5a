//! DEL with the API server really stopped: this test starts a control plane of its own (`e2e/cluster up` with a
//! private state dir), attaches a pod through it, stops it (`e2e/cluster down`), and then deletes the pod's networks.

use std::path::{Path, PathBuf};
use std::process::Command;

use plexus_e2e::*;
use serde_json::json;

/// A private control plane, stopped on drop.
struct PrivateCluster {
    state: tempfile::TempDir,
    kubeconfig: PathBuf,
    running: bool,
}

impl PrivateCluster {
    fn up() -> Self {
        let state = tempfile::tempdir().unwrap();
        let out = cluster(state.path(), "up");
        let last = out.lines().last().unwrap_or_default();
        let kubeconfig = PathBuf::from(
            last.strip_prefix("KUBECONFIG=")
                .expect("up ends with KUBECONFIG=<path>"),
        );
        Self {
            state,
            kubeconfig,
            running: true,
        }
    }

    fn down(&mut self) {
        cluster(self.state.path(), "down");
        self.running = false;
    }

    fn kubectl(&self, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kubectl {args:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new(repo().join("e2e/cluster"))
                .arg("down")
                .env("PLEXUS_E2E_STATE", self.state.path())
                .status();
        }
    }
}

fn cluster(state: &Path, command: &str) -> String {
    let out = Command::new(repo().join("e2e/cluster"))
        .arg(command)
        .env("PLEXUS_E2E_STATE", state)
        .output()
        .expect("run e2e/cluster");
    assert!(
        out.status.success(),
        "e2e/cluster {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn del_with_the_api_server_stopped() {
    let mut cluster = PrivateCluster::up();
    let sb = PodSandbox::new();
    let (s1, p1) = subnet();
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "side", "namespace": "default"},
        "spec": {"config": json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&s1)}).to_string()}
    });
    cluster.kubectl(&["apply", "-f", "-"], &nad.to_string());
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stopped", "namespace": "default",
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "side"}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    });
    cluster.kubectl(&["apply", "-f", "-"], &pod.to_string());
    let uid = cluster.kubectl(
        &["get", "pod", "stopped", "-o", "jsonpath={.metadata.uid}"],
        "",
    );
    let args = pod_args("default", "stopped", &uid, &sb.container_id);
    let config = sb.config(json!({"kubeconfig": cluster.kubeconfig, "apiTimeoutSeconds": 3}));
    sb.call("ADD", &args).ok(&config);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&p1));

    cluster.down();
    assert!(
        !cluster.kubeconfig.exists()
            || Command::new("kubectl")
                .args(["get", "--raw", "/readyz", "--request-timeout=2s"])
                .env("KUBECONFIG", &cluster.kubeconfig)
                .status()
                .map(|s| !s.success())
                .unwrap_or(true),
        "the API server still answers"
    );
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}
