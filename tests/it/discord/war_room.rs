//! Tests that read like the war room: `room.as_user(&bob).run("/rdp check web-01")`,
//! `room.click(&prompt, "Confirm")`, and what people see as plain text
//! ([`Seen::text`]): content, embeds, buttons as `[Label]`, with ids and timings redacted.
//!
//! Built on the fake Discord's record of requests: `next_message` / `next_edit` wait on its
//! change notification (through [`FakeDiscord::next_request`]) with a deadline, never a sleep.

use super::{Room, WAIT};
use crate::support::discord::{components, routes, FakeDiscord, Interaction, Recorded, User};
use serde_json::{json, Value};

/// Someone in the room, about to type or click.
pub(super) struct Person<'a> {
    room: &'a Room,
    user: User,
}

/// An interaction someone started: a command, a click, a menu choice.
pub(super) struct Sent<'a> {
    room: &'a Room,
    pub(super) i: Interaction,
}

/// One message as a person sees it, at one moment: created (`next_message`) or edited
/// (`next_edit`).
#[derive(Clone, Debug)]
pub(super) struct Seen {
    /// What the person sees, as plain text (see [`render`]).
    pub(super) text: String,
    /// The message, to click on.
    pub(super) message_id: Option<u64>,
    /// The request as the bot sent it, for the protocol (ack types, flags, timing).
    pub(super) raw: Recorded,
}

impl Seen {
    /// Whether only the person who asked sees it (flag 64, ephemeral).
    pub(super) fn private(&self) -> bool {
        self.raw.flags() & 64 == 64
    }

    /// Whether it is a deferral ("rdp-doctor is thinking…") rather than an answer.
    pub(super) fn deferred(&self) -> bool {
        self.raw.route == routes::CALLBACK && self.raw.body()["type"] == 5
    }

    /// The message body (`data` of a callback).
    fn message(&self) -> &Value {
        let body = self.raw.body();
        if self.raw.route == routes::CALLBACK {
            &body["data"]
        } else {
            body
        }
    }
}

impl Room {
    /// Alice, the operator most tests act as, does things through [`Room::run`] and
    /// [`Room::click`]; anyone else through this.
    pub(super) fn as_user(&self, user: &User) -> Person<'_> {
        Person {
            room: self,
            user: user.clone(),
        }
    }

    /// `/rdp check web-01` typed by Alice (see [`Person::run`]).
    pub(super) async fn run(&self, line: &str) -> Sent<'_> {
        self.as_user(&self.alice).run(line).await
    }

    /// Alice clicks the button labelled `label` on `message`.
    pub(super) async fn click(&self, message: &Seen, label: &str) -> Sent<'_> {
        self.as_user(&self.alice).click(message, label).await
    }

    /// Alice chooses `label` in the select menu on `message`.
    pub(super) async fn pick(&self, message: &Seen, label: &str) -> Sent<'_> {
        self.as_user(&self.alice).pick(message, label).await
    }

    /// Alice fills in and submits the form `opened` was answered with: `(input id, value)`.
    pub(super) async fn submit(&self, opened: &Sent<'_>, fields: &[(&str, &str)]) -> Sent<'_> {
        self.as_user(&self.alice).submit(opened, fields).await
    }

    /// The next message the bot posted, in any way (an interaction's first answer, a follow-up,
    /// a channel message), that no earlier `next_*` consumed.
    pub(super) async fn next_message(&self) -> Seen {
        seen(&self.discord, "a new message", None, is_new_message).await
    }

    /// The next edit of a message the bot posted.
    pub(super) async fn next_edit(&self) -> Seen {
        seen(&self.discord, "an edit", None, is_edit).await
    }
}

