//! Thick mode's trust boundary: what a caller of the daemon's socket (root, or a member of `socketGroup`) can and
//! can't make `plexus-daemon` do, against the real control plane with the real CNI plugins in real network
//! namespaces (docs/configuration.md, "What a caller of the socket can do").

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_e2e::thick::Daemon;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

fn code(e: &Value) -> u64 {
    e["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no code in {e}"))
}

fn msg(e: &Value) -> &str {
    e["msg"].as_str().unwrap_or_default()
}

/// Pod `name` on the daemon's node selecting NAD `<name>-net` (`nad`: its config); returns the pod's UID.
fn pod_on(daemon: &Daemon, ns: &KubeNamespace, name: &str, nad: &Value) -> String {
    create_nad(&ns.name, &format!("{name}-net"), Some(nad));
    create_pod_on(
        &ns.name,
        name,
        &[(NETWORKS, &format!("{name}-net"))],
        Some(&daemon.node.name),
    )
}

/// Waits up to 30 s for `done`.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < until, "no {what} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until process `pid` is gone (killed and reaped).
fn assert_gone(pid_file: &Path) {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(&format!("the end of process {pid}"), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}

/// One request written on the socket by hand: a header (`env`, `deadlineMs`) and a stdin; returns the reply's
/// status byte and text.
fn raw_request(socket: &Path, env: Value, stdin: &[u8]) -> (u8, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    let deadline_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000;
    let header = json!({"env": env, "deadlineMs": deadline_ms}).to_string();
    stream
        .write_all(&(header.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(header.as_bytes()).unwrap();
    stream.write_all(stdin).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    read_reply(&mut stream)
}

fn read_reply(stream: &mut UnixStream) -> (u8, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let (status, text) = reply.split_first().expect("a reply");
    (*status, String::from_utf8_lossy(text).into_owned())
}

const GROUP: u32 = 4243;

/// The daemon's file has the node's plugin keys (binDir, cniDir, confDir, the default network); a caller in the
/// socket group only by a supplementary group is served, and nothing of what it names is used: not its `binDir`,
/// `cniDir`, `confDir`, `delegates`, `clusterNetwork`, readiness file or timeouts, and not the `CNI_PATH` of its
/// environment. Its own directory holds programs named like the delegates (and one only it has) that leave a marker
/// when run: the marker never appears. A caller in no group of the socket's is kept out by the socket's mode.
#[test]
fn a_socket_group_member_chooses_no_directory_binary_or_delegate() {
    let sb = PodSandbox::new();
    let mut node = sb.config(json!({}));
    node["socketGroup"] = json!(GROUP);
    let daemon = Daemon::start_fixed(node);
    // The socket's directory: made by the daemon, 0750, root and the socket group; let others reach it.
    let run = std::fs::metadata(daemon.socket_dir()).unwrap();
    assert_eq!(
        (run.mode() & 0o7777, run.uid(), run.gid()),
        (0o750, 0, GROUP)
    );
    std::fs::set_permissions(daemon.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();

    let caller = tempfile::tempdir().unwrap();
    std::fs::set_permissions(caller.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let marker = caller.path().join("ran");
    for name in ["ptp", "host-local", "mine"] {
        script(
            caller.path(),
            name,
            &format!("echo {name} >> {}; exit 1", marker.display()),
        );
    }
    let own = |dir: &str| caller.path().join(dir).display().to_string();
    let config = json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
        "daemonSocketDir": daemon.socket_dir(),
        "binDir": own(""), "cniDir": own("cni"), "confDir": own("conf"),
        "delegates": [{"cniVersion": "1.0.0", "name": "mine", "type": "mine"}],
        "clusterNetwork": "mine", "readinessindicatorfile": own("never"), "readinessTimeoutSeconds": 1,
        "delegateTimeoutSeconds": 0.001, "kubeconfig": own("kubeconfig"), "logFile": own("log")});

    let ns = KubeNamespace::new("trust");
    let (subnet, prefix) = subnet();
    let ptp = json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&subnet)});
    let uid = pod_on(&daemon, &ns, "web", &ptp);
    let args = pod_args(&ns.name, "web", &uid, &sb.container_id);
    // As uid 65534 with primary group `primary` and supplementary group `groups`.
    let as_user = |command: &'static str, args: &str, primary: u32, groups: Option<u32>| {
        let mut call = sb.call(command, args);
        call.cni_path = caller.path().display().to_string();
        let (primary, groups) = (primary.to_string(), groups.map(|g| g.to_string()));
        let mut wrapper = vec!["setpriv", "--reuid", "65534", "--regid", primary.as_str()];
        match &groups {
            Some(g) => wrapper.extend(["--groups", g.as_str()]),
            None => wrapper.push("--clear-groups"),
        }
        let out = call
            .spawn_via(&wrapper, config.to_string().as_bytes())
            .wait_with_output()
            .unwrap();
        let reply: Value = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
        };
        (out.status.success(), reply)
    };

    // In no group of the socket's: the socket's mode keeps it out.
    let (ok, e) = as_user("ADD", &args, 65534, None);
    assert!(!ok);
    assert_eq!(code(&e), 11, "{e}");
    assert!(msg(&e).contains("ermission denied"), "{e}");

    // In the socket group by a supplementary group only: served, with the node's keys.
    let (ok, result) = as_user("ADD", &args, 65534, Some(GROUP));
    assert!(ok, "{result}\n{}", daemon.log());
    let mut names = sb.netns.link_names();
    names.sort();
    assert_eq!(names, ["eth0", "net1"]);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&prefix));
    let records = record_files(sb.cni_dir.path());
    assert!(!records.is_empty(), "the record is in the node's cniDir");
    assert!(!caller.path().join("cni").exists(), "the caller's cniDir");
    assert!(
        !marker.exists(),
        "the caller's programs ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );

    // A network whose plugin only the caller's directories have: not found where the node keeps its plugins.
    let mine = json!({"cniVersion": "1.0.0", "type": "mine"});
    let uid2 = pod_on(&daemon, &ns, "web2", &mine);
    let sb2 = PodSandbox::new();
    let args2 = pod_args(&ns.name, "web2", &uid2, &sb2.container_id);
    let mut call = sb2.call("ADD", &args2);
    call.cni_path = caller.path().display().to_string();
    let e = call.err(config.to_string().as_bytes());
    assert!(msg(&e).contains("\"mine\" not found in"), "{e}");
    assert!(
        !msg(&e).contains(&caller.path().display().to_string()),
        "{e}"
    );
    assert!(!marker.exists(), "the caller's programs ran");

    // The node's own network namespace (here the test's, which is the daemon's) is refused before anything runs.
    let host = format!("/proc/{}/ns/net", std::process::id());
    let other = unique("ctr");
    let mut call = Call::new("ADD", &other, &host);
    call.args = &args;
    let e = call.err(config.to_string().as_bytes());
    assert_eq!(code(&e), 4, "{e}");
    assert!(msg(&e).contains("node's own network namespace"), "{e}");
    assert_eq!(
        record_files(sb.cni_dir.path()),
        records,
        "only web's record"
    );

    // In the socket group as its primary group: served too.
    let (ok, e) = as_user("DEL", &args, GROUP, None);
    assert!(ok, "{e}");
    sb.assert_clean();
    assert!(!marker.exists());
}

