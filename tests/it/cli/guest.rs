//! `rdp-doctor check VM --guest`: the ARM report first, a line on stderr while Run Command runs,
//! then the guest findings; `--json` holds them all; exit 1 when a guest check fails.

use super::*;
use rdp_doctor::diagnose::CheckId;

/// The terminal's account may operate (the `guest` level).
async fn guest_cli(world: World) -> Cli {
    let cli = Cli::start(world).await;
    std::fs::write(cli.path("rdp-doctor.toml"), cli_policy("operate")).unwrap();
    cli
}

#[tokio::test]
async fn guest_text_is_the_arm_report_then_the_guest_findings() {
    within(async {
        let cli = guest_cli(World::new().vm("fw-01").guest(|g| g.firewall_rdp_rule = false)).await;
        let out = cli.run(&["check", "fw-01", "--guest"]).await;
        assert_eq!(code(&out), 1, "a guest check failed: {}", stderr(&out));
        let text = stdout(&out);
        let (arm, inside) = text
            .split_once("Inside Windows (Run Command)")
            .unwrap_or_else(|| panic!("no guest part in {text}"));
        // The ARM report as `check` prints it, then the guest part.
        assert!(arm.starts_with("fw-01  resource group rg-web"), "{arm}");
        assert!(arm.contains("Verdict: OK: nothing found that blocks Remote Desktop"), "{arm}");
        assert!(!arm.contains("Windows Firewall allows"), "{arm}");
        assert!(
            inside.contains("FAIL  Windows Firewall allows the RDP port\n        No enabled inbound Windows Firewall rule allows TCP 3389"),
            "{inside}"
        );
        assert!(inside.contains("PASS  Remote Desktop is enabled in Windows"), "{inside}");
        assert!(inside.contains("Verdict with the guest checks: PROBLEMS FOUND"), "{inside}");
        assert!(
            inside.contains("Next step: Enable the Windows Firewall rules for Remote Desktop (enable-firewall-rdp)"),
            "{inside}"
        );
        // The progress line while Run Command runs, on stderr.
        assert!(
            stderr(&out).contains("Looking inside Windows with Run Command"),
            "{}",
            stderr(&out)
        );
        assert_eq!(support::requests_to(&cli.h.sim, "POST", "/runCommand"), 1);
    })
    .await
}

#[tokio::test]
async fn a_listener_on_another_port_is_judged_at_the_nsg_under_that_ports_title() {
    within(async {
        let mut world = World::new().vm("port-01");
        world.vms[0].rdp_port = 3390;
        let cli = guest_cli(world).await;
        let out = cli.run(&["check", "port-01", "--guest"]).await;
        assert_eq!(code(&out), 1, "the NSG denies 3390: {}", stderr(&out));
        let text = stdout(&out);
        let (arm, inside) = text
            .split_once("Inside Windows (Run Command)")
            .unwrap_or_else(|| panic!("no guest part in {text}"));
        // The ARM checks judge RDP's own port under the runbook's title; the guest's listener
        // on 3390 has the NSG judged again, under a title that names that port.
        assert!(arm.contains("PASS  Network security group allows TCP 3389\n"), "{arm}");
        assert!(
            inside.contains("FAIL  Network security group allows TCP 3390\n        TCP 3390 from the Internet is denied"),
            "{inside}"
        );
        assert!(!inside.contains("allows TCP 3389\n"), "{inside}");
    })
    .await
}

#[tokio::test]
async fn guest_json_holds_the_guest_findings() {
    within(async {
        let cli = guest_cli(World::new().vm("web-01")).await;
        let out = cli.run(&["check", "web-01", "--guest", "--json"]).await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let report = json(&out);
        assert_eq!(
            keys(&report),
            [
                "changes",
                "findings",
                "next_action",
                "stats",
                "verdict",
                "vm"
            ]
        );
        let steps: Vec<&str> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps.len(), 15, "{steps:?}");
        assert_eq!(&steps[7..], CheckId::GUEST.map(CheckId::as_str));
        for f in &report["findings"].as_array().unwrap()[7..] {
            assert_eq!(keys(f), ["evidence", "status", "step", "summary"]);
            assert_eq!(f["status"], "pass", "{f}");
        }
        assert_eq!(report["verdict"], "ok");
        assert!(!stderr(&out).contains("Looking inside"), "JSON runs quiet");
    })
    .await
}

#[tokio::test]
async fn guest_needs_operate_at_the_terminal() {
    within(async {
        let cli = Cli::start(World::new().vm("web-01")).await;
        std::fs::write(cli.path("rdp-doctor.toml"), cli_policy("read")).unwrap();
        let out = cli.run(&["check", "web-01", "--guest"]).await;
        assert_eq!(code(&out), 2, "{}", stdout(&out));
        assert!(
            stderr(&out).contains("Permission denied"),
            "{}",
            stderr(&out)
        );
        assert_eq!(support::requests_to(&cli.h.sim, "POST", "/runCommand"), 0);
    })
    .await
}

#[tokio::test]
async fn simulate_finds_each_demo_vms_guest_failure() {
    within(async {
        let cli = Cli::start(World::new()).await;
        let runs = [
            ("rdp-off-01", "guest-rdp", "enable-rdp"),
            ("svc-01", "guest-service", "start-termservice"),
            ("port-01", "guest-listener", "reset-rdp-port"),
            ("fw-01", "guest-firewall", "enable-firewall-rdp"),
            ("cert-01", "guest-certificate", "renew-rdp-certificate"),
            ("lic-01", "guest-licensing", "remove-rdsh-role"),
            ("disk-01", "guest-disk", "free-disk-space"),
        ]
        .map(|(vm, step, fix)| {
            let mut cmd = cli.command(&["check", vm, "--simulate", "--guest", "--json"]);
            async move { (vm, step, fix, cmd.output().await.expect("runs")) }
        });
        // Each run has its own simulator (Run Command takes its few seconds there): all at once.
        for (vm, step, fix, out) in futures::future::join_all(runs).await {
            assert_eq!(code(&out), 1, "{vm}: {}", stderr(&out));
            let report = json(&out);
            let finding = report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["step"] == step)
                .unwrap_or_else(|| panic!("{vm}: no {step} finding"));
            assert_eq!(finding["status"], "fail", "{vm}: {finding}");
            assert_eq!(report["next_action"], fix, "{vm}");
        }
    })
    .await
}
