//! Where pods, NADs and on-disk network configs come from, and where network-status goes.
//!
//! [`NetworkSource`] is the seam between planning and the outside world: [`KubeSource`] asks the API server (thin
//! mode); the node daemon of thick mode (crate `plexus-daemon`) implements it over watch-backed caches.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use plexus_api::cni::NetworkConfigList;
use plexus_api::devices::SliceDevice;
use plexus_api::nad::{NetworkAttachmentDefinition, pick_on_disk_config};
use plexus_api::policy::{self, PolicyError};
use tracing::{debug, warn};

use crate::config::Config;
use crate::error::PlexusError;
use crate::plan::{NetworkRef, NetworkRequest, PodView, ResolvedNetwork};

pub use crate::error::SourceError;

/// An event about the pod, for `kubectl describe pod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub reason: String,
    pub message: String,
    pub warning: bool,
}

/// What planning reads of a NAD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NadView {
    /// `spec.config`; `None` when the NAD has none (the network is then configured on disk).
    pub config: Option<String>,
    /// The `k8s.v1.cni.cncf.io/resourceName` annotation, as written (checked when planning).
    pub resource_name: Option<String>,
}

impl NadView {
    /// The parts of a NAD object that planning reads.
    pub fn of(nad: &NetworkAttachmentDefinition) -> Self {
        NadView {
            config: nad.spec.config.clone(),
            resource_name: nad
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(plexus_api::nad::RESOURCE_NAME_ANNOTATION))
                .cloned(),
        }
    }
}

