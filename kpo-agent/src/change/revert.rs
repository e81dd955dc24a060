//! Putting values back: `kpo revert ID`, the agent's own reverts (the guard, the optimizer),
//! `kpo revert --all` and `on_exit = "revert"`.
use super::*;

/// The start of the `why` of the quarantine an operator's revert journals for the advisor's
/// value it takes out (a guard's names its signal).
pub(crate) const OPERATORS_QUARANTINE: &str = "an operator reverted it";

/// The words a revert's report and its `reverted` event give of the quarantine of the value it
/// took out: the journal's own end (its clock's millisecond), as `kpo status` names it.
pub(crate) fn quarantine_words(value: &Value, until: SystemTime) -> String {
    let until_ms = until
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!(
        "{value} is quarantined until {}: no change sets it here before then, an operator's kpo apply included",
        crate::journal::format_ms(until_ms)
    )
}

impl ChangePath {
    /// Puts back the value change `id` replaced: an operator's `kpo revert ID`. A value someone
    /// else wrote since KPO's last write there (a person's fix the agent yielded to, or one it
    /// was down for) stays: the revert is `Skipped`, saying how to write over it
    /// ([`ChangePath::revert_over_theirs`]).
    pub fn revert(
        &mut self,
        id: u64,
        source: Source,
        reason: &str,
    ) -> Result<ChangeReport, ChangeError> {
        self.operators_revert(id, source, reason, false)
    }

    /// [`ChangePath::revert`], written over whatever the kernel has now, someone else's value
    /// too: `kpo revert ID --force`.
    pub fn revert_over_theirs(
        &mut self,
        id: u64,
        source: Source,
        reason: &str,
    ) -> Result<ChangeReport, ChangeError> {
        self.operators_revert(id, source, reason, true)
    }

    fn operators_revert(
        &mut self,
        id: u64,
        source: Source,
        reason: &str,
        over_theirs: bool,
    ) -> Result<ChangeReport, ChangeError> {
        let known = self.journal.last_intent_id();
        self.revert_change(id, source, reason, None, over_theirs)
            .or_else(|e| self.done_but_not_recorded(id, known, e))
    }

    /// `kpo revert ID` whose write was made, and whose outcome the journal could not record (a
    /// full disk): done, and reported so, as `kpo revert --all` reports it. The journal's bare
    /// error said that KPO "changes and records nothing", and an operator took the revert for
    /// not made (s50 storyW W1). `known`: the last intent before the revert.
    fn done_but_not_recorded(
        &self,
        of: u64,
        known: Option<u64>,
        error: ChangeError,
    ) -> Result<ChangeReport, ChangeError> {
        let made = (self.journal.intents_after(known)).find(|i| {
            i.kind == IntentKind::Revert { of: Some(of) }
                && matches!(self.journal.outcome(i.id), Some(Outcome::Reverted { .. }))
        });
        let Some(made) = made else {
            return Err(error);
        };
        let mut report = self.stopped_at(&made.address, Some(made.after.clone()), &error);
        if report.status != ChangeStatus::Reverted {
            return Err(error);
        }
        report.journal_id = Some(made.id);
        report.before = Some(made.before.clone());
        Ok(report)
    }

    /// Reverts change `id` only while the kernel still has the value KPO last applied to that
    /// parameter. The agent's own reverts (the guard, the optimizer) go through here: a value
    /// someone else wrote since is theirs, and is not overwritten with KPO's old one. Such a
    /// revert is `Skipped`, with `read_back` the kernel's value; the caller yields to them.
    pub fn revert_own(
        &mut self,
        id: u64,
        source: Source,
        reason: &str,
    ) -> Result<ChangeReport, ChangeError> {
        self.revert_change(id, source, reason, Some(id), false)
    }

    /// [`ChangePath::revert_own`] of `first`, the first of the changes of one parameter the
    /// guard judged together, up to `last`, which holds it: the value before `first` goes back,
    /// whatever source each of them came from (they were judged as one; s50 review G1).
    pub fn revert_own_through(
        &mut self,
        first: u64,
        last: u64,
        source: Source,
        reason: &str,
    ) -> Result<ChangeReport, ChangeError> {
        self.revert_change(first, source, reason, Some(last), false)
    }

