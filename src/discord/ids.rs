//! Every custom id the bot puts on a button, a select menu or a form, as one closed type.
//!
//! An id is written with `Display` and read back with `FromStr`, which accepts exactly the texts
//! `Display` writes: a known prefix, a known action, and keys of the exact length in lowercase
//! hex. Anything else (a garbled id, a stale one from another version, a forged one) is an
//! [`UnknownId`], which the bot refuses privately; it is never mapped to an action. The routers
//! (`discord::on_component`, `discord::on_form`) match the parsed id exhaustively, so a new kind
//! of component cannot be forgotten there.
//!
//! | id | what | answered by |
//! |---|---|---|
//! | `rdp:pick:<nonce>` | "which VM?" menu of an ambiguous name | `commands::picked` |
//! | `rdp:fix:<action>:<vm key>` | the fix button under a report | `fixes::fix_button` |
//! | `rdp:confirm:<confirmation>` / `rdp:cancel:<confirmation>` | a prompt's buttons | `fixes::confirm` / `fixes::cancel` |
//! | `rdp:pw:<vm key>` | the password form | `fixes::modal` |
//! | `rdp:guest:<vm key>` | the "Look inside the VM" button under a report | `commands::guest_button` |
//! | `rdp:sweep:stop:<nonce>` | a sweep's Cancel button | `sweep::stop` |
//! | `rdp:sweep:vm:<nonce>` | a sweep's details menu | `sweep::details` |
//! | `rdp:sweep:ask:<nonce>` | a sweep's "Another VM…" button | `sweep::ask` |
//! | `rdp:sweep:name:<nonce>` | the form that button opens | `sweep::modal` |
//!
//! Ids are restart-safe where they must be: a VM key is a hash of the VM's id (found again in the
//! VM directory) and a confirmation lives in the database; nonces point at menus kept in memory.

use crate::diagnose::ActionId;
use std::fmt;
use std::str::FromStr;

/// A 64-bit key written as 16 lowercase hex digits: a menu's or a sweep's nonce, or a VM key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u64);

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Key {
    type Err = UnknownId;
    fn from_str(text: &str) -> Result<Key, UnknownId> {
        parse_hex(text, 16)
            .and_then(|_| u64::from_str_radix(text, 16).ok())
            .map(Key)
            .ok_or(UnknownId)
    }
}

/// A confirmation's id: 128 bits written as 32 lowercase hex digits, as the store makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfirmationKey(pub u128);

impl fmt::Display for ConfirmationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for ConfirmationKey {
    type Err = UnknownId;
    fn from_str(text: &str) -> Result<ConfirmationKey, UnknownId> {
        parse_hex(text, 32)
            .and_then(|_| u128::from_str_radix(text, 16).ok())
            .map(ConfirmationKey)
            .ok_or(UnknownId)
    }
}

/// `Some` if `text` is exactly `len` lowercase hex digits (no sign, no upper case).
fn parse_hex(text: &str, len: usize) -> Option<()> {
    (text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then_some(())
}

/// What a component's or a form's custom id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentId {
    /// The "which VM?" select menu of an ambiguous name.
    Pick { nonce: Key },
    /// The fix button under a report: ask for `action` on the VM whose key is `vm`.
    Fix { action: ActionId, vm: Key },
    /// Confirm a stored fix prompt.
    Confirm(ConfirmationKey),
    /// Cancel a stored fix prompt.
    Cancel(ConfirmationKey),
    /// The password form of `reset-password` (a modal).
    Password { vm: Key },
    /// The "Look inside the VM" button under a report: the guest checks of the VM.
    Guest { vm: Key },
    /// A sweep's Cancel button.
    SweepStop { nonce: Key },
    /// A sweep's details menu (its values index the sweep's rows).
    SweepDetails { nonce: Key },
    /// A sweep's "Another VM…" button.
    SweepAsk { nonce: Key },
    /// The form that "Another VM…" opens (a modal).
    SweepName { nonce: Key },
}

/// A custom id rdp-doctor did not write. Carries nothing of the text: it is not ours to echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this button or form is not one rdp-doctor knows")]
pub struct UnknownId;

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentId::Pick { nonce } => write!(f, "rdp:pick:{nonce}"),
            ComponentId::Fix { action, vm } => write!(f, "rdp:fix:{action}:{vm}"),
            ComponentId::Confirm(id) => write!(f, "rdp:confirm:{id}"),
            ComponentId::Cancel(id) => write!(f, "rdp:cancel:{id}"),
            ComponentId::Password { vm } => write!(f, "rdp:pw:{vm}"),
            ComponentId::Guest { vm } => write!(f, "rdp:guest:{vm}"),
            ComponentId::SweepStop { nonce } => write!(f, "rdp:sweep:stop:{nonce}"),
            ComponentId::SweepDetails { nonce } => write!(f, "rdp:sweep:vm:{nonce}"),
            ComponentId::SweepAsk { nonce } => write!(f, "rdp:sweep:ask:{nonce}"),
            ComponentId::SweepName { nonce } => write!(f, "rdp:sweep:name:{nonce}"),
        }
    }
}

