//! Settling, at a start, the changes a killed process left with an intent and no outcome.
use super::*;

impl ChangePath {
    /// Settles intents that have no outcome (the process died mid-change) against the kernel's
    /// value now: the new value means applied, the value before means not applied, anything else
    /// is journaled as failed with what was found. An intent whose parameter cannot be read is
    /// left for the next start, with a warning.
    pub fn reconcile(&mut self) -> Result<Vec<ChangeReport>, ChangeError> {
        let mut out = Vec::new();
        // Newest first: an older incomplete intent of the same parameter is judged knowing what
        // the newer ones did (one that took effect owns the kernel's value now).
        let mut incomplete = self.journal.incomplete();
        incomplete.sort_by_key(|i| std::cmp::Reverse(i.id));
        for intent in incomplete {
            let report = self.reconcile_one(&intent)?;
            self.send_reconciled(&intent, &report);
            out.push(report);
        }
        out.reverse();
        self.turn_back_on_switches_left_off(&mut out)?;
        Ok(out)
    }

    /// Turns back on each switch KPO turned off to make way for a value (`made_way_for`) that was
    /// then never set: the agent stopped between the two changes (killed, or a power loss), or
    /// the journal could not record the value's change and then not the switch's way back
    /// either. The running agent turns such a switch back on at once when the value does not
    /// take; this ends a stop in between the same way, at the next start, after the interrupted
    /// changes are settled. Only a switch KPO still holds off (not yielded, not turned back on
    /// since) over values none of which KPO set after it (no change of theirs took effect
    /// since, none left unsettled): a value set with it off relies on it. Each is a revert of
    /// the switch's change, journaled and reported with the interrupted changes; one the kernel
    /// has on already (someone else's doing) is left to the value check.
    fn turn_back_on_switches_left_off(
        &mut self,
        out: &mut Vec<ChangeReport>,
    ) -> Result<(), ChangeError> {
        use crate::actuate::coalesce::switch_governs;
        let unsettled = self.keys_with_an_unsettled_intent();
        let left_off: Vec<Intent> = self
            .journal
            .records()
            .iter()
            .filter_map(|r| match r {
                crate::journal::Record::Intent(i) if i.made_way_for.is_some() => Some(i),
                _ => None,
            })
            .filter(|s| {
                let holds = self
                    .journal
                    .param_by_key(&s.key)
                    .is_some_and(|state| state.still_holds(s.id, &s.after));
                let switch = reach(&s.address, &s.key);
                let relied_on = self.journal.params().any(|p| {
                    p.address
                        .as_ref()
                        .is_some_and(|a| switch_governs(&switch, a))
                        && (unsettled.contains(&p.key)
                            // A damaged line may have held a change of it made with the switch
                            // off: unknown counts as relied on.
                            || p.unsettled.is_some()
                            || p.applied.last().is_some_and(|(id, _)| *id > s.id))
                });
                holds && !relied_on
            })
            .cloned()
            .collect();
        for s in left_off {
            let value = s.made_way_for.as_deref().unwrap_or_default();
            let stopped = format!(
                "{value} was not set after {} was turned off for it (#{}): the agent stopped, or \
                 the journal could not record the change, in between",
                s.address, s.id
            );
            // The device it was turned off on, where the journal knows it: a name that names
            // nothing, or another device, is not written to.
            let left = match s.device.map(|seen| self.device_now(&s.address, &seen)) {
                None | Some(DeviceNow::Here) => None,
                Some(DeviceNow::Gone(gone)) => Some(self.settle_gone_switch(&s, &stopped, &gone)?),
                Some(DeviceNow::Unsure(why)) => {
                    let mut report = switch_report(&s, ChangeStatus::Failed);
                    report.detail = Some(format!(
                        "{stopped}; not turned back on: {why}; tried again at the next start"
                    ));
                    Some(report)
                }
            };
            if let Some(report) = left {
                tracing::warn!("journal #{} ({}): {}", s.id, s.address, report.describe());
                out.push(report);
                continue;
            }
            let why = format!("{stopped}; turning it back on");
            let mut report = self.revert_own(s.id, s.source, &why)?;
            // Said with it, as a reconciled change says why (`kpo: reconciled: ...`).
            report.detail.get_or_insert(why);
            // Unchanged: the kernel has it on already (someone else's doing), nothing written,
            // nothing to say at every start.
            if report.status != ChangeStatus::Unchanged {
                tracing::warn!("journal #{} ({}): {}", s.id, s.address, report.describe());
                out.push(report);
            }
        }
        Ok(())
    }

