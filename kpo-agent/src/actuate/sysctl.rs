//! sysctls through `/proc/sys`, on the host or inside a network namespace.
//!
//! - A key is read and written as the file `<proc_sys>/<name with dots as slashes>` (see
//!   [`super::param::sysctl_rel_path`]); multi-value keys (`net.ipv4.tcp_rmem`) are written as
//!   integers separated by spaces, in one `write(2)`, and read back.
//! - **Namespaces.** `/proc/sys/net` shows the network namespace of the task that *opens* the file
//!   (the kernel looks the table up in `current`'s namespace at open). So for a
//!   [`Target::Netns`] every read and write happens on a dedicated short-lived thread that first
//!   enters the namespace with `setns(fd, CLONE_NEWNET)` and then opens the file; the calling
//!   thread never changes namespace. The namespace file is opened once, when the actuator is
//!   opened, and held: the actuator keeps acting on the same namespace even if the path is
//!   unmounted or a PID is reused.
//! - **Global keys.** Only some keys are per network namespace ([`is_per_netns`]). A host-wide
//!   key (`net.core.netdev_max_backlog`, `vm.*`, `kernel.*`, ...) addressed in a namespace is
//!   **refused** with [`ActuateError::GlobalKey`], never silently mapped to the host: a policy or
//!   an operator that scoped a change to one namespace must not change the whole host by it. The
//!   kernel agrees: it registers those tables in the initial namespace only, so inside any other
//!   namespace their files do not exist (a missing file inside a namespace that exists on the host
//!   is reported as `GlobalKey` too, which covers keys the static list does not know; except a
//!   per-device key ([`is_per_device`]), whose device may exist on the host and not in the
//!   namespace: that is [`ActuateError::NoSuchKey`]). A key that is not per namespace and is not
//!   on the host either (`bogus.key`) exists nowhere: [`ActuateError::NoSuchKey`] too.
//! - **Errors** name the key and what to check: a missing key ([`ActuateError::NoSuchKey`]), a
//!   read-only file ([`ActuateError::ReadOnly`]), EPERM/EACCES ([`ActuateError::PermissionDenied`]),
//!   the kernel refusing a value with EINVAL/ERANGE ([`ActuateError::Refused`]), a value of the
//!   wrong shape ([`ActuateError::Shape`]), a read-back that differs ([`ActuateError::Mismatch`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::param::{sysctl_rel_path, NetnsRef, ParamAddress, ParamKind, Target, Value};
use super::{ActuateError, Actuator, Roots};

/// `net.core` keys that are per network namespace on Linux 6.x. Every other `net.core` key is
/// host-wide. Source: `net/core/sysctl_net_core.c`, whose `netns_core_table` holds these (the
/// `rmem`/`wmem`/`optmem` defaults and maxima moved there in 6.9/6.10); checked on Linux 6.18 by
/// listing `/proc/sys/net/core` inside a fresh namespace and on the host.
const PER_NETNS_CORE: &[&str] = &[
    "somaxconn",
    "optmem_max",
    "rmem_default",
    "rmem_max",
    "wmem_default",
    "wmem_max",
    "rps_default_mask",
    "tstamp_allow_data",
    "txrehash",
    "xfrm_acq_expires",
    "xfrm_aevent_etime",
    "xfrm_aevent_rseqth",
    "xfrm_larval_drop",
];

/// `net.ipv4` / `net.ipv6` / `net.netfilter` keys that are host-wide although their directory is
/// per namespace (besides `net.ipv4.neigh.default.*` and `net.ipv6.neigh.default.*`). Source: the tables registered for `init_net` only (`ipv4_table` in
/// `net/ipv4/sysctl_net_ipv4.c`, `ipv4_route_table` in `net/ipv4/route.c`, `cipso`, `inetpeer`,
/// `ipv6_rotable`, `nf_log_sysctl_ftable`), checked on Linux 6.18 as above. Everything else under
/// `net.ipv4`, `net.ipv6`, `net.netfilter`, `net.unix`, `net.mptcp` and `net.bridge` is per
/// namespace.
const GLOBAL_NET: &[&str] = &[
    "net.ipv4.cipso_cache_bucket_size",
    "net.ipv4.cipso_cache_enable",
    "net.ipv4.cipso_rbm_optfmt",
    "net.ipv4.cipso_rbm_strictvalid",
    "net.ipv4.fib_sync_mem",
    "net.ipv4.inet_peer_maxttl",
    "net.ipv4.inet_peer_minttl",
    "net.ipv4.inet_peer_threshold",
    "net.ipv4.ipfrag_secret_interval",
    "net.ipv4.route.error_burst",
    "net.ipv4.route.error_cost",
    "net.ipv4.route.gc_elasticity",
    "net.ipv4.route.gc_interval",
    "net.ipv4.route.gc_min_interval",
    "net.ipv4.route.gc_min_interval_ms",
    "net.ipv4.route.gc_thresh",
    "net.ipv4.route.gc_timeout",
    "net.ipv4.route.max_size",
    "net.ipv4.route.redirect_load",
    "net.ipv4.route.redirect_number",
    "net.ipv4.route.redirect_silence",
    "net.ipv4.tcp_available_ulp",
    "net.ipv4.tcp_low_latency",
    "net.ipv4.tcp_max_orphans",
    "net.ipv4.tcp_mem",
    "net.ipv4.udp_mem",
    "net.ipv6.calipso_cache_bucket_size",
    "net.ipv6.calipso_cache_enable",
    "net.ipv6.ip6frag_secret_interval",
    "net.ipv6.mld_max_msf",
    "net.ipv6.mld_qrv",
    "net.netfilter.nf_log_all_netns",
];

/// Directories under `net.` whose keys are per network namespace (except [`GLOBAL_NET`]).
const PER_NETNS_DIRS: &[&str] = &["ipv4", "ipv6", "netfilter", "unix", "mptcp", "bridge"];

/// The sysctls whose three elements are `min`, `default` (or `pressure`) and `max`, in that
/// order: the kernel takes them in any order, and a `min` above `max` breaks socket memory.
const ORDERED_TRIPLES: &[&str] = &[
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_mem",
    "net.ipv4.udp_mem",
    "net.sctp.sctp_mem",
    "net.sctp.sctp_rmem",
    "net.sctp.sctp_wmem",
];

/// The sysctls the kernel reads and prints as a list of integers and ranges separated by commas
/// (`proc_do_large_bitmap`): nothing while the list is empty, `80` for one element, `8080,9000-9100`
/// for more. What the kernel prints takes the shape of what the list holds, so these keys are
/// known by name. Source: `net/ipv4/sysctl_net_ipv4.c`.
const INTEGER_LISTS: &[&str] = &["net.ipv4.ip_local_reserved_ports"];

/// `text`, a list of integers and ranges, in the form the kernel prints it
/// (`proc_do_large_bitmap`): its ports sorted, once each, consecutive ones as a range
/// (`9000,81,80` is `80-81,9000`). Written in that form, a list reads back as written; another
/// spelling of the same ports read back different and was put back, and a crash between that
/// write and its `read_back` record left KPO's ports reserved as someone else's (s55 story
/// AT-2). `None` for text the kernel refuses (not integers and ranges, a range backwards, a port
/// above 65535), whose refusal says why, or reads otherwise (a leading zero: octal or hex), whose
/// read-back does.
pub fn integer_list_in_kernel_form(text: &str) -> Option<String> {
    const LAST_PORT: u32 = 65535;
    if text.is_empty() {
        return Some(String::new());
    }
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        // Plain decimal: the kernel reads `010` as octal and `0x50` as hex (base 0), so a
        // number with a leading zero is left to it.
        let number = |n: &str| {
            let digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            let plain = digits && (n == "0" || !n.starts_with('0'));
            plain.then(|| n.parse::<u32>().ok()).flatten()
        };
        let (lo, hi) = (number(lo)?, number(hi)?);
        if lo > hi || hi > LAST_PORT {
            return None;
        }
        ranges.push((lo, hi));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let shown: Vec<String> = merged
        .iter()
        .map(|&(lo, hi)| match lo == hi {
            true => lo.to_string(),
            false => format!("{lo}-{hi}"),
        })
        .collect();
    Some(shown.join(","))
}

/// Whether `address` is a sysctl whose value is a list of integers and ranges ([`INTEGER_LISTS`]).
pub fn is_integer_list(address: &ParamAddress) -> bool {
    address.kind() == ParamKind::Sysctl && INTEGER_LISTS.contains(&address.name.as_str())
}

/// Limits the kernel keeps in two forms, of which only one is in force: writing one sets the
/// other to 0, and the one not in force reads 0. The writeback limits, a ratio or a byte count
/// (`mm/page-writeback.c`), and the overcommit limit, a ratio of RAM or a size in KiB
/// (`mm/util.c`, on every write, of 0 too).
struct ExclusivePair {
    key: &'static str,
    /// The key a write of `key` zeroes.
    pair: &'static str,
    /// Why a revert of `key` could not undo that.
    why: &'static str,
    /// Whether the kernel takes a 0 written back to `key`: if so, with both forms at 0 a change
    /// of `key` zeroes nothing and its revert gives back exactly the state before.
    zero_writable: bool,
}

