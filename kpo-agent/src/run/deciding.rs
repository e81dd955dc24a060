//! The deciding half inside `kpo run`: the one change path (policy, journal, actuators), the
//! operator's requests from the control socket, the advisors' recommendations (the rules every
//! tick and once per window, the LLM's when a consultation ends) merged and either proposed or
//! held for approval ([`crate::approvals`]), the optimizer's trials, the guard watching each
//! change, and yielding to people who change a parameter KPO manages.
//!
//! The run loop owns one [`Deciding`] and calls it when a request arrives, after each tick's
//! sample, when a window closes, when an LLM consultation ends, and at shutdown. Everything it
//! does is journaled before the kernel is touched, and reported as events through the loop's
//! sink.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    actuate::{
        param::{ParamAddress, ParamKind, Value},
        Roots,
    },
    advise::{
        optimizer::{agent::AgentOptimizer, live::LiveEvent},
        recommendation::{Recommendation, WindowRef},
        rules::RuleSet,
    },
    api::{
        handle, reply,
        server::{Incoming, Server},
        Request,
    },
    approvals::{
        control::{ApprovalControl, AtDesk},
        webhook::Outcomes,
        Desk,
    },
    change::{ChangePath, ChangeReport, ChangeStatus, KernelActuators},
    cli::StateArgs,
    collect::Sample,
    config::Config,
    control::{Control, Status},
    guard::{Guard, GuardConfig, GuardEvent, Verdict},
    journal::{format_ms, Holder, Journal},
    output::{
        change_events::ChangePathEvent,
        events::{Event, OptimizerEvent},
    },
    policy::{Decision, OnExit, Policy, PolicyOrigin, Proposal, Source},
    sensors::sysctl_watch::SysctlWriteEvent,
    window::{tick_window, Window},
};

use super::{
    kernel_view::PathView,
    listen_again::{Listening, RaisesAwaitingListen},
    rules_state::RulesState,
};

/// The reason `on_exit`'s reverts are journaled and reported with.
const ON_EXIT_REASON: &str = "agent stopping: on_exit = revert";

/// How long the agent waits for a CLI that holds the state directory's lock at start.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// How long, at shutdown, the connections get to write their "stopping" answers.
pub const TURN_AWAY_WAIT: Duration = Duration::from_secs(1);

/// How long, at shutdown, the approval webhook's queue gets to be delivered: one POST's time
/// (`webhook::TIMEOUT`), so a notification being posted may end, without holding a stop up for
/// a receiver that does not answer.
pub const WEBHOOK_FINISH_WAIT: Duration = Duration::from_secs(5);

pub struct Deciding {
    path: ChangePath,
    guard: Guard,
    /// Change-path events waiting to be sent by the loop.
    pending: Arc<Mutex<Vec<ChangePathEvent>>>,
    requests: mpsc::Receiver<Incoming>,
    /// `None` only in tests that drive the deciding half without a socket.
    server: Option<Server>,
    /// The last closed window: the baseline of a change made now.
    last_window: Option<Window>,
    rules: RuleSet,
    /// What of the rules' judgements the state directory has (`rules_state.rs`).
    rules_saved: RulesState,
    /// The last save of `rules_saved` failed (logged once until one succeeds).
    rules_save_failing: bool,
    /// The journal id the mark in the state directory says the event stream carried up to
    /// (`journal/events_mark.rs`); `None` while it could not be saved.
    events_mark: Option<u64>,
    /// Merging, pending approvals and the recommendation history (crate::approvals).
    approvals: Desk,
    /// Windows closed; the one in progress is the next.
    windows: u64,
    /// The values the guard's reverts of the last windows quarantined, until the first window
    /// wholly after each revert says whether the change caused what it was reverted for
    /// ([`crate::guard::Cleared`]): kept in memory only, as what the guard is to see then.
    guard_quarantines: Vec<GuardQuarantine>,
    /// The values whose quarantine a `cleared` verdict lifted, by journal key, and when (ms): not
    /// lifted again within [`CLEARED_ONCE_WITHIN`], in case the clearing was wrong.
    cleared_lately: Vec<(String, Value, u64)>,
    /// The agent's own network namespace: its keys are the host's.
    host_netns: u64,
    /// The kernel's tick rate (`CONFIG_HZ`), fixed for its life: read once.
    hz: Option<u32>,
    /// The optimizer's live loop, when the policy gives it knobs (advise/optimizer/agent.rs).
    optimizer: Option<AgentOptimizer>,
    /// The loop is off only because the parameters of its groups differ: the configuration to
    /// start it with once they agree (an operator's `kpo apply`), tried at each window (the
    /// reason is not said again while that holds, whatever values it names).
    optimizer_when_alike: Option<Config>,
    /// The rules' proposals the policy refused for a reason that passes (`Refusal::passes`), by
    /// target: until it has passed, the rules keep the advice as given and do not repeat it (a
    /// refusal per tick); then they are told, and may give it again at once. With the window
    /// it was held in: after `REPEAT_WINDOWS` the rule repeats its advice anyway. With the
    /// refusal's code: a proposal held for another reason now (the hourly limit once its
    /// cooldown ran out) is released to be refused again, so that the refusal on record, which
    /// `kpo explain` shows, is the one in force (s61 story BY-3: "19s to wait" shown while the
    /// hourly limit held it for an hour).
    held_back: BTreeMap<String, (Proposal, u64, &'static str)>,
    /// The agent's own metrics endpoint (network namespace, port, family): its scrapes are left
    /// out of what the rules and the guard judge on each tick ([`Window::without_endpoint`]).
    own_endpoint: Option<crate::window::Endpoint>,
    /// The rules' proposals the journal could not record (nothing was written), by target: their
    /// advice is released at the next window, so that it is given again then, not
    /// `REPEAT_WINDOWS` later, and is applied as soon as the journal can be written again.
    unjournaled: BTreeMap<String, Proposal>,
    /// Whether the event stream was last told that the journal cannot be written: one `journal`
    /// event when it starts to fail, one when it records again.
    journal_unwritable_said: bool,
    /// Whether the policy file was last seen to differ from what was loaded: said once when it
    /// starts to, and once when it holds what was loaded again.
    policy_file_differs: bool,
    /// `--recommend-only`: a reloaded policy is held to it too.
    recommend_only: bool,
    /// Where SIGHUP reads the policy again: the file `--policy` named (whose absence is an
    /// error), or the default path (whose absence is the built-in default).
    policy_file: (PathBuf, bool),
    /// Each namespace's listening sockets at the last tick, for a somaxconn raise to know which
    /// listeners it waits for.
    listening: Listening,
    /// The somaxconn raises no capped listener has listened at yet: not judged until one does.
    listen_again: RaisesAwaitingListen,
}

/// How long after a `cleared` verdict lifted a value's quarantine another may not lift it: a
/// clearing is a judgement from one window, and a value the guard reverts again within a day
/// stays out (s57 review1 R1-1).
const CLEARED_ONCE_WITHIN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The values one of the guard's reverts quarantined, for [`Deciding::lift_cleared_quarantines`].
struct GuardQuarantine {
    change_id: u64,
    address: ParamAddress,
    values: Vec<Value>,
    /// [`Deciding::windows`] when the revert was made (its verdict's window).
    window: u64,
}

/// The journal names who asked as the kernel names the caller, whatever the request says. Only
/// the requests that journal who asks ([`Request::journals_who_asks`]) have their caller looked
/// up by name (the server asks NSS for those alone), so no other is given one.
fn name_the_caller(request: &mut Request, caller: &str) {
    if !request.journals_who_asks() {
        return;
    }
    match request {
        Request::Apply(req) => req.by = Some(caller.to_string()),
        Request::Revert { by, .. } => *by = Some(caller.to_string()),
        Request::Pause { by }
        | Request::Resume { by, .. }
        | Request::Approve { by, .. }
        | Request::Reject { by, .. } => *by = caller.to_string(),
        Request::Journal
        | Request::JournalPage { .. }
        | Request::Status
        | Request::Pending
        | Request::Explain { .. } => {}
    }
}

/// Whether `write` wrote `value`, as far as its text shows: a number as the kernel reads it
/// (decimal, `0x` hexadecimal, `0` octal), a vector's fields in any white space and fewer of them
/// than it has (the kernel keeps the rest), words as they are; when the text was cut at 63
/// bytes, its whole words only. A value the kernel rounds (a size in pages, a time in jiffies)
/// is not matched.
fn written_as(write: &SysctlWriteEvent, value: &Value) -> bool {
    let mut words: Vec<&str> = write.value.split_whitespace().collect();
    if write.value_truncated {
        words.pop();
    }
    let number = |w: &str| -> Option<i128> {
        let (negative, digits) = match w.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, w),
        };
        let n = if let Some(hex) = digits.strip_prefix("0x").or(digits.strip_prefix("0X")) {
            i128::from_str_radix(hex, 16).ok()?
        } else if digits.len() > 1 && digits.starts_with('0') {
            i128::from_str_radix(&digits[1..], 8).ok()?
        } else {
            digits
                .parse::<i128>()
                .ok()
                .filter(|_| !digits.starts_with('+'))?
        };
        Some(if negative { -n } else { n })
    };
    let numbers = |found: &[i128]| {
        let written: Option<Vec<i128>> = words.iter().map(|w| number(w)).collect();
        written.is_some_and(|w| {
            (!w.is_empty() || write.value_truncated)
                && w.len() <= found.len()
                && w[..] == found[..w.len()]
        })
    };
    match value {
        Value::Int(n) => numbers(std::slice::from_ref(n)),
        Value::Ints(ns) => numbers(ns),
        Value::Word(word) => {
            let found: Vec<&str> = word.split_whitespace().collect();
            if write.value_truncated {
                found.starts_with(&words)
            } else {
                found == words
            }
        }
    }
}

