//! The `plexus-shim` binary as a runtime execs it: VERSION answered with no daemon, a config it cannot forward
//! refused with the code `plexus` gives, and a daemon that is not there code 11 naming the socket.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const PLEXUS_SHIM: &str = env!("CARGO_BIN_EXE_plexus-shim");

/// Runs `plexus-shim` for `command` with `stdin`: its exit status and stdout as JSON.
fn run(command: &str, stdin: &str) -> (bool, Value) {
    let mut child = Command::new(PLEXUS_SHIM)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "shim-test")
        .env("CNI_NETNS", "/run/netns/none")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nowhere")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"));
    (out.status.success(), json)
}

#[test]
fn version_needs_no_daemon_and_what_it_cannot_forward_is_refused() {
    let (ok, v) = run(
        "VERSION",
        r#"{"cniVersion":"0.4.0","daemonSocketDir":"/nowhere"}"#,
    );
    assert!(ok, "{v}");
    assert_eq!(v["cniVersion"], "0.4.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|l| l.len() > 3),
        "{v}"
    );

    let (ok, e) = run(
        "ADD",
        r#"{"cniVersion":"1.0.0","name":"x","type":"plexus-shim"}"#,
    );
    assert!(!ok);
    assert_eq!(e["code"], 7, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("daemonSocketDir"),
        "{e}"
    );

    let (ok, e) = run("ADD", "not json");
    assert!(!ok);
    assert_eq!(e["code"], 6, "{e}");
}

#[test]
fn a_daemon_that_is_not_there_is_code_11_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"cniVersion": "1.0.0", "name": "x", "type": "plexus-shim",
        "daemonSocketDir": dir.path(), "daemonWaitSeconds": 0});
    let (ok, e) = run("ADD", &config.to_string());
    assert!(!ok);
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains(&*dir.path().join("plexus.sock").to_string_lossy()),
        "{e}"
    );
}