const EXCLUSIVE_PAIRS: &[ExclusivePair] = &[
    writeback("vm.dirty_bytes", "vm.dirty_ratio", false),
    writeback("vm.dirty_ratio", "vm.dirty_bytes", true),
    writeback(
        "vm.dirty_background_bytes",
        "vm.dirty_background_ratio",
        false,
    ),
    writeback(
        "vm.dirty_background_ratio",
        "vm.dirty_background_bytes",
        true,
    ),
    overcommit("vm.overcommit_kbytes", "vm.overcommit_ratio"),
    overcommit("vm.overcommit_ratio", "vm.overcommit_kbytes"),
];

const fn writeback(key: &'static str, pair: &'static str, zero_writable: bool) -> ExclusivePair {
    ExclusivePair {
        key,
        pair,
        why: "the kernel refuses 0 bytes",
        zero_writable,
    }
}

const fn overcommit(key: &'static str, pair: &'static str) -> ExclusivePair {
    ExclusivePair {
        key,
        pair,
        why: "its 0 written back zeroes the other again, and with both at 0 the commit limit \
              under vm.overcommit_memory=2 is the swap alone",
        zero_writable: true,
    }
}

/// The other form of `address`'s limit, when `address` is one of a pair ([`EXCLUSIVE_PAIRS`]).
pub fn exclusive_pair(address: &ParamAddress) -> Option<&'static str> {
    if address.kind() != ParamKind::Sysctl {
        return None;
    }
    EXCLUSIVE_PAIRS
        .iter()
        .find(|p| p.key == address.name)
        .map(|p| p.pair)
}

/// Why a change of `address` from `current` to `value` is refused, if it would switch a limit
/// from one form to the other ([`EXCLUSIVE_PAIRS`]): the key reads 0 because its pair is in
/// force, and the write would zero the pair's value, which no journal entry of this key records.
/// Its revert could not undo that (a writeback byte count of 0 is refused; a 0 written back
/// leaves both forms at 0). So the form in force is the one that may be changed. `pair_value` is
/// the pair's value now, `None` if it could not be read. With both at 0 (a state an earlier
/// revert may have left) nothing is zeroed, and a key whose 0 the kernel takes back may be
/// changed: that is how the limit gets a form in force again.
pub fn switches_form(
    address: &ParamAddress,
    current: &Value,
    value: &Value,
    pair_value: Option<&Value>,
) -> Option<String> {
    if address.kind() != ParamKind::Sysctl || *current != Value::Int(0) || *value == Value::Int(0) {
        return None;
    }
    let ExclusivePair {
        pair,
        why,
        zero_writable,
        ..
    } = EXCLUSIVE_PAIRS.iter().find(|p| p.key == address.name)?;
    match pair_value {
        Some(Value::Int(0)) if *zero_writable => None,
        Some(Value::Int(0)) => Some(format!(
            "{address} and {pair} both read 0: writing {address} would set a form its revert \
             cannot take back ({why}); change {pair} instead"
        )),
        _ => Some(format!(
            "{address} reads 0 because {pair} is in force: writing it would set {pair} to 0, \
             which a revert of {address} cannot put back ({why}); change {pair} instead"
        )),
    }
}

/// Whether `value` may replace the kernel's `current` value of `address`: the same shape
/// ([`Value::same_shape`]), or, for a list of integers ([`is_integer_list`]), any form of such a
/// list on both sides, since the kernel prints one port as an integer and no port as nothing.
/// Every other key keeps its shape: an integer stays an integer.
pub fn shape_fits(address: &ParamAddress, current: &Value, value: &Value) -> bool {
    if is_integer_list(address) {
        return is_integer_list_form(current) && is_integer_list_form(value);
    }
    current.same_shape(value)
}

/// Why `value` does not fit where the kernel has `current` ([`shape_fits`] said no), for people
/// and the journal: `net.core.somaxconn is an integer (now 8192), not the word "abc"`.
pub fn shape_mismatch(address: &ParamAddress, current: &Value, value: &Value) -> String {
    let kind = if is_integer_list(address) {
        "a list of integers and ranges (8080,9000-9100), one integer, or \"\"".to_string()
    } else {
        current.kind_text()
    };
    format!(
        "{address} is {kind} (now {}), not {}",
        current.quoted(),
        value.described()
    )
}

/// An element (`8080`), a list (`8080,9000-9100`) or nothing, as `proc_do_large_bitmap` takes it.
fn is_integer_list_form(value: &Value) -> bool {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match value {
        Value::Int(n) => *n >= 0,
        Value::Ints(_) => false,
        Value::Word(w) => {
            w.is_empty()
                || w.split(',').all(|part| match part.split_once('-') {
                    Some((a, b)) => number(a) && number(b),
                    None => number(part),
                })
        }
    }
}

/// For a sysctl whose elements must not decrease (`tcp_rmem`'s min <= default <= max), the first
/// element of `value` below the one before it; `None` when in order or not such a sysctl.
pub fn decreasing_element(address: &ParamAddress, value: &Value) -> Option<usize> {
    if address.kind() != ParamKind::Sysctl || !ORDERED_TRIPLES.contains(&address.name.as_str()) {
        return None;
    }
    let ints = value.ints()?;
    (1..ints.len()).find(|&i| ints[i] < ints[i - 1])
}

/// Whether the sysctl `name` (dotted, canonical) has one value per network namespace. `false`
/// means a host-wide parameter: all of `vm.*`, `kernel.*`, `fs.*`, `user.*` (per *user*
/// namespace, which KPO does not target), most of `net.core.*` (`netdev_max_backlog`,
/// `netdev_budget*`, `bpf_jit_*`, `busy_poll`, ...), and the `net.ipv4`/`net.ipv6` keys in
/// [`GLOBAL_NET`] (`tcp_mem`, `udp_mem`, `tcp_max_orphans`, the IPv4 route cache, ...). Keys under
/// an unknown `net.` directory are treated as global (refused in a namespace), the safe side.
/// Whether `name` is a host-wide net key the kernel is known to have ([`GLOBAL_NET`]): missing
/// outside the first network namespace, it is no typo of a key beside it (`net.ipv4.tcp_mem`,
/// a letter from `tcp_rmem`).
pub(crate) fn is_known_host_wide(name: &str) -> bool {
    GLOBAL_NET.contains(&name)
}

pub fn is_per_netns(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("net.") else {
        return false;
    };
    if let Some(key) = rest.strip_prefix("core.") {
        return PER_NETNS_CORE.contains(&key);
    }
    if GLOBAL_NET.contains(&name) {
        return false;
    }
    // The neighbour tables (ARP, NDISC) are shared by all namespaces; their `default`
    // parameters are registered once, in the initial namespace (`arp_init`, `ndisc_init` call
    // `neigh_sysctl_register(NULL, ..)`). Per-device `neigh.DEV.*` are per namespace.
    if rest.starts_with("ipv4.neigh.default.") || rest.starts_with("ipv6.neigh.default.") {
        return false;
    }
    rest.split_once('.')
        .is_some_and(|(dir, _)| PER_NETNS_DIRS.contains(&dir))
}

