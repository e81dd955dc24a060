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
    actuate::param::{NetnsRef, ParamAddress, ParamKind, Target, Value},
    advise::{
        recommendation::Recommendation,
        rules::accept_queue::{AcceptQueueConfig, AcceptQueueRule, NetnsSysctls, SOMAXCONN},
    },
    api::{
        handle, reply,
        server::{Incoming, Server},
        Request,
    },
    approvals::{
        control::{ApprovalControl, AtDesk},
        webhook::Webhook,
        Desk,
    },
    change::{ChangePath, ChangeReport, ChangeStatus, KernelActuators},
    cli::StateArgs,
    control::Control,
    guard::{Guard, GuardConfig, Health, Verdict},
    journal::{Holder, Journal},
    output::{change_events::ChangePathEvent, events::Event},
    policy::{OnExit, Policy, Source},
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
    _server: Server,
    /// Health of the last closed window: the baseline of a change made now.
    last_health: Health,
    accept_queue: AcceptQueueRule,
    /// Merging, pending approvals and the recommendation history (crate::approvals).
    approvals: Desk,
    windows: u64,
    /// The agent's own network namespace: its keys are the host's.
    host_netns: u64,
}

impl Deciding {
    /// Loads the policy, takes the state directory (journal, lock), reconciles changes a crash
    /// interrupted, and binds the control socket. Errors name what failed; the agent does not
    /// start without its journal, since it could not then change anything safely.
    /// With `recommend_only`, every parameter the policy has in auto is treated as recommend.
    pub fn open(state: &StateArgs, recommend_only: bool) -> anyhow::Result<(Deciding, Vec<Event>)> {
        let mut policy = Policy::load(state.policy.as_deref())?;
        if recommend_only {
            policy.force_recommend();
            warn!(
                "--recommend-only: every parameter is treated as mode recommend whatever the policy \
                 says; nothing is applied without an operator's approval (kpo pending)"
            );
        }
        let dir = state.state_dir();
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the state directory {}: {e}", dir.display())
        })?;
        let journal = Journal::open(&dir, Holder::Agent, LOCK_WAIT)?;
        for w in journal.warnings() {
            warn!("journal: {w}");
        }
        let guard = Guard::new(GuardConfig::from_policy(&policy.guard));
        let mut path = ChangePath::new(policy, journal, Box::new(KernelActuators::default()));
        let pending = Arc::new(Mutex::new(Vec::new()));
        let sink = pending.clone();
        path.set_event_sink(move |e| sink.lock().expect("event buffer").push(e));
        let reconciled = path.reconcile()?;
        for r in &reconciled {
            info!("journal reconciled: {}", r.describe());
        }
        let mut approvals =
            Desk::open(&path.journal, path.policy.approvals.clone(), recommend_only)?;
        for w in approvals.store().warnings() {
            warn!("approvals: {w}");
        }
        if let Some(url) = path.policy.approvals.webhook.clone() {
            match Webhook::spawn(url) {
                Ok(w) => approvals.set_webhook(w),
                Err(e) => warn!("approval webhook off: {e}"),
            }
        }
        let socket = state
            .socket
            .clone()
            .unwrap_or_else(|| crate::api::DEFAULT_SOCKET.into());
        let (server, requests) = Server::bind(&socket)?;
        let mut deciding = Deciding {
            path,
            guard,
            pending,
            requests,
            _server: server,
            last_health: Health::default(),
            accept_queue: AcceptQueueRule::new(AcceptQueueConfig::default()),
            approvals,
            windows: 0,
            host_netns: std::fs::metadata("/proc/self/ns/net")
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap_or(0),
        };
        let events = deciding.take_events();
        Ok((deciding, events))
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
            Request::Approve { id, by } => {
                let result = self.at_desk().approve(id, by);
                if let Ok(o) = &result {
                    self.watch_if_applied(&o.report, &o.report.address, &o.report.after);
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
    fn watch_if_applied(&mut self, report: &ChangeReport, address: &ParamAddress, value: &Value) {
        if let (ChangeStatus::Applied, Some(id)) = (report.status, report.journal_id) {
            self.guard
                .watch(id, address.clone(), value.clone(), self.last_health.clone());
        }
    }

    /// A window closed: the guard judges the changes it watches; a regression is reverted through
    /// the journal and its value quarantined.
    pub fn on_window(&mut self, window: &Window) -> Vec<Event> {
        let health = Health::from_window(window);
        let verdicts = self.guard.observe(&health);
        let mut events = Vec::new();
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
        self.approvals.on_window(&self.path);
        events.extend(self.take_events());
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

    /// Every advisor's recommendations end here (crate::approvals::desk): conflicting ones for
    /// one parameter and target are merged to the most conservative; each is reported, and one
    /// that asks for a kernel change goes to the change path as a proposal of its advisor's
    /// source, where the policy decides (apply, wait for approval, record only, refuse). One its
    /// advisor did not allow to auto-apply is held for approval: the advisor can only make a
    /// change more cautious. What needs approval becomes a pending approval.
    pub fn consider(&mut self, recommendations: Vec<Recommendation>) -> Vec<Event> {
        let sink = self.pending.clone();
        let mut drain = move || -> Vec<Event> {
            std::mem::take(&mut *sink.lock().expect("event buffer"))
                .into_iter()
                .map(Event::from)
                .collect()
        };
        let considered = self
            .approvals
            .consider(&mut self.path, recommendations, &mut drain);
        for report in &considered.applied {
            self.watch_if_applied(report, &report.address, &report.after);
        }
        considered.events
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
                pid: write.pid,
                comm: write.comm.clone(),
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

    fn take_events(&mut self) -> Vec<Event> {
        let mut events: Vec<Event> =
            std::mem::take(&mut *self.pending.lock().expect("event buffer"))
                .into_iter()
                .map(Event::from)
                .collect();
        events.extend(self.approvals.take_events());
        events
    }
}
