//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only one runs the reconcilers
//! (every replica serves the webhook). The holder renews the Lease every third of its duration; another replica
//! takes it over once it has not been renewed for the whole duration. Updates are conditional on the Lease's
//! resourceVersion, so two replicas never both believe they hold it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

/// Which Lease, who we are, and how long a holder keeps it without renewing.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

enum Outcome {
    Holding,
    HeldByOther(String),
}

impl Election {
    /// Runs until `shutdown` turns true; `leading` says whether this replica holds the Lease. On shutdown a held
    /// Lease is released (so another replica takes over at once).
    pub async fn run(
        self,
        api: Api<Lease>,
        leading: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let tick = self.lease_duration / 3;
        let mut last_renewed: Option<tokio::time::Instant> = None;
        loop {
            match self.try_acquire_or_renew(&api).await {
                Ok(Outcome::Holding) => {
                    last_renewed = Some(tokio::time::Instant::now());
                    if !*leading.borrow() {
                        tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    }
                    leading.send_replace(true);
                }
                Ok(Outcome::HeldByOther(holder)) => {
                    if *leading.borrow() {
                        tracing::warn!(lease = %self.name, %holder, "lost the lease");
                    }
                    last_renewed = None;
                    leading.send_replace(false);
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "lease update failed");
                    // Keep leading only while the lease we hold is certainly still ours.
                    let expired =
                        last_renewed.is_none_or(|t| t.elapsed() >= self.lease_duration * 2 / 3);
                    if expired && *leading.borrow() {
                        tracing::warn!(lease = %self.name, "could not renew the lease in time; stepping down");
                        leading.send_replace(false);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            if let Err(e) = self.release(&api).await {
                tracing::warn!(lease = %self.name, error = %e, "could not release the lease");
            } else {
                tracing::info!(lease = %self.name, "released the lease");
            }
        }
    }

    async fn try_acquire_or_renew(&self, api: &Api<Lease>) -> Result<Outcome, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Outcome::Holding),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Ok(Outcome::HeldByOther("(just created)".into()))
                }
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
                (Some(renewed), Some(secs)) => {
                    let until =
                        renewed.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(secs));
                    until < now.0
                }
                _ => true,
            };
            if !holder.is_empty() && !expired {
                return Ok(Outcome::HeldByOther(holder));
            }
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now);
        // The replace carries the resourceVersion we read: a concurrent update makes it fail with 409.
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Outcome::Holding),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Outcome::HeldByOther("(conflict)".into()))
            }
            Err(e) => Err(e),
        }
    }

    async fn release(&self, api: &Api<Lease>) -> Result<(), kube::Error> {
        let mut lease = api.get(&self.name).await?;
        if let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            api.replace(&self.name, &PostParams::default(), &lease)
                .await?;
        }
        Ok(())
    }
}