/// Whether the sysctl `name` belongs to one network device (`net.ipv4.conf.DEV.*`,
/// `net.ipv6.conf.DEV.*`, `net.ipv4.neigh.DEV.*`, `net.ipv6.neigh.DEV.*`): it exists where a device
/// of that name exists, in whichever namespace that is.
pub fn is_per_device(name: &str) -> bool {
    [
        "net.ipv4.conf.",
        "net.ipv6.conf.",
        "net.ipv4.neigh.",
        "net.ipv6.neigh.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// One sysctl at one target.
#[derive(Debug)]
pub struct SysctlActuator {
    address: ParamAddress,
    proc_sys: PathBuf,
    rel: PathBuf,
    /// The target namespace, held open; `None` for the host (the agent's own namespace).
    netns: Option<File>,
}

impl SysctlActuator {
    /// The actuator for a sysctl address (`Target::Host` or `Target::Netns`). A namespace is
    /// resolved and opened now; a global key in a namespace is refused now.
    pub fn open(address: &ParamAddress, roots: &Roots) -> Result<Self, ActuateError> {
        let netns = match &address.target {
            Target::Host => None,
            Target::Netns { netns } => {
                if !is_per_netns(&address.name) {
                    // Told apart from a host-wide key: a name that is nowhere (`bogus.key`) is a
                    // mistake in the name, and "host-wide" would send the operator to the host.
                    let host = roots.proc_sys.join(sysctl_rel_path(&address.name));
                    return Err(match std::fs::metadata(&host) {
                        Err(e)
                            if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
                        {
                            let outside = outside_the_first_netns(&address.name, &roots.proc_sys);
                            ActuateError::NoSuchKey {
                                param: address.to_string(),
                                path: host,
                                name_may_be_wrong: outside.is_none(),
                                where_: outside.unwrap_or_else(|| {
                                    "on the host, where a key that is not per network namespace \
                                     would be"
                                        .into()
                                }),
                            }
                        }
                        _ => global_key(address, netns),
                    });
                }
                Some(open_netns(netns)?)
            }
            other => {
                return Err(ActuateError::NotFound {
                    knob: address.to_string(),
                    reason: format!(
                        "a sysctl lives on the host or in a network namespace, not {other:?}"
                    ),
                })
            }
        };
        Ok(Self {
            address: address.clone(),
            proc_sys: roots.proc_sys.clone(),
            rel: sysctl_rel_path(&address.name),
            netns,
        })
    }

    /// The file, as seen from inside the target.
    pub fn path(&self) -> PathBuf {
        self.proc_sys.join(&self.rel)
    }

    /// Run `f` in the target's network namespace: on this thread for the host, else on a
    /// short-lived thread that enters the namespace first (the file must be opened there).
    fn in_target<T: Send>(
        &self,
        f: impl FnOnce(&Path) -> Result<T, ActuateError> + Send,
    ) -> Result<T, ActuateError> {
        let path = self.path();
        let result = match &self.netns {
            None => f(&path),
            Some(ns) => super::on_thread("kpo-netns", || {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    ActuateError::Netns {
                        netns: self.netns_text(),
                        reason: format!("setns(CLONE_NEWNET) failed: {e} (needs CAP_SYS_ADMIN)"),
                    }
                })?;
                f(&path)
            })
            .unwrap_or_else(|reason| {
                Err(ActuateError::Netns {
                    netns: self.netns_text(),
                    reason,
                })
            }),
        };
        // A key missing inside a namespace but present on the host is a global key. Not a
        // per-device key: each namespace has its own devices, so the host having one of that name
        // says nothing about the key, and `GlobalKey` would send the operator to the host's device.
        match result {
            Err(ActuateError::NoSuchKey { param, path, .. }) if self.netns.is_none() => {
                let outside = outside_the_first_netns(&self.address.name, &self.proc_sys);
                Err(ActuateError::NoSuchKey {
                    param,
                    path,
                    name_may_be_wrong: outside.is_none(),
                    where_: outside.unwrap_or_else(|| where_text(&self.address)),
                })
            }
            Err(ActuateError::NoSuchKey { .. })
                if self.netns.is_some() && !is_per_device(&self.address.name) && path.exists() =>
            {
                let Target::Netns { netns } = &self.address.target else {
                    unreachable!("netns is set only for Target::Netns")
                };
                Err(global_key(&self.address, netns))
            }
            other => other,
        }
    }

    /// A default congestion control the host does not allow (`tcp_allowed_congestion_control`,
    /// host-wide) is refused: the kernel would add it to that list for good (any unprivileged
    /// socket may then pick it), which the journal does not record and a revert of the default does
    /// not undo; in a namespace other than the first the kernel refuses it (EPERM). The list is
    /// read from the agent's own namespace, where it lives. A list that cannot be read says
    /// nothing: the kernel is the check of last resort.
    fn check_allowed_congestion_control(
        &self,
        param: &str,
        value: &Value,
    ) -> Result<(), ActuateError> {
        let Value::Word(name) = value else {
            return Ok(());
        };
        // The key holds one name; several would be looked for in the lists as one.
        if name.contains(' ') {
            return Err(ActuateError::Shape {
                param: param.to_string(),
                given: name.clone(),
                current: self
                    .in_target(|path| read_file(param, path, ""))
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                want: "one congestion control name".into(),
            });
        }
        let allowed_path = self
            .proc_sys
            .join("net/ipv4/tcp_allowed_congestion_control");
        let Ok(allowed) = super::read_attr(&allowed_path) else {
            return Ok(());
        };
        if name.is_empty() || allowed.split_whitespace().any(|a| a == name) {
            return Ok(());
        }
        // The allowed list takes only what is loaded (no module autoload there, unlike the
        // default), so advice to add a name that is not loaded would fail in turn: say what
        // comes first.
        let available = super::read_attr(
            &self
                .proc_sys
                .join("net/ipv4/tcp_available_congestion_control"),
        );
        let first = match available {
            Ok(available) if !available.split_whitespace().any(|a| a == name) => format!(
                "it is not loaded either (net.ipv4.tcp_available_congestion_control is {:?}): \
                 load it first (`modprobe tcp_{name}` where it is a module), then add it to \
                 that list, as a change of its own",
                available.trim()
            ),
            _ => "add it to that list first, as a change of its own".to_string(),
        };
        // Only the machine's first namespace may change that list: elsewhere the kernel shows it
        // read-only (0444), so the step named above is for an agent there (s54 story AP F3).
        // An agent in a namespace of its own (a pod) is in another too (s54 review2 N-e).
        let elsewhere = self.netns.is_some()
            || outside_the_first_netns("net.core.netdev_budget", &self.proc_sys).is_some();
        let first = if elsewhere {
            format!(
                "{first} (in the machine's first network namespace: the list is read-only in \
                 any other)"
            )
        } else {
            first
        };
        Err(ActuateError::WidensAnother {
            param: param.to_string(),
            value: name.clone(),
            why: format!(
                "is not in net.ipv4.tcp_allowed_congestion_control ({:?}): as the default, the \
                 kernel would add it to that list for good, which a revert of the default does \
                 not undo (and refuses it in a namespace); {first}",
                allowed.trim()
            ),
        })
    }

    fn netns_text(&self) -> String {
        match &self.address.target {
            Target::Netns { netns } => netns.to_string(),
            _ => "host".into(),
        }
    }
}

/// Where a host-wide net key (`name`) was looked for when the agent's own network namespace, whose
/// `/proc/sys` is `proc_sys`, is not the machine's first one: the kernel registers its host-wide
/// net tables in the first namespace only (`net/core/netdev_budget` among them, always there),
/// so elsewhere they are missing although the machine has them. `None` for another key or in the
/// first namespace.
pub(crate) fn outside_the_first_netns(name: &str, proc_sys: &Path) -> Option<String> {
    let first = proc_sys.join("net/core/netdev_budget");
    let outside = name.starts_with("net.")
        && !is_per_netns(name)
        && proc_sys.join("net/core/somaxconn").exists()
        && !first.exists();
    outside.then(|| {
        format!(
            "in the agent's network namespace, which is not the machine's first one ({} is \
             missing too): the kernel shows host-wide net keys in the first namespace only, so \
             the agent must run there (a pod with host networking) to change them",
            first.display()
        )
    })
}

fn global_key(address: &ParamAddress, netns: &NetnsRef) -> ActuateError {
    ActuateError::GlobalKey {
        param: address.to_string(),
        key: address.name.clone(),
        netns: netns.to_string(),
    }
}

/// Opens a network namespace by path or by inode. An inode is looked up among `/run/netns/*`
/// (named namespaces, as `ip netns` makes them) and then `/proc/*/ns/net` (any process living in
/// it); the opened file is checked to be that namespace, so a PID reused meanwhile is caught.
pub fn open_netns(netns: &NetnsRef) -> Result<File, ActuateError> {
    let err = |reason: String| ActuateError::Netns {
        netns: netns.to_string(),
        reason,
    };
    // Namespace files live on nsfs; our own tells which device that is.
    let nsfs_dev = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.dev())
        .map_err(|e| err(format!("/proc/self/ns/net: {e} (is /proc mounted?)")))?;
    match netns {
        NetnsRef::Path(path) => {
            let not_a_namespace_file = || {
                err(format!(
                    "{} is not a namespace file (expected /run/netns/NAME or /proc/PID/ns/net)",
                    path.display()
                ))
            };
            // Looked at before it is opened: opening a FIFO (or a tty) an operator named by
            // mistake would wait for its other end, with the agent's loop waiting on it.
            if std::fs::metadata(path).is_ok_and(|m| m.dev() != nsfs_dev) {
                return Err(not_a_namespace_file());
            }
            let file = open_namespace_file(path).map_err(|e| {
                err(match e.kind() {
                    io::ErrorKind::NotFound => format!(
                        "{} does not exist (a named namespace is /run/netns/NAME; `ip netns list`)",
                        path.display()
                    ),
                    _ => format!("{}: {e}", path.display()),
                })
            })?;
            let meta = file.metadata().map_err(|e| err(e.to_string()))?;
            if meta.dev() != nsfs_dev {
                return Err(not_a_namespace_file());
            }
            // Another kind of namespace (`/proc/PID/ns/uts`) opens as well, and every setns into
            // it as a network namespace would fail later with a misleading EINVAL.
            if !is_network_namespace(&file) {
                return Err(err(format!(
                    "{} is not a network namespace (expected /run/netns/NAME or /proc/PID/ns/net)",
                    path.display()
                )));
            }
            Ok(file)
        }
        NetnsRef::Inode(inode) => {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Ok(dir) = std::fs::read_dir("/run/netns") {
                candidates.extend(dir.filter_map(Result::ok).map(|e| e.path()));
            }
            if let Ok(dir) = std::fs::read_dir("/proc") {
                candidates.extend(
                    dir.filter_map(Result::ok)
                        .filter(|e| {
                            e.file_name()
                                .to_str()
                                .is_some_and(|n| n.parse::<u32>().is_ok())
                        })
                        .map(|e| e.path().join("ns/net")),
                );
            }
            for path in candidates {
                let matches = std::fs::metadata(&path)
                    .is_ok_and(|m| m.ino() == *inode && m.dev() == nsfs_dev);
                if !matches {
                    continue;
                }
                let Ok(file) = open_namespace_file(&path) else {
                    continue;
                };
                // The process may have exited and its PID been reused between stat and open. A
                // `/run/netns` entry could be another kind of namespace bound there.
                if file
                    .metadata()
                    .is_ok_and(|m| m.ino() == *inode && m.dev() == nsfs_dev)
                    && is_network_namespace(&file)
                {
                    return Ok(file);
                }
            }
            Err(err(netns_gone(*inode)))
        }
    }
}

/// Opens a file that should be a namespace's, never waiting: the path is checked to be on nsfs
/// before it is opened, but may be replaced in between, and a FIFO opened without `O_NONBLOCK`
/// waits for a writer. A namespace file ignores the flag.
pub(crate) fn open_namespace_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Whether the namespace file `file` holds a network namespace. A kernel that cannot say
/// (ENOTTY) gets the benefit of the doubt: entering it will tell.
fn is_network_namespace(file: &File) -> bool {
    match namespace_type(file) {
        Ok(kind) => kind == libc::CLONE_NEWNET,
        Err(e) => e.raw_os_error() == Some(libc::ENOTTY),
    }
}

