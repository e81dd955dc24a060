//! Listening TCP sockets of one network namespace through sock_diag (INET_DIAG with SKMEMINFO):
//! current accept-queue depth, limit, and the listener's drop counter (`sk_drops`, shown by
//! `ss -ltnm` as `d<N>`). The socket must have been created inside the namespace.
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("sock_diag socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("sock_diag reply could not be decoded: {0}")]
    Decode(String),
    #[error("sock_diag returned error {0}")]
    Kernel(i32),
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagListener {
    pub family: u16,
    pub port: u16,
    pub address: IpAddr,
    /// The device the socket is bound to (`sk_bound_dev_if`): every IPv6 link-local listener's
    /// link, or `SO_BINDTODEVICE`'s; 0 for none.
    pub interface: u32,
    /// That device's name in the socket's namespace, which only the namespace's own socket can
    /// look up ([`super::netns::NetnsHandle::device_name`]): filled in by the collector.
    pub device: Option<String>,
    /// Socket inode, to find the owning process.
    pub inode: u32,
    /// Current accept-queue depth (`Recv-Q` in `ss -ltn`).
    pub depth: u32,
    /// Accept-queue limit (`Send-Q` in `ss -ltn`).
    pub limit: u32,
    /// `sk_drops`: connections dropped by this listener since it was created.
    pub drops: u32,
    /// The user that opened the socket (`ss -ltne`'s `uid:`).
    pub uid: u32,
}

/// A sock_diag socket, kept from dump to dump, with the sequence number of its next request.
pub struct DiagSocket {
    socket: Socket,
    seq: u32,
    /// The last dump ended in an error: replies of it may still be queued, or its dump still
    /// running in the kernel (which refuses another dump on the socket with EBUSY meanwhile).
    cut_short: bool,
}

pub fn open_socket() -> Result<DiagSocket, SockDiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(DiagSocket {
        socket,
        seq: 0,
        cut_short: false,
    })
}

impl DiagSocket {
    /// Dumps the TCP listeners of the socket's namespace, IPv4 and IPv6.
    ///
    /// Each request has its own sequence number, and only replies that carry it are read. A
    /// dump cut short by an error (EINTR, a reply that does not decode, the kernel's error)
    /// leaves the rest of its replies queued on the socket; without the check the next request
    /// would read them as its own (the IPv4 dump read as IPv6's, the tick's data one tick late),
    /// and every dump after it too.
    pub fn dump_listeners(&mut self) -> Result<Vec<DiagListener>, SockDiagError> {
        if std::mem::take(&mut self.cut_short) {
            self.drain();
        }
        let result = self.dump();
        self.cut_short = result.is_err();
        result
    }

    fn dump(&mut self) -> Result<Vec<DiagListener>, SockDiagError> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.seq = self.seq.wrapping_add(1);
            request(&self.socket, family, self.seq)?;
            let socket = &self.socket;
            receive(|buf| socket.recv(&mut &mut buf[..], 0), self.seq, &mut out)?;
        }
        Ok(out)
    }

    /// Reads, without waiting, whatever a dump cut short left. The kernel writes the next part
    /// of a running dump as each part is read, so reading until nothing is left runs that dump
    /// to its end, and the socket takes a new one. Bounded, should the kernel keep writing.
    fn drain(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..10_000 {
            if self
                .socket
                .recv(&mut &mut buf[..], libc::MSG_DONTWAIT)
                .is_err()
            {
                return;
            }
        }
    }
}

fn request(socket: &Socket, family: u8, seq: u32) -> Result<(), SockDiagError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::SKMEMINFO,
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    Ok(())
}

/// Reads datagrams with `recv` until the end of the dump whose request had sequence number `seq`.
fn receive(
    mut recv: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    seq: u32,
    out: &mut Vec<DiagListener>,
) -> Result<(), SockDiagError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let size = recv(&mut buf)?;
        if parse_messages(&buf[..size], seq, out)? {
            return Ok(());
        }
    }
}

