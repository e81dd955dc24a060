//! The real coalescing backend: the kernel's ethtool generic netlink interface
//! (`ETHTOOL_MSG_COALESCE_GET` / `ETHTOOL_MSG_COALESCE_SET`), synchronously, on one socket.
//!
//! A netlink socket acts on the network namespace it was created in, so
//! [`EthtoolCoalesce::open_in_netns`] creates it on a short-lived thread that has entered the
//! namespace (as `collect/netns.rs` does for sock_diag); the socket keeps working there afterwards.
//!
//! Errors say what to check: a missing device is [`ActuateError::NotFound`]; a driver without
//! coalescing operations (EOPNOTSUPP, e.g. veth, loopback) or without the parameter is
//! [`ActuateError::Unsupported`]; a refused permission (SET needs CAP_NET_ADMIN in the device's
//! namespace) is an [`ActuateError::Io`] of kind `PermissionDenied` that says so. The kernel's own
//! explanation (extended ACK) is appended when it gives one.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_generic::{
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlFamily, GenlMessage,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use super::ethtool_msg::{extack_message, CoalesceAttrs, CoalesceMessage, ETHTOOL_GENL_NAME};
use super::{CoalesceBackend, CoalesceParam, CoalesceSettings};
use crate::actuate::ActuateError;

/// A failed netlink exchange, before it is given a meaning for one device.
#[derive(Debug)]
enum NlError {
    Io(io::Error),
    Decode(String),
    /// The kernel's answer: a positive errno and its extended ACK message.
    Kernel {
        errno: i32,
        extack: Option<String>,
    },
}

/// Coalescing through ethtool netlink.
#[derive(Debug)]
pub struct EthtoolCoalesce {
    socket: Socket,
    family_id: u16,
    seq: u32,
    /// A socket made with the netlink one, so in the same network namespace: the interface
    /// ioctls (name to index and back) and the namespace's cookie are asked through it, about
    /// the namespace the coalescing requests go to.
    probe: OwnedFd,
}

impl EthtoolCoalesce {
    /// Open a generic netlink socket in the calling thread's network namespace and resolve the
    /// `ethtool` family.
    pub fn open() -> Result<Self, ActuateError> {
        let io_err = |source| ActuateError::Io {
            path: PathBuf::from("generic netlink socket"),
            source,
        };
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(io_err)?;
        socket.bind_auto().map_err(io_err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io_err)?;
        // Extended ACKs carry the kernel's reason (e.g. which parameter the driver refuses);
        // capping keeps our request out of the error replies. Both are best effort.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        let probe = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| io_err(e.into()))?;
        let mut me = Self {
            socket,
            family_id: 0,
            seq: 0,
            probe,
        };
        me.family_id = me.resolve_family()?;
        Ok(me)
    }

