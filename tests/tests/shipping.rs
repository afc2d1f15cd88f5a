//! What ships, checked on the repository itself: every crate root forbids unsafe code unless it is on the short list
//! of roots that need it, and the Dockerfile pins its base images by digest and builds the image's binaries with the
//! recipe the tests use (scripts/build-image-binaries).

#![forbid(unsafe_code)]

use plexus_tests::{plexus_bin, repo};
use serde_json::Value;

/// Crate roots with unsafe code, each for a reason of its own.
const UNSAFE_ROOTS: [&str; 4] = [
    // The C `main` (no Rust start-up: docs/benchmarks.md) reads argc/argv and ignores SIGPIPE.
    "meta-plugin/src/main.rs",
    // The same C `main` start for thick mode's plugin (meta-plugin/src/process.rs, shared with main.rs).
    "meta-plugin/src/bin/plexus-shim.rs",
    // The socket's callers' supplementary groups (SO_PEERGROUPS, which nix lacks): one function in server.rs, allowed
    // there; the rest of the crate denies unsafe code.
    "daemon/src/lib.rs",
    // The benchmark reads the resource use of processes through libc.
    "e2e/benches/add_del/main.rs",
];

#[test]
fn every_crate_root_forbids_unsafe_code_but_the_listed_ones() {
    let repo = repo();
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&repo)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut roots = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        for target in package["targets"].as_array().unwrap() {
            let path = std::path::Path::new(target["src_path"].as_str().unwrap());
            roots.push(path.strip_prefix(&repo).unwrap_or(path).to_owned());
        }
    }
    assert!(roots.len() > 20, "{roots:?}");
    let mut missing = Vec::new();
    for root in &roots {
        let text = std::fs::read_to_string(repo.join(root)).unwrap();
        let listed = UNSAFE_ROOTS.iter().any(|r| root.as_os_str() == *r);
        let forbids = text.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]");
        if forbids == listed {
            missing.push(format!(
                "{} (listed as needing unsafe: {listed})",
                root.display()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "each crate root either forbids unsafe code or is listed in UNSAFE_ROOTS, not both: {missing:#?}"
    );
}

#[test]
fn the_dockerfile_pins_its_bases_by_digest_and_builds_with_the_tests_recipe() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a build stage and the image: {froms:?}");
    for from in &froms {
        let image = from.split_whitespace().nth(1).unwrap();
        let digest = image
            .split_once("@sha256:")
            .map(|(_, d)| d)
            .unwrap_or_default();
        assert!(
            digest.len() == 64
                && digest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "not pinned by digest: {from}"
        );
    }
    let runs: Vec<&str> = text.lines().filter(|l| l.starts_with("RUN ")).collect();
    assert_eq!(
        runs,
        ["RUN scripts/build-image-binaries /out"],
        "the one recipe, nothing else"
    );
    assert!(
        text.lines().any(|l| l
            == "COPY --from=build /out/plexus /out/plexus-shim /out/plexus-daemon /out/plexus-controller /usr/local/bin/"),
        "{text}"
    );
    // The recipe scripts/test runs for the tests is the same script.
    let test = std::fs::read_to_string(repo().join("scripts/test")).unwrap();
    assert!(
        test.contains("PLEXUS_IMAGE_BIN_DIR=$(scripts/build-image-binaries)"),
        "scripts/test"
    );
}

/// Every binary's `--version` names the version and the commit it was built from (the commit of this checkout,
/// since the build script reads it when HEAD moves).
#[test]
fn every_binary_names_its_version_and_commit() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .unwrap();
    let commit = String::from_utf8_lossy(&commit.stdout).trim().to_owned();
    assert_eq!(commit.len(), 12, "not a git checkout?");
    let dir = plexus_bin().parent().unwrap().to_owned();
    for (bin, name) in [
        (plexus_bin(), "plexus"),
        (dir.join("plexus-daemon"), "plexus-daemon"),
        (dir.join("plexus-controller"), "plexus-controller"),
        // A kubectl plugin names itself as kubectl shows it.
        (dir.join("kubectl-plexus"), "kubectl plexus"),
    ] {
        let out = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {text}");
        assert_eq!(
            text.trim(),
            format!("{name} {} (commit {commit})", env!("CARGO_PKG_VERSION")),
            "{}",
            bin.display()
        );
    }
}
