//! Loads the eBPF object and attaches each sensor's programs, switching a sensor off (never the
//! agent) when its tracepoint, a BTF field or the verifier says no.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    maps::{MapData, MapType, RingBuf},
    programs::{raw_trace_point::RawTracePointLinkId, RawTracePoint},
    Ebpf, EbpfLoader,
};
use kpo_common::{ListenerCounters, GLOBAL_OFFSETS, MAP_IRQS, MAP_LISTENERS, MAP_NOTABLE};
use tracing::{error, info, warn};

use super::{attached_time::AttachedTime, btf, ebpf_log, OffReason, SensorKind, SensorStatus};
use crate::collect::bpf_maps::{self, BpfMaps};

/// The compiled eBPF object, built by build.rs from `kpo-ebpf`.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kpo"));

/// Answers "does this raw tracepoint exist on this kernel?".
pub type TracepointCheck = Box<dyn Fn(&str) -> bool + Send>;

pub struct SensorOptions {
    pub btf_path: PathBuf,
    /// Sensors the operator switched off.
    pub disabled: Vec<SensorKind>,
    /// Duty-cycled sensors a duty fraction of 0 keeps off: never attached, so not loaded.
    pub never_sampled: Vec<SensorKind>,
    /// Overrides the kernel's answer to "does this raw tracepoint exist?". Production leaves it
    /// None and asks the kernel's BTF; tests use it to exercise the missing-tracepoint path.
    pub tracepoint_exists: Option<TracepointCheck>,
}

impl SensorOptions {
    pub fn new(btf_path: PathBuf) -> Self {
        Self {
            btf_path,
            disabled: Vec::new(),
            never_sampled: Vec::new(),
            tracepoint_exists: None,
        }
    }
}

/// What the kernel offers, learned once from its BTF.
struct KernelFacts {
    offsets: btf::ResolvedOffsets,
    btf: Option<btf::KernelBtf>,
}

impl KernelFacts {
    fn tracepoint_exists(&self, opts: &SensorOptions, tp: &str) -> bool {
        match (&opts.tracepoint_exists, &self.btf) {
            (Some(answer), _) => answer(tp),
            (None, Some(btf)) => btf.has_raw_tracepoint(tp),
            // Without BTF we cannot tell; the attach attempt decides.
            (None, None) => true,
        }
    }

    /// Why `kind` cannot run on this kernel's tracepoints, as far as BTF tells; a missing
    /// tracepoint is left to the check of each program.
    fn tracepoint_args_off(&self, kind: SensorKind) -> Option<OffReason> {
        let btf = self.btf.as_ref()?;
        kind.missing_arg(|tp| btf.raw_tracepoint_args(tp))
            .map(OffReason::MissingTracepointArg)
    }
}

