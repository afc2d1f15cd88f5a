//! `plexus`: the binary the container runtime execs. Reads the environment and stdin, runs the request, and prints
//! the result or a CNI error object on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

use plexus_cni::error::PlexusError;

fn main() -> ExitCode {
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
