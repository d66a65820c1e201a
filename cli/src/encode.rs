//! Paths and query strings: each group, key, id and query value is percent-encoded whole, so
//! a name holding `/`, `?`, `#`, `%` or a space reaches the server as that one name.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Every byte but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment, encoded.
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// `/a/b/…` from raw segments. A segment `.` or `..` cannot be sent: every URL parser (and
/// so this HTTP client) folds it away, encoded or not, and the request would name another path.
pub fn path(segments: &[&str]) -> Result<String, String> {
    let mut out = String::new();
    for s in segments {
        if *s == "." || *s == ".." {
            return Err(format!(
                "the name {s:?} cannot be sent in a URL path (URL parsers remove it)"
            ));
        }
        out.push('/');
        out.push_str(&segment(s));
    }
    Ok(out)
}

/// `?k=v&…` from the pairs that have a value (empty when none does).
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", segment(k), segment(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The base URL (with or without a trailing slash, maybe with a path of its own) and a path
/// that starts with `/`.
pub fn join(base: &str, path_and_query: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path_and_query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_only_unreserved_characters() {
        assert_eq!(segment("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(segment("my key"), "my%20key");
        assert_eq!(segment("a/b?c#d%e&f=g+h"), "a%2Fb%3Fc%23d%25e%26f%3Dg%2Bh");
        assert_eq!(segment("déjà ✓"), "d%C3%A9j%C3%A0%20%E2%9C%93");
        assert_eq!(
            segment("'\"\\:@!$*(),;"),
            "%27%22%5C%3A%40%21%24%2A%28%29%2C%3B"
        );
    }

    #[test]
    fn paths_join_encoded_segments_and_refuse_dot_segments() {
        assert_eq!(
            path(&["kv", "my group", "a/b"]),
            Ok("/kv/my%20group/a%2Fb".into())
        );
        assert_eq!(path(&["kv", "...", ".x"]), Ok("/kv/.../.x".into()));
        assert!(path(&["kv", "g", ".."]).is_err());
        assert!(path(&["kv", ".", "k"]).is_err());
        // why: the URL parser folds a dot segment away, encoded or not
        let folded = reqwest::Url::parse("http://h/kv/g/%2E%2e").unwrap();
        assert_eq!(folded.path(), "/kv/");
    }

    #[test]
    fn query_keeps_given_values_in_order() {
        assert_eq!(query(&[("n", None), ("type", None)]), "");
        assert_eq!(query(&[("ttl", Some("60"))]), "?ttl=60");
        assert_eq!(
            query(&[
                ("prefix", Some("a b&c")),
                ("cursor", None),
                ("limit", Some("2"))
            ]),
            "?prefix=a%20b%26c&limit=2"
        );
        assert_eq!(query(&[("cursor", Some("x+y/z="))]), "?cursor=x%2By%2Fz%3D");
    }

    #[test]
    fn join_takes_a_base_with_or_without_slash_or_path() {
        assert_eq!(join("http://h:1", "/token"), "http://h:1/token");
        assert_eq!(join("http://h:1/", "/token"), "http://h:1/token");
        assert_eq!(join("https://h/ev//", "/kv?x=1"), "https://h/ev/kv?x=1");
    }

    #[test]
    fn encoded_paths_survive_the_url_parser() {
        // what reqwest does to the URL before sending it
        let url = join(
            "http://h:1",
            &path(&["kv", "a b", "c/d", "%2e%2e"]).unwrap(),
        );
        let parsed = reqwest::Url::parse(&url).unwrap();
        assert_eq!(parsed.path(), "/kv/a%20b/c%2Fd/%252e%252e");
    }
}
