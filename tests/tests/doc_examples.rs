//! Every static-mode config of `docs/configuration.md` (a ```json block without `kubeconfig`), run as written
//! except for machine-local values (see `plexus_tests::doc_examples`): ADD, CHECK, DEL against the reference plugins,
//! and nothing left. The Kubernetes-mode blocks are run by `e2e/tests/doc_examples.rs`.

#![forbid(unsafe_code)]

use plexus_tests::doc_citations::{self, Source};
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

/// Every `.rs` file of the workspace's crates.
fn sources() -> Vec<Source> {
    fn walk(dir: &std::path::Path, out: &mut Vec<Source>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                // A module folder's `mod.rs` is named after its folder.
                let stem = match path.file_stem().unwrap().to_string_lossy().into_owned() {
                    m if m == "mod" => path
                        .parent()
                        .and_then(|d| d.file_name())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    stem => stem,
                };
                let text = std::fs::read_to_string(&path).unwrap();
                out.push(Source { stem, text });
            }
        }
    }
    let mut out = Vec::new();
    for krate in ["api", "meta-plugin", "daemon", "controller", "tests", "e2e"] {
        walk(&repo().join(krate), &mut out);
    }
    out
}

/// Every `.md` file of the repository (not under hidden folders, `target` or the tool cache).
fn markdown_files() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo(), &mut out);
    out.sort();
    out
}

/// The docs name the tests that show each claim (`module::test`, `module::tests::test`, e2e `file::test`): every
/// one must exist, in a file of that name. Every `.md` of the repository is read.
#[test]
fn every_test_the_docs_name_exists() {
    let sources = sources();
    let mut missing = Vec::new();
    let mut named = 0;
    let docs = markdown_files();
    for required in [
        "README.md",
        "docs/errors.md",
        "docs/controller.md",
        "e2e/README.md",
        "CHANGELOG.md",
    ] {
        assert!(
            docs.contains(&repo().join(required)),
            "{required} is not read"
        );
    }
    for path in docs {
        let doc = path.strip_prefix(repo()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        for span in doc_citations::cited_tests(&text) {
            let Some((file, test)) = doc_citations::file_and_function(span) else {
                continue;
            };
            named += 1;
            let found = sources
                .iter()
                .filter(|s| s.stem == file)
                .any(|s| s.text.contains(&format!("fn {test}(")));
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

fn variant_of(code: u32) -> Option<String> {
    plexus_api::cni::ErrorCode::ALL
        .iter()
        .find(|c| c.code() == code)
        .map(|c| format!("{c:?}"))
}

/// A cited test must contain what its row says it shows: in `docs/errors.md` the row's code, in `docs/controller.md`'s
/// table of refusals a piece of the row's message (`plexus_tests::doc_citations`).
#[test]
fn every_cited_test_asserts_what_its_row_names() {
    let sources = sources();
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    let mut problems =
        doc_citations::error_table_problems(&read("docs/errors.md"), &sources, variant_of);
    problems.extend(doc_citations::message_table_problems(
        "docs/controller.md",
        &read("docs/controller.md"),
        &sources,
        "message (after the field)",
        "test",
    ));
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The checker fails a row whose test exists but does not assert the row's code or message.
#[test]
fn the_citation_checker_fails_a_row_whose_test_lacks_its_assertion() {
    let sources = vec![Source {
        stem: "faults".into(),
        text: "#[test]\nfn refused() {\n    assert_eq!(e[\"code\"], 103);\n    refused(&nad, \"spec.config is not valid JSON\");\n}\n\nfn helper() {\n    104\n}\n".into(),
    }];
    let errors = |row: &str| {
        doc_citations::error_table_problems(
            &format!("| Code | Meaning | Test |\n|---|---|---|\n{row}\n"),
            &sources,
            variant_of,
        )
    };
    assert_eq!(
        errors("| 103 | refused | `faults::refused` |"),
        Vec::<String>::new()
    );
    assert_eq!(
        errors("| 104 | record | `faults::refused` |"),
        ["errors.md 104: faults::refused does not assert code 104"]
    );
    assert_eq!(errors("| 105 | gone | `faults::missing` |").len(), 1);
    let messages = |row: &str| {
        doc_citations::message_table_problems(
            "page",
            &format!("| input | message | test |\n|---|---|---|\n{row}\n"),
            &sources,
            "message",
            "test",
        )
    };
    assert_eq!(
        messages("| `{oops` | `spec.config is not valid JSON: …` | `faults::refused` |"),
        Vec::<String>::new()
    );
    assert_eq!(
        messages("| `[1]` | `spec.config must be a JSON object` | `faults::refused` |").len(),
        1
    );
    assert_eq!(
        messages("| `[1]` | `spec.config must be a JSON object` | none |").len(),
        1
    );
}

/// docs/errors.md has one row per code Plexus returns itself: every `ErrorCode` the plugin, the shim and the daemon
/// name has a row, every numbered row is an `ErrorCode`, and every row names at least one test.
#[test]
fn the_error_table_matches_the_codes_the_code_returns() {
    use plexus_api::cni::ErrorCode;
    let text = std::fs::read_to_string(repo().join("docs/errors.md")).unwrap();
    let mut rows = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        if let Ok(code) = cells[0].trim_start_matches("| ").trim().parse::<u32>() {
            let tests = cells.last().unwrap().trim_end_matches(" |");
            assert!(tests.contains('`'), "row {code} names no test: {line}");
            rows.insert(code, line.to_owned());
        }
    }
    let known: std::collections::BTreeMap<String, u32> = ErrorCode::ALL
        .iter()
        .map(|c| (format!("{c:?}"), c.code()))
        .collect();
    for code in rows.keys() {
        assert!(
            known.values().any(|k| k == code),
            "docs/errors.md documents {code}, which is no ErrorCode"
        );
    }
    // What the plugin, the shim and the daemon return: the `ErrorCode`s their code names.
    fn product_sources(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                product_sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push(text.split("\n#[cfg(test)]").next().unwrap().to_owned());
            }
        }
    }
    let mut product = Vec::new();
    for dir in ["meta-plugin/src", "daemon/src"] {
        product_sources(&repo().join(dir), &mut product);
    }
    let mut named = std::collections::BTreeSet::new();
    for source in &product {
        for (i, _) in source.match_indices("ErrorCode::") {
            let name: String = source[i + 11..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if let Some(code) = known.get(&name) {
                named.insert(*code);
            }
        }
    }
    assert!(named.len() > 10, "is the parsing broken? {named:?}");
    let missing: Vec<u32> = named
        .difference(&rows.keys().copied().collect())
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "codes returned but not in docs/errors.md: {missing:?}"
    );
}
