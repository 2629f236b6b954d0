//! One SSH connection to one configured host: TCP, key exchange with the host key checked
//! against the pinned key (or the known_hosts file) before anything else is sent, then
//! public-key authentication with the configured key or the ssh-agent.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use russh::{
    client::{self, Handle},
    keys::{
        Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
        agent::client::AgentClient, known_hosts,
    },
};

use super::config::HostConfig;
use crate::model::ConfigProblem;

/// A configured host with its credentials loaded. Debug shows no key material.
pub struct Target {
    pub name: String,
    pub config: HostConfig,
    trust: Trust,
    key: Option<Arc<PrivateKey>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("address", &self.config.address)
            .field("port", &self.config.port)
            .field("user", &self.config.user)
            .field("key", &self.key.as_ref().map(|_| "<loaded>"))
            .finish()
    }
}

/// Which host keys are accepted.
#[derive(Debug, Clone)]
enum Trust {
    Pinned(PublicKey),
    KnownHosts(PathBuf),
}

impl Target {
    /// Loads the private key (decrypting it with the passphrase from `passphrase_env`) and the
    /// pinned host key. Errors name the setting, never the secret.
    pub fn load(name: &str, config: &HostConfig) -> Result<Self, ConfigProblem> {
        let field = |k: &str| format!("ssh.hosts.\"{name}\".{k}");
        let trust = match (config.pinned_key(), &config.known_hosts) {
            (Some(Ok(key)), _) => Trust::Pinned(key),
            (Some(Err(e)), _) => return Err(ConfigProblem::new(field("host_key"), e)),
            (None, Some(path)) => {
                std::fs::metadata(path).map_err(|e| {
                    ConfigProblem::new(
                        field("known_hosts"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Trust::KnownHosts(path.clone())
            }
            (None, None) => return Err(ConfigProblem::new(field("host_key"), "is required")),
        };
        let key = match &config.key_file {
            None => None,
            Some(path) => Some(Arc::new(load_key(path, config, &field)?)),
        };
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            trust,
            key,
        })
    }
}

fn load_key(
    path: &Path,
    config: &HostConfig,
    field: &dyn Fn(&str) -> String,
) -> Result<PrivateKey, ConfigProblem> {
    // Zeroed when dropped, right after the key is decrypted.
    let passphrase = match &config.passphrase_env {
        None => None,
        Some(var) => Some(
            std::env::var(var)
                .map(zeroize::Zeroizing::new)
                .map_err(|_| {
                    ConfigProblem::new(
                        field("passphrase_env"),
                        format!("the environment variable {var} is not set"),
                    )
                })?,
        ),
    };
    russh::keys::load_secret_key(path, passphrase.as_ref().map(|p| p.as_str())).map_err(|e| {
        // The error says what is wrong with the file (unreadable, encrypted, wrong
        // passphrase); it never contains key material.
        ConfigProblem::new(
            field("key_file"),
            format!("cannot load {}: {e}", path.display()),
        )
    })
}

/// Why a connection could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The host's key is not the one we trust: we stopped before authenticating.
    #[error("the host key of {host} is not trusted: {detail}")]
    HostKeyMismatch { host: String, detail: String },
    #[error("connecting to {host} took longer than {ms} ms")]
    Timeout { host: String, ms: u64 },
    #[error("cannot connect to {host}: {detail}")]
    Network { host: String, detail: String },
    #[error("{host} refused our credentials for user {user}")]
    AuthFailed { host: String, user: String },
}

/// The verdict on the key the host showed, kept for the error message.
type Rejection = Arc<Mutex<Option<String>>>;

pub struct Verifier {
    trust: Trust,
    address: String,
    port: u16,
    rejection: Rejection,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            *self.rejection.lock().expect("rejection lock") =
                Some("the host presented a certificate; pin its plain key".into());
            return Ok(false);
        };
        let shown = key.fingerprint(HashAlg::Sha256);
        let verdict = match &self.trust {
            Trust::Pinned(pinned) if pinned.key_data() == key.key_data() => Ok(()),
            Trust::Pinned(pinned) => Err(format!(
                "it presented {} {shown}, but {} {} is pinned",
                key.algorithm(),
                pinned.algorithm(),
                pinned.fingerprint(HashAlg::Sha256)
            )),
            Trust::KnownHosts(path) => {
                match known_hosts::check_known_hosts_path(&self.address, self.port, key, path) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!(
                        "it presented {} {shown}, which {} does not list for it",
                        key.algorithm(),
                        path.display()
                    )),
                    Err(e) => Err(format!(
                        "it presented {} {shown}, which does not match {}: {e}",
                        key.algorithm(),
                        path.display()
                    )),
                }
            }
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(why) => {
                *self.rejection.lock().expect("rejection lock") = Some(why);
                Ok(false)
            }
        }
    }
}

