//! Application commands: `PUT`/`GET` of the guild's and the global command set.

use super::rest::Reply;
use super::{FakeDiscord, World, APP_ID, GUILD_ID};
use axum::http::Method;
use serde_json::{json, Value};

impl FakeDiscord {
    /// The last registered command set, as Discord returned it (with ids).
    pub fn registered_commands(&self) -> Vec<Value> {
        self.inner.lock().commands.clone()
    }
}

pub(super) fn commands(
    world: &mut World,
    method: &Method,
    app: &str,
    guild: Option<&str>,
    body: &Value,
) -> Reply {
    if app != APP_ID.to_string() {
        return Reply::error(403, 50001, "Missing Access");
    }
    if let Some(guild) = guild {
        if guild != GUILD_ID.to_string() {
            return Reply::error(403, 50001, "Missing Access");
        }
    }
    if method == Method::GET {
        return Reply::ok(Value::Array(world.commands.clone()));
    }
    let Some(list) = body.as_array() else {
        return Reply::error(400, 50035, "Invalid Form Body");
    };
    let mut registered = Vec::new();
    for command in list {
        let name = command.get("name").and_then(Value::as_str).unwrap_or("");
        let existing_id = world
            .commands
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|c| c.get("id").cloned());
        let id = match existing_id {
            Some(id) => id,
            None => Value::String(world.new_id().to_string()),
        };
        let mut c = command.clone();
        c["id"] = id;
        c["application_id"] = Value::String(APP_ID.to_string());
        c["version"] = Value::String(world.new_id().to_string());
        c["guild_id"] = guild.map_or(Value::Null, |g| Value::String(g.to_string()));
        for (key, default) in [
            ("type", json!(1)),
            ("description", json!("")),
            ("options", json!([])),
            ("default_member_permissions", Value::Null),
            ("nsfw", json!(false)),
        ] {
            if c.get(key).is_none() {
                c[key] = default;
            }
        }
        registered.push(c);
    }
    world.commands = registered.clone();
    world.commands_registered = true;
    Reply::ok(Value::Array(registered))
}
