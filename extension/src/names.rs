//! Key-value group and key names: which are refused, and why (`_name_error`).
//!
//! A Rust function rather than SQL because it runs twice on every key-value request: the SQL
//! expression it replaces was inlined into the plpgsql callers, and plpgsql sets every
//! expression up again in each transaction (function look-ups, expression steps for the CASE,
//! the regex and the format calls); a call of this function is one expression step. With
//! `_token_hash` and `_caller_token` moved to Rust likewise, callgrind counted a KV get at
//! 444,000 instructions in the backend instead of 517,000.

use pgrx::prelude::*;

use crate::gucs::MAX_NAME_CHARS;

/// C0 and C1 control characters (U+0001 to U+001F, U+007F to U+009F; text cannot hold NUL).
fn is_control(c: char) -> bool {
    matches!(u32::from(c), 0x01..=0x1f | 0x7f..=0x9f)
}

/// Why `name` is refused as a `what` ("group" or "key") of at most `max_chars` characters, as
/// the `400` body, or `None` when it is fine. The checks go in a fixed order: length, then
/// '/' and control characters, then the reserved group names.
pub fn name_error(what: &str, name: Option<&str>, max_chars: i32) -> Option<String> {
    let fits = |len: usize| len >= 1 && usize::try_from(max_chars).is_ok_and(|max| len <= max);
    match name {
        Some(n) if fits(n.chars().count()) => {
            if n.contains('/') || n.chars().any(is_control) {
                Some(format!(
                    "Bad Request: {what} must not contain '/' or control characters"
                ))
            } else if what == "group" && n.starts_with("reserved-") {
                Some("Bad Request: group must not start with 'reserved-'".to_owned())
            } else if what == "group" && n.ends_with("---") {
                Some("Bad Request: group must not end with '---'".to_owned())
            } else {
                None
            }
        }
        _ => Some(format!(
            "Bad Request: {what} must be 1 to {max_chars} characters"
        )),
    }
}

/// `echovalue._name_error(what, name)`: [`name_error`] with `echovalue.max_name_chars`.
#[pg_extern(stable, parallel_safe, name = "_name_error")]
fn name_error_sql(p_what: Option<&str>, p_name: Option<&str>) -> Option<String> {
    name_error(p_what.unwrap_or(""), p_name, MAX_NAME_CHARS.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_counted_in_characters() {
        assert_eq!(name_error("key", Some("€€€"), 3), None);
        assert_eq!(
            name_error("key", Some("€€€€"), 3).as_deref(),
            Some("Bad Request: key must be 1 to 3 characters")
        );
        assert_eq!(
            name_error("group", Some(""), 30).as_deref(),
            Some("Bad Request: group must be 1 to 30 characters")
        );
        assert_eq!(
            name_error("group", None, 30).as_deref(),
            Some("Bad Request: group must be 1 to 30 characters")
        );
    }

    #[test]
    fn slash_and_control_characters_are_refused() {
        let refused = "Bad Request: key must not contain '/' or control characters";
        for name in [
            "a/b", "a\tb", "a\nb", "a\u{7f}b", "a\u{85}b", "a\u{9f}", "\u{1}",
        ] {
            assert_eq!(
                name_error("key", Some(name), 30).as_deref(),
                Some(refused),
                "{name:?}"
            );
        }
        // the first character after the C1 range, and ordinary punctuation, are fine
        for name in ["a\u{a0}b", "a-b_c.d~e", "ünïcödé"] {
            assert_eq!(name_error("key", Some(name), 30), None, "{name:?}");
        }
    }

    #[test]
    fn reserved_group_names_are_refused_only_for_groups() {
        assert_eq!(
            name_error("group", Some("reserved-x"), 30).as_deref(),
            Some("Bad Request: group must not start with 'reserved-'")
        );
        assert_eq!(
            name_error("group", Some("x---"), 30).as_deref(),
            Some("Bad Request: group must not end with '---'")
        );
        assert_eq!(name_error("group", Some("my-reserved-"), 30), None);
        assert_eq!(name_error("group", Some("Reserved-x"), 30), None);
        assert_eq!(name_error("key", Some("reserved-k---"), 30), None);
    }

    #[test]
    fn length_comes_before_the_other_checks() {
        assert_eq!(
            name_error("group", Some("reserved-xyz/"), 5).as_deref(),
            Some("Bad Request: group must be 1 to 5 characters")
        );
    }
}
