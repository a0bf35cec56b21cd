//! The runbook: which checks run, in what order and with what concurrency, and which fix the
//! report recommends. Front ends (terminal, Discord) call [`check`] and render its [`Event`]s and
//! [`Report`].
//!
//! **Architecture Invariant:** no chat, CLI or SDK types here. Facts come from `azure` as plain
//! structs, verdicts from `diagnose`, texts from the [`catalog::Catalog`].

pub mod alerts;
pub mod catalog;
pub mod changes;
pub mod door;
pub mod fix;
pub mod guest;
pub mod guest_check;
pub mod limits;
pub mod operate;
pub mod permissions;
mod report;
pub mod standby;
pub mod sweep;
mod sweep_claim;
pub mod watch;

pub use report::{Report, Stats, Verdict};

use crate::azure::{Arm, ArmError, Fleet, HealthOutcome, ResolveError, VmQuery, VmSummary};
use crate::diagnose::network_path::{self, PathFacts};
use crate::diagnose::{
    boot_diagnostics, nsg, public_ip, resource_health, vm_agent, vm_status, ActionId, CheckId,
    Finding, NicFacts, OsType, Status, VmFacts,
};
use crate::domain::Changes;
use catalog::{Catalog, Precondition};
use futures::FutureExt;
use std::net::Ipv4Addr;
use std::time::Instant;

/// What a person asked for beyond the VM.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Test port 3389 from this address instead of "anyone on the Internet".
    pub from: Option<Ipv4Addr>,
}

/// Progress, in the order things happen. Front ends render these live.
#[derive(Debug, Clone)]
pub enum Event {
    Resolved(crate::azure::VmRef),
    StepStarted(CheckId),
    StepFinished(Finding),
    /// The ARM checks of a check with the guest checks are done: the report so far, to show
    /// while Run Command runs.
    ArmChecked(Box<Report>),
    /// Run Command was sent to look inside the VM (it takes up to a minute, often more).
    GuestStarted,
}

/// Why a check produced no report at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{0}")]
    Arm(#[from] ArmError),
}

