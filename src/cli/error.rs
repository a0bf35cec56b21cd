//! The terminal's one error type. Every command returns `Result<Done, CliError>`; helpers return
//! errors instead of printing them, and `cli::main` prints a `CliError` once (`error: …` on
//! stderr) and exits with its code (ARCHITECTURE.md, "The external contract").

use super::exit;
use crate::runbook::door::DoorError;

/// How a command that did not fail ended: exit 0, 1 or 130.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Nothing found that blocks RDP, or the command did what it was asked (exit 0).
    Clean,
    /// Problems found (exit 1).
    Problems,
    /// A sweep stopped with Ctrl-C (exit 130).
    Cancelled,
}

impl Done {
    pub fn code(self) -> u8 {
        match self {
            Done::Clean => exit::OK,
            Done::Problems => exit::PROBLEMS,
            Done::Cancelled => super::sweep::CANCELLED,
        }
    }
}

/// What went wrong, with the exit code it means.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Usage, configuration, a refusal: what the person can fix (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Azure, the network, storage or this machine failed (exit 3).
    #[error("{0}")]
    Failed(String),
    /// What the door said: exit 2 if the person can act on it (`DoorError::is_user_error`),
    /// else 3.
    #[error("{}", door_text(.0))]
    Door(#[from] DoorError),
    /// A report was printed, but not every check could run; the report says which (exit 3).
    #[error("not every check could run; the report says which")]
    Incomplete,
    /// Several errors of one command (the operations `resume` followed), one a line; the exit
    /// code is the highest of theirs.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\nerror: "))]
    Several(Vec<CliError>),
}

fn door_text(error: &DoorError) -> String {
    match error {
        DoorError::Scope {
            message,
            name_subscription: true,
        } => format!("{message} with --subscription ID"),
        other => other.to_string(),
    }
}

impl CliError {
    /// A usage or configuration error (exit 2) from anything that displays.
    pub fn usage(message: impl std::fmt::Display) -> CliError {
        CliError::Usage(message.to_string())
    }

    /// A failure of Azure, the network, storage or this machine (exit 3).
    pub fn failed(message: impl std::fmt::Display) -> CliError {
        CliError::Failed(message.to_string())
    }

    /// The exit code of ARCHITECTURE.md's contract.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Failed(_) | CliError::Incomplete => exit::AZURE,
            CliError::Door(e) if e.is_user_error() => exit::USAGE,
            CliError::Door(_) => exit::AZURE,
            CliError::Several(errors) => errors
                .iter()
                .map(CliError::code)
                .max()
                .unwrap_or(exit::AZURE),
        }
    }
}

/// The exit code of a command's result, printing its error (once) if it failed.
pub fn finish(result: Result<Done, CliError>) -> u8 {
    match result {
        Ok(done) => done.code(),
        Err(e) => {
            eprintln!("error: {e}");
            e.code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        assert_eq!(CliError::usage("x").code(), 2);
        assert_eq!(CliError::failed("x").code(), 3);
        assert_eq!(CliError::Incomplete.code(), 3);
        assert_eq!(CliError::Door(DoorError::Config("x".into())).code(), 2);
        let several = CliError::Several(vec![CliError::usage("a"), CliError::failed("b")]);
        assert_eq!(several.code(), 3);
        assert_eq!(several.to_string(), "a\nerror: b");
        assert_eq!(Done::Cancelled.code(), 130);
    }
}
