//! "What changed": the simulator's Activity Log in the shape of Microsoft's REST spec (through
//! plain HTTP and through rdp-doctor's own client), the writes it served under the principal
//! that made them, and the reports' "Recent changes" through the door: the change that explains
//! a failing check marked, the window, a principal Azure refuses.
//!
//! The terminal's and the war room's output are in `cli/changes.rs` and `discord/changes.rs`.

use crate::support::{self, requests_to, within, Harness};
use azure_core::auth::TokenCredential;
use rdp_doctor::diagnose::CheckId;
use rdp_doctor::domain::{Change, Changes};
use rdp_doctor::policy::{Actor, Place};
use rdp_doctor::runbook::door::{Caller, Door};
use rdp_doctor::runbook::fix::{parse_source, FixRequest};
use rdp_doctor::runbook::{CheckOptions, Report};
use rdp_doctor::sim::{demo_world, Simulator, World, DEFAULT_SUBSCRIPTION};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const SUB: &str = DEFAULT_SUBSCRIPTION;
const DAY: Duration = Duration::from_secs(24 * 3600);
const RULE_WRITE: &str = "Microsoft.Network/networkSecurityGroups/securityRules/write";

const POLICY: &str = r#"
[[grant]]
cli_user = "alice"
level = "admin"
scope = "*"
[[grant]]
cli_user = "bob"
level = "admin"
scope = "*"
"#;

fn at_terminal(name: &str) -> Caller {
    Caller {
        actor: Actor::terminal(name),
        place: Place::Terminal,
    }
}

fn door(h: &Harness) -> Door {
    Door::new(
        h.arm.clone(),
        h.catalog.clone(),
        Arc::new(support::policy(Some(POLICY))),
        h.subscriptions.clone(),
    )
}

fn rg_id(rg: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}")
}

fn rule_id(rg: &str, nsg: &str, rule: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/{nsg}/securityRules/{rule}",
        rg_id(rg)
    )
}

fn vm_id(rg: &str, vm: &str) -> String {
    format!(
        "{}/providers/Microsoft.Compute/virtualMachines/{vm}",
        rg_id(rg)
    )
}

async fn check(door: &Door, vm: &str) -> Report {
    door.check(&at_terminal("alice"), vm, &CheckOptions::default(), &|_| {})
        .await
        .expect("a report")
}

fn listed(changes: &Changes) -> &[Change] {
    match changes {
        Changes::Listed { changes, .. } => changes,
        Changes::Skipped { reason } => panic!("changes skipped: {reason}"),
    }
}

/// A token for the simulator's ARM, as any client of Entra gets one.
async fn token(sim: &Simulator, secret: &str) -> String {
    let credential = azure_identity::ClientSecretCredential::new(
        azure_core::new_http_client(),
        url::Url::parse(&sim.url()).expect("url"),
        support::TENANT.to_owned(),
        support::CLIENT.to_owned(),
        secret.to_owned(),
    );
    let scope = format!("{}/.default", sim.url());
    credential
        .get_token(&[&scope])
        .await
        .expect("token")
        .token
        .secret()
        .to_owned()
}

/// `GET` of the Activity Log with `filter` (or none), or of a `nextLink`: status and body.
async fn activity_log(sim: &Simulator, token: &str, filter: Option<&str>) -> (u16, Value) {
    let mut url = url::Url::parse(&format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01",
        sim.url()
    ))
    .expect("url");
    if let Some(filter) = filter {
        url.query_pairs_mut().append_pair("$filter", filter);
    }
    get(url.as_str(), token).await
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, body)
}

fn stamp(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("time")
}

fn window_filter(hours: i64, rest: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "eventTimestamp ge '{}' and eventTimestamp le '{}'{rest}",
        stamp(now - time::Duration::hours(hours)),
        stamp(now + time::Duration::minutes(1))
    )
}

