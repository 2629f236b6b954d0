//! `Prefer: respond-async` and `Prefer: wait=N` (RFC 7240): how long a client would wait.

use axum::http::HeaderMap;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Preferences {
    pub respond_async: bool,
    pub wait_secs: Option<u64>,
}

pub fn preferences(headers: &HeaderMap) -> Preferences {
    let mut p = Preferences::default();
    for value in headers.get_all("prefer") {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let token = token.trim();
            let (name, arg) = token
                .split_once('=')
                .map_or((token, None), |(n, v)| (n.trim(), Some(v.trim())));
            match name.to_ascii_lowercase().as_str() {
                "respond-async" => p.respond_async = true,
                "wait" => p.wait_secs = arg.and_then(|v| v.trim_matches('"').parse().ok()),
                _ => {}
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn reads_prefer_headers() {
        let mut h = HeaderMap::new();
        h.append("prefer", HeaderValue::from_static("respond-async, wait=5"));
        assert_eq!(
            preferences(&h),
            Preferences {
                respond_async: true,
                wait_secs: Some(5)
            }
        );
        let mut h = HeaderMap::new();
        h.append("prefer", HeaderValue::from_static("handling=lenient"));
        h.append("prefer", HeaderValue::from_static("wait=\"2\""));
        assert_eq!(preferences(&h).wait_secs, Some(2));
    }
}
