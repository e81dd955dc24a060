//! NIC interrupt coalescing (`ethtool -C <iface> rx-usecs N`), behind a backend trait.
//!
//! The kernel's adaptive moderation (net_dim, `adaptive-rx on`) moves rx-usecs by itself. An agent
//! that owns coalescing must turn adaptive mode off for that NIC or leave the NIC alone; it must
//! never fight it. [`RxUsecsKnob::take`] therefore refuses a NIC whose adaptive-rx is on unless the
//! caller passes [`AdaptiveMode::TurnOff`], in which case it turns adaptive mode off (and
//! [`RxUsecsKnob::release`] restores the original settings). If adaptive-rx is found on again
//! later, someone else changed it: reads and writes fail with [`ActuateError::AdaptiveOn`] and the
//! agent yields.
//!
//! Backends: [`EthtoolCoalesce`] (the kernel's ethtool generic netlink interface,
//! `ETHTOOL_MSG_COALESCE_GET/SET`, in [`ethtool`]; its messages are in [`ethtool_msg`]) and
//! [`FakeCoalesce`] (in memory, for tests and dry runs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{ActuateError, Knob};

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
    /// Turn adaptive-rx off and own rx-usecs (restored on release).
    TurnOff,
}

/// rx-usecs of one NIC as a knob (values in microseconds, integers).
#[derive(Debug)]
pub struct RxUsecsKnob<B: CoalesceBackend> {
    name: String,
    iface: String,
    backend: B,
    original: CoalesceSettings,
    max_usecs: u32,
    released: bool,
}

impl<B: CoalesceBackend> RxUsecsKnob<B> {
    /// Take ownership of `iface`'s rx-usecs (values `0..=max_usecs`).
    pub fn take(
        mut backend: B,
        iface: &str,
        adaptive: AdaptiveMode,
        max_usecs: u32,
    ) -> Result<Self, ActuateError> {
        let original = backend.get(iface)?;
        if original.adaptive_rx {
            match adaptive {
                AdaptiveMode::Respect => {
                    return Err(ActuateError::AdaptiveOn {
                        iface: iface.to_string(),
                    })
                }
                AdaptiveMode::TurnOff => {
                    let off = CoalesceSettings {
                        adaptive_rx: false,
                        ..original
                    };
                    backend.set(iface, off)?;
                    let back = backend.get(iface)?;
                    if back.adaptive_rx {
                        return Err(ActuateError::Verify {
                            knob: format!("adaptive-rx:{iface}"),
                            wrote: 0.0,
                            read: 1.0,
                        });
                    }
                }
            }
        }
        Ok(Self {
            name: format!("rx-usecs:{iface}"),
            iface: iface.to_string(),
            backend,
            original,
            max_usecs,
            released: false,
        })
    }

    /// Settings found when the knob was taken.
    pub fn original(&self) -> CoalesceSettings {
        self.original
    }

    /// Give the NIC back: restore the original settings (adaptive mode included).
    pub fn release(&mut self) -> Result<CoalesceSettings, ActuateError> {
        if !self.released {
            self.backend.set(&self.iface, self.original)?;
            self.released = true;
        }
        Ok(self.original)
    }

    fn current(&mut self) -> Result<CoalesceSettings, ActuateError> {
        if self.released {
            return Err(ActuateError::Released {
                knob: self.name.clone(),
            });
        }
        let s = self.backend.get(&self.iface)?;
        if s.adaptive_rx {
            return Err(ActuateError::AdaptiveOn {
                iface: self.iface.clone(),
            });
        }
        Ok(s)
    }
}

impl<B: CoalesceBackend> Knob for RxUsecsKnob<B> {
    fn name(&self) -> &str {
        &self.name
    }

    fn bounds(&self) -> Option<(f64, f64)> {
        Some((0.0, self.max_usecs as f64))
    }

    fn read(&mut self) -> Result<f64, ActuateError> {
        Ok(self.current()?.rx_usecs as f64)
    }

