//! `fs.read`, `fs.list`, `fs.write`, `fs.delete`: files inside the directories configured as
//! roots (`[tools.fs.roots.<name>]`), and nowhere else. Paths are relative to a root; their
//! shape is checked at intake (`path`), where they lead when they are opened (`ops`, with
//! `cap-std`). Writes and deletes need a writable root and are audited, refusals included.

mod config;
mod ops;
mod path;

pub use config::{FsConfig, FsRoot};

use std::{sync::Arc, time::Duration};

use cap_std::{ambient_authority, fs::Dir};
use futures::{FutureExt, future::BoxFuture};
use serde::Deserialize;
use serde_json::{Value, json};

use self::{ops::FsError, path::RootPath};
use super::{
    Effect, Tool, ToolContext, ToolError, ToolResult, ToolSpec,
    content::{self, Encoding},
};
use crate::{
    model::{AuditKind, ConfigProblem, FieldError, Outcome},
    store::Store,
};

/// A configured root, opened once at start: every path is resolved beneath this handle.
struct Root {
    dir: Dir,
    writable: bool,
}

/// What the four tools share.
struct Roots {
    roots: std::collections::BTreeMap<String, Root>,
    config: FsConfig,
    store: Store,
}

/// The `fs.*` tools of this configuration: none without roots; `fs.write` and `fs.delete`
/// only when a root is writable. A root that cannot be opened stops the server.
pub fn tools(config: &FsConfig, store: &Store) -> Result<Vec<Arc<dyn Tool>>, ConfigProblem> {
    if config.roots.is_empty() {
        return Ok(Vec::new());
    }
    let mut roots = std::collections::BTreeMap::new();
    for (name, root) in &config.roots {
        let dir = Dir::open_ambient_dir(&root.path, ambient_authority()).map_err(|e| {
            ConfigProblem::new(
                format!("tools.fs.roots.\"{name}\".path"),
                format!("cannot open {} as a directory: {e}", root.path.display()),
            )
        })?;
        roots.insert(
            name.clone(),
            Root {
                dir,
                writable: root.writable,
            },
        );
    }
    let any_writable = roots.values().any(|r| r.writable);
    let shared = Arc::new(Roots {
        roots,
        config: config.clone(),
        store: store.clone(),
    });
    let mut tools: Vec<Arc<dyn Tool>> = vec![
        Arc::new(FsTool::new(Op::Read, shared.clone())),
        Arc::new(FsTool::new(Op::List, shared.clone())),
    ];
    if any_writable {
        tools.push(Arc::new(FsTool::new(Op::Write, shared.clone())));
        tools.push(Arc::new(FsTool::new(Op::Delete, shared)));
    }
    Ok(tools)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    List,
    Write,
    Delete,
}

impl Op {
    fn changes(self) -> bool {
        matches!(self, Op::Write | Op::Delete)
    }

