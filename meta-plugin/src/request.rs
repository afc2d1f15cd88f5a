//! One CNI request, from the environment and stdin to what is printed: config, logging, the panic net, and the
//! dispatch to each verb (`ops`), with the Kubernetes paths in `kubernetes`.

use plexus_api::cni::CniError;
use plexus_api::cni::result::VersionInfo;
use plexus_api::cni::version;
use serde_json::Value;
use tracing::{debug, info_span, warn};

use crate::config::Config;
use crate::env::CniEnv;
use crate::error::PlexusError;
use crate::invoke::CniCommand;
use crate::kubernetes;
use crate::logging;
use crate::ops::{self, Context};
use crate::source::{Connect, SourceProvider};

/// What a successful command prints on stdout (nothing for DEL, CHECK, STATUS and GC).
pub type Output = Option<String>;

/// Runs one CNI request: what to print on success, or the CNI error object (with the runtime's version when known).
/// A panic inside becomes a CNI error too ([`guard`]), so a runtime (or the thick-mode daemon, per request) always
/// gets an answer.
pub fn run(env_lookup: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Output, CniError> {
    guard(|| run_with(&Connect, Logging::PerRequest, env_lookup, stdin))
}

/// The spans that mark a request's phases, for a caller that times them (the node daemon's metrics): `lookup`
/// (pod and NADs), `delegate` (one plugin call, with fields `plugin` and `command`), `status_write` (the
/// network-status PATCH and, in thin mode, the events), and the record's `record_lock` (waiting for the sandbox's
/// lock), `record_write` (one atomic write) and `record_remove`. Every request runs inside the span
/// `cni`, whose field `command` names the CNI command.
pub const PHASE_SPANS: [&str; 6] = [
    "lookup",
    "delegate",
    "status_write",
    "record_lock",
    "record_write",
    "record_remove",
];

/// Who sets up logging for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logging {
    /// The request installs the subscriber its config asks for (the `plexus` binary: one request per process).
    PerRequest,
    /// The caller already did (the thick-mode daemon, once for all requests).
    Installed,
}

/// Installs the process's panic hook: a panic is logged through `tracing` with where it happened (and printed on
/// stderr as before), never on stdout; [`guard`] then turns it into the request's CNI error. The node daemon of thick
/// mode installs it once and guards each request.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(location = ?info.location().map(|l| format!("{}:{}", l.file(), l.line())), panic = %info, "panic");
        default(info);
    }));
}

/// Runs `request`, turning a panic into a CNI error object (code 999) that says where it happened. Nothing reaches a
/// panic from input on purpose; this is the net under bugs, so that the runtime never sees a silent crash.
pub fn guard<T>(request: impl FnOnce() -> Result<T, CniError>) -> Result<T, CniError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(request)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(panic = %what, "request panicked");
        Err(CniError::new(
            plexus_api::cni::ErrorCode::Internal,
            format!("Plexus hit a bug and stopped this request: {what}"),
        ))
    })
}

