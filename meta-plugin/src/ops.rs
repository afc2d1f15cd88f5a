//! ADD, DEL, CHECK, STATUS and GC over a plan or a record: ordering, prevResult chaining, rollback, and the
//! best-effort teardown rules of the CNI and multi-network specs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use plexus_api::cni::config::RequestExtras;
use plexus_api::cni::result::CniResult;
use plexus_api::cni::{NetworkConfigList, version};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::{DelegateFailure, PlexusError};
use crate::invoke::{self, CniCommand, Invocation, InvokeError};
use crate::plan::Plan;
use crate::record::{
    Loaded, PodRef, RECORD_FORMAT, Record, RecordState, RecordStore, RecordedAttachment,
    SandboxLock,
};
use plexus_api::policy::PolicyError;

/// The sandbox a request is about, from the runtime's environment.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// The runtime's `CNI_ARGS`.
    pub args: String,
}

/// What every operation needs: the config, the records and where delegates are found.
#[derive(Debug, Clone)]
pub struct Context {
    pub config: Config,
    pub store: RecordStore,
    /// `binDir` entries, then the runtime's `CNI_PATH`: where delegate binaries are looked up, and the delegates'
    /// own `CNI_PATH`.
    pub path: Vec<PathBuf>,
    pub timeout: Duration,
    /// When the caller stops waiting (thick mode: the shim's `deadlineMs`, set by the daemon). ADD starts no
    /// attachment after it and gives no ADD delegate longer than it leaves; what was attached is rolled back.
    pub deadline: Option<Instant>,
}

impl Context {
    pub fn new(config: Config, runtime_path: &[PathBuf]) -> Self {
        let mut path = config.bin_dirs.clone();
        for p in runtime_path {
            if !path.contains(p) {
                path.push(p.clone());
            }
        }
        Self {
            store: RecordStore::new(config.cni_dir.clone(), &config.name),
            timeout: config.delegate_timeout,
            path,
            config,
            deadline: None,
        }
    }

    /// How long one delegate call may take: `delegateTimeoutSeconds`, and for ADD no longer than the deadline leaves.
    fn delegate_timeout(&self, command: CniCommand) -> Duration {
        match self.deadline {
            Some(deadline) if command == CniCommand::Add => self
                .timeout
                .min(deadline.saturating_duration_since(Instant::now())),
            _ => self.timeout,
        }
    }

    /// The error of an ADD stopped at `network` because the caller gave up, once the deadline has passed.
    fn past_deadline(&self, network: &str) -> Option<PlexusError> {
        self.deadline
            .filter(|d| Instant::now() >= *d)
            .map(|_| PlexusError::CallerGone {
                network: network.to_owned(),
            })
    }
}

/// One attachment ready to run: the recorded form and its parsed delegate.
struct Runnable<'r> {
    rec: &'r RecordedAttachment,
    list: NetworkConfigList,
    version: &'static str,
}

impl<'r> Runnable<'r> {
    fn new(rec: &'r RecordedAttachment) -> Result<Self, PlexusError> {
        let list = NetworkConfigList::from_value(rec.delegate.clone()).map_err(|source| {
            PlexusError::InvalidDelegate {
                network: rec.network.clone(),
                source,
            }
        })?;
        let version = list
            .negotiated_version()
            .map_err(|source| PlexusError::InvalidDelegate {
                network: rec.network.clone(),
                source,
            })?;
        Ok(Self { rec, list, version })
    }

