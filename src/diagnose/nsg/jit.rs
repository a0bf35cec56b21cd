//! Microsoft Defender for Cloud's just-in-time VM access, as the `nsg` check weighs it: a deny
//! from one of the rules Defender writes (`SecurityCenter-JITRule…`) on a VM a JIT policy
//! protects is the security team's design, closed until someone asks for access, not a broken
//! NSG; the fix is `request-jit`, never `open-rdp-port`.
//!
//! Microsoft's sources: the security REST spec 2020-01-01, `jitNetworkAccessPolicies.json`
//! (policies listed per subscription, their VMs' ports with `allowedSourceAddressPrefix` and
//! `maxRequestAccessDuration`, the `requests` with requestor, source and `endTimeUtc`), and
//! Microsoft Learn, "Enable just-in-time access on VMs".

use super::super::{ActionId, Finding, Status};
use serde::Serialize;

/// The prefix of the NSG rules Defender's just-in-time access writes.
pub const JIT_RULE_PREFIX: &str = "SecurityCenter-JITRule";

/// Is this (short or full) rule name one of JIT's?
pub fn is_jit_rule(name: &str) -> bool {
    super::eval::short_rule_name(name).starts_with(JIT_RULE_PREFIX)
}

/// One port of a JIT policy for one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JitPortFacts {
    pub number: u16,
    /// "*" (any address a request names) or a prefix.
    pub allowed_source: String,
    /// `maxRequestAccessDuration` in hours (Azure writes "PT3H").
    pub max_hours: Option<u32>,
}

/// A request that opened a port of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JitRequestFacts {
    pub requestor: String,
    pub source: String,
    pub port: u16,
    /// `endTimeUtc` as Azure wrote it.
    pub end_utc: String,
    pub status: String,
}

/// The JIT policy protecting one VM, as far as the VM is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JitPolicyFacts {
    /// The policy's id (`…/locations/{loc}/jitNetworkAccessPolicies/{name}`).
    pub id: String,
    pub name: String,
    pub ports: Vec<JitPortFacts>,
    pub requests: Vec<JitRequestFacts>,
}

impl JitPolicyFacts {
    pub fn port(&self, number: u16) -> Option<&JitPortFacts> {
        self.ports.iter().find(|p| p.number == number)
    }
}

/// `PT3H` → 3 (whole hours, as Defender writes them).
pub fn iso_hours(duration: &str) -> Option<u32> {
    duration.strip_prefix("PT")?.strip_suffix('H')?.parse().ok()
}

fn describe_port(port: &JitPortFacts) -> String {
    let from = if port.allowed_source == "*" {
        "any address a request names".to_owned()
    } else {
        port.allowed_source.clone()
    };
    match port.max_hours {
        Some(h) => format!("TCP {} from {from}, for at most {h} hours", port.number),
        None => format!("TCP {} from {from}", port.number),
    }
}

