//! Long-running operations: the registry behind `Location` and `Azure-AsyncOperation` URLs.
//!
//! An operation answers "in progress" a set number of polls, then its outcome. The world moves
//! with the polls: each "in progress" poll applies the next of the operation's steps (e.g. a
//! redeploy going from stopping to starting), and the poll that finishes it applies any steps
//! left and then the completion hook (e.g. the VM is running again). Operations live here, not
//! in the client, so a client that restarts can poll the same URL and get the right answer.
//! An operation may hold a resource (a VM): while it runs, [`Registry::running_on`] names it, so
//! ARM can refuse a second write. An operation whose answer was lost (an injected
//! `AppliedThen*` fault) cannot be polled by its client, yet Azure carries it out all the same:
//! it is *unwatched*, and reads of the resource it holds move it on instead of polls.
//! The registry knows nothing about URLs or JSON shapes:
//! `arm.rs` renders them.

use super::world::World;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use time::OffsetDateTime;

/// What an operation ends with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Succeeded with a result body (served by the final `Location` poll, and as
    /// `properties.output` of the async-operation status).
    Body(Value),
    /// Succeeded without a result body.
    Succeeded,
    /// Failed with an ARM error.
    Failed { code: String, message: String },
}

/// Changes the world while or when an operation finishes.
pub(crate) type Hook = Box<dyn FnOnce(&mut World) + Send>;

/// Changes the world when an operation finishes.
pub(crate) type OnComplete = Hook;

/// An operation to register.
pub(crate) struct NewOperation {
    /// Subscription the operation URL lives under.
    pub subscription: String,
    /// How many polls answer "in progress".
    pub polls: u32,
    pub outcome: Outcome,
    /// What the operation is, e.g. "restart" (named in conflict messages).
    pub name: String,
    /// The resource it holds while running (compared case-insensitively), e.g. a VM id.
    pub resource: Option<String>,
    /// World changes, one per "in progress" poll; any left run when the operation finishes.
    pub steps: Vec<Hook>,
    /// The last world change, when the operation finishes.
    pub on_complete: Option<OnComplete>,
    /// How a GET of `resource` shows it while the operation runs (e.g. a rule being written,
    /// `provisioningState: Updating`), if the world does not show it yet.
    pub pending_view: Option<Value>,
    /// It answers "in progress" until then as well, however many polls it has had (work that
    /// takes time whoever asks, e.g. computing effective security rules).
    pub ready_at: Option<std::time::Instant>,
}

struct Operation {
    subscription: String,
    name: String,
    resource: Option<String>,
    polls_left: u32,
    polls: u32,
    started: OffsetDateTime,
    ended: Option<OffsetDateTime>,
    outcome: Outcome,
    steps: std::collections::VecDeque<Hook>,
    on_complete: Option<OnComplete>,
    /// Its client never learnt where to poll: reads of `resource` advance it.
    unwatched: bool,
    pending_view: Option<Value>,
    ready_at: Option<std::time::Instant>,
}

/// The answer to one poll.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Poll {
    /// Still running.
    InProgress { started: OffsetDateTime },
    /// Finished (every later poll gives the same answer).
    Done {
        started: OffsetDateTime,
        ended: OffsetDateTime,
        outcome: Outcome,
    },
}

/// All operations started by this simulator.
#[derive(Default)]
pub(crate) struct Registry {
    ops: Mutex<HashMap<String, Operation>>,
}

impl Registry {
    /// Registers an operation that answers "in progress" `polls` times; returns its id.
    #[cfg(test)]
    pub(crate) fn start(
        &self,
        subscription: &str,
        polls: u32,
        outcome: Outcome,
        on_complete: Option<OnComplete>,
    ) -> String {
        self.begin(NewOperation {
            subscription: subscription.to_owned(),
            polls,
            outcome,
            name: String::new(),
            resource: None,
            steps: Vec::new(),
            on_complete,
            pending_view: None,
            ready_at: None,
        })
    }