/// What planning reads and publishing writes.
pub trait NetworkSource {
    /// The pod, or `None` when it does not exist. `uid` is the UID the runtime named, when it did: a cache holding
    /// a pod of that name with another UID asks the API server rather than answer from the cache.
    fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> impl Future<Output = Result<Option<PodView>, SourceError>>;
    /// What planning reads of the NAD: `None` when there is no such NAD.
    fn nad(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<NadView>, SourceError>>;
    /// A NAD that may well not exist: `clusterNetwork` and `defaultNetworks` name a NAD or, failing one, a conf file
    /// in `confDir`, and Multus configs often name a conf. A source whose watch cache has synced answers "absent"
    /// from it without asking the API server (bounded by the watch's lag); the default asks as [`Self::nad`] does.
    fn nad_or_conf(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<NadView>, SourceError>> {
        self.nad(namespace, name)
    }
    /// The device-network devices of a DRA driver's resource pool ([`plexus_api::devices::slice_devices`]): read only
    /// for pods whose containers use ResourceClaims and that have device networks.
    fn pool_devices(
        &self,
        driver: &str,
        pool: &str,
    ) -> impl Future<Output = Result<Vec<SliceDevice>, SourceError>>;
    /// Server-side applies a ResourceClaim's `status.devices` (KEP-4817 `networkData`; field manager `plexus`).
    fn publish_claim_status(
        &self,
        namespace: &str,
        name: &str,
        apply: &serde_json::Value,
    ) -> impl Future<Output = Result<(), SourceError>>;
    /// Writes the pod's network-status annotation (one request).
    fn publish_status(
        &self,
        pod: &PodView,
        status: &str,
    ) -> impl Future<Output = Result<(), SourceError>>;
    /// Records events on the pod.
    fn record_events(
        &self,
        pod: &PodView,
        events: &[PodEvent],
    ) -> impl Future<Output = Result<(), SourceError>>;
    /// Whether lookups gain from running concurrently (an HTTP/2 connection); otherwise they run one after another.
    fn concurrent(&self) -> bool {
        false
    }
}

/// How a request gets its [`NetworkSource`]: thin mode connects per request with the config's kubeconfig
/// ([`Connect`]); the node daemon of thick mode hands out its watch-backed cache instead.
pub trait SourceProvider {
    type Source: NetworkSource;
    /// Whether requests run in Kubernetes mode (pods and NADs from the API server) rather than static mode.
    fn kubernetes(&self, config: &Config) -> bool;
    /// The source of one request; called only when [`Self::kubernetes`] is true.
    fn source(&self, config: &Config) -> impl Future<Output = Result<Self::Source, SourceError>>;
}

/// Thin mode: a [`KubeSource`] per request, every call bounded by `apiTimeoutSeconds`; Kubernetes mode when the
/// config names a kubeconfig.
pub struct Connect;

impl SourceProvider for Connect {
    type Source = KubeSource;
    fn kubernetes(&self, config: &Config) -> bool {
        config.kubeconfig.is_some()
    }
    async fn source(&self, config: &Config) -> Result<KubeSource, SourceError> {
        let kubeconfig = config
            .kubeconfig
            .as_deref()
            .ok_or_else(|| SourceError::Kubeconfig {
                path: String::new(),
                msg: "the config names no kubeconfig".into(),
            })?;
        KubeSource::new(kubeconfig, config.api_timeout).await
    }
}

/// A source that knows no pods and no NADs: what is left when the API server can't be asked (a DEL whose record
/// is gone and whose API server is down). Networks resolve from the node only.
pub struct NodeOnly;

impl NetworkSource for NodeOnly {
    async fn pod(&self, _: &str, _: &str, _: Option<&str>) -> Result<Option<PodView>, SourceError> {
        Ok(None)
    }
    async fn nad(&self, _: &str, _: &str) -> Result<Option<NadView>, SourceError> {
        Ok(None)
    }
    async fn pool_devices(&self, _: &str, _: &str) -> Result<Vec<SliceDevice>, SourceError> {
        Ok(Vec::new())
    }
    async fn publish_claim_status(
        &self,
        _: &str,
        _: &str,
        _: &serde_json::Value,
    ) -> Result<(), SourceError> {
        Ok(())
    }
    async fn publish_status(&self, _: &PodView, _: &str) -> Result<(), SourceError> {
        Ok(())
    }
    async fn record_events(&self, _: &PodView, _: &[PodEvent]) -> Result<(), SourceError> {
        Ok(())
    }
}

/// The API server, asked directly, every call bounded by a timeout.
#[derive(Clone)]
pub struct KubeSource {
    client: kube::Client,
    timeout: Duration,
    /// Set once a response came over HTTP/2: requests then share one connection, so they may run concurrently.
    multiplexed: Arc<AtomicBool>,
}

impl KubeSource {
    pub async fn new(kubeconfig: &Path, timeout: Duration) -> Result<Self, SourceError> {
        let kc_err = |msg: String| SourceError::Kubeconfig {
            path: kubeconfig.display().to_string(),
            msg,
        };
        let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| kc_err(e.to_string()))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| kc_err(e.to_string()))?;
        // Names Plexus in the API server's audit log and metrics.
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("plexus/", env!("CARGO_PKG_VERSION"))),
        ));
        let multiplexed = Arc::new(AtomicBool::new(false));
        let client = http2_client(&config, timeout, multiplexed.clone())
            .map_err(|e| kc_err(e.to_string()))?;
        Ok(Self {
            client,
            timeout,
            multiplexed,
        })
    }

    /// How long each call may take (`apiTimeoutSeconds`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the connection to the API server speaks HTTP/2 (known after the first response).
    pub fn multiplexed(&self) -> bool {
        self.multiplexed.load(Ordering::Relaxed)
    }

    /// A source over a client built elsewhere (the node daemon's one kept-alive client); its calls run one after
    /// another.
    pub fn from_client(client: kube::Client, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            multiplexed: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn bounded<T>(
        &self,
        what: impl Fn() -> String,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, SourceError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(SourceError::Api {
                what: what(),
                source,
            }),
            Err(_) => Err(SourceError::Timeout {
                what: what(),
                seconds: self.timeout.as_secs_f64(),
            }),
        }
    }
}