    /// [`EthtoolCoalesce::open`] inside the network namespace at `ns_path` (e.g.
    /// `/run/netns/<name>` or `/proc/<pid>/ns/net`). The calling thread stays where it is.
    pub fn open_in_netns(ns_path: &Path) -> Result<Self, ActuateError> {
        let ns = File::open(ns_path).map_err(|source| ActuateError::Io {
            path: ns_path.to_path_buf(),
            source,
        })?;
        crate::actuate::on_thread("kpo-netns", || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                ActuateError::Io {
                    path: ns_path.to_path_buf(),
                    source: io::Error::other(format!("setns: {e}")),
                }
            })?;
            Self::open()
        })
        .map_err(|reason| ActuateError::Io {
            path: ns_path.to_path_buf(),
            source: io::Error::other(reason),
        })?
    }

    /// The dynamically assigned id of the `ethtool` generic netlink family.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    /// All coalescing parameters KPO models, as the kernel reports them (`ethtool -c`).
    pub fn get_attrs(&mut self, iface: &str) -> Result<CoalesceAttrs, ActuateError> {
        check_name(iface)?;
        let mut msg = GenlMessage::from_payload(CoalesceMessage::get(iface));
        msg.set_resolved_family_id(self.family_id);
        let replies = self.exchange(msg).map_err(|e| {
            device_error(
                e,
                iface,
                "ETHTOOL_MSG_COALESCE_GET",
                &CoalesceAttrs::default(),
            )
        })?;
        let reply = replies.into_iter().next().ok_or_else(|| ActuateError::Io {
            path: op_path("ETHTOOL_MSG_COALESCE_GET", iface),
            source: io::Error::other("the kernel acknowledged without a reply"),
        })?;
        Ok(reply.payload.attrs)
    }

    /// Send exactly the `Some` fields of `change` (`ethtool -C`). Nothing is sent when it is
    /// empty.
    pub fn set_attrs(&mut self, iface: &str, change: &CoalesceAttrs) -> Result<(), ActuateError> {
        check_name(iface)?;
        if change.is_empty() {
            return Ok(());
        }
        let mut msg = GenlMessage::from_payload(CoalesceMessage::set(iface, *change));
        msg.set_resolved_family_id(self.family_id);
        self.exchange(msg)
            .map(|_| ())
            .map_err(|e| device_error(e, iface, "ETHTOOL_MSG_COALESCE_SET", change))
    }

    /// The index of the device named `iface` in the socket's network namespace (`SIOCGIFINDEX`);
    /// `Ok(None)` when the kernel says no device has that name there (ENODEV). A name the ioctl
    /// cannot carry (an alternative name of 16 bytes or more) is an error: not known.
    pub fn ifindex(&mut self, iface: &str) -> Result<Option<u32>, ActuateError> {
        let path = || PathBuf::from(format!("SIOCGIFINDEX {iface}"));
        let mut req = ifreq_named(iface).ok_or_else(|| ActuateError::Io {
            path: path(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "the name does not fit an interface ioctl (IFNAMSIZ)",
            ),
        })?;
        match self.ioctl(libc::SIOCGIFINDEX, &mut req) {
            // SAFETY: SIOCGIFINDEX answered in the union's ifindex member.
            Ok(()) => Ok(u32::try_from(unsafe { req.ifr_ifru.ifru_ifindex }).ok()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(ActuateError::Io {
                path: path(),
                source,
            }),
        }
    }

    /// The name of the device with index `ifindex` in the socket's network namespace
    /// (`SIOCGIFNAME`); `Ok(None)` when the kernel says no device has it there (ENODEV).
    pub fn ifname(&mut self, ifindex: u32) -> Result<Option<String>, ActuateError> {
        let path = || PathBuf::from(format!("SIOCGIFNAME {ifindex}"));
        let index = libc::c_int::try_from(ifindex).map_err(|_| ActuateError::Io {
            path: path(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not an interface index"),
        })?;
        // SAFETY: ifreq is plain data, for which all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_ifru.ifru_ifindex = index;
        match self.ioctl(libc::SIOCGIFNAME, &mut req) {
            Ok(()) => {
                let name: Vec<u8> = req
                    .ifr_name
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                Ok(Some(String::from_utf8_lossy(&name).into_owned()))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(ActuateError::Io {
                path: path(),
                source,
            }),
        }
    }

    /// The cookie of the socket's network namespace (`None`: before Linux 5.14).
    pub fn netns_cookie(&self) -> Option<u64> {
        crate::actuate::sysctl::netns_cookie_of(&self.probe).ok()
    }

    fn ioctl(&self, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: both requests read and write one `ifreq`, which `req` is, alive for the call.
        let rc = unsafe { libc::ioctl(self.probe.as_raw_fd(), request, req as *mut libc::ifreq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn resolve_family(&mut self) -> Result<u16, ActuateError> {
        let msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(ETHTOOL_GENL_NAME.to_string())],
        });
        let replies = self.exchange(msg).map_err(|e| match e {
            NlError::Kernel { errno, .. } if errno == libc::ENOENT => ActuateError::NotFound {
                knob: "ethtool netlink".into(),
                reason: "the kernel has no \"ethtool\" generic netlink family \
                         (needs Linux 5.6+ with CONFIG_ETHTOOL_NETLINK)"
                    .into(),
            },
            other => ActuateError::Io {
                path: PathBuf::from("generic netlink CTRL_CMD_GETFAMILY ethtool"),
                source: other.into_io(),
            },
        })?;
        replies
            .iter()
            .flat_map(|r| &r.payload.nlas)
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| ActuateError::Io {
                path: PathBuf::from("generic netlink CTRL_CMD_GETFAMILY ethtool"),
                source: io::Error::other("the reply has no family id"),
            })
    }

    /// Send one request with an ACK asked for, and collect the replies that come before the ACK.
    fn exchange<F>(&mut self, msg: GenlMessage<F>) -> Result<Vec<GenlMessage<F>>, NlError>
    where
        F: GenlFamily + std::fmt::Debug,
        GenlMessage<F>: NetlinkSerializable + NetlinkDeserializable,
        <GenlMessage<F> as NetlinkDeserializable>::Error: std::fmt::Display,
    {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        // Zeroed: the generic netlink header's reserved bytes are not written by its emitter.
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(NlError::Io)?;

        let mut replies = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let size = self.socket.recv(&mut &mut rx[..], 0).map_err(NlError::Io)?;
            let mut bytes = &rx[..size];
            while bytes.len() >= 16 {
                let length = u32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
                if length < 16 || length > bytes.len() {
                    return Err(NlError::Decode(format!(
                        "netlink message of {length} bytes in a {} byte datagram",
                        bytes.len()
                    )));
                }
                let one = &bytes[..length];
                bytes = &bytes[length.next_multiple_of(4).min(bytes.len())..];
                let m = NetlinkMessage::<GenlMessage<F>>::deserialize(one)
                    .map_err(|e| NlError::Decode(e.to_string()))?;
                if m.header.sequence_number != self.seq {
                    continue; // a late answer to an earlier request
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(replies),
                        Some(code) => {
                            return Err(NlError::Kernel {
                                errno: -code.get(),
                                extack: extack_message(m.header.flags, &e.header),
                            })
                        }
                    },
                    NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
            }
        }
    }
}

