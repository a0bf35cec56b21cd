//! Azure Bastion: the subscription's Bastion hosts (`BastionHosts_List`, network spec
//! 2024-03-01, `bastionHost.json`) and the `AzureBastionSubnet` of the one that reaches a VM
//! (`Subnets_Get`): a host in the VM's own virtual network, else one in a virtual network
//! directly peered with it (`VirtualNetworks_Get`, `virtualNetwork.json`). Read only for a VM
//! without a public IP.
//!
//! Peering, as Microsoft documents it (learn.microsoft.com/azure/bastion/vnet-peering and the
//! SKU table of learn.microsoft.com/azure/bastion/configuration-settings): a Basic, Standard or
//! Premium host reaches the VMs of virtual networks peered with its own, in the same region or
//! across regions ("Connect to target VMs in peered virtual networks": not the Developer SKU).
//! Peering is not transitive (learn.microsoft.com/azure/virtual-network/virtual-network-peering-overview),
//! so only the VM's own peerings are followed, never a peer's peers. A peering carries traffic
//! only in the state `Connected`: `Initiated` means the remote side has not peered back yet,
//! `Disconnected` that it deleted its peering (the spec's `VirtualNetworkPeeringState`, "The
//! status of the virtual network peering", and the peering overview).
//!
//! Why `VirtualNetworks_Get` rather than `VirtualNetworkPeerings_List`: one request either way,
//! but the virtual network's own read carries each peering's `remoteVirtualNetwork` and
//! `peeringState` inline and needs only `Microsoft.Network/virtualNetworks/read`, which every
//! reader role already has.

use super::gates::vnet_of_subnet;
use super::{Arm, ArmError};
use crate::diagnose::public_ip::BastionFacts;
use azure_mgmt_network::package_2024_03::models as network;
use futures::StreamExt;

/// The name Azure requires of a Bastion host's subnet.
const BASTION_SUBNET: &str = "AzureBastionSubnet";

/// A virtual network: subscription, resource group, name.
type Vnet = (String, String, String);

/// The virtual network (subscription, resource group, name) a Bastion host's IP configuration
/// sits in, with its SKU and tunneling flag.
fn host_facts(host: network::BastionHost) -> Option<(Vnet, BastionFacts)> {
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
            peered_vnet: None,
        },
    ))
}

/// The virtual networks a `VirtualNetworks_Get` answer is peered with in the state
/// `Connected`; `Initiated` and `Disconnected` peerings carry no traffic.
fn connected_peers(vnet: network::VirtualNetwork) -> Vec<Vnet> {
    use network::virtual_network_peering_properties_format::PeeringState;
    vnet.properties
        .map(|p| p.virtual_network_peerings)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|peering| {
            let properties = peering.properties?;
            if properties.peering_state != Some(PeeringState::Connected) {
                return None;
            }
            let id =
                crate::domain::ResourceId::parse(properties.remote_virtual_network?.id.as_deref()?)
                    .ok()?;
            id.resource_type
                .eq_ignore_ascii_case("virtualNetworks")
                .then_some((id.subscription_id, id.resource_group, id.name))
        })
        .collect()
}

fn same(a: &Vnet, b: &Vnet) -> bool {
    a.0.eq_ignore_ascii_case(&b.0)
        && a.1.eq_ignore_ascii_case(&b.1)
        && a.2.eq_ignore_ascii_case(&b.2)
}

/// What has been listed of a subscription's Bastion hosts: all of them, or one resource group's.
#[derive(Default)]
struct Listed {
    hosts: Vec<(Vnet, BastionFacts)>,
    /// (subscription, `None` for the whole subscription or the resource group).
    scopes: Vec<(String, Option<String>)>,
    /// Subscriptions whose whole list was refused (403).
    refused: Vec<String>,
}

impl Listed {
    fn covers(&self, vnet: &Vnet) -> bool {
        self.scopes.iter().any(|(sub, rg)| {
            sub.eq_ignore_ascii_case(&vnet.0)
                && rg
                    .as_deref()
                    .is_none_or(|rg| rg.eq_ignore_ascii_case(&vnet.1))
        })
    }

    /// The best host in `vnet`: one with native client support first; across a peering only
    /// the SKUs that reach peered VMs.
    fn best_in(&self, vnet: &Vnet, peered: bool) -> Option<BastionFacts> {
        let mut found: Vec<&BastionFacts> = self
            .hosts
            .iter()
            .filter(|(v, b)| same(v, vnet) && !(peered && b.sku == "Developer"))
            .map(|(_, b)| b)
            .collect();
        found.sort_by_key(|b| !b.native_client());
        found.first().map(|b| BastionFacts {
            peered_vnet: peered.then(|| vnet.2.clone()),
            ..(*b).clone()
        })
    }
}

