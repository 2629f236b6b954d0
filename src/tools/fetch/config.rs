//! `[tools.fetch]`: whether `http.fetch` exists, where it may go, and its caps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{glob::Glob, model::ConfigProblem, secret::Secret};

/// `[tools.fetch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// Off by default: a fetch tool hands every caller with the scope this server's network
    /// position, so a deployment turns it on knowingly.
    pub enabled: bool,
    /// Host globs (`api.example.com`, `*.example.org`) a URL, and every redirect, must match.
    /// Empty: any host whose addresses are public.
    pub allow_hosts: Vec<String>,
    /// Non-public networks (CIDRs) fetches may reach, as `callbacks.allow_networks` does for
    /// callbacks; kept apart so that what a flow may call is not what a model may fetch.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// The most of a response body kept; the rest is dropped and `truncated` is true.
    pub max_response_bytes: usize,
    /// One fetch's time limit, redirects included, and the most `timeout_ms` may ask for.
    #[serde(with = "crate::duration::human")]
    pub timeout: Duration,
    /// Credentials the server adds to requests for the hosts they name (`[[tools.fetch.
    /// credentials]]`). Callers cannot send credentials themselves: what is in a job's inputs
    /// is stored with the job.
    pub credentials: Vec<FetchCredential>,
}

/// A header carrying a credential, added to every request (and redirect hop) whose host and
/// port match one of `hosts`, never to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchCredential {
    /// Host globs, as in `allow_hosts`, each optionally with a port (`api.example.com:8443`).
    /// Without one, only the scheme's default port (443, or 80 for `allow_http`): like a
    /// browser's origin, a credential is not handed to whatever else listens on the host.
    pub hosts: Vec<String>,
    /// The header (`authorization` unless told otherwise, e.g. `x-api-key`).
    #[serde(default = "default_credential_header")]
    pub header: String,
    /// The environment variable holding the header's value (read at start, never logged)…
    #[serde(default)]
    pub value_env: Option<String>,
    /// … or the value itself (kept like a secret).
    #[serde(default)]
    pub value: Secret,
    /// Send it over plain `http://` too. Off: a URL or redirect hop that would carry it in the
    /// clear is refused (sending it without the credential would only fail further on).
    #[serde(default)]
    pub allow_http: bool,
}

/// URLs carry hosts lowercased, so an uppercase pattern would never match; a `/` means a URL
/// or path was given instead of a host, and a `:` outside an IPv6 literal's brackets a port.
fn is_host_glob(pattern: &str) -> bool {
    let ipv6 = pattern.starts_with('[') && pattern.ends_with(']');
    !pattern.is_empty()
        && !pattern
            .chars()
            .any(|c| c.is_uppercase() || c == '/' || (c == ':' && !ipv6))
}

/// A credential's host pattern split into its host glob and the port it names, if any
/// (`[::1]:8443` has one; `[::1]` and `*.example.com` do not).
fn split_port(pattern: &str) -> (&str, Option<&str>) {
    match pattern.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && (host.ends_with(']') || !host.contains(':'))
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (host, Some(port))
        }
        _ => (pattern, None),
    }
}

/// A credential's host pattern: a host glob, optionally with a port from 1 to 65535.
fn is_credential_host(pattern: &str) -> bool {
    let (glob, port) = split_port(pattern);
    is_host_glob(glob) && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn default_credential_header() -> String {
    "authorization".into()
}

impl FetchCredential {
    /// The header's value: from `value_env` when set, else `value`.
    pub fn resolve(&self) -> Result<Secret, String> {
        match &self.value_env {
            Some(var) => std::env::var(var)
                .map(Secret::from)
                .map_err(|_| format!("${var} is not set")),
            None if self.value.is_empty() => Err("needs `value_env` (or `value`)".into()),
            None => Ok(self.value.clone()),
        }
    }

    /// Whether a request to `url` carries this credential: its host matches one of `hosts` and
    /// its port is the one named there (the scheme's default when none is).
    pub fn applies_to(&self, url: &url::Url) -> bool {
        let host = url.host_str().unwrap_or_default();
        self.hosts.iter().any(|pattern| {
            let (glob, port) = split_port(pattern);
            let port_matches = match port {
                Some(port) => url.port_or_known_default() == port.parse().ok(),
                // `url` leaves the port out exactly when it is the scheme's default.
                None => url.port().is_none(),
            };
            port_matches && Glob::new(glob).matches(host)
        })
    }
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_hosts: Vec::new(),
            allow_networks: Vec::new(),
            max_response_bytes: 1024 * 1024,
            timeout: Duration::from_secs(30),
            credentials: Vec::new(),
        }
    }
}

