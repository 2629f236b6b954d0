//! A stdio MCP server's process: spawned as the leader of a process group of its own, so that
//! stopping it reaches everything it started (shell wrappers, `npx`, workers), and reaped, so
//! nothing is left behind: no zombies, no orphaned grandchildren.

use std::{
    collections::VecDeque,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use nix::{
    sys::{
        signal::{Signal, killpg},
        wait::{Id, WaitPidFlag, waitid},
    },
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStderr, ChildStdin, ChildStdout, Command},
};

use super::config::McpServerConfig;

/// Environment variables a child gets without `inherit_env`: enough to find programs and
/// behave normally, nothing that may hold a secret.
const BASE_ENV: [&str; 7] = ["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// How many of the server's last stderr lines are kept to explain a failure.
const STDERR_TAIL: usize = 20;

/// The running process group of one stdio server.
pub struct ChildGroup {
    child: Child,
    /// The leader's pid, which is the group id. Stays valid until the leader is reaped.
    pgid: Pid,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    reaped: bool,
}

pub struct Pipes {
    pub stdout: ChildStdout,
    pub stdin: ChildStdin,
}

impl ChildGroup {
    pub fn spawn(server: &str, config: &McpServerConfig) -> std::io::Result<(Self, Pipes)> {
        let program = config.command.as_deref().unwrap_or_default();
        let mut cmd = Command::new(program);
        cmd.args(&config.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // Last resort if this handle is dropped without `terminate` (the group is killed
            // by `Drop` too).
            .kill_on_drop(true);
        if !config.inherit_env {
            cmd.env_clear();
            for key in BASE_ENV {
                if let Some(v) = std::env::var_os(key) {
                    cmd.env(key, v);
                }
            }
        }
        cmd.envs(config.env.iter().map(|(k, v)| (k, v.expose())));
        if let Some(dir) = &config.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn()?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| std::io::Error::other("the child exited at once"))?;
        let (Some(stdout), Some(stdin), Some(stderr)) =
            (child.stdout.take(), child.stdin.take(), child.stderr.take())
        else {
            return Err(std::io::Error::other("child stdio not piped"));
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(forward_stderr(
            server.to_owned(),
            stderr,
            stderr_tail.clone(),
        ));
        Ok((
            Self {
                child,
                pgid,
                stderr_tail,
                reaped: false,
            },
            Pipes { stdout, stdin },
        ))
    }

    pub fn pid(&self) -> u32 {
        self.pgid.as_raw() as u32
    }

    /// Resolves when the server process exits. Watched beside the session itself: a
    /// grandchild holding its stdout open would keep the session from noticing.
    pub fn exited(&self) -> BoxFuture<'static, ()> {
        exited(self.pgid)
    }

    /// The server's last lines on stderr, oldest first.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().expect("stderr tail lock poisoned");
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM to the whole group (and SIGCONT, so stopped members see it), SIGKILL to what
    /// is left after `grace`, then reap the leader. The group is signalled only while the
    /// leader is unreaped, so its id cannot have been reused by then.
    pub async fn terminate(mut self, grace: Duration) {
        signal_group(self.pgid, Signal::SIGTERM);
        signal_group(self.pgid, Signal::SIGCONT);
        let leader_gone = tokio::time::timeout(grace, exited(self.pgid)).await;
        if leader_gone.is_err() {
            tracing::warn!(
                pgid = self.pgid.as_raw(),
                "MCP server ignored SIGTERM; killing its group"
            );
        }
        // The leader may be gone while members linger (a child that ignored SIGTERM).
        signal_group(self.pgid, Signal::SIGKILL);
        if let Err(e) = self.child.wait().await {
            tracing::warn!(pgid = self.pgid.as_raw(), error = %e, "reaping the MCP server failed");
        }
        self.reaped = true;
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        if !self.reaped {
            // Not terminated in order (the runtime is going away): kill the group at once;
            // tokio reaps the leader in the background.
            signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Signals every process in the group. Failure is not an error here: the group may be gone.
fn signal_group(pgid: Pid, signal: Signal) {
    let _ = killpg(pgid, signal);
}

/// Resolves once process `pid` (our unreaped child) has exited, without reaping it, so its
/// group id stays reserved for the final SIGKILL. Linux: a pidfd, readable at exit; elsewhere
/// (or when no pidfd can be had) a blocking `waitid(WNOWAIT)`.
fn exited(pid: Pid) -> BoxFuture<'static, ()> {
    #[cfg(target_os = "linux")]
    if let Some(fd) = pidfd(pid) {
        return Box::pin(async move {
            use tokio::io::{Interest, unix::AsyncFd};
            // SAFETY: the AsyncFd owns the pidfd; nothing else closes or replaces it.
            if let Ok(fd) = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                let _ = fd.readable().await;
            }
        });
    }
    Box::pin(async move {
        let _ = tokio::task::spawn_blocking(move || {
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        })
        .await;
    })
}

/// A pidfd for `pid`, or none when pidfd_open(2) fails (a kernel before 5.3, no descriptors
/// left).
///
/// nix 0.31 has no wrapper for pidfd_open(2) (and std's `PidFd` is unstable), so this is the
/// one raw system call left: libc is reached through nix's re-export.
#[cfg(target_os = "linux")]
fn pidfd(pid: Pid) -> Option<std::os::fd::OwnedFd> {
    use nix::libc;
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes two integers and touches no memory of ours. It returns a new
    // descriptor, which nothing else owns, so `OwnedFd` may take it (and close it on drop),
    // or -1, which is never wrapped.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0);
        let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        Some(std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}

async fn forward_stderr(server: String, stderr: ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(server = %server, "mcp server stderr: {line}");
        let mut tail = tail.lock().expect("stderr tail lock poisoned");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
