//! Commands that run a program the command line does not show. The rule: **a command whose
//! effect cannot be read from its words is dangerous.** That covers a shell or interpreter
//! reading its program from a script file, standard input (a pipe, a redirection, a here-document
//! or here-string) or, for languages this module does not read (Python, Perl, Ruby, …), from
//! `-c`/`-e`; `source`; awk programs that reach outside awk; commands sent to another host; and
//! wrappers that start a shell (`sudo -s`, `chroot DIR`).
//!
//! Shell code given with `-c` (or in a here-string) is the one program that *can* be read: the
//! classifier checks it like the command line itself, so `bash -c 'ls /tmp'` passes.

use super::{Classifier, has_short, normalize, skip_options, texts};
use crate::tools::ssh::shell::{Op, Syntax, Word};

/// The end of every reason given here: why a program we cannot see is flagged.
pub(super) const UNREADABLE: &str = "its effect cannot be read from the command";

/// Where a command's standard input comes from: where a shell with no script reads its program.
#[derive(Clone, Copy)]
pub(super) enum Stdin<'a> {
    /// Nothing on the command line says (the session's own input).
    Inherited,
    Pipe,
    File(&'a str),
    HereDoc,
    HereString(&'a Word),
    /// `<&3`: another descriptor.
    Descriptor,
    /// `< /dev/null`, or what `xargs` gives the commands it runs: nothing to read.
    Closed,
}

impl<'a> Stdin<'a> {
    /// From a command's redirections (the last input redirection wins) and whether a pipe feeds it.
    pub(super) fn of(redirects: &'a [(Op, Option<Word>)], piped: bool) -> Self {
        let mut stdin = if piped { Stdin::Pipe } else { Stdin::Inherited };
        for (op, target) in redirects {
            let Op::Redirect(r) = op else { continue };
            let op = r.trim_start_matches(|c: char| c.is_ascii_digit());
            let fd = &r[..r.len() - op.len()];
            if !op.starts_with('<') || !(fd.is_empty() || fd == "0") {
                continue;
            }
            stdin = match (op, target) {
                ("<<<", Some(w)) => Stdin::HereString(w),
                ("<<" | "<<-", _) => Stdin::HereDoc,
                ("<&", Some(w)) if w.text == "-" => Stdin::Closed,
                ("<&", _) => Stdin::Descriptor,
                (_, Some(w)) if normalize(&w.text) == "/dev/null" => Stdin::Closed,
                (_, Some(w)) => Stdin::File(&w.text),
                (_, None) => continue,
            };
        }
        stdin
    }

    fn describe(&self) -> String {
        match self {
            Stdin::Inherited => "standard input".into(),
            Stdin::Pipe => "a pipe".into(),
            Stdin::File(path) => format!("the file {path}"),
            Stdin::HereDoc => "a here-document".into(),
            Stdin::HereString(_) => "a here-string".into(),
            Stdin::Descriptor => "another file descriptor".into(),
            Stdin::Closed => "/dev/null".into(),
        }
    }
}

/// How a shell or interpreter is told where its program is. Option lists hold whole words
/// (`-c`, `--eval`, `-Command`); a short option also matches inside a cluster (`-lc`, `-pe`).
struct Language {
    /// What its code is written in, for reasons.
    name: &'static str,
    programs: &'static [&'static str],
    /// The classifier reads this language: `-c` code is checked, not flagged (shells).
    readable: bool,
    /// Options that give the program in the words (`-c`, `-e`).
    inline: &'static [&'static str],
    /// Options whose value is the script file.
    file: &'static [&'static str],
    /// Options that name an installed module to run, which is a program like any other.
    module: &'static [&'static str],
    /// Options that take the next word as a value that is not code.
    valued: &'static [&'static str],
    /// Options that print something (version, help) and exit without running anything.
    info: &'static [&'static str],
    /// Options that print the version and exit when no program is given (`ruby -v`).
    info_alone: &'static [&'static str],
    /// Options that only parse the program (`sh -n`).
    dry: &'static [&'static str],
    /// Options that read the program from standard input whatever follows (`bash -s args`).
    from_stdin: &'static [&'static str],
    /// Short options cluster like getopt's (`-lc`); off for single-dash long options.
    clusters: bool,
    ignore_case: bool,
}

