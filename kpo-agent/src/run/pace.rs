//! Whether windows last as long as they should. A window is a whole number of ticks and lasts as
//! long as they take: an agent stopped (SIGSTOP, a frozen VM) or starved of CPU ticks late. Said
//! once when windows start to run long, and once when they are back (s62 story CE-1: windows of
//! 8 s for a minute and one of 99 s in place of 5, with no word).
use std::time::Duration;

use tracing::{info, warn};

use crate::window::Window;

/// Longer than this many times its length, a window is late.
const LATE: f64 = 1.5;
/// Late windows are back to length at no more than this many times it: between the two, the
/// state stays, so that windows of 7 and 8 s in place of 5 are not said late and back by turns
/// (s62 review1 R1-4).
const BACK: f64 = 1.2;

/// What a window's length says, when it says something new.
#[derive(Debug, PartialEq)]
enum News {
    Late,
    Back,
}

pub(super) struct Pace {
    planned: Duration,
    late: bool,
}

impl Pace {
    pub(super) fn new(planned: Duration) -> Self {
        Self {
            planned,
            late: false,
        }
    }

    fn news(&mut self, duration_s: f64) -> Option<News> {
        let planned = self.planned.as_secs_f64();
        match self.late {
            false if duration_s > LATE * planned => {
                self.late = true;
                Some(News::Late)
            }
            true if duration_s <= BACK * planned => {
                self.late = false;
                Some(News::Back)
            }
            _ => None,
        }
    }

    pub(super) fn window_closed(&mut self, window: &Window) {
        let planned = self.planned.as_secs_f64();
        match self.news(window.duration_s) {
            Some(News::Late) => warn!(
                "the window ending {} lasted {:.3} s, not {planned} s (its longest tick {:.3} \
                 s): the agent was stopped or starved of CPU; its counts and rates cover the \
                 {:.3} s it lasted (said again when windows are back to length)",
                window.end, window.duration_s, window.longest_tick_s, window.duration_s
            ),
            Some(News::Back) => info!(
                "windows are back to {planned} s (the one ending {} lasted {:.3} s)",
                window.end, window.duration_s
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CE-1's own windows (8, 8, 8, 7.002 s of 5): late once, not back at 7 s; back at 5.
    #[test]
    fn late_windows_are_said_once_and_back_once() {
        let mut pace = Pace::new(Duration::from_secs(5));
        let said: Vec<Option<News>> = [5.0, 7.4, 8.0, 8.0, 7.002, 8.0, 6.1, 5.9, 5.0, 19.0]
            .into_iter()
            .map(|d| pace.news(d))
            .collect();
        assert_eq!(
            said,
            [
                None,
                None,
                Some(News::Late),
                None,
                None,
                None,
                None,
                Some(News::Back),
                None,
                Some(News::Late)
            ]
        );
    }
}