pub struct Sensors {
    ebpf: Option<Ebpf>,
    /// The maps, taken out of `ebpf` at load into typed handles.
    maps: Option<BpfMaps>,
    /// The programs' log, until the agent takes it to read it (see [`ebpf_log::spawn`]).
    log: Option<ebpf_log::EbpfLog>,
    status: Vec<SensorStatus>,
    links: BTreeMap<SensorKind, Vec<(&'static str, RawTracePointLinkId)>>,
    /// How long the duty-cycled sensors other than the accept queue were attached since the
    /// last map read (see [`Sensors::take_attached_times`]).
    duty_time: AttachedTime,
    accept_queue_time: AttachedTime,
}

impl Sensors {
    /// Loads what can be loaded. Never fails: a sensor that cannot run is recorded as off, with the
    /// reason, and logged.
    pub fn load(opts: &SensorOptions) -> Sensors {
        raise_memlock_limit();
        let facts = match btf::KernelBtf::open(&opts.btf_path) {
            Ok(btf) => KernelFacts {
                offsets: btf.offsets(),
                btf: Some(btf),
            },
            Err(e) => {
                warn!("{e}; sensors that read kernel structs are off");
                KernelFacts {
                    offsets: btf::ResolvedOffsets::none(&e.to_string()),
                    btf: None,
                }
            }
        };
        let resolved = &facts.offsets;
        let mut sensors = Sensors {
            ebpf: None,
            maps: None,
            log: None,
            status: Vec::new(),
            links: BTreeMap::new(),
            duty_time: AttachedTime::default(),
            accept_queue_time: AttachedTime::default(),
        };
        let ebpf = if EBPF_OBJECT.is_empty() {
            Err("the eBPF object is empty (built with AYA_BUILD_SKIP=1)".to_string())
        } else {
            // Possible CPUs: per-CPU maps hold a value for each.
            let cpus = aya::util::nr_cpus().map_or(1, |n| n);
            let irq_entries = irq_map_entries(&read_interrupts(), cpus);
            let listener_entries = listener_map_entries(cpus);
            let load = |sized: bool| {
                let mut loader = EbpfLoader::new();
                if sized {
                    loader.map_max_entries(MAP_IRQS, irq_entries);
                    loader.map_max_entries(MAP_LISTENERS, listener_entries);
                }
                loader
                    .override_global(GLOBAL_OFFSETS, &resolved.offsets, true)
                    .override_global(ebpf_log::LEVEL_GLOBAL, &ebpf_log::level(), false)
                    .load(EBPF_OBJECT)
                    .map_err(|e| format!("loading the eBPF object failed: {}", with_causes(&e)))
            };
            match load(true) {
                // Larger maps the kernel refused (memory) must not cost every sensor: the
                // object's own sizes are tried once more.
                Err(reason)
                    if irq_entries > IRQ_MAP_DECLARED
                        || listener_entries > LISTENER_MAP_DECLARED =>
                {
                    warn!(
                        "{reason}; loading it again with room for {IRQ_MAP_DECLARED} IRQs and \
                         {LISTENER_MAP_DECLARED} listeners, not {irq_entries} and \
                         {listener_entries}"
                    );
                    load(false)
                }
                loaded => loaded,
            }
        };
        let mut ebpf = match ebpf {
            Ok(ebpf) => ebpf,
            Err(reason) => {
                warn!("{reason}; all eBPF sensors are off, /proc metrics continue");
                for kind in SensorKind::ALL {
                    sensors.set_status(kind, Some(OffReason::ObjectNotLoaded(reason.clone())));
                }
                return sensors;
            }
        };
        // Every map the agent uses is taken now, typed: a name or type the object does not
        // have is a build defect, reported here rather than read as zeros every tick.
        let notable = [(MAP_NOTABLE, &[MapType::RingBuf][..])];
        let maps = bpf_maps::check(&bpf_maps::present(&ebpf), &notable)
            .and_then(|()| BpfMaps::take(&mut ebpf));
        match maps {
            Ok(maps) => sensors.maps = Some(maps),
            Err(e) => {
                error!("{e}; all eBPF sensors are off, /proc metrics continue");
                for kind in SensorKind::ALL {
                    sensors.set_status(kind, Some(OffReason::ObjectMismatch(e.to_string())));
                }
                return sensors;
            }
        }
        sensors.log = ebpf_log::EbpfLog::init(&mut ebpf);
        for kind in SensorKind::ALL {
            let reason = sensors.prepare(&mut ebpf, kind, opts, &facts);
            sensors.set_status(kind, reason);
        }
        sensors.ebpf = Some(ebpf);
        // Low-rate sensors stay attached for the agent's lifetime.
        for kind in SensorKind::ALL.into_iter().filter(|k| !k.duty_cycled()) {
            if sensors.is_enabled(kind) {
                if let Err(reason) = sensors.attach(kind) {
                    sensors.set_status(kind, Some(reason));
                }
            }
        }
        for s in &sensors.status {
            match &s.reason {
                // Whether it is duty-cycled depends on the fraction: the `sensors` event says.
                None => info!(sensor = s.sensor.name(), "sensor on"),
                Some(r) => warn!(sensor = s.sensor.name(), reason = %r, "sensor off"),
            }
        }
        sensors
    }

