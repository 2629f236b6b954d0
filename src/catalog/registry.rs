//! The catalog: every intent this server can run, with the engine (mode) behind it, its
//! compiled input schema and its effective run policy.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::future::BoxFuture;
use serde_json::Value;

use serde::{Deserialize, Serialize};

use super::{
    routing::RoutingConfig,
    tool::{Effect, Tool},
};
use crate::model::{FieldError, Mode};

/// Why an intent cannot join the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("intent {intent}: invalid input schema: {reason}")]
    InvalidSchema { intent: String, reason: String },
    #[error("intent {intent} is registered twice for mode {}", mode.as_str())]
    Duplicate { intent: String, mode: Mode },
}

/// Configuration's say over an intent's run policy (`[tools.overrides."<intent>"]`, a flow's
/// own keys): unset members keep the tool's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntentOverride {
    #[serde(with = "crate::duration::human_option")]
    pub timeout: Option<Duration>,
    pub max_attempts: Option<i32>,
    pub priority: Option<i16>,
    /// What MCP clients are told (`destructiveHint`); unset: the tool's own answer.
    pub destructive: Option<bool>,
    /// Jobs sharing a key run at most `limit` at a time, across instances.
    pub concurrency: Option<super::concurrency::Concurrency>,
}

/// The documented order of engines: how `served_by` lists them.
const ENGINE_ORDER: [Mode; 3] = [Mode::Agent, Mode::Flow, Mode::Mcp];

/// One way to run an intent: a tool and the engine it belongs to.
pub struct Intent {
    pub mode: Mode,
    pub tool: Arc<dyn Tool>,
    validator: jsonschema::Validator,
    pub timeout: Duration,
    pub max_attempts: i32,
    pub priority: i16,
    /// May destroy something (the tool's answer or configuration's).
    pub destructive: bool,
    /// Configured concurrency key (else the tool's own, see [`Intent::concurrency_for`]).
    pub concurrency: Option<super::concurrency::Concurrency>,
}

impl std::fmt::Debug for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intent")
            .field("name", &self.name())
            .field("mode", &self.mode)
            .finish()
    }
}

impl Intent {
    pub fn new(
        mode: Mode,
        tool: Arc<dyn Tool>,
        overrides: Option<&IntentOverride>,
    ) -> Result<Self, CatalogError> {
        let spec = tool.spec();
        let validator = jsonschema::validator_for(&spec.input_schema).map_err(|e| {
            CatalogError::InvalidSchema {
                intent: spec.name.clone(),
                reason: e.to_string(),
            }
        })?;
        let o = overrides.cloned().unwrap_or_default();
        Ok(Self {
            mode,
            timeout: o.timeout.unwrap_or(spec.timeout),
            max_attempts: o.max_attempts.unwrap_or(spec.max_attempts),
            priority: o.priority.unwrap_or(spec.priority),
            destructive: o.destructive.unwrap_or(spec.destructive),
            concurrency: o.concurrency,
            validator,
            tool,
        })
    }

    pub fn name(&self) -> &str {
        &self.tool.spec().name
    }

    pub fn effect(&self) -> Effect {
        self.tool.spec().effect
    }

    /// The concurrency key of a job with these inputs: the configured one, else the tool's
    /// (SSH: the host's `max_sessions`).
    pub fn concurrency_for(&self, inputs: &Value) -> Option<super::concurrency::ConcurrencyKey> {
        match &self.concurrency {
            Some(c) => Some(c.key_for(self.name(), inputs)),
            None => self.tool.concurrency_of(inputs),
        }
    }

    /// The effect of one call (see [`Tool::effect_of`]).
    pub fn effect_of(&self, inputs: &Value) -> Effect {
        self.tool.effect_of(inputs)
    }

    /// Schema, then the tool's own checks. Every error names its field as `inputs.<path>`.
    pub fn validate(&self, inputs: &Value) -> Result<(), Vec<FieldError>> {
        let mut errors: Vec<FieldError> = self
            .validator
            .iter_errors(inputs)
            .flat_map(|e| schema_error_fields(&e, "inputs"))
            .collect();
        if errors.is_empty()
            && let Err(mut more) = self.tool.check_inputs(inputs)
        {
            errors.append(&mut more);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            errors.dedup();
            Err(errors)
        }
    }
}

