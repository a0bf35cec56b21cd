//! The network path: route tables and their routes (reads, and the route DELETE as a
//! long-running operation), a NIC's effective routes, and Network Watcher (the region's
//! watchers, IP flow verify and next hop).
//!
//! Microsoft's sources: the network REST spec (2024-03-01) `routeTable.json` (`RouteTables_Get`,
//! `Routes_List`, `Routes_Get`, `Routes_Delete`: 202 with `Location` and
//! `Azure-AsyncOperation`, 204 when the route is not there), `networkInterface.json`
//! (`NetworkInterfaces_GetEffectiveRouteTable`, a long-running POST whose final `Location`
//! answer is the list; example `NetworkInterfaceEffectiveRouteTableList.json`) and
//! `networkWatcher.json` (`NetworkWatchers_ListAll`, `NetworkWatchers_VerifyIPFlow` and
//! `NetworkWatchers_GetNextHop`, long-running POSTs answered through `Location`; examples
//! `NetworkWatcherIpFlowVerify.json`: `{"access", "ruleName"}`, and `NetworkWatcherNextHopGet.json`:
//! `{"nextHopType", "nextHopIpAddress", "routeTableId"}`, `routeTableId` being "System Route"
//! when no user route decides). Microsoft Learn "Virtual network traffic routing": the system
//! routes (the virtual network's space to `VnetLocal`, a `Connected` peer's to `VNetPeering`,
//! 0.0.0.0/0 to `Internet`, 10.0.0.0/8,
//! 172.16.0.0/12, 192.168.0.0/16 and 100.64.0.0/10 to `None`), the longest prefix wins, and a
//! user route beats a system route of the same prefix (which turns `Invalid`). "IP flow verify
//! overview": the verdict comes from the NSGs on the subnet and the NIC and from Virtual
//! Network Manager's security admin rules, which are evaluated first; the answer names the
//! deciding rule as the effective rules do (`securityRules/…`, `defaultSecurityRules/…`).

use super::effective::{effective_nsg_list, internet};
use super::{network_operation_url, prefixes_of, with_retry_after};
use crate::sim::lro::{NewOperation, Outcome};
use crate::sim::resource::{
    check_scope, json_body, lookup_nic, missing, not_found, rg_prefix, subnet_id, Answer, Ctx, Plan,
};
use crate::sim::world::{InGroup, RouteEntry, RouteTable, Vm, World, NETWORK_WATCHER_RG};
use crate::sim::Reply;
use ipnet::Ipv4Net;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

// ---------------------------------------------------------------------------------------------
// Route tables

pub(crate) fn route_table_id(table: &RouteTable) -> String {
    format!(
        "{}/providers/Microsoft.Network/routeTables/{}",
        rg_prefix(&table.subscription, &table.resource_group),
        table.name
    )
}

fn route_json(table: &RouteTable, route: &RouteEntry) -> Value {
    let mut props = json!({
        "provisioningState": "Succeeded",
        "addressPrefix": route.prefix,
        "nextHopType": route.next_hop_type,
        "hasBgpOverride": false,
    });
    if let Some(ip) = &route.next_hop_ip {
        props["nextHopIpAddress"] = json!(ip);
    }
    json!({
        "name": route.name,
        "id": format!("{}/routes/{}", route_table_id(table), route.name),
        "type": "Microsoft.Network/routeTables/routes",
        "properties": props,
    })
}

/// The subnets whose route table this is.
fn subnets_using(world: &World, table: &RouteTable) -> Vec<String> {
    let mut subnets: Vec<String> = world
        .vms
        .iter()
        .filter(|v| v.subscription.eq_ignore_ascii_case(&table.subscription))
        .filter(|v| {
            world
                .vm_route_table(v)
                .is_some_and(|t| std::ptr::eq(t, table))
        })
        .map(subnet_id)
        .collect();
    subnets.sort();
    subnets.dedup();
    subnets
}

