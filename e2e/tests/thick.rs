//! Thick mode against the real control plane: `plexus-daemon` (watch caches, unix socket, metrics) and `plexus-shim`
//! in front of it (`plexus` with the same config, in one test), with the real CNI plugins in real network namespaces.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_e2e::thick::{Daemon, shim_config};
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// A ptp network in a subnet of its own, leases in the sandbox's data dir; returns the subnet's first three
/// octets.
fn ptp_nad(namespace: &str, name: &str, plugin: &str, sb: &PodSandbox) -> String {
    let (subnet, prefix) = subnet();
    create_nad(
        namespace,
        name,
        Some(&json!({"cniVersion": "1.0.0", "type": plugin, "ipam": sb.host_local(&subnet)})),
    );
    prefix
}

/// Pod `web` in a namespace of its own, bound to the daemon's node, selecting NAD `side` (delegate `plugin`), and
/// the shim config of its sandbox (`extra` keys on top).
struct NodePod {
    ns: KubeNamespace,
    sb: PodSandbox,
    /// The first three octets of `side`'s subnet.
    side: String,
    args: String,
    config: Value,
}

impl NodePod {
    fn new(daemon: &Daemon, prefix: &str, plugin: &str, extra: Value) -> Self {
        let ns = KubeNamespace::new(prefix);
        let sb = PodSandbox::new();
        let side = ptp_nad(&ns.name, "side", plugin, &sb);
        let uid = create_pod_on(
            &ns.name,
            "web",
            &[(NETWORKS, "side")],
            Some(&daemon.node.name),
        );
        let args = pod_args(&ns.name, "web", &uid, &sb.container_id);
        let config = daemon.shim_config(&sb.config(extra));
        Self {
            ns,
            sb,
            side,
            args,
            config,
        }
    }

    fn call<'a>(&'a self, command: &'a str) -> Call<'a> {
        let mut call = self.sb.call(command, "");
        call.args = &self.args;
        call
    }
}

fn code(e: &Value) -> u64 {
    e["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no code in {e}"))
}

/// A pod on the daemon's node whose one network's delegate, on ADD, writes its pid to `pidfile`, waits `seconds`,
/// then runs the real ptp plugin.
struct SlowPod {
    pod: NodePod,
    _bin: tempfile::TempDir,
    pidfile: std::path::PathBuf,
}

impl SlowPod {
    fn new(daemon: &Daemon, prefix: &str, seconds: u32) -> Self {
        let bin = tempfile::tempdir().unwrap();
        let pidfile = bin.path().join("slow.pid");
        script(
            bin.path(),
            "slow-ptp",
            &format!(
                "[ \"$CNI_COMMAND\" = ADD ] && {{ echo $$ > {pid}.new; mv {pid}.new {pid}; sleep {seconds}; }}\nexec {plugins}/ptp",
                pid = pidfile.display(),
                plugins = plugins_dir().display()
            ),
        );
        let bin_dir = format!("{}:{}", bin.path().display(), plugins_dir().display());
        let pod = NodePod::new(daemon, prefix, "slow-ptp", json!({"binDir": bin_dir}));
        Self {
            pod,
            _bin: bin,
            pidfile,
        }
    }

    /// Starts the ADD and returns once the slow delegate runs.
    fn start_add(&self) -> std::process::Child {
        let add = self
            .pod
            .call("ADD")
            .spawn(self.pod.config.to_string().as_bytes());
        wait_for_file(&self.pidfile);
        add
    }
}

