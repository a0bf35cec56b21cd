//! Replicas: two real `rdp-doctor serve` processes on one PostgreSQL database, the Azure
//! simulator and the fake Discord (signed interactions, as Discord sends them to an HTTP
//! endpoint). The replica following a redeploy is SIGKILLed mid-operation and the other takes it
//! over once its lease lapses, posting the outcome once; two Confirm clicks of one prompt sent
//! to the two replicas at the same instant write to Azure once; two people starting overlapping
//! sweeps on the two replicas at the same instant get one sweep, and a replica killed mid-sweep
//! frees its scope within the lease; a sweep's Cancel and details menu work on the replica that
//! does not run it.

use crate::support;
use rdp_doctor::sim::{SimOptions, World};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::discord::{routes, FakeDiscord, Interaction, User};
use support::fleet::{Fleet, Replica};
use support::proxy::{host_port, Proxy};
use support::within;

const WAIT: Duration = Duration::from_secs(20);

/// The lease in these tests (`[replicas] lease_secs`): short, so that a takeover is quick.
const LEASE: Duration = Duration::from_secs(2);

/// Role 5002 administers (redeploy needs admin), only in the fake's channel.
const CONFIG: &str = r#"
[azure]
request_timeout_secs = 5
max_retries = 1
[replicas]
lease_secs = 2
[policy]
channels = ["1180000000000000003"]
[[policy.grant]]
discord_role_id = 5002
level = "admin"
scope = "*"
"#;

/// The fleet of these tests: two replicas, and two admins (a redeploy needs someone other than
/// the requester to confirm).
struct Room {
    fleet: Fleet,
    admin: User,
    confirmer: User,
}

impl std::ops::Deref for Room {
    type Target = Fleet;
    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

impl Room {
    async fn start(world: World, options: SimOptions, n: usize) -> Room {
        Room {
            fleet: Fleet::start(world, options, CONFIG, n).await,
            admin: User::new(4002, "ada", &[5002]),
            confirmer: User::new(4003, "grace", &[5002]),
        }
    }

    fn a(&self) -> &Replica {
        &self.fleet.replicas[0]
    }

    fn b(&self) -> &Replica {
        &self.fleet.replicas[1]
    }

    /// `/rdp <action> vm:<vm>` by the first admin, delivered to `replica`.
    async fn ask(&self, replica: &Replica, action: &str, vm: &str) -> (u64, String) {
        self.fleet.prompt(replica, &self.admin, action, vm).await
    }

    /// `/rdp sweep` by `user`, of `group` or (`None`) the whole subscription; deliver it with
    /// [`Fleet::deliver`].
    async fn sweep(&self, user: &User, group: Option<&str>) -> Interaction {
        let options = match group {
            Some(group) => json!([{"name": "resource-group", "type": 3, "value": group}]),
            None => json!([]),
        };
        self.discord.slash(user, "rdp", &["sweep"], options).await
    }

    /// Delivers `i` to `replica`, which acknowledges it at once.
    async fn deliver(&self, replica: &Replica, i: &Interaction) {
        let answer = replica
            .endpoint
            .deliver(&self.discord, &self.front, i)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }

