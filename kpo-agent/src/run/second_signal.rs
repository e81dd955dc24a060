//! A second SIGINT or SIGTERM while the agent stops (an operator's second Ctrl-C, systemd's stop
//! escalating) stops it at once: the loop's own handlers are no longer listened to by then, and
//! the stop itself (`on_exit`'s writes) may be what takes long or hangs.
//!
//! Its own thread and runtime listen: the loop's thread is busy with the stop (`on_exit` runs on
//! it, synchronously), so nothing there would notice the signal. A stop forced so writes the
//! `stop` event (`reason` saying it was forced), waits a bounded time for it and the logs, and
//! exits with 128 + the signal's number, as a shell reports a process the signal killed. What
//! `on_exit` had not done stays for the next start: a revert under way has its intent in the
//! journal (written ahead), which the next start settles like a kill's.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::signal::unix::{signal, SignalKind};
use tracing::warn;

use crate::{
    logging::LogWriter,
    output::{
        events::Event,
        sink::{EventSink, LastWords},
    },
};

/// How long a forced stop waits for its `stop` event to be written, and then for the logs.
const FORCED_FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// The loop's side: what a forced stop needs to know of it.
pub struct SecondSignal {
    /// The loop ended on a failure: the next signal is already the one that forces the stop.
    failed: Arc<AtomicBool>,
    windows: Arc<AtomicU64>,
    last_words: Arc<Mutex<Option<LastWords>>>,
    /// The `stop` event is queued: `on_exit` is done, and a forced stop leaves nothing of it.
    stopped: Arc<AtomicBool>,
}

impl SecondSignal {
    /// Starts listening. Call it once the loop's own handlers are in place: a signal only the
    /// loop saw is not counted here, so at worst one more is needed.
    pub fn watch(sink: &EventSink, logs: Option<LogWriter>) -> std::io::Result<SecondSignal> {
        let this = SecondSignal {
            failed: Arc::default(),
            windows: Arc::default(),
            last_words: Arc::new(Mutex::new(sink.last_words())),
            stopped: Arc::default(),
        };
        let (failed, windows, last_words, stopped) = (
            this.failed.clone(),
            this.windows.clone(),
            this.last_words.clone(),
            this.stopped.clone(),
        );
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kpo-signals".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let Ok(runtime) = runtime else {
                    let _ = ready_tx.send(runtime.map(|_| ()));
                    return;
                };
                runtime.block_on(async move {
                    let (mut term, mut int) = match (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) {
                        (Ok(term), Ok(int)) => (term, int),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let mut seen = false;
                    loop {
                        let (name, number) = tokio::select! {
                            _ = term.recv() => ("SIGTERM", libc::SIGTERM),
                            _ = int.recv() => ("SIGINT", libc::SIGINT),
                        };
                        if seen || failed.load(Ordering::Acquire) {
                            let done = stopped.load(Ordering::Acquire);
                            force(name, number, &windows, &last_words, logs.as_ref(), done);
                        }
                        seen = true;
                    }
                });
            })?;
        ready
            .recv()
            .map_err(|_| std::io::Error::other("the signal thread ended before listening"))??;
        Ok(this)
    }

    /// The loop stopped on a failure: its stop is under way without any signal.
    pub fn loop_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// The windows closed so far, for a forced stop's `stop` event.
    pub fn set_windows(&self, count: u64) {
        self.windows.store(count, Ordering::Release);
    }
}

impl Drop for SecondSignal {
    /// Dropped when the loop's `stop` event is queued, or `run` returned early: a forced stop
    /// from then on has no `stop` of its own to write, and the event stream may close (a held
    /// [`LastWords`] would keep its writer from ending, and the close waiting its whole bound).
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        drop(lock(&self.last_words).take());
    }
}

fn lock(last_words: &Mutex<Option<LastWords>>) -> std::sync::MutexGuard<'_, Option<LastWords>> {
    last_words
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn force(
    name: &str,
    number: i32,
    windows: &AtomicU64,
    last_words: &Mutex<Option<LastWords>>,
    logs: Option<&LogWriter>,
    on_exit_done: bool,
) -> ! {
    let status = 128 + number;
    // Once the `stop` event is queued there is nothing of `on_exit` left to leave (s60 story
    // BV-1: a signal 55 us after "kpo stopped" said its reverts were left undone).
    let left = if on_exit_done {
        "on_exit was done"
    } else {
        "on_exit's reverts not done yet are left as they are (a revert under way is settled by \
         the next start, from the journal)"
    };
    warn!("{name} again while stopping: stopping now, exit status {status}; {left}");
    if let Some(words) = lock(last_words).take() {
        let stop = Event::Stop {
            reason: format!("{name} again while stopping: forced"),
            windows: windows.load(Ordering::Acquire),
        };
        words.send_stop(&stop, FORCED_FLUSH_TIMEOUT);
    }
    if let Some(logs) = logs {
        logs.wait_written(FORCED_FLUSH_TIMEOUT);
    }
    // Not `std::process::exit`: the loop's thread may be exiting too, and C's `exit` run twice at
    // once is undefined; nothing of the process needs its atexit handlers.
    // SAFETY: `_exit` ends the process without touching its memory.
    unsafe { libc::_exit(status) }
}
