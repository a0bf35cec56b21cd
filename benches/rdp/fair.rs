//! Section `fair`: a person's check while a 1,000-VM sweep has drained ARM's token bucket,
//! against the same check idle.
//!
//! One process serves both, as the bot does: one `Arm`, the sweep through `runbook::sweep` (its
//! requests are background ones: at most 80% of the bucket, behind people's), the check through
//! the VM directory as in section `check`. The simulator adds L = 100 ms to every request and
//! throttles like ARM (burst 250, refill 25 a second, 429 + `Retry-After` beyond). The checks
//! during the sweep start once the sweep's requests are queued for tokens; the sweep is
//! cancelled after the last one (it would take about 80 s to finish).

use super::{ms, Row};
use rdp_doctor::azure::{Arm, SweepScope, VmDirectory, VmQuery};
use rdp_doctor::runbook::sweep::{self, SweepOptions};
use rdp_doctor::runbook::{self, catalog::Catalog, CheckOptions, Verdict};
use rdp_doctor::sim::{BucketOptions, SimOptions, World};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const VMS: usize = 1000;
const L: Duration = Duration::from_millis(100);
const RUNS: usize = 7;
const TARGET: f64 = 1.3;

struct Checks {
    median: Duration,
    /// The person's requests that waited for a token.
    paced: u64,
}

/// `RUNS` checks of web-01 one after another, resolved from the directory.
async fn checks(
    arm: &Arm,
    catalog: &Catalog,
    directory: &VmDirectory,
    subscriptions: &[String],
) -> anyhow::Result<Checks> {
    let query = VmQuery::parse("web-01")?;
    let before = arm.pacing().paced;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let summary = directory.resolve(arm, &query, subscriptions).await?;
        let report =
            runbook::check(arm, catalog, summary, &CheckOptions::default(), &|_| {}).await?;
        times.push(started.elapsed());
        anyhow::ensure!(
            report.verdict == Verdict::Ok,
            "the healthy VM is not ok: {:?}",
            report.findings
        );
    }
    times.sort();
    Ok(Checks {
        median: times[times.len() / 2],
        paced: arm.pacing().paced - before,
    })
}

pub(super) async fn run() -> anyhow::Result<Vec<Row>> {
    let world = World::new()
        .page_size(100)
        .vm("web-01")
        .fleet("rg-fleet", "vm", VMS);
    let options = SimOptions {
        latency: L,
        lro_polls: 0,
        bucket: Some(BucketOptions {
            capacity: 250,
            refill_per_sec: 25.0,
        }),
        ..SimOptions::fast()
    };
    let (sim, arm, _) = super::simulator_and_arm(world, options).await?;
    let catalog = Catalog::builtin();
    let subscriptions = vec![rdp_doctor::sim::DEFAULT_SUBSCRIPTION.to_string()];
    let directory = VmDirectory::new();

    // As a running bot: signed in, the VM list loaded; then let the bucket refill.
    checks(&arm, &catalog, &directory, &subscriptions).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = checks(&arm, &catalog, &directory, &subscriptions).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let sweeps = arm.for_sweep();
    let (on_event, drained) = super::support::when_a_sweep_queues(&arm);
    let cancel = CancellationToken::new();
    let scope = SweepScope {
        subscription_id: rdp_doctor::sim::DEFAULT_SUBSCRIPTION.to_string(),
        resource_group: Some("rg-fleet".to_string()),
    };
    let sweep_options = SweepOptions::default();
    let sweep = sweep::sweep(&arm, &catalog, &scope, &sweep_options, &cancel, &on_event);
    let during = async {
        let result = async {
            drained
                .await
                .map_err(|_| anyhow::anyhow!("the sweep ended before its requests queued"))?;
            let queued = sweeps.pacing().waiting;
            let requests = sim.stats().requests;
            let person = arm.request_count();
            let started = Instant::now();
            let during = checks(&arm, &catalog, &directory, &subscriptions).await?;
            let window = started.elapsed();
            let swept = (sim.stats().requests - requests) - (arm.request_count() - person);
            Ok::<_, anyhow::Error>((during, queued, swept, window))
        }
        .await;
        cancel.cancel();
        result
    };
    let (swept, during) = tokio::join!(sweep, during);
    let (during, queued, sweep_requests, window) = during?;
    let report = swept?;
    let stats = sim.stats();
    let ratio = during.median.as_secs_f64() / idle.median.as_secs_f64();

    Ok(vec![
        Row::info(
            "fair: person's check, idle, median of 7",
            format!("{} (L = {})", ms(idle.median), ms(L)),
        ),
        Row::new(
            "fair: the same check during a 1,000-VM sweep",
            format!(
                "{} ({ratio:.2}× idle; {} of the person's requests waited for a token)",
                ms(during.median),
                during.paced
            ),
            &format!("<= {TARGET}× idle"),
            ratio <= TARGET,
        ),
        Row::info(
            "fair: the sweep meanwhile",
            format!(
                "{queued} of its requests queued when the checks began; {sweep_requests} sent during them ({:.1}/s; ARM refills 25 reads and 10 writes a second); {} VMs checked before the cancel",
                sweep_requests as f64 / window.as_secs_f64().max(f64::EPSILON),
                report.vms.len()
            ),
        ),
        Row::info(
            "fair: 429s answered",
            format!("{} (all retried)", stats.throttled),
        ),
    ])
}
