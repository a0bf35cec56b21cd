//! Section `replicas`: three `rdp-doctor serve` processes (release) on one PostgreSQL database,
//! as the Kubernetes manifests deploy them.
//!
//! - **Burst.** 1,000 signed `/rdp check` interactions sent at the same instant, spread over the
//!   three replicas as a load balancer spreads them: the time from sending each request to its
//!   HTTP response (the deferral), and whether every one was deferred and ended in a report.
//!   Discord keeps its connections to an endpoint open, so the client's connections are opened
//!   (by a burst of PINGs) before the timed burst. ARM's buckets are off in this part: it
//!   measures the endpoint, and 1,000 checks' ~4,000 reads would otherwise spread the reports
//!   over minutes (the `sweep` and `fair` sections measure the buckets). The load generator has
//!   a runtime of its own, signs every request before the burst, and during the burst this
//!   process's other threads (the simulator's and the fake Discord's, which in a deployment are
//!   Azure's and Discord's machines) run at nice +10 (`StepAside`), as the replicas' own work
//!   after a deferral does: on this 2-core machine they would otherwise take the CPU the
//!   measured endpoints need.
//! - **Takeover.** A start that Azure takes 40 s to finish, followed by one replica with the
//!   default lease; that replica is SIGKILLed once Azure accepted the start, and the time until
//!   another replica holds the operation is measured, then the outcome posted (once).

use super::support::discord::signed::{payloads, Answer, Endpoint};
use super::support::discord::{routes, User, CHANNEL_ID};
use super::support::fleet::Fleet;
use super::{ms, ms_or_never, percentile, wait_for_reports, Row, BENCH_ROLE};
use rdp_doctor::sim::{SimOptions, World};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The name of the load generator's threads, which keep their priority during the burst.
const GENERATOR: &str = "generator";

/// This process's threads but the load generator's, at nice +10 while it lives (the value
/// `rdp-doctor serve` gives its own work threads); dropped, each gets its priority back where
/// the process may raise it again (lowering needs no privilege, raising does: without it they
/// stay lowered, and a note says so). Threads started meanwhile keep their priority.
struct StepAside(Vec<(libc::id_t, i32)>);

impl StepAside {
    fn now() -> StepAside {
        let mut lowered = Vec::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return StepAside(lowered);
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<libc::id_t>().ok())
            else {
                continue;
            };
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if name.trim_end().starts_with(GENERATOR) {
                continue;
            }
            // SAFETY: getpriority and setpriority take plain integers and touch no memory of ours.
            let was = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, (was + 10).min(19)) } == 0 {
                lowered.push((tid, was));
            }
        }
        StepAside(lowered)
    }
}

impl Drop for StepAside {
    fn drop(&mut self) {
        let mut kept = 0;
        for &(tid, was) in &self.0 {
            // SAFETY: as above; a thread that ended since answers ESRCH, which is fine.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, was) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
            {
                kept += 1;
            }
        }
        if kept > 0 {
            eprintln!("note: {kept} threads of the benchmark stay at a lower priority (raising it back needs CAP_SYS_NICE)");
        }
    }
}

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
        .thread_name(GENERATOR)
        .enable_all()
        .build()?;
    let endpoints: Arc<Vec<Endpoint>> = Arc::new(
        fleet
            .replicas
            .iter()
            .map(|r| Endpoint::new(r.endpoint.url.clone(), fleet.signer.clone()))
            .collect(),
    );

    // Open the connections first, as Discord keeps its own open: BURST of them, spread over the
    // replicas, each answering a PING.
    let ping =
        br#"{"id":"1","application_id":"1180000000000000001","type":1,"token":"t","version":1}"#;
    let addresses: Vec<String> = fleet
        .replicas
        .iter()
        .map(|r| r.endpoint.url.trim_start_matches("http://").to_string())
        .collect();
    let pinged = {
        let (addresses, endpoints) = (addresses.clone(), endpoints.clone());
        generator.spawn(async move {
            let opened = (0..BURST).map(|n| {
                let (address, endpoint) = (&addresses[n % REPLICAS], &endpoints[n % REPLICAS]);
                async move {
                    let mut connection = Raw::connect(address).await?;
                    let body = ping.to_vec();
                    let request = Raw::request(address, &endpoint.signed_headers(&body), &body);
                    let (status, _, _) = connection.exchange(&request).await?;
                    anyhow::ensure!(status == 200, "a replica refused a PING: {status}");
                    Ok(connection)
                }
            });
            futures::future::join_all(opened).await
        })
    };
    let mut connections = Vec::with_capacity(BURST);
    for connection in pinged.await? {
        connections.push(connection?);
    }

    let alice = User::new(4001, "alice", &[BENCH_ROLE]);
    let vm = serde_json::json!([{"name": "vm", "type": 3, "value": "web-01"}]);
    let burst = fleet
        .discord
        .slash_burst(&alice, "rdp", &["check"], vm, BURST);
    let mut payloads = payloads(&fleet.discord);
    let start = Arc::new(tokio::sync::Barrier::new(BURST + 1));
    let tasks: Vec<_> = burst
        .iter()
        .zip(connections)
        .enumerate()
        .map(|(n, (i, mut connection))| {
            let payload = payloads.remove(&i.id.to_string()).expect("the payload");
            // Signed and written out before the burst: Discord does that on its own machines.
            let (headers, body) = endpoints[n % REPLICAS].signed(&payload);
            let request = Raw::request(&addresses[n % REPLICAS], &headers, &body);
            fleet.front.hold(&i.token);
            let (start, i) = (start.clone(), i.clone());
            generator.spawn(async move {
                start.wait().await;
                let answer = match connection.exchange(&request).await {
                    Ok((status, body, took)) => Answer { status, body, took },
                    Err(e) => Answer {
                        status: 0,
                        body: format!("{e:#}"),
                        took: Duration::ZERO,
                    },
                };
                // The connection stays open (as Discord's do) until the burst is over: closed
                // here, each close would cost the replicas a shutdown during the burst.
                (n, i, answer, connection)
            })
        })
        .collect();
    // For the burst, the simulator and the fake Discord (Azure's and Discord's side, on their
    // own machines in a deployment) yield the CPU to the replicas and the load generator, as the
    // replicas' own work after a deferral does to their endpoint.
    let aside = StepAside::now();
    let sent = Instant::now();
    start.wait().await;
    let mut answers = Vec::with_capacity(BURST);
    let mut open = Vec::with_capacity(BURST);
    for task in tasks {
        let (n, i, answer, connection) = task.await?;
        answers.push((n, i, answer));
        open.push(connection);
    }
    let all_answered = sent.elapsed();
    drop(aside);
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
    let (within, counted) = acknowledged_within(&fleet).await;
    drop(open);
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
    drop_database(&fleet.database).await;
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
            "replicas: deferrals within 25 / 50 / 100 ms by the replicas' clocks",
            format!(
                "{} / {} / {} of {counted} (from the request read to the response written)",
                within[0], within[1], within[2]
            ),
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