    /// Switch `s`, left off by a stop (`stopped` says how), on a device gone for certain from
    /// under its name (`gone` says how): settled once, journaled as gone, so that KPO no longer
    /// holds it and no later start tries again. The switch left off is the old device's
    /// (deleted, or moved elsewhere with its settings), not the new one's under the name.
    fn settle_gone_switch(
        &mut self,
        s: &Intent,
        stopped: &str,
        gone: &str,
    ) -> Result<ChangeReport, ChangeError> {
        let why = format!(
            "{stopped}; {gone}: the switch left off is the old device's (deleted, or moved \
             elsewhere with its settings), not the new one's: nothing to turn back on"
        );
        self.journal.forget_gone_device(&s.key, &why)?;
        let mut report = switch_report(s, ChangeStatus::Skipped);
        report.detail = Some(why);
        Ok(report)
    }

    /// An intent without an outcome whose parameter's next change, which took effect, found the
    /// value it wrote in place: it was done, and its outcome's line was lost (damaged) or never
    /// written (a revert whose outcome the running agent could not record is left done; a change
    /// whose outcome it could not record, and whose value before it could not put back, leaves
    /// its write). Journaled as done without reading the kernel, whose value now is the later
    /// changes'. A running agent that cannot write a change's outcome otherwise puts its value
    /// before back, so the next change of one it could not record finds the value before, not
    /// this one's.
    fn found_in_place_by_the_next_change(
        &mut self,
        i: &Intent,
        report: &mut ChangeReport,
    ) -> Result<Option<ChangeReport>, ChangeError> {
        if self.journal.before_this_boot(i) || !self.journal.superseded(i) {
            return Ok(None);
        }
        // On the same device: a NIC's next change made on a new device under the name found
        // that device's value, which says nothing of the old one's write. An intent without a
        // device (an old journal's) is taken as on the same one.
        let same_device = |d: Option<DeviceSeen>| match (d, i.device) {
            (Some(next), Some(this)) => next == this,
            _ => true,
        };
        let Some(next) = self
            .journal
            .next_change(i)
            .filter(|(n, d)| n.before == i.after && same_device(*d))
            .map(|(n, _)| n)
        else {
            return Ok(None);
        };
        // Its outcome's line was dropped as damaged, or never written: a running agent that
        // could not record a revert's outcome leaves the revert done, and one that could not
        // record a change's, nor put its value before back, leaves its write.
        let why = if self.journal.lost_outcome(i.id).is_some() {
            format!(
                "its outcome line was damaged; the next change found its value ({}) in place",
                next.before
            )
        } else {
            format!(
                "its outcome was not recorded; the next change found its value ({}) in place",
                next.before
            )
        };
        tracing::warn!("journal #{} ({}): {why}", i.id, i.address);
        report.detail = Some(why.clone());
        report.read_back = Some(i.after.clone());
        let outcome = match i.kind {
            IntentKind::Revert { .. } => {
                report.status = ChangeStatus::Reverted;
                Outcome::Reverted {
                    why,
                    read_back: Some(i.after.clone()),
                }
            }
            IntentKind::Change => {
                report.status = ChangeStatus::Applied;
                Outcome::Applied {
                    read_back: i.after.clone(),
                    reconciled: true,
                    why: Some(why),
                }
            }
        };
        self.journal.record_outcome(i.id, outcome)?;
        Ok(Some(report.clone()))
    }

    /// Journals the quarantines of guard reverts that an agent killed right after the revert
    /// left out ([`crate::journal::Journal::restore_guard_quarantines`]), with the policy's
    /// length, each logged. Run at start, after [`ChangePath::reconcile`] (a guard revert it
    /// found done counts).
    pub fn restore_guard_quarantines(&mut self) -> Result<(), ChangeError> {
        let base = self.policy.guard.quarantine;
        for restored in self.journal.restore_guard_quarantines(base)? {
            tracing::warn!("journal: {restored}");
        }
        Ok(())
    }

    /// The start's word on an interrupted change in the event stream, as in the log: the change
    /// events of the run that was cut short died with it (s44 storyA). Its phase as settled, the
    /// change's own source and reason, and what was found in `detail`; nothing for one left
    /// incomplete (the kernel could not be read: tried again at the next start, logged).
    fn send_reconciled(&mut self, i: &Intent, report: &ChangeReport) {
        let phase = match report.status {
            ChangeStatus::Applied => ChangePhase::Applied,
            ChangeStatus::Reverted => ChangePhase::Reverted,
            ChangeStatus::Failed => ChangePhase::Failed,
            _ => return,
        };
        let mut e = self.event(
            phase,
            &report.address,
            report.before.as_ref(),
            &report.after,
            i.source,
            &i.reason,
            report.journal_id,
        );
        e.read_back = report.read_back.clone();
        e.detail = report
            .detail
            .as_ref()
            .map(|d| format!("reconciled at start: {d}"));
        self.send(e);
    }

