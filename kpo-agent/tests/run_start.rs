//! `kpo run` refuses what it cannot work with at start, before it loads anything, naming the file
//! and the reason. No privileges needed: every case stops before the agent would need root.
use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

/// Runs `kpo run` with `args`. The events path is in a directory that does not exist, so an agent
/// that got past the checks under test stops at once (it cannot open its output) instead of
/// running. Its policy (everything observed), state directory and socket are its own: as root,
/// the defaults are the host's agent's (/etc/kpo/policy.toml, /var/lib/kpo, /run/kpo/kpo.sock).
fn kpo_run(args: &[&str]) -> Output {
    kpo_run_on(None, args)
}

/// The same with `policy` as `--policy` instead of its own. A start that waits (for a FIFO's
/// writer) is killed at a generous bound, which only turns that wait into a failure.
fn kpo_run_on(policy: Option<&Path>, args: &[&str]) -> Output {
    let own = tempfile::tempdir().unwrap();
    let observe = own.path().join("policy.toml");
    std::fs::write(&observe, "[defaults]\nmode = \"observe\"\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kpo"))
        .arg("run")
        .args(args)
        .args(["--events", "/nonexistent-kpo-dir/events.ndjson"])
        .arg("--policy")
        .arg(policy.unwrap_or(&observe))
        .arg("--state-dir")
        .arg(own.path().join("state"))
        .arg("--socket")
        .arg(own.path().join("kpo.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("kpo run {args:?} did not stop: it waits at start");
        })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim_end().to_string()
}

/// Defect: with an empty --proc-root the agent ran, and the host's listeners vanished silently.
#[test]
fn a_proc_root_without_process_directories_stops_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let out = kpo_run(&["--proc-root", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "kpo: error: --proc-root {}: no process directory (<pid>/) in it, so no network \
             namespace or listener can be found; is procfs mounted there (e.g. the host's /proc \
             at /host/proc)?",
            dir.path().display()
        )
    );
}

/// Seen by hand (qa-cli): `--sysfs-root /nonexistent` started without a word, and cpufreq and the
/// NICs were silently absent, where `--proc-root /nonexistent` stops the agent.
#[test]
fn a_sysfs_root_that_is_no_directory_stops_the_agent() {
    let out = kpo_run(&["--sysfs-root", "/nonexistent-kpo-sys"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "kpo: error: --sysfs-root /nonexistent-kpo-sys: No such file or directory (os error 2)"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = kpo_run(&["--sysfs-root", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "kpo: error: --sysfs-root {}: not a directory",
            file.path().display()
        )
    );
}

/// Roots set in the configuration file are named by the file and key, as `kpo check` names
/// them; given on the command line too, by the flag. Defect (s60 story BS-6): named by the flag
/// nobody gave.
#[test]
fn roots_from_the_config_file_are_named_by_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kpo.toml");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(
        &config,
        format!("proc_root = {:?}\n", empty.display().to_string()),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let out = kpo_run(&["--config", c]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!(
            "kpo: error: {c}: `proc_root` = {:?}: no process directory (<pid>/) in it",
            empty
        )),
        "{}",
        stderr(&out)
    );
    let out = kpo_run(&["--config", c, "--proc-root", empty.to_str().unwrap()]);
    assert!(
        stderr(&out).starts_with(&format!("kpo: error: --proc-root {}: ", empty.display())),
        "the flag given: {}",
        stderr(&out)
    );
    std::fs::write(&config, "sysfs_root = \"/nonexistent-kpo-sys\"\n").unwrap();
    let out = kpo_run(&["--config", c]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "kpo: error: {c}: `sysfs_root` = \"/nonexistent-kpo-sys\": No such file or directory \
             (os error 2)"
        )
    );
}

#[test]
fn a_config_file_that_never_ends_stops_the_agent() {
    let out = kpo_run(&["--config", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "kpo: error: config file: /dev/zero is larger than 1048576 bytes, more than this file \
         can hold; is it the right file?"
    );
}

/// Seen by hand (review s35 cli): a FIFO as `--policy` or `--config` held the start in open()
/// until something wrote to it. Anything but a regular file is refused by what it is.
#[test]
fn a_policy_or_config_that_is_not_a_regular_file_stops_the_agent_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo_is = "it is a FIFO (named pipe), not a regular file: reading one waits for a writer";
    let out = kpo_run(&["--config", fifo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "kpo: error: config file: cannot read {}: {fifo_is}",
            fifo.display()
        )
    );
    let out = kpo_run_on(Some(&fifo), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "kpo: error: {}: cannot read the policy: {fifo_is}",
            fifo.display()
        )
    );
    for (path, what) in [("/dev/tty", "a character device"), ("/tmp", "a directory")] {
        let out = kpo_run_on(Some(Path::new(path)), &[]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!("kpo: error: {path}: cannot read the policy: it is {what}, not a regular file")
        );
    }
}

#[test]
fn an_empty_proc_root_or_btf_in_the_config_file_stops_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kpo.toml");
    // (On the command line, clap already refuses an empty value.)
    for (toml, expected) in [
        (
            "proc_root = \"\"",
            "`proc_root` is empty; give where procfs is mounted (default /proc)",
        ),
        (
            "btf = \"\"",
            "`btf` is empty; give the kernel BTF file (default /sys/kernel/btf/vmlinux)",
        ),
    ] {
        std::fs::write(&config, toml).unwrap();
        let out = kpo_run(&["--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{toml}");
        assert_eq!(
            stderr(&out),
            format!("kpo: error: {}: {expected}", config.display()),
            "{toml}"
        );
    }
}

#[test]
fn an_overlong_window_stops_the_agent() {
    let out = kpo_run(&["--window", "5000000000h"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "kpo: error: command line: `--window` is 570385years 6months 29days 10h 38m 24s; it must \
         be at most 30m (a tick can be as long as the window, and a 32-bit kernel counter at a \
         million events per second on one CPU passes half its range in 36 minutes, beyond which \
         its change over a tick cannot be told from a reset)"
    );
}
