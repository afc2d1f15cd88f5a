//! On-node records of attached plans.
//!
//! A record holds everything DEL and CHECK need (each attachment's delegate config, interface name, runtime
//! arguments and result), so they never need the API server, the NAD or the stdin config. Records live in `cniDir`
//! (mode 0700; an existing directory that others can read is refused), one file per network, sandbox and interface
//! (`<network>~<container id>-<ifname>.json`, so that Plexus networks sharing a `cniDir` never see each other's
//! records), written atomically (temp file, rename) with mode 0600 before any delegate runs, and again when the ADD
//! completes (see [`RecordStore::save`] for why without fsync). Every operation on a sandbox holds that sandbox's
//! lock file for its whole duration.
//!
//! Records written before the network name was part of the key (`<container id>-<ifname>.json`) are moved to the
//! new name by the first DEL or CHECK of their sandbox; GC leaves them alone (it can't know their network).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::PlexusError;

/// Format version of the record file.
pub const RECORD_FORMAT: u32 = 1;

/// Where a plan's ADD got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordState {
    /// Written before the first delegate ran; results may be missing. DEL treats every attachment as possibly there.
    Adding,
    /// The ADD finished; every attachment has its result.
    Added,
    /// The ADD failed and its rollback did not finish; the runtime's DEL completes it.
    Failed,
}

/// One attachment as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedAttachment {
    pub index: usize,
    /// The network's display name (`namespace/name` for a NAD, the config's name otherwise).
    pub network: String,
    pub ifname: String,
    pub is_default: bool,
    /// The delegate config (a conflist) exactly as run.
    pub delegate: Value,
    /// Capability arguments offered to the delegate's plugins (each got only those it declared).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub capability_args: Map<String, Value>,
    /// Extra `args.cni` merged into each plugin's config.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub cni_args: Map<String, Value>,
    /// `CNI_ARGS` passed to the delegate.
    #[serde(default)]
    pub env_args: String,
    /// The final ADD result, in the delegate's version; `None` until the attachment succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Whether this attachment carries the pod's default route (for network-status).
    #[serde(default)]
    pub default_route_requested: bool,
    /// Gateways the selection's `default-route` asked for (R33).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Vec<std::net::IpAddr>>,
    /// The device the attachment was given (device networks), with its device-info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<plexus_api::devices::AssignedDevice>,
    /// Hot-plug's intent: this attachment is being added or removed in a running sandbox (`crate::ops::change`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// The selection's `ipam-claim-reference` (the IPAMClaim's name, in the pod's namespace). What the delegates get
    /// of it is in `cni_args` and `capability_args`, so DEL passes it on as ADD did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_claim_reference: Option<String>,
}

/// What a hot-plug change was doing to an attachment when its intent was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Pending {
    Add,
    Remove,
}

impl RecordedAttachment {
    /// A bare attachment of a delegate network with no sandbox behind it (for STATUS and GC requests).
    pub fn for_network(network: &str, delegate: Value) -> Self {
        Self {
            index: 0,
            network: network.to_owned(),
            ifname: String::new(),
            is_default: false,
            delegate,
            capability_args: Map::new(),
            cni_args: Map::new(),
            env_args: String::new(),
            result: None,
            default_route_requested: false,
            default_route: None,
            device: None,
            pending: None,
            ipam_claim_reference: None,
        }
    }
}

/// A plan as stored on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub format: u32,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub state: RecordState,
    /// The version the runtime spoke at ADD.
    pub cni_version: String,
    /// Where the delegate binaries were found at ADD (binDir, then CNI_PATH): DEL looks there too, so it works
    /// with an empty config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<PathBuf>,
    /// Pod identity when known (Kubernetes mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    pub attachments: Vec<RecordedAttachment>,
    /// Kubernetes mode: the delegates' `CNI_ARGS` before each attachment's own pairs (hot-plug gives them to the
    /// attachments it adds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub env_args: String,
    /// Kubernetes mode: how many leading attachments do not come from the networks annotation (the default network
    /// and `defaultNetworks`); hot-plug never touches them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<usize>,
    /// Hot-plug changed the attachments and the pod's network-status does not say so yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub status_stale: bool,
}

/// The pod a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
}

/// The records of one Plexus network (the stdin config's `name`) on one node.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
    network: String,
}

/// Separates the network name from the sandbox in a record's file name; no network name or container id holds it.
const NETWORK_SEPARATOR: char = '~';

