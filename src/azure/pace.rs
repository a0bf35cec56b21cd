//! Pacing ARM requests from the `x-ms-ratelimit-remaining-*` headers, so that a sweep of a
//! whole resource group spends ARM's token bucket at its refill rate instead of running into 429s.
//!
//! ARM throttles per subscription with a token bucket (ARM-REFERENCE.md §4: reads burst 250,
//! refill 25 a second). Every response says how many requests remain. The pacer keeps one
//! estimate per subscription: the last `remaining` Azure reported, minus the requests sent since,
//! plus the refill. A request that would overdraw the estimate takes a ticket and sleeps until its
//! token has refilled, first come first served. Until Azure has answered once, requests go
//! straight out. A 429 still happens if someone else drains the same bucket; then the retry
//! policy (which sits outside this one) honours `Retry-After` and this pacer learns `remaining`.

use azure_core::headers::{HeaderName, Headers};
use azure_core::{Context, Policy, PolicyResult, Request};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The headers that report a subscription's remaining budget; the smallest present wins.
const REMAINING: [&str; 4] = [
    "x-ms-ratelimit-remaining-subscription-reads",
    "x-ms-ratelimit-remaining-subscription-writes",
    "x-ms-ratelimit-remaining-subscription-global-reads",
    "x-ms-ratelimit-remaining-subscription-global-writes",
];

/// Tokens left in the bucket when the pacer stops sending: a request timed to arrive exactly as
/// its token refills would race the bucket's own clock.
const RESERVE: f64 = 1.0;

/// One subscription's budget as we estimate it.
#[derive(Debug)]
struct Budget {
    /// Tokens left now, net of requests sent and tickets handed out (may be negative: debt
    /// that sleeping requests are waiting out).
    tokens: f64,
    /// The most Azure ever reported plus one: refill stops there.
    capacity: f64,
    at: Instant,
    /// Azure has reported `remaining` at least once.
    known: bool,
    /// Sent and not yet answered.
    in_flight: u32,
    /// Holding a ticket, asleep until their token refills.
    waiting: u32,
}

impl Budget {
    fn refill(&mut self, now: Instant, rate: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * rate).min(self.capacity);
    }
}

/// What pacing has cost so far (for sweep summaries and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PacingStats {
    /// Requests that had to wait for a token.
    pub paced: u64,
    /// Their waits, added up.
    pub waited: Duration,
    /// 429 answers seen (each is retried by the retry policy).
    pub throttled: u64,
}

#[derive(Debug)]
pub(crate) struct Pacer {
    /// Tokens refilled per second, per subscription (ARM's documented read refill).
    rate: f64,
    budgets: Mutex<HashMap<String, Budget>>,
    paced: AtomicU64,
    waited_us: AtomicU64,
    throttled: AtomicU64,
}

