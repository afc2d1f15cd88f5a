//! What Plexus's HTTPS servers share, so the controller's webhook and the node daemon's metrics for scrapers off the
//! node hold the same limits:
//! * [`connection`]: TCP streams with `TCP_NODELAY` and an idle limit, below the TLS handshake, so a client that
//!   connects and stalls holds nothing for long.
//! * [`access`]: a caller's bearer token authenticated by the API server (TokenReview) and authorized for a
//!   non-resource path (SubjectAccessReview), as kube-rbac-proxy and the API server's own `/metrics` do, with the
//!   verdicts kept for a while and the reviews in flight bounded.

#![forbid(unsafe_code)]

pub mod access;
pub mod connection;
