//! The bot as the war room sees it: the real poise/serenity bot against a fake Discord (REST and
//! gateway on loopback, every request body checked against Discord's OpenAPI spec) and the Azure
//! simulator.

use crate::support;

/// The bot as a process under the loudest `RUST_LOG` (its own file: it starts the binary).
mod bot_logs;

/// `room.run("/rdp check web-01")`, `room.click(&prompt, "Confirm")`, and what people see.
pub(crate) mod war_room;

/// `/rdp guest` and the "Look inside the VM" button.
mod guest;

/// Just-in-time access in the room (issue 15).
mod gates;

/// "Recent changes" in reports and `/rdp changes`.
mod changes;

/// `/rdp watch`, `/rdp unwatch` and `/rdp history`.
mod watch;

use rdp_doctor::discord::{Bot, BotSettings};
use rdp_doctor::sim::{SimOptions, Simulator, World};
use serde_json::{json, Value};
use std::time::Duration;
use support::discord::{
    room_config, routes, FakeDiscord, Origin, Recorded, User, CHANNEL_ID, GUILD_ID, ROOM_POLICY,
    TOKEN,
};
use support::within;

const WAIT: Duration = Duration::from_secs(20);

struct Room {
    discord: FakeDiscord,
    sim: Simulator,
    directory: std::sync::Arc<rdp_doctor::azure::VmDirectory>,
    bot: tokio::task::JoinHandle<Result<(), rdp_doctor::discord::BotError>>,
    alice: User,
    /// The bot's database (a handle on the same pool), to make it fail.
    store: rdp_doctor::store::Store,
}

impl Room {
    async fn start(world: World) -> Room {
        Room::with_options(world, SimOptions::fast()).await
    }

    async fn with_options(world: World, options: SimOptions) -> Room {
        Room::build(world, options, Some(ROOM_POLICY)).await
    }

    /// `None`: the config has no `[policy]` at all.
    async fn with_policy(world: World, policy: Option<&str>) -> Room {
        Room::build(world, SimOptions::fast(), policy).await
    }

    async fn build(world: World, options: SimOptions, policy: Option<&str>) -> Room {
        Room::build_tuned(world, options, policy, |door| door).await
    }

    /// `tune` adjusts the door before the bot starts (its limits).
    async fn build_tuned(
        world: World,
        options: SimOptions,
        policy: Option<&str>,
        tune: impl FnOnce(rdp_doctor::runbook::door::Door) -> rdp_doctor::runbook::door::Door,
    ) -> Room {
        // Tests slow Azure down to 2 s a request; that must not count as a hang.
        let h = support::Harness::build(world)
            .options(options)
            .settings(|s| s.request_timeout = Duration::from_secs(10))
            .start()
            .await;
        let discord = FakeDiscord::start().await;
        let store = support::store(None).await;
        let door = h.door(
            support::policy(policy).with_guild(Some(GUILD_ID)),
            store.clone(),
        );
        let bot = Bot::new(tune(door));
        let directory = bot.door.directory().clone();
        let settings = BotSettings {
            token: TOKEN.to_string().into(),
            api_url: Some(discord.url()),
            guild_id: Some(GUILD_ID),
            directory_refresh: Duration::from_secs(3600),
            metrics_listener: None,
            standby: None,
        };
        let bot = tokio::spawn(rdp_doctor::discord::run(settings, bot));
        discord.wait_ready(WAIT).await.expect("bot ready");
        // The autocomplete list loads in the background at start; let it, so that tests that
        // count ARM requests count only their own.
        support::until("the VM list", directory.watch_attempts(), || {
            directory.attempts() > 0
        })
        .await;
        Room {
            discord,
            sim: h.sim,
            directory,
            bot,
            alice: User {
                id: 4001,
                name: "alice".into(),
                roles: vec![5001],
            },
            store,
        }
    }

    /// Until the bot's VM list (for autocomplete and names) holds `n` VMs: it loads in the
    /// background.
    async fn vms_listed(&self, n: usize) {
        let what = format!("{n} VMs in the bot's list");
        support::until(&what, self.directory.watch_attempts(), || {
            self.directory.len() >= n
        })
        .await;
    }

    fn assert_clean(&self) {
        let violations = self.discord.schema_violations();
        assert!(
            violations.is_empty(),
            "requests Discord would reject: {violations:#?}"
        );
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.bot.abort();
    }
}

