//! The terminal front end: argument parsing (clap), progress on stderr, the report on stdout,
//! exit codes as ARCHITECTURE.md's external contract fixes them.
//!
//! **Architecture Invariant:** the only module that names clap types. It turns arguments into a
//! runbook request and renders the runbook's events and report; it holds no runbook logic.

mod changes;
mod error;
mod fix;
mod history;

pub use error::{CliError, Done};
pub use fix::os_user;
mod operations;
mod permissions;
mod render;
mod simulate;
mod sweep;

use crate::config::{self, FileConfig};
use crate::domain::VmQuery;
use crate::policy::{Policy, PolicyConfig};
use crate::runbook::door::{Door, SignIn};
use crate::runbook::fix::FixRequest;
use crate::runbook::{catalog::Catalog, CheckOptions, Event, Verdict};
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit codes (ARCHITECTURE.md, "The external contract"): 0 no problem found, 1 problems found, 2 usage/config/not-found/
/// ambiguous, 3 Azure or network failure.
pub mod exit {
    pub const OK: u8 = 0;
    pub const PROBLEMS: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const AZURE: u8 = 3;
}

#[derive(Debug, Parser)]
#[command(
    name = "rdp-doctor",
    version,
    about = "Runs Microsoft's \"Troubleshoot Remote Desktop connections to an Azure VM\" runbook against a VM"
)]
struct Cli {
    #[command(flatten)]
    environment: Environment,
    #[command(subcommand)]
    command: Command,
}

/// The environment variables rdp-doctor reads (ARCHITECTURE.md's external contract; the
/// README's table says more), declared here so that `--help` lists them with clap's `env`.
/// The code reads the variables where it needs them; an option given before the subcommand
/// sets its variable for this run (`export_options`). Secrets (`hide_env_values`) are never
/// shown by `--help` and are refused on the command line, where other local users could read
/// them.
#[derive(clap::Args)]
#[command(next_help_heading = "Environment (an option sets its variable for this run)")]
struct Environment {
    /// Entra ID tenant of the service principal or workload identity.
    #[arg(long, env = "AZURE_TENANT_ID", value_name = "ID")]
    azure_tenant_id: Option<OsString>,
    /// Application (client) id; with a managed identity, the user-assigned identity.
    #[arg(long, env = "AZURE_CLIENT_ID", value_name = "ID")]
    azure_client_id: Option<OsString>,
    /// Service principal's client secret (environment only).
    #[arg(
        long,
        env = "AZURE_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    azure_client_secret: Option<OsString>,
    /// Workload identity: the federated token file, read at every token request.
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE", value_name = "FILE")]
    azure_federated_token_file: Option<OsString>,
    /// Entra ID token endpoint host [default: https://login.microsoftonline.com].
    #[arg(long, env = "AZURE_AUTHORITY_HOST", value_name = "URL")]
    azure_authority_host: Option<OsString>,
    /// Where a VM's managed-identity endpoint (IMDS) answers [default: http://169.254.169.254].
    #[arg(long, env = "AZURE_POD_IDENTITY_AUTHORITY_HOST", value_name = "URL")]
    azure_pod_identity_authority_host: Option<OsString>,
    /// App Service / Functions managed identity endpoint (the platform sets it).
    #[arg(long, env = "IDENTITY_ENDPOINT", value_name = "URL")]
    identity_endpoint: Option<OsString>,
    /// App Service / Functions managed identity header (the platform sets it; environment only).
    #[arg(
        long,
        env = "IDENTITY_HEADER",
        value_name = "SECRET",
        hide_env_values = true
    )]
    identity_header: Option<OsString>,
    /// ARM endpoint [default: https://management.azure.com].
    #[arg(long, env = "AZURE_RESOURCE_MANAGER_URL", value_name = "URL")]
    azure_resource_manager_url: Option<OsString>,
    /// Subscription(s) searched for VMs, comma-separated (a command's --subscription wins).
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID", value_name = "IDS")]
    azure_subscription_id: Option<OsString>,
    /// TOML config file [default: rdp-doctor.toml if present].
    #[arg(long, env = "RDP_DOCTOR_CONFIG", value_name = "FILE")]
    rdp_doctor_config: Option<OsString>,
    /// Database of the audit log, confirmations and operations: sqlite://FILE or
    /// postgres://USER:PASSWORD@HOST/DB [default: sqlite://rdp-doctor.db] (environment only: a
    /// URL may hold a password).
    #[arg(
        long,
        env = "RDP_DOCTOR_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    rdp_doctor_database_url: Option<OsString>,
    /// The Discord bot's token (environment only).
    #[arg(
        long,
        env = "DISCORD_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    discord_token: Option<OsString>,
    /// Discord REST base, a proxy or a fake [default: https://discord.com].
    #[arg(long, env = "DISCORD_API_URL", value_name = "URL")]
    discord_api_url: Option<OsString>,
    /// Register the commands in this guild (instant) instead of globally.
    #[arg(long, env = "DISCORD_GUILD_ID", value_name = "ID")]
    discord_guild_id: Option<OsString>,
    /// The application's public key (Developer Portal, 64 hex digits): `serve` checks Discord's
    /// request signatures with it.
    #[arg(long, env = "DISCORD_PUBLIC_KEY", value_name = "HEX")]
    discord_public_key: Option<OsString>,
    /// The application's id [default: asked of Discord with the token].
    #[arg(long, env = "DISCORD_APPLICATION_ID", value_name = "ID")]
    discord_application_id: Option<OsString>,
    /// Where `serve` listens [default: 0.0.0.0:8080].
    #[arg(long, env = "RDP_DOCTOR_LISTEN", value_name = "ADDR")]
    rdp_doctor_listen: Option<OsString>,
    /// The secret `serve`'s `POST /alerts/azure-monitor?token=` needs: Azure Monitor's alerts
    /// are off without it (environment only).
    #[arg(
        long,
        env = "RDP_DOCTOR_ALERT_TOKEN",
        value_name = "SECRET",
        hide_env_values = true
    )]
    rdp_doctor_alert_token: Option<OsString>,
    /// Where `bot` serves /healthz, /readyz and /metrics [default: not served].
    #[arg(long, env = "RDP_DOCTOR_METRICS_LISTEN", value_name = "ADDR")]
    rdp_doctor_metrics_listen: Option<OsString>,
    /// Log filter for rdp-doctor's own logs on stderr [default: warn,rdp_doctor=info]; other
    /// crates stay at warnings whatever it says.
    #[arg(long, env = "RUST_LOG", value_name = "FILTER")]
    rust_log: Option<OsString>,
}

