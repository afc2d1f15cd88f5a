//! The HTTPS endpoint the API server calls: `POST /validate` with an `admission.k8s.io/v1` AdmissionReview of a
//! NetworkAttachmentDefinition or a Pod; the answer is the review with `response` filled in.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use plexus_api::nad::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};

use plexus_api::policy::PodView;

use crate::admission::{NadLookup, Rules, Verdict, review_nad, review_pod};
use crate::metrics::{Metrics, ReviewLabels};

/// What a request handler needs.
pub struct WebhookState<L> {
    pub nads: L,
    pub rules: Rules,
    pub metrics: Arc<Metrics>,
}

pub fn router<L: NadLookup + Send + Sync + 'static>(state: Arc<WebhookState<L>>) -> Router {
    Router::new()
        .route("/validate", post(validate::<L>))
        .with_state(state)
}

async fn validate<L: NadLookup + Send + Sync + 'static>(
    State(state): State<Arc<WebhookState<L>>>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
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
    let (kind, verdict) = decide(&state, &request).await;
    let outcome = if verdict.denial.is_some() {
        "denied"
    } else {
        "allowed"
    };
    tracing::info!(
        uid = %request.uid,
        kind,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
        outcome,
        denial = verdict.denial.as_deref().unwrap_or_default(),
        warnings = verdict.warnings.len(),
        "admission review"
    );
    let mut response = AdmissionResponse::from(&request);
    if let Some(message) = verdict.denial {
        response = response.deny(message);
    }
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    count(&state.metrics, kind, outcome, started);
    axum::Json(response.into_review()).into_response()
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
            let spec = match object.data.get("spec") {
                None => Ok(NetworkAttachmentDefinitionSpec::default()),
                Some(spec) => serde_json::from_value(spec.clone()),
            };
            let verdict = match spec {
                Ok(spec) => {
                    let mut nad = NetworkAttachmentDefinition {
                        metadata: object.metadata.clone(),
                        spec,
                        status: None,
                    };
                    if nad.metadata.namespace.is_none() {
                        nad.metadata.namespace = request.namespace.clone();
                    }
                    review_nad(&nad, &state.nads, &state.rules).await
                }
                Err(e) => Verdict::deny(format!(
                    "spec is not a NetworkAttachmentDefinition spec: {e}"
                )),
            };
            ("nad", verdict)
        }
        "Pod" => {
            let namespace = request
                .namespace
                .as_deref()
                .or(object.metadata.namespace.as_deref())
                .unwrap_or("default");
            let pod = PodView {
                namespace: namespace.to_owned(),
                // A pod created with generateName has no name yet.
                name: object
                    .metadata
                    .name
                    .clone()
                    .or_else(|| {
                        object
                            .metadata
                            .generate_name
                            .as_ref()
                            .map(|g| format!("{g}*"))
                    })
                    .unwrap_or_default(),
                uid: String::new(),
                annotations: object.metadata.annotations.clone().unwrap_or_default(),
            };
            ("pod", review_pod(&pod, &state.nads, &state.rules).await)
        }
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
