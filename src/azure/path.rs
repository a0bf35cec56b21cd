//! The network path's reads: the region's Network Watcher, IP flow verify, next hop, a NIC's
//! effective routes, a subnet's route table and a route table's routes. The Network Watcher
//! actions and the effective routes are long-running POSTs whose final `Location` answer is the
//! result: sent with `.send()` and followed by hand (`lro.rs`); they only read, so the retry
//! policy retries them like `effectiveNetworkSecurityGroups`.

use super::lro::Pending;
use super::{Arm, ArmError, ResourceId};
use crate::diagnose::network_path::{
    FlowVerdict, NextHopFacts, RouteFacts, RouteTableFacts, UserRoute,
};
use azure_mgmt_network::package_2024_03::models as network;
use serde::de::DeserializeOwned;
use std::net::Ipv4Addr;

/// A subscription's Network Watcher in one region (`NetworkWatcher_<region>` in
/// `NetworkWatcherRG` when Azure made it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkWatcher {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
}

/// What a subnet links to: its NSG and its route table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetLinks {
    pub nsg_id: Option<String>,
    pub route_table_id: Option<String>,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> ArmError {
    ArmError::Malformed {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// An SDK enum as Azure spells it.
fn text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Azure's region names compare without case or spaces ("West Europe", "westeurope").
fn same_region(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace(' ', "").to_ascii_lowercase();
    norm(a) == norm(b)
}

pub(crate) fn effective_routes(list: network::EffectiveRouteListResult) -> Vec<RouteFacts> {
    list.value
        .into_iter()
        .map(|r| RouteFacts {
            name: r.name,
            source: r.source.as_ref().map(text).unwrap_or_default(),
            active: !matches!(r.state, Some(network::effective_route::State::Invalid)),
            prefixes: r.address_prefix,
            next_hop_type: r.next_hop_type.as_ref().map(text).unwrap_or_default(),
            next_hop_ips: r.next_hop_ip_address,
        })
        .collect()
}

pub(crate) fn route_table_facts(id: &str, table: network::RouteTable) -> RouteTableFacts {
    let parsed = ResourceId::parse(id).ok();
    let properties = table.properties.unwrap_or_default();
    RouteTableFacts {
        id: table.resource.id.unwrap_or_else(|| id.to_owned()),
        name: table
            .resource
            .name
            .unwrap_or_else(|| ResourceId::last_segment(id).to_owned()),
        resource_group: parsed
            .as_ref()
            .map(|p| p.resource_group.clone())
            .unwrap_or_default(),
        subscription_id: parsed.map(|p| p.subscription_id).unwrap_or_default(),
        routes: properties
            .routes
            .into_iter()
            .filter_map(|r| {
                let props = r.properties?;
                Some(UserRoute {
                    name: r.name?,
                    prefix: props.address_prefix.unwrap_or_default(),
                    next_hop_type: text(&props.next_hop_type),
                    next_hop_ip: props.next_hop_ip_address,
                })
            })
            .collect(),
        subnets: properties
            .subnets
            .into_iter()
            .filter_map(|s| s.sub_resource.id)
            .collect(),
    }
}

impl Arm {
    /// Follows a long-running POST's first answer to its result.
    async fn computed<T: DeserializeOwned>(
        &self,
        response: azure_core::Response,
        what: &str,
    ) -> Result<T, ArmError> {
        let (status, headers, body) = response.deconstruct();
        let body = body.collect().await.map_err(|e| self.map_err(e, what))?;
        let pending = Pending::from_headers(&headers);
        let result = self.follow(u16::from(status), body, pending, what).await?;
        serde_json::from_slice(&result).map_err(|e| malformed(what, e))
    }

    /// The subscription's Network Watcher in `region` (`NetworkWatchers_ListAll`, as the az
    /// CLI finds it), or `None` when the region has none.
    pub async fn network_watcher(
        &self,
        subscription_id: &str,
        region: &str,
    ) -> Result<Option<NetworkWatcher>, ArmError> {
        let what = format!("listing the Network Watchers of subscription {subscription_id}");
        let list = self
            .network
            .network_watchers_client()
            .list_all(subscription_id)
            .send()
            .await
            .map_err(|e| self.map_err(e, &what))?
            .into_body()
            .await
            .map_err(|e| self.map_err(e, &what))?;
        Ok(list.value.into_iter().find_map(|w| {
            let location = w.resource.location.as_deref()?;
            if !same_region(location, region) {
                return None;
            }
            let id = ResourceId::parse(w.resource.id.as_deref()?).ok()?;
            Some(NetworkWatcher {
                subscription_id: id.subscription_id,
                resource_group: id.resource_group,
                name: id.name,
            })
        }))
    }

    /// Network Watcher's IP flow verify for inbound TCP from `remote` to `local`:`port` of the VM.
    pub async fn ip_flow_verify(
        &self,
        watcher: &NetworkWatcher,
        vm_id: &str,
        local: &str,
        port: u16,
        remote: Ipv4Addr,
    ) -> Result<FlowVerdict, ArmError> {
        let what = format!("verifying the flow from {remote} with Network Watcher");
        let parameters = network::VerificationIpFlowParameters::new(
            vm_id.to_owned(),
            network::Direction::Inbound,
            network::verification_ip_flow_parameters::Protocol::Tcp,
            port.to_string(),
            // Any client port: Windows picks one from its dynamic range.
            "49152".to_owned(),
            local.to_owned(),
            remote.to_string(),
        );
        let response = self
            .network
            .network_watchers_client()
            .verify_ip_flow(
                &watcher.resource_group,
                &watcher.name,
                parameters,
                &watcher.subscription_id,
            )
            .send()
            .await
            .map_err(|e| self.map_err(e, &what))?
            .into_raw_response();
        let result: network::VerificationIpFlowResult = self.computed(response, &what).await?;
        Ok(FlowVerdict {
            allowed: matches!(result.access, Some(network::Access::Allow)),
            rule: result.rule_name,
        })
    }

    /// Network Watcher's next hop from the VM's `source` address to `destination`.
    pub async fn next_hop(
        &self,
        watcher: &NetworkWatcher,
        vm_id: &str,
        source: &str,
        destination: Ipv4Addr,
    ) -> Result<NextHopFacts, ArmError> {
        let what = format!("asking Network Watcher for the next hop to {destination}");
        let parameters = network::NextHopParameters::new(
            vm_id.to_owned(),
            source.to_owned(),
            destination.to_string(),
        );
        let response = self
            .network
            .network_watchers_client()
            .get_next_hop(
                &watcher.resource_group,
                &watcher.name,
                parameters,
                &watcher.subscription_id,
            )
            .send()
            .await
            .map_err(|e| self.map_err(e, &what))?
            .into_raw_response();
        let result: network::NextHopResult = self.computed(response, &what).await?;
        Ok(NextHopFacts {
            next_hop_type: result.next_hop_type.as_ref().map(text).unwrap_or_default(),
            next_hop_ip: result.next_hop_ip_address,
            // Azure's word for "no user route": the string "System Route".
            route_table_id: result
                .route_table_id
                .filter(|id| !id.eq_ignore_ascii_case("System Route") && id.starts_with('/')),
        })
    }

    /// `POST effectiveRouteTable` of a NIC, followed to its result.
    pub async fn effective_routes(&self, nic_id: &str) -> Result<Vec<RouteFacts>, ArmError> {
        let id = ResourceId::parse(nic_id).map_err(|e| malformed("NIC id", e))?;
        let what = format!("listing the effective routes of {}", id.name);
        let response = self
            .network
            .network_interfaces_client()
            .get_effective_route_table(&id.resource_group, &id.name, &id.subscription_id)
            .send()
            .await
            .map_err(|e| self.map_err(e, &what))?
            .into_raw_response();
        let list: network::EffectiveRouteListResult = self.computed(response, &what).await?;
        Ok(effective_routes(list))
    }

    /// The route table of a subnet (its id), if it has one.
    pub async fn subnet_route_table(&self, subnet_id: &str) -> Result<Option<String>, ArmError> {
        Ok(self.subnet_links(subnet_id).await?.route_table_id)
    }

    /// The NSG and the route table a subnet names (one GET of the subnet).
    pub async fn subnet_links(&self, subnet_id: &str) -> Result<SubnetLinks, ArmError> {
        let parts: Vec<&str> = subnet_id.trim_matches('/').split('/').collect();
        let (Some(vnet), Some(subnet)) = (parts.get(7), parts.get(9)) else {
            return Err(malformed("subnet id", subnet_id));
        };
        let id = ResourceId::parse(subnet_id).map_err(|e| malformed("subnet id", e))?;
        let what = format!("reading subnet {subnet}");
        let subnet = self
            .network
            .subnets_client()
            .get(&id.resource_group, *vnet, *subnet, &id.subscription_id)
            .await
            .map_err(|e| self.map_err(e, &what))?;
        let properties = subnet.properties.unwrap_or_default();
        Ok(SubnetLinks {
            nsg_id: properties
                .network_security_group
                .and_then(|n| n.resource.id),
            route_table_id: properties.route_table.and_then(|t| t.resource.id),
        })
    }

    /// A route table with its routes and the subnets that use it.
    pub async fn route_table(&self, table_id: &str) -> Result<RouteTableFacts, ArmError> {
        let id = ResourceId::parse(table_id).map_err(|e| malformed("route table id", e))?;
        let what = format!("reading route table {}", id.name);
        let table = self
            .network
            .route_tables_client()
            .get(&id.resource_group, &id.name, &id.subscription_id)
            .await
            .map_err(|e| self.map_err(e, &what))?;
        Ok(route_table_facts(table_id, table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_routes_keep_state_source_and_next_hops() {
        let body = serde_json::json!({"value": [
            {"source": "Default", "state": "Invalid", "addressPrefix": ["0.0.0.0/0"], "nextHopIpAddress": [], "nextHopType": "Internet"},
            {"name": "to-firewall", "source": "User", "state": "Active", "addressPrefix": ["0.0.0.0/0"], "nextHopIpAddress": ["10.0.2.4"], "nextHopType": "VirtualAppliance"}
        ]});
        let list: network::EffectiveRouteListResult =
            serde_json::from_value(body).expect("the spec's shape");
        let routes = effective_routes(list);
        assert!(!routes[0].active);
        assert_eq!(routes[0].source, "Default");
        assert_eq!(routes[1].name.as_deref(), Some("to-firewall"));
        assert_eq!(routes[1].next_hop_type, "VirtualAppliance");
        assert_eq!(routes[1].next_hop_ips, vec!["10.0.2.4"]);
        assert!(same_region("West Europe", "westeurope"));
    }
}