/// kube's client over a connection that offers HTTP/2 by ALPN (and falls back to HTTP/1.1): kube's default stack
/// speaks HTTP/1.1 only, where concurrent requests each need a TLS connection of their own. The layers are kube's
/// own ([`layered_client`]); `multiplexed` is set when a response arrives over HTTP/2. The connect timeout is
/// `timeout`; every call is bounded by the caller.
pub fn http2_client(
    config: &kube::Config,
    timeout: Duration,
    multiplexed: Arc<AtomicBool>,
) -> Result<kube::Client, kube::Error> {
    let hyper: HyperClient<_, kube::client::Body> =
        HyperClient::builder(TokioExecutor::new()).build(api_connector(config, timeout, true)?);
    let service = tower::ServiceBuilder::new()
        .map_response(move |response: http::Response<hyper::body::Incoming>| {
            if response.version() == http::Version::HTTP_2 {
                multiplexed.store(true, Ordering::Relaxed);
            }
            response
        })
        .service(hyper);
    let auth = kube::client::ConfigExt::auth_layer(config)?;
    layered_client(config, auth.as_ref(), service)
}

/// The TLS (or plain TCP) connector to `config`'s API server, with its CA, client certificate and `tls-server-name`;
/// it offers HTTP/2 by ALPN when `http2`, HTTP/1.1 only otherwise. `timeout` bounds the TCP connect.
pub fn api_connector(
    config: &kube::Config,
    timeout: Duration,
    http2: bool,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, kube::Error> {
    use kube::client::ConfigExt;

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => {
            let name = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                kube::Error::Service(format!("tls-server-name {name:?}: {e}").into())
            })?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    Ok(if http2 {
        builder.enable_http1().enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    })
}

