//! The log record: parsing, validation and normalisation of what producers send, and the JSON
//! a viewer receives. Depends on nothing else of ours (SPEC "The log record").

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Longest `log_type`, in characters (the column is `varchar(32)`).
pub const MAX_LOG_TYPE_CHARS: usize = 32;
/// Longest `source`, in characters (the column is `varchar(64)`).
pub const MAX_SOURCE_CHARS: usize = 64;
/// What a NUL character becomes: PostgreSQL `text` and `jsonb` cannot hold U+0000, so it is
/// stored (and sent) as U+2400 SYMBOL FOR NULL, which keeps it visible.
pub const NUL_REPLACEMENT: char = '\u{2400}';

/// Severity, ordered so that `level >= minimum` filters work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    /// Case-insensitive; `warn` means `warning` (NetRaven sends `INFO`, Python's logging `WARN`).
    pub fn parse(text: &str) -> Option<Level> {
        let level = match text.trim().to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => return None,
        };
        Some(level)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Caps applied while validating (from `config::Settings`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_meta_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1024 * 1024,
            max_meta_depth: 16,
        }
    }
}

/// A validated, normalised record, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    pub timestamp: DateTime<Utc>,
    pub log_type: String,
    pub level: Level,
    pub job_id: i64,
    pub device_id: Option<i64>,
    pub source: Option<String>,
    pub message: String,
    pub meta: Option<Value>,
}

/// A stored record's identity, as ingest acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ack {
    pub job_id: i64,
    pub id: i64,
    pub seq: i64,
}

/// A record as stored: what viewers receive, serialised by [`StoredRecord::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRecord {
    pub id: i64,
    pub seq: i64,
    pub job_id: i64,
    pub device_id: Option<i64>,
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<Utc>,
    pub level: Level,
    pub log_type: String,
    pub source: Option<String>,
    pub message: String,
    pub meta: Option<Value>,
}

impl StoredRecord {
    /// What ingest acknowledges of it.
    pub fn ack(&self) -> Ack {
        Ack {
            job_id: self.job_id,
            id: self.id,
            seq: self.seq,
        }
    }

    /// The record's wire form: one JSON object, as sent on Redis and in each WebSocket frame.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, integers and a `Value` cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// RFC 3339 in UTC with microseconds, the precision PostgreSQL keeps.
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn serialize_timestamp<S: serde::Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(ts))
}

/// One thing wrong with one record of a request: reported in the 422 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Position of the record in the request (0-based; line order for NDJSON).
    pub index: usize,
    /// The field at fault, or `"record"` / `"body"` for the whole thing.
    pub field: String,
    pub reason: String,
}

impl Problem {
    pub fn new(index: usize, field: &str, reason: impl Into<String>) -> Self {
        Problem {
            index,
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// Parses a timestamp in any form NetRaven produces, into UTC truncated to microseconds.
/// Accepts RFC 3339 (`Z`, `+00:00`, other offsets, fractional seconds, `T` or space) and naive
/// ISO 8601 without an offset (Python's `datetime.isoformat()`), which is taken as UTC.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|dt| dt.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|fmt| NaiveDateTime::parse_from_str(text, fmt).ok())
                .map(|naive| naive.and_utc())
        })?;
    truncate_to_micros(parsed)
}

fn truncate_to_micros(ts: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let nanos = ts.nanosecond();
    ts.with_nanosecond(nanos - nanos % 1000)
}

/// Replaces NUL characters (which PostgreSQL cannot store) with [`NUL_REPLACEMENT`].
fn scrub_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', &NUL_REPLACEMENT.to_string())
    } else {
        text
    }
}