impl FromStr for ComponentId {
    type Err = UnknownId;
    fn from_str(text: &str) -> Result<ComponentId, UnknownId> {
        let rest = text.strip_prefix("rdp:").ok_or(UnknownId)?;
        let (kind, rest) = rest.split_once(':').ok_or(UnknownId)?;
        let id = match kind {
            "pick" => ComponentId::Pick {
                nonce: rest.parse()?,
            },
            "fix" => {
                let (action, vm) = rest.split_once(':').ok_or(UnknownId)?;
                ComponentId::Fix {
                    action: ActionId::parse(action).ok_or(UnknownId)?,
                    vm: vm.parse()?,
                }
            }
            "confirm" => ComponentId::Confirm(rest.parse()?),
            "cancel" => ComponentId::Cancel(rest.parse()?),
            "pw" => ComponentId::Password { vm: rest.parse()? },
            "guest" => ComponentId::Guest { vm: rest.parse()? },
            "sweep" => {
                let (what, nonce) = rest.split_once(':').ok_or(UnknownId)?;
                let nonce = nonce.parse()?;
                match what {
                    "stop" => ComponentId::SweepStop { nonce },
                    "vm" => ComponentId::SweepDetails { nonce },
                    "ask" => ComponentId::SweepAsk { nonce },
                    "name" => ComponentId::SweepName { nonce },
                    _ => return Err(UnknownId),
                }
            }
            _ => return Err(UnknownId),
        };
        Ok(id)
    }
}

impl ComponentId {
    /// What the id is for, without its keys (a confirmation's key is a secret): `pick`,
    /// `fix:start`, `confirm`, `password`, `sweep:stop`, …, for the interaction's log span.
    pub fn name(&self) -> String {
        match self {
            ComponentId::Pick { .. } => "pick".to_string(),
            ComponentId::Fix { action, .. } => format!("fix:{action}"),
            ComponentId::Confirm(_) => "confirm".to_string(),
            ComponentId::Cancel(_) => "cancel".to_string(),
            ComponentId::Password { .. } => "password".to_string(),
            ComponentId::Guest { .. } => "guest".to_string(),
            ComponentId::SweepStop { .. } => "sweep:stop".to_string(),
            ComponentId::SweepDetails { .. } => "sweep:details".to_string(),
            ComponentId::SweepAsk { .. } => "sweep:ask".to_string(),
            ComponentId::SweepName { .. } => "sweep:name".to_string(),
        }
    }

