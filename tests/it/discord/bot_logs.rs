//! The real bot (`rdp-doctor bot`, a process) against the fake Discord and the simulator under
//! the loudest `RUST_LOG` there is: a password reset through the modal, and a gateway payload
//! serenity cannot parse that carries the password, leave no secret in anything it prints. At
//! `RUST_LOG=debug`, the log line of every ARM answer leads back to the person's command.

use super::support;
use rdp_doctor::sim::{SimOptions, Simulator, World};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::discord::{FakeDiscord, Interaction, User, TOKEN};
use support::within;
use tokio::io::AsyncReadExt;

const WAIT: Duration = Duration::from_secs(20);

/// Every log directive a person might try, the SDK's and serenity's included.
const LOUDEST: &str = "trace,azure_core=trace,azure_core::policies=trace,azure_identity=trace,reqwest=trace,serenity=trace";

/// The bot as a child process; everything it writes to stdout and stderr is kept.
struct BotProcess {
    child: tokio::process::Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    dir: std::path::PathBuf,
}

impl BotProcess {
    fn spawn(discord: &FakeDiscord, sim: &Simulator, secret: &str, rust_log: &str) -> BotProcess {
        BotProcess::spawn_with(discord, sim, rust_log, &[("AZURE_CLIENT_SECRET", secret)])
    }

