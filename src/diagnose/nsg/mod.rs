//! `nsg`: do the effective security rules let inbound TCP 3389 through (runbook step 2)?
//! The evaluator (`eval`) is pure and property-tested; this file turns its verdict into a finding.

pub mod eval;

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
/// from its source to the VM.
pub fn check(nsgs: &[EffectiveNsg], probe: &Probe) -> Finding {
    let verdict = evaluate(nsgs, probe);
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
