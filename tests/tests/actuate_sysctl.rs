//! The sysctl actuator against the running kernel, inside network namespaces the tests create
//! (`kpo-act-*`, deleted by a guard even on panic).
//!
//! - Per-namespace keys (`net.core.somaxconn`, `net.ipv4.tcp_rmem`) are applied through
//!   `open_actuator` with a `@netns:/run/netns/NAME` address and with the namespace's inode, read
//!   back independently inside the namespace (`ip netns exec NAME cat /proc/sys/...`), reverted,
//!   and read back again.
//! - The kernel's refusals come back as the right error variants.
//! - Every test that changes a key reads the host's value of it from /proc/sys before and after
//!   and asserts it did not move. No host key is ever written: the only host write attempted is
//!   to `fs.inode-nr`, whose file is 0444 and which the kernel refuses at open.

use std::sync::atomic::{AtomicU32, Ordering};

use kpo_agent::actuate::param::{ParamAddress, Value};
use kpo_agent::actuate::sysctl::is_per_netns;
use kpo_agent::actuate::{open_actuator, ActuateError, Roots};
use kpo_integration::{command_exists, run_ok, Netns};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Root and `ip` (the tests create network namespaces and read inside them with `ip netns exec`).
pub fn requirement() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (creates network namespaces, enters them with setns)".into());
    }
    if !command_exists("ip") {
        return Some("iproute2 (ip) is not installed; run cargo xtask setup".into());
    }
    None
}

