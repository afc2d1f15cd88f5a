//! Every static-mode config of `docs/configuration.md` (a ```json block without `kubeconfig`), run as written
//! except for machine-local values (see `plexus_tests::doc_examples`): ADD, CHECK, DEL against the reference plugins,
//! and nothing left. The Kubernetes-mode blocks are run by `e2e/tests/doc_examples.rs`.

#![forbid(unsafe_code)]

use plexus_tests::doc_examples::{Localiser, code_blocks, configuration_page};
use plexus_tests::*;
use serde_json::{Value, json};

#[test]
fn static_mode_examples_of_the_configuration_page_run() {
    let page = configuration_page();
    let configs: Vec<Value> = code_blocks(&page, "json")
        .iter()
        .map(|b| {
            serde_json::from_str(b)
                .unwrap_or_else(|e| panic!("a json block does not parse: {e}\n{b}"))
        })
        .filter(|c: &Value| c.get("kubeconfig").is_none())
        .collect();
    assert!(!configs.is_empty(), "no static-mode example on the page");
    for documented in configs {
        let data = tempfile::tempdir().unwrap();
        let cni_dir = tempfile::tempdir().unwrap();
        let mut local = Localiser::new(data.path(), cni_dir.path(), cni_dir.path(), None);
        let mut config = documented.clone();
        local.plexus_config(&mut config);
        // The runtime fills runtimeConfig for the capabilities the config declares.
        let port_mappings = documented["capabilities"]["portMappings"] == true;
        if port_mappings {
            config["runtimeConfig"] = json!({"portMappings": [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]});
        }
        let ns = Netns::new();
        let id = unique("cd");
        let path = ns.path();
        Call::new("ADD", &id, &path).ok(&config);
        let mut names = ns.link_names();
        names.sort();
        let delegates = documented["delegates"].as_array().unwrap().len();
        let expected: Vec<String> = (0..delegates)
            .map(|i| {
                if i == 0 {
                    "eth0".to_owned()
                } else {
                    format!("net{i}")
                }
            })
            .collect();
        assert_eq!(names, expected, "interfaces of {documented}");
        if port_mappings {
            assert!(
                !iptables_rules_mentioning(&id).is_empty(),
                "portmap made no rule"
            );
        }
        Call::new("CHECK", &id, &path).ok(&config);
        Call::new("DEL", &id, &path).ok(&config);
        let bridges: Vec<String> = local.links.iter().map(|l| l.name.clone()).collect();
        for bridge in &bridges {
            assert_eq!(bridge_ports(bridge), Vec::<String>::new());
        }
        assert_no_leftovers(ns, None, data.path(), cni_dir.path(), &id);
    }
}

/// Every `.rs` file of the workspace's crates: (file stem, text).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                out.push((stem, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    for krate in ["api", "meta-plugin", "tests", "e2e"] {
        walk(&repo().join(krate), &mut out);
    }
    out
}

/// The docs name the tests that show each claim (`module::test`, `module::tests::test`, e2e `file::test`): every
/// one must exist, in a file of that name.
#[test]
fn every_test_the_docs_name_exists() {
    let sources = sources();
    let mut missing = Vec::new();
    let mut named = 0;
    for doc in [
        "README.md",
        "docs/configuration.md",
        "docs/compatibility.md",
        "docs/testing.md",
        "docs/benchmarks.md",
        "docs/install.md",
    ] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        for span in text.split('`').skip(1).step_by(2) {
            let span = span.trim_end_matches('…');
            let parts: Vec<&str> = span.split("::").collect();
            let snake = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            if parts.len() < 2 || !parts.iter().all(|p| snake(p)) || parts[0].starts_with("plexus_")
            {
                continue;
            }
            let (file, test) = (parts[0], parts[parts.len() - 1]);
            if test == "tests" {
                continue;
            }
            named += 1;
            let found = sources
                .iter()
                .filter(|(stem, _)| stem == file)
                .any(|(_, text)| text.contains(&format!("fn {test}(")));
            if !found {
                missing.push(format!("{doc}: {span}"));
            }
        }
    }
    assert!(
        named > 50,
        "the docs name only {named} tests: is the parsing broken?"
    );
    assert!(
        missing.is_empty(),
        "tests the docs name that do not exist: {missing:#?}"
    );
}
