//! Process configuration: environment variables (the external contract in ARCHITECTURE.md) and the
//! optional TOML file named by `RDP_DOCTOR_CONFIG` (default `rdp-doctor.toml` if present).

use serde::Deserialize;
use toml::Spanned;

use crate::policy::PolicyError;
use crate::spans::{field_or_first, line_col, position, Fields};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Behaviour settings from the TOML file. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Subscriptions searched for VMs when `AZURE_SUBSCRIPTION_ID` is not set.
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// A directory holding `rdp.toml` / `rdp-errors.toml` that override the built-in runbook.
    pub runbook_dir: Option<PathBuf>,
    /// Seconds between refreshes of the VM list behind the bot's autocomplete (default 60).
    pub vm_list_refresh_secs: Option<u64>,
    /// How hard to try with Azure.
    #[serde(default)]
    pub azure: AzureConfig,
    /// Who may do what where, the channels the bot answers in, and confirmations. Absent: every
    /// request is denied (fail closed). See `crate::policy::PolicyConfig`.
    pub policy: Option<crate::policy::PolicyConfig>,
    /// How often one person may run commands.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Several processes on one database: how long an operation's or a sweep's lease lasts.
    #[serde(default)]
    pub replicas: ReplicasConfig,
    /// How far back reports look in the Activity Log for "Recent changes".
    #[serde(default)]
    pub changes: ChangesConfig,
    /// Azure Monitor alerts into the war room: `[[alerts.route]]` scope → channel, storms.
    #[serde(default)]
    pub alerts: crate::runbook::alerts::AlertsConfig,
    /// `/rdp watch`: how often a watched VM is checked again and for how long.
    #[serde(default)]
    pub watch: WatchConfig,
    /// The VMs' timeline (`history`): how long check reports are kept.
    #[serde(default)]
    pub history: HistoryConfig,
}

/// `[changes]`: the reports' "Recent changes" from the Activity Log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesConfig {
    /// Hours back a report (and `changes VM`) reads the Activity Log (default 24, from 1 to
    /// 2160: Azure keeps 90 days).
    pub window_hours: Option<u64>,
}

impl ChangesConfig {
    /// Azure keeps Activity Log events 90 days.
    const MAX_WINDOW_HOURS: u64 = 90 * 24;

    fn check(&self) -> Result<(), (&'static str, String)> {
        match self.window_hours {
            Some(h) if !(1..=Self::MAX_WINDOW_HOURS).contains(&h) => Err((
                "window_hours",
                format!(
                    "[changes] window_hours = {h} is out of range: hours from 1 to {} (Azure keeps the Activity Log 90 days), e.g. 24 (the default)",
                    Self::MAX_WINDOW_HOURS
                ),
            )),
            _ => Ok(()),
        }
    }

    /// How far back the reports look.
    pub fn window(&self) -> Duration {
        self.window_hours
            .filter(|h| (1..=Self::MAX_WINDOW_HOURS).contains(h))
            .map(|h| Duration::from_secs(h * 3600))
            .unwrap_or(crate::runbook::changes::DEFAULT_WINDOW)
    }
}

/// `[watch]`: watches re-check a VM in the background, at the sweeps' priority.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Seconds between two checks of a watched VM (default 120, from 1 to 3600); four of them
    /// after a check Azure failed or throttled.
    pub interval_secs: Option<u64>,
    /// Minutes a watch lasts when the person gives none (default 60, at most `max_minutes`).
    pub default_minutes: Option<u64>,
    /// The most minutes a watch may last (default 240, from 1 to 1440).
    pub max_minutes: Option<u64>,
}

impl WatchConfig {
    fn check(&self) -> Result<(), (&'static str, String)> {
        let max = self.max_minutes.unwrap_or(240);
        match (self.interval_secs, self.default_minutes, self.max_minutes) {
            (Some(secs), _, _) if !(1..=3600).contains(&secs) => Err((
                "interval_secs",
                format!("[watch] interval_secs = {secs} is out of range: seconds from 1 to 3600, e.g. 120 (the default)"),
            )),
            (_, _, Some(minutes)) if !(1..=1440).contains(&minutes) => Err((
                "max_minutes",
                format!("[watch] max_minutes = {minutes} is out of range: minutes from 1 to 1440, e.g. 240 (the default)"),
            )),
            (_, Some(minutes), _) if !(1..=max).contains(&minutes) => Err((
                "default_minutes",
                format!("[watch] default_minutes = {minutes} is out of range: minutes from 1 to max_minutes ({max})"),
            )),
            _ => Ok(()),
        }
    }
}

