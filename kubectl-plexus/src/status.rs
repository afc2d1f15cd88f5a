//! `kubectl plexus status`: per NetworkAttachmentDefinition, valid or not and the pods attached; per node, what the
//! API server knows: Ready, the pods that request networks, those whose NetworksReady is False, the kubelet's
//! sandbox failures of the last hour (Plexus's CNI errors travel in them), and what the node's Plexus publishes in
//! its status Lease (`plexus_api::node_status`): mode, version, the conf and its cluster network, the daemon's
//! readiness, records and failed requests.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};
use plexus_api::nad::NetworkAttachmentDefinition;
use plexus_api::readiness::NETWORKS_READY_CONDITION;
use plexus_api::selection::NETWORKS_ANNOTATION;
use serde::{Deserialize, Serialize};

use crate::node_lease::{NodePlexus, holder, node_leases};
use crate::why::diagnose::NadFact;
use crate::why::gather::nad_fact;

/// Sandbox failures older than this are not counted.
const RECENT_SECONDS: i64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NadRow {
    /// `namespace/name`.
    pub nad: String,
    pub valid: bool,
    /// The first problem, when not valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_pods: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    /// `None`: the Node could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    pub pods_with_networks: usize,
    pub networks_not_ready: Vec<String>,
    pub sandbox_failures_last_hour: i32,
    /// What the node's Plexus publishes; `None`: nothing (no installer there, or its Lease can't be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plexus: Option<NodePlexus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub ok: bool,
    pub nads: Vec<NadRow>,
    pub nodes: Vec<NodeRow>,
    /// Why the nodes' status Leases could not be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_error: Option<String>,
}

pub async fn status(client: &Client, namespace: Option<&str>) -> anyhow::Result<Status> {
    let nads: Api<NetworkAttachmentDefinition> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut out = Status {
        ok: true,
        ..Status::default()
    };
    for nad in nads.list(&ListParams::default()).await?.items {
        let name = format!(
            "{}/{}",
            nad.metadata.namespace.as_deref().unwrap_or_default(),
            nad.metadata.name.as_deref().unwrap_or_default()
        );
        let NadFact::Found {
            problems,
            attached_pods,
            ..
        } = nad_fact(&nad)
        else {
            continue;
        };
        out.ok &= problems.is_empty();
        out.nads.push(NadRow {
            nad: name,
            valid: problems.is_empty(),
            problem: problems.into_iter().next(),
            attached_pods,
        });
    }
    let pods: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut nodes: BTreeMap<String, NodeRow> = BTreeMap::new();
    for pod in pods.list(&ListParams::default()).await?.items {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let row = nodes.entry(node.clone()).or_default();
        row.node = node;
        let requests = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(NETWORKS_ANNOTATION));
        if !requests {
            continue;
        }
        row.pods_with_networks += 1;
        let not_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == NETWORKS_READY_CONDITION))
            .is_some_and(|c| c.status == "False");
        if not_ready {
            out.ok = false;
            row.networks_not_ready.push(format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    if let Ok(list) = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        for node in list.items {
            let name = node.metadata.name.clone().unwrap_or_default();
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.status == "True");
            let row = nodes.entry(name.clone()).or_default();
            row.node = name;
            row.ready = ready;
        }
    }
    match node_leases(client).await {
        Ok(leases) => {
            let now = Timestamp::now().as_second();
            for lease in leases {
                let Some(node) = holder(&lease).map(str::to_owned) else {
                    continue;
                };
                let judged = NodePlexus::judge(&lease, now);
                out.ok &= judged.problems.is_empty();
                let row = nodes.entry(node.clone()).or_default();
                row.node = node;
                row.plexus = Some(judged);
            }
        }
        Err(e) => out.lease_error = Some(e.to_string()),
    }
    let events: Api<Event> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let since = k8s_openapi::jiff::Timestamp::now()
        .as_second()
        .saturating_sub(RECENT_SECONDS);
    if let Ok(list) = events
        .list(&ListParams::default().fields("reason=FailedCreatePodSandBox"))
        .await
    {
        for e in list.items {
            let recent = e
                .last_timestamp
                .as_ref()
                .is_some_and(|t| t.0.as_second() >= since);
            let host = e.source.as_ref().and_then(|s| s.host.clone());
            if let (true, Some(host)) = (recent, host)
                && let Some(row) = nodes.get_mut(&host)
            {
                row.sandbox_failures_last_hour += e.count.unwrap_or(1);
            }
        }
    }
    out.nodes = nodes.into_values().collect();
    Ok(out)
}

pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "NetworkAttachmentDefinitions:");
    if status.nads.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for n in &status.nads {
        let _ = write!(
            out,
            "  {}: {}, {} pod(s) attached",
            n.nad,
            if n.valid { "valid" } else { "NOT valid" },
            n.attached_pods
                .map_or_else(|| "?".to_owned(), |p| p.to_string())
        );
        match &n.problem {
            Some(p) => {
                let _ = writeln!(out, ": {p}");
            }
            None => {
                let _ = writeln!(out);
            }
        }
    }
    let _ = writeln!(out, "Nodes:");
    if status.nodes.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for n in &status.nodes {
        let ready = match n.ready {
            Some(true) => "Ready",
            Some(false) => "NOT Ready",
            None => "readiness unknown",
        };
        let _ = writeln!(
            out,
            "  {}: {ready}, {} pod(s) with networks, {} with NetworksReady=False{}, {} sandbox failure(s) in the last hour",
            n.node,
            n.pods_with_networks,
            n.networks_not_ready.len(),
            if n.networks_not_ready.is_empty() {
                String::new()
            } else {
                format!(" ({})", n.networks_not_ready.join(", "))
            },
            n.sandbox_failures_last_hour
        );
        render_plexus(&mut out, n.plexus.as_ref());
    }
    if let Some(e) = &status.lease_error {
        let _ = writeln!(out, "The nodes' status Leases could not be listed: {e}");
    }
    out
}

