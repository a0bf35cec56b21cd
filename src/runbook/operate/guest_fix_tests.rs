//! `Arm::run_guest_fix` needs a `Confirmed`, which only this module can make: its round trip
//! against the simulator (sent once, followed to its end, the fix seen by the next read).

use super::Confirmed;
use crate::azure::{Arm, ArmSettings, VmRef};
use crate::diagnose::guest::{fix_script_marker, parse_fix, parse_read, read_script};
use crate::sim::{SimOptions, Simulator, World, DEFAULT_SUBSCRIPTION};
use std::time::Duration;

#[tokio::test]
async fn a_guest_fix_is_sent_once_followed_and_seen_by_the_next_read() {
    let world = World::new().vm("web-01").rdp_disabled();
    let secret = world.client_secret.clone();
    let options = SimOptions {
        run_command_delay: Duration::from_millis(100),
        ..SimOptions::fast()
    };
    let sim = Simulator::start("127.0.0.1:0", world, options)
        .await
        .expect("simulator");
    let url = url::Url::parse(&sim.url()).expect("url");
    let mut settings = ArmSettings::new(url.clone());
    settings.poll_interval = Duration::from_millis(10);
    let arm = Arm::connect_with_secret(settings, url, "t", "c", secret.into()).expect("arm");
    let vm = VmRef {
        name: "web-01".into(),
        resource_group: "rg-web".into(),
        subscription_id: DEFAULT_SUBSCRIPTION.into(),
        id: format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01"),
    };
    let script = vec![fix_script_marker("enable-rdp"), "# the fix".to_owned()];
    let handle = arm
        .run_guest_fix(&Confirmed { _private: () }, &vm, &script)
        .await
        .expect("accepted");
    assert!(!handle.done && handle.status_url.is_some() && handle.location.is_some());
    let output = arm.run_command_result(&handle).await.expect("followed");
    let fix = parse_fix(&output.stdout).expect("the fix line");
    assert_eq!(fix.fix, "enable-rdp");
    assert_eq!(
        fix.changed,
        vec!["fDenyTSConnections set to 0 (was 1)".to_owned()]
    );
    let read = arm.run_command(&vm, &read_script()).await.expect("reads");
    let facts = parse_read(&read.stdout).expect("facts");
    assert_eq!(facts.rdp.and_then(|r| r.deny), Some(0));
    let posts = sim
        .stats()
        .log
        .iter()
        .filter(|e| {
            e.method == "POST"
                && e.path
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .ends_with("/runCommand")
        })
        .count();
    assert_eq!(posts, 2, "one fix, one read: each sent once");
    sim.shutdown().await;
}
