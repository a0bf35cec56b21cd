//! Virtual network peering (`[[peering]]`) and the address spaces of the world's virtual
//! networks: a virtual network is the one of a VM (its address space the /16 of the VM's
//! private address) or one holding only an Azure Bastion host (the /16 of its
//! `AzureBastionSubnet`).
//!
//! A peering in Azure is two resources, one on each side (network spec 2024-03-01,
//! `virtualNetwork.json`, `VirtualNetworkPeeringGet.json`; learn.microsoft.com/azure/
//! virtual-network/virtual-network-manage-peering): a peering is `Initiated` while only one
//! side has created its peering, both are `Connected` once the other side has peered back, and
//! the one left is `Disconnected` when the other side deletes its peering. One `[[peering]]`
//! entry declares the state of `vnet`'s peering to `remote_vnet`; the remote side holds the
//! matching peering back only when it is `Connected` (for `Initiated` and `Disconnected` there is
//! none on the remote side).

use super::{Vm, World, WorldError};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// `peeringState` values (the spec's `VirtualNetworkPeeringState`).
const STATES: [&str; 3] = ["Initiated", "Connected", "Disconnected"];

/// A virtual network's peering to another (`[[peering]]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Peering {
    /// Subscription of `vnet`; defaults to the first `[[subscription]]`.
    #[serde(default)]
    pub subscription: String,
    /// Resource group of `vnet`.
    pub resource_group: String,
    /// The local virtual network (a VM's `vnet`, or a Bastion's).
    pub vnet: String,
    /// Subscription of `remote_vnet`; defaults to `subscription`.
    #[serde(default)]
    pub remote_subscription: String,
    /// Resource group of `remote_vnet`; defaults to `resource_group`.
    #[serde(default)]
    pub remote_resource_group: String,
    pub remote_vnet: String,
    /// "Initiated", "Connected" (the default) or "Disconnected".
    #[serde(default = "default_state")]
    pub state: String,
}

fn default_state() -> String {
    "Connected".to_owned()
}

/// A virtual network's place: subscription, resource group, name.
pub(crate) type VnetKey = (String, String, String);

fn same(a: &VnetKey, b: &VnetKey) -> bool {
    a.0.eq_ignore_ascii_case(&b.0)
        && a.1.eq_ignore_ascii_case(&b.1)
        && a.2.eq_ignore_ascii_case(&b.2)
}

impl Peering {
    pub fn local(&self) -> VnetKey {
        (
            self.subscription.clone(),
            self.resource_group.clone(),
            self.vnet.clone(),
        )
    }

    pub fn remote(&self) -> VnetKey {
        (
            self.remote_subscription.clone(),
            self.remote_resource_group.clone(),
            self.remote_vnet.clone(),
        )
    }

    /// Fills the defaults: the remote side in the local side's subscription and group.
    pub(super) fn fill_defaults(&mut self, first_subscription: &str) {
        if self.subscription.is_empty() {
            self.subscription = first_subscription.to_owned();
        }
        if self.remote_subscription.is_empty() {
            self.remote_subscription = self.subscription.clone();
        }
        if self.remote_resource_group.is_empty() {
            self.remote_resource_group = self.resource_group.clone();
        }
    }
}

/// One peering as a virtual network's `virtualNetworkPeerings[]` shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeeringView {
    pub name: String,
    pub remote: VnetKey,
    pub state: String,
}

impl World {
    /// The address space of a virtual network: the /16 of a VM's private address in it, else
    /// the /16 of the `AzureBastionSubnet` of a Bastion host in it; `None` when nothing is.
    pub(crate) fn vnet_space(&self, vnet: &VnetKey) -> Option<Ipv4Net> {
        let sixteen = |ip: std::net::Ipv4Addr| Ipv4Net::new(ip, 16).ok().map(|n| n.trunc());
        if let Some(vm) = self.vms.iter().find(|v| same(&vm_vnet(v), vnet)) {
            return vm.private_ip.parse().ok().and_then(sixteen);
        }
        self.bastions
            .iter()
            .find(|b| b.is_in(&vnet.0, &vnet.1, &vnet.2))
            .and_then(|b| b.subnet_prefix.as_deref()?.parse::<Ipv4Net>().ok())
            .and_then(|p| sixteen(p.network()))
    }

    /// The peerings `vnet` shows: those declared from it, and the matching one back of each
    /// `Connected` peering declared towards it.
    pub(crate) fn peerings_of(&self, vnet: &VnetKey) -> Vec<PeeringView> {
        let mut views = Vec::new();
        for p in &self.peerings {
            if same(&p.local(), vnet) {
                views.push(PeeringView {
                    name: format!("{}-to-{}", p.vnet, p.remote_vnet),
                    remote: p.remote(),
                    state: p.state.clone(),
                });
            } else if same(&p.remote(), vnet) && p.state == "Connected" {
                views.push(PeeringView {
                    name: format!("{}-to-{}", p.remote_vnet, p.vnet),
                    remote: p.local(),
                    state: p.state.clone(),
                });
            }
        }
        views
    }

