//! [`PerCpuSums`]: the changes of the counters the kernel keeps in 32 bits per CPU (softnet_stat,
//! /proc/softirqs, /proc/interrupts) over a window, added up tick by tick.
//!
//! Why not the difference between the window's first and last readings, as for the other
//! counters: a 32-bit counter's fall can be told from a wrap only while the wrapped distance is
//! under half its range ([`crate::counter::wrapping_u32`]). A busy receive CPU counts 2^31
//! packets in under half an hour at 1.2 million a second, so over a long window its whole count
//! would be taken for a reset (0), and one that wrapped twice would lose 2^32. Between two ticks
//! it cannot get near that.
use std::{collections::BTreeMap, time::Instant};

use super::{
    deltas::{interrupt_delta, softirq_deltas, softnet_deltas, SoftnetDeltas},
    HostSnapshot, Interrupts, Softirqs, Softnet,
};

/// Sums over a window, advanced with [`PerCpuSums::add_tick`] at every snapshot after the first.
#[derive(Debug, Clone)]
pub struct PerCpuSums {
    softnet: Summed<Softnet, SoftnetDeltas>,
    softirqs: Summed<Softirqs, BTreeMap<String, u64>>,
    interrupts: Summed<Interrupts, u64>,
}

impl PerCpuSums {
    /// Nothing counted yet, from the window's first snapshot.
    pub fn new(first: &HostSnapshot) -> Self {
        Self {
            softnet: Summed::new(first.softnet.as_ref()),
            softirqs: Summed::new(first.softirqs.as_ref()),
            interrupts: Summed::new(first.interrupts.as_ref()),
        }
    }

    /// Adds the tick from `previous` to `now`, the snapshot after it.
    pub fn add_tick(&mut self, previous: &HostSnapshot, now: &HostSnapshot) {
        self.softnet
            .add(previous, now, |s| s.softnet.as_ref(), softnet_deltas);
        self.softirqs.add(
            previous,
            now,
            |s| s.softirqs.as_ref(),
            |a, b, secs| Some(softirq_deltas(a, b, secs)),
        );
        self.interrupts.add(
            previous,
            now,
            |s| s.interrupts.as_ref(),
            |a, b, secs| Some(interrupt_delta(a, b, secs)),
        );
    }

    /// The sums of a single tick: what [`super::HostMetrics::between`] reports.
    pub(super) fn between(first: &HostSnapshot, last: &HostSnapshot) -> Self {
        let mut sums = Self::new(first);
        sums.add_tick(first, last);
        sums
    }

    pub(super) fn softnet(&self) -> Option<SoftnetDeltas> {
        self.softnet.total().copied()
    }

    pub(super) fn softirqs(&self) -> Option<&BTreeMap<String, u64>> {
        self.softirqs.total()
    }

    pub(super) fn interrupts(&self) -> Option<u64> {
        self.interrupts.total().copied()
    }
}

/// One file's sum.
#[derive(Debug, Clone)]
struct Summed<R, D> {
    /// `None` when unknown: the window's first read of the file failed (as for every field whose
    /// first reading is missing), or a tick's readings could not be matched CPU to CPU
    /// (softnet_stat without CPU ids, a CPU gone offline).
    sum: Option<D>,
    /// The last good reading and when it was taken, kept while the reads after it fail: the next
    /// good one counts from it, so a failed read neither loses the tick's counts nor counts them
    /// twice. Cloned only when a read fails.
    held: Option<(Instant, R)>,
}

impl<R: Clone, D: Tally> Summed<R, D> {
    fn new(first: Option<&R>) -> Self {
        Self {
            sum: first.map(|_| D::default()),
            held: None,
        }
    }

    fn add(
        &mut self,
        previous: &HostSnapshot,
        now: &HostSnapshot,
        read: fn(&HostSnapshot) -> Option<&R>,
        delta: impl FnOnce(&R, &R, f64) -> Option<D>,
    ) {
        let Some(reading) = read(now) else {
            if self.held.is_none() {
                self.held = read(previous).map(|r| (previous.at, r.clone()));
            }
            return;
        };
        let from = match &self.held {
            Some((at, r)) => Some((*at, r)),
            None => read(previous).map(|r| (previous.at, r)),
        };
        let tick = from.and_then(|(at, before)| {
            delta(
                before,
                reading,
                now.at.saturating_duration_since(at).as_secs_f64(),
            )
        });
        self.sum = self.sum.take().zip(tick).map(|(mut sum, tick)| {
            sum.add(tick);
            sum
        });
        self.held = None;
    }

    /// The sum up to the last snapshot added, `None` when that one's read failed (the span the
    /// sum covers would not be the window's).
    fn total(&self) -> Option<&D> {
        self.sum.as_ref().filter(|_| self.held.is_none())
    }
}

/// A sum of tick deltas.
trait Tally: Default {
    fn add(&mut self, tick: Self);
}

impl Tally for u64 {
    fn add(&mut self, tick: Self) {
        *self = self.saturating_add(tick);
    }
}

impl Tally for SoftnetDeltas {
    fn add(&mut self, tick: Self) {
        self.processed.add(tick.processed);
        self.dropped.add(tick.dropped);
        self.time_squeeze.add(tick.time_squeeze);
        self.flow_limited.add(tick.flow_limited);
    }
}

/// Softirq vector name to runs: a vector new in a later reading counts from the tick it appeared.
impl Tally for BTreeMap<String, u64> {
    fn add(&mut self, tick: Self) {
        for (vector, runs) in tick {
            self.entry(vector).or_default().add(runs);
        }
    }
}
