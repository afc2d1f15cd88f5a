//! The house rules of ARCHITECTURE.md that a machine can check: no import circle between the modules of a crate,
//! and no product source file over 800 lines before its tests.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use plexus_tests::repo;

/// The longest a product source file may be, tests aside (ARCHITECTURE.md: split it by what its parts do).
const MAX_CODE_LINES: usize = 800;

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// A file's top-level module under `src/` (`src/ops/add.rs` and `src/ops.rs` are both `ops`; `lib.rs`, `main.rs`
/// are the crate root, which may import anything).
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a file before its `#[cfg(test)]` module.
fn code_of(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// Which top-level modules each top-level module of a crate names (`crate::x`), tests aside.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let module = top_module(src, &file);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = graph.entry(module.clone()).or_default();
        for line in code_of(&text)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
        {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    entry.insert(name);
                }
            }
        }
    }
    graph
}

/// A circle in the graph, if there is one (depth-first search).
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circles_inside_a_crate() {
    for krate in ["api", "meta-plugin", "daemon", "controller"] {
        let graph = imports(&repo().join(krate).join("src"));
        assert!(graph.len() > 3, "{krate}: is the parsing broken? {graph:?}");
        if let Some(circle) = find_circle(&graph) {
            panic!(
                "{krate}: modules import each other in a circle: {}",
                circle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_circle_finder_finds_circles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_circle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let tree: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec![])]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
    assert_eq!(find_circle(&tree), None);
}

#[test]
fn no_product_file_is_over_800_lines_of_code() {
    let mut long = Vec::new();
    for dir in [
        "api/src",
        "meta-plugin/src",
        "daemon/src",
        "controller/src",
        "e2e/src",
        "e2e/benches",
    ] {
        for file in rust_files(&repo().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines = code_of(&text).lines().count();
            if lines > MAX_CODE_LINES {
                long.push(format!(
                    "{}: {lines}",
                    file.strip_prefix(repo()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these by what their parts do: {long:#?}"
    );
}
