//! "What changed" in the war room: a report's "Recent changes" (the change behind the failure
//! marked, shown in each reader's own time zone), `/rdp changes vm` with the whole list, and
//! the section skipped, with the reason, when Azure refuses the Activity Log.

use super::*;

#[tokio::test]
async fn rdp_changes_lists_who_changed_what_newest_first() {
    within(async {
        let room = Room::start(rdp_doctor::sim::demo_world()).await;
        let answer = room.run("/rdp changes web-02").await.final_edit().await;
        room.assert_clean();
        insta::assert_snapshot!(answer.text, @r"
        # web-02: recent changes
        Resource group **rg-web** · subscription `11111111-1111-1111-1111-111111111111`
        ## 🕘 Activity Log
        The last 24 hours, newest first:
        <t:…> alice@contoso.com created security rule deny-rdp-internet in nsg-snet-app
        <t:…> bob@contoso.com created security rule allow-https in nsg-rdp
        ");
        // Times are Discord timestamps: every reader sees their own zone (`t`, the time, for a
        // change of today in UTC; `f`, with the date, for one before midnight).
        let value = embed(&answer.raw, 0)["fields"][0]["value"]
            .as_str()
            .expect("a field")
            .to_owned();
        assert!(
            regex::Regex::new(r"^The last 24 hours, newest first:\n<t:\d+:[tf]> alice@contoso.com")
                .unwrap()
                .is_match(&value),
            "{value}"
        );
    })
    .await
}

#[tokio::test]
async fn a_report_says_why_its_changes_were_skipped() {
    within(async {
        let sub = rdp_doctor::sim::DEFAULT_SUBSCRIPTION;
        let world = World::new()
            .client_secret("scoped-secret")
            .vm("web-01")
            .principal(support::CLIENT, "scoped-secret")
            .custom_role_at(
                &["Microsoft.Compute/*", "Microsoft.Network/*", "Microsoft.ResourceHealth/*"],
                &format!("/subscriptions/{sub}"),
            );
        let room = Room::start(world).await;
        let report = room.run("/rdp check web-01").await.final_edit().await;
        room.assert_clean();
        let section = report
            .text
            .split_once("## 🕘 Recent changes\n")
            .and_then(|(_, rest)| rest.lines().next())
            .unwrap_or_else(|| panic!("no Recent changes in {}", report.text))
            .to_owned();
        assert_eq!(
            section,
            format!(
                "Skipped: {} lacks Microsoft.Insights/eventtypes/values/read over /subscriptions/{sub}/resourceGroups/rg-web (Reader or Monitoring Reader grants it)",
                support::CLIENT
            )
        );
        // The rest of the report is whole.
        assert!(report.text.starts_with("# web-01: nothing found that blocks Remote Desktop"));
    })
    .await
}
