//! `GET /metrics`: a parser of the exposition text (OpenMetrics, as Prometheus scrapes it) that
//! the serve tests use too; the gateway (`rdp-doctor bot`, a real process against the fake
//! Discord) serving `/healthz`, `/readyz` and `/metrics` on `RDP_DOCTOR_METRICS_LISTEN`; and
//! `rdp-doctor probe`'s exit codes, the container's health check.

use crate::support;
use rdp_doctor::sim::{Simulator, World};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use support::discord::{room_config, FakeDiscord, Origin, User};
use support::process::Logged;
use support::within;

const WAIT: Duration = Duration::from_secs(20);

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: the families' types and every sample.
#[derive(Debug, Default)]
pub struct Scrape {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The value of `name` with exactly these labels, 0 when absent (a counter not yet touched).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
            .unwrap_or(0.0)
    }

    /// Every sample named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

/// Parse OpenMetrics text strictly: `# TYPE`/`# HELP`/`# UNIT` lines, samples whose name is a
/// declared family's (with its type's suffix), label values quoted with `\\`, `\"` and `\n`
/// escapes, numeric values, and `# EOF` as the last line. Panics on anything else.
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let family = parts.next().unwrap_or("");
            assert!(name_ok(family), "bad family name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "unknown",
                            "stateset",
                            "summary"
                        ]
                        .contains(&t),
                        "{line:?}"
                    );
                    assert!(
                        scrape.types.insert(family.into(), t.into()).is_none(),
                        "{family} declared twice"
                    );
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown metadata line {line:?}"),
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => panic!("a sample without a value: {line:?}"),
        };
        assert!(name_ok(name), "bad metric name in {line:?}");
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let end = loop {
                let (start, c) = chars.next().expect("unterminated labels");
                if c == '}' {
                    break start;
                }
                if c == ',' {
                    continue;
                }
                let mut key = String::from(c);
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert!(name_ok(&key), "bad label name {key:?} in {line:?}");
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("unterminated label value").1 {
                        '"' => break,
                        '\\' => match chars.next().expect("a dangling escape").1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            other => panic!("bad escape \\{other} in {line:?}"),
                        },
                        c => value.push(c),
                    }
                }
                assert!(
                    labels.insert(key.clone(), value).is_none(),
                    "{key} twice in {line:?}"
                );
            };
            rest = &inner[end + 1..];
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value = value.split(' ').next().unwrap_or("");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
        };
        let family = scrape
            .types
            .iter()
            .find(|(family, t)| {
                let suffixes: &[&str] = match t.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_sum", "_count", "_created"],
                    _ => &[""],
                };
                suffixes
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family.as_str()))
            })
            .map(|(family, _)| family.clone());
        assert!(family.is_some(), "{name} belongs to no declared family");
        scrape.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    scrape
}

