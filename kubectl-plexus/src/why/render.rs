//! The one screen `kubectl plexus why` prints from a [`Report`].

use std::fmt::Write as _;

use super::diagnose::{Report, WebhookFact};

/// Events shown at the end, newest first.
const EVENTS_SHOWN: usize = 5;

/// Longest event message shown (the kubelet repeats long ones).
const EVENT_CHARS: usize = 400;

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let attached = report.networks.iter().filter(|n| n.attached).count();
    let _ = write!(out, "Pod {}", report.pod);
    if let Some(node) = &report.node {
        let _ = write!(out, " on node {node}");
    }
    if let Some(phase) = &report.phase {
        let _ = write!(out, " ({phase})");
    }
    let _ = writeln!(
        out,
        ": {attached} of {} requested network(s) attached — {}",
        report.networks.len(),
        if report.ok { "OK" } else { "PROBLEM" }
    );
    if let Some(c) = &report.networks_ready {
        let _ = writeln!(
            out,
            "NetworksReady: {} ({}): {}",
            c.status, c.reason, c.message
        );
    }
    match &report.webhook {
        Some(WebhookFact::Admitted { warnings }) => {
            let _ = writeln!(out, "Webhook today: admits the pod");
            for w in warnings {
                let _ = writeln!(out, "  warning: {w}");
            }
        }
        Some(WebhookFact::Refused { message }) => {
            let _ = writeln!(out, "Webhook today: refuses the pod: {message}");
        }
        Some(WebhookFact::Unknown { error }) => {
            let _ = writeln!(out, "Webhook today: could not ask ({error})");
        }
        None => {}
    }
    for network in &report.networks {
        let _ = write!(out, "\n{}", network.network);
        if let Some(iface) = &network.interface {
            let _ = write!(out, " as {iface}");
        }
        if network.attached {
            let _ = write!(out, ": attached");
            if let Some(s) = &network.status {
                let _ = write!(
                    out,
                    " ({}{}{})",
                    s.interface.as_deref().unwrap_or("?"),
                    if s.ips.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", s.ips.join(" "))
                    },
                    s.mac
                        .as_deref()
                        .map(|m| format!(", {m}"))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(out);
        } else {
            let _ = writeln!(out, ": NOT attached");
        }
        for f in &network.findings {
            let _ = writeln!(out, "  reason: {}", f.reason);
            let _ = writeln!(out, "  fix:    {}", f.fix);
        }
    }
    if !report.findings.is_empty() {
        let _ = writeln!(out, "\nPod:");
        for f in &report.findings {
            let _ = writeln!(out, "  reason: {}", f.reason);
            let _ = writeln!(out, "  fix:    {}", f.fix);
        }
    }
    if !report.daemon_failures.is_empty() {
        let _ = writeln!(out, "\nplexus-daemon on the node (newest first):");
        for f in report.daemon_failures.iter().take(EVENTS_SHOWN) {
            let _ = writeln!(
                out,
                "  {} {} failed (code {}) at {}: {}",
                f.command, f.container_id, f.code, f.at, f.message
            );
        }
    }
    if !report.events.is_empty() {
        let _ = writeln!(out, "\nEvents (newest first):");
        for e in report.events.iter().take(EVENTS_SHOWN) {
            let _ = writeln!(
                out,
                "  {} {} from {}{}: {}",
                if e.warning { "Warning" } else { "Normal" },
                e.reason,
                e.from,
                if e.count > 1 {
                    format!(" (x{})", e.count)
                } else {
                    String::new()
                },
                cut(&e.message, EVENT_CHARS)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::diagnose::*;
    use super::*;
    use std::collections::BTreeMap;

    fn facts() -> Facts {
        Facts {
            namespace: "ns".into(),
            name: "p".into(),
            node: Some("node1".into()),
            phase: Some("Pending".into()),
            networks: Some("lan@net1, gone".into()),
            ..Facts::default()
        }
    }

    #[test]
    fn a_missing_nad_and_an_attached_network_each_get_their_line() {
        let mut f = facts();
        f.network_status = Some(
            r#"[{"name":"pods","interface":"eth0","ips":["198.18.16.5"],"default":true},
                {"name":"ns/lan","interface":"net1","ips":["198.19.0.5"],"mac":"02:00:00:00:00:01"}]"#
                .into(),
        );
        f.nads = BTreeMap::from([
            (
                "ns/lan".to_owned(),
                NadFact::Found {
                    problems: vec![],
                    valid: Some(("True".into(), "ok".into())),
                    attached_pods: Some(1),
                },
            ),
            ("ns/gone".to_owned(), NadFact::Missing),
        ]);
        f.webhook = Some(WebhookFact::Refused {
            message: "metadata.annotations[k8s.v1.cni.cncf.io/networks]: pod ns/p: network ns/gone: no such \
                      NetworkAttachmentDefinition"
                .into(),
        });
        let report = diagnose(&f);
        assert!(!report.ok);
        assert!(report.networks[0].attached);
        assert!(!report.networks[1].attached);
        let text = render(&report);
        assert!(
            text.starts_with(
                "Pod ns/p on node node1 (Pending): 1 of 2 requested network(s) attached — PROBLEM\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nns/lan as net1: attached (net1, 198.19.0.5, 02:00:00:00:00:01)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\nns/gone: NOT attached\n  reason: NetworkAttachmentDefinition ns/gone does not exist\n  fix:    create it in namespace ns"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  reason: the admission webhook refuses this pod today: metadata.annotations"
            ),
            "{text}"
        );
        // The refusal names ns/gone: it is that network's, not the pod's.
        assert!(!text.contains("\nPod:\n"), "{text}");
    }

    #[test]
    fn a_sandbox_failure_naming_a_network_is_that_networks_reason() {
        let mut f = facts();
        f.networks = Some("lan".into());
        f.nads = BTreeMap::from([(
            "ns/lan".to_owned(),
            NadFact::Found {
                problems: vec![],
                valid: None,
                attached_pods: None,
            },
        )]);
        f.events = vec![EventFact {
            reason: "FailedCreatePodSandBox".into(),
            message: "Failed to create pod sandbox: rpc error: ... plugin type=\"plexus\" name=\"plexus\" failed \
                      (add): network ns/lan (net1): delegate macvlan: failed to find master \"nope0\""
                .into(),
            warning: true,
            from: "kubelet".into(),
            count: 3,
            last: None,
        }];
        let report = diagnose(&f);
        let text = render(&report);
        assert!(
            text.contains(
                "  reason: the node (node1) could not attach it: network ns/lan (net1): delegate macvlan: failed to find master \"nope0\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\nEvents (newest first):\n  Warning FailedCreatePodSandBox from kubelet (x3): "
            ),
            "{text}"
        );
        assert!(!report.ok);
    }

    #[test]
    fn a_healthy_pod_is_ok_and_says_so() {
        let mut f = facts();
        f.networks = Some("lan".into());
        f.network_status =
            Some(r#"[{"name":"ns/lan","interface":"net1","ips":["198.19.0.5"]}]"#.into());
        f.networks_ready = Some(Condition {
            status: "True".into(),
            reason: "Attached".into(),
            message: "all 1 requested network(s) are in network-status".into(),
        });
        f.webhook = Some(WebhookFact::Admitted { warnings: vec![] });
        let report = diagnose(&f);
        assert!(report.ok, "{report:?}");
        let text = render(&report);
        assert!(
            text.contains("1 of 1 requested network(s) attached — OK"),
            "{text}"
        );
        assert!(
            text.contains("ns/lan: attached (net1, 198.19.0.5)"),
            "{text}"
        );
        assert!(text.contains("Webhook today: admits the pod\n"), "{text}");
    }

    #[test]
    fn a_bad_annotation_or_none_is_said_once_for_the_pod() {
        let mut f = facts();
        f.networks = Some("[{".into());
        let text = render(&diagnose(&f));
        assert!(
            text.contains("the networks annotation is not valid"),
            "{text}"
        );
        f.networks = None;
        let report = diagnose(&f);
        assert!(report.ok);
        assert!(render(&report).contains("requests no networks"));
    }

    #[test]
    fn long_event_messages_are_cut() {
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("ééé", 2), "éé…");
    }
}