    /// Checks the kernel offers what `kind` needs and loads its programs. Returns why not.
    fn prepare(
        &mut self,
        ebpf: &mut Ebpf,
        kind: SensorKind,
        opts: &SensorOptions,
        facts: &KernelFacts,
    ) -> Option<OffReason> {
        if opts.disabled.contains(&kind) {
            return Some(OffReason::Disabled);
        }
        // Said as such in the start's log too, not as the operator's "disabled by configuration".
        if opts.never_sampled.contains(&kind) {
            return Some(OffReason::NeverSampled);
        }
        let missing = kind.missing_offsets(&facts.offsets.offsets);
        if !missing.is_empty() {
            return Some(match &facts.offsets.unreadable {
                Some(reason) => OffReason::BtfUnreadable(reason.clone()),
                None => OffReason::MissingFields(missing),
            });
        }
        if let Some(reason) = facts.tracepoint_args_off(kind) {
            return Some(reason);
        }
        for &(program, tp) in kind.programs() {
            if !facts.tracepoint_exists(opts, tp) {
                return Some(OffReason::NoTracepoint(tp));
            }
            let prog: &mut RawTracePoint = match ebpf.program_mut(program).map(TryInto::try_into) {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    return Some(OffReason::WrongProgramType {
                        program,
                        error: with_causes(&e),
                    })
                }
                None => return Some(OffReason::ProgramMissing(program)),
            };
            if let Err(e) = prog.load() {
                return Some(match LoadRefusal::of(&e) {
                    LoadRefusal::NotPermitted(error) => OffReason::NotPermitted { program, error },
                    LoadRefusal::Rejected(error) => OffReason::Rejected { program, error },
                });
            }
        }
        None
    }

    fn set_status(&mut self, kind: SensorKind, reason: Option<OffReason>) {
        self.status.retain(|s| s.sensor != kind);
        self.status.push(SensorStatus {
            sensor: kind,
            enabled: reason.is_none(),
            duty_cycled: kind.duty_cycled(),
            reason,
        });
        self.status.sort_by_key(|s| s.sensor);
    }

    pub fn status(&self) -> &[SensorStatus] {
        &self.status
    }

    pub fn is_enabled(&self, kind: SensorKind) -> bool {
        self.status.iter().any(|s| s.sensor == kind && s.enabled)
    }