/// From the replicas' own `/metrics`: how many endpoint acknowledgements took at most 25, 50
/// and 100 ms (histogram buckets `le="0.025"`, `"0.05"`, `"0.1"`), and how many there were.
async fn acknowledged_within(fleet: &Fleet) -> ([u64; 3], u64) {
    const BUCKETS: [&str; 3] = ["le=\"0.025\"", "le=\"0.05\"", "le=\"0.1\""];
    let (mut within, mut counted) = ([0; 3], 0);
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
            if line.starts_with("rdp_doctor_acknowledgement_seconds_bucket") {
                if let Some(at) = BUCKETS.iter().position(|b| line.contains(b)) {
                    within[at] += value();
                }
            } else if line.starts_with("rdp_doctor_acknowledgement_seconds_count") {
                counted += value();
            }
        }
    }
    (within, counted)
}

/// Discord's side of one kept-open connection, as cheap as a client can be (the load generator
/// shares the machine with what it measures): requests written out beforehand, answers read
/// with no more parsing than HTTP/1.1 needs.
struct Raw {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Raw {
    async fn connect(address: &str) -> anyhow::Result<Raw> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Raw {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// `POST /interactions` with `headers` and `body`, as bytes on the wire.
    fn request(host: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
        let mut head = format!("POST /interactions HTTP/1.1\r\nhost: {host}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        request
    }

    /// Write `request`, read its answer: the status, the body, and the time from the first
    /// byte written to the last byte read.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(u16, String, Duration)> {
        let sent = Instant::now();
        self.stream.write_all(request).await?;
        self.buffer.clear();
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status line: {head}"))?;
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body = match length {
            Some(length) => {
                while self.buffer.len() < head_end + length {
                    self.fill().await?;
                }
                self.buffer[head_end..head_end + length].to_vec()
            }
            // Chunked (a body streamed out): chunks until the empty one.
            None => {
                let mut body = Vec::new();
                let mut at = head_end;
                loop {
                    let line_end = loop {
                        if let Some(end) = find(&self.buffer[at..], b"\r\n") {
                            break at + end;
                        }
                        self.fill().await?;
                    };
                    let size = usize::from_str_radix(
                        String::from_utf8_lossy(&self.buffer[at..line_end]).trim(),
                        16,
                    )?;
                    let chunk = line_end + 2;
                    while self.buffer.len() < chunk + size + 2 {
                        self.fill().await?;
                    }
                    if size == 0 {
                        break;
                    }
                    body.extend_from_slice(&self.buffer[chunk..chunk + size]);
                    at = chunk + size + 2;
                }
                body
            }
        };
        Ok((status, String::from_utf8(body)?, sent.elapsed()))
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the replica closed the connection");
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The fleet's database goes with the section (`.ci/test` drops the tests' own; nothing drops
/// a benchmark's).
async fn drop_database(url: &str) {
    if let Err(e) = rdp_doctor::store::testing::drop_postgres_database(url).await {
        eprintln!("the fleet's database is left on the server: {e:#}");
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    drop_database(&fleet.database).await;
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
