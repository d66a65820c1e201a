//! A database URL or libpq connection string with its password hidden, for logs and
//! `--print-config`. It reads the string the way tokio-postgres does (the parser that opens
//! the connections), so what that parser would take as the password is what gets hidden;
//! where the string cannot be read that way, the unreadable rest is hidden too.

use percent_encoding::percent_decode_str;

const HIDDEN: &str = "***";

/// `conninfo` with every password replaced by `***`: the `user:password@` part and the
/// `password` query parameter of a `postgres://`/`postgresql://` URL, or the value of each
/// `password` keyword of a key=value string (quoted or not). Everything else is kept as is.
pub fn redact_password(conninfo: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = conninfo.strip_prefix(scheme) {
            return format!("{scheme}{}", redact_url(rest));
        }
    }
    redact_keywords(conninfo)
}

/// The part of a URL after the scheme.
fn redact_url(rest: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    // tokio-postgres ends the credentials at the first '@'; an '@' left unencoded in a
    // password moves the end to the last '@' before the host's '/' or '?'.
    let after = match rest.find('@') {
        Some(first) => {
            let host_end = rest[first..]
                .find(['/', '?'])
                .map_or(rest.len(), |i| first + i);
            let at = rest[..host_end].rfind('@').unwrap_or(first);
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };
    match after.split_once('?') {
        Some((base, query)) => {
            out.push_str(base);
            out.push('?');
            let params: Vec<String> = query.split('&').map(redact_param).collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(after),
    }
    out
}

/// One `key=value` of a URL query; the key is compared percent-decoded, as it is read.
fn redact_param(param: &str) -> String {
    match param.split_once('=') {
        Some((key, _)) if is_password(&percent_decode_str(key).decode_utf8_lossy()) => {
            format!("{key}={HIDDEN}")
        }
        _ => param.to_owned(),
    }
}

/// A libpq key=value string: `keyword [ws] = [ws] value`, the value either `'quoted'` or
/// up to the next whitespace, `\` escaping the next character in both.
fn redact_keywords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let (ws, tail) = split_ws(rest);
        out.push_str(ws);
        if tail.is_empty() {
            return out;
        }
        let keyword_end = tail
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(tail.len());
        let (keyword, tail) = tail.split_at(keyword_end);
        let (ws_before, tail) = split_ws(tail);
        let Some(tail) = tail.strip_prefix('=').filter(|_| !keyword.is_empty()) else {
            // Not a keyword=value pair: tokio-postgres stops here, and so does what we show.
            out.push_str(HIDDEN);
            return out;
        };
        let (ws_after, tail) = split_ws(tail);
        out.push_str(keyword);
        out.push_str(ws_before);
        out.push('=');
        out.push_str(ws_after);
        let Some(len) = value_len(tail) else {
            // Empty or an unterminated quote: the rest may be a password.
            out.push_str(HIDDEN);
            return out;
        };
        let (value, tail) = tail.split_at(len);
        out.push_str(if is_password(keyword) { HIDDEN } else { value });
        rest = tail;
    }
}

fn split_ws(s: &str) -> (&str, &str) {
    s.split_at(s.len() - s.trim_start().len())
}

/// Bytes of the value at the start of `s` (quotes included), or None when there is none or
/// its quote is not closed.
fn value_len(s: &str) -> Option<usize> {
    let quoted = s.starts_with('\'');
    let mut chars = s.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return Some(i + 1),
            c if c.is_whitespace() && !quoted => return Some(i),
            _ => {}
        }
    }
    (!quoted && !s.is_empty()).then_some(s.len())
}

/// libpq keywords are lowercase; any case is hidden anyway, hiding too much is harmless.
fn is_password(keyword: &str) -> bool {
    keyword.eq_ignore_ascii_case("password")
}

#[cfg(test)]
mod tests {
    use super::redact_password as r;

