//! What the `fs.*` tools do to a root, blocking (run them on the blocking pool). Every path is
//! resolved by `cap-std` from the root's directory handle, one component at a time beneath it
//! (`openat2` with `RESOLVE_BENEATH` where the kernel has it): `..` or a symlink that would
//! leave the root is refused by the kernel or by cap-std, never judged from strings, so a
//! directory swapped for a symlink mid-call cannot lead a write outside.

use std::io::{self, Read, Write};

use cap_std::fs::Dir;
use cap_tempfile::TempFile;
use sha2::{Digest, Sha256};

use super::path::RootPath;

/// Why an operation did not happen; `code` is the job's error code.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{0} leads outside the root")]
    OutsideRoot(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} is not a file")]
    NotAFile(String),
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("{0} is a symlink; name its target")]
    Symlink(String),
    #[error("{0} is a directory that is not empty (set recursive)")]
    NotEmpty(String),
    #[error("the root itself cannot be {0}")]
    IsRoot(&'static str),
    #[error("{path}: {error}")]
    Io { path: String, error: io::Error },
}

impl FsError {
    pub fn code(&self) -> &'static str {
        match self {
            FsError::OutsideRoot(_) => "path_outside_root",
            FsError::NotFound(_) => "not_found",
            FsError::NotAFile(_) => "not_a_file",
            FsError::NotADirectory(_) => "not_a_directory",
            FsError::Symlink(_) => "is_a_symlink",
            FsError::NotEmpty(_) => "directory_not_empty",
            FsError::IsRoot(_) => "is_the_root",
            FsError::Io { .. } => "io_error",
        }
    }

    /// A refusal by policy (audited as `refused`), not a failure.
    pub fn is_refusal(&self) -> bool {
        matches!(self, FsError::OutsideRoot(_))
    }

    fn from_io(path: &RootPath, error: io::Error) -> Self {
        let path = path.to_string();
        if escapes(&error) {
            return FsError::OutsideRoot(path);
        }
        match error.kind() {
            io::ErrorKind::NotFound => FsError::NotFound(path),
            io::ErrorKind::NotADirectory => FsError::NotADirectory(path),
            io::ErrorKind::IsADirectory => FsError::NotAFile(path),
            io::ErrorKind::DirectoryNotEmpty => FsError::NotEmpty(path),
            _ => FsError::Io { path, error },
        }
    }
}

/// cap-std's refusal of a path that leaves the directory: `PermissionDenied` with this text
/// (its `escape_attempt()`); a loop of symlinks is refused alike. (The unit tests below hold
/// the text to what the pinned cap-std says.)
fn escapes(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied
        && error.to_string().contains("outside of the filesystem")
        || error.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32)
}

fn io_at(path: &RootPath) -> impl Fn(io::Error) -> FsError + '_ {
    move |e| FsError::from_io(path, e)
}

pub struct FileRead {
    pub size: u64,
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

/// At most `max` bytes of a file (symlinks followed while they stay inside).
pub fn read(root: &Dir, path: &RootPath, max: usize) -> Result<FileRead, FsError> {
    let file = root.open(path.to_path()).map_err(io_at(path))?;
    let meta = file.metadata().map_err(io_at(path))?;
    if !meta.is_file() {
        return Err(FsError::NotAFile(path.to_string()));
    }
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_at(path))?;
    let truncated = bytes.len() > max;
    bytes.truncate(max);
    Ok(FileRead {
        size: meta.len(),
        bytes,
        truncated,
    })
}