/// kube's client over `inner`, a service that sends a request to the API server: kube's own layers (base URI,
/// authentication, extra headers such as the user agent, retry of 429/503/504). `auth` is `config.auth_layer()`,
/// made once by the caller: clients layered with the same one share its token and its refresh (a token file read
/// again at least once a minute, an exec plugin run again when its token expires).
pub fn layered_client<S>(
    config: &kube::Config,
    auth: Option<&kube::client::middleware::AuthLayer>,
    inner: S,
) -> Result<kube::Client, kube::Error>
where
    S: tower::Service<
            http::Request<kube::client::Body>,
            Response = http::Response<hyper::body::Incoming>,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
{
    use kube::client::ConfigExt;
    use kube::client::retry::RetryPolicy;
    use tower::retry::RetryLayer;
    use tower::util::Either;
    use tower::{Layer, ServiceBuilder, ServiceExt};

    let headed = config
        .extra_headers_layer()?
        .layer(inner.map_err(Into::<tower::BoxError>::into));
    let authed = match auth {
        Some(auth) => Either::Left(auth.layer(headed)),
        None => Either::Right(headed),
    };
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .service(authed);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

impl NetworkSource for KubeSource {
    async fn pod(
        &self,
        namespace: &str,
        name: &str,
        _uid: Option<&str>,
    ) -> Result<Option<PodView>, SourceError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = self
            .bounded(|| format!("GET pod {namespace}/{name}"), api.get_opt(name))
            .await?;
        Ok(pod.map(|p| pod_view(&p.metadata)))
    }

    async fn nad(&self, namespace: &str, name: &str) -> Result<Option<NadView>, SourceError> {
        let api: Api<NetworkAttachmentDefinition> = Api::namespaced(self.client.clone(), namespace);
        let nad = self
            .bounded(
                || format!("GET network-attachment-definition {namespace}/{name}"),
                api.get_opt(name),
            )
            .await?;
        Ok(nad.as_ref().map(NadView::of))
    }

    /// One LIST of the driver's ResourceSlices (`fieldSelector=spec.driver=...`), the pool's kept.
    async fn pool_devices(
        &self,
        driver: &str,
        pool: &str,
    ) -> Result<Vec<SliceDevice>, SourceError> {
        let api: Api<ResourceSlice> = Api::all(self.client.clone());
        let params = kube::api::ListParams::default().fields(&format!("spec.driver={driver}"));
        let slices = self
            .bounded(
                || format!("LIST resourceslices of driver {driver}"),
                api.list(&params),
            )
            .await?;
        Ok(slices
            .items
            .iter()
            .filter(|s| s.spec.pool.name == pool)
            .flat_map(plexus_api::devices::slice_devices)
            .collect())
    }

    async fn publish_claim_status(
        &self,
        namespace: &str,
        name: &str,
        apply: &serde_json::Value,
    ) -> Result<(), SourceError> {
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams::apply("plexus");
        self.bounded(
            || format!("APPLY resourceclaim {namespace}/{name} status"),
            api.patch_status(name, &params, &Patch::Apply(apply)),
        )
        .await
        .map(drop)
    }

    async fn publish_status(&self, pod: &PodView, status: &str) -> Result<(), SourceError> {
        let patch = serde_json::json!({
            "metadata": {"annotations": {plexus_api::status::NETWORK_STATUS_ANNOTATION: status}}
        });
        // The answer (the whole pod) is not needed: its body is read but not parsed.
        let path = format!("/api/v1/namespaces/{}/pods", pod.namespace);
        let call = async {
            let request = kube::core::Request::new(path)
                .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
                .map_err(kube::Error::BuildRequest)?;
            self.client.request_text(request).await
        };
        self.bounded(
            || format!("PATCH pod {}/{} network-status", pod.namespace, pod.name),
            call,
        )
        .await?;
        Ok(())
    }

    async fn record_events(&self, pod: &PodView, events: &[PodEvent]) -> Result<(), SourceError> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        let now = k8s_openapi::jiff::Timestamp::now();
        let posts = events.iter().map(|e| {
            let event = Event {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{}.", pod.name)),
                    ..ObjectMeta::default()
                },
                involved_object: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    namespace: Some(pod.namespace.clone()),
                    name: Some(pod.name.clone()),
                    uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
                    ..ObjectReference::default()
                },
                reason: Some(e.reason.clone()),
                message: Some(e.message.clone()),
                type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
                reporting_component: Some("plexus".into()),
                reporting_instance: Some(hostname()),
                source: Some(k8s_openapi::api::core::v1::EventSource {
                    component: Some("plexus".into()),
                    host: Some(hostname()),
                }),
                first_timestamp: Some(Time(now)),
                last_timestamp: Some(Time(now)),
                event_time: Some(MicroTime(now)),
                action: Some("Attach".into()),
                count: Some(1),
                ..Event::default()
            };
            let api = api.clone();
            async move {
                self.bounded(
                    || {
                        format!(
                            "POST event {} on pod {}/{}",
                            e.reason, pod.namespace, pod.name
                        )
                    },
                    async move { api.create(&PostParams::default(), &event).await },
                )
                .await
            }
        });
        // Concurrently over HTTP/2; otherwise one after another on the one kept-alive connection (see `resolve`).
        if self.concurrent() {
            for posted in futures::future::join_all(posts).await {
                posted?;
            }
        } else {
            for post in posts {
                post.await?;
            }
        }
        Ok(())
    }

    fn concurrent(&self) -> bool {
        self.multiplexed()
    }
}

