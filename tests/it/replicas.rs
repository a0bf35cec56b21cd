//! Replicas: two real `rdp-doctor serve` processes on one PostgreSQL database, the Azure
//! simulator and the fake Discord (signed interactions, as Discord sends them to an HTTP
//! endpoint). The replica following a redeploy is SIGKILLed mid-operation and the other takes it
//! over once its lease lapses, posting the outcome once; two Confirm clicks of one prompt sent
//! to the two replicas at the same instant write to Azure once; two people starting overlapping
//! sweeps on the two replicas at the same instant get one sweep, and a replica killed mid-sweep
//! frees its scope within the lease.

use crate::support;
use rdp_doctor::sim::{SimOptions, Simulator, World};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::discord::signed::{Endpoint, Front, Signer};
use support::discord::{routes, FakeDiscord, Interaction, Recorded, User, GUILD_ID, TOKEN};
use support::within;
use tokio::io::AsyncBufReadExt;

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

/// One `rdp-doctor serve` process: its endpoint, and its log as it comes.
struct Replica {
    child: tokio::process::Child,
    endpoint: Endpoint,
    log: Arc<Mutex<String>>,
}

impl Replica {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// The fleet: the simulator, the fake Discord (and its front, as `serve` reaches it), one
/// PostgreSQL database and two replicas on it.
struct Fleet {
    sim: Simulator,
    discord: FakeDiscord,
    front: Front,
    database: String,
    dir: PathBuf,
    a: Replica,
    b: Replica,
    admin: User,
    /// A second admin: a redeploy needs someone other than the requester to confirm.
    confirmer: User,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fleet {
    async fn start(world: World, options: SimOptions) -> Fleet {
        let secret = world.client_secret.clone();
        let sim = Simulator::start("127.0.0.1:0", world, support::quick(options))
            .await
            .expect("simulator");
        let discord = FakeDiscord::start().await;
        let front = Front::start(&discord).await;
        let database = rdp_doctor::store::testing::postgres_database().await;
        let dir = std::env::temp_dir().join(format!(
            "rdp-doctor-replicas-{}-{}",
            std::process::id(),
            database.rsplit('/').next().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rdp-doctor.toml"), CONFIG).unwrap();
        let signer = Signer::generate();
        let spawn = |name: &str| {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"));
            command
                .arg("serve")
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("DISCORD_TOKEN", TOKEN)
                .env("DISCORD_API_URL", &front.url)
                .env("DISCORD_GUILD_ID", GUILD_ID.to_string())
                .env("DISCORD_PUBLIC_KEY", signer.public_hex())
                .env("RDP_DOCTOR_LISTEN", "127.0.0.1:0")
                .env("AZURE_RESOURCE_MANAGER_URL", sim.url())
                .env("AZURE_AUTHORITY_HOST", sim.url())
                .env("AZURE_TENANT_ID", support::TENANT)
                .env("AZURE_CLIENT_ID", support::CLIENT)
                .env("AZURE_CLIENT_SECRET", &secret)
                .env(
                    "AZURE_SUBSCRIPTION_ID",
                    rdp_doctor::sim::DEFAULT_SUBSCRIPTION,
                )
                .env("RDP_DOCTOR_CONFIG", dir.join("rdp-doctor.toml"))
                .env("RDP_DOCTOR_DATABASE_URL", &database)
                .env("RUST_LOG", "info")
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let name = name.to_string();
            let signer = signer.clone();
            async move {
                let mut child = command.spawn().expect("serve starts");
                let mut lines =
                    tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
                let mut seen = String::new();
                let url = loop {
                    let line = tokio::time::timeout(WAIT, lines.next_line())
                        .await
                        .unwrap_or_else(|_| panic!("{name} logs its address: {seen}"))
                        .expect("stderr")
                        .unwrap_or_else(|| panic!("{name} exited: {seen}"));
                    seen.push_str(&line);
                    seen.push('\n');
                    if let Some(at) = line.find("http://127.0.0.1:") {
                        let rest = &line[at..];
                        break rest[..rest.find("/interactions").expect("the route")].to_string();
                    }
                };
                // The rest of the log, kept for the assertions (and so the pipe never fills).
                let log = Arc::new(Mutex::new(seen));
                let sink = log.clone();
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        let mut log = sink.lock().unwrap();
                        log.push_str(&line);
                        log.push('\n');
                    }
                });
                let endpoint = Endpoint::new(url, signer);
                let deadline = tokio::time::Instant::now() + WAIT;
                // Ready: the commands registered and the database answering. A probe, not a
                // sleep: `/readyz` is how a load balancer learns it too.
                while endpoint.get("/readyz").await.0 != 200 {
                    assert!(tokio::time::Instant::now() < deadline, "{name} never ready");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Replica {
                    child,
                    endpoint,
                    log,
                }
            }
        };
        let (a, b) = tokio::join!(spawn("replica A"), spawn("replica B"));
        Fleet {
            sim,
            discord,
            front,
            database,
            dir,
            a,
            b,
            admin: User::new(4002, "ada", &[5002]),
            confirmer: User::new(4003, "grace", &[5002]),
        }
    }

    async fn store(&self) -> rdp_doctor::store::Store {
        rdp_doctor::store::Store::open(&self.database)
            .await
            .expect("the fleet's database")
    }

    /// POSTs to the simulator whose path ends with `suffix` (before the query).
    fn posts(&self, suffix: &str) -> usize {
        self.sim
            .stats()
            .log
            .iter()
            .filter(|e| {
                e.method == "POST" && e.path.split('?').next().unwrap_or("").ends_with(suffix)
            })
            .count()
    }

    /// `/rdp <action> vm:<vm>` delivered to `replica`; the prompt's message and its Confirm
    /// button's custom id.
    async fn ask(&self, replica: &Replica, action: &str, vm: &str) -> (u64, String) {
        let i = self
            .discord
            .slash(
                &self.admin,
                "rdp",
                &[action],
                json!([{"name": "vm", "type": 3, "value": vm}]),
            )
            .await;
        let answer = replica
            .endpoint
            .deliver(&self.discord, &self.front, &i)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        loop {
            let edit = self.discord.next_edit(&i, WAIT).await.expect("the prompt");
            if let Some(confirm) = support::discord::custom_ids(edit.body())
                .into_iter()
                .find(|b| b.starts_with("rdp:confirm:"))
            {
                return (edit.message_id.expect("the prompt's message"), confirm);
            }
        }
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
                    let title = title(&edit);
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
        self.sim
            .stats()
            .log
            .iter()
            .filter(|e| {
                e.method == "GET"
                    && e.path
                        .split('?')
                        .next()
                        .unwrap_or("")
                        .ends_with("/providers/Microsoft.Network/networkInterfaces")
            })
            .count()
    }

    /// A click of `custom_id` on `message`, by the second admin.
    async fn click(&self, message: u64, custom_id: &str) -> Interaction {
        self.discord
            .component(&self.confirmer, message, custom_id, &[])
            .await
    }
}

/// How a `/rdp sweep` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Swept {
    /// The summary's title.
    Ran(String),
    /// The private refusal's text.
    Refused(String),
}

fn title(r: &Recorded) -> String {
    r.body()["embeds"][0]["title"]
        .as_str()
        .unwrap_or("")
        .to_string()
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
        let mut fleet = Fleet::start(World::new().vm("web-01"), options).await;
        let (prompt, confirm) = fleet.ask(&fleet.a, "redeploy", "web-01").await;
        let click = fleet.click(prompt, &confirm).await;
        let answer = fleet
            .a
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
        fleet.a.child.kill().await.expect("SIGKILL");
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
        assert!(
            fleet.b.log().contains("took over the redeploy of web-01"),
            "{}",
            fleet.b.log()
        );
        assert_eq!(fleet.posts("/redeploy"), 1, "never sent twice");
        // B's /metrics counts the takeover; B took over nothing else.
        let (_, _, metrics) =
            crate::metrics::get(&format!("{}/metrics", fleet.b.endpoint.url)).await;
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

        // Exactly once: one channel message, and no edit of A's confirmation says it ended
        // (A died before Azure did).
        let outcomes: Vec<Value> = channel_messages(&fleet.discord)
            .into_iter()
            .filter(|m| m.to_string().contains("redeploy of web-01"))
            .collect();
        assert_eq!(outcomes.len(), 1, "{outcomes:#?}");
        let ended_in_edit = fleet
            .discord
            .requests()
            .into_iter()
            .any(|r| r.method == "PATCH" && title(&r).contains("succeeded"));
        assert!(!ended_in_edit, "only B told the room");
        let violations = fleet.discord.schema_violations();
        assert!(violations.is_empty(), "{violations:#?}");
        store.close().await;
    })
    .await
}

