//! The examples of `docs/configuration.md`, made runnable on this machine.
//!
//! A test takes every fenced block of the page and runs it. Only what is local to a machine changes: `binDir`
//! (the pinned reference plugins), `cniDir`, `confDir`, `kubeconfig`, host-local's `dataDir` (the test's lease store),
//! bridge names and subnets (unique per test, from 198.18.0.0/15).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::{HostLink, plugins_dir, subnet, unique};

/// The page with the examples.
pub fn configuration_page() -> String {
    let path = crate::repo().join("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced code blocks of `markdown` whose info string is `lang`, in order.
pub fn code_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(info)) if info.trim() == lang => current = Some(String::new()),
            (Some(block), Some(_)) => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), None) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Rewrites the machine-local values of documented configs, the same way for every config of one test (a subnet or
/// a bridge named twice gets the same replacement).
pub struct Localiser {
    pub data: PathBuf,
    pub cni_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    subnets: HashMap<String, String>,
    bridges: HashMap<String, String>,
    /// The bridges the plugins will create, deleted on drop.
    pub links: Vec<HostLink>,
}

impl Localiser {
    pub fn new(data: &Path, cni_dir: &Path, conf_dir: &Path, kubeconfig: Option<PathBuf>) -> Self {
        Self {
            data: data.to_path_buf(),
            cni_dir: cni_dir.to_path_buf(),
            conf_dir: conf_dir.to_path_buf(),
            kubeconfig,
            subnets: HashMap::new(),
            bridges: HashMap::new(),
            links: Vec::new(),
        }
    }

    /// A Plexus config from the page.
    pub fn plexus_config(&mut self, config: &mut Value) {
        let obj = config.as_object_mut().expect("a config is an object");
        // Always: without them the machine's /opt/cni/bin and /var/lib/cni/plexus would be used.
        obj.insert("binDir".into(), json!(plugins_dir()));
        obj.insert("cniDir".into(), json!(self.cni_dir));
        if obj.contains_key("confDir") {
            obj.insert("confDir".into(), json!(self.conf_dir));
        }
        if obj.contains_key("kubeconfig") {
            let kubeconfig = self
                .kubeconfig
                .as_ref()
                .expect("a kubeconfig for this test");
            obj.insert("kubeconfig".into(), json!(kubeconfig));
        }
        self.delegate(config);
    }

    /// A delegate config (or any JSON holding some): host-local, bridge and subnet values.
    pub fn delegate(&mut self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                let kind = map
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if kind == "host-local" {
                    map.insert("dataDir".into(), json!(self.data));
                }
                if kind == "bridge"
                    && let Some(Value::String(name)) = map.get_mut("bridge")
                {
                    let links = &mut self.links;
                    *name = self
                        .bridges
                        .entry(name.clone())
                        .or_insert_with(|| {
                            let local = unique("plxd");
                            links.push(HostLink::adopt(&local));
                            local
                        })
                        .clone();
                }
                if let Some(Value::String(s)) = map.get_mut("subnet") {
                    *s = self
                        .subnets
                        .entry(s.clone())
                        .or_insert_with(|| subnet().0)
                        .clone();
                }
                for v in map.values_mut() {
                    self.delegate(v);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.delegate(v)),
            _ => {}
        }
    }

    /// A NAD's `spec.config` string.
    pub fn nad_config(&mut self, text: &str) -> String {
        let mut config: Value =
            serde_json::from_str(text).expect("a documented NAD config is JSON");
        self.delegate(&mut config);
        config.to_string()
    }
}