    /// The address spaces of the virtual networks `vm`'s is peered with in the state
    /// `Connected`: Azure's `VirtualNetwork` service tag covers the virtual network's address
    /// space and those of its peered virtual networks
    /// (learn.microsoft.com/azure/virtual-network/service-tags-overview).
    pub(crate) fn connected_peer_spaces(&self, vm: &Vm) -> Vec<Ipv4Net> {
        self.peerings_of(&vm_vnet(vm))
            .into_iter()
            .filter(|p| p.state == "Connected")
            .filter_map(|p| self.vnet_space(&p.remote))
            .collect()
    }

    /// Checks each peering as Azure would accept it: both virtual networks exist, a state
    /// Azure knows, not a virtual network with itself, and address spaces that do not overlap
    /// (Azure refuses to peer overlapping ones, learn.microsoft.com/azure/virtual-network/
    /// virtual-network-manage-peering). A Bastion host in a virtual network without VMs names
    /// its `subnet_prefix`, which is all that says the network's address space.
    pub(super) fn validate_peerings(&self) -> Result<(), WorldError> {
        for b in &self.bastions {
            let key = (
                b.subscription.clone(),
                b.resource_group.clone(),
                b.vnet.clone(),
            );
            let has_vm = self.vms.iter().any(|v| same(&vm_vnet(v), &key));
            if !has_vm && b.subnet_prefix.is_none() {
                return Err(WorldError::Invalid(format!(
                    "bastion '{}': virtual network {} has no VM, so subnet_prefix must say its address space",
                    b.name, b.vnet
                )));
            }
        }
        for p in &self.peerings {
            let at = format!("peering {} -> {}", p.vnet, p.remote_vnet);
            if !STATES.contains(&p.state.as_str()) {
                return Err(WorldError::Invalid(format!(
                    "{at}: state must be Initiated, Connected or Disconnected"
                )));
            }
            if same(&p.local(), &p.remote()) {
                return Err(WorldError::Invalid(format!(
                    "{at}: a virtual network cannot peer with itself"
                )));
            }
            for (side, key) in [("vnet", p.local()), ("remote_vnet", p.remote())] {
                if self.subscription_entry(&key.0).is_none() {
                    return Err(WorldError::Invalid(format!(
                        "{at}: {side} is in subscription '{}', which has no [[subscription]] entry",
                        key.0
                    )));
                }
            }
            let (Some(local), Some(remote)) =
                (self.vnet_space(&p.local()), self.vnet_space(&p.remote()))
            else {
                return Err(WorldError::Invalid(format!(
                    "{at}: both virtual networks must exist (hold a VM or a Bastion host) in their resource groups"
                )));
            };
            if local.contains(&remote.network()) || remote.contains(&local.network()) {
                return Err(WorldError::Invalid(format!(
                    "{at}: address spaces {local} and {remote} overlap, and Azure does not peer overlapping virtual networks"
                )));
            }
        }
        Ok(())
    }
}

fn vm_vnet(vm: &Vm) -> VnetKey {
    (
        vm.subscription.clone(),
        vm.resource_group.clone(),
        vm.vnet_name(),
    )
}

/// The builder's peering and hub modifiers.
impl World {
    /// An Azure Bastion host `name` of `sku` in virtual network `vnet` of the current VM's
    /// resource group, a hub that holds nothing else, its `AzureBastionSubnet` `prefix`.
    pub fn hub_bastion(
        mut self,
        vnet: &str,
        name: &str,
        sku: &str,
        tunneling: bool,
        prefix: &str,
    ) -> World {
        let vm = self.current_vm();
        let bastion = super::Bastion {
            name: name.to_owned(),
            subscription: vm.subscription.clone(),
            resource_group: vm.resource_group.clone(),
            vnet: vnet.to_owned(),
            sku: sku.to_owned(),
            enable_tunneling: tunneling,
            subnet_prefix: Some(prefix.to_owned()),
            location: vm.location.clone(),
        };
        self.bastions.push(bastion);
        self
    }

    /// Peers the current VM's virtual network with `remote_vnet` of its resource group, the
    /// current VM's side in `state`.
    pub fn peered_with(mut self, remote_vnet: &str, state: &str) -> World {
        let vm = self.current_vm();
        let peering = Peering {
            subscription: vm.subscription.clone(),
            resource_group: vm.resource_group.clone(),
            vnet: vm.vnet_name(),
            remote_subscription: vm.subscription.clone(),
            remote_resource_group: vm.resource_group.clone(),
            remote_vnet: remote_vnet.to_owned(),
            state: state.to_owned(),
        };
        self.peerings.push(peering);
        self
    }
}