    /// `only_ours_through`: for the agent's own reverts, the latest change of the parameter the
    /// revert answers for (`id` itself, or the last of a chain the guard judged with it).
    /// `over_theirs`: an operator's revert writes over someone else's value too.
    fn revert_change(
        &mut self,
        id: u64,
        source: Source,
        reason: &str,
        only_ours_through: Option<u64>,
        over_theirs: bool,
    ) -> Result<ChangeReport, ChangeError> {
        let only_ours = only_ours_through.is_some();
        // An archived change is history like a live one: reverting it is the same request,
        // read from the archive (docs/journal.md, "Archiving").
        let intent = match self.journal.intent(id) {
            Some(i) => i.clone(),
            None => match self.journal.archived_intent(id) {
                Some(i) => i,
                None => return Err(self.journal.no_change_to_revert(id).into()),
            },
        };
        if let (false, IntentKind::Revert { of }) = (only_ours, &intent.kind) {
            return Err(JournalError::IsARevert {
                id,
                of: *of,
                name: intent.address.to_string(),
                value: intent.before.to_string(),
            }
            .into());
        }
        if !only_ours {
            if let Some(what) = self.took_no_effect(id) {
                return Err(JournalError::TookNoEffect { id, what }.into());
            }
        }
        // Its namespace by the inode it was changed in when the path no longer names it.
        let address = reach(&intent.address, &intent.key);
        if self.journal.before_this_boot(&intent) {
            // The reboot took its value away; what it found before is not this boot's to have
            // back, and this boot's own value stays.
            let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
            report.detail = Some(format!(
                "change {id} was made before the machine rebooted; the reboot undid it, and this \
                 boot's value stays"
            ));
            return Ok(report);
        }
        // Its namespace died since (a `gone` record of its key follows it: the agent's own
        // namespace, settled at a start): what it found there is not this namespace's to have
        // back (s55 story AW-3: `kpo revert ID` wrote the dead namespace's 64 into the new one,
        // KPO's last value settled with it, so nothing was left to compare with). A NIC's
        // device gone is said below, by its device.
        if !matches!(address.target, Target::Nic { .. }) {
            if let Some((why, at)) = self.journal.gone_after(&intent) {
                let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
                // Found then: the inode may have named others since (s61 story BY-4: "now
                // names" a namespace that had died in turn).
                report.detail = Some(format!(
                    "{why} (found at {}); nothing to put back",
                    crate::journal::format_ms(at)
                ));
                return Ok(report);
            }
        }
        if !only_ours && !over_theirs {
            if let Some((by, holder)) = self.undone_already(&intent, &address) {
                let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
                // `NOW -> OLD (now NOW)`, as the other skipped lines: the value alone read as the
                // kernel's (s56 story BA-8).
                let now = self.read(&address).ok();
                report.before = now.clone();
                report.read_back = now;
                report.detail = Some(match holder {
                    None => format!(
                        "#{by} undid #{id} already; nothing of it is left to take out (kpo \
                         revert {id} --force writes {} again; kpo revert --all puts the original \
                         back)",
                        intent.before
                    ),
                    Some(h) => format!(
                        "#{by} undid #{id} already; #{} by {} holds it now (kpo revert {} takes \
                         that out; kpo revert {id} --force writes {} again)",
                        h.id,
                        h.source.as_str(),
                        h.id,
                        intent.before
                    ),
                });
                return Ok(report);
            }
        }
        let ours = only_ours
            .then(|| self.journal.param_by_key(&intent.key))
            .flatten()
            .and_then(|p| p.last_applied.clone());
        if only_ours && ours.is_none() {
            // Handed back by `kpo resume`, or taken by a reboot: nothing in the kernel is KPO's
            // to take back, and writing `before` would overwrite whoever's value is there.
            let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
            report.detail =
                Some("KPO has no value of its own there now; nothing to take back".into());
            return Ok(report);
        }
        if let Some(why) = only_ours_through.and_then(|last| self.held_by_another(&intent, last)) {
            let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
            report.detail = Some(why);
            return Ok(report);
        }
        if let Some(report) = self.not_on_its_device(&address, &intent.before, &intent)? {
            return Ok(report);
        }
        let quarantine = if !only_ours && source == Source::Operator && !is_switch(&address) {
            self.advisors_value_held(&intent.key)
        } else {
            None
        };
        // An operator's revert leaves a value someone else wrote since KPO's last, unless told
        // to write over it (s52 storyAC AC-2: `kpo revert 1`, superseded long before, wrote 64
        // over the 300 a colleague had set by hand, without a word): a yielded parameter's
        // (`restore` asks, after its checks of the namespace, the deny-list and the kernel's
        // value), and a sysctl's that is not KPO's last. Only a sysctl moves by a writer alone
        // (a cpufreq attribute moves with its governor, a coalescing value with adaptive
        // moderation), and a journal that may have lost a change of KPO's cannot tell KPO's
        // value from someone else's.
        let leave_theirs = !only_ours && !over_theirs;
        // Its value still in the kernel (as KPO last read it back: a driver may round a write);
        // one that is not is someone else's, said below. One that is already the value this
        // revert would write is `unchanged` below, as any.
        let later = leave_theirs
            .then(|| self.held_by_a_later_operators_change(&intent))
            .flatten();
        if let Some((theirs, advisors)) = later {
            let last =
                (self.journal.param_by_key(&intent.key)).and_then(|p| p.last_applied.clone());
            let now = self.read(&address).ok();
            if now.is_some() && now == last && now.as_ref() != Some(&intent.before) {
                let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
                report.detail = Some(match advisors {
                    None => format!(
                        "#{id} no longer holds it: a later change {} does (#{}, {}), and its \
                         value stays (kpo revert {} takes that out; kpo revert {id} --force \
                         writes {} over it)",
                        whose_decision(&theirs),
                        theirs.id,
                        theirs.after,
                        theirs.id,
                        intent.before
                    ),
                    Some(h) => format!(
                        "#{id} no longer holds it: a later change {} (#{}, {}) was made since, \
                         and #{} by {} ({}) holds it now; writing {} would take out both (kpo \
                         revert {} puts back {}; kpo revert {id} --force writes {} over them)",
                        whose_decision(&theirs),
                        theirs.id,
                        theirs.after,
                        h.id,
                        h.source.as_str(),
                        h.after,
                        intent.before,
                        h.id,
                        h.before,
                        intent.before
                    ),
                });
                report.before = now.clone();
                report.read_back = now;
                report.theirs_left = true;
                return Ok(report);
            }
        }
        // A value a revert or the guard took out of the kernel and quarantined here is not put
        // back without --force: undoing an advisor's step back applied again the raise an
        // operator had just reverted, past its quarantine (s59 story BO-1: `kpo revert 11`
        // then `kpo revert 10`).
        if leave_theirs {
            if let Some(until) = self.quarantine_in_the_way(&intent, &address) {
                let now = self.read(&address).ok();
                let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
                report.detail = Some(format!(
                    "{} is quarantined here until {}: it was taken out (by the guard, or by an \
                     operator's revert of an advisor's change), and putting it back would apply \
                     it past the quarantine (kpo revert {id} --force writes it)",
                    intent.before,
                    crate::journal::format_ms(crate::clock::ms(until))
                ));
                report.before = now.clone();
                report.read_back = now;
                report.theirs_left = true;
                return Ok(report);
            }
        }
        let only_over = if leave_theirs {
            (self.journal.param_by_key(&intent.key))
                .filter(|p| p.unsettled.is_none())
                .filter(|_| address.kind() == crate::actuate::param::ParamKind::Sysctl)
                .and_then(|p| p.last_applied.clone())
        } else {
            ours
        };
        let mut report = self.restore(
            &address,
            &intent.before,
            source,
            reason,
            Some((id, intent.netns_cookie)),
            only_over,
            quarantine,
            leave_theirs,
        )?;
        if leave_theirs && report.theirs_left {
            if let Some(detail) = report.detail.as_mut() {
                detail.push_str(&format!(
                    " (kpo revert {id} --force writes {} over it)",
                    intent.before
                ));
            }
        }
        // Two operators reverting one change at once: the second finds the value back, and is
        // told by whose revert (s60 story BV-2: "the kernel already has this value" alone).
        if report.status == ChangeStatus::Unchanged && only_ours_through.is_none() {
            if let Some(by) = self.reverted_since(&intent) {
                report.detail = Some(format!(
                    "the kernel already has this value: #{by} undid #{id} already"
                ));
            }
        }
        Ok(report)
    }

