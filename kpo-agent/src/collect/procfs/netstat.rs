//! /proc/net/netstat, /proc/net/snmp and /proc/net/snmp6: the network namespace's protocol
//! counters.
//!
//! Both files are pairs of lines, a header naming the columns and a line of values, each starting
//! with the same group prefix:
//! ```text
//! TcpExt: SyncookiesSent SyncookiesRecv ... ListenOverflows ListenDrops ...
//! TcpExt: 0 0 ... 0 0 ...
//! ```
//! Counters are keyed the way `nstat` names them: group prefix plus column, e.g.
//! `TcpExtListenOverflows`, `IpExtInOctets`, `TcpRetransSegs`. Values are signed because snmp's
//! `TcpMaxConn` is -1 (no limit).
//!
//! /proc/net/snmp6 (IPv6; IPv4's counters are in the other two) is one counter a line, already
//! under nstat's name:
//! ```text
//! Ip6InOctets                     512
//! ```
//!
//! The files describe the namespace of the process that opened them (for /proc/net, the
//! reader's own namespace).
use std::collections::BTreeMap;

use crate::kernel_file::limit;

use super::{
    fields::{number, numbered_lines},
    read_optional_parsed, read_parsed, Parsed, ProcError, ProcRoot,
};

/// Counter name (nstat style) to value.
pub type NetCounters = BTreeMap<String, i64>;

const NETSTAT: &str = "/proc/net/netstat";
const SNMP: &str = "/proc/net/snmp";
const SNMP6: &str = "/proc/net/snmp6";

pub fn parse_netstat(text: &str) -> Parsed<NetCounters> {
    parse_pairs(text, NETSTAT)
}

pub fn parse_snmp(text: &str) -> Parsed<NetCounters> {
    parse_pairs(text, SNMP)
}

pub fn read_netstat(root: &ProcRoot) -> Result<Parsed<NetCounters>, ProcError> {
    read_parsed(root, "net/netstat", limit::FIXED, parse_netstat)
}

pub fn read_snmp(root: &ProcRoot) -> Result<Parsed<NetCounters>, ProcError> {
    read_parsed(root, "net/snmp", limit::FIXED, parse_snmp)
}

/// A line that does not read as a name and a number loses only itself.
pub fn parse_snmp6(text: &str) -> Parsed<NetCounters> {
    let mut counters = NetCounters::new();
    let mut errors = Vec::new();
    for (line_no, line) in numbered_lines(text) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(name), Some(value), None) => match number(SNMP6, line_no, name, value) {
                Ok(value) => {
                    counters.insert(name.to_string(), value);
                }
                Err(e) => errors.push(e),
            },
            _ => errors.push(ProcError::parse(
                SNMP6,
                line_no,
                format!("expected `Name value`, found {line:?}"),
            )),
        }
    }
    Parsed::new(counters, errors)
}

/// `Ok(None)` when the kernel has no IPv6 (booted with `ipv6.disable=1`, built without it): it
/// then prints no snmp6, and carries no IPv6 traffic.
pub fn read_snmp6(root: &ProcRoot) -> Result<Option<Parsed<NetCounters>>, ProcError> {
    read_optional_parsed(root, "net/snmp6", limit::FIXED, parse_snmp6)
}

