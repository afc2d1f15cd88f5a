//! The plugin's node-side rules against the real CNI plugins: records kept per Plexus network, STATUS passed on to
//! every default network, CHECK and DEL with a minimal config, delegate stderr, and clear errors for an unreadable
//! confDir and an unreachable API server. Each test makes its own namespaces, subnets, lease store and record
//! directory, and removes them on drop.

#![forbid(unsafe_code)]

use std::path::Path;

use plexus_tests::*;
use serde_json::{Value, json};

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A static-mode config named `name` with one ptp + host-local delegate.
fn ptp_config(name: &str, cni_dir: &Path, data: &Path) -> Value {
    let (subnet, _) = subnet();
    json!({
        "cniVersion": "1.1.0", "name": name, "type": "plexus", "binDir": plugins_dir(), "cniDir": cni_dir,
        "delegates": [{"cniVersion": "1.1.0", "name": format!("{name}-pod"), "type": "ptp",
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data}}]
    })
}

#[test]
fn gc_of_one_plexus_network_never_touches_another_networks_sandboxes() {
    let cni_dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (ns_a, ns_b) = (Netns::new(), Netns::new());
    let a = ptp_config("plexus-a", cni_dir.path(), data.path());
    let b = ptp_config("plexus-b", cni_dir.path(), data.path());
    Call::new("ADD", "c-a", leak(ns_a.path())).ok(&a);
    // The same container id and interface under the other network: two records side by side.
    Call::new("ADD", "c-b", leak(ns_b.path())).ok(&b);
    assert!(record_path(cni_dir.path(), "plexus-a", "c-a", "eth0").exists());
    assert!(record_path(cni_dir.path(), "plexus-b", "c-b", "eth0").exists());

    // The runtime's GC for network A knows only A's sandboxes.
    let mut gc = a.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c-a", "ifname": "eth0"}]);
    Call::new("GC", "", "").ok(&gc);
    assert_eq!(
        ns_b.link_names(),
        ["eth0"],
        "GC of plexus-a deleted plexus-b's sandbox"
    );
    assert!(record_path(cni_dir.path(), "plexus-b", "c-b", "eth0").exists());
    assert_eq!(leases(data.path()).len(), 2);

    // And GC for B with nothing valid deletes only B's.
    let mut gc = b.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    Call::new("GC", "", "").ok(&gc);
    assert_eq!(ns_b.link_names(), Vec::<String>::new());
    assert_eq!(ns_a.link_names(), ["eth0"]);
    Call::new("DEL", "c-a", leak(ns_a.path())).ok(&a);
    assert_nothing_left(&ns_a, data.path(), cni_dir.path());
}

#[test]
fn a_record_from_before_network_keys_is_moved_on_check_and_deleted_by_del() {
    let cni_dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    let config = ptp_config("plexus", cni_dir.path(), data.path());
    Call::new("ADD", "c-old", leak(ns.path())).ok(&config);
    // What an older Plexus wrote: the same record under `<container>-<ifname>.json`.
    let new = record_path(cni_dir.path(), "plexus", "c-old", "eth0");
    let old = cni_dir.path().join("c-old-eth0.json");
    std::fs::rename(&new, &old).unwrap();
    std::fs::rename(
        new.with_extension("lock"),
        cni_dir.path().join("c-old-eth0.lock"),
    )
    .unwrap();

    Call::new("CHECK", "c-old", leak(ns.path())).ok(&config);
    assert!(
        new.exists() && !old.exists(),
        "{:?}",
        record_files(cni_dir.path())
    );
    Call::new("DEL", "c-old", leak(ns.path())).ok(&config);
    assert_nothing_left(&ns, data.path(), cni_dir.path());
}

#[test]
fn check_and_del_work_with_a_config_naming_only_cni_dir() {
    let cni_dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    // A delegate found only in the ADD's binDir: CHECK and DEL must look where the ADD found it.
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls");
    script(
        bin.path(),
        "probe",
        &format!(
            "echo \"$CNI_COMMAND\" >> {}; [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.1.0\"}}'; exit 0",
            calls.display()
        ),
    );
    let mut config = ptp_config("plexus", cni_dir.path(), data.path());
    config["binDir"] = json!(format!(
        "{}:{}",
        bin.path().display(),
        plugins_dir().display()
    ));
    config["delegates"]
        .as_array_mut()
        .unwrap()
        .push(json!({"cniVersion": "1.1.0", "name": "probe-net", "type": "probe"}));
    let add = Call::new("ADD", "c-min", leak(ns.path()));
    add.ok(&config);

    let minimal = json!({"cniDir": cni_dir.path()});
    let mut check = Call::new("CHECK", "c-min", leak(ns.path()));
    check.cni_path = plugins_dir().display().to_string();
    check.ok(&minimal);
    let mut del = Call::new("DEL", "c-min", leak(ns.path()));
    del.cni_path = String::new();
    del.ok(&minimal);
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "ADD\nCHECK\nDEL\n"
    );
    assert_nothing_left(&ns, data.path(), cni_dir.path());
}

