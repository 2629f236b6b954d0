//! The audit trail: append-only, and it says who did what to each job.

use serde_json::json;

use crate::helpers::{job_id, spawn_app};

#[tokio::test]
async fn the_audit_table_refuses_update_delete_and_truncate() {
    let app = spawn_app().await;
    app.orchestrate_json(json!({"intent": "system.echo", "inputs": {}}))
        .await;
    for statement in [
        "UPDATE audit_events SET kind = 'forged'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        // Through the compatibility view too.
        "DELETE FROM job_events",
    ] {
        let err = sqlx::query(statement)
            .execute(app.pool())
            .await
            .expect_err(statement);
        let db = err.as_database_error().expect("a database error");
        assert_eq!(db.code().as_deref(), Some("42501"), "{statement}: {db}");
        assert!(db.message().contains("append-only"), "{statement}: {db}");
    }
    let still = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM audit_events"#)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(still >= 2, "created and succeeded are still there");
    // Ids come from the identity column only (the trail has no B-tree key to keep them
    // unique): one supplied by hand is refused.
    let err = sqlx::query(
        "INSERT INTO audit_events (id, at, kind, actor_kind) VALUES (1, now(), 'key.created', 'operator')",
    )
    .execute(app.pool())
    .await
    .expect_err("a supplied id");
    assert_eq!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("428C9"),
        "{err}"
    );
}

#[tokio::test]
async fn a_jobs_trail_names_who_did_what_with_the_request_id() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("x-request-id", "req-audit-1")
        .json(&json!({"intent": "system.echo", "inputs": {"a": 1}, "async": true}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    let id = job_id(&body);
    app.wait_for_status(&id, "succeeded").await;
    let uuid = uuid::Uuid::parse_str(&id[4..]).unwrap();
    let rows = sqlx::query!(
        r#"SELECT kind, actor_kind, actor_id, actor_name, request_id, client_addr, instance_id
           FROM audit_events WHERE job_id = $1 ORDER BY id"#,
        uuid
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    let trail: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| (r.kind.clone(), r.actor_kind.clone()))
        .collect();
    assert_eq!(
        trail,
        [
            ("created".to_owned(), Some("anonymous".to_owned())),
            ("claimed".to_owned(), Some("instance".to_owned())),
            ("succeeded".to_owned(), Some("instance".to_owned())),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.request_id.as_deref() == Some("req-audit-1"))
    );
    assert_eq!(rows[0].client_addr.as_deref(), Some("127.0.0.1"));
    // The instance that acted is named once, in `instance_id` (not again as text).
    for r in &rows[1..] {
        assert_eq!(r.instance_id, Some(app.instance_id));
        assert_eq!(r.actor_id, None);
    }
    // The final event carries what the rollups aggregate.
    let last = sqlx::query!(
        r#"SELECT intent, mode::text AS mode, duration_ms, attempt FROM audit_events
           WHERE job_id = $1 AND kind = 'succeeded'"#,
        uuid
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(
        (last.intent.as_deref(), last.mode.as_deref(), last.attempt),
        (Some("system.echo"), Some("agent"), Some(1))
    );
    assert!(last.duration_ms.is_some());
}

#[tokio::test]
async fn the_audit_vocabularies_are_one_list_in_rust_and_in_the_database() {
    use orchestrator::model::{ActorKind, AuditKind, Outcome};
    let db = crate::helpers::TestDb::new().await;
    let lists: [(&str, Vec<&str>); 3] = [
        (
            "audit_events_kind_known",
            AuditKind::ALL.iter().map(|k| k.as_str()).collect(),
        ),
        (
            "audit_events_actor_kind_known",
            ActorKind::ALL.iter().map(|k| k.as_str()).collect(),
        ),
        (
            "audit_events_outcome_known",
            Outcome::ALL.iter().map(|k| k.as_str()).collect(),
        ),
    ];
    for (constraint, mut in_rust) in lists {
        let definition: String = sqlx::query_scalar(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1",
        )
        .bind(constraint)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let mut in_database: Vec<&str> = definition.split('\'').skip(1).step_by(2).collect();
        in_database.sort_unstable();
        in_rust.sort_unstable();
        assert_eq!(in_rust, in_database, "{constraint}");
    }
    let refused =
        sqlx::query("INSERT INTO audit_events (kind, actor_kind) VALUES ('created', 'robot')")
            .execute(&db.pool)
            .await;
    assert!(refused.is_err(), "an unknown actor kind is refused");
}
