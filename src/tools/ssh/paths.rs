//! Which files an `ssh.exec.peek` command may name. The allowlist says which programs and
//! options may run; this says which paths they may read or list: never a secret (the built-in
//! denylist, `secret_paths.txt`, plus a host's `peek.deny_paths`), and, on a host with
//! `peek.allow_paths`, nothing outside those directories.
//!
//! For each built-in program it knows which words name files (operands, `grep -f FILE`,
//! `date -r FILE`, `journalctl --file=…`, `find` start points and `-newer FILE`, …), and it
//! refuses `ps e`, which prints what `/proc/PID/environ` holds. Paths are normalised lexically
//! (`.`, `..`, repeated slashes) before they are matched; symlinks on the host cannot be seen
//! from here, so this is a guard, and the real boundary is a remote user that cannot read
//! secrets in the first place (see the README).

use std::fmt;

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use super::config::HostPeekConfig;

const SECRET_PATHS: &str = include_str!("secret_paths.txt");

pub const PATH_NOT_ALLOWED: &str = "path_not_allowed";
const COMMAND_NOT_ALLOWED: &str = "command_not_allowed";

/// The built-in secret-path patterns, in the order of `secret_paths.txt`.
pub fn secret_patterns() -> impl Iterator<Item = &'static str> {
    SECRET_PATHS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Why a command was refused, with its problem code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn refuse<T>(code: &'static str, message: String) -> Result<T, Refusal> {
    Err(Refusal { code, message })
}

/// What is wrong with a deny pattern, if anything.
pub fn pattern_problem(pattern: &str) -> Option<String> {
    if !(pattern.starts_with('/') || pattern.starts_with("**/")) {
        return Some(format!(
            "`{pattern}`: patterns are absolute (`/…`) or match anywhere (`**/…`)"
        ));
    }
    // Kept to what both globset and grep's --exclude (fnmatch) read the same way, as recursive
    // greps pass the patterns on (see `Policy::recursive_grep`).
    if let Some(c) = pattern.chars().find(|c| "{}\\".contains(*c)) {
        return Some(format!(
            "`{pattern}`: `{c}` is not part of the pattern syntax (`*`, `?`, `[…]`, `**`)"
        ));
    }
    if pattern.split('/').any(|c| c == "." || c == "..") {
        return Some(format!(
            "`{pattern}`: `.` and `..` never match (paths are compared normalised)"
        ));
    }
    if pattern.contains("//") {
        return Some(format!("`{pattern}`: repeated `/`"));
    }
    glob(pattern).err()
}

/// What is wrong with an `allow_paths` entry, if anything.
pub fn prefix_problem(prefix: &str) -> Option<String> {
    if !prefix.starts_with('/') {
        return Some(format!("`{prefix}`: must be an absolute path"));
    }
    if prefix.contains(['*', '?', '[', ']', '{', '}']) {
        return Some(format!(
            "`{prefix}`: a directory, not a pattern (use deny_paths for patterns)"
        ));
    }
    if prefix.split('/').any(|c| c == "." || c == "..") {
        return Some(format!("`{prefix}`: must not contain `.` or `..`"));
    }
    None
}

fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("`{pattern}`: {e}"))
}

/// A deny pattern, ready for the three ways it is used: matching a path (in `Policy::set`),
/// and refusing or excluding in a recursive grep (`reach`).
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    /// From the host's `deny_paths` rather than the built-in list.
    host: bool,
    reach: Reach,
}

impl Pattern {
    fn source(&self) -> &'static str {
        if self.host {
            "denied on this host"
        } else {
            "on peek's secret-path denylist"
        }
    }

    /// Why a path it matches is refused.
    fn why(&self) -> String {
        if self.host {
            format!("is denied on this host (deny_paths: `{}`)", self.text)
        } else {
            format!(
                "may hold secrets: it matches `{}` on peek's secret-path denylist",
                self.text
            )
        }
    }
}

#[derive(Debug, Clone)]
enum Reach {
    /// An absolute pattern, by component: a recursive search may not start in a directory
    /// that may hold a match.
    Below(Vec<Component>),
    /// A `**/…` pattern, which can match below any directory: its last component, for grep
    /// to skip files and directories of that name (a wider skip than the pattern, never a
    /// narrower one).
    Named(String),
}

#[derive(Debug, Clone)]
enum Component {
    AnyDepth,
    One(GlobMatcher),
}

/// The paths peek commands may name on one host.
#[derive(Debug, Clone)]
pub struct Policy {
    patterns: Vec<Pattern>,
    /// Every pattern compiled: glob `i` is `patterns[i]`.
    set: GlobSet,
    /// Normalised `allow_paths`, when set.
    allow: Option<Vec<String>>,
}

