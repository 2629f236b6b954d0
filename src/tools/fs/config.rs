//! `[tools.fs]`: the directory trees the `fs.*` tools may touch, and their caps.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::ConfigProblem;

/// `[tools.fs]`. No roots: no `fs.*` tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsConfig {
    /// `[tools.fs.roots.<name>]`: callers name a root and a path relative to it.
    pub roots: BTreeMap<String, FsRoot>,
    /// The most of a file `fs.read` returns; the rest is left out and `truncated` is true.
    pub max_read_bytes: usize,
    /// The largest file `fs.write` writes (larger content is refused).
    pub max_write_bytes: usize,
    /// The most entries `fs.list` returns (the first in name order; `truncated` says so).
    pub max_list_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsRoot {
    /// An absolute directory that exists when the server starts.
    pub path: PathBuf,
    /// Whether `fs.write` and `fs.delete` may change it (default: read-only).
    #[serde(default)]
    pub writable: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            roots: BTreeMap::new(),
            max_read_bytes: 1024 * 1024,
            max_write_bytes: 1024 * 1024,
            max_list_entries: 1000,
        }
    }
}

/// Root names appear in inputs and audit entries: short words.
fn valid_root_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl FsConfig {
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (name, root) in &self.roots {
            let field = |key: &str| format!("tools.fs.roots.\"{name}\"{key}");
            if !valid_root_name(name) {
                out.push(ConfigProblem::new(
                    field(""),
                    "a root's name is 1 to 64 letters, digits, `_`, `-` or `.`",
                ));
            }
            if !root.path.is_absolute() {
                out.push(ConfigProblem::new(
                    field(".path"),
                    "must be an absolute path",
                ));
            }
        }
        for (key, value) in [
            ("max_read_bytes", self.max_read_bytes),
            ("max_write_bytes", self.max_write_bytes),
            ("max_list_entries", self.max_list_entries),
        ] {
            if value == 0 {
                out.push(ConfigProblem::new(
                    format!("tools.fs.{key}"),
                    "must be positive",
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commented_roots_in_the_example_file_parse() {
        use figment::providers::{Format, Toml};
        let uncommented = crate::config::uncommented_example("tools.fs");
        #[derive(Deserialize)]
        struct File {
            tools: Tools,
        }
        #[derive(Deserialize)]
        struct Tools {
            fs: FsConfig,
        }
        let file: File = figment::Figment::from(Toml::string(&uncommented))
            .extract()
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let fs = file.tools.fs;
        assert!(fs.problems().is_empty());
        assert_eq!(fs.roots.len(), 2);
        assert!(fs.roots["scratch"].writable && !fs.roots["docs"].writable);
    }

    #[test]
    fn problems_name_each_bad_root() {
        let root = |path: &str| FsRoot {
            path: path.into(),
            writable: false,
        };
        let config = FsConfig {
            roots: [
                ("docs".to_string(), root("/srv/docs")),
                ("bad name".to_string(), root("/srv/x")),
                ("rel".to_string(), root("srv/rel")),
            ]
            .into(),
            max_list_entries: 0,
            ..FsConfig::default()
        };
        let fields: Vec<String> = config.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "tools.fs.roots.\"bad name\"",
                "tools.fs.roots.\"rel\".path",
                "tools.fs.max_list_entries"
            ]
        );
    }
}
