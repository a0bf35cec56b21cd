//! The gates in front of 3389 that Microsoft.Network serves besides NSGs: Virtual Network
//! Manager's effective security admin rules of a virtual network
//! (`VirtualNetworks_ListNetworkManagerEffectiveSecurityAdminRules`, network spec 2024-03-01,
//! `networkManagerEffectiveConfiguration.json`; the answer in the shape of its example
//! `NetworkManagerEffectiveSecurityAdminRulesList.json`: a synchronous 200, one page).

use super::super::resource::{check_scope, not_found, rg_prefix, Answer, Ctx, Page};
use super::super::world::{AdminRule, Bastion, World};
use super::super::Reply;
use serde_json::{json, Value};

fn prefix_item(prefix: &str) -> Value {
    // "Internet" is a service tag; addresses, CIDRs and "*" are IP prefixes.
    let kind = if prefix.eq_ignore_ascii_case("Internet") {
        "ServiceTag"
    } else {
        "IPPrefix"
    };
    json!({"addressPrefixType": kind, "addressPrefix": prefix})
}

fn admin_rule_json(rule: &AdminRule) -> Value {
    let group = format!(
        "{}/providers/Microsoft.Network/networkManagers/{}/networkGroups/{}",
        rg_prefix(&rule.subscription, &rule.resource_group),
        rule.network_manager,
        rule.vnet
    );
    json!({
        "id": rule.id(),
        "configurationDescription": "",
        "ruleCollectionDescription": "",
        "ruleCollectionAppliesToGroups": [{"networkGroupId": group}],
        "kind": "Custom",
        "properties": {
            "description": "",
            "protocol": "Tcp",
            "sources": [prefix_item(&rule.source)],
            "destinations": [prefix_item("*")],
            "sourcePortRanges": ["0-65535"],
            "destinationPortRanges": [rule.destination_port],
            "direction": "Inbound",
            "access": rule.access,
            "priority": rule.priority,
            "provisioningState": "Succeeded",
        },
        "ruleGroups": [{"id": group, "properties": {"provisioningState": "Succeeded"}}],
    })
}

/// `POST virtualNetworks/{vnet}/listNetworkManagerEffectiveSecurityAdminRules`: the world's
/// admin rules on that virtual network (an empty list when no network manager covers it).
pub(crate) fn effective_admin_rules(ctx: &mut Ctx<'_>, sub: &str, rg: &str, vnet: &str) -> Answer {
    check_scope(ctx.world, sub, Some(rg))?;
    let Some(vm) = ctx
        .world
        .vms
        .iter()
        .find(|v| v.is_in(sub, rg) && v.vnet_name().eq_ignore_ascii_case(vnet))
    else {
        return Err(not_found("Microsoft.Network/virtualNetworks", vnet, rg));
    };
    let value: Vec<Value> = ctx
        .world
        .admin_rules_of(vm)
        .into_iter()
        .map(admin_rule_json)
        .collect();
    Ok(Reply::json(200, &json!({ "value": value })))
}

/// A Bastion host in the shape of `BastionHostGet.json` (network spec 2024-03-01,
/// `bastionHost.json`): one IP configuration on the virtual network's `AzureBastionSubnet`, with
/// the host's own public IP, `sku.name` and `enableTunneling`.
fn bastion_json(bastion: &Bastion) -> Value {
    let id = bastion.id();
    let group = rg_prefix(&bastion.subscription, &bastion.resource_group);
    json!({
        "name": bastion.name,
        "type": "Microsoft.Network/bastionHosts",
        "id": id,
        "etag": "W/\"00000000-0000-0000-0000-000000000000\"",
        "location": bastion.location,
        "properties": {
            "provisioningState": "Succeeded",
            "dnsName": format!("bst-{}.bastion.azure.com", bastion.name.to_ascii_lowercase()),
            "ipConfigurations": [{
                "name": "bastionHostIpConfiguration",
                "id": format!("{id}/bastionHostIpConfigurations/bastionHostIpConfiguration"),
                "etag": "W/\"00000000-0000-0000-0000-000000000000\"",
                "type": "Microsoft.Network/bastionHosts/bastionHostIpConfigurations",
                "properties": {
                    "provisioningState": "Succeeded",
                    "subnet": {"id": bastion.subnet_id()},
                    "publicIPAddress": {"id": format!(
                        "{group}/providers/Microsoft.Network/publicIPAddresses/{}-pip",
                        bastion.name
                    )},
                    "privateIPAllocationMethod": "Dynamic",
                },
            }],
            "scaleUnits": 2,
            "enableTunneling": bastion.enable_tunneling,
            "enableIpConnect": false,
            "enableShareableLink": false,
            "enableFileCopy": false,
            "disableCopyPaste": false,
        },
        "sku": {"name": bastion.sku},
    })
}

/// `GET bastionHosts` of a subscription or resource group (`BastionHosts_List`,
/// `BastionHosts_ListByResourceGroup`; examples `BastionHostListBySubscription.json`,
/// `BastionHostListByResourceGroup.json`), paged as every list.
pub(crate) fn list_bastions(ctx: &Ctx<'_>, sub: &str, rg: Option<&str>) -> Answer {
    check_scope(ctx.world, sub, rg)?;
    let hosts: Vec<&Bastion> = ctx
        .world
        .bastions
        .iter()
        .filter(|b| {
            b.subscription.eq_ignore_ascii_case(sub)
                && rg.is_none_or(|rg| b.resource_group.eq_ignore_ascii_case(rg))
        })
        .collect();
    let page = Page::of(ctx, hosts.len(), "2024-03-01")?;
    let value = hosts[page.items.clone()]
        .iter()
        .map(|b| bastion_json(b))
        .collect();
    Ok(page.reply(value))
}

