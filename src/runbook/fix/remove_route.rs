//! `remove-route`: delete the user route of the VM's subnet's route table that sends the replies
//! to the Internet (0.0.0.0/0, or a route of /8 or wider over public addresses) to a virtual
//! appliance or to `None`, so they follow the next best route again. Planned from live reads
//! (the NIC's subnet, its route table and routes); every subnet that uses the table is named.

use super::{Facts, Plan, PlanError, Refusal, Step};
use crate::azure::{Arm, ResourceId};
use crate::diagnose::network_path::{covers_the_internet, sends_away, RouteTableFacts, UserRoute};
use crate::diagnose::ActionId;

/// The route `remove-route` deletes from `table`: the widest that sends the Internet's replies
/// away.
pub(crate) fn route_to_remove(table: &RouteTableFacts) -> Option<&UserRoute> {
    table
        .routes
        .iter()
        .filter(|r| sends_away(&r.next_hop_type) && covers_the_internet(&r.prefix))
        .min_by_key(|r| {
            r.prefix
                .parse::<ipnet::Ipv4Net>()
                .map_or(32, |n| n.prefix_len())
        })
}

/// The `az` command that puts the route back as it was.
pub(crate) fn undo_command(table: &RouteTableFacts, route: &UserRoute) -> String {
    let mut command = format!(
        "az network route-table route create --subscription {} --resource-group {} --route-table-name {} --name {} --address-prefix {} --next-hop-type {}",
        table.subscription_id, table.resource_group, table.name, route.name, route.prefix, route.next_hop_type
    );
    if let Some(ip) = &route.next_hop_ip {
        command.push_str(&format!(" --next-hop-ip-address {ip}"));
    }
    command
}

pub(super) async fn plan(arm: &Arm, facts: &Facts) -> Result<Plan, PlanError> {
    let vm = &facts.vm;
    let subnet = facts
        .nic
        .as_ref()
        .and_then(|n| n.subnet_id.clone())
        .ok_or_else(|| Refusal {
            reason: format!("{} has no network interface on a subnet.", vm.name),
            instead: None,
        })?;
    let subnet_name = ResourceId::last_segment(&subnet).to_owned();
    let table_id = arm
        .subnet_route_table(&subnet)
        .await?
        .ok_or_else(|| Refusal {
            reason: format!(
                "Subnet {subnet_name} of {} has no route table: no user route sends its replies away, so there is nothing to remove.",
                vm.name
            ),
            instead: None,
        })?;
    let table = arm.route_table(&table_id).await?;
    let route = route_to_remove(&table).ok_or_else(|| Refusal {
        reason: format!(
            "No route in route table {} sends the replies to the Internet to a virtual appliance or to None; there is nothing to remove.",
            table.name
        ),
        instead: None,
    })?;
    let hop = match (&route.next_hop_type[..], &route.next_hop_ip) {
        ("VirtualAppliance", Some(ip)) => format!("virtual appliance {ip}"),
        (other, _) => other.to_owned(),
    };
    let subnets: Vec<&str> = table
        .subnets
        .iter()
        .map(|s| ResourceId::last_segment(s))
        .collect();
    let mut consequences = vec![
        format!(
            "Replies to {} stop going to the {hop}; they follow the next best route (Azure's system route to the Internet, unless another route covers them).",
            route.prefix
        ),
        format!(
            "Route table {} is used by {}: every VM there loses the route, not only {}.",
            table.name,
            match subnets.as_slice() {
                [] => "no subnet".to_owned(),
                [one] => format!("subnet {one}"),
                many => format!("subnets {}", many.join(", ")),
            },
            vm.name
        ),
    ];
    let mut warnings = Vec::new();
    if route.next_hop_type == "VirtualAppliance" {
        warnings.push(format!(
            "Traffic to {} from those subnets no longer passes through the appliance: if it is a firewall, it stops inspecting it.",
            route.prefix
        ));
    }
    consequences.push(format!("To undo: {}", undo_command(&table, route)));
    Ok(Plan {
        action: ActionId::RemoveRoute,
        vm: vm.clone(),
        headline: format!(
            "Remove route {} ({} to {hop}) from route table {}",
            route.name, route.prefix, table.name
        ),
        consequences,
        warnings,
        step: Step::Route {
            table_id: table.id.clone(),
            route: route.name.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str, &str, Option<&str>)]) -> RouteTableFacts {
        RouteTableFacts {
            id: "/subscriptions/s/resourceGroups/rg-web/providers/Microsoft.Network/routeTables/rt"
                .into(),
            name: "rt".into(),
            resource_group: "rg-web".into(),
            subscription_id: "s".into(),
            routes: routes
                .iter()
                .map(|(n, p, h, ip)| UserRoute {
                    name: (*n).into(),
                    prefix: (*p).into(),
                    next_hop_type: (*h).into(),
                    next_hop_ip: ip.map(str::to_owned),
                })
                .collect(),
            subnets: vec![],
        }
    }

    #[test]
    fn the_widest_route_sending_the_internet_away_is_removed_and_the_undo_is_exact() {
        let t = table(&[
            (
                "spoke",
                "10.0.0.0/8",
                "VirtualAppliance",
                Some("10.0.254.4"),
            ),
            (
                "half",
                "128.0.0.0/1",
                "VirtualAppliance",
                Some("10.0.254.4"),
            ),
            (
                "to-firewall",
                "0.0.0.0/0",
                "VirtualAppliance",
                Some("10.0.254.4"),
            ),
        ]);
        let route = route_to_remove(&t).expect("a route");
        assert_eq!(route.name, "to-firewall");
        assert_eq!(
            undo_command(&t, route),
            "az network route-table route create --subscription s --resource-group rg-web --route-table-name rt --name to-firewall --address-prefix 0.0.0.0/0 --next-hop-type VirtualAppliance --next-hop-ip-address 10.0.254.4"
        );
        let none = table(&[("blackhole", "0.0.0.0/0", "None", None)]);
        assert_eq!(
            undo_command(&none, route_to_remove(&none).expect("a route")),
            "az network route-table route create --subscription s --resource-group rg-web --route-table-name rt --name blackhole --address-prefix 0.0.0.0/0 --next-hop-type None"
        );
        assert!(route_to_remove(&table(&[(
            "spoke",
            "10.0.0.0/8",
            "VirtualAppliance",
            Some("10.0.254.4")
        )]))
        .is_none());
    }
}
