//! The approval desk: what becomes of each recommendation after merging, the pending approvals
//! (created, refreshed, superseded, expired, cleared, approved, rejected), and the history
//! `kpo explain` reads. Every state change is durable ([`ApprovalStore`]) before it is reported.
use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use super::{
    merge::merge, normalize_id, store::ApprovalStore, webhook::Again, webhook::Outcomes,
    webhook::Payload, webhook::Webhook, ApprovalError, ApprovalEvent, ApprovalItem, ApprovalState,
    ApproveOutcome, Done, Explained, HistoryEntry, NotAskedEvent, SetAsideEvent,
};
use crate::{
    actuate::{
        param::{ParamAddress, Value},
        ActuateError,
    },
    advise::recommendation::{Recommendation, Source},
    change::{ChangePath, ChangeReport, ChangeStatus},
    control::ControlError,
    journal::{format_ms, now_ms, target_key, Journal, JournalError},
    output::events::Event,
    policy::{ApprovalSettings, Context, Decision, Proposal, Refusal},
};

/// The detail of a [`Done::UnderWay`] entry, for a reader who finds one.
const UNDER_WAY: &str = "its change was being made: what was done replaces this entry once the \
     change path returns, or at the next start from the journal if the agent stopped first";

/// What considering a batch produced: the events in order, the changes applied (for the guard to
/// watch), the proposals the policy refused, with why (for their advisor to know), and those the
/// journal could not record or whose watch the guard could not write (nothing was written: their
/// advisor is to give them again).
#[derive(Debug, Default)]
pub struct Considered {
    pub events: Vec<Event>,
    pub applied: Vec<ChangeReport>,
    pub refused: Vec<(Proposal, Refusal)>,
    pub unjournaled: Vec<Proposal>,
}

pub struct Desk {
    store: ApprovalStore,
    settings: ApprovalSettings,
    /// `kpo run --recommend-only`: named as the reason an approval is held.
    recommend_only: bool,
    /// The CLI's desk, while the agent is down ([`Desk::open_offline`]): what it resolves is
    /// stored unannounced, for the agent's next start to announce.
    offline: bool,
    webhook: Option<Webhook>,
    /// What became of the webhook's notifications, over every URL this run posted to.
    webhook_outcomes: Outcomes,
    /// `--socket` and `--state-dir` for the commands a notification names ([`Desk::set_command_paths`]).
    command_flags: String,
    host: String,
    /// Consecutive windows in which a pending approval's advice was not made again. In memory:
    /// after a restart every pending approval starts again from 0.
    unseen: BTreeMap<String, u32>,
    /// Pending approvals whose advice was made since the last window closed.
    seen: BTreeSet<String>,
    /// The targets (journal keys) the LLM was offered in the consultations it answered since
    /// the last window closed. It advises only when consulted (every `llm.every_windows` windows
    /// at most, `llm.min_interval` apart), and only on what it is offered (a namespace's
    /// parameter while it has listeners, at most 24), so only an answer to a consultation that
    /// offered an approval's target without repeating it counts against that approval.
    llm_answered: BTreeSet<String>,
    /// Advice for an application made lately, by its situation ([`advice_key`]), with when it
    /// was last made (ms): what the webhook was told, or would have been ([`Desk::advise`]).
    advised: BTreeMap<String, u64>,
    /// Events not yet taken by the caller.
    events: Vec<Event>,
    /// Approvals whose end was stored still marked unannounced and whose event (and post, with a
    /// webhook) has since been queued: marked announced at the next window or when the desk is
    /// dropped ([`Desk::mark_what_was_announced`]), after the loop has handed the event to the
    /// sink. Marked in the same breath as storing the end, a kill between the two would lose
    /// the announcement for good (s38 chaos F1).
    announcing: BTreeSet<String>,
    /// Whether the last history entry could not be recorded: said once when the store starts
    /// to fail, and once when it records again, not at every window.
    history_failing: bool,
}

/// A stop the agent survives to the end (SIGTERM, a failure) announced what it resolved last;
/// a kill leaves it for the next start.
impl Drop for Desk {
    fn drop(&mut self) {
        self.mark_what_was_announced();
    }
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk").field("store", &self.store).finish()
    }
}

impl Desk {
    /// Opens the store in the journal's state directory (under its lock), for the agent: what
    /// the CLI resolved while it was down is announced ([`Desk::announce_what_the_cli_resolved`]).
    pub fn open(
        journal: &Journal,
        settings: ApprovalSettings,
        recommend_only: bool,
    ) -> Result<Desk, JournalError> {
        Self::open_as(journal, settings, recommend_only, false)
    }

    /// [`Desk::open`] for the CLI while the agent is down: no event stream or webhook hears what
    /// it resolves, so each end is stored unannounced, for the agent's next start.
    pub fn open_offline(
        journal: &Journal,
        settings: ApprovalSettings,
    ) -> Result<Desk, JournalError> {
        Self::open_as(journal, settings, false, true)
    }

    fn open_as(
        journal: &Journal,
        settings: ApprovalSettings,
        recommend_only: bool,
        offline: bool,
    ) -> Result<Desk, JournalError> {
        let mut desk = Desk {
            store: ApprovalStore::open(journal, settings.expire_after)?,
            settings,
            recommend_only,
            offline,
            webhook: None,
            webhook_outcomes: Outcomes::default(),
            host: crate::output::events::hostname(),
            command_flags: String::new(),
            unseen: BTreeMap::new(),
            seen: BTreeSet::new(),
            llm_answered: BTreeSet::new(),
            advised: BTreeMap::new(),
            events: Vec::new(),
            announcing: BTreeSet::new(),
            history_failing: false,
        };
        if !offline {
            desk.announce_what_the_cli_resolved();
        }
        desk.mark_approved_what_the_journal_applied(journal);
        desk.settle_what_a_stop_left_under_way(journal);
        desk.remember_advice_made_lately();
        Ok(desk)
    }

    /// The approvals the CLI resolved while the agent was down (approved, rejected, or expired
    /// by any command that read them) are in the agent's event stream from its start, as those
    /// it resolves itself are. Without a webhook that is all there is to tell, and each is
    /// marked announced; with one, [`Desk::post_ends`] posts them after the pending ones' repeats.
    fn announce_what_the_cli_resolved(&mut self) {
        let unannounced: Vec<ApprovalItem> = self.store.unannounced().cloned().collect();
        let (pending, ended): (Vec<_>, Vec<_>) = unannounced
            .into_iter()
            .partition(|i| i.state == ApprovalState::Pending);
        // Made by an agent killed before its event was out; the webhook's start repeats every
        // pending approval, this one included.
        for item in pending {
            info!(
                "approval {} required: {} = {} ({}) (announced now: the agent that made it \
                 stopped before it could)",
                item.id, item.parameter, item.value, item.reason
            );
            self.announcing.insert(item.id.clone());
            self.events.push(Event::ApprovalRequired(ApprovalEvent {
                approval: item,
                refresh: Some(false),
            }));
        }
        for item in ended {
            info!(
                "approval {}: {} (announced now: it ended while the agent was down, or before \
                 the agent that ended it could announce it)",
                item.id,
                item.state.describe()
            );
            if self.settings.webhook.is_none() {
                self.announcing.insert(item.id.clone());
            }
            self.events.push(Event::ApprovalResolved(ApprovalEvent {
                approval: item,
                refresh: None,
            }));
        }
    }

    /// The approvals resolved where no webhook heard of it (by the CLI while the agent was down,
    /// or by an agent that stopped before announcing it), for [`Desk::post_ends`].
    fn ends_nobody_heard(&self) -> Vec<ApprovalItem> {
        self.store
            .unannounced()
            .filter(|i| i.state != ApprovalState::Pending)
            .cloned()
            .collect()
    }

