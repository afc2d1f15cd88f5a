//! `plexus`: the binary the container runtime execs. Reads the environment and stdin, runs the request (or, with a
//! shim config, forwards it to the node daemon: see `shim.rs`), and prints the result or a CNI error object on
//! stdout.
//!
//! A runtime execs a CNI plugin without arguments; with arguments (`plexus install ...`) this is the node installer
//! the Helm chart's DaemonSet runs (see `plexus_cni::install`).
//!
//! The entry point is the C `main`, not Rust's runtime start (`#![no_main]`): every pod start execs `plexus` at least
//! twice, and that start reads `/proc/self/maps` and sets up a signal stack for a stack-overflow message, about
//! 0.14 ms per exec here (docs/benchmarks.md, "The plexus binary"). What of it `plexus` needs is done in
//! [`main`]: closed standard descriptors reopened on `/dev/null`, SIGPIPE ignored (a write to a delegate or a caller
//! that has gone is an error, not the end of the process; children start with it back at its default, as std's
//! `Command` resets it), stdout flushed at the end.

#![no_main]

use std::io::{Read, Write};

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

/// The process's entry point, called by the C runtime (see the module's doc).
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    standard_descriptors();
    // SAFETY: no other thread exists yet, and SIG_IGN installs no handler code.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    let code = run();
    let _ = std::io::stdout().flush();
    code
}

/// Descriptors 0, 1 and 2 open: a closed one is opened on `/dev/null`, so that no file or socket `plexus` opens takes
/// its number (and the result meant for stdout goes to a socket).
fn standard_descriptors() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
    for fd in 0..=2 {
        // SAFETY: only asked for its flags; a closed descriptor answers EBADF and is not otherwise used.
        let fd_ref = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if fcntl(fd_ref, FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF) {
            // Opens the lowest free number: this one, as the lower ones are open.
            let flags = if fd == 0 {
                OFlag::O_RDONLY
            } else {
                OFlag::O_WRONLY
            };
            if let Ok(null) = open("/dev/null", flags, nix::sys::stat::Mode::empty()) {
                std::mem::forget(null);
            }
        }
    }
}

/// What `plexus` does, and its exit status.
fn run() -> std::ffi::c_int {
    if std::env::args_os().len() > 1 {
        let Cli::Install(args) = Cli::parse();
        return match plexus_cni::install::main(*args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("plexus install: {e}");
                1
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
    if reply.success { 0 } else { 1 }
}
