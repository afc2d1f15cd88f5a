//! The HTTPS endpoints the API server calls: `POST /validate` with an `admission.k8s.io/v1` AdmissionReview of a
//! NetworkAttachmentDefinition or a Pod, and `POST /mutate` (resource injection, registered only when the chart's
//! `controller.resourceInjection.enabled` is on) with one of a Pod; the answer is the review with `response` filled
//! in (for `/mutate`, with a JSON patch when there is something to add).
//!
//! Anyone who reaches the port can send requests, so each one is bounded ([`Limits`]): at most `max_concurrent`
//! reviews are decided at once (more wait for a turn), and a request that is not answered within `request_timeout`
//! (reading its body, waiting for a turn and deciding, together) gets `503 Service Unavailable`, on which the API
//! server applies the webhook's failurePolicy. The connections are bounded too (`plexus_serve::connection`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tokio::sync::Semaphore;

use plexus_api::injection::PatchOperation;
use plexus_api::policy::PodView;

use crate::admission::{NadLookup, Rules, Verdict, review_nad, review_pod};
use crate::injection::inject_pod;
use crate::metrics::{Metrics, ReviewLabels};

/// How much of the controller one client of the webhook can take (the command line's flags).
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Admission reviews decided at once; more wait for a turn (within the request timeout).
    #[arg(
        long = "max-concurrent-reviews",
        env = "PLEXUS_MAX_CONCURRENT_REVIEWS",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub max_concurrent: u32,
    /// Seconds one request may take, reading its body and waiting for a turn included; past that it is answered
    /// 503 (the API server then applies the failurePolicy). Keep it below the webhook's timeoutSeconds.
    #[arg(
        long = "review-timeout-seconds",
        env = "PLEXUS_REVIEW_TIMEOUT_SECONDS",
        default_value_t = 4.0
    )]
    pub request_timeout_seconds: f64,
    /// Seconds a client has to finish the TLS handshake.
    #[arg(
        long = "tls-handshake-timeout-seconds",
        env = "PLEXUS_TLS_HANDSHAKE_TIMEOUT_SECONDS",
        default_value_t = 5.0
    )]
    pub handshake_timeout_seconds: f64,
    /// Seconds a client has to send a request's headers (HTTP/1.1).
    #[arg(
        long = "header-read-timeout-seconds",
        env = "PLEXUS_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 5.0
    )]
    pub header_read_timeout_seconds: f64,
    /// Seconds a connection may pass without a byte read or written before it is closed (the API server opens a new
    /// one when it needs it). At least the review timeout.
    #[arg(
        long = "connection-idle-seconds",
        env = "PLEXUS_CONNECTION_IDLE_SECONDS",
        default_value_t = 60.0
    )]
    pub idle_seconds: f64,
}

impl Limits {
    /// The checked durations: each finite and positive (a connection's idle limit at least the review timeout, so
    /// that a review in progress is never cut).
    pub fn durations(&self) -> Result<LimitDurations, String> {
        let seconds = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{name} must be a positive number of seconds, not {v}"))
        };
        let request = seconds("--review-timeout-seconds", self.request_timeout_seconds)?;
        Ok(LimitDurations {
            request,
            handshake: seconds(
                "--tls-handshake-timeout-seconds",
                self.handshake_timeout_seconds,
            )?,
            header_read: seconds(
                "--header-read-timeout-seconds",
                self.header_read_timeout_seconds,
            )?,
            idle: seconds("--connection-idle-seconds", self.idle_seconds)?.max(request),
        })
    }
}

/// [`Limits`]' durations, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitDurations {
    pub request: Duration,
    pub handshake: Duration,
    pub header_read: Duration,
    pub idle: Duration,
}

/// What a request handler needs.
pub struct WebhookState<L> {
    pub nads: L,
    pub rules: Rules,
    pub metrics: Arc<Metrics>,
    /// One permit per review decided at once.
    pub turns: Semaphore,
    pub request_timeout: Duration,
}

impl<L> WebhookState<L> {
    pub fn new(
        nads: L,
        rules: Rules,
        metrics: Arc<Metrics>,
        max_concurrent: u32,
        request_timeout: Duration,
    ) -> Self {
        Self {
            nads,
            rules,
            metrics,
            turns: Semaphore::new(max_concurrent as usize),
            request_timeout,
        }
    }
}

pub fn router<L: NadLookup + Send + Sync + 'static>(state: Arc<WebhookState<L>>) -> Router {
    Router::new()
        .route("/validate", post(validate::<L>))
        .route("/mutate", post(mutate::<L>))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            within_timeout::<L>,
        ))
        .with_state(state)
}

