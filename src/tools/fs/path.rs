//! A caller's path inside a root, checked for shape before anything touches the disk:
//! relative, no `..`, no NUL. Where it leads (symlinks) is for `cap-std` to judge when it is
//! opened; this only gives the clear refusals for what is wrong on its face.

use std::{fmt, path::PathBuf};

/// The longest path accepted (Linux's PATH_MAX).
const MAX_LEN: usize = 4096;

/// Relative components, none of them empty, `.` or `..`. Empty: the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPath(Vec<String>);

impl RootPath {
    /// `a/b.txt`, `./a//b.txt/` and `a/./b.txt` are the same path; `""` and `.` the root.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.len() > MAX_LEN {
            return Err("is longer than 4096 bytes");
        }
        if raw.contains('\0') {
            return Err("contains NUL");
        }
        if raw.starts_with('/') {
            return Err("is absolute; paths are relative to the root");
        }
        let mut parts = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err("contains `..`; paths stay inside the root"),
                part => parts.push(part.to_owned()),
            }
        }
        Ok(Self(parts))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// For `cap-std`: `.` for the root.
    pub fn to_path(&self) -> PathBuf {
        if self.is_root() {
            PathBuf::from(".")
        } else {
            self.0.iter().collect()
        }
    }

    /// The parent (`.` for an entry of the root) and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RootPath, &str)> {
        let (last, parent) = self.0.split_last()?;
        Some((RootPath(parent.to_vec()), last))
    }
}

impl fmt::Display for RootPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            f.write_str(&self.0.join("/"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        #[rustfmt::skip]
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("a.txt", Ok("a.txt")),
            ("dir/a.txt", Ok("dir/a.txt")),
            ("./dir//a.txt/", Ok("dir/a.txt")),
            ("dir/./a.txt", Ok("dir/a.txt")),
            ("", Ok(".")),
            (".", Ok(".")),
            ("..a/b..", Ok("..a/b..")),
            ("with space/ü", Ok("with space/ü")),
            ("..", Err("contains `..`")),
            ("../etc/passwd", Err("contains `..`")),
            ("dir/../../x", Err("contains `..`")),
            ("dir/..", Err("contains `..`")),
            ("/etc/passwd", Err("is absolute")),
            ("//etc", Err("is absolute")),
            ("a\0b", Err("contains NUL")),
        ];
        for (raw, want) in cases {
            match (RootPath::parse(raw), want) {
                (Ok(p), Ok(shown)) => assert_eq!(p.to_string(), *shown, "{raw:?}"),
                (Err(e), Err(text)) => assert!(e.contains(text), "{raw:?}: {e}"),
                (got, _) => panic!("{raw:?}: {got:?}, expected {want:?}"),
            }
        }
        assert!(RootPath::parse(&"a/".repeat(2049)).is_err());
    }

    #[test]
    fn split_last() {
        let p = RootPath::parse("a/b/c.txt").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!((parent.to_string().as_str(), name), ("a/b", "c.txt"));
        let p = RootPath::parse("c.txt").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!((parent.to_path(), name), (PathBuf::from("."), "c.txt"));
        assert!(RootPath::parse(".").unwrap().split_last().is_none());
    }
}
