//! The Helm chart (charts/plexus) installed with `helm install` onto a real node that runs only its cluster network.
//!
//! The node test starts a bare cluster of its own (`PLEXUS_E2E_BARE=1 e2e/cluster up --node`: no Plexus conf, no
//! harness controller, no CRD), then runs itself again as a child process with that cluster's `e2e/cluster env`
//! (KUBECONFIG, PLEXUS_NODE_VALUES, NODE_*), so that every helper works against it; the cluster goes down when the
//! test ends, passed or failed. Against that cluster the child walks the release's life, in order: install (the node
//! pod writes the conf, a pod with two NADs gets them), the webhook through its Service, the RBAC of both
//! ServiceAccounts, server-side dry runs of several value sets, Multus's own samples, a token rotation, an upgrade that
//! rolls the DaemonSet while pods are being created, and the uninstall.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_e2e::node::*;
use plexus_e2e::*;
use serde_json::Value;

const RELEASE: &str = "plexus";
const NAMESPACE: &str = "plexus-system";
const NODE_SA: &str = "system:serviceaccount:plexus-system:plexus-node";
const CONTROLLER_SA: &str = "system:serviceaccount:plexus-system:plexus-controller";
/// Covers the kubelet's sandbox retries (its back-off starts at 10 s).
const READY: Duration = Duration::from_secs(120);

fn chart() -> String {
    repo().join("charts/plexus").display().to_string()
}

fn node_values() -> String {
    std::env::var("PLEXUS_NODE_VALUES").expect(
        "PLEXUS_NODE_VALUES is not set: PLEXUS_E2E_BARE=1 e2e/cluster up --node, then eval \"$(e2e/cluster env)\"",
    )
}

fn helm_output(args: &[&str]) -> Output {
    // helm reads KUBECONFIG from the environment (lint needs no cluster).
    Command::new(tool_bin("helm").join("helm"))
        .args(args)
        .output()
        .expect("run helm")
}