impl NlError {
    fn into_io(self) -> io::Error {
        match self {
            NlError::Io(e) => e,
            NlError::Decode(d) => io::Error::new(io::ErrorKind::InvalidData, d),
            NlError::Kernel { errno, extack } => with_extack(errno, extack.as_deref()),
        }
    }
}

fn with_extack(errno: i32, extack: Option<&str>) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    match extack {
        Some(m) => io::Error::new(os.kind(), format!("{os}: {m}")),
        None => os,
    }
}

fn op_path(op: &str, iface: &str) -> PathBuf {
    PathBuf::from(format!("ethtool netlink {op} {iface}"))
}

/// What an error about `iface` names: the parameters `change` sets (`ethtool:eth0:tx-usecs`), or
/// the device alone for a GET (no parameter is being changed).
fn knob(iface: &str, change: &CoalesceAttrs) -> String {
    let names: Vec<&str> = CoalesceParam::ALL
        .into_iter()
        .filter(|p| p.get(change).is_some())
        .map(CoalesceParam::name)
        .collect();
    if names.is_empty() {
        format!("ethtool:{iface}")
    } else {
        format!("ethtool:{iface}:{}", names.join(","))
    }
}

/// An `ifreq` naming `iface`, if the name fits (IFNAMSIZ, with its NUL).
fn ifreq_named(iface: &str) -> Option<libc::ifreq> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.contains('\0') {
        return None;
    }
    // SAFETY: ifreq is plain data, for which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *slot = byte as libc::c_char;
    }
    Some(req)
}

