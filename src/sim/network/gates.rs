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
