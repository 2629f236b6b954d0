//! The `fs.*` tools on real directories: a round trip, paths that try to leave a root (`..`,
//! absolute, symlinks, a directory swapped for a symlink while writes run), read-only roots,
//! size caps, and the audit trail of every write and delete.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use orchestrator::tools::fs::FsRoot;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_with};

/// A work area: `rw` (writable root), `ro` (read-only root, with `ro/readme.txt`) and
/// `outside` (no root; holds `secret.txt`).
struct Area {
    _tmp: tempfile::TempDir,
    rw: PathBuf,
    ro: PathBuf,
    outside: PathBuf,
}

impl Area {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let [rw, ro, outside] = ["rw", "ro", "outside"].map(|d| tmp.path().join(d));
        for dir in [&rw, &ro, &outside] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(ro.join("readme.txt"), "read me").unwrap();
        std::fs::write(outside.join("secret.txt"), "secret").unwrap();
        Self {
            _tmp: tmp,
            rw,
            ro,
            outside,
        }
    }

    /// The names outside the roots: only `secret.txt`, unchanged, whatever was tried.
    fn assert_outside_untouched(&self) {
        let names: Vec<String> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["secret.txt"],
            "something was written outside the roots"
        );
        assert_eq!(
            std::fs::read_to_string(self.outside.join("secret.txt")).unwrap(),
            "secret"
        );
    }
}

async fn app(area: &Area, max_read: usize, max_write: usize) -> TestApp {
    let roots = [
        (
            "work".to_string(),
            FsRoot {
                path: area.rw.clone(),
                writable: true,
            },
        ),
        (
            "docs".to_string(),
            FsRoot {
                path: area.ro.clone(),
                writable: false,
            },
        ),
    ];
    spawn_with(move |c| {
        // The race tests send hundreds of calls a second, past the default per-key rate.
        c.rate_limits.per_key = orchestrator::limits::Rate::OFF;
        c.tools.fs.roots = roots.into();
        c.tools.fs.max_read_bytes = max_read;
        c.tools.fs.max_write_bytes = max_write;
    })
    .await
}

async fn call(app: &TestApp, intent: &str, inputs: Value) -> (StatusCode, Value) {
    app.orchestrate_json(json!({"intent": intent, "inputs": inputs}))
        .await
}

