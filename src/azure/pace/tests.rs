use super::*;

const I: Priority = Priority::Interactive;
const B: Priority = Priority::Background;

fn key() -> (String, Class) {
    ("s".to_string(), Class::Reads)
}

fn reads(left: u64) -> Headers {
    let mut headers = Headers::new();
    headers.insert(
        "x-ms-ratelimit-remaining-subscription-reads",
        left.to_string(),
    );
    headers
}

/// One request answered with `left` reads remaining, as a finished exchange.
fn exchange(pacer: &Pacer, left: u64, now: Instant) {
    let (seq, go) = pacer.ticket(&key(), I, now);
    assert_eq!(go, Go::Now);
    pacer.learn("s", "GET x", seq, &reads(left), now);
    pacer.done(&key(), seq, I, false);
}

fn waits(go: Go) -> f64 {
    match go {
        Go::Now => 0.0,
        Go::After(d) => d.as_secs_f64(),
        Go::Later => panic!("the bucket is known: no probing"),
    }
}

#[test]
fn subscription_and_route_come_from_the_path() {
    let url = url::Url::parse(
        "http://127.0.0.1:1/subscriptions/ABC/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic-1/effectiveNetworkSecurityGroups?api-version=1",
    )
    .unwrap();
    assert_eq!(subscription_of(&url).as_deref(), Some("abc"));
    assert_eq!(
        route_of(&azure_core::Method::Post, &url),
        "POST effectivenetworksecuritygroups"
    );
    let vm = url::Url::parse(
        "http://h/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-01",
    )
    .unwrap();
    assert_eq!(
        route_of(&azure_core::Method::Get, &vm),
        "GET virtualmachines"
    );
    let token = url::Url::parse("http://127.0.0.1:1/tenant/oauth2/v2.0/token").unwrap();
    assert_eq!(subscription_of(&token), None);
}

#[test]
fn unknown_budget_sends_at_once_then_learns() {
    let pacer = Pacer::new(25.0, 0.8);
    let t0 = Instant::now();
    exchange(&pacer, 2 + RESERVE as u64, t0);
    // Two tokens more than the reserve: two go at once, the third waits one refill
    // (40 ms at 25/s), and a fourth queues behind it.
    assert_eq!(pacer.ticket(&key(), I, t0).1, Go::Now);
    assert_eq!(pacer.ticket(&key(), I, t0).1, Go::Now);
    assert!((waits(pacer.ticket(&key(), I, t0).1) - 0.04).abs() < 1e-9);
    assert!((waits(pacer.ticket(&key(), I, t0).1) - 0.08).abs() < 1e-9);
}

#[test]
fn azure_reporting_less_than_estimated_wins() {
    let pacer = Pacer::new(10.0, 0.8);
    let t0 = Instant::now();
    exchange(&pacer, 100, t0);
    // Someone else spent the bucket: Azure now says 0 left.
    exchange(&pacer, 0, t0);
    // Empty: wait for this request's token and the reserve, at 10/s.
    let expected = (1.0 + RESERVE) / 10.0;
    assert!((waits(pacer.ticket(&key(), I, t0).1) - expected).abs() < 1e-9);
}

#[test]
fn requests_sent_after_an_answer_are_not_counted_twice() {
    let pacer = Pacer::new(25.0, 0.8);
    let t0 = Instant::now();
    exchange(&pacer, 100, t0);
    let (first, _) = pacer.ticket(&key(), I, t0);
    let (second, _) = pacer.ticket(&key(), I, t0);
    let (third, _) = pacer.ticket(&key(), I, t0);
    // The second's answer arrives first: only the third may be unseen by Azure.
    pacer.learn("s", "GET x", second, &reads(50), t0);
    assert_eq!(pacer.state().budgets[&key()].tokens, 49.0);
    // A late answer to the first: the second and third may be unseen, an older figure is
    // still safe.
    pacer.learn("s", "GET x", first, &reads(52), t0);
    assert_eq!(pacer.state().budgets[&key()].tokens, 50.0);
    for seq in [first, second, third] {
        pacer.done(&key(), seq, I, false);
    }
    assert!(pacer.state().budgets[&key()].in_flight.is_empty());
}

