//! What rdp-doctor's read-only guest script reports from inside Windows, as plain data.
//!
//! The script runs through Run Command (`RunPowerShellScript`) and prints one stdout line,
//! [`READ_OUTPUT_PREFIX`] followed by compact JSON in the shape of [`GuestFacts`] (`"v": 1`).
//! Every part is optional: a part the script could not read is `null`, and a finding about it
//! says so instead of guessing. Scripts are recognised by their first line: the read script's is
//! [`READ_SCRIPT_MARKER`], a fix script's is `# rdp-doctor:guest-fix:<fix>:v1`
//! ([`fix_script_marker`]), and a fix prints [`FIX_OUTPUT_PREFIX`] followed by a [`FixOutput`].

use serde::{Deserialize, Serialize};

mod findings;
pub use findings::{findings, listener_port, port_covers, RDP_PORT};

/// The read script's first line.
pub const READ_SCRIPT_MARKER: &str = "# rdp-doctor:guest-read:v1";
/// What the read script's result line starts with (a space follows, then the JSON).
pub const READ_OUTPUT_PREFIX: &str = "RDP-DOCTOR-GUEST";
/// What a fix script's result line starts with (a space follows, then the JSON).
pub const FIX_OUTPUT_PREFIX: &str = "RDP-DOCTOR-FIX";
/// The version of the JSON this build reads.
pub const FACTS_VERSION: u32 = 1;

/// The first line of the fix script for `fix` (e.g. `enable-rdp`).
pub fn fix_script_marker(fix: &str) -> String {
    format!("# rdp-doctor:guest-fix:{fix}:v1")
}

/// Everything the read script reports, in the JSON's own names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestFacts {
    pub v: u32,
    pub rdp: Option<RdpSetting>,
    pub term_service: Option<ServiceState>,
    pub listener: Option<Listener>,
    pub firewall: Option<Firewall>,
    pub nla: Option<Nla>,
    pub certificate: Option<Certificate>,
    pub licensing: Option<Licensing>,
    pub system_drive: Option<Drive>,
    pub pending_reboot: Option<PendingReboot>,
    /// The guest's clock when the script ran (RFC 3339).
    pub checked_at: Option<String>,
}

/// `fDenyTSConnections` (0 allows Remote Desktop) and the policy value that overrides it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdpSetting {
    #[serde(rename = "fDenyTSConnections")]
    pub deny: Option<u32>,
    /// `HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services\fDenyTSConnections`;
    /// `None` when no policy sets it. A policy value wins over the local one.
    #[serde(rename = "policyDeny")]
    pub policy_deny: Option<u32>,
}

/// A service as `Get-Service` names its state (`Running`, `Stopped`, …; `Automatic`, `Manual`,
/// `Disabled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    pub status: Option<String>,
    pub start_type: Option<String>,
}

/// The RDP-Tcp listener: its configured port and whether a process listens on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub port: Option<u16>,
    pub listening: Option<bool>,
    pub process: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firewall {
    pub profiles: Vec<FirewallProfile>,
    /// Inbound rules whose local port covers the listener port or that belong to the
    /// "Remote Desktop" group, enabled or not.
    pub rules: Vec<FirewallRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirewallProfile {
    pub name: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallRule {
    pub name: String,
    pub enabled: bool,
    /// `Allow` or `Block`.
    pub action: String,
    pub protocol: Option<String>,
    /// As the firewall shows it: `3389`, `3389-3390`, `Any`, `RPC`…
    pub local_port: Option<String>,
    /// `Any`, or a comma-separated list of `Domain`, `Private`, `Public`.
    pub profiles: Option<String>,
}

/// Network Level Authentication (`UserAuthentication`: 1 required) and the security layer
/// (`SecurityLayer`: 0 RDP, 1 negotiate, 2 TLS) of RDP-Tcp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Nla {
    pub user_authentication: Option<u32>,
    pub security_layer: Option<u32>,
}

/// The certificate RDP-Tcp presents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    pub thumbprint: Option<String>,
    pub subject: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
}

/// Remote Desktop licensing: only matters with the RD Session Host role installed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Licensing {
    pub rdsh_installed: bool,
    /// 2 per device, 4 per user, `None` not configured.
    pub mode: Option<u32>,
    pub license_servers: Vec<String>,
    /// `None` when the RD Session Host role is not installed.
    pub grace_days_left: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drive {
    pub drive: String,
    pub free_bytes: u64,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingReboot {
    pub pending: bool,
    /// E.g. `ComponentBasedServicing`, `WindowsUpdate`, `PendingFileRenameOperations`.
    pub reasons: Vec<String>,
}

/// What a fix script reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixOutput {
    pub fix: String,
    /// What changed, in words.
    pub changed: Vec<String>,
}

