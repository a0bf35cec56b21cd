//! Section `replicas`: three `rdp-doctor serve` processes (release) on one PostgreSQL database,
//! as the Kubernetes manifests deploy them.
//!
//! - **Burst.** 1,000 signed `/rdp check` interactions sent at the same instant, spread over the
//!   three replicas as a load balancer spreads them: the time from sending each request to its
//!   HTTP response (the deferral), and whether every one was deferred and ended in a report.
//!   Discord keeps its connections to an endpoint open, so the client's connections are opened
//!   (by a burst of PINGs) before the timed burst. ARM's buckets are off in this part: it
//!   measures the endpoint, and 1,000 checks' ~4,000 reads would otherwise spread the reports
//!   over minutes (the `sweep` and `fair` sections measure the buckets).
//! - **Takeover.** A start that Azure takes 40 s to finish, followed by one replica with the
//!   default lease; that replica is SIGKILLed once Azure accepted the start, and the time until
//!   another replica holds the operation is measured, then the outcome posted (once).

use super::support::discord::signed::{payloads, Endpoint};
use super::support::discord::{routes, User, CHANNEL_ID};
use super::support::fleet::Fleet;
use super::{ms, ms_or_never, percentile, wait_for_reports, Row, BENCH_ROLE};
use rdp_doctor::sim::{SimOptions, World};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REPLICAS: usize = 3;
const BURST: usize = 1000;
const ACK_TARGET: Duration = Duration::from_millis(100);
const TAKEOVER_TARGET: Duration = Duration::from_secs(30);
/// How long the start runs in Azure: this many polls, a second apart.
const START_POLLS: u32 = 40;

/// The policy of the fleet: its channel, one role that operates everything, no per-person
/// limit (one person sends the burst); the lease is the default.
fn config() -> String {
    format!(
        "[limits]\ncommands_per_minute = 0\n[policy]\nchannels = [\"{CHANNEL_ID}\"]\n[[policy.grant]]\ndiscord_role_id = {BENCH_ROLE}\nlevel = \"operate\"\nscope = \"*\"\n"
    )
}

pub async fn run() -> anyhow::Result<Vec<Row>> {
    if std::env::var_os(rdp_doctor::store::testing::POSTGRES_URL_VAR).is_none() {
        anyhow::bail!(
            "needs PostgreSQL: set {} to a URL whose user may create databases (as .ci/test does)",
            rdp_doctor::store::testing::POSTGRES_URL_VAR
        );
    }
    let mut rows = burst().await?;
    rows.extend(takeover().await?);
    Ok(rows)
}

