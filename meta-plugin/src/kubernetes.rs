//! The Kubernetes paths of a request: ADD for a pod (read the pod and its NADs, attach, publish network-status and
//! events), what a DEL without a record deletes, and the networks STATUS is passed on to; each on the request
//! thread's tokio runtime.

use plexus_api::status::print_statuses;
use serde_json::Value;
use tracing::{debug, info_span, warn};

use crate::config::Config;
use crate::error::PlexusError;
use crate::ops::{self, Context, Sandbox};
use crate::plan::{self, Plan, PodArgs};
use crate::record::PodRef;
use crate::report::{attach_events, claim_statuses, network_statuses, warning_events};
use crate::source::{self, NetworkSource, NodeOnly, PodEvent, SourceProvider};

thread_local! {
    static RUNTIME: std::cell::OnceCell<tokio::runtime::Runtime> = const { std::cell::OnceCell::new() };
}

/// Runs `f` with this thread's tokio runtime (single-threaded, made on the thread's first request and kept for the
/// thread's life). The node daemon's request threads serve one request after another: what a request's calls leave
/// on the runtime (the daemon's own connection to the API server, see `plexus-daemon`'s cache) is there for the
/// next request, and no request pays for a new runtime. Tasks on it run only while a request drives it.
pub fn thread_runtime<T>(f: impl FnOnce(&tokio::runtime::Runtime) -> T) -> Result<T, PlexusError> {
    RUNTIME.with(|cell| {
        let runtime = match cell.get() {
            Some(r) => r,
            None => {
                let made = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(PlexusError::Runtime)?;
                cell.get_or_init(|| made)
            }
        };
        Ok(f(runtime))
    })
}

/// What a DEL without a usable record deletes. Kubernetes mode (a kubeconfig and a pod in `CNI_ARGS`): the
/// pod's networks from the pod and its NADs — every one that can still be resolved, each under the interface name
/// its ADD gave it — within `apiTimeoutSeconds` in all; when that fails (API server down, pod gone), the configured
/// default network alone. Otherwise the stdin config's delegates.
pub(crate) fn derive_for_del<P: SourceProvider>(
    provider: &P,
    ctx: &Context,
    sandbox: &Sandbox,
) -> Option<ops::DerivedPlan> {
    let pod_args = PodArgs::from_cni_args(&sandbox.args);
    let Some(pod_args) = pod_args.filter(|_| provider.kubernetes(&ctx.config)) else {
        return ops::static_fallback(ctx, sandbox);
    };
    thread_runtime(|runtime| derive_from_api(provider, ctx, sandbox, &pod_args, runtime)).ok()?
}