/// Decodes one datagram of netlink messages into `out`, skipping those of another request than
/// `seq` (left over from a dump cut short). Returns true at the end of the dump.
pub fn parse_messages(
    mut bytes: &[u8],
    seq: u32,
    out: &mut Vec<DiagListener>,
) -> Result<bool, SockDiagError> {
    while !bytes.is_empty() {
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
            .map_err(|e| SockDiagError::Decode(e.to_string()))?;
        let length = message.header.length as usize;
        if message.header.sequence_number == seq {
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(true),
                NetlinkPayload::Error(e) => {
                    return Err(SockDiagError::Kernel(e.code.map_or(0, |c| c.get())))
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    out.push(listener_of(&response));
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned within a datagram.
        let advance = (length + 3) & !3;
        if length == 0 || advance > bytes.len() {
            break;
        }
        bytes = &bytes[advance..];
    }
    Ok(false)
}

fn listener_of(response: &InetResponse) -> DiagListener {
    let h = &response.header;
    let drops = response
        .nlas
        .iter()
        .find_map(|nla| match nla {
            Nla::MemInfo(m) => Some(m.drops),
            _ => None,
        })
        .unwrap_or(0);
    DiagListener {
        family: h.family as u16,
        port: h.socket_id.source_port,
        address: h.socket_id.source_address,
        interface: h.socket_id.interface_id,
        device: None,
        inode: h.inode,
        depth: h.recv_queue,
        limit: h.send_queue,
        drops,
        uid: h.uid,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_core::{DoneMessage, NetlinkHeader};
    use netlink_packet_sock_diag::inet::{nlas::MemInfo, InetResponseHeader};

    use super::*;

    fn response(port: u16, depth: u32, limit: u32, drops: u32) -> Vec<u8> {
        response_of(0, port, depth, limit, drops)
    }

    fn response_of(seq: u32, port: u16, depth: u32, limit: u32, drops: u32) -> Vec<u8> {
        let mut socket_id = SocketId::new_v4();
        socket_id.source_port = port;
        socket_id.source_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let header = InetResponseHeader {
            family: AF_INET,
            state: 10,
            timer: None,
            socket_id,
            recv_queue: depth,
            send_queue: limit,
            uid: 0,
            inode: 4242,
        };
        let meminfo = MemInfo {
            receive_queue: 0,
            receive_queue_max: 0,
            send_queue: 0,
            send_queue_max: 0,
            bottom_send_queues: 0,
            cache: 0,
            options: 0,
            backlog_queue_length: 0,
            drops,
        };
        let response = InetResponse {
            header,
            nlas: vec![Nla::MemInfo(meminfo)].into(),
        };
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut message = NetlinkMessage::new(
            header,
            SockDiagMessage::InetResponse(Box::new(response)).into(),
        );
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    fn done() -> Vec<u8> {
        done_of(0)
    }

    fn done_of(seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut message: NetlinkMessage<SockDiagMessage> =
            NetlinkMessage::new(header, NetlinkPayload::Done(DoneMessage::default()));
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    #[test]
    fn decodes_listeners_with_their_drop_counter() {
        let mut datagram = response(8080, 9, 8, 51);
        datagram.extend(response(9090, 0, 4096, 0));
        let mut out = Vec::new();
        assert!(
            !parse_messages(&datagram, 0, &mut out).unwrap(),
            "no Done yet"
        );
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            DiagListener {
                family: 2,
                port: 8080,
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                interface: 0,
                device: None,
                inode: 4242,
                depth: 9,
                limit: 8,
                drops: 51,
                uid: 0,
            }
        );
        assert_eq!((out[1].port, out[1].limit, out[1].drops), (9090, 4096, 0));
        assert!(
            parse_messages(&done(), 0, &mut out).unwrap(),
            "Done ends the dump"
        );
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let mut out = Vec::new();
        let err = parse_messages(&[0xff; 7], 0, &mut out).unwrap_err();
        assert!(matches!(err, SockDiagError::Decode(_)), "{err}");
        let mut truncated = response(1, 0, 0, 0);
        truncated.truncate(30);
        assert!(parse_messages(&truncated, 0, &mut out).is_err());
    }

    /// Defect: replies were not matched to their request, so what an error left queued on the
    /// kept socket (the rest of a dump) was read by the next request as its own, a tick late,
    /// and so on for every dump after.
    #[test]
    fn replies_left_over_from_an_earlier_dump_are_skipped() {
        let mut stale = response_of(6, 1111, 0, 128, 5);
        stale.extend(done_of(6));
        let mut fresh = response_of(7, 2222, 1, 128, 9);
        fresh.extend(done_of(7));
        let mut queued = vec![stale, fresh].into_iter();
        let mut out = Vec::new();
        receive(
            |buf| {
                let d = queued.next().expect("read past the dump's end");
                buf[..d.len()].copy_from_slice(&d);
                Ok(d.len())
            },
            7,
            &mut out,
        )
        .unwrap();
        let ports: Vec<u16> = out.iter().map(|l| l.port).collect();
        assert_eq!(ports, [2222]);
        // A stale error does not fail the dump either.
        let mut out = Vec::new();
        let mut error = NetlinkMessage::<SockDiagMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Error(netlink_packet_core::ErrorMessage::default()),
        );
        error.header.sequence_number = 6;
        error.finalize();
        let mut bytes = vec![0; error.buffer_len()];
        error.serialize(&mut bytes);
        assert!(!parse_messages(&bytes, 7, &mut out).unwrap());
    }

    /// On a real socket: a dump cut short (its request sent, its replies unread, as an error
    /// mid-dump leaves them), then a listener opened; the next dumps read their own replies,
    /// with that listener. Needs no privilege: it dumps the test's own namespace.
    #[test]
    fn a_dump_after_one_cut_short_reads_its_own() {
        let mut diag = open_socket().unwrap();
        request(&diag.socket, AF_INET, 1000).unwrap();
        diag.cut_short = true;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for _ in 0..2 {
            let found = diag.dump_listeners().unwrap();
            let mine = found.iter().filter(|l| l.port == port).count();
            assert_eq!(mine, 1, "{found:?}");
        }
    }
}