/// `GET url` with a fresh client: the status, the content type and the body.
pub async fn get(url: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (
        status,
        content_type,
        response.text().await.unwrap_or_default(),
    )
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a counter\na_total{x=\"1\\\"2\",y=\"\"} 3\n# EOF\n";
    let scrape = parse(good);
    assert_eq!(scrape.value("a_total", &[("x", "1\"2"), ("y", "")]), 3.0);
    for bad in [
        "# TYPE a counter\na_total 1\n",
        "# TYPE a counter\nb_total 1\n# EOF\n",
        "# TYPE a counter\na_total{x=1} 1\n# EOF\n",
        "# TYPE a counter\na_total one\n# EOF\n",
        "# TYPE a counter\n# EOF\na_total 1\n# EOF\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

#[tokio::test]
async fn the_gateway_serves_health_and_metrics_on_rdp_doctor_metrics_listen() {
    within(async {
        let world = World::new().vm("web-01");
        let secret = world.client_secret.clone();
        let sim = Simulator::start("127.0.0.1:0", world, Default::default())
            .await
            .expect("simulator");
        let discord = FakeDiscord::start().await;
        let dir = support::scratch_dir("metrics-listen", &sim);
        std::fs::write(
            dir.join("rdp-doctor.toml"),
            room_config("request_timeout_secs = 10\nmax_retries = 1\npoll_interval_ms = 10"),
        )
        .expect("config");
        let mut command =
            discord.bot_command(&sim, &dir.join("rdp-doctor.toml"), "sqlite::memory:");
        command
            .current_dir(&dir)
            .env("AZURE_CLIENT_SECRET", &secret)
            .env("RDP_DOCTOR_METRICS_LISTEN", "127.0.0.1:0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // The bot logs where it serves /metrics.
        let (mut bot, base) = Logged::spawn("the bot", command, |line| {
            line.contains("/metrics on http://")
                .then(|| support::process::url_in(line))
                .flatten()
        })
        .await;
        assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
        discord.wait_ready(WAIT).await.expect("the bot connects");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, _, body) = get(&format!("{base}/readyz")).await;
            if status == 200 {
                assert_eq!(body, "ready\n");
                break;
            }
            assert_eq!(status, 503, "{body}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "never ready: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Nothing yet: the process's own registry starts at zero.
        let (_, _, text) = get(&format!("{base}/metrics")).await;
        let before = parse(&text);
        let check_ok = [("command", "check"), ("outcome", "ok")];
        assert_eq!(before.value("rdp_doctor_commands_total", &check_ok), 0.0);

        let alice = User::new(4_987_654_321, "alice", &[5001]);
        let vm = json!([{"name": "vm", "type": 3, "value": "web-01"}]);
        let i = discord.slash(&alice, "rdp", &["check"], vm).await;
        let ack = discord.callback(&i, WAIT).await.expect("acknowledged");
        assert_eq!(ack.body()["type"], 5, "{}", ack.body());
        discord
            .edit_titled(&i, WAIT, |t| t.starts_with("web-01"))
            .await
            .expect("the report");
        // The command is counted once its handler returns, just after the last edit.
        let deadline = tokio::time::Instant::now() + WAIT;
        let (content_type, after) = loop {
            let (status, content_type, text) = get(&format!("{base}/metrics")).await;
            assert_eq!(status, 200);
            let after = parse(&text);
            let checks = after.value("rdp_doctor_commands_total", &check_ok);
            if checks >= 1.0 {
                assert_eq!(checks, 1.0, "{text}");
                break (content_type, (after, text));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never counted:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (after, text) = after;
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        assert_eq!(
            after.value(
                "rdp_doctor_acknowledgement_seconds_count",
                &[("transport", "gateway")]
            ),
            1.0,
            "{text}"
        );
        let arm: f64 = after
            .all("rdp_doctor_arm_requests_total")
            .map(|s| s.value)
            .sum();
        assert!(arm >= 1.0, "{text}");
        assert_eq!(after.value("rdp_doctor_operations_running", &[]), 0.0);
        assert!(
            after.all("rdp_doctor_confirmations_pending").count() == 1,
            "{text}"
        );
        for secret in [
            secret.as_str(),
            "web-01",
            "rg-web",
            rdp_doctor::sim::DEFAULT_SUBSCRIPTION,
            "4987654321",
            i.token.as_str(),
            support::discord::TOKEN,
        ] {
            assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
        }

        // From a channel the policy does not list: refused before it runs, counted so.
        discord.set_origin(Origin::Guild {
            guild: support::discord::GUILD_ID,
            channel: 1_180_000_000_000_000_999,
        });
        let vm = json!([{"name": "vm", "type": 3, "value": "web-01"}]);
        let refused = discord.slash(&alice, "rdp", &["check"], vm).await;
        let answer = discord.callback(&refused, WAIT).await.expect("refused");
        assert_eq!(answer.body()["data"]["embeds"][0]["title"], "Not here");
        let refused_check = [("command", "check"), ("outcome", "refused")];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, _, text) = get(&format!("{base}/metrics")).await;
            let scrape = parse(&text);
            if scrape.value("rdp_doctor_commands_total", &refused_check) == 1.0 {
                assert_eq!(scrape.value("rdp_doctor_commands_total", &check_ok), 1.0);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never counted:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        assert_eq!(support::sigterm(&mut bot.child).await.code(), Some(0));
        let seen = bot.log_to_end().await;
        assert!(seen.contains("shutting down"), "{seen}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

async fn probe(url: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"))
        .args(["probe", url])
        .env_clear()
        .kill_on_drop(true)
        .output()
        .await
        .expect("rdp-doctor probe runs")
}

#[tokio::test]
async fn probe_exits_0_on_2xx_and_1_with_the_first_line_otherwise() {
    use axum::http::StatusCode;
    use axum::routing::get as route;
    within(async {
        let app = axum::Router::new()
            .route("/ok", route(|| async { "ready\n" }))
            .route(
                "/down",
                route(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "database: no answer\nazure: no token\n",
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let ok = probe(&format!("{base}/ok")).await;
        assert_eq!(ok.status.code(), Some(0), "{ok:?}");
        assert!(ok.stderr.is_empty(), "{ok:?}");

        let down = probe(&format!("{base}/down")).await;
        assert_eq!(down.status.code(), Some(1), "{down:?}");
        let stderr = String::from_utf8_lossy(&down.stderr);
        assert_eq!(stderr, "503 Service Unavailable: database: no answer\n");

        let missing = probe(&format!("{base}/nowhere")).await;
        assert_eq!(missing.status.code(), Some(1), "{missing:?}");
        assert!(
            String::from_utf8_lossy(&missing.stderr).starts_with("404 Not Found"),
            "{missing:?}"
        );

        // Nothing listens: no answer is not ready either.
        server.abort();
        let _ = server.await;
        let refused = probe(&format!("{base}/ok")).await;
        assert_eq!(refused.status.code(), Some(1), "{refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("no answer"),
            "{refused:?}"
        );
    })
    .await
}
