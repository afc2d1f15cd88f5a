//! `plexus` in Kubernetes mode against a real kube-apiserver: pods, their annotations and NetworkAttachmentDefinitions
//! in, interfaces in real network namespaces and network-status out.

#![forbid(unsafe_code)]

use plexus_e2e::thick::Mode;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";

/// Checks every network-status entry field by field against what `ip -n` shows in the pod's namespace.
fn assert_status_matches_netns(status: &[Value], netns: &Netns) {
    for entry in status {
        let ifname = entry["interface"]
            .as_str()
            .unwrap_or_else(|| panic!("no interface in {entry}"));
        let link = netns
            .link(ifname)
            .unwrap_or_else(|| panic!("status names {ifname}, which is not in the netns"));
        assert_eq!(entry["mac"], link["address"], "mac of {ifname}");
        let addrs: Vec<String> = link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["scope"] == "global")
            .map(|a| a["local"].as_str().unwrap().to_owned())
            .collect();
        let ips: Vec<String> = entry["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ips, addrs, "ips of {ifname}");
        if let Some(mtu) = entry.get("mtu") {
            assert_eq!(*mtu, link["mtu"], "mtu of {ifname}");
        }
    }
    let defaults = status.iter().filter(|e| e["default"] == true).count();
    assert_eq!(defaults, 1, "exactly one default entry: {status:?}");
}

fn names_in(netns: &Netns) -> Vec<String> {
    let mut names = netns.link_names();
    names.sort();
    names
}

fn comma_form_with_custom_and_repeated_interface_names(mode: &Mode) {
    let ns = KubeNamespace::new("comma");
    let other = KubeNamespace::new("other");
    let sb = mode.sandbox();
    // Two attachments share this bridge. A bridge takes the lowest MAC of its ports unless one is set, which would
    // make the bridge plugin's CHECK of the first attachment fail once the second joins: fix it, as admins do.
    let bridge = unique("plxb");
    let _bridge = HostLink::adopt(&bridge);
    sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
    sh(&[
        "ip",
        "link",
        "set",
        &bridge,
        "address",
        "02:00:c6:12:00:01",
        "up",
    ]);
    let (s1, _) = subnet();
    let (s2, _) = subnet();
    create_nad(
        &ns.name,
        "net-a",
        Some(
            &json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge", "bridge": bridge, "ipam": sb.host_local(&s1)}]}),
        ),
    );
    // A single config without a name: the NAD's name is injected (R9).
    create_nad(
        &other.name,
        "net-b",
        Some(&json!({"cniVersion": "0.4.0", "type": "ptp", "ipam": sb.host_local(&s2)})),
    );
    let annotation = format!("net-a, net-a@extra0, {}/net-b", other.name);
    let uid = mode.create_pod(&ns.name, "web", &[(NETWORKS, &annotation)]);
    let args = pod_args(&ns.name, "web", &uid, &sb.container_id);
    let config = sb.config(json!({}));

    let result = sb.call("ADD", &args).ok(&config);
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(names_in(&sb.netns), ["eth0", "extra0", "net1", "net3"]);

    let status = network_status(&ns.name, "web");
    let summary: Vec<(String, String, bool)> = status
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["interface"].as_str().unwrap().into(),
                e["default"] == true,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("pod-net".to_string(), "eth0".to_string(), true),
            (format!("{}/net-a", ns.name), "net1".into(), false),
            (format!("{}/net-a", ns.name), "extra0".into(), false),
            (format!("{}/net-b", other.name), "net3".into(), false),
        ]
    );
    assert_status_matches_netns(&status, &sb.netns);

    let events = mode.pod_events(&ns.name, "web", |events| {
        events.iter().filter(|(r, _)| r == "AddedInterface").count() >= 4
    });
    for ifname in ["eth0", "net1", "extra0", "net3"] {
        assert!(
            events.iter().any(|(reason, msg)| reason == "AddedInterface"
                && msg.starts_with(&format!("Add {ifname} ["))),
            "no AddedInterface event for {ifname}: {events:?}"
        );
    }

    // API requests of this ADD: one PATCH of network-status and one event per attachment; thin mode reads the pod
    // and each distinct NAD once (net-a is selected twice), thick mode only what its caches did not have.
    let mut requests = plexus_api_requests(&ns.name);
    requests.extend(plexus_api_requests(&other.name));
    let count = |verb: &str, resource: &str| {
        requests
            .iter()
            .filter(|(v, r, _)| v == verb && r == resource)
            .count()
    };
    assert_eq!(count("patch", "pods"), 1, "{requests:?}");
    assert_eq!(count("create", "events"), 4, "{requests:?}");
    let reads = count("get", "pods") + count("get", "network-attachment-definitions");
    match mode.daemon() {
        None => {
            assert_eq!(count("get", "pods"), 1, "{requests:?}");
            assert_eq!(
                count("get", "network-attachment-definitions"),
                2,
                "{requests:?}"
            );
        }
        Some(daemon) => {
            let misses = daemon.metric("plexus_daemon_cache_lookups_total", &["result=\"miss\""]);
            assert_eq!(reads, misses as usize, "{requests:?}");
            assert_eq!(count("get", "pods"), 0, "the pod was cached: {requests:?}");
        }
    }
    assert_eq!(requests.len(), 5 + reads, "{requests:?}");

    sb.call("CHECK", &args).ok(&config);
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
    assert_eq!(bridge_ports(&bridge), Vec::<String>::new());
}