    /// Runs one plugin of this attachment.
    fn call(
        &self,
        ctx: &Context,
        sandbox: &Sandbox,
        command: CniCommand,
        plugin: usize,
        prev_result: Option<&Value>,
    ) -> Result<Vec<u8>, PlexusError> {
        let extras = RequestExtras {
            capability_args: Some(&self.rec.capability_args),
            cni_args: Some(&self.rec.cni_args),
            prev_result,
        };
        let conf = self.list.request_config(plugin, self.version, &extras);
        let stdin = serde_json::to_vec(&conf).expect("a request config always serialises");
        let plugin_type = self.list.plugins[plugin].plugin_type();
        let _phase = tracing::debug_span!("delegate_exec", network = %self.rec.network, delegate = plugin_type, command = command.as_str()).entered();
        debug!(network = %self.rec.network, ifname = %self.rec.ifname, delegate = plugin_type, command = command.as_str(), "calling delegate");
        let timeout = ctx.delegate_timeout(command);
        let out = invoke::invoke(&Invocation {
            command,
            plugin: plugin_type,
            container_id: &sandbox.container_id,
            netns: &sandbox.netns,
            ifname: &self.rec.ifname,
            cni_args: &self.rec.env_args,
            path: &ctx.path,
            stdin: &stdin,
            timeout,
        })
        .map_err(|e| match e {
            InvokeError::Timeout(_) if command == CniCommand::Add => ctx
                .past_deadline(&self.rec.network)
                .unwrap_or_else(|| self.delegate_error(command, plugin_type, e, timeout)),
            e => self.delegate_error(command, plugin_type, e, timeout),
        })?;
        if !out.stderr.iter().all(u8::is_ascii_whitespace) {
            // C54: what a delegate says on stderr reaches the log at the default level, not only at debug.
            info!(network = %self.rec.network, delegate = plugin_type, command = command.as_str(), stderr = %String::from_utf8_lossy(&out.stderr).trim(), "delegate stderr");
        }
        Ok(out.stdout)
    }

    fn delegate_error(
        &self,
        command: CniCommand,
        delegate: &str,
        e: InvokeError,
        timeout: Duration,
    ) -> PlexusError {
        let (network, ifname, delegate) = (
            self.rec.network.clone(),
            self.rec.ifname.clone(),
            delegate.to_owned(),
        );
        let command = command.as_str();
        match e {
            InvokeError::Timeout(_) => PlexusError::DelegateTimeout {
                network,
                ifname,
                delegate,
                command,
                seconds: timeout.as_secs_f64(),
            },
            InvokeError::Plugin(err) => {
                warn!(network = %network, delegate = %delegate, command, code = err.code, msg = %err.msg, details = %err.details, "delegate failed");
                PlexusError::Delegate(Box::new(DelegateFailure {
                    network,
                    ifname,
                    delegate,
                    command,
                    code: err.code,
                    msg: err.msg,
                    details: err.details,
                }))
            }
            other => PlexusError::Delegate(Box::new(DelegateFailure {
                network,
                ifname,
                delegate,
                command,
                code: match other {
                    InvokeError::UnsafeName(_) => plexus_api::cni::ErrorCode::InvalidConfig.code(),
                    _ => plexus_api::cni::ErrorCode::DelegateFailed.code(),
                },
                msg: other.to_string(),
                details: String::new(),
            })),
        }
    }

    /// ADD through the whole list with prevResult chaining (C47). On failure every plugin of the list is deleted
    /// in reverse (C57, and the 0.4.0 rule that plugins which never got the ADD get the DEL too).
    fn add(&self, ctx: &Context, sandbox: &Sandbox) -> Result<Value, PlexusError> {
        let mut prev: Option<Value> = None;
        for i in 0..self.list.plugins.len() {
            let step = self
                .call(ctx, sandbox, CniCommand::Add, i, prev.as_ref())
                .and_then(|stdout| {
                    if stdout.iter().all(u8::is_ascii_whitespace) {
                        // A plugin that prints nothing leaves the previous result as it was.
                        return prev
                            .clone()
                            .ok_or_else(|| self.bad_result(i, "printed no result"));
                    }
                    let parsed = CniResult::from_json(&stdout, self.version)
                        .map_err(|e| self.bad_result(i, &e.to_string()))?;
                    parsed
                        .to_value(self.version)
                        .map_err(|e| self.bad_result(i, &e.to_string()))
                });
            match step {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    if let Err(rollback) = self.del(ctx, sandbox, prev.as_ref()) {
                        warn!(network = %self.rec.network, error = %rollback, "rollback of a failed attachment left errors");
                    }
                    return Err(e);
                }
            }
        }
        prev.ok_or_else(|| self.bad_result(0, "no plugins"))
    }

    fn bad_result(&self, plugin: usize, why: &str) -> PlexusError {
        PlexusError::Delegate(Box::new(DelegateFailure {
            network: self.rec.network.clone(),
            ifname: self.rec.ifname.clone(),
            delegate: self.list.plugins[plugin].plugin_type().to_owned(),
            command: "ADD",
            code: plexus_api::cni::ErrorCode::Decoding.code(),
            msg: format!("its result is invalid: {why}"),
            details: String::new(),
        }))
    }

    /// DEL through the list in reverse (C25), each plugin given the final ADD result where the version carries
    /// one. Keeps going past a failing plugin so that one broken delegate does not leak the others' resources.
    fn del(
        &self,
        ctx: &Context,
        sandbox: &Sandbox,
        result: Option<&Value>,
    ) -> Result<(), PlexusError> {
        let prev = result.filter(|_| {
            version::Version::parse(self.version).is_some_and(|v| v.sends_prev_result_on_del())
        });
        let errors: Vec<PlexusError> = (0..self.list.plugins.len())
            .rev()
            .filter_map(|i| self.call(ctx, sandbox, CniCommand::Del, i, prev).err())
            .collect();
        PlexusError::combine(&format!("DEL of network {:?}", self.rec.network), errors)
            .map_or(Ok(()), Err)
    }

    /// CHECK in order with the final ADD result, stopping at the first error (C27, C32).
    fn check(&self, ctx: &Context, sandbox: &Sandbox) -> Result<(), PlexusError> {
        let checkable = version::Version::parse(self.version).is_some_and(|v| v.supports_check());
        if self.list.disable_check || !checkable {
            debug!(network = %self.rec.network, version = self.version, disable_check = self.list.disable_check, "CHECK skipped");
            return Ok(());
        }
        for i in 0..self.list.plugins.len() {
            self.call(ctx, sandbox, CniCommand::Check, i, self.rec.result.as_ref())?;
        }
        Ok(())
    }
}

