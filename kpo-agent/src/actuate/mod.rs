//! Actuators: the one way KPO changes a parameter (docs/actuators.md).
//!
//! Every parameter is changed through an [`Actuator`] (read, validate, apply with read-back,
//! revert), with typed values ([`param::Value`]) and an address ([`param::ParamAddress`]) that
//! says where it lives. [`open_actuator`] picks the implementation by the address's kind:
//!
//! - [`sysctl::SysctlActuator`]: `/proc/sys`, on the host or inside a network namespace (entered
//!   with setns on a short-lived thread); host-wide keys in a namespace are refused
//!   ([`sysctl::is_per_netns`]);
//! - [`cpufreq::CpufreqActuator`]: `cpufreq:policyN:ATTR` under a configurable sysfs root;
//! - [`coalesce::CoalesceActuator`]: `ethtool:IFACE:ATTR` over ethtool netlink, refusing a NIC
//!   under adaptive moderation unless allowed to turn it off.
//!
//! Every failure is an [`ActuateError`] whose message names the parameter and what to check.
//!
//! The optimizer drives cpufreq and coalescing parameters through these same actuators, behind
//! the change path (`advise/optimizer/agent.rs`). [`acceptance`] checks them once on an
//! operator's NIC or cpufreq policy: a neighbouring value written and the original put back.

pub mod acceptance;
pub mod coalesce;
pub mod cpufreq;
pub mod param;
pub mod sysctl;

use std::path::PathBuf;

/// What a missing sysctl may mean when nothing better is known.
const NAME_HINT: &str = "; check the name, that the device exists there for a per-device key, and \
                         that the module providing it is loaded";

#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot parse '{text}' as {what}")]
    Parse {
        path: PathBuf,
        text: String,
        what: &'static str,
    },
    #[error("{knob}: not available: {reason}")]
    NotFound { knob: String, reason: String },
    #[error("{knob}: {value} is not a valid value: {reason}")]
    InvalidValue {
        knob: String,
        value: f64,
        reason: String,
    },
    /// `param` (`tx-usecs`) is governed by `adaptive` (`adaptive-tx`), which is on.
    #[error(
        "{iface}: {adaptive} is on, so the kernel already moves {param}; KPO leaves this NIC alone \
         (allow KPO to turn adaptive mode off to let it own coalescing)"
    )]
    AdaptiveOn {
        iface: String,
        adaptive: &'static str,
        param: &'static str,
    },
    #[error("{iface}: the driver does not support changing interrupt coalescing ({detail})")]
    Unsupported { iface: String, detail: String },
    /// A sysctl that does not exist where it was asked for (ENOENT).
    #[error("{param}: no such sysctl {where_} ({path} does not exist){}", if *.name_may_be_wrong { NAME_HINT } else { "" })]
    NoSuchKey {
        param: String,
        path: PathBuf,
        where_: String,
        /// False where `where_` says why a right name is missing (a host-wide net key outside
        /// the machine's first network namespace): the hint to check the name would mislead.
        name_may_be_wrong: bool,
    },
    /// A host-wide key addressed in a network namespace: refused, never mapped to the host.
    #[error(
        "{param}: {key} is a host-wide parameter, not one per network namespace; KPO does not \
         change the whole host on behalf of network namespace {netns} (address it without @netns \
         to change it for the host)"
    )]
    GlobalKey {
        param: String,
        key: String,
        netns: String,
    },
    /// The file has no write permission: the kernel only reports this value.
    #[error("{param}: {path} is read-only (mode {mode:o}); the kernel only reports this value")]
    ReadOnly {
        param: String,
        path: PathBuf,
        mode: u32,
    },
    /// EPERM or EACCES from the kernel.
    #[error("{param}: permission denied on {path}: {detail}")]
    PermissionDenied {
        param: String,
        path: PathBuf,
        detail: String,
    },
    /// The kernel refused the value (EINVAL, ERANGE, EOVERFLOW on write).
    #[error("{param}: the kernel refused {value:?} ({errno}): {hint}")]
    Refused {
        param: String,
        value: String,
        errno: String,
        hint: String,
    },
    /// A NIC addressed by one of its alternative names: it would have a second policy entry and
    /// a second journal, each taking the other's changes for a person's.
    #[error(
        "{iface} is an alternative name of {name}: KPO knows a NIC by its own name, so that one \
         policy entry bounds it and one journal keeps its original; use {address}"
    )]
    AlternativeName {
        iface: String,
        name: String,
        address: String,
    },
    /// A value the kernel or driver refuses while another parameter holds what it holds.
    #[error("{param}: {value:?} is refused while {why}")]
    RefusedWhile {
        param: String,
        value: String,
        why: String,
    },
    /// A value the kernel would take by widening another setting too, which no journal entry
    /// records and no revert undoes.
    #[error("{param}: {value:?} {why}")]
    WidensAnother {
        param: String,
        value: String,
        why: String,
    },
    /// A value whose shape differs from the parameter's current value.
    #[error("{param}: {given:?} does not fit: the current value {current:?} is {want}")]
    Shape {
        param: String,
        given: String,
        current: String,
        want: String,
    },
    /// A value the kernel takes but shows as another: its read-back could never match.
    #[error("{param}: {value:?} never reads back as written: {why}")]
    NeverReadsBack {
        param: String,
        value: String,
        why: String,
    },
    /// A typed read-back that differs from what was written; `why` says what that means.
    #[error("{param}: wrote {wrote:?} but read back {read:?}; {why}")]
    Mismatch {
        param: String,
        wrote: String,
        read: String,
        why: String,
    },
    /// A network namespace that cannot be found or entered.
    #[error("network namespace {netns}: {reason}")]
    Netns { netns: String, reason: String },
    /// Integer outside the range the hardware or kernel reports.
    #[error("{param}: {value} is outside [{min}, {max}] ({why})")]
    OutOfRange {
        param: String,
        value: i128,
        min: i128,
        max: i128,
        why: String,
    },
    /// A word not in the list the kernel offers (`scaling_available_governors`, ...).
    #[error("{param}: {value:?} is not available; {source_file} lists: {available}")]
    NotAvailable {
        param: String,
        value: String,
        source_file: PathBuf,
        available: String,
    },
    /// This machine has no support for the parameter family (no cpufreq driver, ...).
    #[error("{param}: unsupported on this machine: {reason}")]
    NotSupported { param: String, reason: String },
    /// The address names a parameter the actuator does not know.
    #[error("{param}: unknown parameter; {known}")]
    UnknownParam { param: String, known: String },
}

