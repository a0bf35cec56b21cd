//! Pure diagnosis: facts read from Azure (plain structs) in, findings out.
//!
//! **Architecture Invariant:** nothing here does I/O or names an Azure SDK, Discord or clap type.
//! The `azure` module turns ARM responses into these facts; the runbook decides which checks run
//! and in what order. That keeps every verdict testable from a struct literal.

pub mod boot_diagnostics;
pub mod guest;
pub mod network_path;
pub mod nsg;
pub mod public_ip;
pub mod resource_health;
pub mod vm_agent;
pub mod vm_status;

use serde::{Deserialize, Deserializer, Serialize};

/// The runbook's checks, in runbook order (the order reports list them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    VmStatus,
    VmAgent,
    PublicIp,
    Nsg,
    ResourceHealth,
    BootDiagnostics,
    /// The way back from the VM to a person's address (Network Watcher's next hop).
    NetworkPath,
    // Inside Windows, through Run Command (opt-in: `check --guest`, `/rdp guest`).
    GuestRdp,
    GuestService,
    GuestListener,
    GuestFirewall,
    GuestNla,
    GuestCertificate,
    GuestLicensing,
    GuestDisk,
}

impl CheckId {
    pub const ALL: [CheckId; 15] = [
        CheckId::VmStatus,
        CheckId::VmAgent,
        CheckId::PublicIp,
        CheckId::Nsg,
        CheckId::ResourceHealth,
        CheckId::BootDiagnostics,
        CheckId::NetworkPath,
        CheckId::GuestRdp,
        CheckId::GuestService,
        CheckId::GuestListener,
        CheckId::GuestFirewall,
        CheckId::GuestNla,
        CheckId::GuestCertificate,
        CheckId::GuestLicensing,
        CheckId::GuestDisk,
    ];

    /// The checks every `check` runs, from Azure Resource Manager alone.
    pub const ARM: [CheckId; 7] = [
        CheckId::VmStatus,
        CheckId::VmAgent,
        CheckId::PublicIp,
        CheckId::Nsg,
        CheckId::ResourceHealth,
        CheckId::BootDiagnostics,
        CheckId::NetworkPath,
    ];

    /// The checks inside Windows, from one read-only Run Command script.
    pub const GUEST: [CheckId; 8] = [
        CheckId::GuestRdp,
        CheckId::GuestService,
        CheckId::GuestListener,
        CheckId::GuestFirewall,
        CheckId::GuestNla,
        CheckId::GuestCertificate,
        CheckId::GuestLicensing,
        CheckId::GuestDisk,
    ];

    /// Whether this check looks inside Windows (through Run Command).
    pub fn is_guest(self) -> bool {
        CheckId::GUEST.contains(&self)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::VmStatus => "vm-status",
            CheckId::VmAgent => "vm-agent",
            CheckId::PublicIp => "public-ip",
            CheckId::Nsg => "nsg",
            CheckId::ResourceHealth => "resource-health",
            CheckId::BootDiagnostics => "boot-diagnostics",
            CheckId::NetworkPath => "network-path",
            CheckId::GuestRdp => "guest-rdp",
            CheckId::GuestService => "guest-service",
            CheckId::GuestListener => "guest-listener",
            CheckId::GuestFirewall => "guest-firewall",
            CheckId::GuestNla => "guest-nla",
            CheckId::GuestCertificate => "guest-certificate",
            CheckId::GuestLicensing => "guest-licensing",
            CheckId::GuestDisk => "guest-disk",
        }
    }
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runbook's fixes. Which one a report recommends is decided by the runbook's ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionId {
    ResetRdpConfig,
    OpenRdpPort,
    ResetPassword,
    Start,
    Restart,
    Redeploy,
    /// Remove the route that sends the reply to an appliance (or nowhere).
    RemoveRoute,
    /// Ask Defender for Cloud's just-in-time access to open 3389 for one address.
    RequestJit,
    // Inside Windows, through Run Command.
    EnableRdp,
    StartTermservice,
    ResetRdpPort,
    EnableFirewallRdp,
    RenewRdpCertificate,
    RemoveRdshRole,
    FreeDiskSpace,
}

