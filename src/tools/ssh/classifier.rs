//! Flags destructive commands before `ssh.exec` runs them. It reads the command line the way a
//! shell would split it (chains, pipes, subshells, `$( )`), looks through wrappers (`sudo`,
//! `env`, `nice`, `timeout`, `watch`, …) and nested shells (`bash -c '…'`, `su -c`, `eval`), and
//! matches each simple command against rules for what breaks machines: erasing disks or system
//! paths, stopping the machine or sshd, killing everything, locking users out, wiping logs,
//! running downloaded code.
//!
//! And one rule over all of them: **a command whose effect cannot be read from its words is
//! dangerous.** A shell or interpreter reading its program from a file, a pipe, a redirection,
//! a here-document or `-c`/`-e` code in a language not read here (`code`); `xargs`, `parallel`
//! and `find -exec`/`-delete` applying a destructive or unknown program to arguments found at run
//! time (`fanout`); a program named by a variable; a command sent to another host.
//!
//! It is a safety net against mistakes, not a sandbox: a determined author can hide intent (a
//! program's own behaviour, a variable set earlier). Where a command's meaning is only known at
//! run time it errs on the side of flagging.

mod code;
mod fanout;

use super::shell::{Op, Token, Word, WriteMode, lex};
use code::{Stdin, runs_code};

/// Nested shells and substitutions deeper than this are flagged rather than followed.
const MAX_DEPTH: usize = 8;

/// Why the command is dangerous; empty when no rule matched.
pub fn dangers(command: &str) -> Vec<String> {
    let mut c = Classifier::default();
    c.source(command, 0);
    let mut seen = Vec::new();
    c.reasons.retain(|r| {
        let new = !seen.contains(r);
        if new {
            seen.push(r.clone());
        }
        new
    });
    c.reasons
}

#[derive(Default)]
struct Classifier {
    reasons: Vec<String>,
}

/// One simple command: its words and the redirections attached to it.
#[derive(Default)]
struct Command {
    words: Vec<Word>,
    redirects: Vec<(Op, Option<Word>)>,
}

/// Commands joined by `|`; pipelines are separated by `;`, `&&`, `||`, `&`, newlines, parens.
fn pipelines(tokens: Vec<Token>) -> Vec<Vec<Command>> {
    let mut out = Vec::new();
    let mut pipe = Vec::new();
    let mut cmd = Command::default();
    let mut tokens = tokens.into_iter().peekable();
    while let Some(t) = tokens.next() {
        match t {
            Token::Word(w) => cmd.words.push(w),
            Token::Op(op @ Op::Redirect(_)) => {
                let target = match tokens.peek() {
                    Some(Token::Word(_)) => match tokens.next() {
                        Some(Token::Word(w)) => Some(w),
                        _ => None,
                    },
                    _ => None,
                };
                cmd.redirects.push((op, target));
            }
            Token::Op(Op::Pipe) => pipe.push(std::mem::take(&mut cmd)),
            Token::Op(_) => {
                pipe.push(std::mem::take(&mut cmd));
                out.push(std::mem::take(&mut pipe));
            }
        }
    }
    pipe.push(cmd);
    out.push(pipe);
    for p in &mut out {
        p.retain(|c| !c.words.is_empty() || !c.redirects.is_empty());
    }
    out.retain(|p| !p.is_empty());
    out
}

fn plain(text: &str) -> Word {
    Word {
        text: text.to_owned(),
        ..Default::default()
    }
}

fn texts(words: &[Word]) -> Vec<&str> {
    words.iter().map(|w| w.text.as_str()).collect()
}

/// `/usr/bin/rm` → `rm`.
fn program_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

const RESERVED: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "case", "esac", "{",
    "}", "!", "function", "select", "coproc",
];