async fn burst() -> anyhow::Result<Vec<Row>> {
    let options = SimOptions {
        latency: super::ARM_LATENCY,
        bucket: None,
        write_bucket: None,
        compute_get: None,
        resource_type_limit: None,
        ..SimOptions::fast()
    };
    let fleet =
        Arc::new(Fleet::start(World::new().vm("web-01"), options, &config(), REPLICAS).await);

    // The load generator (Discord's side) runs on a runtime of its own: the simulator and the
    // fake Discord share this process, and their work after the deferrals must not delay the
    // reading of the answers. Its clients and their connections belong to that runtime.
    let generator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let endpoints: Arc<Vec<Endpoint>> = Arc::new(
        fleet
            .replicas
            .iter()
            .map(|r| Endpoint::new(r.endpoint.url.clone(), fleet.signer.clone()))
            .collect(),
    );

    // Open the connections first, as Discord's are: a burst of PINGs to every replica.
    let ping =
        br#"{"id":"1","application_id":"1180000000000000001","type":1,"token":"t","version":1}"#;
    let warm = endpoints.clone();
    let ponged = generator
        .spawn(async move {
            let pings = (0..BURST).map(|n| {
                let endpoint = &warm[n % REPLICAS];
                async move { endpoint.post_signed(ping.to_vec()).await.status == 200 }
            });
            futures::future::join_all(pings).await
        })
        .await?;
    anyhow::ensure!(ponged.iter().all(|ok| *ok), "a replica refused a PING");

    let alice = User::new(4001, "alice", &[BENCH_ROLE]);
    let vm = serde_json::json!([{"name": "vm", "type": 3, "value": "web-01"}]);
    let burst = fleet
        .discord
        .slash_burst(&alice, "rdp", &["check"], vm, BURST);
    let mut payloads = payloads(&fleet.discord);
    let start = Arc::new(tokio::sync::Barrier::new(BURST + 1));
    let tasks: Vec<_> = burst
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let payload = payloads.remove(&i.id.to_string()).expect("the payload");
            let (fleet, endpoints, start, i) =
                (fleet.clone(), endpoints.clone(), start.clone(), i.clone());
            generator.spawn(async move {
                start.wait().await;
                let answer = endpoints[n % REPLICAS]
                    .send_payload(&fleet.front, &i, &payload)
                    .await;
                (n, i, answer)
            })
        })
        .collect();
    let sent = Instant::now();
    start.wait().await;
    let mut answers = Vec::with_capacity(BURST);
    for task in tasks {
        answers.push(task.await?);
    }
    let all_answered = sent.elapsed();
    // Then hand the answers to the fake, as Discord applies them (on its machines, not these:
    // after the burst, so its schema checks do not take the replicas' CPU during it).
    let answers = Arc::new(answers);
    let applied = {
        let (fleet, endpoints, answers) = (fleet.clone(), endpoints.clone(), answers.clone());
        generator.spawn(async move {
            let applies = answers.iter().map(|(n, i, answer)| {
                endpoints[n % REPLICAS].apply(&fleet.discord, &fleet.front, i, answer)
            });
            futures::future::join_all(applies).await;
        })
    };
    applied.await?;
    let waits: Vec<Option<Duration>> = answers
        .iter()
        .map(|(_, _, answer)| {
            let deferred = answer.status == 200
                && serde_json::from_str::<serde_json::Value>(&answer.body)
                    .is_ok_and(|b| b["type"] == 5);
            deferred.then_some(answer.took)
        })
        .collect();
    let (done, finished_at, finals) = wait_for_reports(&fleet.discord, &burst).await;
    let (within, counted) = acknowledged_within_100ms(&fleet).await;
    generator.shutdown_background();

    let mut waits = waits;
    waits.sort_by_key(|w| w.unwrap_or(Duration::MAX));
    let p50 = percentile(&waits, 50.0);
    let p99 = percentile(&waits, 99.0);
    let max = waits.last().copied().flatten();
    let deferred = waits.iter().filter(|w| w.is_some()).count();
    let reports = finals.iter().filter(|t| t.starts_with("web-01: ")).count();
    let violations = fleet.discord.schema_violations();
    for v in &violations {
        eprintln!("schema violation: {v}");
    }
    Ok(vec![
        Row::info(
            format!("replicas: deferral p50 ({BURST} signed at once, {REPLICAS} replicas)"),
            ms_or_never(p50),
        ),
        Row::new(
            format!("replicas: deferral p99 ({BURST} signed at once, {REPLICAS} replicas)"),
            ms_or_never(p99),
            "<= 100 ms",
            p99.is_some_and(|d| d <= ACK_TARGET),
        ),
        Row::info("replicas: deferral max", ms_or_never(max)),
        Row::info("replicas: burst -> last deferral", ms(all_answered)),
        Row::info(
            "replicas: deferrals within 100 ms by the replicas' clocks",
            format!("{within} of {counted} (from the request read to the response written)"),
        ),
        Row::new(
            "replicas: interactions deferred, none lost",
            format!(
                "{deferred} of {BURST} deferred; {reports} of {BURST} ended in a report ({})",
                match finished_at {
                    Some(at) => format!("last {} after the burst", ms(at.duration_since(sent))),
                    None => "none finished".to_string(),
                }
            ),
            &format!("all {BURST}, all {BURST}"),
            deferred == BURST && reports == BURST && done == BURST,
        ),
        Row::new(
            "replicas: request bodies valid against Discord's OpenAPI",
            format!("{} violations", violations.len()),
            "0 violations",
            violations.is_empty(),
        ),
    ])
}

