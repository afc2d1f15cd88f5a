//! The NetworkAttachmentDefinition CRD as the real API server serves it: `e2e/cluster up` applied `crds/*.yaml`; the
//! served schema is the committed one (which `api/tests/crd.rs` checks against the Rust type), NADs with no `spec`,
//! `spec: {}` and a config are stored, and a NAD with a field the schema does not declare is refused by server-side
//! field validation (`--validate=strict`), and pruned, never stored, without it.

#![forbid(unsafe_code)]

use plexus_e2e::*;
use serde_json::{Value, json};

const CRD: &str = "network-attachment-definitions.k8s.cni.cncf.io";

fn nad(ns: &str, name: &str, spec: Option<Value>) -> Value {
    let mut nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns}
    });
    if let Some(spec) = spec {
        nad["spec"] = spec;
    }
    nad
}

fn stored(ns: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl(
        &["get", "net-attach-def", "-n", ns, name, "-o", "json"],
        None,
    ))
    .unwrap()
}

#[test]
fn the_served_crd_is_the_committed_one() {
    let committed =
        std::fs::read_to_string(repo().join("crds/network-attachment-definitions.yaml")).unwrap();
    let committed: Value = serde_saphyr::from_str(&committed).expect("the committed CRD parses");
    let served: Value =
        serde_json::from_str(&kubectl(&["get", "crd", CRD, "-o", "json"], None)).unwrap();
    for key in ["group", "names", "scope", "versions"] {
        let (want, have) = (&committed["spec"][key], &served["spec"][key]);
        // The API server adds defaults (names.listKind, ...): every committed field must be served as written.
        assert!(
            contains(have, want),
            "spec.{key} served differs from crds/\nserved: {have:#}\ncommitted: {want:#}"
        );
    }
}

/// Whether `have` has every field of `want` with the same value (lists element by element, same length).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        // YAML's `minimum: 0.0` is JSON's 0.
        (Value::Number(h), Value::Number(w)) => h.as_f64() == w.as_f64(),
        _ => have == want,
    }
}

#[test]
fn unknown_fields_are_refused_by_strict_validation_and_valid_nads_are_stored() {
    let ns = KubeNamespace::new("crd");
    let n = &ns.name;
    // Legal: no spec (a network on disk), an empty spec, a config.
    let config = r#"{"cniVersion":"1.0.0","type":"bridge"}"#;
    for (name, spec) in [
        ("no-spec", None),
        ("empty-spec", Some(json!({}))),
        ("with-config", Some(json!({"config": config}))),
    ] {
        kubectl(
            &["create", "--validate=strict", "-f", "-"],
            Some(&nad(n, name, spec.clone()).to_string()),
        );
        let have = stored(n, name);
        assert_eq!(have.get("spec"), spec.as_ref(), "{name}: {have}");
    }

    // A field the schema does not declare, under spec and at the top: refused, naming it; nothing stored.
    for (name, object) in [
        (
            "unknown-spec",
            nad(
                n,
                "unknown-spec",
                Some(json!({"config": config, "bogus": 1})),
            ),
        ),
        ("unknown-top", {
            let mut o = nad(n, "unknown-top", None);
            o["extra"] = json!("x");
            o
        }),
    ] {
        let out = kubectl_output(
            &["create", "--validate=strict", "-f", "-"],
            Some(&object.to_string()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was stored");
        let field = if name == "unknown-spec" {
            "spec.bogus"
        } else {
            "extra"
        };
        assert!(
            stderr.contains(&format!("unknown field \"{field}\"")),
            "{name}: {stderr}"
        );
        let get = kubectl_output(&["get", "net-attach-def", "-n", n, name], None);
        assert!(!get.status.success(), "{name} is stored");
    }
    // A wrong type is refused whatever the validation level.
    let out = kubectl_output(
        &["create", "--validate=false", "-f", "-"],
        Some(&nad(n, "number-config", Some(json!({"config": 5}))).to_string()),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.config"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without strict validation the unknown field is pruned: the NAD is stored without it.
    kubectl(
        &["create", "--validate=false", "-f", "-"],
        Some(&nad(n, "pruned", Some(json!({"config": config, "bogus": 1}))).to_string()),
    );
    assert_eq!(stored(n, "pruned")["spec"], json!({"config": config}));
}
