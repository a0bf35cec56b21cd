//! Interactions: INTERACTION_CREATE payloads for slash commands, autocomplete, components and
//! modal submits, and their initial responses (`POST /interactions/{id}/{token}/callback`).

use super::gateway::dispatch;
use super::messages::{edit_message, new_message, store_message};
use super::multipart::Upload;
use super::rest::Reply;
use super::{
    FakeDiscord, Interaction, Origin, Pending, User, World, APP_ID, APP_PERMISSIONS, GUILD_ID,
    MEMBER_PERMISSIONS,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

impl FakeDiscord {
    /// Dispatch INTERACTION_CREATE for a chat-input command. `path` names the subcommand group
    /// and/or subcommand; `options` are the leaf options, e.g.
    /// `json!([{"name":"vm","type":3,"value":"web-01"}])`.
    pub async fn slash(
        &self,
        user: &User,
        command: &str,
        path: &[&str],
        options: Value,
    ) -> Interaction {
        command_interaction(&mut self.inner.lock(), user, command, path, options, 2)
    }

    /// Same as [`Self::slash`] but APPLICATION_COMMAND_AUTOCOMPLETE, with `focused: true` on the
    /// leaf option named `focused`.
    pub async fn autocomplete(
        &self,
        user: &User,
        command: &str,
        path: &[&str],
        mut options: Value,
        focused: &str,
    ) -> Interaction {
        let mut found = false;
        if let Some(list) = options.as_array_mut() {
            for option in list {
                if option.get("name").and_then(Value::as_str) == Some(focused) {
                    option["focused"] = Value::Bool(true);
                    found = true;
                }
            }
        }
        assert!(found, "no option named {focused} in {options}");
        command_interaction(&mut self.inner.lock(), user, command, path, options, 4)
    }

    /// `n` identical [`Self::slash`] interactions queued on the gateway back to back, under one
    /// lock, without waiting for any answer (a load test's burst).
    pub fn slash_burst(
        &self,
        user: &User,
        command: &str,
        path: &[&str],
        options: Value,
        n: usize,
    ) -> Vec<Interaction> {
        let mut world = self.inner.lock();
        (0..n)
            .map(|_| command_interaction(&mut world, user, command, path, options.clone(), 2))
            .collect()
    }

    /// A MESSAGE_COMPONENT interaction (button, or select menu when `values` is not empty) on a
    /// message the bot sent.
    pub async fn component(
        &self,
        user: &User,
        message_id: u64,
        custom_id: &str,
        values: &[&str],
    ) -> Interaction {
        let mut world = self.inner.lock();
        let message = world
            .messages
            .get(&message_id)
            .cloned()
            .unwrap_or_else(|| panic!("the bot sent no message {message_id}"));
        let component_type = find_component(&message, custom_id)
            .and_then(|c| c.get("type").and_then(Value::as_u64))
            .unwrap_or(if values.is_empty() { 2 } else { 3 });
        let mut data = json!({ "custom_id": custom_id, "component_type": component_type });
        if component_type != 2 {
            data["values"] = json!(values);
        }
        let id = world.new_id();
        let token = interaction_token(id);
        let payload = interaction_payload(id, &token, 3, user, data, Some(message), world.origin);
        register_and_dispatch(&mut world, id, token, 3, Some(message_id), payload)
    }

    /// A MODAL_SUBMIT interaction for the modal `opened_by` was answered with (callback type 9),
    /// with `fields` as `(text input custom_id, value)`. Panics if there was no modal or it has no
    /// such input.
    pub async fn modal_submit(
        &self,
        user: &User,
        opened_by: &Interaction,
        fields: &[(&str, &str)],
    ) -> Interaction {
        let mut world = self.inner.lock();
        let (modal, source) = match world.interactions.get(&opened_by.token) {
            Some(p) => (p.modal.clone(), p.source_message),
            None => (None, None),
        };
        let modal = modal.unwrap_or_else(|| {
            panic!("interaction {} was not answered with a modal", opened_by.id)
        });
        let rows: Vec<Value> = fields
            .iter()
            .map(|(custom_id, value)| {
                assert!(
                    find_component(&modal, custom_id).is_some(),
                    "the modal has no input {custom_id}: {modal}"
                );
                json!({
                    "type": 1,
                    "components": [{ "type": 4, "custom_id": custom_id, "value": value }],
                })
            })
            .collect();
        let data = json!({ "custom_id": modal["custom_id"], "components": rows });
        let message = source.and_then(|id| world.messages.get(&id).cloned());
        let id = world.new_id();
        let token = interaction_token(id);
        let payload = interaction_payload(id, &token, 5, user, data, message, world.origin);
        register_and_dispatch(&mut world, id, token, 5, source, payload)
    }

    /// Hold every interaction callback response this long (the request is recorded and takes
    /// effect on arrival). The 3-second rule still counts from dispatch to arrival.
    pub fn set_callback_delay(&self, delay: Duration) {
        self.inner.lock().callback_delay = delay;
    }

    /// From now on the interaction's token is dead: its callback answers 404 Unknown interaction
    /// and its webhook routes 401 Invalid Webhook Token, as after 15 minutes.
    pub fn expire_token(&self, i: &Interaction) {
        if let Some(p) = self.inner.lock().interactions.get_mut(&i.token) {
            p.expired = true;
        }
    }
}

fn interaction_token(id: u64) -> String {
    format!("aW50ZXJhY3Rpb24.{id:x}.fake-interaction-token")
}

/// INTERACTION_CREATE for a chat-input command, dispatched on the gateway.
fn command_interaction(
    world: &mut World,
    user: &User,
    command: &str,
    path: &[&str],
    options: Value,
    kind: u8,
) -> Interaction {
    let registered = world
        .commands
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(command))
        .cloned()
        .unwrap_or_else(|| {
            let names: Vec<&str> = world
                .commands
                .iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            panic!("command /{command} is not registered (registered: {names:?})")
        });
    let mut data = json!({
        "id": registered["id"],
        "name": command,
        "type": 1,
        "options": nest_options(path, options),
    });
    // Only guild commands carry the guild id in the interaction data.
    if !registered["guild_id"].is_null() {
        data["guild_id"] = registered["guild_id"].clone();
    }
    let id = world.new_id();
    let token = interaction_token(id);
    let payload = interaction_payload(id, &token, kind, user, data, None, world.origin);
    register_and_dispatch(world, id, token, kind, None, payload)
}