    /// Whether acting on this id can lead to a change of a VM (a fix prompt, a confirmation,
    /// the password form). Used by the tests' property that garbage never parses into one.
    pub fn may_write(&self) -> bool {
        match self {
            ComponentId::Fix { .. } | ComponentId::Confirm(_) | ComponentId::Password { .. } => {
                true
            }
            // Run Command reads the guest; it changes nothing.
            ComponentId::Pick { .. }
            | ComponentId::Guest { .. }
            | ComponentId::Cancel(_)
            | ComponentId::SweepStop { .. }
            | ComponentId::SweepDetails { .. }
            | ComponentId::SweepAsk { .. }
            | ComponentId::SweepName { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_id() -> impl Strategy<Value = ComponentId> {
        let key = any::<u64>().prop_map(Key);
        let confirmation = any::<u128>().prop_map(ConfirmationKey);
        let action = proptest::sample::select(ActionId::ALL.to_vec());
        prop_oneof![
            key.clone().prop_map(|nonce| ComponentId::Pick { nonce }),
            (action, key.clone()).prop_map(|(action, vm)| ComponentId::Fix { action, vm }),
            confirmation.clone().prop_map(ComponentId::Confirm),
            confirmation.prop_map(ComponentId::Cancel),
            key.clone().prop_map(|vm| ComponentId::Password { vm }),
            key.clone().prop_map(|vm| ComponentId::Guest { vm }),
            key.clone()
                .prop_map(|nonce| ComponentId::SweepStop { nonce }),
            key.clone()
                .prop_map(|nonce| ComponentId::SweepDetails { nonce }),
            key.clone()
                .prop_map(|nonce| ComponentId::SweepAsk { nonce }),
            key.prop_map(|nonce| ComponentId::SweepName { nonce }),
        ]
    }

    /// Strings near valid ids: a valid id with one character changed, dropped or added, or
    /// the case of its action and keys changed; plus text shaped like ids.
    fn near_id() -> impl Strategy<Value = String> {
        let mutated = (
            any_id(),
            any::<prop::sample::Index>(),
            any::<char>(),
            0..4u8,
        )
            .prop_map(|(id, at, c, how)| {
                let text = id.to_string();
                let mut chars: Vec<char> = text.chars().collect();
                let i = at.index(chars.len());
                match how {
                    0 => chars[i] = c,
                    1 => {
                        chars.remove(i);
                    }
                    2 => chars.insert(i, c),
                    // The keys' and the action's case: `rdp:fix:RESTART:0123…CDEF`.
                    _ => {
                        let cut = text.find(':').map_or(0, |c| c + 1);
                        let cut = text[cut..].find(':').map_or(cut, |c| cut + c + 1);
                        chars = text[..cut]
                            .chars()
                            .chain(text[cut..].to_uppercase().chars())
                            .collect();
                    }
                }
                chars.into_iter().collect::<String>()
            });
        prop_oneof![
            mutated,
            "rdp:[a-z:]{0,12}[0-9a-fA-F:-]{0,40}",
            "rdp:(fix|confirm|cancel|pw|pick|sweep|guest):[a-z:-]{0,20}[0-9a-f]{0,34}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(id in any_id()) {
            prop_assert_eq!(id.to_string().parse::<ComponentId>(), Ok(id));
        }

        /// Whatever parses is exactly the text of the id it parses to: no alias, no prefix
        /// match, no lenient case. So text that is not exactly a valid id is never a write.
        #[test]
        fn only_exact_ids_parse(text in near_id()) {
            if let Ok(id) = text.parse::<ComponentId>() {
                prop_assert_eq!(id.to_string(), text);
            }
        }

        /// Text after the prefix of a write (a fix button, a confirmation, the password form)
        /// is a write only when it is exactly what rdp-doctor writes.
        #[test]
        fn garbage_never_parses_into_a_write(
            prefix in proptest::sample::select(vec![
                "rdp:fix:", "rdp:fix:restart:", "rdp:fix:redeploy:", "rdp:fix:Restart:",
                "rdp:confirm:", "rdp:confirm: ", "rdp:pw:", "rdp:Confirm:", "rdp::confirm:",
            ]),
            tail in prop_oneof![
                "[0-9a-fA-F+ :-]{0,40}",
                "[0-9a-fA-F]{16}",
                "[0-9a-fA-F]{32}",
                "(restart|start|redeploy|Restart|reboot):[0-9a-fA-F]{15,17}",
            ],
        ) {
            let text = format!("{prefix}{tail}");
            if let Ok(id) = text.parse::<ComponentId>() {
                prop_assert!(id.may_write(), "{text:?} -> {id:?}");
                prop_assert_eq!(id.to_string(), text);
            }
        }
    }

    /// The store's confirmation ids fit a Confirm button exactly.
    #[test]
    fn the_stores_confirmation_ids_fit_a_button() {
        for _ in 0..100 {
            let id = crate::store::new_id().expect("random source");
            let key: ConfirmationKey = id.parse().expect("32 lowercase hex digits");
            assert_eq!(key.to_string(), id);
        }
    }

    #[test]
    fn known_ids_and_refusals() {
        let vm = Key(0x0123_4567_89ab_cdef);
        let fix = ComponentId::Fix {
            action: ActionId::Restart,
            vm,
        };
        assert_eq!(fix.to_string(), "rdp:fix:restart:0123456789abcdef");
        assert_eq!("rdp:fix:restart:0123456789abcdef".parse(), Ok(fix));
        let guest = ComponentId::Guest { vm };
        assert_eq!(guest.to_string(), "rdp:guest:0123456789abcdef");
        assert_eq!("rdp:guest:0123456789abcdef".parse(), Ok(guest));
        for garbled in [
            "",
            "rdp:",
            "rdp:fix:",
            "rdp:fix:restart:",
            "rdp:fix:reboot:0123456789abcdef",
            "rdp:fix:Restart:0123456789abcdef",
            "rdp:fix:restart:0123456789ABCDEF",
            "rdp:fix:restart:0123456789abcdef:",
            "rdp:fix:restart:0123456789abcde",
            "rdp:fix:restart:+123456789abcdef",
            "rdp:confirm:xyz",
            "rdp:confirm:0123456789abcdef",
            "rdp:sweep:halt:0123456789abcdef",
            "rdp:pw:0123456789abcdef ",
            "rdp:guest:",
            "rdp:guest:0123456789ABCDEF",
            "rdp:guest:0123456789abcdef:",
            "rdp:Guest:0123456789abcdef",
            "reset-rdp:web-01",
        ] {
            assert_eq!(
                garbled.parse::<ComponentId>(),
                Err(UnknownId),
                "{garbled:?}"
            );
        }
    }
}
