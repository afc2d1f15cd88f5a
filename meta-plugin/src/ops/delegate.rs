//! One attachment's delegate: its plugin list run for ADD (prevResult chained, rolled back on failure), DEL (in
//! reverse, past errors) and CHECK, each plugin exec'd with the sandbox's environment.

use std::time::Duration;

use plexus_api::cni::config::RequestExtras;
use plexus_api::cni::result::CniResult;
use plexus_api::cni::{NetworkConfigList, version};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::{Context, Sandbox};
use crate::error::{DelegateFailure, PlexusError};
use crate::invoke::{self, CniCommand, Invocation, InvokeError};
use crate::record::RecordedAttachment;

/// One attachment ready to run: the recorded form and its parsed delegate.
pub(super) struct Runnable<'r> {
    pub(super) rec: &'r RecordedAttachment,
    pub(super) list: NetworkConfigList,
    pub(super) version: &'static str,
}

impl<'r> Runnable<'r> {
    pub(super) fn new(rec: &'r RecordedAttachment) -> Result<Self, PlexusError> {
        let list = NetworkConfigList::from_value(rec.delegate.clone()).map_err(|source| {
            PlexusError::InvalidDelegate {
                network: rec.network.clone(),
                source,
            }
        })?;
        let version = list
            .negotiated_version()
            .map_err(|source| PlexusError::InvalidDelegate {
                network: rec.network.clone(),
                source,
            })?;
        Ok(Self { rec, list, version })
    }

    /// Runs one plugin of this attachment.
    pub(super) fn call(
        &self,
        ctx: &Context,
        sandbox: &Sandbox,
        command: CniCommand,
        plugin: usize,
        prev_result: Option<&Value>,
    ) -> Result<Vec<u8>, PlexusError> {
        let extras = RequestExtras {
            capability_args: Some(&self.rec.capability_args),
            cni_args: Some(&self.rec.cni_args),
            prev_result,
        };
        let conf = self.list.request_config(plugin, self.version, &extras);
        let stdin = serde_json::to_vec(&conf).expect("a request config always serialises");
        let plugin_type = self.list.plugins[plugin].plugin_type();
        let _phase = tracing::debug_span!("delegate_exec", network = %self.rec.network, delegate = plugin_type, command = command.as_str()).entered();
        debug!(network = %self.rec.network, ifname = %self.rec.ifname, delegate = plugin_type, command = command.as_str(), "calling delegate");
        let timeout = ctx.delegate_timeout(command);
        let out = invoke::invoke(&Invocation {
            command,
            plugin: plugin_type,
            container_id: &sandbox.container_id,
            netns: &sandbox.netns,
            ifname: &self.rec.ifname,
            cni_args: &self.rec.env_args,
            path: &ctx.path,
            stdin: &stdin,
            timeout,
        })
        .map_err(|e| match e {
            InvokeError::Timeout(_) if command == CniCommand::Add => ctx
                .past_deadline(&self.rec.network)
                .unwrap_or_else(|| self.delegate_error(command, plugin_type, e, timeout)),
            e => self.delegate_error(command, plugin_type, e, timeout),
        })?;
        if !out.stderr.iter().all(u8::is_ascii_whitespace) {
            // C54: what a delegate says on stderr reaches the log at the default level, not only at debug.
            info!(network = %self.rec.network, delegate = plugin_type, command = command.as_str(), stderr = %String::from_utf8_lossy(&out.stderr).trim(), "delegate stderr");
        }
        Ok(out.stdout)
    }

    pub(super) fn delegate_error(
        &self,
        command: CniCommand,
        delegate: &str,
        e: InvokeError,
        timeout: Duration,
    ) -> PlexusError {
        let (network, ifname, delegate) = (
            self.rec.network.clone(),
            self.rec.ifname.clone(),
            delegate.to_owned(),
        );
        let command = command.as_str();
        match e {
            InvokeError::Timeout(_) => PlexusError::DelegateTimeout {
                network,
                ifname,
                delegate,
                command,
                seconds: timeout.as_secs_f64(),
            },
            InvokeError::Plugin(err) => {
                warn!(network = %network, delegate = %delegate, command, code = err.code, msg = %err.msg, details = %err.details, "delegate failed");
                PlexusError::Delegate(Box::new(DelegateFailure {
                    network,
                    ifname,
                    delegate,
                    command,
                    code: err.code,
                    msg: err.msg,
                    details: err.details,
                }))
            }
            other => PlexusError::Delegate(Box::new(DelegateFailure {
                network,
                ifname,
                delegate,
                command,
                code: match other {
                    InvokeError::UnsafeName(_) => plexus_api::cni::ErrorCode::InvalidConfig.code(),
                    _ => plexus_api::cni::ErrorCode::DelegateFailed.code(),
                },
                msg: other.to_string(),
                details: String::new(),
            })),
        }
    }

