//! `rdp-doctor serve`, the HTTP interactions endpoint, in-process on 127.0.0.1:0 against the
//! Azure simulator and the fake Discord: Discord's signed POSTs (a key made for each test), the
//! first response as the HTTP response, follow-ups and edits on the fake's webhook routes.

use crate::support;
use rdp_doctor::azure::Arm;
use rdp_doctor::discord::serve::{PublicKey, ServeSettings};
use rdp_doctor::discord::Bot;
use rdp_doctor::runbook::catalog::Catalog;
use rdp_doctor::sim::{SimOptions, Simulator, World};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::discord::signed::{payload_of, Endpoint, Front, Signer};
use support::discord::{routes, FakeDiscord, Recorded, User, GUILD_ID, ROOM_POLICY, TOKEN};
use support::process::{base_url_before, Logged};
use support::within;

const WAIT: Duration = Duration::from_secs(20);

struct Served {
    discord: FakeDiscord,
    front: Front,
    sim: Simulator,
    endpoint: Endpoint,
    server: tokio::task::JoinHandle<Result<(), rdp_doctor::discord::BotError>>,
    alice: User,
    /// The endpoint's database (a handle on the same pool), to make it fail.
    store: rdp_doctor::store::Store,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Served {
    async fn start(world: World, options: SimOptions) -> Served {
        let secret = world.client_secret.clone();
        Served::signed_in_with(world, options, &secret).await
    }

    /// rdp-doctor signs in to Azure with `secret` (which the simulator may refuse).
    async fn signed_in_with(world: World, options: SimOptions, secret: &str) -> Served {
        let subscriptions: Vec<String> = world.subscriptions.iter().map(|s| s.id.clone()).collect();
        let sim = Simulator::start("127.0.0.1:0", world, support::quick(options))
            .await
            .expect("simulator");
        let url = url::Url::parse(&sim.url()).unwrap();
        let mut settings = support::fast_settings(url.clone());
        settings.request_timeout = Duration::from_secs(10);
        let arm = Arm::connect_with_secret(
            settings,
            url,
            support::TENANT,
            support::CLIENT,
            secret.to_string().into(),
        )
        .expect("arm");
        let discord = FakeDiscord::start().await;
        let front = Front::start(&discord).await;
        let policy: rdp_doctor::policy::PolicyConfig = toml::from_str(ROOM_POLICY).expect("policy");
        let policy = rdp_doctor::policy::Policy::new(Some(&policy))
            .expect("policy")
            .with_guild(Some(GUILD_ID));
        let store = rdp_doctor::store::Store::open("sqlite::memory:")
            .await
            .expect("store");
        let door = rdp_doctor::runbook::door::Door::new(
            arm,
            Arc::new(Catalog::builtin()),
            Arc::new(policy),
            subscriptions,
        )
        .with_store(store.clone());
        let signer = Signer::generate();
        let public_key: PublicKey = signer.public_hex().parse().expect("a public key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let settings = ServeSettings {
            token: TOKEN.to_string().into(),
            api_url: Some(front.url.clone()),
            guild_id: Some(GUILD_ID),
            application_id: None,
            public_key,
            directory_refresh: Duration::from_secs(3600),
            alert_token: None,
            alerts: Default::default(),
        };
        let server = tokio::spawn(rdp_doctor::discord::serve::serve(
            listener,
            settings,
            Bot::new(door),
        ));
        Served {
            discord,
            front,
            sim,
            endpoint: Endpoint::new(url, signer),
            server,
            alice: User::new(4001, "alice", &[5001]),
            store,
        }
    }

    /// Until `GET /readyz` answers 200 (the commands registered), within `WAIT`.
    async fn ready(self) -> Served {
        self.endpoint
            .readyz_until(WAIT, String::new, |status, _| status == 200)
            .await;
        self
    }

    fn arm_requests(&self) -> usize {
        self.sim.stats().log.len()
    }

    /// Edits of the original response of `i` until one is no longer "Looking for…"/"Checking…".
    async fn final_edit(&self, i: &support::discord::Interaction) -> Recorded {
        self.discord
            .edit_titled(i, WAIT, |t| {
                !t.starts_with("Checking") && !t.starts_with("Looking for")
            })
            .await
            .expect("the final edit")
    }
}

fn vm(name: &str) -> Value {
    json!([{"name": "vm", "type": 3, "value": name}])
}

#[tokio::test]
async fn only_requests_signed_with_the_application_key_are_served() {
    within(async {
        let served = Served::start(World::new().vm("web-01"), SimOptions::fast())
            .await
            .ready()
            .await;
        let endpoint = &served.endpoint;
        let ping = br#"{"id":"1","application_id":"1180000000000000001","type":1,"token":"t","version":1}"#.to_vec();

        let pong = endpoint.post_signed(ping.clone()).await;
        assert_eq!(pong.status, 200, "{pong:?}");
        assert_eq!(pong.json(), json!({"type": 1}));

        // Signed by another key (Discord's probe).
        let other = Signer::generate();
        let mut headers = endpoint.signed_headers(&ping);
        let timestamp = headers[2].1.clone();
        headers[1].1 = other.sign(&timestamp, &ping);
        assert_eq!(endpoint.post(&headers, ping.clone()).await.status, 401);

        // Not hex, too short, empty.
        for bad in ["zz".repeat(64), "00".repeat(63), String::new()] {
            let mut headers = endpoint.signed_headers(&ping);
            headers[1].1 = bad;
            assert_eq!(endpoint.post(&headers, ping.clone()).await.status, 401);
        }

        // A header missing.
        let headers = endpoint.signed_headers(&ping);
        for missing in ["x-signature-ed25519", "x-signature-timestamp"] {
            let kept: Vec<_> = headers
                .iter()
                .filter(|(name, _)| *name != missing)
                .cloned()
                .collect();
            assert_eq!(endpoint.post(&kept, ping.clone()).await.status, 401);
        }

        // The body, or the timestamp, changed after signing.
        let headers = endpoint.signed_headers(&ping);
        let changed = String::from_utf8(ping.clone()).unwrap().replace("\"1\"", "\"2\"");
        assert_eq!(
            endpoint.post(&headers, changed.into_bytes()).await.status,
            401
        );
        let mut later = headers.clone();
        later[2].1 = format!("{}0", later[2].1);
        assert_eq!(endpoint.post(&later, ping.clone()).await.status, 401);

        // Validly signed, but long ago (a captured request replayed) or far ahead.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for when in [now - 6 * 60, now + 6 * 60] {
            let mut headers = endpoint.signed_headers(&ping);
            headers[2].1 = when.to_string();
            headers[1].1 = endpoint.signer.sign(&headers[2].1, &ping);
            let answer = endpoint.post(&headers, ping.clone()).await;
            assert_eq!(answer.status, 401, "{answer:?}");
        }
        // Within the window of clock skew: served.
        let mut headers = endpoint.signed_headers(&ping);
        headers[2].1 = (now - 60).to_string();
        headers[1].1 = endpoint.signer.sign(&headers[2].1, &ping);
        assert_eq!(endpoint.post(&headers, ping.clone()).await.status, 200);

        // Signed, but not JSON; and too large to be an interaction.
        let mut text = endpoint.signed_headers(&ping);
        text[0].1 = "text/plain".to_string();
        assert_eq!(endpoint.post(&text, ping.clone()).await.status, 415);
        let huge = vec![b' '; 2 * 1024 * 1024];
        assert_eq!(endpoint.post_signed(huge).await.status, 413);

        // A signed command with a bad signature is refused before anything happens.
        let before = served.arm_requests();
        let i = served
            .discord
            .slash(&served.alice, "rdp", &["check"], vm("web-01"))
            .await;
        let body = payload_of(&served.discord, &i).to_string().into_bytes();
        let mut forged = endpoint.signed_headers(&body);
        forged[1].1 = other.sign(&forged[2].1, &body);
        assert_eq!(endpoint.post(&forged, body).await.status, 401);
        assert_eq!(served.arm_requests(), before, "no Azure request");
        let to_discord: Vec<_> = served
            .discord
            .requests()
            .into_iter()
            .filter(|r| r.path.contains(&i.token))
            .collect();
        assert!(to_discord.is_empty(), "{to_discord:?}");
    })
    .await
}

