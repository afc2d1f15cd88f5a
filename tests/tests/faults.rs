//! The fault matrix on one node (docs/testing.md has it as a table): `plexus` run as a runtime runs it, against the
//! real CNI reference plugins in real network namespaces, with faults made by real means — delegate wrapper
//! scripts that fail, hang or SIGKILL their parent (plexus) at a chosen step, damaged record files, a full or
//! read-only tmpfs under `cniDir`, many sandboxes at once. Every test ends with [`assert_no_leftovers`]: no link,
//! lease, record, iptables rule or netns file is left.

#![forbid(unsafe_code)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use plexus_tests::*;
use serde_json::{Value, json};

/// What a wrapper delegate does on ADD before (or instead of) running the real plugin. On every other command it
/// runs the real plugin, so DEL and CHECK of a recorded attachment work as usual.
#[derive(Clone, Copy)]
enum Fault {
    /// SIGKILL plexus, before the real plugin runs.
    KillBefore,
    /// Run the real plugin, then SIGKILL plexus before it can read the result.
    KillAfter,
    /// Fail with code 11 and a message (after doing nothing).
    Fail,
    /// Write the pid to `<bin>/hang.pid` and sleep.
    Hang,
    /// Run the real plugin, then fill the file system of `<path>` (a tmpfs) before returning the result.
    FillDisk,
}

/// One pod sandbox on this node, with three networks:
/// 0. `pod-net`: bridge (ipMasq: iptables rules) + host-local, then portmap (iptables DNAT chains from the
///    runtime's `portMappings`);
/// 1. `p2p-net`: ptp (ipMasq) + host-local;
/// 2. `third-net`: ptp + host-local, then tuning.
struct Sandbox {
    ns: Option<Netns>,
    bridge: String,
    _bridge: HostLink,
    data: tempfile::TempDir,
    cni_dir: PathBuf,
    _records: tempfile::TempDir,
    bin: tempfile::TempDir,
    id: String,
    config: Value,
}

impl Sandbox {
    fn new() -> Self {
        let records = tempfile::tempdir().unwrap();
        Self::with_cni_dir(records.path().to_path_buf(), records)
    }

    fn with_cni_dir(cni_dir: PathBuf, records: tempfile::TempDir) -> Self {
        let bridge = unique("plxf");
        let data = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let ipam = |subnet: String| json!({"type": "host-local", "subnet": subnet, "dataDir": data.path()});
        let config = json!({
            "cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "logLevel": "debug",
            "binDir": format!("{}:{}", bin.path().display(), plugins_dir().display()),
            "cniDir": cni_dir,
            "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
            "delegates": [
                {"cniVersion": "1.0.0", "name": "pod-net", "plugins": [
                    {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "ipam": ipam(subnet().0)},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]},
                {"cniVersion": "1.0.0", "name": "p2p-net", "type": "ptp", "ipMasq": true, "ipam": ipam(subnet().0)},
                {"cniVersion": "1.0.0", "name": "third-net", "plugins": [
                    {"type": "ptp", "ipam": ipam(subnet().0)},
                    {"type": "tuning"}
                ]}
            ]
        });
        Self {
            ns: Some(Netns::new()),
            _bridge: HostLink::adopt(&bridge),
            bridge,
            data,
            cni_dir,
            _records: records,
            bin,
            id: unique("cf"),
            config,
        }
    }

    fn netns(&self) -> &Netns {
        self.ns.as_ref().expect("the namespace is still there")
    }

