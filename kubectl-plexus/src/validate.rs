//! `kubectl plexus validate -f FILE...`: the admission webhook's rules (`plexus_api::admission`, the functions the
//! controller's webhook calls) on local files, without a cluster. The NADs a pod names are looked up among the
//! files' NADs, a namespace's labels among the files' Namespaces; the rules' flags are the controller's
//! ([`RuleArgs`]). Messages are the webhook's, word for word.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use plexus_api::admission::{
    self, LabelsAnswer, Lookup, NadAnswer, Rules, Verdict, decide, nad_of, pod_view,
};
use plexus_api::nad::NetworkAttachmentDefinition;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifests::Manifest;

pub const NAD_KIND: &str = "NetworkAttachmentDefinition";

/// What the webhook would do with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    pub source: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub outcome: Outcome,
    /// The webhook's denial message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Allowed,
    Denied,
    /// The webhook does not review this kind (a Namespace is read for its labels).
    Skipped,
}

/// The files' NADs and namespaces, standing in for the cluster's.
#[derive(Default)]
struct Files {
    nads: HashMap<(String, String), Arc<NetworkAttachmentDefinition>>,
    labels: HashMap<String, BTreeMap<String, String>>,
}

impl Lookup for Files {
    fn nad(&self, namespace: &str, name: &str) -> NadAnswer {
        Ok(self
            .nads
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned())
    }

    fn namespace_labels(&self, namespace: &str) -> LabelsAnswer {
        Ok(self.labels.get(namespace).cloned().unwrap_or_default())
    }
}

fn metadata(object: &Value) -> Result<ObjectMeta, String> {
    match object.get("metadata") {
        None => Ok(ObjectMeta::default()),
        Some(m) => {
            ObjectMeta::deserialize(m).map_err(|e| format!("metadata is not object metadata: {e}"))
        }
    }
}

/// Checks every object of `manifests`; objects without a namespace are in `namespace`.
pub fn validate(manifests: &[Manifest], namespace: &str, rules: &Rules) -> Vec<Checked> {
    let mut files = Files::default();
    for m in manifests {
        let Ok(mut meta) = metadata(&m.object) else {
            continue;
        };
        match m.kind() {
            NAD_KIND => {
                if let Ok(nad) = nad_of(meta, Some(namespace), m.object.get("spec")) {
                    let key = (
                        nad.metadata.namespace.clone().unwrap_or_default(),
                        nad.metadata.name.clone().unwrap_or_default(),
                    );
                    files.nads.insert(key, Arc::new(nad));
                }
            }
            "Namespace" => {
                let name = meta.name.take().unwrap_or_default();
                files
                    .labels
                    .insert(name, meta.labels.take().unwrap_or_default());
            }
            _ => {}
        }
    }
    manifests
        .iter()
        .map(|m| check(m, namespace, rules, &files))
        .collect()
}

fn check(m: &Manifest, namespace: &str, rules: &Rules, files: &Files) -> Checked {
    let meta = metadata(&m.object);
    let object_namespace = meta
        .as_ref()
        .ok()
        .and_then(|meta| meta.namespace.clone())
        .unwrap_or_else(|| namespace.to_owned());
    let name = meta
        .as_ref()
        .ok()
        .map(|meta| pod_view(Some(&object_namespace), meta).name)
        .unwrap_or_default();
    let mut checked = Checked {
        source: m.source.clone(),
        kind: m.kind().to_owned(),
        namespace: object_namespace.clone(),
        name,
        outcome: Outcome::Skipped,
        denial: None,
        warnings: Vec::new(),
    };
    let verdict = match (m.kind(), meta) {
        (NAD_KIND | "Pod", Err(e)) => Verdict::deny(e),
        (NAD_KIND, Ok(meta)) => match nad_of(meta, Some(namespace), m.object.get("spec")) {
            Ok(nad) => decide(files, |answers| admission::review_nad(&nad, rules, answers)),
            Err(denial) => Verdict::deny(denial),
        },
        ("Pod", Ok(meta)) => {
            let view = pod_view(Some(&object_namespace), &meta);
            let mut value = m.object.clone();
            if let Some(map) = value.as_object_mut() {
                map.remove("apiVersion");
                map.remove("kind");
            }
            match Pod::deserialize(&value) {
                Ok(pod) => {
                    let spec = pod.spec.unwrap_or_default();
                    decide(files, |answers| {
                        admission::review_pod(&view, &spec, rules, answers)
                    })
                }
                Err(e) => Verdict::deny(format!("not a pod: {e}")),
            }
        }
        _ => return checked,
    };
    checked.outcome = if verdict.denial.is_some() {
        Outcome::Denied
    } else {
        Outcome::Allowed
    };
    checked.denial = verdict.denial;
    checked.warnings = verdict.warnings;
    checked
}

