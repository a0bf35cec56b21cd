//! `request-jit`: ask Microsoft Defender for Cloud's just-in-time access to open TCP 3389 of a
//! VM for one address, for a number of hours within the policy's `maxRequestAccessDuration`
//! (`JitNetworkAccessPolicies_Initiate`, security spec 2020-01-01). Planned from the policy
//! that protects the VM, read live.

use super::{Facts, Plan, PlanError, Refusal, Step};
use crate::azure::Arm;
use crate::diagnose::nsg::RDP_PORT;
use crate::diagnose::ActionId;
use std::net::Ipv4Addr;

/// Hours asked for when the person names none.
pub const DEFAULT_HOURS: u32 = 1;

pub(super) async fn plan(
    arm: &Arm,
    facts: &Facts,
    source: Ipv4Addr,
    hours: Option<u32>,
) -> Result<Plan, PlanError> {
    let vm = &facts.vm;
    let policy = arm.jit_policy(vm).await?.ok_or_else(|| Refusal {
        reason: format!(
            "{} is not protected by just-in-time access: no Defender for Cloud JIT policy of its subscription lists it.",
            vm.name
        ),
        instead: Some(ActionId::OpenRdpPort),
    })?;
    let port = policy.port(RDP_PORT).ok_or_else(|| Refusal {
        reason: format!(
            "Just-in-time policy {} protects {} but not TCP {RDP_PORT}: ask the security team to add it.",
            policy.name, vm.name
        ),
        instead: None,
    })?;
    if port.allowed_source != "*" && port.allowed_source != source.to_string() {
        return Err(Refusal {
            reason: format!(
                "Just-in-time policy {} opens TCP {RDP_PORT} only for {}, not {source}.",
                policy.name, port.allowed_source
            ),
            instead: None,
        }
        .into());
    }
    let max = port.max_hours.unwrap_or(3);
    let hours = hours.unwrap_or(DEFAULT_HOURS.min(max));
    if hours == 0 || hours > max {
        return Err(Refusal {
            reason: format!(
                "Just-in-time policy {} allows requests of 1 to {max} hours; {hours} is outside that.",
                policy.name
            ),
            instead: None,
        }
        .into());
    }
    let plural = if hours == 1 { "hour" } else { "hours" };
    let mut consequences = vec![
        format!(
            "Defender for Cloud adds an allow rule for TCP {RDP_PORT} from {source} to {} ahead of its just-in-time deny, for {hours} {plural} (policy {} allows at most {max}).",
            vm.name, policy.name
        ),
        "When the time is up Defender removes the rule and the port is closed again; nothing else changes.".to_owned(),
    ];
    if let Some(active) = policy.requests.iter().find(|r| r.port == RDP_PORT) {
        consequences.push(format!(
            "A request is already active: {} opened it for {} until {}.",
            active.requestor, active.source, active.end_utc
        ));
    }
    Ok(Plan {
        action: ActionId::RequestJit,
        vm: vm.clone(),
        headline: format!(
            "Request just-in-time access to TCP {RDP_PORT} of {} for {source}, {hours} {plural}",
            vm.name
        ),
        consequences,
        warnings: Vec::new(),
        step: Step::Jit {
            policy_id: policy.id.clone(),
            port: RDP_PORT,
            source: source.to_string(),
            hours,
        },
    })
}