/// The `nsg` finding for a VM a JIT policy protects: when a JIT rule denied the port, "closed
/// by just-in-time access" with the policy's limits and any active request, and `request-jit`
/// as the fix; when a request's rule allowed it, the pass says so. `open-rdp-port` is never
/// suggested for such a VM.
pub fn judge(finding: Finding, policy: &JitPolicyFacts, port: u16, vm: &str) -> Finding {
    let rule = finding.evidence["rule"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let active: Vec<&JitRequestFacts> = policy.requests.iter().filter(|r| r.port == port).collect();
    let active_text: Vec<String> = active
        .iter()
        .map(|r| {
            format!(
                "Active request: {} opened TCP {} for {} until {}",
                r.requestor, r.port, r.source, r.end_utc
            )
        })
        .collect();
    let mut evidence = finding.evidence.clone();
    if let Some(map) = evidence.as_object_mut() {
        map.insert(
            "jit".to_owned(),
            serde_json::to_value(policy).unwrap_or(serde_json::Value::Null),
        );
    }
    let policy_line = match policy.port(port) {
        Some(p) => format!(
            "Just-in-time policy {} allows requests for {}.",
            policy.name,
            describe_port(p)
        ),
        None => format!(
            "Just-in-time policy {} protects {vm} but lists no rule for TCP {port}.",
            policy.name
        ),
    };
    if finding.status == Status::Pass && is_jit_rule(&rule) {
        let mut pass = Finding::new(
            finding.step,
            Status::Pass,
            format!("{} (opened by just-in-time access)", finding.summary),
        )
        .detail(policy_line);
        for line in active_text {
            pass = pass.detail(line);
        }
        pass.evidence = evidence;
        return pass;
    }
    if finding.status == Status::Fail && is_jit_rule(&rule) {
        let from = finding.evidence["source"].as_str().unwrap_or("Internet");
        let from = if from == "Internet" {
            "from the Internet".to_owned()
        } else {
            format!("from {from}")
        };
        let mut closed = Finding::new(
            finding.step,
            Status::Fail,
            format!(
                "TCP {port} {from} is closed by just-in-time access (Defender for Cloud policy {}, rule {rule})",
                policy.name
            ),
        )
        .detail(policy_line);
        if active_text.is_empty() {
            closed = closed.detail("No request is active.");
        }
        for line in active_text {
            closed = closed.detail(line);
        }
        closed = closed
            .detail("This is the security team's design: request access for your address instead of opening the NSG.")
            .next_step(format!(
                "Request just-in-time access for your address: rdp-doctor request-jit {vm} --from YOUR.IP.ADDRESS [--hours N], or /rdp request-jit in Discord."
            ));
        if policy.port(port).is_some() {
            closed = closed.suggests(ActionId::RequestJit);
        }
        closed.evidence = evidence;
        return closed;
    }
    // Another rule decided: keep the finding, but never offer to open the NSG on a VM whose
    // management port the security team put behind just-in-time access.
    let mut kept = finding;
    if kept.suggests == Some(ActionId::OpenRdpPort) {
        kept.suggests = None;
        kept = kept.detail(format!(
            "{vm} is protected by just-in-time access (policy {}): open-rdp-port is not offered; request access with request-jit once the rule above is fixed.",
            policy.name
        ));
    }
    kept.evidence = evidence;
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::CheckId;

    fn policy(requests: Vec<JitRequestFacts>) -> JitPolicyFacts {
        JitPolicyFacts {
            id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Security/locations/westeurope/jitNetworkAccessPolicies/default".into(),
            name: "default".into(),
            ports: vec![JitPortFacts { number: 3389, allowed_source: "*".into(), max_hours: Some(3) }],
            requests,
        }
    }

    #[test]
    fn a_jit_deny_is_closed_by_design_and_suggests_request_jit() {
        let denied = Finding::new(CheckId::Nsg, Status::Fail, "TCP 3389 from the Internet is denied by rule SecurityCenter-JITRule_-1_AB (priority 1000) in NSG nsg-jit")
            .suggests(ActionId::OpenRdpPort)
            .evidence(serde_json::json!({"allowed": false, "rule": "SecurityCenter-JITRule_-1_AB", "source": "Internet"}));
        let judged = judge(denied, &policy(Vec::new()), 3389, "jit-01");
        assert_eq!(judged.suggests, Some(ActionId::RequestJit));
        assert!(
            judged.summary.contains("closed by just-in-time access"),
            "{}",
            judged.summary
        );
        assert!(judged
            .details
            .iter()
            .any(|d| d.contains("for at most 3 hours")));
        assert!(judged.details.iter().any(|d| d == "No request is active."));
        assert_eq!(judged.evidence["jit"]["name"], "default");
    }

    #[test]
    fn another_rules_deny_on_a_jit_vm_never_offers_open_rdp_port() {
        let denied = Finding::new(CheckId::Nsg, Status::Fail, "denied by rule deny-all")
            .suggests(ActionId::OpenRdpPort)
            .evidence(serde_json::json!({"allowed": false, "rule": "deny-all"}));
        let judged = judge(denied, &policy(Vec::new()), 3389, "jit-01");
        assert_eq!(judged.suggests, None);
        assert_eq!(iso_hours("PT3H"), Some(3));
    }
}
