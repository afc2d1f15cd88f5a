//! Multus thick's HTTP API on `plexus-daemon` (`multusApiSocketDir`): a real daemon against the real control plane,
//! the real bridge, ptp and host-local plugins in a real network namespace, driven over `multus.sock` with the
//! request bodies multus-shim and multus-dynamic-networks-controller send (written here by hand from multus's
//! `pkg/server/api`: `env`, `config` as base64, `interfaceAttributes`; replies `{"Result": …}` or the CNI error
//! object). docs/configuration.md, "Multus's API".

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use plexus_e2e::thick::Daemon;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// One request as Go's net/http client writes it on the unix socket (`http://dummy<path>`); returns the status and
/// the body.
fn http(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: dummy\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\n\
         Content-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    parse_reply(&reply)
}

fn parse_reply(reply: &str) -> (u16, String) {
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// multus's `api.Request`: `config` is Go's `[]byte`, base64 in JSON.
fn request(env: Value, config: &[u8], attributes: Option<Value>) -> Value {
    let mut r = json!({"env": env,
        "config": base64::engine::general_purpose::STANDARD.encode(config)});
    if let Some(a) = attributes {
        r["interfaceAttributes"] = a;
    }
    r
}

/// What multus-dynamic-networks-controller sends (`CreateDelegateRequest`): the command, the sandbox, the interface
/// and the pod in `CNI_ARGS`; `config` the NAD's config with its name filled in (`GetCNIConfigFromSpec`).
fn delegate(
    command: &str,
    sb: &PodSandbox,
    ifname: &str,
    ns: &str,
    uid: &str,
    nad: &Value,
) -> Value {
    let mut config = nad.clone();
    config["name"] = json!(format!("nad-of-{ifname}"));
    request(
        json!({"CNI_COMMAND": command, "CNI_CONTAINERID": sb.container_id, "CNI_NETNS": sb.netns.path(),
               "CNI_IFNAME": ifname,
               "CNI_ARGS": format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME=web;K8S_POD_UID={uid}")}),
        config.to_string().as_bytes(),
        None,
    )
}

fn annotate(namespace: &str, pod: &str, networks: &str) {
    kubectl(
        &[
            "annotate",
            "--overwrite",
            "pod",
            "-n",
            namespace,
            pod,
            &format!("{NETWORKS}={networks}"),
        ],
        None,
    );
}

fn status_interfaces(namespace: &str, pod: &str) -> Vec<String> {
    network_status(namespace, pod)
        .iter()
        .map(|s| s["interface"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The whole life of a pod through `multus.sock`: multus-shim's ADD (`/cni`), the dynamic-networks controller's
/// delegate ADD and DEL of a second network after the annotation gained and lost it (`/delegate`, each answered once
/// the interface is in, or out of, the pod's network namespace and network-status), a delegate ADD the annotation
/// does not ask for (refused: the caller's config never runs), and multus-shim's DEL, which leaves nothing behind.
/// `/healthz` answers; a caller that is not root is kept out by the socket's mode, and when the mode lets it in, by
/// the daemon (403, code 4).
#[test]
fn multus_shim_and_the_dynamic_networks_controller_drive_plexus_through_multus_sock() {
    let sb = PodSandbox::new();
    let multus = tempfile::tempdir().unwrap();
    let mut node = sb.config(json!({}));
    node["multusApiSocketDir"] = json!(multus.path().join("run"));
    let daemon = Daemon::start_fixed(node);
    let socket = multus.path().join("run/multus.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, 0));
    assert_eq!(http(&socket, "GET", "/healthz", None).0, 200);
    assert_eq!(http(&socket, "GET", "/cni", None).0, 405);
    assert_eq!(http(&socket, "POST", "/nowhere", Some(&json!({}))).0, 404);

    let ns = KubeNamespace::new("multus-api");
    let (blue_bridge, red_bridge) = (unique("plxb"), unique("plxb"));
    let (_b1, _b2) = (HostLink::adopt(&blue_bridge), HostLink::adopt(&red_bridge));
    let (s1, p1) = subnet();
    let (s2, p2) = subnet();
    let blue = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": blue_bridge,
        "ipam": sb.host_local(&s1)});
    let red = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": red_bridge,
        "ipam": sb.host_local(&s2)});
    create_nad(&ns.name, "blue", Some(&blue));
    create_nad(&ns.name, "red", Some(&red));
    let bad = json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": {"type": "host-local"}});
    create_nad(&ns.name, "bad", Some(&bad));
    let other = Netns::new();
    let uid = create_pod_on(
        &ns.name,
        "web",
        &[(NETWORKS, "blue@net1")],
        Some(&daemon.node.name),
    );

    // multus-shim's ADD: its whole environment, and its own conf file as the config.
    let shim_conf = json!({"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus-shim",
        "logLevel": "verbose", "logToStderr": true, "daemonSocketDir": multus.path().join("run")});
    let shim_env = |command: &str| {
        json!({"CNI_COMMAND": command, "CNI_CONTAINERID": sb.container_id, "CNI_NETNS": sb.netns.path(),
               "CNI_IFNAME": "eth0", "CNI_ARGS": pod_args(&ns.name, "web", &uid, &sb.container_id),
               "CNI_PATH": "/nowhere", "PATH": "/usr/bin:/bin"})
    };
    let add = request(shim_env("ADD"), shim_conf.to_string().as_bytes(), None);
    let (status, body) = http(&socket, "POST", "/cni", Some(&add));
    assert_eq!(status, 200, "{body}\n{}", daemon.log());
    let reply: Value = serde_json::from_str(&body).unwrap();
    let result = &reply["Result"];
    assert_eq!(result["cniVersion"], "1.0.0", "{reply}");
    assert!(
        result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with(&sb.default_prefix),
        "{reply}"
    );
    let mut names = sb.netns.link_names();
    names.sort();
    assert_eq!(names, ["eth0", "net1"]);
    assert!(sb.netns.ipv4("net1")[0].starts_with(&p1));

    // The controller's delegate ADD of red@net2, after the annotation gained it.
    annotate(&ns.name, "web", "blue@net1,red@net2");
    let (status, body) = http(
        &socket,
        "POST",
        "/delegate",
        Some(&delegate("ADD", &sb, "net2", &ns.name, &uid, &red)),
    );
    assert_eq!(status, 200, "{body}\n{}", daemon.log());
    let reply: Value = serde_json::from_str(&body).unwrap();
    let address = reply["Result"]["ips"][0]["address"].as_str().unwrap();
    assert!(address.starts_with(&p2), "{reply}");
    assert_eq!(sb.netns.ipv4("net2"), [address.to_owned()]);
    assert!(status_interfaces(&ns.name, "web").contains(&"net2".to_owned()));

    // A delegate ADD of an interface the annotation does not ask for: refused after the daemon's settle time, and
    // nothing of the caller's config runs.
    let (status, body) = http(
        &socket,
        "POST",
        "/delegate",
        Some(&delegate("ADD", &sb, "net9", &ns.name, &uid, &red)),
    );
    assert_eq!(status, 400, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("does not ask for interface net9"),
        "{e}"
    );
    assert!(sb.netns.link("net9").is_none());

    // Refused at once (code 4): the default network's interface, and a network namespace that is not the sandbox's.
    for (ifname, netns) in [("eth0", sb.netns.path()), ("net2", other.path())] {
        let mut body = delegate("ADD", &sb, ifname, &ns.name, &uid, &red);
        body["env"]["CNI_NETNS"] = json!(netns);
        let (status, body) = http(&socket, "POST", "/delegate", Some(&body));
        assert_eq!(status, 400, "{body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["code"], 4, "{e}");
    }

    // A network whose delegate fails (host-local without a subnet): 400 with code 100 naming it, nothing left.
    annotate(&ns.name, "web", "blue@net1,red@net2,bad@net3");
    let (status, body) = http(
        &socket,
        "POST",
        "/delegate",
        Some(&delegate("ADD", &sb, "net3", &ns.name, &uid, &bad)),
    );
    assert_eq!(status, 400, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["code"], 100, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("net3 from"), "{e}");
    assert!(sb.netns.link("net3").is_none());

    // The controller's delegate DEL of net2, after the annotation lost it.
    annotate(&ns.name, "web", "blue@net1");
    let (status, body) = http(
        &socket,
        "POST",
        "/delegate",
        Some(&delegate("DEL", &sb, "net2", &ns.name, &uid, &red)),
    );
    assert_eq!((status, body.as_str()), (200, ""), "{}", daemon.log());
    let mut names = sb.netns.link_names();
    names.sort();
    assert_eq!(names, ["eth0", "net1"]);
    assert!(!status_interfaces(&ns.name, "web").contains(&"net2".to_owned()));

    // A caller that is not root: the socket's mode keeps it out; let in by the mode, the daemon refuses it.
    let as_nobody = || {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "curl",
                "-s",
                "-i",
            ])
            .arg("--unix-socket")
            .arg(&socket)
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(add.to_string())
            .arg("http://dummy/cni")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(as_nobody(), "", "no connection through mode 0600");
    for dir in [multus.path(), &multus.path().join("run")] {
        std::fs::set_permissions(dir, PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, PermissionsExt::from_mode(0o666)).unwrap();
    let (status, body) = parse_reply(&as_nobody());
    assert_eq!(status, 403, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["code"], 4, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("uid 65534"), "{e}");

    // multus-shim's DEL: 200 with no body, and nothing left.
    let del = request(shim_env("DEL"), shim_conf.to_string().as_bytes(), None);
    let (status, body) = http(&socket, "POST", "/cni", Some(&del));
    assert_eq!((status, body.as_str()), (200, ""), "{}", daemon.log());
    sb.assert_clean();
}
