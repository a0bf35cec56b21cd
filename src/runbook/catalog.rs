//! The runbook as data: loads `commands/rdp.toml` (the steps of Microsoft's "Troubleshoot Remote
//! Desktop connections to an Azure VM" runbook, the order in which fixes are recommended, the tips
//! used in reports) and `commands/rdp-errors.toml` (Remote Desktop client error messages -> cause
//! and fix), and checks them so that a broken file is reported with its path, line and field.
//!
//! **Architecture Invariant:** this module only knows text. It does not run steps, talk to Azure or
//! render for Discord or the terminal; the runbook looks steps up here by id.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use regex::{Regex, RegexBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::diagnose::{ActionId, StepId};

const BUILTIN_RDP: &str = include_str!("../../commands/rdp.toml");
const BUILTIN_ERRORS: &str = include_str!("../../commands/rdp-errors.toml");
const BUILTIN_RDP_PATH: &str = "commands/rdp.toml";
const BUILTIN_ERRORS_PATH: &str = "commands/rdp-errors.toml";

/// Placeholders a confirmation text may use; anything else in braces is a typo.
pub const CONFIRM_PLACEHOLDERS: [&str; 3] = ["vm", "resource_group", "username"];

/// The loaded runbook: steps in the runbook's order, the fix ladder, report texts, client errors.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub steps: Vec<Step>,
    /// Actions in the order fixes are recommended; the first whose `requires` hold wins.
    pub ladder: Vec<ActionId>,
    pub texts: Texts,
    pub errors: Vec<ClientError>,
    /// The level each command that reads needs (fixes name theirs in their step).
    pub commands: CommandLevels,
}

/// `[commands]` of `rdp.toml`: the level each command that does not change a VM needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandLevels {
    /// `check`, and the VM list behind autocomplete and the "which VM?" menu.
    pub check: Permission,
    pub health: Permission,
    /// The console screenshot and serial log.
    pub console: Permission,
    /// A whole resource group or subscription at once.
    pub sweep: Permission,
    /// The audit log (entries of VMs the person may read).
    pub audit: Permission,
}

impl Default for CommandLevels {
    fn default() -> CommandLevels {
        CommandLevels {
            check: Permission::Read,
            health: Permission::Read,
            console: Permission::Read,
            sweep: Permission::Operate,
            audit: Permission::Read,
        }
    }
}

/// One step of the runbook: a read-only check or an action that changes the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Fixed id that the runbook code knows, e.g. `nsg` or `reset-rdp-config`; `rdp.toml` must
    /// define each of [`StepId::all`] exactly once.
    pub id: StepId,
    /// Whether the step only reads (`check`) or changes the VM (`action`).
    pub kind: StepKind,
    /// Short line shown in the report, e.g. "Network security group allows TCP 3389".
    pub title: String,
    /// Number of the step in Microsoft's runbook; absent for preconditions.
    pub runbook_step: Option<u8>,
    /// The learn.microsoft.com page for this step.
    pub doc: String,
    /// For a check: what to do when it fails. For an action: what it does.
    pub next_step: String,
    /// Actions only: the confirmation text, with placeholders from [`CONFIRM_PLACEHOLDERS`].
    pub confirm: Option<String>,
    /// Actions only: the permission an actor needs to run it.
    pub permission: Option<Permission>,
    /// Actions only: what must hold for the action to be offered.
    #[serde(default)]
    pub requires: Vec<Precondition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Check,
    Action,
}

/// Ordered: `Read < Operate < Admin`, so "has at least" is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Operate,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precondition {
    /// The VM's power state is running.
    Running,
    /// The guest agent reports Ready (VMAccess needs it).
    AgentReady,
    /// The OS is Windows.
    Windows,
    /// The VM is deallocated or stopped.
    DeallocatedOrStopped,
}

/// Tips of the runbook used in reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Texts {
    /// The VM has no public IP: connect over VPN, ExpressRoute or Azure Bastion.
    pub no_public_ip: String,
    /// The guest agent is not Ready: VMAccess fixes will fail; use Serial Console/boot diagnostics.
    pub agent_not_ready: String,
    /// The VM runs Linux: point to SSH troubleshooting.
    pub linux: String,
    /// The VM is a classic (ASM) VM, retired in 2023.
    pub classic: String,
    /// How to turn on boot diagnostics.
    pub enable_boot_diagnostics: String,
    /// How to register the Microsoft.ResourceHealth provider.
    pub register_resource_health: String,
    /// "After each step, try to connect again."
    pub reconnect: String,
}