#[tokio::test]
async fn two_confirms_sent_to_two_replicas_at_once_write_to_azure_once() {
    within(async {
        let fleet = Fleet::start(World::new().vm("sql-01").stopped(), SimOptions::fast()).await;
        let (prompt, confirm) = fleet.ask(&fleet.a, "start", "sql-01").await;
        let (on_a, on_b) = (
            fleet.click(prompt, &confirm).await,
            fleet.click(prompt, &confirm).await,
        );
        let (answer_a, answer_b) = tokio::join!(
            fleet
                .a
                .endpoint
                .deliver(&fleet.discord, &fleet.front, &on_a),
            fleet
                .b
                .endpoint
                .deliver(&fleet.discord, &fleet.front, &on_b),
        );
        assert_eq!(answer_a.json()["type"], 6, "{}", answer_a.body);
        assert_eq!(answer_b.json()["type"], 6, "{}", answer_b.body);

        // One of them runs the start and edits its outcome in; the other is refused privately.
        let outcome = |i: Interaction| {
            let discord = &fleet.discord;
            async move {
                tokio::select! {
                    edit = async {
                        loop {
                            let edit = discord.next_edit(&i, WAIT).await.expect("an edit");
                            let title = title(&edit);
                            if title.contains("succeeded") || title.contains("failed") {
                                return title;
                            }
                        }
                    } => edit,
                    refusal = discord.next_followup(&i, WAIT) => {
                        let refusal = refusal.expect("a follow-up");
                        assert_eq!(refusal.flags() & 64, 64, "private: {refusal:?}");
                        "refused".to_string()
                    }
                }
            }
        };
        let (a, b) = tokio::join!(outcome(on_a), outcome(on_b));
        let mut seen = [a, b];
        seen.sort();
        assert_eq!(seen[0], "refused", "{seen:?}");
        assert!(seen[1].contains("start of sql-01 succeeded"), "{seen:?}");
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

#[tokio::test]
async fn overlapping_sweeps_started_on_two_replicas_at_once_run_once() {
    within(async {
        // Every answer takes 150 ms: a sweep of eight VMs outlasts the other replica's claim.
        let world = support::numbered_vms(World::new().page_size(100), "web", 8);
        let fleet = Fleet::start(world, support::slowed(Duration::from_millis(150))).await;
        // Ada sweeps the whole subscription on A, Grace its rg-web on B, at the same instant.
        let (whole, group) = (
            fleet.sweep(&fleet.admin, None).await,
            fleet.sweep(&fleet.confirmer, Some("rg-web")).await,
        );
        tokio::join!(
            fleet.deliver(&fleet.a, &whole),
            fleet.deliver(&fleet.b, &group),
        );
        let (on_a, on_b) = tokio::join!(fleet.sweep_outcome(&whole), fleet.sweep_outcome(&group));
        let sub = rdp_doctor::sim::DEFAULT_SUBSCRIPTION;
        // Who ran, what the other was told, and who that was (their replica, them, their scope).
        let (expected, refusal, loser) = match (&on_a, &on_b) {
            (Swept::Ran(_), Swept::Refused(text)) => (
                format!("a sweep of subscription {sub} is already running (it covers resource group rg-web): ada started it "),
                text,
                (&fleet.b, &fleet.confirmer, Some("rg-web")),
            ),
            (Swept::Refused(text), Swept::Ran(_)) => (
                format!("a sweep of resource group rg-web is already running (it covers subscription {sub}): grace started it "),
                text,
                (&fleet.a, &fleet.admin, None),
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
async fn a_replica_killed_mid_sweep_frees_its_scope_within_the_lease() {
    within(async {
        // Every answer takes 300 ms: the sweep is still running when A dies.
        let world = support::numbered_vms(World::new().page_size(100), "web", 8);
        let mut fleet = Fleet::start(world, support::slowed(Duration::from_millis(300))).await;
        let first = fleet.sweep(&fleet.admin, None).await;
        fleet.deliver(&fleet.a, &first).await;
        let store = fleet.store().await;
        support::until_async("A's claim", fleet.sim.watch_answers(), || async {
            store.claimed_sweeps().await.is_ok_and(|c| !c.is_empty())
        })
        .await;
        fleet.a.child.kill().await.expect("SIGKILL");
        let killed = Instant::now();

        // Right after, A's claim is alive: B refuses an overlapping sweep.
        let early = fleet.sweep(&fleet.confirmer, Some("rg-web")).await;
        fleet.deliver(&fleet.b, &early).await;
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
        fleet.deliver(&fleet.b, &later).await;
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