/// rdp-doctor's read script (`commands/guest/read.ps1`), compiled in. Its first line is
/// [`READ_SCRIPT_MARKER`]; it only reads.
pub const READ_SCRIPT: &str = include_str!("../../commands/guest/read.ps1");

/// The read script as Run Command takes it: one element per line.
pub fn read_script() -> Vec<String> {
    script_lines(READ_SCRIPT)
}

/// A script's text as Run Command's `script` array: one element per line, CRLF tolerated.
pub fn script_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.trim_end_matches('\r').to_owned())
        .collect()
}

/// Why a script's output could not be read. Each names what was wrong, never the whole output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestOutputError {
    /// No line starts with the prefix: the script did not run to its end, or it is not ours.
    #[error("the script printed no {prefix} line")]
    Missing { prefix: &'static str },
    /// More than one result line: which one is true cannot be told.
    #[error("the script printed {count} {prefix} lines instead of one")]
    Several { prefix: &'static str, count: usize },
    /// The JSON ends early (Run Command returns only the last 4,096 bytes of each output).
    #[error("the {prefix} line is cut short: its JSON ends early")]
    Truncated { prefix: &'static str },
    /// Not JSON.
    #[error("the {prefix} line is not valid JSON ({detail})")]
    Garbled {
        prefix: &'static str,
        detail: String,
    },
    /// JSON, but of a version this build does not read.
    #[error("the guest facts are version {found}; this rdp-doctor reads version {FACTS_VERSION}")]
    UnknownVersion { found: String },
    /// JSON of the right version whose fields have the wrong types or are missing.
    #[error("the {prefix} line does not have the expected fields ({detail})")]
    WrongShape {
        prefix: &'static str,
        detail: String,
    },
}

/// The JSON after `prefix` on the one line of `stdout` that starts with it. Lines may end in
/// CRLF and trailing whitespace; a byte order mark before the line (or the output) is ignored.
fn marked_json<'a>(stdout: &'a str, prefix: &'static str) -> Result<&'a str, GuestOutputError> {
    let found: Vec<&str> = stdout
        .split('\n')
        .map(|line| line.trim_start_matches('\u{feff}').trim_end())
        .filter_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            if rest.is_empty() {
                Some(rest)
            } else {
                rest.strip_prefix([' ', '\t']).map(str::trim_start)
            }
        })
        .collect();
    match found.as_slice() {
        [] => Err(GuestOutputError::Missing { prefix }),
        [json] => Ok(json),
        more => Err(GuestOutputError::Several {
            prefix,
            count: more.len(),
        }),
    }
}

/// Parses the JSON after `prefix`, telling a cut-short line from a garbled one.
fn json_value(json: &str, prefix: &'static str) -> Result<serde_json::Value, GuestOutputError> {
    serde_json::from_str(json).map_err(|e| {
        if e.is_eof() {
            GuestOutputError::Truncated { prefix }
        } else {
            GuestOutputError::Garbled {
                prefix,
                detail: format!("{} at column {}", e.classify_text(), e.column()),
            }
        }
    })
}

/// What kind of JSON error, in words, without quoting the output.
trait Classify {
    fn classify_text(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_text(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Eof => "unexpected end",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Io => "read error",
        }
    }
}

/// A serde error about the shape, without the values it quotes.
fn shape_detail(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // serde's "invalid type: string \"…\", expected u32" quotes the value: keep what it expected.
    match text.split_once(", expected ") {
        Some((kind, expected)) => {
            let kind = kind.split(':').next().unwrap_or(kind);
            format!("{kind}, expected {expected}")
        }
        None => text,
    }
}

/// Reads the read script's stdout: the one `RDP-DOCTOR-GUEST {json}` line among any other
/// output, as [`GuestFacts`] of version [`FACTS_VERSION`].
pub fn parse_read(stdout: &str) -> Result<GuestFacts, GuestOutputError> {
    let prefix = READ_OUTPUT_PREFIX;
    let value = json_value(marked_json(stdout, prefix)?, prefix)?;
    match value.get("v") {
        Some(v) if v.as_u64() == Some(u64::from(FACTS_VERSION)) => {}
        Some(v) => {
            let found = match v {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(_) => "a string".to_owned(),
                serde_json::Value::Null => "null".to_owned(),
                _ => "not a number".to_owned(),
            };
            return Err(GuestOutputError::UnknownVersion { found });
        }
        None => {
            return Err(GuestOutputError::WrongShape {
                prefix,
                detail: "no version `v`".to_owned(),
            })
        }
    }
    serde_json::from_value(value).map_err(|e| GuestOutputError::WrongShape {
        prefix,
        detail: shape_detail(&e),
    })
}

