//! Which entries of the NAPI sensor's overflow map to delete: those of devices no longer polled.
//!
//! A device's NAPI counts live in a per-CPU slot table, and move to `KPO_NAPI` (a hash map of
//! 1024 keys) when another napi instance takes the slot. Nothing removed those entries, so on a
//! host whose devices with their own NAPI (veths with GRO or XDP, SR-IOV functions) come and go,
//! the map filled and the counts of every device moved out after that were lost.
//!
//! An entry is deleted once its device is in no CPU's slot and its moved counts have not changed
//! for two windows (`stale_listeners::idle_before_delete`): no poll of it in that time (a poll
//! would put it back in a slot). A window that saw its last polls has ended before the entry
//! goes.
//! Its totals then leave the reads (the reader's high-water mark for it goes too), and a device
//! polled again counts from 0 under a new entry number (`bpf_maps::EntryIds`): a window that
//! began before the deletion counts its new totals whole, as the listeners' entries
//! (`stale_listeners`).
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use kpo_common::{NapiCounters, NapiKey};

use super::stale_listeners::idle_before_delete;

#[derive(Debug)]
pub struct IdleNapi {
    /// Each overflow entry: when its counts last changed, and its polls then (every count moves
    /// with a poll).
    last_change: BTreeMap<NapiKey, (Instant, u64)>,
    idle_before_delete: Duration,
}

/// Until the agent says its window ([`IdleNapi::for_windows_of`]): the longest.
impl Default for IdleNapi {
    fn default() -> Self {
        Self::for_windows_of(crate::config::MAX_WINDOW)
    }
}

impl IdleNapi {
    pub fn for_windows_of(window: Duration) -> Self {
        Self {
            last_change: BTreeMap::new(),
            idle_before_delete: idle_before_delete(window),
        }
    }

    /// Notes the overflow map's entries read at `now` (`moved`) and the keys in some CPU's slot,
    /// and returns the entries idle for two windows, which it forgets: the caller deletes them
    /// from the map.
    pub fn update(
        &mut self,
        now: Instant,
        moved: &BTreeMap<NapiKey, NapiCounters>,
        in_slots: &BTreeSet<NapiKey>,
    ) -> Vec<NapiKey> {
        self.last_change.retain(|key, _| moved.contains_key(key));
        let mut idle = Vec::new();
        for (key, counts) in moved {
            let polled = in_slots.contains(key);
            match self.last_change.get_mut(key) {
                Some(seen) if polled || seen.1 != counts.polls => *seen = (now, counts.polls),
                Some(seen) if now.duration_since(seen.0) >= self.idle_before_delete => {
                    idle.push(*key)
                }
                Some(_) => {}
                // First seen now: its time starts here.
                None => {
                    self.last_change.insert(*key, (now, counts.polls));
                }
            }
        }
        for key in &idle {
            self.last_change.remove(key);
        }
        idle
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(ifindex: u32) -> NapiKey {
        NapiKey {
            netns: 4026532001,
            ifindex,
        }
    }

    fn polled(polls: u64) -> NapiCounters {
        NapiCounters {
            polls,
            packets: polls * 2,
            budget_exhausted: 0,
        }
    }

    #[test]
    fn an_entry_goes_after_its_device_is_in_no_slot_and_unchanged_for_two_windows() {
        // Windows of a minute: two minutes, not the 30 of the longest window.
        const IDLE_BEFORE_DELETE: Duration = Duration::from_secs(120);
        let t0 = Instant::now();
        let (gone, in_slot, moving) = (key(3), key(4), key(5));
        let mut idle = IdleNapi::for_windows_of(Duration::from_secs(60));
        let moved =
            |m: u64| BTreeMap::from([(gone, polled(7)), (in_slot, polled(9)), (moving, polled(m))]);
        let slots = BTreeSet::from([in_slot]);
        assert!(idle.update(t0, &moved(1), &slots).is_empty());
        // Just short of two windows: nothing yet; `moving` moved more counts meanwhile.
        let almost = t0 + IDLE_BEFORE_DELETE - Duration::from_secs(1);
        assert!(idle.update(almost, &moved(2), &slots).is_empty());
        let then = t0 + IDLE_BEFORE_DELETE;
        assert_eq!(idle.update(then, &moved(2), &slots), [gone]);
        // Deleted, then moved out again: its time starts afresh.
        let later = then + IDLE_BEFORE_DELETE;
        let back = BTreeMap::from([(gone, polled(1)), (in_slot, polled(9)), (moving, polled(2))]);
        assert_eq!(idle.update(later, &back, &slots), [moving]);
        let without_moving = BTreeMap::from([(gone, polled(1)), (in_slot, polled(9))]);
        assert!(idle
            .update(later + Duration::from_secs(1), &without_moving, &slots)
            .is_empty());
        // The one in a slot is never idle, however long its moved counts stay.
        let much_later = later + 10 * IDLE_BEFORE_DELETE;
        assert_eq!(idle.update(much_later, &without_moving, &slots), [gone]);
    }
}
