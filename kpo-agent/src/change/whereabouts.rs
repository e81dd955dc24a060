//! Where a changed parameter is now: its NIC or network namespace (one gone for certain is
//! settled in the journal), its value as read there, and what else holds it (the kernel's
//! adaptive moderation, a driver under KPO's governor, a person's other cpufreq limit), which
//! decides whether a revert or `on_exit` may write it.
use super::*;

impl ChangePath {
    /// Before a revert writes `value` to a NIC's parameter `address` by its name: where the
    /// device change `of` was made on is now, if the journal recorded it. `None`: written as
    /// before (not a NIC's, no device recorded, or the same device is there). Otherwise nothing
    /// is written, and the report is `failed`, with why: not `skipped`, which the optimizer's
    /// live loop takes for a revert whose value is in place, and nothing was put back. A device
    /// gone for certain from under its name (its index on no device, its name on another, which
    /// KPO never changed) is settled in the journal, once (a `gone` record, as reconciliation
    /// settles it), so that no later revert, guard or `on_exit` tries again. One not known to
    /// be there (renamed, neither its name nor its index here, which a device moved to another
    /// namespace with its settings looks like too, another namespace, a lookup that failed) is
    /// left as it is, for the next revert to try.
    pub(super) fn not_on_its_device(
        &mut self,
        address: &ParamAddress,
        value: &Value,
        of: &Intent,
    ) -> Result<Option<ChangeReport>, ChangeError> {
        let Some(seen) = of.device else {
            return Ok(None);
        };
        let mut report = ChangeReport::new(address, value, ChangeStatus::Failed);
        match self.device_now(address, &seen) {
            DeviceNow::Here => return Ok(None),
            DeviceNow::Gone(gone) => {
                let why = format!(
                    "{gone}: KPO's value is the old device's (deleted, or moved elsewhere with \
                     its settings), not the new one's: nothing put back"
                );
                // Only what the journal holds of that device: not a newer device's changes
                // under the name, nor a second `gone` for a device settled already.
                if self.journal_holds_device(&of.key, &seen) {
                    tracing::info!("{address}: {why}; what KPO knew of it there is forgotten");
                    self.journal.forget_gone_device(&of.key, &why)?;
                }
                report.detail = Some(why);
            }
            DeviceNow::Unsure(why) => {
                report.detail = Some(format!("not put back: {why}"));
            }
        }
        Ok(Some(report))
    }

    /// Settles, after `key`'s own `gone` record, every other parameter of the same NIC name whose
    /// latest change was made on the device `seen`, gone from under its name (`why`): a device
    /// gone is gone for all its parameters, and a yield, a quarantine or a held switch left on
    /// the old device must not bind the new one under the name (a yielded key is never looked
    /// up again by the value check, nor put back, so nothing else would settle it). Each once:
    /// a parameter settled already, or changed on another device since, is left as it is.
    fn forget_the_devices_other_parameters(
        &mut self,
        key: &str,
        seen: &DeviceSeen,
        why: &str,
    ) -> Result<(), ChangeError> {
        let Some((iface, _)) = key.rsplit_once(':') else {
            return Ok(());
        };
        let prefix = format!("{iface}:");
        let mut others: Vec<String> = self
            .journal
            .records()
            .iter()
            .filter_map(|r| match r {
                crate::journal::Record::Intent(i)
                    if i.key != key
                        && i.key.starts_with(&prefix)
                        && matches!(i.address.target, Target::Nic { .. }) =>
                {
                    Some(i.key.clone())
                }
                _ => None,
            })
            .collect();
        others.sort();
        others.dedup();
        for other in others {
            if self.journal_holds_device(&other, seen) {
                tracing::info!("{other}: {why}; what KPO knew of it there is forgotten");
                self.journal.forget_gone_device(&other, why)?;
            }
        }
        Ok(())
    }

    /// Whether what the journal holds of NIC parameter `key` is of the device `seen`: its latest
    /// change was made on it, and no `gone` record settled it since. With every change of it
    /// archived, whether the journal still holds anything of it.
    fn journal_holds_device(&self, key: &str, seen: &DeviceSeen) -> bool {
        let latest = self.journal.records().iter().rev().find_map(|r| match r {
            crate::journal::Record::Intent(i) if i.key == key => {
                Some(i.device.as_ref() == Some(seen))
            }
            crate::journal::Record::Gone { key: gone, .. } if gone == key => Some(false),
            _ => None,
        });
        latest.unwrap_or_else(|| {
            self.journal
                .param_by_key(key)
                .is_some_and(|p| p.original.is_some() || p.last_applied.is_some())
        })
    }