/// What planning needs of a pod: its metadata (a full object's, or a metadata-only watch's).
pub fn pod_view(meta: &ObjectMeta) -> PodView {
    PodView {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Reads the pod, retrying briefly while it does not exist yet (the runtime can be faster than the API cache),
/// then failing: never a silent "no networks".
pub async fn pod_with_retry<S: NetworkSource>(
    source: &S,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<PodView, PlexusError> {
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=5 {
        match source.pod(namespace, name, uid).await? {
            Some(pod) => {
                // A static pod's mirror has another UID than the runtime's: that is not a replaced pod.
                policy::check_pod_uid(&pod, uid)?;
                return Ok(pod);
            }
            None if attempt < 5 => {
                debug!(attempt, "pod not found yet; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            None => break,
        }
    }
    Err(PlexusError::PodNotFound {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Fetches every requested network's config, concurrently, and turns each into a delegate config list.
pub async fn resolve<S: NetworkSource>(
    source: &S,
    config: &Config,
    pod: &PodView,
    requests: &[NetworkRequest],
) -> Result<Vec<ResolvedNetwork>, PlexusError> {
    // A network selected twice (net-a,net-a) is fetched once.
    let mut distinct: Vec<&NetworkRef> = Vec::new();
    for r in requests {
        if !distinct.contains(&&r.reference) {
            distinct.push(&r.reference);
        }
    }
    // Over HTTP/2 (the API server offers it by ALPN) the lookups share one connection and run concurrently. Over
    // HTTP/1.1 they run one after another on the one kept-alive connection, since concurrent requests would each open
    // a TLS connection of their own: measured with scripts/bench (pod + 3 NADs + status + events on loopback, kube's
    // HTTP/1.1 client), a median ADD of 162 ms concurrent against 77 ms sequential.
    let fetched: Vec<(&NetworkRef, ResolvedNetwork)> = if source.concurrent() {
        let lookups = distinct.iter().map(|reference| async move {
            Ok::<_, PlexusError>((
                *reference,
                resolve_one(source, config, pod, reference).await?,
            ))
        });
        // The first failure in request order is the one reported, as in the sequential case.
        futures::future::join_all(lookups)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?
    } else {
        let mut fetched = Vec::with_capacity(distinct.len());
        for reference in distinct {
            fetched.push((
                reference,
                resolve_one(source, config, pod, reference).await?,
            ));
        }
        fetched
    };
    Ok(requests
        .iter()
        .filter_map(|r| {
            fetched
                .iter()
                .find(|(d, _)| **d == r.reference)
                .map(|(_, n)| n.clone())
        })
        .collect())
}

/// One network's config: a static delegate, a file, or a NAD (and, without its config, the conf of that name in
/// `confDir`).
pub async fn resolve_one<S: NetworkSource>(
    source: &S,
    config: &Config,
    pod: &PodView,
    reference: &NetworkRef,
) -> Result<ResolvedNetwork, PlexusError> {
    match reference {
        NetworkRef::Delegate(i) => {
            let list = config
                .delegates
                .get(*i)
                .cloned()
                .ok_or(PlexusError::Policy(PolicyError::NoDefaultNetwork))?;
            Ok(ResolvedNetwork {
                display: list.name.clone(),
                config: list,
                resource_name: None,
            })
        }
        NetworkRef::Path(path) => {
            let list = load_path(path)?;
            Ok(ResolvedNetwork {
                display: list.name.clone(),
                config: list,
                resource_name: None,
            })
        }
        NetworkRef::Nad { namespace, name } | NetworkRef::NadOrConf { namespace, name } => {
            let nad = read_nad(source, reference, namespace, name).await?;
            if nad.is_none() && matches!(reference, NetworkRef::Nad { .. }) {
                return Err(PolicyError::NoSuchNad {
                    pod: pod.label(),
                    network: format!("{namespace}/{name}"),
                }
                .into());
            }
            let label = format!("{namespace}/{name}");
            let resource_name = plexus_api::devices::resource_name(
                &label,
                nad.as_ref().and_then(|n| n.resource_name.as_deref()),
            )
            .map_err(PolicyError::from)?;
            if let Some(mut found) = policy::delegate_from_nad(
                &config.policy(),
                pod,
                namespace,
                name,
                nad.as_ref().and_then(|n| n.config.as_deref()),
            )? {
                found.resource_name = resource_name;
                return Ok(found);
            }
            // R7 steps 2–3: the on-disk network named after the NAD.
            let search = pick_on_disk_config(name, &read_conf_dir(&config.conf_dir)?);
            for skipped in &search.skipped {
                warn!(file = %skipped.file, reason = %skipped.reason, "confDir file skipped");
            }
            let mut found = policy::delegate_from_disk(
                pod,
                namespace,
                name,
                nad.is_some(),
                search,
                &config.conf_dir.display().to_string(),
            )?;
            found.resource_name = resource_name;
            Ok(found)
        }
    }
}

/// The NAD of a reference: a selected NAD (`Nad`) through [`NetworkSource::nad`], a name that may be a conf instead
/// (`NadOrConf`: `clusterNetwork`, `defaultNetworks`) through [`NetworkSource::nad_or_conf`].
async fn read_nad<S: NetworkSource>(
    source: &S,
    reference: &NetworkRef,
    namespace: &str,
    name: &str,
) -> Result<Option<NadView>, SourceError> {
    match reference {
        NetworkRef::NadOrConf { .. } => source.nad_or_conf(namespace, name).await,
        _ => source.nad(namespace, name).await,
    }
}

/// The configs of the networks Plexus attaches to a pod without being asked (C35: STATUS is passed on to each):
/// every static delegate, `clusterNetwork` (a path, or a NAD or conf name in `multusNamespace`) and
/// `defaultNetworks`, each once. NADs are read through `source` when there is one (Kubernetes mode); without one,
/// names are looked up in `confDir` only.
pub async fn default_network_configs<S: NetworkSource>(
    source: Option<&S>,
    config: &Config,
) -> Result<Vec<NetworkConfigList>, PlexusError> {
    let policy = config.policy();
    let mut refs: Vec<NetworkRef> = Vec::new();
    if policy.cluster_network.is_some() || policy.static_delegates > 0 {
        refs.push(policy::default_network(&policy)?);
    }
    refs.extend(policy::configured_default_networks(&policy));
    let mut configs = config.delegates.clone();
    for reference in refs {
        let list = match &reference {
            NetworkRef::Delegate(_) => continue,
            NetworkRef::Path(path) => load_path(path)?,
            NetworkRef::Nad { namespace, name } | NetworkRef::NadOrConf { namespace, name } => {
                let spec = match source {
                    Some(s) => read_nad(s, &reference, namespace, name).await?,
                    None => None,
                };
                let label = format!("{namespace}/{name}");
                let from_nad =
                    plexus_api::nad::nad_config(name, spec.and_then(|n| n.config).as_deref())
                        .map_err(|e| PlexusError::InvalidConfig(format!("network {label}: {e}")))?;
                match from_nad {
                    Some(value) => NetworkConfigList::from_value(value).map_err(|source| {
                        PlexusError::InvalidDelegate {
                            network: label,
                            source,
                        }
                    })?,
                    None => pick_on_disk_config(name, &read_conf_dir(&config.conf_dir)?)
                        .chosen
                        .map(|found| found.config)
                        .ok_or_else(|| {
                            PlexusError::InvalidConfig(format!(
                                "network {label}: no NetworkAttachmentDefinition config and no config named {name:?} in {}",
                                config.conf_dir.display()
                            ))
                        })?,
                }
            }
        };
        if !configs.iter().any(|c| c.name == list.name) {
            configs.push(list);
        }
    }
    Ok(configs)
}

/// The `*.conf`, `*.conflist` and `*.json` files of a directory, as (file name, content). A directory that can't
/// be listed is an error carrying the I/O error; unreadable files in it are left out (and logged).
pub fn read_conf_dir(dir: &Path) -> Result<Vec<(String, String)>, PlexusError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PlexusError::ConfDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ![".conf", ".conflist", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            continue;
        }
        match std::fs::read_to_string(entry.path()) {
            Ok(text) => files.push((name, text)),
            Err(e) => warn!(file = %name, error = %e, "cannot read confDir file"),
        }
    }
    files.sort();
    Ok(files)
}

/// A conf/conflist by path; a directory means the lexically first conf/conflist in it.
fn load_path(path: &Path) -> Result<NetworkConfigList, PlexusError> {
    let file: PathBuf = if path.is_dir() {
        read_conf_dir(path)?
            .first()
            .map(|(name, _)| path.join(name))
            .ok_or_else(|| PlexusError::ClusterNetwork {
                path: path.display().to_string(),
                msg: "no CNI config in it".into(),
            })?
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read(&file).map_err(|e| PlexusError::ClusterNetwork {
        path: file.display().to_string(),
        msg: e.to_string(),
    })?;
    NetworkConfigList::parse(&text).map_err(|e| PlexusError::InvalidDelegate {
        network: file.display().to_string(),
        source: e,
    })
}
