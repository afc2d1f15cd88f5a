//! docs/operations.md's metrics reference: one row `| `name` | help |` for each metric family a component exports,
//! with the HELP text of its exposition. The daemon's and the controller's unit tests call [`assert_documented`]
//! with their own registry's text.

/// The reference rows of an exposition text (its `# HELP` lines).
pub fn rows(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, help)| format!("| `{name}` | {help} |"))
        .collect()
}

/// Fails unless docs/operations.md has every row of `exposition`, printing the rows to paste.
pub fn assert_documented(exposition: &str) {
    let doc = std::fs::read_to_string(crate::repo().join("docs/operations.md")).unwrap();
    let rows = rows(exposition);
    assert!(!rows.is_empty(), "no # HELP lines in {exposition}");
    let missing: Vec<&String> = rows.iter().filter(|r| !doc.contains(r.as_str())).collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md lacks {missing:?}; the reference rows are:\n{}",
        rows.join("\n")
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_come_from_help_lines() {
        let text =
            "# HELP a_total Things done.\n# TYPE a_total counter\na_total 1\n# HELP b Gauge b.\n";
        assert_eq!(
            super::rows(text),
            ["| `a_total` | Things done. |", "| `b` | Gauge b. |"]
        );
    }
}
