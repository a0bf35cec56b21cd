//! The gateway's hot standby and readiness that follows the gateway: real `rdp-doctor bot`
//! processes against the fake Discord. Two bots on one PostgreSQL database: one connects to the
//! gateway, the other waits (its `/readyz` says standby) and takes over when the first is
//! SIGKILLed, answering a `/rdp check`. A bot whose lock session the database ends leaves the
//! gateway and comes back once it holds the lock again. One bot whose gateway drops and cannot resume at once:
//! `/readyz` answers 503 naming the gateway until the session is back.

use crate::metrics::get;
use crate::support;
use rdp_doctor::sim::{Simulator, World};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::discord::{room_config, FakeDiscord, Options, User};
use support::process::Logged;
use support::within;

const WAIT: Duration = Duration::from_secs(20);

/// The promise: the standby takes the gateway over within 30 seconds.
const TAKEOVER: Duration = Duration::from_secs(30);

/// The bot's config: fast ARM settings, the standby asking for the lock every second, the war
/// room's policy.
fn config() -> String {
    room_config(
        "request_timeout_secs = 10\nmax_retries = 1\npoll_interval_ms = 10\n[replicas]\nstandby_check_secs = 1",
    )
}

/// One `rdp-doctor bot` process: where it serves `/readyz`, and its log as it comes.
struct Bot {
    process: Logged,
    base: String,
}