impl ActuateError {
    /// A write the file refused for a while, not for its value: a file system that went
    /// read-only (a remount), a busy device, an interrupted or would-block write, or a write
    /// refused to root (a file made immutable, a security module). Another value would fail the
    /// same way, and the same value may pass later. Read by the optimizer alone, for its cpufreq
    /// and coalescing knobs: a sysctl's EPERM can be its value's
    /// (`kernel.unprivileged_bpf_disabled` refuses 0 once set), but no sysctl is a knob of its.
    pub fn is_passing(&self) -> bool {
        use nix::errno::Errno;
        // s51 story AA F2: an immutable limit file set aside each candidate written to it, and
        // the search ended after 3 of its 10 evaluations.
        matches!(self, ActuateError::PermissionDenied { .. })
            || matches!(self, ActuateError::Io { source, .. }
            if source.raw_os_error().is_some_and(|e| {
                [Errno::EROFS, Errno::EBUSY, Errno::EAGAIN, Errno::EINTR]
                    .iter()
                    .any(|passing| *passing as i32 == e)
            }))
    }
}

/// What a read-back that differs from the write usually means.
pub const NOT_TAKEN: &str = "the kernel or driver did not take the value";

/// The one way any parameter is changed: sysctls, NIC coalescing and cpufreq attributes each
/// implement it (`sysctl`, `coalesce`, `cpufreq`). Values are typed ([`param::Value`]); the policy,
/// journal and guard sit in front of it and never write a parameter by another path.
pub trait Actuator: Send {
    /// The parameter and where it lives.
    fn address(&self) -> &param::ParamAddress;
    /// The value the kernel has now.
    fn read(&mut self) -> Result<param::Value, ActuateError>;
    /// Whether the kernel or hardware could take `value` (shape, range the driver or cpufreq
    /// reports, available governors), without writing anything.
    fn validate(&mut self, value: &param::Value) -> Result<(), ActuateError>;
    /// [`Actuator::validate`] less what depends on another parameter that may change first (a
    /// cpufreq limit's other limit): for a change written together with that one.
    fn validate_alone(&mut self, value: &param::Value) -> Result<(), ActuateError> {
        self.validate(value)
    }
    /// Write `value`, read it back, and return what was read back. A read-back that differs is an
    /// error ([`ActuateError::Mismatch`]) after which the caller reverts.
    fn apply(&mut self, value: &param::Value) -> Result<param::Value, ActuateError>;
    /// Put back a value read earlier (the journal's original). Unlike `apply` it skips the checks a
    /// new value gets, the original being the kernel's own; only what the kernel would take by
    /// moving another parameter is refused (a cpufreq limit across the other limit).
    fn revert(&mut self, original: &param::Value) -> Result<param::Value, ActuateError> {
        self.apply(original)
    }
    /// Whether a value read from this parameter stays as it is until someone writes it, so that
    /// the change path may read it again just before its write and take another value for
    /// another writer's (s58 story BH-2). A sysctl's does. A NIC's coalescing value may move when
    /// KPO turns adaptive moderation off before it, and a cpufreq limit reads clamped by the
    /// other limit KPO may just have written: they are not checked so.
    fn holds_still(&self) -> bool {
        false
    }
    /// The cookie of the network namespace this actuator acts in (`None`: the host's, or unknown):
    /// read through the namespace it holds, so it is the namespace its writes go to.
    fn netns_cookie(&self) -> Option<u64> {
        None
    }
    /// The inode of the network namespace this actuator holds open (`None`: the host's, or
    /// unknown): the one its writes go to, whatever a path to it names by now.
    fn netns_inode(&self) -> Option<u64> {
        None
    }
    /// Whether this actuator may turn the NIC's adaptive moderation (net_dim) off as part of a
    /// change. Only the coalescing actuator has such a thing; the policy sets it. Others ignore it.
    fn set_adaptive_off_allowed(&mut self, allowed: bool) {
        let _ = allowed;
    }
    /// The device this actuator acts on, as the journal keeps it with a change: a NIC's index
    /// and its namespace's cookie (`None`: not a NIC, or either cannot be read). Only the
    /// coalescing actuator has one.
    fn device_seen(&mut self) -> Option<coalesce::DeviceSeen> {
        None
    }
    /// The switch that must be turned off before this parameter can be written, if it is on now:
    /// a coalescing value governed by adaptive moderation that is on. The change path turns it
    /// off as a change of its own, journaled, so that every revert can turn it back on.
    fn switch_in_the_way(
        &mut self,
    ) -> Result<Option<(param::ParamAddress, param::Value)>, ActuateError> {
        Ok(None)
    }
    /// Whether the driver holds this parameter at `performance` while the policy's governor is
    /// `performance`: a cpufreq energy-performance preference under intel_pstate or amd-pstate in
    /// active mode. Only the cpufreq actuator has such a parameter.
    fn held_by_driver_under_performance(&mut self) -> bool {
        false
    }
}