    /// How a sweep ended for the person: its summary's title, or the private refusal's text.
    async fn sweep_outcome(&self, i: &Interaction) -> Swept {
        tokio::select! {
            summary = async {
                loop {
                    let edit = self.discord.next_edit(i, WAIT).await.expect("an edit");
                    let title = edit.title();
                    // Progress is titled "Sweep of <scope>"; the summary adds what it found.
                    if title.starts_with("Sweep of ") && title.contains(": ") {
                        return title;
                    }
                }
            } => Swept::Ran(summary),
            refusal = self.discord.next_followup(i, WAIT) => {
                let refusal = refusal.expect("a follow-up");
                assert_eq!(refusal.flags() & 64, 64, "private: {refusal:?}");
                Swept::Refused(
                    refusal.body()["embeds"][0]["description"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            }
        }
    }

    /// The sweeps that reached Azure: each lists its scope's network interfaces once (nothing
    /// else in rdp-doctor lists them).
    fn fleet_listings(&self) -> usize {
        support::requests_to(
            &self.sim,
            "GET",
            "/providers/Microsoft.Network/networkInterfaces",
        )
    }

    /// How a confirmed prompt ended for the person who clicked: its outcome edited in, or a
    /// private refusal (`refused`); the title and the body either way.
    async fn confirmation_end(&self, i: &Interaction) -> Ended {
        let d = &self.discord;
        tokio::select! {
            edit = d.edit_titled(i, WAIT, |t| t.contains("succeeded") || t.contains("failed")) => {
                let edit = edit.expect("the outcome");
                Ended { refused: false, title: edit.title(), body: edit.body().to_string() }
            }
            refusal = d.next_followup(i, WAIT) => {
                let refusal = refusal.expect("a follow-up");
                assert_eq!(refusal.flags() & 64, 64, "private: {refusal:?}");
                Ended { refused: true, title: refusal.title(), body: refusal.body().to_string() }
            }
        }
    }

    /// The first admin's choice of `value` in menu `custom_id` on `message`, delivered to
    /// `replica`, which must answer by updating the menu's message in place: its new title and
    /// the interaction (for what follows it).
    async fn choose(
        &self,
        replica: &Replica,
        message: u64,
        custom_id: &str,
        value: &str,
    ) -> Chosen {
        let i = self
            .discord
            .component(&self.admin, message, custom_id, &[value])
            .await;
        let answer = replica
            .endpoint
            .deliver(&self.discord, &self.front, &i)
            .await;
        let update = answer.json();
        assert_eq!(update["type"], 7, "the message updated in place: {update}");
        let title = update["data"]["embeds"][0]["title"]
            .as_str()
            .unwrap_or("")
            .to_string();
        Chosen { title }
    }

    /// A click of `custom_id` on `message`, by the second admin.
    async fn click(&self, message: u64, custom_id: &str) -> Interaction {
        self.discord
            .component(&self.confirmer, message, custom_id, &[])
            .await
    }
}

/// What a menu choice was answered with.
struct Chosen {
    /// The updated message's title.
    title: String,
}

/// How a confirmed prompt ended for the person who clicked.
#[derive(Debug)]
struct Ended {
    /// Refused privately, rather than the outcome edited in.
    refused: bool,
    title: String,
    body: String,
}

/// How a `/rdp sweep` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Swept {
    /// The summary's title.
    Ran(String),
    /// The private refusal's text.
    Refused(String),
}

/// Every channel message posted so far (the outcomes of operations taken over go there).
fn channel_messages(discord: &FakeDiscord) -> Vec<Value> {
    discord
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.route == routes::CHANNEL_MESSAGES)
        .map(|r| r.body().clone())
        .collect()
}

#[tokio::test]
async fn a_replica_killed_mid_redeploy_is_taken_over_and_the_outcome_posted_once() {
    within(async {
        // A slow redeploy: Azure answers "in progress" to six polls, a second apart.
        let options = SimOptions {
            lro_polls: 6,
            retry_after_secs: 1,
            ..SimOptions::fast()
        };
        let mut fleet = Room::start(World::new().vm("web-01"), options, 2).await;
        let (prompt, confirm) = fleet.ask(fleet.a(), "redeploy", "web-01").await;
        let click = fleet.click(prompt, &confirm).await;
        let answer = fleet
            .a()
            .endpoint
            .deliver(&fleet.discord, &fleet.front, &click)
            .await;
        assert_eq!(answer.json()["type"], 6, "{}", answer.body);

        // Kill A once Azure accepted the redeploy and A stored its operation URL (it does so
        // between Azure's answer and its first poll, so look at each answer).
        let store = fleet.store().await;
        support::until_async(
            "the operation URL stored",
            fleet.sim.watch_answers(),
            || async {
                store
                    .running_operations()
                    .await
                    .is_ok_and(|ops| ops.iter().any(|o| o.azure_url.is_some()))
            },
        )
        .await;
        let op = store.running_operations().await.unwrap().remove(0);
        let owner_a = op.owner.clone().expect("A owns what it runs");
        assert_eq!(fleet.posts("/redeploy"), 1);
        fleet.fleet.replicas[0].process.kill().await;
        let killed = Instant::now();
        let polls_before = fleet.sim.stats().log.len();

        // B takes it over once A's lease lapses: the owner changes, and B polls Azure.
        let (id, vm_id) = (op.id, op.vm_id.clone());
        support::until_async(
            "B to take the redeploy over",
            fleet.sim.watch_answers(),
            || async {
                let taken = store.running_operations().await.is_ok_and(|ops| {
                    ops.iter()
                        .any(|o| o.id == id && o.owner.as_deref() != Some(owner_a.as_str()))
                });
                taken
                    || store
                        .current_operation(&vm_id)
                        .await
                        .is_ok_and(|o| o.is_none())
            },
        )
        .await;
        let took = killed.elapsed();
        // At most the lease after A's last renewal (which came before the kill), plus one pass
        // of B's watch (a third of the lease, give or take a quarter), plus B's first poll
        // (Azure's Retry-After, a second), with a second's slack for a busy machine.
        assert!(
            took < LEASE * 2 + Duration::from_secs(2),
            "taken over after {took:?}"
        );
        assert!(fleet.sim.stats().log.len() > polls_before, "B polls Azure");

        // B posts the outcome in the channel the redeploy was confirmed in, once.
        let posted = fleet
            .discord
            .next_channel_message(WAIT)
            .await
            .expect("the outcome is posted");
        assert_eq!(
            posted.path, "/api/v10/channels/1180000000000000003/messages",
            "{posted:?}"
        );
        let body = posted.body().to_string();
        assert!(body.contains("redeploy of web-01 succeeded"), "{body}");
        assert!(body.contains(rdp_doctor::discord::RESUMED), "{body}");
        assert!(
            fleet.b().log().contains("took over the redeploy of web-01"),
            "{}",
            fleet.b().log()
        );
        assert_eq!(fleet.posts("/redeploy"), 1, "never sent twice");
        // B's /metrics counts the takeover; B took over nothing else.
        let (_, _, metrics) =
            crate::metrics::get(&format!("{}/metrics", fleet.b().endpoint.url)).await;
        let scrape = crate::metrics::parse(&metrics);
        assert_eq!(
            scrape.value("rdp_doctor_leases_taken_over_total", &[]),
            1.0,
            "{metrics}"
        );
        let finished = store.current_operation(&vm_id).await.unwrap();
        assert_eq!(finished, None, "the lock is released");

        // The audit is whole: one request, one confirmation, one outcome.
        let audit = store.recent_audit(Some("web-01"), 100).await.unwrap();
        let results: Vec<&str> = audit.iter().rev().map(|e| e.result.as_str()).collect();
        let count = |prefix: &str| results.iter().filter(|r| r.starts_with(prefix)).count();
        assert_eq!(count("requested"), 1, "{results:?}");
        assert_eq!(count("confirmed redeploy"), 1, "{results:?}");
        assert_eq!(count("succeeded"), 1, "{results:?}");
        assert_eq!(results.len(), 3, "{results:?}");

        // Exactly once: one channel message. The prompt A showed the progress in no longer says
        // "in progress": B, which never had its interaction token, edits it through the channel
        // route to the outcome, buttons gone (A died before Azure ended, so no edit of A's did).
        let outcomes: Vec<Value> = channel_messages(&fleet.discord)
            .into_iter()
            .filter(|m| m.to_string().contains("redeploy of web-01"))
            .collect();
        assert_eq!(outcomes.len(), 1, "{outcomes:#?}");
        let ended_in_edit: Vec<String> = fleet
            .discord
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.title().contains("succeeded"))
            .map(|r| format!("{} {}", r.path, r.status))
            .collect();
        assert_eq!(
            ended_in_edit,
            [format!(
                "/api/v10/channels/1180000000000000003/messages/{prompt} 200"
            )],
            "B edits the prompt's message once, through the channel"
        );
        let shown = fleet.discord.message(prompt).expect("the prompt's message");
        assert!(
            shown["embeds"][0]["title"]
                .as_str()
                .is_some_and(|t| t.contains("redeploy of web-01 succeeded")),
            "{shown}"
        );
        assert!(
            support::discord::custom_ids(&shown).is_empty(),
            "no buttons left: {shown}"
        );
        let violations = fleet.discord.schema_violations();
        assert!(violations.is_empty(), "{violations:#?}");
        store.close().await;
    })
    .await
}

