//! The webhook's certificate and key, read from PEM files and read again when either file changes, so a rotated
//! certificate is served without a restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;

/// What identifies a file's content cheaply: modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Loads the certificate chain and key.
pub async fn load(cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
    RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot load the webhook certificate {} and key {}: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// Polls both files every `interval`; when either changed, loads them again into `config` (new connections get
/// the new certificate). A pair that does not load (say, the key was written but not the certificate yet) is
/// logged and tried again at the next change or tick, and the old pair keeps being served.
pub async fn reload_on_change(
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
) {
    let mut seen = (stamp(&cert), stamp(&key));
    let mut pending = false;
    loop {
        tokio::time::sleep(interval).await;
        let now = (stamp(&cert), stamp(&key));
        if now == seen && !pending {
            continue;
        }
        seen = now;
        match config.reload_from_pem_file(&cert, &key).await {
            Ok(()) => {
                pending = false;
                tracing::info!(cert = %cert.display(), "webhook certificate reloaded");
            }
            Err(e) => {
                pending = true;
                tracing::warn!(cert = %cert.display(), error = %e, "webhook certificate changed but does not load; keeping the old one");
            }
        }
    }
}