    /// ADD through the whole list with prevResult chaining (C47). On failure every plugin of the list is deleted
    /// in reverse (C57, and the 0.4.0 rule that plugins which never got the ADD get the DEL too).
    pub(super) fn add(&self, ctx: &Context, sandbox: &Sandbox) -> Result<Value, PlexusError> {
        let mut prev: Option<Value> = None;
        for i in 0..self.list.plugins.len() {
            let step = self
                .call(ctx, sandbox, CniCommand::Add, i, prev.as_ref())
                .and_then(|stdout| {
                    if stdout.iter().all(u8::is_ascii_whitespace) {
                        // A plugin that prints nothing leaves the previous result as it was.
                        return prev
                            .clone()
                            .ok_or_else(|| self.bad_result(i, "printed no result"));
                    }
                    let parsed = CniResult::from_json(&stdout, self.version)
                        .map_err(|e| self.bad_result(i, &e.to_string()))?;
                    parsed
                        .to_value(self.version)
                        .map_err(|e| self.bad_result(i, &e.to_string()))
                });
            match step {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    if let Err(rollback) = self.del(ctx, sandbox, prev.as_ref()) {
                        warn!(network = %self.rec.network, error = %rollback, "rollback of a failed attachment left errors");
                    }
                    return Err(e);
                }
            }
        }
        prev.ok_or_else(|| self.bad_result(0, "no plugins"))
    }

    pub(super) fn bad_result(&self, plugin: usize, why: &str) -> PlexusError {
        PlexusError::Delegate(Box::new(DelegateFailure {
            network: self.rec.network.clone(),
            ifname: self.rec.ifname.clone(),
            delegate: self.list.plugins[plugin].plugin_type().to_owned(),
            command: "ADD",
            code: plexus_api::cni::ErrorCode::Decoding.code(),
            msg: format!("its result is invalid: {why}"),
            details: String::new(),
        }))
    }

    /// DEL through the list in reverse (C25), each plugin given the final ADD result where the version carries
    /// one. Keeps going past a failing plugin so that one broken delegate does not leak the others' resources.
    pub(super) fn del(
        &self,
        ctx: &Context,
        sandbox: &Sandbox,
        result: Option<&Value>,
    ) -> Result<(), PlexusError> {
        let prev = result.filter(|_| {
            version::Version::parse(self.version).is_some_and(|v| v.sends_prev_result_on_del())
        });
        let errors: Vec<PlexusError> = (0..self.list.plugins.len())
            .rev()
            .filter_map(|i| self.call(ctx, sandbox, CniCommand::Del, i, prev).err())
            .collect();
        if let Some(device) = &self.rec.device
            && let Err(e) = crate::devices::remove_info_file(device)
        {
            warn!(network = %self.rec.network, error = %e, "the attachment's device-info file could not be removed");
        }
        PlexusError::combine(&format!("DEL of network {:?}", self.rec.network), errors)
            .map_or(Ok(()), Err)
    }

    /// CHECK in order with the final ADD result, stopping at the first error (C27, C32).
    pub(super) fn check(&self, ctx: &Context, sandbox: &Sandbox) -> Result<(), PlexusError> {
        let checkable = version::Version::parse(self.version).is_some_and(|v| v.supports_check());
        if self.list.disable_check || !checkable {
            debug!(network = %self.rec.network, version = self.version, disable_check = self.list.disable_check, "CHECK skipped");
            return Ok(());
        }
        for i in 0..self.list.plugins.len() {
            self.call(ctx, sandbox, CniCommand::Check, i, self.rec.result.as_ref())?;
        }
        Ok(())
    }
}
