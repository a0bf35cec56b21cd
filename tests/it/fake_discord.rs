//! The fake Discord against serenity's own HTTP client and gateway, and a tiny poise bot: proves
//! the fake speaks what serenity 0.12 / poise 0.7 need before the real bot is wired to it.

use crate::support;

use serde_json::{json, Value};
use serenity::all as sy;
use serenity::builder::Builder as _;
use std::time::Duration;
use support::discord::{
    routes, FakeDiscord, Interaction, Options, User, APP_ID, CHANNEL_ID, GUILD_ID, TOKEN,
};
use support::within;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn http_for(fake: &FakeDiscord, token: &str) -> sy::Http {
    sy::HttpBuilder::new(token)
        .proxy(fake.url())
        .ratelimiter_disabled(true)
        .application_id(APP_ID.into())
        .build()
}

fn operator() -> User {
    User::new(
        1_000_000_000_000_000_042,
        "night-oncall",
        &[1_000_000_000_000_000_777],
    )
}

fn rdp_command() -> sy::CreateCommand {
    sy::CreateCommand::new("rdp")
        .description("Remote Desktop troubleshooting")
        .add_option(
            sy::CreateCommandOption::new(sy::CommandOptionType::SubCommand, "check", "Run checks")
                .add_sub_option(
                    sy::CreateCommandOption::new(sy::CommandOptionType::String, "vm", "VM name")
                        .required(true)
                        .set_autocomplete(true),
                ),
        )
}

/// A fake with `/rdp` registered over REST, and a serenity `Http` pointed at it.
async fn registered() -> (FakeDiscord, sy::Http) {
    let fake = FakeDiscord::start().await;
    let http = http_for(&fake, TOKEN);
    sy::GuildId::new(GUILD_ID)
        .set_commands(&http, vec![rdp_command()])
        .await
        .expect("command registration");
    (fake, http)
}