/// A record's file name (lock files and temporary files start with a dot).
fn is_record_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json")
}

/// A held lock on one sandbox's records. Released on drop.
pub struct SandboxLock {
    _lock: Flock<File>,
    path: PathBuf,
}

/// What reading a record found.
#[derive(Debug)]
// One at a time, on the request's stack: boxing the record would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Loaded {
    Found(Record),
    Missing,
    /// The file exists but can't be used; the text says why.
    Corrupt(String),
}

impl RecordStore {
    /// The records of network `network` (a valid CNI network name, or "" for records without one) in `dir`.
    pub fn new(dir: impl Into<PathBuf>, network: &str) -> Self {
        Self {
            dir: dir.into(),
            network: network.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    /// Creates `cniDir` with mode 0700. An existing one must be a directory (not a symbolic link) owned by the user
    /// Plexus runs as: one that grants anything to group or others is then set to 0700; one that belongs to someone
    /// else is refused (with what to do), since its owner could swap the records Plexus trusts at DEL.
    fn ensure_dir(&self) -> Result<(), PlexusError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| {
                record_err(
                    &self.dir,
                    format!("cannot create the record directory: {e}"),
                )
            })?;
        let meta = fs::symlink_metadata(&self.dir)
            .map_err(|e| record_err(&self.dir, format!("cannot read the record directory: {e}")))?;
        if !meta.is_dir() {
            return Err(record_err(
                &self.dir,
                "the record directory is a symbolic link or not a directory: it is not used; point cniDir at a \
                 directory"
                    .into(),
            ));
        }
        let mode = meta.mode() & 0o777;
        let ours = meta.uid() == nix::unistd::geteuid().as_raw();
        if mode & 0o077 != 0 && ours {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
                record_err(
                    &self.dir,
                    format!("cannot set the record directory to mode 0700: {e}"),
                )
            })?;
            tracing::info!(dir = %self.dir.display(), was = format!("{mode:04o}"), "record directory set to mode 0700");
        } else if !ours {
            return Err(record_err(
                &self.dir,
                format!(
                    "the record directory has mode {mode:04o} and belongs to uid {}, not to Plexus's uid {}: records \
                     hold delegate configs that DEL runs, so only Plexus's user may write or read them, and it is not \
                     used; make it 0700 and Plexus's (chown {} {}; chmod 700 {}) or point cniDir at another directory",
                    meta.uid(),
                    nix::unistd::geteuid(),
                    nix::unistd::geteuid(),
                    self.dir.display(),
                    self.dir.display()
                ),
            ));
        }
        Ok(())
    }

    fn key(&self, container_id: &str, ifname: &str) -> String {
        // Every part is a validated CNI identifier: no '/', so the key is a plain file name.
        if self.network.is_empty() {
            format!("{container_id}-{ifname}")
        } else {
            format!("{}{NETWORK_SEPARATOR}{container_id}-{ifname}", self.network)
        }
    }

    pub fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", self.key(container_id, ifname)))
    }

    fn lock_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(format!("{}.lock", self.key(container_id, ifname)))
    }

    /// The store that holds this sandbox's record, for DEL and CHECK. Its own when the record is there. Otherwise a
    /// record written before records were keyed by network is moved to this network's name (migration); and a
    /// store without a network name (DEL with an empty config) takes the one network that has a record of the
    /// sandbox.
    pub fn locate(&self, container_id: &str, ifname: &str) -> RecordStore {
        if self.path(container_id, ifname).exists() {
            return self.clone();
        }
        let unnamed = RecordStore::new(&self.dir, "");
        if !self.network.is_empty() {
            let legacy = unnamed.path(container_id, ifname);
            if legacy.exists() {
                match fs::rename(&legacy, self.path(container_id, ifname)) {
                    Ok(()) => {
                        let _ = fs::remove_file(unnamed.lock_path(container_id, ifname));
                        tracing::info!(from = %legacy.display(), network = %self.network, "record moved to its network's name");
                    }
                    Err(e) => {
                        tracing::warn!(record = %legacy.display(), error = %e, "cannot move the record to its network's name; using it where it is");
                        return unnamed;
                    }
                }
            }
            return self.clone();
        }
        let suffix = format!("{NETWORK_SEPARATOR}{container_id}-{ifname}.json");
        let owners: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(&suffix)
                    .filter(|n| !n.starts_with('.'))
                    .map(str::to_owned)
            })
            .collect();
        match owners.as_slice() {
            [only] => RecordStore::new(&self.dir, only),
            _ => self.clone(),
        }
    }

    /// Takes the sandbox's exclusive lock, waiting for another Plexus process that holds it.
    pub fn lock(&self, container_id: &str, ifname: &str) -> Result<SandboxLock, PlexusError> {
        let _phase = tracing::debug_span!("record_lock").entered();
        self.ensure_dir()?;
        let path = self.lock_path(container_id, ifname);
        loop {
            let file = crate::files::no_follow()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| record_err(&path, format!("cannot open the lock file: {e}")))?;
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| record_err(&path, format!("cannot lock: {e}")))?;
            // The holder before us may have removed the lock file (end of DEL): then our lock is on an orphaned
            // inode and another process could lock a new file at the same path. Start again in that case.
            let same = match (lock.metadata(), fs::metadata(&path)) {
                (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
                _ => false,
            };
            if same {
                return Ok(SandboxLock { _lock: lock, path });
            }
        }
    }

    pub fn load(&self, container_id: &str, ifname: &str) -> Loaded {
        let path = self.path(container_id, ifname);
        let text = match crate::files::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => return Loaded::Corrupt(format!("cannot read {}: {e}", path.display())),
        };
        match serde_json::from_slice::<Record>(&text) {
            Ok(r)
                if r.format == RECORD_FORMAT
                    && r.container_id == container_id
                    && r.ifname == ifname =>
            {
                Loaded::Found(r)
            }
            Ok(r) => Loaded::Corrupt(format!(
                "{} holds format {} for {}/{}, expected format {RECORD_FORMAT} for {container_id}/{ifname}",
                path.display(),
                r.format,
                r.container_id,
                r.ifname
            )),
            Err(e) => Loaded::Corrupt(format!("{} is not a valid record: {e}", path.display())),
        }
    }

    /// Writes the record atomically (temp file, rename): a reader sees the old record or the new one, never a mix,
    /// and a process killed at any point (the plugin, the node daemon) leaves one or the other. What an ADD writes
    /// before its first delegate runs, when it completes, and after a failed rollback.
    ///
    /// Not fsynced, like libcni's own result cache and host-local's leases, whose loss this record would have to
    /// outlive: what a power loss leaves of a sandbox is gone with its network namespace but for state on disk
    /// that is no more durable than the record. After one, DEL finds the record, or none, or an unreadable one, and
    /// in the last two cases deletes what the pod and its NADs or the stdin config give. An fsync (and the
    /// directory's) would put a flush of the node's disk, slow under image pulls, on every pod's start: the three
    /// of an ADD took about 1 ms here on an idle disk.
    pub fn save(&self, record: &Record) -> Result<(), PlexusError> {
        let _phase = tracing::debug_span!("record_write", state = ?record.state).entered();
        self.ensure_dir()?;
        let path = self.path(&record.container_id, &record.ifname);
        let body = serde_json::to_vec_pretty(record).expect("a record always serialises");
        let (mut f, tmp) = crate::files::create_temp(
            &self.dir,
            &self.key(&record.container_id, &record.ifname),
            0o600,
        )
        .map_err(|e| record_err(&path, format!("cannot create its temporary file: {e}")))?;
        f.write_all(&body)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                record_err(&path, format!("cannot write: {e}"))
            })
    }

    /// Removes the record (and, while still holding it, the lock file). Not fsynced either: every delegate's DEL has
    /// run by then, so a power loss that brings the record back leaves only a record of attachments already
    /// deleted; deleting them again (the next DEL or GC of the sandbox) is a no-op for the delegates (CNI DEL is
    /// idempotent), and it removes the record.
    pub fn remove(
        &self,
        lock: SandboxLock,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), PlexusError> {
        let _phase = tracing::debug_span!("record_remove").entered();
        let path = self.path(container_id, ifname);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(record_err(&path, format!("cannot remove: {e}"))),
        }
        let _ = fs::remove_file(&lock.path);
        drop(lock);
        Ok(())
    }

    /// How many records `dir` holds, of every network (one for each sandbox and network), unread: the node daemon's
    /// `plexus_daemon_records` gauge.
    pub fn count_all(dir: &Path) -> usize {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| is_record_name(&e.file_name().to_string_lossy()))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Every record in `dir`, of any network, each with the store it is in (hot-plug: the node daemon finds a pod's
    /// sandbox by its UID). Unreadable ones are left out.
    pub fn list_all(dir: &Path) -> Vec<(RecordStore, Record)> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut networks: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if !is_record_name(&name) {
                    return None;
                }
                Some(match name.split_once(NETWORK_SEPARATOR) {
                    Some((network, _)) => network.to_owned(),
                    None => String::new(),
                })
            })
            .collect();
        networks.sort();
        networks.dedup();
        networks
            .into_iter()
            .flat_map(|network| {
                let store = RecordStore::new(dir, &network);
                let (records, _) = store.list();
                records.into_iter().map(move |r| (store.clone(), r))
            })
            .collect()
    }

    /// Every record of this network on the node (for GC): never another network's. Unreadable ones are returned as
    /// errors with their file names.
    pub fn list(&self) -> (Vec<Record>, Vec<String>) {
        let mut records = Vec::new();
        let mut bad = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (records, bad);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = match name.split_once(NETWORK_SEPARATOR) {
                Some((network, _)) => network == self.network,
                None => self.network.is_empty(),
            };
            if !ours || !is_record_name(&name) {
                continue;
            }
            match crate::files::read(&entry.path()).map(|t| serde_json::from_slice::<Record>(&t)) {
                Ok(Ok(r)) => records.push(r),
                Ok(Err(e)) => bad.push(format!("{name}: {e}")),
                Err(e) => bad.push(format!("{name}: {e}")),
            }
        }
        records.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        (records, bad)
    }
}

