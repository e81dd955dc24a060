//! The approval commands with no agent answering: they open the state directory themselves and
//! say what its recovery found, each thing once. No privileges needed, and no kernel value is
//! read or written (an empty journal, no approval; `kpo apply` writes a temporary cpufreq tree).
use std::process::{Command, Output};

fn kpo(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpo"))
        .args(args)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("nobody-listens.sock"))
        .arg("--policy")
        .arg(dir.join("policy.toml"))
        .output()
        .unwrap()
}

/// Damaged lines in the journal and the approvals file: `kpo pending` warns of each once, as
/// `kpo status` does (the stores log them as they load; the command must not print them again).
#[test]
fn recovery_warnings_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[defaults]\n").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let first = kpo(dir.path(), &["pending"]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for file in ["journal.log", "approvals.log"] {
        std::fs::write(state.join(file), "not a record\n").unwrap();
    }

    let out = kpo(dir.path(), &["pending"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no approval pending\n"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    for file in ["journal.log", "approvals.log"] {
        let damaged = format!(
            "kpo: warning: {}: line 1 is damaged (bad checksum field); dropped",
            state.join(file).display()
        );
        assert_eq!(
            lines.iter().filter(|l| **l == damaged).count(),
            1,
            "{damaged}\n{stderr}"
        );
    }
    let mut seen = std::collections::HashSet::new();
    for line in &lines {
        assert!(seen.insert(line), "printed twice: {line}\n{stderr}");
    }
}

/// Reading commands, and those that may start a state directory, each exit 2 with `error`
/// alone on standard error.
fn every_command_refuses(dir: &std::path::Path, error: &str) {
    for args in [
        &["status"][..],
        &["journal"],
        &["pending"],
        &["revert", "--all"],
        &["pause"],
        &["apply", "net.core.somaxconn=300"],
    ] {
        let out = kpo(dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), error, "{args:?}");
    }
}

/// Seen by hand (qa-cli): `--state-dir` naming a file was refused by the first file under it,
/// `FILE/agent-netns cannot be read (Not a directory) ... removing FILE/agent-netns`, advice that
/// could not be followed. Every command, those that may start a state directory included, says
/// what is wrong.
#[test]
fn a_state_directory_that_is_a_file_is_named_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[defaults]\n").unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "").unwrap();
    every_command_refuses(
        dir.path(),
        &format!(
            "kpo: error: {}: not a directory: --state-dir names the directory KPO keeps its \
             journal in\n",
            state.display()
        ),
    );
}

/// Seen by hand (s50 story W6): a `--state-dir` that is a link into a disk not mounted was refused
/// with "File exists (os error 17)", and a link loop with advice about network namespaces. Every
/// command, those that may start a state directory included, names the link and makes nothing at
/// its end (the mount would later hide it).
#[test]
fn a_state_directory_link_to_nothing_is_named_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[defaults]\n").unwrap();
    let state = dir.path().join("state");
    let nowhere = dir.path().join("unmounted").join("kpo");
    let other = dir.path().join("other");
    for (target, why) in [
        (
            nowhere.clone(),
            format!(
                "it is a symbolic link to {}, which does not exist (a disk not mounted?); KPO \
                 does not create a directory at the end of a link",
                nowhere.display()
            ),
        ),
        (
            other.clone(),
            format!(
                "it is a symbolic link to {} that loops back on itself",
                other.display()
            ),
        ),
    ] {
        std::fs::remove_file(&state).ok();
        std::fs::remove_file(&other).ok();
        std::os::unix::fs::symlink(&target, &state).unwrap();
        if target == other {
            std::os::unix::fs::symlink(&state, &other).unwrap();
        }
        every_command_refuses(
            dir.path(),
            &format!(
                "kpo: error: {}: not a state directory: {why}\n",
                state.display()
            ),
        );

        assert!(!dir.path().join("unmounted").exists());
    }
}

/// `kpo run` at a state directory that is a link to nothing refuses it as the journal's
/// directory, naming it once (s51 review L2: "cannot create the state directory X: X: ..."),
/// and makes nothing at its end.
#[test]
fn kpo_run_refuses_a_state_directory_link_to_nothing() {
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: kpo run stops first for want of root");
        return;
    }
    // An agent in this network namespace holds the claim, which kpo run meets first.
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    if unix.lines().any(|l| l.ends_with(" @kpo-agent")) {
        kpo_test_skip::skip("a kpo agent runs in this network namespace: kpo run stops first");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[defaults]\n").unwrap();
    let (state, nowhere) = (dir.path().join("state"), dir.path().join("unmounted/kpo"));
    std::os::unix::fs::symlink(&nowhere, &state).unwrap();
    let out = kpo(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().last(),
        Some(
            format!(
                "kpo: error: {}: refusing to keep the journal here: it is a symbolic link to {}, \
                 which does not exist (a disk not mounted?); KPO does not create a directory at \
                 the end of a link",
                state.display(),
                nowhere.display()
            )
            .as_str()
        ),
        "{stderr}"
    );
    assert!(!dir.path().join("unmounted").exists());
}