/// One line per object (its warnings indented below it).
pub fn render(checked: &[Checked]) -> String {
    let mut out = String::new();
    for c in checked {
        let what = match c.outcome {
            Outcome::Allowed => "allowed".to_owned(),
            Outcome::Denied => format!("denied: {}", c.denial.as_deref().unwrap_or_default()),
            Outcome::Skipped if c.kind == "Namespace" => "read for its labels".to_owned(),
            Outcome::Skipped => "skipped: the webhook does not review this kind".to_owned(),
        };
        let kind = if c.kind.is_empty() {
            "(no kind)"
        } else {
            &c.kind
        };
        out.push_str(&format!(
            "{}: {kind} {}/{}: {what}\n",
            c.source, c.namespace, c.name
        ));
        for w in &c.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::parse;
    use plexus_api::policy::Policy;

    fn rules() -> Rules {
        Rules {
            policy: Policy {
                static_delegates: 1,
                ..Policy::default()
            },
            ..Rules::default()
        }
    }

    const FILES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: app, annotations: {k8s.v1.cni.cncf.io/networks: "lan, gone"}}
spec: {containers: [{name: app, image: busybox}]}
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: lan}
spec:
  config: '{"cniVersion":"1.0.0","type":"bridge"}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: bad, namespace: other}
spec:
  config: '{"cniVersion":"1.0.0","type":"/bin/sh"}'
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
"#;

    #[test]
    fn pods_find_nads_anywhere_in_the_files_and_each_object_gets_the_webhooks_verdict() {
        let got = validate(&parse("f.yaml", FILES).unwrap(), "tenant", &rules());
        let outcomes: Vec<Outcome> = got.iter().map(|c| c.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Denied,
                Outcome::Allowed,
                Outcome::Denied,
                Outcome::Skipped
            ]
        );
        // `lan` comes after the pod in the file and is found; `gone` is in no file.
        let denial = got[0].denial.as_deref().unwrap();
        assert!(
            denial.starts_with("metadata.annotations[k8s.v1.cni.cncf.io/networks]: ")
                && denial.contains("network tenant/gone: no such NetworkAttachmentDefinition")
                && !denial.contains("tenant/lan"),
            "{denial}"
        );
        assert_eq!(got[2].namespace, "other");
        assert!(
            got[2].denial.as_deref().unwrap().starts_with("spec.config"),
            "{got:?}"
        );
        // The CNI name differs from the object's (none given): the webhook's warning.
        assert_eq!(got[1].warnings.len(), 0, "{got:?}");
        let text = render(&got);
        assert!(
            text.contains("f.yaml#2: NetworkAttachmentDefinition tenant/lan: allowed\n"),
            "{text}"
        );
        assert!(
            text.contains("f.yaml#4: ConfigMap tenant/cm: skipped"),
            "{text}"
        );
    }

    #[test]
    fn namespace_labels_come_from_the_files() {
        let pod = r#"
kind: Namespace
metadata: {name: locked, labels: {pod-security.kubernetes.io/enforce: baseline}}
---
kind: NetworkAttachmentDefinition
metadata: {name: lan, namespace: locked}
spec: {config: '{"cniVersion":"1.0.0","type":"bridge","capabilities":{"portMappings":true}}'}
---
kind: Pod
metadata:
  name: p
  namespace: locked
  annotations:
    k8s.v1.cni.cncf.io/networks: '[{"name":"lan","portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}]'
spec: {containers: [{name: app, image: busybox}]}
"#;
        let got = validate(&parse("p.yaml", pod).unwrap(), "default", &rules());
        assert_eq!(got[0].outcome, Outcome::Skipped);
        let denial = got[2].denial.as_deref().unwrap_or_default();
        assert!(denial.contains("forbids host ports"), "{got:?}");
    }
}
