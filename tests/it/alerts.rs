//! Azure Monitor alerts into the war room: `rdp-doctor serve`'s `POST /alerts/azure-monitor`
//! in-process against the Azure simulator and the fake Discord, with the common alert schema's
//! samples of `tests/fixtures/azure-monitor-alerts/` (Microsoft's "Sample alert payloads").
//! What the room sees is asserted as text ([`render`]), in inline snapshots.

use crate::discord::war_room::render;
use crate::support;
use rdp_doctor::azure::Arm;
use rdp_doctor::discord::serve::{PublicKey, ServeSettings};
use rdp_doctor::discord::Bot;
use rdp_doctor::runbook::catalog::Catalog;
use rdp_doctor::sim::{SimOptions, Simulator, World};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::discord::{routes, FakeDiscord, Recorded, GUILD_ID, ROOM_POLICY, TOKEN};
use support::within;

const WAIT: Duration = Duration::from_secs(30);

const ALERT_TOKEN: &str = "alert-token-Zq8v3kT1";

const METRIC: &str = include_str!("../fixtures/azure-monitor-alerts/metric.json");
const LOG: &str = include_str!("../fixtures/azure-monitor-alerts/log.json");
const ACTIVITY: &str = include_str!("../fixtures/azure-monitor-alerts/activity-log.json");
const HEALTH: &str = include_str!("../fixtures/azure-monitor-alerts/resource-health.json");

/// The room's policy, with Azure Monitor's alerts granted `read` everywhere.
fn alerts_policy() -> String {
    format!("{ROOM_POLICY}\n[[grant]]\nalerts = true\nlevel = \"read\"\nscope = \"*\"\n")
}

/// `[alerts]`: the demo subscription's rg-web to the fake's channel, posting at once.
const ROUTE: &str = r#"
gather_secs = 0
[[route]]
scope = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web"
channel = "1180000000000000003"
"#;

struct Replica {
    url: String,
    server: tokio::task::JoinHandle<Result<(), rdp_doctor::discord::BotError>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The fake Discord, the simulator and `replicas` `serve` endpoints on one SQLite file.
struct Alerted {
    discord: FakeDiscord,
    sim: Simulator,
    replicas: Vec<Replica>,
    client: reqwest::Client,
    _dir: std::path::PathBuf,
    secret: String,
    subscriptions: Vec<String>,
    policy: String,
    database: String,
}

/// Replica `n`'s door: the simulator's client, `policy`, the store at `database`.
async fn door_on(
    sim: &Simulator,
    secret: &str,
    subscriptions: &[String],
    policy: &str,
    database: &str,
    n: usize,
) -> rdp_doctor::runbook::door::Door {
    let url = url::Url::parse(&sim.url()).unwrap();
    let arm = Arm::connect_with_secret(
        support::fast_settings(url.clone()),
        url,
        support::TENANT,
        support::CLIENT,
        secret.to_string().into(),
    )
    .expect("arm");
    let policy: rdp_doctor::policy::PolicyConfig = toml::from_str(policy).expect("policy");
    let policy = rdp_doctor::policy::Policy::new(Some(&policy))
        .expect("policy")
        .with_guild(Some(GUILD_ID));
    let store = rdp_doctor::store::Store::open(database)
        .await
        .expect("store");
    rdp_doctor::runbook::door::Door::new(
        arm,
        Arc::new(Catalog::builtin()),
        Arc::new(policy),
        subscriptions.to_vec(),
    )
    .with_store(store)
    .with_replica(&format!("replica-{n}"), Duration::from_secs(20))
}

impl Alerted {
    async fn start(world: World, policy: &str, alerts: &str, replicas: usize) -> Alerted {
        Alerted::start_with(world, policy, alerts, replicas, Some(ALERT_TOKEN)).await
    }

