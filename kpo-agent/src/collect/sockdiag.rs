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
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
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
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..size])
                .map_err(|e| SockDiagError::Decode(e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(SockDiagError::Kernel(e.code.map_or(0, |c| c.get())))
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    out.push(listener_of(&response));
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
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
