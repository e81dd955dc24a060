//! Reads the eBPF maps once per tick. Counters and histograms in the maps only grow; windows take
//! differences. Per-tick peaks come from the epoch slots (see `ListenerCounters`).
use std::collections::BTreeMap;

use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
    Ebpf, Pod,
};
use kpo_common::*;

/// One listener as the accept-queue sensor saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ListenerBpf {
    pub enqueued: u64,
    pub synack_retrans: u64,
    pub backlog_limit: u32,
    /// Largest accept-queue depth seen during the tick that just ended (None: no enqueue in it).
    pub tick_peak: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct BpfSnapshot {
    pub listeners: BTreeMap<ListenerKey, ListenerBpf>,
    pub irqs: BTreeMap<u32, IrqCounters>,
    pub softirqs: Vec<SoftirqCounters>,
    pub napi: BTreeMap<u32, NapiCounters>,
    pub runq_hist: Vec<u64>,
    pub context_switches: u64,
    pub request_hist: BTreeMap<ListenerKey, Vec<u64>>,
}

/// Advances the tick epoch, then reads every map. Returns None for a map that is absent.
pub fn read(ebpf: &mut Ebpf, epoch: &mut u64, services: &ServiceIndex) -> BpfSnapshot {
    let finished = *epoch;
    *epoch += 1;
    if let Some(Ok(mut config)) = ebpf.map_mut(MAP_CONFIG).map(Array::<_, u64>::try_from) {
        let _ = config.set(CONFIG_EPOCH, *epoch, 0);
    }
    BpfSnapshot {
        listeners: read_listeners(ebpf, finished),
        irqs: per_cpu_hash(ebpf, MAP_IRQS, |a: &mut IrqCounters, b| {
            a.count += b.count;
            a.time_ns += b.time_ns;
        }),
        softirqs: per_cpu_array(ebpf, MAP_SOFTIRQS, |a: &mut SoftirqCounters, b| {
            a.count += b.count;
            a.time_ns += b.time_ns;
            a.timed += b.timed;
        }),
        napi: read_napi(ebpf),
        runq_hist: per_cpu_array(ebpf, MAP_RUNQ_HIST, add_hist)
            .first()
            .map(|h| h.buckets.to_vec())
            .unwrap_or_default(),
        context_switches: per_cpu_array(ebpf, MAP_CSW, |a: &mut u64, b| *a += b)
            .first()
            .copied()
            .unwrap_or(0),
        request_hist: request_hist(ebpf, services),
    }
}

fn add_napi(a: &mut NapiCounters, b: &NapiCounters) {
    a.polls += b.polls;
    a.packets += b.packets;
    a.budget_exhausted += b.budget_exhausted;
}

/// Per ifindex: the counts in the per-CPU slots plus those moved out of slots.
fn read_napi(ebpf: &Ebpf) -> BTreeMap<u32, NapiCounters> {
    let mut out = per_cpu_hash(ebpf, MAP_NAPI, add_napi);
    let Some(Ok(table)) = ebpf
        .map(MAP_NAPI_SLOTS)
        .map(PerCpuArray::<&MapData, NapiTable>::try_from)
    else {
        return out;
    };
    let Ok(per_cpu) = table.get(&0, 0) else {
        return out;
    };
    for cpu in per_cpu.iter() {
        for slot in cpu.slots.iter().filter(|s| s.napi != 0) {
            add_napi(out.entry(slot.ifindex).or_default(), &slot.counters);
        }
    }
    out
}

fn add_hist(a: &mut Hist, b: &Hist) {
    for (x, y) in a.buckets.iter_mut().zip(b.buckets.iter()) {
        *x += y;
    }
}

fn read_listeners(ebpf: &Ebpf, finished_epoch: u64) -> BTreeMap<ListenerKey, ListenerBpf> {
    let slot = (finished_epoch & 1) as usize;
    let mut out = BTreeMap::new();
    let Some(Ok(map)) = ebpf
        .map(MAP_LISTENERS)
        .map(PerCpuHashMap::<_, ListenerKey, ListenerCounters>::try_from)
    else {
        return out;
    };
    for (key, per_cpu) in map.iter().flatten() {
        let mut merged = ListenerBpf::default();
        for c in per_cpu.iter() {
            merged.enqueued += c.enqueued;
            merged.synack_retrans += c.synack_retrans;
            merged.backlog_limit = merged.backlog_limit.max(c.backlog_limit);
            if c.slot_epoch[slot] == finished_epoch {
                let peak = merged.tick_peak.unwrap_or(0).max(c.slot_max[slot]);
                merged.tick_peak = Some(peak);
            }
        }
        out.insert(key, merged);
    }
    out
}