    /// Registers an operation; returns its id.
    pub(crate) fn begin(&self, new: NewOperation) -> String {
        let id = super::random_uuid();
        let op = Operation {
            subscription: new.subscription,
            name: new.name,
            resource: new.resource,
            polls_left: new.polls,
            polls: 0,
            started: OffsetDateTime::now_utc(),
            ended: None,
            outcome: new.outcome,
            steps: new.steps.into(),
            on_complete: new.on_complete,
            unwatched: false,
            pending_view: new.pending_view,
            ready_at: new.ready_at,
        };
        self.lock().insert(id.clone(), op);
        id
    }

    /// The name of an unfinished operation holding `resource`, if any.
    pub(crate) fn running_on(&self, resource: &str) -> Option<String> {
        self.lock()
            .values()
            .find(|op| {
                op.ended.is_none()
                    && op
                        .resource
                        .as_deref()
                        .is_some_and(|r| r.eq_ignore_ascii_case(resource))
            })
            .map(|op| op.name.clone())
    }

    /// How `resource` looks while an unfinished operation writes it, if that operation says.
    pub(crate) fn pending_view(&self, resource: &str) -> Option<Value> {
        self.lock()
            .values()
            .filter(|op| op.ended.is_none())
            .filter(|op| {
                op.resource
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(resource))
            })
            .find_map(|op| op.pending_view.clone())
    }

    /// The client of operation `id` lost its answer: from now on reads of its resource move it.
    pub(crate) fn unwatch(&self, id: &str) {
        if let Some(op) = self.lock().get_mut(id) {
            op.unwatched = true;
        }
    }

    /// A read of `path` (a resource id, perhaps with more segments): every unwatched,
    /// unfinished operation on that resource takes one step, as Azure would have gone on.
    pub(crate) fn advance_unwatched(&self, path: &str, world: &mut World) {
        let path = path.to_ascii_lowercase();
        let due: Vec<(String, String)> = self
            .lock()
            .iter()
            .filter(|(_, op)| op.unwatched && op.ended.is_none())
            .filter(|(_, op)| {
                op.resource.as_deref().is_some_and(|r| {
                    let r = r.to_ascii_lowercase();
                    path == r || path.starts_with(&format!("{r}/"))
                })
            })
            .map(|(id, op)| (id.clone(), op.subscription.clone()))
            .collect();
        for (id, subscription) in due {
            self.poll(&subscription, &id, world);
        }
    }

    /// How many times operation `id` was polled (`None` if there is no such operation).
    #[cfg(test)]
    pub(crate) fn polls(&self, id: &str) -> Option<u32> {
        self.lock().get(id).map(|op| op.polls)
    }

    /// Polls operation `id` of `subscription`; `None` if there is no such operation. Polls
    /// apply the operation's steps; the poll that finishes it runs its completion hook.
    pub(crate) fn poll(&self, subscription: &str, id: &str, world: &mut World) -> Option<Poll> {
        let mut ops = self.lock();
        let op = ops.get_mut(id)?;
        if !op.subscription.eq_ignore_ascii_case(subscription) {
            return None;
        }
        op.polls = op.polls.saturating_add(1);
        if op.ended.is_none() && op.ready_at.is_some_and(|at| std::time::Instant::now() < at) {
            op.polls_left = op.polls_left.saturating_sub(1);
            return Some(Poll::InProgress {
                started: op.started,
            });
        }
        if op.polls_left > 0 {
            op.polls_left -= 1;
            if let Some(step) = op.steps.pop_front() {
                step(world);
            }
            return Some(Poll::InProgress {
                started: op.started,
            });
        }
        while let Some(step) = op.steps.pop_front() {
            step(world);
        }
        if let Some(hook) = op.on_complete.take() {
            hook(world);
        }
        let ended = *op.ended.get_or_insert_with(OffsetDateTime::now_utc);
        Some(Poll::Done {
            started: op.started,
            ended,
            outcome: op.outcome.clone(),
        })
    }

    /// When operation `id` ended and whether it failed; `None` while it runs (or is unknown).
    pub(crate) fn ended(&self, id: &str) -> Option<(OffsetDateTime, bool)> {
        let ops = self.lock();
        let op = ops.get(id)?;
        Some((op.ended?, matches!(op.outcome, Outcome::Failed { .. })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Operation>> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::world::PowerState;

    #[test]
    fn answers_in_progress_then_done_and_runs_the_hook_once() {
        let registry = Registry::default();
        let mut world = World::new().vm("web-01").stopped();
        let id = registry.start(
            "sub",
            2,
            Outcome::Succeeded,
            Some(Box::new(|w: &mut World| {
                w.vms[0].power_state = PowerState::Running;
            })),
        );
        assert!(registry.poll("other-sub", &id, &mut world).is_none());
        for _ in 0..2 {
            assert!(matches!(
                registry.poll("sub", &id, &mut world),
                Some(Poll::InProgress { .. })
            ));
        }
        assert_eq!(world.vms[0].power_state, PowerState::Stopped);
        assert!(matches!(
            registry.poll("SUB", &id, &mut world),
            Some(Poll::Done {
                outcome: Outcome::Succeeded,
                ..
            })
        ));
        assert_eq!(world.vms[0].power_state, PowerState::Running);
        world.vms[0].power_state = PowerState::Stopped;
        assert!(matches!(
            registry.poll("sub", &id, &mut world),
            Some(Poll::Done { .. })
        ));
        assert_eq!(world.vms[0].power_state, PowerState::Stopped);
    }

    #[test]
    fn steps_follow_the_polls_and_the_resource_is_held_until_done() {
        let registry = Registry::default();
        let mut world = World::new().vm("web-01");
        let id = registry.begin(NewOperation {
            subscription: "sub".to_owned(),
            polls: 1,
            outcome: Outcome::Succeeded,
            name: "redeploy".to_owned(),
            resource: Some("/VM/web-01".to_owned()),
            steps: vec![
                Box::new(|w: &mut World| w.vms[0].power_state = PowerState::Starting),
                Box::new(|w: &mut World| w.vms[0].rdp_port = 1),
            ],
            on_complete: Some(Box::new(|w: &mut World| {
                w.vms[0].power_state = PowerState::Running;
            })),
            pending_view: None,
            ready_at: None,
        });
        assert_eq!(
            registry.running_on("/vm/WEB-01").as_deref(),
            Some("redeploy")
        );
        assert!(registry.poll("sub", &id, &mut world).is_some());
        assert_eq!(world.vms[0].power_state, PowerState::Starting);
        assert_eq!(world.vms[0].rdp_port, 3389);
        assert!(matches!(
            registry.poll("sub", &id, &mut world),
            Some(Poll::Done { .. })
        ));
        assert_eq!(world.vms[0].rdp_port, 1);
        assert_eq!(world.vms[0].power_state, PowerState::Running);
        assert_eq!(registry.running_on("/vm/web-01"), None);
        assert_eq!(registry.polls(&id), Some(2));
    }

    #[test]
    fn an_unwatched_operation_moves_with_reads_of_its_resource() {
        let registry = Registry::default();
        let mut world = World::new().vm("web-01").stopped();
        let id = registry.begin(NewOperation {
            subscription: "sub".to_owned(),
            polls: 1,
            outcome: Outcome::Succeeded,
            name: "start".to_owned(),
            resource: Some("/VM/web-01".to_owned()),
            steps: Vec::new(),
            on_complete: Some(Box::new(|w: &mut World| {
                w.vms[0].power_state = PowerState::Running;
            })),
            pending_view: Some(serde_json::json!({"provisioningState": "Updating"})),
            ready_at: None,
        });
        registry.advance_unwatched("/vm/web-01/instanceView", &mut world);
        assert_eq!(registry.polls(&id), Some(0), "watched: only polls move it");
        registry.unwatch(&id);
        assert!(registry.pending_view("/vm/WEB-01").is_some());
        registry.advance_unwatched("/vm/other", &mut world);
        registry.advance_unwatched("/vm/web-010", &mut world);
        registry.advance_unwatched("/vm/web-01/instanceView", &mut world);
        assert_eq!(world.vms[0].power_state, PowerState::Stopped);
        registry.advance_unwatched("/VM/web-01", &mut world);
        assert_eq!(world.vms[0].power_state, PowerState::Running);
        assert_eq!(registry.running_on("/vm/web-01"), None);
        assert_eq!(
            registry.pending_view("/vm/web-01"),
            None,
            "done: the world shows it"
        );
    }
}