    /// The latest revert of `intent` itself that took effect since it, in the live journal.
    fn reverted_since(&self, intent: &Intent) -> Option<u64> {
        let p = self.journal.param_by_key(&intent.key)?;
        (self.entries_of(&intent.key, p.original_id?).iter().rev())
            .find(|e| {
                e.kind == "revert"
                    && e.id > intent.id
                    && e.revert_of == Some(intent.id)
                    && took_effect(e).is_some()
            })
            .map(|e| e.id)
    }

    /// Why change `id` left nothing of its own in the kernel, if it did not: the kernel refused
    /// it, or it was put back at once. One whose put-back failed too left KPO's value (`left`),
    /// which a revert takes out.
    fn took_no_effect(&self, id: u64) -> Option<String> {
        match self.journal.any_outcome(id)? {
            // Reconciled at a start, the kernel may hold anything: a person's value, or KPO's
            // write stored in another form (s55 story AT-3: "the kernel kept its value" was
            // said of a value that was neither).
            Outcome::Failed {
                error,
                left: None,
                reconciled: true,
            } => Some(format!(
                "it was reconciled as failed at a start ({error}), and what the kernel has is \
                 not known to be KPO's"
            )),
            Outcome::Failed {
                error, left: None, ..
            } => Some(format!(
                "it failed ({error}), and the kernel kept its value"
            )),
            Outcome::Reverted { why, .. } => {
                Some(format!("it was put back as soon as it was written ({why})"))
            }
            _ => None,
        }
    }

    /// The value an advisor's change holds the parameter at (the change KPO's value in the
    /// kernel is from, if an advisor's: rules, LLM, optimizer), with the words of its quarantine:
    /// what an operator's `kpo revert` takes out, which the advisor, seeing the kernel as it was
    /// before, would propose again once its cooldown passed, undoing the operator's decision.
    /// The revert of a change since superseded takes out the later one's value.
    fn advisors_value_held(&self, key: &str) -> Option<(Value, String)> {
        let holder = self.journal.intent(self.holder_now(key)?)?;
        matches!(
            holder.source,
            Source::Rules | Source::Llm | Source::Optimizer
        )
        .then(|| {
            (
                holder.after.clone(),
                format!(
                    "{OPERATORS_QUARANTINE} ({} by {}, #{})",
                    holder.after,
                    holder.source.as_str(),
                    holder.id
                ),
            )
        })
    }

    /// Quarantines `value`, which an operator's revert is about to take out of the kernel, as
    /// the guard's reverts do (`guard.quarantine`, doubled when quarantined again within a day;
    /// one in force already is not lengthened by a revert tried again). Journaled before the
    /// revert's intent: a kill between the two leaves a quarantined value in place, which no
    /// advisor proposes anyway, never an undo the advisors may take back. Returns the words for
    /// the revert's report.
    fn quarantine_taken_out(
        &mut self,
        address: &ParamAddress,
        (value, why): (Value, String),
    ) -> Result<String, ChangeError> {
        let now = SystemTime::now();
        let in_force = |journal: &Journal| {
            journal
                .context(address, &value, now)
                .quarantined_until
                .filter(|until| *until > now)
        };
        // The end named is the journal's own (its clock's millisecond), as `kpo status` and the
        // refusals name it, not `now` plus the length.
        let until = match in_force(&self.journal) {
            Some(until) => until,
            None => {
                let base = self.policy.guard.quarantine;
                let length = self.journal.quarantine(address, &value, base, &why)?;
                in_force(&self.journal).unwrap_or(now + length)
            }
        };
        Ok(quarantine_words(&value, until))
    }

    /// Why a revert of `intent` would undo someone else's decision, if it would: the parameter is
    /// yielded to a person, or a later change of another source holds it (an operator's `kpo
    /// apply` after an optimizer trial). A later change of the same source is the same
    /// decision-maker's, as is a value a revert put back (no change holds it).
    /// `through`: the latest change the revert answers for (see [`ChangePath::revert_own_through`]).
    fn held_by_another(&self, intent: &Intent, through: u64) -> Option<String> {
        let p = self.journal.param_by_key(&intent.key)?;
        if p.yielded.is_some() {
            return Some("yielded to a person; left as it is".into());
        }
        let holder = self.journal.intent(p.holding?)?;
        let answered_for = holder.id == intent.id || holder.id == through;
        (!answered_for && holder.source != intent.source).then(|| {
            format!(
                "change #{} by {} holds it since; left as it is",
                holder.id,
                holder.source.as_str()
            )
        })
    }

    /// The operator's change made after `intent` that putting `intent`'s value before back
    /// would take out, if one would: a colleague's `kpo apply` since that holds the parameter
    /// now, which `kpo revert` of the older change would otherwise take out without a word, its
    /// value being KPO's (s52 story AG-6); or one an advisor's later change replaced (not undone
    /// by a revert), with that advisor's change, which holds it now (s59 story BO-2: `kpo revert`
    /// of the rules' first raise put the original back over the rules' second and, with it, the
    /// colleague's value between them). An advisor's later value alone is taken out (and
    /// quarantined): the operator's revert overrules advisors, not people, and an advisor's
    /// change an operator approved is a person's decision as much as their `kpo apply` (s59
    /// review2 R2-5: a colleague's revert of the rules' earlier raise took an approved value out
    /// and quarantined it, where the same value by `kpo apply` would have been left).
    fn held_by_a_later_operators_change(
        &self,
        intent: &Intent,
    ) -> Option<(Intent, Option<Intent>)> {
        let holder = self.journal.intent(self.holder_now(&intent.key)?)?;
        if holder.id <= intent.id || holder.kind != IntentKind::Change {
            return None;
        }
        if holder.a_persons_decision() {
            return Some((holder.clone(), None));
        }
        let p = self.journal.param_by_key(&intent.key)?;
        let entries = self.entries_of(&intent.key, p.original_id?);
        let undone = crate::journal::reverted_by(&entries);
        // One that wrote the very value `intent` replaced loses nothing to it (s59 review2 R2-4).
        let between = entries.iter().rev().find(|e| {
            e.kind == "change"
                && e.after != intent.before
                && (intent.id + 1..holder.id).contains(&e.id)
                && (self.journal.intent(e.id)).is_some_and(Intent::a_persons_decision)
                && took_effect(e).is_some()
                && !undone.contains_key(&e.id)
        })?;
        Some((
            self.journal.intent(between.id)?.clone(),
            Some(holder.clone()),
        ))
    }