/// `[history]`: the timeline's memory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Days a check report is kept in a VM's history (default 30, from 1 to 3650); older ones
    /// are deleted as new ones are written.
    pub retention_days: Option<u64>,
}

impl HistoryConfig {
    fn check(&self) -> Result<(), (&'static str, String)> {
        match self.retention_days {
            Some(days) if !(1..=3650).contains(&days) => Err((
                "retention_days",
                format!("[history] retention_days = {days} is out of range: days from 1 to 3650, e.g. 30 (the default)"),
            )),
            _ => Ok(()),
        }
    }
}

/// Replicas sharing one database (`serve` behind a load balancer, or a bot restarted).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicasConfig {
    /// Seconds a replica that stopped renewing keeps its running operations before another
    /// takes them over, and its sweeps' scopes before another may sweep them (default 20, from
    /// 1 to 3600); it renews every third of that, and the others look for lapsed leases every
    /// third of it, so a dead replica's operations are taken over within 17/12 of the lease:
    /// 28 s by default, within the 30 s the war room is promised.
    pub lease_secs: Option<u64>,
    /// Seconds between a standby `bot`'s tries for the gateway lock, and between the active
    /// `bot`'s checks that it still holds it (PostgreSQL only; default 2, from 1 to 10). A
    /// standby takes over within about two of these after the active bot dies.
    pub standby_check_secs: Option<u64>,
}

impl ReplicasConfig {
    /// The most a lease may be: an hour (a dead replica's operation waits that long).
    const MAX_LEASE_SECS: u64 = 3600;

    /// The most `standby_check_secs` may be: two of them and a connect stay well within 30 s.
    const MAX_STANDBY_CHECK_SECS: u64 = 10;

    fn check(&self) -> Result<(), (&'static str, String)> {
        match (self.lease_secs, self.standby_check_secs) {
            (Some(secs), _) if !(1..=Self::MAX_LEASE_SECS).contains(&secs) => Err((
                "lease_secs",
                format!(
                    "[replicas] lease_secs = {secs} is out of range: seconds from 1 to {}, e.g. 20 (the default)",
                    Self::MAX_LEASE_SECS
                ),
            )),
            (_, Some(secs)) if !(1..=Self::MAX_STANDBY_CHECK_SECS).contains(&secs) => Err((
                "standby_check_secs",
                format!(
                    "[replicas] standby_check_secs = {secs} is out of range: seconds from 1 to {}, e.g. 2 (the default)",
                    Self::MAX_STANDBY_CHECK_SECS
                ),
            )),
            _ => Ok(()),
        }
    }

    /// How often a standby bot asks for the gateway lock and the active one checks it.
    pub fn standby_check(&self) -> Duration {
        self.standby_check_secs
            .filter(|s| (1..=Self::MAX_STANDBY_CHECK_SECS).contains(s))
            .map(Duration::from_secs)
            .unwrap_or(crate::runbook::standby::DEFAULT_CHECK)
    }

    /// How long an operation's lease lasts.
    pub fn lease(&self) -> Duration {
        self.lease_secs
            .filter(|s| (1..=Self::MAX_LEASE_SECS).contains(s))
            .map(Duration::from_secs)
            .unwrap_or(crate::runbook::operate::DEFAULT_LEASE)
    }
}

/// Per-person limits (`runbook::limits::PersonLimiter::from_config` builds the limiter).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Commands one person may run per minute, sustained (default 20).
    pub commands_per_minute: Option<u32>,
    /// Commands one person may run back to back before the per-minute rate applies (default 10).
    pub command_burst: Option<u32>,
}