    /// Takes a map out of the object, e.g. the ring buffer to poll it on its own.
    pub fn take_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self.ebpf.as_mut()?.take_map(name)
    }

    /// The ring buffer of [`kpo_common::NotableEvent`]s (present and typed: checked at load).
    pub fn take_notable(&mut self) -> Option<RingBuf<MapData>> {
        RingBuf::try_from(self.take_map(MAP_NOTABLE)?).ok()
    }

    /// Loads and attaches the `cgroup/sysctl` watch on the cgroup v2 root (see
    /// [`super::sysctl_watch`]); dropping the watch's link with the object detaches it.
    pub fn attach_sysctl_watch(
        &mut self,
        cgroup_root: &std::path::Path,
    ) -> Result<super::sysctl_watch::SysctlWatch, super::sysctl_watch::WatchError> {
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or(super::sysctl_watch::WatchError::NotLoaded)?;
        super::sysctl_watch::SysctlWatch::attach(ebpf, cgroup_root)
    }

    /// The maps, typed; None when the eBPF object is not loaded.
    pub fn maps_mut(&mut self) -> Option<&mut BpfMaps> {
        self.maps.as_mut()
    }

    /// The programs' log, for the agent to read as records arrive ([`ebpf_log::spawn`]).
    pub fn take_log(&mut self) -> Option<ebpf_log::EbpfLog> {
        self.log.take()
    }

    /// Forwards the programs' log records waiting, when nobody took the log to read it.
    pub fn flush_log(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.flush();
        }
    }

    fn attach(&mut self, kind: SensorKind) -> Result<(), OffReason> {
        let Some(ebpf) = self.ebpf.as_mut() else {
            return Err(OffReason::ObjectNotLoaded("eBPF not loaded".into()));
        };
        let mut links = Vec::new();
        for &(program, tracepoint) in kind.programs() {
            let prog: &mut RawTracePoint = ebpf
                .program_mut(program)
                .and_then(|p| p.try_into().ok())
                .ok_or(OffReason::ProgramMissing(program))?;
            match prog.attach(tracepoint) {
                Ok(link) => links.push((program, link)),
                Err(e) => {
                    for (prog, link) in links {
                        detach(ebpf, prog, link);
                    }
                    return Err(OffReason::AttachFailed {
                        program,
                        tracepoint,
                        error: with_causes(&e),
                    });
                }
            }
        }
        self.links.insert(kind, links);
        Ok(())
    }

    fn detach(&mut self, kind: SensorKind) {
        let Some(ebpf) = self.ebpf.as_mut() else {
            return;
        };
        for (prog, link) in self.links.remove(&kind).unwrap_or_default() {
            detach(ebpf, prog, link);
        }
    }

    pub fn is_attached(&self, kind: SensorKind) -> bool {
        self.links.contains_key(&kind)
    }

    /// Whether the duty-cycled sensors other than the accept queue are attached now.
    pub fn duty_attached(&self) -> bool {
        SensorKind::ALL
            .into_iter()
            .any(|k| k.duty_cycled() && k != SensorKind::AcceptQueue && self.is_attached(k))
    }

    /// Attaches or detaches the enabled duty-cycled sensors for the coming tick: all of them when
    /// `duty` is set; the accept queue also when `accept_queue_escalated` is. Attaching first marks
    /// the start of a sampling period so the programs ignore state left from before it.
    pub fn apply_duty(&mut self, duty: bool, accept_queue_escalated: bool) {
        let wanted =
            |k: SensorKind| duty || (k == SensorKind::AcceptQueue && accept_queue_escalated);
        let changes: Vec<(SensorKind, bool)> = SensorKind::ALL
            .into_iter()
            .filter(|k| k.duty_cycled() && self.is_enabled(*k))
            .filter(|k| wanted(*k) != self.is_attached(*k))
            .map(|k| (k, wanted(k)))
            .collect();
        if changes.iter().any(|&(_, on)| on) {
            self.mark_sample_start();
        }
        let detaching_at = Instant::now();
        for (kind, on) in changes {
            if !on {
                self.detach(kind);
            } else if let Err(reason) = self.attach(kind) {
                warn!(sensor = kind.name(), %reason, "sensor off");
                self.set_status(kind, Some(reason));
            }
        }
        self.follow_attached_times(detaching_at);
    }

    fn follow_attached_times(&mut self, detaching_at: Instant) {
        let attached_at = Instant::now();
        let (duty, accept_queue) = (
            self.duty_attached(),
            self.is_attached(SensorKind::AcceptQueue),
        );
        self.duty_time.follow(duty, detaching_at, attached_at);
        self.accept_queue_time
            .follow(accept_queue, detaching_at, attached_at);
    }

    /// How long the duty-cycled sensors other than the accept queue, and the accept-queue
    /// sensor, were attached since the previous call, up to `now`: the spans the counts read at
    /// `now` cover, and what their rates are per second of.
    pub fn take_attached_times(&mut self, now: Instant) -> (Duration, Duration) {
        (self.duty_time.take(now), self.accept_queue_time.take(now))
    }

    fn mark_sample_start(&mut self) {
        let Some(maps) = self.maps.as_mut() else {
            return;
        };
        if let Err(e) = maps.set_sample_start(monotonic_ns()) {
            warn!("cannot write the sampling start: {e}");
        }
    }

    /// Detaches everything (on shutdown).
    pub fn detach_all(&mut self) {
        let detaching_at = Instant::now();
        let kinds: Vec<SensorKind> = self.links.keys().copied().collect();
        for kind in kinds {
            self.detach(kind);
        }
        self.follow_attached_times(detaching_at);
    }
}

