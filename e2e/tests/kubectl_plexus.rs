//! `kubectl plexus` (the `kubectl-plexus` binary) against the real API server and the controller `e2e/cluster up`
//! started: `validate` on files gives the live webhook's verdicts and messages word for word; `why` names the cause
//! of each failure: a missing NAD, a NAD in a namespace that namespaceIsolation forbids, an invalid NAD, a pod the
//! webhook's rules refuse today (every row of the webhook's refusal table), and a delegate that fails on a real node (`e2e/cluster up --nodes 1` or more).
//! Each `why` output is printed (`--nocapture` shows them; docs/operations.md quotes them).

#![forbid(unsafe_code)]

use std::process::Output;
use std::time::Duration;

use plexus_e2e::admission::{TABLE_NADS, bad_pod_rows};
use plexus_e2e::controller::{Replica, WebhookCopy, eventually, self_signed, state_dir};
use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// Covers the kubelet's first sandbox attempt and its retries.
const ON_NODE: Duration = Duration::from_secs(120);

fn run(args: &[&str]) -> Output {
    kubectl_plexus(args)
}

/// `kubectl plexus why POD -n NS`: (exit code, text, the JSON report).
fn why(namespace: &str, pod: &str) -> (i32, String, Value) {
    let text = run(&["why", pod, "-n", namespace]);
    let json = run(&["why", pod, "-n", namespace, "-o", "json"]);
    let stdout = String::from_utf8_lossy(&text.stdout).into_owned();
    println!("$ kubectl plexus why {pod} -n {namespace}\n{stdout}");
    assert!(
        text.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let report: Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "why -o json: {e}: {}",
            String::from_utf8_lossy(&json.stderr)
        )
    });
    assert_eq!(text.status.code(), json.status.code());
    (text.status.code().unwrap_or(-1), stdout, report)
}

/// The network `network`'s reasons in a `why -o json` report.
fn reasons(report: &Value, network: &str) -> Vec<String> {
    report["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == network)
        .unwrap_or_else(|| panic!("{network} is not in {report}"))["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| f["reason"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pod(namespace: &str, name: &str, networks: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": {NETWORKS: networks}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    })
}

fn nad(namespace: &str, name: &str, config: &str) -> Value {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace}, "spec": {"config": config}
    })
}

const BRIDGE: &str = r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"host-local","subnet":"198.18.91.0/24"}}"#;

