//! CHANGE (hot-plug): attachments removed from and added to a running sandbox, under its lock, with an intent in the
//! record before any delegate runs, so that a process killed half-way leaves a record its next run can finish
//! ([`recover`]) and the runtime's DEL still deletes everything.

use tracing::{info, warn};

use super::delegate::Runnable;
use super::rollback::with_recorded_path;
use super::{Context, Sandbox};
use crate::error::PlexusError;
use crate::record::{Pending, Record, RecordedAttachment};

/// What one change did to the sandbox.
#[derive(Debug, Default)]
pub struct Changed {
    /// The attachments it added, as recorded (with their results).
    pub added: Vec<RecordedAttachment>,
    /// The attachments it removed.
    pub removed: Vec<RecordedAttachment>,
    /// What failed: an addition (rolled back, not in the record) or a removal (still in the record, pending).
    pub failed: Vec<(RecordedAttachment, PlexusError)>,
}

impl Changed {
    pub fn did_anything(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }
}

fn sandbox_of(record: &Record) -> Sandbox {
    Sandbox {
        container_id: record.container_id.clone(),
        netns: record.netns.clone(),
        ifname: record.ifname.clone(),
        args: String::new(),
    }
}

/// Removes the attachments at `remove` (indexes into the record, detached in reverse order) and adds `add` (each
/// appended to the record) in a sandbox whose record the caller loaded under the sandbox's lock. The intent is saved
/// first (the removals and additions marked pending), then each delegate runs; the record is saved again at the end
/// with `status_stale` set, for the caller to publish network-status and clear it. A failed addition is rolled back
/// (by its own delegate's rollback) and left out; a failed removal stays in the record, pending, for the next change
/// or the runtime's DEL.
pub fn change(
    ctx: &Context,
    record: &mut Record,
    remove: &[usize],
    add: Vec<RecordedAttachment>,
) -> Result<Changed, PlexusError> {
    let first_added = record.attachments.len();
    for &i in remove {
        if let Some(a) = record.attachments.get_mut(i) {
            a.pending = Some(Pending::Remove);
        }
    }
    for mut a in add {
        a.pending = Some(Pending::Add);
        a.index = record.attachments.len();
        record.attachments.push(a);
    }
    ctx.store.save(record)?;
    let ctx = &with_recorded_path(ctx, record);
    let sandbox = sandbox_of(record);
    let mut changed = Changed::default();
    let mut removing: Vec<usize> = remove.to_vec();
    removing.sort_unstable();
    for &i in removing.iter().rev() {
        let a = &record.attachments[i];
        match Runnable::new(a).and_then(|r| r.del(ctx, &sandbox, a.result.as_ref())) {
            Ok(()) => {
                info!(network = %a.network, ifname = %a.ifname, "hot-plug: detached");
                changed.removed.push(a.clone());
            }
            Err(e) => {
                warn!(network = %a.network, ifname = %a.ifname, error = %e, "hot-plug: detaching failed; it stays pending");
                changed.failed.push((a.clone(), e));
            }
        }
    }
    let mut kept_added = Vec::new();
    for i in first_added..record.attachments.len() {
        let a = &mut record.attachments[i];
        if let Some(device) = &a.device
            && let Err(e) = crate::devices::prepare_info_file(&ctx.config.device_info_dir, device)
        {
            warn!(network = %a.network, error = %e, "the device plugin's device-info file is not passed on");
        }
        match Runnable::new(a).and_then(|r| r.add(ctx, &sandbox)) {
            Ok(result) => {
                info!(network = %a.network, ifname = %a.ifname, "hot-plug: attached");
                a.result = Some(result);
                a.pending = None;
                if let Some(device) = &mut a.device
                    && let Ok(info) = crate::devices::read_info_file(device)
                {
                    device.info = info;
                }
                kept_added.push(a.clone());
            }
            Err(e) => {
                warn!(network = %a.network, ifname = %a.ifname, error = %e, "hot-plug: attaching failed; rolled back");
                changed.failed.push((a.clone(), e));
            }
        }
    }
    let removed: Vec<(String, String)> = changed
        .removed
        .iter()
        .map(|a| (a.network.clone(), a.ifname.clone()))
        .collect();
    record.attachments.retain(|a| match a.pending {
        Some(Pending::Remove) => !removed.contains(&(a.network.clone(), a.ifname.clone())),
        Some(Pending::Add) => false,
        None => true,
    });
    for (i, a) in record.attachments.iter_mut().enumerate() {
        a.index = i;
    }
    changed.added = kept_added;
    record.status_stale |= changed.did_anything();
    ctx.store.save(record)?;
    Ok(changed)
}

/// Finishes a change that a killed process left half-done (attachments still pending): an addition is rolled back
/// (DEL; the next change attaches it again if it is still wanted), a removal completed. Returns what it removed and
/// whether the record changed.
pub fn recover(ctx: &Context, record: &mut Record) -> Result<bool, PlexusError> {
    if record.attachments.iter().all(|a| a.pending.is_none()) {
        return Ok(false);
    }
    let ctx = &with_recorded_path(ctx, record);
    let sandbox = sandbox_of(record);
    let mut errors = Vec::new();
    let mut gone = vec![false; record.attachments.len()];
    for (i, a) in record.attachments.iter().enumerate().rev() {
        if a.pending.is_none() {
            continue;
        }
        match Runnable::new(a).and_then(|r| r.del(ctx, &sandbox, a.result.as_ref())) {
            Ok(()) => {
                info!(network = %a.network, ifname = %a.ifname, pending = ?a.pending, "hot-plug: an unfinished change finished");
                gone[i] = true;
            }
            Err(e) => errors.push(e),
        }
    }
    let mut i = 0;
    record.attachments.retain(|_| {
        i += 1;
        !gone[i - 1]
    });
    for (i, a) in record.attachments.iter_mut().enumerate() {
        a.index = i;
    }
    record.status_stale = true;
    ctx.store.save(record)?;
    match PlexusError::combine("finishing an unfinished hot-plug change", errors) {
        Some(e) => Err(e),
        None => Ok(true),
    }
}