const NO_OPTIONS: Language = Language {
    name: "",
    programs: &[],
    readable: false,
    inline: &[],
    file: &[],
    module: &[],
    valued: &[],
    info: &["--version", "--help"],
    info_alone: &[],
    dry: &[],
    from_stdin: &[],
    clusters: true,
    ignore_case: false,
};

#[rustfmt::skip]
const LANGUAGES: &[Language] = &[
    Language {
        name: "shell",
        programs: &["sh", "bash", "dash", "zsh", "ksh", "mksh", "oksh", "ash", "yash", "posh",
                    "fish", "csh", "tcsh", "rbash"],
        readable: true,
        inline: &["-c", "--command"],
        valued: &["-o", "+o", "-O", "+O", "--rcfile", "--init-file"],
        dry: &["-n", "--noexec", "--no-execute"],
        from_stdin: &["-s"],
        ..NO_OPTIONS
    },
    Language {
        name: "Python",
        programs: &["python", "pypy"],
        inline: &["-c"],
        module: &["-m"],
        valued: &["-W", "-X", "-Q"],
        info: &["-V", "-VV", "--version", "-h", "-?", "--help"],
        ..NO_OPTIONS
    },
    Language {
        name: "Perl",
        programs: &["perl"],
        inline: &["-e", "-E"],
        info: &["-v", "-V", "--version", "-h", "--help"],
        ..NO_OPTIONS
    },
    Language {
        name: "Ruby",
        programs: &["ruby", "jruby"],
        inline: &["-e"],
        valued: &["-I", "-r", "-C", "-E"],
        info: &["--version", "-h", "--help"],
        info_alone: &["-v"],
        ..NO_OPTIONS
    },
    Language {
        name: "JavaScript",
        programs: &["node", "nodejs"],
        inline: &["-e", "--eval", "-p", "--print"],
        valued: &["-r", "--require", "--import", "--loader", "--experimental-loader", "-C",
                  "--conditions", "--input-type"],
        // `--check` only parses the script.
        info: &["-v", "--version", "-h", "--help", "-c", "--check"],
        ..NO_OPTIONS
    },
    Language {
        name: "PHP",
        programs: &["php", "php-cli"],
        inline: &["-r", "-B", "-R", "-E"],
        file: &["-f", "-F"],
        valued: &["-c", "-d", "-z", "-t", "-S"],
        // `-l` only lints; `-i`, `-m` print the configuration and modules.
        info: &["-v", "--version", "-h", "--help", "-i", "--info", "-m", "--modules", "-l",
                "--syntax-check"],
        ..NO_OPTIONS
    },
    Language {
        name: "Lua",
        programs: &["lua", "luajit"],
        inline: &["-e"],
        valued: &["-l"],
        info_alone: &["-v"],
        ..NO_OPTIONS
    },
    Language {
        name: "Tcl",
        programs: &["tclsh", "wish"],
        valued: &["-encoding"],
        // Every other word is the script's.
        info: &[],
        ..NO_OPTIONS
    },
    Language {
        name: "Expect",
        programs: &["expect"],
        inline: &["-c"],
        file: &["-f"],
        info: &["-v", "--version", "-h", "--help"],
        ..NO_OPTIONS
    },
    Language {
        name: "R",
        programs: &["Rscript"],
        inline: &["-e"],
        ..NO_OPTIONS
    },
    Language {
        name: "PowerShell",
        programs: &["pwsh", "powershell"],
        inline: &["-c", "-command", "-e", "-ec", "-encodedcommand", "--command"],
        file: &["-f", "-file"],
        valued: &["-ex", "-executionpolicy", "-wd", "-workingdirectory", "-of", "-outputformat",
                  "-if", "-inputformat", "-w", "-windowstyle", "-configurationname",
                  "-settingsfile", "-custompipename"],
        info: &["-v", "-version", "--version", "-h", "-help", "--help", "-?", "/?"],
        clusters: false,
        ignore_case: true,
        ..NO_OPTIONS
    },
    Language {
        name: "AppleScript",
        programs: &["osascript"],
        inline: &["-e"],
        valued: &["-l", "-s"],
        info: &[],
        ..NO_OPTIONS
    },
];