fn wait_for_file(path: &Path) {
    let until = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A warm ADD reads nothing from the API server whichever form `clusterNetwork` takes: a conf file's path, a conf
/// name in `confDir` (looked up as a NAD in `multusNamespace` first: absent from the synced cache, so no GET), a NAD
/// name, or the static `delegates`. Each pod's first ADD warms the caches (the NAD form's retries until the watch has
/// the NAD); its second ADD, after a DEL, is counted in the audit log.
#[test]
fn a_warm_add_reads_nothing_in_every_cluster_network_form() {
    let daemon = Daemon::start(json!({}));
    for form in ["path", "conf name", "NAD name", "delegates"] {
        let global = KubeNamespace::new("thick-global");
        let pod = NodePod::new(&daemon, "thick-forms", "ptp", json!({}));
        let sb = &pod.sb;
        let pod_net = json!({"cniVersion": "1.0.0", "name": "pod-net", "plugins": [
            {"type": "ptp", "ipam": sb.host_local(&format!("{}.0/24", sb.default_prefix))}
        ]});
        let files = tempfile::tempdir().unwrap();
        let extra = match form {
            "path" => {
                let path = files.path().join("pod-net.conflist");
                std::fs::write(&path, pod_net.to_string()).unwrap();
                json!({"delegates": [], "clusterNetwork": path})
            }
            "conf name" => {
                std::fs::write(
                    sb.conf_dir.path().join("10-pod-net.conflist"),
                    pod_net.to_string(),
                )
                .unwrap();
                json!({"delegates": [], "clusterNetwork": "pod-net", "multusNamespace": global.name})
            }
            "NAD name" => {
                create_nad(&global.name, "pod-net", Some(&pod_net));
                json!({"delegates": [], "clusterNetwork": "pod-net", "multusNamespace": global.name})
            }
            _ => json!({}),
        };
        let config = daemon.shim_config(&sb.config(extra));
        daemon.wait_for("the pod in its cache", |d| {
            d.metric("plexus_daemon_cached_objects", &["kind=\"pod\""]) >= 1.0
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = sb.call("ADD", &pod.args).run(config.to_string().as_bytes());
            if out.status.success() {
                break;
            }
            assert!(
                form == "NAD name" && Instant::now() < deadline,
                "{form}: first ADD: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        sb.call("DEL", &pod.args).ok(&config);
        let reads = |ns: &str| {
            plexus_api_requests(ns)
                .into_iter()
                .filter(|(verb, _, _)| verb == "get" || verb == "list")
                .count()
        };
        let before = (reads(&pod.ns.name), reads(&global.name));
        sb.call("ADD", &pod.args).ok(&config);
        let mut names = sb.netns.link_names();
        names.sort();
        assert_eq!(names, ["eth0", "net1"], "{form}");
        assert_eq!(
            (reads(&pod.ns.name), reads(&global.name)),
            before,
            "{form}: the warm ADD read from the API server: {:?} {:?}",
            plexus_api_requests(&pod.ns.name),
            plexus_api_requests(&global.name)
        );
        sb.call("DEL", &pod.args).ok(&config);
        sb.assert_clean();
    }
}

#[test]
fn a_warm_add_reads_nothing_from_the_api_server_and_is_measured() {
    let daemon = Daemon::start(json!({}));
    let mode = std::fs::metadata(daemon.socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600,
        "socket mode"
    );
    let pod = NodePod::new(&daemon, "thick", "ptp", json!({}));
    let (ns, sb, args, config) = (&pod.ns, &pod.sb, &pod.args, &pod.config);
    daemon.wait_for("the pod in its cache", |d| {
        d.metric("plexus_daemon_cached_objects", &["kind=\"pod\""]) == 1.0
    });

    let result = sb.call("ADD", args).ok(config);
    assert_eq!(result["cniVersion"], "1.0.0");
    let mut names = sb.netns.link_names();
    names.sort();
    assert_eq!(names, ["eth0", "net1"]);
    let status = network_status(&ns.name, "web");
    assert_eq!(status.len(), 2, "{status:?}");
    // Pod and NAD came from the caches: the one request of the ADD is the network-status PATCH (the events go
    // after the reply).
    let requests = plexus_api_requests(&ns.name);
    let reads = requests.iter().filter(|(v, _, _)| v == "get").count();
    let patches = requests
        .iter()
        .filter(|(v, r, _)| v == "patch" && r == "pods")
        .count();
    assert_eq!((reads, patches), (0, 1), "{requests:?}");
    daemon.wait_for("the AddedInterface events", |_| {
        pod_events(&ns.name, "web")
            .iter()
            .filter(|(reason, _)| reason == "AddedInterface")
            .count()
            == 2
    });
    assert_eq!(
        daemon.metric("plexus_daemon_events_total", &["result=\"sent\""]),
        2.0
    );

    sb.call("CHECK", args).ok(config);
    sb.call("DEL", args).ok(config);
    sb.assert_clean();

    let m = |name: &str, labels: &[&str]| daemon.metric(name, labels);
    assert_eq!(
        m(
            "plexus_daemon_cache_lookups_total",
            &["kind=\"pod\"", "result=\"hit\""]
        ),
        1.0
    );
    assert_eq!(
        m(
            "plexus_daemon_cache_lookups_total",
            &["kind=\"nad\"", "result=\"hit\""]
        ),
        1.0
    );
    assert_eq!(
        m("plexus_daemon_cache_lookups_total", &["result=\"miss\""]),
        0.0
    );
    for command in ["ADD", "CHECK", "DEL"] {
        let c = format!("command=\"{command}\"");
        assert_eq!(
            m("plexus_daemon_request_duration_seconds_count", &[&c]),
            1.0,
            "{command}"
        );
        assert_eq!(
            m(
                "plexus_daemon_requests_total",
                &[&c, "outcome=\"success\"", "code=\"0\""]
            ),
            1.0,
            "{command}"
        );
    }
    let phase = |labels: &[&str]| m("plexus_daemon_phase_duration_seconds_count", labels);
    assert_eq!(phase(&["phase=\"lookup\"", "command=\"ADD\""]), 1.0);
    assert_eq!(phase(&["phase=\"status_write\"", "command=\"ADD\""]), 1.0);
    // The record: ADD writes its intent and its completion, under the sandbox's lock; CHECK and DEL take the lock,
    // DEL removes it.
    assert_eq!(phase(&["phase=\"record_write\"", "command=\"ADD\""]), 2.0);
    for command in ["ADD", "CHECK", "DEL"] {
        let c = format!("command=\"{command}\"");
        assert_eq!(phase(&["phase=\"record_lock\"", &c]), 1.0, "{command}");
    }
    assert_eq!(phase(&["phase=\"record_remove\"", "command=\"DEL\""]), 1.0);
    assert_eq!(
        phase(&["phase=\"delegate\"", "plugin=\"ptp\"", "command=\"ADD\""]),
        2.0
    );
    assert_eq!(
        phase(&["phase=\"delegate\"", "plugin=\"ptp\"", "command=\"DEL\""]),
        2.0
    );
    assert_eq!(m("plexus_daemon_in_flight_requests", &[]), 0.0);
}

#[test]
fn a_pod_missing_from_the_cache_is_read_with_one_get() {
    let daemon = Daemon::start(json!({}));
    let ns = KubeNamespace::new("miss");
    let sb = PodSandbox::new();
    ptp_nad(&ns.name, "side", "ptp", &sb);
    // Not bound to the daemon's node, so never in its cache: what the daemon sees when the runtime calls before
    // the watch event arrives.
    let uid = create_pod(&ns.name, "fresh", &[(NETWORKS, "side")]);
    let args = pod_args(&ns.name, "fresh", &uid, &sb.container_id);
    let config = daemon.shim_config(&sb.config(json!({})));
    sb.call("ADD", &args).ok(&config);
    assert_eq!(sb.netns.link_names().len(), 2);
    assert_eq!(
        daemon.metric(
            "plexus_daemon_cache_lookups_total",
            &["kind=\"pod\"", "result=\"miss\""]
        ),
        1.0
    );
    let gets: Vec<_> = plexus_api_requests(&ns.name)
        .into_iter()
        .filter(|(v, r, _)| v == "get" && r == "pods")
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

/// A conf written before `plexus-shim` existed (`"type": "plexus"` with `daemonSocketDir`) still goes to the daemon:
/// `plexus` forwards it as `plexus-shim` does.
#[test]
fn a_conf_naming_plexus_with_daemon_socket_dir_is_forwarded_too() {
    let daemon = Daemon::start(json!({}));
    let pod = NodePod::new(&daemon, "plxshim", "ptp", json!({}));
    let mut config = pod.config.clone();
    config["type"] = json!("plexus");
    let served = || daemon.metric("plexus_daemon_requests_total", &["command=\"ADD\""]);
    let before = served();
    let result = pod.call("ADD").ok(&config);
    assert!(
        result["interfaces"].as_array().is_some_and(|i| i
            .iter()
            .any(|i| i["name"] == "eth0" && i["sandbox"].is_string())),
        "{result}"
    );
    assert!(pod.sb.netns.ipv4("net1")[0].starts_with(&format!("{}.", pod.side)));
    assert_eq!(served(), before + 1.0, "the ADD was not the daemon's");
    pod.call("DEL").ok(&config);
    pod.sb.assert_clean();
}

#[test]
fn a_changed_nad_is_used_by_the_next_add() {
    let daemon = Daemon::start(json!({}));
    let pod = NodePod::new(&daemon, "nadchg", "ptp", json!({}));
    let (ns, sb, args, config) = (&pod.ns, &pod.sb, &pod.args, &pod.config);
    let old = &pod.side;
    sb.call("ADD", args).ok(config);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&format!("{old}.")));
    sb.call("DEL", args).ok(config);

    let new = ptp_nad(&ns.name, "side", "ptp", sb);
    // The watch brings the change within moments; each try is a full ADD and DEL.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        sb.call("ADD", args).ok(config);
        let ip = sb.netns.ipv4("net1")[0].clone();
        sb.call("DEL", args).ok(config);
        if ip.starts_with(&format!("{new}.")) {
            break;
        }
        assert!(ip.starts_with(&format!("{old}.")), "{ip}");
        assert!(Instant::now() < until, "still the old NAD after 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    sb.assert_clean();
}

#[test]
fn killed_mid_add_then_del_through_a_restarted_daemon_leaves_nothing() {
    let daemon = Daemon::start(json!({}));
    let slow = SlowPod::new(&daemon, "kill9", 60);
    let add = slow.start_add();
    let pod = &slow.pod;
    // Mid-ADD: the default network is attached, the second delegate runs. The daemon dies with what it started,
    // as it would with its pod or its systemd unit.
    assert_eq!(pod.sb.netns.link_names(), ["eth0"]);
    daemon.kill();
    let pid = std::fs::read_to_string(&slow.pidfile).unwrap();
    sh(&["kill", "-9", "--", &format!("-{}", pid.trim())]);
    let out = add.wait_with_output().unwrap();
    assert!(!out.status.success());
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(code(&e), 11, "{e}");
    assert!(
        !record_files(pod.sb.cni_dir.path()).is_empty(),
        "the record of the ADD in progress"
    );

    daemon.spawn();
    pod.call("DEL").ok(&pod.config);
    pod.sb.assert_clean();
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_the_socket_is_gone() {
    let daemon = Daemon::start(json!({}));
    let slow = SlowPod::new(&daemon, "term", 2);
    let add = slow.start_add();
    let pod = &slow.pod;
    daemon.signal("TERM");
    let out = add.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        daemon.log()
    );
    assert!(daemon.wait_exit(Duration::from_secs(30)), "exit status");
    assert!(!daemon.socket().exists());
    let mut names = pod.sb.netns.link_names();
    names.sort();
    assert_eq!(names, ["eth0", "net1"]);

    // Down, with no wait configured: the shim says so at once.
    let mut no_wait = pod.config.clone();
    no_wait["daemonWaitSeconds"] = json!(0);
    let e = pod.call("DEL").err(no_wait.to_string().as_bytes());
    assert_eq!(code(&e), 11, "{e}");
    // By default it waits for the daemon (daemonWaitSeconds, 60): a DEL made while the daemon is down (as during a
    // rolling upgrade) finishes once it is back.
    let del = pod.call("DEL").spawn(pod.config.to_string().as_bytes());
    std::thread::sleep(Duration::from_secs(1));
    daemon.spawn();
    let out = del.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        daemon.log()
    );
    pod.sb.assert_clean();
}

#[test]
fn daemon_down_or_silent_is_code_11_within_the_timeout() {
    let sb = PodSandbox::new();
    let args = pod_args("default", "nobody", "u", &sb.container_id);
    // Nothing listens on the socket.
    let empty = tempfile::tempdir().unwrap();
    // It is waited for daemonWaitSeconds, then code 11 naming the socket and the wait.
    let config = shim_config(&sb.config(json!({"daemonWaitSeconds": 1})), empty.path());
    let started = Instant::now();
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert!(started.elapsed() >= Duration::from_secs(1), "{e}");
    assert_eq!(code(&e), 11, "{e}");
    let socket = empty.path().join("plexus.sock").display().to_string();
    assert!(e["msg"].as_str().unwrap().contains(&socket), "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("daemonWaitSeconds"),
        "{e}"
    );
    assert_eq!(e["cniVersion"], "1.0.0");

    // A daemon that accepts but does not answer (stopped): code 11 once daemonTimeoutSeconds are over.
    let daemon = Daemon::start(json!({}));
    let pod = NodePod::new(&daemon, "silent", "ptp", json!({"daemonTimeoutSeconds": 2}));
    let (sb, args, config) = (&pod.sb, &pod.args, &pod.config);
    daemon.signal("STOP");
    let started = Instant::now();
    let e = sb.call("ADD", args).err(config.to_string().as_bytes());
    let waited = started.elapsed();
    daemon.signal("CONT");
    assert_eq!(code(&e), 11, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("daemonTimeoutSeconds"),
        "{e}"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    // The daemon reads the request after the shim gave up: it does not run it (the runtime goes on with a DEL).
    daemon.wait_for("the abandoned ADD answered", |d| {
        d.metric(
            "plexus_daemon_requests_total",
            &["command=\"ADD\"", "code=\"11\""],
        ) == 1.0
    });
    sb.assert_clean();
    sb.call("DEL", args).ok(config);
    sb.assert_clean();
}

#[test]
fn a_hundred_concurrent_adds_then_dels_through_the_shim() {
    const PODS: usize = 100;
    let daemon = Daemon::start(json!({}));
    let ns = KubeNamespace::new("many");
    let shared = PodSandbox::new();
    let (side_subnet, _) = subnet();
    create_nad(
        &ns.name,
        "side",
        Some(
            &json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": shared.host_local(&side_subnet)}),
        ),
    );
    let pods: Vec<Value> = (0..PODS)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}"), "namespace": ns.name, "annotations": {NETWORKS: "side"}},
                "spec": {"nodeName": daemon.node.name, "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}})
        })
        .collect();
    kubectl(
        &["apply", "-f", "-"],
        Some(&json!({"apiVersion": "v1", "kind": "List", "items": pods}).to_string()),
    );
    let listed: Value = serde_json::from_str(&kubectl(
        &["get", "pods", "-n", &ns.name, "-o", "json"],
        None,
    ))
    .unwrap();
    let uid = |name: &str| {
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["name"] == name)
            .map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned())
            .unwrap()
    };
    daemon.wait_for("the pods in its cache", |d| {
        d.metric("plexus_daemon_cached_objects", &["kind=\"pod\""]) == PODS as f64
    });
    // One default network, one lease store and one record directory for all: leases must be distinct.
    let config = daemon.shim_config(&shared.config(json!({})));
    let sandboxes: Vec<(Netns, String, String)> = (0..PODS)
        .map(|i| {
            let container = unique("ctr");
            let args = pod_args(
                &ns.name,
                &format!("p{i}"),
                &uid(&format!("p{i}")),
                &container,
            );
            (Netns::new(), container, args)
        })
        .collect();
    let run_all = |command: &str| {
        let paths: Vec<String> = sandboxes.iter().map(|(n, _, _)| n.path()).collect();
        let children: Vec<_> = sandboxes
            .iter()
            .zip(&paths)
            .map(|((_, container, args), path)| {
                let mut call = Call::new(command, container, path);
                call.args = args;
                call.spawn(config.to_string().as_bytes())
            })
            .collect();
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{command}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
                out.stdout
            })
            .collect::<Vec<_>>()
    };
    let results = run_all("ADD");
    let ips: BTreeSet<String> = results
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r).unwrap();
            v["ips"][0]["address"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ips.len(), PODS, "distinct default-network addresses");
    assert_eq!(
        leases(shared.data.path()).len(),
        2 * PODS,
        "distinct leases"
    );
    for (netns, _, _) in &sandboxes {
        assert_eq!(netns.link_names().len(), 2);
    }
    run_all("DEL");
    for (netns, _, _) in &sandboxes {
        assert_eq!(netns.link_names(), Vec::<String>::new());
    }
    assert_eq!(leases(shared.data.path()), Vec::<String>::new());
    assert_eq!(record_files(shared.cni_dir.path()), Vec::<String>::new());
    assert_eq!(
        daemon.metric("plexus_daemon_requests_total", &["outcome=\"success\""]),
        2.0 * PODS as f64
    );
}

