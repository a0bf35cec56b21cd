//! Request bodies: JSON, or `multipart/form-data` with `payload_json` and `files[n]`.

use axum::body::Bytes;
use serde_json::Value;
use std::convert::Infallible;

/// One uploaded file of a multipart body.
pub(super) struct Upload {
    /// `n` of a `files[n]` part.
    pub(super) index: Option<u64>,
    pub(super) filename: String,
    pub(super) content_type: String,
    pub(super) bytes: Vec<u8>,
}

pub(super) async fn parse_body(
    content_type: &str,
    body: &Bytes,
    violations: &mut Vec<String>,
) -> (Option<Value>, Vec<Upload>) {
    if body.is_empty() {
        return (None, Vec::new());
    }
    if content_type.starts_with("multipart/form-data") {
        return parse_multipart(content_type, body.clone(), violations).await;
    }
    match serde_json::from_slice(body) {
        Ok(v) => (Some(v), Vec::new()),
        Err(e) => {
            violations.push(format!("body ({content_type}) is not JSON: {e}"));
            (None, Vec::new())
        }
    }
}

/// The `payload_json` part and the `files[n]` parts; any other part, or a body multer cannot
/// read (no boundary, a part without its headers, no closing delimiter), is a violation.
async fn parse_multipart(
    content_type: &str,
    body: Bytes,
    violations: &mut Vec<String>,
) -> (Option<Value>, Vec<Upload>) {
    let boundary = match multer::parse_boundary(content_type) {
        Ok(boundary) => boundary,
        Err(e) => {
            violations.push(format!("multipart body without a boundary: {e}"));
            return (None, Vec::new());
        }
    };
    let body = futures::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(body, boundary);
    let mut json = None;
    let mut uploads = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                violations.push(format!("malformed multipart body: {e}"));
                break;
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let filename = field.file_name().map(str::to_string);
        let part_type = field
            .content_type()
            .map_or_else(|| "text/plain".to_string(), |m| m.to_string());
        let bytes = match field.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                violations.push(format!("multipart part {name:?}: {e}"));
                break;
            }
        };
        if name == "payload_json" {
            match serde_json::from_slice(&bytes) {
                Ok(v) => json = Some(v),
                Err(e) => violations.push(format!("payload_json is not JSON: {e}")),
            }
        } else if let Some(n) = name
            .strip_prefix("files[")
            .and_then(|s| s.strip_suffix(']'))
        {
            uploads.push(Upload {
                index: n.parse().ok(),
                filename: filename.unwrap_or_default(),
                content_type: part_type,
                bytes: bytes.to_vec(),
            });
        } else {
            violations.push(format!("unexpected multipart part {name:?}"));
        }
    }
    (json, uploads)
}
