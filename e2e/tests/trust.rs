//! Trust boundaries (docs/security.md): a NAD author or a pod author never acts as root on the node. Each test writes
//! the NAD or the annotation a hostile author would, against the real API server, and checks that the plugin (thin
//! and thick) refuses it before anything runs — no program it names is executed, no file it names is created, no
//! interface is attached — and that the webhook refuses it at `kubectl apply`.

#![forbid(unsafe_code)]

use std::path::Path;

use plexus_e2e::thick::Mode;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// A directory a hostile author controls (in a real cluster: a pod's emptyDir on the host), holding a program that
/// records that it ran, under every name it could be run as.
struct Bait {
    dir: tempfile::TempDir,
}

impl Bait {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        for name in ["x", "bridge", "host-local", "ptp", "credential"] {
            script(
                dir.path(),
                name,
                &format!("echo \"$0 $CNI_COMMAND\" >> {}\nexit 1", ran.display()),
            );
        }
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A kubeconfig whose `exec` credential plugin is the bait.
    fn kubeconfig(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("kubeconfig");
        let doc = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "users": [{"name": "u", "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1", "command": self.dir.path().join("credential"),
                "interactiveMode": "Never"}}}]
        });
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    }

    /// What of the bait ran, and which files the author named were created.
    fn assert_untouched(&self, created: &[&str]) {
        let ran = self.dir.path().join("ran");
        assert!(
            !ran.exists(),
            "a program the NAD named ran as root: {}",
            std::fs::read_to_string(&ran).unwrap_or_default()
        );
        for name in created {
            assert!(
                !self.dir.path().join(name).exists(),
                "{name}, named by the NAD, was created"
            );
        }
    }
}

/// A bin dir holding the CNI plugins and a copy of `plexus` itself: a NAD naming `plexus` would find it, as on a
/// node where the installer put it next to the plugins.
fn bin_dir_with_plexus() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plexus_bin(), dir.path().join("plexus")).unwrap();
    let path = format!("{}:{}", plugins_dir().display(), dir.path().display());
    (dir, path)
}

/// Node keys for this test's plugin: given to the daemon in thick mode (its own file is what it trusts) and in the
/// stdin config in thin mode.
fn node_config(mode: &Mode, keys: Value) -> (PodSandbox, Value) {
    mode.start_daemon(keys.clone());
    let sb = mode.sandbox();
    let config = sb.config(keys);
    (sb, config)
}

fn nested_meta_plugin_nads_run_nothing(mode: &Mode) {
    let ns = KubeNamespace::without_admission("nest");
    let (_plexus_dir, bin_dir) = bin_dir_with_plexus();
    let (sb, config) = node_config(mode, json!({"binDir": bin_dir}));
    let bait = Bait::new();
    let (s1, _) = subnet();
    let inner = |extra: Value| {
        let mut c = json!({
            "cniVersion": "1.0.0", "type": "plexus", "binDir": bait.path(), "cniDir": bait.path().join("records"),
            "confDir": bait.path().join("conf"), "logFile": bait.path().join("plexus.log"),
            "delegates": [{"cniVersion": "1.0.0", "name": "inner", "type": "x"}]
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        c
    };
    let nads = [
        ("as-type", inner(json!({}))),
        (
            "with-credentials",
            inner(json!({"kubeconfig": bait.kubeconfig()})),
        ),
        (
            "in-a-list",
            json!({"cniVersion": "1.0.0", "plugins": [
                {"type": "ptp", "ipam": sb.host_local(&s1)},
                inner(json!({"name": null}))
            ]}),
        ),
        (
            "as-ipam",
            json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": {"type": "multus-shim", "binDir": bait.path()}}),
        ),
        (
            "multus",
            json!({"cniVersion": "1.0.0", "type": "multus", "binDir": bait.path(),
                   "delegates": [{"cniVersion": "1.0.0", "name": "inner", "type": "x"}]}),
        ),
    ];
    for (name, nad) in &nads {
        create_nad(&ns.name, name, Some(nad));
        let uid = mode.create_pod(&ns.name, name, &[(NETWORKS, name)]);
        let args = pod_args(&ns.name, name, &uid, &sb.container_id);
        let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
        assert_eq!(e["code"], 7, "{name}: {e}");
        let msg = e["msg"].as_str().unwrap();
        assert!(
            msg.contains(&format!("{}/{name}", ns.name)) && msg.contains("is a meta-plugin"),
            "{name}: {msg}"
        );
        sb.assert_clean();
        bait.assert_untouched(&["records", "conf", "plexus.log"]);
    }
}

fn a_nads_bin_dir_never_moves_where_plexus_finds_plugins(mode: &Mode) {
    let ns = KubeNamespace::without_admission("bindir");
    let sb = mode.sandbox();
    let config = sb.config(json!({}));
    let bait = Bait::new();
    let (s1, p1) = subnet();
    // The NAD's binDir (and its IPAM's) hold plugins named like the real ones: the real ones run.
    create_nad(
        &ns.name,
        "shadow",
        Some(
            &json!({"cniVersion": "1.0.0", "type": "ptp", "binDir": bait.path(),
                     "ipam": {"type": "host-local", "subnet": s1, "dataDir": sb.data.path(),
                              "binDir": bait.path()}}),
        ),
    );
    let uid = mode.create_pod(&ns.name, "shadow", &[(NETWORKS, "shadow")]);
    let args = pod_args(&ns.name, "shadow", &uid, &sb.container_id);
    sb.call("ADD", &args).ok(&config);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&p1));
    bait.assert_untouched(&[]);
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
    // A type found only in the NAD's binDir is not found at all.
    create_nad(
        &ns.name,
        "only-there",
        Some(&json!({"cniVersion": "1.0.0", "type": "x", "binDir": bait.path()})),
    );
    let uid = mode.create_pod(&ns.name, "only-there", &[(NETWORKS, "only-there")]);
    let args = pod_args(&ns.name, "only-there", &uid, &sb.container_id);
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert_eq!(e["code"], 100, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("not found"), "{e}");
    bait.assert_untouched(&[]);
    sb.assert_clean();
}

