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
}
