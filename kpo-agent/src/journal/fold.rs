//! The state the records say, folded in order (see [`Folded`]).
use super::*;

impl Folded {
    /// An empty state for boot `boot`.
    fn new(boot: &Boot) -> Self {
        Folded {
            next_id: 1,
            boot: boot.id.clone(),
            boot_started_ms: boot.started_ms,
            ..Default::default()
        }
    }

    /// Folds these records in order, then settles what predates this boot (see
    /// [`Journal::open_in_boot`]).
    pub(super) fn of(records: Vec<Record>, boot: &Boot) -> Self {
        let mut st = Folded::new(boot);
        for r in records {
            st.fold(r);
        }
        for p in st.params.values_mut() {
            if p.predates(&boot.id, boot.started_ms) {
                p.settle_for_new_boot();
            }
        }
        st
    }

    /// The reason of a `gone` record of intent `i`'s key that follows it, if one does: its
    /// target went away after the change began (the agent's own namespace, settled at start by
    /// [`super::Journal::forget_dead_agent_namespace`]), so the kernel's value now says nothing
    /// of the change. An intent moved to the archive is older than every live record.
    pub fn gone_after(&self, i: &Intent) -> Option<(&str, u64)> {
        let from = self
            .records
            .iter()
            .position(|r| matches!(r, Record::Intent(x) if x.id == i.id))
            .map_or(0, |at| at + 1);
        self.records[from..].iter().find_map(|r| match r {
            Record::Gone { key, why, ts_ms } if key == &i.key => Some((why.as_str(), *ts_ms)),
            _ => None,
        })
    }

    /// Whether a later change or revert of the same parameter at the same target that set a
    /// value (applied, or reverted) follows intent `i`: the kernel's value is then that one's.
    pub fn superseded(&self, i: &Intent) -> bool {
        self.superseded_at(i.id, &i.key)
    }

    /// [`Folded::superseded`] for change `id` of `key`.
    fn superseded_at(&self, id: u64, key: &str) -> bool {
        self.later_changes(id, key)
            .any(|(id, later)| match self.outcomes.get(&id) {
                Some((_, Outcome::Applied { .. })) => true,
                // A revert that took; not a change put back after a wrong read-back, nor a revert
                // whose own write was put back (the kernel kept the value before them; journaled
                // so before such a revert became `failed`).
                Some((_, Outcome::Reverted { read_back, .. })) => {
                    matches!(later.kind, IntentKind::Revert { .. })
                        && read_back.as_ref() != Some(&later.before)
                }
                // Its put-back failed: its write is what the kernel has.
                Some((_, Outcome::Failed { left: Some(_), .. })) => true,
                _ => false,
            })
    }