fn lookup_table<'w>(
    world: &'w World,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<&'w RouteTable, Reply> {
    check_scope(world, sub, Some(rg))?;
    world
        .find_route_table(sub, rg, name)
        .ok_or_else(|| not_found("Microsoft.Network/routeTables", name, rg))
}

/// `GET routeTables/{name}`: the table with its routes and the subnets that use it.
pub(crate) fn get_route_table(world: &World, sub: &str, rg: &str, name: &str) -> Answer {
    let table = lookup_table(world, sub, rg, name)?;
    Ok(Reply::json(
        200,
        &json!({
            "name": table.name,
            "id": route_table_id(table),
            "type": "Microsoft.Network/routeTables",
            "location": table.location,
            "properties": {
                "provisioningState": "Succeeded",
                "disableBgpRoutePropagation": false,
                "routes": table.routes.iter().map(|r| route_json(table, r)).collect::<Vec<_>>(),
                "subnets": subnets_using(world, table).into_iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            },
        }),
    ))
}

/// `GET routeTables/{name}/routes`.
pub(crate) fn list_routes(world: &World, sub: &str, rg: &str, name: &str) -> Answer {
    let table = lookup_table(world, sub, rg, name)?;
    let value: Vec<Value> = table.routes.iter().map(|r| route_json(table, r)).collect();
    Ok(Reply::json(200, &json!({ "value": value })))
}

/// `GET routeTables/{name}/routes/{route}`; a route being deleted shows `Deleting` until the
/// operation ends (the network spec's `ProvisioningState`).
pub(crate) fn get_route(ctx: &Ctx<'_>, sub: &str, rg: &str, name: &str, route: &str) -> Answer {
    let table = lookup_table(ctx.world, sub, rg, name)?;
    if let Some(deleting) = ctx
        .lro
        .pending_view(&format!("{}/routes/{route}", route_table_id(table)))
    {
        return Ok(Reply::json(200, &deleting));
    }
    let found = table
        .routes
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(route))
        .ok_or_else(|| {
            Reply::arm_error(
                404,
                "NotFound",
                &format!(
                    "Resource {}/routes/{route} not found.",
                    route_table_id(table)
                ),
            )
        })?;
    Ok(Reply::json(200, &route_json(table, found)))
}