    /// Posts each of `ended`, then marks it announced, durably, at the next window
    /// ([`Desk::mark_what_was_announced`]), so that a later start does not post it again. A crash
    /// before that posts it twice, as a timed-out POST may arrive twice: a receiver de-duplicates
    /// on `approval.id` and the event. Marked once queued, not once delivered: a post still
    /// retrying when the agent stops is lost, as every queued notification is (the queue is in
    /// memory; docs/approvals.md).
    fn post_ends(&mut self, ended: Vec<ApprovalItem>) {
        for item in ended {
            self.post(Payload::new(
                "approval_resolved",
                &self.host,
                &item,
                &self.command_flags,
            ));
            self.announcing.insert(item.id.clone());
        }
    }

    /// Marks announced, durably, the approvals whose event (and post) went out since the last
    /// call: by now the loop has handed their events to the event sink. Not while an event is
    /// still untaken (a start that failed before its loop ran): it would be marked unheard.
    fn mark_what_was_announced(&mut self) {
        if !self.events.is_empty() {
            return;
        }
        for id in std::mem::take(&mut self.announcing) {
            self.mark_announced(&id);
        }
    }

    fn mark_announced(&mut self, id: &str) {
        if let Err(e) = self.store.mark_announced(id) {
            warn!(
                "approvals: {id} was announced, but that could not be recorded ({e}); the next \
                 start announces it again"
            );
        }
    }