fn scrub_nul_in_value(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = scrub_nul(std::mem::take(s)),
        Value::Array(items) => items.iter_mut().for_each(scrub_nul_in_value),
        Value::Object(map) => {
            let keys_with_nul: Vec<String> =
                map.keys().filter(|k| k.contains('\0')).cloned().collect();
            for key in keys_with_nul {
                if let Some(v) = map.remove(&key) {
                    map.insert(scrub_nul(key), v);
                }
            }
            map.values_mut().for_each(scrub_nul_in_value);
        }
        _ => {}
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Reads an id field: an integer in 1..=i64::MAX.
fn id_field(value: &Value) -> Result<i64, &'static str> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(v) if v >= 1 => Ok(v),
            Some(_) => Err("must be a positive integer (1..9223372036854775807)"),
            None if n.is_u64() => Err("must be at most 9223372036854775807"),
            None => Err("must be an integer, not a fraction"),
        },
        _ => Err("must be an integer"),
    }
}

/// Validates and normalises one record of an ingest request. `now` fills a missing timestamp.
/// Every problem is reported, not just the first.
pub fn validate(
    value: Value,
    index: usize,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<NewRecord, Vec<Problem>> {
    let Value::Object(mut map) = value else {
        return Err(vec![Problem::new(index, "record", "must be a JSON object")]);
    };
    let mut problems = Vec::new();
    let mut fail = |field: &str, reason: &str| problems.push(Problem::new(index, field, reason));

    let job_id = match map.get("job_id") {
        None | Some(Value::Null) => {
            fail("job_id", "is required");
            0
        }
        Some(v) => id_field(v).unwrap_or_else(|reason| {
            fail("job_id", reason);
            0
        }),
    };

    let device_id = match map.get("device_id") {
        None | Some(Value::Null) => None,
        Some(v) => id_field(v).map_err(|reason| fail("device_id", reason)).ok(),
    };

    let timestamp = match map.get("timestamp") {
        None | Some(Value::Null) => Some(now),
        Some(Value::String(s)) => {
            let parsed = parse_timestamp(s);
            if parsed.is_none() {
                fail(
                    "timestamp",
                    "must be an ISO 8601 / RFC 3339 date-time such as 2025-04-25T23:00:00Z",
                );
            }
            parsed
        }
        Some(_) => {
            fail("timestamp", "must be a string");
            None
        }
    };

    let log_type = match map.remove("log_type") {
        None | Some(Value::Null) => "session".to_string(),
        Some(Value::String(s)) => {
            let chars = s.chars().count();
            if chars == 0 || chars > MAX_LOG_TYPE_CHARS {
                fail("log_type", "must be 1 to 32 characters");
            }
            scrub_nul(s)
        }
        Some(_) => {
            fail("log_type", "must be a string");
            String::new()
        }
    };

    let level = match map.get("level") {
        None | Some(Value::Null) => Level::Info,
        Some(Value::String(s)) => Level::parse(s).unwrap_or_else(|| {
            fail(
                "level",
                "must be one of debug, info, warning (or warn), error, critical",
            );
            Level::Info
        }),
        Some(_) => {
            fail("level", "must be a string");
            Level::Info
        }
    };

    let source = match map.remove("source") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            if s.chars().count() > MAX_SOURCE_CHARS {
                fail("source", "must be at most 64 characters");
            }
            Some(scrub_nul(s))
        }
        Some(_) => {
            fail("source", "must be a string");
            None
        }
    };

    let message = match map.remove("message") {
        None | Some(Value::Null) => {
            fail("message", "is required");
            String::new()
        }
        Some(Value::String(s)) => {
            if s.len() > limits.max_message_bytes {
                fail(
                    "message",
                    &format!(
                        "is {} bytes, over the limit of {} bytes",
                        s.len(),
                        limits.max_message_bytes
                    ),
                );
            }
            scrub_nul(s)
        }
        Some(_) => {
            fail("message", "must be a string");
            String::new()
        }
    };

    let meta_value = match (map.remove("meta"), map.remove("extra")) {
        (Some(meta), Some(extra)) if !meta.is_null() && !extra.is_null() => {
            fail("meta", "give either meta or its alias extra, not both");
            None
        }
        (Some(meta), _) if !meta.is_null() => Some(("meta", meta)),
        (_, Some(extra)) if !extra.is_null() => Some(("extra", extra)),
        _ => None,
    };
    let meta = match meta_value {
        None => None,
        Some((field, mut v @ Value::Object(_))) => {
            if depth(&v) > limits.max_meta_depth {
                fail(
                    field,
                    &format!("is nested deeper than {} levels", limits.max_meta_depth),
                );
            }
            scrub_nul_in_value(&mut v);
            Some(v)
        }
        Some((field, _)) => {
            fail(field, "must be a JSON object");
            None
        }
    };

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(NewRecord {
        timestamp: timestamp.unwrap_or(now),
        log_type,
        level,
        job_id,
        device_id,
        source,
        message,
        meta,
    })
}