    fn reconcile_one(&mut self, i: &Intent) -> Result<ChangeReport, ChangeError> {
        // Its namespace by the inode it was changed in when the path no longer names it.
        let address = reach(&i.address, &i.key);
        let mut report = ChangeReport::new(&address, &i.after, ChangeStatus::Skipped);
        report.journal_id = Some(i.id);
        report.before = Some(i.before.clone());
        if let Some(found) = self.found_in_place_by_the_next_change(i, &mut report)? {
            return Ok(found);
        }
        // Its outcome's line was dropped as damaged: the change ran to its end, and saying it was
        // interrupted would mislead whoever reads `kpo journal` later.
        let lost = self.journal.lost_outcome(i.id).map(str::to_string);
        // What the kernel has now says nothing about the interrupted write when the kernel was
        // restarted since (this boot's value), or when the namespace it went to is gone (the
        // inode names another one now): failed, without reading.
        let what = lost.as_deref().unwrap_or("interrupted");
        let gone = if self.journal.before_this_boot(i) {
            Some(format!(
                "{what}, then the machine rebooted: the change did not outlive the boot"
            ))
        } else if self.journal.superseded(i) {
            // Left without an outcome by a running agent whose journal could not record it (the
            // change was put back then), and followed by later changes of the same parameter: the
            // kernel's value now is theirs, not this one's.
            Some(match &lost {
                Some(lost) => format!(
                    "{lost}, and later changes of the parameter followed, not from its value"
                ),
                None => {
                    "its outcome could not be recorded, and later changes of the parameter followed"
                        .to_string()
                }
            })
        } else if let Some((why, _)) = self.journal.gone_after(i) {
            // A device's `gone`, journaled by an earlier reconciliation just before a stop, says
            // it already.
            Some(match why.starts_with(&format!("{what}, then ")) {
                true => why.to_string(),
                false => format!("{what}, then {why}"),
            })
        } else {
            match (i.netns_cookie, self.netns_cookie(&address)) {
                (Some(then), Some(now)) if then != now => Some(format!(
                    "{what}, then its network namespace went away (the inode names another one now)"
                )),
                // Gone with its values: no later start could read them either.
                (_, None) if self.namespace_gone_for_certain(&address, &i.key) => {
                    Some(format!("{what}, then {NAMESPACE_GONE}"))
                }
                _ => None,
            }
        };
        // A NIC's device, where the journal knows which it was: gone for certain from under its
        // name, the write's value is the old device's (no later start could read it either, the
        // name is another device's); renamed, or not known (absent: deleted or moved away),
        // the name is not read (it may name another device), and a later start tries again.
        let mut device_gone = false;
        let gone = match gone {
            Some(e) => Some(e),
            None => match i.device.map(|seen| self.device_now(&address, &seen)) {
                None | Some(DeviceNow::Here) => None,
                Some(DeviceNow::Gone(g)) => {
                    device_gone = true;
                    Some(format!(
                        "{what}, then {g}: the value is the old device's (deleted, or moved \
                         elsewhere with its settings), not the new one's"
                    ))
                }
                Some(DeviceNow::Unsure(why)) => {
                    let msg = format!(
                        "journal #{} ({}): interrupted change not reconciled: {why}; will retry \
                         at the next start",
                        i.id, i.address
                    );
                    tracing::warn!("{msg}");
                    report.detail = Some(msg);
                    return Ok(report);
                }
            },
        };
        if let Some(e) = gone {
            report.status = ChangeStatus::Failed;
            report.detail = Some(e.clone());
            tracing::warn!("journal #{} ({}): {e}", i.id, i.address);
            if device_gone {
                // Nothing KPO knew of it holds for the new device under the name. Journaled
                // before the outcome: a stop in between leaves the intent incomplete, so the next
                // start settles it again (a second `gone` changes nothing), where the other order
                // would lose the `gone` for good.
                self.journal.forget_gone_device(&i.key, &e)?;
            }
            self.journal.record_outcome(
                i.id,
                Outcome::Failed {
                    error: e.clone(),
                    reconciled: true,
                    left: None,
                },
            )?;
            return Ok(report);
        }
        let now = self.actuators.open(&address).and_then(|mut a| a.read());
        let now = match now {
            Ok(v) => v,
            Err(e) => {
                let msg = format!(
                    "journal #{} ({}): interrupted change not reconciled, the kernel cannot be read: {e}; will retry at the next start",
                    i.id, i.address
                );
                tracing::warn!("{msg}");
                report.detail = Some(msg);
                return Ok(report);
            }
        };
        report.read_back = Some(now.clone());
        let outcome = if now == i.after && matches!(i.kind, IntentKind::Revert { .. }) {
            report.status = ChangeStatus::Reverted;
            let why = match &lost {
                Some(lost) => format!("{lost}; the kernel has the value it put back: found done"),
                None => "revert interrupted after the kernel write; found done".to_string(),
            };
            report.detail = Some(why.clone());
            Outcome::Reverted {
                why,
                read_back: Some(now),
            }
        } else if now == i.after {
            report.status = ChangeStatus::Applied;
            let why = match &lost {
                Some(lost) => format!("{lost}; the kernel has its new value: found applied"),
                None => "interrupted after the kernel write; found applied".to_string(),
            };
            report.detail = Some(why.clone());
            Outcome::Applied {
                read_back: now,
                reconciled: true,
                why: Some(why),
            }
        } else if now == i.before {
            report.status = ChangeStatus::Failed;
            let e = match &lost {
                Some(lost) => format!(
                    "{lost}; the kernel has the value before: the write did not take, or was \
                     undone since"
                ),
                // A change the running agent wrote and could not record the outcome of is put
                // back (a full disk), and leaves the same; a revert left done is not.
                None if matches!(i.kind, IntentKind::Revert { .. }) => {
                    "interrupted before the kernel took the value; nothing changed".to_string()
                }
                None => "interrupted; the kernel has the value before: the write did not take, or \
                         was put back; nothing of it is in place"
                    .to_string(),
            };
            // A failed change's read-back is what KPO's write left, and this one left nothing.
            report.read_back = None;
            report.detail = Some(e.clone());
            Outcome::Failed {
                error: e,
                reconciled: true,
                left: None,
            }
        } else if self.journal.wrong_read_back(i.id) == Some(&now) {
            // KPO's own write, read back wrong, and the agent died before putting the value
            // before back: finish that.
            let why = format!(
                "interrupted after its write read back {now}, before the value before was put back"
            );
            // A put-back is a revert: only the deny-list stops it (a policy changed since).
            if let Decision::Refused(r) = self.policy.decide_revert(&i.address) {
                report.status = ChangeStatus::Failed;
                let error = format!("{why}; not put back: {r}; KPO's {now} stays");
                report.detail = Some(error.clone());
                tracing::warn!("journal #{} ({}): {error}", i.id, i.address);
                self.journal.record_outcome(
                    i.id,
                    Outcome::Failed {
                        error,
                        reconciled: true,
                        left: Some(now),
                    },
                )?;
                return Ok(report);
            }
            let mut actuator = match self.actuators.open(&address) {
                Ok(a) => a,
                Err(e) => {
                    report.detail = Some(format!(
                        "journal #{} ({}): {why}; cannot open it to put {} back: {e}; will retry \
                         at the next start",
                        i.id, i.address, i.before
                    ));
                    tracing::warn!("{}", report.detail.as_deref().unwrap_or(""));
                    return Ok(report);
                }
            };
            match self.put_back(
                &mut *actuator,
                i.id,
                &i.kind,
                &i.before,
                None,
                why,
                &mut report,
            ) {
                Outcome::Failed { error, left, .. } => Outcome::Failed {
                    error,
                    reconciled: true,
                    left,
                },
                done => done,
            }
        } else {
            report.status = ChangeStatus::Failed;
            // Without a read-back record this is either someone's value written while KPO was
            // down, or KPO's write stored as another value (rounded) just before the crash: the
            // two cannot be told apart, and only the first is ever written over by mistake, so
            // the value is left as someone else's.
            let e = format!(
                "{}; the kernel has {now}, neither the value before nor the new one \
                 (someone else changed it, or the kernel stored KPO's write as another value \
                 before it was recorded: left alone as someone else's)",
                lost.as_deref().unwrap_or("interrupted")
            );
            report.read_back = None;
            report.detail = Some(e.clone());
            Outcome::Failed {
                error: e,
                reconciled: true,
                left: None,
            }
        };
        // Info: the agent reports it as a `change` event too, and a command prints it itself
        // (`kpo: reconciled: ...`).
        tracing::info!(
            "journal #{} ({}): reconciled an interrupted change: {}",
            i.id,
            i.address,
            report.detail.as_deref().unwrap_or("")
        );
        self.journal.record_outcome(i.id, outcome)?;
        Ok(report)
    }
}
