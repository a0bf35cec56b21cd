//! Pacing ARM requests from the `x-ms-ratelimit-remaining-*` headers, so that a sweep of a
//! whole resource group spends ARM's token buckets at their refill rate instead of running into
//! 429s.
//!
//! ARM throttles per subscription with token buckets, one for reads, one for writes, one for
//! deletes (Microsoft's "Understand how Azure Resource Manager throttles requests": reads burst 250 and refill 25 a second; writes and deletes 200
//! and 10). Every response says how many requests its bucket has left. The pacer keeps one
//! estimate per subscription and bucket: what Azure last reported, less the requests sent after
//! the one that answered, plus the refill. A request that would overdraw the estimate takes a
//! ticket and sleeps until its token has refilled, first come first served; two tokens stay in
//! reserve. Until a bucket has been reported once, three requests at a time probe it.
//!
//! People go first. Requests carry a [`Priority`]: a sweep's are `Background`
//! ([`super::Arm::for_sweep`]), a person's `Interactive`. Both draw on the same estimate, but a
//! background request may not draw it below `(1 - sweep_share) × capacity` (the rest is kept for
//! people), and it always queues behind interactive requests that are waiting; an interactive
//! request queues only behind other interactive ones. So a check typed during a sweep that has
//! drained the bucket finds the people's share there, instead of waiting out the sweep's queue.
//!
//! Which bucket a request spends is what its answer says: a route's class is learned from the
//! header its response carries; until a route has answered, the HTTP method decides (ARM counts
//! every request that is not a GET as a write, the POSTs that change nothing included: the
//! effective security rules and the boot diagnostics URIs). A service that overrides ARM's
//! limits for a resource type answers `x-ms-ratelimit-remaining-subscription-resource-requests`
//! instead of the reads or writes ("Understand how Azure Resource Manager throttles requests");
//! such a route gets a bucket of its own, whose refill Microsoft does not document: it is
//! assumed slow (one a second) and every answer corrects the estimate.
//!
//! Resource providers throttle too, behind ARM. Compute reports its policies in
//! `x-ms-ratelimit-remaining-resource` (`Microsoft.Compute/LowCostGetResource;33,...`: a VM's
//! own bucket for reading it, the subscription's, ...; Microsoft's "Compute throttling limits"
//! and "Troubleshooting API throttling errors", which asks clients to throttle themselves when a
//! count runs low). The pacer keeps an estimate per policy (per resource for the `...Resource`
//! policies), refilled as Compute's table documents (a third of the bucket a minute; the old
//! `...30Min` policies a tenth of it), and holds a route's request while one of the policies its
//! answers reported is down to its last token.
//!
//! A 429 still happens if someone else drains the same bucket; then the retry policy (outside
//! this one) honours `Retry-After` and this pacer learns.

use azure_core::headers::{HeaderName, Headers};
use azure_core::{Context, Policy, PolicyResult, Request};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Tokens left in a bucket when the pacer stops sending: a request timed to arrive exactly as
/// its token refills would race the bucket's own clock, and requests sent together may reach
/// Azure in another order than they left.
const RESERVE: f64 = 2.0;

/// The least a bucket is assumed to hold once seen (more than the reserve plus one request).
const MIN_CAPACITY: f64 = 10.0;

/// ARM's documented refill of the write and delete buckets, per second.
const WRITE_REFILL: f64 = 10.0;

/// The assumed refill of a resource type's own bucket (`-subscription-resource-requests`),
/// per second: undocumented, so slow; the answers correct the estimate.
const RESOURCE_REQUESTS_REFILL: f64 = 1.0;

/// Tokens left in a resource provider's bucket when the pacer holds its route's requests.
const RP_RESERVE: f64 = 1.0;

/// Routes whose bucket has been learned, at most (a bound, not a working set).
const MAX_ROUTES: usize = 512;

/// Resource providers' buckets remembered at most (one per VM read lately, at worst).
const MAX_PROVIDER_BUDGETS: usize = 4096;

/// Requests in flight on a bucket Azure has not reported yet: a few probe it, the rest wait for
/// their answer rather than risk a burst into an empty bucket. Three: a check's first writes
/// (the effective security rules, the effective routes, boot diagnostics) go out together.
const PROBES: usize = 3;
/// How often a request held back by the probes looks again.
const PROBE_WAIT: Duration = Duration::from_millis(5);