/// The chart's thick-mode node ClusterRole (without its events rule unless `events`) bound to `subject`; deleted on
/// drop.
struct DaemonRole(String);

impl DaemonRole {
    fn grant(name: &str, subject: Value, events: bool) -> Self {
        let mut rules = plexus_e2e::rbac::node_cluster_role_rules(true);
        if !events {
            rules.retain(|rule| {
                !rule["resources"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("events"))
            });
        }
        let rbac = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
             "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
             "subjects": [subject]}]});
        kubectl(&["apply", "-f", "-"], Some(&rbac.to_string()));
        Self(name.to_owned())
    }
}

impl Drop for DaemonRole {
    fn drop(&mut self) {
        let _ = kubectl_output(&["delete", "clusterrole,clusterrolebinding", &self.0], None);
    }
}

/// kube re-reads a token file when its copy is over 50 s old (as client-go does, at least once a minute).
const TOKEN_REREAD: Duration = Duration::from_secs(55);

#[test]
fn an_in_cluster_daemon_picks_up_a_rotated_service_account_token() {
    let ns = KubeNamespace::new("token");
    let sa = "plexus-daemon";
    kubectl(&["create", "serviceaccount", sa, "-n", &ns.name], None);
    let _role = DaemonRole::grant(
        &format!("plexus-daemon-{}", ns.name),
        json!({"kind": "ServiceAccount", "name": sa, "namespace": ns.name}),
        true,
    );
    // A token bound to a Secret: deleting the Secret revokes the token.
    let token_for = |secret: &str| {
        kubectl(
            &["create", "secret", "generic", secret, "-n", &ns.name],
            None,
        );
        kubectl(
            &[
                "create",
                "token",
                sa,
                "-n",
                &ns.name,
                "--bound-object-kind",
                "Secret",
                "--bound-object-name",
                secret,
                "--duration",
                "1h",
            ],
            None,
        )
        .trim()
        .to_owned()
    };
    let creds = tempfile::tempdir().unwrap();
    let token_file = creds.path().join("token");
    let write_token = |token: &str| {
        let tmp = creds.path().join("token.new");
        std::fs::write(&tmp, token).unwrap();
        std::fs::rename(&tmp, &token_file).unwrap();
    };
    let first = token_for("first");
    write_token(&first);
    // The daemon as in a pod: the in-cluster config, the service account's files in their usual place.
    let pki = kubeconfig().parent().unwrap().join("pki");
    std::fs::copy(pki.join("ca.crt"), creds.path().join("ca.crt")).unwrap();
    std::fs::write(creds.path().join("namespace"), &ns.name).unwrap();
    // One request thread: the ADD after the rotation writes network-status over that thread's own connection, last
    // used 55 s before (within its 60 s: plexus_daemon::direct::IDLE_LIMIT).
    let daemon = Daemon::start_in_cluster(creds.path(), json!({"maxConcurrentDelegates": 1}));

    let sb = PodSandbox::new();
    ptp_nad(&ns.name, "side", "ptp", &sb);
    let config = daemon.shim_config(&sb.config(json!({})));
    let attach = |pod: &str| {
        let uid = create_pod_on(
            &ns.name,
            pod,
            &[(NETWORKS, "side")],
            Some(&daemon.node.name),
        );
        let args = pod_args(&ns.name, pod, &uid, &sb.container_id);
        sb.call("ADD", &args).ok(&config);
        assert_eq!(network_status(&ns.name, pod).len(), 2);
        sb.call("DEL", &args).ok(&config);
        sb.assert_clean();
    };
    // The daemon's first ADD, and one soon after it: the thread makes its own connection after this one's reply
    // (plexus_daemon::direct).
    attach("one");
    attach("two");
    // Every client of the daemon has read the token by now: the shared one at the start, the thread's own when it
    // was made.
    daemon.wait_for("the request thread's own connection", |d| {
        d.metric(
            "plexus_daemon_thread_connections_total",
            &["result=\"made\""],
        ) == 1.0
    });
    let read = Instant::now();
    attach("three");

    // Rotate: a new token in the file, the old one revoked.
    write_token(&token_for("second"));
    kubectl(&["delete", "secret", "first", "-n", &ns.name], None);
    let old = creds.path().join("old.kubeconfig");
    std::fs::write(
        &old,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://{}\n    certificate-authority: {}\n\
             users:\n- name: sa\n  user:\n    token: {first}\ncontexts:\n- name: sa\n  context: {{cluster: e2e, user: sa}}\ncurrent-context: sa\n",
            api_server_address(),
            pki.join("ca.crt").display()
        ),
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new(kubectl_bin())
            .args([
                "--kubeconfig",
                &old.display().to_string(),
                "get",
                "pods",
                "-n",
                &ns.name,
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stderr).contains("Unauthorized") {
            break;
        }
        assert!(Instant::now() < until, "the first token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(left) = TOKEN_REREAD.checked_sub(read.elapsed()) {
        std::thread::sleep(left);
    }
    attach("after");
    let writes = |connection: &str| {
        let label = format!("connection=\"{connection}\"");
        daemon.metric("plexus_daemon_status_writes_total", &[&label])
    };
    assert_eq!(
        (writes("shared"), writes("thread")),
        (2.0, 2.0),
        "the first two ADDs over the shared client, the next ones (before and after the rotation) over the thread's \
         own connection"
    );
}

#[test]
fn readiness_waits_for_the_caches_and_health_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_unready(json!({"kubeconfig": dead_kubeconfig(dir.path())}));
    assert_eq!(daemon.get("/healthz").0, 200);
    let (status, body) = daemon.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(daemon.metric("plexus_daemon_in_flight_requests", &[]), 0.0);
    let ready = Daemon::start(json!({}));
    assert_eq!(ready.get("/readyz").0, 200);
}