fn embed(r: &Recorded, n: usize) -> Value {
    r.json
        .as_ref()
        .map(|j| j["embeds"][n].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn commands_are_registered_in_the_guild() {
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        let commands = room.discord.registered_commands();
        let rdp = commands
            .iter()
            .find(|c| c["name"] == "rdp")
            .expect("/rdp registered");
        let subs: Vec<&str> = rdp["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            subs,
            [
                "check",
                "health",
                "console",
                "guest",
                "explain",
                "help",
                "sweep",
                "start",
                "restart",
                "redeploy",
                "reset-config",
                "reset-password",
                "open-rdp",
                "audit",
                "permissions",
                "request-jit",
                "changes",
                "watch",
                "unwatch",
                "history"
            ]
        );
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn check_defers_then_edits_progress_then_posts_the_report_with_screenshot() {
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        let check = room.run("/rdp check web-01").await;
        let thinking = check.next_message().await;
        assert_eq!(thinking.raw.route, routes::CALLBACK);
        insta::assert_snapshot!(thinking.text, @"rdp-doctor is thinking…");
        // The checklist is edited in as steps finish, then replaced by the report.
        let mut checklists = Vec::new();
        let report = loop {
            let edit = check.next_edit().await;
            if edit.text.starts_with("# Checking") {
                checklists.push(edit.text);
            } else if !edit.text.starts_with("# Looking for") {
                break edit;
            }
        };
        assert!(checklists.len() >= 2, "progress was shown: {checklists:#?}");
        assert!(
            checklists.iter().any(|c| c.contains('✅')),
            "{checklists:#?}"
        );
        insta::assert_snapshot!(checklists[0], @r#"
# Checking web-01…
Resource group **rg-web** · subscription `11111111-1111-1111-1111-111111111111`

⏳ VM is running and provisioned
⏳ VM guest agent is Ready
⏳ VM has a public IP (or a private path)
⏳ Network security group allows TCP 3389
⏳ Resource Health is Available
⏳ Boot diagnostics: console screenshot and serial log
⏳ The reply finds its way back to you
"#);
        insta::assert_snapshot!(report.text, @r#"
# web-01: nothing found that blocks Remote Desktop
Resource group **rg-web** · subscription `11111111-1111-1111-1111-111111111111`
## ✅ VM is running and provisioned
VM is running (provisioning succeeded)
## ✅ VM guest agent is Ready
Guest agent is Ready (version 2.7.41491.949)
GuestAgent is running and accepting new configurations.
## ✅ VM has a public IP (or a private path)
Public IP 20.1.2.3 (static, Standard SKU, web-01-ip)
## ✅ Network security group allows TCP 3389
TCP 3389 from the Internet is allowed by rule allow-rdp (priority 1000) in NSG web-01-nsg
## ✅ Resource Health is Available
Resource Health: Available
## ✅ Boot diagnostics: console screenshot and serial log
Console screenshot captured; serial log has 40 recent lines
## ✅ The reply finds its way back to you
Replies to the Internet go to the Internet (system route 0.0.0.0/0)
## 🕘 Recent changes
None in the last 24 hours (Activity Log)
[image attachment://console-web-01.png]
-- 11 ARM requests · <elapsed>
# Serial log (last 40 lines)
```text
Computer GUID: 3f4a8c21-5b7e-4d2a-9c61-0e8b7d5a4f10
Processor Architecture: x64
Build Number: 20348
Product: Windows Server 2022 Datacenter
Applied Service Pack: None
Version Number: 10.0
Build Type: Multiprocessor Free
Product Type: Server
Suite Type: TerminalServer DataCenter SingleUserTS
SAC>
i
Net: 10, Ip=10.0.1.4  Subnet=255.255.255.0  Gateway=10.0.1.1
Net: 10, Ip=fe80::20d:3aff:fe1b:c721  Prefix=64
SAC>
t
   0   0 System
 312  12 smss.exe
 420  13 csrss.exe
 508  13 wininit.exe
 644   9 services.exe
 652   9 lsass.exe
 788   8 svchost.exe (DcomLaunch)
 1104  8 svchost.exe (TermService)
 1380  8 svchost.exe (Netman)
 2044  8 WaAppAgent.exe
 2140  8 WindowsAzureGuestAgent.exe
SAC>
EVENT: RdAgent service started; WindowsAzureGuestAgent is running.
EVENT: Remote Desktop Services is listening on RDP-Tcp (port 3389).
SAC>
EVENT: A new channel has been created.  Use "ch -?" for channel help.
Channel: Cmd0001
SAC>
ch
Channel List
(Use "ch -?" for information on using channels)
# Status  Channel Name
0 (AV)    SAC
1 (AV)    Cmd0001
SAC>
```
[Look inside the VM]
[attachment console-web-01.png]
"#);
        let main = embed(&report.raw, 0);
        assert_eq!(main["color"], 0x2ECC71);
        let (file, kind, png) = report.raw.files.first().expect("screenshot attached");
        assert!(
            file.ends_with(".png") && kind.contains("png"),
            "{file} {kind}"
        );
        assert_eq!(&png[..4], b"\x89PNG");
        assert_eq!(main["image"]["url"], format!("attachment://{file}"));
        assert!(embed(&report.raw, 1)["description"]
            .as_str()
            .unwrap()
            .starts_with("```text"));
        let json = report.raw.body();
        assert_eq!(json["allowed_mentions"]["parse"], json!([]), "no pings");
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn subnet_nsg_deny_report() {
    within(async {
        // The demo world's web-02: a subnet NSG denies 3389 from the Internet.
        let room = Room::start(rdp_doctor::sim::demo_world()).await;
        let report = room.run("/rdp check web-02").await.final_edit().await;
        assert_eq!(embed(&report.raw, 0)["color"], 0xE74C3C, "red");
        room.assert_clean();
        // The report; the serial log under it is the check test's.
        let (shown, serial) = report
            .text
            .split_once("# Serial log")
            .expect("the serial log under the report");
        assert!(
            serial.contains("SAC>") && serial.ends_with("[attachment console-web-02.png]\n"),
            "{serial}"
        );
        insta::assert_snapshot!(shown, @r#"
# web-02: problems found
Resource group **rg-web** · subscription `11111111-1111-1111-1111-111111111111`
## ✅ VM is running and provisioned
VM is running (provisioning succeeded)
## ✅ VM guest agent is Ready
Guest agent is Ready (version 2.7.41491.949)
GuestAgent is running and accepting new configurations.
## ✅ VM has a public IP (or a private path)
Public IP 20.1.2.4 (static, Standard SKU, web-02-ip)
## ❌ Network security group allows TCP 3389
TCP 3389 from the Internet is denied by rule deny-rdp-internet (priority 200) in NSG nsg-snet-app
## ✅ Resource Health is Available
Resource Health: Available
## ✅ Boot diagnostics: console screenshot and serial log
Console screenshot captured; serial log has 40 recent lines
## ✅ The reply finds its way back to you
Replies to the Internet go to the Internet (system route 0.0.0.0/0)
## 🕘 Recent changes
The last 24 hours, newest first:
**<t:…> alice@contoso.com created security rule deny-rdp-internet in nsg-snet-app** ← explains `nsg`
<t:…> bob@contoso.com created security rule allow-https in nsg-rdp
## ➡️ Next step
**Allow inbound TCP 3389 in the NSG** (`open-rdp-port`): Adds an inbound Allow rule for TCP 3389 to the network security group that blocks it, with a priority that wins over the blocking rule.
[Runbook step](https://learn.microsoft.com/en-us/troubleshoot/azure/virtual-machines/windows/troubleshoot-rdp-nsg-problem)
After each step, try to connect again.
[image attachment://console-web-02.png]
-- 12 ARM requests · <elapsed>
"#);
    })
    .await
}

#[tokio::test]
async fn the_acknowledgement_beats_a_slow_azure() {
    within(async {
        let options = support::slowed(Duration::from_secs(2));
        let room = Room::with_options(World::new().vm("web-01"), options).await;
        let check = room.run("/rdp check web-01").await;
        let thinking = check.next_message().await;
        // Every ARM request takes 2 s: an acknowledgement sent after any of them would be late.
        let waited = thinking.raw.at.duration_since(check.i.sent_at);
        assert!(
            waited < Duration::from_secs(1),
            "acknowledged after {waited:?}"
        );
        assert_eq!(thinking.raw.route, routes::CALLBACK);
        insta::assert_snapshot!(thinking.text, @"rdp-doctor is thinking…");
        let report = check.final_edit().await;
        assert!(report.text.starts_with("# web-01: "), "{}", report.text);
    })
    .await
}

#[tokio::test]
async fn an_ambiguous_name_asks_privately_and_the_choice_runs_the_check() {
    within(async {
        let room = Room::start(
            World::new()
                .vm("api-01")
                .in_group("rg-api-east")
                .subscription("22222222-2222-2222-2222-222222222222")
                .vm("api-01")
                .in_group("rg-api-west"),
        )
        .await;
        let check = room.run("/rdp check api-01").await;
        insta::assert_snapshot!(check.next_message().await.text, @"rdp-doctor is thinking…");
        let menu = check.next_message().await;
        assert!(menu.private());
        insta::assert_snapshot!(menu.text, @r#"
(only you can see this)
# 2 VMs are named api-01
Pick the one you mean (subscription / resource group):
[Which VM? ▾]
  · rg-api-east/api-01
  · rg-api-west/api-01
"#);
        let pick = room.pick(&menu, "rg-api-west/api-01").await;
        let update = pick.next_edit().await;
        assert_eq!(
            update.raw.route,
            routes::CALLBACK,
            "the menu is updated in place"
        );
        insta::assert_snapshot!(update.text, @r#"
# Checking rg-api-west/api-01
The answer follows in the channel.
"#);
        let public = pick.next_message().await;
        assert!(!public.private(), "the report is public: {}", public.text);
        // The report is edited into that follow-up.
        let report = pick.edit_saying("nothing found").await;
        assert_eq!(report.message_id, public.message_id);
        assert!(report.text.contains("rg-api-west"), "{}", report.text);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn an_unknown_name_gets_a_private_reply_with_the_closest_names() {
    within(async {
        let room = Room::start(World::new().vm("web-01").vm("web-02")).await;
        let check = room.run("/rdp check web-1").await;
        insta::assert_snapshot!(check.next_message().await.text, @"rdp-doctor is thinking…");
        let reply = check.next_message().await;
        assert!(reply.private());
        insta::assert_snapshot!(reply.text, @r#"
(only you can see this)
# Cannot find that VM
no VM named web-1 that you may read in subscription 11111111-1111-1111-1111-111111111111. Did you mean: web-01 (rg-web), web-02 (rg-web)?
"#);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn invalid_input_is_answered_privately_without_azure() {
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        let before = room.sim.stats().requests;
        let check = room.run(r#"/rdp check "web 01!""#).await;
        let reply = check.refused().await;
        insta::assert_snapshot!(reply.text, @r#"
(only you can see this)
# Cannot look that up
"web 01!" is not a valid Azure VM name: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit and ending with a letter, digit or '_'
"#);
        assert_eq!(room.sim.stats().requests, before);
    })
    .await
}

/// Every command validates its options before it acknowledges (or, for `audit` and
/// `reset-password`, before it looks anything up): a VM option that cannot name a VM is the
/// first response, private, in the same words for every command, and a bad option of
/// `open-rdp` or `sweep` likewise; Azure hears nothing.
#[tokio::test]
async fn every_command_answers_bad_input_before_acknowledging() {
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        let before = room.sim.stats().requests;
        for line in [
            r#"/rdp health "web 01!""#,
            r#"/rdp restart "web 01!""#,
            r#"/rdp redeploy "web 01!""#,
            r#"/rdp open-rdp "web 01!" 198.51.100.7"#,
            r#"/rdp open-rdp web-01 source:"no such source""#,
            r#"/rdp sweep from:"not an address""#,
            r#"/rdp check "web 01!""#,
            r#"/rdp guest "web 01!""#,
            r#"/rdp console "web 01!""#,
            r#"/rdp changes "web 01!""#,
            r#"/rdp watch "web 01!""#,
            r#"/rdp unwatch "web 01!""#,
            r#"/rdp history "web 01!""#,
            r#"/rdp audit vm:"web 01!""#,
            r#"/rdp reset-password "web 01!""#,
        ] {
            let reply = room.run(line).await.next_message().await;
            assert!(reply.private(), "{line}: {}", reply.text);
            assert!(!reply.deferred(), "{line}: answered, not deferred");
            if line.contains("web 01!") {
                // Validated as a VM's name, in the same words everywhere, before any lookup.
                assert!(
                    reply.text.contains("# Cannot look that up\n"),
                    "{line}: {}",
                    reply.text
                );
            }
            let mentions = &reply.raw.body()["data"]["allowed_mentions"]["parse"];
            assert!(
                mentions.as_array().is_some_and(Vec::is_empty),
                "{line}: no mentions"
            );
        }
        assert_eq!(room.sim.stats().requests, before);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn azure_errors_are_explained_in_one_line() {
    within(async {
        let options = support::failing(vec![rdp_doctor::sim::Fault::new(
                "virtualMachines",
                rdp_doctor::sim::FaultKind::StatusBody(
                    403,
                    r#"{"error":{"code":"AuthorizationFailed","message":"The client 'x' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/read' over scope '/subscriptions/1'."}}"#.into(),
                ),
            )]);
        let room = Room::with_options(World::new().vm("web-01"), options).await;
        let failed = room.run("/rdp check web-01").await.final_edit().await;
        insta::assert_snapshot!(failed.text, @r#"
# Azure error
Azure denied access (HTTP 403, AuthorizationFailed): The client 'x' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/read' over scope '/subscriptions/1'.
"#);
        // One failing command never stops the bot.
        let help = room.run("/rdp help").await.next_message().await;
        assert!(!help.text.is_empty());
    })
    .await
}

#[tokio::test]
async fn autocomplete_offers_at_most_25_names_prefix_first_without_waiting_on_azure() {
    within(async {
        let world = support::numbered_vms(World::new().vm("db-web"), "web", 30);
        let room = Room::start(world).await;
        room.vms_listed(31).await;
        let before = room.sim.stats().requests;
        let choices = room.as_user(&room.alice).suggestions("check", "web").await;
        assert_eq!(choices.len(), 25);
        assert!(choices.iter().all(|c| c.starts_with("web-")), "{choices:?}");
        assert_eq!(
            room.sim.stats().requests,
            before,
            "autocomplete never calls Azure"
        );
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn health_console_explain_and_help() {
    within(async {
        let room = Room::start(World::new().vm("db-01").health(
            "Unavailable",
            "We're sorry, we couldn't automatically recover your virtual machine",
        ))
        .await;
        let health = room.run("/rdp health db-01").await.final_edit().await;
        insta::assert_snapshot!(health.text, @r#"
# ❌ db-01: Resource Health is Available
Resource group **rg-web** · subscription `11111111-1111-1111-1111-111111111111`

Resource Health: Unavailable: We're sorry, we couldn't automatically recover your virtual machine
"#);

        let console = room.run("/rdp console db-01").await.final_edit().await;
        assert!(console
            .raw
            .files
            .iter()
            .any(|(n, _, _)| n.ends_with(".png")));
        assert!(console.text.contains("Serial log"), "{}", console.text);

        let explained = room
            .run(r#"/rdp explain error:"Your credentials did not work""#)
            .await
            .next_message()
            .await;
        assert!(!explained.deferred(), "answered at once");
        insta::assert_snapshot!(explained.text, @r#"
# Windows Security error: Your credentials did not work.
## Cause
The VM cannot validate the account name and password: a wrong password, the wrong user name format, or a local account that was turned into a domain account when the VM was promoted to a domain controller.
## Fix
Use `VMNAME\user` (or `.\user`) for a local account and `DOMAIN\user` for a domain account. If the VM became a domain controller, sign in as `DOMAIN\user` with the old password. If you don't know the password, reset it (action `reset-password`; not on domain controllers).
[Microsoft's article](https://learn.microsoft.com/en-us/troubleshoot/azure/virtual-machines/windows/troubleshoot-specific-rdp-errors#wincred)
## Checks and fixes
Fixes: `reset-password`
"#);

        let help = room.run("/rdp help").await.next_message().await;
        assert!(help.private(), "{}", help.text);
        room.assert_clean();
    })
    .await
}

/// `/rdp explain` with what people paste: the dialog's title, curly apostrophes and the code
/// line find the message and name the checks and fixes; a misspelt message gets the closest.
#[tokio::test]
async fn explain_answers_pastes_with_the_checks_and_fixes() {
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        let explained = room
            .run(r#"/rdp explain error:"Remote Desktop Connection  We couldn’t connect to the remote PC. Make sure the PC is turned on. Error code: 0x204 Extended error code: 0x0""#)
            .await
            .next_message()
            .await;
        assert!(!explained.deferred(), "answered at once");
        insta::assert_snapshot!(explained.text, @r#"
# We couldn't connect to the remote PC. Make sure the PC is turned on and connected to the network, and that remote access is enabled. Error code: 0x204
## Cause
Code 0x204 (516) is a Windows Sockets connect failure: the client never got a TCP connection to the RDP port. The VM is stopped or has no public IP, the NSG or a route drops the traffic, the guest firewall blocks it, or nothing listens on the port (TermService stopped, listener moved).
## Fix
Run `rdp-doctor check VM --from YOUR_IP` for the power state, public IP, NSG and the network path, then `--guest` for the listener, firewall and service. Open the port (fix `open-rdp-port`), remove a route that sends the reply elsewhere (fix `remove-route`), enable the firewall rule (fix `enable-firewall-rdp`), start TermService (fix `start-termservice`) or move the listener back to 3389 (fix `reset-rdp-port`).
[Microsoft's article](https://learn.microsoft.com/en-us/troubleshoot/azure/virtual-machines/windows/troubleshoot-rdp-connection)
## Checks and fixes
Checks: `vm-status`, `public-ip`, `nsg`, `network-path`, `guest-listener`, `guest-firewall`, `guest-service` (run `/rdp check vm from:your-ip` and `/rdp guest vm`)
Fixes: `open-rdp-port`, `remove-route`, `enable-firewall-rdp`, `start-termservice`, `reset-rdp-port`
"#);

        let by_code = room
            .run(r#"/rdp explain error:"Because of a protocol error (code: 0x112f), the remote session will be disconnected.""#)
            .await
            .next_message()
            .await;
        assert!(
            by_code.text.starts_with("# Because of a protocol error"),
            "{}",
            by_code.text
        );

        let none = room
            .run(r#"/rdp explain error:"the certficate is not from a trusted authority""#)
            .await
            .next_message()
            .await;
        insta::assert_snapshot!(none.text, @r#"
# No known Remote Desktop client error matches
> the certficate is not from a trusted authority

Paste the message as the dialog shows it (a sentence of it is enough), or its error code such as `0x204`. `/rdp check` runs the runbook's checks on a VM instead.

**The closest known messages**
• The remote computer could not be authenticated due to problems with its security certificate. The certificate is not from a trusted certifying authority.
• Certificate errors: Name mismatch. Requested remote computer: <address>. Name in the certificate from the remote computer: <name>.
• An authentication error has occurred. The Local Security Authority cannot be contacted.
"#);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn a_gateway_drop_mid_check_resumes_and_the_check_finishes() {
    within(async {
        let options = support::slowed(Duration::from_millis(300));
        let room = Room::with_options(World::new().vm("web-01"), options).await;
        let check = room.run("/rdp check web-01").await;
        check.next_message().await;
        room.discord.drop_gateway().await;
        let report = check.final_edit().await;
        let title = report.text.lines().next().unwrap_or("");
        assert!(title.contains("nothing found"), "{}", report.text);
        room.discord
            .wait_resumed(1, WAIT)
            .await
            .expect("the bot resumed its session");
        // Dispatches flow after the resume.
        let help = room.run("/rdp help").await.next_message().await;
        assert!(help.private(), "{}", help.text);
    })
    .await
}

#[tokio::test]
async fn an_expired_token_falls_back_to_a_channel_message() {
    within(async {
        let options = support::slowed(Duration::from_millis(200));
        let room = Room::with_options(World::new().vm("web-01"), options).await;
        let check = room.run("/rdp check web-01").await;
        check.next_message().await;
        room.discord.expire_token(&check.i);
        // Not on the interaction any more: the report is a message in the channel.
        let posted = room.next_message().await;
        assert_eq!(
            posted.raw.route,
            routes::CHANNEL_MESSAGES,
            "{}",
            posted.text
        );
        assert!(posted.raw.path.contains(&CHANNEL_ID.to_string()));
        assert!(posted.text.contains("web-01"), "{}", posted.text);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn the_bot_binary_exits_2_on_a_missing_or_rejected_token() {
    within(async {
        let discord = FakeDiscord::start().await;
        let run = |token: Option<&str>| {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"));
            cmd.args(["bot", "--simulate"])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("DISCORD_API_URL", discord.url())
                .env("DISCORD_GUILD_ID", GUILD_ID.to_string())
                .kill_on_drop(true);
            if let Some(token) = token {
                cmd.env("DISCORD_TOKEN", token);
            }
            cmd.output()
        };
        let rejected = run(Some("not-the-token")).await.expect("runs");
        assert_eq!(rejected.status.code(), Some(2));
        let err = String::from_utf8_lossy(&rejected.stderr);
        assert!(err.contains("DISCORD_TOKEN was rejected"), "{err}");
        assert!(!err.contains("not-the-token"), "the token is not echoed");
        let missing = run(None).await.expect("runs");
        assert_eq!(missing.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&missing.stderr).contains("DISCORD_TOKEN is not set"));
    })
    .await
}

#[tokio::test]
async fn the_bot_shuts_down_cleanly_on_sigterm() {
    within(async {
        let discord = FakeDiscord::start().await;
        let mut bot = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"))
            .args(["bot", "--simulate"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DISCORD_TOKEN", TOKEN)
            .env("DISCORD_API_URL", discord.url())
            .env("DISCORD_GUILD_ID", GUILD_ID.to_string())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("bot starts");
        discord.wait_ready(WAIT).await.expect("ready");
        let status = support::sigterm(&mut bot).await;
        assert_eq!(status.code(), Some(0));
        let mut log = String::new();
        use tokio::io::AsyncReadExt;
        bot.stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .await
            .unwrap();
        assert_eq!(log.matches("rdp-doctor ready as").count(), 1, "{log}");
        assert!(log.contains("shutting down"), "{log}");
    })
    .await
}

/// rdp-doctor failing inside (here its database) is "internal error, reference X" to the
/// person, and the log line carries the same X; the person's own mistake stays in words.
#[tokio::test]
async fn an_internal_error_shows_a_reference_the_log_carries() {
    let (log, _guard) = support::ThreadLog::capture("warn");
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        room.store.close().await;
        let reply = room.run("/rdp audit").await.next_message().await;
        assert!(reply.private(), "{}", reply.text);
        let text = reply.text;
        let reference = text
            .split("Internal error, reference ")
            .nth(1)
            .and_then(|rest| rest.split('.').next())
            .unwrap_or_else(|| panic!("no reference in {text:?}"));
        assert_eq!(reference.len(), 8, "{text}");
        assert!(
            !text.contains("storage") && !text.contains("pool"),
            "details stay in the log: {text}"
        );
        let logged = log.text();
        let line = logged
            .lines()
            .find(|l| l.contains(&format!("reference={reference}")))
            .unwrap_or_else(|| panic!("no log line with reference {reference}:\n{logged}"));
        assert!(
            line.contains("ERROR") && line.contains("storage failed"),
            "{line}"
        );
        // The person's mistake is still said in words, with no reference.
        let typo = room.run("/rdp check web_01;rm").await.next_message().await;
        assert!(typo.private(), "{}", typo.text);
        insta::assert_snapshot!(typo.text, @r#"
(only you can see this)
# Cannot look that up
"web_01;rm" is not a valid Azure VM name: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit and ending with a letter, digit or '_'
"#);
        room.assert_clean();
    })
    .await
}

/// A click whose custom id rdp-doctor did not write (garbled, forged, a form's id on a button)
/// is refused privately and reaches no ARM write, even from an admin under a real fix button.
#[tokio::test]
async fn a_garbled_custom_id_is_refused_and_writes_nothing() {
    within(async {
        let room = Room::start(World::new().vm("sql-01").stopped()).await;
        let report = room.run("/rdp check sql-01").await.final_edit().await;
        let fix = support::discord::custom_ids(report.raw.body())
            .into_iter()
            .find(|id| id.starts_with("rdp:fix:start:"))
            .expect("a start button under the report");
        let key = fix.trim_start_matches("rdp:fix:start:").to_string();
        let admin = room.as_user(&User::new(4010, "ada", &[5002]));
        let before = room.sim.stats();
        let garbled = [
            format!("rdp:fix:start:{}", key.to_uppercase()),
            format!("rdp:fix:start:{key}x"),
            format!("rdp:fix:start:{key}:"),
            format!("rdp:fix:Start:{key}"),
            format!("rdp:fix:reboot:{key}"),
            format!("rdp:fix:{key}"),
            format!("rdp:pw:{key}"),
            "rdp:confirm:not-a-confirmation".to_string(),
            "rdp:confirm:".to_string(),
            "rdp:sweep:stop:zz".to_string(),
            "rdp:".to_string(),
            "reset-rdp:sql-01".to_string(),
        ];
        for id in &garbled {
            let refused = admin.click_id(&report, id).await.next_message().await;
            assert!(refused.private(), "{id:?}: {}", refused.text);
            assert!(
                refused.text.contains("not one rdp-doctor knows")
                    && refused.text.contains("nothing was done"),
                "{id:?}: {}",
                refused.text
            );
        }
        let after = room.sim.stats();
        let writes: Vec<_> = after
            .log
            .iter()
            .skip(before.log.len())
            // ARM's writes: anything but a GET under /subscriptions, except the two read POSTs.
            .filter(|r| {
                r.path.starts_with("/subscriptions/")
                    && r.method != "GET"
                    && !r.path.contains("effectiveNetworkSecurityGroups")
                    && !r.path.contains("retrieveBootDiagnosticsData")
            })
            .collect();
        assert!(
            writes.is_empty(),
            "ARM writes after garbled clicks: {writes:?}"
        );
        assert_eq!(after.requests, before.requests, "nothing reached Azure");
        // The real button still works: the refusals were about the ids, not the person.
        let prompt = admin
            .click_id(&report, &fix)
            .await
            .edit_saying("[Confirm]")
            .await;
        assert!(prompt.text.contains("[Cancel]"), "{}", prompt.text);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn a_fix_button_asks_then_runs_once_and_shows_what_changed() {
    within(async {
        let room = Room::start(World::new().vm("sql-01").stopped()).await;
        let report = room.run("/rdp check sql-01").await.final_edit().await;
        let fix = "Start the VM";
        assert!(report.text.contains(&format!("[{fix}]")), "{}", report.text);

        // Someone without a role is refused, privately, with what is missing: as the first
        // answer, since nobody reads a VM without a grant.
        let mallory = User::new(4999, "mallory", &[]);
        let denied = room
            .as_user(&mallory)
            .click(&report, fix)
            .await
            .refused()
            .await;
        insta::assert_snapshot!(denied.text, @r#"
(only you can see this)
# Not allowed
Permission denied: you need the `read` permission on subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web (you have none)
"#);

        // An operator gets the prompt with the consequences from the VM's real configuration.
        let prompt = room
            .click(&report, fix)
            .await
            .edit_saying("[Confirm]")
            .await;
        insta::assert_snapshot!(prompt.text, @r#"
# Confirm: Start sql-01?
VM **sql-01** · resource group `rg-web` · subscription `11111111-1111-1111-1111-111111111111`

• Compute billing starts again as soon as it runs
• Windows needs a few minutes to boot before Remote Desktop answers
• Public IP 20.1.2.3 is static and stays

Requested by alice. Expires <time>.
[Confirm] [Cancel]
"#);

        // Two confirms of one prompt: exactly one start reaches Azure.
        let bob = User::new(4002, "bob", &[5001]);
        let first = room.click(&prompt, "Confirm").await;
        let second = room.as_user(&bob).click(&prompt, "Confirm").await;
        first.answer().await;
        second.answer().await;
        let done = loop {
            let edit = room.next_edit().await;
            if edit.text.contains("succeeded") || edit.text.contains("failed") {
                break edit;
            }
        };
        // Either click may win the race; the winner's name is the only difference.
        let winner = if done.text.contains("Confirmed by bob") {
            "bob"
        } else {
            "alice"
        };
        insta::assert_snapshot!(done.text.replace(winner, "<winner>"), @r#"
# ✅ start of sql-01 succeeded
Confirmed by <winner>.

Checked again: verdict **ok**.
• vm-status: fail → pass (VM is running (provisioning succeeded))
• vm-agent: skip → pass (Guest agent is Ready (version 2.7.41491.949))
• nsg: skip → pass (TCP 3389 from the Internet is allowed by rule allow-rdp (priority 1000) in NSG sql-01-nsg)
• network-path: skip → pass (Replies to the Internet go to the Internet (system route 0.0.0.0/0))

After each step, try to connect again.
"#);
        let loser = loop {
            let message = room.next_message().await;
            if message.private() {
                break message;
            }
        };
        insta::assert_snapshot!(loser.text.replace(winner, "<winner>"), @r#"
(only you can see this)
# Cannot do that
This confirmation was already used: confirmed by <winner>.
"#);
        let starts = room
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method == "POST" && e.path.contains("/start?"))
            .count();
        assert_eq!(starts, 1);
        room.assert_clean();
    })
    .await
}

/// A guest fix's button (`rdp:fix:enable-rdp:<vm key>`, as under a guest report) leads to the
/// same prompt → Confirm → progress → outcome as every fix: the script runs once through Run
/// Command and the guest is read again.
#[tokio::test]
async fn a_guest_fix_button_asks_then_runs_the_script_once_and_reads_the_guest_again() {
    within(async {
        let room = Room::start(World::new().vm("rdp-off-01").rdp_disabled()).await;
        let report = room.run("/rdp check rdp-off-01").await.final_edit().await;
        let id = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/rdp-off-01";
        let button = format!("rdp:fix:enable-rdp:{}", rdp_doctor::discord::vm_key(id));
        let prompt = room
            .as_user(&room.alice)
            .click_id(&report, &button)
            .await
            .edit_saying("[Confirm]")
            .await;
        insta::assert_snapshot!(prompt.text, @r#"
# Confirm: Enable Remote Desktop inside rdp-off-01?
VM **rdp-off-01** · resource group `rg-web` · subscription `11111111-1111-1111-1111-111111111111`

• Sets fDenyTSConnections to 0 in HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server and removes the policy value HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services\fDenyTSConnections
• A domain group policy that turns Remote Desktop off sets the policy value again at its next refresh: change the GPO too
• Signed-in sessions and running services are left alone
• Runs a PowerShell script as SYSTEM inside rdp-off-01 through Run Command; rdp-off-01 takes no other change until it ends
• To undo: `Set-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server' -Name fDenyTSConnections -Value 1`

Requested by alice. Expires <time>.
[Confirm] [Cancel]
"#);
        let confirmed = room.click(&prompt, "Confirm").await;
        confirmed.answer().await;
        let mut progress = Vec::new();
        let done = loop {
            let edit = room.next_edit().await;
            if edit.text.contains("succeeded") || edit.text.contains("failed") {
                break edit;
            }
            progress.push(edit.text);
        };
        assert!(
            progress
                .iter()
                .any(|p| p.contains("enable-rdp of rdp-off-01 confirmed by alice; sent to Azure.")),
            "{progress:?}"
        );
        insta::assert_snapshot!(done.text, @r#"
# ✅ enable-rdp of rdp-off-01 succeeded
Confirmed by alice.

Checked again: verdict **ok**.
• fDenyTSConnections set to 0 (was 1)
• guest-rdp: now passes (Remote Desktop is enabled (fDenyTSConnections = 0))

After each step, try to connect again.
"#);
        let run_commands = room
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method == "POST" && e.path.contains("/runCommand?"))
            .count();
        assert_eq!(run_commands, 2, "the script once, then the re-check's read");
        assert!(room.sim.world().vm("rdp-off-01").rdp_enabled());
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn redeploy_from_a_command_needs_a_second_admin() {
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        let ada = User::new(4010, "ada", &[5002]);
        let grace = User::new(4011, "grace", &[5002]);
        let prompt = room
            .as_user(&ada)
            .run("/rdp redeploy web-01")
            .await
            .edit_saying("[Confirm]")
            .await;
        insta::assert_snapshot!(prompt.text, @r#"
# Confirm: Redeploy web-01 to a new host?
VM **web-01** · resource group `rg-web` · subscription `11111111-1111-1111-1111-111111111111`

• The VM is shut down, moved to a new Azure host and started again
• Data on the temporary disk (usually D:) is lost
• Signed-in users are disconnected and unsaved work is lost
• Public IP 20.1.2.3 is static and stays
• Private IP 10.0.1.4 is dynamic and may change

Requested by ada. Expires <time>. **Needs a second person**: someone other than the requester must confirm.
[Confirm] [Cancel]
"#);
        let mine = room.as_user(&ada).click(&prompt, "Confirm").await;
        mine.answer().await;
        let refusal = mine.next_message().await;
        assert!(refusal.private());
        insta::assert_snapshot!(refusal.text, @r#"
(only you can see this)
# Cannot do that
This fix needs a second person: someone other than ada must confirm it.
"#);
        let theirs = room.as_user(&grace).click(&prompt, "Confirm").await;
        let done = theirs.edit_saying("succeeded").await;
        assert_eq!(
            done.message_id, prompt.message_id,
            "the prompt becomes the outcome"
        );
        insta::assert_snapshot!(done.text, @r#"
# ✅ redeploy of web-01 succeeded
Confirmed by grace.

Checked again: verdict **ok**.
No check changed status.

After each step, try to connect again.
"#);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn reset_password_opens_a_form_and_the_password_never_reaches_discord() {
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        let ada = User::new(4010, "ada", &[5002]);
        let admin = room.as_user(&ada);
        let secret = "Sup3r-Secret-Passw0rd!";
        let form = admin.run("/rdp reset-password web-01").await;
        insta::assert_snapshot!(form.next_message().await.text, @r#"
[form: Reset a password on web-01]
Local user name: ____
New password (12-123 characters): ____
Repeat the new password: ____
"#);
        let prompt = admin
            .set_password(&form, "opsadmin", secret)
            .await
            .edit_saying("[Confirm]")
            .await;
        let title = prompt.text.lines().next().unwrap_or("");
        assert!(title.contains("opsadmin"), "{}", prompt.text);
        let confirmed = admin.click(&prompt, "Confirm").await;
        loop {
            let edit = confirmed.next_edit().await;
            if edit
                .text
                .lines()
                .next()
                .is_some_and(|t| t.contains("succeeded"))
            {
                break;
            }
        }
        assert_eq!(room.sim.world().vm("web-01").password_resets(), 1);
        for request in room.discord.requests() {
            let body = request
                .json
                .as_ref()
                .map(|j| j.to_string())
                .unwrap_or_default();
            assert!(
                !body.contains(secret),
                "the password went to Discord: {} {}",
                request.method,
                request.path
            );
        }
        assert!(!serde_json::to_string(&room.sim.stats())
            .unwrap()
            .contains(secret));
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn killing_the_bot_mid_redeploy_then_starting_it_again_posts_the_outcome() {
    within(async {
        let world = World::new().vm("web-01");
        let secret = world.client_secret.clone();
        let sim = Simulator::start(
            "127.0.0.1:0",
            world,
            support::quick(SimOptions {
                lro_polls: 3,
                retry_after_secs: 1,
                ..SimOptions::fast()
            }),
        )
        .await
        .unwrap();
        let discord = FakeDiscord::start().await;
        let dir = std::env::temp_dir().join(format!("rdp-doctor-kill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("rdp-doctor.toml"),
            format!(
                // A short lease: the restarted bot takes the operation over once the killed one's
                // lapses (the default, 30 s, would outlast the test).
                "{}[[policy.grant]]\ncli_user = \"{}\"\nlevel = \"read\"\nscope = \"*\"\n[replicas]\nlease_secs = 2\n",
                room_config("request_timeout_secs = 5\nmax_retries = 1"),
                rdp_doctor::cli::os_user()
            ),
        )
        .unwrap();
        let database = format!("sqlite://{}", dir.join("bot.db").display());
        let spawn = || {
            discord
                .bot_command(&sim, &dir.join("rdp-doctor.toml"), &database)
                .env("AZURE_CLIENT_SECRET", &secret)
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("bot starts")
        };
        let mut first = spawn();
        discord.wait_ready(WAIT).await.expect("ready");
        let ada = User {
            id: 4010,
            name: "ada".into(),
            roles: vec![5002],
        };
        let grace = User {
            id: 4011,
            name: "grace".into(),
            roles: vec![5002],
        };
        let i = discord
            .slash(
                &ada,
                "rdp",
                &["redeploy"],
                json!([{"name": "vm", "type": 3, "value": "web-01"}]),
            )
            .await;
        discord.callback(&i, WAIT).await.expect("ack");
        let confirm = loop {
            let edit = discord.next_edit(&i, WAIT).await.expect("prompt");
            if let Some(id) = support::discord::custom_ids(edit.body())
                .into_iter()
                .find(|b| b.starts_with("rdp:confirm:"))
            {
                break id;
            }
        };
        let prompt = discord.last_message_id().unwrap();
        let click = discord.component(&grace, prompt, &confirm, &[]).await;
        discord.callback(&click, WAIT).await.expect("ack");
        support::until("the redeploy to reach Azure", sim.watch_answers(), || {
            sim.stats()
                .log
                .iter()
                .any(|e| e.method == "POST" && e.path.contains("/redeploy"))
        })
        .await;
        // Kill only once the operation URL is stored, as a crash after Azure accepted would be:
        // the bot stores it between Azure's answer and its first poll, so look at each answer.
        let store = support::store(Some(&dir.join("bot.db"))).await;
        support::until_async("the operation URL stored", sim.watch_answers(), || async {
            store
                .running_operations()
                .await
                .is_ok_and(|ops| ops.iter().any(|o| o.azure_url.is_some()))
        })
        .await;
        store.close().await;
        first.kill().await.expect("killed");
        let _ = first.wait().await;

        let mut second = spawn();
        let posted = discord
            .next_channel_message(Duration::from_secs(40))
            .await
            .expect("the outcome is posted");
        let body = posted.body().to_string();
        assert!(body.contains(rdp_doctor::discord::RESUMED), "{body}");
        assert!(body.contains("redeploy of web-01 succeeded"), "{body}");
        // The prompt that showed the progress no longer says "in progress": the restarted bot,
        // which never had the click's token, edited it to the outcome, its buttons gone.
        let shown = discord.message(prompt).expect("the prompt's message");
        assert!(
            shown["embeds"][0]["title"]
                .as_str()
                .is_some_and(|t| t.contains("redeploy of web-01 succeeded")),
            "{shown}"
        );
        assert!(support::discord::custom_ids(&shown).is_empty(), "{shown}");
        let redeploys = sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method == "POST" && e.path.contains("/redeploy"))
            .count();
        assert_eq!(redeploys, 1, "never sent twice");
        second.kill().await.ok();
        let _ = second.wait().await;
        // The audit log is intact across the crash.
        let audit = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"))
            .args(["audit", "--vm", "web-01"])
            .env_clear()
            .env("RDP_DOCTOR_CONFIG", dir.join("rdp-doctor.toml"))
            .env(
                "RDP_DOCTOR_DATABASE_URL",
                format!("sqlite://{}", dir.join("bot.db").display()),
            )
            .output()
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&audit.stdout).to_string();
        assert!(
            log.contains("redeploy") && log.contains("requested"),
            "{log}"
        );
        assert!(log.contains("confirmed redeploy"), "{log}");
        assert!(log.contains("succeeded"), "{log}");
        let _ = std::fs::remove_dir_all(&dir);
        drop(discord);
    })
    .await
}

#[tokio::test]
async fn restart_reset_config_and_open_rdp_from_commands() {
    within(async {
        let room = Room::start(
            World::new()
                .vm("web-01")
                .rdp_disabled()
                .vm("web-02")
                .nsg_denies_rdp(),
        )
        .await;
        let ada = User::new(4010, "ada", &[5002]);
        let grace = User::new(4011, "grace", &[5002]);
        let mut outcomes = Vec::new();
        for line in [
            "/rdp restart web-01",
            "/rdp reset-config web-01",
            "/rdp open-rdp web-02 source:198.51.100.7",
        ] {
            let prompt = room
                .as_user(&ada)
                .run(line)
                .await
                .edit_saying("[Confirm]")
                .await;
            // open-rdp is a two-person fix by default: grace confirms everything.
            let click = room.as_user(&grace).click(&prompt, "Confirm").await;
            let outcome = loop {
                let edit = click.next_edit().await;
                let title = edit.text.lines().next().unwrap_or("").to_string();
                if title.contains("succeeded") || title.contains("failed") {
                    break title;
                }
            };
            outcomes.push(format!("{line}\n  {outcome}"));
        }
        insta::assert_snapshot!(outcomes.join("\n"), @r#"
/rdp restart web-01
  # ✅ restart of web-01 succeeded
/rdp reset-config web-01
  # ✅ reset-rdp-config of web-01 succeeded
/rdp open-rdp web-02 source:198.51.100.7
  # ✅ open-rdp-port of web-02 succeeded
"#);
        assert!(room.sim.world().vm("web-01").rdp_enabled());
        room.assert_clean();
    })
    .await
}

// ---- /rdp sweep --------------------------------------------------------------------------

/// Runs of three or more lines alike but for a `vm-NNN` name, as the first, a count, the last:
/// a sweep's table of healthy VMs, for a snapshot.
fn elide_runs(text: &str) -> String {
    let numbered = regex::Regex::new(r"vm-\d{3}").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < lines.len() {
        let shape = numbered.replace_all(lines[start], "vm-NNN");
        let mut end = start + 1;
        while end < lines.len()
            && numbered.is_match(lines[start])
            && numbered.replace_all(lines[end], "vm-NNN") == shape
        {
            end += 1;
        }
        if end - start >= 3 {
            out.push(lines[start].to_string());
            out.push(format!("⋮ ({} more like these)", end - start - 2));
            out.push(lines[end - 1].to_string());
        } else {
            out.extend(lines[start..end].iter().map(|l| l.to_string()));
        }
        start = end;
    }
    out.join("\n")
}

#[tokio::test]
async fn sweep_posts_progress_then_one_summary_worst_first_with_a_details_menu() {
    within(async {
        let world = support::numbered_vms(World::new().page_size(50), "vm", 118);
        let world = world
            .vm("web-02")
            .nsg_denies_rdp()
            .vm("web-03")
            .deallocated()
            .vm("db-01")
            .in_group("rg-data");
        let room = Room::start(world).await;
        let sweep = room.run("/rdp sweep resource-group:rg-web").await;
        insta::assert_snapshot!(sweep.next_message().await.text, @"rdp-doctor is thinking…");
        // Progress edits, each with its Cancel button, then the summary.
        let mut progress = 0;
        let summary = loop {
            let edit = sweep.next_edit().await;
            if edit.text.starts_with("# Sweep of")
                && edit.text.lines().next().unwrap().contains(':')
            {
                break edit;
            }
            if edit.text.contains("Checked") {
                assert!(edit.text.contains("[Cancel sweep]"), "{}", edit.text);
                progress += 1;
            }
        };
        assert!(progress >= 1, "progress was shown");
        let main = embed(&summary.raw, 0);
        assert_eq!(main["color"], 0xE74C3C);
        let text = main["description"].as_str().unwrap();
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("**")).collect();
        assert!(rows.len() < 120, "the embed holds part of the table");
        assert!(text.len() <= 4096);
        // The worst first; the 118 healthy rows in between are elided here, not in Discord.
        let arm_requests = regex::Regex::new(r"\d+ ARM requests").unwrap();
        let shown = arm_requests
            .replace(&elide_runs(&summary.text), "<n> ARM requests")
            .into_owned();
        insta::assert_snapshot!(shown, @r#"
# Sweep of resource group rg-web: 2 of 120 VMs with problems
❌ 2 with problems · ❗ 0 could not be checked fully · ✅ 118 ok

**web-02** · ❌ TCP 3389 from the Internet is denied by rule deny-rdp-internet (priority 200) in NSG web-02-snet-nsg
**web-03** · ❌ VM is deallocated: nothing answers on 3389 until it is started
**vm-000** · ✅ all checks pass
⋮ (89 more like these)
**vm-090** · ✅ all checks pass
…and 27 more (0 not ok): the whole table is attached.

Pick a VM below for its full report and the fix.
-- <n> ARM requests · <elapsed> · 0 throttled · <n> paced
[Full report of a VM… ▾]
  · ❌ web-02
  · ❌ web-03
  · ✅ vm-000
⋮ (21 more like these)
  · ✅ vm-022
[Another VM…]
[attachment sweep.tsv]
"#);
        let (name, _, table) = summary.raw.files.first().expect("the table attached");
        assert_eq!(name, "sweep.tsv");
        let table = String::from_utf8(table.clone()).unwrap();
        assert_eq!(table.lines().count(), 120);
        assert!(table
            .lines()
            .next()
            .unwrap()
            .starts_with("rg-web\tweb-02\tproblems\tfail nsg:"));
        assert!(!table.contains("db-01"));
        room.assert_clean();

        // Picking a VM posts its full report under the summary.
        let pick = room.pick(&summary, "❌ web-02").await;
        insta::assert_snapshot!(pick.next_message().await.text, @"rdp-doctor is thinking…");
        let report = pick.final_edit().await;
        assert!(
            report.text.starts_with("# web-02: problems found\n"),
            "{}",
            report.text
        );

        // Any other swept VM, by name, through a form.
        let opened = room.click(&summary, "Another VM…").await;
        insta::assert_snapshot!(opened.next_message().await.text, @r#"
[form: Full report of a swept VM]
VM name: ____
"#);
        let unknown = room
            .submit(&opened, &[("vm", "db-01")])
            .await
            .refused()
            .await;
        insta::assert_snapshot!(unknown.text, @r#"
(only you can see this)
# Not in this sweep
No VM named "db-01" was checked by this sweep.
"#);
        let named = room.submit(&opened, &[("vm", "VM-100")]).await;
        insta::assert_snapshot!(named.next_message().await.text, @"rdp-doctor is thinking…");
        let report = named.final_edit().await;
        assert!(
            report
                .text
                .starts_with("# vm-100: nothing found that blocks Remote Desktop\n"),
            "{}",
            report.text
        );
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn only_the_person_who_started_a_sweep_can_cancel_it() {
    within(async {
        let world = support::numbered_vms(World::new().page_size(100), "vm", 40);
        let options = support::slowed(Duration::from_millis(200));
        let room = Room::with_options(world, options).await;
        // A subscription that is not a GUID never reaches an Azure URL.
        let refused = room
            .run("/rdp sweep subscription:../../x")
            .await
            .next_message()
            .await;
        assert_eq!(refused.raw.route, routes::CALLBACK, "the first answer");
        insta::assert_snapshot!(refused.text, @r#"
(only you can see this)
# That is not a subscription id
`subscription` is a subscription's id, a GUID such as 11111111-2222-3333-4444-555555555555.
"#);
        let sweep = room.run("/rdp sweep resource-group:rg-web").await;
        let progress = sweep.edit_saying("[Cancel sweep]").await;
        let bob = User::new(4002, "bob", &[5001]);
        let refused = room
            .as_user(&bob)
            .click(&progress, "Cancel sweep")
            .await
            .next_message()
            .await;
        assert_eq!(refused.raw.route, routes::CALLBACK, "the first answer");
        insta::assert_snapshot!(refused.text, @r#"
(only you can see this)
# Not your sweep
Only <@4001>, who started this sweep, can cancel it.
"#);
        let stopped = room.click(&progress, "Cancel sweep").await;
        assert_eq!(
            stopped.answer().await.body()["type"],
            6,
            "acknowledged in place"
        );
        let summary = loop {
            let edit = sweep.next_edit().await;
            if edit
                .text
                .lines()
                .next()
                .is_some_and(|title| title.contains(':'))
            {
                break edit;
            }
        };
        let title = summary.text.lines().next().unwrap();
        assert!(
            title.starts_with("# Sweep of resource group rg-web: cancelled after")
                && title.ends_with("of 40 VMs"),
            "{title}"
        );
        // Cancel again once it is over, and a sweep no replica runs (asked through the door,
        // which finds no claim by that handle): both are over.
        let stop = support::discord::custom_ids(progress.raw.body())
            .into_iter()
            .find(|id| id.starts_with("rdp:sweep:stop:"))
            .expect("the Cancel button's id");
        for id in [stop.as_str(), "rdp:sweep:stop:0123456789abcdef"] {
            let seen = room
                .as_user(&room.alice)
                .click_id(&progress, id)
                .await
                .next_message()
                .await;
            assert_eq!(
                seen.text, "(only you can see this)\n# Already over\nThis sweep has finished.\n",
                "{id}"
            );
        }
        room.assert_clean();
    })
    .await
}

// ---- the door: fences, levels and scope -----------------------------------------------------

/// The label of the start button under a report.
fn start_label(report: &war_room::Seen) -> String {
    let start = regex::Regex::new(r"\[(Start[^\]]*)\]").unwrap();
    start
        .captures(&report.text)
        .map(|c| c[1].to_string())
        .unwrap_or_else(|| panic!("no start button:\n{}", report.text))
}

const OTHER_GUILD: u64 = 1_180_000_000_000_000_077;
const DM_CHANNEL: u64 = 1_180_000_000_000_000_078;
const OTHER_CHANNEL: u64 = 1_180_000_000_000_000_079;

#[tokio::test]
async fn other_guilds_direct_messages_and_unlisted_channels_are_refused_on_every_path() {
    within(async {
        let room = Room::start(World::new().vm("sql-01").stopped()).await;
        // A report with a fix button, from the home channel.
        let report = room.run("/rdp check sql-01").await.final_edit().await;
        assert!(
            report.text.contains("[Start"),
            "a start button:\n{}",
            report.text
        );
        let before = room.sim.stats().requests;
        for (origin, says) in [
            (
                Origin::Guild {
                    guild: OTHER_GUILD,
                    channel: CHANNEL_ID,
                },
                "does not serve this server",
            ),
            (
                Origin::DirectMessage {
                    channel: DM_CHANNEL,
                },
                "does not answer direct messages",
            ),
            (
                Origin::Guild {
                    guild: GUILD_ID,
                    channel: OTHER_CHANNEL,
                },
                "only answers in the channels",
            ),
        ] {
            room.discord.set_origin(origin);
            let slash = room.run("/rdp check sql-01").await.refused().await;
            assert!(
                slash.text.contains(says),
                "slash from {origin:?}: {}",
                slash.text
            );
            let start = start_label(&report);
            let click = room.click(&report, &start).await.refused().await;
            assert!(
                click.text.contains(says),
                "button from {origin:?}: {}",
                click.text
            );
            let choices = room.as_user(&room.alice).suggestions("check", "sql").await;
            assert_eq!(choices, Vec::<String>::new(), "{origin:?}");
        }
        // A form opened at home but submitted from a direct message is refused too.
        room.discord.set_origin(Origin::HOME);
        let admin = room.as_user(&User::new(4010, "ada", &[5002]));
        let form = admin.run("/rdp reset-password sql-01").await;
        let opened = form.next_message().await;
        assert!(opened.text.starts_with("[form:"), "{}", opened.text);
        room.discord.set_origin(Origin::DirectMessage {
            channel: DM_CHANNEL,
        });
        let secret = "Sup3r-Secret-Passw0rd!";
        let submitted = admin
            .set_password(&form, "opsadmin", secret)
            .await
            .refused()
            .await;
        insta::assert_snapshot!(submitted.text, @r#"
(only you can see this)
# Not here
rdp-doctor does not answer direct messages: use it in your team's channel.
"#);
        assert_eq!(room.sim.stats().requests, before, "nothing reached Azure");
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn without_a_grant_nobody_reads_a_vm_lists_vms_sweeps_or_reads_the_audit_log() {
    within(async {
        let room = Room::start(World::new().vm("web-01").vm("web-02")).await;
        let mallory = User::new(4999, "mallory", &[]);
        let stranger = room.as_user(&mallory);
        let before = room.sim.stats().requests;
        for sub in ["check", "health", "console"] {
            let reply = stranger
                .run(&format!("/rdp {sub} web-01"))
                .await
                .whispered()
                .await;
            assert!(
                reply.text.contains("you need the `read` permission"),
                "{sub}: {}",
                reply.text
            );
        }
        let choices = stranger.suggestions("check", "web").await;
        assert_eq!(choices, Vec::<String>::new());
        let audit = stranger.run("/rdp audit").await.refused().await;
        insta::assert_snapshot!(audit.text, @r#"
(only you can see this)
# Not allowed
Permission denied: you need the `read` permission on any VM rdp-doctor serves (you have none)
"#);
        let sweep = stranger
            .run("/rdp sweep resource-group:rg-web")
            .await
            .whispered()
            .await;
        insta::assert_snapshot!(sweep.text, @r#"
(only you can see this)
# Cannot sweep that
Permission denied: you need the `operate` permission on subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web (you have none)
"#);
        assert_eq!(room.sim.stats().requests, before, "nothing reached Azure");
        room.assert_clean();
    })
    .await
}

/// The room's policy, and role 5004 reads one resource group.
fn scoped_policy() -> String {
    format!(
        "{ROOM_POLICY}[[grant]]\ndiscord_role_id = 5004\nlevel = \"read\"\nscope = \"subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-api-east\"\n"
    )
}

#[tokio::test]
async fn people_see_find_and_pick_only_the_vms_they_may_read() {
    within(async {
        let room = Room::with_policy(
            World::new()
                .vm("web-01")
                .vm("api-01")
                .in_group("rg-api-east")
                .subscription("22222222-2222-2222-2222-222222222222")
                .vm("api-01")
                .in_group("rg-api-west"),
            Some(&scoped_policy()),
        )
        .await;
        room.vms_listed(3).await;
        let scoped = User::new(4020, "sam", &[5004]);
        let sam = room.as_user(&scoped);
        assert_eq!(
            sam.suggestions("check", "a").await,
            ["api-01 (rg-api-east)"]
        );
        let everyone = room.as_user(&room.alice).suggestions("check", "a").await;
        assert_eq!(everyone.len(), 2, "{everyone:?}");

        // The name two VMs share is the one the scoped reader may read: no menu.
        let report = sam.run("/rdp check api-01").await.final_edit().await;
        assert!(report.text.contains("rg-api-east"), "{}", report.text);
        // A VM outside the grant does not exist for them, not even as a suggestion.
        let unknown = sam.run("/rdp check web-01").await.whispered().await;
        insta::assert_snapshot!(unknown.text, @r#"
(only you can see this)
# Cannot find that VM
no VM named web-01 that you may read in subscriptions 11111111-1111-1111-1111-111111111111, 22222222-2222-2222-2222-222222222222
"#);
        // Its full id is refused before any request.
        let before = room.sim.stats().requests;
        let refused = sam
            .run("/rdp check /subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg-api-west/providers/Microsoft.Compute/virtualMachines/api-01")
            .await
            .whispered()
            .await;
        insta::assert_snapshot!(refused.text, @r#"
(only you can see this)
# Not allowed
Permission denied: you need the `read` permission on subscription/22222222-2222-2222-2222-222222222222/resourceGroup/rg-api-west (you have none)
"#);
        assert_eq!(room.sim.stats().requests, before);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn subscriptions_rdp_doctor_does_not_serve_are_refused_before_any_request() {
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        let before = room.sim.stats().requests;
        let check = room
            .run("/rdp check /subscriptions/33333333-3333-3333-3333-333333333333/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01")
            .await;
        let refused = check.whispered().await;
        insta::assert_snapshot!(refused.text, @r#"
(only you can see this)
# Not a subscription rdp-doctor serves
subscription 33333333-3333-3333-3333-333333333333 is not one rdp-doctor serves (it serves 11111111-1111-1111-1111-111111111111)
"#);
        let sweep = room
            .run("/rdp sweep subscription:33333333-3333-3333-3333-333333333333")
            .await;
        let refused = sweep.whispered().await;
        insta::assert_snapshot!(refused.text, @r#"
(only you can see this)
# Cannot sweep that
subscription 33333333-3333-3333-3333-333333333333 is not one rdp-doctor serves (it serves 11111111-1111-1111-1111-111111111111)
"#);
        assert_eq!(room.sim.stats().requests, before);
        room.assert_clean();
    })
    .await
}

/// The room's policy (role 5002 administers everything), and role 5005 administers rg-web only.
fn nsg_policy() -> String {
    format!(
        "{ROOM_POLICY}[[grant]]\ndiscord_role_id = 5005\nlevel = \"admin\"\nscope = \"subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web\"\n"
    )
}

#[tokio::test]
async fn open_rdp_is_authorised_on_the_nsg_it_changes_and_a_changed_plan_runs_nothing() {
    within(async {
        // web-02's subnet NSG, which denies 3389, lives in a shared network resource group.
        let mut world = World::new().vm("web-02").nsg_denies_rdp();
        for nsg in &mut world.nsgs {
            if nsg.name == "web-02-snet-nsg" {
                nsg.resource_group = "rg-network".into();
            }
        }
        let room = Room::with_policy(world, Some(&nsg_policy())).await;
        let rule_puts = || {
            room.sim
                .stats()
                .log
                .iter()
                .filter(|e| e.method == "PUT" && e.path.contains("/securityRules/"))
                .count()
        };
        // Admin of the VM's group, not of the NSG's: refused, naming the NSG's scope.
        let owner = User::new(4030, "olga", &[5005]);
        let refused = room
            .as_user(&owner)
            .run("/rdp open-rdp web-02 203.0.113.7")
            .await
            .whispered()
            .await;
        insta::assert_snapshot!(refused.text, @r#"
(only you can see this)
# Not allowed
Permission denied: you need the `admin` permission on subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-network (you have none)
"#);

        // An admin of both gets a prompt that names the VM fully.
        let ada = User::new(4010, "ada", &[5002]);
        let prompt = room
            .as_user(&ada)
            .run("/rdp open-rdp web-02 203.0.113.7")
            .await
            .edit_saying("[Confirm]")
            .await;
        assert!(
            prompt.text.contains("VM **web-02** · resource group `rg-web` · subscription `11111111-1111-1111-1111-111111111111`"),
            "{}",
            prompt.text
        );
        assert!(prompt.text.contains("at priority 199"), "{}", prompt.text);

        // Before anyone confirms, the deny rule moves up: the rule would need another priority.
        room.sim.world().update(|w| {
            for nsg in &mut w.nsgs {
                for rule in &mut nsg.rules {
                    if rule.name == "deny-rdp-internet" {
                        rule.priority = 150;
                    }
                }
            }
        });
        let bob = User::new(4011, "bob", &[5002]);
        let bob = room.as_user(&bob);
        let click = bob.click(&prompt, "Confirm").await;
        let fresh = loop {
            let message = click.next_message().await;
            if message.text.contains("[Confirm]") {
                break message;
            }
        };
        assert!(fresh.text.contains("at priority 149"), "{}", fresh.text);
        assert_eq!(rule_puts(), 0, "nothing was sent");
        let said = loop {
            let edit = click.next_edit().await;
            if edit.text.lines().next().is_some_and(|t| t.contains("Nothing was sent")) {
                break edit.text;
            }
        };
        assert!(
            said.contains("priority 199") && said.contains("priority 149"),
            "{said}"
        );

        // The fresh prompt runs once it is confirmed (by someone other than its requester).
        let click = bob.click(&fresh, "Confirm").await;
        loop {
            let edit = click.next_edit().await;
            let title = edit.text.lines().next().unwrap_or("");
            if title.contains("succeeded") || title.contains("failed") {
                assert!(title.contains("succeeded"), "{}", edit.text);
                break;
            }
        }
        assert_eq!(rule_puts(), 1);
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn reset_password_of_a_shared_name_asks_which_vm_before_the_form() {
    within(async {
        let room = Room::start(
            World::new()
                .vm("api-01")
                .in_group("rg-api-east")
                .subscription("22222222-2222-2222-2222-222222222222")
                .vm("api-01")
                .in_group("rg-api-west"),
        )
        .await;
        room.vms_listed(2).await;
        let ada = User::new(4010, "ada", &[5002]);
        let admin = room.as_user(&ada);
        let menu = admin
            .run("/rdp reset-password api-01")
            .await
            .next_message()
            .await;
        // Not a form yet: which VM?
        insta::assert_snapshot!(menu.text, @r#"
(only you can see this)
# 2 VMs are named api-01
Pick the one whose password to reset (subscription / resource group):
[Which VM? ▾]
  · rg-api-east/api-01
  · rg-api-west/api-01
"#);
        let pick = admin.pick(&menu, "rg-api-west/api-01").await;
        let form = pick.next_message().await;
        assert!(form.text.starts_with("[form:"), "{}", form.text);
        let secret = "Sup3r-Secret-Passw0rd!";
        let prompt = admin
            .set_password(&pick, "opsadmin", secret)
            .await
            .edit_saying("[Confirm]")
            .await;
        assert!(
            prompt.text.contains("resource group `rg-api-west`"),
            "{}",
            prompt.text
        );
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn without_a_policy_the_bot_serves_nobody() {
    within(async {
        let room = Room::with_policy(World::new().vm("web-01"), None).await;
        let before = room.sim.stats().requests;
        let refused = room.run("/rdp check web-01").await.refused().await;
        insta::assert_snapshot!(refused.text, @r#"
(only you can see this)
# Not here
rdp-doctor has no [policy] table in its config, so it serves nobody in Discord. An administrator adds one with the channels and grants.
"#);
        let choices = room.as_user(&room.alice).suggestions("check", "web").await;
        assert_eq!(choices, Vec::<String>::new());
        assert_eq!(room.sim.stats().requests, before, "nothing reached Azure");
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn each_person_has_a_command_rate_and_one_sweep_per_scope_runs_at_a_time() {
    within(async {
        let options = support::slowed(Duration::from_millis(150));
        let room = Room::build_tuned(
            World::new().vm("web-01").vm("web-02").vm("web-03"),
            options,
            Some(ROOM_POLICY),
            |door| {
                door.with_limiter(rdp_doctor::runbook::limits::PersonLimiter::new(
                    rdp_doctor::runbook::limits::PersonRate {
                        per_minute: 3,
                        burst: 3,
                    },
                ))
            },
        )
        .await;
        // Alice starts a sweep; while it runs, Bob's sweep of the same scope is refused.
        let first = room.run("/rdp sweep resource-group:rg-web").await;
        first.next_message().await;
        first.next_edit().await;
        let bob = User::new(4002, "bob", &[5001]);
        let bob = room.as_user(&bob);
        let second = bob
            .run("/rdp sweep resource-group:rg-web")
            .await
            .whispered()
            .await;
        // A clock time in it: an explicit assert rather than a snapshot.
        assert!(
            second
                .text
                .contains("a sweep of resource group rg-web is already running: alice started it"),
            "{}",
            second.text
        );
        // Alice's sweep was her first command; two more pass, the fourth within the minute is
        // refused without any Azure request.
        for _ in 0..2 {
            room.run("/rdp check web-01").await.final_edit().await;
        }
        let before = room.sim.stats().requests;
        let limited = room.run("/rdp check web-01").await.whispered().await;
        assert!(
            limited
                .text
                .contains("you have run 3 commands in the last minute; try again in"),
            "{}",
            limited.text
        );
        assert_eq!(room.sim.stats().requests, before);
        // Bob is not limited by Alice's commands.
        let report = bob.run("/rdp check web-02").await.final_edit().await;
        assert!(report.text.starts_with("# web-02"), "{}", report.text);
    })
    .await
}

#[tokio::test]
async fn a_bot_with_a_role_on_one_resource_group_checks_its_vms() {
    within(async {
        let sub = rdp_doctor::sim::DEFAULT_SUBSCRIPTION;
        // The bot's identity holds Virtual Machine Contributor on rg-web alone: Azure refuses
        // it the subscription's VM list.
        let world = World::new()
            .client_secret("group-scoped")
            .vm("web-01")
            .vm("api-01")
            .in_group("rg-api")
            .principal(support::CLIENT, "group-scoped")
            .role_at(
                "Virtual Machine Contributor",
                &format!("/subscriptions/{sub}/resourceGroups/rg-web"),
            );
        let room = Room::start(world).await;
        // The autocomplete list came from the groups it can see.
        assert_eq!(room.directory.len(), 1);
        for vm in ["rg-web/web-01", "web-01"] {
            let report = room
                .run(&format!("/rdp check {vm}"))
                .await
                .final_edit()
                .await;
            let title = report.text.lines().next().unwrap_or("");
            assert!(title.contains("nothing found"), "{vm}:\n{}", report.text);
        }
        room.assert_clean();
    })
    .await
}

#[tokio::test]
async fn permissions_are_for_admins_and_answered_privately() {
    within(async {
        let room = Room::start(World::new().vm("web-01")).await;
        // An operator is refused.
        let asked = room.run("/rdp permissions").await;
        let thinking = asked.next_message().await;
        assert!(thinking.private(), "{}", thinking.text);
        insta::assert_snapshot!(asked.next_edit().await.text, @r#"
# Not allowed
Permission denied: you need the `admin` permission on any VM rdp-doctor serves (you have none)
"#);
        // An admin gets the report: the simulator's one client holds everything.
        let admin = User::new(4010, "ada", &[5002]);
        let asked = room.as_user(&admin).run("/rdp permissions").await;
        assert!(asked.next_message().await.private());
        let report = asked.next_edit().await;
        assert!(
            report.text.contains("holds every action"),
            "{}",
            report.text
        );
        assert!(
            report
                .text
                .contains("Subscription 11111111-1111-1111-1111-111111111111"),
            "{}",
            report.text
        );
        room.assert_clean();
    })
    .await
}

// ---- the way back (issue 13) --------------------------------------------------------------

#[tokio::test]
async fn check_from_an_address_shows_network_watcher_and_the_remove_route_button_runs_once() {
    within(async {
        let room = Room::start(rdp_doctor::sim::demo_world()).await;
        let report = room
            .run("/rdp check vm:udr-01 from:203.0.113.9")
            .await
            .final_edit()
            .await;
        let (shown, _) = report
            .text
            .split_once("# Serial log")
            .expect("the serial log under the report");
        assert!(
            shown.contains("## ❌ The reply finds its way back to you\nThe reply to 203.0.113.9 goes to the virtual appliance 10.0.254.4: route to-firewall (0.0.0.0/0) in route table rt-snet-udr\nNetwork Watcher: TCP 3389 from 203.0.113.9 is allowed by securityRules/allow-rdp\nrdp-doctor's reading of the effective rules: allowed by allow-rdp\nRoute table rt-snet-udr is used by subnet snet-udr.\n"),
            "{shown}"
        );
        let fix = "Remove the route that sends the reply away";
        assert!(report.text.contains(&format!("[{fix}]")), "{}", report.text);
        // The fix needs admin (the operator's refusal is the fix tests'); Ada is one.
        let ada = User::new(4010, "ada", &[5002]);
        let prompt = room
            .as_user(&ada)
            .click(&report, fix)
            .await
            .edit_saying("[Confirm]")
            .await;
        assert!(
            prompt.text.contains("Remove route to-firewall (0.0.0.0/0 to virtual appliance 10.0.254.4) from route table rt-snet-udr")
                && prompt.text.contains("To undo: az network route-table route create"),
            "{}",
            prompt.text
        );
        room.as_user(&ada).click(&prompt, "Confirm").await.answer().await;
        let done = loop {
            let edit = room.next_edit().await;
            if edit.text.contains("succeeded") || edit.text.contains("failed") {
                break edit;
            }
        };
        assert!(done.text.contains("# ✅ remove-route of udr-01 succeeded"), "{}", done.text);
        assert!(done.text.contains("• network-path: fail → pass"), "{}", done.text);
        let deletes = room
            .sim
            .stats()
            .log
            .iter()
            .filter(|e| e.method == "DELETE" && e.path.contains("/routes/to-firewall"))
            .count();
        assert_eq!(deletes, 1);
        room.assert_clean();
    })
    .await
}
