//! Azure Monitor's common alert schema, as an action group's webhook posts it (Microsoft,
//! "Common alert schema" and "Sample alert payloads",
//! <https://learn.microsoft.com/en-us/azure/azure-monitor/alerts/alerts-common-schema> and
//! <https://learn.microsoft.com/en-us/azure/azure-monitor/alerts/alerts-payload-samples>):
//! `{"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {…}, "alertContext":
//! {…}, "customProperties": …}}`.
//!
//! `essentials` is the same for every kind of alert (`alertId`, `alertRule`, `severity`
//! `Sev0`–`Sev4`, `signalType` `Metric`/`Log`/`Activity Log`, `monitorCondition`
//! `Fired`/`Resolved`, `monitoringService`, `alertTargetIDs`, `configurationItems`,
//! `firedDateTime`, `resolvedDateTime`); `alertContext` depends on the monitoring service. Only
//! what the war room is shown is read from it: the metric's condition, a log search's result
//! count, an activity log event's operation and caller, Resource Health's status change.
//!
//! Pure: no I/O. A payload that is not the common schema, or lacks a field the schema
//! requires, is refused with what was wrong (never with the payload itself).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `schemaId` of the common alert schema.
pub const COMMON_SCHEMA: &str = "azureMonitorCommonAlertSchema";

/// Fired or resolved (`essentials.monitorCondition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    Fired,
    Resolved,
}

/// What kind of signal fired (`essentials.signalType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    Metric,
    Log,
    ActivityLog,
}

/// One alert notification, as much of it as rdp-doctor uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// `/subscriptions/…/providers/Microsoft.AlertsManagement/alerts/<guid>`: the same for every
    /// notification of one alert instance (fired, refired, resolved).
    pub id: String,
    pub rule: String,
    /// `Sev0` (critical) to `Sev4` (verbose).
    pub severity: String,
    pub signal: Signal,
    pub condition: Condition,
    /// `Platform`, `Log Alerts V2`, `Activity Log - Administrative`, `Resource Health`, …
    pub monitoring_service: String,
    /// The resources the alert is about (resource ids, often in lower case).
    pub targets: Vec<String>,
    /// As Azure wrote it (ISO 8601, UTC).
    pub fired: String,
    pub resolved: Option<String>,
    /// One line from `alertContext` saying what fired, when it says anything rdp-doctor knows.
    pub context: Option<String>,
}

/// Why a payload is not an alert rdp-doctor accepts (for the 400 answer and the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("the body is not JSON ({0})")]
    NotJson(String),
    #[error("schemaId is {0:?}, not \"azureMonitorCommonAlertSchema\": enable the common alert schema on the action group's webhook")]
    Schema(String),
    #[error("data.essentials.{field} is {problem}")]
    Field {
        field: &'static str,
        problem: &'static str,
    },
}

fn field<'a>(essentials: &'a Value, name: &'static str) -> Result<&'a str, AlertError> {
    match essentials.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        Some(Value::String(_)) => Err(AlertError::Field {
            field: name,
            problem: "empty",
        }),
        Some(_) => Err(AlertError::Field {
            field: name,
            problem: "not a string",
        }),
        None => Err(AlertError::Field {
            field: name,
            problem: "missing",
        }),
    }
}

