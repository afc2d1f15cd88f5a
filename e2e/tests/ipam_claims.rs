//! Persistent IPs (multi-network spec v1.3): a selection's `ipam-claim-reference` reaches the IPAM plugin, and the
//! webhook checks it.
//!
//! The delegates are real (bridge, with a test-only IPAM that records its stdin and `CNI_ARGS` and then execs the
//! real host-local, so the address comes from host-local), in both modes: the claim arrives in `args.cni` on ADD and
//! DEL, and in `runtimeConfig.ipamClaimReference` only where the plugin declares the capability. The webhook test runs
//! against the controller `e2e/cluster up` registered, first without the IPAMClaim CRD, then with
//! `crds/optional/ipamclaims.yaml` applied (and removed again at the end).

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use plexus_e2e::thick::Mode;
use plexus_e2e::*;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const CRD: &str = "ipamclaims.k8s.cni.cncf.io";

fn claims_reach_the_ipam_as_cni_args_and_as_runtime_config_when_declared(mode: &Mode) {
    let ns = KubeNamespace::new("claims");
    let sb = mode.sandbox();
    let ipam_dir = tempfile::tempdir().unwrap();
    recording_ipam(ipam_dir.path(), "rec-ipam");
    let mut bridges = Vec::new();
    let mut prefixes = Vec::new();
    // plain: no capability; declared: the bridge declares ipamClaimReference; unclaimed: selected without a claim.
    for (nad, capabilities) in [
        ("plain", json!({})),
        ("declared", json!({"ipamClaimReference": true})),
        ("unclaimed", json!({"ipamClaimReference": true})),
    ] {
        let bridge = unique("plxb");
        bridges.push(HostLink::adopt(&bridge));
        let (subnet, prefix) = subnet();
        prefixes.push(prefix);
        let mut ipam = sb.host_local(&subnet);
        ipam["type"] = json!("rec-ipam");
        create_nad(
            &ns.name,
            nad,
            Some(
                &json!({"cniVersion": "1.0.0", "name": format!("{nad}-net"), "plugins": [
                {"type": "bridge", "bridge": bridge, "capabilities": capabilities, "ipam": ipam}]}),
            ),
        );
    }
    let selection = json!([
        {"name": "plain", "ipam-claim-reference": "vm-1.plain"},
        {"name": "declared", "interface": "claimed0", "ipam-claim-reference": "vm-1.declared"},
        {"name": "unclaimed"}
    ])
    .to_string();
    let uid = mode.create_pod(&ns.name, "vm-1", &[(NETWORKS, &selection)]);
    let args = pod_args(&ns.name, "vm-1", &uid, &sb.container_id);
    // In thick mode the shim config: the test daemon takes its callers' plugin keys, binDir included.
    let mut config = sb.config(json!({}));
    config["binDir"] = json!(format!(
        "{}:{}",
        ipam_dir.path().display(),
        plugins_dir().display()
    ));
    sb.call("ADD", &args).ok(&config);

    let call = |command: &str, ifname: &str| {
        recorded_ipam_call(ipam_dir.path(), "rec-ipam", command, ifname)
            .unwrap_or_else(|| panic!("the IPAM got no {command} for {ifname}"))
    };
    let claim_args =
        |claim: &str| json!({"ipam-claim-reference": claim, "ipam-claim-namespace": ns.name});
    let (plain, plain_env) = call("ADD", "net1");
    assert_eq!(plain["args"]["cni"], claim_args("vm-1.plain"), "{plain}");
    assert!(
        plain.get("runtimeConfig").is_none(),
        "not declared: {plain}"
    );
    assert!(
        plain_env.contains(&format!("K8S_POD_NAMESPACE={}", ns.name)),
        "{plain_env}"
    );
    let (declared, _) = call("ADD", "claimed0");
    assert_eq!(
        declared["args"]["cni"],
        claim_args("vm-1.declared"),
        "{declared}"
    );
    assert_eq!(
        declared["runtimeConfig"],
        json!({"ipamClaimReference": "vm-1.declared"}),
        "{declared}"
    );
    let (unclaimed, _) = call("ADD", "net3");
    assert!(
        unclaimed.get("args").is_none() && unclaimed.get("runtimeConfig").is_none(),
        "no claim, nothing added: {unclaimed}"
    );
    // The addresses are host-local's, from each network's subnet.
    for (ifname, prefix) in ["net1", "claimed0", "net3"].iter().zip(&prefixes) {
        let ips = sb.netns.ipv4(ifname);
        assert!(
            ips.len() == 1 && ips[0].starts_with(&format!("{prefix}.")),
            "{ifname}: {ips:?}"
        );
    }
    // Kept in the record, left in the pod's annotation, not in network-status (the spec defines no status key).
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
    assert_eq!(record["attachments"][1]["ipamClaimReference"], "vm-1.plain");
    assert_eq!(
        record["attachments"][2]["ipamClaimReference"],
        "vm-1.declared"
    );
    assert!(record["attachments"][3].get("ipamClaimReference").is_none());
    assert_eq!(
        pod_annotations(&ns.name, "vm-1")[NETWORKS].as_str(),
        Some(selection.as_str())
    );
    let status = network_status(&ns.name, "vm-1");
    assert_eq!(status.len(), 4);
    assert!(
        status
            .iter()
            .all(|e| e.as_object().unwrap().keys().all(|k| !k.contains("claim"))),
        "{status:?}"
    );

    // DEL tells the IPAM the same, so it can keep a claimed address.
    sb.call("DEL", &args).ok(&config);
    let (plain_del, _) = call("DEL", "net1");
    assert_eq!(plain_del["args"]["cni"], claim_args("vm-1.plain"));
    let (declared_del, _) = call("DEL", "claimed0");
    assert_eq!(
        declared_del["runtimeConfig"]["ipamClaimReference"],
        "vm-1.declared"
    );
    sb.assert_clean();
}

