//! The ethtool generic netlink messages for interrupt coalescing, encoded by hand.
//!
//! Why by hand: the `ethtool` crate (rust-netlink, 0.3) reads coalescing but has no
//! `ETHTOOL_MSG_COALESCE_SET` request, and it is built on netlink-packet-core 0.9, netlink-sys 0.9
//! and an async runtime, while this workspace uses netlink-packet-core 0.7 and netlink-sys 0.8
//! synchronously. So only the coalescing attributes KPO needs are encoded here, as a payload of
//! netlink-packet-generic's `GenlMessage`; every other attribute of a reply is skipped.
//!
//! Layout (`include/uapi/linux/ethtool_netlink.h`): a generic netlink header (command, version 1)
//! followed by attributes. `ETHTOOL_A_COALESCE_HEADER` is nested and names the device
//! (`ETHTOOL_A_HEADER_DEV_NAME`, a NUL-terminated string); the values are u32 (microseconds,
//! frames) or u8 (adaptive flags).

use netlink_packet_generic::{GenlFamily, GenlHeader};
use netlink_packet_utils::{
    nla::{Nla, NlaBuffer, NlasIterator, NLA_F_NESTED, NLA_TYPE_MASK},
    parsers::{parse_string, parse_u32, parse_u8},
    DecodeError, Emitable, ParseableParametrized,
};
use serde::Serialize;

/// Generic netlink family name and version of ethtool.
pub const ETHTOOL_GENL_NAME: &str = "ethtool";
pub const ETHTOOL_GENL_VERSION: u8 = 1;

// Commands, user to kernel.
pub const ETHTOOL_MSG_COALESCE_GET: u8 = 19;
pub const ETHTOOL_MSG_COALESCE_SET: u8 = 20;
// Commands, kernel to user (a separate numbering in the uapi header).
pub const ETHTOOL_MSG_COALESCE_GET_REPLY: u8 = 20;
pub const ETHTOOL_MSG_COALESCE_NTF: u8 = 21;

// ETHTOOL_A_HEADER_*
const ETHTOOL_A_HEADER_DEV_INDEX: u16 = 1;
const ETHTOOL_A_HEADER_DEV_NAME: u16 = 2;

// ETHTOOL_A_COALESCE_*
const ETHTOOL_A_COALESCE_HEADER: u16 = 1;
const ETHTOOL_A_COALESCE_RX_USECS: u16 = 2;
const ETHTOOL_A_COALESCE_RX_MAX_FRAMES: u16 = 3;
const ETHTOOL_A_COALESCE_TX_USECS: u16 = 6;
const ETHTOOL_A_COALESCE_TX_MAX_FRAMES: u16 = 7;
const ETHTOOL_A_COALESCE_USE_ADAPTIVE_RX: u16 = 11;
const ETHTOOL_A_COALESCE_USE_ADAPTIVE_TX: u16 = 12;

// Extended ACK (`include/uapi/linux/netlink.h`).
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_HDRLEN: usize = 16;

/// Coalescing attributes. In a reply, `None` means the kernel did not send the attribute: the
/// driver does not support that parameter (`ethtool -c` prints `n/a`). In a set request, only the
/// `Some` fields are sent, because the kernel refuses (EINVAL) any attribute the driver does not
/// support, even at its current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CoalesceAttrs {
    pub rx_usecs: Option<u32>,
    pub rx_max_frames: Option<u32>,
    pub tx_usecs: Option<u32>,
    pub tx_max_frames: Option<u32>,
    pub use_adaptive_rx: Option<bool>,
    pub use_adaptive_tx: Option<bool>,
}

impl CoalesceAttrs {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One coalescing message: a GET or SET request, or a GET reply or notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoalesceMessage {
    pub cmd: u8,
    pub dev_name: Option<String>,
    pub dev_index: Option<u32>,
    pub attrs: CoalesceAttrs,
}

impl CoalesceMessage {
    /// `ETHTOOL_MSG_COALESCE_GET` for the device named `iface`.
    pub fn get(iface: &str) -> Self {
        Self {
            cmd: ETHTOOL_MSG_COALESCE_GET,
            dev_name: Some(iface.to_string()),
            dev_index: None,
            attrs: CoalesceAttrs::default(),
        }
    }

    /// `ETHTOOL_MSG_COALESCE_SET` of the `Some` fields of `attrs` on `iface`.
    pub fn set(iface: &str, attrs: CoalesceAttrs) -> Self {
        Self {
            cmd: ETHTOOL_MSG_COALESCE_SET,
            dev_name: Some(iface.to_string()),
            dev_index: None,
            attrs,
        }
    }