    fn apply(&mut self, value: f64) -> Result<f64, ActuateError> {
        if !(0.0..=self.max_usecs as f64).contains(&value) {
            return Err(ActuateError::OutOfBounds {
                knob: self.name.clone(),
                value,
                min: 0.0,
                max: self.max_usecs as f64,
            });
        }
        if value.fract() != 0.0 {
            return Err(ActuateError::InvalidValue {
                knob: self.name.clone(),
                value,
                reason: "rx-usecs is a whole number of microseconds".into(),
            });
        }
        let cur = self.current()?;
        let want = CoalesceSettings {
            rx_usecs: value as u32,
            ..cur
        };
        self.backend.set(&self.iface, want)?;
        let back = self.current()?;
        if back.rx_usecs != want.rx_usecs {
            return Err(ActuateError::Verify {
                knob: self.name.clone(),
                wrote: value,
                read: back.rx_usecs as f64,
            });
        }
        Ok(value)
    }
}

#[derive(Debug, Default)]
struct FakeState {
    nics: BTreeMap<String, CoalesceSettings>,
    unsupported: Vec<String>,
    /// Driver granularity: stored rx-usecs are rounded down to a multiple of this (0 = exact).
    granularity: u32,
    history: Vec<(String, CoalesceSettings)>,
}

/// In-memory coalescing backend. Clones share state, so a test can keep a handle to inspect the
/// NIC while a knob owns another.
#[derive(Debug, Clone, Default)]
pub struct FakeCoalesce {
    state: Arc<Mutex<FakeState>>,
}

impl FakeCoalesce {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or reset) a NIC with the given settings.
    pub fn add_nic(&self, iface: &str, settings: CoalesceSettings) -> &Self {
        self.state
            .lock()
            .expect("fake state")
            .nics
            .insert(iface.to_string(), settings);
        self
    }

    /// Make `set` on `iface` fail as virtio-net and veth do (EOPNOTSUPP).
    pub fn make_unsupported(&self, iface: &str) -> &Self {
        self.state
            .lock()
            .expect("fake state")
            .unsupported
            .push(iface.to_string());
        self
    }

    /// Round stored rx-usecs down to a multiple of `usecs`, as some drivers do.
    pub fn set_granularity(&self, usecs: u32) -> &Self {
        self.state.lock().expect("fake state").granularity = usecs;
        self
    }

    /// Current settings of a NIC.
    pub fn settings(&self, iface: &str) -> Option<CoalesceSettings> {
        self.state
            .lock()
            .expect("fake state")
            .nics
            .get(iface)
            .copied()
    }

    /// Change settings behind the agent's back (an administrator running ethtool).
    pub fn set_externally(&self, iface: &str, settings: CoalesceSettings) {
        self.state
            .lock()
            .expect("fake state")
            .nics
            .insert(iface.to_string(), settings);
    }

    /// Every successful `set`, in order.
    pub fn history(&self) -> Vec<(String, CoalesceSettings)> {
        self.state.lock().expect("fake state").history.clone()
    }
}

impl CoalesceBackend for FakeCoalesce {
    fn get(&mut self, iface: &str) -> Result<CoalesceSettings, ActuateError> {
        self.settings(iface).ok_or_else(|| ActuateError::NotFound {
            knob: format!("rx-usecs:{iface}"),
            reason: "no such device".into(),
        })
    }