/// A state directory that does not exist is not made by a command that reads it or acts on what
/// KPO did: a mistyped `--state-dir` would read as a host KPO never touched. `kpo pause` (like
/// `kpo apply`) may start one.
#[test]
fn a_missing_state_directory_is_an_error_not_a_clean_host() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[defaults]\n").unwrap();
    let state = dir.path().join("state");
    for args in [
        &["status"][..],
        &["journal"],
        &["pending"],
        &["explain", "net.core.somaxconn"],
        &["revert", "1"],
        &["resume"],
        &["approve", "ap-1"],
        &["reject", "ap-1"],
    ] {
        let out = kpo(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "kpo: error: {}: no such state directory: KPO has not run with it (is \
                 --state-dir right? the default is /var/lib/kpo); only kpo apply and kpo pause \
                 start a new one; and no agent answered on {} (is --socket right? the default \
                 is /run/kpo/kpo.sock)\n",
                state.display(),
                dir.path().join("nobody-listens.sock").display()
            ),
            "{args:?}"
        );
        assert!(!state.exists(), "{args:?} made it");
    }
    let out = kpo(dir.path(), &["pause"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "kpo: warning: {}: there was no state directory here; this started a new one (is \
             --state-dir right? the default is /var/lib/kpo)\n",
            state.display()
        )
    );
    assert!(state.join("journal.log").exists());
    let again = kpo(dir.path(), &["status"]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr),
        "",
        "said once, when started"
    );
}

/// Seen by hand (qa-act, session 36): `kpo apply --socket S` without `--state-dir`, with the agent
/// on S gone, journaled into the default /var/lib/kpo, where that agent's next start never sees
/// the change nor its original. With a socket of its own named and no agent there, every command
/// asks for the state directory instead, and touches none.
#[test]
fn another_socket_without_its_state_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[defaults]\n").unwrap();
    let socket = dir.path().join("nobody-listens.sock");
    for args in [
        &["status"][..],
        &["journal"],
        &["pending"],
        &["explain", "net.core.somaxconn"],
        &["approve", "ap-1"],
        &["revert", "--all"],
        &["resume"],
        &["pause"],
        &["apply", "net.core.somaxconn=300"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kpo"))
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .arg("--policy")
            .arg(dir.path().join("policy.toml"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "kpo: error: no agent answers on {}, and without one this command opens a state \
                 directory itself: give --state-dir too, the one the agent on that socket runs \
                 with (the default, /var/lib/kpo, is the default socket's agent's)\n",
                socket.display()
            ),
            "{args:?}"
        );
    }
}

