//! Undoing what an ADD attached: every attachment's DEL in reverse, past errors, with the plugins looked up where the
//! ADD found them; the record goes only when that worked.

use std::path::PathBuf;

use tracing::warn;

use super::delegate::Runnable;
use super::{Context, Sandbox};
use crate::error::PlexusError;
use crate::record::{Record, RecordState, RecordStore, SandboxLock};

pub(super) fn unusable_record(store: &RecordStore, sandbox: &Sandbox, msg: String) -> PlexusError {
    let path = store.path(&sandbox.container_id, &sandbox.ifname);
    PlexusError::Record {
        path: path.display().to_string(),
        msg,
    }
}

/// Undoes a failed ADD: DEL the first `attempted` attachments in reverse. The record goes when that worked, and
/// otherwise stays (state Failed) for the runtime's DEL to finish.
pub(super) fn roll_back(
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
pub(super) fn with_recorded_path<'c>(
    ctx: &'c Context,
    record: &Record,
) -> std::borrow::Cow<'c, Context> {
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
pub(super) fn delete_attachments(ctx: &Context, record: &Record) -> Result<(), PlexusError> {
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
