//! Route work inside a pod's network namespace, over rtnetlink.
//!
//! `setns` changes the namespace of the calling thread only, so every call runs on a short-lived thread of its own
//! that enters the pod's namespace; the caller's thread never moves.

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sched::{CloneFlags, setns};

/// A failure inside the pod's namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot enter network namespace {path}: {msg}")]
    Enter { path: String, msg: String },
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("{what}: the kernel said {errno}")]
    Kernel { what: String, errno: std::io::Error },
    #[error("interface {0:?} is not in the pod's namespace")]
    NoSuchInterface(String),
    #[error("default-route lists two gateways of one address family ({0} and {1})")]
    TwoGatewaysOneFamily(IpAddr, IpAddr),
}

/// A default route as found or installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub ifname: String,
    pub gateway: Option<IpAddr>,
}

/// What [`set_default_route`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteChange {
    pub removed: Vec<DefaultRoute>,
    pub installed: Vec<DefaultRoute>,
}

/// Multi-network `default-route` (R33): makes `ifname` carry the pod's default route. For each address family with a
/// gateway in `gateways`, every default route of that family (main table) on another interface is deleted and the
/// route via the gateway is installed on `ifname`. With no gateways, the default routes of both families on other
/// interfaces are deleted and `ifname` keeps what it has. One gateway per family at most.
pub fn set_default_route(
    netns: &Path,
    ifname: &str,
    gateways: &[IpAddr],
) -> Result<RouteChange, NetnsError> {
    let mut seen: [Option<IpAddr>; 2] = [None, None];
    for gw in gateways {
        let slot = &mut seen[usize::from(gw.is_ipv6())];
        if let Some(first) = slot {
            return Err(NetnsError::TwoGatewaysOneFamily(*first, *gw));
        }
        *slot = Some(*gw);
    }
    let (ifname, gateways) = (ifname.to_owned(), gateways.to_vec());
    in_netns(netns, move |nl| {
        let links = nl.links()?;
        let index = links
            .iter()
            .find(|(_, name)| *name == ifname)
            .map(|(i, _)| *i)
            .ok_or_else(|| NetnsError::NoSuchInterface(ifname.clone()))?;
        let name_of = |i: u32| {
            links
                .iter()
                .find(|(idx, _)| *idx == i)
                .map(|(_, n)| n.clone())
                .unwrap_or_default()
        };
        let families: Vec<bool> = if gateways.is_empty() {
            vec![false, true]
        } else {
            gateways.iter().map(IpAddr::is_ipv6).collect()
        };
        let mut change = RouteChange::default();
        for route in nl.default_routes()? {
            let (v6, oif, gw) = route_facts(&route);
            if families.contains(&v6) && oif != Some(index) {
                nl.request(
                    RouteNetlinkMessage::DelRoute(route.clone()),
                    0,
                    "delete a default route",
                )?;
                change.removed.push(DefaultRoute {
                    ifname: oif.map(name_of).unwrap_or_default(),
                    gateway: gw,
                });
            }
        }
        for gw in &gateways {
            let mut header = RouteHeader {
                address_family: if gw.is_ipv6() {
                    AddressFamily::Inet6
                } else {
                    AddressFamily::Inet
                },
                table: RouteHeader::RT_TABLE_MAIN,
                protocol: RouteProtocol::Boot,
                scope: RouteScope::Universe,
                kind: RouteType::Unicast,
                ..RouteHeader::default()
            };
            header.destination_prefix_length = 0;
            let mut message = RouteMessage::default();
            message.header = header;
            message.attributes = vec![
                RouteAttribute::Gateway(RouteAddress::from(*gw)),
                RouteAttribute::Oif(index),
            ];
            nl.request(
                RouteNetlinkMessage::NewRoute(message),
                NLM_F_CREATE | NLM_F_REPLACE,
                &format!("install the default route via {gw} on {ifname}"),
            )?;
            change.installed.push(DefaultRoute {
                ifname: ifname.clone(),
                gateway: Some(*gw),
            });
        }
        Ok(change)
    })
}

