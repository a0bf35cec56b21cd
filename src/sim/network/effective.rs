//! Effective security rules as the Network resource provider computes them for a NIC: the
//! subnet's and the NIC's NSG, ports and prefixes normalised, service tags expanded.

use super::{default_rules, prefixes_of};
use crate::sim::resource::{nic_id, nsg_id, subnet_id};
use crate::sim::world::{Nsg, Rule, Vm, World};
use serde_json::{json, Map, Value};

/// Public IPv4 space as Azure expands the `Internet` tag in effective security rules (the REST
/// spec's example `NetworkInterfaceEffectiveNSGList.json` shows its first blocks, 32.0.0.0/3,
/// 4.0.0.0/6, 2.0.0.0/7, 1.0.0.0/8): 0.0.0.0/0 without 0/8, 10/8, 172.16/12, 192.168/16 and
/// 224/3. Listed here in address order; a rule matches the same set either way.
pub(super) fn internet() -> Vec<String> {
    let net = |a, b, len| ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(a, b, 0, 0), len);
    let outside = [
        net(0, 0, 8),
        net(10, 0, 8),
        net(172, 16, 12),
        net(192, 168, 16),
        net(224, 0, 3),
    ];
    crate::domain::cidr::complement(&outside)
        .iter()
        .map(ToString::to_string)
        .collect()
}

const AZURE_DNS_AND_PROBES: &str = "168.63.129.16/32";

/// The CIDRs a service tag stands for, or `None` for a plain prefix. `VirtualNetwork` is the
/// VM's virtual network's address space, those of the virtual networks peered with it in the
/// state `Connected` (learn.microsoft.com/azure/virtual-network/service-tags-overview) and
/// Azure's DNS and health probe address.
fn expand_tag(tag: &str, vm: &Vm, world: &World) -> Option<Vec<String>> {
    match tag.to_ascii_lowercase().as_str() {
        "internet" => Some(internet()),
        "virtualnetwork" => {
            let mut cidrs = vec![prefixes_of(&vm.private_ip).1];
            cidrs.extend(
                world
                    .connected_peer_spaces(vm)
                    .iter()
                    .map(ToString::to_string),
            );
            cidrs.push(AZURE_DNS_AND_PROBES.to_owned());
            Some(cidrs)
        }
        "azureloadbalancer" => Some(vec![AZURE_DNS_AND_PROBES.to_owned()]),
        _ => None,
    }
}

/// "*" -> "0.0.0.0/0", "1.2.3.4" -> "1.2.3.4/32"; tags and CIDRs stay.
fn effective_prefix(prefix: &str) -> String {
    if prefix == "*" {
        "0.0.0.0/0".to_owned()
    } else if !prefix.contains('/') && prefix.parse::<std::net::Ipv4Addr>().is_ok() {
        format!("{prefix}/32")
    } else {
        prefix.to_owned()
    }
}

/// "*" -> "0-65535", "3389" -> "3389-3389"; ranges stay.
fn effective_ports(ports: &str) -> String {
    if ports == "*" {
        "0-65535".to_owned()
    } else if ports.contains('-') {
        ports.to_owned()
    } else {
        format!("{ports}-{ports}")
    }
}

