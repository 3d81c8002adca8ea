//! mirrord's own verdict on what the MetalMart demo hands mirrord, for the project's tests and `./run doctor`.
//!
//! One JSON request per line on stdin, one JSON answer per line on stdout (the Python side is
//! `demokit/config/verdict.py`). Every verdict comes from mirrord's code (its config crate and jq crate at tag
//! 3.250.0, built from `../shared/mirrord/src-3.250.0`), never from a reading of its docs:
//!
//! - `verify_config {path}`: `mirrord verify-config PATH` (`LayerConfig::resolve` with the file, then `verify`);
//!   answers mirrord's error where it refuses, else its warnings and the split queues as mirrord resolved them.
//! - `verify_up {path, key}`: a `mirrord-up.yaml` read as `mirrord up` 3.250.0 reads it (Tera with `key`, then its
//!   file model, declared below as `mirrord/up/src/config.rs` declares it: every object closed), and each service's
//!   session config assembled as `ServiceConfig::assemble` does (`SplitQueuesConfig::all_wildcard`, the baggage
//!   HTTP filter) and verified.
//! - `up_filter {key}`: the Kafka `jq_filter` `mirrord up --key KEY` gives every service
//!   (`SplitQueuesConfig::all_wildcard`).
//! - `regex {pattern}`: a Kafka `message_filter` with that pattern, verified by mirrord (`fancy_regex`);
//!   `regexes {patterns}` many at once, by the one call that `verify` makes for each (`fancy_regex::Regex::new`).
//! - `matches {filter, records}`: which records a Kafka filter takes. A `jq_filter` runs in mirrord's jq engine
//!   (`mirrord_jaq::evaluate_jq`) on each record's JSON (`topic`, `partition`, `offset`, `timestamp`, `key`,
//!   `payload`, `headers`, as mirrord documents it); a `message_filter` needs every header present and its value
//!   matched by `fancy_regex` (the operator, which applies it, is closed source: this is its documented rule).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{BufRead, Write},
    time::Duration,
};

use mirrord_config::{
    LayerConfig, LayerFileConfig,
    config::{ConfigContext, EnvKey, MirrordConfig},
    feature::{
        env::EnvConfig,
        network::incoming::{IncomingMode, http_filter::HttpFilterConfig},
        split_queues::{QueueFilter, SplitQueuesConfig},
    },
    target::{Target, TargetConfig},
};
use serde::Deserialize;
use serde_json::{Value, json};

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(request) => answer(&runtime, &request),
            Err(error) => json!({"error": format!("not a JSON request: {error}")}),
        };
        writeln!(stdout, "{answer}").expect("stdout");
        stdout.flush().expect("stdout");
    }
}

fn text<'a>(request: &'a Value, field: &str) -> Result<&'a str, String> {
    request.get(field).and_then(Value::as_str).ok_or_else(|| format!("the request needs a string `{field}`"))
}

fn answer(runtime: &tokio::runtime::Runtime, request: &Value) -> Value {
    let result = match request.get("op").and_then(Value::as_str) {
        Some("verify_config") => text(request, "path").map(verify_config),
        Some("verify_up") => {
            text(request, "path").and_then(|path| Ok(verify_up(path, text(request, "key")?)))
        }
        Some("up_filter") => text(request, "key").map(up_filter),
        Some("regex") => text(request, "pattern").map(regex),
        Some("regexes") => request
            .get("patterns")
            .and_then(Value::as_array)
            .ok_or_else(|| "the request needs `patterns`".to_owned())
            .map(|patterns| {
                // The call mirrord's `verify` makes for each message_filter pattern
                // (`SplitQueuesConfig::verify_message_attribute_filter`), without building a whole config per
                // pattern: for fuzzing many at once.
                let verdicts: Vec<Value> = patterns
                    .iter()
                    .map(|p| match p.as_str().map(fancy_regex::Regex::new) {
                        Some(Ok(_)) => json!({"ok": true}),
                        Some(Err(error)) => json!({"ok": false, "error": error.to_string()}),
                        None => Value::Null,
                    })
                    .collect();
                json!({"verdicts": verdicts})
            }),
        Some("matches") => matches(runtime, request),
        other => Err(format!("unknown op {other:?}")),
    };
    result.unwrap_or_else(|error| json!({"error": error}))
}

/// As `mirrord verify-config PATH` runs it (mirrord/cli/src/verify_config.rs at 3.250.0), without the profile
/// step (the demo's configs name no profile; a profile lives in the cluster).
fn verify_config(path: &str) -> Value {
    let mut context =
        ConfigContext::default().empty_target_final(true).override_env(LayerConfig::FILE_PATH_ENV, path);
    let verified = LayerConfig::resolve(&mut context).and_then(|config| {
        config.verify(&mut context)?;
        Ok(config)
    });
    match verified {
        Ok(config) => json!({
            "ok": true,
            "warnings": context.into_warnings(),
            "target": config.target.path.as_ref().map(ToString::to_string),
            "namespace": config.target.namespace,
            "split_queues": serde_json::to_value(config.feature.split_queues.splits()).unwrap_or(Value::Null),
        }),
        Err(error) => json!({"ok": false, "error": error.to_string()}),
    }
}