fn json_form_with_every_key_the_kernel_here_supports(mode: &Mode) {
    let ns = KubeNamespace::new("json");
    let sb = mode.sandbox();
    let rich_bridge = unique("plxb");
    let _rb = HostLink::adopt(&rich_bridge);
    let args_bridge = unique("plxb");
    let _ab = HostLink::adopt(&args_bridge);
    let (_, p1) = subnet();
    let (s2, p2) = subnet();
    // A port of this run's own: the ::thin and ::thick variants run at once, and each checks its DNAT rule is gone.
    let host_port = free_port();
    create_nad(
        &ns.name,
        "rich",
        Some(&json!({"cniVersion": "1.0.0", "name": "rich", "plugins": [
            {"type": "bridge", "bridge": rich_bridge, "capabilities": {"ips": true}, "ipam": {"type": "static"}},
            {"type": "tuning", "capabilities": {"mac": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
        ]})),
    );
    create_nad(
        &ns.name,
        "by-args",
        Some(
            &json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge", "bridge": args_bridge, "ipam": sb.host_local(&s2)}]}),
        ),
    );
    let selection = json!([
        {"name": "rich", "interface": "rich0", "ips": [format!("{p1}.7/24")], "mac": "0a:58:c6:13:00:07",
         "bandwidth": {"ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 8000000, "egressBurst": 800000},
         "portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "TCP"}]},
        // cni-args reach the delegates as args.cni: host-local takes the address from args.cni.ips.
        // default-route moves the pod's default route from eth0 to this interface (R33).
        {"name": "by-args", "namespace": ns.name, "cni-args": {"ips": [format!("{p2}.9")]},
         "default-route": [format!("{p2}.1")]}
    ]);
    let uid = mode.create_pod(&ns.name, "rich-pod", &[(NETWORKS, &selection.to_string())]);
    let args = pod_args(&ns.name, "rich-pod", &uid, &sb.container_id);
    // The default network installs a default route of its own, which default-route must take away.
    let mut config = sb.config(json!({}));
    config["delegates"][0]["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
    sb.call("ADD", &args).ok(&config);

    assert_eq!(names_in(&sb.netns), ["eth0", "net2", "rich0"]);
    assert_eq!(
        sb.netns.ipv4("rich0"),
        [format!("{p1}.7/24")],
        "ips → runtimeConfig.ips → static IPAM"
    );
    assert_eq!(
        sb.netns.link("rich0").unwrap()["address"],
        "0a:58:c6:13:00:07",
        "mac → tuning"
    );
    assert_eq!(
        sb.netns.ipv4("net2"),
        [format!("{p2}.9/24")],
        "cni-args → args.cni.ips → host-local"
    );
    // bandwidth → the bandwidth plugin shaped the host side of rich0's veth.
    let record: Value = serde_json::from_slice(
        &std::fs::read(record_path(
            sb.cni_dir.path(),
            "plexus",
            &sb.container_id,
            "eth0",
        ))
        .unwrap(),
    )
    .unwrap();
    let rich = &record["attachments"][1];
    let host_veth = rich["result"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i.get("sandbox").is_none()
                && i["name"] != rich_bridge.as_str()
                && !i["name"].as_str().unwrap().starts_with("bwp")
        })
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let qdisc = sh(&["tc", "qdisc", "show", "dev", &host_veth]);
    assert!(qdisc.contains("tbf"), "no tbf on {host_veth}: {qdisc}");
    // portMappings → portmap's DNAT rule for the host port.
    let nat = sh(&["iptables", "-t", "nat", "-S"]);
    assert!(
        nat.contains(&format!("--dport {host_port}")),
        "no DNAT for {host_port}"
    );

    let routes = sh(&["ip", "-n", &sb.netns.name, "-4", "route", "show", "default"]);
    assert_eq!(
        routes.trim(),
        format!("default via {p2}.1 dev net2"),
        "default-route"
    );

    let status = network_status(&ns.name, "rich-pod");
    assert_eq!(status.len(), 3);
    assert_status_matches_netns(&status, &sb.netns);
    assert_eq!(
        status[2]["default-route"],
        json!([format!("{p2}.1")]),
        "{status:?}"
    );
    assert_eq!(status[2]["gateway"], json!([format!("{p2}.1")]));
    assert!(
        status[0].get("gateway").is_none() && status[0].get("default-route").is_none(),
        "{status:?}"
    );

    sb.call("CHECK", &args).ok(&config);
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
    assert!(
        !sh(&["iptables", "-t", "nat", "-S"]).contains(&format!("--dport {host_port}")),
        "DNAT rule left"
    );
    assert!(!HostLink::exists(&host_veth));
}

fn with_strict_capabilities_a_key_the_network_cannot_honour_fails_before_anything_runs(
    mode: &Mode,
) {
    // The webhook refuses some of these pods; this test is about the plugin's own check.
    let ns = KubeNamespace::without_admission("caps");
    let sb = mode.sandbox();
    let (s1, _) = subnet();
    create_nad(
        &ns.name,
        "plain",
        Some(&json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&s1)})),
    );
    let config = sb.config(json!({"strictCapabilities": true}));
    for (i, (key, value, capability)) in [
        ("mac", json!("0a:58:00:00:00:01"), "mac"),
        ("ips", json!(["198.18.0.5/24"]), "ips"),
        (
            "portMappings",
            json!([{"hostPort": 8080, "containerPort": 80}]),
            "portMappings",
        ),
        (
            "bandwidth",
            json!({"ingressRate": 1000, "ingressBurst": 100}),
            "bandwidth",
        ),
        // No InfiniBand hardware here: this checks the capability gate, not an IB plugin.
        (
            "infiniband-guid",
            json!("00:11:22:33:44:55:66:77"),
            "infinibandGUID",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut element = json!({"name": "plain"});
        element[key] = value;
        let pod = format!("caps-{i}");
        let uid = mode.create_pod(&ns.name, &pod, &[(NETWORKS, &json!([element]).to_string())]);
        let args = pod_args(&ns.name, &pod, &uid, &sb.container_id);
        let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
        let msg = e["msg"].as_str().unwrap();
        assert_eq!(e["code"], 102, "{e}");
        assert!(
            msg.contains(&pod) && msg.contains("plain") && msg.contains(capability),
            "{msg}"
        );
        sb.assert_clean();
    }
}

fn the_default_network_annotation_replaces_the_cluster_network(mode: &Mode) {
    let ns = KubeNamespace::new("defnet");
    let sb = mode.sandbox();
    let bridge = unique("plxb");
    let _bridge = HostLink::adopt(&bridge);
    let (s1, p1) = subnet();
    create_nad(
        &ns.name,
        "alt",
        Some(
            &json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": bridge, "ipam": sb.host_local(&s1)}),
        ),
    );
    // `namespace/name`: a bare name would be looked up in multusNamespace (see multus_dropin.rs).
    let alt = format!("{}/alt", ns.name);
    let uid = mode.create_pod(&ns.name, "alt-pod", &[(DEFAULT_NETWORK, &alt)]);
    let args = pod_args(&ns.name, "alt-pod", &uid, &sb.container_id);
    let config = sb.config(json!({}));
    let result = sb.call("ADD", &args).ok(&config);
    assert!(
        result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with(&p1),
        "{result}"
    );
    assert_eq!(names_in(&sb.netns), ["eth0"]);
    let status = network_status(&ns.name, "alt-pod");
    assert_eq!(status.len(), 1);
    assert_eq!(status[0]["name"], format!("{}/alt", ns.name));
    assert_eq!(status[0]["default"], true);
    assert_status_matches_netns(&status, &sb.netns);
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

fn default_networks_except_in_system_namespaces(mode: &Mode) {
    let admin = KubeNamespace::new("admin");
    let apps = KubeNamespace::new("apps");
    let system = KubeNamespace::new("system");
    let sb = mode.sandbox();
    let (s1, p1) = subnet();
    create_nad(
        &admin.name,
        "extra",
        Some(&json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&s1)})),
    );
    let config = sb.config(json!({
        "multusNamespace": admin.name, "defaultNetworks": ["extra"], "systemNamespaces": [system.name]
    }));

    let uid = mode.create_pod(&apps.name, "app", &[]);
    let args = pod_args(&apps.name, "app", &uid, &sb.container_id);
    sb.call("ADD", &args).ok(&config);
    assert_eq!(names_in(&sb.netns), ["eth0", "net1"]);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&p1));
    let status = network_status(&apps.name, "app");
    assert_eq!(status[1]["name"], format!("{}/extra", admin.name));
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();

    let uid = mode.create_pod(&system.name, "sys", &[]);
    let args = pod_args(&system.name, "sys", &uid, &sb.container_id);
    sb.call("ADD", &args).ok(&config);
    assert_eq!(
        names_in(&sb.netns),
        ["eth0"],
        "no defaultNetworks in a system namespace"
    );
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