    /// Where the device of NIC parameter `address` is now, for the agent's value check: the
    /// device its latest change was made on, where the journal recorded it. One gone for certain
    /// from under its name is settled in the journal (a `gone` record), once: the value under
    /// its name now is another device's, nobody's change. `Here` for a
    /// parameter the journal recorded no device of (not a NIC's, an old journal, settled
    /// already): it is read by its name, as before.
    pub fn settle_if_device_gone(
        &mut self,
        address: &ParamAddress,
    ) -> Result<DeviceNow, ChangeError> {
        if !matches!(address.target, Target::Nic { .. }) {
            return Ok(DeviceNow::Here);
        }
        let key = target_key(address);
        let Some(seen) = self.latest_device(&key) else {
            return Ok(DeviceNow::Here);
        };
        let now = self.device_now(address, &seen);
        if let DeviceNow::Gone(gone) = &now {
            let why = format!(
                "{gone}: KPO's value is the old device's (deleted, or moved elsewhere with its \
                 settings), not the new one's"
            );
            tracing::info!("{address}: {why}; what KPO knew of it there is forgotten");
            self.journal.forget_gone_device(&key, &why)?;
            self.forget_the_devices_other_parameters(&key, &seen, &why)?;
        }
        Ok(now)
    }

    /// The device the journal's latest change of NIC parameter `key` was made on, unless a
    /// `gone` record settled it since (or the change recorded none).
    fn latest_device(&self, key: &str) -> Option<DeviceSeen> {
        self.journal
            .records()
            .iter()
            .rev()
            .find_map(|r| match r {
                crate::journal::Record::Intent(i) if i.key == key => Some(i.device),
                crate::journal::Record::Gone { key: gone, .. } if gone == key => Some(None),
                _ => None,
            })
            .flatten()
    }

    /// Whether the device of NIC parameter `address`'s latest change is gone for certain from
    /// under its name now, asked without settling it ([`ChangePath::preview`]).
    pub(super) fn nic_device_gone(&self, address: &ParamAddress) -> bool {
        if !matches!(address.target, Target::Nic { .. }) {
            return false;
        }
        self.latest_device(&target_key(address))
            .is_some_and(|seen| matches!(self.device_now(address, &seen), DeviceNow::Gone(_)))
    }

    /// Whether the device of NIC parameter `key` was settled as gone after change `id` (a
    /// revert of it found the device gone, [`ChangePath::revert_own`]): nothing of that change
    /// is left to revert, watch or quarantine.
    pub fn device_gone_since(&self, key: &str, id: u64) -> bool {
        // A NIC's key: its `gone` records are all of its device (a namespace's are not).
        let mut a_nics = false;
        self.journal.records().iter().any(|r| match r {
            crate::journal::Record::Intent(i) if i.id == id => {
                a_nics = matches!(i.address.target, Target::Nic { .. });
                false
            }
            crate::journal::Record::Gone { key: gone, .. } => a_nics && gone == key,
            _ => false,
        })
    }

    /// Where the device of NIC parameter `address`, `seen` when KPO changed it, is now
    /// ([`coalesce::device_now`]), asked in the network namespace the NICs' actuators act in.
    pub(super) fn device_now(&self, address: &ParamAddress, seen: &DeviceSeen) -> DeviceNow {
        let Target::Nic { iface } = &address.target else {
            return DeviceNow::Unsure(format!("{address} is not a NIC's parameter"));
        };
        match self.actuators.coalesce_backend() {
            Ok(mut backend) => coalesce::device_now(&mut *backend, iface, seen),
            Err(e) => DeviceNow::Unsure(e.to_string()),
        }
    }

    /// Whether adaptive moderation is on over this parameter now (whoever turned it on): the NIC
    /// moves the value by itself.
    pub fn under_adaptive_moderation(&self, address: &ParamAddress) -> bool {
        self.switch_on_over(address).is_some()
    }

    /// Why a revert that did not take cannot take until someone else acts, if that is so: a
    /// cpufreq limit put back across the other limit where that limit is not KPO's (a person's,
    /// yielded to them, or never changed by KPO: KPO moves neither). A revert refused across a
    /// limit KPO holds, or a preference the cpufreq driver holds under KPO's performance governor
    /// (its own revert of the governor lets it through, and the driver then gives KPO's
    /// preference back), or one that failed, may take later: watched on.
    pub fn revert_blocked_by_others(&self, r: &ChangeReport) -> Option<String> {
        match r.status {
            ChangeStatus::Refused => {
                let other = crate::actuate::cpufreq::other_limit(&r.address)?;
                let kpos = self
                    .journal
                    .param_state(&other)
                    .is_some_and(|s| s.yielded.is_none() && s.holding.is_some());
                (!kpos && self.crosses_the_other_limit(&r.address, &r.after).is_some()).then(|| {
                    format!(
                        "{} is not KPO's to move, and putting {} back would cross it",
                        other.name, r.after
                    )
                })
            }
            _ => None,
        }
    }

