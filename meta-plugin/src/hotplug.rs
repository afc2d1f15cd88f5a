//! Hot-plug's Kubernetes path: a running pod's networks annotation against what its sandbox's record holds; the
//! selections it gained attached and those it lost detached ([`crate::ops::change`]), then network-status in one
//! PATCH and one event per change. The node daemon calls [`sync`] when its pod watch sees a pod change; the rules of
//! which attachment is which are `plexus_api::hotplug`'s.

use plexus_api::hotplug::{self, Present};
use plexus_api::status::print_statuses;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::PlexusError;
use crate::kubernetes::{give_devices, thread_runtime};
use crate::ops::{self, Context};
use crate::plan::{self, NetworkRequest, Plan, PodView, ResolvedNetwork};
use crate::record::{Loaded, Record, RecordState, RecordStore, RecordedAttachment};
use crate::report::network_statuses;
use crate::source::{self, NetworkSource, PodEvent, SourceProvider};

/// What [`sync`] found and did.
#[derive(Debug, Default)]
pub struct Synced {
    /// `interface from network` of each attachment added.
    pub added: Vec<String>,
    /// `interface from network` of each attachment removed.
    pub removed: Vec<String>,
    /// What failed (each also a Warning event on the pod): a selection that can't be attached, a detach that failed.
    pub failed: Vec<String>,
    /// Whether network-status says what the sandbox has (false: the write failed; the next sync retries it, without
    /// running any delegate).
    pub status_current: bool,
    /// The annotation can't be used (reported once; nothing to retry until it changes).
    pub unusable_annotation: bool,
}

impl Synced {
    /// Nothing more to do until the pod or its NADs change: everything done, or only an unusable annotation (which
    /// trying again would not fix).
    pub fn settled(&self) -> bool {
        self.status_current && (self.failed.is_empty() || self.unusable_annotation)
    }
}

/// The sandbox's record is not there or not finished: its ADD has not completed (or it is being deleted). The
/// caller tries again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady(pub String);

/// Whether the annotation asks for a change the record does not have, without taking the sandbox's lock or calling
/// anything: what the daemon checks on every pod event.
pub fn wants_change(config: &Config, record: &Record, pod: &PodView) -> bool {
    if record.state != RecordState::Added {
        return false;
    }
    if record.status_stale || record.attachments.iter().any(|a| a.pending.is_some()) {
        return true;
    }
    match plan::pod_requests(config, pod) {
        Ok(requests) => !change_of(config, record, &requests).is_empty(),
        // A malformed annotation: sync reports it.
        Err(_) => true,
    }
}

/// The annotation's requests (those with a selection) against the record's attachments past the fixed ones.
fn change_of(config: &Config, record: &Record, requests: &[NetworkRequest]) -> hotplug::Change {
    let fixed = fixed_count(config, record);
    let present: Vec<Present<'_>> = record.attachments[fixed.min(record.attachments.len())..]
        .iter()
        .map(|a| Present {
            network: &a.network,
            ifname: &a.ifname,
        })
        .collect();
    let wanted: Vec<NetworkRequest> = requests
        .iter()
        .filter(|r| r.selection.is_some())
        .cloned()
        .collect();
    let mut change = hotplug::change(&wanted, &present);
    for i in change.keep.iter_mut().chain(change.remove.iter_mut()) {
        *i += fixed;
    }
    change
}

/// How many leading attachments are not the annotation's: recorded since hot-plug exists; for an older record, the
/// default network and the configured `defaultNetworks`.
fn fixed_count(config: &Config, record: &Record) -> usize {
    record
        .fixed
        .unwrap_or(1 + config.default_networks.len())
        .max(1)
}