#[tokio::test]
async fn two_confirms_sent_to_two_replicas_at_once_write_to_azure_once() {
    within(async {
        let fleet = Room::start(World::new().vm("sql-01").stopped(), SimOptions::fast(), 2).await;
        let (prompt, confirm) = fleet.ask(fleet.a(), "start", "sql-01").await;
        let (on_a, on_b) = (
            fleet.click(prompt, &confirm).await,
            fleet.click(prompt, &confirm).await,
        );
        let (answer_a, answer_b) = tokio::join!(
            fleet
                .a()
                .endpoint
                .deliver(&fleet.discord, &fleet.front, &on_a),
            fleet
                .b()
                .endpoint
                .deliver(&fleet.discord, &fleet.front, &on_b),
        );
        assert_eq!(answer_a.json()["type"], 6, "{}", answer_a.body);
        assert_eq!(answer_b.json()["type"], 6, "{}", answer_b.body);

        // One of them runs the start and edits its outcome in; the other is refused privately.
        let (a, b) = tokio::join!(fleet.confirmation_end(&on_a), fleet.confirmation_end(&on_b));
        let (refused, ran) = if a.refused { (a, b) } else { (b, a) };
        assert!(refused.refused, "exactly one is refused: {refused:?}");
        assert!(
            !ran.refused && ran.title.contains("start of sql-01 succeeded"),
            "{ran:?}"
        );
        assert_eq!(fleet.posts("/start"), 1, "exactly one ARM write");
        let store = fleet.store().await;
        let audit = store.recent_audit(Some("sql-01"), 100).await.unwrap();
        let confirmed = audit
            .iter()
            .filter(|e| e.result.starts_with("confirmed start"))
            .count();
        assert_eq!(confirmed, 1, "{audit:#?}");
        store.close().await;
    })
    .await
}

