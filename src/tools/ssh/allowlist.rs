//! What `ssh.exec.peek` may run: programs and the rules for their arguments, as data. The
//! built-in list (`allowlist.toml`, next to this file) can be extended, narrowed or replaced by
//! `[ssh.peek]` in the configuration.

use std::{collections::BTreeMap, fmt};

use figment::{
    Figment,
    providers::{Format, Toml},
};
use serde::{Deserialize, Serialize};

use crate::{glob::Glob, model::ConfigProblem};

const BUILTIN: &str = include_str!("allowlist.toml");

/// The rules for one program's arguments (see `allowlist.toml` for the meaning of each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProgramRule {
    pub deny: Vec<String>,
    pub value_options: Vec<String>,
    pub subcommands: Vec<String>,
    pub operands: Vec<String>,
    pub require_one_of: Vec<String>,
}

impl Default for ProgramRule {
    fn default() -> Self {
        Self {
            deny: Vec::new(),
            value_options: Vec::new(),
            subcommands: Vec::new(),
            operands: vec!["*".into()],
            require_one_of: Vec::new(),
        }
    }
}

/// `[ssh.peek]`: how the configuration changes the built-in allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeekConfig {
    /// Start from the built-in list (false: only `programs`).
    pub builtin: bool,
    /// Built-in programs to drop.
    pub remove: Vec<String>,
    /// Programs to add, or built-in ones whose rules to replace whole.
    pub programs: BTreeMap<String, ProgramRule>,
}

impl Default for PeekConfig {
    fn default() -> Self {
        Self {
            builtin: true,
            remove: Vec::new(),
            programs: BTreeMap::new(),
        }
    }
}

impl PeekConfig {
    /// Problems with the configured rules.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for name in self.remove.iter().chain(self.programs.keys()) {
            if !valid_program_name(name) {
                out.push(ConfigProblem::new(
                    format!("ssh.peek: program \"{name}\""),
                    "must be a bare program name (no `/`, spaces or quotes)",
                ));
            }
        }
        for (name, rule) in &self.programs {
            let patterns = rule
                .deny
                .iter()
                .chain(&rule.value_options)
                .chain(&rule.require_one_of);
            if patterns.clone().any(|p| p.len() < 2 || !p.starts_with('-')) {
                out.push(ConfigProblem::new(
                    format!("ssh.peek.programs.\"{name}\""),
                    "deny, value_options and require_one_of hold options (starting with `-`)",
                ));
            }
        }
        out
    }
}

fn valid_program_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// The built-in rules, by program.
pub fn builtin() -> BTreeMap<String, ProgramRule> {
    Figment::from(Toml::string(BUILTIN))
        .extract()
        .expect("the built-in allowlist parses (a unit test checks it)")
}

/// Why peek refused a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The effective allowlist.
#[derive(Debug, Clone)]
pub struct Allowlist {
    programs: BTreeMap<String, ProgramRule>,
}

impl Allowlist {
    pub fn new(config: &PeekConfig) -> Self {
        let mut programs = if config.builtin {
            builtin()
        } else {
            BTreeMap::new()
        };
        for name in &config.remove {
            programs.remove(name);
        }
        programs.extend(config.programs.clone());
        Self { programs }
    }

    pub fn programs(&self) -> impl Iterator<Item = &str> {
        self.programs.keys().map(String::as_str)
    }

    /// Whether `argv` is allowed; the refusal says which word broke which rule.
    pub fn check(&self, argv: &[String]) -> Result<(), Refusal> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Refusal("the command is empty".into()));
        };
        if program.contains('/') {
            return Err(Refusal(format!(
                "`{program}`: name the program (e.g. `ls`), not a path"
            )));
        }
        let Some(rule) = self.programs.get(program) else {
            return Err(Refusal(format!(
                "`{program}` is not on the peek allowlist (allowed: {})",
                self.programs().collect::<Vec<_>>().join(", ")
            )));
        };
        rule.check(program, args)
    }
}