/// Brings the sandbox `container_id`/`ifname` (its record in `store`) to what `pod`'s annotation asks for, under the
/// sandbox's lock: finishes a change a killed daemon left, detaches the selections the annotation lost, attaches
/// those it gained (NADs read through `provider`), and writes network-status and events when anything changed or
/// the last write failed.
pub fn sync<P: SourceProvider>(
    provider: &P,
    config: &Config,
    store: &RecordStore,
    container_id: &str,
    ifname: &str,
    pod: &PodView,
) -> Result<Result<Synced, NotReady>, PlexusError> {
    let lock = store.lock(container_id, ifname)?;
    let mut record = match store.load(container_id, ifname) {
        Loaded::Found(r) if r.state == RecordState::Added => r,
        Loaded::Found(r) => return Ok(Err(NotReady(format!("its record is {:?}", r.state)))),
        Loaded::Missing => {
            // The sandbox's DEL ran since the caller saw its record: the lock file made for this call goes too, as
            // DEL and CHECK without a record do, so a sync that lost that race leaves nothing behind.
            store.remove(lock, container_id, ifname)?;
            return Ok(Err(NotReady("it has no record".into())));
        }
        Loaded::Corrupt(why) => {
            return Err(PlexusError::Record {
                path: store.path(container_id, ifname).display().to_string(),
                msg: why,
            });
        }
    };
    let mut ctx = Context::new(config.clone(), &record.path);
    ctx.store = store.clone();
    thread_runtime(|runtime| {
        runtime.block_on(async { sync_locked(provider, &ctx, &mut record, pod).await })
    })?
    .map(Ok)
}

async fn sync_locked<P: SourceProvider>(
    provider: &P,
    ctx: &Context,
    record: &mut Record,
    pod: &PodView,
) -> Result<Synced, PlexusError> {
    let mut synced = Synced::default();
    let mut events: Vec<PodEvent> = Vec::new();
    if let Err(e) = ops::recover(ctx, record) {
        synced.failed.push(e.to_string());
    }
    let source = provider.source(&ctx.config).await?;
    let change = match plan::pod_requests(&ctx.config, pod) {
        Ok(requests) => change_of(&ctx.config, record, &requests),
        Err(e) => {
            // The webhook refuses such an edit; a pod that got past it keeps the networks it has.
            let msg = format!("the networks annotation can't be used, nothing changed: {e}");
            events.push(failure_event(&msg));
            synced.failed.push(msg);
            synced.unusable_annotation = true;
            hotplug::Change::default()
        }
    };
    let fixed = fixed_count(&ctx.config, record).min(record.attachments.len());
    let kept: Vec<usize> = (0..fixed).chain(change.keep.iter().copied()).collect();
    let (additions, failures) = additions(&source, ctx, record, &kept, pod, &change.add).await;
    for msg in failures {
        events.push(failure_event(&msg));
        synced.failed.push(msg);
    }
    if !change.is_empty() {
        let changed = ops::change(ctx, record, &change.remove, additions)?;
        for a in &changed.removed {
            synced
                .removed
                .push(format!("{} from {}", a.ifname, a.network));
            events.push(PodEvent {
                reason: "RemovedInterface".into(),
                message: format!("Remove {} from {}", a.ifname, a.network),
                warning: false,
            });
        }
        let added = Record {
            attachments: changed.added.clone(),
            ..record.clone()
        };
        events.extend(crate::report::attach_events(&added));
        synced.added = changed
            .added
            .iter()
            .map(|a| format!("{} from {}", a.ifname, a.network))
            .collect();
        for (a, e) in &changed.failed {
            let msg = format!("{} from {}: {e}", a.ifname, a.network);
            events.push(failure_event(&msg));
            synced.failed.push(msg);
        }
    }
    synced.status_current = !record.status_stale;
    if record.status_stale {
        let status = print_statuses(&network_statuses(record));
        match source.publish_status(pod, &status).await {
            Ok(()) => {
                record.status_stale = false;
                ctx.store.save(record)?;
                synced.status_current = true;
            }
            Err(e) => {
                warn!(pod = %pod.label(), error = %e, "hot-plug: network-status not written; retried later without running any delegate");
                let msg = format!(
                    "network-status not written (retried without running any delegate): {e}"
                );
                events.push(failure_event(&msg));
                synced.failed.push(msg);
            }
        }
    }
    if ctx.config.pod_events
        && let Err(e) = source.record_events(pod, &events).await
    {
        warn!(error = %e, "could not record the pod's events");
    }
    if !synced.added.is_empty() || !synced.removed.is_empty() {
        info!(pod = %pod.label(), added = ?synced.added, removed = ?synced.removed, failed = synced.failed.len(), "hot-plug");
    }
    Ok(synced)
}