/// Programs that run the rest of their arguments as a command: the name, the options whose
/// value is the next word, and how many words come between the options and the command
/// (`timeout DURATION cmd`).
#[rustfmt::skip]
const WRAPPERS: &[(&str, &[&str], usize)] = &[
    ("sudo", &["-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-T", "-U", "--user", "--group",
               "--host", "--prompt", "--close-from", "--chdir", "--role", "--type",
               "--command-timeout", "--other-user"], 0),
    ("doas", &["-u", "-C"], 0),
    ("env", &["-u", "--unset", "-C", "--chdir"], 0),
    ("nice", &["-n", "--adjustment"], 0),
    ("ionice", &["-c", "-n", "-p", "-P", "-u", "--class", "--classdata"], 0),
    ("timeout", &["-s", "-k", "--signal", "--kill-after"], 1),
    ("stdbuf", &["-i", "-o", "-e", "--input", "--output", "--error"], 0),
    ("time", &["-f", "-o", "--format", "--output"], 0),
    ("exec", &["-a"], 0),
    ("chroot", &["--userspec", "--groups"], 1),
    ("taskset", &[], 1),
    ("chrt", &[], 1),
    ("flock", FLOCK_VALUED, 1),
    ("watch", WATCH_VALUED, 0),
    ("nohup", &[], 0),
    ("setsid", &[], 0),
    ("command", &[], 0),
    ("builtin", &[], 0),
    ("busybox", &[], 0),
    ("unbuffer", &[], 0),
    ("sshpass", &["-p", "-f", "-d", "-P"], 0),
    ("ssh-agent", &["-a", "-E", "-P", "-t"], 0),
    ("strace", &["-o", "-e", "-p", "-s", "-u", "-E", "-a", "-b", "-I", "-O", "-P", "-S", "-X",
                 "--output", "--attach", "--user", "--env"], 0),
    ("ltrace", &["-o", "-e", "-p", "-s", "-u", "-a", "-n", "-l", "--output"], 0),
    ("unshare", &["-S", "-G", "-R", "-w", "--setuid", "--setgid", "--root", "--wd"], 0),
    ("nsenter", &["-t", "-S", "-G", "--target", "--setuid", "--setgid"], 0),
    ("setpriv", &["--reuid", "--regid", "--groups", "--inh-caps", "--ambient-caps",
                  "--bounding-set", "--securebits", "--pdeathsig", "--selinux-label",
                  "--apparmor-profile"], 0),
    ("systemd-run", &["-p", "--property", "-u", "--unit", "-M", "--machine", "-H", "--host",
                      "--uid", "--gid", "-E", "--setenv", "--working-directory",
                      "--description", "--slice", "--nice", "--on-calendar", "--on-active"], 0),
    ("fakeroot", &["-l", "--lib", "--faked", "-s", "-i", "-b"], 0),
    ("numactl", &["-C", "-N", "-m", "-p", "-i", "--physcpubind", "--cpunodebind", "--membind",
                  "--preferred", "--interleave"], 0),
    ("prlimit", &["-p", "--pid"], 0),
    ("proxychains", &["-f"], 0),
    ("proxychains4", &["-f"], 0),
    ("torsocks", &["-u", "-p", "-a", "-P"], 0),
    ("cgexec", &["-g"], 0),
];

const DOWNLOADERS: &[&str] = &[
    "curl",
    "wget",
    "fetch",
    "aria2c",
    "http",
    "https",
    "lwp-request",
];
const SSH_UNITS: &[&str] = &[
    "ssh",
    "sshd",
    "ssh.service",
    "sshd.service",
    "ssh.socket",
    "sshd.socket",
    "openssh-server",
];

const WATCH_VALUED: &[&str] = &["-n", "--interval", "-q", "--equexit"];
const FLOCK_VALUED: &[&str] = &["-w", "-E", "--timeout", "--conflict-exit-code"];

/// What a wrapper runs.
enum Unwrapped {
    /// These words: a command, maybe wrapped again.
    Runs(Vec<Word>),
    /// The first word is the program itself.
    NotAWrapper,
    /// Something that is not one simple command (`xargs`, `watch 'a | b'`), checked already.
    Elsewhere,
}

/// The option words before the first operand.
fn leading_options(args: &[Word]) -> Vec<&str> {
    args.iter()
        .map(|w| w.text.as_str())
        .take_while(|t| t.starts_with('-') && *t != "--")
        .collect()
}

/// The words of a string split like a command line (`env -S`); operators are dropped.
fn split_words(src: &str) -> Vec<Word> {
    match lex(src) {
        Ok(tokens) => tokens
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w),
                Token::Op(_) => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Takes `words` past a wrapper's options (and positional words) to the command it runs.
fn skip_options<'a>(words: &'a [Word], values: &[&str], positional: usize) -> &'a [Word] {
    let mut i = 0;
    while let Some(w) = words.get(i) {
        let t = w.text.as_str();
        if t == "--" {
            i += 1;
            break;
        }
        if !t.starts_with('-') || w.assignment {
            break;
        }
        let clustered_value = !t.starts_with("--")
            && t.len() > 2
            && values.contains(&format!("-{}", &t[t.len() - 1..]).as_str());
        i += if values.contains(&t) || clustered_value {
            2
        } else {
            1
        };
    }
    let i = (i + positional).min(words.len());
    &words[i..]
}