fn node_limits_hold_whatever_the_webhook_did(mode: &Mode) {
    let ns = KubeNamespace::without_admission("limits");
    let (sb, config) = node_config(
        mode,
        json!({"maxNetworksPerPod": 3, "allowedPluginTypes": ["ptp", "host-local"], "allowPortMappings": false}),
    );
    for name in ["ptp", "ptp2"] {
        let (subnet, _) = subnet();
        let ptp = json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&subnet),
                         "capabilities": {"portMappings": true}});
        create_nad(&ns.name, name, Some(&ptp));
    }
    let big = json!({"cniVersion": "1.0.0", "type": "ptp", "pad": "x".repeat(70 * 1024)});
    create_nad(&ns.name, "big", Some(&big));
    create_nad(
        &ns.name,
        "bridge",
        Some(&json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": unique("br")})),
    );
    let ports =
        r#"[{"name":"ptp","portMappings":[{"hostPort":22,"containerPort":22,"protocol":"tcp"}]}]"#;
    for (pod, annotation, code, expect) in [
        ("three", "ptp, ptp2, ptp", 102, "asks for 4 networks"),
        ("big", "big", 102, "more than the limit of 65536"),
        (
            "bridge",
            "bridge",
            7,
            "\"bridge\" is not in this node's allowedPluginTypes",
        ),
        ("ports", ports, 102, "allowPortMappings is false"),
    ] {
        let uid = mode.create_pod(&ns.name, pod, &[(NETWORKS, annotation)]);
        let args = pod_args(&ns.name, pod, &uid, &sb.container_id);
        let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
        assert_eq!(e["code"], code, "{pod}: {e}");
        assert!(e["msg"].as_str().unwrap().contains(expect), "{pod}: {e}");
        sb.assert_clean();
    }
    // Within the limits, the same NAD attaches.
    let uid = mode.create_pod(&ns.name, "two", &[(NETWORKS, "ptp, ptp2")]);
    let args = pod_args(&ns.name, "two", &uid, &sb.container_id);
    sb.call("ADD", &args).ok(&config);
    let names = sb.netns.link_names();
    assert!(
        names.contains(&"net1".to_owned()) && names.contains(&"net2".to_owned()),
        "{names:?}"
    );
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

plexus_e2e::in_both_modes!(
    nested_meta_plugin_nads_run_nothing,
    a_nads_bin_dir_never_moves_where_plexus_finds_plugins,
    node_limits_hold_whatever_the_webhook_did,
);

/// `kubectl apply --dry-run=server` of an object (admission runs, nothing is stored); `Err(stderr)` when the API
/// server (its webhook) refused it.
fn apply(object: &Value) -> Result<(), String> {
    let out = kubectl_output(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&object.to_string()),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// [`apply`] until its outcome is `wanted` (the controller's namespace cache may be a moment behind a label just
/// set), at most 30 s; returns the last outcome.
fn apply_until(object: &Value, wanted: impl Fn(&Result<(), String>) -> bool) -> Result<(), String> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let outcome = apply(object);
        if wanted(&outcome) || std::time::Instant::now() > until {
            return outcome;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn nad(namespace: &str, name: &str, config: &Value) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"config": config.to_string()}})
}

