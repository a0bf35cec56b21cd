//! `network-path`: does the VM's reply find its way back? Without a person's address, the NIC's
//! effective routes: a user route that sends the Internet's default (0.0.0.0/0, or a route of
//! /8 or wider over public addresses) to a virtual appliance or to `None` takes the reply to
//! every client on the Internet there. With `--from IP`, Network Watcher's own answers: IP flow
//! verify for that address to the VM's RDP port (beside the `nsg` check's verdict), and the next
//! hop from the VM back to that address.

use super::{ActionId, CheckId, Finding, Status};
use ipnet::Ipv4Net;
use serde::Serialize;
use std::net::Ipv4Addr;

/// One entry of a NIC's effective route table (`effectiveRouteTable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteFacts {
    /// The user route's name; system routes have none.
    pub name: Option<String>,
    /// `User`, `Default`, `VirtualNetworkGateway`…
    pub source: String,
    /// `Active`, or `Invalid` when another route of the same prefix wins.
    pub active: bool,
    pub prefixes: Vec<String>,
    /// `VirtualAppliance`, `VnetLocal`, `Internet`, `VirtualNetworkGateway`, `None`…
    pub next_hop_type: String,
    pub next_hop_ips: Vec<String>,
}

/// A route table and its routes, as `GET routeTables/{name}` tells them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteTableFacts {
    pub id: String,
    pub name: String,
    pub resource_group: String,
    pub subscription_id: String,
    pub routes: Vec<UserRoute>,
    /// The ids of the subnets that use the table.
    pub subnets: Vec<String>,
}

/// A user-defined route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRoute {
    pub name: String,
    pub prefix: String,
    pub next_hop_type: String,
    pub next_hop_ip: Option<String>,
}

/// Network Watcher's IP flow verify answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowVerdict {
    pub allowed: bool,
    /// The deciding rule, e.g. `securityRules/allow-rdp`; none when no rule matched.
    pub rule: Option<String>,
}

/// Network Watcher's next hop answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextHopFacts {
    pub next_hop_type: String,
    pub next_hop_ip: Option<String>,
    /// The user route's table; `None` for a system route ("System Route").
    pub route_table_id: Option<String>,
}

/// What the `nsg` check itself concluded, to set beside Azure's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OurVerdict {
    pub allowed: bool,
    pub rule: Option<String>,
}

/// The facts the check judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathFacts {
    /// Without an address: the NIC's effective routes and, when a route sends the reply
    /// away, the subnet's route table.
    Routes {
        routes: Vec<RouteFacts>,
        table: Option<RouteTableFacts>,
    },
    /// With `--from`: Network Watcher's answers.
    Watched {
        from: Ipv4Addr,
        port: u16,
        flow: FlowVerdict,
        ours: Option<OurVerdict>,
        next_hop: NextHopFacts,
        table: Option<RouteTableFacts>,
    },
    /// With `--from`, in a region without a Network Watcher.
    NoWatcher { from: Ipv4Addr, region: String },
    /// Without an address, for a VM reached through Azure Bastion: the NIC's effective routes
    /// toward the Bastion host's `AzureBastionSubnet` (`address`, its first host address), where
    /// the connection comes from. The Internet's routes do not matter to it.
    ToBastion {
        routes: Vec<RouteFacts>,
        bastion: String,
        subnet: String,
        address: Ipv4Addr,
    },
}

/// Does this next hop drop the reply (an appliance, or nowhere)?
pub fn sends_away(next_hop_type: &str) -> bool {
    matches!(next_hop_type, "VirtualAppliance" | "None")
}

/// Does this prefix carry the replies to much of the Internet: 0.0.0.0/0, or /8 or wider over
/// public addresses?
pub fn covers_the_internet(prefix: &str) -> bool {
    let Ok(net) = prefix.parse::<Ipv4Net>() else {
        return false;
    };
    net.prefix_len() <= 8 && crate::domain::cidr::has_public_address(&net)
}

/// The user route of `table` that `routes` says carries the Internet's replies away, if any
/// (the widest first).
pub fn route_sending_internet_away(routes: &[RouteFacts]) -> Option<&RouteFacts> {
    routes
        .iter()
        .filter(|r| r.active && r.source == "User" && sends_away(&r.next_hop_type))
        .filter(|r| r.prefixes.iter().any(|p| covers_the_internet(p)))
        .min_by_key(|r| {
            r.prefixes
                .iter()
                .filter_map(|p| p.parse::<Ipv4Net>().ok())
                .map(|n| n.prefix_len())
                .min()
                .unwrap_or(32)
        })
}

