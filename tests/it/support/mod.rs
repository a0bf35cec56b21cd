//! Test harness: a simulator world on loopback, the real ARM clients pointed at it, and helpers
//! that speak the runbook's language.
#![allow(dead_code)]

pub mod discord;
pub mod fleet;
pub mod process;
pub mod proxy;

use rdp_doctor::azure::{Arm, ArmSettings, VmQuery};
use rdp_doctor::policy::{Policy, PolicyConfig};
use rdp_doctor::runbook::door::Door;
use rdp_doctor::runbook::operate::Operator;
use rdp_doctor::runbook::{self, catalog::Catalog, CheckError, CheckOptions, Report};
use rdp_doctor::sim::{SimOptions, Simulator, World};
use rdp_doctor::store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const TENANT: &str = "00000000-0000-0000-0000-00000000000a";
pub const CLIENT: &str = "00000000-0000-0000-0000-00000000000b";

/// The one harness: a world on the simulator, the real ARM clients pointed at it and the
/// catalog, and, for the write path, a policy and a store ([`Harness::door`],
/// [`Harness::operator`]). The runbook and operator tests use it as it is; the Discord room
/// (`discord.rs`) adds the fake Discord and the bot; the benchmark (`benches/rdp.rs`, which
/// includes this module) starts it as deployed ([`Build::deployed`]).
pub struct Harness {
    /// The simulator, on a port of its own.
    pub sim: Simulator,
    /// The real ARM clients, signed in to the simulator's Entra.
    pub arm: Arm,
    pub catalog: Arc<Catalog>,
    /// The world's subscriptions, the ones rdp-doctor is configured to serve.
    pub subscriptions: Vec<String>,
}

/// How to start a [`Harness`]: `Harness::build(world).options(…).settings(…).start()`.
pub struct Build {
    world: World,
    options: SimOptions,
    secret: Option<String>,
    settings: Box<dyn FnOnce(&mut ArmSettings) + Send>,
    deployed: bool,
}

impl Build {
    /// The simulator's options (faults, limits, latency); VMs still settle at once (see
    /// [`quick`]) unless [`Build::deployed`].
    pub fn options(mut self, options: SimOptions) -> Build {
        self.options = options;
        self
    }

    /// Sign in with `secret`, which may differ from the world's.
    pub fn secret(mut self, secret: &str) -> Build {
        self.secret = Some(secret.to_string());
        self
    }

    /// Adjust the suite's fast ARM settings ([`fast_settings`]).
    pub fn settings(mut self, change: impl FnOnce(&mut ArmSettings) + Send + 'static) -> Build {
        self.settings = Box::new(change);
        self
    }

    /// ARM's default settings and the simulator's options as given, as the bot runs them: for
    /// measurements.
    pub fn deployed(mut self) -> Build {
        self.deployed = true;
        self
    }

    pub async fn start(self) -> Harness {
        self.try_start().await.expect("the harness starts")
    }

    pub async fn try_start(self) -> anyhow::Result<Harness> {
        let subscriptions = self
            .world
            .subscriptions
            .iter()
            .map(|s| s.id.clone())
            .collect();
        let secret = self
            .secret
            .unwrap_or_else(|| self.world.client_secret.clone());
        let options = if self.deployed {
            self.options
        } else {
            quick(self.options)
        };
        let sim = Simulator::start("127.0.0.1:0", self.world, options).await?;
        let url = url::Url::parse(&sim.url())?;
        let settings = if self.deployed {
            ArmSettings::new(url.clone())
        } else {
            let mut settings = fast_settings(url.clone());
            (self.settings)(&mut settings);
            settings
        };
        let arm = Arm::connect_with_secret(settings, url, TENANT, CLIENT, secret.into())?;
        Ok(Harness {
            sim,
            arm,
            catalog: Arc::new(Catalog::builtin()),
            subscriptions,
        })
    }
}

/// `world` and `n` more VMs as [`World::vm`] makes them, named `{prefix}-00`, `{prefix}-01`, …
/// (as many digits as the last number needs, at least two).
pub fn numbered_vms(mut world: World, prefix: &str, n: usize) -> World {
    let width = n.saturating_sub(1).to_string().len().max(2);
    for i in 0..n {
        world = world.vm(&format!("{prefix}-{i:0width$}"));
    }
    world
}

/// The suite's simulator ([`SimOptions::fast`]) with `faults` injected.
pub fn failing(faults: Vec<rdp_doctor::sim::Fault>) -> SimOptions {
    SimOptions {
        faults,
        ..SimOptions::fast()
    }
}

/// The suite's simulator with `latency` added to every answer.
pub fn slowed(latency: Duration) -> SimOptions {
    SimOptions {
        latency,
        ..SimOptions::fast()
    }
}

/// The suite's simulator whose long-running operations answer "in progress" to their first
/// `lro_polls` polls.
pub fn polled(lro_polls: u32) -> SimOptions {
    SimOptions {
        lro_polls,
        ..SimOptions::fast()
    }
}