/// The per-VM lock holds across replicas: a restart of web-01 confirmed on A and a redeploy of it
/// confirmed on B at the same instant. One runs; the other person is told the VM is busy (with
/// what, and by whom); one write reaches Azure.
#[tokio::test]
async fn two_changes_to_one_vm_confirmed_on_two_replicas_at_once_run_one() {
    within(async {
        // Azure takes three polls, a second apart, so the first change is still running when the
        // second is confirmed.
        let options = SimOptions {
            lro_polls: 3,
            retry_after_secs: 1,
            ..SimOptions::fast()
        };
        let room = Room::start(World::new().vm("web-01"), options, 2).await;
        let (restart_prompt, restart) = room.ask(room.a(), "restart", "web-01").await;
        let (redeploy_prompt, redeploy) = room.ask(room.b(), "redeploy", "web-01").await;
        let (on_a, on_b) = (
            room.click(restart_prompt, &restart).await,
            room.click(redeploy_prompt, &redeploy).await,
        );
        let (d, f) = (&room.discord, &room.front);
        let (answer_a, answer_b) = tokio::join!(
            room.a().endpoint.deliver(d, f, &on_a),
            room.b().endpoint.deliver(d, f, &on_b),
        );
        assert_eq!(answer_a.json()["type"], 6, "{}", answer_a.body);
        assert_eq!(answer_b.json()["type"], 6, "{}", answer_b.body);

        // One prompt ends edited with its outcome; the other person is refused privately.
        let (a, b) = tokio::join!(room.confirmation_end(&on_a), room.confirmation_end(&on_b));
        let (busy, ran) = match (a.title.as_str(), b.title.as_str()) {
            ("The VM is busy", _) => (a, b),
            (_, "The VM is busy") => (b, a),
            _ => panic!("exactly one runs: {a:?} {b:?}"),
        };
        assert!(ran.title.contains("of web-01 succeeded"), "{ran:?}");
        assert!(busy.body.contains("web-01 is busy: "), "{busy:?}");
        assert!(
            busy.body.contains("One change per VM at a time."),
            "{busy:?}"
        );
        assert_eq!(
            room.posts("/restart") + room.posts("/redeploy"),
            1,
            "one write reached Azure"
        );
    })
    .await
}