/// The host key algorithms to ask for: only those of the keys we would accept, so a server
/// with several host keys shows the one we know.
fn host_key_algorithms(target: &Target) -> Vec<Algorithm> {
    let keys: Vec<PublicKey> = match &target.trust {
        Trust::Pinned(k) => vec![k.clone()],
        Trust::KnownHosts(path) => {
            known_hosts::known_host_keys_path(&target.config.address, target.config.port, path)
                .map(|found| found.into_iter().map(|(_, k)| k).collect())
                .unwrap_or_default()
        }
    };
    let mut algorithms = Vec::new();
    for k in keys {
        let wanted = match k.algorithm() {
            Algorithm::Rsa { .. } => vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ],
            other => vec![other],
        };
        for a in wanted {
            if !algorithms.contains(&a) {
                algorithms.push(a);
            }
        }
    }
    algorithms
}

pub type Session = Handle<Verifier>;

/// Connects and authenticates within the host's connect timeout.
pub async fn connect(target: &Target) -> Result<Session, ConnectError> {
    let host = target.name.clone();
    let ms = target.config.connect_timeout.as_millis() as u64;
    tokio::time::timeout(target.config.connect_timeout, connect_inner(target))
        .await
        .unwrap_or(Err(ConnectError::Timeout { host, ms }))
}

async fn connect_inner(target: &Target) -> Result<Session, ConnectError> {
    let c = &target.config;
    let host = target.name.clone();
    let network = |e: &dyn std::fmt::Display| ConnectError::Network {
        host: host.clone(),
        detail: e.to_string(),
    };
    let mut preferred = russh::Preferred::default();
    let algorithms = host_key_algorithms(target);
    if !algorithms.is_empty() {
        preferred.key = algorithms.into();
    }
    let config = Arc::new(client::Config {
        preferred,
        nodelay: true,
        // Notices a dead peer on a reused connection; the server may also drop idle ones.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        ..Default::default()
    });
    let rejection: Rejection = Arc::default();
    let verifier = Verifier {
        trust: target.trust.clone(),
        address: c.address.clone(),
        port: c.port,
        rejection: rejection.clone(),
    };
    let connected = client::connect(config, (c.address.as_str(), c.port), verifier).await;
    let mut session = match connected {
        Ok(s) => s,
        Err(e) => {
            if let Some(detail) = rejection.lock().expect("rejection lock").take() {
                return Err(ConnectError::HostKeyMismatch { host, detail });
            }
            return Err(match e {
                russh::Error::UnknownKey => ConnectError::HostKeyMismatch {
                    host,
                    detail: "it was rejected".into(),
                },
                other => network(&other),
            });
        }
    };
    if authenticate(&mut session, target)
        .await
        .map_err(|e| network(&e))?
    {
        Ok(session)
    } else {
        Err(ConnectError::AuthFailed {
            host,
            user: c.user.clone(),
        })
    }
}

/// The configured key first, then the agent's keys; true once one is accepted.
async fn authenticate(session: &mut Session, target: &Target) -> Result<bool, String> {
    let user = target.config.user.as_str();
    if let Some(key) = &target.key {
        let hash = rsa_hash(session, key.algorithm()).await?;
        let result = session
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(|e| e.to_string())?;
        if result.success() {
            return Ok(true);
        }
    }
    if target.config.agent {
        let socket = match &target.config.agent_socket {
            Some(p) => p.clone(),
            None => std::env::var_os("SSH_AUTH_SOCK")
                .map(PathBuf::from)
                .ok_or("agent = true, but SSH_AUTH_SOCK is not set")?,
        };
        let mut agent = AgentClient::connect_uds(&socket)
            .await
            .map_err(|e| format!("cannot reach the ssh-agent at {}: {e}", socket.display()))?;
        let identities = agent
            .request_identities()
            .await
            .map_err(|e| format!("the ssh-agent did not list its keys: {e}"))?;
        for identity in identities {
            let key = identity.public_key().into_owned();
            let hash = rsa_hash(session, key.algorithm()).await?;
            let result = session
                .authenticate_publickey_with(user, key, hash, &mut agent)
                .await
                .map_err(|e| format!("the ssh-agent could not sign: {e}"))?;
            if result.success() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// RSA keys sign with the best hash the server accepts; other keys have theirs built in.
async fn rsa_hash(session: &Session, algorithm: Algorithm) -> Result<Option<HashAlg>, String> {
    if !algorithm.is_rsa() {
        return Ok(None);
    }
    Ok(session
        .best_supported_rsa_hash()
        .await
        .map_err(|e| e.to_string())?
        .flatten())
}