fn up_filter(key: &str) -> Value {
    let splits = SplitQueuesConfig::all_wildcard(&EnvKey::Provided(key.to_owned()));
    let kafka: Vec<&str> = splits.kafka_jq_filters().map(|(_, jq)| jq).collect();
    json!({"queue_ids": splits.kafka_queues().collect::<Vec<_>>(), "jq_filter": kafka.first()})
}

/// The pattern in a Kafka `message_filter`, through mirrord's own config parsing and `verify` (which compiles it
/// with `fancy_regex`).
fn regex(pattern: &str) -> Value {
    let file = json!({
        "target": {"path": {"deployment": "order-processor"}, "namespace": "metalmart"},
        "operator": true,
        "feature": {"split_queues": {"order-created": {"queue_type": "Kafka",
                                                        "message_filter": {"customer_email": pattern}}}},
    });
    let verified = serde_json::from_value::<LayerFileConfig>(file)
        .map_err(|error| error.to_string())
        .and_then(|file| {
            let mut context = ConfigContext::default();
            let config = file.generate_config(&mut context).map_err(|error| error.to_string())?;
            config.verify(&mut context).map_err(|error| error.to_string())
        });
    match verified {
        Ok(()) => json!({"ok": true}),
        Err(error) => json!({"ok": false, "error": error}),
    }
}

fn matches(runtime: &tokio::runtime::Runtime, request: &Value) -> Result<Value, String> {
    let filter = request.get("filter").ok_or("the request needs a `filter`")?;
    let records = request.get("records").and_then(Value::as_array).ok_or("the request needs `records`")?;
    let mut verdicts = Vec::with_capacity(records.len());
    if let Some(jq) = filter.get("jq_filter").and_then(Value::as_str) {
        mirrord_jaq::compile_jq(jq).map_err(|error| error.to_string())?;
        for record in records {
            let verdict = runtime.block_on(mirrord_jaq::evaluate_jq(jq, record, Duration::from_secs(5)));
            verdicts.push(verdict.map_err(|error| error.to_string())?);
        }
    } else if let Some(headers) = filter.get("message_filter").and_then(Value::as_object) {
        let mut compiled = Vec::new();
        for (name, pattern) in headers {
            let pattern = pattern.as_str().ok_or("a message_filter's patterns are strings")?;
            compiled.push((name, fancy_regex::Regex::new(pattern).map_err(|error| error.to_string())?));
        }
        for record in records {
            let present = record.get("headers").and_then(Value::as_object);
            let mut all = !compiled.is_empty();
            for (name, regex) in &compiled {
                let value = present.and_then(|h| h.get(name.as_str())).and_then(Value::as_str);
                all &= match value {
                    Some(value) => regex.is_match(value).map_err(|error| error.to_string())?,
                    None => false,
                };
            }
            verdicts.push(all);
        }
    } else {
        return Err("the filter needs a `jq_filter` or a `message_filter`".to_owned());
    }
    Ok(json!({"matches": verdicts}))
}

