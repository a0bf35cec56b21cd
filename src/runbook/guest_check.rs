//! The guest checks of one VM, after its ARM checks (`check --guest`, `/rdp guest`, the "Look
//! inside the VM" button): whether Run Command may be sent at all (a Windows VM, running, its
//! guest agent Ready), one guest check per VM at a time in this process ([`GuestSlots`]), the read
//! (`runbook::guest::read`, bounded by `[azure] run_command_timeout_secs`) and its findings.
//!
//! Every way the read can end is a finding, never a crash: skipped with the reason (no Run
//! Command sent), busy (here or in Azure, in the same words), timed out, Azure failing, output
//! that cannot be read.

use super::guest::GuestError;
use super::Event;
use crate::azure::Arm;
use crate::diagnose::guest::GuestFacts;
use crate::diagnose::{CheckId, Finding, OsType, Status, VmFacts};
use crate::domain::VmRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What the guest part of a check needs beyond the VM: the process's slots, who asks, and how
/// long Run Command may take.
#[derive(Debug, Clone, Copy)]
pub struct GuestRun<'a> {
    pub slots: &'a GuestSlots,
    /// The person, as messages name them.
    pub started_by: &'a str,
    pub timeout: Duration,
}

/// The guest checks running now, one per VM (by resource id, ignoring case as ARM does). Share
/// one among every front end of a process.
#[derive(Debug, Clone, Default)]
pub struct GuestSlots {
    running: Arc<Mutex<HashMap<String, Holder>>>,
}

#[derive(Debug, Clone)]
struct Holder {
    started_by: String,
    started_utc: time::OffsetDateTime,
}

/// A VM's guest check: the VM is free again when this is dropped.
#[derive(Debug)]
#[must_use = "the VM is free again as soon as the guard is dropped"]
pub struct GuestGuard {
    running: Arc<Mutex<HashMap<String, Holder>>>,
    key: String,
}

impl Drop for GuestGuard {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Another guest check (or, when Azure says so, another Run Command) is running in the VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct GuestBusy {
    pub vm: String,
    /// Who started it and when ("14:02:11 UTC"), when it is this process's own.
    pub holder: Option<(String, String)>,
}

impl GuestBusy {
    fn message(&self) -> String {
        let who = match &self.holder {
            Some((by, at)) => format!("{by} started it at {at}"),
            None => "Azure reports another Run Command running in it (from the portal, the CLI or another rdp-doctor)".to_string(),
        };
        format!(
            "A guest check of {} is already running: {who}. Azure runs one Run Command per VM at a time; try again when it has finished (up to a few minutes)",
            self.vm
        )
    }
}

impl GuestSlots {
    pub fn new() -> GuestSlots {
        GuestSlots::default()
    }

    /// Take `vm` for a guest check `started_by` asked for, or say who holds it.
    pub fn try_start(&self, vm: &VmRef, started_by: &str) -> Result<GuestGuard, GuestBusy> {
        let key = vm.id.to_ascii_lowercase();
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(holder) = running.get(&key) {
            let at = holder.started_utc;
            return Err(GuestBusy {
                vm: vm.name.clone(),
                holder: Some((
                    holder.started_by.clone(),
                    format!("{:02}:{:02}:{:02} UTC", at.hour(), at.minute(), at.second()),
                )),
            });
        }
        running.insert(
            key.clone(),
            Holder {
                started_by: started_by.to_string(),
                started_utc: time::OffsetDateTime::now_utc(),
            },
        );
        Ok(GuestGuard {
            running: self.running.clone(),
            key,
        })
    }
}

/// Why no Run Command is sent to this VM, if there is a reason.
pub fn skip_reason(vm: &VmFacts) -> Option<&'static str> {
    if vm.os == OsType::Linux {
        Some("Linux VM: the guest checks read Windows settings, so no Run Command was sent")
    } else if !vm.is_running() {
        Some("The VM is not running: Run Command needs a running VM, so none was sent")
    } else if !vm.agent_ready() {
        Some("The guest agent is not Ready (see vm-agent): Run Command goes through it, so none was sent")
    } else {
        None
    }
}

/// One finding per guest check, all saying the same thing (why none of them could run).
pub fn every_check(status: Status, summary: &str) -> Vec<Finding> {
    CheckId::GUEST
        .into_iter()
        .map(|step| Finding::new(step, status, summary))
        .collect()
}

/// What the guest part of a check found: its findings, and the listener port the guest reported.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub findings: Vec<Finding>,
    pub facts: Option<GuestFacts>,
}

impl Inspection {
    fn without_facts(findings: Vec<Finding>) -> Inspection {
        Inspection {
            findings,
            facts: None,
        }
    }

