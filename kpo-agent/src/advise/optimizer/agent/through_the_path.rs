//! The loop's configurations reach the kernel through the change path, knob by knob, all or
//! none, each change watched by the guard.
use super::*;

/// The loop's configurations through the change path, watched by the guard.
pub(super) struct PathKnobs<'a> {
    pub(super) path: &'a mut ChangePath,
    pub(super) guard: &'a mut Guard,
    /// The window before the trial: the guard's baseline for each change (none at shutdown,
    /// when the loop only goes back).
    pub(super) baseline: Option<&'a Window>,
    pub(super) knobs: &'a [Knob],
    pub(super) made: &'a mut Vec<Made>,
    /// Reverts left undone because the value is someone else's, for the caller to yield to them.
    pub(super) skipped: &'a mut Vec<ChangeReport>,
    /// Roll-backs that failed, to try again later.
    pub(super) owed: &'a mut Vec<Owed>,
    /// The agent is stopping: knobs whose parameters all go back to their originals next
    /// (`on_exit = "revert"`) are not written on the way, unless the other cpufreq limit of
    /// their policy is kept ([`PathKnobs::revert_to`]).
    pub(super) exiting: bool,
}

/// Whether a revert of the loop's left the kernel without the loop's value: carried out, or
/// nothing to do. A revert whose own write was put back after a wrong read-back is `Failed`; a
/// change the journal still holds there means not undone, whatever the status says.
pub(super) fn undone(path: &ChangePath, r: &crate::change::ChangeReport) -> bool {
    match r.status {
        ChangeStatus::Unchanged => true,
        ChangeStatus::Reverted => path
            .journal
            .param_state(&r.address)
            .is_none_or(|p| p.holding.is_none()),
        _ => false,
    }
}

impl PathKnobs<'_> {
    fn proposal(address: &ParamAddress, value: f64, why: &str) -> Proposal {
        Proposal {
            address: address.clone(),
            value: Value::Int(value as i128),
            source: Source::Optimizer,
            reason: why.to_string(),
        }
    }

    /// A revert of the loop's change `m` (for `reason`) did not take: tried again at later
    /// windows.
    fn owe(&mut self, m: &Made, reason: &str) {
        if !self.owed.iter().any(|o| o.made.id == m.id) {
            let holding = self
                .path
                .journal
                .param_state(&m.address)
                .and_then(|p| p.holding);
            self.owed.push(Owed::revert(m.clone(), holding, reason));
        }
    }

    /// Undo this trial's changes made so far (a later one failed): whether every one was undone.
    /// One that failed is owed ([`Owed`]), tried again at the next window.
    fn roll_back(&mut self, done: &[Made]) -> bool {
        let mut all = true;
        for m in done.iter().rev() {
            // The watch goes only once the revert is done (and journaled): killed before, the
            // trial's value is still watched after the restart.
            match self.path.revert_own(
                m.id,
                Source::Optimizer,
                "optimizer: undoing a trial that failed",
            ) {
                Ok(r) if undone(self.path, &r) => {
                    self.guard.forget(&m.address);
                }
                Ok(r) if r.status == ChangeStatus::Skipped => {
                    warn!("optimizer: rolling back #{}: {}", m.id, r.describe());
                    self.skipped.push(r);
                    all = false;
                }
                Ok(r) => {
                    warn!(
                        "optimizer: rolling back #{}: {}; trying again at the next window",
                        m.id,
                        r.describe()
                    );
                    self.owed.push(Owed::roll_back(m.clone()));
                    all = false;
                }
                Err(e) => {
                    warn!(
                        "optimizer: rolling back #{} ({}): {e}; trying again at the next window",
                        m.id, m.address
                    );
                    self.owed.push(Owed::roll_back(m.clone()));
                    all = false;
                }
            }
        }
        all
    }
}

/// The knobs that move from `from` to `to`, in an order each write passes: KPO's cpufreq
/// actuator refuses a `scaling_max_freq` below its `scaling_min_freq` (and the reverse; older
/// kernels return EINVAL, newer ones clamp the min to the max), so a pair shifted down writes the
/// min first and a pair shifted up the max first. (Narrowed or
/// widened, any order passes.) A knob's members share one attribute.
pub(super) fn write_order(knobs: &[Knob], from: &[f64], to: &[f64]) -> Vec<usize> {
    let mut moving: Vec<usize> = (0..to.len()).filter(|&i| from[i] != to[i]).collect();
    moving.sort_by_key(|&i| {
        crate::actuate::cpufreq::written_later(&knobs[i].members[0], to[i] < from[i])
    });
    moving
}

impl PathKnobs<'_> {
    /// Whether none of knob `i`'s values at `to` (for each `i` that `which` takes) is
    /// quarantined now.
    fn none_quarantined(&self, to: &[f64], which: impl Fn(usize) -> bool) -> bool {
        let now = std::time::SystemTime::now();
        self.knobs
            .iter()
            .zip(to)
            .enumerate()
            .all(|(i, (knob, &v))| {
                !which(i)
                    || knob.members.iter().all(|a| {
                        self.path
                            .journal
                            .context(a, &Value::Int(v as i128), now)
                            .quarantined_until
                            .is_none_or(|until| until <= now)
                    })
            })
    }
}