impl ActionId {
    pub const ALL: [ActionId; 15] = [
        ActionId::ResetRdpConfig,
        ActionId::OpenRdpPort,
        ActionId::ResetPassword,
        ActionId::Start,
        ActionId::Restart,
        ActionId::Redeploy,
        ActionId::RemoveRoute,
        ActionId::RequestJit,
        ActionId::EnableRdp,
        ActionId::StartTermservice,
        ActionId::ResetRdpPort,
        ActionId::EnableFirewallRdp,
        ActionId::RenewRdpCertificate,
        ActionId::RemoveRdshRole,
        ActionId::FreeDiskSpace,
    ];

    /// The fixes that run a script inside Windows (through Run Command).
    pub const GUEST: [ActionId; 7] = [
        ActionId::EnableRdp,
        ActionId::StartTermservice,
        ActionId::ResetRdpPort,
        ActionId::EnableFirewallRdp,
        ActionId::RenewRdpCertificate,
        ActionId::RemoveRdshRole,
        ActionId::FreeDiskSpace,
    ];

    /// Whether this fix runs a script inside Windows.
    pub fn is_guest(self) -> bool {
        ActionId::GUEST.contains(&self)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActionId::ResetRdpConfig => "reset-rdp-config",
            ActionId::OpenRdpPort => "open-rdp-port",
            ActionId::ResetPassword => "reset-password",
            ActionId::Start => "start",
            ActionId::Restart => "restart",
            ActionId::Redeploy => "redeploy",
            ActionId::RemoveRoute => "remove-route",
            ActionId::RequestJit => "request-jit",
            ActionId::EnableRdp => "enable-rdp",
            ActionId::StartTermservice => "start-termservice",
            ActionId::ResetRdpPort => "reset-rdp-port",
            ActionId::EnableFirewallRdp => "enable-firewall-rdp",
            ActionId::RenewRdpCertificate => "renew-rdp-certificate",
            ActionId::RemoveRdshRole => "remove-rdsh-role",
            ActionId::FreeDiskSpace => "free-disk-space",
        }
    }

    /// The id, if `id` is exactly one of [`ActionId::ALL`]'s (`"restart"`, not `"Restart"`).
    pub fn parse(id: &str) -> Option<ActionId> {
        ActionId::ALL.into_iter().find(|a| a.as_str() == id)
    }
}

impl std::fmt::Display for ActionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An id that names no check or action of rdp-doctor's; displays what it expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownId {
    #[error("unknown check `{0}`; checks are {checks}", checks = id_list(&CheckId::ALL.map(CheckId::as_str)))]
    Check(String),
    #[error("unknown action `{0}`; actions are {actions}", actions = id_list(&ActionId::ALL.map(ActionId::as_str)))]
    Action(String),
    #[error("unknown step `{0}`; checks are {checks}; actions are {actions}", checks = id_list(&CheckId::ALL.map(CheckId::as_str)), actions = id_list(&ActionId::ALL.map(ActionId::as_str)))]
    Step(String),
}

fn id_list(ids: &[&str]) -> String {
    ids.join(", ")
}

impl std::str::FromStr for CheckId {
    type Err = UnknownId;
    fn from_str(id: &str) -> Result<CheckId, UnknownId> {
        CheckId::ALL
            .into_iter()
            .find(|c| c.as_str() == id)
            .ok_or_else(|| UnknownId::Check(id.to_string()))
    }
}

impl std::str::FromStr for ActionId {
    type Err = UnknownId;
    fn from_str(id: &str) -> Result<ActionId, UnknownId> {
        ActionId::parse(id).ok_or_else(|| UnknownId::Action(id.to_string()))
    }
}

/// Deserialise an id from its text through `FromStr`, so a file's typo reads like the code's.
fn deserialize_id<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = UnknownId>,
{
    let text = std::borrow::Cow::<str>::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for CheckId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CheckId, D::Error> {
        deserialize_id(d)
    }
}

