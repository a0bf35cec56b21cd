//! A fleet sweep: every Windows VM of a resource group (or a subscription) checked at once, for
//! the day a network change breaks Remote Desktop for a whole group.
//!
//! The scope's lists come first ([`crate::azure::Arm::read_fleet`], which refuses a scope larger
//! than `ArmSettings::sweep_max_vms` before any per-VM request), then the VMs are checked
//! concurrently. Every request goes through [`Arm::for_sweep`]: ARM's request budget is paced
//! inside `azure`, where a sweep's requests spend at most their share of the bucket and queue
//! behind people's. The result is one row per VM, worst first, with the finding that decides it.

use super::{catalog::Catalog, check_in_fleet, CheckError, CheckOptions, Verdict};
use crate::azure::{Arm, ArmError, SweepScope, VmRef};
use crate::diagnose::{ActionId, CheckId, Finding, Status};
use futures::StreamExt;
use serde::Serialize;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a sweep runs.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// VMs checked at the same time. ARM's budget is paced separately; this bounds memory and
    /// open connections.
    pub concurrency: usize,
    pub check: CheckOptions,
    /// The front end's name for this sweep (a Discord sweep's nonce): with a database, any
    /// replica that shares it can cancel the sweep by this name (`Door::cancel_sweep`).
    pub handle: Option<String>,
}

impl Default for SweepOptions {
    fn default() -> SweepOptions {
        SweepOptions {
            concurrency: 32,
            check: CheckOptions::default(),
            handle: None,
        }
    }
}

/// Progress, for a live display.
#[derive(Debug, Clone)]
pub enum SweepEvent {
    /// The scope is listed: `total` Windows VMs will be checked.
    Listed { total: usize, skipped: usize },
    /// One more VM checked.
    Checked {
        done: usize,
        total: usize,
        row: Box<SweepRow>,
    },
}

/// One VM's line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub vm: VmRef,
    pub verdict: Verdict,
    /// The finding that decides the verdict: the worst one, first in runbook order. `None`
    /// when every check passed.
    pub deciding: Option<Finding>,
    pub next_action: Option<ActionId>,
    pub findings: Vec<Finding>,
}

impl SweepRow {
    /// Sort key: problems first, then checks that could not run, then warnings, then healthy.
    pub fn rank(&self) -> u8 {
        match (self.verdict, self.deciding.as_ref().map(|f| f.status)) {
            (Verdict::Problems, _) => 0,
            (Verdict::Unknown, _) => 1,
            (Verdict::Ok, Some(Status::Warn)) => 2,
            (Verdict::ClosedByJit, _) => 3,
            (Verdict::Ok, _) => 4,
        }
    }

    /// A VM's row from its full report (a sweep's, or an alert storm's checks).
    pub fn from_report(report: super::Report) -> SweepRow {
        // Closed by just-in-time access, and nothing else wrong: as designed, not a problem.
        let closed_by_jit = |f: &Finding| {
            f.step == CheckId::Nsg
                && f.status == Status::Fail
                && f.suggests == Some(crate::diagnose::ActionId::RequestJit)
        };
        let verdict = if report.verdict == Verdict::Problems
            && report.findings.iter().any(closed_by_jit)
            && report
                .findings
                .iter()
                .all(|f| closed_by_jit(f) || !matches!(f.status, Status::Fail | Status::Error))
        {
            Verdict::ClosedByJit
        } else {
            report.verdict
        };
        SweepRow {
            deciding: deciding(&report.findings),
            vm: report.vm,
            verdict,
            next_action: report.next_action,
            findings: report.findings,
        }
    }

    /// A VM the sweep could not check at all (its own read failed).
    fn failed(vm: VmRef, error: &CheckError) -> SweepRow {
        SweepRow::unchecked(vm, error.to_string())
    }

    /// A VM that could not be checked at all, and why.
    pub fn unchecked(vm: VmRef, why: String) -> SweepRow {
        let finding = Finding::error(CheckId::VmStatus, why);
        SweepRow {
            vm,
            verdict: Verdict::Unknown,
            deciding: Some(finding.clone()),
            next_action: None,
            findings: vec![finding],
        }
    }
}

/// The worst finding, first in runbook order; `None` if all passed or were skipped.
pub fn deciding(findings: &[Finding]) -> Option<Finding> {
    let severity = |s: Status| match s {
        Status::Fail => 3,
        Status::Error => 2,
        Status::Warn => 1,
        Status::Pass | Status::Skip => 0,
    };
    let worst = findings.iter().map(|f| severity(f.status)).max()?;
    if worst == 0 {
        return None;
    }
    let mut candidates: Vec<&Finding> = findings
        .iter()
        .filter(|f| severity(f.status) == worst)
        .collect();
    candidates.sort_by_key(|f| f.step);
    candidates.first().map(|f| (*f).clone())
}

