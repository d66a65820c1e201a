//! Property-based fuzzing of what an HTTP client controls before any SQL call (issue 15): the
//! route of a method and raw path, percent-decoding of path segments and query values, the
//! client address from X-Forwarded-For, and the Stripe webhook's signature check. A case
//! fails on a panic or a broken invariant. `PROPTEST_CASES` sets the cases per property
//! (CI: proptest's default, 256; `bash tests/fuzz.sh N` runs longer). What reaches the database is
//! fuzzed end to end against a real proxy in `tests/tests/fuzz_http.rs`.

use std::net::{IpAddr, SocketAddr};

use echovalue_proxy::client::{client_addr, TrustedProxies};
use echovalue_proxy::request::{query_param, segment};
use echovalue_proxy::routes::resolve;
use echovalue_proxy::stripe::verify;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use sha2::Sha256;

const SECRET: &str = "whsec_fuzz";

/// A raw path from the API's own segments and hostile escapes.
fn path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("kv"),
        Just("token"),
        Just("keys"),
        Just("webhook"),
        Just("webhooks"),
        Just("logs"),
        Just("recharge"),
        Just("attachments"),
        Just("test"),
        Just("settings"),
        Just("%00"),
        Just("%FF"),
        Just("%C3"),
        Just("%2F"),
        Just("%25"),
        Just(".."),
        Just(""),
        Just("é"),
        Just("%F0%9F%92%A9"),
        Just("a"),
        Just("0"),
        Just("-1")
    ];
    prop::collection::vec(piece, 0..7).prop_map(|ps| format!("/{}", ps.join("/")))
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
        Just(Method::HEAD),
        Just(Method::from_bytes(b"BREW").unwrap())
    ]
}

fn sign(body: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={sig}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

proptest! {
    #[test]
    fn fuzz_routes_and_percent_decoding(method in method(), path in prop_oneof![path(), "\\PC{0,80}"],
                                        n in 0usize..4, query in "\\PC{0,60}") {
        let _ = resolve(&method, &path);
        if let Some(text) = segment(&path, n) {
            // what reaches SQL as text: never a NUL, always UTF-8
            prop_assert!(!text.contains('\0'));
        }
        for name in ["ttl", "n", "amount", "type"] {
            let _ = query_param(Some(&query), name);
        }
    }

    #[test]
    fn fuzz_client_address(forwarded in prop::collection::vec(
            prop_oneof![Just("203.0.113.9".to_owned()), Just("::ffff:10.0.0.1".to_owned()),
                        Just("unknown".to_owned()), Just(String::new()), Just(" 2001:db8::1 ".to_owned()),
                        "[^,]{0,30}"], 0..6),
        hops in 0usize..4) {
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let joined = forwarded.join(",");
        let mut headers = HeaderMap::new();
        let mut entries: Vec<&str> = Vec::new();
        if let Ok(v) = HeaderValue::from_str(&joined) {
            headers.insert("x-forwarded-for", v);
            if joined.is_ascii() {
                entries = joined.split(',').collect();
            }
        }
        let trusted = if hops == 0 { TrustedProxies::None } else { TrustedProxies::Hops(hops) };
        let ip = client_addr(peer, &headers, &trusted);
        // Only the entry `hops` from the right is believed (what the client wrote on the left
        // never is), and only when it is an address; otherwise the socket peer.
        let parse = |e: &str| {
            let e = e.trim();
            e.parse::<IpAddr>().ok().or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
                .map(|ip| ip.to_canonical())
        };
        let expected = match hops {
            0 => peer.ip(),
            n => entries.len().checked_sub(n).and_then(|i| parse(entries[i])).unwrap_or(peer.ip()),
        };
        prop_assert_eq!(ip, expected);
    }

    #[test]
    fn fuzz_stripe_signature(body in prop_oneof![prop::collection::vec(any::<u8>(), 0..400),
                                                 "\\PC{0,200}".prop_map(String::into_bytes)],
                             header in prop_oneof!["\\PC{0,120}",
                                 "[0-9a-f]{64}".prop_map(|s| format!("t={},v1={s}", now())),
                                 Just(String::new())],
                             age in 0i64..600) {
        // An unsigned or wrongly signed body is never accepted.
        prop_assert!(verify(&body, Some(&header), SECRET).is_err());
        prop_assert!(verify(&body, None, SECRET).is_err());
        // A signed text body is accepted while fresh (5 minutes), whatever it holds.
        if let Ok(text) = std::str::from_utf8(&body) {
            let signed = verify(&body, Some(&sign(text, now() - age)), SECRET);
            if age < 290 {
                prop_assert_eq!(signed.ok(), Some(text));
            } else if age > 310 {
                prop_assert!(signed.is_err());
            }
        }
    }
}
