//! The Plexus CNI meta-plugin as a library; `main.rs` is a thin shell over [`run`].
//!
//! The runtime execs `plexus` like any CNI plugin. Plexus works out the plan (which networks, which interface
//! names), runs the delegate plugins in order, records what it attached so DEL and CHECK never need anything but the
//! node, and returns the default network's result.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod install;
pub mod invoke;
pub mod logging;
pub mod netns;
pub mod ops;
pub mod plan;
pub mod record;
pub mod shim;
pub mod source;

use std::path::PathBuf;

use plexus_api::cni::CniError;
use plexus_api::cni::result::VersionInfo;
use plexus_api::cni::version;
use serde_json::Value;
use tracing::{debug, info_span};

use crate::config::Config;
use crate::error::PlexusError;
use crate::invoke::CniCommand;
use crate::ops::{Context, Sandbox};
use crate::plan::{Plan, PodArgs, valid_interface_name};
use crate::record::PodRef;
use crate::source::{Connect, NetworkSource, NodeOnly, PodEvent, SourceProvider};
use plexus_api::cni::result::CniResult;
use plexus_api::status::{NetworkStatus, print_statuses, statuses_from_result};
use tracing::warn;

/// The CNI environment variables of one request.
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: CniCommand,
    pub sandbox: Sandbox,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads and checks the variables the command needs (C10, C11); code 4 names every bad one.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, PlexusError> {
        let command_text = get("CNI_COMMAND").unwrap_or_default();
        let Some(command) = CniCommand::parse(&command_text) else {
            return Err(PlexusError::Environment(vec![if command_text.is_empty() {
                "CNI_COMMAND is missing".into()
            } else {
                format!(
                    "CNI_COMMAND={command_text:?} is not ADD, DEL, CHECK, STATUS, GC or VERSION"
                )
            }]));
        };
        let var = |k: &str| get(k).unwrap_or_default();
        let sandbox = Sandbox {
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        };
        let path = std::env::split_paths(&var("CNI_PATH"))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let mut bad = Vec::new();
        if matches!(
            command,
            CniCommand::Add | CniCommand::Del | CniCommand::Check
        ) {
            if sandbox.container_id.is_empty() {
                bad.push("CNI_CONTAINERID is missing".to_owned());
            } else if !valid_container_id(&sandbox.container_id) {
                bad.push(format!(
                    "CNI_CONTAINERID={:?} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
                    sandbox.container_id
                ));
            }
            if sandbox.ifname.is_empty() {
                bad.push("CNI_IFNAME is missing".to_owned());
            } else if !valid_interface_name(&sandbox.ifname) {
                bad.push(format!(
                    "CNI_IFNAME={:?} is not a valid interface name",
                    sandbox.ifname
                ));
            }
            if command != CniCommand::Del && sandbox.netns.is_empty() {
                bad.push("CNI_NETNS is missing".to_owned());
            }
        }
        if bad.is_empty() {
            Ok(Self {
                command,
                sandbox,
                path,
            })
        } else {
            Err(PlexusError::Environment(bad))
        }
    }
}

/// C11.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What a successful command prints on stdout (nothing for DEL, CHECK, STATUS and GC).
pub type Output = Option<String>;

/// Runs one CNI request: what to print on success, or the CNI error object (with the runtime's version when known).
/// A panic inside becomes a CNI error too ([`guard`]), so a runtime (or the thick-mode daemon, per request) always
/// gets an answer.
pub fn run(env_lookup: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Output, CniError> {
    guard(|| run_with(&Connect, Logging::PerRequest, env_lookup, stdin))
}

/// The spans that mark a request's phases, for a caller that times them (the node daemon's metrics): `lookup`
/// (pod and NADs), `delegate` (one plugin call, with fields `plugin` and `command`), `status_write` (the
/// network-status PATCH and, in thin mode, the events), and the record's `record_lock` (waiting for the sandbox's
/// lock), `record_write` (one atomic write) and `record_remove`. Every request runs inside the span
/// `cni`, whose field `command` names the CNI command.
pub const PHASE_SPANS: [&str; 6] = [
    "lookup",
    "delegate",
    "status_write",
    "record_lock",
    "record_write",
    "record_remove",
];

/// Who sets up logging for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logging {
    /// The request installs the subscriber its config asks for (the `plexus` binary: one request per process).
    PerRequest,
    /// The caller already did (the thick-mode daemon, once for all requests).
    Installed,
}