    /// As [`Alerted::start`], `token` as `RDP_DOCTOR_ALERT_TOKEN`.
    async fn start_with(
        world: World,
        policy: &str,
        alerts: &str,
        replicas: usize,
        token: Option<&str>,
    ) -> Alerted {
        let subscriptions: Vec<String> = world.subscriptions.iter().map(|s| s.id.clone()).collect();
        let secret = world.client_secret.clone();
        let sim = Simulator::start("127.0.0.1:0", world, support::quick(SimOptions::fast()))
            .await
            .expect("simulator");
        let discord = FakeDiscord::start().await;
        let dir = support::scratch_dir("alerts", &sim);
        let database = format!("sqlite://{}", dir.join("rdp-doctor.db").display());
        let alerts: rdp_doctor::runbook::alerts::AlertsConfig =
            toml::from_str(alerts).expect("[alerts]");
        let mut started = Vec::new();
        for n in 0..replicas {
            let door = door_on(&sim, &secret, &subscriptions, policy, &database, n).await;
            let directory = door.directory().clone();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().unwrap());
            let key = support::discord::signed::Signer::generate();
            let settings = ServeSettings {
                token: TOKEN.to_string().into(),
                api_url: Some(discord.url()),
                guild_id: Some(GUILD_ID),
                application_id: None,
                public_key: key.public_hex().parse::<PublicKey>().expect("key"),
                directory_refresh: Duration::from_secs(3600),
                alert_token: token.map(|t| t.to_string().into()),
                alerts: alerts.settings().expect("[alerts] checks"),
            };
            let server = tokio::spawn(rdp_doctor::discord::serve::serve(
                listener,
                settings,
                Bot::new(door),
            ));
            // The VM list loads in the background at start; let it, so that tests that count
            // Azure requests count only what an alert caused.
            support::until("the VM list", directory.watch_attempts(), || {
                directory.attempts() > 0
            })
            .await;
            started.push(Replica { url, server });
        }
        Alerted {
            discord,
            sim,
            replicas: started,
            client: reqwest::Client::new(),
            _dir: dir,
            secret,
            subscriptions,
            policy: policy.to_string(),
            database,
        }
    }

    /// A door on the replicas' database, as another process of the same deployment opens it.
    async fn door(&self) -> rdp_doctor::runbook::door::Door {
        door_on(
            &self.sim,
            &self.secret,
            &self.subscriptions,
            &self.policy,
            &self.database,
            self.replicas.len(),
        )
        .await
    }

    /// POST `body` to replica `n` with `token`: the status and the body.
    async fn post_to(&self, n: usize, token: Option<&str>, body: &str) -> (u16, String) {
        let mut url = format!("{}/alerts/azure-monitor", self.replicas[n].url);
        if let Some(token) = token {
            url.push_str(&format!("?token={token}"));
        }
        let answer = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("the endpoint answers");
        let status = answer.status().as_u16();
        (status, answer.text().await.unwrap_or_default())
    }

    async fn post(&self, body: &str) -> (u16, String) {
        self.post_to(0, Some(ALERT_TOKEN), body).await
    }

    /// The next new channel message.
    async fn next_post(&self) -> Recorded {
        self.discord
            .next_channel_message(WAIT)
            .await
            .expect("a channel message")
    }

    /// The next edit of a channel message.
    async fn next_edit(&self) -> Recorded {
        self.discord
            .next_request(
                "an edit of a channel message",
                |r| r.method == "PATCH" && r.route == routes::CHANNEL_MESSAGE,
                WAIT,
            )
            .await
            .expect("a channel message edited")
    }

    /// Channel messages posted or edited so far that no `next_*` consumed.
    fn unseen(&self) -> Vec<String> {
        self.discord
            .unconsumed()
            .iter()
            .filter(|r| r.route == routes::CHANNEL_MESSAGES || r.route == routes::CHANNEL_MESSAGE)
            .map(render)
            .collect()
    }
}

