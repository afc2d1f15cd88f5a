//! plexus-controller against the real API server: the webhook `e2e/cluster up` registered refuses bad NADs and pods
//! at `kubectl apply` with messages naming the field or element and admits legal input; the reconciler writes NAD
//! status (seen through `kubectl get`), the pod condition NetworksReady and Events; leader election with two
//! replicas; the webhook's failure policies when it is down; certificate reload; clients that connect and stall do
//! not stop the API server's reviews and are disconnected.

#![forbid(unsafe_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use plexus_e2e::controller::*;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
const READY: &str = "k8s.cni.cncf.io/NetworksReady";

/// `kubectl apply` of one object: Ok(stderr) when admitted (warnings are on stderr), Err(stderr) when refused.
fn apply(object: &Value) -> Result<String, String> {
    let out = kubectl_output(&["apply", "-f", "-"], Some(&object.to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stderr)
    } else {
        Err(stderr)
    }
}

fn nad(ns: &str, name: &str, config: Option<&str>) -> Value {
    let mut nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns}
    });
    if let Some(c) = config {
        nad["spec"] = json!({ "config": c });
    }
    nad
}

fn pod(ns: &str, name: &str, networks: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    });
    if let Some(n) = networks {
        pod["metadata"]["annotations"] = json!({ NETWORKS: n });
    }
    pod
}

use plexus_e2e::admission::{BRIDGE, STATIC_IPS, TABLE_NADS, bad_pod_rows};

fn refused(object: &Value, want: &str) {
    let err = apply(object).expect_err(&format!("admitted: {object}"));
    assert!(
        err.contains("denied the request") && err.contains(want),
        "{object}\nwanted: {want}\ngot: {err}"
    );
}

#[test]
fn bad_nads_are_refused_naming_the_field() {
    let ns = KubeNamespace::new("adm-nad");
    let n = &ns.name;
    for (name, config, want) in [
        ("not-json", "{oops", "spec.config is not valid JSON"),
        (
            "a-list",
            "[1]",
            "spec.config must be a JSON object, not a list",
        ),
        (
            "path-type",
            r#"{"cniVersion":"1.0.0","type":"/usr/bin/bridge"}"#,
            r#"plugin type "/usr/bin/bridge" is not a bare binary name"#,
        ),
        (
            "ipam-path",
            r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"../host-local"}}"#,
            "is not a bare binary name",
        ),
        (
            "old-version",
            r#"{"cniVersion":"9.9.9","type":"bridge"}"#,
            r#"asks for CNI version "9.9.9""#,
        ),
        (
            "no-plugins",
            r#"{"cniVersion":"1.0.0","plugins":[]}"#,
            "has no plugins",
        ),
        (
            "no-type",
            r#"{"cniVersion":"1.0.0","plugins":[{"master":"eth0"}]}"#,
            r#"has no "type""#,
        ),
        (
            "reserved",
            r#"{"cniVersion":"1.0.0","type":"bridge","runtimeConfig":{"mac":"x"}}"#,
            r#"spec.config sets "runtimeConfig", a key the container runtime reserves"#,
        ),
        (
            "reserved-prefix",
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge","cni.dev/x":1}]}"#,
            r#"spec.config.plugins[0] sets "cni.dev/x", a key the container runtime reserves"#,
        ),
        (
            "bad-cni-name",
            r#"{"cniVersion":"1.0.0","name":"-x","type":"bridge"}"#,
            r#"network name "-x" is invalid"#,
        ),
    ] {
        refused(&nad(n, name, Some(config)), want);
    }
    let big = format!(
        r#"{{"cniVersion":"1.0.0","type":"bridge","x":"{}"}}"#,
        "a".repeat(70_000)
    );
    refused(
        &nad(n, "too-big", Some(&big)),
        "more than the limit of 65536",
    );
    // An UPDATE is checked too.
    apply(&nad(n, "changes", Some(BRIDGE))).unwrap();
    refused(
        &nad(n, "changes", Some("{")),
        "spec.config is not valid JSON",
    );
    assert!(
        kubectl(&["get", "net-attach-def", "-n", n, "-o", "name"], None)
            .trim()
            .ends_with("/changes")
    );
}

