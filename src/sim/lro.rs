//! Long-running operations: the registry behind `Location` and `Azure-AsyncOperation` URLs.
//!
//! An operation answers "in progress" a set number of polls, then its outcome. An optional
//! completion hook changes the world when the operation finishes (e.g. a restart brings the VM
//! back to running). The registry knows nothing about URLs or JSON shapes: `arm.rs` renders them.

use super::world::World;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use time::OffsetDateTime;

/// What an operation ends with.
#[allow(dead_code)] // `Succeeded`/`Failed` are for the write operations that come next.
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

/// Changes the world when an operation finishes.
pub(crate) type OnComplete = Box<dyn FnOnce(&mut World) + Send>;

struct Operation {
    subscription: String,
    polls_left: u32,
    started: OffsetDateTime,
    ended: Option<OffsetDateTime>,
    outcome: Outcome,
    on_complete: Option<OnComplete>,
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
    pub(crate) fn start(
        &self,
        subscription: &str,
        polls: u32,
        outcome: Outcome,
        on_complete: Option<OnComplete>,
    ) -> String {
        let id = super::random_uuid();
        let op = Operation {
            subscription: subscription.to_owned(),
            polls_left: polls,
            started: OffsetDateTime::now_utc(),
            ended: None,
            outcome,
            on_complete,
        };
        self.lock().insert(id.clone(), op);
        id
    }

    /// Polls operation `id` of `subscription`; `None` if there is no such operation. The poll
    /// that finishes the operation runs its completion hook on `world`.
    pub(crate) fn poll(&self, subscription: &str, id: &str, world: &mut World) -> Option<Poll> {
        let mut ops = self.lock();
        let op = ops.get_mut(id)?;
        if !op.subscription.eq_ignore_ascii_case(subscription) {
            return None;
        }
        if op.polls_left > 0 {
            op.polls_left -= 1;
            return Some(Poll::InProgress {
                started: op.started,
            });
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
}