/// What a sweep cost.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SweepStats {
    pub arm_requests: u64,
    /// Of which the scope's lists.
    pub list_requests: u64,
    pub elapsed_ms: u64,
    /// 429s Azure answered (each retried after its `Retry-After`).
    pub throttled: u64,
    /// Requests that waited for ARM's budget to refill, and how long in all.
    pub paced: u64,
    pub paced_ms: u64,
}

/// The sweep's summary.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub scope: String,
    /// Worst first, then by name.
    pub vms: Vec<SweepRow>,
    /// Windows VMs in scope (checked or, if cancelled, not).
    pub total: usize,
    /// Non-Windows VMs left out.
    pub skipped: Vec<VmRef>,
    pub cancelled: bool,
    pub stats: SweepStats,
}

impl SweepReport {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.vms.iter().filter(|r| r.verdict == verdict).count()
    }
}

/// Check every Windows VM of `scope`. Cancelling `cancel` stops new checks, lets none of the
/// running ones finish, and returns the rows so far with `cancelled` set.
pub async fn sweep(
    arm: &Arm,
    catalog: &Catalog,
    scope: &SweepScope,
    options: &SweepOptions,
    cancel: &CancellationToken,
    events: &(dyn Fn(SweepEvent) + Send + Sync),
) -> Result<SweepReport, ArmError> {
    // People's checks go first; the sweep takes its share of ARM's budget.
    let arm = &arm.for_sweep();
    let started = Instant::now();
    let requests_before = arm.request_count();
    let pacing_before = arm.pacing();
    let fleet = tokio::select! {
        fleet = arm.read_fleet(scope) => fleet?,
        () = cancel.cancelled() => {
            return Ok(SweepReport {
                scope: scope.to_string(),
                vms: Vec::new(),
                total: 0,
                skipped: Vec::new(),
                cancelled: true,
                stats: SweepStats::default(),
            });
        }
    };
    let (windows, skipped): (Vec<_>, Vec<_>) = fleet
        .vms
        .iter()
        .cloned()
        .partition(|vm| fleet.is_windows(vm));
    let total = windows.len();
    events(SweepEvent::Listed {
        total,
        skipped: skipped.len(),
    });

    let mut rows = Vec::with_capacity(total);
    let mut checks = futures::stream::iter(windows)
        .map(|summary| {
            let fleet = &fleet;
            async move {
                let vm = summary.vm.clone();
                match check_in_fleet(arm, catalog, fleet, summary, &options.check).await {
                    Ok(report) => SweepRow::from_report(report),
                    Err(e) => SweepRow::failed(vm, &e),
                }
            }
        })
        .buffer_unordered(options.concurrency.max(1));
    let mut cancelled = false;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                cancelled = true;
                break;
            }
            next = checks.next() => match next {
                Some(row) => {
                    rows.push(row.clone());
                    events(SweepEvent::Checked {
                        done: rows.len(),
                        total,
                        row: Box::new(row),
                    });
                }
                None => break,
            },
        }
    }
    drop(checks);
    rows.sort_by(|a, b| {
        (a.rank(), a.vm.name.to_lowercase()).cmp(&(b.rank(), b.vm.name.to_lowercase()))
    });
    let pacing = arm.pacing();
    Ok(SweepReport {
        scope: scope.to_string(),
        vms: rows,
        total,
        skipped: skipped.into_iter().map(|s| s.vm).collect(),
        cancelled,
        stats: SweepStats {
            arm_requests: arm.request_count().saturating_sub(requests_before),
            list_requests: fleet.list_requests,
            elapsed_ms: started.elapsed().as_millis() as u64,
            throttled: pacing.throttled.saturating_sub(pacing_before.throttled),
            paced: pacing.paced.saturating_sub(pacing_before.paced),
            paced_ms: pacing
                .waited
                .saturating_sub(pacing_before.waited)
                .as_millis() as u64,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(step: CheckId, status: Status) -> Finding {
        Finding::new(
            step,
            status,
            format!("{} {}", step.as_str(), status.as_str()),
        )
    }

    #[test]
    fn the_worst_finding_decides_first_in_runbook_order() {
        let findings = vec![
            finding(CheckId::VmStatus, Status::Pass),
            finding(CheckId::ResourceHealth, Status::Fail),
            finding(CheckId::PublicIp, Status::Warn),
            finding(CheckId::Nsg, Status::Fail),
        ];
        assert_eq!(deciding(&findings).map(|f| f.step), Some(CheckId::Nsg));
        let healthy = vec![
            finding(CheckId::VmStatus, Status::Pass),
            finding(CheckId::BootDiagnostics, Status::Skip),
        ];
        assert_eq!(deciding(&healthy), None);
        let warned = vec![
            finding(CheckId::VmStatus, Status::Pass),
            finding(CheckId::BootDiagnostics, Status::Warn),
        ];
        assert_eq!(
            deciding(&warned).map(|f| f.step),
            Some(CheckId::BootDiagnostics)
        );
    }
}
