//! Authorisation: who may do what on which VMs, in which channels, and which actions need a
//! second person to confirm. Built from the `[policy]` table of the TOML config.
//!
//! Fails closed: no policy, no matching grant, an unknown role or a channel not listed all mean
//! "no". Grants only add permissions; there is no deny rule to get wrong.
//!
//! **Architecture Invariant:** pure functions over plain data. The policy does no I/O and knows
//! neither Discord nor the CLI nor ARM: front ends describe the person as an [`Actor`] and the
//! VM as a [`VmRef`].

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::azure::VmRef;
use crate::runbook::catalog::{Permission, ACTION_IDS};

/// Actions that need a second person when the config does not say otherwise: the two whose
/// consequences reach beyond one login (a new host and lost temporary disk; a hole in the NSG).
pub const DEFAULT_TWO_PERSON: [&str; 2] = ["redeploy", "open-rdp-port"];

/// How long a confirmation button stays valid when the config does not say.
pub const DEFAULT_CONFIRM_TTL_SECS: u64 = 300;

/// The `[policy]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Discord channel ids where the bot answers. Empty or absent: nowhere (fail closed).
    #[serde(default)]
    pub channels: Vec<DiscordId>,
    /// Actions whose confirmer must be someone other than the requester. Absent:
    /// `["redeploy", "open-rdp-port"]`; `[]` turns the rule off.
    pub two_person: Option<Vec<String>>,
    /// Seconds a confirmation stays valid (default 300).
    pub confirm_ttl_secs: Option<u64>,
    /// Who gets which permission where: one `[[policy.grant]]` table each.
    #[serde(default, rename = "grant")]
    pub grants: Vec<GrantConfig>,
}

impl PolicyConfig {
    /// The simulator's training policy: `cli_user` may do everything, everywhere.
    pub fn demo(cli_user: &str) -> PolicyConfig {
        PolicyConfig {
            grants: vec![GrantConfig {
                cli_user: Some(cli_user.to_string()),
                level: Some(Permission::Admin),
                scope: Some("*".to_string()),
                ..GrantConfig::default()
            }],
            // One person at one terminal: nobody else could confirm.
            two_person: Some(Vec::new()),
            ..PolicyConfig::default()
        }
    }
}

/// One `[[policy.grant]]`: a principal (exactly one of `discord_role`, `discord_role_id`,
/// `cli_user`), a level and a scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// A Discord role name, compared exactly. Anyone who may manage roles can create a role with
    /// any name; prefer `discord_role_id`.
    pub discord_role: Option<String>,
    /// A Discord role id (a number, or a string of digits).
    pub discord_role_id: Option<DiscordId>,
    /// A user of the terminal front end: `$USER`, or the name given with `--as`.
    pub cli_user: Option<String>,
    /// `read`, `operate` or `admin`; each includes the ones before it.
    pub level: Option<Permission>,
    /// Which VMs: `"*"`, `"subscription/<id>"` or `"subscription/<id>/resourceGroup/<name>"`
    /// (ids and names compared ignoring case).
    pub scope: Option<String>,
}

/// A Discord snowflake, written in TOML as a number or a string of digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordId(pub String);

