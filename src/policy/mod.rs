//! Authorisation: who may do what on which VMs, from where, and which actions need a second
//! person to confirm. Built from the `[policy]` table of the TOML config.
//!
//! Fails closed: no matching grant, an unknown role, a channel or guild not listed all mean "no".
//! Grants only add permissions; there is no deny rule to get wrong.
//!
//! People are namespaced identities: `discord:<user id>` and `cli:<operating-system user>`.
//! `[[policy.person]]` ties one person's identities together, so nobody is their own second
//! person across front ends.
//!
//! Without a `[policy]` table the terminal may read (whoever runs it already holds the Azure
//! credential) and may not fix; Discord is served nowhere.
//!
//! **Architecture Invariant:** pure functions over plain data. The policy does no I/O and knows
//! neither Discord nor the CLI nor ARM: front ends describe the person as an [`Actor`] and where
//! they are as a [`Place`].

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::diagnose::ActionId;
use crate::domain::Permission;
use crate::domain::{ResourceId, VmRef};

/// Actions that need a second person when the config does not say otherwise: the two whose
/// consequences reach beyond one login (a new host and lost temporary disk; a hole in the NSG).
pub const DEFAULT_TWO_PERSON: [ActionId; 2] = [ActionId::Redeploy, ActionId::OpenRdpPort];

/// How long a confirmation button stays valid when the config does not say.
pub const DEFAULT_CONFIRM_TTL_SECS: u64 = 300;

/// The `[policy]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Discord channel ids where the bot answers. Empty or absent: nowhere (fail closed).
    #[serde(default)]
    pub channels: Vec<DiscordId>,
    /// Discord guild (server) ids the bot serves, besides `DISCORD_GUILD_ID`. Interactions from
    /// any other guild, and direct messages, are refused.
    #[serde(default)]
    pub guilds: Vec<DiscordId>,
    /// Actions whose confirmer must be someone other than the requester. Absent:
    /// `["redeploy", "open-rdp-port"]`; `[]` turns the rule off.
    pub two_person: Option<Vec<ActionId>>,
    /// Seconds a confirmation stays valid (default 300).
    pub confirm_ttl_secs: Option<u64>,
    /// The level `sweep` needs (default: what `commands/rdp.toml` says, `operate`).
    pub sweep_level: Option<Permission>,
    /// Who gets which permission where: one `[[policy.grant]]` table each.
    #[serde(default, rename = "grant")]
    pub grants: Vec<GrantConfig>,
    /// One person's identities across front ends: one `[[policy.person]]` table each.
    #[serde(default, rename = "person")]
    pub persons: Vec<PersonConfig>,
}

impl PolicyConfig {
    /// The simulator's training policy: the person at the terminal may do everything.
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

/// One `[[policy.grant]]`: a principal (exactly one of `discord_role_id`, `discord_user_id`,
/// `cli_user`, `alerts = true`), a level and a scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// No longer accepted: a role *name* can be created by anyone who manages roles, in any
    /// guild. Kept in the shape only so the error can say what to write instead.
    pub discord_role: Option<String>,
    /// A Discord role id (a number, or a string of digits).
    pub discord_role_id: Option<DiscordId>,
    /// One Discord user, by id.
    pub discord_user_id: Option<DiscordId>,
    /// A user of the terminal front end: the operating-system account that runs rdp-doctor.
    pub cli_user: Option<String>,
    /// `true`: Azure Monitor's alerts (`POST /alerts/azure-monitor`), the checks rdp-doctor runs
    /// on its own when an alert names a VM. Without such a grant on a VM's scope, alerts about
    /// it are not checked.
    pub alerts: Option<bool>,
    /// `read`, `operate` or `admin`; each includes the ones before it.
    pub level: Option<Permission>,
    /// Which VMs: `"*"`, `"subscription/<id>"` or `"subscription/<id>/resourceGroup/<name>"`
    /// (ids and names compared ignoring case).
    pub scope: Option<String>,
}

/// One `[[policy.person]]`: the identities of one person, e.g.
/// `identities = ["discord:123456789012345678", "cli:alice"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    /// How the audit log and the two-person rule name them.
    pub name: String,
    pub identities: Vec<String>,
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
    /// Namespaced: `discord:<user id>` or `cli:<operating-system user>`.
    pub id: String,
    /// For messages and the audit log.
    pub name: String,
    /// Discord: the ids of the member's roles in the guild the interaction came from. Empty for
    /// the terminal.
    pub role_ids: Vec<String>,
    pub source: ActorSource,
}