/// `GET …/subnets/AzureBastionSubnet` of a virtual network with a Bastion host: its prefix and
/// the host's IP configuration, as `SubnetGet.json` shapes a subnet.
pub(crate) fn bastion_subnet(world: &World, sub: &str, rg: &str, vnet: &str) -> Option<Value> {
    let bastion = world.bastions.iter().find(|b| b.is_in(sub, rg, vnet))?;
    Some(json!({
        "id": bastion.subnet_id(),
        "name": "AzureBastionSubnet",
        "type": "Microsoft.Network/virtualNetworks/subnets",
        "properties": {
            "addressPrefix": world.bastion_subnet_prefix(bastion),
            "provisioningState": "Succeeded",
            "ipConfigurations": [{"id": format!(
                "{}/bastionHostIpConfigurations/bastionHostIpConfiguration",
                bastion.id()
            )}],
            "privateEndpointNetworkPolicies": "Disabled",
            "privateLinkServiceNetworkPolicies": "Enabled",
        },
    }))
}

/// `GET virtualNetworks/{vnet}` (`VirtualNetworks_Get`): the shape of `VirtualNetworkGet.json`
/// (network spec 2024-03-01) with its subnets (the VMs' and the `AzureBastionSubnet`) and its
/// `virtualNetworkPeerings[]`, each in the shape of `VirtualNetworkPeeringGet.json`
/// (`remoteVirtualNetwork`, `remoteAddressSpace`, `peeringState`). A virtual network is one a
/// VM or a Bastion host is in.
pub(crate) fn get_vnet(world: &World, sub: &str, rg: &str, vnet: &str) -> Answer {
    check_scope(world, sub, Some(rg))?;
    let key = (sub.to_owned(), rg.to_owned(), vnet.to_owned());
    let Some(space) = world.vnet_space(&key) else {
        return Err(not_found("Microsoft.Network/virtualNetworks", vnet, rg));
    };
    let in_vnet: Vec<&super::Vm> = world
        .vms
        .iter()
        .filter(|v| v.is_in(sub, rg) && v.vnet_name().eq_ignore_ascii_case(vnet))
        .collect();
    // One VM names the network's spelling of its place.
    let (sub, rg, vnet) = match in_vnet.first() {
        Some(vm) => (
            vm.subscription.as_str(),
            vm.resource_group.as_str(),
            vm.vnet.as_deref().unwrap_or(vnet),
        ),
        None => (sub, rg, vnet),
    };
    let id = format!(
        "{}/providers/Microsoft.Network/virtualNetworks/{vnet}",
        rg_prefix(sub, rg)
    );
    let mut subnets: Vec<Value> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for vm in &in_vnet {
        if names.iter().any(|n| n.eq_ignore_ascii_case(&vm.subnet)) {
            continue;
        }
        names.push(vm.subnet.clone());
        let on_subnet: Vec<&super::Vm> = in_vnet
            .iter()
            .copied()
            .filter(|v| v.subnet.eq_ignore_ascii_case(&vm.subnet))
            .collect();
        subnets.push(json!({
            "name": vm.subnet,
            "id": format!("{id}/subnets/{}", vm.subnet),
            "properties": {
                "provisioningState": "Succeeded",
                "addressPrefix": super::subnet_prefix(&on_subnet),
                "ipConfigurations": on_subnet
                    .iter()
                    .map(|v| json!({"id": super::ipconfig_id(v)}))
                    .collect::<Vec<_>>(),
            },
        }));
    }
    if let Some(body) = bastion_subnet(world, sub, rg, vnet) {
        subnets.push(body);
    }
    let peerings: Vec<Value> = world
        .peerings_of(&key)
        .into_iter()
        .map(|p| {
            let remote = world
                .vnet_space(&p.remote)
                .map(|s| vec![s.to_string()])
                .unwrap_or_default();
            json!({
                "id": format!("{id}/virtualNetworkPeerings/{}", p.name),
                "name": p.name,
                "properties": {
                    "allowVirtualNetworkAccess": true,
                    "allowForwardedTraffic": false,
                    "allowGatewayTransit": false,
                    "useRemoteGateways": false,
                    "remoteVirtualNetwork": {
                        "id": format!(
                            "{}/providers/Microsoft.Network/virtualNetworks/{}",
                            rg_prefix(&p.remote.0, &p.remote.1),
                            p.remote.2
                        ),
                    },
                    "remoteAddressSpace": {"addressPrefixes": remote},
                    "remoteVirtualNetworkAddressSpace": {"addressPrefixes": remote},
                    "peeringState": p.state,
                    "peeringSyncLevel": "FullyInSync",
                    "provisioningState": "Succeeded",
                },
            })
        })
        .collect();
    let location = in_vnet
        .first()
        .map(|v| v.location.clone())
        .or_else(|| {
            world
                .bastions
                .iter()
                .find(|b| b.is_in(sub, rg, vnet))
                .map(|b| b.location.clone())
        })
        .unwrap_or_default();
    Ok(Reply::json(
        200,
        &json!({
            "name": vnet,
            "id": id,
            "type": "Microsoft.Network/virtualNetworks",
            "location": location,
            "properties": {
                "provisioningState": "Succeeded",
                "addressSpace": {"addressPrefixes": [space.to_string()]},
                "subnets": subnets,
                "virtualNetworkPeerings": peerings,
            },
        }),
    ))
}