impl FetchConfig {
    /// Whether `host` (as the URL has it: lowercased, IPv6 in brackets) may be fetched.
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allow_hosts.is_empty() || self.allow_hosts.iter().any(|p| Glob::new(p).matches(host))
    }

    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, pattern) in self.allow_hosts.iter().enumerate() {
            if !is_host_glob(pattern) {
                out.push(ConfigProblem::new(
                    format!("tools.fetch.allow_hosts[{i}]"),
                    format!("`{pattern}` is not a lowercase host glob"),
                ));
            }
        }
        if self.max_response_bytes == 0 {
            out.push(ConfigProblem::new(
                "tools.fetch.max_response_bytes",
                "must be positive",
            ));
        }
        if self.timeout.is_zero() {
            out.push(ConfigProblem::new(
                "tools.fetch.timeout",
                "must be positive",
            ));
        }
        for (i, credential) in self.credentials.iter().enumerate() {
            let field = |name: &str| format!("tools.fetch.credentials[{i}].{name}");
            if credential.hosts.is_empty()
                || !credential.hosts.iter().all(|p| is_credential_host(p))
            {
                out.push(ConfigProblem::new(
                    field("hosts"),
                    "must name at least one lowercase host glob, each optionally with a port \
                     (`api.example.com:8443`)",
                ));
            }
            if reqwest::header::HeaderName::from_bytes(credential.header.as_bytes()).is_err() {
                out.push(ConfigProblem::new(
                    field("header"),
                    format!("`{}` is not a header name", credential.header),
                ));
            }
            if credential.value_env.is_some() && !credential.value.is_empty() {
                out.push(ConfigProblem::new(
                    field("value"),
                    "set `value_env` or `value`, not both",
                ));
            } else if let Err(why) = credential.resolve() {
                let name = if credential.value_env.is_some() {
                    "value_env"
                } else {
                    "value"
                };
                out.push(ConfigProblem::new(field(name), why));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_checked() {
        let with = |c: serde_json::Value| FetchConfig {
            credentials: vec![serde_json::from_value(c).unwrap()],
            ..FetchConfig::default()
        };
        let fields = |c: serde_json::Value| -> Vec<String> {
            with(c).problems().iter().map(|p| p.field.clone()).collect()
        };
        assert!(fields(serde_json::json!({"hosts": ["api.example.com"], "value": "t"})).is_empty());
        assert_eq!(
            fields(serde_json::json!({"hosts": [], "value": "t"})),
            ["tools.fetch.credentials[0].hosts"]
        );
        assert_eq!(
            fields(serde_json::json!({"hosts": ["API.example.com"], "value": "t"})),
            ["tools.fetch.credentials[0].hosts"]
        );
        assert_eq!(
            fields(serde_json::json!({"hosts": ["a.b"], "header": "bad header", "value": "t"})),
            ["tools.fetch.credentials[0].header"]
        );
        assert_eq!(
            fields(serde_json::json!({"hosts": ["a.b"]})),
            ["tools.fetch.credentials[0].value"]
        );
        assert_eq!(
            fields(
                serde_json::json!({"hosts": ["a.b"], "value_env": "ORCH_TEST_SURELY_UNSET_VAR"})
            ),
            ["tools.fetch.credentials[0].value_env"]
        );
        assert_eq!(
            fields(serde_json::json!({"hosts": ["a.b"], "value": "t", "value_env": "PATH"})),
            ["tools.fetch.credentials[0].value"]
        );
        assert!(
            fields(serde_json::json!({"hosts": ["a.b:8443", "[::1]:1", "[::1]"], "value": "t"}))
                .is_empty()
        );
        for bad in ["a.b:0", "a.b:65536", "a.b:", "A.b:443"] {
            assert_eq!(
                fields(serde_json::json!({"hosts": [bad], "value": "t"})),
                ["tools.fetch.credentials[0].hosts"],
                "{bad}"
            );
        }
        // Plain http is opt-in, per credential.
        let default = with(serde_json::json!({"hosts": ["a.b"], "value": "t"}));
        assert!(!default.credentials[0].allow_http);
        // The value is never printed.
        let debug = format!(
            "{:?}",
            with(serde_json::json!({"hosts": ["a.b"], "value": "s3cr3t"}))
        );
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn a_credential_goes_to_its_hosts_default_port_or_the_port_it_names() {
        let credential = |hosts: &[&str]| -> FetchCredential {
            serde_json::from_value(serde_json::json!({"hosts": hosts, "value": "t"})).unwrap()
        };
        let applies = |hosts: &[&str], url: &str| {
            credential(hosts).applies_to(&url::Url::parse(url).unwrap())
        };
        #[rustfmt::skip]
        let cases: &[(&[&str], &str, bool)] = &[
            (&["api.example.com"], "https://api.example.com/x", true),
            (&["api.example.com"], "https://api.example.com:443/x", true),
            (&["api.example.com"], "http://api.example.com/x", true),
            // Another service on the same host is not the credential's.
            (&["api.example.com"], "https://api.example.com:8443/x", false),
            (&["api.example.com"], "http://api.example.com:443/x", false),
            (&["api.example.com:8443"], "https://api.example.com:8443/x", true),
            (&["api.example.com:8443"], "https://api.example.com/x", false),
            (&["api.example.com:443"], "https://api.example.com/x", true),
            (&["*.example.com:8443"], "https://a.example.com:8443/", true),
            (&["*.example.com:8443"], "https://a.example.org:8443/", false),
            (&["[::1]:8443"], "https://[::1]:8443/", true),
            (&["[::1]"], "https://[::1]/", true),
            (&["[::1]"], "https://[::1]:8443/", false),
            (&["127.0.0.1"], "http://127.0.0.1:8080/", false),
        ];
        for (hosts, url, expected) in cases {
            assert_eq!(applies(hosts, url), *expected, "{hosts:?} {url}");
        }
    }

    #[test]
    fn host_globs() {
        let config = |hosts: &[&str]| FetchConfig {
            allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..FetchConfig::default()
        };
        #[rustfmt::skip]
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "example.com", true),
            (&[], "127.0.0.1", true),
            (&["example.com"], "example.com", true),
            (&["example.com"], "api.example.com", false),
            (&["*.example.com"], "api.example.com", true),
            (&["*.example.com"], "a.b.example.com", true),
            (&["*.example.com"], "example.com", false),
            (&["*.example.com"], "evil-example.com", false),
            (&["*.example.com"], "example.com.evil.org", false),
            (&["api.example.com", "127.0.0.1"], "127.0.0.1", true),
            (&["[::1]"], "[::1]", true),
            (&["api-?.example.com"], "api-2.example.com", true),
        ];
        for (hosts, host, want) in cases {
            assert_eq!(config(hosts).host_allowed(host), *want, "{hosts:?} {host}");
        }
    }

    #[test]
    fn problems_name_the_bad_glob() {
        let c = FetchConfig {
            allow_hosts: vec!["ok.example.com".into(), "Bad.example.com".into(), "".into()],
            max_response_bytes: 0,
            ..FetchConfig::default()
        };
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "tools.fetch.allow_hosts[1]",
                "tools.fetch.allow_hosts[2]",
                "tools.fetch.max_response_bytes"
            ]
        );
    }
}