impl Actor {
    /// A Discord user with their roles in the guild the interaction came from.
    pub fn discord(user_id: u64, name: &str, role_ids: Vec<String>) -> Actor {
        Actor {
            id: format!("discord:{user_id}"),
            name: name.to_string(),
            role_ids,
            source: ActorSource::Discord,
        }
    }

    /// The operating-system account at the terminal.
    pub fn terminal(os_user: &str) -> Actor {
        Actor {
            id: format!("cli:{os_user}"),
            name: os_user.to_string(),
            role_ids: Vec::new(),
            source: ActorSource::Cli,
        }
    }

    /// Azure Monitor's alerts: the checks the webhook starts (authorised by `alerts = true`
    /// grants).
    pub fn alerts() -> Actor {
        Actor {
            id: "alerts:azure-monitor".to_string(),
            name: "Azure Monitor alert".to_string(),
            role_ids: Vec::new(),
            source: ActorSource::Alerts,
        }
    }

    /// The Discord user id, for a Discord actor.
    pub fn discord_user(&self) -> Option<&str> {
        self.id.strip_prefix("discord:")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorSource {
    Discord,
    Cli,
    /// Azure Monitor's alerts webhook.
    Alerts,
}

/// Where a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A terminal on a machine that holds the Azure credential.
    Terminal,
    /// A Discord interaction: its guild (`None` in a direct message) and channel.
    Discord {
        guild: Option<String>,
        channel: String,
    },
    /// An Azure Monitor alert, posted in the channel `[[alerts.route]]` maps its VM's scope to.
    Alerts { channel: String },
}

/// What a policy is about: the subscription and resource group of a VM or of another resource
/// (the NSG a rule goes into).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub subscription_id: String,
    pub resource_group: String,
}

impl Target {
    pub fn of_vm(vm: &VmRef) -> Target {
        Target {
            subscription_id: vm.subscription_id.clone(),
            resource_group: vm.resource_group.clone(),
        }
    }

    pub fn of_resource(id: &ResourceId) -> Target {
        Target {
            subscription_id: id.subscription_id.clone(),
            resource_group: id.resource_group.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subscription/{}/resourceGroup/{}",
            self.subscription_id, self.resource_group
        )
    }
}

/// A checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// A `[policy]` table was given.
    configured: bool,
    grants: Vec<Grant>,
    channels: Vec<String>,
    guilds: Vec<String>,
    two_person: Vec<ActionId>,
    confirm_ttl: Duration,
    sweep_level: Option<Permission>,
    /// `(identity, person name)`.
    persons: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    principal: Principal,
    level: Permission,
    scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    DiscordRoleId(String),
    DiscordUserId(String),
    CliUser(String),
    Alerts,
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
    /// The narrowest scope, e.g. `subscription/1111.../resourceGroup/rg-web`.
    pub scope: String,
    pub have: Option<Permission>,
}

/// Why rdp-doctor does not serve a place at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error("rdp-doctor has no [policy] table in its config, so it serves nobody in Discord. An administrator adds one with the channels and grants.")]
    NoPolicy,
    #[error("rdp-doctor does not answer direct messages: use it in your team's channel.")]
    DirectMessage,
    #[error("rdp-doctor does not serve this server.")]
    Guild,
    #[error("rdp-doctor only answers in the channels its policy names.")]
    Channel,
}

/// A config the policy refuses to run with. Grants are numbered from 1, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("[[policy.grant]] number {number}: `{field}`: {problem}")]
    Grant {
        number: usize,
        field: &'static str,
        problem: Invalid,
    },
    #[error("[[policy.person]] number {number}: {problem}")]
    Person { number: usize, problem: Invalid },
    #[error("[policy] `{field}`: {problem}")]
    Field {
        field: &'static str,
        problem: Invalid,
    },
}