fn register_and_dispatch(
    world: &mut World,
    id: u64,
    token: String,
    kind: u8,
    source_message: Option<u64>,
    payload: Value,
) -> Interaction {
    let sent_at = Instant::now();
    // `dispatch` below gives the frame the next sequence number.
    let seq = world.gateway.seq + 1;
    world.interactions.insert(
        token.clone(),
        Pending {
            id,
            kind,
            channel_id: world.origin.channel(),
            dispatched: sent_at,
            seq,
            acknowledged: false,
            original: None,
            source_message,
            user: if payload["member"].is_null() {
                payload["user"].clone()
            } else {
                payload["member"]["user"].clone()
            },
            modal: None,
            expired: false,
        },
    );
    dispatch(world, "INTERACTION_CREATE", payload);
    Interaction { id, token, sent_at }
}

/// Wrap leaf options in the subcommand (group) options named by `path`.
fn nest_options(path: &[&str], options: Value) -> Value {
    let mut inner = options;
    for (depth, name) in path.iter().enumerate().rev() {
        // With two names the first is a group (2); the last is always a subcommand (1).
        let kind = if depth + 1 == path.len() { 1 } else { 2 };
        inner = json!([{ "name": name, "type": kind, "options": inner }]);
    }
    inner
}

fn find_component<'a>(message: &'a Value, custom_id: &str) -> Option<&'a Value> {
    fn walk<'a>(v: &'a Value, custom_id: &str) -> Option<&'a Value> {
        if v.get("custom_id").and_then(Value::as_str) == Some(custom_id) {
            return Some(v);
        }
        v.get("components")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find_map(|c| walk(c, custom_id)))
    }
    walk(message, custom_id)
}

fn member_user(user: &User) -> Value {
    json!({
        "id": user.id.to_string(),
        "username": user.name,
        "discriminator": "0",
        "global_name": user.name,
        "avatar": null,
        "public_flags": 0,
    })
}

