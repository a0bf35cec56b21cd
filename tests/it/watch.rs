//! Watches and the timeline through the door, against the simulator and SQLite files: a watch
//! survives a restart and is run by one of two replicas, posting once when Azure changes; it
//! expires; `unwatch` stops it; `history` puts checks (with what changed between them) and
//! fixes on one line of time; retention prunes old checks. What the war room sees of a watch
//! (the post after a fix) is in `discord/watch.rs`.

use crate::support;
use rdp_doctor::policy::{Actor, Place};
use rdp_doctor::runbook::door::{Caller, Door, OnWatch, WatchNews};
use rdp_doctor::runbook::fix::{parse_source, FixRequest};
use rdp_doctor::runbook::watch::{timeline_lines, WatchSettings};
use rdp_doctor::runbook::CheckOptions;
use rdp_doctor::sim::Rule;
use rdp_doctor::sim::World;
use rdp_doctor::store::Store;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::discord::{CHANNEL_ID, GUILD_ID, ROOM_POLICY};
use support::{within, Harness};
use tokio::sync::watch;

/// Short enough for a test, long enough that a replica busy on a loaded machine still renews
/// in time (it renews every third of it).
const LEASE: Duration = Duration::from_secs(3);

fn settings() -> WatchSettings {
    WatchSettings {
        interval: Duration::from_millis(200),
        ..WatchSettings::default()
    }
}

/// Someone in the war room's channel with the room's `operate` role (5001), or `admin` (5002).
fn person(id: u64, name: &str, role: u64) -> Caller {
    Caller {
        actor: Actor::discord(id, name, vec![role.to_string()]),
        place: Place::Discord {
            guild: Some(GUILD_ID.to_string()),
            channel: CHANNEL_ID.to_string(),
        },
    }
}

fn alice() -> Caller {
    person(4001, "alice", 5001)
}

/// One replica: a door on the database file at `db`, as a process of its own would open it.
async fn replica(h: &Harness, db: &Path, id: &str, settings: WatchSettings) -> (Door, Store) {
    replica_on(h, &format!("sqlite://{}", db.display()), id, settings).await
}

/// One replica on the database at `url` (SQLite or PostgreSQL).
async fn replica_on(h: &Harness, url: &str, id: &str, settings: WatchSettings) -> (Door, Store) {
    let store = Store::open(url).await.expect("open the database");
    let door = h
        .door(
            support::policy(Some(ROOM_POLICY)).with_guild(Some(GUILD_ID)),
            store.clone(),
        )
        .with_replica(id, LEASE)
        .with_watch(settings);
    (door, store)
}

/// What the replicas' watches said, each with the replica that said it; `said` counts them.
#[derive(Clone)]
struct Posts {
    news: Arc<Mutex<Vec<(String, WatchNews)>>>,
    said: Arc<watch::Sender<usize>>,
}

impl Posts {
    fn new() -> Posts {
        Posts {
            news: Arc::default(),
            said: Arc::new(watch::Sender::new(0)),
        }
    }

    fn to(&self, replica: &str) -> OnWatch {
        let posts = self.clone();
        let replica = replica.to_string();
        Arc::new(move |news| {
            posts.news.lock().unwrap().push((replica.clone(), news));
            posts.said.send_modify(|n| *n += 1);
        })
    }

    async fn until(&self, n: usize) {
        let said = self.said.clone();
        support::until(&format!("{n} watch posts"), said.subscribe(), || {
            *said.borrow() >= n
        })
        .await;
    }

    fn all(&self) -> Vec<(String, WatchNews)> {
        self.news.lock().unwrap().clone()
    }
}

