//! The real `orchestrator` binary as a child process: what an operator runs, with its logs
//! captured (stdout and stderr together) so tests can read what it said.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::helpers::eventually;

/// How to run the binary: arguments, environment (nothing inherited that would pick a
/// database or a configuration by accident) and working directory.
#[derive(Clone, Default)]
pub struct Invocation {
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
}

impl Invocation {
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.insert(name.to_owned(), value.into());
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        cmd.args(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("ORCH__")
                || ["DATABASE_URL", "ORCHESTRATOR_CONFIG", "RUST_LOG"].contains(&name.as_str())
            {
                cmd.env_remove(name);
            }
        }
        cmd.envs(&self.env);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Runs a one-shot command to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    /// Starts `serve`; `listen` is passed as `ORCH__SERVER__LISTEN`.
    pub fn serve(&self, listen: &str) -> Served {
        let mut child = self
            .command(&["serve"])
            .env("ORCH__SERVER__LISTEN", listen)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let readers = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .map(|stream| {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut all = output.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            })
        });
        Served {
            child: Some(child),
            output,
            readers: readers.into(),
        }
    }
}

/// Whether the server at `base` answers `/readyz` with a success within `deadline`.
pub async fn ready_within(client: &reqwest::Client, base: &str, deadline: Duration) -> bool {
    crate::helpers::eventually(deadline, || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub struct Served {
    child: Option<Child>,
    output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Everything it printed so far.
    pub fn logs(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until it printed `needle` (or exited); false if it never did.
    pub async fn printed(&mut self, needle: &str, deadline: Duration) -> bool {
        let output = self.output.clone();
        eventually(deadline, || {
            let found = output.lock().unwrap().contains(needle);
            async move { found }
        })
        .await
    }

    /// Waits for it to exit on its own; its exit status.
    pub async fn exited(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().unwrap();
        let mut status = None;
        eventually(deadline, || {
            status = child.try_wait().ok().flatten();
            let done = status.is_some();
            async move { done }
        })
        .await;
        if status.is_some() {
            self.drain();
        }
        status
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM, then waits for the exit (the graceful shutdown).
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.exited(Duration::from_secs(30))
            .await
            .expect("stops within 30 s of SIGTERM")
    }

    /// SIGKILL: a crash, no shutdown work at all.
    pub async fn kill(&mut self) {
        self.signal("-KILL");
        self.exited(Duration::from_secs(10)).await;
    }

    fn signal(&self, signal: &str) {
        Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
    }

    fn drain(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