/// A Remote Desktop client error message with its cause and fix.
#[derive(Debug, Clone)]
pub struct ClientError {
    pub id: String,
    /// The canonical text of the message.
    pub message: String,
    pub cause: String,
    pub fix: String,
    pub doc: String,
    /// Related steps (checks and actions).
    pub steps: Vec<StepId>,
    /// Compiled case-insensitive; matched against normalised text (see [`Catalog::explain`]).
    pattern: Regex,
}

impl ClientError {
    /// The compiled pattern (case-insensitive).
    pub fn pattern(&self) -> &Regex {
        &self.pattern
    }
}

/// A runbook file that could not be read or is wrong. Displays as one line naming the file, the
/// line and the field: ``commands/rdp.toml:12:5: field `permission`: unknown variant ...``.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {}{message}", field_prefix(.field.as_deref()))]
    Parse {
        path: String,
        line: usize,
        column: usize,
        field: Option<String>,
        message: String,
    },
    #[error("{path}{}: field `{field}`: {message}", line_suffix(.line))]
    Invalid {
        path: String,
        line: Option<usize>,
        field: String,
        message: String,
    },
}

fn field_prefix(field: Option<&str>) -> String {
    field.map_or_else(String::new, |f| format!("field `{f}`: "))
}

fn line_suffix(line: &Option<usize>) -> String {
    line.map_or_else(String::new, |l| format!(":{l}"))
}

impl Catalog {
    /// The runbook compiled into the binary. Panics only if the shipped files are broken, which
    /// the unit tests rule out.
    pub fn builtin() -> Catalog {
        match Catalog::from_strs(
            BUILTIN_RDP,
            BUILTIN_RDP_PATH,
            BUILTIN_ERRORS,
            BUILTIN_ERRORS_PATH,
        ) {
            Ok(catalog) => catalog,
            Err(e) => panic!("built-in runbook is invalid: {e}"),
        }
    }

    /// Reads `dir/rdp.toml` and `dir/rdp-errors.toml`; a file missing from `dir` falls back to
    /// the built-in one. A missing `dir` is an error: a mistyped runbook directory must not pass
    /// silently.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        if let Err(source) = std::fs::metadata(dir) {
            return Err(CatalogError::Io {
                path: dir.display().to_string(),
                source,
            });
        }
        let (rdp, rdp_path) =
            read_or_builtin(&dir.join("rdp.toml"), BUILTIN_RDP, BUILTIN_RDP_PATH)?;
        let (errors, errors_path) = read_or_builtin(
            &dir.join("rdp-errors.toml"),
            BUILTIN_ERRORS,
            BUILTIN_ERRORS_PATH,
        )?;
        Catalog::from_strs(&rdp, &rdp_path, &errors, &errors_path)
    }

    /// Parses and validates both files; the paths are only used in error messages.
    pub fn from_strs(
        rdp_toml: &str,
        rdp_path: &str,
        errors_toml: &str,
        errors_path: &str,
    ) -> Result<Catalog, CatalogError> {
        let rdp: RdpFile = parse(rdp_toml, rdp_path)?;
        let raw_errors: ErrorsFile = parse(errors_toml, errors_path)?;
        let v = Validator {
            src: rdp_toml,
            path: rdp_path,
        };
        v.steps(&rdp.steps)?;
        v.ladder(&rdp.ladder)?;
        v.texts(&rdp.texts)?;
        let v = Validator {
            src: errors_toml,
            path: errors_path,
        };
        let errors = v.errors(raw_errors.errors)?;
        Ok(Catalog {
            steps: rdp.steps,
            ladder: rdp.ladder,
            texts: rdp.texts,
            errors,
            commands: rdp.commands,
        })
    }

    pub fn step(&self, id: impl Into<StepId>) -> Option<&Step> {
        let id = id.into();
        self.steps.iter().find(|s| s.id == id)
    }

    /// The client errors whose pattern occurs in `text`, best first: the one that appears
    /// earliest in the pasted text (the dialog's headline), then file order. Curly quotes and
    /// apostrophes are straightened first, so patterns only need to handle `'` and `"`.
    pub fn explain(&self, text: &str) -> Vec<&ClientError> {
        let text = normalize(text);
        let mut hits: Vec<(usize, usize, &ClientError)> = self
            .errors
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.pattern.find(&text).map(|m| (m.start(), i, e)))
            .collect();
        hits.sort_by_key(|&(start, i, _)| (start, i));
        hits.into_iter().map(|(_, _, e)| e).collect()
    }
}

impl Step {
    pub fn is_action(&self) -> bool {
        self.kind == StepKind::Action
    }