    /// The change whose value KPO's last write left in the kernel: the one holding the
    /// parameter, or, after a revert that took effect (which holds nothing: the journal's
    /// `holding` ends there), the change whose value that revert put back: the latest of the
    /// parameter's changes since its original was taken (this boot's, this namespace's) from
    /// before the one it undid that took effect, was not undone by another revert, and set the
    /// value the revert wrote. The guard's revert of the rules' second raise leaves their first
    /// in the kernel, and an operator's `kpo revert --all` after it took that out
    /// unquarantined, for the rules to apply again at once (s56 story AZ-1). The live journal's
    /// changes only.
    fn holder_now(&self, key: &str) -> Option<u64> {
        let p = self.journal.param_by_key(key)?;
        if p.holding.is_some() || p.yielded.is_some() {
            return p.holding;
        }
        // Put back to its original (after `kpo revert --all`, say): no change's value, and the
        // journal is not read through for it.
        if p.last_applied.is_none() || p.last_applied == p.original {
            return None;
        }
        let since = p.original_id?;
        let entries = self.entries_of(key, since);
        let last = entries.iter().rev().find(|e| took_effect(e).is_some())?;
        let (Some(of), Some(value)) = (last.revert_of, took_effect(last)) else {
            return None;
        };
        // Still KPO's last value (a yield or a hand-back would have ended it).
        if last.kind != "revert" || p.last_applied.as_ref() != Some(&value) {
            return None;
        }
        let undone = crate::journal::reverted_by(&entries);
        entries
            .iter()
            .rev()
            .find(|c| {
                c.kind == "change"
                    && c.id < of
                    && took_effect(c).is_some()
                    && !undone.contains_key(&c.id)
            })
            .filter(|c| took_effect(c).as_ref() == Some(&value))
            .map(|c| c.id)
    }

    /// The end of a quarantine in force now of the value `intent` replaced, when putting it
    /// back would apply it past that: KPO's last value still in the kernel, not yielded, not the
    /// value already, and not the parameter's original (which `kpo revert --all` and `on_exit`
    /// put back as ever; s59 review2 R2-7). Anything else is `restore`'s to say (`unchanged`,
    /// yielded, someone else's value: review2 R2-1). In force by the policy's own rule (a
    /// quarantine from before the clock stepped back is over: review2 R2-6).
    fn quarantine_in_the_way(&self, intent: &Intent, address: &ParamAddress) -> Option<SystemTime> {
        let p = self.journal.param_by_key(&intent.key)?;
        if p.yielded.is_some() || p.original.as_ref() == Some(&intent.before) {
            return None;
        }
        let until = (self.journal)
            .context(address, &intent.before, SystemTime::now())
            .quarantined_until
            .filter(|until| *until > SystemTime::now())?;
        // Read only then: a revert reads the kernel once before its intent otherwise.
        let now = self.read(address).ok()?;
        (now != intent.before && p.last_applied.as_ref() == Some(&now)).then_some(until)
    }

    /// The live journal's entries of `key` from id `since` on.
    fn entries_of(&self, key: &str, since: u64) -> Vec<crate::journal::Entry> {
        (self.journal.entries().into_iter())
            .filter(|e| e.id >= since && e.key.as_deref() == Some(key))
            .collect()
    }

    /// The revert that took change `intent` out of the kernel, if one did and its value is not
    /// back: a revert of the parameter since that undid it (one of it or of an earlier change,
    /// or one that put the original back, as `kpo revert --all` does), while the kernel does not
    /// have the value before it (that is `unchanged`, as ever), and neither it nor an operator's
    /// change made between it and that revert holds the parameter (that one is left, below, as
    /// ever). With it, the
    /// later advisor's change that holds the parameter, if one does. Reverting it again would
    /// write back a value already taken out, past a pause, a quarantine and the bounds, as
    /// reverting that revert would (s56 story AZ-2: `kpo revert 2` after `kpo revert 2` and `kpo
    /// revert --all` wrote 64 -> 100 while paused; story BA-1: the same with a rules change made
    /// since). The live journal's changes only.
    fn undone_already(
        &self,
        intent: &Intent,
        address: &ParamAddress,
    ) -> Option<(u64, Option<Intent>)> {
        let p = self.journal.param_by_key(&intent.key)?;
        let original = p.original.clone();
        let last_applied = p.last_applied.clone();
        let by = (self.entries_of(&intent.key, p.original_id?).iter().rev())
            .find(|e| {
                e.kind == "revert"
                    && e.id > intent.id
                    && took_effect(e).is_some_and(|wrote| {
                        e.revert_of.is_some_and(|of| of <= intent.id) || Some(wrote) == original
                    })
            })?
            .id;
        let now = self.read(address).ok();
        if now.as_ref() == Some(&intent.before) {
            return None;
        }
        match self.holder_now(&intent.key) {
            None => Some((by, None)),
            Some(h) if h == intent.id => None,
            // An advisor's change holds it, or an operator's from before `intent`, whose value a
            // revert put back (s59 story BP-1: `kpo revert 3` again, after the reverts of #3 and
            // #2 had put the operator's #1 back, wrote #3's 48 over it, paused, once the
            // quarantine had ended), or an operator's made after the revert, over a value that
            // was no longer `intent`'s, while the kernel has it (s59 story BO-3: told that the
            // operator's change had replaced it, with `--force` offered and exit status 1, the
            // guard's revert unsaid). An operator's between the two, or one whose value someone
            // else's write replaced, is left below, as ever.
            Some(h) => {
                let holder = self.journal.intent(h)?;
                let operators_after = h > by && now.is_some() && now == last_applied;
                (matches!(
                    holder.source,
                    Source::Rules | Source::Llm | Source::Optimizer
                ) || (holder.source == Source::Operator && (h < intent.id || operators_after)))
                    .then(|| (by, Some(holder.clone())))
            }
        }
    }

