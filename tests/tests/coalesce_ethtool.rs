//! The ethtool netlink coalescing backend against the running kernel.
//!
//! - eth0 is only read, never changed (the host's parameters must not move), and compared with
//!   what `ethtool -c eth0` prints;
//! - errors (unsupported driver, missing device, missing permission) are produced in a network
//!   namespace the test creates and deletes, on veth and loopback devices.
//!
//! Their requirements (root, iproute2, ethtool, an eth0) are checked before they run, in
//! `main.rs`: a test that cannot run here is listed as ignored with the reason.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

use kpo_agent::actuate::coalesce::{
    AdaptiveMode, CoalesceActuator, CoalesceAttrs, CoalesceBackend, CoalesceSettings,
    EthtoolCoalesce,
};
use kpo_agent::actuate::ActuateError;

/// `ethtool -c` output as `key -> value` (`None` for `n/a`); the "Adaptive RX: on  TX: off" line
/// becomes `adaptive-rx` and `adaptive-tx`.
fn parse_ethtool_c(text: &str) -> BTreeMap<String, Option<String>> {
    let value = |v: &str| (v != "n/a").then(|| v.to_string());
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["Adaptive", "RX:", rx, "TX:", tx] = words.as_slice() {
            out.insert("adaptive-rx".to_string(), value(rx));
            out.insert("adaptive-tx".to_string(), value(tx));
        } else if let [key, v] = words.as_slice() {
            if let Some(key) = key.strip_suffix(':') {
                out.insert(key.to_string(), value(v));
            }
        }
    }
    out
}

pub fn parses_ethtool_c_output() {
    let text = "Coalesce parameters for eth0:\nAdaptive RX: off  TX: n/a\n\
                stats-block-usecs: n/a\n\nrx-usecs: 0\nrx-frames: 1\n\ntx-usecs: 12\n";
    let m = parse_ethtool_c(text);
    assert_eq!(m["adaptive-rx"].as_deref(), Some("off"));
    assert_eq!(m["adaptive-tx"], None);
    assert_eq!(m["rx-usecs"].as_deref(), Some("0"));
    assert_eq!(m["tx-usecs"].as_deref(), Some("12"));
    assert_eq!(m["stats-block-usecs"], None);
}

pub fn get_on_eth0_matches_ethtool_c() {
    let out = Command::new("ethtool")
        .args(["-c", "eth0"])
        .output()
        .expect("run ethtool -c eth0");
    let mut backend = EthtoolCoalesce::open().expect("ethtool netlink family");
    assert!(backend.family_id() > 0);
    let before = std::fs::read_to_string("/sys/class/net/eth0/ifindex").unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // The reference could not read it either: then our error must say why, in the same terms.
        assert!(
            stderr.contains("Operation not supported"),
            "ethtool -c eth0 failed: {stderr}"
        );
        let err = backend.get_attrs("eth0").unwrap_err();
        assert!(matches!(err, ActuateError::Unsupported { .. }), "{err}");
        println!("eth0's driver has no coalescing (ethtool -c agrees): the error was checked");
        return;
    }

    let reference = parse_ethtool_c(&String::from_utf8_lossy(&out.stdout));
    let attrs = backend.get_attrs("eth0").unwrap();
    let num = |k: &str| -> Option<u32> {
        reference
            .get(k)
            .unwrap_or_else(|| panic!("ethtool -c printed no {k}"))
            .as_ref()
            .map(|v| v.parse().unwrap())
    };
    let flag = |k: &str| -> Option<bool> {
        reference
            .get(k)
            .unwrap_or_else(|| panic!("ethtool -c printed no {k}"))
            .as_ref()
            .map(|v| v == "on")
    };
    let want = CoalesceAttrs {
        rx_usecs: num("rx-usecs"),
        rx_max_frames: num("rx-frames"),
        tx_usecs: num("tx-usecs"),
        tx_max_frames: num("tx-frames"),
        use_adaptive_rx: flag("adaptive-rx"),
        use_adaptive_tx: flag("adaptive-tx"),
    };
    assert_eq!(attrs, want, "netlink GET vs ethtool -c eth0");
    println!("eth0 coalescing via netlink: {attrs:?}");

    match want.rx_usecs {
        Some(us) => {
            let s = backend.get("eth0").unwrap();
            assert_eq!(
                s,
                CoalesceSettings {
                    rx_usecs: us,
                    adaptive_rx: want.use_adaptive_rx.unwrap_or(false)
                }
            );
        }
        None => assert!(matches!(
            backend.get("eth0"),
            Err(ActuateError::Unsupported { .. })
        )),
    }
    // Read-only: the device is the same and ethtool still reports the same values.
    assert_eq!(
        before,
        std::fs::read_to_string("/sys/class/net/eth0/ifindex").unwrap()
    );
    let again = Command::new("ethtool")
        .args(["-c", "eth0"])
        .output()
        .unwrap();
    assert_eq!(
        parse_ethtool_c(&String::from_utf8_lossy(&again.stdout)),
        reference
    );
}

