//! `plexus`: the binary the container runtime execs. Reads the environment and stdin, runs the request, and prints
//! the result or a CNI error object on stdout.
//!
//! A runtime execs a CNI plugin without arguments; with arguments (`plexus install ...`) this is the node installer
//! the Helm chart's DaemonSet runs (see `plexus_cni::install`).

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use plexus_cni::error::PlexusError;

#[derive(Parser)]
#[command(
    name = "plexus",
    version,
    about = "Plexus, the multi-network CNI meta-plugin. Without arguments: the CNI plugin (a container runtime runs it)."
)]
enum Cli {
    /// Install Plexus on this node (the chart's DaemonSet runs this): binary, kubeconfig, conf.
    Install(Box<plexus_cni::install::InstallArgs>),
}

fn main() -> ExitCode {
    if std::env::args_os().len() > 1 {
        let Cli::Install(args) = Cli::parse();
        return match plexus_cni::install::main(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("plexus install: {e}");
                ExitCode::FAILURE
            }
        };
    }
    plexus_cni::install_panic_hook();
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => plexus_cni::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => Err(PlexusError::Stdin(e).to_cni()),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(text)) => {
            let _ = writeln!(out, "{text}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json());
            ExitCode::FAILURE
        }
    }
}
