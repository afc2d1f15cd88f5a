//! From what the API server knows about a pod ([`Facts`]) to a [`Report`]: per requested network, attached or not,
//! and when not, the reason and the fix. Pure: [`super::gather`] reads the cluster, this decides.

use std::collections::BTreeMap;

use plexus_api::node_status::Failure;
use plexus_api::readiness::{Mismatch, compare};
use plexus_api::selection::{NetworkSelection, parse_selections};
use plexus_api::status::{NetworkStatus, parse_statuses};
use serde::{Deserialize, Serialize};

/// What the API server said about one NAD the pod selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum NadFact {
    /// No such object.
    Missing,
    /// The GET failed (e.g. forbidden to this user).
    Unreadable { error: String },
    Found {
        /// The admission rules' problems with it (`plexus_api::nad::validate_nad`, what its `Valid` condition says).
        problems: Vec<String>,
        /// Its `Valid` condition as the controller last wrote it: (status, message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        valid: Option<(String, String)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attached_pods: Option<u32>,
    },
}

/// The admission webhook's verdict on the pod as it stands today (a server-side dry-run of its creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "verdict")]
pub enum WebhookFact {
    Admitted {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// Denied by an admission webhook: its message.
    Refused { message: String },
    /// The dry-run could not be made (no permission, API error).
    Unknown { error: String },
}

/// A pod condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// An Event about the pod from Plexus (plugin, daemon, controller) or the kubelet's sandbox failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFact {
    pub reason: String,
    pub message: String,
    pub warning: bool,
    /// Who reported it (`kubelet`, `plexus`, `plexus-controller`).
    pub from: String,
    pub count: i32,
    /// When it last happened (RFC 3339), for ordering: newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// Everything `why` reads about one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub phase: Option<String>,
    /// The networks annotation, as written.
    pub networks: Option<String>,
    /// The network-status annotation, as written.
    pub network_status: Option<String>,
    pub networks_ready: Option<Condition>,
    /// Keyed by `namespace/name`.
    pub nads: BTreeMap<String, NadFact>,
    pub webhook: Option<WebhookFact>,
    /// Newest first.
    pub events: Vec<EventFact>,
    /// The failed requests for this pod that its node's plexus-daemon published, newest first (thick mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub daemon_failures: Vec<Failure>,
}

/// A reason something is wrong, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub reason: String,
    pub fix: String,
}

/// One requested network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkReport {
    /// `namespace/name`.
    pub network: String,
    /// The requested interface, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub attached: bool,
    /// Its network-status entry when attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NetworkStatus>,
    /// What the API server said about its NAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nad: Option<NadFact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

/// What `why` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `namespace/name`.
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Nothing is wrong: every requested network is attached and nothing refuses the pod.
    pub ok: bool,
    pub networks: Vec<NetworkReport>,
    /// What is wrong with the pod as a whole (not one network's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks_ready: Option<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookFact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventFact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub daemon_failures: Vec<Failure>,
}

