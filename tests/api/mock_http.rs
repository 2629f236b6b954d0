//! A real HTTP server on loopback whose answers each test scripts, and which records every
//! request: it plays n8n, ActivePieces and callback receivers.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::helpers::eventually;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn json(status: u16, body: Value) -> Self {
        Self {
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            ..Self::status(status)
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }
}

#[derive(Default)]
struct Script {
    queued: HashMap<String, VecDeque<Reply>>,
    fallback: HashMap<String, Reply>,
    requests: Vec<Recorded>,
}

#[derive(Clone)]
pub struct MockServer {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

impl MockServer {
    pub async fn start() -> Self {
        let script: Arc<Mutex<Script>> = Arc::default();
        let app = Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            script,
            _server: Arc::new(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// These answers, in order, for the next requests to `path`.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.lock()
            .queued
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    /// The answer for `path` once the script is used up (default: 200, empty).
    pub fn otherwise(&self, path: &str, reply: Reply) {
        self.lock().fallback.insert(path.to_owned(), reply);
    }

    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has seen at least `n` requests.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Recorded> {
        let arrived = eventually(Duration::from_secs(20), || async {
            self.requests(path).len() >= n
        })
        .await;
        let seen = self.requests(path);
        assert!(arrived, "{path} saw {} of {n} requests", seen.len());
        seen
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let reply = {
        let mut s = script.lock().unwrap();
        s.requests.push(Recorded {
            method,
            path: path.clone(),
            headers,
            body,
            at: Instant::now(),
        });
        let scripted = s.queued.get_mut(&path).and_then(VecDeque::pop_front);
        scripted
            .or_else(|| s.fallback.get(&path).cloned())
            .unwrap_or_else(|| Reply::status(200))
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        resp.headers_mut().insert(name, value.parse().unwrap());
    }
    resp
}

/// Standard Webhooks verification written from the specification, independently of the
/// server's signer: HMAC-SHA256 over `id.timestamp.body` with the base64-decoded secret.
pub fn signature_is_valid(secret: &str, request: &Recorded) -> bool {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use hmac::{KeyInit, Mac};
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
        .unwrap();
    let id = request.header("webhook-id");
    let timestamp = request.header("webhook-timestamp");
    let mut signed = Vec::new();
    signed.extend_from_slice(format!("{id}.{timestamp}.").as_bytes());
    signed.extend_from_slice(&request.body);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(&signed);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    request
        .header("webhook-signature")
        .split(' ')
        .any(|entry| entry == format!("v1,{expected}"))
}