fn helm(args: &[&str]) -> String {
    let out = helm_output(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The node's CNI dirs on the host (the values file's cni.binDir and cni.confDir).
fn cni_dirs(nodes: &Nodes) -> (PathBuf, PathBuf) {
    let dir = nodes.node_dir(0);
    (dir.join("cni-bin"), dir.join("cni-conf"))
}

fn node_pod() -> Option<(String, String)> {
    let out = kubectl_output(
        &[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/component=node",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pods: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 2)
        .collect();
    (pods.len() == 1).then(|| (pods[0][0].to_owned(), pods[0][1].to_owned()))
}

fn rollout(kind_name: &str) {
    kubectl(
        &[
            "rollout",
            "status",
            "-n",
            NAMESPACE,
            kind_name,
            "--timeout=180s",
        ],
        None,
    );
}

/// The interfaces of the pod's network-status, in order, after it is Ready.
fn status_interfaces(namespace: &str, pod: &str) -> Vec<String> {
    network_status(namespace, pod)
        .iter()
        .map(|e| e["interface"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The pod is Ready with eth0 and one interface per NAD, both in the status and inside the pod.
fn assert_networks(namespace: &str, pod: &str, expected: &[&str]) {
    wait_ready(namespace, pod, READY);
    assert_eq!(
        status_interfaces(namespace, pod),
        expected,
        "network-status of {namespace}/{pod}"
    );
    let mut inside: Vec<String> = pod_interfaces(namespace, pod)
        .into_iter()
        .map(|i| i.name)
        .collect();
    let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    inside.sort();
    want.sort();
    assert_eq!(inside, want, "interfaces inside {namespace}/{pod}");
}

/// A NAD whose config is not JSON is refused by plexus-controller's webhook (the API server calls it through the
/// Service, the VWC names no URL).
fn assert_webhook_refuses_a_bad_nad(namespace: &str) {
    let bad = format!(
        r#"{{"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {{"name": "bad", "namespace": "{namespace}"}}, "spec": {{"config": "not json"}}}}"#
    );
    let out = kubectl_output(&["create", "-f", "-"], Some(&bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("denied the request"),
        "a bad NAD was not refused by the webhook: {err}"
    );
}

/// `kubectl auth can-i` as `user`; `resource` may be `resource/name` or `resource:subresource`.
fn can_i(user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let (resource, subresource) = resource.split_once(':').unwrap_or((resource, ""));
    let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
    if !subresource.is_empty() {
        args.extend(["--subresource", subresource]);
    }
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let out = kubectl_output(&args, None);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[test]
fn helm_lint_strict() {
    let out = helm(&["lint", "--strict", &chart()]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    // With values like the local node's, and with everything optional switched on.
    let out = helm(&[
        "lint",
        "--strict",
        &chart(),
        "--set",
        "controller.hostNetwork=true",
        "--set",
        "apiServer.host=127.0.0.1",
        "--set",
        "apiServer.port=6443",
        "--set",
        "samples.enabled=true",
        "--set",
        "webhook.certManager.enabled=true",
        "--set",
        "cni.readinessIndicatorFile=/run/ready",
        "--set",
        "controller.resourceInjection.enabled=true",
        "--set",
        "ipamClaims.installCRD=true",
    ]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    // The schema refuses a typo and an out-of-range value.
    for bad in [
        "node.tokenExpirationSeconds=60",
        "cni.binDir=relative",
        "nodee.mode=thin",
    ] {
        let out = helm_output(&["lint", "--strict", &chart(), "--set", bad]);
        assert!(!out.status.success(), "{bad} passed lint");
    }
}

/// What the chart renders for least privilege: the runtime's default seccomp profile on every pod (thin and thick),
/// the two admission policies and their bindings unless switched off, and the webhook's NetworkPolicy only when asked
/// for, never without the API server's addresses.
#[test]
fn the_chart_renders_seccomp_admission_policies_and_the_network_policy() {
    let render = |set: &[&str]| {
        let chart = chart();
        let mut args = vec!["template", "plexus", chart.as_str(), "-n", NAMESPACE];
        args.extend(set);
        helm_output(&args)
    };
    let text = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for mode in ["thin", "thick"] {
        let rendered = text(render(&["--set", &format!("node.mode={mode}")]));
        let pods = rendered.matches("\n  template:\n").count();
        assert_eq!(pods, 2, "the node DaemonSet and the controller Deployment");
        assert_eq!(
            rendered
                .matches("seccompProfile: {type: RuntimeDefault}")
                .count(),
            pods,
            "{mode}: every pod template has the RuntimeDefault profile"
        );
        // The node's (pods; its status Lease) and the controller's.
        assert_eq!(
            rendered
                .matches("kind: ValidatingAdmissionPolicy\n")
                .count(),
            3
        );
        assert_eq!(
            rendered
                .matches("kind: ValidatingAdmissionPolicyBinding\n")
                .count(),
            3
        );
        assert!(!rendered.contains("kind: NetworkPolicy"));
        assert!(rendered.contains(&format!(
            "request.userInfo.username == \"system:serviceaccount:{NAMESPACE}:plexus-node\""
        )));
    }
    let off = text(render(&["--set", "admissionPolicies.enabled=false"]));
    assert!(!off.contains("ValidatingAdmissionPolicy"), "{off}");
    let without_controller = text(render(&[
        "--set",
        "controller.enabled=false",
        "--set",
        "webhook.enabled=false",
    ]));
    assert_eq!(
        without_controller
            .matches("kind: ValidatingAdmissionPolicy\n")
            .count(),
        2
    );

    let refused = render(&["--set", "webhook.networkPolicy.enabled=true"]);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr)
                .contains("webhook.networkPolicy.apiServerCIDRs must name"),
        "{refused:?}"
    );
    let policy = text(render(&[
        "--set",
        "webhook.networkPolicy.enabled=true",
        "--set",
        "webhook.networkPolicy.apiServerCIDRs={192.0.2.10/32}",
    ]));
    let policy = &policy[policy.find("kind: NetworkPolicy").expect("a NetworkPolicy")..];
    let policy = policy.split("\n---").next().unwrap_or_default();
    assert!(
        policy.contains("- ipBlock: {cidr: \"192.0.2.10/32\"}")
            && policy.contains("- {port: 9443, protocol: TCP}"),
        "{policy}"
    );
    // Without metricsFrom, the metrics port is not opened to anyone.
    assert!(!policy.contains("port: 9464"), "{policy}");
}

#[test]
fn the_nad_webhook_skips_sample_labelled_nads_only_when_samples_are_enabled() {
    let rendered = |samples: &str| {
        helm(&[
            "template",
            "plexus",
            &chart(),
            "--set",
            &format!("samples.enabled={samples}"),
        ])
    };
    let off = rendered("false");
    assert!(
        off.contains("kind: ValidatingWebhookConfiguration"),
        "{off}"
    );
    assert!(!off.contains("plexus.io/sample"), "{off}");
    let on = rendered("true");
    assert!(
        on.contains("matchExpressions: [{key: plexus.io/sample, operator: DoesNotExist}]"),
        "{on}"
    );
}

/// Resource injection is opt-in: the MutatingWebhookConfiguration is rendered only with
/// `controller.resourceInjection.enabled` (and the webhooks on), for pods at CREATE through the controller's Service at
/// `/mutate`, skipping kube-system and opted-out namespaces, with the pods' failure policy, never reinvoked.
#[test]
fn the_mutating_webhook_renders_only_with_resource_injection() {
    let render = |set: &[&str]| {
        let chart = chart();
        let mut args = vec!["template", "plexus", chart.as_str(), "-n", NAMESPACE];
        args.extend(set);
        helm(&args)
    };
    assert!(!render(&[]).contains("MutatingWebhookConfiguration"));
    let on = render(&["--set", "controller.resourceInjection.enabled=true"]);
    let mutating = &on[on
        .find("kind: MutatingWebhookConfiguration")
        .unwrap_or_else(|| panic!("no MutatingWebhookConfiguration: {on}"))..];
    let mutating = mutating.split("\n---").next().unwrap_or_default();
    for want in [
        "- name: inject.pods.plexus.k8s.cni.cncf.io",
        &format!(
            "service: {{name: plexus-controller, namespace: {NAMESPACE}, path: /mutate, port: 443}}"
        ),
        "operations: [CREATE], resources: [pods]",
        "- {key: plexus/admission, operator: NotIn, values: [\"off\"]}",
        "- {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system]}",
        "'k8s.v1.cni.cncf.io/networks' in object.metadata.annotations",
        "failurePolicy: Ignore",
        "reinvocationPolicy: Never",
        "sideEffects: None",
    ] {
        assert!(mutating.contains(want), "{want}\n{mutating}");
    }
    let off = render(&[
        "--set",
        "controller.resourceInjection.enabled=true",
        "--set",
        "webhook.enabled=false",
    ]);
    assert!(!off.contains("MutatingWebhookConfiguration"), "{off}");
    // The schema knows the key and refuses a typo under it.
    let out = helm_output(&[
        "lint",
        "--strict",
        &chart(),
        "--set",
        "controller.resourceInjection.enabeld=true",
    ]);
    assert!(!out.status.success(), "a typo passed lint");
}

/// The IPAMClaim CRD is opt-in (`ipamClaims.installCRD`): rendered only then, exactly the committed
/// `crds/optional/ipamclaims.yaml` (generated from the Rust type), kept by helm on uninstall; the controller's
/// ClusterRole may only `get` IPAMClaims, with or without it.
#[test]
fn the_ipam_claim_crd_renders_only_when_asked_for_and_the_controller_may_only_get_claims() {
    let render = |set: &[&str]| -> Vec<Value> {
        let chart = chart();
        let mut args = vec!["template", "plexus", chart.as_str(), "-n", NAMESPACE];
        args.extend(set);
        serde_saphyr::from_multiple(&helm(&args)).expect("the rendered chart parses")
    };
    let claim_crds = |documents: &[Value]| -> Vec<Value> {
        documents
            .iter()
            .filter(|d| {
                d["kind"] == "CustomResourceDefinition"
                    && d["metadata"]["name"] == "ipamclaims.k8s.cni.cncf.io"
            })
            .cloned()
            .collect()
    };
    let controller_claim_rules = |documents: &[Value]| -> Vec<Value> {
        documents
            .iter()
            .filter(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "plexus-controller")
            .flat_map(|role| role["rules"].as_array().cloned().unwrap_or_default())
            .filter(|rule| {
                rule["resources"].as_array().is_some_and(|r| {
                    r.iter()
                        .any(|r| r.as_str().is_some_and(|r| r.starts_with("ipamclaims")))
                })
            })
            .collect()
    };
    let get_only = serde_json::json!([
        {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["ipamclaims"], "verbs": ["get"]}
    ]);

    let default = render(&[]);
    assert_eq!(
        claim_crds(&default),
        Vec::<Value>::new(),
        "installed by default"
    );
    assert_eq!(Value::Array(controller_claim_rules(&default)), get_only);

    let on = render(&["--set", "ipamClaims.installCRD=true"]);
    let crds = claim_crds(&on);
    assert_eq!(crds.len(), 1, "one IPAMClaim CRD");
    assert_eq!(
        crds[0]["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "{:#}",
        crds[0]["metadata"]
    );
    let committed: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("crds/optional/ipamclaims.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(crds[0]["spec"], committed["spec"]);
    assert_eq!(Value::Array(controller_claim_rules(&on)), get_only);

    // The schema knows the key and refuses a typo under it.
    let out = helm_output(&[
        "lint",
        "--strict",
        &chart(),
        "--set",
        "ipamClaims.installCrd=true",
    ]);
    assert!(!out.status.success(), "a typo passed lint");
}

/// Set in the child process that runs against the bare cluster.
const CHILD: &str = "PLEXUS_CHART_TEST_CHILD";

/// A bare cluster of the test's own, down on drop.
struct BareCluster {
    state: tempfile::TempDir,
}

impl BareCluster {
    fn up() -> Self {
        let cluster = Self {
            state: tempfile::Builder::new()
                .prefix("plexus-e2e-chart.")
                .tempdir()
                .unwrap(),
        };
        let status = cluster
            .command(&["up", "--node"])
            .env("PLEXUS_E2E_BARE", "1")
            .stdout(Stdio::null())
            .status()
            .expect("run e2e/cluster");
        assert!(
            status.success(),
            "PLEXUS_E2E_BARE=1 e2e/cluster up --node failed"
        );
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(repo().join("e2e/cluster"));
        cmd.args(args).env("PLEXUS_E2E_STATE", self.state.path());
        cmd
    }

    /// `e2e/cluster env`: its NAME='value' lines (values single-quoted by the script).
    fn env(&self) -> Vec<(String, String)> {
        let out = self
            .command(&["env"])
            .output()
            .expect("run e2e/cluster env");
        assert!(out.status.success(), "e2e/cluster env failed");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                let v = v
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .unwrap_or(v);
                (k.to_owned(), v.replace("'\\''", "'"))
            })
            .collect()
    }
}

impl Drop for BareCluster {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).stdout(Stdio::null()).status();
        // `down` leaves the lock file beside the state dir (what parallel callers wait on); nobody else uses this one.
        let mut lock = self.state.path().as_os_str().to_owned();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}

#[test]
fn the_chart_installs_upgrades_and_uninstalls_on_a_real_node() {
    if std::env::var_os(CHILD).is_some() {
        return chart_lifecycle();
    }
    let cluster = BareCluster::up();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_chart_installs_upgrades_and_uninstalls_on_a_real_node",
            "--nocapture",
        ])
        .envs(cluster.env())
        .env(CHILD, "1")
        .stderr(Stdio::inherit())
        .output()
        .expect("run the test binary again");
    // The child's own report, indented so that a count over this run's "test result:" lines counts the test once.
    let report = String::from_utf8_lossy(&child.stdout);
    for line in report.lines() {
        println!("    child| {line}");
    }
    assert!(
        child.status.success(),
        "the chart's life on a bare node failed (its output is above)"
    );
    // `--exact` with a name that matched nothing would pass having run nothing.
    assert!(
        report.contains("test result: ok. 1 passed; 0 failed"),
        "the child did not run exactly this one test"
    );
}

/// Against the bare cluster (in the child process): install, use, upgrade, uninstall.
fn chart_lifecycle() {
    let nodes = Nodes::from_env();

    let (bin_dir, conf_dir) = cni_dirs(&nodes);
    let conf = conf_dir.join("00-plexus.conflist");
    let ns = KubeNamespace::new("chart");
    let (bridge_subnet, bridge_prefix) = node_subnet();
    let (macvlan_subnet, _) = node_subnet();
    assert!(
        !conf.exists() && !bin_dir.join("plexus").exists(),
        "a bare node"
    );

    // ---- install, and the first pod with all its networks ----------------------------------------------------------
    // The admin makes the namespace (helm uninstall leaves a namespace it created with --create-namespace).
    kubectl(&["create", "namespace", NAMESPACE], None);
    let started = Instant::now();
    helm(&[
        "install",
        RELEASE,
        &chart(),
        "-n",
        NAMESPACE,
        "-f",
        &node_values(),
        "--set",
        "samples.enabled=true",
        "--set",
        &format!("samples.namespace={}", ns.name),
        "--set",
        &format!("samples.bridge.subnet={bridge_subnet}"),
        "--set",
        &format!("samples.macvlan.master={}", nodes.lan_if),
        "--set",
        &format!("samples.macvlan.subnet={macvlan_subnet}"),
    ]);
    let installed = started.elapsed();
    wait_until(
        "the installer's conf",
        READY,
        || conf.exists().then_some(()),
        || {
            format!(
                "{:?}",
                kubectl_output(&["get", "pods", "-A", "-o", "wide"], None)
            )
        },
    );
    let conf_written = started.elapsed();
    create_node_pod(
        &nodes,
        0,
        &ns.name,
        "first",
        Some("sample-bridge, sample-macvlan"),
    );
    assert_networks(&ns.name, "first", &["eth0", "net1", "net2"]);
    let first_pod = started.elapsed();
    eprintln!(
        "[chart] helm install returned after {:.1}s, conf on the node after {:.1}s, first pod with all its networks \
         Ready after {:.1}s",
        installed.as_secs_f64(),
        conf_written.as_secs_f64(),
        first_pod.as_secs_f64()
    );
    let status = network_status(&ns.name, "first");
    assert_eq!(status[1]["name"], format!("{}/sample-bridge", ns.name));
    assert!(
        status[1]["ips"][0]
            .as_str()
            .is_some_and(|ip| ip.starts_with(&format!("{bridge_prefix}."))),
        "{status:?}"
    );

    // What the installer wrote: the binary, a 0600 conf delegating to the cluster network, a 0600 kubeconfig.
    let written: Value = serde_json::from_slice(&std::fs::read(&conf).unwrap()).unwrap();
    assert_eq!(written["plugins"][0]["type"], "plexus");
    assert_eq!(written["plugins"][0]["delegates"][0]["name"], "pods");
    assert!(bin_dir.join("plexus").is_file());
    // Thick mode's plugin comes with it, from the image's /usr/local/bin.
    assert!(bin_dir.join("plexus-shim").is_file());
    let kubeconfig_file = conf_dir.join("plexus.d/plexus.kubeconfig");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kubeconfig_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    rollout("deployment/plexus-controller");

    // ---- the node's status Lease, as `kubectl plexus status` shows it ----------------------------------------------
    let row = node_status_until(nodes.name(0), "the installer's status (thin)", |r| {
        r["plexus"]["install"]["mode"] == "thin"
    });
    let install = &row["plexus"]["install"];
    assert_eq!(install["confInPlace"], true, "{row}");
    assert_eq!(install["conf"], conf.display().to_string(), "{row}");
    assert_eq!(
        install["clusterNetwork"],
        conf_dir.join("10-pods.conflist").display().to_string(),
        "{row}"
    );
    assert!(
        install["version"]
            .as_str()
            .is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION"))),
        "{row}"
    );
    assert_eq!(row["plexus"]["problems"], Value::Null, "{row}");
    assert_eq!(
        row["plexus"]["lease"],
        format!("{NAMESPACE}/plexus-node-{}", nodes.name(0))
    );

    // ---- the image's own plexus, with arguments: the installer (its readiness probe, `install --check`, passed) ----
    let (node_pod_name, _) = node_pod().expect("one node pod");
    let help = kubectl(
        &[
            "exec",
            "-n",
            NAMESPACE,
            &node_pod_name,
            "-c",
            "install",
            "--",
            "/usr/local/bin/plexus",
            "install",
            "--help",
        ],
        None,
    );
    assert!(
        help.contains("Usage: plexus install") && help.contains("--check"),
        "{help}"
    );

    // ---- the webhook, called by the API server through the controller's Service ------------------------------------
    let vwc: Value = serde_json::from_str(&kubectl(
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
    assert_eq!(
        vwc["webhooks"][0]["clientConfig"]["service"]["name"],
        "plexus-controller"
    );
    assert!(vwc["webhooks"][0]["clientConfig"].get("url").is_none());
    assert_webhook_refuses_a_bad_nad(&ns.name);

    // ---- RBAC of the two ServiceAccounts ----------------------------------------------------------------------------
    for (verb, resource) in [
        ("get", "pods"),
        ("patch", "pods"),
        ("get", "network-attachment-definitions.k8s.cni.cncf.io"),
        ("create", "events"),
        ("list", "resourceslices.resource.k8s.io"),
        ("patch", "resourceclaims.resource.k8s.io:status"),
    ] {
        assert!(
            can_i(NODE_SA, verb, resource, None),
            "node may not {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("list", "pods"),
        ("delete", "pods"),
        ("create", "pods"),
        ("update", "network-attachment-definitions.k8s.cni.cncf.io"),
        ("list", "network-attachment-definitions.k8s.cni.cncf.io"),
        ("get", "configmaps"),
        ("get", "nodes"),
        ("get", "resourceclaims.resource.k8s.io"),
        ("watch", "resourceslices.resource.k8s.io"),
    ] {
        assert!(
            !can_i(NODE_SA, verb, resource, None),
            "node may {verb} {resource}"
        );
    }
    assert!(can_i(
        NODE_SA,
        "get",
        "daemonsets/plexus-node",
        Some(NAMESPACE)
    ));
    assert!(!can_i(NODE_SA, "get", "daemonsets/other", Some(NAMESPACE)));
    assert!(!can_i(
        NODE_SA,
        "delete",
        "daemonsets/plexus-node",
        Some(NAMESPACE)
    ));
    for (verb, resource) in [
        ("watch", "pods"),
        ("list", "pods"),
        ("patch", "pods:status"),
        ("watch", "network-attachment-definitions.k8s.cni.cncf.io"),
        (
            "patch",
            "network-attachment-definitions.k8s.cni.cncf.io:status",
        ),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(
            can_i(CONTROLLER_SA, verb, resource, None),
            "controller may not {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("delete", "pods"),
        ("patch", "pods"),
        ("update", "network-attachment-definitions.k8s.cni.cncf.io"),
        ("delete", "network-attachment-definitions.k8s.cni.cncf.io"),
        ("get", "configmaps"),
    ] {
        assert!(
            !can_i(CONTROLLER_SA, verb, resource, None),
            "controller may {verb} {resource}"
        );
    }
    assert!(can_i(
        CONTROLLER_SA,
        "update",
        "leases/plexus-controller",
        Some(NAMESPACE)
    ));
    assert!(!can_i(
        CONTROLLER_SA,
        "update",
        "leases/other",
        Some(NAMESPACE)
    ));
    assert!(!can_i(CONTROLLER_SA, "create", "leases", Some(NAMESPACE)));

    // ---- least privilege held by the API server (the chart's ValidatingAdmissionPolicies) ----------------------------
    let server = kubectl(
        &[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
        None,
    );
    let server = server.trim().to_owned();
    admission_policies(&nodes, &server, &kubeconfig_file, &ns.name);

    // ---- server-side dry runs of other value sets --------------------------------------------------------------------
    let dry = KubeNamespace::new("chart-dry");
    for set in [
        vec![],
        vec!["-f", &node_values(), "--set", "samples.enabled=true"],
        vec![
            "--set",
            "controller.enabled=false",
            "--set",
            "webhook.enabled=false",
        ],
        vec![
            "--set",
            "webhook.enabled=false",
            "--set",
            "controller.replicas=3",
        ],
        vec![
            "--set",
            "cni.clusterNetwork=k8s-pod-network",
            "--set",
            "cni.readinessIndicatorFile=/run/flannel/ready",
            "--set",
            "plugin.namespaceIsolation=true",
            "--set",
            "plugin.defaultNetworks={extra}",
            "--set",
            "plugin.logFile=/var/log/plexus.log",
            "--set",
            "cni.cniVersion=1.1.0",
        ],
        vec!["--set", "webhook.certManager.enabled=true"],
        vec![
            "--set",
            "node.mode=thick",
            "--set",
            "node.daemon.metricsPort=9475",
        ],
        vec![
            "--set",
            "admissionPolicies.enabled=false",
            "--set",
            "controller.maxConcurrentReviews=8",
            "--set-json",
            "controller.reviewTimeoutSeconds=2.5",
        ],
        vec![
            "--set",
            "webhook.networkPolicy.enabled=true",
            "--set",
            "webhook.networkPolicy.apiServerCIDRs={198.18.0.1/32,10.0.0.0/8}",
            "--set-json",
            r#"webhook.networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#,
        ],
    ] {
        let chart = chart();
        let mut args = vec!["template", "dry", &chart, "-n", &dry.name];
        args.extend(set.iter().copied());
        let rendered = helm(&args);
        // cert-manager's kinds are not served here: check they are rendered, validate the rest.
        let docs: Vec<&str> = rendered
            .split("\n---")
            .filter(|d| !d.contains("apiVersion: cert-manager.io/"))
            .collect();
        if set.contains(&"webhook.certManager.enabled=true") {
            assert!(rendered.contains("kind: Certificate") && rendered.contains("inject-ca-from"));
        }
        let out = kubectl_output(
            &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
            Some(&docs.join("\n---")),
        );
        assert!(
            out.status.success(),
            "server-side dry run of {set:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // ---- Multus's samples, unchanged ----------------------------------------------------------------------------------
    multus_samples(&nodes, &ns.name, &macvlan_subnet);

    // ---- token rotation, written the way the kubelet writes a projected volume ------------------------------------
    // Two rotations: tokens bound to pods of the test's own on the node (the admission policy needs the node name a
    // pod-bound token carries), so the first one can be made invalid (deleting the object a token is bound to ends
    // it, as expiry does; a TokenRequest lives at least 10 minutes).
    for pod in ["rotation-a", "rotation-b"] {
        create_host_network_pod(&nodes, NAMESPACE, pod);
    }
    let first = rotate_token(&nodes, &kubeconfig_file, "rotation-a");
    let server = server.as_str();
    create_node_pod(
        &nodes,
        0,
        &ns.name,
        "first-token",
        Some("sample-bridge, sample-macvlan"),
    );
    assert_networks(&ns.name, "first-token", &["eth0", "net1", "net2"]);
    // Only the token: no client certificate of the test's own kubeconfig rides along.
    let whoami = |token: &str| {
        kubectl_output(
            &[
                "--kubeconfig=/dev/null",
                &format!("--server={server}"),
                "--insecure-skip-tls-verify",
                &format!("--token={token}"),
                "auth",
                "whoami",
            ],
            None,
        )
    };
    let valid = whoami(&first);
    assert!(
        valid.status.success() && String::from_utf8_lossy(&valid.stdout).contains("plexus-node"),
        "the first token works before its Secret is deleted: {valid:?}"
    );
    rotate_token(&nodes, &kubeconfig_file, "rotation-b");
    force_delete_pod(NAMESPACE, "rotation-a");
    wait_until(
        "the first token to be refused by the API server",
        Duration::from_secs(30),
        || {
            let out = whoami(&first);
            (!out.status.success()).then_some(())
        },
        || "the first token is still accepted".to_owned(),
    );
    create_node_pod(
        &nodes,
        0,
        &ns.name,
        "after-rotation",
        Some("sample-bridge, sample-macvlan"),
    );
    assert_networks(&ns.name, "after-rotation", &["eth0", "net1", "net2"]);

    // ---- upgrade, the DaemonSet rolled while pods are being created ------------------------------------------------
    let (old_pod, old_uid) = node_pod().expect("one node pod");
    let conf_missing = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (conf, missing, stop) = (conf.clone(), conf_missing.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !conf.exists() {
                    missing.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let created = Arc::new(Mutex::new(Vec::new()));
    let creator = {
        let (nodes, ns, created) = (nodes.clone(), ns.name.clone(), created.clone());
        std::thread::spawn(move || {
            for i in 0..10 {
                let name = format!("during-{i}");
                create_node_pod(&nodes, 0, &ns, &name, Some("sample-bridge, sample-macvlan"));
                created.lock().unwrap().push(name);
                std::thread::sleep(Duration::from_millis(600));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    helm(&[
        "upgrade",
        RELEASE,
        &chart(),
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "node.podAnnotations.rolled=yes",
    ]);
    rollout("daemonset/plexus-node");
    creator.join().unwrap();
    let new = wait_until(
        "the old node pod gone",
        READY,
        || node_pod().filter(|(_, uid)| *uid != old_uid),
        || format!("old pod {old_pod}"),
    );
    eprintln!("[chart] DaemonSet rolled: {old_pod} → {}", new.0);
    for pod in created.lock().unwrap().iter() {
        assert_networks(&ns.name, pod, &["eth0", "net1", "net2"]);
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(
        !conf_missing.load(Ordering::Relaxed),
        "the conf was missing during the upgrade"
    );

    // ---- thin → thick by helm upgrade ----------------------------------------------------------------------------
    let thin_uid = node_pod().expect("one node pod").1;
    helm(&[
        "upgrade",
        RELEASE,
        &chart(),
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "node.mode=thick",
    ]);
    rollout("daemonset/plexus-node");
    wait_until(
        "the thin node pod gone",
        READY,
        || node_pod().filter(|(_, uid)| *uid != thin_uid),
        || format!("{:?}", node_pod()),
    );
    let socket_dir = nodes.node_dir(0).join("run/plexus");
    let shim_conf = wait_until(
        "a shim conf pointing at the daemon's socket",
        READY,
        || {
            let c: Value = serde_json::from_slice(&std::fs::read(&conf).ok()?).ok()?;
            (c["plugins"][0]["daemonSocketDir"] == "/run/plexus").then_some(c)
        },
        || String::from_utf8_lossy(&std::fs::read(&conf).unwrap_or_default()).into_owned(),
    );
    assert!(socket_dir.join("plexus.sock").exists(), "no daemon socket");
    assert_eq!(
        shim_conf["plugins"][0]["type"], "plexus-shim",
        "{shim_conf}"
    );
    assert!(
        !kubeconfig_file.exists(),
        "thick mode leaves no token on the host"
    );
    // Two upgrades later the webhook's certificate (kept by the chart's lookup) still matches its caBundle.
    assert_webhook_refuses_a_bad_nad(&ns.name);
    assert!(
        can_i(NODE_SA, "watch", "pods", None),
        "thick: the daemon watches pods"
    );
    create_node_pod(
        &nodes,
        0,
        &ns.name,
        "thick",
        Some("sample-bridge, sample-macvlan"),
    );
    assert_networks(&ns.name, "thick", &["eth0", "net1", "net2"]);
    let row = node_status_until(nodes.name(0), "the daemon's status (thick)", |r| {
        r["plexus"]["install"]["mode"] == "thick" && r["plexus"]["daemon"]["ready"] == true
    });
    assert_eq!(row["plexus"]["problems"], Value::Null, "{row}");
    assert!(
        row["plexus"]["daemon"]["records"].as_u64().unwrap() >= 1,
        "{row}"
    );
    // A pod whose delegate fails on the node: the daemon says so in its Lease, and `why` shows it.
    create_nad(
        &ns.name,
        "nomaster",
        Some(
            &serde_json::json!({"cniVersion": "1.0.0", "name": "nomaster", "plugins": [
                {"type": "macvlan", "master": "nope0", "ipam": {"type": "host-local", "subnet": "198.19.78.0/24"}}
            ]}),
        ),
    );
    create_node_pod(&nodes, 0, &ns.name, "failing", Some("nomaster"));
    let network = format!("{}/nomaster", ns.name);
    let row = node_status_until(nodes.name(0), "the daemon's failure in its status", |r| {
        r["plexus"]["daemon"]["failures"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["pod"] == format!("{}/failing", ns.name)))
    });
    let failure = row["plexus"]["daemon"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["pod"] == format!("{}/failing", ns.name))
        .unwrap();
    assert_eq!(failure["command"], "ADD", "{failure}");
    assert!(
        failure["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("\"{network}\"")) && m.contains("macvlan")),
        "{failure}"
    );
    let why = kubectl_plexus(&["why", "failing", "-n", &ns.name, "-o", "json"]);
    assert_eq!(why.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&why.stdout).unwrap();
    assert!(
        report["daemonFailures"]
            .as_array()
            .is_some_and(|f| !f.is_empty() && f[0]["pod"] == format!("{}/failing", ns.name)),
        "{report}"
    );
    println!(
        "$ kubectl plexus why failing -n {}\n{}",
        ns.name,
        String::from_utf8_lossy(&kubectl_plexus(&["why", "failing", "-n", &ns.name]).stdout)
    );
    force_delete_pod(&ns.name, "failing");

    // ---- uninstall: no object but the CRD, no file on the host --------------------------------------------------------
    // The pods created in thin mode are deleted through the daemon (it reads the same records).
    let mut pods = vec![
        "first".to_owned(),
        "first-token".to_owned(),
        "after-rotation".to_owned(),
        "thick".to_owned(),
    ];
    pods.extend(created.lock().unwrap().iter().cloned());
    pods.extend(["multus-samplepod".to_owned(), "multus-jsonpod".to_owned()]);
    for pod in &pods {
        delete_pod(&ns.name, pod);
    }
    // The second rotation's token is long out of use (the upgrades gave the node pod new ones).
    force_delete_pod(NAMESPACE, "rotation-b");
    helm(&[
        "uninstall",
        RELEASE,
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout=120s",
    ]);
    wait_until(
        "the node's files removed",
        READY,
        || {
            (!conf.exists()
                && !bin_dir.join("plexus").exists()
                && !bin_dir.join("plexus-shim").exists())
            .then_some(())
        },
        || format!("{:?}", files_in(&conf_dir)),
    );
    assert_eq!(files_in(&conf_dir), ["10-pods.conflist"]);
    assert!(!conf_dir.join("plexus.d").exists());
    assert!(files_in(&nodes.records_dir(0)).is_empty());
    assert!(
        !socket_dir.join("plexus.sock").exists(),
        "the daemon's socket is left"
    );
    let left = kubectl(
        &[
            "get",
            "clusterroles,clusterrolebindings,validatingwebhookconfigurations,validatingadmissionpolicies,\
             validatingadmissionpolicybindings,daemonsets,deployments,services,serviceaccounts,configmaps,secrets,roles,\
             rolebindings,leases,network-attachment-definitions,networkpolicies",
            "-A",
            "-l",
            "app.kubernetes.io/instance=plexus",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(left.trim(), "", "objects left after helm uninstall");
    let left = kubectl(
        &[
            "get",
            "all,leases,secrets,configmaps",
            "-n",
            NAMESPACE,
            "-o",
            "name",
        ],
        None,
    );
    let left: Vec<&str> = left
        .lines()
        .filter(|l| *l != "configmap/kube-root-ca.crt" && !l.starts_with("pod/"))
        .collect();
    assert!(left.is_empty(), "left in {NAMESPACE}: {left:?}");
    kubectl(
        &[
            "get",
            "crd",
            "network-attachment-definitions.k8s.cni.cncf.io",
        ],
        None,
    );
    kubectl(&["delete", "namespace", NAMESPACE, "--wait=false"], None);
}

/// A pod of the node ServiceAccount on the node that needs no network of Plexus's (host network): what the rotation's
/// tokens are bound to.
fn create_host_network_pod(nodes: &Nodes, namespace: &str, name: &str) {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": nodes.name(0), "hostNetwork": true, "terminationGracePeriodSeconds": 0,
            // A token can only be bound to a pod of its own ServiceAccount.
            "serviceAccountName": "plexus-node", "automountServiceAccountToken": false,
            "tolerations": [{"key": NODE_TAINT, "operator": "Exists"}],
            "containers": [{"name": "sleep", "image": nodes.image, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]}]
        }
    });
    kubectl(&["apply", "-f", "-"], Some(&pod.to_string()));
}

/// Gone from the API server at once (what a token bound to it needs to stop working).
/// `kubectl plexus status -o json`'s row of `node`, once `ready` holds for it; the text output is printed.
fn node_status_until(node: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let text = || String::from_utf8_lossy(&kubectl_plexus(&["status"]).stdout).into_owned();
    let row = wait_until(
        what,
        READY,
        || {
            let out = kubectl_plexus(&["status", "-o", "json"]);
            let status: Value = serde_json::from_slice(&out.stdout).ok()?;
            status["nodes"]
                .as_array()?
                .iter()
                .find(|r| r["node"] == node)
                .filter(|r| ready(r))
                .cloned()
        },
        text,
    );
    println!("$ kubectl plexus status\n{}", text());
    row
}

fn force_delete_pod(namespace: &str, name: &str) {
    kubectl(
        &[
            "delete",
            "pod",
            name,
            "-n",
            namespace,
            "--grace-period=0",
            "--force",
        ],
        None,
    );
}

/// kubectl with only `token` as credentials (no client certificate of the test's own kubeconfig rides along).
fn as_token(server: &str, token: &str, args: &[&str]) -> Output {
    let mut all = vec![
        "--kubeconfig=/dev/null".to_owned(),
        format!("--server={server}"),
        "--insecure-skip-tls-verify".to_owned(),
        format!("--token={token}"),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    kubectl_output(&all, None)
}

/// `what` was refused by the API server, by the named policy, with its message.
fn assert_refused(out: &Output, what: &str, policy: &str, message: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!(
                "ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request"
            ))
            && err.contains(message),
        "{what} was not refused by {policy} with {message:?}: {err}"
    );
}

/// The chart's ValidatingAdmissionPolicies against real tokens: the node's (the one the installer wrote into the
/// plugin's kubeconfig, projected by the kubelet and bound to the node pod) may write network-status on its own
/// node's pods and nothing else; the controller's may change a pod's NetworksReady condition and nothing else.
fn admission_policies(nodes: &Nodes, server: &str, kubeconfig_file: &Path, namespace: &str) {
    const STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
    let doc: Value = serde_json::from_slice(&std::fs::read(kubeconfig_file).unwrap()).unwrap();
    let node_token = doc["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // What the API server makes of it: the node ServiceAccount, and the name of the node the pod runs on.
    let who = as_token(server, &node_token, &["auth", "whoami", "-o", "json"]);
    assert!(who.status.success(), "{who:?}");
    let who: Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], NODE_SA, "{who}");
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"],
        serde_json::json!([nodes.name(0)]),
        "the plugin's token carries its node's name: {who}"
    );

    // network-status of a pod on its node: allowed (its value, written again).
    let current = pod_annotations(namespace, "first")
        .get(STATUS)
        .cloned()
        .expect("first has network-status");
    let status_patch =
        serde_json::json!({"metadata": {"annotations": {STATUS: current}}}).to_string();
    let patch = |token: &str, pod: &str, body: &str| {
        as_token(
            server,
            token,
            &[
                "patch",
                "pod",
                pod,
                "-n",
                namespace,
                "--type",
                "strategic",
                "-p",
                body,
            ],
        )
    };
    let out = patch(&node_token, "first", &status_patch);
    assert!(out.status.success(), "network-status refused: {out:?}");

    // Anything else of the pod: refused, by the API server, with the policy's reason.
    let only_status = format!("plexus-node may only change the pod's {STATUS} annotation");
    // A strategic merge by container name: only the image changes, which the API server's own validation allows.
    let container = kubectl(
        &[
            "get",
            "pod",
            "first",
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.containers[0].name}",
        ],
        None,
    );
    let image = serde_json::json!({"spec": {"containers": [{"name": container.trim(), "image": "evil:latest"}]}})
        .to_string();
    for body in [
        r#"{"metadata": {"labels": {"plexus-test": "relabelled"}}}"#.to_owned(),
        image,
        r#"{"metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": "other"}}}"#.to_owned(),
    ] {
        let out = patch(&node_token, "first", &body);
        assert_refused(&out, &body, "plexus-node", &only_status);
    }

    // network-status of a pod on another node: refused (a pod bound to a node that has no kubelet here).
    let elsewhere = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere", "namespace": namespace},
        "spec": {"nodeName": "plexus-other-node", "containers": [{"name": "c", "image": nodes.image}]}
    });
    kubectl(&["apply", "-f", "-"], Some(&elsewhere.to_string()));
    let out = patch(&node_token, "elsewhere", &status_patch);
    assert_refused(
        &out,
        "network-status of elsewhere",
        "plexus-node",
        &format!(
            "plexus-node may only change pods of the node its token was issued for ({}), and elsewhere is on \
             plexus-other-node",
            nodes.name(0)
        ),
    );
    kubectl(
        &[
            "delete",
            "pod",
            "elsewhere",
            "-n",
            namespace,
            "--wait=false",
        ],
        None,
    );

    // A token of the node ServiceAccount bound to no pod carries no node: refused even for network-status.
    let unbound = kubectl(
        &[
            "create",
            "token",
            "plexus-node",
            "-n",
            NAMESPACE,
            "--duration",
            "10m",
        ],
        None,
    );
    let out = patch(unbound.trim(), "first", &status_patch);
    assert_refused(
        &out,
        "network-status with an unbound token",
        "plexus-node",
        "a token bound to no node",
    );

    // The node's status Lease: its own node's only, held by its own node. Server-side apply, as the installer writes
    // it (the node has no `get` on Leases, so `kubectl patch`, which reads first, can't be used).
    let own_lease = format!("plexus-node-{}", nodes.name(0));
    let lease_file = std::env::temp_dir().join(format!("plexus-lease-{}.json", std::process::id()));
    let lease_apply = |token: &str, name: &str, holder: &str, verb: &str| {
        std::fs::write(
            &lease_file,
            serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": NAMESPACE,
                    "annotations": {"plexus.io/probe": "1"}},
                "spec": {"holderIdentity": holder}})
            .to_string(),
        )
        .unwrap();
        let file = lease_file.display().to_string();
        let args: Vec<&str> = match verb {
            "apply" => vec![
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=probe",
                "-f",
                &file,
            ],
            _ => vec!["create", "-f", &file],
        };
        let out = as_token(server, token, &args);
        let _ = std::fs::remove_file(&lease_file);
        out
    };
    let out = lease_apply(&node_token, &own_lease, nodes.name(0), "apply");
    assert!(out.status.success(), "its own Lease refused: {out:?}");
    let only_own_lease = format!(
        "plexus-node may only write the status Lease of the node its token was issued for ({own_lease})"
    );
    let out = lease_apply(&node_token, &own_lease, "elsewhere", "apply");
    assert_refused(
        &out,
        "its Lease held by another node",
        "plexus-node-status",
        &only_own_lease,
    );
    let out = lease_apply(&node_token, "plexus-node-elsewhere", "elsewhere", "create");
    assert_refused(
        &out,
        "another node's Lease",
        "plexus-node-status",
        &only_own_lease,
    );
    let out = lease_apply(unbound.trim(), &own_lease, nodes.name(0), "apply");
    assert_refused(
        &out,
        "a Lease with an unbound token",
        "plexus-node-status",
        "a token bound to no node",
    );

    // The controller: the NetworksReady condition through pods/status, nothing else. Its own request (a strategic
    // merge PATCH of pods/status: its RBAC has no GET of pods/status, which kubectl patch would make first), as
    // server-side dry runs: the policies run, nothing is stored, the real controller's condition stays.
    let controller_token = kubectl(
        &[
            "create",
            "token",
            "plexus-controller",
            "-n",
            NAMESPACE,
            "--duration",
            "10m",
        ],
        None,
    );
    let controller_token = controller_token.trim();
    let status_patch = |path: &str, body: &str| -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sk", "-X", "PATCH", "-o", "-", "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {controller_token}")])
            .args(["-H", "Content-Type: application/strategic-merge-patch+json"])
            .args(["--data", body])
            .arg(format!(
                "{server}/api/v1/namespaces/{namespace}/pods/first{path}?dryRun=All"
            ))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or_default();
        (code.trim().parse().unwrap_or(0), body.to_owned())
    };
    let condition = |kind: &str| {
        serde_json::json!({"status": {"conditions": [{"type": kind, "status": "False", "reason": "Test",
            "message": "set by the chart test", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
        .to_string()
    };
    let (code, body) = status_patch("/status", &condition("k8s.cni.cncf.io/NetworksReady"));
    assert_eq!(code, 200, "NetworksReady refused: {body}");
    let refused_by_controller_policy = |path: &str, body: &str, message: &str| {
        let (code, answer) = status_patch(path, body);
        assert!(
            code == 403
                && answer.contains(
                    "ValidatingAdmissionPolicy 'plexus-controller' with binding 'plexus-controller' denied request"
                )
                && answer.contains(message),
            "{path} {body}: {code} {answer}"
        );
    };
    let only_condition =
        "plexus-controller may only change the pod's k8s.cni.cncf.io/NetworksReady condition";
    for body in [
        condition("Ready"),
        r#"{"status": {"podIP": "203.0.113.9", "podIPs": [{"ip": "203.0.113.9"}, {"$patch": "replace"}]}}"#.to_owned(),
        r#"{"status": {"phase": "Failed"}}"#.to_owned(),
    ] {
        refused_by_controller_policy("/status", &body, only_condition);
    }
    refused_by_controller_policy(
        "/status",
        r#"{"metadata": {"labels": {"plexus-test": "relabelled"}}}"#,
        "plexus-controller may not change the pod's spec or metadata",
    );
    // RBAC refuses it the pod itself already; the policy would too.
    let (code, _) = status_patch("", &status_patch_body_of(STATUS));
    assert_eq!(code, 403);
}

/// A merge of one annotation, `[]` as its value.
fn status_patch_body_of(annotation: &str) -> String {
    serde_json::json!({"metadata": {"annotations": {annotation: "[]"}}}).to_string()
}

/// A new token for the node pod (a real TokenRequest bound to the pod, as the kubelet asks for), swapped into the
/// pod's projected service-account volume as the kubelet does it (a new timestamped dir with every file, then the
/// `..data` symlink replaced by a rename): the installer writes it into the plugin's kubeconfig.
fn rotate_token(nodes: &Nodes, kubeconfig_file: &Path, bound_pod: &str) -> String {
    let (_, uid) = node_pod().expect("one node pod");
    let token = kubectl(
        &[
            "create",
            "token",
            "plexus-node",
            "-n",
            NAMESPACE,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            bound_pod,
            "--duration",
            "10m",
        ],
        None,
    );
    let token = token.trim();
    // The volume is a tmpfs the kubelet mounted inside the node's mount namespace: work there.
    let volume =
        format!("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~projected/service-account");
    nodes.exec(
        0,
        &[
            "sh",
            "-c",
            "set -e; cd \"$1\"; current=$(readlink ..data); new=..plexus_test_$3; mkdir \"$new\"; \
             cp \"$current/ca.crt\" \"$current/namespace\" \"$new/\"; \
             printf %s \"$2\" > \"$new/token\"; \
             ln -s \"$new\" ..data_tmp; mv -T ..data_tmp ..data",
            "rotate",
            &volume,
            token,
            bound_pod,
        ],
    );
    wait_until(
        "the plugin's kubeconfig to carry the rotated token",
        Duration::from_secs(20),
        || {
            let text = std::fs::read(kubeconfig_file).ok()?;
            let doc: Value = serde_json::from_slice(&text).ok()?;
            (doc["users"][0]["user"]["token"] == token).then_some(())
        },
        || {
            String::from_utf8_lossy(&std::fs::read(kubeconfig_file).unwrap_or_default())
                .into_owned()
        },
    );
    token.to_owned()
}

/// Multus's quick-start objects as a Multus user has them (NAD configs in Multus's format: a single conf with an
/// old cniVersion; the networks annotation in both forms), applied unchanged: with Plexus installed instead of
/// Multus, the pods get their networks.
fn multus_samples(nodes: &Nodes, namespace: &str, subnet: &str) {
    let base = subnet.trim_end_matches(".0/24");
    let nad = format!(
        r#"apiVersion: "k8s.cni.cncf.io/v1"
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf
  namespace: {namespace}
spec:
  config: '{{
      "cniVersion": "0.3.0",
      "type": "macvlan",
      "master": "{master}",
      "mode": "bridge",
      "ipam": {{
        "type": "host-local",
        "subnet": "{subnet}",
        "rangeStart": "{base}.200",
        "rangeEnd": "{base}.216",
        "gateway": "{base}.1"
      }}
    }}'
"#,
        master = nodes.lan_if
    );
    kubectl(&["apply", "-f", "-"], Some(&nad));
    let pod = |name: &str, networks: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  annotations:
    k8s.v1.cni.cncf.io/networks: '{networks}'
spec:
  nodeName: {node}
  tolerations: [{{key: {taint}, operator: Exists}}]
  terminationGracePeriodSeconds: 2
  dnsPolicy: Default
  containers:
  - name: samplepod
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]
    image: {image}
    imagePullPolicy: Never
"#,
            node = nodes.name(0),
            taint = NODE_TAINT,
            image = nodes.image
        )
    };
    kubectl(
        &["apply", "-f", "-"],
        Some(&pod("multus-samplepod", "macvlan-conf")),
    );
    kubectl(
        &["apply", "-f", "-"],
        Some(&pod(
            "multus-jsonpod",
            r#"[{"name": "macvlan-conf", "interface": "macvlan0"}]"#,
        )),
    );
    assert_networks(namespace, "multus-samplepod", &["eth0", "net1"]);
    assert_networks(namespace, "multus-jsonpod", &["eth0", "macvlan0"]);
    let status = network_status(namespace, "multus-samplepod");
    let ip = status[1]["ips"][0].as_str().unwrap_or_default();
    let last: u32 = ip
        .rsplit('.')
        .next()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    assert!(
        ip.starts_with(&format!("{base}.")) && (200..=216).contains(&last),
        "{status:?}"
    );
}
