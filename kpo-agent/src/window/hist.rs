//! Percentiles from the log-linear histograms (see `kpo_common::hist`).
use kpo_common::bucket_lower_ns;
use serde::Serialize;

/// Summary of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    /// Upper edge of the highest non-empty bucket (the highest bucket also holds every value
    /// beyond the histogram's range, 2^42 ns).
    pub max_us: f64,
}

/// `last - first`, bucket by bucket. A histogram only grows while its map slot is the same, so
/// a fall in any bucket means the slot was zeroed (reused) or recreated since `first`, and every
/// count in `last` came after it: `last` is taken whole. Judging each bucket on its own would
/// subtract the old counts from the buckets the new histogram happens to exceed them in.
pub fn delta(first: Option<&[u64]>, last: &[u64]) -> Vec<u64> {
    let before = |i: usize| first.and_then(|f| f.get(i)).copied().unwrap_or(0);
    if last.iter().enumerate().any(|(i, &v)| v < before(i)) {
        return last.to_vec();
    }
    last.iter()
        .enumerate()
        .map(|(i, &v)| v - before(i))
        .collect()
}

/// Upper edge of bucket `idx`: the next bucket's lower edge. For the highest bucket that is
/// 2^42 ns, the edge of the range the histogram covers; longer values are clamped into that
/// bucket (`bucket_of`), so there it is a floor of the longest value, not a bound.
fn upper_ns(idx: usize) -> u64 {
    bucket_lower_ns(idx + 1)
}

/// Value at quantile `q` (0..=1), interpolated linearly inside its bucket, each sample taken at
/// the middle of its share of the bucket (one sample reports the bucket's middle).
pub fn quantile_ns(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0);
    let mut seen = 0u64;
    for (idx, &count) in buckets.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if (seen + count) as f64 >= rank {
            let lower = bucket_lower_ns(idx) as f64;
            let width = upper_ns(idx) as f64 - lower;
            let within = (rank - seen as f64 - 0.5) / count as f64;
            return Some(lower + width * within);
        }
        seen += count;
    }
    None
}

pub fn summarize(buckets: &[u64]) -> Option<LatencySummary> {
    let samples: u64 = buckets.iter().sum();
    if samples == 0 {
        return None;
    }
    let us = |q: f64| round2(quantile_ns(buckets, q).unwrap_or(0.0) / 1000.0);
    let top = buckets.iter().rposition(|&c| c > 0).unwrap_or(0);
    Some(LatencySummary {
        samples,
        p50_us: us(0.50),
        p90_us: us(0.90),
        p99_us: us(0.99),
        max_us: round2(upper_ns(top) as f64 / 1000.0),
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpo_common::{bucket_of, HIST_BUCKETS};

    fn hist_of(values_ns: &[u64]) -> Vec<u64> {
        let mut h = vec![0; HIST_BUCKETS];
        for &v in values_ns {
            h[bucket_of(v)] += 1;
        }
        h
    }

    #[test]
    fn buckets_are_contiguous_and_at_most_a_quarter_octave_wide() {
        for idx in 4..HIST_BUCKETS - 1 {
            let lo = bucket_lower_ns(idx);
            let hi = bucket_lower_ns(idx + 1);
            assert!(hi > lo, "bucket {idx}");
            assert!(
                (hi - lo) as f64 <= lo as f64 * 0.25 + 1.0,
                "bucket {idx} too wide"
            );
            assert_eq!(bucket_of(lo), idx);
            assert_eq!(bucket_of(hi - 1), idx);
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(3), 3);
        assert_eq!(bucket_of(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn quantiles_land_within_the_bucket_of_the_true_value() {
        // 1000 values: 1..=1000 µs.
        let values: Vec<u64> = (1..=1000).map(|us| us * 1000).collect();
        let h = hist_of(&values);
        for (q, truth_us) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = quantile_ns(&h, q).unwrap() / 1000.0;
            assert!(
                (got - truth_us).abs() / truth_us <= 0.25,
                "q{q}: {got} vs {truth_us}"
            );
        }
        let s = summarize(&h).unwrap();
        assert_eq!(s.samples, 1000);
        assert!(s.max_us >= 1000.0 && s.max_us <= 1250.0, "{}", s.max_us);
    }

    #[test]
    fn single_value_reports_its_bucket() {
        let h = hist_of(&[100_000]); // 100 µs
        let s = summarize(&h).unwrap();
        let idx = bucket_of(100_000);
        let lo = bucket_lower_ns(idx) as f64 / 1000.0;
        let hi = bucket_lower_ns(idx + 1) as f64 / 1000.0;
        assert!(
            s.p50_us >= lo - 0.01 && s.p50_us <= hi + 0.01,
            "{} not in [{lo}, {hi}]",
            s.p50_us
        );
        assert!(
            (s.p50_us - (lo + hi) / 2.0).abs() <= 0.01,
            "a single sample reports the middle"
        );
        assert_eq!(s.p50_us, s.p99_us);
    }

    #[test]
    fn empty_histogram_has_no_summary() {
        assert_eq!(summarize(&vec![0; HIST_BUCKETS]), None);
    }

    #[test]
    fn delta_handles_missing_and_reset_baselines() {
        assert_eq!(delta(None, &[1, 2]), vec![1, 2]);
        assert_eq!(delta(Some(&[1, 1]), &[3, 1]), vec![2, 0]);
        assert_eq!(delta(Some(&[5, 0]), &[2, 0]), vec![2, 0]);
    }

    /// Defect: a restart was judged bucket by bucket, so a zeroed slot whose new counts exceeded
    /// the old ones in some bucket had the old counts subtracted there: [5,1] then [2,3] gave
    /// [2,2].
    #[test]
    fn a_fall_in_any_bucket_takes_the_new_histogram_whole() {
        assert_eq!(delta(Some(&[5, 1]), &[2, 3]), vec![2, 3]);
        assert_eq!(delta(Some(&[0, 4, 1]), &[7, 4, 0]), vec![7, 4, 0]);
        // No fall: the plain difference.
        assert_eq!(delta(Some(&[5, 1]), &[5, 3]), vec![0, 2]);
    }

    /// Defect: the highest bucket's upper edge was taken as twice its lower edge (2^42 + 3*2^40
    /// ns) instead of 2^42 ns, where the range ends.
    #[test]
    fn the_highest_bucket_ends_where_the_range_ends() {
        let mut h = vec![0; HIST_BUCKETS];
        h[HIST_BUCKETS - 1] = 1;
        let s = summarize(&h).unwrap();
        assert_eq!(s.max_us, round2((1u64 << 42) as f64 / 1000.0));
        assert_eq!(s.max_us, 4_398_046_511.1);
        // A value beyond the range is clamped into that bucket.
        assert_eq!(bucket_of(u64::MAX), HIST_BUCKETS - 1);
        assert_eq!(bucket_of((1 << 42) - 1), HIST_BUCKETS - 1);
        // Its percentiles stay inside the bucket.
        assert!(s.p99_us * 1000.0 < (1u64 << 42) as f64);
        assert!(s.p50_us * 1000.0 >= bucket_lower_ns(HIST_BUCKETS - 1) as f64);
    }
}
