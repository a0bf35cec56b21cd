//! Microsoft.Network: NICs, public IPs, subnets, NSGs, effective security rules (computed in
//! `effective`), NSG security rules (`rules`), route tables, effective routes and Network
//! Watcher (`path`) and Network's operations.

mod effective;
mod gates;
mod path;
mod rules;

pub(crate) use path::{
    delete_route, effective_route_table, get_route, get_route_table, ip_flow_verify,
    list_network_watchers, list_routes, next_hop,
};

use effective::effective_nsg_list;
pub(crate) use gates::{effective_admin_rules, get_vnet, list_bastions};
pub(crate) use rules::{get_security_rule, network_operation_status, put_security_rule};

use super::lro::{NewOperation, Outcome, Poll};
use super::resource::{
    check_scope, current_url, ipconfig_id, lookup_nic, nic_id, not_found, nsg_id,
    operation_not_found, public_ip_id, rg_prefix, subnet_id, vm_id, vms_in_scope, Answer, Ctx,
    Page,
};
use super::world::{Allocation, ByName, Nsg, PowerState, PublicIp, Rule, Sku, Vm, World};
use super::{stable_uuid, Reply};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Network interfaces

fn mac_address(vm: &Vm) -> String {
    let hex = stable_uuid(&nic_id(vm))
        .replace('-', "")
        .to_ascii_uppercase();
    format!("00-0D-3A-{}-{}-{}", &hex[0..2], &hex[2..4], &hex[4..6])
}

/// The `$expand` of a NIC GET that puts the whole public IP in its IP configuration.
pub(crate) const PUBLIC_IP_EXPAND: &str = "ipConfigurations/publicIPAddress";

/// The NSG on a VM's NIC.
pub(crate) fn nic_nsg<'w>(world: &'w World, vm: &Vm) -> Option<&'w Nsg> {
    world.nic_nsg(vm)
}

/// A VM's NIC with its NSG `nsg`. The public IP is an `{"id"}` reference, or the whole
/// resource (as `GET publicIPAddresses/{name}` serves it) with `expand_public_ip`.
pub(crate) fn nic_json(vm: &Vm, nsg: Option<&Nsg>, expand_public_ip: bool) -> Value {
    let mut ip_props = json!({
        "provisioningState": "Succeeded",
        "privateIPAddress": vm.private_ip,
        "privateIPAllocationMethod": "Dynamic",
        "subnet": {"id": subnet_id(vm)},
        "primary": true,
        "privateIPAddressVersion": "IPv4",
    });
    if let Some(ip) = &vm.public_ip {
        ip_props["publicIPAddress"] = if expand_public_ip {
            public_ip_json(vm, ip)
        } else {
            json!({"id": public_ip_id(vm, &ip.name)})
        };
    }
    let mut properties = json!({
        "provisioningState": "Succeeded",
        "ipConfigurations": [{
            "name": "ipconfig1",
            "id": ipconfig_id(vm),
            "properties": ip_props,
        }],
        "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
        "macAddress": mac_address(vm),
        "enableAcceleratedNetworking": false,
        "enableIPForwarding": false,
        "primary": true,
        "virtualMachine": {"id": vm_id(vm)},
        "nicType": "Standard",
    });
    if let Some(nsg) = nsg {
        properties["networkSecurityGroup"] = json!({"id": nsg_id(nsg)});
    }
    json!({
        "name": vm.nic_name(),
        "id": nic_id(vm),
        "location": vm.location,
        "properties": properties,
        "type": "Microsoft.Network/networkInterfaces",
    })
}

/// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Network/networkInterfaces`:
/// one NIC per VM in scope, paged.
pub(crate) fn list_nics(ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Answer {
    check_scope(ctx.world, sub, rg)?;
    let vms = vms_in_scope(ctx.world, sub, rg);
    let page = Page::of(ctx, vms.len(), "2024-03-01")?;
    // Indexed once, so a page finds each NIC's NSG without scanning them all.
    let nsgs = ByName::new(&ctx.world.nsgs, "NSG");
    let value = vms[page.items.clone()]
        .iter()
        .map(|vm| {
            nic_json(
                vm,
                vm.nic_nsg.as_deref().and_then(|r| nsgs.get(vm, r)),
                false,
            )
        })
        .collect();
    Ok(page.reply(value))
}

// ---------------------------------------------------------------------------------------------
// Public IP addresses

/// A public IP address resource as `GET publicIPAddresses/{name}` serves it.
fn public_ip_json(vm: &Vm, ip: &PublicIp) -> Value {
    let mut properties = json!({
        "provisioningState": "Succeeded",
        "resourceGuid": stable_uuid(&public_ip_id(vm, &ip.name)),
        "publicIPAddressVersion": "IPv4",
        "publicIPAllocationMethod": match ip.allocation { Allocation::Static => "Static", Allocation::Dynamic => "Dynamic" },
        "idleTimeoutInMinutes": 4,
        "ipConfiguration": {"id": ipconfig_id(vm)},
        "ipTags": [],
    });
    if let Some(address) = &ip.address {
        properties["ipAddress"] = json!(address);
    }
    let sku = match ip.sku {
        Sku::Standard => "Standard",
        Sku::Basic => "Basic",
    };
    json!({
        "name": ip.name,
        "id": public_ip_id(vm, &ip.name),
        "location": vm.location,
        "sku": {"name": sku, "tier": "Regional"},
        "properties": properties,
        "type": "Microsoft.Network/publicIPAddresses",
    })
}

pub(crate) fn get_public_ip(world: &World, sub: &str, rg: &str, name: &str) -> Answer {
    check_scope(world, sub, Some(rg))?;
    let (vm, ip) = vms_in_scope(world, sub, Some(rg))
        .into_iter()
        .find_map(|v| {
            v.public_ip
                .as_ref()
                .filter(|ip| ip.name.eq_ignore_ascii_case(name))
                .map(|ip| (v, ip))
        })
        .ok_or_else(|| not_found("Microsoft.Network/publicIPAddresses", name, rg))?;
    Ok(Reply::json(200, &public_ip_json(vm, ip)))
}

/// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Network/publicIPAddresses`:
/// the public IP of every VM in scope that has one, paged.
pub(crate) fn list_public_ips(ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Answer {
    check_scope(ctx.world, sub, rg)?;
    let ips: Vec<(&Vm, &PublicIp)> = vms_in_scope(ctx.world, sub, rg)
        .into_iter()
        .filter_map(|vm| vm.public_ip.as_ref().map(|ip| (vm, ip)))
        .collect();
    let page = Page::of(ctx, ips.len(), "2024-03-01")?;
    let value = ips[page.items.clone()]
        .iter()
        .map(|(vm, ip)| public_ip_json(vm, ip))
        .collect();
    Ok(page.reply(value))
}

// ---------------------------------------------------------------------------------------------
// Subnets

/// "10.0.1.4" -> ("10.0.1.0/24", "10.0.0.0/16").
fn prefixes_of(ip: &str) -> (String, String) {
    let octets: Vec<&str> = ip.split('.').collect();
    match octets.as_slice() {
        [a, b, c, _] => (format!("{a}.{b}.{c}.0/24"), format!("{a}.{b}.0.0/16")),
        _ => ("10.0.1.0/24".to_owned(), "10.0.0.0/16".to_owned()),
    }
}

/// The smallest prefix, at most /24, holding the private addresses of every VM on a subnet (a
/// fleet spans several /24s).
fn subnet_prefix(on_subnet: &[&Vm]) -> String {
    let addresses: Option<Vec<u32>> = on_subnet
        .iter()
        .map(|v| {
            v.private_ip
                .parse::<std::net::Ipv4Addr>()
                .ok()
                .map(u32::from)
        })
        .collect();
    match addresses.as_deref() {
        Some([base, rest @ ..]) => {
            let differing = rest.iter().fold(0, |bits, a| bits | (a ^ base));
            // At most 24, so the length is always valid.
            let length = differing.leading_zeros().min(24) as u8;
            ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::from(*base), length)
                .trunc()
                .to_string()
        }
        _ => prefixes_of(on_subnet.first().map_or("", |v| v.private_ip.as_str())).0,
    }
}

pub(crate) fn get_subnet(world: &World, sub: &str, rg: &str, vnet: &str, subnet: &str) -> Answer {
    check_scope(world, sub, Some(rg))?;
    if subnet.eq_ignore_ascii_case("AzureBastionSubnet") {
        if let Some(body) = gates::bastion_subnet(world, sub, rg, vnet) {
            return Ok(Reply::json(200, &body));
        }
    }
    let in_vnet: Vec<&Vm> = world
        .vms
        .iter()
        .filter(|v| v.is_in(sub, rg) && v.vnet_name().eq_ignore_ascii_case(vnet))
        .collect();
    if in_vnet.is_empty() {
        return Err(not_found("Microsoft.Network/virtualNetworks", vnet, rg));
    }
    let on_subnet: Vec<&Vm> = in_vnet
        .into_iter()
        .filter(|v| v.subnet.eq_ignore_ascii_case(subnet))
        .collect();
    let Some(first) = on_subnet.first() else {
        return Err(Reply::arm_error(
            404,
            "NotFound",
            &format!(
                "Resource {}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet} not found.",
                rg_prefix(sub, rg)
            ),
        ));
    };
    let mut properties = json!({
        "addressPrefix": subnet_prefix(&on_subnet),
        "provisioningState": "Succeeded",
        "ipConfigurations": on_subnet.iter().map(|v| json!({"id": ipconfig_id(v)})).collect::<Vec<_>>(),
        "privateEndpointNetworkPolicies": "Disabled",
        "privateLinkServiceNetworkPolicies": "Enabled",
    });
    if let Some(nsg) = world.subnet_nsg(first) {
        properties["networkSecurityGroup"] = json!({"id": nsg_id(nsg)});
    }
    if let Some(table) = world.vm_route_table(first) {
        properties["routeTable"] = json!({"id": path::route_table_id(table)});
    }
    Ok(Reply::json(
        200,
        &json!({
            "id": subnet_id(first),
            "name": first.subnet,
            "properties": properties,
            "type": "Microsoft.Network/virtualNetworks/subnets",
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Network security groups

/// Azure's six default rules, as in NetworkSecurityGroupGet.json.
pub(crate) fn default_rules() -> Vec<Rule> {
    let rule = |name: &str,
                priority,
                direction: &str,
                access: &str,
                src: &str,
                dst: &str,
                description: &str| Rule {
        name: name.to_owned(),
        priority,
        direction: direction.to_owned(),
        access: access.to_owned(),
        protocol: "*".to_owned(),
        source: Some(src.to_owned()),
        sources: Vec::new(),
        source_port: "*".to_owned(),
        destination: Some(dst.to_owned()),
        destination_port: Some("*".to_owned()),
        destination_ports: Vec::new(),
        description: Some(description.to_owned()),
    };
    vec![
        rule(
            "AllowVnetInBound",
            65000,
            "Inbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
            "Allow inbound traffic from all VMs in VNET",
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            65001,
            "Inbound",
            "Allow",
            "AzureLoadBalancer",
            "*",
            "Allow inbound traffic from azure load balancer",
        ),
        rule(
            "DenyAllInBound",
            65500,
            "Inbound",
            "Deny",
            "*",
            "*",
            "Deny all inbound traffic",
        ),
        rule(
            "AllowVnetOutBound",
            65000,
            "Outbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
            "Allow outbound traffic from all VMs to all VMs in VNET",
        ),
        rule(
            "AllowInternetOutBound",
            65001,
            "Outbound",
            "Allow",
            "*",
            "Internet",
            "Allow outbound traffic from all VMs to Internet",
        ),
        rule(
            "DenyAllOutBound",
            65500,
            "Outbound",
            "Deny",
            "*",
            "*",
            "Deny all outbound traffic",
        ),
    ]
}

pub(crate) fn rule_json(nsg: &Nsg, collection: &str, rule: &Rule) -> Value {
    let mut props = json!({
        "provisioningState": "Succeeded",
        "protocol": rule.protocol,
        "sourcePortRange": rule.source_port,
        "destinationAddressPrefix": rule.destination.as_deref().unwrap_or("*"),
        "access": rule.access,
        "priority": rule.priority,
        "direction": rule.direction,
    });
    if let Some(description) = &rule.description {
        props["description"] = json!(description);
    }
    if rule.destination_ports.is_empty() {
        props["destinationPortRange"] = json!(rule.destination_port.as_deref().unwrap_or("*"));
    } else {
        props["destinationPortRanges"] = json!(rule.destination_ports);
    }
    if rule.sources.is_empty() {
        props["sourceAddressPrefix"] = json!(rule.source.as_deref().unwrap_or("*"));
    } else {
        props["sourceAddressPrefixes"] = json!(rule.sources);
    }
    json!({
        "name": rule.name,
        "id": format!("{}/{collection}/{}", nsg_id(nsg), rule.name),
        "type": format!("Microsoft.Network/networkSecurityGroups/{collection}"),
        "properties": props,
    })
}

pub(crate) fn get_nsg(world: &World, sub: &str, rg: &str, name: &str) -> Answer {
    check_scope(world, sub, Some(rg))?;
    let nsg = world
        .find_nsg(sub, rg, name)
        .ok_or_else(|| not_found("Microsoft.Network/networkSecurityGroups", name, rg))?;
    let in_sub = |v: &&Vm| v.subscription.eq_ignore_ascii_case(sub);
    // The VMs whose reference picks this NSG (not another group's of the same name).
    let uses = |v: &Vm, r: &Option<String>| {
        r.as_deref()
            .and_then(|r| world.vm_nsg(v, r))
            .is_some_and(|n| std::ptr::eq(n, nsg))
    };
    let nics: Vec<Value> = world
        .vms
        .iter()
        .filter(in_sub)
        .filter(|v| uses(v, &v.nic_nsg))
        .map(|v| json!({"id": nic_id(v)}))
        .collect();
    let mut subnets: Vec<String> = world
        .vms
        .iter()
        .filter(in_sub)
        .filter(|v| uses(v, &v.subnet_nsg))
        .map(subnet_id)
        .collect();
    subnets.dedup();
    Ok(Reply::json(
        200,
        &json!({
            "name": nsg.name,
            "id": nsg_id(nsg),
            "etag": format!("W/\"{}\"", stable_uuid(&format!("etag{}", nsg_id(nsg)))),
            "type": "Microsoft.Network/networkSecurityGroups",
            "location": nsg.location,
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": stable_uuid(&nsg_id(nsg)),
                "securityRules": nsg.rules.iter().map(|r| rule_json(nsg, "securityRules", r)).collect::<Vec<_>>(),
                "defaultSecurityRules": default_rules().iter().map(|r| rule_json(nsg, "defaultSecurityRules", r)).collect::<Vec<_>>(),
                "networkInterfaces": nics,
                "subnets": subnets.into_iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            },
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Effective security rules

pub(crate) fn effective_nsgs(ctx: &mut Ctx<'_>, sub: &str, rg: &str, nic: &str) -> Answer {
    let vm = lookup_nic(ctx.world, sub, rg, nic)?;
    if vm.power_state != PowerState::Running {
        return Err(Reply::arm_error(
            400,
            "NicNotAttachedToRunningVm",
            &format!(
                "Network interface {} is not attached to a running virtual machine. Effective security rules are only available while the virtual machine '{}' is running.",
                nic_id(vm),
                vm.name
            ),
        ));
    }
    let result = effective_nsg_list(ctx.world, vm);
    let location = vm.location.clone();
    let id = ctx.lro.begin(NewOperation {
        subscription: sub.to_owned(),
        polls: ctx.lro_polls,
        outcome: Outcome::Body(result),
        name: "effectiveNetworkSecurityGroups".to_owned(),
        resource: None,
        steps: Vec::new(),
        on_complete: None,
        pending_view: None,
        ready_at: Some(std::time::Instant::now() + ctx.effective_nsg_time),
    });
    let accepted = Reply::empty(202).header(
        "Location",
        network_operation_url(ctx.base, sub, &location, &id),
    );
    // Azure sends no `Retry-After` here (Azure CLI's recording of `list-effective-nsg`); a
    // test may ask for one. `Retry-After: 0` with `lro_polls = 0` and no computing time: a
    // client polls the Location at once and gets the result, two requests in all.
    Ok(with_retry_after(accepted, ctx))
}

/// An effective-NSG answer that is not the result yet: `Retry-After` only when a test asked for
/// one, or when there is no computing time to wait for (0: poll at once).
fn with_retry_after(reply: Reply, ctx: &Ctx<'_>) -> Reply {
    match ctx.retry_after {
        0 if !ctx.effective_nsg_time.is_zero() => reply,
        secs => reply.header("Retry-After", secs.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Operations

fn network_operation_url(base: &str, sub: &str, location: &str, id: &str) -> String {
    format!(
        "{base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/operationResults/{id}?api-version=2024-03-01"
    )
}

pub(crate) fn network_operation(ctx: &mut Ctx<'_>, sub: &str, id: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    match ctx.lro.poll(sub, id, ctx.world) {
        None => Err(operation_not_found(id)),
        Some(Poll::InProgress { .. }) => {
            let again =
                Reply::empty(202).header("Location", format!("{}{}", ctx.base, current_url(ctx)));
            Ok(with_retry_after(again, ctx))
        }
        Some(Poll::Done { outcome, .. }) => match outcome {
            Outcome::Body(body) => Ok(Reply::json(200, &body)),
            Outcome::Succeeded => Ok(Reply::empty(204)),
            Outcome::Failed { code, message } => Err(Reply::arm_error(400, &code, &message)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_prefix_covers_every_address_on_it() {
        let world = World::new().fleet("rg", "vm", 300);
        let on_subnet: Vec<&Vm> = world.vms.iter().collect();
        assert_eq!(subnet_prefix(&on_subnet), "10.1.0.0/23");
        assert_eq!(subnet_prefix(&on_subnet[..1]), "10.1.0.0/24");
        let single = World::new().vm("web-01");
        assert_eq!(subnet_prefix(&[&single.vms[0]]), "10.0.1.0/24");
    }
}
