//! ADD, DEL, CHECK, STATUS, GC and hot-plug's CHANGE over a plan or a record: ordering, prevResult chaining, rollback, and the
//! best-effort teardown rules of the CNI and multi-network specs. One file per verb (`add`, `del`, `check`, `status`,
//! `gc`, `change`); `delegate` runs one attachment's plugin list, `rollback` undoes what an ADD attached.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use plexus_api::cni::version;

use crate::config::Config;
use crate::error::PlexusError;
use crate::invoke::CniCommand;
use crate::record::RecordStore;

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

mod add;
mod change;
mod check;
mod del;
mod delegate;
mod gc;
mod rollback;
mod status;

pub use add::{Added, add};
pub use change::{Changed, change, recover};
pub use check::check;
pub use del::{DerivedPlan, del, static_fallback};
pub use gc::gc;
pub use rollback::undo;
pub use status::{status, wait_until_ready};

pub(super) fn require_version(
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
