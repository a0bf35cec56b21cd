//! The gates in front of 3389 that Microsoft.Network serves besides NSGs: Virtual Network
//! Manager's effective security admin rules of a virtual network
//! (`VirtualNetworks_ListNetworkManagerEffectiveSecurityAdminRules`, network spec 2024-03-01,
//! `networkManagerEffectiveConfiguration.json`; the answer in the shape of its example
//! `NetworkManagerEffectiveSecurityAdminRulesList.json`: a synchronous 200, one page).

use super::super::resource::{check_scope, not_found, rg_prefix, Answer, Ctx};
use super::super::world::AdminRule;
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
