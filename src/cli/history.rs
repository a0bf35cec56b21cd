//! `rdp-doctor history VM`: the VM's timeline, newest first, from the database the bot and
//! the fixes write (checks with what changed since the one before, fixes and their outcomes).

use super::error::{CliError, Done};
use super::fix::caller;
use crate::runbook::door::Door;
use crate::runbook::watch::timeline_lines;

pub async fn run(door: &Door, vm: &str, limit: u32) -> Result<Done, CliError> {
    let timeline = door.history(&caller(), vm, limit).await?;
    println!("History of {} (newest first)", timeline.vm.name);
    let lines = timeline_lines(&timeline);
    if lines.is_empty() {
        println!("Nothing recorded yet: no check, watch or fix of this VM.");
    }
    for line in lines {
        println!("{line}");
    }
    for missing in &timeline.missing {
        println!("({missing})");
    }
    Ok(Done::Clean)
}
