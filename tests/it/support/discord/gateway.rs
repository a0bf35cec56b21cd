//! The gateway: the websocket (Hello, IDENTIFY → READY, heartbeats, RESUME with replay, close
//! codes) and the dispatches sent on it.

use super::{
    FakeDiscord, Inner, Interaction, Outgoing, Stalled, World, APP_ID, BOT_USER_ID, GUILD_ID, TOKEN,
};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

impl FakeDiscord {
    /// When the INTERACTION_CREATE frame of `i` was written to the bot's websocket (its
    /// [`Interaction::sent_at`] is when it was queued), if it was in this gateway session.
    pub fn frame_written_at(&self, i: &Interaction) -> Option<Instant> {
        let world = self.inner.lock();
        let seq = world.interactions.get(&i.token)?.seq;
        world.gateway.written.get(&seq).copied()
    }

    /// Dispatch any gateway event (op 0) to the bot.
    pub async fn dispatch(&self, event: &str, data: Value) {
        dispatch(&mut self.inner.lock(), event, data);
    }

    /// Every gateway dispatch (op 0 frames: `t`, `s`, `d`) sent so far, across sessions.
    pub fn dispatched(&self) -> Vec<Value> {
        self.inner.lock().gateway.history.clone()
    }

    /// Close the current gateway connection abruptly (no close frame). The bot should
    /// reconnect and RESUME; dispatches sent meanwhile are replayed.
    pub async fn drop_gateway(&self) {
        if let Some((_, tx)) = self.inner.lock().gateway.conn.take() {
            let _ = tx.send(Outgoing::Abort);
        }
    }

    /// Close the current gateway connection with a close frame carrying `code`.
    pub async fn close_gateway(&self, code: u16) {
        if let Some((_, tx)) = self.inner.lock().gateway.conn.take() {
            let _ = tx.send(Outgoing::Close(code, "closed by the test"));
        }
    }

    /// From now on IDENTIFY and RESUME get no answer (a gateway that accepts connections but
    /// does not start sessions), until [`Self::release_sessions`].
    pub fn stall_sessions(&self) {
        self.inner
            .lock()
            .gateway
            .stalled
            .get_or_insert_with(Vec::new);
    }

    /// Answer the IDENTIFY and RESUME that waited (on connections still open), and the next
    /// ones at once.
    pub fn release_sessions(&self) {
        let mut world = self.inner.lock();
        for held in world.gateway.stalled.take().unwrap_or_default() {
            if !held.tx.is_closed() {
                start_session(
                    &self.inner,
                    &mut world,
                    held.conn_id,
                    &held.tx,
                    held.op,
                    &held.d,
                );
            }
        }
    }

    /// Websocket connections open now (a bot's, or two bots').
    pub fn gateway_connections(&self) -> usize {
        self.inner.lock().gateway.open
    }

    pub fn identifies(&self) -> usize {
        self.inner.lock().gateway.identifies
    }

    pub fn resumes(&self) -> usize {
        self.inner.lock().gateway.resumes
    }
}

pub(super) fn bot_user() -> Value {
    json!({
        "id": BOT_USER_ID.to_string(),
        "username": "rdp-doctor",
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "bot": true,
        "public_flags": 0,
        "flags": 0,
        "mfa_enabled": true,
        "verified": true,
    })
}

fn ready_payload(inner: &Inner, session_id: &str) -> Value {
    json!({
        "v": 10,
        "user": bot_user(),
        "user_settings": {},
        "private_channels": [],
        "guilds": [{ "id": GUILD_ID.to_string(), "unavailable": true }],
        "session_id": session_id,
        "resume_gateway_url": inner.gateway_url,
        "shard": [0, 1],
        "application": { "id": APP_ID.to_string(), "flags": 0 },
    })
}

/// Send an op-0 dispatch to the identified connection (or only log it while there is none, to
/// be replayed on RESUME).
pub(super) fn dispatch(world: &mut World, event: &str, data: Value) {
    let gw = &mut world.gateway;
    gw.seq += 1;
    let frame = json!({ "op": 0, "t": event, "s": gw.seq, "d": data });
    gw.history.push(frame.clone());
    let frame = frame.to_string();
    gw.log.push((gw.seq, frame.clone()));
    if let Some((_, tx)) = &gw.conn {
        let _ = tx.send(Outgoing::Dispatch(gw.seq, frame));
    }
}

