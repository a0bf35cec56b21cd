//! Azure Virtual Network Manager's security admin rules, as the `nsg` check weighs them.
//!
//! Microsoft Learn, "Security admin rules in Azure Virtual Network Manager": admin rules are
//! evaluated before network security groups, in priority order (lower number first), and the
//! first that matches decides: `Deny` drops the traffic whatever the NSGs say, `AlwaysAllow`
//! lets it through whatever the NSGs say, and `Allow` hands the decision to the NSGs. A NIC's
//! effective security rules do not list them; the virtual network's
//! `listNetworkManagerEffectiveSecurityAdminRules` does.

use super::eval::{parse_cidr, parse_port_range};
use super::{Probe, TrafficSource};
use serde::Serialize;

/// What an admin rule does with the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AdminAccess {
    Allow,
    AlwaysAllow,
    Deny,
}

impl AdminAccess {
    /// Azure's spelling (`SecurityConfigurationRuleAccess`).
    pub fn parse(s: &str) -> Option<AdminAccess> {
        match s.to_ascii_lowercase().as_str() {
            "allow" => Some(AdminAccess::Allow),
            "alwaysallow" => Some(AdminAccess::AlwaysAllow),
            "deny" => Some(AdminAccess::Deny),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminAccess::Allow => "Allow",
            AdminAccess::AlwaysAllow => "AlwaysAllow",
            AdminAccess::Deny => "Deny",
        }
    }
}

/// One effective inbound security admin rule of the VM's virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminRule {
    /// The rule's resource id (`…/networkManagers/{nm}/securityAdminConfigurations/{cfg}/
    /// ruleCollections/{rc}/rules/{rule}`).
    pub id: String,
    pub network_manager: String,
    pub configuration: String,
    pub rule_collection: String,
    pub name: String,
    pub access: AdminAccess,
    pub priority: i32,
    /// `Tcp`, `Udp`, `Any`…
    pub protocol: String,
    /// Address prefixes or service tags ("*", "Internet", "203.0.113.0/24").
    pub sources: Vec<String>,
    pub destinations: Vec<String>,
    pub destination_ports: Vec<String>,
}

impl AdminRule {
    /// Names taken from the rule's id; empty where the id does not say.
    pub fn names_from_id(id: &str) -> (String, String, String, String) {
        let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
        let after = |key: &str| {
            segs.windows(2)
                .find(|w| w[0].eq_ignore_ascii_case(key))
                .map(|w| w[1].to_owned())
                .unwrap_or_default()
        };
        (
            after("networkManagers"),
            after("securityAdminConfigurations"),
            after("ruleCollections"),
            after("rules"),
        )
    }

    /// "rule deny-rdp (priority 10) in rule collection rc of configuration cfg of Virtual
    /// Network Manager nm".
    pub fn describe(&self) -> String {
        format!(
            "security admin rule {} (priority {}) in rule collection {} of configuration {} of Virtual Network Manager {}",
            self.name, self.priority, self.rule_collection, self.configuration, self.network_manager
        )
    }

    fn matches(&self, probe: &Probe) -> bool {
        let protocol = self.protocol.eq_ignore_ascii_case("Tcp")
            || self.protocol.eq_ignore_ascii_case("Any")
            || self.protocol == "*";
        let port = self.destination_ports.is_empty()
            || self.destination_ports.iter().any(|p| {
                parse_port_range(p).is_some_and(|(lo, hi)| (lo..=hi).contains(&probe.port))
            });
        let source =
            self.sources.is_empty() || self.sources.iter().any(|s| covers_source(s, probe));
        let destination = self.destinations.is_empty()
            || self
                .destinations
                .iter()
                .any(|d| covers_destination(d, probe));
        protocol && port && source && destination
    }
}

fn is_any(prefix: &str) -> bool {
    let p = prefix.trim();
    p == "*" || p == "0.0.0.0/0" || p.eq_ignore_ascii_case("any")
}

/// Does an admin rule's source cover the probe's? For "the Internet", only a source covering
/// all of it; for an address, containment (the `Internet` tag holds every public address).
fn covers_source(prefix: &str, probe: &Probe) -> bool {
    if is_any(prefix) {
        return true;
    }
    match probe.source {
        TrafficSource::Internet => prefix.trim().eq_ignore_ascii_case("Internet"),
        TrafficSource::Address(ip) => {
            if prefix.trim().eq_ignore_ascii_case("Internet") {
                return crate::domain::cidr::has_public_address(&ipnet::Ipv4Net::from(ip));
            }
            parse_cidr(prefix).is_some_and(|net| net.contains(&ip))
        }
    }
}

fn covers_destination(prefix: &str, probe: &Probe) -> bool {
    if is_any(prefix) {
        return true;
    }
    match (parse_cidr(prefix), probe.destination) {
        (Some(net), Some(ip)) => net.contains(&ip),
        // A service tag (VirtualNetwork) or an unknown VM address: take it as matching.
        (None, _) | (_, None) => true,
    }
}

/// The admin rule that decides the probe: the first match in priority order, if any.
pub fn deciding<'a>(rules: &'a [AdminRule], probe: &Probe) -> Option<&'a AdminRule> {
    let mut ordered: Vec<&AdminRule> = rules.iter().collect();
    ordered.sort_by_key(|r| r.priority);
    ordered.into_iter().find(|r| r.matches(probe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn rule(name: &str, access: AdminAccess, priority: i32, source: &str) -> AdminRule {
        AdminRule {
            id: format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkManagers/nm/securityAdminConfigurations/cfg/ruleCollections/rc/rules/{name}"),
            network_manager: "nm".into(),
            configuration: "cfg".into(),
            rule_collection: "rc".into(),
            name: name.into(),
            access,
            priority,
            protocol: "Tcp".into(),
            sources: vec![source.into()],
            destinations: vec!["*".into()],
            destination_ports: vec!["3389".into()],
        }
    }

    #[test]
    fn the_first_match_by_priority_decides() {
        let rules = [
            rule("late-deny", AdminAccess::Deny, 200, "*"),
            rule("early-allow", AdminAccess::Allow, 100, "Internet"),
        ];
        let probe = Probe::rdp_from_internet(Some(Ipv4Addr::new(10, 0, 0, 4)));
        assert_eq!(
            deciding(&rules, &probe).map(|r| r.name.as_str()),
            Some("early-allow")
        );
        let other_port = Probe { port: 22, ..probe };
        assert!(deciding(&rules, &other_port).is_none());
    }

    #[test]
    fn a_narrow_source_matches_an_address_not_the_internet() {
        let rules = [rule(
            "office",
            AdminAccess::AlwaysAllow,
            10,
            "203.0.113.0/24",
        )];
        let internet = Probe::rdp_from_internet(None);
        assert!(deciding(&rules, &internet).is_none());
        let office = Probe {
            source: TrafficSource::Address(Ipv4Addr::new(203, 0, 113, 9)),
            ..internet
        };
        assert!(deciding(&rules, &office).is_some());
    }

    #[test]
    fn names_come_from_the_rule_id() {
        let r = rule("deny-rdp", AdminAccess::Deny, 1, "*");
        let (nm, cfg, rc, name) = AdminRule::names_from_id(&r.id);
        assert_eq!(
            (nm.as_str(), cfg.as_str(), rc.as_str(), name.as_str()),
            ("nm", "cfg", "rc", "deny-rdp")
        );
    }
}
