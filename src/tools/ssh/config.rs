//! `[ssh]`: the host inventory, output limits and the peek allowlist. Holds no secret: a key
//! passphrase is named by the environment variable that carries it, never written here.

use crate::model::ConfigProblem;
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use russh::keys::ssh_key::PublicKey;
use serde::{Deserialize, Serialize};

use super::{allowlist::PeekConfig, paths};

/// The intents a host may serve.
pub const INTENTS: [&str; 2] = ["ssh.exec", "ssh.exec.peek"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// The hosts commands may run on, by the name requests use.
    pub hosts: BTreeMap<String, HostConfig>,
    /// The most bytes kept of each of stdout and stderr; the rest is read and dropped.
    pub max_output_bytes: usize,
    /// How long an unused connection stays open for the next command.
    #[serde(with = "crate::duration::human")]
    pub idle_timeout: Duration,
    pub peek: PeekConfig,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            hosts: BTreeMap::new(),
            max_output_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            peek: PeekConfig::default(),
        }
    }
}

/// `[ssh.hosts."<name>"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub address: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    /// A private key file (OpenSSH or PKCS#8 format).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The environment variable holding the key's passphrase (the name, not the value).
    #[serde(default)]
    pub passphrase_env: Option<String>,
    /// Also try the keys of the ssh-agent at `agent_socket` (default: `$SSH_AUTH_SOCK`).
    #[serde(default)]
    pub agent: bool,
    #[serde(default)]
    pub agent_socket: Option<PathBuf>,
    /// The host's public key, OpenSSH format (`ssh-ed25519 AAAA…`): the only key accepted.
    #[serde(default)]
    pub host_key: Option<String>,
    /// Or: a known_hosts file listing the host (as `address` or `[address]:port`).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// The intents allowed to use this host (default: all SSH intents).
    #[serde(default)]
    pub intents: Option<Vec<String>>,
    /// Commands running at once on this host (each is a channel on a shared connection; keep
    /// it at or below the server's `MaxSessions`, 10 by default in OpenSSH).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// TCP connect, key exchange and authentication.
    #[serde(default = "default_connect_timeout", with = "crate::duration::human")]
    pub connect_timeout: Duration,
    /// A command's time limit when the request gives none.
    #[serde(default = "default_command_timeout", with = "crate::duration::human")]
    pub command_timeout: Duration,
    /// The most a request may ask for with `timeout_ms`.
    #[serde(
        default = "default_max_command_timeout",
        with = "crate::duration::human"
    )]
    pub max_command_timeout: Duration,
    /// `[ssh.hosts."<name>".peek]`: the paths `ssh.exec.peek` may name on this host.
    #[serde(default)]
    pub peek: HostPeekConfig,
}

/// `[ssh.hosts."<name>".peek]`: on top of the built-in secret-path denylist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostPeekConfig {
    /// When set, peek commands may only name paths in these directories (absolute paths;
    /// an empty list allows no path at all).
    pub allow_paths: Option<Vec<String>>,
    /// More patterns to refuse (the syntax of `secret_paths.txt`).
    pub deny_paths: Vec<String>,
}

fn default_port() -> u16 {
    22
}
fn default_max_sessions() -> usize {
    4
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_command_timeout() -> Duration {
    Duration::from_secs(600)
}

impl HostConfig {
    /// A host with every optional setting at its default.
    pub fn new(address: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            port,
            user: user.into(),
            key_file: None,
            passphrase_env: None,
            agent: false,
            agent_socket: None,
            host_key: None,
            known_hosts: None,
            intents: None,
            max_sessions: default_max_sessions(),
            connect_timeout: default_connect_timeout(),
            command_timeout: default_command_timeout(),
            max_command_timeout: default_max_command_timeout(),
            peek: HostPeekConfig::default(),
        }
    }

    pub fn allows(&self, intent: &str) -> bool {
        self.intents
            .as_ref()
            .is_none_or(|list| list.iter().any(|i| i == intent))
    }

    /// The pinned key, parsed.
    pub fn pinned_key(&self) -> Option<Result<PublicKey, String>> {
        self.host_key
            .as_deref()
            .map(|k| PublicKey::from_openssh(k.trim()).map_err(|e| e.to_string()))
    }
}