impl<'de> Deserialize<'de> for ActionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ActionId, D::Error> {
        deserialize_id(d)
    }
}

/// A step of the runbook: a check or an action (the ids of `commands/rdp.toml`'s `[[step]]`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepId {
    Check(CheckId),
    Action(ActionId),
}

impl StepId {
    /// Every step: the checks, then the actions.
    pub fn all() -> impl Iterator<Item = StepId> {
        CheckId::ALL
            .into_iter()
            .map(StepId::Check)
            .chain(ActionId::ALL.into_iter().map(StepId::Action))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepId::Check(c) => c.as_str(),
            StepId::Action(a) => a.as_str(),
        }
    }
}

impl From<CheckId> for StepId {
    fn from(c: CheckId) -> StepId {
        StepId::Check(c)
    }
}

impl From<ActionId> for StepId {
    fn from(a: ActionId) -> StepId {
        StepId::Action(a)
    }
}

impl std::fmt::Display for StepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StepId {
    type Err = UnknownId;
    fn from_str(id: &str) -> Result<StepId, UnknownId> {
        StepId::all()
            .find(|s| s.as_str() == id)
            .ok_or_else(|| UnknownId::Step(id.to_string()))
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StepId, D::Error> {
        deserialize_id(d)
    }
}

impl Serialize for StepId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Error => "error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check's result: what a person reads first (`summary`), the evidence behind it, and the
/// fix it points to, if any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub step: CheckId,
    pub status: Status,
    pub summary: String,
    pub evidence: serde_json::Value,
    /// Extra lines for a person (a tip, the serial log tail); not part of the JSON contract.
    #[serde(skip)]
    pub details: Vec<String>,
    /// The fix this finding calls for; the runbook's ladder picks among them.
    #[serde(skip)]
    pub suggests: Option<ActionId>,
    /// This finding's own next step, when the runbook's generic one for its check would be
    /// wrong (an admin rule is the network team's; a Bastion-only VM is reached through
    /// Bastion); not part of the JSON contract.
    #[serde(skip)]
    pub next_step: Option<String>,
    /// This finding's own title, when the runbook's for its check would be wrong (the NSG
    /// judged for the port the guest's listener moved to, not 3389); not part of the JSON
    /// contract.
    #[serde(skip)]
    pub title: Option<String>,
}

impl Finding {
    pub fn new(step: CheckId, status: Status, summary: impl Into<String>) -> Finding {
        Finding {
            step,
            status,
            summary: summary.into(),
            evidence: serde_json::Value::Object(Default::default()),
            details: Vec::new(),
            suggests: None,
            next_step: None,
            title: None,
        }
    }

    pub fn titled(mut self, title: impl Into<String>) -> Finding {
        self.title = Some(title.into());
        self
    }

    pub fn next_step(mut self, text: impl Into<String>) -> Finding {
        self.next_step = Some(text.into());
        self
    }

    pub fn evidence(mut self, evidence: impl Serialize) -> Finding {
        // Serialising our own plain structs cannot fail; fall back to null rather than panic.
        self.evidence = serde_json::to_value(evidence).unwrap_or(serde_json::Value::Null);
        self
    }

    pub fn detail(mut self, line: impl Into<String>) -> Finding {
        self.details.push(line.into());
        self
    }

    pub fn suggests(mut self, action: ActionId) -> Finding {
        self.suggests = Some(action);
        self
    }

    /// A step that could not be evaluated because its facts could not be read.
    pub fn error(step: CheckId, message: impl Into<String>) -> Finding {
        Finding::new(step, Status::Error, message)
    }

