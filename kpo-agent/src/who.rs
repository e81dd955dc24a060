//! Who is acting, for the journal: the person behind `sudo` too, since every operator command
//! runs as root. The kernel's login uid (`/proc/PID/loginuid`, kept across sudo and su) names
//! them; without a login session (a cron job, a container), `SUDO_USER` if set.
//!
//! The CLI names itself ([`who`]) when it acts on the state directory alone; the agent names the
//! caller on the other end of its socket ([`who_is`], from the pid and uid the kernel gives for
//! the connection), so what a request says about its sender is not what gets journaled. The
//! uid, pid and login uid are the kernel's; `SUDO_USER` is only what the caller's environment
//! says, and stands in only where there is no login session.

/// This process.
pub fn who() -> String {
    who_is(std::process::id(), nix::unistd::Uid::current().as_raw())
}

/// The process `pid`, running as `uid`. One that has already exited is named by its ids alone.
pub fn who_is(pid: u32, uid: u32) -> String {
    let login_name = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    };
    named(pid, uid, login_name)
}

/// [`who_is`] without looking the login uid's name up, which asks NSS (a directory service that
/// may not answer): `operator loginuid 1000 (uid 0, pid 4711)`. Only /proc is read.
pub fn who_is_by_ids(pid: u32, uid: u32) -> String {
    named(pid, uid, |_| None)
}

fn named(pid: u32, uid: u32, login_name: impl Fn(u32) -> Option<String>) -> String {
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    let loginuid = std::fs::read_to_string(proc.join("loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    // The environment the process started with: where sudo put SUDO_USER.
    let sudo_user = std::fs::read(proc.join("environ")).ok().and_then(|env| {
        env.split(|&b| b == 0)
            .find_map(|var| var.strip_prefix(b"SUDO_USER="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    });
    operator_text(loginuid, login_name, sudo_user.as_deref(), uid, pid)
}

/// The most of `SUDO_USER` kept: more than any user name (Linux's `LOGIN_NAME_MAX` is 256 with
/// its terminator).
const SUDO_USER_MAX: usize = 255;

fn operator_text(
    loginuid: Option<u32>,
    login_name: impl Fn(u32) -> Option<String>,
    sudo_user: Option<&str>,
    uid: u32,
    pid: u32,
) -> String {
    // u32::MAX: no login session (the audit subsystem's "unset").
    let person = match loginuid.filter(|&l| l != u32::MAX) {
        Some(l) => Some(login_name(l).unwrap_or_else(|| format!("loginuid {l}"))),
        // The caller's own environment, anything it likes: one line of what can be seen, at most
        // a user name's length, since it is shown in `kpo status`, events and webhooks (s55
        // story AU-4: an escape sequence cleared the operator's screen).
        None => sudo_user
            .map(|s| {
                crate::shown::one_line(s)
                    .chars()
                    .take(SUDO_USER_MAX)
                    .collect()
            })
            .filter(|s: &String| !s.is_empty()),
    };
    match person {
        Some(p) => format!("operator {p} (uid {uid}, pid {pid})"),
        None => format!("operator (uid {uid}, pid {pid})"),
    }
}

#[cfg(test)]
mod tests {
    /// `SUDO_USER` is the caller's to set: shown on one line without control or format
    /// characters, and no longer than a user name (s55 story AU-4).
    #[test]
    fn sudo_user_is_shown_as_plain_text() {
        let text = |s| super::operator_text(None, |_| None, Some(s), 0, 42);
        assert_eq!(
            text("ev\u{1b}[2Jil\nnext \u{202e}\"q\""),
            "operator ev [2Jil next \"q\" (uid 0, pid 42)"
        );
        assert_eq!(text("\u{1b}\n"), "operator (uid 0, pid 42)");
        let long = "a".repeat(1000);
        assert_eq!(
            text(&long),
            format!("operator {} (uid 0, pid 42)", "a".repeat(255))
        );
    }

    /// The person behind sudo is named: by their login uid, else by `SUDO_USER`.
    #[test]
    fn the_operator_is_named_behind_sudo() {
        let names = |uid: u32| (uid == 1000).then(|| "alice".to_string());
        let text = |l, s| super::operator_text(l, names, s, 0, 42);
        assert_eq!(
            text(Some(1000), Some("bob")),
            "operator alice (uid 0, pid 42)"
        );
        assert_eq!(
            text(Some(1001), None),
            "operator loginuid 1001 (uid 0, pid 42)"
        );
        assert_eq!(
            text(Some(u32::MAX), Some("bob")),
            "operator bob (uid 0, pid 42)"
        );
        assert_eq!(text(None, Some("")), "operator (uid 0, pid 42)");
        assert_eq!(text(None, None), "operator (uid 0, pid 42)");
    }

    /// Another process is read from its own /proc entries, the same way as this one; one that
    /// has exited is named by its ids alone.
    #[test]
    fn a_peer_is_named_from_its_proc_entries() {
        use std::io::BufRead;
        // The child says it runs before it is read: until its exec has finished, its
        // /proc/PID/environ is still empty (the kernel sets it up after closing the spawner's
        // pipe).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "echo ready; read wait"])
            .env("SUDO_USER", "carol")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n");
        let pid = child.id();
        let named = super::who_is(pid, 0);
        let loginuid = std::fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&l| l != u32::MAX);
        if loginuid.is_none() {
            // No login session here (CI): the child's SUDO_USER names it.
            assert_eq!(named, format!("operator carol (uid 0, pid {pid})"));
        } else {
            // A login session: it names the child (inherited), whatever SUDO_USER says.
            assert!(!named.contains("carol"), "{named}");
            assert!(named.ends_with(&format!("(uid 0, pid {pid})")), "{named}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            super::who_is(pid, 0),
            format!("operator (uid 0, pid {pid})")
        );
    }
}