    /// The advice (for applications, and the LLM's suggestions) that the history holds from less than `expire_after` ago
    /// counts as made ([`Desk::advise`]): the rules' latches are in memory, so a restarted
    /// agent advises again at once where the situation holds, and that must not post the same
    /// advice again (a crash loop would post it at every start). Advice is not state that waits
    /// for someone, so unlike a pending approval it is not announced again at a start either.
    fn remember_advice_made_lately(&mut self) {
        let now = now_ms();
        let bound = self.settings.expire_after.as_millis() as u64;
        let made: Vec<(String, u64)> = self
            .store
            .history()
            .filter(|h| h.done == Done::Advice && !h.recommendation.is_change())
            .filter(|h| crate::clock::runs(h.ts_ms, bound, now))
            .map(|h| (advice_key(&h.recommendation), h.ts_ms))
            .collect();
        for (key, at) in made {
            let last = self.advised.entry(key).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// An approval is applied (journaled) before it is marked approved: a crash or a failed
    /// write between the two leaves it pending for a change already made, to be announced again
    /// and approved twice. The journal's change says who approved it: it is marked so now.
    fn mark_approved_what_the_journal_applied(&mut self, journal: &Journal) {
        let pending: Vec<ApprovalItem> = self.store.pending().cloned().collect();
        if pending.is_empty() {
            return;
        }
        let entries = journal.entries();
        for item in pending {
            let marker = format!(" ({}): ", item.id);
            let applied = entries.iter().rev().find_map(|e| {
                let by = e.reason.strip_prefix("approved by ")?;
                let (by, _) = by.split_once(&marker)?;
                // Not `reverted`: a change put back after a wrong read-back left the kernel's
                // value as it was, and the live path keeps such an approval pending.
                let made = e.kind == "change"
                    && e.status == "applied"
                    && e.address == item.parameter
                    && e.after == item.value;
                made.then(|| (by.to_string(), e.id))
            });
            let Some((by, journal_id)) = applied else {
                continue;
            };
            let id = item.id.clone();
            let approved = ApprovalState::Approved {
                by,
                journal_id: Some(journal_id),
                status: ChangeStatus::Applied,
            };
            if let Err(e) = self.resolve(item, approved) {
                warn!("approvals: {id} was applied (journal #{journal_id}) but is still not marked approved: {e}");
            }
        }
    }

    /// A recommendation still [`Done::UnderWay`] was being applied when its agent was killed:
    /// what was done is the journal's change for it, the first for its parameter by its advisor
    /// since, once reconciled; with none, nothing was written (an advisor's refusal is not
    /// journaled either). One the journal still has incomplete (a CLI reading the state
    /// directory before the agent's next start reconciles it) stays under way.
    fn settle_what_a_stop_left_under_way(&mut self, journal: &Journal) {
        let under_way: Vec<HistoryEntry> = self
            .store
            .history()
            .filter(|h| h.done == Done::UnderWay)
            .cloned()
            .collect();
        if under_way.is_empty() {
            return;
        }
        let entries = journal.entries();
        for mut h in under_way {
            let rec = &h.recommendation;
            let source: crate::policy::Source = rec.source.into();
            // The first of its advisor's for the parameter since: the entry was written just
            // before the path was asked. Not by value, which the path may have journaled in
            // another form (an LLM's list of words as integers; s49 review L1).
            let change = entries.iter().find(|e| {
                e.kind == "change"
                    && e.ts_ms >= h.ts_ms
                    && e.address == rec.parameter
                    && e.source == source
            });
            match change {
                Some(e) if e.status == "incomplete" => continue,
                Some(e) => {
                    h.done = if e.status == "applied" {
                        Done::Applied
                    } else {
                        Done::Failed
                    };
                    h.journal_id = Some(e.id);
                    let what = e
                        .detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default();
                    h.detail = Some(format!(
                        "the agent stopped before recording how this change ended; the journal has it {}{what}",
                        e.status
                    ));
                }
                None => {
                    h.done = Done::Failed;
                    h.detail = Some(
                        "the agent stopped before this change was journaled: nothing was written"
                            .into(),
                    );
                }
            }
            info!(
                "approvals: {} for {}: {} (settled at start)",
                h.recommendation.id,
                h.recommendation.parameter,
                h.detail.as_deref().unwrap_or_default()
            );
            self.remember(h);
        }
    }

    /// A reloaded policy's `[approvals]`: pending approvals expire and clear by the new settings
    /// from now on; a new webhook URL is posted every pending approval again (its receiver has
    /// not heard of them), and no URL stops the posting.
    pub fn set_settings(&mut self, settings: ApprovalSettings) {
        self.store.set_rejection_in_force(settings.expire_after);
        let before = std::mem::replace(&mut self.settings, settings).webhook;
        if before == self.settings.webhook {
            // The same receiver: what is queued for it stays, and the next try looks for the
            // user now named. What is pending is posted again (s59 review R1-3): a receiver
            // refused for its user until now never heard of it; one that did sees a repeat.
            let user = self.settings.webhook_user.clone();
            if let Some(webhook) = &self.webhook {
                let change = webhook.set_receiver_user(user);
                if matches!(change, super::webhook::ReceiverUser::Changed(_)) {
                    self.post_pending_again(Again::WebhookUserChanged);
                }
            }
            return;
        }
        if let Some(old) = self.webhook.take() {
            old.stop();
        }
        if let Some(url) = self.settings.webhook.clone() {
            // The off and on lines show the scheme, host and port only: alike for a new path.
            let shown = super::webhook::shown_url(&url);
            if before.as_deref().map(super::webhook::shown_url) == Some(shown.clone()) {
                info!(url = %shown, "approval webhook: the reloaded policy changed the URL's path, query, user name or password (not shown: they may hold a token)");
            }
            self.start_webhook_for(url, Again::WebhookChanged);
        }
    }

    /// At the agent's stop, after its last window and `on_exit`: the webhook's queue is given
    /// `within` to be delivered ([`Webhook::finish`]).
    pub async fn finish_webhook(&mut self, within: std::time::Duration) {
        if let Some(webhook) = self.webhook.take() {
            webhook.finish(within).await;
        }
    }

    /// Starts posting to `url` at the agent's start ([`Desk::set_webhook`]), counting in
    /// [`Desk::webhook_outcomes`].
    pub fn start_webhook(&mut self, url: String) {
        self.start_webhook_for(url, Again::AgentStarted);
    }

    fn start_webhook_for(&mut self, url: String, why: Again) {
        match Webhook::spawn(
            url,
            self.webhook_outcomes.clone(),
            self.settings.webhook_user.clone(),
        ) {
            Ok(w) => self.set_webhook_for(w, why),
            Err(e) => warn!("approval webhook off: {e}"),
        }
    }

    /// What became of the webhook's notifications (`kpo_approval_webhook_notifications_total`),
    /// counted from the desk's opening whatever URLs it posted to.
    pub fn webhook_outcomes(&self) -> &Outcomes {
        &self.webhook_outcomes
    }

    /// What a notification's `kpo approve ID` needs to reach this agent, or its state directory
    /// while it is down: its socket and state directory where they are not the defaults (without
    /// them the command would reach no agent, or another state directory where `ID` is another
    /// approval). Set before the webhook, whose first posts repeat what is pending.
    pub fn set_command_paths(&mut self, socket: &std::path::Path, state_dir: &std::path::Path) {
        let mut flags = String::new();
        for (flag, path, default) in [
            ("--socket", socket, crate::api::DEFAULT_SOCKET),
            ("--state-dir", state_dir, crate::journal::DEFAULT_STATE_DIR),
        ] {
            if path != std::path::Path::new(default) {
                let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                flags.push_str(&format!(" {flag} {}", shell_word(&path.to_string_lossy())));
            }
        }
        self.command_flags = flags;
    }

    /// Approvals required and resolved are posted here from now on. Called at the agent's start:
    /// approvals whose time ran out while the agent was down are expired (and that is posted),
    /// and every approval still pending is announced again (`repeat`), since its first
    /// notification may have been queued by an agent that stopped before posting it, or given
    /// up on while the receiver was down.
    pub fn set_webhook(&mut self, webhook: Webhook) {
        self.set_webhook_for(webhook, Again::AgentStarted);
    }

    /// [`Desk::set_webhook`], for `why`: a reload that names another URL announces what is
    /// pending to it too (its receiver has not heard of it), saying so and not that the agent
    /// restarted.
    fn set_webhook_for(&mut self, webhook: Webhook, why: Again) {
        self.webhook = Some(webhook);
        // Read before `pending`, which announces the expiries it records itself.
        let unheard = self.ends_nobody_heard();
        self.post_pending_again(why);
        // After what is pending: an end the last run did not announce may be a supersession,
        // whose `by_id` names one of those (announced as in the event stream, newer first).
        self.post_ends(unheard);
    }

    fn post_pending_again(&mut self, why: Again) {
        match self.pending() {
            Ok(pending) => {
                for item in pending {
                    self.post(Payload::repeat(&self.host, &item, &self.command_flags, why));
                }
            }
            Err(e) => warn!("approvals: pending approvals not announced again: {e}"),
        }
    }

    #[cfg(test)]
    pub(crate) fn store_mut(&mut self) -> &mut ApprovalStore {
        &mut self.store
    }

    pub fn store(&self) -> &ApprovalStore {
        &self.store
    }

    /// Events produced since the last call (approvals resolved by a request or a window).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// One batch of recommendations: merged (one per parameter and target), each reported, and
    /// each that asks for a kernel change proposed to the change path as its advisor's source,
    /// held for approval when its advisor did not allow applying it automatically. A proposal
    /// that needs approval becomes a pending approval. `drain` takes the change path's events, so
    /// that they follow the recommendation they belong to.
    pub fn consider(
        &mut self,
        path: &mut ChangePath,
        recommendations: Vec<Recommendation>,
        drain: &mut dyn FnMut() -> Vec<Event>,
    ) -> Considered {
        let mut out = Considered::default();
        for merged in merge(recommendations) {
            let rec = merged.kept;
            out.events
                .push(Event::Recommendation(Box::new(rec.clone())));
            for (lost, why) in merged.set_aside {
                out.events
                    .push(Event::Recommendation(Box::new(lost.clone())));
                out.events
                    .push(Event::RecommendationSetAside(SetAsideEvent {
                        id: lost.id.clone(),
                        parameter: lost.parameter.clone(),
                        recommended_value: lost.recommended_value.clone(),
                        source: lost.source,
                        can_auto_apply: lost.can_auto_apply,
                        kept_id: rec.id.clone(),
                        kept_value: rec.recommended_value.clone(),
                        kept_source: rec.source,
                        why: why.clone(),
                    }));
                self.remember(HistoryEntry {
                    ts_ms: now_ms(),
                    recommendation: lost,
                    done: Done::SetAside,
                    journal_id: None,
                    approval_id: None,
                    detail: Some(why),
                });
            }
            let mut entry = HistoryEntry {
                ts_ms: now_ms(),
                recommendation: rec.clone(),
                done: Done::Advice,
                journal_id: None,
                approval_id: None,
                detail: None,
            };
            if let Some(value) = rec.recommended_value.clone() {
                self.mark_seen(&rec, &value);
                self.propose(path, &rec, value, &mut entry, &mut out);
                out.events.extend(drain());
                out.events.extend(self.take_events());
            }
            self.remember(entry);
            if !rec.is_change() {
                self.advise(&rec);
            }
        }
        out
    }

    /// Advice for the application (no value: raise the service's listen backlog, listen again,
    /// scale it) reaches a person through the webhook, as an `advice` notification: nothing else
    /// would tell anyone (it asks for no approval, and `kpo pending` lists none). Posted once per
    /// situation: the rules latch their advice, but repeat it every `repeat_windows` (10) windows
    /// while it holds and was not acted on (so that an approval is not cleared as advice no
    /// longer made), advise again at once after `rearm_windows` calm windows, and again at a
    /// restart; and each repeat has a new id and new numbers (the window, the drops, the queue's
    /// depth). So the desk remembers each advice by its situation ([`advice_key`]: advisor,
    /// parameter and target, listener and owner, somaxconn and the listener's limit, and its
    /// words with the numbers left out) and posts it only when no advice of that situation was
    /// made in the last `expire_after`: advice made again within that time renews it, so
    /// advice that holds for hours is posted once, and a situation that went away and comes back
    /// later than that is posted again.
    fn advise(&mut self, rec: &Recommendation) {
        let now = now_ms();
        let bound = self.settings.expire_after.as_millis() as u64;
        self.advised
            .retain(|_, at| crate::clock::runs(*at, bound, now));
        if self.advised.insert(advice_key(rec), now).is_none() {
            self.post(Payload::advice(&self.host, rec, &self.command_flags));
        }
    }

    fn propose(
        &mut self,
        path: &mut ChangePath,
        rec: &Recommendation,
        value: Value,
        entry: &mut HistoryEntry,
        out: &mut Considered,
    ) {
        let proposal = Proposal {
            address: rec.parameter.clone(),
            value: value.clone(),
            source: rec.source.into(),
            reason: rec.reason.clone(),
        };
        // `propose` or `propose_held`, refused if the advice's value was read in a network
        // namespace that is gone (its inode another's now): an approval asked for here records
        // the namespace the change path opens now, which must be the one advised about.
        // Advice for a value an operator rejected at this target (in this namespace) lately is
        // held, so that it ends as `rejected` below: the advisor's next answer saying
        // `can_auto_apply` must not undo the operator's "no" for as long as the rejection stands.
        let held = !rec.can_auto_apply || self.rejected_where_advised(path, rec, &value);
        // The LLM answers up to its timeout after the value it was shown was read; a rule's
        // value is read on the tick it advises.
        let against = match rec.source {
            Source::Llm => rec.current_value.as_ref(),
            _ => None,
        };
        if !held {
            // Durable before the kernel is written: a kill before the path returns must not
            // lose the recommendation a change was made for.
            self.remember(HistoryEntry {
                done: Done::UnderWay,
                detail: Some(UNDER_WAY.into()),
                ..entry.clone()
            });
        }
        let result = path.propose_advice(&proposal, held, rec.netns_cookie, against);
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                if matches!(
                    e,
                    crate::change::ChangeError::Journal(
                        crate::journal::JournalError::Unwritable { .. }
                            | crate::journal::JournalError::ReadOnly { .. }
                    )
                ) {
                    // The journal says once that it cannot be written, and once that it can
                    // again; the change event says this proposal failed.
                    out.unjournaled.push(proposal);
                } else {
                    warn!("{}: proposing {}: {e}", rec.source, proposal.address);
                }
                entry.done = Done::Failed;
                entry.detail = Some(e.to_string());
                return;
            }
        };
        entry.done = Done::from_status(report.status);
        entry.journal_id = report.journal_id;
        entry.detail = report
            .refusal
            .as_ref()
            .map(|r| r.to_string())
            .or(report.detail.clone());
        match report.status {
            ChangeStatus::NeedsApproval if report.before.as_ref() == Some(&value) => {
                entry.done = Done::Unchanged;
                entry.detail = Some("the kernel already has this value".into());
            }
            ChangeStatus::NeedsApproval => {
                // The namespace the advice was read in, by the same open as its value.
                let cookie = report.netns_cookie;
                if let Some(r) = self.rejected_lately(&rec.parameter, &value, cookie) {
                    let asks_again_ms = self.store.asks_again(r);
                    let detail = format!(
                        "{} {}; not asked again before {}",
                        r.id,
                        r.state.describe(),
                        format_ms(asks_again_ms)
                    );
                    entry.done = Done::Rejected;
                    entry.approval_id = Some(r.id.clone());
                    entry.detail = Some(detail.clone());
                    self.events.push(Event::ApprovalNotAsked(NotAskedEvent::new(
                        rec,
                        value,
                        r.id.clone(),
                        Some(asks_again_ms),
                        detail,
                    )));
                    return;
                }
                // The policy's mode for this advisor, not the advisor's flag: both advisors fold
                // mode recommend into `can_auto_apply`, which would make every such hold look
                // like the advisor's.
                let policy_holds = path
                    .policy
                    .rule_for(&rec.parameter)
                    .mode_for(proposal.source)
                    == crate::policy::Mode::Recommend;
                match self.require(rec, &value, report.before.clone(), cookie, policy_holds) {
                    Ok(Required::Asked(id)) => entry.approval_id = Some(id),
                    Ok(Required::KeptPending { id, detail }) => {
                        self.events.push(Event::ApprovalNotAsked(NotAskedEvent::new(
                            rec,
                            value,
                            id.clone(),
                            None,
                            detail.clone(),
                        )));
                        entry.approval_id = Some(id);
                        entry.detail = Some(detail);
                    }
                    Err(e) => {
                        warn!("approvals: {}: {e}", rec.parameter);
                        entry.done = Done::Failed;
                        entry.detail = Some(format!("the approval could not be stored: {e}"));
                    }
                }
            }
            ChangeStatus::Applied => out.applied.push(report),
            // Not made while the guard's file cannot be written (a full state directory): given
            // again as soon as advice the journal could not record, not after the advisor's own
            // repeat (s61 review2 R2-3: the rules' 10 windows). Each try journals its intent and
            // its failure, once a window at most (docs/journal.md).
            ChangeStatus::Failed if report.unwatched => out.unjournaled.push(proposal),
            _ => {
                if let Some(refusal) = report.refusal {
                    out.refused.push((proposal, refusal));
                }
            }
        }
    }

