//! The simulator, driven by the real Azure SDK clients: every body it serves must parse into the
//! SDK models rdp-doctor uses, and its misbehaviour (throttling, faults) must be observable.

use crate::support;

use azure_core::auth::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::headers::HeaderName;
use azure_core::{Method, Request, StatusCode, Url};
use azure_identity::ClientSecretCredential;
use futures::StreamExt;
use rdp_doctor::sim::{
    demo_world, BucketOptions, FailOperation, Fault, FaultKind, PowerState, SimOptions, Simulator,
    World, DEFAULT_SUBSCRIPTION,
};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const SUB: &str = DEFAULT_SUBSCRIPTION;

/// Every test gets a deadline, so a hung request fails the test instead of the CI job.
async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), test)
        .await
        .expect("test took longer than 20 s")
}

async fn start(world: World) -> Simulator {
    start_with(world, SimOptions::fast()).await
}

async fn start_with(world: World, options: SimOptions) -> Simulator {
    Simulator::start("127.0.0.1:0", world, support::quick(options))
        .await
        .expect("simulator starts")
}

fn credential(sim: &Simulator, secret: &str) -> Arc<ClientSecretCredential> {
    Arc::new(ClientSecretCredential::new(
        azure_core::new_http_client(),
        Url::parse(&sim.url()).expect("url"),
        "tenant-of-tests".to_owned(),
        "app-of-tests".to_owned(),
        secret.to_owned(),
    ))
}

fn endpoint(sim: &Simulator) -> Url {
    Url::parse(&sim.url()).expect("url")
}

fn compute(sim: &Simulator) -> azure_mgmt_compute::package_2024_07_01::Client {
    azure_mgmt_compute::package_2024_07_01::Client::builder(credential(sim, "sim-secret"))
        .endpoint(endpoint(sim))
        .build()
        .expect("compute client")
}

fn network(sim: &Simulator) -> azure_mgmt_network::package_2024_03::Client {
    azure_mgmt_network::package_2024_03::Client::builder(credential(sim, "sim-secret"))
        .endpoint(endpoint(sim))
        .build()
        .expect("network client")
}

fn health(sim: &Simulator) -> azure_mgmt_resourcehealth::package_2024_02::Client {
    azure_mgmt_resourcehealth::package_2024_02::Client::builder(credential(sim, "sim-secret"))
        .endpoint(endpoint(sim))
        .build()
        .expect("resource health client")
}

fn status_of(error: &azure_core::Error) -> Option<StatusCode> {
    match error.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(*status),
        _ => None,
    }
}