    /// The journal keys with an intent not settled yet (an interrupted write: its value unknown).
    pub(super) fn keys_with_an_unsettled_intent(&self) -> std::collections::BTreeSet<String> {
        self.journal
            .incomplete()
            .into_iter()
            .map(|i| i.key)
            .collect()
    }

    /// Puts every parameter KPO changed back to its original value (the value before KPO first
    /// changed it), except those yielded to a person: `kpo revert --all`.
    ///
    /// Every intent records an original, even one whose write the kernel refused or that was put
    /// back: such a parameter still has the value KPO found, and a value written there since is
    /// someone else's, not KPO's to overwrite (and a change of KPO's from it starts a new
    /// original, that value). Only a parameter KPO's write took effect on, or whose interrupted
    /// write is not settled yet (its value unknown), is put back.
    pub fn revert_all(&mut self, reason: &str) -> Result<Vec<ChangeReport>, ChangeError> {
        let unsettled = self.keys_with_an_unsettled_intent();
        let all: Vec<ParamAddress> = self
            .journal
            .params()
            .filter(|p| p.original.is_some())
            .filter(|p| p.changed_by_kpo() || unsettled.contains(&p.key))
            .filter_map(ParamState::reach)
            .collect();
        // Every parameter has its report, what was done before a journal failure too.
        Ok(self
            .restore_originals(all, Source::Operator, reason, false)
            .unwrap_or_else(|mut stopped| {
                stopped.reports.append(&mut stopped.not_tried);
                stopped.reports
            }))
    }

    /// Puts these parameters back to their originals. With `only_ours`, each only while the
    /// kernel still has KPO's last value ([`ChangePath::revert_own`]): the agent's
    /// `on_exit = "revert"`, which is journaled as source `operator`.
    ///
    /// Switches (adaptive moderation) go last, after the values they govern: turned on first, they
    /// would refuse those writes. A cpufreq policy's two limits go in an order each write passes,
    /// and its governor and energy-performance preference in one the driver takes (the
    /// preference while the governor is not `performance`:
    /// [`crate::actuate::cpufreq::written_after_its_coupled_attr`]). A switch stays off while a
    /// value it governs was not put back (yielded to a person, left, failed): turned on, the NIC
    /// would move that value.
    ///
    /// A journal failure stops it ([`Stopped`]): every write is journaled first.
    pub fn restore_originals(
        &mut self,
        addresses: Vec<ParamAddress>,
        source: Source,
        reason: &str,
        only_ours: bool,
    ) -> Result<Vec<ChangeReport>, Stopped> {
        // A cpufreq policy's two limits in an order each write passes (as the optimizer's
        // trials do): the direction is from the kernel's value now to the original.
        let lowering: Vec<bool> = addresses
            .iter()
            .map(|a| {
                // Only cpufreq limits are ordered: nothing else is read (a namespace entered) for it.
                if a.kind() != crate::actuate::param::ParamKind::Cpufreq {
                    return false;
                }
                let original = self.journal.param_state(a).and_then(|s| s.original.clone());
                match (
                    self.read(a).ok().and_then(|v| v.as_int()),
                    original.and_then(|v| v.as_int()),
                ) {
                    (Some(now), Some(original)) => original < now,
                    _ => false,
                }
            })
            .collect();
        // A policy's governor and energy-performance preference in an order the driver takes:
        // by where the governor goes back to.
        let governors_to: Vec<(ParamAddress, Value)> = addresses
            .iter()
            .filter(|a| a.kind() == crate::actuate::param::ParamKind::Cpufreq)
            .filter(|a| a.name == crate::actuate::cpufreq::GOVERNOR)
            .filter_map(|a| {
                let original = self.journal.param_state(a)?.original.clone()?;
                Some((a.clone(), original))
            })
            .collect();
        let mut ordered: Vec<(ParamAddress, bool)> = addresses.into_iter().zip(lowering).collect();
        ordered.sort_by_key(|(a, lowering)| {
            // The governor of a preference's policy, or the governor itself.
            let governor = crate::actuate::cpufreq::governor_of(a).unwrap_or_else(|| a.clone());
            let governor_to = governors_to
                .iter()
                .find(|(g, _)| *g == governor)
                .map(|(_, to)| to);
            (
                is_switch(a),
                crate::actuate::cpufreq::written_later(a, *lowering),
                crate::actuate::cpufreq::written_after_its_coupled_attr(a, governor_to),
            )
        });
        let addresses: Vec<ParamAddress> = ordered.into_iter().map(|(a, _)| a).collect();
        let mut out: Vec<ChangeReport> = Vec::new();
        let mut addresses = addresses.into_iter();
        while let Some(address) = addresses.next() {
            let original = self
                .journal
                .param_state(&address)
                .and_then(|s| s.original.clone());
            match self.restore_original(&address, source, reason, only_ours, &out) {
                Ok(report) => out.push(report),
                Err(error) => {
                    // Nothing more is written without its record; what was done stays reported.
                    out.push(self.stopped_at(&address, original, &error));
                    let not_tried = addresses.map(|a| self.not_tried(&a, &error)).collect();
                    return Err(Stopped {
                        reports: out,
                        not_tried,
                        error,
                    });
                }
            }
        }
        self.try_failed_again(out, source, reason, only_ours)
    }

