//! CHECK: every attachment of the record, in order, with its recorded result.

use plexus_api::cni::version;

use super::delegate::Runnable;
use super::rollback::{unusable_record, with_recorded_path};
use super::{Context, Sandbox, require_version};
use crate::error::PlexusError;
use crate::record::{Loaded, RecordState};

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
    let lock = store.lock(&sandbox.container_id, &sandbox.ifname)?;
    let record = match store.load(&sandbox.container_id, &sandbox.ifname) {
        Loaded::Found(r) => r,
        Loaded::Missing => {
            // Nothing to check: the lock file made for this call goes too (CHECKs of unknown containers leave
            // nothing behind).
            store.remove(lock, &sandbox.container_id, &sandbox.ifname)?;
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