/// `DELETE routeTables/{name}/routes/{route}`: 202 and an operation that removes the route
/// when it ends; 204 when there is no such route.
pub(crate) fn delete_route(
    ctx: &mut Ctx<'_>,
    sub: &str,
    rg: &str,
    name: &str,
    route: &str,
) -> Answer {
    let table = lookup_table(ctx.world, sub, rg, name)?;
    let Some(found) = table
        .routes
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(route))
    else {
        return Ok(Reply::empty(204));
    };
    let route_id = format!("{}/routes/{}", route_table_id(table), found.name);
    let (table_sub, table_rg, table_name, route_name, location) = (
        table.subscription.clone(),
        table.resource_group.clone(),
        table.name.clone(),
        found.name.clone(),
        table.location.clone(),
    );
    let mut deleting = route_json(table, found);
    deleting["properties"]["provisioningState"] = json!("Deleting");
    let mut plan = Plan::new(Outcome::Succeeded);
    plan.pending_view = Some(deleting);
    plan.on_complete = Some(Box::new(move |world: &mut World| {
        if let Some(table) = world
            .route_tables
            .iter_mut()
            .find(|t| t.is(&table_sub, &table_rg, &table_name))
        {
            table.routes.retain(|r| r.name != route_name);
        }
    }));
    let op = ctx.accept(sub, "route delete", Some(route_id), plan);
    Ok(Reply::empty(202)
        .header(
            "Location",
            network_operation_url(ctx.base, sub, &location, &op),
        )
        .header(
            "Azure-AsyncOperation",
            super::rules::network_operation_status_url(ctx.base, sub, &location, &op),
        )
        .header("Retry-After", ctx.retry_after.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Effective routes

struct EffectiveRoute {
    name: Option<String>,
    user: bool,
    active: bool,
    prefix: Ipv4Net,
    next_hop_type: String,
    next_hop_ip: Option<String>,
    table: Option<String>,
}

fn net(text: &str) -> Option<Ipv4Net> {
    text.parse().ok()
}

/// The routes of a VM's NIC: the system routes, then its subnet's route table; a system route
/// whose prefix a user route also names is `Invalid`.
fn effective_routes(world: &World, vm: &Vm) -> Vec<EffectiveRoute> {
    let table = world.vm_route_table(vm);
    let user: Vec<EffectiveRoute> = table
        .map(|t| {
            t.routes
                .iter()
                .filter_map(|r| {
                    Some(EffectiveRoute {
                        name: Some(r.name.clone()),
                        user: true,
                        active: true,
                        prefix: net(&r.prefix)?,
                        next_hop_type: r.next_hop_type.clone(),
                        next_hop_ip: r.next_hop_ip.clone(),
                        table: Some(route_table_id(t)),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let vnet = prefixes_of(&vm.private_ip).1;
    let system = [
        (vnet.as_str(), "VnetLocal"),
        ("0.0.0.0/0", "Internet"),
        ("10.0.0.0/8", "None"),
        ("172.16.0.0/12", "None"),
        ("192.168.0.0/16", "None"),
        ("100.64.0.0/10", "None"),
    ];
    // A peering in the state `Connected` adds a system route for each address range of the
    // peer, next hop `VNetPeering` (Microsoft Learn "Virtual network traffic routing").
    let peers: Vec<String> = world
        .connected_peer_spaces(vm)
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut routes: Vec<EffectiveRoute> = system
        .into_iter()
        .chain(peers.iter().map(|p| (p.as_str(), "VNetPeering")))
        .filter_map(|(prefix, hop)| {
            let prefix = net(prefix)?;
            Some(EffectiveRoute {
                name: None,
                user: false,
                active: !user.iter().any(|u| u.prefix == prefix),
                prefix,
                next_hop_type: hop.to_owned(),
                next_hop_ip: None,
                table: None,
            })
        })
        .collect();
    routes.extend(user);
    routes
}

/// The active route with the longest prefix holding `destination`; user routes first among
/// equals.
fn best_route(routes: &[EffectiveRoute], destination: Ipv4Addr) -> Option<&EffectiveRoute> {
    routes
        .iter()
        .filter(|r| r.active && r.prefix.contains(&destination))
        .max_by_key(|r| (r.prefix.prefix_len(), r.user))
}

fn effective_route_json(route: &EffectiveRoute) -> Value {
    let mut out = json!({
        "source": if route.user { "User" } else { "Default" },
        "state": if route.active { "Active" } else { "Invalid" },
        "addressPrefix": [route.prefix.to_string()],
        "nextHopIpAddress": route.next_hop_ip.iter().collect::<Vec<_>>(),
        "nextHopType": route.next_hop_type,
    });
    if let Some(name) = &route.name {
        out["name"] = json!(name);
        out["disableBgpRoutePropagation"] = json!(false);
    }
    out
}

/// A long-running POST whose result waits at `Location` (effective routes, IP flow verify,
/// next hop): 202 now, the body once Network has computed it.
fn computed(ctx: &mut Ctx<'_>, sub: &str, location: &str, name: &str, result: Value) -> Reply {
    let id = ctx.lro.begin(NewOperation {
        subscription: sub.to_owned(),
        // Ready once computed (`ready_at`), however many polls a test makes writes take: these
        // reads are not the operations a test slows down.
        polls: 0,
        outcome: Outcome::Body(result),
        name: name.to_owned(),
        resource: None,
        steps: Vec::new(),
        on_complete: None,
        pending_view: None,
        // Network computes these as it computes effective security rules.
        ready_at: Some(std::time::Instant::now() + ctx.effective_nsg_time),
    });
    let accepted = Reply::empty(202).header(
        "Location",
        network_operation_url(ctx.base, sub, location, &id),
    );
    with_retry_after(accepted, ctx)
}

fn not_running(vm: &Vm, what: &str) -> Reply {
    Reply::arm_error(
        400,
        "NicNotAttachedToRunningVm",
        &format!(
            "Network interface {} is not attached to a running virtual machine. {what} are only available while the virtual machine '{}' is running.",
            crate::sim::resource::nic_id(vm),
            vm.name
        ),
    )
}

/// `POST networkInterfaces/{nic}/effectiveRouteTable`.
pub(crate) fn effective_route_table(ctx: &mut Ctx<'_>, sub: &str, rg: &str, nic: &str) -> Answer {
    let vm = lookup_nic(ctx.world, sub, rg, nic)?;
    if vm.power_state != crate::sim::world::PowerState::Running {
        return Err(not_running(vm, "Effective routes"));
    }
    let value: Vec<Value> = effective_routes(ctx.world, vm)
        .iter()
        .map(effective_route_json)
        .collect();
    let location = vm.location.clone();
    Ok(computed(
        ctx,
        sub,
        &location,
        "effectiveRouteTable",
        json!({ "value": value }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Network Watcher

fn watcher_name(region: &str) -> String {
    format!("NetworkWatcher_{region}")
}

fn watcher_json(sub: &str, region: &str) -> Value {
    let name = watcher_name(region);
    json!({
        "id": format!("{}/providers/Microsoft.Network/networkWatchers/{name}", rg_prefix(sub, NETWORK_WATCHER_RG)),
        "name": name,
        "type": "Microsoft.Network/networkWatchers",
        "location": region,
        "properties": {"provisioningState": "Succeeded"},
    })
}

/// The regions of the subscription's Network Watchers.
fn watcher_regions(world: &World, sub: &str) -> Vec<String> {
    let mut regions: Vec<String> = world
        .vms
        .iter()
        .filter(|v| v.subscription.eq_ignore_ascii_case(sub))
        .map(|v| v.location.to_ascii_lowercase())
        .filter(|r| world.has_network_watcher(sub, r))
        .collect();
    regions.sort();
    regions.dedup();
    regions
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Network/networkWatchers` (`NetworkWatchers_ListAll`).
pub(crate) fn list_network_watchers(world: &World, sub: &str) -> Answer {
    check_scope(world, sub, None)?;
    let value: Vec<Value> = watcher_regions(world, sub)
        .iter()
        .map(|r| watcher_json(sub, r))
        .collect();
    Ok(Reply::json(200, &json!({ "value": value })))
}

/// The watcher the path names, or ARM's 404.
fn lookup_watcher(world: &World, sub: &str, rg: &str, name: &str) -> Result<String, Reply> {
    check_scope(world, sub, Some(rg))?;
    let region = rg
        .eq_ignore_ascii_case(NETWORK_WATCHER_RG)
        .then(|| {
            watcher_regions(world, sub)
                .into_iter()
                .find(|r| watcher_name(r).eq_ignore_ascii_case(name))
        })
        .flatten();
    region.ok_or_else(|| not_found("Microsoft.Network/networkWatchers", name, rg))
}

fn field<'b>(body: &'b Value, name: &str) -> Result<&'b str, Reply> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| missing(name))
}

fn address(body: &Value, name: &str) -> Result<Ipv4Addr, Reply> {
    field(body, name)?.parse().map_err(|_| {
        Reply::arm_error(
            400,
            "InvalidRequestFormat",
            &format!("Cannot parse the request: '{name}' is not a valid IPv4 address."),
        )
    })
}

/// The VM a Network Watcher request targets (`targetResourceId`).
fn target_vm<'w>(world: &'w World, body: &Value) -> Result<&'w Vm, Reply> {
    let id = field(body, "targetResourceId")?;
    world
        .vms
        .iter()
        .find(|v| v.id().eq_ignore_ascii_case(id))
        .ok_or_else(|| Reply::arm_error(404, "NotFound", &format!("Resource {id} not found.")))
}

fn in_ports(range: &str, port: u16) -> bool {
    match range.split_once('-') {
        Some((a, b)) => match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
            (Ok(a), Ok(b)) => (a..=b).contains(&port),
            _ => false,
        },
        None => range == "*" || range.trim().parse::<u16>() == Ok(port),
    }
}

fn in_prefixes<'a>(prefixes: impl IntoIterator<Item = &'a str>, ip: Ipv4Addr) -> bool {
    prefixes.into_iter().any(|p| match p {
        "*" => true,
        p => p
            .parse::<Ipv4Net>()
            .or_else(|_| p.parse::<Ipv4Addr>().map(Ipv4Net::from))
            .is_ok_and(|n| n.contains(&ip)),
    })
}

fn strings(rule: &Value, key: &str) -> Vec<String> {
    match rule.get(key) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The addresses a rule names on one side: the expansion of its tags where it has one.
fn side(rule: &Value, expanded: &str, single: &str, plural: &str) -> Vec<String> {
    let mut out = strings(rule, expanded);
    if out.is_empty() {
        out = strings(rule, single);
        out.extend(strings(rule, plural));
    }
    out
}

struct Flow {
    protocol: String,
    local_ip: Ipv4Addr,
    local_port: u16,
    remote_ip: Ipv4Addr,
    remote_port: u16,
}

/// The first inbound rule of one effective NSG (lowest priority number) matching the flow.
fn deciding_rule(group: &Value, flow: &Flow) -> Option<(String, String)> {
    let rules = group["effectiveSecurityRules"].as_array()?;
    let mut matching: Vec<&Value> = rules
        .iter()
        .filter(|r| r["direction"] == "Inbound")
        .filter(|r| {
            r["protocol"]
                .as_str()
                .is_some_and(|p| p == "All" || p.eq_ignore_ascii_case(&flow.protocol))
        })
        .filter(|r| {
            side(
                r,
                "destinationPortRange",
                "destinationPortRange",
                "destinationPortRanges",
            )
            .iter()
            .any(|p| in_ports(p, flow.local_port))
        })
        .filter(|r| {
            strings(r, "sourcePortRange")
                .iter()
                .chain(strings(r, "sourcePortRanges").iter())
                .any(|p| in_ports(p, flow.remote_port))
        })
        .filter(|r| {
            let sources = side(
                r,
                "expandedSourceAddressPrefix",
                "sourceAddressPrefix",
                "sourceAddressPrefixes",
            );
            in_prefixes(sources.iter().map(String::as_str), flow.remote_ip)
        })
        .filter(|r| {
            let destinations = side(
                r,
                "expandedDestinationAddressPrefix",
                "destinationAddressPrefix",
                "destinationAddressPrefixes",
            );
            in_prefixes(destinations.iter().map(String::as_str), flow.local_ip)
        })
        .collect();
    matching.sort_by_key(|r| r["priority"].as_i64().unwrap_or(i64::MAX));
    let rule = matching.first()?;
    Some((
        rule["access"].as_str().unwrap_or("Deny").to_owned(),
        rule["name"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Azure's verdict on an inbound flow: the admin rules of the VM's virtual network first, then
/// the subnet's NSG and the NIC's, each of which must allow it.
fn verify_inbound(world: &World, vm: &Vm, flow: &Flow) -> (String, Option<String>) {
    // In priority order, the first match deciding ("Security admin rules in Azure Virtual
    // Network Manager"): Deny and AlwaysAllow here, Allow by handing over to the NSGs.
    for rule in world.admin_rules_of(vm) {
        let sources = match rule.source.to_ascii_lowercase().as_str() {
            "internet" => internet(),
            _ => vec![rule.source.clone()],
        };
        let matches = flow.protocol.eq_ignore_ascii_case("Tcp")
            && in_ports(&rule.destination_port, flow.local_port)
            && in_prefixes(sources.iter().map(String::as_str), flow.remote_ip);
        match (matches, rule.access.as_str()) {
            (true, "Deny") => return ("Deny".to_owned(), Some(rule.name.clone())),
            (true, "AlwaysAllow") => return ("Allow".to_owned(), Some(rule.name.clone())),
            (true, _) => break,
            _ => {}
        }
    }
    let list = effective_nsg_list(world, vm);
    let mut verdict = ("Allow".to_owned(), None);
    for group in list["value"].as_array().into_iter().flatten() {
        match deciding_rule(group, flow) {
            Some((access, name)) if access == "Deny" => return (access, Some(name)),
            Some((access, name)) => verdict = (access, Some(name)),
            // An NSG always ends in DenyAllInBound; a flow it does not match is not possible.
            None => {}
        }
    }
    verdict
}

/// `POST networkWatchers/{watcher}/ipFlowVerify`.
pub(crate) fn ip_flow_verify(ctx: &mut Ctx<'_>, sub: &str, rg: &str, watcher: &str) -> Answer {
    let region = lookup_watcher(ctx.world, sub, rg, watcher)?;
    let body = json_body(ctx)?;
    let vm = target_vm(ctx.world, &body)?;
    let direction = field(&body, "direction")?;
    let protocol = field(&body, "protocol")?.to_owned();
    let port = |name: &str| -> Result<u16, Reply> {
        let text = field(&body, name)?;
        if text == "*" {
            return Ok(0);
        }
        text.parse().map_err(|_| {
            Reply::arm_error(
                400,
                "InvalidRequestFormat",
                &format!("Cannot parse the request: '{name}' must be a port (0-65535)."),
            )
        })
    };
    let flow = Flow {
        protocol,
        local_ip: address(&body, "localIPAddress")?,
        local_port: port("localPort")?,
        remote_ip: address(&body, "remoteIPAddress")?,
        remote_port: port("remotePort")?,
    };
    if !direction.eq_ignore_ascii_case("Inbound") {
        return Err(Reply::arm_error(
            400,
            "InvalidRequestFormat",
            "The simulator verifies inbound flows only.",
        ));
    }
    if vm.power_state != crate::sim::world::PowerState::Running {
        return Err(not_running(vm, "Security rules"));
    }
    let (access, rule) = verify_inbound(ctx.world, vm, &flow);
    let mut result = json!({ "access": access });
    if let Some(rule) = rule {
        result["ruleName"] = json!(rule);
    }
    Ok(computed(ctx, sub, &region, "ipFlowVerify", result))
}

/// `POST networkWatchers/{watcher}/nextHop`.
pub(crate) fn next_hop(ctx: &mut Ctx<'_>, sub: &str, rg: &str, watcher: &str) -> Answer {
    let region = lookup_watcher(ctx.world, sub, rg, watcher)?;
    let body = json_body(ctx)?;
    let vm = target_vm(ctx.world, &body)?;
    address(&body, "sourceIPAddress")?;
    let destination = address(&body, "destinationIPAddress")?;
    if vm.power_state != crate::sim::world::PowerState::Running {
        return Err(not_running(vm, "Routes"));
    }
    let routes = effective_routes(ctx.world, vm);
    let result = match best_route(&routes, destination) {
        Some(route) => {
            let mut out = json!({
                "nextHopType": route.next_hop_type,
                "routeTableId": route.table.clone().unwrap_or_else(|| "System Route".to_owned()),
            });
            if let Some(ip) = &route.next_hop_ip {
                out["nextHopIpAddress"] = json!(ip);
            }
            out
        }
        None => json!({"nextHopType": "None", "routeTableId": "System Route"}),
    };
    Ok(computed(ctx, sub, &region, "nextHop", result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(world: &World, to: &str) -> (String, Option<String>, bool) {
        let routes = effective_routes(world, &world.vms[0]);
        let best = best_route(&routes, to.parse().expect("ip")).expect("a route");
        (
            best.next_hop_type.clone(),
            best.next_hop_ip.clone(),
            best.user,
        )
    }

    #[test]
    fn the_longest_prefix_wins_and_a_user_route_beats_the_system_route_it_shadows() {
        let plain = World::new().vm("web-01");
        assert_eq!(hop(&plain, "203.0.113.9").0, "Internet");
        assert_eq!(hop(&plain, "10.0.7.7").0, "VnetLocal");
        assert_eq!(hop(&plain, "10.9.0.1").0, "None");
        // A Connected peer's space goes to VNetPeering; an Initiated one's stays dropped.
        let peered = |state: &str| {
            World::new()
                .vm("web-01")
                .in_vnet("vnet-spoke")
                .hub_bastion("vnet-hub", "bastion-hub", "Standard", true, "10.1.255.0/26")
                .peered_with("vnet-hub", state)
        };
        assert_eq!(hop(&peered("Connected"), "10.1.255.4").0, "VNetPeering");
        assert_eq!(hop(&peered("Initiated"), "10.1.255.4").0, "None");
        let udr = World::new()
            .vm("udr-01")
            .default_route_to_appliance("10.0.2.4")
            .route("office", "203.0.113.0/24", "Internet", None);
        assert_eq!(
            hop(&udr, "198.51.100.7"),
            ("VirtualAppliance".into(), Some("10.0.2.4".into()), true)
        );
        assert_eq!(hop(&udr, "203.0.113.9").0, "Internet");
        let routes = effective_routes(&udr, &udr.vms[0]);
        let system_default = routes
            .iter()
            .find(|r| !r.user && r.prefix.prefix_len() == 0)
            .expect("system 0.0.0.0/0");
        assert!(!system_default.active, "shadowed by the user route");
    }

    fn flow(from: &str) -> Flow {
        Flow {
            protocol: "TCP".into(),
            local_ip: "10.0.1.4".parse().expect("ip"),
            local_port: 3389,
            remote_ip: from.parse().expect("ip"),
            remote_port: 60000,
        }
    }

    #[test]
    fn ip_flow_verify_names_the_deciding_rule_admin_rules_first() {
        let open = World::new().vm("web-01");
        assert_eq!(
            verify_inbound(&open, &open.vms[0], &flow("203.0.113.9")),
            ("Allow".into(), Some("securityRules/allow-rdp".into()))
        );
        let denied = World::new().vm("web-01").nsg_denies_rdp();
        assert_eq!(
            verify_inbound(&denied, &denied.vms[0], &flow("203.0.113.9")),
            (
                "Deny".into(),
                Some("securityRules/deny-rdp-internet".into())
            )
        );
        let mut bare = World::new().vm("web-01");
        bare.vms[0].nic_nsg = None;
        assert_eq!(
            verify_inbound(&bare, &bare.vms[0], &flow("203.0.113.9")),
            ("Allow".into(), None)
        );
        let admin = World::new().vm("web-01").admin_rule(
            "deny-rdp-from-internet",
            "Deny",
            "Internet",
            "3389",
        );
        assert_eq!(
            verify_inbound(&admin, &admin.vms[0], &flow("203.0.113.9")),
            ("Deny".into(), Some("deny-rdp-from-internet".into()))
        );
        assert_eq!(
            verify_inbound(&admin, &admin.vms[0], &flow("10.0.1.9")).0,
            "Allow",
            "the admin rule is for the Internet only"
        );
    }
}
