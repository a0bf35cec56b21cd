//! Just-in-time access as the war room sees it (issue 15): the report says the port is closed
//! by JIT and offers `request-jit`; `/rdp request-jit` asks for confirmation, Defender's allow
//! rule appears for the requester's address and the re-check passes from it; once the request's
//! time is up the port is closed again.

use super::*;

#[tokio::test]
async fn request_jit_opens_jit_01_for_the_requesters_address_until_its_time_is_up() {
    within(async {
        let room = Room::start(World::new().vm("jit-01").jit_protected()).await;
        let report = room.run("/rdp check jit-01").await.final_edit().await;
        assert!(
            report
                .text
                .contains("TCP 3389 from the Internet is closed by just-in-time access (Defender for Cloud policy default, rule SecurityCenter-JITRule_"),
            "{}",
            report.text
        );
        assert!(report.text.contains("No request is active."), "{}", report.text);
        assert!(
            report
                .text
                .contains("**Request just-in-time access to TCP 3389** (`request-jit`)"),
            "{}",
            report.text
        );
        assert!(
            report.text.contains("[Request just-in-time access to TCP 3389]"),
            "the fix button: {}",
            report.text
        );
        assert!(!report.text.contains("open-rdp-port"), "{}", report.text);

        // Alice (operate) asks; the request needs one person: she confirms it herself.
        let prompt = room
            .run("/rdp request-jit jit-01 from:203.0.113.9 hours:2")
            .await
            .edit_saying("[Confirm]")
            .await;
        let shown = prompt
            .text
            .lines()
            .filter(|l| !l.contains("Confirmation id"))
            .collect::<Vec<_>>()
            .join("\n");
        insta::assert_snapshot!(shown, @r"
        # Confirm: Request just-in-time access to TCP 3389 of jit-01 for 203.0.113.9, 2 hours?
        VM **jit-01** · resource group `rg-web` · subscription `11111111-1111-1111-1111-111111111111`

        • Defender for Cloud adds an allow rule for TCP 3389 from 203.0.113.9 to jit-01 ahead of its just-in-time deny, for 2 hours (policy default allows at most 3).
        • When the time is up Defender removes the rule and the port is closed again; nothing else changes.

        Requested by alice. Expires <time>.
        [Confirm] [Cancel]
        ");
        assert_eq!(
            room.sim.stats().by_route.get("POST jitNetworkAccessPolicies/initiate"),
            None,
            "nothing sent before Confirm"
        );
        let click = room.click(&prompt, "Confirm").await;
        let outcome = loop {
            let edit = click.next_edit().await;
            if edit.text.contains("succeeded") || edit.text.contains("failed") {
                break edit;
            }
        };
        assert!(
            outcome.text.contains("request-jit of jit-01 succeeded"),
            "{}",
            outcome.text
        );
        assert!(
            outcome.text.contains("nsg: fail → pass")
                && outcome.text.contains("from 203.0.113.9 is allowed by rule SecurityCenter-JITRule_"),
            "the re-check from the requester's address: {}",
            outcome.text
        );
        assert_eq!(
            room.sim.stats().by_route["POST jitNetworkAccessPolicies/initiate"],
            1
        );

        // From that address it is open, with the request named; from the Internet it is not.
        let open = room
            .run("/rdp check jit-01 from:203.0.113.9")
            .await
            .final_edit()
            .await;
        assert!(
            open.text.contains("(opened by just-in-time access)")
                && open.text.contains("Active request: ")
                && open.text.contains("opened TCP 3389 for 203.0.113.9 until "),
            "{}",
            open.text
        );

        // Two hours and a minute later Defender has removed the rule: closed again.
        room.sim
            .world()
            .update(|w| w.clock_offset_secs += 2 * 3600 + 60);
        let closed = room
            .run("/rdp check jit-01 from:203.0.113.9")
            .await
            .final_edit()
            .await;
        assert!(
            closed
                .text
                .contains("TCP 3389 from 203.0.113.9 is closed by just-in-time access"),
            "{}",
            closed.text
        );
        assert!(closed.text.contains("No request is active."), "{}", closed.text);
        room.assert_clean();
    })
    .await
}