    /// The reverts of [`ChangePath::restore_originals`] that failed, tried again while a pass puts
    /// something back: the kernel may have refused one for another key's value that a revert after
    /// it put back (a local port range below `ip_unprivileged_port_start`, which the same pass
    /// lowered later: s62 story CD-1). Which keys the kernel relates is not known beforehand, as
    /// it is for cpufreq's two limits. Each retry's report replaces the one before, naming the
    /// first try in its detail; the journal keeps every try.
    fn try_failed_again(
        &mut self,
        mut out: Vec<ChangeReport>,
        source: Source,
        reason: &str,
        only_ours: bool,
    ) -> Result<Vec<ChangeReport>, Stopped> {
        let failed = |out: &[ChangeReport]| -> Vec<usize> {
            (0..out.len())
                .filter(|&i| out[i].status == ChangeStatus::Failed && out[i].journal_id.is_some())
                .collect()
        };
        let mut took = out.iter().any(|r| r.status == ChangeStatus::Reverted);
        let mut again = failed(&out);
        // Each one's first try, as its report named it: the retries' reports name it too.
        let mut first_tries: std::collections::BTreeMap<usize, String> = Default::default();
        while took && !again.is_empty() {
            took = false;
            for i in again {
                let address = out[i].address.clone();
                let first = first_tries.entry(i).or_insert_with(|| {
                    let id = (out[i].journal_id)
                        .map(|id| format!(" (#{id})"))
                        .unwrap_or_default();
                    let why = (out[i].refusal.as_ref().map(ToString::to_string))
                        .or(out[i].detail.clone())
                        .unwrap_or_default();
                    format!("the first try{id} failed: {why}")
                });
                let first = first.clone();
                let mut report =
                    match self.restore_original(&address, source, reason, only_ours, &out) {
                        Ok(report) => report,
                        Err(error) => {
                            let original = (self.journal.param_state(&address))
                                .and_then(|s| s.original.clone());
                            out[i] = self.stopped_at(&address, original, &error);
                            return Err(Stopped {
                                reports: out,
                                not_tried: Vec::new(),
                                error,
                            });
                        }
                    };
                took |= report.status == ChangeStatus::Reverted;
                // Its own words first (a quarantine, someone else's write), then the first try's.
                let own = (report.refusal.as_ref().map(ToString::to_string))
                    .or(report.detail.take())
                    .map(|d| format!("{d}; "))
                    .unwrap_or_default();
                report.detail = Some(format!(
                    "{own}tried again after the others had been put back: {first}"
                ));
                out[i] = report;
            }
            again = failed(&out);
        }
        Ok(out)
    }

    /// One parameter of [`ChangePath::restore_originals`]; `out`: the reports of those before it.
    fn restore_original(
        &mut self,
        address: &ParamAddress,
        source: Source,
        reason: &str,
        only_ours: bool,
        out: &[ChangeReport],
    ) -> Result<ChangeReport, ChangeError> {
        let address = address.clone();
        // Not left out without a word: `kpo revert --all` would say there was nothing to do.
        let Some((state, original)) = self
            .journal
            .param_state(&address)
            .and_then(|s| Some((s.clone(), s.original.clone()?)))
        else {
            let mut r =
                ChangeReport::new(&address, &Value::Word(String::new()), ChangeStatus::Failed);
            r.detail = Some(format!(
                "the journal has no original for {} (key {}); not put back",
                address,
                target_key(&address)
            ));
            return Ok(r);
        };
        let skipped = |why: String| {
            let mut r = ChangeReport::new(&address, &original, ChangeStatus::Skipped);
            r.detail = Some(why);
            r
        };
        if self.settle_if_namespace_gone(&address)? {
            return Ok(skipped(
                "its network namespace is gone (the inode names another one now); nothing to put back"
                    .into(),
            ));
        }
        if state.yielded.is_some() {
            // The value that stays, as the other skipped reports show it: the report's own
            // value is the original that was not written.
            // The parameter named as `kpo resume` takes it (s52 storyAH F6: a literal PARAM).
            let mut r = skipped(format!(
                "yielded to an administrator; their value stays (kpo resume {address} hands it \
                 back)"
            ));
            // And as the value before, as `kpo revert ID`'s yielded skip shows it: `256 -> 64
            // (now 256)`, not `64 (now 256)`, which read as if 64 were written (s52 storyAC
            // AC-7).
            r.read_back = self.read(&address).ok();
            r.before = r.read_back.clone();
            return Ok(r);
        }
        // The original is the value of the device its first change was made on; with that
        // change archived, the device of the latest (not read from the archive: a pass over
        // every parameter would read it through for each). Asked before a switch is read by
        // its name: the name may name another device now.
        let first = state
            .original_id
            .and_then(|id| self.journal.intent(id))
            .or_else(|| {
                self.journal.records().iter().rev().find_map(|r| match r {
                    crate::journal::Record::Intent(i) if i.key == state.key => Some(i),
                    _ => None,
                })
            })
            .cloned();
        if let Some(first) = first {
            if let Some(report) = self.not_on_its_device(&address, &original, &first)? {
                return Ok(report);
            }
        }
        if is_switch(&address) && !self.read(&address).is_ok_and(|now| now == original) {
            use crate::actuate::coalesce::switch_governs;
            // A governed value this pass did not put back, or one outside it that is a
            // person's (yielded) or that KPO still holds away from its original (its
            // `on_exit` keeps it).
            let in_pass = out.iter().find(|r| {
                switch_governs(&address, &r.address)
                    && !matches!(r.status, ChangeStatus::Reverted | ChangeStatus::Unchanged)
            });
            let passed: Vec<String> = out.iter().map(|r| ChangePath::key(&r.address)).collect();
            let held = in_pass.map(|r| r.address.to_string()).or_else(|| {
                self.journal
                    .params()
                    // Only what the switch governs is looked at (and read).
                    .filter(|p| {
                        p.address
                            .as_ref()
                            .is_some_and(|a| switch_governs(&address, a))
                    })
                    .filter(|p| {
                        let kept = !passed.contains(&p.key);
                        p.yielded.is_some()
                            || (kept
                                && p.last_applied.is_some()
                                && p.last_applied != p.original)
                            // Handed back by `kpo resume` with a person's value in it.
                            || (kept
                                && p.last_applied.is_none()
                                && p.original.as_ref().is_some_and(|original| {
                                    // Unreadable counts as held: turned on, the switch
                                    // would move whatever is there.
                                    p.address.as_ref().is_some_and(|a| {
                                        self.read(a).map_or(true, |now| &now != original)
                                    })
                                }))
                    })
                    .find_map(|p| p.address.as_ref().map(ToString::to_string))
            });
            if let Some(value) = held {
                return Ok(skipped(format!(
                    "stays as it is: {value} was not put back, and turned on this would move it"
                )));
            }
        }
        let only_over = if only_ours {
            state.last_applied.clone()
        } else {
            None
        };
        let mut report = self.restore(
            &address,
            &original,
            source,
            reason,
            // What it undoes: the change the kernel has from KPO, not the first since the
            // original, which a revert may have undone already (s46 storyK K3: "undoes #1" after
            // #1 was reverted and #14 applied), also after a revert that put back an earlier
            // change's value (s64 story CP-2: on_exit said "undoes #1" where `kpo revert --all`
            // said #2).
            self.holder_now(&state.key).or(state.original_id).map(|id| {
                let cookie = self.journal.intent(id).and_then(|i| i.netns_cookie);
                (id, cookie)
            }),
            only_over,
            // As `kpo revert ID`: the advisor's value taken out is quarantined, or the advisor
            // puts it back at its next chance (s52 storyAC AC-1: the rules, a second later). Not
            // a switch's: no advisor proposes it (s52 review L10).
            (!only_ours && source == Source::Operator && !is_switch(&address))
                .then(|| self.advisors_value_held(&state.key))
                .flatten(),
            // Yielded parameters are left before (said so there).
            false,
        )?;
        // An operator's revert writes whatever the kernel has, but says so when that was not
        // KPO's value: a person's write the agent was down for (or had no window to see) is not
        // yielded to yet, and would go without a word (s47 storyM M-2).
        let theirs = match (&state.last_applied, &report.before) {
            // KPO's last value, a change's or a revert's (s52 storyAG AG-2: after a revert, a
            // person's value was written over without the note).
            (Some(ours), Some(before)) => {
                report.status == ChangeStatus::Reverted
                    && state.unsettled.is_none()
                    && ours != before
                    // Only a sysctl moves by a writer alone: a cpufreq attribute moves with its
                    // governor, a coalescing value with adaptive moderation (s49 review2 N6).
                    && address.kind() == crate::actuate::param::ParamKind::Sysctl
            }
            _ => false,
        };
        if theirs {
            let note = format!(
                "the kernel had {}, not the {} KPO last applied: someone else's write, most \
                 likely, replaced (a running agent would have yielded to it at its next window)",
                report
                    .before
                    .as_ref()
                    .map_or(String::new(), ToString::to_string),
                state
                    .last_applied
                    .as_ref()
                    .map_or(String::new(), ToString::to_string),
            );
            report.detail = Some(match report.detail.take() {
                Some(d) => format!("{d}; {note}"),
                None => note,
            });
        }
        Ok(report)
    }