/// What a successful ADD produced.
#[derive(Debug)]
pub struct Added {
    /// The default network's result in the runtime's version: what goes on stdout.
    pub result: Value,
    /// The completed record (every attachment with its result).
    pub record: Record,
}

/// An ADD whose networks are all attached, its record not yet completed (still the intent on disk): what
/// [`complete`] finishes. It holds the sandbox's lock.
pub struct Attached {
    lock: SandboxLock,
    added: Added,
}

impl Attached {
    /// The record as it will be completed (every attachment with its result).
    pub fn record(&self) -> &Record {
        &self.added.record
    }
}

/// ADD: write the record's intent, attach every network in order, roll back on failure, complete the record, and
/// return the default network's result in the runtime's version.
pub fn add(
    ctx: &Context,
    sandbox: &Sandbox,
    plan: &Plan,
    pod: Option<PodRef>,
) -> Result<Added, PlexusError> {
    complete(ctx, attach(ctx, sandbox, plan, pod)?)
}

/// Completes the record of an attached ADD (state Added, on disk), and releases the sandbox's lock. When the record
/// can't be written, the ADD is rolled back: the runtime gets the error, so it must not be left with networks
/// attached.
pub fn complete(ctx: &Context, attached: Attached) -> Result<Added, PlexusError> {
    let Attached { lock, mut added } = attached;
    added.record.state = RecordState::Added;
    if let Err(e) = ctx.store.save(&added.record) {
        let all = added.record.attachments.len();
        roll_back(ctx, lock, &mut added.record, all)?;
        return Err(e);
    }
    Ok(added)
}

