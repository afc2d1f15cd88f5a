//! Multus thick's HTTP API, served on `<multusApiSocketDir>/multus.sock` when the daemon's file sets that key, so that
//! what speaks to multus-daemon (multus-shim, multus-dynamic-networks-controller) can drive Plexus. One HTTP/1.1
//! request per connection, read and run on the request worker that accepted it (`crate::server`: the same callers,
//! the same bound, the same order per sandbox as `plexus.sock`), answered with `Connection: close`.
//!
//! - `POST /cni`: a CNI request as multus-shim sends it (`env`: its environment; `config`: its stdin, bytes as
//!   base64) runs exactly as a request of the `plexus` shim ([`crate::server::Runner::cni_request`]): the daemon's
//!   file decides every directory, binary and delegate. 200 with `{"Result": …}` (the result as CNI 1.0.0, as
//!   multus-daemon answers) for ADD, 200 with an empty body for the other commands, 400 with the CNI error object.
//! - `POST /delegate`: what multus-dynamic-networks-controller sends to add (`ADD`) or remove (`DEL`) one interface
//!   of a running pod once the pod's networks annotation changed. Plexus does that change itself from the same
//!   annotation (`plexus_cni::hotplug::sync`, which its own hot-plug worker runs), so a delegate request is that
//!   sync for the pod's sandbox, answered once the sandbox has (ADD) or no longer has (DEL) the interface
//!   `CNI_IFNAME`. The request's `config` and `interfaceAttributes` are read but not used: what is attached is the
//!   NAD the annotation selects, as the daemon's cache has it, with the annotation's IPs, MAC and `cni-args`; a
//!   caller never makes the daemon run a config of its own. See docs/configuration.md, "Multus's API".
//! - `GET /healthz` (or `POST`): 200 while the socket is served.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use base64::Engine;
use plexus_api::cni::result::CniResult;
use plexus_api::cni::{CniError, ErrorCode};
use plexus_cni::hotplug;
use plexus_cni::plan::PodArgs;
use plexus_cni::record::{Record, RecordState, RecordStore};
use plexus_cni::shim::{MAX_HEADER_BYTES, MAX_STDIN_BYTES, UntilDeadline};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::server::{Protocol, REQUEST_READ_DEADLINE, Refusal, Runner, command_label, node_netns};

/// How `multus.sock` is served (`crate::server::serve`).
pub const MULTUS: Protocol = Protocol {
    handle,
    refusal: |reader, error, why| match (read_http(reader), why) {
        // The daemon's own wake-up connections send nothing and get nothing.
        (Err(_), Refusal::Stopping) => None,
        (_, Refusal::Stopping) => Some(error_response(503, error)),
        (_, Refusal::Caller) => Some(error_response(403, error)),
    },
};

/// The most a request's head (request line and headers) may be.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most a request's body may be: a stdin config of the most the shim's socket takes, as base64, and the
/// environment.
pub const MAX_BODY_BYTES: usize = MAX_STDIN_BYTES / 3 * 4 + 4 + MAX_HEADER_BYTES;
/// How long a request of Multus's API may run: its callers set no deadline of their own, so it gets the one the
/// `plexus` shim gives by default (`daemonTimeoutSeconds`).
pub const REQUEST_DEADLINE: Duration =
    Duration::from_secs(plexus_cni::shim::DEFAULT_TIMEOUT_SECONDS as u64);
/// How long a delegate request waits for the daemon's pod cache to show the annotation it acts on (the caller saw
/// the change in its own watch; the daemon's may be a moment behind).
pub const DELEGATE_SETTLE: Duration = Duration::from_secs(10);
/// How often a delegate request looks again while it waits.
const DELEGATE_POLL: Duration = Duration::from_millis(100);

/// One request as read from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// The request target without its query.
    pub path: String,
    pub body: Vec<u8>,
}

/// Why a request could not be read; each has the status it is answered with.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
    #[error("the request's head is more than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("the request is not HTTP/1.x: {0}")]
    Parse(String),
    #[error("the request's body has no Content-Length (a chunked body is not accepted)")]
    NoLength,
    #[error("the request's body is {0} bytes, more than {MAX_BODY_BYTES}")]
    BodyTooLarge(u64),
}

