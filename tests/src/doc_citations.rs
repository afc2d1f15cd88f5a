//! What the docs say their tests show, checked against the tests' text.
//!
//! The docs cite tests as `file::test` (or `module::tests::test`). Two tables also name what the test asserts, and
//! there a cited test must contain it, not only exist:
//! - `docs/errors.md`: a row's code (e.g. `103`, or the `ErrorCode` variant of that code) must appear in the body of
//!   every test function the row cites;
//! - `docs/controller.md`, "What the webhook refuses": every cited test's body must hold a string literal of which a
//!   piece of at least [`MIN_FRAGMENT`] characters (between format placeholders) is part of the row's message.
//!
//! A citation of a whole module (`record::tests`) is checked for existence only.

/// The shortest piece of a test's string literal that counts as asserting a documented message.
pub const MIN_FRAGMENT: usize = 10;

/// One source file: its stem (a module folder's `mod.rs` goes by the folder's name) and its text.
#[derive(Debug, Clone)]
pub struct Source {
    pub stem: String,
    pub text: String,
}

/// The spans of `text` that cite a test: `a::b` or longer, every part snake case, not a `plexus_…` path.
pub fn cited_tests(text: &str) -> Vec<&str> {
    let snake = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.trim_end_matches('…'))
        .filter(|span| {
            let parts: Vec<&str> = span.split("::").collect();
            parts.len() >= 2 && parts.iter().all(|p| snake(p)) && !parts[0].starts_with("plexus_")
        })
        .collect()
}

/// (file, function) of a citation; `None` for a module (`x::tests`).
pub fn file_and_function(citation: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = citation.split("::").collect();
    let test = *parts.last()?;
    (test != "tests").then(|| (parts[0], test))
}

/// The text of `fn <name>(` up to its closing brace (the first line after it that is the `fn` line's indentation
/// and `}`, as rustfmt writes it), in any source of that stem.
pub fn test_body<'a>(sources: &'a [Source], file: &str, name: &str) -> Option<&'a str> {
    let needle = format!("fn {name}(");
    sources
        .iter()
        .filter(|s| s.stem == file)
        .find_map(|s| body_in(&s.text, &needle))
}

/// The bodies of the `pub fn`s of any source that `body` calls (one level: a test's table kept in a helper, such
/// as `plexus_e2e::admission::bad_pod_rows`, counts as the test's).
pub fn helper_bodies<'a>(sources: &'a [Source], body: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    for source in sources {
        let mut rest = source.text.as_str();
        while let Some(at) = rest.find("pub fn ") {
            let after = &rest[at + "pub fn ".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty()
                && after[name.len()..].starts_with('(')
                && body.contains(&format!("{name}("))
                && let Some(helper) = body_in(rest, &format!("fn {name}("))
            {
                found.push(helper);
            }
            rest = &rest[at + "pub fn ".len()..];
        }
    }
    found
}

fn body_in<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    let at = text.find(needle)?;
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = text[line_start..]
        .chars()
        .take_while(|c| *c == ' ')
        .collect();
    let close = format!("\n{indent}}}");
    let mut from = at;
    loop {
        let found = from + text[from..].find(&close)?;
        let after = found + close.len();
        // `}` followed by the end of the line (not `})` or `},` of an inner expression at that indentation).
        if text[after..].starts_with('\n') || after == text.len() {
            return Some(&text[at..after]);
        }
        from = after;
    }
}

/// The string literals of Rust code (plain and raw), unescaped (`\"`, `\\`, `\n`, `\t`; others kept as written);
/// line comments are skipped.
pub fn string_literals(code: &str) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            // A char literal of a quote: '"' or '\"'.
            b'\'' if code[i..].starts_with("'\"'") => i += 3,
            b'\'' if code[i..].starts_with("'\\\"'") => i += 4,
            b'r' if (i == 0 || !is_ident(bytes[i - 1]))
                && matches!(bytes.get(i + 1), Some(b'"' | b'#')) =>
            {
                let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
                if bytes.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let start = i + 2 + hashes;
                let end_marker = format!("\"{}", "#".repeat(hashes));
                match code[start..].find(&end_marker) {
                    Some(len) => {
                        out.push(code[start..start + len].to_owned());
                        i = start + len + end_marker.len();
                    }
                    None => break,
                }
            }
            b'"' => {
                let mut literal = String::new();
                let mut chars = code[i + 1..].char_indices();
                let mut end = None;
                while let Some((j, c)) = chars.next() {
                    match c {
                        '"' => {
                            end = Some(i + 1 + j + 1);
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, 'n')) => literal.push('\n'),
                            Some((_, 't')) => literal.push('\t'),
                            Some((_, '\n')) => {
                                // A line continuation: the next line's indentation is not part of the string.
                                for (_, c) in chars.by_ref() {
                                    if !c.is_whitespace() {
                                        literal.push(c);
                                        break;
                                    }
                                }
                            }
                            Some((_, e @ ('"' | '\\' | '\''))) => literal.push(e),
                            Some((_, other)) => {
                                literal.push('\\');
                                literal.push(other);
                            }
                            None => {}
                        },
                        other => literal.push(other),
                    }
                }
                match end {
                    Some(e) => {
                        out.push(literal);
                        i = e;
                    }
                    None => break,
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The pieces of a literal between format placeholders (`{…}`), trimmed, at least [`MIN_FRAGMENT`] characters.
pub fn fragments(literal: &str) -> Vec<&str> {
    literal
        .split(['{', '}'])
        .map(str::trim)
        .filter(|f| f.chars().count() >= MIN_FRAGMENT)
        .collect()
}

/// Whether `code` holds `number` standing alone (not part of a longer number, word or version like `1.0.0`).
pub fn has_number(code: &str, number: u32) -> bool {
    let n = number.to_string();
    let glued = |b: Option<&u8>| b.is_some_and(|b| is_ident(*b) || *b == b'.');
    code.match_indices(&n).any(|(i, _)| {
        let bytes = code.as_bytes();
        !glued(i.checked_sub(1).and_then(|p| bytes.get(p))) && !glued(bytes.get(i + n.len()))
    })
}

/// The cells of a markdown table row (`| a | b |`); `None` for a line that is not one.
pub fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim_end().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split(" | ").map(str::trim).collect())
}