/// The first part of [`add`]: everything but the record's completion. Failures roll back what was attached.
pub fn attach(
    ctx: &Context,
    sandbox: &Sandbox,
    plan: &Plan,
    pod: Option<PodRef>,
) -> Result<Attached, PlexusError> {
    let lock = ctx.store.lock(&sandbox.container_id, &sandbox.ifname)?;
    match ctx.store.load(&sandbox.container_id, &sandbox.ifname) {
        Loaded::Found(old) if old.state == RecordState::Added => {
            return Err(PlexusError::AlreadyAttached {
                container_id: sandbox.container_id.clone(),
                ifname: sandbox.ifname.clone(),
            });
        }
        Loaded::Found(old) => {
            // An earlier ADD died or failed half-way: finish its teardown before starting again.
            warn!(state = ?old.state, "an unfinished record exists; deleting what it attached first");
            delete_attachments(ctx, &old)?;
        }
        Loaded::Corrupt(why) => {
            return Err(unusable_record(
                &ctx.store,
                sandbox,
                format!("{why}; DEL the container first"),
            ));
        }
        Loaded::Missing => {}
    }
    let mut record = Record {
        format: RECORD_FORMAT,
        container_id: sandbox.container_id.clone(),
        ifname: sandbox.ifname.clone(),
        netns: sandbox.netns.clone(),
        state: RecordState::Adding,
        cni_version: ctx.config.result_version().to_owned(),
        path: ctx.path.clone(),
        pod,
        attachments: plan.to_records(),
    };
    ctx.store.save(&record)?;

    for i in 0..record.attachments.len() {
        if let Some(gone) = ctx.past_deadline(&record.attachments[i].network) {
            roll_back(ctx, lock, &mut record, i)?;
            return Err(gone);
        }
        let outcome = Runnable::new(&record.attachments[i]).and_then(|r| r.add(ctx, sandbox));
        match outcome {
            Ok(result) => {
                info!(network = %record.attachments[i].network, ifname = %record.attachments[i].ifname, "attached");
                record.attachments[i].result = Some(result);
            }
            Err(e) => {
                // The failed attachment rolled itself back; now the ones before it, in reverse (R52, R58).
                roll_back(ctx, lock, &mut record, i)?;
                return Err(e);
            }
        }
    }
    // R33: a selection that asked for the default route gets it, and the other interfaces lose theirs.
    if let Some(chosen) = record
        .attachments
        .iter()
        .find(|a| !a.is_default && a.default_route.is_some())
    {
        let gateways = chosen.default_route.clone().unwrap_or_default();
        match crate::netns::set_default_route(
            std::path::Path::new(&sandbox.netns),
            &chosen.ifname,
            &gateways,
        ) {
            Ok(change) => {
                info!(network = %chosen.network, ifname = %chosen.ifname, ?change, "default route moved")
            }
            Err(e) => {
                let err = PlexusError::RouteChange {
                    network: chosen.network.clone(),
                    ifname: chosen.ifname.clone(),
                    source: e,
                };
                let all = record.attachments.len();
                roll_back(ctx, lock, &mut record, all)?;
                return Err(err);
            }
        }
    }

    let Some(default) = record.attachments.first() else {
        return Err(PlexusError::Policy(PolicyError::NoDefaultNetwork));
    };
    let delegate_version = Runnable::new(default)?.version;
    let converted = match &default.result {
        Some(result) => CniResult::from_value(result, delegate_version)
            .and_then(|r| r.to_value(ctx.config.result_version()))
            .map_err(|e| e.to_string()),
        None => Err("the default network's delegate gave no result".to_owned()),
    };
    match converted {
        Ok(converted) => Ok(Attached {
            lock,
            added: Added {
                result: converted,
                record,
            },
        }),
        Err(e) => {
            // The runtime gets an error, so it must not be left with networks it doesn't know about.
            let err = PlexusError::ResultVersion {
                network: default.network.clone(),
                version: ctx.config.result_version().to_owned(),
                msg: e,
            };
            let all = record.attachments.len();
            roll_back(ctx, lock, &mut record, all)?;
            Err(err)
        }
    }
}

fn unusable_record(store: &RecordStore, sandbox: &Sandbox, msg: String) -> PlexusError {
    let path = store.path(&sandbox.container_id, &sandbox.ifname);
    PlexusError::Record {
        path: path.display().to_string(),
        msg,
    }
}

/// Undoes a failed ADD: DEL the first `attempted` attachments in reverse. The record goes when that worked, and
/// otherwise stays (state Failed) for the runtime's DEL to finish.
fn roll_back(
    ctx: &Context,
    lock: SandboxLock,
    record: &mut Record,
    attempted: usize,
) -> Result<(), PlexusError> {
    let done = Record {
        attachments: record.attachments[..attempted].to_vec(),
        ..record.clone()
    };
    match delete_attachments(ctx, &done) {
        Ok(()) => ctx.store.remove(lock, &record.container_id, &record.ifname),
        Err(rollback) => {
            warn!(error = %rollback, "rollback left errors; the record stays for the runtime's DEL");
            record.state = RecordState::Failed;
            ctx.store.save(record)
        }
    }
}

