//! Fuzzing of every parser that takes outside input, on stable Rust with proptest.
//!
//! Each target gets inputs of four kinds: the files of its corpus (`tests/fuzz/<target>/`: seeds and every case
//! fuzzing ever found) mutated byte-wise and token-wise, the same files with JSON nodes replaced by generated trees
//! or removed, JSON trees built from the target's vocabulary, and plain random text. A target must never panic or hang; where a parser accepts an input, its round trip must hold too
//! (what Plexus prints, it reads back the same). Every case runs on a thread watched for hangs.
//!
//! The number of cases per target is `PLEXUS_FUZZ_CASES` (default 1500, a few seconds each in a debug build); set it
//! higher for a long run. A failing case is shrunk by proptest and written to the target's corpus folder as
//! `found-<hash>`: commit it, and it is replayed by `corpus_replays_without_panics` (and seeds every later run).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_api::cni::result::{CniResult, VersionInfo};
use plexus_api::cni::{NetworkConfigList, config::RequestExtras, version};
use plexus_api::nad::{
    NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec, nad_config, pick_on_disk_config,
};
use plexus_api::policy::{self, NetworkRef, PodView, Policy, ResolvedNetwork};
use plexus_api::selection::{parse_selections, print_comma_form, print_json_form};
use plexus_api::status::{parse_statuses, print_statuses, statuses_from_result};
use plexus_cni::config::Config;
use plexus_cni::plan::{self, PodArgs};
use plexus_cni::record::{Loaded, Record, RecordStore};
use plexus_cni::shim::{MAX_STDIN_BYTES, RequestError, encode_request_header, read_request};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestError, TestRunner};
use serde_json::{Map, Value, json};

/// A parser under test: gets the raw input, panics (directly or through an assertion) on a bug.
type Target = fn(&[u8]);

/// Inputs longer than this are cut: big enough for every shape the parsers know, small enough to stay fast.
const MAX_INPUT: usize = 4096;
/// A case that takes longer than this is reported as a hang (a correct parse of ≤ 4 KiB takes microseconds).
const HANG: Duration = Duration::from_secs(60);

fn corpus_dir(target: &str) -> PathBuf {
    // At run time (cargo sets it), not baked in: a shared target dir may hold this test built in another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/fuzz")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Inputs

/// Keys and string values the parsers look at: a generated tree made of these reaches deep into them.
const KEYS: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "plugins",
    "ipam",
    "dns",
    "capabilities",
    "runtimeConfig",
    "args",
    "cni",
    "prevResult",
    "disableCheck",
    "disableGC",
    "interfaces",
    "ips",
    "routes",
    "address",
    "gateway",
    "interface",
    "version",
    "ip4",
    "ip6",
    "ip",
    "dst",
    "gw",
    "mtu",
    "advmss",
    "priority",
    "table",
    "scope",
    "mac",
    "sandbox",
    "socketPath",
    "pciID",
    "nameservers",
    "domain",
    "search",
    "options",
    "code",
    "msg",
    "details",
    "namespace",
    "interfaceRequest",
    "default-route",
    "portMappings",
    "bandwidth",
    "infiniband-guid",
    "cni-args",
    "ipam-claim-reference",
    "hostPort",
    "containerPort",
    "protocol",
    "hostIP",
    "ingressRate",
    "ingressBurst",
    "egressRate",
    "egressBurst",
    "default",
    "device-info",
    "format",
    "containerId",
    "ifname",
    "netns",
    "state",
    "path",
    "pod",
    "uid",
    "attachments",
    "index",
    "network",
    "isDefault",
    "delegate",
    "capabilityArgs",
    "cniArgs",
    "envArgs",
    "result",
    "defaultRouteRequested",
    "defaultRoute",
    "delegates",
    "clusterNetwork",
    "defaultNetworks",
    "binDir",
    "cniDir",
    "confDir",
    "kubeconfig",
    "logLevel",
    "logFile",
    "namespaceIsolation",
    "globalNamespaces",
    "systemNamespaces",
    "multusNamespace",
    "readinessindicatorfile",
    "delegateTimeoutSeconds",
    "apiTimeoutSeconds",
    "readinessTimeoutSeconds",
    "podEvents",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
    "containerID",
    "env",
    "deadlineMs",
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

const STRINGS: &[&str] = &[
    "",
    " ",
    "0.1.0",
    "0.2.0",
    "0.3.0",
    "0.3.1",
    "0.4.0",
    "1.0.0",
    "1.1.0",
    "2.0.0",
    "1.0",
    "01.0.0",
    "bridge",
    "ptp",
    "host-local",
    "../x",
    "/bin/sh",
    "eth0",
    "net1",
    "a-very-long-interface-name",
    "10.1.2.3",
    "10.1.2.3/24",
    "10.1.2.0/33",
    "fd00::1",
    "fd00::1/64",
    "0.0.0.0/0",
    "::/0",
    "fe80::1%eth0",
    "0a:58:0a:01:02:03",
    "00:11:22:33:44:55:66:77",
    "tcp",
    "SCTP",
    "ns/net@eth1",
    "adding",
    "added",
    "failed",
    "default",
    "kube-system",
    "\u{0}",
    "é",
    "\u{202e}",
];

/// One edit of a corpus input. Positions and lengths are taken modulo the input's length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Token(usize, usize),
    Truncate(usize),
}

