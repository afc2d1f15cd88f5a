//! Hot-plug: which of a running pod's attachments its edited networks annotation keeps, removes and adds, and the
//! interface name each added one gets. Pure; the node daemon runs the result (`plexus_cni::hotplug`).
//!
//! An attachment's identity is its network (`namespace/name`) and its interface. A selection that names its
//! interface is that attachment; one that does not takes a present attachment of its network that no other selection
//! claimed, in order, or else the lowest free `netN`. Present interfaces are never renamed. The networks that do not
//! come from the annotation (the default network, `defaultNetworks`) are never touched.

use std::collections::BTreeSet;

use crate::policy::NetworkRequest;

/// One attachment the sandbox has, from the annotation's part of its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present<'a> {
    /// `namespace/name` for a NAD.
    pub network: &'a str,
    pub ifname: &'a str,
}

/// What a change of the annotation does to a sandbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// Indexes into the present attachments that stay.
    pub keep: Vec<usize>,
    /// Indexes into the present attachments that go (detached in reverse order).
    pub remove: Vec<usize>,
    /// The selections to attach, in annotation order, each with its interface set.
    pub add: Vec<NetworkRequest>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// The change that takes a sandbox from `present` to `wanted` (the annotation's requests, without the default
/// network and `defaultNetworks`).
pub fn change(wanted: &[NetworkRequest], present: &[Present<'_>]) -> Change {
    let mut claimed = vec![false; present.len()];
    let mut matched: Vec<Option<usize>> = vec![None; wanted.len()];
    // Named selections first: a named one is exactly the attachment with that network and interface.
    for (w, request) in wanted.iter().enumerate() {
        let Some(ifname) = requested_interface(request) else {
            continue;
        };
        let network = request.reference.label();
        if let Some(p) = (0..present.len())
            .find(|&p| !claimed[p] && present[p].network == network && present[p].ifname == ifname)
        {
            claimed[p] = true;
            matched[w] = Some(p);
        }
    }
    // Then the unnamed ones take an unclaimed attachment of their network, in order.
    for (w, request) in wanted.iter().enumerate() {
        if requested_interface(request).is_some() {
            continue;
        }
        let network = request.reference.label();
        if let Some(p) = (0..present.len()).find(|&p| !claimed[p] && present[p].network == network)
        {
            claimed[p] = true;
            matched[w] = Some(p);
        }
    }
    let keep: Vec<usize> = (0..present.len()).filter(|&p| claimed[p]).collect();
    let remove: Vec<usize> = (0..present.len()).filter(|&p| !claimed[p]).collect();
    // Names an added unnamed selection may not take: the kept interfaces and every named selection's.
    let mut taken: BTreeSet<String> = keep.iter().map(|&p| present[p].ifname.to_owned()).collect();
    taken.extend(
        wanted
            .iter()
            .filter_map(|r| requested_interface(r).map(str::to_owned)),
    );
    let mut add = Vec::new();
    for (w, request) in wanted.iter().enumerate() {
        if matched[w].is_some() {
            continue;
        }
        let mut request = request.clone();
        if requested_interface(&request).is_none() {
            let free = (1..)
                .map(|n| format!("net{n}"))
                .find(|name| !taken.contains(name))
                .unwrap_or_default();
            taken.insert(free.clone());
            if let Some(sel) = request.selection.as_mut() {
                sel.interface = Some(free);
            }
        }
        add.push(request);
    }
    Change { keep, remove, add }
}

fn requested_interface(request: &NetworkRequest) -> Option<&str> {
    request
        .selection
        .as_ref()
        .and_then(|s| s.interface.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NetworkRef;
    use crate::selection::NetworkSelection;

    fn want(name: &str, interface: Option<&str>) -> NetworkRequest {
        NetworkRequest {
            reference: NetworkRef::Nad {
                namespace: "ns".into(),
                name: name.into(),
            },
            selection: Some(NetworkSelection {
                name: name.into(),
                namespace: "ns".into(),
                interface: interface.map(str::to_owned),
                ..NetworkSelection::default()
            }),
        }
    }

    fn present<'a>(list: &'a [(&'a str, &'a str)]) -> Vec<Present<'a>> {
        list.iter()
            .map(|(network, ifname)| Present { network, ifname })
            .collect()
    }

    fn added(change: &Change) -> Vec<(String, String)> {
        change
            .add
            .iter()
            .map(|r| {
                (
                    r.reference.label(),
                    r.selection.as_ref().unwrap().interface.clone().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn an_unchanged_annotation_changes_nothing() {
        let have = [("ns/a", "net1"), ("ns/b", "mine")];
        let c = change(&[want("a", None), want("b", Some("mine"))], &present(&have));
        assert!(c.is_empty());
        assert_eq!(c.keep, [0, 1]);
    }

    #[test]
    fn a_removed_selection_goes_and_the_others_keep_their_names() {
        // net1 goes; b stays net2 (a fresh ADD would have named it net1).
        let have = [("ns/a", "net1"), ("ns/b", "net2")];
        let c = change(&[want("b", None)], &present(&have));
        assert_eq!(c.remove, [0]);
        assert_eq!(c.keep, [1]);
        assert!(c.add.is_empty());
    }

    #[test]
    fn an_added_selection_takes_the_lowest_free_name() {
        let have = [("ns/b", "net2")];
        let c = change(
            &[want("b", None), want("c", None), want("d", None)],
            &present(&have),
        );
        assert_eq!(
            added(&c),
            [
                ("ns/c".into(), "net1".into()),
                ("ns/d".into(), "net3".into())
            ]
        );
    }

    #[test]
    fn a_named_selection_is_its_own_identity() {
        // Renaming a's interface is a removal and an addition, never a rename in place.
        let have = [("ns/a", "net1")];
        let c = change(&[want("a", Some("fast0"))], &present(&have));
        assert_eq!(c.remove, [0]);
        assert_eq!(added(&c), [("ns/a".into(), "fast0".into())]);
        // An unnamed selection does not take a name a named one asks for.
        let c = change(&[want("c", None), want("d", Some("net1"))], &[]);
        assert_eq!(
            added(&c),
            [
                ("ns/c".into(), "net2".into()),
                ("ns/d".into(), "net1".into())
            ]
        );
    }

    #[test]
    fn the_same_network_twice_matches_each_attachment_once() {
        let have = [("ns/a", "net1"), ("ns/a", "net2")];
        let c = change(&[want("a", None)], &present(&have));
        assert_eq!((c.keep, c.remove), (vec![0], vec![1]));
        let c = change(
            &[want("a", None), want("a", None), want("a", None)],
            &present(&have),
        );
        assert_eq!(added(&c), [("ns/a".into(), "net3".into())]);
    }

    #[test]
    fn a_pod_without_networks_gets_net1_and_loses_everything_when_emptied() {
        let c = change(&[want("a", None)], &[]);
        assert_eq!(added(&c), [("ns/a".into(), "net1".into())]);
        let have = [("ns/a", "net1"), ("ns/b", "x")];
        let c = change(&[], &present(&have));
        assert_eq!(c.remove, [0, 1]);
    }
}