impl HttpError {
    fn status(&self) -> u16 {
        match self {
            Self::Io(_) | Self::Parse(_) => 400,
            Self::HeadTooLarge => 431,
            Self::NoLength => 411,
            Self::BodyTooLarge(_) => 413,
        }
    }
}

/// Reads one HTTP/1.x request: its head (at most [`MAX_HEAD_BYTES`]) and a body of `Content-Length` bytes (at most
/// [`MAX_BODY_BYTES`]).
pub fn read_http(stream: &mut impl Read) -> Result<HttpRequest, HttpError> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpError::HeadTooLarge);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(HttpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEAD_BYTES {
        return Err(HttpError::HeadTooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&buf[..head_end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::Parse("an incomplete head".into())),
        Err(e) => return Err(HttpError::Parse(e.to_string())),
    }
    let mut length: Option<u64> = None;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::NoLength);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| HttpError::Parse("a Content-Length that is not a number".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Parse("two different Content-Lengths".into()));
            }
            length = Some(n);
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY_BYTES as u64 {
        return Err(HttpError::BodyTooLarge(length));
    }
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default();
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut body = buf.split_off(head_end);
    if body.len() as u64 > length {
        // Nothing may follow the body: one request per connection.
        body.truncate(length as usize);
    }
    let missing = length as usize - body.len();
    if missing > 0 {
        let start = body.len();
        body.resize(length as usize, 0);
        stream.read_exact(&mut body[start..])?;
    }
    Ok(HttpRequest { method, path, body })
}

/// A whole response, after which the connection closes.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A CNI error as multus-daemon answers one: the error object as JSON, with `status` (400 for a request that ran or
/// could not).
pub fn error_response(status: u16, error: &CniError) -> Vec<u8> {
    response(status, "application/json", error.to_json().as_bytes())
}

/// A request's body (multus's `api.Request`).
#[derive(Debug, Default, Deserialize)]
pub struct MultusRequest {
    /// The CNI environment variables (multus-shim sends its whole environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The stdin config: Go's `[]byte`, base64 in JSON (`null` when empty).
    #[serde(default)]
    pub config: Option<String>,
    /// `/delegate`'s selection details (`ips`, `mac`, `cni-args`): read, not used (see the module's doc).
    #[serde(default, rename = "interfaceAttributes")]
    pub interface_attributes: Option<Value>,
}

impl MultusRequest {
    /// Parses a body; the error is what the caller is told.
    pub fn parse(body: &[u8]) -> Result<(Self, Vec<u8>), CniError> {
        let request: Self = serde_json::from_slice(body).map_err(|e| {
            CniError::new(
                ErrorCode::Decoding,
                format!("the request is not a Multus API request: {e}"),
            )
        })?;
        let config = match request.config.as_deref() {
            None => Vec::new(),
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| {
                    CniError::new(
                        ErrorCode::Decoding,
                        format!("the request's config is not base64: {e}"),
                    )
                })?,
        };
        Ok((request, config))
    }
}

/// The body of a successful ADD: multus's `api.Response`, the result as CNI 1.0.0 under `Result`.
pub fn result_body(result: &CniResult) -> Result<Vec<u8>, CniError> {
    let value = result.to_value("1.0.0").map_err(|e| {
        CniError::new(
            ErrorCode::Internal,
            format!("the result can't be given as CNI 1.0.0: {e}"),
        )
    })?;
    Ok(json!({ "Result": value }).to_string().into_bytes())
}

/// The CNI commands `/cni` runs (multus-daemon's; it refuses VERSION too).
const CNI_COMMANDS: [&str; 5] = ["ADD", "DEL", "CHECK", "GC", "STATUS"];

