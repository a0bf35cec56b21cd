//! The process's Prometheus metrics, served as `GET /metrics` by `rdp-doctor serve` and, in
//! gateway mode, on `RDP_DOCTOR_METRICS_LISTEN` (`crate::discord::serve::health_router`).
//!
//! One registry for the process (`prometheus-client`, OpenMetrics text). The layers that see an
//! event call a hook here: the Discord front end (`command`, `acknowledged`), the ARM transport
//! (`arm_answered`, `arm_unanswered`: per request attempt, with the route template of
//! `azure/span.rs`), the pacer (`paced`), the operator (`lease_taken_over`). The two gauges are
//! read from the database at scrape time (`Gauges`, passed to `render`).
//!
//! **Architecture Invariant:** every label value comes from a closed set: command names from
//! [`Command`], outcomes from [`Outcome`], routes as templates with names as `{}` and no query,
//! HTTP methods and status codes. No VM, resource group, subscription, person, URL or secret is
//! ever a label or a value here.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

/// The content type of [`render`]'s text (Prometheus scrapes OpenMetrics text natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `/rdp` subcommands, the only values of the `command` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Command {
    Check,
    Health,
    Console,
    Guest,
    Explain,
    Help,
    Sweep,
    Start,
    Restart,
    Redeploy,
    ResetConfig,
    ResetPassword,
    OpenRdp,
    Audit,
    Permissions,
    RequestJit,
    Changes,
    Watch,
    Unwatch,
    History,
}

impl Command {
    pub const ALL: [Command; 20] = [
        Command::Check,
        Command::Health,
        Command::Console,
        Command::Guest,
        Command::Explain,
        Command::Help,
        Command::Sweep,
        Command::Start,
        Command::Restart,
        Command::Redeploy,
        Command::ResetConfig,
        Command::ResetPassword,
        Command::OpenRdp,
        Command::Audit,
        Command::Permissions,
        Command::RequestJit,
        Command::Changes,
        Command::Watch,
        Command::Unwatch,
        Command::History,
    ];

    /// The subcommand by its name (`/rdp <name>`); `None` for anything else.
    pub fn of(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// How a command ended, as the front end saw it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran and answered (a report, a prompt, or an answer in words such as "VM not
    /// found": the person's mistakes are answers too).
    Ok,
    /// Refused before it ran: a fenced place, or an option that could not be read.
    Refused,
    /// An internal error or a panic (answered with a reference).
    Error,
}

/// Which transport an interaction came over.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Transport {
    Gateway,
    Endpoint,
}

/// A request's pacing priority (`azure::pace::Priority`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Priority {
    Interactive,
    Background,
}

/// The label values of the closed enums: their names as people type or read them.
macro_rules! label_names {
    ($type:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $type {
            pub fn name(self) -> &'static str {
                match self {
                    $(<$type>::$variant => $name,)*
                }
            }
        }

        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.name())
            }
        }
    };
}

label_names!(Command {
    Check => "check",
    Health => "health",
    Console => "console",
    Guest => "guest",
    Explain => "explain",
    Help => "help",
    Sweep => "sweep",
    Start => "start",
    Restart => "restart",
    Redeploy => "redeploy",
    ResetConfig => "reset-config",
    ResetPassword => "reset-password",
    OpenRdp => "open-rdp",
    Audit => "audit",
    Permissions => "permissions",
    RequestJit => "request-jit",
    Changes => "changes",
    Watch => "watch",
    Unwatch => "unwatch",
    History => "history",
});
label_names!(Outcome { Ok => "ok", Refused => "refused", Error => "error" });
label_names!(Transport { Gateway => "gateway", Endpoint => "endpoint" });
label_names!(Priority { Interactive => "interactive", Background => "background" });

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: Command,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: Transport,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabels {
    method: String,
    route: String,
    /// The HTTP status, or `none` when no answer came (a connection failure or timeout).
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabels {
    priority: Priority,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metrics that live as long as the process; clones share their values.
#[derive(Clone)]
struct Metrics {
    commands: Family<CommandLabels, Counter>,
    ack: Histograms<TransportLabels>,
    arm_requests: Family<ArmLabels, Counter>,
    throttled: Counter,
    paced: Histograms<PriorityLabels>,
    leases_taken_over: Counter,
}

fn ack_histogram() -> Histogram {
    // Discord waits 3 s for the first response.
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0])
}