#[tokio::test]
async fn the_activity_log_answers_in_the_shape_of_microsofts_example_a_page_at_a_time() {
    within(async {
        let mut world = World::new()
            .vm("web-01")
            .activity(
                10,
                "alice@contoso.com",
                RULE_WRITE,
                &rule_id("rg-web", "web-01-nsg", "deny-rdp"),
            )
            .activity(
                20,
                "bob@contoso.com",
                "Microsoft.Compute/virtualMachines/deallocate/action",
                &vm_id("rg-web", "web-01"),
            )
            .activity(
                30,
                "carol@contoso.com",
                RULE_WRITE,
                &rule_id("rg-other", "nsg-x", "allow-x"),
            )
            .activity(
                3000,
                "dave@contoso.com",
                RULE_WRITE,
                &rule_id("rg-web", "web-01-nsg", "old"),
            );
        world.activity_page_size = 1;
        let h = Harness::start(world).await;
        let token = token(&h.sim, &h.secret()).await;

        // The filter of "List events for a resource group", one event a page, newest first.
        let (status, page) = activity_log(
            &h.sim,
            &token,
            Some(&window_filter(24, " and resourceGroupName eq 'rg-web'")),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let event = &page["value"][0];
        assert_eq!(page["value"].as_array().map(Vec::len), Some(1));
        assert_eq!(event["caller"], "alice@contoso.com");
        assert_eq!(event["operationName"]["value"], RULE_WRITE);
        assert_eq!(
            event["operationName"]["localizedValue"],
            "Create or Update Security Rule"
        );
        assert_eq!(
            event["resourceId"],
            rule_id("rg-web", "web-01-nsg", "deny-rdp")
        );
        assert_eq!(event["resourceGroupName"], "rg-web");
        assert_eq!(event["status"]["value"], "Succeeded");
        assert_eq!(event["subStatus"]["value"], "Created");
        assert_eq!(
            event["subStatus"]["localizedValue"],
            "Created (HTTP Status Code: 201)"
        );
        assert_eq!(event["authorization"]["action"], RULE_WRITE);
        assert_eq!(event["authorization"]["scope"], event["resourceId"]);
        assert_eq!(event["eventName"]["value"], "EndRequest");
        assert_eq!(event["level"], "Informational");
        assert_eq!(event["subscriptionId"], SUB);
        let at = time::OffsetDateTime::parse(
            event["eventTimestamp"].as_str().expect("a time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339");
        let ago = time::OffsetDateTime::now_utc() - at;
        assert!(
            ago >= time::Duration::minutes(9) && ago <= time::Duration::minutes(11),
            "{ago}"
        );
        let mut callers = vec![event["caller"].clone()];
        let mut next = page["nextLink"].as_str().map(str::to_owned);
        while let Some(link) = next {
            assert!(link.contains("$skipToken="), "{link}");
            let (status, page) = get(&link, &token).await;
            assert_eq!(status, 200);
            callers.extend(
                page["value"]
                    .as_array()
                    .expect("value")
                    .iter()
                    .map(|e| e["caller"].clone()),
            );
            next = page["nextLink"].as_str().map(str::to_owned);
        }
        // rg-other's event is another group's; dave's is older than the window.
        assert_eq!(callers, ["alice@contoso.com", "bob@contoso.com"]);

        // One resource's events (resourceUri), and the whole subscription's.
        let (_, one) = activity_log(
            &h.sim,
            &token,
            Some(&window_filter(
                24,
                &format!(" and resourceUri eq '{}'", vm_id("rg-web", "web-01")),
            )),
        )
        .await;
        assert_eq!(one["value"][0]["caller"], "bob@contoso.com");
        assert!(one.get("nextLink").is_none(), "{one}");

        // Azure's "very restricted" $filter: nothing else is served.
        for bad in [
            None,
            Some("resourceGroupName eq 'rg-web'".to_owned()),
            Some(window_filter(1, " and caller eq 'alice@contoso.com'")),
            Some(window_filter(24 * 91, "")),
        ] {
            let (status, body) = activity_log(&h.sim, &token, bad.as_deref()).await;
            assert_eq!(status, 400, "{bad:?}: {body}");
            assert_eq!(body["error"]["code"], "BadRequest", "{bad:?}");
        }

        // rdp-doctor's own client follows every page.
        let before = requests_to(&h.sim, "GET", "/values");
        let now = time::OffsetDateTime::now_utc();
        let events = h
            .arm
            .activity_in_group(SUB, "rg-web", now - time::Duration::hours(24), now)
            .await
            .expect("the Activity Log");
        let callers: Vec<&str> = events.iter().map(|e| e.caller.as_str()).collect();
        assert_eq!(callers, ["alice@contoso.com", "bob@contoso.com"]);
        assert_eq!(
            requests_to(&h.sim, "GET", "/values") - before,
            2,
            "one request a page"
        );
    })
    .await
}

#[tokio::test]
async fn web_02s_report_names_alices_deny_rule_as_the_change_that_explains_it() {
    within(async {
        let h = Harness::start(demo_world()).await;
        let report = check(&door(&h), "web-02").await;
        let changes = report.changes.as_ref().expect("recent changes");
        let list = listed(changes);
        let first = &list[0];
        assert_eq!(first.who, "alice@contoso.com");
        assert_eq!(
            first.summary,
            "created security rule deny-rdp-internet in nsg-snet-app"
        );
        assert_eq!(first.explains, Some(CheckId::Nsg));
        assert_eq!(changes.explaining(CheckId::Nsg), Some(first));
        // bob's rule in the NIC's NSG (another resource group) concerns web-02 too, and explains
        // nothing; his update of web-01 concerns another VM and is left out.
        let bobs: Vec<&str> = list
            .iter()
            .filter(|c| c.who == "bob@contoso.com")
            .map(|c| c.summary.as_str())
            .collect();
        assert_eq!(bobs, ["created security rule allow-https in nsg-rdp"]);
        assert!(list.iter().skip(1).all(|c| c.explains.is_none()));
        // Newest first.
        assert!(list.windows(2).all(|w| w[0].at >= w[1].at));

        // In the JSON contract beside the findings.
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["changes"]["status"], "listed");
        assert_eq!(json["changes"]["window_minutes"], 1440);
        assert_eq!(json["changes"]["changes"][0]["explains"], "nsg");
        assert_eq!(json["changes"]["changes"][0]["who"], "alice@contoso.com");

        // A healthy VM's report lists bob's update and marks nothing.
        let web1 = check(&door(&h), "web-01").await;
        let list = listed(web1.changes.as_ref().expect("changes"));
        assert!(
            list.iter().any(|c| c.summary == "updated VM web-01"),
            "{list:?}"
        );
        assert!(list.iter().all(|c| c.explains.is_none()));
    })
    .await
}

/// web-02 behind its subnet NSG's deny rule, an `open-rdp-port` fix through the door, then
/// `Door::changes`: the rule's write under `who`.
async fn fix_and_list(h: &Harness) -> Vec<Change> {
    let door = door(h).with_store(support::store(None).await);
    let alice = at_terminal("alice");
    let summary = door
        .resolve(&alice, "web-02", door.catalog().commands.check)
        .await
        .expect("web-02");
    let source = parse_source("198.51.100.7").expect("source");
    let prompt = door
        .request_fix(
            &alice,
            &summary,
            FixRequest::OpenRdpPort { source, port: 3389 },
        )
        .await
        .expect("prompt");
    // open-rdp-port is a two-person fix by default: bob confirms.
    let outcome = door
        .confirm(&at_terminal("bob"), &prompt.confirmation_id, &|_| {})
        .await
        .expect("confirmed");
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let changes = door
        .changes(&alice, &summary.vm, DAY)
        .await
        .expect("changes");
    listed(&changes).to_vec()
}

#[tokio::test]
async fn a_fix_through_rdp_doctor_is_in_the_activity_log_under_its_principal() {
    within(async {
        let h = Harness::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let list = fix_and_list(&h).await;
        let rule = list
            .iter()
            .find(|c| c.operation == RULE_WRITE)
            .unwrap_or_else(|| panic!("no rule write in {list:?}"));
        // A service principal is named by its application id, as Azure writes it.
        assert_eq!(rule.who, support::CLIENT);
        assert_eq!(
            rule.summary,
            "created security rule rdp-doctor-allow-rdp-198-51-100-7 in web-02-snet-nsg"
        );
        // Accepted when asked, Succeeded once the operation the fix followed ended.
        assert_eq!(rule.status, "Succeeded");
        // The checks' own POSTs (effective rules, routes, boot diagnostics) change nothing.
        assert!(
            list.iter().all(|c| !c.operation.contains("effective")
                && !c.operation.contains("retrieveBootDiagnosticsData")),
            "{list:?}"
        );

        // A principal the world names is shown by that name.
        let mut world = World::new()
            .vm("web-02")
            .nsg_denies_rdp()
            .principal(support::CLIENT, "sp-secret")
            .role_at("Contributor", &format!("/subscriptions/{SUB}"));
        world.principals[0].name = Some("rdp-doctor-prod".to_owned());
        let h = Harness::build(world).secret("sp-secret").start().await;
        let list = fix_and_list(&h).await;
        let who: Vec<&str> = list
            .iter()
            .filter(|c| c.operation == RULE_WRITE)
            .map(|c| c.who.as_str())
            .collect();
        assert_eq!(who, ["rdp-doctor-prod"]);
    })
    .await
}

#[tokio::test]
async fn a_principal_without_the_activity_logs_read_gets_the_section_skipped_with_the_reason() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .principal(support::CLIENT, "sp-secret")
            .custom_role_at(
                &[
                    "Microsoft.Compute/*",
                    "Microsoft.Network/*",
                    "Microsoft.ResourceHealth/*",
                    "Microsoft.Resources/*",
                ],
                &format!("/subscriptions/{SUB}"),
            );
        let h = Harness::build(world).secret("sp-secret").start().await;
        let report = check(&door(&h), "web-01").await;
        match report.changes.as_ref().expect("the section") {
            Changes::Skipped { reason } => assert_eq!(
                reason,
                &format!(
                    "{} lacks Microsoft.Insights/eventtypes/values/read over /subscriptions/{SUB}/resourceGroups/rg-web (Reader or Monitoring Reader grants it)",
                    support::CLIENT
                )
            ),
            other => panic!("not skipped: {other:?}"),
        }
        // The rest of the report is whole: the checks do not depend on it.
        assert_eq!(report.verdict, rdp_doctor::runbook::Verdict::Ok);

        // A Reader reads it (`*/read`).
        let world = World::new()
            .vm("web-01")
            .principal(support::CLIENT, "sp-secret")
            .role_at("Reader", &format!("/subscriptions/{SUB}"))
            .activity(5, "alice@contoso.com", RULE_WRITE, &rule_id("rg-web", "web-01-nsg", "x"));
        let h = Harness::build(world).secret("sp-secret").start().await;
        let summary = door(&h)
            .resolve(&at_terminal("bob"), "web-01", door(&h).catalog().commands.check)
            .await
            .expect("web-01");
        let changes = door(&h)
            .changes(&at_terminal("bob"), &summary.vm, DAY)
            .await
            .expect("changes");
        assert_eq!(listed(&changes).len(), 1);
    })
    .await
}