fn namespace_isolation_allows_own_and_global_namespaces_only(mode: &Mode) {
    let own = KubeNamespace::new("own");
    let global = KubeNamespace::new("global");
    let foreign = KubeNamespace::new("foreign");
    let sb = mode.sandbox();
    let (s1, _) = subnet();
    let nad = json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&s1)});
    create_nad(&global.name, "shared", Some(&nad));
    create_nad(&foreign.name, "private", Some(&nad));
    let config = sb.config(
        json!({"namespaceIsolation": true, "globalNamespaces": format!("default,{}", global.name)}),
    );

    let refused = format!("{}/private", foreign.name);
    let uid = mode.create_pod(&own.name, "nosy", &[(NETWORKS, &refused)]);
    let args = pod_args(&own.name, "nosy", &uid, &sb.container_id);
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    let msg = e["msg"].as_str().unwrap();
    assert_eq!(e["code"], 102, "{e}");
    assert!(
        msg.contains("nosy") && msg.contains(&refused) && msg.contains("namespaceIsolation"),
        "{msg}"
    );
    sb.assert_clean();

    let allowed = format!("{}/shared", global.name);
    let uid = mode.create_pod(&own.name, "polite", &[(NETWORKS, &allowed)]);
    let args = pod_args(&own.name, "polite", &uid, &sb.container_id);
    sb.call("ADD", &args).ok(&config);
    assert_eq!(names_in(&sb.netns), ["eth0", "net1"]);
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

