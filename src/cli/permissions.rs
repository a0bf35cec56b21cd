//! `rdp-doctor permissions`: which of the Azure actions the runbook needs rdp-doctor's identity
//! holds, per subscription and resource group, and the built-in role that grants what is
//! missing.

use super::{exit, fail, fix::caller};
use crate::runbook::door::Door;
use crate::runbook::permissions::{report_text, SubscriptionPermissions};

pub async fn run(door: &Door) -> u8 {
    match door.permissions(&caller()).await {
        Ok(subscriptions) => {
            print!("{}", report_text(&subscriptions));
            if subscriptions.iter().all(SubscriptionPermissions::complete) {
                exit::OK
            } else {
                exit::PROBLEMS
            }
        }
        Err(e) => fail(&e),
    }
}