/// One CNI request with the source and the logging passed in: what [`run`] does for the `plexus` binary, and what
/// a node daemon calls (inside [`guard`]) for each request it receives.
pub fn run_with<P: SourceProvider>(
    provider: &P,
    logging: Logging,
    env_lookup: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Output, CniError> {
    run_until(provider, logging, env_lookup, stdin, None)
}

/// [`run_with`] for a caller that stops waiting at `deadline` (the node daemon: the shim's `deadlineMs`): an ADD
/// starts no attachment after it, and rolls back what it attached ([`ops::Context::deadline`]).
pub fn run_until<P: SourceProvider>(
    provider: &P,
    logging: Logging,
    env_lookup: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    deadline: Option<std::time::Instant>,
) -> Result<Output, CniError> {
    let env = CniEnv::from_lookup(env_lookup).map_err(|e| e.to_cni())?;
    if env.command == CniCommand::Version {
        return version_reply(stdin).map(Some).map_err(|e| e.to_cni());
    }
    let parse_started = std::time::Instant::now();
    let config = Config::load(stdin).map_err(|e| e.to_cni())?;
    let parsed_in = parse_started.elapsed();
    if logging == Logging::PerRequest {
        logging::init(&config.log);
    }
    let reply_version = config.result_version().to_owned();
    let span = info_span!(
        "cni",
        command = env.command.as_str(),
        container = %env.sandbox.container_id,
        ifname = %env.sandbox.ifname,
    );
    let _entered = span.enter();
    // The config was parsed before logging could start (the log settings are in it): its time is logged here.
    debug!(
        config_parse_us = parsed_in.as_micros() as u64,
        "config parsed"
    );
    if !config.ignored_keys.is_empty() {
        debug!(keys = ?config.ignored_keys, "config keys Plexus does not use were ignored");
    }
    dispatch(provider, &env, config, stdin, deadline).map_err(|e| {
        tracing::error!(error = %e, "request failed");
        e.to_cni().with_version(reply_version)
    })
}

fn dispatch<P: SourceProvider>(
    provider: &P,
    env: &CniEnv,
    config: Config,
    stdin: &[u8],
    deadline: Option<std::time::Instant>,
) -> Result<Output, PlexusError> {
    let ctx = Context {
        deadline,
        ..Context::new(config, &env.path)
    };
    match env.command {
        CniCommand::Add => {
            ops::wait_until_ready(&ctx)?;
            let result = kubernetes::add(provider, &ctx, &env.sandbox)?;
            Ok(Some(
                serde_json::to_string(&result).expect("results serialise"),
            ))
        }
        CniCommand::Del => {
            // DEL waits too (R56), but goes on when the file never comes: a DEL always runs to the end.
            if let Err(e) = ops::wait_until_ready(&ctx) {
                warn!(error = %e, "deleting anyway");
            }
            ops::del(&ctx, &env.sandbox, || {
                kubernetes::derive_for_del(provider, &ctx, &env.sandbox)
            })
            .map(|()| None)
        }
        CniCommand::Check => ops::check(&ctx, &env.sandbox).map(|()| None),
        CniCommand::Status => {
            let networks = kubernetes::status_networks(provider, &ctx.config)?;
            ops::status(&ctx, &networks).map(|()| None)
        }
        CniCommand::Gc => ops::gc(&ctx, &valid_attachments(stdin)?).map(|()| None),
        CniCommand::Version => version_reply(stdin).map(Some),
    }
}

/// VERSION's output (C36) as a CNI error on bad input: what `plexus-shim` answers itself, like `plexus` in both
/// modes, with no daemon asked.
pub fn version_output(stdin: &[u8]) -> Result<String, CniError> {
    version_reply(stdin).map_err(|e| e.to_cni())
}

/// VERSION (C36): echo the requested version with the list Plexus speaks.
fn version_reply(stdin: &[u8]) -> Result<String, PlexusError> {
    let requested = if stdin.iter().all(u8::is_ascii_whitespace) {
        version::CURRENT.to_owned()
    } else {
        let v: Value =
            serde_json::from_slice(stdin).map_err(|e| PlexusError::Decode(e.to_string()))?;
        v.get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or(version::CURRENT)
            .to_owned()
    };
    let info = VersionInfo {
        cni_version: requested,
        supported_versions: version::SUPPORTED.iter().map(|s| (*s).to_owned()).collect(),
    };
    Ok(serde_json::to_string(&info).expect("serialises"))
}

/// The GC request's `cni.dev/valid-attachments` (or the 1.1.0 tag's `cni.dev/attachments`).
fn valid_attachments(stdin: &[u8]) -> Result<Vec<(String, String)>, PlexusError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| PlexusError::Decode(e.to_string()))?;
    let list = v
        .get("cni.dev/valid-attachments")
        .or_else(|| v.get("cni.dev/attachments"));
    let Some(list) = list.filter(|l| !l.is_null()) else {
        return Ok(Vec::new());
    };
    let items = list.as_array().ok_or_else(|| {
        PlexusError::InvalidConfig("cni.dev/valid-attachments must be a list".into())
    })?;
    items
        .iter()
        .map(|a| {
            let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
            match (field("containerID"), field("ifname")) {
                (Some(c), Some(i)) => Ok((c, i)),
                _ => Err(PlexusError::InvalidConfig(format!(
                    "cni.dev/valid-attachments entry {a} needs string containerID and ifname"
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_command() {
        let out = run(
            |k| (k == "CNI_COMMAND").then(|| "VERSION".into()),
            br#"{"cniVersion":"0.4.0"}"#,
        )
        .unwrap()
        .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"].as_array().unwrap().len(),
            version::SUPPORTED.len()
        );
    }

    #[test]
    fn a_panic_becomes_a_cni_error() {
        let e = guard::<()>(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(e.code, 999);
        assert!(e.msg.contains("boom 7"), "{e}");
        let e = guard::<()>(|| std::panic::panic_any(5_u8)).unwrap_err();
        assert_eq!(e.code, 999);
        assert_eq!(guard(|| Ok::<_, CniError>(3)).unwrap(), 3);
    }

    #[test]
    fn gc_attachments() {
        let got =
            valid_attachments(br#"{"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}"#)
                .unwrap();
        assert_eq!(got, [("a".to_string(), "eth0".to_string())]);
        assert!(
            valid_attachments(br#"{"cni.dev/valid-attachments":[{"containerID":1}]}"#).is_err()
        );
        assert!(valid_attachments(b"{}").unwrap().is_empty());
    }
}
