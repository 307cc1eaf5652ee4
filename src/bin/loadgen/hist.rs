//! A log-linear histogram of nanosecond values: exact below 128 ns, then 64 sub-buckets per
//! power of two (at most 1.6 % relative error), fixed size, no allocation per value.

use serde_json::{json, Value};

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const LINEAR: usize = 2 * SUB;
const BUCKETS: usize = LINEAR + (64 - (SUB_BITS as usize + 1)) * SUB;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    count: u64,
    max: u64,
    sum: u128,
    /// Every value with the time it was taken, when asked for (`--latency-csv`).
    pub trace: Option<Vec<(u64, u64)>>,
}

/// Most values kept in a trace.
const TRACE_MAX: usize = 10_000_000;

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            count: 0,
            max: 0,
            sum: 0,
            trace: None,
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let mantissa = ((v >> shift) as usize) & (SUB - 1);
    LINEAR + (msb - SUB_BITS - 1) as usize * SUB + mantissa
}

/// The middle of bucket `i`.
fn value(i: usize) -> u64 {
    if i < LINEAR {
        return i as u64;
    }
    let k = i - LINEAR;
    let msb = (k / SUB) as u32 + SUB_BITS + 1;
    let mantissa = (k % SUB) as u64;
    let shift = msb - SUB_BITS;
    let low = (SUB as u64 + mantissa) << shift;
    low + (1u64 << shift) / 2
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        if v > self.max {
            self.max = v;
        }
    }

    /// Records `v`, and keeps `(at, v)` when tracing.
    pub fn record_at(&mut self, at: u64, v: u64) {
        self.record(v);
        if let Some(t) = self.trace.as_mut() {
            if t.len() < TRACE_MAX {
                t.push((at, v));
            }
        }
    }

    pub fn merge(&mut self, other: &Hist) {
        if let (Some(mine), Some(theirs)) = (self.trace.as_mut(), other.trace.as_ref()) {
            mine.extend_from_slice(
                &theirs[..theirs.len().min(TRACE_MAX - mine.len().min(TRACE_MAX))],
            );
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value(i).min(self.max));
            }
        }
        Some(self.max)
    }

    /// Quantiles in milliseconds (values are nanoseconds).
    pub fn to_json_ms(&self) -> Value {
        let ms = |v: Option<u64>| v.map(|v| (v as f64 / 1e6 * 1000.0).round() / 1000.0);
        json!({
            "count": self.count,
            "mean": (self.count > 0).then(|| ((self.sum / u128::from(self.count.max(1))) as f64 / 1e6 * 1000.0).round() / 1000.0),
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "p999": ms(self.quantile(0.999)),
            "max": ms((self.count > 0).then_some(self.max)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_close() {
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            123_456,
            9_999_999,
            u64::MAX / 3,
        ] {
            let back = value(index(v));
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.02, "{v} -> {back}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((490_000..=510_000).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), Some(1_000_000));
    }
}