/// Why a whole request body could not be read as records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON (or a line of NDJSON that is not): where, and what the parser said.
    Malformed(Problem),
    /// More records than allowed in one request.
    TooManyRecords { count: usize, max: usize },
    /// Nothing to store.
    Empty,
}

/// Splits a body into JSON values: one object, an array of objects, or NDJSON (one object per
/// line; blank lines and CRLF line ends are allowed). A record with a key given twice is
/// refused (parsers disagree on which one wins), as is anything that is not JSON.
pub fn parse_body(body: &[u8], ndjson: bool, max_records: usize) -> Result<Vec<Value>, BodyError> {
    let mut values = Vec::new();
    let push = |raw: &RawValue, values: &mut Vec<Value>| -> Result<(), BodyError> {
        let index = values.len();
        if index >= max_records {
            return Err(BodyError::TooManyRecords {
                count: index + 1,
                max: max_records,
            });
        }
        // The raw text is valid JSON already: the only error left is a key given twice.
        let Strict(value) = serde_json::from_str(raw.get())
            .map_err(|e| BodyError::Malformed(Problem::new(index, "record", e.to_string())))?;
        values.push(value);
        Ok(())
    };
    if ndjson {
        for (line_no, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let raw: &RawValue = serde_json::from_slice(line).map_err(|e| {
                BodyError::Malformed(Problem::new(
                    values.len(),
                    "body",
                    format!("line {} is not valid JSON: {e}", line_no + 1),
                ))
            })?;
            push(raw, &mut values)?;
        }
    } else {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(BodyError::Empty);
        }
        let malformed = |e: serde_json::Error| {
            BodyError::Malformed(Problem::new(0, "body", format!("is not valid JSON: {e}")))
        };
        let raw: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
        if raw.get().starts_with('[') {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(malformed)?;
            if items.len() > max_records {
                return Err(BodyError::TooManyRecords {
                    count: items.len(),
                    max: max_records,
                });
            }
            for item in items {
                push(item, &mut values)?;
            }
        } else {
            push(raw, &mut values)?;
        }
    }
    if values.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(values)
}

/// A JSON value read in one pass that refuses an object with a key given twice (parsers
/// disagree on which one wins). Builds the same `Value` as `serde_json` would.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "has the key {key:?} twice"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// Validates every record of a request; all or nothing.
pub fn validate_all(
    values: Vec<Value>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Vec<NewRecord>, Vec<Problem>> {
    let mut records = Vec::with_capacity(values.len());
    let mut problems = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        match validate(value, index, limits, now) {
            Ok(record) => records.push(record),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(records)
    } else {
        Err(problems)
    }
}

/// What the router needs to know of a message from Redis, read without copying its text.
/// Unknown fields are skipped; a `control` key marks a forged control frame.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    pub job_id: Option<Value>,
    #[serde(default)]
    pub seq: Option<i64>,
    #[serde(default, borrow)]
    pub level: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub device_id: Option<Value>,
    #[serde(default)]
    pub control: Option<serde::de::IgnoredAny>,
}

/// The routing facts of a live message, or why it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    pub job_id: i64,
    pub seq: Option<i64>,
    pub level: Option<Level>,
    pub device_id: Option<i64>,
}

