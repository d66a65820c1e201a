//! Which addresses a webhook may be delivered to: the same classification as the extension's
//! `echovalue.address_classify(inet)` (webhook.sql), ported so the resolver can judge every
//! address a name resolves to before anything connects. The two tables must stay equal; the
//! unit test below lists the same cases as the SQL suite `webhook`.

use std::net::IpAddr;

/// IPv4 networks and their class; the longest matching prefix wins.
const V4: &[(u32, u8, &str)] = &[
    (0x0000_0000, 0, "public"),
    (0x0000_0000, 8, "unspecified"),
    (0x0a00_0000, 8, "private"),
    (0x6440_0000, 10, "CGNAT"),
    (0x7f00_0000, 8, "loopback"),
    (0xa9fe_0000, 16, "link-local"),
    (0xac10_0000, 12, "private"),
    (0xc000_0000, 24, "reserved"),
    (0xc000_0200, 24, "documentation"),
    (0xc058_6300, 24, "reserved"),
    (0xc0a8_0000, 16, "private"),
    (0xc612_0000, 15, "benchmarking"),
    (0xc633_6400, 24, "documentation"),
    (0xcb00_7100, 24, "documentation"),
    (0xe000_0000, 4, "multicast"),
    (0xf000_0000, 4, "reserved"),
    (0xffff_ffff, 32, "broadcast"),
];

/// IPv6 networks and their class; the longest matching prefix wins.
const V6: &[(u128, u8, &str)] = &[
    (0, 0, "reserved"),
    (0x2000 << 112, 3, "public"),
    (0, 128, "unspecified"),
    (1, 128, "loopback"),
    (0xffff_0000_0000, 96, "IPv4-mapped"),
    (0x0064_ff9b << 96, 96, "NAT64"),
    (0x0064_ff9b_0001 << 80, 48, "NAT64"),
    (0x0100 << 112, 64, "discard-only"),
    (0x2001_0000 << 96, 32, "Teredo"),
    (0x2001_0002_0000 << 80, 48, "benchmarking"),
    (0x2001_0010 << 96, 28, "reserved"),
    (0x2001_0020 << 96, 28, "reserved"),
    (0x2001_0db8 << 96, 32, "documentation"),
    (0x2002 << 112, 16, "6to4"),
    (0x3fff << 112, 20, "documentation"),
    (0x5f00 << 112, 16, "reserved"),
    (0xfc00 << 112, 7, "unique-local"),
    (0xfe80 << 112, 10, "link-local"),
    (0xfec0 << 112, 10, "site-local"),
    (0xff00 << 112, 8, "multicast"),
];

/// `public`, or why the address is not (`loopback`, `private`, …), as in SQL.
pub fn classify(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(a) => longest(u32::from(a), V4, 32),
        IpAddr::V6(a) => longest(u128::from(a), V6, 128),
    }
}

/// The class of the most specific listed network containing `addr`.
fn longest<T>(addr: T, table: &[(T, u8, &'static str)], bits: u8) -> &'static str
where
    T: Copy + PartialEq + std::ops::Shr<u32, Output = T>,
{
    table
        .iter()
        .filter(|(net, len, _)| {
            *len == 0 || (addr >> u32::from(bits - len)) == (*net >> u32::from(bits - len))
        })
        .max_by_key(|(_, len, _)| *len)
        .map_or("reserved", |(_, _, class)| class)
}

/// Whether a delivery may connect to `addr`: public ones always, loopback ones only when the
/// operator allows insecure targets (local testing), like `echovalue.webhook_allow_insecure`.
pub fn allowed(addr: IpAddr, allow_insecure: bool) -> Result<(), &'static str> {
    match classify(addr) {
        "public" => Ok(()),
        "loopback" if allow_insecure => Ok(()),
        class => Err(class),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases of the SQL suite `webhook` (address_classify), with the classes it expects.
    #[test]
    fn matches_the_sql_table() {
        let cases = [
            ("8.8.8.8", "public"),
            ("1.1.1.1", "public"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.128.0.1", "public"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("172.32.0.1", "public"),
            ("192.0.0.8", "reserved"),
            ("192.0.2.1", "documentation"),
            ("192.88.99.1", "reserved"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.20.0.1", "public"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("2606:4700::1111", "public"),
            ("2001:4860:4860::8888", "public"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "IPv4-mapped"),
            ("::ffff:8.8.8.8", "IPv4-mapped"),
            ("::127.0.0.1", "reserved"),
            ("64:ff9b::8.8.8.8", "NAT64"),
            ("64:ff9b:1::1", "NAT64"),
            ("100::1", "discard-only"),
            ("2001::1", "Teredo"),
            ("2001:2::1", "benchmarking"),
            ("2001:10::1", "reserved"),
            ("2001:20::1", "reserved"),
            ("2001:db8::1", "documentation"),
            ("2002:7f00:1::1", "6to4"),
            ("3fff::1", "documentation"),
            ("5f00::1", "reserved"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("4000::1", "reserved"),
        ];
        for (addr, want) in cases {
            let ip: IpAddr = addr.parse().expect("test addresses parse");
            assert_eq!(classify(ip), want, "{addr}");
        }
    }

    #[test]
    fn loopback_only_with_insecure() {
        let lo: IpAddr = "127.0.0.1".parse().expect("parses");
        let private: IpAddr = "10.0.0.1".parse().expect("parses");
        let public: IpAddr = "8.8.8.8".parse().expect("parses");
        assert_eq!(allowed(lo, false), Err("loopback"));
        assert_eq!(allowed(lo, true), Ok(()));
        assert_eq!(allowed(private, true), Err("private"));
        assert_eq!(allowed(public, false), Ok(()));
    }
}