    /// The listener's port, when the guest reported one.
    pub fn listener_port(&self) -> Option<u16> {
        self.facts
            .as_ref()
            .and_then(crate::diagnose::guest::listener_port)
    }
}

/// Look inside the VM: skip with the reason, or take the VM's slot, tell the front end Run
/// Command is running, read and judge.
pub async fn inspect(
    arm: &Arm,
    vm: &VmRef,
    facts: &VmFacts,
    run: GuestRun<'_>,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Inspection {
    if let Some(why) = skip_reason(facts) {
        return Inspection::without_facts(every_check(Status::Skip, why));
    }
    let _guard = match run.slots.try_start(vm, run.started_by) {
        Ok(guard) => guard,
        Err(busy) => {
            return Inspection::without_facts(every_check(Status::Error, &busy.to_string()))
        }
    };
    events(Event::GuestStarted);
    match super::guest::read(arm, vm, run.timeout).await {
        Ok(guest) => Inspection {
            findings: crate::diagnose::guest::findings(&guest, time::OffsetDateTime::now_utc()),
            facts: Some(guest),
        },
        Err(e) => Inspection::without_facts(failed(vm, &e, run.timeout)),
    }
}

/// The findings of a read that ended without facts.
fn failed(vm: &VmRef, e: &GuestError, timeout: Duration) -> Vec<Finding> {
    match e {
        GuestError::TimedOut { .. } => every_check(
            Status::Error,
            &format!(
                "Run Command did not finish within {} s (`[azure] run_command_timeout_secs`): the guest checks timed out. The script may still be running inside the VM; try again in a few minutes",
                timeout.as_secs()
            ),
        ),
        // Azure's own "one at a time", in the same words as this process's.
        GuestError::Busy { .. } => every_check(
            Status::Error,
            &GuestBusy {
                vm: vm.name.clone(),
                holder: None,
            }
            .to_string(),
        ),
        // The VM stopped, or its agent went away, between the ARM checks and the read.
        GuestError::VmNotRunning { .. } | GuestError::AgentNotReady { .. } => {
            every_check(Status::Skip, &format!("The guest checks did not run: {e}"))
        }
        GuestError::Azure(_) | GuestError::Unreadable(_) => {
            every_check(Status::Error, &format!("The guest checks could not run: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::AgentFacts;

    fn vm(name: &str) -> VmRef {
        VmRef::from_id(
            &crate::domain::ResourceId::parse(&format!(
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
            ))
            .unwrap(),
        )
    }

    #[test]
    fn one_guest_check_per_vm_and_the_second_is_told_who() {
        let slots = GuestSlots::new();
        let first = slots.try_start(&vm("web-01"), "alice").unwrap();
        // Another VM is free; the same VM (any case) is not.
        let other = slots.try_start(&vm("web-02"), "bob").unwrap();
        let mut upper = vm("web-01");
        upper.id = upper.id.to_uppercase();
        let busy = slots.try_start(&upper, "bob").unwrap_err();
        let text = busy.to_string();
        assert!(
            text.starts_with("A guest check of web-01 is already running: alice started it at "),
            "{text}"
        );
        assert!(text.contains(" UTC."), "{text}");
        drop(first);
        drop(other);
        let _again = slots.try_start(&vm("web-01"), "bob").unwrap();
    }

    #[test]
    fn azure_busy_is_said_in_the_same_words() {
        let text = GuestBusy {
            vm: "web-01".into(),
            holder: None,
        }
        .to_string();
        assert!(
            text.starts_with(
                "A guest check of web-01 is already running: Azure reports another Run Command"
            ),
            "{text}"
        );
        assert!(text.contains("one Run Command per VM at a time"));
    }

    #[test]
    fn linux_stopped_and_agent_not_ready_are_skipped() {
        let ready = AgentFacts::Ready {
            version: None,
            message: None,
        };
        let running = VmFacts {
            agent: ready.clone(),
            ..VmFacts::sample(Some("running"))
        };
        assert_eq!(skip_reason(&running), None);
        let linux = VmFacts {
            os: OsType::Linux,
            ..running.clone()
        };
        assert!(skip_reason(&linux).unwrap().starts_with("Linux VM"));
        let stopped = VmFacts {
            agent: ready,
            ..VmFacts::sample(Some("deallocated"))
        };
        assert!(skip_reason(&stopped).unwrap().contains("not running"));
        let not_ready = VmFacts {
            agent: AgentFacts::Missing,
            ..running
        };
        assert!(skip_reason(&not_ready).unwrap().contains("not Ready"));

        let all = every_check(Status::Skip, "why");
        assert_eq!(
            all.iter().map(|f| f.step).collect::<Vec<_>>(),
            CheckId::GUEST.to_vec()
        );
        assert!(all
            .iter()
            .all(|f| f.status == Status::Skip && f.summary == "why"));
    }
}