/// Installs the process's panic hook: a panic is logged through `tracing` with where it happened (and printed on
/// stderr as before), never on stdout; [`guard`] then turns it into the request's CNI error. The node daemon of thick
/// mode installs it once and guards each request.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(location = ?info.location().map(|l| format!("{}:{}", l.file(), l.line())), panic = %info, "panic");
        default(info);
    }));
}

/// Runs `request`, turning a panic into a CNI error object (code 999) that says where it happened. Nothing reaches a
/// panic from input on purpose; this is the net under bugs, so that the runtime never sees a silent crash.
pub fn guard<T>(request: impl FnOnce() -> Result<T, CniError>) -> Result<T, CniError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(request)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(panic = %what, "request panicked");
        Err(CniError::new(
            plexus_api::cni::ErrorCode::Internal,
            format!("Plexus hit a bug and stopped this request: {what}"),
        ))
    })
}

/// One CNI request with the source and the logging passed in: what [`run`] does for the `plexus` binary, and what
/// a node daemon calls (inside [`guard`]) for each request it receives.
pub fn run_with<P: SourceProvider>(
    provider: &P,
    logging: Logging,
    env_lookup: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Output, CniError> {
    let env = CniEnv::from_lookup(env_lookup).map_err(|e| e.to_cni())?;
    if env.command == CniCommand::Version {
        return version_reply(stdin).map(Some).map_err(|e| e.to_cni());
    }
    let parse_started = std::time::Instant::now();
    let config = Config::load(stdin).map_err(|e| e.to_cni())?;
    let parsed_in = parse_started.elapsed();
    if logging == Logging::PerRequest {
        logging::init(&config.log);
    }
    let reply_version = config.result_version().to_owned();
    let span = info_span!(
        "cni",
        command = env.command.as_str(),
        container = %env.sandbox.container_id,
        ifname = %env.sandbox.ifname,
    );
    let _entered = span.enter();
    // The config was parsed before logging could start (the log settings are in it): its time is logged here.
    debug!(
        config_parse_us = parsed_in.as_micros() as u64,
        "config parsed"
    );
    if !config.ignored_keys.is_empty() {
        debug!(keys = ?config.ignored_keys, "config keys Plexus does not use were ignored");
    }
    dispatch(provider, &env, config, stdin).map_err(|e| {
        tracing::error!(error = %e, "request failed");
        e.to_cni().with_version(reply_version)
    })
}

fn dispatch<P: SourceProvider>(
    provider: &P,
    env: &CniEnv,
    config: Config,
    stdin: &[u8],
) -> Result<Output, PlexusError> {
    let ctx = Context::new(config, &env.path);
    match env.command {
        CniCommand::Add => {
            ops::wait_until_ready(&ctx)?;
            let result = add(provider, &ctx, &env.sandbox)?;
            Ok(Some(
                serde_json::to_string(&result).expect("results serialise"),
            ))
        }
        CniCommand::Del => {
            // DEL waits too (R56), but goes on when the file never comes: a DEL always runs to the end.
            if let Err(e) = ops::wait_until_ready(&ctx) {
                warn!(error = %e, "deleting anyway");
            }
            ops::del(&ctx, &env.sandbox, || {
                derive_for_del(provider, &ctx, &env.sandbox)
            })
            .map(|()| None)
        }
        CniCommand::Check => ops::check(&ctx, &env.sandbox).map(|()| None),
        CniCommand::Status => {
            let networks = status_networks(provider, &ctx.config)?;
            ops::status(&ctx, &networks).map(|()| None)
        }
        CniCommand::Gc => ops::gc(&ctx, &valid_attachments(stdin)?).map(|()| None),
        CniCommand::Version => version_reply(stdin).map(Some),
    }
}

/// How many turns of the thread's runtime an ADD gives its network-status PATCH before starting the record's
/// completion beside it: the request, kube's buffer task, the connection's task writing it.
const PATCH_START_TURNS: usize = 4;

thread_local! {
    static RUNTIME: std::cell::OnceCell<tokio::runtime::Runtime> = const { std::cell::OnceCell::new() };
}

/// Runs `f` with this thread's tokio runtime (single-threaded, made on the thread's first request and kept for the
/// thread's life). The node daemon's request threads serve one request after another: what a request's calls leave
/// on the runtime (the daemon's own connection to the API server, see `plexus-daemon`'s cache) is there for the
/// next request, and no request pays for a new runtime. Tasks on it run only while a request drives it.
pub fn thread_runtime<T>(f: impl FnOnce(&tokio::runtime::Runtime) -> T) -> Result<T, PlexusError> {
    RUNTIME.with(|cell| {
        let runtime = match cell.get() {
            Some(r) => r,
            None => {
                let made = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(PlexusError::Runtime)?;
                cell.get_or_init(|| made)
            }
        };
        Ok(f(runtime))
    })
}

/// What a DEL without a usable record deletes. Kubernetes mode (a kubeconfig and a pod in `CNI_ARGS`): the
/// pod's networks from the pod and its NADs — every one that can still be resolved, each under the interface name
/// its ADD gave it — within `apiTimeoutSeconds` in all; when that fails (API server down, pod gone), the configured
/// default network alone. Otherwise the stdin config's delegates.
fn derive_for_del<P: SourceProvider>(
    provider: &P,
    ctx: &Context,
    sandbox: &Sandbox,
) -> Option<ops::DerivedPlan> {
    let pod_args = PodArgs::from_cni_args(&sandbox.args);
    let Some(pod_args) = pod_args.filter(|_| provider.kubernetes(&ctx.config)) else {
        return ops::static_fallback(ctx, sandbox);
    };
    thread_runtime(|runtime| derive_from_api(provider, ctx, sandbox, &pod_args, runtime)).ok()?
}

/// [`derive_for_del`] in Kubernetes mode, on the thread's runtime.
fn derive_from_api<P: SourceProvider>(
    provider: &P,
    ctx: &Context,
    sandbox: &Sandbox,
    pod_args: &PodArgs,
    runtime: &tokio::runtime::Runtime,
) -> Option<ops::DerivedPlan> {
    let from_pod = runtime.block_on(async {
        let lookup = async {
            let source = provider.source(&ctx.config).await?;
            let pod = source
                .pod(&pod_args.namespace, &pod_args.name, pod_args.uid.as_deref())
                .await?
                .ok_or_else(|| PlexusError::PodNotFound {
                    namespace: pod_args.namespace.clone(),
                    name: pod_args.name.clone(),
                })?;
            let requests = plan::pod_requests(&ctx.config, &pod)?;
            let mut resolved = Vec::with_capacity(requests.len());
            for request in &requests {
                match source::resolve_one(&source, &ctx.config, &pod, &request.reference).await {
                    Ok(n) => resolved.push(Some(n)),
                    Err(e) => {
                        warn!(network = %request.reference.label(), error = %e, "DEL: this network can't be resolved; it is skipped");
                        resolved.push(None);
                    }
                }
            }
            let env_args = plan::delegate_cni_args(&sandbox.args, &pod, &sandbox.container_id);
            Plan::for_pod_partial(&ctx.config, &pod, &requests, resolved, &sandbox.ifname, &env_args)
        };
        match tokio::time::timeout(ctx.config.api_timeout, lookup).await {
            Ok(result) => result,
            Err(_) => Err(PlexusError::Kubernetes(source::SourceError::Timeout {
                what: format!("reading pod {}/{} and its NADs", pod_args.namespace, pod_args.name),
                seconds: ctx.config.api_timeout.as_secs_f64(),
            })),
        }
    });
    match from_pod {
        Ok(plan) => {
            return Some(ops::DerivedPlan {
                plan,
                source: "the pod and its NADs",
            });
        }
        Err(e) => {
            warn!(error = %e, "DEL: the pod's networks can't be read; falling back to the default network")
        }
    }
    let pod = plan::PodView {
        namespace: pod_args.namespace.clone(),
        name: pod_args.name.clone(),
        uid: pod_args.uid.clone().unwrap_or_default(),
        annotations: Default::default(),
    };
    let default = runtime.block_on(async {
        let reference = plexus_api::policy::default_network(&ctx.config.policy())?;
        // The API server just failed us: the default network is looked up on the node only (delegates, a path,
        // or a conf in confDir).
        source::resolve_one(&source::NodeOnly, &ctx.config, &pod, &reference).await
    });
    match default {
        Ok(network) => {
            let env_args = plan::delegate_cni_args(&sandbox.args, &pod, &sandbox.container_id);
            Plan::for_pod_partial(
                &ctx.config,
                &pod,
                &[plan::NetworkRequest {
                    reference: plan::NetworkRef::Delegate(0),
                    selection: None,
                }],
                vec![Some(network)],
                &sandbox.ifname,
                &env_args,
            )
            .ok()
            .map(|plan| ops::DerivedPlan {
                plan,
                source: "the configured default network",
            })
        }
        Err(e) => {
            warn!(error = %e, "DEL: the default network can't be resolved either");
            None
        }
    }
}

/// The networks STATUS is passed on to: read through the API server in Kubernetes mode (NADs named by
/// `clusterNetwork` and `defaultNetworks`), from the node otherwise.
fn status_networks<P: SourceProvider>(
    provider: &P,
    config: &Config,
) -> Result<Vec<plexus_api::cni::NetworkConfigList>, PlexusError> {
    let needs_api = provider.kubernetes(config)
        && (config
            .cluster_network
            .as_ref()
            .is_some_and(|c| !c.starts_with('/'))
            || !config.default_networks.is_empty());
    thread_runtime(|runtime| {
        runtime.block_on(async {
            if needs_api {
                let source = provider.source(config).await?;
                source::default_network_configs(Some(&source), config).await
            } else {
                source::default_network_configs(None::<&NodeOnly>, config).await
            }
        })
    })?
}

/// ADD. Static mode (no kubeconfig, or a sandbox that is not a pod): the configured delegates. Kubernetes mode:
/// read the pod and its NADs, attach, then publish network-status (one PATCH) and the pod's events.
fn add<P: SourceProvider>(
    provider: &P,
    ctx: &Context,
    sandbox: &Sandbox,
) -> Result<Value, PlexusError> {
    let kubernetes = provider.kubernetes(&ctx.config);
    let pod_args = PodArgs::from_cni_args(&sandbox.args);
    let Some(pod_args) = pod_args.filter(|_| kubernetes) else {
        if kubernetes {
            debug!("CNI_ARGS names no pod: attaching the configured delegates only");
        }
        let plan = Plan::from_static_config(&ctx.config, &sandbox.ifname, &sandbox.args)?;
        return ops::add(ctx, sandbox, &plan, None).map(|added| added.result);
    };
    thread_runtime(|runtime| add_for_pod(provider, ctx, sandbox, &pod_args, runtime))?
}

/// [`add`] in Kubernetes mode, on the thread's runtime.
fn add_for_pod<P: SourceProvider>(
    provider: &P,
    ctx: &Context,
    sandbox: &Sandbox,
    pod_args: &PodArgs,
    runtime: &tokio::runtime::Runtime,
) -> Result<Value, PlexusError> {
    let lookup = info_span!("lookup").entered();
    let (source, pod, plan) = runtime.block_on(async {
        let source = provider.source(&ctx.config).await?;
        let pod = source::pod_with_retry(
            &source,
            &pod_args.namespace,
            &pod_args.name,
            pod_args.uid.as_deref(),
        )
        .await?;
        let requests = plan::pod_requests(&ctx.config, &pod)?;
        let resolved = source::resolve(&source, &ctx.config, &pod, &requests).await?;
        let env_args = plan::delegate_cni_args(&sandbox.args, &pod, &sandbox.container_id);
        let plan = Plan::for_pod(
            &ctx.config,
            &pod,
            &requests,
            &resolved,
            &sandbox.ifname,
            &env_args,
        )?;
        Ok::<_, PlexusError>((source, pod, plan))
    })?;
    drop(lookup);
    let pod_ref = PodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    };
    let attached = ops::attach(ctx, sandbox, &plan, Some(pod_ref))?;

    for w in &plan.warnings {
        warn!(warning = %w, "capability key without the capability");
    }
    let status = print_statuses(&network_statuses(attached.record()));
    // The network-status PATCH goes first: a few turns of this thread's runtime put it on the wire (the request
    // passes kube's buffer task, then the connection's task writes it; the daemon's shared client takes it on its
    // own thread at the first turn). Then the record's completion (one write) runs on a thread of its own, in the
    // request's span, while the PATCH is on the wire: neither waits for the other.
    let request_span = tracing::Span::current();
    let status_write = info_span!("status_write").entered();
    let mut publishing = std::pin::pin!(source.publish_status(&pod, &status));
    let early = runtime.block_on(async {
        for _ in 0..PATCH_START_TURNS {
            if let Some(done) = futures::future::poll_immediate(publishing.as_mut()).await {
                return Some(done);
            }
            tokio::task::yield_now().await;
        }
        None
    });
    let events: Vec<PodEvent> = if ctx.config.pod_events {
        let mut events = warning_events(&plan.warnings);
        events.extend(attach_events(attached.record()));
        events
    } else {
        Vec::new()
    };
    let (completed, published) = std::thread::scope(|scope| {
        let completing = scope.spawn(|| {
            let _entered = request_span.enter();
            ops::complete(ctx, attached)
        });
        let published = runtime.block_on(async {
            match early {
                Some(done) => done?,
                None => publishing.await?,
            }
            // Events only for an ADD that stands.
            if let Err(e) = source.record_events(&pod, &events).await {
                warn!(error = %e, "could not record the pod's events");
            }
            Ok::<_, source::SourceError>(())
        });
        drop(status_write);
        let completed = completing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (completed, published)
    });
    // The record could not be completed: the ADD was rolled back and the runtime gets the error. The network-status
    // just written (if it was) stays until the runtime's next ADD of the pod writes it again.
    let added = completed?;
    if let Err(e) = published {
        // Consumers rely on network-status (as with Multus, a pod without it does not start): undo the ADD.
        if let Err(undo) = ops::undo(ctx, &added.record) {
            warn!(error = %undo, "undoing the ADD after the failed status update left errors");
        }
        return Err(PlexusError::StatusNotWritten {
            pod: pod.label(),
            source: e,
        });
    }
    Ok(added.result)
}

