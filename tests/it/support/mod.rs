//! Test harness: a simulator world on loopback, the real ARM clients pointed at it, and helpers
//! that speak the runbook's language.
#![allow(dead_code)]

pub mod discord;

use rdp_doctor::azure::{Arm, ArmSettings, VmQuery};
use rdp_doctor::runbook::{self, catalog::Catalog, CheckError, CheckOptions, Report};
use rdp_doctor::sim::{SimOptions, Simulator, World};
use std::time::Duration;

pub const TENANT: &str = "00000000-0000-0000-0000-00000000000a";
pub const CLIENT: &str = "00000000-0000-0000-0000-00000000000b";

pub struct Harness {
    pub sim: Simulator,
    pub arm: Arm,
    pub catalog: Catalog,
    pub subscriptions: Vec<String>,
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

impl Harness {
    pub async fn start(world: World) -> Harness {
        Harness::with_options(world, SimOptions::fast()).await
    }

    pub async fn with_options(world: World, options: SimOptions) -> Harness {
        let secret = world.client_secret.clone();
        Harness::with_secret(world, options, &secret).await
    }

    /// Sign in with `secret`, which may differ from the world's.
    pub async fn with_secret(world: World, options: SimOptions, secret: &str) -> Harness {
        let subscriptions = world.subscriptions.iter().map(|s| s.id.clone()).collect();
        let sim = Simulator::start("127.0.0.1:0", world, quick(options))
            .await
            .expect("simulator starts");
        let url = url::Url::parse(&sim.url()).expect("simulator url");
        let arm = Arm::connect_with_secret(
            fast_settings(url.clone()),
            url,
            TENANT,
            CLIENT,
            secret.to_string().into(),
        )
        .expect("arm clients");
        Harness {
            sim,
            arm,
            catalog: Catalog::builtin(),
            subscriptions,
        }
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

/// Every test gets a deadline, so a hang fails instead of stalling CI.
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test took longer than 60 s")
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