/// Who is waiting for a request: a person (a check, a fix) or a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// A person is waiting: goes first, may use the whole bucket (less the reserve).
    #[default]
    Interactive,
    /// A sweep: its share of the bucket only, behind every waiting interactive request.
    Background,
}

/// ARM's per-subscription buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Reads,
    Writes,
    Deletes,
    /// A resource type's own bucket, reported instead of the reads or writes.
    ResourceRequests,
}

impl Class {
    fn of_method(method: &azure_core::Method) -> Class {
        match method {
            azure_core::Method::Get | azure_core::Method::Head => Class::Reads,
            azure_core::Method::Delete => Class::Deletes,
            _ => Class::Writes,
        }
    }

    /// The headers reporting this bucket; the smallest present wins.
    fn headers(self) -> &'static [&'static str] {
        match self {
            Class::Reads => &[
                "x-ms-ratelimit-remaining-subscription-reads",
                "x-ms-ratelimit-remaining-subscription-global-reads",
            ],
            Class::Writes => &[
                "x-ms-ratelimit-remaining-subscription-writes",
                "x-ms-ratelimit-remaining-subscription-global-writes",
            ],
            Class::Deletes => &[
                "x-ms-ratelimit-remaining-subscription-deletes",
                "x-ms-ratelimit-remaining-subscription-global-deletes",
            ],
            Class::ResourceRequests => &["x-ms-ratelimit-remaining-subscription-resource-requests"],
        }
    }

    /// Whose bucket it is: the subscription's, or for a resource type's own bucket, the
    /// subscription's for that route.
    fn scope(self, subscription: &str, route: &str) -> String {
        match self {
            Class::ResourceRequests => format!("{subscription} {route}"),
            _ => subscription.to_owned(),
        }
    }

    /// Last: when an answer carries a resource type's own count, that is the route's bucket.
    const ALL: [Class; 4] = [
        Class::Reads,
        Class::Writes,
        Class::Deletes,
        Class::ResourceRequests,
    ];
}

/// One subscription's bucket as we estimate it.
#[derive(Debug)]
struct Budget {
    /// Tokens left now, net of requests sent and tickets handed out (negative: debt that
    /// sleeping requests are waiting out).
    tokens: f64,
    /// The most Azure ever reported plus one: refill stops there.
    capacity: f64,
    at: Instant,
    /// Azure has reported this bucket at least once.
    known: bool,
    /// Sequence numbers of requests sent and not yet over.
    in_flight: BTreeSet<u64>,
    /// Interactive requests holding a ticket, asleep until their token refills.
    waiting: BTreeSet<u64>,
    /// Background requests holding a ticket: they queue behind every interactive one.
    waiting_background: BTreeSet<u64>,
}

impl Budget {
    fn new(now: Instant) -> Budget {
        Budget {
            tokens: 0.0,
            capacity: 0.0,
            at: now,
            known: false,
            in_flight: BTreeSet::new(),
            waiting: BTreeSet::new(),
            waiting_background: BTreeSet::new(),
        }
    }

    /// Requests asleep on a ticket, of both priorities: each holds one token of debt.
    fn waiters(&self) -> f64 {
        (self.waiting.len() + self.waiting_background.len()) as f64
    }

    /// Add what refilled since the last look. The bucket holds at most `capacity`: that caps
    /// what is really there, the tokens plus the waiters' debts.
    fn refill(&mut self, now: Instant, rate: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let ceiling = self.capacity - self.waiters();
        self.tokens = (self.tokens + elapsed * rate).min(ceiling);
    }

    /// Requests that go before `seq` (itself included) if it is asleep with `priority`: the
    /// interactive ones ahead of it and, for a background one, every interactive waiter too.
    fn place(&self, seq: u64, priority: Priority) -> f64 {
        match priority {
            Priority::Interactive => self.waiting.range(..=seq).count() as f64,
            Priority::Background => {
                (self.waiting.len() + self.waiting_background.range(..=seq).count()) as f64
            }
        }
    }

    fn queue(&mut self, priority: Priority) -> &mut BTreeSet<u64> {
        match priority {
            Priority::Interactive => &mut self.waiting,
            Priority::Background => &mut self.waiting_background,
        }
    }
}

/// What pacing has cost the requests of one priority so far (for sweep summaries, tests and
/// benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PacingStats {
    /// Requests that had to wait for a token.
    pub paced: u64,
    /// Their waits, added up.
    pub waited: Duration,
    /// 429 answers seen (each is retried by the retry policy).
    pub throttled: u64,
    /// Requests asleep on a ticket right now.
    pub waiting: u64,
}

