//! Latency histogram (1 ms buckets), per-session outcomes and process CPU/RSS readings.

use std::time::Instant;

/// Latencies in 1 ms buckets up to two minutes, plus an overflow bucket.
#[derive(Clone)]
pub(crate) struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_ms: f64,
}

const BUCKETS: usize = 120_000;

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: vec![0; BUCKETS + 1],
            count: 0,
            max_ms: 0.0,
        }
    }
}

impl Histogram {
    /// Records `count` samples of one latency.
    pub(crate) fn record_n(&mut self, latency_ms: f64, count: u64) {
        let latency_ms = latency_ms.max(0.0);
        let bucket = (latency_ms as usize).min(BUCKETS);
        self.buckets[bucket] += count;
        self.count += count;
        self.max_ms = self.max_ms.max(latency_ms);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn max_ms(&self) -> f64 {
        self.max_ms
    }

    /// The latency below which `quantile` of the samples fall (upper bucket edge), in ms.
    pub(crate) fn percentile(&self, quantile: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((self.count as f64) * quantile).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return ((bucket + 1) as f64).min(self.max_ms.max(1.0).ceil());
            }
        }
        self.max_ms
    }
}

/// CPU seconds and RSS of a process, from /proc (Linux).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcessSample {
    pub(crate) cpu_seconds: f64,
    pub(crate) rss_bytes: u64,
    pub(crate) at: Instant,
}

pub(crate) fn sample_process(pid: &str) -> Option<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    // USER_HZ is 100 on every Linux this runs on.
    Some(ProcessSample {
        cpu_seconds: ticks / 100.0,
        rss_bytes: rss_kib * 1024,
        at: Instant::now(),
    })
}

/// Cores used between two samples.
pub(crate) fn cores_between(start: ProcessSample, end: ProcessSample) -> f64 {
    let wall = end.at.duration_since(start.at).as_secs_f64();
    if wall > 0.0 {
        (end.cpu_seconds - start.cpu_seconds) / wall
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_bucket_edges() {
        let mut histogram = Histogram::default();
        for latency in 0..100 {
            histogram.record_n(latency as f64 + 0.5, 1);
        }
        assert_eq!(histogram.percentile(0.5), 50.0);
        assert_eq!(histogram.percentile(0.99), 99.0);
        assert_eq!(histogram.max_ms(), 99.5);
        assert!(sample_process("self").is_some());
    }
}
