//! The client address handed to the database (token creation is rate-limited per address).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

/// Which proxies in front of this one may be believed about the client's address
/// (`ECHOVALUE_TRUSTED_PROXIES`). A proxy that appends to `X-Forwarded-For` leaves what the
/// client sent on the left, so only entries added by trusted proxies, counted from the right,
/// can be believed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrustedProxies {
    /// None: the socket peer is the client.
    #[default]
    None,
    /// This many proxies, each appending the address it saw: the client is that many entries
    /// from the right of `X-Forwarded-For`.
    Hops(usize),
    /// Proxies at these addresses: walking from the peer leftwards through
    /// `X-Forwarded-For`, the first address outside them is the client.
    Nets(Vec<IpNet>),
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// `0`…`16` (a hop count) or a comma-separated list of addresses and CIDR networks.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == "0" {
            return Ok(TrustedProxies::None);
        }
        if let Ok(n) = s.parse::<usize>() {
            if n > 16 {
                return Err("a hop count must be from 0 to 16".to_owned());
            }
            return Ok(TrustedProxies::Hops(n));
        }
        s.split(',')
            .map(|part| {
                let part = part.trim();
                part.parse::<IpNet>()
                    .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("{part:?} is neither a hop count nor an address or CIDR network")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies::Nets)
    }
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy's (only a list of networks names them).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        matches!(self, TrustedProxies::Nets(nets) if nets.iter().any(|n| n.contains(&ip)))
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustedProxies::None => write!(f, "0"),
            TrustedProxies::Hops(n) => write!(f, "{n}"),
            TrustedProxies::Nets(nets) => {
                let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
                write!(f, "{}", list.join(","))
            }
        }
    }
}

/// The client's address: the socket peer, or what the trusted proxies in front say. An entry
/// that is not an address, or a chain shorter than the proxies trusted, falls back to the peer
/// rather than failing the request.
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let forwarded = || {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<&str>>()
    };
    match trusted {
        TrustedProxies::None => peer_ip,
        TrustedProxies::Hops(n) => {
            let entries = forwarded();
            entries
                .len()
                .checked_sub(*n)
                .and_then(|i| parse_entry(entries[i]))
                .unwrap_or(peer_ip)
        }
        TrustedProxies::Nets(nets) => {
            let trusted = |ip: &IpAddr| nets.iter().any(|net| net.contains(ip));
            if !trusted(&peer_ip) {
                return peer_ip;
            }
            let mut client = peer_ip;
            for entry in forwarded().iter().rev() {
                let Some(ip) = parse_entry(entry) else {
                    return peer_ip;
                };
                client = ip;
                if !trusted(&ip) {
                    break;
                }
            }
            client
        }
    }
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

    fn at(trusted: &str, v: &str) -> String {
        client_addr(peer(), &xff(v), &trusted.parse().unwrap()).to_string()
    }

    #[test]
    fn peer_unless_trusted() {
        assert_eq!(at("0", "203.0.113.7, 10.0.0.1"), "10.0.0.9");
        assert_eq!(at("1", "203.0.113.7, 198.51.100.4"), "198.51.100.4");
    }

    #[test]
    fn a_spoofed_left_entry_is_never_taken() {
        // the client sent "1.2.3.4"; our one proxy appended the address it saw
        assert_eq!(at("1", "1.2.3.4, 203.0.113.7"), "203.0.113.7");
        // two proxies: the client as the outer one saw it
        assert_eq!(at("2", "1.2.3.4, 203.0.113.7, 10.0.0.1"), "203.0.113.7");
        // by network: every trusted hop from the right is skipped, the first other address wins
        assert_eq!(
            at("10.0.0.0/8", "1.2.3.4, 203.0.113.7, 10.0.0.1"),
            "203.0.113.7"
        );
        assert_eq!(
            at("10.0.0.0/8, 192.0.2.1", "1.2.3.4, 203.0.113.7, 192.0.2.1"),
            "203.0.113.7"
        );
        // a peer outside the trusted networks is the client, whatever it says
        assert_eq!(
            client_addr(
                "192.0.2.50:1".parse().unwrap(),
                &xff("1.2.3.4"),
                &"10.0.0.0/8".parse().unwrap()
            )
            .to_string(),
            "192.0.2.50"
        );
    }

    #[test]
    fn forwarded_forms() {
        assert_eq!(at("1", " 2001:db8::1 "), "2001:db8::1");
        assert_eq!(at("1", "198.51.100.2:4444"), "198.51.100.2");
        assert_eq!(at("1", "[2001:db8::2]:80"), "2001:db8::2");
        assert_eq!(at("1", "::ffff:192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn garbage_short_or_missing_falls_back_to_peer() {
        assert_eq!(at("1", "1.2.3.4, unknown"), "10.0.0.9");
        assert_eq!(at("3", "1.2.3.4, 5.6.7.8"), "10.0.0.9");
        assert_eq!(at("10.0.0.0/8", "unknown"), "10.0.0.9");
        assert_eq!(
            client_addr(peer(), &HeaderMap::new(), &TrustedProxies::Hops(1)).to_string(),
            "10.0.0.9"
        );
        let v6: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert_eq!(
            client_addr(v6, &HeaderMap::new(), &TrustedProxies::None).to_string(),
            "127.0.0.1"
        );
    }

    #[test]
    fn settings_parse() {
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::None));
        assert_eq!("2".parse::<TrustedProxies>(), Ok(TrustedProxies::Hops(2)));
        assert!("17".parse::<TrustedProxies>().is_err());
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.example".parse::<TrustedProxies>().is_err());
        let nets: TrustedProxies = "10.0.0.0/8,2001:db8::/32,192.0.2.1".parse().unwrap();
        assert_eq!(nets.to_string(), "10.0.0.0/8,2001:db8::/32,192.0.2.1/32");
    }
}
