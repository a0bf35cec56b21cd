//! Messages: webhook messages (`@original`, follow-ups, edits) and channel messages, with their
//! attachments.

use super::gateway::bot_user;
use super::multipart::Upload;
use super::rest::Reply;
use super::{now_rfc3339, FakeDiscord, Interaction, World, APP_ID, CHANNEL_ID, GUILD_ID};
use axum::http::Method;
use serde_json::{json, Value};

impl FakeDiscord {
    /// The original response message as it stands now, after all edits.
    pub fn original(&self, i: &Interaction) -> Option<Value> {
        self.with_original(i, Value::clone)
    }

    /// `read` of interaction `i`'s original response, under the lock, without copying it.
    fn with_original<T>(&self, i: &Interaction, read: impl FnOnce(&Value) -> T) -> Option<T> {
        let world = self.inner.lock();
        let id = world.interactions.get(&i.token)?.original?;
        world.messages.get(&id).map(read)
    }

    /// The title of the first embed of interaction `i`'s original response, read in place (a
    /// poll over a thousand interactions would otherwise copy a thousand messages, under the
    /// lock the fake's handlers need).
    pub fn original_title(&self, i: &Interaction) -> Option<String> {
        self.with_original(i, |m| {
            m.pointer("/embeds/0/title")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .flatten()
    }

    /// The id of the newest message the bot created that still exists.
    pub fn last_message_id(&self) -> Option<u64> {
        self.inner.lock().messages.keys().max().copied()
    }

    /// A message the bot created (and that was not deleted), as it stands now.
    pub fn message(&self, id: u64) -> Option<Value> {
        self.inner.lock().messages.get(&id).cloned()
    }

    /// The custom id of the button labelled `label` on message `id` as it stands now.
    pub fn button(&self, id: u64, label: &str) -> String {
        let message = self.message(id).expect("the message");
        super::components(&message)
            .iter()
            .find(|b| b["label"] == label)
            .and_then(|b| b["custom_id"].as_str())
            .unwrap_or_else(|| panic!("no button {label} in {message}"))
            .to_string()
    }
}

/// The messages a request addresses: one message of a channel, or the channel's new one.
pub(super) struct Address {
    channel: u64,
    message: Option<u64>,
    /// Through an interaction's webhook (`/webhooks/...`) rather than the channel's route.
    webhook: bool,
}

/// `/webhooks/{app}/{token}/…`: the interaction's follow-ups and its `@original`.
pub(super) fn webhook_address(
    world: &World,
    app: &str,
    token: &str,
    rest: &[&str],
) -> Result<Address, Reply> {
    if app != APP_ID.to_string() {
        return Err(Reply::error(404, 10015, "Unknown Webhook"));
    }
    let Some(pending) = world.interactions.get(token) else {
        return Err(Reply::error(401, 50027, "Invalid Webhook Token"));
    };
    if pending.expired {
        return Err(Reply::error(401, 50027, "Invalid Webhook Token"));
    }
    if !pending.acknowledged {
        return Err(Reply::error(404, 10015, "Unknown Webhook"));
    }
    let message = match rest {
        [] => None,
        ["messages", "@original"] => match pending.original {
            Some(id) => Some(id),
            None => return Err(Reply::error(404, 10008, "Unknown Message")),
        },
        ["messages", id] => Some(parse_id(id)?),
        _ => return Err(Reply::error(404, 0, "404: Not Found")),
    };
    Ok(Address {
        channel: pending.channel_id,
        message,
        webhook: true,
    })
}

/// `/channels/{channel}/messages/…`: the bot's messages in the channel.
pub(super) fn channel_address(channel: &str, rest: &[&str]) -> Result<Address, Reply> {
    if channel != CHANNEL_ID.to_string() {
        return Err(Reply::error(404, 10003, "Unknown Channel"));
    }
    let message = match rest {
        [] => None,
        [id] => Some(parse_id(id)?),
        _ => return Err(Reply::error(404, 0, "404: Not Found")),
    };
    Ok(Address {
        channel: CHANNEL_ID,
        message,
        webhook: false,
    })
}

/// POST a new message, or GET, PATCH or DELETE the one addressed.
pub(super) fn messages(
    world: &mut World,
    method: &Method,
    to: Address,
    body: &Value,
    uploads: &[Upload],
    violations: &mut Vec<String>,
) -> Reply {
    match (method.as_str(), to.message) {
        ("POST", None) => {
            let mut message = new_message(world, to.channel, body, uploads, 0, violations);
            if !to.webhook {
                message["webhook_id"] = Value::Null;
                message["guild_id"] = Value::String(GUILD_ID.to_string());
            }
            let id = store_message(world, message);
            Reply::ok(world.messages[&id].clone())
        }
        // An ephemeral message is the interaction's alone: the channel routes cannot edit or
        // delete it, Discord answers "Unknown Message" (discord/discord-api-docs#3090: editing a
        // non-ephemeral interaction response with PATCH channels/{c}/messages/{m} works, an
        // ephemeral one gives Unknown Message).
        ("PATCH" | "DELETE", Some(id))
            if !to.webhook
                && world
                    .messages
                    .get(&id)
                    .is_some_and(|m| m["flags"].as_u64().unwrap_or(0) & 64 != 0) =>
        {
            Reply::error(404, 10008, "Unknown Message")
        }
        (method, Some(id)) => existing(world, method, id, body, uploads, violations),
        _ => Reply::error(405, 0, "405: Method Not Allowed"),
    }
}

fn parse_id(id: &str) -> Result<u64, Reply> {
    id.parse::<u64>()
        .map_err(|_| Reply::error(404, 10008, "Unknown Message"))
}

/// GET, PATCH or DELETE of message `id`, whoever addresses it (webhook or channel).
fn existing(
    world: &mut World,
    method: &str,
    id: u64,
    body: &Value,
    uploads: &[Upload],
    violations: &mut Vec<String>,
) -> Reply {
    let unknown = || Reply::error(404, 10008, "Unknown Message");
    match method {
        "GET" => world
            .messages
            .get(&id)
            .map_or_else(unknown, |m| Reply::ok(m.clone())),
        "PATCH" => {
            edit_message(world, id, body, uploads, violations).map_or_else(unknown, Reply::ok)
        }
        "DELETE" => world
            .messages
            .remove(&id)
            .map_or_else(unknown, |_| Reply::no_content()),
        _ => Reply::error(405, 0, "405: Method Not Allowed"),
    }
}

/// A message object as Discord returns it, with every field serenity's `Message` requires.
pub(super) fn new_message(
    world: &mut World,
    channel_id: u64,
    body: &Value,
    uploads: &[Upload],
    kind: u8,
    violations: &mut Vec<String>,
) -> Value {
    let id = world.new_id();
    let attachments = resolve_attachments(world, channel_id, &[], body, uploads, violations);
    json!({
        "id": id.to_string(),
        "channel_id": channel_id.to_string(),
        "author": bot_user(),
        "content": body.get("content").and_then(Value::as_str).unwrap_or(""),
        "timestamp": now_rfc3339(),
        "edited_timestamp": null,
        "tts": body.get("tts").and_then(Value::as_bool).unwrap_or(false),
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": attachments,
        "embeds": body.get("embeds").cloned().filter(|e| !e.is_null()).unwrap_or_else(|| json!([])),
        "components": body.get("components").cloned().filter(|c| !c.is_null()).unwrap_or_else(|| json!([])),
        "pinned": false,
        "type": kind,
        "flags": body.get("flags").and_then(Value::as_u64).unwrap_or(0),
        "webhook_id": APP_ID.to_string(),
        "application_id": APP_ID.to_string(),
    })
}

pub(super) fn store_message(world: &mut World, message: Value) -> u64 {
    let id = message["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    world.messages.insert(id, message);
    id
}

/// Apply a PATCH (or an UPDATE_MESSAGE callback) to a stored message; the result, if it exists.
pub(super) fn edit_message(
    world: &mut World,
    id: u64,
    body: &Value,
    uploads: &[Upload],
    violations: &mut Vec<String>,
) -> Option<Value> {
    let message = world.messages.get(&id)?.clone();
    let channel_id = message["channel_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CHANNEL_ID);
    let existing = message["attachments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let attachments = resolve_attachments(world, channel_id, &existing, body, uploads, violations);
    let mut message = message;
    let flags = message["flags"].as_u64().unwrap_or(0);
    if flags & 128 != 0 {
        // Completing a deferred response: the "thinking" state ends, ephemerality stays.
        message["flags"] = json!(flags & !128);
    } else {
        message["edited_timestamp"] = json!(now_rfc3339());
    }
    for key in ["content", "embeds", "components"] {
        if let Some(value) = body.get(key) {
            message[key] = match (key, value) {
                ("content", Value::Null) => json!(""),
                (_, Value::Null) => json!([]),
                _ => value.clone(),
            };
        }
    }
    message["attachments"] = Value::Array(attachments);
    world.messages.insert(id, message.clone());
    Some(message)
}

/// The attachment list after a create/edit: `attachments` in the body names the ones to keep (by
/// id) and the new ones (by the `n` of their `files[n]` part); uploads it does not name are added.
fn resolve_attachments(
    world: &mut World,
    channel_id: u64,
    existing: &[Value],
    body: &Value,
    uploads: &[Upload],
    violations: &mut Vec<String>,
) -> Vec<Value> {
    let mut used = vec![false; uploads.len()];
    let mut result = Vec::new();
    match body.get("attachments").and_then(Value::as_array) {
        Some(listed) => {
            for entry in listed {
                let index = entry.get("id").and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                });
                let old = existing.iter().find(|a| {
                    a.get("id")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        == index
                });
                if let Some(old) = old {
                    result.push(old.clone());
                    continue;
                }
                let upload = uploads
                    .iter()
                    .position(|u| u.index.is_some() && u.index == index);
                match upload {
                    Some(n) => {
                        used[n] = true;
                        let description = entry.get("description").cloned();
                        result.push(new_attachment(world, channel_id, &uploads[n], description));
                    }
                    None => violations.push(format!(
                        "attachment {entry} is neither an existing attachment nor a files[n] part"
                    )),
                }
            }
        }
        None => result.extend(existing.iter().cloned()),
    }
    for (n, upload) in uploads.iter().enumerate() {
        if !used[n] {
            result.push(new_attachment(world, channel_id, upload, None));
        }
    }
    result
}

fn new_attachment(
    world: &mut World,
    channel_id: u64,
    upload: &Upload,
    description: Option<Value>,
) -> Value {
    let id = world.new_id();
    let url = format!(
        "/attachments/{channel_id}/{id}/{}",
        upload.filename.replace('/', "_")
    );
    world
        .attachments
        .insert(id, (upload.content_type.clone(), upload.bytes.clone()));
    let mut attachment = json!({
        "id": id.to_string(),
        "filename": upload.filename,
        "size": upload.bytes.len(),
        "url": url,
        "proxy_url": url,
        "content_type": upload.content_type,
    });
    if let Some(description) = description.filter(|d| !d.is_null()) {
        attachment["description"] = description;
    }
    // PNG: width and height are the first fields of IHDR.
    if upload.bytes.len() >= 24 && upload.bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let be = |at: usize| {
            u32::from_be_bytes([
                upload.bytes[at],
                upload.bytes[at + 1],
                upload.bytes[at + 2],
                upload.bytes[at + 3],
            ])
        };
        attachment["width"] = json!(be(16));
        attachment["height"] = json!(be(20));
    }
    attachment
}
