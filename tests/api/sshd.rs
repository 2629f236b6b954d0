//! A real OpenSSH server for the SSH tests: host and user keys generated into a temporary
//! directory, `sshd` on a free loopback port, logging to a file the tests can read, killed when
//! dropped.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use orchestrator::tools::ssh::HostConfig;
use tempfile::TempDir;

use crate::helpers::eventually;

const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub port: u16,
    pub dir: TempDir,
    pub user: String,
    /// `ssh-ed25519 AAAA…` of the server.
    pub host_key: String,
    pub user_key: PathBuf,
    child: Child,
}

/// Generates an ed25519 key pair at `path` (and `path.pub`), encrypted when `passphrase` is
/// not empty; returns the public key line.
pub fn keygen(path: &Path, passphrase: &str) -> String {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-C",
            "orchestrator-test",
            "-N",
            passphrase,
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs (package openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// With `options` (sshd_config lines) ahead of the defaults: sshd keeps the first value.
    pub async fn start_with(options: &str) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (.ci/run does)"
        );
        // Privilege separation needs it; it is root's to create.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd (the tests run sshd as root)");
        let dir = tempfile::tempdir().unwrap();
        let host_key = keygen(&dir.path().join("host_ed25519"), "");
        let user_key = dir.path().join("user_ed25519");
        let user_public = keygen(&user_key, "");
        std::fs::write(dir.path().join("authorized_keys"), user_public + "\n").unwrap();
        let user = current_user();
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            // `SHLVL=1`: bash, started by sshd, would otherwise read this machine's ~/.bashrc,
            // whose output and delays are not what the tests are about.
            std::fs::write(
                &config,
                format!(
                    "{options}\nPort {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\n\
                     PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                     UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     MaxSessions 10\nLogLevel VERBOSE\nSetEnv SHLVL=1\n",
                    d = dir.path().display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("sshd starts");
            let child = std::sync::Mutex::new(child);
            let listening = eventually(Duration::from_secs(10), || async {
                matches!(child.lock().unwrap().try_wait(), Ok(None))
                    && TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .await;
            let mut child = child.into_inner().unwrap();
            if listening {
                return Self {
                    port,
                    dir,
                    user,
                    host_key,
                    user_key,
                    child,
                };
            }
            // Most likely the port was taken in between: try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "sshd did not start; its log:\n{}",
            std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
        );
    }

    /// This server as a configured host: the user key, the host key pinned.
    pub fn host(&self) -> HostConfig {
        HostConfig {
            key_file: Some(self.user_key.clone()),
            host_key: Some(self.host_key.clone()),
            ..HostConfig::new("127.0.0.1", self.port, &self.user)
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many processes on this machine (where sshd runs them) have `needle` in their command
/// line.
pub fn processes_running(needle: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .count()
}
