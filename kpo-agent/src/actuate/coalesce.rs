//! NIC interrupt coalescing (`ethtool -C <iface> rx-usecs N`), behind a backend trait.
//!
//! The kernel's adaptive moderation (net_dim, `adaptive-rx on`) moves rx-usecs by itself. An agent
//! that owns coalescing must turn adaptive mode off for that NIC or leave the NIC alone; it must
//! never fight it (see [`CoalesceActuator`] below).
//!
//! Backends: [`EthtoolCoalesce`] (the kernel's ethtool generic netlink interface,
//! `ETHTOOL_MSG_COALESCE_GET/SET`, in [`ethtool`]; its messages are in [`ethtool_msg`]) and
//! `FakeCoalesce` (in memory, for tests; compiled only for tests and with the `test-util`
//! feature).
//!
//! [`CoalesceActuator`] is the [`Actuator`] for `ethtool:IFACE:ATTR` (`rx-usecs`, `rx-frames`,
//! `tx-usecs`, `tx-frames`, `adaptive-rx`, `adaptive-tx`). A change of `rx-*` on a NIC whose
//! adaptive-rx is on (or `tx-*` with adaptive-tx on) is refused ([`ActuateError::AdaptiveOn`])
//! unless the actuator was allowed to turn adaptive mode off
//! ([`Actuator::set_adaptive_off_allowed`], which the policy decides); then the same
//! `ETHTOOL_MSG_COALESCE_SET` turns adaptive mode off and sets the value. Changing `adaptive-rx`
//! itself is an ordinary change of that parameter.

#[cfg(any(test, feature = "test-util"))]
use std::collections::BTreeMap;
#[cfg(any(test, feature = "test-util"))]
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::param::{ParamAddress, Target, Value};
use super::{ActuateError, Actuator};

pub mod ethtool;
pub mod ethtool_msg;

pub use ethtool::EthtoolCoalesce;
pub use ethtool_msg::CoalesceAttrs;

/// The coalescing settings KPO cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CoalesceSettings {
    pub rx_usecs: u32,
    pub adaptive_rx: bool,
}

/// Reads and writes a NIC's coalescing settings.
pub trait CoalesceBackend {
    fn get(&mut self, iface: &str) -> Result<CoalesceSettings, ActuateError>;
    fn set(&mut self, iface: &str, settings: CoalesceSettings) -> Result<(), ActuateError>;
}

/// What to do with a NIC whose adaptive-rx is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptiveMode {
    /// Leave the NIC alone: refuse to own its coalescing.
    #[default]
    Respect,
    /// Turn adaptive mode off as part of a change (turned back on by the actuator's revert).
    TurnOff,
}

#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
struct FakeState {
    nics: BTreeMap<String, CoalesceAttrs>,
    /// Each NIC's interface index, given as the kernel does: the next one, never one a removed
    /// NIC had.
    indexes: BTreeMap<String, u32>,
    next_index: u32,
    /// NICs moved to another network namespace, with their settings and index
    /// ([`FakeCoalesce::move_nic_out`]).
    away: BTreeMap<String, (CoalesceAttrs, u32)>,
    /// The cookie of the namespace the NICs are in (`None`: a kernel without cookies).
    netns_cookie: Option<u64>,
    unsupported: Vec<String>,
    /// Driver granularity: stored rx-usecs are rounded down to a multiple of this (0 = exact).
    granularity: u32,
    history: Vec<(String, CoalesceSettings)>,
    /// Fail one `set` after this many more succeed (`None`: never).
    fail_after: Option<usize>,
    /// Sets still to fail once `fail_after` has run out.
    failures: usize,
    /// Reads (a GET, a lookup of a name or an index) still to fail, as a transient error.
    failing_reads: usize,
    /// Names looked up by `ifindex` that no device had: the kernel would have tried to load a
    /// module for each (`SIOCGIFINDEX` runs `dev_load`).
    absent_names_asked: usize,
    /// Alternative names (`ip link property add dev NIC altname ALT`): ALT -> NIC.
    altnames: BTreeMap<String, String>,
}