/// A network namespace with a veth pair inside, deleted on drop (also when a test panics).
struct TestNetns {
    name: String,
}

impl TestNetns {
    /// An empty one (its loopback only).
    fn bare(tag: &str) -> Result<Self, String> {
        let name = format!("kpo-eth-{tag}-{}", std::process::id());
        run(&["ip", "netns", "add", &name])?;
        Ok(Self { name })
    }

    fn create(tag: &str) -> Result<Self, String> {
        let ns = Self::bare(tag)?;
        run(&[
            "ip", "-n", &ns.name, "link", "add", "kpo-va", "type", "veth", "peer", "name", "kpo-vb",
        ])?;
        run(&["ip", "-n", &ns.name, "link", "set", "kpo-va", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Err(e) = run(&["ip", "netns", "del", &self.name]) {
            eprintln!("cleanup of {}: {e}", self.name);
        }
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn assert_unsupported(r: Result<impl std::fmt::Debug, ActuateError>, what: &str) {
    let err = r.expect_err(what);
    assert!(
        matches!(err, ActuateError::Unsupported { .. }),
        "{what}: {err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("does not support") && text.contains("EOPNOTSUPP"),
        "{what}: {text}"
    );
}

fn assert_not_found(r: Result<impl std::fmt::Debug, ActuateError>, what: &str) {
    let err = r.expect_err(what);
    assert!(
        matches!(err, ActuateError::NotFound { .. }),
        "{what}: {err:?}"
    );
    assert!(
        err.to_string().contains("no such network device"),
        "{what}: {err}"
    );
}

pub fn unsupported_and_missing_devices_in_a_namespace() {
    let ns = TestNetns::create("err").expect("create a network namespace");
    let mut b = EthtoolCoalesce::open_in_netns(&ns.path()).unwrap();

    // veth and loopback have no coalescing operations: GET and SET say so.
    for dev in ["kpo-va", "lo"] {
        assert_unsupported(b.get_attrs(dev), &format!("GET {dev}"));
        assert_unsupported(b.get(dev), &format!("trait get {dev}"));
        assert_unsupported(
            b.set(
                dev,
                CoalesceSettings {
                    rx_usecs: 8,
                    adaptive_rx: false,
                },
            ),
            &format!("trait set {dev}"),
        );
        // The raw SET request reaches the kernel and is refused there.
        let change = CoalesceAttrs {
            rx_usecs: Some(8),
            ..Default::default()
        };
        assert_unsupported(b.set_attrs(dev, &change), &format!("SET {dev}"));
    }
    let actuator = CoalesceActuator::with_backend(
        &"ethtool:kpo-va:rx-usecs".parse().unwrap(),
        Box::new(EthtoolCoalesce::open_in_netns(&ns.path()).unwrap()),
        AdaptiveMode::Respect,
    );
    assert_unsupported(actuator, "the veth's rx-usecs actuator");

    // A device that does not exist, and the host's eth0, which is not in this namespace (so the
    // socket really works inside it).
    for dev in ["kpo-nope0", "eth0"] {
        assert_not_found(b.get_attrs(dev), &format!("GET {dev}"));
        assert_not_found(b.get(dev), &format!("trait get {dev}"));
        let change = CoalesceAttrs {
            rx_usecs: Some(8),
            ..Default::default()
        };
        assert_not_found(b.set_attrs(dev, &change), &format!("SET {dev}"));
    }
    assert!(matches!(
        b.get_attrs(""),
        Err(ActuateError::NotFound { .. })
    ));
    // What an operator reads.
    println!(
        "{}",
        b.set_attrs(
            "kpo-va",
            &CoalesceAttrs {
                rx_usecs: Some(8),
                ..Default::default()
            }
        )
        .unwrap_err()
    );
    println!("{}", b.get_attrs("kpo-nope0").unwrap_err());
    drop(ns);
}

/// The cookie of the network namespace at `path`, read on a thread that enters it.
fn cookie_of(path: &std::path::Path) -> u64 {
    let ns = File::open(path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            kpo_agent::actuate::sysctl::this_netns_cookie().unwrap()
        })
        .join()
        .unwrap()
    })
}

/// The device lookups behind "is the NIC KPO changed gone?" ask the backend's namespace, not the
/// calling thread's: a veth's index and name there, the namespace's cookie; an alternative name
/// of its own is here too. Moved to another namespace, the device is not known gone (neither its
/// name nor its index is there), and back with its index it is here again; renamed, it is not
/// gone (its index has the new name), also with a new device under its old name; deleted with a
/// new device under its name, it is gone from under it; deleted with none, not known. A name that names nothing is never asked with
/// `SIOCGIFINDEX` (which would make the kernel try to load a module for it).
pub fn device_lookups_in_a_namespace() {
    use kpo_agent::actuate::coalesce::{device_now, DeviceNow, DeviceSeen};
    let ns = TestNetns::create("dev").expect("create a network namespace");
    let mut b = EthtoolCoalesce::open_in_netns(&ns.path()).unwrap();
    let cookie = cookie_of(&ns.path());
    assert_eq!(b.netns_cookie(), Some(cookie));
    assert_ne!(
        Some(cookie),
        kpo_agent::actuate::sysctl::this_netns_cookie().ok()
    );
    let index = b
        .ifindex("kpo-va")
        .unwrap()
        .expect("kpo-va in the namespace");
    assert_eq!(b.ifname(index).unwrap().as_deref(), Some("kpo-va"));
    assert!(b.ifindex("a-name-longer-than-ifnamsiz").is_err());
    let mut host = EthtoolCoalesce::open().unwrap();
    let seen = DeviceSeen {
        ifindex: index,
        netns_cookie: cookie,
    };
    assert_eq!(device_now(&mut b, "kpo-va", &seen), DeviceNow::Here);
    // Under an alternative name (`ip link property add`): the same device.
    run(&[
        "ip", "-n", &ns.name, "link", "property", "add", "dev", "kpo-va", "altname", "kpo-alt",
    ])
    .unwrap();
    assert_eq!(device_now(&mut b, "kpo-alt", &seen), DeviceNow::Here);
    // The kernel's lookups take the alternative name and give back the NIC's own (a new change
    // under the alternative name is refused, naming it).
    assert_eq!(
        kpo_agent::actuate::coalesce::own_name_if_alternative(&mut b, "kpo-alt").as_deref(),
        Some("kpo-va")
    );
    assert_eq!(
        kpo_agent::actuate::coalesce::own_name_if_alternative(&mut b, "kpo-va"),
        None
    );
    // Not the namespace KPO changed it in.
    assert!(matches!(
        device_now(&mut host, "kpo-va", &seen),
        DeviceNow::Unsure(_)
    ));
    // Moved to another namespace (as a CNI hands a NIC to a pod): not known; back, here.
    let away = TestNetns::bare("away").expect("create a second network namespace");
    run(&[
        "ip", "-n", &ns.name, "link", "set", "kpo-va", "netns", &away.name,
    ])
    .unwrap();
    assert_eq!(b.ifname(index).unwrap(), None);
    match device_now(&mut b, "kpo-va", &seen) {
        DeviceNow::Unsure(why) => assert!(
            why.contains("no device has the name kpo-va or the index")
                && why.contains("moved to another network namespace"),
            "{why}"
        ),
        other => panic!("moved out: {other:?}"),
    }
    run(&[
        "ip", "-n", &away.name, "link", "set", "kpo-va", "netns", &ns.name,
    ])
    .unwrap();
    drop(away);
    assert_eq!(b.ifname(index).unwrap().as_deref(), Some("kpo-va"));
    assert_eq!(device_now(&mut b, "kpo-va", &seen), DeviceNow::Here);
    // Renamed, then a new device under the old name: not gone.
    run(&["ip", "-n", &ns.name, "link", "set", "kpo-va", "down"]).unwrap();
    run(&[
        "ip", "-n", &ns.name, "link", "set", "kpo-va", "name", "kpo-vc",
    ])
    .unwrap();
    match device_now(&mut b, "kpo-va", &seen) {
        DeviceNow::Unsure(why) => assert!(why.contains("is named kpo-vc now"), "{why}"),
        other => panic!("renamed: {other:?}"),
    }
    run(&[
        "ip", "-n", &ns.name, "link", "add", "kpo-va", "type", "veth", "peer", "name", "kpo-vd",
    ])
    .unwrap();
    match device_now(&mut b, "kpo-va", &seen) {
        DeviceNow::Unsure(why) => assert!(why.contains("is named kpo-vc now"), "{why}"),
        other => panic!("renamed, its name taken: {other:?}"),
    }
    // Deleted, its name on the new device: gone from under it.
    run(&["ip", "-n", &ns.name, "link", "del", "kpo-vc"]).unwrap();
    assert_eq!(b.ifname(index).unwrap(), None);
    match device_now(&mut b, "kpo-va", &seen) {
        DeviceNow::Gone(why) => assert!(
            why.contains(&format!(
                "kpo-va (index {index}) is gone from under its name"
            )),
            "{why}"
        ),
        other => panic!("deleted, its name taken: {other:?}"),
    }
    // No device under its name either: not known.
    run(&["ip", "-n", &ns.name, "link", "del", "kpo-va"]).unwrap();
    assert!(matches!(
        device_now(&mut b, "kpo-va", &seen),
        DeviceNow::Unsure(_)
    ));
    drop(ns);
}

/// Linux capability sets of the calling thread (capget/capset, version 3).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const CAP_V3: u32 = 0x2008_0522;
const CAP_NET_ADMIN: u32 = 12;

/// Drop CAP_NET_ADMIN from this thread's effective set (capabilities are per thread).
fn drop_net_admin() -> std::io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as the ABI requires.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_without_cap_net_admin_is_a_permission_error() {
    let ns = TestNetns::create("perm").expect("create a network namespace");
    let ns_file = File::open(ns.path()).unwrap();
    // Netlink checks the capabilities of whoever opened the socket, so the socket is opened on a
    // thread that has entered the namespace and dropped CAP_NET_ADMIN.
    let (get, set) = std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            drop_net_admin().unwrap();
            let mut b = EthtoolCoalesce::open().unwrap();
            let change = CoalesceAttrs {
                rx_usecs: Some(8),
                ..Default::default()
            };
            (b.get_attrs("kpo-va"), b.set_attrs("kpo-va", &change))
        })
        .join()
        .unwrap()
    });
    // Reading needs no privilege: the driver's answer comes through.
    assert_unsupported(get, "GET without CAP_NET_ADMIN");
    let err = set.unwrap_err();
    match &err {
        ActuateError::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{err}")
        }
        other => panic!("expected a permission error, got {other:?}"),
    }
    assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
    println!("{err}");
    drop(ns);
}
