//! The guard's file, and the watches written into it ahead of a change's kernel write.
//!
//! The guard starts watching a change when its caller hears that it was applied, and saves the
//! watch then. An agent killed between the journal's `applied` record and that save would leave a
//! change no one judges after the restart. So the change path hands every change to
//! [`WriteAhead::before_write`] between the intent's fsync and the kernel write: the watch, with
//! the last windows as its baseline, is in [`WATCHES_FILE`](super::WATCHES_FILE) before the kernel
//! has the value. Once the call that made the change returns, its caller watches it (or not, if it
//! was not applied) and the guard's next window drops every watch written ahead: they are needed
//! only while that call is in flight. At a restart, one in the file is taken up like any other
//! watch, if its change is still in place.
use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use super::{
    GuardConfig, Health, HealthSignal, Line, Regressed, Scope, ServiceP99, Watch, BASELINE_WINDOWS,
};
use crate::{
    actuate::param::{ParamAddress, Value},
    window::Window,
};

/// The guard's file in the state directory, shared by the guard and the change path's hook.
#[derive(Debug, Default)]
pub(super) struct WatchFile {
    /// The state directory the watches are kept in (`None`: in memory only).
    pub(super) dir: Option<PathBuf>,
    pub(super) config: GuardConfig,
    /// The last closed windows, oldest first, at most [`KEPT_WINDOWS`]: the baseline of a change
    /// made now is taken over the last [`BASELINE_WINDOWS`] of them.
    pub(super) recent: VecDeque<Window>,
    /// Windows closed in this run: the last one in `recent` is window number `closed` (from 1).
    pub(super) closed: u64,
    /// The windows (by number) in which a change the guard reverted regressed, per signal: left
    /// out of later changes' baselines. Those of the window in progress are kept in the file.
    pub(super) regressed: Vec<Regressed>,
    /// The tick the rules are advising on, while they do ([`super::Guard::advising_on_tick`]).
    pub(super) tick: Option<Window>,
    /// A window has just closed and the run loop is still acting on it: a change made now is made
    /// at the next window's start ([`super::Guard::window_under_way`]). Otherwise it is made
    /// inside the window in progress, which is then not judged.
    pub(super) at_boundary: bool,
    /// The guard's own watches, as it last saved them.
    pub(super) saved: Vec<Watch>,
    /// Written ahead of a change's write, until the guard's next window.
    pub(super) ahead: Vec<Watch>,
    /// The last write failed (said once, until one succeeds again).
    failed: bool,
    /// The file holds no watch: with none open, there is nothing to write again.
    pub(super) empty: bool,
}

/// Windows kept: when KPO's own regression is left out of the last [`BASELINE_WINDOWS`], the
/// newest older window that is not is the baseline.
pub(super) const KEPT_WINDOWS: usize = 2 * BASELINE_WINDOWS;

/// A change's baseline ([`WatchFile::baseline_of`]): each signal's value, and per signal how many
/// windows it was taken over and how many were left out as KPO's own regression.
#[derive(Debug, Default)]
pub(super) struct Baseline {
    pub(super) health: Health,
    pub(super) windows: BTreeMap<HealthSignal, u32>,
    pub(super) left_out: BTreeMap<HealthSignal, u32>,
    /// Each service's own `request_p99` baseline, over the windows `request_p99`'s is taken over.
    pub(super) request_services: Vec<ServiceP99>,
}

impl WatchFile {
    pub(super) fn new(config: GuardConfig) -> WatchFile {
        WatchFile {
            config,
            ..WatchFile::default()
        }
    }