    /// Whether an `on_exit` revert's report leaves KPO's value to outlive the agent, which the
    /// operator must hear of: one not put back (failed, refused), or a preference the cpufreq
    /// driver holds under KPO's performance governor (kept there, or the governor not put back),
    /// which comes back when the governor leaves performance.
    pub fn stays_after_exit(&self, r: &ChangeReport) -> bool {
        match r.status {
            ChangeStatus::Failed | ChangeStatus::Refused => true,
            ChangeStatus::Skipped => {
                crate::actuate::cpufreq::governor_of(&r.address).is_some()
                    && self.moved_by_the_kernel(&r.address)
            }
            _ => false,
        }
    }

    /// Whether the kernel itself moves this parameter now: a coalescing value under adaptive
    /// moderation that KPO turned back on (`revert --all`, `on_exit`). Such a value is nobody's:
    /// it differs from KPO's without anyone having written it.
    ///
    /// Likewise a cpufreq policy's energy-performance preference that reads `performance` while
    /// the policy's governor is `performance` and KPO set it so: intel_pstate and amd-pstate (in
    /// active mode) hold the preference at `performance` under that governor (saving the one before, which they
    /// give back when the governor leaves it), so nobody wrote it.
    pub fn moved_by_the_kernel(&self, address: &ParamAddress) -> bool {
        if let Some(governor) = crate::actuate::cpufreq::governor_of(address) {
            return self.preference_held_by_kpos_governor(address, &governor);
        }
        let Some(switch) = self.switch_on_over(address) else {
            return false;
        };
        // Only a switch KPO itself turned back on: one a person turned on makes the value
        // theirs, as any other write would.
        self.journal.param_state(&switch).is_some_and(|s| {
            s.yielded.is_none()
                && s.last_applied
                    .as_ref()
                    .is_some_and(|v| *v == Value::Word("on".into()))
        })
    }

    /// Whether the energy-performance preference at `epp` reads `performance` because the
    /// driver holds it there under the `performance` governor KPO set on its policy
    /// (`governor`). Only a governor KPO set: one a person set makes the preference's value
    /// theirs, as any other write would.
    fn preference_held_by_kpos_governor(
        &self,
        epp: &ParamAddress,
        governor: &ParamAddress,
    ) -> bool {
        let performance = Value::Word(crate::actuate::cpufreq::PERFORMANCE.into());
        let kpos = self.journal.param_state(governor).is_some_and(|s| {
            s.yielded.is_none()
                && s.unsettled.is_none()
                && s.last_applied.as_ref() == Some(&performance)
        });
        kpos && self.read(governor).is_ok_and(|v| v == performance)
            && self.read(epp).is_ok_and(|v| v == performance)
            // In passive mode (intel_cpufreq) the driver does not hold it: someone wrote it.
            && self
                .actuators
                .open(epp)
                .is_ok_and(|mut a| a.held_by_driver_under_performance())
    }

    /// The switch that is on over this parameter now, if any ([`Actuator::switch_in_the_way`]).
    fn switch_on_over(&self, address: &ParamAddress) -> Option<ParamAddress> {
        let switch = self
            .actuators
            .open(address)
            .and_then(|mut a| a.switch_in_the_way());
        switch.ok().flatten().map(|(switch, _)| switch)
    }

    /// The kernel's value of a parameter now, if it can be read.
    pub fn read(&self, address: &ParamAddress) -> Result<Value, ActuateError> {
        self.actuators.open(address).and_then(|mut a| a.read())
    }

    /// Whether the kernel could take `value` for `address` now, by its actuator's own checks
    /// (a cpufreq limit within the hardware's range and the other limit as it is), writing
    /// nothing: an advisor whose change spans several parameters checks each before writing
    /// any, as [`ChangePath::preview`] asks the policy. `with_others`: written together with
    /// the parameters its checks depend on (a cpufreq policy's other limit), which are left out.
    pub fn check_value(
        &self,
        address: &ParamAddress,
        value: &Value,
        with_others: bool,
    ) -> Result<(), ActuateError> {
        let mut actuator = self.actuators.open(address)?;
        if with_others {
            actuator.validate_alone(value)
        } else {
            actuator.validate(value)
        }
    }

    /// [`ChangePath::read`] with the cookie of the network namespace the value was read in
    /// ([`ChangePath::netns_cookie`]), both through one open of it: an advisor that acts on the
    /// value later hands the cookie to [`ChangePath::propose_advice`].
    pub fn read_with_cookie(
        &self,
        address: &ParamAddress,
    ) -> Result<(Value, Option<u64>), ActuateError> {
        let mut actuator = self.actuators.open(address)?;
        let cookie = match &address.target {
            Target::Netns { .. } => actuator.netns_cookie(),
            _ => None,
        };
        Ok((actuator.read()?, cookie))
    }