/// The route of `table` that sends `to` on to `next_hop_type` (longest prefix first).
pub fn route_for(table: &RouteTableFacts, to: Ipv4Addr, next_hop_type: &str) -> Option<UserRoute> {
    table
        .routes
        .iter()
        .filter(|r| r.next_hop_type == next_hop_type)
        .filter_map(|r| Some((r.prefix.parse::<Ipv4Net>().ok()?, r)))
        .filter(|(net, _)| net.contains(&to))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, r)| r.clone())
}

fn hop_text(next_hop_type: &str, ip: Option<&str>) -> String {
    match (next_hop_type, ip) {
        ("VirtualAppliance", Some(ip)) => format!("the virtual appliance {ip}"),
        ("None", _) => "None (dropped)".to_owned(),
        ("Internet", _) => "the Internet".to_owned(),
        ("VnetLocal", _) => "the virtual network".to_owned(),
        ("VNetPeering", _) => "the peered virtual network".to_owned(),
        ("VirtualNetworkGateway", _) => "the virtual network gateway".to_owned(),
        (other, Some(ip)) => format!("{other} {ip}"),
        (other, None) => other.to_owned(),
    }
}

/// The evidence of a route that sends the reply away: enough for the `remove-route` fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRoute {
    pub route_table: Option<String>,
    pub route_table_id: Option<String>,
    pub route: String,
    pub prefix: String,
    pub next_hop_type: String,
    pub next_hop_ip: Option<String>,
}

#[derive(Serialize)]
struct Evidence<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_flow_verify: Option<FlowEvidence<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_hop: Option<&'a NextHopFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a BadRoute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
}

#[derive(Serialize)]
struct FlowEvidence<'a> {
    azure: &'a FlowVerdict,
    ours: Option<&'a OurVerdict>,
    agree: Option<bool>,
}

fn verdict_word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

/// The rule without its collection (`securityRules/allow-rdp` → `allow-rdp`), as the `nsg`
/// check names it.
fn bare_rule(rule: &str) -> &str {
    rule.rsplit_once('/').map_or(rule, |(_, name)| name)
}

pub fn check(facts: &PathFacts) -> Finding {
    match facts {
        PathFacts::Routes { routes, table } => from_routes(routes, table.as_ref()),
        PathFacts::ToBastion {
            routes,
            bastion,
            subnet,
            address,
        } => to_bastion(routes, bastion, subnet, *address),
        PathFacts::NoWatcher { from, region } => {
            let why = format!(
                "Network Watcher is not enabled in region {region}: IP flow verify and next hop for {from} were not run"
            );
            Finding::skip(CheckId::NetworkPath, why.clone())
                .detail(format!(
                    "Enable it with: az network watcher configure --locations {region} --enabled true"
                ))
                .evidence(Evidence {
                    from: Some(from.to_string()),
                    ip_flow_verify: None,
                    next_hop: None,
                    route: None,
                    skipped: Some(why),
                })
        }
        PathFacts::Watched {
            from,
            port,
            flow,
            ours,
            next_hop,
            table,
        } => watched(*from, *port, flow, ours.as_ref(), next_hop, table.as_ref()),
    }
}

fn from_routes(routes: &[RouteFacts], table: Option<&RouteTableFacts>) -> Finding {
    let Some(bad) = route_sending_internet_away(routes) else {
        let default = routes
            .iter()
            .filter(|r| r.active && r.prefixes.iter().any(|p| p == "0.0.0.0/0"))
            .max_by_key(|r| r.source == "User");
        let summary = match default {
            Some(r) => format!(
                "Replies to the Internet go to {} ({} route 0.0.0.0/0)",
                hop_text(&r.next_hop_type, r.next_hop_ips.first().map(String::as_str)),
                if r.source == "User" { "user" } else { "system" }
            ),
            None => "No route sends replies to the Internet away".to_owned(),
        };
        let forced = default.is_some_and(|r| r.next_hop_type == "VirtualNetworkGateway");
        let status = if forced { Status::Warn } else { Status::Pass };
        let mut finding = Finding::new(CheckId::NetworkPath, status, summary);
        if forced {
            finding = finding.detail(
                "Replies go to the virtual network gateway (forced tunnelling): clients on the Internet reach the VM only if on-premises sends the replies on.",
            );
        }
        return finding.evidence(Evidence {
            from: None,
            ip_flow_verify: None,
            next_hop: None,
            route: None,
            skipped: None,
        });
    };
    let prefix = bad
        .prefixes
        .iter()
        .find(|p| covers_the_internet(p))
        .cloned()
        .unwrap_or_default();
    let route = BadRoute {
        route_table: table.map(|t| t.name.clone()),
        route_table_id: table.map(|t| t.id.clone()),
        route: bad.name.clone().unwrap_or_default(),
        prefix: prefix.clone(),
        next_hop_type: bad.next_hop_type.clone(),
        next_hop_ip: bad.next_hop_ips.first().cloned(),
    };
    let named = match &route.route_table {
        Some(t) => format!("route {} in route table {t}", route.route),
        None => format!("route {}", route.route),
    };
    let mut finding = Finding::new(
        CheckId::NetworkPath,
        Status::Fail,
        format!(
            "Replies to clients on the Internet go to {}: {named} sends {prefix} there",
            hop_text(&route.next_hop_type, route.next_hop_ip.as_deref())
        ),
    )
    .detail("The connection request arrives, but the reply to every client on the Internet goes to that next hop; unless it forwards them, Remote Desktop times out.");
    if let Some(t) = table {
        finding = finding.detail(used_by(t));
    }
    finding.suggests(ActionId::RemoveRoute).evidence(Evidence {
        from: None,
        ip_flow_verify: None,
        next_hop: None,
        route: Some(&route),
        skipped: None,
    })
}