    /// The report of the parameter a journal failure stopped `restore_originals` on: its
    /// `change` event says what became of the write; the kernel says whether it was put back.
    fn stopped_at(
        &self,
        address: &ParamAddress,
        original: Option<Value>,
        error: &ChangeError,
    ) -> ChangeReport {
        let original = original.unwrap_or(Value::Word(String::new()));
        let now = self.read(address).ok();
        let mut r = ChangeReport::new(address, &original, ChangeStatus::Failed);
        if now.as_ref() == Some(&original) {
            // The revert was written and its outcome could not be recorded.
            r.status = ChangeStatus::Reverted;
            r.read_back = now;
            r.detail = Some(format!(
                "put back; the journal could not record it ({error}): the next start records \
                 it, as done, from what the kernel has"
            ));
        } else {
            r.before = now;
            r.detail = Some(format!("not put back: {error}"));
        }
        r
    }

    /// The report of a parameter `restore_originals` did not try after a journal failure.
    fn not_tried(&self, address: &ParamAddress, error: &ChangeError) -> ChangeReport {
        let original = self
            .journal
            .param_state(address)
            .and_then(|s| s.original.clone())
            .unwrap_or(Value::Word(String::new()));
        let mut r = ChangeReport::new(address, &original, ChangeStatus::Failed);
        r.before = self.read(address).ok();
        r.detail = Some(format!(
            "not put back: not tried, the journal failed before it ({error}){}",
            remedy_unless_said(error, "it")
        ));
        r
    }

