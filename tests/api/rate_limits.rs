//! Rate limits (`[rate_limits]`, a flow's `rate_limit`): token buckets shared through
//! PostgreSQL. The bucket math against the real functions with an injected clock; 429s with a
//! `Retry-After` that matches when a token comes; per-intent limits beside per-key ones; two
//! instances sharing one limit; a rate-limited flow whose excess jobs wait in the queue.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use orchestrator::{
    limits::Rate,
    model::Principal,
    store::{BucketTake, Refusal, Store},
    tools::flow::{Completion, FlowConfig, FlowEngine},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    helpers::{Spawn, TestApp, TestDb, job_id, spawn, spawn_with},
    mock_http::{MockServer, Reply},
};

fn at(ms: i64) -> Option<DateTime<Utc>> {
    Some(Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap())
}

fn take<'a>(bucket: &'a str, rate: Rate) -> BucketTake<'a> {
    BucketTake {
        bucket,
        interval: rate.interval(),
        tolerance: rate.tolerance(),
    }
}

/// Within a microsecond (the database's resolution) of `want_ms`.
fn close(got: Duration, want_ms: u64) -> bool {
    (got.as_secs_f64() * 1000.0 - want_ms as f64).abs() < 0.01
}

#[tokio::test]
async fn the_bucket_admits_a_burst_then_the_rate_and_says_when_the_next_token_comes() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    // 2 per second (one every 500 ms), 3 at once.
    let key = [take("key:k", Rate::new(2.0, 3))];
    for ms in [0, 0, 0] {
        assert_eq!(store.take_rate_tokens(&key, at(ms)).await.unwrap(), None);
    }
    let refused = store
        .take_rate_tokens(&key, at(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refused.index, 0);
    assert!(close(refused.wait, 400), "{refused:?}");
    // A refusal takes nothing: the token comes when it was announced, not later.
    let again = store
        .take_rate_tokens(&key, at(499))
        .await
        .unwrap()
        .unwrap();
    assert!(close(again.wait, 1), "{again:?}");
    assert_eq!(store.take_rate_tokens(&key, at(500)).await.unwrap(), None);
    assert!(
        store
            .take_rate_tokens(&key, at(500))
            .await
            .unwrap()
            .is_some()
    );
    // Idle for long: full again, but never more than the burst.
    for _ in 0..3 {
        assert_eq!(
            store.take_rate_tokens(&key, at(60_000)).await.unwrap(),
            None
        );
    }
    assert!(
        store
            .take_rate_tokens(&key, at(60_000))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn several_buckets_are_taken_all_or_none_and_the_longest_wait_is_named() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let both = [
        take("key:a", Rate::new(1.0, 5)),
        take("intent:x", Rate::new(0.25, 1)),
    ];
    assert_eq!(store.take_rate_tokens(&both, at(0)).await.unwrap(), None);
    let refused = store.take_rate_tokens(&both, at(1000)).await.unwrap();
    assert!(
        matches!(refused, Some(Refusal { index: 1, wait }) if close(wait, 3000)),
        "{refused:?}"
    );
    // The refused request took nothing from the key's bucket: the one token taken at 0 is
    // back at 1 s, so all 5 are there.
    let key = [take("key:a", Rate::new(1.0, 5))];
    for _ in 0..5 {
        assert_eq!(store.take_rate_tokens(&key, at(1000)).await.unwrap(), None);
    }
    assert!(
        store
            .take_rate_tokens(&key, at(1000))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_request_that_loses_the_race_to_create_a_bucket_is_checked_against_it() {
    // Another request creates the bucket (its one token taken) and has not committed yet: ours
    // finds no row to lock, inserts, and waits on the other's row. When the other commits, ours
    // must be checked against the bucket it lost the race for (and refused: the token is gone),
    // not let through because it meant to create a full one.
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let rate = Rate::new(1.0 / 60.0, 1);
    let mut other = db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO rate_buckets (bucket, tat) VALUES ('key:new', $1)")
        .bind(at(60_000))
        .execute(&mut *other)
        .await
        .unwrap();
    let ours = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .take_rate_tokens(&[take("key:new", rate)], at(0))
                .await
        }
    });
    let waiting = crate::helpers::eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    assert!(
        waiting,
        "our request waits on the other's uncommitted bucket"
    );
    other.commit().await.unwrap();
    let refused = ours.await.unwrap().unwrap();
    assert!(
        matches!(refused, Some(Refusal { index: 0, wait }) if close(wait, 60_000)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_outbound_bucket_hands_out_slots_spaced_by_the_rate_and_keeps_them() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let jobs = crate::queue::enqueue(&store, 4).await;
    // 4 per second, 2 at once: two go now, then one every 250 ms.
    let flow = take("flow:f", Rate::new(4.0, 2));
    let mut waits = Vec::new();
    for id in &jobs {
        waits.push(store.reserve_rate_slot(&flow, *id, at(0)).await.unwrap());
    }
    let ms: Vec<u128> = waits.iter().map(|w| w.as_millis()).collect();
    assert_eq!(ms, [0, 0, 250, 500]);
    // Back at its slot, a job runs on the token it reserved, taking no other…
    assert_eq!(
        store
            .reserve_rate_slot(&flow, jobs[3], at(500))
            .await
            .unwrap(),
        Duration::ZERO
    );
    // …and one that comes back early keeps its slot.
    let early = store
        .reserve_rate_slot(&flow, jobs[2], at(100))
        .await
        .unwrap();
    assert_eq!(early.as_millis(), 150);
    assert_eq!(
        store
            .reserve_rate_slot(&flow, jobs[2], at(250))
            .await
            .unwrap(),
        Duration::ZERO
    );
    // A newcomer queues behind every reservation.
    assert_eq!(
        store
            .take_rate_tokens(&[take("flow:f", Rate::new(4.0, 2))], at(500))
            .await
            .unwrap()
            .map(|r| r.wait.as_millis()),
        Some(250)
    );
}

/// How long a request taking a token from `bucket` at `ms` would wait (None: it goes now);
/// asking takes nothing when it is refused.
async fn newcomer_wait(store: &Store, bucket: &BucketTake<'_>, ms: i64) -> Option<u128> {
    store
        .take_rate_tokens(std::slice::from_ref(bucket), at(ms))
        .await
        .unwrap()
        .map(|r| r.wait.as_millis())
}

#[tokio::test]
async fn jobs_cancelled_while_waiting_for_their_slots_give_them_back_from_the_end_of_the_line() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let jobs = crate::queue::enqueue(&store, 5).await;
    // 4 per second, 2 at once: the first two go now, the others wait 250, 500 and 750 ms.
    let flow = take("flow:f", Rate::new(4.0, 2));
    for id in &jobs {
        store.reserve_rate_slot(&flow, *id, at(0)).await.unwrap();
    }
    let newcomer_waits = || newcomer_wait(&store, &flow, 0);
    assert_eq!(newcomer_waits().await, Some(1000));
    let cancel = |id| {
        let store = store.clone();
        async move {
            store
                .cancel_job(id, Uuid::now_v7(), &Principal::anonymous())
                .await
                .unwrap()
        }
    };
    // Slots in the middle of the line are promised to the jobs behind them: nothing comes
    // back yet…
    cancel(jobs[3]).await;
    cancel(jobs[2]).await;
    assert_eq!(newcomer_waits().await, Some(1000));
    // …until the last one goes: then the whole run of cancelled slots at the end comes back.
    cancel(jobs[4]).await;
    assert_eq!(newcomer_waits().await, Some(250));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM rate_reservations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the given-back reservations are gone");

    // A token taken at once after a reserved slot had passed (its job not run yet) breaks the
    // line: what was reserved before it stays taken.
    let more = crate::queue::enqueue(&store, 4).await;
    let strict = take("flow:g", Rate::new(4.0, 1));
    let reserve = |id, ms| store.reserve_rate_slot(&strict, id, at(ms));
    assert_eq!(reserve(more[0], 0).await.unwrap(), Duration::ZERO);
    assert_eq!(reserve(more[1], 0).await.unwrap().as_millis(), 250);
    assert_eq!(reserve(more[2], 600).await.unwrap(), Duration::ZERO);
    assert_eq!(reserve(more[3], 600).await.unwrap().as_millis(), 250);
    let newcomer_waits = || newcomer_wait(&store, &strict, 600);
    cancel(more[1]).await;
    assert_eq!(newcomer_waits().await, Some(500));
    cancel(more[3]).await;
    assert_eq!(
        newcomer_waits().await,
        Some(250),
        "the last slot comes back; the token taken at 600 ms still counts"
    );
}

/// `intent` with `inputs`, as `key`.
async fn run_as(app: &TestApp, key: &str, intent: &str, inputs: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/orchestrate", app.base))
        .bearer_auth(key)
        .json(&json!({"intent": intent, "inputs": inputs}))
        .send()
        .await
        .unwrap()
}

async fn echo_as(app: &TestApp, key: &str) -> reqwest::Response {
    run_as(app, key, "system.echo", json!({"message": "hi"})).await
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_burst_over_a_keys_limit_gets_429_with_a_retry_after_that_holds() {
    // One a minute, 3 at once: however slowly a loaded machine serves the burst of six, no
    // token comes back during it, so exactly three pass. (When the next token comes, to the
    // millisecond, is checked against an injected clock in
    // `the_bucket_admits_a_burst_then_the_rate_and_says_when_the_next_token_comes`.)
    let app = spawn_with(|c| c.rate_limits.per_key = Rate::new(1.0 / 60.0, 3)).await;
    let key = app.key("burst", &["*"]).await;
    let answers = futures::future::join_all((0..6).map(|_| echo_as(&app, &key))).await;
    let (ok, refused): (Vec<_>, Vec<_>) = answers
        .into_iter()
        .partition(|r| r.status() == StatusCode::OK);
    assert_eq!((ok.len(), refused.len()), (3, 3));
    for resp in refused {
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        // Within a minute of the bucket's creation: the database reads its clock once the
        // bucket is locked, after every token taken before (reading it at the statement's
        // start gave 61 once, and 1 behind a slow lock holder).
        let seconds = retry_after(&resp);
        assert!(
            (50..=60).contains(&seconds),
            "the next token comes within a minute: {seconds}"
        );
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["status"], 429);
        assert_eq!(problem["code"], "rate_limited");
        assert_eq!(problem["limit"], "api_key");
        assert_eq!(problem["limit_name"], "burst");
        assert_eq!(problem["retry_after"], seconds);
    }
    // A refused request takes nothing: asked again at once, it is refused with the same wait.
    let again = echo_as(&app, &key).await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!((50..=60).contains(&retry_after(&again)));
    // Another key has a bucket of its own.
    let other = app.key("other", &["*"]).await;
    assert_eq!(echo_as(&app, &other).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_intent_limit_holds_for_every_caller_apart_from_their_keys_limits() {
    let app = spawn_with(|c| {
        c.rate_limits.per_key = Rate::new(0.1, 3);
        c.rate_limits
            .intents
            .insert("system.e*".into(), Rate::new(0.1, 2));
    })
    .await;
    let (a, b) = (app.key("a", &["*"]).await, app.key("b", &["*"]).await);
    assert_eq!(echo_as(&app, &a).await.status(), StatusCode::OK);
    assert_eq!(echo_as(&app, &a).await.status(), StatusCode::OK);
    // b's key has all its tokens, but the intent has none left.
    for _ in 0..3 {
        let resp = echo_as(&app, &b).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["limit"], "intent");
        assert_eq!(problem["limit_name"], "system.e*");
    }
    // Those refusals took none of b's tokens; other intents are not limited by this one.
    let search = json!({"query": "anything"});
    for _ in 0..3 {
        assert_eq!(
            run_as(&app, &b, "memory.search", search.clone())
                .await
                .status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        run_as(&app, &b, "memory.search", search).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "b's own limit"
    );
}

#[tokio::test]
async fn two_instances_share_one_limit() {
    let db = TestDb::new().await;
    let limited = |c: &mut orchestrator::config::Config| c.rate_limits.per_key = Rate::new(0.1, 4);
    let first = spawn(Spawn {
        db: Some(db.clone()),
        configure: Box::new(limited),
        ..Default::default()
    })
    .await;
    let second = spawn(Spawn {
        db: Some(db.clone()),
        configure: Box::new(limited),
        ..Default::default()
    })
    .await;
    let key = first.key("shared", &["*"]).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let app = if i % 2 == 0 { &first } else { &second };
        statuses.push(echo_as(app, &key).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429]);
}

#[tokio::test]
async fn a_rate_limited_flows_excess_jobs_wait_their_turn_and_all_succeed() {
    let peer = MockServer::start().await;
    peer.otherwise("/webhook/slow", Reply::json(200, json!({"ok": true})));
    let rate = Rate::new(5.0, 2);
    let flow = FlowConfig {
        engine: FlowEngine::Generic,
        url: peer.url("/webhook/slow"),
        method: "POST".into(),
        timeout: Duration::from_secs(5),
        completion: Completion::Sync,
        callback_deadline: Duration::from_secs(60),
        auth: None,
        description: None,
        input_schema: None,
        read_only: true,
        destructive: None,
        max_attempts: 1,
        breaker_threshold: 5,
        breaker_open: Duration::from_secs(30),
        rate_limit: Some(rate),
        concurrency: None,
    };
    // An instance without workers files every job first, so that all of them are queued when
    // the workers' instance starts, however long filing takes (filed one by one into a running
    // worker, the bucket refilled meanwhile on a slow machine and more went at once).
    let db = TestDb::new().await;
    let instance = |tune: fn(&mut orchestrator::config::Config)| {
        let flow = flow.clone();
        spawn(Spawn {
            db: Some(db.clone()),
            configure: Box::new(move |c| {
                tune(c);
                c.flows.insert("report.build".into(), flow);
            }),
            ..Default::default()
        })
    };
    let intake = instance(|c| c.workers.concurrency = 0).await;
    let n = 8;
    let mut ids = Vec::new();
    for i in 0..n {
        let (status, body) = intake
            .post_json(
                "/orchestrate",
                json!({"intent": "report.build", "inputs": {"i": i}, "async": true}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(job_id(&body));
    }
    let app = instance(|c| c.workers.poll_interval = Duration::from_millis(20)).await;
    for id in &ids {
        let job = app.wait_for_status(id, "succeeded").await;
        assert_eq!(job["attempts"], 1, "waiting cost no attempt: {job}");
    }
    // Never over the rate: the k-th request came no sooner than the bucket allowed.
    let got = peer.requests("/webhook/slow");
    assert_eq!(got.len(), n);
    let mut times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    times.sort();
    // Arrival times carry the machine's delays (a late first request makes the next look
    // early); half an interval still tells a limiter that spaces requests from one that sends
    // them together.
    let slack = rate.interval() / 2;
    for (k, t) in times.iter().enumerate() {
        let due = rate.interval() * (k as u32).saturating_sub(rate.burst() - 1);
        assert!(
            t.duration_since(times[0]) + slack >= due,
            "request {k} came {:?} after the first, before {due:?}",
            t.duration_since(times[0])
        );
    }
    // The wait is in the jobs' histories: deferred once each, with when it ran again.
    let mut deferred = 0;
    for id in &ids {
        let (_, history) = app.get_json(&format!("/jobs/{id}/events")).await;
        let events = history["events"].as_array().unwrap();
        let waits: Vec<&Value> = events.iter().filter(|e| e["kind"] == "deferred").collect();
        assert!(waits.len() <= 1, "one reservation per job: {history}");
        if let Some(wait) = waits.first() {
            assert_eq!(wait["detail"]["code"], "rate_limited", "{wait}");
            assert!(wait["detail"]["run_at"].is_string(), "{wait}");
            deferred += 1;
        }
        assert!(
            events
                .iter()
                .all(|e| e["kind"] != "failed" && e["kind"] != "retry_scheduled"),
            "{history}"
        );
    }
    assert!(deferred >= n - 2, "only the burst went at once: {deferred}");
}