impl<'a> Person<'a> {
    /// A slash command as typed: `/rdp open-rdp web-02 source:198.51.100.7`. Bare words name
    /// subcommands, then fill the options in their registered order; `name:value` sets an
    /// option by name; `"…"` quotes a value with spaces. Parsed against the commands the bot
    /// registered, so a name it does not know fails here.
    pub(super) async fn run(&self, line: &str) -> Sent<'a> {
        let (command, path, options) = parse(&self.room.discord.registered_commands(), line);
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let i = self
            .room
            .discord
            .slash(&self.user, &command, &path, options)
            .await;
        Sent { room: self.room, i }
    }

    /// Click the button labelled `label` on `message`.
    pub(super) async fn click(&self, message: &Seen, label: &str) -> Sent<'a> {
        let button = components(message.message())
            .into_iter()
            .find(|c| c["type"] == 2 && c["label"] == label)
            .unwrap_or_else(|| panic!("no button [{label}] on:\n{}", message.text));
        let custom_id = button["custom_id"].as_str().expect("a button with an id");
        self.click_id(message, custom_id).await
    }

    /// Fill in and submit the form `opened` was answered with: `(input id, value)`.
    pub(super) async fn submit(&self, opened: &Sent<'_>, fields: &[(&str, &str)]) -> Sent<'a> {
        let i = self
            .room
            .discord
            .modal_submit(&self.user, &opened.i, fields)
            .await;
        Sent { room: self.room, i }
    }

    /// Fill in the reset-password form `opened` was answered with: `user`, and `password`
    /// twice.
    pub(super) async fn set_password(
        &self,
        opened: &Sent<'_>,
        user: &str,
        password: &str,
    ) -> Sent<'a> {
        let fields = [("user", user), ("password", password), ("repeat", password)];
        self.submit(opened, &fields).await
    }

    /// What autocomplete offers while `typed` is in the `vm` option of `/rdp <sub>`: the
    /// choices' names (the answer must be a list of choices, empty or not).
    pub(super) async fn suggestions(&self, sub: &str, typed: &str) -> Vec<String> {
        let options = json!([{"name": "vm", "type": 3, "value": typed}]);
        let discord = &self.room.discord;
        let i = discord
            .autocomplete(&self.user, "rdp", &[sub], options, "vm")
            .await;
        let answer = discord.callback(&i, WAIT).await.expect("an answer");
        assert_eq!(answer.body()["type"], 8, "not choices: {}", answer.body());
        answer.body()["data"]["choices"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Click a component of `message` by its raw id: for ids no button carries (a garbled or
    /// stale one), as a modified client could send.
    pub(super) async fn click_id(&self, message: &Seen, custom_id: &str) -> Sent<'a> {
        let id = message.message_id.expect("the message's id");
        let i = self
            .room
            .discord
            .component(&self.user, id, custom_id, &[])
            .await;
        Sent { room: self.room, i }
    }

    /// Choose the option labelled `label` in the select menu on `message`.
    pub(super) async fn pick(&self, message: &Seen, label: &str) -> Sent<'a> {
        let (menu, value) = components(message.message())
            .into_iter()
            .filter(|c| c["type"] == 3)
            .find_map(|menu| {
                let value = menu["options"]
                    .as_array()?
                    .iter()
                    .find(|o| o["label"] == label)?["value"]
                    .as_str()?
                    .to_string();
                Some((menu, value))
            })
            .unwrap_or_else(|| panic!("no menu choice {label:?} on:\n{}", message.text));
        let id = message.message_id.expect("the message's id");
        let custom_id = menu["custom_id"].as_str().expect("a menu with an id");
        let i = self
            .room
            .discord
            .component(&self.user, id, custom_id, &[&value])
            .await;
        Sent { room: self.room, i }
    }
}

impl Sent<'_> {
    /// The interaction's first answer (acknowledgement, message, form), as the protocol has it.
    pub(super) async fn answer(&self) -> Recorded {
        self.room
            .discord
            .callback(&self.i, WAIT)
            .await
            .expect("the interaction was answered")
    }

    /// The next message this interaction produced: its first answer or a follow-up.
    pub(super) async fn next_message(&self) -> Seen {
        self.next("a message answering", is_new_message).await
    }

    /// The next edit this interaction made (of its own message or, for a click, of the one
    /// clicked).
    pub(super) async fn next_edit(&self) -> Seen {
        self.next("an edit by", is_edit).await
    }

    async fn next(&self, what: &str, kind: fn(&Recorded) -> bool) -> Seen {
        let what = format!("{what} interaction {}", self.i.id);
        seen(&self.room.discord, &what, Some(self.i.token.clone()), kind).await
    }

    /// The answer to a request refused at once: a message only the person sees, not a
    /// deferral.
    pub(super) async fn refused(&self) -> Seen {
        let reply = self.next_message().await;
        assert!(
            reply.private() && !reply.deferred(),
            "not a private answer:\n{}",
            reply.text
        );
        reply
    }

    /// The answer to a request acknowledged first, then refused: a private follow-up.
    pub(super) async fn whispered(&self) -> Seen {
        let first = self.next_message().await;
        assert!(first.deferred(), "not deferred:\n{}", first.text);
        let reply = self.next_message().await;
        assert!(reply.private(), "not private:\n{}", reply.text);
        reply
    }

    /// Edits until the last word: not the "Looking for…" / "Checking…" progress.
    pub(super) async fn final_edit(&self) -> Seen {
        loop {
            let edit = self.next_edit().await;
            if !edit.text.starts_with("# Checking") && !edit.text.starts_with("# Looking for") {
                return edit;
            }
        }
    }

    /// Edits until one whose text contains `needle`: progress passes by, the outcome stays.
    pub(super) async fn edit_saying(&self, needle: &str) -> Seen {
        loop {
            let edit = self.next_edit().await;
            if edit.text.contains(needle) {
                return edit;
            }
        }
    }
}