/// A plain HTTP answer.
struct Raw {
    status: StatusCode,
    headers: azure_core::headers::Headers,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &'static str) -> Option<String> {
        self.headers
            .get_optional_string(&HeaderName::from_static(name))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request without the SDK's retry policy. `url` may be a path on the simulator.
async fn raw(sim: &Simulator, method: Method, url: &str, token: Option<&str>) -> Raw {
    raw_with_body(sim, method, url, token, None).await
}

async fn raw_with_body(
    sim: &Simulator,
    method: Method,
    url: &str,
    token: Option<&str>,
    form: Option<&str>,
) -> Raw {
    let url = if url.starts_with("http") {
        url.to_owned()
    } else {
        format!("{}{url}", sim.url())
    };
    let mut request = Request::new(Url::parse(&url).expect("url"), method);
    if let Some(token) = token {
        request.insert_header("authorization", format!("Bearer {token}"));
    }
    if let Some(form) = form {
        request.insert_header("content-type", "application/x-www-form-urlencoded");
        request.set_body(form.to_owned());
    } else {
        request.insert_header("content-length", "0");
    }
    let response = azure_core::new_http_client()
        .execute_request(&request)
        .await
        .expect("request sent");
    let (status, headers, body) = response.deconstruct();
    let body = body.collect().await.expect("body").to_vec();
    Raw {
        status,
        headers,
        body,
    }
}

async fn token(sim: &Simulator) -> String {
    let scope = format!("{}/.default", sim.url());
    credential(sim, "sim-secret")
        .get_token(&[&scope])
        .await
        .expect("token")
        .token
        .secret()
        .to_owned()
}

fn vm_path(rg: &str, vm: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}?api-version=2024-07-01")
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn demo_world_loads_and_lists_every_vm_through_sdk_paging() {
    within(async {
        let world = demo_world();
        assert_eq!(world.page_size, 2);
        let sim = start(world).await;
        let client = compute(&sim);
        let mut names = Vec::new();
        for sub in [
            SUB,
            "22222222-2222-2222-2222-222222222222",
            "33333333-3333-3333-3333-333333333333",
        ] {
            let mut pages = client.virtual_machines_client().list_all(sub).into_stream();
            while let Some(page) = pages.next().await {
                let page = page.expect("page parses into VirtualMachineListResult");
                assert!(page.value.len() <= 2);
                names.extend(page.value.into_iter().filter_map(|vm| vm.resource.name));
            }
        }
        let mut expected = vec![
            "web-01",
            "web-02",
            "jump-01",
            "app-01",
            "app-02",
            "sql-01",
            "batch-01",
            "db-01",
            "legacy-01",
            "linux-01",
            "api-01",
            "api-01",
            "reports-01",
            // Broken only inside the guest (Run Command's read finds them).
            "rdp-off-01",
            "svc-01",
            "port-01",
            "fw-01",
            "cert-01",
            "lic-01",
            "disk-01",
            "udr-01",
            // Gates in front of 3389.
            "avnm-01",
            "jit-01",
            "bastion-01",
            "bastion-02",
        ];
        names.sort();
        expected.sort();
        assert_eq!(names, expected);
        // 23 VMs in the first subscription need 12 pages, the others one each.
        assert_eq!(sim.stats().by_route["GET virtualMachines (list)"], 14);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn resource_group_listing_pages_and_unknown_scopes_are_404() {
    within(async {
        let world = World::new()
            .vm("a")
            .vm("b")
            .vm("c")
            .vm("other")
            .in_group("rg-other");
        let sim = start(world).await;
        let client = compute(&sim);
        let mut pages = client.virtual_machines_client().list("rg-web", SUB).into_stream();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            names.extend(page.expect("page").value.into_iter().filter_map(|vm| vm.resource.name));
        }
        assert_eq!(names, ["a", "b", "c"]);

        let token = token(&sim).await;
        let unknown_sub = raw(
            &sim,
            Method::Get,
            "/subscriptions/nope/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01",
            Some(&token),
        )
        .await;
        assert_eq!(unknown_sub.status, StatusCode::NotFound);
        assert_eq!(unknown_sub.json()["error"]["code"], "SubscriptionNotFound");
        let missing = raw(&sim, Method::Get, &vm_path("rg-web", "zzz"), Some(&token)).await;
        assert_eq!(missing.status, StatusCode::NotFound);
        assert_eq!(missing.json()["error"]["code"], "ResourceNotFound");
        let unknown_route = raw(&sim, Method::Get, "/nothing/here", Some(&token)).await;
        assert_eq!(unknown_route.status, StatusCode::NotFound);
        assert!(unknown_route.json()["error"]["code"].is_string());
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn vm_with_instance_view_parses_and_reflects_the_live_world() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .vm("sql-01")
            .agent_not_ready("VM Agent is unresponsive.")
            .vm("app-01")
            .deallocated()
            .linux();
        let sim = start(world).await;
        let vms = compute(&sim).virtual_machines_client();

        let vm = vms
            .get("rg-web", "WEB-01", SUB)
            .expand("instanceView")
            .await
            .expect("vm");
        let props = vm.properties.expect("properties");
        let os = props
            .storage_profile
            .and_then(|s| s.os_disk)
            .map(|d| d.os_type);
        assert_eq!(format!("{os:?}"), "Some(Some(Windows))");
        let view = props.instance_view.expect("instance view");
        let codes: Vec<String> = view
            .statuses
            .iter()
            .filter_map(|s| s.code.clone())
            .collect();
        assert_eq!(codes, ["ProvisioningState/succeeded", "PowerState/running"]);
        let agent = view.vm_agent.expect("agent");
        assert_eq!(agent.statuses[0].display_status.as_deref(), Some("Ready"));
        assert!(view.os_name.is_some());

        let sick = vms
            .instance_view("rg-web", "sql-01", SUB)
            .await
            .expect("instance view");
        let agent = sick.vm_agent.expect("agent");
        assert_eq!(agent.vm_agent_version.as_deref(), Some("Unknown"));
        assert_eq!(
            agent.statuses[0].display_status.as_deref(),
            Some("Not Ready")
        );
        assert_eq!(
            agent.statuses[0].message.as_deref(),
            Some("VM Agent is unresponsive.")
        );
        assert!(sick.os_name.is_none());

        let off = vms
            .instance_view("rg-web", "app-01", SUB)
            .await
            .expect("instance view");
        assert!(off.vm_agent.is_none());
        assert_eq!(
            off.statuses[1].code.as_deref(),
            Some("PowerState/deallocated")
        );

        sim.world()
            .vm("web-01")
            .set_power_state(PowerState::Stopped);
        let view = vms
            .instance_view("rg-web", "web-01", SUB)
            .await
            .expect("instance view");
        assert_eq!(view.statuses[1].code.as_deref(), Some("PowerState/stopped"));
        assert_eq!(sim.world().vm("web-01").power_state(), PowerState::Stopped);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn nic_public_ip_subnet_and_nsg_parse_into_network_models() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .nsg_denies_rdp()
            .vm("app-02")
            .deallocated()
            .dynamic_public_ip_without_address();
        let sim = start(world).await;
        let net = network(&sim);

        let nic = net
            .network_interfaces_client()
            .get("rg-web", "web-01-nic", SUB)
            .await
            .expect("nic");
        let props = nic.properties.expect("nic properties");
        let nsg_id = props
            .network_security_group
            .and_then(|n| n.resource.id)
            .expect("nic nsg");
        assert!(nsg_id.ends_with("/networkSecurityGroups/web-01-nsg"));
        let ipconfig = props.ip_configurations[0]
            .properties
            .clone()
            .expect("ipconfig");
        assert_eq!(ipconfig.private_ip_address.as_deref(), Some("10.0.1.4"));
        let pip_id = ipconfig
            .public_ip_address
            .and_then(|p| p.resource.id)
            .expect("public ip id");
        assert!(pip_id.ends_with("/publicIPAddresses/web-01-ip"));
        let subnet_id = ipconfig
            .subnet
            .and_then(|s| s.sub_resource.id)
            .expect("subnet id");
        assert!(subnet_id.ends_with("/virtualNetworks/rg-web-vnet/subnets/web-01-snet"));

        let pip = net
            .public_ip_addresses_client()
            .get("rg-web", "web-01-ip", SUB)
            .await
            .expect("pip");
        assert_eq!(
            pip.properties.and_then(|p| p.ip_address).as_deref(),
            Some("20.1.2.3")
        );
        let dynamic = net
            .public_ip_addresses_client()
            .get("rg-web", "app-02-ip", SUB)
            .await
            .expect("pip");
        let props = dynamic.properties.expect("pip properties");
        assert!(props.ip_address.is_none());
        assert_eq!(
            format!("{:?}", props.public_ip_allocation_method),
            "Some(Dynamic)"
        );

        let subnet = net
            .subnets_client()
            .get("rg-web", "rg-web-vnet", "web-01-snet", SUB)
            .await
            .expect("subnet");
        let subnet_nsg = subnet
            .properties
            .and_then(|p| p.network_security_group)
            .and_then(|n| n.resource.id);
        assert!(subnet_nsg.is_some_and(|id| id.ends_with("/web-01-snet-nsg")));

        let nsg = net
            .network_security_groups_client()
            .get("rg-web", "web-01-snet-nsg", SUB)
            .await
            .expect("nsg");
        let props = nsg.properties.expect("nsg properties");
        assert_eq!(props.security_rules.len(), 1);
        assert_eq!(props.default_security_rules.len(), 6);
        let deny = props.security_rules[0].properties.clone().expect("rule");
        assert_eq!(deny.priority, 200);
        assert_eq!(deny.destination_port_range.as_deref(), Some("3389"));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn effective_nsgs_are_a_long_running_operation_with_the_example_shape() {
    within(async {
        let world = World::new()
            .vm("web-02")
            .nsg_denies_rdp()
            .vm("stopped")
            .stopped()
            .vm("open")
            .no_nsg();
        let options = support::polled(2);
        let sim = start_with(world, options).await;
        let nics = network(&sim).network_interfaces_client();
        let token = token(&sim).await;

        let accepted = nics
            .list_effective_network_security_groups("rg-web", "web-02-nic", SUB)
            .send()
            .await
            .expect("accepted")
            .into_raw_response();
        assert_eq!(accepted.status(), StatusCode::Accepted);
        let location = accepted
            .headers()
            .get_optional_string(&HeaderName::from_static("location"))
            .expect("Location header");
        assert!(location.starts_with(&format!("{}/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operationResults/", sim.url())));
        assert_eq!(
            accepted.headers().get_optional_string(&HeaderName::from_static("retry-after")).as_deref(),
            Some("0")
        );

        let mut polls = Vec::new();
        let done = loop {
            let poll = raw(&sim, Method::Get, &location, Some(&token)).await;
            polls.push(u16::from(poll.status));
            if poll.status == StatusCode::Ok {
                break poll;
            }
            assert!(polls.len() < 5, "operation never finished: {polls:?}");
        };
        assert_eq!(polls, [202, 202, 200]);
        let result: azure_mgmt_network::package_2024_03::models::EffectiveNetworkSecurityGroupListResult =
            serde_json::from_slice(&done.body).expect("parses into the SDK model");
        assert_eq!(result.value.len(), 2);
        let subnet_group = &result.value[0];
        assert!(subnet_group.association.as_ref().and_then(|a| a.subnet.as_ref()).is_some());
        let deny = &subnet_group.effective_security_rules[0];
        assert_eq!(deny.name.as_deref(), Some("securityRules/deny-rdp-internet"));
        assert_eq!(deny.destination_port_range.as_deref(), Some("3389-3389"));
        assert_eq!(deny.priority, Some(200));
        assert!(!deny.expanded_source_address_prefix.is_empty());
        let nic_group = &result.value[1];
        assert!(nic_group.association.as_ref().and_then(|a| a.network_interface.as_ref()).is_some());
        assert_eq!(nic_group.effective_security_rules.len(), 7);

        let stopped = nics
            .list_effective_network_security_groups("rg-web", "stopped-nic", SUB)
            .send()
            .await
            .expect_err("a stopped VM has no effective rules");
        assert_eq!(status_of(&stopped), Some(StatusCode::BadRequest));

        let open = nics
            .list_effective_network_security_groups("rg-web", "open-nic", SUB)
            .send()
            .await
            .expect("accepted")
            .into_raw_response();
        let location = open
            .headers()
            .get_optional_string(&HeaderName::from_static("location"))
            .expect("Location header");
        let mut last = raw(&sim, Method::Get, &location, Some(&token)).await;
        while last.status == StatusCode::Accepted {
            last = raw(&sim, Method::Get, &location, Some(&token)).await;
        }
        assert_eq!(last.json(), serde_json::json!({"value": []}));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn resource_health_available_unavailable_and_unregistered() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .vm("db-01")
            .health("Unavailable", "We're sorry, we couldn't automatically recover your virtual machine")
            .vm("reports-01")
            .in_subscription("33333333-3333-3333-3333-333333333333")
            .resource_health_unregistered();
        let sim = start(world).await;
        let statuses = health(&sim).availability_statuses_client();
        let uri = |sub: &str, vm: &str| {
            format!("subscriptions/{sub}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/{vm}")
        };

        let ok = statuses.get_by_resource(uri(SUB, "web-01")).expand("recommendedactions").await.expect("status");
        let props = ok.properties.expect("properties");
        assert_eq!(format!("{:?}", props.availability_state), "Some(Available)");

        let down = statuses.get_by_resource(uri(SUB, "db-01")).expand("recommendedactions").await.expect("status");
        let props = down.properties.expect("properties");
        assert_eq!(format!("{:?}", props.availability_state), "Some(Unavailable)");
        assert_eq!(
            props.summary.as_deref(),
            Some("We're sorry, we couldn't automatically recover your virtual machine")
        );

        let unregistered = statuses
            .get_by_resource(uri("33333333-3333-3333-3333-333333333333", "reports-01"))
            .await
            .expect_err("unregistered");
        assert_eq!(status_of(&unregistered), Some(StatusCode::Conflict));
        let token = token(&sim).await;
        let flat = raw(
            &sim,
            Method::Get,
            &format!("//{}/providers/Microsoft.ResourceHealth/availabilityStatuses/current?api-version=2024-02-01", uri("33333333-3333-3333-3333-333333333333", "reports-01")),
            Some(&token),
        )
        .await;
        assert_eq!(flat.json()["code"], "MissingSubscriptionRegistration");
        assert!(flat.json()["details"].is_null());
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn boot_diagnostics_hand_out_signed_blob_urls() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .vm("legacy-01")
            .boot_diagnostics_off();
        let sim = start(world).await;
        let vms = compute(&sim).virtual_machines_client();
        let data = vms
            .retrieve_boot_diagnostics_data("rg-web", "web-01", SUB)
            .sas_uri_expiration_time_in_minutes(60)
            .await
            .expect("boot diagnostics data");
        let screenshot = data.console_screenshot_blob_uri.expect("screenshot uri");
        let serial = data.serial_console_log_blob_uri.expect("serial uri");
        assert!(screenshot.contains("web-01.screenshot.bmp?") && screenshot.contains("sig="));

        let bmp = raw(&sim, Method::Get, &screenshot, None).await;
        assert_eq!(bmp.status, StatusCode::Ok);
        assert_eq!(&bmp.body[..2], b"BM");
        assert_eq!(bmp.header("content-type").as_deref(), Some("image/bmp"));
        let log = raw(&sim, Method::Get, &serial, None).await;
        assert_eq!(log.status, StatusCode::Ok);
        assert!(log.text().contains("WEB-01"));

        let forged = format!("{}0", screenshot);
        assert_eq!(
            raw(&sim, Method::Get, &forged, None).await.status,
            StatusCode::Forbidden
        );
        let elsewhere = screenshot.replace("web-01.screenshot", "legacy-01.screenshot");
        assert_eq!(
            raw(&sim, Method::Get, &elsewhere, None).await.status,
            StatusCode::Forbidden
        );

        let off = vms
            .retrieve_boot_diagnostics_data("rg-web", "legacy-01", SUB)
            .await
            .expect_err("boot diagnostics are off");
        assert_eq!(status_of(&off), Some(StatusCode::Conflict));
        let stats = sim.stats();
        assert_eq!(stats.blob_requests, 4);
        sim.shutdown().await;
    })
    .await;
}

/// The compute spec (virtualMachine.json, `BootDiagnostics` and `BootDiagnosticsInstanceView`):
/// without `storageUri` boot diagnostics use managed storage and the instance view has no blob
/// URIs; with one, the VM model names the account and the instance view its blobs.
/// `retrieveBootDiagnosticsData` signs URLs in both. A firewalled account refuses the download
/// with 403 `AuthorizationFailure` ("Common REST API error codes", Azure Storage).
#[tokio::test]
async fn boot_diagnostics_live_in_managed_or_custom_storage_and_a_firewall_refuses() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .vm("web-02")
            .boot_diagnostics_in("diagstore01")
            .vm("web-03")
            .boot_diagnostics_in("diagstore03")
            .storage_firewall();
        let sim = start(world).await;
        let vms = compute(&sim).virtual_machines_client();
        let boot_of = |vm: &azure_mgmt_compute::package_2024_07_01::models::VirtualMachine| {
            let props = vm.properties.as_ref().expect("properties");
            let boot = props
                .diagnostics_profile
                .as_ref()
                .and_then(|d| d.boot_diagnostics.clone())
                .expect("bootDiagnostics");
            let view = props
                .instance_view
                .as_ref()
                .and_then(|v| v.boot_diagnostics.clone());
            (boot.enabled, boot.storage_uri, view.and_then(|v| v.console_screenshot_blob_uri))
        };
        let managed = vms.get("rg-web", "web-01", SUB).expand("instanceView").await.expect("vm");
        assert_eq!(boot_of(&managed), (Some(true), None, None));
        let custom = vms.get("rg-web", "web-02", SUB).expand("instanceView").await.expect("vm");
        let (enabled, uri, screenshot) = boot_of(&custom);
        assert_eq!(enabled, Some(true));
        assert_eq!(uri.as_deref(), Some("https://diagstore01.blob.core.windows.net/"));
        let screenshot = screenshot.expect("custom storage names its blobs");
        assert!(screenshot.starts_with("https://diagstore01.blob.core.windows.net/bootdiagnostics-web02-"), "{screenshot}");
        assert!(screenshot.ends_with(".screenshot.bmp") && !screenshot.contains("sig="), "{screenshot}");

        for name in ["web-01", "web-02"] {
            let data = vms.retrieve_boot_diagnostics_data("rg-web", name, SUB).await.expect("data");
            for url in [data.console_screenshot_blob_uri, data.serial_console_log_blob_uri] {
                let got = raw(&sim, Method::Get, &url.expect("url"), None).await;
                assert_eq!(got.status, StatusCode::Ok, "{name}");
            }
        }
        let data = vms.retrieve_boot_diagnostics_data("rg-web", "web-03", SUB).await.expect("ARM still signs the URLs");
        for url in [data.console_screenshot_blob_uri, data.serial_console_log_blob_uri] {
            let refused = raw(&sim, Method::Get, &url.expect("url"), None).await;
            assert_eq!(refused.status, StatusCode::Forbidden);
            assert_eq!(refused.header("x-ms-error-code").as_deref(), Some("AuthorizationFailure"));
            assert!(refused.text().contains("<Code>AuthorizationFailure</Code><Message>This request is not authorized to perform this operation."), "{}", refused.text());
        }
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_secret_is_invalid_client_and_arm_wants_an_issued_token() {
    within(async {
        let sim = start(World::new().vm("web-01").client_secret("right-one")).await;
        let refused = raw_with_body(
            &sim,
            Method::Post,
            "/some-tenant/oauth2/v2.0/token",
            None,
            Some("grant_type=client_credentials&client_id=app&client_secret=wrong-one&scope=x%2F.default"),
        )
        .await;
        assert_eq!(refused.status, StatusCode::Unauthorized);
        assert_eq!(refused.json()["error"], "invalid_client");
        assert_eq!(refused.json()["error_codes"][0], 7000215);
        assert!(!refused.text().contains("wrong-one"));

        let sdk = azure_mgmt_compute::package_2024_07_01::Client::builder(credential(&sim, "wrong-one"))
            .endpoint(endpoint(&sim))
            .build()
            .expect("client");
        let error = sdk.virtual_machines_client().get("rg-web", "web-01", SUB).await.expect_err("bad secret");
        assert_eq!(format!("{:?}", error.kind()), "Credential");

        let accepted = raw_with_body(
            &sim,
            Method::Post,
            "/some-tenant/oauth2/v2.0/token",
            None,
            // Entra ID requires the scope; ARM accepts tokens for its well-known resource.
            Some("grant_type=client_credentials&client_id=app&client_secret=right-one&scope=https%3A%2F%2Fmanagement.azure.com%2F.default"),
        )
        .await;
        assert_eq!(accepted.status, StatusCode::Ok);
        let token = accepted.json()["access_token"].as_str().expect("token").to_owned();

        let missing = raw(&sim, Method::Get, &vm_path("rg-web", "web-01"), None).await;
        assert_eq!(missing.status, StatusCode::Unauthorized);
        assert_eq!(missing.json()["error"]["code"], "AuthenticationFailed");
        let forged = raw(&sim, Method::Get, &vm_path("rg-web", "web-01"), Some("made-up")).await;
        assert_eq!(forged.status, StatusCode::Unauthorized);
        assert_eq!(forged.json()["error"]["code"], "InvalidAuthenticationToken");
        let fine = raw(&sim, Method::Get, &vm_path("rg-web", "web-01"), Some(&token)).await;
        assert_eq!(fine.status, StatusCode::Ok);
        assert!(fine.header("x-ms-request-id").is_some());
        assert_eq!(fine.header("content-type").as_deref(), Some("application/json; charset=utf-8"));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn token_bucket_throttles_with_retry_after() {
    within(async {
        let options = SimOptions {
            bucket: Some(BucketOptions {
                capacity: 2,
                refill_per_sec: 0.5,
            }),
            ..SimOptions::fast()
        };
        let sim = start_with(World::new().vm("web-01"), options).await;
        let token = token(&sim).await;
        let path = vm_path("rg-web", "web-01");
        let first = raw(&sim, Method::Get, &path, Some(&token)).await;
        assert_eq!(first.status, StatusCode::Ok);
        assert_eq!(
            first
                .header("x-ms-ratelimit-remaining-subscription-reads")
                .as_deref(),
            Some("1")
        );
        let second = raw(&sim, Method::Get, &path, Some(&token)).await;
        assert_eq!(
            second
                .header("x-ms-ratelimit-remaining-subscription-reads")
                .as_deref(),
            Some("0")
        );
        let third = raw(&sim, Method::Get, &path, Some(&token)).await;
        assert_eq!(third.status, StatusCode::TooManyRequests);
        assert_eq!(third.json()["error"]["code"], "TooManyRequests");
        assert_eq!(third.header("retry-after").as_deref(), Some("2"));
        let stats = sim.stats();
        assert_eq!(
            (stats.requests, stats.throttled, stats.token_requests),
            (3, 1, 1)
        );
        assert_eq!(stats.log.last().map(|e| e.status), Some(429));

        sim.set_options(SimOptions::fast());
        assert_eq!(
            raw(&sim, Method::Get, &path, Some(&token)).await.status,
            StatusCode::Ok
        );
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn faults_fire_the_given_number_of_times() {
    within(async {
        let options = support::failing(vec![
            Fault::new("virtualMachines/web-01", FaultKind::Status(503))
                .method("GET")
                .times(2),
            Fault::new("virtualMachines/app-01", FaultKind::Malformed),
            Fault::new(
                "virtualMachines/db-01",
                FaultKind::StatusBody(502, "<html>Bad Gateway</html>".to_owned()),
            ),
        ]);
        let sim = start_with(World::new().vm("web-01").vm("app-01").vm("db-01"), options).await;
        let token = token(&sim).await;
        let web = vm_path("rg-web", "web-01");
        let statuses = [
            raw(&sim, Method::Get, &web, Some(&token)).await.status,
            raw(&sim, Method::Get, &web, Some(&token)).await.status,
            raw(&sim, Method::Get, &web, Some(&token)).await.status,
        ];
        assert_eq!(
            statuses,
            [
                StatusCode::ServiceUnavailable,
                StatusCode::ServiceUnavailable,
                StatusCode::Ok
            ]
        );

        let malformed = raw(
            &sim,
            Method::Get,
            &vm_path("rg-web", "app-01"),
            Some(&token),
        )
        .await;
        assert_eq!(malformed.status, StatusCode::Ok);
        assert!(serde_json::from_slice::<Value>(&malformed.body).is_err());
        let html = raw(&sim, Method::Get, &vm_path("rg-web", "db-01"), Some(&token)).await;
        assert_eq!(html.status, StatusCode::BadGateway);
        assert_eq!(html.text(), "<html>Bad Gateway</html>");

        let stats: Value = raw(&sim, Method::Get, "/_sim/stats", None).await.json();
        assert_eq!(stats["requests"], 5);
        assert_eq!(stats["by_route"]["GET virtualMachines"], 5);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn latency_shows_in_peak_in_flight_and_hung_requests_end_at_shutdown() {
    within(async {
        let options = SimOptions {
            latency: Duration::from_millis(50),
            faults: vec![Fault::new("hang-here", FaultKind::Hang)],
            ..SimOptions::fast()
        };
        let sim = start_with(World::new().vm("web-01"), options).await;
        let token = token(&sim).await;
        let path = vm_path("rg-web", "web-01");
        let requests = (0..4).map(|_| raw(&sim, Method::Get, &path, Some(&token)));
        for answer in futures::future::join_all(requests).await {
            assert_eq!(answer.status, StatusCode::Ok);
        }
        assert!(
            sim.stats().peak_in_flight >= 2,
            "{:?}",
            sim.stats().peak_in_flight
        );

        let url = format!("{}/hang-here", sim.url());
        let hung = tokio::spawn(async move {
            let request = Request::new(Url::parse(&url).expect("url"), Method::Get);
            azure_core::new_http_client()
                .execute_request(&request)
                .await
                .map(|r| r.status())
        });
        while sim.stats().requests < 5 {
            tokio::task::yield_now().await;
        }
        assert!(!hung.is_finished());
        sim.shutdown().await;
        let _ = hung
            .await
            .expect("the hung request ends once the simulator stops");
    })
    .await;
}

#[tokio::test]
async fn world_files_reject_unknown_fields_and_dangling_names() {
    let unknown = World::from_toml_str("colour = \"blue\"\n");
    assert!(unknown.is_err());
    let dangling = World::from_toml_str(
        "[[subscription]]\nid = \"s\"\n[[vm]]\nname = \"a\"\nresource_group = \"rg\"\nnic_nsg = \"missing\"\n",
    );
    let message = dangling.expect_err("dangling NSG").to_string();
    assert!(message.contains("missing"), "{message}");
    let round_trip = World::from_toml_str(&demo_world().to_toml_string().expect("toml"))
        .expect("demo world round-trips");
    assert_eq!(round_trip, demo_world());
    let fixed_up = World::new()
        .vm("web-01")
        .rdp_disabled()
        .with_vmaccess_extension("enablevmAccess");
    let text = fixed_up.to_toml_string().expect("toml");
    assert!(text.contains("[[vm.extension]]"), "{text}");
    assert_eq!(World::from_toml_str(&text).expect("round-trips"), fixed_up);
    let two_vmaccess = World::new()
        .vm("web-01")
        .with_vmaccess_extension("enablevmAccess")
        .with_vmaccess_extension("second");
    let message = two_vmaccess
        .validate()
        .expect_err("one handler per VM")
        .to_string();
    assert!(
        message.contains("Microsoft.Compute.VMAccessAgent"),
        "{message}"
    );
}

#[tokio::test]
async fn demo_world_breaks_each_vm_the_way_its_comment_says() {
    within(async {
        let sim = start(demo_world()).await;
        let token = token(&sim).await;
        let net = network(&sim);
        let effective = |rg: &'static str, nic: &'static str| {
            let nics = net.network_interfaces_client();
            let sim = &sim;
            let token = &token;
            async move {
                let accepted = nics
                    .list_effective_network_security_groups(rg, nic, SUB)
                    .send()
                    .await
                    .expect("accepted")
                    .into_raw_response();
                let location = accepted
                    .headers()
                    .get_optional_string(&HeaderName::from_static("location"))
                    .expect("Location");
                loop {
                    let poll = raw(sim, Method::Get, &location, Some(token)).await;
                    if poll.status == StatusCode::Ok {
                        break poll.json();
                    }
                }
            }
        };
        let web02 = effective("rg-web", "web-02-nic").await;
        assert_eq!(web02["value"][0]["effectiveSecurityRules"][0]["name"], "securityRules/deny-rdp-internet");
        assert_eq!(web02["value"][0]["effectiveSecurityRules"][1]["sourceAddressPrefixes"], serde_json::json!(["AzureLoadBalancer", "10.0.0.0/16"]));
        let jump = effective("rg-jump", "jump-01-nic").await;
        assert_eq!(jump["value"].as_array().map(Vec::len), Some(1));
        assert_eq!(jump["value"][0]["effectiveSecurityRules"][0]["sourceAddressPrefix"], "203.0.113.0/24");
        let web01 = effective("rg-web", "web-01-nic").await;
        assert_eq!(web01["value"][0]["effectiveSecurityRules"][1]["destinationPortRanges"], serde_json::json!(["443-443", "8443-8443"]));

        let app02 = raw(&sim, Method::Get, &format!("/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Network/publicIPAddresses/app-02-ip"), Some(&token)).await.json();
        assert!(app02["properties"].get("ipAddress").is_none());
        let batch = raw(&sim, Method::Get, &format!("/subscriptions/{SUB}/resourceGroups/rg-batch/providers/Microsoft.Network/networkInterfaces/batch-01-nic"), Some(&token)).await.json();
        assert!(batch["properties"]["ipConfigurations"][0]["properties"].get("publicIPAddress").is_none());
        let legacy = raw(&sim, Method::Post, &format!("/subscriptions/{SUB}/resourceGroups/rg-legacy/providers/Microsoft.Compute/virtualMachines/legacy-01/retrieveBootDiagnosticsData"), Some(&token)).await;
        assert_eq!(legacy.status, StatusCode::Conflict);
        let db = raw(&sim, Method::Get, &format!("/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Compute/virtualMachines/db-01/providers/Microsoft.ResourceHealth/availabilityStatuses/current?$expand=recommendedactions"), Some(&token)).await.json();
        assert_eq!(db["properties"]["availabilityState"], "Unavailable");
        assert_eq!(db["properties"]["recommendedActions"][1]["actionUrl"], "<#SupportCase>");
        assert!(db["properties"]["occuredTime"].is_string());
        let reports = raw(&sim, Method::Get, "/subscriptions/33333333-3333-3333-3333-333333333333/resourceGroups/rg-reports/providers/Microsoft.Compute/virtualMachines/reports-01/providers/Microsoft.ResourceHealth/availabilityStatuses/current", Some(&token)).await;
        assert_eq!(reports.status, StatusCode::Conflict);

        let unknown_op = raw(&sim, Method::Get, &format!("/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/nope"), Some(&token)).await;
        assert_eq!(unknown_op.status, StatusCode::NotFound);
        assert_eq!(unknown_op.json()["error"]["code"], "OperationNotFound");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn standalone_names_the_world_file_it_cannot_read() {
    let error =
        rdp_doctor::sim::run_standalone("127.0.0.1:0", std::path::Path::new("/no/such/world.toml"))
            .await
            .expect_err("missing file");
    assert!(format!("{error:#}").contains("/no/such/world.toml"));
}

// ---------------------------------------------------------------------------------------------
// Writes: power actions, extensions, NSG rules

/// Sends a JSON body without the SDK. `url` may be a path on the simulator.
async fn raw_json(sim: &Simulator, method: Method, url: &str, token: &str, body: &Value) -> Raw {
    let url = if url.starts_with("http") {
        url.to_owned()
    } else {
        format!("{}{url}", sim.url())
    };
    let mut request = Request::new(Url::parse(&url).expect("url"), method);
    request.insert_header("authorization", format!("Bearer {token}"));
    request.insert_header("content-type", "application/json");
    request.set_body(body.to_string());
    let response = azure_core::new_http_client()
        .execute_request(&request)
        .await
        .expect("request sent");
    let (status, headers, body) = response.deconstruct();
    let body = body.collect().await.expect("body").to_vec();
    Raw {
        status,
        headers,
        body,
    }
}

/// Reads an SDK `send()` answer whole.
async fn answer(response: azure_core::Response) -> Raw {
    let (status, headers, body) = response.deconstruct();
    let body = body.collect().await.expect("body").to_vec();
    Raw {
        status,
        headers,
        body,
    }
}

/// Polls an `Azure-AsyncOperation` URL until the status is terminal. Returns the statuses seen
/// and the final body.
async fn poll_status(sim: &Simulator, url: &str, token: &str) -> (Vec<String>, Value) {
    let mut seen = Vec::new();
    loop {
        let poll = raw(sim, Method::Get, url, Some(token)).await;
        assert_eq!(poll.status, StatusCode::Ok, "{}", poll.text());
        let body = poll.json();
        let status = body["status"].as_str().expect("status").to_owned();
        seen.push(status.clone());
        if status != "InProgress" {
            return (seen, body);
        }
        assert!(seen.len() < 10, "operation never finished: {seen:?}");
    }
}

fn vm_action_path(rg: &str, vm: &str, action: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/{action}?api-version=2024-07-01")
}

fn extension_path(rg: &str, vm: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/extensions/{name}?api-version=2024-07-01")
}

/// ARM writes in the request log (not token requests, not the read-only POSTs).
fn arm_writes(sim: &Simulator) -> Vec<String> {
    sim.stats()
        .log
        .iter()
        .filter(|e| e.method != "GET" && !e.path.contains("/oauth2/"))
        .filter(|e| !e.path.contains("/effectiveNetworkSecurityGroups"))
        .map(|e| format!("{} {}", e.method, e.path))
        .collect()
}

fn vmaccess(
    tag: &str,
    settings: Value,
    protected: Option<Value>,
) -> azure_mgmt_compute::package_2024_07_01::models::VirtualMachineExtension {
    use azure_mgmt_compute::package_2024_07_01::models::{
        ResourceWithOptionalLocation, VirtualMachineExtension, VirtualMachineExtensionProperties,
    };
    VirtualMachineExtension {
        resource_with_optional_location: ResourceWithOptionalLocation {
            location: Some("westeurope".to_owned()),
            ..ResourceWithOptionalLocation::default()
        },
        properties: Some(VirtualMachineExtensionProperties {
            publisher: Some("Microsoft.Compute".to_owned()),
            type_: Some("VMAccessAgent".to_owned()),
            type_handler_version: Some("2.0".to_owned()),
            auto_upgrade_minor_version: Some(true),
            force_update_tag: Some(tag.to_owned()),
            settings: Some(settings),
            protected_settings: protected,
            ..VirtualMachineExtensionProperties::default()
        }),
    }
}

#[tokio::test]
async fn restart_passes_through_starting_and_ends_running_with_one_write() {
    within(async {
        let options = support::polled(2);
        let sim = start_with(World::new().vm("web-01"), options).await;
        let vms = compute(&sim).virtual_machines_client();
        let token = token(&sim).await;

        let accepted = answer(
            vms.restart("rg-web", "web-01", SUB)
                .send()
                .await
                .expect("accepted")
                .into_raw_response(),
        )
        .await;
        assert_eq!(accepted.status, StatusCode::Accepted);
        assert!(accepted.body.is_empty());
        let status_url = accepted
            .header("azure-asyncoperation")
            .expect("Azure-AsyncOperation");
        assert!(status_url.starts_with(&format!(
            "{}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/",
            sim.url()
        )));
        assert!(status_url.ends_with("?api-version=2024-07-01"));
        let location = accepted.header("location").expect("Location");
        assert!(location.contains("?monitor=true&api-version=2024-07-01"));
        assert_eq!(accepted.header("retry-after").as_deref(), Some("0"));

        let web = sim.world().vm("web-01");
        assert_eq!(web.power_state(), PowerState::Starting);
        let view = vms
            .instance_view("rg-web", "web-01", SUB)
            .await
            .expect("instance view");
        assert_eq!(
            view.statuses[1].code.as_deref(),
            Some("PowerState/starting")
        );
        let agent = view.vm_agent.expect("agent");
        assert_eq!(
            agent.statuses[0].display_status.as_deref(),
            Some("Not Ready")
        );
        assert_eq!(
            agent.statuses[0].message.as_deref(),
            Some("VM status blob not found.")
        );

        let (seen, done) = poll_status(&sim, &status_url, &token).await;
        assert_eq!(seen, ["InProgress", "InProgress", "Succeeded"]);
        assert!(done["startTime"].is_string() && done["endTime"].is_string());
        assert_eq!(
            done["name"],
            status_url
                .rsplit('/')
                .next()
                .and_then(|s| s.split('?').next())
                .expect("id")
        );
        assert_eq!(web.power_state(), PowerState::Running);
        assert_eq!(web.provisioning_state(), "succeeded");
        let view = vms
            .instance_view("rg-web", "web-01", SUB)
            .await
            .expect("instance view");
        assert_eq!(view.statuses[1].code.as_deref(), Some("PowerState/running"));
        let agent = view.vm_agent.expect("agent");
        assert_eq!(agent.statuses[0].display_status.as_deref(), Some("Ready"));

        let monitor = raw(&sim, Method::Get, &location, Some(&token)).await;
        assert_eq!(monitor.status, StatusCode::Ok);

        assert_eq!(
            arm_writes(&sim),
            [format!(
                "POST {}",
                vm_action_path("rg-web", "web-01", "restart")
            )]
        );
        assert_eq!(sim.stats().by_route["POST virtualMachines/restart"], 1);
        assert_eq!(sim.stats().by_route["GET Microsoft.Compute/operations"], 4);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn location_url_answers_202_until_done_and_start_of_a_running_vm_is_a_no_op() {
    within(async {
        let options = support::polled(1);
        let world = World::new().vm("web-01").vm("app-01");
        let sim = start_with(world, options).await;
        let vms = compute(&sim).virtual_machines_client();
        let token = token(&sim).await;

        let noop = vms
            .start("rg-web", "web-01", SUB)
            .send()
            .await
            .expect("no-op")
            .into_raw_response();
        assert_eq!(noop.status(), StatusCode::Ok);

        let accepted = vms
            .power_off("rg-web", "app-01", SUB)
            .send()
            .await
            .expect("accepted")
            .into_raw_response();
        let location = accepted
            .headers()
            .get_optional_string(&HeaderName::from_static("location"))
            .expect("Location");
        assert_eq!(sim.world().vm("app-01").power_state(), PowerState::Stopping);
        let running = raw(&sim, Method::Get, &location, Some(&token)).await;
        assert_eq!(running.status, StatusCode::Accepted);
        assert!(running
            .header("location")
            .is_some_and(|l| l.contains("monitor=true")));
        let done = raw(&sim, Method::Get, &location, Some(&token)).await;
        assert_eq!(done.status, StatusCode::Ok);
        assert_eq!(sim.world().vm("app-01").power_state(), PowerState::Stopped);

        let accepted = vms
            .deallocate("rg-web", "app-01", SUB)
            .send()
            .await
            .expect("accepted")
            .into_raw_response();
        let status_url = accepted
            .headers()
            .get_optional_string(&HeaderName::from_static("azure-asyncoperation"))
            .expect("Azure-AsyncOperation");
        assert_eq!(
            sim.world().vm("app-01").power_state(),
            PowerState::Deallocating
        );
        let (seen, _) = poll_status(&sim, &status_url, &token).await;
        assert_eq!(seen, ["InProgress", "Succeeded"]);
        assert_eq!(
            sim.world().vm("app-01").power_state(),
            PowerState::Deallocated
        );
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn start_gives_a_dynamic_ip_an_address_and_redeploy_changes_only_dynamic_ones() {
    within(async {
        let world = World::new()
            .vm("app-02")
            .deallocated()
            .dynamic_public_ip_without_address()
            .vm("web-01");
        let options = support::polled(1);
        let sim = start_with(world, options).await;
        let vms = compute(&sim).virtual_machines_client();
        let token = token(&sim).await;
        let app = sim.world().vm("app-02");
        let web = sim.world().vm("web-01");
        let status_url = |response: azure_core::Response| {
            response
                .headers()
                .get_optional_string(&HeaderName::from_static("azure-asyncoperation"))
                .expect("Azure-AsyncOperation")
        };

        assert_eq!(app.public_ip_address(), None);
        let started = vms
            .start("rg-web", "app-02", SUB)
            .send()
            .await
            .expect("accepted");
        let url = status_url(started.into_raw_response());
        assert_eq!(app.power_state(), PowerState::Starting);
        let (_, done) = poll_status(&sim, &url, &token).await;
        assert_eq!(done["status"], "Succeeded");
        assert_eq!(app.power_state(), PowerState::Running);
        let first = app
            .public_ip_address()
            .expect("a started VM's dynamic IP has an address");

        let static_before = web.public_ip_address().expect("static address");
        let app_url = status_url(
            vms.redeploy("rg-web", "app-02", SUB)
                .send()
                .await
                .expect("accepted")
                .into_raw_response(),
        );
        let web_url = status_url(
            vms.redeploy("rg-web", "web-01", SUB)
                .send()
                .await
                .expect("accepted")
                .into_raw_response(),
        );
        assert_eq!(app.power_state(), PowerState::Stopping);
        assert_eq!(app.provisioning_state(), "updating");
        let first_poll = raw(&sim, Method::Get, &app_url, Some(&token)).await.json();
        assert_eq!(first_poll["status"], "InProgress");
        assert_eq!(app.power_state(), PowerState::Starting);
        let (_, done) = poll_status(&sim, &app_url, &token).await;
        assert_eq!(done["status"], "Succeeded");
        let (_, done) = poll_status(&sim, &web_url, &token).await;
        assert_eq!(done["status"], "Succeeded");

        assert_eq!(app.power_state(), PowerState::Running);
        let second = app.public_ip_address().expect("address after redeploy");
        assert_ne!(second, first, "a dynamic IP changes on redeploy");
        assert_eq!(
            web.public_ip_address(),
            Some(static_before),
            "a static IP stays"
        );
        assert_eq!(web.power_state(), PowerState::Running);
        let pip = network(&sim)
            .public_ip_addresses_client()
            .get("rg-web", "app-02-ip", SUB)
            .await
            .expect("pip");
        assert_eq!(pip.properties.and_then(|p| p.ip_address), Some(second));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn restart_of_a_deallocated_vm_and_a_second_write_are_409() {
    within(async {
        let world = World::new().vm("app-01").deallocated().vm("web-01");
        let sim = start(world).await;
        let vms = compute(&sim).virtual_machines_client();
        let token = token(&sim).await;

        let refused = vms.restart("rg-web", "app-01", SUB).send().await.expect_err("deallocated");
        assert_eq!(status_of(&refused), Some(StatusCode::Conflict));
        let body = raw(&sim, Method::Post, &vm_action_path("rg-web", "app-01", "restart"), Some(&token)).await;
        assert_eq!(body.status, StatusCode::Conflict);
        assert_eq!(body.json()["error"]["code"], "OperationNotAllowed");
        assert_eq!(
            body.json()["error"]["message"],
            "Operation 'restart' is not allowed on VM 'app-01' since the VM is deallocated."
        );
        assert_eq!(sim.world().vm("app-01").power_state(), PowerState::Deallocated);

        let first = raw(&sim, Method::Post, &vm_action_path("rg-web", "web-01", "restart"), Some(&token)).await;
        assert_eq!(first.status, StatusCode::Accepted);
        let second = raw(&sim, Method::Post, &vm_action_path("rg-web", "web-01", "redeploy"), Some(&token)).await;
        assert_eq!(second.status, StatusCode::Conflict);
        assert_eq!(second.json()["error"]["code"], "Conflict");
        let message = second.json()["error"]["message"].as_str().expect("message").to_owned();
        assert!(message.starts_with("Operation 'redeploy' is not allowed since the Virtual Machine 'web-01' is already in progress of another operation"), "{message}");
        let extension = raw_json(&sim, Method::Put, &extension_path("rg-web", "web-01", "enablevmaccess"), &token, &serde_json::to_value(vmaccess("t", serde_json::json!({}), None)).expect("json")).await;
        assert_eq!(extension.status, StatusCode::Conflict);

        let url = first.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        let (_, done) = poll_status(&sim, &url, &token).await;
        assert_eq!(done["status"], "Succeeded");
        let again = raw(&sim, Method::Post, &vm_action_path("rg-web", "web-01", "redeploy"), Some(&token)).await;
        assert_eq!(again.status, StatusCode::Accepted, "the VM is free once the restart is done");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn vmaccess_put_resets_rdp_then_a_password_and_never_echoes_protected_settings() {
    within(async {
        const PASSWORD: &str = "Corr3ct-Horse-Battery!";
        let world = World::new().vm("web-01").rdp_disabled();
        let options = support::polled(1);
        let sim = start_with(world, options).await;
        let client = compute(&sim);
        let extensions = client.virtual_machine_extensions_client();
        let token = token(&sim).await;
        let web = sim.world().vm("web-01");
        assert!(!web.rdp_enabled());
        let mut answers = Vec::new();

        let created = answer(
            extensions
                .create_or_update("rg-web", "web-01", "enablevmaccess", vmaccess("run-1", serde_json::json!({}), None), SUB)
                .send()
                .await
                .expect("accepted")
                .into_raw_response(),
        )
        .await;
        assert_eq!(created.status, StatusCode::Created);
        let model: azure_mgmt_compute::package_2024_07_01::models::VirtualMachineExtension =
            serde_json::from_slice(&created.body).expect("parses into the SDK model");
        let props = model.properties.expect("properties");
        assert_eq!(props.provisioning_state.as_deref(), Some("Creating"));
        assert_eq!(props.type_.as_deref(), Some("VMAccessAgent"));
        let url = created.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        let during = extensions.get("rg-web", "web-01", "enablevmaccess", SUB).await.expect("extension");
        assert_eq!(during.properties.and_then(|p| p.provisioning_state).as_deref(), Some("Creating"));
        let (seen, _) = poll_status(&sim, &url, &token).await;
        assert_eq!(seen, ["InProgress", "Succeeded"]);
        assert!(web.rdp_enabled());
        assert_eq!(web.rdp_port(), 3389);
        assert_eq!(web.password_resets(), 0);
        answers.push(created);

        let updated = answer(
            extensions
                .create_or_update(
                    "rg-web",
                    "web-01",
                    "enablevmaccess",
                    vmaccess("run-2", serde_json::json!({"UserName": "rescue-admin"}), Some(serde_json::json!({"Password": PASSWORD}))),
                    SUB,
                )
                .send()
                .await
                .expect("accepted")
                .into_raw_response(),
        )
        .await;
        assert_eq!(updated.status, StatusCode::Ok);
        assert_eq!(updated.json()["properties"]["provisioningState"], "Updating");
        let url = updated.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        let (_, done) = poll_status(&sim, &url, &token).await;
        assert_eq!(done["status"], "Succeeded");
        assert_eq!(web.password_resets(), 1);
        assert!(web.local_admins().contains(&"rescue-admin".to_owned()));
        assert_eq!(web.extension_names(), ["enablevmaccess"]);
        answers.push(updated);

        let got = extensions
            .get("rg-web", "web-01", "enablevmaccess", SUB)
            .expand("instanceView")
            .await
            .expect("extension");
        let props = got.properties.expect("properties");
        assert_eq!(props.provisioning_state.as_deref(), Some("Succeeded"));
        assert!(props.protected_settings.is_none());
        assert_eq!(props.settings, Some(serde_json::json!({"UserName": "rescue-admin"})));
        let status = &props.instance_view.expect("instance view").statuses[0];
        assert_eq!(status.code.as_deref(), Some("ProvisioningState/succeeded"));
        assert_eq!(status.display_status.as_deref(), Some("Provisioning succeeded"));

        let list = extensions.list("rg-web", "web-01", SUB).await.expect("list");
        assert_eq!(list.value.len(), 1);
        let view = client.virtual_machines_client().instance_view("rg-web", "web-01", SUB).await.expect("instance view");
        let listed: Vec<Option<String>> = view.extensions.iter().map(|e| e.name.clone()).collect();
        assert_eq!(listed, [Some("enablevmaccess".to_owned())]);
        assert_eq!(view.extensions[0].type_.as_deref(), Some("Microsoft.Compute.VMAccessAgent"));

        answers.push(raw(&sim, Method::Get, &format!("{}&$expand=instanceView", extension_path("rg-web", "web-01", "enablevmaccess")), Some(&token)).await);
        answers.push(raw(&sim, Method::Get, &format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01/extensions?api-version=2024-07-01"), Some(&token)).await);
        answers.push(raw(&sim, Method::Get, "/_sim/stats", None).await);
        for answer in &answers {
            assert!(!answer.text().contains(PASSWORD));
            assert!(!answer.text().contains("protectedSettings"), "{}", answer.text());
        }
        let stats = serde_json::to_string(&sim.stats()).expect("stats");
        assert!(!stats.contains(PASSWORD));
        assert!(!format!("{:?}", sim.world().snapshot()).contains(PASSWORD));
        assert_eq!(sim.stats().by_route["PUT virtualMachines/extensions"], 2);
        sim.shutdown().await;
    })
    .await;
}

/// The Windows VMAccess handler reads `settings.UserName` and `protectedSettings.Password`
/// (Azure PowerShell, src/Compute/Compute/Extension/VMAccess/SetAzureVMAccessExtension.cs; az
/// CLI, src/azure-cli/azure/cli/command_modules/vm/custom.py `_reset_windows_admin`). ARM takes
/// any other spelling, and the extension then ends `Failed` with Azure's
/// `VMExtensionProvisioningError` and a `ProvisioningState/failed/…` status; nothing is reset.
#[tokio::test]
async fn vmaccess_in_any_other_spelling_fails_in_the_guest_and_resets_nothing() {
    within(async {
        const PASSWORD: &str = "Corr3ct-Horse-Battery!";
        let options = support::polled(1);
        let sim = start_with(World::new().vm("web-01"), options).await;
        let extensions = compute(&sim).virtual_machine_extensions_client();
        let token = token(&sim).await;
        let web = sim.world().vm("web-01");
        let mut no_version = vmaccess(
            "v",
            serde_json::json!({"UserName": "ops"}),
            Some(serde_json::json!({"Password": PASSWORD})),
        );
        if let Some(p) = no_version.properties.as_mut() {
            p.type_handler_version = None;
        }
        let cases = [
            (
                "lowercase keys",
                vmaccess(
                    "a",
                    serde_json::json!({"username": "ops"}),
                    Some(serde_json::json!({"password": PASSWORD})),
                ),
                "Unrecognized setting(s) settings.username, protectedSettings.password",
            ),
            (
                "password in public settings",
                vmaccess(
                    "b",
                    serde_json::json!({"UserName": "ops", "Password": PASSWORD}),
                    None,
                ),
                "password was sent in public settings",
            ),
            (
                "lowercase password",
                vmaccess(
                    "c",
                    serde_json::json!({"UserName": "ops"}),
                    Some(serde_json::json!({"password": PASSWORD})),
                ),
                "protectedSettings.password",
            ),
            (
                "no typeHandlerVersion",
                no_version,
                "typeHandlerVersion is missing",
            ),
        ];
        for (case, body, why) in cases {
            let accepted = answer(
                extensions
                    .create_or_update("rg-web", "web-01", "enablevmaccess", body, SUB)
                    .send()
                    .await
                    .expect("ARM accepts the PUT")
                    .into_raw_response(),
            )
            .await;
            let url = accepted
                .header("azure-asyncoperation")
                .expect("Azure-AsyncOperation");
            let (_, done) = poll_status(&sim, &url, &token).await;
            assert_eq!(done["status"], "Failed", "{case}");
            assert_eq!(
                done["error"]["code"], "VMExtensionProvisioningError",
                "{case}"
            );
            let message = done["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with(
                    "VM has reported a failure when processing extension 'enablevmaccess'"
                ),
                "{case}: {message}"
            );
            assert!(message.contains(why), "{case}: {message}");
            assert!(
                !message.contains(PASSWORD),
                "{case}: the password is never echoed"
            );
            let got = extensions
                .get("rg-web", "web-01", "enablevmaccess", SUB)
                .expand("instanceView")
                .await
                .expect("extension");
            let props = got.properties.expect("properties");
            assert_eq!(
                props.provisioning_state.as_deref(),
                Some("Failed"),
                "{case}"
            );
            let status = &props.instance_view.expect("instance view").statuses[0];
            assert!(
                status
                    .code
                    .as_deref()
                    .is_some_and(|c| c.starts_with("ProvisioningState/failed/")),
                "{case}: {:?}",
                status.code
            );
            assert!(
                status.message.as_deref().is_some_and(|m| m.contains(why)),
                "{case}: {:?}",
                status.message
            );
        }
        assert_eq!(web.password_resets(), 0, "nothing was reset");
        assert!(!web.local_admins().contains(&"ops".to_owned()));

        let right = vmaccess(
            "d",
            serde_json::json!({"UserName": "ops"}),
            Some(serde_json::json!({"Password": PASSWORD})),
        );
        let accepted = answer(
            extensions
                .create_or_update("rg-web", "web-01", "enablevmaccess", right, SUB)
                .send()
                .await
                .expect("accepted")
                .into_raw_response(),
        )
        .await;
        let (_, done) = poll_status(
            &sim,
            &accepted.header("azure-asyncoperation").expect("url"),
            &token,
        )
        .await;
        assert_eq!(done["status"], "Succeeded");
        assert_eq!(web.password_resets(), 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn extension_puts_follow_azure_rules_on_state_handlers_and_agent() {
    within(async {
        let world = World::new()
            .vm("off-01")
            .stopped()
            .vm("has-ext")
            .with_vmaccess_extension("enablevmAccess")
            .vm("sick-01")
            .agent_not_ready("VM Agent is unresponsive.");
        let sim = start(world).await;
        let extensions = compute(&sim).virtual_machine_extensions_client();
        let token = token(&sim).await;
        let body = serde_json::to_value(vmaccess("t1", serde_json::json!({}), None)).expect("json");

        let stopped = extensions
            .create_or_update("rg-web", "off-01", "enablevmaccess", vmaccess("t1", serde_json::json!({}), None), SUB)
            .send()
            .await
            .expect_err("stopped VM");
        assert_eq!(status_of(&stopped), Some(StatusCode::Conflict));
        let stopped = raw_json(&sim, Method::Put, &extension_path("rg-web", "off-01", "enablevmaccess"), &token, &body).await;
        assert_eq!(stopped.json()["error"]["code"], "OperationNotAllowed");
        assert_eq!(stopped.json()["error"]["internalErrorCode"], "CannotModifyExtensionsWhenVMNotRunning");
        assert_eq!(stopped.json()["error"]["message"], "Cannot modify extensions in the VM when the VM is not running.");

        let second = raw_json(&sim, Method::Put, &extension_path("rg-web", "has-ext", "VMAccessAgent"), &token, &body).await;
        assert_eq!(second.status, StatusCode::BadRequest);
        assert_eq!(second.json()["error"]["code"], "BadRequest");
        assert_eq!(second.json()["error"]["internalErrorCode"], "MultipleExtensionsPerHandlerNotAllowed");
        assert!(second.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("VMExtension 'enablevmAccess' with handler 'Microsoft.Compute.VMAccessAgent' already added")));
        let reuse = raw_json(&sim, Method::Put, &extension_path("rg-web", "has-ext", "ENABLEVMACCESS"), &token, &body).await;
        assert_eq!(reuse.status, StatusCode::Ok, "reusing the existing name is an update");
        assert_eq!(reuse.json()["name"], "enablevmAccess");
        let url = reuse.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        assert_eq!(poll_status(&sim, &url, &token).await.1["status"], "Succeeded");

        // The same PUT again does not run the handler again; a new forceUpdateTag does.
        let has_ext = sim.world().vm("has-ext");
        has_ext.update(|vm| vm.rdp_enabled = false);
        let same = raw_json(&sim, Method::Put, &extension_path("rg-web", "has-ext", "enablevmAccess"), &token, &body).await;
        let url = same.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        assert_eq!(poll_status(&sim, &url, &token).await.1["status"], "Succeeded");
        assert!(!has_ext.rdp_enabled());
        let rerun = serde_json::to_value(vmaccess("t2", serde_json::json!({}), None)).expect("json");
        let rerun = raw_json(&sim, Method::Put, &extension_path("rg-web", "has-ext", "enablevmAccess"), &token, &rerun).await;
        let url = rerun.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        assert_eq!(poll_status(&sim, &url, &token).await.1["status"], "Succeeded");
        assert!(has_ext.rdp_enabled());

        let sick = raw_json(&sim, Method::Put, &extension_path("rg-web", "sick-01", "enablevmaccess"), &token, &body).await;
        assert_eq!(sick.status, StatusCode::Created, "accepted; the agent's silence shows at the end");
        let url = sick.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        let (seen, done) = poll_status(&sim, &url, &token).await;
        assert_eq!(seen, ["InProgress", "Failed"]);
        assert_eq!(done["error"]["code"], "VMAgentStatusCommunicationError");
        assert!(done["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("VM 'sick-01' has not reported status for VM agent or extensions.")));
        let ext = &sim.world().vm("sick-01").extensions()[0];
        assert_eq!(ext.provisioning_state, "Failed");

        let missing = extensions.get("rg-web", "sick-01", "nope", SUB).await.expect_err("no such extension");
        assert_eq!(status_of(&missing), Some(StatusCode::NotFound));
        let garbage = raw_with_body(&sim, Method::Put, &extension_path("rg-web", "has-ext", "enablevmAccess"), Some(&token), Some("{not json")).await;
        assert_eq!(garbage.status, StatusCode::BadRequest);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn nsg_rule_put_lands_in_the_effective_rules_and_priorities_must_be_unique() {
    use azure_mgmt_network::package_2024_03::models::{
        security_rule_properties_format::Protocol, SecurityRule, SecurityRuleAccess,
        SecurityRuleDirection, SecurityRulePropertiesFormat,
    };
    within(async {
        let sim = start(World::new().vm("web-02").nsg_denies_rdp()).await;
        let net = network(&sim);
        let rules = net.security_rules_client();
        let token = token(&sim).await;
        let rule = |priority: i32| {
            let mut props = SecurityRulePropertiesFormat::new(
                Protocol::Tcp,
                SecurityRuleAccess::Allow,
                priority,
                SecurityRuleDirection::Inbound,
            );
            props.source_address_prefix = Some("203.0.113.0/24".to_owned());
            props.source_port_range = Some("*".to_owned());
            props.destination_address_prefix = Some("*".to_owned());
            props.destination_port_range = Some("3389".to_owned());
            props.description = Some("RDP from the office".to_owned());
            SecurityRule {
                properties: Some(props),
                ..SecurityRule::default()
            }
        };

        let created = answer(
            rules
                .create_or_update("rg-web", "web-02-snet-nsg", "allow-rdp-office", rule(110), SUB)
                .send()
                .await
                .expect("accepted")
                .into_raw_response(),
        )
        .await;
        assert_eq!(created.status, StatusCode::Created);
        let model: SecurityRule = serde_json::from_slice(&created.body).expect("parses into the SDK model");
        assert_eq!(
            format!("{:?}", model.properties.and_then(|p| p.provisioning_state)),
            "Some(Updating)"
        );
        let url = created.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        assert!(url.starts_with(&format!("{}/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operations/", sim.url())));
        assert!(url.ends_with("?api-version=2024-03-01"));
        let (seen, _) = poll_status(&sim, &url, &token).await;
        assert_eq!(seen, ["InProgress", "Succeeded"]);

        let got = rules.get("rg-web", "web-02-snet-nsg", "allow-rdp-office", SUB).await.expect("rule");
        assert_eq!(got.properties.map(|p| p.priority), Some(110));

        let accepted = net
            .network_interfaces_client()
            .list_effective_network_security_groups("rg-web", "web-02-nic", SUB)
            .send()
            .await
            .expect("accepted")
            .into_raw_response();
        let location = accepted
            .headers()
            .get_optional_string(&HeaderName::from_static("location"))
            .expect("Location");
        let mut result = raw(&sim, Method::Get, &location, Some(&token)).await;
        while result.status == StatusCode::Accepted {
            result = raw(&sim, Method::Get, &location, Some(&token)).await;
        }
        let names: Vec<String> = result.json()["value"][0]["effectiveSecurityRules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect();
        assert!(names.contains(&"securityRules/allow-rdp-office".to_owned()), "{names:?}");

        let conflict = rules
            .create_or_update("rg-web", "web-02-snet-nsg", "another", rule(200), SUB)
            .send()
            .await
            .expect_err("priority taken");
        assert_eq!(status_of(&conflict), Some(StatusCode::BadRequest));
        let body = raw_json(
            &sim,
            Method::Put,
            &format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network/networkSecurityGroups/web-02-snet-nsg/securityRules/another?api-version=2024-03-01"),
            &token,
            &serde_json::to_value(rule(200)).expect("json"),
        )
        .await;
        assert_eq!(body.json()["error"]["code"], "SecurityRuleConflict");
        assert_eq!(
            body.json()["error"]["message"],
            "Security rule another conflicts with rule deny-rdp-internet. Rules cannot have the same Priority and Direction. To learn more, see aka.ms/nsgrules."
        );
        let stats = sim.stats();
        assert_eq!(stats.by_route["PUT networkSecurityGroups/securityRules"], 3);
        assert_eq!(stats.by_route["GET networkSecurityGroups/securityRules"], 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn fail_operations_end_a_redeploy_failed_and_leave_the_world_alone() {
    within(async {
        let world = World::new().vm("app-02").dynamic_public_ip_without_address();
        let mut world = world;
        if let Some(ip) = world.vms[0].public_ip.as_mut() {
            ip.address = Some("20.9.9.9".to_owned());
        }
        let options = SimOptions {
            fail_operations: vec![FailOperation::new(
                "/redeploy",
                "AllocationFailed",
                "Allocation failed. We do not have sufficient capacity for the requested VM size in this region.",
            )],
            ..SimOptions::fast()
        };
        let sim = start_with(world, options).await;
        let token = token(&sim).await;
        let before = sim.world().snapshot();

        let accepted = compute(&sim)
            .virtual_machines_client()
            .redeploy("rg-web", "app-02", SUB)
            .send()
            .await
            .expect("accepted")
            .into_raw_response();
        assert_eq!(accepted.status(), StatusCode::Accepted);
        let header = |name: &'static str| {
            accepted
                .headers()
                .get_optional_string(&HeaderName::from_static(name))
                .expect("header")
        };
        let (url, location) = (header("azure-asyncoperation"), header("location"));
        assert_eq!(sim.world().snapshot(), before);
        let (seen, done) = poll_status(&sim, &url, &token).await;
        assert_eq!(seen, ["InProgress", "Failed"]);
        assert_eq!(done["error"]["code"], "AllocationFailed");
        let monitor = raw(&sim, Method::Get, &location, Some(&token)).await;
        assert_eq!(monitor.status, StatusCode::BadRequest);
        assert_eq!(monitor.json()["error"]["code"], "AllocationFailed");
        assert_eq!(sim.world().snapshot(), before);
        assert_eq!(sim.world().vm("app-02").public_ip_address().as_deref(), Some("20.9.9.9"));

        let restart = raw(&sim, Method::Post, &vm_action_path("rg-web", "app-02", "restart"), Some(&token)).await;
        let (_, done) = poll_status(&sim, &restart.header("azure-asyncoperation").expect("url"), &token).await;
        assert_eq!(done["status"], "Succeeded", "other writes are not affected");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_new_client_polling_the_same_operation_url_gets_the_final_status() {
    within(async {
        let options = support::polled(3);
        let sim = start_with(World::new().vm("web-01"), options).await;
        let url = {
            let first_client = compute(&sim);
            let first_token = token(&sim).await;
            let accepted = first_client
                .virtual_machines_client()
                .restart("rg-web", "web-01", SUB)
                .send()
                .await
                .expect("accepted")
                .into_raw_response();
            let url = accepted
                .headers()
                .get_optional_string(&HeaderName::from_static("azure-asyncoperation"))
                .expect("Azure-AsyncOperation");
            let once = raw(&sim, Method::Get, &url, Some(&first_token))
                .await
                .json();
            assert_eq!(once["status"], "InProgress");
            url
        };
        let second_token = token(&sim).await;
        let (seen, done) = poll_status(&sim, &url, &second_token).await;
        assert_eq!(
            seen,
            ["InProgress", "InProgress", "Succeeded"],
            "polls count per operation"
        );
        assert_eq!(done["status"], "Succeeded");
        let again = raw(&sim, Method::Get, &url, Some(&second_token))
            .await
            .json();
        assert_eq!(again["status"], "Succeeded");
        assert_eq!(again["endTime"], done["endTime"]);
        assert_eq!(sim.world().vm("web-01").power_state(), PowerState::Running);
        sim.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Fleets: lists for sweeps, per-subscription throttling, request timing

/// Answered requests whose path contains `needle`.
fn logged(sim: &Simulator, needle: &str) -> Vec<rdp_doctor::sim::RequestLogEntry> {
    sim.stats()
        .log
        .into_iter()
        .filter(|e| e.path.contains(needle))
        .collect()
}

fn power_code(
    vm: &azure_mgmt_compute::package_2024_07_01::models::VirtualMachine,
) -> Option<String> {
    let view = vm.properties.as_ref()?.instance_view.as_ref()?;
    view.statuses
        .iter()
        .filter_map(|s| s.code.clone())
        .find(|c| c.starts_with("PowerState/"))
}

#[tokio::test]
async fn a_500_vm_fleet_lists_with_instance_view_in_5_quick_pages() {
    within(async {
        // A world that answers the expansion the spec refuses without a $filter.
        let world = World::new()
            .vm_list_instance_view(rdp_doctor::sim::ListedInstanceView::Full)
            .page_size(100)
            .fleet("rg-fleet", "vm", 500)
            .select("vm-250")
            .stopped();
        let sim = start(world).await;
        let vms = compute(&sim).virtual_machines_client();
        let mut pages = vms
            .list("rg-fleet", SUB)
            .expand("instanceView")
            .into_stream();
        let mut listed = Vec::new();
        let mut sizes = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.expect("page parses into VirtualMachineListResult");
            sizes.push(page.value.len());
            listed.extend(page.value);
        }
        assert_eq!(sizes, [100; 5]);
        let names: Vec<&str> = listed
            .iter()
            .filter_map(|vm| vm.resource.name.as_deref())
            .collect();
        assert_eq!((names[0], names[499]), ("vm-000", "vm-499"));
        let codes: Vec<Option<String>> = listed.iter().map(power_code).collect();
        assert!(
            codes.iter().all(Option::is_some),
            "every VM carries its instance view"
        );
        assert_eq!(codes[250].as_deref(), Some("PowerState/stopped"));
        assert_eq!(codes[499].as_deref(), Some("PowerState/running"));
        let agent = listed[499]
            .properties
            .as_ref()
            .and_then(|p| p.instance_view.as_ref())
            .and_then(|v| v.vm_agent.as_ref())
            .expect("agent");
        assert_eq!(agent.statuses[0].display_status.as_deref(), Some("Ready"));

        let requests = logged(&sim, "/virtualMachines?");
        assert_eq!(requests.len(), 5);
        for next in &requests[1..] {
            assert!(next.path.contains("$expand=instanceView"), "{}", next.path);
        }
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn subscription_wide_vm_list_expands_the_instance_view_on_every_page() {
    within(async {
        let world = World::new()
            .vm_list_instance_view(rdp_doctor::sim::ListedInstanceView::Full)
            .vm("a")
            .vm("b")
            .in_group("rg-other")
            .vm("c")
            .deallocated()
            .vm("elsewhere")
            .in_subscription("22222222-2222-2222-2222-222222222222");
        let sim = start(world).await;
        let vms = compute(&sim).virtual_machines_client();
        let mut pages = vms.list_all(SUB).expand("instanceView").into_stream();
        let mut listed = Vec::new();
        while let Some(page) = pages.next().await {
            listed.extend(page.expect("page").value);
        }
        let seen: Vec<(String, Option<String>)> = listed
            .iter()
            .map(|vm| (vm.resource.name.clone().unwrap_or_default(), power_code(vm)))
            .collect();
        assert_eq!(
            seen,
            [
                ("a".to_owned(), Some("PowerState/running".to_owned())),
                ("b".to_owned(), Some("PowerState/running".to_owned())),
                ("c".to_owned(), Some("PowerState/deallocated".to_owned())),
            ]
        );
        let mut plain = vms.list_all(SUB).into_stream();
        let first = plain.next().await.expect("a page").expect("parses");
        assert!(first.value[0]
            .properties
            .as_ref()
            .is_some_and(|p| p.instance_view.is_none()));
        assert!(first.next_link.is_some_and(|link| !link.contains("expand")));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn nics_and_public_ips_list_by_group_and_subscription_through_sdk_paging() {
    within(async {
        let world = World::new()
            .vm("a")
            .vm("b")
            .nsg_denies_rdp()
            .vm("c")
            .no_public_ip()
            .vm("d")
            .in_group("rg-other");
        let sim = start(world).await;
        let net = network(&sim);

        let mut pages = net
            .network_interfaces_client()
            .list("rg-web", SUB)
            .into_stream();
        let mut nics = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.expect("page parses into NetworkInterfaceListResult");
            assert!(page.value.len() <= 2);
            nics.extend(page.value);
        }
        let names: Vec<&str> = nics
            .iter()
            .filter_map(|n| n.resource.name.as_deref())
            .collect();
        assert_eq!(names, ["a-nic", "b-nic", "c-nic"]);
        let b = nics[1].properties.clone().expect("nic properties");
        let nsg = b
            .network_security_group
            .and_then(|n| n.resource.id)
            .expect("nic nsg");
        assert!(nsg.ends_with("/networkSecurityGroups/b-nsg"), "{nsg}");
        let ipconfig = b.ip_configurations[0].properties.clone().expect("ipconfig");
        assert_eq!(ipconfig.private_ip_address.as_deref(), Some("10.0.1.5"));
        let subnet = ipconfig
            .subnet
            .and_then(|s| s.sub_resource.id)
            .expect("subnet");
        assert!(subnet.ends_with("/subnets/b-snet"), "{subnet}");
        let pip = ipconfig.public_ip_address.expect("public ip reference");
        assert!(pip
            .resource
            .id
            .is_some_and(|id| id.ends_with("/publicIPAddresses/b-ip")));
        assert!(
            pip.properties.is_none(),
            "a list does not expand the public IP"
        );

        let mut all = net.network_interfaces_client().list_all(SUB).into_stream();
        let mut count = 0;
        while let Some(page) = all.next().await {
            count += page.expect("page").value.len();
        }
        assert_eq!(count, 4);

        let mut pages = net
            .public_ip_addresses_client()
            .list("rg-web", SUB)
            .into_stream();
        let mut ips = Vec::new();
        while let Some(page) = pages.next().await {
            ips.extend(
                page.expect("page parses into PublicIpAddressListResult")
                    .value,
            );
        }
        let found: Vec<(Option<String>, Option<String>)> = ips
            .iter()
            .map(|ip| {
                (
                    ip.resource.name.clone(),
                    ip.properties.as_ref().and_then(|p| p.ip_address.clone()),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (Some("a-ip".to_owned()), Some("20.1.2.3".to_owned())),
                (Some("b-ip".to_owned()), Some("20.1.2.4".to_owned())),
            ]
        );
        let mut all = net.public_ip_addresses_client().list_all(SUB).into_stream();
        let mut names = Vec::new();
        while let Some(page) = all.next().await {
            names.extend(
                page.expect("page")
                    .value
                    .into_iter()
                    .filter_map(|ip| ip.resource.name),
            );
        }
        assert_eq!(names, ["a-ip", "b-ip", "d-ip"]);

        let stats = sim.stats();
        // Two to a page: 3 NICs in rg-web and 4 in all take two pages each; 2 public IPs in
        // rg-web take one, 3 in all take two.
        assert_eq!(stats.by_route["GET networkInterfaces (list)"], 4);
        assert_eq!(stats.by_route["GET publicIPAddresses (list)"], 3);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn nic_get_expands_the_public_ip_only_when_asked() {
    within(async {
        let world = World::new()
            .vm("web-01")
            .vm("app-02")
            .deallocated()
            .dynamic_public_ip_without_address();
        let sim = start(world).await;
        let nics = network(&sim).network_interfaces_client();
        let public_ip = |nic: azure_mgmt_network::package_2024_03::models::NetworkInterface| {
            nic.properties
                .and_then(|p| p.ip_configurations.into_iter().next())
                .and_then(|c| c.properties)
                .and_then(|p| p.public_ip_address)
                .expect("public ip")
        };

        let expanded = public_ip(
            nics.get("rg-web", "web-01-nic", SUB)
                .expand("ipConfigurations/publicIPAddress")
                .await
                .expect("nic"),
        );
        assert_eq!(expanded.resource.name.as_deref(), Some("web-01-ip"));
        assert!(expanded
            .resource
            .id
            .as_deref()
            .is_some_and(|id| id.ends_with("/publicIPAddresses/web-01-ip")));
        assert_eq!(expanded.resource.location.as_deref(), Some("westeurope"));
        assert_eq!(
            format!("{:?}", expanded.sku.and_then(|s| s.name)),
            "Some(Standard)"
        );
        let props = expanded.properties.expect("public ip properties");
        assert_eq!(props.ip_address.as_deref(), Some("20.1.2.3"));
        assert_eq!(
            format!("{:?}", props.public_ip_allocation_method),
            "Some(Static)"
        );

        let dynamic = public_ip(
            nics.get("rg-web", "app-02-nic", SUB)
                .expand("ipConfigurations/publicIPAddress")
                .await
                .expect("nic"),
        );
        let props = dynamic.properties.expect("public ip properties");
        assert!(props.ip_address.is_none());
        assert_eq!(
            format!("{:?}", props.public_ip_allocation_method),
            "Some(Dynamic)"
        );

        let plain = public_ip(nics.get("rg-web", "web-01-nic", SUB).await.expect("nic"));
        assert!(plain.resource.id.is_some());
        assert!(plain.resource.name.is_none() && plain.properties.is_none());
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn resource_health_lists_by_group_and_subscription_with_actions_on_every_page() {
    within(async {
        let other_sub = "33333333-3333-3333-3333-333333333333";
        let mut world = World::new()
            .vm("web-01")
            .vm("web-02")
            .vm("db-01")
            .health("Unavailable", "We're sorry, we couldn't automatically recover your virtual machine")
            .vm("app-01")
            .in_group("rg-app")
            .vm("reports-01")
            .in_subscription(other_sub)
            .resource_health_unregistered();
        world.vms[2].health.recommended_actions =
            vec![rdp_doctor::sim::RecommendedAction::Text("To start this virtual machine, open the resource blade and click Start".to_owned())];
        let sim = start(world).await;
        let statuses = health(&sim).availability_statuses_client();

        let mut pages = statuses
            .list_by_resource_group(SUB, "rg-web")
            .expand("recommendedactions")
            .into_stream();
        let mut listed = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.expect("page parses into AvailabilityStatusListResult");
            assert!(page.value.len() <= 2);
            listed.extend(page.value);
        }
        let ids: Vec<String> = listed.iter().filter_map(|s| s.id.clone()).collect();
        assert_eq!(
            ids,
            ["web-01", "web-02", "db-01"].map(|vm| format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/{vm}/providers/Microsoft.ResourceHealth/availabilityStatuses/current"))
        );
        let down = listed[2].properties.clone().expect("properties");
        assert_eq!(format!("{:?}", down.availability_state), "Some(Unavailable)");
        assert_eq!(down.recommended_actions.len(), 1, "the second page keeps $expand");
        assert_eq!(down.recommended_actions[0].action_url.as_deref(), Some("<#ResourceBlade>"));
        assert_eq!(listed[0].name.as_deref(), Some("current"));
        let up = listed[0].properties.clone().expect("properties");
        assert_eq!(format!("{:?}", up.availability_state), "Some(Available)");

        let single = statuses
            .get_by_resource(format!("subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/db-01"))
            .expand("recommendedactions")
            .await
            .expect("status");
        let mut single = serde_json::to_value(single).expect("json");
        let mut from_list = serde_json::to_value(&listed[2]).expect("json");
        for status in [&mut single, &mut from_list] {
            status["properties"]["reportedTime"] = Value::Null;
            status["properties"]["occuredTime"] = Value::Null;
        }
        assert_eq!(from_list, single, "a list entry is what the single read serves");

        let mut pages = statuses.list_by_subscription_id(SUB).into_stream();
        let mut count = 0;
        while let Some(page) = pages.next().await {
            let page = page.expect("page");
            assert!(page.value.iter().all(|s| s.properties.as_ref().is_some_and(|p| p.recommended_actions.is_empty())));
            count += page.value.len();
        }
        assert_eq!(count, 4);

        let mut unregistered = statuses.list_by_subscription_id(other_sub).into_stream();
        let error = unregistered.next().await.expect("an answer").expect_err("unregistered");
        assert_eq!(status_of(&error), Some(StatusCode::Conflict));
        let token = token(&sim).await;
        let flat = raw(
            &sim,
            Method::Get,
            &format!("/subscriptions/{other_sub}/resourceGroups/rg-web/providers/Microsoft.ResourceHealth/availabilityStatuses?api-version=2024-02-01"),
            Some(&token),
        )
        .await;
        assert_eq!(flat.status, StatusCode::Conflict);
        assert_eq!(flat.json()["code"], "MissingSubscriptionRegistration");
        // Two pages for rg-web, two for the subscription, one each for the refused reads.
        assert_eq!(sim.stats().by_route["GET availabilityStatuses (list)"], 6);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn fleet_vms_check_ok_until_one_is_broken() {
    support::within(async {
        let world = World::new()
            .page_size(100)
            .fleet("rg-fleet", "vm", 120)
            .select("vm-007")
            .stopped()
            .select("vm-042")
            .nic_nsg_denies_rdp();
        let h = support::Harness::start(world).await;
        let healthy = h.check("vm-119").await.expect("report");
        assert_eq!(
            healthy.verdict,
            rdp_doctor::runbook::Verdict::Ok,
            "{:#?}",
            healthy.findings
        );
        let stopped = h.check("vm-007").await.expect("report");
        assert_eq!(support::status_of(&stopped, "vm-status").0, "fail");
        let denied = h.check("vm-042").await.expect("report");
        let (status, summary) = support::status_of(&denied, "nsg");
        assert_eq!(status, "fail", "{summary}");
        assert!(summary.contains("deny-rdp-internet"), "{summary}");
    })
    .await;
}

#[tokio::test]
async fn token_buckets_are_per_subscription_and_operation_urls_count_for_theirs() {
    within(async {
        let second = "22222222-2222-2222-2222-222222222222";
        let options = SimOptions {
            bucket: Some(BucketOptions {
                capacity: 2,
                refill_per_sec: 0.5,
            }),
            ..SimOptions::fast()
        };
        let world = World::new().vm("web-01").vm("web-02").in_subscription(second);
        let sim = start_with(world, options).await;
        let token = token(&sim).await;
        let first = vm_path("rg-web", "web-01");
        for remaining in ["1", "0"] {
            let ok = raw(&sim, Method::Get, &first, Some(&token)).await;
            assert_eq!(ok.status, StatusCode::Ok);
            assert_eq!(ok.header("x-ms-ratelimit-remaining-subscription-reads").as_deref(), Some(remaining));
        }
        let operation = format!("/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operationResults/nope?api-version=2024-03-01");
        let throttled = raw(&sim, Method::Get, &operation, Some(&token)).await;
        assert_eq!(throttled.status, StatusCode::TooManyRequests);
        assert_eq!(throttled.header("retry-after").as_deref(), Some("2"));
        assert!(throttled.json()["error"]["message"].as_str().is_some_and(|m| m.contains(SUB)));

        let other = format!("/subscriptions/{second}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-02?api-version=2024-07-01");
        let fresh = raw(&sim, Method::Get, &other, Some(&token)).await;
        assert_eq!(fresh.status, StatusCode::Ok);
        assert_eq!(fresh.header("x-ms-ratelimit-remaining-subscription-reads").as_deref(), Some("1"));
        let operation = format!("/subscriptions/{second}/providers/Microsoft.Network/locations/westeurope/operationResults/nope?api-version=2024-03-01");
        let counted = raw(&sim, Method::Get, &operation, Some(&token)).await;
        assert_eq!(counted.status, StatusCode::NotFound);
        assert_eq!(counted.header("x-ms-ratelimit-remaining-subscription-reads").as_deref(), Some("0"));

        let nowhere: Vec<StatusCode> = futures::future::join_all(
            (0..3).map(|_| raw(&sim, Method::Get, "/nothing/here", Some(&token))),
        )
        .await
        .into_iter()
        .map(|r| r.status)
        .collect();
        assert_eq!(nowhere.iter().filter(|s| **s == StatusCode::NotFound).count(), 2);
        assert_eq!(nowhere.iter().filter(|s| **s == StatusCode::TooManyRequests).count(), 1);
        assert_eq!(sim.stats().throttled, 2);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn effective_nsgs_without_polls_cost_exactly_two_requests() {
    within(async {
        let options = support::polled(0);
        let sim = start_with(World::new().vm("web-01"), options.clone()).await;
        let nics = network(&sim).network_interfaces_client();
        let token = token(&sim).await;
        let accepted = answer(
            nics.list_effective_network_security_groups("rg-web", "web-01-nic", SUB)
                .send()
                .await
                .expect("accepted")
                .into_raw_response(),
        )
        .await;
        assert_eq!(accepted.status, StatusCode::Accepted);
        assert_eq!(accepted.header("retry-after").as_deref(), Some("0"), "poll at once");
        assert_eq!(accepted.header("azure-asyncoperation"), None);
        let location = accepted.header("location").expect("Location");
        let done = raw(&sim, Method::Get, &location, Some(&token)).await;
        assert_eq!(done.status, StatusCode::Ok);
        let result: azure_mgmt_network::package_2024_03::models::EffectiveNetworkSecurityGroupListResult =
            serde_json::from_slice(&done.body).expect("parses into the SDK model");
        assert_eq!(result.value.len(), 1);
        assert_eq!(logged(&sim, "/effectiveNetworkSecurityGroups").len(), 1);
        assert_eq!(logged(&sim, "/operationResults/").len(), 1);

        sim.set_options(SimOptions {
            retry_after_secs: 7,
            ..options
        });
        let asks_to_wait = answer(
            nics.list_effective_network_security_groups("rg-web", "web-01-nic", SUB)
                .send()
                .await
                .expect("accepted")
                .into_raw_response(),
        )
        .await;
        assert_eq!(asks_to_wait.header("retry-after").as_deref(), Some("7"));
        let location = asks_to_wait.header("location").expect("Location");
        assert_eq!(raw(&sim, Method::Get, &location, Some(&token)).await.status, StatusCode::Ok);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_request_log_says_when_each_request_started_and_finished() {
    within(async {
        let options = support::slowed(Duration::from_millis(50));
        let sim = start_with(World::new().vm("web-01"), options).await;
        let token = token(&sim).await;
        let path = vm_path("rg-web", "web-01");
        futures::future::join_all((0..3).map(|_| raw(&sim, Method::Get, &path, Some(&token))))
            .await;
        raw(&sim, Method::Get, &path, Some(&token)).await;
        let log = logged(&sim, "/virtualMachines/web-01");
        assert_eq!(log.len(), 4);
        for entry in &log {
            assert!(entry.finished_us >= entry.started_us + 50_000, "{entry:?}");
        }
        let together = &log[..3];
        let last_start = together
            .iter()
            .map(|e| e.started_us)
            .max()
            .unwrap_or_default();
        let first_end = together
            .iter()
            .map(|e| e.finished_us)
            .min()
            .unwrap_or_default();
        assert!(
            last_start < first_end,
            "the three were in flight together: {together:?}"
        );
        let after = together
            .iter()
            .map(|e| e.finished_us)
            .max()
            .unwrap_or_default();
        assert!(log[3].started_us >= after, "the fourth came after: {log:?}");
        sim.shutdown().await;
    })
    .await;
}

/// A GET of a blob URL with these headers.
async fn get_with(url: &str, headers: &[(&'static str, &str)]) -> Raw {
    let mut request = Request::new(Url::parse(url).expect("url"), Method::Get);
    for (name, value) in headers {
        request.insert_header(*name, value.to_string());
    }
    let response = azure_core::new_http_client()
        .execute_request(&request)
        .await
        .expect("request sent");
    let (status, headers, body) = response.deconstruct();
    Raw {
        status,
        headers,
        body: body.collect().await.expect("body").to_vec(),
    }
}

/// Get Blob's ranges as Azure Storage documents them: `bytes=start-` and `bytes=start-end` in
/// `Range` or `x-ms-range` (which wins), 206 with `Content-Range`, 416 beyond the blob's end.
#[tokio::test]
async fn blobs_answer_byte_ranges_as_azure_storage_does() {
    within(async {
        let sim = start(World::new().vm("web-01")).await;
        let data = compute(&sim)
            .virtual_machines_client()
            .retrieve_boot_diagnostics_data("rg-web", "web-01", SUB)
            .await
            .expect("boot diagnostics data");
        let serial = data.serial_console_log_blob_uri.expect("serial uri");
        let whole = get_with(&serial, &[]).await;
        assert_eq!(whole.status, StatusCode::Ok);
        assert_eq!(whole.header("accept-ranges").as_deref(), Some("bytes"));
        let total = whole.body.len();

        let head = get_with(&serial, &[("range", "bytes=0-99")]).await;
        assert_eq!(head.status, StatusCode::PartialContent);
        assert_eq!(head.body, whole.body[..100]);
        assert_eq!(
            head.header("content-range"),
            Some(format!("bytes 0-99/{total}"))
        );
        let tail = get_with(
            &serial,
            &[
                ("range", "bytes=0-9"),
                ("x-ms-range", &format!("bytes={}-", total - 10)),
            ],
        )
        .await;
        assert_eq!(tail.status, StatusCode::PartialContent, "x-ms-range wins");
        assert_eq!(tail.body, whole.body[total - 10..]);
        let beyond = get_with(&serial, &[("x-ms-range", &format!("bytes={total}-"))]).await;
        assert_eq!(beyond.status, StatusCode::RequestedRangeNotSatisfiable);
        assert_eq!(
            beyond.header("x-ms-error-code").as_deref(),
            Some("InvalidRange")
        );
        assert_eq!(
            beyond.header("content-range"),
            Some(format!("bytes */{total}"))
        );
        let log = sim.stats().log;
        let ranged: Vec<Option<&str>> = log
            .iter()
            .filter(|e| e.path.contains("serialconsole"))
            .map(|e| e.range.as_deref())
            .collect();
        assert_eq!(
            ranged,
            [
                None,
                Some("bytes=0-99"),
                Some(format!("bytes={}-", total - 10).as_str()),
                Some(format!("bytes={total}-").as_str())
            ]
        );
        sim.shutdown().await;
    })
    .await;
}

/// After a restart Azure shows the guest agent Not Ready for a minute or more, and Resource
/// Health still shows the reboot; both settle after `SimOptions::settle` (60 s unless told).
#[tokio::test]
async fn a_restarted_vm_settles_its_agent_and_resource_health_late() {
    within(async {
        assert_eq!(SimOptions::fast().settle(), Duration::from_secs(60));
        let options = SimOptions {
            settle: Some(Duration::from_millis(500)),
            lro_polls: 0,
            ..SimOptions::fast()
        };
        let sim = start_with(World::new().vm("web-01"), options).await;
        let vms = compute(&sim).virtual_machines_client();
        let token = token(&sim).await;
        let accepted = raw(&sim, Method::Post, &vm_action_path("rg-web", "web-01", "restart"), Some(&token)).await;
        let status_url = accepted.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        let (seen, _) = poll_status(&sim, &status_url, &token).await;
        assert_eq!(seen.last().map(String::as_str), Some("Succeeded"));
        let health_path = format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01/providers/Microsoft.ResourceHealth/availabilityStatuses/current");
        let agent_display = || async {
            let view = vms.instance_view("rg-web", "web-01", SUB).await.expect("instance view");
            assert_eq!(view.statuses[1].code.as_deref(), Some("PowerState/running"));
            view.vm_agent.expect("agent").statuses[0].display_status.clone().unwrap_or_default()
        };
        assert_eq!(agent_display().await, "Not Ready");
        let health = raw(&sim, Method::Get, &health_path, Some(&token)).await.json();
        assert_eq!(health["properties"]["availabilityState"], "Unavailable");
        assert_eq!(health["properties"]["reasonType"], "Customer Initiated");
        // Time passing is what is tested: nothing to await but Azure's own pace, so read as a
        // client would until the agent reports.
        while agent_display().await != "Ready" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let health = raw(&sim, Method::Get, &health_path, Some(&token)).await.json();
        assert_eq!(health["properties"]["availabilityState"], "Available");
        sim.shutdown().await;
    })
    .await;
}

/// ARM counts every request that is not a GET against the subscription's write bucket, the
/// POSTs that change nothing included. Azure CLI's recording of `az network nic
/// list-effective-nsg` (`network/tests/latest/recordings/test_network_nic_convenience_commands.yaml`)
/// shows the effective-NSG POST answered with `x-ms-ratelimit-remaining-subscription-writes`,
/// the Azure SDK for .NET's `TestVMManagedBootDiagnostics.json` the same for
/// `retrieveBootDiagnosticsData`; Microsoft's "Understand how Azure Resource Manager throttles
/// requests" gives the buckets (reads 250 refilled 25 a second, writes 200 refilled 10).
#[tokio::test]
async fn posts_that_change_nothing_spend_the_write_bucket_not_the_read_bucket() {
    within(async {
        assert_eq!(SimOptions::default().bucket, Some(BucketOptions::AZURE_READS));
        assert_eq!(SimOptions::default().write_bucket, Some(BucketOptions::AZURE_WRITES));
        assert_eq!(
            (BucketOptions::AZURE_WRITES.capacity, BucketOptions::AZURE_WRITES.refill_per_sec),
            (200, 10.0)
        );
        let small = BucketOptions { capacity: 2, refill_per_sec: 0.1 };
        let options = SimOptions {
            bucket: Some(BucketOptions { capacity: 5, refill_per_sec: 0.1 }),
            write_bucket: Some(small),
            lro_polls: 0,
            ..SimOptions::fast()
        };
        let sim = start_with(World::new().vm("web-01"), options).await;
        let token = token(&sim).await;
        let nsgs = format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network/networkInterfaces/web-01-nic/effectiveNetworkSecurityGroups?api-version=2024-03-01");
        let boot = format!("{}/retrieveBootDiagnosticsData?api-version=2024-07-01", vm_path("rg-web", "web-01").split('?').next().unwrap());

        let first = raw(&sim, Method::Post, &nsgs, Some(&token)).await;
        assert_eq!(first.status, StatusCode::Accepted);
        assert_eq!(first.header("x-ms-ratelimit-remaining-subscription-writes").as_deref(), Some("1"));
        assert_eq!(first.header("x-ms-ratelimit-remaining-subscription-reads"), None);
        let second = raw(&sim, Method::Post, &boot, Some(&token)).await;
        assert_eq!(second.status, StatusCode::Ok, "{}", second.text());
        assert_eq!(second.header("x-ms-ratelimit-remaining-subscription-writes").as_deref(), Some("0"));
        let third = raw(&sim, Method::Post, &nsgs, Some(&token)).await;
        assert_eq!(third.status, StatusCode::TooManyRequests);
        assert_eq!(third.header("x-ms-ratelimit-remaining-subscription-writes").as_deref(), Some("0"));
        assert_eq!(third.header("retry-after").as_deref(), Some("10"));

        // The read bucket is untouched: the result of the first POST is still there to read.
        let location = first.header("location").expect("Location");
        let result = raw(&sim, Method::Get, &location, Some(&token)).await;
        assert_eq!(result.status, StatusCode::Ok);
        assert_eq!(result.header("x-ms-ratelimit-remaining-subscription-reads").as_deref(), Some("4"));
        assert_eq!(sim.stats().throttled, 1);
        sim.shutdown().await;
    })
    .await;
}

/// Computing effective security rules takes the Network resource provider seconds: the POST
/// answers 202 with a `Location` and no `Retry-After`, polls before the result is ready answer
/// 202 again, and the result comes once the time has passed, as Azure CLI's recording of `az
/// network nic list-effective-nsg` shows (202, then 200 with the rules at the poll 10 s later).
#[tokio::test]
async fn effective_security_rules_take_seconds_by_default() {
    within(async {
        assert_eq!(SimOptions::default().effective_nsg_time, SimOptions::AZURE_EFFECTIVE_NSG);
        assert!(SimOptions::AZURE_EFFECTIVE_NSG >= Duration::from_secs(2));
        let options = SimOptions { lro_polls: 0, ..SimOptions::default() };
        let sim = start_with(World::new().vm("web-01"), options).await;
        let token = token(&sim).await;
        let nsgs = format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network/networkInterfaces/web-01-nic/effectiveNetworkSecurityGroups?api-version=2024-03-01");
        let accepted = raw(&sim, Method::Post, &nsgs, Some(&token)).await;
        // Counted from the answer: the simulator's clock started before it answered, so the
        // result is surely ready this long after (counting from before the request raced a
        // loaded machine, where the request can take a while to arrive).
        let answered = std::time::Instant::now();
        assert_eq!(accepted.status, StatusCode::Accepted);
        assert_eq!(accepted.header("retry-after"), None, "Azure sends none");
        let location = accepted.header("location").expect("Location");
        let early = raw(&sim, Method::Get, &location, Some(&token)).await;
        assert_eq!(early.status, StatusCode::Accepted, "not ready yet");
        assert_eq!(early.header("retry-after"), None);
        assert!(early.header("location").is_some_and(|l| l.contains("/operationResults/")));
        // Time passing is what is tested: the answer is ready once Azure's time has passed.
        tokio::time::sleep(SimOptions::AZURE_EFFECTIVE_NSG.saturating_sub(answered.elapsed())).await;
        let done = raw(&sim, Method::Get, &location, Some(&token)).await;
        assert_eq!(done.status, StatusCode::Ok);
        assert_eq!(done.json()["value"].as_array().map(Vec::len), Some(1));
        sim.shutdown().await;
    })
    .await;
}

/// Compute throttles reads of a VM on its own, behind ARM: its "Low Cost Get" policy gives each
/// VM a bucket of 36 refilled 12 a minute and the subscription one of 24,000 (Microsoft's
/// "Compute throttling limits"); answers report both in `x-ms-ratelimit-remaining-resource`
/// with the names Azure CLI's 2026 recordings show, and an empty bucket answers 429
/// `OperationNotAllowed` naming the policy ("Troubleshooting API throttling errors").
#[tokio::test]
async fn reading_one_vm_too_often_is_throttled_by_compute_and_other_vms_are_not() {
    within(async {
        let sim = start_with(World::new().vm("web-01").vm("web-02"), SimOptions::fast()).await;
        let token = token(&sim).await;
        let web01 = vm_path("rg-web", "web-01");
        for left in (0..36).rev() {
            let ok = raw(&sim, Method::Get, &web01, Some(&token)).await;
            assert_eq!(ok.status, StatusCode::Ok);
            let header = ok
                .header("x-ms-ratelimit-remaining-resource")
                .expect("Compute's counts");
            let (subscription, resource) = header.split_once(',').expect("two policies");
            // The subscription's bucket refills 8,000 a minute: full again between requests.
            let spent = subscription
                .strip_prefix("Microsoft.Compute/LowCostGetSubscriptionMaximum;")
                .and_then(|n| n.parse::<u32>().ok())
                .expect("the subscription's count");
            assert!((23_900..24_000).contains(&spent), "{header}");
            assert_eq!(
                resource,
                format!("Microsoft.Compute/LowCostGetResource;{left}")
            );
        }
        let refused = raw(&sim, Method::Get, &web01, Some(&token)).await;
        assert_eq!(refused.status, StatusCode::TooManyRequests);
        let error = refused.json();
        assert_eq!(error["error"]["code"], "OperationNotAllowed");
        assert_eq!(error["error"]["details"][0]["target"], "LowCostGetResource");
        assert_eq!(
            refused.header("retry-after").as_deref(),
            Some("5"),
            "12 a minute"
        );
        assert_eq!(
            refused
                .header("x-ms-ratelimit-remaining-resource")
                .as_deref(),
            Some("Microsoft.Compute/LowCostGetResource;0")
        );
        assert!(
            refused
                .header("x-ms-ratelimit-remaining-subscription-reads")
                .is_some(),
            "ARM counted it"
        );
        let other = raw(
            &sim,
            Method::Get,
            &vm_path("rg-web", "web-02"),
            Some(&token),
        )
        .await;
        assert_eq!(other.status, StatusCode::Ok);
        assert!(other
            .header("x-ms-ratelimit-remaining-resource")
            .is_some_and(|h| h.ends_with("LowCostGetResource;35")));
        sim.shutdown().await;
    })
    .await;
}

/// The compute spec allows `$expand=instanceView` on a VM list only with a `$filter` ("this can
/// only be specified if a valid $filter option is specified", `VirtualMachines_List`): the
/// simulator refuses it by default, and a list without it carries no instance views.
#[tokio::test]
async fn a_vm_list_refuses_the_instance_view_without_a_filter_by_default() {
    within(async {
        let sim = start_with(World::new().vm("web-01"), SimOptions::fast()).await;
        let token = token(&sim).await;
        let list = format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01");
        let refused = raw(&sim, Method::Get, &format!("{list}&$expand=instanceView"), Some(&token)).await;
        assert_eq!(refused.status, StatusCode::BadRequest);
        assert_eq!(refused.json()["error"]["code"], "InvalidParameter");
        let plain = raw(&sim, Method::Get, &list, Some(&token)).await;
        assert_eq!(plain.status, StatusCode::Ok);
        assert!(plain.json()["value"][0]["properties"].get("instanceView").is_none());
        sim.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The network path: route tables, effective routes, Network Watcher

/// Polls a Location until the 200 with the result.
async fn result_at(sim: &Simulator, accepted: &Raw, token: &str) -> Value {
    assert_eq!(accepted.status, StatusCode::Accepted, "{}", accepted.text());
    let location = accepted.header("location").expect("Location");
    loop {
        let poll = raw(sim, Method::Get, &location, Some(token)).await;
        if poll.status == StatusCode::Ok {
            return poll.json();
        }
        assert_eq!(poll.status, StatusCode::Accepted, "{}", poll.text());
    }
}

#[tokio::test]
async fn route_tables_watchers_and_the_route_delete_answer_in_the_specs_shapes() {
    use azure_mgmt_network::package_2024_03::models;
    within(async {
        let sim = start(demo_world()).await;
        let token = token(&sim).await;
        let rg = format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network");
        // The route table and the subnet pointing at it parse into the SDK's models.
        let table: models::RouteTable = serde_json::from_value(
            raw(&sim, Method::Get, &format!("{rg}/routeTables/rt-snet-udr?api-version=2024-03-01"), Some(&token)).await.json(),
        )
        .expect("RouteTable");
        let props = table.properties.expect("properties");
        assert_eq!(props.routes[0].name.as_deref(), Some("to-firewall"));
        assert!(props.subnets[0].sub_resource.id.as_deref().is_some_and(|s| s.ends_with("/subnets/snet-udr")));
        let subnet = raw(&sim, Method::Get, &format!("{rg}/virtualNetworks/vnet-web/subnets/snet-udr?api-version=2024-03-01"), Some(&token)).await.json();
        assert!(subnet["properties"]["routeTable"]["id"].as_str().is_some_and(|id| id.ends_with("/routeTables/rt-snet-udr")));

        // Effective routes: the system default shadowed by the user route.
        let accepted = raw(&sim, Method::Post, &format!("{rg}/networkInterfaces/udr-01-nic/effectiveRouteTable?api-version=2024-03-01"), Some(&token)).await;
        let routes: models::EffectiveRouteListResult =
            serde_json::from_value(result_at(&sim, &accepted, &token).await).expect("EffectiveRouteListResult");
        let default: Vec<_> = routes.value.iter().filter(|r| r.address_prefix == ["0.0.0.0/0"]).collect();
        assert_eq!(default.len(), 2);
        assert!(default.iter().any(|r| r.name.as_deref() == Some("to-firewall") && r.next_hop_ip_address == ["10.0.254.4"]));
        assert!(default.iter().any(|r| r.name.is_none() && r.state == Some(models::effective_route::State::Invalid)));

        // Network Watcher: one per region with VMs, in NetworkWatcherRG.
        let watchers: models::NetworkWatcherListResult = serde_json::from_value(
            raw(&sim, Method::Get, &format!("/subscriptions/{SUB}/providers/Microsoft.Network/networkWatchers?api-version=2024-03-01"), Some(&token)).await.json(),
        )
        .expect("NetworkWatcherListResult");
        let names: Vec<&str> = watchers.value.iter().filter_map(|w| w.resource.name.as_deref()).collect();
        assert_eq!(names, ["NetworkWatcher_eastus", "NetworkWatcher_westeurope"]);
        let watcher = format!("/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westeurope");
        let vm = format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/udr-01");
        let flow = serde_json::json!({"targetResourceId": vm, "direction": "Inbound", "protocol": "TCP", "localPort": "3389", "remotePort": "49152", "localIPAddress": "10.0.3.4", "remoteIPAddress": "203.0.113.9"});
        let accepted = raw_json(&sim, Method::Post, &format!("{watcher}/ipFlowVerify?api-version=2024-03-01"), &token, &flow).await;
        let verdict: models::VerificationIpFlowResult =
            serde_json::from_value(result_at(&sim, &accepted, &token).await).expect("VerificationIpFlowResult");
        assert_eq!(verdict.access, Some(models::Access::Allow));
        assert_eq!(verdict.rule_name.as_deref(), Some("securityRules/allow-rdp"));
        let hop = serde_json::json!({"targetResourceId": vm, "sourceIPAddress": "10.0.3.4", "destinationIPAddress": "203.0.113.9"});
        let accepted = raw_json(&sim, Method::Post, &format!("{watcher}/nextHop?api-version=2024-03-01"), &token, &hop).await;
        let next: Value = result_at(&sim, &accepted, &token).await;
        assert_eq!(next["nextHopType"], "VirtualAppliance");
        assert_eq!(next["nextHopIpAddress"], "10.0.254.4");
        assert!(next["routeTableId"].as_str().is_some_and(|id| id.ends_with("/routeTables/rt-snet-udr")));
        let web = serde_json::json!({"targetResourceId": vm.replace("udr-01", "web-01"), "sourceIPAddress": "10.0.1.4", "destinationIPAddress": "203.0.113.9"});
        let accepted = raw_json(&sim, Method::Post, &format!("{watcher}/nextHop?api-version=2024-03-01"), &token, &web).await;
        let next: Value = result_at(&sim, &accepted, &token).await;
        assert_eq!((next["nextHopType"].as_str(), next["routeTableId"].as_str()), (Some("Internet"), Some("System Route")));
        let elsewhere = raw_json(&sim, Method::Post, &format!("{}/ipFlowVerify?api-version=2024-03-01", watcher.replace("westeurope", "northeurope")), &token, &flow).await;
        assert_eq!(elsewhere.status, StatusCode::NotFound, "no watcher in a region without VMs");

        // The route DELETE: 202 with both operation URLs, the route gone when it ends; a
        // second DELETE finds nothing (204).
        let route = format!("{rg}/routeTables/rt-snet-udr/routes/to-firewall?api-version=2024-03-01");
        let deleted = raw(&sim, Method::Delete, &route, Some(&token)).await;
        assert_eq!(deleted.status, StatusCode::Accepted, "{}", deleted.text());
        let status_url = deleted.header("azure-asyncoperation").expect("Azure-AsyncOperation");
        assert!(deleted.header("location").is_some());
        loop {
            let status = raw(&sim, Method::Get, &status_url, Some(&token)).await.json();
            if status["status"] == "Succeeded" {
                break;
            }
        }
        assert_eq!(raw(&sim, Method::Get, &route, Some(&token)).await.status, StatusCode::NotFound);
        assert_eq!(raw(&sim, Method::Delete, &route, Some(&token)).await.status, StatusCode::NoContent);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn network_watcher_and_route_actions_need_their_rbac_actions() {
    within(async {
        let world = demo_world()
            .principal("00000000-0000-0000-0000-0000000000c1", "reader")
            .role_at("Reader", &format!("/subscriptions/{SUB}"));
        let sim = start(world).await;
        let token = sim_token(&sim, "00000000-0000-0000-0000-0000000000c1", "reader").await;
        let rg = format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network");
        let table = raw(&sim, Method::Get, &format!("{rg}/routeTables/rt-snet-udr?api-version=2024-03-01"), Some(&token)).await;
        assert_eq!(table.status, StatusCode::Ok, "Reader reads route tables");
        for (method, path, action) in [
            (Method::Delete, format!("{rg}/routeTables/rt-snet-udr/routes/to-firewall"), "Microsoft.Network/routeTables/routes/delete"),
            (Method::Post, format!("{rg}/networkInterfaces/udr-01-nic/effectiveRouteTable"), "Microsoft.Network/networkInterfaces/effectiveRouteTable/action"),
            (Method::Post, format!("/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westeurope/ipFlowVerify"), "Microsoft.Network/networkWatchers/ipFlowVerify/action"),
            (Method::Post, format!("/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westeurope/nextHop"), "Microsoft.Network/networkWatchers/nextHop/action"),
        ] {
            let refused = raw(&sim, method, &format!("{path}?api-version=2024-03-01"), Some(&token)).await;
            assert_eq!(refused.status, StatusCode::Forbidden, "{path}");
            assert!(refused.text().contains(action), "{}", refused.text());
        }
        sim.shutdown().await;
    })
    .await;
}

/// A token for one of the world's principals.
async fn sim_token(sim: &Simulator, client_id: &str, secret: &str) -> String {
    let scope = format!("{}/.default", sim.url());
    ClientSecretCredential::new(
        azure_core::new_http_client(),
        Url::parse(&sim.url()).expect("url"),
        "tenant-of-tests".to_owned(),
        client_id.to_owned(),
        secret.to_owned(),
    )
    .get_token(&[&scope])
    .await
    .expect("token")
    .token
    .secret()
    .to_owned()
}