#[cfg(test)]
mod written_as_tests {
    use super::{written_as, SysctlWriteEvent, Value};

    /// A vector's fields in any white space, and a value cut at 63 bytes by its start.
    #[test]
    fn a_write_is_matched_by_its_words_or_by_the_start_of_a_cut_one() {
        let write = |value: &str, value_truncated| SysctlWriteEvent {
            pid: 1,
            comm: "sysctl".into(),
            name: "net.ipv4.tcp_rmem".into(),
            value: value.into(),
            value_truncated,
        };
        let found = Value::Ints(vec![4096, 131072, 6291456]);
        assert!(written_as(&write("4096\t131072  6291456", false), &found));
        // Fewer fields: the kernel keeps the rest (s52 review4 F1).
        assert!(written_as(&write("4096 131072", false), &found));
        assert!(!written_as(&write("4096 131073", false), &found));
        assert!(written_as(&write("4096 1310", true), &found));
        assert!(!written_as(&write("4097 1310", true), &found));
        assert!(written_as(&write("41", false), &Value::Int(41)));
        // Numbers as the kernel reads them; `+41` it refuses.
        assert!(written_as(&write("0x1000", false), &Value::Int(4096)));
        assert!(written_as(&write("010", false), &Value::Int(8)));
        assert!(!written_as(&write("+41", false), &Value::Int(41)));
        // Words, and the empty value (s52 review4 F2).
        let words = Value::Word("cubic reno".into());
        assert!(written_as(&write("cubic  reno", false), &words));
        assert!(!written_as(&write("cubic", false), &words));
        assert!(written_as(&write("", false), &Value::Word(String::new())));
    }
}

/// Whether a watched change is still what the kernel has from KPO (the journal's word).
fn in_place(journal: &Journal) -> impl Fn(u64, &ParamAddress, &Value) -> bool + '_ {
    move |change_id, address, value| {
        // By the change's own key: the watch's address may name a namespace by a path that
        // names another one now, or none.
        journal
            .intent(change_id)
            .and_then(|i| journal.param_by_key(&i.key))
            .or_else(|| journal.param_state(address))
            .is_some_and(|p| p.still_holds(change_id, value))
    }
}

/// The guard, with the watches the agent's previous run left open in the state directory taken
/// up again (after reconciliation, so the journal says which changes are still in place).
fn resume_guard(path: &ChangePath) -> Guard {
    let mut guard = Guard::new(GuardConfig::from_policy(&path.policy.guard));
    let journal = &path.journal;
    match guard.resume(journal.dir(), crate::journal::now_ms(), in_place(journal)) {
        Ok(resumed) => {
            guard.fill_missing_keys(|id| journal.intent(id).map(|i| i.key.clone()));
            for w in &resumed.warnings {
                warn!("guard: {w}");
            }
            for (id, address) in &resumed.watching {
                info!("guard: watching #{id} ({address}) again, from before the restart");
            }
            for (id, address) in &resumed.dropped {
                info!("guard: #{id} ({address}) is no longer in place; its watch is dropped");
            }
            for (id, address) in &resumed.stale {
                warn!(
                    "guard: #{id} ({address}) was last watched more than {} min before this \
                     start; the health before it no longer describes the host, so it is not \
                     judged (kpo revert {id} if it should go)",
                    crate::guard::RESUME_WITHIN.as_secs() / 60
                );
            }
        }
        Err(e) => warn!(
            "guard: the watches of the previous run cannot be read ({e}); changes made just \
             before the restart are not judged (this run's watches are still written there)"
        ),
    }
    guard
}

impl Deciding {
    /// Loads the policy, takes the state directory (journal, lock), reconciles changes a crash
    /// interrupted, and binds the control socket. Errors name what failed; the agent does not
    /// start without its journal, since it could not then change anything safely.
    /// With `recommend_only`, every parameter the policy has in auto is treated as recommend.
    pub fn open(
        state: &StateArgs,
        config: &Config,
        recommend_only: bool,
    ) -> anyhow::Result<(Deciding, Vec<Event>)> {
        let state = &state
            .absolute()
            .map_err(|e| anyhow::anyhow!("the working directory cannot be read: {e}"))?;
        let mut policy = Policy::load(state.policy.as_deref())?;
        info!("{}", policy.in_force());
        // Warned of as `kpo check --recommend-only` does: of the policy in force, every auto made
        // recommend (s59 review2 R2-10: the rules' approvals cleared within a minute, which only
        // recommend makes, went unsaid).
        if recommend_only {
            policy.force_recommend();
            warn!(
                "--recommend-only: every parameter in mode auto is treated as mode recommend \
                 (observe stays observe); nothing is applied without an operator's approval (kpo \
                 pending)"
            );
        }
        warn_of_what_the_policy_names_in_vain(&policy, config);
        let socket = state
            .socket
            .clone()
            .unwrap_or_else(|| crate::api::DEFAULT_SOCKET.into());
        // Before the state directory is made: a start refused its socket leaves none behind.
        Server::refuse_before_start(&socket)?;
        let dir = state.state_dir();
        // Created 0700 (with its parent's entry synced) by the journal's own helper.
        crate::journal::store::ensure_dir(&dir).map_err(|e| match e {
            // Refused on purpose (a link to nothing), and it names the directory itself.
            e @ crate::journal::JournalError::UnsafeDir { .. } => anyhow::anyhow!(e),
            e => anyhow::anyhow!("cannot create the state directory {}: {e}", dir.display()),
        })?;
        let mut journal = Journal::open(&dir, Holder::Agent, LOCK_WAIT)?;
        // Under the journal's lock, before anything is recorded or acted on: the journal's
        // parameters without a namespace may be another namespace's, one still alive.
        let dead_agent_netns = crate::control::refuse_start_in_other_netns(&dir)?;
        if !crate::actuate::sysctl::sees_every_process() {
            warn!(
                "the agent is in a PID namespace of its own (a pod without hostPID): it cannot \
                 see every process, so no network namespace KPO changed is taken for gone (what \
                 it knows of one stays, and is retried), and a namespace only other processes \
                 hold cannot be entered to read or change its parameters (namespaces are opened \
                 through the agent's own /proc, even where --proc-root shows the host's \
                 listeners in them: such a change fails, its namespace said to be perhaps \
                 deleted); run it in the host's PID namespace (README, Running in a pod)"
            );
        }
        for w in journal.warnings() {
            warn!("journal: {w}");
        }
        let actuators = KernelActuators {
            roots: Roots {
                sys: config.sysfs_root.clone(),
                ..Roots::default()
            },
        };
        // The socket before anything acts (reconciliation, approvals expired and announced): a
        // socket another agent answers on stops this one with nothing done.
        let (server, requests) = Server::bind(&socket)?;
        // Once this agent is sure to run (its socket is bound), still under the journal's lock:
        // a start that stops at the bind, such as another agent's test run in a namespace of its
        // own or a mistaken --socket, must not point the offline commands at its sysfs tree,
        // policy or namespace.
        crate::control::record_sysfs_root(&dir, &config.sysfs_root)
            .map_err(|e| anyhow::anyhow!("cannot record the sysfs root: {e}"))?;
        crate::control::record_policy_path(&dir, state.policy.as_deref())
            .map_err(|e| anyhow::anyhow!("cannot record the policy's path: {e}"))?;
        // Before reconciliation, which would read an interrupted change's key in this namespace,
        // and before this namespace is recorded (below).
        if let Some(why) = &dead_agent_netns {
            let settled = journal.forget_dead_agent_namespace(why).map_err(|e| {
                anyhow::anyhow!(
                    "journal: the agent's last network namespace is gone, and what the \
                         journal knew of its keys cannot be settled: {e}"
                )
            })?;
            if !settled.is_empty() {
                info!("journal: {why}: {}", settled.join(", "));
            }
        }
        let path = ChangePath::new(policy, journal, Box::new(actuators));
        let (mut deciding, mut events) = Self::over(path, recommend_only, Some((&socket, &dir)))?;
        let approvals_cleared = match &dead_agent_netns {
            Some(why) => deciding.approvals.clear_for_dead_agent_namespace(why),
            None => true,
        };
        // Last: a start stopped before this finds the namespace dead again, and settles what is
        // left (a key settled already is not settled again); so does one after an approval
        // whose clearing could not be recorded.
        if approvals_cleared {
            crate::control::record_agent_netns(&dir)
                .map_err(|e| anyhow::anyhow!("cannot record the agent's network namespace: {e}"))?;
        }
        deciding.policy_file = match &state.policy {
            Some(file) => (file.clone(), true),
            None => (PathBuf::from(crate::policy::DEFAULT_PATH), false),
        };
        deciding.server = Some(server);
        deciding.requests = requests;
        events.extend(deciding.start_optimizer(config));
        Ok((deciding, events))
    }

    /// The deciding half over a change path, its journal reconciled, without a control socket
    /// ([`Deciding::open`] binds it; tests go without).
    #[cfg(test)]
    pub(crate) fn with_path(
        path: ChangePath,
        recommend_only: bool,
    ) -> anyhow::Result<(Deciding, Vec<Event>)> {
        Self::over(path, recommend_only, None)
    }