    fn set(&mut self, iface: &str, settings: CoalesceSettings) -> Result<(), ActuateError> {
        let mut st = self.state.lock().expect("fake state");
        if st.unsupported.iter().any(|u| u == iface) {
            return Err(ActuateError::Unsupported {
                iface: iface.to_string(),
                detail: "Operation not supported".into(),
            });
        }
        let g = st.granularity;
        let stored = CoalesceSettings {
            rx_usecs: settings
                .rx_usecs
                .checked_div(g)
                .map_or(settings.rx_usecs, |q| q * g),
            ..settings
        };
        let slot = st
            .nics
            .get_mut(iface)
            .ok_or_else(|| ActuateError::NotFound {
                knob: format!("rx-usecs:{iface}"),
                reason: "no such device".into(),
            })?;
        *slot = stored;
        st.history.push((iface.to_string(), stored));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADAPTIVE: CoalesceSettings = CoalesceSettings {
        rx_usecs: 50,
        adaptive_rx: true,
    };
    const STATIC: CoalesceSettings = CoalesceSettings {
        rx_usecs: 8,
        adaptive_rx: false,
    };

    #[test]
    fn refuses_a_nic_with_adaptive_rx_unless_told_to_turn_it_off() {
        let fake = FakeCoalesce::new();
        fake.add_nic("eth0", ADAPTIVE);
        let err = RxUsecsKnob::take(fake.clone(), "eth0", AdaptiveMode::Respect, 1000).unwrap_err();
        assert!(matches!(err, ActuateError::AdaptiveOn { .. }));
        assert!(err.to_string().contains("leaves this NIC alone"));
        assert_eq!(
            fake.settings("eth0"),
            Some(ADAPTIVE),
            "refusal must not touch the NIC"
        );
        assert!(fake.history().is_empty());

        let mut k = RxUsecsKnob::take(fake.clone(), "eth0", AdaptiveMode::TurnOff, 1000).unwrap();
        assert_eq!(
            fake.settings("eth0"),
            Some(CoalesceSettings {
                rx_usecs: 50,
                adaptive_rx: false
            })
        );
        assert_eq!(k.read().unwrap(), 50.0);
        assert_eq!(k.apply(20.0).unwrap(), 20.0);
        assert_eq!(fake.settings("eth0").unwrap().rx_usecs, 20);
        // Release restores the original adaptive mode.
        assert_eq!(k.release().unwrap(), ADAPTIVE);
        assert_eq!(fake.settings("eth0"), Some(ADAPTIVE));
        assert!(matches!(k.read(), Err(ActuateError::Released { .. })));
    }

    #[test]
    fn yields_when_adaptive_mode_comes_back() {
        let fake = FakeCoalesce::new();
        fake.add_nic("eth1", STATIC);
        let mut k = RxUsecsKnob::take(fake.clone(), "eth1", AdaptiveMode::Respect, 1000).unwrap();
        k.apply(16.0).unwrap();
        fake.set_externally(
            "eth1",
            CoalesceSettings {
                rx_usecs: 16,
                adaptive_rx: true,
            },
        );
        assert!(matches!(
            k.apply(24.0),
            Err(ActuateError::AdaptiveOn { .. })
        ));
        assert_eq!(
            fake.settings("eth1").unwrap().rx_usecs,
            16,
            "never fights net_dim"
        );
    }

    #[test]
    fn checks_values_and_verifies_the_driver_kept_them() {
        let fake = FakeCoalesce::new();
        fake.add_nic("eth2", STATIC);
        let mut k = RxUsecsKnob::take(fake.clone(), "eth2", AdaptiveMode::Respect, 100).unwrap();
        assert_eq!(k.name(), "rx-usecs:eth2");
        assert_eq!(k.bounds(), Some((0.0, 100.0)));
        assert!(matches!(
            k.apply(101.0),
            Err(ActuateError::OutOfBounds { .. })
        ));
        assert!(matches!(
            k.apply(-1.0),
            Err(ActuateError::OutOfBounds { .. })
        ));
        assert!(matches!(
            k.apply(2.5),
            Err(ActuateError::InvalidValue { .. })
        ));
        fake.set_granularity(4);
        let err = k.apply(10.0).unwrap_err();
        assert!(
            matches!(err, ActuateError::Verify { wrote, read, .. } if wrote == 10.0 && read == 8.0)
        );
        assert_eq!(k.apply(12.0).unwrap(), 12.0);
    }

    #[test]
    fn unsupported_and_missing_devices() {
        let fake = FakeCoalesce::new();
        fake.add_nic("veth0", STATIC).make_unsupported("veth0");
        let mut k = RxUsecsKnob::take(fake.clone(), "veth0", AdaptiveMode::Respect, 100).unwrap();
        let err = k.apply(20.0).unwrap_err();
        assert!(err.to_string().contains("does not support"), "{err}");
        assert!(matches!(
            RxUsecsKnob::take(fake, "nope0", AdaptiveMode::Respect, 100),
            Err(ActuateError::NotFound { .. })
        ));
    }
}