/// The active route Azure picks for `to`: the longest prefix that holds it (equal prefixes are
/// settled by Azure itself, which marks the losers `Invalid`).
pub fn route_to(routes: &[RouteFacts], to: Ipv4Addr) -> Option<(&RouteFacts, Ipv4Net)> {
    routes
        .iter()
        .filter(|r| r.active)
        .flat_map(|r| {
            r.prefixes
                .iter()
                .filter_map(|p| p.parse::<Ipv4Net>().ok())
                .filter(|net| net.contains(&to))
                .map(move |net| (r, net))
        })
        .max_by_key(|(r, net)| (net.prefix_len(), r.source == "User"))
}

/// The reply to Azure Bastion: it must go back inside the virtual network or across the
/// peering. Microsoft's "Accessing virtual machines behind Azure Firewall with Azure Bastion"
/// (Azure blog): a 0.0.0.0/0 user route to a firewall does not stop Bastion, whose subnet the
/// more specific virtual network and peering routes reach; a route that sends the Bastion
/// subnet's own prefix to a stateful appliance makes the path asymmetric, and the appliance
/// drops the replies it never saw the requests of. No fix is offered: such a route is the
/// network team's design.
fn to_bastion(routes: &[RouteFacts], bastion: &str, subnet: &str, address: Ipv4Addr) -> Finding {
    let whom = format!("Azure Bastion {bastion} ({subnet})");
    let evidence = Evidence {
        from: Some(address.to_string()),
        ip_flow_verify: None,
        next_hop: None,
        route: None,
        skipped: None,
    };
    let Some((route, net)) = route_to(routes, address) else {
        return Finding::new(
            CheckId::NetworkPath,
            Status::Warn,
            format!("No effective route reaches {whom}: replies to it have nowhere to go"),
        )
        .evidence(evidence);
    };
    let hop = hop_text(
        &route.next_hop_type,
        route.next_hop_ips.first().map(String::as_str),
    );
    let named = match (&route.name, route.source == "User") {
        (Some(name), true) => format!("user route {name} ({net})"),
        _ => format!("system route {net}"),
    };
    if matches!(route.next_hop_type.as_str(), "VnetLocal" | "VNetPeering") {
        return Finding::new(
            CheckId::NetworkPath,
            Status::Pass,
            format!("Replies to {whom} go to {hop} ({named})"),
        )
        .evidence(evidence);
    }
    Finding::new(
        CheckId::NetworkPath,
        Status::Fail,
        format!("Replies to {whom} go to {hop}: {named} sends them there"),
    )
    .detail(format!(
        "Bastion's connection to the VM comes from {subnet}; the reply goes to {hop} instead of straight back, and a stateful appliance drops replies to connections it never saw."
    ))
    .next_step(format!(
        "Ask the network team to route {subnet} (Azure Bastion {bastion}) within the virtual network or across the peering, or to make {hop} pass the replies on. The route is part of their design: rdp-doctor does not offer to remove it."
    ))
    .evidence(evidence)
}

fn used_by(table: &RouteTableFacts) -> String {
    let names: Vec<&str> = table
        .subnets
        .iter()
        .map(|s| s.rsplit('/').next().unwrap_or(s))
        .collect();
    match names.as_slice() {
        [] => format!("Route table {} is used by no subnet now.", table.name),
        _ => format!(
            "Route table {} is used by subnet{} {}.",
            table.name,
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ),
    }
}

