//! Who serves a plain-http endpoint on this host, before the LLM advisor sends it the API key
//! and the prompt (s58 story BJ-1), or the approval webhook the approvals and advice (s58 story
//! BL-2). Any local user may listen on a free port: on the endpoint's port while its server is
//! down or restarting, or, for `localhost`, on the address the name resolves to first (`::1`)
//! while the server listens on the other (`127.0.0.1`). That user then gets the key and the
//! host's listeners, and answers with advice the agent applies within the policy, or takes the
//! approvals' notices and answers 200, so that they count delivered and nobody hears of them. So
//! the listener's owner is read (sock_diag, the agent's network namespace, the same dump the
//! accept-queue sensor makes) and must be root, the agent's own user, or the one the
//! configuration names. An `https://` endpoint proves itself with its certificate instead.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::collect::sockdiag::{self, DiagListener};

/// The plain-http endpoint `url` on this host, looked at: `Err` why it must not be sent a
/// request (a listener on one of the addresses its host resolves to belongs to a user outside
/// `allowed`, uids; or nothing listens on any); else the addresses an allowed user's listener
/// serves, for the request to go to those alone (its host, and those addresses): a name that
/// resolves to another address too (`localhost` to `::1`) would let a user who listens there in
/// the moment before the connection take it (s58 review2 R2-1). `Ok(None)` for an endpoint
/// elsewhere or over https. `allowed` is asked only for an endpoint on this host (a user name
/// not known here is no reason to refuse one elsewhere).
pub fn looked_at(
    url: &str,
    allowed: impl FnOnce() -> Result<Trusted, String>,
) -> Result<Option<(String, Vec<SocketAddr>)>, String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Ok(None);
    };
    if parsed.scheme() != "http" {
        return Ok(None);
    }
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return Ok(None);
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match (host, port).to_socket_addrs() {
            Ok(found) => found.collect(),
            Err(e) if crate::http::is_loopback_url(url) => {
                return Err(format!("{host} cannot be resolved here ({e})"))
            }
            // Another host's name that does not resolve: the request fails on it by itself.
            Err(_) => return Ok(None),
        },
    };
    // Any address of this host, whatever names it (s59 story BP-4: `http://vm:PORT`, the host's
    // own name in /etc/hosts, got past a check of loopback literals and `localhost`; s58
    // review2 R2-8: `0.0.0.0` and the LAN address). An unspecified address connects to the
    // loopback one of its family, which is what is looked at.
    let own = own_addresses();
    if !addresses.iter().any(|a| on_this_host(a.ip(), &own)) {
        return Ok(None);
    }
    let allowed = allowed()?;
    let addresses: Vec<SocketAddr> = addresses
        .into_iter()
        .map(|a| match a.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), a.port())
            }
            _ => a,
        })
        .collect();
    let listeners = sockdiag::open_socket()
        .and_then(|mut s| s.dump_listeners())
        .map_err(|e| {
            format!(
                "who serves {host}:{port} cannot be read ({e}): not sent, since any local user \
                 could listen there"
            )
        })?;
    // No listener at all is refused too: the server is down, and a user who listens in the
    // moment between this look and the connection would get the request (s58 story BL-1: a
    // listener switched on and off got the key 4 times in 27). The race left needs the server
    // to stop in that moment.
    let served: Vec<SocketAddr> = (addresses.iter())
        .filter(|a| listening(a, &listeners))
        .copied()
        .collect();
    if served.is_empty() {
        return Err(format!(
            "nothing listens on {host}:{port} now (the server is down or restarting): not sent, \
             since any local user could listen there first"
        ));
    }
    match foreign_listener(&addresses, &listeners, &allowed.uids) {
        None => Ok(Some((host.to_string(), served))),
        Some((address, uid)) => Err(format!(
            "{address} is served by {}, not by root, the agent's user or {key}: any local user \
             may listen on a free port of this host, and would get {what}; not sent (set {key} \
             to the user that runs the server, or use https)",
            user_named(uid),
            key = allowed.key,
            what = allowed.at_stake,
        )),
    }
}

/// Whose listener on this host may be sent a request over plain http, and what names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    /// Root, the agent's own user, and the one `key` names, if any.
    pub uids: Vec<u32>,
    /// The setting that names the server's user (`llm.server_user`).
    pub key: &'static str,
    /// What a squatter would get, for the refusal's text.
    pub at_stake: &'static str,
}

impl Trusted {
    /// Root, the agent's own user, and `named` (as `key` names it: a name or a uid), looked up
    /// now: `Err` when this host does not know it, and nothing is sent to a listener here then.
    /// Blocking: the name is looked up (NSS).
    pub fn users(
        named: Option<&str>,
        key: &'static str,
        at_stake: &'static str,
    ) -> Result<Trusted, String> {
        let named = (named.map(uid_of).transpose())
            .map_err(|why| format!("{key}: {why}: nothing is sent to a listener on this host"))?;
        let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
        uids.extend(named);
        Ok(Trusted {
            uids,
            key,
            at_stake,
        })
    }

