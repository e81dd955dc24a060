//! Reads the eBPF maps once per tick. Counters and histograms in the maps only grow; windows take
//! differences. Per-tick peaks come from the epoch slots (see `ListenerCounters`).
//!
//! The maps are taken out of the loaded object once, at load, into typed handles ([`BpfMaps`]):
//! a name the object lacks, or a map of another type, fails there, loudly, instead of reading as
//! zeros every tick.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use aya::{
    maps::{
        Array, HashMap, Map, MapData, MapError, MapType, PerCpuArray, PerCpuHashMap, PerCpuValues,
    },
    Ebpf, Pod,
};
use kpo_common::*;

use super::idle_napi::IdleNapi;

/// One listener as the accept-queue sensor saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ListenerBpf {
    pub enqueued: u64,
    pub synack_retrans: u64,
    pub backlog_limit: u32,
    /// Largest accept-queue depth seen during the tick that just ended (None: no enqueue in it).
    pub tick_peak: Option<u32>,
    /// Which map entry the counts are of (see [`EntryIds`]): a window subtracts only the counts
    /// of the same entry.
    pub entry: u64,
}

/// A counter's values on each CPU, in the order of the possible CPUs (the kernel copies a
/// per-CPU map value out CPU by CPU in that order): the index is the CPU's number wherever the
/// possible CPUs are 0..n, as on x86 and arm64.
pub type PerCpu<V> = Vec<V>;

#[derive(Debug, Clone, Default)]
pub struct BpfSnapshot {
    pub listeners: BTreeMap<ListenerKey, ListenerBpf>,
    pub irqs: BTreeMap<u32, IrqCounters>,
    /// By softirq vector, each CPU's counters: kept apart, so that a window can tell one CPU
    /// saturated by a vector from the same load spread over all (see [`BpfSnapshot::softirq`]
    /// for the sum).
    pub softirqs: Vec<PerCpu<SoftirqCounters>>,
    pub napi: BTreeMap<NapiKey, NapiCounters>,
    /// Which overflow-map entry each device's totals are of (see [`EntryIds`]).
    pub napi_entries: BTreeMap<NapiKey, u64>,
    pub runq_hist: Vec<u64>,
    /// Each CPU's context switches (see [`BpfSnapshot::context_switches_total`]).
    pub context_switches: PerCpu<u64>,
    pub request_hist: BTreeMap<ListenerKey, Vec<u64>>,
    /// `listener_full` events the programs could not send because the ring buffer was full,
    /// since they were loaded (all CPUs).
    pub notable_lost: u64,
    /// The reads that failed at this tick (a map and what of it, e.g. `KPO_RUNQ_HIST`), each
    /// with the error. Their values above are the last good read's (see [`Held`]), so the next
    /// good read's difference covers the time since then and is counted once.
    pub failed_reads: Vec<(String, String)>,
}

/// The last good read of each cumulative counter or histogram the agent takes differences of.
///
/// A read that fails (a map lookup's error) must not read as zeros: a difference from zeros is
/// everything counted since the programs were loaded, taken for one tick's. Nor may the value
/// just be left out of the sample: a window or tick whose earlier sample lacks it counts it from
/// 0 just the same. So a failed read reports the last good one: the tick it closes counts
/// nothing, and the next good read's difference covers the time since the last good one, in the
/// window (or tick) that read closes.
#[derive(Debug, Default)]
pub struct Held {
    runq_hist: Option<Vec<u64>>,
    context_switches: Option<PerCpu<u64>>,
    notable_lost: Option<u64>,
    softirqs: Option<Vec<PerCpu<SoftirqCounters>>>,
    irqs: Option<BTreeMap<u32, IrqCounters>>,
    /// By listener and index: a listener back on another index (zeroed) is not held at the
    /// histogram of its old one.
    request_hist: BTreeMap<(ListenerKey, u32), Vec<u64>>,
}

impl BpfSnapshot {
    /// Softirq vector `vec`'s counters summed over the CPUs (None: the read had no such vector).
    pub fn softirq(&self, vec: usize) -> Option<SoftirqCounters> {
        let cpus = self.softirqs.get(vec)?;
        Some(
            cpus.iter()
                .fold(SoftirqCounters::default(), |a, b| SoftirqCounters {
                    count: a.count + b.count,
                    time_ns: a.time_ns + b.time_ns,
                    timed: a.timed + b.timed,
                }),
        )
    }

    /// Context switches summed over the CPUs.
    pub fn context_switches_total(&self) -> u64 {
        self.context_switches.iter().sum()
    }
}

/// A number for each map entry the agent reads, so that a window tells the counts of an entry
/// from those of the entry re-created under the same key after the agent deleted it.
///
/// The agent deletes the entries of listeners and NAPI devices idle for two windows
/// (`stale_listeners`, `idle_napi`). One that comes back counts from 0 in a new entry; a window
/// that began before the deletion holds the old entry's count C, and taking the new count N as
/// the old one's continuation (`counter::restarted`) counted it short by C whenever N reached C.
/// The new entry gets a new number, and a window counts it from 0. The old entry counted nothing
/// in that window: it was deleted after a window or more without a count.
///
/// A key keeps its number while its entry is read; it loses it when the agent deletes the entry,
/// or when a complete read of the map (no error) no longer has it (the LRU evicted it). So the
/// numbers are at most the map's entries.
#[derive(Debug)]
pub struct EntryIds<K> {
    ids: BTreeMap<K, u64>,
    next: u64,
}

impl<K> Default for EntryIds<K> {
    fn default() -> Self {
        Self {
            ids: BTreeMap::new(),
            next: 1,
        }
    }
}

impl<K: Ord + Copy> EntryIds<K> {
    /// The number of `key`'s entry: the one it had, or a new one.
    pub fn of(&mut self, key: K) -> u64 {
        let next = &mut self.next;
        *self.ids.entry(key).or_insert_with(|| {
            *next += 1;
            *next - 1
        })
    }

    /// After a read of the whole map that had no error: the keys it did not have are gone.
    pub fn keep_only(&mut self, read: &BTreeSet<K>) {
        self.ids.retain(|key, _| read.contains(key));
    }

    /// The agent deleted `key`'s entry: a new one under it is another.
    pub fn forget(&mut self, key: &K) {
        self.ids.remove(key);
    }
}

/// `read` if it succeeded (and it becomes the held value), else the held value, else `T`'s
/// default (nothing read yet); a failure is added to `failed` under `name`.
pub(crate) fn hold_last_good<T: Clone + Default>(
    held: &mut Option<T>,
    read: Result<T, String>,
    name: &str,
    failed: &mut Vec<(String, String)>,
) -> T {
    match read {
        Ok(value) => {
            *held = Some(value.clone());
            value
        }
        Err(e) => {
            failed.push((name.to_string(), e));
            held.clone().unwrap_or_default()
        }
    }
}

/// Why the maps could not be taken: the eBPF object does not match this agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapsError {
    #[error("map {name} is not in the eBPF object (it has: {})", .present.join(", "))]
    Missing {
        name: &'static str,
        present: Vec<String>,
    },
    #[error("map {name} is a {found} map, the agent expects {expected}")]
    WrongType {
        name: &'static str,
        found: String,
        expected: String,
    },
}

/// A typed map handle, with the kernel map types it can be made from.
pub trait Handle: TryFrom<Map, Error = MapError> {
    const MAP_TYPES: &'static [MapType];
}

impl<V: Pod> Handle for Array<MapData, V> {
    const MAP_TYPES: &'static [MapType] = &[MapType::Array];
}

impl<V: Pod> Handle for PerCpuArray<MapData, V> {
    const MAP_TYPES: &'static [MapType] = &[MapType::PerCpuArray];
}

impl<K: Pod, V: Pod> Handle for HashMap<MapData, K, V> {
    const MAP_TYPES: &'static [MapType] = &[MapType::Hash, MapType::LruHash];
}

impl<K: Pod, V: Pod> Handle for PerCpuHashMap<MapData, K, V> {
    const MAP_TYPES: &'static [MapType] = &[MapType::PerCpuHash, MapType::LruPerCpuHash];
}

/// Declares [`BpfMaps`], one row per map (field, handle type, name), so that the struct, its
/// table of names and types ([`BpfMaps::TAKEN`]) and its constructor cannot disagree.
macro_rules! bpf_maps {
    ($($field:ident: $ty:ty = $name:ident,)*) => {
        /// Every map the agent reads or writes each tick, taken out of the object once, at load.
        pub struct BpfMaps {
            $($field: $ty,)*
            /// Not a map: the tick epoch the programs are in (see [`FIRST_EPOCH`]).
            epoch: u64,
            /// Not a map: the highest NAPI totals read so far (see [`hold_high_water`]).
            napi_high_water: BTreeMap<NapiKey, NapiCounters>,
            /// Not a map: which NAPI overflow entries are idle (see [`super::idle_napi`]).
            idle_napi: IdleNapi,
            /// Not a map: the last good read of each counter and histogram (see [`Held`]).
            held: Held,
            /// Not a map: the entries of `listeners` and of the NAPI totals (see [`EntryIds`]).
            listener_entries: EntryIds<ListenerKey>,
            napi_entries: EntryIds<NapiKey>,
            /// Not a map: what `service_generations` holds, index by index (only this agent
            /// writes it, and it was created zeroed), for the entries of `service_ports`.
            service_generations_now: [u32; MAX_SERVICES as usize],
            /// Not a map: the writes to `service_ports` that failed, owed (see [`OwedPorts`]).
            owed_ports: OwedPorts,
        }

        impl BpfMaps {
            /// Each map taken: its name and the kernel map types its handle accepts.
            pub const TAKEN: &'static [(&'static str, &'static [MapType])] =
                &[$(($name, <$ty as Handle>::MAP_TYPES),)*];

            /// Takes every map out of `ebpf`. Fails, naming the map, when one is missing or of
            /// another type; takes nothing then.
            pub fn take(ebpf: &mut Ebpf) -> Result<BpfMaps, MapsError> {
                check(&present(ebpf), Self::TAKEN)?;
                let mut maps = BpfMaps {
                    $($field: take(ebpf, $name)?,)*
                    epoch: FIRST_EPOCH,
                    napi_high_water: BTreeMap::new(),
                    idle_napi: IdleNapi::default(),
                    held: Held::default(),
                    listener_entries: EntryIds::default(),
                    napi_entries: EntryIds::default(),
                    service_generations_now: [0; MAX_SERVICES as usize],
                    owed_ports: OwedPorts::default(),
                };
                // Now, before the loader attaches any program: until the first read writes
                // the next epoch, the programs read this one. A failed write leaves 0 there,
                // and only the first tick's peaks and events suffer.
                let _ = maps.config.set(CONFIG_EPOCH, FIRST_EPOCH, 0);
                Ok(maps)
            }
        }
    };
}