#[test]
fn status_reaches_the_cluster_network_given_as_a_conf_name_or_a_path() {
    let bin = tempfile::tempdir().unwrap();
    script(
        bin.path(),
        "sick",
        r#"if [ "$CNI_COMMAND" = STATUS ]; then echo '{"cniVersion":"1.1.0","code":51,"msg":"pool exhausted"}'; exit 1; fi"#,
    );
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("10-sick.conf");
    std::fs::write(
        &conf,
        json!({"cniVersion": "1.1.0", "name": "sick-net", "type": "sick"}).to_string(),
    )
    .unwrap();
    let cni_dir = tempfile::tempdir().unwrap();
    let base = json!({"cniVersion": "1.1.0", "name": "plexus", "type": "plexus",
        "binDir": bin.path(), "cniDir": cni_dir.path(), "confDir": conf_dir.path()});
    for cluster_network in [json!("sick-net"), json!(conf), json!(conf_dir.path())] {
        let mut config = base.clone();
        config["clusterNetwork"] = cluster_network.clone();
        let e = Call::new("STATUS", "", "").err(config.to_string().as_bytes());
        assert_eq!(e["code"], 51, "clusterNetwork {cluster_network}: {e}");
        assert!(e["msg"].as_str().unwrap().contains("sick-net"), "{e}");
    }
    // defaultNetworks too.
    let mut config = base.clone();
    config["defaultNetworks"] = json!(["sick-net"]);
    assert_eq!(
        Call::new("STATUS", "", "").err(config.to_string().as_bytes())["code"],
        51
    );
    // Without a STATUS failure anywhere, STATUS succeeds.
    std::fs::remove_file(&conf).unwrap();
    Call::new("STATUS", "", "").ok(&base);
}

#[test]
fn an_unreadable_conf_dir_reports_the_io_error() {
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    let cni_dir = tempfile::tempdir().unwrap();
    let config = json!({"cniVersion": "1.1.0", "name": "plexus", "type": "plexus", "binDir": plugins_dir(),
        "cniDir": cni_dir.path(), "confDir": not_a_dir.path(), "clusterNetwork": "pod-net"});
    let e = Call::new("STATUS", "", "").err(config.to_string().as_bytes());
    assert_eq!(e["code"], 5, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("Not a directory") && msg.contains("confDir"),
        "{msg}"
    );
}

#[test]
fn a_delegates_stderr_is_in_the_error_details_and_in_the_log() {
    let bin = tempfile::tempdir().unwrap();
    script(
        bin.path(),
        "grumpy",
        r#"case "$CNI_COMMAND" in
  ADD) echo 'no addresses left in pool-7' >&2; echo '{"cniVersion":"1.0.0","code":11,"msg":"busy"}'; exit 1;;
  *) echo 'nothing to delete here' >&2;;
esac"#,
    );
    let cni_dir = tempfile::tempdir().unwrap();
    let log = cni_dir.path().join("plexus.log");
    let config = json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "binDir": bin.path(),
        "cniDir": cni_dir.path().join("records"), "logFile": log, "logLevel": "info",
        "delegates": [{"cniVersion": "1.0.0", "name": "grumpy-net", "type": "grumpy"}]});
    let ns = Netns::new();
    let e = Call::new("ADD", "c-err", leak(ns.path())).err(config.to_string().as_bytes());
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["details"]
            .as_str()
            .unwrap_or_default()
            .contains("no addresses left in pool-7"),
        "{e}"
    );
    // The rollback's DEL succeeded with something on stderr: that is in the log at the default level.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("nothing to delete here"), "{text}");
    assert!(text.contains("no addresses left in pool-7"), "{text}");
}

#[test]
fn an_unreachable_api_server_is_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    \
             insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    \
             cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = ptp_config("plexus", &dir.path().join("records"), data.path());
    config["kubeconfig"] = json!(kubeconfig);
    config["apiTimeoutSeconds"] = json!(2);
    let ns = Netns::new();
    let mut add = Call::new("ADD", "c-api", leak(ns.path()));
    add.args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;K8S_POD_UID=u";
    let e = add.err(config.to_string().as_bytes());
    assert_eq!(e["code"], 11, "{e}");
    assert_eq!(ns.link_names(), Vec::<String>::new());

    // With the record gone and the API server down, DEL still finishes: it ends at the default network.
    let mut del = Call::new("DEL", "c-api", leak(ns.path()));
    del.args = add.args;
    del.ok(&config);
}

/// docs/errors.md, codes 3 and 6: CHECK of a container Plexus never attached is code 3 (unknown container); a
/// delegate whose ADD result is not a CNI result is code 6 (decoding), and what was attached is rolled back.
#[test]
fn check_of_an_unknown_container_is_3_and_an_invalid_delegate_result_is_6() {
    let cni_dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    let config = ptp_config("plexus-codes", cni_dir.path(), data.path());
    let e = Call::new("CHECK", "c-never", leak(ns.path())).err(config.to_string().as_bytes());
    assert_eq!(e["code"], 3, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("c-never"), "{e}");

    let bin = tempfile::tempdir().unwrap();
    script(
        bin.path(),
        "garbled",
        "cat >/dev/null; echo 'this is not a result'",
    );
    let mut config = config;
    config["binDir"] = json!(format!(
        "{}:{}",
        bin.path().display(),
        plugins_dir().display()
    ));
    config["delegates"]
        .as_array_mut()
        .unwrap()
        .push(json!({"cniVersion": "1.1.0", "name": "garbled-net", "type": "garbled"}));
    let e = Call::new("ADD", "c-garbled", leak(ns.path())).err(config.to_string().as_bytes());
    assert_eq!(e["code"], 6, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("garbled-net") && msg.contains("result is invalid"),
        "{e}"
    );
    assert_nothing_left(&ns, data.path(), cni_dir.path());
}