/// Whether an argument (before `--`) is the short option `letter`, alone or in a cluster.
fn has_short(args: &[&str], letter: char) -> bool {
    args.iter()
        .take_while(|a| **a != "--")
        .any(|a| a.starts_with('-') && !a.starts_with("--") && a[1..].contains(letter))
}

/// Whether an argument is the long option `name` (maybe abbreviated, maybe with `=value`).
fn has_long(args: &[&str], name: &str) -> bool {
    args.iter().take_while(|a| **a != "--").any(|a| {
        let given = a.split_once('=').map_or(*a, |(n, _)| n);
        given.starts_with("--") && given.len() >= 4 && name.starts_with(given)
    })
}

/// The words that are not options (everything after `--` counts).
fn operands<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut options_done = false;
    for a in args {
        if !options_done && *a == "--" {
            options_done = true;
        } else if options_done || !a.starts_with('-') || *a == "-" {
            out.push(*a);
        }
    }
    out
}

/// Lexical clean-up of a path: `//`, `.` and `..` resolved, no trailing slash.
fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if absolute => {
                parts.pop();
            }
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    match (absolute, parts.is_empty()) {
        (true, _) => format!("/{}", parts.join("/")),
        (false, true) => ".".into(),
        (false, false) => parts.join("/"),
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn under(path: &str, dir: &str) -> bool {
    path == dir || (dir == "/" && path.starts_with('/')) || path.starts_with(&format!("{dir}/"))
}

/// Directories whose loss breaks the machine.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/snap",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/local",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/spool",
    "/var/cache",
];
/// Trees where nothing should be deleted or re-permissioned wholesale.
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr", "/var/lib", "/var/log",
];
/// Trees where even one file removed or overwritten breaks the machine.
const CRITICAL_TREES: &[&str] = &[
    "/boot",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/etc/pam.d",
    "/etc/sudoers.d",
];
const CRITICAL_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/fstab",
    "/etc/ssh/sshd_config",
];
const HISTORY_FILES: &[&str] = &[
    ".bash_history",
    ".zsh_history",
    ".sh_history",
    ".ash_history",
    ".history",
    ".mysql_history",
    ".psql_history",
    ".python_history",
    ".node_repl_history",
    ".lesshst",
];
/// Devices that are fine to write to.
const HARMLESS_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/stdout",
    "/dev/stderr",
    "/dev/stdin",
    "/dev/tty",
];

/// A system directory, or a path under one, as a short description (globs: their directory).
fn system_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let n = normalize(path);
    if has_glob(&n) {
        let dir = n[..n.find(['*', '?', '[']).unwrap_or(0)]
            .rsplit_once('/')
            .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
        let dir = normalize(dir);
        let everything = dir == "/"
            || dir == "/home"
            || dir == "/root"
            || SYSTEM_TREES.iter().any(|t| under(&dir, t));
        return everything.then(|| format!("everything in {dir}"));
    }
    if SYSTEM_DIRS.contains(&n.as_str()) {
        return Some(n);
    }
    if SYSTEM_TREES.iter().any(|t| under(&n, t)) || is_home_dir(&n) {
        return Some(n);
    }
    None
}

fn is_home_dir(n: &str) -> bool {
    n.strip_prefix("/home/").is_some_and(|u| !u.contains('/'))
}

fn is_critical_file(path: &str) -> bool {
    let n = normalize(path);
    CRITICAL_FILES.contains(&n.as_str()) || CRITICAL_TREES.iter().any(|t| under(&n, t))
}

fn is_log_or_history(path: &str) -> bool {
    let n = normalize(path);
    under(&n, "/var/log")
        || n == "/var/run/utmp"
        || n == "/run/utmp"
        || HISTORY_FILES.contains(&program_name(&n))
}

fn is_device(path: &str) -> bool {
    let n = normalize(path);
    n.starts_with("/dev/")
        && !HARMLESS_DEVICES.contains(&n.as_str())
        && ![
            "/dev/fd/",
            "/dev/pts/",
            "/dev/shm/",
            "/dev/tcp/",
            "/dev/udp/",
        ]
        .iter()
        .any(|p| n.starts_with(p))
}

/// `su -c STR`, `su --command=STR`, `runuser -l user -c STR`.
fn su_command(args: &[Word]) -> Option<Word> {
    let mut iter = args.iter();
    while let Some(w) = iter.next() {
        let t = w.text.as_str();
        if let Some(v) = t.strip_prefix("--command=") {
            return Some(plain(v));
        }
        if t == "-c"
            || t == "--command"
            || (t.starts_with('-') && !t.starts_with("--") && t.ends_with('c'))
        {
            return iter.next().cloned();
        }
    }
    None
}

