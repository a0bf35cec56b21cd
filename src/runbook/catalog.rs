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
use toml::Spanned;

use crate::spans::{line_col, Fields};

use crate::diagnose::{ActionId, CheckId, Finding, StepId};

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
    /// The guest checks (`check --guest`, `/rdp guest`): Run Command runs the read script as
    /// SYSTEM inside Windows, so `operate` unless the runbook says otherwise.
    #[serde(default = "operate")]
    pub guest: Permission,
}

fn operate() -> Permission {
    Permission::Operate
}

impl Default for CommandLevels {
    fn default() -> CommandLevels {
        CommandLevels {
            check: Permission::Read,
            health: Permission::Read,
            console: Permission::Read,
            sweep: Permission::Operate,
            audit: Permission::Read,
            guest: Permission::Operate,
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

/// A person's level; the policy grants it and the catalog asks for it (it lives in `domain` so
/// the policy needs nothing of the runbook).
pub use crate::domain::Permission;

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
    /// The client's error codes for this message, lower-case without leading zeros (`0x204`).
    pub codes: Vec<String>,
    /// The checks and fixes that address it, checks first.
    pub steps: Vec<StepId>,
    /// Compiled case-insensitive; matched against normalised text (see [`Catalog::explain`]).
    pattern: Regex,
    /// The message's words (see [`words`]), for fragments and the closest entries.
    words: String,
}

impl ClientError {
    /// The compiled pattern (case-insensitive).
    pub fn pattern(&self) -> &Regex {
        &self.pattern
    }

    /// The checks among [`ClientError::steps`], in the file's order.
    pub fn checks(&self) -> Vec<CheckId> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                StepId::Check(c) => Some(*c),
                StepId::Action(_) => None,
            })
            .collect()
    }

    /// The fixes among [`ClientError::steps`], in the file's order.
    pub fn fixes(&self) -> Vec<ActionId> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                StepId::Action(a) => Some(*a),
                StepId::Check(_) => None,
            })
            .collect()
    }
}

/// A runbook file that could not be read or is wrong. Displays as one line naming the file, the
/// line and column of the value and the field: ``commands/rdp.toml:12:5: field `permission`:
/// unknown variant ...``.
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
    /// A value that parses but is wrong; `at` is its line and column, `None` for what is missing
    /// from the file altogether.
    #[error("{path}{}: field `{field}`: {message}", crate::spans::suffix(.at))]
    Invalid {
        path: String,
        at: Option<(usize, usize)>,
        field: String,
        message: String,
    },
}

fn field_prefix(field: Option<&str>) -> String {
    field.map_or_else(String::new, |f| format!("field `{f}`: "))
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
        let v = Validator::new(rdp_toml, rdp_path);
        v.steps(&rdp.steps)?;
        v.ladder(&rdp.ladder)?;
        v.texts(&rdp.texts)?;
        let v = Validator::new(errors_toml, errors_path);
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

    /// A check's title as people read it (its id, should the catalog lack the step).
    pub fn check_title(&self, check: CheckId) -> String {
        self.step(check)
            .map(|s| s.title.clone())
            .unwrap_or_else(|| check.as_str().to_string())
    }

    /// A finding's title: its own (`Finding::title`, where its check's would be wrong), or its
    /// check's.
    pub fn finding_title(&self, finding: &Finding) -> String {
        finding
            .title
            .clone()
            .unwrap_or_else(|| self.check_title(finding.step))
    }

    /// The client errors that `text` names, best first. `text` is what people paste: part of the
    /// dialog or all of it, wrapped over lines, with its title, typographic quotes and the
    /// trailing "Error code: 0x204". An entry matches when its pattern occurs in the text, when
    /// the text holds its whole message or a fragment of it (four words or more), or when the text
    /// names one of its codes (`0x204`, `error code: 0x00000204`, `code 204`). The best is the
    /// longest match, an exact code counting above any text; ties go to the one that appears
    /// first in the text, then to file order.
    pub fn explain(&self, text: &str) -> Vec<&ClientError> {
        let text = clip_input(text);
        let normal = normalize(text);
        let pasted = [words(&normal), fragment_words(&normal)];
        let codes = codes_in(&normal);
        let mut hits: Vec<(usize, usize, usize, &ClientError)> = self
            .errors
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let by_pattern = e.pattern.find(&normal).map(|m| (m.len(), m.start()));
                let by_words = pasted
                    .iter()
                    .filter_map(|p| word_match(p, &e.words))
                    .max_by_key(|&(len, start)| (len, std::cmp::Reverse(start)));
                let by_code = e.codes.iter().any(|c| codes.contains(c));
                let (len, start) = match (by_pattern, by_words) {
                    (Some(p), Some(w)) => {
                        if w.0 > p.0 {
                            w
                        } else {
                            p
                        }
                    }
                    (Some(m), None) | (None, Some(m)) => m,
                    (None, None) if by_code => (0, usize::MAX),
                    (None, None) => return None,
                };
                let score = len + if by_code { CODE_SCORE } else { 0 };
                Some((score, start, i, e))
            })
            .collect();
        hits.sort_by_key(|&(score, start, i, _)| (std::cmp::Reverse(score), start, i));
        hits.into_iter().map(|(_, _, _, e)| e).collect()
    }

    /// The `n` entries whose message is most like `text` (Sorensen-Dice over the words'
    /// bigrams), most alike first, for the answer that nothing matched.
    pub fn closest(&self, text: &str, n: usize) -> Vec<&ClientError> {
        let pasted = words(clip_input(text));
        let mut scored: Vec<(f64, usize, &ClientError)> = self
            .errors
            .iter()
            .enumerate()
            .map(|(i, e)| (strsim::sorensen_dice(&pasted, &e.words), i, e))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(n).map(|(_, _, e)| e).collect()
    }
}