/// [`derive_for_del`] in Kubernetes mode, on the thread's runtime.
fn derive_from_api<P: SourceProvider>(
    provider: &P,
    ctx: &Context,
    sandbox: &Sandbox,
    pod_args: &PodArgs,
    runtime: &tokio::runtime::Runtime,
) -> Option<ops::DerivedPlan> {
    let from_pod = runtime.block_on(async {
        let lookup = async {
            let source = provider.source(&ctx.config).await?;
            let pod = source
                .pod(&pod_args.namespace, &pod_args.name, pod_args.uid.as_deref())
                .await?
                .ok_or_else(|| PlexusError::PodNotFound {
                    namespace: pod_args.namespace.clone(),
                    name: pod_args.name.clone(),
                })?;
            let requests = plan::pod_requests(&ctx.config, &pod)?;
            let mut resolved = Vec::with_capacity(requests.len());
            for request in &requests {
                match source::resolve_one(&source, &ctx.config, &pod, &request.reference).await {
                    Ok(n) => resolved.push(Some(n)),
                    Err(e) => {
                        warn!(network = %request.reference.label(), error = %e, "DEL: this network can't be resolved; it is skipped");
                        resolved.push(None);
                    }
                }
            }
            let env_args = plan::delegate_cni_args(&sandbox.args, &pod, &sandbox.container_id);
            let mut plan = Plan::for_pod_partial(
                &ctx.config,
                &pod,
                &requests,
                resolved,
                &sandbox.ifname,
                &env_args,
            )?;
            // Device networks: the delegates' DEL needs the device (the kubelet still knows the pod's devices until
            // the pod is gone, and its checkpoint after).
            if plan.needs_devices()
                && let Err(e) =
                    give_devices(&source, &ctx.config, &pod, &mut plan, &sandbox.container_id, &[])
                        .await
            {
                warn!(error = %e, "DEL: the pod's devices can't be known; device networks are deleted without them");
            }
            Ok(plan)
        };
        match tokio::time::timeout(ctx.config.api_timeout, lookup).await {
            Ok(result) => result,
            Err(_) => Err(PlexusError::Kubernetes(source::SourceError::Timeout {
                what: format!("reading pod {}/{} and its NADs", pod_args.namespace, pod_args.name),
                seconds: ctx.config.api_timeout.as_secs_f64(),
            })),
        }
    });
    match from_pod {
        Ok(plan) => {
            return Some(ops::DerivedPlan {
                plan,
                source: "the pod and its NADs",
            });
        }
        Err(e) => {
            warn!(error = %e, "DEL: the pod's networks can't be read; falling back to the default network")
        }
    }
    let pod = plan::PodView {
        namespace: pod_args.namespace.clone(),
        name: pod_args.name.clone(),
        uid: pod_args.uid.clone().unwrap_or_default(),
        annotations: Default::default(),
    };
    let default = runtime.block_on(async {
        let reference = plexus_api::policy::default_network(&ctx.config.policy())?;
        // The API server just failed us: the default network is looked up on the node only (delegates, a path,
        // or a conf in confDir).
        source::resolve_one(&source::NodeOnly, &ctx.config, &pod, &reference).await
    });
    match default {
        Ok(network) => {
            let env_args = plan::delegate_cni_args(&sandbox.args, &pod, &sandbox.container_id);
            Plan::for_pod_partial(
                &ctx.config,
                &pod,
                &[plan::NetworkRequest {
                    reference: plan::NetworkRef::Delegate(0),
                    selection: None,
                }],
                vec![Some(network)],
                &sandbox.ifname,
                &env_args,
            )
            .ok()
            .map(|plan| ops::DerivedPlan {
                plan,
                source: "the configured default network",
            })
        }
        Err(e) => {
            warn!(error = %e, "DEL: the default network can't be resolved either");
            None
        }
    }
}

/// The networks STATUS is passed on to: read through the API server in Kubernetes mode (NADs named by
/// `clusterNetwork` and `defaultNetworks`), from the node otherwise.
pub(crate) fn status_networks<P: SourceProvider>(
    provider: &P,
    config: &Config,
) -> Result<Vec<plexus_api::cni::NetworkConfigList>, PlexusError> {
    let needs_api = provider.kubernetes(config)
        && (config
            .cluster_network
            .as_ref()
            .is_some_and(|c| !c.starts_with('/'))
            || !config.default_networks.is_empty());
    thread_runtime(|runtime| {
        runtime.block_on(async {
            if needs_api {
                let source = provider.source(config).await?;
                source::default_network_configs(Some(&source), config).await
            } else {
                source::default_network_configs(None::<&NodeOnly>, config).await
            }
        })
    })?
}

/// ADD. Static mode (no kubeconfig, or a sandbox that is not a pod): the configured delegates. Kubernetes mode:
/// read the pod and its NADs, attach, then publish network-status (one PATCH) and the pod's events.
pub(crate) fn add<P: SourceProvider>(
    provider: &P,
    ctx: &Context,
    sandbox: &Sandbox,
) -> Result<Value, PlexusError> {
    let kubernetes = provider.kubernetes(&ctx.config);
    let pod_args = PodArgs::from_cni_args(&sandbox.args);
    let Some(pod_args) = pod_args.filter(|_| kubernetes) else {
        if kubernetes {
            debug!("CNI_ARGS names no pod: attaching the configured delegates only");
        }
        let plan = Plan::from_static_config(&ctx.config, &sandbox.ifname, &sandbox.args)?;
        return ops::add(ctx, sandbox, &plan, None).map(|added| added.result);
    };
    thread_runtime(|runtime| add_for_pod(provider, ctx, sandbox, &pod_args, runtime))?
}