    fn call(&self, command: &'static str) -> Call<'_> {
        Call::new(
            command,
            &self.id,
            Box::leak(self.netns().path().into_boxed_str()),
        )
    }

    /// The config with plugin `plugin` of network `network` replaced by a wrapper that injects `fault` on ADD.
    fn with_fault(&self, network: usize, plugin: usize, fault: Fault) -> Value {
        let mut config = self.config.clone();
        let delegate = &mut config["delegates"][network];
        let slot = if delegate.get("plugins").is_some() {
            &mut delegate["plugins"][plugin]
        } else {
            delegate
        };
        let real = slot["type"].as_str().unwrap().to_owned();
        let real_path = plugins_dir().join(&real);
        let real_path = real_path.display();
        let on_add = match fault {
            Fault::KillBefore => "kill -9 $PPID; exit 1".to_owned(),
            Fault::KillAfter => {
                format!(
                    "out=$({real_path}) || exit $?; kill -9 $PPID; printf '%s' \"$out\"; exit 0"
                )
            }
            Fault::Fail => {
                r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"injected failure"}'; exit 1"#
                    .to_owned()
            }
            Fault::Hang => format!(
                "echo $$ > {}/hang.pid; exec sleep 300",
                self.bin.path().display()
            ),
            Fault::FillDisk => format!(
                "out=$({real_path}) || exit $?; dd if=/dev/zero of={}/../filler bs=4k 2>/dev/null; printf '%s' \"$out\"; exit 0",
                self.cni_dir.display()
            ),
        };
        let name = format!("fault-{real}");
        script(
            self.bin.path(),
            &name,
            &format!("if [ \"$CNI_COMMAND\" = ADD ]; then {on_add}; fi\nexec {real_path}"),
        );
        slot["type"] = json!(name);
        config
    }

    fn record_path(&self) -> PathBuf {
        record_path(&self.cni_dir, "plexus", &self.id, "eth0")
    }

