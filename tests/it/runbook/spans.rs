//! Tracing spans lead a log line to the person's command: `rdp-doctor check` under the loudest
//! `RUST_LOG` against the simulator, whose every answer carries an `x-ms-request-id`. A line
//! logged while an ARM request is answered names the command, the person and Azure's request
//! id; no secret reaches the log on the way.

use super::support;

use rdp_doctor::sim::{SimOptions, Simulator, World, DEFAULT_SUBSCRIPTION};
use std::process::Output;

/// Every log directive a person might try, the SDK's request/response policies included.
const LOUDEST: &str =
    "trace,azure_core=trace,azure_core::policies=trace,azure_identity=trace,reqwest=trace";

async fn check_web_01(sim: &Simulator, secret: &str, dir: &std::path::Path) -> Output {
    let environment = [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("NO_COLOR", "1".into()),
        ("RUST_LOG", LOUDEST.into()),
        ("AZURE_RESOURCE_MANAGER_URL", sim.url()),
        ("AZURE_AUTHORITY_HOST", sim.url()),
        ("AZURE_TENANT_ID", support::TENANT.into()),
        ("AZURE_CLIENT_ID", support::CLIENT.into()),
        ("AZURE_CLIENT_SECRET", secret.into()),
        ("AZURE_SUBSCRIPTION_ID", DEFAULT_SUBSCRIPTION.into()),
    ];
    let mut rdp_doctor = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"));
    rdp_doctor.env_clear().envs(environment).current_dir(dir);
    let run = rdp_doctor
        .args(["check", "web-01"])
        .kill_on_drop(true)
        .output();
    run.await.expect("the binary runs")
}

#[tokio::test]
async fn an_arm_log_line_names_the_command_the_person_and_azures_request_id() {
    support::within(async {
        let world = World::new().vm("web-01");
        let secret = world.client_secret.clone();
        let sim = Simulator::start("127.0.0.1:0", world, support::quick(SimOptions::fast()))
            .await
            .expect("simulator");
        let dir = std::env::temp_dir().join(format!("rdp-doctor-spans-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let out = check_web_01(&sim, &secret, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{log}");

        // The simulator's own record of the ids it answered the VM's GET with.
        let answered: Vec<String> = sim
            .stats()
            .log
            .into_iter()
            .filter(|e| e.method == "GET" && e.path.contains("/virtualMachines/web-01?"))
            .map(|e| e.request_id)
            .collect();
        assert!(!answered.is_empty(), "the VM was read");
        let line = log
            .lines()
            .find(|l| l.contains("ARM answered") && answered.iter().any(|id| l.contains(id)))
            .unwrap_or_else(|| panic!("no log line carries {answered:?}:\n{log}"));
        let person = format!("person=\"cli:{}\"", rdp_doctor::cli::os_user());
        for part in [
            "interaction{",
            person.as_str(),
            "command=\"check\"",
            "arm{method=\"GET\"",
            "route=/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            "status=200",
        ] {
            assert!(line.contains(part), "{part} missing from: {line}");
        }

        let tokens = sim.issued_tokens();
        assert!(!tokens.is_empty(), "the binary signed in");
        let secrets = [
            ("the client secret", secret),
            ("a SAS signature", "sig=".to_owned()),
            ("an Authorization header", "Bearer ".to_owned()),
        ];
        let tokens = tokens.into_iter().map(|token| ("a bearer token", token));
        for (what, text) in secrets.into_iter().chain(tokens) {
            assert!(!log.contains(&text), "{what} was logged");
        }
    })
    .await
}
