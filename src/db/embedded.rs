//! The private PostgreSQL cluster, used only when no database URL is configured at all. It
//! lives in one absolute data directory per user (so `serve`, `keys` and `migrate` run from
//! any directory reach the same cluster), runs as the `postgres` OS user when we are root
//! (PostgreSQL refuses to run as root), listens on loopback only, and is stopped on exit.
//!
//! A lock file beside the data directory says who runs it: one server at a time (a second is
//! refused); a CLI command uses the running server's cluster and leaves it running, or starts
//! it (or adopts one a crashed server left running) and stops it when done.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io::Write,
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::unistd::{Uid, User};

/// How long a server waits for a CLI command holding the cluster to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Who opens the private cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterUser {
    /// `orchestrator serve`: holds the cluster while it runs.
    Server,
    /// Any other command (`keys`, `migrate`, …).
    Command,
}

#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    /// Stopped by us on exit: we started it, or adopted one nobody holds.
    owned: bool,
    /// Held while we run the cluster (released by the OS if we die).
    _lock: Option<File>,
}

/// The private cluster's default home: `/var/lib/orchestrator/pgdata` for root, else
/// `$XDG_DATA_HOME/orchestrator/pgdata` (`~/.local/share/orchestrator/pgdata`).
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    data_dir_for(
        Uid::effective().is_root(),
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn data_dir_for(
    root: bool,
    xdg_data_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    if root {
        return Ok(PathBuf::from("/var/lib/orchestrator/pgdata"));
    }
    let base = match (xdg_data_home.filter(|p| p.is_absolute()), home) {
        (Some(xdg), _) => xdg,
        (None, Some(home)) if home.is_absolute() => home.join(".local/share"),
        _ => bail!(
            "cannot place the private cluster: neither XDG_DATA_HOME nor HOME is an absolute \
             path; set database.embedded_data_dir"
        ),
    };
    Ok(base.join("orchestrator/pgdata"))
}

impl EmbeddedPostgres {
    /// Opens the cluster in `data_dir` (absolute) for `user`, following the lock rules above.
    pub fn open(data_dir: &Path, user: ClusterUser) -> anyhow::Result<Self> {
        if !data_dir.is_absolute() {
            bail!(
                "the private cluster's data directory must be absolute, not {}",
                data_dir.display()
            );
        }
        let parent = data_dir.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let lock_path = data_dir.with_extension("lock");
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        let give_up = Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = fs::read_to_string(&lock_path).unwrap_or_default();
                    let holder = holder.trim();
                    if holder.starts_with("server") {
                        if user == ClusterUser::Server {
                            bail!(
                                "another orchestrator server ({holder}) is already running on \
                                 the private cluster in {}; stop it first (two servers on one \
                                 cluster share its jobs, so run them against one DATABASE_URL \
                                 instead)",
                                data_dir.display()
                            );
                        }
                        // The server's cluster: use it, leave it running.
                        return Self::start(data_dir, false);
                    }
                    if Instant::now() >= give_up {
                        bail!(
                            "the private cluster in {} is held by {} (lock {}); try again when \
                             it is done",
                            data_dir.display(),
                            if holder.is_empty() {
                                "another process"
                            } else {
                                holder
                            },
                            lock_path.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", lock_path.display()));
                }
            }
        }
        let role = match user {
            ClusterUser::Server => "server",
            ClusterUser::Command => "command",
        };
        lock.set_len(0)?;
        write!(lock, "{role} pid {}", std::process::id())?;
        // Nobody else holds it: a cluster still running was left by a crashed process, and is
        // ours to stop like one we start.
        let mut pg = Self::start(data_dir, false)?;
        pg.owned = true;
        pg._lock = Some(lock);
        Ok(pg)
    }

    /// Directory holding `initdb` and `pg_ctl`: PATH first, then Debian's versioned layout.
    pub fn find_binaries() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                    return Some(dir);
                }
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    }

    /// Starts (initialising if needed) a cluster in `data_dir`, or adopts one already running
    /// there. `fast` skips fsync, for throwaway test clusters.
    pub fn start(data_dir: &Path, fast: bool) -> anyhow::Result<Self> {
        let Some(bin_dir) = Self::find_binaries() else {
            bail!(
                "no PostgreSQL answers at the configured URL and no PostgreSQL server binaries \
                 (initdb, pg_ctl) are installed. Either run one with `docker compose up -d postgres`, \
                 or install your distribution's package (e.g. `apt-get install postgresql`), \
                 or point DATABASE_URL at a running server"
            );
        };
        fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        let run_as = postgres_user_if_root()?;
        if let Some((uid, gid)) = run_as {
            ensure_traversable(&data_dir)?;
            chown_recursive(&data_dir, uid, gid)?;
        }
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))?;

        let mut pg = Self {
            bin_dir,
            data_dir,
            port: 0,
            run_as,
            owned: false,
            _lock: None,
        };
        if let Some(port) = pg.running_port() {
            pg.port = port;
            tracing::info!(data_dir = %pg.data_dir.display(), port, "the private PostgreSQL cluster is already running");
            return Ok(pg);
        }
        if !pg.data_dir.join("PG_VERSION").exists() {
            let mut initdb = pg.command("initdb");
            initdb.arg("-D").arg(&pg.data_dir).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]);
            if fast {
                initdb.arg("--no-sync");
            }
            run(&mut initdb).context("initdb")?;
        }
        pg.port = free_port()?;
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300",
            pg.port
        );
        if fast {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        run(pg
            .command("pg_ctl")
            .arg("-D")
            .arg(&pg.data_dir)
            .arg("-l")
            .arg(pg.data_dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]))
        .context("pg_ctl start")?;
        pg.owned = true;
        tracing::info!(
            data_dir = %pg.data_dir.display(),
            port = pg.port,
            "started the private PostgreSQL cluster"
        );
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Leave it running after we exit (shared test clusters).
    pub fn detach(mut self) {
        self.owned = false;
    }

    pub fn stop(&mut self) {
        if !self.owned {
            return;
        }
        self.owned = false;
        let result = run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "stop"]));
        match result {
            Ok(()) => tracing::info!("private PostgreSQL cluster stopped"),
            Err(e) => tracing::warn!(error = %e, "could not stop the private PostgreSQL cluster"),
        }
    }

    /// The port of a postmaster already serving this data directory.
    fn running_port(&self) -> Option<u16> {
        let pid_file = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("status")
            .output()
            .ok()?;
        if !status.status.success() {
            return None;
        }
        // Line 4 of postmaster.pid is the port.
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            cmd.env("HOME", &self.data_dir);
        }
        cmd.current_dir(&self.data_dir);
        cmd
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `(uid, gid)` of the `postgres` user when we run as root.
fn postgres_user_if_root() -> anyhow::Result<Option<(u32, u32)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    // getpwnam_r underneath: safe with other threads running.
    match User::from_name("postgres").context("looking up the postgres user")? {
        Some(user) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        None => bail!(
            "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` \
             user to run it as: create one (useradd --system postgres) or run as another user"
        ),
    }
}

/// Every ancestor must let the `postgres` user through.
fn ensure_traversable(dir: &Path) -> anyhow::Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let mode = fs::metadata(ancestor)?.permissions().mode();
        if mode & 0o001 == 0 {
            bail!(
                "the private cluster's data directory {} is inside {}, which the postgres user \
                 cannot enter; set database.embedded_data_dir to a path outside it",
                dir.display(),
                ancestor.display()
            );
        }
    }
    Ok(())
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_data_dir_is_absolute_and_per_user() {
        assert_eq!(
            data_dir_for(true, None, Some("/root".into())).unwrap(),
            PathBuf::from("/var/lib/orchestrator/pgdata")
        );
        assert_eq!(
            data_dir_for(false, Some("/x/data".into()), Some("/home/a".into())).unwrap(),
            PathBuf::from("/x/data/orchestrator/pgdata")
        );
        assert_eq!(
            data_dir_for(false, Some("relative".into()), Some("/home/a".into())).unwrap(),
            PathBuf::from("/home/a/.local/share/orchestrator/pgdata")
        );
        assert!(data_dir_for(false, None, Some("home".into())).is_err());
        assert!(data_dir_for(false, None, None).is_err());
    }
}