const TOKENS: &[&str] = &[
    "null",
    "[]",
    "{}",
    "\"",
    ",",
    ":",
    "@",
    "/",
    "\\",
    "\\u0000",
    "\\ud800",
    "1e999",
    "-1",
    "0",
    "18446744073709551616",
    "1.5",
    "true",
    "[{",
    "}]",
    "\"name\":",
    "\"\"",
    "[null]",
    ",,",
    "  ",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(p, t)| Mutation::Token(p, t)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut input: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        let len = input.len().max(1);
        match *edit {
            Mutation::Flip(p, b) => {
                if !input.is_empty() {
                    input[p % len] ^= b;
                }
            }
            Mutation::Insert(p, b) => input.insert(p % (input.len() + 1), b),
            Mutation::Delete(p, n) => {
                let start = p % len;
                let end = (start + n).min(input.len());
                if start < end {
                    input.drain(start..end);
                }
            }
            Mutation::Duplicate(p, n) => {
                let start = p % len;
                let end = (start + n).min(input.len());
                if start < end {
                    let piece = input[start..end].to_vec();
                    input.splice(start..start, piece);
                }
            }
            Mutation::Token(p, t) => {
                let at = p % (input.len() + 1);
                let token = TOKENS[t % TOKENS.len()].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            Mutation::Truncate(p) => input.truncate(p % len),
        }
    }
    input.truncate(MAX_INPUT);
    input
}

/// A JSON tree whose keys and strings come mostly from the parsers' vocabulary.
fn json_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        (0..STRINGS.len()).prop_map(|i| json!(STRINGS[i])),
        "[a-z0-9./:@-]{0,20}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => (0..KEYS.len()).prop_map(|i| KEYS[i].to_owned()),
                        1 => "[a-zA-Z]{0,8}",
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Replaces the `n`-th node (in pre-order) of `value` by `with`; `None` removes it from its object or list instead.
/// Returns whether the node was found (`n` counts down the nodes passed).
fn replace_node(value: &mut Value, n: &mut usize, with: &Option<Value>) -> bool {
    let children: Vec<&mut Value> = match value {
        Value::Object(map) => map.values_mut().collect(),
        Value::Array(items) => items.iter_mut().collect(),
        _ => Vec::new(),
    };
    let mut remove = None;
    for (i, child) in children.into_iter().enumerate() {
        if *n == 0 {
            match with {
                Some(v) => *child = v.clone(),
                None => remove = Some(i),
            }
            break;
        }
        *n -= 1;
        if replace_node(child, n, with) {
            return true;
        }
    }
    match (remove, value) {
        (Some(i), Value::Object(map)) => {
            let key = map
                .keys()
                .nth(i)
                .cloned()
                .expect("the index came from this map");
            map.shift_remove(&key);
            true
        }
        (Some(i), Value::Array(items)) => {
            items.remove(i);
            true
        }
        _ => false,
    }
}