impl Classifier {
    fn flag(&mut self, reason: impl Into<String>) {
        self.reasons.push(reason.into());
    }

    /// A whole command line.
    fn source(&mut self, src: &str, depth: usize) {
        if depth > MAX_DEPTH {
            self.flag(format!(
                "nested more than {MAX_DEPTH} levels deep (shells, substitutions): too deep to check"
            ));
            return;
        }
        let tokens = match lex(src) {
            Ok(t) => t,
            Err(e) => {
                self.flag(format!("cannot be read to check it: {e}"));
                return;
            }
        };
        self.fork_bomb(&tokens);
        for pipeline in pipelines(tokens) {
            self.pipeline(&pipeline, depth);
        }
    }

    /// `f(){ f|f& };f` and friends: a function that pipes itself into itself.
    fn fork_bomb(&mut self, tokens: &[Token]) {
        let word = |i: usize| match tokens.get(i) {
            Some(Token::Word(w)) => Some(w.text.as_str()),
            _ => None,
        };
        for i in 0..tokens.len() {
            let name = match (word(i), tokens.get(i + 1), tokens.get(i + 2)) {
                (Some(n), Some(Token::Op(Op::LParen)), Some(Token::Op(Op::RParen))) => n,
                _ if word(i) == Some("function") => match word(i + 1) {
                    Some(n) => n,
                    None => continue,
                },
                _ => continue,
            };
            let calls_itself_in_a_pipe = (i + 1..tokens.len()).any(|j| {
                word(j) == Some(name)
                    && matches!(tokens.get(j + 1), Some(Token::Op(Op::Pipe)))
                    && word(j + 2) == Some(name)
            });
            if calls_itself_in_a_pipe {
                self.flag(format!(
                    "a fork bomb: function `{name}` pipes itself into itself"
                ));
                return;
            }
        }
    }