fn a_nad_without_config_uses_the_conf_dir_file_of_its_name(mode: &Mode) {
    let ns = KubeNamespace::new("ondisk");
    let sb = mode.sandbox();
    let (s1, p1) = subnet();
    create_nad(&ns.name, "from-disk", None);
    let conflist = json!({"cniVersion": "1.0.0", "name": "from-disk", "plugins": [{"type": "ptp", "ipam": sb.host_local(&s1)}]});
    std::fs::write(
        sb.conf_dir.path().join("20-from-disk.conflist"),
        conflist.to_string(),
    )
    .unwrap();
    std::fs::write(
        sb.conf_dir.path().join("10-other.conf"),
        br#"{"cniVersion":"1.0.0","name":"other","type":"bridge"}"#,
    )
    .unwrap();
    let uid = mode.create_pod(&ns.name, "disk", &[(NETWORKS, "from-disk")]);
    let args = pod_args(&ns.name, "disk", &uid, &sb.container_id);
    let config = sb.config(json!({}));
    sb.call("ADD", &args).ok(&config);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&p1));
    sb.call("DEL", &args).ok(&config);
    sb.assert_clean();
}

fn bad_requests_fail_before_any_delegate_runs(mode: &Mode) {
    // The webhook refuses these pods; this test is about the plugin's own check.
    let ns = KubeNamespace::without_admission("bad");
    let sb = mode.sandbox();
    let config = sb.config(json!({}));
    for (pod, annotation, expect) in [
        ("missing-nad", "no-such-net", "no-such-net"),
        ("bad-annotation", "net-a,,net-b", "element 1"),
        ("bad-json", r#"[{"name": "x", "mac": "zz"}]"#, "mac"),
    ] {
        let uid = mode.create_pod(&ns.name, pod, &[(NETWORKS, annotation)]);
        let args = pod_args(&ns.name, pod, &uid, &sb.container_id);
        let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
        let msg = e["msg"].as_str().unwrap();
        assert_eq!(e["code"], 102, "selection refused: {e}");
        assert!(msg.contains(pod) && msg.contains(expect), "{pod}: {msg}");
        sb.assert_clean();
    }
    // A pod that does not exist is an error (after a short retry), never "no networks".
    let args = pod_args(&ns.name, "ghost", "", &sb.container_id);
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert_eq!(e["code"], 105, "pod not found: {e}");
    assert!(e["msg"].as_str().unwrap().contains("not found"), "{e}");
    // A pod replaced under the same name (another UID) is refused.
    mode.create_pod(&ns.name, "replaced", &[]);
    let args = pod_args(
        &ns.name,
        "replaced",
        "00000000-0000-0000-0000-000000000000",
        &sb.container_id,
    );
    let e = sb.call("ADD", &args).err(config.to_string().as_bytes());
    assert_eq!(e["code"], 106, "pod replaced: {e}");
    assert!(e["msg"].as_str().unwrap().contains("UID"), "{e}");
    sb.assert_clean();
}

fn del_needs_neither_the_pod_the_nad_nor_the_api_server(mode: &Mode) {
    let ns = KubeNamespace::new("del");
    let sb = mode.sandbox();
    let (s1, _) = subnet();
    create_nad(
        &ns.name,
        "gone",
        Some(&json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&s1)})),
    );
    let uid = mode.create_pod(&ns.name, "doomed", &[(NETWORKS, "gone")]);
    let args = pod_args(&ns.name, "doomed", &uid, &sb.container_id);
    sb.call("ADD", &args).ok(&sb.config(json!({})));
    assert_eq!(names_in(&sb.netns), ["eth0", "net1"]);

    kubectl(
        &[
            "delete",
            "pod",
            "-n",
            &ns.name,
            "doomed",
            "--grace-period=0",
            "--force",
        ],
        None,
    );
    kubectl(
        &[
            "delete",
            "network-attachment-definition",
            "-n",
            &ns.name,
            "gone",
        ],
        None,
    );
    if mode.daemon().is_some() {
        // Thick mode: the daemon's client is up, but the DEL goes by the record and asks it nothing.
        let before = plexus_api_requests(&ns.name).len();
        sb.call("DEL", &args).ok(&sb.config(json!({})));
        sb.assert_clean();
        assert_eq!(plexus_api_requests(&ns.name).len(), before);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let down =
        sb.config(json!({"kubeconfig": dead_kubeconfig(dir.path()), "apiTimeoutSeconds": 2}));
    sb.call("DEL", &args).ok(&down);
    sb.assert_clean();

    // ADD with the API server down fails with "try again later" and attaches nothing.
    let e = sb.call("ADD", &args).err(down.to_string().as_bytes());
    assert_eq!(e["code"], 11, "{e}");
    sb.assert_clean();
}