    /// The bot at `rust_log`, signed in with `credential`'s variables besides the tenant, client
    /// id and authority host.
    fn spawn_with(
        discord: &FakeDiscord,
        sim: &Simulator,
        rust_log: &str,
        credential: &[(&str, &str)],
    ) -> BotProcess {
        let dir = support::scratch_dir("bot-logs", sim);
        std::fs::write(
            dir.join("rdp-doctor.toml"),
            crate::support::discord::room_config(
                "request_timeout_secs = 10\nmax_retries = 1\npoll_interval_ms = 10",
            ),
        )
        .expect("config");
        let mut command = discord.bot_command(sim, &dir.join("rdp-doctor.toml"), "sqlite::memory:");
        command
            .current_dir(&dir)
            .env("RUST_LOG", rust_log)
            .envs(credential.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("rdp-doctor bot starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        // Read both pipes to the end, always: a full pipe would stall the bot's logging.
        let readers = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|mut pipe| {
            let output = output.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        })
        .collect();
        BotProcess {
            child,
            output,
            readers,
            dir,
        }
    }

    /// SIGTERM, wait for the exit and the last byte it wrote; everything it printed.
    async fn stop(mut self) -> String {
        support::sigterm(&mut self.child).await;
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let bytes = self.output.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A simulator with web-01, the fake Discord and the bot at `rust_log`, connected; the client
/// secret the bot signs in with.
async fn bot_on_web_01(
    options: SimOptions,
    rust_log: &str,
) -> (Simulator, FakeDiscord, BotProcess, String) {
    let world = World::new().vm("web-01");
    let secret = world.client_secret.clone();
    let sim = Simulator::start("127.0.0.1:0", world, options)
        .await
        .expect("simulator");
    let discord = FakeDiscord::start().await;
    let bot = BotProcess::spawn(&discord, &sim, &secret, rust_log);
    discord.wait_ready(WAIT).await.expect("the bot connects");
    (sim, discord, bot, secret)
}

/// Nothing in `printed` is `secrets`, a token the simulator issued, the bot token, a SAS
/// signature or an Authorization header.
fn assert_no_secret(printed: &str, sim: &Simulator, secrets: &[(&str, &str)]) {
    let tokens = sim.issued_tokens();
    assert!(!tokens.is_empty());
    for (what, found) in secrets
        .iter()
        .copied()
        .chain(tokens.iter().map(|t| ("a bearer token", t.as_str())))
        .chain([
            ("the bot token", TOKEN),
            ("a SAS signature", "sig="),
            ("an Authorization header", "Bearer "),
        ])
    {
        assert!(!printed.contains(found), "{what} was printed or logged");
    }
}

/// The Confirm button's id and the message it is on, once the prompt is shown.
async fn confirm_button(discord: &FakeDiscord, i: &Interaction) -> (u64, String) {
    discord.callback(i, WAIT).await.expect("acknowledged");
    loop {
        let edit = discord.next_edit(i, WAIT).await.expect("the prompt");
        if let Some(confirm) = support::discord::custom_ids(edit.body())
            .into_iter()
            .find(|id| id.starts_with("rdp:confirm:"))
        {
            return (discord.last_message_id().expect("prompt message"), confirm);
        }
    }
}

async fn reset_password_on_web_01(discord: &FakeDiscord, admin: &User) -> Interaction {
    let vm = json!([{"name": "vm", "type": 3, "value": "web-01"}]);
    discord.slash(admin, "rdp", &["reset-password"], vm).await
}

#[tokio::test]
async fn the_bot_prints_no_secret_under_any_rust_log() {
    within(async {
        let (sim, discord, bot, secret) = bot_on_web_01(Default::default(), LOUDEST).await;
        let admin = User::new(4010, "ada", &[5002]);
        let password = "Sup3r-Secret-Passw0rd!";

        // The form is answered from the bot's VM list, loaded in the background at start: ask
        // once the simulator has answered that list (a question meanwhile waits for the list).
        support::until("the bot's VM list", sim.watch_answers(), || {
            sim.stats().log.iter().any(|e| {
                e.method == "GET"
                    && e.status == 200
                    && e.path
                        .contains("/providers/Microsoft.Compute/virtualMachines")
                    && !e.path.contains("/virtualMachines/")
            })
        })
        .await;
        let i = reset_password_on_web_01(&discord, &admin).await;
        let answer = discord.callback(&i, WAIT).await.expect("an answer");
        assert_eq!(
            answer.body()["type"],
            9,
            "a form for web-01: {}",
            answer.body()
        );
        let submit = discord
            .modal_submit(
                &admin,
                &i,
                &[
                    ("user", "opsadmin"),
                    ("password", password),
                    ("repeat", password),
                ],
            )
            .await;
        let (message, confirm) = confirm_button(&discord, &submit).await;
        let click = discord.component(&admin, message, &confirm, &[]).await;
        discord.callback(&click, WAIT).await.expect("ack");
        loop {
            let edit = discord.next_edit(&click, WAIT).await.expect("progress");
            if edit.body()["embeds"][0]["title"]
                .as_str()
                .unwrap_or("")
                .contains("succeeded")
            {
                break;
            }
        }
        assert_eq!(sim.world().vm("web-01").password_resets(), 1);

        // A modal submit serenity cannot parse (a type it does not know), carrying the
        // password: serenity 0.12 logs such a frame, text and all, at WARN (gateway/ws.rs).
        discord
            .dispatch(
                "INTERACTION_CREATE",
                json!({
                    "id": "1180000000000009999",
                    "application_id": "1180000000000000001",
                    "type": password,
                    "token": "x",
                    "version": 1,
                    "data": {"custom_id": "rdp:pw", "components": [{"type": 1, "components": [
                        {"type": 4, "custom_id": "password", "value": password}
                    ]}]},
                }),
            )
            .await;
        // Frames arrive in order: once a later interaction is answered, the bad one was read.
        let after = reset_password_on_web_01(&discord, &admin).await;
        discord
            .callback(&after, WAIT)
            .await
            .expect("the bot still answers");

        let printed = bot.stop().await;
        assert_no_secret(
            &printed,
            &sim,
            &[("the password", password), ("the client secret", &secret)],
        );
        assert!(
            printed.contains("rdp-doctor starting"),
            "rdp-doctor's own debug logging was on: {printed}"
        );
    })
    .await
}

/// The bot signed in with workload identity keeps working across several token lifetimes and a
/// rotation of its federated token file (AKS rotates it about hourly; here tokens live 2 s):
/// every check gets its report, the refreshes after the rotation present the new file's
/// token, and neither federated token nor any access token is printed.
#[tokio::test]
async fn the_bot_on_workload_identity_outlives_its_tokens_and_a_token_file_rotation() {
    within(async {
        let lifetime = Duration::from_secs(2);
        let options = SimOptions {
            token_lifetime: lifetime,
            ..SimOptions::fast()
        };
        let sim = Simulator::start("127.0.0.1:0", World::new().vm("web-01"), options)
            .await
            .expect("simulator");
        let file = std::env::temp_dir().join(format!(
            "rdp-doctor-federated-{}-{}",
            std::process::id(),
            sim.url().rsplit(':').next().unwrap_or("0")
        ));
        let mut federated = vec![sim.rotate_federated_token()];
        std::fs::write(&file, &federated[0]).expect("token file");
        let discord = FakeDiscord::start().await;
        let path = file.display().to_string();
        let bot = BotProcess::spawn_with(
            &discord,
            &sim,
            LOUDEST,
            &[("AZURE_FEDERATED_TOKEN_FILE", path.as_str())],
        );
        discord.wait_ready(WAIT).await.expect("the bot connects");
        let admin = User::new(4010, "ada", &[5002]);
        let vm = json!([{"name": "vm", "type": 3, "value": "web-01"}]);
        for round in 0..4 {
            let next_round = tokio::time::Instant::now() + lifetime;
            if round == 2 {
                federated.push(sim.rotate_federated_token());
                std::fs::write(&file, &federated[1]).expect("rotated token file");
            }
            let i = discord.slash(&admin, "rdp", &["check"], vm.clone()).await;
            discord.callback(&i, WAIT).await.expect("acknowledged");
            let title = loop {
                let edit = discord.next_edit(&i, WAIT).await.expect("an edit");
                let title = edit.body()["embeds"][0]["title"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if !title.starts_with("Checking") && !title.starts_with("Looking for") {
                    break title;
                }
            };
            assert!(title.contains("nothing found"), "check {round}: {title}");
            // A token lifetime passes between checks: each one needs a fresh token.
            tokio::time::sleep_until(next_round).await;
        }
        let stats = sim.stats();
        assert!(
            stats.grants.get("federated:2").copied().unwrap_or(0) >= 1,
            "the rotated file was read: {:?}",
            stats.grants
        );
        assert!(
            !stats.grants.contains_key("refused:federated"),
            "{:?}",
            stats.grants
        );
        assert!(
            stats.log.iter().all(|e| e.status != 401),
            "no token expired at ARM"
        );

        let printed = bot.stop().await;
        let _ = std::fs::remove_file(&file);
        for token in federated.iter().chain(sim.issued_tokens().iter()) {
            assert!(
                !printed.contains(token.as_str()),
                "a token was printed or logged"
            );
        }
    })
    .await
}

/// One `/rdp check` at `RUST_LOG=debug`: each of its ARM requests logs its answer inside the
/// span of the interaction (its id, the person, the command), with Azure's request id, and
/// nothing secret is printed (the interaction's token included).
#[tokio::test]
async fn every_arm_answer_of_a_check_is_logged_under_the_interaction_and_its_person() {
    within(async {
        let (sim, discord, bot, secret) = bot_on_web_01(SimOptions::fast(), "debug").await;
        let ada = User::new(4010, "ada", &[5002]);
        let vm = json!([{"name": "vm", "type": 3, "value": "web-01"}]);
        let i = discord.slash(&ada, "rdp", &["check"], vm).await;
        discord.callback(&i, WAIT).await.expect("acknowledged");
        loop {
            let edit = discord.next_edit(&i, WAIT).await.expect("an edit");
            let title = edit.body()["embeds"][0]["title"].as_str().unwrap_or("");
            if !title.starts_with("Checking") && !title.starts_with("Looking for") {
                break;
            }
        }
        let printed = bot.stop().await;
        support::assert_arm_answers_under(&sim, "web-01", &printed, i.id, "discord:4010");
        assert_no_secret(
            &printed,
            &sim,
            &[
                ("the client secret", &secret),
                ("the interaction's token", &i.token),
            ],
        );
    })
    .await
}
