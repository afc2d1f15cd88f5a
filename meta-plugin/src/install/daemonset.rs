//! The installer's DaemonSet, read with the pod's own service account: whether it is gone (uninstall), and the owner
//! of the node's status Lease.

use std::time::Duration;

/// The DaemonSet `namespace/name` (`None`: not found), read with the pod's own service account within 10 s.
pub(super) async fn read(
    client: &kube::Client,
    reference: &str,
) -> Result<Option<k8s_openapi::api::apps::v1::DaemonSet>, String> {
    let (namespace, name) = reference
        .split_once('/')
        .ok_or_else(|| format!("the DaemonSet {reference:?} is not namespace/name"))?;
    let api: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
        kube::Api::namespaced(client.clone(), namespace);
    match tokio::time::timeout(Duration::from_secs(10), api.get_opt(name)).await {
        Ok(Ok(ds)) => Ok(ds),
        // The release's RBAC or service account already went with it.
        Ok(Err(kube::Error::Api(status))) if matches!(status.code, 401 | 403 | 404) => Ok(None),
        Ok(Err(e)) => Err(format!("reading the DaemonSet {reference}: {e}")),
        Err(_) => Err(format!(
            "no answer about the DaemonSet {reference} within 10s"
        )),
    }
}