fn pod(namespace: &str, name: &str, annotation: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "annotations": {NETWORKS: annotation}},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

#[test]
fn the_webhook_refuses_meta_plugins_and_what_the_node_refuses() {
    let ns = KubeNamespace::new("trust");
    for (name, config, expect) in [
        (
            "as-type",
            json!({"cniVersion": "1.0.0", "type": "plexus", "binDir": "/tmp", "delegates": [{"type": "x"}]}),
            "\"plexus\" is a meta-plugin",
        ),
        (
            "in-a-list",
            json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}, {"type": "multus"}]}),
            "\"multus\" is a meta-plugin",
        ),
        (
            "as-ipam",
            json!({"cniVersion": "1.0.0", "type": "bridge", "ipam": {"type": "multus-shim"}}),
            "\"multus-shim\" is a meta-plugin",
        ),
        (
            "plexus-shim",
            json!({"cniVersion": "1.0.0", "type": "plexus-shim", "daemonSocketDir": "/run/plexus"}),
            "\"plexus-shim\" is a meta-plugin",
        ),
        (
            "too-big",
            json!({"cniVersion": "1.0.0", "type": "bridge", "pad": "x".repeat(70 * 1024)}),
            "more than the limit of 65536",
        ),
    ] {
        let refused = apply(&nad(&ns.name, name, &config)).expect_err(name);
        assert!(
            refused.contains("denied the request") && refused.contains(expect),
            "{name}: {refused}"
        );
    }
    // More networks than maxNetworksPerPod (32 by default, the default network included).
    create_nad(
        &ns.name,
        "plain",
        Some(&json!({"cniVersion": "1.0.0", "type": "bridge"})),
    );
    let many = vec!["plain"; 32].join(",");
    let refused = apply(&pod(&ns.name, "many", &many)).unwrap_err();
    assert!(refused.contains("asks for 33 networks"), "{refused}");
    apply(&pod(&ns.name, "enough", &vec!["plain"; 31].join(","))).unwrap();
}

#[test]
fn host_ports_through_the_annotation_follow_the_namespaces_pod_security_level() {
    let ns = KubeNamespace::new("psa");
    create_nad(
        &ns.name,
        "ports",
        Some(
            &json!({"cniVersion": "1.0.0", "type": "portmap", "capabilities": {"portMappings": true}}),
        ),
    );
    let ports = r#"[{"name":"ports","portMappings":[{"hostPort":22,"containerPort":22,"protocol":"tcp"}]}]"#;
    // Privileged (no level): allowed, as a hostPort in the spec would be.
    apply(&pod(&ns.name, "open", ports)).unwrap();
    kubectl(
        &[
            "label",
            "namespace",
            &ns.name,
            "pod-security.kubernetes.io/enforce=baseline",
        ],
        None,
    );
    let refused = apply_until(&pod(&ns.name, "sneaky", ports), Result::is_err).unwrap_err();
    assert!(
        refused.contains("forbids host ports") && refused.contains("baseline"),
        "{refused}"
    );
    // The same pod without portMappings is fine there.
    apply(&pod(&ns.name, "plain", "ports")).unwrap();
}

#[test]
fn plugin_type_rules_keep_host_device_to_labelled_namespaces() {
    // e2e/lib/controller.sh starts the controller with a rule: host-device only in namespaces labelled
    // plexus.test/host-device=allowed.
    let host_device = json!({"cniVersion": "1.0.0", "type": "host-device", "device": "eth9"});
    let tenant = KubeNamespace::new("tenant");
    let refused = apply(&nad(&tenant.name, "nic", &host_device)).unwrap_err();
    assert!(
        refused.contains(&format!(
            "\"host-device\" is not allowed in namespace {}",
            tenant.name
        )) && refused.contains("plexus.test/host-device=allowed"),
        "{refused}"
    );
    let infra = KubeNamespace::new("infra");
    kubectl(
        &[
            "label",
            "namespace",
            &infra.name,
            "plexus.test/host-device=allowed",
        ],
        None,
    );
    apply_until(&nad(&infra.name, "nic", &host_device), Result::is_ok)
        .unwrap_or_else(|e| panic!("still refused in a labelled namespace: {e}"));
    // Other types are not governed.
    apply(&nad(
        &tenant.name,
        "plain",
        &json!({"cniVersion": "1.0.0", "type": "bridge"}),
    ))
    .unwrap();
}
