//! Defence in depth: the callers never hand the store a secret, and if one does by mistake the
//! store refuses the write instead of keeping it forever. Refusals name the offending key or
//! query parameter, never the value.

use super::StoreError;

/// Key fragments that mark a secret, compared in ASCII lower case.
const SECRET_KEY_PARTS: [&str; 6] = [
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "private_key",
];

/// Query parameters that make a URL a credential: `sig` is the signature of an Azure Storage SAS
/// URL (boot diagnostics blobs); the others are the usual ways of putting a secret in a URL.
const SECRET_QUERY_PARAMS: [&str; 5] = ["sig", "token", "access_token", "password", "secret"];

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "pwd" || SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// `json` must be a JSON object with no secret-looking key or URL anywhere inside it.
pub(super) fn check_json(what: &'static str, json: &str) -> Result<(), StoreError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| StoreError::InvalidJson {
            what,
            message: e.to_string(),
        })?;
    if !value.is_object() {
        return Err(StoreError::InvalidJson {
            what,
            message: "expected an object".to_string(),
        });
    }
    check_value(what, &value)
}

fn check_value(what: &'static str, value: &serde_json::Value) -> Result<(), StoreError> {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                if is_secret_key(key) {
                    return Err(StoreError::Secret {
                        what,
                        found: format!("a field named `{key}`"),
                    });
                }
                check_value(what, inner)?;
            }
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| check_value(what, v)),
        serde_json::Value::String(s) => check_text(what, s),
        _ => Ok(()),
    }
}

/// Free text (a URL, an error message, an audit result) must not carry a secret URL.
pub(super) fn check_text(what: &'static str, text: &str) -> Result<(), StoreError> {
    // Look at every `?...` or `&...` query-like stretch: `sig=` etc. may sit inside a sentence.
    for (i, _) in text.match_indices(['?', '&']) {
        let rest = &text[i + 1..];
        let name = rest.split('=').next().unwrap_or_default();
        if rest.len() > name.len()
            && SECRET_QUERY_PARAMS
                .iter()
                .any(|p| name.eq_ignore_ascii_case(p))
        {
            return Err(StoreError::Secret {
                what,
                found: format!("a URL with a `{name}` parameter"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expect: Result<(), &str>) {
        let got = check_json("params", json).map_err(|e| e.to_string());
        match (&got, expect) {
            (Ok(()), Ok(())) => {}
            (Err(msg), Err(fragment)) if msg.contains(fragment) => {}
            _ => panic!("{json}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn secret_keys_and_sas_urls_are_refused_naming_the_key_not_the_value() {
        check(r#"{"source":"203.0.113.0/24"}"#, Ok(()));
        check(r#"{"username":"azureadmin"}"#, Ok(()));
        check(
            r#"{"url":"https://x.blob.core.windows.net/c/b?sv=1"}"#,
            Ok(()),
        );
        check(r#"{"password":"hunter2"}"#, Err("a field named `password`"));
        check(r#"{"NewPassword":"x"}"#, Err("`NewPassword`"));
        check(
            r#"{"a":{"b":[{"client_secret":"x"}]}}"#,
            Err("`client_secret`"),
        );
        check(r#"{"pwd":"x"}"#, Err("`pwd`"));
        check(
            r#"{"serial":"https://x.blob.core.windows.net/c/b?sv=1&SIG=abc"}"#,
            Err("a URL with a `SIG` parameter"),
        );
        check(r#"[1]"#, Err("not a JSON object: expected an object"));
        check(r#"{"#, Err("not a JSON object"));
        let err = check_json("params", r#"{"password":"hunter2"}"#)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn text_with_a_signature_is_refused() {
        assert!(check_text("url", "https://management.azure.com/op?api-version=1").is_ok());
        assert!(check_text("url", "https://a/b?api-version=1&sig=x").is_err());
        assert!(check_text("result", "failed: see https://a/b?token=x").is_err());
        assert!(check_text("result", "failed: what?").is_ok());
        assert!(check_text("result", "a & b ?sig").is_ok());
    }
}