/// Counters of one priority.
#[derive(Debug, Default)]
struct Counters {
    paced: AtomicU64,
    waited_us: AtomicU64,
    throttled: AtomicU64,
}

/// Whether a request may go now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Go {
    Now,
    /// Its token refills after this long; it is counted as waiting.
    After(Duration),
    /// The bucket is being probed: ask again shortly (not counted).
    Later,
}

#[derive(Debug, Default)]
struct State {
    budgets: HashMap<(String, Class), Budget>,
    /// Route (method and resource type or action) → the bucket its answers reported, or
    /// `None` when they report none (not paced).
    routes: HashMap<String, Option<Class>>,
    /// A resource provider's policies, by scope (subscription or resource) and name.
    providers: HashMap<(String, String), ProviderBudget>,
    /// Route → the provider policies its answers reported.
    provider_routes: HashMap<String, Vec<String>>,
    next_seq: u64,
}

#[derive(Debug)]
pub(crate) struct Pacer {
    /// Tokens refilled per second in the read bucket (ARM's documented read refill).
    read_rate: f64,
    /// The fraction of a bucket background requests may spend (the rest is kept for people).
    background_share: f64,
    state: Mutex<State>,
    interactive: Counters,
    background: Counters,
    /// The connection's shared Activity Log reads, which every change it sends ends.
    pub(crate) activity: super::activity::Flights,
}

impl Pacer {
    pub(crate) fn new(read_refill_per_sec: f64, background_share: f64) -> Pacer {
        let share = if background_share.is_finite() {
            background_share.clamp(0.0, 1.0)
        } else {
            1.0
        };
        Pacer {
            read_rate: read_refill_per_sec.max(0.1),
            background_share: share,
            state: Mutex::new(State::default()),
            interactive: Counters::default(),
            background: Counters::default(),
            activity: super::activity::Flights::default(),
        }
    }

    fn counters(&self, priority: Priority) -> &Counters {
        match priority {
            Priority::Interactive => &self.interactive,
            Priority::Background => &self.background,
        }
    }

    pub(crate) fn stats(&self, priority: Priority) -> PacingStats {
        let counters = self.counters(priority);
        let waiting = self
            .state()
            .budgets
            .values()
            .map(|b| match priority {
                Priority::Interactive => b.waiting.len(),
                Priority::Background => b.waiting_background.len(),
            })
            .sum::<usize>();
        PacingStats {
            paced: counters.paced.load(Ordering::Relaxed),
            waited: Duration::from_micros(counters.waited_us.load(Ordering::Relaxed)),
            throttled: counters.throttled.load(Ordering::Relaxed),
            waiting: waiting as u64,
        }
    }

    /// Tokens a request of `priority` must leave in the bucket: the reserve for a person; for
    /// a sweep, the people's share of the bucket as well.
    fn keep(&self, priority: Priority, capacity: f64) -> f64 {
        match priority {
            Priority::Interactive => RESERVE,
            Priority::Background => RESERVE.max((1.0 - self.background_share) * capacity),
        }
    }

