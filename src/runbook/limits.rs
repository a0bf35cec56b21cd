//! Limits that keep one person, or one sweep, from crowding out everyone else in a war room:
//! one sweep per scope at a time ([`SweepSlots`]) and a command rate per person
//! ([`PersonLimiter`]). How much of ARM's budget a sweep may spend, and how large a scope it may
//! take, is the pacer's and the fleet reader's business (`ArmSettings::sweep_share`,
//! `ArmSettings::sweep_max_vms`), not this module's.
//!
//! Pure bookkeeping with an injectable [`Clock`]: no I/O, no chat or SDK types. The front door
//! asks before it does anything for a person, and shows a refusal as written.

use crate::azure::SweepScope;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Where the limits read the time: the system's monotonic clock, or a test's.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Instant;
}

/// The monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    at: Mutex<Instant>,
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock {
            at: Mutex::new(Instant::now()),
        }
    }
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    pub fn advance(&self, by: Duration) {
        *lock(&self.at) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *lock(&self.at)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// "3 min 12 s", "45 s", "2 h 5 min".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

// ---------------------------------------------------------------------------------------------
// One sweep per scope

/// The sweeps running now, one per scope: a second sweep of a scope that overlaps a running
/// one (the same resource group, or a subscription and a group in it) is refused, saying who
/// started the running one and when. Share one `SweepSlots` among every front end of a process;
/// across the processes that share a database the door claims the scope there too
/// (`runbook::sweep_claim`), refusing in the same words.
#[derive(Debug, Clone)]
pub struct SweepSlots {
    running: Arc<Mutex<Vec<Slot>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Clone)]
struct Slot {
    id: u64,
    scope: SweepScope,
    started_by: String,
    started: Instant,
    started_utc: time::OffsetDateTime,
}

/// A sweep's place: hold it while the sweep runs; dropping it (the sweep finished, failed, was
/// cancelled or its task was dropped) frees the scope.
#[derive(Debug)]
#[must_use = "the scope is free again as soon as the guard is dropped"]
pub struct SweepGuard {
    running: Arc<Mutex<Vec<Slot>>>,
    id: u64,
}

impl Drop for SweepGuard {
    fn drop(&mut self) {
        lock(&self.running).retain(|slot| slot.id != self.id);
    }
}

/// A sweep running now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSweep {
    pub scope: SweepScope,
    /// The person who started it, as the front end named them.
    pub started_by: String,
    pub running_for: Duration,
}

/// Why a sweep may not start: another one covers (part of) its scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct SweepBusy {
    /// The scope asked for.
    pub asked: SweepScope,
    /// The sweep already running.
    pub running: RunningSweep,
    /// When it started, e.g. "14:02:11 UTC".
    pub started_at: String,
}

