//! `plexus` run as a runtime runs it, against the real CNI reference plugins in real network namespaces.
//! Every test makes its own namespace, bridge, subnets, lease store and record directory, and removes them on drop.

#![forbid(unsafe_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use plexus_tests::*;
use serde_json::{Value, json};

/// Three networks: bridge + host-local (the default), a macvlan + static + tuning conflist, and ptp + host-local.
struct ThreeNetworks {
    ns: Netns,
    _bridge: HostLink,
    bridge: String,
    _master: HostLink,
    data: tempfile::TempDir,
    cni_dir: tempfile::TempDir,
    config: Value,
    prefixes: [String; 3],
}

impl ThreeNetworks {
    fn new(version: &str) -> Self {
        let bridge = unique("plxb");
        let master = HostLink::veth();
        let data = tempfile::tempdir().unwrap();
        let cni_dir = tempfile::tempdir().unwrap();
        let (s1, p1) = subnet();
        let (_, p2) = subnet();
        let (s3, p3) = subnet();
        let config = json!({
            "cniVersion": version, "name": "plexus", "type": "plexus",
            "binDir": plugins_dir(), "cniDir": cni_dir.path(), "logLevel": "debug",
            "delegates": [
                {"cniVersion": version, "name": "pod-net", "type": "bridge", "bridge": bridge, "isGateway": true,
                 "ipam": {"type": "host-local", "subnet": s1, "dataDir": data.path(), "routes": [{"dst": "0.0.0.0/0"}]}},
                {"cniVersion": version, "name": "mv-net", "plugins": [
                    {"type": "macvlan", "master": master.name, "mode": "bridge",
                     "ipam": {"type": "static", "addresses": [{"address": format!("{p2}.5/24")}]}},
                    {"type": "tuning", "mac": "0a:58:c6:12:00:05", "sysctl": {"net.ipv4.conf.net1.arp_ignore": "1"}}
                ]},
                {"cniVersion": version, "name": "p2p-net", "type": "ptp",
                 "ipam": {"type": "host-local", "subnet": s3, "dataDir": data.path()}}
            ]
        });
        Self {
            ns: Netns::new(),
            _bridge: HostLink::adopt(&bridge),
            bridge,
            _master: master,
            data,
            cni_dir,
            config,
            prefixes: [p1, p2, p3],
        }
    }

    fn call<'a>(&'a self, command: &'a str, id: &'a str) -> Call<'a> {
        Call::new(command, id, leak(self.ns.path()))
    }

    fn record(&self, id: &str) -> Value {
        let text = std::fs::read(record_path(self.cni_dir.path(), "plexus", id, "eth0"))
            .expect("record exists");
        serde_json::from_slice(&text).unwrap()
    }

    /// Host-side interfaces named in the recorded results (bridge, veths).
    fn host_interfaces(&self, id: &str) -> Vec<String> {
        let record = self.record(id);
        record["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["result"]["interfaces"].as_array())
            .flatten()
            .filter(|i| i.get("sandbox").is_none_or(|s| s.as_str() == Some("")))
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .filter(|n| *n != self.bridge)
            .collect()
    }

    fn assert_clean(&self, host_interfaces: &[String]) {
        assert_nothing_left(&self.ns, self.data.path(), self.cni_dir.path());
        assert_eq!(
            bridge_ports(&self.bridge),
            Vec::<String>::new(),
            "veths left on the bridge"
        );
        for name in host_interfaces {
            assert!(!HostLink::exists(name), "host interface {name} left");
        }
    }
}

/// `binDir` with `extra` searched first, then the reference plugins.
fn bin_dirs_with(extra: &Path) -> Value {
    json!(format!("{}:{}", extra.display(), plugins_dir().display()))
}