/// Settings that keep the suite fast: short timeouts, few retries, quick polls.
pub fn fast_settings(url: url::Url) -> ArmSettings {
    let mut settings = ArmSettings::new(url);
    settings.request_timeout = Duration::from_secs(2);
    settings.max_retries = 2;
    settings.max_retry_elapsed = Duration::from_secs(10);
    settings.operation_timeout = Duration::from_secs(20);
    settings.poll_interval = Duration::from_millis(10);
    settings.settle_timeout = Duration::from_secs(20);
    settings.settle_poll = Duration::from_millis(20);
    settings
}

/// A policy from the TOML of a `[policy]` table; `None`: no table at all.
pub fn policy(toml: Option<&str>) -> Policy {
    let config: Option<PolicyConfig> = toml.map(|p| toml::from_str(p).expect("policy toml"));
    Policy::new(config.as_ref()).expect("policy")
}

/// The database: a file at `path`, or in memory.
pub async fn store(path: Option<&std::path::Path>) -> Store {
    let url = match path {
        Some(path) => format!("sqlite://{}", path.display()),
        None => "sqlite::memory:".to_string(),
    };
    Store::open(&url).await.expect("store")
}

impl Harness {
    pub fn build(world: World) -> Build {
        Build {
            world,
            options: SimOptions::fast(),
            secret: None,
            settings: Box::new(|_| {}),
            deployed: false,
        }
    }

    pub async fn start(world: World) -> Harness {
        Harness::build(world).start().await
    }

    pub async fn with_options(world: World, options: SimOptions) -> Harness {
        Harness::build(world).options(options).start().await
    }

    /// Sign in with `secret`, which may differ from the world's.
    pub async fn with_secret(world: World, options: SimOptions, secret: &str) -> Harness {
        Harness::build(world)
            .options(options)
            .secret(secret)
            .start()
            .await
    }

    /// The world's client secret as it is now (a test may rotate it).
    pub fn secret(&self) -> String {
        self.sim.world().update(|w| w.client_secret.clone())
    }

    /// Another ARM connection to the simulator, with settings of the test's own.
    pub fn arm_with(&self, change: impl FnOnce(&mut ArmSettings)) -> Arm {
        let url = url::Url::parse(&self.sim.url()).expect("simulator url");
        let mut settings = fast_settings(url.clone());
        change(&mut settings);
        Arm::connect_with_secret(settings, url, TENANT, CLIENT, self.secret().into())
            .expect("arm clients")
    }

    /// The door every front end goes through, over this world, `policy` and `store`.
    pub fn door(&self, policy: Policy, store: Store) -> Door {
        Door::new(
            self.arm.clone(),
            self.catalog.clone(),
            Arc::new(policy),
            self.subscriptions.clone(),
        )
        .with_store(store)
    }

    /// The write path alone, over `arm` (this harness's or one of [`Harness::arm_with`]),
    /// `policy` and `store`.
    pub fn operator(&self, arm: Arm, policy: Policy, store: Store) -> Operator {
        Operator::new(
            arm,
            self.catalog.clone(),
            store,
            Arc::new(policy),
            self.subscriptions.clone(),
        )
    }

    pub async fn check(&self, vm: &str) -> Result<Report, CheckError> {
        self.check_with(vm, CheckOptions::default()).await
    }

    pub async fn check_with(&self, vm: &str, options: CheckOptions) -> Result<Report, CheckError> {
        let query = VmQuery::parse(vm).expect("valid VM query");
        runbook::check_query(
            &self.arm,
            &self.catalog,
            &query,
            &self.subscriptions,
            &options,
            &|_| {},
        )
        .await
    }

    /// ARM writes the simulator saw (anything but GET, and but the read-only POSTs).
    pub fn arm_writes(&self) -> Vec<String> {
        self.sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method != "GET")
            .filter(|e| {
                !e.path.contains("/effectiveNetworkSecurityGroups")
                    && !e.path.contains("/effectiveRouteTable")
                    && !e.path.contains("/ipFlowVerify")
                    && !e.path.contains("/nextHop")
                    && !e
                        .path
                        .contains("/listNetworkManagerEffectiveSecurityAdminRules")
                    && !e.path.contains("/retrieveBootDiagnosticsData")
                    && !e.path.contains("/oauth2/")
            })
            .map(|e| format!("{} {}", e.method, e.path))
            .collect()
    }
}

/// The simulator's options as the suite runs them: VMs settle at once after a power action
/// unless the test asks for a settling time (`SimOptions::settle`), so only the tests about
/// settling wait for it.
pub fn quick(mut options: SimOptions) -> SimOptions {
    options.settle.get_or_insert(Duration::ZERO);
    options
}

