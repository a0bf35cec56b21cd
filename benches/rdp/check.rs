//! Section `check`: one check of a healthy VM at the critical path.
//!
//! The simulator adds a fixed latency L to every request. A check of a healthy VM whose name the
//! bot's VM directory already knows (as a running bot's does) is timed, then the very same
//! requests (from the simulator's log) are sent again one after another. The critical path is
//! set by Azure's API, not by us: everything a check reads can be asked at once given the NIC id
//! from the VM list, except the effective-NSG and effective-route results (their Locations come
//! with the POSTs' answers) and the boot-diagnostics blobs (their URLs come with that POST's
//! answer): 2 requests deep.

use super::{ms, Row};
use rdp_doctor::azure::{VmDirectory, VmQuery};
use rdp_doctor::runbook::{self, catalog::Catalog, CheckOptions, Verdict};
use rdp_doctor::sim::{SimOptions, Simulator, World};
use std::time::{Duration, Instant};

const L: Duration = Duration::from_millis(100);
/// Requests that must wait for another's answer, in a chain: POST → its result.
const CRITICAL_PATH_REQUESTS: u32 = 2;
const RUNS: usize = 7;
/// A healthy VM's requests: the VM with its instance view, its Resource Health, its NIC, boot
/// diagnostics, the effective security rules' and effective routes' long-running POSTs with one
/// poll each, and the Virtual Network Manager admin rules of its virtual network (a synchronous
/// POST, weighed before the NSGs since the gates came in), as `tests/it/runbook.rs` asserts.
const HEALTHY_REQUESTS: u64 = 9;

pub(super) async fn run() -> anyhow::Result<Vec<Row>> {
    let options = SimOptions {
        latency: L,
        lro_polls: 0,
        ..SimOptions::fast()
    };
    let (sim, arm, secret) = super::simulator_and_arm(World::new().vm("web-01"), options).await?;
    let catalog = Catalog::builtin();
    let subscriptions = vec![rdp_doctor::sim::DEFAULT_SUBSCRIPTION.to_string()];
    let directory = VmDirectory::new();
    let query = VmQuery::parse("web-01")?;

    // As a running bot: signed in, the VM list loaded.
    let summary = directory.resolve(&arm, &query, &subscriptions).await?;
    runbook::check(&arm, &catalog, summary, &CheckOptions::default(), &|_| {}).await?;

    let mut times = Vec::new();
    let mut requests = Vec::new();
    let mut last_range = 0..0;
    for _ in 0..RUNS {
        let from = sim.stats().log.len();
        let before = arm.request_count();
        let started = Instant::now();
        let summary = directory.resolve(&arm, &query, &subscriptions).await?;
        let report =
            runbook::check(&arm, &catalog, summary, &CheckOptions::default(), &|_| {}).await?;
        times.push(started.elapsed());
        anyhow::ensure!(report.verdict == Verdict::Ok, "the healthy VM is not ok");
        requests.push(arm.request_count() - before);
        last_range = from..sim.stats().log.len();
    }
    times.sort();
    let median = times[times.len() / 2];
    let log = sim.stats().log;
    let entries = &log[last_range];
    let depth = observed_depth(entries);
    let sequential = replay(&sim, &secret, entries).await?;
    let critical = L * CRITICAL_PATH_REQUESTS;
    let arm_requests = requests.iter().copied().max().unwrap_or(0);
    let ratio = sequential.as_secs_f64() / median.as_secs_f64();

    Ok(vec![
        Row::info(
            "check: critical path (2 requests deep × L)",
            format!("{} (L = {})", ms(critical), ms(L)),
        ),
        Row::new(
            "check: healthy VM, median of 7",
            ms(median),
            &format!("<= {} (1.15 × path)", ms(critical.mul_f64(1.15))),
            median <= critical.mul_f64(1.15),
        ),
        Row::info(
            "check: the same requests one by one",
            format!("{} ({} requests)", ms(sequential), entries.len()),
        ),
        Row::new(
            "check: one-by-one ÷ concurrent",
            format!("{ratio:.2}×"),
            ">= 2.5×",
            ratio >= 2.5,
        ),
        Row::new(
            "check: ARM requests, healthy VM",
            arm_requests.to_string(),
            &format!("<= {HEALTHY_REQUESTS}"),
            arm_requests <= HEALTHY_REQUESTS,
        ),
        Row::info(
            "check: requests waiting on another (observed)",
            format!("{depth} deep"),
        ),
    ])
}

/// How many requests deep the check went: a request is one deeper than the deepest one that
/// had answered before it started.
fn observed_depth(entries: &[rdp_doctor::sim::RequestLogEntry]) -> u32 {
    let mut sorted: Vec<&rdp_doctor::sim::RequestLogEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.started_us);
    let mut depths: Vec<(u64, u32)> = Vec::new();
    for e in sorted {
        let before = depths
            .iter()
            .filter(|(finished, _)| *finished <= e.started_us)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(0);
        depths.push((e.finished_us, before + 1));
    }
    depths.iter().map(|(_, d)| *d).max().unwrap_or(0)
}

/// Send the logged requests again, one after another, and time them all.
async fn replay(
    sim: &Simulator,
    secret: &str,
    entries: &[rdp_doctor::sim::RequestLogEntry],
) -> anyhow::Result<Duration> {
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.url(),
            super::support::TENANT
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", super::support::CLIENT),
            ("client_secret", secret),
            ("scope", &format!("{}/.default", sim.url())),
        ])
        .send()
        .await?
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b))??;
    let bearer = format!(
        "Bearer {}",
        token["access_token"].as_str().unwrap_or_default()
    );
    let started = Instant::now();
    for e in entries {
        let method = reqwest::Method::from_bytes(e.method.as_bytes())?;
        let response = http
            .request(method, format!("{}{}", sim.url(), e.path))
            .header("Authorization", &bearer)
            .header("Content-Length", "0")
            .send()
            .await?;
        let _ = response.bytes().await?;
    }
    Ok(started.elapsed())
}
