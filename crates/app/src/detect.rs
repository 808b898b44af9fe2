//! Detection in the platform: builds the engine from the config and its rule files,
//! restores the analysts' learns and mutes and the city's own indicators from the store,
//! and carries out the API's detection operations (learn, mute, lift, add indicators).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use detect::{Diagnostic, Engine, Indicator, RuleSet};
use model::Timestamp;
use parking_lot::RwLock;
use serde_json::Value;
use store::{LocalIndicator, Store, Suppression};

use crate::config::Config;

/// The most rule files one directory may hold, and the largest one.
const MAX_RULE_FILES: usize = 256;
const MAX_RULE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The built-in rules, then every `*.toml` of `[detect] rules_dir` in name order. Files
/// that cannot be read and entries that do not validate are reported, never fatal.
pub fn load_rules(config: &Config) -> (RuleSet, Vec<Diagnostic>) {
    let (mut rules, mut diagnostics) = RuleSet::defaults();
    let Some(dir) = &config.detect.rules_dir else {
        return (rules, diagnostics);
    };
    let dir = Path::new(dir);
    let diag = |file: &Path, message: String| Diagnostic {
        file: file.display().to_string(),
        entry: String::new(),
        message,
    };
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(err) => {
            diagnostics.push(diag(dir, format!("cannot read the rules directory: {err}")));
            return (rules, diagnostics);
        }
    };
    files.sort();
    if files.len() > MAX_RULE_FILES {
        diagnostics.push(diag(
            dir,
            format!(
                "{} rule files; only the first {MAX_RULE_FILES} are loaded",
                files.len()
            ),
        ));
        files.truncate(MAX_RULE_FILES);
    }
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::metadata(&file) {
            Ok(m) if m.len() > MAX_RULE_FILE_BYTES => {
                diagnostics.push(diag(
                    &file,
                    format!("larger than {MAX_RULE_FILE_BYTES} bytes; skipped"),
                ));
                continue;
            }
            Err(err) => {
                diagnostics.push(diag(&file, format!("cannot read: {err}")));
                continue;
            }
            Ok(_) => {}
        }
        match std::fs::read_to_string(&file) {
            Ok(text) => diagnostics.extend(rules.load(&name, &text)),
            Err(err) => diagnostics.push(diag(&file, format!("cannot read: {err}"))),
        }
    }
    (rules, diagnostics)
}

/// The engine the config describes, and every problem with its rules and zone plan.
pub fn build_engine(config: &Config) -> (Engine, Vec<Diagnostic>) {
    let (rules, mut diagnostics) = load_rules(config);
    let engine = Engine::with_rules(config.detect.clone(), rules);
    diagnostics.extend(engine.diagnostics().iter().cloned());
    (engine, diagnostics)
}

/// Brings back what analysts decided and what the city wrote, before any event arrives.
pub async fn restore(engine: &mut Engine, store: &dyn Store) -> anyhow::Result<()> {
    for s in store
        .list_suppressions()
        .await
        .context("failed to load the learns and mutes")?
    {
        match s.kind.as_str() {
            "learned" => engine.learn(&s.rule, &s.key),
            _ => engine.mute(&s.rule, &s.key, s.until),
        }
    }
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_indicators(after.as_deref(), 10_000)
            .await
            .context("failed to load the city's indicators")?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let indicators = page
            .into_iter()
            .map(|i| Indicator {
                id: i.id,
                pattern: i.pattern,
                name: i.name,
                source: "local".to_owned(),
                valid_until: i.valid_until,
            })
            .collect();
        for refused in engine.upsert_indicators(indicators) {
            tracing::warn!(indicator = %refused.id, error = %refused.message, "stored indicator refused");
        }
    }
    Ok(())
}

/// The store key of a detection engine's learned state: `all` for the one engine of a
/// single process, `partition/<N>/<shard>` for a shard of `N` bus partitions (another
/// partition count maps devices to other shards, so its saves are not reused).
pub fn learned_key(partitions: Option<u32>, shard: &str) -> String {
    match partitions {
        None => "all".to_owned(),
        Some(n) => format!("partition/{n}/{shard}"),
    }
}

