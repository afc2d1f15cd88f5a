//! Logging: `tracing` to the configured file (JSON lines) or to stderr. Never to stdout, which carries the result.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogSettings;

/// A layer that can sit beside the log output (the node daemon's phase timer).
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber. Returns false when logging could not be set up (the request still runs).
pub fn init(settings: &LogSettings) -> bool {
    init_with(settings, None)
}

/// [`init`] with one more layer, which sees every span whatever the log level (the level filters the log output
/// only).
pub fn init_with(settings: &LogSettings, extra: Option<ExtraLayer>) -> bool {
    let filter =
        EnvFilter::try_from_env("PLEXUS_LOG").unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let mut output: Option<ExtraLayer> = None;
    if let Some(path) = &settings.file {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => {
                output = Some(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_current_span(true)
                        .with_writer(Mutex::new(file))
                        .with_filter(filter)
                        .boxed(),
                );
            }
            Err(e) => eprintln!(
                "plexus: cannot open log file {}: {e}; logging to stderr",
                path.display()
            ),
        }
    } else if !settings.to_stderr && extra.is_none() {
        return false;
    }
    if output.is_none() && (settings.to_stderr || settings.file.is_some()) {
        let filter = EnvFilter::try_from_env("PLEXUS_LOG")
            .unwrap_or_else(|_| EnvFilter::new(&settings.level));
        output = Some(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_filter(filter)
                .boxed(),
        );
    }
    let layers: Vec<ExtraLayer> = output.into_iter().chain(extra).collect();
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok()
}