impl Knobs for PathKnobs<'_> {
    fn allowed_move(&mut self, from: &[f64], to: &[f64]) -> bool {
        self.none_quarantined(to, |i| from.get(i) != to.get(i))
    }

    fn allowed(&mut self, to: &[f64]) -> bool {
        self.none_quarantined(to, |_| true)
    }

    fn within_policy(&mut self, to: &[f64]) -> bool {
        self.knobs.iter().zip(to).all(|(knob, &v)| {
            let value = Value::Int(v as i128);
            knob.members
                .iter()
                .all(|a| self.path.policy.within_bounds(a, &value))
        })
    }

    fn survives_exit(&mut self, to: &[f64]) -> bool {
        let path = &self.path;
        let reverts = |k: &Knob| {
            k.members
                .iter()
                .all(|a| path.policy.rule_for(a).on_exit == crate::policy::OnExit::Revert)
        };
        let originals = |k: &Knob| -> Vec<f64> {
            k.members
                .iter()
                .filter_map(|a| path.journal.param_state(a)?.original.as_ref()?.as_int())
                .map(|v| v as f64)
                .collect()
        };
        // One limit kept at `to`, the other put back to its original right after: that
        // original must not cross the kept one, or `on_exit` is refused and leaves the trial's.
        min_max_pairs(self.knobs).iter().all(|&(min, max)| {
            match (reverts(&self.knobs[min]), reverts(&self.knobs[max])) {
                (false, true) => originals(&self.knobs[max]).iter().all(|&o| to[min] <= o),
                (true, false) => originals(&self.knobs[min]).iter().all(|&o| to[max] >= o),
                _ => true,
            }
        })
    }

    fn try_config(&mut self, from: &[f64], to: &[f64], why: ChangeReason) -> Tried {
        let reason = match why {
            // As a revert back to the best is journaled.
            ChangeReason::Back => format!("optimizer: SLO breach; back to {to:?}"),
            _ => format!("optimizer {}: trial {to:?}", why.as_str()),
        };
        let moving = write_order(self.knobs, from, to);
        // This member's other cpufreq limit (its own policy's) moves in this configuration too:
        // checked against the other limit as it is now, a value could be refused that the write
        // order lets through (the min lowered first), so that check is left out (the search
        // space holds no min above its max); the hardware range is checked all the same. Per
        // member: a knob's policies need not be those of the other limit's knob (s48 review2 N4).
        let other_limit_moves = |address: &ParamAddress| {
            crate::actuate::cpufreq::other_limit(address).is_some_and(|other| {
                moving
                    .iter()
                    .any(|&j| self.knobs[j].members.contains(&other))
            })
        };
        // All or none: the policy is asked about every parameter before any is changed, and the
        // kernel's own checks are made (a member's hardware range, its other limit), so that a
        // value one member cannot take is not written to the others first and taken back
        // (s48 storyP P-4).
        for &i in &moving {
            for address in &self.knobs[i].members {
                let p = Self::proposal(address, to[i], &reason);
                let decision = self.path.preview(&p);
                if decision == Decision::Apply {
                    let with_others = other_limit_moves(address);
                    let Err(invalid) = self.path.check_value(address, &p.value, with_others) else {
                        continue;
                    };
                    // Refused as the path refuses it, without a second check that could pass
                    // and write this member out of the configuration's order. A check that
                    // failed for a while (a device busy) is waited for as such a write is, with
                    // its waits (s48 review2 N6, review3 R3-1), not a reason to set the
                    // configuration aside.
                    let passing = invalid.is_passing();
                    let report = self.path.refuse_invalid(&p, invalid.to_string());
                    if passing {
                        return Tried::Failed {
                            error: report.describe(),
                            rolled_back: true,
                            retry: true,
                        };
                    }
                    return Tried::Refused {
                        reason: report.describe(),
                        retry: false,
                    };
                }
                // Through the path, which refuses it and says so.
                let report = self.path.propose(&p);
                let detail = match &report {
                    Ok(r) => r.describe(),
                    Err(e) => e.to_string(),
                };
                let retry = match decision {
                    Decision::Refused(r) => r.passes(),
                    Decision::NeedsApproval => true,
                    Decision::RecordOnly | Decision::Apply => false,
                };
                return Tried::Refused {
                    reason: detail,
                    retry,
                };
            }
        }
        let mut done: Vec<Made> = Vec::new();
        for &i in &moving {
            for address in &self.knobs[i].members {
                let p = Self::proposal(address, to[i], &reason);
                let report = match self.path.propose(&p) {
                    Ok(r) => r,
                    Err(e) => {
                        return Tried::Failed {
                            error: e.to_string(),
                            rolled_back: self.roll_back(&done),
                            retry: false,
                        };
                    }
                };
                match (report.status, report.journal_id) {
                    (ChangeStatus::Applied, Some(id)) => {
                        let signals = self
                            .path
                            .policy
                            .guard_signals_for(&p.address, Source::Optimizer);
                        self.guard.watch(
                            id,
                            p.address.clone(),
                            &Value::Int(from[i] as i128),
                            p.value.clone(),
                            self.baseline,
                            signals.as_deref(),
                        );
                        done.push(Made {
                            knob: i,
                            address: address.clone(),
                            id,
                            before: from[i] as i64,
                        });
                    }
                    (ChangeStatus::Unchanged, _) => {}
                    _ => {
                        return Tried::Failed {
                            error: report.describe(),
                            rolled_back: self.roll_back(&done),
                            retry: report.failed_for_a_while,
                        };
                    }
                }
            }
        }
        // One set of changes per knob and value left: enough to go back to any value held
        // before.
        self.made
            .retain(|m| !moving.contains(&m.knob) || m.before != from[m.knob] as i64);
        self.made.extend(done);
        Tried::Applied
    }

    fn revert_to(
        &mut self,
        from: &[f64],
        to: &[f64],
        why: GoBack,
    ) -> Result<Vec<f64>, RevertFailure> {
        let mut errors = Vec::new();
        // Whether every revert that did not take is owed: tried again at later windows, as a
        // failed trial's roll-back is. Only going back within the loop's life: a stop has no
        // later window, and a reload or regroup starts another loop from the kernel's values.
        let owes = matches!(why, GoBack::SloBreach | GoBack::NoRequests) && !self.exiting;
        let mut all_owed = owes;
        // Owed only when every failure is: the loop then takes `to` as its own (s49 review2
        // N1: one owed beside a failure that is not would be tried for a loop that stays at
        // `from`).
        let mut to_owe: Vec<Made> = Vec::new();
        let mut reached = to.to_vec();
        let why = format!("optimizer: {}; back to {to:?}", why.as_str());
        let reverts_on_exit = |k: &Knob| {
            k.members
                .iter()
                .all(|a| self.path.policy.rule_for(a).on_exit == crate::policy::OnExit::Revert)
        };
        let reverted_next: Vec<bool> = self.knobs.iter().map(reverts_on_exit).collect();
        // A cpufreq limit is not left to `on_exit` while the other limit of its policy is kept:
        // that one's write is ordered against this one's, and with this one still at the trial
        // it could cross it (a max below the trial's min), which older kernels refuse and newer
        // ones take by clamping this one, whose revert then finds a value that is not KPO's.
        // Settled together, then this one put back to its original, each write passes.
        let pairs = min_max_pairs(self.knobs);
        let left_to_on_exit = |i: usize| {
            reverted_next[i]
                && !pairs.iter().any(|&(min, max)| {
                    (min == i && !reverted_next[max]) || (max == i && !reverted_next[min])
                })
        };
        for i in write_order(self.knobs, from, to) {
            if self.exiting && left_to_on_exit(i) {
                continue;
            }
            let made: Vec<Made> = self
                .made
                .iter()
                .filter(|m| m.knob == i && m.before == to[i] as i64)
                .cloned()
                .collect();
            if made.is_empty() {
                errors.push(format!(
                    "{}: the journal has no change of the loop's from {}",
                    self.knobs[i].name, to[i]
                ));
                all_owed = false;
                continue;
            }
            let mut left = 0;
            for m in &made {
                match self.path.revert_own(m.id, Source::Optimizer, &why) {
                    Ok(r) if undone(self.path, &r) => {
                        self.guard.forget(&m.address);
                    }
                    // Not the loop's value there now (a person's, an operator's or an advisor's
                    // since): left as it is, and a person's is theirs from now on (the caller
                    // yields), so that neither the loop nor `on_exit` writes over it later.
                    Ok(r) if r.status == ChangeStatus::Skipped => {
                        left += 1;
                        self.skipped.push(r);
                    }
                    Ok(r) => {
                        errors.push(r.describe());
                        // One that needs someone else first (the other cpufreq limit, not
                        // KPO's, in the way) would be refused at every try.
                        if self.path.revert_blocked_by_others(&r).is_none() {
                            to_owe.push(m.clone());
                        } else {
                            all_owed = false;
                        }
                    }
                    Err(e) => {
                        errors.push(e.to_string());
                        to_owe.push(m.clone());
                    }
                }
            }
            // Every member left: the knob is not at `to`. A group with some members at `to`
            // and someone else's value in another is apart, and reads as the loop's own value
            // (`read_knobs_partly`), which is `to`.
            if left == made.len() {
                reached[i] = from[i];
            }
        }
        if all_owed {
            for m in &to_owe {
                self.owe(m, &why);
            }
        }
        if errors.is_empty() {
            Ok(reached)
        } else {
            Err(RevertFailure {
                error: errors.join("; "),
                owed: all_owed.then_some(reached),
            })
        }
    }
}
