//! `plexus-shim`: thick mode's CNI plugin, what the runtime execs when the node's conf names `"type": "plexus-shim"`
//! (the installer writes it in thick mode). It forwards the request to plexus-daemon's socket (`daemonSocketDir`) and
//! prints the daemon's reply, exactly what `plexus` does with the same config (`plexus_cni::shim`), from a binary of
//! a tenth the size: `plexus` holds thin mode and the installer too, and a runtime pays for the pages a start touches
//! (docs/benchmarks.md, "The shim binary"). VERSION is answered here; a config without `daemonSocketDir` is code 7.
//!
//! Its start is `plexus`'s (`#![no_main]`, the C `main`; see `main.rs`), sharing `process.rs` with it.

#![no_main]

use std::ffi::{c_char, c_int};
use std::io::Read;

use plexus_cni::error::PlexusError;

#[path = "../process.rs"]
mod process;

/// The process's entry point, called by the C runtime. Takes no arguments.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    process::start();
    let mut stdin = Vec::new();
    let reply = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => plexus_cni::shim::shim_only(|k| std::env::var(k).ok(), &stdin),
        Err(e) => Err(PlexusError::Stdin(e).to_cni()),
    };
    process::print(reply)
}