/// The network-status entries of every attachment, in order. When a selection took the default route (R33), its
/// entry shows the requested gateways and the other attachments show none.
pub fn network_statuses(record: &record::Record) -> Vec<NetworkStatus> {
    let taken = record
        .attachments
        .iter()
        .find(|a| !a.is_default && a.default_route.is_some());
    record
        .attachments
        .iter()
        .flat_map(|a| {
            let result = recorded_result(a);
            let mut entries = statuses_from_result(
                &a.network,
                a.is_default,
                result.as_ref(),
                a.default_route_requested,
            );
            if let Some(chosen) = taken {
                let requested: Vec<String> = chosen
                    .default_route
                    .iter()
                    .flatten()
                    .map(ToString::to_string)
                    .collect();
                for entry in &mut entries {
                    if a.index != chosen.index {
                        entry.gateway.clear();
                        entry.default_route.clear();
                    } else if !requested.is_empty()
                        && entry.interface.as_deref().is_none_or(|i| i == a.ifname)
                    {
                        entry.gateway = requested.clone();
                        entry.default_route = requested.clone();
                    }
                }
            }
            entries
        })
        .collect()
}

/// One `AddedInterface` event per attachment, worded as Multus words it: every IP of the result with its prefix
/// (`Add eth0 [198.18.0.7/24] from ns/net`).
pub fn attach_events(record: &record::Record) -> Vec<PodEvent> {
    record
        .attachments
        .iter()
        .map(|a| {
            let ips: Vec<String> = recorded_result(a)
                .map(|r| r.ips.iter().map(|ip| ip.address.to_string()).collect())
                .unwrap_or_default();
            PodEvent {
                reason: "AddedInterface".into(),
                message: format!("Add {} [{}] from {}", a.ifname, ips.join(", "), a.network),
                warning: false,
            }
        })
        .collect()
}