/// Problems of `docs/errors.md`'s table: a row whose cited test does not name the row's code. `variants` maps a
/// code to the names of its `ErrorCode` variants.
pub fn error_table_problems(
    doc: &str,
    sources: &[Source],
    variant_of: impl Fn(u32) -> Option<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for line in doc.lines() {
        let Some(cells) = cells(line) else { continue };
        let Ok(code) = cells[0].trim().parse::<u32>() else {
            continue;
        };
        for citation in cited_tests(cells.last().unwrap()) {
            let Some((file, function)) = file_and_function(citation) else {
                continue;
            };
            let Some(body) = test_body(sources, file, function) else {
                problems.push(format!("errors.md {code}: {citation} not found"));
                continue;
            };
            let by_name =
                variant_of(code).is_some_and(|v| body.contains(&format!("ErrorCode::{v}")));
            if !has_number(body, code) && !by_name {
                problems.push(format!(
                    "errors.md {code}: {citation} does not assert code {code}"
                ));
            }
        }
    }
    problems
}

/// Problems of a table with a message column and a test column (`message_header` and `test_header` name them,
/// as in its header row): a row that cites no test, or whose cited test holds no piece of its message.
pub fn message_table_problems(
    doc_name: &str,
    doc: &str,
    sources: &[Source],
    message_header: &str,
    test_header: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut columns: Option<(usize, usize)> = None;
    let mut rows = 0;
    for line in doc.lines() {
        let Some(cells) = cells(line) else {
            columns = None;
            continue;
        };
        if let (Some(m), Some(t)) = (
            cells.iter().position(|c| c.trim() == message_header),
            cells.iter().position(|c| c.trim() == test_header),
        ) {
            columns = Some((m, t));
            continue;
        }
        let Some((m, t)) = columns else { continue };
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':' | '|')))
        {
            continue;
        }
        rows += 1;
        let (message, tests) = (cells[m], cells.get(t).copied().unwrap_or_default());
        let citations: Vec<_> = cited_tests(tests)
            .into_iter()
            .filter_map(|c| file_and_function(c).map(|f| (c, f)))
            .collect();
        if citations.is_empty() {
            problems.push(format!("{doc_name}: a row cites no test: {line}"));
        }
        for (citation, (file, function)) in citations {
            let Some(body) = test_body(sources, file, function) else {
                problems.push(format!("{doc_name}: {citation} not found"));
                continue;
            };
            let mut literals = string_literals(body);
            for helper in helper_bodies(sources, body) {
                literals.extend(string_literals(helper));
            }
            let asserted = literals
                .iter()
                .any(|l| fragments(l).iter().any(|f| message.contains(f)));
            if !asserted {
                problems.push(format!(
                    "{doc_name}: {citation} asserts no part of the row's message {message}"
                ));
            }
        }
    }
    if rows == 0 {
        problems.push(format!(
            "{doc_name}: no table with the columns {message_header:?} and {test_header:?}"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tests_table_in_a_public_helper_counts_as_the_tests() {
        let sources = vec![
            Source {
                stem: "admission".into(),
                text: "pub fn rows(n: &str) -> Vec<String> {\n    vec![\"the entry is empty\".into()]\n}\n\
                       pub fn unused() {\n    \"other text\";\n}\n"
                    .into(),
            },
            Source {
                stem: "controller".into(),
                text: "fn refused_rows() {\n    for row in rows(n) {}\n}\n".into(),
            },
        ];
        let body = test_body(&sources, "controller", "refused_rows").unwrap();
        let helpers = helper_bodies(&sources, body);
        assert_eq!(helpers.len(), 1, "{helpers:?}");
        assert!(helpers[0].contains("the entry is empty"));
    }

    fn source(stem: &str, text: &str) -> Vec<Source> {
        vec![Source {
            stem: stem.into(),
            text: text.into(),
        }]
    }

    #[test]
    fn literals_bodies_and_numbers() {
        let code = "fn a() {\n    let x = \"one \\\"two\\\"\"; // \"comment\"\n    let y = r#\"raw \"q\"\"#;\n    let c = '\"';\n}\n\nfn b() {\n    103\n}\n";
        assert_eq!(string_literals(code), ["one \"two\"", "raw \"q\""]);
        let sources = source("f", code);
        assert!(test_body(&sources, "f", "a").unwrap().ends_with("'\"';\n}"));
        assert!(has_number(test_body(&sources, "f", "b").unwrap(), 103));
        assert!(!has_number("1.0.0 and 1030 and x103", 103));
        assert!(!has_number("1.0.0", 1));
        assert_eq!(
            fragments("network {n}/plain: default-route lists"),
            ["/plain: default-route lists"]
        );
    }
}
