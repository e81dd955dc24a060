//! Who holds an abstract unix socket name, from the kernel: sock_diag for AF_UNIX with
//! `UDIAG_SHOW_NAME | UDIAG_SHOW_UID` (the uid since Linux 5.3). Unlike a connection's
//! credentials, it answers for a socket that only bound the name or whose queue is full, and
//! unlike /proc/net/unix, no user can forge what it says (a name with a newline in it forged a
//! line there: s47 review H1).
//!
//! Written by hand: netlink-packet-sock-diag (0.4), which the inet dump uses, has no
//! `UDIAG_SHOW_UID` and no UID attribute to read, and the request and the two attributes read
//! here are a few fixed-layout fields.
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_UID: u32 = 0x40;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_UID: u16 = 7;
/// The kernel's socket states for unix sockets (include/net/tcp_states.h).
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

/// The socket of the given type bound to the name (not a connection's other end, which carries
/// the same name and the connecting process's uid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub uid: u32,
    pub listening: bool,
}

/// The stream socket bound to `@name` in this network namespace, if any.
pub fn stream_holder(name: &str) -> std::io::Result<Option<Holder>> {
    let mut wanted = vec![0u8];
    wanted.extend_from_slice(name.as_bytes());
    Ok(dump()?.into_iter().find_map(|s| {
        let bound = s.kind == libc::SOCK_STREAM as u8 && s.name.as_deref() == Some(&wanted[..]);
        let holds = s.state == TCP_LISTEN || s.state == TCP_CLOSE;
        (bound && holds).then_some(Holder {
            uid: s.uid?,
            listening: s.state == TCP_LISTEN,
        })
    }))
}

/// A listening stream socket bound to an abstract name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// The name without its leading NUL.
    pub name: String,
    pub uid: u32,
}

/// The listening stream sockets whose abstract names start with `prefix`, with their uids.
pub fn listening_with_prefix(prefix: &str) -> std::io::Result<Vec<Listening>> {
    Ok(dump()?
        .into_iter()
        .filter(|s| s.kind == libc::SOCK_STREAM as u8 && s.state == TCP_LISTEN)
        .filter_map(|s| {
            let (name, uid) = (s.name?, s.uid?);
            let name = std::str::from_utf8(name.strip_prefix(&[0u8][..])?).ok()?;
            name.starts_with(prefix).then(|| Listening {
                name: name.to_string(),
                uid,
            })
        })
        .collect())
}

#[derive(Debug)]
struct Seen {
    kind: u8,
    state: u8,
    name: Option<Vec<u8>>,
    uid: Option<u32>,
}

fn dump() -> std::io::Result<Vec<Seen>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut request = Vec::with_capacity(40);
    request.extend_from_slice(&40u32.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    request.push(libc::AF_UNIX as u8);
    request.push(0); // protocol
    request.extend_from_slice(&0u16.to_ne_bytes()); // pad
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    request.extend_from_slice(&0u32.to_ne_bytes()); // every inode
    request.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_UID).to_ne_bytes());
    request.extend_from_slice(&[0u8; 8]); // cookie
    socket.send(&request, 0)?;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        if n == 0 {
            return Ok(seen);
        }
        if parse(&buf[..n], &mut seen)? {
            return Ok(seen);
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("unix sock_diag: {what}"),
    )
}

/// Adds the sockets of one datagram's messages to `seen`; true at the dump's end.
fn parse(mut b: &[u8], seen: &mut Vec<Seen>) -> std::io::Result<bool> {
    while b.len() >= 16 {
        let len = u32_at(b, 0).ok_or_else(|| bad("short header"))? as usize;
        let kind = u16_at(b, 4).ok_or_else(|| bad("short header"))?;
        if len < 16 || len > b.len() {
            return Err(bad("a message longer than its datagram"));
        }
        let msg = &b[16..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(msg, 0).map_or(0, |e| e as i32);
                return Err(std::io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY => seen.push(socket(msg)?),
            _ => {}
        }
        b = b.get((len + 3) & !3usize..).unwrap_or(&[]);
    }
    Ok(false)
}

/// One `unix_diag_msg` (family, type, state, pad, inode, cookie: 16 bytes) and its attributes.
fn socket(msg: &[u8]) -> std::io::Result<Seen> {
    if msg.len() < 16 {
        return Err(bad("short socket message"));
    }
    let mut s = Seen {
        kind: msg[1],
        state: msg[2],
        name: None,
        uid: None,
    };
    let mut attrs = &msg[16..];
    while attrs.len() >= 4 {
        let len = u16_at(attrs, 0).unwrap_or(0) as usize;
        let kind = u16_at(attrs, 2).unwrap_or(0);
        if len < 4 || len > attrs.len() {
            return Err(bad("an attribute longer than its message"));
        }
        let data = &attrs[4..len];
        match kind {
            UNIX_DIAG_NAME => s.name = Some(data.to_vec()),
            UNIX_DIAG_UID => s.uid = u32_at(data, 0),
            _ => {}
        }
        attrs = attrs.get((len + 3) & !3usize..).unwrap_or(&[]);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt;

    use super::*;

    /// A stream socket bound to `@name` that does not listen.
    fn bound_only(name: &str) -> std::os::fd::OwnedFd {
        let fd = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let unix = nix::sys::socket::UnixAddr::new_abstract(name.as_bytes()).unwrap();
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &unix).unwrap();
        fd
    }

    /// The kernel's answer for a listener of this process's and a socket that only bound a name.
    #[test]
    fn the_holder_of_a_name_is_read_from_the_kernel() {
        let me = nix::unistd::Uid::effective().as_raw();
        let name = format!("kpo-unix-holder-test-{}", std::process::id());
        assert_eq!(stream_holder(&name).unwrap(), None);
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        // A connection's other end carries the name too: not the holder.
        let _client = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
        assert_eq!(
            stream_holder(&name).unwrap(),
            Some(Holder {
                uid: me,
                listening: true
            })
        );
        drop(listener);
        let bound = format!("{name}-bound");
        let _fd = bound_only(&bound);
        assert_eq!(
            stream_holder(&bound).unwrap(),
            Some(Holder {
                uid: me,
                listening: false
            })
        );
        // A datagram socket of the same name is not the stream name's holder.
        let other = format!("{name}-dgram");
        let dgram = std::os::unix::net::UnixDatagram::bind_addr(
            &std::os::unix::net::SocketAddr::from_abstract_name(other.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(stream_holder(&other).unwrap(), None);
        drop(dgram);
    }

    /// Listeners found by the start of their names; one that only bound its name is not
    /// listed.
    #[test]
    fn listeners_are_found_by_prefix() {
        let me = nix::unistd::Uid::effective().as_raw();
        let prefix = format!("kpo-unix-prefix-test-{}.", std::process::id());
        let listen = |suffix: &str| {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(
                format!("{prefix}{suffix}").as_bytes(),
            )
            .unwrap();
            std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
        };
        let (a, b) = (listen("a"), listen("b"));
        let _fd = bound_only(&format!("{prefix}c"));
        let mut found = listening_with_prefix(&prefix).unwrap();
        found.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(
            found,
            vec![
                Listening {
                    name: format!("{prefix}a"),
                    uid: me,
                },
                Listening {
                    name: format!("{prefix}b"),
                    uid: me,
                },
            ]
        );
        drop(a);
        let names: Vec<_> = listening_with_prefix(&prefix)
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, vec![format!("{prefix}b")]);
        drop(b);
    }
}