impl SweepBusy {
    /// The refusal for a sweep running elsewhere (another replica sharing the database), in the
    /// same words: `running` started by `started_by` at `started_ms`, both unix milliseconds as
    /// is `now_ms`.
    pub fn elsewhere(
        asked: &SweepScope,
        running: SweepScope,
        started_by: String,
        started_ms: i64,
        now_ms: i64,
    ) -> SweepBusy {
        let ran_ms = u64::try_from(now_ms.saturating_sub(started_ms)).unwrap_or(0);
        let started_utc =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(started_ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        SweepBusy {
            asked: asked.clone(),
            running: RunningSweep {
                scope: running,
                started_by,
                running_for: Duration::from_millis(ran_ms),
            },
            started_at: clock_time(started_utc),
        }
    }

    fn message(&self) -> String {
        let running = &self.running;
        let same = overlaps(&running.scope, &self.asked)
            && running.scope.resource_group.is_some() == self.asked.resource_group.is_some();
        let covers = if same {
            String::new()
        } else {
            format!(" (it covers {})", self.asked)
        };
        format!(
            "a sweep of {} is already running{covers}: {} started it {} ago, at {}. Wait for its summary, or ask {} to cancel it; one sweep per scope at a time keeps ARM's budget for everyone's checks.",
            running.scope,
            running.started_by,
            human(running.running_for),
            self.started_at,
            running.started_by,
        )
    }
}

impl Default for SweepSlots {
    fn default() -> SweepSlots {
        SweepSlots::with_clock(Arc::new(SystemClock))
    }
}

/// Two scopes overlap when one holds the other: the same subscription, and the same resource
/// group or a whole subscription on either side. Names compare as ARM does, ignoring case.
fn overlaps(a: &SweepScope, b: &SweepScope) -> bool {
    a.subscription_id.eq_ignore_ascii_case(&b.subscription_id)
        && match (&a.resource_group, &b.resource_group) {
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            _ => true,
        }
}

impl SweepSlots {
    pub fn new() -> SweepSlots {
        SweepSlots::default()
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> SweepSlots {
        SweepSlots {
            running: Arc::default(),
            next_id: Arc::default(),
            clock,
        }
    }

    /// Take `scope` for a sweep `actor` starts, or say which running sweep holds it.
    pub fn try_start(&self, scope: &SweepScope, actor: &str) -> Result<SweepGuard, Box<SweepBusy>> {
        let now = self.clock.now();
        let mut running = lock(&self.running);
        if let Some(slot) = running.iter().find(|slot| overlaps(&slot.scope, scope)) {
            return Err(Box::new(SweepBusy {
                asked: scope.clone(),
                running: RunningSweep {
                    scope: slot.scope.clone(),
                    started_by: slot.started_by.clone(),
                    running_for: now.saturating_duration_since(slot.started),
                },
                started_at: clock_time(slot.started_utc),
            }));
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        running.push(Slot {
            id,
            scope: scope.clone(),
            started_by: actor.to_string(),
            started: now,
            started_utc: time::OffsetDateTime::now_utc(),
        });
        Ok(SweepGuard {
            running: self.running.clone(),
            id,
        })
    }

    /// The sweeps running now, oldest first.
    pub fn running(&self) -> Vec<RunningSweep> {
        let now = self.clock.now();
        lock(&self.running)
            .iter()
            .map(|slot| RunningSweep {
                scope: slot.scope.clone(),
                started_by: slot.started_by.clone(),
                running_for: now.saturating_duration_since(slot.started),
            })
            .collect()
    }
}

/// "14:02:11 UTC".
fn clock_time(at: time::OffsetDateTime) -> String {
    format!("{:02}:{:02}:{:02} UTC", at.hour(), at.minute(), at.second())
}

// ---------------------------------------------------------------------------------------------
// A command rate per person

/// How many commands one person may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonRate {
    /// Commands per minute, sustained; 0 turns the limit off.
    pub per_minute: u32,
    /// Commands back to back before the rate applies (at least 1).
    pub burst: u32,
}

impl Default for PersonRate {
    /// 10 at once (a check of each VM of a small group), then one every 3 s.
    fn default() -> PersonRate {
        PersonRate {
            per_minute: 20,
            burst: 10,
        }
    }
}

/// A token bucket per person (by actor id, e.g. `discord:1234`): `burst` commands at once,
/// refilled at `per_minute`. Ask [`PersonLimiter::check`] before running a command.
#[derive(Debug)]
pub struct PersonLimiter {
    rate: PersonRate,
    clock: Arc<dyn Clock>,
    people: Mutex<HashMap<String, Person>>,
}

#[derive(Debug)]
struct Person {
    tokens: f64,
    at: Instant,
    /// When their commands of the last minute ran (for the refusal's count).
    recent: VecDeque<Instant>,
}

const MINUTE: Duration = Duration::from_secs(60);

/// People remembered before idle ones (a full bucket, nothing in the last minute) are forgotten.
const PEOPLE_KEPT: usize = 4096;

/// A person ran too many commands too fast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("you have run {recent} commands in the last minute; try again in {} s", retry_after.as_secs())]
pub struct RateLimited {
    /// Their commands in the last minute.
    pub recent: usize,
    /// When the next one will be let through (whole seconds, at least 1).
    pub retry_after: Duration,
}

impl PersonLimiter {
    /// The limiter the config file's `[limits]` describe (defaults where a value is absent).
    pub fn from_config(limits: &crate::config::LimitsConfig) -> PersonLimiter {
        let defaults = PersonRate::default();
        PersonLimiter::new(PersonRate {
            per_minute: limits.commands_per_minute.unwrap_or(defaults.per_minute),
            burst: limits.command_burst.unwrap_or(defaults.burst),
        })
    }

    pub fn new(rate: PersonRate) -> PersonLimiter {
        PersonLimiter::with_clock(rate, Arc::new(SystemClock))
    }

    pub fn with_clock(rate: PersonRate, clock: Arc<dyn Clock>) -> PersonLimiter {
        PersonLimiter {
            rate: PersonRate {
                per_minute: rate.per_minute,
                burst: rate.burst.max(1),
            },
            clock,
            people: Mutex::new(HashMap::new()),
        }
    }

    pub fn rate(&self) -> PersonRate {
        self.rate
    }

