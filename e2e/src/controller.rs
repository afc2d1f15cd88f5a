//! More of plexus-controller for tests that need it: a second replica with flags of its own ([`Replica`]), a copy
//! of the registered webhook pointed at it for the namespaces of one label ([`WebhookCopy`]), and a self-signed
//! certificate for it ([`self_signed`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{free_port, kubeconfig, kubectl, kubectl_output, unique};

/// Polls `f` every 200 ms until it returns `Some`, for at most 60 s; panics with `what` otherwise.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The state dir of the control plane the tests run against (where its kubeconfig lives).
pub fn state_dir() -> PathBuf {
    kubeconfig().parent().unwrap().to_path_buf()
}

/// The controller binary the control plane runs (so the tests use exactly the release build `up` started).
pub fn controller_bin() -> PathBuf {
    let pid = std::fs::read_to_string(state_dir().join("plexus-controller.pid"))
        .expect("the controller runs");
    std::fs::read_link(format!("/proc/{}/exe", pid.trim())).unwrap()
}

/// One more controller process, killed on drop.
pub struct Replica {
    child: Child,
    pub probe: u16,
    pub webhook: u16,
    pub identity: String,
}

impl Replica {
    pub fn start(
        identity: &str,
        lease: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Self {
        Self::start_with(identity, lease, cert, key, &[])
    }

    /// With more flags.
    pub fn start_with(
        identity: &str,
        lease: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        let (probe, webhook) = (free_port(), free_port());
        let child = Command::new(controller_bin())
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig())
            .args(["--webhook-addr", &format!("127.0.0.1:{webhook}")])
            .args(["--probe-addr", &format!("127.0.0.1:{probe}")])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args([
                "--tls-reload-seconds",
                "0.2",
                "--lease-seconds",
                "3",
                "--lease-name",
                lease,
                "--identity",
                identity,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start plexus-controller");
        let replica = Self {
            child,
            probe,
            webhook,
            identity: identity.to_owned(),
        };
        eventually("the replica to be ready", || {
            replica.get("/readyz").filter(|r| r == "ok")
        });
        replica
    }

    pub fn get(&self, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args([
                "-fsS",
                "--max-time",
                "2",
                &format!("http://127.0.0.1:{}{path}", self.probe),
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn leading(&self) -> Option<bool> {
        let metrics = self.get("/metrics")?;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("plexus_controller_leader "))?;
        Some(line.ends_with(" 1"))
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", self.identity);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 (it is its own CA), written as `<name>.crt` and `<name>.key`.
pub fn self_signed(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (crt, key)
}

/// The registered ValidatingWebhookConfiguration, copied under another name, pointed at `port` on 127.0.0.1 (with
/// `ca` as its caBundle when given) and scoped to namespaces labelled `key=value`; deleted on drop.
pub struct WebhookCopy {
    name: String,
}

impl WebhookCopy {
    pub fn new(key: &str, value: &str, port: u16, ca: Option<&std::path::Path>) -> Self {
        let mut config: Value = serde_json::from_str(&kubectl(
            &[
                "get",
                "validatingwebhookconfiguration",
                "plexus",
                "-o",
                "json",
            ],
            None,
        ))
        .unwrap();
        let name = unique("plexus-copy-");
        config["metadata"] = json!({ "name": name });
        let url = format!("https://127.0.0.1:{port}/validate");
        for webhook in config["webhooks"].as_array_mut().unwrap() {
            webhook["clientConfig"]["url"] = json!(url);
            if let Some(ca) = ca {
                let out = Command::new("base64").arg("-w0").arg(ca).output().unwrap();
                assert!(out.status.success(), "base64 {}", ca.display());
                webhook["clientConfig"]["caBundle"] = json!(String::from_utf8(out.stdout).unwrap());
            }
            webhook["namespaceSelector"] = json!({"matchLabels": {key: value}});
        }
        kubectl(&["apply", "-f", "-"], Some(&config.to_string()));
        Self { name }
    }
}

impl Drop for WebhookCopy {
    fn drop(&mut self) {
        let _ = kubectl_output(
            &["delete", "validatingwebhookconfiguration", &self.name],
            None,
        );
    }
}