/// The context with the directories where the ADD found its delegates added to the path: DEL and CHECK run the
/// plugins the ADD ran, also with an empty or different stdin config.
fn with_recorded_path<'c>(ctx: &'c Context, record: &Record) -> std::borrow::Cow<'c, Context> {
    let missing: Vec<PathBuf> = record
        .path
        .iter()
        .filter(|p| !ctx.path.contains(p))
        .cloned()
        .collect();
    if missing.is_empty() {
        std::borrow::Cow::Borrowed(ctx)
    } else {
        std::borrow::Cow::Owned(Context {
            path: ctx.path.iter().chain(&missing).cloned().collect(),
            ..ctx.clone()
        })
    }
}

/// DEL every attachment of a record in reverse order, continuing past errors (R58–R60). Delegates are looked up
/// where the ADD found them as well as in the current path.
fn delete_attachments(ctx: &Context, record: &Record) -> Result<(), PlexusError> {
    let ctx = &with_recorded_path(ctx, record);
    let sandbox = Sandbox {
        container_id: record.container_id.clone(),
        netns: record.netns.clone(),
        ifname: record.ifname.clone(),
        args: String::new(),
    };
    let errors: Vec<PlexusError> = record
        .attachments
        .iter()
        .rev()
        .filter_map(|a| {
            Runnable::new(a)
                .and_then(|r| r.del(ctx, &sandbox, a.result.as_ref()))
                .err()
        })
        .collect();
    PlexusError::combine(
        &format!("DEL of container {:?}", record.container_id),
        errors,
    )
    .map_or(Ok(()), Err)
}

/// Undoes a completed ADD whose follow-up failed (e.g. network-status could not be published): DEL everything,
/// and drop the record when that worked.
pub fn undo(ctx: &Context, record: &Record) -> Result<(), PlexusError> {
    let lock = ctx.store.lock(&record.container_id, &record.ifname)?;
    delete_attachments(ctx, record)?;
    ctx.store.remove(lock, &record.container_id, &record.ifname)
}

/// What DEL falls back to when the sandbox has no usable record, and where it came from (for the log).
#[derive(Debug)]
pub struct DerivedPlan {
    pub plan: Plan,
    /// "the pod and its NADs", "the configured default network", "the stdin config's delegates".
    pub source: &'static str,
}

/// The fallback of a DEL without a record when nothing but the stdin config is at hand (static mode, GC): its
/// `delegates`.
pub fn static_fallback(ctx: &Context, sandbox: &Sandbox) -> Option<DerivedPlan> {
    Plan::from_static_config(&ctx.config, &sandbox.ifname, &sandbox.args)
        .ok()
        .map(|plan| DerivedPlan {
            plan,
            source: "the stdin config's delegates",
        })
}

/// DEL: from the record when there is one. Without a usable record, DEL deletes what `derive` works out (in
/// Kubernetes mode the pod and its NADs, then the configured default network; else the stdin config's delegates)
/// and says in the log which source it used. With nothing derivable a missing record is success (nothing to
/// delete), and a corrupt one an error (rather than claim success).
pub fn del(
    ctx: &Context,
    sandbox: &Sandbox,
    derive: impl FnOnce() -> Option<DerivedPlan>,
) -> Result<(), PlexusError> {
    let store = ctx.store.locate(&sandbox.container_id, &sandbox.ifname);
    let lock = store.lock(&sandbox.container_id, &sandbox.ifname)?;
    let record = match store.load(&sandbox.container_id, &sandbox.ifname) {
        Loaded::Found(record) => record,
        Loaded::Missing => match derive() {
            Some(derived) => {
                info!(
                    source = derived.source,
                    attachments = derived.plan.attachments.len(),
                    "no record: deleting what {} gives",
                    derived.source
                );
                derived_record(ctx, sandbox, &derived.plan)
            }
            None => {
                info!("no record and nothing to derive one from: nothing to delete");
                return store.remove(lock, &sandbox.container_id, &sandbox.ifname);
            }
        },
        Loaded::Corrupt(why) => match derive() {
            Some(derived) => {
                warn!(reason = %why, source = derived.source, "the record is unusable: deleting what {} gives instead", derived.source);
                derived_record(ctx, sandbox, &derived.plan)
            }
            None => {
                return Err(unusable_record(
                    &store,
                    sandbox,
                    format!(
                        "{why}; the stdin config names no delegates either, so what this container attached can't \
                         be known: nothing was deleted and the record was kept for inspection"
                    ),
                ));
            }
        },
    };
    // Keep the netns the runtime gives now if the record has none (DEL may come without CNI_NETNS, and vice versa).
    let record = Record {
        netns: if sandbox.netns.is_empty() {
            record.netns
        } else {
            sandbox.netns.clone()
        },
        ..record
    };
    delete_attachments(ctx, &record)?;
    store.remove(lock, &sandbox.container_id, &sandbox.ifname)
}