/// Loads the last saved learned state under `key` into `engine` (register its devices
/// first), for the devices `keep` accepts. A missing save starts learning from nothing; one
/// that cannot be read or is of another format version is logged and does the same: this
/// never fails the caller.
pub async fn load_learned(
    engine: &mut Engine,
    store: &dyn Store,
    key: &str,
    keep: impl Fn(&model::DeviceId) -> bool,
) -> Option<detect::Restored> {
    let saved = match store.get_learned(key).await {
        Ok(Some(saved)) => saved,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(key, error = %e, "failed to read the saved learned state; learning starts over");
            return None;
        }
    };
    let started = std::time::Instant::now();
    let bytes = saved.body.len();
    let parsed =
        tokio::task::spawn_blocking(move || serde_json::from_str::<detect::Learned>(&saved.body))
            .await;
    let learned = match parsed {
        Ok(Ok(learned)) => learned,
        Ok(Err(e)) => {
            tracing::warn!(key, error = %e, "the saved learned state is not readable; learning starts over");
            return None;
        }
        Err(e) => {
            tracing::warn!(key, error = %e, "failed to read the saved learned state");
            return None;
        }
    };
    match engine.restore_learned(&learned, keep) {
        Ok(restored) => {
            tracing::info!(
                key,
                bytes,
                devices = restored.devices,
                skipped = restored.skipped,
                flow_models = restored.flow_models,
                as_of = %learned.as_of(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "learned state loaded"
            );
            Some(restored)
        }
        Err(e) => {
            tracing::warn!(key, error = %e, "the saved learned state is not loaded; learning starts over");
            None
        }
    }
}

/// Saves what detection engines learned every `[detect] learned_save_s` (0: never), one
/// save at a time (a slow store delays the next rather than piling them up), and once more
/// when the worker stops.
pub(crate) struct LearnedSaver {
    store: Arc<dyn Store>,
    every: std::time::Duration,
    next: std::time::Instant,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl LearnedSaver {
    pub(crate) fn new(store: Arc<dyn Store>, every_s: u64) -> LearnedSaver {
        let every = std::time::Duration::from_secs(every_s);
        LearnedSaver {
            store,
            every,
            next: std::time::Instant::now() + every,
            running: None,
        }
    }

    /// Called now and then: when a save is due and none is running, takes the states
    /// (`take`, on the caller's task) and saves them in the background.
    pub(crate) fn tick(&mut self, take: impl FnOnce() -> Vec<(String, detect::Learned)>) {
        let now = std::time::Instant::now();
        if self.every.is_zero()
            || now < self.next
            || self.running.as_ref().is_some_and(|t| !t.is_finished())
        {
            return;
        }
        self.next = now + self.every;
        let states = take();
        let store = self.store.clone();
        self.running = Some(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let shards = states.len();
            match save_learned(store.as_ref(), states).await {
                Ok(bytes) => tracing::debug!(
                    shards,
                    bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "learned state saved"
                ),
                Err(e) => tracing::warn!(error = %e, "failed to save the learned state"),
            }
        }));
    }

    /// The worker stops or leaves: waits for a running save, then saves once more.
    pub(crate) async fn finish(mut self, take: impl FnOnce() -> Vec<(String, detect::Learned)>) {
        if let Some(task) = self.running.take() {
            let _ = task.await;
        }
        if self.every.is_zero() {
            return;
        }
        let states = take();
        if states.is_empty() {
            return;
        }
        if let Err(e) = save_learned(self.store.as_ref(), states).await {
            tracing::warn!(error = %e, "failed to save the learned state on stopping");
        }
    }
}

