//! The client's address behind a reverse proxy: `Forwarded` (RFC 7239) or
//! `X-Forwarded-For`, believed only when the connection comes from a
//! trusted proxy, and only as far back as the chain of trusted proxies goes.
//! Login throttling and the log line use it; without it, every client of a
//! proxy would share the proxy's address and one another's pauses.

use std::net::IpAddr;

use http_types::Request;

use crate::service::config::Cidr;

/// Who sent `req` over a connection from `peer`.
pub(super) fn client(peer: IpAddr, req: &Request, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = if let Some(values) = req.header("forwarded") {
        values
            .iter()
            .flat_map(|v| v.as_str().split(','))
            .map(forwarded_for)
            .collect()
    } else if let Some(values) = req.header("x-forwarded-for") {
        values
            .iter()
            .flat_map(|v| v.as_str().split(','))
            .map(|hop| address(hop.trim()))
            .collect()
    } else {
        return peer;
    };
    // From the nearest hop back: each trusted proxy vouches for the next.
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !is_trusted(client) {
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
    fn forwarded_wins_over_x_forwarded_for_and_takes_every_form() {
        let both = req(&[
            ("forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        assert_eq!(client(ip("::1"), &both, &loopback()), ip("192.0.2.60"));
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
}