plexus_e2e::in_both_modes!(claims_reach_the_ipam_as_cni_args_and_as_runtime_config_when_declared);

/// The IPAMClaim CRD applied from `crds/optional/`, deleted on drop (also when the test fails).
struct ClaimCrd;

impl ClaimCrd {
    fn absent() {
        kubectl(
            &["delete", "crd", CRD, "--ignore-not-found", "--wait=true"],
            None,
        );
    }

    fn apply() -> Self {
        let crd = repo().join("crds/optional/ipamclaims.yaml");
        kubectl(&["apply", "-f", &crd.display().to_string()], None);
        // Served once a list of the resource answers.
        eventually("the IPAMClaim resource served", || {
            kubectl_output(&["get", "ipamclaims", "-A"], None)
                .status
                .success()
                .then_some(())
        });
        ClaimCrd
    }
}

impl Drop for ClaimCrd {
    fn drop(&mut self) {
        let _ = kubectl_output(&["delete", "crd", CRD, "--ignore-not-found"], None);
    }
}

/// Polls `f` every 200 ms until it returns `Some`, for at most 60 s; panics with `what` otherwise.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pod(ns: &str, element: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vm", "namespace": ns, "annotations": {NETWORKS: json!([element]).to_string()}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    })
}

/// A server-side dry run of `object` (the webhook is called, nothing is stored): Ok(stderr, where kubectl prints the
/// admission warnings) when admitted, Err(stderr) when refused.
fn dry_run(object: &Value) -> Result<String, String> {
    let out = kubectl_output(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&object.to_string()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stderr)
    } else {
        Err(stderr)
    }
}

/// Waits until the webhook admits `object` with a warning containing `want` (the API server's discovery and the
/// controller see a CRD come and go within moments, not at once).
fn admitted_with_warning(object: &Value, want: &str) {
    eventually(&format!("a warning with {want:?}"), || {
        let stderr = dry_run(object).unwrap_or_else(|e| panic!("refused: {e}"));
        stderr.contains(want).then_some(())
    });
}

fn create_claim(ns: &str, name: &str, network: &str) {
    let claim = json!({
        "apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"network": network, "interface": "net1"}
    });
    kubectl(&["apply", "-f", "-"], Some(&claim.to_string()));
}

#[test]
fn the_webhook_refuses_ips_with_a_claim_and_warns_about_missing_or_mismatched_claims() {
    let ns = KubeNamespace::new("claim-adm");
    let n = ns.name.as_str();
    create_nad(
        n,
        "blue",
        Some(
            &json!({"cniVersion": "1.0.0", "name": "blue-net", "type": "bridge",
            "ipam": {"type": "host-local", "subnet": "198.18.91.0/24"}}),
        ),
    );
    let claimed = pod(
        n,
        json!({"name": "blue", "ipam-claim-reference": "vm.blue"}),
    );

    // Without the CRD: admitted, with the warning that the claim can't be checked.
    ClaimCrd::absent();
    admitted_with_warning(
        &claimed,
        &format!(
            "network {n}/blue: IPAMClaim {n}/vm.blue can't be checked: the IPAMClaim CRD ({CRD}) is not installed"
        ),
    );

    // ips with a claim: refused, naming the network (with or without the CRD).
    let both = pod(
        n,
        json!({"name": "blue", "ips": ["198.18.91.5/24"], "ipam-claim-reference": "vm.blue"}),
    );
    let err = dry_run(&both).expect_err("ips with a claim was admitted");
    assert!(
        err.contains("denied the request")
            && err.contains(&format!(
                "pod {n}/vm: network {n}/blue asks for both \"ips\" and \"ipam-claim-reference\" (\"vm.blue\")"
            )),
        "{err}"
    );

    let _crd = ClaimCrd::apply();
    admitted_with_warning(
        &claimed,
        &format!("network {n}/blue: IPAMClaim {n}/vm.blue does not exist"),
    );
    create_claim(n, "vm.blue", "blue-net");
    let stderr = dry_run(&claimed).expect("a pod with its claim is admitted");
    assert!(!stderr.contains("IPAMClaim"), "{stderr}");
    create_claim(n, "vm.red", "red-net");
    let stderr = dry_run(&pod(
        n,
        json!({"name": "blue", "ipam-claim-reference": "vm.red"}),
    ))
    .expect("a claim of another network is admitted");
    assert!(
        stderr.contains(&format!(
            "network {n}/blue: IPAMClaim {n}/vm.red is for network \"red-net\" (its spec.network), but the \
             NetworkAttachmentDefinition's network is \"blue-net\""
        )),
        "{stderr}"
    );
    let err = dry_run(&both).expect_err("ips with a claim was admitted");
    assert!(err.contains("asks for both \"ips\""), "{err}");
}
