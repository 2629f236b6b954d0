//! Programs that run another program on arguments only known when they run: `xargs` (from its
//! input), `parallel` (its input or `:::` lists) and `find -exec` (the files it finds), and
//! `find -delete`. What they run is checked as usual; on top of that a program that runs code,
//! deletes, or (for `xargs`/`parallel`, whose arguments may be anything) is not known to be
//! harmless, makes the command dangerous: its effect cannot be read from its words.

use super::code::{Stdin, UNREADABLE, runs_code};
use super::{
    Classifier, SYSTEM_TREES, is_log_or_history, normalize, plain, program_name, skip_options,
    split_words, texts, under,
};
use crate::tools::ssh::shell::Word;

/// Programs that destroy what they are given: files, disks, processes, users.
const DESTROYS: &[&str] = &[
    "rm",
    "unlink",
    "srm",
    "shred",
    "wipe",
    "truncate",
    "dd",
    "wipefs",
    "blkdiscard",
    "kill",
    "pkill",
    "killall",
    "userdel",
    "deluser",
    "groupdel",
    "delgroup",
];
/// Programs that change who may use what they are given.
const REPERMISSIONS: &[&str] = &["chmod", "chown", "chgrp"];
/// Programs that only read or print, whatever their arguments (`sort -o`, `uniq IN OUT`, `sed -i`
/// and `awk` with a program from input are not among them).
#[rustfmt::skip]
const HARMLESS: &[&str] = &[
    "echo", "printf", "cat", "tac", "head", "tail", "wc", "grep", "egrep", "fgrep", "zgrep", "rg",
    "ls", "stat", "file", "du", "df", "md5sum", "sha1sum", "sha224sum", "sha256sum", "sha384sum",
    "sha512sum", "b2sum", "cksum", "basename", "dirname", "realpath", "readlink", "test", "[",
    "true", "false", "nl", "od", "strings", "jq", "diff", "cmp", "getent", "id", "host", "dig",
    "nslookup", "ping", "sleep", "date", "printenv", "which",
];

/// What a fanned-out program is, as far as its unknown arguments go.
enum Fanned {
    /// A shell or interpreter: the arguments become code.
    Code,
    Destroys,
    Repermissions,
    Harmless,
    Unknown,
}

fn fanned(program: &str) -> Fanned {
    if runs_code(program) {
        Fanned::Code
    } else if DESTROYS.contains(&program) || program.starts_with("mkfs") {
        Fanned::Destroys
    } else if REPERMISSIONS.contains(&program) {
        Fanned::Repermissions
    } else if HARMLESS.contains(&program) {
        Fanned::Harmless
    } else {
        Fanned::Unknown
    }
}

/// Options of GNU xargs that take a value.
const XARGS_VALUED: &[&str] = &[
    "-a",
    "-d",
    "-E",
    "-I",
    "-L",
    "-n",
    "-P",
    "-s",
    "--arg-file",
    "--delimiter",
    "--max-args",
    "--max-procs",
    "--max-chars",
    "--max-lines",
    "--replace",
    "--process-slot-var",
];
/// Options of GNU parallel that take a value.
#[rustfmt::skip]
const PARALLEL_VALUED: &[&str] = &[
    "-j", "--jobs", "-P", "-S", "--sshlogin", "--sshloginfile", "--slf", "-a", "--arg-file",
    "-d", "--delimiter", "-I", "-C", "--colsep", "-n", "--max-args", "-N", "-L", "--max-lines",
    "-l", "--results", "--res", "--joblog", "--tmpdir", "--timeout", "--retries", "--delay",
    "--load", "--memfree", "-E", "--eof", "--tagstring", "--tag-string", "--header",
    "--basefile", "--bf", "--return", "--workdir", "--wd", "--env", "--block", "--block-size",
];

impl Classifier {
    /// The program a fan-out runs, unwrapped (`xargs sudo rm`); `None` when it is not known
    /// (a variable: flagged when the command itself is checked).
    fn fanned_program(&mut self, words: &[Word], depth: usize) -> Option<String> {
        let run = self.unwrap(words, depth, false);
        let first = run.first()?;
        (!first.is_dynamic()).then(|| program_name(&first.text).to_owned())
    }

    /// `… | xargs rm -rf`, `xargs -0 sh -c '…'`: the arguments come from input.
    pub(super) fn xargs(&mut self, args: &[Word], depth: usize) {
        let inner = skip_options(args, XARGS_VALUED, 0);
        // With no program xargs runs `echo`.
        if inner.is_empty() {
            return;
        }
        self.arguments_from_input("xargs", inner, depth);
        // xargs gives the commands it runs /dev/null as their input.
        self.command(inner, Stdin::Closed, depth + 1);
    }