fn per_cpu_hash<K: Pod + Ord, V: Pod + Default>(
    ebpf: &Ebpf,
    name: &str,
    add: impl Fn(&mut V, &V),
) -> BTreeMap<K, V> {
    let mut out = BTreeMap::new();
    let Some(Ok(map)) = ebpf
        .map(name)
        .map(PerCpuHashMap::<&MapData, K, V>::try_from)
    else {
        return out;
    };
    for (key, values) in map.iter().flatten() {
        out.insert(key, sum(&values, &add));
    }
    out
}

fn per_cpu_array<V: Pod + Default>(ebpf: &Ebpf, name: &str, add: impl Fn(&mut V, &V)) -> Vec<V> {
    let Some(Ok(map)) = ebpf.map(name).map(PerCpuArray::<&MapData, V>::try_from) else {
        return Vec::new();
    };
    map.iter()
        .flatten()
        .map(|values| sum(&values, &add))
        .collect()
}

fn sum<V: Pod + Default>(values: &PerCpuValues<V>, add: &impl Fn(&mut V, &V)) -> V {
    let mut total = V::default();
    for v in values.iter() {
        add(&mut total, v);
    }
    total
}

/// Which histogram index of `MAP_REQ_HIST` belongs to which listening port.
///
/// A listener that vanishes for a while (a restart, a namespace not readable for a tick) gets its
/// own index back, histogram untouched, so its cumulative counts stay continuous across windows.
/// Otherwise an index freed by a vanished listener is handed out again only when no never-used
/// one is left, and then the one freed longest ago; its histogram is zeroed first.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    assigned: BTreeMap<ListenerKey, u32>,
    /// Freed indices, oldest first, with the listener that had each.
    freed: std::collections::VecDeque<(u32, ListenerKey)>,
    next_unused: u32,
    /// Listeners beyond `MAX_SERVICES` that could not be timed.
    pub untimed: usize,
}

/// What [`ServiceIndex::update`] changed.
#[derive(Debug, Default, PartialEq)]
struct ServiceChanges {
    /// Newly assigned: write them to the map.
    added: Vec<(ListenerKey, u32)>,
    /// Of `added`, indices that belonged to another listener: zero their histograms first.
    reused: Vec<u32>,
    /// Keys that lost their index: remove them from the map.
    gone: Vec<ListenerKey>,
}

impl ServiceIndex {
    /// Makes `ports` the timed set.
    fn update(&mut self, ports: &[ListenerKey]) -> ServiceChanges {
        let mut changes = ServiceChanges {
            gone: self
                .assigned
                .keys()
                .filter(|k| !ports.contains(k))
                .copied()
                .collect(),
            ..Default::default()
        };
        for key in &changes.gone {
            if let Some(index) = self.assigned.remove(key) {
                self.freed.push_back((index, *key));
            }
        }
        self.untimed = 0;
        for key in ports {
            if self.assigned.contains_key(key) {
                continue;
            }
            let index = if let Some(pos) = self.freed.iter().position(|(_, k)| k == key) {
                self.freed.remove(pos).map(|(index, _)| index)
            } else if self.next_unused < MAX_SERVICES {
                self.next_unused += 1;
                Some(self.next_unused - 1)
            } else {
                let reused = self.freed.pop_front().map(|(index, _)| index);
                changes.reused.extend(reused);
                reused
            };
            match index {
                Some(index) => {
                    self.assigned.insert(*key, index);
                    changes.added.push((*key, index));
                }
                None => self.untimed += 1,
            }
        }
        changes
    }

    #[cfg(test)]
    fn key_of(&self, index: u32) -> Option<ListenerKey> {
        self.assigned
            .iter()
            .find(|(_, &i)| i == index)
            .map(|(k, _)| *k)
    }
}