/// A war room served by three replicas behind a load balancer that spreads the interactions:
/// each step of "check, fix, confirm, check again, audit" lands on a different replica than the
/// one before, and the room sees one conversation.
#[tokio::test]
async fn three_replicas_serve_one_war_room() {
    within(async {
        let room = Room::start(World::new().vm("sql-01").stopped(), SimOptions::fast(), 3).await;
        let replica = |n: usize| &room.replicas[n % 3];
        let vm = json!([{"name": "vm", "type": 3, "value": "sql-01"}]);
        let not_checking = |t: &str| !t.starts_with("Checking") && !t.starts_with("Looking for");

        // Autocomplete on replica 0: the VM list every replica reads from Azure. It loads in the
        // background, so the person may have to type again; each keystroke is a new interaction
        // (Discord takes one response to each: answering one twice is refused).
        let typed = json!([{"name": "vm", "type": 3, "value": "sql", "focused": true}]);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let i = room
                .discord
                .autocomplete(&room.admin, "rdp", &["check"], typed.clone(), "vm")
                .await;
            let answer = replica(0)
                .endpoint
                .deliver(&room.discord, &room.front, &i)
                .await;
            let choices = answer.json()["data"]["choices"].clone();
            if choices.as_array().is_some_and(|c| !c.is_empty()) {
                assert_eq!(
                    choices[0]["name"].as_str().map(|n| n.contains("sql-01")),
                    Some(true)
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no choices: {choices}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Check on replica 1: deferred in the HTTP response, the report edited in by webhook.
        let (d, f) = (&room.discord, &room.front);
        let check = replica(1)
            .endpoint
            .slash(d, f, &room.admin, &["check"], vm.clone(), 5)
            .await;
        let report = d
            .edit_titled(&check, WAIT, not_checking)
            .await
            .expect("the report");
        let report_id = report.message_id.expect("the report's message");

        // The fix button on replica 2: the prompt.
        let click = replica(2)
            .endpoint
            .click(d, f, &room.admin, report_id, "Start the VM", 5)
            .await;
        let prompt = d
            .edit_titled(&click, WAIT, |t| t.starts_with("Confirm"))
            .await
            .expect("the prompt");
        let prompt_id = prompt.message_id.expect("the prompt's message");

        // Confirm on replica 0, which did not post the prompt: it runs, once.
        let click = replica(3)
            .endpoint
            .click(d, f, &room.admin, prompt_id, "Confirm", 6)
            .await;
        let outcome = d
            .edit_titled(&click, WAIT, |t| {
                t.contains("succeeded") || t.contains("failed")
            })
            .await
            .expect("the outcome")
            .title();
        assert!(outcome.contains("start of sql-01 succeeded"), "{outcome}");
        assert_eq!(room.posts("/start"), 1, "exactly one ARM write");

        // Check again on replica 1: the VM runs now.
        let again = room.discord.slash(&room.admin, "rdp", &["check"], vm).await;
        replica(1)
            .endpoint
            .deliver(&room.discord, &room.front, &again)
            .await;
        let report = room
            .discord
            .edit_titled(&again, WAIT, not_checking)
            .await
            .expect("the second report");
        let text = report.body().to_string();
        assert!(
            !text.contains("Start the VM"),
            "no start offered any more: {text}"
        );

        // The audit on replica 2 tells the whole story, whichever replica wrote each part.
        let audit = room
            .discord
            .slash(&room.admin, "rdp", &["audit"], json!([]))
            .await;
        let answer = replica(2)
            .endpoint
            .deliver(&room.discord, &room.front, &audit)
            .await;
        let told = answer.json()["data"]["embeds"][0]["description"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for part in ["requested", "confirmed start", "succeeded"] {
            assert!(told.contains(part), "{part} missing from the audit: {told}");
        }
        // Every replica served some of it, none logged a failure.
        for (n, r) in room.replicas.iter().enumerate() {
            let log = r.log();
            assert!(
                !log.contains(" ERROR "),
                "replica {n} logged an error:\n{log}"
            );
        }
        let violations = room.discord.schema_violations();
        assert!(violations.is_empty(), "{violations:#?}");
    })
    .await
}

/// PostgreSQL stops under a replica (a proxy between them is cut: the replica sees its
/// connections closed and new ones refused, as when the server stops). Readiness goes 503 naming
/// the database; a command in the meantime is told plainly that nothing was done; when the
/// database is back the replica is ready again, and the prompt asked before the outage still
/// confirms, once, with the audit whole.
#[tokio::test]
async fn while_postgresql_is_down_readiness_fails_commands_are_told_and_nothing_is_lost() {
    within(async {
        let world = World::new().vm("sql-01").stopped().vm("web-01");
        let room = Room::start(world, SimOptions::fast(), 0).await;
        let proxy = Proxy::start(&host_port(&room.database)).await;
        let replica = room
            .replica("replica P", &proxy.url_through(&room.database))
            .await;
        let (prompt, confirm) = room.ask(&replica, "start", "sql-01").await;

        proxy.cut();
        let (_, why) = replica
            .endpoint
            .readyz_until(
                WAIT,
                || replica.log(),
                |status, body| {
                    assert!(status == 200 || status == 503, "{status}: {body}");
                    status == 503
                },
            )
            .await;
        assert!(why.starts_with("database: "), "{why}");
        assert!(!why.contains("azure"), "only the database is down: {why}");

        // A command while it is down: acknowledged at once, then told that nothing was done.
        let vm = json!([{"name": "vm", "type": 3, "value": "web-01"}]);
        let restart = room
            .discord
            .slash(&room.admin, "rdp", &["restart"], vm)
            .await;
        let answer = replica
            .endpoint
            .deliver(&room.discord, &room.front, &restart)
            .await;
        assert_eq!(answer.json()["type"], 5, "{}", answer.body);
        // Privately: the person learns it, the room is not cluttered.
        let told = room
            .discord
            .next_followup(&restart, WAIT)
            .await
            .expect("an answer");
        assert_eq!(told.flags() & 64, 64, "{told:?}");
        assert_eq!(
            told.title(),
            "rdp-doctor's database is unreachable",
            "{told:?}"
        );
        let text = told.body().to_string();
        assert!(text.contains("nothing was sent to Azure"), "{text}");
        assert!(text.contains("Try again"), "{text}");

        proxy.restore();
        replica
            .endpoint
            .readyz_until(WAIT, || replica.log(), |status, _| status == 200)
            .await;

        // The prompt from before the outage: confirmed now, it runs once.
        let click = room.click(prompt, &confirm).await;
        let answer = replica
            .endpoint
            .deliver(&room.discord, &room.front, &click)
            .await;
        assert_eq!(answer.json()["type"], 6, "{}", answer.body);
        let outcome = room
            .discord
            .edit_titled(&click, WAIT, |t| {
                t.contains("succeeded") || t.contains("failed")
            })
            .await
            .expect("the outcome")
            .title();
        assert!(outcome.contains("start of sql-01 succeeded"), "{outcome}");
        assert_eq!(room.posts("/start"), 1);
        assert_eq!(
            room.posts("/restart"),
            0,
            "nothing done while the database was down"
        );

        let store = room.store().await;
        let audit = store.recent_audit(None, 100).await.unwrap();
        let results: Vec<&str> = audit.iter().rev().map(|e| e.result.as_str()).collect();
        assert_eq!(results.len(), 3, "{results:?}");
        assert!(results[0].starts_with("requested"), "{results:?}");
        assert!(results[1].starts_with("confirmed start"), "{results:?}");
        assert!(results[2].starts_with("succeeded"), "{results:?}");
        store.close().await;

        // The database's credentials reached neither the room nor the probe.
        let url = url::Url::parse(&room.database).unwrap();
        let credentials = format!("{}:{}@", url.username(), url.password().unwrap_or_default());
        for request in room.discord.requests() {
            assert!(
                !request.body().to_string().contains(&credentials),
                "{request:?}"
            );
        }
        assert!(!why.contains(&credentials), "{why}");
    })
    .await
}

#[tokio::test]
async fn overlapping_sweeps_started_on_two_replicas_at_once_run_once() {
    within(async {
        // Every answer takes 150 ms: a sweep of eight VMs outlasts the other replica's claim.
        let world = support::numbered_vms(World::new().page_size(100), "web", 8);
        let fleet = Room::start(world, support::slowed(Duration::from_millis(150)), 2).await;
        // Ada sweeps the whole subscription on A, Grace its rg-web on B, at the same instant.
        let (whole, group) = (
            fleet.sweep(&fleet.admin, None).await,
            fleet.sweep(&fleet.confirmer, Some("rg-web")).await,
        );
        tokio::join!(
            fleet.deliver(fleet.a(), &whole),
            fleet.deliver(fleet.b(), &group),
        );
        let (on_a, on_b) = tokio::join!(fleet.sweep_outcome(&whole), fleet.sweep_outcome(&group));
        let sub = rdp_doctor::sim::DEFAULT_SUBSCRIPTION;
        // Who ran, what the other was told, and who that was (their replica, them, their scope).
        let (expected, refusal, loser) = match (&on_a, &on_b) {
            (Swept::Ran(_), Swept::Refused(text)) => (
                format!("a sweep of subscription {sub} is already running (it covers resource group rg-web): ada started it "),
                text,
                (fleet.b(), &fleet.confirmer, Some("rg-web")),
            ),
            (Swept::Refused(text), Swept::Ran(_)) => (
                format!("a sweep of resource group rg-web is already running (it covers subscription {sub}): grace started it "),
                text,
                (fleet.a(), &fleet.admin, None),
            ),
            _ => panic!("exactly one sweep runs: A {on_a:?}, B {on_b:?}"),
        };
        // The refusal says who sweeps and since when, whichever replica runs it.
        assert!(refusal.starts_with(&expected), "{refusal}");
        assert!(refusal.contains(" ago, at "), "{refusal}");
        assert!(refusal.contains(" UTC."), "{refusal}");
        assert_eq!(fleet.fleet_listings(), 1, "one sweep reached Azure");
        let store = fleet.store().await;
        assert_eq!(store.claimed_sweeps().await.unwrap(), [], "released as it ended");

        // Once it has finished, the other person's sweep runs.
        let (replica, user, scope) = loser;
        let again = fleet.sweep(user, scope).await;
        fleet.deliver(replica, &again).await;
        let outcome = fleet.sweep_outcome(&again).await;
        assert!(
            matches!(&outcome, Swept::Ran(title) if title.contains("nothing blocks Remote Desktop on 8 VMs")),
            "{outcome:?}"
        );
        assert_eq!(fleet.fleet_listings(), 2);
        let violations = fleet.discord.schema_violations();
        assert!(violations.is_empty(), "{violations:#?}");
        store.close().await;
    })
    .await
}

#[tokio::test]
async fn a_sweeps_cancel_and_details_menu_work_on_a_replica_that_does_not_run_it() {
    within(async {
        // Every answer takes a second: a hundred VMs keep the sweep running for many seconds
        // (it checks 32 at a time).
        let world = support::numbered_vms(World::new().page_size(100), "web", 100);
        let fleet = Room::start(world, support::slowed(Duration::from_secs(1)), 2).await;
        let sweep = fleet.sweep(&fleet.admin, None).await;
        fleet.deliver(fleet.a(), &sweep).await;
        // Progress with at least one VM checked, so that the cancelled summary has rows.
        let (message, stop) = loop {
            let edit = fleet
                .discord
                .next_edit(&sweep, WAIT)
                .await
                .expect("progress");
            let text = edit.body()["embeds"][0]["description"]
                .as_str()
                .unwrap_or("");
            let stop = support::discord::custom_ids(edit.body())
                .into_iter()
                .find(|id| id.starts_with("rdp:sweep:stop:"));
            if let Some(stop) = stop {
                if text.starts_with("Checked **") && !text.starts_with("Checked **0 ") {
                    break (edit.message_id.expect("the sweep's message"), stop);
                }
            }
        };

        // Grace's Cancel reaches B, which does not run the sweep: refused, naming Ada.
        let grace = fleet.click(message, &stop).await;
        let answer = fleet
            .b()
            .endpoint
            .deliver(&fleet.discord, &fleet.front, &grace)
            .await;
        let refusal = answer.json();
        assert_eq!(refusal["type"], 4, "{refusal}");
        assert_eq!(refusal["data"]["flags"], 64, "private: {refusal}");
        assert_eq!(
            refusal["data"]["embeds"][0]["description"],
            "Only <@4002>, who started this sweep, can cancel it.",
            "{refusal}"
        );
        // Ada's reaches B too: acknowledged in place, and A stops the sweep.
        let ada = fleet
            .discord
            .component(&fleet.admin, message, &stop, &[])
            .await;
        let asked = Instant::now();
        let answer = fleet
            .b()
            .endpoint
            .deliver(&fleet.discord, &fleet.front, &ada)
            .await;
        assert_eq!(answer.json()["type"], 6, "{}", answer.body);
        let Swept::Ran(title) = fleet.sweep_outcome(&sweep).await else {
            panic!("the sweep's summary");
        };
        assert!(
            title.contains(": cancelled after ") && title.ends_with(" of 100 VMs"),
            "{title}"
        );
        // A reads the request within a second (a poll), then lets its running checks finish.
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{:?}",
            asked.elapsed()
        );
        let store = fleet.store().await;
        assert_eq!(
            store.claimed_sweeps().await.unwrap(),
            [],
            "released as it ended"
        );

        // The summary's details menu, chosen on B: the rows come from the database.
        // The summary is the message's latest edit.
        let summary = fleet
            .discord
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.message_id == Some(message) && r.title().contains(": cancelled after "))
            .expect("the summary");
        let menu = support::discord::components(summary.body())
            .into_iter()
            .find(|c| {
                c["custom_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("rdp:sweep:vm:"))
            })
            .unwrap_or_else(|| panic!("a details menu: {}", summary.body()));
        let first = &menu["options"][0];
        // "<mark> <name>"
        let label = first["label"].as_str().expect("a VM's label");
        let vm = label.rsplit(' ').next().unwrap_or(label).to_string();
        let pick = fleet
            .discord
            .component(
                &fleet.confirmer,
                message,
                menu["custom_id"].as_str().unwrap(),
                &[first["value"].as_str().unwrap()],
            )
            .await;
        let answer = fleet
            .b()
            .endpoint
            .deliver(&fleet.discord, &fleet.front, &pick)
            .await;
        assert_eq!(
            answer.json()["type"],
            5,
            "a report follows: {}",
            answer.body
        );
        let report = fleet
            .discord
            .edit_titled(&pick, WAIT, |t| !t.is_empty())
            .await
            .expect("the VM's report");
        assert!(report.title().contains(&vm), "{} for {vm}", report.title());
        store.close().await;
    })
    .await
}

#[tokio::test]
async fn a_which_vm_menu_shown_by_one_replica_is_picked_on_another_once() {
    within(async {
        // Two VMs of one name in two groups (the simulator names a VM's NSG after the VM and
        // keeps NSG names apart in a subscription, so the other one has none).
        let world = World::new()
            .vm("api-01")
            .in_group("rg-api-east")
            .no_nsg()
            .vm("api-01")
            .in_group("rg-api-west");
        let fleet = Room::start(world, SimOptions::fast(), 2).await;
        let check = fleet
            .discord
            .slash(
                &fleet.admin,
                "rdp",
                &["check"],
                json!([{"name": "vm", "type": 3, "value": "api-01"}]),
            )
            .await;
        fleet.deliver(fleet.a(), &check).await;
        // A asks privately which one.
        let menu = fleet
            .discord
            .next_followup(&check, WAIT)
            .await
            .expect("the menu");
        assert_eq!(menu.flags() & 64, 64, "private: {}", menu.body());
        assert_eq!(menu.title(), "2 VMs are named api-01");
        let pick_id = support::discord::custom_ids(menu.body())
            .into_iter()
            .find(|id| id.starts_with("rdp:pick:"))
            .expect("the menu's id");
        let message = menu.message_id.expect("the menu's message");

        // The choice reaches B, which never saw the menu: it runs the check of the one chosen.
        let pick = fleet.choose(fleet.b(), message, &pick_id, "1").await;
        assert_eq!(
            pick.title, "Checking rg-api-west/api-01",
            "the menu updated in place"
        );
        let report = fleet
            .discord
            .next_request(
                "the report of rg-api-west/api-01",
                |r| r.title().contains("nothing found"),
                WAIT,
            )
            .await
            .expect("the report");
        assert!(
            report.body().to_string().contains("rg-api-west"),
            "{}",
            report.body()
        );

        // The same choice again, now on A, whose memory still holds the menu: taken already.
        let again = fleet.choose(fleet.a(), message, &pick_id, "0").await;
        assert_eq!(again.title, "This menu has expired");
        let store = fleet.store().await;
        store.close().await;
    })
    .await
}

#[tokio::test]
async fn a_replica_killed_mid_sweep_frees_its_scope_within_the_lease() {
    within(async {
        // Every answer takes 300 ms: the sweep is still running when A dies.
        let world = support::numbered_vms(World::new().page_size(100), "web", 8);
        let mut fleet = Room::start(world, support::slowed(Duration::from_millis(300)), 2).await;
        let first = fleet.sweep(&fleet.admin, None).await;
        fleet.deliver(fleet.a(), &first).await;
        let store = fleet.store().await;
        support::until_async("A's claim", fleet.sim.watch_answers(), || async {
            store.claimed_sweeps().await.is_ok_and(|c| !c.is_empty())
        })
        .await;
        fleet.fleet.replicas[0].process.kill().await;
        let killed = Instant::now();

        // Right after, A's claim is alive: B refuses an overlapping sweep.
        let early = fleet.sweep(&fleet.confirmer, Some("rg-web")).await;
        fleet.deliver(fleet.b(), &early).await;
        let outcome = fleet.sweep_outcome(&early).await;
        assert!(
            matches!(&outcome, Swept::Refused(text) if text.contains(": ada started it ")),
            "{outcome:?}"
        );
        assert!(killed.elapsed() < LEASE, "refused within the lease");

        // A's last heartbeat came before the kill: a lease after it, the claim has lapsed. The
        // lease is what is waited for; no event marks a heartbeat that never comes.
        tokio::time::sleep(LEASE.saturating_sub(killed.elapsed()) + Duration::from_millis(50))
            .await;
        let later = fleet.sweep(&fleet.confirmer, Some("rg-web")).await;
        fleet.deliver(fleet.b(), &later).await;
        let outcome = fleet.sweep_outcome(&later).await;
        assert!(
            matches!(&outcome, Swept::Ran(title) if title.contains("nothing blocks Remote Desktop on 8 VMs")),
            "{outcome:?}"
        );
        assert_eq!(store.claimed_sweeps().await.unwrap(), [], "A's lapsed claim is gone too");
        store.close().await;
    })
    .await
}