fn derived_record(ctx: &Context, sandbox: &Sandbox, plan: &Plan) -> Record {
    Record {
        format: RECORD_FORMAT,
        container_id: sandbox.container_id.clone(),
        ifname: sandbox.ifname.clone(),
        netns: sandbox.netns.clone(),
        state: RecordState::Failed,
        cni_version: ctx.config.result_version().to_owned(),
        path: ctx.path.clone(),
        pod: None,
        attachments: plan.to_records(),
    }
}

/// CHECK: every attachment of the record, in order, with its recorded result.
///
/// A stdin config without `cniVersion` (a minimal one naming only `cniDir`) is judged by the version the runtime
/// spoke at ADD, which the record keeps; a config with one must allow CHECK (0.4.0 or newer).
pub fn check(ctx: &Context, sandbox: &Sandbox) -> Result<(), PlexusError> {
    if !ctx.config.cni_version.is_empty() {
        require_version(
            ctx.config.result_version(),
            "CHECK",
            version::Version(0, 4, 0),
        )?;
    }
    let store = ctx.store.locate(&sandbox.container_id, &sandbox.ifname);
    let _lock = store.lock(&sandbox.container_id, &sandbox.ifname)?;
    let record = match store.load(&sandbox.container_id, &sandbox.ifname) {
        Loaded::Found(r) => r,
        Loaded::Missing => {
            return Err(PlexusError::UnknownContainer {
                container_id: sandbox.container_id.clone(),
                ifname: sandbox.ifname.clone(),
            });
        }
        Loaded::Corrupt(why) => {
            return Err(unusable_record(&store, sandbox, why));
        }
    };
    require_version(&record.cni_version, "CHECK", version::Version(0, 4, 0))?;
    if record.state != RecordState::Added {
        return Err(PlexusError::Incomplete {
            container_id: sandbox.container_id.clone(),
            state: format!("{:?}", record.state),
        });
    }
    if record.netns != sandbox.netns {
        return Err(PlexusError::Environment(vec![format!(
            "CNI_NETNS={:?} differs from the ADD's {:?}",
            sandbox.netns, record.netns
        )]));
    }
    let ctx = &with_recorded_path(ctx, &record);
    for a in &record.attachments {
        Runnable::new(a)?.check(ctx, sandbox)?;
    }
    Ok(())
}

fn require_version(
    requested: &str,
    command: &str,
    min: version::Version,
) -> Result<(), PlexusError> {
    let v = version::Version::parse(requested);
    if v.is_some_and(|v| v >= min) {
        Ok(())
    } else {
        Err(PlexusError::IncompatibleVersion {
            requested: format!("{requested} (for {command}, which needs {min} or newer)"),
            supported: version::SUPPORTED.join(", "),
        })
    }
}

