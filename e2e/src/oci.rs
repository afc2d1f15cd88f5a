//! OCI image archives for the real node's containerd, written without a registry: one uncompressed layer made of
//! host files and symlinks, a config, a manifest and an index, in the OCI image layout, as one tar file that
//! `ctr images import` reads. Used by `oci-image` (the bin) to make the pause and workload images.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One entry of the image's single layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file copied from the host (keeping its permission bits) to `path` in the image.
    File { path: String, source: PathBuf },
    /// A symlink at `path` pointing to `target`.
    Symlink { path: String, target: String },
    /// An empty directory (mode 0755; `tmp` gets 1777).
    Dir { path: String },
}

impl Entry {
    /// Parses `path=host-file`, `path->target` or `path/` (a directory).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let clean = |p: &str| p.trim_start_matches('/').trim_end_matches('/').to_string();
        if let Some((path, target)) = spec.split_once("->") {
            return Ok(Self::Symlink {
                path: clean(path),
                target: target.to_string(),
            });
        }
        if let Some((path, source)) = spec.split_once('=') {
            return Ok(Self::File {
                path: clean(path),
                source: PathBuf::from(source),
            });
        }
        if spec.ends_with('/') && spec.len() > 1 {
            return Ok(Self::Dir { path: clean(spec) });
        }
        Err(format!(
            "{spec:?}: expected path=host-file, path->target or dir/"
        ))
    }

    fn path(&self) -> &str {
        match self {
            Self::File { path, .. } | Self::Symlink { path, .. } | Self::Dir { path } => path,
        }
    }
}

/// What the image runs and is called.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference containerd lists, e.g. `localhost/plexus-e2e/pause:v1.34.12`.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub entries: Vec<Entry>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// The layer: every directory a path needs, then the entries, sorted by path so the digest is reproducible.
fn layer(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut dirs = std::collections::BTreeSet::new();
    for e in entries {
        let mut p = Path::new(e.path()).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
        if let Entry::Dir { path } = e {
            dirs.insert(path.clone());
        }
    }
    let mut sorted: Vec<&Entry> = entries
        .iter()
        .filter(|e| !matches!(e, Entry::Dir { .. }))
        .collect();
    sorted.sort_by(|a, b| a.path().cmp(b.path()));
    let mut b = tar::Builder::new(Vec::new());
    for d in &dirs {
        let mode = if d == "tmp" { 0o1777 } else { 0o755 };
        let mut h = header(tar::EntryType::Directory, mode, 0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())?;
    }
    for e in sorted {
        match e {
            Entry::File { path, source } => {
                use std::os::unix::fs::PermissionsExt;
                let data = std::fs::read(source).map_err(|err| {
                    std::io::Error::new(err.kind(), format!("{}: {err}", source.display()))
                })?;
                let mode = std::fs::metadata(source)?.permissions().mode() & 0o7777;
                let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            Entry::Symlink { path, target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, path, target)?;
            }
            Entry::Dir { .. } => {}
        }
    }
    b.into_inner()
}

/// Writes `image` as an OCI image layout tar archive to `out`; returns the manifest digest.
pub fn write_archive(image: &Image, out: &Path) -> std::io::Result<String> {
    let layer = layer(&image.entries)?;
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {
            "Entrypoint": image.entrypoint,
            "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "plexus e2e oci-image" }],
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
    }))?;
    let manifest_digest = sha256(&manifest);
    let tag = image
        .name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
        .unwrap_or("latest");
    let index: Value = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "io.containerd.image.name": image.name, "org.opencontainers.image.ref.name": tag },
        }],
    });
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, name, data)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &serde_json::to_vec(&index)?)?;
    for blob in [&config, &manifest, &layer] {
        add(
            &format!("blobs/sha256/{}", &sha256(blob)["sha256:".len()..]),
            blob,
        )?;
    }
    let bytes = b.into_inner()?;
    let tmp = out.with_extension("tmp");
    std::fs::File::create(&tmp)?.write_all(&bytes)?;
    std::fs::rename(&tmp, out)?;
    Ok(manifest_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        assert_eq!(
            Entry::parse("/bin/sh->busybox").unwrap(),
            Entry::Symlink {
                path: "bin/sh".into(),
                target: "busybox".into()
            }
        );
        assert_eq!(
            Entry::parse("bin/busybox=/usr/bin/busybox").unwrap(),
            Entry::File {
                path: "bin/busybox".into(),
                source: "/usr/bin/busybox".into()
            }
        );
        assert_eq!(
            Entry::parse("tmp/").unwrap(),
            Entry::Dir { path: "tmp".into() }
        );
        assert!(Entry::parse("bin").is_err());
    }

    #[test]
    fn the_archive_is_a_layout_whose_digests_match_and_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prog");
        std::fs::write(&file, b"#!/bin/true\n").unwrap();
        let image = Image {
            name: "localhost/test/img:v1".into(),
            entrypoint: vec!["/prog".into()],
            entries: vec![
                Entry::parse(&format!("usr/bin/prog={}", file.display())).unwrap(),
                Entry::parse("prog->/usr/bin/prog").unwrap(),
            ],
        };
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        let digest = write_archive(&image, &a).unwrap();
        assert_eq!(write_archive(&image, &b).unwrap(), digest);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let mut files = std::collections::BTreeMap::new();
        for e in tar::Archive::new(std::fs::File::open(&a).unwrap())
            .entries()
            .unwrap()
        {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            files.insert(e.path().unwrap().to_string_lossy().into_owned(), data);
        }
        for (name, data) in &files {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256(data), format!("sha256:{hex}"), "{name}");
            }
        }
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["manifests"][0]["digest"], digest);
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            "localhost/test/img:v1"
        );
        let manifest: Value =
            serde_json::from_slice(&files[&format!("blobs/sha256/{}", &digest[7..])]).unwrap();
        let layer = &files[&format!(
            "blobs/sha256/{}",
            &manifest["layers"][0]["digest"].as_str().unwrap()[7..]
        )];
        let names: Vec<String> = tar::Archive::new(layer.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["usr/", "usr/bin/", "prog", "usr/bin/prog"]);
    }
}