impl Drop for Sensors {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn detach(ebpf: &mut Ebpf, prog: &str, link: RawTracePointLinkId) {
    let program: Option<&mut RawTracePoint> =
        ebpf.program_mut(prog).and_then(|p| p.try_into().ok());
    if let Some(program) = program {
        if let Err(e) = program.detach(link) {
            warn!("detaching {prog} failed: {e}");
        }
    }
}

/// Why the kernel would not load a program, in a line. EPERM is a capability the process lacks,
/// not the verifier's judgement, and a verifier run without CAP_PERFMON refuses, as `!root`,
/// what it passes for root: the same cause (s60 story BS-4: every sensor "rejected by the
/// verifier" without CAP_PERFMON, and the sysctl watch's warning 55 lines of verifier log). The
/// log is cut to the line where the verifier says what it refused, its last but the statistics;
/// the whole is logged at debug level.
pub(super) enum LoadRefusal {
    NotPermitted(String),
    Rejected(String),
}

impl LoadRefusal {
    pub(super) fn of(e: &aya::programs::ProgramError) -> Self {
        let aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } = e
        else {
            return LoadRefusal::Rejected(with_causes(e));
        };
        let log = verifier_log.to_string();
        tracing::debug!("the verifier's log: {log}");
        Self::from_parts(io_error, &log)
    }

    fn from_parts(io_error: &std::io::Error, log: &str) -> Self {
        // The statistics the kernel prints after the verdict are not it.
        let stats = ["processed ", "verification time", "stack depth"];
        let last = (log.lines().rev().map(str::trim))
            .find(|l| !l.is_empty() && !stats.iter().any(|s| l.starts_with(s)));
        let error = match last {
            Some(last) => format!("{io_error}; the verifier: {last}"),
            None => io_error.to_string(),
        };
        // "... prohibited for !root" (with a suffix on older kernels: ", var_off=..."), or a
        // pointer an unprivileged program may not leak.
        let unprivileged = last.is_some_and(|l| l.contains("!root") || l.contains("leaks addr"));
        if io_error.raw_os_error() == Some(libc::EPERM) || unprivileged {
            LoadRefusal::NotPermitted(error)
        } else {
            LoadRefusal::Rejected(error)
        }
    }
}

/// An error and its causes, each once: aya's errors keep the kernel's errno in a source ("failed
/// to create map `KPO_CONFIG`" alone does not say it was EPERM).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// The clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK. Raising it can fail (here root lacks
/// CAP_SYS_RESOURCE) and newer kernels do not need it, so failure is a warning only.
fn raise_memlock_limit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!("could not raise RLIMIT_MEMLOCK ({e}); fine on kernels >= 5.11");
    }
}

/// `KPO_IRQS`'s size in the object (kpo-ebpf/src/irq.rs), and the bytes of one entry per CPU
/// (key and `IrqCounters`, as the kernel rounds a per-CPU value).
const IRQ_MAP_DECLARED: u32 = 1024;
const IRQ_ENTRY_BYTES: usize = 16;