bpf_maps! {
    config: Array<MapData, u64> = MAP_CONFIG,
    listeners: PerCpuHashMap<MapData, ListenerKey, ListenerCounters> = MAP_LISTENERS,
    irqs: PerCpuHashMap<MapData, u32, IrqCounters> = MAP_IRQS,
    softirqs: PerCpuArray<MapData, SoftirqCounters> = MAP_SOFTIRQS,
    napi_slots: PerCpuArray<MapData, NapiTable> = MAP_NAPI_SLOTS,
    napi: PerCpuHashMap<MapData, NapiKey, NapiCounters> = MAP_NAPI,
    runq_hist: PerCpuArray<MapData, Hist> = MAP_RUNQ_HIST,
    csw: PerCpuArray<MapData, u64> = MAP_CSW,
    notable_lost: PerCpuArray<MapData, u64> = MAP_NOTABLE_LOST,
    service_ports: HashMap<MapData, ListenerKey, ServicePort> = MAP_SERVICE_PORTS,
    service_generations: Array<MapData, u32> = MAP_SERVICE_GENERATIONS,
    req_hist: PerCpuArray<MapData, Hist> = MAP_REQ_HIST,
}

/// The maps in a loaded object, with their kernel types (other types than the agent uses: none).
pub fn present(ebpf: &Ebpf) -> Vec<(String, Option<MapType>)> {
    ebpf.maps()
        .map(|(name, map)| (name.to_string(), map_type(map)))
        .collect()
}

fn map_type(map: &Map) -> Option<MapType> {
    Some(match map {
        Map::Array(_) => MapType::Array,
        Map::PerCpuArray(_) => MapType::PerCpuArray,
        Map::HashMap(_) => MapType::Hash,
        Map::LruHashMap(_) => MapType::LruHash,
        Map::PerCpuHashMap(_) => MapType::PerCpuHash,
        Map::PerCpuLruHashMap(_) => MapType::LruPerCpuHash,
        Map::RingBuf(_) => MapType::RingBuf,
        _ => return None,
    })
}