/// Whether `text` is an ISO 8601 date and time as Azure writes them (`2019-03-22T13:58:24.3713213Z`).
fn is_datetime(text: &str) -> bool {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

impl Alert {
    /// Parse a webhook body.
    pub fn parse(body: &[u8]) -> Result<Alert, AlertError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            AlertError::NotJson(format!(
                "line {} column {}: {:?}",
                e.line(),
                e.column(),
                e.classify()
            ))
        })?;
        let schema = value.get("schemaId").and_then(Value::as_str).unwrap_or("");
        if schema != COMMON_SCHEMA {
            return Err(AlertError::Schema(schema.chars().take(60).collect()));
        }
        let data = &value["data"];
        let essentials = &data["essentials"];
        if !essentials.is_object() {
            return Err(AlertError::Field {
                field: "(itself)",
                problem: "missing or not an object",
            });
        }
        let id = field(essentials, "alertId")?.to_string();
        let rule = field(essentials, "alertRule")?.to_string();
        let severity = field(essentials, "severity")?;
        if !matches!(severity, "Sev0" | "Sev1" | "Sev2" | "Sev3" | "Sev4") {
            return Err(AlertError::Field {
                field: "severity",
                problem: "not one of Sev0 to Sev4",
            });
        }
        let signal = match field(essentials, "signalType")? {
            "Metric" => Signal::Metric,
            "Log" => Signal::Log,
            "Activity Log" => Signal::ActivityLog,
            _ => {
                return Err(AlertError::Field {
                    field: "signalType",
                    problem: "not Metric, Log or Activity Log",
                })
            }
        };
        let condition = match field(essentials, "monitorCondition")? {
            "Fired" => Condition::Fired,
            "Resolved" => Condition::Resolved,
            _ => {
                return Err(AlertError::Field {
                    field: "monitorCondition",
                    problem: "not Fired or Resolved",
                })
            }
        };
        let monitoring_service = essentials
            .get("monitoringService")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let targets = match essentials.get("alertTargetIDs") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(|s| s.trim().to_string())
                        .ok_or(AlertError::Field {
                            field: "alertTargetIDs",
                            problem: "not a list of resource ids",
                        })
                })
                .collect::<Result<Vec<String>, AlertError>>()?,
            Some(_) => {
                return Err(AlertError::Field {
                    field: "alertTargetIDs",
                    problem: "not a list of resource ids",
                })
            }
            None => {
                return Err(AlertError::Field {
                    field: "alertTargetIDs",
                    problem: "missing",
                })
            }
        };
        let fired = field(essentials, "firedDateTime")?;
        if !is_datetime(fired) {
            return Err(AlertError::Field {
                field: "firedDateTime",
                problem: "not an ISO 8601 date and time",
            });
        }
        let resolved = match essentials.get("resolvedDateTime") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if is_datetime(s.trim()) => Some(s.trim().to_string()),
            Some(_) => {
                return Err(AlertError::Field {
                    field: "resolvedDateTime",
                    problem: "not an ISO 8601 date and time",
                })
            }
        };
        if condition == Condition::Resolved && resolved.is_none() {
            return Err(AlertError::Field {
                field: "resolvedDateTime",
                problem: "missing on a Resolved alert",
            });
        }
        let context = describe_context(signal, &monitoring_service, &data["alertContext"]);
        Ok(Alert {
            id,
            rule,
            severity: severity.to_string(),
            signal,
            condition,
            monitoring_service,
            targets,
            fired: fired.to_string(),
            resolved,
            context,
        })
    }

    /// The time it fired as people read it: `2026-11-30 12:01 UTC`.
    pub fn fired_text(&self) -> String {
        short_time(&self.fired)
    }

    /// The time it resolved as people read it, if it did.
    pub fn resolved_text(&self) -> Option<String> {
        self.resolved.as_deref().map(short_time)
    }
}

/// `2019-03-22T13:58:24.3713213Z` → `2019-03-22 13:58 UTC`.
fn short_time(text: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(text, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        }
        Err(_) => text.to_string(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One line from `alertContext`, per the shapes of Microsoft's samples: a metric alert's
/// `condition.allOf[0]` (`metricName`, `operator`, `threshold`, `metricValue`); a log search
/// alert's `condition.allOf[0].metricValue` (the rows found); an activity log alert's
/// `operationName`, `caller` and `status`; Resource Health's `properties.currentHealthStatus`,
/// `previousHealthStatus` and `title`. Clipped to 200 characters.
fn describe_context(signal: Signal, service: &str, context: &Value) -> Option<String> {
    let line = match signal {
        Signal::Metric => {
            let c = &context["condition"]["allOf"][0];
            let metric = text(&c["metricName"])?;
            let mut line = metric;
            if let (Some(op), Some(threshold)) = (text(&c["operator"]), text(&c["threshold"])) {
                line.push_str(&format!(" {op} {threshold}"));
            }
            if let Some(value) = text(&c["metricValue"]) {
                line.push_str(&format!(" (value {value})"));
            }
            line
        }
        Signal::Log => {
            let c = &context["condition"]["allOf"][0];
            let value = text(&c["metricValue"])?;
            format!("log search: {value} result(s)")
        }
        Signal::ActivityLog if service == "Resource Health" => {
            let p = &context["properties"];
            let now = text(&p["currentHealthStatus"])?;
            let mut line = format!("Resource Health: {now}");
            if let Some(before) = text(&p["previousHealthStatus"]) {
                line.push_str(&format!(" (was {before})"));
            }
            if let Some(title) = text(&p["title"]) {
                line.push_str(&format!(": {title}"));
            }
            line
        }
        Signal::ActivityLog => {
            let operation = text(&context["operationName"])?;
            let mut line = operation;
            if let Some(caller) = text(&context["caller"]) {
                line.push_str(&format!(" by {caller}"));
            }
            if let Some(status) = text(&context["status"]) {
                line.push_str(&format!(" ({status})"));
            }
            line
        }
    };
    Some(line.chars().take(200).collect())
}

#[cfg(test)]
mod tests;