/// A delegate named `name` that writes its pid and then sleeps on ADD (and does nothing on other commands), in a
/// bin dir of its own.
fn sleeping_delegate(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let bin = tempfile::tempdir().unwrap();
    let pidfile = bin.path().join(format!("{name}.pid"));
    let body = format!(
        "if [ \"$CNI_COMMAND\" = ADD ]; then echo $$ > {}; exec sleep 300; fi",
        pidfile.display()
    );
    script(bin.path(), name, &body);
    (bin, pidfile)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn three_networks_add_check_del() {
    let t = ThreeNetworks::new("1.0.0");
    let result = t.call("ADD", "c-three").ok(&t.config);

    // The result is the default network's, in the request's version.
    assert_eq!(result["cniVersion"], "1.0.0");
    let sandbox_if = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sandbox"].is_string())
        .unwrap();
    assert_eq!(sandbox_if["name"], "eth0");
    assert_eq!(sandbox_if["sandbox"], t.ns.path());
    let ip = result["ips"][0]["address"].as_str().unwrap();
    assert!(ip.starts_with(&t.prefixes[0]), "{ip}");

    // The namespace has one interface per network, with the addresses and MAC the delegates were asked for.
    let mut names = t.ns.link_names();
    names.sort();
    assert_eq!(names, ["eth0", "net1", "net2"]);
    assert_eq!(t.ns.ipv4("eth0"), [ip.to_owned()]);
    assert_eq!(t.ns.ipv4("net1"), [format!("{}.5/24", t.prefixes[1])]);
    assert_eq!(
        t.ns.link("net1").unwrap()["address"],
        "0a:58:c6:12:00:05",
        "tuning set the MAC"
    );
    assert!(t.ns.ipv4("net2")[0].starts_with(&t.prefixes[2]));
    assert_eq!(
        leases(t.data.path()).len(),
        2,
        "bridge and ptp each hold one lease"
    );
    let hosts = t.host_interfaces("c-three");
    assert_eq!(
        hosts.len(),
        2,
        "the bridge's veth and ptp's veth: {hosts:?}"
    );
    assert_eq!(t.record("c-three")["state"], "added");

    t.call("CHECK", "c-three").ok(&t.config);
    // CHECK notices a broken attachment (the tuning MAC changed behind its back).
    sh(&[
        "ip",
        "-n",
        &t.ns.name,
        "link",
        "set",
        "net1",
        "address",
        "0a:58:c6:12:00:99",
    ]);
    let e = t
        .call("CHECK", "c-three")
        .err(t.config.to_string().as_bytes());
    assert!(e["msg"].as_str().unwrap().contains("mv-net"), "{e}");

    assert_eq!(t.call("DEL", "c-three").ok(&t.config), Value::Null);
    t.assert_clean(&hosts);
    // DEL is idempotent.
    t.call("DEL", "c-three").ok(&t.config);
    t.assert_clean(&hosts);
}

/// At `logLevel: debug` every phase of a request logs its time when it ends (the per-phase trace
/// `docs/benchmarks.md` reads): the config parse, the record lock, the intent write, the completion write, each
/// delegate, and at DEL the record removal.
#[test]
fn at_debug_level_each_phase_logs_its_time() {
    let t = ThreeNetworks::new("1.0.0");
    let stdin = t.config.to_string();
    let add = t.call("ADD", "c-trace").run(stdin.as_bytes());
    assert!(add.status.success(), "{add:?}");
    let log = String::from_utf8_lossy(&add.stderr);
    for phase in [
        "config_parse_us=",
        "record_lock: plexus_cni::record: close time.busy=",
        "record_write{state=Adding}: plexus_cni::record: close time.busy=",
        "record_write{state=Added}: plexus_cni::record: close time.busy=",
        "delegate_exec{network=mv-net delegate=\"tuning\" command=\"ADD\"}: plexus_cni::ops::delegate: close time.busy=",
    ] {
        assert!(log.contains(phase), "no {phase:?} in {log}");
    }
    let hosts = t.host_interfaces("c-trace");
    let del = t.call("DEL", "c-trace").run(stdin.as_bytes());
    assert!(del.status.success(), "{del:?}");
    let log = String::from_utf8_lossy(&del.stderr);
    assert!(
        log.contains("record_remove: plexus_cni::record: close time.busy="),
        "{log}"
    );
    t.assert_clean(&hosts);
}

#[test]
fn del_works_with_an_empty_or_different_config() {
    let t = ThreeNetworks::new("1.0.0");
    t.call("ADD", "c-empty").ok(&t.config);
    let hosts = t.host_interfaces("c-empty");
    let out = t.call("DEL", "c-empty").run(
        json!({"cniVersion": "1.0.0", "cniDir": t.cni_dir.path(), "binDir": plugins_dir()})
            .to_string()
            .as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    t.assert_clean(&hosts);

    // With a completely empty stdin the record directory is the default one, so use a config naming only cniDir
    // plus a different, unrelated delegate list: DEL still follows the record.
    t.call("ADD", "c-diff").ok(&t.config);
    let hosts = t.host_interfaces("c-diff");
    let other = json!({"cniVersion": "1.0.0", "cniDir": t.cni_dir.path(),
        "delegates": [{"cniVersion": "1.0.0", "name": "unrelated", "type": "loopback"}]});
    t.call("DEL", "c-diff").ok(&other);
    t.assert_clean(&hosts);
}

#[test]
fn a_failing_delegate_rolls_back_what_was_attached() {
    let t = ThreeNetworks::new("1.0.0");
    let mut config = t.config.clone();
    config["delegates"][1]["plugins"][0]["master"] = json!("plxnosuchdev0");
    let e = t.call("ADD", "c-fail").err(config.to_string().as_bytes());
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("mv-net") && msg.contains("macvlan") && msg.contains("net1"),
        "{e}"
    );
    // The delegate's own code is kept: the reference plugins report a failed netlink lookup as 999 (ErrInternal).
    assert_eq!(e["code"], 999, "{e}");
    // eth0 (bridge) was attached and then rolled back; nothing of the third network was attempted.
    t.assert_clean(&[]);
    assert_eq!(t.ns.link_names(), Vec::<String>::new());
    // The runtime's DEL after a failed ADD succeeds.
    t.call("DEL", "c-fail").ok(&config);
}

#[test]
fn a_type_with_a_path_is_refused_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    script(dir.path(), "evil", &format!("touch {}", marker.display()));
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ns = Netns::new();
    let cni_dir = tempfile::tempdir().unwrap();
    for bad in [
        json!({"type": "../evil"}),
        json!({"type": dir.path().join("evil")}),
        json!({"type": "bridge", "ipam": {"type": "../evil"}}),
    ] {
        let mut delegate = bad.clone();
        delegate["cniVersion"] = json!("1.0.0");
        delegate["name"] = json!("bad");
        let config = json!({"cniVersion": "1.0.0", "binDir": bin, "cniDir": cni_dir.path(), "delegates": [delegate]});
        let mut call = Call::new("ADD", "c-evil", leak(ns.path()));
        call.cni_path = dir.path().display().to_string();
        let e = call.err(config.to_string().as_bytes());
        assert_eq!(e["code"], 7, "{e}");
        assert!(
            e["msg"].as_str().unwrap().contains("bare binary name"),
            "{e}"
        );
        assert!(!marker.exists(), "the refused plugin ran");
    }
}

