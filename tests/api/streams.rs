//! Server-Sent Events: a job's events (history, live, `end`), resuming with `Last-Event-ID`,
//! commit order, every visible job's state changes across instances, the streamed answer of
//! `POST /orchestrate`, heartbeats, a follower that falls behind, shutdown.

use std::{sync::Arc, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    helpers::{Spawn, TestApp, job_id, spawn, spawn_app, spawn_with},
    test_tools::Gate,
};

/// One event as it came over the wire.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
    pub retry: Option<u64>,
}

/// A client reading a `text/event-stream` answer, the way `EventSource` parses it.
pub struct SseClient {
    resp: reqwest::Response,
    buf: String,
    /// Comment lines seen (heartbeats).
    comments: usize,
    ended: bool,
}

impl SseClient {
    async fn open(app: &TestApp, path: &str, key: Option<&str>, last_id: Option<&str>) -> Self {
        let mut req = app
            .client
            .get(format!("{}{path}", app.base))
            .header("accept", "text/event-stream")
            // The stream outlives the client's default timeout.
            .timeout(Duration::from_secs(600));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        Self::from_response(req.send().await.unwrap()).await
    }

    pub async fn from_response(resp: reqwest::Response) -> Self {
        let status = resp.status();
        if status != StatusCode::OK {
            panic!("{status}: {}", resp.text().await.unwrap());
        }
        let headers = resp.headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["x-accel-buffering"], "no");
        assert_eq!(headers["cache-control"], "no-cache");
        Self {
            resp,
            buf: String::new(),
            comments: 0,
            ended: false,
        }
    }

    /// The next event within `within`; `None` when the stream ended or nothing came.
    async fn next_within(&mut self, within: Duration) -> Option<Received> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    pub async fn next(&mut self) -> Received {
        self.next_within(Duration::from_secs(30))
            .await
            .expect("an event within 30 s")
    }

    /// Whether the server ended the stream (after any events still buffered).
    async fn ends(&mut self) -> bool {
        self.next_within(Duration::from_secs(30)).await.is_none() && self.ended
    }

    fn parse_one(&mut self) -> Option<Received> {
        loop {
            let end = self.buf.find("\n\n")?;
            let block: String = self.buf.drain(..end + 2).collect();
            let mut event = Received {
                id: None,
                event: "message".into(),
                data: Value::Null,
                retry: None,
            };
            let mut data = String::new();
            let mut only_comments = true;
            for line in block.lines().filter(|l| !l.is_empty()) {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                only_comments = false;
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = value.to_owned(),
                    "data" => data.push_str(value),
                    "retry" => event.retry = value.parse().ok(),
                    _ => {}
                }
            }
            if only_comments {
                continue;
            }
            event.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
            return Some(event);
        }
    }

    /// Events until (and with) the first named `name`.
    pub async fn until(&mut self, name: &str) -> Vec<Received> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            let done = event.event == name;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