fn pacing_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0])
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics {
        commands: Family::default(),
        ack: Family::new_with_constructor(ack_histogram),
        arm_requests: Family::default(),
        throttled: Counter::default(),
        paced: Family::new_with_constructor(pacing_histogram),
        leases_taken_over: Counter::default(),
    };
    // Shown at zero from the start (a family without samples is left out of the text).
    for transport in [Transport::Gateway, Transport::Endpoint] {
        drop(metrics.ack.get_or_create(&TransportLabels { transport }));
    }
    for priority in [Priority::Interactive, Priority::Background] {
        drop(metrics.paced.get_or_create(&PriorityLabels { priority }));
    }
    metrics
});

/// A slash command ended with `outcome`.
pub fn command(command: Command, outcome: Outcome) {
    METRICS
        .commands
        .get_or_create(&CommandLabels { command, outcome })
        .inc();
}

/// An interaction's first response (a deferral, a message or a form) went out `after` it came.
pub fn acknowledged(transport: Transport, after: Duration) {
    METRICS
        .ack
        .get_or_create(&TransportLabels { transport })
        .observe(after.as_secs_f64());
}

/// ARM answered one attempt of a request (`route`: the template of `azure/span.rs`).
pub fn arm_answered(method: &str, route: &str, status: u16) {
    arm_request(method, route, status.to_string());
    if status == 429 {
        METRICS.throttled.inc();
    }
}

/// One attempt of a request got no answer (connection refused, reset or timed out).
pub fn arm_unanswered(method: &str, route: &str) {
    arm_request(method, route, "none".to_string());
}

fn arm_request(method: &str, route: &str, status: String) {
    METRICS
        .arm_requests
        .get_or_create(&ArmLabels {
            method: method.to_ascii_uppercase(),
            route: route.to_string(),
            status,
        })
        .inc();
}

/// A request waited `held` for ARM's bucket before it was sent.
pub fn paced(priority: Priority, held: Duration) {
    METRICS
        .paced
        .get_or_create(&PriorityLabels { priority })
        .observe(held.as_secs_f64());
}

/// This replica took over a running operation whose lease another replica let lapse. The
/// operator calls it once per operation taken over.
pub fn lease_taken_over() {
    METRICS.leases_taken_over.inc();
}

/// What the database says at scrape time; `None` where it did not answer in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub operations_running: Option<i64>,
    pub confirmations_pending: Option<i64>,
}

/// Every metric in OpenMetrics text (ending in `# EOF`), with the database's gauges as read.
pub fn render(gauges: Gauges) -> String {
    let m = METRICS.clone();
    let mut registry = Registry::with_prefix("rdp_doctor");
    registry.register(
        "commands",
        "Slash commands by subcommand and outcome",
        m.commands,
    );
    registry.register(
        "acknowledgement_seconds",
        "Time from an interaction's arrival to its first response (the deferral), by transport",
        m.ack,
    );
    registry.register(
        "arm_requests",
        "HTTP requests to Azure Resource Manager (each attempt), by method, route template and status",
        m.arm_requests,
    );
    registry.register(
        "arm_throttled",
        "ARM answers with status 429 (Too Many Requests)",
        m.throttled,
    );
    registry.register(
        "arm_pacing_wait_seconds",
        "Time ARM requests were held back for the subscription's request budget, by priority",
        m.paced,
    );
    registry.register(
        "leases_taken_over",
        "Running operations this replica took over from another whose lease lapsed",
        m.leases_taken_over,
    );
    let gauge = |value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        g
    };
    if let Some(n) = gauges.operations_running {
        registry.register(
            "operations_running",
            "Fixes running now (all replicas, from the database)",
            gauge(n),
        );
    }
    if let Some(n) = gauges.confirmations_pending {
        registry.register(
            "confirmations_pending",
            "Confirmations offered and not yet taken, cancelled or expired (from the database)",
            gauge(n),
        );
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!(error = %e, "could not encode the metrics");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_round_trip_through_the_label() {
        for command in Command::ALL {
            assert_eq!(Command::of(command.name()), Some(command));
            let mut registry = Registry::default();
            let family = Family::<CommandLabels, Counter>::default();
            family
                .get_or_create(&CommandLabels {
                    command,
                    outcome: Outcome::Refused,
                })
                .inc();
            registry.register("c", "c", family);
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            let line = format!(
                "c_total{{command=\"{}\",outcome=\"refused\"}} 1\n",
                command.name()
            );
            assert!(text.contains(&line), "{text}");
        }
        assert_eq!(Command::of("web-01"), None);
    }

    #[test]
    fn database_gauges_appear_only_when_read() {
        let text = render(Gauges::default());
        assert!(!text.contains("rdp_doctor_operations_running"));
        let text = render(Gauges {
            operations_running: Some(2),
            confirmations_pending: Some(0),
        });
        assert!(
            text.contains("\nrdp_doctor_operations_running 2\n"),
            "{text}"
        );
        assert!(
            text.contains("\nrdp_doctor_confirmations_pending 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
