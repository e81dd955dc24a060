//! The deciding half inside `kpo run`: the one change path (policy, journal, actuators), the
//! operator's requests from the control socket, the deterministic rules (advise → policy →
//! actuate once per window), the guard watching each change, and yielding to people who change a
//! parameter KPO manages.
//!
//! The run loop owns one [`Deciding`] and calls it at three points: when a request arrives, when
//! a window closes, and at shutdown. Everything it does is journaled before the kernel is touched,
//! and reported as events through the loop's sink.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    actuate::{
        param::{NetnsRef, ParamAddress, ParamKind, Target, Value},
        Roots,
    },
    advise::{
        optimizer::{agent::AgentOptimizer, live::LiveEvent},
        recommendation::Recommendation,
        rules::accept_queue::{AcceptQueueConfig, AcceptQueueRule, NetnsSysctls, SOMAXCONN},
    },
    api::{
        handle, reply,
        server::{Incoming, Server},
        Request,
    },
    change::{ChangePath, ChangeReport, ChangeStatus, KernelActuators},
    cli::StateArgs,
    config::Config,
    control::Control,
    guard::{Guard, GuardConfig, Health, Verdict},
    journal::{Holder, Journal},
    output::{
        change_events::ChangePathEvent,
        events::{Event, OptimizerEvent},
    },
    policy::{OnExit, Policy, Proposal, Source},
    sensors::sysctl_watch::SysctlWriteEvent,
    window::Window,
};

/// How long the agent waits for a CLI that holds the state directory's lock at start.
const LOCK_WAIT: Duration = Duration::from_secs(10);

pub struct Deciding {
    path: ChangePath,
    guard: Guard,
    /// Change-path events waiting to be sent by the loop.
    pending: Arc<Mutex<Vec<ChangePathEvent>>>,
    requests: mpsc::Receiver<Incoming>,
    /// `None` only in tests that drive the deciding half without a socket.
    _server: Option<Server>,
    /// Health of the last closed window: the baseline of a change made now.
    last_health: Health,
    accept_queue: AcceptQueueRule,
    windows: u64,
    /// The agent's own network namespace: its keys are the host's.
    host_netns: u64,
    /// The optimizer's live loop, when the policy gives it knobs (advise/optimizer/agent.rs).
    optimizer: Option<AgentOptimizer>,
}

