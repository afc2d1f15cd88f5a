//! The files the installer writes (the binary, the conf, the kubeconfig): each through a new temporary file and a
//! rename, and only when its content or mode changed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{InstallError, io};
use crate::files;

/// Writes `bytes` to `path` through a temporary file in the same directory (named so that libcni ignores it) and a
/// rename, so readers see the old or the new content, never a mix; `mode` is set before the rename, and the
/// directory is synced after it. The temporary file is new and unique to this call ([`files::create_temp`]): two
/// installers (a rolling update's old and new pod) never write the same one. A directory watcher (containerd's)
/// sees a rename event, which it reloads on.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mut f, tmp) =
        files::create_temp(dir, &name, mode).map_err(io("create a temporary file for", path))?;
    let result = (|| {
        f.write_all(bytes).map_err(io("write", &tmp))?;
        // The mode given to open is masked by the umask.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("chmod", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        files::sync_dir(dir).map_err(io("sync", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` unless `path` already holds exactly them; true when it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, InstallError> {
    let same_content = fs::read(path).is_ok_and(|current| current == bytes);
    let same_mode = fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode);
    if same_content && same_mode {
        return Ok(false);
    }
    write_atomically(path, bytes, mode)?;
    Ok(true)
}

/// Copies a binary to `target` in the bin dir (atomically, mode 0755) unless the same bytes are there already.
pub fn install_binary(source: &Path, target: &Path) -> Result<bool, InstallError> {
    let bytes = fs::read(source).map_err(io("read", source))?;
    write_if_changed(target, &bytes, 0o755)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_installers_never_share_a_temporary_file() {
        // Two installers (a rolling update's old and new pod) writing the same conf at once: every read sees one
        // whole version, and no temporary file is left.
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("00-plexus.conflist");
        let versions = [vec![b'a'; 64 * 1024], vec![b'b'; 32 * 1024]];
        std::thread::scope(|scope| {
            for version in &versions {
                let conf = &conf;
                scope.spawn(move || {
                    for _ in 0..200 {
                        write_atomically(conf, version, 0o644).unwrap();
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..400 {
                    if let Ok(seen) = fs::read(&conf) {
                        assert!(
                            versions.contains(&seen),
                            "a mixed or partial conf: {} bytes",
                            seen.len()
                        );
                    }
                }
            });
        });
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("00-plexus.conflist")]);
        let mode = fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }
}