fn failure_event(msg: &str) -> PodEvent {
    PodEvent {
        reason: "HotplugFailed".into(),
        message: msg.to_owned(),
        warning: true,
    }
}

/// The records of the selections to add, each resolved and planned as an ADD would (capabilities, `cni-args`,
/// devices); a selection that can't be is a failure message and is left out.
async fn additions<S: NetworkSource>(
    source: &S,
    ctx: &Context,
    record: &Record,
    kept: &[usize],
    pod: &PodView,
    add: &[NetworkRequest],
) -> (Vec<RecordedAttachment>, Vec<String>) {
    let mut failures = Vec::new();
    if add.is_empty() {
        return (Vec::new(), failures);
    }
    let Some(default) = record.attachments.first() else {
        return (Vec::new(), vec!["the record has no default network".into()]);
    };
    let default_network =
        match plexus_api::cni::NetworkConfigList::from_value(default.delegate.clone()) {
            Ok(config) => ResolvedNetwork {
                display: default.network.clone(),
                config,
                resource_name: None,
            },
            Err(e) => {
                return (
                    Vec::new(),
                    vec![format!("the recorded default network: {e}")],
                );
            }
        };
    let mut requests = vec![NetworkRequest {
        reference: plan::NetworkRef::Delegate(0),
        selection: None,
    }];
    let mut resolved = vec![default_network];
    for request in add {
        match source::resolve_one(source, &ctx.config, pod, &request.reference).await {
            Ok(network) => {
                requests.push(request.clone());
                resolved.push(network);
            }
            Err(e) => failures.push(format!("{}: {e}", request.reference.label())),
        }
    }
    let env_args = if record.env_args.is_empty() {
        plan::delegate_cni_args("", pod, &record.container_id)
    } else {
        record.env_args.clone()
    };
    let planned = Plan::for_pod(
        &ctx.config,
        pod,
        &requests,
        &resolved,
        &record.ifname,
        &env_args,
    );
    let mut plan = match planned {
        Ok(p) => p,
        Err(e) => {
            failures.push(e.to_string());
            return (Vec::new(), failures);
        }
    };
    plan.attachments.remove(0);
    if let Err(e) = check_names(pod, record, kept, &plan) {
        failures.push(e.to_string());
        return (Vec::new(), failures);
    }
    if plan.needs_devices() {
        let in_use: Vec<(String, String)> = record
            .attachments
            .iter()
            .filter_map(|a| a.device.as_ref())
            .map(|d| (d.resource_name.clone(), d.device_id.clone()))
            .collect();
        if let Err(e) = give_devices(
            source,
            &ctx.config,
            pod,
            &mut plan,
            &record.container_id,
            &in_use,
        )
        .await
        {
            failures.push(e.to_string());
            return (Vec::new(), failures);
        }
    }
    (plan.to_records(), failures)
}

/// Every interface of the sandbox after the change is valid and unique (the added ones with the kept ones).
fn check_names(
    pod: &PodView,
    record: &Record,
    kept: &[usize],
    plan: &Plan,
) -> Result<(), plexus_api::policy::PolicyError> {
    plexus_api::policy::check_interface_names(
        Some(pod),
        kept.iter()
            .filter_map(|&i| record.attachments.get(i))
            .map(|a| (a.network.as_str(), a.ifname.as_str()))
            .chain(
                plan.attachments
                    .iter()
                    .map(|a| (a.network.as_str(), a.ifname.as_str())),
            ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_of_a_sandbox_whose_record_is_gone_leaves_no_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path().join("records"), "net");
        let pod = PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            ..PodView::default()
        };
        let outcome = sync(
            &source::Connect,
            &Config::from_raw(crate::config::RawConfig::default()).unwrap(),
            &store,
            "c1",
            "eth0",
            &pod,
        )
        .unwrap();
        assert!(matches!(outcome, Err(NotReady(ref why)) if why == "it has no record"));
        let left: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in the record dir: {left:?}");
        // The lock still works for the next holder (an ADD of the same sandbox).
        drop(store.lock("c1", "eth0").unwrap());
    }
}