#[test]
fn an_unreported_bucket_is_probed_by_a_few_and_a_silent_route_is_not_paced() {
    let pacer = Pacer::new(25.0, 0.8);
    let t0 = Instant::now();
    let (a, first) = pacer.ticket(&key(), I, t0);
    let (_, second) = pacer.ticket(&key(), I, t0);
    let (_, third) = pacer.ticket(&key(), I, t0);
    let (_, fourth) = pacer.ticket(&key(), I, t0);
    assert_eq!(
        (first, second, third, fourth),
        (Go::Now, Go::Now, Go::Now, Go::Later)
    );
    // An answer without any rate-limit header: that route goes unpaced from now on.
    pacer.learn("s", "GET other", a, &Headers::new(), t0);
    assert_eq!(pacer.class_of("GET other", &azure_core::Method::Get), None);
    assert_eq!(
        pacer.class_of("GET x", &azure_core::Method::Get),
        Some(Class::Reads)
    );
}

#[test]
fn a_sleeper_whose_token_a_newer_answer_took_sleeps_on() {
    let pacer = Pacer::new(10.0, 0.8);
    let t0 = Instant::now();
    exchange(&pacer, 1, t0);
    // One token left, for this request: it waits for the reserve to refill.
    let (seq, go) = pacer.ticket(&key(), I, t0);
    assert!((waits(go) - RESERVE / 10.0).abs() < 1e-9);
    // Meanwhile someone else emptied the bucket: Azure says 0 left.
    let (other, _) = pacer.ticket(&("s".into(), Class::Writes), I, t0);
    pacer.learn("s", "GET y", other, &reads(0), t0);
    let later = t0 + Duration::from_secs_f64(RESERVE / 10.0);
    let more = pacer.wake(&key(), seq, I, later).expect("not yet");
    assert!((more.as_secs_f64() - 0.1).abs() < 1e-6, "{more:?}");
    assert_eq!(pacer.wake(&key(), seq, I, later + more), None);
}

#[test]
fn refill_stops_at_capacity() {
    let pacer = Pacer::new(25.0, 0.8);
    let t0 = Instant::now();
    exchange(&pacer, 19, t0);
    // An hour later the bucket holds at most what Azure ever reported, plus one; the
    // reserve stays.
    let later = t0 + Duration::from_secs(3600);
    for _ in 0..(20 - RESERVE as usize) {
        assert_eq!(pacer.ticket(&key(), I, later).1, Go::Now);
    }
    assert!(matches!(pacer.ticket(&key(), I, later).1, Go::After(_)));
}

#[test]
fn a_bucket_first_seen_empty_still_lets_its_waiters_through() {
    let pacer = Pacer::new(10.0, 0.8);
    let t0 = Instant::now();
    exchange(&pacer, 0, t0);
    let tickets: Vec<(u64, Go)> = (0..20).map(|_| pacer.ticket(&key(), I, t0)).collect();
    // Each in turn: the last one's wait is when the bucket has refilled for all of them.
    let mut now = t0;
    for (seq, go) in tickets {
        let Go::After(mut wait) = go else {
            panic!("the bucket is empty")
        };
        loop {
            now = now.max(t0 + wait);
            match pacer.wake(&key(), seq, I, now) {
                None => break,
                Some(more) => wait = now - t0 + more,
            }
        }
        pacer.done(&key(), seq, I, false);
    }
    assert!(now - t0 < Duration::from_secs(3), "took {:?}", now - t0);
}

#[test]
fn a_dropped_waiter_gives_its_token_back_and_leaves_no_count() {
    let pacer = Pacer::new(10.0, 0.8);
    let t0 = Instant::now();
    exchange(&pacer, 0, t0);
    let (seq, first) = pacer.ticket(&key(), I, t0);
    drop(Ticket {
        pacer: &pacer,
        key: key(),
        seq,
        priority: I,
        asleep: true,
    });
    // The next request waits as long as the dropped one would have, not twice as long.
    let (seq2, again) = pacer.ticket(&key(), I, t0);
    assert_eq!(again, first);
    let Go::After(wait) = again else {
        panic!("waits")
    };
    assert_eq!(
        pacer.wake(&key(), seq2, I, t0 + wait),
        None,
        "goes when its token is there"
    );
    drop(Ticket {
        pacer: &pacer,
        key: key(),
        seq: seq2,
        priority: I,
        asleep: false,
    });
    let state = pacer.state();
    let budget = &state.budgets[&key()];
    assert_eq!((budget.in_flight.len(), budget.waiting.len()), (0, 0));
}