impl ProgramRule {
    fn check(&self, program: &str, args: &[String]) -> Result<(), Refusal> {
        let refuse = |why: String| Err(Refusal(format!("`{program}`: {why}")));
        let mut operands: Vec<&str> = Vec::new();
        let mut options_done = false;
        let mut takes_value = false;
        let mut required_seen = self.require_one_of.is_empty();
        for arg in args {
            // Exact and prefix patterns hold everywhere: `find -- / -delete` is still -delete.
            if let Some(p) = self.deny.iter().find(|p| word_pattern_matches(p, arg)) {
                return refuse(format!("`{arg}` is not allowed (rule `{p}`)"));
            }
            let is_option = !options_done && arg.len() > 1 && arg.starts_with('-');
            if (is_option || takes_value)
                && let Some(p) = self.deny.iter().find(|p| option_matches(p, arg, self))
            {
                return refuse(format!("`{arg}` is not allowed (rule `{p}`)"));
            }
            if takes_value {
                takes_value = false;
                continue;
            }
            if !options_done && arg == "--" {
                options_done = true;
                continue;
            }
            if is_option {
                required_seen |= self
                    .require_one_of
                    .iter()
                    .any(|p| option_matches(p, arg, self));
                takes_value = self.expects_value(arg);
            } else {
                operands.push(arg);
            }
        }
        if !required_seen {
            return refuse(format!(
                "needs one of {} to bound its output",
                self.require_one_of.join(", ")
            ));
        }
        if !self.subcommands.is_empty() {
            match operands.first() {
                Some(sub) if self.subcommands.iter().any(|s| s == sub) => {
                    operands.remove(0);
                }
                Some(sub) => {
                    return refuse(format!(
                        "`{sub}` is not allowed (allowed: {})",
                        self.subcommands.join(", ")
                    ));
                }
                None => {
                    return refuse(format!("needs one of: {}", self.subcommands.join(", ")));
                }
            }
        }
        for op in operands {
            if !self.operands.iter().any(|p| Glob::new(p).matches(op)) {
                return refuse(if self.operands.is_empty() {
                    format!("takes no operands (got `{op}`)")
                } else {
                    format!(
                        "operand `{op}` is not allowed (allowed: {})",
                        self.operands.join(", ")
                    )
                });
            }
        }
        Ok(())
    }

    /// `-n` or `--lines` as a separate word (the value follows), not `-n5` or `--lines=5`.
    fn expects_value(&self, arg: &str) -> bool {
        if arg.starts_with("--") {
            !arg.contains('=') && self.value_options.iter().any(|v| long_matches(v, arg))
        } else {
            // In a cluster, a value option takes the rest of the word, or the next one.
            let chars: Vec<char> = arg[1..].chars().collect();
            chars.iter().enumerate().any(|(i, c)| {
                self.is_short_value_option(*c)
                    && i == chars.len() - 1
                    && self.clusters_to(&chars, i)
            })
        }
    }

    fn is_short_value_option(&self, c: char) -> bool {
        self.value_options
            .iter()
            .any(|v| v.len() == 2 && v.ends_with(c))
    }

    /// No value option before `chars[i]` swallowed it.
    fn clusters_to(&self, chars: &[char], i: usize) -> bool {
        !chars[..i].iter().any(|c| self.is_short_value_option(*c))
    }
}

/// `-exec` (exact) and `-fprint*` (a glob, [`crate::glob`]): patterns that are words, not
/// getopt options. A pattern with `*` or `?` is always a word glob.
fn word_pattern_matches(pattern: &str, arg: &str) -> bool {
    let glob = Glob::new(pattern);
    if glob.is_literal() && (is_short(pattern) || pattern.starts_with("--")) {
        false
    } else {
        glob.matches(arg)
    }
}

/// `-f`, but not `--` nor the globs `-*` and `-?`.
fn is_short(pattern: &str) -> bool {
    pattern.len() == 2
        && pattern.starts_with('-')
        && pattern != "--"
        && Glob::new(pattern).is_literal()
}

/// A short option (`-f`, also inside `-nf`, up to a value option that takes the rest) or a
/// long one (`--follow`, also `--fol` and `--follow=name`, as getopt_long accepts them).
fn option_matches(pattern: &str, arg: &str, rule: &ProgramRule) -> bool {
    if pattern.starts_with("--") && Glob::new(pattern).is_literal() {
        return long_matches(pattern, arg);
    }
    if is_short(pattern) && arg.starts_with('-') && !arg.starts_with("--") {
        let wanted = pattern.chars().nth(1);
        for c in arg.chars().skip(1) {
            if Some(c) == wanted {
                return true;
            }
            if rule.is_short_value_option(c) {
                return false;
            }
        }
    }
    false
}