impl Deciding {
    /// Loads the policy, takes the state directory (journal, lock), reconciles changes a crash
    /// interrupted, and binds the control socket. Errors name what failed; the agent does not
    /// start without its journal, since it could not then change anything safely.
    pub fn open(state: &StateArgs, config: &Config) -> anyhow::Result<(Deciding, Vec<Event>)> {
        let policy = Policy::load(state.policy.as_deref())?;
        let dir = state.state_dir();
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the state directory {}: {e}", dir.display())
        })?;
        let journal = Journal::open(&dir, Holder::Agent, LOCK_WAIT)?;
        for w in journal.warnings() {
            warn!("journal: {w}");
        }
        let actuators = KernelActuators {
            roots: Roots {
                sys: config.sysfs_root.clone(),
                ..Roots::default()
            },
        };
        let path = ChangePath::new(policy, journal, Box::new(actuators));
        let (mut deciding, mut events) = Self::with_path(path)?;
        let socket = state
            .socket
            .clone()
            .unwrap_or_else(|| crate::api::DEFAULT_SOCKET.into());
        let (server, requests) = Server::bind(&socket)?;
        deciding._server = Some(server);
        deciding.requests = requests;
        events.extend(deciding.start_optimizer(config));
        Ok((deciding, events))
    }

    /// The deciding half over a change path, its journal reconciled, without a control socket
    /// ([`Deciding::open`] binds it; tests go without).
    pub(crate) fn with_path(mut path: ChangePath) -> anyhow::Result<(Deciding, Vec<Event>)> {
        let guard = Guard::new(GuardConfig::from_policy(&path.policy.guard));
        let pending = Arc::new(Mutex::new(Vec::new()));
        let sink = pending.clone();
        path.set_event_sink(move |e| sink.lock().expect("event buffer").push(e));
        let reconciled = path.reconcile()?;
        for r in &reconciled {
            info!("journal reconciled: {}", r.describe());
        }
        let (_, requests) = mpsc::channel(1);
        let mut deciding = Deciding {
            path,
            guard,
            pending,
            requests,
            _server: None,
            last_health: Health::default(),
            accept_queue: AcceptQueueRule::new(AcceptQueueConfig::default()),
            windows: 0,
            host_netns: std::fs::metadata("/proc/self/ns/net")
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap_or(0),
            optimizer: None,
        };
        let events = deciding.take_events();
        Ok((deciding, events))
    }

    /// Starts the optimizer's live loop if the policy gives it knobs, from the values the
    /// kernel has after reconciliation; says why not if it cannot run.
    pub(crate) fn start_optimizer(&mut self, config: &Config) -> Vec<Event> {
        match AgentOptimizer::start(&self.path, &config.optimizer, &config.sysfs_root) {
            Ok(None) => Vec::new(),
            Ok(Some((optimizer, started))) => {
                info!(knobs = ?optimizer.knobs(), "optimizer: live loop on");
                let event = optimizer_event(optimizer.knobs(), started);
                self.optimizer = Some(optimizer);
                vec![event]
            }
            Err(off) => {
                warn!("optimizer: off: {}", off.0);
                vec![optimizer_event(
                    Vec::new(),
                    LiveEvent::Off { reason: off.0 },
                )]
            }
        }
    }

    /// The next operator request (pending forever when there is none).
    pub async fn next_request(&mut self) -> Option<Incoming> {
        self.requests.recv().await
    }

    /// Serves one request through the change path; a change it applies is watched by the guard.
    pub fn serve(&mut self, incoming: Incoming) -> Vec<Event> {
        let reply = match &incoming.request {
            Request::Apply(req) => {
                let result = Control::apply(&mut self.path, req);
                if let Ok(report) = &result {
                    self.watch_if_applied(report, &req.address, &req.value);
                }
                reply(result)
            }
            other => handle(&mut self.path, other),
        };
        let _ = incoming.answer.send(reply);
        self.take_events()
    }

    /// The guard watches each applied change against the last window's health.
    fn watch_if_applied(&mut self, report: &ChangeReport, address: &ParamAddress, value: &Value) {
        if let (ChangeStatus::Applied, Some(id)) = (report.status, report.journal_id) {
            self.guard
                .watch(id, address.clone(), value.clone(), self.last_health.clone());
        }
    }

    /// A window closed: the guard judges the changes it watches; a regression is reverted through
    /// the journal and its value quarantined.
    pub fn on_window(&mut self, window: &Window) -> Vec<Event> {
        // People first: a cpufreq or coalescing value someone else wrote is theirs, before the
        // guard could revert over it.
        let mut events = super::yielding::check_values(&mut self.path, &mut self.guard);
        if let Some(optimizer) = self.optimizer.as_mut() {
            optimizer.window_closed(&self.path);
        }
        let health = Health::from_window(window);
        let verdicts = self.guard.observe(&health);
        for verdict in verdicts {
            if let Verdict::Revert {
                change_id,
                address,
                value,
                signal,
                before,
                after,
            } = &verdict
            {
                let why = format!("the guard saw {signal:?} go from {before} to {after}");
                if let Ok(addr) = address.parse::<ParamAddress>() {
                    let quarantine = self.path.policy.guard.quarantine;
                    if let Err(e) = self.path.journal.quarantine(&addr, value, quarantine, &why) {
                        warn!("journal: quarantine of {address}: {e}");
                    }
                }
                match self.path.revert(*change_id, Source::Operator, &why) {
                    Ok(r) => info!("guard: {}", r.describe()),
                    Err(e) => warn!("guard: reverting #{change_id}: {e}"),
                }
            }
            events.extend(self.take_events());
            events.push(Event::Guard(verdict));
        }
        self.last_health = health;
        events.extend(self.advise(window));
        events.extend(self.optimize(window));
        events
    }

    /// The optimizer's trial: its changes go through the change path as source `optimizer`,
    /// watched by the guard (advise/optimizer/agent.rs).
    fn optimize(&mut self, window: &Window) -> Vec<Event> {
        let Some(optimizer) = self.optimizer.as_mut() else {
            return Vec::new();
        };
        let done = optimizer.on_window(&mut self.path, &mut self.guard, window);
        let knobs = optimizer.knobs();
        let mut events = self.take_events();
        events.extend(done.into_iter().map(|e| optimizer_event(knobs.clone(), e)));
        events
    }

    /// The rules read the window; what they recommend goes to the change path as a proposal of
    /// source `rules` (applied only where the policy says auto), advice for an application is
    /// reported as it is.
    fn advise(&mut self, window: &Window) -> Vec<Event> {
        self.windows += 1;
        let sysctls = self.netns_sysctls(window);
        let recommendations =
            self.accept_queue
                .evaluate(self.windows, window, &sysctls, &self.path.policy);
        self.consider(recommendations)
    }

    /// Every advisor's recommendations end here: each is reported, and one that asks for a kernel
    /// change goes to the change path as a proposal of its advisor's source, where the policy
    /// decides (apply, wait for approval, record only, refuse). A recommendation its advisor did
    /// not allow to auto-apply is not proposed: the advisor can only make a change more cautious.
    pub fn consider(&mut self, recommendations: Vec<Recommendation>) -> Vec<Event> {
        let mut events = Vec::new();
        for rec in recommendations {
            events.push(Event::Recommendation(Box::new(rec.clone())));
            if let Some(value) = rec.recommended_value.clone() {
                if rec.can_auto_apply {
                    self.propose(&rec, value);
                }
                events.extend(self.take_events());
            }
        }
        events
    }

    fn propose(&mut self, rec: &Recommendation, value: Value) {
        let proposal = Proposal {
            address: rec.parameter.clone(),
            value: value.clone(),
            source: Source::from(rec.source),
            reason: rec.reason.clone(),
        };
        match self.path.propose(&proposal) {
            Ok(report) => self.watch_if_applied(&report, &proposal.address, &value),
            Err(e) => warn!("{}: proposing {}: {e}", rec.source, proposal.address),
        }
    }

    /// somaxconn of every namespace with a listener in the window, and its value before KPO.
    fn netns_sysctls(&mut self, window: &Window) -> NetnsSysctls {
        let mut sysctls = NetnsSysctls {
            host_netns: self.host_netns,
            ..NetnsSysctls::default()
        };
        let namespaces: std::collections::BTreeSet<u64> =
            window.listeners.iter().map(|l| l.netns).collect();
        for netns in namespaces {
            let target = if netns == self.host_netns {
                Target::Host
            } else {
                Target::Netns {
                    netns: NetnsRef::Inode(netns),
                }
            };
            let Ok(address) = ParamAddress::sysctl(SOMAXCONN, target) else {
                continue;
            };
            if let Ok(Value::Int(v)) = self.path.read(&address) {
                sysctls.somaxconn.insert(netns, v);
            }
            let key = crate::journal::target_key(&address);
            if let Some(Value::Int(v)) = self
                .path
                .journal
                .params()
                .find(|p| p.key == key)
                .and_then(|p| p.original.clone())
            {
                sysctls.original_somaxconn.insert(netns, v);
            }
        }
        sysctls
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
            .filter_map(|p| Some((p.address.clone()?, p.last_applied.clone()?)))
            .filter(|(a, _)| a.kind() == ParamKind::Sysctl)
            .collect();
        for (address, applied) in managed {
            let Some(write) = writes.iter().rev().find(|w| w.name == address.name) else {
                continue;
            };
            let Ok(now) = self.path.read(&address) else {
                continue;
            };
            if now == applied {
                continue; // the write was to another namespace's copy, or rewrote our value
            }
            let by = format!("{} (pid {})", write.comm, write.pid);
            if let Err(e) = self
                .path
                .journal
                .set_yielded(&address, Some(now.clone()), &by)
            {
                warn!("journal: yielding {address}: {e}");
                continue;
            }
            self.guard.forget(&address);
            warn!(
                "{address} was changed to {now} by {by}: KPO stops managing it there (kpo resume \
                 {} hands it back)",
                address.name
            );
            events.push(Event::AdminOverride {
                target: address.to_string(),
                pid: Some(write.pid),
                comm: Some(write.comm.clone()),
                seen_by: "sysctl_watch",
                value: now,
                kpo_value: Some(applied),
            });
        }
        events
    }

    /// At shutdown: parameters whose policy says `on_exit = "revert"` are put back, through the
    /// journal.
    pub fn on_exit(&mut self) -> Vec<Event> {
        let revert: Vec<u64> = self
            .path
            .journal
            .params()
            .filter(|p| p.yielded.is_none() && p.last_applied.is_some())
            .filter_map(|p| {
                let address = p.address.as_ref()?;
                (self.path.policy.rule_for(address).on_exit == OnExit::Revert)
                    .then_some(p.original_id)
                    .flatten()
            })
            .collect();
        for id in revert {
            match self
                .path
                .revert(id, Source::Operator, "agent stopping: on_exit = revert")
            {
                Ok(r) => info!("on exit: {}", r.describe()),
                Err(e) => warn!("on exit: reverting #{id}: {e}"),
            }
        }
        self.take_events()
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
        std::mem::take(&mut *self.pending.lock().expect("event buffer"))
            .into_iter()
            .map(Event::from)
            .collect()
    }
}

fn optimizer_event(knobs: Vec<String>, event: LiveEvent) -> Event {
    Event::Optimizer(OptimizerEvent { knobs, event })
}