fn record_err(path: &Path, msg: String) -> PlexusError {
    PlexusError::Record {
        path: path.display().to_string(),
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(id: &str) -> Record {
        Record {
            format: RECORD_FORMAT,
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            state: RecordState::Adding,
            cni_version: "1.0.0".into(),
            path: vec!["/opt/cni/bin".into()],
            pod: None,
            attachments: vec![RecordedAttachment {
                index: 0,
                network: "n".into(),
                ifname: "eth0".into(),
                is_default: true,
                delegate: serde_json::json!({"name":"n","plugins":[{"type":"bridge"}]}),
                capability_args: Map::new(),
                cni_args: Map::new(),
                env_args: String::new(),
                result: None,
                default_route_requested: false,
                default_route: None,
                device: None,
                pending: None,
                ipam_claim_reference: None,
            }],
            env_args: String::new(),
            fixed: None,
            status_stale: false,
        }
    }

    #[test]
    fn the_ipam_claim_is_kept_under_its_own_key() {
        let mut r = record("c1");
        let plain = serde_json::to_value(&r).unwrap();
        assert!(plain["attachments"][0].get("ipamClaimReference").is_none());
        r.attachments[0].ipam_claim_reference = Some("vm-1.blue".into());
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(r#""ipamClaimReference":"vm-1.blue""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path().join("records"), "net");
        let lock = store.lock("c1", "eth0").unwrap();
        let r = record("c1");
        store.save(&r).unwrap();
        let file_mode = || {
            fs::metadata(store.path("c1", "eth0"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(file_mode(), 0o600);
        let dir_mode = fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        match store.load("c1", "eth0") {
            Loaded::Found(got) => assert_eq!(got, r),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.list().0.len(), 1);
        // The completion replaces the intent in place, with the same mode and no temp file left.
        let done = Record {
            state: RecordState::Added,
            ..r.clone()
        };
        store.save(&done).unwrap();
        match store.load("c1", "eth0") {
            Loaded::Found(got) => assert_eq!(got, done),
            other => panic!("{other:?}"),
        }
        assert_eq!(file_mode(), 0o600);
        assert_eq!(store.list().0.len(), 1);
        store.remove(lock, "c1", "eth0").unwrap();
        assert!(matches!(store.load("c1", "eth0"), Loaded::Missing));
        assert_eq!(
            fs::read_dir(store.dir()).unwrap().count(),
            0,
            "no record, lock or temp file left"
        );
    }

    #[test]
    fn networks_sharing_a_dir_see_only_their_own_records_and_old_records_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let a = RecordStore::new(dir.path(), "net-a");
        let b = RecordStore::new(dir.path(), "net-b");
        let unnamed = RecordStore::new(dir.path(), "");
        for (store, id) in [(&a, "c1"), (&b, "c2"), (&unnamed, "c3")] {
            let lock = store.lock(id, "eth0").unwrap();
            store.save(&record(id)).unwrap();
            drop(lock);
        }
        let ids = |s: &RecordStore| -> Vec<String> {
            s.list().0.into_iter().map(|r| r.container_id).collect()
        };
        assert_eq!(ids(&a), ["c1"]);
        assert_eq!(ids(&b), ["c2"]);
        assert_eq!(
            RecordStore::count_all(dir.path()),
            3,
            "every network's records, not their locks"
        );
        assert_eq!(RecordStore::count_all(&dir.path().join("absent")), 0);
        assert_eq!(
            ids(&unnamed),
            ["c3"],
            "records without a network stay apart"
        );
        assert!(matches!(a.load("c2", "eth0"), Loaded::Missing));

        // An old record (no network in its name) moves to the network that DELs or CHECKs it.
        let found = a.locate("c3", "eth0");
        assert_eq!(found.network(), "net-a");
        assert!(matches!(a.load("c3", "eth0"), Loaded::Found(_)));
        assert!(!unnamed.path("c3", "eth0").exists());
        // A DEL with an empty config finds the one network that has the sandbox.
        assert_eq!(unnamed.locate("c2", "eth0").network(), "net-b");
        assert_eq!(unnamed.locate("c9", "eth0").network(), "");
    }

    #[test]
    fn an_existing_record_dir_open_to_others_is_made_0700_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let ours = dir.path().join("ours");
        fs::create_dir(&ours).unwrap();
        fs::set_permissions(&ours, fs::Permissions::from_mode(0o755)).unwrap();
        drop(RecordStore::new(&ours, "net").lock("c1", "eth0").unwrap());
        assert_eq!(mode(&ours), 0o700, "our own directory is tightened");

        let theirs = dir.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(&theirs, Some(nobody), None).unwrap();
        let store = RecordStore::new(&theirs, "net");
        let Err(e) = store.lock("c1", "eth0") else {
            panic!("another user's 0755 record directory was used")
        };
        assert!(
            e.to_string().contains("0755") && e.to_string().contains("chmod 700"),
            "{e}"
        );
        assert_eq!(fs::read_dir(&theirs).unwrap().count(), 0, "nothing written");
        assert_eq!(mode(&theirs), 0o755, "left as it was");

        // Another user's directory is refused even at 0700: its owner could swap the records DEL runs.
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).unwrap();
        let Err(e) = store.lock("c1", "eth0") else {
            panic!("another user's 0700 record directory was used")
        };
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
        assert_eq!(fs::read_dir(&theirs).unwrap().count(), 0, "nothing written");
    }

    #[test]
    fn symbolic_links_in_the_record_directory_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("records");
        let store = RecordStore::new(&records, "net");
        drop(store.lock("c0", "eth0").unwrap());
        // A record that is a link to a file elsewhere is not read; a lock that is a link is not opened.
        let elsewhere = dir.path().join("elsewhere.json");
        fs::write(&elsewhere, serde_json::to_vec(&record("c1")).unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.path("c1", "eth0")).unwrap();
        assert!(matches!(store.load("c1", "eth0"), Loaded::Corrupt(_)));
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, store.lock_path("c2", "eth0")).unwrap();
        assert!(store.lock("c2", "eth0").is_err());
        // The record itself is replaced by a rename, which never writes through a link at its path.
        std::os::unix::fs::symlink(&victim, store.path("c3", "eth0")).unwrap();
        store.save(&record("c3")).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(
            fs::symlink_metadata(store.path("c3", "eth0"))
                .unwrap()
                .is_file()
        );
        // A record directory that is a link is refused.
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&records, &linked).unwrap();
        let Err(e) = RecordStore::new(&linked, "net").lock("c4", "eth0") else {
            panic!("a linked record directory was used")
        };
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn corrupt_and_mismatched_records_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path(), "net");
        fs::write(store.path("c1", "eth0"), b"{ half a rec").unwrap();
        assert!(matches!(store.load("c1", "eth0"), Loaded::Corrupt(_)));
        fs::write(
            store.path("c2", "eth0"),
            serde_json::to_vec(&record("other")).unwrap(),
        )
        .unwrap();
        assert!(matches!(store.load("c2", "eth0"), Loaded::Corrupt(_)));
        let (_, bad) = store.list();
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn the_lock_excludes_other_holders() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path(), "net");
        let held = store.lock("c1", "eth0").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = store.clone();
        let t = std::thread::spawn(move || {
            let _l = other.lock("c1", "eth0").unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "second holder got in"
        );
        store.remove(held, "c1", "eth0").unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("second holder never got the lock");
        t.join().unwrap();
    }
}
