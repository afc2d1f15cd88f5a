//! The `plexus-controller` binary: parses the command line and runs the controller until SIGTERM or SIGINT.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = plexus_controller::run::Cli::parse();
    match plexus_controller::run::main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexus-controller: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
