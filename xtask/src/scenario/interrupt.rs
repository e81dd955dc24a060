//! Ctrl-C and SIGTERM become an error the scenario returns, so that every guard (namespace, nginx,
//! agent, temp directory) is dropped in order. The default action would end the process at once
//! and leave them all behind. Children run in their own process groups (see [`own_group`]), so a
//! Ctrl-C in the terminal reaches only xtask, which stops them itself.
use std::{
    os::unix::process::CommandExt,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the flag [`check`] reads.
pub fn install() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// An error once SIGINT or SIGTERM arrived: callers return it and their guards clean up.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}

/// Sleeps for `d` in steps of at most 10 ms, returning [`check`]'s error as soon as SIGINT or
/// SIGTERM arrives: a long wait must not hold the cleanup up.
pub fn sleep(d: std::time::Duration) -> Result<()> {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until {
        check()?;
        std::thread::sleep(
            std::time::Duration::from_millis(10)
                .min(until.saturating_duration_since(std::time::Instant::now())),
        );
    }
    Ok(())
}

/// Puts a child in its own process group: the terminal's Ctrl-C then reaches only xtask, which
/// stops the child in order (nginx gracefully, the agent with SIGTERM) instead of racing it.
pub fn own_group(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0)
}
