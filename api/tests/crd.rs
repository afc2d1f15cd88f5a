//! The committed CRD YAML must be exactly what the Rust type generates.
//!
//! After changing `plexus_api::nad`, regenerate it with:
//!
//! ```text
//! PLEXUS_UPDATE_CRDS=1 cargo test -p plexus-api --test crd
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::CustomResourceExt;
use plexus_api::nad::NetworkAttachmentDefinition;

const HEADER: &str = "# Generated from plexus_api::nad::NetworkAttachmentDefinition. Do not edit by hand:\n\
                      # PLEXUS_UPDATE_CRDS=1 cargo test -p plexus-api --test crd\n";

fn committed_path() -> PathBuf {
    // At run time (cargo sets it), not baked in: a shared target dir may hold this test built in another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
        .join("crds")
        .join("network-attachment-definitions.yaml")
}

fn generated() -> String {
    let yaml = serde_saphyr::to_string(&NetworkAttachmentDefinition::crd())
        .expect("the CRD serialises to YAML");
    format!("{HEADER}{yaml}")
}

#[test]
fn committed_crd_matches_the_rust_type() {
    let path = committed_path();
    let want = generated();
    if std::env::var_os("PLEXUS_UPDATE_CRDS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("write the CRD YAML");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is out of date with plexus_api::nad.\n\
         Regenerate it with: PLEXUS_UPDATE_CRDS=1 cargo test -p plexus-api --test crd\n\
         --- generated ---\n{want}",
        path.display()
    );
    // The YAML reads back as the very object kube derives (no YAML quoting or folding surprises).
    let parsed: CustomResourceDefinition =
        serde_saphyr::from_str(&have).expect("the committed CRD parses");
    assert_eq!(parsed, NetworkAttachmentDefinition::crd());
}