    /// The health a change made now is judged against, in `scope`: each signal's highest value in
    /// the windows up to `before` (the last closed one; `None`: no baseline), at most
    /// [`BASELINE_WINDOWS`] of them, and in the tick the rules are advising on; with, per signal,
    /// how many of those windows measured it. Noise the host had before the change is then not
    /// taken for the change's regression. A window in which a change the guard reverted regressed
    /// the signal (where this scope sees it) is left out: that was KPO's doing, not the host's.
    /// With every one left out, the newest older window kept that is not; with none, those
    /// windows all the same (the peak the host had, as before).
    pub(super) fn baseline_of(&self, before: Option<&Window>, scope: Scope) -> Baseline {
        let mut baseline = Baseline::default();
        let Some(before) = before else {
            return baseline;
        };
        // `before` is the newest window kept (as the run loop passes it); one not kept is taken as
        // following them. A window is known by its start and end (to the nanosecond).
        let found = self
            .recent
            .iter()
            .rposition(|w| (&w.start, &w.end) == (&before.start, &before.end));
        let upto = found.unwrap_or(self.recent.len());
        let number = |i: usize| self.closed + 1 + i as u64 - self.recent.len() as u64;
        // Newest first, with each window's number (none for a `before` not kept).
        let kept: Vec<&Window> = std::iter::once(before)
            .chain(self.recent.range(..upto).rev())
            .collect();
        let windows: Vec<(Option<u64>, Health)> = std::iter::once(found.map(number))
            .chain((0..upto).rev().map(|i| Some(number(i))))
            .zip(&kept)
            .map(|(n, w)| {
                (
                    n,
                    super::with_any_request(Health::from_window_in(w, scope), w, scope),
                )
            })
            .collect();
        let (last, older) = windows.split_at(windows.len().min(BASELINE_WINDOWS));
        let signals: std::collections::BTreeSet<HealthSignal> =
            last.iter().flat_map(|(_, h)| h.0.keys().copied()).collect();
        // The windows request_p99's baseline is taken over, for its services (below).
        let mut request_windows: Vec<&Window> = Vec::new();
        for signal in signals {
            let ours = |n: &Option<u64>| {
                n.is_some_and(|n| {
                    self.regressed.iter().any(|r| {
                        r.window == n
                            && r.signal == signal
                            && super::overlap(signal, r.scope, scope)
                    })
                })
            };
            // By their place in `windows`.
            let measured: Vec<(bool, usize)> = (last.iter().enumerate())
                .filter(|(_, (_, h))| h.0.contains_key(&signal))
                .map(|(i, (n, _))| (ours(n), i))
                .collect();
            let hosts: Vec<usize> = measured.iter().filter(|m| !m.0).map(|m| m.1).collect();
            let older_host = (older.iter())
                .position(|(n, h)| h.0.contains_key(&signal) && !ours(n))
                .map(|i| last.len() + i);
            let (left_out, taken) = match older_host {
                _ if !hosts.is_empty() => (measured.len() - hosts.len(), hosts),
                Some(i) => (measured.len(), vec![i]),
                None => (0, measured.iter().map(|m| m.1).collect()),
            };
            baseline.health.0.insert(
                signal,
                (taken.iter())
                    .map(|&i| windows[i].1 .0[&signal])
                    .fold(f64::NEG_INFINITY, f64::max),
            );
            if signal == HealthSignal::RequestP99 {
                request_windows = taken.iter().map(|&i| kept[i]).collect();
            }
            baseline.windows.insert(signal, taken.len() as u32);
            if left_out > 0 {
                baseline.left_out.insert(signal, left_out as u32);
            }
        }
        if let Some(tick) = &self.tick {
            let h = super::with_any_request(Health::from_window_in(tick, scope), tick, scope);
            for signal in h.0.keys() {
                baseline.windows.entry(*signal).or_insert(0);
            }
            baseline.health = std::mem::take(&mut baseline.health).worse_of(h);
        }
        // request_p99's baseline is its services' (those busy in those windows or the tick),
        // each at its highest there with however few requests, as it counts after the change.
        let signal = HealthSignal::RequestP99;
        baseline.request_services =
            super::service_baselines(&request_windows, self.tick.as_ref(), scope);
        match (baseline.request_services.iter())
            .map(|s| s.p99_us)
            .reduce(f64::max)
        {
            Some(highest) => {
                baseline.health.0.insert(signal, highest);
            }
            None => {
                baseline.health.0.remove(&signal);
                baseline.windows.remove(&signal);
                baseline.left_out.remove(&signal);
            }
        }
        baseline
    }