    fn rate(&self, class: Class) -> f64 {
        match class {
            Class::Reads => self.read_rate,
            Class::Writes | Class::Deletes => WRITE_REFILL.min(self.read_rate),
            Class::ResourceRequests => RESOURCE_REQUESTS_REFILL,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bucket a request spends: as its route's answers said, else by its method; `None`
    /// for a route whose answers report no bucket.
    fn class_of(&self, route: &str, method: &azure_core::Method) -> Option<Class> {
        self.state()
            .routes
            .get(route)
            .copied()
            .unwrap_or_else(|| Some(Class::of_method(method)))
    }

    /// Count a request against its bucket: its sequence number, and whether it may go now.
    /// It stays counted until [`Pacer::done`].
    fn ticket(&self, key: &(String, Class), priority: Priority, now: Instant) -> (u64, Go) {
        let rate = self.rate(key.1);
        let mut state = self.state();
        let seq = state.next_seq;
        let budget = state
            .budgets
            .entry(key.clone())
            .or_insert_with(|| Budget::new(now));
        if !budget.known {
            // Nothing known yet: a few go and learn from their answers.
            if budget.in_flight.len() >= PROBES {
                return (seq, Go::Later);
            }
            budget.in_flight.insert(seq);
            state.next_seq += 1;
            return (seq, Go::Now);
        }
        state.next_seq += 1;
        let budget = state.budgets.get_mut(key).expect("just inserted");
        budget.refill(now, rate);
        let keep = self.keep(priority, budget.capacity);
        // What is really there (the waiters' debts given back), less what must stay, less the
        // requests that go first, less this one.
        let available = budget.tokens + budget.waiters();
        let ahead = match priority {
            Priority::Interactive => budget.waiting.len(),
            Priority::Background => budget.waiting.len() + budget.waiting_background.len(),
        } as f64;
        budget.tokens -= 1.0;
        let short = keep + ahead + 1.0 - available;
        if short <= 0.0 {
            budget.in_flight.insert(seq);
            return (seq, Go::Now);
        }
        budget.queue(priority).insert(seq);
        (seq, Go::After(wait_for(short, rate)))
    }

    /// A request woke up from its wait: it goes now (`None`), or, if answers that came in
    /// meanwhile lowered the estimate, it sleeps again for this long. Requests ahead of it in
    /// line go first.
    fn wake(
        &self,
        key: &(String, Class),
        seq: u64,
        priority: Priority,
        now: Instant,
    ) -> Option<Duration> {
        let rate = self.rate(key.1);
        let mut state = self.state();
        let budget = state.budgets.get_mut(key)?;
        budget.refill(now, rate);
        // Each waiter holds one token of debt: what is really there is tokens + waiters.
        let available = budget.tokens + budget.waiters();
        let place = budget.place(seq, priority);
        let short = self.keep(priority, budget.capacity) + place - available;
        if short > 0.0 {
            return Some(wait_for(short, rate));
        }
        budget.queue(priority).remove(&seq);
        budget.in_flight.insert(seq);
        None
    }

    /// The answer to request `seq` (on `route`) carried these headers: learn the route's bucket
    /// and how much that bucket has left.
    fn learn(&self, subscription: &str, route: &str, seq: u64, headers: &Headers, now: Instant) {
        if Class::ALL.iter().all(|c| remaining(headers, *c).is_none()) {
            // An answer that reports no bucket: its route is not paced.
            let mut state = self.state();
            if state.routes.len() < MAX_ROUTES {
                state.routes.entry(route.to_string()).or_insert(None);
            }
            return;
        }
        for class in Class::ALL {
            let Some(left) = remaining(headers, class) else {
                continue;
            };
            let rate = self.rate(class);
            let mut state = self.state();
            if state.routes.len() < MAX_ROUTES || state.routes.contains_key(route) {
                state.routes.insert(route.to_string(), Some(class));
            }
            let budget = state
                .budgets
                .entry((class.scope(subscription, route), class))
                .or_insert_with(|| Budget::new(now));
            budget.refill(now, rate);
            budget.known = true;
            // At least a few tokens, whatever the first answer said, so that a bucket first seen
            // empty can still let its waiters through one by one.
            budget.capacity = budget.capacity.max(left as f64 + 1.0).max(MIN_CAPACITY);
            // What Azure had left when it answered, less what we sent after this request
            // (it may not have counted those yet) and the tickets handed out since. Answers
            // that arrive out of order are each safe on their own.
            let after = budget.in_flight.range(seq + 1..).count() as f64;
            budget.tokens = left as f64 - after - budget.waiters();
        }
    }

    /// The request is over (answered, failed or dropped); `asleep` says whether it was still
    /// waiting for its token.
    fn done(&self, key: &(String, Class), seq: u64, priority: Priority, asleep: bool) {
        if let Some(budget) = self.state().budgets.get_mut(key) {
            if asleep {
                budget.queue(priority).remove(&seq);
                // Its token was never spent: give it back.
                budget.tokens += 1.0;
            } else {
                budget.in_flight.remove(&seq);
            }
        }
    }
}

/// A resource provider's bucket (one policy of `x-ms-ratelimit-remaining-resource`) as we
/// estimate it.
#[derive(Debug)]
struct ProviderBudget {
    tokens: f64,
    /// The most it ever reported plus one.
    capacity: f64,
    /// Refill per second.
    rate: f64,
    at: Instant,
}

impl ProviderBudget {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
    }
}

/// The refill per second of a Compute policy that held at most `capacity`: Compute's table
/// ("Compute throttling limits") gives every policy a bucket three times its refill a minute
/// (36 and 12, 24,000 and 8,000, 900 and 300, ...), so a third of it a minute; the policies of
/// the older scheme are named for their window (`...3Min`, `...30Min`).
fn provider_rate(policy: &str, capacity: f64) -> f64 {
    let window = if policy.ends_with("30Min") {
        1800.0
    } else {
        180.0
    };
    (capacity / window).max(0.01)
}

/// `x-ms-ratelimit-remaining-resource`: `Provider/Policy;count` pairs separated by commas.
fn provider_remaining(headers: &Headers) -> Vec<(String, u64)> {
    headers
        .get_optional_str(&HeaderName::from_static(
            "x-ms-ratelimit-remaining-resource",
        ))
        .map(|value| {
            value
                .split(',')
                .filter_map(|pair| {
                    let (policy, count) = pair.trim().rsplit_once(';')?;
                    let count = count.trim().parse::<u64>().ok()?;
                    let policy = policy.trim();
                    (!policy.is_empty()).then(|| (policy.to_owned(), count))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whose bucket a provider's policy is: a `...Resource` policy is the resource's own (the
/// request's path up to the resource's name), any other the subscription's.
fn provider_scope(subscription: &str, policy: &str, url: &url::Url) -> String {
    if !policy.ends_with("Resource") {
        return subscription.to_owned();
    }
    let resource: Vec<String> = url
        .path_segments()
        .map(|s| {
            s.filter(|s| !s.is_empty())
                .take(8)
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    resource.join("/")
}

impl Pacer {
    /// Before a request on `route` goes: `None` if every provider policy its answers reported
    /// has a token to spare (each is spent), else how long until the emptiest refills.
    fn provider_hold(
        &self,
        subscription: &str,
        route: &str,
        url: &url::Url,
        now: Instant,
    ) -> Option<Duration> {
        let mut state = self.state();
        let policies = state.provider_routes.get(route)?.clone();
        let keys: Vec<(String, String)> = policies
            .iter()
            .map(|p| (provider_scope(subscription, p, url), p.clone()))
            .collect();
        let mut wait = Duration::ZERO;
        for key in &keys {
            if let Some(budget) = state.providers.get_mut(key) {
                budget.refill(now);
                let short = RP_RESERVE + 1.0 - budget.tokens;
                if short > 0.0 {
                    wait = wait.max(wait_for(short, budget.rate));
                }
            }
        }
        if !wait.is_zero() {
            return Some(wait);
        }
        for key in &keys {
            if let Some(budget) = state.providers.get_mut(key) {
                budget.tokens -= 1.0;
            }
        }
        None
    }

    /// Learns the provider policies an answer on `route` reported, and what each has left.
    fn learn_provider(
        &self,
        subscription: &str,
        route: &str,
        url: &url::Url,
        headers: &Headers,
        now: Instant,
    ) {
        let reported = provider_remaining(headers);
        if reported.is_empty() {
            return;
        }
        let mut state = self.state();
        let State {
            providers,
            provider_routes,
            ..
        } = &mut *state;
        if provider_routes.len() < MAX_ROUTES || provider_routes.contains_key(route) {
            let known = provider_routes.entry(route.to_owned()).or_default();
            for (policy, _) in &reported {
                if !known.contains(policy) {
                    known.push(policy.clone());
                }
            }
        }
        for (policy, left) in reported {
            let key = (provider_scope(subscription, &policy, url), policy.clone());
            if !providers.contains_key(&key) && providers.len() >= MAX_PROVIDER_BUDGETS {
                // Forget the buckets that have refilled: they hold nothing worth knowing.
                providers.retain(|_, b| {
                    b.refill(now);
                    b.tokens < b.capacity
                });
                if providers.len() >= MAX_PROVIDER_BUDGETS {
                    continue;
                }
            }
            let budget = providers.entry(key).or_insert_with(|| ProviderBudget {
                tokens: 0.0,
                capacity: 0.0,
                rate: 0.01,
                at: now,
            });
            budget.refill(now);
            budget.capacity = budget.capacity.max(left as f64 + 1.0);
            budget.rate = provider_rate(&policy, budget.capacity);
            budget.tokens = left as f64;
        }
    }
}

/// How long `tokens` take to refill at `rate` (never zero: a zero wait would mean "go").
fn wait_for(tokens: f64, rate: f64) -> Duration {
    Duration::from_secs_f64(tokens / rate).max(Duration::from_nanos(1))
}

/// Keeps a request counted while it waits or is in flight, even if its future is dropped
/// (a cancelled sweep).
struct Ticket<'a> {
    pacer: &'a Pacer,
    key: (String, Class),
    seq: u64,
    priority: Priority,
    asleep: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.pacer
            .done(&self.key, self.seq, self.priority, self.asleep);
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

/// A route without names or ids: the method and the last path segment that is neither a name
/// nor an id, e.g. "POST effectivenetworksecuritygroups" or "GET virtualmachines".
fn route_of(method: &azure_core::Method, url: &url::Url) -> String {
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    // ARM paths alternate type/name after the provider: an even count ends in a name.
    let kind = match segments.len() % 2 {
        0 => segments.len().checked_sub(2).and_then(|i| segments.get(i)),
        _ => segments.last(),
    };
    format!(
        "{} {}",
        method.as_ref(),
        kind.map(|k| k.to_ascii_lowercase()).unwrap_or_default()
    )
}

fn remaining(headers: &Headers, class: Class) -> Option<u64> {
    class
        .headers()
        .iter()
        .filter_map(|name| headers.get_optional_str(&HeaderName::from_static(name)))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .min()
}

/// The pipeline policy: one per [`super::Arm`] and priority, shared by its clients; every
/// `Arm` cloned from one connection shares one [`Pacer`].
#[derive(Debug, Clone)]
pub(crate) struct Pacing {
    pub pacer: Arc<Pacer>,
    pub priority: Priority,
}

#[async_trait::async_trait]
impl Policy for Pacing {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        // A request that may change something ends the sharing of the Activity Log reads begun
        // before it, when it is sent and when it is answered.
        let changes = !super::retry::replayable(request);
        if changes {
            self.pacer.activity.changed();
        }
        let result = self.pace(ctx, request, next).await;
        if changes {
            self.pacer.activity.changed();
        }
        result
    }
}

impl Pacing {
    async fn pace(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some(subscription) = subscription_of(request.url()) else {
            return next[0].send(ctx, request, &next[1..]).await;
        };
        let pacer = &*self.pacer;
        let priority = self.priority;
        let counters = pacer.counters(priority);
        let route = route_of(request.method(), request.url());
        let url = request.url().clone();
        let mut held = Duration::ZERO;
        while let Some(wait) = pacer.provider_hold(&subscription, &route, &url, Instant::now()) {
            held += wait;
            tracing::trace!(?wait, %route, "ARM request held for its resource provider bucket");
            tokio::time::sleep(wait).await;
        }
        let ticket = loop {
            let Some(class) = pacer.class_of(&route, request.method()) else {
                return next[0].send(ctx, request, &next[1..]).await;
            };
            let key = (class.scope(&subscription, &route), class);
            let (seq, go) = pacer.ticket(&key, priority, Instant::now());
            match go {
                Go::Now => {
                    break Ticket {
                        pacer,
                        key,
                        seq,
                        priority,
                        asleep: false,
                    }
                }
                Go::After(wait) => {
                    let mut ticket = Ticket {
                        pacer,
                        key,
                        seq,
                        priority,
                        asleep: true,
                    };
                    let mut wait = wait;
                    loop {
                        held += wait;
                        tracing::trace!(?wait, %route, ?priority, "ARM request paced");
                        tokio::time::sleep(wait).await;
                        match pacer.wake(&ticket.key, seq, priority, Instant::now()) {
                            None => break,
                            Some(more) => wait = more,
                        }
                    }
                    ticket.asleep = false;
                    break ticket;
                }
                Go::Later => {
                    held += PROBE_WAIT;
                    tokio::time::sleep(PROBE_WAIT).await;
                }
            }
        };
        if !held.is_zero() {
            crate::metrics::paced(
                match priority {
                    Priority::Interactive => crate::metrics::Priority::Interactive,
                    Priority::Background => crate::metrics::Priority::Background,
                },
                held,
            );
            counters.paced.fetch_add(1, Ordering::Relaxed);
            counters
                .waited_us
                .fetch_add(held.as_micros() as u64, Ordering::Relaxed);
        }
        let seq = ticket.seq;
        let result = next[0].send(ctx, request, &next[1..]).await;
        if let Ok(response) = &result {
            if response.status() == azure_core::StatusCode::TooManyRequests {
                counters.throttled.fetch_add(1, Ordering::Relaxed);
            }
            pacer.learn(
                &subscription,
                &route,
                seq,
                response.headers(),
                Instant::now(),
            );
            pacer.learn_provider(
                &subscription,
                &route,
                &url,
                response.headers(),
                Instant::now(),
            );
        }
        drop(ticket);
        result
    }
}

#[cfg(test)]
mod tests;