impl SshConfig {
    /// Every problem; files are checked when the tools are built.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = self.peek.problems();
        if self.max_output_bytes < 1024 {
            out.push(ConfigProblem::new(
                "ssh.max_output_bytes",
                "must be at least 1024",
            ));
        }
        if self.idle_timeout.is_zero() {
            out.push(ConfigProblem::new(
                "ssh.idle_timeout_ms",
                "must be positive",
            ));
        }
        for (name, h) in &self.hosts {
            let mut bad = |key: &str, message: &str| {
                out.push(ConfigProblem::new(
                    format!("ssh.hosts.\"{name}\".{key}"),
                    message.to_owned(),
                ));
            };
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_whitespace) {
                bad("", "host names are 1 to 100 characters without spaces");
            }
            if h.address.trim().is_empty() {
                bad("address", "is required");
            }
            if h.user.trim().is_empty() {
                bad("user", "is required");
            }
            if h.port == 0 {
                bad("port", "must be 1 to 65535");
            }
            if h.key_file.is_none() && !h.agent {
                bad("key_file", "set a key_file, or agent = true");
            }
            if h.passphrase_env.is_some() && h.key_file.is_none() {
                bad("passphrase_env", "is only used with key_file");
            }
            if h.passphrase_env.as_deref().is_some_and(str::is_empty) {
                bad("passphrase_env", "must name an environment variable");
            }
            match (&h.host_key, &h.known_hosts) {
                (None, None) => bad(
                    "host_key",
                    "pin the host's key (host_key) or name a known_hosts file",
                ),
                (Some(_), Some(_)) => bad("host_key", "set host_key or known_hosts, not both"),
                _ => {}
            }
            if let Some(Err(e)) = h.pinned_key() {
                bad("host_key", &format!("is not an OpenSSH public key: {e}"));
            }
            if let Some(intents) = &h.intents {
                for i in intents {
                    if !INTENTS.contains(&i.as_str()) {
                        bad(
                            "intents",
                            &format!("unknown intent `{i}` (known: {})", INTENTS.join(", ")),
                        );
                    }
                }
            }
            if !(1..=64).contains(&h.max_sessions) {
                bad("max_sessions", "must be 1 to 64");
            }
            if h.connect_timeout.is_zero() {
                bad("connect_timeout_ms", "must be positive");
            }
            if h.command_timeout.is_zero() || h.command_timeout > h.max_command_timeout {
                bad(
                    "command_timeout_ms",
                    "must be positive and at most max_command_timeout_ms",
                );
            }
            for p in h.peek.allow_paths.iter().flatten() {
                if let Some(problem) = paths::prefix_problem(p) {
                    bad("peek.allow_paths", &problem);
                }
            }
            for p in &h.peek.deny_paths {
                if let Some(problem) = paths::pattern_problem(p) {
                    bad("peek.deny_paths", &problem);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn host() -> HostConfig {
        HostConfig {
            key_file: Some("/etc/orchestrator/id_ed25519".into()),
            host_key: Some(KEY.into()),
            ..HostConfig::new("10.0.0.5", 22, "ops")
        }
    }

    fn problems_of(h: HostConfig) -> Vec<String> {
        let mut c = SshConfig::default();
        c.hosts.insert("web-1".into(), h);
        c.problems().into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_complete_host_is_valid() {
        assert!(problems_of(host()).is_empty());
        assert!(SshConfig::default().problems().is_empty());
    }

    #[test]
    fn names_each_bad_setting() {
        let h = HostConfig {
            host_key: Some("ssh-ed25519 not-base64".into()),
            intents: Some(vec!["ssh.exec".into(), "memory.write".into()]),
            max_sessions: 0,
            command_timeout: Duration::from_secs(700),
            ..host()
        };
        assert_eq!(
            problems_of(h),
            [
                "ssh.hosts.\"web-1\".host_key",
                "ssh.hosts.\"web-1\".intents",
                "ssh.hosts.\"web-1\".max_sessions",
                "ssh.hosts.\"web-1\".command_timeout_ms",
            ]
        );
        let h = HostConfig {
            key_file: None,
            host_key: None,
            passphrase_env: Some("KEY_PASS".into()),
            ..host()
        };
        assert_eq!(
            problems_of(h),
            [
                "ssh.hosts.\"web-1\".key_file",
                "ssh.hosts.\"web-1\".passphrase_env",
                "ssh.hosts.\"web-1\".host_key",
            ]
        );
        let h = HostConfig {
            peek: HostPeekConfig {
                allow_paths: Some(vec!["/var/log".into(), "srv/app".into()]),
                deny_paths: vec!["/srv/app/config/**".into(), "*.sqlite".into()],
            },
            ..host()
        };
        assert_eq!(
            problems_of(h),
            [
                "ssh.hosts.\"web-1\".peek.allow_paths",
                "ssh.hosts.\"web-1\".peek.deny_paths",
            ]
        );
    }

    #[test]
    fn the_commented_examples_in_the_example_file_parse() {
        use figment::providers::{Format, Toml};
        let uncommented = crate::config::uncommented_example("ssh");
        #[derive(Deserialize)]
        struct File {
            ssh: SshConfig,
        }
        let file: File = figment::Figment::from(Toml::string(&uncommented))
            .extract()
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let host = &file.ssh.hosts["web-1"];
        assert_eq!(host.user, "ops");
        assert_eq!(host.max_sessions, default_max_sessions());
        assert_eq!(host.command_timeout, default_command_timeout());
        assert_eq!(host.max_command_timeout, default_max_command_timeout());
        assert_eq!(host.connect_timeout, default_connect_timeout());
        assert!(file.ssh.peek.programs.contains_key("lsblk"));
        assert_eq!(
            host.peek.allow_paths.as_deref(),
            Some(&["/var/log".to_owned(), "/srv/app".to_owned()][..])
        );
        assert_eq!(host.peek.deny_paths, ["/srv/app/config/**"]);
    }

    #[test]
    fn intents_default_to_all() {
        assert!(host().allows("ssh.exec") && host().allows("ssh.exec.peek"));
        let h = HostConfig {
            intents: Some(vec!["ssh.exec.peek".into()]),
            ..host()
        };
        assert!(!h.allows("ssh.exec") && h.allows("ssh.exec.peek"));
    }
}