/// From the replicas' own `/metrics`: how many endpoint acknowledgements took at most 100 ms
/// (histogram bucket `le="0.1"`), and how many there were.
async fn acknowledged_within_100ms(fleet: &Fleet) -> (u64, u64) {
    let (mut within, mut counted) = (0, 0);
    for replica in &fleet.replicas {
        let (_, text) = replica.endpoint.get("/metrics").await;
        for line in text.lines() {
            let value = || {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0) as u64
            };
            if !line.contains("transport=\"endpoint\"") {
                continue;
            }
            if line.starts_with("rdp_doctor_acknowledgement_seconds_bucket")
                && line.contains("le=\"0.1\"")
            {
                within += value();
            } else if line.starts_with("rdp_doctor_acknowledgement_seconds_count") {
                counted += value();
            }
        }
    }
    (within, counted)
}

async fn takeover() -> anyhow::Result<Vec<Row>> {
    let options = SimOptions {
        lro_polls: START_POLLS,
        retry_after_secs: 1,
        ..SimOptions::fast()
    };
    let mut fleet = Fleet::start(
        World::new().vm("sql-01").stopped(),
        options,
        &config(),
        REPLICAS,
    )
    .await;
    let alice = User::new(4001, "alice", &[BENCH_ROLE]);
    let (prompt, confirm) = fleet
        .prompt(&fleet.replicas[0], &alice, "start", "sql-01")
        .await;
    let click = fleet.discord.component(&alice, prompt, &confirm, &[]).await;
    let answer = fleet.replicas[0]
        .endpoint
        .deliver(&fleet.discord, &fleet.front, &click)
        .await;
    anyhow::ensure!(
        answer.status == 200,
        "the Confirm was refused: {}",
        answer.body
    );

    // Once Azure accepted the start and replica 0 stored its URL, SIGKILL replica 0.
    let store = fleet.store().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let op = loop {
        let running = store.running_operations().await?;
        if let Some(op) = running.into_iter().find(|o| o.azure_url.is_some()) {
            break op;
        }
        anyhow::ensure!(Instant::now() < deadline, "the start never reached Azure");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first_owner = op.owner.clone();
    fleet.replicas[0].process.kill().await;
    let killed = Instant::now();

    let deadline = killed + TAKEOVER_TARGET * 3;
    let took = loop {
        let running = store.running_operations().await?;
        let owner = running
            .iter()
            .find(|o| o.id == op.id)
            .map(|o| o.owner.clone());
        match owner {
            Some(owner) if owner != first_owner => break Some(killed.elapsed()),
            // Finished before anyone took it over: the start was too short to measure.
            None => anyhow::bail!("the start ended before a takeover"),
            _ => {}
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The outcome, posted in the channel once the start ends.
    let posted = fleet
        .discord
        // Azure's start, then the re-check's effective-rules operation (as slow here).
        .next_channel_message(Duration::from_secs(2 * u64::from(START_POLLS) + 30))
        .await;
    let outcomes = fleet
        .discord
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.route == routes::CHANNEL_MESSAGES)
        .filter(|r| r.body().to_string().contains("start of sql-01"))
        .count();
    let starts = fleet.posts("/start");
    if outcomes != 1 {
        for (n, replica) in fleet.replicas.iter().enumerate().skip(1) {
            eprintln!("replica {n}'s log:\n{}", replica.log());
        }
        for e in fleet.sim.stats().log.iter().filter(|e| {
            !e.path
                .contains("/providers/Microsoft.Network/networkInterfaces")
        }) {
            eprintln!(
                "sim: {:>8} ms {} {} {}",
                e.started_us / 1000,
                e.method,
                e.status,
                e.path
            );
        }
    }
    store.close().await;
    let lease = rdp_doctor::runbook::operate::DEFAULT_LEASE;
    Ok(vec![
        Row::new(
            format!(
                "replicas: takeover after SIGKILL (lease {} s, the default)",
                lease.as_secs()
            ),
            ms_or_never(took),
            "<= 30 s",
            took.is_some_and(|t| t <= TAKEOVER_TARGET),
        ),
        Row::new(
            "replicas: outcome posted after the takeover",
            format!(
                "{outcomes} channel message(s){}; {starts} start sent to Azure",
                if posted.is_ok() {
                    ""
                } else {
                    " (none in time)"
                }
            ),
            "1 message, 1 start",
            outcomes == 1 && starts == 1,
        ),
    ])
}