/// The kind of namespace a namespace file holds, as a `CLONE_NEW*` flag (`NS_GET_NSTYPE`, Linux
/// 4.11).
fn namespace_type(file: &File) -> io::Result<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns the namespace's CLONE_NEW* type;
    // `file` is open for the whole call.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(kind)
    }
}

/// The kind of namespace the file at `path` holds, in words with their article, when it is a
/// namespace but not a network namespace (`/proc/PID/ns/mnt`: "a mount namespace"); `None` for a
/// network namespace, for a file that is no namespace, and where the file cannot be opened or the
/// kernel cannot say. Only a file on nsfs is opened: opening a device or a FIFO named by mistake
/// has effects of its own (a watchdog starts, a writer waiting on the FIFO is let through).
pub(crate) fn other_namespace_kind(path: &Path) -> Option<&'static str> {
    let nsfs_dev = std::fs::metadata("/proc/self/ns/net").ok()?.dev();
    if std::fs::metadata(path).ok()?.dev() != nsfs_dev {
        return None;
    }
    let kind = namespace_type(&open_namespace_file(path).ok()?).ok()?;
    Some(match kind {
        libc::CLONE_NEWNET => return None,
        libc::CLONE_NEWNS => "a mount namespace",
        libc::CLONE_NEWUTS => "a UTS namespace",
        libc::CLONE_NEWIPC => "an IPC namespace",
        libc::CLONE_NEWPID => "a PID namespace",
        libc::CLONE_NEWUSER => "a user namespace",
        libc::CLONE_NEWCGROUP => "a cgroup namespace",
        libc::CLONE_NEWTIME => "a time namespace",
        _ => "a namespace of another kind",
    })
}

/// The network namespace's cookie (`SO_NETNS_COOKIE`, Linux 5.14): a 64-bit id the kernel never
/// gives another namespace while it runs. Its inode is no such id: a namespace created after one
/// died may get the dead one's inode, so what the journal knows of `…@netns:INODE` could otherwise
/// be taken for the new namespace. Read from a socket made inside the namespace, on a short-lived
/// thread that enters it; `Err` where the namespace cannot be entered or the kernel has no cookies.
pub fn netns_cookie(netns: &NetnsRef) -> Result<u64, ActuateError> {
    let file = open_netns(netns)?;
    cookie_of(&file, &netns.to_string())
}

/// The cookie of the namespace `file` is open on (`name` for errors). The agent's own namespace's
/// too: its keys are journaled as the host's, without one (the change path maps an address of it
/// to the host before it opens it), but an address another namespace's key names, by an inode the
/// kernel gave the agent's namespace after that one died, must be told from it by its cookie
/// (s55 story AW-4: the new namespace's own values were yielded as a person's change, and
/// `kpo revert --force` wrote the dead one's there).
fn cookie_of(file: &File, name: &str) -> Result<u64, ActuateError> {
    let err = |reason: String| ActuateError::Netns {
        netns: name.to_string(),
        reason,
    };
    let own = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino());
    let this = file.metadata().map(|m| m.ino());
    if let (Ok(own), Ok(this)) = (own, this) {
        if own == this {
            return this_netns_cookie().map_err(|e| err(format!("SO_NETNS_COOKIE: {e}")));
        }
    }
    super::on_thread("kpo-netns", || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| err(format!("setns(CLONE_NEWNET) failed: {e}")))?;
        this_netns_cookie().map_err(|e| err(format!("SO_NETNS_COOKIE: {e}")))
    })
    .unwrap_or_else(|reason| Err(err(reason)))
}

/// The cookie of the calling thread's network namespace.
pub fn this_netns_cookie() -> io::Result<u64> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    netns_cookie_of(&socket)
}

/// The cookie of the network namespace `socket` was made in. Written on libc because nix has no
/// `SO_NETNS_COOKIE` option.
pub fn netns_cookie_of(socket: &impl std::os::fd::AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the option writes at most `len` bytes into `cookie`, a live u64, and `len` says so.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Give an I/O error on a sysctl file its meaning.
fn sysctl_error(
    param: &str,
    path: &Path,
    e: io::Error,
    value: Option<&Value>,
    where_: &str,
) -> ActuateError {
    let writing = value.is_some();
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => ActuateError::NoSuchKey {
            param: param.into(),
            path: path.into(),
            where_: where_.into(),
            name_may_be_wrong: true,
        },
        Some(libc::EACCES) => {
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            if writing && mode & 0o222 == 0 {
                ActuateError::ReadOnly {
                    param: param.into(),
                    path: path.into(),
                    mode,
                }
            } else {
                ActuateError::PermissionDenied {
                    param: param.into(),
                    path: path.into(),
                    detail: format!(
                        "EACCES on {} (mode {mode:o}); {}",
                        if writing { "write" } else { "read" },
                        if !writing && mode & 0o444 == 0 {
                            "the key is write-only"
                        } else {
                            "KPO must run as root, and a namespace's keys belong to the user \
                             namespace that owns it"
                        }
                    ),
                }
            }
        }
        // s54 review3 N3-e: a container runtime mounts /proc/sys read-only unless told not to.
        Some(libc::EROFS) => ActuateError::PermissionDenied {
            param: param.into(),
            path: path.into(),
            detail: format!(
                "{e}; /proc/sys is mounted read-only here (a container's default): run the agent \
                 with /proc/sys read-write (a privileged pod)"
            ),
        },
        Some(libc::EPERM) => ActuateError::PermissionDenied {
            param: param.into(),
            path: path.into(),
            detail: "EPERM: the kernel wants a capability for this key (CAP_NET_ADMIN or \
                     CAP_SYS_ADMIN in the user namespace owning the network namespace), or the \
                     key is locked (e.g. by lockdown or a one-way setting)"
                .into(),
        },
        Some(libc::EINVAL) | Some(libc::ERANGE) | Some(libc::EOVERFLOW) if writing => {
            ActuateError::Refused {
                param: param.into(),
                value: value.map(Value::to_string).unwrap_or_default(),
                errno: super::errno_name(&e),
                hint:
                    "the value is outside what the key accepts (its range, or a \
                       relation to another key); see the kernel's \
                       Documentation/admin-guide/sysctl/ and Documentation/networking/ip-sysctl.rst"
                        .into(),
            }
        }
        _ => ActuateError::Io {
            path: path.into(),
            source: e,
        },
    }
}

fn where_text(address: &ParamAddress) -> String {
    match &address.target {
        Target::Netns { netns } => format!("in network namespace {netns}"),
        _ => "on the host".into(),
    }
}

fn read_file(param: &str, path: &Path, where_: &str) -> Result<Value, ActuateError> {
    let text = super::read_attr(path).map_err(|e| sysctl_error(param, path, e, None, where_))?;
    let value = Value::parse(&text);
    // Text is written back as `kernel_text` gives it; where that is not what the kernel printed
    // (tabs, several spaces, several lines), a revert would not restore the value.
    if let Value::Word(w) = &value {
        if *w != text.strip_suffix('\n').unwrap_or(&text) {
            return Err(ActuateError::Parse {
                path: path.into(),
                text: text.trim().to_string(),
                what: "integers separated by white space, or words separated by single spaces \
                       on one line (or nothing)",
            });
        }
    }
    Ok(value)
}

fn write_file(param: &str, path: &Path, value: &Value, where_: &str) -> Result<(), ActuateError> {
    // An empty value is one newline: a write of no bytes leaves `ip_local_reserved_ports` as it is.
    let bytes = format!("{}\n", value.kernel_text());
    // O_TRUNC as a shell's `echo >` does: /proc/sys ignores it, a test tree needs it.
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| sysctl_error(param, path, e, Some(value), where_))?;
    // One write(2): the kernel parses the whole value from one buffer.
    file.write_all(bytes.as_bytes()).map_err(|e| {
        match e.raw_os_error() {
        // The key is there (it opened): ENOENT from writing a word is about the value, a name the
        // kernel has nothing by (a congestion control or qdisc not built in or loaded). For a
        // number it is the key going away in between (a device removed, a namespace ending).
        Some(libc::ENOENT) if matches!(value, Value::Word(_)) => ActuateError::Refused {
            param: param.into(),
            value: value.to_string(),
            errno: super::errno_name(&e),
            hint: "the kernel has nothing by that name: a TCP congestion control or qdisc that is \
                   not built in or loaded (see net.ipv4.tcp_available_congestion_control)"
                .into(),
        },
        _ => sysctl_error(param, path, e, Some(value), where_),
    }
    })
}

/// Shape and syntax check of `value` against `current` (the kernel's own value).
fn check_shape(address: &ParamAddress, current: &Value, value: &Value) -> Result<(), ActuateError> {
    if shape_fits(address, current, value) {
        return Ok(());
    }
    let want = match current {
        _ if is_integer_list(address) => {
            "integers and ranges separated by commas (8080,9000-9100), one integer, or \"\""
                .to_string()
        }
        Value::Int(_) => "one integer".to_string(),
        Value::Ints(v) => format!("{} integers separated by spaces", v.len()),
        Value::Word(_) => "text: one word, words separated by spaces, or \"\"".to_string(),
    };
    Err(ActuateError::Shape {
        param: address.to_string(),
        given: value.to_string(),
        current: current.to_string(),
        want,
    })
}

