//! What the admission webhook decides for one object: a NetworkAttachmentDefinition (CREATE, UPDATE) or a pod that
//! carries the networks annotation (CREATE). The rules are the plugin's (the same functions it applies at ADD), so
//! the webhook refuses at `kubectl apply` what the plugin would refuse on the node; `kubectl plexus validate` runs
//! these same functions on local files.
//!
//! The rules need a few things from the cluster (the NADs a pod names, a namespace's labels). This module does no
//! I/O: a rule reads them from [`Answers`] and, when one is not there yet, returns the [`Question`]s to answer
//! first. A caller answers them (the webhook from its watch caches and the API server, the command line from the
//! files it was given) and asks again; [`decide`] is that loop for a synchronous [`Lookup`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use crate::cni::NetworkConfigList;
use crate::injection::{SelectedNad, check_requests};
use crate::nad::{
    NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec, nad_config, nad_warnings,
    validate_nad,
};
use crate::plugin_rules::PluginTypeRules;
use crate::policy::{
    NetworkRef, NetworkRequest, PodView, Policy, PolicyError, check_plugin_types,
    delegate_from_nad, host_ports_refused_in, pod_requests, validate_pod,
};
use crate::selection::{DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION};

/// The interface name kubelet gives the default network (CNI_IFNAME).
pub const RUNTIME_IFNAME: &str = "eth0";

/// The webhook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// `None`: allowed. `Some(message)`: denied, with a message naming the field or element.
    pub denial: Option<String>,
    /// Shown by `kubectl` as `Warning: ...` whether or not the object is admitted.
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn allow(warnings: Vec<String>) -> Self {
        Self {
            denial: None,
            warnings,
        }
    }

    pub fn deny(message: String) -> Self {
        Self {
            denial: Some(message),
            warnings: Vec::new(),
        }
    }
}

/// The admin's rules the webhook applies beyond the plugin's config keys.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// The plugin's config keys the pod and NAD rules read (shared with the plugin).
    pub policy: Policy,
    /// Which plugin types NADs in which namespaces may use.
    pub plugin_types: PluginTypeRules,
}

/// Something a rule must know from the cluster before it can decide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Question {
    /// The NetworkAttachmentDefinition `namespace/name`.
    Nad { namespace: String, name: String },
    /// The labels of a namespace.
    NamespaceLabels { namespace: String },
}

/// A NAD lookup's answer: the object, `None` when it does not exist, or why it could not be looked up.
pub type NadAnswer = Result<Option<Arc<NetworkAttachmentDefinition>>, String>;

/// A namespace's labels (none when it does not exist), or why they could not be read.
pub type LabelsAnswer = Result<BTreeMap<String, String>, String>;

/// A rule's outcome: `Err` lists the questions to answer before asking again (never one already answered).
pub type Decision<T> = Result<T, Vec<Question>>;

/// What the caller has answered so far.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    nads: HashMap<(String, String), NadAnswer>,
    labels: HashMap<String, LabelsAnswer>,
    /// Set when a rule asked only what was already answered: from then on an unanswered question reads as a failed
    /// lookup, so the next round decides (a rule's mistake cannot loop).
    closed: bool,
}

/// What a question not answered reads as once the answers are closed.
const NOT_LOOKED_UP: &str = "it was not looked up";

impl Answers {
    pub fn set_nad(&mut self, namespace: &str, name: &str, answer: NadAnswer) {
        self.nads
            .insert((namespace.to_owned(), name.to_owned()), answer);
    }

    pub fn set_namespace_labels(&mut self, namespace: &str, answer: LabelsAnswer) {
        self.labels.insert(namespace.to_owned(), answer);
    }

    /// The questions of `asked` that are still open. When none is, the answers are closed (see [`Answers`]); a
    /// caller answers the ones returned and asks the rule again.
    pub fn open(&mut self, asked: Vec<Question>) -> Vec<Question> {
        let mut open: Vec<Question> = asked
            .into_iter()
            .filter(|q| match q {
                Question::Nad { namespace, name } => {
                    !self.nads.contains_key(&(namespace.clone(), name.clone()))
                }
                Question::NamespaceLabels { namespace } => !self.labels.contains_key(namespace),
            })
            .collect();
        open.sort();
        open.dedup();
        if open.is_empty() {
            self.closed = true;
        }
        open
    }