/// A caller that sends a request's length and then the rest a byte at a time, never finishing, holds the daemon's one
/// worker no longer than the read deadline (`plexus_daemon::server::REQUEST_READ_DEADLINE`): an ADD waiting behind
/// it (within its shim's timeout, well beyond that deadline) is served, and the slow caller gets an error. A header longer than the
/// limit is refused before it is read.
#[test]
fn a_request_that_never_ends_is_cut_off_and_frees_the_worker() {
    let daemon = Daemon::start(json!({"maxConcurrentDelegates": 1}));
    let sb = PodSandbox::new();
    let ns = KubeNamespace::new("endless");
    let ptp = json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&subnet().0)});
    let uid = pod_on(&daemon, &ns, "web", &ptp);
    let args = pod_args(&ns.name, "web", &uid, &sb.container_id);
    let config = daemon.shim_config(&sb.config(json!({"daemonTimeoutSeconds": 60})));

    let mut big = UnixStream::connect(daemon.socket()).unwrap();
    big.write_all(&(64 * 1024 * 1024u32).to_be_bytes()).unwrap();
    let (status, text) = read_reply(&mut big);
    assert_eq!(status, 1);
    assert!(text.contains("more than 65536"), "{text}");

    // A byte every half second, never the whole header: no single read waits long, only the total deadline ends it.
    let mut endless = UnixStream::connect(daemon.socket()).unwrap();
    endless.write_all(&1000u32.to_be_bytes()).unwrap();
    endless.write_all(br#"{"env":{"A":""#).unwrap();
    let mut trickle = endless.try_clone().unwrap();
    let trickling = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(90);
        while Instant::now() < until && trickle.write_all(b"x").is_ok() {
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    sb.call("ADD", &args).ok(&config);
    assert_eq!(sb.netns.link_names().len(), 2);
    let (status, text) = read_reply(&mut endless);
    assert_eq!(status, 1);
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(code(&e), 5, "{e}");
    assert!(msg(&e).contains("reading the request"), "{e}");
    drop(endless);
    trickling.join().unwrap();
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

/// A delegate that prints past the cap (`plexus_cni::invoke::MAX_DELEGATE_STDOUT_BYTES`; this one never stops) is
/// killed with its process group, the ADD fails naming the network and the delegate, and what it attached is rolled
/// back: the plugin before it in the list and the default network.
#[test]
fn a_delegate_printing_past_the_cap_fails_naming_it_and_leaves_nothing() {
    let daemon = Daemon::start(json!({}));
    let sb = PodSandbox::new();
    let bin = tempfile::tempdir().unwrap();
    let pid_file = bin.path().join("flood.pid");
    script(
        bin.path(),
        "flood",
        &format!(
            "[ \"$CNI_COMMAND\" = ADD ] && {{ echo $$ > {}; exec yes plexus; }}\nexit 0",
            pid_file.display()
        ),
    );
    let ns = KubeNamespace::new("flood");
    let list = json!({"cniVersion": "1.0.0", "name": "side", "plugins": [
        {"type": "ptp", "ipam": sb.host_local(&subnet().0)}, {"type": "flood"}]});
    let uid = pod_on(&daemon, &ns, "web", &list);
    let args = pod_args(&ns.name, "web", &uid, &sb.container_id);
    let config = daemon.shim_config(&sb.config(json!({
        "binDir": format!("{}:{}", bin.path().display(), plugins_dir().display())})));

    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert_eq!(code(&e), 100, "{e}");
    assert!(msg(&e).contains("web-net"), "{e}");
    assert!(msg(&e).contains("delegate \"flood\" ADD"), "{e}");
    assert!(msg(&e).contains("more than 4194304 bytes"), "{e}");
    assert_gone(&pid_file);
    sb.assert_clean();
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

/// The shim stops waiting (`daemonTimeoutSeconds` 3) while the second network's delegate still runs (it would sleep
/// for 120 s): the daemon kills that delegate when the shim's deadline passes, rolls back the default network,
/// and answers code 11 naming the network where it stopped (to nobody: its shim left); the daemon's one worker is
/// free for the next request.
#[test]
fn a_shim_that_gives_up_mid_add_gets_the_add_rolled_back_and_the_worker_freed() {
    let daemon = Daemon::start(json!({"maxConcurrentDelegates": 1}));
    let sb = PodSandbox::new();
    let bin = tempfile::tempdir().unwrap();
    let pid_file = bin.path().join("slow.pid");
    script(
        bin.path(),
        "slow-ptp",
        &format!(
            "[ \"$CNI_COMMAND\" = ADD ] && {{ echo $$ > {}; sleep 120; }}\nexec {}/ptp",
            pid_file.display(),
            plugins_dir().display()
        ),
    );
    let ns = KubeNamespace::new("giveup");
    let slow =
        json!({"cniVersion": "1.0.0", "type": "slow-ptp", "ipam": sb.host_local(&subnet().0)});
    let uid = pod_on(&daemon, &ns, "web", &slow);
    let args = pod_args(&ns.name, "web", &uid, &sb.container_id);
    let config = daemon.shim_config(&sb.config(json!({"daemonTimeoutSeconds": 3,
        "binDir": format!("{}:{}", bin.path().display(), plugins_dir().display())})));

    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert_eq!(code(&e), 11, "{e}");
    assert!(msg(&e).contains("daemonTimeoutSeconds"), "{e}");
    // Within 30 s, far less than the delegate's sleep and than delegateTimeoutSeconds (60, code 101).
    daemon.wait_for("the abandoned ADD's end", |d| {
        d.metric(
            "plexus_daemon_requests_total",
            &["command=\"ADD\"", "code=\"11\""],
        ) == 1.0
    });
    assert!(
        daemon
            .log()
            .contains("the caller stopped waiting before network"),
        "{}",
        daemon.log()
    );
    assert_gone(&pid_file);
    sb.assert_clean();
    let del = daemon.shim_config(&sb.config(json!({
        "binDir": format!("{}:{}", bin.path().display(), plugins_dir().display())})));
    sb.call("DEL", &args).ok(&del);
    sb.assert_clean();
    assert_eq!(daemon.metric("plexus_daemon_in_flight_requests", &[]), 0.0);
}

/// A NAD naming a plugin that does not exist, and a caller sending a made-up CNI_COMMAND, add no label value of
/// theirs to the daemon's metrics: delegate phases are labelled only by binaries found, commands only by the CNI
/// commands (else `other`).
#[test]
fn made_up_plugin_types_and_commands_grow_no_metric_series() {
    let daemon = Daemon::start(json!({}));
    let sb = PodSandbox::new();
    let ns = KubeNamespace::new("labels");
    let made_up = unique("no-such-plugin");
    let nad = json!({"cniVersion": "1.0.0", "type": made_up});
    let uid = pod_on(&daemon, &ns, "web", &nad);
    let args = pod_args(&ns.name, "web", &uid, &sb.container_id);
    let config = daemon.shim_config(&sb.config(json!({})));
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert!(msg(&e).contains("not found"), "{e}");
    sb.assert_clean();

    let command = "X".repeat(300);
    let (status, text) = raw_request(
        &daemon.socket(),
        json!({"CNI_COMMAND": command}),
        config.to_string().as_bytes(),
    );
    assert_eq!(status, 1, "{text}");
    let (_, metrics) = daemon.get("/metrics");
    assert!(!metrics.contains(&made_up), "{metrics}");
    assert!(!metrics.contains(&command), "{metrics}");
    assert_eq!(
        daemon.metric(
            "plexus_daemon_requests_total",
            &["command=\"other\"", "code=\"4\""]
        ),
        1.0
    );
    assert!(
        daemon.metric(
            "plexus_daemon_phase_duration_seconds_count",
            &["phase=\"delegate\"", "plugin=\"ptp\""]
        ) >= 1.0,
        "the default network's delegate is measured"
    );
}
