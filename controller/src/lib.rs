//! plexus-controller: a validating admission webhook for NetworkAttachmentDefinitions and pods, and reconcilers
//! that report NAD status and whether each pod got the networks it asked for.
//!
//! * [`admission`] — what the webhook decides for one NAD or pod (the rules are `plexus_api`'s).
//! * [`webhook`] — the HTTPS endpoint (`POST /validate`) the API server calls, with its limits; [`tls`] reloads its
//!   certificate; [`connection`] closes connections that stall.
//! * [`reconcile`] — NAD status, the pod condition `k8s.cni.cncf.io/NetworksReady`, Events; [`index`] tracks which
//!   pods use which NAD.
//! * [`leader`] — Lease-based leader election: only the leader reconciles; every replica serves the webhook.
//! * [`metrics`] — Prometheus metrics; [`run`] wires everything together with probes and graceful shutdown.

#![forbid(unsafe_code)]

pub mod admission;
pub mod connection;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod tls;
pub mod webhook;