    fn record(&self) -> Option<Value> {
        let text = std::fs::read(self.record_path()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn link_names(&self) -> Vec<String> {
        let mut names = self.netns().link_names();
        names.sort();
        names
    }

    /// The end of every test.
    fn assert_no_leftovers(mut self) {
        let ns = self.ns.take().unwrap();
        assert_no_leftovers(
            ns,
            Some(&self.bridge),
            self.data.path(),
            &self.cni_dir,
            &self.id,
        );
    }
}

/// plexus died of SIGKILL.
fn assert_killed(out: &std::process::Output) {
    assert_eq!(
        out.status.signal(),
        Some(9),
        "plexus was not killed: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

fn cni_error(out: &std::process::Output) -> Value {
    assert!(
        !out.status.success(),
        "plexus succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a CNI error ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn delegate_fails_mid_add() {
    let sb = Sandbox::new();
    // The third network's second plugin fails: its first plugin, and the two networks before, are rolled back.
    let config = sb.with_fault(2, 1, Fault::Fail);
    let e = cni_error(&sb.call("ADD").run(config.to_string().as_bytes()));
    assert_eq!(e["code"], 11, "the delegate's code is kept: {e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("third-net") && msg.contains("injected failure"),
        "{e}"
    );
    assert_eq!(
        sb.link_names(),
        Vec::<String>::new(),
        "rolled back before the ADD returned"
    );
    assert!(sb.record().is_none(), "no record after a complete rollback");
    // The runtime's DEL after a failed ADD.
    sb.call("DEL").ok(&config);
    sb.assert_no_leftovers();
}

#[test]
fn delegate_hangs() {
    let sb = Sandbox::new();
    let mut config = sb.with_fault(1, 0, Fault::Hang);
    config["delegateTimeoutSeconds"] = json!(2);
    let e = cni_error(&sb.call("ADD").run(config.to_string().as_bytes()));
    assert_eq!(e["code"], 101, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("p2p-net"), "{e}");
    let pid = std::fs::read_to_string(sb.bin.path().join("hang.pid")).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the hung delegate still runs"
    );
    assert_eq!(sb.link_names(), Vec::<String>::new());
    // The runtime's DEL, with the default delegate timeout: 2 s is short for a DEL on a loaded machine.
    config["delegateTimeoutSeconds"] = json!(60);
    sb.call("DEL").ok(&config);
    sb.assert_no_leftovers();
}

/// SIGKILL at one step of ADD, then the runtime's DEL (with the config, as a runtime sends it) cleans up.
fn killed_then_del(network: usize, plugin: usize, fault: Fault, left: &[&str]) {
    let sb = Sandbox::new();
    let config = sb.with_fault(network, plugin, fault);
    assert_killed(&sb.call("ADD").run(config.to_string().as_bytes()));
    assert_eq!(sb.link_names(), left, "what the killed ADD had attached");
    let record = sb.record().expect("the intent record is there");
    assert_eq!(record["state"], "adding");
    sb.call("DEL").ok(&config);
    sb.assert_no_leftovers();
}

#[test]
fn killed_before_the_first_delegate_then_del() {
    killed_then_del(0, 0, Fault::KillBefore, &[]);
}

#[test]
fn killed_between_delegates_then_del() {
    killed_then_del(1, 0, Fault::KillBefore, &["eth0"]);
}

#[test]
fn killed_before_the_record_is_final_then_del() {
    // The last plugin of the last network ran; plexus dies before it writes the final record.
    killed_then_del(2, 1, Fault::KillAfter, &["eth0", "net1", "net2"]);
}

#[test]
fn killed_add_then_del_with_an_empty_config() {
    // The runtime may lose the config too: DEL goes by the record alone.
    let sb = Sandbox::new();
    let config = sb.with_fault(2, 0, Fault::KillAfter);
    assert_killed(&sb.call("ADD").run(config.to_string().as_bytes()));
    assert_eq!(sb.link_names(), ["eth0", "net1", "net2"]);
    sb.call("DEL").ok(&json!({"cniDir": sb.cni_dir}));
    sb.assert_no_leftovers();
}

/// A record damaged on disk after a successful ADD: ADD over it refuses, DEL without delegates refuses and keeps
/// it, DEL with the config deletes every configured network.
fn damaged_record(damage: impl Fn(&[u8]) -> Vec<u8>) {
    let sb = Sandbox::new();
    sb.call("ADD").ok(&sb.config);
    let path = sb.record_path();
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, damage(&good)).unwrap();

    let e = cni_error(&sb.call("ADD").run(sb.config.to_string().as_bytes()));
    assert_eq!(e["code"], 104, "{e}");
    assert_eq!(
        sb.link_names(),
        ["eth0", "net1", "net2"],
        "ADD over a damaged record touched nothing"
    );

    let e = cni_error(
        &sb.call("DEL")
            .run(json!({"cniDir": sb.cni_dir}).to_string().as_bytes()),
    );
    assert_eq!(e["code"], 104, "{e}");
    assert!(path.exists(), "the record is kept for inspection");
    assert_eq!(sb.link_names(), ["eth0", "net1", "net2"]);

    sb.call("DEL").ok(&sb.config);
    sb.assert_no_leftovers();
}

#[test]
fn corrupt_record() {
    damaged_record(|good| {
        let mut bad = good.to_vec();
        for b in bad.iter_mut().step_by(7) {
            *b ^= 0x5a;
        }
        bad
    });
}

#[test]
fn truncated_record() {
    damaged_record(|good| good[..good.len() / 2].to_vec());
}

#[test]
fn wrong_version_record() {
    damaged_record(|good| {
        let mut record: Value = serde_json::from_slice(good).unwrap();
        record["format"] = json!(2);
        serde_json::to_vec(&record).unwrap()
    });
}

/// A small tmpfs mounted for one test (cniDir lives in `<mount>/records`), unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            dir.path().to_str().unwrap(),
        ]);
        std::fs::create_dir(dir.path().join("records")).unwrap();
        Self { dir }
    }

    fn records(&self) -> PathBuf {
        self.dir.path().join("records")
    }

    /// Fills the file system: writes until ENOSPC.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}/filler", self.dir.path().display()),
                "bs=4k",
            ])
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn remount(&self, mode: &str) {
        sh(&[
            "mount",
            "-o",
            &format!("remount,{mode}"),
            self.dir.path().to_str().unwrap(),
        ]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn sandbox_on(fs: &Tmpfs) -> Sandbox {
    Sandbox::with_cni_dir(fs.records(), tempfile::tempdir().unwrap())
}

#[test]
fn disk_full_before_add() {
    let fs = Tmpfs::new("256k");
    let sb = sandbox_on(&fs);
    fs.fill();
    let e = cni_error(&sb.call("ADD").run(sb.config.to_string().as_bytes()));
    assert_eq!(e["code"], 104, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("No space left"), "{e}");
    assert_eq!(sb.link_names(), Vec::<String>::new(), "nothing ran");
    // The runtime's DEL works on the full disk too.
    sb.call("DEL").ok(&sb.config);
    sb.assert_no_leftovers();
}

#[test]
fn disk_full_during_add() {
    let fs = Tmpfs::new("256k");
    let sb = sandbox_on(&fs);
    // The last delegate fills the disk: the final record can't be written, so the ADD fails and rolls back.
    let config = sb.with_fault(2, 1, Fault::FillDisk);
    let e = cni_error(&sb.call("ADD").run(config.to_string().as_bytes()));
    assert_eq!(e["code"], 104, "{e}");
    assert_eq!(sb.link_names(), Vec::<String>::new(), "rolled back");
    sb.call("DEL").ok(&config);
    sb.assert_no_leftovers();
}

#[test]
fn read_only_cni_dir() {
    let fs = Tmpfs::new("1m");
    let sb = sandbox_on(&fs);
    fs.remount("ro");
    let e = cni_error(&sb.call("ADD").run(sb.config.to_string().as_bytes()));
    assert_eq!(e["code"], 104, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("Read-only file system") && msg.contains(&fs.records().display().to_string()),
        "{e}"
    );
    assert_eq!(sb.link_names(), Vec::<String>::new(), "nothing ran");
    fs.remount("rw");
    sb.call("DEL").ok(&sb.config);
    sb.assert_no_leftovers();
}

#[test]
fn hundred_concurrent_add_del_pairs() {
    let bridge = unique("plxf");
    let _bridge = HostLink::adopt(&bridge);
    let data = tempfile::tempdir().unwrap();
    let cni_dir = tempfile::tempdir().unwrap();
    let config = json!({
        "cniVersion": "1.0.0", "binDir": plugins_dir(), "cniDir": cni_dir.path(),
        "delegates": [
            {"cniVersion": "1.0.0", "name": "pod-net", "type": "bridge", "bridge": bridge, "ipMasq": true,
             "isGateway": true, "ipam": {"type": "host-local", "subnet": subnet().0, "dataDir": data.path()}},
            {"cniVersion": "1.0.0", "name": "p2p-net", "type": "ptp",
             "ipam": {"type": "host-local", "subnet": subnet().0, "dataDir": data.path()}}
        ]
    });
    let sandboxes: Vec<(Netns, String)> = (0..100).map(|_| (Netns::new(), unique("cc"))).collect();
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = sandboxes
            .iter()
            .map(|(ns, id)| {
                let config = &config;
                s.spawn(move || {
                    let path = ns.path();
                    let r = Call::new("ADD", id, &path).ok(config);
                    assert_eq!(ns.link_names().len(), 2);
                    Call::new("DEL", id, &path).ok(config);
                    r["ips"][0]["address"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ips.len(), 100);
    for (ns, id) in sandboxes {
        assert_no_leftovers(ns, Some(&bridge), data.path(), cni_dir.path(), &id);
    }
}

#[test]
fn same_container_id_added_twice() {
    let sb = Sandbox::new();
    sb.call("ADD").ok(&sb.config);
    let e = cni_error(&sb.call("ADD").run(sb.config.to_string().as_bytes()));
    assert!(
        e["msg"].as_str().unwrap().contains("already attached"),
        "{e}"
    );
    // The first ADD stands, untouched.
    assert_eq!(sb.link_names(), ["eth0", "net1", "net2"]);
    assert_eq!(sb.record().unwrap()["state"], "added");
    sb.call("CHECK").ok(&sb.config);

    // Two ADDs of one id at the same moment: the sandbox lock lets exactly one through.
    sb.call("DEL").ok(&sb.config);
    let outcomes: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    sb.call("ADD")
                        .run(sb.config.to_string().as_bytes())
                        .status
                        .success()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
    assert_eq!(sb.link_names(), ["eth0", "net1", "net2"]);
    sb.call("DEL").ok(&sb.config);
    sb.assert_no_leftovers();
}

#[test]
fn del_without_any_add() {
    let sb = Sandbox::new();
    // With the config (the delegates get a DEL for a sandbox they never saw, which they must accept) ...
    sb.call("DEL").ok(&sb.config);
    // ... with a config naming only the record directory, and without CNI_NETNS.
    sb.call("DEL").ok(&json!({"cniDir": sb.cni_dir}));
    let mut no_netns = sb.call("DEL");
    no_netns.netns = "";
    no_netns.ok(&sb.config);
    sb.assert_no_leftovers();
}