fn a_real_cni_client_drives_plexus(mode: &Mode) {
    let ns = KubeNamespace::new("cnitool");
    let sb = mode.sandbox();
    let (s1, p1) = subnet();
    create_nad(
        &ns.name,
        "side",
        Some(&json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&s1)})),
    );
    let uid = mode.create_pod(&ns.name, "tooled", &[(NETWORKS, "side")]);

    // cnitool (libcni) finds the network config in NETCONFPATH and plexus (thick mode: plexus-shim) in CNI_PATH.
    let confs = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    for (binary, name) in [(plexus_bin(), "plexus"), (plexus_shim_bin(), "plexus-shim")] {
        std::os::unix::fs::symlink(binary, bin.path().join(name)).unwrap();
    }
    let mut plexus_conf = sb.config(json!({}));
    plexus_conf["name"] = json!("plexus-net");
    let conflist = json!({"cniVersion": "1.0.0", "name": "plexus-net", "plugins": [plexus_conf]});
    std::fs::write(
        confs.path().join("00-plexus.conflist"),
        conflist.to_string(),
    )
    .unwrap();
    let cnitool = |command: &str| {
        let out = std::process::Command::new("cnitool")
            .args([command, "plexus-net", &sb.netns.path()])
            .env("NETCONFPATH", confs.path())
            .env(
                "CNI_PATH",
                format!("{}:{}", bin.path().display(), plugins_dir().display()),
            )
            .env("CNI_ARGS", pod_args(&ns.name, "tooled", &uid, "cnitool"))
            .env("CNI_IFNAME", "eth0")
            .output()
            .expect("cnitool on PATH (e2e/cluster env puts it there)");
        assert!(
            out.status.success(),
            "cnitool {command}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let result: Value = serde_json::from_str(&cnitool("add")).unwrap();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(names_in(&sb.netns), ["eth0", "net1"]);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&p1));
    assert_status_matches_netns(&network_status(&ns.name, "tooled"), &sb.netns);
    cnitool("check");
    cnitool("del");
    sb.assert_clean();
}

fn cluster_network_by_nad_name_conf_name_or_path(mode: &Mode) {
    let admin = KubeNamespace::new("clusternet");
    let apps = KubeNamespace::new("clusterapps");
    let sb = mode.sandbox();
    let (s1, p1) = subnet();
    let (s2, p2) = subnet();
    let (s3, p3) = subnet();
    // 1. A NAD in multusNamespace.
    create_nad(
        &admin.name,
        "cluster-nad",
        Some(&json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": sb.host_local(&s1)})),
    );
    // 2. A conf in confDir, found by its network name.
    let on_disk = json!({"cniVersion": "1.0.0", "name": "cluster-conf", "type": "ptp", "ipam": sb.host_local(&s2)});
    std::fs::write(
        sb.conf_dir.path().join("50-cluster.conf"),
        on_disk.to_string(),
    )
    .unwrap();
    // 3. A conflist by absolute path.
    let file = sb.conf_dir.path().join("by-path.conflist");
    let by_path = json!({"cniVersion": "1.0.0", "name": "cluster-path", "plugins": [{"type": "ptp", "ipam": sb.host_local(&s3)}]});
    std::fs::write(&file, by_path.to_string()).unwrap();

    for (i, (cluster_network, prefix, status_name)) in [
        (
            "cluster-nad".to_string(),
            &p1,
            format!("{}/cluster-nad", admin.name),
        ),
        ("cluster-conf".to_string(), &p2, "cluster-conf".to_string()),
        (file.display().to_string(), &p3, "cluster-path".to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        let pod = format!("app-{i}");
        let uid = mode.create_pod(&apps.name, &pod, &[]);
        let args = pod_args(&apps.name, &pod, &uid, &sb.container_id);
        let config =
            sb.config(json!({"clusterNetwork": cluster_network, "multusNamespace": admin.name}));
        let result = sb.call("ADD", &args).ok(&config);
        assert!(
            result["ips"][0]["address"]
                .as_str()
                .unwrap()
                .starts_with(prefix.as_str()),
            "{cluster_network}: {result}"
        );
        let status = network_status(&apps.name, &pod);
        assert_eq!(status.len(), 1);
        assert_eq!(status[0]["name"], status_name.as_str());
        assert_status_matches_netns(&status, &sb.netns);
        sb.call("DEL", &args).ok(&config);
        sb.assert_clean();
    }
}

plexus_e2e::in_both_modes!(
    comma_form_with_custom_and_repeated_interface_names,
    json_form_with_every_key_the_kernel_here_supports,
    with_strict_capabilities_a_key_the_network_cannot_honour_fails_before_anything_runs,
    the_default_network_annotation_replaces_the_cluster_network,
    default_networks_except_in_system_namespaces,
    namespace_isolation_allows_own_and_global_namespaces_only,
    a_nad_without_config_uses_the_conf_dir_file_of_its_name,
    bad_requests_fail_before_any_delegate_runs,
    del_needs_neither_the_pod_the_nad_nor_the_api_server,
    a_real_cni_client_drives_plexus,
    cluster_network_by_nad_name_conf_name_or_path,
);