/// Whether `message` names `network` (`namespace/name`) as a whole word, as Plexus's and the webhook's messages do.
pub fn names_network(message: &str, network: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '/';
    message.match_indices(network).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + network.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

/// Plexus's own CNI error inside a kubelet FailedCreatePodSandBox message (`... plugin type="plexus" ... failed
/// (add): <error>`), or the message itself.
pub fn plexus_error(kubelet_message: &str) -> &str {
    for marker in ["failed (add): ", "failed (delete): "] {
        if let Some(at) = kubelet_message.find(marker) {
            return &kubelet_message[at + marker.len()..];
        }
    }
    kubelet_message
}

const SANDBOX_FAILED: &str = "FailedCreatePodSandBox";

/// A webhook denial's fix, by what it says.
fn webhook_fix(message: &str) -> String {
    if message.contains("namespaceIsolation forbids") {
        "select a NetworkAttachmentDefinition in the pod's own namespace or in a global namespace (globalNamespaces), \
         or have the cluster admin turn namespaceIsolation off"
            .to_owned()
    } else if message.contains("no such NetworkAttachmentDefinition") {
        "create the NetworkAttachmentDefinition, or correct the name in the pod's annotation"
            .to_owned()
    } else {
        "change the pod's annotation or the NetworkAttachmentDefinition until `kubectl plexus validate -f` admits \
         both; a pod created with this annotation today is refused"
            .to_owned()
    }
}

fn nad_findings(network: &str, fact: Option<&NadFact>) -> Vec<Finding> {
    let namespace = network.split('/').next().unwrap_or_default();
    match fact {
        Some(NadFact::Missing) => vec![Finding {
            reason: format!("NetworkAttachmentDefinition {network} does not exist"),
            fix: format!(
                "create it in namespace {namespace} (check it first with `kubectl plexus validate -f FILE`), or \
                 correct the name in the pod's annotation; the kubelet retries the sandbox on its own"
            ),
        }],
        Some(NadFact::Unreadable { error }) => vec![Finding {
            reason: format!("NetworkAttachmentDefinition {network} could not be read: {error}"),
            fix: "run again with a user that may get network-attachment-definitions".to_owned(),
        }],
        Some(NadFact::Found { problems, .. }) if !problems.is_empty() => vec![Finding {
            reason: format!(
                "NetworkAttachmentDefinition {network} is not valid: {}",
                problems.join("; ")
            ),
            fix: format!(
                "fix the NetworkAttachmentDefinition {network} (the webhook now refuses it as it stands; \
                 `kubectl plexus validate -f FILE` checks a fix), then the kubelet's next retry attaches it"
            ),
        }],
        _ => Vec::new(),
    }
}

/// The mismatches of selection `i` alone: those of `selections[..=i]` not among those of `selections[..i]`
/// ([`compare`] matches selections in order, so a prefix decides the same entries).
fn mismatches_of(
    namespace: &str,
    selections: &[NetworkSelection],
    statuses: &[NetworkStatus],
    i: usize,
) -> (Vec<Mismatch>, Option<NetworkStatus>) {
    let not_extra = |m: &Mismatch| !matches!(m, Mismatch::Extra { .. });
    let before: Vec<Mismatch> = compare(namespace, &selections[..i], statuses, &[])
        .into_iter()
        .filter(not_extra)
        .collect();
    let with: Vec<Mismatch> = compare(namespace, &selections[..=i], statuses, &[])
        .into_iter()
        .filter(not_extra)
        .collect();
    let own: Vec<Mismatch> = with.into_iter().filter(|m| !before.contains(m)).collect();
    // The entry this selection matched: the extra entries of the prefix lose exactly one.
    let extras = |n: usize| -> Vec<String> {
        compare(namespace, &selections[..n], statuses, &[])
            .into_iter()
            .filter_map(|m| match m {
                Mismatch::Extra { interface, .. } => Some(interface),
                _ => None,
            })
            .collect()
    };
    let (extra_before, extra_with) = (extras(i), extras(i + 1));
    let entry = extra_before
        .iter()
        .find(|iface| !extra_with.contains(iface))
        .and_then(|iface| {
            statuses
                .iter()
                .find(|s| !s.default && s.interface.as_deref() == Some(iface.as_str()))
        })
        .cloned();
    (own, entry)
}

pub fn diagnose(facts: &Facts) -> Report {
    let mut report = Report {
        pod: format!("{}/{}", facts.namespace, facts.name),
        node: facts.node.clone(),
        phase: facts.phase.clone(),
        ok: true,
        networks: Vec::new(),
        findings: Vec::new(),
        networks_ready: facts.networks_ready.clone(),
        webhook: facts.webhook.clone(),
        events: facts.events.clone(),
        daemon_failures: facts.daemon_failures.clone(),
    };
    // As the plugin (plexus_api::policy::pod_requests): only a missing annotation requests nothing; a present one is
    // parsed, so an empty one is an error there too.
    let Some(annotation) = facts.networks.as_deref() else {
        report.findings.push(Finding {
            reason: "the pod requests no networks (no k8s.v1.cni.cncf.io/networks annotation): it has the cluster \
                     network only"
                .to_owned(),
            fix: "add the annotation to the pod's template (a running pod's networks cannot change; recreate it)"
                .to_owned(),
        });
        return report;
    };
    let selections = match parse_selections(annotation, &facts.namespace) {
        Ok(s) => s,
        Err(e) => {
            report.ok = false;
            report.findings.push(Finding {
                reason: format!("the networks annotation is not valid: {e}"),
                fix: "correct the annotation in the pod's template and recreate the pod".to_owned(),
            });
            return report;
        }
    };
    let statuses = match facts.network_status.as_deref().map(parse_statuses) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            report.findings.push(Finding {
                reason: format!("the network-status annotation cannot be read: {e}"),
                fix: "something other than Plexus wrote it; check who (kubectl get pod -o yaml, managedFields)"
                    .to_owned(),
            });
            Vec::new()
        }
        None => Vec::new(),
    };
    let sandbox_failures: Vec<&EventFact> = facts
        .events
        .iter()
        .filter(|e| e.reason == SANDBOX_FAILED)
        .collect();
    let mut attributed_refusal = false;
    let mut attributed_failure = false;
    for (i, selection) in selections.iter().enumerate() {
        let network = format!("{}/{}", selection.namespace, selection.name);
        let (own, entry) = mismatches_of(&facts.namespace, &selections, &statuses, i);
        let attached = !own.iter().any(|m| matches!(m, Mismatch::Missing { .. }));
        let mut findings = Vec::new();
        for m in &own {
            if !matches!(m, Mismatch::Missing { .. }) {
                findings.push(Finding {
                    reason: m.to_string(),
                    fix: "compare the selection's ips/mac with what the delegate gave (network-status); the \
                          NetworksReady condition says the same"
                        .to_owned(),
                });
            }
        }
        findings.extend(nad_findings(&network, facts.nads.get(&network)));
        if let Some(WebhookFact::Refused { message }) = &facts.webhook
            && names_network(message, &network)
        {
            attributed_refusal = true;
            findings.push(Finding {
                reason: format!("the admission webhook refuses this pod today: {message}"),
                fix: webhook_fix(message),
            });
        }
        if !attached
            && let Some(failure) = sandbox_failures
                .iter()
                .find(|e| names_network(&e.message, &network))
        {
            attributed_failure = true;
            findings.push(Finding {
                reason: format!(
                    "the node{} could not attach it: {}",
                    facts
                        .node
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    plexus_error(&failure.message)
                ),
                fix: "the error is the delegate's (or Plexus's) on the node: fix what it names (the NAD's config, \
                      the node's interfaces or plugins); the kubelet retries the sandbox on its own"
                    .to_owned(),
            });
        }
        // The daemon's own account, when the kubelet's event does not name the network (aged out, or cut short).
        if !attached
            && !attributed_failure
            && let Some(failure) = facts
                .daemon_failures
                .iter()
                .find(|f| f.command == "ADD" && names_network(&f.message, &network))
        {
            attributed_failure = true;
            findings.push(Finding {
                reason: format!(
                    "plexus-daemon on the node{} failed the pod's ADD at {} (CNI error code {}): {}",
                    facts
                        .node
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    failure.at,
                    failure.code,
                    failure.message
                ),
                fix: "the error is the delegate's (or Plexus's) on the node: fix what it names; the kubelet retries \
                      the sandbox on its own"
                    .to_owned(),
            });
        }
        for event in facts
            .events
            .iter()
            .filter(|e| e.warning && e.reason != SANDBOX_FAILED && e.from != "kubelet")
            .filter(|e| names_network(&e.message, &network))
        {
            findings.push(Finding {
                reason: format!("{} ({}): {}", event.reason, event.from, event.message),
                fix: "see the reason: it comes from Plexus".to_owned(),
            });
        }
        if !attached && findings.is_empty() {
            // Plexus attaches all of a sandbox's networks or none: another network's failure holds this one.
            let other = sandbox_failures.first().and_then(|failure| {
                selections
                    .iter()
                    .map(|s| format!("{}/{}", s.namespace, s.name))
                    .find(|other| *other != network && names_network(&failure.message, other))
            });
            findings.push(match other {
                Some(other) => Finding {
                    reason: format!(
                        "held by {other}: the pod's sandbox fails on that network, and Plexus attaches all of a \
                         pod's networks or none"
                    ),
                    fix: format!("fix {other}; this one is attached with it"),
                },
                // A failure that names no network (the API server, the node's disk, the daemon): the pod's reason.
                None if facts.node.is_some() && !sandbox_failures.is_empty() => Finding {
                    reason: "held by the pod's sandbox failure (the pod's reason below), which names no network: \
                             Plexus attaches all of a pod's networks or none"
                        .to_owned(),
                    fix: "fix the pod's reason; this one is attached with the others".to_owned(),
                },
                None => not_attached_yet(facts),
            });
        }
        if !attached || !findings.is_empty() {
            report.ok = false;
        }
        report.networks.push(NetworkReport {
            nad: facts.nads.get(&network).cloned(),
            network,
            interface: selection.interface.clone(),
            attached,
            status: if attached { entry } else { None },
            findings,
        });
    }
    if let Some(WebhookFact::Refused { message }) = &facts.webhook
        && !attributed_refusal
    {
        report.ok = false;
        report.findings.push(Finding {
            reason: format!("the admission webhook refuses this pod today: {message}"),
            fix: webhook_fix(message),
        });
    }
    if !attributed_failure
        && report.networks.iter().any(|n| !n.attached)
        && let Some(failure) = sandbox_failures.first()
    {
        report.findings.push(Finding {
            reason: format!(
                "the kubelet cannot create the pod's sandbox: {}",
                plexus_error(&failure.message)
            ),
            fix: "fix what the error names; the kubelet retries on its own".to_owned(),
        });
    }
    if let Some(c) = &facts.networks_ready
        && c.status == "False"
        && report.ok
    {
        report.ok = false;
        report.findings.push(Finding {
            reason: format!("NetworksReady is False ({}): {}", c.reason, c.message),
            fix: "the controller compares the request with network-status; see its message"
                .to_owned(),
        });
    }
    report
}