/// A call whose job succeeded: its result.
async fn ok(app: &TestApp, intent: &str, inputs: Value) -> Value {
    let (status, body) = call(app, intent, inputs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    body["result"].clone()
}

/// A call whose job ran and failed: its error code.
async fn failed(app: &TestApp, intent: &str, inputs: Value) -> (String, Value) {
    let (status, body) = call(app, intent, inputs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    (body["error"]["code"].as_str().unwrap().to_owned(), body)
}

/// `(kind, outcome, path, code)` of the fs rows of the audit trail, oldest first.
async fn fs_audit(app: &TestApp) -> Vec<(String, Option<String>, String, String)> {
    sqlx::query_as(
        "SELECT kind, outcome, coalesce(detail->>'path', ''), coalesce(detail->>'code', '')
         FROM audit_events WHERE kind LIKE 'fs.%' ORDER BY id",
    )
    .fetch_all(app.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn read_list_write_delete_round_trip_and_every_change_is_audited() {
    let area = Area::new();
    let app = app(&area, 1 << 20, 1 << 20).await;
    let written = ok(
        &app,
        "fs.write",
        json!({"root": "work", "path": "notes/today.md", "content": "# Today\n",
               "create_dirs": true}),
    )
    .await;
    assert_eq!(written["bytes"], 8);
    assert_eq!(written["created"], true);
    assert_eq!(
        std::fs::read_to_string(area.rw.join("notes/today.md")).unwrap(),
        "# Today\n"
    );
    // Binary content, base64 both ways.
    ok(
        &app,
        "fs.write",
        json!({"root": "work", "path": "notes/blob.bin", "content": "AP8=", "encoding": "base64"}),
    )
    .await;
    let read = ok(
        &app,
        "fs.read",
        json!({"root": "work", "path": "notes/blob.bin"}),
    )
    .await;
    assert_eq!(
        (&read["encoding"], &read["content"]),
        (&json!("base64"), &json!("AP8="))
    );
    let read = ok(
        &app,
        "fs.read",
        json!({"root": "docs", "path": "readme.txt"}),
    )
    .await;
    assert_eq!(read["content"], "read me");
    assert_eq!(read["truncated"], false);

    let listed = ok(&app, "fs.list", json!({"root": "work", "path": "notes"})).await;
    assert_eq!(
        listed["entries"],
        json!([{"name": "blob.bin", "type": "file", "size": 2},
               {"name": "today.md", "type": "file", "size": 8}])
    );
    let listed = ok(&app, "fs.list", json!({"root": "work"})).await;
    assert_eq!(
        listed["entries"],
        json!([{"name": "notes", "type": "directory"}])
    );

    let deleted = ok(
        &app,
        "fs.delete",
        json!({"root": "work", "path": "notes/today.md"}),
    )
    .await;
    assert_eq!(deleted["deleted"], "file");
    let (code, _) = failed(&app, "fs.delete", json!({"root": "work", "path": "notes"})).await;
    assert_eq!(code, "directory_not_empty");
    ok(
        &app,
        "fs.delete",
        json!({"root": "work", "path": "notes", "recursive": true}),
    )
    .await;
    assert_eq!(std::fs::read_dir(&area.rw).unwrap().count(), 0);

    let ok_ = Some("ok".to_string());
    let rows = fs_audit(&app).await;
    let summary: Vec<(&str, Option<&str>, &str)> = rows
        .iter()
        .map(|(k, o, p, _)| (k.as_str(), o.as_deref(), p.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("fs.write", ok_.as_deref(), "notes/today.md"),
            ("fs.write", ok_.as_deref(), "notes/blob.bin"),
            ("fs.delete", ok_.as_deref(), "notes/today.md"),
            ("fs.delete", None, "notes"),
            ("fs.delete", ok_.as_deref(), "notes"),
        ]
    );
    // Each names the job, its root and the written content's digest.
    let (job, root, sha): (Option<uuid::Uuid>, String, String) = sqlx::query_as(
        "SELECT job_id, detail->>'root', detail->>'sha256' FROM audit_events
         WHERE kind = 'fs.write' ORDER BY id LIMIT 1",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(job.is_some());
    assert_eq!(root, "work");
    assert_eq!(sha.len(), 64);
}

#[tokio::test]
async fn dot_dot_and_absolute_paths_are_refused_at_intake_and_refused_writes_audited() {
    let area = Area::new();
    let app = app(&area, 1 << 20, 1 << 20).await;
    let outside = area.outside.join("secret.txt");
    let outside = outside.to_str().unwrap();
    for path in [
        "../outside/secret.txt",
        "a/../../outside/x",
        "..",
        outside,
        "/etc/passwd",
    ] {
        for (intent, extra) in [
            ("fs.read", json!({})),
            ("fs.list", json!({})),
            ("fs.write", json!({"content": "x"})),
            ("fs.delete", json!({})),
        ] {
            let mut inputs = json!({"root": "work", "path": path});
            inputs
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let (status, problem) = call(&app, intent, inputs).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{intent} {path}: {problem}"
            );
            assert_eq!(problem["code"], "path_outside_root", "{intent} {path}");
            assert_eq!(problem["errors"][0]["field"], "inputs.path");
        }
    }
    area.assert_outside_untouched();
    // Refused writes and deletes are in the trail (no job was made for them).
    let rows = fs_audit(&app).await;
    assert_eq!(rows.len(), 10, "{rows:?}");
    assert!(rows.iter().all(
        |(_, outcome, _, code)| outcome.as_deref() == Some("refused")
            && code == "path_outside_root"
    ));
}

#[tokio::test]
async fn symlinks_that_leave_the_root_are_refused_by_read_write_list_and_delete() {
    let area = Area::new();
    let link =
        |target: &Path, name: &str| std::os::unix::fs::symlink(target, area.rw.join(name)).unwrap();
    link(&area.outside, "escape");
    link(&area.outside.join("secret.txt"), "secret");
    link(Path::new("../outside"), "relative");
    let app = app(&area, 1 << 20, 1 << 20).await;
    for (intent, path, extra) in [
        ("fs.read", "escape/secret.txt", json!({})),
        ("fs.read", "secret", json!({})),
        ("fs.read", "relative/secret.txt", json!({})),
        ("fs.list", "escape", json!({})),
        ("fs.list", "relative", json!({})),
        ("fs.write", "escape/new.txt", json!({"content": "x"})),
        ("fs.write", "secret", json!({"content": "overwritten"})),
        (
            "fs.write",
            "escape/deep/new.txt",
            json!({"content": "x", "create_dirs": true}),
        ),
        ("fs.delete", "escape/secret.txt", json!({})),
        ("fs.delete", "secret", json!({})),
        ("fs.delete", "escape", json!({"recursive": true})),
    ] {
        let mut inputs = json!({"root": "work", "path": path});
        inputs
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (code, body) = failed(&app, intent, inputs).await;
        assert_eq!(code, "path_outside_root", "{intent} {path}: {body}");
    }
    area.assert_outside_untouched();
    // The links themselves are still there.
    for name in ["escape", "secret", "relative"] {
        assert!(area.rw.join(name).symlink_metadata().unwrap().is_symlink());
    }
    let refused: Vec<(String, Option<String>, String, String)> = fs_audit(&app).await;
    assert_eq!(refused.len(), 6, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|(_, o, _, _)| o.as_deref() == Some("refused"))
    );
}

#[tokio::test]
async fn a_directory_swapped_for_a_symlink_while_writes_run_never_leads_outside() {
    let area = Area::new();
    let app = app(&area, 1 << 20, 1 << 20).await;
    let sub = area.rw.join("sub");
    let parked = area.rw.join("sub.parked");
    std::fs::create_dir(&sub).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = {
        let (stop, sub, parked, outside) = (
            stop.clone(),
            sub.clone(),
            parked.clone(),
            area.outside.clone(),
        );
        // Swaps `sub` between the real directory and a symlink to the outside as fast as it
        // can, for as long as the writes run.
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(&sub, &parked).unwrap();
                std::os::unix::fs::symlink(&outside, &sub).unwrap();
                std::fs::remove_file(&sub).unwrap();
                std::fs::rename(&parked, &sub).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    let writers = (0..4).map(|w| {
        let app = &app;
        async move {
            let mut codes = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let (status, body) = call(
                    app,
                    "fs.write",
                    json!({"root": "work", "path": format!("sub/w{w}-{i}.txt"),
                           "content": format!("write {w}-{i}")}),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                codes.push(match body["status"].as_str() {
                    Some("success") => "ok".to_owned(),
                    _ => body["error"]["code"].as_str().unwrap_or("?").to_owned(),
                });
                i += 1;
            }
            codes
        }
    });
    let codes: Vec<String> = futures::future::join_all(writers)
        .await
        .into_iter()
        .flatten()
        .collect();
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    area.assert_outside_untouched();
    assert!(swaps > 10, "the directory was swapped {swaps} times");
    assert!(codes.len() >= 8, "{} writes", codes.len());
    // Each write landed inside, was refused, or found no directory mid-swap.
    for code in &codes {
        assert!(
            ["ok", "path_outside_root", "not_found"].contains(&code.as_str()),
            "{code}"
        );
    }
    let written = std::fs::read_dir(&sub).unwrap().count();
    let succeeded = codes.iter().filter(|c| *c == "ok").count();
    assert_eq!(
        written, succeeded,
        "every success is a file inside: {codes:?}"
    );
    eprintln!(
        "{} writes over {swaps} swaps: {succeeded} landed inside",
        codes.len()
    );
}

#[tokio::test]
async fn read_only_roots_and_size_caps_are_enforced() {
    let area = Area::new();
    let app = app(&area, 4, 16).await;
    for (intent, inputs) in [
        (
            "fs.write",
            json!({"root": "docs", "path": "new.txt", "content": "x"}),
        ),
        ("fs.delete", json!({"root": "docs", "path": "readme.txt"})),
    ] {
        let (status, problem) = call(&app, intent, inputs).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["code"], "root_read_only");
    }
    assert_eq!(std::fs::read_dir(&area.ro).unwrap().count(), 1);

    let (status, problem) = call(
        &app,
        "fs.write",
        json!({"root": "work", "path": "big.txt", "content": "x".repeat(17)}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "too_large");
    assert!(!area.rw.join("big.txt").exists());
    ok(
        &app,
        "fs.write",
        json!({"root": "work", "path": "fits.txt", "content": "x".repeat(16)}),
    )
    .await;

    let read = ok(
        &app,
        "fs.read",
        json!({"root": "docs", "path": "readme.txt"}),
    )
    .await;
    assert_eq!(read["content"], "read");
    assert_eq!(read["size"], 7);
    assert_eq!(read["truncated"], true);
}

#[tokio::test]
async fn without_roots_there_are_no_fs_tools() {
    let app = spawn_with(|_| {}).await;
    let (_, tools) = app.get_json("/tools").await;
    let names = tools.to_string();
    assert!(!names.contains("\"fs."), "{names}");
    let (status, problem) = call(&app, "fs.read", json!({"root": "x", "path": "y"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");

    // Read-only roots only: reading, no writing.
    let area = Area::new();
    let ro = area.ro.clone();
    let app = spawn_with(move |c| {
        c.tools.fs.roots = [(
            "docs".to_string(),
            FsRoot {
                path: ro,
                writable: false,
            },
        )]
        .into();
    })
    .await;
    let (_, tools) = app.get_json("/tools").await;
    let names = tools.to_string();
    assert!(
        names.contains("\"fs.read\"") && names.contains("\"fs.list\""),
        "{names}"
    );
    assert!(!names.contains("\"fs.write\"") && !names.contains("\"fs.delete\""));
}