/// Until `doors` have run their watches `n` times between them.
async fn runs(doors: &[&Door], n: u64) {
    let total = || doors.iter().map(|d| *d.watch_runs().borrow()).sum::<u64>();
    let mut changes: Vec<_> = doors.iter().map(|d| d.watch_runs()).collect();
    tokio::time::timeout(Duration::from_secs(30), async {
        while total() < n {
            let waits = changes.iter_mut().map(|c| Box::pin(c.changed()));
            let _ = futures::future::select_all(waits).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} watch runs did not happen within 30 s"));
}

fn count(door: &Door) -> u64 {
    *door.watch_runs().borrow()
}

/// Someone opens TCP 3389 in the portal: an allow rule ahead of web-02's deny.
fn allow_rdp_in_the_portal(h: &Harness) {
    h.sim.world().update(|w| {
        for nsg in w.nsgs.iter_mut().filter(|n| n.name == "web-02-snet-nsg") {
            nsg.rules.push(Rule::inbound_tcp(
                "allow-rdp-office",
                150,
                "Allow",
                "Internet",
                "3389",
            ));
        }
    });
}

#[tokio::test]
async fn a_watch_survives_a_restart_and_one_of_two_replicas_runs_it_posting_once() {
    within(async {
        let h = Harness::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let dir = support::scratch_dir("watch-restart", &h.sim);
        let db = format!("sqlite://{}", dir.join("rdp-doctor.db").display());
        restart_and_two_replicas(&h, &db).await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

#[tokio::test]
async fn on_postgresql_a_watch_survives_a_restart_and_one_of_two_replicas_runs_it() {
    within(async {
        let h = Harness::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let db = rdp_doctor::store::testing::postgres_database().await;
        restart_and_two_replicas(&h, &db).await;
    })
    .await
}

/// A watch started by one process, which dies; two replicas restarted on the database at
/// `db`; someone opens the port in the portal.
async fn restart_and_two_replicas(h: &Harness, db: &str) {
    let posts = Posts::new();

    // The first process starts the watch and takes its first look.
    let (first, first_store) = replica_on(h, db, "first", settings()).await;
    let started = first.watch(&alice(), "web-02", Some(30)).await.unwrap();
    assert_eq!(started.vm.name, "web-02");
    assert!(!started.extended);
    let task = first.spawn_watches(posts.to("first")).unwrap();
    runs(&[&first], 1).await;
    // It dies: its task stops, its heartbeat with it.
    task.abort();
    let _ = task.await;
    first_store.close().await;

    // Restarted as two replicas on the same database.
    let (b, _b_store) = replica_on(h, db, "b", settings()).await;
    let (c, _c_store) = replica_on(h, db, "c", settings()).await;
    let tasks = [
        b.spawn_watches(posts.to("b")).unwrap(),
        c.spawn_watches(posts.to("c")).unwrap(),
    ];
    // Taken over once the first's lease lapsed; unchanged re-checks say nothing.
    runs(&[&b, &c], 3).await;
    assert!(posts.all().is_empty(), "{:?}", posts.all());

    allow_rdp_in_the_portal(h);
    posts.until(1).await;
    let before = count(&b) + count(&c);
    runs(&[&b, &c], before + 3).await;
    for task in tasks {
        task.abort();
    }

    // Exactly one replica ran it, and it said so once.
    assert!(
        count(&b) == 0 || count(&c) == 0,
        "b ran {} times and c {}",
        count(&b),
        count(&c)
    );
    let all = posts.all();
    assert_eq!(all.len(), 1, "{all:?}");
    let (by, news) = &all[0];
    assert_eq!(by, if count(&b) > 0 { "b" } else { "c" });
    let WatchNews::Changed {
        channel,
        vm,
        verdict,
        lines,
        now,
        changed_in_azure,
        started_by,
        ..
    } = news
    else {
        panic!("not a change: {news:?}");
    };
    assert_eq!(
        (
            channel.as_str(),
            vm.name.as_str(),
            verdict.as_str(),
            started_by.as_str()
        ),
        (CHANNEL_ID.to_string().as_str(), "web-02", "ok", "alice")
    );
    assert_eq!(
        lines,
        &[
            "verdict: problems → ok",
            // The subnet's NSG lets it through; the NIC's allow-rdp decides last.
            "nsg: fail → pass; rule allow-rdp (priority 1000) decides now, not deny-rdp-internet (priority 200)"
        ]
    );
    assert!(now[0].starts_with("nsg: "), "{now:?}");
    // A change made outside ARM's front door is not in the Activity Log.
    assert!(changed_in_azure.is_empty(), "{changed_in_azure:?}");
}

#[tokio::test]
async fn a_watch_ends_when_it_expires_and_unwatch_stops_one() {
    within(async {
        let h = Harness::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let dir = support::scratch_dir("watch-expiry", &h.sim);
        let short = WatchSettings {
            default_length: Duration::from_secs(1),
            ..settings()
        };
        let (door, store) = replica(&h, &dir.join("rdp-doctor.db"), "r", short).await;
        let posts = Posts::new();

        // Unwatch: the watch is gone, and a second unwatch finds none.
        door.watch(&alice(), "web-02", Some(30)).await.unwrap();
        let (vm, stopped) = door.unwatch(&alice(), "web-02").await.unwrap();
        assert_eq!(vm.name, "web-02");
        assert_eq!(stopped.map(|w| w.actor_name), Some("alice".to_string()));
        assert!(door.unwatch(&alice(), "web-02").await.unwrap().1.is_none());
        assert!(store.watches(None).await.unwrap().is_empty());

        // The default length here is a second: it runs, then ends, saying so once.
        let started = door.watch(&alice(), "web-02", None).await.unwrap();
        let task = door.spawn_watches(posts.to("r")).unwrap();
        posts.until(1).await;
        let runs_then = count(&door);
        assert!(runs_then >= 2, "{runs_then} runs");
        match &posts.all()[..] {
            [(_, WatchNews::Ended { vm, why, .. })] => {
                assert_eq!(vm.name, "web-02");
                assert_eq!(
                    why,
                    &format!(
                        "the watch alice started expired at {}",
                        rdp_doctor::runbook::operate::format_time(started.until_ms)
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(store.watches(None).await.unwrap().is_empty());
        // Nothing is left to run: time passing is what is tested here.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(count(&door), runs_then);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

#[tokio::test]
async fn a_watch_needs_a_channel_a_reader_and_a_length_within_the_maximum() {
    within(async {
        let h = Harness::start(World::new().vm("web-02")).await;
        let dir = support::scratch_dir("watch-refused", &h.sim);
        let (door, store) = replica(&h, &dir.join("rdp-doctor.db"), "r", settings()).await;
        let terminal = Caller {
            actor: Actor::terminal("alice"),
            place: Place::Terminal,
        };
        let refusals = [
            door.watch(&terminal, "web-02", None).await,
            door.watch(&alice(), "web-02", Some(241)).await,
            door.watch(&person(4099, "mallory", 9999), "web-02", None).await,
        ]
        .map(|r| r.unwrap_err().to_string());
        assert_eq!(
            refusals,
            [
                "a watch posts in the Discord channel it was started in: use /rdp watch there",
                "a watch lasts from 1 to 240 minutes; 241 is not in that range",
                "Permission denied: you need the `read` permission on any VM rdp-doctor serves (you have none)",
            ]
        );
        assert!(store.watches(None).await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

#[tokio::test]
async fn history_shows_checks_with_their_differences_and_the_fix_newest_first() {
    within(async {
        let h = Harness::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let dir = support::scratch_dir("history", &h.sim);
        let (door, _store) = replica(&h, &dir.join("rdp-doctor.db"), "r", settings()).await;
        let quiet = |_| {};
        let alice = alice();
        // Opening the port is an admin's, and two people's, decision.
        let ada = person(4010, "ada", 5002);
        let bob = person(4002, "bob", 5002);

        door.check(&alice, "web-02", &CheckOptions::default(), &quiet)
            .await
            .unwrap();
        let web = door
            .resolve(
                &alice,
                "web-02",
                rdp_doctor::runbook::catalog::Permission::Read,
            )
            .await
            .unwrap();
        let source = parse_source("198.51.100.7").unwrap();
        let prompt = door
            .request_fix(&ada, &web, FixRequest::OpenRdpPort { source, port: 3389 })
            .await
            .unwrap();
        let outcome = door
            .confirm(&bob, &prompt.confirmation_id, &|_| {})
            .await
            .unwrap();
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        door.check(&alice, "web-02", &CheckOptions::default(), &quiet)
            .await
            .unwrap();

        let timeline = door.history(&alice, "web-02", 50).await.unwrap();
        let clock = regex::Regex::new(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC").unwrap();
        let confirmation = regex::Regex::new(r"\b[0-9a-f]{8}\b").unwrap();
        let text = timeline_lines(&timeline)
            .iter()
            .map(|l| {
                confirmation
                    .replace_all(&clock.replace_all(l, "<time>"), "<id>")
                    .into_owned()
            })
            .collect::<Vec<_>>()
            .join("\n");
        insta::assert_snapshot!(text, @r"
<time>  check (check): ok — no change
<time>  check (fix): ok — verdict: problems → ok; nsg: fail → warn
<time>  open-rdp-port by bob: succeeded
<time>  change by <id>-0000-0000-0000-00000000000b: created security rule rdp-doctor-allow-rdp-198-51-100-7 in web-02-snet-nsg
<time>  check (fix): problems — no change
<time>  confirm by bob: confirmed open-rdp-port <id>
<time>  open-rdp-port by ada: requested (confirmation <id>)
<time>  check (check): problems
");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

#[tokio::test]
async fn checks_older_than_the_retention_are_pruned_as_new_ones_are_kept() {
    within(async {
        let h = Harness::start(World::new().vm("web-02")).await;
        let dir = support::scratch_dir("retention", &h.sim);
        let week = WatchSettings {
            retention: Duration::from_secs(7 * 86_400),
            ..settings()
        };
        let (door, store) = replica(&h, &dir.join("rdp-doctor.db"), "r", week).await;
        let web = door
            .resolve(
                &alice(),
                "web-02",
                rdp_doctor::runbook::catalog::Permission::Read,
            )
            .await
            .unwrap()
            .vm;
        // Checks kept eight and six days ago (under a longer retention then).
        let day = 86_400_000;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let report = r#"{"verdict":"ok","findings":[]}"#;
        for days in [8, 6] {
            store
                .record_check(
                    &web.id,
                    now - days * day,
                    "check",
                    report,
                    Duration::from_secs(30 * 86_400),
                )
                .await
                .unwrap();
        }
        assert_eq!(store.checks_of(&web.id, 10).await.unwrap().len(), 2);

        door.check(&alice(), "web-02", &CheckOptions::default(), &|_| {})
            .await
            .unwrap();
        let kept: Vec<i64> = store
            .checks_of(&web.id, 10)
            .await
            .unwrap()
            .iter()
            .map(|c| (now - c.taken_ms + day / 2) / day)
            .collect();
        assert_eq!(kept, [0, 6], "days ago of the checks kept");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

#[tokio::test]
async fn a_read_azure_refuses_is_no_news_and_puts_the_next_look_off() {
    within(async {
        let h = Harness::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let dir = support::scratch_dir("watch-backoff", &h.sim);
        let (door, store) = replica(&h, &dir.join("rdp-doctor.db"), "r", settings()).await;
        let posts = Posts::new();
        door.watch(&alice(), "web-02", Some(30)).await.unwrap();
        let task = door.spawn_watches(posts.to("r")).unwrap();
        runs(&[&door], 1).await;

        // Azure refuses the effective rules: the `nsg` check is an error, not a change.
        h.sim
            .set_options(support::failing(vec![rdp_doctor::sim::Fault::new(
                "effectiveNetworkSecurityGroups",
                rdp_doctor::sim::FaultKind::Status(403),
            )]));
        let then = count(&door);
        runs(&[&door], then + 1).await;
        let watch = &store.watches(None).await.unwrap()[0];
        let put_off = watch.next_ms - watch.heartbeat_ms;
        assert!(
            put_off >= 3 * 200,
            "the next look is {put_off} ms after the last, not four intervals"
        );
        // Azure answers again, and the port is opened: the change is from what was judged
        // before the refusal ("fail"), not from the error.
        h.sim.set_options(rdp_doctor::sim::SimOptions::fast());
        allow_rdp_in_the_portal(&h);
        posts.until(1).await;
        task.abort();
        match &posts.all()[..] {
            [(_, WatchNews::Changed { lines, .. })] => {
                assert_eq!(lines[0], "verdict: problems → ok");
                assert!(lines[1].starts_with("nsg: fail → pass"), "{lines:?}");
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}