/// Room in `KPO_IRQS` for every IRQ this machine has, twice over (for IRQs allocated later: a NIC
/// added, its queues changed), and never under the 1024 the object declares. The map is per CPU
/// and preallocated, so it is sized to the machine rather than to the largest one: 1024 entries
/// cost 16 KiB per CPU. An IRQ beyond it is not counted, and the eBPF log says so.
fn irq_map_entries(interrupts: &str, cpus: usize) -> u32 {
    const MOST: u32 = 65_536;
    // Preallocated per CPU: at most 64 MiB in all (8192 entries at 512 CPUs).
    const MOST_BYTES: usize = 64 << 20;
    let most = u32::try_from(MOST_BYTES / (IRQ_ENTRY_BYTES * cpus.max(1)))
        .unwrap_or(MOST)
        .min(MOST);
    let numbered = interrupts
        .lines()
        .filter(|line| {
            line.split_once(':')
                .is_some_and(|(irq, _)| irq.trim().parse::<u32>().is_ok())
        })
        .count();
    u32::try_from(numbered.saturating_mul(2))
        .unwrap_or(MOST)
        .min(most)
        .max(IRQ_MAP_DECLARED)
}

/// `KPO_LISTENERS`'s size in the object (kpo-ebpf/src/accept_queue.rs), and the bytes of its
/// value on each CPU (the kernel rounds a per-CPU value to 8 bytes).
const LISTENER_MAP_DECLARED: u32 = 4096;
const LISTENER_VALUE_BYTES: usize = std::mem::size_of::<ListenerCounters>().next_multiple_of(8);

/// Room in `KPO_LISTENERS`, an LRU map shared by all CPUs: before Linux 6.16 every CPU that
/// inserts keeps up to 128 free entries for itself, and when the map's free entries run out
/// those are refilled by evicting live ones; with 4096 entries on more than 32 CPUs, live
/// listeners were evicted long before 4096 of them. 256 per possible CPU leaves at least half
/// of the map to live entries. The map is preallocated with a value per CPU, so its memory grows
/// with the square of the CPUs: at most 64 MiB of values (256 each up to 73 CPUs; past about 105
/// the CPUs' free entries can again take all of it), and never under the 4096 the object
/// declares.
fn listener_map_entries(cpus: usize) -> u32 {
    const PER_CPU: usize = 256;
    const MOST_BYTES: usize = 64 << 20;
    let cpus = cpus.max(1);
    let most = MOST_BYTES / (LISTENER_VALUE_BYTES * cpus);
    u32::try_from(cpus.saturating_mul(PER_CPU).min(most))
        .unwrap_or(u32::MAX)
        .max(LISTENER_MAP_DECLARED)
}