/// The whole request, its body read included, within the request timeout; past it, 503.
async fn within_timeout<L: Send + Sync + 'static>(
    State(state): State<Arc<WebhookState<L>>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            count(&state.metrics, "other", "timeout", started);
            tracing::warn!(
                timeout_seconds = state.request_timeout.as_secs_f64(),
                "admission review not answered in time"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the review was not answered in time",
            )
                .into_response()
        }
    }
}

/// Which of the two webhooks a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Validate,
    Mutate,
}

async fn validate<L: NadLookup + Send + Sync + 'static>(
    State(state): State<Arc<WebhookState<L>>>,
    body: Bytes,
) -> Response {
    answer(&state, &body, Hook::Validate).await
}

async fn mutate<L: NadLookup + Send + Sync + 'static>(
    State(state): State<Arc<WebhookState<L>>>,
    body: Bytes,
) -> Response {
    answer(&state, &body, Hook::Mutate).await
}

async fn answer<L: NadLookup + Send + Sync + 'static>(
    state: &WebhookState<L>,
    body: &[u8],
    hook: Hook,
) -> Response {
    let started = Instant::now();
    // Waits for a turn; the request timeout bounds the wait. Held until the answer is made.
    let Ok(_turn) = state.turns.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    };
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            count(&state.metrics, "other", "error", started);
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}"),
            )
                .into_response();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            count(&state.metrics, "other", "error", started);
            return (
                StatusCode::BAD_REQUEST,
                format!("no request in the review: {e}"),
            )
                .into_response();
        }
    };
    let (kind, verdict, patch) = match hook {
        Hook::Validate => {
            let (kind, verdict) = decide(state, &request).await;
            (kind, verdict, Vec::new())
        }
        Hook::Mutate => inject(state, &request).await,
    };
    let mut response = AdmissionResponse::from(&request);
    let mut outcome = if verdict.denial.is_some() {
        "denied"
    } else {
        "allowed"
    };
    if let Some(message) = &verdict.denial {
        response = response.deny(message);
    } else if !patch.is_empty() {
        let patched = serde_json::to_value(&patch)
            .and_then(serde_json::from_value::<json_patch::Patch>)
            .map_err(|e| e.to_string())
            .and_then(|p| response.clone().with_patch(p).map_err(|e| e.to_string()));
        match patched {
            Ok(r) => {
                response = r;
                outcome = "patched";
            }
            Err(e) => {
                response = response.deny(format!("the resource injection patch: {e}"));
                outcome = "denied";
            }
        }
    }
    tracing::info!(
        uid = %request.uid,
        kind,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
        outcome,
        denial = verdict.denial.as_deref().unwrap_or_default(),
        warnings = verdict.warnings.len(),
        patch_operations = patch.len(),
        "admission review"
    );
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    count(&state.metrics, kind, outcome, started);
    axum::Json(response.into_review()).into_response()
}

/// The pod an admission request carries, as the API server sent it, with the request's namespace when the object
/// has none (a pod created with generateName has no name yet: `<generateName>*`).
fn pod_of(
    request: &AdmissionRequest<DynamicObject>,
    object: &DynamicObject,
) -> Result<(PodView, Pod), String> {
    let view = plexus_api::admission::pod_view(request.namespace.as_deref(), &object.metadata);
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    if let Some(map) = value.as_object_mut() {
        // The review's object may carry another apiVersion spelling; only its fields matter here.
        map.remove("apiVersion");
        map.remove("kind");
    }
    let pod: Pod = serde_json::from_value(value).map_err(|e| format!("not a pod: {e}"))?;
    Ok((view, pod))
}

/// The mutating webhook: resource injection for a pod at CREATE; anything else is allowed unchanged.
async fn inject<L: NadLookup>(
    state: &WebhookState<L>,
    request: &AdmissionRequest<DynamicObject>,
) -> (&'static str, Verdict, Vec<PatchOperation>) {
    let (Some(object), "Pod", Operation::Create) = (
        &request.object,
        request.kind.kind.as_str(),
        &request.operation,
    ) else {
        return ("other", Verdict::default(), Vec::new());
    };
    match pod_of(request, object) {
        Ok((view, pod)) => {
            let injection = inject_pod(&view, &pod, &state.nads, &state.rules).await;
            let verdict = match injection.denial {
                Some(denial) => Verdict::deny(denial),
                None => Verdict::default(),
            };
            ("pod-injection", verdict, injection.patch)
        }
        Err(e) => ("pod-injection", Verdict::deny(e), Vec::new()),
    }
}

