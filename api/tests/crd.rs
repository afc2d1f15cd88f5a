//! The committed CRD YAML must be exactly what the Rust types generate.
//!
//! After changing `plexus_api::nad` or `plexus_api::ipam_claim`, regenerate them with:
//!
//! ```text
//! PLEXUS_UPDATE_CRDS=1 cargo test -p plexus-api --test crd
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::CustomResourceExt;
use plexus_api::ipam_claim::IpamClaim;
use plexus_api::nad::NetworkAttachmentDefinition;

fn committed_path(file: &str) -> PathBuf {
    // At run time (cargo sets it), not baked in: a shared target dir may hold this test built in another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
        .join("crds")
        .join(file)
}

/// `file` (under `crds/`) holds `crd`, generated from the Rust type `type_path`.
fn committed_crd_matches(file: &str, type_path: &str, crd: CustomResourceDefinition) {
    let path = committed_path(file);
    let header = format!(
        "# Generated from {type_path}. Do not edit by hand:\n\
         # PLEXUS_UPDATE_CRDS=1 cargo test -p plexus-api --test crd\n"
    );
    let yaml = serde_saphyr::to_string(&crd).expect("the CRD serialises to YAML");
    let want = format!("{header}{yaml}");
    if std::env::var_os("PLEXUS_UPDATE_CRDS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("write the CRD YAML");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is out of date with {type_path}.\n\
         Regenerate it with: PLEXUS_UPDATE_CRDS=1 cargo test -p plexus-api --test crd\n\
         --- generated ---\n{want}",
        path.display()
    );
    // The YAML reads back as the very object kube derives (no YAML quoting or folding surprises).
    let parsed: CustomResourceDefinition =
        serde_saphyr::from_str(&have).expect("the committed CRD parses");
    assert_eq!(parsed, crd);
}

#[test]
fn committed_crd_matches_the_rust_type() {
    committed_crd_matches(
        "network-attachment-definitions.yaml",
        "plexus_api::nad::NetworkAttachmentDefinition",
        NetworkAttachmentDefinition::crd(),
    );
}

/// The IPAMClaim CRD (v1alpha1, as the multi-network spec v1.3 defines it) lives under `crds/optional/`: the chart
/// installs it only with `ipamClaims.installCRD`, and `e2e/cluster up` does not apply it.
#[test]
fn committed_ipam_claim_crd_matches_the_rust_type() {
    let crd = IpamClaim::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("ipamclaims.k8s.cni.cncf.io")
    );
    assert_eq!(crd.spec.names.kind, "IPAMClaim");
    // listKind is left to the API server, which makes it IPAMClaimList.
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let schema = serde_json::to_value(&version.schema).unwrap();
    let props = &schema["openAPIV3Schema"]["properties"];
    assert_eq!(
        props["spec"]["required"],
        serde_json::json!(["interface", "network"])
    );
    assert_eq!(props["status"]["required"], serde_json::json!(["ips"]));
    committed_crd_matches(
        "optional/ipamclaims.yaml",
        "plexus_api::ipam_claim::IpamClaim",
        crd,
    );
}