#[tokio::test]
async fn a_check_is_deferred_in_the_http_response_and_the_report_edited_in_by_webhook() {
    within(async {
        // Every ARM request takes 2 s: a deferral sent after any of them would be late.
        let options = SimOptions {
            latency: Duration::from_secs(2),
            ..SimOptions::fast()
        };
        let served = Served::start(World::new().vm("web-01"), options)
            .await
            .ready()
            .await;
        let i = served
            .discord
            .slash(&served.alice, "rdp", &["check"], vm("web-01"))
            .await;
        let answer = served
            .endpoint
            .deliver(&served.discord, &served.front, &i)
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json()["type"], 5, "a deferral: {}", answer.body);
        assert!(
            answer.took < Duration::from_secs(1),
            "deferred after {:?}",
            answer.took
        );

        let report = served.final_edit(&i).await;
        assert_eq!(report.route, routes::ORIGINAL);
        assert!(
            report.path.starts_with(&format!(
                "/api/v10/webhooks/{}/{}/messages/@original",
                support::discord::APP_ID,
                i.token
            )),
            "{}",
            report.path
        );
        assert!(report.title().starts_with("web-01"), "{report:?}");
        let violations = served.discord.schema_violations();
        assert!(violations.is_empty(), "{violations:#?}");
    })
    .await
}