/// INTERACTION_CREATE data, with every field serenity 0.12's `Interaction` requires.
fn interaction_payload(
    id: u64,
    token: &str,
    kind: u8,
    user: &User,
    data: Value,
    message: Option<Value>,
    origin: Origin,
) -> Value {
    let roles: Vec<String> = user.roles.iter().map(u64::to_string).collect();
    let channel = origin.channel().to_string();
    let mut payload = json!({
        "id": id.to_string(),
        "application_id": APP_ID.to_string(),
        "type": kind,
        "data": data,
        "channel_id": channel,
        "token": token,
        "version": 1,
        "app_permissions": APP_PERMISSIONS.to_string(),
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 26_214_400,
    });
    match origin {
        Origin::Guild { guild, .. } => {
            let guild = guild.to_string();
            payload["guild_id"] = json!(guild);
            payload["guild"] = json!({ "id": guild, "locale": "en-US", "features": [] });
            payload["channel"] = json!({
                "id": channel,
                "type": 0,
                "name": "ops",
                "guild_id": guild,
                "permissions": MEMBER_PERMISSIONS.to_string(),
            });
            payload["member"] = json!({
                "user": member_user(user),
                "nick": null,
                "avatar": null,
                "roles": roles,
                "joined_at": "2024-01-01T00:00:00.000000+00:00",
                "premium_since": null,
                "deaf": false,
                "mute": false,
                "flags": 0,
                "pending": false,
                "permissions": MEMBER_PERMISSIONS.to_string(),
                "communication_disabled_until": null,
            });
            payload["guild_locale"] = json!("en-US");
            payload["authorizing_integration_owners"] = json!({ "0": guild });
            payload["context"] = json!(0);
        }
        Origin::DirectMessage { .. } => {
            // A DM: the user instead of a member, a DM channel, no guild.
            payload["user"] = member_user(user);
            payload["channel"] = json!({
                "id": channel,
                "type": 1,
                "recipients": [member_user(user)],
            });
            payload["authorizing_integration_owners"] = json!({ "1": user.id.to_string() });
            payload["context"] = json!(1);
        }
    }
    if let Some(message) = message {
        payload["message"] = message;
    }
    payload
}

#[allow(clippy::too_many_arguments)]
pub(super) fn callback(
    world: &mut World,
    id: &str,
    token: &str,
    body: &Value,
    uploads: &[Upload],
    arrived: Instant,
    deadline: Duration,
    violations: &mut Vec<String>,
) -> Reply {
    let unknown = || Reply::error(404, 10062, "Unknown interaction");
    let Some(pending) = world.interactions.get(token) else {
        return unknown();
    };
    if pending.id.to_string() != id
        || pending.expired
        || arrived.duration_since(pending.dispatched) > deadline
    {
        return unknown();
    }
    if pending.acknowledged {
        return Reply::error(400, 40060, "Interaction has already been acknowledged.");
    }
    let (kind, source, channel_id) = (pending.kind, pending.source_message, pending.channel_id);
    let mut metadata = json!({
        "id": id,
        "type": kind,
        "user": pending.user,
        "authorizing_integration_owners": { "0": GUILD_ID.to_string() },
    });
    if let Some(source) = source {
        metadata["interacted_message_id"] = json!(source.to_string());
    }
    if kind == 5 {
        // serenity requires the metadata of the interaction that opened the modal.
        metadata["triggering_interaction_metadata"] = json!({
            "id": id,
            "type": 2,
            "user": pending.user,
            "authorizing_integration_owners": { "0": GUILD_ID.to_string() },
        });
    }
    let response_type = body.get("type").and_then(Value::as_u64).unwrap_or(0);
    let data = body.get("data").cloned().unwrap_or_else(|| json!({}));
    let allowed = match response_type {
        4 | 5 => matches!(kind, 2 | 3 | 5),
        // A modal must be the first response, and never answers a modal submit.
        9 => kind == 2 || kind == 3,
        6 | 7 => kind == 3 || (kind == 5 && source.is_some()),
        8 => kind == 4,
        _ => false,
    };
    if !allowed {
        return Reply {
            status: 400,
            body: Some(json!({
                "message": "Invalid Form Body",
                "code": 50035,
                "errors": { "type": { "_errors": [{
                    "code": "INTERACTION_RESPONSE_TYPE_INVALID",
                    "message": format!("Response type {response_type} is not valid for interaction type {kind}")
                }] } }
            })),
        };
    }
    let original = match response_type {
        4 => {
            let mut message = new_message(world, channel_id, &data, uploads, 20, violations);
            message["interaction_metadata"] = metadata;
            Some(store_message(world, message))
        }
        5 => {
            let ephemeral = data.get("flags").and_then(Value::as_u64).unwrap_or(0) & 64;
            let mut message = new_message(world, channel_id, &json!({}), &[], 20, violations);
            message["flags"] = json!(ephemeral | 128);
            message["interaction_metadata"] = metadata;
            Some(store_message(world, message))
        }
        6 => source,
        7 => {
            if let Some(source) = source {
                edit_message(world, source, &data, uploads, violations);
            }
            source
        }
        _ => None,
    };
    if let Some(pending) = world.interactions.get_mut(token) {
        if response_type == 9 {
            pending.modal = Some(data);
        }
        pending.acknowledged = true;
        if original.is_some() {
            pending.original = original;
        }
    }
    Reply::no_content()
}