/// A 3×2 PNG, as the bot's charts would be.
fn png() -> Vec<u8> {
    let image = image::RgbImage::from_pixel(3, 2, image::Rgb([200, 30, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode PNG");
    out.into_inner()
}

fn assert_clean(fake: &FakeDiscord) {
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
    assert!(
        fake.unconsumed().is_empty(),
        "unconsumed requests: {:#?}",
        fake.unconsumed()
    );
}

fn message_id(message: &Value) -> u64 {
    message["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("message id")
}

#[tokio::test]
async fn registration_echoes_commands_with_ids() {
    within(async {
        let (fake, http) = registered().await;
        let commands = fake.registered_commands();
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0]["name"], "rdp");
        assert!(commands[0]["id"].as_str().is_some());
        assert_eq!(commands[0]["guild_id"], GUILD_ID.to_string());
        // Re-registering keeps the id, as Discord does for a command of the same name.
        let again = sy::GuildId::new(GUILD_ID)
            .set_commands(&http, vec![rdp_command()])
            .await
            .expect("second registration");
        assert_eq!(again[0].id.get().to_string(), commands[0]["id"]);
        assert_clean(&fake);
    })
    .await
}

#[tokio::test]
async fn interaction_payloads_deserialise_in_serenity() {
    within(async {
        let (fake, _http) = registered().await;
        let user = operator();
        fake.slash(
            &user,
            "rdp",
            &["check"],
            json!([{"name": "vm", "type": 3, "value": "web-01"}]),
        )
        .await;
        fake.autocomplete(
            &user,
            "rdp",
            &["check"],
            json!([{"name": "vm", "type": 3, "value": "we"}]),
            "vm",
        )
        .await;
        let dispatched = fake.dispatched();
        assert_eq!(dispatched.len(), 2);

        let slash: sy::Interaction =
            serde_json::from_value(dispatched[0]["d"].clone()).expect("command interaction");
        let sy::Interaction::Command(command) = slash else {
            panic!("not a command: {slash:?}")
        };
        assert_eq!(command.data.name, "rdp");
        assert_eq!(command.user.id.get(), user.id);
        let member = command.member.as_ref().expect("member");
        assert_eq!(member.roles, vec![sy::RoleId::new(user.roles[0])]);
        assert_eq!(member.guild_id.get(), GUILD_ID);
        let sy::CommandDataOptionValue::SubCommand(options) = &command.data.options[0].value else {
            panic!("no subcommand in {:?}", command.data.options)
        };
        assert_eq!(options[0].name, "vm");
        assert_eq!(options[0].value.as_str(), Some("web-01"));

        let auto: sy::Interaction =
            serde_json::from_value(dispatched[1]["d"].clone()).expect("autocomplete interaction");
        let sy::Interaction::Autocomplete(auto) = auto else {
            panic!("not autocomplete: {auto:?}")
        };
        let focused = auto.data.autocomplete().expect("focused option");
        assert_eq!((focused.name, focused.value), ("vm", "we"));
    })
    .await
}

#[tokio::test]
async fn response_edit_and_followup_with_png_are_recorded_and_valid() {
    within(async {
        let (fake, http) = registered().await;
        let i = fake
            .slash(
                &operator(),
                "rdp",
                &["check"],
                json!([{"name": "vm", "type": 3, "value": "web-01"}]),
            )
            .await;

        sy::CreateInteractionResponse::Defer(sy::CreateInteractionResponseMessage::new())
            .execute(&http, (i.id.into(), &i.token))
            .await
            .expect("defer");
        let callback = fake.callback(&i, WAIT).await.expect("callback");
        assert_eq!(callback.body()["type"], 5);
        assert_eq!(callback.status, 204);
        let thinking = fake.original(&i).expect("deferred original");
        assert_eq!(
            thinking["flags"], 128,
            "a deferred response shows 'thinking'"
        );

        let embed = sy::CreateEmbed::new().title("web-01: RDP blocked").field(
            "NSG rule",
            "DenyAll3389 (priority 100)",
            false,
        );
        let edited = sy::EditInteractionResponse::new()
            .content("Checked web-01")
            .embed(embed)
            .new_attachment(sy::CreateAttachment::bytes(png(), "nsg.png"))
            .execute(&http, &i.token)
            .await
            .expect("edit original");
        assert_eq!(edited.content, "Checked web-01");
        assert_eq!(edited.attachments.len(), 1);
        assert_eq!(edited.attachments[0].dimensions(), Some((3, 2)));
        let edit = fake.next_edit(&i, WAIT).await.expect("edit");
        assert_eq!(edit.content(), Some("Checked web-01"));
        assert_eq!(edit.files.len(), 1);
        assert_eq!(edit.files[0].0, "nsg.png");
        assert_eq!(edit.files[0].1, "image/png");
        assert_eq!(edit.files[0].2, png());

        let original = fake.original(&i).expect("original");
        assert_eq!(original["content"], "Checked web-01");
        assert_eq!(original["flags"], 0);
        assert_eq!(original["embeds"][0]["title"], "web-01: RDP blocked");
        assert_eq!(original["attachments"][0]["filename"], "nsg.png");

        // The attachment URL serves the uploaded bytes.
        let url = original["attachments"][0]["url"].as_str().expect("url");
        let bytes = reqwest::get(format!("{}{url}", fake.url()))
            .await
            .expect("GET attachment")
            .bytes()
            .await
            .expect("attachment bytes");
        assert_eq!(bytes.as_ref(), png().as_slice());

        let followup = sy::CreateInteractionResponseFollowup::new()
            .content("Full report attached")
            .ephemeral(true)
            .add_file(sy::CreateAttachment::bytes(png(), "report.png"))
            .execute(&http, (None, &i.token))
            .await
            .expect("follow-up");
        let recorded = fake
            .next_followup(&i, WAIT)
            .await
            .expect("follow-up recorded");
        assert_eq!(recorded.flags(), 64);
        assert_eq!(recorded.files[0].0, "report.png");
        let stored = fake.message(followup.id.get()).expect("follow-up stored");
        assert_eq!(stored["flags"], 64);
        assert_eq!(stored["attachments"][0]["filename"], "report.png");

        // Editing the follow-up keeps its attachment when `attachments` is not sent.
        http.edit_followup_message(
            &i.token,
            followup.id,
            &json!({ "content": "Full report (updated)" }),
            vec![],
        )
        .await
        .expect("edit follow-up");
        let edit = fake
            .next_request(
                "the follow-up edit",
                |r| r.method == "PATCH" && r.route == routes::WEBHOOK_MESSAGE,
                WAIT,
            )
            .await
            .expect("follow-up edit recorded");
        assert_eq!(edit.status, 200);
        let stored = fake.message(followup.id.get()).expect("follow-up stored");
        assert_eq!(stored["content"], "Full report (updated)");
        assert_eq!(stored["attachments"].as_array().map(Vec::len), Some(1));

        let fetched = http
            .get_original_interaction_response(&i.token)
            .await
            .expect("GET @original");
        assert_eq!(fetched.content, "Checked web-01");

        assert_clean(&fake);
    })
    .await
}

#[tokio::test]
async fn invalid_bodies_and_unknown_routes_are_violations() {
    within(async {
        let (fake, _http) = registered().await;
        let i = fake
            .slash(
                &operator(),
                "rdp",
                &["check"],
                json!([{"name": "vm", "type": 3, "value": "x"}]),
            )
            .await;
        let client = reqwest::Client::new();
        let response = client
            .post(format!(
                "{}/api/v10/interactions/{}/{}/callback",
                fake.url(),
                i.id,
                i.token
            ))
            .header("content-type", "application/json")
            .body(r#"{"type": 99}"#)
            .send()
            .await
            .expect("raw callback");
        assert_eq!(response.status().as_u16(), 400);
        let violations = fake.schema_violations();
        assert!(
            violations.iter().any(|v| v.contains(routes::CALLBACK)),
            "{violations:?}"
        );
        assert!(
            violations
                .iter()
                .any(|v| v.contains("99 is not one of 4 or 5 (at /type)")),
            "the closest alternative is named: {violations:?}"
        );

        let response = client
            .get(format!(
                "{}/api/v10/guilds/{GUILD_ID}/audit-logs",
                fake.url()
            ))
            .header("authorization", format!("Bot {TOKEN}"))
            .send()
            .await
            .expect("unknown route");
        assert_eq!(response.status().as_u16(), 404);
        let violations = fake.schema_violations();
        assert!(
            violations
                .iter()
                .any(|v| v.starts_with("unknown route: GET")),
            "{violations:?}"
        );
        // The failed callback is still a recorded, unconsumed message-producing request.
        assert_eq!(fake.unconsumed().len(), 1);
    })
    .await
}

#[tokio::test]
async fn wrong_token_is_refused_on_rest_and_gateway() {
    within(async {
        let fake = FakeDiscord::start().await;
        let http = http_for(&fake, "not-the-token");
        let err = http
            .get_current_user()
            .await
            .expect_err("wrong token accepted");
        assert!(
            matches!(&err, sy::Error::Http(sy::HttpError::UnsuccessfulRequest(r)) if r.status_code.as_u16() == 401),
            "{err:?}"
        );

        let mut client =
            sy::ClientBuilder::new_with_http(http_for(&fake, "not-the-token"), sy::GatewayIntents::empty())
                .await
                .expect("client");
        let result = tokio::time::timeout(WAIT, client.start()).await;
        assert!(
            matches!(result, Ok(Err(_))),
            "client should stop on close code 4004: {result:?}"
        );
        assert_eq!(fake.identifies(), 0);
    })
    .await
}

#[tokio::test]
async fn expired_token_forces_a_channel_message() {
    within(async {
        let (fake, http) = registered().await;
        let i = fake
            .slash(
                &operator(),
                "rdp",
                &["check"],
                json!([{"name": "vm", "type": 3, "value": "x"}]),
            )
            .await;
        sy::CreateInteractionResponse::Defer(sy::CreateInteractionResponseMessage::new())
            .execute(&http, (i.id.into(), &i.token))
            .await
            .expect("defer");
        fake.callback(&i, WAIT).await.expect("callback");
        fake.expire_token(&i);

        let err = sy::EditInteractionResponse::new()
            .content("too late")
            .execute(&http, &i.token)
            .await
            .expect_err("expired token accepted");
        let sy::Error::Http(sy::HttpError::UnsuccessfulRequest(response)) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(response.status_code.as_u16(), 401);
        assert_eq!(response.error.code, 50027);
        let edit = fake.next_edit(&i, WAIT).await.expect("edit recorded");
        assert_eq!(edit.status, 401);

        sy::ChannelId::new(CHANNEL_ID)
            .send_message(
                &http,
                sy::CreateMessage::new().content("Result of /rdp check x"),
            )
            .await
            .expect("channel message");
        let message = fake
            .next_channel_message(WAIT)
            .await
            .expect("channel message");
        assert_eq!(message.content(), Some("Result of /rdp check x"));
        assert_clean(&fake);
    })
    .await
}

#[tokio::test]
async fn components_carry_the_message_and_update_it() {
    within(async {
        let (fake, http) = registered().await;
        let user = operator();
        let i = fake
            .slash(
                &user,
                "rdp",
                &["check"],
                json!([{"name": "vm", "type": 3, "value": "web-01"}]),
            )
            .await;
        let buttons = sy::CreateActionRow::Buttons(vec![
            sy::CreateButton::new("reset-rdp:web-01")
                .label("Reset RDP config")
                .style(sy::ButtonStyle::Danger),
            sy::CreateButton::new("cancel").label("Cancel"),
        ]);
        let select = sy::CreateActionRow::SelectMenu(sy::CreateSelectMenu::new(
            "pick-vm",
            sy::CreateSelectMenuKind::String {
                options: vec![
                    sy::CreateSelectMenuOption::new("web-01", "web-01"),
                    sy::CreateSelectMenuOption::new("web-02", "web-02"),
                ],
            },
        ));
        sy::CreateInteractionResponse::Message(
            sy::CreateInteractionResponseMessage::new()
                .content("Reset the RDP configuration of web-01?")
                .components(vec![buttons, select]),
        )
        .execute(&http, (i.id.into(), &i.token))
        .await
        .expect("respond with buttons");
        fake.callback(&i, WAIT).await.expect("callback");
        let original = fake.original(&i).expect("original");
        let message = message_id(&original);

        let press = fake
            .component(&user, message, "reset-rdp:web-01", &[])
            .await;
        let pick = fake.component(&user, message, "pick-vm", &["web-02"]).await;
        let dispatched = fake.dispatched();
        let parse = |v: &Value| -> sy::ComponentInteraction {
            match serde_json::from_value(v["d"].clone()).expect("component interaction") {
                sy::Interaction::Component(c) => c,
                other => panic!("not a component: {other:?}"),
            }
        };
        let button = parse(&dispatched[dispatched.len() - 2]);
        assert_eq!(button.data.custom_id, "reset-rdp:web-01");
        assert!(matches!(
            button.data.kind,
            sy::ComponentInteractionDataKind::Button
        ));
        assert_eq!(button.message.id.get(), message);
        assert_eq!(button.message.components.len(), 2);
        let menu = parse(&dispatched[dispatched.len() - 1]);
        assert!(matches!(
            &menu.data.kind,
            sy::ComponentInteractionDataKind::StringSelect { values } if values == &["web-02"]
        ));

        // UPDATE_MESSAGE edits the message the button is on, which becomes @original.
        sy::CreateInteractionResponse::UpdateMessage(
            sy::CreateInteractionResponseMessage::new()
                .content("Resetting web-01…")
                .components(vec![]),
        )
        .execute(&http, (press.id.into(), &press.token))
        .await
        .expect("update message");
        fake.callback(&press, WAIT).await.expect("update callback");
        let updated = fake.original(&press).expect("component original");
        assert_eq!(message_id(&updated), message);
        assert_eq!(updated["content"], "Resetting web-01…");
        assert_eq!(updated["components"], json!([]));

        // A second response to the same interaction is refused, as Discord does.
        let again = sy::CreateInteractionResponse::Acknowledge
            .execute(&http, (press.id.into(), &press.token))
            .await;
        assert!(again.is_err());
        fake.callback(&press, WAIT).await.expect("second callback");

        sy::CreateInteractionResponse::Acknowledge
            .execute(&http, (pick.id.into(), &pick.token))
            .await
            .expect("deferred update");
        fake.callback(&pick, WAIT).await.expect("select callback");
        assert_clean(&fake);
    })
    .await
}

#[tokio::test]
async fn modal_submit_answers_the_modal_that_was_opened() {
    within(async {
        let (fake, http) = registered().await;
        let user = operator();
        let i = fake
            .slash(
                &user,
                "rdp",
                &["check"],
                json!([{"name": "vm", "type": 3, "value": "web-01"}]),
            )
            .await;
        let modal = sy::CreateModal::new("reset-reason", "Why reset web-01?").components(vec![
            sy::CreateActionRow::InputText(
                sy::CreateInputText::new(sy::InputTextStyle::Paragraph, "Reason", "reason")
                    .max_length(200),
            ),
        ]);
        sy::CreateInteractionResponse::Modal(modal.clone())
            .execute(&http, (i.id.into(), &i.token))
            .await
            .expect("open modal");
        assert_eq!(
            fake.callback(&i, WAIT).await.expect("callback").body()["type"],
            9
        );

        let submit = fake
            .modal_submit(&user, &i, &[("reason", "RDP listener wedged")])
            .await;
        let dispatched = fake.dispatched();
        let parsed: sy::Interaction =
            serde_json::from_value(dispatched[dispatched.len() - 1]["d"].clone())
                .expect("modal submit interaction");
        let sy::Interaction::Modal(parsed) = parsed else {
            panic!("not a modal submit: {parsed:?}")
        };
        assert_eq!(parsed.data.custom_id, "reset-reason");
        let text = poise::find_modal_text(&mut parsed.data.clone(), "reason");
        assert_eq!(text.as_deref(), Some("RDP listener wedged"));

        // A modal cannot answer a modal submit; a message can.
        let modal_again = sy::CreateInteractionResponse::Modal(modal)
            .execute(&http, (submit.id.into(), &submit.token))
            .await;
        assert!(modal_again.is_err());
        assert_eq!(
            fake.callback(&submit, WAIT).await.expect("refused").status,
            400
        );
        sy::CreateInteractionResponse::Defer(sy::CreateInteractionResponseMessage::new())
            .execute(&http, (submit.id.into(), &submit.token))
            .await
            .expect("defer the submit");
        fake.callback(&submit, WAIT).await.expect("defer callback");
        assert_clean(&fake);
    })
    .await
}

/// What the serenity-only bot saw.
#[derive(Debug)]
enum Seen {
    Ready(String),
    Command { name: String, vm: String },
}

struct Handler(mpsc::UnboundedSender<Seen>);

#[sy::async_trait]
impl sy::EventHandler for Handler {
    async fn ready(&self, ctx: sy::Context, ready: sy::Ready) {
        sy::GuildId::new(GUILD_ID)
            .set_commands(&ctx.http, vec![rdp_command()])
            .await
            .expect("register from ready");
        let _ = self.0.send(Seen::Ready(ready.user.name.clone()));
    }

    async fn interaction_create(&self, ctx: sy::Context, interaction: sy::Interaction) {
        let sy::Interaction::Command(command) = interaction else {
            return;
        };
        let vm = match command.data.options.first().map(|o| &o.value) {
            Some(sy::CommandDataOptionValue::SubCommand(options)) => options
                .iter()
                .find(|o| o.name == "vm")
                .and_then(|o| o.value.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        command
            .create_response(
                &ctx.http,
                sy::CreateInteractionResponse::Message(
                    sy::CreateInteractionResponseMessage::new().content(format!("checking {vm}")),
                ),
            )
            .await
            .expect("respond");
        let _ = self.0.send(Seen::Command {
            name: command.data.name.clone(),
            vm,
        });
    }
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("handler saw nothing in time")
        .expect("handler channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serenity_client_gets_ready_interactions_and_resumes() {
    within(async {
        let fake = FakeDiscord::start_with(Options {
            heartbeat_interval: Duration::from_millis(200),
            ..Options::default()
        })
        .await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut client =
            sy::ClientBuilder::new_with_http(http_for(&fake, TOKEN), sy::GatewayIntents::GUILDS)
                .event_handler(Handler(tx))
                .await
                .expect("client");
        let shards = client.shard_manager.clone();
        let running = tokio::spawn(async move { client.start().await });

        fake.wait_ready(WAIT).await.expect("ready");
        assert!(matches!(next_seen(&mut rx).await, Seen::Ready(name) if name == "rdp-doctor"));

        let user = operator();
        let first = fake
            .slash(
                &user,
                "rdp",
                &["check"],
                json!([{"name": "vm", "type": 3, "value": "web-01"}]),
            )
            .await;
        let seen = next_seen(&mut rx).await;
        assert!(
            matches!(&seen, Seen::Command { name, vm } if name == "rdp" && vm == "web-01"),
            "{seen:?}"
        );
        let callback = fake.callback(&first, WAIT).await.expect("callback");
        assert_eq!(callback.content(), Some("checking web-01"));

        // Lose the connection, then dispatch while the bot is away: RESUME must replay it.
        fake.drop_gateway().await;
        let second = fake
            .slash(
                &user,
                "rdp",
                &["check"],
                json!([{"name": "vm", "type": 3, "value": "db-07"}]),
            )
            .await;
        let seen = next_seen(&mut rx).await;
        assert!(
            matches!(&seen, Seen::Command { vm, .. } if vm == "db-07"),
            "{seen:?}"
        );
        fake.callback(&second, WAIT)
            .await
            .expect("callback after resume");
        assert_eq!(fake.resumes(), 1);
        assert_eq!(fake.identifies(), 1);

        // And the resumed session still delivers new dispatches.
        let third = fake
            .slash(
                &user,
                "rdp",
                &["check"],
                json!([{"name": "vm", "type": 3, "value": "app-3"}]),
            )
            .await;
        let seen = next_seen(&mut rx).await;
        assert!(
            matches!(&seen, Seen::Command { vm, .. } if vm == "app-3"),
            "{seen:?}"
        );
        fake.callback(&third, WAIT).await.expect("third callback");

        assert_clean(&fake);
        shards.shutdown_all().await;
        let _ = tokio::time::timeout(WAIT, running).await;
    })
    .await
}

type PoiseError = Box<dyn std::error::Error + Send + Sync>;
type PoiseContext<'a> = poise::Context<'a, (), PoiseError>;

/// Ping a VM (poise smoke test).
#[poise::command(slash_command)]
async fn ping(
    ctx: PoiseContext<'_>,
    #[description = "VM name"] vm: String,
) -> Result<(), PoiseError> {
    ctx.say(format!("pong {vm}")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poise_registers_in_guild_and_replies() {
    within(async {
        let fake = FakeDiscord::start().await;
        let framework = poise::Framework::builder()
            .options(poise::FrameworkOptions {
                commands: vec![ping()],
                ..Default::default()
            })
            .setup(|ctx, _ready, framework| {
                Box::pin(async move {
                    poise::builtins::register_in_guild(
                        ctx,
                        &framework.options().commands,
                        sy::GuildId::new(GUILD_ID),
                    )
                    .await?;
                    Ok(())
                })
            })
            .build();
        let mut client =
            sy::ClientBuilder::new_with_http(http_for(&fake, TOKEN), sy::GatewayIntents::GUILDS)
                .framework(framework)
                .await
                .expect("client");
        let shards = client.shard_manager.clone();
        let running = tokio::spawn(async move { client.start().await });

        fake.wait_ready(WAIT).await.expect("ready");
        let commands = fake.registered_commands();
        assert_eq!(commands[0]["name"], "ping");
        assert_eq!(commands[0]["options"][0]["name"], "vm");
        assert!(
            fake.requests()
                .iter()
                .any(|r| r.path == "/api/v10/oauth2/applications/@me" && r.status == 200),
            "poise fetches the owners"
        );

        let i: Interaction = fake
            .slash(
                &operator(),
                "ping",
                &[],
                json!([{"name": "vm", "type": 3, "value": "web-01"}]),
            )
            .await;
        let callback = fake.callback(&i, WAIT).await.expect("callback");
        assert_eq!(callback.body()["type"], 4);
        assert_eq!(callback.content(), Some("pong web-01"));
        assert_eq!(
            fake.original(&i).expect("original")["content"],
            "pong web-01"
        );
        assert_clean(&fake);
        shards.shutdown_all().await;
        let _ = tokio::time::timeout(WAIT, running).await;
    })
    .await
}