    /// The cookie of the network namespace a parameter is in, when it is addressed to one and
    /// the cookie can be read: through the actuator, as every write reads it.
    pub fn netns_cookie(&self, address: &ParamAddress) -> Option<u64> {
        self.netns_now(address).ok().flatten()
    }

    /// [`ChangePath::netns_cookie`], telling a namespace that can no longer be opened (gone, or
    /// never there) from one without a readable cookie: the former is an `Err`.
    pub fn netns_now(&self, address: &ParamAddress) -> Result<Option<u64>, ActuateError> {
        match &address.target {
            Target::Netns { .. } => Ok(self.actuators.open(address)?.netns_cookie()),
            _ => Ok(None),
        }
    }

    /// Whether the network namespace a parameter was changed in is gone, its inode now naming
    /// another namespace: the journal's cookie and the namespace's differ. If so it is recorded
    /// in the journal (what KPO knew of the parameter is forgotten) and `true` is returned.
    /// Without both cookies nothing is concluded. Every write checks the same way first
    /// (`execute`, through the namespace its actuator holds).
    pub fn settle_if_namespace_gone(
        &mut self,
        address: &ParamAddress,
    ) -> Result<bool, ChangeError> {
        if self
            .journal
            .param_state(address)
            .and_then(|p| p.netns_cookie)
            .is_none()
        {
            return Ok(false);
        }
        let now = self.netns_cookie(address);
        self.namespace_replaced(address, now)
    }

    /// [`ChangePath::settle_if_namespace_gone`] with the namespace's cookie `now` already read.
    pub(super) fn namespace_replaced(
        &mut self,
        address: &ParamAddress,
        now: Option<u64>,
    ) -> Result<bool, ChangeError> {
        let Some(recorded) = self
            .journal
            .param_state(address)
            .and_then(|p| p.netns_cookie)
        else {
            return Ok(false);
        };
        let Some(now) = now else {
            return Ok(false);
        };
        if now == recorded {
            return Ok(false);
        }
        let why = format!(
            "the network namespace KPO changed {address} in is gone: its inode now names another \
             namespace (cookie {now}, was {recorded})"
        );
        tracing::info!("{why}; what KPO knew of it there is forgotten");
        self.journal.forget_gone_namespace(address, &why)?;
        Ok(true)
    }

    /// [`ChangePath::settle_if_namespace_gone`] for a namespace no namespace has the inode of now
    /// and that is gone for certain ([`ChangePath::namespace_gone_for_certain`]): settled then, not
    /// only once the kernel hands its inode to a new one, which on a node whose pods only
    /// shrink is never (s61 story BY-1: dead pods' parameters piled up in `kpo status`, their
    /// quarantines in `kpo_quarantines`, a skipped line each at `kpo revert --all` and `on_exit`).
    /// The caller asks [`ChangePath::namespace_gone_for_certain`] first, once per inode: it
    /// scans every process.
    pub fn settle_namespace_gone_for_certain(
        &mut self,
        address: &ParamAddress,
    ) -> Result<(), ChangeError> {
        let why = format!(
            "the network namespace KPO changed {address} in is gone: no namespace has its inode \
             now, no process is in it, and no mount KPO sees keeps it"
        );
        tracing::info!("{why}; what KPO knew of it there is forgotten");
        self.journal.forget_gone_namespace(address, &why)?;
        Ok(())
    }

    /// Whether the network namespace of `address` (journaled under `key`) is gone for certain:
    /// it cannot be opened, and its inode (the one in `key`, which a path named when KPO changed
    /// it) is in use nowhere, no /run/netns/* entry and no process being in it, which only an
    /// agent that sees every process can tell. A namespace that
    /// merely cannot be opened (a descriptor limit, a race with /proc) is not: what needs it is
    /// tried again later.
    pub fn namespace_gone_for_certain(&self, address: &ParamAddress, key: &str) -> bool {
        let Target::Netns { netns } = &address.target else {
            return false;
        };
        let nowhere = match key_netns_inode(key) {
            // Where not every process can be seen, nothing is in use "nowhere": forgetting what
            // KPO changed there would leave it unreverted for good.
            Some(inode) => {
                crate::actuate::sysctl::sees_every_process()
                    && !crate::actuate::sysctl::netns_in_use(inode)
            }
            // A path that never named a namespace KPO changed.
            None => matches!(netns, NetnsRef::Path(path) if !path.exists()),
        };
        nowhere && self.netns_now(&reach(address, key)).is_err()
    }
}