    pub fn skip(step: CheckId, why: impl Into<String>) -> Finding {
        Finding::new(step, Status::Skip, why)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OsType {
    Windows,
    Linux,
    Unknown,
}

/// The guest agent as the instance view reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum AgentFacts {
    Ready {
        version: Option<String>,
        message: Option<String>,
    },
    NotReady {
        version: Option<String>,
        status: Option<String>,
        message: Option<String>,
    },
    /// No `vmAgent` in the instance view (deallocated, or the agent never reported).
    Missing,
}

/// What one `GET VM?$expand=instanceView` tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFacts {
    pub os: OsType,
    pub location: String,
    /// The part after `PowerState/`, e.g. `running`; `None` when the instance view has none.
    pub power_state: Option<String>,
    pub power_display: Option<String>,
    /// The part after `ProvisioningState/`, e.g. `succeeded` or `failed/InternalOperationError`.
    pub provisioning_state: Option<String>,
    pub provisioning_message: Option<String>,
    pub agent: AgentFacts,
    pub nic_ids: Vec<String>,
    pub boot_diagnostics_enabled: bool,
}

impl VmFacts {
    /// A Windows VM in westeurope, provisioned, with boot diagnostics on, no NICs and no agent
    /// report; unit tests change what they are about.
    #[cfg(test)]
    pub(crate) fn sample(power: Option<&str>) -> VmFacts {
        VmFacts {
            os: OsType::Windows,
            location: "westeurope".into(),
            power_state: power.map(str::to_string),
            power_display: None,
            provisioning_state: Some("succeeded".into()),
            provisioning_message: None,
            agent: AgentFacts::Missing,
            nic_ids: vec![],
            boot_diagnostics_enabled: true,
        }
    }

    pub fn is_running(&self) -> bool {
        self.power_state.as_deref() == Some("running")
    }

    pub fn agent_ready(&self) -> bool {
        matches!(self.agent, AgentFacts::Ready { .. })
    }
}

/// Split an instance-view status code such as `PowerState/running` or
/// `ProvisioningState/failed/InternalOperationError` into its prefix and the rest.
pub fn split_status_code(code: &str) -> Option<(&str, &str)> {
    code.split_once('/')
}

/// The primary NIC and its public IP, as two GETs tell them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicFacts {
    pub nic_id: String,
    pub private_ip: Option<String>,
    /// `Static` or `Dynamic`.
    pub private_ip_allocation: Option<String>,
    pub public_ip: Option<PublicIpFacts>,
    /// The subnet of the primary IP configuration (where a route table hangs); not part of the
    /// JSON contract.
    #[serde(skip)]
    pub subnet_id: Option<String>,
    /// The NSG on the NIC itself, if any (whose changes a report lists); not part of the JSON
    /// contract.
    #[serde(skip)]
    pub nsg_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicIpFacts {
    pub id: String,
    pub name: String,
    pub address: Option<String>,
    /// `Static` or `Dynamic`.
    pub allocation: Option<String>,
    pub sku: Option<String>,
}

/// Resource Health's current availability status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthFacts {
    /// `Available`, `Unavailable`, `Degraded`, `Unknown` or whatever Azure adds later.
    pub state: String,
    pub summary: Option<String>,
    pub detailed_status: Option<String>,
    pub reason_type: Option<String>,
    pub occurred: Option<String>,
    pub recommended_actions: Vec<String>,
}

/// What boot diagnostics gave us. The SAS URLs never get this far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootFacts {
    pub screenshot_png: Option<Vec<u8>>,
    pub screenshot_error: Option<String>,
    pub serial_tail: Vec<String>,
    pub serial_error: Option<String>,
    /// The storage account's firewall refused a download (403 `AuthorizationFailure`).
    pub storage_firewall: bool,
}

/// How many serial-log lines a report keeps.
pub const SERIAL_TAIL_LINES: usize = 40;

/// Keep the last `n` non-empty lines of a serial log.
pub fn tail_lines(log: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| l.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_without_blanks() {
        let log = "a\r\n\r\nb\nc\n\n";
        assert_eq!(tail_lines(log, 2), vec!["b", "c"]);
        assert_eq!(tail_lines(log, 10), vec!["a", "b", "c"]);
        assert!(tail_lines("", 3).is_empty());
    }

    #[test]
    fn status_codes_split_on_the_first_slash() {
        assert_eq!(
            split_status_code("ProvisioningState/failed/InternalOperationError"),
            Some(("ProvisioningState", "failed/InternalOperationError"))
        );
        assert_eq!(split_status_code("PowerState"), None);
    }
}
