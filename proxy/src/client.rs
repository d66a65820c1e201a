//! The client address handed to the database (token creation is rate-limited per address).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// The socket peer, unless the operator trusts a proxy in front of us: then the left-most
/// `X-Forwarded-For` entry (the original client as the first proxy saw it). An entry that is
/// not an address falls back to the peer rather than failing the request.
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trust_forwarded: bool) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !trust_forwarded {
        return peer_ip;
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(parse_entry)
        .unwrap_or(peer_ip)
}

fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn peer() -> SocketAddr {
        "10.0.0.9:5555".parse().unwrap()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn peer_unless_trusted() {
        let h = xff("203.0.113.7, 10.0.0.1");
        assert_eq!(client_addr(peer(), &h, false).to_string(), "10.0.0.9");
        assert_eq!(client_addr(peer(), &h, true).to_string(), "203.0.113.7");
    }

    #[test]
    fn forwarded_forms() {
        assert_eq!(
            client_addr(peer(), &xff(" 2001:db8::1 "), true).to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            client_addr(peer(), &xff("198.51.100.2:4444"), true).to_string(),
            "198.51.100.2"
        );
        assert_eq!(
            client_addr(peer(), &xff("[2001:db8::2]:80"), true).to_string(),
            "2001:db8::2"
        );
        assert_eq!(
            client_addr(peer(), &xff("::ffff:192.0.2.1"), true).to_string(),
            "192.0.2.1"
        );
    }

    #[test]
    fn garbage_or_missing_falls_back_to_peer() {
        assert_eq!(
            client_addr(peer(), &xff("unknown, 1.2.3.4"), true).to_string(),
            "10.0.0.9"
        );
        assert_eq!(
            client_addr(peer(), &HeaderMap::new(), true).to_string(),
            "10.0.0.9"
        );
        let v6: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert_eq!(
            client_addr(v6, &HeaderMap::new(), false).to_string(),
            "127.0.0.1"
        );
    }
}