    fn pipeline(&mut self, commands: &[Command], depth: usize) {
        let mut programs = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            self.command(&c.words, Stdin::of(&c.redirects, i > 0), depth);
            for (op, target) in &c.redirects {
                self.redirect(op, target.as_ref());
            }
            programs.push(
                self.unwrap(&c.words, depth, false)
                    .first()
                    .map(|w| program_name(&w.text).to_owned()),
            );
        }
        let downloads = programs
            .iter()
            .position(|p| p.as_deref().is_some_and(|p| DOWNLOADERS.contains(&p)));
        if let Some(first) = downloads
            && programs[first + 1..]
                .iter()
                .any(|p| p.as_deref().is_some_and(runs_code))
        {
            self.flag("pipes a download into a shell or interpreter (`curl … | sh`)");
        }
    }

    fn redirect(&mut self, op: &Op, target: Option<&Word>) {
        let (Some(mode), Some(target)) = (op.writes(), target) else {
            return;
        };
        let path = target.text.as_str();
        if is_device(path) {
            self.flag(format!("writes to the device {path}"));
        }
        if normalize(path) == "/proc/sysrq-trigger" {
            self.flag("writes to /proc/sysrq-trigger (crashes, reboots or freezes the kernel)");
        }
        if mode == WriteMode::Truncate && is_log_or_history(path) {
            self.flag(format!("empties the log or shell history file {path}"));
        }
        if mode == WriteMode::Truncate && is_critical_file(path) {
            self.flag(format!("overwrites the system file {path}"));
        }
    }

    /// Strips assignments, reserved words and wrappers down to the command that runs. Empty when
    /// a wrapper runs something other than a simple command (checked here when `report`).
    fn unwrap(&mut self, words: &[Word], depth: usize, report: bool) -> Vec<Word> {
        let mut rest: Vec<Word> = words.to_vec();
        loop {
            while rest.first().is_some_and(|w| w.assignment) {
                let w = rest.remove(0);
                if report {
                    self.assignment(&w.text);
                }
            }
            while rest
                .first()
                .is_some_and(|w| RESERVED.contains(&w.text.as_str()))
            {
                rest.remove(0);
            }
            let Some(first) = rest.first() else {
                return rest;
            };
            let name = program_name(&first.text).to_owned();
            match self.wrapper(&name, &rest[1..], depth, report) {
                Unwrapped::Runs(inner) => rest = inner,
                Unwrapped::NotAWrapper => return rest,
                Unwrapped::Elsewhere => return Vec::new(),
            }
        }
    }

    /// What the wrapper `name` runs, given the words after it.
    fn wrapper(&mut self, name: &str, args: &[Word], depth: usize, report: bool) -> Unwrapped {
        let options = leading_options(args);
        match name {
            // `env -S 'cmd args'`: the string is split into words, like a command line.
            "env" => match env_split_string(args) {
                Some((split, after)) => {
                    let mut words = split_words(&split);
                    words.extend(after);
                    return Unwrapped::Runs(words);
                }
                None => return self.plain_wrapper(name, args, report),
            },
            "xargs" if report => self.xargs(args, depth),
            "parallel" if report => self.parallel(args, depth),
            "xargs" | "parallel" => {}
            // `command -v bash` looks a program up, it does not run it.
            "command" if options.iter().any(|o| matches!(*o, "-v" | "-V")) => {}
            // `watch 'df -h | head'` hands its words, joined, to `sh -c` (unless `-x`).
            "watch" if !options.iter().any(|o| matches!(*o, "-x" | "--exec")) => {
                if report {
                    let inner = skip_options(args, WATCH_VALUED, 0);
                    self.source(&texts(inner).join(" "), depth + 1);
                }
            }
            // `flock FILE -c 'cmd'` runs the string with `sh -c`.
            "flock" => match skip_options(args, FLOCK_VALUED, 1) {
                [c, script, ..] if matches!(c.text.as_str(), "-c" | "--command") => {
                    if report {
                        self.source(&script.text, depth + 1);
                    }
                }
                inner => return Unwrapped::Runs(inner.to_vec()),
            },
            _ => return self.plain_wrapper(name, args, report),
        }
        // What these run is not one simple command: checked above, once.
        Unwrapped::Elsewhere
    }

    /// A wrapper from `WRAPPERS`, or not a wrapper at all.
    fn plain_wrapper(&mut self, name: &str, args: &[Word], report: bool) -> Unwrapped {
        let Some((_, values, positional)) = WRAPPERS.iter().find(|(n, ..)| *n == name) else {
            return Unwrapped::NotAWrapper;
        };
        let inner = skip_options(args, values, *positional);
        if inner.is_empty() && report {
            self.bare_wrapper(name, args);
        }
        Unwrapped::Runs(inner.to_vec())
    }

    /// `HISTFILE=/dev/null cmd`, `export HISTSIZE=0`.
    fn assignment(&mut self, text: &str) {
        let (name, value) = text.split_once('=').unwrap_or((text, ""));
        let disables_history = match name {
            "HISTFILE" => value.is_empty() || value == "/dev/null",
            "HISTSIZE" | "HISTFILESIZE" | "SAVEHIST" => value == "0",
            _ => false,
        };
        if disables_history {
            self.flag(format!("disables the shell history (`{text}`)"));
        }
        // A non-interactive bash sources `$BASH_ENV` before anything else.
        if name == "BASH_ENV" && !value.is_empty() {
            self.flag(format!(
                "`{text}` makes bash run {value} first: {}",
                code::UNREADABLE
            ));
        }
    }

    /// One simple command (with wrappers), and where its standard input comes from.
    fn command(&mut self, words: &[Word], stdin: Stdin, depth: usize) {
        for w in words {
            for nested in &w.nested {
                self.source(nested, depth + 1);
            }
        }
        let inner = self.unwrap(words, depth, true);
        let Some((first, rest)) = inner.split_first() else {
            return;
        };
        if first.is_dynamic() {
            self.flag(format!(
                "the program to run is only known at run time (`{}`)",
                first.text
            ));
            return;
        }
        let program = program_name(&first.text);
        if runs_code(program) {
            self.interpreter(rest, depth);
        }
        if self.code(program, rest, stdin, depth) {
            return;
        }
        let args = texts(rest);
        self.program_rules(&first.text, program, &args, rest, stdin, depth);
    }

    /// Runs code it downloads: `bash <(curl …)`, `sh -c "$(wget -O- …)"`, `. <(curl …)`.
    fn interpreter(&mut self, args: &[Word], depth: usize) {
        let downloads = args
            .iter()
            .flat_map(|w| &w.nested)
            .any(|src| self.mentions_downloader(src, depth));
        if downloads {
            self.flag("runs code it downloads (`sh <(curl …)`, `sh -c \"$(curl …)\"`)");
        }
    }

    fn mentions_downloader(&mut self, src: &str, depth: usize) -> bool {
        let Ok(tokens) = lex(src) else { return false };
        pipelines(tokens).iter().flatten().any(|c| {
            self.unwrap(&c.words, depth + 1, false)
                .first()
                .is_some_and(|w| DOWNLOADERS.contains(&program_name(&w.text)))
        })
    }

    fn program_rules(
        &mut self,
        path: &str,
        program: &str,
        args: &[&str],
        words: &[Word],
        stdin: Stdin,
        depth: usize,
    ) {
        if let Some(reason) = simple_rule(path, program, args) {
            self.flag(reason);
        }
        match program {
            "rm" | "unlink" | "srm" => self.rm(args, words),
            "truncate" => self.destroys_files(program, args),
            "dd" => self.dd(args),
            "kill" => self.kill(args),
            "chmod" | "chown" | "chgrp" => self.permissions(program, args),
            "iptables" | "ip6tables" | "iptables-legacy" | "iptables-nft" | "ip6tables-legacy"
            | "ip6tables-nft" | "ebtables" | "arptables" => self.iptables(program, args),
            "export" | "declare" | "typeset" | "local" | "readonly" => {
                args.iter().for_each(|a| self.assignment(a));
            }
            "cp" | "mv" | "install" | "ln" | "rsync" => self.copies(program, args),
            "tee" => self.tee(args),
            "find" => self.find(args, depth),
            "eval" => {
                if words.iter().any(Word::is_dynamic) {
                    self.flag("`eval` runs a string only known at run time");
                }
                self.source(&args.join(" "), depth + 1);
            }
            "su" | "runuser" | "script" => match su_command(words) {
                Some(script) => {
                    if script.is_dynamic() {
                        self.flag(format!(
                            "`{program} -c` runs a string only known at run time"
                        ));
                    }
                    self.source(&script.text, depth + 1);
                }
                // `runuser -u USER cmd`: the command follows.
                None if program == "runuser"
                    && args.iter().any(|a| matches!(*a, "-u" | "--user")) =>
                {
                    let inner = skip_options(words, &["-u", "-g", "-G", "--user", "--group"], 0);
                    self.command(inner, stdin, depth + 1);
                }
                // Without a command su, runuser and script start an interactive shell.
                None => self.starts_shell(&[&[program], args].concat().join(" ")),
            },
            // Not `/etc/init.d/ssh stop` (see `simple_rule`).
            "ssh" if !path.contains("/init.d/") => self.ssh(words, depth),
            _ => {}
        }
    }

    fn rm(&mut self, args: &[&str], words: &[Word]) {
        let recursive =
            has_short(args, 'r') || has_short(args, 'R') || has_long(args, "--recursive");
        let force = has_short(args, 'f') || has_long(args, "--force");
        if has_long(args, "--no-preserve-root") {
            self.flag("`rm --no-preserve-root` allows deleting /");
        }
        self.destroys_files("rm", args);
        let targets = operands(args);
        for t in &targets {
            let n = normalize(t);
            if (recursive || force)
                && let Some(p) = system_path(t)
            {
                self.flag(format!("`rm -r`/`-f` on a system path: {p}"));
            } else if is_critical_file(t) {
                self.flag(format!("`rm` of the system file {n}"));
            }
            if recursive
                && matches!(
                    n.as_str(),
                    "." | ".." | "*" | ".*" | "../*" | "~" | "~/*" | "~/.*"
                )
            {
                self.flag(format!(
                    "`rm -r` on `{t}`: a home directory or everything in the current one"
                ));
            }
        }
        if recursive {
            let dynamic = words.iter().filter(|w| !w.text.starts_with('-')).find(|w| {
                w.is_dynamic()
                    || (w.text.starts_with('~')
                        && normalize(&w.text) != "~"
                        && !w.text.starts_with("~/"))
            });
            if let Some(w) = dynamic {
                self.flag(format!(
                    "`rm -r` on `{}`: a path only known at run time",
                    w.text
                ));
            }
        }
    }

    /// Commands that destroy the files they are given: logs and histories are evidence.
    fn destroys_files(&mut self, program: &str, args: &[&str]) {
        for t in operands(args) {
            if is_log_or_history(t) {
                self.flag(format!("`{program}` wipes the log or history file {t}"));
            } else if program == "truncate" && is_critical_file(t) {
                self.flag(format!("`truncate` of the system file {t}"));
            }
        }
    }

    fn dd(&mut self, args: &[&str]) {
        for a in args {
            if let Some(target) = a.strip_prefix("of=") {
                if is_device(target) {
                    self.flag(format!("`dd` writes to the device {target}"));
                }
                if is_log_or_history(target) || is_critical_file(target) {
                    self.flag(format!("`dd` overwrites {target}"));
                }
            }
        }
    }

    fn kill(&mut self, args: &[&str]) {
        let mut rest = args;
        match rest.first() {
            Some(&("-l" | "-L" | "--list" | "--table")) => return,
            Some(&("-s" | "-n" | "--signal")) => rest = rest.get(2..).unwrap_or_default(),
            Some(a) if a.starts_with('-') && *a != "--" => rest = &rest[1..],
            _ => {}
        }
        if rest.first() == Some(&"--") {
            rest = &rest[1..];
        }
        if rest.contains(&"-1") {
            self.flag("`kill -1` signals every process");
        }
        if rest.contains(&"1") {
            self.flag("`kill 1` signals init (PID 1)");
        }
    }

    fn permissions(&mut self, program: &str, args: &[&str]) {
        let recursive = has_short(args, 'R') || has_long(args, "--recursive");
        // Modes and owners never start with `/`, so every path-like word is a target.
        for t in args.iter().filter(|a| a.starts_with('/')) {
            if normalize(t) == "/" {
                self.flag(format!("`{program}` on / changes the whole filesystem"));
            } else if recursive && let Some(p) = system_path(t) {
                self.flag(format!("`{program} -R` on a system path: {p}"));
            }
        }
    }

    fn iptables(&mut self, program: &str, args: &[&str]) {
        if has_short(args, 'F') || has_long(args, "--flush") {
            self.flag(format!("`{program} -F` flushes firewall rules"));
        }
        if let Some(i) = args.iter().position(|a| *a == "-P" || *a == "--policy")
            && args
                .get(i + 2)
                .is_some_and(|p| matches!(*p, "DROP" | "REJECT"))
        {
            self.flag(format!(
                "`{program} -P … DROP` can cut off every connection"
            ));
        }
    }

    /// The destination of `cp`/`mv`/`ln`/`install`/`rsync` (the last operand).
    fn copies(&mut self, program: &str, args: &[&str]) {
        let ops = operands(args);
        let Some((dest, sources)) = ops.split_last() else {
            return;
        };
        if is_device(dest) {
            self.flag(format!("`{program}` writes to the device {dest}"));
        }
        if is_log_or_history(dest) {
            self.flag(format!(
                "`{program}` replaces the log or history file {dest}"
            ));
        }
        if is_critical_file(dest) {
            self.flag(format!("`{program}` replaces the system file {dest}"));
        }
        if program == "mv" {
            for s in sources {
                if SYSTEM_DIRS.contains(&normalize(s).as_str()) {
                    self.flag(format!("`mv` moves the system directory {s}"));
                }
            }
        }
    }

    fn tee(&mut self, args: &[&str]) {
        let append = has_short(args, 'a') || has_long(args, "--append");
        for t in operands(args) {
            if is_device(t) {
                self.flag(format!("`tee` writes to the device {t}"));
            }
            if !append && is_log_or_history(t) {
                self.flag(format!("`tee` empties the log or history file {t}"));
            }
            if !append && is_critical_file(t) {
                self.flag(format!("`tee` overwrites the system file {t}"));
            }
        }
    }
}

