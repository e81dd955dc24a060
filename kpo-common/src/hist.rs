//! Log-linear latency histogram shared by kernel and user space.
//!
//! Values are nanoseconds. Each power of two is split into 4 equal sub-buckets, so a bucket is at
//! most 25% wide: fine enough to compare a measured service time within a stated tolerance, cheap
//! enough to compute in eBPF without loops (a branch-free most-significant-bit search).

/// Sub-buckets per power of two, as a shift (4 sub-buckets).
pub const SUB_BITS: u32 = 2;
/// Number of buckets: values up to 2^42 ns (about 73 minutes); larger values land in the last one.
pub const HIST_BUCKETS: usize = 41 << SUB_BITS;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hist {
    pub buckets: [u64; HIST_BUCKETS],
}

/// Index of the most significant set bit, for `v > 0`. Written as a fixed binary search so the
/// eBPF verifier sees straight-line code.
#[inline(always)]
pub fn msb(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket index for a value in nanoseconds.
///
/// Values below 4 ns map to buckets 0..3 exactly; above, bucket = 4 * (msb - 1) + the two bits
/// below the most significant one, so buckets continue without a gap (4 ns is bucket 4).
#[inline(always)]
pub fn bucket_of(ns: u64) -> usize {
    if ns < (1 << SUB_BITS) {
        return ns as usize;
    }
    let m = msb(ns);
    let sub = (ns >> (m - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    let idx = (((m - 1) as u64) << SUB_BITS) + sub;
    if idx as usize >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        idx as usize
    }
}

/// Smallest value (ns) that falls in bucket `idx`.
pub fn bucket_lower_ns(idx: usize) -> u64 {
    if idx < (1 << SUB_BITS) {
        return idx as u64;
    }
    let m = (idx >> SUB_BITS) as u32 + 1;
    let sub = (idx as u64) & ((1 << SUB_BITS) - 1);
    (1u64 << m) + (sub << (m - SUB_BITS))
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            buckets: [0; HIST_BUCKETS],
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Hist {}
