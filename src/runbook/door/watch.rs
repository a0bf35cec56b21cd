//! Watches and the timeline behind the door: `/rdp watch`, `/rdp unwatch`, the channel's
//! watches, `history`, and the background task that re-checks watched VMs.
//!
//! A watch is a read (`[commands] check`), authorised when it starts and again, with the person
//! as they were then, at every re-check: a person who may no longer read the VM, or a channel
//! no longer served, ends it. Re-checks run at the sweeps' priority (`Arm::for_sweep`): they
//! share the subscription's ARM budget with everything else, spend at most the sweeps' share of
//! it and queue behind people's requests; a re-check Azure fails or throttles (the check, or any
//! of its reads) puts the next one off by four intervals, and a read it could not judge is not
//! a change. Watches live in the store and are run by one replica at a time (see
//! `store::watches`), so they survive a restart and are posted once.

use super::{Caller, Door, DoorError};
use crate::domain::{Changes, VmRef, VmSummary};
use crate::policy::{Actor, ActorSource, Place};
use crate::runbook::operate::format_time;
use crate::runbook::watch::{
    check_entries, differences, merge, Happened, Seen, Timeline, TimelineEntry, WatchSettings,
};
use crate::runbook::{CheckOptions, Report};
use crate::store::{lapsed_before, now_ms, NewWatch, StoredWatch};
use std::sync::Arc;
use std::time::Duration;

/// A re-check that Azure failed (or throttled) puts the next one off by this many intervals.
const BACKOFF_INTERVALS: i64 = 4;

/// At most this many watched VMs are re-checked at once by one replica.
const CONCURRENT_RUNS: usize = 4;

/// Azure Monitor logs a write within minutes, not at once: a change this much older than the
/// previous look may still be news.
const ACTIVITY_LOG_DELAY_MS: i64 = 10 * 60 * 1000;

/// At most this many changes from the Activity Log in a watch's post.
const CHANGES_SHOWN: usize = 3;

/// What a person is told when a watch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchStarted {
    pub vm: VmRef,
    /// Unix ms.
    pub until_ms: i64,
    pub every: Duration,
    /// The VM was watched in this channel already: this extended it.
    pub extended: bool,
}

/// What a watch has to say in its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchNews {
    /// The verdict or a finding changed since the previous re-check.
    Changed {
        channel: String,
        vm: VmRef,
        verdict: crate::runbook::Verdict,
        /// One line per change (`runbook::watch::differences`).
        lines: Vec<String>,
        /// The summaries of the findings that changed, as they are now.
        now: Vec<String>,
        /// Who changed what in Azure around then, from the Activity Log ("14:01
        /// alice@contoso.com created security rule deny-rdp in nsg-snet-app"): a change that
        /// explains a changed check, or one logged since the previous look.
        changed_in_azure: Vec<String>,
        started_by: String,
        until_ms: i64,
    },
    /// The watch ended: expired, or its person may no longer read the VM.
    Ended {
        channel: String,
        vm: VmRef,
        why: String,
    },
}

impl WatchNews {
    pub fn channel(&self) -> &str {
        match self {
            WatchNews::Changed { channel, .. } | WatchNews::Ended { channel, .. } => channel,
        }
    }
}

/// Where a replica's watch news goes (a front end posts it in its channel).
pub type OnWatch = Arc<dyn Fn(WatchNews) + Send + Sync>;

impl Door {
    /// How watches run and how long the timeline remembers (`[watch]`, `[history]`).
    pub fn with_watch(mut self, settings: WatchSettings) -> Door {
        self.watch = settings;
        self.operator = self.operator.map(|o| o.with_retention(settings.retention));
        self
    }

    pub fn watch_settings(&self) -> WatchSettings {
        self.watch
    }