    /// The confirmation text with `{name}` placeholders replaced from `vars`; placeholders
    /// without a value stay as they are.
    pub fn confirm_text(&self, vars: &[(&str, &str)]) -> Option<String> {
        let mut text = self.confirm.clone()?;
        for (name, value) in vars {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        Some(text)
    }
}

/// Straightens typographic quotes and spaces that chat clients and word processors introduce.
fn normalize(text: &str) -> Cow<'_, str> {
    let fancy = |c: char| {
        matches!(
            c,
            '\u{2018}'
                | '\u{2019}'
                | '\u{201B}'
                | '\u{2032}'
                | '\u{00B4}'
                | '`'
                | '\u{201C}'
                | '\u{201D}'
                | '\u{201E}'
                | '\u{00A0}'
                | '\u{202F}'
        )
    };
    if !text.contains(fancy) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match c {
                '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{2032}' | '\u{00B4}' | '`' => '\'',
                '\u{201C}' | '\u{201D}' | '\u{201E}' => '"',
                '\u{00A0}' | '\u{202F}' => ' ',
                c => c,
            })
            .collect(),
    )
}

// ---- file shapes --------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RdpFile {
    ladder: Vec<ActionId>,
    #[serde(default)]
    commands: CommandLevels,
    texts: Texts,
    #[serde(rename = "step")]
    steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorsFile {
    #[serde(rename = "error")]
    errors: Vec<RawClientError>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientError {
    id: String,
    pattern: String,
    message: String,
    cause: String,
    fix: String,
    doc: String,
    #[serde(default)]
    steps: Vec<StepId>,
}

fn read_or_builtin(
    path: &Path,
    builtin: &'static str,
    builtin_path: &str,
) -> Result<(Cow<'static, str>, String), CatalogError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((Cow::Owned(text), path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((Cow::Borrowed(builtin), format!("{builtin_path} (built-in)")))
        }
        Err(source) => Err(CatalogError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

// ---- parsing: turn toml's byte span into line, column and field ---------------------------------

fn parse<T: DeserializeOwned>(src: &str, path: &str) -> Result<T, CatalogError> {
    toml::from_str(src).map_err(|e| {
        let offset = e.span().map_or(0, |span| span.start);
        let (line, column) = line_col(src, offset);
        CatalogError::Parse {
            path: path.to_string(),
            line,
            column,
            field: field_of(e.message(), src, offset),
            // toml's messages are one line; keep the Display one line even if that changes.
            message: e.message().trim().replace('\n', " "),
        }
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The field an error is about: named in the message for unknown/missing fields, else the key
/// of the line the span points at (walking back over continuation lines of a multi-line array).
fn field_of(message: &str, src: &str, offset: usize) -> Option<String> {
    let named = ["unknown field `", "missing field `", "duplicate key `"]
        .iter()
        .filter_map(|prefix| message.strip_prefix(prefix))
        .find_map(|rest| rest.split_once('`').map(|(field, _)| field.to_string()));
    if named.is_some() {
        return named;
    }
    let line_no = line_col(src, offset).0;
    let lines: Vec<&str> = src.lines().take(line_no).collect();
    for line in lines.iter().rev() {
        let t = line.trim_start();
        if let Some(key) = key_of(t) {
            return Some(key.to_string());
        }
        let continuation = t.is_empty()
            || t.starts_with('#')
            || t.starts_with(['"', '\'', ']', '{', '-', '+'])
            || t.starts_with(|c: char| c.is_ascii_digit());
        // A table header or a syntax error (`kind "check"`): no field to name.
        if !continuation {
            return None;
        }
    }
    None
}

/// `key` of a `key = value` line (bare keys only, which is all our files use).
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    bare.then_some(key)
}

// ---- validation ---------------------------------------------------------------------------------

struct Validator<'a> {
    src: &'a str,
    path: &'a str,
}

impl Validator<'_> {
    fn invalid(&self, line: Option<usize>, field: &str, message: String) -> CatalogError {
        CatalogError::Invalid {
            path: self.path.to_string(),
            line,
            field: field.to_string(),
            message,
        }
    }

    /// Line of the `nth` (0-based) `id = "<id>"` in the file.
    fn id_line(&self, id: &str, nth: usize) -> Option<usize> {
        let quoted = format!("\"{id}\"");
        self.src
            .lines()
            .enumerate()
            .filter(|(_, l)| {
                let t = l.trim();
                key_of(t) == Some("id")
                    && t.split_once('=').is_some_and(|(_, v)| v.trim() == quoted)
            })
            .nth(nth)
            .map(|(i, _)| i + 1)
    }

    /// Line of `field = ...` inside the item whose id line is `id_line`, else the id line.
    fn field_line(&self, id_line: Option<usize>, field: &str) -> Option<usize> {
        let start = id_line?;
        let found = self
            .src
            .lines()
            .enumerate()
            .skip(start - 1)
            .take_while(|(i, l)| *i + 1 == start || !l.trim_start().starts_with('['))
            .find(|(_, l)| key_of(l.trim()) == Some(field))
            .map(|(i, _)| i + 1);
        found.or(id_line)
    }

    fn top_line(&self, key: &str) -> Option<usize> {
        self.src
            .lines()
            .position(|l| key_of(l.trim()) == Some(key))
            .map(|i| i + 1)
    }

    fn steps(&self, steps: &[Step]) -> Result<(), CatalogError> {
        let mut seen: HashMap<StepId, usize> = HashMap::new();
        for step in steps {
            let nth = seen.get(&step.id).copied().unwrap_or(0);
            let id_line = self.id_line(step.id.as_str(), nth);
            let at = |field: &str| self.field_line(id_line, field);
            let id = step.id.as_str();
            if nth > 0 {
                let first = self
                    .id_line(id, 0)
                    .map_or(String::new(), |l| format!(" (first at line {l})"));
                return Err(self.invalid(
                    id_line,
                    "id",
                    format!("step `{id}` is defined twice{first}"),
                ));
            }
            seen.insert(step.id, 1);
            let expected = match step.id {
                StepId::Check(_) => StepKind::Check,
                StepId::Action(_) => StepKind::Action,
            };
            if step.kind != expected {
                let (is, should) = match expected {
                    StepKind::Check => ("a check", "check"),
                    StepKind::Action => ("an action", "action"),
                };
                return Err(self.invalid(
                    at("kind"),
                    "kind",
                    format!("`{id}` is {is}: write kind = \"{should}\""),
                ));
            }
            for (field, value) in [("title", &step.title), ("next_step", &step.next_step)] {
                if value.trim().is_empty() {
                    return Err(self.invalid(at(field), field, format!("`{id}` needs a {field}")));
                }
            }
            if !step.doc.starts_with("https://") {
                return Err(self.invalid(
                    at("doc"),
                    "doc",
                    format!("`{id}`: doc must be an https:// URL, got `{}`", step.doc),
                ));
            }
            match expected {
                StepKind::Action => {
                    let Some(confirm) = step.confirm.as_deref().filter(|c| !c.trim().is_empty())
                    else {
                        return Err(self.invalid(
                            at("confirm"),
                            "confirm",
                            format!("action `{id}` needs a confirmation text"),
                        ));
                    };
                    if let Err(message) = check_placeholders(confirm) {
                        return Err(self.invalid(
                            at("confirm"),
                            "confirm",
                            format!("action `{id}`: {message}"),
                        ));
                    }
                    if step.permission.is_none() {
                        return Err(self.invalid(
                            at("permission"),
                            "permission",
                            format!("action `{id}` needs a permission: \"read\", \"operate\" or \"admin\""),
                        ));
                    }
                }
                StepKind::Check => {
                    let stray = [
                        ("confirm", step.confirm.is_some()),
                        ("permission", step.permission.is_some()),
                        ("requires", !step.requires.is_empty()),
                    ];
                    if let Some((field, _)) = stray.iter().find(|(_, set)| *set) {
                        return Err(self.invalid(
                            at(field),
                            field,
                            format!("`{id}` is a check; only actions have `{field}`"),
                        ));
                    }
                }
            }
        }
        let missing = StepId::all().find(|id| !seen.contains_key(id));
        if let Some(id) = missing {
            let kind = match id {
                StepId::Check(_) => "check",
                StepId::Action(_) => "action",
            };
            return Err(self.invalid(
                None,
                "step",
                format!("missing {kind} `{id}`: add a [[step]] with id = \"{id}\""),
            ));
        }
        Ok(())
    }

    fn ladder(&self, ladder: &[ActionId]) -> Result<(), CatalogError> {
        let line = self.top_line("ladder");
        for (i, id) in ladder.iter().enumerate() {
            if ladder[..i].contains(id) {
                return Err(self.invalid(line, "ladder", format!("`{id}` is listed twice")));
            }
        }
        Ok(())
    }

    fn texts(&self, texts: &Texts) -> Result<(), CatalogError> {
        let fields = [
            ("no_public_ip", &texts.no_public_ip),
            ("agent_not_ready", &texts.agent_not_ready),
            ("linux", &texts.linux),
            ("classic", &texts.classic),
            ("enable_boot_diagnostics", &texts.enable_boot_diagnostics),
            ("register_resource_health", &texts.register_resource_health),
            ("reconnect", &texts.reconnect),
        ];
        match fields.iter().find(|(_, text)| text.trim().is_empty()) {
            Some((field, _)) => {
                Err(self.invalid(self.top_line(field), field, "text is empty".to_string()))
            }
            None => Ok(()),
        }
    }

    fn errors(&self, raw: Vec<RawClientError>) -> Result<Vec<ClientError>, CatalogError> {
        let mut errors: Vec<ClientError> = Vec::with_capacity(raw.len());
        for e in raw {
            let nth = errors.iter().filter(|prev| prev.id == e.id).count();
            let id_line = self.id_line(&e.id, nth);
            let at = |field: &str| self.field_line(id_line, field);
            let id = &e.id;
            if nth > 0 {
                return Err(self.invalid(id_line, "id", format!("error `{id}` is defined twice")));
            }
            let pattern = RegexBuilder::new(&e.pattern)
                .case_insensitive(true)
                .build()
                .map_err(|err| {
                    self.invalid(
                        at("pattern"),
                        "pattern",
                        format!("error `{id}`: {}", regex_message(&err)),
                    )
                })?;
            if pattern.is_match("") {
                return Err(self.invalid(
                    at("pattern"),
                    "pattern",
                    format!("error `{id}`: pattern matches empty text, so it would match anything"),
                ));
            }
            for (field, value) in [
                ("message", &e.message),
                ("cause", &e.cause),
                ("fix", &e.fix),
            ] {
                if value.trim().is_empty() {
                    return Err(self.invalid(
                        at(field),
                        field,
                        format!("error `{id}` needs a {field}"),
                    ));
                }
            }
            if !e.doc.starts_with("https://") {
                return Err(self.invalid(
                    at("doc"),
                    "doc",
                    format!("error `{id}`: doc must be an https:// URL, got `{}`", e.doc),
                ));
            }
            errors.push(ClientError {
                id: e.id,
                message: e.message,
                cause: e.cause,
                fix: e.fix,
                doc: e.doc,
                steps: e.steps,
                pattern,
            });
        }
        Ok(errors)
    }
}

/// regex's syntax errors span several lines (pattern, caret, message); keep the message.
fn regex_message(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_string,
        )
}

/// What is wrong with a confirmation text's placeholders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PlaceholderError {
    #[error("unmatched `{0}`")]
    Unmatched(char),
    #[error("unknown placeholder `{{{0}}}`; use {known}", known = CONFIRM_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", "))]
    Unknown(String),
}