#[test]
fn legal_nads_are_admitted_with_warnings_where_suspicious() {
    let ns = KubeNamespace::new("adm-nadok");
    let n = &ns.name;
    // No spec at all (file-backed, as Multus clusters have them), and an empty config.
    assert_eq!(apply(&nad(n, "from-disk", None)), Ok(String::new()));
    assert_eq!(apply(&nad(n, "empty", Some(""))), Ok(String::new()));
    // A conflist without a top-level name: the NAD's name is used.
    let conflist =
        r#"{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","master":"lo"},{"type":"tuning"}]}"#;
    assert_eq!(apply(&nad(n, "unnamed", Some(conflist))), Ok(String::new()));
    // A CNI name other than the object's: admitted, with a warning (R10).
    let warned = apply(&nad(
        n,
        "mismatch",
        Some(r#"{"cniVersion":"0.3.1","name":"other","type":"bridge"}"#),
    ))
    .expect("admitted");
    assert!(
        warned.contains("Warning:")
            && warned.contains(r#"is "other" but the object is named "mismatch""#),
        "{warned}"
    );
}

#[test]
fn bad_pods_are_refused_naming_the_element() {
    let ns = KubeNamespace::new("adm-pod");
    let n = &ns.name;
    for (name, config) in TABLE_NADS {
        apply(&nad(n, name, Some(config))).unwrap();
    }
    apply(&nad(n, "broken-but-off", None)).unwrap();
    for (i, (networks, want)) in bad_pod_rows(n).iter().enumerate() {
        let object = pod(n, &format!("bad-{i}"), Some(networks));
        refused(&object, want);
        refused(&object, &format!("metadata.annotations[{NETWORKS}]"));
    }
    // A NAD the webhook would have refused, stored where it does not look, selected from a namespace it checks.
    let off = KubeNamespace::without_admission("adm-podoff");
    apply(&nad(&off.name, "broken", Some("{oops"))).unwrap();
    refused(
        &pod(n, "unusable", Some(&format!("{}/broken", off.name))),
        &format!(
            "network {}/broken: NetworkAttachmentDefinition \"broken\": spec.config is not valid JSON",
            off.name
        ),
    );
}

#[test]
fn legal_pods_are_admitted() {
    let ns = KubeNamespace::new("adm-podok");
    let other = KubeNamespace::new("adm-other");
    let n = &ns.name;
    apply(&nad(n, "plain", Some(BRIDGE))).unwrap();
    apply(&nad(&other.name, "shared", None)).unwrap();
    apply(&nad(n, "fixed", Some(STATIC_IPS))).unwrap();
    for (i, networks) in [
        // The same network twice without interface names: net1, net2.
        "plain, plain".to_owned(),
        format!("plain@net1, plain, {}/shared@data0", other.name),
        r#"[{"name":"fixed","ips":["198.18.92.5/24"],"interface":"storage0"},{"name":"plain","default-route":["198.18.92.1"]}]"#.to_owned(),
    ]
    .iter()
    .enumerate()
    {
        assert!(apply(&pod(n, &format!("ok-{i}"), Some(networks))).is_ok(), "{networks}");
    }
    // A capability the network does not declare: admitted with the plugin's warning (Decision 7; refused only with
    // strictCapabilities).
    let warned = apply(&pod(
        n,
        "caps",
        Some(r#"[{"name":"plain","ips":["198.18.92.6/24"]}]"#),
    ))
    .expect("admitted");
    assert!(
        warned.contains("Warning:")
            && warned.contains(r#""ips" was requested but no plugin of the network declares"#),
        "{warned}"
    );
    // No annotation at all: never sent to the webhook.
    apply(&pod(n, "plain-pod", None)).unwrap();
    // A NAD created a moment before the pod that names it (the webhook's cache may not have it yet).
    for i in 0..3 {
        let name = format!("fresh-{i}");
        apply(&nad(n, &name, Some(BRIDGE))).unwrap();
        apply(&pod(n, &format!("fresh-pod-{i}"), Some(&name))).expect("a brand-new NAD is found");
    }
}

#[test]
fn namespaces_with_admission_off_are_not_validated() {
    let ns = KubeNamespace::without_admission("adm-off");
    let n = &ns.name;
    apply(&nad(n, "broken", Some("{oops"))).expect("not validated");
    apply(&pod(n, "dangling", Some("no-such-net,,x"))).expect("not validated");
}

/// The NAD's status as `kubectl get net-attach-def` prints it: (VALID, PODS).
fn columns(ns: &str, name: &str) -> Option<(String, String)> {
    let out = kubectl(
        &["get", "net-attach-def", "-n", ns, name, "--no-headers"],
        None,
    );
    let fields: Vec<&str> = out.split_whitespace().collect();
    (fields.len() == 4).then(|| (fields[1].to_owned(), fields[2].to_owned()))
}

fn set_network_status(ns: &str, pod: &str, status: &Value) {
    let patch = json!({"metadata": {"annotations": {STATUS: status.to_string()}}});
    kubectl(
        &[
            "patch",
            "pod",
            "-n",
            ns,
            pod,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
}

#[test]
fn nad_status_shows_validity_and_attached_pods_in_kubectl_get() {
    let ns = KubeNamespace::without_admission("status");
    let n = &ns.name;
    apply(&nad(n, "good", Some(BRIDGE))).unwrap();
    apply(&nad(
        n,
        "bad",
        Some(r#"{"cniVersion":"1.0.0","type":"../sh"}"#),
    ))
    .unwrap();
    let header = kubectl(&["get", "net-attach-def", "-n", n], None);
    assert!(
        header
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == ["NAME", "VALID", "PODS", "AGE"],
        "{header}"
    );
    eventually("good to be Valid with 0 pods", || {
        (columns(n, "good")? == ("True".into(), "0".into())).then_some(())
    });
    eventually("bad to be invalid", || {
        (columns(n, "bad")?.0 == "False").then_some(())
    });
    let status: Value = serde_json::from_str(&kubectl(
        &["get", "net-attach-def", "-n", n, "bad", "-o", "json"],
        None,
    ))
    .unwrap();
    let condition = &status["status"]["conditions"][0];
    assert_eq!(condition["type"], "Valid");
    assert_eq!(condition["reason"], "Invalid");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("not a bare binary name"),
        "{condition}"
    );
    assert_eq!(
        status["status"]["observedGeneration"],
        status["metadata"]["generation"]
    );

    apply(&pod(n, "user", Some("good"))).unwrap();
    set_network_status(
        n,
        "user",
        &json!([{"name": "pod-net", "interface": "eth0", "default": true},
                                           {"name": format!("{n}/good"), "interface": "net1"}]),
    );
    eventually("PODS to become 1", || {
        (columns(n, "good")?.1 == "1").then_some(())
    });
    kubectl(&["delete", "pod", "-n", n, "user"], None);
    eventually("PODS to drop to 0", || {
        (columns(n, "good")?.1 == "0").then_some(())
    });
}

fn condition(ns: &str, pod: &str) -> Option<Value> {
    let pod: Value =
        serde_json::from_str(&kubectl(&["get", "pod", "-n", ns, pod, "-o", "json"], None)).ok()?;
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == READY)
        .cloned()
}

#[test]
fn pods_get_networks_ready_and_an_event_on_a_mismatch() {
    let ns = KubeNamespace::new("ready");
    let n = &ns.name;
    apply(&nad(n, "a", Some(BRIDGE))).unwrap();
    apply(&nad(n, "b", Some(STATIC_IPS))).unwrap();
    // Pending, no node: the condition says nothing is attached yet.
    apply(&pod(
        n,
        "app",
        Some(r#"[{"name":"a"},{"name":"b","interface":"data0","ips":["198.18.93.5/24"]}]"#),
    ))
    .unwrap();
    let c = eventually("NotAttached", || {
        condition(n, "app").filter(|c| c["reason"] == "NotAttached")
    });
    assert_eq!(c["status"], "False");
    assert!(
        c["message"].as_str().unwrap().contains("no node yet"),
        "{c}"
    );

    // network-status lacks b and has a wrong IP: False, Mismatch, and a Warning event.
    set_network_status(
        n,
        "app",
        &json!([{"name": "pod-net", "interface": "eth0", "default": true},
                                          {"name": format!("{n}/a"), "interface": "net1", "ips": ["198.18.93.7"]}]),
    );
    let c = eventually("Mismatch", || {
        condition(n, "app").filter(|c| c["reason"] == "Mismatch")
    });
    assert_eq!(c["status"], "False");
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "network {n}/b (data0) is missing from network-status"
        )),
        "{message}"
    );
    let events = eventually("a NetworksMismatch event", || {
        let events = pod_events(n, "app");
        events
            .iter()
            .any(|(reason, _)| reason == "NetworksMismatch")
            .then_some(events)
    });
    assert!(
        events
            .iter()
            .any(|(_, m)| m.contains("is missing from network-status")),
        "{events:?}"
    );

    // Everything attached as requested: True.
    set_network_status(
        n,
        "app",
        &json!([{"name": "pod-net", "interface": "eth0", "default": true},
                                          {"name": format!("{n}/a"), "interface": "net1"},
                                          {"name": format!("{n}/b"), "interface": "data0", "ips": ["198.18.93.5"]}]),
    );
    let c = eventually("Attached", || {
        condition(n, "app").filter(|c| c["status"] == "True")
    });
    assert_eq!(c["reason"], "Attached");
}

#[test]
fn a_nad_changed_or_deleted_under_pods_is_reported() {
    let ns = KubeNamespace::new("gone");
    let n = &ns.name;
    apply(&nad(n, "net", Some(BRIDGE))).unwrap();
    apply(&pod(n, "user", Some("net"))).unwrap();
    set_network_status(
        n,
        "user",
        &json!([{"name": format!("{n}/net"), "interface": "net1"}]),
    );
    eventually("PODS 1", || (columns(n, "net")?.1 == "1").then_some(()));
    let changed = BRIDGE.replace("198.18.90.0/24", "198.18.94.0/24");
    apply(&nad(n, "net", Some(&changed))).unwrap();
    eventually("a NetworkChanged event on the pod", || {
        pod_events(n, "user")
            .iter()
            .any(|(r, m)| r == "NetworkChanged" && m.contains(&format!("{n}/net")))
            .then_some(())
    });
    eventually("a NetworkChanged event on the NAD", || {
        pod_events(n, "net")
            .iter()
            .any(|(r, m)| r == "NetworkChanged" && m.contains(&format!("{n}/user")))
            .then_some(())
    });
    kubectl(&["delete", "net-attach-def", "-n", n, "net"], None);
    eventually("a NetworkDeleted event on the pod", || {
        pod_events(n, "user")
            .iter()
            .any(|(r, _)| r == "NetworkDeleted")
            .then_some(())
    });
}

fn lease_holder(lease: &str) -> Option<String> {
    let out = kubectl_output(
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            lease,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn two_replicas_elect_one_leader_and_hand_over() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(dir.path(), "replicas");
    let lease = unique("plexus-e2e-lease-");
    let mut a = Replica::start("replica-a", &lease, &crt, &key);
    let mut b = Replica::start("replica-b", &lease, &crt, &key);
    let first = eventually("one leader", || {
        let holder = lease_holder(&lease)?;
        let (la, lb) = (a.leading()?, b.leading()?);
        match (la, lb, holder.as_str()) {
            (true, false, "replica-a") => Some("a"),
            (false, true, "replica-b") => Some("b"),
            _ => None,
        }
    });
    // Only ever one: check a few more times over a lease period.
    for _ in 0..10 {
        assert!(!(a.leading().unwrap() && b.leading().unwrap()), "both lead");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (leader, follower) = if first == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let follower_id = follower.identity.clone();
    leader.stop();
    eventually("the other replica to take over", || {
        (lease_holder(&lease)? == follower_id && follower.leading()?).then_some(())
    });
    // Its reconcilers run once it leads: their counter shows up with their first reconcile.
    eventually("the new leader's reconcilers to run", || {
        follower
            .get("/metrics")
            .filter(|m| m.contains("plexus_controller_reconciles_total"))
            .map(|_| ())
    });
}

fn served_by(port: u16, ca: &std::path::Path) -> bool {
    Command::new("curl")
        .args(["-sS", "--max-time", "2", "-o", "/dev/null", "--cacert"])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{port}/validate"))
        .status()
        .unwrap()
        .success()
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old_crt, old_key) = self_signed(dir.path(), "old");
    let (new_crt, new_key) = self_signed(dir.path(), "new");
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&old_crt, &crt).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let replica = Replica::start("cert-reload", &unique("plexus-e2e-cert-"), &crt, &key);
    assert!(served_by(replica.webhook, &old_crt));
    assert!(!served_by(replica.webhook, &new_crt));
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_crt, &crt).unwrap();
    eventually("the new certificate to be served", || {
        served_by(replica.webhook, &new_crt).then_some(())
    });
    assert!(!served_by(replica.webhook, &old_crt));
}

#[test]
fn with_the_webhook_down_nads_are_refused_and_pods_admitted() {
    // The namespace is out of reach of the live webhook (admission off) and in reach of the dead copy.
    let ns = KubeNamespace::without_admission("down");
    let label = ns.name.clone();
    kubectl(
        &[
            "label",
            "namespace",
            &ns.name,
            &format!("plexus-e2e/dead-webhook={label}"),
        ],
        None,
    );
    // Pointed at a port nobody listens on.
    let _dead = WebhookCopy::new("plexus-e2e/dead-webhook", &label, free_port(), None);
    let n = &ns.name;
    // failurePolicy Fail for NADs: nothing unchecked lands.
    let err = eventually("the dead webhook to take effect", || {
        apply(&nad(n, "while-down", Some(BRIDGE))).err()
    });
    assert!(
        err.contains("failed calling webhook") && err.contains("nads.plexus.k8s.cni.cncf.io"),
        "{err}"
    );
    // failurePolicy Ignore for pods: an outage never blocks a workload (the plugin checks at ADD).
    apply(&pod(n, "while-down", Some("no-such-net")))
        .expect("pods are admitted while the webhook is down");
    apply(&pod(n, "plain", None)).expect("pods without the annotation never reach the webhook");
}

/// A replica given the node keys that are off by default (`--namespace-isolation`, `--strict-capabilities`,
/// `--allowed-plugin-types`) refuses what each forbids, through the real API server.
#[test]
fn a_replica_with_the_stricter_node_keys_refuses_what_they_forbid() {
    // Out of reach of the live webhook (admission off), in reach of this test's replica.
    let ns = KubeNamespace::without_admission("strict");
    let other = KubeNamespace::without_admission("strict-other");
    let label = ns.name.clone();
    kubectl(
        &[
            "label",
            "namespace",
            &ns.name,
            &format!("plexus-e2e/strict={label}"),
        ],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(dir.path(), "strict");
    let replica = Replica::start_with(
        "strict",
        &unique("plexus-e2e-strict-"),
        &crt,
        &key,
        &[
            "--no-reconcile",
            "--namespace-isolation",
            "--strict-capabilities",
            "--allowed-plugin-types",
            "bridge,host-local",
        ],
    );
    let _webhook = WebhookCopy::new("plexus-e2e/strict", &label, replica.webhook, Some(&crt));
    let n = &ns.name;
    let dhcp = r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"dhcp"}}"#;
    let err = eventually("the replica's webhook to take effect", || {
        apply(&nad(n, "dhcp", Some(dhcp))).err()
    });
    assert!(
        err.contains("denied the request")
            && err.contains(r#"plugin type "dhcp" is not in this node's allowedPluginTypes"#),
        "{err}"
    );
    apply(&nad(n, "plain", Some(BRIDGE))).expect("bridge and host-local are allowed");
    apply(&nad(&other.name, "elsewhere", None)).unwrap();
    let isolated = pod(n, "isolated", Some(&format!("{}/elsewhere", other.name)));
    refused(
        &isolated,
        "is in another namespace, which namespaceIsolation forbids",
    );
    refused(&isolated, &format!("network {}/elsewhere", other.name));
    refused(
        &pod(
            n,
            "caps",
            Some(r#"[{"name":"plain","ips":["198.18.92.6/24"]}]"#),
        ),
        r#"but no plugin of its config declares the "ips" capability (strictCapabilities is on)"#,
    );
    apply(&pod(n, "fine", Some("plain"))).expect("a plain selection is admitted");
}

/// Clients that connect to the webhook and stall: some never start the TLS handshake, some stop in the middle of it,
/// some finish it (openssl s_client) and send half of a request's headers. While they hold their connections, the
/// API server's reviews are answered (a bad NAD is refused by this replica); and the replica closes every one of them
/// (handshake timeout, header read timeout, idle limit), so stalled clients cannot pile up.
#[test]
fn stalled_clients_neither_block_the_api_servers_reviews_nor_stay_connected() {
    use std::io::{Read, Write};
    // Out of reach of the live webhook (admission off), in reach of this test's replica.
    let ns = KubeNamespace::without_admission("loris");
    let label = ns.name.clone();
    kubectl(
        &[
            "label",
            "namespace",
            &ns.name,
            &format!("plexus-e2e/loris={label}"),
        ],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(dir.path(), "loris");
    let replica = Replica::start_with(
        "loris",
        &unique("plexus-e2e-loris-"),
        &crt,
        &key,
        &[
            "--no-reconcile",
            "--tls-handshake-timeout-seconds",
            "2",
            "--header-read-timeout-seconds",
            "2",
            "--connection-idle-seconds",
            "4",
            "--max-concurrent-reviews",
            "4",
        ],
    );
    let _webhook = WebhookCopy::new("plexus-e2e/loris", &label, replica.webhook, Some(&crt));
    let address = format!("127.0.0.1:{}", replica.webhook);

    // 200 connections that send nothing, 50 that stop after the first bytes of a TLS ClientHello.
    let mut stalled: Vec<std::net::TcpStream> = (0..250)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    for stream in &mut stalled[200..] {
        stream.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    }
    // 10 that finish the handshake and send half of a request's headers, then wait.
    let mut half_requests: Vec<Child> = (0..10)
        .map(|_| {
            let mut child = Command::new("openssl")
                .args(["s_client", "-quiet", "-connect", &address])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run openssl s_client");
            child
                .stdin
                .as_mut()
                .unwrap()
                .write_all(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            child
        })
        .collect();

    // The API server's reviews are answered meanwhile.
    let err = eventually("the replica's webhook to take effect", || {
        apply(&nad(&ns.name, "while-stalled", Some("not json"))).err()
    });
    assert!(err.contains("denied the request"), "{err}");
    refused(
        &nad(&ns.name, "still-stalled", Some("not json")),
        "denied the request",
    );

    // And every stalled connection is closed by the replica: EOF or a reset, never the client's own read timeout.
    for stream in &mut stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 64];
        let closed = loop {
            match stream.read(&mut buf) {
                Ok(0) => break true,
                // A TLS alert before the close.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(e) => panic!("still connected after 30 s: {e}"),
            }
        };
        assert!(closed);
    }
    // Their stdin stays open: they exit only because the replica closed the connection.
    for child in &mut half_requests {
        eventually("s_client to be disconnected", || child.try_wait().unwrap());
    }
    // The replica itself is still serving.
    refused(
        &nad(&ns.name, "after-stalled", Some("not json")),
        "denied the request",
    );
}
