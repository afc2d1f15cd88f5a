//! Logging: `tracing` to the configured file (JSON lines) or to stderr. Never to stdout, which carries the result.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::fmt::format::FmtSpan;
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

/// The filter: `PLEXUS_LOG` when set and valid, else the configured level.
fn filter(settings: &LogSettings) -> (EnvFilter, String) {
    match std::env::var("PLEXUS_LOG") {
        Ok(level) => match EnvFilter::try_new(&level) {
            Ok(filter) => (filter, level),
            Err(_) => (EnvFilter::new(&settings.level), settings.level.clone()),
        },
        Err(_) => (EnvFilter::new(&settings.level), settings.level.clone()),
    }
}

/// At debug or trace, every span (the request, record lock/write/remove, each delegate) logs its time when it
/// closes (`time.busy`, `time.idle`): the per-phase trace of a request.
fn span_events(level: &str) -> FmtSpan {
    if level.contains("debug") || level.contains("trace") {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    }
}

/// [`init`] with one more layer, whatever the log level (the level filters the log output only; the extra layer
/// brings its own filter, if any).
pub fn init_with(settings: &LogSettings, extra: Option<ExtraLayer>) -> bool {
    let mut output: Option<ExtraLayer> = None;
    if let Some(path) = &settings.file {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => {
                let (filter, level) = filter(settings);
                output = Some(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_current_span(true)
                        .with_span_events(span_events(&level))
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
        let (filter, level) = filter(settings);
        output = Some(
            tracing_subscriber::fmt::layer()
                .with_span_events(span_events(&level))
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