#[tokio::test]
async fn help_and_bad_options_are_answered_in_the_http_response() {
    within(async {
        let served = Served::start(World::new().vm("web-01"), SimOptions::fast())
            .await
            .ready()
            .await;
        let help = served
            .discord
            .slash(&served.alice, "rdp", &["help"], json!([]))
            .await;
        let answer = served
            .endpoint
            .deliver(&served.discord, &served.front, &help)
            .await;
        let body = answer.json();
        assert_eq!(body["type"], 4, "{body}");
        assert_eq!(body["data"]["flags"], 64, "private: {body}");

        let before = served.arm_requests();
        let bad = served
            .discord
            .slash(&served.alice, "rdp", &["check"], vm("web 01!"))
            .await;
        let body = served
            .endpoint
            .deliver(&served.discord, &served.front, &bad)
            .await
            .json();
        assert_eq!(body["type"], 4, "{body}");
        assert_eq!(body["data"]["embeds"][0]["title"], "Cannot look that up");
        assert_eq!(served.arm_requests(), before, "no Azure request");

        // A required option missing (Discord enforces them; a hand-made request may not).
        let bare = served
            .discord
            .slash(&served.alice, "rdp", &["check"], json!([]))
            .await;
        let body = served
            .endpoint
            .deliver(&served.discord, &served.front, &bare)
            .await
            .json();
        assert_eq!(body["data"]["flags"], 64, "private: {body}");
        assert_eq!(
            body["data"]["embeds"][0]["description"],
            "The option `vm` is missing. `/rdp help` lists the commands and their options."
        );
        assert_eq!(served.arm_requests(), before, "no Azure request");

        // Someone outside the served channels: refused privately, as on the gateway.
        served.discord.set_origin(support::discord::Origin::Guild {
            guild: GUILD_ID,
            channel: 42,
        });
        let elsewhere = served
            .discord
            .slash(&served.alice, "rdp", &["check"], vm("web-01"))
            .await;
        let body = served
            .endpoint
            .deliver(&served.discord, &served.front, &elsewhere)
            .await
            .json();
        assert_eq!(body["data"]["embeds"][0]["title"], "Not here", "{body}");
        assert_eq!(served.arm_requests(), before, "no Azure request");
    })
    .await
}