fn long_matches(pattern: &str, arg: &str) -> bool {
    let name = arg.split_once('=').map_or(arg, |(n, _)| n);
    name.starts_with("--") && name.len() >= 3 && pattern.starts_with(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob_matches(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).matches(text)
    }

    fn argv(s: &str) -> Vec<String> {
        crate::tools::ssh::shell::plain_argv(s).unwrap()
    }

    fn default_list() -> Allowlist {
        Allowlist::new(&PeekConfig::default())
    }

    #[test]
    fn the_builtin_list_parses_and_holds_the_documented_programs() {
        let list = default_list();
        let names: Vec<&str> = list.programs().collect();
        for p in [
            "ls",
            "cat",
            "head",
            "tail",
            "grep",
            "df",
            "du",
            "free",
            "uptime",
            "uname",
            "hostname",
            "whoami",
            "id",
            "date",
            "ps",
            "ss",
            "journalctl",
            "systemctl",
            "stat",
            "wc",
            "find",
        ] {
            assert!(names.contains(&p), "{p} missing");
        }
        let config = PeekConfig {
            programs: builtin(),
            ..Default::default()
        };
        assert!(config.problems().is_empty(), "{:?}", config.problems());
    }

    #[test]
    fn allows_ordinary_diagnostics() {
        let list = default_list();
        for cmd in [
            "uname -a",
            "ls -la /var/log",
            "cat /etc/os-release",
            "head -n 20 /var/log/syslog",
            "tail -n 100 /var/log/syslog",
            "tail -n5 x",
            "tail -- -f",
            "grep -rn error /var/log/nginx",
            "grep -e -f file",
            "df -h",
            "du -sh /var",
            "free -m",
            "uptime",
            "uptime -p",
            "hostname",
            "hostname -I",
            "whoami",
            "id www-data",
            "date",
            "date +%s",
            "date -d yesterday +%F",
            "date --date=@0",
            "date -I",
            "date -Idate",
            "date --iso-8601=minutes",
            "date --rfc-3339 seconds",
            "journalctl -n 5 -c s=abc",
            "ps aux",
            "ss -tlnp",
            "journalctl -n 50 -u nginx --no-pager",
            "journalctl --lines=20",
            "journalctl -u firewalld -n 5",
            "journalctl -ufirewalld -n 5",
            "systemctl status nginx",
            "systemctl --no-pager status nginx",
            "systemctl is-active sshd",
            "systemctl -t service list-units",
            "systemctl list-units --state=failed",
            "stat /etc/hosts",
            "wc -l /etc/passwd",
            "find /var/log -name '*.gz' -mtime +7",
            "find / -xdev -type f -size +100M",
        ] {
            assert_eq!(list.check(&argv(cmd)), Ok(()), "{cmd}");
        }
    }

    #[test]
    fn refuses_programs_off_the_list_and_paths() {
        let list = default_list();
        for cmd in [
            "rm -rf /tmp/x",
            "bash",
            "sh -c id",
            "python3",
            "/bin/ls",
            "./ls",
            "vi",
        ] {
            assert!(list.check(&argv(cmd)).is_err(), "{cmd}");
        }
        let why = list.check(&argv("rm x")).unwrap_err().0;
        assert!(
            why.contains("not on the peek allowlist") && why.contains("uname"),
            "{why}"
        );
    }

    #[test]
    fn refuses_arguments_that_follow_write_or_change_state() {
        let list = default_list();
        for cmd in [
            "tail -f /var/log/syslog",
            "tail -F x",
            "tail -5f x",
            "tail -fn5 x",
            "tail --follow x",
            "tail --follow=name x",
            "tail --fol x",
            "tail --retry x",
            "cat -f x",
            "head --follow x",
            "journalctl -f",
            "journalctl -n 10 -f",
            "journalctl -n 10 --follow",
            "journalctl -fu nginx -n 1",
            "journalctl -n 1 --vacuum-time=1s",
            "journalctl -n 1 --vacuum-t=1s",
            "journalctl -n 1 --rotate",
            "journalctl -u nginx",
            "journalctl",
            "find / -exec rm '{}' ';'",
            "find / -execdir rm '{}' +",
            "find /tmp -delete",
            "find -- / -delete",
            "find / -fprint /tmp/x",
            "find / -fprint0 /tmp/x",
            "find / -fprintf /tmp/x %p",
            "find / -fls /tmp/x",
            "find / -ok rm '{}' ';'",
            "find / -okdir rm '{}' ';'",
            "systemctl stop sshd",
            "systemctl restart nginx",
            "systemctl disable --now ssh",
            "systemctl",
            "date -s 2020-01-01",
            "date --set=2020-01-01",
            "date 010100002020",
            "date -I 010100002020",
            "date --iso-8601 010100002020",
            "journalctl -n 5 --cursor-file=/var/www/index.html",
            "journalctl -n 5 --cursor-file /tmp/x",
            "hostname evil",
            "hostname -F /etc/x",
            "free -s 1",
            "uname x",
            "ss -K dst 1.2.3.4",
            "ss --kill",
            "ss -D /tmp/x",
        ] {
            assert!(list.check(&argv(cmd)).is_err(), "{cmd} should be refused");
        }
        let why = list.check(&argv("tail -f x")).unwrap_err().0;
        assert_eq!(why, "`tail`: `-f` is not allowed (rule `-f`)");
    }

    #[test]
    fn config_can_extend_replace_narrow_or_start_empty() {
        let mut programs = BTreeMap::new();
        programs.insert("lsblk".to_string(), ProgramRule::default());
        programs.insert(
            "cat".to_string(),
            ProgramRule {
                operands: vec!["/var/log/*".into()],
                ..Default::default()
            },
        );
        let list = Allowlist::new(&PeekConfig {
            builtin: true,
            remove: vec!["find".into()],
            programs: programs.clone(),
        });
        assert_eq!(list.check(&argv("lsblk -f")), Ok(()));
        assert!(list.check(&argv("find /")).is_err());
        assert_eq!(list.check(&argv("cat /var/log/syslog")), Ok(()));
        assert!(list.check(&argv("cat /etc/shadow")).is_err());
        assert_eq!(list.check(&argv("uname -a")), Ok(()));

        let only = Allowlist::new(&PeekConfig {
            builtin: false,
            remove: vec![],
            programs,
        });
        assert_eq!(only.programs().collect::<Vec<_>>(), ["cat", "lsblk"]);
        assert!(only.check(&argv("uname -a")).is_err());
    }

    #[test]
    fn configured_rules_are_validated() {
        let mut programs = BTreeMap::new();
        programs.insert("../x".to_string(), ProgramRule::default());
        programs.insert(
            "ok".to_string(),
            ProgramRule {
                deny: vec!["f".into()],
                ..Default::default()
            },
        );
        let problems = PeekConfig {
            programs,
            ..Default::default()
        }
        .problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn globs_match_like_the_documentation_says() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("+*", "+%s"));
        assert!(!glob_matches("+*", "0101"));
        assert!(glob_matches("/var/log/*", "/var/log/syslog"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXcYYb"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
    }

    #[test]
    fn deny_and_operand_patterns_with_wildcards_are_word_globs() {
        let mut programs = BTreeMap::new();
        programs.insert(
            "x".to_string(),
            ProgramRule {
                deny: vec!["-o?".into(), "--a*z".into(), "-*-".into()],
                operands: vec!["v?".into(), "/srv/*/log".into()],
                ..Default::default()
            },
        );
        let list = Allowlist::new(&PeekConfig {
            builtin: false,
            remove: vec![],
            programs,
        });
        for ok in [
            "x -o",
            "x -oab",
            "x --a",
            "x v1",
            "x /srv/app/log",
            "x /srv/a/b/log",
        ] {
            assert_eq!(list.check(&argv(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "x -ox",
            "x --abcz",
            "x --az",
            "x -a-",
            "x v",
            "x v12",
            "x /srv/log",
        ] {
            assert!(list.check(&argv(bad)).is_err(), "{bad}");
        }
    }
}
