//! Manifests that work with Multus keep working: static pods, a bare `default-network` name, capability keys on
//! networks that do not declare the capability (Decision 7), Multus-worded events, STATUS through a NAD, DEL
//! without a record (with and without the API server), and the codes of pod errors. Real kube-apiserver, real
//! plugins, real network namespaces; every test cleans up after itself.

#![forbid(unsafe_code)]

use plexus_e2e::thick::Mode;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";

fn ptp(sb: &PodSandbox, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(subnet)})
}

fn a_static_pods_mirror_uid_does_not_fail_the_uid_check(mode: &Mode) {
    let ns = KubeNamespace::new("static");
    let sb = mode.sandbox();
    mode.create_pod(
        &ns.name,
        "mirror",
        &[("kubernetes.io/config.source", "file")],
    );
    // The runtime passes the static pod's own UID, which is not the mirror pod's.
    let args = pod_args(
        &ns.name,
        "mirror",
        "6d3c1f0e-0000-4000-8000-000000000001",
        &sb.container_id,
    );
    let config = sb.config(json!({}));
    sb.call("ADD", &args).ok(&config);
    assert_eq!(sb.netns.link_names(), ["eth0"]);
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

fn a_bare_default_network_name_is_looked_up_in_multus_namespace(mode: &Mode) {
    // The plugin config here has a multusNamespace of its own, which the cluster's webhook does not know.
    let pods = KubeNamespace::without_admission("dnpod");
    let admin = KubeNamespace::new("dnadmin");
    let sb = mode.sandbox();
    let (s1, p1) = subnet();
    create_nad(&admin.name, "alt", Some(&ptp(&sb, &s1)));
    let uid = mode.create_pod(&pods.name, "p", &[(DEFAULT_NETWORK, "alt")]);
    let args = pod_args(&pods.name, "p", &uid, &sb.container_id);
    let config = sb.config(json!({"multusNamespace": admin.name}));
    sb.call("ADD", &args).ok(&config);
    assert!(
        sb.netns.ipv4("eth0")[0].starts_with(&p1),
        "{:?}",
        sb.netns.ipv4("eth0")
    );
    let status = network_status(&pods.name, "p");
    assert_eq!(status[0]["name"], format!("{}/alt", admin.name));
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

fn capability_keys_without_the_capability_go_on_as_multus_passes_them_with_a_warning(mode: &Mode) {
    let ns = KubeNamespace::new("caps7");
    let sb = mode.sandbox();
    let (_, p1) = subnet();
    // A bridge with static IPAM and no addresses: the address can only come from CNI_ARGS IP=.
    let bridge = unique("plxb");
    let _bridge = HostLink::adopt(&bridge);
    create_nad(
        &ns.name,
        "plain",
        Some(
            &json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": bridge, "ipam": {"type": "static"}}),
        ),
    );
    let ip = format!("{p1}.7/24");
    let selection = json!([{"name": "plain", "ips": [ip], "bandwidth": {"ingressRate": 1000, "ingressBurst": 100}}]);
    let uid = mode.create_pod(&ns.name, "p", &[(NETWORKS, &selection.to_string())]);
    let args = pod_args(&ns.name, "p", &uid, &sb.container_id);
    let config = sb.config(json!({}));
    sb.call("ADD", &args).ok(&config);
    assert_eq!(sb.netns.ipv4("net1"), std::slice::from_ref(&ip));

    let events = mode.pod_events(&ns.name, "p", |events| events.len() >= 4);
    let warnings: Vec<&String> = events
        .iter()
        .filter(|(reason, _)| reason == "CapabilityNotDeclared")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(warnings.len(), 2, "{events:?}");
    let plain = format!("{}/plain", ns.name);
    assert!(
        warnings
            .iter()
            .any(|m| m.contains(&plain) && m.contains("\"ips\"") && m.contains("IP=")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|m| m.contains(&plain) && m.contains("\"bandwidth\"") && m.contains("ignored")),
        "{warnings:?}"
    );
    // Events carry the IPs with their prefix, as Multus writes them.
    assert!(
        events.contains(&(
            "AddedInterface".to_owned(),
            format!("Add net1 [{ip}] from {plain}")
        )),
        "{events:?}"
    );
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

fn del_without_a_record_deletes_what_the_pod_and_its_nads_give(mode: &Mode) {
    let ns = KubeNamespace::new("norec");
    let sb = mode.sandbox();
    let (s1, _) = subnet();
    let (s2, _) = subnet();
    create_nad(&ns.name, "side", Some(&ptp(&sb, &s1)));
    create_nad(&ns.name, "more", Some(&ptp(&sb, &s2)));
    let uid = mode.create_pod(&ns.name, "p", &[(NETWORKS, "side,more@extra0")]);
    let args = pod_args(&ns.name, "p", &uid, &sb.container_id);
    let config = sb.config(json!({}));
    sb.call("ADD", &args).ok(&config);
    assert_eq!(sb.netns.link_names().len(), 3);
    assert_eq!(leases(sb.data.path()).len(), 3);
    // The node lost its records (cniDir wiped, restored from a backup, ...).
    for f in record_files(sb.cni_dir.path()) {
        std::fs::remove_file(sb.cni_dir.path().join(f)).unwrap();
    }
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

/// Thin mode only: the API server down is the plugin's own client failing (a thick-mode DEL with its record gone
/// reads through the daemon's client).
#[test]
fn del_without_a_record_and_without_the_api_server_ends_at_the_default_network() {
    let ns = KubeNamespace::new("norecapi");
    let sb = PodSandbox::new();
    // The default network is a conf in confDir named by clusterNetwork (no static delegates).
    std::fs::write(
        sb.conf_dir.path().join("10-pod.conf"),
        json!({"cniVersion": "1.0.0", "name": "pod-net", "type": "ptp",
               "ipam": sb.host_local(&format!("{}.0/24", sb.default_prefix))})
        .to_string(),
    )
    .unwrap();
    let uid = create_pod(&ns.name, "p", &[]);
    let args = pod_args(&ns.name, "p", &uid, &sb.container_id);
    let config =
        sb.config(json!({"delegates": [], "clusterNetwork": "pod-net", "apiTimeoutSeconds": 2}));
    sb.call("ADD", &args).ok(&config);
    assert_eq!(leases(sb.data.path()).len(), 1);
    for f in record_files(sb.cni_dir.path()) {
        std::fs::remove_file(sb.cni_dir.path().join(f)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut down = config.clone();
    down["kubeconfig"] = json!(dead_kubeconfig(dir.path()));
    sb.call("DEL", &args).ok(&down);
    sb.assert_clean();
}

fn status_reaches_a_cluster_network_given_as_a_nad(mode: &Mode) {
    let admin = KubeNamespace::new("stnad");
    let sb = mode.sandbox();
    let bin = tempfile::tempdir().unwrap();
    script(
        bin.path(),
        "sick",
        r#"if [ "$CNI_COMMAND" = STATUS ]; then echo '{"cniVersion":"1.1.0","code":51,"msg":"pool exhausted"}'; exit 1; fi"#,
    );
    create_nad(
        &admin.name,
        "cluster",
        Some(&json!({"cniVersion": "1.1.0", "type": "sick"})),
    );
    let config = sb.config(
        json!({"cniVersion": "1.1.0", "delegates": [], "clusterNetwork": "cluster",
        "multusNamespace": admin.name, "binDir": bin.path()}),
    );
    let e = Call::new("STATUS", "", "").err(config.to_string().as_bytes());
    assert_eq!(e["code"], 51, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("pool exhausted"), "{e}");
}

fn a_missing_pod_and_a_replaced_pod_have_codes_of_their_own(mode: &Mode) {
    // The webhook refuses the pod with an empty annotation; this test is about the plugin's own answer.
    let ns = KubeNamespace::without_admission("podcodes");
    let sb = mode.sandbox();
    let config = sb.config(json!({}));
    let args = pod_args(&ns.name, "ghost", "", &sb.container_id);
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert_eq!(e["code"], 105, "{e}");
    mode.create_pod(&ns.name, "replaced", &[]);
    let args = pod_args(
        &ns.name,
        "replaced",
        "00000000-0000-0000-0000-000000000000",
        &sb.container_id,
    );
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert_eq!(e["code"], 106, "{e}");
    // A present but blank networks annotation is an error (Decision 1), not "no networks".
    let uid = mode.create_pod(&ns.name, "blank", &[(NETWORKS, "  ")]);
    let args = pod_args(&ns.name, "blank", &uid, &sb.container_id);
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert_eq!(e["code"], 102, "{e}");
    sb.assert_clean();
}

plexus_e2e::in_both_modes!(
    a_static_pods_mirror_uid_does_not_fail_the_uid_check,
    a_bare_default_network_name_is_looked_up_in_multus_namespace,
    capability_keys_without_the_capability_go_on_as_multus_passes_them_with_a_warning,
    del_without_a_record_deletes_what_the_pod_and_its_nads_give,
    status_reaches_a_cluster_network_given_as_a_nad,
    a_missing_pod_and_a_replaced_pod_have_codes_of_their_own,
);
