//! Helpers shared by the real-plugin tests: the built `plexus` binary, the pinned CNI reference plugins, network
//! namespaces and host links that remove themselves on drop (also when a test fails), and inspection of what is
//! left in a namespace, in host-local's lease store and in Plexus's record directory.

#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub mod doc_citations;
pub mod doc_examples;
pub mod metrics_reference;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this test process and call, usable in interface names (≤ 15 bytes with the prefix).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n}", std::process::id() % 0xfff)
}

/// A /24 unique to this call, from the benchmarking range 198.18.0.0/15 (never routed anywhere).
pub fn subnet() -> (String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = (std::process::id().wrapping_mul(37) + NEXT.fetch_add(1, Ordering::Relaxed)) % 510;
    let (b, c) = (18 + n / 255, n % 255);
    (format!("198.{b}.{c}.0/24"), format!("198.{b}.{c}"))
}

/// The repository root: the workspace that holds the running test's package. Read from `CARGO_MANIFEST_DIR` at run
/// time (cargo sets it for every test and bench it runs), not baked in at build time: a target dir shared by two
/// checkouts (CI's cache) keeps artifacts built in the other one, and a baked path would point there.
pub fn repo() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or_else(|| panic!("no workspace above {}", manifest_dir.display()))
        .to_path_buf()
}