    /// [`Deciding::with_path`]; `command_paths`: the control socket and state directory that a
    /// webhook's `kpo approve` must name when they are not the defaults.
    fn over(
        mut path: ChangePath,
        recommend_only: bool,
        command_paths: Option<(&std::path::Path, &std::path::Path)>,
    ) -> anyhow::Result<(Deciding, Vec<Event>)> {
        let pending = Arc::new(Mutex::new(Vec::new()));
        let sink = pending.clone();
        path.set_event_sink(move |e| {
            sink.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(e)
        });
        let reconciled = path.reconcile()?;
        for r in &reconciled {
            info!("journal reconciled: {}", r.describe());
        }
        path.restore_guard_quarantines()?;
        // After reconciliation, which sent its own events for what it settled.
        let settled = reconciled.iter().filter_map(|r| r.journal_id).collect();
        let events_mark = super::offline_changes::announce(&mut path, &settled);
        // `kpo pause` outlives the agent: a start that is paused changes nothing, and says so.
        if let Some((by, ts_ms)) = path.journal.paused() {
            warn!(
                "changes are paused (kpo pause by {by} at {}): the agent observes and advises, \
                 and changes nothing until kpo resume",
                crate::journal::format_ms(*ts_ms)
            );
        }
        let guard = resume_guard(&path);
        path.set_before_write(guard.write_ahead());
        let mut approvals =
            Desk::open(&path.journal, path.policy.approvals.clone(), recommend_only)?;
        for w in approvals.store().warnings() {
            warn!("approvals: {w}");
        }
        if let Some((socket, state_dir)) = command_paths {
            approvals.set_command_paths(socket, state_dir);
        }
        if let Some(url) = path.policy.approvals.webhook.clone() {
            approvals.start_webhook(url);
        }
        let rules_saved = RulesState::load(path.journal.dir()).unwrap_or_else(|e| {
            warn!(
                "rules: what they judged before the restart cannot be read ({e}); a raise of \
                 the receive path's budgets or backlog, or of a listener's somaxconn, that did \
                 not help may be proposed again"
            );
            RulesState::default()
        });
        let mut rules = RuleSet::default();
        let hz = super::kernel_view::kernel_hz();
        rules_saved.restore(&mut rules, hz);
        let (_, requests) = mpsc::channel(1);
        let path_origin = path.policy.origin.clone();
        let mut deciding = Deciding {
            path,
            guard,
            pending,
            requests,
            server: None,
            last_window: None,
            listening: Listening::default(),
            listen_again: RaisesAwaitingListen::default(),
            rules,
            rules_saved,
            events_mark,
            rules_save_failing: false,
            approvals,
            windows: 0,
            guard_quarantines: Vec::new(),
            cleared_lately: Vec::new(),
            host_netns: std::fs::metadata("/proc/self/ns/net")
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap_or(0),
            hz,
            optimizer: None,
            optimizer_when_alike: None,
            held_back: BTreeMap::new(),
            own_endpoint: None,
            unjournaled: BTreeMap::new(),
            journal_unwritable_said: false,
            policy_file_differs: false,
            recommend_only,
            policy_file: match &path_origin {
                PolicyOrigin::File(file) => (file.clone(), true),
                PolicyOrigin::BuiltIn => (PathBuf::from(crate::policy::DEFAULT_PATH), false),
            },
        };
        let events = deciding.take_events();
        Ok((deciding, events))
    }

    /// The approvals, for what the LLM is told of them.
    pub(crate) fn desk(&self) -> &Desk {
        &self.approvals
    }

    /// How many changes the guard is watching.
    #[cfg(test)]
    pub(crate) fn guard_watching(&self) -> usize {
        self.guard.watching()
    }

    /// The change path, read only: the LLM stage reads the policy, the journal and current
    /// values through it (run/llm.rs).
    pub fn change_path(&self) -> &ChangePath {
        &self.path
    }

    /// Approvals pending and values quarantined now, over every parameter, for `--metrics`.
    pub fn held(&self) -> (usize, usize) {
        let pending = (self.approvals.store().items())
            .filter(|i| i.state == crate::approvals::ApprovalState::Pending)
            .count();
        let now = crate::journal::now_ms();
        let quarantines = (self.path.journal.params())
            .map(|p| p.quarantine.iter().filter(|q| q.until_ms > now).count())
            .sum();
        (pending, quarantines)
    }

    /// What became of the approval webhook's notifications, for `--metrics`.
    pub fn webhook_outcomes(&self) -> &Outcomes {
        self.approvals.webhook_outcomes()
    }

    /// Starts the optimizer's live loop if the policy gives it knobs, from the values the
    /// kernel has after reconciliation; says why not if it cannot run.
    /// A trial a stopped agent left half-applied over a group knob is taken back first: its
    /// `change` events (and a yield to a value a person wrote since) come before `started`.
    pub(crate) fn start_optimizer(&mut self, config: &Config) -> Vec<Event> {
        self.optimizer_when_alike = None;
        self.start_optimizer_unless_said(config, false)
    }

    /// [`Deciding::start_optimizer`], where an `off` for groups apart is not said when `said`
    /// (the loop was off for them already, asked again at a window).
    fn start_optimizer_unless_said(&mut self, config: &Config, said: bool) -> Vec<Event> {
        let mut skipped = Vec::new();
        let started = AgentOptimizer::start(
            &mut self.path,
            &mut self.guard,
            &config.optimizer,
            &config.sysfs_root,
            &mut skipped,
        );
        let mut events = self.take_events();
        events.extend(self.yield_after_the_loops_reverts(&skipped));
        let off = match (started, slo_unmeasured(config)) {
            (Ok(None), _) => None,
            (Ok(Some(_)), Some(unmeasured)) => Some((unmeasured, false)),
            (Ok(Some((optimizer, started))), None) => {
                info!(knobs = ?optimizer.knobs(), "optimizer: live loop on");
                events.push(optimizer_event(optimizer.knobs(), started));
                self.optimizer = Some(optimizer);
                None
            }
            (Err(off), _) => Some((off.reason, off.groups_apart)),
        };
        self.optimizer_when_alike = None;
        if let Some((reason, apart)) = off {
            if !(said && apart) {
                warn!("optimizer: off: {reason}");
                events.push(optimizer_event(
                    Vec::new(),
                    LiveEvent::Off {
                        reason: reason.clone(),
                    },
                ));
            }
            if apart {
                self.optimizer_when_alike = Some(config.clone());
            }
        }
        events
    }

    /// The loop was off for groups apart: started once they agree (s48 storyP P-7: an operator
    /// who set them alike, as the reason asks, had to restart the agent).
    fn start_optimizer_if_alike(&mut self) -> Vec<Event> {
        match self.optimizer_when_alike.take() {
            Some(config) if self.optimizer.is_none() => {
                self.start_optimizer_unless_said(&config, true)
            }
            _ => Vec::new(),
        }
    }

    /// An answer of the LLM's that validation dropped, in the history `kpo explain` reads.
    pub fn llm_answer_dropped(&mut self, rec: Recommendation, detail: String) {
        self.approvals.remember_dropped(rec, detail);
    }

    /// The LLM answered a consultation that offered `offered`: a pending approval of its advice
    /// for one of those that this answer does not repeat counts one step towards being cleared.
    pub fn llm_answered(&mut self, offered: &[ParamAddress]) {
        self.approvals.llm_answered(offered);
    }

    /// The next operator request (pending forever when there is none).
    pub async fn next_request(&mut self) -> Option<Incoming> {
        self.requests.recv().await
    }

    /// At shutdown, before anything else: the requests still queued are answered "stopping" and
    /// not carried out (the `on_exit` reverts that follow are the agent's, not theirs).
    pub async fn turn_away_requests(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        let turned_away = server.turn_away(&mut self.requests, TURN_AWAY_WAIT).await;
        if turned_away > 0 {
            info!(
                "control: {turned_away} queued request(s) answered \"stopping\", not carried out"
            );
        }
    }

    /// At shutdown, after `on_exit`: the approval webhook's last notifications (the ends
    /// `on_exit` made among them) get [`WEBHOOK_FINISH_WAIT`] to be delivered.
    pub async fn finish_webhook(&mut self) {
        self.approvals.finish_webhook(WEBHOOK_FINISH_WAIT).await;
    }

    /// Serves one request through the change path; a change it applies is watched by the guard.
    pub fn serve(&mut self, mut incoming: Incoming) -> Vec<Event> {
        if incoming.caller_gave_up() {
            // The CLI gave up waiting (the connection's answer channel is closed, or the CLI
            // closed the connection while the loop was stalled) and told its operator so: acting
            // now would do what they were told did not happen.
            warn!("control: a request whose client stopped waiting is dropped, not carried out");
            return Vec::new();
        }
        name_the_caller(&mut incoming.request, &incoming.caller);
        let reply = match &incoming.request {
            Request::Apply(req) => {
                let result = Control::apply(&mut self.path, req);
                if let Ok(report) = &result {
                    self.watch_if_applied(report);
                }
                reply(result)
            }
            Request::Status => {
                // A change reverted since the last window is not shown as watched (s52 storyAC
                // AC-8); the window would drop it before judging anyway.
                self.guard.retain_in_place(in_place(&self.path.journal));
                let journal = &self.path.journal;
                let made_at = |id| journal.intent(id).map(|i| format_ms(i.ts_ms));
                let watches = self.guard.open_watches(made_at);
                // The guard's own list, not the file it saves it in.
                reply(self.path.journal_status().map(|s| Status { watches, ..s }))
            }
            Request::Approve { id, by } => {
                let result = self.at_desk().approve(id, by);
                if let Ok(o) = &result {
                    self.watch_if_applied(&o.report);
                }
                reply(result)
            }
            other => match crate::approvals::control::handle(&mut self.at_desk(), other) {
                Some(reply) => reply,
                None => handle(&mut self.path, other),
            },
        };
        let _ = incoming.answer.send(reply);
        self.take_events()
    }