fn kinds(events: &[Received]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.data["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn gated_app(gate: &Arc<Gate>) -> TestApp {
    spawn(Spawn {
        tools: vec![gate.clone()],
        ..Default::default()
    })
    .await
}

async fn start_async(app: &TestApp, intent: &str, inputs: Value) -> String {
    let (status, body) = app
        .orchestrate_json(json!({"intent": intent, "inputs": inputs, "async": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    job_id(&body)
}

#[tokio::test]
async fn a_jobs_stream_replays_its_history_goes_live_and_ends_when_it_is_final() {
    let gate = Gate::new("test.gate");
    let app = gated_app(&gate).await;
    let job = start_async(&app, "test.gate", json!({"n": 1})).await;
    app.wait_for_status(&job, "running").await;

    let mut stream = SseClient::open(&app, &format!("/jobs/{job}/stream"), None, None).await;
    let created = stream.next().await;
    assert_eq!(created.event, "message");
    assert_eq!(created.data["kind"], "created");
    assert_eq!(created.data["job_id"], job.as_str());
    assert_eq!(created.data["intent"], "test.gate");
    assert!(created.id.is_some(), "every event can be resumed after");
    let claimed = stream.next().await;
    assert_eq!(claimed.data["kind"], "claimed");
    assert_eq!(claimed.data["to_status"], "running");

    // Nothing more happens while the tool runs; then it finishes, live.
    gate.open();
    let rest = stream.until("end").await;
    assert_eq!(kinds(&rest), ["succeeded"]);
    let end = rest.last().unwrap();
    assert_eq!(end.data, json!({"job_id": job, "status": "succeeded"}));
    assert!(stream.ends().await, "the stream closes after `end`");

    // The same history as the JSON endpoint, which plain clients still get.
    let (status, history) = app.get_json(&format!("/jobs/{job}/events")).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<i64> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [&created, &claimed, &rest[0]].map(|e| e.data["id"].as_i64().unwrap())
    );
}

#[tokio::test]
async fn reconnecting_with_last_event_id_gets_exactly_the_events_missed() {
    let app = spawn_with(|c| c.workers.retry_base = Duration::from_millis(10)).await;
    // Two failed attempts, then success: created, claimed, retry_scheduled, claimed,
    // retry_scheduled, claimed, succeeded.
    let flaky = crate::test_tools::Flaky::new("test.flaky3", 2, true, 3);
    app.registry
        .set_source(
            "test",
            vec![Arc::new(
                orchestrator::catalog::Intent::new(orchestrator::model::Mode::Agent, flaky, None)
                    .unwrap(),
            )],
        )
        .unwrap();
    let job = start_async(&app, "test.flaky3", json!({})).await;
    app.wait_for_status(&job, "succeeded").await;

    // `GET /jobs/{id}/events` asked for as a stream is the same stream.
    let path = format!("/jobs/{job}/events");
    let mut full = SseClient::open(&app, &path, None, None).await;
    let all = full.until("end").await;
    let events: Vec<&Received> = all.iter().filter(|e| e.event == "message").collect();
    assert_eq!(
        kinds(&all),
        [
            "created",
            "claimed",
            "retry_scheduled",
            "claimed",
            "retry_scheduled",
            "claimed",
            "succeeded"
        ]
    );
    for (k, seen) in events.iter().enumerate() {
        let mut resumed = SseClient::open(&app, &path, None, seen.id.as_deref()).await;
        let rest = resumed.until("end").await;
        let got: Vec<_> = rest
            .iter()
            .filter(|e| e.event == "message")
            .map(|e| e.id.clone())
            .collect();
        let want: Vec<_> = events[k + 1..].iter().map(|e| e.id.clone()).collect();
        assert_eq!(got, want, "resumed after event {k}");
        assert!(resumed.ends().await);
    }

    let refused = app
        .client
        .get(format!("{}{path}", app.base))
        .header("accept", "text/event-stream")
        .header("last-event-id", "not-an-id")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "Last-Event-ID", "{problem}");
}

#[tokio::test]
async fn events_come_in_commit_order_so_none_is_skipped_by_a_resume() {
    let gate = Gate::new("test.gate");
    let app = gated_app(&gate).await;
    let job = start_async(&app, "test.gate", json!({})).await;
    app.wait_for_status(&job, "running").await;
    let mut stream = SseClient::open(&app, &format!("/jobs/{job}/stream"), None, None).await;
    assert_eq!(
        kinds(&[stream.next().await, stream.next().await]),
        ["created", "claimed"]
    );

    // An event inserted first (smaller id) but committed last, and one inserted and committed
    // in between: a reader going by id would hand out the second and then skip the first.
    let insert = "INSERT INTO audit_events (kind, job_id, detail) \
                  VALUES ('progress', $1::text::uuid, $2)";
    let uuid = job.trim_start_matches("job_");
    let mut slow = app.pool().begin().await.unwrap();
    sqlx::query(insert)
        .bind(uuid)
        .bind(json!({"step": "first"}))
        .execute(&mut *slow)
        .await
        .unwrap();
    sqlx::query(insert)
        .bind(uuid)
        .bind(json!({"step": "second"}))
        .execute(app.pool())
        .await
        .unwrap();
    assert!(
        stream
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "held until the older transaction ends"
    );
    slow.commit().await.unwrap();
    let first = stream.next().await;
    let second = stream.next().await;
    assert_eq!(first.data["detail"]["step"], "first");
    assert_eq!(second.data["detail"]["step"], "second");
    assert!(first.data["id"].as_i64() < second.data["id"].as_i64());

    // A client that stopped after the first resumes with the second, and the other way round
    // gets nothing twice.
    let path = format!("/jobs/{job}/stream");
    let mut resumed = SseClient::open(&app, &path, None, first.id.as_deref()).await;
    assert_eq!(resumed.next().await.data["detail"]["step"], "second");
    let mut resumed = SseClient::open(&app, &path, None, second.id.as_deref()).await;
    gate.open();
    assert_eq!(kinds(&resumed.until("end").await), ["succeeded"]);
}

#[tokio::test]
async fn the_events_stream_shows_each_key_the_jobs_it_may_see_filtered() {
    let app = spawn_app().await;
    let alice = app.key("alice", &["*"]).await;
    let bob = app.key("bob", &["*"]).await;
    let ops = app.key("ops", &["*", "jobs:read:all"]).await;

    let mut alices = SseClient::open(&app, "/events", Some(&alice), None).await;
    let mut all = SseClient::open(&app, "/events", Some(&ops), None).await;
    let mut done = SseClient::open(
        &app,
        "/events?status=succeeded&mode=agent",
        Some(&ops),
        None,
    )
    .await;
    let mut other = SseClient::open(&app, "/events?intent=memory.search", Some(&ops), None).await;

    let run = |key: String, text: &'static str| {
        let app = &app;
        async move {
            let resp = app
                .client
                .post(format!("{}/orchestrate", app.base))
                .bearer_auth(key)
                .json(&json!({"intent": "system.echo", "inputs": {"text": text}}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            job_id(&resp.json().await.unwrap())
        }
    };
    let alices_job = run(alice.clone(), "a").await;
    let bobs_job = run(bob.clone(), "b").await;

    // Alice: her job's state changes only, up to its end.
    let mut seen = Vec::new();
    while seen
        .last()
        .map(|e: &Received| e.data["to_status"] != "succeeded")
        .unwrap_or(true)
    {
        seen.push(alices.next().await);
    }
    assert!(seen.iter().all(|e| e.data["job_id"] == alices_job.as_str()));
    assert!(
        seen.iter().all(|e| !e.data["to_status"].is_null()),
        "state changes only"
    );
    // The operator sees both jobs finish; the filtered stream only the finishes.
    let mut finished = std::collections::BTreeSet::new();
    while finished.len() < 2 {
        let e = all.next().await;
        if e.data["to_status"] == "succeeded" {
            finished.insert(e.data["job_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(finished, [alices_job.clone(), bobs_job.clone()].into());
    for _ in 0..2 {
        let e = done.next().await;
        assert_eq!(
            (e.data["kind"].as_str(), e.data["mode"].as_str()),
            (Some("succeeded"), Some("agent"))
        );
    }
    // Nothing of Bob's reaches Alice; no memory.search ran.
    assert!(
        alices
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        other
            .next_within(Duration::from_millis(100))
            .await
            .is_none()
    );

    // Bob cannot follow Alice's job; checks name the field; no key, no stream.
    let (status, _) = app
        .get_json_as(&bob, &format!("/jobs/{alices_job}/stream"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = app.get_json_as(&ops, "/events?status=finished").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["errors"][0]["field"], "status");
    let (status, problem) = app.get_json_as(&ops, "/events?mode=auto").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["errors"][0]["field"], "mode");
    let (status, _) = app.get_json("/events").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_event_written_by_one_instance_reaches_a_stream_on_another() {
    let a = spawn_app().await;
    // B runs nothing itself: every event it streams was written by A.
    let b = spawn(Spawn {
        db: Some(a.db.clone()),
        configure: Box::new(|c| c.workers.concurrency = 0),
        ..Default::default()
    })
    .await;
    let mut on_b = SseClient::open(&b, "/events?intent=system.echo", None, None).await;
    let (status, body) = a
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {"text": "hi"}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let job = job_id(&body);
    let mut kinds_seen = Vec::new();
    while kinds_seen.last().map(String::as_str) != Some("succeeded") {
        let e = on_b.next().await;
        assert_eq!(e.data["job_id"], job.as_str());
        kinds_seen.push(e.data["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds_seen.first().map(String::as_str), Some("created"));
}

#[tokio::test]
async fn orchestrate_can_answer_with_a_stream_of_the_jobs_events_and_its_result() {
    let app = spawn_app().await;
    let request = json!({"intent": "system.echo", "inputs": {"text": "streamed"},
                         "idempotency_key": "stream-1"});
    let send = || {
        app.client
            .post(format!("{}/orchestrate", app.base))
            .header("accept", "text/event-stream")
            .json(&request)
            .send()
    };
    let mut stream = SseClient::from_response(send().await.unwrap()).await;
    let events = stream.until("result").await;
    let accepted = &events[0];
    assert_eq!(accepted.event, "accepted");
    let job = accepted.data["job_id"].as_str().unwrap().to_owned();
    assert!(
        accepted.data["status_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/jobs/{job}"))
    );
    assert_eq!(kinds(&events), ["created", "claimed", "succeeded"]);
    let result = events.last().unwrap();
    assert_eq!(result.data["status"], "success");
    assert_eq!(result.data["job_id"], job.as_str());
    assert_eq!(result.data["result"]["text"], "streamed");
    assert!(stream.ends().await);

    // A replay streams the same job, marked as such.
    let mut again = SseClient::from_response(send().await.unwrap()).await;
    let replayed = again.until("result").await;
    assert_eq!(replayed[0].data["job_id"], job.as_str());
    assert_eq!(replayed[0].data["idempotent_replay"], true);
    assert_eq!(replayed.last().unwrap().data["result"]["text"], "streamed");

    // Plain JSON clients are unchanged.
    let (status, body) = app
        .orchestrate_json(json!({"intent": "system.echo", "inputs": {"text": "plain"}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["text"], "plain");
}

#[tokio::test]
async fn idle_streams_get_heartbeats_and_end_when_the_instance_stops() {
    // Nothing runs here: the job stays queued and its stream idle.
    let mut app = spawn_with(|c| {
        c.workers.concurrency = 0;
        c.events.heartbeat = Duration::from_millis(100);
    })
    .await;
    let job = start_async(&app, "system.echo", json!({"text": "x"})).await;
    let mut stream = SseClient::open(&app, &format!("/jobs/{job}/stream"), None, None).await;
    assert_eq!(stream.next().await.data["kind"], "created");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream.comments < 3 && Instant::now() < deadline {
        let event = stream.next_within(Duration::from_millis(50)).await;
        assert!(
            event.is_none(),
            "nothing happens to a queued job: {event:?}"
        );
    }
    assert!(
        stream.comments >= 3,
        "comment lines keep the idle stream open"
    );

    let stopping = Instant::now();
    app.stop().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "an open stream does not hold up shutdown: {:?}",
        stopping.elapsed()
    );
    assert!(stream.ends().await, "the stream ends with the instance");
}

#[tokio::test]
async fn a_follower_that_falls_behind_is_told_so_and_the_database_has_the_rest() {
    let app = spawn_app().await;
    let store = orchestrator::store::Store::new(app.pool().clone());
    // A reader of its own with room for eight batches (a job's events make at most three).
    let live = orchestrator::live::LiveEvents::new(store, 8);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(live.clone().run(stop.clone()));
    let from = live.now().await.unwrap();
    let mut reading = live.follow(orchestrator::live::Scope::AllJobs, from);
    let mut idle = live.follow(orchestrator::live::Scope::AllJobs, from);

    // Each job's events are read (and broadcast) before the next job starts.
    let mut jobs = Vec::new();
    for n in 0..20 {
        let job = start_async(&app, "system.echo", json!({"text": n.to_string()})).await;
        loop {
            let e = tokio::time::timeout(Duration::from_secs(10), reading.next())
                .await
                .expect("the reader broadcasts")
                .unwrap();
            if e.job_id.to_string() == job && e.event.kind == "succeeded" {
                break;
            }
        }
        jobs.push(job);
    }
    // The idle follower missed batches: it is told, rather than silently skipping them.
    let behind = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match idle.next().await {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("told within 10 s");
    assert!(
        matches!(behind, orchestrator::live::FollowError::Behind),
        "{behind}"
    );

    // Resuming from where it stood reads every event from the database, none twice.
    let mut resumed = live.follow(orchestrator::live::Scope::AllJobs, from);
    let mut finished = Vec::new();
    while finished.len() < jobs.len() {
        let e = tokio::time::timeout(Duration::from_secs(10), resumed.next())
            .await
            .unwrap()
            .unwrap();
        if e.event.kind == "succeeded" {
            finished.push(e.job_id.to_string());
        }
    }
    assert_eq!(finished, jobs);
    stop.cancel();
}

#[tokio::test]
async fn an_mcp_servers_progress_notifications_are_the_jobs_progress_events() {
    let everything = crate::mcp_peers::everything_stdio(&crate::mcp_peers::marker());
    let app = spawn_with(move |c| {
        c.mcp.servers.insert("everything".into(), everything);
    })
    .await;
    let resp = app
        .client
        .post(format!("{}/orchestrate", app.base))
        .header("accept", "text/event-stream")
        .json(
            &json!({"intent": "mcp.everything.trigger-long-running-operation",
                      "inputs": {"duration": 2, "steps": 4}}),
        )
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::from_response(resp).await;
    let events = stream.until("result").await;
    assert_eq!(
        events.last().unwrap().data["status"],
        "success",
        "{events:?}"
    );
    let progress: Vec<&Received> = events
        .iter()
        .filter(|e| e.event == "message" && e.data["kind"] == "progress")
        .collect();
    assert!(!progress.is_empty(), "{events:?}");
    let steps: Vec<f64> = progress
        .iter()
        .map(|e| e.data["detail"]["progress"].as_f64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "in order: {steps:?}");
    assert!(steps.iter().all(|s| (1.0..=4.0).contains(s)), "{steps:?}");
    assert!(progress.iter().all(|e| e.data["detail"]["total"] == 4.0));
    // Before the outcome, in the history too.
    let kinds = kinds(&events);
    let last_progress = kinds.iter().rposition(|k| k == "progress").unwrap();
    assert!(last_progress < kinds.iter().position(|k| k == "succeeded").unwrap());
    let job = events[0].data["job_id"].as_str().unwrap();
    let (_, history) = app.get_json(&format!("/jobs/{job}/events")).await;
    let recorded = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "progress")
        .count();
    assert_eq!(recorded, progress.len());
}