impl DiscordId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DiscordId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DiscordId, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DiscordId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Discord id (a number or a string of digits)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DiscordId, E> {
                Ok(DiscordId(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DiscordId, E> {
                u64::try_from(v)
                    .map(|v| DiscordId(v.to_string()))
                    .map_err(|_| E::custom("a Discord id cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DiscordId, E> {
                Ok(DiscordId(v.trim().to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The person asking, as the front end knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Discord: the user id. Terminal: the user name (`$USER` or `--as`).
    pub id: String,
    /// For messages and the audit log.
    pub name: String,
    /// Discord: the ids of the member's roles in the guild. Empty for the terminal.
    ///
    /// Kept apart from `role_names` so that a role *named* like another role's id cannot pass
    /// for it.
    pub role_ids: Vec<String>,
    /// Discord: the names of the member's roles. Empty for the terminal.
    pub role_names: Vec<String>,
    pub source: ActorSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorSource {
    Discord,
    Cli,
}

/// A checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    grants: Vec<Grant>,
    channels: Vec<String>,
    two_person: Vec<String>,
    confirm_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    principal: Principal,
    level: Permission,
    scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    DiscordRoleName(String),
    DiscordRoleId(String),
    CliUser(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    All,
    Subscription(String),
    ResourceGroup {
        subscription: String,
        resource_group: String,
    },
}

/// Why an actor may not do something, written for the person who was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "you need the `{}` permission on {scope} ({})",
    permission_name(.needed),
    have_phrase(.have)
)]
pub struct Denial {
    pub needed: Permission,
    /// The VM's narrowest scope, e.g. `subscription/1111.../resourceGroup/rg-web`.
    pub scope: String,
    pub have: Option<Permission>,
}

/// A config the policy refuses to run with. Grants are numbered from 1, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("[[policy.grant]] number {number}: `{field}`: {message}")]
    Grant {
        number: usize,
        field: &'static str,
        message: String,
    },
    #[error("[policy] `{field}`: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
}

impl Policy {
    /// Check `config`. `None` gives a policy that denies everything.
    pub fn new(config: Option<&PolicyConfig>) -> Result<Policy, PolicyError> {
        let default = PolicyConfig::default();
        let config = config.unwrap_or(&default);

        let mut channels = Vec::new();
        for id in &config.channels {
            channels.push(check_discord_id(id).map_err(|message| PolicyError::Field {
                field: "channels",
                message,
            })?);
        }

        let two_person = match &config.two_person {
            None => DEFAULT_TWO_PERSON.iter().map(|s| s.to_string()).collect(),
            Some(actions) => {
                for action in actions {
                    if !ACTION_IDS.contains(&action.as_str()) {
                        return Err(PolicyError::Field {
                            field: "two_person",
                            message: format!(
                                "unknown action {action:?}; the actions are {}",
                                ACTION_IDS.join(", ")
                            ),
                        });
                    }
                }
                actions.clone()
            }
        };

        let confirm_ttl = match config.confirm_ttl_secs {
            None => Duration::from_secs(DEFAULT_CONFIRM_TTL_SECS),
            Some(0) => {
                return Err(PolicyError::Field {
                    field: "confirm_ttl_secs",
                    message: "0 would expire every confirmation at once; the default is 300"
                        .to_string(),
                })
            }
            Some(secs) => Duration::from_secs(secs),
        };

        let grants = config
            .grants
            .iter()
            .enumerate()
            .map(|(i, grant)| {
                check_grant(grant).map_err(|(field, message)| PolicyError::Grant {
                    number: i + 1,
                    field,
                    message,
                })
            })
            .collect::<Result<_, _>>()?;

        Ok(Policy {
            grants,
            channels,
            two_person,
            confirm_ttl,
        })
    }

    /// The highest level any of the actor's grants gives on this VM; `None` if no grant applies.
    pub fn level(&self, actor: &Actor, vm: &VmRef) -> Option<Permission> {
        self.grants
            .iter()
            .filter(|g| g.principal.matches(actor) && g.scope.covers(vm))
            .map(|g| g.level)
            .max()
    }

    /// `Ok` if the actor has at least `needed` on the VM.
    pub fn authorize(&self, actor: &Actor, needed: Permission, vm: &VmRef) -> Result<(), Denial> {
        let have = self.level(actor, vm);
        if have.is_some_and(|have| have >= needed) {
            return Ok(());
        }
        Err(Denial {
            needed,
            scope: format!(
                "subscription/{}/resourceGroup/{}",
                vm.subscription_id, vm.resource_group
            ),
            have,
        })
    }

    /// Whether the bot answers in this Discord channel.
    /// Whether the policy names any channel (without a policy, read-only commands answer
    /// anywhere; fixes are denied regardless).
    pub fn has_channels(&self) -> bool {
        !self.channels.is_empty()
    }

    pub fn channel_allowed(&self, channel_id: &str) -> bool {
        self.channels.iter().any(|c| c == channel_id.trim())
    }

    /// Whether the confirmer of `action` must be someone other than its requester.
    pub fn two_person(&self, action: &str) -> bool {
        self.two_person.iter().any(|a| a == action)
    }

    /// How long a confirmation stays valid.
    pub fn confirm_ttl(&self) -> Duration {
        self.confirm_ttl
    }
}

impl Principal {
    fn matches(&self, actor: &Actor) -> bool {
        match (self, actor.source) {
            (Principal::DiscordRoleName(name), ActorSource::Discord) => {
                actor.role_names.iter().any(|r| r == name)
            }
            (Principal::DiscordRoleId(id), ActorSource::Discord) => {
                actor.role_ids.iter().any(|r| r == id)
            }
            (Principal::CliUser(user), ActorSource::Cli) => actor.id == *user,
            _ => false,
        }
    }
}

impl Scope {
    fn parse(text: &str) -> Result<Scope, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Scope::All);
        }
        let expected = || {
            format!(
                "expected \"*\", \"subscription/<id>\" or \
                 \"subscription/<id>/resourceGroup/<name>\", found {text:?}"
            )
        };
        let parts: Vec<&str> = text.trim_start_matches('/').split('/').collect();
        let is = |part: &str, singular: &str| {
            part.eq_ignore_ascii_case(singular)
                || part.eq_ignore_ascii_case(&format!("{singular}s"))
        };
        let valid = |part: &str| !part.is_empty() && !part.chars().any(char::is_whitespace);
        match parts.as_slice() {
            [s, sub] if is(s, "subscription") && valid(sub) => {
                Ok(Scope::Subscription(sub.to_string()))
            }
            [s, sub, r, rg] if is(s, "subscription") && is(r, "resourceGroup") => {
                if valid(sub) && valid(rg) {
                    Ok(Scope::ResourceGroup {
                        subscription: sub.to_string(),
                        resource_group: rg.to_string(),
                    })
                } else {
                    Err(expected())
                }
            }
            _ => Err(expected()),
        }
    }

    fn covers(&self, vm: &VmRef) -> bool {
        match self {
            Scope::All => true,
            Scope::Subscription(sub) => sub.eq_ignore_ascii_case(&vm.subscription_id),
            Scope::ResourceGroup {
                subscription,
                resource_group,
            } => {
                subscription.eq_ignore_ascii_case(&vm.subscription_id)
                    && resource_group.eq_ignore_ascii_case(&vm.resource_group)
            }
        }
    }
}

fn check_grant(grant: &GrantConfig) -> Result<Grant, (&'static str, String)> {
    let named =
        |field: &'static str, value: &Option<String>| -> Result<_, (&'static str, String)> {
            match value {
                Some(v) if v.trim().is_empty() => Err((field, "must not be empty".to_string())),
                Some(v) => Ok(Some(v.trim().to_string())),
                None => Ok(None),
            }
        };
    let mut principals = Vec::new();
    if let Some(name) = named("discord_role", &grant.discord_role)? {
        principals.push(("discord_role", Principal::DiscordRoleName(name)));
    }
    if let Some(id) = &grant.discord_role_id {
        let id = check_discord_id(id).map_err(|m| ("discord_role_id", m))?;
        principals.push(("discord_role_id", Principal::DiscordRoleId(id)));
    }
    if let Some(user) = named("cli_user", &grant.cli_user)? {
        principals.push(("cli_user", Principal::CliUser(user)));
    }
    let principal = match principals.len() {
        1 => principals.remove(0).1,
        0 => {
            return Err((
                "discord_role",
                "a grant needs exactly one of `discord_role`, `discord_role_id` or `cli_user`; \
                 found none"
                    .to_string(),
            ))
        }
        _ => {
            let fields: Vec<String> = principals.iter().map(|(f, _)| format!("`{f}`")).collect();
            return Err((
                principals[1].0,
                format!(
                    "a grant needs exactly one of `discord_role`, `discord_role_id` or \
                     `cli_user`; found {}: split it into one grant each",
                    fields.join(" and ")
                ),
            ));
        }
    };
    let level = grant.level.ok_or((
        "level",
        "missing: say `read`, `operate` or `admin`".to_string(),
    ))?;
    let scope = match &grant.scope {
        None => {
            return Err((
                "scope",
                "missing: say \"*\" for every VM, or \"subscription/<id>\" or \
                 \"subscription/<id>/resourceGroup/<name>\""
                    .to_string(),
            ))
        }
        Some(text) => Scope::parse(text).map_err(|m| ("scope", m))?,
    };
    Ok(Grant {
        principal,
        level,
        scope,
    })
}

fn check_discord_id(id: &DiscordId) -> Result<String, String> {
    let id = id.as_str().trim();
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(format!("{id:?} is not a Discord id (digits only)"))
    }
}