/// Only the assigned indices: one map read each, not one per entry of the whole array.
fn request_hist(ebpf: &Ebpf, services: &ServiceIndex) -> BTreeMap<ListenerKey, Vec<u64>> {
    let Some(Ok(map)) = ebpf
        .map(MAP_REQ_HIST)
        .map(PerCpuArray::<&MapData, Hist>::try_from)
    else {
        return BTreeMap::new();
    };
    services
        .assigned
        .iter()
        .filter_map(|(key, index)| {
            let values = map.get(index, 0).ok()?;
            Some((*key, sum(&values, &add_hist).buckets.to_vec()))
        })
        .collect()
}

/// Makes `ports` the set of listening ports whose requests the latency sensor times.
///
/// The kernel caches each socket's verdict (timed, and under which index) until the services
/// generation changes. So: remove the vanished keys and bump the generation, making sockets of a
/// vanished listener stop writing under its index, before that index is zeroed and handed to
/// another listener; bump it again once the new keys are in, so sockets judged untimed a moment
/// ago are judged again.
pub fn set_service_ports(ebpf: &mut Ebpf, services: &mut ServiceIndex, ports: &[ListenerKey]) {
    use aya::maps::HashMap;
    let changes = services.update(ports);
    if changes == ServiceChanges::default() {
        return;
    }
    if let Some(Ok(mut map)) = ebpf
        .map_mut(MAP_SERVICE_PORTS)
        .map(HashMap::<_, ListenerKey, u32>::try_from)
    {
        for key in &changes.gone {
            let _ = map.remove(key);
        }
    }
    bump_services_generation(ebpf);
    if let Some(Ok(mut hist)) = ebpf
        .map_mut(MAP_REQ_HIST)
        .map(PerCpuArray::<_, Hist>::try_from)
    {
        let cpus = aya::util::nr_cpus().map_or(1, |n| n);
        for index in &changes.reused {
            if let Ok(zeros) = PerCpuValues::try_from(vec![Hist::default(); cpus]) {
                let _ = hist.set(*index, zeros, 0);
            }
        }
    }
    if let Some(Ok(mut map)) = ebpf
        .map_mut(MAP_SERVICE_PORTS)
        .map(HashMap::<_, ListenerKey, u32>::try_from)
    {
        for (key, index) in &changes.added {
            let _ = map.insert(key, index, 0);
        }
    }
    bump_services_generation(ebpf);
}

fn bump_services_generation(ebpf: &mut Ebpf) {
    if let Some(Ok(mut config)) = ebpf.map_mut(MAP_CONFIG).map(Array::<_, u64>::try_from) {
        let now = config.get(&CONFIG_SERVICES_GENERATION, 0).unwrap_or(0);
        let _ = config.set(CONFIG_SERVICES_GENERATION, now.wrapping_add(1), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = services.update(&[key(80), key(443)]);
        assert_eq!(c.added, vec![(key(80), 0), (key(443), 1)]);
        assert!(c.gone.is_empty() && c.reused.is_empty());
        // Unchanged set: nothing to write.
        assert_eq!(
            services.update(&[key(443), key(80)]),
            ServiceChanges::default()
        );
        // A vanished listener's index is not handed out while never-used ones remain...
        let c = services.update(&[key(443), key(8080)]);
        assert_eq!((c.added, c.gone), (vec![(key(8080), 2)], vec![key(80)]));
        assert_eq!(services.key_of(0), None);
        assert_eq!(services.key_of(2), Some(key(8080)));
        // ...and the listener gets it back when it returns, histogram kept (not in `reused`).
        let c = services.update(&[key(443), key(8080), key(80)]);
        assert_eq!(c.added, vec![(key(80), 0)]);
        assert!(c.reused.is_empty());
        services.update(&[key(443), key(8080)]);

        let many: Vec<ListenerKey> = (1000..1000 + MAX_SERVICES as u16).map(key).collect();
        let mut wanted = vec![key(443), key(8080)];
        wanted.extend_from_slice(&many[..MAX_SERVICES as usize - 3]);
        services.update(&wanted);
        assert_eq!(services.untimed, 0);
        // Every index is now used once; the next listener gets index 0, freed longest ago and
        // zeroed, and one beyond the table is counted as untimed.
        wanted.extend_from_slice(&many[MAX_SERVICES as usize - 3..MAX_SERVICES as usize - 1]);
        let c = services.update(&wanted);
        assert_eq!(c.added, vec![(many[MAX_SERVICES as usize - 3], 0)]);
        assert_eq!(c.reused, vec![0]);
        assert_eq!(services.untimed, 1);
    }
}
