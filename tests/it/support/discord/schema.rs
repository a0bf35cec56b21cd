//! Schema validation: every JSON body against its route's request schema in
//! `tests/fixtures/discord-openapi.json`.

use super::{routes, FakeDiscord};
use anyhow::{anyhow, Context as _};
use axum::http::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

impl FakeDiscord {
    /// Compile the request schema of every route the fake validates, now, instead of on each
    /// route's first request (compiling one takes tens of milliseconds).
    pub fn precompile_schemas() -> anyhow::Result<()> {
        for (method, route) in [
            (Method::POST, routes::CALLBACK),
            (Method::POST, routes::FOLLOWUP),
            (Method::PATCH, routes::ORIGINAL),
            (Method::PATCH, routes::WEBHOOK_MESSAGE),
            (Method::POST, routes::CHANNEL_MESSAGES),
            (Method::PATCH, routes::CHANNEL_MESSAGE),
            (Method::PUT, routes::GUILD_COMMANDS),
            (Method::PUT, routes::GLOBAL_COMMANDS),
        ] {
            validator(&method, route)?;
        }
        Ok(())
    }
}

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/discord-openapi.json"
        );
        let text = std::fs::read_to_string(path).expect("read the Discord OpenAPI spec");
        serde_json::from_str(&text).expect("parse the Discord OpenAPI spec")
    })
}

/// A route's request schema, and its `anyOf` branches compiled alone so that a failure can name
/// the closest branch instead of "not valid under any of the schemas".
struct RouteSchema {
    whole: jsonschema::Validator,
    branches: Vec<(String, jsonschema::Validator)>,
}

type Validator = Option<Arc<RouteSchema>>;

fn compile(schema: &Value, key: &str) -> anyhow::Result<jsonschema::Validator> {
    // Refs are "#/components/schemas/...": compile a document that carries them.
    let document = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": spec()["components"],
        "allOf": [schema],
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&document)
        .map_err(|e| anyhow!("compiling the schema of {key}: {e}"))
}

/// The request-body validator of `method template`, compiled once per test binary. Requests
/// that need it while it compiles wait for that compilation rather than each starting their own.
fn validator(method: &Method, template: &str) -> anyhow::Result<Validator> {
    type Cell = Arc<OnceLock<Result<Validator, String>>>;
    static CACHE: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();
    let key = format!("{method} {template}");
    let cell: Cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_default()
        .clone();
    cell.get_or_init(|| compile_route(method, template, &key).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn compile_route(method: &Method, template: &str, key: &str) -> anyhow::Result<Validator> {
    let operation = spec()
        .pointer(&format!(
            "/paths/{}/{}",
            template.replace('~', "~0").replace('/', "~1"),
            method.as_str().to_ascii_lowercase()
        ))
        .with_context(|| format!("{key} is not in the OpenAPI spec"))?;
    let content = operation.pointer("/requestBody/content");
    let schema = content
        .and_then(|c| c.get("application/json"))
        .or_else(|| content.and_then(|c| c.get("multipart/form-data")))
        .and_then(|c| c.get("schema"));
    let compiled = match schema {
        None => None,
        Some(schema) => {
            let whole = compile(schema, key)?;
            let mut branches = Vec::new();
            let alternatives = schema
                .get("anyOf")
                .or_else(|| schema.get("oneOf"))
                .and_then(Value::as_array);
            for branch in alternatives.into_iter().flatten() {
                let name = branch
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.rsplit('/').next())
                    .unwrap_or("(inline)")
                    .to_string();
                branches.push((name, compile(branch, key)?));
            }
            Some(Arc::new(RouteSchema { whole, branches }))
        }
    };
    Ok(compiled)
}

fn error_lines(schema: &jsonschema::Validator, body: &Value) -> Vec<String> {
    schema
        .iter_errors(body)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            format!("{e} (at {at})")
        })
        .collect()
}

pub(super) fn validate(method: &Method, template: &'static str, body: &Value) -> Vec<String> {
    let schema = match validator(method, template) {
        Ok(Some(v)) => v,
        Ok(None) => return vec![format!("{method} {template} takes no request body")],
        Err(e) => return vec![format!("{e:#}")],
    };
    let mut body = body.clone();
    stringify_integer_ids(&mut body);
    let errors = error_lines(&schema.whole, &body);
    if errors.is_empty() {
        return errors;
    }
    let closest = schema
        .branches
        .iter()
        .map(|(name, branch)| (name, error_lines(branch, &body)))
        .min_by_key(|(_, errors)| errors.len());
    match closest {
        Some((name, branch_errors)) if !branch_errors.is_empty() => branch_errors
            .into_iter()
            .map(|e| format!("{method} {template}: matches no alternative; closest {name}: {e}"))
            .collect(),
        _ => errors
            .into_iter()
            .map(|e| format!("{method} {template}: {e}"))
            .collect(),
    }
}

/// Discord accepts integer snowflakes where the spec says string (serenity sends the ids of new
/// attachments as integers), so `id`/`*_id` integers are checked as strings.
fn stringify_integer_ids(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if (key == "id" || key.ends_with("_id")) && v.is_u64() {
                    *v = Value::String(v.to_string());
                } else {
                    stringify_integer_ids(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(stringify_integer_ids),
        _ => {}
    }
}
