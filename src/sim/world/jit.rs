//! Microsoft Defender for Cloud's just-in-time VM access in the world: JIT policies
//! (`[[jit_policy]]`), the NSG rules Defender writes for them and the requests that open a port
//! for one address for a while.
//!
//! Microsoft's sources: the security REST spec 2020-01-01, `jitNetworkAccessPolicies.json` (a
//! policy per resource group and location, `Microsoft.Security/locations/jitNetworkAccessPolicies`,
//! its VMs' ports with `allowedSourceAddressPrefix` and `maxRequestAccessDuration`, and its
//! `requests`; the examples `GetJitNetworkAccessPoliciesSubscription_example.json` and
//! `InitiateJitNetworkAccessPolicy_example.json`), and Microsoft Learn, "Enable just-in-time
//! access on VMs": Defender adds a "deny all inbound traffic" rule for each selected port (top
//! priority when no other rule names the port), and on a request an allow rule for the
//! requested source, ahead of the deny, which it removes when the request's end time passes.

use super::{Nsg, Rule, Vm, WorldError};
use serde::{Deserialize, Serialize};

/// The prefix of every NSG rule Defender's JIT writes.
pub const JIT_RULE_PREFIX: &str = "SecurityCenter-JITRule";

/// The priority of the deny rules JIT writes: ahead of every rule rdp-doctor's worlds write
/// (whose first is 100 only for a blocking subnet rule) but after the allows of requests.
pub const JIT_DENY_PRIORITY: u32 = 1000;

/// The first priority of the allow rules of requests (ahead of the deny).
pub const JIT_ALLOW_PRIORITY: u32 = 100;

/// A JIT policy (`[[jit_policy]]`): the VMs of one resource group and location it protects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JitPolicy {
    /// Policy name (Defender names the portal's "default").
    #[serde(default = "default_name")]
    pub name: String,
    /// Subscription id; defaults to the first `[[subscription]]`.
    #[serde(default)]
    pub subscription: String,
    /// Resource group of the policy and its VMs.
    pub resource_group: String,
    /// Azure region of the policy and its VMs.
    #[serde(default = "super::default_location")]
    pub location: String,
    /// The VMs it protects, by name in `resource_group`.
    pub vms: Vec<String>,
    /// The ports (`[[jit_policy.port]]`); RDP's 3389 from any source for at most 3 hours
    /// unless given.
    #[serde(default = "default_ports", rename = "port")]
    pub ports: Vec<JitPort>,
}

/// One port of a JIT policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JitPort {
    pub number: u16,
    /// What a request may open it for: "*" (any address the requester names) or a prefix.
    #[serde(default = "super::any")]
    pub allowed_source: String,
    /// ISO 8601 duration, "PT1H" to "PT24H".
    #[serde(default = "default_max_duration")]
    pub max_duration: String,
}

/// A request that opened a port (`requests[]` of the policy): live state, never in a file.
#[derive(Clone, Debug, PartialEq)]
pub struct JitRequest {
    pub policy: String,
    pub subscription: String,
    pub resource_group: String,
    pub vm: String,
    pub port: u16,
    pub source: String,
    pub requestor: String,
    pub justification: Option<String>,
    /// Unix seconds on the world's clock.
    pub start: i64,
    pub end: i64,
    /// The allow rule it added to the VM's NIC NSG.
    pub rule: String,
}

fn default_name() -> String {
    "default".to_owned()
}

fn default_max_duration() -> String {
    "PT3H".to_owned()
}

fn default_ports() -> Vec<JitPort> {
    vec![JitPort {
        number: 3389,
        allowed_source: "*".to_owned(),
        max_duration: default_max_duration(),
    }]
}

/// Hours of an ISO 8601 duration of whole hours ("PT3H"), as the portal writes them.
pub fn duration_hours(iso: &str) -> Option<u32> {
    iso.strip_prefix("PT")?.strip_suffix('H')?.parse().ok()
}

/// Defender's rule name: the prefix, a number and a hash, stable for one VM and port.
pub fn rule_name(vm: &Vm, port: u16, kind: &str) -> String {
    let seed = format!("{}/{}/{port}/{kind}", vm.subscription, vm.name).to_ascii_lowercase();
    let hash = crate::sim::stable_uuid(&seed)
        .replace('-', "")
        .to_ascii_uppercase();
    let number = u32::from_str_radix(&hash[..7], 16).unwrap_or(0);
    format!("{JIT_RULE_PREFIX}_-{number}_{}", &hash[8..])
}

/// Does this policy protect `vm`?
pub fn protects(policy: &JitPolicy, vm: &Vm) -> bool {
    policy.subscription.eq_ignore_ascii_case(&vm.subscription)
        && policy
            .resource_group
            .eq_ignore_ascii_case(&vm.resource_group)
        && policy.vms.iter().any(|n| n.eq_ignore_ascii_case(&vm.name))
}

/// The deny rule JIT keeps in `nsg` for `port` of `vm`, added if missing.
pub(super) fn ensure_deny(nsg: &mut Nsg, vm: &Vm, port: u16) {
    let name = rule_name(vm, port, "deny");
    if nsg.rules.iter().any(|r| r.name == name) {
        return;
    }
    let mut rule = Rule::inbound_tcp(&name, JIT_DENY_PRIORITY, "Deny", "*", &port.to_string());
    rule.protocol = "*".to_owned();
    rule.destination = Some(vm.private_ip.clone());
    nsg.rules.push(rule);
}

/// Checks a policy's ports.
pub(super) fn validate(policy: &JitPolicy) -> Result<(), WorldError> {
    for port in &policy.ports {
        match duration_hours(&port.max_duration) {
            Some(1..=24) => {}
            _ => {
                return Err(WorldError::Invalid(format!(
                    "JIT policy '{}': port {} max_duration '{}' is not PT1H..PT24H",
                    policy.name, port.number, port.max_duration
                )))
            }
        }
    }
    Ok(())
}
