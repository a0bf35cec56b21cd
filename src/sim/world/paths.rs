//! The network path in the world: route tables (a subnet points at one), Azure Virtual Network
//! Manager's security admin rules, and the regions without a Network Watcher.
//!
//! Microsoft's sources: the network REST spec's `routeTable.json` (2024-03-01: a route's
//! `addressPrefix`, `nextHopType` of `VirtualNetworkGateway`, `VnetLocal`, `Internet`,
//! `VirtualAppliance` or `None`, and `nextHopIpAddress` only for `VirtualAppliance`), Microsoft
//! Learn "Virtual network traffic routing" (a subnet has at most one route table), "Security
//! admin rules in Azure Virtual Network Manager" (Allow, Always Allow, Deny; evaluated before
//! NSGs) and "Enable or disable Azure Network Watcher" (a watcher per region, created as
//! `NetworkWatcher_<region>` in `NetworkWatcherRG` when a virtual network is created there,
//! unless the subscription opted out).

use super::{InGroup, WorldError};
use serde::{Deserialize, Serialize};

/// The next hop types of a route (`routeTable.json`'s `RouteNextHopType`).
pub const NEXT_HOP_TYPES: [&str; 5] = [
    "VirtualNetworkGateway",
    "VnetLocal",
    "Internet",
    "VirtualAppliance",
    "None",
];

/// A route table (`[[route_table]]`), referenced by name from a VM's `route_table` (its
/// subnet's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// Route table name, unique within its resource group.
    pub name: String,
    /// Subscription id; defaults to the first `[[subscription]]`.
    #[serde(default)]
    pub subscription: String,
    /// Resource group of the route table.
    pub resource_group: String,
    /// Azure region.
    #[serde(default = "super::default_location")]
    pub location: String,
    /// The user-defined routes (`[[route_table.route]]`).
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteEntry>,
}

/// One user-defined route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// Route name, unique within its table.
    pub name: String,
    /// Destination CIDR, e.g. "0.0.0.0/0".
    pub prefix: String,
    /// `VirtualAppliance`, `VnetLocal`, `Internet`, `VirtualNetworkGateway` or `None`.
    pub next_hop_type: String,
    /// The appliance's address (only, and required, for `VirtualAppliance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_ip: Option<String>,
}

impl RouteEntry {
    pub fn new(name: &str, prefix: &str, next_hop_type: &str, next_hop_ip: Option<&str>) -> Self {
        RouteEntry {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            next_hop_type: next_hop_type.to_owned(),
            next_hop_ip: next_hop_ip.map(str::to_owned),
        }
    }
}

/// A security admin rule of Azure Virtual Network Manager applied to a virtual network
/// (`[[admin_rule]]`): inbound TCP to `destination_port` from `source`. Network Watcher's IP flow
/// verify evaluates it before the NSGs; a NIC's effective security rules do not list it; the
/// virtual network's `listNetworkManagerEffectiveSecurityAdminRules` does, with the network
/// manager, security admin configuration and rule collection in the rule's id (network spec
/// 2024-03-01, `NetworkManagerEffectiveSecurityAdminRulesList.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminRule {
    /// Rule name.
    pub name: String,
    /// Subscription id of the virtual network; defaults to the first `[[subscription]]`.
    #[serde(default)]
    pub subscription: String,
    /// Resource group of the virtual network.
    pub resource_group: String,
    /// The virtual network it applies to (a VM's `vnet`, default `{resource_group}-vnet`).
    pub vnet: String,
    /// "Allow", "AlwaysAllow" or "Deny".
    pub access: String,
    /// Source prefix: a CIDR, an address, "Internet" or "*".
    #[serde(default = "super::any")]
    pub source: String,
    /// Destination port or range ("3389", "3000-4000", "*").
    #[serde(default = "super::any")]
    pub destination_port: String,
    /// Priority, 1 to 4096: the lowest matching number decides (rules of equal priority in
    /// the order written).
    #[serde(default = "default_admin_priority")]
    pub priority: i32,
    /// The Virtual Network Manager (in the rule's resource group).
    #[serde(default = "default_network_manager")]
    pub network_manager: String,
    /// Its security admin configuration.
    #[serde(default = "default_admin_configuration")]
    pub configuration: String,
    /// The rule collection within the configuration.
    #[serde(default = "default_rule_collection")]
    pub rule_collection: String,
}

fn default_admin_priority() -> i32 {
    100
}

fn default_network_manager() -> String {
    "avnm-corp".to_owned()
}

fn default_admin_configuration() -> String {
    "corp-security".to_owned()
}

fn default_rule_collection() -> String {
    "management-ports".to_owned()
}