impl Bot {
    /// `rdp-doctor bot` on `database`, serving `/readyz` on a port of its own; returns once it
    /// says where.
    async fn start(
        name: &str,
        discord: &FakeDiscord,
        sim: &Simulator,
        secret: &str,
        config: &Path,
        database: &str,
    ) -> Bot {
        let mut command = discord.bot_command(sim, config, database);
        command
            .env("AZURE_CLIENT_SECRET", secret)
            .env("RDP_DOCTOR_METRICS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        let (process, base) = Logged::spawn(name, command, |line| {
            line.contains("/metrics on http://")
                .then(|| support::process::url_in(line))
                .flatten()
        })
        .await;
        Bot { process, base }
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// Until the log so far satisfies `done` (it comes through a pipe, after the fact).
    async fn log_until(&self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.log()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never logged {what}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/readyz`: the status and the body.
    async fn readyz(&self) -> (u16, String) {
        let (status, _, body) = get(&format!("{}/readyz", self.base)).await;
        (status, body)
    }

    /// Polls `/readyz` (as a load balancer does) until `done` holds for its answer.
    async fn readyz_until(&self, what: &str, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.readyz().await;
            if done(status, &body) {
                return (status, body);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz never {what}; last {status}: {body}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The simulator with `web-01`, its client secret, and a scratch folder with [`config`].
async fn azure(name: &str) -> (Simulator, String, PathBuf) {
    let world = World::new().vm("web-01");
    let secret = world.client_secret.clone();
    let sim = Simulator::start("127.0.0.1:0", world, Default::default())
        .await
        .expect("simulator");
    let dir = support::scratch_dir(name, &sim);
    std::fs::write(dir.join("rdp-doctor.toml"), config()).expect("config");
    (sim, secret, dir)
}

/// `/rdp check web-01` from an operator, through the gateway: the report's title.
async fn check(discord: &FakeDiscord) -> String {
    let alice = User::new(4_987_654_321, "alice", &[5001]);
    let vm = json!([{"name": "vm", "type": 3, "value": "web-01"}]);
    let i = discord.slash(&alice, "rdp", &["check"], vm).await;
    let ack = discord.callback(&i, WAIT).await.expect("acknowledged");
    assert_eq!(ack.body()["type"], 5, "{}", ack.body());
    loop {
        let edit = discord.next_edit(&i, WAIT).await.expect("the report");
        let title = edit.body()["embeds"][0]["title"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if title.starts_with("web-01") {
            return title;
        }
    }
}

#[tokio::test]
async fn a_second_bot_on_postgresql_waits_and_takes_the_gateway_over_when_the_first_dies() {
    within(async {
        let (sim, secret, dir) = azure("standby-takeover").await;
        let config = dir.join("rdp-doctor.toml");
        let discord = FakeDiscord::start().await;
        let database = rdp_doctor::store::testing::postgres_database().await;
        let mut a = Bot::start("bot A", &discord, &sim, &secret, &config, &database).await;
        discord.wait_ready(WAIT).await.expect("bot A connects");
        a.readyz_until("ready", |status, _| status == 200).await;

        let mut b = Bot::start("bot B", &discord, &sim, &secret, &config, &database).await;
        let (_, body) = b
            .readyz_until("standby", |status, body| {
                status == 503 && body.contains("gateway: standby")
            })
            .await;
        assert!(
            body.lines()
                .any(|l| l == "gateway: standby, another replica holds the gateway"),
            "{body}"
        );
        assert_eq!(discord.identifies(), 1, "only bot A identified");
        assert_eq!(discord.gateway_connections(), 1, "only bot A's websocket");
        assert_eq!(a.readyz().await.0, 200);

        // A dies without a word; its session ends and PostgreSQL frees the lock.
        a.process.child.start_kill().expect("SIGKILL bot A");
        let killed = Instant::now();
        a.process.child.wait().await.expect("bot A is gone");
        discord
            .wait_identified(2, TAKEOVER)
            .await
            .expect("bot B identifies");
        let connected = killed.elapsed();
        b.readyz_until("ready", |status, _| status == 200).await;
        let ready = killed.elapsed();
        let title = check(&discord).await;
        let answered = killed.elapsed();
        println!(
            "takeover: bot B connected {connected:.1?}, was ready {ready:.1?} and answered /rdp check {answered:.1?} after bot A was killed"
        );
        assert!(title.contains("nothing found"), "{title}");
        assert!(
            answered < TAKEOVER,
            "the standby took {answered:?} to take over"
        );
        let log = b.log();
        assert_eq!(
            log.matches("this one is the standby").count(),
            1,
            "said once:\n{log}"
        );
        assert!(log.contains("took the gateway lock"), "{log}");
        assert!(!log.contains(&secret), "{log}");
        // Stopped while it holds the gateway: it leaves cleanly and frees the lock.
        assert_eq!(support::sigterm(&mut b.process.child).await.code(), Some(0));
        let mut lock = rdp_doctor::store::GatewayLock::new(&database).expect("a URL");
        let deadline = tokio::time::Instant::now() + WAIT;
        while !lock.try_take().await.expect("the database answers") {
            assert!(tokio::time::Instant::now() < deadline, "the lock was never freed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

#[tokio::test]
async fn readyz_names_the_gateway_while_it_is_down_and_is_ready_again_after_the_resume() {
    within(async {
        let (sim, secret, dir) = azure("gateway-readyz").await;
        let config = dir.join("rdp-doctor.toml");
        // Heartbeats every 200 ms: serenity reports its stage to the shard manager on each
        // acknowledgement, which is how the bot learns of a resume that is slow to come.
        let discord = FakeDiscord::start_with(Options {
            heartbeat_interval: Duration::from_millis(200),
            ..Options::default()
        })
        .await;
        let bot = Bot::start(
            "the bot",
            &discord,
            &sim,
            &secret,
            &config,
            "sqlite::memory:",
        )
        .await;
        discord.wait_ready(WAIT).await.expect("the bot connects");
        bot.readyz_until("ready", |status, _| status == 200).await;

        // The connection drops and Discord is slow to take the bot back.
        discord.stall_sessions();
        discord.drop_gateway().await;
        let (_, body) = bot
            .readyz_until("names the gateway", |status, body| {
                status == 503 && body.contains("gateway: ")
            })
            .await;
        let line = body
            .lines()
            .find(|l| l.starts_with("gateway: "))
            .expect("a gateway line");
        assert!(line.contains("disconnected from Discord"), "{body}");
        assert!(
            !body.contains("commands:"),
            "the commands stay registered: {body}"
        );

        // Discord answers: the session resumes (serenity re-identifies instead if the drop
        // caught a heartbeat unanswered) and the bot is ready again.
        let (resumes, identifies) = (discord.resumes(), discord.identifies());
        discord.release_sessions();
        bot.readyz_until("ready again", |status, _| status == 200)
            .await;
        assert!(
            discord.resumes() > resumes || discord.identifies() > identifies,
            "ready again without a new session"
        );
        assert!(check(&discord).await.contains("nothing found"));
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

/// The database drops the active bot's lock session (as a restart of PostgreSQL does): the bot
/// must not go on holding the gateway unguarded. It disconnects, asks for the lock again, and,
/// no other replica holding it, connects again.
#[tokio::test]
async fn a_bot_that_loses_its_lock_session_leaves_the_gateway_and_waits_for_the_lock() {
    within(async {
        let (sim, secret, dir) = azure("standby-lost").await;
        let config = dir.join("rdp-doctor.toml");
        let discord = FakeDiscord::start().await;
        let database = rdp_doctor::store::testing::postgres_database().await;
        let bot = Bot::start("the bot", &discord, &sim, &secret, &config, &database).await;
        discord.wait_ready(WAIT).await.expect("the bot connects");
        bot.readyz_until("ready", |status, _| status == 200).await;

        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&database)
            .await
            .expect("an admin connection");
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_locks \
             WHERE locktype = 'advisory' AND objsubid = 1 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((classid::bigint << 32) | objid::bigint) = $1",
        )
        .bind(rdp_doctor::store::GATEWAY_LOCK_KEY)
        .fetch_one(&mut admin)
        .await
        .expect("end the lock's session");
        assert_eq!(ended, 1, "the bot's lock session");

        discord
            .wait_identified(2, WAIT)
            .await
            .expect("the bot connects again once it holds the lock again");
        bot.readyz_until("ready again", |status, _| status == 200)
            .await;
        let log = bot.log();
        assert!(
            log.contains("lost the gateway lock: disconnected from the gateway"),
            "{log}"
        );
        assert_eq!(log.matches("took the gateway lock").count(), 2, "{log}");
        assert!(check(&discord).await.contains("nothing found"));
        // The framework's set-up after the second READY (the commands registered again), as the
        // log pipe brings it.
        bot.log_until("ready twice", |log| {
            log.matches("rdp-doctor ready as").count() == 2
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}