impl Policy {
    /// The built-in denylist plus the host's settings (checked by `SshConfig::problems`).
    pub fn new(host: &HostPeekConfig) -> Result<Self, String> {
        let mut patterns = Vec::new();
        let mut set = GlobSetBuilder::new();
        let all = secret_patterns()
            .map(|p| (p, false))
            .chain(host.deny_paths.iter().map(|p| (p.as_str(), true)));
        for (text, from_host) in all {
            if let Some(problem) = pattern_problem(text) {
                return Err(problem);
            }
            // `X/**` and `X` mean the same here (a match covers what is below it).
            let mut core = text;
            while let Some(shorter) = core.strip_suffix("/**") {
                core = shorter;
            }
            if core.is_empty() || core == "**" {
                core = "/**";
            }
            set.add(
                GlobBuilder::new(core)
                    .literal_separator(true)
                    .backslash_escape(false)
                    .build()
                    .map_err(|e| format!("`{text}`: {e}"))?,
            );
            let reach = match core.strip_prefix('/') {
                Some(rest) => Reach::Below(
                    rest.split('/')
                        .map(|c| match c {
                            "**" => Ok(Component::AnyDepth),
                            c => glob(c).map(Component::One),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                None => {
                    let last = core.rsplit('/').next().unwrap_or(core);
                    Reach::Named(if last == "**" { "*" } else { last }.to_owned())
                }
            };
            patterns.push(Pattern {
                text: text.to_owned(),
                host: from_host,
                reach,
            });
        }
        let allow = host.allow_paths.as_ref().map(|list| {
            list.iter()
                .map(|p| match normalise(p) {
                    Normal::Absolute(p) => p,
                    _ => p.clone(),
                })
                .collect()
        });
        Ok(Self {
            patterns,
            set: set.build().map_err(|e| e.to_string())?,
            allow,
        })
    }

    /// Checks every path `argv` names; answers the argv to run (a recursive `grep` gets
    /// `--exclude` options for the denied names).
    pub fn check(&self, argv: &[String]) -> Result<Vec<String>, Refusal> {
        let Some((program, args)) = argv.split_first() else {
            return Ok(argv.to_vec());
        };
        let uses = uses(program, args)?;
        for path in &uses.paths {
            self.check_path(program, path)?;
        }
        match uses.recursive_grep {
            Some(search) => self.recursive_grep(program, search),
            None => Ok(argv.to_vec()),
        }
    }

    fn check_path(&self, program: &str, path: &Path) -> Result<(), Refusal> {
        let refused = |why: String| refuse(PATH_NOT_ALLOWED, format!("`{program}`: {why}"));
        let text = match path {
            Path::Home => {
                if self.allow.is_some() {
                    return refused(
                        "without a path it uses the login user's home directory, which cannot \
                         be checked against this host's allow_paths: name a path"
                            .into(),
                    );
                }
                return Ok(());
            }
            Path::Named(text) => text,
        };
        let shown = |normal: &str| {
            if normal == text {
                format!("`{text}`")
            } else {
                format!("`{text}` (`{normal}`)")
            }
        };
        match normalise(text) {
            Normal::AboveHome => refused(format!(
                "`{text}` climbs out of the login user's home directory, which is not known \
                 here: use an absolute path"
            )),
            Normal::Relative(rel) => {
                // Read as if the home were `/`: `**/…` patterns match wherever the home is,
                // absolute ones when it is `/` (nothing relative reaches further).
                if let Some(p) = self.denied(&format!("/{rel}")) {
                    return refused(format!("{} {}", shown(&rel), p.why()));
                }
                if self.allow.is_some() {
                    return refused(format!(
                        "{} is relative to the login user's home directory, which cannot be \
                         checked against this host's allow_paths: use an absolute path",
                        shown(&rel)
                    ));
                }
                Ok(())
            }
            Normal::Absolute(abs) => {
                if let Some(p) = self.denied(&abs) {
                    return refused(format!("{} {}", shown(&abs), p.why()));
                }
                if let Some(allow) = &self.allow
                    && !allow.iter().any(|a| within(&abs, a))
                {
                    return refused(format!(
                        "{} is outside this host's allow_paths ({})",
                        shown(&abs),
                        list(allow)
                    ));
                }
                Ok(())
            }
        }
    }

    /// The pattern denying `path` (absolute, normalised) or a directory above it.
    fn denied(&self, path: &str) -> Option<&Pattern> {
        let ends = path
            .match_indices('/')
            .map(|(i, _)| i)
            .filter(|i| *i > 0)
            .chain([path.len()]);
        ends.filter(|end| *end > 1).find_map(|end| {
            self.set
                .matches(&path[..end])
                .first()
                .map(|i| &self.patterns[*i])
        })
    }

    /// `grep -r` reads every file below its start: refused from a directory an absolute
    /// pattern lies below (`/etc` holds `/etc/shadow`), and run with the `**/…` patterns
    /// passed on as `--exclude`/`--exclude-dir` (grep skips files and directories by name).
    fn recursive_grep(&self, program: &str, search: Search) -> Result<Vec<String>, Refusal> {
        for start in &search.starts {
            let normal = match normalise(start) {
                Normal::Absolute(a) => a,
                // As for other relative paths: the home could be anywhere, `/` included.
                Normal::Relative(r) if r == "." => "/".to_owned(),
                Normal::Relative(r) => format!("/{r}"),
                Normal::AboveHome => continue, // refused as a path already
            };
            let components: Vec<&str> = normal.split('/').filter(|c| !c.is_empty()).collect();
            if let Some(p) = self.patterns.iter().find(|p| match &p.reach {
                Reach::Below(pattern) => may_hold_a_match(pattern, &components),
                Reach::Named(_) => false,
            }) {
                let start = if start == "." && search.implicit {
                    "the login user's home directory".to_owned()
                } else {
                    format!("`{start}`")
                };
                return refuse(
                    PATH_NOT_ALLOWED,
                    format!(
                        "`{program}`: a recursive search of {start} could read `{}` ({}): \
                         search a directory below it",
                        p.text,
                        p.source()
                    ),
                );
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for p in &self.patterns {
            if let Reach::Named(name) = &p.reach
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        // Options first, then the exclusions (grep lets the last matching --include or
        // --exclude win, so they must come after the caller's), then the operands.
        let mut argv = vec![program.to_owned()];
        argv.extend(search.options);
        for n in &names {
            argv.push(format!("--exclude={n}"));
            argv.push(format!("--exclude-dir={n}"));
        }
        argv.push("--".into());
        argv.extend(search.operands);
        Ok(argv)
    }
}

/// Whether a directory (by component) may hold a path that an absolute pattern matches: its
/// components match the pattern's first ones (or a `**` comes first).
fn may_hold_a_match(pattern: &[Component], dir: &[&str]) -> bool {
    for (i, name) in dir.iter().enumerate() {
        match pattern.get(i) {
            None | Some(Component::AnyDepth) => return true,
            Some(Component::One(g)) if !g.is_match(name) => return false,
            Some(Component::One(_)) => {}
        }
    }
    true
}

fn within(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A path after lexical normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Normal {
    /// `/a/b`, or `/`.
    Absolute(String),
    /// Below the login user's home: `a/b`, or `.` for the home itself.
    Relative(String),
    /// A relative path whose `..` climb out of the home (`../x`): where it lands depends on
    /// a home directory we do not know.
    AboveHome,
}

/// Resolves `.`, `..` and repeated slashes as the kernel would were there no symlinks; `..`
/// above `/` stays at `/`.
fn normalise(path: &str) -> Normal {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    if absolute {
        Normal::Absolute(format!("/{}", parts.join("/")))
    } else if parts.first() == Some(&"..") {
        Normal::AboveHome
    } else if parts.is_empty() {
        Normal::Relative(".".into())
    } else {
        Normal::Relative(parts.join("/"))
    }
}

/// A path a command names, or the home directory it uses when it names none (`ls`, `du`,
/// `find`, `grep -r`: commands run in the login user's home).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Path {
    Named(String),
    Home,
}

/// A recursive grep, taken apart to be put together again with exclusions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Search {
    /// Option words (values in their own words included), in order.
    options: Vec<String>,
    /// The pattern (unless given with -e/-f) and the files.
    operands: Vec<String>,
    /// Where it starts (`.` when no file is named).
    starts: Vec<String>,
    implicit: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Uses {
    paths: Vec<Path>,
    recursive_grep: Option<Search>,
}

/// A program's options as getopt_long reads them: what matters is which words are option
/// values, so that operands and path-valued options are found exactly.
struct Syntax {
    /// Short options that take a value (the rest of the word, or the next word). Options
    /// with an optional value (`date -I[FMT]`) are not here: they never take the next word.
    short_values: &'static str,
    /// Long options that require a value (`--name=value` or `--name value`).
    long_values: &'static [&'static str],
    /// Long options without a value that are a prefix of one with a value (`--binary` and
    /// `--binary-files`): an exact name wins over an abbreviation.
    long_flags: &'static [&'static str],
}

const CAT: Syntax = Syntax {
    short_values: "",
    long_values: &[],
    long_flags: &[],
};
const HEAD: Syntax = Syntax {
    short_values: "cn",
    long_values: &["bytes", "lines"],
    long_flags: &[],
};
const TAIL: Syntax = Syntax {
    short_values: "cns",
    long_values: &[
        "bytes",
        "lines",
        "pid",
        "sleep-interval",
        "max-unchanged-stats",
    ],
    long_flags: &[],
};
const WC: Syntax = Syntax {
    short_values: "",
    long_values: &["files0-from", "total"],
    long_flags: &[],
};
const STAT: Syntax = Syntax {
    short_values: "c",
    long_values: &["format", "printf", "cached"],
    long_flags: &[],
};
const LS: Syntax = Syntax {
    short_values: "ITw",
    long_values: &[
        "block-size",
        "format",
        "hide",
        "ignore",
        "indicator-style",
        "quoting-style",
        "sort",
        "tabsize",
        "time",
        "time-style",
        "width",
    ],
    long_flags: &[],
};
const DU: Syntax = Syntax {
    short_values: "BdtX",
    long_values: &[
        "block-size",
        "exclude",
        "exclude-from",
        "files0-from",
        "max-depth",
        "threshold",
        "time-style",
    ],
    long_flags: &["time"],
};
const DF: Syntax = Syntax {
    short_values: "BFtx",
    long_values: &["block-size", "exclude-type", "type"],
    long_flags: &[],
};
const GREP: Syntax = Syntax {
    short_values: "ABCDXdefm",
    long_values: &[
        "after-context",
        "before-context",
        "binary-files",
        "context",
        "devices",
        "directories",
        "exclude",
        "exclude-dir",
        "exclude-from",
        "file",
        "group-separator",
        "include",
        "label",
        "max-count",
        "regexp",
    ],
    long_flags: &["binary"],
};
const DATE: Syntax = Syntax {
    short_values: "dfrs",
    long_values: &["date", "file", "reference", "rfc-3339", "set"],
    long_flags: &[],
};
// Only the options that need telling apart: journalctl's operands are journal matches, not
// files, so an option value taken for an operand does no harm; `-n` and `-b` take an optional
// value and are not here.
const JOURNALCTL: Syntax = Syntax {
    short_values: "DiutpgoMcSUF",
    long_values: &[
        "directory",
        "file",
        "root",
        "image",
        "cursor",
        "cursor-file",
    ],
    long_flags: &[],
};
const SS: Syntax = Syntax {
    short_values: "fADFN",
    long_values: &["family", "query", "socket", "diag", "filter", "net"],
    long_flags: &[],
};

/// The words of a command, read as getopt_long would.
#[derive(Debug, Default)]
struct Parsed {
    /// Each option: its name (`-f`, `--file`, or an abbreviation of a flag as written) and
    /// its value.
    options: Vec<(String, Option<String>)>,
    option_words: Vec<String>,
    operands: Vec<String>,
}

impl Parsed {
    fn values<'a>(&'a self, names: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
        self.options
            .iter()
            .filter(move |(n, _)| names.contains(&n.as_str()))
            .filter_map(|(_, v)| v.as_deref())
    }

    fn has(&self, names: &[&str]) -> bool {
        self.options
            .iter()
            .any(|(n, _)| names.contains(&n.as_str()))
    }
}

fn getopt(program: &str, syntax: &Syntax, args: &[String]) -> Result<Parsed, Refusal> {
    let mut out = Parsed::default();
    let mut words = args.iter();
    let mut options_done = false;
    while let Some(word) = words.next() {
        if options_done || word == "-" || !word.starts_with('-') {
            out.operands.push(word.clone());
            continue;
        }
        if word == "--" {
            options_done = true;
            continue;
        }
        out.option_words.push(word.clone());
        if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let takes_value = |n: &str| syntax.long_values.contains(&n);
            let resolved = if takes_value(name) || syntax.long_flags.contains(&name) {
                Some(name.to_owned())
            } else {
                let candidates: Vec<&str> = syntax
                    .long_values
                    .iter()
                    .copied()
                    .filter(|v| v.starts_with(name))
                    .collect();
                match (candidates.as_slice(), &inline) {
                    ([], _) => None,
                    // `--fil=x`: getopt takes the abbreviation, or refuses an ambiguous one.
                    ([one], Some(_)) => Some((*one).to_owned()),
                    // Without `=` we cannot tell whether the next word is its value (an
                    // unlisted flag of that exact name would take none).
                    (many, _) => {
                        return refuse(
                            COMMAND_NOT_ALLOWED,
                            format!(
                                "`{program}`: `{word}` is abbreviated: write {} in full",
                                many.iter()
                                    .map(|m| format!("`--{m}`"))
                                    .collect::<Vec<_>>()
                                    .join(" or ")
                            ),
                        );
                    }
                }
            };
            // A flag keeps the name as written (an abbreviation, or an option unknown here).
            let name = resolved.unwrap_or_else(|| name.to_owned());
            let value = match inline {
                None if takes_value(&name) => {
                    let v = words.next().cloned();
                    out.option_words.extend(v.clone());
                    v
                }
                inline => inline,
            };
            out.options.push((format!("--{name}"), value));
            continue;
        }
        // A cluster of short options: a value option takes the rest of the word, or the
        // next word.
        let flags = &word[1..];
        for (i, c) in flags.char_indices() {
            if syntax.short_values.contains(c) {
                let rest = &flags[i + c.len_utf8()..];
                let value = if rest.is_empty() {
                    let v = words.next().cloned();
                    out.option_words.extend(v.clone());
                    v
                } else {
                    Some(rest.to_owned())
                };
                out.options.push((format!("-{c}"), value));
                break;
            }
            out.options.push((format!("-{c}"), None));
        }
    }
    Ok(out)
}

fn named<S: Into<String>>(paths: impl IntoIterator<Item = S>) -> Vec<Path> {
    paths
        .into_iter()
        .map(|p| -> String { p.into() })
        .filter(|p| p != "-") // standard input
        .map(Path::Named)
        .collect()
}

/// Which paths a command names, by program. Programs added in the configuration are read
/// by `unknown`.
fn uses(program: &str, args: &[String]) -> Result<Uses, Refusal> {
    let files = |syntax: &Syntax, home_by_default: bool| -> Result<Uses, Refusal> {
        let p = getopt(program, syntax, args)?;
        if p.has(&["--files0-from"]) {
            return refuse(
                PATH_NOT_ALLOWED,
                format!(
                    "`{program}`: --files0-from reads file names from a file, which cannot be \
                     checked: name the files"
                ),
            );
        }
        let mut paths = named(p.values(&["-X", "--exclude-from"]));
        paths.extend(named(p.operands.iter().cloned()));
        if p.operands.is_empty() && home_by_default {
            paths.push(Path::Home);
        }
        Ok(Uses {
            paths,
            recursive_grep: None,
        })
    };
    let values_only = |syntax: &Syntax, path_options: &[&str]| -> Result<Uses, Refusal> {
        let p = getopt(program, syntax, args)?;
        Ok(Uses {
            paths: named(p.values(path_options)),
            recursive_grep: None,
        })
    };
    match program {
        "cat" => files(&CAT, false),
        "head" => files(&HEAD, false),
        "tail" => files(&TAIL, false),
        "wc" => files(&WC, false),
        "stat" => files(&STAT, false),
        "ls" => files(&LS, true),
        "du" => files(&DU, true),
        // df names files only to find their file system, but a path is a path.
        "df" => files(&DF, false),
        "grep" => grep(args),
        "find" => find(args),
        "date" => values_only(&DATE, &["-f", "--file", "-r", "--reference"]),
        "ss" => values_only(&SS, &["-F", "--filter", "-D", "--diag"]),
        "journalctl" => journalctl(args),
        "ps" => ps(args),
        // Their operands are users, units, fields: no files.
        "free" | "uptime" | "uname" | "hostname" | "whoami" | "id" | "systemctl" => {
            Ok(Uses::default())
        }
        _ => Ok(unknown(args)),
    }
}

fn grep(args: &[String]) -> Result<Uses, Refusal> {
    let p = getopt("grep", &GREP, args)?;
    let mut paths = named(p.values(&["-f", "--file", "--exclude-from"]));
    // The first operand is the pattern, unless patterns come from -e or -f.
    let pattern_given = p.has(&["-e", "--regexp", "-f", "--file"]);
    let files: Vec<String> = p
        .operands
        .iter()
        .skip(usize::from(!pattern_given))
        .cloned()
        .collect();
    paths.extend(named(files.iter().cloned()));
    let recursive = p.options.iter().any(|(name, value)| match name.as_str() {
        "-r" | "-R" => true,
        // getopt's argmatch accepts abbreviations (`-d rec`).
        "-d" | "--directories" => value.as_deref().is_some_and(|v| v.starts_with('r')),
        // `--rec`, `--dereference-r`: abbreviations of flags are not resolved by getopt().
        n => {
            n.len() > 3
                && ("--recursive".starts_with(n) || "--dereference-recursive".starts_with(n))
        }
    });
    let recursive_grep = recursive.then(|| {
        let implicit = files.is_empty();
        if implicit {
            paths.push(Path::Home);
        }
        Search {
            options: p.option_words.clone(),
            operands: p.operands.clone(),
            starts: if implicit { vec![".".into()] } else { files },
            implicit,
        }
    });
    Ok(Uses {
        paths,
        recursive_grep,
    })
}

/// `find [-H|-L|-P|-D opts|-Olevel]… [start…] [expression]`: the start points (the home when
/// there are none) and the reference files of `-newer`, `-anewer`, `-cnewer`, `-samefile`
/// and `-newerXY` (but `-newerXt`, whose value is a date). `-name`/`-path` patterns are not
/// paths to read: `find / -name id_rsa` lists where such files are, not what they hold.
fn find(args: &[String]) -> Result<Uses, Refusal> {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-H" | "-L" | "-P" => i += 1,
            "-D" => i += 2,
            "--" => {
                i += 1;
                break;
            }
            a if a.starts_with("-O") => i += 1,
            _ => break,
        }
    }
    let is_expression = |a: &str| a.starts_with('-') || ["(", ")", "!", ","].contains(&a);
    let mut paths = Vec::new();
    let start = i;
    while args.get(i).is_some_and(|a| !is_expression(a)) {
        paths.push(Path::Named(args[i].clone()));
        i += 1;
    }
    if i == start {
        paths.push(Path::Home);
    }
    while let Some(a) = args.get(i) {
        let reference = matches!(a.as_str(), "-newer" | "-anewer" | "-cnewer" | "-samefile")
            || (a.len() == 8 && a.starts_with("-newer") && !a.ends_with('t'));
        if a == "-files0-from" {
            return refuse(
                PATH_NOT_ALLOWED,
                "`find`: -files0-from reads start points from a file, which cannot be \
                 checked: name them"
                    .into(),
            );
        }
        if reference && let Some(file) = args.get(i + 1) {
            paths.push(Path::Named(file.clone()));
            i += 1;
        }
        i += 1;
    }
    Ok(Uses {
        paths,
        recursive_grep: None,
    })
}