/// Every `{name}` must be a known placeholder, and braces must pair up.
fn check_placeholders(text: &str) -> Result<(), PlaceholderError> {
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(PlaceholderError::Unmatched('}'));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(PlaceholderError::Unmatched('{'))?;
        let name = &after[..close];
        if !CONFIRM_PLACEHOLDERS.contains(&name) {
            return Err(PlaceholderError::Unknown(name.to_string()));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::CheckId;

    #[test]
    fn builtin_runbook_loads() {
        let catalog = Catalog::builtin();
        let ids: Vec<&str> = catalog.steps.iter().map(|s| s.id.as_str()).collect();
        // Every step once, and nothing else.
        let mut sorted: Vec<StepId> = catalog.steps.iter().map(|s| s.id).collect();
        sorted.sort_by_key(|s| s.as_str());
        let mut all: Vec<StepId> = StepId::all().collect();
        all.sort_by_key(|s| s.as_str());
        assert_eq!(sorted, all);
        assert_eq!(
            ids,
            [
                "vm-status",
                "start",
                "vm-agent",
                "reset-rdp-config",
                "public-ip",
                "nsg",
                "open-rdp-port",
                "boot-diagnostics",
                "resource-health",
                "reset-password",
                "restart",
                "redeploy",
            ]
        );
        assert_eq!(
            catalog.ladder,
            [
                ActionId::Start,
                ActionId::OpenRdpPort,
                ActionId::ResetRdpConfig,
                ActionId::ResetPassword,
                ActionId::Restart,
                ActionId::Redeploy
            ]
        );
        let errors: Vec<&str> = catalog.errors.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            errors,
            [
                "no-license-server",
                "cannot-find-computer",
                "lsa-cannot-be-contacted",
                "credentials-did-not-work",
                "cannot-connect-to-remote-computer",
            ]
        );
        // Runbook numbers only grow along the file: the file is in the runbook's order.
        let numbers: Vec<u8> = catalog
            .steps
            .iter()
            .filter_map(|s| s.runbook_step)
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{numbers:?}");
        let permission = |id: ActionId| catalog.step(id).and_then(|s| s.permission);
        assert_eq!(
            permission(ActionId::ResetRdpConfig),
            Some(Permission::Operate)
        );
        assert_eq!(permission(ActionId::Redeploy), Some(Permission::Admin));
        assert_eq!(
            catalog
                .step(ActionId::ResetPassword)
                .map(|s| s.requires.clone()),
            Some(vec![
                Precondition::Running,
                Precondition::AgentReady,
                Precondition::Windows
            ])
        );
    }

    #[test]
    fn confirm_text_fills_placeholders() {
        let catalog = Catalog::builtin();
        let restart = catalog
            .step(ActionId::Restart)
            .and_then(|s| s.confirm_text(&[("vm", "web-01")]));
        assert_eq!(
            restart.as_deref(),
            Some("Restart web-01? Everyone signed in is disconnected and unsaved work is lost.")
        );
        assert_eq!(
            catalog.step(CheckId::Nsg).and_then(|s| s.confirm_text(&[])),
            None
        );
    }

    fn check_explain(text: &str, expect: &[&str]) {
        let catalog = Catalog::builtin();
        let got: Vec<&str> = catalog
            .explain(text)
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(got, expect, "explain({text:?})");
    }

    #[test]
    fn explain_matches_pasted_messages() {
        let cases: &[(&str, &[&str])] = &[
            (
                "The remote session was disconnected because there are no Remote Desktop License Servers available to provide a license.",
                &["no-license-server"],
            ),
            (
                "\"The remote session was disconnected because there are no Remote Desktop\nLicense Servers available to provide a license. Please contact the server administrator.\"",
                &["no-license-server"],
            ),
            (
                "no remote desktop license server available",
                &["no-license-server"],
            ),
            (
                "Remote Desktop can't find the computer \"web-01\".",
                &["cannot-find-computer"],
            ),
            (
                "Remote Desktop can’t find the computer “web-01”.",
                &["cannot-find-computer"],
            ),
            (
                "getting this when I click connect: Remote Desktop cannot find the computer 'web-01.contoso.com'. This might mean...",
                &["cannot-find-computer"],
            ),
            (
                "remote desktop cant find the computer",
                &["cannot-find-computer"],
            ),
            (
                "An authentication error has occurred.\r\nThe Local Security Authority cannot be contacted\r\n\r\nRemote computer: 10.0.0.4",
                &["lsa-cannot-be-contacted"],
            ),
            (
                "the local security authority can’t be contacted",
                &["lsa-cannot-be-contacted"],
            ),
            (
                "Windows Security error: Your credentials did not work.",
                &["credentials-did-not-work"],
            ),
            (
                "Windows Security\nYour credentials didn’t work\nThe credentials that were used to connect to 20.1.2.3 did not work.",
                &["credentials-did-not-work"],
            ),
            (
                "YOUR CREDENTIALS DID NOT WORK",
                &["credentials-did-not-work"],
            ),
            (
                "This computer can't connect to the remote computer.",
                &["cannot-connect-to-remote-computer"],
            ),
            (
                "Remote Desktop Connection: This computer can’t connect to the remote computer.\nTry connecting again.",
                &["cannot-connect-to-remote-computer"],
            ),
            (
                "this computer cannot  connect to the\nremote computer",
                &["cannot-connect-to-remote-computer"],
            ),
            // Two messages in one paste: in the order they appear.
            (
                "first: Your credentials did not work. then: Remote Desktop can't find the computer \"x\"",
                &["credentials-did-not-work", "cannot-find-computer"],
            ),
            ("", &[]),
            ("The VM is slow and the disk is full.", &[]),
            // CredSSP's "authentication error" is a different problem from the LSA one.
            (
                "An authentication error has occurred. The function requested is not supported.",
                &[],
            ),
            ("Remote Desktop can find the computer", &[]),
        ];
        for (text, expect) in cases {
            check_explain(text, expect);
        }
    }

    // A small but complete pair of files; the invalid cases below each change one thing.
    const RDP: &str = r#"ladder = ["start", "redeploy"]

[texts]
no_public_ip = "a"
agent_not_ready = "b"
linux = "c"
classic = "d"
enable_boot_diagnostics = "e"
register_resource_health = "f"
reconnect = "g"

[[step]]
id = "vm-status"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "vm-agent"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "public-ip"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "nsg"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "resource-health"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "boot-diagnostics"
kind = "check"
title = "t"
doc = "https://example.com/"
next_step = "n"

[[step]]
id = "reset-rdp-config"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "Reset {vm}?"
permission = "operate"
requires = ["running", "agent-ready"]

[[step]]
id = "open-rdp-port"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "admin"

[[step]]
id = "reset-password"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "admin"

[[step]]
id = "start"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "restart"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "operate"

[[step]]
id = "redeploy"
kind = "action"
title = "t"
doc = "https://example.com/"
next_step = "n"
confirm = "c"
permission = "admin"
"#;

    const ERRORS: &str = r#"[[error]]
id = "one"
pattern = 'one\s+error'
message = "m"
cause = "c"
fix = "f"
doc = "https://example.com/"

[[error]]
id = "two"
pattern = "two"
message = "m"
cause = "c"
fix = "f"
doc = "https://example.com/"
steps = ["nsg"]
"#;

    /// Replaces `from` (which must occur) by `to` in the rdp file if `from` starts with `rdp:`,
    /// else in the errors file, loads both, and compares the error's Display with `expect`;
    /// returns the mismatch so that one run shows every failing case.
    fn check_invalid(from: &str, to: &str, expect: &str) -> Option<String> {
        let (mut rdp, mut errors) = (RDP.to_string(), ERRORS.to_string());
        let (target, from) = match from.strip_prefix("rdp:") {
            Some(from) => (&mut rdp, from),
            None => (&mut errors, from.strip_prefix("errors:").unwrap_or(from)),
        };
        assert!(target.contains(from), "fixture has no {from:?}");
        *target = target.replacen(from, to, 1);
        match Catalog::from_strs(
            &rdp,
            "commands/rdp.toml",
            &errors,
            "commands/rdp-errors.toml",
        ) {
            Ok(_) => Some(format!("{from:?} -> {to:?} loaded")),
            Err(e) if e.to_string() == expect => None,
            Err(e) => Some(format!(
                "{from:?} -> {to:?}\n  got:    {e}\n  expect: {expect}"
            )),
        }
    }

    #[test]
    fn fixture_loads() {
        let catalog = Catalog::from_strs(RDP, "rdp.toml", ERRORS, "rdp-errors.toml");
        assert!(catalog.is_ok(), "{:?}", catalog.err());
    }

    #[test]
    fn invalid_files_name_file_line_and_field() {
        let cases = [
            // Parse errors: toml + serde.
            (
                "rdp:next_step = \"n\"\n\n[[step]]\nid = \"vm-agent\"",
                "next_step = \"n\"\ncolour = \"red\"\n\n[[step]]\nid = \"vm-agent\"",
                "commands/rdp.toml:18:1: field `colour`: unknown field `colour`, expected one of `id`, `kind`, `title`, `runbook_step`, `doc`, `next_step`, `confirm`, `permission`, `requires`",
            ),
            (
                "rdp:permission = \"operate\"\nrequires",
                "permission = \"root\"\nrequires",
                "commands/rdp.toml:61:14: field `permission`: unknown variant `root`, expected one of `read`, `operate`, `admin`",
            ),
            (
                "rdp:kind = \"check\"\ntitle = \"t\"\ndoc",
                "kind = \"check\"\ntitle = \"t\"\nrunbook_step = \"two\"\ndoc",
                "commands/rdp.toml:16:16: field `runbook_step`: invalid type: string \"two\", expected u8",
            ),
            (
                "rdp:[\"running\", \"agent-ready\"]",
                "[\n  \"running\",\n  \"agent-reedy\",\n]",
                "commands/rdp.toml:64:3: field `requires`: unknown variant `agent-reedy`, expected one of `running`, `agent-ready`, `windows`, `deallocated-or-stopped`",
            ),
            (
                "rdp:reconnect = \"g\"\n",
                "",
                "commands/rdp.toml:3:1: field `reconnect`: missing field `reconnect`",
            ),
            (
                "rdp:id = \"nsg\"\nkind = \"check\"",
                "id = \"nsg\"\nkind \"check\"",
                "commands/rdp.toml:35:6: expected `.`, `=`",
            ),
            (
                "errors:fix = \"f\"",
                "fix = 3",
                "commands/rdp-errors.toml:6:7: field `fix`: invalid type: integer `3`, expected a string",
            ),
            // Validation errors.
            (
                "errors:pattern = \"two\"",
                "pattern = \"two(\"",
                "commands/rdp-errors.toml:11: field `pattern`: error `two`: unclosed group",
            ),
            (
                "errors:pattern = \"two\"",
                "pattern = \"(two)?\"",
                "commands/rdp-errors.toml:11: field `pattern`: error `two`: pattern matches empty text, so it would match anything",
            ),
            (
                "errors:id = \"two\"",
                "id = \"one\"",
                "commands/rdp-errors.toml:10: field `id`: error `one` is defined twice",
            ),
            (
                "errors:steps = [\"nsg\"]",
                "steps = [\"nsgg\"]",
                "commands/rdp-errors.toml:16:9: field `steps`: unknown step `nsgg`; checks are vm-status, vm-agent, public-ip, nsg, resource-health, boot-diagnostics; actions are reset-rdp-config, open-rdp-port, reset-password, start, restart, redeploy",
            ),
            (
                "errors:doc = \"https://example.com/\"",
                "doc = \"http://example.com/\"",
                "commands/rdp-errors.toml:7: field `doc`: error `one`: doc must be an https:// URL, got `http://example.com/`",
            ),
            (
                "rdp:id = \"redeploy\"",
                "id = \"reboot\"",
                "commands/rdp.toml:101:6: field `id`: unknown step `reboot`; checks are vm-status, vm-agent, public-ip, nsg, resource-health, boot-diagnostics; actions are reset-rdp-config, open-rdp-port, reset-password, start, restart, redeploy",
            ),
            (
                "rdp:id = \"restart\"",
                "id = \"start\"",
                "commands/rdp.toml:92: field `id`: step `start` is defined twice (first at line 83)",
            ),
            (
                "rdp:confirm = \"c\"\npermission = \"admin\"\n",
                "",
                "commands/rdp.toml:65: field `confirm`: action `open-rdp-port` needs a confirmation text",
            ),
            (
                "rdp:permission = \"operate\"\n\n[[step]]\nid = \"restart\"",
                "\n[[step]]\nid = \"restart\"",
                "commands/rdp.toml:83: field `permission`: action `start` needs a permission: \"read\", \"operate\" or \"admin\"",
            ),
            (
                "rdp:Reset {vm}?",
                "Reset {vmname}?",
                "commands/rdp.toml:60: field `confirm`: action `reset-rdp-config`: unknown placeholder `{vmname}`; use {vm}, {resource_group}, {username}",
            ),
            (
                "rdp:id = \"nsg\"\nkind = \"check\"",
                "id = \"nsg\"\nkind = \"action\"",
                "commands/rdp.toml:35: field `kind`: `nsg` is a check: write kind = \"check\"",
            ),
            (
                "rdp:id = \"nsg\"\nkind = \"check\"",
                "id = \"nsg\"\nkind = \"check\"\npermission = \"read\"",
                "commands/rdp.toml:36: field `permission`: `nsg` is a check; only actions have `permission`",
            ),
            (
                "rdp:[[step]]\nid = \"boot-diagnostics\"\nkind = \"check\"\ntitle = \"t\"\ndoc = \"https://example.com/\"\nnext_step = \"n\"\n",
                "",
                "commands/rdp.toml: field `step`: missing check `boot-diagnostics`: add a [[step]] with id = \"boot-diagnostics\"",
            ),
            (
                "rdp:ladder = [\"start\", \"redeploy\"]",
                "ladder = [\"start\", \"nsg\"]",
                "commands/rdp.toml:1:10: field `ladder`: unknown action `nsg`; actions are reset-rdp-config, open-rdp-port, reset-password, start, restart, redeploy",
            ),
            (
                "rdp:doc = \"https://example.com/\"",
                "doc = \"learn.microsoft.com\"",
                "commands/rdp.toml:16: field `doc`: `vm-status`: doc must be an https:// URL, got `learn.microsoft.com`",
            ),
        ];
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|(from, to, expect)| check_invalid(from, to, expect))
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn load_dir_reads_files_and_falls_back_to_builtins() {
        let dir = std::env::temp_dir().join(format!("rdp-doctor-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");

        // Nothing in the directory: the built-in runbook.
        let catalog = Catalog::load_dir(&dir).map_err(|e| e.to_string());
        assert_eq!(catalog.map(|c| c.steps.len()), Ok(12));

        // A broken errors file is reported under its real path; rdp.toml still falls back.
        let errors_path = dir.join("rdp-errors.toml");
        std::fs::write(&errors_path, "[[error]]\nid = 1\n").expect("write errors file");
        let err = Catalog::load_dir(&dir)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err(format!(
                "{}:2:6: field `id`: invalid type: integer `1`, expected a string",
                errors_path.display()
            ))
        );
        std::fs::remove_dir_all(&dir).expect("remove temp dir");

        // A missing directory is an error, not a silent fallback.
        let err = Catalog::load_dir(&dir)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_err_and(|e| e.starts_with(&format!("{}: cannot read: ", dir.display()))),
            "{err:?}"
        );
    }
}