async fn seen(
    discord: &FakeDiscord,
    what: &str,
    token: Option<String>,
    kind: fn(&Recorded) -> bool,
) -> Seen {
    let raw = discord
        .next_request(
            what,
            move |r| {
                r.status < 300
                    && kind(r)
                    && token.as_ref().is_none_or(|t| r.path.contains(t.as_str()))
            },
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Seen {
        text: render(&raw),
        message_id: raw.message_id,
        raw,
    }
}

/// Callback types 4 (message), 5 (deferred: "thinking…") and 9 (a form); follow-ups and
/// channel messages.
fn is_new_message(r: &Recorded) -> bool {
    r.method == "POST"
        && match r.route {
            routes::CALLBACK => matches!(r.body()["type"].as_u64(), Some(4 | 5 | 9)),
            routes::FOLLOWUP | routes::CHANNEL_MESSAGES => true,
            _ => false,
        }
}

/// Callback type 7 (the clicked message updated) and PATCHes of messages.
fn is_edit(r: &Recorded) -> bool {
    match r.route {
        routes::CALLBACK => r.method == "POST" && r.body()["type"] == 7,
        routes::ORIGINAL | routes::WEBHOOK_MESSAGE | routes::CHANNEL_MESSAGE => r.method == "PATCH",
        _ => false,
    }
}

/// What a person sees of one request, as text: `(only you can see this)` for an ephemeral
/// message, "rdp-doctor is thinking…" for a deferral, a form's title and inputs, the content,
/// each embed (`# title`, description, `## field` and value, `[image …]`, `-- footer`), buttons
/// as `[Label]`, a select menu as its placeholder and `· option` lines, attachments by name.
/// Snowflake ids, Discord timestamps and elapsed times are redacted.
pub(crate) fn render(r: &Recorded) -> String {
    let body = r.body();
    let (kind, message) = if r.route == routes::CALLBACK {
        (body["type"].as_u64(), &body["data"])
    } else {
        (None, body)
    };
    let mut out = String::new();
    if r.flags() & 64 == 64 {
        out.push_str("(only you can see this)\n");
    }
    match kind {
        Some(5) => out.push_str("rdp-doctor is thinking…\n"),
        Some(9) => {
            out.push_str(&format!(
                "[form: {}]\n",
                message["title"].as_str().unwrap_or("")
            ));
            for input in components(message) {
                out.push_str(&format!(
                    "{}: ____\n",
                    input["label"].as_str().unwrap_or("?")
                ));
            }
            return redact(&out);
        }
        _ => {}
    }
    if let Some(content) = message["content"].as_str().filter(|c| !c.is_empty()) {
        out.push_str(content);
        out.push('\n');
    }
    for e in message["embeds"].as_array().into_iter().flatten() {
        if let Some(title) = e["title"].as_str() {
            out.push_str(&format!("# {title}\n"));
        }
        if let Some(d) = e["description"].as_str() {
            out.push_str(d);
            out.push('\n');
        }
        for f in e["fields"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "## {}\n{}\n",
                f["name"].as_str().unwrap_or(""),
                f["value"].as_str().unwrap_or("")
            ));
        }
        if let Some(url) = e["image"]["url"].as_str() {
            out.push_str(&format!("[image {url}]\n"));
        }
        if let Some(footer) = e["footer"]["text"].as_str() {
            out.push_str(&format!("-- {footer}\n"));
        }
    }
    for row in message["components"].as_array().into_iter().flatten() {
        let mut buttons = Vec::new();
        for c in row["components"].as_array().into_iter().flatten() {
            match c["type"].as_u64() {
                Some(2) => buttons.push(format!("[{}]", c["label"].as_str().unwrap_or("?"))),
                Some(3) => {
                    out.push_str(&format!(
                        "[{} ▾]\n",
                        c["placeholder"].as_str().unwrap_or("choose")
                    ));
                    for o in c["options"].as_array().into_iter().flatten() {
                        out.push_str(&format!("  · {}\n", o["label"].as_str().unwrap_or("?")));
                    }
                }
                _ => {}
            }
        }
        if !buttons.is_empty() {
            out.push_str(&buttons.join(" "));
            out.push('\n');
        }
    }
    for (name, _, _) in &r.files {
        out.push_str(&format!("[attachment {name}]\n"));
    }
    redact(&out)
}