/// Seen in a soak (s38 chaos O5): with the agent down and a typo in its policy file, every
/// command that opens the state directory refused with the policy's error, `kpo revert --all`
/// included, and nothing said how to go on during an incident. The error says so, and the way
/// it names works: `--policy /dev/null` reads no policy.
#[test]
fn a_policy_that_does_not_load_names_the_way_to_act_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[params.\"net.core.somaxconn\"]\nmax_step = \"thirty\"\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for command in [&["journal"][..], &["status"], &["revert", "--all"]] {
        let out = kpo(dir.path(), command);
        assert_eq!(out.status.code(), Some(2), "{command:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!(
                "kpo: error: {}:2: params.\"net.core.somaxconn\".max_step: \"thirty\"",
                dir.path().join("policy.toml").display()
            )),
            "{command:?}: {stderr}"
        );
        assert!(
            stderr.contains("meanwhile --policy /dev/null, no policy, reads the journal and lets kpo revert --all put back every value KPO changed"),
            "{command:?}: {stderr}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kpo"))
        .args(["journal", "--policy", "/dev/null", "--state-dir"])
        .arg(&state)
        .arg("--socket")
        .arg(dir.path().join("nobody-listens.sock"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command that only shows something ends quietly, status 0, when its reader is gone (`kpo
/// journal | head -1`), as the Unix tools do; one that changes something says its report was
/// lost (exit 2), the change done and journaled (s49 storyS S-3).
#[test]
fn a_reader_gone_ends_a_showing_command_quietly() {
    use std::os::fd::OwnedFd;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[defaults]\n").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let with_no_reader = |args: &[&str]| {
        let (reader, writer): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        drop(reader);
        Command::new(env!("CARGO_BIN_EXE_kpo"))
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(dir.path().join("nobody-listens.sock"))
            .arg("--policy")
            .arg(dir.path().join("policy.toml"))
            .stdout(writer)
            .output()
            .unwrap()
    };
    for shows in [&["pending"][..], &["journal"], &["status"]] {
        let out = with_no_reader(shows);
        assert_eq!(out.status.code(), Some(0), "{shows:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{shows:?}");
    }
    let out = with_no_reader(&["pause"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "writing to standard output: its reader is gone (anything the command changed is \
             done and journaled)"
        ),
        "{out:?}"
    );
}

/// A state directory (mode 0700) naming a temporary cpufreq tree (`sysfs-root`) and a policy
/// that lets the operator change its `scaling_max_freq`: no root needed. Returns the directory and
/// the tree's policy0.
fn cpufreq_in_auto() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let policy = kpo_agent::actuate::cpufreq::fake_policy(
        &dir.path().join("sys"),
        0,
        1_200_000,
        3_000_000,
        3_000_000,
    );
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        state.join("sysfs-root"),
        dir.path().join("sys").as_os_str().as_encoded_bytes(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[params.\"cpufreq:*:scaling_max_freq\"]\nmode = \"auto\"\nmin = 1200000\nmax = 3000000\n",
    )
    .unwrap();
    (dir, policy)
}

/// `kpo apply` with no agent running says that the guard does not watch the change, with the id
/// that puts it back (s50 storyX F5: its output was the running agent's). Over a temporary
/// cpufreq tree, the one the state directory names (`sysfs-root`), so it needs no root.
#[test]
fn an_apply_with_no_agent_says_the_guard_does_not_watch_it() {
    let (dir, policy) = cpufreq_in_auto();
    let out = kpo(
        dir.path(),
        &["apply", "cpufreq:policy0:scaling_max_freq=2400000"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("applied #1 "), "{stdout}");
    assert_eq!(
        lines[1],
        "not watched by the guard: no agent is running, and a change made while it is down is \
         not judged when it starts (kpo revert 1 puts it back)"
    );
    assert_eq!(
        std::fs::read_to_string(policy.join("scaling_max_freq"))
            .unwrap()
            .trim(),
        "2400000"
    );
}

/// A standard error that cannot be written (a cron job's `2>>` on a full disk) loses the
/// warnings, not the command: its output and exit status are as with one that can. Defect (s60
/// story BR-1): `kpo apply --json` made and journaled its change, then panicked (exit 101) on
/// its "not watched by the guard" line; `kpo status` died before its output on the state
/// directory's mode, and `kpo pending` on the journal's warnings (tracing's own report of a line
/// it could not write panics too).
#[test]
fn a_full_standard_error_loses_only_the_warnings() {
    use std::os::unix::fs::PermissionsExt;
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        kpo_test_skip::skip("no /dev/full here to stand for a full disk");
        return;
    };
    let (dir, _) = cpufreq_in_auto();
    let state = dir.path().join("state");
    let with_stderr_full = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kpo"))
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(dir.path().join("nobody-listens.sock"))
            .arg("--policy")
            .arg(dir.path().join("policy.toml"))
            .stderr(full.try_clone().unwrap())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = with_stderr_full(&[
        "apply",
        "--json",
        "cpufreq:policy0:scaling_max_freq=2400000",
    ]);
    assert_eq!(code, Some(0), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "applied", "{stdout}");
    // Warned of by the command itself: a state directory others may read.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, stdout) = with_stderr_full(&["status", "--json"]);
    assert_eq!(code, Some(0), "{stdout}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        status["warnings"].to_string().contains("mode is 0755"),
        "{stdout}"
    );
    // No agent answered (s60 story BR-3: the JSON did not say so).
    assert_eq!(status["answered_by"], "state_dir", "{stdout}");
    // Warned of through the log: a damaged line.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(state.join("approvals.log"), "not a record\n").unwrap();
    let (code, stdout) = with_stderr_full(&["pending"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "no approval pending\n"));
}

/// `kpo explain --json` of a name this machine has no sysctl for prints `[]`, as for a name
/// without advice yet, and says on standard error what the text says. Defect (s60 story
/// BR-5): a script could not tell a typo from "no advice yet".
#[test]
fn explain_json_of_a_mistyped_name_says_so_on_standard_error() {
    use std::os::unix::fs::PermissionsExt;
    if !std::path::Path::new("/proc/sys/net/core/somaxconn").exists() {
        kpo_test_skip::skip("no /proc/sys/net/core/somaxconn here to be a letter away from");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[defaults]\n").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = kpo(dir.path(), &["explain", "net.core.somaxconnn", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "kpo: warning: net.core.somaxconnn: no recommendation recorded (and this machine has no \
         such sysctl: no /proc/sys/net/core/somaxconnn; is the name right? net.core.somaxconn \
         is)\n"
    );
    let out = kpo(dir.path(), &["explain", "net.core.somaxconn", "--json"]);
    assert_eq!(
        (
            String::from_utf8_lossy(&out.stdout).as_ref(),
            out.stderr.as_slice()
        ),
        ("[]\n", &b""[..]),
        "a real name without advice: nothing to warn of"
    );
}
