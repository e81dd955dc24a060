//! Ctrl-C and SIGTERM become an error the scenario returns, so that every guard (namespace, nginx,
//! agent, temp directory) is dropped in order. The default action would end the process at once
//! and leave them all behind. Children run in their own process groups (see [`own_group`]), so a
//! Ctrl-C in the terminal reaches only xtask, which stops them itself (or passes the signal on to
//! a child that cleans up after itself: [`wait_passing_on`]). xtask then exits with 128 + the
//! signal, as a shell reports a process the signal ended ([`exit_status`]).
use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicI32, Ordering},
};

use anyhow::{bail, Result};
use nix::{
    errno::Errno,
    sys::signal::{killpg, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
    unistd::Pid,
};

/// The first signal that arrived, 0 before any: the exit status is 128 + the signal that asked
/// to stop, not one a second Ctrl-C during the cleanup sent.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only an atomic operation: async-signal-safe.
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// The signal that interrupted this process, once SIGINT or SIGTERM arrived.
pub fn received() -> Option<Signal> {
    Signal::try_from(SIGNAL.load(Ordering::SeqCst)).ok()
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
    if let Some(signal) = received() {
        bail!("interrupted by {signal}");
    }
    Ok(())
}

/// The exit status of a command that ended with `result`: like a shell's for a process a signal
/// ended, 128 + the signal once SIGINT or SIGTERM arrived (130, 143), whatever error the
/// interruption surfaced as, so that a script running xtask can tell Ctrl-C from a failure.
pub fn exit_status(result: &Result<()>) -> u8 {
    match (result, received()) {
        (Ok(()), _) => 0,
        (Err(_), Some(signal)) => 128 + signal as u8,
        (Err(_), None) => 1,
    }
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

/// Waits for `child`, started in a group of its own ([`own_group`]), to clean up after itself on
/// SIGINT or SIGTERM (as `bench_actuate` does): the first of them that reaches xtask is passed on
/// to that whole group (cargo and its rustc while the example builds, the example once cargo
/// execs it), and xtask, which must not end before the child's cleanup, then returns [`check`]'s
/// error as soon as the child has ended.
pub fn wait_passing_on(child: &mut Child) -> Result<ExitStatus> {
    let mut passed = false;
    loop {
        if let Some(status) = child.try_wait()? {
            check()?;
            return Ok(status);
        }
        if let (Some(signal), false) = (received(), passed) {
            let group = Pid::from_raw(child.id() as i32);
            match killpg(group, signal) {
                // The group ended in between: try_wait says so next.
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(e.into()),
            }
            passed = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Puts a child in its own process group: the terminal's Ctrl-C then reaches only xtask, which
/// stops the child in order (nginx gracefully, the agent with SIGTERM) instead of racing it.
pub fn own_group(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0)
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    const CHILD: &str = "XTASK_TEST_RAISE";
    const PASSING_CHILD: &str = "XTASK_TEST_PASS_ON";

    /// Runs the child half `name` of a test in a child process of its own (the handler and the
    /// signal recorded are the whole process's) with `env` set; its exit status and the lines of
    /// its standard error that start with one of `prefixes`.
    fn run_child(name: &str, env: (&str, &str), prefixes: &[&str]) -> (Option<i32>, Vec<String>) {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env.0, env.1)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines = stderr
            .lines()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .map(str::to_string)
            .collect();
        (out.status.code(), lines)
    }

    /// Run by [`an_interrupted_command_exits_with_128_plus_the_signal`] in a child process; does
    /// nothing elsewhere. Raises the signals `XTASK_TEST_RAISE` names at itself, then ends as
    /// xtask's `main` ends a command whose next step failed, or whose next check saw them.
    #[test]
    #[ignore = "child half: run in a child process by an_interrupted_command_exits_with_128_plus_the_signal"]
    fn raising_child() {
        let Ok(signals) = std::env::var(CHILD) else {
            return;
        };
        install().unwrap();
        for name in signals.split(',').filter(|n| !n.is_empty()) {
            nix::sys::signal::raise(name.parse().unwrap()).unwrap();
        }
        let result = check()
            .and_then(|()| Err(anyhow::anyhow!("a step failed")))
            .context("between two trials");
        if let Err(e) = &result {
            eprintln!("xtask: error: {e:#}");
        }
        std::process::exit(exit_status(&result).into())
    }

    #[test]
    fn an_interrupted_command_exits_with_128_plus_the_signal() {
        for (signals, status, error) in [
            ("", 1, "between two trials: a step failed"),
            ("SIGINT", 130, "between two trials: interrupted by SIGINT"),
            ("SIGTERM", 143, "between two trials: interrupted by SIGTERM"),
            // A second signal during the cleanup does not change what stopped the command.
            (
                "SIGTERM,SIGINT",
                143,
                "between two trials: interrupted by SIGTERM",
            ),
        ] {
            let (code, lines) = run_child(
                "scenario::interrupt::tests::raising_child",
                (CHILD, signals),
                &["xtask: "],
            );
            assert_eq!(
                (code, lines),
                (Some(status), vec![format!("xtask: error: {error}")]),
                "{signals:?}"
            );
        }
    }

    /// Run by [`a_signal_is_passed_on_to_a_child_in_its_own_group_and_its_end_waited_for`] in a
    /// child process; does nothing elsewhere. Starts a shell in its own group that ends with
    /// status 15 on SIGTERM, raises SIGTERM at itself once the shell's trap is set (before it, the
    /// shell would die of the signal instead), waits with [`wait_passing_on`], then reports.
    #[test]
    #[ignore = "child half: run in a child process by a_signal_is_passed_on_to_a_child_in_its_own_group_and_its_end_waited_for"]
    fn passing_child() {
        if std::env::var_os(PASSING_CHILD).is_none() {
            return;
        }
        install().unwrap();
        let mut shell = own_group(Command::new("sh").args([
            "-c",
            // Ends with 9 by itself after a minute or more, so that a signal not passed on fails
            // the test instead of hanging it.
            "trap 'exit 15' TERM; echo ready; i=0; while [ $i -lt 6000 ]; do sleep 0.01; \
             i=$((i + 1)); done; exit 9",
        ]))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(shell.stdout.as_mut().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready, "ready\n");
        nix::sys::signal::raise(Signal::SIGTERM).unwrap();
        let result = wait_passing_on(&mut shell).map(|_| ());
        match shell.try_wait().unwrap() {
            Some(status) => eprintln!("shell: {status}"),
            None => eprintln!("shell: still running"),
        }
        if let Err(e) = &result {
            eprintln!("xtask: error: {e:#}");
        }
        std::process::exit(exit_status(&result).into())
    }

    #[test]
    fn a_signal_is_passed_on_to_a_child_in_its_own_group_and_its_end_waited_for() {
        let (code, lines) = run_child(
            "scenario::interrupt::tests::passing_child",
            (PASSING_CHILD, "1"),
            &["shell: ", "xtask: "],
        );
        // The shell got the signal (its trap ran) and had ended when the wait returned.
        assert_eq!(
            (code, lines.iter().map(String::as_str).collect::<Vec<_>>()),
            (
                Some(143),
                vec![
                    "shell: exit status: 15",
                    "xtask: error: interrupted by SIGTERM"
                ]
            )
        );
    }
}
