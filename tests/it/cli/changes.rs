//! "What changed" from the terminal: `check`'s "Recent changes" with the change that explains
//! the failure marked, `rdp-doctor changes VM` (the whole list, `--hours`, `--json`), and a
//! principal Azure refuses the Activity Log.

use super::*;

const RULE_WRITE: &str = "Microsoft.Network/networkSecurityGroups/securityRules/write";

fn id(rest: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/rg-web/providers/{rest}",
        rdp_doctor::sim::DEFAULT_SUBSCRIPTION
    )
}

/// web-02 behind a subnet NSG that denies RDP, the rule alice added 12 minutes ago, and more.
fn web_02() -> World {
    World::new()
        .vm("web-02")
        .nsg_denies_rdp()
        .activity(
            12,
            "alice@contoso.com",
            RULE_WRITE,
            &id("Microsoft.Network/networkSecurityGroups/web-02-snet-nsg/securityRules/deny-rdp-internet"),
        )
        .activity(
            40,
            "bob@contoso.com",
            "Microsoft.Compute/virtualMachines/extensions/write",
            &id("Microsoft.Compute/virtualMachines/web-02/extensions/BGInfo"),
        )
        .activity(
            50,
            "bob@contoso.com",
            "Microsoft.Compute/virtualMachines/restart/action",
            &id("Microsoft.Compute/virtualMachines/web-02"),
        )
        .activity(
            70,
            "carol@contoso.com",
            RULE_WRITE,
            &id("Microsoft.Network/networkSecurityGroups/web-02-nsg/securityRules/allow-https"),
        )
        .activity(
            180,
            "00000000-0000-0000-0000-0000000000cc",
            "Microsoft.Compute/virtualMachines/write",
            &id("Microsoft.Compute/virtualMachines/web-02"),
        )
        // Another VM's: not web-02's.
        .activity(
            5,
            "dave@contoso.com",
            "Microsoft.Compute/virtualMachines/deallocate/action",
            &id("Microsoft.Compute/virtualMachines/web-09"),
        )
}

/// Clock times (HH:MM, UTC) vary from run to run: each becomes `<hh:mm>`, with the day ("Nov 30
/// ") that a change from before today's UTC midnight carries (the simulated changes are hours
/// old, so a run just after midnight has it).
fn timeless(text: &str) -> String {
    regex::Regex::new(r"\b(?:[A-Z][a-z]{2} \d{2} )?\d{2}:\d{2}\b")
        .unwrap()
        .replace_all(text, "<hh:mm>")
        .into_owned()
}

#[tokio::test]
async fn check_shows_the_newest_changes_and_marks_the_one_behind_the_failure() {
    within(async {
        let cli = Cli::start(web_02()).await;
        let out = cli.run(&["check", "web-02"]).await;
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        let text = timeless(&stdout(&out));
        let section = text
            .split_once("Recent changes")
            .and_then(|(_, rest)| rest.split_once("\n\n"))
            .map(|(section, _)| section)
            .unwrap_or_else(|| panic!("no Recent changes in {text}"));
        insta::assert_snapshot!(section, @r"
         (the last 24 hours, newest first, UTC):
          <hh:mm> alice@contoso.com created security rule deny-rdp-internet in web-02-snet-nsg  <- explains nsg
          <hh:mm> bob@contoso.com created extension BGInfo of VM web-02
          <hh:mm> bob@contoso.com restarted VM web-02
          2 more: rdp-doctor changes web-02
        ");
    })
    .await
}

#[tokio::test]
async fn changes_lists_every_change_of_the_window_newest_first() {
    within(async {
        let cli = Cli::start(web_02()).await;
        let out = cli.run(&["changes", "web-02"]).await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        insta::assert_snapshot!(timeless(&stdout(&out)), @r"
        web-02  resource group rg-web, subscription 11111111-1111-1111-1111-111111111111
        Recent changes (the last 24 hours, newest first, UTC):
          <hh:mm> alice@contoso.com created security rule deny-rdp-internet in web-02-snet-nsg
          <hh:mm> bob@contoso.com created extension BGInfo of VM web-02
          <hh:mm> bob@contoso.com restarted VM web-02
          <hh:mm> carol@contoso.com created security rule allow-https in web-02-nsg
          <hh:mm> 00000000-0000-0000-0000-0000000000cc created VM web-02
        ");

        let hour = cli.run(&["changes", "web-02", "--hours", "1"]).await;
        assert_eq!(code(&hour), 0, "{}", stderr(&hour));
        let text = stdout(&hour);
        assert!(
            text.contains("(the last hour, newest first, UTC)"),
            "{text}"
        );
        assert!(
            text.contains("bob@contoso.com restarted VM web-02"),
            "{text}"
        );
        assert!(!text.contains("carol"), "older than an hour: {text}");

        let json = cli.run(&["changes", "web-02", "--json"]).await;
        assert_eq!(code(&json), 0, "{}", stderr(&json));
        let v = super::json(&json);
        assert_eq!(keys(&v), ["changes", "vm"]);
        assert_eq!(v["vm"]["name"], "web-02");
        assert_eq!(v["changes"]["status"], "listed");
        assert_eq!(v["changes"]["window_minutes"], 1440);
        let first = &v["changes"]["changes"][0];
        assert_eq!(
            keys(first),
            [
                "at",
                "explains",
                "operation",
                "resource_id",
                "status",
                "summary",
                "who"
            ]
        );
        assert_eq!(first["operation"], RULE_WRITE);
        assert_eq!(first["status"], "Succeeded");
        assert_eq!(v["changes"]["changes"].as_array().map(Vec::len), Some(5));

        let bad = cli.run(&["changes", "web-02", "--hours", "0"]).await;
        assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    })
    .await
}

#[tokio::test]
async fn a_principal_without_the_activity_log_gets_the_reason_and_exit_3() {
    within(async {
        let world = web_02()
            .client_secret("scoped-secret")
            .principal(support::CLIENT, "scoped-secret")
            .custom_role_at(
                &["Microsoft.Compute/*", "Microsoft.Network/*", "Microsoft.ResourceHealth/*"],
                &format!("/subscriptions/{}", rdp_doctor::sim::DEFAULT_SUBSCRIPTION),
            );
        let cli = Cli::start(world).await;
        let reason = format!(
            "{} lacks Microsoft.Insights/eventtypes/values/read over /subscriptions/{}/resourceGroups/rg-web (Reader or Monitoring Reader grants it)",
            support::CLIENT,
            rdp_doctor::sim::DEFAULT_SUBSCRIPTION
        );
        let check = cli.run(&["check", "web-02"]).await;
        assert_eq!(code(&check), 1, "the checks still judge: {}", stderr(&check));
        assert!(
            stdout(&check).contains(&format!("Recent changes: skipped: {reason}")),
            "{}",
            stdout(&check)
        );
        let changes = cli.run(&["changes", "web-02"]).await;
        assert_eq!(code(&changes), 3, "{}", stderr(&changes));
        assert!(
            stderr(&changes).contains(&format!("the Activity Log was not read: {reason}")),
            "{}",
            stderr(&changes)
        );
    })
    .await
}
