//! What a load run measured: latencies in a histogram, outcomes counted by kind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are kept in microseconds, from 1 µs to 5 minutes, to 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 300_000_000, 3).expect("valid histogram bounds")
}

/// One client's (or, merged, the whole run's) record.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latency of the requests that did what was asked (201 for a create, 200 for an answer).
    ok: Histogram<u64>,
    /// Latency of every request, whatever its outcome.
    all: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            ok: histogram(),
            all: histogram(),
            outcomes: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn record(&mut self, latency: Duration, outcome: &str, ok: bool) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.all.saturating_record(micros);
        if ok {
            self.ok.saturating_record(micros);
        }
        *self.outcomes.entry(outcome.to_owned()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.ok
            .add(&other.ok)
            .expect("histograms of the same bounds");
        self.all
            .add(&other.all)
            .expect("histograms of the same bounds");
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(k.clone()).or_default() += v;
        }
    }

    pub fn requests(&self) -> u64 {
        self.all.len()
    }

    pub fn ok(&self) -> u64 {
        self.ok.len()
    }

    pub fn outcomes(&self) -> &BTreeMap<String, u64> {
        &self.outcomes
    }

    pub fn ok_latency(&self) -> Latency {
        Latency::of(&self.ok)
    }

    pub fn all_latency(&self) -> Latency {
        Latency::of(&self.all)
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                count: 0,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
            self.p50, self.p90, self.p99, self.p999, self.max, self.mean
        )
    }

    /// `PREFIX_P50_MS=..` lines, for a summary file.
    pub fn env_lines(&self, prefix: &str) -> String {
        let mut s = String::new();
        for (name, v) in [
            ("P50", self.p50),
            ("P90", self.p90),
            ("P99", self.p99),
            ("P999", self.p999),
            ("MAX", self.max),
            ("MEAN", self.mean),
        ] {
            let _ = writeln!(s, "{prefix}{name}_MS={v:.3}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_recorders_count_every_request_and_outcome() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 1..=99u64 {
            a.record(Duration::from_millis(i), "201", true);
        }
        b.record(Duration::from_millis(500), "409 pool-exhausted", false);
        a.merge(&b);
        assert_eq!(a.requests(), 100);
        assert_eq!(a.ok(), 99);
        assert_eq!(a.outcomes()["201"], 99);
        assert_eq!(a.outcomes()["409 pool-exhausted"], 1);
        let ok = a.ok_latency();
        assert!((ok.p50 - 50.0).abs() < 0.1, "{ok:?}");
        assert!((ok.max - 99.0).abs() < 0.1, "{ok:?}");
        assert!((a.all_latency().max - 500.0).abs() < 0.5);
    }

    #[test]
    fn an_empty_recorder_reports_zeroes() {
        let l = Recorder::default().ok_latency();
        assert_eq!(l.count, 0);
        assert_eq!(l.p99, 0.0);
    }
}
