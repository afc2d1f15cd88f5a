//! `plexus`: the binary the container runtime execs. Reads the environment and stdin, runs the request (or, with a
//! shim config, forwards it to the node daemon: see `shim.rs`), and prints the result or a CNI error object on
//! stdout.
//!
//! A runtime execs a CNI plugin without arguments; with arguments (`plexus install ...`) this is the node installer
//! the Helm chart's DaemonSet runs (see `plexus_cni::install`).

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use plexus_cni::error::PlexusError;
use plexus_cni::shim::{Reply, Shim};

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
    let env = |k: &str| std::env::var(k).ok();
    let reply = match std::io::stdin().read_to_end(&mut stdin) {
        // Thick mode first, before any async runtime or client exists; VERSION is answered here in both modes.
        Ok(_) => match Shim::from_stdin(&stdin)
            .filter(|_| env("CNI_COMMAND").as_deref() != Some("VERSION"))
        {
            Some(Ok(shim)) => shim.forward(env, &stdin),
            Some(Err(e)) => Err(e),
            None => plexus_cni::run(env, &stdin).map(|output| Reply {
                success: true,
                stdout: output.unwrap_or_default(),
            }),
        },
        Err(e) => Err(PlexusError::Stdin(e).to_cni()),
    };
    let reply = reply.unwrap_or_else(|e| Reply {
        success: false,
        stdout: e.to_json(),
    });
    let mut out = std::io::stdout().lock();
    if !reply.stdout.is_empty() {
        let _ = writeln!(out, "{}", reply.stdout);
    }
    if reply.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