    /// The changes of `key` after change `id`, oldest first: their intents, or the copies their
    /// outcomes carry where an intent's line was lost.
    fn later_changes<'a>(
        &'a self,
        id: u64,
        key: &'a str,
    ) -> impl Iterator<Item = (u64, IntentCopy)> + 'a {
        let kept = self
            .intents
            .range(id + 1..)
            .map(|(id, i)| (*id, IntentCopy::of(i)));
        let lost = self
            .lost_intents
            .range(id + 1..)
            .map(|(id, c)| (*id, c.clone()));
        let mut all: Vec<_> = kept.chain(lost).filter(|(_, c)| c.key == key).collect();
        all.sort_by_key(|(id, _)| *id);
        all.into_iter()
    }

    /// The id of the change of the same parameter right after intent `i`, if any: the change
    /// [`Folded::next_change`] reads.
    pub(super) fn next_change_id(&self, i: &Intent) -> Option<u64> {
        self.later_changes(i.id, &i.key).next().map(|(id, _)| id)
    }

    /// The change of the same parameter right after intent `i`, if any, with the NIC device it
    /// was made on where its intent's line is kept and names one.
    pub(super) fn next_change(
        &self,
        i: &Intent,
    ) -> Option<(IntentCopy, Option<crate::actuate::coalesce::DeviceSeen>)> {
        self.later_changes(i.id, &i.key)
            .next()
            .map(|(id, c)| (c, self.intents.get(&id).and_then(|i| i.device)))
    }

    /// Whether intent `i` was made before the machine last rebooted ([`Journal::before_this_boot`]).
    pub(super) fn before_this_boot(&self, i: &Intent) -> bool {
        match (&i.boot, &self.boot) {
            (Some(then), Some(now)) => then != now,
            (None, _) => self.boot_started_ms.is_some_and(|s| i.ts_ms < s),
            (Some(_), None) => false,
        }
    }

    /// Per key (or only `only`), the current unbroken run of `source`'s changes in this boot
    /// ([`Journal::first_of_run`]): where its first intent is in `records`, and where the record
    /// that ended what came before it is (another source's change that took effect, one of an
    /// earlier boot, a yield, a hand-back, a namespace gone), if any. One pass over the records.
    pub(crate) fn runs(&self, source: Source, only: Option<&str>) -> BTreeMap<&str, Run> {
        let took_effect = |i: &Intent| {
            matches!(
                self.outcomes.get(&i.id),
                Some((
                    _,
                    Outcome::Applied { .. } | Outcome::Failed { left: Some(_), .. }
                ))
            )
        };
        // Per key: the run's first record, and the latest record that broke a run.
        let mut at: BTreeMap<&str, (Option<usize>, Option<usize>)> = BTreeMap::new();
        for (index, record) in self.records.iter().enumerate() {
            let (key, extends) = match record {
                Record::Intent(i) if took_effect(i) => (
                    i.key.as_str(),
                    i.source == source && !self.before_this_boot(i),
                ),
                Record::Yield { key, .. }
                | Record::Manage { key, .. }
                | Record::Gone { key, .. } => (key.as_str(), false),
                _ => continue,
            };
            if only.is_some_and(|k| k != key) {
                continue;
            }
            let (first, broken) = at.entry(key).or_default();
            if extends {
                first.get_or_insert(index);
            } else {
                *first = None;
                *broken = Some(index);
            }
        }
        at.into_iter()
            .filter_map(|(key, (first, broken))| {
                Some((
                    key,
                    Run {
                        first: first?,
                        broken,
                    },
                ))
            })
            .collect()
    }

    /// Intents without an outcome: the process died between intent and outcome.
    pub fn incomplete(&self) -> Vec<Intent> {
        self.intents
            .values()
            .filter(|i| !self.outcomes.contains_key(&i.id))
            .cloned()
            .collect()
    }

    /// Whether `records[index]` is also in the archive: before the latest [`Record::Archived`],
    /// and not one of the changes it holds back.
    pub(super) fn is_archived(&self, index: usize) -> bool {
        let r = &self.records[index];
        match &self.marker {
            Some((at, held)) => {
                index < *at
                    && !matches!(r, Record::Archived { .. })
                    && r.id().is_none_or(|id| !held.contains(&id))
            }
            None => false,
        }
    }

    /// The live records `kpo journal` lists from here (intents and refusals not also in the
    /// archive, and the outcomes that stand for an intent whose line was lost), in order.
    pub(super) fn live_listed(&self) -> impl Iterator<Item = &Record> + '_ {
        self.records
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                let lost = r.can_stand_for_its_intent()
                    && r.id().is_some_and(|id| !self.intents.contains_key(&id));
                (r.is_listed() || lost) && !self.is_archived(*i)
            })
            .map(|(_, r)| r)
    }

    pub(super) fn fold(&mut self, r: Record) {
        if let Some(id) = r.id().filter(|&id| id >= MAX_ID) {
            self.warnings.push(format!(
                "a record with id {id} is set aside: KPO counts ids from 1, and one this large \
                 is not KPO's (nor would it leave an id to hand out after it)"
            ));
            return;
        }
        match &r {
            Record::Intent(i) => {
                self.next_id = self.next_id.max(i.id + 1);
                // Only this boot's start is known: for an intent of another boot, legacy intents
                // before it are left as they are.
                let started = self.boot_started_ms.filter(|_| i.boot == self.boot);
                let p = self.param(&i.key);
                if i.boot.is_some() && p.predates(&i.boot, started) {
                    p.settle_for_new_boot();
                }
                if i.boot.is_some() {
                    p.boot = i.boot.clone();
                }
                // An intent in a namespace with another cookie than the journal's: the earlier
                // one is gone, and this intent starts what is known of the new one.
                let replaced =
                    matches!((p.netns_cookie, i.netns_cookie), (Some(a), Some(b)) if a != b);
                if replaced {
                    p.settle_for_gone_namespace();
                }
                if i.netns_cookie.is_some() {
                    p.netns_cookie = i.netns_cookie;
                }
                p.last_intent_ms = Some(i.ts_ms);
                let first = p.original.is_none() || p.original_id.is_some_and(|o| o > i.id);
                let afresh =
                    !replaced && !first && self.starts_a_new_original(i.id, &IntentCopy::of(i));
                let p = self.param(&i.key);
                // The earliest intent's word on the original wins; in a new namespace, its own
                // `before` (an `original` written without the check may be the dead one's);
                // and the word of one that started a new original (none of KPO's writes had
                // taken effect since the one before was taken).
                if replaced {
                    p.original = Some(i.before.clone());
                    p.original_id = Some(i.id);
                } else if first || afresh {
                    p.original = Some(i.original.clone().unwrap_or_else(|| i.before.clone()));
                    p.original_id = Some(i.id);
                }
                p.address = Some(i.address.clone());
                self.intents.insert(i.id, i.clone());
            }
            Record::Outcome {
                id,
                ts_ms,
                outcome,
                intent,
            } => {
                // Its intent's line may have been lost to damage; its id must still not be
                // handed out again.
                self.next_id = self.next_id.max(id + 1);
                match (self.intents.get(id), intent) {
                    (Some(i), _) => {
                        let copy = IntentCopy::of(i);
                        self.fold_outcome(*id, *ts_ms, outcome, &copy);
                    }
                    (None, Some(copy)) => {
                        self.adopt_lost_intent(*id, copy);
                        self.fold_outcome(*id, *ts_ms, outcome, copy);
                    }
                    (None, None) => {
                        if !matches!(outcome, Outcome::Failed { left: None, .. }) {
                            self.keyless.push(*id);
                        }
                    }
                }
                self.outcomes.insert(*id, (*ts_ms, outcome.clone()));
            }
            Record::ReadBack { id, value, .. } => {
                self.next_id = self.next_id.max(id + 1);
                self.read_backs.insert(*id, value.clone());
            }
            Record::Refused { id, .. } => self.next_id = self.next_id.max(id + 1),
            Record::Pause { ts_ms, by } => self.paused = Some((by.clone(), *ts_ms)),
            Record::Resume { .. } => self.paused = None,
            Record::Yield {
                ts_ms,
                key,
                address,
                by,
                ..
            } => {
                let p = self.param(key);
                p.yielded = Some((by.clone(), *ts_ms));
                p.holding = None;
                p.unsettled = None;
                p.address.get_or_insert(address.clone());
            }
            Record::Manage { key, .. } => {
                // Handed back with the person's value in the kernel: KPO's last value is no
                // longer there to compare with (the next window would yield again) nor to
                // revert on exit. KPO manages it again from its next change.
                let p = self.param(key);
                p.yielded = None;
                p.last_applied = None;
                p.holding = None;
                p.unsettled = None;
            }
            Record::Gone { key, .. } => self.param(key).settle_for_gone_namespace(),
            Record::Damaged { id, key, why, .. } => {
                if let Some(id) = id.filter(|&id| id < MAX_ID) {
                    self.next_id = self.next_id.max(id + 1);
                    // An id kept from being handed out again has no intent left.
                    if self.intents.contains_key(&id) && !self.outcomes.contains_key(&id) {
                        self.lost_outcomes.insert(id, why.clone());
                    }
                }
                if let Some(key) = key {
                    self.param(key).unsettled = Some(why.clone());
                }
            }
            Record::Archived { changes, held, .. } => {
                for (key, n) in changes {
                    self.param(key).archived_changes += n;
                }
                self.marker = Some((self.records.len(), held.iter().copied().collect()));
            }
            Record::Quarantine {
                ts_ms,
                key,
                value,
                until_ms,
                earlier,
                ..
            } => {
                let p = self.param(key);
                let replaced =
                    (p.quarantine.iter().find(|q| &q.value == value)).and_then(|q| q.doubles);
                p.quarantine.retain(|q| &q.value != value);
                let lift = until_ms == ts_ms;
                p.quarantine.push(Quarantined {
                    value: value.clone(),
                    since_ms: *ts_ms,
                    until_ms: *until_ms,
                    doubles: if lift {
                        *earlier
                    } else {
                        Some(Span {
                            since_ms: *ts_ms,
                            until_ms: *until_ms,
                        })
                    },
                    replaced,
                });
            }
        }
        self.records.push(r);
    }

    /// What the outcome of change `id` (`of`) does to its parameter's state. An outcome written
    /// after later changes of the parameter took effect (reconciled at a start after its own
    /// line was lost) counts among the changes, but the value and the holder stay the later
    /// one's: that is what the kernel has.
    fn fold_outcome(&mut self, id: u64, ts_ms: u64, outcome: &Outcome, of: &IntentCopy) {
        let late = self.superseded_at(id, &of.key);
        let p = self.param(&of.key);
        let count = |list: &mut Vec<(u64, u64)>| {
            let at = list.partition_point(|(other, _)| *other < id);
            list.insert(at, (id, ts_ms));
        };
        match outcome {
            Outcome::Applied { read_back, .. } => {
                count(&mut p.applied);
                if !late {
                    p.last_applied = Some(read_back.clone());
                    p.holding = Some(id);
                    p.unsettled = None;
                }
            }
            Outcome::Reverted { read_back, .. } => {
                if of.kind == IntentKind::Change {
                    count(&mut p.put_back);
                }
                if late {
                    return;
                }
                // A change put back after a wrong read-back restored what the kernel had: KPO's
                // only if KPO held the parameter then (else a person's later write would be
                // "overwriting KPO's value").
                let ours = matches!(of.kind, IntentKind::Revert { .. }) || p.holding.is_some();
                if ours {
                    p.last_applied = read_back.clone().or(p.last_applied.take());
                }
                // A revert that took effect; not one whose write read back wrong and was itself
                // put back, which leaves the change it undid in place (a journal written before
                // such a revert became `failed` says so).
                let put_back = read_back.as_ref() == Some(&of.before);
                if matches!(of.kind, IntentKind::Revert { .. }) && !put_back {
                    p.holding = None;
                    p.unsettled = None;
                }
            }
            Outcome::Failed { left: None, .. } => {}
            Outcome::Failed {
                left: Some(left), ..
            } => {
                // KPO's write is in the kernel, rounded: a change, it holds the parameter (a
                // revert puts the value before back); a revert, the change it undid is still
                // not gone.
                if matches!(of.kind, IntentKind::Change) {
                    count(&mut p.applied);
                }
                if late {
                    return;
                }
                p.last_applied = Some(left.clone());
                p.unsettled = None;
                if matches!(of.kind, IntentKind::Change) {
                    p.holding = Some(id);
                }
            }
        }
    }

    /// Whether the original of `key` is still only the value KPO found there: none of KPO's
    /// writes took effect since it was taken (each change since was refused, failed, or was put
    /// back after a wrong read-back; none is left without an outcome; no damaged line may have
    /// held one). A value written there since is then someone else's, and a change of KPO's
    /// from it starts a new original ([`Folded::original_for`]): the value its first write that
    /// takes effect replaces is what `kpo revert --all` puts back, not the older one. Once a
    /// write of KPO's took effect, the original stays (until a reboot or the end of its
    /// namespace).
    fn original_only_found(&self, key: &str) -> bool {
        let Some(p) = self.params.get(key) else {
            return false;
        };
        let (Some(_), Some(since)) = (&p.original, p.original_id) else {
            return false;
        };
        !p.changed_by_kpo()
            && p.holding.is_none()
            && p.unsettled.is_none()
            && !self
                .intents
                .range(since..)
                .any(|(id, i)| i.key == key && !self.outcomes.contains_key(id))
    }

    /// The original a new intent of `key` records: its own `before` for a change from another
    /// value than an original KPO only found ([`Folded::original_only_found`]; reverts never
    /// start one), else the parameter's original (its `before` when there is none).
    pub(super) fn original_for(&self, key: &str, before: &Value, kind: &IntentKind) -> Value {
        match self.params.get(key).and_then(|p| p.original.as_ref()) {
            Some(original)
                if !(*kind == IntentKind::Change
                    && original != before
                    && self.original_only_found(key)) =>
            {
                original.clone()
            }
            _ => before.clone(),
        }
    }

    /// Whether intent `c` of change `id`, not the parameter's first, replaces its original with
    /// the one it records: it records another one ([`Folded::original_for`] gave it its own
    /// `before`), and the records before it agree that KPO only found the one there
    /// ([`Folded::original_only_found`]). Where they do not (a write of KPO's took effect
    /// since), the earliest original stays. An intent written after a change whose lines were
    /// both lost to damage may record the new original that change started, which the records
    /// left cannot show: its word is taken, so the original is not lost with the lines.
    fn starts_a_new_original(&self, id: u64, c: &IntentCopy) -> bool {
        let Some(p) = self.params.get(&c.key) else {
            return false;
        };
        let said = c.original.as_ref().unwrap_or(&c.before);
        p.original.as_ref().is_some_and(|o| o != said)
            && p.original_id.is_some_and(|since| since < id)
            && self.original_only_found(&c.key)
    }

    /// An outcome whose intent's line was lost: the copy it carries stands for the intent in
    /// the parameter's state (its original, if no intent of it is left or it started a new one,
    /// and its address).
    fn adopt_lost_intent(&mut self, id: u64, copy: &IntentCopy) {
        let afresh = self.starts_a_new_original(id, copy);
        self.lost_intents.insert(id, copy.clone());
        let p = self.param(&copy.key);
        if afresh || p.original.is_none() {
            p.original = Some(copy.original.clone().unwrap_or_else(|| copy.before.clone()));
            p.original_id = Some(id);
        }
        if p.address.is_none() {
            p.address = copy.key.parse().ok();
        }
    }

    /// What a new quarantine of `value` at `key` doubles ([`quarantine_length`]).
    pub(super) fn doubled_quarantine(&self, key: &str, value: &Value) -> Option<Span> {
        let p = self.params.get(key)?;
        p.quarantine.iter().find(|q| &q.value == value)?.doubles
    }

    /// The value guard revert `i` (at `records[at]`) took away, as the guard quarantines it, if
    /// no quarantine of it at that parameter follows the revert, nor the end of its namespace.
    pub(super) fn quarantine_missing(&self, at: usize, i: &Intent) -> Option<Value> {
        let IntentKind::Revert { of: Some(of) } = &i.kind else {
            return None;
        };
        if i.source != Source::Guard {
            return None;
        }
        // The value the change asked for (or, archived, the value the revert replaced).
        let value = match (self.intents.get(of), self.lost_intents.get(of)) {
            (Some(change), _) => change.after.clone(),
            (None, Some(copy)) => copy.after.clone(),
            (None, None) => i.before.clone(),
        };
        let settled = self.records[at + 1..].iter().any(|later| match later {
            Record::Quarantine { key, value: v, .. } => key == &i.key && v == &value,
            Record::Gone { key, .. } => key == &i.key,
            _ => false,
        });
        (!settled).then_some(value)
    }

    /// The guard's reverts (done, or interrupted and not reconciled yet) with no quarantine of
    /// their value after them, that no earlier open has seen: not before the latest `archived`
    /// record. An earlier open (the agent's start, or an operator command's) journaled their
    /// quarantine, ended or not ([`Journal::restore_guard_quarantines`]); if one is missing now,
    /// a pass dropped it, a day or more after it ended, and it is not to come back (judged by a
    /// `guard.quarantine` raised since, it would).
    pub(super) fn unquarantined_reverts(&self) -> std::collections::BTreeSet<u64> {
        self.records
            .iter()
            .enumerate()
            .filter(|(at, _)| !self.is_archived(*at))
            .filter_map(|(at, r)| match r {
                Record::Intent(i) => self.quarantine_missing(at, i).map(|_| i.id),
                _ => None,
            })
            .collect()
    }

    /// The [`Record::Damaged`] records of what the damaged lines just dropped still show, each
    /// with its warning, for the rewrite that drops them ([`store::load_repairing`]): the
    /// rewritten journal no longer has the lines, and the next open must not hand out their ids
    /// again, nor take a parameter whose state they may have held for settled. Judged on the
    /// journal as found (this state), not after archiving: a pass moves changes to the archive,
    /// and a change whose records it moved would look lost, or an outcome that names no
    /// parameter would be gone from [`Folded::keyless`].
    pub(super) fn damage_records(&self, damaged: &[(usize, Vec<u8>)]) -> Vec<(Record, String)> {
        let seen: Vec<(usize, Option<u64>, Option<String>)> = damaged
            .iter()
            .map(|(line, bytes)| {
                let id = store::lenient_number(bytes, "id").filter(|&id| id < MAX_ID);
                (*line, id, store::lenient_text(bytes, "key"))
            })
            .collect();
        let mut out = Vec::new();
        let highest = seen
            .iter()
            .filter_map(|(line, id, _)| Some(((*id)?, *line)))
            .max();
        if let Some((id, line)) = highest.filter(|(id, _)| *id >= self.next_id) {
            let why = format!(
                "journal.log line {line}, damaged, named id {id}: it is not handed out again"
            );
            let record = Record::Damaged {
                ts_ms: now_ms(),
                id: Some(id),
                key: None,
                why: why.clone(),
            };
            out.push((record, why));
        }
        for (line, bytes) in damaged {
            let Some(i) = store::lenient_number(bytes, "id").and_then(|id| self.intents.get(&id))
            else {
                continue;
            };
            let outcome = store::lenient_text(bytes, "type").as_deref() == Some("outcome");
            if !outcome || self.outcomes.contains_key(&i.id) {
                continue;
            }
            let why = format!("its outcome's line (journal.log line {line}) was damaged");
            let warning = format!(
                "journal #{} ({}): {why}; it is reconciled from what the kernel has",
                i.id, i.key
            );
            let record = Record::Damaged {
                ts_ms: now_ms(),
                id: Some(i.id),
                key: None,
                why,
            };
            out.push((record, warning));
        }
        out.extend(self.pause_kept_from(damaged));
        for (key, why) in self.unsettled_by(&seen) {
            let warning = format!("{key}: {why}");
            let record = Record::Damaged {
                ts_ms: now_ms(),
                id: None,
                key: Some(key),
                why,
            };
            out.push((record, warning));
        }
        out
    }

    /// A `kpo pause` whose line was damaged, when the records left do not keep a pause in force:
    /// dropped, it would lift the pause without a word and let the advisors change the kernel
    /// again. Kept instead (a pause is the safe side; `kpo resume` lifts it), unless a resume,
    /// intact or damaged, is dated after it. A pause whose time cannot be read is taken for the
    /// latest record, a damaged resume whose time cannot be read for none.
    fn pause_kept_from(&self, damaged: &[(usize, Vec<u8>)]) -> Option<(Record, String)> {
        if self.paused.is_some() {
            return None;
        }
        let at = |bytes: &[u8]| store::lenient_number(bytes, "ts_ms").unwrap_or(u64::MAX);
        let of_type = |t: &'static str| {
            damaged
                .iter()
                .filter(move |(_, bytes)| store::lenient_text(bytes, "type").as_deref() == Some(t))
        };
        let (line, bytes) = of_type("pause").max_by_key(|(_, bytes)| at(bytes))?;
        let paused_at = at(bytes);
        let resumed_at = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Resume { ts_ms, .. } => Some(*ts_ms),
                _ => None,
            })
            .chain(of_type("resume").filter_map(|(_, bytes)| store::lenient_number(bytes, "ts_ms")))
            .max();
        if resumed_at.is_some_and(|resumed| resumed > paused_at) {
            return None;
        }
        let why = format!(
            "journal.log line {line}, damaged, was a kpo pause: the pause is kept in force \
             (kpo resume lifts it)"
        );
        let record = Record::Pause {
            ts_ms: if paused_at == u64::MAX {
                now_ms()
            } else {
                paused_at
            },
            by: format!("a damaged pause record (journal.log line {line}), kept"),
        };
        Some((record, why))
    }

    /// The parameters whose state the damaged lines `seen` (line, id, key) may have held and the
    /// records that survived do not settle, with why: a change named by a damaged line none of
    /// whose records is left (an outcome with its copy of the intent settles it; an intent left
    /// settles it through reconciliation), and the parameter of each outcome that set a value
    /// without its intent or a copy of it (written before outcomes carried one): the damaged
    /// line with its id names it, or else every parameter a damaged line names, or else, none
    /// being readable, every one with a value of KPO's. Only parameters the value check would
    /// compare (a last applied value, not yielded).
    fn unsettled_by(&self, seen: &[(usize, Option<u64>, Option<String>)]) -> Vec<(String, String)> {
        let st = self;
        let mut keys: BTreeMap<String, usize> = BTreeMap::new();
        for (line, id, key) in seen {
            if let (Some(id), Some(key)) = (id, key) {
                let left = st.intents.contains_key(id) || st.lost_intents.contains_key(id);
                if !left {
                    keys.entry(key.clone()).or_insert(*line);
                }
            }
        }
        for id in &st.keyless {
            if seen.iter().any(|(_, i, k)| *i == Some(*id) && k.is_some()) {
                continue;
            }
            let named: Vec<(String, usize)> = seen
                .iter()
                .filter_map(|(line, _, key)| Some((key.clone()?, *line)))
                .collect();
            if named.is_empty() {
                let first = seen.first().map_or(0, |(line, _, _)| *line);
                keys.extend(st.params.keys().map(|k| (k.clone(), first)));
            } else {
                keys.extend(named);
            }
        }
        keys.into_iter()
            .filter(|(key, _)| {
                st.params.get(key).is_some_and(|p| {
                    p.last_applied.is_some() && p.yielded.is_none() && p.unsettled.is_none()
                })
            })
            .map(|(key, line)| {
                let why = format!(
                    "journal.log line {line}, damaged, may have held a change of KPO's here that \
                     the journal lost: a value other than KPO's last known one is not taken for \
                     someone else's change until KPO's next change of it"
                );
                (key, why)
            })
            .collect()
    }

    fn param(&mut self, key: &str) -> &mut ParamState {
        self.params
            .entry(key.to_string())
            .or_insert_with(|| ParamState {
                key: key.to_string(),
                ..Default::default()
            })
    }
}
