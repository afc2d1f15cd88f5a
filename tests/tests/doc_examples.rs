//! Every static-mode config of `docs/configuration.md` (a ```json block without `kubeconfig`), run as written
//! except for machine-local values (see `plexus_tests::doc_examples`): ADD, CHECK, DEL against the reference plugins,
//! and nothing left. The Kubernetes-mode blocks are run by `e2e/tests/doc_examples.rs`.

use plexus_tests::doc_examples::{Localiser, code_blocks, configuration_page};
use plexus_tests::*;
use serde_json::{Value, json};

#[test]
fn static_mode_examples_of_the_configuration_page_run() {
    let page = configuration_page();
    let configs: Vec<Value> = code_blocks(&page, "json")
        .iter()
        .map(|b| {
            serde_json::from_str(b)
                .unwrap_or_else(|e| panic!("a json block does not parse: {e}\n{b}"))
        })
        .filter(|c: &Value| c.get("kubeconfig").is_none())
        .collect();
    assert!(!configs.is_empty(), "no static-mode example on the page");
    for documented in configs {
        let data = tempfile::tempdir().unwrap();
        let cni_dir = tempfile::tempdir().unwrap();
        let mut local = Localiser::new(data.path(), cni_dir.path(), cni_dir.path(), None);
        let mut config = documented.clone();
        local.plexus_config(&mut config);
        // The runtime fills runtimeConfig for the capabilities the config declares.
        let port_mappings = documented["capabilities"]["portMappings"] == true;
        if port_mappings {
            config["runtimeConfig"] = json!({"portMappings": [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]});
        }
        let ns = Netns::new();
        let id = unique("cd");
        let path = ns.path();
        Call::new("ADD", &id, &path).ok(&config);
        let mut names = ns.link_names();
        names.sort();
        let delegates = documented["delegates"].as_array().unwrap().len();
        let expected: Vec<String> = (0..delegates)
            .map(|i| {
                if i == 0 {
                    "eth0".to_owned()
                } else {
                    format!("net{i}")
                }
            })
            .collect();
        assert_eq!(names, expected, "interfaces of {documented}");
        if port_mappings {
            assert!(
                !iptables_rules_mentioning(&id).is_empty(),
                "portmap made no rule"
            );
        }
        Call::new("CHECK", &id, &path).ok(&config);
        Call::new("DEL", &id, &path).ok(&config);
        let bridges: Vec<String> = local.links.iter().map(|l| l.name.clone()).collect();
        for bridge in &bridges {
            assert_eq!(bridge_ports(bridge), Vec::<String>::new());
        }
        assert_no_leftovers(ns, None, data.path(), cni_dir.path(), &id);
    }
}