    /// The NAD `namespace/name`, or the question to ask.
    pub fn nad(&self, namespace: &str, name: &str) -> Result<NadAnswer, Question> {
        match self.nads.get(&(namespace.to_owned(), name.to_owned())) {
            Some(answer) => Ok(answer.clone()),
            None if self.closed => Ok(Err(NOT_LOOKED_UP.to_owned())),
            None => Err(Question::Nad {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
        }
    }

    /// The labels of `namespace`, or the question to ask.
    pub fn namespace_labels(&self, namespace: &str) -> Result<LabelsAnswer, Question> {
        match self.labels.get(namespace) {
            Some(answer) => Ok(answer.clone()),
            None if self.closed => Ok(Err(NOT_LOOKED_UP.to_owned())),
            None => Err(Question::NamespaceLabels {
                namespace: namespace.to_owned(),
            }),
        }
    }
}

/// Where a synchronous caller finds what the rules ask.
pub trait Lookup {
    fn nad(&self, namespace: &str, name: &str) -> NadAnswer;
    fn namespace_labels(&self, namespace: &str) -> LabelsAnswer;
}

/// Answers `question` from `lookup` into `answers`.
pub fn answer(answers: &mut Answers, question: &Question, lookup: &impl Lookup) {
    match question {
        Question::Nad { namespace, name } => {
            answers.set_nad(namespace, name, lookup.nad(namespace, name));
        }
        Question::NamespaceLabels { namespace } => {
            answers.set_namespace_labels(namespace, lookup.namespace_labels(namespace));
        }
    }
}

/// Runs `rule`, answering what it asks from `lookup`, until it decides. Each round answers at least one new
/// question or closes the answers, so it ends; the rules ask all they can in one round (every NAD of a pod at once).
pub fn decide<T>(lookup: &impl Lookup, rule: impl Fn(&Answers) -> Decision<T>) -> T {
    let mut answers = Answers::default();
    loop {
        match rule(&answers) {
            Ok(decided) => return decided,
            Err(asked) => {
                for question in answers.open(asked) {
                    answer(&mut answers, &question, lookup);
                }
            }
        }
    }
}

/// A NAD: denied when [`validate_nad`] finds problems (all are listed, each naming its field), when a plugin type is
/// not in `allowedPluginTypes`, or when the cluster's plugin type rules do not allow one of its plugins in its
/// namespace; warnings from [`nad_warnings`].
pub fn review_nad(
    nad: &NetworkAttachmentDefinition,
    rules: &Rules,
    answers: &Answers,
) -> Decision<Verdict> {
    if let Err(problems) = validate_nad(nad) {
        return Ok(Verdict::deny(problems.join("; ")));
    }
    let name = nad.metadata.name.as_deref().unwrap_or_default();
    let namespace = nad.metadata.namespace.as_deref().unwrap_or("default");
    // validate_nad has read it: a config that is there parses.
    let config = nad_config(name, nad.spec.config.as_deref())
        .ok()
        .flatten()
        .and_then(|v| NetworkConfigList::from_value(v).ok());
    if let Some(config) = config {
        let mut problems = Vec::new();
        if let Err(e) = check_plugin_types(&rules.policy, &format!("{namespace}/{name}"), &config) {
            problems.push(e.to_string());
        }
        if rules.plugin_types.governs(&config) {
            match answers.namespace_labels(namespace).map_err(|q| vec![q])? {
                Ok(labels) => problems.extend(rules.plugin_types.problems(namespace, &labels, &config)),
                Err(e) => problems.push(format!(
                    "the plugin type rules need namespace {namespace}'s labels, which could not be read: {e}"
                )),
            }
        }
        if !problems.is_empty() {
            return Ok(Verdict::deny(problems.join("; ")));
        }
    }
    Ok(Verdict::allow(nad_warnings(nad)))
}

/// A pod as the rules see it: its namespace (`namespace` when given, as an admission request's, else the object's,
/// else `default`), its name (`<generateName>*` before the API server names it) and its annotations.
pub fn pod_view(namespace: Option<&str>, meta: &ObjectMeta) -> PodView {
    PodView {
        namespace: namespace
            .or(meta.namespace.as_deref())
            .unwrap_or("default")
            .to_owned(),
        name: meta
            .name
            .clone()
            .or_else(|| meta.generate_name.as_ref().map(|g| format!("{g}*")))
            .unwrap_or_default(),
        uid: String::new(),
        annotations: meta.annotations.clone().unwrap_or_default(),
    }
}

/// A NAD from its metadata and its `spec` as sent (absent: an empty spec), in `namespace` when the object names
/// none. `Err` is the denial when `spec` is not a NAD's.
pub fn nad_of(
    mut metadata: ObjectMeta,
    namespace: Option<&str>,
    spec: Option<&Value>,
) -> Result<NetworkAttachmentDefinition, String> {
    let spec = match spec {
        None => NetworkAttachmentDefinitionSpec::default(),
        Some(spec) => NetworkAttachmentDefinitionSpec::deserialize(spec)
            .map_err(|e| format!("spec is not a NetworkAttachmentDefinition spec: {e}"))?,
    };
    if metadata.namespace.is_none() {
        metadata.namespace = namespace.map(str::to_owned);
    }
    Ok(NetworkAttachmentDefinition {
        metadata,
        spec,
        status: None,
    })
}

/// The annotation a pod's denial starts with (`metadata.annotations[...]`), or `None` when the pod carries neither
/// the networks nor the default-network annotation (then there is nothing to review or inject).
pub fn networks_field(pod: &PodView) -> Option<String> {
    let field = if pod.annotations.contains_key(NETWORKS_ANNOTATION) {
        NETWORKS_ANNOTATION
    } else if pod.annotations.contains_key(DEFAULT_NETWORK_ANNOTATION) {
        DEFAULT_NETWORK_ANNOTATION
    } else {
        return None;
    };
    Some(format!("metadata.annotations[{field}]"))
}

/// The NADs a pod's requests name, keyed by (namespace, name) (`None`: it does not exist).
pub type FoundNads = HashMap<(String, String), Option<Arc<NetworkAttachmentDefinition>>>;

/// Every NAD `requests` name, asked for all at once. The inner `Err` is the denial when one could not be looked up
/// (the first in request order).
pub fn find_nads(
    field: &str,
    requests: &[NetworkRequest],
    answers: &Answers,
) -> Decision<Result<FoundNads, String>> {
    let mut found = FoundNads::new();
    let mut asked = Vec::new();
    let mut failed = None;
    for request in requests {
        let NetworkRef::Nad { namespace, name } = &request.reference else {
            continue;
        };
        let key = (namespace.clone(), name.clone());
        if found.contains_key(&key) {
            continue;
        }
        match answers.nad(namespace, name) {
            Err(question) => asked.push(question),
            Ok(Ok(nad)) => {
                found.insert(key, nad);
            }
            Ok(Err(e)) => {
                failed.get_or_insert_with(|| {
                    format!(
                        "{field}: network {namespace}/{name}: could not look up the NetworkAttachmentDefinition: {e}"
                    )
                });
            }
        }
    }
    if !asked.is_empty() {
        return Err(asked);
    }
    Ok(failed.map_or(Ok(found), Err))
}

/// What resource injection reads from each NAD the pod selects (the networks annotation and the default-network
/// annotation; not `clusterNetwork` or `defaultNetworks`), once per selection, in order. `Err` is the denial: a NAD
/// that does not exist (as network-resources-injector), a bad resourceName or nodeSelector annotation.
pub fn selected_nads(
    field: &str,
    pod: &PodView,
    requests: &[NetworkRequest],
    found: &FoundNads,
) -> Result<Vec<SelectedNad>, String> {
    let mut selected = Vec::new();
    for request in requests {
        let NetworkRef::Nad { namespace, name } = &request.reference else {
            continue;
        };
        let network = format!("{namespace}/{name}");
        let Some(Some(nad)) = found.get(&(namespace.clone(), name.clone())) else {
            let e = PolicyError::NoSuchNad {
                pod: pod.label(),
                network,
            };
            return Err(format!("{field}: {e}"));
        };
        selected.push(
            SelectedNad::from_annotations(&network, nad.metadata.annotations.as_ref())
                .map_err(|e| format!("{field}: {e}"))?,
        );
    }
    Ok(selected)
}

/// What the mutating webhook injects from: the NADs a pod selects ([`selected_nads`]), none when the pod carries
/// neither annotation. `Err` is the denial (the validating webhook's message for a refused annotation).
pub fn injected_nads(
    pod: &PodView,
    rules: &Rules,
    answers: &Answers,
) -> Decision<Result<Vec<SelectedNad>, String>> {
    let Some(field) = networks_field(pod) else {
        return Ok(Ok(Vec::new()));
    };
    let requests = match pod_requests(&rules.policy, pod) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("{field}: {e}"))),
    };
    Ok(find_nads(&field, &requests, answers)?
        .and_then(|found| selected_nads(&field, pod, &requests, &found)))
}