/// The awk family: its program is in the words, and read here (see `awk_reaches_out`).
const AWKS: &[&str] = &["awk", "gawk", "mawk", "nawk", "original-awk"];

/// `python3.11` → Python, `/usr/bin/pwsh.exe` → PowerShell (`program` is already a base name).
fn language(program: &str) -> Option<&'static Language> {
    let program = program.strip_suffix(".exe").unwrap_or(program);
    let unversioned = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    LANGUAGES.iter().find(|l| {
        l.programs
            .iter()
            .any(|p| *p == program || (!unversioned.is_empty() && *p == unversioned))
    })
}

/// A shell or interpreter, or `source`: piping a download into one runs that download.
pub(super) fn runs_code(program: &str) -> bool {
    language(program).is_some() || matches!(program, "source" | ".")
}

/// What an option asks the interpreter to do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opt {
    Info,
    InfoAlone,
    Dry,
    Inline,
    File,
    Module,
    Stdin,
    Valued,
    Flag,
}

impl Language {
    fn is_option(&self, t: &str) -> bool {
        t.len() > 1 && (t.starts_with('-') || (self.readable && t.starts_with('+')))
    }

    /// One whole option word.
    fn kind(&self, t: &str) -> Opt {
        let has = |list: &[&str]| {
            list.iter()
                .any(|o| *o == t || (self.ignore_case && o.eq_ignore_ascii_case(t)))
        };
        [
            (self.info, Opt::Info),
            (self.info_alone, Opt::InfoAlone),
            (self.dry, Opt::Dry),
            (self.inline, Opt::Inline),
            (self.file, Opt::File),
            (self.module, Opt::Module),
            (self.from_stdin, Opt::Stdin),
            (self.valued, Opt::Valued),
        ]
        .into_iter()
        .find_map(|(list, kind)| has(list).then_some(kind))
        .unwrap_or(Opt::Flag)
    }

    /// Whether the option's value is the next word (unless it is attached: `-ccode`).
    fn takes_value(&self, kind: Opt) -> bool {
        // A shell's `-c` takes no value: the code is the first operand (`bash -c -x 'ls'`).
        matches!(kind, Opt::Valued | Opt::File | Opt::Module)
            || (kind == Opt::Inline && !self.readable)
    }

    /// An option word: what it asks for, whether its value is the next word, and its name. In a
    /// cluster the first letter that asks for something names it, and a letter taking a value
    /// ends it (`-euo pipefail`, `-mjson.tool`).
    fn option<'t>(&self, t: &'t str) -> (Opt, bool, &'t str) {
        let kind = self.kind(t);
        if kind != Opt::Flag {
            return (kind, self.takes_value(kind), t);
        }
        if let Some((name, _)) = t.split_once('=')
            && name.starts_with("--")
        {
            return (self.kind(name), false, name);
        }
        if !self.clusters || t.starts_with("--") || !t.starts_with('-') {
            return (Opt::Flag, false, t);
        }
        let mut found = Opt::Flag;
        for (i, c) in t.char_indices().skip(1) {
            let kind = self.kind(&format!("-{c}"));
            if found == Opt::Flag {
                found = kind;
            }
            if self.takes_value(kind) {
                let end = i + c.len_utf8();
                return (found, end == t.len(), &t[..end]);
            }
        }
        (found, false, t)
    }

    /// Where the program comes from, reading the options before the first operand the way the
    /// interpreter does.
    fn source(&self, args: &[Word]) -> Source {
        let mut inline = None;
        let mut quits_alone = false;
        let mut operand = None;
        let mut words = args.iter();
        while let Some(w) = words.next() {
            let t = w.text.as_str();
            if t == "--" {
                operand = words.next();
                break;
            }
            if !self.is_option(t) {
                operand = Some(w);
                break;
            }
            let (kind, value_is_next, name) = self.option(t);
            let value = if value_is_next { words.next() } else { None };
            match kind {
                Opt::Info | Opt::Dry => return Source::Nothing,
                Opt::InfoAlone => quits_alone = true,
                Opt::Stdin => return Source::Stdin,
                Opt::Module => return Source::Module,
                // The rest of the words are the script's arguments.
                Opt::File => {
                    // `-fx.php`, `--file=x.php`.
                    let attached = t[name.len()..].trim_start_matches('=');
                    return match value {
                        Some(v) => Source::File(v.clone()),
                        None if !attached.is_empty() => Source::File(Word {
                            text: attached.to_owned(),
                            ..w.clone()
                        }),
                        None => Source::Stdin,
                    };
                }
                Opt::Inline if !self.readable => return Source::Inline(name.to_owned(), None),
                Opt::Inline => inline = inline.or(Some(name.to_owned())),
                Opt::Valued | Opt::Flag => {}
            }
        }
        match (inline, operand) {
            (Some(flag), code) => Source::Inline(flag, code.cloned()),
            (None, Some(w)) if w.text == "-" => Source::Stdin,
            (None, Some(w)) => Source::File(w.clone()),
            (None, None) if quits_alone => Source::Nothing,
            (None, None) => Source::Stdin,
        }
    }
}