/// The default routes (main table, both families) in the namespace.
pub fn default_routes(netns: &Path) -> Result<Vec<DefaultRoute>, NetnsError> {
    in_netns(netns, |nl| {
        let links = nl.links()?;
        Ok(nl
            .default_routes()?
            .iter()
            .map(|r| {
                let (_, oif, gateway) = route_facts(r);
                let ifname = oif
                    .and_then(|i| links.iter().find(|(idx, _)| *idx == i))
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default();
                DefaultRoute { ifname, gateway }
            })
            .collect())
    })
}

/// (is IPv6, output interface index, gateway) of a route.
fn route_facts(route: &RouteMessage) -> (bool, Option<u32>, Option<IpAddr>) {
    let v6 = route.header.address_family == AddressFamily::Inet6;
    let mut oif = None;
    let mut gw = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gw = Some(IpAddr::V6(*a)),
            _ => {}
        }
    }
    (v6, oif, gw)
}

/// Runs `work` on a new thread that has entered the namespace at `netns`, with an rtnetlink socket opened there.
fn in_netns<T: Send + 'static>(
    netns: &Path,
    work: impl FnOnce(&mut Rtnl) -> Result<T, NetnsError> + Send + 'static,
) -> Result<T, NetnsError> {
    let path: PathBuf = netns.to_path_buf();
    std::thread::spawn(move || {
        let enter = |msg: String| NetnsError::Enter {
            path: path.display().to_string(),
            msg,
        };
        let file = File::open(&path).map_err(|e| enter(e.to_string()))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| enter(e.to_string()))?;
        let mut nl = Rtnl::open()?;
        work(&mut nl)
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetnsError::Netlink(
            "the namespace worker thread panicked".into(),
        ))
    })
}

/// A blocking rtnetlink socket.
struct Rtnl {
    socket: Socket,
    sequence: u32,
}