fn redact(text: &str) -> String {
    let elapsed = regex::Regex::new(r"\b\d+(\.\d+)? ?(ms|s)\b").unwrap();
    let timestamp = regex::Regex::new(r"<t:\d+(:[a-zA-Z])?>").unwrap();
    let snowflake = regex::Regex::new(r"\b\d{17,20}\b").unwrap();
    let clock = regex::Regex::new(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}( UTC)?").unwrap();
    let text = timestamp.replace_all(text, "<t:…>");
    let text = clock.replace_all(&text, "<time>");
    let text = snowflake.replace_all(&text, "<id>");
    // How many requests waited for the pacer depends on timing.
    let paced = regex::Regex::new(r"\b\d+ paced\b").unwrap();
    let text = paced.replace_all(&text, "<n> paced");
    elapsed.replace_all(&text, "<elapsed>").into_owned()
}

/// `/command [group] sub [value…] [name:value…]` against the registered commands: the command
/// name, the subcommand path, and the leaf options as the interaction carries them.
fn parse(registered: &[Value], line: &str) -> (String, Vec<String>, Value) {
    let words = split(line);
    let (first, rest) = words.split_first().expect("a command");
    let name = first
        .strip_prefix('/')
        .unwrap_or_else(|| panic!("{line:?} does not start with /"));
    let mut level = registered
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("/{name} is not registered"))
        .clone();
    let mut path = Vec::new();
    let mut rest = rest.iter().peekable();
    // Subcommand groups (2) and subcommands (1), by name.
    while let Some(next) = rest.peek() {
        let sub = level["options"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| matches!(o["type"].as_u64(), Some(1 | 2)) && o["name"] == next.as_str())
            .cloned();
        match sub {
            Some(sub) => {
                path.push(next.to_string());
                rest.next();
                level = sub;
            }
            None => break,
        }
    }
    let declared: Vec<Value> = level["options"].as_array().cloned().unwrap_or_default();
    if declared
        .iter()
        .any(|o| matches!(o["type"].as_u64(), Some(1 | 2)))
    {
        panic!("{line:?}: which subcommand of {}?", level["name"]);
    }
    let mut options: Vec<Value> = Vec::new();
    let mut positional = declared.iter();
    for word in rest {
        let named = word.split_once(':').and_then(|(n, v)| {
            declared
                .iter()
                .find(|o| o["name"] == n)
                .map(|o| (o.clone(), v.to_string()))
        });
        let (option, value) = match named {
            Some(found) => found,
            None => {
                let option = positional
                    .by_ref()
                    .find(|o| !options.iter().any(|set| set["name"] == o["name"]))
                    .unwrap_or_else(|| panic!("{line:?}: no option left for {word:?}"))
                    .clone();
                (option, word.clone())
            }
        };
        let kind = option["type"].as_u64().unwrap_or(3);
        let value = match kind {
            4 => json!(value.parse::<i64>().expect("an integer")),
            5 => json!(value.parse::<bool>().expect("true or false")),
            10 => json!(value.parse::<f64>().expect("a number")),
            _ => json!(value),
        };
        options.push(json!({ "name": option["name"], "type": kind, "value": value }));
    }
    (name.to_string(), path, Value::Array(options))
}

/// Words, with `"…"` keeping spaces (also after `name:`).
fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quote in {line:?}");
    if any {
        words.push(word);
    }
    words
}

#[test]
fn commands_parse_against_the_registered_options() {
    let registered = vec![json!({
        "name": "rdp",
        "options": [
            {"name": "check", "type": 1, "options": [{"name": "vm", "type": 3}]},
            {"name": "open-rdp", "type": 1, "options": [
                {"name": "vm", "type": 3}, {"name": "source", "type": 3}, {"name": "hours", "type": 4}
            ]},
            {"name": "explain", "type": 1, "options": [{"name": "error", "type": 3}]},
        ],
    })];
    assert_eq!(
        parse(&registered, "/rdp check web-01"),
        (
            "rdp".into(),
            vec!["check".into()],
            json!([{"name": "vm", "type": 3, "value": "web-01"}])
        )
    );
    assert_eq!(
        parse(&registered, "/rdp open-rdp hours:2 web-02 198.51.100.7").2,
        json!([
            {"name": "hours", "type": 4, "value": 2},
            {"name": "vm", "type": 3, "value": "web-02"},
            {"name": "source", "type": 3, "value": "198.51.100.7"},
        ])
    );
    assert_eq!(
        parse(
            &registered,
            r#"/rdp explain error:"Your credentials did not work""#
        )
        .2,
        json!([{"name": "error", "type": 3, "value": "Your credentials did not work"}])
    );
}