/// A Warning event for each thing the pod's owner should hear about (Decision 7).
pub fn warning_events(warnings: &[plexus_api::policy::PolicyWarning]) -> Vec<PodEvent> {
    warnings
        .iter()
        .map(|w| PodEvent {
            reason: "CapabilityNotDeclared".into(),
            message: w.to_string(),
            warning: true,
        })
        .collect()
}

/// An attachment's recorded ADD result, parsed in its delegate's version.
fn recorded_result(a: &record::RecordedAttachment) -> Option<CniResult> {
    let version = a
        .delegate
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(version::IMPLICIT);
    a.result
        .as_ref()
        .and_then(|r| CniResult::from_value(r, version).ok())
}

/// VERSION (C36): echo the requested version with the list Plexus speaks.
fn version_reply(stdin: &[u8]) -> Result<String, PlexusError> {
    let requested = if stdin.iter().all(u8::is_ascii_whitespace) {
        version::CURRENT.to_owned()
    } else {
        let v: Value =
            serde_json::from_slice(stdin).map_err(|e| PlexusError::Decode(e.to_string()))?;
        v.get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or(version::CURRENT)
            .to_owned()
    };
    let info = VersionInfo {
        cni_version: requested,
        supported_versions: version::SUPPORTED.iter().map(|s| (*s).to_owned()).collect(),
    };
    Ok(serde_json::to_string(&info).expect("serialises"))
}