    /// Counts the watch runs this process finished (tests wait on it).
    pub fn watch_runs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watch_runs.subscribe()
    }

    /// Keep `report` in its VM's history (`source`: what ran it); a failure is logged, never
    /// the check's.
    pub(super) async fn remember(&self, report: &Report, source: &str) {
        let Some(operator) = &self.operator else {
            return;
        };
        let Ok(json) = serde_json::to_string(report) else {
            return;
        };
        if let Err(e) = operator
            .store
            .record_check(&report.vm.id, now_ms(), source, &json, self.watch.retention)
            .await
        {
            tracing::warn!(error = %e, vm = %report.vm.name, "could not keep the check in the history");
        }
    }

    /// `/rdp watch VM [minutes]`: re-check the VM every interval until the watch expires,
    /// posting in this channel when the verdict or a finding changes. Watching it here already
    /// extends that watch. Only from a Discord channel (that is where it posts).
    pub async fn watch(
        &self,
        caller: &Caller,
        text: &str,
        minutes: Option<u64>,
    ) -> Result<WatchStarted, DoorError> {
        let operator = self.operator()?;
        let Place::Discord { guild, channel } = &caller.place else {
            return Err(DoorError::Config(
                "a watch posts in the Discord channel it was started in: use /rdp watch there"
                    .into(),
            ));
        };
        let length = self.watch.length(minutes)?;
        let summary = self
            .resolve(caller, text, self.catalog.commands.check)
            .await?;
        let vm = summary.vm;
        let until_ms = now_ms().saturating_add(millis(length));
        let (_, extended) = operator
            .store
            .start_watch(&NewWatch {
                vm_id: vm.id.clone(),
                vm_name: vm.name.clone(),
                channel: channel.clone(),
                guild: guild.clone(),
                actor: caller.actor.id.clone(),
                actor_name: caller.actor.name.clone(),
                actor_roles: caller.actor.role_ids.clone(),
                interval_ms: millis(self.watch.interval),
                expires_ms: until_ms,
            })
            .await?;
        operator
            .audit(
                &caller.actor,
                Some(channel),
                "watch",
                Some(&vm),
                &format!("watching until {}", format_time(until_ms)),
            )
            .await;
        Ok(WatchStarted {
            vm,
            until_ms,
            every: self.watch.interval,
            extended,
        })
    }

    /// `/rdp unwatch VM`: stop watching it in this channel; the watch there was, if any.
    pub async fn unwatch(
        &self,
        caller: &Caller,
        text: &str,
    ) -> Result<(VmRef, Option<StoredWatch>), DoorError> {
        let operator = self.operator()?;
        let Some(channel) = caller.channel() else {
            return Err(DoorError::Config(
                "watches belong to Discord channels: use /rdp unwatch there".into(),
            ));
        };
        let summary = self
            .resolve(caller, text, self.catalog.commands.check)
            .await?;
        let stopped = operator.store.stop_watch(&summary.vm.id, channel).await?;
        if stopped.is_some() {
            operator
                .audit(
                    &caller.actor,
                    Some(channel),
                    "unwatch",
                    Some(&summary.vm),
                    "stopped watching",
                )
                .await;
        }
        Ok((summary.vm, stopped))
    }

    /// The watches of this channel on VMs the person may read, soonest expiry first.
    pub async fn watches(&self, caller: &Caller) -> Result<Vec<StoredWatch>, DoorError> {
        self.admit(caller)?;
        let operator = self.operator()?;
        let Some(channel) = caller.channel() else {
            return Ok(Vec::new());
        };
        Ok(operator
            .store
            .watches(Some(channel))
            .await?
            .into_iter()
            .filter(|w| self.may_read(&caller.actor, &VmRef::from_stored(&w.vm_id, &w.vm_name)))
            .collect())
    }

    /// `history VM`: the VM's checks (each with its difference from the one before), fixes and
    /// their outcomes (the audit log) and the changes of the Activity Log within the reports'
    /// window, newest first, at most `limit` entries.
    pub async fn history(
        &self,
        caller: &Caller,
        text: &str,
        limit: u32,
    ) -> Result<Timeline, DoorError> {
        let operator = self.operator()?;
        let summary = self
            .resolve(caller, text, self.catalog.commands.check)
            .await?;
        let vm = summary.vm;
        let store = &operator.store;
        // One check more than shown, so the oldest shown still has its difference.
        let checks = store
            .checks_of(&vm.id, limit.saturating_add(1))
            .await?
            .into_iter()
            .filter_map(|c| {
                let json = serde_json::from_str(&c.report_json).ok()?;
                Some((c.taken_ms, c.source, json))
            })
            .collect();
        let mut entries: Vec<TimelineEntry> = check_entries(checks);
        entries.extend(
            store
                .recent_audit(Some(&vm.id), limit)
                .await?
                .into_iter()
                .map(|a| TimelineEntry {
                    at_ms: a.at_ms,
                    what: Happened::Fix {
                        who: a.actor_name,
                        command: a.command,
                        result: a.result,
                    },
                }),
        );
        // Who changed what, from the Activity Log, as far back as the reports look; a
        // principal Azure refuses it gets the rest of the timeline and the reason.
        let mut missing = Vec::new();
        match self.changes(caller, &vm, self.changes_window).await {
            Ok(Changes::Listed { changes, .. }) => entries.extend(changes.into_iter().map(|c| {
                let mut summary = c.summary;
                if c.status != "Succeeded" {
                    summary.push_str(&format!(" ({})", c.status));
                }
                if let Some(check) = c.explains {
                    summary.push_str(&format!(" — explains {}", check.as_str()));
                }
                TimelineEntry {
                    at_ms: i64::try_from(c.at.unix_timestamp_nanos() / 1_000_000)
                        .unwrap_or_default(),
                    what: Happened::Change {
                        who: c.who,
                        summary,
                    },
                }
            })),
            Ok(Changes::Skipped { reason }) => {
                missing.push(format!("changes from the Activity Log skipped: {reason}"))
            }
            Err(e) => missing.push(format!(
                "changes from the Activity Log could not be read: {e}"
            )),
        }
        // Azure Monitor alerts about the VM: each alert's newest notification says when it
        // fired and, once resolved, when it was resolved (two entries).
        for (wanted, received_ms) in store.alerts_of(&vm.id, limit).await? {
            match serde_json::from_str::<crate::domain::alert::Alert>(&wanted) {
                Ok(alert) => entries.extend(alert_entries(&alert, received_ms)),
                Err(e) => missing.push(format!("an alert kept in the store is unreadable: {e}")),
            }
        }
        let mut entries = merge(entries);
        entries.truncate(limit as usize);
        Ok(Timeline {
            vm,
            entries,
            missing,
        })
    }

    /// For the process's whole life: claim the watches that are due and nobody live owns,
    /// re-check them, and hand what they have to say to `on_news`; renew this replica's
    /// watches every third of the lease meanwhile (so a long re-check keeps them). Not a
    /// person's call: `bot` and `serve` run it. Stops when the task is aborted.
    pub fn spawn_watches(
        &self,
        on_news: OnWatch,
    ) -> Result<tokio::task::JoinHandle<()>, DoorError> {
        let operator = self.operator()?.clone();
        let door = self.clone();
        let lease = operator.lease();
        let tick = door
            .watch
            .interval
            .min(lease / 3)
            .max(Duration::from_millis(100));
        Ok(tokio::spawn(async move {
            let renew = async {
                loop {
                    if let Err(e) = operator.store.renew_watches(operator.replica()).await {
                        tracing::warn!(error = %e, "could not renew this replica's watches");
                    }
                    tokio::time::sleep(lease / 3).await;
                }
            };
            let run = async {
                loop {
                    if let Err(e) = door.run_due_watches(&on_news).await {
                        tracing::warn!(error = %e, "could not run the watches that are due");
                    }
                    tokio::time::sleep(tick).await;
                }
            };
            tokio::join!(renew, run);
        }))
    }

    /// Claim the due watches and re-check each (at most a few at once); how many ran.
    pub async fn run_due_watches(&self, on_news: &OnWatch) -> Result<usize, DoorError> {
        use futures::StreamExt;
        let operator = self.operator()?;
        let claimed = operator
            .store
            .claim_due_watches(
                operator.replica(),
                now_ms(),
                lapsed_before(operator.lease()),
            )
            .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        // Background work: the sweeps' priority and share of the ARM budget.
        let arm = self.arm.for_sweep();
        let count = claimed.len();
        futures::stream::iter(claimed)
            .for_each_concurrent(CONCURRENT_RUNS, |w| {
                let arm = &arm;
                async move {
                    if let Err(e) = self.run_watch(arm, &w, on_news).await {
                        tracing::warn!(error = %e, vm = %w.vm_name, "a watch's re-check failed");
                    }
                    self.watch_runs.send_modify(|n| *n += 1);
                }
            })
            .await;
        Ok(count)
    }

    /// One run of a watch this replica claimed: end it if it expired, else re-check the VM as
    /// the person who started it and say what changed since the previous re-check. Every write
    /// is conditional on still owning it, and only a run whose write landed speaks.
    async fn run_watch(
        &self,
        arm: &crate::azure::Arm,
        w: &StoredWatch,
        on_news: &OnWatch,
    ) -> Result<(), DoorError> {
        let operator = self.operator()?;
        let store = &operator.store;
        let owner = operator.replica();
        let vm = VmRef::from_stored(&w.vm_id, &w.vm_name);
        let now = now_ms();
        if now >= w.expires_ms {
            if store.end_watch(&w.id, owner).await? {
                on_news(WatchNews::Ended {
                    channel: w.channel.clone(),
                    vm,
                    why: format!(
                        "the watch {} started expired at {}",
                        w.actor_name,
                        format_time(w.expires_ms)
                    ),
                });
            }
            return Ok(());
        }
        let caller = Caller {
            actor: Actor {
                id: w.actor.clone(),
                name: w.actor_name.clone(),
                role_ids: w.actor_roles.clone(),
                source: ActorSource::Discord,
            },
            place: Place::Discord {
                guild: w.guild.clone(),
                channel: w.channel.clone(),
            },
        };
        let checked = match self.authorise_vm(&caller, self.catalog.commands.check, &vm) {
            Ok(()) => crate::runbook::check(
                arm,
                &self.catalog,
                VmSummary::unlisted(vm.clone()),
                &CheckOptions::default(),
                &|_| {},
            )
            .await
            .map_err(DoorError::from),
            Err(e) => Err(e),
        };
        match checked {
            Ok(report) => {
                self.remember(&report, "watch").await;
                let mut seen = Seen::of(&report);
                let before = w
                    .last_json
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok())
                    .and_then(|j| Seen::of_json(&j));
                // A read Azure failed or throttled is no news: what was seen of it stands, and
                // the next look comes later.
                let backoff = if seen.has_errors() {
                    if let Some(before) = &before {
                        seen.carry_over_errors(before);
                    }
                    BACKOFF_INTERVALS
                } else {
                    1
                };
                let next = now.saturating_add(w.interval_ms.saturating_mul(backoff));
                let mine = store
                    .record_watch_run(&w.id, owner, next, Some(&seen.to_json()))
                    .await?;
                let lines = before
                    .as_ref()
                    .map(|b| differences(b, &seen))
                    .unwrap_or_default();
                if mine && !lines.is_empty() {
                    let changed = before
                        .as_ref()
                        .map(|b| seen.changed_since(b))
                        .unwrap_or_default();
                    let now_summaries = changed
                        .iter()
                        .map(|f| format!("{}: {}", f.step, f.summary))
                        .collect();
                    let steps: Vec<&str> = changed.iter().map(|f| f.step.as_str()).collect();
                    // The Activity Log is read only when there is news: a watch's steady
                    // state costs nothing more than its checks.
                    let since = now
                        .saturating_sub(w.interval_ms.saturating_mul(BACKOFF_INTERVALS))
                        .saturating_sub(ACTIVITY_LOG_DELAY_MS);
                    let changed_in_azure = match crate::runbook::changes::list(
                        arm,
                        &vm,
                        self.changes_window,
                    )
                    .await
                    {
                        Ok(changes) => changes
                            .list()
                            .iter()
                            .filter(|c| {
                                c.explains.is_some_and(|s| steps.contains(&s.as_str()))
                                    || unix_ms(c.at) >= since
                            })
                            .take(CHANGES_SHOWN)
                            .map(|c| c.line())
                            .collect(),
                        Err(e) => {
                            tracing::warn!(error = %e, vm = %w.vm_name, "a watch could not read the Activity Log");
                            Vec::new()
                        }
                    };
                    on_news(WatchNews::Changed {
                        channel: w.channel.clone(),
                        vm,
                        verdict: seen.verdict,
                        lines,
                        now: now_summaries,
                        changed_in_azure,
                        started_by: w.actor_name.clone(),
                        until_ms: w.expires_ms,
                    });
                }
            }
            // The person may no longer read the VM, or the channel is no longer served: the
            // watch ends (fail closed), saying why.
            Err(e @ (DoorError::Denied(_) | DoorError::Fenced(_) | DoorError::Unserved { .. })) => {
                if store.end_watch(&w.id, owner).await? {
                    on_news(WatchNews::Ended {
                        channel: w.channel.clone(),
                        vm,
                        why: e.to_string(),
                    });
                }
            }
            // Azure failed or throttled: try again later, leaving the budget to others.
            Err(e) => {
                tracing::warn!(error = %e, vm = %w.vm_name, "a watched VM could not be checked; backing off");
                let next = now.saturating_add(w.interval_ms.saturating_mul(BACKOFF_INTERVALS));
                store.record_watch_run(&w.id, owner, next, None).await?;
            }
        }
        Ok(())
    }
}

fn unix_ms(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An alert's entries on the timeline: fired (with what fired, when Azure said), and resolved.
/// Azure's times are used; one it wrote unreadably falls back to when the alert was received.
fn alert_entries(alert: &crate::domain::alert::Alert, received_ms: i64) -> Vec<TimelineEntry> {
    let ms = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
    };
    let fired_ms = ms(&alert.fired).unwrap_or(received_ms);
    let what = match &alert.context {
        Some(context) => format!(": {context}"),
        None => String::new(),
    };
    let mut entries = vec![TimelineEntry {
        at_ms: fired_ms,
        what: Happened::Alert {
            summary: format!(
                "Azure Monitor alert {} ({}) fired{what}",
                alert.rule, alert.severity
            ),
        },
    }];
    if let Some(resolved) = &alert.resolved {
        entries.push(TimelineEntry {
            at_ms: ms(resolved).unwrap_or(fired_ms),
            what: Happened::Alert {
                summary: format!("Azure Monitor alert {} resolved", alert.rule),
            },
        });
    }
    entries
}