fn watched(
    from: Ipv4Addr,
    port: u16,
    flow: &FlowVerdict,
    ours: Option<&OurVerdict>,
    next_hop: &NextHopFacts,
    table: Option<&RouteTableFacts>,
) -> Finding {
    let azure_rule = flow.rule.as_deref().unwrap_or("no rule");
    let azure = format!(
        "Network Watcher: TCP {port} from {from} is {} by {azure_rule}",
        verdict_word(flow.allowed)
    );
    let agree = ours.map(|o| {
        o.allowed == flow.allowed
            && match (&o.rule, &flow.rule) {
                (Some(a), Some(b)) => bare_rule(a).eq_ignore_ascii_case(bare_rule(b)),
                _ => true,
            }
    });
    let mut lines = vec![azure.clone()];
    if let Some(o) = ours {
        lines.push(format!(
            "rdp-doctor's reading of the effective rules: {} by {}",
            verdict_word(o.allowed),
            o.rule.as_deref().unwrap_or("no rule")
        ));
    }
    // The way back.
    let hop = hop_text(&next_hop.next_hop_type, next_hop.next_hop_ip.as_deref());
    let table_name = next_hop
        .route_table_id
        .as_deref()
        .map(|id| id.rsplit('/').next().unwrap_or(id).to_owned());
    let bad_route = sends_away(&next_hop.next_hop_type)
        .then(|| {
            let found = table.and_then(|t| route_for(t, from, &next_hop.next_hop_type));
            BadRoute {
                route_table: table_name.clone(),
                route_table_id: next_hop.route_table_id.clone(),
                route: found.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                prefix: found.as_ref().map(|r| r.prefix.clone()).unwrap_or_default(),
                next_hop_type: next_hop.next_hop_type.clone(),
                next_hop_ip: next_hop.next_hop_ip.clone(),
            }
        })
        .filter(|_| next_hop.route_table_id.is_some());
    let evidence = Evidence {
        from: Some(from.to_string()),
        ip_flow_verify: Some(FlowEvidence {
            azure: flow,
            ours,
            agree,
        }),
        next_hop: Some(next_hop),
        route: bad_route.as_ref(),
        skipped: None,
    };
    if sends_away(&next_hop.next_hop_type) {
        let by = match (&bad_route, &table_name) {
            (Some(r), _) if !r.route.is_empty() => format!(
                "route {} ({}) in route table {}",
                r.route,
                r.prefix,
                r.route_table.as_deref().unwrap_or("?")
            ),
            (_, Some(t)) => format!("route table {t}"),
            _ => "Azure's system route".to_owned(),
        };
        let mut finding = Finding::new(
            CheckId::NetworkPath,
            Status::Fail,
            format!("The reply to {from} goes to {hop}: {by}"),
        );
        for line in lines {
            finding = finding.detail(line);
        }
        if let Some(t) = table {
            finding = finding.detail(used_by(t));
        }
        // `remove-route` removes a route that takes the Internet's replies away; a narrower
        // one (an office's range) is the network team's to change.
        match &bad_route {
            Some(r) if covers_the_internet(&r.prefix) => {
                finding = finding.suggests(ActionId::RemoveRoute);
            }
            Some(r) if !r.route.is_empty() => {
                finding = finding.detail(format!(
                    "Change or remove route {} in route table {}, or make the appliance pass the replies on.",
                    r.route,
                    r.route_table.as_deref().unwrap_or("?")
                ));
            }
            _ => {}
        }
        return finding.evidence(evidence);
    }
    let back = format!(
        "the reply to {from} goes to {hop}{}",
        match &table_name {
            Some(t) => format!(" (route table {t})"),
            None => " (system route)".to_owned(),
        }
    );
    let finding = match agree {
        Some(false) => {
            let ours = ours.map_or(String::new(), |o| {
                format!(
                    "{} by {}",
                    verdict_word(o.allowed),
                    o.rule.as_deref().unwrap_or("no rule")
                )
            });
            Finding::new(
                CheckId::NetworkPath,
                Status::Warn,
                format!(
                    "Network Watcher and rdp-doctor disagree on TCP {port} from {from}: Azure says {} by {azure_rule}, the effective rules say {ours}",
                    verdict_word(flow.allowed)
                ),
            )
            .detail("Azure's verdict also counts rules the effective security rules do not list (Virtual Network Manager security admin rules); trust Azure's.")
            .detail(format!("The way back: {back}."))
        }
        _ if !flow.allowed => Finding::new(
            CheckId::NetworkPath,
            Status::Fail,
            format!("{azure}; {back}"),
        ),
        _ => Finding::new(
            CheckId::NetworkPath,
            Status::Pass,
            format!("{azure}; {back}"),
        ),
    };
    let mut finding = finding;
    if ours.is_some() {
        finding = finding.detail(lines[1..].join(""));
    }
    finding.evidence(evidence)
}

#[cfg(test)]
mod tests;
