use super::*;

const METRIC: &str = include_str!("../../../tests/fixtures/azure-monitor-alerts/metric.json");
const LOG: &str = include_str!("../../../tests/fixtures/azure-monitor-alerts/log.json");
const ACTIVITY: &str =
    include_str!("../../../tests/fixtures/azure-monitor-alerts/activity-log.json");
const HEALTH: &str =
    include_str!("../../../tests/fixtures/azure-monitor-alerts/resource-health.json");

const WEB_02: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourcegroups/rg-web/providers/microsoft.compute/virtualmachines/web-02";

#[test]
fn microsofts_metric_sample_parses() {
    let alert = Alert::parse(METRIC.as_bytes()).unwrap();
    assert_eq!(alert.rule, "WCUS-R2-Gen2");
    assert_eq!(alert.severity, "Sev3");
    assert_eq!(alert.signal, Signal::Metric);
    assert_eq!(alert.condition, Condition::Fired);
    assert_eq!(alert.monitoring_service, "Platform");
    assert_eq!(alert.targets, [WEB_02]);
    assert_eq!(alert.fired_text(), "2019-03-22 13:58 UTC");
    assert_eq!(alert.resolved, None);
    assert_eq!(
        alert.context.as_deref(),
        Some("Percentage CPU GreaterThan 25 (value 7.727)")
    );
}

#[test]
fn log_activity_log_and_resource_health_samples_parse() {
    let log = Alert::parse(LOG.as_bytes()).unwrap();
    assert_eq!(log.signal, Signal::Log);
    assert_eq!(log.context.as_deref(), Some("log search: 12 result(s)"));
    let activity = Alert::parse(ACTIVITY.as_bytes()).unwrap();
    assert_eq!(activity.signal, Signal::ActivityLog);
    assert_eq!(
        activity.context.as_deref(),
        Some(
            "Microsoft.Compute/virtualMachines/restart/action by user-email@domain.com (Succeeded)"
        )
    );
    let health = Alert::parse(HEALTH.as_bytes()).unwrap();
    assert_eq!(health.monitoring_service, "Resource Health");
    assert_eq!(
        health.context.as_deref(),
        Some("Resource Health: Unavailable (was Available): Rebooted by user")
    );
    assert_eq!(health.targets, [WEB_02]);
}

#[test]
fn a_resolved_alert_carries_its_resolved_time() {
    let resolved = METRIC.replace(
        "\"monitorCondition\": \"Fired\",",
        "\"monitorCondition\": \"Resolved\", \"resolvedDateTime\": \"2019-03-22T14:03:16.2246313Z\",",
    );
    let alert = Alert::parse(resolved.as_bytes()).unwrap();
    assert_eq!(alert.condition, Condition::Resolved);
    assert_eq!(
        alert.resolved_text().as_deref(),
        Some("2019-03-22 14:03 UTC")
    );
    // Resolved without saying when is not the schema.
    let bare = METRIC.replace("\"Fired\"", "\"Resolved\"");
    assert!(matches!(
        Alert::parse(bare.as_bytes()),
        Err(AlertError::Field {
            field: "resolvedDateTime",
            ..
        })
    ));
}

#[test]
fn what_is_not_the_common_schema_is_refused_with_the_reason() {
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not JSON"),
        ("{}".into(), "schemaId is \"\""),
        (
            METRIC.replace("azureMonitorCommonAlertSchema", "Microsoft.Insights/activityLogs"),
            "schemaId is \"Microsoft.Insights/activityLogs\"",
        ),
        (
            METRIC.replace("\"Sev3\"", "\"Critical\""),
            "data.essentials.severity is not one of Sev0 to Sev4",
        ),
        (
            METRIC.replace("\"Metric\"", "\"Smart Detector\""),
            "data.essentials.signalType is not Metric, Log or Activity Log",
        ),
        (
            METRIC.replace("\"Fired\"", "\"Acknowledged\""),
            "data.essentials.monitorCondition is not Fired or Resolved",
        ),
        (
            METRIC.replace("\"2019-03-22T13:58:24.3713213Z\"", "\"yesterday\""),
            "data.essentials.firedDateTime is not an ISO 8601",
        ),
        (
            METRIC.replace("\"alertRule\": \"WCUS-R2-Gen2\",", ""),
            "data.essentials.alertRule is missing",
        ),
        (
            r#"{"schemaId":"azureMonitorCommonAlertSchema","data":{"essentials":{"alertId":"x","alertRule":"r","severity":"Sev1","signalType":"Metric","monitorCondition":"Fired","alertTargetIDs":"web-02","firedDateTime":"2019-03-22T13:58:24Z"}}}"#.into(),
            "data.essentials.alertTargetIDs is not a list",
        ),
        (
            r#"{"schemaId":"azureMonitorCommonAlertSchema","data":{}}"#.into(),
            "data.essentials.(itself) is missing",
        ),
    ];
    for (body, expected) in cases {
        let e = Alert::parse(body.as_bytes()).unwrap_err().to_string();
        assert!(e.contains(expected), "{expected:?} in {e:?}");
    }
}

#[test]
fn a_refusal_never_echoes_the_payload() {
    let body = METRIC.replace("\"Sev3\"", "\"hunter2-secret-severity\"");
    let e = Alert::parse(body.as_bytes()).unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
}