fn read_interrupts() -> String {
    std::fs::read("/proc/interrupts")
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// A program the kernel would not load for want of a capability is said so, not "rejected by
    /// the verifier" (s60 story BS-4), and the verifier's log is cut to its last line. The
    /// kernel's own answers are checked by the root test
    /// `agent_binary::without_cap_perfmon_the_sensors_say_which_capability_is_missing`.
    #[test]
    fn a_load_refused_for_a_capability_is_told_from_the_verifiers_judgement() {
        use super::LoadRefusal;
        let refusal = |errno: i32, log: &str| {
            LoadRefusal::from_parts(&std::io::Error::from_raw_os_error(errno), log)
        };
        let LoadRefusal::NotPermitted(why) = refusal(libc::EPERM, "") else {
            panic!("EPERM is a capability")
        };
        assert_eq!(why, "Operation not permitted (os error 1)");
        let unprivileged = "0: R1=ctx() R10=fp0\n1: (07) r1 += 8\nR1 pointer arithmetic with it \
                            prohibited for !root\nprocessed 29 insns (limit 1000000) \
                            max_states_per_insn 0 total_states 3 peak_states 3 mark_read 0\n";
        let LoadRefusal::NotPermitted(why) = refusal(libc::EACCES, unprivileged) else {
            panic!("verified as !root: CAP_PERFMON missing")
        };
        assert_eq!(
            why,
            "Permission denied (os error 13); the verifier: R1 pointer arithmetic with it \
             prohibited for !root"
        );
        let LoadRefusal::Rejected(why) =
            refusal(libc::EACCES, "0: R1=ctx()\ninvalid mem access 'scalar'\n\n")
        else {
            panic!("the verifier's own judgement")
        };
        assert_eq!(
            why,
            "Permission denied (os error 13); the verifier: invalid mem access 'scalar'"
        );
    }

    #[test]
    fn the_irq_map_has_room_for_every_irq_twice_over_and_at_least_what_the_object_declares() {
        let lines = |n: usize| {
            let mut text = String::from("           CPU0       CPU1\n");
            for irq in 0..n {
                text.push_str(&format!("{irq:>4}:  1  2  IR-PCI-MSI  eth0-{irq}\n"));
            }
            text + "NMI:  0  0  Non-maskable interrupts\nERR:  0\n"
        };
        assert_eq!(super::irq_map_entries("", 2), 1024);
        assert_eq!(super::irq_map_entries(&lines(24), 2), 1024);
        assert_eq!(super::irq_map_entries(&lines(512), 2), 1024);
        assert_eq!(super::irq_map_entries(&lines(513), 2), 1026);
        assert_eq!(super::irq_map_entries(&lines(3000), 2), 6000);
        assert_eq!(super::irq_map_entries(&lines(40_000), 2), 65_536);
        // Memory bounds it on a large machine: 64 MiB over 512 CPUs of 16 bytes.
        assert_eq!(super::irq_map_entries(&lines(40_000), 512), 8192);
        // ...but never below the object's own size.
        assert_eq!(super::irq_map_entries(&lines(40_000), 8192), 1024);
    }

    use super::*;

    /// Defect: the listeners' LRU map had 4096 entries whatever the machine, and before Linux
    /// 6.16 each CPU holds up to 128 free entries of it, so past 32 CPUs live listeners were
    /// evicted (and their counts lost) with far fewer than 4096 listeners.
    #[test]
    fn the_listener_map_has_256_entries_per_cpu_within_its_memory_bound() {
        assert_eq!(LISTENER_VALUE_BYTES, 48);
        assert_eq!(listener_map_entries(0), 4096);
        assert_eq!(listener_map_entries(2), 4096);
        assert_eq!(listener_map_entries(16), 4096);
        assert_eq!(listener_map_entries(17), 4352);
        assert_eq!(listener_map_entries(64), 16_384);
        // 64 MiB of 48-byte values on 96 CPUs: 14563 entries, not 24576.
        assert_eq!(listener_map_entries(96), 14_563);
        // ...but never below the object's own size.
        assert_eq!(listener_map_entries(8192), 4096);
    }

    /// Defect: on kernels before 5.18 sched_switch passes three arguments, and attaching the
    /// sched program, which reads a fourth, failed with a bare EINVAL at its first duty period.
    #[test]
    fn sched_is_off_with_the_reason_when_sched_switch_lacks_prev_state() {
        let facts = |args| KernelFacts {
            offsets: btf::ResolvedOffsets::none("unused"),
            btf: Some(btf::tests::raw_tracepoint_btf("sched_switch", args)),
        };
        let before_5_18 = facts(3);
        assert_eq!(
            before_5_18
                .tracepoint_args_off(SensorKind::Sched)
                .map(|r| r.to_string())
                .as_deref(),
            Some("sched_switch has no prev_state before Linux 5.18")
        );
        assert_eq!(before_5_18.tracepoint_args_off(SensorKind::Irq), None);
        assert_eq!(facts(4).tracepoint_args_off(SensorKind::Sched), None);
        // Without BTF the kernel's attach decides.
        let blind = KernelFacts {
            offsets: btf::ResolvedOffsets::none("unused"),
            btf: None,
        };
        assert_eq!(blind.tracepoint_args_off(SensorKind::Sched), None);
    }

    #[test]
    fn map_errors_keep_the_kernel_errno() {
        let error = aya::EbpfError::MapError(aya::maps::MapError::CreateError {
            name: "KPO_CONFIG".into(),
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        });
        let text = with_causes(&error);
        assert!(text.contains("KPO_CONFIG"), "{text}");
        assert!(
            text.contains("Operation not permitted (os error 1)"),
            "{text}"
        );
    }
}
