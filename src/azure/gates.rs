//! The gates an estate puts in front of 3389 besides NSGs: Azure Virtual Network Manager's
//! effective security admin rules of a virtual network
//! (`VirtualNetworks_ListNetworkManagerEffectiveSecurityAdminRules`, network spec 2024-03-01,
//! `networkManagerEffectiveConfiguration.json`: a synchronous POST on the virtual network
//! answering `{"value": [...], "skipToken"}`).

use super::{Arm, ArmError, OperationHandle, ResourceId, VmRef};
use crate::diagnose::nsg::jit::{JitPolicyFacts, JitPortFacts, JitRequestFacts};
use crate::diagnose::nsg::{AdminAccess, AdminRule};
use crate::runbook::operate::Confirmed;
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

/// Defender for Cloud's just-in-time access over the ARM pipeline (no SDK crate covers
/// Microsoft.Security): `JitNetworkAccessPolicies_List` per subscription and
/// `JitNetworkAccessPolicies_Initiate`, security spec 2020-01-01.
const SECURITY_API: &str = "2020-01-01";

/// At most this many pages of JIT policies are read.
const MAX_JIT_PAGES: usize = 10;

/// The JIT policy protecting `vm_id`, narrowed to that VM (its ports and requests), from one
/// policy list of the subscription.
pub(crate) fn jit_policy_of(list: &serde_json::Value, vm_id: &str) -> Option<JitPolicyFacts> {
    let same = |v: &serde_json::Value| {
        v["id"]
            .as_str()
            .is_some_and(|id| id.eq_ignore_ascii_case(vm_id))
    };
    list["value"].as_array()?.iter().find_map(|policy| {
        let props = &policy["properties"];
        let vm = props["virtualMachines"]
            .as_array()?
            .iter()
            .find(|v| same(v))?;
        let ports = vm["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(JitPortFacts {
                    number: u16::try_from(p["number"].as_u64()?).ok()?,
                    allowed_source: p["allowedSourceAddressPrefix"]
                        .as_str()
                        .unwrap_or("*")
                        .to_owned(),
                    max_hours: p["maxRequestAccessDuration"]
                        .as_str()
                        .and_then(crate::diagnose::nsg::jit::iso_hours),
                })
            })
            .collect();
        let requests = props["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|request| {
                let requestor = request["requestor"]
                    .as_str()
                    .unwrap_or("someone")
                    .to_owned();
                request["virtualMachines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|v| same(v))
                    .flat_map(|v| v["ports"].as_array().cloned().unwrap_or_default())
                    .filter_map(move |p| {
                        Some(JitRequestFacts {
                            requestor: requestor.clone(),
                            source: p["allowedSourceAddressPrefix"].as_str()?.to_owned(),
                            port: u16::try_from(p["number"].as_u64()?).ok()?,
                            end_utc: p["endTimeUtc"].as_str().unwrap_or_default().to_owned(),
                            status: p["status"].as_str().unwrap_or_default().to_owned(),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|r| !r.status.eq_ignore_ascii_case("Expired"))
            .collect();
        Some(JitPolicyFacts {
            id: policy["id"].as_str()?.to_owned(),
            name: policy["name"].as_str().unwrap_or("default").to_owned(),
            ports,
            requests,
        })
    })
}

impl Arm {
    fn security_url(&self, path: &str) -> Result<url::Url, ArmError> {
        let mut url = self
            .settings
            .endpoint
            .join(path.trim_start_matches('/'))
            .map_err(|e| malformed("Microsoft.Security URL", e))?;
        url.query_pairs_mut()
            .append_pair("api-version", SECURITY_API);
        Ok(url)
    }

    /// The JIT policy that protects `vm` (`JitNetworkAccessPolicies_List` of its subscription),
    /// or `None`.
    pub async fn jit_policy(&self, vm: &VmRef) -> Result<Option<JitPolicyFacts>, ArmError> {
        let what = format!(
            "listing the just-in-time access policies of subscription {}",
            vm.subscription_id
        );
        let mut url = self.security_url(&format!(
            "/subscriptions/{}/providers/Microsoft.Security/jitNetworkAccessPolicies",
            vm.subscription_id
        ))?;
        for _ in 0..MAX_JIT_PAGES {
            let (status, _, body) = self.get_raw(&url, &what).await?;
            if !(200..300).contains(&status) {
                return Err(ArmError::from_status(status, &body, 0));
            }
            let page: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| malformed(&what, e))?;
            if let Some(found) = jit_policy_of(&page, &vm.id) {
                return Ok(Some(found));
            }
            match page["nextLink"]
                .as_str()
                .and_then(|l| url::Url::parse(l).ok())
            {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(None)
    }

    /// `JitNetworkAccessPolicies_Initiate`: open `port` of `vm` for `source` until `end_utc`
    /// (RFC 3339). Sent once; Azure answers 202 with the request, nothing to poll.
    pub async fn initiate_jit(
        &self,
        _confirmed: &Confirmed,
        request: &JitInitiate,
    ) -> Result<OperationHandle, ArmError> {
        let what = format!(
            "requesting just-in-time access to TCP {} of {} for {}",
            request.port, request.vm.name, request.source
        );
        let url = self.security_url(&format!("{}/initiate", request.policy_id))?;
        self.check_arm_url(&url, &what)?;
        let body = serde_json::json!({
            "virtualMachines": [{
                "id": request.vm.id,
                "ports": [{
                    "number": request.port,
                    "endTimeUtc": request.end_utc,
                    "allowedSourceAddressPrefix": request.source,
                }],
            }],
            "justification": request.justification,
        });
        let mut http = azure_core::Request::new(url, azure_core::Method::Post);
        http.insert_header(azure_core::headers::AUTHORIZATION, self.bearer().await?);
        http.insert_header("content-type", "application/json");
        http.set_body(body.to_string());
        let response = self
            .pipeline
            .send(&azure_core::Context::new(), &mut http)
            .await
            .map_err(|e| self.map_err(e, &what))?;
        let (status, _, body) = response.deconstruct();
        let status = u16::from(status);
        if !(200..300).contains(&status) {
            let body = body.collect().await.unwrap_or_default();
            return Err(ArmError::from_status(status, &body, 0));
        }
        Ok(OperationHandle {
            status_url: None,
            location: None,
            done: true,
        })
    }
}

/// What `request-jit` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitInitiate {
    pub vm: VmRef,
    pub policy_id: String,
    pub port: u16,
    pub source: String,
    pub end_utc: String,
    pub justification: String,
}
