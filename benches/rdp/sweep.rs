//! Section `sweep`: 500 VMs of one resource group under ARM's token bucket (burst 250, refill
//! 25 a second, 429 + `Retry-After` beyond it), swept by the release binary as a person would
//! (`rdp-doctor sweep -g rg-fleet --json`), its memory sampled while it runs.
//!
//! The floor is what the bucket allows for the requests the sweep made: the first 250 at once,
//! then 25 a second.

use super::{mib, sample_peak, Row};
use rdp_doctor::sim::{BucketOptions, SimOptions, Simulator, World};
use std::time::{Duration, Instant};

const VMS: usize = 500;
const BURST: f64 = 250.0;
const REFILL: f64 = 25.0;
const L: Duration = Duration::from_millis(50);

pub(super) async fn section() -> Vec<Row> {
    match run().await {
        Ok(rows) => rows,
        Err(e) => vec![Row::failed("sweep", e)],
    }
}

fn fleet() -> World {
    World::new()
        .page_size(100)
        .fleet("rg-fleet", "vm", VMS)
        .select("vm-007")
        .deallocated()
        .select("vm-123")
        .agent_not_ready("VM Agent is unresponsive.")
        .select("vm-321")
        .no_public_ip()
}

async fn run() -> anyhow::Result<Vec<Row>> {
    let world = fleet();
    let secret = world.client_secret.clone();
    let options = SimOptions {
        latency: L,
        lro_polls: 0,
        bucket: Some(BucketOptions {
            capacity: BURST as u32,
            refill_per_sec: REFILL,
        }),
        ..SimOptions::default()
    };
    let sim = Simulator::start("127.0.0.1:0", world, options).await?;
    let dir = std::env::temp_dir().join(format!("rdp-doctor-bench-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"))
        .args(["sweep", "--resource-group", "rg-fleet", "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AZURE_RESOURCE_MANAGER_URL", sim.url())
        .env("AZURE_AUTHORITY_HOST", sim.url())
        .env("AZURE_TENANT_ID", super::support::TENANT)
        .env("AZURE_CLIENT_ID", super::support::CLIENT)
        .env("AZURE_CLIENT_SECRET", &secret)
        .env(
            "AZURE_SUBSCRIPTION_ID",
            rdp_doctor::sim::DEFAULT_SUBSCRIPTION,
        )
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    let peak = sample_peak(pid);
    let out = child.wait_with_output().await?;
    let wall = started.elapsed();
    let peak = peak.await.ok().flatten();
    let _ = std::fs::remove_dir_all(&dir);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "sweep printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;

    let stats = sim.stats();
    let answered = stats.requests - stats.throttled;
    let floor = Duration::from_secs_f64(((answered as f64 - BURST) / REFILL).max(0.0));
    let elapsed = Duration::from_millis(report["stats"]["elapsed_ms"].as_u64().unwrap_or(0));
    let rows = report["vms"].as_array().cloned().unwrap_or_default();
    let unknown = rows.iter().filter(|r| r["verdict"] == "unknown").count();
    let problems = rows.iter().filter(|r| r["verdict"] == "problems").count();
    let checked = rows.len();
    let ratio = elapsed.as_secs_f64() / floor.as_secs_f64().max(f64::EPSILON);
    let hwm = peak.map(|(_, hwm)| hwm).unwrap_or(0);

    Ok(vec![
        Row::info(
            "sweep: ARM requests (lists + per VM)",
            format!(
                "{} ({} for the lists, {:.2} per VM)",
                answered,
                report["stats"]["list_requests"],
                answered as f64 / VMS as f64
            ),
        ),
        Row::info(
            "sweep: floor the bucket allows",
            format!("{:.1} s (({answered} - 250) / 25)", floor.as_secs_f64()),
        ),
        Row::new(
            "sweep: 500 VMs, time",
            format!(
                "{:.1} s ({ratio:.3}× floor; process {:.1} s)",
                elapsed.as_secs_f64(),
                wall.as_secs_f64()
            ),
            "<= 1.15× floor",
            ratio <= 1.15,
        ),
        Row::new(
            "sweep: VMs checked, none failed",
            format!("{checked} checked, {unknown} failed, {problems} with problems"),
            "500, 0 failed",
            checked == VMS && unknown == 0,
        ),
        Row::new(
            "sweep: 429s (all retried)",
            format!(
                "{} answered 429, {} retried by rdp-doctor",
                stats.throttled, report["stats"]["throttled"]
            ),
            "none unretried",
            unknown == 0 && report["stats"]["throttled"].as_u64() == Some(stats.throttled),
        ),
        Row::info(
            "sweep: paced from x-ms-ratelimit-remaining",
            format!(
                "{} requests held for their token (waits add up to {:.0} s over 32 parallel checks)",
                report["stats"]["paced"], report["stats"]["paced_ms"].as_f64().unwrap_or(0.0) / 1000.0
            ),
        ),
        Row::new(
            "footprint: peak memory during the sweep",
            format!("{} (VmHWM)", mib(hwm)),
            "<= 120 MiB",
            hwm > 0 && hwm <= 120 * 1024,
        ),
    ])
}
