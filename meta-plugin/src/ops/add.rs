//! ADD: the record's intent, every attachment in order, rollback on failure, the record completed, and the default
//! network's result in the runtime's version.

use plexus_api::cni::result::CniResult;
use plexus_api::policy::PolicyError;
use serde_json::Value;
use tracing::{info, warn};

use super::delegate::Runnable;
use super::rollback::{delete_attachments, roll_back, unusable_record};
use super::{Context, Sandbox};
use crate::error::PlexusError;
use crate::plan::Plan;
use crate::record::{Loaded, PodRef, RECORD_FORMAT, Record, RecordState, SandboxLock};

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
struct Attached {
    lock: SandboxLock,
    added: Added,
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
fn complete(ctx: &Context, attached: Attached) -> Result<Added, PlexusError> {
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
fn attach(
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
        env_args: plan.env_args.clone(),
        fixed: plan.fixed,
        status_stale: false,
    };
    ctx.store.save(&record)?;

    for i in 0..record.attachments.len() {
        if let Some(gone) = ctx.past_deadline(&record.attachments[i].network) {
            roll_back(ctx, lock, &mut record, i)?;
            return Err(gone);
        }
        if let Some(device) = &record.attachments[i].device
            && let Err(e) = crate::devices::prepare_info_file(&ctx.config.device_info_dir, device)
        {
            warn!(network = %record.attachments[i].network, error = %e, "the device plugin's device-info file is not passed on");
        }
        let outcome = Runnable::new(&record.attachments[i]).and_then(|r| r.add(ctx, sandbox));
        match outcome {
            Ok(result) => {
                info!(network = %record.attachments[i].network, ifname = %record.attachments[i].ifname, "attached");
                record.attachments[i].result = Some(result);
                if let Some(device) = &mut record.attachments[i].device {
                    match crate::devices::read_info_file(device) {
                        Ok(info) => device.info = info,
                        Err(e) => {
                            warn!(network = %record.attachments[i].network, error = %e, "the attachment's device-info is not reported")
                        }
                    }
                }
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