/// What an exact code adds to a match's length: more than any message is long.
const CODE_SCORE: usize = 100_000;

/// Fewest words a fragment needs to count: "the remote computer" alone names nothing.
const MIN_FRAGMENT_WORDS: usize = 4;

/// Longest text considered: a pasted log is cut, so that matching stays quick.
const MAX_INPUT: usize = 16 * 1024;

fn clip_input(text: &str) -> &str {
    if text.len() <= MAX_INPUT {
        return text;
    }
    let mut end = MAX_INPUT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How `pasted` (see [`words`]) and a message's words overlap: the whole message inside the
/// paste, or the paste (four words or more) inside the message. Returns the length and where
/// in the paste it starts.
fn word_match(pasted: &str, message: &str) -> Option<(usize, usize)> {
    if message.is_empty() || pasted.is_empty() {
        return None;
    }
    let padded = |s: &str| format!(" {s} ");
    if let Some(at) = padded(pasted).find(&padded(message)) {
        return Some((message.len(), at));
    }
    let fragment = pasted.split(' ').count() >= MIN_FRAGMENT_WORDS;
    (fragment && padded(message).contains(&padded(pasted))).then_some((pasted.len(), 0))
}

/// The words of normalised pasted text without what surrounds a message in the dialog: its
/// title at the start ("Remote Desktop Connection", "Windows Security") and the code lines
/// ("Error code: 0x204", "Extended error code: 0x0").
fn fragment_words(normal: &str) -> String {
    static TITLE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)^\W*(microsoft\s+)?(remote\s+desktop\s+connection|windows\s+security|windows\s+app|remote\s+desktop)\b")
            .expect("valid title regex")
    });
    static CODE_LINE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)\b(extended\s+)?error\s+code\s*:?\s*(0x)?[0-9a-f]+\b")
            .expect("valid code line regex")
    });
    let without_title = TITLE.replace(normal, "");
    words(&CODE_LINE.replace_all(&without_title, " "))
}

/// The words of `text`, lower-case, one space apart: quotes straightened, apostrophes dropped
/// ("can't" and "cant" are one word), other punctuation and line breaks turned into spaces.
fn words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in normalize(text).chars() {
        if c == '\'' {
            continue;
        }
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

/// The hexadecimal codes named in normalised text, as `0x…` lower-case without leading zeros:
/// `0x204`, `0X00000204`, and bare hex after "code" or "error" (`code 3000046`, `error: 204`).
fn codes_in(text: &str) -> Vec<String> {
    static PREFIXED: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)\b0x([0-9a-f]{1,16})\b").expect("valid code regex")
    });
    static BARE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)\b(?:code|error)\s*[:#]?\s*([0-9a-f]{1,16})\b").expect("valid code regex")
    });
    let mut codes: Vec<String> = Vec::new();
    for re in [&*PREFIXED, &*BARE] {
        for caps in re.captures_iter(text) {
            let digits = caps[1].trim_start_matches('0');
            // A bare word after "error" must look like a number, not "error has occurred".
            if !caps[1].chars().any(|c| c.is_ascii_digit()) {
                continue;
            }
            let code = format!("0x{}", if digits.is_empty() { "0" } else { digits }).to_lowercase();
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
    }
    codes
}

