//! Logging: `tracing` to the configured file (JSON lines) or to stderr. Never to stdout, which carries the result.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Installs the global subscriber. Returns false when logging could not be set up (the request still runs).
pub fn init(settings: &LogSettings) -> bool {
    let filter =
        EnvFilter::try_from_env("PLEXUS_LOG").unwrap_or_else(|_| EnvFilter::new(&settings.level));
    if let Some(path) = &settings.file {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => {
                return tracing_subscriber::fmt()
                    .json()
                    .with_current_span(true)
                    .with_env_filter(filter)
                    .with_writer(Mutex::new(file))
                    .try_init()
                    .is_ok();
            }
            Err(e) => eprintln!(
                "plexus: cannot open log file {}: {e}; logging to stderr",
                path.display()
            ),
        }
    } else if !settings.to_stderr {
        return false;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
        .is_ok()
}