/// Timeouts and retry budget for ARM.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Seconds before one HTTP request counts as hung (default 30).
    pub request_timeout_secs: Option<u64>,
    /// Retries of 408/429/5xx/connection errors (default 4).
    pub max_retries: Option<u32>,
    /// Total seconds spent retrying one request (default 60).
    pub max_retry_secs: Option<u64>,
    /// Seconds one long-running operation may take (default 600).
    pub operation_timeout_secs: Option<u64>,
    /// Milliseconds between polls when Azure sends no Retry-After (default 2000).
    pub poll_interval_ms: Option<u64>,
    /// Requests per second ARM refills a subscription's bucket with (default 25, ARM's
    /// documented read refill); sweeps pace themselves to it.
    pub refill_per_sec: Option<f64>,
    /// Fraction of a subscription's ARM request bucket a sweep may spend, above 0 and at most 1
    /// (default 0.8); the rest is kept for people's checks, which also go first.
    pub sweep_share: Option<f64>,
    /// The most Windows VMs one sweep checks (default 1000); a larger scope is refused.
    pub sweep_max_vms: Option<usize>,
    /// Seconds the re-check after a start, restart or redeploy waits for the VM to run with a
    /// Ready guest agent before it judges (default 300).
    pub settle_timeout_secs: Option<u64>,
    /// Seconds the guest checks wait for Run Command before they are reported as timed out
    /// (default 150; Azure's own Run Command takes tens of seconds).
    pub run_command_timeout_secs: Option<u64>,
    /// Seconds a VM name that no subscription has is remembered as unknown, so that asking
    /// again lists nothing (default 30).
    pub unknown_vm_ttl_secs: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value that parses but is refused; `at` is its line and column in the file.
    #[error("{path}{}: {message}", crate::spans::suffix(.at))]
    Value {
        path: String,
        at: Option<(usize, usize)>,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    /// Load `RDP_DOCTOR_CONFIG`, else `rdp-doctor.toml` in the working directory if present.
    pub fn load() -> Result<FileConfig, ConfigError> {
        match std::env::var_os("RDP_DOCTOR_CONFIG") {
            Some(path) if !path.is_empty() => FileConfig::from_path(Path::new(&path)),
            _ => {
                let default = Path::new("rdp-doctor.toml");
                if default.exists() {
                    FileConfig::from_path(default)
                } else {
                    Ok(FileConfig::default())
                }
            }
        }
    }

    pub fn from_path(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        FileConfig::parse(&text, &path.display().to_string())
    }

    /// Parses and checks the file, the `[policy]` included, so that a value that parses but is
    /// refused is reported with the file, line and column; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
            ConfigError::Parse {
                path: path.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let spans: Spans = toml::from_str(text).unwrap_or_default();
        let refused = |at: Option<(usize, usize)>, message: String| ConfigError::Value {
            path: path.to_string(),
            at,
            message,
        };
        if let Err((field, message)) = file.azure.check() {
            let at = spans.azure.get(field).map(|value| position(text, value));
            return Err(refused(at, message));
        }
        if let Err((field, message)) = file.replicas.check() {
            let at = spans.replicas.get(field).map(|value| position(text, value));
            return Err(refused(at, message));
        }
        if let Err((field, message)) = file.changes.check() {
            let at = spans.changes.get(field).map(|value| position(text, value));
            return Err(refused(at, message));
        }
        if let Err((field, message)) = file.watch.check() {
            let at = spans.watch.get(field).map(|value| position(text, value));
            return Err(refused(at, message));
        }
        if let Err((field, message)) = file.history.check() {
            let at = spans.history.get(field).map(|value| position(text, value));
            return Err(refused(at, message));
        }
        if let Some(policy) = &file.policy {
            if let Err(e) = crate::policy::Policy::new(Some(policy)) {
                return Err(refused(spans.policy.at(text, &e), e.to_string()));
            }
        }
        if let Err(e) = file.alerts.settings() {
            return Err(refused(None, e.to_string()));
        }
        Ok(file)
    }
}

/// Where the values the checks look at are in the file (`toml::Spanned`).
#[derive(Default, Deserialize)]
struct Spans {
    #[serde(default)]
    azure: Fields,
    #[serde(default)]
    replicas: Fields,
    #[serde(default)]
    changes: Fields,
    #[serde(default)]
    watch: Fields,
    #[serde(default)]
    history: Fields,
    #[serde(default)]
    policy: PolicySpans,
}

/// `[policy]`: the fields `PolicyError::Field` names, and each grant's and person's values.
#[derive(Default, Deserialize)]
struct PolicySpans {
    channels: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    guilds: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    confirm_ttl_secs: Option<Spanned<toml::Value>>,
    #[serde(default)]
    grant: Vec<Fields>,
    #[serde(default)]
    person: Vec<Fields>,
}

/// Item `number` (counted from 1, as the policy's errors count) of an array of tables.
fn nth(items: &[Fields], number: usize) -> Option<&Fields> {
    items.get(number.checked_sub(1)?)
}

