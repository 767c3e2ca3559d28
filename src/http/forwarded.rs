//! What a reverse proxy says of the request it passes on, believed only
//! when the connection comes from a trusted proxy:
//!
//! - the client's address (`Forwarded` (RFC 7239) `for=`, or
//!   `X-Forwarded-For`), only as far back as the chain of trusted proxies
//!   goes. Login throttling and the log line use it; without it, every
//!   client of a proxy would share the proxy's address and pauses;
//! - the address the client typed ([`Origin`]: `proto=` and `host=`, or
//!   `X-Forwarded-Proto`, `-Host`, `-Prefix`), for the welcome page, which
//!   shows it as the sync address.

use std::net::IpAddr;

use http_types::Request;

use crate::service::config::Cidr;

/// Whether `peer` is one of the trusted proxies.
pub(crate) fn is_trusted(peer: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|net| net.contains(peer))
}

/// Who sent `req` over a connection from `peer`. `X-Forwarded-For` wins
/// over `Forwarded`: nginx, Caddy and Apache write the former and pass a
/// client's own `Forwarded` through untouched.
pub(crate) fn client(peer: IpAddr, req: &Request, trusted: &[Cidr]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = if let Some(values) = req.header("x-forwarded-for") {
        values
            .iter()
            .flat_map(|v| v.as_str().split(','))
            .map(|hop| address(hop.trim()))
            .collect()
    } else if let Some(values) = req.header("forwarded") {
        values
            .iter()
            .flat_map(|v| v.as_str().split(','))
            .map(forwarded_for)
            .collect()
    } else {
        return peer;
    };
    // From the nearest hop back: each trusted proxy vouches for the next.
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !is_trusted(client, trusted) {
            break;
        }
        match hop {
            Some(ip) => client = *ip,
            None => break,
        }
    }
    client
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| address(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`, or a bare IPv6 address.
/// `unknown` and obfuscated names are not addresses.
fn address(text: &str) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Where the client reached this server, as it would write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) https: bool,
    /// `host[:port]` as the client wrote it; `None` if nobody said.
    pub(crate) host: Option<String>,
    /// A proxy's subpath the request came through (`/anki`), when the proxy
    /// took it off the path; empty otherwise.
    pub(crate) prefix: String,
}

/// The origin of `req`: from the headers of a trusted proxy (`proxied`)
/// when it sent them, else from `Host` (leitner itself speaks only http).
pub(crate) fn origin(req: &Request, proxied: bool) -> Origin {
    let header = |name: &str| {
        req.header(name)
            .and_then(|values| values.iter().next())
            .map(|v| {
                v.as_str()
                    .split(',')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .filter(|v| !v.is_empty())
    };
    let mut origin = Origin {
        https: false,
        host: header("host").filter(|h| is_host(h)),
        prefix: String::new(),
    };
    if !proxied {
        return origin;
    }
    // The first element is the hop nearest the client: what it typed.
    let element = header("forwarded");
    let pair = |key: &str| {
        element.as_deref().and_then(|e| {
            e.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case(key)
                    .then(|| v.trim().trim_matches('"').to_owned())
            })
        })
    };
    // As for the client's address, the X- headers first (see `client`).
    if let Some(proto) = header("x-forwarded-proto").or_else(|| pair("proto")) {
        origin.https = proto.eq_ignore_ascii_case("https");
    }
    if let Some(host) = header("x-forwarded-host")
        .or_else(|| pair("host"))
        .filter(|h| is_host(h))
    {
        origin.host = Some(host);
    }
    if let Some(prefix) = header("x-forwarded-prefix").filter(|p| is_path(p)) {
        origin.prefix = prefix.trim_end_matches('/').to_owned();
    }
    origin
}

/// A host name or address with an optional port, and nothing else.
fn is_host(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 260
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
}

/// An absolute path of plain characters, without `..` or `//`.
pub(crate) fn is_path(text: &str) -> bool {
    text.starts_with('/')
        && text.len() <= 1024
        && !text.contains("//")
        && !text.split('/').any(|s| s == "..")
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_types::{Method, Url};

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut req = Request::new(Method::Post, Url::parse("http://x/sync/hostKey").unwrap());
        for (name, value) in headers {
            req.append_header(*name, *value);
        }
        req
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn loopback() -> Vec<Cidr> {
        vec![
            Cidr::parse("127.0.0.1").unwrap(),
            Cidr::parse("::1").unwrap(),
        ]
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let spoof = req(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(
            client(ip("192.168.1.7"), &spoof, &loopback()),
            ip("192.168.1.7")
        );
        assert_eq!(
            client(ip("127.0.0.2"), &spoof, &loopback()),
            ip("127.0.0.2")
        );
        assert_eq!(client(ip("127.0.0.1"), &spoof, &loopback()), ip("10.9.9.9"));
        assert_eq!(client(ip("127.0.0.1"), &spoof, &[]), ip("127.0.0.1"));
        assert_eq!(
            client(ip("127.0.0.1"), &req(&[]), &loopback()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_chain_is_believed_back_to_its_first_untrusted_hop() {
        let mut trusted = loopback();
        trusted.push(Cidr::parse("10.0.0.0/8").unwrap());
        // The client wrote the first entry itself: not believed.
        let chain = req(&[("x-forwarded-for", "6.6.6.6, 192.168.1.20, 10.1.2.3")]);
        assert_eq!(
            client(ip("127.0.0.1"), &chain, &trusted),
            ip("192.168.1.20")
        );
        let split = req(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "192.168.1.20"),
        ]);
        assert_eq!(
            client(ip("127.0.0.1"), &split, &trusted),
            ip("192.168.1.20")
        );
        let garbage = req(&[("x-forwarded-for", "6.6.6.6, nonsense")]);
        assert_eq!(client(ip("127.0.0.1"), &garbage, &trusted), ip("127.0.0.1"));
    }

    #[test]
    fn x_forwarded_for_wins_and_forwarded_takes_every_form() {
        // A client's own `Forwarded`, passed on by a proxy that appends to
        // X-Forwarded-For, is not believed.
        let both = req(&[
            ("forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        assert_eq!(client(ip("::1"), &both, &loopback()), ip("6.6.6.6"));
        let alone = req(&[("forwarded", "for=192.0.2.60;proto=https")]);
        assert_eq!(client(ip("::1"), &alone, &loopback()), ip("192.0.2.60"));
        let v6 = req(&[(
            "forwarded",
            r#"for=1.2.3.4, For="[2001:db8:cafe::17]:4711""#,
        )]);
        assert_eq!(
            client(ip("127.0.0.1"), &v6, &loopback()),
            ip("2001:db8:cafe::17")
        );
        let hidden = req(&[("forwarded", "for=_hidden")]);
        assert_eq!(
            client(ip("127.0.0.1"), &hidden, &loopback()),
            ip("127.0.0.1")
        );
        assert_eq!(address("192.0.2.1:8080"), Some(ip("192.0.2.1")));
        assert_eq!(address("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(address("unknown"), None);
    }

    #[test]
    fn the_origin_is_the_host_unless_a_trusted_proxy_says_more() {
        let direct = req(&[
            ("host", "leitner.local:8080"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            origin(&direct, false),
            Origin {
                https: false,
                host: Some("leitner.local:8080".into()),
                prefix: String::new()
            }
        );
        let caddy = req(&[
            ("host", "example.org"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.org"),
            ("x-forwarded-prefix", "/anki/"),
        ]);
        assert_eq!(
            origin(&caddy, true),
            Origin {
                https: true,
                host: Some("example.org".into()),
                prefix: "/anki".into()
            }
        );
        // nginx without a Host of its own: the forwarded host counts.
        let nginx = req(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "anki.example.org:8443, inner"),
        ]);
        assert_eq!(
            origin(&nginx, true).host.as_deref(),
            Some("anki.example.org:8443")
        );
        let rfc = req(&[
            ("host", "127.0.0.1:8080"),
            (
                "forwarded",
                r#"for=192.0.2.1;proto=https;host="[2001:db8::1]:8443", for=10.0.0.1"#,
            ),
        ]);
        let got = origin(&rfc, true);
        assert!(got.https);
        assert_eq!(got.host.as_deref(), Some("[2001:db8::1]:8443"));
    }

    #[test]
    fn odd_hosts_and_prefixes_are_not_believed() {
        let evil = req(&[("host", "x\"><script>"), ("x-forwarded-prefix", "/../etc")]);
        let got = origin(&evil, true);
        assert_eq!(got.host, None);
        assert_eq!(got.prefix, "");
        for bad in ["anki", "//x", "/a b", "/a\"b", "/.."] {
            assert!(!is_path(bad), "{bad}");
        }
        assert!(is_path("/anki/"));
        assert!(is_path("/"));
    }
}
