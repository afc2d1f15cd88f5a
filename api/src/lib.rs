//! The Plexus data model.
//!
//! Everything here is pure: no I/O, no async, no clock. The plugin, the controller and the tests share it.
//!
//! * [`admission`] — what the admission webhook decides for a NAD or a pod (and `kubectl plexus validate`), without
//!   I/O: the rules ask for the NADs and namespace labels they need.
//! * [`cni`] — the CNI specification: network configs and config lists, results of every version and the
//!   conversions between them, version negotiation and the error object.
//! * [`selection`] — the pod's `k8s.v1.cni.cncf.io/networks` annotation (both forms).
//! * [`status`] — the `k8s.v1.cni.cncf.io/network-status` annotation built from CNI results.
//! * [`devices`] — device networks: which of the pod's kubelet-allocated devices each attachment gets, and how the
//!   delegate learns it.
//! * [`hotplug`] — what an edited networks annotation does to a running pod: the attachments kept, removed and
//!   added, and the added ones' interface names.
//! * [`injection`] — resource injection: the JSON patch that makes a pod request the devices its networks need
//!   (network-resources-injector's contract), and the check that it requests enough.
//! * [`ipam_claim`] — persistent IPs: the `IPAMClaim` custom resource, how a selection's `ipam-claim-reference`
//!   reaches the delegates, and the webhook's checks of it.
//! * [`nad`] — the NetworkAttachmentDefinition custom resource, how it turns into a delegate config, and the rules a
//!   NAD must pass at admission.
//! * [`node_status`] — what each node's installer and daemon publish about themselves (a Lease per node), for
//!   `kubectl plexus status`.
//! * [`policy`] — the rules that decide what a pod gets (plan and admission webhook share them).
//! * [`plugin_rules`] — a cluster admin's rules for which plugin types NADs in which namespaces may use (webhook).
//! * [`readiness`] — whether a pod's network-status holds the networks it asked for.
//! * [`validate`] — name rules (interfaces, DNS-1123, NAD names) shared by the plugin and the controller.

#![forbid(unsafe_code)]

pub mod admission;
pub mod cni;
pub mod devices;
pub mod hotplug;
pub mod injection;
pub mod ipam_claim;
pub mod nad;
pub mod node_status;
pub mod plugin_rules;
pub mod policy;
pub mod readiness;
pub mod selection;
pub mod status;
pub mod validate;