#[tokio::test]
async fn the_window_leaves_older_changes_out() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .activity(
                30,
                "alice@contoso.com",
                RULE_WRITE,
                &rule_id("rg-web", "web-01-nsg", "a"),
            )
            .activity(
                300,
                "bob@contoso.com",
                RULE_WRITE,
                &rule_id("rg-web", "web-01-nsg", "b"),
            )
            .activity(
                60 * 30,
                "carol@contoso.com",
                RULE_WRITE,
                &rule_id("rg-web", "web-01-nsg", "c"),
            );
        let h = Harness::start(world).await;
        let door = door(&h);
        let alice = at_terminal("alice");
        let vm = door
            .resolve(&alice, "web-01", door.catalog().commands.check)
            .await
            .expect("web-01")
            .vm;
        let who = |changes: &Changes| -> Vec<String> {
            listed(changes).iter().map(|c| c.who.clone()).collect()
        };
        let hour = door
            .changes(&alice, &vm, Duration::from_secs(3600))
            .await
            .expect("changes");
        assert_eq!(who(&hour), ["alice@contoso.com"]);
        let day = door.changes(&alice, &vm, DAY).await.expect("changes");
        assert_eq!(who(&day), ["alice@contoso.com", "bob@contoso.com"]);
        let week = door.changes(&alice, &vm, 7 * DAY).await.expect("changes");
        assert_eq!(who(&week).len(), 3);
        // The report's window is the door's.
        let door = door.with_changes_window(Duration::from_secs(3600));
        let report = check(&door, "web-01").await;
        assert_eq!(
            who(report.changes.as_ref().expect("changes")),
            ["alice@contoso.com"]
        );
        match report.changes.as_ref() {
            Some(Changes::Listed { window, .. }) => assert_eq!(*window, Duration::from_secs(3600)),
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn reading_the_changes_costs_a_request_per_resource_group_beside_the_checks() {
    within(async {
        // web-02's NIC NSG is in rg-shared-net, everything else in rg-web: two requests.
        let h = Harness::start(demo_world()).await;
        let before = requests_to(&h.sim, "GET", "/values");
        check(&door(&h), "web-02").await;
        assert_eq!(requests_to(&h.sim, "GET", "/values") - before, 2);
        // The VM's group is asked at once, in the first wave beside the VM read: before any
        // answer of the effective rules is followed; the NIC NSG's group once the NIC is read.
        let log = h.sim.stats().log;
        let started = |needle: &str| {
            log.iter()
                .find(|e| e.path.contains(needle))
                .unwrap_or_else(|| {
                    panic!(
                        "no {needle} in {:#?}",
                        log.iter().map(|e| &e.path).collect::<Vec<_>>()
                    )
                })
                .started_us
        };
        let finished = |needle: &str| {
            log.iter()
                .find(|e| e.path.contains(needle))
                .map(|e| e.finished_us)
                .expect(needle)
        };
        assert!(started("resourceGroupName+eq+%27rg-web%27") < started("/operationResults/"));
        assert!(
            started("resourceGroupName+eq+%27rg-shared-net%27")
                > finished("/networkInterfaces/web-02-nic?")
        );
    })
    .await
}

#[tokio::test]
async fn checks_at_once_share_their_groups_read_and_a_fix_ends_the_sharing() {
    within(async {
        // Azure logs every POST, the checks' own reading ones too: each check of a busy group
        // would page through all the others'. Five checks of web-02 at once (one resource
        // group) read its log once between them.
        let h = Harness::start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let door = door(&h);
        let before = requests_to(&h.sim, "GET", "/values");
        let reports = futures::future::join_all((0..5).map(|_| check(&door, "web-02"))).await;
        assert_eq!(requests_to(&h.sim, "GET", "/values") - before, 1);
        for report in &reports {
            assert!(
                matches!(report.changes, Some(Changes::Listed { .. })),
                "{:?}",
                report.changes
            );
        }
        // A fix through the same connection at once after: the read that follows is a new one
        // and lists the fix (`fix_and_list` asks well within the sharing's 2 s).
        let before = requests_to(&h.sim, "GET", "/values");
        let list = fix_and_list(&h).await;
        assert!(requests_to(&h.sim, "GET", "/values") > before);
        assert!(list.iter().any(|c| c.operation == RULE_WRITE), "{list:?}");
    })
    .await
}

#[tokio::test]
async fn the_demo_worlds_deallocate_and_route_explain_app_02_and_udr_01() {
    within(async {
        let h = Harness::start(demo_world()).await;
        let door = door(&h);
        for (vm, check_id, who, summary) in [
            (
                "app-02",
                CheckId::VmStatus,
                "carol@contoso.com",
                "deallocated VM app-02",
            ),
            (
                "udr-01",
                CheckId::NetworkPath,
                "dan@contoso.com",
                "created route to-firewall in rt-snet-udr",
            ),
        ] {
            let report = check(&door, vm).await;
            let changes = report.changes.as_ref().expect("changes");
            let marked = changes
                .explaining(check_id)
                .unwrap_or_else(|| panic!("nothing explains {check_id} of {vm}: {changes:?}"));
            assert_eq!(
                (marked.who.as_str(), marked.summary.as_str()),
                (who, summary)
            );
            assert_eq!(
                listed(changes)
                    .iter()
                    .filter(|c| c.explains.is_some())
                    .count(),
                1,
                "{vm}"
            );
        }
    })
    .await
}