pub(super) async fn gateway_connection(inner: Arc<Inner>, stream: TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn_id = {
        let mut world = inner.lock();
        world.gateway.next_conn += 1;
        world.gateway.open += 1;
        world.gateway.next_conn
    };
    let hello = json!({
        "op": 10,
        "d": { "heartbeat_interval": inner.options.heartbeat_interval.as_millis() as u64 },
    });
    if sink.send(WsMessage::Text(hello.to_string())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            incoming = source.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    handle_gateway_op(&inner, conn_id, &tx, &text);
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    let _ = tx.send(Outgoing::Close(4002, "Error while decoding payload."));
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            outgoing = rx.recv() => match outgoing {
                Some(Outgoing::Text(text)) => {
                    if sink.send(WsMessage::Text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Dispatch(seq, text)) => {
                    if sink.send(WsMessage::Text(text)).await.is_err() {
                        break;
                    }
                    let written = Instant::now();
                    inner.lock().gateway.written.entry(seq).or_insert(written);
                }
                Some(Outgoing::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(WsMessage::Close(Some(frame))).await;
                    break;
                }
                Some(Outgoing::Abort) | None => break,
            },
        }
    }
    let mut world = inner.lock();
    world.gateway.open -= 1;
    if matches!(&world.gateway.conn, Some((id, _)) if *id == conn_id) {
        world.gateway.conn = None;
    }
    inner.changed.notify_waiters();
}

fn token_ok(d: &Value) -> bool {
    let token = d.get("token").and_then(Value::as_str).unwrap_or("");
    token.strip_prefix("Bot ").unwrap_or(token) == TOKEN
}

fn handle_gateway_op(
    inner: &Inner,
    conn_id: u64,
    tx: &mpsc::UnboundedSender<Outgoing>,
    text: &str,
) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        let _ = tx.send(Outgoing::Close(4002, "Error while decoding payload."));
        return;
    };
    let d = frame.get("d").cloned().unwrap_or(Value::Null);
    let mut world = inner.lock();
    match frame.get("op").and_then(Value::as_u64) {
        Some(1) => {
            let _ = tx.send(Outgoing::Text(json!({ "op": 11 }).to_string()));
        }
        Some(op @ (2 | 6)) => {
            if let Some(stalled) = world.gateway.stalled.as_mut() {
                stalled.push(Stalled {
                    conn_id,
                    tx: tx.clone(),
                    op,
                    d,
                });
                return;
            }
            start_session(inner, &mut world, conn_id, tx, op, &d);
        }
        // Presence updates, member chunking and the like need no answer here.
        _ => {}
    }
}

/// IDENTIFY (op 2) → READY, or RESUME (op 6) → the replay and RESUMED, on connection `conn_id`.
fn start_session(
    inner: &Inner,
    world: &mut World,
    conn_id: u64,
    tx: &mpsc::UnboundedSender<Outgoing>,
    op: u64,
    d: &Value,
) {
    match op {
        2 => {
            if !token_ok(d) {
                let _ = tx.send(Outgoing::Close(4004, "Authentication failed."));
                return;
            }
            let session_id = format!("fake-session-{conn_id}");
            let gw = &mut world.gateway;
            gw.identifies += 1;
            gw.session_id = Some(session_id.clone());
            gw.seq = 0;
            gw.log.clear();
            gw.written.clear();
            gw.conn = Some((conn_id, tx.clone()));
            let ready = ready_payload(inner, &session_id);
            dispatch(world, "READY", ready);
            world.gateway.ready_sent = true;
            inner.changed.notify_waiters();
        }
        6 => {
            if !token_ok(d) {
                let _ = tx.send(Outgoing::Close(4004, "Authentication failed."));
                return;
            }
            let session = d.get("session_id").and_then(Value::as_str);
            if session.is_none() || session != world.gateway.session_id.as_deref() {
                let _ = tx.send(Outgoing::Text(json!({ "op": 9, "d": false }).to_string()));
                return;
            }
            let seen = d.get("seq").and_then(Value::as_u64).unwrap_or(0);
            let gw = &mut world.gateway;
            gw.resumes += 1;
            gw.conn = Some((conn_id, tx.clone()));
            for (seq, frame) in gw.log.iter().filter(|(s, _)| *s > seen) {
                let _ = tx.send(Outgoing::Dispatch(*seq, frame.clone()));
            }
            dispatch(world, "RESUMED", json!({}));
            inner.changed.notify_waiters();
        }
        _ => {}
    }
}
