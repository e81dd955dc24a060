//! Once-per-situation advice, the hysteresis every rule shares. A rule fires when its condition
//! holds; the latch then keeps it quiet while the situation is the same (the same key: the
//! values that would make the same advice, such as the parameter's current value), until
//! `repeat_windows` windows pass (the advice was not acted on and the condition still holds). A
//! run of `rearm_windows` calm windows forgets the advice, so the next onset advises at once.
//! Windows are counted by index, so advice given on a tick and the window that tick belongs to
//! are the same moment.
#[derive(Debug, Clone)]
pub struct Latch<K> {
    /// The window of the last advice, and its situation.
    advised: Option<(u64, K)>,
    /// Calm windows in a row.
    calm: u32,
}

impl<K> Default for Latch<K> {
    fn default() -> Self {
        Self {
            advised: None,
            calm: 0,
        }
    }
}

impl<K: PartialEq> Latch<K> {
    /// The condition holds in window `index` with `situation`: whether to advise now (and if so,
    /// it is recorded).
    pub fn fire(&mut self, index: u64, situation: K, repeat_windows: u64) -> bool {
        self.calm = 0;
        if let Some((at, same)) = &self.advised {
            if *same == situation && index.saturating_sub(*at) < repeat_windows {
                return false;
            }
        }
        self.advised = Some((index, situation));
        true
    }

    /// A closed window in which the condition did not hold; `rearm_windows` of them in a row
    /// forget the advice.
    pub fn calm(&mut self, rearm_windows: u32) {
        self.calm = self.calm.saturating_add(1);
        if self.calm >= rearm_windows {
            self.advised = None;
        }
    }

    /// Whether advice is standing (given and not yet re-armed).
    pub fn is_set(&self) -> bool {
        self.advised.is_some()
    }
}

/// Events counted since the last advice a tick gave in the window in progress. The window's own
/// count includes the events that advice answered, and, once it is applied, the parameter's new
/// value is a new situation for the [`Latch`]: judged on the window's count, the same events would
/// be advised on twice. So at the window's end only the events after the advice count.
#[derive(Debug, Clone, Default)]
pub struct SinceTickAdvice {
    /// `Some` once a tick of the window in progress advised: the events in later ticks.
    after: Option<u64>,
}

impl SinceTickAdvice {
    /// A tick saw `events`, and `advised` on them or not.
    pub fn tick(&mut self, events: u64, advised: bool) {
        if advised {
            self.after = Some(0);
        } else if let Some(after) = &mut self.after {
            *after = after.saturating_add(events);
        }
    }

    /// The count to judge the closed window by (its own `window_events`, or only those after a
    /// tick's advice in it), and whether it is the latter; the next window starts afresh.
    pub fn window(&mut self, window_events: u64) -> (u64, bool) {
        match self.after.take() {
            Some(after) => (after, true),
            None => (window_events, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_situation_repeated_after_a_while_and_rearmed_by_calm() {
        let mut l = Latch::default();
        assert!(l.fire(1, 100, 10));
        assert!(!l.fire(1, 100, 10), "same tick's window");
        assert!(!l.fire(5, 100, 10));
        assert!(l.fire(6, 200, 10), "the situation changed");
        assert!(!l.fire(15, 200, 10));
        assert!(l.fire(16, 200, 10), "repeated after 10 windows");
        l.calm(3);
        l.calm(3);
        assert!(!l.fire(17, 200, 10), "two calm windows do not re-arm");
        l.calm(3);
        l.calm(3);
        assert!(l.is_set());
        l.calm(3);
        assert!(!l.is_set(), "three in a row do");
        assert!(l.fire(20, 200, 10));
    }

    #[test]
    fn a_window_counts_only_the_events_after_a_ticks_advice() {
        let mut s = SinceTickAdvice::default();
        s.tick(0, false);
        assert_eq!(s.window(7), (7, false), "no advice: the window's count");
        s.tick(5, true);
        s.tick(0, false);
        s.tick(2, false);
        assert_eq!(s.window(7), (2, true));
        s.tick(3, true);
        assert_eq!(s.window(3), (0, true), "nothing after the advice");
        assert_eq!(s.window(4), (4, false), "a new window starts afresh");
    }
}