#[tokio::test]
async fn a_fix_button_confirmed_over_http_writes_exactly_once() {
    within(async {
        let served = Served::start(World::new().vm("sql-01").stopped(), SimOptions::fast())
            .await
            .ready()
            .await;
        let check = served
            .discord
            .slash(&served.alice, "rdp", &["check"], vm("sql-01"))
            .await;
        served
            .endpoint
            .deliver(&served.discord, &served.front, &check)
            .await;
        let report = served.final_edit(&check).await;
        let report_id = report.message_id.expect("the report's message");

        // The fix button: a new public message ("thinking…", type 5), then the prompt.
        let (d, f, alice) = (&served.discord, &served.front, &served.alice);
        let click = served
            .endpoint
            .click(d, f, alice, report_id, "Start the VM", 5)
            .await;
        let prompt = d
            .edit_titled(&click, WAIT, |t| t.starts_with("Confirm"))
            .await
            .expect("the prompt");
        let prompt_id = prompt.message_id.expect("the prompt's message");

        // Confirm: acknowledged as a component update (type 6), the outcome edited in.
        let confirm = d.button(prompt_id, "Confirm");
        let click = served
            .endpoint
            .click(d, f, alice, prompt_id, "Confirm", 6)
            .await;
        let done = d
            .edit_titled(&click, WAIT, |t| {
                t.contains("succeeded") || t.contains("failed")
            })
            .await
            .expect("the outcome")
            .title();
        assert!(done.contains("start of sql-01 succeeded"), "{done}");

        // A second click of the same Confirm (the button is gone from the message; a stale
        // client still has it): refused, nothing more sent to Azure.
        let again = d.component(alice, prompt_id, &confirm, &[]).await;
        let answer = served.endpoint.deliver(d, f, &again).await;
        assert_eq!(answer.json()["type"], 6, "{}", answer.body);
        let refusal = served
            .discord
            .next_followup(&again, WAIT)
            .await
            .expect("a private refusal");
        assert_eq!(refusal.flags() & 64, 64, "{refusal:?}");

        let starts = served
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method == "POST" && e.path.contains("/start?"))
            .count();
        assert_eq!(starts, 1);
        let violations = served.discord.schema_violations();
        assert!(violations.is_empty(), "{violations:#?}");
    })
    .await
}

#[tokio::test]
async fn reset_password_opens_its_form_as_the_http_response_and_the_password_stays_here() {
    within(async {
        let served = Served::start(World::new().vm("web-01"), SimOptions::fast())
            .await
            .ready()
            .await;
        let ada = User::new(4010, "ada", &[5002]);
        let secret = "Sup3r-Secret-Passw0rd!";
        let i = served
            .discord
            .slash(&ada, "rdp", &["reset-password"], vm("web-01"))
            .await;
        let form = served
            .endpoint
            .deliver(&served.discord, &served.front, &i)
            .await;
        assert_eq!(
            form.json()["type"],
            9,
            "the form is the HTTP response: {}",
            form.body
        );

        let submit = served
            .discord
            .modal_submit(
                &ada,
                &i,
                &[
                    ("user", "opsadmin"),
                    ("password", secret),
                    ("repeat", secret),
                ],
            )
            .await;
        let answer = served
            .endpoint
            .deliver(&served.discord, &served.front, &submit)
            .await;
        assert_eq!(answer.json()["type"], 5, "{}", answer.body);
        let prompt = served
            .discord
            .next_edit(&submit, WAIT)
            .await
            .expect("the prompt");
        assert!(prompt.title().contains("opsadmin"), "{prompt:?}");
        let prompt_id = prompt.message_id.expect("the prompt's message");
        let confirm = served.discord.button(prompt_id, "Confirm");
        let click = served
            .discord
            .component(&ada, prompt_id, &confirm, &[])
            .await;
        served
            .endpoint
            .deliver(&served.discord, &served.front, &click)
            .await;
        served
            .discord
            .edit_titled(&click, WAIT, |t| t.contains("succeeded"))
            .await
            .expect("progress");
        assert_eq!(served.sim.world().vm("web-01").password_resets(), 1);
        for request in served.discord.requests() {
            let body = request.body().to_string();
            assert!(
                !body.contains(secret),
                "{} {}",
                request.method,
                request.path
            );
        }
    })
    .await
}