/// The rules that look at one command's arguments and nothing else.
fn simple_rule(path: &str, program: &str, args: &[&str]) -> Option<String> {
    let ops = operands(args);
    let ssh_unit_then = |actions: &[&str]| matches!(ops.as_slice(), [unit, action, ..] if SSH_UNITS.contains(unit) && actions.contains(action));
    let listing = || {
        args.iter()
            .any(|a| matches!(*a, "-l" | "--list" | "-d" | "--dump"))
            || (program == "parted" && ops.get(1) == Some(&"print"))
    };
    let reason = match program {
        "systemctl" => return systemctl_rule(args),
        "shred" | "wipe" => format!("`{program}` destroys file contents for good"),
        "mkfs" | "mke2fs" | "mkswap" | "mkdosfs" => {
            format!("`{program}` creates a filesystem (erases the device)")
        }
        p if p.starts_with("mkfs.") => {
            format!("`{program}` creates a filesystem (erases the device)")
        }
        "wipefs" | "blkdiscard" => format!("`{program}` erases a disk or its signatures"),
        "fdisk" | "sfdisk" | "cfdisk" | "gdisk" | "sgdisk" | "parted" if !listing() => {
            format!("`{program}` changes a disk's partition table")
        }
        "shutdown" | "reboot" | "halt" | "poweroff" => {
            format!("`{program}` stops or restarts the machine")
        }
        "init" | "telinit"
            if matches!(ops.first(), Some(&("0" | "1" | "6" | "s" | "S" | "single"))) =>
        {
            format!(
                "`{program} {}` halts, reboots or leaves multi-user mode",
                ops[0]
            )
        }
        "service" if ssh_unit_then(&["stop"]) => "stops sshd (no new SSH logins)".into(),
        "ssh" | "sshd" if path.contains("/init.d/") && args.contains(&"stop") => {
            "stops sshd (no new SSH logins)".into()
        }
        "update-rc.d" if ssh_unit_then(&["disable", "remove"]) => "disables sshd at boot".into(),
        "pkill" | "killall" if ops.iter().any(|a| matches!(*a, "sshd" | "ssh")) => {
            "kills sshd (no new SSH logins)".into()
        }
        "killall5" => "`killall5` signals every process".into(),
        "nft" if args.contains(&"flush") => "`nft flush` removes firewall rules".into(),
        "userdel" | "deluser" | "groupdel" | "delgroup" => {
            format!("`{program}` deletes a user or group")
        }
        "passwd" | "chpasswd" => format!("`{program}` changes or locks passwords"),
        "usermod"
            if ['L', 'p', 'e'].iter().any(|c| has_short(args, *c))
                || ["--lock", "--password", "--expiredate"]
                    .iter()
                    .any(|l| has_long(args, l)) =>
        {
            "`usermod` locks, expires or changes the password of a user".into()
        }
        "crontab" if has_short(args, 'r') => {
            "`crontab -r` removes every cron job of the user".into()
        }
        "history" if has_short(args, 'c') => "`history -c` wipes the shell history".into(),
        "unset" if args.iter().any(|a| a.starts_with("HISTFILE")) => {
            "disables the shell history (`unset HISTFILE`)".into()
        }
        "set" if args.windows(2).any(|w| w == ["+o", "history"]) => {
            "disables the shell history (`set +o history`)".into()
        }
        "journalctl"
            if ["--vacuum-size", "--vacuum-time", "--vacuum-files"]
                .iter()
                .any(|l| has_long(args, l)) =>
        {
            "`journalctl --vacuum-*` deletes logs".into()
        }
        "ip" if ["link", "set", "down"].iter().all(|w| args.contains(w)) => {
            "takes a network interface down (`ip link set … down`)".into()
        }
        "ifconfig" if args.last() == Some(&"down") => {
            "takes a network interface down (`ifconfig … down`)".into()
        }
        "ifdown" => "`ifdown` takes a network interface down".into(),
        "nmcli" if args.windows(2).any(|w| w == ["networking", "off"]) => {
            "`nmcli networking off` disconnects the machine".into()
        }
        _ => return None,
    };
    Some(reason)
}