fn not_attached_yet(facts: &Facts) -> Finding {
    match &facts.node {
        None => Finding {
            reason: "the pod is not on a node yet, so no network is attached".to_owned(),
            fix: "see why it is not scheduled (kubectl describe pod: events of the scheduler)"
                .to_owned(),
        },
        Some(node) => Finding {
            reason: format!(
                "not in network-status, and no error names it: the sandbox on {node} is not networked yet, or \
                 Plexus could not write network-status"
            ),
            fix: format!(
                "wait for the kubelet's next try; if it stays, look at the events of node {node}'s kubelet and at \
                 Plexus's log on the node"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kubelet's FailedCreatePodSandBox event with `message`.
    fn sandbox_failed(message: &str) -> EventFact {
        EventFact {
            reason: SANDBOX_FAILED.into(),
            message: message.into(),
            warning: true,
            from: "kubelet".into(),
            count: 1,
            last: None,
        }
    }

    #[test]
    fn a_network_is_named_as_a_whole_word_only() {
        assert!(names_network("network ns/lan: no such", "ns/lan"));
        assert!(names_network("\"ns/lan\"", "ns/lan"));
        assert!(!names_network("network ns/lan2: x", "ns/lan"));
        assert!(!names_network("network xns/lan", "ns/lan"));
        assert!(!names_network("", "ns/lan"));
    }

    #[test]
    fn an_empty_annotation_is_not_an_empty_request() {
        let facts = |networks: Option<&str>| Facts {
            namespace: "ns".into(),
            name: "p".into(),
            networks: networks.map(str::to_owned),
            ..Facts::default()
        };
        assert!(diagnose(&facts(None)).ok);
        for empty in ["", "  "] {
            let report = diagnose(&facts(Some(empty)));
            assert!(!report.ok, "{empty:?}");
            assert!(
                report.findings[0]
                    .reason
                    .contains("the networks annotation is empty"),
                "{report:?}"
            );
        }
    }

    #[test]
    fn the_daemons_account_names_the_network_when_the_kubelets_event_is_gone() {
        let failure = |message: &str| Failure {
            at: "2026-12-07T10:00:00Z".into(),
            pod: Some("ns/p".into()),
            container_id: "c1".into(),
            command: "ADD".into(),
            code: 7,
            message: message.into(),
        };
        let facts = Facts {
            namespace: "ns".into(),
            name: "p".into(),
            node: Some("n1".into()),
            networks: Some("lan".into()),
            daemon_failures: vec![failure(
                "network \"ns/lan\" (interface net1): delegate \"macvlan\" ADD failed: Link not found",
            )],
            ..Facts::default()
        };
        let report = diagnose(&facts);
        assert!(!report.ok);
        assert_eq!(
            report.networks[0].findings[0].reason,
            "plexus-daemon on the node (n1) failed the pod's ADD at 2026-12-07T10:00:00Z (CNI error code 7): network \
             \"ns/lan\" (interface net1): delegate \"macvlan\" ADD failed: Link not found"
        );
        assert_eq!(report.networks[0].findings.len(), 1, "{report:?}");
        // A kubelet event that names the network comes first; the daemon's account is not said twice.
        let with_event = Facts {
            events: vec![sandbox_failed(
                "... failed (add): network \"ns/lan\" (interface net1): delegate failed",
            )],
            ..facts
        };
        let report = diagnose(&with_event);
        assert_eq!(report.networks[0].findings.len(), 1, "{report:?}");
        assert!(
            report.networks[0].findings[0]
                .reason
                .starts_with("the node (n1) could not attach it")
        );
    }

    #[test]
    fn a_failure_naming_no_network_holds_every_network_and_is_the_pods_reason() {
        let facts = Facts {
            namespace: "ns".into(),
            name: "p".into(),
            node: Some("n1".into()),
            networks: Some("lan".into()),
            events: vec![sandbox_failed(
                "... failed (add): the plexus daemon at /run/plexus/plexus.sock is not running; try again \
                          later",
            )],
            ..Facts::default()
        };
        let report = diagnose(&facts);
        assert!(
            report.networks[0].findings[0]
                .reason
                .starts_with("held by the pod's sandbox failure"),
            "{report:?}"
        );
        assert_eq!(
            report.findings[0].reason,
            "the kubelet cannot create the pod's sandbox: the plexus daemon at /run/plexus/plexus.sock is not \
             running; try again later"
        );
    }

    #[test]
    fn a_network_held_by_anothers_failure_says_which() {
        let facts = Facts {
            namespace: "ns".into(),
            name: "p".into(),
            node: Some("n1".into()),
            networks: Some("lan, gone".into()),
            nads: BTreeMap::from([("ns/gone".to_owned(), NadFact::Missing)]),
            events: vec![sandbox_failed(
                "... failed (add): pod ns/p: network ns/gone: no such NetworkAttachmentDefinition",
            )],
            ..Facts::default()
        };
        let report = diagnose(&facts);
        assert!(!report.ok);
        assert_eq!(report.networks[0].findings.len(), 1);
        assert!(
            report.networks[0].findings[0]
                .reason
                .starts_with("held by ns/gone: "),
            "{report:?}"
        );
        assert_eq!(report.networks[1].findings.len(), 2, "{report:?}");
        assert!(report.findings.is_empty(), "{report:?}");
    }

    #[test]
    fn plexus_errors_are_cut_out_of_the_kubelets_message() {
        let m = "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox \
                 \"abc\": plugin type=\"plexus\" name=\"plexus\" failed (add): network ns/lan: boom";
        assert_eq!(plexus_error(m), "network ns/lan: boom");
        assert_eq!(plexus_error("other"), "other");
    }
}