/// Saves learned states (serialised off the async threads), one store write each; returns
/// the bytes written.
pub async fn save_learned(
    store: &dyn Store,
    states: Vec<(String, detect::Learned)>,
) -> anyhow::Result<usize> {
    let encoded = tokio::task::spawn_blocking(move || {
        states
            .into_iter()
            .map(|(key, learned)| Ok((key, serde_json::to_string(&learned)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()
    })
    .await
    .context("the learned state encoder stopped")?
    .context("failed to encode the learned state")?;
    let mut bytes = 0;
    for (shard, body) in encoded {
        bytes += body.len();
        store
            .put_learned(&store::LearnedState {
                shard,
                taken_at: model::Timestamp::now(),
                body,
            })
            .await
            .context("failed to save the learned state")?;
    }
    Ok(bytes)
}

/// A STIX 2.1 `indicator` object as the engine's [`Indicator`]; the reason when it is not one
/// the engine can match.
pub fn indicator_from_stix(object: &Value, source: &str) -> Result<Indicator, String> {
    let issues = stix::object::validate_document(object);
    if let Some(issue) = issues.first() {
        return Err(format!("not valid STIX 2.1: {issue}"));
    }
    let field = |name: &str| object.get(name).and_then(Value::as_str);
    if field("type") != Some("indicator") {
        return Err(format!(
            "type {:?} is not an indicator",
            field("type").unwrap_or("")
        ));
    }
    let id = field("id").ok_or("missing id")?.to_owned();
    let pattern_type = field("pattern_type").unwrap_or("stix");
    if pattern_type != "stix" {
        return Err(format!(
            "pattern_type {pattern_type:?} is not matched (only stix patterns are)"
        ));
    }
    let pattern = field("pattern").ok_or("missing pattern")?.to_owned();
    stix::matcher::CompiledPattern::new(&pattern).map_err(|e| format!("pattern: {e}"))?;
    if object.get("revoked").and_then(Value::as_bool) == Some(true) {
        return Err("the indicator is revoked".to_owned());
    }
    let valid_until = match field("valid_until") {
        Some(text) => Some(
            stix::time::Timestamp::parse(text)
                .and_then(|t| t.micros())
                .map(|us| Timestamp::from_millis(us / 1000))
                .ok_or_else(|| format!("valid_until {text:?} is not a STIX timestamp"))?,
        ),
        None => None,
    };
    Ok(Indicator {
        name: field("name").unwrap_or(&id).chars().take(200).collect(),
        id,
        pattern,
        source: source.to_owned(),
        valid_until,
    })
}

/// The objects of a request body: a bundle's `objects`, an array, or one object.
pub fn stix_objects(body: &Value) -> Result<Vec<Value>, String> {
    match body {
        Value::Array(items) => Ok(items.clone()),
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("bundle") => map
            .get("objects")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| "the bundle has no objects".to_owned()),
        Value::Object(_) => Ok(vec![body.clone()]),
        _ => Err("expected a STIX bundle, an indicator object or an array of them".to_owned()),
    }
}

/// The most indicators one request may add.
pub const MAX_INDICATORS_PER_REQUEST: usize = 100_000;

/// Validates and stores indicators written by the city; returns those to load into the
/// engine and the report for the caller.
pub async fn add_indicators(
    store: &dyn Store,
    body: &Value,
    actor: &str,
    now: Timestamp,
) -> Result<(Vec<Indicator>, web::detect::IndicatorReport), web::PlatformError> {
    let objects = stix_objects(body).map_err(web::PlatformError::invalid)?;
    if objects.len() > MAX_INDICATORS_PER_REQUEST {
        return Err(web::PlatformError::invalid(format!(
            "{} objects; at most {MAX_INDICATORS_PER_REQUEST} per request",
            objects.len()
        )));
    }
    let mut report = web::detect::IndicatorReport {
        accepted: 0,
        refused: Vec::new(),
    };
    let mut accepted = Vec::new();
    let mut stored = Vec::new();
    for (i, object) in objects.into_iter().enumerate() {
        let label = object
            .get("id")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(100).collect())
            .unwrap_or_else(|| format!("objects[{i}]"));
        match indicator_from_stix(&object, "local") {
            Ok(indicator) => {
                stored.push(LocalIndicator {
                    id: indicator.id.clone(),
                    name: indicator.name.clone(),
                    pattern: indicator.pattern.clone(),
                    valid_until: indicator.valid_until,
                    object,
                    actor: actor.to_owned(),
                    created_at: now,
                });
                accepted.push(indicator);
            }
            Err(message) => report
                .refused
                .push(web::detect::IndicatorRefusal { id: label, message }),
        }
    }
    for chunk in stored.chunks(5_000) {
        store.put_indicators(chunk).await?;
    }
    report.accepted = accepted.len() as u64;
    Ok((accepted, report))
}

/// A learn or mute decided on an alert.
pub fn suppression_for(
    alert: &model::Alert,
    kind: &str,
    until: Option<Timestamp>,
    actor: &str,
    reason: &str,
    now: Timestamp,
) -> Suppression {
    Suppression {
        rule: alert.rule.clone(),
        key: alert.key.clone(),
        kind: kind.to_owned(),
        until,
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        alert_id: Some(alert.id.0.clone()),
        created_at: now,
    }
}

/// The engine's status as the detection worker last published it.
pub type SharedStatus = Arc<RwLock<web::detect::DetectStatus>>;

/// The status of an engine (called by the worker, which owns it).
pub fn status_of(engine: &Engine, diagnostics: &[Diagnostic]) -> web::detect::DetectStatus {
    let stats = engine.stats();
    let rules = engine.rules();
    web::detect::DetectStatus {
        builtin_rules: detect::BUILTIN_RULES
            .iter()
            .map(|r| (*r).to_owned())
            .collect(),
        reading_rules: rules.readings.len() as u64,
        totals_rules: rules.totals.len() as u64,
        threshold_rules: rules.thresholds.len() as u64,
        disabled_rules: engine.config().disabled_rules.clone(),
        diagnostics: diagnostics.iter().map(|d| d.to_string()).collect(),
        zones: engine.config().zones.len() as u64,
        conduits: engine.config().conduits.len() as u64,
        indicators: stats.indicators as u64,
        events_processed: stats.events,
        alerts_suppressed: stats.alerts_suppressed,
    }
}