/// `systemctl`: stopping the machine, leaving multi-user mode, or stopping sshd.
fn systemctl_rule(args: &[&str]) -> Option<String> {
    const STOPS_MACHINE: &[&str] = &[
        "reboot",
        "poweroff",
        "halt",
        "kexec",
        "soft-reboot",
        "emergency",
        "rescue",
        "suspend",
        "hibernate",
        "hybrid-sleep",
        "suspend-then-hibernate",
    ];
    const SINGLE_USER: &[&str] = &[
        "rescue",
        "emergency",
        "poweroff",
        "reboot",
        "halt",
        "shutdown",
    ];
    let ops = operands(args);
    let (action, units) = ops.split_first()?;
    let reason = match *action {
        a if STOPS_MACHINE.contains(&a) => {
            format!("`systemctl {a}` stops the machine or its services")
        }
        "isolate"
            if units
                .iter()
                .any(|u| SINGLE_USER.iter().any(|t| u.starts_with(t))) =>
        {
            "`systemctl isolate` leaves multi-user mode".into()
        }
        a @ ("stop" | "disable" | "mask" | "kill")
            if units.iter().any(|u| SSH_UNITS.contains(u)) =>
        {
            format!("`systemctl {a}` on sshd (locks out SSH)")
        }
        _ => return None,
    };
    Some(reason)
}

/// `env -S 'a b' c` / `env --split-string='a b' c`: the string, and the words after it.
fn env_split_string(args: &[Word]) -> Option<(String, Vec<Word>)> {
    for (i, w) in args.iter().enumerate() {
        let t = w.text.as_str();
        if t == "-S" || t == "--split-string" {
            let s = args.get(i + 1)?.text.clone();
            return Some((s, args.get(i + 2..).unwrap_or_default().to_vec()));
        }
        if let Some(v) = t
            .strip_prefix("--split-string=")
            .or_else(|| t.strip_prefix("-S"))
        {
            return Some((v.to_owned(), args[i + 1..].to_vec()));
        }
        if !t.starts_with('-') && !w.assignment {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests;