/// `ps` names no files, but its BSD-style `e` (`ps e`, `ps auxe`, `ps eww 1`) prints every
/// process's environment, which is what `/proc/PID/environ` holds. Only a word without a dash
/// counts (`ps -e` is every process); the values of options (`-u postgres`, `o pid,etime`)
/// are skipped. Read as procps-ng does (Linux): FreeBSD's `ps -e` also shows environments.
fn ps(args: &[String]) -> Result<Uses, Refusal> {
    const UNIX_VALUES: &str = "CGgOopqstUu";
    const BSD_VALUES: &str = "OoptqUk";
    const LONG_VALUES: &[&str] = &[
        "cols",
        "columns",
        "format",
        "group",
        "Group",
        "lines",
        "pid",
        "ppid",
        "quick-pid",
        "rows",
        "sid",
        "sort",
        "tty",
        "user",
        "User",
        "width",
    ];
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let takes_next = if let Some(long) = word.strip_prefix("--") {
            LONG_VALUES.contains(&long)
        } else if let Some(cluster) = word.strip_prefix('-') {
            cluster
                .char_indices()
                .find(|(_, c)| UNIX_VALUES.contains(*c))
                .is_some_and(|(i, _)| i + 1 == cluster.len())
        } else {
            // Every letter is looked at, even after a value option (`oe` is refused though
            // procps may read `e` as the value of `o`): a wider refusal, never a narrower one.
            if word.contains('e') {
                return refuse(
                    PATH_NOT_ALLOWED,
                    format!(
                        "`ps`: `e` in `{word}` shows each process's environment (its \
                         /proc/PID/environ), which may hold secrets"
                    ),
                );
            }
            word.chars().last().is_some_and(|c| BSD_VALUES.contains(c))
        };
        if takes_next {
            words.next();
        }
    }
    Ok(Uses::default())
}

