//! The human table: one summary row with the fields every scenario shares, then every other
//! field of the JSON report as `key: value` lines.

use serde_json::Value;

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_u64() {
                i.to_string()
            } else if let Some(f) = n.as_f64() {
                if f.abs() >= 100.0 {
                    format!("{f:.0}")
                } else if f.abs() >= 10.0 {
                    format!("{f:.2}")
                } else {
                    format!("{f:.3}")
                }
            } else {
                n.to_string()
            }
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

const SUMMARY_KEYS: &[&str] = &[
    "scenario",
    "params_text",
    "sent",
    "delivered",
    "lost",
    "duplicated",
    "per_s",
];

pub fn human(r: &Value) -> String {
    let g = r.get("gateway");
    let lat = r.get("latency_ms");
    let us = g.and_then(|g| {
        g.get("us_per_frame")
            .filter(|v| !v.is_null())
            .map(|v| cell(Some(v)))
            .or_else(|| {
                g.get("us_per_record")
                    .filter(|v| !v.is_null())
                    .map(|v| format!("{}/rec", cell(Some(v))))
            })
    });
    let header = [
        "scenario",
        "parameters",
        "sent",
        "delivered",
        "lost",
        "dup",
        "per s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "gw CPU s",
        "gw µs/frame",
        "gw RSS MB",
    ];
    let row = [
        cell(r.get("scenario")),
        cell(r.get("params_text")),
        cell(r.get("sent")),
        cell(r.get("delivered")),
        cell(r.get("lost")),
        cell(r.get("duplicated")),
        cell(r.get("per_s")),
        cell(lat.and_then(|l| l.get("p50"))),
        cell(lat.and_then(|l| l.get("p90"))),
        cell(lat.and_then(|l| l.get("p99"))),
        cell(lat.and_then(|l| l.get("max"))),
        cell(g.and_then(|g| g.get("cpu_s"))),
        us.unwrap_or_else(|| "-".into()),
        cell(g.and_then(|g| g.get("rss_mb_after"))),
    ];
    let widths: Vec<usize> = header
        .iter()
        .zip(&row)
        .map(|(h, c)| h.chars().count().max(c.chars().count()))
        .collect();
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i < 2 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = String::new();
    out.push_str(&line(header.iter().map(|s| s.to_string()).collect()));
    out.push('\n');
    out.push_str(&line(row.to_vec()));
    out.push_str("\n\n");
    let mut details = Vec::new();
    if let Value::Object(map) = r {
        for (k, v) in map {
            if SUMMARY_KEYS.contains(&k.as_str()) || k == "failures" || k == "ok" {
                continue;
            }
            flatten(k, v, &mut details);
        }
    }
    let kw = details.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in details {
        out.push_str(&format!("  {k:<kw$}  {v}\n"));
    }
    let ok = r.get("ok").and_then(Value::as_bool).unwrap_or(true);
    out.push('\n');
    if ok {
        out.push_str("result: OK\n");
    } else {
        out.push_str("result: FAILED\n");
        if let Some(Value::Array(fs)) = r.get("failures") {
            for f in fs {
                out.push_str(&format!("  - {}\n", f.as_str().unwrap_or("")));
            }
        }
    }
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map)
            if !map.is_empty() && prefix != "close_codes" && prefix != "errors_by_status" =>
        {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Number(_) => {
            let text = cell(Some(v));
            let text = match num(v) {
                Some(f)
                    if f.abs() >= 10_000.0
                        && f.fract() == 0.0
                        && !prefix.contains("job")
                        && !prefix.contains("run_id") =>
                {
                    group(f as i64)
                }
                _ => text,
            };
            out.push((prefix.to_string(), text));
        }
        _ => out.push((prefix.to_string(), cell(Some(v)))),
    }
}

/// 1234567 as "1 234 567".
fn group(v: i64) -> String {
    let s = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}
