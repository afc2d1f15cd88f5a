//! DEL: from the record when there is one, else from what can be derived (the pod and its NADs, the default
//! network, the stdin config's delegates); it always runs to the end.

use tracing::{info, warn};

use super::rollback::{delete_attachments, unusable_record};
use super::{Context, Sandbox};
use crate::error::PlexusError;
use crate::plan::Plan;
use crate::record::{Loaded, RECORD_FORMAT, Record, RecordState};

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

pub(super) fn derived_record(ctx: &Context, sandbox: &Sandbox, plan: &Plan) -> Record {
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
        env_args: plan.env_args.clone(),
        fixed: plan.fixed,
        status_stale: false,
    }
}