/// journalctl reads journal files from `-D`/`--directory`, `-i`/`--file`, `--root` and
/// `--image`; `--cursor-file` is read (and written). Its operands are matches (`_PID=1`, or
/// an executable's path to filter by), not files it reads.
fn journalctl(args: &[String]) -> Result<Uses, Refusal> {
    let p = getopt("journalctl", &JOURNALCTL, args)?;
    let globbed = p
        .values(&["-i", "--file"])
        .find(|v| v.contains(['*', '?', '[']));
    if let Some(v) = globbed {
        return refuse(
            PATH_NOT_ALLOWED,
            format!(
                "`journalctl`: `{v}`: journalctl expands `*`, `?` and `[` itself, past this \
                 check: name the files"
            ),
        );
    }
    Ok(Uses {
        paths: named(p.values(&[
            "-D",
            "--directory",
            "-i",
            "--file",
            "--root",
            "--image",
            "--cursor-file",
        ])),
        recursive_grep: None,
    })
}

/// A program this module does not know (added in `[ssh.peek.programs]`): any word that
/// looks like a path is checked as one: a word with a `/` or starting with `.`, the value
/// of `--opt=value`, and an option's attached value from its first `/` (`-f/etc/x`).
fn unknown(args: &[String]) -> Uses {
    let mut paths = Vec::new();
    for a in args {
        let candidate = if let Some((_, value)) = a.split_once('=') {
            value
        } else if a.starts_with('-') {
            a.find('/').map_or("", |i| &a[i..])
        } else {
            a
        };
        if candidate.contains('/') || candidate.starts_with('.') {
            paths.push(Path::Named(candidate.to_owned()));
        }
    }
    Uses {
        paths,
        recursive_grep: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        crate::tools::ssh::shell::plain_argv(s).unwrap()
    }

    fn policy(allow: Option<&[&str]>, deny: &[&str]) -> Policy {
        Policy::new(&HostPeekConfig {
            allow_paths: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            deny_paths: deny.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn default_policy() -> Policy {
        policy(None, &[])
    }

    /// `Ok(())` or the refusal's code.
    fn verdict(p: &Policy, command: &str) -> Result<(), &'static str> {
        p.check(&argv(command)).map(|_| ()).map_err(|r| r.code)
    }

    #[test]
    fn the_builtin_patterns_are_valid() {
        let patterns: Vec<&str> = secret_patterns().collect();
        assert!(patterns.len() > 40, "{patterns:?}");
        for p in &patterns {
            assert_eq!(pattern_problem(p), None);
        }
        for p in ["**/.ssh", "/etc/shadow*", "/proc/**/environ", "**/.env"] {
            assert!(patterns.contains(&p), "{p}");
        }
    }

    #[test]
    fn secrets_are_refused_by_default() {
        let p = default_policy();
        for command in [
            "cat /root/.ssh/authorized_keys",
            "cat /etc/shadow",
            "cat /etc/shadow-",
            "cat /etc/gshadow",
            "cat /etc/sudoers",
            "head /home/bob/.ssh/id_ed25519",
            "grep -r password /etc/sudoers.d",
            "grep root /etc/sudoers.d/90-cloud-init-users",
            "cat /proc/1/environ",
            "cat /proc/self/environ",
            "cat /proc/self/task/12/environ",
            "cat /proc/1/root/etc/shadow",
            "cat /proc/self/cwd/.bash_history",
            "tail /proc/1/fd/3",
            "head -c 100 /proc/kcore",
            "head -c 512 /dev/sda",
            "head -c 512 /dev/nvme0n1p1",
            "cat /dev/disk/by-uuid/0a1b",
            "cat /srv/app/.env",
            "cat /srv/app/.env.production",
            "cat .env",
            "cat .ssh/id_rsa",
            "cat foo/../.ssh/config",
            "cat /tmp/../etc/shadow",
            "cat /../../etc/shadow",
            "cat //etc//shadow",
            "cat /etc/./shadow",
            "cat /etc/shadow/",
            "ls /root/.ssh",
            "ls -la .ssh",
            "stat /root/.ssh",
            "find /root/.ssh",
            "find /home/bob/.ssh -type f",
            "find -L /root/.ssh",
            "find / -newer /etc/shadow",
            "tail -n 5 /etc/ssl/private/server.key",
            "tail -n5 /etc/ssl/private",
            "cat /etc/nginx/tls/site.key",
            "cat /opt/certs/bundle.pem",
            "cat /etc/ssh/ssh_host_ed25519_key",
            "grep -f /etc/shadow /etc/passwd",
            "grep -f/etc/shadow /etc/passwd",
            "grep --file=/etc/shadow /etc/passwd",
            "grep --file /etc/shadow x",
            "grep --fi=/etc/shadow x",
            "grep -e x /etc/shadow",
            "grep -ie x /etc/shadow",
            "grep --regexp=x -- /etc/shadow",
            "grep x -- /etc/shadow",
            "grep -c -- -x /root/.pgpass",
            "grep --exclude-from=/root/.ssh/config x /var/log/syslog",
            "stat /home/a/.aws/credentials",
            "wc -l /home/a/.git-credentials",
            "du -sh /root/.gnupg",
            "du -X /root/.ssh/known_hosts /var",
            "cat /root/.bash_history",
            "cat /var/lib/postgresql/.psql_history",
            "cat /var/lib/postgresql/14/main/.pgpass",
            "cat /home/dev/.kube/config",
            "cat /home/dev/.docker/config.json",
            "cat /home/dev/.netrc",
            "journalctl -n 5 --file=/var/lib/secret.journal.key",
            "journalctl -n 5 -D /root/.ssh",
            "journalctl -n 5 --directory=/root/.ssh",
            "journalctl -n 5 -i /root/.ssh/x.journal",
            "date -r /etc/shadow",
            "date --reference=/etc/shadow",
            "date -f /etc/shadow",
            "date --file /etc/gshadow",
            "ss -F /root/.ssh/filter",
            "cat /run/secrets/db_password",
            "cat /var/run/secrets/kubernetes.io/serviceaccount/token",
            "cat /etc/kubernetes/admin.conf",
            "cat /etc/wireguard/wg0.conf",
            "cat /var/backups/shadow.bak",
            "df /root/.ssh",
            // Quoted, `~` is no tilde expansion but a directory named `~` in the home.
            "cat '~/.ssh/id_rsa'",
        ] {
            assert_eq!(
                verdict(&p, command),
                Err(PATH_NOT_ALLOWED),
                "{command} should be refused"
            );
        }
    }

    #[test]
    fn tilde_expansion_never_gets_here() {
        // The shell parse refuses it first (`shell_syntax_not_allowed`).
        for command in ["ls ~/.ssh", "cat ~root/.ssh/id_rsa"] {
            assert!(
                crate::tools::ssh::shell::plain_argv(command).is_err(),
                "{command}"
            );
        }
    }

    #[test]
    fn ordinary_paths_and_commands_without_paths_are_allowed() {
        let p = default_policy();
        for command in [
            "cat /var/log/syslog",
            "cat /etc/os-release",
            "cat /etc/passwd",
            "cat /etc/ssh/sshd_config",
            "ls /etc",
            "ls",
            "ls -la /root",
            "ls /dev",
            "ls -l /dev/disk/by-uuid",
            "ls /proc/1",
            "cat /proc/1/status",
            "cat /proc/1/cmdline",
            "cat /proc/meminfo",
            "grep error /var/log/app.log",
            "grep -e .ssh /var/log/auth.log",
            "grep -c shadow /var/log/auth.log",
            "grep -f patterns.txt /var/log/syslog",
            "tail -n 100 /var/log/nginx/access.log",
            "tail --pid=1 -n 5 /var/log/syslog",
            "head -n 20 /var/log/dpkg.log",
            "df -h",
            "df -h /var",
            "du -sh /var/log",
            "ps aux",
            "uptime",
            "free -m",
            "id www-data",
            "systemctl status nginx",
            "ss -tlnp",
            "stat /etc/hosts",
            "wc -l /etc/passwd",
            "find /var/log -name '*.gz' -mtime +7",
            "find / -name id_rsa",
            "find /var/log -newermt 2024-01-01",
            "find /srv -newer /srv/app/stamp",
            "journalctl -n 50 -u nginx --no-pager",
            "journalctl -n 50 /usr/sbin/sshd",
            "journalctl -n 5 -D /var/log/journal",
            "date +%s",
            "date -d yesterday +%F",
            "cat logs/app.log",
            "cat ./notes.txt",
            "cat -",
        ] {
            assert_eq!(verdict(&p, command), Ok(()), "{command}");
        }
    }

    #[test]
    fn the_refusal_names_the_path_and_the_pattern() {
        let p = default_policy();
        let why = p.check(&argv("cat /tmp/../etc/shadow")).unwrap_err();
        assert_eq!(why.code, "path_not_allowed");
        assert_eq!(
            why.message,
            "`cat`: `/tmp/../etc/shadow` (`/etc/shadow`) may hold secrets: it matches \
             `/etc/shadow*` on peek's secret-path denylist"
        );
        let why = p
            .check(&argv("cat /root/.ssh/authorized_keys"))
            .unwrap_err();
        assert!(why.message.contains("`**/.ssh`"), "{why}");
    }

    #[test]
    fn relative_paths_that_climb_out_of_the_home_are_refused() {
        let p = default_policy();
        for command in [
            "cat ../../etc/shadow",
            "cat a/../../x",
            "ls ..",
            "find ../bob",
        ] {
            let why = p.check(&argv(command)).unwrap_err();
            assert!(why.message.contains("climbs out"), "{command}: {why}");
        }
        // As the home might be `/`, a relative path is also read from there.
        assert_eq!(verdict(&p, "cat etc/shadow"), Err(PATH_NOT_ALLOWED));
        assert_eq!(verdict(&p, "cat a/../b"), Ok(()));
    }

    #[test]
    fn allow_paths_confine_a_host_and_deny_paths_add_patterns() {
        let p = policy(
            Some(&["/var/log", "/srv/app/"]),
            &["/srv/app/config/**", "**/*.sqlite"],
        );
        for (command, allowed) in [
            ("cat /var/log/syslog", true),
            ("tail -n 5 /var/log/nginx/error.log", true),
            ("ls /var/log", true),
            ("ls /srv/app", true),
            ("grep -c x /srv/app/logs/a.log /var/log/b.log", true),
            ("df -h", true),
            ("ps aux", true),
            ("cat /var/logs/x", false),
            ("cat /var/log/../../etc/passwd", false),
            ("cat /etc/passwd", false),
            ("ls /", false),
            ("ls /srv", false),
            ("ls", false),
            ("du -sh", false),
            ("find -name x", false),
            ("cat logs/app.log", false),
            ("grep -c x /srv/app/logs/a.log /etc/hosts", false),
            ("cat /srv/app/config/db.yml", false),
            ("ls /srv/app/config", false),
            ("cat /srv/app/data/users.sqlite", false),
            ("cat /var/log/.env", false),
        ] {
            assert_eq!(
                verdict(&p, command).is_ok(),
                allowed,
                "{command}: {:?}",
                p.check(&argv(command))
            );
        }
        let why = p.check(&argv("cat /etc/passwd")).unwrap_err();
        assert_eq!(
            why.message,
            "`cat`: `/etc/passwd` is outside this host's allow_paths (`/var/log`, `/srv/app`)"
        );
        let why = p.check(&argv("cat /srv/app/config/db.yml")).unwrap_err();
        assert!(why.message.contains("denied on this host"), "{why}");
        let why = p.check(&argv("ls")).unwrap_err();
        assert!(why.message.contains("home directory"), "{why}");

        // An empty list allows no path at all, only commands that name none.
        let none = policy(Some(&[]), &[]);
        assert_eq!(verdict(&none, "uptime"), Ok(()));
        assert_eq!(verdict(&none, "cat /var/log/syslog"), Err(PATH_NOT_ALLOWED));
        // `/` allows every absolute path but secrets.
        let root = policy(Some(&["/"]), &[]);
        assert_eq!(verdict(&root, "cat /etc/passwd"), Ok(()));
        assert_eq!(verdict(&root, "cat /etc/shadow"), Err(PATH_NOT_ALLOWED));
    }

    #[test]
    fn option_values_and_grep_patterns_are_not_paths() {
        let p = policy(Some(&["/var/log"]), &[]);
        for command in [
            "grep error /var/log/syslog",
            "grep -e error -e warn /var/log/syslog",
            "grep -m 5 -A 2 error /var/log/syslog",
            "grep --max-count=5 error /var/log/syslog",
            "grep --include '*.log' -c error /var/log/syslog",
            "grep -c -- -error /var/log/syslog",
            "tail -n 5 /var/log/syslog",
            "tail -s 1 -n5 /var/log/syslog",
            "head --lines 5 /var/log/syslog",
            "ls -w 80 -I '*.gz' /var/log",
            "ls --sort=time /var/log",
            "du -d 1 --exclude '*.gz' /var/log",
            "du --time -s /var/log",
            "stat -c %s /var/log/syslog",
            "df -t ext4 /var/log",
            "date -d '2 days ago' +%F",
            "journalctl -n 10 -u nginx -g error",
            "ss -f inet -tn",
            "find /var/log -name '*.log' -newermt yesterday",
        ] {
            assert_eq!(
                verdict(&p, command),
                Ok(()),
                "{command}: {:?}",
                p.check(&argv(command))
            );
        }
    }

    #[test]
    fn abbreviated_value_options_and_file_lists_are_refused() {
        let p = default_policy();
        for (command, want) in [
            // getopt would take `--lin` for `--lines`: the next word might be its value.
            ("tail --lin 5 /var/log/syslog", Err(COMMAND_NOT_ALLOWED)),
            ("grep --fil /etc/shadow x", Err(COMMAND_NOT_ALLOWED)),
            // With `=` the value is clear.
            ("tail --lines=5 /var/log/syslog", Ok(())),
            // An exact flag, though a prefix of `--binary-files`: `x` is the pattern.
            ("grep --binary x /var/log/syslog", Ok(())),
            ("grep --binary x /etc/shadow", Err(PATH_NOT_ALLOWED)),
            ("wc --files0-from=/tmp/list", Err(PATH_NOT_ALLOWED)),
            ("du --files0-from /tmp/list", Err(PATH_NOT_ALLOWED)),
            ("find / -files0-from /tmp/list", Err(PATH_NOT_ALLOWED)),
            (
                "journalctl -n 5 --file='/var/log/journal/*/*'",
                Err(PATH_NOT_ALLOWED),
            ),
        ] {
            assert_eq!(verdict(&p, command), want, "{command}");
        }
    }

    #[test]
    fn a_recursive_grep_skips_denied_names_and_may_not_start_above_absolute_patterns() {
        let p = policy(None, &["/srv/app/config", "**/secrets.yml"]);
        let run = p.check(&argv("grep -rn error /var/log/nginx")).unwrap();
        assert_eq!(&run[..3], ["grep", "-rn", "--exclude=.ssh"]);
        assert!(run.contains(&"--exclude-dir=.ssh".to_owned()), "{run:?}");
        assert!(run.contains(&"--exclude=*.pem".to_owned()), "{run:?}");
        assert!(run.contains(&"--exclude=id_*".to_owned()), "{run:?}");
        assert!(run.contains(&"--exclude=secrets.yml".to_owned()), "{run:?}");
        assert_eq!(run[run.len() - 3..], ["--", "error", "/var/log/nginx"]);
        // The caller's --include comes before the exclusions (the last match wins).
        let run = p
            .check(&argv("grep -r error /home --include=id_rsa"))
            .unwrap();
        let include = run.iter().position(|w| w == "--include=id_rsa").unwrap();
        let exclude = run.iter().position(|w| w == "--exclude=id_*").unwrap();
        assert!(include < exclude, "{run:?}");
        // A non-recursive grep runs as it was written.
        assert_eq!(
            p.check(&argv("grep error /var/log/syslog")).unwrap(),
            argv("grep error /var/log/syslog")
        );
        for command in [
            "grep -r x /etc",
            "grep -R x /",
            "grep --recursive x /proc/1",
            "grep --rec x /dev",
            "grep -d recurse x /run",
            "grep --directories=recurse x /var/run",
            "grep -r x /srv",
            "grep -r x /srv/app",
            "grep -r x",
            "grep -r x .",
            "grep -r x proc",
        ] {
            let why = p.check(&argv(command)).unwrap_err();
            assert_eq!(why.code, PATH_NOT_ALLOWED, "{command}");
            assert!(why.message.contains("recursive search"), "{command}: {why}");
        }
        for command in [
            "grep -r x /srv/app/logs",
            "grep -r x /home/bob",
            "grep -r x logs",
        ] {
            assert!(p.check(&argv(command)).is_ok(), "{command}");
        }
    }

    #[test]
    fn programs_from_the_configuration_have_their_path_like_words_checked() {
        let p = default_policy();
        for (command, allowed) in [
            ("lsblk -f", true),
            ("lsblk /dev/sda1", false),
            ("less .env", false),
            ("xxd -s 0 /etc/shadow", false),
            ("tool --config=/root/.ssh/config", false),
            ("tool -c/etc/shadow", false),
            ("tool --config=/etc/tool.conf", true),
        ] {
            assert_eq!(verdict(&p, command).is_ok(), allowed, "{command}");
        }
    }

    #[test]
    fn ps_may_not_show_environments() {
        let p = default_policy();
        for (command, allowed) in [
            ("ps aux", true),
            ("ps -ef", true),
            ("ps -e -o pid,user,etime", true),
            ("ps -eo pid,args", true),
            ("ps -u postgres", true),
            ("ps --user postgres -f", true),
            ("ps -C nginx", true),
            ("ps o pid,user,etime", true),
            ("ps axo pid,user", true),
            ("ps --sort=-etime aux", true),
            ("ps -p 1 -o environ", true), // procps has no such column
            ("ps e", false),
            ("ps aux e", false),
            ("ps auxe", false),
            ("ps axeww", false),
            ("ps -p 1 e", false),
            ("ps eww 1", false),
            ("ps -u root e", false),
        ] {
            assert_eq!(verdict(&p, command).is_ok(), allowed, "{command}");
        }
    }

    #[test]
    fn normalisation() {
        for (path, want) in [
            ("/etc/shadow", Normal::Absolute("/etc/shadow".into())),
            ("//etc//shadow/", Normal::Absolute("/etc/shadow".into())),
            ("/etc/./shadow", Normal::Absolute("/etc/shadow".into())),
            ("/tmp/../etc/shadow", Normal::Absolute("/etc/shadow".into())),
            ("/../..", Normal::Absolute("/".into())),
            ("/", Normal::Absolute("/".into())),
            ("a/./b/../c", Normal::Relative("a/c".into())),
            (".", Normal::Relative(".".into())),
            ("", Normal::Relative(".".into())),
            ("a/..", Normal::Relative(".".into())),
            ("../x", Normal::AboveHome),
            ("a/../../x", Normal::AboveHome),
        ] {
            assert_eq!(normalise(path), want, "{path:?}");
        }
    }

    #[test]
    fn configured_patterns_and_prefixes_are_validated() {
        for good in [
            "/srv/app/config/**",
            "**/*.sqlite",
            "/home/*/secrets",
            "/a/[ab]c",
        ] {
            assert_eq!(pattern_problem(good), None, "{good}");
        }
        for bad in [
            "secrets.yml",
            "srv/app",
            "/srv/{a,b}",
            "/srv/\\*",
            "/srv/../etc",
            "/srv//x",
            "/srv/[x",
        ] {
            assert!(pattern_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(prefix_problem("/var/log"), None);
        for bad in ["var/log", "/var/*", "/var/../etc"] {
            assert!(prefix_problem(bad).is_some(), "{bad}");
        }
    }
}