#[test]
fn a_route_spends_the_bucket_its_answers_report() {
    let pacer = Pacer::new(25.0, 0.8);
    let post = azure_core::Method::Post;
    let route = "POST effectivenetworksecuritygroups";
    assert_eq!(
        pacer.class_of(route, &post),
        Some(Class::Writes),
        "a POST spends the write bucket before any answer, as ARM counts it"
    );
    let t0 = Instant::now();
    let (seq, _) = pacer.ticket(&("s".into(), Class::Writes), I, t0);
    let mut writes = Headers::new();
    writes.insert("x-ms-ratelimit-remaining-subscription-writes", "150");
    writes.insert(
        "x-ms-ratelimit-remaining-subscription-global-writes",
        "2999",
    );
    pacer.learn("s", route, seq, &writes, t0);
    assert_eq!(pacer.class_of(route, &post), Some(Class::Writes));
    assert_eq!(
        pacer.state().budgets[&("s".to_string(), Class::Writes)].tokens,
        150.0,
        "the smaller of the principal's and the global count"
    );
    assert_eq!(remaining(&writes, Class::Reads), None);

    // A route whose answers report it as reads is paced as reads.
    let get = "GET x";
    let (seq, _) = pacer.ticket(&("s".into(), Class::Reads), I, t0);
    pacer.learn("s", get, seq, &reads(7), t0);
    assert_eq!(
        pacer.class_of(get, &azure_core::Method::Get),
        Some(Class::Reads)
    );
}

#[test]
fn a_resource_types_own_count_replaces_the_subscriptions_bucket_for_its_route() {
    let pacer = Pacer::new(25.0, 0.8);
    let route = "GET vaults";
    let t0 = Instant::now();
    let (seq, _) = pacer.ticket(&("s".into(), Class::Reads), I, t0);
    let mut headers = Headers::new();
    headers.insert(
        "x-ms-ratelimit-remaining-subscription-resource-requests",
        "3",
    );
    pacer.learn("s", route, seq, &headers, t0);
    pacer.done(&("s".into(), Class::Reads), seq, I, false);
    assert_eq!(
        pacer.class_of(route, &azure_core::Method::Get),
        Some(Class::ResourceRequests)
    );
    let key = (
        Class::ResourceRequests.scope("s", route),
        Class::ResourceRequests,
    );
    assert_eq!(
        key.0, "s GET vaults",
        "one bucket per subscription and route"
    );
    // 3 left, 2 kept in reserve: one goes, the next waits for the (slow, assumed) refill.
    assert_eq!(pacer.ticket(&key, I, t0).1, Go::Now);
    let wait = waits(pacer.ticket(&key, I, t0).1);
    assert!(
        (wait - 1.0 / RESOURCE_REQUESTS_REFILL).abs() < 1e-6,
        "{wait}"
    );
}

#[test]
fn compute_policies_are_read_from_their_header() {
    let mut headers = Headers::new();
    headers.insert(
        "x-ms-ratelimit-remaining-resource",
        "Microsoft.Compute/LowCostGetSubscriptionMaximum;23997, Microsoft.Compute/LowCostGetResource;33,garbage,;4",
    );
    assert_eq!(
        provider_remaining(&headers),
        vec![
            (
                "Microsoft.Compute/LowCostGetSubscriptionMaximum".to_string(),
                23997
            ),
            ("Microsoft.Compute/LowCostGetResource".to_string(), 33)
        ]
    );
    assert!((provider_rate("Microsoft.Compute/LowCostGetResource", 36.0) - 0.2).abs() < 1e-9);
    assert!((provider_rate("Microsoft.Compute/HighCostGet30Min", 1800.0) - 1.0).abs() < 1e-9);
}