/// The kernel reads the name as a NUL-terminated string of at most 127 bytes.
fn check_name(iface: &str) -> Result<(), ActuateError> {
    if iface.is_empty() || iface.len() > 127 || iface.contains('\0') {
        return Err(ActuateError::NotFound {
            knob: format!("ethtool:{iface}"),
            reason: "not a valid network device name".into(),
        });
    }
    Ok(())
}

/// Give a failed exchange about `iface` its meaning; `change` is what a SET sent (empty for a GET).
fn device_error(e: NlError, iface: &str, op: &str, change: &CoalesceAttrs) -> ActuateError {
    let NlError::Kernel { errno, extack } = e else {
        return ActuateError::Io {
            path: op_path(op, iface),
            source: e.into_io(),
        };
    };
    let because = extack
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match errno {
        // The kernel says "no device matches ..." when the name is unknown; a bare ENODEV is a
        // device that exists but is detached (driver reset, error recovery): not gone for good.
        libc::ENODEV if extack.as_deref().is_some_and(|m| m.contains("no device")) => {
            ActuateError::NotFound {
                knob: knob(iface, change),
                reason: format!(
                    "no such network device in this network namespace (ENODEV{because})"
                ),
            }
        }
        libc::ENODEV => ActuateError::Io {
            path: op_path(op, iface),
            source: io::Error::other(format!(
                "the device is present but not available (detached or being reset); \
                 try again later (ENODEV{because})"
            )),
        },
        // GET fails so only without coalescing operations; SET also when the driver has them
        // but refuses these parameters (virtio-net without the notification-coalescing feature).
        libc::EOPNOTSUPP if op.ends_with("GET") => ActuateError::Unsupported {
            iface: iface.to_string(),
            detail: format!("{op}: EOPNOTSUPP, the driver has no coalescing operations{because}"),
        },
        libc::EOPNOTSUPP => ActuateError::Unsupported {
            iface: iface.to_string(),
            detail: format!(
                "{op}: EOPNOTSUPP, the driver or device does not support changing these \
                 coalescing parameters{because}"
            ),
        },
        // The kernel's words for a parameter outside the driver's supported set.
        libc::EINVAL if extack.as_deref().is_some_and(|m| m.contains("unsupported")) => {
            ActuateError::Unsupported {
                iface: iface.to_string(),
                detail: format!("{op}: EINVAL{because}"),
            }
        }
        // A value the driver refuses, when the SET carried exactly one (whatever adaptive mode it
        // turned off with it); with several, which one it was is not known.
        libc::EINVAL | libc::ERANGE if counts_in(change).len() == 1 => {
            let (param, value) = counts_in(change)[0];
            ActuateError::InvalidValue {
                knob: format!("ethtool:{iface}:{}", param.name()),
                value: value.into(),
                reason: format!(
                    "the driver refused it ({}{because})",
                    if errno == libc::EINVAL {
                        "EINVAL"
                    } else {
                        "ERANGE"
                    }
                ),
            }
        }
        libc::EPERM | libc::EACCES => ActuateError::Io {
            path: op_path(op, iface),
            source: io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{}{because}; changing coalescing needs CAP_NET_ADMIN in the device's \
                     network namespace",
                    io::Error::from_raw_os_error(errno)
                ),
            ),
        },
        _ => ActuateError::Io {
            path: op_path(op, iface),
            source: with_extack(errno, extack.as_deref()),
        },
    }
}

/// The counts (`rx-usecs`, `tx-frames`, ...) `change` sets, with their values.
fn counts_in(change: &CoalesceAttrs) -> Vec<(CoalesceParam, u32)> {
    [
        (CoalesceParam::RxUsecs, change.rx_usecs),
        (CoalesceParam::RxFrames, change.rx_max_frames),
        (CoalesceParam::TxUsecs, change.tx_usecs),
        (CoalesceParam::TxFrames, change.tx_max_frames),
    ]
    .into_iter()
    .filter_map(|(p, v)| Some((p, v?)))
    .collect()
}

