//! The result of one check: the JSON contract of `rdp-doctor check --json` (see ARCHITECTURE.md, "The external contract") plus
//! what a front end shows beside it (the screenshot, the serial-log tail).

use crate::azure::VmRef;
use crate::diagnose::{ActionId, Finding, OsType, Status};
use crate::domain::Changes;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing found that blocks Remote Desktop (warnings may remain).
    Ok,
    /// At least one check failed.
    Problems,
    /// Nothing failed, but some check could not be evaluated.
    Unknown,
    /// A sweep's row: nothing failed but that just-in-time access keeps 3389 closed until
    /// someone requests it, as the security team designed (never a single check's verdict).
    ClosedByJit,
}

impl Verdict {
    pub fn of(findings: &[Finding]) -> Verdict {
        Verdict::of_statuses(findings.iter().map(|f| f.status))
    }

    /// The verdict of checks with these statuses: a failure is a problem; else one that could
    /// not be judged leaves it unknown; else nothing blocks Remote Desktop.
    pub fn of_statuses(statuses: impl Iterator<Item = Status> + Clone) -> Verdict {
        if statuses.clone().any(|s| s == Status::Fail) {
            Verdict::Problems
        } else if statuses.into_iter().any(|s| s == Status::Error) {
            Verdict::Unknown
        } else {
            Verdict::Ok
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Problems => "problems",
            Verdict::Unknown => "unknown",
            Verdict::ClosedByJit => "closed-by-jit",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// HTTP requests sent to ARM, retries and operation polls included.
    pub arm_requests: u64,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub vm: VmRef,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    pub next_action: Option<ActionId>,
    pub stats: Stats,
    /// "Recent changes" from the Activity Log; `None` where they were not read (a sweep's rows,
    /// a fix's re-check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    #[serde(skip)]
    pub os: OsType,
    #[serde(skip)]
    pub screenshot_png: Option<Vec<u8>>,
    #[serde(skip)]
    pub serial_tail: Vec<String>,
}

impl Report {
    /// The finding's own advice for `open-rdp-port` when the report offers it and the finding
    /// has some: through Azure Bastion the rule must admit the Bastion subnet, not the person's
    /// address. (Other fixes' advice is already in their own next step, e.g. `request-jit`'s.)
    pub fn next_action_advice(&self) -> Option<&str> {
        let action = self.next_action.filter(|a| *a == ActionId::OpenRdpPort)?;
        self.findings
            .iter()
            .find(|f| f.suggests == Some(action))
            .and_then(|f| f.next_step.as_deref())
    }

    pub fn finding(&self, step: crate::diagnose::CheckId) -> Option<&Finding> {
        self.findings.iter().find(|f| f.step == step)
    }
}
