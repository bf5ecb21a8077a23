//! Token buckets: the pure arithmetic, and a table of them keyed by IP
//! address or account that cannot grow without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How fast tokens come back and how many may be saved up. A rate of 0 is
/// "no limit".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    pub per_second: f64,
    pub burst: f64,
}

impl Spec {
    /// `n` a minute, and `n` saved up at most.
    pub fn per_minute(n: u64) -> Spec {
        Spec {
            per_second: n as f64 / 60.0,
            burst: n as f64,
        }
    }

    pub fn per_second(n: u64, burst: u64) -> Spec {
        Spec {
            per_second: n as f64,
            burst: burst.max(n) as f64,
        }
    }

    pub fn unlimited(&self) -> bool {
        self.per_second <= 0.0
    }
}

/// One bucket. It may go into debt (a stanza larger than the burst is still
/// taken); the debt is paid back before anything else passes.
#[derive(Clone, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(spec: &Spec, now: Instant) -> Bucket {
        Bucket {
            tokens: spec.burst,
            at: now,
        }
    }

    fn refill(&mut self, spec: &Spec, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * spec.per_second).min(spec.burst);
        self.at = now;
    }

    /// Take one token if there is one: the all-or-nothing check for attempts.
    pub fn try_take(&mut self, spec: &Spec, now: Instant) -> bool {
        if spec.unlimited() {
            return true;
        }
        self.refill(spec, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is there, without taking it.
    pub fn has_token(&mut self, spec: &Spec, now: Instant) -> bool {
        if spec.unlimited() {
            return true;
        }
        self.refill(spec, now);
        self.tokens >= 1.0
    }

    /// Take a token after the fact (a failure that was let through while a
    /// token was there); concurrent failures may leave a small debt.
    pub fn charge(&mut self, spec: &Spec, now: Instant) {
        if spec.unlimited() {
            return;
        }
        self.refill(spec, now);
        self.tokens = (self.tokens - 1.0).max(-spec.burst);
    }

    /// Take `n` tokens, going into debt if need be, and say how long to wait
    /// until the debt is paid: the shaper's question.
    pub fn take_and_wait(&mut self, spec: &Spec, n: f64, now: Instant) -> Duration {
        if spec.unlimited() {
            return Duration::ZERO;
        }
        self.refill(spec, now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / spec.per_second)
        }
    }

    /// Whether the bucket is back to full: then it may be forgotten.
    fn is_full(&self, spec: &Spec, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * spec.per_second >= spec.burst
    }
}

/// Buckets by key (an IP address, an account), at most `capacity` of them.
/// A full bucket is the same as none, so those are forgotten first; when every
/// bucket is in use, an arbitrary one is dropped, which at worst hands one
/// key a fresh bucket, never refuses a key for lack of room.
pub struct Buckets<K> {
    spec: Spec,
    capacity: usize,
    map: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(spec: Spec, capacity: usize) -> Buckets<K> {
        Buckets {
            spec,
            capacity: capacity.max(1),
            map: HashMap::new(),
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn bucket(&mut self, key: &K, now: Instant) -> &mut Bucket {
        if !self.map.contains_key(key) && self.map.len() >= self.capacity {
            let spec = self.spec;
            self.map.retain(|_, b| !b.is_full(&spec, now));
            if self.map.len() >= self.capacity {
                if let Some(victim) = self.map.keys().next().cloned() {
                    self.map.remove(&victim);
                }
            }
        }
        let spec = self.spec;
        self.map
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(&spec, now))
    }

    pub fn try_take(&mut self, key: &K, now: Instant) -> bool {
        if self.spec.unlimited() {
            return true;
        }
        let spec = self.spec;
        self.bucket(key, now).try_take(&spec, now)
    }

    pub fn has_token(&mut self, key: &K, now: Instant) -> bool {
        if self.spec.unlimited() {
            return true;
        }
        let spec = self.spec;
        match self.map.get_mut(key) {
            Some(b) => b.has_token(&spec, now),
            None => true,
        }
    }

    pub fn charge(&mut self, key: &K, now: Instant) {
        if self.spec.unlimited() {
            return;
        }
        let spec = self.spec;
        self.bucket(key, now).charge(&spec, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills_at_its_rate() {
        let spec = Spec::per_minute(3);
        let t0 = Instant::now();
        let mut b = Bucket::full(&spec, t0);
        assert!(b.try_take(&spec, t0));
        assert!(b.try_take(&spec, t0));
        assert!(b.try_take(&spec, t0));
        assert!(!b.try_take(&spec, t0));
        // One token every 20 s.
        assert!(!b.try_take(&spec, t0 + Duration::from_secs(19)));
        assert!(b.try_take(&spec, t0 + Duration::from_secs(21)));
    }

    #[test]
    fn failures_are_charged_after_the_fact() {
        let spec = Spec::per_minute(2);
        let t0 = Instant::now();
        let mut b = Bucket::full(&spec, t0);
        assert!(b.has_token(&spec, t0));
        b.charge(&spec, t0);
        assert!(b.has_token(&spec, t0));
        b.charge(&spec, t0);
        assert!(!b.has_token(&spec, t0));
        // A token every 30 s.
        assert!(b.has_token(&spec, t0 + Duration::from_secs(31)));
    }

    #[test]
    fn the_shaper_waits_out_a_debt() {
        let spec = Spec::per_second(100, 100);
        let t0 = Instant::now();
        let mut b = Bucket::full(&spec, t0);
        assert_eq!(b.take_and_wait(&spec, 100.0, t0), Duration::ZERO);
        // 50 more: half a second of debt.
        let wait = b.take_and_wait(&spec, 50.0, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // Paid back after the wait.
        let later = t0 + wait;
        assert_eq!(b.take_and_wait(&spec, 0.0, later), Duration::ZERO);
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let spec = Spec::per_minute(0);
        let t0 = Instant::now();
        let mut b = Bucket::full(&spec, t0);
        for _ in 0..1000 {
            assert!(b.try_take(&spec, t0));
        }
        assert_eq!(b.take_and_wait(&spec, 1e9, t0), Duration::ZERO);
    }

    #[test]
    fn the_table_never_holds_more_than_its_capacity() {
        let mut t: Buckets<u32> = Buckets::new(Spec::per_minute(1), 100);
        let t0 = Instant::now();
        for key in 0..10_000 {
            assert!(t.try_take(&key, t0), "a new key always gets a bucket");
            assert!(t.len() <= 100);
        }
        // A key still in its table keeps its empty bucket.
        let last = 9_999;
        assert!(!t.try_take(&last, t0));
    }

    #[test]
    fn full_buckets_are_forgotten_first() {
        let mut t: Buckets<u32> = Buckets::new(Spec::per_minute(60), 2);
        let t0 = Instant::now();
        assert!(t.try_take(&1, t0));
        for _ in 0..60 {
            t.try_take(&2, t0);
        }
        assert!(!t.try_take(&2, t0));
        // Two seconds on, key 1's bucket is full again and goes; key 2 keeps its debt.
        let t1 = t0 + Duration::from_millis(1500);
        assert!(t.try_take(&3, t1));
        assert_eq!(t.len(), 2);
        assert!(t.map.contains_key(&2) && !t.map.contains_key(&1));
    }
}
