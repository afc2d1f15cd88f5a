//! The scale run: 1,000 NADs and 10,000 pods in the API server, each daemon's RSS and cache-sync time.

use super::*;

/// 1,000 NADs and 10,000 pods (100 node names, the daemons' node among them) created in the API server; then each
/// running daemon's RSS, and each daemon restarted: time until ready (caches synced) and RSS then.
pub(crate) fn scale_run(
    cluster: &PrivateCluster,
    daemons: &mut BTreeMap<&'static str, Daemon>,
    start_daemons: impl Fn(&mut BTreeMap<&'static str, Daemon>),
) -> Value {
    const NADS: usize = 1000;
    const PODS: usize = 10_000;
    const NODES: usize = 100;
    let ns = "scale";
    // The controller would reconcile every pod meanwhile; its webhook is off for this namespace.
    cluster.kubectl(&["create", "namespace", ns], "");
    cluster.kubectl(&["label", "namespace", ns, "plexus/admission=off"], "");
    let kubeconfig = cluster.kubeconfig.clone();
    let started = Instant::now();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            use futures::StreamExt;
            use k8s_openapi::api::core::v1::Pod;
            use kube::api::{Api, DynamicObject, PostParams};
            use kube::core::{ApiResource, GroupVersionKind};
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .unwrap();
            let client = kube::Client::try_from(config).unwrap();
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
                "network-attachment-definitions",
            );
            let nads: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
            futures::stream::iter(0..NADS)
                .for_each_concurrent(16, |i| {
                    let nads = nads.clone();
                    async move {
                        let config = json!({"cniVersion": "1.0.0", "name": format!("net-{i}"), "type": "macvlan",
                            "master": "eth1", "ipam": {"type": "host-local", "subnet": "198.19.0.0/24"}});
                        let object: DynamicObject =
                            serde_json::from_value(nad(ns, &format!("net-{i}"), &config)).unwrap();
                        nads.create(&PostParams::default(), &object).await.unwrap();
                    }
                })
                .await;
            let pods: Api<Pod> = Api::namespaced(client, ns);
            futures::stream::iter(0..PODS)
                .for_each_concurrent(16, |i| {
                    let pods = pods.clone();
                    async move {
                        let node = if i % NODES == 0 {
                            NODE.to_owned()
                        } else {
                            format!("scale-node-{}", i % NODES)
                        };
                        let mut object = bench_pod(ns, &format!("pod-{i}"), &node);
                        object["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] =
                            json!(format!("net-{}", i % NADS));
                        let object: Pod = serde_json::from_value(object).unwrap();
                        pods.create(&PostParams::default(), &object).await.unwrap();
                    }
                })
                .await;
        });
    let created = started.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    println!(
        "\nScale: {NADS} NADs and {PODS} pods over {NODES} node names created in {:.0} s ({} pods on {NODE})\n",
        created.as_secs_f64(),
        PODS / NODES
    );
    let mut rows = serde_json::Map::new();
    for (mode, d) in daemons.iter() {
        let (rss, hwm) = (d.rss_mib("VmRSS"), d.rss_mib("VmHWM"));
        println!(
            "{:<14} running through the creates: RSS {rss:.1} MiB (peak {hwm:.1} MiB)",
            d.name
        );
        rows.insert(
            (*mode).into(),
            json!({"running_rss_mib": rss, "running_peak_rss_mib": hwm}),
        );
    }
    daemons.clear();
    start_daemons(daemons);
    // Every restarted daemon is watched at once: each one's time is from its own start to the first poll that sees
    // it ready (one after the other, a daemon's wait would include the previous one's).
    let mut synced_at: BTreeMap<&'static str, Duration> = BTreeMap::new();
    while synced_at.len() < daemons.len() {
        for (mode, d) in daemons.iter_mut() {
            if !synced_at.contains_key(mode) && d.poll_ready(Duration::from_secs(300)) {
                synced_at.insert(*mode, d.started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(3));
    for (mode, d) in daemons.iter_mut() {
        let synced = synced_at[mode];
        let (rss, hwm) = (d.rss_mib("VmRSS"), d.rss_mib("VmHWM"));
        println!(
            "{:<14} restarted: ready (caches synced) {:.2} s after its start; RSS {rss:.1} MiB (peak {hwm:.1} MiB)",
            d.name,
            synced.as_secs_f64()
        );
        let row = rows.get_mut(*mode).unwrap();
        row["restart_sync_s"] = json!(synced.as_secs_f64());
        row["restart_rss_mib"] = json!(rss);
        row["restart_peak_rss_mib"] = json!(hwm);
    }
    json!({"nads": NADS, "pods": PODS, "nodes": NODES, "create_s": created.as_secs_f64(), "daemons": rows})
}