/// Device networks: the pod's devices from the kubelet, its DRA devices by their ResourceSlices' attributes (the pools
/// of its claimed devices, each read once). Devices in `in_use` (hot-plug: the sandbox's other attachments') are not
/// given again.
pub(crate) async fn give_devices<S: NetworkSource>(
    source: &S,
    config: &Config,
    pod: &plan::PodView,
    plan: &mut Plan,
    container_id: &str,
    in_use: &[(String, String)],
) -> Result<(), PlexusError> {
    let found = crate::devices::pod_devices(config, pod).await?;
    let mut devices = found.plugin;
    let mut slices = Vec::new();
    if !found.claimed.is_empty() {
        let mut pools: Vec<(&str, &str)> = Vec::new();
        for c in &found.claimed {
            if !pools.contains(&(c.driver.as_str(), c.pool.as_str())) {
                pools.push((&c.driver, &c.pool));
            }
        }
        for (driver, pool) in pools {
            slices.extend(source.pool_devices(driver, pool).await?);
        }
        devices.extend(plexus_api::devices::claimed_as_container_devices(
            &found.claimed,
            &slices,
        ));
    }
    for container in &mut devices {
        container.device_ids.retain(|id| {
            !in_use
                .iter()
                .any(|(resource, used)| *resource == container.resource_name && used == id)
        });
    }
    plan.give_devices(config, pod, &devices, container_id)?;
    for attachment in &mut plan.attachments {
        if let Some(device) = &mut attachment.device {
            device.claim = plexus_api::devices::claim_of(
                &found.claimed,
                &slices,
                &device.resource_name,
                &device.device_id,
            );
        }
    }
    Ok(())
}

/// [`add`] in Kubernetes mode, on the thread's runtime.
fn add_for_pod<P: SourceProvider>(
    provider: &P,
    ctx: &Context,
    sandbox: &Sandbox,
    pod_args: &PodArgs,
    runtime: &tokio::runtime::Runtime,
) -> Result<Value, PlexusError> {
    let lookup = info_span!("lookup").entered();
    let (source, pod, plan) = runtime.block_on(async {
        let source = provider.source(&ctx.config).await?;
        let pod = source::pod_with_retry(
            &source,
            &pod_args.namespace,
            &pod_args.name,
            pod_args.uid.as_deref(),
        )
        .await?;
        let requests = plan::pod_requests(&ctx.config, &pod)?;
        let resolved = source::resolve(&source, &ctx.config, &pod, &requests).await?;
        let env_args = plan::delegate_cni_args(&sandbox.args, &pod, &sandbox.container_id);
        let mut plan = Plan::for_pod(
            &ctx.config,
            &pod,
            &requests,
            &resolved,
            &sandbox.ifname,
            &env_args,
        )?;
        if plan.needs_devices() {
            give_devices(
                &source,
                &ctx.config,
                &pod,
                &mut plan,
                &sandbox.container_id,
                &[],
            )
            .await?;
        }
        Ok::<_, PlexusError>((source, pod, plan))
    })?;
    drop(lookup);
    let pod_ref = PodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    };
    // The record is completed before anything is published: an ADD rolled back because its record can't be written
    // leaves no network-status and no event behind (the completion is one record write; docs/benchmarks.md, run R).
    let added = ops::add(ctx, sandbox, &plan, Some(pod_ref))?;
    for w in &plan.warnings {
        warn!(warning = %w, "capability key without the capability");
    }
    let status = print_statuses(&network_statuses(&added.record));
    let events: Vec<PodEvent> = if ctx.config.pod_events {
        let mut events = warning_events(&plan.warnings);
        events.extend(attach_events(&added.record));
        events
    } else {
        Vec::new()
    };
    let status_write = info_span!("status_write").entered();
    let published = runtime.block_on(async {
        source.publish_status(&pod, &status).await?;
        // Events only for an ADD that stands.
        if let Err(e) = source.record_events(&pod, &events).await {
            warn!(error = %e, "could not record the pod's events");
        }
        // The claims' device status is for the claims' readers (KEP-4817); the pod's networks stand without it.
        for ((namespace, name), apply) in claim_statuses(&added.record) {
            if let Err(e) = source.publish_claim_status(&namespace, &name, &apply).await {
                warn!(claim = %format!("{namespace}/{name}"), error = %e, "could not write the ResourceClaim's device status");
            }
        }
        Ok::<_, source::SourceError>(())
    });
    drop(status_write);
    if let Err(e) = published {
        // Consumers rely on network-status (as with Multus, a pod without it does not start): undo the ADD.
        if let Err(undo) = ops::undo(ctx, &added.record) {
            warn!(error = %undo, "undoing the ADD after the failed status update left errors");
        }
        return Err(PlexusError::StatusNotWritten {
            pod: pod.label(),
            source: e,
        });
    }
    Ok(added.result)
}
