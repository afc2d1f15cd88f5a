//! `kubectl plexus status`: per NetworkAttachmentDefinition, valid or not and the pods attached; per node, what the
//! API server knows: Ready, the pods that request networks, those whose NetworksReady is False, and the kubelet's
//! sandbox failures of the last hour (Plexus's CNI errors travel in them).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client};
use plexus_api::nad::NetworkAttachmentDefinition;
use plexus_api::readiness::NETWORKS_READY_CONDITION;
use plexus_api::selection::NETWORKS_ANNOTATION;
use serde::{Deserialize, Serialize};

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
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub ok: bool,
    pub nads: Vec<NadRow>,
    pub nodes: Vec<NodeRow>,
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
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            }],
        };
        assert_eq!(
            render(&status),
            "NetworkAttachmentDefinitions:\n  ns/a: valid, 2 pod(s) attached\n  ns/b: NOT valid, ? pod(s) attached: \
             spec.config is not valid JSON\nNodes:\n  n1: Ready, 3 pod(s) with networks, 1 with NetworksReady=False \
             (ns/p), 4 sandbox failure(s) in the last hour\n"
        );
    }
}