    /// An approval for this parameter, target and value whose rejection still holds (for the
    /// `expire_after` in force when it was made): the same advice does not ask again before then. A rejection made in
    /// another network namespace that had the same inode (another `cookie`) is not this one's.
    fn rejected_lately(
        &self,
        parameter: &ParamAddress,
        value: &Value,
        cookie: Option<u64>,
    ) -> Option<&ApprovalItem> {
        let key = target_key(parameter);
        let now = now_ms();
        self.store.items().rev().find(|i| {
            i.key == key
                && &i.value == value
                && other_namespace(i.netns_cookie, cookie).is_none()
                && self.store.rejection_in_force(i, now)
        })
    }

    /// The approvals of `parameter` that stand now, in the namespace of `cookie`: those pending
    /// (any advisor's), and the rejections still in force with when each ends. For the LLM's
    /// prompt, which tells the model what waits on the operator and what was refused.
    pub fn standing_for(
        &self,
        parameter: &ParamAddress,
        cookie: Option<u64>,
    ) -> Vec<(&ApprovalItem, Option<u64>)> {
        let key = target_key(parameter);
        let now = now_ms();
        (self.store.items())
            .filter(|i| i.key == key && other_namespace(i.netns_cookie, cookie).is_none())
            .filter_map(|i| match i.state {
                ApprovalState::Pending => Some((i, None)),
                ApprovalState::Rejected { .. } if self.store.rejection_in_force(i, now) => {
                    Some((i, Some(self.store.asks_again(i))))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether an operator rejected `value` lately in the namespace the advice is for. Advice
    /// without a cookie (a rule's: it reads no namespace's cookie) would match a rejection made in
    /// a namespace that died and left its inode to the one there now, and be held for that; so
    /// then the cookie of the namespace there now decides, read only when a rejection with a
    /// cookie is found. One that cannot be read concludes nothing: the rejection holds it.
    fn rejected_where_advised(
        &self,
        path: &ChangePath,
        rec: &Recommendation,
        value: &Value,
    ) -> bool {
        let Some(rejected) = self.rejected_lately(&rec.parameter, value, rec.netns_cookie) else {
            return false;
        };
        if rec.netns_cookie.is_some() || rejected.netns_cookie.is_none() {
            return true;
        }
        let now = path.netns_cookie(&rec.parameter);
        self.rejected_lately(&rec.parameter, value, now).is_some()
    }

    /// An answer of the LLM's for `rec`'s parameter that validation dropped (`detail`: why, a
    /// value outside the policy's bounds, say), kept in the history as refused: `kpo explain`
    /// showed only what was accepted, and an operator could not see that the model asked for
    /// more than the policy allows (s50 storyY F3).
    pub fn remember_dropped(&mut self, rec: Recommendation, detail: String) {
        self.remember(HistoryEntry {
            ts_ms: now_ms(),
            recommendation: rec,
            done: Done::Refused,
            journal_id: None,
            approval_id: None,
            detail: Some(detail),
        });
    }

    /// The history entry, durable; a store that cannot be written costs the entry, with a warning.
    fn remember(&mut self, entry: HistoryEntry) {
        match self.store.record(entry) {
            Ok(()) => {
                if std::mem::take(&mut self.history_failing) {
                    info!("approvals: recommendations are recorded again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.history_failing, true) {
                    warn!(
                        "approvals: recording a recommendation: {e}; those made until it can be \
                         written are not in the history (kpo explain), and this is not said again \
                         until it records again"
                    );
                }
            }
        }
    }

    /// The advice behind pending approvals for this parameter, target and value was made again
    /// by their advisor (another's identical advice is not theirs: see [`Desk::require`]).
    fn mark_seen(&mut self, rec: &Recommendation, value: &Value) {
        let key = target_key(&rec.parameter);
        let ids: Vec<String> = self
            .store
            .pending()
            .filter(|i| i.key == key && &i.value == value && i.source == rec.source)
            .map(|i| i.id.clone())
            .collect();
        for id in ids {
            self.unseen.remove(&id);
            self.seen.insert(id);
        }
    }

    /// A pending approval of another advisor's for another value that the merging order
    /// (`merge.rs`: one that waits for its advisor's word, then the value closer to the kernel's,
    /// then rules, optimizer, llm) keeps over `rec`: its id, and why `rec` leaves it as it is.
    /// Two advisors advising two values in turn would otherwise supersede each other's approval
    /// at every consultation, and the one waiting would be whoever spoke last, not the more
    /// cautious (s43). The same advisor's new value is its new opinion, and supersedes.
    fn more_cautious_pending(
        &self,
        open: &[ApprovalItem],
        rec: &Recommendation,
        value: &Value,
        current: Option<&Value>,
    ) -> Option<Required> {
        use super::merge::rank;
        let current = current.or(rec.current_value.as_ref());
        let theirs = rank(rec.can_auto_apply, current, Some(value), rec.source);
        // An approval its advisor held (`can_auto_apply: false`) says so; one the policy or
        // --recommend-only holds waits for a person whatever its advisor said, as `rec` would.
        let auto = |i: &ApprovalItem| i.held_by != "advisor" && rec.can_auto_apply;
        open.iter()
            .filter(|i| i.source != rec.source && &i.value != value)
            .find(|i| rank(auto(i), current, Some(&i.value), i.source) <= theirs)
            .map(|i| {
                let detail = format!(
                    "{} is pending for {}, advised by {}, which the merging order keeps over {value} \
                     (more cautious, or as cautious and first); left as it is",
                    i.id, i.value, i.source
                );
                Required::KeptPending {
                    id: i.id.clone(),
                    detail,
                }
            })
    }

    /// A pending approval for this recommendation: the one already pending for the same
    /// parameter, target and value from the same advisor is refreshed (its reason, current value
    /// and expiry renewed); one from another advisor is left as it is (the id, and why, are
    /// returned); one pending for another value is superseded; otherwise a new one is created.
    fn require(
        &mut self,
        rec: &Recommendation,
        value: &Value,
        current: Option<Value>,
        cookie: Option<u64>,
        policy_holds: bool,
    ) -> Result<Required, JournalError> {
        // One past its time is expired, written or not (a full disk): never refreshed back to
        // life, nor superseded as if it were pending.
        self.expire_due();
        let now = now_ms();
        let key = target_key(&rec.parameter);
        let expires_ms = now.saturating_add(self.settings.expire_after.as_millis() as u64);
        let (gone, open): (Vec<ApprovalItem>, Vec<ApprovalItem>) = self
            .store
            .pending()
            .filter(|i| i.key == key && !self.is_due(i, now))
            .cloned()
            .partition(|i| other_namespace(i.netns_cookie, cookie).is_some());
        // Advised for a namespace that died before a window noticed: this advice is for the one
        // that has its inode now, and must neither refresh nor be superseded as the dead one's.
        for dead in gone {
            let why = other_namespace(dead.netns_cookie, cookie).unwrap_or_default();
            self.resolve(dead, ApprovalState::Cleared { why })?;
        }
        // Under --recommend-only the advisors see the lowered policy too, so it is the reason
        // whatever the advisor said.
        let held_by = if self.recommend_only {
            "recommend_only"
        } else if policy_holds {
            "policy"
        } else {
            "advisor"
        };
        if let Some(mut same) = open.iter().find(|i| &i.value == value).cloned() {
            if same.source != rec.source {
                // An approval shows and is approved as its advisor's, source and text together:
                // taking this advisor's reason into it would put words in the other's mouth (and
                // journal them under its name). So it stays as it is, expiring on its own
                // advisor's schedule.
                let detail = format!(
                    "{} is already pending for this value, advised by {}; left as it is",
                    same.id, same.source
                );
                return Ok(Required::KeptPending {
                    id: same.id,
                    detail,
                });
            }
            same.current_value = current.or(same.current_value);
            same.reason = rec.reason.clone();
            same.recommendation_id = rec.id.clone();
            same.confidence = rec.confidence;
            same.window = rec.window.clone();
            // Why it waits can change under it: an agent restarted without --recommend-only, or
            // a policy reloaded with the parameter in mode auto.
            same.held_by = held_by.into();
            same.updated_ms = now;
            same.expires_ms = expires_ms;
            same.refreshed += 1;
            // Still unannounced when made in this window: the mark stays until the window ends.
            let unannounced = self.announcing.contains(&same.id);
            self.store.put_marked(same.clone(), unannounced, None)?;
            let id = same.id.clone();
            self.events.push(Event::ApprovalRequired(ApprovalEvent {
                approval: same,
                refresh: Some(true),
            }));
            self.supersede(open, &id);
            return Ok(Required::Asked(id));
        }
        if let Some(held) = self.more_cautious_pending(&open, rec, value, current.as_ref()) {
            return Ok(held);
        }
        let id = self.store.new_id();
        let item = ApprovalItem {
            id: id.clone(),
            parameter: rec.parameter.clone(),
            key,
            netns_cookie: cookie,
            value: value.clone(),
            current_value: current.or(rec.current_value.clone()),
            source: rec.source,
            recommendation_id: rec.id.clone(),
            reason: rec.reason.clone(),
            confidence: rec.confidence,
            window: rec.window.clone(),
            held_by: held_by.into(),
            created_ms: now,
            updated_ms: now,
            expires_ms,
            refreshed: 0,
            resolved_ms: None,
            state: ApprovalState::Pending,
            approving_now: None,
        };
        // The new approval is durable before an older one names it as what superseded it: the
        // other way, a crash or failed write between the two would leave a name for an approval
        // never stored, and ids are handed out again from what is stored. Stored unannounced
        // until the next window, by which time its `approval_required` event is out: a kill
        // before then has the next start report it (s38 chaos F1b; the webhook hears of every
        // pending approval again at a start anyway).
        self.store.put_marked(item.clone(), true, None)?;
        self.announcing.insert(id.clone());
        self.seen.insert(id.clone());
        // With the flags this agent's socket and state directory need, as the webhook's text:
        // `kpo approve ID` alone would reach /var/lib/kpo, not this agent's.
        info!(
            "approval {id} required: {} = {} ({}); kpo approve {id}{}",
            item.parameter, item.value, item.reason, self.command_flags
        );
        self.post(Payload::new(
            "approval_required",
            &self.host,
            &item,
            &self.command_flags,
        ));
        self.events.push(Event::ApprovalRequired(ApprovalEvent {
            approval: item,
            refresh: Some(false),
        }));
        // Announced after the new one (its event, and its post queued first), so that a reader of
        // the stream meets the approval an older one's `by_id` names before that name.
        self.supersede(open, &id);
        Ok(Required::Asked(id))
    }

    /// Resolves the approvals in `open` other than `by_id` as superseded by it. `by_id` is stored
    /// already, so a failure here costs only the old one's end: it stays pending, and is
    /// superseded by the next advice (another value, or a refresh of `by_id`) or cleared by a
    /// window.
    fn supersede(&mut self, open: Vec<ApprovalItem>, by_id: &str) {
        for other in open.into_iter().filter(|i| i.id != by_id) {
            let old = other.id.clone();
            let by_id = by_id.to_string();
            if let Err(e) = self.resolve(other, ApprovalState::Superseded { by_id }) {
                warn!("approvals: {old} could not be marked superseded (it stays pending): {e}");
            }
        }
    }

    /// Records a pending approval's end, durably, and announces it.
    fn resolve(
        &mut self,
        mut item: ApprovalItem,
        state: ApprovalState,
    ) -> Result<ApprovalItem, JournalError> {
        // Reported with the expiry that was in force (a reload may have changed `expire_after`
        // since it was stored), as `kpo pending` showed it.
        item.expires_ms = self.expires(&item);
        // An expiry noticed late (the agent was down, or no window or request came) still ended
        // when the time ran out.
        item.resolved_ms = Some(match state {
            // Not in the future when the clock stepped back ([`Desk::is_due`]).
            ApprovalState::Expired => self.expires(&item).min(now_ms()),
            _ => now_ms(),
        });
        item.state = state;
        // Stored unannounced in every case, for a start to announce: the agent marks it
        // announced once its event and post are out (next window), unless no webhook hears of
        // it (the CLI's desk, or the agent's before its webhook started).
        let heard = !self.offline && (self.webhook.is_some() || self.settings.webhook.is_none());
        // A rejection holds for the expire_after in force now, whatever a reload sets later;
        // twice the last one's when the same advice was rejected within a day.
        let hold = matches!(item.state, ApprovalState::Rejected { .. })
            .then(|| self.rejection_hold(&item));
        self.store.put_marked(item.clone(), true, hold)?;
        if heard {
            self.announcing.insert(item.id.clone());
        }
        self.unseen.remove(&item.id);
        self.seen.remove(&item.id);
        info!("approval {}: {}", item.id, item.state.describe());
        self.post(Payload::new(
            "approval_resolved",
            &self.host,
            &item,
            &self.command_flags,
        ));
        self.events.push(Event::ApprovalResolved(ApprovalEvent {
            approval: item.clone(),
            refresh: None,
        }));
        Ok(item)
    }

    fn post(&self, payload: Payload) {
        if let Some(w) = &self.webhook {
            w.notify(payload);
        }
    }

    /// The LLM answered a consultation that offered `offered` (its advice, possibly none,
    /// follows through [`Desk::consider`]).
    pub fn llm_answered(&mut self, offered: &[ParamAddress]) {
        self.llm_answered.extend(offered.iter().map(target_key));
    }

    /// A window closed: pending approvals past their time expire; those whose value the kernel
    /// already has, or whose advice was not made again for `clear_after_windows` consecutive
    /// windows (the LLM's: consultations it answered), are cleared.
    pub fn on_window(&mut self, path: &ChangePath) {
        self.mark_what_was_announced();
        let now = now_ms();
        let pending: Vec<ApprovalItem> = self.store.pending().cloned().collect();
        let seen = std::mem::take(&mut self.seen);
        let llm_answered = std::mem::take(&mut self.llm_answered);
        for item in pending {
            let state = if self.is_due(&item, now) {
                Some(ApprovalState::Expired)
            } else if let Some(why) = no_longer_holds(path, &item) {
                Some(ApprovalState::Cleared { why })
            } else if seen.contains(&item.id)
                || (item.source == Source::Llm && !llm_answered.contains(&item.key))
            {
                None
            } else {
                let n = self.unseen.entry(item.id.clone()).or_insert(0);
                *n += 1;
                let turns = if item.source == Source::Llm {
                    "consultations"
                } else {
                    "windows"
                };
                (*n >= self.settings.clear_after_windows).then(|| ApprovalState::Cleared {
                    why: format!(
                        "{} has not recommended it for {n} consecutive {turns}",
                        item.source
                    ),
                })
            };
            if let Some(state) = state {
                if let Err(e) = self.resolve(item, state) {
                    warn!("approvals: {e}");
                }
            }
        }
    }

    /// At a stop, after `on_exit`'s reverts: a pending approval they took the ground from (the
    /// value it was advised against is gone) is cleared now, as the next window would have, not
    /// left listed by `kpo pending` while the agent is down for an approval that can no longer
    /// be approved (s49 storyS S-1).
    pub fn clear_what_no_longer_holds(&mut self, path: &ChangePath) {
        let pending: Vec<ApprovalItem> = self.store.pending().cloned().collect();
        for item in pending {
            if let Some(why) = no_longer_holds(path, &item) {
                let id = item.id.clone();
                if let Err(e) = self.resolve(item, ApprovalState::Cleared { why }) {
                    warn!("approvals: {e}");
                }
                // Its post is queued as the agent stops and would be lost: left unannounced,
                // the next start posts it (and reports it again), as an end the CLI made while
                // the agent was down (s49 review M3).
                if self.webhook.is_some() {
                    self.announcing.remove(&id);
                }
            }
        }
    }

    /// At a start whose agent's own namespace died: a pending approval of one of its keys
    /// ([`crate::journal::dies_with_the_agents_namespace`], which the journal settled) was
    /// advised for the dead namespace's values, not the new one's; cleared with `why`, as an
    /// approval whose namespace is gone is (s55 review M3: approved, it would have applied the
    /// dead namespace's advice here). Returns whether every one was cleared: one that could not
    /// be recorded is warned of, and the next start tries again.
    pub fn clear_for_dead_agent_namespace(&mut self, why: &str) -> bool {
        let pending: Vec<ApprovalItem> = self
            .store
            .pending()
            .filter(|i| crate::journal::dies_with_the_agents_namespace(&i.key))
            .cloned()
            .collect();
        let mut all = true;
        for item in pending {
            let why = why.to_string();
            if let Err(e) = self.resolve(item, ApprovalState::Cleared { why }) {
                warn!("approvals: {e}");
                all = false;
            }
        }
        all
    }

    /// When a pending approval expires under the policy in force: `expire_after` after its advice
    /// was last made. (The `expires_ms` stored with it is this, under the policy of that time.)
    fn expires(&self, item: &ApprovalItem) -> u64 {
        item.updated_ms
            .saturating_add(self.settings.expire_after.as_millis() as u64)
    }

    /// Whether a pending `item` has expired at `now`: its time ran out, or it was last advised
    /// before the clock stepped back ([`crate::clock`]), more than `expire_after` ahead of `now`.
    fn is_due(&self, item: &ApprovalItem, now: u64) -> bool {
        let length = self.settings.expire_after.as_millis() as u64;
        !crate::clock::runs(item.updated_ms, length, now)
    }

    /// `item` as it is reported: a pending one with the expiry in force ([`Desk::expires`]); a
    /// resolved one as it was stored, with the expiry in force when it ended.
    fn as_reported(&self, item: &ApprovalItem) -> ApprovalItem {
        let mut item = item.clone();
        if item.state == ApprovalState::Pending {
            item.expires_ms = self.expires(&item);
        }
        item
    }

    /// Expires what is past its time (a CLI or request may come between windows). An expiry that
    /// cannot be written (a full disk) is a warning: the approval is past its time whatever the
    /// file says, so it is treated as expired ([`Desk::pending`], [`Desk::still_pending`]) and
    /// written at the next try; failing the request would keep every other approval from being
    /// listed, approved or rejected.
    fn expire_due(&mut self) {
        let now = now_ms();
        let due: Vec<ApprovalItem> = self
            .store
            .pending()
            .filter(|i| self.is_due(i, now))
            .cloned()
            .collect();
        for item in due {
            let id = item.id.clone();
            if let Err(e) = self.resolve(item, ApprovalState::Expired) {
                warn!("approvals: {id} expired, but that could not be recorded yet: {e}");
            }
        }
    }

    /// Pending approvals, oldest first.
    pub fn pending(&mut self) -> Result<Vec<ApprovalItem>, ControlError> {
        self.expire_due();
        let now = now_ms();
        Ok(self
            .store
            .pending()
            .filter(|i| !self.is_due(i, now))
            .map(|i| self.as_reported(i))
            .collect())
    }

    /// The item, if it can still be approved or rejected.
    fn still_pending(
        &mut self,
        id: &str,
        asked: &'static str,
    ) -> Result<ApprovalItem, ControlError> {
        self.expire_due();
        let item = self
            .store
            .item(id)
            .map(|i| self.as_reported(i))
            .ok_or_else(|| ApprovalError::NoSuch(id.to_string()))?;
        match &item.state {
            ApprovalState::Pending if self.is_due(&item, now_ms()) => Err(ApprovalError::Expired {
                id: item.id.clone(),
                // Not in the future when the clock stepped back ([`Desk::is_due`]).
                at: format_ms(self.expires(&item).min(now_ms())),
            }
            .into()),
            ApprovalState::Pending => Ok(item),
            ApprovalState::Expired => Err(ApprovalError::Expired {
                id: item.id.clone(),
                at: format_ms(item.resolved_ms.unwrap_or_else(|| self.expires(&item))),
            }
            .into()),
            other => Err(ApprovalError::NotPending {
                id: item.id.clone(),
                state: other.describe(),
                asked,
            }
            .into()),
        }
    }

    /// An operator approves: the change goes through the change path as the advisor's proposal,
    /// approved (mode recommend applies; every other check of the policy still holds). Applied,
    /// or found in place, it is resolved as approved; refused or failed, it stays pending and the
    /// report says why.
    pub fn approve(
        &mut self,
        path: &mut ChangePath,
        id: &str,
        by: &str,
    ) -> Result<ApproveOutcome, ControlError> {
        let id = normalize_id(id);
        if let Some(outcome) = self.approved_already(path, &id) {
            return Ok(outcome);
        }
        let item = self.still_pending(&id, "approved")?;
        // It stays pending: approved again once the agent runs under the file.
        if let Some(why) = path.policy.changed_on_disk() {
            return Err(ControlError::PolicyChanged(why));
        }
        match namespace_now(path, &item) {
            NamespaceNow::Here => {}
            NamespaceNow::Gone(why) => {
                self.resolve(item, ApprovalState::Cleared { why: why.clone() })?;
                return Err(ApprovalError::NamespaceGone { id, why }.into());
            }
            // It stays pending: approved again once the namespace can be opened.
            NamespaceNow::Unreachable(why) => {
                return Err(ApprovalError::NamespaceUnreachable { id, why }.into())
            }
        }
        if let Some((was, now)) = moved_since_advised(path, &item) {
            let why = format!("the kernel now has {now}, and the advice was made against {was}");
            self.resolve(item, ApprovalState::Cleared { why })?;
            return Err(ApprovalError::Stale {
                id,
                was: was.to_string(),
                now: now.to_string(),
            }
            .into());
        }
        let proposal = Proposal {
            address: item.parameter.clone(),
            value: item.value.clone(),
            source: item.source.into(),
            reason: format!("approved by {by} ({id}): {}", item.reason),
        };
        let report = path.propose_approved(&proposal, item.netns_cookie)?;
        if let (ChangeStatus::Failed, Some(then), Some(now)) =
            (report.status, item.netns_cookie, report.netns_cookie)
        {
            if then != now {
                // Replaced between the check above and the write, which wrote nothing.
                let why = other_namespace(Some(then), Some(now)).unwrap_or_default();
                self.resolve(item, ApprovalState::Cleared { why: why.clone() })?;
                return Err(ApprovalError::NamespaceGone { id, why }.into());
            }
        }
        let approval = match report.status {
            ChangeStatus::Applied | ChangeStatus::Unchanged => {
                let approved = ApprovalState::Approved {
                    by: by.to_string(),
                    journal_id: report.journal_id,
                    status: report.status,
                };
                // The change is made and journaled: the outcome is returned (and the guard
                // watches it) even if its approval cannot be marked now. The approval then stays
                // pending (the report says the change was applied); a window clears it while
                // the kernel has its value.
                match self.resolve(item.clone(), approved) {
                    Ok(resolved) => resolved,
                    Err(e) => {
                        warn!("approvals: {id} was applied but could not be marked approved: {e}");
                        item
                    }
                }
            }
            _ => item,
        };
        Ok(ApproveOutcome { approval, report })
    }

    /// How long a rejection of `item` holds the same advice from asking again: `expire_after`,
    /// or, when the same advice (parameter, target, value) was rejected before and that hold
    /// ended less than a day ago, twice that one's, at most a week (or `expire_after` if
    /// longer), as the guard's quarantines double. An advisor that keeps its view (the rules; the
    /// LLM, told of a rejection only while it holds) asked the operator again every
    /// `expire_after` (s50 storyY F6).
    fn rejection_hold(&self, item: &ApprovalItem) -> std::time::Duration {
        use std::time::Duration;
        const DAY_MS: u64 = 24 * 3600 * 1000;
        let base = self.settings.expire_after;
        let longest = base.max(Duration::from_secs(7 * 24 * 3600));
        let now = now_ms();
        // The operator's last word on the same advice: an approval since the last rejection
        // starts over (s50 review2 N5).
        let before = self.store.items().rev().find(|i| {
            i.id != item.id
                && i.key == item.key
                && i.value == item.value
                && other_namespace(i.netns_cookie, item.netns_cookie).is_none()
                && matches!(
                    i.state,
                    ApprovalState::Rejected { .. } | ApprovalState::Approved { .. }
                )
        });
        let Some(before) = before.filter(|b| matches!(b.state, ApprovalState::Rejected { .. }))
        else {
            return base;
        };
        let ended = self.store.asks_again(before);
        if now.saturating_sub(ended) >= DAY_MS {
            return base;
        }
        let held = ended.saturating_sub(before.resolved_ms.unwrap_or(before.updated_ms));
        Duration::from_millis(held.saturating_mul(2))
            .max(base)
            .min(longest)
    }

    /// `id` approved already, as an outcome that names the change it made: asked twice, as a
    /// script or a configuration run asks, an approval is done, not an error (s60 story BR-2:
    /// exit 2, as for a typo or an agent that does not answer, where `kpo apply` of the value in
    /// force and `kpo revert` of what is reverted end with 0). `unchanged` while the kernel has
    /// its value; `skipped` (exit 1) once it does not, taken out since (a revert, the guard, a
    /// person): approved is not in force (s60 review1 R1-1).
    fn approved_already(&self, path: &ChangePath, id: &str) -> Option<ApproveOutcome> {
        let item = self.store.item(id)?;
        let ApprovalState::Approved { by, journal_id, .. } = &item.state else {
            return None;
        };
        let made = journal_id.map_or(String::new(), |j| format!(" (journal #{j})"));
        let approved = format!("{id} was approved already, by {by}{made}");
        // The namespace first, as a first approval looks at it: a pod deleted and another made
        // at its inode would be read as this one (s60 review2 R2-1).
        let gone = match namespace_now(path, item) {
            NamespaceNow::Here => None,
            NamespaceNow::Gone(why) => {
                Some(format!("for a network namespace no longer here ({why})"))
            }
            NamespaceNow::Unreachable(why) => Some(format!(
                "and its network namespace cannot be opened now ({why})"
            )),
        };
        // A NIC under adaptive moderation moves the value itself: what it holds says nothing.
        let moving = path.under_adaptive_moderation(&item.parameter);
        let now = (gone.is_none() && !moving)
            .then(|| path.read(&item.parameter).ok())
            .flatten();
        let in_force = gone.is_none() && (moving || now.as_ref() == Some(&item.value));
        let status = if in_force {
            ChangeStatus::Unchanged
        } else {
            ChangeStatus::Skipped
        };
        let mut report = ChangeReport::new(&item.parameter, &item.value, status);
        report.journal_id = *journal_id;
        report.detail = Some(match (&gone, &now) {
            (Some(where_), _) => format!("{approved}, {where_}; nothing done"),
            _ if in_force => format!("{approved}; nothing done"),
            (None, Some(now)) => format!(
                "{approved}, and its value is no longer in force (the kernel has {now}: taken \
                 out since, by a revert, the guard or another writer); nothing done (kpo apply \
                 {}={} makes the change again, as the policy allows)",
                item.parameter, item.value
            ),
            (None, None) => format!(
                "{approved}; nothing done (its value cannot be read now to say whether it is in \
                 force)"
            ),
        });
        report.read_back = now.filter(|_| !in_force);
        Some(ApproveOutcome {
            approval: self.as_reported(item),
            report,
        })
    }

    /// An operator rejects: recorded, never applied.
    pub fn reject(
        &mut self,
        id: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalItem, ControlError> {
        let id = normalize_id(id);
        // Asked twice, it is done (s60 story BR-2), with the first rejection's words kept.
        if let Some(item) =
            (self.store.item(&id)).filter(|i| matches!(i.state, ApprovalState::Rejected { .. }))
        {
            return Ok(self.as_reported(item));
        }
        let item = self.still_pending(&id, "rejected")?;
        // `--reason ""` gives no reason: shown, it would be `rejected by WHO: ` and nothing.
        let why = reason.map(crate::shown::one_line).filter(|r| !r.is_empty());
        Ok(self.resolve(
            item,
            ApprovalState::Rejected {
                by: by.to_string(),
                why,
            },
        )?)
    }

    /// The latest recommendations for a parameter, newest first: a name (every target) or an
    /// address (one target), with where their approvals stand now.
    pub fn explain(&self, param: &str, limit: usize) -> Vec<Explained> {
        let param = param.trim();
        let key = param
            .parse::<ParamAddress>()
            .ok()
            .filter(|_| param.contains('@'))
            .map(|a| target_key(&a));
        self.store
            .history()
            .rev()
            .filter(|h| {
                let p = &h.recommendation.parameter;
                p.policy_name() == param
                    || p.to_string() == param
                    || key.as_ref().is_some_and(|k| *k == target_key(p))
            })
            .take(limit)
            .map(|h| Explained {
                entry: h.clone(),
                approval: h
                    .approval_id
                    .as_ref()
                    .and_then(|id| self.store.item(id))
                    .map(|i| self.as_seen_at(i, now_ms())),
                // Known to the change path ([`super::control::AtDesk`]).
                reverted_by: None,
            })
            .collect()
    }

    /// [`Desk::as_reported`], but a pending one past its expiry as expired then, as the next
    /// window, request or offline command records it: `explain` only reads (s47 storyM M-1:
    /// with the agent down, or between windows, it showed an approval nobody could approve
    /// any more as pending).
    fn as_seen_at(&self, item: &ApprovalItem, now: u64) -> ApprovalItem {
        let mut item = self.as_reported(item);
        if item.state == ApprovalState::Pending && self.is_due(&item, now) {
            item.state = ApprovalState::Expired;
            item.resolved_ms = Some(item.expires_ms.min(now));
        }
        item
    }
}

/// Why the cookie kept and the namespace's now name different network namespaces, if they do.
/// Without both nothing is concluded, as the journal does: an approval stored before cookies
/// were kept, or a kernel without them.
fn other_namespace(kept: Option<u64>, now: Option<u64>) -> Option<String> {
    match (kept, now) {
        (Some(kept), Some(now)) if kept != now => Some(format!(
            "its network namespace is gone: its inode now names another namespace (cookie {now}, \
             was {kept})"
        )),
        _ => None,
    }
}

/// What [`Desk::require`] made of advice that waits for a person.
enum Required {
    /// A pending approval was created or refreshed for it (its id).
    Asked(String),
    /// Another advisor's pending approval for this target is kept over it, as it is (its id, and
    /// why, for the history and the `approval_not_asked` event).
    KeptPending { id: String, detail: String },
}

/// Where an approval's network namespace stands now, as far as applying it goes.
enum NamespaceNow {
    /// Reached (or nothing is concluded: the host, no cookie read now).
    Here,
    /// Gone for good, with why: it cannot be opened and is in use nowhere, or its inode now
    /// names another namespace (another cookie), whose values the advice knew nothing of.
    Gone(String),
    /// It cannot be opened now, but it is still in use (a descriptor limit, a race with /proc,
    /// a namespace only a thread is in): a passing failure, with why. Clearing would be for good.
    Unreachable(String),
}

/// [`NamespaceNow`] for `item`. A namespace that cannot be opened is taken for gone only as the
/// guard takes it ([`ChangePath::namespace_gone_for_certain`]): its inode is in use nowhere.
fn namespace_now(path: &ChangePath, item: &ApprovalItem) -> NamespaceNow {
    match path.netns_now(&item.parameter) {
        Err(ActuateError::Netns { reason, .. }) => {
            if path.namespace_gone_for_certain(&item.parameter, &item.key) {
                NamespaceNow::Gone(format!("its network namespace is gone ({reason})"))
            } else {
                NamespaceNow::Unreachable(reason)
            }
        }
        Err(_) => NamespaceNow::Here,
        // Opened, but no cookie read now (a failure to enter it, out of file descriptors): nothing
        // is concluded. Clearing would be for good; the next window asks again.
        Ok(None) => NamespaceNow::Here,
        Ok(now) => match other_namespace(item.netns_cookie, now) {
            Some(why) => NamespaceNow::Gone(why),
            None => NamespaceNow::Here,
        },
    }
}

/// Why the policy in force refuses `item` whatever happens before it is approved (a reload
/// narrowed its bounds, made it observe only, took its source away), or `None`. Such an approval would be refused at every `kpo approve` until it expired;
/// what passes with time or an operator (a cooldown, the hourly limit, a pause, a yield, a
/// quarantine) and the step from the kernel's value are left to the approval itself.
fn policy_refuses_for_good(path: &ChangePath, item: &ApprovalItem) -> Option<String> {
    let proposal = Proposal {
        address: item.parameter.clone(),
        value: item.value.clone(),
        source: item.source.into(),
        reason: String::new(),
    };
    match path
        .policy
        .decide(&proposal, &Context::new(std::time::SystemTime::now()))
    {
        Decision::RecordOnly => Some(format!(
            "the policy in force only observes {} (mode observe)",
            item.parameter
        )),
        // Named one by one: a quarantine or a step also refuse, and pass; and a namespace the
        // policy names by path is covered only while that path can be found, which a passing
        // failure can break.
        Decision::Refused(
            r @ (Refusal::DenyListed { .. }
            | Refusal::OutOfBounds { .. }
            | Refusal::SourceNotAllowed { .. }
            | Refusal::Invalid { .. }),
        ) => Some(format!("the policy in force refuses it: {r}")),
        _ => None,
    }
}

/// Why a pending approval no longer stands, whatever its advice does: its namespace is gone, the
/// kernel has its value, or moved from the value it was advised against, or the policy refuses
/// it for good.
fn no_longer_holds(path: &ChangePath, item: &ApprovalItem) -> Option<String> {
    if let NamespaceNow::Gone(why) = namespace_now(path, item) {
        return Some(why);
    }
    if path.read(&item.parameter).ok().as_ref() == Some(&item.value) {
        return Some(format!("the kernel already has {}", item.value));
    }
    if let Some((was, now)) = moved_since_advised(path, item) {
        return Some(format!(
            "the kernel now has {now}, and the advice was made against {was}"
        ));
    }
    policy_refuses_for_good(path, item)
}

/// The value the advice was made against and the kernel's value now, when the kernel has moved
/// to neither that nor the advised value (someone, or KPO for another reason, changed it since):
/// approving it then would act on a situation that is gone, possibly in the opposite direction.
fn moved_since_advised(path: &ChangePath, item: &ApprovalItem) -> Option<(Value, Value)> {
    let was = item.current_value.clone()?;
    if path.under_adaptive_moderation(&item.parameter) {
        // The NIC moves the value by itself; that it moved says nothing about the advice.
        return None;
    }
    let now = path.read(&item.parameter).ok()?;
    (now != was && now != item.value).then_some((was, now))
}

/// The situation of advice for an application ([`Desk::advise`]): the same key for the same
/// advice made again in a later window. Its advisor, the parameter and target, the listener and
/// its owner (`application`: namespace, port, pid, process name, limit), the value the parameter
/// had (somaxconn), and the reason's words with each run of digits as `#`, and without the
/// accept-queue rule's note on a depth seen below the limit: the numbers in it that change from
/// window to window (the window and its end, the drops, the queue's depth, whether the probe saw
/// it full) must not make it new, while the words tell one kind of advice from another (raise the backlog, listen
/// again, scale the service) and an IPv4 listener's from an IPv6 one's on the same port.
///
/// An LLM's suggestion (advice with no application) is keyed on its advisor and parameter
/// alone: the model words its reason anew at every consultation, and the value it is shown
/// beside may move at every read (`fs.file-nr`), so neither tells one situation from another.
fn advice_key(rec: &Recommendation) -> String {
    if rec.application.is_none() {
        return format!("{}\n{}", rec.source, target_key(&rec.parameter));
    }
    let reason = rec
        .reason
        .replace(crate::advise::rules::accept_queue::DEPTH_NOT_SEEN_FULL, "")
        .replace(crate::advise::rules::accept_queue::SYN_QUEUE_FULL_TOO, "");
    let mut words = String::with_capacity(reason.len());
    let mut in_number = false;
    for c in reason.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                words.push('#');
            }
            in_number = true;
        } else {
            words.push(c);
            in_number = false;
        }
    }
    let app = rec
        .application
        .as_ref()
        .map(|a| (a.netns, a.port, a.pid, a.comm.as_deref(), a.backlog_limit));
    format!(
        "{}\n{}\n{app:?}\n{:?}\n{words}",
        rec.source,
        target_key(&rec.parameter),
        rec.current_value
    )
}

#[cfg(test)]
mod tests;

/// `word` as one shell word: as it is when it holds nothing a shell reads, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