#[cfg(any(test, feature = "test-util"))]
impl Default for FakeState {
    fn default() -> Self {
        Self {
            nics: BTreeMap::new(),
            indexes: BTreeMap::new(),
            // 1 is the loopback's.
            next_index: 2,
            away: BTreeMap::new(),
            netns_cookie: Some(FakeCoalesce::NETNS_COOKIE),
            unsupported: Vec::new(),
            granularity: 0,
            history: Vec::new(),
            fail_after: None,
            failures: 0,
            failing_reads: 0,
            absent_names_asked: 0,
            altnames: BTreeMap::new(),
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
impl FakeState {
    /// The index of `iface`, given now if it has none.
    fn index(&mut self, iface: &str) -> u32 {
        if let Some(&i) = self.indexes.get(iface) {
            return i;
        }
        let i = self.next_index;
        self.next_index += 1;
        self.indexes.insert(iface.to_string(), i);
        i
    }

    /// The name `iface` stands for: the NIC's own for an alternative name, else itself (the
    /// kernel's name lookups take either).
    fn resolve(&self, iface: &str) -> String {
        self.altnames
            .get(iface)
            .cloned()
            .unwrap_or_else(|| iface.to_string())
    }

    /// A transient error if a read is to fail now.
    fn read_fails(&mut self, what: &str) -> Result<(), ActuateError> {
        if self.failing_reads == 0 {
            return Ok(());
        }
        self.failing_reads -= 1;
        Err(ActuateError::Io {
            path: what.into(),
            source: std::io::Error::from_raw_os_error(libc::ENOBUFS),
        })
    }
}

/// In-memory coalescing backend. Clones share state, so a test can keep a handle to inspect the
/// NIC while a knob owns another. A NIC added with [`FakeCoalesce::add_nic`] supports rx-usecs and
/// adaptive-rx only; [`FakeCoalesce::add_nic_attrs`] gives it any set of parameters.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, Default)]
pub struct FakeCoalesce {
    state: Arc<Mutex<FakeState>>,
}

#[cfg(any(test, feature = "test-util"))]
fn attrs_of(s: CoalesceSettings) -> CoalesceAttrs {
    CoalesceAttrs {
        rx_usecs: Some(s.rx_usecs),
        use_adaptive_rx: Some(s.adaptive_rx),
        ..CoalesceAttrs::default()
    }
}

#[cfg(any(test, feature = "test-util"))]
fn settings_of(a: &CoalesceAttrs) -> CoalesceSettings {
    CoalesceSettings {
        rx_usecs: a.rx_usecs.unwrap_or(0),
        adaptive_rx: a.use_adaptive_rx.unwrap_or(false),
    }
}

#[cfg(any(test, feature = "test-util"))]
impl FakeCoalesce {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or reset) a NIC with the given settings.
    pub fn add_nic(&self, iface: &str, settings: CoalesceSettings) -> &Self {
        self.add_nic_attrs(iface, attrs_of(settings))
    }

    /// The cookie of the fake's network namespace, until [`FakeCoalesce::set_netns_cookie`].
    pub const NETNS_COOKIE: u64 = 1;

    /// Add (or reset) a NIC that supports exactly the `Some` parameters of `attrs`. A new one
    /// gets the next interface index; a reset one keeps its own.
    pub fn add_nic_attrs(&self, iface: &str, attrs: CoalesceAttrs) -> &Self {
        let mut st = self.state.lock().expect("fake state");
        st.index(iface);
        st.nics.insert(iface.to_string(), attrs);
        self
    }

    /// Take a NIC away (unplugged, its driver unloaded, a veth deleted): its name and its index
    /// name nothing any more.
    pub fn remove_nic(&self, iface: &str) -> &Self {
        let mut st = self.state.lock().expect("fake state");
        st.nics.remove(iface);
        st.indexes.remove(iface);
        self
    }

    /// Move a NIC to another network namespace (`ip link set DEV netns X`): from here, its name
    /// and its index name nothing, as for one removed, but it keeps its settings and its index.
    pub fn move_nic_out(&self, iface: &str) -> &Self {
        let mut st = self.state.lock().expect("fake state");
        if let (Some(attrs), Some(index)) = (st.nics.remove(iface), st.indexes.remove(iface)) {
            st.away.insert(iface.to_string(), (attrs, index));
        }
        self
    }

    /// Bring a NIC moved out back ([`FakeCoalesce::move_nic_out`]), with its settings, its name
    /// and its index (free here still: the kernel gives out indexes cyclically).
    pub fn move_nic_back(&self, iface: &str) -> &Self {
        let mut st = self.state.lock().expect("fake state");
        if let Some((attrs, index)) = st.away.remove(iface) {
            st.nics.insert(iface.to_string(), attrs);
            st.indexes.insert(iface.to_string(), index);
        }
        self
    }

    /// Settings of a NIC moved out ([`FakeCoalesce::move_nic_out`]).
    pub fn settings_away(&self, iface: &str) -> Option<CoalesceSettings> {
        let st = self.state.lock().expect("fake state");
        st.away.get(iface).map(|(a, _)| settings_of(a))
    }

    /// Give a NIC an alternative name (`ip link property add dev IFACE altname ALT`): name
    /// lookups and requests by it reach the NIC, whose own name stays what `SIOCGIFNAME` gives.
    pub fn add_altname(&self, iface: &str, alt: &str) -> &Self {
        let mut st = self.state.lock().expect("fake state");
        st.altnames.insert(alt.to_string(), iface.to_string());
        self
    }

    /// Rename a NIC (`ip link set FROM name TO`): the same device, its index and settings kept.
    pub fn rename_nic(&self, from: &str, to: &str) -> &Self {
        let mut st = self.state.lock().expect("fake state");
        if let (Some(attrs), Some(index)) = (st.nics.remove(from), st.indexes.remove(from)) {
            st.nics.insert(to.to_string(), attrs);
            st.indexes.insert(to.to_string(), index);
        }
        self
    }

    /// The interface index of a NIC.
    pub fn index_of(&self, iface: &str) -> Option<u32> {
        self.state
            .lock()
            .expect("fake state")
            .indexes
            .get(iface)
            .copied()
    }

    /// The cookie the fake gives for its namespace (`None`: a kernel without cookies).
    pub fn set_netns_cookie(&self, cookie: Option<u64>) -> &Self {
        self.state.lock().expect("fake state").netns_cookie = cookie;
        self
    }

    /// Make the next `reads` reads (a GET, a lookup of a name or an index) fail with a transient
    /// error (ENOBUFS), whatever the NIC.
    pub fn fail_reads(&self, reads: usize) -> &Self {
        self.state.lock().expect("fake state").failing_reads = reads;
        self
    }

    /// All parameters of a NIC.
    pub fn attrs(&self, iface: &str) -> Option<CoalesceAttrs> {
        self.state
            .lock()
            .expect("fake state")
            .nics
            .get(iface)
            .copied()
    }

    /// Make `set` on `iface` fail as virtio-net's does without the notification-coalescing
    /// feature (EOPNOTSUPP; its GET works).
    pub fn make_unsupported(&self, iface: &str) -> &Self {
        self.state
            .lock()
            .expect("fake state")
            .unsupported
            .push(iface.to_string());
        self
    }

    /// Make one `set` fail (as a driver that is being reset does) after `successes` more succeed.
    pub fn fail_one_set_after(&self, successes: usize) -> &Self {
        self.fail_sets_after(successes, 1)
    }

    /// Make `failures` `set`s in a row fail after `successes` more succeed.
    pub fn fail_sets_after(&self, successes: usize, failures: usize) -> &Self {
        let mut st = self.state.lock().expect("fake state");
        st.fail_after = Some(successes);
        st.failures = failures;
        self
    }

    /// Round stored rx-usecs down to a multiple of `usecs`, as some drivers do.
    pub fn set_granularity(&self, usecs: u32) -> &Self {
        self.state.lock().expect("fake state").granularity = usecs;
        self
    }

    /// Current settings of a NIC.
    pub fn settings(&self, iface: &str) -> Option<CoalesceSettings> {
        self.attrs(iface).as_ref().map(settings_of)
    }

    /// Change settings behind the agent's back (an administrator running ethtool).
    pub fn set_externally(&self, iface: &str, settings: CoalesceSettings) {
        let mut st = self.state.lock().expect("fake state");
        st.index(iface);
        let slot = st.nics.entry(iface.to_string()).or_default();
        slot.rx_usecs = Some(settings.rx_usecs);
        slot.use_adaptive_rx = Some(settings.adaptive_rx);
    }

    /// How many times a name no device had was asked with `ifindex` (`SIOCGIFINDEX`, which
    /// makes the kernel try to load a module for it): none, where KPO is careful.
    pub fn absent_names_asked(&self) -> usize {
        self.state.lock().expect("fake state").absent_names_asked
    }

    /// Every successful `set`, in order.
    pub fn history(&self) -> Vec<(String, CoalesceSettings)> {
        self.state.lock().expect("fake state").history.clone()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl CoalesceBackend for FakeCoalesce {
    fn get(&mut self, iface: &str) -> Result<CoalesceSettings, ActuateError> {
        self.settings(iface).ok_or_else(|| ActuateError::NotFound {
            knob: format!("rx-usecs:{iface}"),
            reason: "no such device".into(),
        })
    }

    fn set(&mut self, iface: &str, settings: CoalesceSettings) -> Result<(), ActuateError> {
        let change = CoalesceAttrs {
            rx_usecs: Some(settings.rx_usecs),
            use_adaptive_rx: Some(settings.adaptive_rx),
            ..CoalesceAttrs::default()
        };
        CoalesceAttrBackend::set_attrs(self, iface, &change)
    }
}

#[cfg(any(test, feature = "test-util"))]
impl CoalesceAttrBackend for FakeCoalesce {
    fn get_attrs(&mut self, iface: &str) -> Result<CoalesceAttrs, ActuateError> {
        let mut st = self.state.lock().expect("fake state");
        st.read_fails(&format!("ethtool netlink ETHTOOL_MSG_COALESCE_GET {iface}"))?;
        st.nics
            .get(&st.resolve(iface))
            .copied()
            .ok_or_else(|| ActuateError::NotFound {
                knob: format!("ethtool:{iface}"),
                reason: "no such device".into(),
            })
    }

    fn ifindex(&mut self, iface: &str) -> Result<Option<u32>, ActuateError> {
        let mut st = self.state.lock().expect("fake state");
        st.read_fails(&format!("SIOCGIFINDEX {iface}"))?;
        let index = st.indexes.get(&st.resolve(iface)).copied();
        st.absent_names_asked += usize::from(index.is_none());
        Ok(index)
    }

    fn ifname(&mut self, ifindex: u32) -> Result<Option<String>, ActuateError> {
        let mut st = self.state.lock().expect("fake state");
        st.read_fails(&format!("SIOCGIFNAME {ifindex}"))?;
        Ok(st
            .indexes
            .iter()
            .find(|(_, &i)| i == ifindex)
            .map(|(name, _)| name.clone()))
    }

    fn netns_cookie(&mut self) -> Option<u64> {
        self.state.lock().expect("fake state").netns_cookie
    }

    /// Like the kernel: a parameter the "driver" does not support is refused.
    fn set_attrs(&mut self, iface: &str, change: &CoalesceAttrs) -> Result<(), ActuateError> {
        let mut st = self.state.lock().expect("fake state");
        if st.unsupported.iter().any(|u| u == iface) {
            return Err(ActuateError::Unsupported {
                iface: iface.to_string(),
                detail: "Operation not supported".into(),
            });
        }
        match st.fail_after {
            Some(0) => {
                st.failures = st.failures.saturating_sub(1);
                if st.failures == 0 {
                    st.fail_after = None;
                }
                return Err(ActuateError::Io {
                    path: format!("ethtool netlink ETHTOOL_MSG_COALESCE_SET {iface}").into(),
                    source: std::io::Error::other("the device is being reset (ENODEV)"),
                });
            }
            Some(n) => st.fail_after = Some(n - 1),
            None => {}
        }
        let g = st.granularity;
        let round = |v: u32| v.checked_div(g).map_or(v, |q| q * g);
        let slot = st
            .nics
            .get_mut(iface)
            .ok_or_else(|| ActuateError::NotFound {
                knob: format!("ethtool:{iface}"),
                reason: "no such device".into(),
            })?;
        let mut next = *slot;
        macro_rules! field {
            ($f:ident, $conv:expr) => {
                if let Some(v) = change.$f {
                    if slot.$f.is_none() {
                        return Err(ActuateError::Unsupported {
                            iface: iface.to_string(),
                            detail: format!("EINVAL: unsupported parameter {}", stringify!($f)),
                        });
                    }
                    next.$f = Some($conv(v));
                }
            };
        }
        field!(rx_usecs, round);
        field!(rx_max_frames, |v| v);
        field!(tx_usecs, |v| v);
        field!(tx_max_frames, |v| v);
        field!(use_adaptive_rx, |v| v);
        field!(use_adaptive_tx, |v| v);
        *slot = next;
        let stored = settings_of(&next);
        st.history.push((iface.to_string(), stored));
        Ok(())
    }
}

/// Reads and writes every coalescing parameter KPO models ([`CoalesceAttrs`]): the backend of
/// [`CoalesceActuator`].
pub trait CoalesceAttrBackend: Send {
    fn get_attrs(&mut self, iface: &str) -> Result<CoalesceAttrs, ActuateError>;
    /// Send exactly the `Some` fields of `change`.
    fn set_attrs(&mut self, iface: &str, change: &CoalesceAttrs) -> Result<(), ActuateError>;
    /// The interface index of the device named `iface` in the backend's network namespace;
    /// `Ok(None)` when the kernel says no device has that name there. Only asked of a name a
    /// device is known to have: the ioctl behind it makes the kernel try to load a module
    /// (`netdev-NAME`) for a name that names nothing.
    fn ifindex(&mut self, iface: &str) -> Result<Option<u32>, ActuateError>;
    /// The name of the device with index `ifindex` there; `Ok(None)` when none has it.
    fn ifname(&mut self, ifindex: u32) -> Result<Option<String>, ActuateError>;
    /// The cookie of the backend's network namespace (`None`: a kernel without cookies).
    fn netns_cookie(&mut self) -> Option<u64>;
}

impl CoalesceAttrBackend for EthtoolCoalesce {
    fn get_attrs(&mut self, iface: &str) -> Result<CoalesceAttrs, ActuateError> {
        EthtoolCoalesce::get_attrs(self, iface)
    }
    fn set_attrs(&mut self, iface: &str, change: &CoalesceAttrs) -> Result<(), ActuateError> {
        EthtoolCoalesce::set_attrs(self, iface, change)
    }
    fn ifindex(&mut self, iface: &str) -> Result<Option<u32>, ActuateError> {
        EthtoolCoalesce::ifindex(self, iface)
    }
    fn ifname(&mut self, ifindex: u32) -> Result<Option<String>, ActuateError> {
        EthtoolCoalesce::ifname(self, ifindex)
    }
    fn netns_cookie(&mut self) -> Option<u64> {
        EthtoolCoalesce::netns_cookie(self)
    }
}

/// The device a NIC's name named when KPO changed one of its parameters: its interface index,
/// and the cookie of the network namespace it was in (the one the actuator acted in). Kept in
/// the journal, so that a name that names nothing later can be told apart: the device gone
/// (unplugged, its driver unloaded, a veth deleted with its namespace) or renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSeen {
    pub ifindex: u32,
    pub netns_cookie: u64,
}

/// What became of the device KPO changed ([`device_now`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceNow {
    /// Its name still names it (the same index, in the same namespace).
    Here,
    /// Gone from under its name, for certain, with why: in the namespace KPO changed it in, no
    /// device has its index and another device has its name. Whether the old one was deleted or
    /// moved elsewhere, KPO's state kept under the name must move on to the new device.
    Gone(String),
    /// Neither: why (renamed, no device with its name or its index here, which a device moved
    /// to another namespace looks like too, another namespace, the kernel could not be asked).
    Unsure(String),
}

/// Where the device KPO changed as `iface` (`seen`) is now, asked through `backend`. Its index
/// is asked first (`SIOCGIFNAME`), and its name only through the ethtool netlink socket, so that
/// a name that names nothing never makes the kernel try to load a module for it
/// (`SIOCGIFINDEX` would). Gone only for certain: the namespace is the one KPO changed it in
/// (same cookie), no device has its index and another device has its name. No device with
/// either is [`DeviceNow::Unsure`]: a device moved to another network namespace (`ip link set
/// DEV netns X`, a CNI handing a NIC to a pod) looks the same from here, and keeps its settings.
/// A renamed device, another namespace, a kernel without cookies and any error asking are
/// `Unsure` too: what needs it is tried again later.
pub fn device_now(
    backend: &mut dyn CoalesceAttrBackend,
    iface: &str,
    seen: &DeviceSeen,
) -> DeviceNow {
    let DeviceSeen {
        ifindex,
        netns_cookie: then,
    } = *seen;
    match backend.netns_cookie() {
        Some(now) if now == then => {}
        Some(now) => {
            return DeviceNow::Unsure(format!(
                "KPO changed {iface} in another network namespace (cookie {then}) than the one it \
                 acts in now (cookie {now})"
            ))
        }
        None => {
            return DeviceNow::Unsure(format!(
                "the cookie of the network namespace KPO acts in cannot be read, so whether \
                 {iface} (index {ifindex}) is the device KPO changed cannot be told"
            ))
        }
    }
    match backend.ifname(ifindex) {
        Ok(Some(name)) if name == iface => DeviceNow::Here,
        Ok(Some(renamed)) => match name_is_taken(backend, iface) {
            // `iface` may be an alternative name of the device (`ip link property add`): asked
            // by name only now that a device is known to have it, so no module is loaded.
            Ok(true) if backend.ifindex(iface).ok().flatten() == Some(ifindex) => DeviceNow::Here,
            Ok(_) => DeviceNow::Unsure(format!(
                "{iface} (index {ifindex}) is named {renamed} now: renamed, not gone, and not \
                 KPO's to change under another name"
            )),
            Err(e) => DeviceNow::Unsure(e),
        },
        Ok(None) => match name_is_taken(backend, iface) {
            Ok(true) => DeviceNow::Gone(format!(
                "the network device {iface} (index {ifindex}) is gone from under its name: no \
                 device has its index in the network namespace KPO changed it in, and {iface} \
                 names another device now"
            )),
            Ok(false) => DeviceNow::Unsure(format!(
                "no device has the name {iface} or the index {ifindex} in the network namespace \
                 KPO changed it in: deleted, or moved to another network namespace (which keeps \
                 its settings); KPO keeps what it knows of it and asks again"
            )),
            Err(e) => DeviceNow::Unsure(e),
        },
        Err(e) => DeviceNow::Unsure(e.to_string()),
    }
}

/// Whether a device has the name `iface` in the backend's namespace, asked with an ethtool
/// COALESCE_GET (which, unlike `SIOCGIFINDEX`, loads no module for a name that names nothing):
/// a device without coalescing operations answers EOPNOTSUPP, and has the name all the same.
fn name_is_taken(backend: &mut dyn CoalesceAttrBackend, iface: &str) -> Result<bool, String> {
    match backend.get_attrs(iface) {
        Ok(_) | Err(ActuateError::Unsupported { .. }) => Ok(true),
        Err(ActuateError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// The coalescing parameters [`CoalesceActuator`] changes, by their `ethtool -C` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoalesceParam {
    RxUsecs,
    RxFrames,
    TxUsecs,
    TxFrames,
    AdaptiveRx,
    AdaptiveTx,
}

impl CoalesceParam {
    pub const ALL: [CoalesceParam; 6] = [
        CoalesceParam::RxUsecs,
        CoalesceParam::RxFrames,
        CoalesceParam::TxUsecs,
        CoalesceParam::TxFrames,
        CoalesceParam::AdaptiveRx,
        CoalesceParam::AdaptiveTx,
    ];

    /// The name in `ethtool -C` and in `ethtool:IFACE:NAME`.
    pub fn name(self) -> &'static str {
        match self {
            CoalesceParam::RxUsecs => "rx-usecs",
            CoalesceParam::RxFrames => "rx-frames",
            CoalesceParam::TxUsecs => "tx-usecs",
            CoalesceParam::TxFrames => "tx-frames",
            CoalesceParam::AdaptiveRx => "adaptive-rx",
            CoalesceParam::AdaptiveTx => "adaptive-tx",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    fn is_adaptive(self) -> bool {
        matches!(self, CoalesceParam::AdaptiveRx | CoalesceParam::AdaptiveTx)
    }

    /// The adaptive mode that moves this parameter by itself, if any.
    pub fn governed_by(self) -> Option<CoalesceParam> {
        match self {
            CoalesceParam::RxUsecs | CoalesceParam::RxFrames => Some(CoalesceParam::AdaptiveRx),
            CoalesceParam::TxUsecs | CoalesceParam::TxFrames => Some(CoalesceParam::AdaptiveTx),
            _ => None,
        }
    }

    /// The parameter's value in `attrs` (`None`: the driver does not support it).
    pub(crate) fn get(self, a: &CoalesceAttrs) -> Option<Value> {
        let int = |v: Option<u32>| v.map(|v| Value::Int(v.into()));
        let word = |v: Option<bool>| v.map(|on| Value::Word(if on { "on" } else { "off" }.into()));
        match self {
            CoalesceParam::RxUsecs => int(a.rx_usecs),
            CoalesceParam::RxFrames => int(a.rx_max_frames),
            CoalesceParam::TxUsecs => int(a.tx_usecs),
            CoalesceParam::TxFrames => int(a.tx_max_frames),
            CoalesceParam::AdaptiveRx => word(a.use_adaptive_rx),
            CoalesceParam::AdaptiveTx => word(a.use_adaptive_tx),
        }
    }

    /// A change carrying this parameter at `v` (already checked by `parse`).
    pub(crate) fn put(self, change: &mut CoalesceAttrs, v: &Value) {
        match (self, v) {
            (CoalesceParam::RxUsecs, Value::Int(n)) => change.rx_usecs = Some(*n as u32),
            (CoalesceParam::RxFrames, Value::Int(n)) => change.rx_max_frames = Some(*n as u32),
            (CoalesceParam::TxUsecs, Value::Int(n)) => change.tx_usecs = Some(*n as u32),
            (CoalesceParam::TxFrames, Value::Int(n)) => change.tx_max_frames = Some(*n as u32),
            (CoalesceParam::AdaptiveRx, Value::Word(w)) => change.use_adaptive_rx = Some(w == "on"),
            (CoalesceParam::AdaptiveTx, Value::Word(w)) => change.use_adaptive_tx = Some(w == "on"),
            _ => unreachable!("values are checked before put"),
        }
    }
}

/// One coalescing parameter of one NIC, `ethtool:IFACE:ATTR`, on the [`Actuator`] trait.
pub struct CoalesceActuator {
    address: ParamAddress,
    iface: String,
    param: CoalesceParam,
    backend: Box<dyn CoalesceAttrBackend>,
    adaptive_off_allowed: bool,
    /// The adaptive mode this actuator turned off (restored by `revert`).
    turned_off: Option<CoalesceParam>,
}

impl std::fmt::Debug for CoalesceActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoalesceActuator")
            .field("address", &self.address.to_string())
            .field("adaptive_off_allowed", &self.adaptive_off_allowed)
            .finish()
    }
}

/// The NIC's own name when `iface`, which names a device, is one of its alternative names. A
/// lookup that fails says nothing (`None`): the kernel takes either name, so a change still
/// reaches the right NIC; what an alternative name breaks is bookkeeping
/// ([`ActuateError::AlternativeName`]).
pub fn own_name_if_alternative(
    backend: &mut dyn CoalesceAttrBackend,
    iface: &str,
) -> Option<String> {
    let index = backend.ifindex(iface).ok()??;
    let name = backend.ifname(index).ok()??;
    (name != iface).then_some(name)
}

impl CoalesceActuator {
    /// The actuator for `ethtool:IFACE:ATTR` over ethtool netlink in the agent's network
    /// namespace. The device and the parameter are checked now: a missing device is
    /// [`ActuateError::NotFound`], a driver without it [`ActuateError::Unsupported`].
    pub fn open(address: &ParamAddress, adaptive: AdaptiveMode) -> Result<Self, ActuateError> {
        Self::parse_address(address)?;
        Self::with_backend(address, Box::new(EthtoolCoalesce::open()?), adaptive)
    }

    /// The same over any backend (a fake in tests).
    pub fn with_backend(
        address: &ParamAddress,
        mut backend: Box<dyn CoalesceAttrBackend>,
        adaptive: AdaptiveMode,
    ) -> Result<Self, ActuateError> {
        let (iface, param) = Self::parse_address(address)?;
        let attrs = backend.get_attrs(&iface)?;
        if param.get(&attrs).is_none() {
            return Err(ActuateError::Unsupported {
                iface,
                detail: format!("the driver does not report {}", param.name()),
            });
        }
        Ok(Self {
            address: address.clone(),
            iface,
            param,
            backend,
            adaptive_off_allowed: adaptive == AdaptiveMode::TurnOff,
            turned_off: None,
        })
    }

    fn parse_address(address: &ParamAddress) -> Result<(String, CoalesceParam), ActuateError> {
        let Target::Nic { iface } = &address.target else {
            return Err(ActuateError::NotFound {
                knob: address.to_string(),
                reason: "not an ethtool:IFACE:ATTR address".into(),
            });
        };
        let param =
            CoalesceParam::from_name(&address.name).ok_or_else(|| ActuateError::UnknownParam {
                param: address.to_string(),
                known: format!(
                    "KPO changes the coalescing parameters {}",
                    CoalesceParam::ALL.map(CoalesceParam::name).join(", ")
                ),
            })?;
        Ok((iface.clone(), param))
    }

    fn check(&self, value: &Value) -> Result<(), ActuateError> {
        let param = self.address.to_string();
        match (self.param.is_adaptive(), value) {
            (true, Value::Word(w)) if w == "on" || w == "off" => Ok(()),
            (true, _) => Err(ActuateError::Shape {
                param,
                given: value.to_string(),
                current: String::new(),
                want: "on or off".into(),
            }),
            (false, Value::Int(n)) if (0..=i128::from(u32::MAX)).contains(n) => Ok(()),
            (false, Value::Int(n)) => Err(ActuateError::OutOfRange {
                param,
                value: *n,
                min: 0,
                max: u32::MAX.into(),
                why: "coalescing parameters are unsigned 32-bit counts".into(),
            }),
            (false, _) => Err(ActuateError::Shape {
                param,
                given: value.to_string(),
                current: String::new(),
                want: "one integer".into(),
            }),
        }
    }

    /// The refusal of a change of this parameter while `adaptive`, which governs it, is on.
    fn adaptive_on(&self, adaptive: CoalesceParam) -> ActuateError {
        ActuateError::AdaptiveOn {
            iface: self.iface.clone(),
            adaptive: adaptive.name(),
            param: self.param.name(),
        }
    }

    /// Write `value`; turn the governing adaptive mode off in the same request if `may_turn_off`.
    fn write(&mut self, value: &Value, may_turn_off: bool) -> Result<Value, ActuateError> {
        let cur = self.backend.get_attrs(&self.iface)?;
        let mut change = CoalesceAttrs::default();
        let mut turning_off = None;
        if let Some(adaptive) = self.param.governed_by() {
            if adaptive.get(&cur) == Some(Value::Word("on".into())) {
                if !may_turn_off {
                    return Err(self.adaptive_on(adaptive));
                }
                adaptive.put(&mut change, &Value::Word("off".into()));
                turning_off = Some(adaptive);
            }
        }
        if self.param.get(&cur).as_ref() != Some(value) {
            self.param.put(&mut change, value);
        }
        self.backend.set_attrs(&self.iface, &change)?;
        if turning_off.is_some() {
            self.turned_off = turning_off;
        }
        let back = self.backend.get_attrs(&self.iface)?;
        let read = self.param.get(&back);
        if read.as_ref() != Some(value) {
            return Err(ActuateError::Mismatch {
                param: self.address.to_string(),
                wrote: value.to_string(),
                read: read.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into()),
                why: super::NOT_TAKEN.into(),
            });
        }
        Ok(value.clone())
    }
}

impl Actuator for CoalesceActuator {
    fn address(&self) -> &ParamAddress {
        &self.address
    }

    fn read(&mut self) -> Result<Value, ActuateError> {
        let attrs = self.backend.get_attrs(&self.iface)?;
        self.param
            .get(&attrs)
            .ok_or_else(|| ActuateError::Unsupported {
                iface: self.iface.clone(),
                detail: format!("the driver does not report {}", self.param.name()),
            })
    }

    fn validate(&mut self, value: &Value) -> Result<(), ActuateError> {
        self.check(value)?;
        let cur = self.backend.get_attrs(&self.iface)?;
        // New changes only: a revert of a change an earlier version made under such a name
        // still puts its value back.
        if let Some(name) = own_name_if_alternative(self.backend.as_mut(), &self.iface) {
            return Err(ActuateError::AlternativeName {
                iface: self.iface.clone(),
                address: format!("ethtool:{name}:{}", self.param.name()),
                name,
            });
        }
        if let Some(adaptive) = self.param.governed_by() {
            if adaptive.get(&cur) == Some(Value::Word("on".into())) && !self.adaptive_off_allowed {
                return Err(self.adaptive_on(adaptive));
            }
        }
        Ok(())
    }

    fn apply(&mut self, value: &Value) -> Result<Value, ActuateError> {
        self.check(value)?;
        self.write(value, self.adaptive_off_allowed)
    }

    /// Puts the value back; if this actuator turned adaptive mode off, turns it back on. It
    /// never overrides adaptive mode that someone else turned on since: that is refused.
    fn revert(&mut self, original: &Value) -> Result<Value, ActuateError> {
        self.check(original)?;
        let back = self.write(original, false)?;
        if let Some(adaptive) = self.turned_off {
            let mut change = CoalesceAttrs::default();
            adaptive.put(&mut change, &Value::Word("on".into()));
            self.backend.set_attrs(&self.iface, &change)?;
            // Forgotten only once it is on again: a revert retried after a failed SET finds the
            // value already back and must still turn adaptive mode on.
            self.turned_off = None;
        }
        Ok(back)
    }

    fn set_adaptive_off_allowed(&mut self, allowed: bool) {
        self.adaptive_off_allowed = allowed;
    }

    fn device_seen(&mut self) -> Option<DeviceSeen> {
        // Asked by name: the device was just read under it (no module to load for it).
        let ifindex = self.backend.ifindex(&self.iface).ok()??;
        let netns_cookie = self.backend.netns_cookie()?;
        Some(DeviceSeen {
            ifindex,
            netns_cookie,
        })
    }

    fn switch_in_the_way(&mut self) -> Result<Option<(ParamAddress, Value)>, ActuateError> {
        let Some(adaptive) = self.param.governed_by() else {
            return Ok(None);
        };
        let cur = self.backend.get_attrs(&self.iface)?;
        if adaptive.get(&cur) != Some(Value::Word("on".into())) {
            return Ok(None);
        }
        let address = ParamAddress {
            name: adaptive.name().to_string(),
            target: self.address.target.clone(),
        };
        Ok(Some((address, Value::Word("off".into()))))
    }
}

/// Whether the switch at `switch` (`ethtool:IF:adaptive-rx`) moves the value at `value`
/// (`ethtool:IF:rx-usecs`, the same NIC).
pub fn switch_governs(switch: &ParamAddress, value: &ParamAddress) -> bool {
    switch.target == value.target
        && CoalesceParam::from_name(&value.name)
            .and_then(CoalesceParam::governed_by)
            .is_some_and(|s| s.name() == switch.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(fake: &FakeCoalesce, adaptive_rx: bool) {
        fake.add_nic_attrs(
            "eth0",
            CoalesceAttrs {
                rx_usecs: Some(50),
                rx_max_frames: Some(32),
                tx_usecs: Some(64),
                tx_max_frames: None,
                use_adaptive_rx: Some(adaptive_rx),
                use_adaptive_tx: Some(false),
            },
        );
    }

    fn actuator(
        fake: &FakeCoalesce,
        attr: &str,
        mode: AdaptiveMode,
    ) -> Result<CoalesceActuator, ActuateError> {
        CoalesceActuator::with_backend(
            &format!("ethtool:eth0:{attr}").parse().unwrap(),
            Box::new(fake.clone()),
            mode,
        )
    }

    #[test]
    fn actuator_changes_each_parameter_and_verifies() {
        let fake = FakeCoalesce::new();
        nic(&fake, false);
        let mut tx = actuator(&fake, "tx-usecs", AdaptiveMode::Respect).unwrap();
        assert_eq!(tx.read().unwrap(), Value::Int(64));
        assert_eq!(tx.apply(&Value::Int(16)).unwrap(), Value::Int(16));
        assert_eq!(fake.attrs("eth0").unwrap().tx_usecs, Some(16));
        let mut frames = actuator(&fake, "rx-frames", AdaptiveMode::Respect).unwrap();
        frames.apply(&Value::Int(8)).unwrap();
        assert_eq!(fake.attrs("eth0").unwrap().rx_max_frames, Some(8));
        let mut ad = actuator(&fake, "adaptive-tx", AdaptiveMode::Respect).unwrap();
        assert_eq!(ad.read().unwrap(), Value::Word("off".into()));
        assert!(matches!(
            ad.validate(&Value::Int(1)),
            Err(ActuateError::Shape { .. })
        ));
        assert!(matches!(
            tx.validate(&Value::Int(-1)),
            Err(ActuateError::OutOfRange { .. })
        ));
        assert!(matches!(
            tx.validate(&Value::Word("fast".into())),
            Err(ActuateError::Shape { .. })
        ));
        fake.set_granularity(4);
        let mut rx = actuator(&fake, "rx-usecs", AdaptiveMode::Respect).unwrap();
        assert!(matches!(
            rx.apply(&Value::Int(10)),
            Err(ActuateError::Mismatch { .. })
        ));
        // Not offered by the driver, not known at all, no such NIC.
        assert!(matches!(
            actuator(&fake, "tx-frames", AdaptiveMode::Respect),
            Err(ActuateError::Unsupported { .. })
        ));
        assert!(matches!(
            actuator(&fake, "rx-usecs-irq", AdaptiveMode::Respect),
            Err(ActuateError::UnknownParam { .. })
        ));
        assert!(matches!(
            CoalesceActuator::with_backend(
                &"ethtool:nope0:rx-usecs".parse().unwrap(),
                Box::new(fake.clone()),
                AdaptiveMode::Respect
            ),
            Err(ActuateError::NotFound { .. })
        ));
    }

    /// The refusal names the adaptive mode and the parameter at stake: adaptive-tx and tx-usecs,
    /// not adaptive-rx and rx-usecs.
    #[test]
    fn adaptive_on_names_the_mode_and_the_parameter() {
        let fake = FakeCoalesce::new();
        nic(&fake, false);
        let mut attrs = fake.attrs("eth0").unwrap();
        attrs.use_adaptive_tx = Some(true);
        fake.add_nic_attrs("eth0", attrs);
        let mut tx = actuator(&fake, "tx-usecs", AdaptiveMode::Respect).unwrap();
        for err in [
            tx.validate(&Value::Int(16)).unwrap_err(),
            tx.apply(&Value::Int(16)).unwrap_err(),
        ] {
            assert!(
                matches!(
                    err,
                    ActuateError::AdaptiveOn {
                        adaptive: "adaptive-tx",
                        param: "tx-usecs",
                        ..
                    }
                ),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("adaptive-tx is on") && text.contains("moves tx-usecs"),
                "{text}"
            );
            assert!(!text.contains("rx"), "{text}");
        }
        assert_eq!(fake.attrs("eth0").unwrap().tx_usecs, Some(64), "untouched");
    }

    /// Defect: a NIC addressed by an alternative name (`ip link property add dev eth0 altname
    /// uplink0`) was a NIC of its own to KPO: a policy bound on `ethtool:eth0:*` did not hold it,
    /// and changes under both names split its journal (each taking the other's for a person's).
    #[test]
    fn a_new_change_under_an_alternative_name_is_refused_naming_the_nic() {
        let fake = FakeCoalesce::new();
        nic(&fake, false);
        fake.add_altname("eth0", "uplink0");
        let mut alt = CoalesceActuator::with_backend(
            &"ethtool:uplink0:rx-usecs".parse().unwrap(),
            Box::new(fake.clone()),
            AdaptiveMode::Respect,
        )
        .unwrap();
        assert_eq!(alt.read().unwrap(), Value::Int(50), "the same NIC");
        let err = alt.validate(&Value::Int(20)).unwrap_err();
        assert!(matches!(err, ActuateError::AlternativeName { .. }), "{err}");
        assert!(
            err.to_string().contains("use ethtool:eth0:rx-usecs"),
            "{err}"
        );
        assert!(fake.history().is_empty());
        // Under its own name, nothing to say; a lookup that fails does not stop a change.
        let mut own = actuator(&fake, "rx-usecs", AdaptiveMode::Respect).unwrap();
        own.validate(&Value::Int(20)).unwrap();
        fake.fail_reads(0);
        assert_eq!(own_name_if_alternative(&mut fake.clone(), "eth0"), None);
        fake.fail_reads(1);
        assert_eq!(own_name_if_alternative(&mut fake.clone(), "uplink0"), None);
        assert_eq!(
            own_name_if_alternative(&mut fake.clone(), "uplink0").as_deref(),
            Some("eth0")
        );
    }

    #[test]
    fn actuator_never_fights_adaptive_moderation() {
        let fake = FakeCoalesce::new();
        nic(&fake, true);
        // Not allowed: refused, NIC untouched.
        let mut rx = actuator(&fake, "rx-usecs", AdaptiveMode::Respect).unwrap();
        assert_eq!(rx.read().unwrap(), Value::Int(50), "reading is fine");
        let err = rx.validate(&Value::Int(20)).unwrap_err();
        assert!(matches!(err, ActuateError::AdaptiveOn { .. }), "{err}");
        assert!(matches!(
            rx.apply(&Value::Int(20)),
            Err(ActuateError::AdaptiveOn { .. })
        ));
        assert_eq!(fake.attrs("eth0").unwrap().rx_usecs, Some(50));
        assert!(fake.history().is_empty());
        // tx-usecs is not governed by adaptive-rx.
        actuator(&fake, "tx-usecs", AdaptiveMode::Respect)
            .unwrap()
            .apply(&Value::Int(32))
            .unwrap();

        // Allowed (the policy's flag): one set turns adaptive-rx off and sets rx-usecs.
        rx.set_adaptive_off_allowed(true);
        rx.validate(&Value::Int(20)).unwrap();
        let before = fake.history().len();
        assert_eq!(rx.apply(&Value::Int(20)).unwrap(), Value::Int(20));
        assert_eq!(fake.history().len(), before + 1, "one request");
        let a = fake.attrs("eth0").unwrap();
        assert_eq!((a.rx_usecs, a.use_adaptive_rx), (Some(20), Some(false)));
        // Revert puts the value back and hands the NIC back to adaptive moderation.
        assert_eq!(rx.revert(&Value::Int(50)).unwrap(), Value::Int(50));
        let a = fake.attrs("eth0").unwrap();
        assert_eq!((a.rx_usecs, a.use_adaptive_rx), (Some(50), Some(true)));

        // Someone turns adaptive-rx back on after our change: we yield, even on revert.
        let mut rx = actuator(&fake, "rx-usecs", AdaptiveMode::TurnOff).unwrap();
        rx.apply(&Value::Int(30)).unwrap();
        fake.set_externally(
            "eth0",
            CoalesceSettings {
                rx_usecs: 30,
                adaptive_rx: true,
            },
        );
        rx.set_adaptive_off_allowed(false);
        assert!(matches!(
            rx.apply(&Value::Int(40)),
            Err(ActuateError::AdaptiveOn { .. })
        ));
        assert!(matches!(
            rx.revert(&Value::Int(50)),
            Err(ActuateError::AdaptiveOn { .. })
        ));
        assert_eq!(fake.attrs("eth0").unwrap().rx_usecs, Some(30));
    }

    /// The device KPO changed, told apart from a name that names nothing (or another device) now:
    /// gone only when, in the namespace KPO changed it in, no device has its index and another
    /// device has its name. No device with either is not known (deleted, or moved to another
    /// namespace with its settings), and one moved back is here again.
    #[test]
    fn a_device_is_gone_only_for_certain() {
        let fake = FakeCoalesce::new();
        nic(&fake, false);
        let seen = actuator(&fake, "adaptive-rx", AdaptiveMode::Respect)
            .unwrap()
            .device_seen()
            .unwrap();
        assert_eq!(
            seen,
            DeviceSeen {
                ifindex: fake.index_of("eth0").unwrap(),
                netns_cookie: FakeCoalesce::NETNS_COOKIE,
            }
        );
        let now = |fake: &FakeCoalesce| device_now(&mut fake.clone(), "eth0", &seen);
        assert_eq!(now(&fake), DeviceNow::Here);
        let unsure = |fake: &FakeCoalesce, says: &str| match now(fake) {
            DeviceNow::Unsure(why) => assert!(why.contains(says), "{why}"),
            other => panic!("{other:?}"),
        };
        // Renamed: its index has another name.
        fake.rename_nic("eth0", "lan0");
        unsure(&fake, "is named lan0 now: renamed, not gone");
        // ... and another device took its name.
        nic(&fake, false);
        unsure(&fake, "is named lan0 now");
        fake.remove_nic("eth0");
        fake.rename_nic("lan0", "eth0");
        assert_eq!(now(&fake), DeviceNow::Here);
        // Moved to another namespace: neither its name nor its index here, not known; back
        // with its index, here again.
        fake.move_nic_out("eth0");
        unsure(
            &fake,
            "moved to another network namespace (which keeps its settings)",
        );
        fake.move_nic_back("eth0");
        assert_eq!(now(&fake), DeviceNow::Here);
        // Removed: just the same from here.
        fake.remove_nic("eth0");
        unsure(&fake, "no device has the name eth0 or the index");
        // Another namespace, or none known, or the kernel cannot be asked: not known.
        fake.set_netns_cookie(Some(FakeCoalesce::NETNS_COOKIE + 1));
        unsure(&fake, "in another network namespace (cookie 1)");
        fake.set_netns_cookie(None);
        unsure(&fake, "cannot be read");
        fake.set_netns_cookie(Some(FakeCoalesce::NETNS_COOKIE));
        fake.fail_reads(1);
        unsure(&fake, "No buffer space available");
        // Gone: its index on no device, its name on a new one; one without coalescing
        // operations (EOPNOTSUPP) has the name all the same.
        nic(&fake, true);
        assert_ne!(fake.index_of("eth0"), Some(seen.ifindex));
        match now(&fake) {
            DeviceNow::Gone(why) => assert!(
                why.contains(&format!(
                    "eth0 (index {}) is gone from under its name",
                    seen.ifindex
                )) && why.contains("eth0 names another device now"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // Asking the name fails: not known.
        let mut failing = FailingGet(fake.clone());
        assert!(matches!(
            device_now(&mut failing, "eth0", &seen),
            DeviceNow::Unsure(why) if why.contains("No buffer space available")
        ));
        // No name that named nothing was asked with SIOCGIFINDEX (a module load each).
        assert_eq!(fake.absent_names_asked(), 0);
    }

    /// A backend whose every GET fails as a transient error: asking whether a name names a
    /// device cannot be answered.
    struct FailingGet(FakeCoalesce);

    impl CoalesceAttrBackend for FailingGet {
        fn get_attrs(&mut self, iface: &str) -> Result<CoalesceAttrs, ActuateError> {
            Err(ActuateError::Io {
                path: format!("ETHTOOL_MSG_COALESCE_GET {iface}").into(),
                source: std::io::Error::from_raw_os_error(libc::ENOBUFS),
            })
        }
        fn set_attrs(&mut self, iface: &str, change: &CoalesceAttrs) -> Result<(), ActuateError> {
            self.0.set_attrs(iface, change)
        }
        fn ifindex(&mut self, iface: &str) -> Result<Option<u32>, ActuateError> {
            self.0.ifindex(iface)
        }
        fn ifname(&mut self, ifindex: u32) -> Result<Option<String>, ActuateError> {
            self.0.ifname(ifindex)
        }
        fn netns_cookie(&mut self) -> Option<u64> {
            self.0.netns_cookie()
        }
    }

    /// A revert whose SET turning adaptive mode back on fails is retried: the second revert finds
    /// the value back already, and still turns adaptive mode on.
    #[test]
    fn a_revert_retried_after_a_failed_set_turns_adaptive_mode_on() {
        let fake = FakeCoalesce::new();
        nic(&fake, true);
        let mut rx = actuator(&fake, "rx-usecs", AdaptiveMode::TurnOff).unwrap();
        rx.apply(&Value::Int(20)).unwrap();
        assert_eq!(fake.attrs("eth0").unwrap().use_adaptive_rx, Some(false));
        // The revert's first SET (the value) succeeds, its second (adaptive-rx on) fails.
        fake.fail_one_set_after(1);
        assert!(rx.revert(&Value::Int(50)).is_err());
        let a = fake.attrs("eth0").unwrap();
        assert_eq!((a.rx_usecs, a.use_adaptive_rx), (Some(50), Some(false)));
        assert_eq!(rx.revert(&Value::Int(50)).unwrap(), Value::Int(50));
        let a = fake.attrs("eth0").unwrap();
        assert_eq!((a.rx_usecs, a.use_adaptive_rx), (Some(50), Some(true)));
    }
}