/// Reads a fix script's stdout: the one `RDP-DOCTOR-FIX {json}` line among any other output.
pub fn parse_fix(stdout: &str) -> Result<FixOutput, GuestOutputError> {
    let prefix = FIX_OUTPUT_PREFIX;
    let value = json_value(marked_json(stdout, prefix)?, prefix)?;
    serde_json::from_value(value).map_err(|e| GuestOutputError::WrongShape {
        prefix,
        detail: shape_detail(&e),
    })
}

/// The contract's healthy example as a struct literal, for the tests of parsing and findings.
#[cfg(test)]
pub(crate) fn healthy_example() -> GuestFacts {
    GuestFacts {
        v: 1,
        rdp: Some(RdpSetting {
            deny: Some(0),
            policy_deny: None,
        }),
        term_service: Some(ServiceState {
            status: Some("Running".into()),
            start_type: Some("Automatic".into()),
        }),
        listener: Some(Listener {
            port: Some(3389),
            listening: Some(true),
            process: Some("svchost".into()),
        }),
        firewall: Some(Firewall {
            profiles: ["Domain", "Private", "Public"]
                .map(|name| FirewallProfile {
                    name: name.into(),
                    enabled: true,
                })
                .to_vec(),
            rules: vec![FirewallRule {
                name: "RemoteDesktop-UserMode-In-TCP".into(),
                enabled: true,
                action: "Allow".into(),
                protocol: Some("TCP".into()),
                local_port: Some("3389".into()),
                profiles: Some("Any".into()),
            }],
        }),
        nla: Some(Nla {
            user_authentication: Some(1),
            security_layer: Some(2),
        }),
        certificate: Some(Certificate {
            thumbprint: Some("AB12".into()),
            subject: Some("CN=web-01".into()),
            not_after: Some("2027-05-01T10:00:00Z".into()),
        }),
        licensing: Some(Licensing {
            rdsh_installed: false,
            mode: None,
            license_servers: vec![],
            grace_days_left: None,
        }),
        system_drive: Some(Drive {
            drive: "C:".into(),
            free_bytes: 53_687_091_200,
            size_bytes: 136_365_211_648,
        }),
        pending_reboot: Some(PendingReboot {
            pending: false,
            reasons: vec![],
        }),
        checked_at: Some("2026-11-30T09:00:00Z".into()),
    }
}

#[cfg(test)]
mod output_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example_reads() {
        let json = r#"{"v":1,
 "rdp":{"fDenyTSConnections":0,"policyDeny":null},
 "termService":{"status":"Running","startType":"Automatic"},
 "listener":{"port":3389,"listening":true,"process":"svchost"},
 "firewall":{"profiles":[{"name":"Domain","enabled":true},{"name":"Private","enabled":true},{"name":"Public","enabled":true}],
             "rules":[{"name":"RemoteDesktop-UserMode-In-TCP","enabled":true,"action":"Allow","protocol":"TCP","localPort":"3389","profiles":"Any"}]},
 "nla":{"userAuthentication":1,"securityLayer":2},
 "certificate":{"thumbprint":"AB","subject":"CN=web-01","notAfter":"2027-05-01T10:00:00Z"},
 "licensing":{"rdshInstalled":false,"mode":null,"licenseServers":[],"graceDaysLeft":null},
 "systemDrive":{"drive":"C:","freeBytes":53687091200,"sizeBytes":136365211648},
 "pendingReboot":{"pending":false,"reasons":[]},
 "checkedAt":"2026-11-30T09:00:00Z"}"#;
        let facts: GuestFacts = serde_json::from_str(json).unwrap();
        assert_eq!(facts.rdp.as_ref().unwrap().deny, Some(0));
        assert_eq!(facts.listener.as_ref().unwrap().port, Some(3389));
        assert_eq!(
            facts.firewall.as_ref().unwrap().rules[0]
                .local_port
                .as_deref(),
            Some("3389")
        );
        assert_eq!(
            facts.system_drive.as_ref().unwrap().free_bytes,
            53_687_091_200
        );
        let back: GuestFacts =
            serde_json::from_str(&serde_json::to_string(&facts).unwrap()).unwrap();
        assert_eq!(back, facts);
    }
}
