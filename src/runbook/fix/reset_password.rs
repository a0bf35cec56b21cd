//! `reset-password` (runbook step 5): VMAccess with the user name in `settings` and the password
//! in `protectedSettings`. The password is checked against Azure's rules before anything is sent
//! and lives only in a `SecretString`.

use super::{Facts, Plan, Refusal, Step};
use crate::diagnose::ActionId;
use secrecy::{ExposeSecret, SecretString};

/// Why a password would be refused (by us, before Azure refuses it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    #[error("the password must be 12 to 123 characters long (it has {0})")]
    Length(usize),
    #[error("the password must mix three of: lowercase, uppercase, digits, symbols (it has {0})")]
    Classes(usize),
    #[error("the password must not contain the user name")]
    ContainsUser,
    #[error("{0:?} is not a valid Windows user name (1-20 characters, none of \" / \\ [ ] : ; | = , + * ? < > @)")]
    BadUser(String),
}

/// Azure's rules for a Windows VM admin password (and a sane user name).
pub fn check_password(username: &str, password: &SecretString) -> Result<(), PasswordProblem> {
    let user = username.trim();
    let bad = |c: char| "\"/\\[]:;|=,+*?<>@".contains(c) || c.is_control();
    if user.is_empty() || user.chars().count() > 20 || user.chars().any(bad) || user.ends_with('.')
    {
        return Err(PasswordProblem::BadUser(user.to_string()));
    }
    let secret = password.expose_secret();
    let length = secret.chars().count();
    if !(12..=123).contains(&length) {
        return Err(PasswordProblem::Length(length));
    }
    let classes = [
        secret.chars().any(|c| c.is_lowercase()),
        secret.chars().any(|c| c.is_uppercase()),
        secret.chars().any(|c| c.is_ascii_digit()),
        secret.chars().any(|c| !c.is_alphanumeric()),
    ]
    .into_iter()
    .filter(|&b| b)
    .count();
    if classes < 3 {
        return Err(PasswordProblem::Classes(classes));
    }
    if secret.to_lowercase().contains(&user.to_lowercase()) {
        return Err(PasswordProblem::ContainsUser);
    }
    Ok(())
}

pub(super) fn validate(username: &str, password: &SecretString) -> Result<(), Refusal> {
    check_password(username, password).map_err(|p| Refusal {
        reason: format!("Nothing was sent: {p}."),
        instead: None,
    })
}

pub(super) fn plan(facts: &Facts, extension: String, username: &str) -> Result<Plan, Refusal> {
    super::reset_rdp_config::preconditions(facts)?;
    Ok(Plan {
        action: ActionId::ResetPassword,
        vm: facts.vm.clone(),
        headline: format!("Reset the password of {username} on {}", facts.vm.name),
        consequences: vec![
            format!("Sets a new password for the local account {username}; creates it as a local administrator if it does not exist, enables it if disabled"),
            "Does not work on domain controllers".to_string(),
            "A Microsoft Entra login extension, if used, must be re-run afterwards".to_string(),
        ],
        warnings: Vec::new(),
        step: Step::VmAccess {
            location: facts.state.location.clone(),
            extension,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(user: &str, password: &str) -> Result<(), PasswordProblem> {
        check_password(user, &SecretString::from(password.to_string()))
    }

    #[test]
    fn azure_password_rules() {
        assert_eq!(check("azureadmin", "Correct-Horse-9"), Ok(()));
        assert_eq!(
            check("azureadmin", "Short-1a"),
            Err(PasswordProblem::Length(8))
        );
        assert_eq!(
            check("azureadmin", &"Aa1-".repeat(31)),
            Err(PasswordProblem::Length(124))
        );
        assert_eq!(
            check("azureadmin", "alllowercaseletters"),
            Err(PasswordProblem::Classes(1))
        );
        assert_eq!(
            check("azureadmin", "lowercase-symbols"),
            Err(PasswordProblem::Classes(2))
        );
        assert_eq!(
            check("bob", "My-BOB-password-1"),
            Err(PasswordProblem::ContainsUser)
        );
        assert!(matches!(
            check("a/b", "Correct-Horse-9"),
            Err(PasswordProblem::BadUser(_))
        ));
        assert!(matches!(
            check("", "Correct-Horse-9"),
            Err(PasswordProblem::BadUser(_))
        ));
    }

    #[test]
    fn problems_never_quote_the_password() {
        let secret = "lowercase-symbols";
        let problem = check("azureadmin", secret).unwrap_err().to_string();
        assert!(!problem.contains(secret));
    }
}
