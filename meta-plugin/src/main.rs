//! `plexus`: the binary the container runtime execs. Reads the environment and stdin, runs the request (or, with a
//! shim config, forwards it to the node daemon: see `shim.rs`), and prints the result or a CNI error object on
//! stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

use plexus_cni::error::PlexusError;
use plexus_cni::shim::{Reply, Shim};

fn main() -> ExitCode {
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