    fn nlas(&self) -> Vec<Attr> {
        let mut header = Vec::new();
        if let Some(i) = self.dev_index {
            header.push(HeaderAttr::DevIndex(i));
        }
        if let Some(n) = &self.dev_name {
            header.push(HeaderAttr::DevName(n.clone()));
        }
        let a = &self.attrs;
        let mut out = vec![Attr::Header(header)];
        let u32s = [
            (ETHTOOL_A_COALESCE_RX_USECS, a.rx_usecs),
            (ETHTOOL_A_COALESCE_RX_MAX_FRAMES, a.rx_max_frames),
            (ETHTOOL_A_COALESCE_TX_USECS, a.tx_usecs),
            (ETHTOOL_A_COALESCE_TX_MAX_FRAMES, a.tx_max_frames),
        ];
        out.extend(
            u32s.into_iter()
                .filter_map(|(k, v)| v.map(|v| Attr::U32(k, v))),
        );
        let flags = [
            (ETHTOOL_A_COALESCE_USE_ADAPTIVE_RX, a.use_adaptive_rx),
            (ETHTOOL_A_COALESCE_USE_ADAPTIVE_TX, a.use_adaptive_tx),
        ];
        out.extend(
            flags
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| Attr::U8(k, v as u8))),
        );
        out
    }
}

impl GenlFamily for CoalesceMessage {
    fn family_name() -> &'static str {
        ETHTOOL_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        ETHTOOL_GENL_VERSION
    }
}

impl Emitable for CoalesceMessage {
    fn buffer_len(&self) -> usize {
        self.nlas().as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.nlas().as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for CoalesceMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        if !matches!(
            header.cmd,
            ETHTOOL_MSG_COALESCE_GET_REPLY | ETHTOOL_MSG_COALESCE_NTF
        ) {
            return Err(format!("not a coalescing reply: ethtool command {}", header.cmd).into());
        }
        let mut msg = CoalesceMessage {
            cmd: header.cmd,
            dev_name: None,
            dev_index: None,
            attrs: CoalesceAttrs::default(),
        };
        for nla in NlasIterator::new(buf) {
            let nla = nla?;
            let v = nla.value();
            let a = &mut msg.attrs;
            match nla.kind() & NLA_TYPE_MASK {
                ETHTOOL_A_COALESCE_HEADER => {
                    for h in NlasIterator::new(v) {
                        let h = h?;
                        match h.kind() & NLA_TYPE_MASK {
                            ETHTOOL_A_HEADER_DEV_INDEX => {
                                msg.dev_index = Some(parse_u32(h.value())?)
                            }
                            ETHTOOL_A_HEADER_DEV_NAME => {
                                msg.dev_name = Some(parse_string(h.value())?)
                            }
                            _ => {}
                        }
                    }
                }
                ETHTOOL_A_COALESCE_RX_USECS => a.rx_usecs = Some(parse_u32(v)?),
                ETHTOOL_A_COALESCE_RX_MAX_FRAMES => a.rx_max_frames = Some(parse_u32(v)?),
                ETHTOOL_A_COALESCE_TX_USECS => a.tx_usecs = Some(parse_u32(v)?),
                ETHTOOL_A_COALESCE_TX_MAX_FRAMES => a.tx_max_frames = Some(parse_u32(v)?),
                ETHTOOL_A_COALESCE_USE_ADAPTIVE_RX => a.use_adaptive_rx = Some(parse_u8(v)? != 0),
                ETHTOOL_A_COALESCE_USE_ADAPTIVE_TX => a.use_adaptive_tx = Some(parse_u8(v)? != 0),
                // The many other parameters (irq, low/high, CQE mode, tx aggregation...).
                _ => {}
            }
        }
        Ok(msg)
    }
}

#[derive(Debug)]
enum HeaderAttr {
    DevIndex(u32),
    DevName(String),
}

impl Nla for HeaderAttr {
    fn value_len(&self) -> usize {
        match self {
            HeaderAttr::DevIndex(_) => 4,
            HeaderAttr::DevName(n) => n.len() + 1,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            HeaderAttr::DevIndex(_) => ETHTOOL_A_HEADER_DEV_INDEX,
            HeaderAttr::DevName(_) => ETHTOOL_A_HEADER_DEV_NAME,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            HeaderAttr::DevIndex(i) => buffer[..4].copy_from_slice(&i.to_ne_bytes()),
            HeaderAttr::DevName(n) => {
                buffer[..n.len()].copy_from_slice(n.as_bytes());
                buffer[n.len()] = 0;
            }
        }
    }
}

