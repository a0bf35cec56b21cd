//! `open-rdp-port` (runbook step 2): add an inbound Allow rule for TCP 3389 to the NSG whose rule
//! blocks it, from the source a person names, at a free priority that wins over the blocking rule.
//! With a port (the guest's RDP listener moved to a custom port, the alternative offered beside
//! `reset-rdp-port`) the rule is for that port instead.

use super::{Facts, Plan, PlanError, Refusal, Step};
use crate::azure::{free_priority_below, Arm, NewRdpRule};
use crate::diagnose::{nsg, ActionId};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Where RDP may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdpSource {
    Address(Ipv4Addr),
    Cidr(Ipv4Net),
    /// A service tag such as `AzureCloud` or `GatewayManager`.
    Tag(String),
    /// The whole Internet, chosen explicitly.
    Anywhere,
}

impl RdpSource {
    /// The NSG rule's `sourceAddressPrefix`.
    pub fn prefix(&self) -> String {
        match self {
            RdpSource::Address(ip) => ip.to_string(),
            RdpSource::Cidr(net) => net.to_string(),
            RdpSource::Tag(tag) => tag.clone(),
            RdpSource::Anywhere => "*".to_string(),
        }
    }

    fn probe_source(&self) -> nsg::TrafficSource {
        match self {
            RdpSource::Address(ip) => nsg::TrafficSource::Address(*ip),
            RdpSource::Cidr(net) => nsg::TrafficSource::Address(net.addr()),
            RdpSource::Tag(_) | RdpSource::Anywhere => nsg::TrafficSource::Internet,
        }
    }
}

/// Why a typed source is not one `open-rdp` accepts; displays what to type instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{0:?} opens RDP to the whole Internet; if you really mean that, say `anywhere`")]
    Everyone(String),
    #[error("{0:?} is not an IPv4 CIDR")]
    NotCidr(String),
    #[error("{0:?}: the prefix length must be 8 to 32")]
    PrefixLength(String),
    #[error("{text:?} has host bits set; did you mean {network}/{len}?")]
    HostBits {
        text: String,
        network: Ipv4Addr,
        len: u8,
    },
    #[error("{0:?} is not an IPv4 address, a CIDR, a service tag or `anywhere`")]
    Unknown(String),
}

/// Parse what a person typed: `203.0.113.7`, `203.0.113.0/24`, a service tag, or `anywhere`.
/// Opening to everyone needs the word `anywhere`; `*`, `0.0.0.0/0` and `Internet` are refused
/// with that hint so nobody does it by accident.
pub fn parse_source(text: &str) -> Result<RdpSource, SourceError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("anywhere") {
        return Ok(RdpSource::Anywhere);
    }
    if text == "*"
        || text == "0.0.0.0/0"
        || text.eq_ignore_ascii_case("internet")
        || text.eq_ignore_ascii_case("any")
    {
        return Err(SourceError::Everyone(text.to_string()));
    }
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(RdpSource::Address(ip));
    }
    if let Some((ip, len)) = text.split_once('/') {
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| SourceError::NotCidr(text.to_string()))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=32).contains(l))
            .ok_or_else(|| SourceError::PrefixLength(text.to_string()))?;
        let net = Ipv4Net::new(ip, len).map_err(|_| SourceError::PrefixLength(text.to_string()))?;
        if net != net.trunc() {
            return Err(SourceError::HostBits {
                text: text.to_string(),
                network: net.trunc().network(),
                len,
            });
        }
        return Ok(RdpSource::Cidr(net));
    }
    let tag_ok = !text.is_empty()
        && text.len() <= 80
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        && text.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if tag_ok {
        return Ok(RdpSource::Tag(text.to_string()));
    }
    Err(SourceError::Unknown(text.to_string()))
}

fn rule_name(source: &RdpSource, port: u16) -> String {
    let tail: String = source
        .prefix()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let tail = if tail == "-" {
        "anywhere".to_string()
    } else {
        tail
    };
    let port = if port == nsg::RDP_PORT {
        String::new()
    } else {
        format!("{port}-")
    };
    format!("rdp-doctor-allow-rdp-{port}{tail}")
        .chars()
        .take(80)
        .collect()
}