#[test]
fn a_hanging_delegate_is_killed_and_rolled_back() {
    let t = ThreeNetworks::new("1.0.0");
    let (bin, pidfile) = sleeping_delegate("hang");
    let mut config = t.config.clone();
    config["binDir"] = bin_dirs_with(bin.path());
    config["delegateTimeoutSeconds"] = json!(1.5);
    config["delegates"][1] = json!({"cniVersion": "1.0.0", "name": "stuck-net", "type": "hang"});
    let e = t.call("ADD", "c-hang").err(config.to_string().as_bytes());
    assert_eq!(e["code"], 101, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("stuck-net"), "{e}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the hung delegate still runs"
    );
    t.assert_clean(&[]);
}

fn version_case(version: &str) -> Value {
    let t = ThreeNetworks::new(version);
    let result = t.call("ADD", "c-ver").ok(&t.config);
    let hosts = t.host_interfaces("c-ver");
    t.call("DEL", "c-ver").ok(&t.config);
    t.assert_clean(&hosts);
    result
}

#[test]
fn results_come_in_the_requested_version() {
    for version in ["0.3.1", "0.4.0"] {
        let r = version_case(version);
        assert_eq!(r["cniVersion"], version);
        let ip = &r["ips"][0];
        assert_eq!(ip["version"], "4", "{version}: {r}");
        assert!(ip["interface"].is_u64());
    }
    let r = version_case("1.1.0");
    assert_eq!(r["cniVersion"], "1.1.0");
    assert!(r["ips"][0].get("version").is_none());
    let r = version_case("0.2.0");
    assert_eq!(r["cniVersion"], "0.2.0");
    assert!(r["ip4"]["ip"].is_string(), "{r}");
    assert!(r.get("interfaces").is_none());
}