async fn decide<L: NadLookup>(
    state: &WebhookState<L>,
    request: &AdmissionRequest<DynamicObject>,
) -> (&'static str, Verdict) {
    let Some(object) = &request.object else {
        // DELETE and CONNECT carry no object; the webhook is not registered for them.
        return ("other", Verdict::default());
    };
    match request.kind.kind.as_str() {
        "NetworkAttachmentDefinition" => {
            let verdict = match plexus_api::admission::nad_of(
                object.metadata.clone(),
                request.namespace.as_deref(),
                object.data.get("spec"),
            ) {
                Ok(nad) => review_nad(&nad, &state.nads, &state.rules).await,
                Err(denial) => Verdict::deny(denial),
            };
            ("nad", verdict)
        }
        "Pod" => match pod_of(request, object) {
            Ok((view, pod)) => {
                let spec = pod.spec.unwrap_or_default();
                (
                    "pod",
                    review_pod(&view, &spec, &state.nads, &state.rules).await,
                )
            }
            Err(e) => ("pod", Verdict::deny(e)),
        },
        _ => ("other", Verdict::default()),
    }
}

fn count(metrics: &Metrics, kind: &'static str, outcome: &'static str, started: Instant) {
    let labels = ReviewLabels { kind, outcome };
    metrics.webhook_requests.get_or_create(&labels).inc();
    metrics
        .webhook_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::LookupError;
    use axum::body::Body;
    use plexus_api::ipam_claim::ClaimLookup;
    use plexus_api::nad::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
    use plexus_api::policy::Policy;
    use tower::ServiceExt;

    /// A NAD lookup whose answers wait until the test lets them through: the instrument that keeps reviews in
    /// progress (its answer, when let through, is "no such NAD").
    struct Gate {
        entered: Semaphore,
        open: Semaphore,
    }

    impl Default for Gate {
        fn default() -> Self {
            Self {
                entered: Semaphore::new(0),
                open: Semaphore::new(0),
            }
        }
    }

    impl NadLookup for Arc<Gate> {
        async fn get(
            &self,
            _namespace: &str,
            _name: &str,
        ) -> Result<Option<Arc<NetworkAttachmentDefinition>>, LookupError> {
            self.entered.add_permits(1);
            if let Ok(permit) = self.open.acquire().await {
                permit.forget();
            }
            Ok(None)
        }

        async fn namespace_labels(
            &self,
            _namespace: &str,
        ) -> Result<std::collections::BTreeMap<String, String>, LookupError> {
            Ok(Default::default())
        }

        async fn ipam_claim(&self, _namespace: &str, _name: &str) -> ClaimLookup {
            ClaimLookup::Missing
        }
    }

    fn review(kind: &str, object: serde_json::Value) -> Request {
        let (group, resource) = match kind {
            "Pod" => ("", "pods"),
            _ => ("k8s.cni.cncf.io", "network-attachment-definitions"),
        };
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "operation": "CREATE", "userInfo": {}, "namespace": "ns", "name": "n",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "resource": {"group": group, "version": "v1", "resource": resource},
                "object": object,
            }
        });
        Request::post("/validate")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    /// A pod that selects a NAD: its review asks the lookup.
    fn pod_review() -> Request {
        review(
            "Pod",
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "n", "namespace": "ns", "annotations": {"k8s.v1.cni.cncf.io/networks": "side"}}}),
        )
    }

    /// A NAD: decided without a lookup.
    fn nad_review() -> Request {
        review(
            "NetworkAttachmentDefinition",
            serde_json::json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "n", "namespace": "ns"}, "spec": {"config": "{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}"}}),
        )
    }

    async fn answer(app: &Router, request: Request) -> (StatusCode, String) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn app(gate: &Arc<Gate>, turns: u32, timeout: Duration) -> Router {
        router(Arc::new(WebhookState::new(
            gate.clone(),
            Rules {
                policy: Policy {
                    static_delegates: 1,
                    ..Policy::default()
                },
                ..Rules::default()
            },
            Metrics::new(),
            turns,
            timeout,
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn reviews_past_the_limit_wait_and_get_503_when_no_turn_comes_in_time() {
        let gate = Arc::new(Gate::default());
        let app = app(&gate, 2, Duration::from_secs(2));
        // Without a stuck review, a NAD is answered.
        assert_eq!(answer(&app, nad_review()).await.0, StatusCode::OK);
        let stuck: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn({
                    let app = app.clone();
                    async move { answer(&app, pod_review()).await }
                })
            })
            .collect();
        let _ = gate.entered.acquire_many(2).await.unwrap();
        // Both turns are taken: the NAD waits for one, and none comes within the timeout.
        let (status, body) = answer(&app, nad_review()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("not answered in time"), "{body}");
        // The stuck ones end at their own timeout, and give their turns back.
        for s in stuck {
            assert_eq!(s.await.unwrap().0, StatusCode::SERVICE_UNAVAILABLE);
        }
        let (status, body) = answer(&app, nad_review()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\"allowed\":true"), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_review_gets_the_turn_a_finished_one_gives_back() {
        let gate = Arc::new(Gate::default());
        let app = app(&gate, 1, Duration::from_secs(30));
        let first = tokio::spawn({
            let app = app.clone();
            async move { answer(&app, pod_review()).await }
        });
        let _ = gate.entered.acquire().await.unwrap();
        let second = tokio::spawn({
            let app = app.clone();
            async move { answer(&app, nad_review()).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!second.is_finished(), "the second review had no turn");
        gate.open.add_permits(1);
        let (status, body) = first.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("side"), "the pod's review ran: {body}");
        let (status, body) = second.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"allowed\":true"), "{body}");
    }

    /// One NAD, `ns/side`, with a device resource.
    struct DeviceNad;

    impl NadLookup for DeviceNad {
        async fn get(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<Arc<NetworkAttachmentDefinition>>, LookupError> {
            if (namespace, name) != ("ns", "side") {
                return Ok(None);
            }
            let mut nad = NetworkAttachmentDefinition::new(
                name,
                NetworkAttachmentDefinitionSpec {
                    config: Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#.into()),
                },
            );
            nad.metadata.namespace = Some(namespace.into());
            nad.metadata.annotations = Some(
                [(
                    "k8s.v1.cni.cncf.io/resourceName".to_owned(),
                    "plexus.test/nic".to_owned(),
                )]
                .into(),
            );
            Ok(Some(Arc::new(nad)))
        }

        async fn namespace_labels(
            &self,
            _namespace: &str,
        ) -> Result<std::collections::BTreeMap<String, String>, LookupError> {
            Ok(Default::default())
        }

        async fn ipam_claim(&self, _namespace: &str, _name: &str) -> ClaimLookup {
            ClaimLookup::Missing
        }
    }

    #[tokio::test]
    async fn mutate_answers_with_a_json_patch_that_makes_the_pod_pass_validation() {
        let app = router(Arc::new(WebhookState::new(
            DeviceNad,
            Rules {
                policy: Policy {
                    static_delegates: 1,
                    ..Policy::default()
                },
                ..Rules::default()
            },
            Metrics::new(),
            4,
            Duration::from_secs(5),
        )));
        // As the API server sends it: every container has `resources`.
        let mut pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "n", "namespace": "ns", "annotations": {"k8s.v1.cni.cncf.io/networks": "side, side"}},
            "spec": {"containers": [{"name": "app", "image": "i", "resources": {}}]}});
        let at = |path: &str, request: Request| {
            let (parts, body) = request.into_parts();
            let mut request = Request::from_parts(parts, body);
            *request.uri_mut() = path.parse().unwrap();
            request
        };
        let (status, body) = answer(&app, at("/validate", review("Pod", pod.clone()))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("\"allowed\":false")
                && body.contains("need 2 device(s) of resource")
                && body.contains("plexus.test/nic"),
            "{body}"
        );
        let (status, body) = answer(&app, at("/mutate", review("Pod", pod.clone()))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answered: AdmissionReview<DynamicObject> = serde_json::from_str(&body).unwrap();
        let response = answered.response.unwrap();
        assert!(response.allowed, "{body}");
        assert!(body.contains("\"patchType\":\"JSONPatch\""), "{body}");
        let patch: json_patch::Patch = serde_json::from_slice(&response.patch.unwrap()).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["resources"]["requests"]["plexus.test/nic"], "2");
        assert_eq!(container["resources"]["limits"]["plexus.test/nic"], "2");
        assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/podnetinfo");
        assert_eq!(pod["spec"]["volumes"][0]["name"], "podnetinfo");
        // The patched pod passes the validating webhook.
        let (_, body) = answer(&app, at("/validate", review("Pod", pod.clone()))).await;
        assert!(body.contains("\"allowed\":true"), "{body}");
        // A NAD that does not exist denies the pod at /mutate.
        let missing = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "m", "namespace": "ns", "annotations": {"k8s.v1.cni.cncf.io/networks": "gone"}},
            "spec": {"containers": [{"name": "app", "image": "i", "resources": {}}]}});
        let (_, body) = answer(&app, at("/mutate", review("Pod", missing))).await;
        assert!(
            body.contains("\"allowed\":false")
                && body.contains("network ns/gone: no such NetworkAttachmentDefinition"),
            "{body}"
        );
    }

    #[test]
    fn limits_must_be_positive_and_the_idle_limit_covers_a_review() {
        let limits = |request: f64, idle: f64| Limits {
            max_concurrent: 4,
            request_timeout_seconds: request,
            handshake_timeout_seconds: 5.0,
            header_read_timeout_seconds: 5.0,
            idle_seconds: idle,
        };
        assert_eq!(
            limits(4.0, 1.0).durations().unwrap().idle,
            Duration::from_secs(4)
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(limits(bad, 60.0).durations().is_err(), "{bad}");
        }
    }
}
