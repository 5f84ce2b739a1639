//! Redaction: one function for every URL the program prints, and the
//! secrets of `kitbash config`'s output.

/// Replaces the password of a `scheme://user:pass@host` URL, and the value
/// of a `pass=` query parameter (`unix:///s.sock?pass=…`), with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let url = &redact_query_password(url);
    let rest = &url[scheme_end + 3..];
    // The last `@` ends the credentials even when an unencoded password
    // holds `/`, `?` or `#` (over-redacting an `@` in the query is harmless).
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let redacted = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // `redis://secret@host` puts the password where a user would be.
                "***".to_string()
            };
            format!("{}{}{}", &url[..scheme_end + 3], redacted, &rest[at..])
        }
        None => url.to_string(),
    }
}

pub(super) fn redact_query_password(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if matches!(k, "pass" | "password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

pub(super) fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    matches!(last, "password" | "api_key" | "token")
}

pub(super) fn redact_json(key: &str, value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let child = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                redact_json(&child, v);
            }
        }
        serde_json::Value::String(s) if is_secret_key(key) => *s = "***".into(),
        serde_json::Value::String(s) if key.ends_with(".url") || key == "url" => *s = redact_url(s),
        _ => {}
    }
}
