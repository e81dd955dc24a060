//! What the agent's HTTP clients (the LLM advisor, the approvals webhook) share: proxies.
//!
//! reqwest takes a proxy from the environment when a client is built: `HTTP_PROXY` for
//! `http://` URLs, `HTTPS_PROXY` for `https://`, `ALL_PROXY` for either when those are unset
//! (each also in lower case, upper case first), except for the hosts `NO_PROXY` lists, and none
//! at all when `REQUEST_METHOD` is set (a CGI request could set `HTTP_PROXY` through a `Proxy:`
//! header). Through a proxy, a request to an `http://` URL is forwarded whole: the proxy reads
//! every header, `Authorization` included, and the link to a proxy named `http://` carries it in
//! clear. A request to an `https://` URL goes through a `CONNECT` tunnel with TLS to the server
//! itself, so the proxy sees only the host and port, whatever the proxy's own scheme.
//!
//! A URL on this host is never proxied ([`client_builder`]): a proxy cannot reach this host's
//! loopback for us, and an environment set for the host's outbound traffic would send a local
//! server's requests, and the key in them, to the proxy instead.

/// Whether `url`'s host is this host: `127.0.0.0/8`, `::1` (an IPv4-mapped loopback too),
/// `localhost` or a name under `.localhost`. A URL that does not parse is not.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

/// A client builder for requests to `url`: without any proxy when `url` is on this host (see
/// the module's documentation), with the environment's otherwise (an operator behind an egress
/// proxy needs it).
pub fn client_builder(url: &str) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    if is_loopback_url(url) {
        builder.no_proxy()
    } else {
        builder
    }
}

/// The proxy a client from [`client_builder`] would send a request to `url` through, by the
/// environment `env` (a lookup of environment variables), without credentials; `None` for a
/// direct connection. The same rules as reqwest's: hyper-util's matcher, which reqwest uses.
pub fn env_proxy(url: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    if is_loopback_url(url) || env("REQUEST_METHOD").is_some() {
        return None;
    }
    let first = |names: [&str; 2]| names.iter().find_map(|n| env(n)).unwrap_or_default();
    let matcher = hyper_util::client::proxy::matcher::Matcher::builder()
        .all(first(["ALL_PROXY", "all_proxy"]))
        .http(first(["HTTP_PROXY", "http_proxy"]))
        .https(first(["HTTPS_PROXY", "https_proxy"]))
        .no(first(["NO_PROXY", "no_proxy"]))
        .build();
    let uri: hyper::Uri = url.parse().ok()?;
    matcher.intercept(&uri).map(|p| p.uri().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn loopback_urls() {
        for url in [
            "http://127.0.0.1:11434/v1",
            "http://127.9.9.9/",
            "http://[::1]:8000/v1",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8000/v1",
            "http://LocalHost./",
            "https://vllm.localhost/v1",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.5/v1",
            "http://[fd00::1]/",
            "http://localhost.example/",
            "http://mylocalhost/",
            "not a url",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn the_environments_proxy_except_for_this_host() {
        let proxied = [
            ("HTTP_PROXY", "http://bob:pw@proxy:3128"),
            ("HTTPS_PROXY", "http://tls-proxy:3128"),
        ];
        assert_eq!(
            env_proxy("http://vllm.internal/v1", env(&proxied)).as_deref(),
            Some("http://proxy:3128/"),
            "credentials are not shown"
        );
        assert_eq!(
            env_proxy("https://api.openai.com/v1", env(&proxied)).as_deref(),
            Some("http://tls-proxy:3128/")
        );
        assert_eq!(env_proxy("http://127.0.0.1:11434/v1", env(&proxied)), None);
        assert_eq!(env_proxy("http://localhost/v1", env(&proxied)), None);
        let all = [("all_proxy", "http://any:1")];
        assert_eq!(
            env_proxy("http://vllm.internal/v1", env(&all)).as_deref(),
            Some("http://any:1/")
        );
        let exempt = [
            ("http_proxy", "http://proxy:3128"),
            ("no_proxy", ".internal, 10.0.0.0/8"),
        ];
        assert_eq!(env_proxy("http://vllm.internal/v1", env(&exempt)), None);
        assert_eq!(env_proxy("http://10.1.2.3/v1", env(&exempt)), None);
        assert!(env_proxy("http://192.0.2.1/v1", env(&exempt)).is_some());
        let cgi = [
            ("HTTP_PROXY", "http://proxy:3128"),
            ("REQUEST_METHOD", "GET"),
        ];
        assert_eq!(env_proxy("http://vllm.internal/v1", env(&cgi)), None);
        assert_eq!(env_proxy("http://vllm.internal/v1", env(&[])), None);
    }
}
