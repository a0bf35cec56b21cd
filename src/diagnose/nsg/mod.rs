//! `nsg`: do the effective security rules let inbound TCP 3389 through (runbook step 2)?
//! The evaluator (`eval`) is pure and property-tested; this file turns its verdict into a finding.

pub mod admin;
pub mod eval;
pub mod jit;

pub use admin::{AdminAccess, AdminRule};

pub use eval::{
    evaluate, Access, Association, Direction, EffectiveNsg, EffectiveRule, NsgVerdict, Probe,
    RuleRef, TrafficSource,
};

use super::{ActionId, CheckId, Finding, Status};
use serde::Serialize;

/// RDP's port.
pub const RDP_PORT: u16 = 3389;

#[derive(Serialize)]
struct Evidence<'a> {
    allowed: bool,
    rule: Option<&'a str>,
    priority: Option<i32>,
    nsg: Option<&'a str>,
    source: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    only_from: Vec<String>,
    /// The port judged, when it is not RDP's own (the guest's listener moved it).
    #[serde(skip_serializing_if = "is_rdp_port")]
    port: u16,
    /// The Virtual Network Manager admin rule that decided, before any NSG.
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_rule: Option<AdminEvidence<'a>>,
}

#[derive(Serialize)]
struct AdminEvidence<'a> {
    name: &'a str,
    access: &'static str,
    priority: i32,
    network_manager: &'a str,
    configuration: &'a str,
    rule_collection: &'a str,
    id: &'a str,
}

/// The virtual network's Virtual Network Manager admin rules, as far as they could be read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdminRules {
    /// Not asked (a sweep that already knows, or a NIC without a subnet).
    #[default]
    NotRead,
    /// The effective inbound admin rules (often none).
    Read(Vec<AdminRule>),
    /// Azure would not say (e.g. a role without
    /// `Microsoft.Network/virtualNetworks/listNetworkManagerEffectiveSecurityAdminRules/action`).
    Unreadable(String),
}

fn is_rdp_port(port: &u16) -> bool {
    *port == RDP_PORT
}

fn describe_source(source: &TrafficSource) -> String {
    match source {
        TrafficSource::Internet => "Internet".to_string(),
        TrafficSource::Address(ip) => ip.to_string(),
    }
}

/// The finding for `probe`: TCP `probe.port` (3389 unless the guest's listener says otherwise)
/// from its source to the VM, from the NSGs alone.
pub fn check(nsgs: &[EffectiveNsg], probe: &Probe) -> Finding {
    check_with_admin(nsgs, &AdminRules::NotRead, probe)
}

/// The finding for `probe` with the virtual network's admin rules weighed first: a matching
/// `Deny` fails whatever the NSGs allow (and the fix is the network team's, not an NSG rule), a
/// matching `AlwaysAllow` passes whatever they deny, and `Allow` leaves it to the NSGs.
pub fn check_with_admin(nsgs: &[EffectiveNsg], admin: &AdminRules, probe: &Probe) -> Finding {
    let from = match probe.source {
        TrafficSource::Internet => "from the Internet".to_string(),
        TrafficSource::Address(ip) => format!("from {ip}"),
    };
    let port = probe.port;
    let rules = match admin {
        AdminRules::Read(rules) => rules.as_slice(),
        _ => &[],
    };
    let decided = admin::deciding(rules, probe);
    let nsg_verdict = evaluate(nsgs, probe);
    match decided {
        Some(rule) if rule.access == AdminAccess::Deny => {
            let evidence = decided_by(rule, false, probe);
            let mut finding = Finding::new(
                CheckId::Nsg,
                Status::Fail,
                format!("TCP {port} {from} is denied by {}", rule.describe()),
            )
            .detail(
                "Security admin rules are evaluated before network security groups: no NSG rule can open this port; the fix belongs to the network team.",
            )
            .next_step(format!(
                "Security admin rule {} of Virtual Network Manager {} (configuration {}, rule collection {}) denies TCP {port} before any NSG is consulted: no NSG change can open it. Ask the network team that manages {} to change the rule or exempt this virtual network; rdp-doctor offers no fix for it.",
                rule.name, rule.network_manager, rule.configuration, rule.rule_collection, rule.network_manager
            ))
            .evidence(evidence);
            if nsg_verdict.allowed {
                if let Some(by) = &nsg_verdict.deciding {
                    finding = finding.detail(format!(
                        "The NSGs alone would allow it (rule {} in NSG {}).",
                        by.rule, by.nsg
                    ));
                }
            }
            return finding;
        }
        Some(rule) if rule.access == AdminAccess::AlwaysAllow => {
            let evidence = decided_by(rule, true, probe);
            let mut finding = Finding::new(
                CheckId::Nsg,
                Status::Pass,
                format!(
                    "TCP {port} {from} is allowed by {} (AlwaysAllow), whatever the NSGs say",
                    rule.describe()
                ),
            )
            .evidence(evidence);
            if !nsg_verdict.allowed {
                if let Some(by) = &nsg_verdict.deciding {
                    finding = finding.detail(format!(
                        "NSG {} would deny it ({}), but an AlwaysAllow admin rule is evaluated first.",
                        by.nsg, by.rule
                    ));
                }
            }
            return finding;
        }
        _ => {}
    }
    let mut finding = nsg_finding(nsg_verdict, probe);
    if let Some(rule) = decided {
        finding = finding.detail(format!(
            "{} allows it and leaves the decision to the NSGs.",
            capitalise(&rule.describe())
        ));
    }
    if let AdminRules::Unreadable(why) = admin {
        finding = finding.detail(format!(
            "Virtual Network Manager's admin rules could not be read ({why}); an admin rule could still decide this."
        ));
    }
    finding
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The evidence of a verdict a Virtual Network Manager admin rule decided (no NSG, no "only
/// from").
fn decided_by<'a>(rule: &'a AdminRule, allowed: bool, probe: &Probe) -> Evidence<'a> {
    Evidence {
        allowed,
        rule: Some(&rule.name),
        priority: Some(rule.priority),
        nsg: None,
        source: describe_source(&probe.source),
        only_from: Vec::new(),
        port: probe.port,
        admin_rule: Some(AdminEvidence {
            name: &rule.name,
            access: rule.access.as_str(),
            priority: rule.priority,
            network_manager: &rule.network_manager,
            configuration: &rule.configuration,
            rule_collection: &rule.rule_collection,
            id: &rule.id,
        }),
    }
}