    fn at_desk(&mut self) -> AtDesk<'_> {
        AtDesk {
            path: &mut self.path,
            desk: &mut self.approvals,
        }
    }

    /// The guard watches each applied change against the last window's health.
    ///
    /// The value watched is the one the change path wrote and journaled (`after`), never the
    /// request's: `4096,131072,6291456` arrives as a word and is applied as a list of integers,
    /// and a watch on the word would find the kernel "changed" at the next window and end.
    fn watch_if_applied(&mut self, report: &ChangeReport) {
        if let (ChangeStatus::Applied, Some(id)) = (report.status, report.journal_id) {
            let after = &report.after;
            let signals = self
                .path
                .policy
                .rule_for(&report.address)
                .guard_signals
                .as_deref();
            let from = report.before.as_ref().unwrap_or(after);
            let netns = match crate::guard::Scope::of(&report.address) {
                crate::guard::Scope::Netns(netns) => netns,
                crate::guard::Scope::Host => self.host_netns,
            };
            self.listen_again.changed(
                crate::journal::target_key(&report.address),
                &report.address,
                netns,
                (report.before.as_ref(), after),
                &self.listening,
            );
            self.guard.watch(
                id,
                report.address.clone(),
                from,
                after.clone(),
                self.last_window.as_ref(),
                signals,
            );
        }
    }

    /// SIGHUP: loads the policy file again, from where it was loaded at start (the default path
    /// when none was named, so a file made since is found). A file that does not load leaves the
    /// policy in force as it is, and says why; an unchanged file does nothing.
    ///
    /// What changes at once: every decision from now on (modes, bounds, steps, rates, namespaces,
    /// on_exit), the guard's settings for changes made from now on, and `[approvals]`. When the
    /// optimizer's entries changed, its live loop settles and a new one starts over the knobs
    /// the new policy gives it (none: it stays off), from the kernel's values; `config` is what
    /// it starts with, as at the agent's start. What does not change: values already applied
    /// stay (a parameter now denied or observed is left as it is), and watches running keep
    /// their windows.
    pub fn reload_policy(&mut self, config: &Config) -> Vec<Event> {
        let (file, named) = &self.policy_file;
        // A file removed from the default path since a file was loaded from it: as an emptied
        // one, more often a mistake than meant, and the built-in default it would load lifts
        // every limit the file set (s57 review1 R1-10, beside story BD-1's empty file).
        let removed = |new: &Policy| {
            (new.missing_file().is_some()
                && matches!(
                    self.path.policy.origin,
                    crate::policy::PolicyOrigin::File(_)
                ))
            .then(|| {
                format!(
                    "{}: the policy file was removed since the agent loaded it: refusing to fall \
                     back to the built-in default at a reload (recommend in every namespace, and \
                     an operator's kpo apply of any key); write the file again, with at least \
                     its [defaults] table for the built-in default",
                    file.display()
                )
            })
        };
        let loaded = Policy::load_from(file, *named)
            .map_err(|e| e.to_string())
            .and_then(|p| removed(&p).map_or(Ok(p), Err));
        let mut new = match loaded {
            Ok(policy) => policy,
            Err(e) => {
                warn!("policy reload refused, the policy loaded before stays in force: {e}");
                return vec![Event::Policy {
                    outcome: "refused",
                    source: file.display().to_string(),
                    error: Some(e),
                    optimizer_knobs_changed: false,
                }];
            }
        };
        if new.same_source(&self.path.policy) {
            info!("SIGHUP: the policy file is unchanged");
            return Vec::new();
        }
        if self.recommend_only {
            new.force_recommend();
        }
        warn_of_what_the_policy_names_in_vain(&new, config);
        let optimizer_rules =
            |p: &Policy| {
                // ParamRule has no PartialEq (globs, compiled sets): its Debug form, without the
                // line it was on, tells a change. Every cpufreq and ethtool entry counts, whatever
                // its sources, and `[defaults]` too: an entry that does not name the optimizer can
                // still take a parameter out of its knobs (a more specific entry wins), or put it
                // back when removed.
                std::iter::once(&p.defaults)
                    .chain(p.params.iter().filter(|r| {
                        r.name.starts_with("cpufreq:") || r.name.starts_with("ethtool:")
                    }))
                    .map(|r| {
                        let mut r = r.clone();
                        r.line = 0;
                        format!("{r:?}")
                    })
                    .collect::<Vec<_>>()
            };
        // Knobs come only from `[params]` entries that name the optimizer: with none in either
        // policy, there is no loop to restart.
        let gives_knobs = |p: &Policy| {
            p.params.iter().any(|r| {
                (r.name.starts_with("cpufreq:") || r.name.starts_with("ethtool:"))
                    && r.sources.contains(&Source::Optimizer)
            })
        };
        let optimizer_knobs_changed = (gives_knobs(&new) || gives_knobs(&self.path.policy))
            && optimizer_rules(&new) != optimizer_rules(&self.path.policy);
        self.guard
            .set_config(crate::guard::GuardConfig::from_policy(&new.guard));
        self.approvals.set_settings(new.approvals.clone());
        let old = std::mem::replace(&mut self.path.policy, new);
        self.policy_file_differs = false;
        // Offline commands after the agent stops decide under the file it last ran with: a
        // symlink repointed since the start names another file now.
        let named = self.policy_file.1.then_some(self.policy_file.0.as_path());
        if let Err(e) = crate::control::record_policy_path(self.path.journal.dir(), named) {
            warn!("policy reload: the policy's path cannot be recorded: {e}");
        }
        info!(
            "policy reloaded from {} (was {})",
            self.path.policy.origin, old.origin
        );
        let mut events = vec![Event::Policy {
            outcome: "reloaded",
            source: self.path.policy.origin.to_string(),
            error: None,
            optimizer_knobs_changed,
        }];
        events.extend(self.take_events());
        if optimizer_knobs_changed {
            info!(
                "policy reload: the optimizer's cpufreq or ethtool entries changed; its live loop \
                 settles and starts again over them"
            );
            events.extend(self.restart_optimizer(config));
        }
        events
    }

    /// The optimizer's entries changed: the loop running settles, and a new one starts from
    /// the kernel's values. Called with the new policy in force.
    ///
    /// The settle is decided under the new policy. It writes only reverts of the loop's own
    /// changes, which no policy's bounds hold back (only the built-in deny-list, the same in
    /// every policy), so the new policy cannot refuse it; what the new policy decides is where
    /// to: the cheapest configuration measured within the SLO that its bounds allow, or else the
    /// start (what the knobs held when this loop began, not a trial; when that was a stopped
    /// agent's trial measured beyond the SLO, what they held before the trials). Settled under
    /// the old
    /// policy, the loop could rest on a measured value the operator has just excluded, and the
    /// new loop would start from it and leave it in place until its first trial moves it away
    /// (never, without traffic on the SLO port): narrowing a bound would not take the loop's
    /// values out of it.
    fn restart_optimizer(&mut self, config: &Config) -> Vec<Event> {
        let mut events = Vec::new();
        // The window open now began under the old loop: the settle's writes, after this mark,
        // tell the new loop that it did not hold its start for the whole window.
        let mark = self.path.journal.records().len();
        // Settled in place, taken out after: a panic in the settle leaves the loop where the
        // shutdown's settle (`carry_out_on_exit`) still finds it.
        if let Some(optimizer) = self.optimizer.as_mut() {
            let knobs = optimizer.knobs();
            let settled = optimizer.on_reload(&mut self.path, &mut self.guard);
            let skipped = optimizer.take_skipped_reverts();
            // Its `change` events first, as in a window.
            events.extend(self.take_events());
            events.extend(self.yield_after_the_loops_reverts(&skipped));
            for e in settled {
                info!("policy reload: optimizer: {}", optimizer_log_line(&e));
                events.push(optimizer_event(knobs.clone(), e));
            }
        }
        self.optimizer = None;
        events.extend(self.start_optimizer(config));
        if let Some(optimizer) = self.optimizer.as_mut() {
            optimizer.count_changes_since(mark);
        }
        events
    }

    /// An edited policy file takes effect only when it is loaded again (SIGHUP): without a word,
    /// an operator would believe the edit in force.
    fn say_if_the_policy_file_changed(&mut self) {
        let why = self.path.policy.changed_on_disk();
        match (&why, self.policy_file_differs) {
            (Some(why), false) => {
                tracing::warn!("{why} (until then operators' apply and approve are refused)")
            }
            (None, true) => tracing::info!("the policy file holds what the agent loaded again"),
            _ => {}
        }
        self.policy_file_differs = why.is_some();
    }

    /// A window closed: the guard judges the changes it watches; a regression is reverted through
    /// the journal and its value quarantined.
    pub fn on_window(&mut self, window: &Window) -> Vec<Event> {
        // People first: a cpufreq or coalescing value someone else wrote is theirs, before the
        // guard could revert over it.
        let mut events = super::yielding::check_values(&mut self.path, &mut self.guard);
        self.say_if_the_policy_file_changed();
        if let Some(optimizer) = self.optimizer.as_mut() {
            optimizer.window_closed(&self.path);
        }
        // A change reverted since it was watched (an operator's `kpo revert`, the optimizer's
        // rollback, a yield) has nothing left to judge.
        self.guard.retain_in_place(in_place(&self.path.journal));
        // A preference the cpufreq driver holds under KPO's performance governor has no effect
        // while it does: not judged then (its revert would be skipped, its watch could end
        // "kept" over windows it did nothing in); judged again once the governor leaves. A
        // somaxconn raise acts when a capped listener listens again: judged from the window
        // after, against the windows up to the one before, which show the host with the raise
        // in place and no effect of it yet.
        for key in self.listen_again.ended() {
            self.guard.baseline_again(&key, self.last_window.as_ref());
        }
        let path = &self.path;
        let listen_again = &self.listen_again;
        let verdicts = self.guard.observe_but(window, |address, key| {
            if crate::actuate::cpufreq::governor_of(address).is_some()
                && path.moved_by_the_kernel(address)
            {
                return Some(crate::guard::NotJudged::WithoutEffect);
            }
            listen_again.not_judged(key)
        });
        let guard = &self.guard;
        self.listen_again
            .window_closed(|key| guard.watches_key(key));
        for verdict in self.in_passing_order(verdicts) {
            let Verdict::Revert {
                change_id,
                address,
                value,
                signal,
                before,
                before_windows,
                before_tick,
                before_left_out,
                after,
                service,
            } = &verdict
            else {
                events.extend(self.take_events());
                events.push(Event::Guard(GuardEvent::kept(verdict)));
                continue;
            };
            let of = crate::guard::baseline_words(*before_windows, *before_tick, *before_left_out);
            let mut why = revert_reason(*signal, service.as_ref(), *before, &of, *after);
            // Made on top of changes of the parameter not yet judged: judged with them, from the
            // health before the first, whose value before goes back.
            let judged_with = self.guard.judged_with(*change_id);
            let target = judged_with.first().copied().unwrap_or(*change_id);
            if !judged_with.is_empty() {
                why.push_str(&format!(
                    "; #{change_id} was made on top of {}, not yet judged, and was judged with \
                     {} from the health before #{target}: the value before #{target} goes back",
                    ids_words(&judged_with),
                    if judged_with.len() == 1 { "it" } else { "them" }
                ));
            }
            // The revert first: killed between the two, the host is back to its value, never
            // quarantined while still applied, and the next start journals the quarantine
            // (`ChangePath::restore_guard_quarantines`).
            // Not reverted unless the report says so: a revert skipped because someone else's
            // value is in place (yielded to just below) leaves the journal holding no change,
            // like one that took.
            let mut blocked = None;
            let reverted = match judged_with.first() {
                Some(&first) => {
                    self.path
                        .revert_own_through(first, *change_id, Source::Guard, &why)
                }
                None => self.path.revert_own(*change_id, Source::Guard, &why),
            };
            let failure = match reverted {
                Ok(r) => {
                    // The revert's own id leads the line: the change it undid is named too,
                    // the one an operator looks up (s61 story CC-1).
                    info!("guard: {} (undoing #{change_id})", r.describe());
                    events.extend(super::yielding::after_own_revert(
                        &mut self.path,
                        &mut self.guard,
                        &r,
                    ));
                    blocked = self.path.revert_blocked_by_others(&r);
                    // Unchanged: the kernel had the value before already.
                    (!matches!(r.status, ChangeStatus::Reverted | ChangeStatus::Unchanged))
                        .then(|| r.describe())
                }
                Err(e) => {
                    warn!("guard: reverting #{change_id}: {e}");
                    Some(e.to_string())
                }
            };
            // Not done while the journal still holds the change: the write failed, or read back
            // wrong and the change's value was put back, or its put-back failed too and left a
            // value of KPO's own (whatever the journal could record of it).
            // By the key the change was journaled under: a path in the watch's address may
            // name another namespace now, or none.
            let key = self
                .path
                .journal
                .intent(*change_id)
                .map(|i| i.key.clone())
                .or_else(|| {
                    address
                        .parse::<ParamAddress>()
                        .ok()
                        .map(|a| crate::journal::target_key(&a))
                });
            let held = key
                .as_deref()
                .and_then(|key| self.path.journal.param_by_key(key))
                .filter(|p| p.holding == Some(*change_id) && p.yielded.is_none())
                .and_then(|p| p.last_applied.clone());
            // A change in a network namespace that is gone (deleted) is still the journal's, but
            // nothing can revert it or judge it there: watched again, it would give this verdict,
            // and fail, in every regressing window. Gone only for certain: the namespace cannot
            // be opened *and* its inode is in use nowhere; a failure to open it for another
            // reason (a descriptor limit, a race with /proc) leaves the watch to try again.
            let namespace_gone = address
                .parse::<ParamAddress>()
                .ok()
                .zip(key.as_deref())
                .is_some_and(|(a, key)| self.path.namespace_gone_for_certain(&a, key));
            if held.is_some() && namespace_gone {
                warn!(
                    "guard: #{change_id} ({address}) cannot be reverted: its network namespace \
                     is gone; the guard stops watching it"
                );
                events.extend(self.take_events());
                events.push(Event::Guard(GuardEvent {
                    verdict,
                    reverted: Some(false),
                    judged_with: judged_with.clone(),
                    error: Some(
                        "its network namespace is gone: nothing can revert the change there; \
                         no longer watched"
                            .to_string(),
                    ),
                }));
                continue;
            }
            // A NIC's change whose device the revert found gone for certain from under its name
            // (and settled in the journal): its value is the old device's, and the device under
            // the name now is another, with its own values: no quarantine of the old one's.
            if key
                .as_deref()
                .is_some_and(|key| self.path.device_gone_since(key, *change_id))
            {
                warn!(
                    "guard: #{change_id} ({address}) cannot be reverted: its network device is \
                     gone; the guard stops watching it"
                );
                events.extend(self.take_events());
                events.push(Event::Guard(GuardEvent {
                    verdict,
                    reverted: Some(false),
                    judged_with: judged_with.clone(),
                    error: failure.or_else(|| Some("its network device is gone".to_string())),
                }));
                continue;
            }
            // A revert that only someone else can let through (a limit across a person's other
            // limit): watched again, it would give this verdict and the same refusal in every
            // regressing window, for as long as they hold it.
            if let (Some(_), Some(blocked)) = (&held, blocked) {
                self.guard.not_reverted(*change_id);
                warn!(
                    "guard: #{change_id} ({address}) cannot be reverted while {blocked}; the \
                     guard stops watching it"
                );
                events.extend(self.take_events());
                events.push(Event::Guard(GuardEvent {
                    verdict,
                    reverted: Some(false),
                    judged_with: judged_with.clone(),
                    error: Some(format!(
                        "{}; it cannot be reverted while {blocked}: no longer watched",
                        failure.unwrap_or_default()
                    )),
                }));
                continue;
            }
            if let Some(held) = held {
                // The change is still there: watched again at the value held, reverted at the
                // next regressing window, and its value not quarantined while applied.
                self.guard.keep_watching(*change_id, Some(&held));
                events.extend(self.take_events());
                events.push(Event::Guard(GuardEvent {
                    verdict,
                    reverted: Some(false),
                    judged_with: judged_with.clone(),
                    error: failure.or_else(|| Some("the journal still holds the change".into())),
                }));
                continue;
            }
            if let Ok(addr) = address.parse::<ParamAddress>() {
                // Under the change's own key, whatever its path names now.
                let addr = match key.as_deref() {
                    Some(key) => crate::journal::reach(&addr, key),
                    None => addr,
                };
                let quarantine = self.path.policy.guard.quarantine;
                // The value the change asked for, which an advisor would propose again (the
                // watch's may be what a first, failed revert left). A change archived since it
                // was watched (over a day old at a restart) falls back on the watch's. And the
                // values of the changes judged with it.
                let asked = self
                    .path
                    .journal
                    .intent(*change_id)
                    .map(|i| i.after.clone());
                let earlier = (judged_with.iter())
                    .filter_map(|id| self.path.journal.intent(*id).map(|i| i.after.clone()));
                // Each once, and never the value the revert put back (s50 review G3).
                let put_back = self.path.journal.intent(target).map(|i| i.before.clone());
                let mut values: Vec<Value> = Vec::new();
                for v in earlier.chain(std::iter::once(asked.unwrap_or_else(|| value.clone()))) {
                    if !values.contains(&v) && put_back.as_ref() != Some(&v) {
                        values.push(v);
                    }
                }
                let mut quarantined = Vec::new();
                for value in values {
                    match self
                        .path
                        .journal
                        .quarantine(&addr, &value, quarantine, &why)
                    {
                        Ok(_) => quarantined.push(value),
                        Err(e) => warn!("journal: quarantine of {address}: {e}"),
                    }
                }
                if failure.is_none() && !quarantined.is_empty() {
                    self.guard_quarantines.push(GuardQuarantine {
                        change_id: *change_id,
                        address: addr,
                        values: quarantined,
                        window: self.windows,
                    });
                }
            }
            events.extend(self.take_events());
            events.push(Event::Guard(GuardEvent {
                verdict,
                reverted: Some(failure.is_none()),
                error: failure,
                judged_with,
            }));
        }
        let cleared = self.guard.window_closed(window);
        events.extend(self.lift_cleared_quarantines(cleared));
        self.guard.save();
        self.last_window = Some(window.clone());
        events.extend(self.advise(window));
        self.approvals.on_window(&self.path);
        events.extend(self.take_events());
        events.extend(self.optimize(window));
        // After it: the window that closed was not the new loop's start's, nor learned by it.
        events.extend(self.start_optimizer_if_alike());
        // Changes from now on are made inside the next window, and judged from the one after.
        self.guard.window_under_way();
        events
    }

    /// The quarantines of the guard's reverts that the window just closed cleared
    /// ([`crate::guard::Cleared`]): lifted, logged, and each said in a `guard` event with the
    /// verdict `cleared`. A revert older than its first window wholly after it is forgotten.
    fn lift_cleared_quarantines(&mut self, cleared: Vec<crate::guard::Cleared>) -> Vec<Event> {
        let mut events = Vec::new();
        for (id, why) in self.guard.take_not_cleared() {
            if (self.guard_quarantines.iter()).any(|q| q.change_id == id) {
                info!("guard: #{id}'s revert is not cleared ({why}): its quarantine stays");
            }
        }
        for c in cleared {
            // A revert that did not take, or took nothing out, quarantined nothing to lift.
            let Some(at) = (self.guard_quarantines.iter()).position(|q| q.change_id == c.change_id)
            else {
                debug!(
                    "guard: #{} would be cleared, but its revert quarantined nothing",
                    c.change_id
                );
                continue;
            };
            let q = self.guard_quarantines.remove(at);
            // With units, and the service for request_p99 (s62 story CF-1: a figure no one could
            // place beside another service's).
            let still = (c.signals.iter())
                .map(crate::guard::StillPast::words)
                .collect::<Vec<_>>()
                .join(", ");
            let why = format!(
                "the guard saw {still} in the first window wholly after #{}'s revert: the \
                 change was not its cause",
                c.change_id
            );
            let mut lifted = Vec::new();
            let now_ms = crate::journal::now_ms();
            let within = CLEARED_ONCE_WITHIN.as_millis() as u64;
            self.cleared_lately
                .retain(|(.., at)| now_ms.saturating_sub(*at) < within);
            let key = crate::journal::target_key(&q.address);
            for value in q.values {
                if (self.cleared_lately.iter()).any(|(k, v, _)| *k == key && *v == value) {
                    info!(
                        "guard: #{} ({}): {value} was cleared once within a day already; its \
                         quarantine stays",
                        c.change_id, q.address
                    );
                    continue;
                }
                match self.path.journal.lift_quarantine(&q.address, &value, &why) {
                    Ok(true) => {
                        self.cleared_lately
                            .push((key.clone(), value.clone(), now_ms));
                        lifted.push(value)
                    }
                    Ok(false) => {}
                    Err(e) => warn!("journal: lifting the quarantine of {}: {e}", q.address),
                }
            }
            if lifted.is_empty() {
                continue;
            }
            // A rule whose advice was refused as quarantined holds it for `repeat_windows`: it
            // may give it again now, where its condition holds (s57 story BF-3).
            let mut kernel = PathView::new(&self.path, self.host_netns, self.hz);
            self.rules.release(&q.address, &mut kernel);
            info!(
                "guard: #{} ({}) is cleared: {why}; the quarantine of {} is lifted",
                c.change_id,
                q.address,
                (lifted.iter())
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            events.push(Event::Guard(GuardEvent::kept(Verdict::Cleared {
                change_id: c.change_id,
                address: q.address.to_string(),
                values: lifted,
                still_past: (c.signals.into_iter())
                    // To three decimals, as the reasons quote them (s57 story BF-4: a bar of
                    // 6236.599999999999).
                    .map(|still| crate::guard::StillPast {
                        after: (still.after * 1000.0).round() / 1000.0,
                        bar: (still.bar * 1000.0).round() / 1000.0,
                        ..still
                    })
                    .collect(),
            })));
        }
        // Its first window wholly after the revert has closed: whatever it showed, nothing more
        // is to be seen of it.
        let closed = self.windows;
        self.guard_quarantines.retain(|q| q.window + 2 > closed);
        events
    }

    /// A window's verdicts with the reverts of one cpufreq policy's two limits in an order each
    /// write passes ([`crate::actuate::cpufreq::passing_order`]: going up the max first, going
    /// down the min first), as the optimizer's trials and `restore_originals` write them. The
    /// guard gives its verdicts in the order the changes were watched: after a trial that lowered
    /// both limits (the min first), the min going back up first would be above the max still
    /// low, which the kernel clamps (or refuses), so the min would stay at the trial's value.
    /// Every other verdict keeps its place. The direction is from the kernel's value now to the
    /// value before the change, which the revert writes.
    fn in_passing_order(&self, verdicts: Vec<Verdict>) -> Vec<Verdict> {
        let writes: Vec<Option<(ParamAddress, bool)>> = verdicts
            .iter()
            .map(|verdict| {
                let Verdict::Revert {
                    change_id,
                    address,
                    value,
                    ..
                } = verdict
                else {
                    return None;
                };
                let address = address
                    .parse::<ParamAddress>()
                    .ok()
                    .filter(|a| a.kind() == ParamKind::Cpufreq)
                    .filter(|a| crate::actuate::cpufreq::is_limit(&a.name))?;
                // An archived change (watched over a day, across a restart) keeps its place.
                let to = self.path.journal.intent(*change_id)?.before.as_int()?;
                let now = self.path.read(&address).ok().and_then(|v| v.as_int());
                let lowering = to < now.or(value.as_int())?;
                Some((address, lowering))
            })
            .collect();
        let writes: Vec<Option<(&ParamAddress, bool)>> = writes
            .iter()
            .map(|w| w.as_ref().map(|(a, lowering)| (a, *lowering)))
            .collect();
        let mut verdicts: Vec<Option<Verdict>> = verdicts.into_iter().map(Some).collect();
        crate::actuate::cpufreq::passing_order(&writes)
            .into_iter()
            .filter_map(|i| verdicts[i].take())
            .collect()
    }

    /// The optimizer's reverts that left a value because someone else wrote it since: KPO yields
    /// to a person there (`admin_override`), as after the guard's reverts and `on_exit`'s, rather
    /// than leave it to the next window's value check, which a stopping agent never reaches.
    fn yield_after_the_loops_reverts(&mut self, skipped: &[ChangeReport]) -> Vec<Event> {
        skipped
            .iter()
            .filter_map(|r| super::yielding::after_own_revert(&mut self.path, &mut self.guard, r))
            .collect()
    }

    /// The optimizer's trial: its changes go through the change path as source `optimizer`,
    /// watched by the guard (advise/optimizer/agent.rs).
    fn optimize(&mut self, window: &Window) -> Vec<Event> {
        let Some(optimizer) = self.optimizer.as_mut() else {
            return Vec::new();
        };
        let done = optimizer.on_window(&mut self.path, &mut self.guard, window);
        let skipped = optimizer.take_skipped_reverts();
        let mut events = self.take_events();
        events.extend(self.yield_after_the_loops_reverts(&skipped));
        events.extend(done.into_iter().map(|(knobs, e)| optimizer_event(knobs, e)));
        events
    }

    /// The rules read the window; what they recommend goes to [`Deciding::consider`].
    fn advise(&mut self, window: &Window) -> Vec<Event> {
        self.windows += 1;
        self.release_held_back();
        self.release_unjournaled();
        let at = WindowRef {
            index: self.windows,
            end: window.end.clone(),
        };
        let mut kernel = PathView::new(&self.path, self.host_netns, self.hz);
        let recommendations = self
            .rules
            .on_window(&at, window, &mut kernel, &self.path.policy);
        self.save_rules_state();
        self.consider(recommendations)
    }

    /// Keeps what the rules judged in the state directory when it changed. A failure is logged
    /// once and the rules go on in memory; every window tries again until a save succeeds.
    fn save_rules_state(&mut self) {
        let now = RulesState::of(&self.rules, self.hz);
        if now == self.rules_saved {
            return;
        }
        match now.save(self.path.journal.dir()) {
            Ok(()) => {
                if std::mem::take(&mut self.rules_save_failing) {
                    info!("rules: what they judged is kept in the state directory again");
                }
                self.rules_saved = now;
            }
            Err(e) => {
                if !std::mem::replace(&mut self.rules_save_failing, true) {
                    warn!(
                        "rules: cannot keep what they judged in the state directory ({e}); tried \
                         again every window, a restart before it succeeds forgets it"
                    );
                }
            }
        }
    }

    /// A tick ended: the rules read the tick (from `previous` to `sample`) and may advise before
    /// the window closes; advice is for the window in progress.
    pub fn on_tick(&mut self, previous: &Sample, sample: &Sample) -> Vec<Event> {
        self.listening = Listening::of(sample, self.own_endpoint);
        self.listen_again.tick(&self.listening);
        let tick = tick_window(previous, sample);
        self.on_tick_window(&tick.without_endpoint(self.own_endpoint))
    }

    /// The agent's own metrics endpoint, whose scrapes are no work of the host's.
    pub fn set_own_endpoint(&mut self, endpoint: Option<crate::window::Endpoint>) {
        self.own_endpoint = endpoint;
    }

    /// [`Deciding::on_tick`] over the tick's window.
    pub(super) fn on_tick_window(&mut self, tick: &Window) -> Vec<Event> {
        self.release_held_back();
        let at = WindowRef {
            index: self.windows + 1,
            end: tick.end.clone(),
        };
        let mut kernel = PathView::new(&self.path, self.host_netns, self.hz);
        let recommendations = self
            .rules
            .on_tick(&at, tick, &mut kernel, &self.path.policy);
        self.guard.advising_on_tick(Some(tick));
        let events = self.consider(recommendations);
        self.guard.advising_on_tick(None);
        events
    }

    /// Every advisor's recommendations end here (crate::approvals::desk): conflicting ones for
    /// one parameter and target are merged to the most conservative; each is reported, and one
    /// that asks for a kernel change goes to the change path as a proposal of its advisor's
    /// source, where the policy decides (apply, wait for approval, record only, refuse). One its
    /// advisor did not allow to auto-apply is held for approval: the advisor can only make a
    /// change more cautious. What needs approval becomes a pending approval.
    pub fn consider(&mut self, recommendations: Vec<Recommendation>) -> Vec<Event> {
        let sink = self.pending.clone();
        let mut drain = move || -> Vec<Event> {
            std::mem::take(
                &mut *sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
            .into_iter()
            .map(Event::from)
            .collect()
        };
        let considered = self
            .approvals
            .consider(&mut self.path, recommendations, &mut drain);
        for report in &considered.applied {
            self.watch_if_applied(report);
        }
        for proposal in considered.unjournaled {
            if proposal.source == Source::Rules {
                self.unjournaled
                    .insert(crate::journal::target_key(&proposal.address), proposal);
            }
        }
        for (proposal, refusal) in considered.refused {
            if proposal.source == Source::Rules && refusal.passes() {
                let code = refusal.code();
                self.held_back.insert(
                    crate::journal::target_key(&proposal.address),
                    (proposal, self.windows, code),
                );
            }
        }
        considered.events
    }

    /// The rules' proposals whose passing refusal has passed (the policy would now decide them
    /// otherwise) are released, before the rules read the next tick or window.
    fn release_held_back(&mut self) {
        let windows = self.windows;
        // By then the rule repeats its advice by itself: nothing left to release.
        self.held_back.retain(|_, (_, at, _)| {
            windows.saturating_sub(*at) < crate::advise::rules::REPEAT_WINDOWS
        });
        let path = &self.path;
        // Held still, and for the same reason.
        let still_held = |p: &Proposal, code: &str| {
            // The journal alone answers for a pause, a yield, a cooldown or the hourly limit;
            // the kernel is read (for a namespace, a scan of /proc) only once those have passed.
            let ctx = path
                .journal
                .context(&p.address, &p.value, std::time::SystemTime::now());
            let held =
                |d: &Decision| matches!(d, Decision::Refused(r) if r.passes() && r.code() == code);
            // Then the change path's own word, which sees a yield the journal has not recorded
            // yet (someone's write this window): without it, a proposal refused as yielded in a
            // cooldown was released at every tick to be refused again (s61 review1 R1-6).
            held(&path.policy.decide(p, &ctx)) || held(&path.preview(p))
        };
        let passed: Vec<String> = self
            .held_back
            .iter()
            .filter(|(_, (p, _, code))| !still_held(p, code))
            .map(|(key, _)| key.clone())
            .collect();
        if passed.is_empty() {
            return;
        }
        let mut kernel = PathView::new(&self.path, self.host_netns, self.hz);
        for key in passed {
            if let Some((p, ..)) = self.held_back.remove(&key) {
                self.rules.release(&p.address, &mut kernel);
            }
        }
    }

    /// The rules' proposals the journal could not record are given again from this window on:
    /// once a window (not every tick) while it still cannot.
    fn release_unjournaled(&mut self) {
        if self.unjournaled.is_empty() {
            return;
        }
        let mut kernel = PathView::new(&self.path, self.host_netns, self.hz);
        for p in std::mem::take(&mut self.unjournaled).into_values() {
            self.rules.release(&p.address, &mut kernel);
        }
    }

    /// Sysctl writes by other processes: a managed parameter whose value is no longer the one KPO
    /// applied was changed by a person. KPO stops managing it at that target and keeps their value.
    pub fn on_sysctl_writes(&mut self, writes: &[SysctlWriteEvent]) -> Vec<Event> {
        let mut events = Vec::new();
        if writes.is_empty() {
            return events;
        }
        let managed: Vec<_> = self
            .path
            .journal
            .params()
            .filter(|p| p.yielded.is_none())
            // Its latest value of KPO's may be lost to a damaged journal line: a value unlike
            // the last applied one may be KPO's own (as in the value check).
            .filter(|p| p.unsettled.is_none())
            .filter_map(|p| Some((p.reach()?, p.last_applied.clone()?)))
            .filter(|(a, _)| a.kind() == ParamKind::Sysctl)
            .collect();
        for (address, applied) in managed {
            if !writes.iter().any(|w| w.name == address.name) {
                continue;
            }
            let Ok(now) = self.path.read(&address) else {
                continue;
            };
            if now == applied {
                continue; // the write was to another namespace's copy, or rewrote our value
            }
            // The watch does not see which namespace's copy a write went to: the writer named is
            // the latest whose value is the one found here, or none (s52 storyAG AG-1: a write
            // of 50 in another namespace was named for the 41 found here).
            let writer = match writes
                .iter()
                .rev()
                .find(|w| w.name == address.name && written_as(w, &now))
            {
                Some(write) => super::yielding::Writer {
                    by: format!("{} (pid {})", write.comm, write.pid),
                    pid: Some(write.pid),
                    comm: Some(&write.comm),
                    seen_by: "sysctl_watch",
                },
                None => super::yielding::Writer::unseen(),
            };
            events.extend(super::yielding::yield_to(
                &mut self.path,
                &mut self.guard,
                &address,
                now,
                applied,
                writer,
            ));
        }
        events
    }

    /// Says which values `on_exit = "revert"` leaves because they are not KPO's: yielded to a
    /// person, or handed back (`kpo resume`) with a person's value that KPO has not changed
    /// since. Without it an operator who reads the policy expects the original back and finds
    /// the person's value with nothing in the log to say why.
    fn log_values_on_exit_leaves(&self) {
        for p in self.path.journal.params() {
            let Some(address) = p.reach() else { continue };
            if self.path.policy.rule_for(&address).on_exit != OnExit::Revert {
                continue;
            }
            // Not known (forgotten at a reboot): there is nothing it would put back.
            let Some(original) = &p.original else {
                continue;
            };
            if let Some((by, at_ms)) = &p.yielded {
                info!(
                    "on exit: {address} is left as the kernel has it, not put back to {original}: \
                     yielded to {by} at {} (on_exit = revert puts back only what KPO set)",
                    crate::journal::format_ms(*at_ms)
                );
            } else if p.last_applied.is_none() && self.handed_back_since_its_last_change(&p.key) {
                let Ok(now) = self.path.read(&address) else {
                    continue;
                };
                if now != *original {
                    info!(
                        "on exit: {address} is left at {now}, not put back to {original}: KPO \
                         has not changed it since it was handed back (kpo resume) with that \
                         value (on_exit = revert puts back only what KPO set)"
                    );
                }
            }
        }
    }

    /// Whether the journal's latest word on `key` is its hand-back (`kpo resume`) rather than a
    /// change of KPO's: a change that failed leaves no value of KPO's either, and was never
    /// handed back.
    fn handed_back_since_its_last_change(&self, key: &str) -> bool {
        use crate::journal::Record;
        self.path
            .journal
            .records()
            .iter()
            .rev()
            .find_map(|r| match r {
                Record::Manage { key: k, .. } if k == key => Some(true),
                Record::Intent(i) if i.key == key => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }

    /// At shutdown: parameters whose policy says `on_exit = "revert"` are put back, through the
    /// journal.
    pub fn on_exit(&mut self) -> Vec<Event> {
        // No agent is left to take a failing journal up again: its error says what is.
        self.path.journal.set_stopping();
        // Edited since the last window's check (or since a warning the operator read as done):
        // what follows is the policy in force, not the file (noticed in s47).
        if self.path.policy.changed_on_disk().is_some() {
            warn!(
                "on exit: the policy file differs from the policy the agent loaded ({}), which \
                 its on_exit and bounds follow now: send SIGHUP and wait for its policy event \
                 before stopping to follow the file",
                self.path.policy.origin
            );
        }
        // The optimizer's trial first: what it settles on is then kept or reverted as below.
        let mut events = Vec::new();
        if let Some(optimizer) = self.optimizer.as_mut() {
            let knobs = optimizer.knobs();
            let settled = optimizer.on_exit(&mut self.path, &mut self.guard);
            let skipped = optimizer.take_skipped_reverts();
            // Its `change` events first, as in a window.
            events.extend(self.take_events());
            // Yielded before `on_exit`'s reverts, which then leave the person's value alone.
            events.extend(self.yield_after_the_loops_reverts(&skipped));
            for e in settled {
                info!("on exit: optimizer: {}", optimizer_log_line(&e));
                events.push(optimizer_event(knobs.clone(), e));
            }
        }
        self.log_values_on_exit_leaves();
        let values: Vec<ParamAddress> = self
            .path
            .journal
            .params()
            .filter(|p| p.yielded.is_none() && p.last_applied.is_some())
            // A namespace whose path is deleted while it lives on is put back by its inode.
            .filter_map(crate::journal::ParamState::reach)
            .filter(|address| self.path.policy.rule_for(address).on_exit == OnExit::Revert)
            .collect();
        // A switch KPO turned off so that a value could be set goes back on (after the values;
        // ChangePath::restore_originals) when that value's policy says `on_exit = "revert"`,
        // whether or not the policy names the switch, and whatever became of the value (a crash
        // between the two changes, a value that never took).
        let mut revert = values;
        let switches: Vec<ParamAddress> = self
            .path
            .journal
            .records()
            .iter()
            .filter_map(|r| match r {
                crate::journal::Record::Intent(i) => {
                    let made_way_for = i.made_way_for.as_deref()?.parse::<ParamAddress>().ok()?;
                    (self.path.policy.rule_for(&made_way_for).on_exit == OnExit::Revert)
                        .then(|| i.address.clone())
                }
                _ => None,
            })
            .filter(|switch| {
                self.path
                    .journal
                    .param_state(switch)
                    .is_some_and(|s| s.last_applied.is_some())
            })
            .collect();
        for switch in switches {
            if !revert.contains(&switch) {
                revert.push(switch);
            }
        }
        let reports =
            match self
                .path
                .restore_originals(revert, Source::Operator, ON_EXIT_REASON, true)
            {
                Ok(reports) => reports,
                Err(stopped) => {
                    events.extend(self.take_events());
                    events.extend(Self::not_put_back_on_exit(&stopped));
                    // What was done before it is logged and followed up as without a failure.
                    stopped.reports
                }
            };
        for r in reports {
            // A value that could not be put back stays in the kernel after the agent is gone:
            // the operator must hear of it.
            if self.path.stays_after_exit(&r) {
                warn!("on exit: not put back: {}", r.describe());
            } else {
                info!("on exit: {}", r.describe());
            }
            events.extend(super::yielding::after_own_revert(
                &mut self.path,
                &mut self.guard,
                &r,
            ));
        }
        self.approvals.clear_what_no_longer_holds(&self.path);
        events.extend(self.take_events());
        events
    }

    /// The journal's last id: the mark the loop moves to once the events queued up to now are
    /// written (`offline_changes::MarkKeeper`).
    pub fn journal_last_id(&self) -> u64 {
        self.path.journal.last_id()
    }

    /// Moves the mark of the changes the event stream carried to `id`, whose events (and every
    /// earlier one's) the stream has written (`offline_changes::MarkKeeper`). Only the commands
    /// run while no agent runs journal changes no stream carries; what an agent journaled after
    /// its last mark, killed or its events lost before they were written, is sent again at the
    /// next start. A failure is logged when it starts, and tried again at the next call.
    pub fn save_events_mark(&mut self, id: u64) {
        if self.events_mark == Some(id) {
            return;
        }
        match crate::journal::events_mark::save(self.path.journal.dir(), id) {
            Ok(()) => self.events_mark = Some(id),
            Err(e) => {
                if self.events_mark.take().is_some() {
                    warn!(
                        "events: cannot keep the mark of the changes the event stream carried \
                         ({e}); tried again at the next window's, and a start before it \
                         succeeds sends this run's changes since again"
                    );
                }
            }
        }
    }

    /// The values `on_exit`'s reverts left in the kernel when the journal failed, named: none
    /// when only the record of the last revert failed (s46 storyL L2: the warning then named
    /// nothing and said values may stay, though every one was back; that revert's own warning
    /// says what the journal could not record).
    fn what_stays_on_exit(stopped: &crate::change::Stopped) -> Option<String> {
        let stays = stopped
            .reports
            .last()
            .filter(|r| r.status != ChangeStatus::Reverted)
            .into_iter()
            .chain(&stopped.not_tried);
        let listed: Vec<String> = stays.map(|r| r.address.to_string()).collect();
        let error = &stopped.error;
        (!listed.is_empty()).then(|| {
            format!(
                "on exit: not put back, so KPO's values may stay in the kernel after the agent \
                 stops: {}; {error}{}",
                listed.join(", "),
                crate::change::remedy_unless_said(error, "them")
            )
        })
    }

    /// `on_exit`'s reverts stopped at a journal failure, and no agent is left to take the journal
    /// up again: every value that may stay is named in the log, and each parameter not tried
    /// after the one the journal failed on (which has its own `failed` event from the change
    /// path) gets a `failed` event, with what puts it back.
    fn not_put_back_on_exit(stopped: &crate::change::Stopped) -> Vec<Event> {
        use crate::output::change_events::{ChangeEvent, ChangePhase};
        if let Some(warning) = Self::what_stays_on_exit(stopped) {
            warn!("{warning}");
        }
        stopped
            .not_tried
            .iter()
            .map(|r| {
                Event::Change(ChangeEvent {
                    phase: ChangePhase::Failed,
                    target: r.address.clone(),
                    before: r.before.clone(),
                    after: r.after.clone(),
                    source: Source::Operator,
                    reason: ON_EXIT_REASON.to_string(),
                    journal_id: None,
                    decision: None,
                    refusal: None,
                    read_back: None,
                    detail: r.detail.clone(),
                })
            })
            .collect()
    }

    /// As if the agent had started on a kernel of this tick rate: the rules take up what an
    /// earlier run judged under it.
    #[cfg(test)]
    pub(crate) fn set_hz_for_tests(&mut self, hz: Option<u32>) {
        self.hz = hz;
        self.rules_saved.restore(&mut self.rules, hz);
    }

    #[cfg(test)]
    pub(crate) fn set_policy_file_for_tests(&mut self, file: PathBuf, named: bool) {
        self.policy_file = (file, named);
    }

    #[cfg(test)]
    pub(crate) fn optimizer_for_tests(&self) -> Option<&AgentOptimizer> {
        self.optimizer.as_ref()
    }

    #[cfg(test)]
    pub(crate) fn path_for_tests(&self) -> &ChangePath {
        &self.path
    }

    #[cfg(test)]
    pub(crate) fn path_for_tests_mut(&mut self) -> &mut ChangePath {
        &mut self.path
    }

    fn take_events(&mut self) -> Vec<Event> {
        let mut events: Vec<Event> = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .map(Event::from)
        .collect();
        events.extend(self.approvals.take_events());
        events.extend(self.journal_state_changed());
        events
    }

    /// A `journal` event when the journal has started to fail since the stream was last told,
    /// or has recorded again: the log says it once each way too (`Journal::append`), and a log
    /// pipeline alerting on the stream should not have to infer it from `failed` changes.
    fn journal_state_changed(&mut self) -> Option<Event> {
        let journal = &self.path.journal;
        let failing = journal.unwritable();
        if failing.is_some() == self.journal_unwritable_said {
            return None;
        }
        self.journal_unwritable_said = failing.is_some();
        Some(Event::Journal {
            writable: failing.is_none(),
            dir: journal.dir().display().to_string(),
            error: failing.map(str::to_string),
        })
    }
}

fn optimizer_event(knobs: Vec<String>, event: LiveEvent) -> Event {
    Event::Optimizer(OptimizerEvent { knobs, event })
}

/// A sysctl this machine lacks, or a namespace path that names no file, in the policy in force:
/// `kpo check`'s warnings, in the log, since an entry that names nothing here decides nothing
/// (or, for a namespace, refuses) without a word until a change meets it.
fn warn_of_what_the_policy_names_in_vain(policy: &Policy, config: &Config) {
    for w in crate::check::warnings(policy, &config.proc_root.join("sys")) {
        warn!("policy: {w}");
    }
    let env = |k: &str| std::env::var(k).ok();
    if let Some(w) = crate::check::approvals_expire_between_llm_consultations(policy, config, env) {
        warn!("policy: {w}");
    }
    if let Some(w) = crate::check::approvals_expire_between_rules_repeats(policy, config) {
        warn!("policy: {w}");
    }
    if let Some(w) = crate::check::approvals_cleared_too_soon(policy, config) {
        warn!("policy: {w}");
    }
    // The loop says itself why it is off; the pace of a search that will not run is no news.
    if crate::check::optimizer_off_by_the_configuration(policy, config).is_none() {
        for w in crate::check::optimizer_held_back_by_the_limits(policy, config) {
            warn!("policy: {w}");
        }
    }
}

/// Changes named in words: `#3`, `#3 and #4`, `#3, #4 and #5`.
fn ids_words(ids: &[u64]) -> String {
    let named: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
    match named.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => named.join(""),
    }
}

/// The reason the guard's revert is journaled with, which `kpo journal` and `change` events show:
/// a rate to three decimals, as in the window events, not the fifteen digits of a division (the
/// `guard` event keeps the exact values).
pub(super) fn revert_reason(
    signal: crate::policy::HealthSignal,
    service: Option<&crate::guard::Service>,
    before: f64,
    of: &str,
    after: f64,
) -> String {
    let (before, after) = (crate::window::round3(before), crate::window::round3(after));
    // With the unit: "from 3757.4 to 56203.67" read as seconds or milliseconds as easily (s61
    // story BZ-3).
    let unit = signal.unit();
    // The service whose p99 the figure after is: the one to look at. The figure before is the
    // highest of the services', which may be another's (s62 review2 R2-6).
    let (of, at) = match service {
        Some(s) => (
            format!("{of}, the highest of the services busy then"),
            format!(" at {s}"),
        ),
        None => (of.to_string(), String::new()),
    };
    format!("the guard saw {signal} go from {before} {unit} ({of}) to {after} {unit}{at}")
}

/// Why the live loop could never measure its SLO under `config`, if so: the latency is the
/// request_latency sensor's. Started anyway, it said "live loop on" and then, each window, that
/// no request was timed (s44 storyB).
pub(crate) fn slo_unmeasured(config: &Config) -> Option<String> {
    if config
        .disabled_sensors
        .iter()
        .any(|s| s == "request_latency")
    {
        return Some(
            "the request_latency sensor is disabled (disabled_sensors, or --disable-sensor \
             request_latency), and the SLO's latency is its measurement"
                .into(),
        );
    }
    (config.duty_fraction <= 0.0).then(|| {
        "duty_fraction is 0: no sensor is attached, and the SLO's latency is the \
         request_latency sensor's measurement"
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ChangeError, ChangeReport, Stopped};
    use crate::journal::{JournalError, Resumes};

    /// Defect (s46 storyL L2): an agent stopping on a full disk, whose last `on_exit` revert was
    /// made and only its record failed, warned "not put back, so KPO's values may stay in the
    /// kernel after the agent stops: ; ..." (an empty list). No warning then; one naming the
    /// parameter when a revert was not made, and each parameter not tried.
    #[test]
    fn on_exit_warns_of_values_left_only_when_some_are() {
        let error = || {
            ChangeError::Journal(JournalError::Unwritable {
                dir: "/var/lib/kpo".into(),
                path: "/var/lib/kpo/journal.log".into(),
                source: std::io::Error::from_raw_os_error(28),
                then: Resumes::AgentStopping,
            })
        };
        let report =
            |key: &str, status| ChangeReport::new(&key.parse().unwrap(), &Value::Int(128), status);
        let put_back_unrecorded = Stopped {
            reports: vec![report("net.core.somaxconn", ChangeStatus::Reverted)],
            not_tried: Vec::new(),
            error: error(),
        };
        assert_eq!(Deciding::what_stays_on_exit(&put_back_unrecorded), None);
        let left = Stopped {
            reports: vec![
                report("net.core.somaxconn", ChangeStatus::Reverted),
                report("net.ipv4.tcp_fin_timeout", ChangeStatus::Failed),
            ],
            not_tried: vec![report("net.ipv4.tcp_keepalive_time", ChangeStatus::Failed)],
            error: error(),
        };
        let warning = Deciding::what_stays_on_exit(&left).unwrap();
        assert!(
            warning.starts_with(
                "on exit: not put back, so KPO's values may stay in the kernel after the agent \
                 stops: net.ipv4.tcp_fin_timeout, net.ipv4.tcp_keepalive_time; journal: "
            ),
            "{warning}"
        );
    }
}

/// An optimizer step for the log, as its event says it (s58 story BG-8: the log printed Rust's
/// debug form, `Settled { from: [...], to: [...] }`).
fn optimizer_log_line(e: &LiveEvent) -> String {
    serde_json::to_string(e).unwrap_or_else(|_| format!("{e:?}"))
}
