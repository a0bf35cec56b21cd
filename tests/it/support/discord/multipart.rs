//! Request bodies: JSON, or `multipart/form-data` with `payload_json` and `files[n]`.

use serde_json::Value;

/// One uploaded file of a multipart body.
pub(super) struct Upload {
    /// `n` of a `files[n]` part.
    pub(super) index: Option<u64>,
    pub(super) filename: String,
    pub(super) content_type: String,
    pub(super) bytes: Vec<u8>,
}

pub(super) fn parse_body(
    content_type: &str,
    body: &[u8],
    violations: &mut Vec<String>,
) -> (Option<Value>, Vec<Upload>) {
    if body.is_empty() {
        return (None, Vec::new());
    }
    if content_type.starts_with("multipart/form-data") {
        let Some(boundary) = content_type.split(';').find_map(|p| {
            p.trim()
                .strip_prefix("boundary=")
                .map(|b| b.trim_matches('"').to_string())
        }) else {
            violations.push("multipart body without a boundary".to_string());
            return (None, Vec::new());
        };
        let mut json = None;
        let mut uploads = Vec::new();
        for part in multipart_parts(body, &boundary) {
            if part.name == "payload_json" {
                match serde_json::from_slice(&part.bytes) {
                    Ok(v) => json = Some(v),
                    Err(e) => violations.push(format!("payload_json is not JSON: {e}")),
                }
            } else if let Some(n) = part
                .name
                .strip_prefix("files[")
                .and_then(|s| s.strip_suffix(']'))
            {
                uploads.push(Upload {
                    index: n.parse().ok(),
                    filename: part.filename.unwrap_or_default(),
                    content_type: part.content_type,
                    bytes: part.bytes,
                });
            } else {
                violations.push(format!("unexpected multipart part {:?}", part.name));
            }
        }
        return (json, uploads);
    }
    match serde_json::from_slice(body) {
        Ok(v) => (Some(v), Vec::new()),
        Err(e) => {
            violations.push(format!("body ({content_type}) is not JSON: {e}"));
            (None, Vec::new())
        }
    }
}

struct Part {
    name: String,
    filename: Option<String>,
    content_type: String,
    bytes: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let Some(start) = find(body, delimiter.as_bytes()) else {
        return parts;
    };
    let mut rest = &body[start + delimiter.len()..];
    let next_delimiter = format!("\r\n--{boundary}");
    while !rest.starts_with(b"--") {
        let Some(header_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let headers = String::from_utf8_lossy(&rest[..header_end]).to_string();
        let content = &rest[header_end + 4..];
        let Some(end) = find(content, next_delimiter.as_bytes()) else {
            break;
        };
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: "text/plain".to_string(),
            bytes: content[..end].to_vec(),
        };
        for line in headers.lines() {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                for param in line.split(';').skip(1) {
                    let param = param.trim();
                    if let Some(v) = param.strip_prefix("name=") {
                        part.name = v.trim_matches('"').to_string();
                    } else if let Some(v) = param.strip_prefix("filename=") {
                        part.filename = Some(v.trim_matches('"').to_string());
                    }
                }
            } else if lower.starts_with("content-type:") {
                part.content_type = line["content-type:".len()..].trim().to_string();
            }
        }
        parts.push(part);
        rest = &content[end + next_delimiter.len()..];
    }
    parts
}
