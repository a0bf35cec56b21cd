//! `rdp-doctor permissions`: which of the Azure actions the runbook needs rdp-doctor's identity
//! holds, per subscription and resource group, and the built-in role that grants what is
//! missing.

use super::{fix::caller, CliError, Done};
use crate::runbook::door::Door;
use crate::runbook::permissions::{report_text, SubscriptionPermissions};

pub async fn run(door: &Door) -> Result<Done, CliError> {
    let subscriptions = door.permissions(&caller()).await?;
    print!("{}", report_text(&subscriptions));
    if subscriptions.iter().all(SubscriptionPermissions::complete) {
        Ok(Done::Clean)
    } else {
        Ok(Done::Problems)
    }
}