impl Rtnl {
    fn open() -> Result<Self, NetnsError> {
        let io = |e: std::io::Error| NetnsError::Netlink(e.to_string());
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Sends one message and collects the replies until the ACK, the end of a dump, or an error.
    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetnsError> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| NetnsError::Netlink(format!("{what}: send: {e}")))?;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| NetnsError::Netlink(format!("{what}: receive: {e}")))?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| NetnsError::Netlink(format!("{what}: {e}")))?;
                let length = reply.header.length as usize;
                if reply.header.sequence_number == self.sequence {
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(replies),
                                Some(code) => Err(NetnsError::Kernel {
                                    what: what.to_owned(),
                                    errno: std::io::Error::from_raw_os_error(-code.get()),
                                }),
                            };
                        }
                        NetlinkPayload::InnerMessage(m) => replies.push(m),
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset += (length + 3) & !3;
            }
        }
    }

    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(), NetnsError> {
        self.exchange(message, NLM_F_ACK | flags, what).map(|_| ())
    }

    /// (index, name) of every link.
    fn links(&mut self) -> Result<Vec<(u32, String)>, NetnsError> {
        let replies = self.exchange(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            "list links",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => {
                    let name = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })?;
                    Some((link.header.index, name))
                }
                _ => None,
            })
            .collect())
    }

    /// Default routes of the main table, both families.
    fn default_routes(&mut self) -> Result<Vec<RouteMessage>, NetnsError> {
        let mut found = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let replies = self.exchange(
                RouteNetlinkMessage::GetRoute(query),
                NLM_F_DUMP,
                "list routes",
            )?;
            found.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.destination_prefix_length == 0
                        && r.header.kind == RouteType::Unicast
                        && route_table(&r) == u32::from(RouteHeader::RT_TABLE_MAIN) =>
                {
                    Some(r)
                }
                _ => None,
            }));
        }
        Ok(found)
    }
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    struct Ns(String);
    impl Ns {
        fn new(tag: &str) -> Self {
            let name = format!("plxnl{tag}{}", std::process::id() % 100_000);
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(std::process::Stdio::null())
                .status();
            sh(&["ip", "netns", "add", &name]);
            Self(name)
        }
        fn path(&self) -> PathBuf {
            PathBuf::from(format!("/run/netns/{}", self.0))
        }
        fn ip(&self, args: &[&str]) -> String {
            let mut all = vec!["ip", "-n", &self.0];
            all.extend_from_slice(args);
            sh(&all)
        }
    }
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    fn sh(args: &[&str]) -> String {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A namespace with eth0 (198.18.201.2/24, default via .1; fd00:201::2/64, default via fd00:201::1) and net1
    /// (198.18.202.2/24; fd00:202::2/64): two veth pairs whose peers stay in a second namespace.
    fn two_interfaces(tag: &str) -> (Ns, Ns) {
        let pod = Ns::new(tag);
        let peer = Ns::new(&format!("{tag}p"));
        for (ifname, v4, v6) in [
            ("eth0", "198.18.201.2/24", "fd00:201::2/64"),
            ("net1", "198.18.202.2/24", "fd00:202::2/64"),
        ] {
            pod.ip(&[
                "link",
                "add",
                ifname,
                "type",
                "veth",
                "peer",
                "name",
                &format!("p{ifname}"),
                "netns",
                &peer.0,
            ]);
            pod.ip(&["addr", "add", v4, "dev", ifname]);
            pod.ip(&["addr", "add", v6, "dev", ifname, "nodad"]);
            pod.ip(&["link", "set", ifname, "up"]);
            peer.ip(&["link", "set", &format!("p{ifname}"), "up"]);
        }
        pod.ip(&[
            "route",
            "add",
            "default",
            "via",
            "198.18.201.1",
            "dev",
            "eth0",
        ]);
        pod.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:201::1",
            "dev",
            "eth0",
        ]);
        (pod, peer)
    }

    fn defaults(ns: &Ns, family: &str) -> String {
        ns.ip(&[family, "route", "show", "default"])
            .trim()
            .to_owned()
    }

    #[test]
    fn moves_the_default_route_to_the_requested_interface() {
        let self_ns = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let (pod, _peer) = two_interfaces("mv");
        let gw: IpAddr = "198.18.202.1".parse().unwrap();
        let change = set_default_route(&pod.path(), "net1", &[gw]).unwrap();
        assert_eq!(
            change.removed,
            [DefaultRoute {
                ifname: "eth0".into(),
                gateway: Some("198.18.201.1".parse().unwrap())
            }]
        );
        assert_eq!(
            change.installed,
            [DefaultRoute {
                ifname: "net1".into(),
                gateway: Some(gw)
            }]
        );
        assert_eq!(defaults(&pod, "-4"), "default via 198.18.202.1 dev net1");
        assert!(
            defaults(&pod, "-6").contains("dev eth0"),
            "IPv6 untouched: no v6 gateway asked for"
        );
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            self_ns,
            "caller's netns unchanged"
        );

        let v6: IpAddr = "fd00:202::1".parse().unwrap();
        set_default_route(&pod.path(), "net1", &[v6]).unwrap();
        assert!(
            defaults(&pod, "-6").starts_with("default via fd00:202::1 dev net1"),
            "{}",
            defaults(&pod, "-6")
        );
        let found = default_routes(&pod.path()).unwrap();
        assert!(found.iter().all(|r| r.ifname == "net1"), "{found:?}");
    }

    #[test]
    fn no_gateways_removes_the_other_interfaces_defaults() {
        let (pod, _peer) = two_interfaces("ng");
        let change = set_default_route(&pod.path(), "net1", &[]).unwrap();
        assert_eq!(change.removed.len(), 2);
        assert_eq!(defaults(&pod, "-4"), "");
        assert_eq!(defaults(&pod, "-6"), "");
    }

    #[test]
    fn errors_are_clear() {
        let (pod, _peer) = two_interfaces("er");
        let e = set_default_route(&pod.path(), "nope0", &[]).unwrap_err();
        assert!(matches!(e, NetnsError::NoSuchInterface(_)), "{e}");
        let two = [
            "198.18.202.1".parse().unwrap(),
            "198.18.202.9".parse().unwrap(),
        ];
        assert!(matches!(
            set_default_route(&pod.path(), "net1", &two),
            Err(NetnsError::TwoGatewaysOneFamily(..))
        ));
        let off_link: IpAddr = "203.0.113.1".parse().unwrap();
        let e = set_default_route(&pod.path(), "net1", &[off_link]).unwrap_err();
        assert!(matches!(e, NetnsError::Kernel { .. }), "{e}");
        assert!(matches!(
            set_default_route(Path::new("/run/netns/plx-none"), "eth0", &[]),
            Err(NetnsError::Enter { .. })
        ));
    }
}
