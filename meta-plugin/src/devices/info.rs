//! Device-info files (NPWG device-info spec 1.1): the device plugin's file of a device (`<dir>/dp/...`) is copied
//! to the attachment's (`<dir>/cni/...`, passed as `CNIDeviceInfoFile`) before its delegate runs; after ADD the
//! attachment's file is network-status's `device-info`; DEL removes it.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use plexus_api::devices::{AssignedDevice, plugin_info_file};
use serde_json::Value;

use crate::files;

/// The largest device-info file read (the spec's objects are a few hundred bytes).
const MAX_INFO_BYTES: u64 = 64 << 10;

/// Reads a device-info object: `Ok(None)` when there is no file; an error when it is not a JSON object.
fn read_object(path: &Path) -> Result<Option<Value>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    match files::no_follow().read(true).open(path) {
        Ok(f) => f
            .take(MAX_INFO_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if bytes.len() as u64 > MAX_INFO_BYTES {
        return Err(format!(
            "{}: larger than {MAX_INFO_BYTES} bytes",
            path.display()
        ));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(format!("{}: not a JSON object", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Before the delegate's ADD: the device plugin's device-info file of the device, when it wrote one, becomes the
/// attachment's. Returns whether there was one.
pub fn prepare_info_file(info_dir: &Path, device: &AssignedDevice) -> Result<bool, String> {
    let Some(target) = device.info_file.as_deref().map(Path::new) else {
        return Ok(false);
    };
    let source = plugin_info_file(
        &info_dir.to_string_lossy(),
        &device.resource_name,
        &device.device_id,
    );
    let Some(info) = read_object(Path::new(&source))? else {
        return Ok(false);
    };
    let dir = target
        .parent()
        .ok_or_else(|| format!("{}: no directory", target.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let stem = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mut file, temp) =
        files::create_temp(dir, &stem, 0o644).map_err(|e| format!("{}: {e}", dir.display()))?;
    let written = serde_json::to_vec(&info)
        .map_err(std::io::Error::other)
        .and_then(|bytes| file.write_all(&bytes))
        .and_then(|()| std::fs::rename(&temp, target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(format!("{}: {e}", target.display()));
    }
    Ok(true)
}

/// After the delegate's ADD: the attachment's device-info (the delegate may have written or updated it).
pub fn read_info_file(device: &AssignedDevice) -> Result<Option<Value>, String> {
    match device.info_file.as_deref() {
        Some(path) => read_object(Path::new(path)),
        None => Ok(None),
    }
}

/// At DEL: the attachment's device-info file goes (a missing one is fine).
pub fn remove_info_file(device: &AssignedDevice) -> Result<(), String> {
    match device.info_file.as_deref() {
        Some(path) => match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{path}: {e}")),
        },
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugins_file_becomes_the_attachments_and_goes_at_del() {
        let dir = tempfile::tempdir().unwrap();
        let info_dir = dir.path();
        std::fs::create_dir(info_dir.join("dp")).unwrap();
        let device = AssignedDevice {
            resource_name: "plexus.test/nic".into(),
            device_id: "0000:aa:00.1".into(),
            info_file: Some(plexus_api::devices::attachment_info_file(
                &info_dir.to_string_lossy(),
                "net-a",
                "cid",
                "net1",
            )),
            info: None,
            claim: None,
        };
        // No device plugin file: nothing to copy, nothing to read.
        assert_eq!(prepare_info_file(info_dir, &device), Ok(false));
        assert_eq!(read_info_file(&device), Ok(None));
        let info = r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:aa:00.1"}}"#;
        std::fs::write(
            info_dir.join("dp/plexus.test-nic-0000:aa:00.1-device.json"),
            info,
        )
        .unwrap();
        assert_eq!(prepare_info_file(info_dir, &device), Ok(true));
        let read = read_info_file(&device).unwrap().unwrap();
        assert_eq!(read["pci"]["pci-address"], "0000:aa:00.1");
        remove_info_file(&device).unwrap();
        assert_eq!(read_info_file(&device), Ok(None));
        remove_info_file(&device).unwrap();
        // A file that is not a device-info object is refused, not reported.
        std::fs::write(
            info_dir.join("dp/plexus.test-nic-0000:aa:00.1-device.json"),
            "[1]",
        )
        .unwrap();
        assert!(prepare_info_file(info_dir, &device).is_err());
    }
}