impl Actuator for SysctlActuator {
    fn address(&self) -> &ParamAddress {
        &self.address
    }

    fn netns_cookie(&self) -> Option<u64> {
        cookie_of(self.netns.as_ref()?, &self.netns_text()).ok()
    }

    fn netns_inode(&self) -> Option<u64> {
        Some(self.netns.as_ref()?.metadata().ok()?.ino())
    }

    fn read(&mut self) -> Result<Value, ActuateError> {
        let param = self.address.to_string();
        let where_ = where_text(&self.address);
        self.in_target(|path| read_file(&param, path, &where_))
    }

    fn validate(&mut self, value: &Value) -> Result<(), ActuateError> {
        let param = self.address.to_string();
        let where_ = where_text(&self.address);
        if self.address.name == "net.ipv4.tcp_congestion_control" {
            self.check_allowed_congestion_control(&param, value)?;
        }
        self.in_target(|path| {
            let current = read_file(&param, path, &where_)?;
            check_shape(&self.address, &current, value)?;
            let mode = std::fs::metadata(path)
                .map_err(|e| sysctl_error(&param, path, e, None, &where_))?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o222 == 0 {
                return Err(ActuateError::ReadOnly {
                    param: param.clone(),
                    path: path.into(),
                    mode,
                });
            }
            Ok(())
        })
    }

    fn holds_still(&self) -> bool {
        true
    }

    fn apply(&mut self, value: &Value) -> Result<Value, ActuateError> {
        let param = self.address.to_string();
        let where_ = where_text(&self.address);
        self.in_target(|path| {
            let current = read_file(&param, path, &where_)?;
            check_shape(&self.address, &current, value)?;
            write_file(&param, path, value, &where_)?;
            let back = read_file(&param, path, &where_)?;
            if &back != value {
                // Neither the value asked nor the one before: the kernel stored another.
                let why = if back != current {
                    "the kernel took it and keeps another value: it rounds or rewrites some \
                     (a time it keeps in clock ticks, an inverted range), or another writer \
                     wrote it between KPO's write and its read-back"
                        .into()
                } else {
                    super::NOT_TAKEN.into()
                };
                return Err(ActuateError::Mismatch {
                    param: param.clone(),
                    wrote: value.to_string(),
                    read: back.to_string(),
                    why,
                });
            }
            Ok(back)
        })
    }

    fn revert(&mut self, original: &Value) -> Result<Value, ActuateError> {
        // The original is the kernel's own value: no shape check, but still verified.
        let param = self.address.to_string();
        let where_ = where_text(&self.address);
        self.in_target(|path| {
            write_file(&param, path, original, &where_)?;
            let back = read_file(&param, path, &where_)?;
            if &back != original {
                return Err(ActuateError::Mismatch {
                    param: param.clone(),
                    wrote: original.to_string(),
                    read: back.to_string(),
                    why: super::NOT_TAKEN.into(),
                });
            }
            Ok(back)
        })
    }
}

/// Why a network namespace named by inode cannot be entered.
pub fn netns_gone(inode: u64) -> String {
    format!(
        "no /run/netns/* entry and no process (/proc/*/ns/net) is in the network namespace with \
         inode {inode}; it may have been deleted"
    )
}

/// The inodes of the network namespaces alive now: those bound under /run/netns or anywhere else
/// this mount namespace sees (`nsfs` mounts in /proc/self/mountinfo), and those a process is in.
/// One scan of /proc for many questions, cheap enough for every window; a namespace only a thread
/// is in is not among them ([`netns_in_use`] looks further, when it matters).
pub fn live_netns_inodes() -> std::collections::HashSet<u64> {
    let bound = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path());
    let held = numbered_entries("/proc".as_ref()).map(|process| process.join("ns/net"));
    let mut live: std::collections::HashSet<u64> = bound
        .chain(held)
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.ino())
        .collect();
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        live.extend(nsfs_mounted_net_inodes(&mounts));
    }
    live
}

/// Whether this process sees every process of the machine under /proc: it is in the initial PID
/// namespace, whose inode is fixed (`PROC_PID_INIT_INO`). In another (a pod without hostPID), a
/// network namespace that only other processes hold looks unused, so none is taken for gone.
pub fn sees_every_process() -> bool {
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == PROC_PID_INIT_INO)
}

/// Whether network namespace `inode` is in use anywhere KPO can see: [`live_netns_inodes`], or
/// a thread of some process (one that called `setns` or `unshare`, as CNI plugins do). Asked
/// before a namespace is taken for gone for good, which is rare, so every thread is scanned. A
/// namespace held only by an open descriptor is not found: scanning every process's descriptors
/// would cost far more than the rare case it covers.
pub fn netns_in_use(inode: u64) -> bool {
    live_netns_inodes().contains(&inode)
        // A /proc that cannot be listed (no descriptor left) tells nothing: not "nowhere".
        || thread_in_netns("/proc".as_ref(), inode).unwrap_or(true)
}

/// Whether a thread of some process under `proc` (a /proc tree) is in network namespace
/// `inode`; `None` when that cannot be told: `proc`, or a live process's threads, cannot be
/// listed.
fn thread_in_netns(proc: &Path, inode: u64) -> Option<bool> {
    for process in numbered(std::fs::read_dir(proc).ok()?) {
        let tasks = match std::fs::read_dir(process.join("task")) {
            Ok(tasks) => tasks,
            // It exited since /proc was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        let mut threads = numbered(tasks);
        if threads
            .any(|task| std::fs::metadata(task.join("ns/net")).is_ok_and(|m| m.ino() == inode))
        {
            return Some(true);
        }
    }
    Some(false)
}

/// The entries of `dir` named by a number (processes, threads).
fn numbered_entries(dir: &Path) -> impl Iterator<Item = std::path::PathBuf> {
    std::fs::read_dir(dir).into_iter().flat_map(numbered)
}

/// The entries named by a number (processes, threads).
fn numbered(entries: std::fs::ReadDir) -> impl Iterator<Item = std::path::PathBuf> {
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path())
}

/// The network namespaces bind-mounted anywhere, from mountinfo: an `nsfs` mount's root field
/// is `net:[INODE]`.
fn nsfs_mounted_net_inodes(mountinfo: &str) -> impl Iterator<Item = u64> + '_ {
    mountinfo.lines().filter_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        if rest.split_whitespace().next()? != "nsfs" {
            return None;
        }
        let root = fields.split_whitespace().nth(3)?;
        root.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
    })
}

/// A process in a network namespace of its own, which lives as long as it does (tests that need
/// a namespace alive, then gone).
#[cfg(test)]
pub(crate) struct ProcessInOtherNetns(crate::test_child::Sleeper);