impl AdminRule {
    /// The rule's resource id, as the effective admin rules list names it.
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkManagers/{}/securityAdminConfigurations/{}/ruleCollections/{}/rules/{}",
            self.subscription,
            self.resource_group,
            self.network_manager,
            self.configuration,
            self.rule_collection,
            self.name
        )
    }
}

/// Checks a route table's routes (names, prefixes, next hops).
pub(super) fn validate_route_table(table: &RouteTable) -> Result<(), WorldError> {
    let mut names = std::collections::HashSet::new();
    for route in &table.routes {
        let at = format!("route '{}' of route table '{}'", route.name, table.name);
        if !names.insert(route.name.to_ascii_lowercase()) {
            return Err(WorldError::Invalid(format!("{at} appears twice")));
        }
        if route.prefix.parse::<ipnet::Ipv4Net>().is_err() {
            return Err(WorldError::Invalid(format!(
                "{at}: prefix '{}' is not an IPv4 CIDR",
                route.prefix
            )));
        }
        if !NEXT_HOP_TYPES.contains(&route.next_hop_type.as_str()) {
            return Err(WorldError::Invalid(format!(
                "{at}: next_hop_type must be one of {}",
                NEXT_HOP_TYPES.join(", ")
            )));
        }
        let appliance = route.next_hop_type == "VirtualAppliance";
        match &route.next_hop_ip {
            Some(ip) if !appliance => {
                return Err(WorldError::Invalid(format!(
                    "{at}: next_hop_ip '{ip}' is only allowed for VirtualAppliance"
                )))
            }
            Some(ip) if ip.parse::<std::net::Ipv4Addr>().is_err() => {
                return Err(WorldError::Invalid(format!(
                    "{at}: next_hop_ip '{ip}' is not an IPv4 address"
                )))
            }
            None if appliance => {
                return Err(WorldError::Invalid(format!(
                    "{at}: VirtualAppliance needs next_hop_ip"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks an admin rule's access.
pub(super) fn validate_admin_rule(rule: &AdminRule) -> Result<(), WorldError> {
    if !["Allow", "AlwaysAllow", "Deny"].contains(&rule.access.as_str()) {
        return Err(WorldError::Invalid(format!(
            "admin rule '{}': access must be Allow, AlwaysAllow or Deny",
            rule.name
        )));
    }
    if !(1..=4096).contains(&rule.priority) {
        return Err(WorldError::Invalid(format!(
            "admin rule '{}': priority must be 1..=4096",
            rule.name
        )));
    }
    Ok(())
}

/// The builder's network-path modifiers; they apply to the current VM.
impl super::World {
    /// Adds a user-defined route to the current VM's route table `{vm}-rt` (made on first use,
    /// with the VM moved to its own subnet `{vm}-snet` so no other VM shares the table).
    pub fn route(
        mut self,
        name: &str,
        prefix: &str,
        next_hop_type: &str,
        next_hop_ip: Option<&str>,
    ) -> super::World {
        let (vm_name, sub, rg, location) = self.current_vm_place();
        let table = format!("{vm_name}-rt");
        let vm = self.current_vm();
        vm.subnet = format!("{vm_name}-snet");
        vm.route_table = Some(table.clone());
        // Its own table, in its group (not another group's of the same name).
        let found = self
            .route_tables
            .iter()
            .position(|t| t.is(&sub, &rg, &table));
        let pos = match found {
            Some(pos) => pos,
            None => {
                self.route_tables.push(RouteTable {
                    name: table,
                    subscription: sub,
                    resource_group: rg,
                    location,
                    routes: Vec::new(),
                });
                self.route_tables.len() - 1
            }
        };
        let routes = &mut self.route_tables[pos].routes;
        routes.retain(|r| !r.name.eq_ignore_ascii_case(name));
        routes.push(RouteEntry::new(name, prefix, next_hop_type, next_hop_ip));
        self
    }

    /// The current VM's subnet sends the Internet's default route (0.0.0.0/0) to a virtual
    /// appliance at `ip` (route "to-firewall" in `{vm}-rt`).
    pub fn default_route_to_appliance(self, ip: &str) -> super::World {
        self.route("to-firewall", "0.0.0.0/0", "VirtualAppliance", Some(ip))
    }

    /// The current VM's region has no Network Watcher.
    pub fn without_network_watcher(mut self) -> super::World {
        let (_, _, _, location) = self.current_vm_place();
        self.regions_without_network_watcher.push(location);
        self
    }

    /// A Virtual Network Manager security admin rule on the current VM's virtual network for
    /// inbound TCP to `port` from `source`.
    pub fn admin_rule(
        mut self,
        name: &str,
        access: &str,
        source: &str,
        port: &str,
    ) -> super::World {
        let vm = self.current_vm();
        let rule = AdminRule {
            name: name.to_owned(),
            subscription: vm.subscription.clone(),
            resource_group: vm.resource_group.clone(),
            vnet: vm.vnet_name(),
            access: access.to_owned(),
            source: source.to_owned(),
            destination_port: port.to_owned(),
            priority: default_admin_priority(),
            network_manager: default_network_manager(),
            configuration: default_admin_configuration(),
            rule_collection: default_rule_collection(),
        };
        self.admin_rules.push(rule);
        self
    }
}

/// An Azure Bastion host (`[[bastion]]`) in the `AzureBastionSubnet` of a virtual network, in the
/// shape of the network spec 2024-03-01's `bastionHost.json` (`BastionHostGet.json`): one IP
/// configuration whose `subnet.id` is `…/virtualNetworks/{vnet}/subnets/AzureBastionSubnet`,
/// `sku.name` and `properties.enableTunneling` (native client support, Standard or Premium
/// only). The Developer SKU, which has no subnet of its own, is not modelled. The host is in
/// the virtual network's resource group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bastion {
    /// The Bastion host's name.
    pub name: String,
    /// Subscription id; defaults to the first `[[subscription]]`.
    #[serde(default)]
    pub subscription: String,
    /// Resource group of the host and of its virtual network.
    pub resource_group: String,
    /// The virtual network (a VM's `vnet`, default `{resource_group}-vnet`).
    pub vnet: String,
    /// "Basic", "Standard" or "Premium".
    #[serde(default = "default_bastion_sku")]
    pub sku: String,
    /// Native client support (`az network bastion rdp`); Azure accepts it only on Standard and
    /// Premium.
    #[serde(default)]
    pub enable_tunneling: bool,
    /// The `AzureBastionSubnet` prefix (at least /26, as Azure requires); defaults to
    /// `a.b.255.0/26` of the virtual network's `a.b.0.0/16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_prefix: Option<String>,
    #[serde(default = "default_bastion_location")]
    pub location: String,
}

fn default_bastion_sku() -> String {
    "Standard".to_owned()
}

fn default_bastion_location() -> String {
    "westeurope".to_owned()
}

impl Bastion {
    /// The host's resource id.
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/bastionHosts/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    /// The id of its `AzureBastionSubnet`.
    pub fn subnet_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}/subnets/AzureBastionSubnet",
            self.subscription, self.resource_group, self.vnet
        )
    }

    /// Whether the host sits in this virtual network.
    pub fn is_in(&self, sub: &str, rg: &str, vnet: &str) -> bool {
        self.subscription.eq_ignore_ascii_case(sub)
            && self.resource_group.eq_ignore_ascii_case(rg)
            && self.vnet.eq_ignore_ascii_case(vnet)
    }
}

/// Checks a Bastion host's SKU, its tunneling flag and subnet prefix as Azure would accept them.
pub(super) fn validate_bastion(bastion: &Bastion) -> Result<(), WorldError> {
    let at = format!("bastion '{}'", bastion.name);
    if !["Basic", "Standard", "Premium"].contains(&bastion.sku.as_str()) {
        return Err(WorldError::Invalid(format!(
            "{at}: sku must be Basic, Standard or Premium"
        )));
    }
    // Native client support is a Standard feature (learn.microsoft.com/azure/bastion/native-client).
    if bastion.enable_tunneling && bastion.sku == "Basic" {
        return Err(WorldError::Invalid(format!(
            "{at}: enable_tunneling needs the Standard or Premium SKU"
        )));
    }
    if let Some(prefix) = &bastion.subnet_prefix {
        match prefix.parse::<ipnet::Ipv4Net>() {
            Ok(net) if net.prefix_len() <= 26 => {}
            _ => {
                return Err(WorldError::Invalid(format!(
                    "{at}: subnet_prefix '{prefix}' must be an IPv4 CIDR of /26 or larger"
                )))
            }
        }
    }
    Ok(())
}

/// The builder's Bastion modifier; it applies to the current VM.
impl super::World {
    /// An Azure Bastion host `name` of `sku` in the current VM's virtual network (its
    /// `AzureBastionSubnet` the default `a.b.255.0/26`), with native client support when
    /// `tunneling`.
    pub fn bastion(mut self, name: &str, sku: &str, tunneling: bool) -> super::World {
        let vm = self.current_vm();
        let bastion = Bastion {
            name: name.to_owned(),
            subscription: vm.subscription.clone(),
            resource_group: vm.resource_group.clone(),
            vnet: vm.vnet_name(),
            sku: sku.to_owned(),
            enable_tunneling: tunneling,
            subnet_prefix: None,
            location: vm.location.clone(),
        };
        self.bastions.push(bastion);
        self
    }
}
