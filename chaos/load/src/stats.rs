//! Counts and latency histograms a worker sends to the coordinator, which adds them up.

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies in microseconds, from 1 µs to 10 minutes, 3 significant digits.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"))
    }
}

impl Latency {
    pub fn record_ns(&mut self, ns: u64) {
        self.0.saturating_record((ns / 1000).max(1));
    }

    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides: cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Milliseconds at the quantile (0 when empty).
    pub fn ms_at(&self, quantile: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.max() as f64 / 1000.0
    }

    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut bytes)
            .expect("serializing to memory");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub fn decode(text: &str) -> anyhow::Result<Latency> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("a worker sent a bad histogram: {e:?}"))?;
        let mut l = Latency::default();
        l.0.add(&h)
            .map_err(|e| anyhow::anyhow!("a worker sent a bad histogram: {e:?}"))?;
        Ok(l)
    }

    pub fn summary(&self) -> Percentiles {
        Percentiles {
            count: self.count(),
            p50_ms: self.ms_at(0.5),
            p99_ms: self.ms_at(0.99),
            p999_ms: self.ms_at(0.999),
            max_ms: self.max_ms(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Errors by kind, each with one example message for the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Errors(pub BTreeMap<String, (u64, String)>);

impl Errors {
    pub fn add(&mut self, kind: &str, example: impl Into<String>) {
        self.add_n(kind, 1, example);
    }

    pub fn add_n(&mut self, kind: &str, n: u64, example: impl Into<String>) {
        let e = self.0.entry(kind.to_string()).or_insert((0, String::new()));
        e.0 += n;
        if e.1.is_empty() {
            e.1 = example.into();
        }
    }

    pub fn merge(&mut self, other: &Errors) {
        for (kind, (n, example)) in &other.0 {
            let e = self.0.entry(kind.clone()).or_insert((0, example.clone()));
            e.0 += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|(n, _)| n).sum()
    }
}