/// The flags the running controller was started with (read from its command line), so `validate` applies exactly
/// the live webhook's rules.
fn controller_rule_flags() -> Vec<String> {
    let pid = std::fs::read_to_string(state_dir().join("plexus-controller.pid")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut flags = Vec::new();
    for pair in args.windows(2) {
        if pair[0] == "--plugin-type-rules" {
            flags.extend(pair.iter().cloned());
        }
    }
    flags
}

/// What the live webhook says to `kubectl create` of one object: `None` admitted, `Some(message)` denied.
fn webhook_says(object: &Value) -> Option<String> {
    let out = kubectl_output(&["create", "-f", "-"], Some(&object.to_string()));
    if out.status.success() {
        return None;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (_, message) = stderr
        .split_once("denied the request: ")
        .unwrap_or_else(|| panic!("refused, but not by a webhook: {stderr}"));
    Some(message.trim_end().to_owned())
}

#[test]
fn validate_gives_the_webhooks_verdicts_and_messages_for_files() {
    let ns = KubeNamespace::new("kp-validate");
    let n = ns.name.as_str();
    // In file order; NADs before the pods that name them, as `kubectl apply` of the files would send them.
    let objects = [
        nad(n, "lan", BRIDGE),
        nad(n, "shell", r#"{"cniVersion":"1.0.0","type":"/bin/sh"}"#),
        nad(n, "broken", "{oops"),
        // host-device NADs only in namespaces labelled for it (the e2e controller's plugin type rules).
        nad(
            n,
            "dev",
            r#"{"cniVersion":"1.0.0","type":"host-device","device":"eth9"}"#,
        ),
        pod(n, "good", "lan"),
        pod(n, "two", "lan@net1, lan@net2"),
        pod(n, "gone", "lan, gone"),
        pod(n, "clash", "lan@eth0"),
        pod(n, "badmac", r#"[{"name":"lan","mac":"nope"}]"#),
        pod(n, "empty", " "),
    ];
    let dir = tempfile::tempdir().unwrap();
    // Two files: multi-document YAML (written as JSON documents, which YAML reads) and a JSON List.
    let yaml = dir.path().join("nads.yaml");
    std::fs::write(
        &yaml,
        objects[..4]
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
    .unwrap();
    let list = dir.path().join("pods.json");
    std::fs::write(
        &list,
        json!({"apiVersion": "v1", "kind": "List", "items": objects[4..]}).to_string(),
    )
    .unwrap();
    let mut args = vec![
        "validate".to_owned(),
        "-f".into(),
        yaml.display().to_string(),
        "-f".into(),
        list.display().to_string(),
    ];
    args.extend(controller_rule_flags());
    let text = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    println!("{}", String::from_utf8_lossy(&text.stdout));
    args.extend(["-o".to_owned(), "json".to_owned()]);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        out.status.code(),
        Some(1),
        "some objects are denied: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(checked.len(), objects.len());
    for (object, offline) in objects.iter().zip(&checked) {
        let live = webhook_says(object);
        let name = &object["metadata"]["name"];
        assert_eq!(offline["name"], *name);
        assert_eq!(
            offline["denial"].as_str(),
            live.as_deref(),
            "{name}: validate and the webhook disagree"
        );
        assert_eq!(
            offline["outcome"],
            if live.is_some() { "denied" } else { "allowed" }
        );
    }
    // The table holds both verdicts, and the refusals the rules name.
    let denied = checked.iter().filter(|c| c["outcome"] == "denied").count();
    assert_eq!(denied, 7, "{checked:?}");

    // Everything admitted: exit 0.
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!("{}\n---\n{}", objects[0], pod(n, "good2", "lan")),
    )
    .unwrap();
    let out = run(&["validate", "-f", good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A file that cannot be read: exit 2 with the reason.
    let out = run(&["validate", "-f", "/nonexistent/x.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.yaml"));
}

#[test]
fn why_names_an_invalid_nad_and_a_refusal_of_the_webhooks_rules() {
    // Admission off while the objects are made (the webhook would refuse both), on again for `why`.
    let ns = KubeNamespace::without_admission("kp-rules");
    let n = ns.name.as_str();
    kubectl(
        &["create", "-f", "-"],
        Some(&nad(n, "lan", BRIDGE).to_string()),
    );
    kubectl(
        &["create", "-f", "-"],
        Some(&nad(n, "shell", r#"{"cniVersion":"1.0.0","type":"/bin/sh"}"#).to_string()),
    );
    kubectl(
        &["create", "-f", "-"],
        Some(&pod(n, "usesbad", "shell").to_string()),
    );
    kubectl(
        &["create", "-f", "-"],
        Some(&pod(n, "clash", "lan@eth0").to_string()),
    );
    kubectl(&["label", "namespace", n, "plexus/admission-"], None);

    let (code, text, report) = why(n, "usesbad");
    assert_eq!(code, 1, "{text}");
    let network = format!("{n}/shell");
    let found = reasons(&report, &network);
    assert!(
        found.iter().any(|r| r.starts_with(&format!(
            "NetworkAttachmentDefinition {network} is not valid: spec.config"
        ))),
        "{found:?}"
    );
    // The controller's status says the same, once it has seen the NAD.
    eventually("the NAD's Valid condition", || {
        let report = why(n, "usesbad").2;
        (report["networks"][0]["nad"]["valid"][0] == "False").then_some(())
    });

    let (code, text, report) = why(n, "clash");
    assert_eq!(code, 1, "{text}");
    let found = reasons(&report, &format!("{n}/lan"));
    assert!(
        found.iter().any(|r| r.starts_with(
            "the admission webhook refuses this pod today: metadata.annotations[k8s.v1.cni.cncf.io/networks]"
        ) && r.contains("interface name \"eth0\" is already used")),
        "{found:?}"
    );
    assert_eq!(report["webhook"]["verdict"], "refused", "{report}");
}

/// Every reason in a `why -o json` report: the pod's and each network's.
fn all_reasons(report: &Value) -> Vec<String> {
    let of = |findings: &Value| -> Vec<String> {
        findings
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["reason"].as_str().map(str::to_owned))
            .collect()
    };
    let mut all = of(&report["findings"]);
    for network in report["networks"].as_array().into_iter().flatten() {
        all.extend(of(&network["findings"]));
    }
    all
}

#[test]
fn why_gives_the_webhooks_reason_for_every_pod_of_its_refusal_table() {
    // The pods are made while admission is off for the namespace, then it is on again: each pod stands as the
    // webhook would refuse it today (plexus_e2e::admission, the table the controller's tests refuse at creation).
    let ns = KubeNamespace::without_admission("kp-table");
    let n = ns.name.as_str();
    for (name, config) in TABLE_NADS {
        kubectl(
            &["create", "-f", "-"],
            Some(&nad(n, name, config).to_string()),
        );
    }
    let rows = bad_pod_rows(n);
    for (i, (networks, _)) in rows.iter().enumerate() {
        kubectl(
            &["create", "-f", "-"],
            Some(&pod(n, &format!("bad-{i}"), networks).to_string()),
        );
    }
    kubectl(&["label", "namespace", n, "plexus/admission-"], None);
    for (i, (networks, want)) in rows.iter().enumerate() {
        let (code, text, report) = why(n, &format!("bad-{i}"));
        assert_eq!(code, 1, "{networks}: {text}");
        assert_eq!(
            report["webhook"]["verdict"], "refused",
            "{networks}: {report}"
        );
        let reasons = all_reasons(&report);
        assert!(
            reasons.iter().any(|r| r.contains(want.as_str())),
            "{networks}: no reason has {want:?}: {reasons:?}"
        );
        assert!(text.contains(want.as_str()), "{networks}: {text}");
    }
}

#[test]
fn why_names_a_nad_that_namespace_isolation_forbids() {
    let ns = KubeNamespace::new("kp-iso");
    let other = KubeNamespace::new("kp-other");
    let (n, o) = (ns.name.as_str(), other.name.as_str());
    kubectl(
        &["create", "-f", "-"],
        Some(&nad(o, "shared", BRIDGE).to_string()),
    );
    // The live webhook has namespaceIsolation off: it admits the pod.
    let target = format!("{o}/shared");
    kubectl(
        &["create", "-f", "-"],
        Some(&pod(n, "nosy", &target).to_string()),
    );
    // A second replica with namespaceIsolation on reviews the namespace from now on.
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(dir.path(), "isolated");
    let replica = Replica::start_with(
        "isolated",
        &unique("plexus-e2e-iso-"),
        &crt,
        &key,
        &["--no-reconcile", "--namespace-isolation"],
    );
    let _webhook = WebhookCopy::new("plexus-e2e/iso", n, replica.webhook, Some(&crt));
    kubectl(
        &["label", "namespace", n, &format!("plexus-e2e/iso={n}")],
        None,
    );
    let (code, text, report) = eventually("the isolating webhook to refuse the pod", || {
        let (code, text, report) = why(n, "nosy");
        (report["webhook"]["verdict"] == "refused").then_some((code, text, report))
    });
    assert_eq!(code, 1, "{text}");
    let found = reasons(&report, &target);
    assert!(
        found.iter().any(|r| r.contains(&format!(
            "network {target} is in another namespace, which namespaceIsolation forbids"
        ))),
        "{found:?}"
    );
    assert!(
        text.contains("select a NetworkAttachmentDefinition in the pod's own namespace"),
        "{text}"
    );
}

/// Waits for the kubelet's FailedCreatePodSandBox on the pod that carries `needle`.
fn sandbox_failed(namespace: &str, pod: &str, needle: &str) {
    wait_until(
        &format!("FailedCreatePodSandBox on {pod} with {needle:?}"),
        ON_NODE,
        || {
            pod_events(namespace, pod)
                .into_iter()
                .find(|(reason, message)| {
                    reason == "FailedCreatePodSandBox" && message.contains(needle)
                })
        },
        || describe_pod(namespace, pod),
    );
}

#[test]
fn why_on_a_real_node_names_a_missing_nad_and_a_failing_delegate_and_passes_a_healthy_pod() {
    let nodes = Nodes::from_env();
    // Admission off: the webhook would refuse the pod whose NAD is missing.
    let ns = KubeNamespace::without_admission("kp-node");
    let n = ns.name.as_str();
    let (subnet, _) = node_subnet();
    create_nad(
        n,
        "lan",
        Some(&json!({"cniVersion": "1.0.0", "name": "lan", "plugins": [
            {"type": "bridge", "bridge": unique("kp"), "ipam": {"type": "host-local", "subnet": subnet}}
        ]})),
    );
    // macvlan on a master the node does not have: the delegate's ADD fails on the node.
    create_nad(
        n,
        "nomaster",
        Some(
            &json!({"cniVersion": "1.0.0", "name": "nomaster", "plugins": [
                {"type": "macvlan", "master": "nope0", "ipam": {"type": "host-local", "subnet": "198.19.77.0/24"}}
            ]}),
        ),
    );
    create_node_pod(&nodes, 0, n, "healthy", Some("lan@net1"));
    create_node_pod(&nodes, 0, n, "missing", Some("lan, gone"));
    create_node_pod(&nodes, 0, n, "failing", Some("nomaster"));

    wait_ready(n, "healthy", ON_NODE);
    let (code, text, report) = eventually("NetworksReady on the healthy pod", || {
        let seen = why(n, "healthy");
        (seen.2["networksReady"]["status"] == "True").then_some(seen)
    });
    assert_eq!(code, 0, "{text}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["networks"][0]["attached"], true, "{report}");
    assert!(
        text.contains(&format!("{n}/lan as net1: attached (net1, ")),
        "{text}"
    );

    sandbox_failed(n, "missing", "no such NetworkAttachmentDefinition");
    let (code, text, report) = why(n, "missing");
    assert_eq!(code, 1, "{text}");
    let found = reasons(&report, &format!("{n}/gone"));
    assert!(
        found.contains(&format!(
            "NetworkAttachmentDefinition {n}/gone does not exist"
        )),
        "{found:?}"
    );
    assert!(
        found.iter().any(|r| r.starts_with(&format!(
            "the node ({}) could not attach it: ",
            nodes.name(0)
        ))),
        "{found:?}"
    );
    // `lan` is fine; nothing is attached only because the sandbox is not made.
    assert!(
        reasons(&report, &format!("{n}/lan"))
            .iter()
            .all(|r| !r.contains("does not exist"))
    );

    sandbox_failed(n, "failing", "delegate \"macvlan\" ADD failed");
    let (code, text, report) = why(n, "failing");
    assert_eq!(code, 1, "{text}");
    let found = reasons(&report, &format!("{n}/nomaster"));
    assert!(
        found.iter().any(|r| r.starts_with(&format!(
            "the node ({}) could not attach it: ",
            nodes.name(0)
        )) && r.ends_with(&format!(
            "network \"{n}/nomaster\" (interface net1): delegate \"macvlan\" ADD failed: Link not found"
        ))),
        "{found:?}"
    );

    // `status` sees the node's failures and the valid NADs.
    let out = run(&["status", "-n", n, "-o", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "{}",
        String::from_utf8_lossy(&run(&["status", "-n", n]).stdout)
    );
    let nads: Vec<&str> = status["nads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["valid"] == true)
        .map(|r| r["nad"].as_str().unwrap())
        .collect();
    assert_eq!(nads.len(), 2, "{status}");
    let node = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == nodes.name(0))
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(node["podsWithNetworks"], 3, "{status}");
    assert!(
        node["sandboxFailuresLastHour"].as_i64().unwrap() >= 2,
        "{status}"
    );
}

/// A thick-mode pod on a node whose plexus-daemon is stopped: the shim's code 11 reaches the kubelet's event, and `why`
/// names the daemon's socket as the cause. (The second node, so that the other tests' pods on the first are not held.)
#[test]
fn why_on_a_real_node_names_a_stopped_daemon() {
    let nodes = Nodes::from_env();
    let node = 1;
    let ns = KubeNamespace::new("kp-daemon");
    let n = ns.name.as_str();
    let (subnet, _) = node_subnet();
    create_nad(
        n,
        "lan",
        Some(&json!({"cniVersion": "1.0.0", "name": "lan", "plugins": [
            {"type": "bridge", "bridge": unique("kd"), "ipam": {"type": "host-local", "subnet": subnet}}
        ]})),
    );
    nodes.stop(node, "plexus-daemon");
    struct Restart<'a>(&'a Nodes, usize);
    impl Drop for Restart<'_> {
        fn drop(&mut self) {
            self.0.restart(self.1, "plexus-daemon");
        }
    }
    let restart = Restart(&nodes, node);
    create_node_pod_in(NodeMode::Thick, &nodes, node, n, "stranded", Some("lan"));
    sandbox_failed(n, "stranded", "plexus.sock");
    let (code, text, report) = why(n, "stranded");
    assert_eq!(code, 1, "{text}");
    let found = all_reasons(&report);
    assert!(
        found
            .iter()
            .any(|r| r.contains("plexus.sock") && r.contains("plexus daemon")),
        "{found:?}"
    );
    // Started again, the daemon attaches the pod at the kubelet's next try, and `why` has nothing to say.
    drop(restart);
    wait_ready(n, "stranded", ON_NODE);
    let (code, text, _) = eventually("NetworksReady on the stranded pod", || {
        let seen = why(n, "stranded");
        (seen.2["networksReady"]["status"] == "True").then_some(seen)
    });
    assert_eq!(code, 0, "{text}");
}