/// A code as the file may write it (`0x204`, `0x0000204`, `0X112F`): the canonical form.
fn canonical_code(code: &str) -> Option<String> {
    let hex = code
        .strip_prefix("0x")
        .or_else(|| code.strip_prefix("0X"))?;
    if hex.is_empty() || hex.len() > 16 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let digits = hex.trim_start_matches('0');
    Some(format!("0x{}", if digits.is_empty() { "0" } else { digits }).to_lowercase())
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

/// Straightens typographic quotes, apostrophes and backticks, drops zero-width characters and
/// turns every run of spaces and line breaks (non-breaking ones too) into one space, so that a
/// message wrapped over lines or pasted from a chat client reads as the dialog wrote it.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{00B4}' | '`' => {
                '\''
            }
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}'
            | '\u{00BB}' => '"',
            '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' => continue,
            c if c.is_whitespace() => ' ',
            c => c,
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
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
    code: Vec<String>,
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

/// Where each value of a runbook file is, read beside the typed parse with `toml::Spanned`, so a
/// value that parses but is wrong is reported at its line and column. Unknown keys are the typed
/// parse's business; here they are only skipped.
#[derive(Default, Deserialize)]
struct Spans {
    #[serde(default)]
    ladder: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    texts: Fields,
    #[serde(default)]
    step: Vec<Fields>,
    #[serde(default)]
    error: Vec<Fields>,
}

struct Validator<'a> {
    src: &'a str,
    path: &'a str,
    spans: Spans,
}

impl<'a> Validator<'a> {
    /// `src` has already parsed as the typed file, so it parses here too.
    fn new(src: &'a str, path: &'a str) -> Validator<'a> {
        Validator {
            src,
            path,
            spans: toml::from_str(src).unwrap_or_default(),
        }
    }
}

impl Validator<'_> {
    fn invalid(&self, at: Option<(usize, usize)>, field: &str, message: String) -> CatalogError {
        CatalogError::Invalid {
            path: self.path.to_string(),
            at,
            field: field.to_string(),
            message,
        }
    }

    fn position<T>(&self, value: &Spanned<T>) -> (usize, usize) {
        crate::spans::position(self.src, value)
    }

    /// Where `field` of a `[[step]]` or `[[error]]` item is; its `id` when the field is absent.
    fn field_at(&self, item: Option<&Fields>, field: &str) -> Option<(usize, usize)> {
        let item = item?;
        item.get(field)
            .or_else(|| item.get("id"))
            .map(|value| self.position(value))
    }

    fn steps(&self, steps: &[Step]) -> Result<(), CatalogError> {
        let mut seen: HashMap<StepId, usize> = HashMap::new();
        for (nth, step) in steps.iter().enumerate() {
            let item = self.spans.step.get(nth);
            let at = |field: &str| self.field_at(item, field);
            let id = step.id.as_str();
            if let Some(&first) = seen.get(&step.id) {
                let first = self
                    .field_at(self.spans.step.get(first), "id")
                    .map_or(String::new(), |(line, _)| {
                        format!(" (first at line {line})")
                    });
                return Err(self.invalid(
                    at("id"),
                    "id",
                    format!("step `{id}` is defined twice{first}"),
                ));
            }
            seen.insert(step.id, nth);
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
        for (i, id) in ladder.iter().enumerate() {
            if ladder[..i].contains(id) {
                let at = self.spans.ladder.get(i).map(|value| self.position(value));
                return Err(self.invalid(at, "ladder", format!("`{id}` is listed twice")));
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
                let at = self
                    .spans
                    .texts
                    .get(*field)
                    .map(|value| self.position(value));
                Err(self.invalid(at, field, "text is empty".to_string()))
            }
            None => Ok(()),
        }
    }

    fn errors(&self, raw: Vec<RawClientError>) -> Result<Vec<ClientError>, CatalogError> {
        let mut errors: Vec<ClientError> = Vec::with_capacity(raw.len());
        for (nth, e) in raw.into_iter().enumerate() {
            let item = self.spans.error.get(nth);
            let at = |field: &str| self.field_at(item, field);
            let id = &e.id;
            if errors.iter().any(|prev| prev.id == e.id) {
                return Err(self.invalid(at("id"), "id", format!("error `{id}` is defined twice")));
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
            let mut codes = Vec::with_capacity(e.code.len());
            for code in &e.code {
                let Some(canonical) = canonical_code(code) else {
                    return Err(self.invalid(
                        at("code"),
                        "code",
                        format!("error `{id}`: code `{code}` is not hexadecimal like \"0x204\""),
                    ));
                };
                if canonical == "0x0" {
                    return Err(self.invalid(
                        at("code"),
                        "code",
                        format!("error `{id}`: code `{code}` is zero, which the client shows when there is no code"),
                    ));
                }
                codes.push(canonical);
            }
            errors.push(ClientError {
                words: words(&e.message),
                id: e.id,
                message: e.message,
                cause: e.cause,
                fix: e.fix,
                doc: e.doc,
                codes,
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
mod tests;