/// The word the config file uses for a level.
pub fn permission_name(p: &Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::Operate => "operate",
        Permission::Admin => "admin",
    }
}

fn have_phrase(have: &Option<Permission>) -> String {
    match have {
        Some(p) => format!("you have `{}`", permission_name(p)),
        None => "you have none".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    const SUB: &str = "11111111-1111-1111-1111-111111111111";
    const OTHER_SUB: &str = "22222222-2222-2222-2222-222222222222";

    fn vm(subscription: &str, rg: &str, name: &str) -> VmRef {
        VmRef {
            name: name.to_string(),
            resource_group: rg.to_string(),
            subscription_id: subscription.to_string(),
            id: format!(
                "/subscriptions/{subscription}/resourceGroups/{rg}/providers/\
                 Microsoft.Compute/virtualMachines/{name}"
            ),
        }
    }

    fn web() -> VmRef {
        vm(SUB, "rg-web", "web-01")
    }

    fn discord(id: &str, role_ids: &[&str], role_names: &[&str]) -> Actor {
        Actor {
            id: id.to_string(),
            name: format!("{id}-name"),
            role_ids: role_ids.iter().map(|s| s.to_string()).collect(),
            role_names: role_names.iter().map(|s| s.to_string()).collect(),
            source: ActorSource::Discord,
        }
    }

    fn cli(user: &str) -> Actor {
        Actor {
            id: user.to_string(),
            name: user.to_string(),
            role_ids: Vec::new(),
            role_names: Vec::new(),
            source: ActorSource::Cli,
        }
    }

    /// Parse `toml` as a whole config file (so the `[policy]` hook in `FileConfig` is exercised),
    /// build the policy and check `actor` asking for `needed` on `vm`: `expect` is `"ok"`, the
    /// denial as shown to the person, or `"config: "` + the configuration error.
    fn check(toml: &str, actor: &Actor, vm: &VmRef, needed: Permission, expect: &str) {
        let got = match FileConfig::parse(toml, "test.toml") {
            Err(e) => format!("config: {e}"),
            Ok(file) => match Policy::new(file.policy.as_ref()) {
                Err(e) => format!("config: {e}"),
                Ok(policy) => match policy.authorize(actor, needed, vm) {
                    Ok(()) => "ok".to_string(),
                    Err(denial) => denial.to_string(),
                },
            },
        };
        assert_eq!(
            got, expect,
            "\n{toml}\nactor: {actor:?}\nneeded: {needed:?}"
        );
    }

    fn policy(toml: &str) -> Result<Policy, String> {
        let file = FileConfig::parse(toml, "test.toml").map_err(|e| e.to_string())?;
        Policy::new(file.policy.as_ref()).map_err(|e| e.to_string())
    }

    const ONCALL_OPERATE_ALL: &str = r#"
[policy]
channels = ["123"]
[[policy.grant]]
discord_role = "oncall"
level = "operate"
scope = "*"
"#;

    #[test]
    fn each_level_includes_the_ones_below() {
        let oncall = discord("u1", &[], &["oncall"]);
        let need = "you need the `admin` permission on \
                    subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web";
        check(ONCALL_OPERATE_ALL, &oncall, &web(), Permission::Read, "ok");
        check(
            ONCALL_OPERATE_ALL,
            &oncall,
            &web(),
            Permission::Operate,
            "ok",
        );
        check(
            ONCALL_OPERATE_ALL,
            &oncall,
            &web(),
            Permission::Admin,
            &format!("{need} (you have `operate`)"),
        );
        let levels = |level: &str| {
            format!(
                "[policy]\n[[policy.grant]]\ncli_user = \"alice\"\nlevel = \"{level}\"\nscope = \"*\"\n"
            )
        };
        check(
            &levels("admin"),
            &cli("alice"),
            &web(),
            Permission::Admin,
            "ok",
        );
        check(
            &levels("read"),
            &cli("alice"),
            &web(),
            Permission::Operate,
            "you need the `operate` permission on \
             subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web \
             (you have `read`)",
        );
    }

    #[test]
    fn the_highest_matching_grant_wins() {
        let toml = format!(
            r#"
[policy]
[[policy.grant]]
discord_role = "everyone"
level = "read"
scope = "*"
[[policy.grant]]
discord_role_id = 111
level = "admin"
scope = "subscription/{SUB}/resourceGroup/rg-web"
[[policy.grant]]
discord_role = "oncall"
level = "operate"
scope = "subscription/{SUB}"
"#
        );
        let p = policy(&toml).unwrap();
        let both = discord("u1", &["111"], &["everyone", "oncall"]);
        assert_eq!(p.level(&both, &web()), Some(Permission::Admin));
        assert_eq!(
            p.level(&both, &vm(SUB, "rg-db", "db-01")),
            Some(Permission::Operate)
        );
        assert_eq!(
            p.level(&both, &vm(OTHER_SUB, "rg-web", "web-02")),
            Some(Permission::Read)
        );
        assert_eq!(p.level(&discord("u2", &[], &[]), &web()), None);
    }

    #[test]
    fn scopes() {
        let grant = |scope: &str| {
            format!(
                "[policy]\n[[policy.grant]]\ncli_user = \"alice\"\nlevel = \"operate\"\nscope = \"{scope}\"\n"
            )
        };
        let alice = cli("alice");
        let op = Permission::Operate;
        let denied = |sub: &str, rg: &str| {
            format!(
                "you need the `operate` permission on subscription/{sub}/resourceGroup/{rg} \
                 (you have none)"
            )
        };
        check(&grant("*"), &alice, &web(), op, "ok");
        check(
            &grant(&format!("subscription/{SUB}")),
            &alice,
            &web(),
            op,
            "ok",
        );
        // ARM's own spelling and case are accepted; ids and names compare ignoring case.
        check(
            &grant(&format!(
                "/subscriptions/{}/resourceGroups/RG-WEB",
                SUB.to_uppercase()
            )),
            &alice,
            &web(),
            op,
            "ok",
        );
        check(
            &grant(&format!("subscription/{SUB}/resourceGroup/rg-web")),
            &alice,
            &vm(SUB, "Rg-Web", "web-01"),
            op,
            "ok",
        );
        check(
            &grant(&format!("subscription/{SUB}/resourceGroup/rg-web")),
            &alice,
            &vm(SUB, "rg-db", "db-01"),
            op,
            &denied(SUB, "rg-db"),
        );
        check(
            &grant(&format!("subscription/{SUB}")),
            &alice,
            &vm(OTHER_SUB, "rg-web", "web-01"),
            op,
            &denied(OTHER_SUB, "rg-web"),
        );
        check(
            &grant(&format!("subscription/{SUB}/resourceGroup/rg-web")),
            &alice,
            &vm(OTHER_SUB, "rg-web", "web-01"),
            op,
            &denied(OTHER_SUB, "rg-web"),
        );
    }

    #[test]
    fn principals() {
        let toml = r#"
[policy]
[[policy.grant]]
discord_role = "oncall"
level = "operate"
scope = "*"
[[policy.grant]]
discord_role_id = "111"
level = "admin"
scope = "*"
[[policy.grant]]
cli_user = "alice"
level = "admin"
scope = "*"
"#;
        let none = "you need the `read` permission on \
                    subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web \
                    (you have none)";
        let admin = Permission::Admin;
        let read = Permission::Read;
        // By name and by id.
        check(
            toml,
            &discord("u1", &["999"], &["oncall"]),
            &web(),
            Permission::Operate,
            "ok",
        );
        check(toml, &discord("u1", &["111"], &[]), &web(), admin, "ok");
        // Role names compare exactly; an unknown role gives nothing.
        check(toml, &discord("u1", &[], &["OnCall"]), &web(), read, none);
        check(
            toml,
            &discord("u1", &["222"], &["visitors"]),
            &web(),
            read,
            none,
        );
        // A role *named* like the admin role's id is not that role.
        check(toml, &discord("u1", &[], &["111"]), &web(), read, none);
        // CLI users match the terminal only, and Discord roles never match the terminal.
        check(toml, &cli("alice"), &web(), admin, "ok");
        check(toml, &cli("bob"), &web(), read, none);
        check(toml, &discord("alice", &[], &[]), &web(), read, none);
        let mut cli_with_roles = cli("carol");
        cli_with_roles.role_names = vec!["oncall".into()];
        cli_with_roles.role_ids = vec!["111".into()];
        check(toml, &cli_with_roles, &web(), read, none);
    }

    #[test]
    fn no_policy_denies_everything() {
        let none = "you need the `read` permission on \
                    subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web \
                    (you have none)";
        check("", &cli("alice"), &web(), Permission::Read, none);
        check("[policy]\n", &cli("alice"), &web(), Permission::Read, none);
        let p = Policy::new(None).unwrap();
        assert!(!p.channel_allowed("123"));
        assert_eq!(p.level(&discord("u", &["1"], &["oncall"]), &web()), None);
        assert!(p.two_person("redeploy"));
        assert_eq!(p.confirm_ttl(), Duration::from_secs(300));
    }

    #[test]
    fn invalid_configs_name_the_grant_and_the_field() {
        let a = cli("alice");
        let r = Permission::Read;
        let grant = |body: &str| {
            format!("[policy]\n[[policy.grant]]\ncli_user = \"x\"\nlevel = \"read\"\nscope = \"*\"\n[[policy.grant]]\n{body}\n")
        };
        check(
            &grant("discord_role = \"a\"\ncli_user = \"b\"\nlevel = \"read\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: [[policy.grant]] number 2: `cli_user`: a grant needs exactly one of \
             `discord_role`, `discord_role_id` or `cli_user`; found `discord_role` and \
             `cli_user`: split it into one grant each",
        );
        check(
            &grant("level = \"read\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: [[policy.grant]] number 2: `discord_role`: a grant needs exactly one of \
             `discord_role`, `discord_role_id` or `cli_user`; found none",
        );
        check(
            &grant("cli_user = \"b\"\nlevel = \"read\"\nscope = \"subscription/\""),
            &a,
            &web(),
            r,
            "config: [[policy.grant]] number 2: `scope`: expected \"*\", \"subscription/<id>\" \
             or \"subscription/<id>/resourceGroup/<name>\", found \"subscription/\"",
        );
        check(
            &grant("cli_user = \"b\"\nlevel = \"read\"\nscope = \"resourceGroup/rg-web\""),
            &a,
            &web(),
            r,
            "config: [[policy.grant]] number 2: `scope`: expected \"*\", \"subscription/<id>\" \
             or \"subscription/<id>/resourceGroup/<name>\", found \"resourceGroup/rg-web\"",
        );
        check(
            &grant("cli_user = \"b\"\nlevel = \"read\""),
            &a,
            &web(),
            r,
            "config: [[policy.grant]] number 2: `scope`: missing: say \"*\" for every VM, or \
             \"subscription/<id>\" or \"subscription/<id>/resourceGroup/<name>\"",
        );
        check(
            &grant("cli_user = \"b\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: [[policy.grant]] number 2: `level`: missing: say `read`, `operate` or `admin`",
        );
        check(
            &grant("discord_role_id = \"oncall\"\nlevel = \"read\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: [[policy.grant]] number 2: `discord_role_id`: \"oncall\" is not a Discord \
             id (digits only)",
        );
        check(
            &grant("cli_user = \"  \"\nlevel = \"read\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: [[policy.grant]] number 2: `cli_user`: must not be empty",
        );
        // Unknown fields and levels are caught by the TOML parser, with the line.
        let err = policy(&grant(
            "cli_user = \"b\"\nlevel = \"superuser\"\nscope = \"*\"",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("test.toml:8:") && err.contains("superuser"),
            "{err}"
        );
        let err = policy(&grant(
            "cli_user = \"b\"\nrole = \"x\"\nlevel = \"read\"\nscope = \"*\"",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("test.toml:8:") && err.contains("role"),
            "{err}"
        );
        let err = policy("[policy]\nchannel = [\"1\"]\n").unwrap_err();
        assert!(
            err.starts_with("test.toml:2:") && err.contains("channel"),
            "{err}"
        );

        assert_eq!(
            policy("[policy]\ntwo_person = [\"redeploy\", \"reboot\"]\n").unwrap_err(),
            "[policy] `two_person`: unknown action \"reboot\"; the actions are \
             reset-rdp-config, open-rdp-port, reset-password, start, restart, redeploy"
        );
        assert_eq!(
            policy("[policy]\nconfirm_ttl_secs = 0\n").unwrap_err(),
            "[policy] `confirm_ttl_secs`: 0 would expire every confirmation at once; the \
             default is 300"
        );
        assert_eq!(
            policy("[policy]\nchannels = [\"general\"]\n").unwrap_err(),
            "[policy] `channels`: \"general\" is not a Discord id (digits only)"
        );
    }

    #[test]
    fn channels_fail_closed() {
        let p = policy(ONCALL_OPERATE_ALL).unwrap();
        assert!(p.channel_allowed("123"));
        assert!(!p.channel_allowed("124"));
        assert!(!p.channel_allowed(""));
        let p = policy("[policy]\nchannels = [123456789012345678, \"42\"]\n").unwrap();
        assert!(p.channel_allowed("123456789012345678"));
        assert!(p.channel_allowed("42"));
        let p = policy("[policy]\n").unwrap();
        assert!(!p.channel_allowed("123"));
    }

    #[test]
    fn two_person_and_ttl_defaults() {
        let p = policy("[policy]\n").unwrap();
        for action in ACTION_IDS {
            assert_eq!(
                p.two_person(action),
                DEFAULT_TWO_PERSON.contains(&action),
                "{action}"
            );
        }
        assert_eq!(p.confirm_ttl(), Duration::from_secs(300));

        let p = policy("[policy]\ntwo_person = []\nconfirm_ttl_secs = 60\n").unwrap();
        assert!(!p.two_person("redeploy"));
        assert_eq!(p.confirm_ttl(), Duration::from_secs(60));

        let p = policy("[policy]\ntwo_person = [\"restart\"]\n").unwrap();
        assert!(p.two_person("restart"));
        assert!(!p.two_person("redeploy"));
    }
}