#[test]
fn a_vm_whose_compute_bucket_is_spent_holds_its_reads_and_no_other_vms() {
    let pacer = Pacer::new(25.0, 0.8);
    let vm = |name: &str| {
        url::Url::parse(&format!(
            "http://h/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}?$expand=instanceView"
        ))
        .unwrap()
    };
    let route = "GET virtualmachines";
    let t0 = Instant::now();
    assert_eq!(
        pacer.provider_hold("s", route, &vm("web-01"), t0),
        None,
        "nothing known yet"
    );
    let mut headers = Headers::new();
    headers.insert(
        "x-ms-ratelimit-remaining-resource",
        "Microsoft.Compute/LowCostGetSubscriptionMaximum;23000,Microsoft.Compute/LowCostGetResource;1",
    );
    pacer.learn_provider("s", route, &vm("web-01"), &headers, t0);
    // web-01 has one token left, the one kept in reserve: wait for the next to refill.
    let wait = pacer
        .provider_hold("s", route, &vm("WEB-01"), t0)
        .expect("web-01's bucket is down to its reserve");
    // Capacity 2 (the most seen plus one), refilled a third a minute: 2/180 a second.
    assert!((wait.as_secs_f64() - 90.0).abs() < 1e-6, "{wait:?}");
    // Another VM has a bucket of its own; the subscription's is shared and spent.
    assert_eq!(pacer.provider_hold("s", route, &vm("web-02"), t0), None);
    let sub = (
        "s".to_string(),
        "Microsoft.Compute/LowCostGetSubscriptionMaximum".to_string(),
    );
    assert_eq!(pacer.state().providers[&sub].tokens, 22999.0);
    // Once it has refilled, web-01 goes again.
    assert_eq!(
        pacer.provider_hold("s", route, &vm("web-01"), t0 + Duration::from_secs(91)),
        None
    );
}

#[test]
fn a_sweep_leaves_people_their_share_and_queues_behind_them() {
    let pacer = Pacer::new(10.0, 0.8);
    let t0 = Instant::now();
    // Azure says 99 left: a bucket of 100, of which a sweep may spend down to 20.
    exchange(&pacer, 99, t0);
    for _ in 0..79 {
        assert_eq!(pacer.ticket(&key(), B, t0).1, Go::Now);
    }
    let (sweep, go) = pacer.ticket(&key(), B, t0);
    assert!(matches!(go, Go::After(_)), "the people's share is left");
    assert_eq!(pacer.stats(B).waiting, 1);
    // A person's requests find the share there, down to the reserve, sweep queued or not.
    for _ in 0..(20 - RESERVE as usize) {
        assert_eq!(pacer.ticket(&key(), I, t0).1, Go::Now);
    }
    // The next one waits for its own token only: one refill at 10/s.
    let (person, go) = pacer.ticket(&key(), I, t0);
    assert!((waits(go) - 0.1).abs() < 1e-9, "{go:?}");
    // When that token is there, the person goes and the sweep, queued earlier, does not.
    let later = t0 + Duration::from_millis(100);
    assert_eq!(pacer.wake(&key(), sweep, B, later).map(|_| ()), Some(()));
    assert_eq!(pacer.wake(&key(), person, I, later), None);
    // The sweep goes once the bucket is back above the people's share.
    let more = pacer
        .wake(&key(), sweep, B, later)
        .expect("below the share");
    assert!(more >= Duration::from_secs(1), "{more:?}");
    assert_eq!(pacer.wake(&key(), sweep, B, later + more), None);
    assert_eq!(pacer.stats(B).waiting, 0);
}

#[test]
fn a_sweep_with_the_whole_share_spends_down_to_the_reserve() {
    let pacer = Pacer::new(10.0, 1.0);
    let t0 = Instant::now();
    exchange(&pacer, 10, t0);
    for _ in 0..(10 - RESERVE as usize) {
        assert_eq!(pacer.ticket(&key(), B, t0).1, Go::Now);
    }
    assert!(matches!(pacer.ticket(&key(), B, t0).1, Go::After(_)));
}