#[cfg(test)]
impl ProcessInOtherNetns {
    /// Starts one (root only).
    pub(crate) fn spawn() -> Self {
        // SAFETY: unshare(2) alone between fork and exec.
        let sleeper = unsafe {
            crate::test_child::Sleeper::spawn(600, || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(Into::into)
            })
        };
        Self(sleeper.unwrap())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The inode of its network namespace.
    pub(crate) fn netns_inode(&self) -> u64 {
        std::fs::metadata(format!("/proc/{}/ns/net", self.0.id()))
            .unwrap()
            .ino()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review (s42): `kpo apply --netns /dev/watchdog` made the agent open the device to ask its
    /// namespace kind, and opening some devices acts (a watchdog starts, a FIFO's waiting writer
    /// is let through). A file that is not on nsfs is never opened: inotify sees every open.
    #[test]
    fn a_file_off_nsfs_is_not_opened_to_ask_its_namespace_kind() {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-namespace");
        std::fs::write(&file, b"").unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let watch = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        for path in [&file, &fifo] {
            watch.add_watch(path, AddWatchFlags::IN_OPEN).unwrap();
            assert_eq!(other_namespace_kind(path), None, "{}", path.display());
        }
        match watch.read_events() {
            Err(nix::errno::Errno::EAGAIN) => {}
            other => panic!("opened: {other:?}"),
        }
    }

    /// A namespace that only a thread is in (it called `unshare` or `setns`, as CNI plugins do)
    /// is alive: judged gone, its change would be settled as failed and left unreverted.
    #[test]
    fn a_namespace_only_a_thread_is_in_is_live() {
        let (tx, rx) = std::sync::mpsc::channel();
        let done = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let inode = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .ok()
                    .map(|()| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino());
                tx.send(inode).unwrap();
                done.wait();
            });
            let inode = rx.recv().unwrap();
            let found = inode.map(netns_in_use);
            done.wait();
            match (inode, found) {
                (Some(inode), found) => assert_eq!(found, Some(true), "{inode} not found"),
                (None, _) => {
                    kpo_test_skip::skip("cannot create a network namespace here (not root)")
                }
            }
        });
    }

    /// Threads are found in a /proc-like tree; a tree that cannot be listed tells nothing, which
    /// `netns_in_use` takes for "in use" (out of descriptors, it took every namespace for gone).
    #[test]
    fn a_proc_that_cannot_be_listed_does_not_say_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path();
        for t in [
            "1/task/1/ns",
            "2/task/2/ns",
            "2/task/3/ns",
            "self/task/4/ns",
        ] {
            std::fs::create_dir_all(proc.join(t)).unwrap();
        }
        for t in [
            "1/task/1/ns/net",
            "2/task/2/ns/net",
            "2/task/3/ns/net",
            "self/task/4/ns/net",
        ] {
            std::fs::write(proc.join(t), "").unwrap();
        }
        let ino = |t: &str| std::fs::metadata(proc.join(t)).unwrap().ino();
        assert_eq!(thread_in_netns(proc, ino("2/task/3/ns/net")), Some(true));
        // Not a numbered entry: not a process.
        assert_eq!(
            thread_in_netns(proc, ino("self/task/4/ns/net")),
            Some(false)
        );
        assert_eq!(thread_in_netns(&proc.join("missing"), 1), None);
    }

    #[test]
    fn network_namespaces_mounted_anywhere_are_found_in_mountinfo() {
        let mountinfo = "\
1079 1073 0:4 net:[4026532178] /run/netns/web rw shared:611 - nsfs nsfs rw
1080 1073 0:4 net:[4026532300] /var/run/other/ns rw - nsfs nsfs rw
1081 1073 0:4 mnt:[4026532400] /run/mntns rw - nsfs nsfs rw
24 1 0:22 / /proc rw,nosuid - proc proc rw
";
        assert_eq!(
            nsfs_mounted_net_inodes(mountinfo).collect::<Vec<_>>(),
            [4026532178, 4026532300]
        );
    }

    /// A FIFO named as a namespace (`kpo apply ... --netns /tmp/fifo`) is refused at once: opened
    /// as a file it would wait for a writer, and the agent's loop with it. The bound below only
    /// turns that wait into a failure; it is never reached by a passing run.
    #[test]
    fn a_fifo_named_as_a_namespace_is_refused_without_waiting() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let named = NetnsRef::Path(fifo.clone());
        std::thread::spawn(move || tx.send(open_netns(&named).map(|_| ())));
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("open_netns returned instead of waiting for the FIFO's writer");
        let e = result.unwrap_err().to_string();
        assert!(e.contains("is not a namespace file"), "{e}");
        // Replaced by a FIFO between the look and the open, it still opens without waiting.
        assert!(open_namespace_file(&fifo).is_ok());
    }

    fn tree() -> (tempfile::TempDir, Roots) {
        let tmp = tempfile::tempdir().unwrap();
        let ps = tmp.path().join("proc_sys");
        std::fs::create_dir_all(ps.join("net/core")).unwrap();
        std::fs::create_dir_all(ps.join("net/ipv4/conf/eth0.100")).unwrap();
        std::fs::create_dir_all(ps.join("fs")).unwrap();
        std::fs::write(ps.join("net/core/somaxconn"), "4096\n").unwrap();
        // The first network namespace's: the kernel shows its host-wide net keys there only.
        std::fs::write(ps.join("net/core/netdev_budget"), "300\n").unwrap();
        std::fs::write(ps.join("net/ipv4/tcp_rmem"), "4096\t131072\t6291456\n").unwrap();
        std::fs::write(ps.join("net/ipv4/tcp_congestion_control"), "cubic\n").unwrap();
        std::fs::write(ps.join("net/ipv4/conf/eth0.100/rp_filter"), "1\n").unwrap();
        std::fs::write(ps.join("fs/inode-nr"), "1 2\n").unwrap();
        std::fs::set_permissions(
            ps.join("fs/inode-nr"),
            std::fs::Permissions::from_mode(0o444),
        )
        .unwrap();
        let roots = Roots {
            proc_sys: ps,
            sys: tmp.path().join("sys"),
        };
        (tmp, roots)
    }

    fn open(text: &str, roots: &Roots) -> SysctlActuator {
        SysctlActuator::open(&text.parse().unwrap(), roots).unwrap()
    }

    #[test]
    fn per_netns_keys_are_told_from_global_ones() {
        for k in [
            "net.core.somaxconn",
            "net.core.rmem_max",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.route.min_pmtu",
            "net.ipv6.route.gc_thresh",
            "net.unix.max_dgram_qlen",
            "net.netfilter.nf_conntrack_max",
            "net.mptcp.enabled",
            "net.ipv4.neigh.lo.base_reachable_time_ms",
        ] {
            assert!(is_per_netns(k), "{k} is per netns");
        }
        for k in [
            "net.core.netdev_max_backlog",
            "net.core.netdev_budget",
            "net.core.netdev_budget_usecs",
            "net.core.bpf_jit_enable",
            "net.core.busy_poll",
            "net.ipv4.tcp_mem",
            "net.ipv4.route.gc_thresh",
            "net.netfilter.nf_log_all_netns",
            "net.ipv4.neigh.default.gc_thresh3",
            "net.ipv6.neigh.default.gc_thresh1",
            "vm.swappiness",
            "kernel.pid_max",
            "fs.file-max",
            "user.max_net_namespaces",
            "net.somethingnew.key",
        ] {
            assert!(!is_per_netns(k), "{k} is global");
        }
    }

    #[test]
    fn reads_applies_and_verifies_on_a_tree() {
        let (_tmp, roots) = tree();
        let mut a = open("net/core/somaxconn", &roots);
        assert_eq!(a.address().name, "net.core.somaxconn");
        assert_eq!(a.read().unwrap(), Value::Int(4096));
        assert_eq!(a.apply(&Value::Int(8192)).unwrap(), Value::Int(8192));
        assert_eq!(
            std::fs::read_to_string(roots.proc_sys.join("net/core/somaxconn")).unwrap(),
            "8192\n"
        );
        assert_eq!(a.revert(&Value::Int(4096)).unwrap(), Value::Int(4096));

        let mut rmem = open("net.ipv4.tcp_rmem", &roots);
        assert_eq!(
            rmem.read().unwrap(),
            Value::Ints(vec![4096, 131072, 6291456])
        );
        let new = Value::Ints(vec![4096, 262144, 8388608]);
        rmem.validate(&new).unwrap();
        assert_eq!(rmem.apply(&new).unwrap(), new);
        assert_eq!(
            std::fs::read_to_string(roots.proc_sys.join("net/ipv4/tcp_rmem")).unwrap(),
            "4096 262144 8388608\n",
            "written space-separated"
        );

        let mut vlan = open("net.ipv4.conf.eth0/100.rp_filter", &roots);
        assert_eq!(vlan.read().unwrap(), Value::Int(1));
        let mut cc = open("net.ipv4.tcp_congestion_control", &roots);
        assert_eq!(
            cc.apply(&Value::Word("bbr".into())).unwrap(),
            Value::Word("bbr".into())
        );
    }

    fn file(roots: &Roots, rel: &str) -> String {
        std::fs::read_to_string(roots.proc_sys.join(rel)).unwrap()
    }

    /// Defect: an empty value (`ip_local_reserved_ports` before any port is reserved) could not
    /// be read (`Parse`), so a change away from it could never be made, nor put back.
    #[test]
    fn an_empty_value_is_read_changed_and_put_back() {
        let (_tmp, roots) = tree();
        let rel = "net/ipv4/ip_local_reserved_ports";
        std::fs::write(roots.proc_sys.join(rel), "\n").unwrap();
        let mut ports = open("net.ipv4.ip_local_reserved_ports", &roots);
        let empty = ports.read().unwrap();
        assert_eq!(empty, Value::Word(String::new()));
        let list = Value::Word("8080,9000-9100".into());
        ports.validate(&list).unwrap();
        assert_eq!(ports.apply(&list).unwrap(), list);
        assert_eq!(file(&roots, rel), "8080,9000-9100\n");
        // Put back as the kernel takes "nothing": one newline (no bytes at all change nothing).
        assert_eq!(ports.revert(&empty).unwrap(), empty);
        assert_eq!(file(&roots, rel), "\n");
        ports.apply(&list).unwrap();
        assert_eq!(
            ports.apply(&empty).unwrap(),
            empty,
            "and applied like any value"
        );
        assert_eq!(file(&roots, rel), "\n");
        // A text key may be empty too; an integer key never takes it.
        std::fs::write(roots.proc_sys.join("net/ipv4/tcp_congestion_control"), "\n").unwrap();
        let mut cc = open("net.ipv4.tcp_congestion_control", &roots);
        assert_eq!(cc.read().unwrap(), empty);
        let cubic = Value::Word("cubic".into());
        assert_eq!(cc.apply(&cubic).unwrap(), cubic);
        let err = open("net.core.somaxconn", &roots)
            .apply(&empty)
            .unwrap_err();
        assert!(matches!(err, ActuateError::Shape { .. }), "{err}");
        assert_eq!(file(&roots, "net/core/somaxconn"), "4096\n", "untouched");
    }

    /// Defect: a default congestion control the host did not allow was written, and the kernel
    /// added it to `tcp_allowed_congestion_control` for good (no journal entry, no revert); in a
    /// namespace the kernel's EPERM was explained as a missing capability.
    /// Defect (qa-act): `kpo apply $'net.ipv4.tcp_congestion_control=reno\nbbr'` (two names) was
    /// refused as "\"reno bbr\" is not in net.ipv4.tcp_allowed_congestion_control (\"reno bbr\")
    /// ... load it first (`modprobe tcp_reno bbr`)": the key holds one name.
    #[test]
    fn a_default_congestion_control_of_several_words_is_one_name_too_many() {
        let (_tmp, roots) = tree();
        std::fs::write(
            roots
                .proc_sys
                .join("net/ipv4/tcp_allowed_congestion_control"),
            "reno bbr\n",
        )
        .unwrap();
        let mut cc = open("net.ipv4.tcp_congestion_control", &roots);
        let err = cc.validate(&Value::Word("reno bbr".into())).unwrap_err();
        assert!(matches!(err, ActuateError::Shape { .. }), "{err}");
        let said = err.to_string();
        assert!(said.contains("one congestion control name"), "{said}");
        assert!(!said.contains("modprobe"), "{said}");
        cc.validate(&Value::Word("bbr".into())).unwrap();
    }

    #[test]
    fn a_congestion_control_not_allowed_is_refused_before_the_write() {
        let (_tmp, roots) = tree();
        std::fs::write(
            roots
                .proc_sys
                .join("net/ipv4/tcp_allowed_congestion_control"),
            "reno cubic\n",
        )
        .unwrap();
        let mut cc = open("net.ipv4.tcp_congestion_control", &roots);
        let err = cc.validate(&Value::Word("bbr".into())).unwrap_err();
        assert!(matches!(err, ActuateError::WidensAnother { .. }), "{err}");
        assert!(err.to_string().contains("\"reno cubic\""), "{err}");
        assert!(
            err.to_string().contains("add it to that list first"),
            "{err}"
        );
        assert_eq!(file(&roots, "net/ipv4/tcp_congestion_control"), "cubic\n");
        // Not loaded either: adding it to the list would fail (no autoload there), so the
        // module comes first.
        std::fs::write(
            roots
                .proc_sys
                .join("net/ipv4/tcp_available_congestion_control"),
            "reno cubic\n",
        )
        .unwrap();
        let err = cc.validate(&Value::Word("bbr".into())).unwrap_err();
        assert!(matches!(err, ActuateError::WidensAnother { .. }), "{err}");
        assert!(
            err.to_string().contains("not loaded either")
                && err.to_string().contains("`modprobe tcp_bbr`"),
            "{err}"
        );
        cc.validate(&Value::Word("reno".into())).unwrap();
        // The list is read-only outside the machine's first namespace, so an agent that runs
        // in another (a pod: somaxconn here, netdev_budget not) is told where the step is
        // taken (s54 review2 N-e); in the first, it is not.
        let first_only = roots.proc_sys.join("net/core/netdev_budget");
        std::fs::create_dir_all(first_only.parent().unwrap()).unwrap();
        std::fs::write(roots.proc_sys.join("net/core/somaxconn"), "4096\n").unwrap();
        std::fs::write(&first_only, "300\n").unwrap();
        let here = cc
            .validate(&Value::Word("bbr".into()))
            .unwrap_err()
            .to_string();
        assert!(!here.contains("read-only in any other"), "{here}");
        std::fs::remove_file(&first_only).unwrap();
        let in_a_pod = cc
            .validate(&Value::Word("bbr".into()))
            .unwrap_err()
            .to_string();
        assert!(
            in_a_pod.contains("(in the machine's first network namespace: the list is read-only"),
            "{in_a_pod}"
        );
        std::fs::write(
            roots
                .proc_sys
                .join("net/ipv4/tcp_allowed_congestion_control"),
            "reno cubic bbr\n",
        )
        .unwrap();
        cc.validate(&Value::Word("bbr".into())).unwrap();
        // Without the list (it cannot be read), the kernel decides.
        std::fs::remove_file(
            roots
                .proc_sys
                .join("net/ipv4/tcp_allowed_congestion_control"),
        )
        .unwrap();
        cc.validate(&Value::Word("dctcp".into())).unwrap();
    }

    /// Defect: a value of several words (`tcp_allowed_congestion_control = "reno cubic"`) could
    /// not be read (`Parse`). It is a list of words now, written back as the kernel printed it;
    /// text the kernel printed otherwise than words and single spaces is still refused, since
    /// writing it back would not restore it.
    #[test]
    fn several_words_are_read_and_written_back_exactly() {
        let (_tmp, roots) = tree();
        let rel = "net/ipv4/tcp_allowed_congestion_control";
        std::fs::write(roots.proc_sys.join(rel), "reno cubic\n").unwrap();
        let mut allowed = open("net.ipv4.tcp_allowed_congestion_control", &roots);
        let original = allowed.read().unwrap();
        assert_eq!(original, Value::Word("reno cubic".into()));
        let more = Value::Word("reno cubic bbr".into());
        allowed.validate(&more).unwrap();
        assert_eq!(allowed.apply(&more).unwrap(), more);
        assert_eq!(file(&roots, rel), "reno cubic bbr\n");
        // A list of one is printed as one word: the same shape.
        let one = Value::Word("reno".into());
        assert_eq!(allowed.apply(&one).unwrap(), one);
        assert_eq!(allowed.revert(&original).unwrap(), original);
        assert_eq!(file(&roots, rel), "reno cubic\n");
        let err = allowed.validate(&Value::Int(1)).unwrap_err();
        assert!(matches!(err, ActuateError::Shape { .. }), "{err}");

        for text in ["reno\tcubic\n", "reno  cubic\n", " reno\n", "reno\ncubic\n"] {
            std::fs::write(roots.proc_sys.join(rel), text).unwrap();
            let err = allowed.read().unwrap_err();
            assert!(matches!(err, ActuateError::Parse { .. }), "{text:?}: {err}");
            let err = allowed.apply(&more).unwrap_err();
            assert!(matches!(err, ActuateError::Parse { .. }), "{text:?}: {err}");
            assert_eq!(file(&roots, rel), text, "nothing written");
        }
    }

    /// The kernel's form of a list of ports (`proc_do_large_bitmap`'s output), and text it
    /// refuses or reads otherwise left to it (s55 story AT-2).
    #[test]
    fn an_integer_list_is_put_in_the_kernels_form() {
        for (given, kernel) in [
            ("", ""),
            ("80", "80"),
            ("8091,8090", "8090-8091"),
            ("9000,81,80", "80-81,9000"),
            ("8080,9000-9100", "8080,9000-9100"),
            ("9000-9100,9050,9101,80,80", "80,9000-9101"),
            ("0,65535", "0,65535"),
        ] {
            assert_eq!(
                integer_list_in_kernel_form(given).as_deref(),
                Some(kernel),
                "{given}"
            );
        }
        for left_to_the_kernel in [
            "80,,443", "80-", "-80", "90-80", "65536", "+80", "80 ,81", "cubic", "010", "0x50",
            "80,",
        ] {
            assert_eq!(
                integer_list_in_kernel_form(left_to_the_kernel),
                None,
                "{left_to_the_kernel}"
            );
        }
    }

    /// Defect: the kernel prints a list of one port as an integer (`80`), so
    /// `ip_local_reserved_ports` could not go from one port to a list, or from a list to one port.
    /// That key's value is any form of a list; an integer key stays an integer.
    #[test]
    fn one_port_a_list_and_none_are_one_shape_for_an_integer_list() {
        let (_tmp, roots) = tree();
        let rel = "net/ipv4/ip_local_reserved_ports";
        std::fs::write(roots.proc_sys.join(rel), "80\n").unwrap();
        let mut ports = open("net.ipv4.ip_local_reserved_ports", &roots);
        assert_eq!(ports.read().unwrap(), Value::Int(80));
        for (value, written) in [
            (Value::Word("8080,9000-9100".into()), "8080,9000-9100\n"),
            (Value::Int(443), "443\n"),
            (Value::Word(String::new()), "\n"),
            (Value::Int(8443), "8443\n"),
            (Value::Word("80,443".into()), "80,443\n"),
        ] {
            ports.validate(&value).unwrap();
            assert_eq!(ports.apply(&value).unwrap(), value);
            assert_eq!(file(&roots, rel), written);
        }
        for bad in [
            Value::Int(-1),
            Value::Ints(vec![80, 443]),
            Value::Word("cubic".into()),
            Value::Word("80,,443".into()),
            Value::Word("80-".into()),
        ] {
            let err = ports.apply(&bad).unwrap_err();
            assert!(matches!(err, ActuateError::Shape { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("separated by commas"), "{err}");
        }
        assert_eq!(file(&roots, rel), "80,443\n", "untouched");

        // Only that key: an integer key refuses a list, a word key an integer.
        let somaxconn: ParamAddress = "net.core.somaxconn".parse().unwrap();
        let cc: ParamAddress = "net.ipv4.tcp_congestion_control".parse().unwrap();
        let list = Value::Word("8080,8443".into());
        assert!(!shape_fits(&somaxconn, &Value::Int(4096), &list));
        assert!(!shape_fits(
            &somaxconn,
            &Value::Int(4096),
            &Value::Word(String::new())
        ));
        assert!(!shape_fits(
            &cc,
            &Value::Word("cubic".into()),
            &Value::Int(1)
        ));
        let in_ns: ParamAddress = "net.ipv4.ip_local_reserved_ports@netns:7".parse().unwrap();
        assert!(shape_fits(&in_ns, &Value::Int(80), &list));
        assert!(shape_fits(&in_ns, &list, &Value::Int(80)));
        let mut s = open("net.core.somaxconn", &roots);
        let err = s.apply(&list).unwrap_err();
        assert!(matches!(err, ActuateError::Shape { .. }), "{err}");
    }

    #[test]
    fn wrong_shapes_are_refused_before_writing() {
        let (_tmp, roots) = tree();
        let mut rmem = open("net.ipv4.tcp_rmem", &roots);
        for bad in [
            Value::Ints(vec![1, 2]),
            Value::Int(7),
            Value::Word("big".into()),
        ] {
            let err = rmem.validate(&bad).unwrap_err();
            assert!(matches!(err, ActuateError::Shape { .. }), "{err}");
            assert!(err.to_string().contains("3 integers"), "{err}");
            assert!(matches!(rmem.apply(&bad), Err(ActuateError::Shape { .. })));
        }
        assert_eq!(
            std::fs::read_to_string(roots.proc_sys.join("net/ipv4/tcp_rmem")).unwrap(),
            "4096\t131072\t6291456\n",
            "untouched"
        );
        let mut s = open("net.core.somaxconn", &roots);
        assert!(matches!(
            s.validate(&Value::Word("lots".into())),
            Err(ActuateError::Shape { .. })
        ));
    }

    #[test]
    fn missing_and_read_only_keys_are_clear_errors() {
        let (_tmp, roots) = tree();
        let err = open("net.core.no_such_key", &roots).read().unwrap_err();
        assert!(matches!(err, ActuateError::NoSuchKey { .. }), "{err}");
        assert!(err.to_string().contains("net.core.no_such_key"), "{err}");
        let mut ro = open("fs.inode-nr", &roots);
        let err = ro.validate(&Value::Ints(vec![3, 4])).unwrap_err();
        assert!(matches!(err, ActuateError::ReadOnly { .. }), "{err}");
        assert!(err.to_string().contains("read-only"), "{err}");
    }

    /// Defect: a value of the wrong kind was refused with Rust's `Debug` text, in the change
    /// event and the journal: "has the form of Int(8192), not Word(\"abc\")".
    #[test]
    fn a_value_of_the_wrong_kind_is_refused_in_words() {
        use crate::change::tests::{kernel, path};
        use crate::policy::{Proposal, Source};
        const A: &str = "net.core.somaxconn@netns:4026539999";
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(A, Value::Int(8192))]);
        let (mut p, _) = path(dir.path(), "", &k);
        let r = p
            .propose(&Proposal {
                address: A.parse().unwrap(),
                value: Value::Word("abc".into()),
                source: Source::Operator,
                reason: "test".into(),
            })
            .unwrap();
        let said = format!("{A} is an integer (now 8192), not the word \"abc\"");
        assert!(r.describe().contains(&said), "{}", r.describe());
        let detail = p.journal.entries().last().unwrap().detail.clone().unwrap();
        assert!(detail.contains(&said), "{detail}");
        // Each kind in words, and a list of ports as the kernel takes it.
        let shown =
            |a: &str, now: Value, given: Value| shape_mismatch(&a.parse().unwrap(), &now, &given);
        assert_eq!(
            shown(
                "net.ipv4.tcp_rmem",
                Value::Ints(vec![1, 2, 3]),
                Value::Int(5)
            ),
            "net.ipv4.tcp_rmem is 3 integers (now 1 2 3), not the integer 5"
        );
        assert_eq!(
            shown(
                "net.ipv4.tcp_congestion_control",
                Value::Word("cubic".into()),
                Value::Ints(vec![1, 2])
            ),
            "net.ipv4.tcp_congestion_control is text (now \"cubic\"), not 2 integers (1 2)"
        );
        assert_eq!(
            shown(
                "net.ipv4.ip_local_reserved_ports",
                Value::Word(String::new()),
                Value::Word("a b".into())
            ),
            "net.ipv4.ip_local_reserved_ports is a list of integers and ranges (8080,9000-9100), \
             one integer, or \"\" (now \"\"), not the words \"a b\""
        );
        assert_eq!(
            shown(
                "net.core.somaxconn",
                Value::Int(1),
                Value::Word(String::new())
            ),
            "net.core.somaxconn is an integer (now 1), not the empty value \"\""
        );
    }

    #[test]
    fn a_global_key_in_a_namespace_is_refused_at_open() {
        let (_tmp, roots) = tree();
        std::fs::write(roots.proc_sys.join("net/core/netdev_max_backlog"), "1000\n").unwrap();
        std::fs::create_dir_all(roots.proc_sys.join("vm")).unwrap();
        std::fs::write(roots.proc_sys.join("vm/swappiness"), "60\n").unwrap();
        for text in [
            "net.core.netdev_max_backlog@netns:/run/netns/x",
            "vm.swappiness@netns:4026531840",
        ] {
            let err = SysctlActuator::open(&text.parse().unwrap(), &roots).unwrap_err();
            assert!(matches!(err, ActuateError::GlobalKey { .. }), "{err}");
            assert!(err.to_string().contains("host-wide"), "{err}");
        }
        // Defect: a key that exists nowhere (`kpo apply bogus.key=5 --netns ...`) was called a
        // host-wide parameter. It is no such sysctl, named with where it was looked for.
        for text in [
            "bogus.key@netns:/run/netns/x",
            "net.core.no_such_key@netns:4026531840",
            "net.core.somaxconn.x@netns:4026531840",
        ] {
            let err = SysctlActuator::open(&text.parse().unwrap(), &roots).unwrap_err();
            assert!(matches!(err, ActuateError::NoSuchKey { .. }), "{err}");
            let said = err.to_string();
            assert!(said.contains("no such sysctl on the host"), "{said}");
            assert!(!said.contains("host-wide"), "{said}");
        }
        // A per-netns key in a namespace that does not exist: a namespace error.
        let err = SysctlActuator::open(
            &"net.core.somaxconn@netns:/nonexistent/ns".parse().unwrap(),
            &roots,
        )
        .unwrap_err();
        assert!(matches!(err, ActuateError::Netns { .. }), "{err}");
        let err = SysctlActuator::open(
            &"net.core.somaxconn@netns:/etc/hostname".parse().unwrap(),
            &roots,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a namespace file"), "{err}");
        // A namespace file of another kind: refused at open, not at every read.
        let err = SysctlActuator::open(
            &"net.core.somaxconn@netns:/proc/self/ns/uts"
                .parse()
                .unwrap(),
            &roots,
        )
        .unwrap_err();
        assert!(matches!(err, ActuateError::Netns { .. }), "{err}");
        assert!(err.to_string().contains("not a network namespace"), "{err}");
        let err = SysctlActuator::open(&"net.core.somaxconn@netns:1".parse().unwrap(), &roots)
            .unwrap_err();
        assert!(matches!(err, ActuateError::Netns { .. }), "{err}");
    }

    /// Defect (qa-act): an agent in a network namespace other than the machine's first one (a
    /// pod without host networking, `ip netns exec`) does not see the host-wide net keys, which
    /// the kernel shows in the first namespace only; `kpo apply net.core.netdev_max_backlog=2000`
    /// said "no such sysctl on the host ... check the name ... that the module providing it is
    /// loaded", although the machine has it. It says where the agent runs now, without the hint
    /// to check the name.
    #[test]
    fn a_host_wide_net_key_missing_outside_the_first_namespace_says_so() {
        let (_tmp, roots) = tree();
        // The tree as a namespace other than the first shows /proc/sys/net: no netdev_budget.
        std::fs::remove_file(roots.proc_sys.join("net/core/netdev_budget")).unwrap();
        let host = open("net.core.netdev_max_backlog", &roots)
            .read()
            .unwrap_err();
        let in_netns = SysctlActuator::open(
            &"net.core.netdev_max_backlog@netns:/run/netns/x"
                .parse()
                .unwrap(),
            &roots,
        )
        .unwrap_err();
        for err in [host, in_netns] {
            assert!(matches!(err, ActuateError::NoSuchKey { .. }), "{err}");
            let said = err.to_string();
            assert!(
                said.contains("in the agent's network namespace, which is not the machine's first"),
                "{said}"
            );
            assert!(!said.contains("on the host"), "{said}");
            // The name is right (s46 storyK K7: it still ended "check the name, ...").
            assert!(
                said.ends_with("does not exist)") && !said.contains("check the name"),
                "{said}"
            );
        }
        // A per-namespace key missing there, or a key outside net, is no such key as before.
        let err = open("net.ipv4.no_such_key", &roots).read().unwrap_err();
        assert!(
            err.to_string().contains("no such sysctl on the host")
                && err.to_string().contains("; check the name"),
            "{err}"
        );
        let err = open("vm.no_such_key", &roots).read().unwrap_err();
        assert!(
            err.to_string().contains("no such sysctl on the host"),
            "{err}"
        );
    }

    #[test]
    fn kernel_refusals_map_to_variants() {
        let p = Path::new("/proc/sys/net/core/somaxconn");
        let v = Value::Int(-1);
        let e = sysctl_error(
            "x",
            p,
            io::Error::from_raw_os_error(libc::EINVAL),
            Some(&v),
            "",
        );
        assert!(
            matches!(&e, ActuateError::Refused { errno, .. } if errno == "EINVAL"),
            "{e}"
        );
        let e = sysctl_error(
            "x",
            p,
            io::Error::from_raw_os_error(libc::EPERM),
            Some(&v),
            "",
        );
        assert!(matches!(e, ActuateError::PermissionDenied { .. }), "{e}");
        let e = sysctl_error("x", p, io::Error::from_raw_os_error(libc::ENOENT), None, "");
        assert!(matches!(e, ActuateError::NoSuchKey { .. }), "{e}");
        // EINVAL on a read is not a refused value.
        let e = sysctl_error("x", p, io::Error::from_raw_os_error(libc::EINVAL), None, "");
        assert!(matches!(e, ActuateError::Io { .. }), "{e}");
        // s54 review3 N3-e: EROFS was a bare os error; a container's /proc/sys is read-only.
        let e = sysctl_error(
            "x",
            p,
            io::Error::from_raw_os_error(libc::EROFS),
            Some(&v),
            "",
        );
        assert!(
            matches!(&e, ActuateError::PermissionDenied { detail, .. }
                if detail.contains("/proc/sys is mounted read-only here")),
            "{e}"
        );
    }
}