fn nsg_finding(verdict: NsgVerdict, probe: &Probe) -> Finding {
    let port = probe.port;
    let source = describe_source(&probe.source);
    let deciding = verdict.deciding.as_ref();
    let only_from: Vec<String> = verdict
        .narrower_allows
        .iter()
        .map(|r| {
            format!(
                "{} from {} (priority {}, NSG {})",
                r.rule,
                r.sources.join(", "),
                r.priority,
                r.nsg
            )
        })
        .collect();
    let evidence = Evidence {
        allowed: verdict.allowed,
        rule: deciding.map(|r| r.rule.as_str()),
        priority: deciding.filter(|r| !r.implicit).map(|r| r.priority),
        nsg: deciding.map(|r| r.nsg.as_str()),
        source: source.clone(),
        only_from: only_from.clone(),
        port,
        admin_rule: None,
    };
    let from = match probe.source {
        TrafficSource::Internet => "from the Internet".to_string(),
        TrafficSource::Address(ip) => format!("from {ip}"),
    };
    let finding = match (verdict.allowed, deciding) {
        (true, None) => Finding::new(
            CheckId::Nsg,
            Status::Pass,
            format!(
                "No network security group applies to the NIC: TCP {port} is not filtered {from}"
            ),
        ),
        (true, Some(rule)) => Finding::new(
            CheckId::Nsg,
            Status::Pass,
            format!(
                "TCP {port} {from} is allowed by rule {} (priority {}) in NSG {}",
                rule.rule, rule.priority, rule.nsg
            ),
        ),
        (false, rule) => {
            let by = match rule {
                Some(r) if r.implicit => format!("NSG {} (no rule in it allows it)", r.nsg),
                Some(r) => format!("rule {} (priority {}) in NSG {}", r.rule, r.priority, r.nsg),
                None => "no matching allow rule".to_string(),
            };
            if matches!(probe.source, TrafficSource::Internet) && !only_from.is_empty() {
                Finding::new(
                    CheckId::Nsg,
                    Status::Warn,
                    format!(
                        "TCP {port} is open only from {}; from anywhere else it is denied by {by}",
                        verdict
                            .narrower_allows
                            .iter()
                            .flat_map(|r| r.sources.iter().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .detail(format!("Allowed only by: {}", only_from.join("; ")))
                .detail("Run the check again with --from YOUR_PUBLIC_IP to test your own address.")
            } else {
                let denied = Finding::new(
                    CheckId::Nsg,
                    Status::Fail,
                    format!("TCP {port} {from} is denied by {by}"),
                );
                if port == RDP_PORT {
                    denied.suggests(ActionId::OpenRdpPort)
                } else {
                    // The runbook's open-rdp-port fix opens 3389, which nothing listens on.
                    denied.detail(format!(
                        "Add an inbound allow rule for TCP {port}, or move the listener back to {RDP_PORT} (fix `reset-rdp-port`)."
                    ))
                }
            }
        }
    };
    let mut finding = finding.evidence(evidence);
    finding.details.extend(verdict.notes.iter().cloned());
    finding
}