/// The report as the room sees it, the serial log's lines left out.
fn without_serial_log(text: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line == "# Serial log (last 40 lines)" {
            skipping = true;
            out.push("# Serial log (last 40 lines)\n…");
            continue;
        }
        if skipping {
            skipping = line != "```";
            continue;
        }
        out.push(line);
    }
    out.join("\n")
}

fn fired_again(body: &str) -> String {
    body.replace("\"metricValue\": 7.727", "\"metricValue\": 31.5")
}

fn resolved(body: &str) -> String {
    body.replace(
        "\"monitorCondition\": \"Fired\",",
        "\"monitorCondition\": \"Resolved\",\n      \"resolvedDateTime\": \"2019-03-22T14:03:16.2246313Z\",",
    )
}

#[tokio::test]
async fn an_alert_for_web_02_posts_its_report_and_a_refire_and_the_resolution_edit_it() {
    within(async {
        // Alice added the deny rule 10 minutes ago: the Activity Log says so.
        let world = World::new().vm("web-02").nsg_denies_rdp().activity(
            10,
            "alice@contoso.com",
            "Microsoft.Network/networkSecurityGroups/securityRules/write",
            "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web/providers/Microsoft.Network/networkSecurityGroups/web-02-snet-nsg/securityRules/deny-rdp-internet",
        );
        let room = Alerted::start(world, &alerts_policy(), ROUTE, 1).await;

        let (status, answer) = room.post(METRIC).await;
        assert_eq!(status, 202, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["checking"][0]["vm"], "web-02", "{answer}");
        let posted = room.next_post().await;
        insta::assert_snapshot!(without_serial_log(&render(&posted)), @r"
        🚨 **Azure Monitor alert WCUS-R2-Gen2** (Sev3, fired <time>)
        Percentage CPU GreaterThan 25 (value 7.727)
        # web-02: problems found
        Resource group **rg-web** · subscription `11111111-1111-1111-1111-111111111111`
        ## ✅ VM is running and provisioned
        VM is running (provisioning succeeded)
        ## ✅ VM guest agent is Ready
        Guest agent is Ready (version 2.7.41491.949)
        GuestAgent is running and accepting new configurations.
        ## ✅ VM has a public IP (or a private path)
        Public IP 20.1.2.3 (static, Standard SKU, web-02-ip)
        ## ❌ Network security group allows TCP 3389
        TCP 3389 from the Internet is denied by rule deny-rdp-internet (priority 200) in NSG web-02-snet-nsg
        ## ✅ Resource Health is Available
        Resource Health: Available
        ## ✅ Boot diagnostics: console screenshot and serial log
        Console screenshot captured; serial log has 40 recent lines
        ## ✅ The reply finds its way back to you
        Replies to the Internet go to the Internet (system route 0.0.0.0/0)
        ## 🕘 Recent changes
        The last 24 hours, newest first:
        **<t:…> alice@contoso.com created security rule deny-rdp-internet in web-02-snet-nsg** ← explains `nsg`
        ## ➡️ Next step
        **Allow inbound TCP 3389 in the NSG** (`open-rdp-port`): Adds an inbound Allow rule for TCP 3389 to the network security group that blocks it, with a priority that wins over the blocking rule.
        [Runbook step](https://learn.microsoft.com/en-us/troubleshoot/azure/virtual-machines/windows/troubleshoot-rdp-nsg-problem)
        After each step, try to connect again.
        [image attachment://console-web-02.png]
        -- 11 ARM requests · <elapsed>
        # Serial log (last 40 lines)
        …
        [Allow inbound TCP 3389 in the NSG]
        [attachment console-web-02.png]
        ");
        let message = posted.message_id.expect("the message's id");

        // The same alert again, with a new value: the same message, checked again.
        let (status, _) = room.post(&fired_again(METRIC)).await;
        assert_eq!(status, 202);
        let edit = room.next_edit().await;
        assert!(
            edit.path.ends_with(&format!("/messages/{message}")),
            "{}",
            edit.path
        );
        let text = render(&edit);
        assert!(text.contains("(value 31.5)"), "{text}");
        assert!(text.contains("deny-rdp"), "{text}");

        // Resolved: edited again, with a fresh check.
        let before = room.sim.stats().log.len();
        let (status, _) = room.post(&resolved(METRIC)).await;
        assert_eq!(status, 202);
        let edit = room.next_edit().await;
        assert!(
            edit.path.ends_with(&format!("/messages/{message}")),
            "{}",
            edit.path
        );
        insta::assert_snapshot!(render(&edit).lines().next().unwrap_or(""), @"✅ **Resolved: Azure Monitor alert WCUS-R2-Gen2** (Sev3, fired <time>, resolved <time>). Checked again:");
        assert!(
            room.sim.stats().log.len() > before,
            "the resolution checks again"
        );
        assert_eq!(room.unseen(), Vec::<String>::new());
        assert_eq!(room.discord.schema_violations(), Vec::<String>::new());

        // The VM's timeline has all of it, newest first: the alert's three checks, alice's change,
        // and the alert fired and resolved at the times Azure gave them (the sample's, in 2019).
        let alice = rdp_doctor::runbook::door::Caller {
            actor: rdp_doctor::policy::Actor::discord(4001, "alice", vec!["5001".to_string()]),
            place: rdp_doctor::policy::Place::Discord {
                guild: Some(GUILD_ID.to_string()),
                channel: support::discord::CHANNEL_ID.to_string(),
            },
        };
        let timeline = room.door().await.history(&alice, "web-02", 50).await.unwrap();
        assert_eq!(timeline.missing, Vec::<String>::new());
        let clock = regex::Regex::new(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC").unwrap();
        let lines: Vec<String> = rdp_doctor::runbook::watch::timeline_lines(&timeline)
            .iter()
            .map(|l| clock.replace_all(l, "<time>").into_owned())
            .collect();
        insta::assert_snapshot!(lines.join("\n"), @r#"
<time>  check (alert): problems — no change (2 checks since <time>)
<time>  check (alert): problems
<time>  change by alice@contoso.com: created security rule deny-rdp-internet in web-02-snet-nsg
<time>  alert: Azure Monitor alert WCUS-R2-Gen2 resolved
<time>  alert: Azure Monitor alert WCUS-R2-Gen2 (Sev3) fired: Percentage CPU GreaterThan 25 (value 7.727)
"#);
    })
    .await;
}

#[tokio::test]
async fn a_bad_token_or_a_payload_that_is_not_the_schema_posts_nothing() {
    // Everything, at the loudest level: neither token nor URL in it. (Only this test logs the
    // refusal; a line every test logs may miss this thread's subscriber while another test's
    // thread registers its callsite, so the capture is proved by the refusal alone.)
    let (log, _guard) = support::ThreadLog::capture("trace");
    within(async {
        let world = World::new().vm("web-02").nsg_denies_rdp();
        let room = Alerted::start(world, &alerts_policy(), ROUTE, 1).await;
        for token in [None, Some("wrong"), Some(""), Some("alert-token-Zq8v3kT")] {
            let (status, answer) = room.post_to(0, token, METRIC).await;
            assert_eq!(status, 401, "{token:?}: {answer}");
        }
        let not_the_schema = [
            "{".to_string(),
            "{}".to_string(),
            METRIC.replace("azureMonitorCommonAlertSchema", "AzureMonitorMetricAlert"),
            METRIC.replace("\"Fired\"", "\"Active\""),
            METRIC.replace("\"Sev3\"", "3"),
        ];
        for body in &not_the_schema {
            let (status, answer) = room.post(body).await;
            assert_eq!(status, 400, "{answer}");
        }
        // A target that is no VM, and a VM outside every route: nothing checked, each said why.
        let elsewhere = METRIC.replace("resourcegroups/rg-web", "resourcegroups/rg-app");
        let (status, answer) = room.post(&elsewhere).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer.contains("outside every [[alerts.route]] scope"),
            "{answer}"
        );
        let nsg = METRIC.replace(
            "microsoft.compute/virtualmachines/web-02",
            "microsoft.network/networksecuritygroups/nsg-web",
        );
        let (status, answer) = room.post(&nsg).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("not a virtual machine"), "{answer}");
        // Everything answered before anything could be posted; a valid alert now is the first post.
        room.post(METRIC).await;
        let first = room.next_post().await;
        assert!(render(&first).contains("web-02"));
        assert_eq!(room.unseen(), Vec::<String>::new());
        assert!(!room.sim.stats().log.is_empty());
    })
    .await;
    let log = log.text();
    assert!(
        log.contains("refused an alert without the right token"),
        "{log}"
    );
    for secret in [ALERT_TOKEN, "token=", "wrong", "alert-token"] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}

#[tokio::test]
async fn without_the_alerts_grant_nothing_is_checked_and_without_a_token_the_route_is_off() {
    within(async {
        let world = World::new().vm("web-02").nsg_denies_rdp();
        let room = Alerted::start(world, ROOM_POLICY, ROUTE, 1).await;
        let before = room.sim.stats().log.len();
        let (status, answer) = room.post(METRIC).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("Permission denied"), "{answer}");
        let log = room.sim.stats().log;
        assert_eq!(log.len(), before, "no Azure request: {:?}", &log[before..]);
        assert_eq!(room.unseen(), Vec::<String>::new());

        let world = World::new().vm("web-02").nsg_denies_rdp();
        let off = Alerted::start_with(world, &alerts_policy(), ROUTE, 1, None).await;
        let (status, answer) = off.post(METRIC).await;
        assert_eq!(status, 404, "{answer}");
        assert!(answer.contains("RDP_DOCTOR_ALERT_TOKEN"), "{answer}");
        assert_eq!(off.unseen(), Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn log_activity_log_and_resource_health_alerts_post_with_what_fired() {
    within(async {
        let world = World::new().vm("web-02").nsg_denies_rdp();
        let room = Alerted::start(world, &alerts_policy(), ROUTE, 1).await;
        let mut firsts = Vec::new();
        for body in [LOG, ACTIVITY, HEALTH] {
            let (status, _) = room.post(body).await;
            assert_eq!(status, 202);
            let text = render(&room.next_post().await);
            firsts.push(text.lines().take(2).collect::<Vec<_>>().join("\n"));
        }
        firsts.sort();
        insta::assert_snapshot!(firsts.join("\n"), @r"
        🚨 **Azure Monitor alert rdp-logon-failures** (Sev1, fired <time>)
        log search: 12 result(s)
        🚨 **Azure Monitor alert vm-health** (Sev4, fired <time>)
        Resource Health: Unavailable (was Available): Rebooted by user
        🚨 **Azure Monitor alert vm-restarted** (Sev4, fired <time>)
        Microsoft.Compute/virtualMachines/restart/action by user-email@domain.com (Succeeded)
        ");
    })
    .await;
}

#[tokio::test]
async fn two_replicas_receiving_the_same_alert_post_once() {
    within(async {
        let world = World::new().vm("web-02").nsg_denies_rdp();
        let room = Alerted::start(world, &alerts_policy(), ROUTE, 2).await;
        let (a, b) = tokio::join!(
            room.post_to(0, Some(ALERT_TOKEN), METRIC),
            room.post_to(1, Some(ALERT_TOKEN), METRIC)
        );
        assert_eq!((a.0, b.0), (202, 202));
        let posted = room.next_post().await;
        assert!(render(&posted).contains("web-02: problems found"));
        // Both have answered and the poster released the alert: nothing more comes.
        room.post_to(1, Some(ALERT_TOKEN), &resolved(METRIC)).await;
        let edit = room.next_edit().await;
        assert!(render(&edit).starts_with("✅ **Resolved"));
        assert_eq!(room.unseen(), Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn an_alert_storm_becomes_one_summary() {
    within(async {
        let world = support::numbered_vms(World::new(), "web", 5)
            .vm("web-05")
            .nsg_denies_rdp();
        let storm = ROUTE.replace("gather_secs = 0", "gather_secs = 2\nstorm_threshold = 3");
        let room = Alerted::start(world, &alerts_policy(), &storm, 1).await;
        let names: Vec<String> = (0..=5).map(|i| format!("web-{i:02}")).collect();
        let room = &room;
        let posts = names.iter().enumerate().map(|(i, name)| {
            let body = METRIC
                .replace("virtualmachines/web-02", &format!("virtualmachines/{name}"))
                .replace("eeeeee4e4e4e", &format!("eeeeee4e4e{i:02}"));
            async move { room.post(&body).await }
        });
        for (status, answer) in futures::future::join_all(posts).await {
            assert_eq!(status, 202, "{answer}");
        }
        let summary = room.next_post().await;
        let requests = regex::Regex::new(r"\d+ ARM requests").unwrap();
        let text = render(&summary);
        insta::assert_snapshot!(requests.replace(&text, "<n> ARM requests"), @r"
        🌩️ **Alert storm**: 6 VMs alerted within <elapsed> (WCUS-R2-Gen2), one summary instead of 6 messages.
        # Sweep of resource group rg-web (alert storm): 1 of 6 VMs with problems
        ❌ 1 with problems · ❗ 0 could not be checked fully · ✅ 5 ok

        **web-05** · ❌ TCP 3389 from the Internet is denied by rule deny-rdp-internet (priority 200) in NSG web-05-snet-nsg
        **web-00** · ✅ all checks pass
        **web-01** · ✅ all checks pass
        **web-02** · ✅ all checks pass
        **web-03** · ✅ all checks pass
        **web-04** · ✅ all checks pass

        `/rdp check VM` for a VM's full report and the fix.
        -- <n> ARM requests · <elapsed> · 0 throttled · <n> paced
        ");
        assert_eq!(room.unseen(), Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn simulate_posts_an_alert_for_a_demo_vm_fired_then_resolved() {
    within(async {
        let room = Alerted::start(rdp_doctor::sim::demo_world(), &alerts_policy(), ROUTE, 1).await;
        let to = format!(
            "{}/alerts/azure-monitor?token={ALERT_TOKEN}",
            room.replicas[0].url
        );
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"));
        command.args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--alert-to",
            &to,
            "--alert",
            "web-02",
            "--alert-resolve-after",
            "1",
        ]);
        let (mut simulate, line) =
            support::process::Logged::spawn("simulate", command, |line| {
                line.contains("posted the alert (fired)")
                    .then(|| line.to_string())
            })
            .await;
        assert!(line.ends_with(": 202 Accepted"), "{line}");
        let posted = render(&room.next_post().await);
        assert!(
            posted.starts_with("🚨 **Azure Monitor alert vm-availability** (Sev1, fired <time>)\nVmAvailabilityMetric LessThan 1 (value 0)\n# web-02: problems found"),
            "{posted}"
        );
        // The demo world's Activity Log: alice's deny rule, marked as what explains `nsg`.
        assert!(
            posted.contains("alice@contoso.com created security rule deny-rdp-internet in nsg-snet-app** ← explains `nsg`"),
            "{posted}"
        );
        let resolved = render(&room.next_edit().await);
        assert!(resolved.starts_with("✅ **Resolved: Azure Monitor alert vm-availability**"), "{resolved}");
        simulate.kill().await;
        let log = simulate.log_to_end().await;
        assert!(log.contains("posted the alert (resolved)"), "{log}");
        assert!(!log.contains(ALERT_TOKEN), "{log}");
        assert_eq!(room.unseen(), Vec::<String>::new());
    })
    .await;
}