/// `root` + JSON Pointer: `inputs` + `/tags/0` → `inputs.tags[0]` (`""` + `/mode` → `mode`).
fn field_path(root: &str, pointer: &str) -> String {
    let mut out = String::from(root);
    for raw in pointer.split('/').skip(1) {
        out = join(&out, &raw.replace("~1", "/").replace("~0", "~"));
    }
    out
}

/// `base` and one more segment: `a` + `0` → `a[0]`, `a` + `b` → `a.b`, `""` + `b` → `b`.
fn join(base: &str, seg: &str) -> String {
    if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
        format!("{base}[{seg}]")
    } else if base.is_empty() {
        seg.to_owned()
    } else {
        format!("{base}.{seg}")
    }
}

/// The fields a JSON Schema validation error is about, under `root` (one error per field).
pub fn schema_error_fields(e: &jsonschema::ValidationError<'_>, root: &str) -> Vec<FieldError> {
    use jsonschema::error::ValidationErrorKind as K;
    let base = field_path(root, e.instance_path().as_str());
    match e.kind() {
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![FieldError::new(join(&base, name), "is required")]
        }
        K::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|p| FieldError::new(join(&base, p), "is not an allowed property"))
            .collect(),
        _ => vec![FieldError::new(base, e.masked().to_string())],
    }
}

/// Why an intent cannot be resolved to one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    Unknown {
        suggestions: Vec<String>,
    },
    ModeNotServed {
        requested: Mode,
        served_by: Vec<Mode>,
    },
    Ambiguous {
        served_by: Vec<Mode>,
    },
}

/// An immutable snapshot of what can run; replaced whole when engines change (MCP tools come
/// and go), so a request sees one consistent view.
#[derive(Default, Debug)]
pub struct Catalog {
    by_name: BTreeMap<String, Vec<Arc<Intent>>>,
    routing: Arc<RoutingConfig>,
}

impl Catalog {
    pub fn with_routing(routing: Arc<RoutingConfig>) -> Self {
        Self {
            by_name: BTreeMap::new(),
            routing,
        }
    }

    pub fn add(&mut self, intent: Intent) -> Result<(), CatalogError> {
        self.add_shared(Arc::new(intent))
    }

    pub fn add_shared(&mut self, intent: Arc<Intent>) -> Result<(), CatalogError> {
        let entries = self.by_name.entry(intent.name().to_owned()).or_default();
        if entries.iter().any(|e| e.mode == intent.mode) {
            return Err(CatalogError::Duplicate {
                intent: intent.name().to_owned(),
                mode: intent.mode,
            });
        }
        entries.push(intent);
        Ok(())
    }

    pub fn get(&self, name: &str, mode: Mode) -> Option<&Arc<Intent>> {
        self.by_name.get(name)?.iter().find(|i| i.mode == mode)
    }