/// Where an interpreter's program comes from.
enum Source {
    /// It runs none: prints its version or help, or only parses.
    Nothing,
    /// Code in the words after this option (and, for a shell, the code itself).
    Inline(String, Option<Word>),
    /// An installed module it names (`python3 -m json.tool`), a program like any other.
    Module,
    File(Word),
    Stdin,
}

/// `bash x.sh`, `bash <(curl …)`, `python3 "$F"`: why running that file is flagged.
fn script_reason(program: &str, script: &Word) -> String {
    let t = &script.text;
    if script.syntax.contains(&Syntax::ProcessSubstitution) {
        format!("`{program}` runs the script that `{t}` produces: {UNREADABLE}")
    } else if script.is_dynamic() {
        format!("`{program}` runs a script file only known at run time (`{t}`): {UNREADABLE}")
    } else {
        format!("`{program}` runs the script file {t}: {UNREADABLE}")
    }
}

impl Classifier {
    /// Shells, interpreters, awk and `source`: flags the program they run unless it is in the
    /// words and readable. False when `program` is none of these.
    pub(super) fn code(
        &mut self,
        program: &str,
        args: &[Word],
        stdin: Stdin,
        depth: usize,
    ) -> bool {
        if AWKS.contains(&program) {
            self.awk(program, args);
            return true;
        }
        if matches!(program, "source" | ".") {
            if let Some(file) = args.first() {
                self.flag(script_reason(program, file));
            }
            return true;
        }
        let Some(lang) = language(program) else {
            return false;
        };
        match lang.source(args) {
            Source::Nothing | Source::Module => {}
            Source::Inline(_, code) if lang.readable => {
                if let Some(code) = code {
                    self.source(&code.text, depth + 1);
                }
            }
            Source::Inline(flag, _) => self.flag(format!(
                "`{program} {flag}` runs {} code, which is not checked: {UNREADABLE}",
                lang.name
            )),
            Source::File(script) => self.flag(script_reason(program, &script)),
            Source::Stdin => self.reads_stdin(program, lang.readable, stdin, depth),
        }
        true
    }

    /// An interpreter with no program in its words reads it from standard input.
    fn reads_stdin(&mut self, program: &str, readable: bool, stdin: Stdin, depth: usize) {
        if let Stdin::Closed = stdin {
            return;
        }
        self.flag(format!(
            "`{program}` reads its program from {}: {UNREADABLE}",
            stdin.describe()
        ));
        // Flagged either way, but what a here-string holds can still be named.
        if let (true, Stdin::HereString(code)) = (readable, stdin) {
            self.source(&code.text, depth + 1);
        }
    }

