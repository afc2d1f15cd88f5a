//! Logging: `tracing` to the configured file (JSON lines) or to stderr. Never to stdout, which carries the result.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogSettings;

/// Installs the global subscriber. Returns false when logging could not be set up (the request still runs).
pub fn init(settings: &LogSettings) -> bool {
    let level = std::env::var("PLEXUS_LOG").unwrap_or_else(|_| settings.level.clone());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new(&settings.level));
    // At debug or trace, every span (the request, record lock/write/remove, each delegate) logs its time when it
    // closes (`time.busy`, `time.idle`): the per-phase trace of a request.
    let spans = if level.contains("debug") || level.contains("trace") {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
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
                    .with_span_events(spans)
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
        .with_span_events(spans)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
        .is_ok()
}
