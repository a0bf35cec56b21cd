//! The spans that lead a log line back to the person's command. A front end opens one span per
//! interaction (Discord) or command (the terminal) carrying its id, the person and the command;
//! every ARM request made for it opens its own span inside (`azure/span.rs`), which carries
//! Azure's request ids once the answer arrives. A log line then reads
//! `interaction{id=… person=discord:… command=check}:arm{method=GET route=… request_id=…}: …`.
//!
//! **Architecture Invariant:** no secret in a span: ids, the namespaced person and the command
//! name only (never what the person typed into a password field or a URL's query).

use tracing::Span;

/// The span of one Discord interaction: its id, the person (`discord:<user id>`) and the
/// command (`check`, a button's action, …). Enter it (`Instrument::instrument`) around
/// everything done for the interaction, spawned tasks included.
pub fn interaction_span(interaction_id: u64, person: &str, command: &str) -> Span {
    tracing::info_span!("interaction", id = interaction_id, person, command)
}

/// The span of one terminal command: a random id for this run, the person (`cli:<user>`) and
/// the subcommand.
pub fn command_span(person: &str, command: &str) -> Span {
    interaction_span(run_id(), person, command)
}

/// A random id from the operating system's CSPRNG (the process id if it fails).
fn run_id() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => u64::from(std::process::id()),
    }
}