/// Resolve the VM, then run the checks.
pub async fn check_query(
    arm: &Arm,
    catalog: &Catalog,
    query: &VmQuery,
    subscriptions: &[String],
    options: &CheckOptions,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Result<Report, CheckError> {
    let started = Instant::now();
    let requests_before = arm.request_count();
    let summary = arm.resolve(query, subscriptions).await?;
    let mut report = check(arm, catalog, summary, options, events).await?;
    report.stats = Stats {
        arm_requests: arm.request_count().saturating_sub(requests_before),
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    Ok(report)
}

/// Run every check against a resolved VM. Independent reads run concurrently: the VM read,
/// Resource Health, the NIC chain and boot diagnostics all start at once; only the effective
/// NSG evaluation waits (it needs a running VM and the NIC's private IP).
pub async fn check(
    arm: &Arm,
    catalog: &Catalog,
    summary: VmSummary,
    options: &CheckOptions,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Result<Report, CheckError> {
    Ok(
        run_checks(arm, catalog, summary, options, events, None, None)
            .await?
            .report,
    )
}

/// [`check`], with the report's "Recent changes" from the Activity Log of the last `window`,
/// read beside the checks.
pub async fn check_with_changes(
    arm: &Arm,
    catalog: &Catalog,
    summary: VmSummary,
    options: &CheckOptions,
    window: std::time::Duration,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Result<Report, CheckError> {
    Ok(
        run_checks(arm, catalog, summary, options, events, None, Some(window))
            .await?
            .report,
    )
}

/// [`check`], then the guest checks through Run Command: the ARM report is handed to `events`
/// first ([`Event::ArmChecked`]), then the guest findings join it. When the guest's listener is
/// not on 3389 the `nsg` finding is evaluated again for the listener's port.
pub async fn check_with_guest(
    arm: &Arm,
    catalog: &Catalog,
    summary: VmSummary,
    options: &CheckOptions,
    guest: guest_check::GuestRun<'_>,
    changes_window: Option<std::time::Duration>,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Result<Report, CheckError> {
    let started = Instant::now();
    let requests_before = arm.request_count();
    let checked = run_checks(arm, catalog, summary, options, events, None, changes_window).await?;
    events(Event::ArmChecked(Box::new(checked.report.clone())));
    for id in CheckId::GUEST {
        events(Event::StepStarted(id));
    }
    let mut report = checked.report;
    let inspection = guest_check::inspect(arm, &report.vm, &checked.facts, guest, events).await;
    for f in &inspection.findings {
        events(Event::StepFinished(f.clone()));
    }
    if let (Some(port), Some(nsg)) = (inspection.listener_port(), &checked.nsg) {
        if port != nsg::RDP_PORT {
            let probe = nsg::Probe { port, ..nsg.probe };
            let mut finding =
                nsg::check_with_admin(&nsg.rules, &nsg.admin, &probe).detail(format!(
                "Evaluated for TCP {port}, the port the guest's RDP listener is on, instead of {}.",
                nsg::RDP_PORT
            ));
            // The runbook's title names RDP's own port; this finding judged another.
            if let Some(step) = catalog.step(CheckId::Nsg) {
                finding = finding.titled(
                    step.title
                        .replace(&nsg::RDP_PORT.to_string(), &port.to_string()),
                );
            }
            events(Event::StepFinished(finding.clone()));
            report.findings.retain(|f| f.step != CheckId::Nsg);
            report.findings.push(finding);
        }
    }
    report.findings.extend(inspection.findings);
    report.findings.sort_by_key(|f| f.step);
    report.verdict = Verdict::of(&report.findings);
    report.next_action = next_action(catalog, &checked.facts, &report.findings);
    // A guest failure may be explained by a change too (the `nsg` finding judged again).
    if let Some(Changes::Listed { changes, .. }) = &mut report.changes {
        for c in changes.iter_mut() {
            c.explains = None;
        }
        changes::mark(changes, &report.findings);
    }
    report.stats = Stats {
        arm_requests: arm.request_count().saturating_sub(requests_before),
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    Ok(report)
}

/// The ARM checks' report with what the guest checks build on: the VM's facts and what the
/// `nsg` finding was judged from (to judge another port).
struct ArmChecked {
    report: Report,
    facts: VmFacts,
    nsg: Option<NsgJudged>,
}

/// The effective rules and the question the `nsg` finding answered.
struct NsgJudged {
    rules: Vec<nsg::EffectiveNsg>,
    admin: nsg::AdminRules,
    probe: nsg::Probe,
}

/// The checks of one VM of a sweep: the VM, its NIC and Resource Health come from the scope's
/// lists where they hold them; the effective security rules are read per VM; boot diagnostics
/// are left for a check of the VM on its own.
pub async fn check_in_fleet(
    arm: &Arm,
    catalog: &Catalog,
    fleet: &Fleet,
    summary: VmSummary,
    options: &CheckOptions,
) -> Result<Report, CheckError> {
    Ok(
        run_checks(arm, catalog, summary, options, &|_| {}, Some(fleet), None)
            .await?
            .report,
    )
}

async fn run_checks(
    arm: &Arm,
    catalog: &Catalog,
    summary: VmSummary,
    options: &CheckOptions,
    events: &(dyn Fn(Event) + Send + Sync),
    fleet: Option<&Fleet>,
    changes_window: Option<std::time::Duration>,
) -> Result<ArmChecked, CheckError> {
    let started = Instant::now();
    let requests_before = arm.request_count();
    let vm = summary.vm.clone();
    events(Event::Resolved(vm.clone()));
    for id in CheckId::ARM {
        events(Event::StepStarted(id));
    }
    let texts = &catalog.texts;

    let listed_facts = fleet.and_then(|f| f.vm_facts(&vm.id));
    let facts_known = listed_facts.is_some();
    let vm_read = {
        let arm = arm.clone();
        let vm = vm.clone();
        async move {
            match listed_facts {
                Some(facts) => Ok(facts),
                None => arm.vm_facts(&vm).await,
            }
        }
        .shared()
    };
    // The NIC id is in the VM list; without it (a full id was given) wait for the VM read.
    let nic_id = {
        let vm_read = vm_read.clone();
        let listed = summary.nic_ids.first().cloned();
        async move {
            match listed {
                Some(id) => Ok(Some(id)),
                None => vm_read.await.map(|f| f.nic_ids.first().cloned()),
            }
        }
        .shared()
    };
    let nic_read = {
        let arm = arm.clone();
        let nic_id = nic_id.clone();
        async move {
            match nic_id.await? {
                Some(id) => match fleet.and_then(|f| f.nic_facts(&id)) {
                    Some(listed) => Ok(Some(listed)),
                    None => arm.nic_facts(&id).await.map(Some),
                },
                None => Ok(None),
            }
        }
        .shared()
    };

    // Recent changes: the VM's resource group's Activity Log at once; the groups of its NIC's
    // NSG, public IP and subnet once the NIC is read (beside the effective rules' POST); any
    // group the effective rules or a route table add, at the end. Usually one or two requests,
    // none on the critical path.
    let changes_bounds = changes_window.map(changes::bounds);
    let vm_group = vec![(
        vm.subscription_id.to_ascii_lowercase(),
        vm.resource_group.to_ascii_lowercase(),
    )];
    let changes_first = async {
        let bounds = changes_bounds?;
        Some((
            vm_group.clone(),
            changes::read_groups(arm, &vm_group, bounds).await,
        ))
    };
    let changes_second = async {
        let bounds = changes_bounds?;
        let mut related = changes::Related::new(&vm);
        if let Ok(Some(nic)) = nic_read.clone().await {
            related.add_nic(&nic);
        }
        let groups: Vec<(String, String)> = related
            .groups()
            .into_iter()
            .filter(|g| !vm_group.contains(g))
            .collect();
        Some((
            groups.clone(),
            changes::read_groups(arm, &groups, bounds).await,
        ))
    };

    // Effective rules need only the NIC id: for a person's check of a listed Windows VM, ask at
    // once, alongside the VM read, and judge the answer once the VM is known to be running.
    // Otherwise ask only when the VM read says it is worth it: in a sweep, which ARM's write
    // bucket paces (the POST is a write) rather than latency, a POST for a VM that turns out not
    // to run would spend a write for a 400.
    let speculative = fleet.is_none()
        && !facts_known
        && summary.windows != Some(false)
        && !summary.nic_ids.is_empty();
    let effective = {
        let arm = arm.clone();
        let vm_read = vm_read.clone();
        let nic_id = nic_id.clone();
        async move {
            if !speculative {
                match vm_read.await {
                    Ok(f) if f.is_running() && f.os != OsType::Linux => {}
                    _ => return Ok(None),
                }
            }
            match nic_id.await? {
                Some(id) => arm.effective_nsgs(&id).await.map(Some),
                None => Ok(None),
            }
        }
    };

    // Virtual Network Manager's admin rules of the NIC's virtual network: asked when and as the
    // effective security rules are, once the NIC read names the subnet (a synchronous POST, so
    // NIC → admin rules is no deeper than the effective rules' POST → result). A sweep reads
    // them once per virtual network.
    // Boxed, as the other network reads: a check runs inside a fix's re-check on a test
    // thread's small stack.
    let admin = {
        let arm = arm.clone();
        let vm_read = vm_read.clone();
        let nic_read = nic_read.clone();
        Box::pin(async move {
            if !speculative {
                match vm_read.await {
                    Ok(f) if f.is_running() && f.os != OsType::Linux => {}
                    _ => return nsg::AdminRules::NotRead,
                }
            }
            let Ok(Some(nic)) = nic_read.await else {
                return nsg::AdminRules::NotRead;
            };
            let Some(subnet) = nic.subnet_id else {
                return nsg::AdminRules::NotRead;
            };
            let read = match fleet {
                Some(f) => f.admin_rules(&arm, &subnet).await,
                None => arm.effective_admin_rules(&subnet).await,
            };
            match read {
                Ok(rules) => nsg::AdminRules::Read(rules),
                Err(e) => nsg::AdminRules::Unreadable(e.to_string()),
            }
        })
    };

    // Azure Bastion: only for a VM without a public IP (none read for one with it), once the
    // NIC read says so, beside the effective rules' POST. `public-ip` and `nsg` both wait on it.
    let bastion = {
        let arm = arm.clone();
        let nic_read = nic_read.clone();
        Box::pin(async move {
            let Ok(Some(nic)) = nic_read.await else {
                return Ok(None);
            };
            match (&nic.public_ip, &nic.subnet_id) {
                (None, Some(subnet)) => match fleet {
                    Some(f) => f.bastion(&arm, subnet).await,
                    None => arm.bastion_for(subnet).await,
                },
                _ => Ok(None),
            }
        })
        .shared()
    };

    // The way back without a person's address: the NIC's effective routes, asked when and as
    // the effective security rules are (so the critical path does not grow). Not in a sweep.
    let routes = {
        let arm = arm.clone();
        let vm_read = vm_read.clone();
        let nic_id = nic_id.clone();
        let wanted = fleet.is_none() && options.from.is_none();
        Box::pin(async move {
            if !wanted {
                return Ok(None);
            }
            if !speculative {
                match vm_read.await {
                    Ok(f) if f.is_running() && f.os != OsType::Linux => {}
                    _ => return Ok(None),
                }
            }
            match nic_id.await? {
                Some(id) => arm.effective_routes(&id).await.map(Some),
                None => Ok(None),
            }
        })
    };

    let vm_steps = async {
        let facts = vm_read.clone().await;
        let findings = match &facts {
            Ok(f) => vec![
                vm_status::check(f),
                vm_agent::check(f, &texts.agent_not_ready),
            ],
            Err(_) => Vec::new(),
        };
        for f in &findings {
            events(Event::StepFinished(f.clone()));
        }
        findings
    };

    let health_step = async {
        let listed = match fleet {
            Some(f) => f.health(&vm).await,
            None => None,
        };
        let health = match listed {
            Some(listed) => Ok(listed),
            None => arm.resource_health(&vm).await,
        };
        let finding = match health {
            Ok(HealthOutcome::Status(h)) => resource_health::check(&h),
            Ok(HealthOutcome::Unregistered) => {
                resource_health::unregistered(&texts.register_resource_health)
            }
            Err(e) => Finding::error(CheckId::ResourceHealth, e.to_string()),
        };
        events(Event::StepFinished(finding.clone()));
        finding
    };

    let windows_known = summary.windows;
    let listed_location = summary.location.clone();
    let network_steps = async {
        let is_linux = match windows_known {
            Some(w) => !w,
            None => matches!(vm_read.clone().await, Ok(ref f) if f.os == OsType::Linux),
        };
        if is_linux {
            let mut findings = vec![
                Finding::skip(CheckId::PublicIp, "Linux VM: RDP checks do not apply")
                    .detail(texts.linux.clone()),
                Finding::skip(CheckId::Nsg, "Linux VM: RDP checks do not apply"),
            ];
            if fleet.is_none() {
                findings.push(Finding::skip(
                    CheckId::NetworkPath,
                    "Linux VM: RDP checks do not apply",
                ));
            }
            for f in &findings {
                events(Event::StepFinished(f.clone()));
            }
            return (findings, None);
        }
        let public_ip_step = async {
            let finding = match nic_read.clone().await {
                Ok(Some(nic)) if nic.public_ip.is_none() => match bastion.clone().await {
                    Ok(Some(b)) => public_ip::through_bastion(&nic, &b, &vm.id),
                    Ok(None) => public_ip::check(&nic, &texts.no_public_ip),
                    Err(e) => public_ip::check(&nic, &texts.no_public_ip)
                        .detail(format!("The Azure Bastion hosts could not be read: {e}")),
                },
                Ok(Some(nic)) => public_ip::check(&nic, &texts.no_public_ip),
                Ok(None) => Finding::new(
                    CheckId::PublicIp,
                    Status::Fail,
                    "The VM has no network interface",
                ),
                Err(e) => Finding::error(CheckId::PublicIp, e.to_string()),
            };
            events(Event::StepFinished(finding.clone()));
            finding
        };
        let nsg_step = Box::pin(async {
            let (vm, nic, effective, admin, bastion) = futures::join!(
                vm_read.clone(),
                nic_read.clone(),
                effective,
                admin,
                bastion.clone()
            );
            let bastion = bastion.ok().flatten();
            let (finding, judged) = nsg_finding(
                &vm,
                nic,
                effective,
                admin,
                bastion.as_ref(),
                options,
                &summary.vm.name,
            );
            // Just-in-time access: read the subscription's JIT policies only when Defender's
            // rules are among the effective ones.
            let finding = match &judged {
                Some(j) if has_jit_rule(&j.rules) => match arm.jit_policy(&summary.vm).await {
                    Ok(Some(policy)) => {
                        nsg::jit::judge(finding, &policy, j.probe.port, &summary.vm.name)
                    }
                    Ok(None) => finding,
                    Err(e) => finding.detail(format!(
                        "Just-in-time access rules are present but the JIT policies could not be read: {e}"
                    )),
                },
                _ => finding,
            };
            events(Event::StepFinished(finding.clone()));
            (finding, judged)
        });
        // Boxed: the Network Watcher futures are large, and a check runs inside a fix's
        // re-check on a test thread's small stack.
        let path_read = Box::pin(path_facts(
            arm,
            &vm,
            &listed_location,
            vm_read.clone(),
            nic_read.clone(),
            routes,
            options,
        ));
        let (a, (b, judged), path) = futures::join!(public_ip_step, nsg_step, path_read);
        let mut findings = vec![a];
        if fleet.is_none() {
            let path = match path {
                Ok(PathFacts::Watched {
                    from,
                    port,
                    flow,
                    next_hop,
                    table,
                    ..
                }) => network_path::check(&PathFacts::Watched {
                    from,
                    port,
                    flow,
                    ours: our_verdict(&b),
                    next_hop,
                    table,
                }),
                // Reached through Azure Bastion: the reply goes to its subnet, not the Internet.
                Ok(PathFacts::Routes { routes, table }) => {
                    let bastion = bastion.clone().await.ok().flatten();
                    match bastion
                        .as_ref()
                        .and_then(|b| Some((b, b.subnet_prefix.clone()?, b.source_address()?)))
                    {
                        Some((b, subnet, address)) => network_path::check(&PathFacts::ToBastion {
                            routes,
                            bastion: b.name.clone(),
                            subnet,
                            address,
                        }),
                        None => network_path::check(&PathFacts::Routes { routes, table }),
                    }
                }
                Ok(facts) => network_path::check(&facts),
                Err(finding) => finding,
            };
            events(Event::StepFinished(path.clone()));
            findings.push(path);
        }
        findings.push(b);
        (findings, judged)
    };

    let boot_step = async {
        let enabled = summary.boot_diagnostics_enabled
            || matches!(vm_read.clone().await, Ok(ref f) if f.boot_diagnostics_enabled);
        let finding = if fleet.is_some() {
            Finding::skip(
                CheckId::BootDiagnostics,
                "Not read in a sweep: check the VM on its own for its console",
            )
        } else if !enabled {
            boot_diagnostics::disabled(&enable_boot_diagnostics_text(catalog, &vm))
        } else {
            match arm.boot_diagnostics(&vm).await {
                Ok(boot) => {
                    let finding = boot_diagnostics::check(&boot);
                    return (finding, boot.screenshot_png, boot.serial_tail);
                }
                Err(e) => Finding::error(CheckId::BootDiagnostics, e.to_string()),
            }
        };
        (finding, None, Vec::new())
    };
    let boot_step = async {
        let out = boot_step.await;
        events(Event::StepFinished(out.0.clone()));
        out
    };

    let (
        vm_findings,
        health,
        (network, nsg_judged),
        (boot, screenshot_png, serial_tail),
        changes_first,
        changes_second,
    ) = futures::join!(
        vm_steps,
        health_step,
        network_steps,
        boot_step,
        changes_first,
        changes_second
    );

    // Without the VM read there is no report: every other finding would be guesswork.
    let facts = vm_read.await?;
    let mut findings = vm_findings;
    findings.extend(network);
    findings.push(health);
    findings.push(boot);
    findings.sort_by_key(|f| f.step);

    let changes = match (changes_window, changes_bounds) {
        (Some(window), Some(bounds)) => {
            let mut related = changes::Related::new(&vm);
            for id in &facts.nic_ids {
                related.add(Some(id));
            }
            if let Ok(Some(nic)) = nic_read.clone().await {
                related.add_nic(&nic);
            }
            for judged in nsg_judged.iter().flat_map(|j| j.rules.iter()) {
                related.add(Some(&judged.nsg_id));
            }
            // The route table a failing `network-path` names.
            related.add(
                findings
                    .iter()
                    .find(|f| f.step == CheckId::NetworkPath)
                    .and_then(|f| f.evidence["route"]["route_table_id"].as_str()),
            );
            let early = [changes_first, changes_second].into_iter().flatten();
            Some(changes::finish(arm, &related, early, &findings, window, bounds).await)
        }
        _ => None,
    };

    let next_action = next_action(catalog, &facts, &findings);
    let report = Report {
        vm,
        os: facts.os,
        verdict: Verdict::of(&findings),
        findings,
        next_action,
        stats: Stats {
            arm_requests: arm.request_count().saturating_sub(requests_before),
            elapsed_ms: started.elapsed().as_millis() as u64,
        },
        screenshot_png,
        serial_tail,
        changes,
    };
    Ok(ArmChecked {
        report,
        facts,
        nsg: nsg_judged,
    })
}

/// Whether Defender's just-in-time access wrote rules into these NSGs.
fn has_jit_rule(nsgs: &[nsg::EffectiveNsg]) -> bool {
    nsgs.iter()
        .flat_map(|n| n.rules.iter())
        .any(|r| nsg::jit::is_jit_rule(&r.name))
}

/// The `nsg` check's verdict, to set beside Network Watcher's.
fn our_verdict(nsg: &Finding) -> Option<network_path::OurVerdict> {
    if !matches!(nsg.status, Status::Pass | Status::Warn | Status::Fail) {
        return None;
    }
    Some(network_path::OurVerdict {
        allowed: nsg.evidence["allowed"].as_bool()?,
        rule: nsg.evidence["rule"].as_str().map(str::to_owned),
    })
}

/// The facts of the `network-path` check, or the finding that says why it could not judge.
async fn path_facts(
    arm: &Arm,
    vm: &crate::azure::VmRef,
    listed_location: &str,
    vm_read: impl std::future::Future<Output = Result<VmFacts, ArmError>>,
    nic_read: impl std::future::Future<Output = Result<Option<NicFacts>, ArmError>>,
    routes: impl std::future::Future<Output = Result<Option<Vec<network_path::RouteFacts>>, ArmError>>,
    options: &CheckOptions,
) -> Result<PathFacts, Finding> {
    let step = CheckId::NetworkPath;
    // With an address, the region's Network Watcher is looked up beside the VM read when the
    // VM list gave the region (else once the VM read does).
    let early_watcher = async {
        match (options.from, listed_location.is_empty()) {
            (Some(_), false) => Some(
                arm.network_watcher(&vm.subscription_id, listed_location)
                    .await,
            ),
            _ => None,
        }
    };
    let (facts, nic, routes, early_watcher) = match options.from {
        // The routes were asked for at once: wait for all three together.
        None => {
            let (facts, nic, routes) = futures::join!(vm_read, nic_read, routes);
            (facts, nic, routes, None)
        }
        Some(_) => {
            let (facts, nic, watcher) = futures::join!(vm_read, nic_read, early_watcher);
            (facts, nic, Ok(None), watcher)
        }
    };
    let facts = facts.map_err(|_| Finding::error(step, "could not read the VM"))?;
    if !facts.is_running() {
        return Err(Finding::skip(
            step,
            "VM is not running: Azure computes routes only for running VMs",
        ));
    }
    let nic = match nic {
        Ok(Some(nic)) => nic,
        Ok(None) => return Err(Finding::skip(step, "The VM has no network interface")),
        Err(e) => return Err(Finding::error(step, e.to_string())),
    };
    let error = |e: ArmError| Finding::error(step, e.to_string());
    let Some(from) = options.from else {
        let routes = routes
            .map_err(error)?
            .ok_or_else(|| Finding::skip(step, "The VM has no network interface"))?;
        // Name the route table only when a route sends the replies away.
        let table = match (
            network_path::route_sending_internet_away(&routes),
            &nic.subnet_id,
        ) {
            (Some(_), Some(subnet)) => match arm.subnet_route_table(subnet).await {
                Ok(Some(table)) => arm.route_table(&table).await.ok(),
                _ => None,
            },
            _ => None,
        };
        return Ok(PathFacts::Routes { routes, table });
    };
    let Some(local) = nic.private_ip.clone() else {
        return Err(Finding::skip(step, "The NIC has no private IP address"));
    };
    let watcher = match early_watcher {
        Some(found) => found,
        None => {
            arm.network_watcher(&vm.subscription_id, &facts.location)
                .await
        }
    }
    .map_err(error)?;
    let Some(watcher) = watcher else {
        return Ok(PathFacts::NoWatcher {
            from,
            region: facts.location.clone(),
        });
    };
    let (flow, next_hop) = futures::join!(
        arm.ip_flow_verify(&watcher, &vm.id, &local, nsg::RDP_PORT, from),
        arm.next_hop(&watcher, &vm.id, &local, from),
    );
    let (flow, next_hop) = (flow.map_err(error)?, next_hop.map_err(error)?);
    let table = match &next_hop.route_table_id {
        Some(id) if network_path::sends_away(&next_hop.next_hop_type) => {
            arm.route_table(id).await.ok()
        }
        _ => None,
    };
    Ok(PathFacts::Watched {
        from,
        port: nsg::RDP_PORT,
        flow,
        ours: None,
        next_hop,
        table,
    })
}

fn nsg_finding(
    vm: &Result<VmFacts, ArmError>,
    nic: Result<Option<NicFacts>, ArmError>,
    effective: Result<Option<Vec<nsg::EffectiveNsg>>, ArmError>,
    admin: nsg::AdminRules,
    bastion: Option<&public_ip::BastionFacts>,
    options: &CheckOptions,
    vm_name: &str,
) -> (Finding, Option<NsgJudged>) {
    let facts = match vm {
        Ok(f) => f,
        Err(_) => return (Finding::error(CheckId::Nsg, "could not read the VM"), None),
    };
    if !facts.is_running() {
        return (
            Finding::skip(
                CheckId::Nsg,
                "VM is not running: Azure computes effective security rules only for running VMs",
            ),
            None,
        );
    }
    let nic = match nic {
        Ok(Some(nic)) => nic,
        Ok(None) => {
            return (
                Finding::skip(CheckId::Nsg, "The VM has no network interface"),
                None,
            )
        }
        Err(e) => return (Finding::error(CheckId::Nsg, e.to_string()), None),
    };
    match effective {
        Ok(Some(nsgs)) => {
            // A VM reached through Azure Bastion is judged from its AzureBastionSubnet, where
            // Bastion's connections come from, not from the Internet (unless asked for an
            // address).
            let through = match options.from {
                None => bastion.and_then(|b| Some((b, b.source_address()?))),
                Some(_) => None,
            };
            let probe = nsg::Probe {
                source: match (options.from, through) {
                    (Some(ip), _) => nsg::TrafficSource::Address(ip),
                    (None, Some((_, ip))) => nsg::TrafficSource::Address(ip),
                    (None, None) => nsg::TrafficSource::Internet,
                },
                destination: nic.private_ip.as_deref().and_then(|ip| ip.parse().ok()),
                port: nsg::RDP_PORT,
            };
            let mut finding = nsg::check_with_admin(&nsgs, &admin, &probe);
            if let Some((b, ip)) = through {
                let subnet = format!(
                    "Azure Bastion {}'s AzureBastionSubnet ({})",
                    b.name,
                    b.subnet_prefix.as_deref().unwrap_or_default()
                );
                finding.summary =
                    finding
                        .summary
                        .replacen(&format!("from {ip}"), &format!("from {subnet}"), 1);
                finding = finding.detail(format!(
                    "Judged as from {ip}, in {subnet}: Bastion's connections to the VM come from there, not from the Internet, since the VM has no public IP."
                ));
                // The runbook's open-rdp-port asks for the person's own address; through Bastion
                // the rule must admit the Bastion subnet instead.
                if finding.suggests == Some(ActionId::OpenRdpPort) && finding.next_step.is_none() {
                    let prefix = b.subnet_prefix.as_deref().unwrap_or_default();
                    finding = finding.next_step(format!(
                        "Allow inbound TCP 3389 from {subnet}, where Bastion connects from (not from your own address): `rdp-doctor open-rdp {vm_name} --source {prefix}`, or `/rdp open-rdp` with `source:{prefix}` (action `open-rdp-port`)."
                    ));
                }
            }
            (
                finding,
                Some(NsgJudged {
                    rules: nsgs,
                    admin,
                    probe,
                }),
            )
        }
        Ok(None) => (
            Finding::skip(CheckId::Nsg, "The VM has no network interface"),
            None,
        ),
        Err(e) => (Finding::error(CheckId::Nsg, e.to_string()), None),
    }
}

/// The first fix on the runbook's ladder that some finding calls for and whose preconditions
/// hold on this VM.
pub fn next_action(catalog: &Catalog, vm: &VmFacts, findings: &[Finding]) -> Option<ActionId> {
    let wanted: Vec<ActionId> = findings.iter().filter_map(|f| f.suggests).collect();
    catalog
        .ladder
        .iter()
        .copied()
        .filter(|action| wanted.contains(action))
        .find(|&action| {
            catalog
                .step(action)
                .map(|step| step.requires.iter().all(|p| holds(*p, vm)))
                .unwrap_or(false)
        })
}

fn holds(precondition: Precondition, vm: &VmFacts) -> bool {
    match precondition {
        Precondition::Running => vm.is_running(),
        Precondition::AgentReady => vm.agent_ready(),
        Precondition::Windows => vm.os == OsType::Windows,
        Precondition::DeallocatedOrStopped => {
            matches!(vm.power_state.as_deref(), Some("deallocated" | "stopped"))
        }
    }
}

/// The runbook's generic `az vm boot-diagnostics enable` command, made copy-pasteable for this VM.
fn enable_boot_diagnostics_text(catalog: &Catalog, vm: &crate::azure::VmRef) -> String {
    catalog
        .texts
        .enable_boot_diagnostics
        .replace("--name VM", &format!("--name {}", vm.name))
        .replace(
            "--resource-group RG",
            &format!("--resource-group {}", vm.resource_group),
        )
}

/// `/rdp health`: Resource Health alone.
pub async fn health(arm: &Arm, catalog: &Catalog, vm: &crate::azure::VmRef) -> Finding {
    match arm.resource_health(vm).await {
        Ok(HealthOutcome::Status(h)) => resource_health::check(&h),
        Ok(HealthOutcome::Unregistered) => {
            resource_health::unregistered(&catalog.texts.register_resource_health)
        }
        Err(e) => Finding::error(CheckId::ResourceHealth, e.to_string()),
    }
}

/// What `/rdp console` shows: the boot-diagnostics finding, the screenshot and the serial tail.
pub struct Console {
    pub finding: Finding,
    pub screenshot_png: Option<Vec<u8>>,
    pub serial_tail: Vec<String>,
}

/// `/rdp console`: boot diagnostics alone (screenshot and serial-log tail).
pub async fn console(arm: &Arm, catalog: &Catalog, summary: &VmSummary) -> Console {
    let vm = &summary.vm;
    // A VM not taken from a list has no flag yet: ask the VM itself.
    let enabled = summary.boot_diagnostics_enabled
        || arm
            .vm_facts(vm)
            .await
            .is_ok_and(|f| f.boot_diagnostics_enabled);
    if !enabled {
        return Console {
            finding: boot_diagnostics::disabled(&enable_boot_diagnostics_text(catalog, vm)),
            screenshot_png: None,
            serial_tail: Vec::new(),
        };
    }
    match arm.boot_diagnostics(vm).await {
        Ok(boot) => Console {
            finding: boot_diagnostics::check(&boot),
            screenshot_png: boot.screenshot_png,
            serial_tail: boot.serial_tail,
        },
        Err(e) => Console {
            finding: Finding::error(CheckId::BootDiagnostics, e.to_string()),
            screenshot_png: None,
            serial_tail: Vec::new(),
        },
    }
}