    /// `sudo -s`, `chroot DIR`, `su`: a wrapper with no command starts an interactive shell.
    pub(super) fn bare_wrapper(&mut self, name: &str, args: &[Word]) {
        let options = texts(args);
        if options.iter().any(|o| matches!(*o, "--help" | "--version")) {
            return;
        }
        let starts_shell = match name {
            "sudo" => {
                has_short(&options, 's')
                    || has_short(&options, 'i')
                    || options.iter().any(|o| matches!(*o, "--shell" | "--login"))
            }
            "doas" => has_short(&options, 's'),
            "chroot" | "nsenter" | "unshare" => true,
            _ => false,
        };
        if starts_shell {
            self.starts_shell(&[&[name], &options[..]].concat().join(" "));
        }
    }

    pub(super) fn starts_shell(&mut self, shown: &str) {
        self.flag(format!(
            "`{shown}` starts a shell that reads its program from standard input: {UNREADABLE}"
        ));
    }

    /// `ssh host cmd`: what runs on another host is not this host's to read (it is still
    /// checked, for the reasons it would have here). `ssh host` alone opens a shell there.
    pub(super) fn ssh(&mut self, args: &[Word], depth: usize) {
        const VALUED: &[&str] = &[
            "-B", "-b", "-c", "-D", "-E", "-e", "-F", "-I", "-i", "-J", "-L", "-l", "-m", "-O",
            "-o", "-p", "-Q", "-R", "-S", "-W", "-w",
        ];
        let rest = skip_options(args, VALUED, 0);
        let options = texts(&args[..args.len() - rest.len()]);
        // Its version, its configuration, a query, a control command, forwarding only.
        let runs_nothing = short_letters(&options, VALUED)
            .iter()
            .any(|c| matches!(c, 'V' | 'G' | 'Q' | 'O' | 'N' | 'W'));
        let Some((host, command)) = rest.split_first() else {
            return;
        };
        if runs_nothing {
            return;
        }
        let host = &host.text;
        if command.is_empty() {
            self.flag(format!(
                "`ssh {host}` opens a shell on another host that reads its program from standard \
                 input: {UNREADABLE}"
            ));
            return;
        }
        // ssh joins the words with spaces; the remote shell splits them again.
        let remote = texts(command).join(" ");
        self.flag(format!(
            "`ssh {host}` runs `{remote}` on another host: {UNREADABLE}"
        ));
        self.source(&remote, depth + 1);
    }

    /// `awk '{print $1}' f` is fine: the program is in the words. Flagged: a program file, a
    /// program only known at run time, or one that runs commands, writes files or loads code.
    fn awk(&mut self, program: &str, args: &[Word]) {
        match awk_program(args) {
            AwkProgram::Nothing => {}
            AwkProgram::File(file) => self.flag(format!(
                "`{program}` runs the awk program in {file}: {UNREADABLE}"
            )),
            AwkProgram::Text(texts) => {
                for text in texts {
                    if text.is_dynamic() {
                        self.flag(format!(
                            "`{program}` runs a program only known at run time (`{}`): \
                             {UNREADABLE}",
                            text.text
                        ));
                    } else if let Some(what) = awk_reaches_out(&text.text) {
                        self.flag(format!("`{program}` program {what}: {UNREADABLE}"));
                    }
                }
            }
        }
    }
}

/// The letters of short options as getopt reads them: a letter that takes a value ends its
/// cluster (`-oGSSAPIAuthentication=no` is `-o` only).
fn short_letters(options: &[&str], valued: &[&str]) -> Vec<char> {
    let mut out = Vec::new();
    for o in options {
        if o.starts_with("--") || !o.starts_with('-') {
            continue;
        }
        for c in o.chars().skip(1) {
            out.push(c);
            if valued.contains(&format!("-{c}").as_str()) {
                break;
            }
        }
    }
    out
}

enum AwkProgram {
    /// Version or help, or no program at all (a usage error).
    Nothing,
    /// `-f FILE` (also `--include`, `--load`, `-E`): code in a file.
    File(String),
    /// `-e TEXT`, `--source TEXT`, or the first operand.
    Text(Vec<Word>),
}