/// A pod that carries the networks (or default-network) annotation: every rule of the plugin's plan
/// ([`validate_pod`]) with the NADs it names fetched first, then the device count ([`check_requests`]): the pod's
/// containers (`spec`) must request at least one device of each NAD's resourceName per selection. A network the
/// webhook cannot judge (an on-disk config named by `clusterNetwork` or `defaultNetworks`) is left to the plugin.
/// The denial starts with the annotation and names the network or element; the plugin's warnings (Decision 7) come
/// back as admission warnings.
///
/// `portMappings` are refused as the node refuses them (`allowPortMappings`), and in a namespace whose Pod Security
/// level forbids host ports ([`host_ports_refused_in`]).
pub fn review_pod(
    pod: &PodView,
    spec: &PodSpec,
    rules: &Rules,
    answers: &Answers,
) -> Decision<Verdict> {
    let Some(field) = networks_field(pod) else {
        return Ok(Verdict::default());
    };
    let namespace_policy;
    let policy = if rules.policy.port_mappings_refused.is_none() {
        let labels = match answers
            .namespace_labels(&pod.namespace)
            .map_err(|q| vec![q])?
        {
            Ok(labels) => labels,
            Err(e) => {
                return Ok(Verdict::deny(format!(
                    "{field}: namespace {} could not be read to apply its Pod Security level: {e}",
                    pod.namespace
                )));
            }
        };
        namespace_policy = Policy {
            port_mappings_refused: host_ports_refused_in(&pod.namespace, &labels),
            ..rules.policy.clone()
        };
        &namespace_policy
    } else {
        &rules.policy
    };
    let requests = match pod_requests(policy, pod) {
        Ok(r) => r,
        Err(e) => return Ok(Verdict::deny(format!("{field}: {e}"))),
    };
    for request in &requests {
        if let Some(sel) = &request.selection
            && let Err(e) =
                crate::ipam_claim::check_claim(&pod.label(), &request.reference.label(), sel)
        {
            return Ok(Verdict::deny(format!("{field}: {e}")));
        }
    }
    let found = match find_nads(&field, &requests, answers)? {
        Ok(found) => found,
        Err(denial) => return Ok(Verdict::deny(denial)),
    };
    let verdict = validate_pod(policy, pod, RUNTIME_IFNAME, |reference| match reference {
        NetworkRef::Nad { namespace, name } => {
            match found.get(&(namespace.clone(), name.clone())) {
                Some(Some(nad)) => {
                    delegate_from_nad(policy, pod, namespace, name, nad.spec.config.as_deref())
                }
                _ => Err(PolicyError::NoSuchNad {
                    pod: pod.label(),
                    network: format!("{namespace}/{name}"),
                }),
            }
        }
        // On-disk configs and paths live on the nodes: the plugin judges them.
        _ => Ok(None),
    });
    let warnings = match verdict {
        Ok(warnings) => warnings,
        Err(e) => return Ok(Verdict::deny(format!("{field}: {e}"))),
    };
    let devices = selected_nads(&field, pod, &requests, &found).and_then(|selected| {
        check_requests(&pod.label(), spec, &selected).map_err(|e| format!("{field}: {e}"))
    });
    Ok(match devices {
        Ok(()) => Verdict::allow(warnings.iter().map(ToString::to_string).collect()),
        Err(denial) => Verdict::deny(denial),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Counts the questions asked; `ns/a` and `ns/b` exist.
    #[derive(Default)]
    struct Counting(RefCell<Vec<Question>>);

    impl Lookup for Counting {
        fn nad(&self, namespace: &str, name: &str) -> NadAnswer {
            self.0.borrow_mut().push(Question::Nad {
                namespace: namespace.into(),
                name: name.into(),
            });
            Ok(matches!(name, "a" | "b").then(|| {
                let mut nad = NetworkAttachmentDefinition::new(
                    name,
                    NetworkAttachmentDefinitionSpec {
                        config: Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#.into()),
                    },
                );
                nad.metadata.namespace = Some(namespace.into());
                Arc::new(nad)
            }))
        }

        fn namespace_labels(&self, namespace: &str) -> LabelsAnswer {
            self.0.borrow_mut().push(Question::NamespaceLabels {
                namespace: namespace.into(),
            });
            Ok(BTreeMap::new())
        }
    }

    fn pod(annotation: &str) -> PodView {
        PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: String::new(),
            annotations: [(NETWORKS_ANNOTATION.to_owned(), annotation.to_owned())].into(),
        }
    }

    #[test]
    fn each_question_is_asked_once_and_a_pods_nads_in_one_round() {
        let lookup = Counting::default();
        let rules = Rules {
            policy: Policy {
                static_delegates: 1,
                ..Policy::default()
            },
            ..Rules::default()
        };
        let rounds = RefCell::new(0);
        let verdict = decide(&lookup, |answers| {
            *rounds.borrow_mut() += 1;
            review_pod(&pod("a, b, a, c"), &PodSpec::default(), &rules, answers)
        });
        let denial = verdict.denial.unwrap();
        assert!(
            denial.contains("ns/c: no such NetworkAttachmentDefinition"),
            "{denial}"
        );
        // Labels, then the three NADs together, then the decision.
        assert_eq!(*rounds.borrow(), 3);
        let asked = lookup.0.borrow();
        assert_eq!(asked.len(), 4, "{asked:?}");
    }

    #[test]
    fn a_rule_that_asks_again_what_was_answered_still_ends() {
        let lookup = Counting::default();
        // Asks the same question whatever the answers hold, until they are closed.
        let got = decide(&lookup, |answers| {
            let question = Question::Nad {
                namespace: "ns".into(),
                name: "a".into(),
            };
            match answers.nad("ns", "zzz") {
                Ok(answer) if answers.closed => Ok(answer.is_err()),
                _ => Err(vec![question]),
            }
        });
        assert!(got);
    }
}
