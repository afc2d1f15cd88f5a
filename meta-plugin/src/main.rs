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
//! `Command` resets it), stdout flushed at the end. The command line is taken from `main`'s own `argc`/`argv`:
//! `std::env::args` is filled before `main` only on glibc, which passes them to the start-up functions that std
//! registers; musl calls those without arguments, so there it stays empty and `plexus install` would run as the CNI
//! plugin (`meta-plugin/tests/install.rs` runs `install --help` and `install --check` on the built binary, and the
//! chart's readiness probe runs `install --check` in the image).

#![no_main]

use std::ffi::{CStr, OsStr, OsString, c_char, c_int};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;

use clap::Parser;
use plexus_cni::error::PlexusError;
use plexus_cni::shim::Reply;

mod process;

#[derive(Parser)]
#[command(
    name = "plexus",
    version = plexus_cni::VERSION,
    about = "Plexus, the multi-network CNI meta-plugin. Without arguments: the CNI plugin (a container runtime runs it)."
)]
enum Cli {
    /// Install Plexus on this node (the chart's DaemonSet runs this): binary, kubeconfig, conf.
    Install(Box<plexus_cni::install::InstallArgs>),
}

/// The process's entry point, called by the C runtime (see the module's doc).
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let args = arguments(argc, argv);
    process::start();
    let code = run(args);
    let _ = std::io::stdout().flush();
    code
}

/// The command line the C runtime passed to [`main`], copied into owned strings (bytes as they are: a path need not
/// be UTF-8). Stops at the first null pointer, so a wrong `argc` cannot make it read past `argv`'s end.
fn arguments(argc: c_int, argv: *const *const c_char) -> Vec<OsString> {
    let count = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return Vec::new();
    }
    (0..count)
        .map_while(|i| {
            // SAFETY: the C runtime passes `argc` pointers in `argv` followed by a null one; reading stops at the first
            // null pointer, so `i` never passes it.
            let arg = unsafe { *argv.add(i) };
            // SAFETY: each non-null entry is a NUL-terminated string that lives as long as the process; its bytes are
            // copied here.
            (!arg.is_null())
                .then(|| OsStr::from_bytes(unsafe { CStr::from_ptr(arg) }.to_bytes()).to_owned())
        })
        .collect()
}

/// What `plexus` does, and its exit status.
fn run(args: Vec<OsString>) -> c_int {
    if args.len() > 1 {
        let Cli::Install(args) = match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            // --help and --version too: printed on stdout, exit status 0.
            Err(e) => {
                let _ = e.print();
                return e.exit_code();
            }
        };
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
        Ok(_) => plexus_cni::shim::forward_if_shim(env, &stdin).unwrap_or_else(|| {
            plexus_cni::run(env, &stdin).map(|output| Reply {
                success: true,
                stdout: output.unwrap_or_default(),
            })
        }),
        Err(e) => Err(PlexusError::Stdin(e).to_cni()),
    };
    process::print(reply)
}
