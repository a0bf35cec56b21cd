//! Credentials for a bot that runs for weeks: workload identity across a rotation of its token
//! file, user-assigned managed identities (IMDS and App Service), tokens refreshed before they
//! expire, one refresh for many callers, and ARM refusing an expired token; every test through
//! the real ARM clients against the simulator on loopback, with tokens that live seconds.

use super::support;

use rdp_doctor::azure::{Arm, ArmError};
use rdp_doctor::sim::{ManagedIdentities, SimOptions, Simulator, World, DEFAULT_SUBSCRIPTION};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A short token lifetime: the credential refreshes at half of it.
const LIFETIME: Duration = Duration::from_secs(2);

async fn sim_with(options: SimOptions) -> Simulator {
    Simulator::start("127.0.0.1:0", World::new().vm("web-01"), options)
        .await
        .expect("simulator starts")
}

/// The error a VM list ends in, as text; `why` it must fail.
async fn list_error(arm: &Arm, why: &str) -> String {
    match arm.list_vms(DEFAULT_SUBSCRIPTION).await {
        Ok(vms) => panic!("{why}, yet {} VMs were listed", vms.len()),
        Err(e) => e.to_string(),
    }
}

/// Short-lived tokens, and the managed identities the host has.
async fn sim_with_identities(system_assigned: bool, user_assigned: &[&str]) -> Simulator {
    sim_with(SimOptions {
        managed_identities: ManagedIdentities {
            system_assigned,
            user_assigned: user_assigned.iter().map(|id| id.to_string()).collect(),
        },
        ..short_lived()
    })
    .await
}

fn short_lived() -> SimOptions {
    SimOptions {
        token_lifetime: LIFETIME,
        ..SimOptions::fast()
    }
}

/// An `Arm` signed in as `env` says (nothing is read from the process environment).
fn arm_from(sim: &Simulator, env: &[(&str, String)]) -> Result<Arm, ArmError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let url = url::Url::parse(&sim.url()).expect("simulator url");
    Arm::connect_from(support::fast_settings(url), &move |name| {
        env.get(name).cloned()
    })
}

/// A federated token file of this test's own.
fn token_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rdp-doctor-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn workload_env(sim: &Simulator, file: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("AZURE_AUTHORITY_HOST", sim.url()),
        ("AZURE_TENANT_ID", support::TENANT.to_owned()),
        ("AZURE_CLIENT_ID", support::CLIENT.to_owned()),
        ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
    ]
}

fn grants(sim: &Simulator, name: &str) -> u64 {
    sim.stats().grants.get(name).copied().unwrap_or(0)
}

