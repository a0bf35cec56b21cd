//! `boot-diagnostics`: the console screenshot and the serial log (runbook step 3) show whether
//! Windows booted, is stuck on updates, or crashed.

use super::{BootFacts, CheckId, Finding, Status};
use serde::Serialize;

#[derive(Serialize)]
struct Evidence {
    enabled: bool,
    screenshot: bool,
    screenshot_bytes: Option<usize>,
    serial_log_lines: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    serial_log_tail: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    storage_firewall: bool,
}

pub fn disabled(how_to_enable: &str) -> Finding {
    Finding::new(
        CheckId::BootDiagnostics,
        Status::Warn,
        "Boot diagnostics are off: no console screenshot or serial log to look at",
    )
    .detail(how_to_enable)
    .evidence(Evidence {
        enabled: false,
        screenshot: false,
        screenshot_bytes: None,
        serial_log_lines: 0,
        serial_log_tail: Vec::new(),
        storage_firewall: false,
    })
}

/// What a firewalled custom storage account means for the on-call engineer. Azure Storage
/// answers a request from outside the account's allowed networks with 403
/// `AuthorizationFailure`, SAS or not; managed boot diagnostics live in Microsoft's storage,
/// which has no firewall of the customer's.
pub const FIREWALL_BLOCKS: &str = "the storage account's firewall blocks the download of the screenshot and serial log (403 AuthorizationFailure); allow rdp-doctor's address or use managed boot diagnostics";

pub fn check(boot: &BootFacts) -> Finding {
    let evidence = Evidence {
        enabled: true,
        screenshot: boot.screenshot_png.is_some(),
        screenshot_bytes: boot.screenshot_png.as_ref().map(Vec::len),
        serial_log_lines: boot.serial_tail.len(),
        serial_log_tail: boot.serial_tail.clone(),
        storage_firewall: boot.storage_firewall,
    };
    if boot.storage_firewall {
        // Both blobs sit in the same account: one refusal answers for the two.
        return Finding::new(
            CheckId::BootDiagnostics,
            Status::Warn,
            format!("Boot diagnostics unreadable: {FIREWALL_BLOCKS}"),
        )
        .evidence(evidence);
    }
    let mut problems = Vec::new();
    if let Some(e) = &boot.screenshot_error {
        problems.push(format!("screenshot: {e}"));
    }
    if let Some(e) = &boot.serial_error {
        problems.push(format!("serial log: {e}"));
    }
    let finding = if problems.is_empty() {
        Finding::new(
            CheckId::BootDiagnostics,
            Status::Pass,
            format!(
                "Console screenshot captured; serial log has {} recent lines",
                boot.serial_tail.len()
            ),
        )
    } else {
        Finding::new(
            CheckId::BootDiagnostics,
            Status::Warn,
            format!("Boot diagnostics incomplete: {}", problems.join("; ")),
        )
    };
    finding.evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_partial_and_disabled() {
        let full = BootFacts {
            screenshot_png: Some(vec![1, 2, 3]),
            serial_tail: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let finding = check(&full);
        assert_eq!(finding.status, Status::Pass);
        assert_eq!(finding.evidence["screenshot_bytes"], 3);
        assert_eq!(finding.evidence["serial_log_tail"][1], "b");
        let partial = BootFacts {
            screenshot_error: Some("download failed (HTTP 403)".into()),
            ..full
        };
        assert_eq!(check(&partial).status, Status::Warn);
        let firewalled = check(&BootFacts {
            storage_firewall: true,
            ..Default::default()
        });
        assert_eq!(firewalled.status, Status::Warn);
        assert_eq!(
            firewalled.summary,
            format!("Boot diagnostics unreadable: {FIREWALL_BLOCKS}")
        );
        assert_eq!(firewalled.evidence["storage_firewall"], true);
        assert_eq!(disabled("enable it").status, Status::Warn);
    }
}