impl Policy {
    /// Check `config`. `None`: no `[policy]` table (the terminal may read; Discord is served
    /// nowhere).
    pub fn new(config: Option<&PolicyConfig>) -> Result<Policy, PolicyError> {
        let default = PolicyConfig::default();
        let configured = config.is_some();
        let config = config.unwrap_or(&default);

        let ids = |field: &'static str, list: &[DiscordId]| {
            list.iter()
                .map(|id| {
                    check_discord_id(id).map_err(|problem| PolicyError::Field { field, problem })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let channels = ids("channels", &config.channels)?;
        let guilds = ids("guilds", &config.guilds)?;

        let two_person = match &config.two_person {
            None => DEFAULT_TWO_PERSON.to_vec(),
            Some(actions) => actions.clone(),
        };

        let confirm_ttl = match config.confirm_ttl_secs {
            None => Duration::from_secs(DEFAULT_CONFIRM_TTL_SECS),
            Some(0) => {
                return Err(PolicyError::Field {
                    field: "confirm_ttl_secs",
                    problem: Invalid::ZeroTtl,
                })
            }
            Some(secs) => Duration::from_secs(secs),
        };

        let grants = config
            .grants
            .iter()
            .enumerate()
            .map(|(i, grant)| {
                check_grant(grant).map_err(|(field, problem)| PolicyError::Grant {
                    number: i + 1,
                    field,
                    problem,
                })
            })
            .collect::<Result<_, _>>()?;

        let mut persons: Vec<(String, String)> = Vec::new();
        for (i, person) in config.persons.iter().enumerate() {
            let error = |problem: Invalid| PolicyError::Person {
                number: i + 1,
                problem,
            };
            let name = person.name.trim();
            if name.is_empty() {
                return Err(error(Invalid::EmptyName));
            }
            for identity in &person.identities {
                let identity = check_identity(identity).map_err(error)?;
                if let Some((_, other)) = persons.iter().find(|(id, _)| *id == identity) {
                    return Err(error(Invalid::TakenIdentity {
                        identity,
                        person: other.clone(),
                    }));
                }
                persons.push((identity, name.to_string()));
            }
        }

        Ok(Policy {
            configured,
            grants,
            channels,
            guilds,
            two_person,
            confirm_ttl,
            sweep_level: config.sweep_level,
            persons,
        })
    }

    /// Also serve this guild (`DISCORD_GUILD_ID`, where the commands are registered).
    pub fn with_guild(mut self, guild: Option<u64>) -> Policy {
        if let Some(g) = guild {
            let g = g.to_string();
            if !self.guilds.contains(&g) {
                self.guilds.push(g);
            }
        }
        self
    }

    /// Whether a `[policy]` table was given.
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// Whether rdp-doctor serves this place at all, before any permission.
    pub fn fence(&self, place: &Place) -> Result<(), Fenced> {
        match place {
            Place::Terminal => Ok(()),
            Place::Discord { guild, channel } => {
                if !self.configured {
                    return Err(Fenced::NoPolicy);
                }
                let Some(guild) = guild else {
                    return Err(Fenced::DirectMessage);
                };
                if !self.guilds.iter().any(|g| g == guild.trim()) {
                    return Err(Fenced::Guild);
                }
                if !self.channel_allowed(channel) {
                    return Err(Fenced::Channel);
                }
                Ok(())
            }
            // Alerts post only where people are served: a configured policy's channels.
            Place::Alerts { channel } => {
                if !self.configured {
                    return Err(Fenced::NoPolicy);
                }
                if !self.channel_allowed(channel) {
                    return Err(Fenced::Channel);
                }
                Ok(())
            }
        }
    }

    /// The highest level any of the actor's grants gives on `target`; `None` if no grant
    /// applies. Without a `[policy]`, the terminal may read everything.
    pub fn level_on(&self, actor: &Actor, target: &Target) -> Option<Permission> {
        if !self.configured {
            return (actor.source == ActorSource::Cli).then_some(Permission::Read);
        }
        self.grants
            .iter()
            .filter(|g| g.principal.matches(actor) && g.scope.covers(target))
            .map(|g| g.level)
            .max()
    }

    /// The highest level any of the actor's grants gives on this VM.
    pub fn level(&self, actor: &Actor, vm: &VmRef) -> Option<Permission> {
        self.level_on(actor, &Target::of_vm(vm))
    }

    /// Whether the actor holds at least `needed` on some scope (so that looking something up on
    /// their behalf can be worth an Azure request at all).
    pub fn holds_anywhere(&self, actor: &Actor, needed: Permission) -> bool {
        if !self.configured {
            return actor.source == ActorSource::Cli && needed == Permission::Read;
        }
        self.grants
            .iter()
            .any(|g| g.principal.matches(actor) && g.level >= needed)
    }

    /// `Ok` if the actor has at least `needed` on `target`.
    pub fn authorize_on(
        &self,
        actor: &Actor,
        needed: Permission,
        target: &Target,
    ) -> Result<(), Denial> {
        let have = self.level_on(actor, target);
        if have.is_some_and(|have| have >= needed) {
            return Ok(());
        }
        Err(Denial {
            needed,
            scope: target.to_string(),
            have,
        })
    }

    /// `Ok` if the actor has at least `needed` on the VM.
    pub fn authorize(&self, actor: &Actor, needed: Permission, vm: &VmRef) -> Result<(), Denial> {
        self.authorize_on(actor, needed, &Target::of_vm(vm))
    }

    /// `Ok` if the actor has at least `needed` on every VM of a subscription (a sweep of it).
    pub fn authorize_subscription(
        &self,
        actor: &Actor,
        needed: Permission,
        subscription_id: &str,
    ) -> Result<(), Denial> {
        let have = if !self.configured {
            (actor.source == ActorSource::Cli).then_some(Permission::Read)
        } else {
            self.grants
                .iter()
                .filter(|g| {
                    g.principal.matches(actor)
                        && match &g.scope {
                            Scope::All => true,
                            Scope::Subscription(s) => s.eq_ignore_ascii_case(subscription_id),
                            Scope::ResourceGroup { .. } => false,
                        }
                })
                .map(|g| g.level)
                .max()
        };
        if have.is_some_and(|have| have >= needed) {
            return Ok(());
        }
        Err(Denial {
            needed,
            scope: format!("subscription/{subscription_id}"),
            have,
        })
    }

    pub fn channel_allowed(&self, channel_id: &str) -> bool {
        self.channels.iter().any(|c| c == channel_id.trim())
    }

    /// Whether the confirmer of `action` must be someone other than its requester.
    pub fn two_person(&self, action: ActionId) -> bool {
        self.two_person.contains(&action)
    }

    /// How long a confirmation stays valid.
    pub fn confirm_ttl(&self) -> Duration {
        self.confirm_ttl
    }

    /// The level `sweep` needs, when the policy overrides the runbook's.
    pub fn sweep_level(&self) -> Option<Permission> {
        self.sweep_level
    }

    /// Who the actor is as a person: `person:<name>` for an identity `[[policy.person]]` names,
    /// else the identity itself. The two-person rule compares these.
    pub fn person_key(&self, actor_id: &str) -> String {
        match self.persons.iter().find(|(id, _)| id == actor_id) {
            Some((_, person)) => format!("person:{person}"),
            None => actor_id.to_string(),
        }
    }
}

impl Principal {
    fn matches(&self, actor: &Actor) -> bool {
        match (self, actor.source) {
            (Principal::DiscordRoleId(id), ActorSource::Discord) => {
                actor.role_ids.iter().any(|r| r == id)
            }
            (Principal::DiscordUserId(id), ActorSource::Discord) => {
                actor.discord_user() == Some(id.as_str())
            }
            (Principal::CliUser(user), ActorSource::Cli) => {
                actor.id.strip_prefix("cli:") == Some(user.as_str())
            }
            (Principal::Alerts, ActorSource::Alerts) => true,
            _ => false,
        }
    }
}

/// A value of the `[policy]` table that is not what it should be; the error around it names
/// the table and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("role names are no longer accepted (anyone who may manage roles can name a role anything, in any server): use `discord_role_id` (Server Settings → Roles → right-click the role → Copy Role ID)")]
    RoleName,
    #[error("must not be empty")]
    Empty,
    #[error("{ONE_PRINCIPAL}; found none")]
    NoPrincipal,
    #[error("{ONE_PRINCIPAL}; found {0}: split it into one grant each")]
    Principals(String),
    #[error("missing: say `read`, `operate` or `admin`")]
    NoLevel,
    #[error("missing: say \"*\" for every VM, or \"subscription/<id>\" or \"subscription/<id>/resourceGroup/<name>\"")]
    NoScope,
    #[error("0 would expire every confirmation at once; the default is 300")]
    ZeroTtl,
    #[error("`name` must not be empty")]
    EmptyName,
    #[error("{identity} is already an identity of {person}; one identity belongs to one person")]
    TakenIdentity { identity: String, person: String },
    #[error(
        "expected \"*\", \"subscription/<id>\" or \"subscription/<id>/resourceGroup/<name>\", found {0:?}"
    )]
    Scope(String),
    #[error("{0:?} is not a Discord id (digits only)")]
    DiscordId(String),
    #[error("{0:?} is not an identity: write \"discord:<user id>\" or \"cli:<user>\"")]
    Identity(String),
}

