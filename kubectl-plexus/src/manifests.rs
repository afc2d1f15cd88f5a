//! Kubernetes objects from local files, as `kubectl apply -f` reads them: YAML with several documents, JSON, and
//! `List`s (`items`) of objects. The files are the user's own, but a CI job may run this on anything a pull request
//! brings: nothing here panics on bad input, and a file past [`MAX_FILE_BYTES`] is refused.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

/// The largest file read (the API server refuses requests past 3 MiB anyway).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// One object and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `<file>` or `<file>#<document>` (1-based) when the file holds several, with `[item]` inside a List.
    pub source: String,
    pub object: Value,
}

impl Manifest {
    pub fn kind(&self) -> &str {
        self.object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { file: String },
    #[error("{file}: not JSON or YAML: {message}")]
    Syntax { file: String, message: String },
    #[error("{at}: not an object (a mapping with kind and metadata)")]
    NotAnObject { at: String },
}

/// Reads `path` (`-`: standard input).
pub fn read(path: &Path) -> Result<Vec<Manifest>, ReadError> {
    let file = path.display().to_string();
    let io = |source| ReadError::Io {
        file: file.clone(),
        source,
    };
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
    } else {
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
    }
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge { file });
    }
    parse(&file, &text)
}

/// The objects in `text` (the contents of `file`).
pub fn parse(file: &str, text: &str) -> Result<Vec<Manifest>, ReadError> {
    // JSON first (one document), then YAML, which also reads JSON documents separated by `---`.
    let json = text
        .trim_start()
        .starts_with(['{', '['])
        .then(|| serde_json::from_str::<Value>(text).ok())
        .flatten();
    let documents: Vec<Value> = match json {
        // A bare JSON array of objects, as some tools write.
        Some(Value::Array(items)) => items,
        Some(other) => vec![other],
        None => serde_saphyr::from_multiple::<Value>(text).map_err(|e| ReadError::Syntax {
            file: file.to_owned(),
            message: e.to_string(),
        })?,
    };
    let documents: Vec<Value> = documents.into_iter().filter(|d| !d.is_null()).collect();
    let several = documents.len() > 1;
    let mut manifests = Vec::new();
    for (i, document) in documents.into_iter().enumerate() {
        let source = if several {
            format!("{file}#{}", i + 1)
        } else {
            file.to_owned()
        };
        flatten(source, document, &mut manifests)?;
    }
    Ok(manifests)
}

/// `List`s (any kind ending in `List` that carries `items`) become their items.
fn flatten(source: String, object: Value, out: &mut Vec<Manifest>) -> Result<(), ReadError> {
    if !object.is_object() {
        return Err(ReadError::NotAnObject { at: source });
    }
    let is_list = object
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    match object.get("items") {
        Some(Value::Array(items)) if is_list => {
            for (i, item) in items.iter().enumerate() {
                flatten(format!("{source}[{i}]"), item.clone(), out)?;
            }
            Ok(())
        }
        _ => {
            out.push(Manifest { source, object });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_lists_and_json_are_read() {
        let yaml = "kind: Pod\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- kind: Pod\n  metadata: {name: b}\n- kind: Namespace\n  metadata: {name: c}\n";
        let got = parse("f.yaml", yaml).unwrap();
        let sources: Vec<&str> = got.iter().map(|m| m.source.as_str()).collect();
        assert_eq!(sources, ["f.yaml#1", "f.yaml#2[0]", "f.yaml#2[1]"]);
        assert_eq!(got[2].kind(), "Namespace");
        let json = r#"{"kind":"PodList","items":[{"kind":"Pod","metadata":{"name":"x"}}]}"#;
        let got = parse("f.json", json).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].source, "f.json[0]");
        // JSON documents separated as YAML documents.
        let got = parse(
            "f.yaml",
            "{\"kind\":\"Pod\"}\n---\n{\"kind\":\"Namespace\"}",
        )
        .unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for text in ["kind: [", "{", "- 1\n- 2\n", "just a string", "[1, 2]"] {
            assert!(parse("f", text).is_err(), "{text}");
        }
        assert!(parse("f", "").unwrap().is_empty());
    }
}