/// A namespace named `kpo-act-<pid>-<n>`; the guard (`Netns`'s drop) deletes it.
fn namespace() -> Netns {
    let name = format!(
        "kpo-act-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    run_ok("ip", &["netns", "add", &name]);
    Netns { name }
}

fn host(rel: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{rel}"))
        .unwrap_or_else(|e| panic!("/proc/sys/{rel}: {e}"))
}

/// Read inside the namespace by another process, as the kernel prints it, parsed.
fn inside(ns: &Netns, rel: &str) -> Value {
    Value::parse(&ns.exec(&["cat", &format!("/proc/sys/{rel}")]))
}

fn addr(text: &str) -> ParamAddress {
    text.parse()
        .unwrap_or_else(|e| panic!("{text} should parse: {e}"))
}

/// Apply `new` through the actuator at `address`, check inside the namespace, revert, check again;
/// the host's value must not move.
fn round_trip(ns: &Netns, address: &str, rel: &str, new: &Value) {
    let host_before = host(rel);
    let mut a = open_actuator(&addr(address), &Roots::default())
        .unwrap_or_else(|e| panic!("open {address}: {e}"));
    let original = a.read().unwrap();
    assert_eq!(
        original,
        inside(ns, rel),
        "{address}: read matches the namespace"
    );
    assert_ne!(
        &original, new,
        "the test value must differ from the original"
    );
    a.validate(new).unwrap();
    assert_eq!(&a.apply(new).unwrap(), new, "{address}: read back");
    assert_eq!(
        &inside(ns, rel),
        new,
        "{address}: the namespace has the new value"
    );
    assert_eq!(
        host(rel),
        host_before,
        "{address}: the host's value did not move"
    );
    assert_eq!(a.revert(&original).unwrap(), original);
    assert_eq!(
        inside(ns, rel),
        original,
        "{address}: reverted in the namespace"
    );
    assert_eq!(
        host(rel),
        host_before,
        "{address}: the host's value did not move"
    );
}

fn new_somaxconn(ns: &Netns) -> Value {
    let Value::Int(cur) = inside(ns, "net/core/somaxconn") else {
        panic!("somaxconn is an integer")
    };
    let host_v: i128 = host("net/core/somaxconn").trim().parse().unwrap();
    let mut v = 1234;
    while v == cur || v == host_v {
        v += 1;
    }
    Value::Int(v)
}

fn new_rmem(ns: &Netns) -> Value {
    let Value::Ints(cur) = inside(ns, "net/ipv4/tcp_rmem") else {
        panic!("tcp_rmem is three integers")
    };
    assert_eq!(cur.len(), 3);
    Value::Ints(vec![cur[0], cur[1] + 4096, cur[2] + 8192])
}

pub fn somaxconn_and_tcp_rmem_by_path() {
    let ns = namespace();
    let path = format!("/run/netns/{}", ns.name);
    round_trip(
        &ns,
        &format!("net.core.somaxconn@netns:{path}"),
        "net/core/somaxconn",
        &new_somaxconn(&ns),
    );
    round_trip(
        &ns,
        &format!("net.ipv4.tcp_rmem@netns:{path}"),
        "net/ipv4/tcp_rmem",
        &new_rmem(&ns),
    );
}

pub fn somaxconn_and_tcp_rmem_by_inode() {
    let ns = namespace();
    let inode = ns.inum();
    round_trip(
        &ns,
        &format!("net.core.somaxconn@netns:{inode}"),
        "net/core/somaxconn",
        &new_somaxconn(&ns),
    );
    // Slashed name, same parameter.
    round_trip(
        &ns,
        &format!("net/ipv4/tcp_rmem@netns:{inode}"),
        "net/ipv4/tcp_rmem",
        &new_rmem(&ns),
    );
}

pub fn kernel_refusals_are_clear_errors() {
    let ns = namespace();
    let path = format!("/run/netns/{}", ns.name);
    let roots = Roots::default();
    let host_somaxconn = host("net/core/somaxconn");
    let host_rmem = host("net/ipv4/tcp_rmem");
    let ns_somaxconn = inside(&ns, "net/core/somaxconn");
    let ns_rmem = inside(&ns, "net/ipv4/tcp_rmem");

    // EINVAL: somaxconn has a minimum of 0.
    let mut s = open_actuator(&addr(&format!("net.core.somaxconn@netns:{path}")), &roots).unwrap();
    let err = s.apply(&Value::Int(-1)).unwrap_err();
    assert!(
        matches!(&err, ActuateError::Refused { errno, .. } if errno == "EINVAL"),
        "{err}"
    );
    assert!(err.to_string().contains("net.core.somaxconn"), "{err}");
    assert_eq!(inside(&ns, "net/core/somaxconn"), ns_somaxconn, "unchanged");

    // ENOENT from the write: a name the kernel has nothing by, not a missing key.
    let cc = inside(&ns, "net/ipv4/tcp_congestion_control");
    let mut c = open_actuator(
        &addr(&format!("net.ipv4.tcp_congestion_control@netns:{path}")),
        &roots,
    )
    .unwrap();
    let err = c.apply(&Value::Word("kpo_no_such_cc".into())).unwrap_err();
    assert!(
        matches!(&err, ActuateError::Refused { errno, .. } if errno == "ENOENT"),
        "{err}"
    );
    assert!(err.to_string().contains("nothing by that name"), "{err}");
    assert_eq!(
        inside(&ns, "net/ipv4/tcp_congestion_control"),
        cc,
        "unchanged"
    );

    // The wrong shape never reaches the kernel (which would take two of three values).
    let mut r = open_actuator(&addr(&format!("net.ipv4.tcp_rmem@netns:{path}")), &roots).unwrap();
    let err = r.apply(&Value::Ints(vec![4096, 8192])).unwrap_err();
    assert!(matches!(err, ActuateError::Shape { .. }), "{err}");
    assert_eq!(inside(&ns, "net/ipv4/tcp_rmem"), ns_rmem, "unchanged");

    // A missing key, inside the namespace.
    let mut m =
        open_actuator(&addr(&format!("net.ipv4.no_such_key@netns:{path}")), &roots).unwrap();
    let err = m.read().unwrap_err();
    assert!(matches!(err, ActuateError::NoSuchKey { .. }), "{err}");
    assert!(err.to_string().contains("in network namespace"), "{err}");

    // A global key addressed in a namespace is refused, never mapped to the host.
    let err = open_actuator(
        &addr(&format!("net.core.netdev_max_backlog@netns:{path}")),
        &roots,
    )
    .err()
    .expect("a global key in a namespace is refused");
    assert!(matches!(err, ActuateError::GlobalKey { .. }), "{err}");

    // A namespace that does not exist (by inode and by path).
    for bad in [
        "net.core.somaxconn@netns:1",
        "net.core.somaxconn@netns:/run/netns/kpo-act-none",
    ] {
        let err = open_actuator(&addr(bad), &roots)
            .err()
            .expect("no such namespace");
        assert!(matches!(err, ActuateError::Netns { .. }), "{bad}: {err}");
    }

    // Read-only: fs.inode-nr is 0444 (the kernel refuses the open for writing, even for root).
    let mut ro = open_actuator(&addr("fs.inode-nr"), &roots).unwrap();
    let cur = ro.read().unwrap();
    let err = ro.validate(&cur).unwrap_err();
    assert!(matches!(err, ActuateError::ReadOnly { .. }), "{err}");
    let err = ro.apply(&cur).unwrap_err();
    assert!(matches!(err, ActuateError::ReadOnly { .. }), "{err}");

    assert_eq!(host("net/core/somaxconn"), host_somaxconn, "host untouched");
    assert_eq!(host("net/ipv4/tcp_rmem"), host_rmem, "host untouched");

    a_value_the_kernel_rewrites_is_a_mismatch_that_says_so();
    a_host_wide_key_outside_the_first_namespace_says_so();
}

/// An agent in a namespace other than the machine's first one (a thread that entered one here)
/// finds no host-wide net key, with or without `@netns`: the kernel shows them in the first
/// namespace only. The error says so, not "check the name" (qa-act #1).
fn a_host_wide_key_outside_the_first_namespace_says_so() {
    let ns = namespace();
    let in_netns = format!("net.core.netdev_max_backlog@netns:/run/netns/{}", ns.name);
    let errors = ns.run(|| {
        ["net.core.netdev_max_backlog", in_netns.as_str()].map(|text| {
            let opened = open_actuator(&addr(text), &Roots::default());
            let err = match opened {
                Ok(mut a) => a.read().unwrap_err(),
                Err(e) => e,
            };
            (text.to_string(), err)
        })
    });
    for (text, err) in errors {
        assert!(
            matches!(err, ActuateError::NoSuchKey { .. }),
            "{text}: {err}"
        );
        assert!(
            err.to_string()
                .contains("in the agent's network namespace, which is not the machine's first"),
            "{text}: {err}"
        );
    }
}

/// A per-device key whose device exists where the agent runs but not in the target namespace is
/// `NoSuchKey` (check the device there), not `GlobalKey` (which would send the operator to the
/// agent's own device). The agent's side is played by a thread inside namespace A, which has a
/// device `d0`; the target B has none. No host key is read or written.
pub fn a_device_missing_in_the_namespace_is_no_such_key() {
    let a = namespace();
    let b = namespace();
    // A veth pair with both ends in A: the dummy driver is not built on every test machine.
    run_ok(
        "ip",
        &[
            "-n", &a.name, "link", "add", "d0", "type", "veth", "peer", "name", "d0p",
        ],
    );
    let target = format!("net.ipv4.conf.d0.rp_filter@netns:/run/netns/{}", b.name);
    let err = a.run(|| {
        assert!(
            std::path::Path::new("/proc/sys/net/ipv4/conf/d0/rp_filter").exists(),
            "d0 exists on the agent's side"
        );
        let mut s = open_actuator(&addr(&target), &Roots::default())
            .unwrap_or_else(|e| panic!("open {target}: {e}"));
        s.read().unwrap_err()
    });
    assert!(matches!(err, ActuateError::NoSuchKey { .. }), "{err}");
    assert!(err.to_string().contains("in network namespace"), "{err}");
}

/// `kpo apply` with commas, in a namespace the test creates: a comma list the kernel takes as
/// such (`ip_local_reserved_ports`, from its empty default) is written in the kernel's form, and
/// integers with commas (`tcp_rmem`) are still integers.
pub fn kpo_apply_with_commas_writes_lists_and_integers() {
    let ns = namespace();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[guard]\nsignals = []\n\n\
         [params.\"net.ipv4.ip_local_reserved_ports\"]\nmode = \"auto\"\n\n\
         [params.\"net.ipv4.tcp_rmem\"]\nmode = \"auto\"\n",
    )
    .unwrap();
    let netns = format!("/run/netns/{}", ns.name);
    let host_ports = host("net/ipv4/ip_local_reserved_ports");
    let host_rmem = host("net/ipv4/tcp_rmem");
    assert_eq!(
        ns.exec(&["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]),
        "\n",
        "a new namespace reserves no port"
    );
    let apply = |assignment: &str| {
        crate::agent_decides::kpo(dir.path(), &["apply", assignment, "--netns", &netns])
    };
    apply("net.ipv4.ip_local_reserved_ports=8080,9000-9100");
    assert_eq!(
        ns.exec(&["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]),
        "8080,9000-9100\n"
    );
    apply("net.ipv4.ip_local_reserved_ports=8080,8443");
    assert_eq!(
        ns.exec(&["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]),
        "8080,8443\n"
    );
    // Ports given in another order, or consecutive ones not as a range, are the same ports: they
    // are written in the kernel's form, read back as written, and applied, not put back (s55
    // story AT-2).
    let out = apply("net.ipv4.ip_local_reserved_ports=8445,8443,8444,80");
    assert!(
        out.starts_with("applied") && out.contains("-> 80,8443-8445 (read back 80,8443-8445)"),
        "{out}"
    );
    assert_eq!(
        ns.exec(&["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]),
        "80,8443-8445\n"
    );
    let rmem = new_rmem(&ns);
    let Value::Ints(v) = &rmem else {
        unreachable!()
    };
    apply(&format!("net.ipv4.tcp_rmem={},{}, {}", v[0], v[1], v[2]));
    assert_eq!(inside(&ns, "net/ipv4/tcp_rmem"), rmem);
    assert_eq!(
        host("net/ipv4/ip_local_reserved_ports"),
        host_ports,
        "host untouched"
    );
    assert_eq!(host("net/ipv4/tcp_rmem"), host_rmem, "host untouched");
}

/// `ip_local_reserved_ports` through `kpo apply` in a namespace the test creates, from its empty
/// default to one port (which the kernel prints as an integer), a list, one port, nothing and one
/// port again; then `kpo revert --all` puts the empty default back. `kpo status` shows it as `""`.
pub fn reserved_ports_go_from_none_to_one_to_a_list_and_back_to_none() {
    let ns = namespace();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[guard]\nsignals = []\n\n\
         [params.\"net.ipv4.ip_local_reserved_ports\"]\nmode = \"auto\"\n",
    )
    .unwrap();
    let netns = format!("/run/netns/{}", ns.name);
    let rel = "net/ipv4/ip_local_reserved_ports";
    let host_ports = host(rel);
    let kpo = |args: &[&str]| crate::agent_decides::kpo(dir.path(), args);
    let ports = || ns.exec(&["cat", &format!("/proc/sys/{rel}")]);
    assert_eq!(ports(), "\n", "a new namespace reserves no port");
    for (value, shown) in [
        ("8080", "8080\n"),
        ("8080,9000-9100", "8080,9000-9100\n"),
        ("443", "443\n"),
        ("", "\n"),
        ("8443", "8443\n"),
    ] {
        let assignment = format!("net.ipv4.ip_local_reserved_ports={value}");
        let out = kpo(&["apply", &assignment, "--netns", &netns]);
        assert_eq!(ports(), shown, "{assignment}: {out}");
        assert_eq!(
            host(rel),
            host_ports,
            "{assignment}: the host's value did not move"
        );
    }
    let status = kpo(&["status"]);
    assert!(
        status.contains("original \"\", last applied 8443 (#")
            && status.contains(" by operator), now 8443"),
        "{status}"
    );
    let out = kpo(&["revert", "--all"]);
    assert_eq!(ports(), "\n", "back to no port: {out}");
    assert_eq!(host(rel), host_ports, "the host's value did not move");
}

/// A value of several words as this kernel prints it (`tcp_allowed_congestion_control`, e.g.
/// `reno cubic`; read-only inside a namespace) reads as the words, exactly as printed.
pub fn several_words_read_as_the_kernel_prints_them() {
    let ns = namespace();
    let rel = "net/ipv4/tcp_allowed_congestion_control";
    let printed = ns.exec(&["cat", &format!("/proc/sys/{rel}")]);
    let address = format!(
        "net.ipv4.tcp_allowed_congestion_control@netns:/run/netns/{}",
        ns.name
    );
    let mut a = open_actuator(&addr(&address), &Roots::default())
        .unwrap_or_else(|e| panic!("open {address}: {e}"));
    let value = a.read().unwrap_or_else(|e| panic!("{printed:?}: {e}"));
    assert!(matches!(value, Value::Word(_)), "{value:?}");
    assert_eq!(format!("{}\n", value.kernel_text()), printed);
    let err = a.validate(&value).unwrap_err();
    assert!(matches!(err, ActuateError::ReadOnly { .. }), "{err}");
}

/// A value the kernel takes and keeps otherwise: `ping_group_range` inverted ("5 3") is stored as
/// "1 0" (no group may ping). The read-back is a `Mismatch` that says the kernel rewrote it, not
/// that it "did not take the value" (qa-act: icmp_ratelimit 1001 ms read back 1004 so).
fn a_value_the_kernel_rewrites_is_a_mismatch_that_says_so() {
    let ns = namespace();
    let rel = "net/ipv4/ping_group_range";
    let host_before = host(rel);
    let address = format!("net.ipv4.ping_group_range@netns:/run/netns/{}", ns.name);
    let mut a = open_actuator(&addr(&address), &Roots::default())
        .unwrap_or_else(|e| panic!("open {address}: {e}"));
    let original = a.read().unwrap();
    let set = Value::Ints(vec![100, 200]);
    assert_eq!(a.apply(&set).unwrap(), set);
    match a.apply(&Value::Ints(vec![5, 3])) {
        Err(ActuateError::Mismatch { read, why, .. }) => {
            assert_eq!(read, "1 0");
            assert_eq!(inside(&ns, rel), Value::Ints(vec![1, 0]));
            assert!(
                why.contains("the kernel took it and keeps another value"),
                "{why}"
            );
        }
        other => panic!("expected a mismatch: {other:?}"),
    }
    a.revert(&original).unwrap();
    assert_eq!(inside(&ns, rel), original);
    assert_eq!(host(rel), host_before, "the host's value did not move");
}

/// `is_per_netns` agrees with this kernel: a key is per namespace exactly when its file exists
/// inside a fresh namespace too. Per-device keys (`conf/<dev>`, `neigh/<dev>`) of devices the
/// namespace lacks are left out; `all`, `default` and `lo` are compared.
pub fn is_per_netns_matches_this_kernel() {
    let ns = namespace();
    let list = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .map(|l| l.trim_start_matches("/proc/sys/").replace('/', "."))
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    };
    let host_keys =
        list(&String::from_utf8(run_ok("find", &["/proc/sys/net", "-type", "f"]).stdout).unwrap());
    let ns_keys = list(&ns.exec(&["find", "/proc/sys/net", "-type", "f"]));
    let device_key = |k: &str| {
        let parts: Vec<&str> = k.split('.').collect();
        parts.windows(2).any(|w| {
            (w[0] == "conf" || w[0] == "neigh") && !["all", "default", "lo"].contains(&w[1])
        })
    };
    let mut wrong = Vec::new();
    for k in host_keys.iter().filter(|k| !device_key(k)) {
        let in_ns = ns_keys.binary_search(k).is_ok();
        if is_per_netns(k) != in_ns {
            wrong.push(format!(
                "{k}: is_per_netns={} but exists in a namespace={in_ns}",
                is_per_netns(k)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "is_per_netns disagrees with this kernel:\n{}",
        wrong.join("\n")
    );
    println!(
        "{} host keys compared ({} per namespace)",
        host_keys.len(),
        ns_keys.len()
    );
}

/// A namespace addressed through a process living in it (`/proc/PID/ns/net`), as a container's
/// would be: the namespace here has no `/run/netns` name of its own in the address.
pub fn somaxconn_by_proc_pid_path() {
    let ns = namespace();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "sleep", "30"])
        .spawn()
        .expect("spawn a process in the namespace");
    // `ip netns exec` enters the namespace, then execs sleep: wait until the pid is inside.
    let pid = child.id();
    let mut inside_ok = false;
    for _ in 0..100 {
        let ino = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        if ino.ok() == Some(ns.inum()) {
            inside_ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let result = std::panic::catch_unwind(|| {
        assert!(inside_ok, "the child entered the namespace");
        round_trip(
            &ns,
            &format!("net.core.somaxconn@netns:/proc/{pid}/ns/net"),
            "net/core/somaxconn",
            &new_somaxconn(&ns),
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// `open_actuator` for a NIC runs ethtool netlink in the caller's namespace: inside a namespace
/// the test creates, `lo` has no coalescing (Unsupported) and a missing device is NotFound. The
/// host's NICs are never touched.
pub fn coalescing_dispatch_in_a_namespace() {
    let ns = namespace();
    ns.run(|| {
        let roots = Roots::default();
        let err = open_actuator(&addr("ethtool:lo:rx-usecs"), &roots)
            .err()
            .expect("lo has no coalescing");
        assert!(matches!(err, ActuateError::Unsupported { .. }), "{err}");
        let err = open_actuator(&addr("ethtool:kpo-none0:rx-usecs"), &roots)
            .err()
            .expect("no such device");
        assert!(matches!(err, ActuateError::NotFound { .. }), "{err}");
        let err = open_actuator(&addr("ethtool:lo:rx-bogus"), &roots)
            .err()
            .expect("unknown parameter");
        assert!(matches!(err, ActuateError::UnknownParam { .. }), "{err}");
    });
}

/// A namespace's cookie is the same each time it is read, by inode or by path, differs from the
/// agent's own namespace's, and a namespace made after it died has another, even when it gets the dead one's inode
/// (the kernel hands out the lowest free inode, so one of a few tries usually does). Through the
/// change path: a change made in the first namespace is journaled with its cookie; once the inode
/// names the new namespace, the journal forgets what it knew there and `revert --all` writes
/// nothing into the new one.
pub fn a_namespace_made_after_one_died_is_not_taken_for_it() {
    use kpo_agent::actuate::param::NetnsRef;
    use kpo_agent::actuate::sysctl::netns_cookie;
    use kpo_agent::change::{ChangePath, ChangeStatus, KernelActuators};
    use kpo_agent::journal::{Holder, Journal};
    use kpo_agent::policy::{Policy, Source};

    let first = namespace();
    let inode = first.inum();
    let cookie = netns_cookie(&NetnsRef::Inode(inode)).expect("the cookie of a live namespace");
    assert_eq!(netns_cookie(&NetnsRef::Inode(inode)).unwrap(), cookie);
    let by_path = NetnsRef::Path(format!("/run/netns/{}", first.name).into());
    assert_eq!(netns_cookie(&by_path).unwrap(), cookie);
    // The agent's own namespace's is read too, and is another (s55 story AW-4: a key of a dead
    // namespace whose inode the agent's has now is told from it by this); its own keys are
    // journaled as the host's, without one.
    let own = netns_cookie(&NetnsRef::Path("/proc/self/ns/net".into())).unwrap();
    assert_eq!(
        own,
        kpo_agent::actuate::sysctl::this_netns_cookie().unwrap()
    );
    assert_ne!(own, cookie);

    let state = tempfile::tempdir().unwrap();
    let policy = || {
        Policy::parse(
            "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n",
            "policy.toml",
        )
        .unwrap()
    };
    let address = addr(&format!("net.core.somaxconn@netns:{inode}"));
    let open_path = |policy: Policy| {
        let journal = Journal::open(
            &state.path().join("state"),
            Holder::Cli,
            std::time::Duration::ZERO,
        )
        .unwrap();
        ChangePath::new(policy, journal, Box::new(KernelActuators::default()))
    };
    let mut path = open_path(policy());
    let raised = Value::Int(match inside(&first, "net/core/somaxconn") {
        Value::Int(v) => v + 1000,
        other => panic!("{other:?}"),
    });
    let r = path
        .propose(&kpo_agent::policy::Proposal {
            address: address.clone(),
            value: raised.clone(),
            source: Source::Operator,
            reason: "test".into(),
        })
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    assert_eq!(
        path.journal.param_state(&address).unwrap().netns_cookie,
        Some(cookie)
    );
    assert!(
        !path.settle_if_namespace_gone(&address).unwrap(),
        "the same namespace"
    );
    drop(path);

    drop(first);
    // The kernel frees a deleted namespace's inode only once the namespace is cleaned up, after
    // a grace period, and then hands out the lowest free inode. So new namespaces are made for up
    // to 3 s: one below the inode fills a hole left by earlier tests and is kept (at most 200);
    // one above it means it is not free yet, and is deleted again. Each must have a new cookie.
    let mut reused = None;
    let mut fillers = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline && fillers.len() < 200 {
        let ns = namespace();
        let c = netns_cookie(&NetnsRef::Path(format!("/run/netns/{}", ns.name).into())).unwrap();
        assert_ne!(c, cookie, "a new namespace has a new cookie");
        match ns.inum() {
            n if n == inode => {
                reused = Some(ns);
                break;
            }
            n if n < inode => fillers.push(ns),
            _ => {
                drop(ns);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    let mut path = open_path(policy());
    match reused {
        Some(ns) => {
            let now = inside(&ns, "net/core/somaxconn");
            // `revert --all` finds it first: skipped, nothing written, the journal settled.
            let reports = path
                .restore_originals(vec![address.clone()], Source::Operator, "test", false)
                .unwrap();
            assert_eq!(reports.len(), 1, "{reports:?}");
            assert_eq!(reports[0].status, ChangeStatus::Skipped, "{reports:?}");
            assert!(
                reports[0]
                    .detail
                    .as_ref()
                    .unwrap()
                    .contains("network namespace is gone"),
                "{reports:?}"
            );
            assert_eq!(inside(&ns, "net/core/somaxconn"), now, "nothing written");
            let p = path.journal.param_state(&address).unwrap();
            assert_eq!((p.original.clone(), p.last_applied.clone()), (None, None));
            assert!(
                !path.settle_if_namespace_gone(&address).unwrap(),
                "settled once"
            );
        }
        None => {
            eprintln!(
                "the kernel gave no new namespace inode {inode} within 3 s; only the cookies were compared"
            );
            assert!(
                !path.settle_if_namespace_gone(&address).unwrap(),
                "the inode names no namespace"
            );
        }
    }
}

/// `kpo apply --json` prints the change report and `kpo revert --all --json` the array of
/// reports (s53 story AN: a script had to parse the lines), each with the values the kernel
/// holds in a namespace the test creates; standard output is that document alone, the note
/// that no agent watches the change on standard error.
pub fn apply_and_revert_report_as_json() {
    let ns = namespace();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[guard]\nsignals = []\n\n[params.\"net.core.somaxconn\"]\nmode = \"auto\"\n\
         namespaces = \"all\"\n",
    )
    .unwrap();
    let netns = format!("/run/netns/{}", ns.name);
    let somaxconn = || {
        let v = ns.exec(&["cat", "/proc/sys/net/core/somaxconn"]);
        v.trim().parse::<u64>().unwrap()
    };
    let original = somaxconn();
    let wanted = original + 17;
    let kpo = |args: &[&str]| {
        let out = std::process::Command::new(crate::agent_binary::kpo_binary())
            .args(args)
            .args(crate::agent_decides::state_args(dir.path()))
            .output()
            .unwrap();
        assert!(out.status.success(), "kpo {args:?}: {out:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("kpo {args:?}: not one JSON document ({e}): {out:?}"));
        (json, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let assignment = format!("net.core.somaxconn={wanted}");
    let (report, stderr) = kpo(&["apply", &assignment, "--netns", &netns, "--json"]);
    assert_eq!(somaxconn(), wanted);
    assert_eq!(report["status"], "applied", "{report}");
    assert_eq!(report["before"], original, "{report}");
    assert_eq!(report["after"], wanted, "{report}");
    assert_eq!(report["read_back"], wanted, "{report}");
    let id = report["journal_id"].as_u64().expect("a journal id");
    assert!(
        stderr.contains("kpo: warning: not watched by the guard")
            && stderr.contains(&format!("kpo revert {id} puts it back")),
        "{stderr}"
    );

    let (reports, _) = kpo(&["revert", "--all", "--json"]);
    assert_eq!(somaxconn(), original);
    let reports = reports.as_array().expect("an array of reports");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["status"], "reverted", "{reports:?}");
    assert_eq!(reports[0]["read_back"], original, "{reports:?}");
    // Again: the parameter is at its original already, said as a report too.
    let (reports, _) = kpo(&["revert", "--all", "--json"]);
    assert_eq!(reports[0]["status"], "unchanged", "{reports}");
    assert_eq!(reports[0]["after"], original, "{reports}");
}