/// The built `plexus` binary next to the test executable (target/<profile>/plexus).
pub fn plexus_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PLEXUS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("plexus");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p plexus-cni` first",
        bin.display()
    );
    bin
}

/// Thick mode's `plexus-shim`, built beside [`plexus_bin`].
pub fn plexus_shim_bin() -> PathBuf {
    built_beside_plexus("plexus-shim")
}

/// A binary of the workspace built beside [`plexus_bin`] (the same cargo build of `--workspace --bins`).
pub fn built_beside_plexus(name: &str) -> PathBuf {
    let bin = plexus_bin().with_file_name(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// The directory of the pinned CNI reference plugins, built once by the project's script.
pub fn plugins_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(p) = std::env::var("CNI_PLUGINS_DIR") {
            return PathBuf::from(p);
        }
        let out = Command::new(repo().join("e2e/tools/install-cni-plugins"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run e2e/tools/install-cni-plugins");
        assert!(out.status.success(), "installing the CNI plugins failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// Runs a command and panics with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        let name = unique("plxt");
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// The interfaces in the namespace, except `lo`, as `ip -j addr` objects.
    pub fn links(&self) -> Vec<Value> {
        let text = sh(&["ip", "-n", &self.name, "-j", "addr", "show"]);
        let all: Vec<Value> = serde_json::from_str(&text).unwrap();
        all.into_iter().filter(|l| l["ifname"] != "lo").collect()
    }

    pub fn link(&self, ifname: &str) -> Option<Value> {
        self.links().into_iter().find(|l| l["ifname"] == ifname)
    }

    pub fn link_names(&self) -> Vec<String> {
        self.links()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The IPv4 addresses (`a.b.c.d/len`) on an interface.
    pub fn ipv4(&self, ifname: &str) -> Vec<String> {
        self.link(ifname)
            .map(|l| {
                l["addr_info"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["family"] == "inet")
                    .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A host link (a bridge the bridge plugin made, or a veth pair a test made), deleted on drop.
pub struct HostLink {
    pub name: String,
}

impl HostLink {
    /// Takes ownership of a name the plugin will create (e.g. a bridge).
    pub fn adopt(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    /// Creates a veth pair `<name>` / `<name>p`, both up, to serve as a macvlan master.
    pub fn veth() -> Self {
        let name = unique("plxv");
        sh(&[
            "ip",
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p"),
        ]);
        sh(&["ip", "link", "set", &name, "up"]);
        sh(&["ip", "link", "set", &format!("{name}p"), "up"]);
        Self { name }
    }

    pub fn exists(name: &str) -> bool {
        Command::new("ip")
            .args(["link", "show", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Host veth interfaces attached to a bridge (what a leaked pod leaves behind).
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-j", "link", "show", "master", bridge])
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let links: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    links
        .iter()
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// host-local's leases under a data dir: files named after IPs, in every network's folder.
pub fn leases(data_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(networks) = std::fs::read_dir(data_dir) else {
        return found;
    };
    for net in networks.flatten() {
        let Ok(files) = std::fs::read_dir(net.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                found.push(format!("{}/{name}", net.file_name().to_string_lossy()));
            }
        }
    }
    found.sort();
    found
}

/// Files in the record directory (records, locks, temp files).
pub fn record_files(cni_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(cni_dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Where Plexus keeps the record of `container_id`/`ifname` attached by the Plexus network named `network` (the
/// stdin config's `name`).
pub fn record_path(cni_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    cni_dir.join(format!("{network}~{container_id}-{ifname}.json"))
}

/// Asserts that a sandbox left nothing behind: no interface in its namespace, no host-local lease, no record.
pub fn assert_nothing_left(netns: &Netns, lease_dir: &Path, cni_dir: &Path) {
    assert_eq!(
        netns.link_names(),
        Vec::<String>::new(),
        "interfaces left in the namespace"
    );
    assert_eq!(
        leases(lease_dir),
        Vec::<String>::new(),
        "host-local leases left"
    );
    assert_eq!(record_files(cni_dir), Vec::<String>::new(), "records left");
}

/// Writes an executable shell script into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A test-only IPAM plugin `<dir>/<name>` that records what it was given, then execs the pinned host-local with the
/// same stdin and environment, so the address really comes from host-local. Each call writes its stdin to
/// `<dir>/<name>.<CNI_COMMAND>.<CNI_IFNAME>.stdin` and its `CNI_ARGS` to `... .args` ([`recorded_ipam_call`]).
pub fn recording_ipam(dir: &Path, name: &str) -> PathBuf {
    let base = dir.join(name);
    let body = format!(
        "base=\"{base}.$CNI_COMMAND.$CNI_IFNAME\"\n\
         cat > \"$base.stdin\"\n\
         printf '%s' \"$CNI_ARGS\" > \"$base.args\"\n\
         exec {host_local} < \"$base.stdin\"",
        base = base.display(),
        host_local = plugins_dir().join("host-local").display(),
    );
    script(dir, name, &body)
}

/// What a [`recording_ipam`] got for one call: its stdin (parsed) and its `CNI_ARGS`; `None` when it was not called.
pub fn recorded_ipam_call(
    dir: &Path,
    name: &str,
    command: &str,
    ifname: &str,
) -> Option<(Value, String)> {
    let base = format!("{name}.{command}.{ifname}");
    let stdin = std::fs::read(dir.join(format!("{base}.stdin"))).ok()?;
    let args = std::fs::read_to_string(dir.join(format!("{base}.args"))).unwrap_or_default();
    Some((
        serde_json::from_slice(&stdin).expect("the IPAM's stdin is JSON"),
        args,
    ))
}

/// What runs with the stdin of every `plexus` a [`Call`] starts, before it starts ([`set_before_call`]).
static BEFORE_CALL: OnceLock<fn(&[u8])> = OnceLock::new();

/// Sets what runs with the stdin of every `plexus` a [`Call`] starts, before it starts (once per process; the e2e
/// crate's thick mode gives its test daemons the caller's plugin keys in their own file: `plexus_e2e::thick`).
pub fn set_before_call(hook: fn(&[u8])) {
    let _ = BEFORE_CALL.set(hook);
}

/// One `plexus` invocation as a runtime makes it.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_path: String,
    pub args: &'a str,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, container_id: &'a str, netns: &'a str) -> Self {
        Self {
            command,
            container_id,
            netns,
            ifname: "eth0",
            cni_path: plugins_dir().display().to_string(),
            args: "",
        }
    }

    pub fn run(&self, stdin: &[u8]) -> Output {
        self.spawn(stdin).wait_with_output().unwrap()
    }

    /// Starts plexus with `stdin` written and closed; stdout and stderr are piped.
    pub fn spawn(&self, stdin: &[u8]) -> std::process::Child {
        self.spawn_via(&[], stdin)
    }

    /// [`Call::spawn`] through a wrapper command (e.g. `setpriv --reuid …` to run plexus as another user).
    pub fn spawn_via(&self, wrapper: &[&str], stdin: &[u8]) -> std::process::Child {
        if let Some(hook) = BEFORE_CALL.get() {
            hook(stdin);
        }
        // The binary the config's `type` names, as a runtime finds it: thick mode's `plexus-shim` is built beside
        // `plexus`.
        let binary = match serde_json::from_slice::<Value>(stdin) {
            Ok(config) if config["type"] == "plexus-shim" => plexus_shim_bin(),
            _ => plexus_bin(),
        };
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let mut child = command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_ARGS", self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plexus");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child
    }

    /// Runs and expects success; returns stdout parsed as JSON (Null when empty).
    pub fn ok(&self, stdin: &Value) -> Value {
        let out = self.run(stdin.to_string().as_bytes());
        assert!(
            out.status.success(),
            "plexus {} failed: stdout {} stderr {}",
            self.command,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).expect("stdout is JSON")
        }
    }

    /// Runs and expects failure; returns the CNI error object from stdout.
    pub fn err(&self, stdin: &[u8]) -> Value {
        let out = self.run(stdin);
        assert!(
            !out.status.success(),
            "plexus {} unexpectedly succeeded: {}",
            self.command,
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not a CNI error ({e}): {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// iptables rules of every table that mention `needle` (the bridge, ptp and portmap plugins write the container id
/// into the comments of the rules and chains they make for a sandbox).
pub fn iptables_rules_mentioning(needle: &str) -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .expect("run iptables-save");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The end of every fault test: nothing of the sandbox is left. No interface in its namespace (so no veth pair,
/// whose host end would die with it, and no host route through one), no port on `bridge`, no host-local lease, no
/// record, lock or temp file, no iptables rule naming the container; then the namespace is deleted and its file in
/// /run/netns must be gone.
pub fn assert_no_leftovers(
    netns: Netns,
    bridge: Option<&str>,
    lease_dir: &Path,
    cni_dir: &Path,
    container_id: &str,
) {
    assert_nothing_left(&netns, lease_dir, cni_dir);
    if let Some(bridge) = bridge {
        assert_eq!(
            bridge_ports(bridge),
            Vec::<String>::new(),
            "ports left on {bridge}"
        );
    }
    assert_eq!(
        iptables_rules_mentioning(container_id),
        Vec::<String>::new(),
        "iptables rules left for {container_id}"
    );
    let file = PathBuf::from(netns.path());
    drop(netns);
    assert!(!file.exists(), "netns file {} left", file.display());
}
