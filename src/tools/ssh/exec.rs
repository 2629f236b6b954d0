//! Runs one command on a leased channel: collects stdout and stderr up to the cap, and the exit
//! status or signal. A time limit, a cancellation, or the future being dropped (the executor
//! drops an attempt it stops) closes the channel, and closing it kills the command.
//!
//! OpenSSH does not stop a session's processes when its channel closes (without a pty), and it
//! refuses `signal` requests for root logins (they skip privilege separation). So the command
//! runs under a small POSIX `sh` guard: the command gets the user's login shell as sshd would
//! give it (`$SHELL -c`), with stdin from /dev/null, while the guard waits for end-of-file on the
//! channel's stdin, which arrives only when the channel closes (we never send any), and then
//! kills the session's process group. A command that ends normally ends the guard; its exit
//! status, or the signal that killed it, is passed on. (`SHLVL=1` keeps bash from taking itself
//! for the shell sshd started and reading `~/.bashrc` a second time.)

use std::time::Instant;

use russh::{ChannelMsg, Sig};
use tokio_util::sync::CancellationToken;

use super::{pool::Lease, shell::quote};
use crate::catalog::{OutputStream, Progress};

/// The guard (see the module documentation); `$1` is the command.
const GUARD: &str = "exec 3<&0 </dev/null; \
    { while read -r _; do :; done; kill -KILL 0; } <&3 >/dev/null 2>&1 & w=$!; \
    SHLVL=1 \"${SHELL:-/bin/sh}\" -c \"$1\" 3<&-; s=$?; kill \"$w\" 2>/dev/null; \
    if [ \"$s\" -gt 128 ] && [ \"$s\" -le 192 ]; then kill -\"$((s - 128))\" $$; fi; \
    exit \"$s\"";

/// What is sent for `command`: one line every login shell (sh, bash, zsh, fish, csh) reads as
/// `sh -c GUARD sh COMMAND`.
fn guarded(command: &str) -> String {
    format!("sh -c {} sh {}", quote(GUARD), quote(command))
}

/// One output stream, kept up to `cap` bytes; the rest is read (so the command can finish)
/// and dropped.
#[derive(Debug, Default)]
pub struct Capped {
    bytes: Vec<u8>,
    cap: usize,
    pub truncated: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            cap,
            truncated: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// UTF-8 (invalid sequences replaced), without NUL characters.
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.bytes).into_owned();
        s.retain(|c| c != '\0');
        s
    }
}

#[derive(Debug)]
pub struct Output {
    pub stdout: Capped,
    pub stderr: Capped,
    pub exit_code: Option<u32>,
    pub signal: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the host refused to run the command")]
    Refused,
    #[error("the command did not finish within {0} ms; it was killed and its channel closed")]
    TimedOut(u64),
    #[error("cancelled; the command was killed and its channel closed")]
    Cancelled,
    /// The connection broke after the command was sent: it may or may not have run.
    #[error("the connection was lost while the command ran: {0}")]
    Lost(String),
}

/// Holds the channel while a command runs; if dropped before the command ended, kills the
/// remote process group and closes the channel from a task of its own.
struct Running {
    lease: Option<Lease>,
}

impl Running {
    fn lease(&mut self) -> &mut Lease {
        self.lease.as_mut().expect("present until finished")
    }

    /// Stops the command now by closing its channel (the guard kills it).
    async fn kill(&mut self) {
        if let Some(lease) = self.lease.take() {
            stop(lease).await;
        }
    }

    fn finished(mut self) {
        self.lease.take();
    }
}

async fn stop(lease: Lease) {
    let _ = lease.channel.close().await;
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(stop(lease));
        }
    }
}

/// Sends `command` (guarded) and waits for it to end, until `deadline`.
pub async fn run(
    lease: Lease,
    command: &str,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
    cap: usize,
    live_output: Option<&Progress>,
) -> Result<Output, RunError> {
    let started = Instant::now();
    let limit_ms = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .as_millis() as u64;
    let mut running = Running { lease: Some(lease) };
    running
        .lease()
        .channel
        .exec(true, guarded(command).as_bytes())
        .await
        .map_err(|e| RunError::Lost(e.to_string()))?;
    let mut out = Output {
        stdout: Capped::new(cap),
        stderr: Capped::new(cap),
        exit_code: None,
        signal: None,
        duration_ms: 0,
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout_at(deadline, collect(running.lease(), &mut out, live_output)) => match r {
            Ok(r) => r,
            Err(_) => Err(RunError::TimedOut(limit_ms)),
        },
        _ = cancel.cancelled() => Err(RunError::Cancelled),
    };
    out.duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(()) => {
            running.finished();
            Ok(out)
        }
        Err(e) => {
            running.kill().await;
            Err(e)
        }
    }
}

/// Reads channel messages until the server closes the channel; with `live_output`, each chunk
/// of output is also reported as it comes.
async fn collect(
    lease: &mut Lease,
    out: &mut Output,
    live_output: Option<&Progress>,
) -> Result<(), RunError> {
    let mut confirmed = false;
    let live = |stream, data: &[u8]| {
        if let Some(progress) = live_output {
            progress.output(stream, data);
        }
    };
    loop {
        match lease.channel.wait().await {
            Some(ChannelMsg::Success) => confirmed = true,
            Some(ChannelMsg::Failure) if !confirmed => return Err(RunError::Refused),
            Some(ChannelMsg::Data { data }) => {
                live(OutputStream::Stdout, &data);
                out.stdout.push(&data);
            }
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                live(OutputStream::Stderr, &data);
                out.stderr.push(&data);
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => out.exit_code = Some(exit_status),
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                out.signal = Some(signal_name_of(&signal_name));
            }
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    if out.exit_code.is_none() && out.signal.is_none() {
        return Err(RunError::Lost(
            "the channel closed without an exit status".into(),
        ));
    }
    Ok(())
}

fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_gets_the_command_as_one_word() {
        let command = "echo 'it''s' \"$HOME\"; exit 3";
        let words: Vec<String> = crate::tools::ssh::shell::lex(&guarded(command))
            .unwrap()
            .into_iter()
            .map(|t| match t {
                crate::tools::ssh::shell::Token::Word(w) => w.text,
                op => panic!("{op:?}"),
            })
            .collect();
        assert_eq!(words, ["sh", "-c", GUARD, "sh", command]);
        assert!(
            !GUARD.contains('\n') && !GUARD.contains("  "),
            "one line: {GUARD}"
        );
    }

    #[test]
    fn output_is_capped_decoded_lossily_and_stripped_of_nul() {
        let mut c = Capped::new(8);
        c.push(b"ab\0c");
        c.push(b"\xffdefgh");
        assert!(c.truncated);
        assert_eq!(c.text(), "abc\u{fffd}def");
        let mut c = Capped::new(4);
        c.push(b"abcd");
        assert!(!c.truncated);
        c.push(b"");
        assert!(!c.truncated);
    }
}