#[tokio::test]
async fn autocomplete_over_http_offers_the_vms_that_fit() {
    within(async {
        let world = World::new().vm("web-01").vm("web-02").vm("db-01");
        let served = Served::start(world, SimOptions::fast()).await.ready().await;
        // The VM list loads in the background at start; until then there is nothing to offer.
        let deadline = tokio::time::Instant::now() + WAIT;
        let choices = loop {
            let i = served
                .discord
                .autocomplete(&served.alice, "rdp", &["check"], vm("web-0"), "vm")
                .await;
            let answer = served
                .endpoint
                .deliver(&served.discord, &served.front, &i)
                .await;
            let body = answer.json();
            assert_eq!(body["type"], 8, "{body}");
            let choices = body["data"]["choices"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !choices.is_empty() {
                break choices;
            }
            assert!(tokio::time::Instant::now() < deadline, "no choices: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let names: Vec<&str> = choices.iter().filter_map(|c| c["value"].as_str()).collect();
        assert_eq!(names.len(), 2, "{choices:?}");
        assert!(names.iter().all(|n| n.contains("web-0")), "{choices:?}");

        // Outside the served channels: no choices, as on the gateway.
        served.discord.set_origin(support::discord::Origin::Guild {
            guild: GUILD_ID,
            channel: 42,
        });
        let i = served
            .discord
            .autocomplete(&served.alice, "rdp", &["check"], vm("web-0"), "vm")
            .await;
        let body = served
            .endpoint
            .deliver(&served.discord, &served.front, &i)
            .await
            .json();
        assert_eq!(body["type"], 8, "{body}");
        assert_eq!(body["data"]["choices"], json!([]), "{body}");
    })
    .await
}

#[tokio::test]
async fn healthz_answers_while_readyz_names_what_is_not_ready() {
    within(async {
        let served = Served::start(World::new().vm("web-01"), SimOptions::fast())
            .await
            .ready()
            .await;
        assert_eq!(served.endpoint.get("/healthz").await.0, 200);
        assert_eq!(
            served.endpoint.get("/readyz").await,
            (200, "ready\n".into())
        );

        // The database gone: alive, not ready, and the body says which part.
        served.store.close().await;
        assert_eq!(served.endpoint.get("/healthz").await.0, 200);
        let (status, body) = served.endpoint.get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("database: "), "{body}");
        assert!(!body.contains("azure"), "{body}");

        // Azure refuses rdp-doctor's secret: alive, not ready, and the body says why.
        let refused = Served::signed_in_with(
            World::new().vm("web-01"),
            SimOptions::fast(),
            "not-the-secret",
        )
        .await;
        // Registered: `/rdp` is there at the fake.
        let deadline = tokio::time::Instant::now() + WAIT;
        while refused.discord.registered_commands().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(refused.endpoint.get("/healthz").await.0, 200);
        let (status, body) = refused.endpoint.get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("azure: "), "{body}");
        assert!(!body.contains("commands"), "{body}");
        assert!(!body.contains("not-the-secret"), "{body}");
    })
    .await
}

#[tokio::test]
async fn metrics_count_a_check_over_http_with_bounded_labels_and_no_names() {
    use crate::metrics::{get, parse};
    within(async {
        let world = World::new().vm("web-01");
        let secret = world.client_secret.clone();
        let served = Served::start(world, SimOptions::fast()).await.ready().await;
        let scrape = || async {
            let (status, content_type, text) = get(&format!("{}/metrics", served.endpoint.url)).await;
            assert_eq!(status, 200, "{text}");
            assert!(
                content_type.starts_with("application/openmetrics-text"),
                "{content_type}"
            );
            (parse(&text), text)
        };
        // The registry is the process's: other tests running meanwhile only add to it.
        let (before, _) = scrape().await;
        let check_ok = [("command", "check"), ("outcome", "ok")];
        let acks = [("transport", "endpoint")];
        let vm_get = [
            ("method", "GET"),
            (
                "route",
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            ),
            ("status", "200"),
        ];

        let i = served
            .discord
            .slash(&served.alice, "rdp", &["check"], vm("web-01"))
            .await;
        let answer = served
            .endpoint
            .deliver(&served.discord, &served.front, &i)
            .await;
        assert_eq!(answer.json()["type"], 5, "{}", answer.body);
        served.final_edit(&i).await;
        // A fix offered and not yet confirmed: one pending confirmation in this database.
        let restart = served
            .discord
            .slash(&served.alice, "rdp", &["restart"], vm("web-01"))
            .await;
        served
            .endpoint
            .deliver(&served.discord, &served.front, &restart)
            .await;
        served
            .discord
            .edit_titled(&restart, WAIT, |t| t.starts_with("Confirm"))
            .await
            .expect("the prompt");

        // The commands are counted once their handlers return, just after their last message.
        let deadline = tokio::time::Instant::now() + WAIT;
        let (after, text) = loop {
            let (after, text) = scrape().await;
            let restarts = after.value(
                "rdp_doctor_commands_total",
                &[("command", "restart"), ("outcome", "ok")],
            );
            if after.value("rdp_doctor_commands_total", &check_ok)
                > before.value("rdp_doctor_commands_total", &check_ok)
                && restarts
                    > before.value(
                        "rdp_doctor_commands_total",
                        &[("command", "restart"), ("outcome", "ok")],
                    )
            {
                break (after, text);
            }
            assert!(tokio::time::Instant::now() < deadline, "never counted:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let moved = |name: &str, labels: &[(&str, &str)]| {
            after.value(name, labels) > before.value(name, labels)
        };
        assert!(
            moved("rdp_doctor_acknowledgement_seconds_count", &acks),
            "{text}"
        );
        assert!(
            moved("rdp_doctor_acknowledgement_seconds_sum", &acks),
            "{text}"
        );
        let mut le_one_second = acks.to_vec();
        le_one_second.push(("le", "1.0"));
        assert!(
            moved("rdp_doctor_acknowledgement_seconds_bucket", &le_one_second),
            "a deferral within a second: {text}"
        );
        assert!(moved("rdp_doctor_arm_requests_total", &vm_get), "{text}");
        // This test's own database: exact.
        assert_eq!(after.value("rdp_doctor_confirmations_pending", &[]), 1.0, "{text}");
        assert_eq!(after.value("rdp_doctor_operations_running", &[]), 0.0, "{text}");
        for family in [
            "rdp_doctor_arm_throttled",
            "rdp_doctor_leases_taken_over",
            "rdp_doctor_arm_pacing_wait_seconds",
        ] {
            assert!(after.types.contains_key(family), "{family} missing: {text}");
        }

        // Bounded labels: routes are templates, commands and outcomes from closed sets.
        for sample in after.all("rdp_doctor_arm_requests_total") {
            let route = &sample.labels["route"];
            assert!(
                route
                    .split('/')
                    .all(|s| s.is_empty() || s == "{}" || s.chars().next().unwrap().is_ascii_alphabetic()),
                "{route}"
            );
            assert!(!route.contains('?'), "{route}");
        }
        for sample in after.all("rdp_doctor_commands_total") {
            assert!(
                ["ok", "refused", "error"].contains(&sample.labels["outcome"].as_str()),
                "{sample:?}"
            );
        }
        for secret in [
            secret.as_str(),
            "web-01",
            "rg-web",
            rdp_doctor::sim::DEFAULT_SUBSCRIPTION,
            i.token.as_str(),
            TOKEN,
        ] {
            assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
        }
    })
    .await
}

/// The binary: `rdp-doctor serve --simulate` with `RDP_DOCTOR_LISTEN=127.0.0.1:0`, as an operator
/// runs it; the address it listens on is read from its log.
fn serve_command(api_url: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DISCORD_TOKEN", TOKEN)
        .env("DISCORD_API_URL", api_url)
        .env("DISCORD_GUILD_ID", GUILD_ID.to_string())
        .env("RDP_DOCTOR_LISTEN", "127.0.0.1:0")
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn the_serve_binary_answers_signed_pings_logs_no_secret_and_stops_on_sigterm() {
    within(async {
        let discord = FakeDiscord::start().await;
        let signer = Signer::generate();
        let public_key = signer.public_hex();
        let front = Front::start(&discord).await;
        // The loudest log: still no token, signature or request body in it.
        let mut command = serve_command(&front.url);
        command
            .args(["serve", "--simulate"])
            .env("DISCORD_PUBLIC_KEY", &public_key)
            .env("RUST_LOG", "trace");
        let (mut serve, url) = Logged::spawn("serve", command, |line| {
            base_url_before(line, "/interactions")
        })
        .await;
        let endpoint = Endpoint::new(url, signer);
        let ping = br#"{"id":"1","application_id":"1180000000000000001","type":1,"token":"t","version":1}"#.to_vec();
        let pong = endpoint.post_signed(ping.clone()).await;
        assert_eq!((pong.status, pong.json()), (200, json!({"type": 1})));
        let forged = Endpoint::new(endpoint.url.clone(), Signer::generate());
        assert_eq!(forged.post_signed(ping).await.status, 401);
        assert_eq!(endpoint.get("/healthz").await.0, 200);
        endpoint
            .readyz_until(WAIT, String::new, |status, _| status == 200)
            .await;
        let names: Vec<Value> = discord
            .registered_commands()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("rdp")]);
        // The demo has no [policy]: a command is refused, through the whole handler.
        let alice = User::new(4001, "alice", &[5001]);
        let i = discord.slash(&alice, "rdp", &["check"], vm("web-01")).await;
        let body = payload_of(&discord, &i).to_string().into_bytes();
        let headers = endpoint.signed_headers(&body);
        let signature = headers[1].1.clone();
        let refused = endpoint.post(&headers, body).await;
        assert_eq!(refused.json()["data"]["embeds"][0]["title"], "Not here");

        let status = support::sigterm(&mut serve.child).await;
        let seen = serve.log_to_end().await;
        assert_eq!(status.code(), Some(0), "{seen}");
        assert!(seen.contains("shutting down"), "{seen}");
        for secret in [TOKEN, i.token.as_str(), signature.as_str(), "aW50ZXJhY3Rpb24"] {
            assert!(!seen.contains(secret), "{secret} in the log:\n{seen}");
        }
    })
    .await
}

#[tokio::test]
async fn register_registers_and_serve_refuses_a_bad_public_key() {
    within(async {
        let discord = FakeDiscord::start().await;
        let out = serve_command(&discord.url())
            .arg("register")
            .output()
            .await
            .expect("runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(discord.registered_commands()[0]["name"], "rdp");

        let out = serve_command(&discord.url())
            .args(["serve", "--simulate"])
            .env("DISCORD_PUBLIC_KEY", "not-a-key")
            .output()
            .await
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("DISCORD_PUBLIC_KEY must be"), "{err}");
        let out = serve_command(&discord.url())
            .args(["serve", "--simulate"])
            .output()
            .await
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("DISCORD_PUBLIC_KEY is not set"), "{err}");
    })
    .await
}