impl CoalesceBackend for EthtoolCoalesce {
    fn get(&mut self, iface: &str) -> Result<CoalesceSettings, ActuateError> {
        let a = self.get_attrs(iface)?;
        let rx_usecs = a.rx_usecs.ok_or_else(|| ActuateError::Unsupported {
            iface: iface.to_string(),
            detail: "the driver does not report rx-usecs".into(),
        })?;
        Ok(CoalesceSettings {
            rx_usecs,
            // A driver without adaptive moderation has nothing to fight.
            adaptive_rx: a.use_adaptive_rx.unwrap_or(false),
        })
    }

    /// Reads the current settings first and sends only what changes: the kernel refuses any
    /// attribute outside the driver's supported set, even one left at its current value.
    fn set(&mut self, iface: &str, settings: CoalesceSettings) -> Result<(), ActuateError> {
        let cur = self.get_attrs(iface)?;
        let unsupported = |what: &str| ActuateError::Unsupported {
            iface: iface.to_string(),
            detail: format!("the driver does not report {what}"),
        };
        let mut change = CoalesceAttrs::default();
        match cur.rx_usecs {
            None => return Err(unsupported("rx-usecs")),
            Some(v) if v != settings.rx_usecs => change.rx_usecs = Some(settings.rx_usecs),
            Some(_) => {}
        }
        match cur.use_adaptive_rx {
            None if settings.adaptive_rx => return Err(unsupported("adaptive-rx")),
            Some(v) if v != settings.adaptive_rx => {
                change.use_adaptive_rx = Some(settings.adaptive_rx)
            }
            _ => {}
        }
        self.set_attrs(iface, &change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(errno: i32) -> NlError {
        NlError::Kernel {
            errno,
            extack: None,
        }
    }

    /// Errors name the parameter the SET carried, not rx-usecs whatever it was.
    #[test]
    fn errors_name_the_parameter_changed() {
        const SET: &str = "ETHTOOL_MSG_COALESCE_SET";
        // tx-usecs with adaptive-tx turned off in the same request.
        let tx = CoalesceAttrs {
            tx_usecs: Some(16),
            use_adaptive_tx: Some(false),
            ..CoalesceAttrs::default()
        };
        for errno in [libc::EINVAL, libc::ERANGE] {
            match device_error(kernel(errno), "eth0", SET, &tx) {
                ActuateError::InvalidValue { knob, value, .. } => {
                    assert_eq!((knob.as_str(), value), ("ethtool:eth0:tx-usecs", 16.0));
                }
                other => panic!("{other:?}"),
            }
        }
        let frames = CoalesceAttrs {
            rx_max_frames: Some(8),
            ..CoalesceAttrs::default()
        };
        let e = device_error(kernel(libc::EINVAL), "eth0", SET, &frames);
        assert!(
            e.to_string().starts_with("ethtool:eth0:rx-frames: 8 "),
            "{e}"
        );
        let gone = NlError::Kernel {
            errno: libc::ENODEV,
            extack: Some("no device matches name".into()),
        };
        let e = device_error(gone, "eth0", SET, &tx);
        match &e {
            ActuateError::NotFound { knob, .. } => {
                assert_eq!(knob, "ethtool:eth0:tx-usecs,adaptive-tx")
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.to_string().contains("rx-usecs"), "{e}");
        // A GET changes nothing: the device alone.
        let gone = NlError::Kernel {
            errno: libc::ENODEV,
            extack: Some("no device matches name".into()),
        };
        match device_error(
            gone,
            "eth9",
            "ETHTOOL_MSG_COALESCE_GET",
            &CoalesceAttrs::default(),
        ) {
            ActuateError::NotFound { knob, .. } => assert_eq!(knob, "ethtool:eth9"),
            other => panic!("{other:?}"),
        }
        match check_name("") {
            Err(ActuateError::NotFound { knob, .. }) => assert_eq!(knob, "ethtool:"),
            other => panic!("{other:?}"),
        }
    }
}