// ---- `mirrord-up.yaml` as mirrord up 3.250.0 reads it (mirrord/up/src/config.rs): its file model -----------------
// That crate needs mirrord's Kubernetes crates, which the fixture does not carry; its model is declared here field
// for field, with mirrord-config's own types for every part it borrows from them.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpConfig {
    #[serde(default)]
    common: CommonConfig,
    services: HashMap<String, ServiceConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommonConfig {
    accept_invalid_certificates: Option<bool>,
    operator: Option<bool>,
    telemetry: Option<bool>,
    #[allow(dead_code)]
    context: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SpecifiedTarget {
    #[serde(default, deserialize_with = "mirrord_config::util::string_or_struct_option")]
    path: Option<Target>,
    namespace: Option<String>,
}

/// `none`, a target mapping, or nothing at all.
enum UpTarget {
    Targetless,
    Specified(SpecifiedTarget),
}

impl Default for UpTarget {
    fn default() -> Self {
        Self::Specified(SpecifiedTarget::default())
    }
}

impl<'de> Deserialize<'de> for UpTarget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Option::<serde_yaml::Value>::deserialize(deserializer)? {
            None => Ok(Self::default()),
            Some(serde_yaml::Value::String(none)) if none == "none" => Ok(Self::Targetless),
            Some(value @ serde_yaml::Value::Mapping(_)) => {
                SpecifiedTarget::deserialize(value).map(Self::Specified).map_err(serde::de::Error::custom)
            }
            Some(_) => Err(serde::de::Error::custom("expected `none`, a target mapping, or nothing at all")),
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum ServiceMode {
    #[default]
    Split,
    Replace,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum RunType {
    #[default]
    Exec,
    Container,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
struct RunConfig {
    #[serde(default)]
    r#type: RunType,
    command: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceConfig {
    #[serde(default)]
    target: UpTarget,
    #[serde(default)]
    env: EnvConfig,
    #[serde(default)]
    default_mode: ServiceMode,
    #[serde(default)]
    http_filter: HttpFilterConfig,
    #[serde(default)]
    ignore_ports: BTreeSet<u16>,
    #[serde(default)]
    #[allow(dead_code)]
    skip: bool,
    #[serde(default)]
    #[allow(dead_code)]
    context: Option<String>,
    run: RunConfig,
}

fn verify_up(path: &str, key: &str) -> Value {
    let content = match std::fs::read_to_string(path) {
        Ok(content) => content,
        Err(error) => return json!({"ok": false, "error": format!("{path}: {error}")}),
    };
    let mut tera = tera::Tera::default();
    let mut context = tera::Context::new();
    context.insert("key", key);
    let parsed = tera
        .add_raw_template("main", &content)
        .and_then(|()| tera.render("main", &context))
        .map_err(|error| format!("failed to template with tera: {error}"))
        .and_then(|rendered| serde_yaml::from_str::<UpConfig>(&rendered).map_err(|error| error.to_string()));
    let up = match parsed {
        Ok(up) => up,
        Err(error) => return json!({"ok": false, "error": error}),
    };
    let key = EnvKey::Provided(key.to_owned());
    let mut services = BTreeMap::new();
    let mut all_ok = true;
    for (name, service) in up.services {
        let verdict = assemble(&up.common, &name, service, &key);
        all_ok &= verdict["ok"] == json!(true);
        services.insert(name, verdict);
    }
    json!({"ok": all_ok, "services": services})
}

/// One service's session config, as `ServiceConfig::assemble` builds it at 3.250.0, then `verify`.
fn assemble(common: &CommonConfig, name: &str, service: ServiceConfig, key: &EnvKey) -> Value {
    let mut context = ConfigContext::default();
    let file = LayerFileConfig {
        accept_invalid_certificates: common.accept_invalid_certificates,
        operator: common.operator,
        telemetry: common.telemetry,
        ..Default::default()
    };
    let mut config = match file.generate_config(&mut context) {
        Ok(config) => config,
        Err(error) => return json!({"ok": false, "error": error.to_string()}),
    };
    config.target = match service.target {
        UpTarget::Targetless => TargetConfig { path: None, namespace: None },
        // mirrord up looks a workload up by the service's name where the path is missing; this check has no cluster.
        UpTarget::Specified(SpecifiedTarget { path: None, .. }) => {
            return json!({"ok": false, "error": format!(
                "{name}: no target path; mirrord up would look a workload named {name} up in the cluster")});
        }
        UpTarget::Specified(SpecifiedTarget { path, namespace }) => TargetConfig { path, namespace },
    };
    config.feature.env = service.env;
    config.feature.network.incoming.mode = IncomingMode::Steal;
    config.feature.split_queues = SplitQueuesConfig::all_wildcard(key);
    if service.default_mode == ServiceMode::Split {
        config.feature.network.incoming.http_filter = if service.http_filter.is_filter_set() {
            service.http_filter
        } else {
            HttpFilterConfig {
                header_filter: Some(format!("baggage: .*mirrord-session={}.*", key.as_str())),
                ..Default::default()
            }
        };
    } else {
        config.feature.copy_target.enabled = true;
        config.feature.copy_target.scale_down = true;
    }
    config.feature.network.incoming.ignore_ports = service.ignore_ports.into_iter().collect();
    config.key = key.clone();
    let kafka: Vec<&str> = config
        .feature
        .split_queues
        .splits()
        .iter()
        .filter_map(|split| match &split.filter {
            QueueFilter::Kafka { jq_filter: Some(jq), .. } => Some(jq.as_str()),
            _ => None,
        })
        .collect();
    let run_type = match service.run.r#type {
        RunType::Exec => "exec",
        RunType::Container => "container",
    };
    match config.verify(&mut context) {
        Ok(()) => json!({
            "ok": true,
            "warnings": context.into_warnings(),
            "target": config.target.path.as_ref().map(ToString::to_string),
            "namespace": config.target.namespace,
            "kafka_jq_filter": kafka.first(),
            "run": {"type": run_type, "command": service.run.command},
        }),
        Err(error) => json!({"ok": false, "error": error.to_string()}),
    }
}