/// How [`open_actuator_with`] opens actuators: what the policy allows beyond the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActuatorOptions {
    /// Coalescing: turn adaptive moderation (adaptive-rx / adaptive-tx) off when a change needs
    /// it. Off by default: a NIC under adaptive moderation is left alone.
    pub turn_off_adaptive: bool,
}

/// Runs `f` on a short-lived thread named `name` (one that enters a network namespace) and waits
/// for it. A thread the system refuses (the cgroup's pids.max, RLIMIT_NPROC) is an `Err` that
/// says so, not a panic as with `std::thread::Scope::spawn`: callers run this after the intent is
/// journaled, and the change path must get an error it can record. A panic inside `f` is an `Err`.
pub(crate) fn on_thread<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    on_thread_with(std::thread::Builder::new().name(name.into()), f)
}

/// [`on_thread`] on a thread made by `builder`: a test gives one the system cannot start.
pub(crate) fn on_thread_with<T: Send>(
    builder: std::thread::Builder,
    f: impl FnOnce() -> T + Send,
) -> Result<T, String> {
    std::thread::scope(|scope| {
        let thread = builder.spawn_scoped(scope, f).map_err(|e| {
            format!(
                "cannot start a thread to enter it: {e} (is the agent at its cgroup's pids.max \
                 or RLIMIT_NPROC?)"
            )
        })?;
        thread
            .join()
            .map_err(|_| "the namespace thread panicked".to_string())
    })
}

/// Reads a sysfs or /proc/sys attribute through the crate's one bounded reader
/// ([`crate::kernel_file`]), as an `io::Result` so that each actuator keeps mapping the kernel's
/// errno into its own errors. A file larger than an attribute can be is `InvalidData`.
pub(crate) fn read_attr(path: &std::path::Path) -> std::io::Result<String> {
    use crate::kernel_file::KernelFileError as E;
    crate::kernel_file::read_text(path, crate::kernel_file::limit::ATTRIBUTE).map_err(|e| match e {
        E::Io { source, .. } => source,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
    })
}

