//! `plexus-daemon --config FILE`: thick mode's node daemon. A thin shell over the library (`lib.rs`).

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use plexus_daemon::config::DaemonConfig;

/// Plexus node daemon (thick mode): serves the CNI requests that `plexus` forwards when its config has
/// `daemonSocketDir`, from watch-backed caches of this node's pods and of all NetworkAttachmentDefinitions.
/// Stops on SIGTERM or SIGINT after finishing the requests in flight.
#[derive(Debug, Parser)]
#[command(name = "plexus-daemon", version = plexus_cni::VERSION)]
struct Cli {
    /// The daemon's config file (JSON): every key of the plexus plugin config, plus daemonSocketDir (default
    /// /run/plexus; the socket is plexus.sock in it), nodeName (default: the environment variable NODE_NAME),
    /// metricsAddress (default 127.0.0.1:9464; empty disables), maxConcurrentDelegates (default 32), socketGroup
    /// (a numeric group id allowed to call besides root) and multusApiSocketDir (also serve Multus thick's HTTP API,
    /// for multus-shim and multus-dynamic-networks-controller, on multus.sock in it; unset: not served). See
    /// docs/configuration.md.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = DaemonConfig::load(&cli.config, std::env::var("NODE_NAME").ok())?;
    plexus_cni::install_panic_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        plexus_daemon::run(config, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down");
        })
        .await?;
        anyhow::Ok(())
    })
}
