//! Discord's side of the HTTP interactions endpoint: an interaction the fake made (and put on
//! its gateway, where no bot listens) is signed with a fresh Ed25519 key and POSTed to
//! `rdp-doctor serve`; the HTTP response is then handed to the fake's callback route, as Discord
//! turns it into the interaction's response (the message, the deferral, the form). Follow-ups and
//! edits reach the fake's webhook routes from `serve` itself, through [`Front`]: Discord has
//! applied an interaction's response before it sees the follow-ups sent after it, and the test
//! client hands the response to the fake only after reading it, so the front holds a request
//! naming an interaction's token until its response has been applied.

use super::{FakeDiscord, Interaction, User};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Discord's REST as `serve` sees it (`DISCORD_API_URL`): the fake, except that a request naming
/// an interaction whose HTTP response is still on its way waits for it (see the module's note).
pub struct Front {
    pub url: String,
    state: Arc<FrontState>,
    task: tokio::task::JoinHandle<()>,
}

struct FrontState {
    fake: String,
    client: reqwest::Client,
    /// Interactions delivered but not yet answered at the fake, by token: each with what wakes
    /// the requests waiting for it (one interaction's release wakes only its own; a load test
    /// holds a thousand at once).
    pending: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    pub async fn start(discord: &FakeDiscord) -> Front {
        let state = Arc::new(FrontState {
            fake: discord.url(),
            client: reqwest::Client::new(),
            pending: Mutex::new(HashMap::new()),
        });
        let listener = rdp_doctor::net::listen("127.0.0.1:0")
            .await
            .expect("bind the front");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(forward)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Front { url, state, task }
    }

    /// Hold what the endpoint sends about the interaction with `token` until [`Endpoint::apply`]
    /// (a load test that sends its requests itself holds them first).
    pub fn hold(&self, token: &str) {
        self.state
            .pending
            .lock()
            .unwrap()
            .entry(token.to_string())
            .or_default();
    }

    fn release(&self, token: &str) {
        if let Some(applied) = self.state.pending.lock().unwrap().remove(token) {
            applied.notify_waiters();
        }
    }
}