pub(super) async fn plan(
    arm: &Arm,
    facts: &Facts,
    source: &RdpSource,
    port: u16,
) -> Result<Plan, PlanError> {
    let name = &facts.vm.name;
    if port == 0 {
        return Err(Refusal {
            reason: "Port 0 is not a port Remote Desktop can listen on.".into(),
            instead: None,
        }
        .into());
    }
    if !facts.state.is_running() {
        return Err(Refusal {
            reason: format!("{name} is not running, and Azure computes effective security rules only for running VMs."),
            instead: Some(ActionId::Start),
        }
        .into());
    }
    let Some(nic) = &facts.nic else {
        return Err(Refusal {
            reason: format!("{name} has no network interface."),
            instead: None,
        }
        .into());
    };
    let nsgs = arm.effective_nsgs(&nic.nic_id).await?;
    let verdict = nsg::evaluate(&nsgs, &super::rdp_probe(facts, source.probe_source(), port));
    let deciding = match (&verdict.allowed, verdict.deciding) {
        (true, Some(rule)) => {
            return Err(Refusal {
                reason: format!(
                    "TCP {port} from {} is already allowed by rule {} (priority {}) in NSG {}.",
                    source.prefix(),
                    rule.rule,
                    rule.priority,
                    rule.nsg
                ),
                instead: None,
            }
            .into())
        }
        (true, None) => {
            return Err(Refusal {
                reason: format!("No network security group applies to this VM: nothing blocks {port} at the NSG level."),
                instead: Some(ActionId::ResetRdpConfig),
            }
            .into())
        }
        (false, Some(rule)) => rule,
        (false, None) => {
            return Err(Refusal {
                reason: "The NSG verdict names no blocking rule.".into(),
                instead: None,
            }
            .into())
        }
    };
    let used: Vec<i32> = arm
        .nsg_rules(&deciding.nsg_id)
        .await?
        .into_iter()
        .filter(|r| r.inbound)
        .map(|r| r.priority)
        .collect();
    let Some(priority) = free_priority_below(deciding.priority, &used) else {
        return Err(Refusal {
            reason: format!(
                "Rule {} in NSG {} has priority {}: no new rule can win over it (100 is the lowest). Edit or remove that rule instead.",
                deciding.rule, deciding.nsg, deciding.priority
            ),
            instead: None,
        }
        .into());
    };
    let description = if port == nsg::RDP_PORT {
        format!("Added by rdp-doctor for {name}")
    } else {
        format!("Added by rdp-doctor for {name}: its RDP listener is on TCP {port}")
    };
    let rule = NewRdpRule {
        name: rule_name(source, port),
        priority,
        port,
        source: source.prefix(),
        description,
    };
    let beats = if deciding.implicit {
        "no rule allowed it".to_string()
    } else {
        format!(
            "wins over {} (priority {})",
            deciding.rule, deciding.priority
        )
    };
    let mut warnings = Vec::new();
    if *source == RdpSource::Anywhere {
        warnings.push(format!("This opens Remote Desktop to the whole Internet. Password-guessing bots find open RDP ports (TCP {port} included) within minutes; prefer your own address, a VPN or Azure Bastion, and remove the rule when done."));
    }
    Ok(Plan {
        action: ActionId::OpenRdpPort,
        vm: facts.vm.clone(),
        headline: format!(
            "Allow TCP {port} from {} to {name}",
            match source {
                RdpSource::Anywhere => "anywhere".to_string(),
                other => other.prefix(),
            }
        ),
        consequences: {
            let mut c = vec![
                format!(
                    "Adds inbound Allow rule {} (TCP {port} from {}) at priority {priority} to NSG {}; it {beats}",
                    rule.name, rule.source, deciding.nsg
                ),
                format!("NSG {} may serve other VMs: the rule applies to them too", deciding.nsg),
            ];
            if port != nsg::RDP_PORT {
                c.push(format!("Clients must connect to {name} on port {port} (`mstsc /v:ADDRESS:{port}`); moving the listener back to 3389 (`reset-rdp-port`) is the other way"));
            }
            c
        },
        warnings,
        step: Step::Rule {
            nsg_id: deciding.nsg_id.clone(),
            rule,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_everyone_needs_the_word_anywhere() {
        assert_eq!(
            parse_source("203.0.113.7"),
            Ok(RdpSource::Address("203.0.113.7".parse().unwrap()))
        );
        assert_eq!(
            parse_source("203.0.113.0/24").map(|s| s.prefix()),
            Ok("203.0.113.0/24".into())
        );
        assert_eq!(
            parse_source("AzureCloud"),
            Ok(RdpSource::Tag("AzureCloud".into()))
        );
        assert_eq!(parse_source(" Anywhere "), Ok(RdpSource::Anywhere));
        for everyone in ["*", "0.0.0.0/0", "Internet", "any"] {
            assert!(
                parse_source(everyone)
                    .unwrap_err()
                    .to_string()
                    .contains("anywhere"),
                "{everyone}"
            );
        }
        assert!(parse_source("203.0.113.7/24")
            .unwrap_err()
            .to_string()
            .contains("203.0.113.0/24"));
        assert!(parse_source("10.0.0.0/40").is_err());
        assert!(parse_source("rm -rf /").is_err());
    }

    #[test]
    fn rule_names_fit_azure() {
        assert_eq!(
            rule_name(&RdpSource::Anywhere, 3389),
            "rdp-doctor-allow-rdp-anywhere"
        );
        assert_eq!(
            rule_name(&RdpSource::Cidr("203.0.113.0/24".parse().unwrap()), 3389),
            "rdp-doctor-allow-rdp-203-0-113-0-24"
        );
        assert_eq!(
            rule_name(&RdpSource::Address("203.0.113.7".parse().unwrap()), 3390),
            "rdp-doctor-allow-rdp-3390-203-0-113-7"
        );
    }
}
