//! The eBPF programs' log (aya-log), bridged into `tracing`.
//!
//! The programs log only on their rare error paths: a failed kernel read, a full table, a state
//! that should not happen. Nothing is written while all goes well, so the ring buffer costs
//! nothing then (`cargo xtask bench overhead` prints how many bytes it received: 0). aya-log
//! writes to the `log` crate; [`Bridge`] counts each record and hands it to `tracing` (through
//! `tracing-log`), whatever logger is installed, at most 20 a second (the rest are counted and
//! said in one line).
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use aya::Ebpf;
use aya_log::EbpfLogger;
// `log` as tracing-log re-exports it: the version aya-log writes to.
use tracing::{info, warn};
use tracing_log::log;

/// The global the programs read to decide which log statements are live.
pub const LEVEL_GLOBAL: &str = aya_log::LEVEL;

/// Records received from the programs since start.
static RECORDS: AtomicU64 = AtomicU64::new(0);

/// How many log records the eBPF programs have sent since the agent started.
pub fn records_received() -> u64 {
    RECORDS.load(Ordering::Relaxed)
}

/// The most verbose aya-log level `tracing` would show, as the programs' `AYA_LOG_LEVEL` global:
/// statements above it are skipped in the kernel, before a record is even reserved.
pub fn level() -> u8 {
    level_for(tracing::level_filters::LevelFilter::current())
}

/// aya-log's number for the most verbose of `max`'s levels (0: off).
fn level_for(max: tracing::level_filters::LevelFilter) -> u8 {
    use tracing::level_filters::LevelFilter;
    if max == LevelFilter::OFF {
        0
    } else if max >= LevelFilter::TRACE {
        aya_log::Level::Trace as u8
    } else if max >= LevelFilter::DEBUG {
        aya_log::Level::Debug as u8
    } else if max >= LevelFilter::INFO {
        aya_log::Level::Info as u8
    } else if max >= LevelFilter::WARN {
        aya_log::Level::Warn as u8
    } else {
        aya_log::Level::Error as u8
    }
}

/// Records shown per second. A program that meets its error on every event (a full map on a host
/// with more IRQs than it holds) would otherwise write tens of thousands of lines a second.
const SHOWN_PER_SECOND: u32 = 20;

static SHOWN: Mutex<Rate> = Mutex::new(Rate {
    since: None,
    shown: 0,
    hidden: 0,
});

/// How many records were shown and hidden in the second that began at `since`.
struct Rate {
    since: Option<Instant>,
    shown: u32,
    hidden: u64,
}

impl Rate {
    /// Whether a record arriving `now` is shown, and how many were hidden in the second before
    /// (said once, when the next second's first record comes).
    fn admit(&mut self, now: Instant) -> (bool, u64) {
        let mut hidden_before = 0;
        if self
            .since
            .is_none_or(|since| now.saturating_duration_since(since) >= Duration::from_secs(1))
        {
            hidden_before = std::mem::take(&mut self.hidden);
            self.since = Some(now);
            self.shown = 0;
        }
        if self.shown < SHOWN_PER_SECOND {
            self.shown += 1;
            (true, hidden_before)
        } else {
            self.hidden += 1;
            (false, hidden_before)
        }
    }
}

/// A `log::Log` that counts each record and re-emits it as a `tracing` event.
pub struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        RECORDS.fetch_add(1, Ordering::Relaxed);
        let (shown, hidden_before) = match SHOWN.lock() {
            Ok(mut rate) => rate.admit(Instant::now()),
            Err(_) => (true, 0),
        };
        if hidden_before > 0 {
            warn!(
                "eBPF programs' log: {hidden_before} records were not shown in the second before \
                 (at most {SHOWN_PER_SECOND} a second are; all are counted)"
            );
        }
        if shown {
            let _ = tracing_log::format_trace(record);
        }
    }

    fn flush(&self) {}
}

/// The reader of the programs' log ring buffer.
pub struct EbpfLog(EbpfLogger<Bridge>);

impl EbpfLog {
    /// Takes the log ring buffer out of the loaded object. None (with a warning) if the object
    /// has none, which happens only when no program logs.
    pub(super) fn init(ebpf: &mut Ebpf) -> Option<EbpfLog> {
        match EbpfLogger::init_with_logger(ebpf, Bridge) {
            Ok(logger) => Some(EbpfLog(logger)),
            Err(e) => {
                warn!("the eBPF programs' log is not read: {e}");
                None
            }
        }
    }

    /// Forwards every record waiting in the ring buffer.
    pub fn flush(&mut self) {
        self.0.flush();
    }
}

/// Reads the programs' log as records arrive, on the current tokio runtime, until dropped; then
/// says how many records came. None when the sensors have no log (eBPF not loaded).
pub fn spawn(sensors: &mut super::Sensors) -> Option<LogTask> {
    let log = sensors.take_log()?;
    // SAFETY: the logger owns its ring buffer's map fd and keeps it open, unchanged, for as long
    // as the AsyncFd holds it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(log, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            warn!("the eBPF programs' log is not read: {e}");
            return None;
        }
    };
    let task = tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(e) => {
                    warn!("the eBPF programs' log is no longer read: {e}");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Some(LogTask(task))
}

impl std::os::fd::AsRawFd for EbpfLog {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
}

/// The task forwarding the programs' log; stops it when dropped.
pub struct LogTask(tokio::task::JoinHandle<()>);

impl Drop for LogTask {
    fn drop(&mut self) {
        self.0.abort();
        info!(
            records = records_received(),
            "eBPF programs' log: records received (0 unless a program met an error)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_log::log::{self, Log as _};

    #[test]
    fn bridge_counts_every_record() {
        let before = records_received();
        Bridge.log(
            &log::Record::builder()
                .level(log::Level::Warn)
                .target("kpo::accept_queue")
                .args(format_args!("reading a socket failed: -14"))
                .build(),
        );
        assert!(records_received() > before);
    }

    /// At most `SHOWN_PER_SECOND` records a second are shown; the rest are counted and said in
    /// one line when the next second's first record comes.
    #[test]
    fn a_flood_of_records_is_shown_at_a_bounded_rate() {
        let mut rate = Rate {
            since: None,
            shown: 0,
            hidden: 0,
        };
        let t0 = Instant::now();
        let first_second: Vec<(bool, u64)> = (0..1000)
            .map(|i| rate.admit(t0 + Duration::from_micros(i * 900)))
            .collect();
        let shown = first_second.iter().filter(|(s, _)| *s).count();
        assert_eq!(shown, SHOWN_PER_SECOND as usize);
        assert!(first_second.iter().all(|(_, hidden)| *hidden == 0));
        assert_eq!(rate.admit(t0 + Duration::from_secs(1)), (true, 980));
        assert_eq!(rate.admit(t0 + Duration::from_secs(3)), (true, 0));
    }

    #[test]
    fn level_follows_aya_log_numbering() {
        // aya-log: Error = 1 ... Trace = 5; the programs keep statements at or below the global.
        assert_eq!(aya_log::Level::Error as u8, 1);
        assert_eq!(aya_log::Level::Trace as u8, 5);
        use tracing::level_filters::LevelFilter;
        let levels = [
            LevelFilter::OFF,
            LevelFilter::ERROR,
            LevelFilter::WARN,
            LevelFilter::INFO,
            LevelFilter::DEBUG,
            LevelFilter::TRACE,
        ]
        .map(super::level_for);
        assert_eq!(levels, [0, 1, 2, 3, 4, 5]);
    }
}
