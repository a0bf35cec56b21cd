//! Azure Bastion: the subscription's Bastion hosts (`BastionHosts_List`, network spec
//! 2024-03-01, `bastionHost.json`) and the `AzureBastionSubnet` of the one in a VM's virtual
//! network (`Subnets_Get`). Read only for a VM without a public IP.

use super::gates::vnet_of_subnet;
use super::{Arm, ArmError};
use crate::diagnose::public_ip::BastionFacts;
use azure_mgmt_network::package_2024_03::models as network;
use futures::StreamExt;

/// The name Azure requires of a Bastion host's subnet.
const BASTION_SUBNET: &str = "AzureBastionSubnet";

/// The virtual network (subscription, resource group, name) a Bastion host's IP configuration
/// sits in, with its SKU and tunneling flag.
fn host_facts(host: network::BastionHost) -> Option<((String, String, String), BastionFacts)> {
    let id = host.resource.id.clone()?;
    let name = host.resource.name.clone().unwrap_or_default();
    let resource_group = crate::domain::ResourceId::parse(&id).ok()?.resource_group;
    let properties = host.properties?;
    let subnet = properties
        .ip_configurations
        .into_iter()
        .find_map(|c| c.properties?.subnet.id)?;
    let vnet = vnet_of_subnet(&subnet)?;
    let sku = host
        .sku
        .and_then(|s| s.name)
        .and_then(|n| serde_json::to_value(n).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "Basic".to_owned());
    Some((
        vnet,
        BastionFacts {
            name,
            resource_group,
            sku,
            tunneling: properties.enable_tunneling.unwrap_or(false),
            subnet_prefix: None,
        },
    ))
}

fn same(a: &(String, String, String), b: &(String, String, String)) -> bool {
    a.0.eq_ignore_ascii_case(&b.0)
        && a.1.eq_ignore_ascii_case(&b.1)
        && a.2.eq_ignore_ascii_case(&b.2)
}

impl Arm {
    /// The Bastion hosts of a subscription (or one of its resource groups) in `vnet`.
    async fn bastion_hosts(
        &self,
        vnet: &(String, String, String),
        group: Option<&str>,
    ) -> Result<Vec<BastionFacts>, ArmError> {
        let client = self.network.bastion_hosts_client();
        let (what, mut pages) = match group {
            None => (
                format!("listing the Bastion hosts of subscription {}", vnet.0),
                client.list(&vnet.0).into_stream().boxed(),
            ),
            Some(rg) => (
                format!("listing the Bastion hosts of resource group {rg}"),
                client
                    .list_by_resource_group(rg, &vnet.0)
                    .into_stream()
                    .boxed(),
            ),
        };
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err(e, &what))?;
            found.extend(
                page.value
                    .into_iter()
                    .filter_map(host_facts)
                    .filter(|(v, _)| same(v, vnet))
                    .map(|(_, f)| f),
            );
        }
        Ok(found)
    }

    /// The Bastion host in the virtual network of `subnet_id` (one with native client support
    /// first), with its `AzureBastionSubnet` prefix; `None` when the virtual network has none.
    /// Peered virtual networks are not followed.
    pub async fn bastion_for(&self, subnet_id: &str) -> Result<Option<BastionFacts>, ArmError> {
        let Some(vnet) = vnet_of_subnet(subnet_id) else {
            return Ok(None);
        };
        // The subscription's list; a role granted on resource groups only is refused that
        // (403), so then the virtual network's resource group's list, where hub teams usually
        // keep the host beside its virtual network.
        let mut found = match self.bastion_hosts(&vnet, None).await {
            Err(ArmError::Forbidden { .. }) => self.bastion_hosts(&vnet, Some(&vnet.1)).await?,
            other => other?,
        };
        found.sort_by_key(|b| !b.native_client());
        let Some(mut bastion) = found.into_iter().next() else {
            return Ok(None);
        };
        let what = format!(
            "reading subnet {BASTION_SUBNET} of virtual network {}",
            vnet.2
        );
        let subnet = self
            .network
            .subnets_client()
            .get(&vnet.1, &vnet.2, BASTION_SUBNET, &vnet.0)
            .await
            .map_err(|e| self.map_err(e, &what))?;
        let properties = subnet.properties.unwrap_or_default();
        bastion.subnet_prefix = properties
            .address_prefix
            .or_else(|| properties.address_prefixes.into_iter().next());
        Ok(Some(bastion))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsofts_example_reads_as_hosts_in_their_virtual_networks() {
        // BastionHostListBySubscription.json (network spec 2024-03-01), kept verbatim.
        let example: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/arm-examples/network/BastionHostListBySubscription.json"
        ))
        .expect("JSON");
        let list: network::BastionHostListResult =
            serde_json::from_value(example["responses"]["200"]["body"].clone())
                .expect("the spec's shape");
        let hosts: Vec<_> = list.value.into_iter().filter_map(host_facts).collect();
        // The Developer host has no subnet of its own (`virtualNetwork` instead): not read.
        let names: Vec<(&str, &str, &str, bool)> = hosts
            .iter()
            .map(|(v, f)| {
                (
                    v.2.as_str(),
                    f.name.as_str(),
                    f.sku.as_str(),
                    f.native_client(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("vnet", "bastionhosttenant", "Standard", false),
                ("vnet3", "bastionhost3", "Premium", false),
            ]
        );
        assert_eq!(hosts[0].0 .0, "subid");
        assert_eq!(hosts[0].1.resource_group, "rg1");
    }
}