/// `/rdp watch` over HTTP: a watch is deferred in the HTTP response and confirmed by webhook;
/// a length past the maximum and the channel's list are answered privately in the response.
#[tokio::test]
async fn a_watch_is_started_listed_and_refused_over_http() {
    within(async {
        let served = Served::start(World::new().vm("web-01"), SimOptions::fast())
            .await
            .ready()
            .await;
        let send = async |options: Value| {
            let i = served
                .discord
                .slash(&served.alice, "rdp", &["watch"], options)
                .await;
            let answer = served
                .endpoint
                .deliver(&served.discord, &served.front, &i)
                .await;
            (i, answer.json())
        };
        let (i, first) = send(json!([
            {"name": "vm", "type": 3, "value": "web-01"},
            {"name": "minutes", "type": 4, "value": 5}
        ]))
        .await;
        assert_eq!(first["type"], 5, "deferred: {first}");
        let started = served.final_edit(&i).await;
        assert_eq!(started.title(), "Watching web-01");

        let (_, too_long) = send(json!([
            {"name": "vm", "type": 3, "value": "web-01"},
            {"name": "minutes", "type": 4, "value": 1000}
        ]))
        .await;
        assert_eq!(too_long["type"], 4, "{too_long}");
        assert_eq!(too_long["data"]["flags"], 64, "private: {too_long}");
        assert_eq!(
            too_long["data"]["embeds"][0]["description"],
            "a watch lasts from 1 to 240 minutes; 1000 is not in that range"
        );

        let (_, list) = send(json!([])).await;
        assert_eq!(list["type"], 4, "{list}");
        assert_eq!(list["data"]["flags"], 64, "private: {list}");
        let text = list["data"]["embeds"][0]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(text.starts_with("**web-01** for alice until "), "{text}");
        assert_eq!(served.store.watches(None).await.unwrap().len(), 1);
    })
    .await
}
