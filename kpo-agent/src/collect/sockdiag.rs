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
    /// Socket inode, to find the owning process.
    pub inode: u32,
    /// Current accept-queue depth (`Recv-Q` in `ss -ltn`).
    pub depth: u32,
    /// Accept-queue limit (`Send-Q` in `ss -ltn`).
    pub limit: u32,
    /// `sk_drops`: connections dropped by this listener since it was created.
    pub drops: u32,
}

pub fn open_socket() -> Result<Socket, SockDiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// Dumps the TCP listeners of the socket's namespace, IPv4 and IPv6.
pub fn dump_listeners(socket: &Socket) -> Result<Vec<DiagListener>, SockDiagError> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        request(socket, family)?;
        receive(socket, &mut out)?;
    }
    Ok(out)
}

fn request(socket: &Socket, family: u8) -> Result<(), SockDiagError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
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

fn receive(socket: &Socket, out: &mut Vec<DiagListener>) -> Result<(), SockDiagError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut buf[..], 0)?;
        if parse_messages(&buf[..size], out)? {
            return Ok(());
        }
    }
}

/// Decodes one datagram of netlink messages into `out`. Returns true at the end of the dump.
pub fn parse_messages(
    mut bytes: &[u8],
    out: &mut Vec<DiagListener>,
) -> Result<bool, SockDiagError> {
    while !bytes.is_empty() {
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
            .map_err(|e| SockDiagError::Decode(e.to_string()))?;
        let length = message.header.length as usize;
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
        inode: h.inode,
        depth: h.recv_queue,
        limit: h.send_queue,
        drops,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_core::{DoneMessage, NetlinkHeader};
    use netlink_packet_sock_diag::inet::{nlas::MemInfo, InetResponseHeader};

    use super::*;

    fn response(port: u16, depth: u32, limit: u32, drops: u32) -> Vec<u8> {
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
        let mut message = NetlinkMessage::new(
            NetlinkHeader::default(),
            SockDiagMessage::InetResponse(Box::new(response)).into(),
        );
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    fn done() -> Vec<u8> {
        let mut message: NetlinkMessage<SockDiagMessage> = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::Done(DoneMessage::default()),
        );
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
        assert!(!parse_messages(&datagram, &mut out).unwrap(), "no Done yet");
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            DiagListener {
                family: 2,
                port: 8080,
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                inode: 4242,
                depth: 9,
                limit: 8,
                drops: 51,
            }
        );
        assert_eq!((out[1].port, out[1].limit, out[1].drops), (9090, 4096, 0));
        assert!(
            parse_messages(&done(), &mut out).unwrap(),
            "Done ends the dump"
        );
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let mut out = Vec::new();
        let err = parse_messages(&[0xff; 7], &mut out).unwrap_err();
        assert!(matches!(err, SockDiagError::Decode(_)), "{err}");
        let mut truncated = response(1, 0, 0, 0);
        truncated.truncate(30);
        assert!(parse_messages(&truncated, &mut out).is_err());
    }
}