/// Structure-aware mutation: a JSON seed with some of its nodes replaced by generated trees or removed, so that
/// the rest of the document stays valid and the parser gets past its first checks.
fn json_edits(seed: &[u8], edits: &[(usize, Option<Value>)]) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(seed) else {
        return seed.to_vec();
    };
    for (at, with) in edits {
        let mut n = *at % 64;
        replace_node(&mut value, &mut n, with);
    }
    value.to_string().into_bytes()
}

/// Every kind of input for a target with this corpus.
fn inputs(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    assert!(!seeds.is_empty(), "a corpus needs at least one seed");
    let n = seeds.len();
    let seeds = Arc::new(seeds);
    let byte_seeds = Arc::clone(&seeds);
    let mutated = (0..n, prop::collection::vec(mutation(), 0..8))
        .prop_map(move |(i, edits)| mutate(byte_seeds[i].clone(), &edits));
    let edit = (any::<usize>(), proptest::option::weighted(0.8, json_tree()));
    let restructured = (0..n, prop::collection::vec(edit, 1..4))
        .prop_map(move |(i, edits)| json_edits(&seeds[i], &edits));
    prop_oneof![
        4 => mutated,
        4 => restructured,
        2 => json_tree().prop_map(|v| v.to_string().into_bytes()),
        1 => json_tree().prop_map(|v| json!([v]).to_string().into_bytes()),
        1 => "[a-z0-9@/, .=;_-]{0,40}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------------------------
// The harness

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Panics inside a fuzz case are expected findings, reported with their input: keep them off stderr.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "non-text panic".into())
}

/// Runs `target` on one input; a panic becomes an error naming it.
fn check(target: Target, input: &[u8]) -> Result<(), String> {
    QUIET.with(|q| q.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(|| target(input)));
    QUIET.with(|q| q.set(false));
    outcome.map_err(|p| panic_text(p.as_ref()))
}