/// The symbolic name of the errno behind `e` (`ERANGE`), as the kernel's headers spell it, for
/// errors that tell an operator which refusal it was; `errno N` for one nix does not know.
pub(crate) fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => match nix::errno::Errno::from_raw(n) {
            nix::errno::Errno::UnknownErrno => format!("errno {n}"),
            known => format!("{known:?}"),
        },
        None => e.to_string(),
    }
}

/// Where the actuators find the kernel's files: the real `/proc/sys` and `/sys` in production,
/// temporary trees in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub proc_sys: PathBuf,
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            proc_sys: PathBuf::from("/proc/sys"),
            sys: PathBuf::from("/sys"),
        }
    }
}

/// The actuator for a parameter address: a sysctl (in its network namespace), a NIC's coalescing
/// attribute, or a cpufreq policy's attribute.
pub fn open_actuator(
    address: &param::ParamAddress,
    roots: &Roots,
) -> Result<Box<dyn Actuator>, ActuateError> {
    open_actuator_with(address, roots, ActuatorOptions::default())
}

/// [`open_actuator`] with options the policy decides (see [`ActuatorOptions`]).
pub fn open_actuator_with(
    address: &param::ParamAddress,
    roots: &Roots,
    options: ActuatorOptions,
) -> Result<Box<dyn Actuator>, ActuateError> {
    match address.kind() {
        param::ParamKind::Sysctl => Ok(Box::new(sysctl::SysctlActuator::open(address, roots)?)),
        param::ParamKind::Cpufreq => Ok(Box::new(cpufreq::CpufreqActuator::open(address, roots)?)),
        param::ParamKind::Ethtool => Ok(Box::new(coalesce::CoalesceActuator::open(
            address,
            if options.turn_off_adaptive {
                coalesce::AdaptiveMode::TurnOff
            } else {
                coalesce::AdaptiveMode::Respect
            },
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread the system refuses is an error, not a panic. Provoked without lowering any limit
    /// of the test process (pids.max or RLIMIT_NPROC would make other tests running in parallel
    /// fail): a stack no address space can hold makes `pthread_create` fail the same way.
    #[test]
    fn a_thread_the_system_refuses_is_an_error() {
        let huge = std::thread::Builder::new()
            .name("kpo-huge".into())
            .stack_size(1 << 62);
        let err = on_thread_with(huge, || 1).unwrap_err();
        assert!(err.contains("cannot start a thread"), "{err}");
        assert_eq!(on_thread("kpo-test", || 7), Ok(7));
        let err = on_thread("kpo-test", || -> u8 { panic!("inside") }).unwrap_err();
        assert!(err.contains("panicked"), "{err}");
    }

    #[test]
    fn open_actuator_dispatches_by_kind() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_sys = tmp.path().join("proc_sys");
        std::fs::create_dir_all(proc_sys.join("net/core")).unwrap();
        std::fs::write(proc_sys.join("net/core/somaxconn"), "4096\n").unwrap();
        // Host-wide, and on the host: what makes it a global key rather than no key at all.
        std::fs::write(proc_sys.join("net/core/netdev_budget"), "300\n").unwrap();
        let roots = Roots {
            proc_sys,
            sys: tmp.path().join("sys"),
        };
        let addr: param::ParamAddress = "net/core/somaxconn".parse().unwrap();
        let mut a = open_actuator(&addr, &roots).unwrap();
        assert_eq!(a.address().to_string(), "net.core.somaxconn");
        assert_eq!(a.read().unwrap(), param::Value::Int(4096));
        assert_eq!(
            a.apply(&param::Value::Int(8192)).unwrap(),
            param::Value::Int(8192)
        );
        // cpufreq on a tree without cpufreq: unsupported, whatever the attribute.
        let err = open_actuator(&"cpufreq:policy0:scaling_governor".parse().unwrap(), &roots)
            .err()
            .unwrap();
        assert!(matches!(err, ActuateError::NotSupported { .. }), "{err}");
        // A global key in a namespace: refused before any namespace is looked up.
        let err = open_actuator(
            &"net.core.netdev_budget@netns:/run/netns/none"
                .parse()
                .unwrap(),
            &roots,
        )
        .err()
        .unwrap();
        assert!(matches!(err, ActuateError::GlobalKey { .. }), "{err}");
    }
}