fn effective_rule(
    collection: &str,
    rule: &Rule,
    (vm, world): (&Vm, &World),
    tags: &mut Map<String, Value>,
) -> Value {
    let mut expand = |prefixes: &[String]| -> Vec<String> {
        let mut expanded = Vec::new();
        for prefix in prefixes {
            if let Some(cidrs) = expand_tag(prefix, vm, world) {
                tags.insert(prefix.clone(), json!(cidrs));
                expanded.extend(cidrs);
            }
        }
        expanded
    };
    let sources = rule.source_prefixes();
    let destinations = vec![rule.destination.clone().unwrap_or_else(|| "*".to_owned())];
    let expanded_sources = expand(&sources);
    let expanded_destinations = expand(&destinations);
    let mut out = json!({
        "name": format!("{collection}/{}", rule.name),
        "protocol": if rule.protocol == "*" { "All" } else { rule.protocol.as_str() },
        "sourcePortRange": effective_ports(&rule.source_port),
        "destinationAddressPrefix": effective_prefix(&destinations[0]),
        "access": rule.access,
        "priority": rule.priority,
        "direction": rule.direction,
    });
    if rule.destination_ports.is_empty() {
        out["destinationPortRange"] = json!(effective_ports(&rule.destination_port_list()[0]));
    } else {
        out["destinationPortRanges"] = json!(rule
            .destination_ports
            .iter()
            .map(|p| effective_ports(p))
            .collect::<Vec<_>>());
    }
    if rule.sources.is_empty() {
        out["sourceAddressPrefix"] = json!(effective_prefix(&sources[0]));
    } else {
        out["sourceAddressPrefixes"] = json!(sources
            .iter()
            .map(|p| effective_prefix(p))
            .collect::<Vec<_>>());
    }
    if !expanded_sources.is_empty() {
        out["expandedSourceAddressPrefix"] = json!(expanded_sources);
    }
    if !expanded_destinations.is_empty() {
        out["expandedDestinationAddressPrefix"] = json!(expanded_destinations);
    }
    out
}

fn effective_group(nsg: &Nsg, association: Value, vm: &Vm, world: &World) -> Value {
    let mut tags = Map::new();
    let mut custom: Vec<&Rule> = nsg.rules.iter().collect();
    custom.sort_by_key(|r| (r.direction != "Inbound", r.priority));
    let mut rules: Vec<Value> = custom
        .into_iter()
        .map(|r| effective_rule("securityRules", r, (vm, world), &mut tags))
        .collect();
    rules.extend(
        default_rules()
            .iter()
            .map(|r| effective_rule("defaultSecurityRules", r, (vm, world), &mut tags)),
    );
    json!({
        "networkSecurityGroup": {"id": nsg_id(nsg)},
        "association": association,
        "effectiveSecurityRules": rules,
        // The swagger types tagMap as a string: ARM sends the map JSON-encoded.
        "tagMap": Value::Object(tags).to_string(),
    })
}

/// The effective NSG list of a VM's NIC: subnet NSG first, then NIC NSG.
pub(crate) fn effective_nsg_list(world: &World, vm: &Vm) -> Value {
    let mut groups = Vec::new();
    if let Some(nsg) = world.subnet_nsg(vm) {
        groups.push(effective_group(
            nsg,
            json!({"subnet": {"id": subnet_id(vm)}}),
            vm,
            world,
        ));
    }
    if let Some(nsg) = world.nic_nsg(vm) {
        groups.push(effective_group(
            nsg,
            json!({"networkInterface": {"id": nic_id(vm)}}),
            vm,
            world,
        ));
    }
    json!({ "value": groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_rules_normalise_ports_prefixes_and_protocols() {
        let world = World::new().vm("web-01").nsg_denies_rdp();
        let vm = &world.vms[0];
        let list = effective_nsg_list(&world, vm);
        let groups = list["value"].as_array().expect("array");
        assert_eq!(groups.len(), 2);
        assert!(groups[0]["association"]["subnet"]["id"].is_string());
        let deny = &groups[0]["effectiveSecurityRules"][0];
        assert_eq!(deny["name"], "securityRules/deny-rdp-internet");
        assert_eq!(deny["destinationPortRange"], "3389-3389");
        assert_eq!(deny["sourcePortRange"], "0-65535");
        assert_eq!(deny["sourceAddressPrefix"], "Internet");
        assert!(deny["expandedSourceAddressPrefix"]
            .as_array()
            .is_some_and(|a| a.len() > 10));
        let allow = &groups[1]["effectiveSecurityRules"][0];
        assert_eq!(allow["sourceAddressPrefix"], "0.0.0.0/0");
        let last = &groups[1]["effectiveSecurityRules"][6];
        assert_eq!(last["name"], "defaultSecurityRules/DenyAllOutBound");
        assert_eq!(last["protocol"], "All");
        assert!(groups[0]["tagMap"]
            .as_str()
            .is_some_and(|t| t.contains("Internet")));
    }
}
