//! Prometheus metrics of the controller, registered once and shared by the webhook and the reconcilers.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one admission review: the kind reviewed (`nad`, `pod`, `pod-injection`, `other`) and the outcome
/// (`allowed`, `patched`, `denied`, `error`, `timeout`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// Labels of one reconcile: which controller (`nad`, `pod`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

/// Labels of a change to a network that pods use: `deleted` or `changed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    pub change: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

/// Every metric the controller exports.
pub struct Metrics {
    pub registry: Registry,
    pub webhook_requests: Family<ReviewLabels, Counter>,
    pub webhook_duration: Family<ReviewLabels, Histogram, fn() -> Histogram>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    pub invalid_nads: Gauge,
    pub mismatched_pods: Gauge,
    pub networks_changed_under_pods: Family<ChangeLabels, Counter>,
    pub leader: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("plexus_controller");
        let webhook_requests = Family::<ReviewLabels, Counter>::default();
        let webhook_duration =
            Family::<ReviewLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        let invalid_nads = Gauge::default();
        let mismatched_pods = Gauge::default();
        let networks_changed_under_pods = Family::<ChangeLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "webhook_requests",
            "Admission reviews answered, by kind and outcome",
            webhook_requests.clone(),
        );
        registry.register(
            "webhook_duration_seconds",
            "Time to answer one admission review, by kind and outcome",
            webhook_duration.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller",
            reconcile_errors.clone(),
        );
        registry.register(
            "invalid_nads",
            "NetworkAttachmentDefinitions whose Valid condition is False",
            invalid_nads.clone(),
        );
        registry.register(
            "mismatched_pods",
            "Pods whose network-status differs from the networks they asked for",
            mismatched_pods.clone(),
        );
        registry.register(
            "networks_changed_under_pods",
            "NetworkAttachmentDefinitions deleted or changed while pods were attached to them",
            networks_changed_under_pods.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the reconcilers",
            leader.clone(),
        );
        Arc::new(Self {
            registry,
            webhook_requests,
            webhook_duration,
            reconciles,
            reconcile_errors,
            invalid_nads,
            mismatched_pods,
            networks_changed_under_pods,
            leader,
        })
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/operations.md's metrics reference holds one row for each metric, with the HELP text the code exports.
    #[test]
    fn the_operations_doc_lists_every_metric_with_its_help() {
        let metrics = Metrics::new();
        // A family is printed once it has a series: one each.
        let review = ReviewLabels {
            kind: "pod",
            outcome: "allowed",
        };
        let _ = metrics.webhook_requests.get_or_create(&review);
        let _ = metrics.webhook_duration.get_or_create(&review);
        let controller = ControllerLabels { controller: "nad" };
        let _ = metrics.reconciles.get_or_create(&controller);
        let _ = metrics.reconcile_errors.get_or_create(&controller);
        let _ = metrics
            .networks_changed_under_pods
            .get_or_create(&ChangeLabels { change: "deleted" });
        plexus_tests::metrics_reference::assert_documented(&metrics.encode());
    }

    #[test]
    fn encodes_families_with_labels() {
        let m = Metrics::new();
        let labels = ReviewLabels {
            kind: "pod",
            outcome: "denied",
        };
        m.webhook_requests.get_or_create(&labels).inc();
        m.webhook_duration.get_or_create(&labels).observe(0.001);
        let text = m.encode();
        assert!(
            text.contains(
                r#"plexus_controller_webhook_requests_total{kind="pod",outcome="denied"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("plexus_controller_webhook_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("plexus_controller_leader 0"), "{text}");
    }
}