/// Both files share one format. Groups and columns we do not know are kept (they cost nothing).
/// What must hold is the pairing: a header, then values with the same prefix and as many columns.
/// A group that breaks it has been misread somewhere, and guessing which value belongs to which
/// name would report wrong counters, so that group is lost (with an error) and reading goes on
/// with the next line as a header. A value that does not parse loses only its own counter.
fn parse_pairs(text: &str, path: &str) -> Parsed<NetCounters> {
    let mut counters = NetCounters::new();
    let mut errors = Vec::new();
    let mut lines = numbered_lines(text).peekable();
    while let Some((header_no, header)) = lines.next() {
        let (group, names) = match split_group(path, header_no, header) {
            Ok(split) => split,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let Some(&(values_no, values_line)) = lines.peek() else {
            errors.push(ProcError::parse(
                path,
                header_no,
                format!("header `{group}` has no line of values after it"),
            ));
            break;
        };
        let (values_group, values) = match split_group(path, values_no, values_line) {
            Ok(split) => split,
            Err(e) => {
                errors.push(e);
                lines.next();
                continue;
            }
        };
        if values_group != group {
            // Probably the next group's header: read it as one.
            let reason = format!(
                "expected values for `{group}` (header on line {header_no}), found `{values_group}`"
            );
            errors.push(ProcError::parse(path, values_no, reason));
            continue;
        }
        lines.next();
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            errors.push(ProcError::parse(
                path,
                values_no,
                format!(
                    "`{group}` has {} values for {} names (header on line {header_no})",
                    values.len(),
                    names.len()
                ),
            ));
            continue;
        }
        for (name, value) in names.into_iter().zip(values) {
            let key = format!("{group}{name}");
            match number(path, values_no, &key, value) {
                Ok(value) => {
                    counters.insert(key, value);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    Parsed::new(counters, errors)
}

fn split_group<'a>(
    path: &str,
    line_no: usize,
    line: &'a str,
) -> Result<(&'a str, &'a str), ProcError> {
    match line.split_once(':') {
        Some((group, rest)) if !group.is_empty() && !group.contains(char::is_whitespace) => {
            Ok((group, rest))
        }
        _ => Err(ProcError::parse(
            path,
            line_no,
            format!("expected `Group: ...`, found {line:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the build machine (Linux 6.18), with the TcpExt and MPTcpExt groups cut short
    /// (the real TcpExt has 131 columns).
    const REAL_NETSTAT: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled RcvPruned OfoPruned OutOfWindowIcmps LockDroppedIcmps ArpFilter TW TWRecycled TWKilled PAWSActive PAWSEstab BeyondWindow TSEcrRejected PAWSOldAck PAWSTimewait DelayedACKs DelayedACKLocked DelayedACKLost ListenOverflows ListenDrops TCPHPHits TCPPureAcks TCPHPAcks
TcpExt: 0 0 0 0 0 0 0 0 0 0 601244 346 0 0 0 0 0 0 0 34 0 3 0 0 10076179 1807402 10677386
IpExt: InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InBcastPkts OutBcastPkts InOctets OutOctets InMcastOctets OutMcastOctets InBcastOctets OutBcastOctets InCsumErrors InNoECTPkts InECT1Pkts InECT0Pkts InCEPkts ReasmOverlaps
IpExt: 0 0 0 0 0 0 1855143214 1621259853 0 0 0 0 0 16108002 0 0 0 0
MPTcpExt: MPCapableSYNRX MPCapableSYNTX MPCapableSYNACKRX
MPTcpExt: 0 0 0
";

    /// Captured on the build machine (Linux 6.18).
    const REAL_SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 2 64 16108002 0 0 0 0 0 16108002 16104753 0 0 0 0 0 0 0 0 0 16104753
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs InRedirects InEchos InEchoReps InTimestamps InTimestampReps InAddrMasks InAddrMaskReps OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutParmProbs OutSrcQuenchs OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps OutAddrMasks OutAddrMaskReps
Icmp: 1 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
IcmpMsg: InType3
IcmpMsg: 1
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 601451 601396 1 369 0 16107892 16104689 0 0 225 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 109 0 0 110 0 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
";

    #[test]
    fn parses_the_real_netstat_with_nstat_names() {
        let c = parse_netstat(REAL_NETSTAT).strict().unwrap();
        assert_eq!(c["TcpExtListenOverflows"], 0);
        assert_eq!(c["TcpExtTW"], 601244);
        assert_eq!(c["TcpExtTCPHPAcks"], 10677386);
        assert_eq!(c["IpExtInOctets"], 1855143214);
        assert_eq!(c["IpExtOutOctets"], 1621259853);
        assert_eq!(c["MPTcpExtMPCapableSYNACKRX"], 0);
        assert_eq!(c.len(), 27 + 18 + 3);
    }

    #[test]
    fn parses_the_real_snmp_including_negative_max_conn() {
        let c = parse_snmp(REAL_SNMP).strict().unwrap();
        assert_eq!(c["TcpMaxConn"], -1);
        assert_eq!(c["TcpActiveOpens"], 601451);
        assert_eq!(c["TcpRetransSegs"], 0);
        assert_eq!(c["TcpInSegs"], 16107892);
        assert_eq!(c["IcmpMsgInType3"], 1);
        assert_eq!(c["UdpLiteMemErrors"], 0);
    }

    /// This machine's own file, read once: the parser keeps every line's counter under its
    /// name, as a plain split of the same text gives them.
    #[test]
    fn parses_the_real_snmp6() {
        let Ok(text) = std::fs::read_to_string("/proc/net/snmp6") else {
            kpo_test_skip::skip("no /proc/net/snmp6 (IPv6 off in this kernel)");
            return;
        };
        let c = parse_snmp6(&text).strict().unwrap();
        let plain: NetCounters = text
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(char::is_whitespace)?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect();
        assert_eq!(c, plain);
        assert!(c.contains_key("Ip6InOctets") && c.contains_key("Ip6OutOctets"));
    }

    #[test]
    fn a_bad_snmp6_line_loses_only_itself() {
        let Parsed { value: c, errors } =
            parse_snmp6("Ip6InOctets 512\nIp6OutOctets 1x\nIp6InDelivers\nIcmp6InMsgs 3\n");
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "/proc/net/snmp6 line 2: Ip6OutOctets: \"1x\" is not a valid number",
                "/proc/net/snmp6 line 3: expected `Name value`, found \"Ip6InDelivers\""
            ]
        );
        assert_eq!(
            c,
            NetCounters::from([("Ip6InOctets".into(), 512), ("Icmp6InMsgs".into(), 3)])
        );
    }

    #[test]
    fn new_groups_and_columns_are_kept() {
        let text = format!("{REAL_NETSTAT}NewExt: A B\nNewExt: 1 2\n");
        let c = parse_netstat(&text).strict().unwrap();
        assert_eq!((c["NewExtA"], c["NewExtB"]), (1, 2));
    }

    #[test]
    fn a_column_count_mismatch_is_an_error() {
        let text = REAL_SNMP.replace("Udp: 109 0 0 110 0 0 0 0 0", "Udp: 109 0 0 110 0 0 0 0");
        let e = parse_snmp(&text).strict().unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/net/snmp line 10: `Udp` has 8 values for 9 names (header on line 9)"
        );
    }

    #[test]
    fn broken_pairing_is_an_error() {
        let e = parse_netstat("TcpExt: A B\nIpExt: 1 2\n")
            .strict()
            .unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 2, .. }), "{e}");
        let e = parse_netstat("TcpExt: A B\n").strict().unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/net/netstat line 1: header `TcpExt` has no line of values after it"
        );
        let e = parse_netstat("garbage\n").strict().unwrap_err();
        assert!(e.to_string().contains("expected `Group: ...`"), "{e}");
    }

    #[test]
    fn a_malformed_value_names_the_counter() {
        let e = parse_netstat(&REAL_NETSTAT.replace("1855143214", "18551x3214"))
            .strict()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/net/netstat line 4: IpExtInOctets: \"18551x3214\" is not a valid number"
        );
    }

    #[test]
    fn an_empty_file_has_no_counters() {
        // Nothing is malformed, so nothing is an error; a counter the caller needs is simply absent.
        assert!(parse_netstat("").strict().unwrap().is_empty());
    }

    /// Defect: a bad value of a counter nobody uses nulled every counter of the file.
    #[test]
    fn a_bad_value_loses_only_its_counter() {
        // TcpExt columns: ... EmbryonicRsts is the 4th.
        let text = REAL_NETSTAT.replace("TcpExt: 0 0 0 0 0", "TcpExt: 0 0 0 x 0");
        let Parsed { value: c, errors } = parse_netstat(&text);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            ["/proc/net/netstat line 2: TcpExtEmbryonicRsts: \"x\" is not a valid number"]
        );
        assert_eq!(c.get("TcpExtEmbryonicRsts"), None);
        assert_eq!(c["TcpExtListenOverflows"], 0);
        assert_eq!(c["TcpExtTW"], 601244);
        assert_eq!(c["IpExtInOctets"], 1855143214);
        assert_eq!(c.len(), 27 + 18 + 3 - 1);
    }

    #[test]
    fn a_broken_group_loses_only_that_group() {
        // Udp has one value short; IpExt's values are missing, so MPTcpExt's header follows.
        let snmp = REAL_SNMP.replace("Udp: 109 0 0 110 0 0 0 0 0", "Udp: 109 0 0 110 0 0 0 0");
        let Parsed { value: c, errors } = parse_snmp(&snmp);
        assert_eq!(errors.len(), 1);
        assert_eq!(c.get("UdpInDatagrams"), None);
        assert_eq!((c["TcpRetransSegs"], c["UdpLiteMemErrors"]), (0, 0));

        let netstat = REAL_NETSTAT.replace(
            "IpExt: 0 0 0 0 0 0 1855143214 1621259853 0 0 0 0 0 16108002 0 0 0 0\n",
            "",
        );
        let Parsed { value: c, errors } = parse_netstat(&netstat);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            ["/proc/net/netstat line 4: expected values for `IpExt` (header on line 3), found `MPTcpExt`"]
        );
        assert_eq!((c["TcpExtTW"], c["MPTcpExtMPCapableSYNTX"]), (601244, 0));
        assert_eq!(c.get("IpExtInOctets"), None);
    }
}
