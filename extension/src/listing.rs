//! Keyset pages of the KV listing (SPEC section 17): the opaque cursor a page hands out, and
//! the end of a prefix's range. Rust rather than SQL because SQL cannot test a decoded cursor
//! for valid UTF-8 without an exception block (a subtransaction on every listing call).
//!
//! A cursor is the base64url (no padding) of what the page was: its kind (`k` for the keys of
//! a group, `g` for the groups), for keys the group, and the last name the page listed,
//! separated by U+001F (names cannot hold control characters). The next page starts after
//! that name; a cursor of another kind or group is refused, never read as a position.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pgrx::prelude::*;

use crate::gucs::MAX_NAME_CHARS;
use crate::names::name_error;

const SEPARATOR: char = '\u{1f}';

/// The cursor of a page of `kind` (within `group` for keys) that ended at `last`.
pub fn cursor(kind: &str, group: Option<&str>, last: &str) -> String {
    let mut payload = String::from(kind);
    for part in group.into_iter().chain([last]) {
        payload.push(SEPARATOR);
        payload.push_str(part);
    }
    URL_SAFE_NO_PAD.encode(payload)
}

/// The name a page after `cursor` starts after, when the cursor is one a page of `kind`
/// (within `group`) handed out and its name is still a valid name; `None` otherwise.
pub fn cursor_after(
    cursor: &str,
    kind: &str,
    group: Option<&str>,
    max_chars: i32,
) -> Option<String> {
    // the longest payload: the kind, two separators, and two names of 4-byte characters
    let max_payload = 3 + 2 * 4 * usize::try_from(max_chars).ok()?;
    if cursor.len() > max_payload.div_ceil(3) * 4 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let payload = String::from_utf8(bytes).ok()?;
    let mut parts = payload.split(SEPARATOR);
    if parts.next()? != kind {
        return None;
    }
    if let Some(group) = group {
        if parts.next()? != group {
            return None;
        }
    }
    let last = parts.next()?;
    let what = if kind == "g" { "group" } else { "key" };
    if parts.next().is_some() || name_error(what, Some(last), max_chars).is_some() {
        return None;
    }
    Some(last.to_owned())
}

/// The first string after every string that starts with `prefix`, in code point order (the
/// order of the C collation on UTF-8): `prefix` with its last character raised by one, past
/// the surrogates and dropping characters already at U+10FFFF; `None` for no upper bound.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `echovalue._cursor(kind, grp, last)`: [`cursor`].
#[pg_extern(immutable, parallel_safe, name = "_cursor")]
fn cursor_sql(kind: &str, grp: Option<&str>, last: &str) -> String {
    cursor(kind, grp, last)
}

/// `echovalue._cursor_after(cursor, kind, grp)`: [`cursor_after`] with
/// `echovalue.max_name_chars`; NULL for a cursor no page of this listing handed out.
#[pg_extern(stable, parallel_safe, name = "_cursor_after")]
fn cursor_after_sql(cursor: &str, kind: &str, grp: Option<&str>) -> Option<String> {
    cursor_after(cursor, kind, grp, MAX_NAME_CHARS.get())
}

/// `echovalue._prefix_end(prefix)`: [`prefix_end`].
#[pg_extern(immutable, parallel_safe, name = "_prefix_end")]
fn prefix_end_sql(prefix: &str) -> Option<String> {
    prefix_end(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_gives_back_its_position_only_to_its_own_listing() {
        let c = cursor("k", Some("default"), "user-42");
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            cursor_after(&c, "k", Some("default"), 30).as_deref(),
            Some("user-42")
        );
        assert_eq!(cursor_after(&c, "k", Some("other"), 30), None);
        assert_eq!(cursor_after(&c, "g", None, 30), None);
        let g = cursor("g", None, "default");
        assert_eq!(cursor_after(&g, "g", None, 30).as_deref(), Some("default"));
        assert_eq!(cursor_after(&g, "k", Some("default"), 30), None);
        // a name the rules refuse (here: longer than the setting) is no position
        assert_eq!(cursor_after(&c, "k", Some("default"), 5), None);
        let longest = "é".repeat(30);
        let c = cursor("k", Some(&longest), &"€".repeat(30));
        assert!(cursor_after(&c, "k", Some(&longest), 30).is_some());
    }

    #[test]
    fn forged_cursors_are_refused() {
        let forged = |payload: &[u8]| URL_SAFE_NO_PAD.encode(payload);
        for bad in [
            String::new(),
            "!!!".to_owned(),
            "a".to_owned(),
            "AAAA=".to_owned(),
            forged(b"k\x1fdefault"),
            forged(b"k\x1fdefault\x1f"),
            forged(b"k\x1fdefault\x1fa\x1fb"),
            forged(b"k\x1fdefault\x1fa/b"),
            forged(b"k\x1fdefault\x1f\xff"),
            forged(b"x\x1fdefault\x1fa"),
            "A".repeat(100_000),
        ] {
            assert_eq!(
                cursor_after(&bad, "k", Some("default"), 30),
                None,
                "{bad:.40}"
            );
        }
    }

    #[test]
    fn a_prefix_range_ends_after_its_last_string() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
        for (prefix, inside) in [
            ("ab", "ab\u{10FFFF}zz"),
            ("a\u{10FFFF}", "a\u{10FFFF}\u{10FFFF}"),
        ] {
            let end = prefix_end(prefix).unwrap();
            assert!(inside.starts_with(prefix) && inside < end.as_str());
        }
    }
}