/// R56: while `readinessindicatorfile` does not exist, the default network is not ready; ADD and DEL wait for it,
/// up to `readinessTimeoutSeconds`. Returns an error (try again later) when it never appeared.
pub fn wait_until_ready(ctx: &Context) -> Result<(), PlexusError> {
    let Some(file) = &ctx.config.readiness_indicator_file else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + ctx.config.readiness_timeout;
    let mut logged = false;
    while !file.exists() {
        if std::time::Instant::now() >= deadline {
            return Err(PlexusError::NotReady {
                msg: format!(
                    "the default network is not ready: readiness indicator file {} did not appear within {}s",
                    file.display(),
                    ctx.config.readiness_timeout.as_secs_f64()
                ),
                retry: true,
            });
        }
        if !logged {
            info!(file = %file.display(), "waiting for the default network's readiness indicator file");
            logged = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// STATUS: the readiness indicator file, then STATUS of every network Plexus attaches by default that speaks 1.1.0
/// (C35; `networks` from [`crate::source::default_network_configs`]).
pub fn status(ctx: &Context, networks: &[NetworkConfigList]) -> Result<(), PlexusError> {
    require_version(
        ctx.config.result_version(),
        "STATUS",
        version::Version(1, 1, 0),
    )?;
    if let Some(file) = &ctx.config.readiness_indicator_file
        && !file.exists()
    {
        return Err(PlexusError::NotReady {
            msg: format!(
                "the default network is not ready: readiness indicator file {} does not exist",
                file.display()
            ),
            retry: false,
        });
    }
    let sandbox = Sandbox::default();
    for delegate in networks {
        let rec = RecordedAttachment::for_network(&delegate.name, delegate.to_value());
        let r = Runnable::new(&rec)?;
        if !version::Version::parse(r.version).is_some_and(|v| v.supports_status_and_gc()) {
            continue;
        }
        for i in 0..r.list.plugins.len() {
            r.call(ctx, &sandbox, CniCommand::Status, i, None)?;
        }
    }
    Ok(())
}

/// GC: DEL every recorded sandbox that is not in `valid`, then send GC to each known delegate network with the
/// attachments that remain valid on it (C38–C42). Keeps going past errors and returns them all.
pub fn gc(ctx: &Context, valid: &[(String, String)]) -> Result<(), PlexusError> {
    require_version(ctx.config.result_version(), "GC", version::Version(1, 1, 0))?;
    let mut errors = Vec::new();
    let (records, bad) = ctx.store.list();
    for b in bad {
        warn!(record = %b, "GC: unreadable record left alone");
    }
    let mut kept = Vec::new();
    for record in records {
        if valid
            .iter()
            .any(|(c, i)| *c == record.container_id && *i == record.ifname)
        {
            kept.push(record);
            continue;
        }
        info!(container = %record.container_id, ifname = %record.ifname, "GC: deleting a stale sandbox");
        let sandbox = Sandbox {
            container_id: record.container_id.clone(),
            netns: String::new(),
            ifname: record.ifname.clone(),
            args: String::new(),
        };
        if let Err(e) = del(ctx, &sandbox, || static_fallback(ctx, &sandbox)) {
            errors.push(e);
        }
    }
    // Each delegate network once: the configured ones, then those found in the kept records.
    let mut networks: Vec<Value> = ctx
        .config
        .delegates
        .iter()
        .map(NetworkConfigList::to_value)
        .collect();
    for r in &kept {
        for a in &r.attachments {
            if !networks
                .iter()
                .any(|n| n.get("name") == a.delegate.get("name"))
            {
                networks.push(a.delegate.clone());
            }
        }
    }
    for delegate in networks {
        let name = delegate
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let attachments: Vec<Value> = kept
            .iter()
            .flat_map(|r| r.attachments.iter().map(move |a| (r, a)))
            .filter(|(_, a)| a.delegate.get("name").and_then(Value::as_str) == Some(name.as_str()))
            .map(|(r, a)| serde_json::json!({"containerID": r.container_id, "ifname": a.ifname}))
            .collect();
        let rec = RecordedAttachment::for_network(&name, delegate);
        let r = match Runnable::new(&rec) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if r.list.disable_gc
            || !version::Version::parse(r.version).is_some_and(|v| v.supports_status_and_gc())
        {
            continue;
        }
        for i in 0..r.list.plugins.len() {
            let mut conf = r
                .list
                .request_config(i, r.version, &RequestExtras::default());
            let obj = conf.as_object_mut().expect("request configs are objects");
            obj.insert(
                "cni.dev/valid-attachments".into(),
                Value::Array(attachments.clone()),
            );
            obj.insert(
                "cni.dev/attachments".into(),
                Value::Array(attachments.clone()),
            );
            let stdin = serde_json::to_vec(&conf).expect("serialises");
            let plugin_type = r.list.plugins[i].plugin_type();
            let outcome = invoke::invoke(&Invocation {
                command: CniCommand::Gc,
                plugin: plugin_type,
                container_id: "",
                netns: "",
                ifname: "",
                cni_args: "",
                path: &ctx.path,
                stdin: &stdin,
                timeout: ctx.timeout,
            });
            if let Err(e) = outcome {
                errors.push(r.delegate_error(CniCommand::Gc, plugin_type, e, ctx.timeout));
            }
        }
    }
    PlexusError::combine("GC", errors).map_or(Ok(()), Err)
}