    /// Writes the guard's watches and those written ahead (the guard's own win for one change).
    /// A failure is logged and the guard goes on in memory: it still judges every change while
    /// it runs. Returns the failure's words.
    pub(super) fn write(&mut self) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let now = crate::journal::now_ms();
        let saved = &self.saved;
        let mut all: Vec<Watch> = saved.clone();
        all.extend(
            self.ahead
                .iter()
                .filter(|a| saved.iter().all(|w| w.change_id != a.change_id))
                .cloned(),
        );
        for w in &mut all {
            w.saved_ms = now;
        }
        let pending: Vec<Line> = self
            .regressed
            .iter()
            .filter(|r| r.window > self.closed)
            .map(|r| Line::Regressed {
                regressed: r.clone(),
                saved_ms: now,
            })
            .collect();
        let nothing = all.is_empty() && pending.is_empty();
        let lines: Vec<Line> = all
            .into_iter()
            .map(|w| Line::Watch(Box::new(w)))
            .chain(pending)
            .collect();
        match crate::journal::store::rewrite(dir, super::WATCHES_FILE, &lines) {
            Ok(()) => {
                if std::mem::take(&mut self.failed) {
                    tracing::info!(
                        "guard: its watches are kept in the state directory again ({})",
                        dir.join(super::WATCHES_FILE).display()
                    );
                }
                self.empty = nothing;
                Ok(())
            }
            Err(e) => {
                if !self.failed {
                    tracing::warn!(
                        "guard: cannot keep its watches in the state directory ({e}); a restart \
                         before this is fixed forgets the changes it is watching"
                    );
                }
                self.failed = true;
                Err(e.to_string())
            }
        }
    }
}

/// The change path's handle on the guard's file ([`crate::change::ChangePath::set_before_write`]).
#[derive(Debug, Clone)]
pub struct WriteAhead(pub(super) Arc<Mutex<WatchFile>>);

impl WriteAhead {
    /// Change `change_id` is about to write `value`: its watch goes into the file first, against
    /// the last windows, judged by `signals` (the parameter's own; `None`: the guard's). When
    /// the file cannot be written, the watch is taken back and the error returned: the change is
    /// not to be made, since a restart would forget it unjudged (s61 story BW-2: applied, exit 0,
    /// and never judged after a kill, with only a log line to say so).
    pub fn before_write(
        &self,
        change_id: u64,
        address: &ParamAddress,
        from: &Value,
        value: &Value,
        signals: Option<&[HealthSignal]>,
    ) -> Result<(), String> {
        // A panic while the file was held is caught by the run loop, which then stops through
        // `on_exit`: its reverts must still be watched and written, so a poisoned lock is used
        // as it is (here and in the guard) rather than panicking again.
        let mut file = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if file.dir.is_none() {
            return Ok(());
        }
        let scope = Scope::of(address);
        let baseline = file.baseline_of(file.recent.back(), scope);
        let signals = super::judged_by(
            signals.unwrap_or(&file.config.signals),
            address,
            from,
            value,
        );
        let watch = Watch::new(
            change_id,
            address.clone(),
            scope,
            signals,
            value.clone(),
            baseline.health,
            file.config.windows,
        )
        .over_windows(
            baseline.windows,
            baseline.left_out,
            baseline.request_services,
        )
        .made(file.tick.is_some(), file.at_boundary, file.closed + 1);
        let was = file.ahead.clone();
        file.ahead.retain(|w| !super::same_param(w, &watch.key()));
        file.ahead.push(watch);
        file.write().inspect_err(|_| file.ahead = was)
    }
}