#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other` (a symlink is not followed).
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A directory's entries in name order, at most `max` (and whether there were more).
pub fn list(root: &Dir, path: &RootPath, max: usize) -> Result<(Vec<Entry>, bool), FsError> {
    let dir = root.open_dir(path.to_path()).map_err(io_at(path))?;
    let mut entries = Vec::new();
    for entry in dir.entries().map_err(io_at(path))? {
        let entry = entry.map_err(io_at(path))?;
        let kind = entry.file_type().map_err(io_at(path))?;
        let (kind, size) = if kind.is_symlink() {
            ("symlink", None)
        } else if kind.is_dir() {
            ("directory", None)
        } else if kind.is_file() {
            ("file", entry.metadata().ok().map(|m| m.len()))
        } else {
            ("other", None)
        };
        entries.push(Entry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind,
            size,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let truncated = entries.len() > max;
    entries.truncate(max);
    Ok((entries, truncated))
}

pub struct Written {
    pub sha256: String,
    pub created: bool,
}

/// The parent directory of `path`, opened beneath the root (created first when asked), and
/// the entry's name in it. Everything after works from that handle: a parent swapped for a
/// symlink later changes nothing.
fn open_parent<'p>(
    root: &Dir,
    path: &'p RootPath,
    create: bool,
    what: &'static str,
) -> Result<(Dir, &'p str), FsError> {
    let (parent, name) = path.split_last().ok_or(FsError::IsRoot(what))?;
    if create && !parent.is_root() {
        root.create_dir_all(parent.to_path())
            .map_err(io_at(&parent))?;
    }
    let dir = root.open_dir(parent.to_path()).map_err(io_at(&parent))?;
    Ok((dir, name))
}

/// Why an entry that is a symlink is refused: it leaves the root (or cannot be resolved
/// beneath it), or it is a symlink at all.
fn symlink_refusal(dir: &Dir, name: &str, path: &RootPath) -> FsError {
    match dir.metadata(name) {
        Err(e) if escapes(&e) => FsError::OutsideRoot(path.to_string()),
        _ => FsError::Symlink(path.to_string()),
    }
}

/// Writes the whole file at once: a temporary file beside it, synced, then renamed over it,
/// so a reader sees the old content or the new, never a part.
pub fn write(
    root: &Dir,
    path: &RootPath,
    bytes: &[u8],
    create_dirs: bool,
) -> Result<Written, FsError> {
    let (dir, name) = open_parent(root, path, create_dirs, "written")?;
    let created = match dir.symlink_metadata(name) {
        Ok(meta) if meta.is_symlink() => return Err(symlink_refusal(&dir, name, path)),
        Ok(meta) if meta.is_dir() => return Err(FsError::NotAFile(path.to_string())),
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(FsError::from_io(path, e)),
    };
    let mut temp = TempFile::new(&dir).map_err(io_at(path))?;
    temp.write_all(bytes).map_err(io_at(path))?;
    temp.as_file().sync_all().map_err(io_at(path))?;
    // The rename replaces whatever holds the name by then, a symlink included, and never
    // follows it: the new file is always in this directory.
    temp.replace(name).map_err(io_at(path))?;
    Ok(Written {
        sha256: hex::encode(Sha256::digest(bytes)),
        created,
    })
}

/// Removes a file, a symlink (itself, when it stays inside the root), or a directory (empty,
/// or with everything in it when `recursive`). Returns what it was.
pub fn delete(root: &Dir, path: &RootPath, recursive: bool) -> Result<&'static str, FsError> {
    let (dir, name) = open_parent(root, path, false, "deleted")?;
    let meta = dir.symlink_metadata(name).map_err(io_at(path))?;
    if meta.is_symlink() {
        if let Err(e) = dir.metadata(name)
            && escapes(&e)
        {
            return Err(FsError::OutsideRoot(path.to_string()));
        }
        dir.remove_file(name).map_err(io_at(path))?;
        Ok("symlink")
    } else if meta.is_dir() {
        if recursive {
            dir.remove_dir_all(name).map_err(io_at(path))?;
        } else {
            dir.remove_dir(name).map_err(io_at(path))?;
        }
        Ok("directory")
    } else {
        dir.remove_file(name).map_err(io_at(path))?;
        Ok("file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: Dir,
        outside: std::path::PathBuf,
    }

    /// A root with `dir/f.txt`, a secret outside it, and symlinks in it: `out` to the outside
    /// directory, `secret` to the outside file, `abs` to `/etc`, `in` to `dir` (inside).
    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root_path.join("dir")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root_path.join("dir/f.txt"), "inside").unwrap();
        std::fs::write(outside.join("secret.txt"), "secret").unwrap();
        let link = |target: &std::path::Path, name: &str| {
            std::os::unix::fs::symlink(target, root_path.join(name)).unwrap()
        };
        link(&outside, "out");
        link(&outside.join("secret.txt"), "secret");
        link(std::path::Path::new("/etc"), "abs");
        link(std::path::Path::new("../outside"), "rel_out");
        link(std::path::Path::new("dir"), "in");
        let root = Dir::open_ambient_dir(&root_path, ambient_authority()).unwrap();
        Fixture {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn p(raw: &str) -> RootPath {
        RootPath::parse(raw).unwrap()
    }

    fn code<T>(r: Result<T, FsError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn symlinks_that_leave_the_root_are_refused_by_every_operation() {
        let f = fixture();
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // (operation, path, expected code)
            ("read", "dir/f.txt", "ok"),
            ("read", "in/f.txt", "ok"),
            ("read", "secret", "path_outside_root"),
            ("read", "out/secret.txt", "path_outside_root"),
            ("read", "abs/passwd", "path_outside_root"),
            ("read", "rel_out/secret.txt", "path_outside_root"),
            ("read", "dir", "not_a_file"),
            ("read", "nope", "not_found"),
            ("list", ".", "ok"),
            ("list", "in", "ok"),
            ("list", "out", "path_outside_root"),
            ("list", "abs", "path_outside_root"),
            ("list", "dir/f.txt", "not_a_directory"),
            ("write", "out/new.txt", "path_outside_root"),
            ("write", "secret", "path_outside_root"),
            ("write", "rel_out/x.txt", "path_outside_root"),
            ("write", "in", "is_a_symlink"),
            ("write", "dir", "not_a_file"),
            ("write_dirs", "out/deeper/new.txt", "path_outside_root"),
            ("delete", "out/secret.txt", "path_outside_root"),
            ("delete", "secret", "path_outside_root"),
            ("delete", "abs", "path_outside_root"),
            ("delete", "nope", "not_found"),
            ("delete", "dir", "directory_not_empty"),
            ("delete", ".", "is_the_root"),
        ];
        for (op, path, want) in cases {
            let path = p(path);
            let got = match *op {
                "read" => code(read(&f.root, &path, 100)),
                "list" => code(list(&f.root, &path, 100)),
                "write" => code(write(&f.root, &path, b"x", false)),
                "write_dirs" => code(write(&f.root, &path, b"x", true)),
                "delete" => code(delete(&f.root, &path, false)),
                _ => unreachable!(),
            };
            assert_eq!(got, *want, "{op} {path}");
        }
        // Nothing outside changed.
        let mut outside: Vec<_> = std::fs::read_dir(&f.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        outside.sort();
        assert_eq!(outside, ["secret.txt"]);
        assert_eq!(
            std::fs::read_to_string(f.outside.join("secret.txt")).unwrap(),
            "secret"
        );
    }

    #[test]
    fn write_read_list_delete() {
        let f = fixture();
        let w = write(&f.root, &p("new/deep/a.txt"), b"hello", true).unwrap();
        assert!(w.created);
        assert_eq!(
            w.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let again = write(&f.root, &p("new/deep/a.txt"), b"hello!", false).unwrap();
        assert!(!again.created);
        let r = read(&f.root, &p("new/deep/a.txt"), 3).unwrap();
        assert_eq!(
            (r.size, r.bytes.as_slice(), r.truncated),
            (6, &b"hel"[..], true)
        );
        let (entries, truncated) = list(&f.root, &p("new/deep"), 10).unwrap();
        assert_eq!(
            entries,
            [Entry {
                name: "a.txt".into(),
                kind: "file",
                size: Some(6)
            }]
        );
        assert!(!truncated);
        assert_eq!(delete(&f.root, &p("new"), true).unwrap(), "directory");
        assert_eq!(delete(&f.root, &p("in"), false).unwrap(), "symlink");
        assert_eq!(read(&f.root, &p("dir/f.txt"), 10).unwrap().bytes, b"inside");
        let (entries, truncated) = list(&f.root, &p(""), 2).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(truncated);
    }
}