async fn forward(
    axum::extract::State(state): axum::extract::State<Arc<FrontState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    // The webhook routes name the token as one segment of the path
    // (`/webhooks/{application}/{token}/…`, `/interactions/{id}/{token}/callback`).
    let held = || {
        let pending = state.pending.lock().unwrap();
        uri.path()
            .split('/')
            .find_map(|segment| pending.get(segment).cloned())
    };
    while let Some(applied) = held() {
        let released = applied.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        // Released between the look and the `enable`: the token is gone, look again.
        if held().is_some_and(|now| Arc::ptr_eq(&now, &applied)) {
            released.await;
        }
    }
    let mut request = state
        .client
        .request(method, format!("{}{path}", state.fake))
        .body(body);
    for (name, value) in &headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.unwrap_or_default();
            let mut out = (status, bytes).into_response();
            for (name, value) in &headers {
                if name != axum::http::header::CONTENT_LENGTH
                    && name != axum::http::header::TRANSFER_ENCODING
                {
                    out.headers_mut().insert(name, value.clone());
                }
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// What Discord signs with: a key pair made for the test.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    pub fn generate() -> Signer {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("the operating system's random source");
        Signer {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// `DISCORD_PUBLIC_KEY` for this key.
    pub fn public_hex(&self) -> String {
        to_hex(self.key.verifying_key().as_bytes())
    }

    /// `X-Signature-Ed25519` of `timestamp` followed by `body`.
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        to_hex(&self.key.sign(&message).to_bytes())
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The endpoint's answer to one POST.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// From sending the request to the answer's arrival.
    pub took: Duration,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// `rdp-doctor serve` at `url` (`http://127.0.0.1:PORT`), as Discord calls it.
pub struct Endpoint {
    pub url: String,
    pub signer: Signer,
    client: reqwest::Client,
}

impl Endpoint {
    pub fn new(url: String, signer: Signer) -> Endpoint {
        Endpoint {
            url,
            signer,
            client: reqwest::Client::new(),
        }
    }

    /// POST `body` to `/interactions` with exactly `headers`.
    pub async fn post(&self, headers: &[(&str, String)], body: Vec<u8>) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/interactions", self.url))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let sent = Instant::now();
        let response = request.send().await.expect("the endpoint answers");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Answer {
            status,
            body,
            took: sent.elapsed(),
        }
    }

    /// The headers Discord sends with `body`, signed now.
    pub fn signed_headers(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        vec![
            ("content-type", "application/json".to_string()),
            ("x-signature-ed25519", self.signer.sign(&timestamp, body)),
            ("x-signature-timestamp", timestamp),
        ]
    }

    /// POST `body`, signed as Discord signs.
    pub async fn post_signed(&self, body: Vec<u8>) -> Answer {
        let headers = self.signed_headers(&body);
        self.post(&headers, body).await
    }

    /// GET a path of the endpoint: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("the endpoint answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Polls `GET /readyz` (as a load balancer does) until `done` holds for its status and body,
    /// which it returns; panics with the last answer and `context` after `within`.
    pub async fn readyz_until(
        &self,
        within: Duration,
        context: impl Fn() -> String,
        done: impl Fn(u16, &str) -> bool,
    ) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, body) = self.get("/readyz").await;
            if done(status, &body) {
                return (status, body);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz not as expected within {within:?}; last {status}: {body}\n{}",
                context()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deliver `i` as Discord would over HTTP: its payload, signed, to the endpoint; a 200's JSON
    /// then goes to the fake's callback route as the interaction's response, before `front` lets
    /// through anything else about `i`.
    pub async fn deliver(&self, discord: &FakeDiscord, front: &Front, i: &Interaction) -> Answer {
        self.deliver_payload(discord, front, i, &payload_of(discord, i))
            .await
    }

    /// `/<command> <path…>` by `user` with `options`, delivered, acknowledged as `ack` (4: the
    /// answer itself, 5: a deferral).
    pub async fn slash(
        &self,
        discord: &FakeDiscord,
        front: &Front,
        user: &User,
        path: &[&str],
        options: Value,
        ack: u64,
    ) -> Interaction {
        let i = discord.slash(user, "rdp", path, options).await;
        let answer = self.deliver(discord, front, &i).await;
        assert_eq!(answer.json()["type"], ack, "{}", answer.body);
        i
    }

    /// A click by `user` of the button labelled `label` on message `message`, delivered,
    /// acknowledged as `ack` (5: a new message follows, 6: this one is updated).
    #[allow(clippy::too_many_arguments)]
    pub async fn click(
        &self,
        discord: &FakeDiscord,
        front: &Front,
        user: &User,
        message: u64,
        label: &str,
        ack: u64,
    ) -> Interaction {
        let button = discord.button(message, label);
        let i = discord.component(user, message, &button, &[]).await;
        let answer = self.deliver(discord, front, &i).await;
        assert_eq!(answer.json()["type"], ack, "{}", answer.body);
        i
    }

    /// [`Self::deliver`] with `i`'s payload already at hand (a load test reads them all at once).
    pub async fn deliver_payload(
        &self,
        discord: &FakeDiscord,
        front: &Front,
        i: &Interaction,
        payload: &Value,
    ) -> Answer {
        let answer = self.send_payload(front, i, payload).await;
        self.apply(discord, front, i, &answer).await;
        answer
    }

    /// The first half of [`Self::deliver_payload`]: the signed POST, while `front` holds what
    /// the endpoint sends about `i` until [`Self::apply`].
    pub async fn send_payload(&self, front: &Front, i: &Interaction, payload: &Value) -> Answer {
        let (headers, body) = self.signed(payload);
        self.send_signed(front, i, &headers, body).await
    }

    /// `payload` as Discord sends it: the signed headers and the body.
    pub fn signed(&self, payload: &Value) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let body = payload.to_string().into_bytes();
        (self.signed_headers(&body), body)
    }

    /// [`Self::send_payload`] with the request signed beforehand (a load test signs them all
    /// before its burst, as Discord signs on its own machines).
    pub async fn send_signed(
        &self,
        front: &Front,
        i: &Interaction,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Answer {
        front.hold(&i.token);
        self.post(headers, body).await
    }

    /// The second half: a 200's JSON goes to the fake's callback route as the interaction's
    /// response, then `front` lets through what waited for it.
    pub async fn apply(
        &self,
        discord: &FakeDiscord,
        front: &Front,
        i: &Interaction,
        answer: &Answer,
    ) {
        if answer.status == 200 {
            let callback = format!(
                "{}/api/v10/interactions/{}/{}/callback",
                discord.url(),
                i.id,
                i.token
            );
            let status = self
                .client
                .post(callback)
                .header("content-type", "application/json")
                .body(answer.body.clone())
                .send()
                .await
                .expect("the fake's callback route answers")
                .status();
            assert!(
                status.is_success(),
                "the fake refused the response {}: {status}",
                answer.body
            );
        }
        front.release(&i.token);
    }
}

/// The INTERACTION_CREATE payloads the fake made, by interaction id.
pub fn payloads(discord: &FakeDiscord) -> std::collections::HashMap<String, Value> {
    discord
        .dispatched()
        .into_iter()
        .filter(|frame| frame["t"] == "INTERACTION_CREATE")
        .filter_map(|frame| Some((frame["d"]["id"].as_str()?.to_string(), frame["d"].clone())))
        .collect()
}

/// The INTERACTION_CREATE payload the fake made for `i`.
pub fn payload_of(discord: &FakeDiscord, i: &Interaction) -> Value {
    let id = i.id.to_string();
    discord
        .dispatched()
        .into_iter()
        .rev()
        .find(|frame| frame["t"] == "INTERACTION_CREATE" && frame["d"]["id"] == id.as_str())
        .map(|frame| frame["d"].clone())
        .unwrap_or_else(|| panic!("the fake made no interaction {id}"))
}