impl Pacer {
    pub(crate) fn new(refill_per_sec: f64) -> Pacer {
        Pacer {
            rate: refill_per_sec.max(0.1),
            budgets: Mutex::new(HashMap::new()),
            paced: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> PacingStats {
        PacingStats {
            paced: self.paced.load(Ordering::Relaxed),
            waited: Duration::from_micros(self.waited_us.load(Ordering::Relaxed)),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }

    fn budgets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Budget>> {
        self.budgets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count this request against its subscription; how long it must wait before it may go
    /// out (zero for most). The request is counted until [`Pacer::done`].
    fn ticket(&self, subscription: &str, now: Instant) -> Duration {
        let mut budgets = self.budgets();
        let budget = budgets.entry(subscription.to_string()).or_insert(Budget {
            tokens: 0.0,
            capacity: 0.0,
            at: now,
            known: false,
            in_flight: 0,
            waiting: 0,
        });
        if !budget.known {
            // Nothing known yet: go, and learn from the answer.
            budget.in_flight += 1;
            return Duration::ZERO;
        }
        budget.refill(now, self.rate);
        budget.tokens -= 1.0;
        let short = RESERVE - budget.tokens;
        if short <= 0.0 {
            budget.in_flight += 1;
            return Duration::ZERO;
        }
        budget.waiting += 1;
        Duration::from_secs_f64(short / self.rate)
    }

    /// A request that waited for its token is going out now.
    fn sent_after_wait(&self, subscription: &str) {
        if let Some(budget) = self.budgets().get_mut(subscription) {
            budget.waiting = budget.waiting.saturating_sub(1);
            budget.in_flight += 1;
        }
    }

    /// Azure said `remaining` for this subscription in the answer to one of our requests
    /// (which is still counted in flight).
    fn learn(&self, subscription: &str, remaining: u64, now: Instant) {
        let mut budgets = self.budgets();
        let Some(budget) = budgets.get_mut(subscription) else {
            return;
        };
        let remaining = remaining as f64;
        budget.refill(now, self.rate);
        budget.known = true;
        budget.capacity = budget.capacity.max(remaining + 1.0);
        // What Azure has left, less what we have sent or promised since it counted.
        let others = budget.in_flight.saturating_sub(1) + budget.waiting;
        budget.tokens = remaining - f64::from(others);
    }

    /// The request is over (answered, failed or dropped); `waited` says whether it was still
    /// asleep on its ticket.
    fn done(&self, subscription: &str, asleep: bool) {
        if let Some(budget) = self.budgets().get_mut(subscription) {
            if asleep {
                budget.waiting = budget.waiting.saturating_sub(1);
                // Its token was never spent: give it back.
                budget.tokens += 1.0;
            } else {
                budget.in_flight = budget.in_flight.saturating_sub(1);
            }
        }
    }
}

/// Keeps a request counted while it waits or is in flight, even if its future is dropped
/// (a cancelled sweep).
struct Ticket<'a> {
    pacer: &'a Pacer,
    subscription: &'a str,
    asleep: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.pacer.done(self.subscription, self.asleep);
    }
}

/// The subscription a request spends: `/subscriptions/{id}/...`, lower-cased.
fn subscription_of(url: &url::Url) -> Option<String> {
    let mut segments = url.path_segments()?.filter(|s| !s.is_empty());
    while let Some(segment) = segments.next() {
        if segment.eq_ignore_ascii_case("subscriptions") {
            return segments.next().map(str::to_ascii_lowercase);
        }
    }
    None
}

fn remaining(headers: &Headers) -> Option<u64> {
    REMAINING
        .iter()
        .filter_map(|name| headers.get_optional_str(&HeaderName::from_static(name)))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .min()
}

/// The pipeline policy: one per [`super::Arm`], shared by its clients.
#[derive(Debug, Clone)]
pub(crate) struct Pacing(pub Arc<Pacer>);

#[async_trait::async_trait]
impl Policy for Pacing {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some(subscription) = subscription_of(request.url()) else {
            return next[0].send(ctx, request, &next[1..]).await;
        };
        let pacer = &self.0;
        let wait = pacer.ticket(&subscription, Instant::now());
        let mut ticket = Ticket {
            pacer,
            subscription: &subscription,
            asleep: !wait.is_zero(),
        };
        if ticket.asleep {
            pacer.paced.fetch_add(1, Ordering::Relaxed);
            pacer
                .waited_us
                .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
            tracing::trace!(?wait, "ARM request paced");
            tokio::time::sleep(wait).await;
            pacer.sent_after_wait(&subscription);
            ticket.asleep = false;
        }
        let result = next[0].send(ctx, request, &next[1..]).await;
        if let Ok(response) = &result {
            if response.status() == azure_core::StatusCode::TooManyRequests {
                pacer.throttled.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(left) = remaining(response.headers()) {
                pacer.learn(&subscription, left, Instant::now());
            }
        }
        drop(ticket);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_comes_from_the_path() {
        let url = url::Url::parse(
            "http://127.0.0.1:1/subscriptions/ABC/resourceGroups/rg/providers/x?api-version=1",
        )
        .unwrap();
        assert_eq!(subscription_of(&url).as_deref(), Some("abc"));
        let token = url::Url::parse("http://127.0.0.1:1/tenant/oauth2/v2.0/token").unwrap();
        assert_eq!(subscription_of(&token), None);
    }

    #[test]
    fn unknown_budget_sends_at_once_then_learns() {
        let pacer = Pacer::new(25.0);
        let t0 = Instant::now();
        assert_eq!(pacer.ticket("s", t0), Duration::ZERO);
        pacer.learn("s", 3, t0);
        pacer.done("s", false);
        // Three tokens left, one kept in reserve: two go at once, the third waits one refill
        // (40 ms at 25/s).
        assert_eq!(pacer.ticket("s", t0), Duration::ZERO);
        assert_eq!(pacer.ticket("s", t0), Duration::ZERO);
        let third = pacer.ticket("s", t0);
        assert!(
            (third.as_secs_f64() - 0.04).abs() < 1e-9,
            "third waits {third:?}"
        );
        // A fourth queues behind the third: tickets are first come, first served.
        let fourth = pacer.ticket("s", t0);
        assert!((fourth.as_secs_f64() - 0.08).abs() < 1e-9, "{fourth:?}");
    }

    #[test]
    fn azure_reporting_less_than_estimated_wins() {
        let pacer = Pacer::new(10.0);
        let t0 = Instant::now();
        pacer.ticket("s", t0);
        pacer.learn("s", 100, t0);
        pacer.done("s", false);
        // Someone else spent the bucket: Azure now says 0 left.
        pacer.ticket("s", t0);
        pacer.learn("s", 0, t0);
        pacer.done("s", false);
        // Empty: wait for this request's token and the reserve (2 tokens at 10/s).
        let wait = pacer.ticket("s", t0);
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-9, "{wait:?}");
    }

    #[test]
    fn refill_stops_at_capacity() {
        let pacer = Pacer::new(25.0);
        let t0 = Instant::now();
        pacer.ticket("s", t0);
        pacer.learn("s", 3, t0);
        pacer.done("s", false);
        // An hour later the bucket holds at most what Azure ever reported, plus one; one stays
        // in reserve.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(pacer.ticket("s", later), Duration::ZERO);
        }
        assert!(pacer.ticket("s", later) > Duration::ZERO);
    }

    #[test]
    fn a_dropped_waiter_gives_its_token_back() {
        let pacer = Pacer::new(10.0);
        let t0 = Instant::now();
        pacer.ticket("s", t0);
        pacer.learn("s", 0, t0);
        pacer.done("s", false);
        let first = pacer.ticket("s", t0);
        pacer.done("s", true);
        // The next request waits as long as the dropped one would have, not twice as long.
        assert_eq!(pacer.ticket("s", t0), first);
    }

    #[test]
    fn headers_give_the_smallest_remaining() {
        let mut headers = Headers::new();
        headers.insert("x-ms-ratelimit-remaining-subscription-reads", "120");
        headers.insert("x-ms-ratelimit-remaining-subscription-global-reads", "90");
        assert_eq!(remaining(&headers), Some(90));
        assert_eq!(remaining(&Headers::new()), None);
    }
}
