//! Link and route work inside a pod's network namespace, over rtnetlink.
//!
//! `setns` changes the namespace of the calling thread only, so every call runs on a short-lived thread of its own
//! that enters the pod's namespace, does its netlink exchanges there and ends; the caller's thread (which may be a
//! tokio worker) never moves. Everything here is synchronous.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sched::{CloneFlags, setns};

/// The main routing table.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A failure reading or changing a pod's network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Enter {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("netlink socket: {what}: {source}")]
    Socket { what: String, source: io::Error },
    #[error("{what}: cannot decode the kernel's reply: {message}")]
    Decode { what: String, message: String },
    /// The kernel refused a request: `errno` is the positive error number, `message` the kernel's extended ack text.
    #[error("{what}: {}", kernel_reason(*.errno, .message.as_deref()))]
    Kernel {
        what: String,
        errno: i32,
        message: Option<String>,
    },
    #[error("interface {ifname:?} is not in network namespace {}", netns.display())]
    NoSuchInterface { ifname: String, netns: PathBuf },
    #[error(
        "default-route lists two {family} gateways ({first} and {second}); one gateway per address family is allowed"
    )]
    TwoGateways {
        family: &'static str,
        first: IpAddr,
        second: IpAddr,
    },
    #[error("the thread working in network namespace {} panicked", .0.display())]
    WorkerPanicked(PathBuf),
}

fn kernel_reason(errno: i32, message: Option<&str>) -> String {
    let text = io::Error::from_raw_os_error(errno);
    match message {
        Some(m) => format!("the kernel said {m:?} ({text})"),
        None => format!("the kernel said {text}"),
    }
}