#[derive(Debug)]
enum Attr {
    Header(Vec<HeaderAttr>),
    U32(u16, u32),
    U8(u16, u8),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Header(h) => h.as_slice().buffer_len(),
            Attr::U32(..) => 4,
            Attr::U8(..) => 1,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            // The kernel requires the nested flag on the header (NLA_POLICY_NESTED).
            Attr::Header(_) => ETHTOOL_A_COALESCE_HEADER | NLA_F_NESTED,
            Attr::U32(k, _) | Attr::U8(k, _) => *k,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::Header(h) => h.as_slice().emit(buffer),
            Attr::U32(_, v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            Attr::U8(_, v) => buffer[0] = *v,
        }
    }
}

/// The kernel's explanation in an extended ACK, if any. `flags` are the error message's netlink
/// header flags; `payload` is what follows the error code (the original request's header, its
/// payload unless the ACK was capped, then the ACK attributes).
pub fn extack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < NLMSG_HDRLEN {
        return None;
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32::from_ne_bytes(payload[..4].try_into().ok()?) as usize
    };
    let tlvs = payload.get(skip.next_multiple_of(4)..)?;
    NlasIterator::new(tlvs)
        .filter_map(Result::ok)
        .find(|n: &NlaBuffer<&[u8]>| n.kind() & NLA_TYPE_MASK == NLMSGERR_ATTR_MSG)
        .and_then(|n| parse_string(n.value()).ok())
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_generic::GenlMessage;

    fn emit(msg: CoalesceMessage) -> Vec<u8> {
        let mut m = GenlMessage::from_payload(msg.clone());
        m.finalize();
        // GenlHeader leaves its reserved bytes unwritten: messages go into zeroed buffers.
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        // Our attributes must write every byte themselves, padding included.
        let mut payload = vec![0xAA; msg.buffer_len()];
        msg.emit(&mut payload);
        assert_eq!(payload, buf[4..]);
        buf
    }

    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    fn nla_hdr(len: u16, kind: u16) -> Vec<u8> {
        [len.to_ne_bytes(), kind.to_ne_bytes()].concat()
    }

    #[test]
    fn get_request_bytes() {
        let mut want = vec![19, 1, 0, 0]; // genlmsghdr: COALESCE_GET, version 1
        want.extend(nla_hdr(4 + 12, 0x8001)); // nested ETHTOOL_A_COALESCE_HEADER
        want.extend(nla_hdr(4 + 5, 2)); // ETHTOOL_A_HEADER_DEV_NAME
        want.extend(b"eth0\0\0\0\0"); // NUL and padding to 4 bytes
        assert_eq!(emit(CoalesceMessage::get("eth0")), want);
    }

    #[test]
    fn set_request_carries_only_the_given_attributes() {
        let attrs = CoalesceAttrs {
            rx_usecs: Some(0x1234),
            use_adaptive_rx: Some(false),
            ..Default::default()
        };
        let mut want = vec![20, 1, 0, 0]; // COALESCE_SET
        want.extend(nla_hdr(4 + 12, 0x8001));
        want.extend(nla_hdr(4 + 8, 2));
        want.extend(b"veth-a1\0"); // 7 bytes + NUL: no padding
        want.extend(nla_hdr(8, 2)); // RX_USECS
        want.extend(ne32(0x1234));
        want.extend(nla_hdr(5, 11)); // USE_ADAPTIVE_RX, u8 padded to 4
        want.extend([0, 0, 0, 0]);
        assert_eq!(emit(CoalesceMessage::set("veth-a1", attrs)), want);

        let frames = CoalesceAttrs {
            rx_max_frames: Some(64),
            use_adaptive_rx: Some(true),
            ..Default::default()
        };
        let bytes = emit(CoalesceMessage::set("e", frames));
        // header(4) + nested header (4 + 8) + RX_MAX_FRAMES (8) + USE_ADAPTIVE_RX (8)
        assert_eq!(bytes.len(), 4 + 12 + 8 + 8);
        assert_eq!(&bytes[16..24], [nla_hdr(8, 3), ne32(64).to_vec()].concat());
        assert_eq!(&bytes[24..], [nla_hdr(5, 11), vec![1, 0, 0, 0]].concat());
    }

    /// A GET reply as virtio_net sends it: header with index and name, supported parameters,
    /// and attributes this module skips.
    fn reply_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        let mut hdr = nla_hdr(8, 1); // DEV_INDEX
        hdr.extend(ne32(2));
        hdr.extend(nla_hdr(9, 2)); // DEV_NAME
        hdr.extend(b"eth0\0\0\0\0");
        b.extend(nla_hdr(4 + hdr.len() as u16, 0x8001));
        b.extend(hdr);
        for (kind, v) in [(2u16, 0u32), (3, 1), (6, 7), (7, 1), (23, 0)] {
            b.extend(nla_hdr(8, kind));
            b.extend(ne32(v));
        }
        b.extend(nla_hdr(5, 11));
        b.extend([1, 0, 0, 0]);
        b.extend(nla_hdr(5, 25)); // an attribute from a newer kernel: skipped
        b.extend([9, 0, 0, 0]);
        b
    }

    #[test]
    fn parses_a_get_reply() {
        let hdr = GenlHeader {
            cmd: ETHTOOL_MSG_COALESCE_GET_REPLY,
            version: 1,
        };
        let m = CoalesceMessage::parse_with_param(&reply_bytes(), hdr).unwrap();
        assert_eq!(m.dev_name.as_deref(), Some("eth0"));
        assert_eq!(m.dev_index, Some(2));
        assert_eq!(
            m.attrs,
            CoalesceAttrs {
                rx_usecs: Some(0),
                rx_max_frames: Some(1),
                tx_usecs: Some(7),
                tx_max_frames: Some(1),
                use_adaptive_rx: Some(true),
                use_adaptive_tx: None,
            }
        );
        // Wrong command and truncated attributes are errors, not guesses.
        let set = GenlHeader {
            cmd: ETHTOOL_MSG_COALESCE_SET + 5,
            version: 1,
        };
        assert!(CoalesceMessage::parse_with_param(&reply_bytes(), set).is_err());
        let mut bad = nla_hdr(8, 2);
        bad.extend([1, 2]);
        assert!(CoalesceMessage::parse_with_param(&bad, hdr).is_err());
        let mut short = nla_hdr(6, 2);
        short.extend([1, 2, 0, 0]);
        assert!(CoalesceMessage::parse_with_param(&short, hdr).is_err());
    }

    #[test]
    fn round_trip_through_a_reply() {
        let attrs = CoalesceAttrs {
            rx_usecs: Some(50),
            rx_max_frames: Some(32),
            tx_usecs: Some(8),
            tx_max_frames: Some(16),
            use_adaptive_rx: Some(false),
            use_adaptive_tx: Some(true),
        };
        let bytes = emit(CoalesceMessage::set("enp1s0f1", attrs));
        let hdr = GenlHeader {
            cmd: ETHTOOL_MSG_COALESCE_NTF,
            version: 1,
        };
        let back = CoalesceMessage::parse_with_param(&bytes[4..], hdr).unwrap();
        assert_eq!(back.attrs, attrs);
        assert_eq!(back.dev_name.as_deref(), Some("enp1s0f1"));
    }

    #[test]
    fn extended_ack_message() {
        // Capped: the original header only, then NLMSGERR_ATTR_MSG and NLMSGERR_ATTR_OFFS.
        let mut p = vec![0u8; 16];
        p[..4].copy_from_slice(&ne32(40));
        let text = b"cannot modify an unsupported parameter\0";
        p.extend(nla_hdr(4 + text.len() as u16, 1));
        p.extend(text);
        p.extend(vec![0; (4 - text.len() % 4) % 4]);
        p.extend(nla_hdr(8, 2));
        p.extend(ne32(36));
        assert_eq!(
            extack_message(0x300, &p).as_deref(),
            Some("cannot modify an unsupported parameter")
        );
        // Without NLM_F_ACK_TLVS there is nothing to read.
        assert_eq!(extack_message(0x100, &p), None);
        // Not capped: the original message (40 bytes) is echoed before the attributes.
        let mut full = vec![0u8; 40];
        full[..4].copy_from_slice(&ne32(40));
        full.extend(&p[16..]);
        assert_eq!(
            extack_message(0x200, &full).as_deref(),
            Some("cannot modify an unsupported parameter")
        );
        assert_eq!(extack_message(0x300, &[0; 8]), None);
    }
}
