//! Watches and the timeline, as data and pure functions: what a check looked like (`Seen`), the
//! difference between two checks ("nsg: pass → fail; rule deny-rdp (priority 200) decides
//! now"), and a VM's timeline of checks, fixes, alerts and changes. The door runs the watches
//! and reads the store (`door/watch.rs`); front ends render what this module returns.

use super::{Report, Verdict};
use crate::config::{HistoryConfig, WatchConfig};
use crate::diagnose::{CheckId, Status};
use crate::domain::VmRef;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How watches run and how long the timeline remembers (`[watch]`, `[history]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// Between two checks of a watched VM (issue 14: every 2 minutes by default).
    pub interval: Duration,
    /// A watch's length when the person gives none.
    pub default_length: Duration,
    /// The longest a watch may last (4 hours by default).
    pub max_length: Duration,
    /// How long a check stays in a VM's history.
    pub retention: Duration,
}

impl Default for WatchSettings {
    fn default() -> WatchSettings {
        WatchSettings {
            interval: Duration::from_secs(120),
            default_length: Duration::from_secs(60 * 60),
            max_length: Duration::from_secs(4 * 60 * 60),
            retention: Duration::from_secs(30 * 86_400),
        }
    }
}

impl WatchSettings {
    /// From the config file's `[watch]` and `[history]` (their ranges checked at load).
    pub fn from_config(watch: &WatchConfig, history: &HistoryConfig) -> WatchSettings {
        let d = WatchSettings::default();
        WatchSettings {
            interval: watch.interval_secs.map_or(d.interval, Duration::from_secs),
            default_length: watch
                .default_minutes
                .map_or(d.default_length, |m| Duration::from_secs(m * 60)),
            max_length: watch
                .max_minutes
                .map_or(d.max_length, |m| Duration::from_secs(m * 60)),
            retention: history
                .retention_days
                .map_or(d.retention, |days| Duration::from_secs(days * 86_400)),
        }
    }

    /// How long a watch of `minutes` lasts: the default for none; more than the maximum, or
    /// zero, is the person's mistake.
    pub fn length(&self, minutes: Option<u64>) -> Result<Duration, WatchLength> {
        let max = self.max_length.as_secs() / 60;
        match minutes {
            None => Ok(self.default_length.min(self.max_length)),
            Some(asked) if asked == 0 || asked > max => Err(WatchLength { max, asked }),
            Some(m) => Ok(Duration::from_secs(m * 60)),
        }
    }
}

/// A watch asked for longer than `[watch]` allows, or for no time at all: the person's mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a watch lasts from 1 to {max} minutes; {asked} is not in that range")]
pub struct WatchLength {
    /// The longest watch, in minutes.
    pub max: u64,
    pub asked: u64,
}

/// The part of a check that a watch compares and the timeline diffs: the verdict and, per
/// check, its status, the rule that decided it (the `nsg` check's evidence) and its summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub verdict: Verdict,
    pub findings: Vec<SeenFinding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenFinding {
    pub step: CheckId,
    pub status: Status,
    #[serde(default)]
    pub summary: String,
    /// The deciding rule and its priority, where the finding's evidence names one.
    #[serde(default)]
    pub rule: Option<(String, i64)>,
}

impl Seen {
    /// What a report shows.
    pub fn of(report: &Report) -> Seen {
        serde_json::to_value(report)
            .ok()
            .and_then(|json| Seen::of_json(&json))
            .unwrap_or_else(|| Seen {
                verdict: report.verdict,
                findings: Vec::new(),
            })
    }

    /// What a stored report (`check --json`'s shape) or a stored `Seen` shows; `None` for
    /// anything else. A finding of a check or status this build does not know (a report kept
    /// by another version) is left out, never guessed at.
    pub fn of_json(json: &serde_json::Value) -> Option<Seen> {
        let verdict = Verdict::deserialize(json.get("verdict")?).ok()?;
        let findings = json
            .get("findings")?
            .as_array()?
            .iter()
            .filter_map(|f| {
                let evidence = f.get("evidence");
                let rule = evidence
                    .and_then(|e| Some((e.get("rule")?.as_str()?, e.get("priority")?.as_i64()?)))
                    .map(|(name, priority)| (name.to_string(), priority))
                    .or_else(|| {
                        serde_json::from_value::<(String, i64)>(f.get("rule")?.clone()).ok()
                    });
                Some(SeenFinding {
                    step: CheckId::deserialize(f.get("step")?).ok()?,
                    status: Status::deserialize(f.get("status")?).ok()?,
                    summary: f
                        .get("summary")
                        .and_then(|s| s.as_str())
                        .unwrap_or_default()
                        .to_string(),
                    rule,
                })
            })
            .collect();
        Some(Seen { verdict, findings })
    }

    /// Whether a check could not be judged (Azure failed or throttled a read).
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.status == Status::Error)
    }

    /// A check that could not be judged says nothing about it: keep what `before` saw of it
    /// (and judge the verdict again), so that a throttled read is not a change to post.
    pub fn carry_over_errors(&mut self, before: &Seen) {
        for finding in &mut self.findings {
            if finding.status != Status::Error {
                continue;
            }
            if let Some(then) = before.findings.iter().find(|b| b.step == finding.step) {
                *finding = then.clone();
            }
        }
        self.verdict = Verdict::of_statuses(self.findings.iter().map(|f| f.status));
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// The findings whose status differs from `before` (or that are new), for a post to show
    /// their summaries.
    pub fn changed_since<'a>(&'a self, before: &Seen) -> Vec<&'a SeenFinding> {
        self.findings
            .iter()
            .filter(|f| {
                before
                    .findings
                    .iter()
                    .find(|b| b.step == f.step)
                    .is_none_or(|b| b.status != f.status || b.rule != f.rule)
            })
            .collect()
    }
}

/// What changed from `before` to `after`, one line per change, in report order: the verdict
/// ("verdict: problems → ok"), then each check whose status or deciding rule changed
/// ("nsg: pass → fail; rule deny-rdp (priority 200) decides now, not allow-rdp (priority
/// 300)"). Summaries alone do not count (a serial log's line count moves with every check).
/// Empty: nothing a watch would post about.
pub fn differences(before: &Seen, after: &Seen) -> Vec<String> {
    let mut lines = Vec::new();
    if before.verdict != after.verdict {
        lines.push(format!("verdict: {} → {}", before.verdict, after.verdict));
    }
    for now in &after.findings {
        let Some(then) = before.findings.iter().find(|b| b.step == now.step) else {
            lines.push(format!("{}: {} (not checked before)", now.step, now.status));
            continue;
        };
        if then.status == now.status && then.rule == now.rule {
            continue;
        }
        let mut line = if then.status == now.status {
            format!("{}: {}", now.step, now.status)
        } else {
            format!("{}: {} → {}", now.step, then.status, now.status)
        };
        if then.rule != now.rule {
            let rule = |(name, priority): &(String, i64)| format!("{name} (priority {priority})");
            match (&then.rule, &now.rule) {
                (Some(old), Some(new)) => line.push_str(&format!(
                    "; rule {} decides now, not {}",
                    rule(new),
                    rule(old)
                )),
                (None, Some(new)) => line.push_str(&format!("; rule {} appeared", rule(new))),
                (Some(old), None) => {
                    line.push_str(&format!("; rule {} no longer decides", rule(old)))
                }
                (None, None) => {}
            }
        }
        lines.push(line);
    }
    for then in &before.findings {
        if !after.findings.iter().any(|f| f.step == then.step) {
            lines.push(format!(
                "{}: not checked any more (was {})",
                then.step, then.status
            ));
        }
    }
    lines
}

/// One thing that happened to a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub what: Happened,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// A check: what ran it (`check`, `watch`, `fix`), its verdict, and what changed since the
    /// check before it (empty: nothing, or the first one kept).
    Check {
        source: String,
        verdict: Verdict,
        changes: Vec<String>,
        first: bool,
        /// Unchanged checks in a row by the same source are one entry: how many, and when
        /// the first of them was (a watch looks every two minutes for hours).
        repeats: u32,
        since_ms: i64,
    },
    /// A line of the audit log about the VM: a fix asked for, confirmed, its outcome.
    Fix {
        who: String,
        command: String,
        result: String,
    },
    /// A change from Azure's Activity Log (who did what).
    Change { who: String, summary: String },
    /// An Azure Monitor alert about the VM.
    Alert { summary: String },
}

/// A VM's timeline, newest first (the war room reads from the top: what happened last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub vm: VmRef,
    pub entries: Vec<TimelineEntry>,
    /// Where part of the timeline could not be had, and why ("changes: …").
    pub missing: Vec<String>,
}

/// Stored checks (any order, as `(taken_ms, source, report JSON)`) as timeline entries, each
/// with its difference from the one before it; unchanged checks in a row by the same source
/// become one entry.
pub fn check_entries(mut checks: Vec<(i64, String, serde_json::Value)>) -> Vec<TimelineEntry> {
    checks.sort_by_key(|(at, _, _)| *at);
    let mut previous: Option<Seen> = None;
    let mut entries: Vec<TimelineEntry> = Vec::new();
    for (at_ms, source, json) in checks {
        let Some(seen) = Seen::of_json(&json) else {
            continue;
        };
        let changes = previous
            .as_ref()
            .map(|before| differences(before, &seen))
            .unwrap_or_default();
        let first = previous.is_none();
        previous = Some(seen.clone());
        if let Some(TimelineEntry {
            at_ms: last_at,
            what:
                Happened::Check {
                    source: last_source,
                    changes: last_changes,
                    first: false,
                    repeats,
                    ..
                },
        }) = entries.last_mut()
        {
            if changes.is_empty() && last_changes.is_empty() && *last_source == source {
                *last_at = at_ms;
                *repeats += 1;
                continue;
            }
        }
        entries.push(TimelineEntry {
            at_ms,
            what: Happened::Check {
                source,
                verdict: seen.verdict,
                changes,
                first,
                repeats: 1,
                since_ms: at_ms,
            },
        });
    }
    entries
}

/// Everything on one line of time, newest first; entries at the same millisecond keep the
/// order they were given in.
pub fn merge(mut entries: Vec<TimelineEntry>) -> Vec<TimelineEntry> {
    entries.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
    entries
}

/// The timeline as text lines, newest first, for the terminal and Discord alike:
/// `2026-11-30 12:01 UTC  check (watch): ok — nsg: fail → pass; …`.
pub fn timeline_lines(timeline: &Timeline) -> Vec<String> {
    timeline
        .entries
        .iter()
        .map(|e| {
            let when = super::operate::format_time(e.at_ms);
            match &e.what {
                Happened::Check {
                    source,
                    verdict,
                    changes,
                    first,
                    repeats,
                    since_ms,
                } => {
                    let diff = if changes.is_empty() {
                        if *first {
                            String::new()
                        } else if *repeats > 1 {
                            format!(
                                " — no change ({repeats} checks since {})",
                                super::operate::format_time(*since_ms)
                            )
                        } else {
                            " — no change".to_string()
                        }
                    } else {
                        format!(" — {}", changes.join("; "))
                    };
                    format!("{when}  check ({source}): {verdict}{diff}")
                }
                Happened::Fix {
                    who,
                    command,
                    result,
                } => format!("{when}  {command} by {who}: {result}"),
                Happened::Change { who, summary } => format!("{when}  change by {who}: {summary}"),
                Happened::Alert { summary } => format!("{when}  alert: {summary}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(verdict: &str, nsg: &str, rule: Option<(&str, i64)>) -> serde_json::Value {
        let evidence = match rule {
            Some((name, priority)) => json!({"rule": name, "priority": priority}),
            None => json!({}),
        };
        json!({"verdict": verdict, "findings": [
            {"step": "vm-status", "status": "pass", "summary": "running", "evidence": {}},
            {"step": "nsg", "status": nsg, "summary": "…", "evidence": evidence},
        ]})
    }

    #[test]
    fn a_deny_rule_appearing_is_one_line_with_the_rule_and_the_verdict() {
        let before = Seen::of_json(&report("ok", "pass", Some(("allow-rdp", 300)))).unwrap();
        let after = Seen::of_json(&report("problems", "fail", Some(("deny-rdp", 200)))).unwrap();
        assert_eq!(
            differences(&before, &after),
            [
                "verdict: ok → problems",
                "nsg: pass → fail; rule deny-rdp (priority 200) decides now, not allow-rdp (priority 300)"
            ]
        );
        let none = Seen::of_json(&report("ok", "pass", None)).unwrap();
        assert_eq!(
            differences(&none, &after)[1],
            "nsg: pass → fail; rule deny-rdp (priority 200) appeared"
        );
        assert!(differences(&after, &after).is_empty());
        // A stored Seen reads back as itself.
        let stored: serde_json::Value = serde_json::from_str(&after.to_json()).unwrap();
        assert_eq!(Seen::of_json(&stored), Some(after));
    }

    #[test]
    fn checks_on_the_timeline_carry_their_difference_from_the_one_before() {
        let entries = merge(check_entries(vec![
            (
                30,
                "watch".into(),
                report("ok", "pass", Some(("allow", 100))),
            ),
            (
                10,
                "check".into(),
                report("problems", "fail", Some(("deny", 200))),
            ),
            (
                20,
                "watch".into(),
                report("problems", "fail", Some(("deny", 200))),
            ),
        ]));
        let changes: Vec<(i64, Vec<String>, bool)> = entries
            .iter()
            .map(|e| match &e.what {
                Happened::Check { changes, first, .. } => (e.at_ms, changes.clone(), *first),
                other => panic!("not a check: {other:?}"),
            })
            .collect();
        assert_eq!(
            changes,
            [
                (
                    30,
                    vec![
                        "verdict: problems → ok".to_string(),
                        "nsg: fail → pass; rule allow (priority 100) decides now, not deny (priority 200)".to_string()
                    ],
                    false
                ),
                (20, vec![], false),
                (10, vec![], true),
            ]
        );
    }

    #[test]
    fn unchanged_checks_in_a_row_by_one_source_are_one_entry() {
        let bad = || report("problems", "fail", Some(("deny", 200)));
        let entries = merge(check_entries(vec![
            (10, "check".into(), bad()),
            (20, "watch".into(), bad()),
            (30, "watch".into(), bad()),
            (40, "watch".into(), bad()),
            (50, "check".into(), bad()),
        ]));
        let shape: Vec<(i64, &str, u32, i64)> = entries
            .iter()
            .map(|e| match &e.what {
                Happened::Check {
                    source,
                    repeats,
                    since_ms,
                    ..
                } => (e.at_ms, source.as_str(), *repeats, *since_ms),
                other => panic!("not a check: {other:?}"),
            })
            .collect();
        assert_eq!(
            shape,
            [
                (50, "check", 1, 50),
                (40, "watch", 3, 20),
                (10, "check", 1, 10)
            ]
        );
    }

    #[test]
    fn a_check_azure_could_not_judge_keeps_what_was_seen_before() {
        let before = Seen::of_json(&report("problems", "fail", Some(("deny", 200)))).unwrap();
        let mut throttled = Seen::of_json(&report("unknown", "error", None)).unwrap();
        assert!(throttled.has_errors());
        throttled.carry_over_errors(&before);
        assert_eq!(throttled, before);
        assert!(differences(&before, &throttled).is_empty());
        // Nothing to carry over from: it stays an error, and the verdict says so.
        let mut first = Seen::of_json(&report("unknown", "error", None)).unwrap();
        first.carry_over_errors(&Seen {
            verdict: Verdict::Ok,
            findings: Vec::new(),
        });
        assert_eq!(first.verdict, Verdict::Unknown);
    }

    #[test]
    fn a_finding_of_an_unknown_check_or_status_is_left_out_never_guessed() {
        let mut json = report("problems", "fail", None);
        json["findings"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"step": "no-such-check", "status": "fail", "summary": ""}));
        json["findings"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"step": "vm-agent", "status": "broken", "summary": ""}));
        let seen = Seen::of_json(&json).unwrap();
        assert_eq!(seen.verdict, Verdict::Problems);
        let steps: Vec<CheckId> = seen.findings.iter().map(|f| f.step).collect();
        assert_eq!(steps, [CheckId::VmStatus, CheckId::Nsg]);
        // A verdict it does not know: not a report it can compare.
        assert_eq!(Seen::of_json(&report("maybe", "fail", None)), None);
        // What it writes, it reads back.
        let stored: serde_json::Value = serde_json::from_str(&seen.to_json()).unwrap();
        assert_eq!(Seen::of_json(&stored), Some(seen));
    }

    #[test]
    fn a_watch_lasts_the_default_or_what_was_asked_within_the_maximum() {
        let s = WatchSettings::default();
        assert_eq!(s.length(None), Ok(Duration::from_secs(3600)));
        assert_eq!(s.length(Some(240)), Ok(Duration::from_secs(240 * 60)));
        assert_eq!(
            s.length(Some(241)).unwrap_err().to_string(),
            "a watch lasts from 1 to 240 minutes; 241 is not in that range"
        );
        assert!(s.length(Some(0)).is_err());
    }
}
