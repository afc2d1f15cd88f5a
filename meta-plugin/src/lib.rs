//! The Plexus CNI meta-plugin as a library; `main.rs` is a thin shell over [`run`].
//!
//! The runtime execs `plexus` like any CNI plugin. Plexus works out the plan (which networks, which interface
//! names), runs the delegate plugins in order, records what it attached so DEL and CHECK never need anything but the
//! node, and returns the default network's result. The map (ARCHITECTURE.md has the flow of one ADD, file by file):
//!
//! * [`request`] — one request: environment ([`env`]) and config ([`config`]) in, the verb run, the result or the
//!   CNI error ([`error`]) out; [`shim`] forwards it to the node daemon instead in thick mode.
//! * [`source`] — where pods and NADs come from (the API server, the daemon's caches, the node's files);
//!   `kubernetes` — the paths that read them (ADD for a pod, DEL without a record, STATUS's networks).
//! * [`hotplug`] — a running pod's edited networks annotation made true in its sandbox (the node daemon's).
//! * [`devices`] — device networks: the pod's devices from the kubelet, device-info files.
//! * [`plan`] — pod + config + NADs → the ordered attachments, by the rules of `plexus_api::policy`.
//! * [`ops`] — one file per verb over a plan or a record; [`invoke`] runs one delegate; [`record`] keeps what was
//!   attached; [`netns`] the default-route change; [`report`] the network-status and events of an ADD.
//! * [`install`] — `plexus install`, the node installer (a different program, linked into the same binary);
//!   [`node_status`] — the node's status Lease, written by the installer and the daemon;
//!   [`files`] — how files in root-owned directories are opened; [`logging`].

#![forbid(unsafe_code)]

/// `--version`'s text: the package version and the commit built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PLEXUS_COMMIT"),
    ")"
);

pub mod config;
pub mod devices;
pub mod env;
pub mod error;
pub mod files;
pub mod hotplug;
pub mod install;
pub mod invoke;
mod kubernetes;
pub mod logging;
pub mod netns;
pub mod node_status;
pub mod ops;
pub mod plan;
pub mod record;
pub mod report;
pub mod request;
pub mod shim;
pub mod source;

pub use env::{CniEnv, valid_container_id};
pub use kubernetes::thread_runtime;
pub use report::{attach_events, network_statuses, warning_events};
pub use request::{
    Logging, Output, PHASE_SPANS, guard, install_panic_hook, run, run_until, run_with,
    version_output,
};
