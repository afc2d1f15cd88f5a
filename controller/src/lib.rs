//! plexus-controller: a validating admission webhook for NetworkAttachmentDefinitions and pods, a mutating one
//! that adds the device requests a pod's networks need (resource injection), and reconcilers that report
//! NAD status and whether each pod got the networks it asked for.
//!
//! * [`admission`] — what the webhook decides for one NAD or pod (the rules are `plexus_api::admission`'s; this
//!   answers their lookups); [`rule_args`] — the flags that choose the rules (`kubectl plexus validate` takes them
//!   too).
//! * [`injection`] — the mutating webhook's resource injection for one pod (the patch is `plexus_api`'s).
//! * [`webhook`] — the HTTPS endpoints (`POST /validate`, `POST /mutate`) the API server calls, with their limits;
//!   [`tls`] reloads its certificate; `plexus_serve::connection` closes connections that stall.
//! * [`reconcile`] — NAD status, the pod condition `k8s.cni.cncf.io/NetworksReady`, Events; [`index`] tracks which
//!   pods use which NAD.
//! * [`leader`] — Lease-based leader election: only the leader reconciles; every replica serves the webhook.
//! * [`metrics`] — Prometheus metrics; [`run`] wires everything together with probes and graceful shutdown.

#![forbid(unsafe_code)]

pub mod admission;
pub mod index;
pub mod injection;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod rule_args;
pub mod run;
pub mod tls;
pub mod webhook;