/// The GC request's `cni.dev/valid-attachments` (or the 1.1.0 tag's `cni.dev/attachments`).
fn valid_attachments(stdin: &[u8]) -> Result<Vec<(String, String)>, PlexusError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| PlexusError::Decode(e.to_string()))?;
    let list = v
        .get("cni.dev/valid-attachments")
        .or_else(|| v.get("cni.dev/attachments"));
    let Some(list) = list.filter(|l| !l.is_null()) else {
        return Ok(Vec::new());
    };
    let items = list.as_array().ok_or_else(|| {
        PlexusError::InvalidConfig("cni.dev/valid-attachments must be a list".into())
    })?;
    items
        .iter()
        .map(|a| {
            let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
            match (field("containerID"), field("ifname")) {
                (Some(c), Some(i)) => Ok((c, i)),
                _ => Err(PlexusError::InvalidConfig(format!(
                    "cni.dev/valid-attachments entry {a} needs string containerID and ifname"
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<CniEnv, PlexusError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn environment_rules() {
        assert!(matches!(env(&[]), Err(PlexusError::Environment(_))));
        assert!(matches!(
            env(&[("CNI_COMMAND", "FOO")]),
            Err(PlexusError::Environment(_))
        ));
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
        let Err(PlexusError::Environment(bad)) = env(&[("CNI_COMMAND", "ADD")]) else {
            panic!()
        };
        assert_eq!(bad.len(), 3, "{bad:?}");
        let Err(e) = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "-x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/n"),
        ]) else {
            panic!()
        };
        assert_eq!(e.to_cni().code, 4);
        assert!(e.to_string().contains("CNI_CONTAINERID"));
        assert!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", "eth0")
            ])
            .is_ok()
        );
    }

    #[test]
    fn version_command() {
        let out = run(
            |k| (k == "CNI_COMMAND").then(|| "VERSION".into()),
            br#"{"cniVersion":"0.4.0"}"#,
        )
        .unwrap()
        .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"].as_array().unwrap().len(),
            version::SUPPORTED.len()
        );
    }

    #[test]
    fn a_panic_becomes_a_cni_error() {
        let e = guard::<()>(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(e.code, 999);
        assert!(e.msg.contains("boom 7"), "{e}");
        let e = guard::<()>(|| std::panic::panic_any(5_u8)).unwrap_err();
        assert_eq!(e.code, 999);
        assert_eq!(guard(|| Ok::<_, CniError>(3)).unwrap(), 3);
    }

    #[test]
    fn gc_attachments() {
        let got =
            valid_attachments(br#"{"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}"#)
                .unwrap();
        assert_eq!(got, [("a".to_string(), "eth0".to_string())]);
        assert!(
            valid_attachments(br#"{"cni.dev/valid-attachments":[{"containerID":1}]}"#).is_err()
        );
        assert!(valid_attachments(b"{}").unwrap().is_empty());
    }
}