impl PolicySpans {
    /// Where the value a policy error is about is: the grant's or person's field (their first
    /// value when the field is missing), or the `[policy]` field.
    fn at(&self, text: &str, error: &PolicyError) -> Option<(usize, usize)> {
        match error {
            PolicyError::Grant { number, field, .. } => {
                field_or_first(text, nth(&self.grant, *number)?, field)
            }
            PolicyError::Person { number, problem } => {
                let field = match problem {
                    crate::policy::Invalid::EmptyName => "name",
                    _ => "identities",
                };
                field_or_first(text, nth(&self.person, *number)?, field)
            }
            PolicyError::Field { field, problem } => {
                let list = match *field {
                    "channels" => self.channels.as_ref(),
                    "guilds" => self.guilds.as_ref(),
                    _ => return self.confirm_ttl_secs.as_ref().map(|v| position(text, v)),
                }?;
                // The id that is not one, else the list.
                let bad = match problem {
                    crate::policy::Invalid::DiscordId(bad) => list
                        .get_ref()
                        .iter()
                        .find(|v| v.get_ref().as_str().unwrap_or_default() == bad.as_str()),
                    _ => None,
                };
                Some(bad.map_or_else(|| position(text, list), |v| position(text, v)))
            }
        }
    }
}

/// The ARM endpoint: `AZURE_RESOURCE_MANAGER_URL`, default the public cloud.
pub fn arm_endpoint() -> Result<url::Url, ConfigError> {
    let raw = std::env::var("AZURE_RESOURCE_MANAGER_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| crate::azure::PUBLIC_ARM_ENDPOINT.to_string());
    url::Url::parse(raw.trim()).map_err(|e| {
        ConfigError::Invalid(format!(
            "AZURE_RESOURCE_MANAGER_URL={raw:?} is not a URL: {e}"
        ))
    })
}

/// Subscriptions to search: the command line wins, then `AZURE_SUBSCRIPTION_ID`
/// (comma-separated), then the config file.
pub fn subscriptions(cli: &[String], file: &FileConfig) -> Vec<String> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let from_cli: Vec<String> = cli.iter().flat_map(|s| split(s)).collect();
    if !from_cli.is_empty() {
        return from_cli;
    }
    if let Ok(env) = std::env::var("AZURE_SUBSCRIPTION_ID") {
        let from_env = split(&env);
        if !from_env.is_empty() {
            return from_env;
        }
    }
    file.subscriptions.clone()
}

/// Azure's own limit on one Run Command script.
const MAX_RUN_COMMAND_SECS: u64 = 90 * 60;

