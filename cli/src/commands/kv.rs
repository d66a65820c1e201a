//! `kv set|get|delete|list|groups`.

use std::ffi::OsString;

use reqwest::Method;
use serde_json::Value;

use super::{path, Ctx};
use crate::args::{KvCommand, Page};
use crate::client::{Failure, Request};
use crate::encode;
use crate::json::cell;
use crate::output::{line, out, report, Render};

pub fn run(ctx: &Ctx, command: KvCommand) -> Result<u8, Failure> {
    match command {
        KvCommand::Set {
            group,
            key,
            value,
            ttl,
        } => {
            let path = path(&["kv", &group, &key])?;
            let path = format!("{path}{}", encode::query(&[("ttl", ttl.as_deref())]));
            let value = match value {
                Some(v) if v != "-" => os_bytes(v),
                _ => crate::body::stdin()?,
            };
            let req = Request::new(Method::POST, path).body(value, "application/octet-stream");
            ctx.run(req, Render::Auto)
        }
        KvCommand::Get { group, key } => {
            ctx.run(Request::get(path(&["kv", &group, &key])?), Render::Exact)
        }
        KvCommand::Delete { group, key } => ctx.run(
            Request::new(Method::DELETE, path(&["kv", &group, &key])?),
            Render::Auto,
        ),
        KvCommand::List { group, page } => {
            let listing = Listing {
                path: path(&["kv", &group])?,
                items: "keys",
                command: format!("kv list {}", shell_word(&group)),
                line: |k| format!("{}\t{}", cell(k.get("key")), cell(k.get("expires"))),
            };
            listing.run(ctx, &page)
        }
        KvCommand::Groups { page } => {
            let listing = Listing {
                path: "/kv".into(),
                items: "groups",
                command: "kv groups".into(),
                line: |g| format!("{}\t{}", cell(g.get("group")), cell(g.get("keys"))),
            };
            listing.run(ctx, &page)
        }
    }
}

/// The argument's bytes as given (on Unix any bytes; the server refuses what is not UTF-8).
fn os_bytes(v: OsString) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        v.into_vec()
    }
    #[cfg(not(unix))]
    {
        v.to_string_lossy().into_owned().into_bytes()
    }
}

/// A paged listing: `{"<items>":[…],"cursor":…}` pages of `path`.
struct Listing {
    path: String,
    items: &'static str,
    /// The subcommand that asks for the next page, for the `next:` hint.
    command: String,
    line: fn(&Value) -> String,
}

impl Listing {
    /// One page, or with `--all` every page from the cursor on: lines as they come (with
    /// `--json`: one body, or with `--all` the items of all pages in one body).
    fn run(&self, ctx: &Ctx, page: &Page) -> Result<u8, Failure> {
        let mut cursor = page.cursor.clone();
        let mut all = Vec::new();
        loop {
            let query = encode::query(&[
                ("prefix", page.prefix.as_deref()),
                ("cursor", cursor.as_deref()),
                ("limit", page.limit.as_deref()),
            ]);
            let resp = ctx.send(&Request::get(format!("{}{query}", self.path)))?;
            if !resp.status.is_success() {
                return Ok(report(&resp, ctx.client.has_token()));
            }
            let body = resp.value();
            let items = body.as_ref().and_then(|v| v.get(self.items)?.as_array());
            let Some(items) = items else {
                // not a page: show whatever it is
                return Ok(ctx.finish(&resp, Render::Auto));
            };
            let next = body
                .as_ref()
                .and_then(|v| v.get("cursor")?.as_str())
                .map(str::to_owned);
            if ctx.json && !page.all {
                return Ok(ctx.finish(&resp, Render::Auto));
            }
            if ctx.json {
                all.extend(items.iter().cloned());
            } else {
                items.iter().for_each(|item| line(&(self.line)(item)));
            }
            match next {
                None => break,
                Some(next) if !page.all => {
                    eprintln!("next: {}", self.next_command(&next, page));
                    break;
                }
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(Failure(format!("the server gave cursor {next} twice")));
                }
                Some(next) => cursor = Some(next),
            }
        }
        if ctx.json {
            let mut o = serde_json::Map::new();
            o.insert(self.items.into(), Value::Array(all));
            o.insert("cursor".into(), Value::Null);
            out(format!("{}\n", Value::Object(o)).as_bytes());
        }
        Ok(0)
    }

    fn next_command(&self, cursor: &str, page: &Page) -> String {
        let mut s = format!("echovalue {} --cursor {}", self.command, shell_word(cursor));
        if let Some(p) = &page.prefix {
            s.push_str(&format!(" --prefix {}", shell_word(p)));
        }
        if let Some(l) = &page.limit {
            s.push_str(&format!(" --limit {}", shell_word(l)));
        }
        s
    }
}

/// A word a POSIX shell reads back as `s`: bare when safe, else single-quoted.
fn shell_word(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("default"), "default");
        assert_eq!(shell_word("aGVsbG8=_-"), "aGVsbG8=_-");
        assert_eq!(shell_word("my group"), "'my group'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn the_next_hint_repeats_prefix_and_limit() {
        let l = Listing {
            path: "/kv/g".into(),
            items: "keys",
            command: "kv list g".into(),
            line: |_| String::new(),
        };
        let page = Page {
            prefix: Some("a b".into()),
            limit: Some("2".into()),
            ..Default::default()
        };
        assert_eq!(
            l.next_command("c1", &page),
            "echovalue kv list g --cursor c1 --prefix 'a b' --limit 2"
        );
        assert_eq!(
            l.next_command("c1", &Page::default()),
            "echovalue kv list g --cursor c1"
        );
    }
}
