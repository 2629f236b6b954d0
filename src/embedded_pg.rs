//! A private PostgreSQL cluster for machines where nothing answers at the configured URL but
//! the server binaries are installed. It runs as the `postgres` OS user when we are root
//! (PostgreSQL refuses to run as root), listens on loopback only, and is stopped on exit.

use std::{
    fs,
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    /// Started by us (and so stopped by us); false when an earlier run left it running.
    owned: bool,
}

impl EmbeddedPostgres {
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
        };
        if let Some(port) = pg.running_port() {
            pg.port = port;
            tracing::info!(data_dir = %pg.data_dir.display(), port, "using the private PostgreSQL cluster already running");
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
        tracing::warn!(
            data_dir = %pg.data_dir.display(),
            port = pg.port,
            "no PostgreSQL answered at the configured URL: started a private cluster (stopped on exit)"
        );
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
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
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer into static storage or NULL; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!(
            "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` \
             user to run it as: create one (useradd --system postgres) or run as another user"
        );
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
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
