//! STATUS and the readiness indicator file that ADD and DEL wait for.

use std::time::Duration;

use plexus_api::cni::{NetworkConfigList, version};
use tracing::info;

use super::delegate::Runnable;
use super::{Context, Sandbox, require_version};
use crate::error::PlexusError;
use crate::invoke::CniCommand;
use crate::record::RecordedAttachment;

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