/// Reads awk's options (POSIX, gawk, mawk) to find its program.
fn awk_program(args: &[Word]) -> AwkProgram {
    const VALUED: &[&str] = &[
        "-F",
        "-v",
        "-f",
        "-E",
        "-i",
        "-l",
        "-e",
        "-W",
        "--field-separator",
        "--assign",
        "--file",
        "--exec",
        "--include",
        "--load",
        "--source",
    ];
    let mut texts = Vec::new();
    let mut words = args.iter();
    let mut operand = None;
    while let Some(w) = words.next() {
        let t = w.text.as_str();
        if t == "--" {
            operand = words.next();
            break;
        }
        if !t.starts_with('-') || t == "-" {
            operand = Some(w);
            break;
        }
        // `--file=x`, `-fx`, `-f x`.
        let (name, attached) = match t.split_once('=') {
            Some((name, value)) if t.starts_with("--") => (name, Some(value)),
            _ if !t.starts_with("--") && t.len() > 2 => (&t[..2], Some(&t[2..])),
            _ => (t, None),
        };
        let value = match attached {
            Some(v) => Some(Word {
                text: v.to_owned(),
                ..w.clone()
            }),
            None if VALUED.contains(&name) => words.next().cloned(),
            None => None,
        };
        let value_text = value.as_ref().map_or("", |v| v.text.as_str());
        match name {
            "--version" | "-V" | "--help" | "--usage" | "-h" => return AwkProgram::Nothing,
            "-W" if matches!(value_text, "version" | "v" | "help" | "usage") => {
                return AwkProgram::Nothing;
            }
            // mawk's `-W exec FILE`.
            "-W" if value_text == "exec" => {
                return AwkProgram::File(words.next().map_or(String::new(), |w| w.text.clone()));
            }
            "-f" | "--file" | "-E" | "--exec" | "-i" | "--include" | "-l" | "--load" => {
                return AwkProgram::File(value_text.to_owned());
            }
            "-e" | "--source" => texts.extend(value),
            _ => {}
        }
    }
    if texts.is_empty() {
        texts.extend(operand.cloned());
    }
    if texts.is_empty() {
        AwkProgram::Nothing
    } else {
        AwkProgram::Text(texts)
    }
}

/// What in an awk program reaches outside awk: `system()`, a pipe to or from a command, output
/// redirected to a file (`print > "f"`; a `>` in a condition is a comparison), loaded code.
fn awk_reaches_out(program: &str) -> Option<&'static str> {
    let chars: Vec<char> = program.chars().collect();
    let mut i = 0;
    let mut parens = 0i32;
    // Inside a `print`/`printf` statement that started at this parenthesis depth.
    let mut print_at: Option<i32> = None;
    // The last significant character: after an operand, `/` divides; otherwise it opens a regex.
    let mut after_operand = false;
    while let Some(&c) = chars.get(i) {
        match c {
            '"' => {
                i = skip_quoted(&chars, i, '"');
                after_operand = true;
                continue;
            }
            '/' if !after_operand => {
                i = skip_quoted(&chars, i, '/');
                after_operand = true;
                continue;
            }
            '#' => {
                while chars.get(i).is_some_and(|c| *c != '\n') {
                    i += 1;
                }
                continue;
            }
            '|' if chars.get(i + 1) == Some(&'|') => i += 1,
            '|' => return Some("pipes to or from a command (`|`)"),
            '>' if print_at == Some(parens) => {
                return Some("redirects output to a file (`print > …`)");
            }
            '(' => parens += 1,
            ')' => parens -= 1,
            ';' | '{' | '}' | '\n' => print_at = None,
            c if c == '@' || c == '_' || c.is_ascii_alphabetic() => {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|c| *c == '_' || c.is_ascii_alphanumeric())
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                match word.as_str() {
                    "system" if next == Some(&'(') => return Some("calls `system()`"),
                    "@load" | "@include" => return Some("loads code (`@load`, `@include`)"),
                    "print" | "printf" => print_at = Some(parens),
                    _ => {}
                }
                after_operand = true;
                continue;
            }
            _ => {}
        }
        if !c.is_whitespace() {
            after_operand = c.is_ascii_alphanumeric() || matches!(c, ')' | ']' | '$' | '_');
        }
        i += 1;
    }
    None
}

/// The index after a string or regex literal opening at `start` (backslash escapes skipped).
fn skip_quoted(chars: &[char], start: usize, quote: char) -> usize {
    let mut i = start + 1;
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}