/// Reads one request, runs it and answers it.
pub(crate) fn handle(mut stream: UnixStream, runner: &Runner<'_>) {
    let request = match read_http(&mut UntilDeadline {
        stream: &stream,
        deadline: Instant::now() + REQUEST_READ_DEADLINE,
    }) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "unreadable Multus API request");
            let status = e.status();
            let e = CniError::new(ErrorCode::Io, e.to_string());
            let _ = stream.write_all(&error_response(status, &e));
            return;
        }
    };
    let reply = match (request.method.as_str(), request.path.as_str()) {
        ("GET" | "POST", "/healthz") => response(200, "application/json", b""),
        ("POST", "/cni") => {
            return cni(stream, runner, &request.body);
        }
        ("POST", "/delegate") => delegate(runner, &request.body),
        (_, "/healthz" | "/cni" | "/delegate") => {
            response(405, "text/plain; charset=utf-8", b"Method not allowed\n")
        }
        _ => response(404, "text/plain; charset=utf-8", b""),
    };
    if let Err(e) = stream.write_all(&reply) {
        warn!(error = %e, "the caller left before the reply");
    }
}

/// `POST /cni`: one CNI request as the `plexus` shim's.
fn cni(mut stream: UnixStream, runner: &Runner<'_>, body: &[u8]) {
    let mut write = |reply: Vec<u8>| {
        if let Err(e) = stream.write_all(&reply) {
            warn!(error = %e, "the caller left before the reply");
        }
    };
    let (request, config) = match MultusRequest::parse(body) {
        Ok(r) => r,
        Err(e) => return write(error_response(400, &e)),
    };
    let command = request.env.get("CNI_COMMAND").cloned().unwrap_or_default();
    if !CNI_COMMANDS.contains(&command.as_str()) {
        let e = CniError::new(
            ErrorCode::InvalidEnvironment,
            format!(
                "CNI_COMMAND {:?} is not one Multus's API runs ({})",
                command.chars().take(32).collect::<String>(),
                CNI_COMMANDS.join(", ")
            ),
        );
        return write(error_response(400, &e));
    }
    runner.cni_request(
        &request.env,
        &config,
        Instant::now() + REQUEST_DEADLINE,
        |outcome| {
            let reply = match outcome {
                Ok(Some(output)) if command == "ADD" => {
                    match CniResult::from_json(output.as_bytes(), "1.0.0")
                        .map_err(|e| {
                            CniError::new(ErrorCode::Internal, format!("the ADD result: {e}"))
                        })
                        .and_then(|r| result_body(&r))
                    {
                        Ok(body) => response(200, "application/json", &body),
                        Err(e) => error_response(400, &e),
                    }
                }
                Ok(_) => response(200, "application/json", b""),
                Err(e) => error_response(400, e),
            };
            write(reply);
        },
    );
}

/// What a delegate request asks for, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegateRequest {
    pub add: bool,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub pod: PodArgs,
}

impl DelegateRequest {
    /// `CNI_COMMAND` (ADD or DEL), `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and the pod in `CNI_ARGS`
    /// (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`): what multus-dynamic-networks-controller sends.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, CniError> {
        let var = |k: &str| env.get(k).map(String::as_str).unwrap_or_default();
        let missing = |k: &str| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("a delegate request needs {k}"),
            )
        };
        let add = match var("CNI_COMMAND") {
            "ADD" => true,
            "DEL" => false,
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!(
                        "CNI_COMMAND {:?}: Plexus's /delegate adds (ADD) or removes (DEL) an interface",
                        other.chars().take(32).collect::<String>()
                    ),
                ));
            }
        };
        let nonempty = |k: &str| {
            Some(var(k).to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| missing(k))
        };
        let container_id = nonempty("CNI_CONTAINERID")?;
        if !plexus_cni::valid_container_id(&container_id) {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                "CNI_CONTAINERID is not a valid container id",
            ));
        }
        Ok(Self {
            add,
            container_id,
            netns: nonempty("CNI_NETNS")?,
            ifname: nonempty("CNI_IFNAME")?,
            pod: PodArgs::from_cni_args(var("CNI_ARGS"))
                .ok_or_else(|| missing("K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS"))?,
        })
    }
}

