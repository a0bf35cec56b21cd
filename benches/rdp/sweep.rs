//! Section `sweep`: 1,000 VMs of one resource group under ARM's two buckets (reads: burst 250,
//! refill 25 a second; writes, which every request that is not a GET spends: burst 200, refill
//! 10; 429 + `Retry-After` beyond them), swept twice by the release binary: from a terminal
//! (`rdp-doctor sweep -g rg-fleet --json`), then by the bot (`/rdp sweep` through the fake
//! Discord), whose memory is sampled while it runs.
//!
//! The floor is what the buckets allow for the requests a sweep needs, not for those it made:
//! the scope's four lists (40 pages of 100), each VM's instance view (a read: the compute spec
//! allows a list's `$expand=instanceView` only with a scale set's `$filter`, so the list has
//! none) and, per running VM, its effective security rules: the POST (a write) and its result
//! (a read). Each bucket gives its burst at once, then its refill; the sweep cannot end before
//! the slower of the two has let its requests through.

use super::support::discord::User;
use super::{mib, sample_peak, settle, start_discord, BotProcess, Row, BENCH_ROLE};
use rdp_doctor::sim::{BucketOptions, SimOptions, World};
use std::time::{Duration, Instant};

const VMS: usize = 1000;
const BURST: f64 = 250.0;
const REFILL: f64 = 25.0;
const WRITE_BURST: f64 = 200.0;
const WRITE_REFILL: f64 = 10.0;
const L: Duration = Duration::from_millis(50);
/// Pages of 100 for each of the four lists (VMs, NICs, public IPs, Resource Health).
const LIST_PAGES: usize = 4 * VMS.div_ceil(100);
/// One VM of the fleet is deallocated: Azure has no effective rules for it.
const RUNNING: usize = VMS - 1;
/// The fleet's one virtual network: its Virtual Network Manager admin rules are read once.
const VNET_READS: usize = 1;
/// vm-321 has no public IP: the Bastion hosts' list and its virtual network's peerings (once
/// per virtual network; neither finds a Bastion, so no `AzureBastionSubnet` read).
const BASTION_READS: usize = 2;
/// What a sweep needs: the lists, each VM's instance view, two more requests per running VM,
/// and the gates' reads.
const REQUIRED: usize = LIST_PAGES + VMS + 2 * RUNNING + VNET_READS + BASTION_READS;
/// Of those, the reads (the lists, the instance views and the results) and the writes (the
/// POSTs).
const READS: usize = LIST_PAGES + VMS + RUNNING;
const WRITES: usize = RUNNING;

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

fn options() -> SimOptions {
    SimOptions {
        latency: L,
        lro_polls: 0,
        bucket: Some(BucketOptions {
            capacity: BURST as u32,
            refill_per_sec: REFILL,
        }),
        write_bucket: Some(BucketOptions {
            capacity: WRITE_BURST as u32,
            refill_per_sec: WRITE_REFILL,
        }),
        ..SimOptions::fast()
    }
}

/// What the read bucket alone allows.
fn read_floor() -> Duration {
    Duration::from_secs_f64(((READS as f64 - BURST) / REFILL).max(0.0))
}

/// What the write bucket alone allows.
fn write_floor() -> Duration {
    Duration::from_secs_f64(((WRITES as f64 - WRITE_BURST) / WRITE_REFILL).max(0.0))
}

fn floor() -> Duration {
    read_floor().max(write_floor())
}

pub(super) async fn run() -> anyhow::Result<Vec<Row>> {
    let mut rows = terminal().await?;
    rows.extend(match bot().await {
        Ok(more) => more,
        Err(e) => vec![Row::failed("sweep (bot)", e)],
    });
    Ok(rows)
}