    fn audit_kind(self) -> Option<AuditKind> {
        match self {
            Op::Write => Some(AuditKind::FsWrite),
            Op::Delete => Some(AuditKind::FsDelete),
            Op::Read | Op::List => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inputs {
    root: String,
    #[serde(default)]
    path: String,
    content: Option<String>,
    encoding: Option<Encoding>,
    #[serde(default)]
    create_dirs: bool,
    #[serde(default)]
    recursive: bool,
}

/// Inputs that passed every check that needs no disk.
struct Checked<'a> {
    root: &'a Root,
    root_name: String,
    path: RootPath,
    bytes: Vec<u8>,
    inputs: Inputs,
}

struct FsTool {
    op: Op,
    spec: ToolSpec,
    shared: Arc<Roots>,
}

impl FsTool {
    fn new(op: Op, shared: Arc<Roots>) -> Self {
        let names: Vec<&String> = shared.roots.keys().collect();
        let root = json!({"type": "string", "enum": names, "description": "A configured root."});
        let path = |what: &str| {
            json!({"type": "string", "maxLength": 4096,
                   "description": format!("{what}, relative to the root (`a/b.txt`); no `..`.")})
        };
        let c = &shared.config;
        let (name, description, properties, required, effect) = match op {
            Op::Read => (
                "fs.read",
                format!(
                    "Read a file inside a root: {{content, encoding (text, or base64 when not \
                     UTF-8), size, truncated}}; at most {} bytes.",
                    c.max_read_bytes
                ),
                json!({"root": root, "path": path("The file")}),
                json!(["root", "path"]),
                Effect::Read,
            ),
            Op::List => (
                "fs.list",
                format!(
                    "List a directory inside a root (the root itself when `path` is empty): \
                     entries {{name, type, size}} in name order, at most {}.",
                    c.max_list_entries
                ),
                json!({"root": root, "path": path("The directory")}),
                json!(["root"]),
                Effect::Read,
            ),
            Op::Write => (
                "fs.write",
                format!(
                    "Write a whole file inside a writable root, atomically (created or \
                     replaced); at most {} bytes.",
                    c.max_write_bytes
                ),
                json!({
                    "root": root,
                    "path": path("The file"),
                    "content": {"type": "string"},
                    "encoding": content::encoding_schema(),
                    "create_dirs": {"type": "boolean", "default": false,
                                    "description": "Create missing parent directories."}
                }),
                json!(["root", "path", "content"]),
                Effect::Write,
            ),
            Op::Delete => (
                "fs.delete",
                "Delete a file, a symlink or an empty directory inside a writable root \
                 (a directory with everything in it when `recursive`)."
                    .to_owned(),
                json!({
                    "root": root,
                    "path": path("What to delete"),
                    "recursive": {"type": "boolean", "default": false}
                }),
                json!(["root", "path"]),
                Effect::Write,
            ),
        };
        Self {
            op,
            spec: ToolSpec {
                name: name.into(),
                description,
                input_schema: json!({
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": false
                }),
                effect,
                timeout: Duration::from_secs(30),
                // A write or delete that failed half-way is reported, not repeated blindly.
                max_attempts: if op.changes() { 1 } else { 2 },
                priority: 0,
                // The schema names this deployment's roots.
                public: false,
                destructive: op.changes(),
                open_world: false,
                output_schema: None,
            },
            shared,
        }
    }

    /// Every check that needs no disk: the root, the path's shape, writability, size.
    fn check(&self, inputs: &Value) -> Result<Checked<'_>, Vec<FieldError>> {
        let inputs: Inputs = serde_json::from_value(inputs.clone())
            .map_err(|e| vec![FieldError::new("inputs", e.to_string())])?;
        let Some(root) = self.shared.roots.get(&inputs.root) else {
            return Err(vec![FieldError::new(
                "inputs.root",
                "is not a configured root",
            )]);
        };
        let mut errors = Vec::new();
        if self.op.changes() && !root.writable {
            errors.push(
                FieldError::new(
                    "inputs.root",
                    format!("root `{}` is read-only", inputs.root),
                )
                .with_code("root_read_only"),
            );
        }
        let path = RootPath::parse(&inputs.path)
            .map_err(|why| {
                errors.push(FieldError::new("inputs.path", why).with_code("path_outside_root"))
            })
            .ok();
        if let Some(p) = &path
            && p.is_root()
            && self.op != Op::List
        {
            errors.push(FieldError::new(
                "inputs.path",
                "names the root itself; name an entry",
            ));
        }
        let mut bytes = Vec::new();
        if let Some(text) = &inputs.content {
            match content::decode(text, inputs.encoding.unwrap_or(Encoding::Text)) {
                Ok(b) if b.len() > self.shared.config.max_write_bytes => {
                    errors.push(
                        FieldError::new(
                            "inputs.content",
                            format!(
                                "is {} bytes; tools.fs.max_write_bytes is {}",
                                b.len(),
                                self.shared.config.max_write_bytes
                            ),
                        )
                        .with_code("too_large"),
                    );
                }
                Ok(b) => bytes = b,
                Err(why) => errors.push(FieldError::new("inputs.content", why)),
            }
        }
        match path {
            Some(path) if errors.is_empty() => Ok(Checked {
                root,
                root_name: inputs.root.clone(),
                path,
                bytes,
                inputs,
            }),
            _ => Err(errors),
        }
    }

    async fn run(&self, ctx: &ToolContext, inputs: &Value) -> ToolResult {
        let checked = self.check(inputs).map_err(super::invalid_inputs)?;
        let root_name = checked.root_name.clone();
        let shown = checked.path.to_string();
        let outcome = self.apply(checked).await;
        if let Some(kind) = self.op.audit_kind() {
            let mut detail = json!({"root": root_name, "path": shown});
            match &outcome {
                Ok(result) => {
                    detail["decision"] = json!(Outcome::Ok);
                    for key in ["bytes", "sha256", "created", "deleted", "recursive"] {
                        if let Some(v) = result.get(key) {
                            detail[key] = v.clone();
                        }
                    }
                }
                Err(e) if e.is_refusal() => {
                    detail["decision"] = json!(Outcome::Refused);
                    detail["reason"] = json!(e.to_string());
                    detail["code"] = json!(e.code());
                }
                Err(e) => detail["error"] = json!(e.code()),
            }
            // An unaudited change must not look like a success.
            self.shared
                .store
                .append_job_event(ctx.job_id, ctx.attempt, kind, &detail)
                .await?;
        }
        outcome
            .map(Into::into)
            .map_err(|e| ToolError::permanent(e.code(), e.to_string()))
    }

    /// The operation itself, on the blocking pool.
    async fn apply(&self, c: Checked<'_>) -> Result<Value, FsError> {
        let dir = c.root.dir.try_clone().map_err(|error| FsError::Io {
            path: ".".into(),
            error,
        })?;
        let op = self.op;
        let config = self.shared.config.clone();
        let root = c.root_name;
        let Inputs {
            create_dirs,
            recursive,
            ..
        } = c.inputs;
        let (path, bytes) = (c.path, c.bytes);
        tokio::task::spawn_blocking(move || {
            let shown = path.to_string();
            Ok(match op {
                Op::Read => {
                    let r = ops::read(&dir, &path, config.max_read_bytes)?;
                    let (encoding, content) = content::encode(&r.bytes, r.truncated);
                    json!({"root": root, "path": shown, "size": r.size, "content": content,
                           "encoding": encoding, "truncated": r.truncated})
                }
                Op::List => {
                    let (entries, truncated) = ops::list(&dir, &path, config.max_list_entries)?;
                    json!({"root": root, "path": shown, "entries": entries, "truncated": truncated})
                }
                Op::Write => {
                    let w = ops::write(&dir, &path, &bytes, create_dirs)?;
                    json!({"root": root, "path": shown, "bytes": bytes.len(),
                           "sha256": w.sha256, "created": w.created})
                }
                Op::Delete => {
                    let kind = ops::delete(&dir, &path, recursive)?;
                    json!({"root": root, "path": shown, "deleted": kind, "recursive": recursive})
                }
            })
        })
        .await
        .unwrap_or_else(|e| {
            Err(FsError::Io {
                path: ".".into(),
                error: std::io::Error::other(e.to_string()),
            })
        })
    }
}

impl Tool for FsTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn check_inputs(&self, inputs: &Value) -> Result<(), Vec<FieldError>> {
        self.check(inputs).map(|_| ())
    }

    /// A write or delete refused at intake is a policy decision: `fs.write`/`fs.delete`
    /// with `decision: refused`.
    fn refusal_audit(&self, inputs: &Value, errors: &[FieldError]) -> Option<(AuditKind, Value)> {
        let kind = self.op.audit_kind()?;
        let error = errors.iter().find(|e| e.code.is_some())?;
        Some((
            kind,
            json!({
                "root": inputs.get("root"),
                "path": inputs.get("path"),
                "decision": Outcome::Refused,
                "reason": format!("{}: {}", error.field, error.message),
                "code": error.code,
                "stage": "intake",
            }),
        ))
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, inputs: &'a Value) -> BoxFuture<'a, ToolResult> {
        self.run(ctx, inputs).boxed()
    }
}
