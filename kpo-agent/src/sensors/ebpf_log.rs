//! The eBPF programs' log (aya-log), bridged into `tracing`.
//!
//! The programs log only on their rare error paths: a failed kernel read, a full table, a state
//! that should not happen. Nothing is written while all goes well, so the ring buffer costs
//! nothing then (`cargo xtask bench overhead` prints how many bytes it received: 0). aya-log
//! writes to the `log` crate; [`Bridge`] hands each record to `tracing` (through `tracing-log`),
//! whatever logger is installed, and counts it.
use std::sync::atomic::{AtomicU64, Ordering};

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

/// A `log::Log` that counts each record and re-emits it as a `tracing` event.
pub struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        RECORDS.fetch_add(1, Ordering::Relaxed);
        let _ = tracing_log::format_trace(record);
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