/// `POST /delegate`.
fn delegate(runner: &Runner<'_>, body: &[u8]) -> Vec<u8> {
    let started = Instant::now();
    runner.metrics.in_flight.inc();
    let parsed = MultusRequest::parse(body);
    let command = parsed
        .as_ref()
        .ok()
        .and_then(|(r, _)| r.env.get("CNI_COMMAND"))
        .map_or("other", |c| command_label(c));
    let outcome = parsed
        .and_then(|(r, _)| DelegateRequest::from_env(&r.env))
        .and_then(|d| hot_plug(runner, &d, started + DELEGATE_SETTLE.min(REQUEST_DEADLINE)));
    runner.counted(command, &outcome, started);
    match outcome {
        Ok(Some(result)) => match result_body(&result) {
            Ok(body) => response(200, "application/json", &body),
            Err(e) => error_response(400, &e),
        },
        Ok(None) => response(200, "application/json", b""),
        Err(e) => error_response(400, &e),
    }
}

/// The sandbox of container `container_id` of pod `pod` in the node's records (any Plexus network's), with its record.
fn sandbox(cni_dir: &std::path::Path, want: &DelegateRequest) -> Option<(RecordStore, Record)> {
    RecordStore::list_all(cni_dir).into_iter().find(|(_, r)| {
        r.container_id == want.container_id
            && r.pod.as_ref().is_some_and(|p| {
                p.namespace == want.pod.namespace
                    && p.name == want.pod.name
                    && want.pod.uid.as_ref().is_none_or(|uid| *uid == p.uid)
            })
    })
}

/// Whether two paths name the same network namespace (the same file, or the same inode).
fn same_netns(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    a == b || id(a).is_some_and(|a| Some(a) == id(b))
}

/// The interface `ifname` of a record, when it is one of the pod's networks attached (not the default network's).
fn attached<'r>(
    record: &'r Record,
    ifname: &str,
) -> Option<&'r plexus_cni::record::RecordedAttachment> {
    record
        .attachments
        .iter()
        .find(|a| a.ifname == ifname && !a.is_default && a.pending.is_none() && a.result.is_some())
}

