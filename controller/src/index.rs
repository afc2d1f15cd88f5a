//! Which pods request and which are attached to which NAD, kept up to date from the pod watch. NAD status counts
//! come from here, and so do the pods to tell when a NAD is deleted or changed under them.

use std::collections::{HashMap, HashSet};

use plexus_api::selection::{NETWORKS_ANNOTATION, parse_selections};
use plexus_api::status::{NETWORK_STATUS_ANNOTATION, parse_statuses};

/// `namespace`, `name` of a pod or a NAD.
pub type Key = (String, String);

/// What one pod asks for and has, by NAD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNetworks {
    pub requested: Vec<Key>,
    pub attached: Vec<Key>,
}

impl PodNetworks {
    /// From a pod's annotations. An annotation that does not parse counts as nothing (the pod's condition says why).
    pub fn of(namespace: &str, annotations: &std::collections::BTreeMap<String, String>) -> Self {
        let mut requested: Vec<Key> = annotations
            .get(NETWORKS_ANNOTATION)
            .and_then(|a| parse_selections(a, namespace).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.namespace, s.name))
            .collect();
        let mut attached: Vec<Key> = annotations
            .get(NETWORK_STATUS_ANNOTATION)
            .and_then(|a| parse_statuses(a).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|s| match s.name.split_once('/') {
                Some((ns, name)) => (ns.to_owned(), name.to_owned()),
                None => (namespace.to_owned(), s.name),
            })
            .collect();
        for list in [&mut requested, &mut attached] {
            list.sort();
            list.dedup();
        }
        Self {
            requested,
            attached,
        }
    }

    fn nads(&self) -> impl Iterator<Item = &Key> {
        self.requested.iter().chain(&self.attached)
    }
}

/// The index: per pod what it uses, and per NAD who uses it.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: HashMap<Key, PodNetworks>,
    attached: HashMap<Key, HashSet<Key>>,
    users: HashMap<Key, HashSet<Key>>,
    relisted: Option<HashSet<Key>>,
}

impl PodIndex {
    /// Records what `pod` uses now (`None`: the pod is gone). Returns the NADs whose counts or users changed.
    pub fn set(&mut self, pod: Key, now: Option<PodNetworks>) -> Vec<Key> {
        if let Some(seen) = self.relisted.as_mut() {
            seen.insert(pod.clone());
        }
        let before = match &now {
            Some(n) => self.pods.insert(pod.clone(), n.clone()),
            None => self.pods.remove(&pod),
        };
        if before == now {
            return Vec::new();
        }
        let mut touched: Vec<Key> = Vec::new();
        if let Some(b) = &before {
            for nad in &b.attached {
                remove(&mut self.attached, nad, &pod);
            }
            for nad in b.nads() {
                remove(&mut self.users, nad, &pod);
            }
            touched.extend(b.nads().cloned());
        }
        if let Some(n) = &now {
            for nad in &n.attached {
                self.attached
                    .entry(nad.clone())
                    .or_default()
                    .insert(pod.clone());
            }
            for nad in n.nads() {
                self.users
                    .entry(nad.clone())
                    .or_default()
                    .insert(pod.clone());
            }
            touched.extend(n.nads().cloned());
        }
        touched.sort();
        touched.dedup();
        touched
    }

    /// A full list follows: pods not seen again before [`PodIndex::end_relist`] are gone.
    pub fn begin_relist(&mut self) {
        self.relisted = Some(HashSet::new());
    }

    /// Drops pods the relist did not return; returns the NADs touched.
    pub fn end_relist(&mut self) -> Vec<Key> {
        let Some(seen) = self.relisted.take() else {
            return Vec::new();
        };
        let gone: Vec<Key> = self
            .pods
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        let mut touched = Vec::new();
        for pod in gone {
            touched.extend(self.set(pod, None));
        }
        touched
    }

    /// How many pods' network-status lists the NAD.
    pub fn attached_count(&self, nad: &Key) -> usize {
        self.attached.get(nad).map_or(0, HashSet::len)
    }

    /// Pods that request or are attached to the NAD, sorted.
    pub fn users(&self, nad: &Key) -> Vec<Key> {
        let mut users: Vec<Key> = self.users.get(nad).into_iter().flatten().cloned().collect();
        users.sort();
        users
    }
}

fn remove(map: &mut HashMap<Key, HashSet<Key>>, nad: &Key, pod: &Key) {
    if let Some(set) = map.get_mut(nad) {
        set.remove(pod);
        if set.is_empty() {
            map.remove(nad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> Key {
        (ns.into(), name.into())
    }

    fn pod(networks: &str, status: Option<&str>) -> PodNetworks {
        let mut a = std::collections::BTreeMap::new();
        a.insert(NETWORKS_ANNOTATION.to_owned(), networks.to_owned());
        if let Some(s) = status {
            a.insert(NETWORK_STATUS_ANNOTATION.to_owned(), s.to_owned());
        }
        PodNetworks::of("ns", &a)
    }

    #[test]
    fn counts_follow_pods_coming_changing_and_going() {
        let mut index = PodIndex::default();
        let a = key("ns", "a");
        let b = key("other", "b");
        let touched = index.set(key("ns", "p1"), Some(pod("a, other/b", None)));
        assert_eq!(touched, [a.clone(), b.clone()]);
        assert_eq!(index.attached_count(&a), 0);
        assert_eq!(index.users(&b), [key("ns", "p1")]);

        let status = r#"[{"name":"pod-net","default":true},{"name":"ns/a","interface":"net1"}]"#;
        index.set(key("ns", "p1"), Some(pod("a, other/b", Some(status))));
        index.set(key("ns", "p2"), Some(pod("a", Some(status))));
        assert_eq!(index.attached_count(&a), 2);
        assert_eq!(index.attached_count(&key("ns", "pod-net")), 2);
        assert_eq!(
            index.set(key("ns", "p2"), Some(pod("a", Some(status)))),
            Vec::<Key>::new()
        );

        index.set(key("ns", "p2"), None);
        assert_eq!(index.attached_count(&a), 1);
        index.begin_relist();
        index.set(key("ns", "p3"), Some(pod("a", None)));
        let touched = index.end_relist();
        assert!(touched.contains(&a) && touched.contains(&b), "{touched:?}");
        assert_eq!(index.attached_count(&a), 0);
        assert_eq!(index.users(&a), [key("ns", "p3")]);
        assert!(index.users(&b).is_empty());
    }
}
