//! `[tools.fetch]`: whether `http.fetch` exists, where it may go, and its caps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{glob::Glob, model::ConfigProblem};

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
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_hosts: Vec::new(),
            allow_networks: Vec::new(),
            max_response_bytes: 1024 * 1024,
            timeout: Duration::from_secs(30),
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
            // URLs carry hosts lowercased; an uppercase pattern would never match.
            if pattern.is_empty() || pattern.chars().any(|c| c.is_uppercase() || c == '/') {
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