impl Arm {
    /// The Bastion hosts of a subscription (or one of its resource groups), with their
    /// virtual networks.
    async fn list_bastion_hosts(
        &self,
        subscription: &str,
        group: Option<&str>,
        listed: &mut Listed,
    ) -> Result<(), ArmError> {
        let client = self.network.bastion_hosts_client();
        let (what, mut pages) = match group {
            None => (
                format!("listing the Bastion hosts of subscription {subscription}"),
                client.list(subscription).into_stream().boxed(),
            ),
            Some(rg) => (
                format!("listing the Bastion hosts of resource group {rg}"),
                client
                    .list_by_resource_group(rg, subscription)
                    .into_stream()
                    .boxed(),
            ),
        };
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err(e, &what))?;
            listed
                .hosts
                .extend(page.value.into_iter().filter_map(host_facts));
        }
        listed
            .scopes
            .push((subscription.to_owned(), group.map(str::to_owned)));
        Ok(())
    }

    /// Lists the Bastion hosts that could sit in `vnet`: its subscription's, or, when a role
    /// granted on resource groups only is refused that (403), its resource group's, where hub
    /// teams usually keep the host beside its virtual network.
    async fn list_bastions_for(&self, vnet: &Vnet, listed: &mut Listed) -> Result<(), ArmError> {
        let tried_whole = listed
            .scopes
            .iter()
            .any(|(sub, rg)| rg.is_none() && sub.eq_ignore_ascii_case(&vnet.0))
            || listed
                .refused
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&vnet.0));
        if !tried_whole {
            match self.list_bastion_hosts(&vnet.0, None, listed).await {
                Err(ArmError::Forbidden { .. }) => listed.refused.push(vnet.0.clone()),
                other => return other,
            }
        }
        self.list_bastion_hosts(&vnet.0, Some(&vnet.1), listed)
            .await
    }

    /// The Bastion host that reaches the VMs of the virtual network of `subnet_id`, with its
    /// `AzureBastionSubnet` prefix: one in that virtual network first (one with native client
    /// support first), else one in a virtual network peered with it in the state `Connected`;
    /// `None` when there is none. A peer's hosts that cannot be listed (another subscription,
    /// a 403) are the error only when no host was found.
    pub async fn bastion_for(&self, subnet_id: &str) -> Result<Option<BastionFacts>, ArmError> {
        let Some(vnet) = vnet_of_subnet(subnet_id) else {
            return Ok(None);
        };
        let mut listed = Listed::default();
        self.list_bastions_for(&vnet, &mut listed).await?;
        let (mut bastion, hub) = match listed.best_in(&vnet, false) {
            Some(b) => (b, vnet),
            None => {
                let what = format!("reading virtual network {}", vnet.2);
                let read = self
                    .network
                    .virtual_networks_client()
                    .get(&vnet.1, &vnet.2, &vnet.0)
                    .await
                    .map_err(|e| self.map_err(e, &what))?;
                let mut unlisted = None;
                let mut found = None;
                for peer in connected_peers(read) {
                    if !listed.covers(&peer) {
                        if let Err(e) = self.list_bastions_for(&peer, &mut listed).await {
                            unlisted.get_or_insert(e);
                            continue;
                        }
                    }
                    let Some(b) = listed.best_in(&peer, true) else {
                        continue;
                    };
                    let better = found.as_ref().is_none_or(|(f, _): &(BastionFacts, Vnet)| {
                        b.native_client() && !f.native_client()
                    });
                    if better {
                        found = Some((b, peer));
                    }
                }
                match (found, unlisted) {
                    (Some(found), _) => found,
                    (None, Some(e)) => return Err(e),
                    (None, None) => return Ok(None),
                }
            }
        };
        let what = format!(
            "reading subnet {BASTION_SUBNET} of virtual network {}",
            hub.2
        );
        let subnet = self
            .network
            .subnets_client()
            .get(&hub.1, &hub.2, BASTION_SUBNET, &hub.0)
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

    fn example(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/tests/fixtures/arm-examples/network/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("example");
        let example: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        example["responses"]["200"]["body"].clone()
    }

    #[test]
    fn only_connected_peerings_count() {
        // VirtualNetworkGet.json (network spec 2024-03-01): no peerings.
        let alone: network::VirtualNetwork =
            serde_json::from_value(example("VirtualNetworkGet.json")).expect("the spec's shape");
        assert!(connected_peers(alone).is_empty());
        // VirtualNetworkPeeringGet.json: `Initiated` (vnet2 has not peered back) carries no
        // traffic; the same peering `Connected` does, and `Disconnected` does not.
        let peering = example("VirtualNetworkPeeringGet.json");
        let with = |state: &str| -> network::VirtualNetwork {
            let mut peering = peering.clone();
            peering["properties"]["peeringState"] = serde_json::json!(state);
            serde_json::from_value(serde_json::json!({
                "properties": {"virtualNetworkPeerings": [peering]}
            }))
            .expect("the spec's shape")
        };
        assert!(connected_peers(with("Initiated")).is_empty());
        assert!(connected_peers(with("Disconnected")).is_empty());
        assert_eq!(
            connected_peers(with("Connected")),
            [(
                "subid".to_owned(),
                "peerTest".to_owned(),
                "vnet2".to_owned()
            )]
        );
    }

    #[test]
    fn a_peered_developer_host_does_not_count_and_native_client_comes_first() {
        let vnet = |name: &str| ("s".to_owned(), "rg".to_owned(), name.to_owned());
        let host = |name: &str, sku: &str, tunneling: bool| BastionFacts {
            name: name.into(),
            resource_group: "rg".into(),
            sku: sku.into(),
            tunneling,
            subnet_prefix: None,
            peered_vnet: None,
        };
        let listed = Listed {
            hosts: vec![
                (vnet("hub"), host("dev", "Developer", false)),
                (vnet("hub"), host("basic", "Basic", false)),
                (vnet("hub"), host("std", "Standard", true)),
                (vnet("dev-only"), host("dev2", "Developer", false)),
            ],
            scopes: vec![("S".into(), None)],
            refused: Vec::new(),
        };
        let best = listed.best_in(&vnet("hub"), true).expect("a host");
        assert_eq!(
            (best.name.as_str(), best.peered_vnet.as_deref()),
            ("std", Some("hub"))
        );
        assert_eq!(listed.best_in(&vnet("dev-only"), true), None);
        assert_eq!(
            listed.best_in(&vnet("dev-only"), false).map(|b| b.name),
            Some("dev2".to_owned())
        );
        assert!(listed.covers(&vnet("other")));
        assert!(!listed.covers(&("t".into(), "rg".into(), "hub".into())));
    }
}