    fn per_sec(&self) -> f64 {
        f64::from(self.rate.per_minute) / 60.0
    }

    /// Count one command of `actor`, or refuse it with how many they ran in the last minute
    /// and when to try again. A refused command is not counted.
    pub fn check(&self, actor: &str) -> Result<(), RateLimited> {
        if self.rate.per_minute == 0 {
            return Ok(());
        }
        let now = self.clock.now();
        let burst = f64::from(self.rate.burst);
        let rate = self.per_sec();
        let mut people = lock(&self.people);
        if people.len() >= PEOPLE_KEPT && !people.contains_key(actor) {
            people.retain(|_, p| {
                let full = p.tokens + now.saturating_duration_since(p.at).as_secs_f64() * rate;
                full < burst || p.recent.back().is_some_and(|t| now - *t < MINUTE)
            });
        }
        let person = people.entry(actor.to_string()).or_insert_with(|| Person {
            tokens: burst,
            at: now,
            recent: VecDeque::new(),
        });
        let elapsed = now.saturating_duration_since(person.at).as_secs_f64();
        person.tokens = (person.tokens + elapsed * rate).min(burst);
        person.at = now;
        while person
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            person.recent.pop_front();
        }
        if person.tokens >= 1.0 {
            person.tokens -= 1.0;
            person.recent.push_back(now);
            return Ok(());
        }
        let wait = ((1.0 - person.tokens) / rate).ceil().max(1.0);
        Err(RateLimited {
            recent: person.recent.len(),
            retry_after: Duration::from_secs(wait as u64),
        })
    }
}

impl Default for PersonLimiter {
    fn default() -> PersonLimiter {
        PersonLimiter::new(PersonRate::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rg(name: &str) -> SweepScope {
        SweepScope {
            subscription_id: "11111111-1111-1111-1111-111111111111".into(),
            resource_group: Some(name.into()),
        }
    }

    fn whole() -> SweepScope {
        SweepScope {
            subscription_id: "11111111-1111-1111-1111-111111111111".into(),
            resource_group: None,
        }
    }

    #[test]
    fn one_sweep_per_scope_and_the_refusal_names_who_and_since_when() {
        let clock = Arc::new(ManualClock::new());
        let slots = SweepSlots::with_clock(clock.clone());
        let guard = slots.try_start(&rg("rg-web"), "alice").expect("free");
        clock.advance(Duration::from_secs(192));
        let busy = slots.try_start(&rg("RG-WEB"), "bob").expect_err("taken");
        assert_eq!(busy.running.started_by, "alice");
        assert_eq!(busy.running.running_for, Duration::from_secs(192));
        let text = busy.to_string();
        assert!(
            text.starts_with("a sweep of resource group rg-web is already running: alice started it 3 min 12 s ago, at "),
            "{text}"
        );
        assert!(text.contains("UTC"), "{text}");
        // Another group is another scope.
        let other = slots.try_start(&rg("rg-data"), "bob").expect("free");
        assert_eq!(slots.running().len(), 2);
        drop(guard);
        let again = slots.try_start(&rg("rg-web"), "bob").expect("freed");
        drop((again, other));
        assert!(slots.running().is_empty());
    }

    #[test]
    fn a_subscription_sweep_and_a_sweep_of_one_of_its_groups_exclude_each_other() {
        let slots = SweepSlots::new();
        let group = slots.try_start(&rg("rg-web"), "alice").expect("free");
        let busy = slots.try_start(&whole(), "bob").expect_err("overlaps");
        assert!(
            busy.to_string()
                .contains("(it covers subscription 11111111-1111-1111-1111-111111111111)"),
            "{busy}"
        );
        drop(group);
        let all = slots.try_start(&whole(), "bob").expect("free");
        assert!(slots.try_start(&rg("rg-data"), "carol").is_err());
        let elsewhere = SweepScope {
            subscription_id: "22222222-2222-2222-2222-222222222222".into(),
            resource_group: Some("rg-data".into()),
        };
        assert!(slots.try_start(&elsewhere, "carol").is_ok());
        drop(all);
    }

    #[test]
    fn a_sweep_elsewhere_is_refused_in_the_same_words() {
        // 14:02:11 UTC on 30 November 2026, and 192 s later.
        let started_ms = 1_796_047_331_000;
        let busy = SweepBusy::elsewhere(
            &whole(),
            rg("rg-web"),
            "alice".into(),
            started_ms,
            started_ms + 192_000,
        );
        assert_eq!(
            busy.to_string(),
            "a sweep of resource group rg-web is already running (it covers subscription \
             11111111-1111-1111-1111-111111111111): alice started it 3 min 12 s ago, at \
             14:02:11 UTC. Wait for its summary, or ask alice to cancel it; one sweep per scope \
             at a time keeps ARM's budget for everyone's checks."
        );
        // A clock behind the other replica's says "0 s", never a negative time.
        let skewed = SweepBusy::elsewhere(&whole(), whole(), "bob".into(), started_ms, 0);
        assert_eq!(skewed.running.running_for, Duration::ZERO);
        assert!(skewed
            .to_string()
            .contains("bob started it 0 s ago, at 14:02:11 UTC"));
    }

    #[test]
    fn a_guard_moved_into_a_task_frees_the_scope_when_the_task_ends() {
        let slots = SweepSlots::new();
        let guard = slots.try_start(&rg("rg-web"), "alice").expect("free");
        std::thread::spawn(move || drop(guard))
            .join()
            .expect("joins");
        assert!(slots.try_start(&rg("rg-web"), "bob").is_ok());
    }

    #[test]
    fn a_person_gets_the_burst_then_the_rate_with_a_clear_refusal() {
        let clock = Arc::new(ManualClock::new());
        let limiter = PersonLimiter::with_clock(PersonRate::default(), clock.clone());
        for _ in 0..10 {
            limiter.check("discord:1").expect("within the burst");
        }
        let refused = limiter.check("discord:1").expect_err("over the burst");
        assert_eq!(
            refused.to_string(),
            "you have run 10 commands in the last minute; try again in 3 s"
        );
        // Someone else is not held by it.
        limiter.check("discord:2").expect("their own bucket");
        // 20 a minute: one more every 3 s.
        clock.advance(Duration::from_secs(3));
        limiter.check("discord:1").expect("refilled");
        assert!(limiter.check("discord:1").is_err());
        // A minute later the count of recent commands has moved on.
        clock.advance(Duration::from_secs(58));
        let refused = (0..20)
            .find_map(|_| limiter.check("discord:1").err())
            .expect("burst again");
        assert_eq!(
            refused.recent, 11,
            "the one at 3 s is still within the minute: {refused}"
        );
    }

    #[test]
    fn a_rate_of_zero_turns_the_limit_off() {
        let limiter = PersonLimiter::new(PersonRate {
            per_minute: 0,
            burst: 1,
        });
        for _ in 0..1000 {
            limiter.check("cli:alice").expect("no limit");
        }
    }

    proptest! {
        /// Whatever the timing, no window lets through more than the burst plus what the rate
        /// refilled in it, and a refusal's wait is enough.
        #[test]
        fn never_more_than_burst_plus_rate(
            gaps in proptest::collection::vec(0u64..4000, 1..80),
            per_minute in 1u32..120,
            burst in 1u32..15,
        ) {
            let clock = Arc::new(ManualClock::new());
            let rate = PersonRate { per_minute, burst };
            let limiter = PersonLimiter::with_clock(rate, clock.clone());
            let start = clock.now();
            let mut accepted: Vec<Duration> = Vec::new();
            for gap in gaps {
                clock.advance(Duration::from_millis(gap));
                match limiter.check("p") {
                    Ok(()) => accepted.push(clock.now() - start),
                    Err(refused) => {
                        prop_assert!(refused.retry_after >= Duration::from_secs(1));
                        prop_assert!(refused.recent <= accepted.len());
                        // Another person asking meanwhile changes nothing for this one.
                        let _ = limiter.check("q");
                    }
                }
            }
            let per_sec = f64::from(per_minute) / 60.0;
            for (i, first) in accepted.iter().enumerate() {
                for (j, last) in accepted.iter().enumerate().skip(i) {
                    let window = (*last - *first).as_secs_f64();
                    let allowed = f64::from(burst) + window * per_sec + 1e-6;
                    prop_assert!(((j - i + 1) as f64) <= allowed, "{} in {window} s", j - i + 1);
                }
            }
        }

        #[test]
        fn waiting_as_told_lets_the_next_command_through(
            per_minute in 1u32..120,
            burst in 1u32..15,
        ) {
            let clock = Arc::new(ManualClock::new());
            let limiter = PersonLimiter::with_clock(PersonRate { per_minute, burst }, clock.clone());
            let refused = (0..=burst).find_map(|_| limiter.check("p").err());
            let Some(refused) = refused else {
                return Err(TestCaseError::fail("the burst never ran out"));
            };
            clock.advance(refused.retry_after);
            prop_assert!(limiter.check("p").is_ok());
        }
    }
}
