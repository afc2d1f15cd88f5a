//! Opening files in directories Plexus writes as root (records, locks, the installer's conf and binary): never
//! through a symbolic link, and temporary files created new (`O_EXCL`) under names no other process uses, so that
//! nobody who can write into such a directory can make Plexus write elsewhere or share its half-written file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many names [`create_temp`] tries before giving up (a name is taken only by a file left behind by another
/// process, or made on purpose).
const TEMP_ATTEMPTS: u32 = 16;

/// Options that refuse a symbolic link as the last path component (`O_NOFOLLOW`) and leak no descriptor into
/// delegates (`O_CLOEXEC`, which std sets anyway).
pub fn no_follow() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC);
    options
}

/// Reads a whole file without following a symbolic link at `path`.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    no_follow().read(true).open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Creates a new file `.<stem>.<unique>.tmp` in `dir` with `mode` (before the umask): `O_EXCL` and `O_NOFOLLOW`, so
/// it is a file this call made, never one that was there (a link planted under the name included). The name holds
/// the process id, a per-process counter and the time, and is tried again on a clash: two processes (two installers
/// in a rolling update, which may both be pid 1 of their own pod, or the plugin and the node daemon) never share one.
pub fn create_temp(dir: &Path, stem: &str, mode: u32) -> std::io::Result<(File, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!(
            ".{stem}.{}-{}-{nanos:09}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match no_follow()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temporary file name was free")))
}

/// Flushes a directory's entries (after a rename into it), so that the new name survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
        .open(dir)?
        .sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temp_files_are_new_private_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let (_a, pa) = create_temp(dir.path(), "x", 0o600).unwrap();
        let (_b, pb) = create_temp(dir.path(), "x", 0o600).unwrap();
        assert_ne!(pa, pb);
        let mode = std::fs::metadata(&pa).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        assert!(pa.file_name().unwrap().to_str().unwrap().starts_with(".x."));
    }

    #[test]
    fn links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"secret").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ELOOP), "{e}");
        let e = no_follow().write(true).open(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ELOOP), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
        assert_eq!(read(&target).unwrap(), b"secret");
        sync_dir(dir.path()).unwrap();
        let dir_link = dir.path().join("dirlink");
        std::os::unix::fs::symlink(dir.path(), &dir_link).unwrap();
        assert!(sync_dir(&dir_link).is_err());
    }
}