async fn terminal() -> anyhow::Result<Vec<Row>> {
    let (sim, secret) = super::start_simulator(fleet(), options()).await?;
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
    let floor = floor();
    let elapsed = Duration::from_millis(report["stats"]["elapsed_ms"].as_u64().unwrap_or(0));
    let rows = report["vms"].as_array().cloned().unwrap_or_default();
    let unknown = rows.iter().filter(|r| r["verdict"] == "unknown").count();
    let problems = rows.iter().filter(|r| r["verdict"] == "problems").count();
    let checked = rows.len();
    let ratio = elapsed.as_secs_f64() / floor.as_secs_f64().max(f64::EPSILON);
    let hwm = peak.map(|(_, hwm)| hwm).unwrap_or(0);

    Ok(vec![
        Row::new(
            "sweep: ARM requests (lists + per VM)",
            format!(
                "{answered} ({} for the lists, {:.2} per VM)",
                report["stats"]["list_requests"],
                answered as f64 / VMS as f64
            ),
            &format!("<= {REQUIRED} needed"),
            answered as usize <= REQUIRED,
        ),
        Row::info(
            "sweep: floor the buckets allow",
            format!(
                "{:.1} s (writes: ({WRITES} - 200) / 10 = {:.1} s; reads: ({READS} - 250) / 25 = {:.1} s)",
                floor.as_secs_f64(),
                write_floor().as_secs_f64(),
                read_floor().as_secs_f64()
            ),
        ),
        Row::new(
            "sweep: 1,000 VMs from a terminal, time",
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
            "1000, 0 failed",
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
        Row::info(
            "sweep: peak memory of the terminal process",
            format!("{} (VmHWM)", mib(hwm)),
        ),
    ])
}

/// `/rdp sweep resource-group:rg-fleet` in the bot, timed from the slash command to the
/// summary; the bot's peak memory while it runs.
async fn bot() -> anyhow::Result<Vec<Row>> {
    let (sim, secret) = super::start_simulator(fleet(), options()).await?;
    let discord = start_discord().await?;
    let mut bot = BotProcess::spawn(&discord, &sim, &secret)?;
    bot.wait_ready(&discord).await?;
    // The bot lists the subscription's VMs at start (its directory): that is not the sweep's.
    settle(&sim).await;
    let before = sim.stats();
    let idle = super::rss_kib(bot.pid).map(|(rss, _)| rss).unwrap_or(0);
    let peak = sample_peak(bot.pid);
    let alice = User::new(4001, "alice", &[BENCH_ROLE]);
    let started = Instant::now();
    let i = discord
        .slash(
            &alice,
            "rdp",
            &["sweep"],
            serde_json::json!([{"name": "resource-group", "type": 3, "value": "rg-fleet"}]),
        )
        .await;
    let title = loop {
        let edit = discord
            .next_edit(&i, Duration::from_secs(180))
            .await
            .map_err(|e| anyhow::anyhow!("no summary from the bot: {e}"))?;
        let title = edit.body()["embeds"][0]["title"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if title.contains(": ") {
            break title;
        }
    };
    let took = started.elapsed();
    let after = sim.stats();
    let stopped = bot.stop().await;
    let peak = peak.await.ok().flatten().map(|(_, hwm)| hwm).unwrap_or(0);
    let throttled = after.throttled - before.throttled;
    let ratio = took.as_secs_f64() / floor().as_secs_f64();
    let mut rows = vec![
        Row::new(
            "sweep: 1,000 VMs from Discord, time to summary",
            format!(
                "{:.1} s ({ratio:.3}× floor; {throttled} answered 429)",
                took.as_secs_f64()
            ),
            "<= 1.15× floor",
            ratio <= 1.15 && title.contains("2 of 1000 VMs with problems"),
        ),
        Row::new(
            "footprint: bot memory during a 1,000-VM sweep",
            format!("{} peak (VmHWM; {} before)", mib(peak), mib(idle)),
            "<= 120 MiB",
            peak > 0 && peak <= 120 * 1024,
        ),
    ];
    if !title.contains("2 of 1000 VMs with problems") {
        rows.push(Row::new(
            "sweep: the bot's summary",
            title,
            "2 of 1000 with problems",
            false,
        ));
    }
    rows.extend(Row::unless_stopped("sweep: bot exits on SIGTERM", stopped));
    Ok(rows)
}