/// The lines of one node's Plexus, under its node line.
fn render_plexus(out: &mut String, plexus: Option<&NodePlexus>) {
    let Some(p) = plexus else {
        let _ = writeln!(
            out,
            "    plexus: no status published (no Plexus installer on this node, or it cannot write its Lease)"
        );
        return;
    };
    if let Some(i) = &p.install {
        let _ = writeln!(
            out,
            "    plexus: {} mode, {}; conf {} {}{}{}",
            i.mode,
            i.version,
            i.conf,
            if i.conf_in_place {
                "in place"
            } else {
                "NOT in place"
            },
            i.cluster_network
                .as_deref()
                .map(|c| format!(", cluster network {c}"))
                .unwrap_or_default(),
            if p.install_stale {
                format!(" (STALE: last published {})", i.updated)
            } else {
                String::new()
            }
        );
    }
    if let Some(d) = &p.daemon {
        let _ = writeln!(
            out,
            "    daemon: {}, {} record(s), {} failed request(s) in the last hour{}{}",
            if d.ready { "ready" } else { "NOT ready" },
            d.records,
            d.failures.len(),
            d.failures
                .first()
                .map(|f| format!(
                    " (last: {} {}, code {}: {})",
                    f.command,
                    f.pod.as_deref().unwrap_or(&f.container_id),
                    f.code,
                    f.message
                ))
                .unwrap_or_default(),
            if p.daemon_stale {
                format!(" (STALE: last published {})", d.updated)
            } else {
                String::new()
            }
        );
    }
    for problem in &p.problems {
        let _ = writeln!(out, "    problem: {problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use plexus_api::node_status::{
        DAEMON_ANNOTATION, DaemonStatus, INSTALL_ANNOTATION, InstallStatus,
    };

    #[test]
    fn rows_say_what_is_wrong() {
        let status = Status {
            ok: false,
            nads: vec![
                NadRow {
                    nad: "ns/a".into(),
                    valid: true,
                    problem: None,
                    attached_pods: Some(2),
                },
                NadRow {
                    nad: "ns/b".into(),
                    valid: false,
                    problem: Some("spec.config is not valid JSON".into()),
                    attached_pods: None,
                },
            ],
            nodes: vec![NodeRow {
                node: "n1".into(),
                ready: Some(true),
                pods_with_networks: 3,
                networks_not_ready: vec!["ns/p".into()],
                sandbox_failures_last_hour: 4,
                plexus: None,
            }],
            lease_error: None,
        };
        assert_eq!(
            render(&status),
            "NetworkAttachmentDefinitions:\n  ns/a: valid, 2 pod(s) attached\n  ns/b: NOT valid, ? pod(s) attached: \
             spec.config is not valid JSON\nNodes:\n  n1: Ready, 3 pod(s) with networks, 1 with NetworksReady=False \
             (ns/p), 4 sandbox failure(s) in the last hour\n    plexus: no status published (no Plexus installer \
             on this node, or it cannot write its Lease)\n"
        );
    }

    fn lease(install: Option<&InstallStatus>, daemon: Option<&DaemonStatus>) -> Lease {
        let mut annotations = BTreeMap::new();
        if let Some(i) = install {
            annotations.insert(
                INSTALL_ANNOTATION.to_owned(),
                serde_json::to_string(i).unwrap(),
            );
        }
        if let Some(d) = daemon {
            annotations.insert(
                DAEMON_ANNOTATION.to_owned(),
                serde_json::to_string(d).unwrap(),
            );
        }
        let mut lease = Lease::default();
        lease.metadata.name = Some("plexus-node-n1".into());
        lease.metadata.namespace = Some("plexus".into());
        lease.metadata.annotations = Some(annotations);
        lease
    }

    const NOW: &str = "2026-12-07T12:00:00Z";
    fn now() -> i64 {
        NOW.parse::<Timestamp>().unwrap().as_second()
    }

    fn install(mode: &str) -> InstallStatus {
        InstallStatus {
            mode: mode.into(),
            version: "0.1.0 (commit abc)".into(),
            conf: "/etc/cni/net.d/00-plexus.conflist".into(),
            conf_in_place: true,
            cluster_network: Some("/etc/cni/net.d/10-pods.conflist".into()),
            waiting_for: None,
            error: None,
            updated: "2026-12-07T11:59:30Z".into(),
        }
    }

    #[test]
    fn a_healthy_thick_node_has_no_problem_and_says_its_last_failure() {
        let daemon = DaemonStatus {
            version: "0.1.0 (commit abc)".into(),
            ready: true,
            records: 3,
            failures: vec![plexus_api::node_status::Failure {
                at: "2026-12-07T11:50:00Z".into(),
                pod: Some("ns/p".into()),
                container_id: "c1".into(),
                command: "ADD".into(),
                code: 7,
                message: "no such NetworkAttachmentDefinition".into(),
            }],
            updated: "2026-12-07T11:59:55Z".into(),
        };
        let judged = NodePlexus::judge(&lease(Some(&install("thick")), Some(&daemon)), now());
        assert_eq!(judged.problems, Vec::<String>::new());
        assert_eq!(judged.lease, "plexus/plexus-node-n1");
        let mut out = String::new();
        render_plexus(&mut out, Some(&judged));
        assert_eq!(
            out,
            "    plexus: thick mode, 0.1.0 (commit abc); conf /etc/cni/net.d/00-plexus.conflist in place, cluster \
             network /etc/cni/net.d/10-pods.conflist\n    daemon: ready, 3 record(s), 1 failed request(s) in the last \
             hour (last: ADD ns/p, code 7: no such NetworkAttachmentDefinition)\n"
        );
    }

    #[test]
    fn what_is_wrong_on_a_node_is_named() {
        // Thick mode without the daemon's part.
        let judged = NodePlexus::judge(&lease(Some(&install("thick")), None), now());
        assert_eq!(
            judged.problems,
            ["thick mode, but plexus-daemon publishes no status"]
        );
        // Thin mode needs none.
        assert!(
            NodePlexus::judge(&lease(Some(&install("thin")), None), now())
                .problems
                .is_empty()
        );
        // A stale installer, a conf not in place, a failed pass; a daemon not ready.
        let waiting = InstallStatus {
            conf_in_place: false,
            waiting_for: Some("the cluster network's conf file in /etc/cni/net.d".into()),
            error: Some("boom".into()),
            updated: "2026-12-07T11:00:00Z".into(),
            ..install("thick")
        };
        let daemon = DaemonStatus {
            updated: "2026-12-07T11:59:59Z".into(),
            ..DaemonStatus::default()
        };
        let judged = NodePlexus::judge(&lease(Some(&waiting), Some(&daemon)), now());
        assert!(judged.install_stale && !judged.daemon_stale);
        assert_eq!(
            judged.problems,
            [
                "the installer has not published since 2026-12-07T11:00:00Z (is its pod running?)",
                "the conf /etc/cni/net.d/00-plexus.conflist is not in place: waiting for the cluster network's conf \
                 file in /etc/cni/net.d",
                "the installer's last pass failed: boom",
                "plexus-daemon is not ready (its caches have not synced)",
            ]
        );
        // Nothing, or something unreadable.
        assert_eq!(
            NodePlexus::judge(&lease(None, None), now()).problems,
            ["no installer status"]
        );
        let mut bad = lease(None, None);
        bad.metadata.annotations = Some(BTreeMap::from([(
            INSTALL_ANNOTATION.to_owned(),
            "{".to_owned(),
        )]));
        assert!(
            NodePlexus::judge(&bad, now()).problems[0]
                .starts_with("the installer's status can't be read")
        );
    }
}