    /// The same users for an agent running as root, not as this process's user (which
    /// [`Trusted::users`] puts second): `kpo check`, whoever runs it (s59 review2 R2-8).
    pub fn for_a_root_agent(mut self) -> Trusted {
        self.uids.remove(1);
        self
    }
}

/// Whether a connection to `ip` stays on this host: a loopback or unspecified address, or one
/// of `own`, the addresses of the interfaces of the agent's network namespace.
fn on_this_host(ip: IpAddr, own: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified() || own.contains(&ip)
}

/// The addresses of the interfaces of this network namespace (none when they cannot be read:
/// a LAN-address endpoint is then not looked at, as before).
fn own_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|i| {
            let a = i.address?;
            (a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .collect()
}

/// Whether a listener serves `address` (bound to it, or to every address of its family).
fn listening(address: &SocketAddr, listeners: &[DiagListener]) -> bool {
    (listeners.iter()).any(|l| l.port == address.port() && serves(l, address.ip()))
}

/// Whether `l` takes connections to `ip`: bound to it, or to every address of its family (an
/// IPv6 one, `::` or `::ffff:0.0.0.0`, takes IPv4's too unless v6-only, which is taken as not:
/// too strict, never too loose; s58 review2 R2-2).
fn serves(l: &DiagListener, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let bound = l.address.to_canonical();
    bound == ip
        || (bound.is_unspecified() && (bound.is_ipv4() == ip.is_ipv4() || l.address.is_ipv6()))
}

/// The first of `addresses` a listener outside `allowed` serves (one bound to the address itself
/// or to every address of its family), with its owner.
fn foreign_listener(
    addresses: &[SocketAddr],
    listeners: &[DiagListener],
    allowed: &[u32],
) -> Option<(SocketAddr, u32)> {
    addresses.iter().find_map(|a| {
        (listeners.iter())
            .filter(|l| l.port == a.port() && !allowed.contains(&l.uid))
            .find(|l| serves(l, a.ip()))
            .map(|l| (*a, l.uid))
    })
}

pub(crate) fn user_named(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// `llm.server_user` or `approvals.webhook_user` as written: a name or a uid, in a string or a
/// bare integer (`0` read as "a string expected" with no hint: s59 story BM-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(pub String);

impl<'de> serde::Deserialize<'de> for UserName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameOrUid;
        impl serde::de::Visitor<'_> for NameOrUid {
            type Value = UserName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a user name or uid (\"ollama\", \"998\" or 998)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UserName, E> {
                Ok(UserName(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<UserName, E> {
                u32::try_from(v)
                    .map(|uid| UserName(uid.to_string()))
                    .map_err(|_| E::custom(format!("{v} is not a uid (0 to {})", u32::MAX)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<UserName, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
        }
        d.deserialize_any(NameOrUid)
    }
}

/// [`UserName`] for an optional field read by serde's `deserialize_with`.
pub fn optional_user<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(<Option<UserName> as serde::Deserialize>::deserialize(d)?.map(|u| u.0))
}

/// The uid of `user`, a name or a number, for `llm.server_user` and `approvals.webhook_user`.
pub fn uid_of(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.trim().parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(user.trim()) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("no user named {user:?} on this host")),
        Err(e) => Err(format!("the user {user:?} cannot be looked up ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(address: &str, port: u16, uid: u32) -> DiagListener {
        let address: IpAddr = address.parse().unwrap();
        DiagListener {
            family: if address.is_ipv4() { 2 } else { 10 },
            port,
            address,
            interface: 0,
            device: None,
            inode: 1,
            depth: 0,
            limit: 128,
            drops: 0,
            uid,
        }
    }

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// s58 story BJ-1: `localhost` resolves to `::1` first; another user listening there while
    /// root's server listens on 127.0.0.1 gets the request. Each address the name resolves to is
    /// checked, a listener on every address of its family included; root's, the allowed ones'
    /// and another port's are not refused.
    #[test]
    fn a_listener_of_another_user_on_any_address_the_host_resolves_to_is_refused() {
        let localhost = [at("[::1]:8080"), at("127.0.0.1:8080")];
        let root_v4 = listener("127.0.0.1", 8080, 0);
        let nobody_v6 = listener("::1", 8080, 65534);
        assert_eq!(
            foreign_listener(&localhost, &[root_v4.clone(), nobody_v6], &[0]),
            Some((at("[::1]:8080"), 65534))
        );
        assert_eq!(foreign_listener(&localhost, &[root_v4], &[0]), None);
        let ollama = listener("127.0.0.1", 8080, 998);
        assert_eq!(
            foreign_listener(&localhost, std::slice::from_ref(&ollama), &[0, 998]),
            None
        );
        assert_eq!(
            foreign_listener(&localhost, &[ollama], &[0]),
            Some((at("127.0.0.1:8080"), 998))
        );
        let wildcard = listener("0.0.0.0", 8080, 65534);
        assert_eq!(
            foreign_listener(
                &[at("127.0.0.1:8080")],
                std::slice::from_ref(&wildcard),
                &[0]
            ),
            Some((at("127.0.0.1:8080"), 65534))
        );
        assert_eq!(
            foreign_listener(&[at("[::1]:8080")], &[wildcard], &[0]),
            None
        );
        // Bound to `::ffff:0.0.0.0`, it takes every IPv4 connection to the port (review2 R2-2).
        let mapped_any = listener("::ffff:0.0.0.0", 8080, 65534);
        assert_eq!(
            foreign_listener(&[at("127.0.0.1:8080")], &[mapped_any], &[0]),
            Some((at("127.0.0.1:8080"), 65534))
        );
        let dual = listener("::", 8080, 65534);
        assert_eq!(
            foreign_listener(&[at("127.0.0.1:8080")], &[dual], &[0]),
            Some((at("127.0.0.1:8080"), 65534))
        );
        let other_port = listener("127.0.0.1", 8081, 65534);
        assert_eq!(foreign_listener(&localhost, &[other_port], &[0]), None);
    }

    /// s58 story BL-1: with no listener, a user who listens in the moment before the
    /// connection would get the request: nothing listening is no server of the operator's.
    #[test]
    fn an_address_nothing_listens_on_is_no_server() {
        let root_v4 = listener("127.0.0.1", 8080, 0);
        assert!(listening(
            &at("127.0.0.1:8080"),
            std::slice::from_ref(&root_v4)
        ));
        assert!(!listening(
            &at("127.0.0.1:8081"),
            std::slice::from_ref(&root_v4)
        ));
        assert!(!listening(&at("[::1]:8080"), &[root_v4]));
        assert!(listening(&at("127.0.0.1:8080"), &[listener("::", 8080, 0)]));
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let e = looked_at(&format!("http://127.0.0.1:{port}/v1"), root_only).unwrap_err();
        assert!(
            e.starts_with(&format!("nothing listens on 127.0.0.1:{port} now")),
            "{e}"
        );
    }

    fn root_only() -> Result<Trusted, String> {
        Ok(Trusted {
            uids: vec![0],
            key: "llm.server_user",
            at_stake: "the API key and the prompt",
        })
    }

    /// s59 story BP-4: a name for this host (the host name in /etc/hosts), `0.0.0.0` and an
    /// address of one of this namespace's interfaces are this host too: looked at, with nothing
    /// listening refused as on a loopback address; an unspecified address connects to loopback.
    #[test]
    fn any_address_of_this_host_is_looked_at() {
        let own = own_addresses();
        assert!(
            own.iter().any(|ip| ip.is_loopback()),
            "lo's address: {own:?}"
        );
        assert!(on_this_host("0.0.0.0".parse().unwrap(), &own));
        assert!(on_this_host("::ffff:127.0.0.1".parse().unwrap(), &own));
        assert!(!on_this_host("192.0.2.1".parse().unwrap(), &own));
        let lan: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(on_this_host(lan, &[lan]));
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        for host in ["0.0.0.0", "127.0.0.2"] {
            let e = looked_at(&format!("http://{host}:{port}/v1"), root_only).unwrap_err();
            assert!(e.starts_with("nothing listens on "), "{host}: {e}");
        }
        // The unspecified address is looked at as the loopback one it connects to.
        let served = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = served.local_addr().unwrap().port();
        let any_uid = || {
            Ok(Trusted {
                uids: vec![0, nix::unistd::geteuid().as_raw()],
                key: "llm.server_user",
                at_stake: "the API key and the prompt",
            })
        };
        assert_eq!(
            looked_at(&format!("http://0.0.0.0:{port}/v1"), any_uid),
            Ok(Some((
                "0.0.0.0".to_string(),
                vec![SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port)]
            )))
        );
    }

    #[test]
    fn an_endpoint_elsewhere_or_over_https_is_not_looked_at() {
        assert_eq!(looked_at("https://127.0.0.1:1/v1", root_only), Ok(None));
        assert_eq!(looked_at("http://llm.example/v1", root_only), Ok(None));
        assert_eq!(looked_at("not a url", root_only), Ok(None));
        // Another host's address: not looked at, and the users not asked for.
        let never = || -> Result<Trusted, String> { panic!("asked for an endpoint elsewhere") };
        assert_eq!(looked_at("http://192.0.2.1:8080/v1", never), Ok(None));
    }

    #[test]
    fn a_server_user_is_a_name_or_a_number() {
        assert_eq!(uid_of("root"), Ok(0));
        assert_eq!(uid_of("998"), Ok(998));
        assert!(uid_of("no-such-user-kpo")
            .unwrap_err()
            .contains("no user named"));
    }
}