#[test]
fn events_the_api_server_refuses_are_logged_and_counted_and_the_add_stands() {
    // The daemon's identity may do everything but create events.
    let creds = tempfile::tempdir().unwrap();
    let user = format!("plexus-daemon-{}", unique("noev"));
    let kubeconfig = user_kubeconfig(&user, creds.path());
    let _role = DaemonRole::grant(
        &user,
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}),
        false,
    );
    let daemon = Daemon::start(json!({"kubeconfig": kubeconfig}));
    let pod = NodePod::new(&daemon, "noevents", "ptp", json!({}));
    pod.call("ADD").ok(&pod.config);
    assert_eq!(network_status(&pod.ns.name, "web").len(), 2);
    daemon.wait_for("the failed events counted", |d| {
        d.metric("plexus_daemon_events_total", &["result=\"failed\""]) == 2.0
    });
    assert!(
        daemon.log().contains("could not record the pod's events"),
        "{}",
        daemon.log()
    );
    assert_eq!(pod.sb.netns.link_names().len(), 2, "the ADD stands");
    pod.call("DEL").ok(&pod.config);
    pod.sb.assert_clean();
}

/// The connections waiting in the accept queue of the listening unix socket at `path` (`ss`'s Recv-Q of a
/// listener): requests the daemon has not taken yet.
fn accept_queue(path: &Path) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-xlnH"])
        .output()
        .expect("run ss");
    assert!(out.status.success(), "ss failed");
    let path = path.display().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 5 && f[4] == path)
        .unwrap_or_else(|| panic!("no listener at {path}"))[2]
        .parse()
        .unwrap()
}

