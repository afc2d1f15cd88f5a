//! GC: DEL every recorded sandbox the runtime no longer lists, then GC of each known delegate network with what stays.

use plexus_api::cni::NetworkConfigList;
use plexus_api::cni::config::RequestExtras;
use plexus_api::cni::version;
use serde_json::Value;
use tracing::{info, warn};

use super::del::{del, static_fallback};
use super::delegate::Runnable;
use super::{Context, Sandbox, require_version};
use crate::error::PlexusError;
use crate::invoke::{self, CniCommand, Invocation};
use crate::record::RecordedAttachment;

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