/// Reads a Redis payload: it must be a JSON object with a valid `job_id` and no `control` key.
pub fn route_info(payload: &[u8]) -> Option<RouteInfo> {
    // serde would also read a JSON array into the struct, field by field: only objects count.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let envelope: Envelope = serde_json::from_slice(payload).ok()?;
    if envelope.control.is_some() {
        return None;
    }
    let job_id = id_field(envelope.job_id.as_ref()?).ok()?;
    let device_id = match envelope.device_id {
        None | Some(Value::Null) => None,
        Some(v) => Some(id_field(&v).ok()?),
    };
    Some(RouteInfo {
        job_id,
        seq: envelope.seq.filter(|s| *s >= 1),
        level: envelope.level.as_deref().and_then(Level::parse),
        device_id,
    })
}

/// A control frame for viewers: a JSON object with a top-level `control` key.
pub fn control_frame(kind: &str, job_id: i64, extra: &[(&str, Value)]) -> String {
    let mut map = Map::new();
    map.insert("control".into(), Value::from(kind));
    map.insert("job_id".into(), Value::from(job_id));
    for (k, v) in extra {
        map.insert((*k).to_string(), v.clone());
    }
    Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_timestamp("2026-01-01T00:00:00Z").unwrap()
    }

    fn ok(v: Value) -> NewRecord {
        validate(v, 0, &Limits::default(), now()).expect("valid record")
    }

    fn problems(v: Value) -> Vec<(String, String)> {
        validate(v, 3, &Limits::default(), now())
            .expect_err("invalid record")
            .into_iter()
            .map(|p| {
                assert_eq!(p.index, 3);
                (p.field, p.reason)
            })
            .collect()
    }

    #[test]
    fn a_minimal_record_gets_the_defaults() {
        let r = ok(json!({"job_id": 7, "message": "hello"}));
        assert_eq!(r.job_id, 7);
        assert_eq!(r.log_type, "session");
        assert_eq!(r.level, Level::Info);
        assert_eq!(r.timestamp, now());
        assert_eq!(r.device_id, None);
        assert_eq!(r.source, None);
        assert_eq!(r.meta, None);
    }

    #[test]
    fn levels_are_case_insensitive_and_warn_means_warning() {
        for (input, want) in [
            ("INFO", Level::Info),
            ("Debug", Level::Debug),
            ("warn", Level::Warning),
            ("WARNING", Level::Warning),
            ("error", Level::Error),
            ("CRITICAL", Level::Critical),
        ] {
            assert_eq!(
                ok(json!({"job_id":1,"message":"m","level":input})).level,
                want
            );
        }
        assert_eq!(Level::Warning.as_str(), "warning");
        assert!(Level::Error > Level::Warning && Level::Debug < Level::Info);
    }

    #[test]
    fn an_unknown_level_is_rejected() {
        let p = problems(json!({"job_id":1,"message":"m","level":"loud"}));
        assert_eq!(p[0].0, "level");
    }

    #[test]
    fn every_listed_timestamp_form_is_accepted_as_utc() {
        let want = parse_timestamp("2025-05-20T12:34:56.123456Z").unwrap();
        for form in [
            "2025-05-20T12:34:56.123456Z",
            "2025-05-20T12:34:56.123456+00:00",
            "2025-05-20T14:34:56.123456+02:00",
            "2025-05-20T12:34:56.123456",
            "2025-05-20 12:34:56.123456",
            "2025-05-20T12:34:56.123456789Z",
        ] {
            assert_eq!(parse_timestamp(form), Some(want), "{form}");
        }
        assert_eq!(
            format_timestamp(&parse_timestamp("2025-04-25T23:00:00Z").unwrap()),
            "2025-04-25T23:00:00.000000Z"
        );
        let p = problems(json!({"job_id":1,"message":"m","timestamp":"yesterday"}));
        assert_eq!(p[0].0, "timestamp");
        let p = problems(json!({"job_id":1,"message":"m","timestamp":12}));
        assert_eq!(p[0], ("timestamp".into(), "must be a string".into()));
    }

    #[test]
    fn job_id_is_required_and_must_be_a_positive_i64() {
        assert_eq!(
            problems(json!({"message":"m"}))[0],
            ("job_id".into(), "is required".into())
        );
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("7"),
            json!(9223372036854775808u64),
            json!(null),
        ] {
            let p = problems(json!({"job_id": bad, "message":"m"}));
            assert_eq!(p[0].0, "job_id", "{bad}");
        }
        assert_eq!(
            ok(json!({"job_id": i64::MAX, "message":"m"})).job_id,
            i64::MAX
        );
    }

    #[test]
    fn device_id_is_optional_but_must_be_valid_when_given() {
        assert_eq!(
            ok(json!({"job_id":1,"message":"m","device_id":null})).device_id,
            None
        );
        assert_eq!(
            ok(json!({"job_id":1,"message":"m","device_id":9})).device_id,
            Some(9)
        );
        assert_eq!(
            problems(json!({"job_id":1,"message":"m","device_id":0}))[0].0,
            "device_id"
        );
    }

    #[test]
    fn text_fields_respect_their_lengths() {
        let long_type = "x".repeat(33);
        assert_eq!(
            problems(json!({"job_id":1,"message":"m","log_type":long_type}))[0].0,
            "log_type"
        );
        assert_eq!(
            problems(json!({"job_id":1,"message":"m","log_type":""}))[0].0,
            "log_type"
        );
        let ok_type = "é".repeat(32);
        assert_eq!(
            ok(json!({"job_id":1,"message":"m","log_type":ok_type}))
                .log_type
                .chars()
                .count(),
            32
        );
        assert_eq!(
            problems(json!({"job_id":1,"message":"m","source":"s".repeat(65)}))[0].0,
            "source"
        );
        assert_eq!(problems(json!({"job_id":1,"message":7}))[0].0, "message");
        assert_eq!(
            problems(json!({"job_id":1}))[0],
            ("message".into(), "is required".into())
        );
    }

    #[test]
    fn a_message_over_the_cap_is_rejected() {
        let limits = Limits {
            max_message_bytes: 10,
            max_meta_depth: 4,
        };
        let err = validate(
            json!({"job_id":1,"message":"01234567890"}),
            0,
            &limits,
            now(),
        )
        .unwrap_err();
        assert_eq!(err[0].field, "message");
        assert!(err[0].reason.contains("over the limit of 10 bytes"));
        assert!(validate(
            json!({"job_id":1,"message":"0123456789"}),
            0,
            &limits,
            now()
        )
        .is_ok());
    }

    #[test]
    fn extra_is_an_alias_of_meta_and_must_be_an_object() {
        assert_eq!(
            ok(json!({"job_id":1,"message":"m","extra":{"a":1}})).meta,
            Some(json!({"a":1}))
        );
        assert_eq!(
            ok(json!({"job_id":1,"message":"m","meta":{"b":2}})).meta,
            Some(json!({"b":2}))
        );
        assert_eq!(
            problems(json!({"job_id":1,"message":"m","meta":[1]}))[0].0,
            "meta"
        );
        assert_eq!(
            problems(json!({"job_id":1,"message":"m","extra":"x"}))[0].0,
            "extra"
        );
        assert_eq!(
            problems(json!({"job_id":1,"message":"m","meta":{},"extra":{}}))[0].0,
            "meta"
        );
        let deep = json!({"job_id":1,"message":"m","meta":{"a":{"b":{"c":{"d":{"e":1}}}}}});
        let limits = Limits {
            max_message_bytes: 100,
            max_meta_depth: 4,
        };
        assert_eq!(
            validate(deep, 0, &limits, now()).unwrap_err()[0].field,
            "meta"
        );
    }

    #[test]
    fn nul_characters_become_a_visible_symbol() {
        let r = ok(
            json!({"job_id":1,"message":"a\u{0}b","source":"s\u{0}","meta":{"k\u{0}":["v\u{0}"]}}),
        );
        assert_eq!(r.message, "a\u{2400}b");
        assert_eq!(r.source.as_deref(), Some("s\u{2400}"));
        assert_eq!(r.meta, Some(json!({"k\u{2400}":["v\u{2400}"]})));
    }

    #[test]
    fn every_problem_of_a_record_is_reported() {
        let p = problems(json!({"job_id":0,"level":"x","message":1}));
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["job_id", "level", "message"]);
        assert_eq!(problems(json!([1]))[0].0, "record");
    }

    #[test]
    fn bodies_are_one_object_an_array_or_ndjson() {
        assert_eq!(parse_body(br#"{"a":1}"#, false, 10).unwrap().len(), 1);
        assert_eq!(
            parse_body(br#"[{"a":1},{"a":2}]"#, false, 10)
                .unwrap()
                .len(),
            2
        );
        let nd = b"{\"a\":1}\r\n\n  \n{\"a\":2}\n";
        assert_eq!(parse_body(nd, true, 10).unwrap().len(), 2);
        assert_eq!(parse_body(b"", false, 10), Err(BodyError::Empty));
        assert_eq!(parse_body(b"[]", false, 10), Err(BodyError::Empty));
        assert_eq!(parse_body(b"\n\n", true, 10), Err(BodyError::Empty));
        assert!(matches!(
            parse_body(b"{", false, 10),
            Err(BodyError::Malformed(_))
        ));
        match parse_body(b"{}\n{oops\n", true, 10) {
            Err(BodyError::Malformed(p)) => assert!(p.reason.starts_with("line 2"), "{p:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_body(b"[{},{},{}]", false, 2),
            Err(BodyError::TooManyRecords { count: 3, max: 2 })
        );
        match parse_body(br#"[{"a":1},{"job_id":1,"job_id":2}]"#, false, 10) {
            Err(BodyError::Malformed(p)) => {
                assert_eq!((p.index, p.field.as_str()), (1, "record"));
                assert!(p.reason.contains("\"job_id\" twice"), "{p:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_body(br#"{"meta":{"a":{"b":1,"b":2}},"job_id":1}"#, false, 10).is_err());
    }

    #[test]
    fn the_one_pass_parse_builds_what_serde_json_builds() {
        for text in [
            r#"{"job_id":1,"message":"a\u00e9\n\"q\"","meta":{"x":[1,-2,3.5,1e300,null,true],"y":{}}}"#,
            r#"{"n":18446744073709551615,"m":-9223372036854775808,"f":0.1,"s":"","a":[[],[{}]]}"#,
        ] {
            let values = parse_body(text.as_bytes(), false, 10).expect("valid");
            let expected: Value = serde_json::from_str(text).unwrap();
            assert_eq!(values, vec![expected]);
        }
    }

    #[test]
    fn stored_records_serialise_with_id_seq_and_lowercase_level() {
        let r = StoredRecord {
            id: 5,
            seq: 2,
            job_id: 7,
            device_id: None,
            timestamp: now(),
            level: Level::Warning,
            log_type: "session".into(),
            source: None,
            message: "m".into(),
            meta: None,
        };
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["id"], 5);
        assert_eq!(v["seq"], 2);
        assert_eq!(v["level"], "warning");
        assert_eq!(v["timestamp"], "2026-01-01T00:00:00.000000Z");
    }

    #[test]
    fn route_info_needs_an_object_with_a_valid_job_id_and_no_control_key() {
        let info =
            route_info(br#"{"job_id":42,"seq":3,"level":"INFO","device_id":2,"message":"x"}"#)
                .unwrap();
        assert_eq!(
            info,
            RouteInfo {
                job_id: 42,
                seq: Some(3),
                level: Some(Level::Info),
                device_id: Some(2)
            }
        );
        assert!(route_info(br#"{"job_id":42,"message":"x"}"#)
            .unwrap()
            .seq
            .is_none());
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"message\":\"no job\"}",
            b"{\"job_id\":0}",
            b"{\"job_id\":\"42\"}",
            b"{\"job_id\":42,\"control\":\"gap\"}",
            b"{\"job_id\":42,\"seq\":\"x\"}",
            b"\xff\xfe",
        ] {
            assert!(
                route_info(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
