//! What is inside a Windows VM, as far as Remote Desktop cares: the guest that rdp-doctor's
//! read script reports on and its fix scripts change (through Run Command, `compute/run_command.rs`).
//!
//! Every field has a healthy default, so `[vm.guest]` in a world file names only what is wrong.
//! Two facts of the guest live on the VM itself because VMAccess already changes them:
//! `rdp_enabled` (`fDenyTSConnections` = 0) and `rdp_port` (RDP-Tcp's `PortNumber`).

use super::WorldError;
use serde::{Deserialize, Serialize};

/// The guest's state (`[vm.guest]` in a world file).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Guest {
    /// `HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services\fDenyTSConnections`:
    /// unset by default; 1 denies Remote Desktop whatever the local value says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_deny: Option<u32>,
    /// TermService as `Get-Service` shows it: Running, Stopped, StartPending, StopPending, Paused.
    pub term_service_status: ServiceStatus,
    /// TermService's start type: Automatic, Manual, Disabled.
    pub term_service_start_type: StartType,
    /// Windows Firewall's Domain, Private and Public profiles are on.
    pub firewall_enabled: bool,
    /// The "Remote Desktop" group's inbound TCP rule (`RemoteDesktop-UserMode-In-TCP`) is enabled.
    pub firewall_rdp_rule: bool,
    /// RDP-Tcp `UserAuthentication` (1: Network Level Authentication required).
    pub user_authentication: u32,
    /// RDP-Tcp `SecurityLayer` (0 RDP, 1 negotiate, 2 TLS).
    pub security_layer: u32,
    /// When the self-signed RDP certificate expires (RFC 3339); unset: six months after the
    /// simulator started, as a certificate Windows made recently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<String>,
    /// The Remote Desktop Session Host role (`RDS-RD-Server`) is installed.
    pub rdsh_installed: bool,
    /// RD licensing mode: 2 per device, 4 per user; unset: not configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub licensing_mode: Option<u32>,
    /// RD license servers configured.
    pub license_servers: Vec<String>,
    /// Days left of the RD Session Host's licensing grace period (only with the role).
    pub grace_days_left: i64,
    /// Free bytes on the system drive C:.
    pub free_bytes: u64,
    /// Size of the system drive C: (127 GiB, Azure's Windows image default).
    pub size_bytes: u64,
    /// What `free-disk-space` frees: Windows\Temp, SoftwareDistribution\Download and the
    /// component store's superseded files.
    pub reclaimable_bytes: u64,
    /// Why a reboot is pending (e.g. `ComponentBasedServicing`, `WindowsUpdate`,
    /// `PendingFileRenameOperations`); empty: none.
    pub pending_reboot: Vec<String>,
}

/// A service's status as `Get-Service` names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceStatus {
    Running,
    Stopped,
    StartPending,
    StopPending,
    Paused,
}

/// A service's start type as `Get-Service` names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartType {
    Automatic,
    Manual,
    Disabled,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Running => "Running",
            ServiceStatus::Stopped => "Stopped",
            ServiceStatus::StartPending => "StartPending",
            ServiceStatus::StopPending => "StopPending",
            ServiceStatus::Paused => "Paused",
        }
    }
}

impl StartType {
    pub fn as_str(self) -> &'static str {
        match self {
            StartType::Automatic => "Automatic",
            StartType::Manual => "Manual",
            StartType::Disabled => "Disabled",
        }
    }
}

/// 127 GiB: the OS disk of Azure's Windows Server images.
pub const SYSTEM_DRIVE_BYTES: u64 = 136_365_211_648;

impl Default for Guest {
    fn default() -> Self {
        Guest {
            policy_deny: None,
            term_service_status: ServiceStatus::Running,
            term_service_start_type: StartType::Automatic,
            firewall_enabled: true,
            firewall_rdp_rule: true,
            user_authentication: 1,
            security_layer: 2,
            certificate_not_after: None,
            rdsh_installed: false,
            licensing_mode: None,
            license_servers: Vec::new(),
            grace_days_left: 120,
            free_bytes: 53_687_091_200,
            size_bytes: SYSTEM_DRIVE_BYTES,
            reclaimable_bytes: 1_073_741_824,
            pending_reboot: Vec::new(),
        }
    }
}

impl Guest {
    /// Whether a process listens on the RDP port: TermService runs.
    pub fn listening(&self) -> bool {
        self.term_service_status == ServiceStatus::Running
    }

    /// Checks the values a world file may get wrong; `at` names the VM. Errors name the field.
    pub(crate) fn validate(&self, at: &str) -> Result<(), WorldError> {
        let field = |name: &str, problem: &str| {
            Err(WorldError::Invalid(format!("{at}: guest.{name} {problem}")))
        };
        if self.policy_deny.is_some_and(|v| v > 1) {
            return field("policy_deny", "must be 0 or 1 (unset: no policy)");
        }
        if self.user_authentication > 1 {
            return field("user_authentication", "must be 0 or 1");
        }
        if self.security_layer > 2 {
            return field(
                "security_layer",
                "must be 0 (RDP), 1 (negotiate) or 2 (TLS)",
            );
        }
        if self.licensing_mode.is_some_and(|m| m != 2 && m != 4) {
            return field(
                "licensing_mode",
                "must be 2 (per device) or 4 (per user); leave it out for not configured",
            );
        }
        if let Some(at_text) = &self.certificate_not_after {
            if time::OffsetDateTime::parse(at_text, &time::format_description::well_known::Rfc3339)
                .is_err()
            {
                return field(
                    "certificate_not_after",
                    &format!("'{at_text}' is not an RFC 3339 time such as 2026-01-31T00:00:00Z"),
                );
            }
        }
        if self.size_bytes == 0 {
            return field("size_bytes", "must be more than 0");
        }
        if self.free_bytes > self.size_bytes {
            return field("free_bytes", "is more than size_bytes");
        }
        if self.free_bytes.saturating_add(self.reclaimable_bytes) > self.size_bytes {
            return field(
                "reclaimable_bytes",
                "and free_bytes together are more than size_bytes",
            );
        }
        Ok(())
    }
}