#[test]
fn delegates_can_speak_another_version_than_the_runtime() {
    let t = ThreeNetworks::new("1.0.0");
    let mut config = t.config.clone();
    config["cniVersion"] = json!("0.4.0");
    config["delegates"][0]["cniVersion"] = json!("1.1.0");
    let r = t.call("ADD", "c-mixed").ok(&config);
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4");
    let hosts = t.host_interfaces("c-mixed");
    t.call("CHECK", "c-mixed").ok(&config);
    t.call("DEL", "c-mixed").ok(&config);
    t.assert_clean(&hosts);
}

#[test]
fn twenty_sandboxes_concurrently() {
    let bridge = unique("plxb");
    let _bridge = HostLink::adopt(&bridge);
    let data = tempfile::tempdir().unwrap();
    let cni_dir = tempfile::tempdir().unwrap();
    let (s1, _) = subnet();
    let (s2, _) = subnet();
    let config = json!({
        "cniVersion": "1.0.0", "binDir": plugins_dir(), "cniDir": cni_dir.path(),
        "delegates": [
            {"cniVersion": "1.0.0", "name": "pod-net", "type": "bridge", "bridge": bridge,
             "ipam": {"type": "host-local", "subnet": s1, "dataDir": data.path()}},
            {"cniVersion": "1.0.0", "name": "p2p-net", "type": "ptp",
             "ipam": {"type": "host-local", "subnet": s2, "dataDir": data.path()}}
        ]
    });
    let namespaces: Vec<Netns> = (0..20).map(|_| Netns::new()).collect();
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let config = &config;
                s.spawn(move || {
                    let id = format!("c-par-{i}");
                    let r = Call::new("ADD", &id, &ns.path()).ok(config);
                    assert_eq!(ns.link_names().len(), 2);
                    r["ips"][0]["address"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique_ips = ips.clone();
    unique_ips.sort();
    unique_ips.dedup();
    assert_eq!(
        unique_ips.len(),
        20,
        "every sandbox got its own address: {ips:?}"
    );
    assert_eq!(leases(data.path()).len(), 40);
    assert_eq!(bridge_ports(&bridge).len(), 20);
    std::thread::scope(|s| {
        for (i, ns) in namespaces.iter().enumerate() {
            let config = &config;
            s.spawn(move || {
                let id = format!("c-par-{i}");
                Call::new("DEL", &id, &ns.path()).ok(config);
                assert_eq!(ns.link_names(), Vec::<String>::new());
            });
        }
    });
    assert_eq!(leases(data.path()), Vec::<String>::new());
    assert_eq!(bridge_ports(&bridge), Vec::<String>::new());
    assert_eq!(record_files(cni_dir.path()), Vec::<String>::new());
}

#[test]
fn a_killed_add_is_completed_by_the_next_del() {
    let t = ThreeNetworks::new("1.0.0");
    let (bin, pidfile) = sleeping_delegate("slow");
    let mut config = t.config.clone();
    config["binDir"] = bin_dirs_with(bin.path());
    config["delegates"][2] = json!({"cniVersion": "1.0.0", "name": "slow-net", "type": "slow"});
    let mut child = {
        use std::io::Write;
        let mut c = std::process::Command::new(plexus_bin())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "c-killed")
            .env("CNI_NETNS", t.ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", plugins_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(config.to_string().as_bytes())
            .unwrap();
        c
    };
    // Wait until the third delegate runs: by then eth0 and net1 exist.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "the slow delegate never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let slow: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(slow),
        nix::sys::signal::Signal::SIGKILL,
    );
    let mut names = t.ns.link_names();
    names.sort();
    assert_eq!(names, ["eth0", "net1"]);
    assert_eq!(t.record("c-killed")["state"], "adding");
    assert_eq!(leases(t.data.path()).len(), 1);

    // The runtime's DEL, even with an empty config naming only the record directory, removes everything.
    t.call("DEL", "c-killed")
        .ok(&json!({"cniDir": t.cni_dir.path()}));
    t.assert_clean(&[]);
}

#[test]
fn a_corrupt_record_falls_back_to_the_config_and_never_fakes_success() {
    let t = ThreeNetworks::new("1.0.0");
    t.call("ADD", "c-corrupt").ok(&t.config);
    let hosts = t.host_interfaces("c-corrupt");
    let record = record_path(t.cni_dir.path(), "plexus", "c-corrupt", "eth0");
    std::fs::write(&record, b"{\"format\": 1, \"trunc").unwrap();

    // Without delegates in the config there is nothing to go by: DEL fails and says so, and keeps the record.
    let e = t
        .call("DEL", "c-corrupt")
        .err(json!({"cniDir": t.cni_dir.path()}).to_string().as_bytes());
    assert_eq!(e["code"], 104, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("nothing was deleted"),
        "{e}"
    );
    assert!(record.exists());
    assert_eq!(t.ns.link_names().len(), 3);

    // With the config, DEL deletes every configured network and cleans up.
    t.call("DEL", "c-corrupt").ok(&t.config);
    t.assert_clean(&hosts);
}

#[test]
fn status_follows_readiness_and_delegates() {
    let t = ThreeNetworks::new("1.1.0");
    let ready = t.data.path().join("ready");
    let mut config = t.config.clone();
    config["readinessindicatorfile"] = json!(ready);
    let e = t.call("STATUS", "").err(config.to_string().as_bytes());
    assert_eq!(e["code"], 50, "{e}");
    std::fs::write(&ready, b"").unwrap();
    t.call("STATUS", "").ok(&config);

    // A delegate whose STATUS fails makes Plexus's STATUS fail with its code.
    let bin = tempfile::tempdir().unwrap();
    script(
        bin.path(),
        "sick",
        r#"if [ "$CNI_COMMAND" = STATUS ]; then echo '{"cniVersion":"1.1.0","code":51,"msg":"pool exhausted"}'; exit 1; fi"#,
    );
    config["binDir"] = bin_dirs_with(bin.path());
    config["delegates"][2] = json!({"cniVersion": "1.1.0", "name": "sick-net", "type": "sick"});
    let e = t.call("STATUS", "").err(config.to_string().as_bytes());
    assert_eq!(e["code"], 51, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("pool exhausted"), "{e}");

    // STATUS needs 1.1.0.
    config["cniVersion"] = json!("1.0.0");
    assert_eq!(
        t.call("STATUS", "").err(config.to_string().as_bytes())["code"],
        1
    );
}

#[test]
fn gc_removes_what_is_no_longer_valid() {
    let mut t = ThreeNetworks::new("1.1.0");
    // Two sandboxes on the same macvlan would collide on its static address and MAC: use the other two networks.
    t.config["delegates"].as_array_mut().unwrap().remove(1);
    let other = Netns::new();
    t.call("ADD", "c-keep").ok(&t.config);
    let keep_hosts = t.host_interfaces("c-keep");
    Call::new("ADD", "c-stale", leak(other.path())).ok(&t.config);
    assert_eq!(leases(t.data.path()).len(), 4);

    let mut gc = t.config.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c-keep", "ifname": "eth0"}]);
    Call::new("GC", "", "").ok(&gc);
    assert_eq!(
        other.link_names(),
        Vec::<String>::new(),
        "the stale sandbox was deleted"
    );
    assert_eq!(
        leases(t.data.path()).len(),
        2,
        "only the valid sandbox's leases remain"
    );
    assert_eq!(
        record_files(t.cni_dir.path())
            .iter()
            .filter(|f| f.ends_with(".json"))
            .count(),
        1
    );
    assert_eq!(t.ns.link_names().len(), 2, "the valid sandbox is untouched");

    // GC reaches each delegate network with the attachments still valid on it. The reference plugins (v1.9.1)
    // implement no GC of their own (host-local's is a FIXME), so a one-line delegate records what it was sent.
    let bin = tempfile::tempdir().unwrap();
    let seen = bin.path().join("gc-stdin");
    script(
        bin.path(),
        "gc-spy",
        &format!(
            "case \"$CNI_COMMAND\" in ADD) echo '{{\"cniVersion\":\"1.1.0\"}}';; GC) cat > {};; esac",
            seen.display()
        ),
    );
    let mut with_spy = t.config.clone();
    with_spy["binDir"] = bin_dirs_with(bin.path());
    with_spy["delegates"]
        .as_array_mut()
        .unwrap()
        .push(json!({"cniVersion": "1.1.0", "name": "spy-net", "type": "gc-spy"}));
    let third = Netns::new();
    Call::new("ADD", "c-spy", leak(third.path())).ok(&with_spy);
    let mut gc = with_spy.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c-keep", "ifname": "eth0"}, {"containerID": "c-spy", "ifname": "eth0"}]);
    Call::new("GC", "", "").ok(&gc);
    let sent: Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(sent["name"], "spy-net");
    assert_eq!(
        sent["cni.dev/valid-attachments"],
        json!([{"containerID": "c-spy", "ifname": "net2"}])
    );
    assert_eq!(
        sent["cni.dev/attachments"],
        sent["cni.dev/valid-attachments"]
    );
    Call::new("DEL", "c-spy", leak(third.path())).ok(&with_spy);

    t.call("DEL", "c-keep").ok(&t.config);
    t.assert_clean(&keep_hosts);
}

#[test]
fn bad_requests_get_cni_errors() {
    let ns = Netns::new();
    let call = Call::new("ADD", "c-bad", leak(ns.path()));
    assert_eq!(call.err(b"{not json")["code"], 6);
    assert_eq!(call.err(br#"{"cniVersion":"9.9.9"}"#)["code"], 1);
    let mut missing = call.clone();
    missing.ifname = "";
    let e = missing.err(b"{}");
    assert_eq!(e["code"], 4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_IFNAME"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = call.err(
        json!({"cniVersion": "1.0.0", "cniDir": dir.path()})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(e["code"], 7, "no delegates: {e}");
    // VERSION needs nothing but the command.
    let v = Call::new("VERSION", "", "").ok(&json!({"cniVersion": "1.1.0"}));
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("0.3.1"))
    );
}

#[test]
fn host_device_moves_a_host_link_in_and_back_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    // A veth pair stands in for a NIC: host-device moves one end into the pod and back on DEL.
    let pair = HostLink::veth();
    let device = format!("{}p", pair.name);
    let (s1, p1) = subnet();
    let (_, p2) = subnet();
    let config = json!({
        "cniVersion": "1.0.0", "binDir": plugins_dir(), "cniDir": dir.path(),
        "delegates": [
            {"cniVersion": "1.0.0", "name": "pod-net", "type": "ptp",
             "ipam": {"type": "host-local", "subnet": s1, "dataDir": data.path()}},
            {"cniVersion": "1.0.0", "name": "nic-net", "type": "host-device", "device": device,
             "ipam": {"type": "static", "addresses": [{"address": format!("{p2}.4/24")}]}}
        ]
    });
    let call = Call::new("ADD", "c-hostdev", leak(ns.path()));
    let r = call.ok(&config);
    assert!(r["ips"][0]["address"].as_str().unwrap().starts_with(&p1));
    assert_eq!(ns.ipv4("net1"), [format!("{p2}.4/24")]);
    assert!(!HostLink::exists(&device), "the device left the host");
    Call::new("CHECK", "c-hostdev", leak(ns.path())).ok(&config);
    Call::new("DEL", "c-hostdev", leak(ns.path())).ok(&config);
    assert!(
        HostLink::exists(&device),
        "DEL gave the device back to the host"
    );
    assert_nothing_left(&ns, data.path(), dir.path());
}

#[test]
fn add_waits_for_the_readiness_indicator_file() {
    let t = ThreeNetworks::new("1.0.0");
    let ready = t.data.path().join("default-network-ready");
    let mut config = t.config.clone();
    config["readinessindicatorfile"] = json!(ready);
    config["readinessTimeoutSeconds"] = json!(0.5);
    // Never ready: the ADD gives up with "try again later" and attaches nothing.
    let e = t.call("ADD", "c-ready").err(config.to_string().as_bytes());
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("readiness indicator file"),
        "{e}"
    );
    t.assert_clean(&[]);

    // Ready a moment after the ADD started: the ADD waits, then attaches.
    config["readinessTimeoutSeconds"] = json!(30);
    let writer = {
        let ready = ready.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            std::fs::write(ready, b"").unwrap();
        })
    };
    t.call("ADD", "c-ready").ok(&config);
    writer.join().unwrap();
    assert_eq!(t.ns.link_names().len(), 3);
    let hosts = t.host_interfaces("c-ready");
    t.call("DEL", "c-ready").ok(&config);
    t.assert_clean(&hosts);
}
