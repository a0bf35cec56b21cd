//! `--simulate` and `rdp-doctor simulate`: the built-in Azure simulator with the demo world.

use crate::sim::{SimOptions, Simulator, World};

/// Tenant and client ids the in-process simulator is signed into (it accepts any).
pub const DEMO_TENANT: &str = "00000000-0000-0000-0000-000000000001";
pub const DEMO_CLIENT: &str = "00000000-0000-0000-0000-000000000002";

/// Azure's behaviour, with Run Command taking a few seconds instead of Azure's tens (a demo
/// should not keep its audience waiting).
fn demo_options() -> SimOptions {
    SimOptions {
        run_command_delay: DEMO_RUN_COMMAND,
        ..SimOptions::default()
    }
}

/// How long a Run Command takes in the demo.
pub const DEMO_RUN_COMMAND: std::time::Duration = std::time::Duration::from_secs(3);

/// A simulator serving the demo world on an ephemeral loopback port.
pub struct Demo {
    pub sim: Simulator,
    pub world: World,
}

impl Demo {
    pub async fn start() -> anyhow::Result<Demo> {
        let world = crate::sim::demo_world();
        let sim = Simulator::start("127.0.0.1:0", world.clone(), demo_options()).await?;
        Ok(Demo { sim, world })
    }

    pub fn endpoint(&self) -> anyhow::Result<url::Url> {
        Ok(url::Url::parse(&self.sim.url())?)
    }

    pub fn client_secret(&self) -> secrecy::SecretString {
        self.world.client_secret.clone().into()
    }

    pub fn subscription_ids(&self) -> Vec<String> {
        self.world
            .subscriptions
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }
}

/// `rdp-doctor simulate` without `--world`: the demo world until Ctrl-C; with `alert`, an Azure
/// Monitor alert for one of its VMs posted once it listens.
pub async fn serve_demo(listen: &str, alert: Option<AlertTo>) -> anyhow::Result<()> {
    let options = SimOptions {
        retry_after_secs: 1,
        ..demo_options()
    };
    let world = crate::sim::demo_world();
    let target = match &alert {
        Some(alert) => Some(vm_id(&world, &alert.vm)?),
        None => None,
    };
    let sim = Simulator::start(listen, world, options).await?;
    println!("simulator listening on {} (demo world)", sim.url());
    let poster = alert
        .zip(target)
        .map(|(alert, id)| tokio::spawn(post_alerts(alert, id)));
    tokio::signal::ctrl_c().await?;
    if let Some(poster) = poster {
        poster.abort();
    }
    sim.shutdown().await;
    Ok(())
}

/// `--alert-to URL --alert VM [--alert-resolve-after SECS]`.
#[derive(Debug, Clone)]
pub struct AlertTo {
    /// Where rdp-doctor takes alerts, its token included:
    /// `http://127.0.0.1:8080/alerts/azure-monitor?token=…`.
    pub url: String,
    /// A VM of the world, by name.
    pub vm: String,
    /// Post the alert resolved this long after it fired.
    pub resolve_after: Option<std::time::Duration>,
}

/// The resource id of the world's VM named `name` (ignoring case, as Azure does).
fn vm_id(world: &World, name: &str) -> anyhow::Result<String> {
    let vm = world
        .vms
        .iter()
        .find(|v| v.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<&str> = world.vms.iter().map(|v| v.name.as_str()).collect();
            anyhow::anyhow!(
                "--alert {name}: the world has no such VM ({})",
                names.join(", ")
            )
        })?;
    let subscription = if vm.subscription.is_empty() {
        world
            .subscriptions
            .first()
            .map(|s| s.id.clone())
            .unwrap_or_default()
    } else {
        vm.subscription.clone()
    };
    Ok(format!(
        "/subscriptions/{subscription}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
        vm.resource_group, vm.name
    ))
}

/// A metric alert on the VM's availability in Azure Monitor's common alert schema, as an action
/// group's webhook posts it (Microsoft, "Sample alert payloads", the metric alert's shape, and
/// "Supported metrics for Microsoft.Compute/virtualMachines", `VmAvailabilityMetric`: 1 when the
/// VM is available, 0 when not). `resolved`: the time it resolved.
pub fn availability_alert(
    alert_guid: &str,
    vm_id: &str,
    fired: &str,
    resolved: Option<&str>,
) -> serde_json::Value {
    let subscription = vm_id.split('/').nth(2).unwrap_or_default();
    let name = vm_id.rsplit('/').next().unwrap_or_default();
    let mut essentials = serde_json::json!({
        "alertId": format!("/subscriptions/{subscription}/providers/Microsoft.AlertsManagement/alerts/{alert_guid}"),
        "alertRule": "vm-availability",
        "severity": "Sev1",
        "signalType": "Metric",
        "monitorCondition": if resolved.is_some() { "Resolved" } else { "Fired" },
        "monitoringService": "Platform",
        "alertTargetIDs": [vm_id.to_ascii_lowercase()],
        "configurationItems": [name],
        "originAlertId": format!("{subscription}_microsoft.insights_metricAlerts_vm-availability"),
        "firedDateTime": fired,
        "description": "VM availability below 1",
        "essentialsVersion": "1.0",
        "alertContextVersion": "1.0"
    });
    if let Some(resolved) = resolved {
        essentials["resolvedDateTime"] = resolved.into();
    }
    serde_json::json!({
        "schemaId": crate::domain::alert::COMMON_SCHEMA,
        "data": {
            "essentials": essentials,
            "alertContext": {
                "properties": null,
                "conditionType": "SingleResourceMultipleMetricCriteria",
                "condition": {
                    "windowSize": "PT5M",
                    "allOf": [{
                        "metricName": "VmAvailabilityMetric",
                        "metricNamespace": "Microsoft.Compute/virtualMachines",
                        "operator": "LessThan",
                        "threshold": "1",
                        "timeAggregation": "Average",
                        "dimensions": [],
                        "metricValue": if resolved.is_some() { 1 } else { 0 }
                    }]
                }
            },
            "customProperties": null
        }
    })
}

/// Now, as Azure writes alert times.
fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The URL without its query (where the token is), for messages.
fn shown(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Post the alert fired (and later resolved), each retried for a minute while nothing answers
/// (rdp-doctor may start after the simulator). Messages go to stderr, without the token.
async fn post_alerts(alert: AlertTo, vm_id: String) {
    let mut guid = [0u8; 16];
    let _ = getrandom::getrandom(&mut guid);
    let guid: String = guid.iter().map(|b| format!("{b:02x}")).collect();
    let guid = format!(
        "{}-{}-{}-{}-{}",
        &guid[..8],
        &guid[8..12],
        &guid[12..16],
        &guid[16..20],
        &guid[20..]
    );
    let fired = now_text();
    post_alert(
        &alert.url,
        &availability_alert(&guid, &vm_id, &fired, None),
        "fired",
    )
    .await;
    if let Some(after) = alert.resolve_after {
        tokio::time::sleep(after).await;
        let resolved = now_text();
        let body = availability_alert(&guid, &vm_id, &fired, Some(&resolved));
        post_alert(&alert.url, &body, "resolved").await;
    }
}

async fn post_alert(url: &str, body: &serde_json::Value, what: &str) {
    let client = reqwest::Client::new();
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .body(bytes.clone());
        match request.send().await {
            Ok(answer) => {
                eprintln!(
                    "posted the alert ({what}) to {}: {}",
                    shown(url),
                    answer.status()
                );
                return;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => {
                eprintln!(
                    "could not post the alert ({what}) to {}: {}",
                    shown(url),
                    e.without_url()
                );
                return;
            }
        }
    }
}