/// Never prints a value: some are secrets.
impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Environment { .. }")
    }
}

/// Sets the variable of every environment option given on the command line, so the code that
/// reads the variable sees it; refuses a secret there, naming only the variable. Runs before
/// any thread is started.
fn export_options(matches: &clap::ArgMatches) -> Result<(), CliError> {
    let command = <Cli as clap::CommandFactory>::command();
    for arg in command.get_arguments() {
        let Some(name) = arg.get_env() else { continue };
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let name = name.to_string_lossy();
        if arg.is_hide_env_values_set() {
            return Err(CliError::usage(format!(
                "--{} is a secret: set {name} in the environment instead of on the command line",
                arg.get_long().unwrap_or(id)
            )));
        }
        if let Some(value) = matches.get_one::<OsString>(id) {
            std::env::set_var(name.as_ref(), value);
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check why Remote Desktop to a VM fails: power, agent, public IP, NSG, Resource Health,
    /// boot diagnostics.
    Check(CheckArgs),
    /// Check every Windows VM of a resource group (or of a whole subscription) and print one
    /// summary, worst first. Ctrl-C stops it and prints what was checked.
    Sweep(sweep::SweepArgs),
    /// Explain a Remote Desktop client error message: its cause and the runbook's fix.
    Explain {
        /// The error text as the Remote Desktop client shows it (several words are joined; none,
        /// or `-`, reads it from standard input, so a multi-line paste can be piped in).
        text: Vec<String>,
    },
    /// Start a stopped or deallocated VM (asks for confirmation).
    Start(FixArgs),
    /// Restart a running VM (asks for confirmation).
    Restart(FixArgs),
    /// Redeploy a VM to a new host (asks for confirmation; two-person by default).
    Redeploy(FixArgs),
    /// Reset the Remote Desktop configuration with VMAccess (asks for confirmation).
    ResetConfig(FixArgs),
    /// Reset a local administrator's password with VMAccess (prompts without echo).
    ResetPassword {
        #[command(flatten)]
        fix: FixArgs,
        /// The local account (created as administrator if missing).
        #[arg(long)]
        user: String,
        /// Read the new password from one line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Allow inbound TCP 3389 (or `--port`) in the NSG that blocks it (asks for confirmation).
    OpenRdp {
        #[command(flatten)]
        fix: FixArgs,
        /// Who may connect: an IPv4 address, a CIDR, a service tag, or `anywhere`.
        #[arg(long)]
        source: String,
        /// The port the VM's RDP listener is on, when a guest check found it moved.
        #[arg(long, default_value_t = 3389, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
    /// Run one of the runbook's fixes by its id, the guest fixes included (asks for
    /// confirmation): enable-rdp, start-termservice, reset-rdp-port, enable-firewall-rdp,
    /// renew-rdp-certificate, remove-rdsh-role, free-disk-space (scripts run as SYSTEM through
    /// Run Command), or open-rdp-port with `--source` (and `--port`).
    Fix {
        #[command(flatten)]
        fix: FixArgs,
        /// The fix's id, as `check` recommends it.
        action: String,
        /// For open-rdp-port: who may connect (an IPv4 address, a CIDR, a service tag, or
        /// `anywhere`).
        #[arg(long)]
        source: Option<String>,
        /// For open-rdp-port: the port the VM's RDP listener is on.
        #[arg(long, default_value_t = 3389, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
    /// Remove the route that sends the VM's replies to the Internet to an appliance or to None
    /// (asks for confirmation; admin).
    RemoveRoute(FixArgs),
    /// Ask Defender for Cloud's just-in-time access to open TCP 3389 of a JIT-protected VM for
    /// your address (asks for confirmation).
    RequestJit {
        #[command(flatten)]
        fix: FixArgs,
        /// Your public IPv4 address: the port opens for it alone.
        #[arg(long, value_name = "IP")]
        from: std::net::Ipv4Addr,
        /// For how many hours, within the policy's maximum (1 when not given).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=24))]
        hours: Option<u32>,
    },
    /// Confirm a pending fix by its confirmation id (runs it).
    Confirm {
        id: String,
        #[arg(long)]
        simulate: bool,
    },
    /// Cancel a pending fix.
    Cancel {
        id: String,
        #[arg(long)]
        simulate: bool,
    },
    /// List the operations that are running: each holds its VM until it ends.
    Operations,
    /// Follow every running operation to its end (e.g. one an interrupted fix left behind).
    Resume,
    /// Free a VM whose operation Azure no longer knows (admin on the VM; audited with the reason).
    Unlock {
        /// The VM: NAME, RESOURCE-GROUP/NAME, or a full resource id.
        vm: String,
        /// Why it is safe to free it, for the audit log (required).
        #[arg(long)]
        reason: Option<String>,
        /// Subscription(s) to search; overrides AZURE_SUBSCRIPTION_ID.
        #[arg(long, value_name = "ID")]
        subscription: Vec<String>,
    },
    /// Which Azure actions the runbook needs rdp-doctor's identity holds, per subscription
    /// and resource group, with the built-in role that grants what is missing (admin; reads
    /// only). Exit 1 if something is missing.
    Permissions {
        /// Subscription(s) to ask about; overrides AZURE_SUBSCRIPTION_ID.
        #[arg(long, value_name = "ID")]
        subscription: Vec<String>,
        #[arg(long)]
        simulate: bool,
    },
    /// Show recent audit entries.
    Audit {
        /// Only this VM (name or resource id).
        #[arg(long)]
        vm: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// A VM's timeline, newest first: its checks (each with what changed since the one
    /// before), the watches and fixes asked for and their outcomes.
    History {
        /// The VM: NAME, RESOURCE-GROUP/NAME, or a full resource id.
        vm: String,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Subscription(s) to search; overrides AZURE_SUBSCRIPTION_ID.
        #[arg(long, value_name = "ID")]
        subscription: Vec<String>,
    },
    /// Run the Discord bot (DISCORD_TOKEN, DISCORD_API_URL, DISCORD_GUILD_ID) until SIGTERM/Ctrl-C;
    /// `GET /healthz`, `/readyz` and `/metrics` on RDP_DOCTOR_METRICS_LISTEN if set.
    Bot {
        /// Serve the demo world of the built-in simulator instead of Azure (training, demos).
        #[arg(long)]
        simulate: bool,
    },
    /// Serve Discord's HTTP interactions endpoint (`POST /interactions`, `GET /healthz`, `GET
    /// /readyz`, `GET /metrics`) on RDP_DOCTOR_LISTEN until SIGTERM/Ctrl-C (DISCORD_TOKEN, DISCORD_PUBLIC_KEY,
    /// DISCORD_APPLICATION_ID, DISCORD_API_URL, DISCORD_GUILD_ID).
    Serve {
        /// Serve the demo world of the built-in simulator instead of Azure (training, demos).
        #[arg(long)]
        simulate: bool,
    },
    /// Register the `/rdp` commands with Discord (bulk overwrite), in DISCORD_GUILD_ID or
    /// globally, as `bot` and `serve` do at start-up.
    Register,
    /// Check the configuration and runbook files load.
    Health,
    /// GET a URL (the container's health check): exit 0 on a 2xx answer, else 1 with the
    /// status and the body's first line on stderr.
    Probe {
        /// The URL to ask.
        #[arg(default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
    },
    /// Serve the built-in Azure simulator (ARM, token endpoint and blobs on one port).
    Simulate {
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// World file (TOML). Default: the demo world.
        #[arg(long)]
        world: Option<PathBuf>,
        /// Once listening, post an Azure Monitor alert (common alert schema) for `--alert`'s VM
        /// to this URL, e.g. `http://127.0.0.1:8080/alerts/azure-monitor?token=…` (the demo world).
        #[arg(long, value_name = "URL", requires = "alert", conflicts_with = "world")]
        alert_to: Option<String>,
        /// The VM the alert is about (a VM of the demo world, e.g. web-02).
        #[arg(long, value_name = "VM", requires = "alert_to")]
        alert: Option<String>,
        /// Post the alert resolved this many seconds after it fired.
        #[arg(long, value_name = "SECS", requires = "alert_to")]
        alert_resolve_after: Option<u64>,
    },
    /// Who changed what on a VM and on what its Remote Desktop depends on (NICs, NSGs, public
    /// IP, subnet, route table), newest first, from the Activity Log (default: the last 24
    /// hours).
    Changes(changes::ChangesArgs),
}

#[derive(Debug, clap::Args)]
struct FixArgs {
    /// The VM: NAME, RESOURCE-GROUP/NAME, or a full resource id.
    vm: String,
    /// Confirm without the interactive prompt (not for two-person fixes).
    #[arg(long)]
    yes: bool,
    /// Subscription(s) to search; overrides AZURE_SUBSCRIPTION_ID.
    #[arg(long, value_name = "ID")]
    subscription: Vec<String>,
    /// Against the built-in simulator's demo world.
    #[arg(long)]
    simulate: bool,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The VM: NAME, RESOURCE-GROUP/NAME, or a full resource id.
    vm: String,
    /// Print one JSON object (the format in ARCHITECTURE.md's external contract) instead of the report.
    #[arg(long)]
    json: bool,
    /// Test TCP 3389 from this IPv4 address (your public IP) instead of "anyone on the Internet".
    #[arg(long, value_name = "IP")]
    from: Option<String>,
    /// Subscription(s) to search; overrides AZURE_SUBSCRIPTION_ID. Repeat or comma-separate.
    #[arg(long, value_name = "ID")]
    subscription: Vec<String>,
    /// Write the boot diagnostics console screenshot (PNG) to this file.
    #[arg(long, value_name = "FILE")]
    screenshot_out: Option<PathBuf>,
    /// Run against the built-in Azure simulator and its demo world (no Azure account needed).
    #[arg(long)]
    simulate: bool,
    /// Then look inside Windows with Run Command (a read-only script run as SYSTEM; needs the
    /// `guest` level, operate by default): Remote Desktop enabled, TermService, the listener,
    /// the firewall, NLA, the certificate, licensing, disk space and a pending reboot.
    #[arg(long)]
    guest: bool,
}

pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    use tracing::Instrument;
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches_command) = match parsed {
        Ok((cli, matches)) => {
            if let Err(e) = export_options(&matches) {
                return ExitCode::from(error::finish(Err(e)));
            }
            (cli, matches.subcommand_name().map(str::to_owned))
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_tracing();
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), "rdp-doctor starting");
    // One span per command, so each log line of its ARM requests names the person; the bot and
    // the simulator serve many people and open theirs per interaction.
    let span = match matches_command.as_deref() {
        None | Some("bot" | "simulate") => tracing::Span::none(),
        Some(command) => crate::telemetry::command_span(
            &crate::policy::Actor::terminal(&fix::os_user()).id,
            command,
        ),
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(run(cli).instrument(span)));
    // The one place the terminal prints an error.
    ExitCode::from(error::finish(result))
}

/// Logs go to stderr, `RUST_LOG` decides (default warn) for rdp-doctor's own targets. Every
/// other target is capped below whatever `RUST_LOG` says, and no directive can lift the cap:
/// third-party crates see raw bytes (azure_core prints request bodies, VMAccess passwords
/// included, and the bearer token at debug/trace; serenity 0.12 logs a gateway payload it cannot
/// parse, e.g. a modal submit carrying a password, at WARN in `gateway/ws.rs`). The bot runs
/// from this binary, so the cap holds there too.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let requested = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,rdp_doctor=info".into());
    let filter = EnvFilter::try_new(requested).unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colour as anstream decides for stderr (`NO_COLOR`, `CLICOLOR`, `CLICOLOR_FORCE`, a
    // terminal), written through its stream so a Windows console without ANSI gets colour too.
    let colour = anstream::AutoStream::choice(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(move || anstream::AutoStream::new(std::io::stderr(), colour))
        .with_ansi(colour != anstream::ColorChoice::Never)
        .with_filter(tracing_subscriber::filter::filter_fn(within_cap))
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Chat gateway crates: their WARN lines may quote a payload they could not parse.
const GATEWAY_TARGETS: [&str; 4] = ["serenity", "poise", "tungstenite", "tokio_tungstenite"];

/// The hard cap: rdp-doctor's own targets as `RUST_LOG` says; chat gateway crates at ERROR;
/// every other target (azure_core, azure_identity, reqwest, hyper, h2, rustls, sqlx, and `log`
/// records bridged from crates that use the `log` facade) at WARN.
fn within_cap(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let under = |root: &str| {
        target == root
            || target
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with("::"))
    };
    if under("rdp_doctor") {
        return true;
    }
    let cap = if GATEWAY_TARGETS.iter().any(|root| under(root)) {
        tracing::Level::ERROR
    } else {
        tracing::Level::WARN
    };
    *meta.level() <= cap
}

/// `--from IP`: an IPv4 address, or a usage error saying what was wrong.
fn parse_from(from: Option<&str>) -> Result<Option<std::net::Ipv4Addr>, CliError> {
    match from.map(|text| (text, text.trim().parse())) {
        None => Ok(None),
        Some((_, Ok(ip))) => Ok(Some(ip)),
        Some((text, Err(_))) => Err(CliError::usage(format!(
            "--from {text:?} is not an IPv4 address (e.g. --from 203.0.113.7)"
        ))),
    }
}

/// One JSON object on a line of `out` (`--json`); exit code 3 if it cannot be serialised.
fn print_json(
    out: &mut impl Write,
    value: &impl serde::Serialize,
    what: &str,
) -> Result<(), CliError> {
    let json = serde_json::to_string(value)
        .map_err(|e| CliError::failed(format!("cannot serialise {what}: {e}")))?;
    let _ = writeln!(out, "{json}");
    Ok(())
}

async fn run(cli: Cli) -> Result<Done, CliError> {
    match cli.command {
        Command::Explain { text } => {
            let catalog = load_catalog()?;
            Ok(explain(&catalog, &explain_text(text)?))
        }
        Command::Simulate {
            listen,
            world,
            alert_to,
            alert,
            alert_resolve_after,
        } => {
            let alert = alert_to.zip(alert).map(|(url, vm)| simulate::AlertTo {
                url,
                vm,
                resolve_after: alert_resolve_after.map(std::time::Duration::from_secs),
            });
            let result = match world {
                Some(path) => crate::sim::run_standalone(&listen, &path).await,
                None => simulate::serve_demo(&listen, alert).await,
            };
            result
                .map(|()| Done::Clean)
                .map_err(|e| CliError::usage(format!("{e:#}")))
        }
        Command::Check(args) => check(args).await,
        Command::Sweep(args) => sweep::run(args).await,
        Command::Bot { simulate } => bot(simulate).await,
        Command::Serve { simulate } => serve(simulate).await,
        Command::Register => register().await,
        Command::Start(a) => run_fix(a, |_| Ok(FixRequest::Start)).await,
        Command::Restart(a) => run_fix(a, |_| Ok(FixRequest::Restart)).await,
        Command::Redeploy(a) => run_fix(a, |_| Ok(FixRequest::Redeploy)).await,
        Command::ResetConfig(a) => run_fix(a, |_| Ok(FixRequest::ResetRdpConfig)).await,
        Command::RemoveRoute(a) => run_fix(a, |_| Ok(FixRequest::RemoveRoute)).await,
        Command::RequestJit { fix, from, hours } => {
            run_fix(fix, move |_| {
                Ok(FixRequest::RequestJit {
                    source: from,
                    hours,
                })
            })
            .await
        }
        Command::ResetPassword {
            fix,
            user,
            password_stdin,
        } => {
            run_fix(fix, move |_| {
                let password = fix::read_password(password_stdin).map_err(CliError::usage)?;
                crate::runbook::fix::check_password(&user, &password)
                    .map_err(|p| CliError::usage(format!("nothing was sent: {p}")))?;
                Ok(FixRequest::ResetPassword {
                    username: user.clone(),
                    password,
                })
            })
            .await
        }
        Command::OpenRdp { fix, source, port } => {
            run_fix(fix, move |_| {
                crate::runbook::fix::parse_source(&source)
                    .map(|source| FixRequest::OpenRdpPort { source, port })
                    .map_err(CliError::usage)
            })
            .await
        }
        Command::Fix {
            fix,
            action,
            source,
            port,
        } => {
            run_fix(fix, move |_| {
                fix::request_by_id(&action, source.as_deref(), port)
            })
            .await
        }
        Command::Confirm { id, simulate } => {
            let (door, _sim) = terminal_door(simulate, &[], true).await?;
            fix::confirm(&door, &id).await
        }
        Command::Cancel { id, simulate } => {
            let (door, _sim) = terminal_door(simulate, &[], true).await?;
            fix::cancel(&door, &id).await
        }
        Command::Operations => {
            let (door, _sim) = terminal_door(false, &[], true).await?;
            operations::list(&door).await
        }
        Command::Resume => {
            let (door, _sim) = terminal_door(false, &[], true).await?;
            operations::resume(&door).await
        }
        Command::Unlock {
            vm,
            reason,
            subscription,
        } => {
            let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                return Err(CliError::usage(
                    "say why with --reason TEXT: it is written to the audit log with the unlock",
                ));
            };
            let (door, _sim) = terminal_door(false, &subscription, true).await?;
            operations::unlock(&door, &vm, &reason).await
        }
        Command::Permissions {
            subscription,
            simulate,
        } => {
            let (door, _sim) = terminal_door(simulate, &subscription, false).await?;
            permissions::run(&door).await
        }
        Command::Audit { vm, limit } => {
            let (door, _sim) = terminal_door(false, &[], true).await?;
            fix::audit(&door, vm.as_deref(), limit).await
        }
        Command::History {
            vm,
            limit,
            subscription,
        } => {
            VmQuery::parse(&vm).map_err(CliError::usage)?;
            let (door, _sim) = terminal_door(false, &subscription, true).await?;
            history::run(&door, &vm, limit).await
        }
        Command::Health => {
            load_catalog()?;
            println!("ok");
            Ok(Done::Clean)
        }
        Command::Probe { url } => probe(&url).await,
        Command::Changes(args) => changes::run(args).await,
    }
}

fn load_catalog() -> Result<Catalog, CliError> {
    let file = FileConfig::load().map_err(CliError::usage)?;
    match &file.runbook_dir {
        Some(dir) => Catalog::load_dir(dir).map_err(CliError::usage),
        None => Ok(Catalog::builtin()),
    }
}

/// How many entries `explain` prints in full; the others are named.
const EXPLAIN_SHOWN: usize = 3;

/// The text to explain: the arguments joined, or standard input for none or `-`.
fn explain_text(args: Vec<String>) -> Result<String, CliError> {
    if !(args.is_empty() || args == ["-"]) {
        return Ok(args.join(" "));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text).map_err(|e| {
        CliError::usage(format!(
            "cannot read the error text from standard input: {e}"
        ))
    })?;
    if text.trim().is_empty() {
        return Err(CliError::usage(
            "give the error text: `rdp-doctor explain \"An internal error has occurred\"`, or pipe it in",
        ));
    }
    Ok(text)
}

fn explain(catalog: &Catalog, text: &str) -> Done {
    let matches = catalog.explain(text);
    let style = render::Style::stdout();
    let mut out = String::new();
    if matches.is_empty() {
        out.push_str(&render::explain_nothing(&catalog.closest(text, 3), &style));
    }
    for error in matches.iter().take(EXPLAIN_SHOWN) {
        out.push_str(&render::explain(error, &style));
    }
    if matches.len() > EXPLAIN_SHOWN {
        let others: Vec<&str> = matches[EXPLAIN_SHOWN..]
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        out.push_str(&format!("Also matches: {}\n", others.join(", ")));
    }
    anstream::print!("{out}");
    if matches.is_empty() {
        Done::Problems
    } else {
        Done::Clean
    }
}

async fn check(args: CheckArgs) -> Result<Done, CliError> {
    let from = parse_from(args.from.as_deref())?;
    VmQuery::parse(&args.vm).map_err(CliError::usage)?;
    // With --simulate the simulator lives as long as this check.
    let (door, _simulator) = terminal_door(args.simulate, &args.subscription, false).await?;
    let progress = render::Progress::new(!args.json && std::io::stderr().is_terminal());
    let options = CheckOptions { from };
    let catalog = door.catalog();
    let style = render::Style::stdout();
    let result = if args.guest {
        // The ARM findings as soon as they are in, then a line while Run Command runs.
        door.guest(&fix::caller(), &args.vm, &options, &|event| match &event {
            Event::ArmChecked(report) if !args.json => {
                progress.finish();
                let _ = write!(
                    anstream::stdout().lock(),
                    "{}",
                    render::report(report, catalog, &style, args.screenshot_out.as_deref())
                );
            }
            Event::GuestStarted if !args.json => {
                anstream::eprintln!("{}", render::Style::stderr().dim(render::GUEST_RUNNING))
            }
            _ => progress.event(&event),
        })
        .await
    } else {
        door.check(&fix::caller(), &args.vm, &options, &|event| {
            progress.event(&event)
        })
        .await
    };
    progress.finish();
    let report = result?;

    if let Some(path) = &args.screenshot_out {
        match &report.screenshot_png {
            Some(png) => {
                if let Err(e) = std::fs::write(path, png) {
                    eprintln!(
                        "warning: cannot write the screenshot to {}: {e}",
                        path.display()
                    );
                }
            }
            None => eprintln!(
                "warning: no console screenshot to write to {} (see the boot-diagnostics finding)",
                path.display()
            ),
        }
    }

    if args.json {
        print_json(&mut std::io::stdout().lock(), &report, "the report")?;
    } else if args.guest {
        let _ = write!(
            anstream::stdout().lock(),
            "{}",
            render::guest_part(&report, catalog, &style)
        );
    } else {
        let _ = write!(
            anstream::stdout().lock(),
            "{}",
            render::report(&report, catalog, &style, args.screenshot_out.as_deref())
        );
    }
    match report.verdict {
        Verdict::Ok => Ok(Done::Clean),
        // A single check never says this (a sweep's row does); it cannot connect either.
        Verdict::Problems | Verdict::ClosedByJit => Ok(Done::Problems),
        Verdict::Unknown => Err(CliError::Incomplete),
    }
}

/// How to sign in as the environment (or `--simulate`) says, with the subscriptions to search.
/// The simulator, if any, lives as long as the returned guard.
async fn sign_in(
    simulate: bool,
    cli_subscriptions: &[String],
    file: &FileConfig,
) -> Result<(SignIn, Vec<String>, Option<simulate::Demo>), CliError> {
    if simulate {
        let started = simulate::Demo::start().await;
        let (sim, endpoint) = started
            .and_then(|sim| sim.endpoint().map(|e| (sim, e)))
            .map_err(|e| CliError::failed(format!("cannot start the simulator: {e:#}")))?;
        let sign_in = SignIn::Secret {
            endpoint,
            tenant: simulate::DEMO_TENANT.to_string(),
            client: simulate::DEMO_CLIENT.to_string(),
            secret: sim.client_secret(),
        };
        let subs = if cli_subscriptions.is_empty() {
            sim.subscription_ids()
        } else {
            config::subscriptions(cli_subscriptions, file)
        };
        Ok((sign_in, subs, Some(sim)))
    } else {
        let endpoint = config::arm_endpoint().map_err(CliError::usage)?;
        Ok((
            SignIn::Environment { endpoint },
            config::subscriptions(cli_subscriptions, file),
            None,
        ))
    }
}

/// `DISCORD_TOKEN`, `DISCORD_GUILD_ID` and `DISCORD_API_URL`, as the bot, the endpoint and
/// `register` read them.
fn discord_env() -> Result<(secrecy::SecretString, Option<u64>, Option<String>), CliError> {
    let token = match std::env::var("DISCORD_TOKEN") {
        Ok(t) if !t.trim().is_empty() => secrecy::SecretString::from(t.trim().to_string()),
        _ => return Err(CliError::usage(
            "DISCORD_TOKEN is not set: the bot needs its token from the Discord Developer Portal",
        )),
    };
    let guild_id = id_var("DISCORD_GUILD_ID", "a guild id")?;
    let api_url = std::env::var("DISCORD_API_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    Ok((token, guild_id, api_url))
}

/// A numeric Discord id from the environment, if set.
fn id_var(name: &str, what: &str) -> Result<Option<u64>, CliError> {
    match std::env::var(name) {
        Ok(g) if !g.trim().is_empty() => g
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| CliError::usage(format!("{name}={g:?} is not {what} (a number)"))),
        _ => Ok(None),
    }
}

fn directory_refresh(file: &FileConfig) -> std::time::Duration {
    std::time::Duration::from_secs(file.vm_list_refresh_secs.unwrap_or(60).max(5))
}

fn bot_error(e: crate::discord::BotError) -> CliError {
    match e {
        e @ crate::discord::BotError::TokenRejected => CliError::usage(e),
        e => CliError::failed(e),
    }
}

async fn bot(simulate: bool) -> Result<Done, CliError> {
    let (token, guild_id, api_url) = discord_env()?;
    let file = FileConfig::load().map_err(CliError::usage)?;
    let (door, _simulator) = door_with(simulate, &[], &file, Front::Discord(guild_id)).await?;
    let metrics_listener = match std::env::var("RDP_DOCTOR_METRICS_LISTEN") {
        Ok(listen) if !listen.trim().is_empty() => {
            Some(crate::net::listen(listen.trim()).await.map_err(|e| {
                CliError::usage(format!(
                    "cannot listen on RDP_DOCTOR_METRICS_LISTEN={listen}: {e}"
                ))
            })?)
        }
        _ => None,
    };
    // Bots sharing a PostgreSQL database take turns on the gateway; on SQLite there is one.
    let url = database_url(simulate);
    let standby = match crate::store::Backend::of(&url) {
        Some(crate::store::Backend::Postgres) => Some(crate::runbook::standby::Standby::new(
            crate::store::GatewayLock::new(&url).map_err(CliError::usage)?,
            file.replicas.standby_check(),
        )),
        _ => None,
    };
    let settings = crate::discord::BotSettings {
        token,
        api_url,
        guild_id,
        directory_refresh: directory_refresh(&file),
        metrics_listener,
        standby,
    };
    let bot = crate::discord::Bot::new(door);
    crate::discord::run(settings, bot)
        .await
        .map(|()| Done::Clean)
        .map_err(bot_error)
}

async fn serve(simulate: bool) -> Result<Done, CliError> {
    let (token, guild_id, api_url) = discord_env()?;
    let public_key = match std::env::var("DISCORD_PUBLIC_KEY") {
        Ok(k) if !k.trim().is_empty() => k
            .parse::<crate::discord::serve::PublicKey>()
            .map_err(CliError::usage)?,
        _ => return Err(CliError::usage(
            "DISCORD_PUBLIC_KEY is not set: the endpoint checks Discord's signatures with the application's public key from the Developer Portal",
        )),
    };
    let application_id = id_var("DISCORD_APPLICATION_ID", "an application id")?;
    let listen = std::env::var("RDP_DOCTOR_LISTEN")
        .ok()
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| "0.0.0.0:8080".to_string());
    let file = FileConfig::load().map_err(CliError::usage)?;
    let (door, _simulator) = door_with(simulate, &[], &file, Front::Discord(guild_id)).await?;
    let listener = crate::net::listen(listen.trim()).await.map_err(|e| {
        CliError::usage(format!("cannot listen on RDP_DOCTOR_LISTEN={listen}: {e}"))
    })?;
    let settings = crate::discord::serve::ServeSettings {
        token,
        api_url,
        guild_id,
        application_id,
        public_key,
        directory_refresh: directory_refresh(&file),
        alert_token: std::env::var("RDP_DOCTOR_ALERT_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(secrecy::SecretString::from),
        alerts: file.alerts.settings().map_err(CliError::usage)?,
    };
    let bot = crate::discord::Bot::new(door);
    crate::discord::serve::serve(listener, settings, bot)
        .await
        .map(|()| Done::Clean)
        .map_err(bot_error)
}

/// `rdp-doctor probe URL`: 0 on a 2xx answer within 10 seconds; else 1 (`Done::Problems`) with
/// the status and the body's first line, or why there was no answer, on stderr.
async fn probe(url: &str) -> Result<Done, CliError> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| CliError::failed(format!("cannot make an HTTP client: {e}")))?;
    let (ok, line) = match client.get(url).send().await {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let first = body.lines().next().unwrap_or("").trim().to_string();
            (status.is_success(), format!("{status}: {first}"))
        }
        Err(e) => (false, format!("no answer from {url}: {e}")),
    };
    if ok {
        return Ok(Done::Clean);
    }
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    Ok(Done::Problems)
}

async fn register() -> Result<Done, CliError> {
    let (token, guild_id, api_url) = discord_env()?;
    let application_id = id_var("DISCORD_APPLICATION_ID", "an application id")?;
    crate::discord::register_commands(&token, api_url.as_deref(), application_id, guild_id)
        .await
        .map_err(bot_error)?;
    let _ = writeln!(
        std::io::stdout().lock(),
        "/rdp registered {}",
        match guild_id {
            Some(g) => format!("in guild {g}"),
            None => "globally (Discord may take up to an hour to show it everywhere)".to_string(),
        }
    );
    Ok(Done::Clean)
}

/// The database: `RDP_DOCTOR_DATABASE_URL`, default `sqlite://rdp-doctor.db` (in memory with
/// `--simulate` unless set).
fn database_url(simulate: bool) -> String {
    match std::env::var("RDP_DOCTOR_DATABASE_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ if simulate => "sqlite::memory:".to_string(),
        _ => "sqlite://rdp-doctor.db".to_string(),
    }
}

/// Which front end a door is for: the policy's defaults differ.
#[derive(Clone, Copy)]
enum Front {
    Terminal {
        store: bool,
    },
    /// With `DISCORD_GUILD_ID`, the guild the commands are registered in.
    Discord(Option<u64>),
}

/// The door for a terminal command (with the store for fixes and the audit log).
async fn terminal_door(
    simulate: bool,
    subscriptions: &[String],
    store: bool,
) -> Result<(Door, Option<simulate::Demo>), CliError> {
    let file = FileConfig::load().map_err(CliError::usage)?;
    door_with(simulate, subscriptions, &file, Front::Terminal { store }).await
}

/// Azure (or the simulator), the runbook, the policy and, where needed, the store.
async fn door_with(
    simulate: bool,
    subscriptions: &[String],
    file: &FileConfig,
    front: Front,
) -> Result<(Door, Option<simulate::Demo>), CliError> {
    let catalog = match &file.runbook_dir {
        Some(dir) => Catalog::load_dir(dir).map_err(CliError::usage)?,
        None => Catalog::builtin(),
    };
    let policy_config = match (&file.policy, simulate, front) {
        (Some(p), _, _) => Some(p.clone()),
        // The demo world is a training ground: the person at the terminal may do everything.
        (None, true, Front::Terminal { .. }) => Some(PolicyConfig::demo(&fix::os_user())),
        (None, _, _) => None,
    };
    let mut policy = Policy::new(policy_config.as_ref()).map_err(CliError::usage)?;
    if let Front::Discord(guild) = front {
        policy = policy.with_guild(guild);
    }
    let (sign_in, subs, sim) = sign_in(simulate, subscriptions, file).await?;
    let door = Door::connect(
        sign_in,
        &file.azure,
        Arc::new(catalog),
        Arc::new(policy),
        subs,
    )
    .map_err(CliError::usage)?
    .with_limiter(crate::runbook::limits::PersonLimiter::from_config(
        &file.limits,
    ))
    .with_changes_window(file.changes.window());
    let door = match front {
        Front::Terminal { store: false } => door,
        _ => {
            let store = crate::store::Store::open(&database_url(simulate))
                .await
                // A database that cannot be opened is configuration (exit 2).
                .map_err(CliError::usage)?;
            // Every terminal command on a machine is one owner (a stopped one's operation is
            // the next command's to follow at once); each bot or `serve` process is its own
            // replica, whose operations others take over once its lease lapses.
            let replica = match front {
                Front::Terminal { .. } => format!("cli@{}", crate::runbook::operate::host_name()),
                Front::Discord(_) => crate::runbook::operate::replica_id(),
            };
            door.with_watch(crate::runbook::watch::WatchSettings::from_config(
                &file.watch,
                &file.history,
            ))
            .with_store(store)
            .with_replica(&replica, file.replicas.lease())
        }
    };
    Ok((door, sim))
}

async fn run_fix(
    args: FixArgs,
    build: impl FnOnce(&str) -> Result<FixRequest, CliError>,
) -> Result<Done, CliError> {
    // Bad input is refused before any Azure call or prompt.
    VmQuery::parse(&args.vm).map_err(CliError::usage)?;
    let request = build(&args.vm)?;
    let (door, _sim) = terminal_door(args.simulate, &args.subscription, true).await?;
    fix::request_and_maybe_confirm(&door, &args.vm, request, args.yes).await
}
