//! The Kubernetes-mode examples of `docs/configuration.md`: every ```json block with a `kubeconfig` is run with every
//! pod of the ```yaml blocks, after their NADs are applied, against the real kube-apiserver. Only machine-local
//! values change (see `plexus_tests::doc_examples`). Each pod gets the interfaces its annotation asks for, a
//! network-status naming them, and nothing is left after DEL. In thin and in thick mode.

#![forbid(unsafe_code)]

use plexus_api::selection::parse_selections;
use plexus_e2e::thick::Mode;
use plexus_e2e::*;
use plexus_tests::doc_examples::{Localiser, code_blocks, configuration_page};
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// The objects of the page's YAML blocks, as JSON (kubectl converts them).
fn documented_objects(page: &str) -> Vec<Value> {
    code_blocks(page, "yaml")
        .iter()
        .flat_map(|yaml| {
            // One JSON document per object, one after another.
            let text = kubectl(
                &["create", "--dry-run=client", "-o", "json", "-f", "-"],
                Some(yaml),
            );
            serde_json::Deserializer::from_str(&text)
                .into_iter::<Value>()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn kubernetes_mode_examples_of_the_configuration_page_run(mode: &Mode) {
    let page = configuration_page();
    let configs: Vec<Value> = code_blocks(&page, "json")
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .filter(|c: &Value| c.get("kubeconfig").is_some())
        .collect();
    let objects = documented_objects(&page);
    let pods: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Pod").collect();
    assert!(
        !configs.is_empty() && !pods.is_empty(),
        "no Kubernetes-mode example on the page"
    );

    for documented in &configs {
        let ns = KubeNamespace::new("docs");
        let data = tempfile::tempdir().unwrap();
        let cni_dir = tempfile::tempdir().unwrap();
        let mut local = Localiser::new(
            data.path(),
            cni_dir.path(),
            cni_dir.path(),
            Some(kubeconfig()),
        );
        let mut config = documented.clone();
        local.plexus_config(&mut config);
        if let Some(daemon) = mode.daemon() {
            config = daemon.shim_config(&config);
        }
        // namespaceIsolation in the example: the test's namespace stands in for the pod's.
        for object in objects
            .iter()
            .filter(|o| o["kind"] == "NetworkAttachmentDefinition")
        {
            let mut nad = object.clone();
            nad["metadata"]["namespace"] = json!(ns.name);
            let text = nad["spec"]["config"].as_str().unwrap().to_owned();
            nad["spec"]["config"] = json!(local.nad_config(&text));
            kubectl(&["apply", "-f", "-"], Some(&nad.to_string()));
        }
        for documented_pod in &pods {
            let mut pod = (*documented_pod).clone();
            pod["metadata"]["namespace"] = json!(ns.name);
            if let Some(daemon) = mode.daemon() {
                pod["spec"]["nodeName"] = json!(daemon.node.name);
            }
            let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
            kubectl(&["apply", "-f", "-"], Some(&pod.to_string()));
            let uid = kubectl(
                &[
                    "get",
                    "pod",
                    "-n",
                    &ns.name,
                    &name,
                    "-o",
                    "jsonpath={.metadata.uid}",
                ],
                None,
            );
            let annotation = pod["metadata"]["annotations"][NETWORKS].as_str().unwrap();
            let selections = parse_selections(annotation, &ns.name).unwrap();
            let mut expected: Vec<String> = vec!["eth0".into()];
            expected.extend(selections.iter().enumerate().map(|(i, s)| {
                s.interface
                    .clone()
                    .unwrap_or_else(|| format!("net{}", i + 1))
            }));

            let netns = Netns::new();
            let id = unique("cd");
            let path = netns.path();
            let mut call = Call::new("ADD", &id, &path);
            let args = pod_args(&ns.name, &name, &uid, &id);
            call.args = &args;
            call.ok(&config);
            let mut names = netns.link_names();
            names.sort();
            let mut sorted = expected.clone();
            sorted.sort();
            assert_eq!(names, sorted, "interfaces of pod {name}");
            for s in &selections {
                if let Some(mac) = &s.mac {
                    let ifname = s.interface.as_deref().unwrap();
                    assert_eq!(netns.link(ifname).unwrap()["address"], json!(mac), "{name}");
                }
            }
            let status: Vec<String> = network_status(&ns.name, &name)
                .iter()
                .map(|e| e["interface"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(status, expected, "network-status of pod {name}");

            let mut check = call.clone();
            check.command = "CHECK";
            check.ok(&config);
            let mut del = call.clone();
            del.command = "DEL";
            del.ok(&config);
            let bridges: Vec<String> = local.links.iter().map(|l| l.name.clone()).collect();
            for bridge in &bridges {
                assert_eq!(bridge_ports(bridge), Vec::<String>::new());
            }
            assert_no_leftovers(netns, None, data.path(), cni_dir.path(), &id);
        }
    }
}

plexus_e2e::in_both_modes!(kubernetes_mode_examples_of_the_configuration_page_run);
