//! The `rdp-doctor` binary as a person or a script runs it: against a simulator on loopback,
//! configured only through the environment variables of ARCHITECTURE.md's external contract.

use crate::support;

/// `check --guest`: the guest checks from the terminal.
mod guest;

/// "Recent changes" and `rdp-doctor changes VM`.
mod changes;

use rdp_doctor::sim::{SimOptions, World};
use std::path::PathBuf;
use std::process::Output;
use support::within;

struct Cli {
    /// The suite's harness: the simulator the binary talks to.
    h: support::Harness,
    /// The secret the binary is given (a test may give a wrong one).
    secret: String,
    subscriptions: String,
    /// `RDP_DOCTOR_DATABASE_URL` of the fix commands: a SQLite file in `dir` unless a test
    /// chose PostgreSQL.
    database: String,
    dir: PathBuf,
}

impl Cli {
    async fn start(world: World) -> Cli {
        Cli::with_options(world, SimOptions::fast()).await
    }

    async fn with_options(world: World, options: SimOptions) -> Cli {
        let h = support::Harness::with_options(world, options).await;
        let subscriptions = h.subscriptions.join(",");
        let dir = support::scratch_dir("cli", &h.sim);
        std::fs::write(
            dir.join("rdp-doctor.toml"),
            "[azure]\nrequest_timeout_secs = 2\nmax_retries = 1\nmax_retry_secs = 5\npoll_interval_ms = 10\n",
        )
        .expect("config");
        Cli {
            secret: h.secret(),
            h,
            subscriptions,
            database: format!("sqlite://{}", dir.join("rdp-doctor.db").display()),
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        self.program(env!("CARGO_BIN_EXE_rdp-doctor"), args)
    }

    /// Another program in the environment `command` gives rdp-doctor.
    fn program(&self, program: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .env("AZURE_RESOURCE_MANAGER_URL", self.h.sim.url())
            .env("AZURE_AUTHORITY_HOST", self.h.sim.url())
            .env("AZURE_TENANT_ID", support::TENANT)
            .env("AZURE_CLIENT_ID", support::CLIENT)
            .env("AZURE_CLIENT_SECRET", &self.secret)
            .env("AZURE_SUBSCRIPTION_ID", &self.subscriptions)
            .env("RDP_DOCTOR_CONFIG", self.dir.join("rdp-doctor.toml"))
            .current_dir(&self.dir)
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("binary runs")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

fn keys(v: &serde_json::Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn json_output_has_the_documented_shape() {
    within(async {
        let cli = Cli::start(World::new().vm("web-01")).await;
        let out = cli.run(&["check", "web-01", "--json"]).await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let v = json(&out);
        assert_eq!(
            keys(&v),
            [
                "changes",
                "findings",
                "next_action",
                "stats",
                "verdict",
                "vm"
            ]
        );
        assert_eq!(keys(&v["changes"]), ["changes", "status", "window_minutes"]);
        assert_eq!(v["changes"]["status"], "listed");
        assert_eq!(
            keys(&v["vm"]),
            ["id", "name", "resource_group", "subscription_id"]
        );
        assert_eq!(keys(&v["stats"]), ["arm_requests", "elapsed_ms"]);
        assert_eq!(v["verdict"], "ok");
        assert_eq!(v["next_action"], serde_json::Value::Null);
        assert_eq!(v["vm"]["name"], "web-01");
        let steps: Vec<&str> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["step"].as_str().unwrap())
            .collect();
        assert_eq!(
            steps,
            [
                "vm-status",
                "vm-agent",
                "public-ip",
                "nsg",
                "resource-health",
                "boot-diagnostics",
                "network-path"
            ]
        );
        for f in v["findings"].as_array().unwrap() {
            assert_eq!(keys(f), ["evidence", "status", "step", "summary"]);
        }
        let nsg = &v["findings"][3]["evidence"];
        for key in ["allowed", "rule", "priority", "nsg", "source"] {
            assert!(nsg.get(key).is_some(), "nsg evidence lacks {key}: {nsg}");
        }
        assert_eq!(
            v["stats"]["arm_requests"].as_u64().unwrap(),
            cli.h.sim.stats().requests
        );
    })
    .await
}

#[tokio::test]
async fn problems_exit_1_with_the_next_action() {
    within(async {
        let cli = Cli::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let out = cli.run(&["check", "web-02", "--json"]).await;
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        let v = json(&out);
        assert_eq!(v["verdict"], "problems");
        assert_eq!(v["next_action"], "open-rdp-port");
        assert_eq!(v["findings"][3]["status"], "fail");
        assert_eq!(v["findings"][3]["evidence"]["allowed"], false);
    })
    .await
}

/// An NSG's name is unique only within its resource group (Microsoft Learn, "Naming rules and
/// restrictions for Azure resources": `networkSecurityGroups`, scope "resource group"). Two VMs
/// web-01, in rg-a and rg-b of one subscription, each with its own NIC NSG `web-01-nsg`: each
/// check reads its own VM's, by the NSG's id, and the simulator answers each from its group.
#[tokio::test]
async fn same_named_nsgs_in_two_resource_groups_are_each_their_vms_own() {
    within(async {
        let cli = Cli::start(
            World::new()
                .vm("web-01")
                .in_group("rg-a")
                .vm("web-01")
                .in_group("rg-b")
                .nic_nsg_denies_rdp(),
        )
        .await;
        let a = cli.run(&["check", "rg-a/web-01", "--json"]).await;
        assert_eq!(code(&a), 0, "{}", stderr(&a));
        assert_eq!(json(&a)["findings"][3]["evidence"]["rule"], "allow-rdp");
        let b = cli.run(&["check", "rg-b/web-01", "--json"]).await;
        assert_eq!(code(&b), 1, "{}", stderr(&b));
        let v = json(&b);
        assert_eq!(v["findings"][3]["status"], "fail");
        assert_eq!(v["findings"][3]["evidence"]["rule"], "deny-rdp-internet");
        assert_eq!(v["findings"][3]["evidence"]["nsg"], "web-01-nsg");
    })
    .await
}

#[tokio::test]
async fn from_tests_a_given_address() {
    within(async {
        let cli = Cli::start(World::new().vm("jump-01").office_only_rdp("203.0.113.0/24")).await;
        let inside = cli
            .run(&["check", "jump-01", "--json", "--from", "203.0.113.9"])
            .await;
        assert_eq!(code(&inside), 0, "{}", stderr(&inside));
        assert_eq!(
            json(&inside)["findings"][3]["evidence"]["source"],
            "203.0.113.9"
        );
        let bad = cli.run(&["check", "jump-01", "--from", "my-laptop"]).await;
        assert_eq!(code(&bad), 2);
        assert!(
            stderr(&bad).contains("not an IPv4 address"),
            "{}",
            stderr(&bad)
        );
    })
    .await
}

#[tokio::test]
async fn usage_not_found_and_ambiguous_exit_2() {
    within(async {
        let cli = Cli::start(
            World::new()
                .vm("web-01")
                .vm("api-01")
                .in_group("rg-east")
                .subscription("22222222-2222-2222-2222-222222222222")
                .vm("api-01")
                .in_group("rg-west"),
        )
        .await;
        let missing = cli.run(&["check", "web-1"]).await;
        assert_eq!(code(&missing), 2);
        assert!(
            stderr(&missing).contains("Did you mean: web-01 (rg-web)"),
            "{}",
            stderr(&missing)
        );
        let ambiguous = cli.run(&["check", "api-01"]).await;
        assert_eq!(code(&ambiguous), 2);
        let err = stderr(&ambiguous);
        assert!(
            err.contains("rg-east/api-01") && err.contains("rg-west/api-01"),
            "{err}"
        );
        let invalid = cli.run(&["check", "web_01;rm -rf"]).await;
        assert_eq!(code(&invalid), 2);
        assert!(stderr(&invalid).contains("not a valid Azure VM name"));
        // Each failure is printed once, by `main`, however deep it was found.
        for (args, exit) in [
            (&["check", "web-1"][..], 2),
            (&["check", "web-01", "--from", "nowhere"][..], 2),
            (&["open-rdp", "web-01", "--source", "no such source"][..], 2),
            (&["sweep", "--subscription", "not-a-guid"][..], 2),
            (&["unlock", "web-01"][..], 2),
        ] {
            let out = cli.run(args).await;
            assert_eq!(code(&out), exit, "{args:?}: {}", stderr(&out));
            assert_eq!(
                stderr(&out).matches("error:").count(),
                1,
                "{args:?}: {}",
                stderr(&out)
            );
        }
        assert_eq!(code(&cli.run(&["check"]).await), 2, "missing argument");
        let requests_before = cli.h.sim.stats().requests;
        assert_eq!(code(&cli.run(&["check", "-bad-"]).await), 2);
        assert_eq!(
            cli.h.sim.stats().requests,
            requests_before,
            "validated before any call"
        );
    })
    .await
}

#[tokio::test]
async fn azure_failures_exit_3_with_one_line_and_no_secret() {
    within(async {
        let mut cli = Cli::start(World::new().vm("web-01")).await;
        cli.secret = "wrong-secret-value-123".into();
        let out = cli.run(&["check", "web-01"]).await;
        assert_eq!(code(&out), 3);
        let err = stderr(&out);
        assert!(err.contains("invalid_client"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("wrong-secret-value-123"));
        assert!(!err.contains("panicked"));
    })
    .await
}

#[tokio::test]
async fn server_errors_exit_3() {
    within(async {
        let options = support::failing(vec![rdp_doctor::sim::Fault::new(
            "virtualMachines",
            rdp_doctor::sim::FaultKind::Status(500),
        )]);
        let cli = Cli::with_options(World::new().vm("web-01"), options).await;
        let out = cli.run(&["check", "web-01", "--json"]).await;
        assert_eq!(code(&out), 3);
        assert!(
            stderr(&out).contains("HTTP 500 (InternalServerError)"),
            "{}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty());
    })
    .await
}

#[tokio::test]
async fn screenshot_out_writes_a_png() {
    within(async {
        let cli = Cli::start(World::new().vm("web-01")).await;
        let file = cli.path("console.png");
        let out = cli
            .run(&[
                "check",
                "web-01",
                "--screenshot-out",
                file.to_str().unwrap(),
            ])
            .await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let png = std::fs::read(&file).expect("screenshot written");
        let img =
            image::load_from_memory_with_format(&png, image::ImageFormat::Png).expect("a real PNG");
        assert_eq!((img.width(), img.height()), (320, 240));
        assert!(stdout(&out).contains("Console screenshot written to"));
    })
    .await
}

#[tokio::test]
async fn explain_matches_the_runbook_errors() {
    within(async {
        let cli = Cli::start(World::new()).await;
        let cases = [
            ("The remote session was disconnected because there are no Remote Desktop License Servers available to provide a license.", "License"),
            ("An authentication error has occurred. The Local Security Authority cannot be contacted", "Local Security Authority"),
            ("Your credentials did not work", "credentials"),
            ("This computer can't connect to the remote computer.", "can't connect"),
        ];
        for (text, expect) in cases {
            let out = cli.run(&["explain", text]).await;
            assert_eq!(code(&out), 0, "{text}");
            let s = stdout(&out);
            assert!(s.contains(expect) && s.contains("Cause:") && s.contains("Fix:"), "{s}");
        }
        let none = cli.run(&["explain", "the printer is on fire"]).await;
        assert_eq!(code(&none), 1);
        assert!(stdout(&none).contains("No known Remote Desktop client error"));
    })
    .await
}

/// What people paste: the dialog's title, wrapped lines, curly apostrophes and the code lines,
/// as arguments or piped in; the answer names the checks and fixes; nothing matching lists the
/// closest messages.
#[tokio::test]
async fn explain_reads_pastes_and_names_the_checks_and_fixes() {
    use tokio::io::AsyncWriteExt;
    within(async {
        let cli = Cli::start(World::new()).await;
        let out = cli
            .run(&["explain", "Remote Desktop Connection\n\nAn internal error has\noccurred.\n\nError code: 0x4\nExtended error code: 0x0"])
            .await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        insta::assert_snapshot!(stdout(&out), @r#"
An internal error has occurred.
  Cause: The VM accepts the TCP connection but its RDP stack cannot set up the session: the listener's certificate is expired, damaged or unreadable (its MachineKeys permissions), TLS is disabled on the VM, the RDP security layer does not match the client, or Remote Desktop Services is hung.
  Fix: Look inside the VM (`rdp-doctor check VM --guest`): renew the RDP certificate if it is expired or missing (fix `renew-rdp-certificate`: the certificate is regenerated when TermService restarts), and restart Remote Desktop Services (fix `start-termservice`). Check that the listener port is the one you connect to and that TLS 1.0-1.2 are enabled for the server. Then connect again.
  Checks: guest-certificate, guest-service, guest-listener, guest-nla (run `rdp-doctor check VM --guest`)
  Fixes: renew-rdp-certificate, start-termservice
  https://learn.microsoft.com/en-us/troubleshoot/azure/virtual-machines/windows/troubleshoot-rdp-internal-error
"#);

        // Several words without quotes, and a code alone.
        let words = cli.run(&["explain", "we", "couldn’t", "connect", "to", "the", "remote", "PC"]).await;
        assert_eq!(code(&words), 0);
        assert!(stdout(&words).starts_with("We couldn't connect to the remote PC."), "{}", stdout(&words));
        assert!(stdout(&words).contains("(run `rdp-doctor check VM --guest --from YOUR_IP`)"), "{}", stdout(&words));
        let by_code = cli.run(&["explain", "0x00000204"]).await;
        assert_eq!(stdout(&by_code), stdout(&words));

        // Piped in, with `-` or with no argument at all.
        for args in [&["explain", "-"][..], &["explain"]] {
            let mut child = cli
                .command(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all("The remote session was disconnected because there are no Remote Desktop\r\nLicense Servers available to provide a license.\r\n".as_bytes())
                .await
                .unwrap();
            drop(stdin);
            let out = child.wait_with_output().await.unwrap();
            assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
            let s = stdout(&out);
            assert!(s.contains("Checks: guest-licensing (run `rdp-doctor check VM --guest`)"), "{s}");
            assert!(s.contains("Fixes: remove-rdsh-role"), "{s}");
        }

        // Nothing piped in is a usage error, not a silent "no match".
        let empty = cli
            .command(&["explain"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        assert_eq!(code(&empty), 2, "{}", stdout(&empty));
        assert!(stderr(&empty).contains("give the error text"), "{}", stderr(&empty));

        // A misspelt message: exit 1, how to paste better, the closest entries.
        let none = cli.run(&["explain", "an internal erorr occured"]).await;
        assert_eq!(code(&none), 1);
        insta::assert_snapshot!(stdout(&none), @r#"
No known Remote Desktop client error matches that text.
Paste the message as the dialog shows it (a sentence of it is enough), or its error code such as 0x204.
Run `rdp-doctor check VM` to run the runbook's checks instead.

The closest known messages:
  - An internal error has occurred. (internal-error)
  - Windows Security error: Your credentials did not work. (credentials-did-not-work)
  - Remote Desktop can't find the computer "name". (cannot-find-computer)
"#);
    })
    .await
}

/// Colour is anstream's decision: `CLICOLOR_FORCE=1` colours the report and the log lines even
/// into a pipe, `NO_COLOR` takes it away (also over `CLICOLOR_FORCE`), a pipe alone has none,
/// and the words are the same either way; a terminal has colour unless `NO_COLOR`, `CLICOLOR=0`
/// or `TERM=dumb` say otherwise.
#[tokio::test]
async fn colour_follows_clicolor_force_and_no_color() {
    within(async {
        let cli = Cli::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let run = |colour: &[(&str, &str)]| {
            let mut cmd = cli.command(&["check", "web-02"]);
            cmd.env_remove("NO_COLOR")
                .env("RUST_LOG", "rdp_doctor=debug");
            for (name, value) in colour {
                cmd.env(name, value);
            }
            async move { cmd.output().await.expect("binary runs") }
        };
        let escape = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
        let words = |out: &Output| {
            let text = escape.replace_all(&stdout(out), "").into_owned();
            let elapsed = regex::Regex::new(r"ARM requests, [\d.]+ s").unwrap();
            elapsed
                .replace(&text, "ARM requests, <elapsed> s")
                .into_owned()
        };

        let forced = run(&[("CLICOLOR_FORCE", "1")]).await;
        assert_eq!(code(&forced), 1, "{}", stderr(&forced));
        assert!(escape.is_match(&stdout(&forced)), "{}", stdout(&forced));
        assert!(
            escape.is_match(&stderr(&forced)),
            "log lines: {}",
            stderr(&forced)
        );
        let fail = regex::Regex::new("\x1b\\[[0-9;]*m(\x1b\\[[0-9;]*m)*FAIL\x1b\\[0m").unwrap();
        assert!(fail.is_match(&stdout(&forced)), "{}", stdout(&forced));

        let plain = run(&[("NO_COLOR", "1")]).await;
        let both = run(&[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]).await;
        let piped = run(&[]).await;
        for out in [&plain, &both, &piped] {
            assert_eq!(code(out), 1, "{}", stderr(out));
            assert!(!stdout(out).contains('\x1b'), "{}", stdout(out));
            assert!(!stderr(out).contains('\x1b'), "{}", stderr(out));
            assert!(
                stderr(out).contains("rdp-doctor starting"),
                "{}",
                stderr(out)
            );
            assert_eq!(words(out), words(&forced));
        }

        // On a terminal (a pseudo-terminal from util-linux's `script`): colour unless NO_COLOR,
        // CLICOLOR=0 or a terminal that has none (TERM=dumb).
        let on_terminal = |colour: &[(&str, &str)]| {
            let line = format!(
                "'{}' explain 'Your credentials did not work'",
                env!("CARGO_BIN_EXE_rdp-doctor")
            );
            let mut script = cli.program("script", &["-q", "-e", "-c", &line, "/dev/null"]);
            script
                .env_remove("NO_COLOR")
                .env("TERM", "xterm")
                .env("SHELL", "/bin/sh")
                .stdin(std::process::Stdio::null());
            for (name, value) in colour {
                script.env(name, value);
            }
            async move { script.output().await.expect("script runs") }
        };
        let out = on_terminal(&[]).await;
        assert_eq!(code(&out), 0, "{}", stdout(&out));
        assert!(escape.is_match(&stdout(&out)), "{}", stdout(&out));
        for colour in [[("NO_COLOR", "1")], [("CLICOLOR", "0")], [("TERM", "dumb")]] {
            let out = on_terminal(&colour).await;
            assert_eq!(code(&out), 0, "{colour:?}: {}", stdout(&out));
            assert!(
                stdout(&out).contains("Cause:"),
                "{colour:?}: {}",
                stdout(&out)
            );
            assert!(
                !stdout(&out).contains('\x1b'),
                "{colour:?}: {}",
                stdout(&out)
            );
        }
    })
    .await
}

/// `--help` lists every environment variable rdp-doctor reads, with the value it sees, except
/// for secrets, whose values it never shows and which it refuses on the command line; an option
/// given before the subcommand sets its variable.
#[tokio::test]
async fn help_names_every_environment_variable_and_no_secret() {
    within(async {
        let cli = Cli::start(World::new()).await;
        let mut cmd = cli.command(&["--help"]);
        cmd.env("DISCORD_TOKEN", "discord-token-value")
            .env("IDENTITY_HEADER", "identity-header-value")
            .env("RDP_DOCTOR_DATABASE_URL", "postgres://u:db-password@h/db")
            .env("RDP_DOCTOR_ALERT_TOKEN", "alert-token-value")
            .env("DISCORD_GUILD_ID", "234567890123456789");
        let out = cmd.output().await.expect("binary runs");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let help = stdout(&out);
        for name in [
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST",
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "AZURE_RESOURCE_MANAGER_URL",
            "AZURE_SUBSCRIPTION_ID",
            "RDP_DOCTOR_CONFIG",
            "RDP_DOCTOR_DATABASE_URL",
            "DISCORD_TOKEN",
            "DISCORD_API_URL",
            "DISCORD_GUILD_ID",
            "DISCORD_PUBLIC_KEY",
            "DISCORD_APPLICATION_ID",
            "RDP_DOCTOR_LISTEN",
            "RDP_DOCTOR_ALERT_TOKEN",
            "RUST_LOG",
        ] {
            assert!(
                help.contains(&format!("[env: {name}")),
                "{name} missing:\n{help}"
            );
        }
        // What is not secret is shown as it is set; secrets are not.
        assert!(
            help.contains(&format!("[env: AZURE_TENANT_ID={}]", support::TENANT)),
            "{help}"
        );
        assert!(
            help.contains("[env: DISCORD_GUILD_ID=234567890123456789]"),
            "{help}"
        );
        for secret in [
            cli.secret.as_str(),
            "discord-token-value",
            "identity-header-value",
            "db-password",
            "alert-token-value",
        ] {
            assert!(!help.contains(secret), "{secret} shown:\n{help}");
        }

        let out = cli
            .run(&["--discord-token", "typed-token-value", "health"])
            .await;
        assert_eq!(code(&out), 2);
        assert!(
            stderr(&out).contains("set DISCORD_TOKEN in the environment"),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("typed-token-value") && stdout(&out).is_empty());

        let missing = cli.path("missing.toml");
        let out = cli
            .run(&["--rdp-doctor-config", missing.to_str().unwrap(), "health"])
            .await;
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
    })
    .await
}

#[tokio::test]
async fn simulate_needs_no_azure_account() {
    within(async {
        let cli = Cli::start(World::new()).await;
        let mut cmd = cli.command(&["check", "web-02", "--simulate", "--json"]);
        // No Azure variables at all: the simulator brings its own.
        for var in [
            "AZURE_RESOURCE_MANAGER_URL",
            "AZURE_AUTHORITY_HOST",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_SUBSCRIPTION_ID",
        ] {
            cmd.env_remove(var);
        }
        let out = cmd.output().await.expect("runs");
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        let v = json(&out);
        assert_eq!(v["findings"][3]["evidence"]["rule"], "deny-rdp-internet");
        assert_eq!(v["findings"][3]["evidence"]["nsg"], "nsg-snet-app");
    })
    .await
}

#[tokio::test]
async fn a_bad_config_file_is_a_usage_error_naming_the_line() {
    within(async {
        let cli = Cli::start(World::new().vm("web-01")).await;
        std::fs::write(
            cli.path("rdp-doctor.toml"),
            "[azure]\nmax_retries = \"many\"\n",
        )
        .unwrap();
        let out = cli.run(&["check", "web-01"]).await;
        assert_eq!(code(&out), 2);
        assert!(
            stderr(&out).contains("rdp-doctor.toml:2"),
            "{}",
            stderr(&out)
        );
    })
    .await
}

fn snapshot_text(out: &Output) -> String {
    // Elapsed time varies; everything else in the report is deterministic.
    let re = regex::Regex::new(r"(\d+) ARM requests, [\d.]+ s").unwrap();
    re.replace(&stdout(out), "$1 ARM requests, <elapsed> s")
        .into_owned()
}

#[tokio::test]
async fn report_for_a_healthy_vm() {
    within(async {
        let cli = Cli::start(World::new().vm("web-01")).await;
        let out = cli.run(&["check", "web-01"]).await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        insta::assert_snapshot!("report_healthy", snapshot_text(&out));
    })
    .await
}

#[tokio::test]
async fn report_for_a_subnet_nsg_deny() {
    within(async {
        let cli = Cli::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let out = cli.run(&["check", "web-02"]).await;
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        insta::assert_snapshot!("report_nsg_deny", snapshot_text(&out));
    })
    .await
}

#[tokio::test]
async fn no_secret_token_or_sas_url_in_trace_logs() {
    within(async {
        let cli = Cli::start(World::new().vm("web-01")).await;
        let out = cli
            .command(&["check", "web-01", "--json"])
            .env("RUST_LOG", "trace")
            .output()
            .await
            .expect("runs");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let logs = stderr(&out);
        assert!(!logs.contains(&cli.secret), "client secret in logs");
        assert!(!logs.contains("Bearer "), "a bearer token in logs");
        assert!(!logs.contains("sig="), "a SAS signature in logs");
        let report = stdout(&out);
        assert!(!report.contains("sig=") && !report.contains(&cli.secret));
    })
    .await
}

#[tokio::test]
async fn a_bad_runbook_override_names_file_line_and_field() {
    within(async {
        let cli = Cli::start(World::new().vm("web-01")).await;
        let dir = cli.path("runbook");
        std::fs::create_dir_all(&dir).unwrap();
        let builtin = include_str!("../../commands/rdp.toml");
        let broken = builtin.replacen("permission = \"operate\"", "permission = \"root\"", 1);
        std::fs::write(dir.join("rdp.toml"), broken).unwrap();
        std::fs::write(
            cli.path("rdp-doctor.toml"),
            format!("runbook_dir = {:?}\n", dir.display().to_string()),
        )
        .unwrap();
        let out = cli.run(&["check", "web-01"]).await;
        assert_eq!(code(&out), 2);
        let err = stderr(&out);
        assert!(
            err.contains("rdp.toml:") && err.contains("permission"),
            "{err}"
        );
        let explain = cli.run(&["explain", "Your credentials did not work"]).await;
        assert_eq!(code(&explain), 2, "the broken override stops explain too");
    })
    .await
}

#[tokio::test]
async fn simulate_serves_a_world_file_to_other_processes() {
    use tokio::io::AsyncBufReadExt;
    within(async {
        let cli = Cli::start(World::new()).await;
        let world = cli.path("world.toml");
        std::fs::write(
            &world,
            World::new().vm("solo-01").to_toml_string().expect("toml"),
        )
        .unwrap();
        let mut server = cli
            .command(&[
                "simulate",
                "--listen",
                "127.0.0.1:0",
                "--world",
                world.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("simulator process");
        let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().expect("a listening line");
        let url = first
            .rsplit(' ')
            .next()
            .expect("url at the end")
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{first}");
        let out = cli
            .command(&["check", "solo-01", "--json"])
            .env("AZURE_RESOURCE_MANAGER_URL", &url)
            .env("AZURE_AUTHORITY_HOST", &url)
            .env("AZURE_CLIENT_SECRET", "sim-secret")
            .env(
                "AZURE_SUBSCRIPTION_ID",
                rdp_doctor::sim::DEFAULT_SUBSCRIPTION,
            )
            .output()
            .await
            .expect("check runs");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(json(&out)["vm"]["name"], "solo-01");
        server.kill().await.expect("stop the simulator");
    })
    .await
}

/// A CLI run with the policy and database file of `cli`. `USER` is set to someone else on
/// purpose: the terminal's person is the operating-system account, never a variable.
fn fix_command(cli: &Cli, args: &[&str]) -> tokio::process::Command {
    let mut cmd = cli.command(args);
    cmd.env("USER", "mallory")
        .env("LOGNAME", "mallory")
        .env("RDP_DOCTOR_DATABASE_URL", &cli.database);
    cmd
}

/// Who the terminal is: the account running the tests.
fn me() -> String {
    rdp_doctor::cli::os_user()
}

/// The guild and channel of the Discord side of these tests.
const GUILD: &str = "1180000000000000001";
const CHANNEL: &str = "1180000000000000003";

/// The terminal's account (`level`), Discord role 5002 (admin), role 5003 (read), and one
/// person, "carol", who is both Discord user 4001 and the terminal's account.
fn cli_policy(level: &str) -> String {
    format!(
        r#"
[azure]
request_timeout_secs = 5
max_retries = 1
poll_interval_ms = 10
[policy]
two_person = ["redeploy", "open-rdp-port"]
channels = ["{CHANNEL}"]
guilds = ["{GUILD}"]
[[policy.grant]]
cli_user = "{me}"
level = "{level}"
scope = "*"
[[policy.grant]]
discord_role_id = 5002
level = "admin"
scope = "*"
[[policy.grant]]
discord_role_id = 5003
level = "read"
scope = "*"
[[policy.person]]
name = "carol"
identities = ["discord:4001", "cli:{me}"]
"#,
        me = me()
    )
}

async fn fix_cli(world: World) -> Cli {
    let cli = Cli::start(world).await;
    std::fs::write(cli.path("rdp-doctor.toml"), cli_policy("admin")).unwrap();
    cli
}

/// The Discord front end's side of the same installation: the door over the same simulator,
/// policy and database file, as the bot builds it.
async fn discord_side(cli: &Cli) -> rdp_doctor::runbook::door::Door {
    let file = rdp_doctor::config::FileConfig::parse(&cli_policy("admin"), "test.toml").unwrap();
    let policy = rdp_doctor::policy::Policy::new(file.policy.as_ref()).unwrap();
    let store = rdp_doctor::store::Store::open(&cli.database).await.unwrap();
    cli.h.door(policy, store)
}

fn in_discord(user: u64, name: &str, roles: &[u64]) -> rdp_doctor::runbook::door::Caller {
    rdp_doctor::runbook::door::Caller {
        actor: rdp_doctor::policy::Actor::discord(
            user,
            name,
            roles.iter().map(u64::to_string).collect(),
        ),
        place: rdp_doctor::policy::Place::Discord {
            guild: Some(GUILD.to_string()),
            channel: CHANNEL.to_string(),
        },
    }
}

fn quiet(_: rdp_doctor::runbook::operate::Progress) {}

fn confirmation_id(out: &Output) -> String {
    let text = stdout(out);
    let re = regex::Regex::new(r"Confirmation ([0-9a-f]{16,})").unwrap();
    re.captures(&text)
        .unwrap_or_else(|| panic!("no confirmation id in {text}"))[1]
        .to_string()
}

#[tokio::test]
async fn cli_fixes_run_once_recheck_and_audit() {
    within(async {
        let cli = fix_cli(
            World::new()
                .vm("web-01")
                .vm("app-02")
                .deallocated()
                .vm("web-03")
                .rdp_disabled(),
        )
        .await;
        for (args, done) in [
            (
                vec!["restart", "web-01", "--yes"],
                "restart of web-01 succeeded",
            ),
            (
                vec!["start", "app-02", "--yes"],
                "start of app-02 succeeded",
            ),
            (
                vec!["reset-config", "web-03", "--yes"],
                "reset-rdp-config of web-03 succeeded",
            ),
        ] {
            let out = fix_command(&cli, &args).output().await.unwrap();
            assert_eq!(code(&out), 0, "{args:?}: {}{}", stdout(&out), stderr(&out));
            let text = stdout(&out);
            assert!(
                text.contains(done) && text.contains("Checked again"),
                "{text}"
            );
            // The prompt names the VM fully.
            assert!(
                text.contains("in resource group rg-web, subscription "),
                "{text}"
            );
        }
        assert!(cli.h.sim.world().vm("web-03").rdp_enabled());
        assert_eq!(
            cli.h.sim.world().vm("app-02").power_state().as_str(),
            "running"
        );
        let audit = fix_command(&cli, &["audit", "--vm", "web-01"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&audit), 0, "{}", stderr(&audit));
        let log = stdout(&audit);
        assert!(
            log.contains("restart") && log.contains("succeeded") && log.contains(&me()),
            "{log}"
        );
        assert!(!log.contains("mallory"), "USER is not the person: {log}");
    })
    .await
}

/// `rdp-doctor fix VM <guest-fix>`: the prompt, the script run once through Run Command, the
/// guest read again; `port-01`'s other way out, `fix port-01 open-rdp-port --port 3390`, asks
/// for a second person; a fix id `fix` does not run is refused before anything is asked.
#[tokio::test]
async fn cli_guest_fixes_run_once_and_read_the_guest_again() {
    within(async {
        let cli = fix_cli(World::new().vm("rdp-off-01").rdp_disabled().vm("port-01")).await;
        let out = fix_command(&cli, &["fix", "rdp-off-01", "enable-rdp", "--yes"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let text = stdout(&out);
        for line in [
            "Enable Remote Desktop inside rdp-off-01",
            "To undo: `Set-ItemProperty",
            "enable-rdp of rdp-off-01 succeeded",
            "  fDenyTSConnections set to 0 (was 1)",
            "  guest-rdp: now passes (Remote Desktop is enabled (fDenyTSConnections = 0))",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        assert!(stderr(&out).contains("enable-rdp of rdp-off-01 sent to Azure"));
        assert!(cli.h.sim.world().vm("rdp-off-01").rdp_enabled());
        let run_commands = cli
            .h
            .sim
            .stats()
            .by_route
            .get("POST virtualMachines/runCommand")
            .copied();
        assert_eq!(
            run_commands,
            Some(2),
            "the fix once, then the re-check's read"
        );

        let open = fix_command(
            &cli,
            &[
                "fix",
                "port-01",
                "open-rdp-port",
                "--source",
                "198.51.100.7",
                "--port",
                "3390",
                "--yes",
            ],
        )
        .output()
        .await
        .unwrap();
        assert_eq!(code(&open), 0, "{}", stderr(&open));
        let text = stdout(&open);
        assert!(
            text.contains("Allow TCP 3390 from 198.51.100.7 to port-01")
                && text.contains("needs a second person"),
            "{text}"
        );

        for (args, says) in [
            (
                vec!["fix", "port-01", "reboot-it"],
                "unknown fix `reboot-it`",
            ),
            (
                vec!["fix", "port-01", "open-rdp-port"],
                "open-rdp-port needs --source",
            ),
            (
                vec!["fix", "port-01", "enable-rdp", "--source", "anywhere"],
                "--source is for open-rdp-port",
            ),
            (vec!["fix", "port-01", "reset-password"], "its own command"),
        ] {
            let refused = fix_command(&cli, &args).output().await.unwrap();
            assert_eq!(code(&refused), 2, "{args:?}");
            assert!(
                stderr(&refused).contains(says),
                "{args:?}: {}",
                stderr(&refused)
            );
        }
    })
    .await
}

#[tokio::test]
async fn cli_denials_follow_the_policy_of_the_operating_system_account() {
    within(async {
        let cli = fix_cli(World::new().vm("web-01").vm("app-02").deallocated()).await;
        // Read only: checks work, fixes are denied.
        std::fs::write(cli.path("rdp-doctor.toml"), cli_policy("read")).unwrap();
        let denied = fix_command(&cli, &["restart", "web-01", "--yes"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&denied), 2);
        assert!(
            stderr(&denied).contains("you need the `operate` permission"),
            "{}",
            stderr(&denied)
        );
        // No grant at all for this account (USER names one that has a grant: it does not
        // count): nothing, not even a read, and no Azure request.
        std::fs::write(
            cli.path("rdp-doctor.toml"),
            cli_policy("admin").replace(
                &format!("cli_user = \"{}\"", me()),
                "cli_user = \"mallory\"",
            ),
        )
        .unwrap();
        let before = cli.h.sim.stats().requests;
        let nobody = fix_command(&cli, &["restart", "web-01", "--yes"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&nobody), 2, "fail closed: {}", stderr(&nobody));
        let check = fix_command(&cli, &["check", "web-01"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&check), 2, "{}", stderr(&check));
        assert!(
            stderr(&check).contains("you need the `read` permission"),
            "{}",
            stderr(&check)
        );
        assert_eq!(cli.h.sim.stats().requests, before, "denied before Azure");

        std::fs::write(cli.path("rdp-doctor.toml"), cli_policy("admin")).unwrap();
        let refused = fix_command(&cli, &["restart", "app-02", "--yes"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&refused), 2);
        assert!(
            stderr(&refused).contains("Try `start` instead"),
            "{}",
            stderr(&refused)
        );
    })
    .await
}

#[tokio::test]
async fn nobody_is_their_own_second_person_across_front_ends_or_by_changing_user() {
    within(async {
        let cli = fix_cli(World::new().vm("web-01")).await;
        two_front_ends_one_confirmation(cli).await;
    })
    .await
}

/// The same with the terminal's processes and the bot's door sharing one PostgreSQL database
/// instead of a SQLite file, as replicas do.
#[tokio::test]
async fn the_two_person_rule_holds_across_front_ends_on_postgresql() {
    within(async {
        let mut cli = fix_cli(World::new().vm("web-01")).await;
        cli.database = rdp_doctor::store::testing::postgres_database().await;
        two_front_ends_one_confirmation(cli).await;
    })
    .await
}

/// The terminal asks for a two-person redeploy; neither the same account (whatever `USER` says)
/// nor its Discord identity may confirm; someone else may, exactly once, and Azure is asked once.
async fn two_front_ends_one_confirmation(cli: Cli) {
    {
        let discord = discord_side(&cli).await;

        // The terminal asks; the same account cannot confirm, whatever USER says.
        let asked = fix_command(&cli, &["redeploy", "web-01", "--yes"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&asked), 0, "{}", stderr(&asked));
        assert!(stdout(&asked).contains("needs a second person"));
        let id = confirmation_id(&asked);
        let same = fix_command(&cli, &["confirm", &id])
            .env("USER", "bob")
            .env("LOGNAME", "bob")
            .output()
            .await
            .unwrap();
        assert_eq!(code(&same), 2);
        assert!(
            stderr(&same).contains("needs a second person: someone other than"),
            "{}",
            stderr(&same)
        );
        // Carol in Discord is the terminal's account too ([[policy.person]]): refused.
        let carol = in_discord(4001, "carol", &[5002]);
        let err = discord
            .confirm(&carol, &id, &quiet)
            .await
            .expect_err("the requester's other identity");
        assert!(err.to_string().contains("needs a second person"), "{err}");
        // Someone else with the level may; exactly once.
        let dave = in_discord(4002, "dave", &[5002]);
        let outcome = discord
            .confirm(&dave, &id, &quiet)
            .await
            .expect("dave confirms");
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        let again = fix_command(&cli, &["confirm", &id]).output().await.unwrap();
        assert_eq!(code(&again), 2);
        assert!(
            stderr(&again).contains("already used: confirmed by dave"),
            "{}",
            stderr(&again)
        );
        let redeploys = cli
            .h
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method == "POST" && e.path.contains("/redeploy"))
            .count();
        assert_eq!(redeploys, 1);

        // Discord asks and the terminal confirms: the same person again, refused.
        let summary = discord
            .resolve(
                &carol,
                "web-01",
                rdp_doctor::runbook::catalog::Permission::Read,
            )
            .await
            .unwrap();
        let prompt = discord
            .request_fix(
                &carol,
                &summary,
                rdp_doctor::runbook::fix::FixRequest::Redeploy,
            )
            .await
            .unwrap();
        let from_terminal = fix_command(&cli, &["confirm", &prompt.confirmation_id])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&from_terminal), 2);
        assert!(
            stderr(&from_terminal).contains("someone other than carol"),
            "{}",
            stderr(&from_terminal)
        );

        // Cancel: the requester may; someone who only reads may not.
        let rita = in_discord(4003, "rita", &[5003]);
        let err = discord
            .cancel(&rita, &prompt.confirmation_id)
            .await
            .expect_err("read cannot cancel");
        assert!(
            err.to_string().contains("you need the `admin` permission"),
            "{err}"
        );
        let cancelled = fix_command(&cli, &["cancel", &prompt.confirmation_id])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&cancelled), 0, "{}", stderr(&cancelled));

        // Without --yes and without a terminal nothing runs; the id is printed for later.
        let later = fix_command(&cli, &["restart", "web-01"])
            .output()
            .await
            .unwrap();
        assert!(
            stdout(&later).contains("Not confirmed"),
            "{}",
            stdout(&later)
        );
        discord
            .cancel(&dave, &confirmation_id(&later))
            .await
            .expect("an admin cancels");
        let cancelled = fix_command(&cli, &["confirm", &confirmation_id(&later)])
            .output()
            .await
            .unwrap();
        assert!(
            stderr(&cancelled).contains("cancelled by dave"),
            "{}",
            stderr(&cancelled)
        );
    }
}

/// Every log directive a person might try, the SDK's request/response policies included.
const LOUDEST: &str = "trace,azure_core=trace,azure_core::policies=trace,azure_identity=trace,reqwest=trace,serenity=trace";

/// A password reset under the loudest `RUST_LOG` there is: the password, the client secret,
/// the bearer tokens the simulator issued and SAS signatures appear nowhere in the output.
#[tokio::test]
async fn cli_password_reset_leaves_no_trace_of_the_password() {
    use tokio::io::AsyncWriteExt;
    within(async {
        let cli = fix_cli(World::new().vm("web-01")).await;
        let secret = "Unguessable-Pa55word-42";
        let mut child = fix_command(
            &cli,
            &[
                "reset-password",
                "web-01",
                "--user",
                "opsadmin",
                "--password-stdin",
                "--yes",
            ],
        )
        .env("RUST_LOG", LOUDEST)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{secret}\n").as_bytes())
            .await
            .unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(stdout(&out).contains("reset-password of web-01 succeeded"));
        assert_eq!(cli.h.sim.world().vm("web-01").password_resets(), 1);
        let captured = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            captured.contains("rdp-doctor starting"),
            "rdp-doctor's own debug logging was on: {captured}"
        );
        let tokens = cli.h.sim.issued_tokens();
        assert!(!tokens.is_empty());
        for (what, found) in [("the password", secret), ("the client secret", &cli.secret)]
            .into_iter()
            .chain(tokens.iter().map(|t| ("a bearer token", t.as_str())))
            .chain([
                ("a SAS signature", "sig="),
                ("an Authorization header", "Bearer "),
            ])
        {
            assert!(!captured.contains(found), "{what} was printed or logged");
        }
        for file in ["rdp-doctor.db", "rdp-doctor.db-wal"] {
            let bytes = std::fs::read(cli.path(file)).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "the password is in {file}"
            );
        }
        let weak = fix_command(
            &cli,
            &[
                "reset-password",
                "web-01",
                "--user",
                "opsadmin",
                "--password-stdin",
                "--yes",
            ],
        )
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
        assert_eq!(code(&weak), 2, "{}", stderr(&weak));
        assert!(stderr(&weak).contains("nothing was sent"));
    })
    .await
}

// ---- sweep -------------------------------------------------------------------------------

/// On a terminal (a pseudo-terminal from util-linux's `script`), a sweep draws a progress bar
/// with the time so far and an estimate of what is left on stderr; piped, or with `--json`,
/// stderr carries no progress at all.
#[tokio::test]
async fn sweep_progress_bar_only_on_a_terminal() {
    within(async {
        let world = World::new().vm("web-01").vm("web-02").nsg_denies_rdp();
        let cli = Cli::start(world).await;
        let on_terminal = |args: &str| {
            let line = format!("'{}' {args}", env!("CARGO_BIN_EXE_rdp-doctor"));
            let mut script = cli.program("script", &["-q", "-e", "-c", &line, "/dev/null"]);
            script
                .env("TERM", "xterm")
                .env("SHELL", "/bin/sh")
                .stdin(std::process::Stdio::null());
            async move { script.output().await.expect("script runs") }
        };

        let out = on_terminal("sweep --resource-group rg-web").await;
        let text = stdout(&out);
        assert_eq!(code(&out), 1, "{text}");
        assert!(
            text.contains("checking 2 Windows VMs in resource group rg-web"),
            "{text}"
        );
        assert!(
            text.contains("2/2 checked,") && text.contains("left"),
            "{text}"
        );
        assert!(
            text.contains("Sweep of resource group rg-web: 2 Windows VMs checked"),
            "{text}"
        );

        let out = on_terminal("sweep --resource-group rg-web --json").await;
        let text = stdout(&out);
        assert!(
            !text.contains("checked,") && text.contains("\"scope\""),
            "{text}"
        );

        let piped = cli.run(&["sweep", "--resource-group", "rg-web"]).await;
        assert_eq!(code(&piped), 1);
        assert!(!stderr(&piped).contains("checked"), "{}", stderr(&piped));
        assert!(stdout(&piped).starts_with("Sweep of resource group rg-web"));
    })
    .await
}

#[tokio::test]
async fn sweep_prints_one_table_worst_first_and_json_for_scripts() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .vm("web-02")
            .nsg_denies_rdp()
            .vm("web-03")
            .stopped()
            .vm("db-01")
            .in_group("rg-data");
        let cli = Cli::start(world).await;
        let out = cli.run(&["sweep", "--resource-group", "rg-web"]).await;
        assert_eq!(code(&out), 1, "problems found: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.starts_with("Sweep of resource group rg-web: 3 Windows VMs checked"),
            "{text}"
        );
        let order: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.starts_with("web-"))
            .collect();
        assert_eq!(order, ["web-02", "web-03", "web-01"], "{text}");
        assert!(text.contains("deny-rdp-internet"), "{text}");
        assert!(text.contains("rdp-doctor check rg-web/web-02"), "{text}");
        assert!(!text.contains("db-01"), "only the group: {text}");

        let out = cli
            .run(&["sweep", "--resource-group", "rg-web", "--json"])
            .await;
        assert_eq!(code(&out), 1);
        let v = json(&out);
        assert_eq!(v["scope"], "resource group rg-web");
        assert_eq!(v["total"], 3);
        assert_eq!(v["cancelled"], false);
        assert_eq!(v["vms"][0]["vm"]["name"], "web-02");
        assert_eq!(v["vms"][0]["verdict"], "problems");
        assert_eq!(v["vms"][0]["deciding"]["step"], "nsg");
        assert_eq!(v["vms"][1]["next_action"], "start");
        assert_eq!(v["vms"][2]["deciding"], serde_json::Value::Null);
        assert!(v["stats"]["arm_requests"].as_u64().unwrap_or(0) > 0);

        // Healthy group: exit 0. Bad input: exit 2, before any Azure call.
        let out = cli.run(&["sweep", "--resource-group", "rg-data"]).await;
        assert_eq!(code(&out), 0, "{}", stdout(&out));
        let before = cli.h.sim.stats().requests;
        let out = cli.run(&["sweep", "--resource-group", "rg web!"]).await;
        assert_eq!(code(&out), 2);
        assert!(
            stderr(&out).contains("not a valid resource group name"),
            "{}",
            stderr(&out)
        );
        assert_eq!(cli.h.sim.stats().requests, before);
        let out = cli
            .run(&["sweep", "-g", "rg-web", "--subscription", "../../providers"])
            .await;
        assert_eq!(code(&out), 2);
        assert!(
            stderr(&out).contains("not a subscription id"),
            "{}",
            stderr(&out)
        );
        assert_eq!(cli.h.sim.stats().requests, before);
        let out = cli.run(&["sweep", "--resource-group", "rg-nowhere"]).await;
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains("rg-nowhere"), "{}", stderr(&out));
    })
    .await
}

#[tokio::test]
async fn sweep_stops_on_ctrl_c_and_prints_what_it_checked() {
    within(async {
        let world = support::numbered_vms(World::new().page_size(100), "vm", 40);
        let options = support::slowed(std::time::Duration::from_millis(100));
        let cli = Cli::with_options(world, options).await;
        let child = cli
            .command(&["sweep", "-g", "rg-web", "--concurrency", "2", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id().expect("pid");
        // Wait until some VMs have been checked (effective NSG requests reach the simulator).
        let sim = &cli.h.sim;
        support::until("4 VMs' effective rules read", sim.watch_answers(), || {
            sim.stats()
                .log
                .iter()
                .filter(|e| e.path.contains("effectiveNetworkSecurityGroups"))
                .count()
                >= 4
        })
        .await;
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let out = child.wait_with_output().await.expect("exits");
        assert_eq!(code(&out), 130, "{}", stderr(&out));
        let v = json(&out);
        assert_eq!(v["cancelled"], true);
        assert_eq!(v["total"], 40);
        let checked = v["vms"].as_array().map_or(0, Vec::len);
        assert!((1..40).contains(&checked), "{checked} checked");
    })
    .await
}

// ---- interrupted fixes, operations, resume, unlock (issue 9) -----------------------------

/// Start a fix as a real process and kill it (SIGKILL, or `signal` through `kill`) once its
/// stderr says the write was sent to Azure. Returns what it printed on stderr until then.
async fn interrupt_after_sent(cli: &Cli, args: &[&str], signal: Option<&str>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut child = fix_command(cli, args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = String::new();
    loop {
        let line = lines
            .next_line()
            .await
            .expect("stderr")
            .unwrap_or_else(|| panic!("{args:?} ended before it sent anything: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("sent to Azure") {
            break;
        }
    }
    match signal {
        None => child.kill().await.expect("kill -9"),
        Some(signal) => {
            let pid = child.id().expect("pid").to_string();
            let sent = tokio::process::Command::new("kill")
                .args([signal, &pid])
                .status()
                .await
                .expect("kill");
            assert!(sent.success());
            child.wait().await.expect("exits");
        }
    }
    seen
}

fn posts(cli: &Cli, suffix: &str) -> usize {
    cli.h
        .sim
        .stats()
        .log
        .iter()
        .filter(|e| e.method == "POST" && e.path.split('?').next().unwrap_or("").ends_with(suffix))
        .count()
}

#[tokio::test]
async fn an_interrupted_fix_is_listed_followed_by_the_next_fix_and_an_admin_can_unlock() {
    within(async {
        // A slow restart: 150 polls of "in progress" (the world moves as Azure is polled).
        let options = support::polled(150);
        let cli = Cli::with_options(World::new().vm("web-01"), options).await;
        std::fs::write(cli.path("rdp-doctor.toml"), cli_policy("admin")).unwrap();

        interrupt_after_sent(&cli, &["restart", "web-01", "--yes"], None).await;
        let listed = fix_command(&cli, &["operations"]).output().await.unwrap();
        assert_eq!(code(&listed), 0, "{}", stderr(&listed));
        let text = stdout(&listed);
        assert!(
            text.contains("restart")
                && text.contains("web-01")
                && text.contains(&me())
                && text.contains("stored (resumable)"),
            "{text}"
        );

        // The next fix on the VM follows the killed one to its end first, then asks.
        let next = fix_command(&cli, &["restart", "web-01"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&next), 0, "{}{}", stdout(&next), stderr(&next));
        let text = stdout(&next);
        assert!(
            text.contains(&format!(
                "Followed the earlier restart of web-01 by {} first: it succeeded.",
                me()
            )),
            "{text}"
        );
        assert!(text.contains("Not confirmed"), "{text}");
        assert_eq!(
            posts(&cli, "/restart"),
            1,
            "the killed restart was not sent again"
        );
        let none = fix_command(&cli, &["operations"]).output().await.unwrap();
        assert!(
            stdout(&none).contains("No operation is running."),
            "{}",
            stdout(&none)
        );

        // SIGTERM: `rdp-doctor resume` follows it to the end.
        interrupt_after_sent(&cli, &["restart", "web-01", "--yes"], Some("-TERM")).await;
        let resumed = fix_command(&cli, &["resume"]).output().await.unwrap();
        assert_eq!(
            code(&resumed),
            0,
            "{}{}",
            stdout(&resumed),
            stderr(&resumed)
        );
        assert!(
            stdout(&resumed).contains("restart of web-01 succeeded"),
            "{}",
            stdout(&resumed)
        );
        assert_eq!(posts(&cli, "/restart"), 2);

        // Ctrl-C, then an admin frees the VM (say Azure lost the operation): unlock needs a
        // reason and an admin, and is audited.
        interrupt_after_sent(&cli, &["restart", "web-01", "--yes"], Some("-INT")).await;
        let no_reason = fix_command(&cli, &["unlock", "web-01"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&no_reason), 2);
        assert!(
            stderr(&no_reason).contains("--reason"),
            "{}",
            stderr(&no_reason)
        );
        // Someone who only reads may not unlock.
        std::fs::write(cli.path("rdp-doctor.toml"), cli_policy("read")).unwrap();
        let reader = fix_command(&cli, &["unlock", "web-01", "--reason", "stuck"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&reader), 2);
        assert!(stderr(&reader).contains("`admin`"), "{}", stderr(&reader));
        std::fs::write(cli.path("rdp-doctor.toml"), cli_policy("admin")).unwrap();
        let reason = "Azure shows no operation; VM running since 10:02";
        let unlocked = fix_command(&cli, &["unlock", "web-01", "--reason", reason])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&unlocked), 0, "{}", stderr(&unlocked));
        assert!(
            stdout(&unlocked).contains("Unlocked web-01"),
            "{}",
            stdout(&unlocked)
        );
        let audit = fix_command(&cli, &["audit", "--vm", "web-01"])
            .output()
            .await
            .unwrap();
        let log = stdout(&audit);
        assert!(
            log.lines()
                .any(|l| l.contains(&me()) && l.contains("unlock") && l.contains(reason)),
            "{log}"
        );
        let none = fix_command(&cli, &["operations"]).output().await.unwrap();
        assert!(
            stdout(&none).contains("No operation is running."),
            "{}",
            stdout(&none)
        );
    })
    .await
}

// ---- permissions -----------------------------------------------------------------------------

#[tokio::test]
async fn permissions_names_what_the_identity_lacks_per_group_with_the_role_that_grants_it() {
    within(async {
        let sub = rdp_doctor::sim::DEFAULT_SUBSCRIPTION;
        let group = |rg: &str| format!("/subscriptions/{sub}/resourceGroups/{rg}");
        let cli = fix_cli(
            World::new()
                .client_secret("scoped-secret")
                .vm("web-01")
                .vm("api-01")
                .in_group("rg-api")
                .vm("db-01")
                .in_group("rg-data")
                .principal(support::CLIENT, "scoped-secret")
                .role_at("Virtual Machine Contributor", &group("rg-web"))
                .role_at("Network Contributor", &group("rg-web"))
                // Defender's just-in-time access (Security Admin's, which the simulator does
                // not model as a built-in role).
                .custom_role_at(
                    &["Microsoft.Security/locations/jitNetworkAccessPolicies/*"],
                    &group("rg-web"),
                )
                // Neither reads the Activity Log; Monitoring Reader's action does.
                .custom_role_at(&["Microsoft.Insights/eventtypes/values/read"], &group("rg-web"))
                .role_at("Reader", &group("rg-api")),
        )
        .await;
        let out = cli.run(&["permissions"]).await;
        let text = stdout(&out);
        assert_eq!(code(&out), 1, "something is missing: {text}{}", stderr(&out));
        for line in [
            &format!("Subscription {sub}"),
            &format!("list its VMs: no (Microsoft.Compute/virtualMachines/read refused over /subscriptions/{sub}/providers/Microsoft.Compute)"),
            "rg-web: every action the runbook needs",
            "rg-api: missing",
            "check  Microsoft.Network/networkInterfaces/effectiveNetworkSecurityGroups/action (evaluate the effective rules for TCP 3389): granted by Virtual Machine Contributor",
            "fix    Microsoft.Network/networkSecurityGroups/securityRules/write (open-rdp-port): granted by Network Contributor",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        // A group it has no role on is not listed: ARM does not show it.
        assert!(!text.contains("rg-data"), "{text}");
        // Reader grants every read: nothing the checks read is missing in rg-api.
        assert!(!text.contains("check  Microsoft.Compute/virtualMachines/read"), "{text}");
        // Only reads reached Azure.
        let writes: Vec<_> = cli
            .h
            .sim
            .stats()
            .log
            .into_iter()
            .filter(|e| e.method != "GET" && !e.path.contains("/oauth2/"))
            .collect();
        assert!(writes.is_empty(), "{writes:?}");
        // Admin only.
        std::fs::write(cli.path("rdp-doctor.toml"), cli_policy("operate")).unwrap();
        let denied = cli.run(&["permissions"]).await;
        assert_eq!(code(&denied), 2, "{}", stderr(&denied));
        assert!(stderr(&denied).contains("admin"), "{}", stderr(&denied));
    })
    .await
}

#[tokio::test]
async fn permissions_of_the_simulators_one_client_are_complete() {
    within(async {
        let cli = fix_cli(World::new().vm("web-01")).await;
        let out = cli.run(&["permissions"]).await;
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        assert!(
            stdout(&out).contains("list its VMs: yes"),
            "{}",
            stdout(&out)
        );
        assert!(
            stdout(&out).contains("rg-web: every action the runbook needs"),
            "{}",
            stdout(&out)
        );
    })
    .await
}

/// The Kubernetes ConfigMap's `rdp-doctor.toml` (deploy/kubernetes/configmap.yaml) is a config
/// the real loader accepts, policy included: a fleet does not start from an example that fails.
#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/configmap.yaml");
    let yaml = std::fs::read_to_string(&path).expect("configmap.yaml");
    // The block scalar under `rdp-doctor.toml: |`: every following line indented by four spaces.
    let toml: String = yaml
        .lines()
        .skip_while(|line| line.trim() != "rdp-doctor.toml: |")
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert!(toml.contains("[[policy.grant]]"), "{toml}");
    let file = rdp_doctor::config::FileConfig::parse(&toml, "configmap.yaml").expect("parses");
    rdp_doctor::policy::Policy::new(file.policy.as_ref()).expect("a valid policy");
}

/// `rdp-doctor history VM`: a fix from the terminal with the checks before and after it and
/// what changed between them, and the fix's write as the Activity Log has it (under the
/// principal's application id), newest first; a VM nothing was recorded for says so.
#[tokio::test]
async fn cli_history_shows_a_fix_between_its_checks_newest_first() {
    within(async {
        let cli = fix_cli(World::new().vm("web-01").vm("app-02").deallocated()).await;
        let out = fix_command(&cli, &["start", "app-02", "--yes"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let out = fix_command(&cli, &["history", "app-02"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let clock = regex::Regex::new(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC").unwrap();
        let confirmation = regex::Regex::new(r"\b[0-9a-f]{8}\b").unwrap();
        let text = stdout(&out).replace(&me(), "<me>");
        let text = clock.replace_all(&text, "<time>");
        insta::assert_snapshot!(confirmation.replace_all(&text, "<id>"), @r"
History of app-02 (newest first)
<time>  check (fix): ok — verdict: problems → ok; vm-status: fail → pass; vm-agent: skip → pass; nsg: skip → pass; rule allow-rdp (priority 1000) appeared; network-path: skip → pass
<time>  start by <me>: succeeded
<time>  change by <id>-0000-0000-0000-00000000000b: started VM app-02
<time>  check (fix): problems
<time>  confirm by <me>: confirmed start <id>
<time>  start by <me>: requested (confirmation <id>)
");
        let out = fix_command(&cli, &["history", "web-01"])
            .output()
            .await
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "History of web-01 (newest first)\nNothing recorded yet: no check, watch or fix of this VM.\n"
        );
    })
    .await
}