fn cases() -> u32 {
    std::env::var("PLEXUS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

fn save_finding(name: &str, input: &[u8]) -> PathBuf {
    // FNV-1a: a stable name for the same input.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let path = corpus_dir(name).join(format!("found-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// Fuzzes one target: `cases()` generated inputs, shrunk and saved on failure; a case running past [`HANG`] fails
/// the test with its input.
fn fuzz(name: &'static str, target: Target) {
    quiet_panics();
    // The case being run, and how many have started: the watchdog below reads both.
    let current: Arc<Mutex<(u64, Vec<u8>)>> = Arc::default();
    let (done, finished) = mpsc::channel();
    let watched = Arc::clone(&current);
    std::thread::spawn(move || {
        let mut runner = TestRunner::new(RunnerConfig {
            cases: cases(),
            failure_persistence: None,
            max_shrink_iters: 4096,
            ..RunnerConfig::default()
        });
        let outcome = runner.run(&inputs(corpus(name)), |input| {
            {
                let mut c = watched.lock().unwrap();
                c.0 += 1;
                c.1.clone_from(&input);
            }
            check(target, &input).map_err(TestCaseError::fail)
        });
        let _ = done.send(outcome);
    });
    let mut seen = 0;
    let outcome = loop {
        match finished.recv_timeout(HANG) {
            Ok(outcome) => break outcome,
            Err(_) => {
                let (started, input) = current.lock().unwrap().clone();
                if started == seen {
                    let saved = save_finding(name, &input);
                    panic!(
                        "fuzz target {name}: case {started} still runs after {HANG:?}; input saved as {}: {:?}",
                        saved.display(),
                        String::from_utf8_lossy(&input)
                    );
                }
                seen = started;
            }
        }
    };
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => {
            let saved = save_finding(name, &input);
            panic!(
                "fuzz target {name}: {why}\ninput ({} bytes, saved as {}): {:?}",
                input.len(),
                saved.display(),
                String::from_utf8_lossy(&input)
            );
        }
        Err(e) => panic!("fuzz target {name}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Targets

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// The networks annotation: both forms; what Plexus prints reads back the same.
fn networks_annotation(input: &[u8]) {
    let annotation = text(input);
    let Ok(selections) = parse_selections(&annotation, "pod-ns") else {
        return;
    };
    let json_form = print_json_form(&selections);
    let again = parse_selections(&json_form, "pod-ns")
        .unwrap_or_else(|e| panic!("printed JSON form {json_form:?} does not parse: {e}"));
    assert_eq!(again, selections, "JSON form round trip of {json_form:?}");
    if let Some(comma) = print_comma_form(&selections) {
        let again = parse_selections(&comma, "pod-ns")
            .unwrap_or_else(|e| panic!("printed comma form {comma:?} does not parse: {e}"));
        assert_eq!(again, selections, "comma form round trip of {comma:?}");
    }
}

/// Every request config a parsed list can produce, in every version.
fn exercise_list(list: &NetworkConfigList) {
    let again = NetworkConfigList::from_value(list.to_value())
        .unwrap_or_else(|e| panic!("a printed config list does not parse: {e}"));
    assert_eq!(again.to_value(), list.to_value(), "config list round trip");
    let _ = list.negotiated_version();
    let caps: Map<String, Value> = [("portMappings", json!([])), ("mac", json!("x"))]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let extra: Map<String, Value> = [("k".to_owned(), json!("v"))].into_iter().collect();
    let prev = json!({"cniVersion": "1.0.0"});
    for i in 0..list.plugins.len() {
        let _ = list.plugins[i].ipam_type();
        for v in version::SUPPORTED {
            let conf = list.request_config(
                i,
                v,
                &RequestExtras {
                    capability_args: Some(&caps),
                    cni_args: Some(&extra),
                    prev_result: Some(&prev),
                },
            );
            assert!(conf.is_object(), "a request config is an object");
        }
    }
}

/// A NAD's `spec.config`, as the plugin reads it (inline or as an on-disk file) and as the webhook validates it.
fn nad_spec_config(input: &[u8]) {
    let config = text(input);
    if let Ok(Some(value)) = nad_config("nad-a", Some(&config))
        && let Ok(list) = NetworkConfigList::from_value(value)
    {
        exercise_list(&list);
    }
    let search = pick_on_disk_config(
        "nad-a",
        &[
            ("00-a.conf".into(), config.clone()),
            ("10-b.conflist".into(), config.clone()),
        ],
    );
    if let Some(chosen) = search.chosen {
        exercise_list(&chosen.config);
    }
    let mut nad = NetworkAttachmentDefinition::new(
        "nad-a",
        NetworkAttachmentDefinitionSpec {
            config: Some(config),
        },
    );
    nad.metadata.namespace = Some("ns".into());
    let _ = plexus_api::nad::validate_nad(&nad);
}

/// A CNI config or conflist (a delegate, a static `delegates` entry).
fn cni_config(input: &[u8]) {
    if let Ok(list) = NetworkConfigList::parse(input) {
        exercise_list(&list);
    }
}

/// A delegate's result in every version it may claim: every conversion Plexus offers either works and reads back,
/// or fails with an error.
fn cni_result(input: &[u8]) {
    let _ = VersionInfo::from_json(input);
    for fallback in version::SUPPORTED.iter().copied().chain(["", "9.9.9"]) {
        let Ok(result) = CniResult::from_json(input, fallback) else {
            continue;
        };
        let _ = result.first_sandbox_interface();
        let _ = statuses_from_result("net", true, Some(&result), true);
        for target in version::SUPPORTED {
            if let Ok(value) = result.to_value(target) {
                CniResult::from_value(&value, target).unwrap_or_else(|e| {
                    panic!("result converted to {target} does not parse: {e}: {value}")
                });
            }
            let _ = result.converted(target);
        }
    }
}

/// The network-status annotation (Plexus's or Multus's).
fn network_status(input: &[u8]) {
    let Ok(statuses) = parse_statuses(&text(input)) else {
        return;
    };
    let printed = print_statuses(&statuses);
    let again = parse_statuses(&printed)
        .unwrap_or_else(|e| panic!("printed status {printed:?} does not parse: {e}"));
    assert_eq!(again, statuses, "network-status round trip");
}

/// A record file as DEL, CHECK and GC read it, and what ADD derives from one (network-status).
fn record(input: &[u8]) {
    if let Ok(record) = serde_json::from_slice::<Record>(input) {
        let _ = plexus_cni::network_statuses(&record);
        let text = serde_json::to_vec(&record).expect("a parsed record serialises");
        let again: Record = serde_json::from_slice(&text).expect("a printed record parses");
        assert_eq!(again, record, "record round trip");
    }
    // Read where DEL and CHECK find it: under its network's name, and as a record from before records were keyed
    // by network (moved on the way).
    for network in ["plexus", ""] {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path(), network);
        std::fs::write(store.path("c1", "eth0"), input).unwrap();
        let found = RecordStore::new(dir.path(), "plexus").locate("c1", "eth0");
        match found.load("c1", "eth0") {
            Loaded::Found(r) => {
                assert_eq!((r.container_id.as_str(), r.ifname.as_str()), ("c1", "eth0"));
            }
            Loaded::Missing => panic!("a written record reads as missing"),
            Loaded::Corrupt(_) => {}
        }
        let _ = store.list();
    }
}

/// The stdin config, the plan it gives in static mode, and the VERSION and GC requests that read stdin too.
fn plexus_config(input: &[u8]) {
    if let Ok(config) = Config::load(input) {
        let _ = config.result_version();
        let _ = plan::Plan::from_static_config(&config, "eth0", "K8S_POD_NAME=a");
    }
    let _ = plexus_cni::run(|k| (k == "CNI_COMMAND").then(|| "VERSION".into()), input);
}

/// A pod's annotations (networks, default-network, static-pod markers) and the NAD config they resolve to, through
/// every rule of `plexus_api::policy` (the plugin's plan and the webhook's check): the path of a Kubernetes-mode ADD
/// up to the first delegate. The input is `<networks>\n<default-network>\n<config.source>\n<NAD config>`.
fn pod_plan(input: &[u8]) {
    let whole = text(input);
    let mut parts = whole.splitn(4, '\n');
    let mut part = || parts.next().unwrap_or_default().to_owned();
    let (networks, default_network, source, nad) = (part(), part(), part(), part());
    let mut annotations = BTreeMap::new();
    annotations.insert("k8s.v1.cni.cncf.io/networks".to_owned(), networks);
    for (key, value) in [
        ("v1.multus-cni.io/default-network", default_network),
        (policy::CONFIG_SOURCE_ANNOTATION, source),
    ] {
        if !value.is_empty() {
            annotations.insert(key.to_owned(), value);
        }
    }
    let pod = PodView {
        namespace: "pod-ns".into(),
        name: "pod".into(),
        uid: "u".into(),
        annotations,
    };
    let _ = policy::check_pod_uid(&pod, Some("other"));
    let fallback = NetworkConfigList::parse(
        br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","capabilities":{"ips":true,"mac":true}}"#,
    )
    .expect("the fallback config parses");
    let config = nad_config("n", Some(&nad))
        .ok()
        .flatten()
        .and_then(|v| NetworkConfigList::from_value(v).ok())
        .unwrap_or(fallback);
    for strict_capabilities in [false, true] {
        let rules = Policy {
            namespace_isolation: true,
            static_delegates: 1,
            strict_capabilities,
            ..Policy::default()
        };
        let resolve = |r: &NetworkRef| ResolvedNetwork {
            display: r.label(),
            config: config.clone(),
            resource_name: None,
        };
        let _ = policy::validate_pod(&rules, &pod, "eth0", |r| Ok(Some(resolve(r))));
        let Ok(requests) = policy::pod_requests(&rules, &pod) else {
            continue;
        };
        let resolved: Vec<ResolvedNetwork> =
            requests.iter().map(|r| resolve(&r.reference)).collect();
        let runtime: Map<String, Value> = [("portMappings".to_owned(), json!([]))]
            .into_iter()
            .collect();
        if let Ok(plan) = policy::plan_pod(&rules, &pod, &requests, &resolved, "eth0", &runtime) {
            policy::check_interface_names(
                Some(&pod),
                plan.attachments
                    .iter()
                    .map(|a| (a.network.as_str(), a.ifname.as_str())),
            )
            .expect("a built plan has valid, unique interface names");
        }
    }
}

/// `CNI_ARGS` as the runtime passes it.
fn cni_args(input: &[u8]) {
    let args = text(input);
    if let Some(pod) = PodArgs::from_cni_args(&args) {
        assert!(!pod.namespace.is_empty() && !pod.name.is_empty());
        let view = PodView {
            namespace: pod.namespace,
            name: pod.name,
            uid: pod.uid.unwrap_or_default(),
            annotations: BTreeMap::new(),
        };
        let _ = plan::delegate_cni_args(&args, &view, "ctr");
    }
}

/// A request on the thick-mode daemon's socket, read with `plexus_cni::shim::read_request` as `plexus-daemon` reads
/// every connection: the input as the raw stream, and the input as the header of a well-framed request (so that
/// mutated headers get past the length prefix). Always a request or a typed error; a request within the limits, and
/// framed again by the shim's encoder it reads back the same.
fn daemon_request(input: &[u8]) {
    let check = |stream: &[u8]| match read_request(&mut &stream[..]) {
        Ok(request) => {
            assert!(request.stdin.len() <= MAX_STDIN_BYTES);
            let _ = request.abandoned();
            assert!(
                request.deadline()
                    <= std::time::Instant::now() + Duration::from_secs(24 * 3600 + 60),
                "a deadline past a day"
            );
            let mut again = encode_request_header(request.env.clone(), request.deadline_ms);
            again.extend_from_slice(&request.stdin);
            assert_eq!(read_request(&mut &again[..]).ok(), Some(request));
        }
        Err(
            RequestError::Io(_)
            | RequestError::HeaderTooLarge(_)
            | RequestError::StdinTooLarge
            | RequestError::Header(_),
        ) => {}
    };
    check(input);
    let mut framed = (input.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(input);
    framed.extend_from_slice(br#"{"cniVersion":"1.0.0","name":"stdin"}"#);
    check(&framed);
}

/// Every corpus file (seeds and found cases) of every target, as a regression test.
#[test]
fn corpus_replays_without_panics() {
    quiet_panics();
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        for (i, input) in corpus(name).iter().enumerate() {
            if let Err(why) = check(*target, input) {
                failures.push(format!("{name} #{i}: {why}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// One test per target, and the list of targets whose corpora are replayed.
macro_rules! fuzz_tests {
    ($($test:ident: $name:literal => $target:ident),* $(,)?) => {
        const TARGETS: &[(&str, Target)] = &[$(($name, $target)),*];
        $(
            #[test]
            fn $test() {
                fuzz($name, $target);
            }
        )*
    };
}

fuzz_tests! {
    fuzz_networks_annotation: "networks_annotation" => networks_annotation,
    fuzz_nad_config: "nad_config" => nad_spec_config,
    fuzz_cni_config: "cni_config" => cni_config,
    fuzz_cni_result: "cni_result" => cni_result,
    fuzz_network_status: "network_status" => network_status,
    fuzz_record: "record" => record,
    fuzz_plexus_config: "plexus_config" => plexus_config,
    fuzz_pod_plan: "pod_plan" => pod_plan,
    fuzz_cni_args: "cni_args" => cni_args,
    fuzz_daemon_request: "daemon_request" => daemon_request,
}
