//! `/rdp watch`, `/rdp unwatch` and `/rdp history` as the war room sees them: a watch that
//! posts once when a fix repairs the VM, with the fix's write from the Activity Log, and not on
//! the unchanged re-checks around it.

use super::war_room::render;
use super::{Room, WAIT};
use crate::support::discord::{routes, User, ROOM_POLICY};
use crate::support::{self, within};
use rdp_doctor::runbook::watch::WatchSettings;
use rdp_doctor::sim::{SimOptions, World};
use std::time::Duration;
use tokio::sync::watch;

/// A room whose watches look again every 200 ms.
async fn watching_room(world: World) -> (Room, watch::Receiver<u64>) {
    let mut runs = None;
    let room = Room::build_tuned(world, SimOptions::fast(), Some(ROOM_POLICY), |door| {
        let door = door.with_watch(WatchSettings {
            interval: Duration::from_millis(200),
            ..WatchSettings::default()
        });
        runs = Some(door.watch_runs());
        door
    })
    .await;
    (room, runs.expect("the door was tuned"))
}

/// Until the bot's watches have run `n` times in all.
async fn runs(runs: &watch::Receiver<u64>, n: u64) {
    support::until(&format!("{n} watch runs"), runs.clone(), || {
        *runs.borrow() >= n
    })
    .await;
}

fn channel_posts(room: &Room) -> usize {
    room.discord
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.route == routes::CHANNEL_MESSAGES)
        .count()
}

#[tokio::test]
async fn a_watch_posts_once_when_a_fix_repairs_the_vm_and_unwatch_stops_it() {
    within(async {
        let (room, watch_runs) = watching_room(World::new().vm("web-02").nsg_denies_rdp()).await;
        let started = room.run("/rdp watch web-02 minutes:30").await.final_edit().await;
        insta::assert_snapshot!(started.text, @r"
# Watching web-02
I check web-02 every <elapsed> until <time> and post here when its verdict or a finding changes. `/rdp unwatch web-02` stops it.
");
        // The first look and an unchanged one: nothing said.
        runs(&watch_runs, 2).await;
        assert_eq!(channel_posts(&room), 0);

        // The port opened through the normal fix flow, by two admins.
        let ada = User::new(4010, "ada", &[5002]);
        let grace = User::new(4011, "grace", &[5002]);
        let prompt = room
            .as_user(&ada)
            .run("/rdp open-rdp web-02 source:198.51.100.7")
            .await
            .edit_saying("[Confirm]")
            .await;
        let click = room.as_user(&grace).click(&prompt, "Confirm").await;
        click.edit_saying("succeeded").await;

        let post = room
            .discord
            .next_channel_message(WAIT)
            .await
            .expect("the watch's post");
        // The Activity Log's time of day.
        let clock = regex::Regex::new(r"\b\d{2}:\d{2}\b").unwrap();
        insta::assert_snapshot!(clock.replace_all(&render(&post), "<hh:mm>"), @r"
# web-02 changed: ok
• verdict: problems → ok
• nsg: fail → warn

Now:
• nsg: TCP 3389 is open only from 198.51.100.7/32; from anywhere else it is denied by rule deny-rdp-internet (priority 200) in NSG web-02-snet-nsg

Changed in Azure (Activity Log):
• <hh:mm> 00000000-0000-0000-0000-00000000000b created security rule rdp-doctor-allow-rdp-198-51-100-7 in web-02-snet-nsg
-- Watching for alice until <time> · /rdp unwatch web-02 stops it
");
        // More re-checks, nothing new: still the one post.
        let then = *watch_runs.borrow();
        runs(&watch_runs, then + 3).await;
        assert_eq!(channel_posts(&room), 1);

        let listed = room.run("/rdp watch").await.refused().await;
        insta::assert_snapshot!(listed.text, @r"
(only you can see this)
# Watches in this channel
**web-02** for alice until <time>
");
        let stopped = room.run("/rdp unwatch web-02").await.final_edit().await;
        insta::assert_snapshot!(stopped.text, @r"
# Stopped watching web-02
alice started this watch; nothing more will be posted about it.
");
        assert!(room.store.watches(None).await.unwrap().is_empty());

        let history = room.run("/rdp history web-02").await.final_edit().await;
        // Whether the watch or the fix's own re-check saw the open port first depends on
        // timing, as does how many re-checks ran: the checks are asserted apart.
        let checks: Vec<&str> = history
            .text
            .lines()
            .filter(|l| l.starts_with("<time>  check ("))
            .collect();
        assert_eq!(
            checks
                .iter()
                .filter(|l| l.contains("ok — verdict: problems → ok; nsg: fail → warn"))
                .count(),
            1,
            "{}",
            history.text
        );
        assert!(checks.last().unwrap().ends_with("check (watch): problems"), "{}", history.text);
        let confirmation = regex::Regex::new(r"\b[0-9a-f]{8}\b").unwrap();
        let rest: Vec<&str> = history
            .text
            .lines()
            .filter(|l| !l.starts_with("<time>  check ("))
            .collect();
        insta::assert_snapshot!(confirmation.replace_all(&rest.join("\n"), "<id>"), @r"
# History of web-02 (newest first)
```text
<time>  unwatch by alice: stopped watching
<time>  open-rdp-port by grace: succeeded
<time>  change by <id>-0000-0000-0000-00000000000b: created security rule rdp-doctor-allow-rdp-198-51-100-7 in web-02-snet-nsg
<time>  confirm by grace: confirmed open-rdp-port <id>
<time>  open-rdp-port by ada: requested (confirmation <id>)
<time>  watch by alice: watching until <time>
```
");
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn watch_unwatch_and_history_answer_an_unknown_name_privately_and_take_back_the_thinking() {
    within(async {
        let (room, _) = watching_room(World::new().vm("web-01").vm("web-02")).await;
        for line in [
            "/rdp watch web-1",
            "/rdp unwatch web-1",
            "/rdp history web-1",
        ] {
            let sent = room.run(line).await;
            assert_eq!(
                sent.next_message().await.text,
                "rdp-doctor is thinking…\n",
                "{line}"
            );
            let reply = sent.next_message().await;
            assert!(reply.private(), "{line}: {}", reply.text);
            assert_eq!(
                reply.text,
                "(only you can see this)\n# Cannot find that VM\nno VM named web-1 that you may \
                 read in subscription 11111111-1111-1111-1111-111111111111. Did you mean: web-01 \
                 (rg-web), web-02 (rg-web)?\n",
                "{line}"
            );
            // The channel's "thinking…" is taken back: the mistake is the person's alone.
            let token = sent.i.token.clone();
            let taken_back = room.discord.requests().iter().any(|r| {
                r.method == "DELETE" && r.path.contains(&token) && r.path.ends_with("/@original")
            });
            assert!(taken_back, "{line}: the public answer stays");
        }
        assert_eq!(channel_posts(&room), 0);
        room.assert_clean();
    })
    .await
}