impl Scope {
    fn parse(text: &str) -> Result<Scope, Invalid> {
        let text = text.trim();
        if text == "*" {
            return Ok(Scope::All);
        }
        let expected = || Invalid::Scope(text.to_string());
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

    fn covers(&self, target: &Target) -> bool {
        match self {
            Scope::All => true,
            Scope::Subscription(sub) => sub.eq_ignore_ascii_case(&target.subscription_id),
            Scope::ResourceGroup {
                subscription,
                resource_group,
            } => {
                subscription.eq_ignore_ascii_case(&target.subscription_id)
                    && resource_group.eq_ignore_ascii_case(&target.resource_group)
            }
        }
    }
}

const ONE_PRINCIPAL: &str =
    "a grant needs exactly one of `discord_role_id`, `discord_user_id`, `cli_user` or `alerts = true`";

fn check_grant(grant: &GrantConfig) -> Result<Grant, (&'static str, Invalid)> {
    if grant.discord_role.is_some() {
        return Err(("discord_role", Invalid::RoleName));
    }
    let mut principals = Vec::new();
    if let Some(id) = &grant.discord_role_id {
        let id = check_discord_id(id).map_err(|e| ("discord_role_id", e))?;
        principals.push(("discord_role_id", Principal::DiscordRoleId(id)));
    }
    if let Some(id) = &grant.discord_user_id {
        let id = check_discord_id(id).map_err(|e| ("discord_user_id", e))?;
        principals.push(("discord_user_id", Principal::DiscordUserId(id)));
    }
    match grant.cli_user.as_deref().map(str::trim) {
        Some("") => return Err(("cli_user", Invalid::Empty)),
        Some(user) => principals.push(("cli_user", Principal::CliUser(user.to_string()))),
        None => {}
    }
    // `alerts = false` grants nothing: as good as absent.
    if grant.alerts == Some(true) {
        principals.push(("alerts", Principal::Alerts));
    }
    let principal = match principals.len() {
        1 => principals.remove(0).1,
        0 => return Err(("discord_role_id", Invalid::NoPrincipal)),
        _ => {
            let fields: Vec<String> = principals.iter().map(|(f, _)| format!("`{f}`")).collect();
            return Err((principals[1].0, Invalid::Principals(fields.join(" and "))));
        }
    };
    let level = grant.level.ok_or(("level", Invalid::NoLevel))?;
    let scope = match &grant.scope {
        None => return Err(("scope", Invalid::NoScope)),
        Some(text) => Scope::parse(text).map_err(|e| ("scope", e))?,
    };
    Ok(Grant {
        principal,
        level,
        scope,
    })
}

fn check_discord_id(id: &DiscordId) -> Result<String, Invalid> {
    let id = id.as_str().trim();
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(Invalid::DiscordId(id.to_string()))
    }
}