/// Reads the VM list every 100 ms (as the bot's directory refresh and people's checks do) until
/// `until`, asserting every read succeeds.
async fn read_until(arm: &Arm, until: Instant) -> usize {
    let mut reads = 0;
    while Instant::now() < until {
        let vms = arm
            .list_vms(DEFAULT_SUBSCRIPTION)
            .await
            .unwrap_or_else(|e| panic!("read {reads} failed: {e}"));
        assert_eq!(vms.len(), 1);
        reads += 1;
        // Time passing is what is tested: reads spread over the token's lifetime, as people's
        // are, so that it expires and is renewed between them.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reads
}

#[tokio::test]
async fn workload_identity_rereads_the_rotated_token_file_and_every_read_succeeds() {
    let sim = sim_with(short_lived()).await;
    let file = token_file("rotated");
    std::fs::write(&file, sim.rotate_federated_token()).unwrap();
    let arm = arm_from(&sim, &workload_env(&sim, &file)).expect("arm");

    let start = Instant::now();
    read_until(&arm, start + LIFETIME * 3 / 2).await;
    assert!(grants(&sim, "federated:1") >= 2, "{:?}", sim.stats().grants);

    // The kubelet projects a new token; Entra ID now refuses the old one as expired.
    std::fs::write(&file, sim.rotate_federated_token()).unwrap();
    read_until(&arm, Instant::now() + LIFETIME * 2).await;

    let stats = sim.stats();
    assert!(
        grants(&sim, "federated:2") >= 2,
        "the new token file was read for the refreshes after the rotation: {:?}",
        stats.grants
    );
    assert_eq!(grants(&sim, "refused:federated"), 0, "{:?}", stats.grants);
    // Refreshed before expiry: about two tokens per lifetime, never one per request.
    assert!(stats.token_requests <= 12, "{:?}", stats.grants);
    assert!(
        stats.log.iter().all(|e| e.status != 401),
        "no expired token reached ARM"
    );
}

/// azure_identity 0.21's `WorkloadIdentityCredential::create` reads `AZURE_FEDERATED_TOKEN_FILE`
/// once (`std::fs::read_to_string(token_file)` into the credential, then `new`), so the token it
/// holds is the one of the day it started: after the kubelet rotates the file, its next refresh
/// is refused. Built the way `create` builds it, since `create` reads only the process's
/// environment.
#[tokio::test]
async fn azure_identity_0_21_workload_identity_fails_once_the_file_rotates() {
    use azure_core::auth::TokenCredential;
    let sim = sim_with(short_lived()).await;
    let file = token_file("read-once");
    std::fs::write(&file, sim.rotate_federated_token()).unwrap();
    let read_once = std::fs::read_to_string(&file).unwrap();
    let theirs = azure_identity::WorkloadIdentityCredential::new(
        Arc::new(reqwest::Client::new()),
        url::Url::parse(&sim.url()).unwrap(),
        support::TENANT.to_owned(),
        support::CLIENT.to_owned(),
        read_once,
    );
    let scope = format!("{}/.default", sim.url());
    theirs
        .get_token(&[&scope])
        .await
        .expect("a token before the rotation");

    std::fs::write(&file, sim.rotate_federated_token()).unwrap();
    // Their cache treats a token with less than 20 s left as expired, so with 2-second tokens
    // the next call asks Entra ID again, with the assertion it read at the start.
    let error = theirs
        .get_token(&[&scope])
        .await
        .expect_err("0.21 sends the stale token");
    assert!(
        format!("{error:?}").contains("Unauthorized"),
        "stale assertion refused: {error:?}"
    );
    assert_eq!(
        grants(&sim, "refused:federated"),
        1,
        "{:?}",
        sim.stats().grants
    );

    // Ours, on the same file, signs in.
    let ours = arm_from(&sim, &workload_env(&sim, &file)).expect("arm");
    ours.list_vms(DEFAULT_SUBSCRIPTION)
        .await
        .expect("our credential reads the rotated file");
    assert_eq!(grants(&sim, "federated:2"), 1);
}

#[tokio::test]
async fn a_refused_federated_token_is_explained_without_the_token() {
    let sim = sim_with(short_lived()).await;
    let file = token_file("unknown");
    let foreign = "eyJhbGciOiJSUzI1NiJ9.not-one-entra-trusts.c2ln";
    std::fs::write(&file, foreign).unwrap();
    let arm = arm_from(&sim, &workload_env(&sim, &file)).expect("arm");
    let error = arm
        .list_vms(DEFAULT_SUBSCRIPTION)
        .await
        .expect_err("refused");
    let text = error.to_string();
    assert!(matches!(error, ArmError::SignIn { .. }), "{text}");
    assert!(text.contains("AADSTS700211"), "{text}");
    assert!(text.contains("AZURE_FEDERATED_TOKEN_FILE"), "{text}");
    assert!(!text.contains(foreign) && !text.contains("c2ln"), "{text}");

    // A token file that cannot be read names the file, not its content.
    let missing = token_file("missing");
    let arm = arm_from(&sim, &workload_env(&sim, &missing)).expect("arm");
    let text = list_error(&arm, "no file").await;
    assert!(
        text.contains("cannot read AZURE_FEDERATED_TOKEN_FILE"),
        "{text}"
    );
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let sim = sim_with(SimOptions::fast()).await;
    let secret = World::new().client_secret;
    let arm = arm_from(
        &sim,
        &[
            ("AZURE_AUTHORITY_HOST", sim.url()),
            ("AZURE_TENANT_ID", support::TENANT.to_owned()),
            ("AZURE_CLIENT_ID", support::CLIENT.to_owned()),
            ("AZURE_CLIENT_SECRET", secret),
        ],
    )
    .expect("arm");
    let reads = (0..16).map(|_| arm.list_vms(DEFAULT_SUBSCRIPTION));
    for result in futures::future::join_all(reads).await {
        result.expect("read");
    }
    assert_eq!(sim.stats().token_requests, 1, "{:?}", sim.stats().grants);
    assert_eq!(grants(&sim, "client_secret"), 1);

    // Callers that waited for a refused request share its answer rather than each asking again.
    let refused = arm_from(
        &sim,
        &[
            ("AZURE_AUTHORITY_HOST", sim.url()),
            ("AZURE_TENANT_ID", support::TENANT.to_owned()),
            ("AZURE_CLIENT_ID", support::CLIENT.to_owned()),
            ("AZURE_CLIENT_SECRET", "not-the-secret".to_owned()),
        ],
    )
    .expect("arm");
    let reads = (0..16).map(|_| refused.list_vms(DEFAULT_SUBSCRIPTION));
    for result in futures::future::join_all(reads).await {
        let text = result.expect_err("refused").to_string();
        assert!(text.contains("AADSTS7000215"), "{text}");
        assert!(!text.contains("not-the-secret"), "{text}");
    }
    assert_eq!(
        grants(&sim, "refused:client_secret"),
        1,
        "{:?}",
        sim.stats().grants
    );
}

#[tokio::test]
async fn a_user_assigned_identity_asks_imds_for_its_client_id() {
    let uami = "11111111-2222-3333-4444-555555555555";
    let sim = sim_with_identities(false, &[uami, "another-identity"]).await;
    let arm = arm_from(
        &sim,
        &[
            ("AZURE_CLIENT_ID", uami.to_owned()),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", sim.url()),
        ],
    )
    .expect("arm");
    read_until(&arm, Instant::now() + LIFETIME * 3 / 2).await;
    assert!(
        grants(&sim, &format!("imds:{uami}")) >= 2,
        "{:?}",
        sim.stats().grants
    );
    let asked = sim
        .stats()
        .log
        .into_iter()
        .find(|e| e.path.starts_with("/metadata/identity/oauth2/token"))
        .expect("IMDS was asked");
    assert!(
        asked.path.contains("api-version=2018-02-01"),
        "{}",
        asked.path
    );
    assert!(
        asked.path.contains(&format!("client_id={uami}")),
        "{}",
        asked.path
    );

    // Without AZURE_CLIENT_ID (all azure_identity 0.21 can ask for) a VM with two
    // user-assigned identities and no system-assigned one gives no token.
    let system = arm_from(&sim, &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", sim.url())]).expect("arm");
    let text = list_error(&system, "no identity chosen").await;
    assert!(text.contains("Multiple user assigned identities"), "{text}");
}

#[tokio::test]
async fn app_service_managed_identity_sends_its_header_and_client_id() {
    let uami = "66666666-7777-8888-9999-000000000000";
    let sim = sim_with_identities(true, &[uami]).await;
    let header = sim.identity_header();
    let arm = arm_from(
        &sim,
        &[
            ("AZURE_CLIENT_ID", uami.to_owned()),
            ("IDENTITY_ENDPOINT", format!("{}/msi/token", sim.url())),
            ("IDENTITY_HEADER", header.clone()),
        ],
    )
    .expect("arm");
    arm.list_vms(DEFAULT_SUBSCRIPTION).await.expect("read");
    assert_eq!(grants(&sim, &format!("app_service:{uami}")), 1);

    // A wrong IDENTITY_HEADER is refused, and the header is not in the error.
    let wrong = "0123456789abcdef-wrong";
    let arm = arm_from(
        &sim,
        &[
            ("IDENTITY_ENDPOINT", format!("{}/msi/token", sim.url())),
            ("IDENTITY_HEADER", wrong.to_owned()),
        ],
    )
    .expect("arm");
    let text = list_error(&arm, "refused").await;
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(&header), "{text}");
}

async fn json(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// ARM's answer to an expired bearer token, and Entra ID's to a stale assertion, as raw HTTP.
#[tokio::test]
async fn arm_refuses_an_expired_token_and_entra_a_stale_assertion() {
    let sim = sim_with(SimOptions {
        token_lifetime: Duration::ZERO,
        ..SimOptions::fast()
    })
    .await;
    let http = reqwest::Client::new();
    let token_url = format!("{}/{}/oauth2/v2.0/token", sim.url(), support::TENANT);
    let stale = sim.rotate_federated_token();
    let current = sim.rotate_federated_token();
    let grant = |assertion: &str| {
        http.post(&token_url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", support::CLIENT),
            ("scope", "https://management.azure.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
    };
    let refused = grant(&stale).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let body = json(refused).await;
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 700024);

    let issued = json(grant(&current).send().await.unwrap()).await;
    assert_eq!(issued["expires_in"], 0);
    let token = issued["access_token"].as_str().unwrap();
    let answer = http
        .get(format!(
            "{}/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01",
            sim.url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(answer
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("invalid_token")));
    let body = json(answer).await;
    assert_eq!(body["error"]["code"], "ExpiredAuthenticationToken");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("The access token expiry UTC time '"));

    // A token for another resource is refused too, whatever its lifetime.
    sim.set_options(SimOptions::fast());
    let other = json(
        http.post(&token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", support::CLIENT),
                ("scope", "https://vault.azure.net/.default"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &current),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let answer = http
        .get(format!(
            "{}/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01",
            sim.url()
        ))
        .bearer_auth(other["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let body = json(answer).await;
    assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenAudience");
}