impl AzureConfig {
    /// Values the TOML types admit but that make no sense are refused, not ignored: a sweep's
    /// share above the whole bucket, a refill of nothing.
    /// The field and what is wrong with it.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let bad = |field: &'static str, value: f64, want: &str| {
            Err((
                field,
                format!("[azure] {field} = {value} is out of range: {want}"),
            ))
        };
        if let Some(share) = self.sweep_share {
            if !(share.is_finite() && share > 0.0 && share <= 1.0) {
                return bad(
                    "sweep_share",
                    share,
                    "a fraction above 0 and at most 1, e.g. 0.8 (the default)",
                );
            }
        }
        if let Some(rate) = self.refill_per_sec {
            if !(rate.is_finite() && rate > 0.0) {
                return bad(
                    "refill_per_sec",
                    rate,
                    "requests a second above 0, e.g. 25 (ARM's refill of reads)",
                );
            }
        }
        if let Some(secs) = self.run_command_timeout_secs {
            // Azure stops a Run Command script after 90 minutes ("Run scripts in your Windows
            // VM by using action Run Command", Microsoft Learn).
            if secs == 0 || secs > MAX_RUN_COMMAND_SECS {
                return bad(
                    "run_command_timeout_secs",
                    secs as f64,
                    "seconds above 0 and at most 5400 (Azure ends a Run Command after 90 minutes), e.g. 150 (the default)",
                );
            }
        }
        Ok(())
    }

    /// How long the guest checks wait for Run Command.
    pub fn run_command_timeout(&self) -> Duration {
        self.run_command_timeout_secs
            .filter(|s| (1..=MAX_RUN_COMMAND_SECS).contains(s))
            .map(Duration::from_secs)
            .unwrap_or(crate::azure::ArmSettings::DEFAULT_RUN_COMMAND_TIMEOUT)
    }

    pub fn apply(&self, settings: &mut crate::azure::ArmSettings) {
        if let Some(s) = self.request_timeout_secs {
            settings.request_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(n) = self.max_retries {
            settings.max_retries = n;
        }
        if let Some(s) = self.max_retry_secs {
            settings.max_retry_elapsed = Duration::from_secs(s);
        }
        if let Some(s) = self.operation_timeout_secs {
            settings.operation_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(ms) = self.poll_interval_ms {
            settings.poll_interval = Duration::from_millis(ms);
        }
        if let Some(rate) = self.refill_per_sec.filter(|r| r.is_finite() && *r > 0.0) {
            settings.refill_per_sec = rate;
        }
        if let Some(share) = self
            .sweep_share
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 1.0)
        {
            settings.sweep_share = share;
        }
        if let Some(max) = self.sweep_max_vms {
            settings.sweep_max_vms = max;
        }
        if let Some(s) = self.settle_timeout_secs {
            settings.settle_timeout = Duration::from_secs(s);
        }
        settings.run_command_timeout = self.run_command_timeout();
    }

    /// How long the VM directory remembers a name as unknown
    /// (`VmDirectory::with_unknown_ttl`).
    pub fn unknown_vm_ttl(&self) -> Duration {
        self.unknown_vm_ttl_secs
            .map(Duration::from_secs)
            .unwrap_or(crate::azure::VmDirectory::DEFAULT_UNKNOWN_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected_with_a_line() {
        let err = FileConfig::parse("subscriptions = []\n[azure]\nretries = 3\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.toml:3:"), "{err}");
        assert!(err.contains("retries"), "{err}");
        let ok = FileConfig::parse("[azure]\nmax_retries = 1\n", "x.toml").unwrap();
        assert_eq!(ok.azure.max_retries, Some(1));
    }

    #[test]
    fn the_fair_budget_settings_apply_and_nonsense_keeps_the_defaults() {
        let file = FileConfig::parse(
            "[azure]\nsweep_share = 0.5\nsweep_max_vms = 200\nunknown_vm_ttl_secs = 5\n[limits]\ncommands_per_minute = 6\ncommand_burst = 2\n",
            "x.toml",
        )
        .unwrap();
        let mut settings =
            crate::azure::ArmSettings::new(url::Url::parse("http://127.0.0.1:1").unwrap());
        file.azure.apply(&mut settings);
        assert_eq!((settings.sweep_share, settings.sweep_max_vms), (0.5, 200));
        assert_eq!(file.azure.unknown_vm_ttl(), Duration::from_secs(5));
        let limiter = crate::runbook::limits::PersonLimiter::from_config(&file.limits);
        assert_eq!((limiter.rate().per_minute, limiter.rate().burst), (6, 2));
        let silly = FileConfig::parse("[azure]\nsweep_share = 1.5\n", "x.toml")
            .expect_err("a share above the whole bucket is refused");
        assert_eq!(
            silly.to_string(),
            "x.toml:2:15: [azure] sweep_share = 1.5 is out of range: a fraction above 0 and at most 1, e.g. 0.8 (the default)"
        );
        assert!(FileConfig::parse("[azure]\nrefill_per_sec = 0.0\n", "x.toml").is_err());
        let plain = FileConfig::parse("[azure]\n", "x.toml").unwrap();
        assert_eq!(plain.azure.unknown_vm_ttl(), Duration::from_secs(30));
        assert!(FileConfig::parse("[limits]\nper_minute = 3\n", "x.toml").is_err());
    }

    #[test]
    fn run_command_waits_150_seconds_unless_set_within_range() {
        let plain = FileConfig::parse("", "x.toml").unwrap();
        assert_eq!(plain.azure.run_command_timeout(), Duration::from_secs(150));
        let short = FileConfig::parse("[azure]\nrun_command_timeout_secs = 5\n", "x.toml").unwrap();
        assert_eq!(short.azure.run_command_timeout(), Duration::from_secs(5));
        for bad in ["0", "5401"] {
            let err = FileConfig::parse(
                &format!("[azure]\nrun_command_timeout_secs = {bad}\n"),
                "x.toml",
            )
            .expect_err("out of range")
            .to_string();
            assert_eq!(
                err,
                format!("x.toml:2:28: [azure] run_command_timeout_secs = {bad} is out of range: seconds above 0 and at most 5400 (Azure ends a Run Command after 90 minutes), e.g. 150 (the default)")
            );
        }
    }

    #[test]
    fn reports_look_24_hours_back_unless_set_within_range() {
        let plain = FileConfig::parse("", "x.toml").unwrap();
        assert_eq!(plain.changes.window(), Duration::from_secs(24 * 3600));
        let week = FileConfig::parse("[changes]\nwindow_hours = 168\n", "x.toml").unwrap();
        assert_eq!(week.changes.window(), Duration::from_secs(168 * 3600));
        for bad in ["0", "2161"] {
            let err = FileConfig::parse(&format!("[changes]\nwindow_hours = {bad}\n"), "x.toml")
                .expect_err("out of range")
                .to_string();
            assert_eq!(
                err,
                format!("x.toml:2:16: [changes] window_hours = {bad} is out of range: hours from 1 to 2160 (Azure keeps the Activity Log 90 days), e.g. 24 (the default)")
            );
        }
        assert!(FileConfig::parse("[changes]\nhours = 2\n", "x.toml").is_err());
    }

    #[test]
    fn watches_and_history_are_configured_within_their_ranges() {
        let plain = FileConfig::parse("", "x.toml").unwrap();
        let settings =
            crate::runbook::watch::WatchSettings::from_config(&plain.watch, &plain.history);
        assert_eq!(settings, crate::runbook::watch::WatchSettings::default());
        assert_eq!(settings.interval, Duration::from_secs(120));
        assert_eq!(settings.retention, Duration::from_secs(30 * 86_400));
        let tuned = FileConfig::parse(
            "[watch]\ninterval_secs = 1\ndefault_minutes = 5\nmax_minutes = 10\n[history]\nretention_days = 7\n",
            "x.toml",
        )
        .unwrap();
        let settings =
            crate::runbook::watch::WatchSettings::from_config(&tuned.watch, &tuned.history);
        assert_eq!(settings.interval, Duration::from_secs(1));
        assert_eq!(settings.default_length, Duration::from_secs(300));
        assert_eq!(settings.max_length, Duration::from_secs(600));
        assert_eq!(settings.retention, Duration::from_secs(7 * 86_400));
        for (text, expected) in [
            ("[watch]\ninterval_secs = 0\n", "x.toml:2:17: [watch] interval_secs = 0 is out of range: seconds from 1 to 3600, e.g. 120 (the default)"),
            ("[watch]\nmax_minutes = 10\ndefault_minutes = 11\n", "x.toml:3:19: [watch] default_minutes = 11 is out of range: minutes from 1 to max_minutes (10)"),
            ("[history]\nretention_days = 0\n", "x.toml:2:18: [history] retention_days = 0 is out of range: days from 1 to 3650, e.g. 30 (the default)"),
        ] {
            let err = FileConfig::parse(text, "x.toml").unwrap_err().to_string();
            assert_eq!(err, expected);
        }
    }

    #[test]
    fn the_lease_is_twenty_seconds_unless_set_within_range() {
        let plain = FileConfig::parse("", "x.toml").unwrap();
        assert_eq!(plain.replicas.lease(), Duration::from_secs(20));
        let short = FileConfig::parse("[replicas]\nlease_secs = 2\n", "x.toml").unwrap();
        assert_eq!(short.replicas.lease(), Duration::from_secs(2));
        for bad in ["0", "3601"] {
            let err = FileConfig::parse(&format!("[replicas]\nlease_secs = {bad}\n"), "x.toml")
                .expect_err("out of range")
                .to_string();
            assert_eq!(
                err,
                format!("x.toml:2:14: [replicas] lease_secs = {bad} is out of range: seconds from 1 to 3600, e.g. 20 (the default)")
            );
        }
        assert!(FileConfig::parse("[replicas]\nlease = 2\n", "x.toml").is_err());
    }

    #[test]
    fn the_standby_checks_every_two_seconds_unless_set_within_range() {
        let plain = FileConfig::parse("", "x.toml").unwrap();
        assert_eq!(plain.replicas.standby_check(), Duration::from_secs(2));
        let slow = FileConfig::parse("[replicas]\nstandby_check_secs = 10\n", "x.toml").unwrap();
        assert_eq!(slow.replicas.standby_check(), Duration::from_secs(10));
        for bad in ["0", "11"] {
            let err = FileConfig::parse(
                &format!("[replicas]\nstandby_check_secs = {bad}\n"),
                "x.toml",
            )
            .expect_err("out of range")
            .to_string();
            assert_eq!(
                err,
                format!("x.toml:2:22: [replicas] standby_check_secs = {bad} is out of range: seconds from 1 to 10, e.g. 2 (the default)")
            );
        }
    }
}