    #[test]
    fn url_password_is_hidden() {
        assert_eq!(
            r("postgresql://u:secret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(
            r("postgres://u:p%40ss@db:5432/x?sslmode=disable"),
            "postgres://u:***@db:5432/x?sslmode=disable"
        );
        assert_eq!(r("postgres://u:@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            r("postgresql://u:pw@h1:5432,h2:5433/db"),
            "postgresql://u:***@h1:5432,h2:5433/db"
        );
    }

    #[test]
    fn url_without_password_is_unchanged() {
        for url in [
            "postgresql://u@h/db",
            "postgres://h/db",
            "postgresql://",
            "postgresql:///db?host=/var/run/postgresql&user=u",
            "postgresql://%2Fvar%2Frun%2Fpostgresql/db",
        ] {
            assert_eq!(r(url), url);
        }
    }

    #[test]
    fn url_query_password_is_hidden() {
        assert_eq!(
            r("postgresql://db/x?user=u&password=p"),
            "postgresql://db/x?user=u&password=***"
        );
        assert_eq!(
            r("postgresql://db/x?password=p&sslmode=disable&password=q"),
            "postgresql://db/x?password=***&sslmode=disable&password=***"
        );
        // The key is read percent-decoded, so an encoded key is hidden as well.
        assert_eq!(
            r("postgresql://db/x?pass%77ord=p%26q"),
            "postgresql://db/x?pass%77ord=***"
        );
        assert_eq!(
            r("postgresql://u:a@h/x?password=b"),
            "postgresql://u:***@h/x?password=***"
        );
    }

    #[test]
    fn url_password_with_unencoded_specials_is_hidden() {
        // An '@' in the password: everything up to the last '@' of the authority.
        assert_eq!(r("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        // A '/' or '?' before the '@': tokio-postgres still reads up to the first '@'.
        assert_eq!(r("postgres://u:pa/ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(r("postgres://u:pa?ss@h/db"), "postgres://u:***@h/db");
        // Read as tokio-postgres does: password `a`, host `b`, database `c@h/db`.
        assert_eq!(
            r("postgresql://u:a@b/c@h/db?password=x@y"),
            "postgresql://u:***@b/c@h/db?password=***"
        );
    }

    #[test]
    fn keyword_password_is_hidden() {
        assert_eq!(
            r("host=/tmp user=u password=secret dbname=d"),
            "host=/tmp user=u password=*** dbname=d"
        );
        assert_eq!(r("password=secret"), "password=***");
        // Spaces around '=' are allowed and kept.
        assert_eq!(
            r("host=/tmp password = secret dbname=d"),
            "host=/tmp password = *** dbname=d"
        );
        assert_eq!(r("PASSWORD=secret"), "PASSWORD=***");
    }

    #[test]
    fn quoted_and_escaped_keyword_values_are_hidden_whole() {
        assert_eq!(
            r("host=/tmp password='s3 cr3t' dbname=d"),
            "host=/tmp password=*** dbname=d"
        );
        assert_eq!(
            r(r"password='it\'s a secret' user=u"),
            "password=*** user=u"
        );
        assert_eq!(r(r"password=two\ words user=u"), "password=*** user=u");
        // Other quoted values are kept as written.
        assert_eq!(
            r("options='-c search_path=x' password=p"),
            "options='-c search_path=x' password=***"
        );
    }

    #[test]
    fn keyword_string_without_password_is_unchanged() {
        for s in [
            "host=/var/run/postgresql user=echovalue_proxy dbname=postgres",
            "host=/tmp  port=5432\tdbname=d",
            "",
            "application_name='a b'",
            // A "://" inside a value does not make it a URL.
            "host=h options='-c x=http://y' user=u",
        ] {
            assert_eq!(r(s), s);
        }
        assert_eq!(
            r("host=h options='-c x=http://y:z@w' password=p"),
            "host=h options='-c x=http://y:z@w' password=***"
        );
    }

    #[test]
    fn what_tokio_postgres_reads_as_the_password_is_never_shown() {
        for s in [
            "postgresql://u:S3CRET@h/db",
            "postgresql://u:S3CRET%2F%40x@h/db",
            "postgresql://u:S3/CRET@h/db",
            "postgresql://h/db?user=u&password=S3CRET",
            "postgresql://h/db?pass%77ord=S3CRET",
            "host=/tmp password=S3CRET",
            "host=/tmp password = 'S3CRET with spaces'",
            r"host=/tmp password=S3CRET\ x user=u",
            r"password='S3CRET \'quoted\'' user=u",
        ] {
            let pg: tokio_postgres::Config = s.parse().unwrap();
            let password = String::from_utf8_lossy(pg.get_password().unwrap_or_default());
            assert!(!password.is_empty(), "{s}");
            let shown = r(s);
            assert!(!shown.contains(&*password), "{s} → {shown}");
        }
    }

    #[test]
    fn unreadable_rest_is_hidden() {
        // tokio-postgres would refuse each of these; none of them may show the secret.
        for (s, shown) in [
            ("host=/tmp password='secret", "host=/tmp password=***"),
            ("host=/tmp password secret", "host=/tmp ***"),
            ("host=/tmp =secret", "host=/tmp ***"),
            ("host=/tmp password=", "host=/tmp password=***"),
            ("options='unterminated password=secret", "options=***"),
            ("POSTGRES://u:secret@h/db", "***"),
        ] {
            assert_eq!(r(s), shown, "{s}");
        }
        // After '=' the value may follow whitespace, so here the password is "host=x".
        assert_eq!(r("password= host=x"), "password= ***");
    }
}