/// One interface in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    /// Hardware address, lower-case `aa:bb:..`; empty when the link has none.
    pub mac: String,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`), as `ip link set .. up` sets it; says nothing about the carrier.
    pub up: bool,
    /// Addresses with their prefix lengths, IPv4 and IPv6 (link-local included), in the kernel's order.
    pub addresses: Vec<IpNet>,
}

/// A default route as found in the namespace. A multipath route shows as one entry per next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    /// The output interface; empty when the kernel names none.
    pub ifname: String,
    pub gateway: Option<IpAddr>,
    /// The route's priority; the kernel reports none for IPv4 routes added without one.
    pub metric: Option<u32>,
    pub table: u32,
}

/// What [`set_default_route`] changed, for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteChange {
    pub removed: Vec<DefaultRoute>,
    pub installed: Vec<DefaultRoute>,
}

/// Every interface in the namespace, by index, with its addresses.
pub fn links(netns: &Path) -> Result<Vec<LinkInfo>, NetnsError> {
    in_netns(netns, |nl| {
        let mut links = nl.links()?;
        for (index, address) in nl.addresses()? {
            if let Some(link) = links.iter_mut().find(|l| l.index == index) {
                link.addresses.push(address);
            }
        }
        links.sort_by_key(|l| l.index);
        Ok(links)
    })
}

/// The default routes of the main table, IPv4 then IPv6.
pub fn default_routes(netns: &Path) -> Result<Vec<DefaultRoute>, NetnsError> {
    in_netns(netns, |nl| {
        let links = nl.links()?;
        Ok(nl
            .default_routes()?
            .iter()
            .flat_map(|r| describe(r, &links))
            .collect())
    })
}

/// Multi-network `default-route` (R33): makes `ifname` carry the pod's default route.
///
/// For each address family with a gateway in `gateways`, every default route of that family in the main table whose
/// output interface is not `ifname` is deleted (a multipath route counts as on `ifname` only when all its hops are),
/// then `default via <gateway> dev <ifname>` is installed, replacing a default route of the same metric. IPv6
/// gateways may be link-local (`fe80::…`) or global. With no gateways, the default routes of both families on other
/// interfaces are deleted and `ifname` keeps what it has. At most one gateway per family: Multus refuses ECMP.
///
/// When an install fails, the routes deleted by this call are put back (best effort) before the error is returned.
pub fn set_default_route(
    netns: &Path,
    ifname: &str,
    gateways: &[IpAddr],
) -> Result<RouteChange, NetnsError> {
    let mut by_family: [Option<IpAddr>; 2] = [None, None];
    for gateway in gateways.iter().map(IpAddr::to_canonical) {
        let slot = &mut by_family[usize::from(gateway.is_ipv6())];
        if let Some(first) = *slot {
            return Err(NetnsError::TwoGateways {
                family: if gateway.is_ipv6() { "IPv6" } else { "IPv4" },
                first,
                second: gateway,
            });
        }
        *slot = Some(gateway);
    }
    let gateways: Vec<IpAddr> = by_family.into_iter().flatten().collect();
    let ifname = ifname.to_owned();
    let path = netns.to_path_buf();
    in_netns(netns, move |nl| {
        let links = nl.links()?;
        let index = links
            .iter()
            .find(|l| l.name == ifname)
            .map(|l| l.index)
            .ok_or_else(|| NetnsError::NoSuchInterface {
                ifname: ifname.clone(),
                netns: path.clone(),
            })?;
        let families: Vec<bool> = if gateways.is_empty() {
            vec![false, true]
        } else {
            gateways.iter().map(IpAddr::is_ipv6).collect()
        };

        let mut change = RouteChange::default();
        let mut deleted: Vec<RouteMessage> = Vec::new();
        for route in nl.default_routes()? {
            let hops = output_interfaces(&route);
            let on_ifname = !hops.is_empty() && hops.iter().all(|&i| i == Some(index));
            if !families.contains(&is_v6(&route)) || on_ifname {
                continue;
            }
            let found = describe(&route, &links);
            let what = format!("delete the default route {}", summary(&found));
            nl.request(RouteNetlinkMessage::DelRoute(lookup_key(&route)), 0, &what)?;
            change.removed.extend(found);
            deleted.push(route);
        }

        let mut added: Vec<RouteMessage> = Vec::new();
        for gateway in &gateways {
            let what = format!("install the default route via {gateway} on {ifname}");
            let route = default_via(*gateway, index);
            let installed = nl.request(
                RouteNetlinkMessage::NewRoute(route.clone()),
                NLM_F_CREATE | NLM_F_REPLACE,
                &what,
            );
            if let Err(mut e) = installed {
                // Undo this call: the routes it installed (they may hold the metric of a deleted one) go first.
                for route in added {
                    let _ = nl.request(
                        RouteNetlinkMessage::DelRoute(route),
                        0,
                        "remove a default route installed before the failure",
                    );
                }
                let restored = deleted.iter().all(|route| {
                    nl.request(
                        RouteNetlinkMessage::NewRoute(restorable(route)),
                        NLM_F_CREATE | NLM_F_EXCL,
                        "restore a default route",
                    )
                    .is_ok()
                });
                if let NetnsError::Kernel { what, .. } = &mut e {
                    what.push_str(if restored {
                        " (the default routes removed before were put back)"
                    } else {
                        " (some default routes removed before could not be put back)"
                    });
                }
                return Err(e);
            }
            added.push(route);
        }

        if !gateways.is_empty() {
            for route in nl.default_routes()? {
                let facts = describe(&route, &links);
                change.installed.extend(facts.into_iter().filter(|r| {
                    r.ifname == ifname && r.gateway.is_some_and(|g| gateways.contains(&g))
                }));
            }
        }
        Ok(change)
    })
}

fn is_v6(route: &RouteMessage) -> bool {
    route.header.address_family == AddressFamily::Inet6
}

/// `ifname via gateway metric N` of routes, for messages.
fn summary(routes: &[DefaultRoute]) -> String {
    routes
        .iter()
        .map(|r| {
            let mut s = format!("on {:?}", r.ifname);
            if let Some(g) = r.gateway {
                s.push_str(&format!(" via {g}"));
            }
            if let Some(m) = r.metric {
                s.push_str(&format!(" metric {m}"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The output interface of each hop of a route (one entry for a single-path route; `None` where the kernel gives no
/// interface).
fn output_interfaces(route: &RouteMessage) -> Vec<Option<u32>> {
    let hops: Vec<Option<u32>> = route
        .attributes
        .iter()
        .filter_map(|a| match a {
            RouteAttribute::MultiPath(hops) => Some(hops.iter().map(|h| Some(h.interface_index))),
            _ => None,
        })
        .flatten()
        .collect();
    if !hops.is_empty() {
        return hops;
    }
    vec![route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })]
}

fn gateway_of(attributes: &[RouteAttribute]) -> Option<IpAddr> {
    attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(IpAddr::V4(*g)),
        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => Some(IpAddr::V6(*g)),
        _ => None,
    })
}

/// A route as [`DefaultRoute`]s: one per hop.
fn describe(route: &RouteMessage, links: &[LinkInfo]) -> Vec<DefaultRoute> {
    let name_of = |index: Option<u32>| {
        index
            .and_then(|i| links.iter().find(|l| l.index == i))
            .map(|l| l.name.clone())
            .unwrap_or_default()
    };
    let metric = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Priority(p) => Some(*p),
        _ => None,
    });
    let table = route_table(route);
    let multipath = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::MultiPath(hops) => Some(hops),
        _ => None,
    });
    match multipath {
        Some(hops) => hops
            .iter()
            .map(|hop| DefaultRoute {
                ifname: name_of(Some(hop.interface_index)),
                gateway: gateway_of(&hop.attributes),
                metric,
                table,
            })
            .collect(),
        None => vec![DefaultRoute {
            ifname: name_of(output_interfaces(route).first().copied().flatten()),
            gateway: gateway_of(&route.attributes),
            metric,
            table,
        }],
    }
}

/// The attributes that pick out exactly this route for a delete (what `ip route del` would send for it).
fn lookup_key(route: &RouteMessage) -> RouteMessage {
    let mut key = RouteMessage::default();
    key.header = route.header.clone();
    key.header.flags = Default::default();
    key.attributes = route
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                RouteAttribute::Table(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::PrefSource(_)
                    | RouteAttribute::MultiPath(_)
            )
        })
        .cloned()
        .collect();
    key
}

/// A deleted route as a message that adds it again, metrics and IPv6 preference included.
fn restorable(route: &RouteMessage) -> RouteMessage {
    let mut message = lookup_key(route);
    message.attributes.extend(
        route
            .attributes
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    RouteAttribute::Metrics(_) | RouteAttribute::Preference(_)
                )
            })
            .cloned(),
    );
    message
}

/// `default via gateway dev <index>` in the main table, as `ip route add` would make it.
fn default_via(gateway: IpAddr, index: u32) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header = RouteHeader {
        address_family: if gateway.is_ipv6() {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        },
        destination_prefix_length: 0,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Boot,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    message.attributes = vec![
        RouteAttribute::Gateway(RouteAddress::from(gateway)),
        RouteAttribute::Oif(index),
    ];
    message
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

/// Runs `work` on a new thread that has entered the namespace at `netns`, with an rtnetlink socket opened there.
fn in_netns<T: Send + 'static>(
    netns: &Path,
    work: impl FnOnce(&mut Rtnl) -> Result<T, NetnsError> + Send + 'static,
) -> Result<T, NetnsError> {
    let path = netns.to_path_buf();
    let worker_path = path.clone();
    let worker = std::thread::Builder::new()
        .name("plexus-netns".into())
        .spawn(move || {
            let file = File::open(&worker_path).map_err(|source| NetnsError::Open {
                path: worker_path.clone(),
                source,
            })?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: worker_path.clone(),
                source,
            })?;
            let mut nl = Rtnl::open()?;
            work(&mut nl)
        })
        .map_err(|source| NetnsError::Socket {
            what: "start the thread that enters the namespace".into(),
            source,
        })?;
    worker
        .join()
        .unwrap_or(Err(NetnsError::WorkerPanicked(path)))
}

/// Extended-ack attribute carrying the kernel's error text (`NLMSGERR_ATTR_MSG`).
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Flags of an error reply: the request was capped to its header; TLVs follow.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
/// How often a dump the kernel marked as interrupted (the table changed meanwhile) is tried again.
const DUMP_ATTEMPTS: usize = 5;

/// A blocking rtnetlink socket, in the namespace of the thread that opened it.
struct Rtnl {
    socket: Socket,
    sequence: u32,
}

impl Rtnl {
    fn open() -> Result<Self, NetnsError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| NetnsError::Socket { what, source }
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("open"))?;
        socket.bind_auto().map_err(io("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io("connect"))?;
        // Kernel error texts and short error replies; older kernels lack them, which only costs detail.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Sends one message and collects the replies until the ACK, the end of a dump, or an error. The flag says
    /// whether the kernel marked a dump as interrupted.
    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), NetnsError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        let socket_error = |stage: &str| {
            let what = format!("{what}: {stage}");
            move |source| NetnsError::Socket { what, source }
        };
        self.socket.send(&buf, 0).map_err(socket_error("send"))?;
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(socket_error("receive"))?;
            let mut offset = 0;
            while offset + 16 <= data.len() {
                let length =
                    u32::from_ne_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
                if length < 16 || offset + length > data.len() {
                    return Err(NetnsError::Decode {
                        what: what.to_owned(),
                        message: format!("a message claims {length} bytes"),
                    });
                }
                let bytes = &data[offset..offset + length];
                offset += (length + 3) & !3;
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(|e| {
                        NetnsError::Decode {
                            what: what.to_owned(),
                            message: e.to_string(),
                        }
                    })?;
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Err(NetnsError::Kernel {
                            what: what.to_owned(),
                            errno: done.code.abs(),
                            message: None,
                        });
                    }
                    NetlinkPayload::Done(_) => return Ok((replies, interrupted)),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok((replies, interrupted)),
                            Some(code) => Err(NetnsError::Kernel {
                                what: what.to_owned(),
                                errno: code.get().abs(),
                                message: extended_ack_message(reply.header.flags, &e.header),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    /// A change the kernel acknowledges.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(), NetnsError> {
        self.exchange(message, NLM_F_ACK | flags, what).map(|_| ())
    }

    /// A dump, tried again while the kernel reports it as interrupted.
    fn dump(
        &mut self,
        query: RouteNetlinkMessage,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetnsError> {
        let mut attempt = 1;
        loop {
            let (replies, interrupted) = self.exchange(query.clone(), NLM_F_DUMP, what)?;
            if !interrupted || attempt == DUMP_ATTEMPTS {
                return Ok(replies);
            }
            attempt += 1;
        }
    }

    /// Every link, without addresses.
    fn links(&mut self) -> Result<Vec<LinkInfo>, NetnsError> {
        let replies = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "list links",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_info(&link)),
                _ => None,
            })
            .collect())
    }

    /// (interface index, address) of every address, both families.
    fn addresses(&mut self) -> Result<Vec<(u32, IpNet)>, NetnsError> {
        let replies = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            "list addresses",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    // IFA_LOCAL is the local end of a point-to-point address, where IFA_ADDRESS is the peer.
                    let local = a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let address = a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    });
                    let ip = local.or(address)?;
                    let net = IpNet::new(ip, a.header.prefix_len).ok()?;
                    Some((a.header.index, net))
                }
                _ => None,
            })
            .collect())
    }

    /// Default unicast routes of the main table, IPv4 then IPv6.
    fn default_routes(&mut self) -> Result<Vec<RouteMessage>, NetnsError> {
        let mut found = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let replies = self.dump(RouteNetlinkMessage::GetRoute(query), "list routes")?;
            found.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.address_family == family
                        && r.header.destination_prefix_length == 0
                        && r.header.kind == RouteType::Unicast
                        && route_table(&r) == MAIN_TABLE =>
                {
                    Some(r)
                }
                _ => None,
            }));
        }
        Ok(found)
    }
}

fn link_info(link: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        name: String::new(),
        index: link.header.index,
        mac: String::new(),
        mtu: 0,
        up: link.header.flags.contains(LinkFlags::Up),
        addresses: Vec::new(),
    };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::Address(bytes) => {
                info.mac = bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
            }
            _ => {}
        }
    }
    info
}

/// The kernel's error text from an error reply's extended-ack attributes, when it sent one.
fn extended_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // The payload starts with the request: its header only when capped, else the whole request.
    let request_length = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize
    };
    let mut offset = (request_length + 3) & !3;
    while offset + 4 <= payload.len() {
        let length = usize::from(u16::from_ne_bytes(
            payload[offset..offset + 2].try_into().ok()?,
        ));
        let kind = u16::from_ne_bytes(payload[offset + 2..offset + 4].try_into().ok()?);
        if length < 4 || offset + length > payload.len() {
            return None;
        }
        if kind & 0x3fff == NLMSGERR_ATTR_MSG {
            let text = &payload[offset + 4..offset + length];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned()).filter(|t| !t.is_empty());
        }
        offset += (length + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};

    /// A network namespace named `plxnl-<tag>-<pid>`, deleted on drop (also when the test panics).
    struct Ns(String);

    impl Ns {
        fn new(tag: &str) -> Self {
            let name = format!("plxnl-{tag}-{}", std::process::id());
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
            run(&["ip", "netns", "add", &name]);
            Self(name)
        }

        fn path(&self) -> PathBuf {
            PathBuf::from(format!("/run/netns/{}", self.0))
        }

        fn ip(&self, args: &[&str]) -> String {
            let mut all = vec!["ip", "-n", &self.0];
            all.extend_from_slice(args);
            run(&all)
        }

        /// The default routes of one family (`-4` or `-6`) as `ip -j route` shows them: (dev, gateway, metric),
        /// sorted; a multipath route shows one entry per hop.
        fn defaults(&self, family: &str) -> Vec<(String, String, Option<u64>)> {
            let json: Value =
                serde_json::from_str(&self.ip(&["-j", family, "route", "show", "table", "main"]))
                    .unwrap();
            let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
            let mut found: Vec<_> = json
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["dst"] == "default")
                .flat_map(|r| {
                    let metric = r["metric"].as_u64();
                    match r["nexthops"].as_array() {
                        Some(hops) => hops
                            .iter()
                            .map(|h| (text(h, "dev"), text(h, "gateway"), metric))
                            .collect(),
                        None => vec![(text(r, "dev"), text(r, "gateway"), metric)],
                    }
                })
                .collect();
            found.sort();
            found
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.0])
                .stderr(Stdio::null())
                .status();
        }
    }

    fn run(args: &[&str]) -> String {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn route(dev: &str, gateway: &str, metric: Option<u64>) -> (String, String, Option<u64>) {
        (dev.to_owned(), gateway.to_owned(), metric)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The inode of the calling thread's network namespace.
    fn own_netns() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    /// A pod namespace with eth0 (198.18.<a>.2/24 and fd00:<a>::2/64, default routes via .1 and ::1) and net1
    /// (198.18.<a+1>.2/24, fd00:<a+1>::2/64, no default route): veth pairs whose peers live in a second namespace.
    struct Pod {
        ns: Ns,
        _peer: Ns,
        eth0: (String, String),
        net1: (String, String),
    }

    fn pod(tag: &str, a: u8) -> Pod {
        let ns = Ns::new(tag);
        let peer = Ns::new(&format!("{tag}p"));
        let mut nets = Vec::new();
        for (ifname, subnet) in [("eth0", a), ("net1", a + 1)] {
            let peer_name = format!("p{ifname}");
            ns.ip(&[
                "link", "add", ifname, "type", "veth", "peer", "name", &peer_name, "netns", &peer.0,
            ]);
            ns.ip(&[
                "addr",
                "add",
                &format!("198.18.{subnet}.2/24"),
                "dev",
                ifname,
            ]);
            ns.ip(&[
                "addr",
                "add",
                &format!("fd00:{subnet}::2/64"),
                "dev",
                ifname,
                "nodad",
            ]);
            ns.ip(&["link", "set", ifname, "up"]);
            peer.ip(&["link", "set", &peer_name, "up"]);
            nets.push((format!("198.18.{subnet}.1"), format!("fd00:{subnet}::1")));
        }
        let eth0 = nets[0].clone();
        ns.ip(&["route", "add", "default", "via", &eth0.0, "dev", "eth0"]);
        ns.ip(&[
            "-6", "route", "add", "default", "via", &eth0.1, "dev", "eth0",
        ]);
        Pod {
            ns,
            _peer: peer,
            eth0,
            net1: nets[1].clone(),
        }
    }

    #[test]
    fn links_shows_names_macs_mtu_and_addresses() {
        let before = own_netns();
        let pod = pod("links", 10);
        pod.ns.ip(&[
            "link",
            "set",
            "net1",
            "address",
            "02:AB:00:00:0B:01",
            "mtu",
            "1400",
        ]);
        pod.ns.ip(&["link", "set", "net1", "down"]);
        let found = links(&pod.ns.path()).unwrap();
        assert_eq!(
            own_netns(),
            before,
            "the caller's thread stays in its namespace"
        );

        let names: Vec<&str> = found.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["lo", "eth0", "net1"]);
        let shown: Value = serde_json::from_str(&pod.ns.ip(&["-j", "link", "show"])).unwrap();
        for (link, shown) in found.iter().zip(shown.as_array().unwrap()) {
            assert_eq!(u64::from(link.index), shown["ifindex"].as_u64().unwrap());
            assert_eq!(link.mac, shown["address"].as_str().unwrap());
            assert_eq!(u64::from(link.mtu), shown["mtu"].as_u64().unwrap());
        }
        let net1 = &found[2];
        assert_eq!(net1.mac, "02:ab:00:00:0b:01");
        assert_eq!(net1.mtu, 1400);
        assert!(!net1.up);
        let eth0 = &found[1];
        assert!(eth0.up);
        assert_eq!(eth0.mtu, 1500);
        assert!(
            eth0.addresses.contains(&"198.18.10.2/24".parse().unwrap())
                && eth0.addresses.contains(&"fd00:10::2/64".parse().unwrap()),
            "{eth0:?}"
        );
        assert!(net1.addresses.contains(&"198.18.11.2/24".parse().unwrap()));
        assert!(found[0].addresses.contains(&"127.0.0.1/8".parse().unwrap()) || !found[0].up);
    }

    #[test]
    fn moves_the_ipv4_default_route() {
        let before = own_netns();
        let pod = pod("v4", 20);
        let gateway = ip(&pod.net1.0);
        let change = set_default_route(&pod.ns.path(), "net1", &[gateway]).unwrap();
        assert_eq!(
            own_netns(),
            before,
            "the caller's thread stays in its namespace"
        );

        assert_eq!(pod.ns.defaults("-4"), [route("net1", &pod.net1.0, None)]);
        assert_eq!(
            pod.ns.defaults("-6"),
            [route("eth0", &pod.eth0.1, Some(1024))],
            "no IPv6 gateway was asked for: IPv6 is left alone"
        );
        assert_eq!(
            change.removed,
            [DefaultRoute {
                ifname: "eth0".into(),
                gateway: Some(ip(&pod.eth0.0)),
                metric: None,
                table: MAIN_TABLE,
            }]
        );
        assert_eq!(
            change.installed,
            [DefaultRoute {
                ifname: "net1".into(),
                gateway: Some(gateway),
                metric: None,
                table: MAIN_TABLE,
            }]
        );
        assert_eq!(default_routes(&pod.ns.path()).unwrap().len(), 2);

        // Again: nothing left to remove, the route is replaced in place.
        let again = set_default_route(&pod.ns.path(), "net1", &[gateway]).unwrap();
        assert!(again.removed.is_empty(), "{again:?}");
        assert_eq!(pod.ns.defaults("-4"), [route("net1", &pod.net1.0, None)]);
    }

    #[test]
    fn moves_the_ipv6_default_route_via_a_global_gateway() {
        let pod = pod("v6", 30);
        let gateway = ip(&pod.net1.1);
        let change = set_default_route(&pod.ns.path(), "net1", &[gateway]).unwrap();
        assert_eq!(
            pod.ns.defaults("-6"),
            [route("net1", &pod.net1.1, Some(1024))]
        );
        assert_eq!(pod.ns.defaults("-4"), [route("eth0", &pod.eth0.0, None)]);
        assert_eq!(change.removed.len(), 1);
        assert_eq!(change.removed[0].ifname, "eth0");
        assert_eq!(change.removed[0].metric, Some(1024));
        assert_eq!(change.installed[0].gateway, Some(gateway));
    }

    #[test]
    fn both_families_at_once_with_a_link_local_ipv6_gateway() {
        let pod = pod("dual", 40);
        let gateways = [ip("fe80::1"), ip(&pod.net1.0)];
        let change = set_default_route(&pod.ns.path(), "net1", &gateways).unwrap();
        assert_eq!(pod.ns.defaults("-4"), [route("net1", &pod.net1.0, None)]);
        assert_eq!(
            pod.ns.defaults("-6"),
            [route("net1", "fe80::1", Some(1024))]
        );
        assert_eq!(change.removed.len(), 2);
        assert_eq!(change.installed.len(), 2);
        let found = default_routes(&pod.ns.path()).unwrap();
        assert!(found.iter().all(|r| r.ifname == "net1"), "{found:?}");
    }

    #[test]
    fn no_gateways_keeps_only_the_interfaces_own_default_routes() {
        let pod = pod("none", 50);
        pod.ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &pod.net1.0,
            "dev",
            "net1",
            "metric",
            "200",
        ]);
        let change = set_default_route(&pod.ns.path(), "net1", &[]).unwrap();
        assert_eq!(
            pod.ns.defaults("-4"),
            [route("net1", &pod.net1.0, Some(200))]
        );
        assert_eq!(pod.ns.defaults("-6"), []);
        assert_eq!(change.removed.len(), 2);
        assert!(change.removed.iter().all(|r| r.ifname == "eth0"));
        assert!(change.installed.is_empty());
    }

    #[test]
    fn a_multipath_default_route_across_interfaces_is_replaced() {
        let pod = pod("mp", 60);
        pod.ns.ip(&["route", "del", "default"]);
        pod.ns.ip(&[
            "route",
            "add",
            "default",
            "nexthop",
            "via",
            &pod.eth0.0,
            "dev",
            "eth0",
            "nexthop",
            "via",
            &pod.net1.0,
            "dev",
            "net1",
        ]);
        let found = default_routes(&pod.ns.path()).unwrap();
        assert_eq!(
            found
                .iter()
                .filter(|r| r.gateway.is_some_and(|g| g.is_ipv4()))
                .count(),
            2
        );
        let change = set_default_route(&pod.ns.path(), "net1", &[ip(&pod.net1.0)]).unwrap();
        assert_eq!(pod.ns.defaults("-4"), [route("net1", &pod.net1.0, None)]);
        assert_eq!(change.removed.len(), 2, "{change:?}");
    }

    #[test]
    fn a_missing_interface_is_named() {
        let pod = pod("miss", 70);
        let e = set_default_route(&pod.ns.path(), "net9", &[ip(&pod.net1.0)]).unwrap_err();
        assert!(matches!(&e, NetnsError::NoSuchInterface { ifname, .. } if ifname == "net9"));
        let text = e.to_string();
        assert!(
            text.contains("\"net9\"") && text.contains(&pod.ns.0),
            "{text}"
        );
        assert_eq!(pod.ns.defaults("-4"), [route("eth0", &pod.eth0.0, None)]);
    }

    #[test]
    fn two_gateways_of_one_family_are_refused() {
        let pod = pod("two", 80);
        let e = set_default_route(
            &pod.ns.path(),
            "net1",
            &[ip(&pod.net1.0), ip(&pod.net1.1), ip("198.18.81.9")],
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&pod.net1.0) && text.contains("198.18.81.9") && text.contains("IPv4"),
            "{text}"
        );
        let e =
            set_default_route(&pod.ns.path(), "net1", &[ip("fe80::1"), ip("fe80::2")]).unwrap_err();
        assert!(
            matches!(e, NetnsError::TwoGateways { family: "IPv6", .. }),
            "{e}"
        );
        assert_eq!(pod.ns.defaults("-4"), [route("eth0", &pod.eth0.0, None)]);
        assert_eq!(
            pod.ns.defaults("-6"),
            [route("eth0", &pod.eth0.1, Some(1024))]
        );
    }

    #[test]
    fn an_unreachable_gateway_fails_and_puts_the_routes_back() {
        let pod = pod("unr", 90);
        let e = set_default_route(&pod.ns.path(), "net1", &[ip("203.0.113.1")]).unwrap_err();
        assert!(matches!(e, NetnsError::Kernel { errno: 101, .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("203.0.113.1") && text.contains("put back"),
            "{text}"
        );
        assert_eq!(pod.ns.defaults("-4"), [route("eth0", &pod.eth0.0, None)]);

        // IPv4 goes through, then IPv6 fails: both families end as they were.
        let e = set_default_route(
            &pod.ns.path(),
            "net1",
            &[ip(&pod.net1.0), ip("2001:db8:ffff::1")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("put back"), "{e}");
        assert_eq!(pod.ns.defaults("-4"), [route("eth0", &pod.eth0.0, None)]);
        assert_eq!(
            pod.ns.defaults("-6"),
            [route("eth0", &pod.eth0.1, Some(1024))]
        );
    }

    #[test]
    fn a_missing_namespace_is_an_open_error() {
        let before = own_netns();
        let e = default_routes(Path::new("/run/netns/plxnl-does-not-exist")).unwrap_err();
        assert!(matches!(e, NetnsError::Open { .. }), "{e}");
        let e = links(Path::new("/proc/self/status")).unwrap_err();
        assert!(matches!(e, NetnsError::Enter { .. }), "{e}");
        assert_eq!(own_netns(), before);
    }
}