    /// `parallel rm ::: a b`, `parallel 'sh -c {}' < list`. With no command, each argument is
    /// a command.
    pub(super) fn parallel(&mut self, args: &[Word], depth: usize) {
        let after_options = skip_options(args, PARALLEL_VALUED, 0);
        let end = after_options
            .iter()
            .position(|w| w.text.starts_with(":::"))
            .unwrap_or(after_options.len());
        let inner = &after_options[..end];
        if inner.is_empty() {
            self.flag(format!(
                "`parallel` runs each line of its input (or `:::` argument) as a command: \
                 {UNREADABLE}"
            ));
            return;
        }
        // parallel joins the command's words and hands them to a shell.
        let command = texts(inner).join(" ");
        self.arguments_from_input("parallel", &split_words(&command), depth);
        self.source(&command, depth + 1);
    }

    /// xargs and parallel: only a program known to be harmless may take arguments nobody has
    /// read.
    fn arguments_from_input(&mut self, via: &str, inner: &[Word], depth: usize) {
        let Some(program) = self.fanned_program(inner, depth) else {
            return;
        };
        match fanned(&program) {
            Fanned::Harmless => {}
            Fanned::Code => self.flag(format!(
                "`{via} {program}` runs code with arguments from its input pasted in: {UNREADABLE}"
            )),
            Fanned::Destroys | Fanned::Repermissions => self.flag(format!(
                "`{via} {program}` takes its targets from input, which cannot be checked"
            )),
            Fanned::Unknown => self.flag(format!(
                "`{via} {program}` is not known to be harmless and takes its arguments from \
                 input: {UNREADABLE}"
            )),
        }
    }

    /// `find -delete` and `find -exec` delete or run code on files chosen when it runs. Other
    /// `-exec` programs are checked with each start point in place of `{}`.
    pub(super) fn find(&mut self, args: &[&str], depth: usize) {
        let starts = find_start_points(args);
        if args.contains(&"-delete") {
            self.find_delete(&starts);
        }
        let mut j = 0;
        while j < args.len() {
            if matches!(args[j], "-exec" | "-execdir" | "-ok" | "-okdir") {
                let action = args[j];
                let end = args[j + 1..]
                    .iter()
                    .position(|a| *a == ";" || *a == "+")
                    .map_or(args.len(), |p| j + 1 + p);
                let words: Vec<Word> = args[j + 1..end].iter().map(|a| plain(a)).collect();
                self.find_exec(action, &words, depth);
                for s in &starts {
                    let inner: Vec<Word> = args[j + 1..end]
                        .iter()
                        .map(|a| plain(&a.replace("{}", s)))
                        .collect();
                    self.command(&inner, Stdin::Inherited, depth + 1);
                }
                j = end;
            }
            j += 1;
        }
    }

    fn find_delete(&mut self, starts: &[&str]) {
        let before = self.reasons.len();
        for s in starts {
            // The start point's contents are filtered, so only whole system trees count.
            let n = normalize(s);
            if n == "/" || SYSTEM_TREES.iter().any(|t| under(&n, t)) {
                self.flag(format!("`find -delete` on a system path: {n}"));
            } else if is_log_or_history(s) {
                self.flag(format!("`find -delete` wipes logs under {s}"));
            }
        }
        if self.reasons.len() == before {
            self.flag(format!(
                "`find -delete` deletes whatever matches when it runs: {UNREADABLE}"
            ));
        }
    }

    /// `find -exec sh -c …`, `find -exec rm {} +`.
    fn find_exec(&mut self, action: &str, words: &[Word], depth: usize) {
        let Some(program) = self.fanned_program(words, depth) else {
            return;
        };
        match fanned(&program) {
            Fanned::Code => self.flag(format!(
                "`find {action} {program}` runs code on the files it finds: {UNREADABLE}"
            )),
            Fanned::Destroys => self.flag(format!(
                "`find {action} {program}` destroys files chosen when it runs: {UNREADABLE}"
            )),
            // Checked with the start points in place of `{}`.
            Fanned::Repermissions | Fanned::Harmless | Fanned::Unknown => {}
        }
    }
}

/// The paths `find` starts from (after `-H`/`-L`/`-P`/`-D …`/`-O…`); `.` when none are given.
fn find_start_points<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match *a {
            "-H" | "-L" | "-P" => i += 1,
            "-D" => i += 2,
            a if a.starts_with("-O") => i += 1,
            _ => break,
        }
    }
    let mut starts: Vec<&str> = args[i.min(args.len())..]
        .iter()
        .take_while(|a| !a.starts_with('-') && **a != "(" && **a != "!")
        .copied()
        .collect();
    if starts.is_empty() {
        starts.push(".");
    }
    starts
}