    /// Writes `value` back as a revert; `of`: the change it undoes, and that change's network
    /// namespace cookie (read by the caller, from the archive for an archived change);
    /// `only_over`: only while the kernel has this (KPO's own) value; `quarantine`: an advisor's
    /// value to quarantine if the write is about to take it out; `leave_yielded`: not over a
    /// parameter yielded to a person. A value left as someone else's is `Skipped` with
    /// `theirs_left`.
    #[allow(clippy::too_many_arguments)]
    fn restore(
        &mut self,
        address: &ParamAddress,
        value: &Value,
        source: Source,
        reason: &str,
        of: Option<(u64, Option<u64>)>,
        only_over: Option<Value>,
        quarantine: Option<(Value, String)>,
        leave_yielded: bool,
    ) -> Result<ChangeReport, ChangeError> {
        let mut report = ChangeReport::new(address, value, ChangeStatus::Refused);
        if let Decision::Refused(r) = self.policy.decide_revert(address) {
            report.refusal = Some(r);
            return Ok(report);
        }
        let p = Proposal {
            address: address.clone(),
            value: value.clone(),
            source,
            reason: reason.to_string(),
        };
        let mut actuator = match self.actuators.open(address) {
            Ok(a) => a,
            Err(e) if self.namespace_gone_for_certain(address, &target_key(address)) => {
                // Its values died with it: nothing is left to put back, now or later.
                report.status = ChangeStatus::Skipped;
                report.detail = Some(format!("{NAMESPACE_GONE}; nothing to put back ({e})"));
                return Ok(report);
            }
            Err(e) => return Ok(self.fail_early(&p, None, e.to_string(), report)),
        };
        // What is put back belongs to the namespace it was taken from: not into one that has
        // its inode now (the journal settled already, or settles now, or the change undone was
        // made in another namespace than the one there now).
        let cookie = actuator.netns_cookie();
        let replaced = self.namespace_replaced(address, cookie)?;
        let made_elsewhere = of
            .and_then(|(_, cookie)| cookie)
            .zip(cookie)
            .is_some_and(|(then, now)| then != now);
        if replaced || made_elsewhere {
            report.status = ChangeStatus::Skipped;
            report.detail = Some(
                "its network namespace is gone (the inode names another one now); nothing to put back"
                    .into(),
            );
            return Ok(report);
        }
        let before = match actuator.read() {
            Ok(v) => v,
            Err(e) => return Ok(self.fail_early(&p, None, e.to_string(), report)),
        };
        if &before == value {
            report.status = ChangeStatus::Unchanged;
            report.before = Some(before);
            report.detail = Some("the kernel already has this value".into());
            return Ok(report);
        }
        if let Ok(Some((switch, _))) = actuator.switch_in_the_way() {
            // A revert never turns a switch off: with adaptive moderation on, the NIC sets it.
            report.status = ChangeStatus::Skipped;
            report.before = Some(before);
            report.detail = Some(format!(
                "{switch} is on and sets it; a revert does not turn it off"
            ));
            return Ok(report);
        }
        if leave_yielded && (self.journal.param_state(address)).is_some_and(|p| p.yielded.is_some())
        {
            report.status = ChangeStatus::Skipped;
            report.detail = Some("yielded to an administrator; their value stays".into());
            report.read_back = Some(before.clone());
            report.before = Some(before);
            report.theirs_left = true;
            return Ok(report);
        }
        let only_over_before = only_over.is_some();
        if let Some(ours) = only_over.filter(|ours| ours != &before) {
            report.status = ChangeStatus::Skipped;
            let unsettled = self
                .journal
                .param_state(address)
                .is_some_and(|p| p.unsettled.is_some());
            report.detail = Some(if unsettled {
                // Left as it is all the same: it may be a person's value, which is not KPO's to
                // overwrite. But not said to be theirs: it may be KPO's own.
                format!(
                    "the kernel has {before}, not the {ours} KPO last applied as far as the \
                     journal knows; a damaged journal line may have lost a later change of KPO's \
                     own here, so {before} may be KPO's value as well as someone else's: left as \
                     it is ({} puts {value} back)",
                    self.put_back_command(value, of.map(|(id, _)| id))
                )
            } else if crate::actuate::cpufreq::governor_of(address).is_some()
                && self.moved_by_the_kernel(address)
            {
                // Nobody's value: written now, it would be refused (EBUSY).
                format!(
                    "the kernel has {before}, not the {ours} KPO applied: the cpufreq driver holds \
                     it at {before} under the performance governor KPO set, and gives {ours} \
                     back when the governor leaves performance; left as it is"
                )
            } else {
                report.theirs_left = true;
                format!(
                    "the kernel has {before}, not the {ours} KPO applied: someone else changed \
                     it, and their value stays"
                )
            });
            report.read_back = Some(before.clone());
            report.before = Some(before);
            return Ok(report);
        }
        if let Some(why) = self.crosses_the_other_limit(address, value) {
            return self.refuse(&p, Some(&before), Refusal::Invalid { why }, report);
        }
        // Only a value the write is about to take out: a revert that ends here writes nothing.
        let quarantined = match quarantine.filter(|(held, _)| held == &before) {
            Some(held) => Some(self.quarantine_taken_out(address, held)?),
            None => None,
        };
        // The revert's `reverted` event says it too: a log pipeline otherwise cannot tell why
        // an advisor stops proposing the value until its first refusal (s52 story AG-7).
        if let Some(words) = &quarantined {
            report.detail = Some(words.clone());
        }
        let mut report = self.execute(
            actuator,
            address,
            &before,
            value,
            source,
            reason,
            IntentKind::Revert {
                of: of.map(|(id, _)| id),
            },
            report,
            None,
            only_over_before,
        )?;
        if let Some(words) = quarantined {
            report.detail = Some(match report.detail.take() {
                Some(detail) if detail.contains(&words) => detail,
                Some(detail) => format!("{detail}; {words}"),
                None => words,
            });
        }
        Ok(report)
    }

    /// Why putting `value` back into a cpufreq frequency limit would cross the other limit of its
    /// policy as it is now, if it would, naming what holds the other limit there as far as the
    /// journal knows. The kernel had `value` with another value of the other limit: written now,
    /// it would be taken by moving that one (the actuator refuses it too, after the intent; here
    /// it is refused before, with the change to undo first).
    pub(super) fn crosses_the_other_limit(
        &self,
        address: &ParamAddress,
        value: &Value,
    ) -> Option<String> {
        use crate::actuate::cpufreq::{crossing_effect, crossing_why, other_limit};
        let other = other_limit(address)?;
        let khz = i128::from(value.as_int()?);
        // Unreadable: the actuator's own check, which reads it again, decides.
        let now = i128::from(self.read(&other).ok()?.as_int()?);
        let why = crossing_why(&address.name, khz, now)?;
        let state = self.journal.param_state(&other);
        let holder = match state {
            Some(s) if s.yielded.is_some() => {
                format!(" (a person's value: {} is yielded to them)", other.name)
            }
            Some(s) => s
                .holding
                .map(|id| format!(" (change #{id} set it: kpo revert {id} first)"))
                .unwrap_or_default(),
            None => String::new(),
        };
        Some(format!(
            "putting back {value}: {why}{holder}; {}",
            crossing_effect(&address.name, khz, now)
        ))
    }

    /// The operator's command that writes `value` back whatever the kernel has: `kpo revert ID`
    /// of change `of` when the value it replaced is `value` (its intent live or archived), else
    /// `kpo revert --all` (which puts every parameter's original back).
    fn put_back_command(&self, value: &Value, of: Option<u64>) -> String {
        let replaced = |id: u64| {
            let before = match self.journal.intent(id) {
                Some(i) => Some(i.before.clone()),
                None => self.journal.archived_intent(id).map(|i| i.before),
            };
            before.as_ref() == Some(value)
        };
        match of.filter(|&id| replaced(id)) {
            Some(id) => format!("kpo revert {id}"),
            None => "kpo revert --all, with every other parameter's original,".into(),
        }
    }
}

/// Who decided a person's change, as a skipped revert names it: an operator by `kpo apply`, or
/// by approving an advisor's advice (`kpo approve`), which is as much their decision.
fn whose_decision(i: &Intent) -> String {
    if i.approved {
        format!("by {} that an operator approved", i.source.as_str())
    } else {
        "by an operator".into()
    }
}

/// What a write of KPO's left in the kernel, if it took effect: a change applied (or one whose
/// put-back failed and left it), a revert not put back after a wrong read-back.
fn took_effect(e: &crate::journal::Entry) -> Option<Value> {
    match (e.kind.as_str(), e.status.as_str()) {
        ("change", "applied" | "failed") => e.read_back.clone(),
        ("revert", "reverted" | "applied") => {
            e.read_back.clone().filter(|v| Some(v) != e.before.as_ref())
        }
        _ => None,
    }
}
