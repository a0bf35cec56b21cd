//! The gates an estate puts in front of 3389 besides NSGs: Azure Virtual Network Manager's
//! effective security admin rules of a virtual network
//! (`VirtualNetworks_ListNetworkManagerEffectiveSecurityAdminRules`, network spec 2024-03-01,
//! `networkManagerEffectiveConfiguration.json`: a synchronous POST on the virtual network
//! answering `{"value": [...], "skipToken"}`).

use super::{Arm, ArmError, ResourceId};
use crate::diagnose::nsg::{AdminAccess, AdminRule};
use azure_mgmt_network::package_2024_03::models as network;

/// At most this many pages of admin rules are read (a page holds every rule Azure chose to send).
const MAX_PAGES: usize = 10;

fn malformed(what: &str, e: impl std::fmt::Display) -> ArmError {
    ArmError::Malformed {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// The virtual network of a subnet id: (subscription, resource group, virtual network).
pub fn vnet_of_subnet(subnet_id: &str) -> Option<(String, String, String)> {
    let id = ResourceId::parse(subnet_id).ok()?;
    let parts: Vec<&str> = subnet_id.trim_matches('/').split('/').collect();
    let vnet = parts.get(7)?;
    parts
        .get(6)
        .filter(|t| t.eq_ignore_ascii_case("virtualNetworks"))?;
    Some((id.subscription_id, id.resource_group, (*vnet).to_owned()))
}

/// One effective rule (custom or default) as plain facts; outbound rules are left out.
pub(crate) fn admin_rule(rule: network::EffectiveBaseSecurityAdminRuleUnion) -> Option<AdminRule> {
    let (base, properties) = match rule {
        network::EffectiveBaseSecurityAdminRuleUnion::Custom(r) => (
            r.effective_base_security_admin_rule,
            serde_json::to_value(r.properties?).ok()?,
        ),
        network::EffectiveBaseSecurityAdminRuleUnion::Default(r) => (
            r.effective_base_security_admin_rule,
            serde_json::to_value(r.properties?).ok()?,
        ),
    };
    let text = |key: &str| properties[key].as_str().unwrap_or_default().to_owned();
    if !text("direction").eq_ignore_ascii_case("Inbound") {
        return None;
    }
    let prefixes = |key: &str| -> Vec<String> {
        properties[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["addressPrefix"].as_str().map(str::to_owned))
            .collect()
    };
    let id = base.id.unwrap_or_default();
    let (network_manager, configuration, rule_collection, name) = AdminRule::names_from_id(&id);
    Some(AdminRule {
        network_manager,
        configuration,
        rule_collection,
        name,
        access: AdminAccess::parse(&text("access"))?,
        priority: properties["priority"]
            .as_i64()
            .unwrap_or(i64::from(i32::MAX)) as i32,
        protocol: text("protocol"),
        sources: prefixes("sources"),
        destinations: prefixes("destinations"),
        destination_ports: properties["destinationPortRanges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect(),
        id,
    })
}

impl Arm {
    /// The inbound security admin rules Virtual Network Manager applies to the virtual network
    /// of `subnet_id` (none when no network manager covers it).
    pub async fn effective_admin_rules(&self, subnet_id: &str) -> Result<Vec<AdminRule>, ArmError> {
        let (sub, rg, vnet) =
            vnet_of_subnet(subnet_id).ok_or_else(|| malformed("subnet id", subnet_id))?;
        let what = format!("listing the security admin rules of virtual network {vnet}");
        let mut rules = Vec::new();
        let mut skip_token = None;
        for _ in 0..MAX_PAGES {
            let options = network::QueryRequestOptions { skip_token };
            let page = self
                .network
                .list_network_manager_effective_security_admin_rules(&sub, &rg, &vnet, options)
                .await
                .map_err(|e| self.map_err(e, &what))?;
            rules.extend(page.value.into_iter().filter_map(admin_rule));
            match page.skip_token.filter(|t| !t.is_empty()) {
                Some(token) => skip_token = Some(token),
                None => break,
            }
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsofts_example_reads_as_an_inbound_deny_on_22() {
        // NetworkManagerEffectiveSecurityAdminRulesList.json (network spec 2024-03-01).
        let body = serde_json::json!({"value": [{
            "id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/myResourceGroup/providers/Microsoft.Network/networkManagers/testNetworkManager/securityAdminConfigurations/myTestSecurityConfig/ruleCollections/testRuleCollection/rules/SampleAdminRule",
            "configurationDescription": "SampleDescription",
            "ruleCollectionDescription": "SampleRuleCollectionDescription",
            "ruleCollectionAppliesToGroups": [{"networkGroupId": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroup/myResourceGroup/providers/Microsoft.Network/networkManagers/testNetworkManager/networkGroups/group1"}],
            "kind": "Default",
            "properties": {
                "description": "Sample Admin Rule", "flag": "AllowVnetInbound", "protocol": "Tcp",
                "sources": [{"addressPrefixType": "IPPrefix", "addressPrefix": "*"}],
                "destinations": [{"addressPrefixType": "IPPrefix", "addressPrefix": "*"}],
                "sourcePortRanges": ["0-65535"], "destinationPortRanges": ["22"],
                "direction": "Inbound", "access": "Deny", "priority": 1, "provisioningState": "Succeeded"
            },
            "ruleGroups": []
        }], "skipToken": "FakeSkipTokenCode"});
        let list: network::NetworkManagerEffectiveSecurityAdminRulesListResult =
            serde_json::from_value(body).expect("the spec's shape");
        let rules: Vec<AdminRule> = list.value.into_iter().filter_map(admin_rule).collect();
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r.network_manager, "testNetworkManager");
        assert_eq!(r.configuration, "myTestSecurityConfig");
        assert_eq!(r.rule_collection, "testRuleCollection");
        assert_eq!(r.name, "SampleAdminRule");
        assert_eq!(r.access, AdminAccess::Deny);
        assert_eq!(r.destination_ports, vec!["22"]);
        assert_eq!(
            vnet_of_subnet("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vn/subnets/default"),
            Some(("s".into(), "rg".into(), "vn".into()))
        );
    }
}