/// `discord:<digits>` or `cli:<user>`.
fn check_identity(identity: &str) -> Result<String, Invalid> {
    let identity = identity.trim();
    match identity.split_once(':') {
        Some(("discord", id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(identity.to_string())
        }
        Some(("cli", user)) if !user.is_empty() && !user.chars().any(char::is_whitespace) => {
            Ok(identity.to_string())
        }
        _ => Err(Invalid::Identity(identity.to_string())),
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

    fn discord(id: u64, role_ids: &[&str]) -> Actor {
        Actor::discord(
            id,
            &format!("user{id}"),
            role_ids.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn cli(user: &str) -> Actor {
        Actor::terminal(user)
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

    /// The text of a config's or a policy's error, as the person reads it.
    #[derive(Debug, PartialEq)]
    struct Said(String);

    impl std::ops::Deref for Said {
        type Target = str;
        fn deref(&self) -> &str {
            &self.0
        }
    }

    impl PartialEq<&str> for Said {
        fn eq(&self, other: &&str) -> bool {
            self.0 == *other
        }
    }

    impl fmt::Display for Said {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    /// The policy of a config text, or what its error says.
    fn policy(toml: &str) -> Result<Policy, Said> {
        let file = FileConfig::parse(toml, "test.toml").map_err(|e| Said(e.to_string()))?;
        Policy::new(file.policy.as_ref()).map_err(|e| Said(e.to_string()))
    }

    const ONCALL_OPERATE_ALL: &str = r#"
[policy]
channels = ["123"]
guilds = ["77"]
[[policy.grant]]
discord_role_id = 500
level = "operate"
scope = "*"
"#;

    #[test]
    fn each_level_includes_the_ones_below() {
        let oncall = discord(1, &["500"]);
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
discord_role_id = 100
level = "read"
scope = "*"
[[policy.grant]]
discord_role_id = 111
level = "admin"
scope = "subscription/{SUB}/resourceGroup/rg-web"
[[policy.grant]]
discord_role_id = 500
level = "operate"
scope = "subscription/{SUB}"
"#
        );
        let p = policy(&toml).unwrap();
        let both = discord(1, &["111", "100", "500"]);
        assert_eq!(p.level(&both, &web()), Some(Permission::Admin));
        assert_eq!(
            p.level(&both, &vm(SUB, "rg-db", "db-01")),
            Some(Permission::Operate)
        );
        assert_eq!(
            p.level(&both, &vm(OTHER_SUB, "rg-web", "web-02")),
            Some(Permission::Read)
        );
        assert_eq!(p.level(&discord(2, &[]), &web()), None);
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
        let group = |sub: &str, rg: &str| format!("subscription/{sub}/resourceGroup/{rg}");
        let cases = [
            ("*".to_owned(), web(), "ok".to_owned()),
            (format!("subscription/{SUB}"), web(), "ok".to_owned()),
            // ARM's own spelling and case are accepted; ids and names compare ignoring case.
            (
                format!(
                    "/subscriptions/{}/resourceGroups/RG-WEB",
                    SUB.to_uppercase()
                ),
                web(),
                "ok".to_owned(),
            ),
            (
                group(SUB, "rg-web"),
                vm(SUB, "Rg-Web", "web-01"),
                "ok".to_owned(),
            ),
            (
                group(SUB, "rg-web"),
                vm(SUB, "rg-db", "db-01"),
                denied(SUB, "rg-db"),
            ),
            (
                format!("subscription/{SUB}"),
                vm(OTHER_SUB, "rg-web", "web-01"),
                denied(OTHER_SUB, "rg-web"),
            ),
            (
                group(SUB, "rg-web"),
                vm(OTHER_SUB, "rg-web", "web-01"),
                denied(OTHER_SUB, "rg-web"),
            ),
        ];
        for (scope, target, expected) in cases {
            check(&grant(&scope), &alice, &target, op, &expected);
        }
    }

    #[test]
    fn principals() {
        let toml = r#"
[policy]
[[policy.grant]]
discord_role_id = 500
level = "operate"
scope = "*"
[[policy.grant]]
discord_role_id = "111"
level = "admin"
scope = "*"
[[policy.grant]]
discord_user_id = 4001
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
        check(
            toml,
            &discord(1, &["999", "500"]),
            &web(),
            Permission::Operate,
            "ok",
        );
        check(toml, &discord(1, &["111"]), &web(), admin, "ok");
        check(toml, &discord(1, &["222"]), &web(), read, none);
        // A user grant is that user, on every path.
        check(toml, &discord(4001, &[]), &web(), admin, "ok");
        check(toml, &discord(4002, &[]), &web(), read, none);
        // CLI users match the terminal only, and Discord grants never match the terminal.
        check(toml, &cli("alice"), &web(), admin, "ok");
        check(toml, &cli("bob"), &web(), read, none);
        check(toml, &cli("4001"), &web(), read, none);
        let mut cli_with_roles = cli("carol");
        cli_with_roles.role_ids = vec!["111".into()];
        check(toml, &cli_with_roles, &web(), read, none);
        // The namespace is part of the identity: a Discord user cannot pass for a CLI user.
        let mut spoof = discord(1, &[]);
        spoof.id = "cli:alice".into();
        check(toml, &spoof, &web(), read, none);
    }

    #[test]
    fn role_names_are_refused_with_what_to_write_instead() {
        let err = policy(
            "[policy]\n[[policy.grant]]\ndiscord_role = \"oncall\"\nlevel = \"read\"\nscope = \"*\"\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with(
                "test.toml:3:16: [[policy.grant]] number 1: `discord_role`: role names are no longer accepted"
            ),
            "{err}"
        );
        assert!(err.contains("discord_role_id"), "{err}");
    }

    #[test]
    fn fences_guilds_channels_and_direct_messages() {
        let p = policy(ONCALL_OPERATE_ALL).unwrap();
        let at = |guild: Option<&str>, channel: &str| Place::Discord {
            guild: guild.map(str::to_string),
            channel: channel.to_string(),
        };
        assert_eq!(p.fence(&at(Some("77"), "123")), Ok(()));
        assert_eq!(p.fence(&at(Some("78"), "123")), Err(Fenced::Guild));
        assert_eq!(p.fence(&at(Some("77"), "124")), Err(Fenced::Channel));
        assert_eq!(p.fence(&at(None, "123")), Err(Fenced::DirectMessage));
        assert_eq!(p.fence(&Place::Terminal), Ok(()));
        // DISCORD_GUILD_ID adds its guild.
        let p = p.with_guild(Some(78));
        assert_eq!(p.fence(&at(Some("78"), "123")), Ok(()));
        // Empty channels mean nowhere; no guild means none.
        let p = policy("[policy]\nguilds = [\"77\"]\n").unwrap();
        assert_eq!(p.fence(&at(Some("77"), "123")), Err(Fenced::Channel));
        let p = policy("[policy]\nchannels = [\"123\"]\n").unwrap();
        assert_eq!(p.fence(&at(Some("77"), "123")), Err(Fenced::Guild));
        // No policy: Discord is served nowhere.
        let p = Policy::new(None).unwrap().with_guild(Some(77));
        assert_eq!(p.fence(&at(Some("77"), "123")), Err(Fenced::NoPolicy));
    }

    #[test]
    fn persons_tie_identities_together() {
        let p = policy(
            "[policy]\n[[policy.person]]\nname = \"alice\"\nidentities = [\"discord:4001\", \"cli:alice\"]\n",
        )
        .unwrap();
        assert_eq!(p.person_key("discord:4001"), "person:alice");
        assert_eq!(p.person_key("cli:alice"), "person:alice");
        assert_eq!(p.person_key("cli:bob"), "cli:bob");
        assert_eq!(
            policy("[policy]\n[[policy.person]]\nname = \"a\"\nidentities = [\"alice\"]\n")
                .unwrap_err(),
            "test.toml:4:14: [[policy.person]] number 1: \"alice\" is not an identity: write \
             \"discord:<user id>\" or \"cli:<user>\""
        );
        assert_eq!(
            policy(
                "[policy]\n[[policy.person]]\nname = \"a\"\nidentities = [\"cli:x\"]\n\
                 [[policy.person]]\nname = \"b\"\nidentities = [\"cli:x\"]\n"
            )
            .unwrap_err(),
            "test.toml:7:14: [[policy.person]] number 2: cli:x is already an identity of a; one identity \
             belongs to one person"
        );
    }

    #[test]
    fn sweeping_a_subscription_needs_a_grant_on_all_of_it() {
        let toml = format!(
            "[policy]\n[[policy.grant]]\ncli_user = \"alice\"\nlevel = \"operate\"\n\
             scope = \"subscription/{SUB}/resourceGroup/rg-web\"\n[[policy.grant]]\n\
             cli_user = \"bob\"\nlevel = \"operate\"\nscope = \"subscription/{SUB}\"\n"
        );
        let p = policy(&toml).unwrap();
        let op = Permission::Operate;
        assert!(p.authorize_subscription(&cli("alice"), op, SUB).is_err());
        assert!(p.authorize_subscription(&cli("bob"), op, SUB).is_ok());
        assert!(p
            .authorize_subscription(&cli("bob"), op, OTHER_SUB)
            .is_err());
        assert!(p.holds_anywhere(&cli("alice"), op));
        assert!(!p.holds_anywhere(&cli("alice"), Permission::Admin));
        assert!(!p.holds_anywhere(&cli("carol"), Permission::Read));
    }

    #[test]
    fn without_a_policy_the_terminal_reads_and_nothing_else() {
        check("", &cli("alice"), &web(), Permission::Read, "ok");
        check(
            "",
            &cli("alice"),
            &web(),
            Permission::Operate,
            "you need the `operate` permission on \
             subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web \
             (you have `read`)",
        );
        let p = Policy::new(None).unwrap();
        assert!(!p.configured());
        assert_eq!(p.level(&discord(1, &["1"]), &web()), None);
        assert!(!p.holds_anywhere(&discord(1, &["1"]), Permission::Read));
        assert!(p.two_person(ActionId::Redeploy));
        assert_eq!(p.confirm_ttl(), Duration::from_secs(300));
        // An empty [policy] table is a policy: it grants nothing, not even reads.
        check(
            "[policy]\n",
            &cli("alice"),
            &web(),
            Permission::Read,
            "you need the `read` permission on \
             subscription/11111111-1111-1111-1111-111111111111/resourceGroup/rg-web \
             (you have none)",
        );
    }

    #[test]
    fn invalid_configs_name_the_grant_and_the_field() {
        let a = cli("alice");
        let r = Permission::Read;
        let grant = |body: &str| {
            format!("[policy]\n[[policy.grant]]\ncli_user = \"x\"\nlevel = \"read\"\nscope = \"*\"\n[[policy.grant]]\n{body}\n")
        };
        check(
            &grant("discord_role_id = 1\ncli_user = \"b\"\nlevel = \"read\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: test.toml:8:12: [[policy.grant]] number 2: `cli_user`: a grant needs exactly one of \
             `discord_role_id`, `discord_user_id`, `cli_user` or `alerts = true`; found `discord_role_id` and \
             `cli_user`: split it into one grant each",
        );
        check(
            &grant("level = \"read\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: test.toml:7:9: [[policy.grant]] number 2: `discord_role_id`: a grant needs exactly one of \
             `discord_role_id`, `discord_user_id`, `cli_user` or `alerts = true`; found none",
        );
        check(
            &grant("cli_user = \"b\"\nlevel = \"read\"\nscope = \"subscription/\""),
            &a,
            &web(),
            r,
            "config: test.toml:9:9: [[policy.grant]] number 2: `scope`: expected \"*\", \"subscription/<id>\" \
             or \"subscription/<id>/resourceGroup/<name>\", found \"subscription/\"",
        );
        check(
            &grant("cli_user = \"b\"\nlevel = \"read\"\nscope = \"resourceGroup/rg-web\""),
            &a,
            &web(),
            r,
            "config: test.toml:9:9: [[policy.grant]] number 2: `scope`: expected \"*\", \"subscription/<id>\" \
             or \"subscription/<id>/resourceGroup/<name>\", found \"resourceGroup/rg-web\"",
        );
        check(
            &grant("cli_user = \"b\"\nlevel = \"read\""),
            &a,
            &web(),
            r,
            "config: test.toml:7:12: [[policy.grant]] number 2: `scope`: missing: say \"*\" for every VM, or \
             \"subscription/<id>\" or \"subscription/<id>/resourceGroup/<name>\"",
        );
        check(
            &grant("cli_user = \"b\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: test.toml:7:12: [[policy.grant]] number 2: `level`: missing: say `read`, `operate` or `admin`",
        );
        check(
            &grant("discord_role_id = \"oncall\"\nlevel = \"read\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: test.toml:7:19: [[policy.grant]] number 2: `discord_role_id`: \"oncall\" is not a Discord \
             id (digits only)",
        );
        check(
            &grant("cli_user = \"  \"\nlevel = \"read\"\nscope = \"*\""),
            &a,
            &web(),
            r,
            "config: test.toml:7:12: [[policy.grant]] number 2: `cli_user`: must not be empty",
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
            "test.toml:2:14: unknown action `reboot`; actions are \
             reset-rdp-config, open-rdp-port, reset-password, start, restart, redeploy, \
             remove-route, enable-rdp, start-termservice, reset-rdp-port, enable-firewall-rdp, \
             renew-rdp-certificate, remove-rdsh-role, free-disk-space"
        );
        assert_eq!(
            policy("[policy]\nconfirm_ttl_secs = 0\n").unwrap_err(),
            "test.toml:2:20: [policy] `confirm_ttl_secs`: 0 would expire every confirmation at once; the \
             default is 300"
        );
        assert_eq!(
            policy("[policy]\nchannels = [\"general\"]\n").unwrap_err(),
            "test.toml:2:13: [policy] `channels`: \"general\" is not a Discord id (digits only)"
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
        for action in ActionId::ALL {
            assert_eq!(
                p.two_person(action),
                DEFAULT_TWO_PERSON.contains(&action),
                "{action}"
            );
        }
        assert_eq!(p.confirm_ttl(), Duration::from_secs(300));

        let p = policy("[policy]\ntwo_person = []\nconfirm_ttl_secs = 60\n").unwrap();
        assert!(!p.two_person(ActionId::Redeploy));
        assert_eq!(p.confirm_ttl(), Duration::from_secs(60));

        let p = policy("[policy]\ntwo_person = [\"restart\"]\n").unwrap();
        assert!(p.two_person(ActionId::Restart));
        assert!(!p.two_person(ActionId::Redeploy));
    }
}