/// Waits until `done` holds, checking it again each time `changes` changes (an event such as
/// [`Simulator::watch_answers`] or the VM directory's `watch_attempts`), never on a timer; at
/// most 60 s, the suite's deadline, then a panic saying what did not happen.
pub async fn until<T>(what: &str, changes: watch::Receiver<T>, mut done: impl FnMut() -> bool) {
    until_async(what, changes, || std::future::ready(done())).await
}

/// [`until`] for a condition that needs awaiting (a database read).
pub async fn until_async<T, F: Future<Output = bool>>(
    what: &str,
    mut changes: watch::Receiver<T>,
    mut done: impl FnMut() -> F,
) {
    let wait = async {
        while !done().await {
            changes.changed().await.expect("the watched side is alive");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("waited 60 s for {what}"));
}

/// A directory of its own for a test's files (config, database), created: named after `what`,
/// this process and the port of `sim`, so tests running at once never share one.
pub fn scratch_dir(what: &str, sim: &Simulator) -> std::path::PathBuf {
    let port = sim.url().rsplit(':').next().unwrap_or("0").to_string();
    let dir = std::env::temp_dir().join(format!("rdp-doctor-{what}-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// How many requests the simulator answered with `method` on a path (before the query) ending
/// with `suffix`.
pub fn requests_to(sim: &Simulator, method: &str, suffix: &str) -> usize {
    sim.stats()
        .log
        .iter()
        .filter(|e| e.method == method && e.path.split('?').next().unwrap_or("").ends_with(suffix))
        .count()
}

/// SIGTERM to `child`, then its exit status (at most 20 s).
pub async fn sigterm(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("a running child").to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(sent.success(), "kill -TERM {pid}");
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the child exits after SIGTERM")
        .expect("exit status")
}

/// Every test gets a deadline, so a hang fails instead of stalling CI.
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test took longer than 60 s")
}

/// Every request of a `check` on `vm` (those naming it; the VM list at start-up names none)
/// logged its answer in `log` inside the span of interaction `id`, which names `person` and the
/// command, with Azure's request id on the request's own span.
pub fn assert_arm_answers_under(sim: &Simulator, vm: &str, log: &str, id: u64, person: &str) {
    let asked = sim
        .stats()
        .log
        .iter()
        .filter(|e| e.path.contains(&format!("/virtualMachines/{vm}")))
        .count();
    assert!(asked > 0, "the check asked ARM about {vm}");
    let span = format!("interaction{{id={id} ");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ARM answered") && l.contains(&span))
        .collect();
    assert!(
        lines.len() >= asked,
        "{asked} requests about {vm}, {} answers logged under the interaction:\n{log}",
        lines.len()
    );
    for line in &lines {
        let (interaction, arm) = line.split_once("}:arm{").expect("the ARM span inside");
        assert!(
            interaction.contains(&format!("person=\"{person}\""))
                && interaction.contains("command=\"check\""),
            "{line}"
        );
        assert!(arm.contains("request_id="), "Azure's request id: {line}");
    }
}

/// The log of this thread, as the binary writes it (`fmt`, no colour), at `filter`, while the
/// guard lives. A `#[tokio::test]` runs every task it spawns on its own thread, so an in-process
/// server's lines are caught and other tests' are not.
#[derive(Clone, Default)]
pub struct ThreadLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl ThreadLog {
    pub fn capture(filter: &str) -> (ThreadLog, tracing::subscriber::DefaultGuard) {
        let log = ThreadLog::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .finish();
        (log.clone(), tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for ThreadLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadLog {
    type Writer = ThreadLog;

    fn make_writer(&'a self) -> ThreadLog {
        self.clone()
    }
}

/// The finding of `step` in a report, or a panic naming what was there.
pub fn finding<'a>(report: &'a Report, step: &str) -> &'a rdp_doctor::diagnose::Finding {
    report
        .findings
        .iter()
        .find(|f| f.step.as_str() == step)
        .unwrap_or_else(|| panic!("no {step} finding in {:?}", report.findings))
}

/// `(status, summary)` of one step, for compact assertions.
pub fn status_of(report: &Report, step: &str) -> (String, String) {
    let f = finding(report, step);
    (f.status.as_str().to_string(), f.summary.clone())
}

/// A sweep's event handler that speaks up once the sweep's requests queue for ARM's budget (one
/// of them waits for a token as a row comes in), and where it speaks.
pub fn when_a_sweep_queues(
    arm: &rdp_doctor::azure::Arm,
) -> (
    impl Fn(rdp_doctor::runbook::sweep::SweepEvent) + Send + Sync,
    tokio::sync::oneshot::Receiver<()>,
) {
    let sweeps = arm.for_sweep();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let on_event = move |event: rdp_doctor::runbook::sweep::SweepEvent| {
        let row = matches!(
            event,
            rdp_doctor::runbook::sweep::SweepEvent::Checked { .. }
        );
        if row && sweeps.pacing().waiting > 0 {
            if let Some(tx) = tx.lock().ok().and_then(|mut tx| tx.take()) {
                let _ = tx.send(());
            }
        }
    };
    (on_event, rx)
}