/// Checks that every wanted map is present under its exact name with a type its handle accepts.
/// The name lookup done at load; the unit tests run it against the compiled object.
pub fn check(
    present: &[(String, Option<MapType>)],
    wanted: &[(&'static str, &'static [MapType])],
) -> Result<(), MapsError> {
    for &(name, types) in wanted {
        match present.iter().find(|(n, _)| n == name) {
            None => {
                let mut names: Vec<String> = present.iter().map(|(n, _)| n.clone()).collect();
                names.sort();
                return Err(MapsError::Missing {
                    name,
                    present: names,
                });
            }
            Some((_, found)) if !found.is_some_and(|t| types.contains(&t)) => {
                return Err(MapsError::WrongType {
                    name,
                    found: found.map_or("unsupported".into(), |t| format!("{t:?}")),
                    expected: format!("{types:?}"),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn take<T: Handle>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, MapsError> {
    let map = ebpf.take_map(name).ok_or_else(|| MapsError::Missing {
        name,
        present: ebpf.maps().map(|(n, _)| n.to_string()).collect(),
    })?;
    T::try_from(map).map_err(|e| MapsError::WrongType {
        name,
        found: e.to_string(),
        expected: format!("{:?}", T::MAP_TYPES),
    })
}

impl BpfMaps {
    /// Advances the tick epoch, then reads every map.
    pub fn read(&mut self, services: &ServiceIndex) -> BpfSnapshot {
        let finished = self.epoch;
        self.epoch += 1;
        let _ = self.config.set(CONFIG_EPOCH, self.epoch, 0);
        let mut failed = Vec::new();
        let held = &mut self.held;
        let softirqs = hold_last_good(
            &mut held.softirqs,
            per_cpu_array(&self.softirqs),
            MAP_SOFTIRQS,
            &mut failed,
        );
        let runq_hist = hold_last_good(
            &mut held.runq_hist,
            per_cpu_first(&self.runq_hist, add_hist).map(|h| h.buckets.to_vec()),
            MAP_RUNQ_HIST,
            &mut failed,
        );
        let context_switches = hold_last_good(
            &mut held.context_switches,
            per_cpu_first_values(&self.csw),
            MAP_CSW,
            &mut failed,
        );
        let notable_lost = hold_last_good(
            &mut held.notable_lost,
            per_cpu_first(&self.notable_lost, |a: &mut u64, b| *a += b),
            MAP_NOTABLE_LOST,
            &mut failed,
        );
        let irqs = hold_last_good(
            &mut held.irqs,
            whole_per_cpu_hash(&self.irqs, |a: &mut IrqCounters, b| {
                a.count += b.count;
                a.time_ns += b.time_ns;
                a.timed += b.timed;
            }),
            MAP_IRQS,
            &mut failed,
        );
        let (req_hist, owed_ports) = (&self.req_hist, &self.owed_ports);
        let request_hist = read_request_hists(
            services,
            &mut held.request_hist,
            |index| {
                // Not zeroed yet for its new owner (see `OwedPorts`), who has counted nothing.
                if owed_ports.holds_old_counts(index) {
                    return Ok(Hist::default().buckets.to_vec());
                }
                let values = req_hist.get(&index, 0).map_err(|e| e.to_string())?;
                Ok(sum(&values, &add_hist).buckets.to_vec())
            },
            &mut failed,
        );
        BpfSnapshot {
            listeners: self.read_listeners(finished),
            irqs,
            softirqs,
            napi: {
                let read = self.read_napi();
                hold_high_water(&mut self.napi_high_water, read)
            },
            napi_entries: {
                let entries = &mut self.napi_entries;
                // A device's totals are held until its overflow entry is deleted: the same
                // entry until then.
                let held: BTreeSet<NapiKey> = self.napi_high_water.keys().copied().collect();
                entries.keep_only(&held);
                held.iter().map(|key| (*key, entries.of(*key))).collect()
            },
            runq_hist,
            context_switches,
            request_hist,
            notable_lost,
            failed_reads: failed,
        }
    }

    /// Marks the start of a sampling period of the duty-cycled sensors (`bpf_ktime_get_ns` time).
    pub fn set_sample_start(&mut self, now_ns: u64) -> Result<(), MapError> {
        self.config.set(CONFIG_SAMPLE_START_NS, now_ns, 0)
    }

    /// NAPI devices' overflow entries are deleted after two windows of `window` idle
    /// (`idle_napi`; the listeners' are the collector's, `stale_listeners`).
    pub fn set_window(&mut self, window: std::time::Duration) {
        self.idle_napi = IdleNapi::for_windows_of(window);
    }

    /// Per device (namespace and ifindex): the counts in the per-CPU slots plus those moved out
    /// of slots. Deletes the moved counts of devices no longer polled (see [`super::idle_napi`]),
    /// only when the slots were read: a device may be in one.
    fn read_napi(&mut self) -> BTreeMap<NapiKey, NapiCounters> {
        let mut moved = per_cpu_hash(&self.napi, add_napi);
        let Ok(per_cpu) = self.napi_slots.get(&0, 0) else {
            return moved;
        };
        let in_slots: BTreeSet<NapiKey> = per_cpu
            .iter()
            .flat_map(|cpu| cpu.slots.iter().filter(|s| s.napi != 0).map(|s| s.key))
            .collect();
        for key in self.idle_napi.update(Instant::now(), &moved, &in_slots) {
            // A failure (already gone) changes nothing; the mark goes either way, so that a
            // device polled again is not held at its old totals.
            let _ = self.napi.remove(&key);
            moved.remove(&key);
            self.napi_high_water.remove(&key);
            self.napi_entries.forget(&key);
        }
        merge_napi(moved, per_cpu.iter())
    }

    fn read_listeners(&mut self, finished_epoch: u64) -> BTreeMap<ListenerKey, ListenerBpf> {
        let mut complete = true;
        let mut read = BTreeMap::new();
        for entry in self.listeners.iter() {
            let Ok((key, per_cpu)) = entry else {
                complete = false;
                continue;
            };
            let mut merged = merge_listener(per_cpu.iter(), finished_epoch);
            merged.entry = self.listener_entries.of(key);
            read.insert(key, merged);
        }
        if complete {
            self.listener_entries
                .keep_only(&read.keys().copied().collect());
        }
        read
    }

    /// Deletes the entries of listeners gone for good (see `stale_listeners`). A failure (the
    /// entry is already gone: the LRU evicted it) changes nothing. Either way a new entry under
    /// the key is another ([`EntryIds`]).
    pub fn delete_listeners(&mut self, keys: &[ListenerKey]) {
        for key in keys {
            let _ = self.listeners.remove(key);
            self.listener_entries.forget(key);
        }
    }

    /// Makes `ports` (listed at `now`) the set of listening ports whose requests the latency
    /// sensor times, with those missing from it for less than the grace of `services`.
    ///
    /// The kernel caches each socket's verdict (timed under an index, or untimed) while the
    /// generation it was made under is current: the index's own for a timed verdict, the untimed
    /// one otherwise. So, in this order: remove the vanished keys (and those whose removal failed
    /// before) and bump their indices' generations, and those of indices handed to another
    /// listener, making sockets of a vanished listener stop writing under its index; insert the
    /// new keys (and those whose insert failed before), each with its index's generation, an
    /// index handed to another listener zeroed right before; then, if one was written, bump the
    /// untimed generation, so sockets judged untimed a moment ago are judged again. The indices
    /// of listeners still in the set are left alone: their sockets keep the requests they are
    /// timing.
    ///
    /// A write that fails is tried again at every later call until it works (a port's, or the
    /// listener comes or goes, which replaces it): see [`OwedPorts`]. Returns the writes that
    /// failed at this call, each with the error.
    pub fn set_service_ports(
        &mut self,
        services: &mut ServiceIndex,
        ports: &[ListenerKey],
        now: Instant,
    ) -> Unwritten {
        let changes = services.update(ports, now);
        self.write_service_changes(&changes)
    }

    /// Adds `keys`, seen beginning to listen, to the timed set between ticks (see
    /// [`ServiceIndex::listening`]), in one write; the other listeners stay as they are until
    /// the next tick.
    pub fn add_service_ports(
        &mut self,
        services: &mut ServiceIndex,
        keys: &[ListenerKey],
    ) -> Unwritten {
        let changes = services.listening(keys);
        self.write_service_changes(&changes)
    }

    fn write_service_changes(&mut self, changes: &ServiceChanges) -> Unwritten {
        // Taken out for the call, so the maps can be written through `PortWrites` meanwhile.
        let mut owed = std::mem::take(&mut self.owed_ports);
        let unwritten = owed.write(changes, self);
        self.owed_ports = owed;
        unwritten
    }
}

impl PortWrites for BpfMaps {
    fn port(&mut self, key: ListenerKey, index: Option<u32>) -> Result<(), String> {
        let Some(index) = index else {
            return removed(self.service_ports.remove(&key));
        };
        let generation = *self
            .service_generations_now
            .get(index as usize)
            .ok_or_else(|| format!("index {index} is out of range"))?;
        self.service_ports
            .insert(key, ServicePort { index, generation }, 0)
            .map_err(|e| e.to_string())
    }

    /// A failed write leaves the generation (and `service_generations_now`) as it was: the
    /// sockets under that index go on writing there until a later try works.
    fn bump(&mut self, index: u32) -> Result<(), String> {
        let now = self
            .service_generations_now
            .get_mut(index as usize)
            .ok_or_else(|| format!("index {index} is out of range"))?;
        let next = now.wrapping_add(1);
        self.service_generations
            .set(index, next, 0)
            .map_err(|e| e.to_string())?;
        *now = next;
        Ok(())
    }

    fn zero(&mut self, index: u32) -> Result<(), String> {
        let cpus = aya::util::nr_cpus().map_or(1, |n| n);
        let zeros =
            PerCpuValues::try_from(vec![Hist::default(); cpus]).map_err(|e| e.to_string())?;
        self.req_hist
            .set(index, zeros, 0)
            .map_err(|e| e.to_string())
    }

    fn untimed_again(&mut self) {
        let now = self.config.get(&CONFIG_UNTIMED_GENERATION, 0).unwrap_or(0);
        let _ = self
            .config
            .set(CONFIG_UNTIMED_GENERATION, now.wrapping_add(1), 0);
    }
}

/// Each service's cumulative request histogram, read with `read` from its index: those timed now,
/// and those freed but not handed to another listener yet, under the listener that had them.
///
/// A listener missing from one tick's dump (a restart, its namespace's dump failed) loses its
/// index for that tick and gets it back, histogram untouched, when it returns. Its histogram is
/// read all the while, so every sample has it, unchanged, and a window takes only what was added
/// since its start; without it the sample after its return had no earlier histogram to subtract,
/// and the window counted every request since the listener was first timed. A key absent from a
/// sample is then one whose histogram restarts: newly timed, or back on another index (zeroed or
/// never used) after its own was given to another listener.
///
/// Only the indices that have an owner (see [`ServiceIndex::readable`]) are read: one map read
/// each, not one per entry of the whole array. An index whose read fails gives the last good
/// read of it under the same listener (`held`, see [`Held`]), and is added to `failed`; one never
/// read well under that listener is left out (newly timed: its histogram counts from 0, all of it
/// since it was timed).
pub(crate) fn read_request_hists(
    services: &ServiceIndex,
    held: &mut BTreeMap<(ListenerKey, u32), Vec<u64>>,
    read: impl Fn(u32) -> Result<Vec<u64>, String>,
    failed: &mut Vec<(String, String)>,
) -> BTreeMap<ListenerKey, Vec<u64>> {
    let readable: BTreeSet<(ListenerKey, u32)> = services.readable().collect();
    held.retain(|pair, _| readable.contains(pair));
    readable
        .into_iter()
        .filter_map(|(key, index)| match read(index) {
            Ok(h) => {
                held.insert((key, index), h.clone());
                Some((key, h))
            }
            Err(e) => {
                failed.push((format!("{MAP_REQ_HIST} index {index}"), e));
                Some((key, held.get(&(key, index))?.clone()))
            }
        })
        .collect()
}

/// One listener's per-CPU counters as one: counts summed, the peak of the CPUs that enqueued in
/// the epoch just finished, and the limit of the CPU that enqueued last.
///
/// The limit is copied from the listener at each enqueue, and a CPU keeps the one of its own
/// last enqueue: after the listener listens again with a smaller backlog, CPUs that have not
/// enqueued since still hold the old one, so the largest would be stale. The CPU whose slots
/// have the newest epoch enqueued last (within a tick, which of several did is unknown: the
/// largest of theirs).
fn merge_listener<'a>(
    per_cpu: impl Iterator<Item = &'a ListenerCounters>,
    finished_epoch: u64,
) -> ListenerBpf {
    let slot = (finished_epoch & 1) as usize;
    let mut merged = ListenerBpf::default();
    let mut newest = 0;
    for c in per_cpu {
        merged.enqueued += c.enqueued;
        merged.synack_retrans += c.synack_retrans;
        let last = c.slot_epoch[0].max(c.slot_epoch[1]);
        if last > newest {
            newest = last;
            merged.backlog_limit = c.backlog_limit;
        } else if last == newest {
            merged.backlog_limit = merged.backlog_limit.max(c.backlog_limit);
        }
        if c.slot_epoch[slot] == finished_epoch {
            let peak = merged.tick_peak.unwrap_or(0).max(c.slot_max[slot]);
            merged.tick_peak = Some(peak);
        }
    }
    merged
}

/// Adds each CPU's slots to the counts moved out of slots, device by device.
fn merge_napi<'a>(
    moved: BTreeMap<NapiKey, NapiCounters>,
    per_cpu: impl Iterator<Item = &'a NapiTable>,
) -> BTreeMap<NapiKey, NapiCounters> {
    let mut out = moved;
    for cpu in per_cpu {
        for slot in cpu.slots.iter().filter(|s| s.napi != 0) {
            add_napi(out.entry(slot.key).or_default(), &slot.counters);
        }
    }
    out
}

/// Per-device NAPI totals never fall while the programs are loaded, yet one read can see a total
/// low, or not at all: a slot's counts moved to the overflow map after that map was read and
/// before the slots were are in neither (a device whose counts were only in that slot is missing
/// from the read), and a failed read of the slots leaves out every such device. A window ending
/// on that read would count them in the next window as well, a missing device's whole history.
/// So each device's total is held at the highest value read, and a device missing from a read is
/// reported at its mark: those counts move to the next read and count once. A mark is dropped
/// with the device's overflow entry, once it is no longer polled ([`super::idle_napi`]), so they
/// are at most the overflow map's 1024 entries plus the slots.
fn hold_high_water(
    high: &mut BTreeMap<NapiKey, NapiCounters>,
    read: BTreeMap<NapiKey, NapiCounters>,
) -> BTreeMap<NapiKey, NapiCounters> {
    for (key, now) in read {
        let held = high.entry(key).or_default();
        held.polls = held.polls.max(now.polls);
        held.packets = held.packets.max(now.packets);
        held.budget_exhausted = held.budget_exhausted.max(now.budget_exhausted);
    }
    high.clone()
}

fn add_napi(a: &mut NapiCounters, b: &NapiCounters) {
    a.polls += b.polls;
    a.packets += b.packets;
    a.budget_exhausted += b.budget_exhausted;
}

fn add_hist(a: &mut Hist, b: &Hist) {
    for (x, y) in a.buckets.iter_mut().zip(b.buckets.iter()) {
        *x += y;
    }
}

/// The entries of a per-CPU hash map that could be read, each summed over the CPUs. For NAPI
/// only, whose totals are held at each device's high-water mark ([`hold_high_water`]): an entry
/// a read missed keeps its last totals.
fn per_cpu_hash<K: Pod + Ord, V: Pod + Default>(
    map: &PerCpuHashMap<MapData, K, V>,
    add: impl Fn(&mut V, &V),
) -> BTreeMap<K, V> {
    map.iter()
        .flatten()
        .map(|(key, values)| (key, sum(&values, &add)))
        .collect()
}

/// Every entry of a per-CPU hash map, each summed over the CPUs; an error if any read failed: an
/// entry left out would be counted from 0 by the next read that has it, everything since the
/// sensor loaded in one window.
fn whole_per_cpu_hash<K: Pod + Ord, V: Pod + Default>(
    map: &PerCpuHashMap<MapData, K, V>,
    add: impl Fn(&mut V, &V),
) -> Result<BTreeMap<K, V>, String> {
    map.iter()
        .map(|entry| {
            entry
                .map(|(key, values)| (key, sum(&values, &add)))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Every entry of a per-CPU array, each with its value on every CPU; an error if any read
/// failed (a partial array would read as entries fallen to 0).
fn per_cpu_array<V: Pod + Default>(
    map: &PerCpuArray<MapData, V>,
) -> Result<Vec<PerCpu<V>>, String> {
    map.iter()
        .map(|values| Ok(values.map_err(|e| e.to_string())?.to_vec()))
        .collect()
}

/// The first entry of a per-CPU array (a counter), with its value on every CPU.
fn per_cpu_first_values<V: Pod + Default>(
    map: &PerCpuArray<MapData, V>,
) -> Result<PerCpu<V>, String> {
    Ok(map.get(&0, 0).map_err(|e| e.to_string())?.to_vec())
}

/// The first entry of a per-CPU array (those of one entry: a histogram, a counter), summed over
/// the CPUs.
fn per_cpu_first<V: Pod + Default>(
    map: &PerCpuArray<MapData, V>,
    add: impl Fn(&mut V, &V),
) -> Result<V, String> {
    let values = map.get(&0, 0).map_err(|e| e.to_string())?;
    Ok(sum(&values, &add))
}

fn sum<V: Pod + Default>(values: &PerCpuValues<V>, add: &impl Fn(&mut V, &V)) -> V {
    let mut total = V::default();
    for v in values.iter() {
        add(&mut total, v);
    }
    total
}

/// The writes to `MAP_SERVICE_PORTS` and `MAP_SERVICE_GENERATIONS` owed, tried again every tick
/// until they work.
///
/// An insert that failed (the map full, no memory) leaves the listener untimed, and
/// [`ServiceIndex`] counts it as assigned, so it would not be added again until it left and came
/// back. A remove that failed leaves the entry of a listener gone: it takes one of the map's
/// `MAX_SERVICES` places (later inserts can fail with the map full), and it still names the index
/// the listener had, which may be handed to another listener. Such an entry carries the index's
/// generation from before the listener left, and that generation is bumped when it leaves (and
/// again at the index's reuse), so the kernel's verdicts made from it do not hold and nothing is
/// counted. So an index is written for a listener only once no other listener's entry names it
/// (see [`OwedPorts::write_inserts`]).
///
/// A bump that failed leaves the generation the old listener's sockets hold in their verdicts:
/// they go on counting under the index, and an entry written with that generation would let
/// them count into the new owner's histogram. So a failed bump is owed like a port write, and an
/// entry naming an index whose bump is owed waits for it; the histogram of an index handed to
/// another listener is zeroed only then, right before its entry is written, so it holds nothing
/// of the old listener's.
///
/// Each listener owes at most one write, the newest intent: one back before its remove worked is
/// owed its insert (which replaces the old entry), and one gone before its insert worked is owed
/// its remove.
#[derive(Debug, Default)]
pub(crate) struct OwedPorts {
    /// Per listener, the write owed: `Some(index)` an entry naming it, `None` no entry.
    owed: BTreeMap<ListenerKey, Option<u32>>,
    /// The map's entries as this agent wrote them (the map was created empty): each names an
    /// index. Kept to find an entry left naming an index handed to another listener.
    held: BTreeMap<ListenerKey, u32>,
    /// Indices owed a generation bump: those invalidated at this tick, and those whose bump
    /// failed before. One bump that works pays them all (any generation but the one the old
    /// listener's verdicts carry stops them).
    bumps: BTreeSet<u32>,
    /// Indices handed to another listener whose histogram still holds the old listener's counts:
    /// zeroed right before the new owner's entry is written.
    unzeroed: BTreeSet<u32>,
}

/// The writes a tick of [`BpfMaps::set_service_ports`] makes, behind a seam so that tests can
/// make them fail.
pub(crate) trait PortWrites {
    /// Writes `key`'s entry naming `index` with the index's generation now, or removes it (None;
    /// a removal that finds no entry is done).
    fn port(&mut self, key: ListenerKey, index: Option<u32>) -> Result<(), String>;
    /// Bumps the generation of `index`.
    fn bump(&mut self, index: u32) -> Result<(), String>;
    /// Zeroes the histogram of `index`.
    fn zero(&mut self, index: u32) -> Result<(), String>;
    /// Bumps the untimed generation (sockets judged untimed are judged again).
    fn untimed_again(&mut self);
}

/// The writes of one tick that failed, owed again at the next.
#[derive(Debug, Default, PartialEq)]
pub struct Unwritten {
    pub ports: Vec<UnwrittenPort>,
    pub generations: Vec<UnbumpedGeneration>,
}

/// A bump of an index's generation in `MAP_SERVICE_GENERATIONS` that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct UnbumpedGeneration {
    pub index: u32,
    pub error: String,
}

/// A write to `MAP_SERVICE_PORTS` that failed, owed again at the next tick.
#[derive(Debug, Clone, PartialEq)]
pub struct UnwrittenPort {
    pub key: ListenerKey,
    /// Whether it is the entry of a listener gone that could not be removed; else the entry of a
    /// listener timed that could not be written.
    pub removal: bool,
    pub error: String,
}

impl OwedPorts {
    /// One tick: takes in `changes`, then writes, in this order, the removals owed, the bumps
    /// owed, and the entries owed (each waiting for its index's bump, and zeroing a reused
    /// index's histogram right before), then the untimed generation if an entry was written.
    pub(crate) fn write(&mut self, changes: &ServiceChanges, w: &mut impl PortWrites) -> Unwritten {
        // Every tick: nothing to write while the set stays as it is and nothing is owed.
        if !self.take_in(changes) {
            return Unwritten::default();
        }
        let mut ports = self.write_removes(w);
        let generations = self.write_bumps(w);
        let (written, failed_inserts) = self.write_inserts(w);
        ports.extend(failed_inserts);
        if written {
            w.untimed_again();
        }
        Unwritten { ports, generations }
    }

    /// Whether the histogram of `index` still holds counts of a listener that had it before its
    /// owner now (not zeroed yet): its owner has counted nothing there so far.
    pub(crate) fn holds_old_counts(&self, index: u32) -> bool {
        self.unzeroed.contains(&index)
    }

    /// Takes in a tick's changes: the listeners added are owed their entry, those gone its
    /// removal, each replacing what it owed before; the indices invalidated a bump, those reused
    /// a zeroing. Returns whether anything is to be written.
    pub(crate) fn take_in(&mut self, changes: &ServiceChanges) -> bool {
        for &(key, _) in &changes.gone {
            self.owed.insert(key, None);
        }
        for &(key, index) in &changes.added {
            self.owed.insert(key, Some(index));
        }
        self.bumps.extend(changes.invalidated());
        self.unzeroed.extend(changes.reused.iter().copied());
        *changes != ServiceChanges::default() || !self.owed.is_empty() || !self.bumps.is_empty()
    }

    /// Bumps every generation owed; those that fail stay owed.
    fn write_bumps(&mut self, w: &mut impl PortWrites) -> Vec<UnbumpedGeneration> {
        let mut failed = Vec::new();
        for index in std::mem::take(&mut self.bumps) {
            if let Err(error) = w.bump(index) {
                self.bumps.insert(index);
                failed.push(UnbumpedGeneration { index, error });
            }
        }
        failed
    }

    /// Writes every removal owed with `write` (given `None`); those that fail stay owed. A
    /// removal must count as done when the map has no entry for the key.
    pub(crate) fn write_removes(&mut self, w: &mut impl PortWrites) -> Vec<UnwrittenPort> {
        let removes: Vec<ListenerKey> = self
            .owed
            .iter()
            .filter(|(_, intent)| intent.is_none())
            .map(|(key, _)| *key)
            .collect();
        let mut failed = Vec::new();
        for key in removes {
            if let Err(error) = self.remove(key, w) {
                failed.push(UnwrittenPort {
                    key,
                    removal: true,
                    error,
                });
            }
        }
        failed
    }

    /// Writes every entry owed with `write` (given `Some(index)`); those that fail stay owed.
    /// Before one is written, the entries of other listeners naming its index are removed (left
    /// by a removal that failed, or by an insert of theirs elsewhere that has not worked yet);
    /// while one cannot be, the entry waits. Returns whether one was written (sockets judged
    /// untimed must then be judged again), and the failures.
    pub(crate) fn write_inserts(&mut self, w: &mut impl PortWrites) -> (bool, Vec<UnwrittenPort>) {
        let inserts: Vec<(ListenerKey, u32)> = self
            .owed
            .iter()
            .filter_map(|(key, intent)| Some((*key, (*intent)?)))
            .collect();
        let mut written = false;
        let mut failed = Vec::new();
        for (key, index) in inserts {
            match self.insert(key, index, w) {
                Ok(()) => written = true,
                Err(error) => failed.push(UnwrittenPort {
                    key,
                    removal: false,
                    error,
                }),
            }
        }
        (written, failed)
    }

    fn insert(
        &mut self,
        key: ListenerKey,
        index: u32,
        w: &mut impl PortWrites,
    ) -> Result<(), String> {
        // Its bump was tried at this tick (`write_bumps`) and failed, reported on its own.
        if self.bumps.contains(&index) {
            return Err(format!(
                "waiting for the generation of index {index} in {MAP_SERVICE_GENERATIONS} to be \
                 bumped"
            ));
        }
        let stale: Vec<ListenerKey> = self
            .held
            .iter()
            .filter(|&(other, &named)| *other != key && named == index)
            .map(|(other, _)| *other)
            .collect();
        for other in stale {
            let waiting = |why: &str| {
                format!(
                    "waiting for the entry of port {} ({}, netns {}), which names the same \
                     index {index}, to be removed{why}",
                    other.port,
                    crate::window::family_name(other.family),
                    other.netns
                )
            };
            // Its removal owed was tried at this tick (`write_removes`) and failed, reported
            // under its own key: not tried twice.
            if self.owed.get(&other) == Some(&None) {
                return Err(waiting(""));
            }
            self.remove(other, w)
                .map_err(|e| waiting(&format!(": {e}")))?;
        }
        if self.unzeroed.contains(&index) {
            w.zero(index).map_err(|e| {
                format!("the histogram of index {index} in {MAP_REQ_HIST} could not be zeroed: {e}")
            })?;
            self.unzeroed.remove(&index);
        }
        w.port(key, Some(index))?;
        self.held.insert(key, index);
        self.owed.remove(&key);
        Ok(())
    }

    /// Removes `key`'s entry. A removal owed is then done; an insert owed stays owed.
    fn remove(&mut self, key: ListenerKey, w: &mut impl PortWrites) -> Result<(), String> {
        w.port(key, None)?;
        self.held.remove(&key);
        if self.owed.get(&key) == Some(&None) {
            self.owed.remove(&key);
        }
        Ok(())
    }
}

/// A removal from a hash map that found no entry has nothing left to do: it is done.
pub(crate) fn removed(result: Result<(), MapError>) -> Result<(), String> {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Which histogram index of `MAP_REQ_HIST` belongs to which listening port.
///
/// A listener missing from the listeners listed stays timed for `grace` (a restart, a namespace
/// not readable for a tick): its entry stays in the map, so a service restarted on its port is
/// timed from its first request, not from the first tick that lists it again (s53 story AK F3:
/// a restart that a tick fell into lost every request until the next tick). Missing longer, it
/// is gone: its entry is removed and its index freed. A listener that comes back after that gets
/// its own index back, histogram untouched, so its cumulative counts stay continuous across
/// windows. Otherwise an index freed by a vanished listener is handed out again only when no
/// never-used one is left, and then the one freed longest ago; its histogram is zeroed first.
/// When neither is left, a new listener takes the index of the one missing longest, if any is
/// within its grace: a port listening now comes before one that may come back.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    assigned: BTreeMap<ListenerKey, u32>,
    /// How long a listener missing from the listed ones keeps its entry.
    grace: std::time::Duration,
    /// Of `assigned`, those missing from the latest update, with when each was first missed.
    missing_since: BTreeMap<ListenerKey, Instant>,
    /// Of `assigned`, those a report of a listen gave a place that no update has listed yet: an
    /// update that does not list one frees its place at once, with no grace, so that listens
    /// that close at once (any local user may make them) cannot hold the table's places for a
    /// window and take a restarting service's (s54 review3 L3-1).
    provisional: BTreeSet<ListenerKey>,
    /// Freed indices, oldest first, with the listener that had each.
    freed: std::collections::VecDeque<(u32, ListenerKey)>,
    next_unused: u32,
    /// Listeners beyond `MAX_SERVICES` that could not be timed, in key order.
    pub untimed: Vec<ListenerKey>,
}

/// What [`ServiceIndex::update`] changed.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ServiceChanges {
    /// Newly assigned: write them to the map.
    pub(crate) added: Vec<(ListenerKey, u32)>,
    /// Of `added`, indices that belonged to another listener: zero their histograms first.
    pub(crate) reused: Vec<u32>,
    /// Keys that lost their index, with it: remove them from the map.
    pub(crate) gone: Vec<(ListenerKey, u32)>,
}

impl ServiceChanges {
    /// The indices whose sockets must stop writing: those of the listeners gone, and those handed
    /// to another listener. A reused index was bumped when its listener left; bumping it again
    /// at its reuse stops writers that a failed bump back then left going, before its histogram
    /// is zeroed for the new owner. Every other index keeps its generation, and its sockets the
    /// requests they are timing.
    pub(crate) fn invalidated(&self) -> BTreeSet<u32> {
        let gone = self.gone.iter().map(|&(_, index)| index);
        gone.chain(self.reused.iter().copied()).collect()
    }
}

impl ServiceIndex {
    /// An index whose listeners keep their entries for `grace` while missing from the list.
    pub fn with_grace(grace: std::time::Duration) -> Self {
        Self {
            grace,
            ..Default::default()
        }
    }

    /// Makes `ports` the timed set at `now`, with the listeners missing from it for less than
    /// the grace.
    pub(crate) fn update(&mut self, ports: &[ListenerKey], now: Instant) -> ServiceChanges {
        let listed: BTreeSet<ListenerKey> = ports.iter().copied().collect();
        let unlisted_provisional: BTreeSet<ListenerKey> =
            self.provisional.difference(&listed).copied().collect();
        self.provisional.clear();
        self.missing_since.retain(|key, _| !listed.contains(key));
        for key in self.assigned.keys().filter(|k| !listed.contains(k)) {
            self.missing_since.entry(*key).or_insert(now);
        }
        let mut changes = ServiceChanges {
            gone: self
                .missing_since
                .iter()
                .filter(|(key, &since)| {
                    unlisted_provisional.contains(key)
                        || now.saturating_duration_since(since) >= self.grace
                })
                .filter_map(|(k, _)| Some((*k, *self.assigned.get(k)?)))
                .collect(),
            ..Default::default()
        };
        for &(key, index) in &changes.gone {
            self.assigned.remove(&key);
            self.missing_since.remove(&key);
            self.freed.push_back((index, key));
        }
        self.untimed.clear();
        // Returning listeners take their own indices back first: a new listener handed out the
        // oldest freed index in the same update could otherwise take one whose owner is back,
        // and that owner would restart on another, zeroed, index.
        for key in ports {
            self.assign_returning(*key, &mut changes);
        }
        for key in ports {
            if !self.assign_new(*key, &mut changes, true) {
                self.untimed.push(*key);
            }
        }
        changes
    }

    /// Adds `key`, seen beginning to listen, to the timed set between two updates, as
    /// [`ServiceIndex::update`] would with it listed: its own index back if it had one, else a
    /// never-used or freed one. Every other listener stays as the last update left it: none in
    /// its grace loses its index to a report (a listener that opens and closes at once would
    /// take the place of a service restarting on its port); one that cannot be given an index
    /// waits for the next update, which decides with every listener listed.
    ///
    /// Several at once are taken as [`ServiceIndex::update`] takes them: those returning first,
    /// so that a new one is not handed the index of one that is back in the same call.
    pub(crate) fn listening(&mut self, keys: &[ListenerKey]) -> ServiceChanges {
        let mut changes = ServiceChanges::default();
        for &key in keys {
            self.missing_since.remove(&key);
            self.assign_returning(key, &mut changes);
        }
        for &key in keys {
            self.assign_new(key, &mut changes, false);
        }
        self.provisional
            .extend(changes.added.iter().map(|&(key, _)| key));
        changes
    }

    /// Gives `key` back the index it had, if it had one that no other listener has taken.
    fn assign_returning(&mut self, key: ListenerKey, changes: &mut ServiceChanges) {
        if self.assigned.contains_key(&key) {
            return;
        }
        if let Some(pos) = self.freed.iter().position(|(_, k)| *k == key) {
            if let Some((index, _)) = self.freed.remove(pos) {
                self.assigned.insert(key, index);
                changes.added.push((key, index));
            }
        }
    }

    /// Gives `key` an index if it has none: a never-used one, else the one freed longest ago,
    /// else (`end_a_grace`) the one of the listener missing longest. Whether it has one now.
    fn assign_new(
        &mut self,
        key: ListenerKey,
        changes: &mut ServiceChanges,
        end_a_grace: bool,
    ) -> bool {
        if self.assigned.contains_key(&key) {
            return true;
        }
        let index = if self.next_unused < MAX_SERVICES {
            self.next_unused += 1;
            Some(self.next_unused - 1)
        } else {
            let reused = match self.freed.pop_front() {
                Some((index, _)) => Some(index),
                None if end_a_grace => self.end_grace_of_longest_missing(changes),
                None => None,
            };
            changes.reused.extend(reused);
            reused
        };
        match index {
            Some(index) => {
                self.assigned.insert(key, index);
                changes.added.push((key, index));
                true
            }
            None => false,
        }
    }

    /// Ends the grace of the listener missing longest, if any: it is gone, and its index is
    /// returned to be handed to another.
    fn end_grace_of_longest_missing(&mut self, changes: &mut ServiceChanges) -> Option<u32> {
        let (&key, _) = self.missing_since.iter().min_by_key(|(_, &since)| since)?;
        self.missing_since.remove(&key);
        let index = self.assigned.remove(&key)?;
        changes.gone.push((key, index));
        Some(index)
    }

    /// Every index with an owner and the listener it is read under: those assigned, and those
    /// freed and not handed out again, under the listener that had them (no socket writes there
    /// any more, so the histogram holds what that listener was timed at).
    pub(crate) fn readable(&self) -> impl Iterator<Item = (ListenerKey, u32)> + '_ {
        let assigned = self.assigned.iter().map(|(key, index)| (*key, *index));
        assigned.chain(self.freed.iter().map(|(index, key)| (*key, *index)))
    }

    #[cfg(test)]
    fn key_of(&self, index: u32) -> Option<ListenerKey> {
        self.assigned
            .iter()
            .find(|(_, &i)| i == index)
            .map(|(k, _)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The maps of the compiled eBPF object, read from the ELF file as the loader would (no
    /// kernel needed). None when the object was not built (AYA_BUILD_SKIP=1).
    fn object_maps() -> Option<Vec<(String, Option<MapType>)>> {
        let bytes = crate::sensors::EBPF_OBJECT;
        if bytes.is_empty() {
            return None;
        }
        let object = aya_obj::Object::parse(bytes).expect("the compiled eBPF object parses");
        let known = [
            MapType::Array,
            MapType::PerCpuArray,
            MapType::Hash,
            MapType::LruHash,
            MapType::PerCpuHash,
            MapType::LruPerCpuHash,
            MapType::RingBuf,
        ];
        Some(
            object
                .maps
                .iter()
                .map(|(name, map)| {
                    let found = known.into_iter().find(|t| *t as u32 == map.map_type());
                    (name.clone(), found)
                })
                .collect(),
        )
    }

    /// Every handle the agent takes at load names a map the compiled object has, of a type the
    /// handle accepts; so does the notable-event ring buffer and aya-log's.
    #[test]
    fn every_handle_names_a_map_of_the_compiled_object() {
        let Some(present) = object_maps() else {
            kpo_test_skip::skip("the eBPF object was not built (AYA_BUILD_SKIP=1)");
            return;
        };
        check(&present, BpfMaps::TAKEN).unwrap();
        check(&present, &[(MAP_NOTABLE, &[MapType::RingBuf])]).unwrap();
        check(&present, &[("AYA_LOGS", &[MapType::RingBuf])]).unwrap();
        assert_eq!(BpfMaps::TAKEN.len(), 12);
    }

    /// A name the object does not have fails the load, naming it and what the object has;
    /// a map of another type fails too. Nothing reads as zeros.
    #[test]
    fn a_misspelled_map_name_fails_at_load() {
        let present = object_maps().unwrap_or_else(|| {
            BpfMaps::TAKEN
                .iter()
                .map(|(name, types)| (name.to_string(), Some(types[0])))
                .collect()
        });
        let mut wanted = BpfMaps::TAKEN.to_vec();
        let listeners = wanted
            .iter()
            .position(|(n, _)| *n == MAP_LISTENERS)
            .unwrap();
        wanted[listeners].0 = "KPO_LISTENER";
        let err = check(&present, &wanted).unwrap_err();
        match &err {
            MapsError::Missing { name, present } => {
                assert_eq!(*name, "KPO_LISTENER");
                assert!(present.iter().any(|n| n == MAP_LISTENERS), "{present:?}");
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with("map KPO_LISTENER is not in the eBPF object (it has: "),
            "{text}"
        );
        // The right name with the wrong kind of map.
        let wrong: [(&str, &[MapType]); 1] = [(MAP_CONFIG, &[MapType::PerCpuArray])];
        assert_eq!(
            check(&present, &wrong),
            Err(MapsError::WrongType {
                name: MAP_CONFIG,
                found: "Array".into(),
                expected: "[PerCpuArray]".into(),
            })
        );
    }

    /// Defect: counts were keyed by ifindex alone, and every namespace's first veth has the
    /// same one, so devices of different namespaces were summed into one entry.
    #[test]
    fn napi_counts_are_kept_apart_by_namespace_and_summed_per_device() {
        let counts = |polls, packets, budget_exhausted| NapiCounters {
            polls,
            packets,
            budget_exhausted,
        };
        let in_ns = |netns, ifindex| NapiKey { netns, ifindex };
        let (a, b, host) = (
            in_ns(4026532001, 2),
            in_ns(4026532002, 2),
            in_ns(4026531840, 2),
        );
        let slot = |napi, key, c| NapiSlot {
            napi,
            period: 1,
            key,
            counters: c,
        };
        let mut cpu0 = NapiTable::default();
        cpu0.slots[3] = slot(0xffff_1000, a, counts(2, 10, 0));
        cpu0.slots[9] = slot(0xffff_2000, b, counts(5, 300, 1));
        cpu0.slots[12] = slot(0xffff_3000, NapiKey::BACKLOG, counts(7, 7, 0));
        let mut cpu1 = NapiTable::default();
        cpu1.slots[3] = slot(0xffff_1000, a, counts(1, 4, 0));
        // A free slot's leftovers are not counted.
        cpu1.slots[5] = slot(0, host, counts(100, 100, 100));
        cpu1.slots[40] = slot(0xffff_4000, host, counts(3, 30, 0));
        let moved = BTreeMap::from([(a, counts(10, 64, 1)), (NapiKey::BACKLOG, counts(1, 2, 0))]);

        let merged = merge_napi(moved, [cpu0, cpu1].iter());
        assert_eq!(merged.len(), 4, "{merged:?}");
        let get = |k: NapiKey| {
            let c = merged[&k];
            (c.polls, c.packets, c.budget_exhausted)
        };
        assert_eq!(get(a), (13, 78, 1), "two CPUs' slots and the moved counts");
        assert_eq!(get(b), (5, 300, 1));
        assert_eq!(get(host), (3, 30, 0));
        assert_eq!(get(NapiKey::BACKLOG), (8, 9, 0));
    }

    /// Defect: a read that caught a slot's counts between slot and overflow map showed the total
    /// low, and a window ending on it counted those counts again in the next one.
    #[test]
    fn a_napi_total_read_low_is_held_until_the_counts_are_seen_again() {
        let dev = NapiKey {
            netns: 4026532001,
            ifindex: 2,
        };
        let other = NapiKey {
            netns: 4026532001,
            ifindex: 3,
        };
        let counts = |polls, packets, budget_exhausted| NapiCounters {
            polls,
            packets,
            budget_exhausted,
        };
        let read = |pairs: &[(NapiKey, NapiCounters)]| pairs.iter().copied().collect();
        let as_tuples = |m: BTreeMap<NapiKey, NapiCounters>| {
            m.into_iter()
                .map(|(k, c)| (k.ifindex, c.polls, c.packets, c.budget_exhausted))
                .collect::<Vec<_>>()
        };
        let mut high = BTreeMap::new();
        let first = hold_high_water(&mut high, read(&[(dev, counts(100, 900, 2))]));
        assert_eq!(as_tuples(first), vec![(2, 100, 900, 2)]);
        // 40 polls in flight between the two maps: held at the earlier reading, field by field.
        let low = hold_high_water(&mut high, read(&[(dev, counts(60, 950, 2))]));
        assert_eq!(as_tuples(low), vec![(2, 100, 950, 2)]);
        // Seen again, and more since: the true total.
        let next = hold_high_water(
            &mut high,
            read(&[(dev, counts(130, 1000, 3)), (other, counts(5, 5, 0))]),
        );
        assert_eq!(as_tuples(next), vec![(2, 130, 1000, 3), (3, 5, 5, 0)]);
        // A device missing from a read (its only counts in flight to the overflow map, or the
        // slots unreadable) is reported at its mark, not as a device counting from 0.
        let missing = hold_high_water(&mut high, read(&[(other, counts(6, 6, 0))]));
        assert_eq!(as_tuples(missing), vec![(2, 130, 1000, 3), (3, 6, 6, 0)]);
        let back = hold_high_water(
            &mut high,
            read(&[(dev, counts(140, 1100, 3)), (other, counts(6, 6, 0))]),
        );
        assert_eq!(as_tuples(back), vec![(2, 140, 1100, 3), (3, 6, 6, 0)]);
    }

    /// An entry keeps its number while read; deleted by the agent, or gone from a complete
    /// read (the LRU evicted it), it is another when it comes back.
    #[test]
    fn entries_keep_their_number_until_deleted_or_gone() {
        let mut ids = EntryIds::default();
        let (a, b) = (key(80), key(443));
        let (ia, ib) = (ids.of(a), ids.of(b));
        assert_ne!(ia, ib);
        assert_eq!(ids.of(a), ia);
        ids.forget(&a);
        let ia2 = ids.of(a);
        assert!(ia2 != ia && ia2 != ib);
        // A complete read without `b`: gone.
        ids.keep_only(&BTreeSet::from([a]));
        assert_eq!(ids.of(a), ia2);
        let ib2 = ids.of(b);
        assert!(ib2 != ib && ib2 != ia2);
    }

    fn cpu(
        enqueued: u64,
        slot_epoch: [u64; 2],
        slot_max: [u32; 2],
        limit: u32,
    ) -> ListenerCounters {
        ListenerCounters {
            enqueued,
            synack_retrans: 0,
            slot_epoch,
            slot_max,
            backlog_limit: limit,
            full_reported_epoch: 0,
        }
    }

    /// Defect: the limit was the largest of the CPUs', so after the listener listened again
    /// with a smaller backlog, a CPU that had not enqueued since kept the old one in the merge.
    #[test]
    fn the_limit_is_the_one_of_the_cpu_that_enqueued_last() {
        // CPU 0 enqueued at epoch 4 under limit 511; CPU 1 at epoch 9, after a listen(128).
        let cpus = [cpu(10, [4, 3], [7, 2], 511), cpu(3, [8, 9], [1, 5], 128)];
        let merged = merge_listener(cpus.iter(), 9);
        assert_eq!(merged.backlog_limit, 128);
        assert_eq!((merged.enqueued, merged.tick_peak), (13, Some(5)));
        // In either order.
        let merged = merge_listener(cpus.iter().rev(), 9);
        assert_eq!(merged.backlog_limit, 128);
    }

    /// Defect: the epoch began at 0, which the zeroed values of a CPU that never enqueued have
    /// too: the first tick read a peak of 0 from them, and the programs took every new entry
    /// (`full_reported_epoch` 0) as already reported in that tick, sending no `listener_full`.
    #[test]
    fn values_created_zeroed_match_no_epoch() {
        let zeroed = ListenerCounters::default();
        // Only SYN-ACK retransmits: no CPU enqueued, so no peak and no limit.
        let merged = merge_listener([zeroed, zeroed].iter(), FIRST_EPOCH);
        assert_eq!((merged.tick_peak, merged.backlog_limit), (None, 0));
        // The programs report a full queue once per epoch, when `full_reported_epoch` differs.
        assert_ne!(zeroed.full_reported_epoch, FIRST_EPOCH as u32);
        // A CPU that enqueued in the first tick gives its peak; the zeroed one adds nothing.
        let first = cpu(2, [0, FIRST_EPOCH], [0, 4], 16);
        let merged = merge_listener([zeroed, first].iter(), FIRST_EPOCH);
        assert_eq!((merged.tick_peak, merged.backlog_limit), (Some(4), 16));
    }

    fn key(port: u16) -> ListenerKey {
        ListenerKey {
            netns: 1,
            port,
            family: AF_INET,
        }
    }

    #[test]
    fn service_indices_are_stable_returned_to_their_owner_and_reused_oldest_first() {
        let mut services = ServiceIndex::default();
        let c = services.update(&[key(80), key(443)], Instant::now());
        assert_eq!(c.added, vec![(key(80), 0), (key(443), 1)]);
        assert!(c.gone.is_empty() && c.reused.is_empty());
        // Unchanged set: nothing to write.
        assert_eq!(
            services.update(&[key(443), key(80)], Instant::now()),
            ServiceChanges::default()
        );
        // A vanished listener's index is not handed out while never-used ones remain...
        let c = services.update(&[key(443), key(8080)], Instant::now());
        assert_eq!(
            (c.added, c.gone),
            (vec![(key(8080), 2)], vec![(key(80), 0)])
        );
        assert_eq!(services.key_of(0), None);
        assert_eq!(services.key_of(2), Some(key(8080)));
        // ...and the listener gets it back when it returns, histogram kept (not in `reused`).
        let c = services.update(&[key(443), key(8080), key(80)], Instant::now());
        assert_eq!(c.added, vec![(key(80), 0)]);
        assert!(c.reused.is_empty());
        services.update(&[key(443), key(8080)], Instant::now());

        let many: Vec<ListenerKey> = (1000..1000 + MAX_SERVICES as u16).map(key).collect();
        let mut wanted = vec![key(443), key(8080)];
        wanted.extend_from_slice(&many[..MAX_SERVICES as usize - 3]);
        services.update(&wanted, Instant::now());
        assert!(services.untimed.is_empty());
        // Every index is now used once; the next listener gets index 0, freed longest ago and
        // zeroed, and one beyond the table is counted as untimed.
        wanted.extend_from_slice(&many[MAX_SERVICES as usize - 3..MAX_SERVICES as usize - 1]);
        let c = services.update(&wanted, Instant::now());
        assert_eq!(c.added, vec![(many[MAX_SERVICES as usize - 3], 0)]);
        assert_eq!(c.reused, vec![0]);
        assert_eq!(services.untimed.len(), 1);
    }

    /// s53 story AK F3: a service restarted on its port lost every request until the next tick
    /// that listed it, since the tick that found it missing removed its entry. Within the grace
    /// the entry stays, with no write at all; after it the listener is gone as before.
    #[test]
    fn a_listener_missing_within_its_grace_keeps_its_entry() {
        let grace = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut services = ServiceIndex::with_grace(grace);
        assert_eq!(services.update(&[key(80)], at(0)).added, vec![(key(80), 0)]);
        for (ports, secs) in [
            (&[][..], 1),
            (&[key(80)][..], 2),
            (&[][..], 3),
            (&[][..], 12),
        ] {
            assert_eq!(
                services.update(ports, at(secs)),
                ServiceChanges::default(),
                "{ports:?} at {secs} s"
            );
        }
        // Missing since 3 s: its grace ends at 13 s, counted from its latest miss, not its first.
        let c = services.update(&[], at(13));
        assert_eq!(c.invalidated(), BTreeSet::from([0]));
        assert_eq!((c.gone, c.added), (vec![(key(80), 0)], vec![]));
        // Back later: its own index again, histogram kept.
        let c = services.update(&[key(80)], at(14));
        assert_eq!((c.added, c.reused), (vec![(key(80), 0)], vec![]));
    }

    /// A socket the kernel saw begin to listen is timed between ticks as the next update would
    /// time it: a new index, or its own back, and a listener missing in its grace is back; the
    /// next update that lists it changes nothing.
    #[test]
    fn a_listener_seen_listening_between_ticks_is_timed_as_an_update_would() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut services = ServiceIndex::with_grace(Duration::from_secs(1));
        services.update(&[key(80), key(81)], at(0));
        assert_eq!(services.listening(&[key(443)]).added, vec![(key(443), 2)]);
        assert_eq!(services.listening(&[key(443)]), ServiceChanges::default());
        assert_eq!(
            services.update(&[key(80), key(81), key(443)], at(1)),
            ServiceChanges::default()
        );
        // 81 gone past its grace, back by the kernel's word: its own index, histogram kept.
        services.update(&[key(80), key(443)], at(2));
        assert_eq!(
            services.update(&[key(80), key(443)], at(3)).gone,
            vec![(key(81), 1)]
        );
        let c = services.listening(&[key(81)]);
        assert_eq!((c.added, c.reused), (vec![(key(81), 1)], vec![]));
        // 80 missing within its grace, listening again: no write, no longer missing.
        services.update(&[key(81), key(443)], at(4));
        assert_eq!(services.listening(&[key(80)]), ServiceChanges::default());
        assert!(services.update(&[key(81), key(443)], at(5)).gone.is_empty());
    }

    /// s54 review3: a place a listen report gave is freed by the first update that does not list
    /// it, with no grace (listens that close at once would otherwise hold places for a window:
    /// L3-1); one listed stays as any other. Several reports at once: one that is back gets its
    /// own index before a new one is handed the oldest freed (N3-f).
    #[test]
    fn places_given_by_listen_reports_are_provisional_until_an_update_lists_them() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut services = ServiceIndex::with_grace(Duration::from_secs(600));
        services.update(&[key(80)], at(0));
        services.listening(&[key(9000), key(9001)]);
        let c = services.update(&[key(80), key(9001)], at(1));
        assert_eq!(c.gone, vec![(key(9000), 1)]);
        // 9001 was listed: missing later, it has its grace.
        assert!(services.update(&[key(80)], at(2)).gone.is_empty());

        let mut ports: Vec<ListenerKey> = (0..MAX_SERVICES as u16).map(key).collect();
        let mut services = ServiceIndex::with_grace(Duration::ZERO);
        services.update(&ports, at(0));
        ports.retain(|k| k.port != 3 && k.port != 7);
        services.update(&ports, at(1));
        // 7 freed after 3; a new listener first in the report would take 3's index, the oldest
        // freed, were 3 not given it back first.
        let c = services.listening(&[key(5000), key(3)]);
        assert_eq!(c.added, vec![(key(3), 3), (key(5000), 7)]);
        assert_eq!(c.reused, vec![7]);
    }

    /// With every index taken, a new listener is timed on the index of the one missing longest
    /// (ending its grace) rather than left untimed while a port that may come back holds it.
    #[test]
    fn a_new_listener_takes_the_index_of_the_one_missing_longest_when_none_is_free() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut services = ServiceIndex::with_grace(Duration::from_secs(60));
        let mut ports: Vec<ListenerKey> = (0..MAX_SERVICES as u16).map(key).collect();
        services.update(&ports, at(0));
        ports.retain(|k| k.port != 7);
        services.update(&ports, at(1));
        // A report of a listen between ticks ends no grace (s54 review2 L3): the next update
        // decides, with every listener listed.
        assert_eq!(services.listening(&[key(5000)]), ServiceChanges::default());
        ports.retain(|k| k.port != 3);
        services.update(&ports, at(2));
        ports.push(key(5000));
        let c = services.update(&ports, at(3));
        assert_eq!(c.gone, vec![(key(7), 7)]);
        assert_eq!((c.added, c.reused), (vec![(key(5000), 7)], vec![7]));
        assert!(services.untimed.is_empty());
        // The other missing one keeps its index; one more new listener takes it, a third waits.
        ports.extend([key(5001), key(5002)]);
        let c = services.update(&ports, at(4));
        assert_eq!(c.gone, vec![(key(3), 3)]);
        assert_eq!(c.added, vec![(key(5001), 3)]);
        assert_eq!(services.untimed, vec![key(5002)]);
    }

    /// Defect: any change to the timed set bumped one generation shared by every index, so each
    /// request being timed anywhere on the host was dropped at its response (long ones most
    /// often: the p99 read low). Now only the indices of listeners gone or handed to another are
    /// invalidated; a listener that stays keeps its sockets' verdicts through any churn.
    #[test]
    fn only_the_indices_of_gone_or_reused_listeners_are_invalidated() {
        let mut services = ServiceIndex::default();
        let c = services.update(&[key(80)], Instant::now());
        assert_eq!(c.added, vec![(key(80), 0)]);
        // A listener appears elsewhere: no index loses its verdicts; keys were added, so the
        // untimed verdicts are judged again (`set_service_ports` bumps that generation then).
        let c = services.update(&[key(80), key(81)], Instant::now());
        assert!(c.invalidated().is_empty(), "{c:?}");
        assert_eq!(c.added, vec![(key(81), 1)]);
        // It goes: its own index only, and nothing added.
        let c = services.update(&[key(80)], Instant::now());
        assert_eq!(c.invalidated(), BTreeSet::from([1]));
        assert!(c.added.is_empty());

        // A model of the kernel's check: a verdict is (index, generation of its entry) and holds
        // while the index's generation is that one. Churn one listener per tick long enough to
        // hand out every index several times.
        let mut generations = [0u32; MAX_SERVICES as usize];
        let mut verdicts: BTreeMap<ListenerKey, (u32, u32)> = BTreeMap::new();
        let holds = |g: &[u32], (index, generation): (u32, u32)| g[index as usize] == generation;
        verdicts.insert(key(80), (0, 0));
        for tick in 0..3 * MAX_SERVICES as u16 {
            let churned = key(2000 + tick);
            let c = services.update(&[key(80), churned], Instant::now());
            for index in c.invalidated() {
                generations[index as usize] += 1;
            }
            for (gone, _) in &c.gone {
                let verdict = verdicts.remove(gone).expect("a gone key had a verdict");
                assert!(!holds(&generations, verdict), "{gone:?} still timed");
            }
            for &(added, index) in &c.added {
                verdicts.insert(added, (index, generations[index as usize]));
            }
            assert!(!c.invalidated().contains(&0), "tick {tick}: {c:?}");
            for (k, &verdict) in &verdicts {
                assert!(holds(&generations, verdict), "{k:?} lost its verdict");
            }
        }
        // The served listener kept its verdict from the first tick throughout.
        assert_eq!(verdicts[&key(80)], (0, 0));
        assert!(generations.iter().skip(1).all(|&g| g >= 2));
    }

    /// A stand-in for `KPO_SERVICE_PORTS` and the agent's ticks writing it: its entries (key,
    /// index), writes of chosen keys failing, and the writes each tick tried.
    #[derive(Default)]
    struct PortsTable {
        services: ServiceIndex,
        owed: OwedPorts,
        maps: FakeMaps,
    }

    /// The maps `set_service_ports` writes: the entries of `KPO_SERVICE_PORTS`, the generation
    /// bumps and histogram zeroings, with chosen writes failing; every write tried, in order.
    #[derive(Default)]
    struct FakeMaps {
        entries: BTreeMap<ListenerKey, u32>,
        failing_inserts: Vec<ListenerKey>,
        failing_removes: Vec<ListenerKey>,
        failing_bumps: Vec<u32>,
        /// The writes tried at the last tick, in order.
        tried: Vec<Write>,
        /// Whether the last tick bumped the untimed generation.
        untimed_again: bool,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Write {
        /// An insert naming an index, or a removal (None).
        Port(ListenerKey, Option<u32>),
        /// A generation bump of the index, and whether it worked.
        Bump(u32, bool),
        Zero(u32),
    }

    impl PortWrites for FakeMaps {
        fn port(&mut self, key: ListenerKey, index: Option<u32>) -> Result<(), String> {
            self.tried.push(Write::Port(key, index));
            match index {
                Some(_) if self.failing_inserts.contains(&key) => {
                    Err("No space left on device (os error 28)".to_string())
                }
                Some(index) => {
                    self.entries.insert(key, index);
                    Ok(())
                }
                None if self.failing_removes.contains(&key) => {
                    Err("Device or resource busy (os error 16)".to_string())
                }
                // As the kernel answers: ENOENT when there is no entry.
                None => removed(match self.entries.remove(&key) {
                    Some(_) => Ok(()),
                    None => Err(enoent()),
                }),
            }
        }

        fn bump(&mut self, index: u32) -> Result<(), String> {
            let works = !self.failing_bumps.contains(&index);
            self.tried.push(Write::Bump(index, works));
            works
                .then_some(())
                .ok_or_else(|| "Cannot allocate memory (os error 12)".to_string())
        }

        fn zero(&mut self, index: u32) -> Result<(), String> {
            self.tried.push(Write::Zero(index));
            Ok(())
        }

        fn untimed_again(&mut self) {
            self.untimed_again = true;
        }
    }

    /// What a tick tried and what came of it.
    #[derive(Debug, PartialEq)]
    struct Tick {
        /// Port writes in the order tried: an insert naming an index, or a removal (None).
        tried: Vec<(ListenerKey, Option<u32>)>,
        /// Whether an entry was written (sockets judged untimed are judged again).
        written: bool,
        /// The port writes that failed: the key, and whether it was a removal.
        failed: Vec<(ListenerKey, bool)>,
        /// The indices whose generation bump failed.
        unbumped: Vec<u32>,
    }

    impl PortsTable {
        /// One tick of `set_service_ports` with `ports` listening. None: nothing to write, the
        /// tick returns early.
        fn tick(&mut self, ports: &[ListenerKey]) -> Option<Tick> {
            self.maps.tried.clear();
            self.maps.untimed_again = false;
            let changes = self.services.update(ports, Instant::now());
            let owed_before = !self.owed.owed.is_empty() || !self.owed.bumps.is_empty();
            let unwritten = self.owed.write(&changes, &mut self.maps);
            if changes == ServiceChanges::default() && !owed_before {
                assert!(self.maps.tried.is_empty());
                return None;
            }
            let tried = self
                .maps
                .tried
                .iter()
                .filter_map(|w| match w {
                    Write::Port(key, index) => Some((*key, *index)),
                    _ => None,
                })
                .collect::<Vec<_>>();
            let written = self.maps.untimed_again;
            let failed = unwritten
                .ports
                .into_iter()
                .map(|f| (f.key, f.removal))
                .collect();
            Some(Tick {
                tried,
                written,
                failed,
                unbumped: unwritten.generations.into_iter().map(|g| g.index).collect(),
            })
        }

        fn fail(&mut self, inserts: &[ListenerKey], removes: &[ListenerKey]) {
            self.maps.failing_inserts = inserts.to_vec();
            self.maps.failing_removes = removes.to_vec();
        }
    }

    fn enoent() -> MapError {
        MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
        })
    }

    fn tick(
        tried: &[(ListenerKey, Option<u32>)],
        written: bool,
        failed: &[(ListenerKey, bool)],
    ) -> Option<Tick> {
        Some(Tick {
            tried: tried.to_vec(),
            written,
            failed: failed.to_vec(),
            unbumped: Vec::new(),
        })
    }

    /// Defect: a listener whose `KPO_SERVICE_PORTS` insert failed (the map full, no memory)
    /// stayed assigned its index with no entry, so its requests went untimed until it left and
    /// came back. Now the insert is owed, and tried every tick until it works or the listener goes.
    #[test]
    fn a_failed_port_insert_is_tried_again_each_tick_until_it_works_or_the_listener_goes() {
        let mut table = PortsTable::default();
        let (a, b) = (key(80), key(81));
        table.fail(&[b], &[]);
        assert_eq!(
            table.tick(&[a, b]),
            tick(&[(a, Some(0)), (b, Some(1))], true, &[(b, false)])
        );
        // The set is unchanged, but b's entry is owed: tried again, still failing.
        assert_eq!(
            table.tick(&[a, b]),
            tick(&[(b, Some(1))], false, &[(b, false)])
        );
        // It works: written (the untimed verdicts are judged again), and owed no more.
        table.fail(&[], &[]);
        assert_eq!(table.tick(&[a, b]), tick(&[(b, Some(1))], true, &[]));
        assert_eq!(table.tick(&[a, b]), None);
        // A listener whose insert failed and that goes is owed its removal, which finds no entry
        // (ENOENT): done, and owed nothing more.
        let c = key(82);
        table.fail(&[c], &[]);
        assert_eq!(
            table.tick(&[a, b, c]),
            tick(&[(c, Some(2))], false, &[(c, false)])
        );
        assert_eq!(table.tick(&[a, b]), tick(&[(c, None)], false, &[]));
        assert_eq!(table.tick(&[a, b]), None);
        assert_eq!(table.maps.entries, BTreeMap::from([(a, 0), (b, 1)]));
    }

    /// Defect: a failed removal of a listener that left was ignored: its entry stayed, taking one
    /// of the map's MAX_SERVICES places for good and naming an index handed to others later.
    /// Now the removal is owed, and tried every tick until it works.
    #[test]
    fn a_failed_port_removal_is_tried_again_each_tick_until_it_works() {
        let mut table = PortsTable::default();
        let (a, b) = (key(80), key(81));
        assert_eq!(
            table.tick(&[a, b]),
            tick(&[(a, Some(0)), (b, Some(1))], true, &[])
        );
        table.fail(&[], &[b]);
        assert_eq!(table.tick(&[a]), tick(&[(b, None)], false, &[(b, true)]));
        assert_eq!(table.tick(&[a]), tick(&[(b, None)], false, &[(b, true)]));
        assert_eq!(table.maps.entries, BTreeMap::from([(a, 0), (b, 1)]));
        table.fail(&[], &[]);
        assert_eq!(table.tick(&[a]), tick(&[(b, None)], false, &[]));
        assert_eq!(table.maps.entries, BTreeMap::from([(a, 0)]));
        assert_eq!(table.tick(&[a]), None);
    }

    /// A listener back before its failed removal worked is owed its entry, not the removal: the
    /// insert replaces the old entry, and no removal tried afterwards takes the new one away.
    #[test]
    fn a_listener_back_before_its_failed_removal_worked_keeps_the_entry_written() {
        let mut table = PortsTable::default();
        let (a, b) = (key(80), key(81));
        table.tick(&[a, b]);
        table.fail(&[], &[b]);
        assert_eq!(table.tick(&[a]), tick(&[(b, None)], false, &[(b, true)]));
        // Back on its own index: only the insert is tried, and it works.
        assert_eq!(table.tick(&[a, b]), tick(&[(b, Some(1))], true, &[]));
        assert_eq!(table.tick(&[a, b]), None);
        assert_eq!(table.maps.entries, BTreeMap::from([(a, 0), (b, 1)]));

        // The same with the insert failing too at first: the insert stays owed (the removal
        // is never tried again), and once it works the entry is there.
        assert_eq!(table.tick(&[a]), tick(&[(b, None)], false, &[(b, true)]));
        table.fail(&[b], &[b]);
        assert_eq!(
            table.tick(&[a, b]),
            tick(&[(b, Some(1))], false, &[(b, false)])
        );
        table.fail(&[], &[b]);
        assert_eq!(table.tick(&[a, b]), tick(&[(b, Some(1))], true, &[]));
        assert_eq!(table.tick(&[a, b]), None);
        assert_eq!(table.maps.entries, BTreeMap::from([(a, 0), (b, 1)]));
        // Gone again while its insert was failing: the newest intent, the removal, is what is
        // owed, and it finds no entry: done.
        table.fail(&[b], &[]);
        assert_eq!(table.tick(&[a]), tick(&[(b, None)], false, &[]));
        assert_eq!(
            table.tick(&[a, b]),
            tick(&[(b, Some(1))], false, &[(b, false)])
        );
        assert_eq!(table.tick(&[a]), tick(&[(b, None)], false, &[]));
        assert_eq!(table.tick(&[a]), None);
        assert_eq!(table.maps.entries, BTreeMap::from([(a, 0)]));
    }

    /// An index handed to another listener is not written for it while the entry of the listener
    /// that had it is left: if the bumps of that index's generation had failed, that entry would
    /// time the old listener's sockets into the new one's histogram.
    #[test]
    fn a_reused_index_waits_until_no_stale_entry_names_it() {
        let mut table = PortsTable::default();
        let all: Vec<ListenerKey> = (0..MAX_SERVICES as u16).map(|p| key(1000 + p)).collect();
        table.tick(&all);
        assert_eq!(table.maps.entries.len(), MAX_SERVICES as usize);
        let (gone, new) = (all[0], key(80));
        let mut rest = all[1..].to_vec();
        table.fail(&[], &[gone]);
        assert_eq!(
            table.tick(&rest),
            tick(&[(gone, None)], false, &[(gone, true)])
        );
        // The new listener gets the index `gone` had; its entry waits for `gone`'s removal.
        rest.push(new);
        assert_eq!(
            table.tick(&rest),
            tick(&[(gone, None)], false, &[(gone, true), (new, false)])
        );
        assert_eq!(table.maps.entries.get(&new), None);
        assert_eq!(
            table.tick(&rest).unwrap().failed,
            [(gone, true), (new, false)]
        );
        // The removal works: then, in the same tick, the entry naming index 0 is written.
        table.fail(&[], &[]);
        assert_eq!(
            table.tick(&rest),
            tick(&[(gone, None), (new, Some(0))], true, &[])
        );
        assert_eq!(table.maps.entries.get(&new), Some(&0));
        assert_eq!(table.maps.entries.get(&gone), None);
        assert_eq!(table.tick(&rest), None);
    }

    /// All `MAX_SERVICES` indices in use, then the listener on index 0 gone (its removal and
    /// the generation bump of index 0 tried, the bump failing on `failing_bumps`): the table,
    /// the listeners left and a new one, which will be handed index 0.
    fn full_table_with_index_0_freed(
        failing_bumps: &[u32],
    ) -> (PortsTable, Vec<ListenerKey>, ListenerKey) {
        let mut table = PortsTable::default();
        let all: Vec<ListenerKey> = (0..MAX_SERVICES as u16).map(|p| key(1000 + p)).collect();
        table.tick(&all);
        table.maps.failing_bumps = failing_bumps.to_vec();
        let bumped = failing_bumps.is_empty();
        let t = table.tick(&all[1..]).unwrap();
        assert_eq!(
            table.maps.tried,
            [Write::Port(all[0], None), Write::Bump(0, bumped)]
        );
        assert_eq!(t.unbumped, if bumped { vec![] } else { vec![0] });
        (table, all[1..].to_vec(), key(80))
    }

    /// Defect: a failed bump of an index's generation (at its listener's leaving, at its reuse)
    /// was not tried again, and the new owner's entry was written with the generation the old
    /// listener's sockets held in their verdicts: they counted into the new owner's histogram.
    /// Now the bump is owed, tried every tick, and the index's entry waits for it.
    #[test]
    fn a_failed_generation_bump_is_tried_again_each_tick_and_the_index_waits_for_it() {
        let (mut table, mut ports, new) = full_table_with_index_0_freed(&[0]);
        // Nothing else changes: the bump is still owed, and tried again.
        let t = table.tick(&ports).unwrap();
        assert_eq!(table.maps.tried, [Write::Bump(0, false)]);
        assert_eq!(t.unbumped, [0]);
        // Index 0 handed to a new listener: neither zeroed nor written while its bump fails.
        ports.push(new);
        for _ in 0..2 {
            let t = table.tick(&ports).unwrap();
            assert_eq!(table.maps.tried, [Write::Bump(0, false)]);
            assert_eq!((t.failed, t.unbumped), (vec![(new, false)], vec![0]));
            assert_eq!(table.maps.entries.get(&new), None);
        }
        // The bump works: one is enough, then the zeroing and the entry, in the same tick.
        table.maps.failing_bumps.clear();
        let t = table.tick(&ports).unwrap();
        assert_eq!(
            table.maps.tried,
            [
                Write::Bump(0, true),
                Write::Zero(0),
                Write::Port(new, Some(0))
            ]
        );
        assert!(
            t.written && t.failed.is_empty() && t.unbumped.is_empty(),
            "{t:?}"
        );
        assert_eq!(table.maps.entries.get(&new), Some(&0));
        assert_eq!(table.tick(&ports), None);
    }

    /// Defect: the histogram of an index handed to another listener was zeroed at the tick of
    /// the handing, even when the new owner's entry then waited (a bump failing, an old entry
    /// left): the old listener's sockets went on counting there until the entry was written.
    /// Now it is zeroed only after a bump worked, right before the entry is written, and read
    /// as empty until then.
    #[test]
    fn a_reused_index_is_zeroed_only_after_its_bump_worked_right_before_its_entry() {
        // The bump at the leaving works, the one at the reuse fails.
        let (mut table, mut ports, new) = full_table_with_index_0_freed(&[]);
        table.maps.failing_bumps = vec![0];
        ports.push(new);
        table.tick(&ports);
        assert_eq!(table.maps.tried, [Write::Bump(0, false)]);
        assert!(table.owed.holds_old_counts(0));
        table.maps.failing_bumps.clear();
        table.tick(&ports);
        assert_eq!(
            table.maps.tried,
            [
                Write::Bump(0, true),
                Write::Zero(0),
                Write::Port(new, Some(0))
            ]
        );
        assert!(!table.owed.holds_old_counts(0));

        // The bumps work, but the old listener's entry is left: zeroed when it is removed and
        // the entry written, not at the handing.
        let mut table = PortsTable::default();
        let all: Vec<ListenerKey> = (0..MAX_SERVICES as u16).map(|p| key(1000 + p)).collect();
        table.tick(&all);
        let (gone, mut ports) = (all[0], all[1..].to_vec());
        table.fail(&[], &[gone]);
        table.tick(&ports);
        ports.push(new);
        table.tick(&ports);
        assert_eq!(
            table.maps.tried,
            [Write::Port(gone, None), Write::Bump(0, true)]
        );
        assert!(table.owed.holds_old_counts(0));
        table.fail(&[], &[]);
        table.tick(&ports);
        assert_eq!(
            table.maps.tried,
            [
                Write::Port(gone, None),
                Write::Zero(0),
                Write::Port(new, Some(0))
            ]
        );
        assert!(!table.owed.holds_old_counts(0));
    }

    /// With every write working, a tick is as before the bumps were owed: a listener gone has
    /// its entry removed and its index bumped; an index handed to another listener is bumped,
    /// zeroed and written in the same tick; a new index or a listener back on its own is only
    /// written; an unchanged set writes nothing.
    #[test]
    fn with_every_write_working_each_change_is_written_in_its_own_tick() {
        let (mut table, mut ports, new) = full_table_with_index_0_freed(&[]);
        ports.push(new);
        let t = table.tick(&ports).unwrap();
        assert_eq!(
            table.maps.tried,
            [
                Write::Bump(0, true),
                Write::Zero(0),
                Write::Port(new, Some(0))
            ]
        );
        assert!(
            t.written && t.failed.is_empty() && t.unbumped.is_empty(),
            "{t:?}"
        );
        assert_eq!(table.tick(&ports), None);
        // A listener gone and back on its own index: bumped at the leaving, then only written.
        let back = ports.remove(0);
        table.tick(&ports);
        assert_eq!(
            table.maps.tried,
            [Write::Port(back, None), Write::Bump(1, true)]
        );
        ports.push(back);
        table.tick(&ports);
        assert_eq!(table.maps.tried, [Write::Port(back, Some(1))]);
        assert_eq!(table.tick(&ports), None);

        let mut table = PortsTable::default();
        table.tick(&[key(80)]);
        assert_eq!(table.maps.tried, [Write::Port(key(80), Some(0))]);
        assert!(!table.owed.holds_old_counts(0));
    }

    /// A listener back on another index (its own went to another listener) whose insert fails
    /// keeps its old entry, naming its old index: that entry is removed before the old index is
    /// written for its new owner, and the returning listener's insert stays owed.
    #[test]
    fn an_entry_left_by_a_listener_back_elsewhere_is_removed_before_its_old_index_is_reused() {
        let mut table = PortsTable::default();
        let all: Vec<ListenerKey> = (0..MAX_SERVICES as u16).map(|p| key(1000 + p)).collect();
        table.tick(&all);
        let (first, second, new) = (all[0], all[1], key(80));
        // `first` leaves, its removal failing; then `second`, whose removal works. `new` takes
        // the oldest freed index, `first`'s, and waits.
        table.fail(&[], &[first]);
        table.tick(&all[1..]);
        let mut ports = all[2..].to_vec();
        ports.push(new);
        assert_eq!(
            table.tick(&ports),
            tick(
                &[(first, None), (second, None)],
                false,
                &[(first, true), (new, false)]
            )
        );
        // `first` comes back, on `second`'s freed index 1, its insert failing: its old entry
        // (index 0) stays, so `new` still waits, and is written once that entry is removed.
        ports.push(first);
        table.fail(&[first], &[first]);
        let t = table.tick(&ports).unwrap();
        assert_eq!(t.tried, [(first, None), (first, Some(1))]);
        assert_eq!(t.failed, [(new, false), (first, false)]);
        assert_eq!(table.maps.entries.get(&first), Some(&0));
        table.fail(&[first], &[]);
        assert_eq!(
            table.tick(&ports),
            tick(
                &[(first, None), (new, Some(0)), (first, Some(1))],
                true,
                &[(first, false)]
            )
        );
    }

    /// The kernel's answer to a removal that found no entry (ENOENT) counts as done; any other
    /// error does not.
    #[test]
    fn a_removal_that_finds_no_entry_is_done() {
        assert_eq!(removed(Ok(())), Ok(()));
        assert_eq!(removed(Err(enoent())), Ok(()));
        assert_eq!(removed(Err(MapError::KeyNotFound)), Ok(()));
        let busy = MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(libc::EBUSY),
        });
        let err = removed(Err(busy)).unwrap_err();
        assert!(err.contains("bpf_map_delete_elem"), "{err}");
    }

    /// Defect: a new listener listed before a returning one in the same update was handed the
    /// oldest freed index, the returning one's, and the returning one restarted on another,
    /// zeroed, index.
    #[test]
    fn a_returning_listener_gets_its_index_before_a_new_one_takes_it() {
        let mut services = ServiceIndex::default();
        let all: Vec<ListenerKey> = (0..MAX_SERVICES as u16).map(key).collect();
        services.update(&all, Instant::now());
        // key(0) freed first, key(1) after: key(0)'s index is the oldest freed.
        services.update(&all[1..], Instant::now());
        services.update(&all[2..], Instant::now());
        let mut ports = vec![key(5000)];
        ports.extend_from_slice(&all[..1]);
        ports.extend_from_slice(&all[2..]);
        let c = services.update(&ports, Instant::now());
        assert_eq!(c.added, vec![(key(0), 0), (key(5000), 1)]);
        assert_eq!(c.reused, vec![1]);
        // Read: every index with an owner, once.
        let mut read: Vec<u32> = services.readable().map(|(_, i)| i).collect();
        read.sort();
        assert_eq!(read, (0..MAX_SERVICES).collect::<Vec<_>>());
    }
}