/// Makes the sandbox of `want` hold (ADD) or not hold (DEL) the interface `want.ifname`, the way Plexus's hot-plug
/// does: by [`hotplug::sync`] against the pod's networks annotation, under the sandbox's order. Waits (until
/// `settle`) for the daemon's pod cache to show the annotation the caller acted on. Returns the interface's result
/// for an ADD.
fn hot_plug(
    runner: &Runner<'_>,
    want: &DelegateRequest,
    settle: Instant,
) -> Result<Option<CniResult>, CniError> {
    if let Some(refused) = node_netns(&want.netns) {
        return Err(refused);
    }
    let config = &runner.config.plugin;
    let pod_label = format!("{}/{}", want.pod.namespace, want.pod.name);
    let mut last_failure: Option<String> = None;
    loop {
        let found = sandbox(&config.cni_dir, want);
        if let Some((_, record)) = &found {
            if !same_netns(&record.netns, &want.netns) {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!(
                        "CNI_NETNS {:?} is not the network namespace of container {}'s sandbox",
                        want.netns, want.container_id
                    ),
                ));
            }
            if record.state == RecordState::Added {
                if let Some(a) = record
                    .attachments
                    .iter()
                    .find(|a| a.ifname == want.ifname && a.is_default)
                {
                    return Err(CniError::new(
                        ErrorCode::InvalidEnvironment,
                        format!(
                            "{} is the pod's default network ({}): only the runtime adds and removes it",
                            want.ifname, a.network
                        ),
                    ));
                }
                match (want.add, attached(record, &want.ifname)) {
                    (true, Some(a)) => {
                        let version = a.delegate["cniVersion"].as_str().unwrap_or("1.0.0");
                        let result = a.result.as_ref().map(|r| CniResult::from_value(r, version));
                        return match result {
                            Some(Ok(r)) => Ok(Some(r)),
                            Some(Err(e)) => Err(CniError::new(
                                ErrorCode::Record,
                                format!("the recorded result of {}: {e}", want.ifname),
                            )),
                            None => Ok(None),
                        };
                    }
                    (false, None) if record.attachments.iter().all(|a| a.ifname != want.ifname) => {
                        return Ok(None);
                    }
                    _ => {}
                }
            }
        }
        if let Some((store, record)) = &found
            && record.state == RecordState::Added
            && let Some(pod) = runner.provider.0.pod(&want.pod.namespace, &want.pod.name)
            && record.pod.as_ref().is_some_and(|p| p.uid == pod.uid)
            && hotplug::wants_change(config, record, &pod)
        {
            let key = format!("{}/{}", record.container_id, record.ifname);
            let synced = runner.sandboxes.run(key, || {
                plexus_cni::guard(|| {
                    hotplug::sync(
                        runner.provider,
                        config,
                        store,
                        &record.container_id,
                        &record.ifname,
                        &pod,
                    )
                    .map_err(|e| e.to_cni())
                })
            })?;
            match synced {
                Ok(s) => {
                    info!(pod = %pod_label, added = ?s.added, removed = ?s.removed, failed = ?s.failed, "Multus API: hot-plug");
                    if !s.failed.is_empty() {
                        last_failure = Some(s.failed.join("; "));
                    }
                }
                Err(hotplug::NotReady(why)) => {
                    debug!(pod = %pod_label, why, "the sandbox is not ready")
                }
            }
            // Look at the record again at once: it says whether the interface is there now.
            if let Some((_, record)) = sandbox(&config.cni_dir, want) {
                let there = attached(&record, &want.ifname).is_some();
                if there != want.add
                    && let Some(failure) = &last_failure
                {
                    return Err(CniError::new(ErrorCode::DelegateFailed, failure.clone()));
                }
                if there == want.add {
                    continue;
                }
            }
        }
        if Instant::now() >= settle {
            let msg = match (&found, want.add) {
                (None, _) => format!(
                    "no sandbox of container {} of pod {pod_label} is recorded on this node",
                    want.container_id
                ),
                (Some(_), true) => format!(
                    "the networks annotation of pod {pod_label}, as this node's daemon has it, does not ask for \
                     interface {} (Plexus attaches what the annotation selects)",
                    want.ifname
                ),
                (Some(_), false) => format!(
                    "the networks annotation of pod {pod_label}, as this node's daemon has it, still asks for \
                     interface {} (Plexus removes what the annotation no longer selects)",
                    want.ifname
                ),
            };
            let msg = match last_failure {
                Some(f) => format!("{msg}; last failure: {f}"),
                None => msg,
            };
            return Err(CniError::new(ErrorCode::TryAgainLater, msg));
        }
        std::thread::sleep(DELEGATE_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body multus's `DoCNI` sends for a delegate ADD (`CreateDelegateRequest` marshalled by Go's encoding/json:
    /// `config` is `[]byte`, so base64; `cni-args` is a pointer, `null` when unset).
    const DELEGATE_ADD: &str = r#"{"env":{"CNI_ARGS":"K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web;K8S_POD_UID=0b7c-11","CNI_COMMAND":"ADD","CNI_CONTAINERID":"4f0c1b2a","CNI_IFNAME":"net2","CNI_NETNS":"/var/run/netns/cni-1234"},"config":"eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJuYW1lIjoibWFjdmxhbiIsInR5cGUiOiJtYWN2bGFuIn0=","interfaceAttributes":{"ips":["10.1.2.3/24"],"mac":"02:00:00:00:00:01","cni-args":null}}"#;

    #[test]
    fn a_delegate_request_as_go_marshals_it() {
        let (request, config) = MultusRequest::parse(DELEGATE_ADD.as_bytes()).unwrap();
        assert_eq!(
            config,
            br#"{"cniVersion":"1.0.0","name":"macvlan","type":"macvlan"}"#
        );
        assert_eq!(
            request.interface_attributes.unwrap()["ips"],
            json!(["10.1.2.3/24"])
        );
        let d = DelegateRequest::from_env(&request.env).unwrap();
        assert_eq!(
            d,
            DelegateRequest {
                add: true,
                container_id: "4f0c1b2a".into(),
                netns: "/var/run/netns/cni-1234".into(),
                ifname: "net2".into(),
                pod: PodArgs {
                    namespace: "ns1".into(),
                    name: "web".into(),
                    uid: Some("0b7c-11".into()),
                },
            }
        );
    }

    #[test]
    fn a_shim_request_with_no_config_and_bad_bodies() {
        // Go marshals a nil []byte as null, and omits empty fields (`omitempty`).
        let (r, config) =
            MultusRequest::parse(br#"{"env":{"CNI_COMMAND":"STATUS"},"config":null}"#).unwrap();
        assert_eq!((r.env["CNI_COMMAND"].as_str(), config.len()), ("STATUS", 0));
        let (r, config) = MultusRequest::parse(b"{}").unwrap();
        assert!(r.env.is_empty() && config.is_empty() && r.interface_attributes.is_none());
        let e = MultusRequest::parse(br#"{"config":"not base64!"}"#).unwrap_err();
        assert_eq!(e.code, 6);
        assert!(e.msg.contains("base64"), "{e:?}");
        let e = MultusRequest::parse(b"\"env\"").unwrap_err();
        assert!(e.msg.contains("not a Multus API request"), "{e:?}");
    }

    #[test]
    fn delegate_requests_name_what_is_missing() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let full = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "net1"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b"),
        ];
        let d = DelegateRequest::from_env(&env(&full)).unwrap();
        assert!(!d.add);
        assert_eq!(d.pod.uid, None);
        for (i, want) in [
            (0, "CNI_COMMAND"),
            (1, "CNI_CONTAINERID"),
            (2, "CNI_NETNS"),
            (3, "CNI_IFNAME"),
            (4, "K8S_POD_NAMESPACE"),
        ] {
            let mut pairs = full.to_vec();
            pairs.remove(i);
            let e = DelegateRequest::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains(want), "{want}: {e:?}");
        }
        let mut check = full.to_vec();
        check[0] = ("CNI_COMMAND", "CHECK");
        assert!(
            DelegateRequest::from_env(&env(&check))
                .unwrap_err()
                .msg
                .contains("ADD")
        );
    }

    #[test]
    fn the_add_reply_is_multus_response_with_the_result_as_1_0_0() {
        // A 0.4.0 result (what a runtime speaking 0.4.0 gets from Plexus) becomes 1.0.0: no `version` in `ips`.
        let output = r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],
            "ips":[{"version":"4","address":"10.1.2.3/24","gateway":"10.1.2.1","interface":0}],
            "dns":{}}"#;
        let result = CniResult::from_json(output.as_bytes(), "1.0.0").unwrap();
        let body: Value = serde_json::from_slice(&result_body(&result).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"Result": {"cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0}]}})
        );
    }

    #[test]
    fn an_error_reply_is_the_cni_error_object_with_its_status() {
        let e = CniError::new(ErrorCode::DelegateFailed, "bridge: no").with_details("x");
        let reply = String::from_utf8(error_response(400, &e)).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (body["code"].as_u64(), body["msg"].as_str()),
            (Some(100), Some("bridge: no"))
        );
        assert_eq!(body["details"], "x");
    }

    #[test]
    fn a_request_as_gos_client_writes_it() {
        let body = DELEGATE_ADD.as_bytes();
        let mut wire = format!(
            "POST /delegate HTTP/1.1\r\nHost: dummy\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\n\
             Content-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n",
            body.len()
        )
        .into_bytes();
        wire.extend_from_slice(body);
        // Read a few bytes at a time, as a socket may give them.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(7).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let r = read_http(&mut Trickle(&wire)).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/delegate"));
        assert_eq!(r.body, body);

        let r = read_http(&mut &b"GET /healthz?x=1 HTTP/1.1\r\nHost: dummy\r\n\r\n"[..]).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.body.len()),
            ("GET", "/healthz", 0)
        );
    }

    #[test]
    fn requests_it_does_not_take() {
        let chunked = b"POST /cni HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(read_http(&mut &chunked[..]).unwrap_err().status(), 411);
        let big = format!(
            "POST /cni HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(read_http(&mut big.as_bytes()).unwrap_err().status(), 413);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD_BYTES + 10));
        assert_eq!(read_http(&mut long.as_bytes()).unwrap_err().status(), 431);
        assert_eq!(
            read_http(&mut &b"hello\r\n\r\n"[..]).unwrap_err().status(),
            400
        );
        // The caller closes before the body it announced.
        let short = b"POST /cni HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}";
        assert_eq!(read_http(&mut &short[..]).unwrap_err().status(), 400);
        let two = b"POST /cni HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}";
        assert_eq!(read_http(&mut &two[..]).unwrap_err().status(), 400);
    }
}