    /// All intents, sorted by name, then mode.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Intent>> {
        self.by_name.values().flatten()
    }

    /// Picks the intent that runs `name` in `requested` mode. For `auto`, in this order:
    /// 1. the explicit routes, in config order: the first whose target is served;
    /// 2. the one engine that serves `name`;
    /// 3. with several, the first engine of `routing.prefer` that serves it; else ambiguous.
    ///
    /// An explicit mode uses the routes of that mode, then `name` on that engine.
    pub fn resolve(&self, name: &str, requested: Mode) -> Result<Arc<Intent>, ResolveError> {
        for (mode, target) in self.routing.targets(name) {
            if (requested == Mode::Auto || requested == mode)
                && let Some(intent) = self.get(&target, mode)
            {
                return Ok(intent.clone());
            }
        }
        let Some(entries) = self.by_name.get(name) else {
            return Err(ResolveError::Unknown {
                suggestions: self.suggestions(name),
            });
        };
        let served_by = || {
            ENGINE_ORDER
                .into_iter()
                .filter(|m| entries.iter().any(|i| i.mode == *m))
                .collect::<Vec<_>>()
        };
        match requested {
            Mode::Auto => match entries.as_slice() {
                [only] => Ok(only.clone()),
                _ => self
                    .routing
                    .prefer
                    .iter()
                    .find_map(|m| entries.iter().find(|i| i.mode == *m))
                    .cloned()
                    .ok_or_else(|| ResolveError::Ambiguous {
                        served_by: served_by(),
                    }),
            },
            mode => entries
                .iter()
                .find(|i| i.mode == mode)
                .cloned()
                .ok_or_else(|| ResolveError::ModeNotServed {
                    requested: mode,
                    served_by: served_by(),
                }),
        }
    }

    /// Close matches for an unknown name: similar spelling, or the same namespace.
    pub fn suggestions(&self, name: &str) -> Vec<String> {
        let wanted = name.to_lowercase();
        let namespace = wanted.split('.').next().unwrap_or_default();
        let mut scored: Vec<(f64, &String)> = self
            .by_name
            .keys()
            .filter_map(|known| {
                let score = strsim::jaro_winkler(&wanted, &known.to_lowercase());
                let same_namespace = !namespace.is_empty()
                    && known.split('.').next() == Some(namespace)
                    && wanted.contains('.');
                (score >= 0.8 || same_namespace).then_some((score, known))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.into_iter().take(5).map(|(_, n)| n.clone()).collect()
    }
}

/// An engine that starts on first use (an MCP server configured `start = "lazy"`): until then
/// its intents are unknown, so a request that names one starts it and waits for its intents.
pub trait LazySource: Send + Sync {
    /// Whether this source, not started yet, would serve `intent` once started.
    fn would_serve(&self, intent: &str) -> bool;
    /// Starts it; resolves once its intents are published (or starting failed).
    fn start(&self) -> BoxFuture<'static, ()>;
}

/// The live catalog, assembled from named sources (`local`, `flows`, one per MCP server…).
/// Readers take a cheap snapshot; a source that changes (an MCP server's tool list) replaces
/// its own intents and the catalog is rebuilt whole.
pub struct Registry {
    sources: std::sync::Mutex<BTreeMap<String, Vec<Arc<Intent>>>>,
    current: RwLock<Arc<Catalog>>,
    routing: Arc<RoutingConfig>,
    lazy: RwLock<Vec<Arc<dyn LazySource>>>,
    /// Counts catalog rebuilds, for those who announce changes (MCP's `list_changed`).
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            sources: Default::default(),
            current: Default::default(),
            routing: Default::default(),
            lazy: Default::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("current", &self.current)
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn with_routing(catalog: Catalog, routing: RoutingConfig) -> Self {
        let routing = Arc::new(routing);
        let registry = Self {
            current: RwLock::new(Arc::new(Catalog::with_routing(routing.clone()))),
            routing,
            ..Self::default()
        };
        registry
            .set_source("local", catalog.iter().cloned().collect())
            .expect("a valid catalog stays valid");
        registry
    }

    pub fn snapshot(&self) -> Arc<Catalog> {
        self.current.read().expect("catalog lock poisoned").clone()
    }

    /// Replaces one source's intents. Refused (and nothing changes) if an intent would clash
    /// with another source's intent of the same name and mode.
    pub fn set_source(&self, source: &str, intents: Vec<Arc<Intent>>) -> Result<(), CatalogError> {
        let mut sources = self.sources.lock().expect("catalog sources lock poisoned");
        let mut next = sources.clone();
        next.insert(source.to_owned(), intents);
        let mut catalog = Catalog::with_routing(self.routing.clone());
        for intent in next.values().flatten() {
            catalog.add_shared(intent.clone())?;
        }
        *sources = next;
        *self.current.write().expect("catalog lock poisoned") = Arc::new(catalog);
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Changes whenever the catalog is rebuilt.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Starts every lazy source (a client listing all tools must see theirs too); resolves
    /// when each has published its intents or failed to start.
    pub async fn start_lazy_sources(&self) {
        let all: Vec<Arc<dyn LazySource>> = self
            .lazy
            .read()
            .expect("lazy sources lock poisoned")
            .clone();
        futures::future::join_all(all.iter().map(|s| s.start())).await;
    }

    pub fn remove_source(&self, source: &str) {
        let _ = self.set_source(source, Vec::new());
        self.sources
            .lock()
            .expect("catalog sources lock poisoned")
            .remove(source);
    }

    pub fn add_lazy_source(&self, source: Arc<dyn LazySource>) {
        self.lazy
            .write()
            .expect("lazy sources lock poisoned")
            .push(source);
    }

    /// The intent served in this mode, starting a lazy source that would serve it first (a
    /// queued job may name a server this instance has not started yet).
    pub async fn get(&self, name: &str, mode: Mode) -> Option<Arc<Intent>> {
        if let Some(found) = self.snapshot().get(name, mode) {
            return Some(found.clone());
        }
        let waking: Vec<Arc<dyn LazySource>> = self
            .lazy
            .read()
            .expect("lazy sources lock poisoned")
            .iter()
            .filter(|s| s.would_serve(name))
            .cloned()
            .collect();
        futures::future::join_all(waking.iter().map(|s| s.start())).await;
        self.snapshot().get(name, mode).cloned()
    }

    /// [`Catalog::resolve`], after starting the lazy sources that would serve the request
    /// (the intent itself or a route target of it), so they take part in the choice.
    pub async fn resolve(&self, name: &str, requested: Mode) -> Result<Arc<Intent>, ResolveError> {
        let waking: Vec<Arc<dyn LazySource>> = {
            let lazy = self.lazy.read().expect("lazy sources lock poisoned");
            if lazy.is_empty() {
                Vec::new()
            } else {
                let mut names = vec![name.to_owned()];
                names.extend(self.routing.targets(name).map(|(_, target)| target));
                lazy.iter()
                    .filter(|s| names.iter().any(|n| s.would_serve(n)))
                    .cloned()
                    .collect()
            }
        };
        futures::future::join_all(waking.iter().map(|s| s.start())).await;
        self.snapshot().resolve(name, requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_intent(name: &str, mode: Mode) -> Arc<Intent> {
        struct Named(crate::catalog::ToolSpec);
        impl Tool for Named {
            fn spec(&self) -> &crate::catalog::ToolSpec {
                &self.0
            }
            fn call<'a>(
                &'a self,
                _: &'a crate::tools::ToolContext,
                _: &'a Value,
            ) -> futures::future::BoxFuture<'a, crate::tools::ToolResult> {
                unreachable!()
            }
        }
        let spec = crate::catalog::ToolSpec {
            name: name.into(),
            description: String::new(),
            input_schema: serde_json::json!({"type": "object"}),
            effect: Effect::Read,
            timeout: Duration::from_secs(1),
            max_attempts: 1,
            priority: 0,
            public: false,
            destructive: false,
            open_world: false,
            output_schema: None,
        };
        Arc::new(Intent::new(mode, Arc::new(Named(spec)), None).unwrap())
    }

    #[test]
    fn sources_are_replaced_whole_and_clashes_are_refused() {
        let registry = Registry::default();
        registry
            .set_source("a", vec![echo_intent("x.one", Mode::Agent)])
            .unwrap();
        registry
            .set_source("b", vec![echo_intent("x.two", Mode::Mcp)])
            .unwrap();
        assert_eq!(registry.snapshot().iter().count(), 2);
        registry
            .set_source("b", vec![echo_intent("x.three", Mode::Mcp)])
            .unwrap();
        let names: Vec<String> = registry
            .snapshot()
            .iter()
            .map(|i| i.name().to_owned())
            .collect();
        assert_eq!(names, ["x.one", "x.three"]);
        assert!(
            registry
                .set_source("c", vec![echo_intent("x.one", Mode::Agent)])
                .is_err()
        );
        assert_eq!(registry.snapshot().iter().count(), 2, "unchanged");
        registry.remove_source("b");
        assert_eq!(registry.snapshot().iter().count(), 1);
    }

    #[test]
    fn auto_picks_the_only_engine_and_refuses_to_guess_between_several() {
        let mut c = Catalog::default();
        c.add_shared(echo_intent("a.b", Mode::Agent)).unwrap();
        c.add_shared(echo_intent("c.d", Mode::Agent)).unwrap();
        c.add_shared(echo_intent("c.d", Mode::Flow)).unwrap();
        assert_eq!(c.resolve("a.b", Mode::Auto).unwrap().mode, Mode::Agent);
        assert_eq!(
            c.resolve("c.d", Mode::Auto).unwrap_err(),
            ResolveError::Ambiguous {
                served_by: vec![Mode::Agent, Mode::Flow]
            }
        );
        assert_eq!(c.resolve("c.d", Mode::Flow).unwrap().mode, Mode::Flow);
        assert!(matches!(
            c.resolve("a.b", Mode::Mcp),
            Err(ResolveError::ModeNotServed { .. })
        ));
        assert!(
            matches!(c.resolve("a.bb", Mode::Auto), Err(ResolveError::Unknown { suggestions }) if suggestions == ["a.b"])
        );
    }

    #[test]
    fn auto_takes_routes_then_the_only_engine_then_the_preference() {
        use crate::catalog::routing::Route;
        let routing = RoutingConfig {
            routes: vec![
                Route {
                    intent: "c.*".into(),
                    mode: Mode::Flow,
                    target: None,
                },
                Route {
                    intent: "friendly.*".into(),
                    mode: Mode::Mcp,
                    target: Some("mcp.s.*".into()),
                },
            ],
            prefer: vec![Mode::Mcp, Mode::Agent],
        };
        let mut c = Catalog::with_routing(Arc::new(routing));
        for (name, mode) in [
            ("a.b", Mode::Agent),
            ("c.d", Mode::Agent),
            ("c.d", Mode::Flow),
            ("c.e", Mode::Agent),
            ("e.f", Mode::Agent),
            ("e.f", Mode::Mcp),
            ("mcp.s.x", Mode::Mcp),
        ] {
            c.add_shared(echo_intent(name, mode)).unwrap();
        }
        for (name, requested, expected, why) in [
            ("c.d", Mode::Auto, Mode::Flow, "a route"),
            ("c.d", Mode::Agent, Mode::Agent, "an explicit mode"),
            (
                "c.e",
                Mode::Auto,
                Mode::Agent,
                "a route whose target is not served",
            ),
            ("e.f", Mode::Auto, Mode::Mcp, "the preference"),
        ] {
            assert_eq!(c.resolve(name, requested).unwrap().mode, expected, "{why}");
        }
        assert_eq!(c.resolve("a.b", Mode::Auto).unwrap().mode, Mode::Agent);
        assert_eq!(
            c.resolve("friendly.x", Mode::Auto).unwrap().name(),
            "mcp.s.x"
        );
        assert_eq!(
            c.resolve("friendly.x", Mode::Mcp).unwrap().name(),
            "mcp.s.x"
        );
        assert!(matches!(
            c.resolve("friendly.y", Mode::Auto),
            Err(ResolveError::Unknown { .. })
        ));
    }

    #[test]
    fn ambiguity_lists_engines_in_the_documented_order() {
        let mut c = Catalog::default();
        for mode in [Mode::Mcp, Mode::Flow, Mode::Agent] {
            c.add_shared(echo_intent("x.y", mode)).unwrap();
        }
        assert_eq!(
            c.resolve("x.y", Mode::Auto).unwrap_err(),
            ResolveError::Ambiguous {
                served_by: vec![Mode::Agent, Mode::Flow, Mode::Mcp]
            }
        );
    }

    /// Publishes `mcp.lazy.tool` when started.
    struct LazyEngine(std::sync::Weak<Registry>, std::sync::atomic::AtomicBool);

    impl LazySource for LazyEngine {
        fn would_serve(&self, intent: &str) -> bool {
            !self.1.load(std::sync::atomic::Ordering::SeqCst) && intent.starts_with("mcp.lazy.")
        }

        fn start(&self) -> BoxFuture<'static, ()> {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            let registry = self.0.upgrade().unwrap();
            Box::pin(async move {
                registry
                    .set_source("mcp.lazy", vec![echo_intent("mcp.lazy.tool", Mode::Mcp)])
                    .unwrap();
            })
        }
    }

    #[tokio::test]
    async fn a_lazy_source_is_started_by_a_request_for_its_intents() {
        let registry = Arc::new(Registry::default());
        registry.add_lazy_source(Arc::new(LazyEngine(
            Arc::downgrade(&registry),
            Default::default(),
        )));
        assert!(matches!(
            registry.resolve("other.tool", Mode::Auto).await,
            Err(ResolveError::Unknown { .. })
        ));
        assert!(
            registry
                .snapshot()
                .get("mcp.lazy.tool", Mode::Mcp)
                .is_none()
        );
        let intent = registry.resolve("mcp.lazy.tool", Mode::Auto).await.unwrap();
        assert_eq!(intent.mode, Mode::Mcp);
    }

    #[test]
    fn pointers_become_field_paths() {
        let field_path = |pointer| super::field_path("inputs", pointer);
        assert_eq!(super::field_path("", "/mode"), "mode");
        assert_eq!(field_path(""), "inputs");
        assert_eq!(field_path("/text"), "inputs.text");
        assert_eq!(field_path("/tags/0"), "inputs.tags[0]");
        assert_eq!(field_path("/a~1b/c~0d"), "inputs.a/b.c~d");
    }
}