#[test]
fn max_concurrent_delegates_bounds_the_requests_that_run_at_once() {
    const LIMIT: usize = 2;
    const PODS: usize = 5;
    let daemon = Daemon::start(json!({"maxConcurrentDelegates": LIMIT}));
    // Every pod's delegate: counts itself in `running` (under a lock) and logs the count it saw in `levels`, holds
    // its ADD until `go` exists, runs the real ptp, then counts itself out.
    let bin = tempfile::tempdir().unwrap();
    let dir = bin.path().display().to_string();
    std::fs::write(bin.path().join("running"), "0\n").unwrap();
    script(
        bin.path(),
        "counted-ptp",
        &format!(
            "[ \"$CNI_COMMAND\" = ADD ] || exec {plugins}/ptp\n\
             ( flock 9; n=$(( $(cat {dir}/running) + 1 )); echo $n > {dir}/running; echo $n >> {dir}/levels ) 9>{dir}/lock\n\
             while [ ! -e {dir}/go ]; do sleep 0.02; done\n\
             out=$({plugins}/ptp); rc=$?\n\
             ( flock 9; echo $(( $(cat {dir}/running) - 1 )) > {dir}/running ) 9>{dir}/lock\n\
             printf '%s' \"$out\"; exit $rc",
            plugins = plugins_dir().display()
        ),
    );
    let bin_dir = format!("{dir}:{}", plugins_dir().display());
    let pods: Vec<NodePod> = (0..PODS)
        .map(|i| {
            NodePod::new(
                &daemon,
                &format!("conc{i}"),
                "counted-ptp",
                json!({"binDir": bin_dir}),
            )
        })
        .collect();
    // One config for all (the daemon follows its callers' keys: one default network, lease store and cniDir).
    let config = pods[0].config.to_string();
    let mut adds: Vec<std::process::Child> = pods
        .iter()
        .map(|p| p.call("ADD").spawn(config.as_bytes()))
        .collect();
    let running = || {
        std::fs::read_to_string(bin.path().join("running"))
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    // LIMIT delegates run and hold; the other requests wait, not taken, in the socket's accept queue.
    daemon.wait_for("the limit reached and the rest queued", |d| {
        running() == LIMIT && accept_queue(&d.socket()) == PODS - LIMIT
    });
    assert_eq!(
        daemon.metric("plexus_daemon_in_flight_requests", &[]),
        LIMIT as f64
    );
    for add in &mut adds {
        assert!(add.try_wait().unwrap().is_none(), "a shim stopped waiting");
    }
    std::fs::write(bin.path().join("go"), b"").unwrap();
    for add in adds {
        let out = add.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Each ran once, never more than LIMIT at a time: the queued ones started as running ones ended.
    let levels: Vec<usize> = std::fs::read_to_string(bin.path().join("levels"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(levels.len(), PODS, "{levels:?}");
    assert_eq!(levels.iter().max(), Some(&LIMIT), "{levels:?}");
    assert_eq!(running(), 0);
    for pod in &pods {
        pod.call("DEL").ok(&pods[0].config);
    }
    for pod in &pods {
        pod.sb.assert_clean();
    }
}
