//! The extension's API functions the proxy calls, one line each: the SQL function and where
//! each of its arguments comes from in the request (extension/CONTRACT.md). The router names
//! one of these per endpoint; the handler fills its arguments and the batcher runs the
//! [`Statement`]. Every call uses named arguments (`=>`) through a cached prepared statement,
//! so a signature drift in the extension fails loudly instead of shifting values.

use std::error::Error;
use std::net::IpAddr;
use std::sync::OnceLock;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// Where an argument's value comes from. Every text must be one Postgres can hold: UTF-8
/// without NUL (U+0000 cannot be stored in `text`; the database would answer 22021, a 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `x-token` header (well formed; otherwise the request is a 401 before any call).
    Token,
    /// A path segment counted from the end (0 is the last), percent-decoded.
    Segment(usize, NotText),
    /// A query parameter, decoded; NULL when absent.
    Query(&'static str),
    /// The whole body; the text is the 400 answered when it is not UTF-8 without NUL.
    Body(&'static str),
    /// Supplied by the handler itself: the client's address, a verified payload, a refusal.
    Given,
}

/// What a path segment that is not text (not UTF-8, or holding NUL) becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotText {
    /// A charged 400 with this text.
    Refuse(&'static str),
    /// The empty string: an id that names nothing, which the function answers (404).
    Empty,
}

/// One API function: its SQL name and its arguments before the common `http_method` and
/// `http_path`, which every call gets last.
#[derive(Debug)]
pub struct Function {
    pub name: &'static str,
    pub args: &'static [(&'static str, Source)],
    sql: OnceLock<String>,
}

impl PartialEq for Function {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Function {
    pub const fn new(name: &'static str, args: &'static [(&'static str, Source)]) -> Self {
        Function {
            name,
            args,
            sql: OnceLock::new(),
        }
    }

    /// `select <outcome columns> from echovalue.<name>(<arg> => $1, …, http_method => $n-1,
    /// http_path => $n)`, made once; a call with a token also gets `wallet =>
    /// echovalue.token_wallet($k)`, the wallet its token names (extension/CONTRACT.md): a
    /// constant once the token is bound, which is what Citus routes the call by.
    pub fn sql(&'static self) -> &'static str {
        self.sql.get_or_init(|| {
            let names = self.args.iter().map(|(name, _)| *name);
            let mut named: Vec<String> = names
                .chain(["http_method", "http_path"])
                .enumerate()
                .map(|(i, name)| format!("{name} => ${}", i + 1))
                .collect();
            if let Some(i) = self.args.iter().position(|(_, s)| *s == Source::Token) {
                named.push(format!("wallet => echovalue.token_wallet(${})", i + 1));
            }
            format!(
                "select status, body, content_type, cost, balance, headers from echovalue.{}({})",
                self.name,
                named.join(", ")
            )
        })
    }

    /// The statement for these argument values (in [`Function::args`] order), the request's
    /// method and path last. `token` keys the call for batching (`None`: it runs alone).
    pub fn statement(
        &'static self,
        token: Option<&str>,
        mut args: Vec<Arg>,
        method: &str,
        path: &str,
    ) -> Statement {
        args.extend([Arg::from(method), Arg::from(path)]);
        Statement {
            sql: self.sql(),
            args,
            token: token.map(str::to_owned),
        }
    }
}

use Source::{Body, Given, Query, Segment, Token};

const NAME_NOT_TEXT: &str =
    "Bad Request: group and key must be UTF-8 text without NUL characters after percent-decoding";

// The endpoints that follow the general shape: a token, then arguments from the path, query
// and body. Adding one is a line here, its route line in routes.rs, and its SQL function.
pub static WALLET_GET: Function = Function::new("wallet_get", &[("token", Token)]);
pub static RECHARGE_LINK: Function = Function::new(
    "recharge_link",
    &[("token", Token), ("amount", Query("amount"))],
);
pub static LOGS_GET: Function = Function::new(
    "logs_get",
    &[("token", Token), ("n", Query("n")), ("type", Query("type"))],
);
pub static TOKEN_KEY_CREATE: Function = Function::new(
    "token_key_create",
    &[
        ("token", Token),
        ("spec", Body("Bad Request: body must be JSON")),
    ],
);
pub static TOKEN_KEY_LIST: Function = Function::new("token_key_list", &[("token", Token)]);
pub static TOKEN_KEY_REVOKE: Function = Function::new(
    "token_key_revoke",
    &[("token", Token), ("key_id", Segment(0, NotText::Empty))],
);
pub static KV_SET: Function = Function::new(
    "kv_set",
    &[
        ("token", Token),
        ("grp", Segment(1, NotText::Refuse(NAME_NOT_TEXT))),
        ("key", Segment(0, NotText::Refuse(NAME_NOT_TEXT))),
        (
            "value",
            Body("Bad Request: value must be UTF-8 text without NUL characters"),
        ),
        ("ttl", Query("ttl")),
    ],
);
pub static KV_GET: Function = Function::new(
    "kv_get",
    &[
        ("token", Token),
        ("grp", Segment(1, NotText::Refuse(NAME_NOT_TEXT))),
        ("key", Segment(0, NotText::Refuse(NAME_NOT_TEXT))),
    ],
);
pub static KV_DELETE: Function = Function::new(
    "kv_delete",
    &[
        ("token", Token),
        ("grp", Segment(1, NotText::Refuse(NAME_NOT_TEXT))),
        ("key", Segment(0, NotText::Refuse(NAME_NOT_TEXT))),
    ],
);
pub static KV_LIST: Function = Function::new(
    "kv_list",
    &[
        ("token", Token),
        ("grp", Segment(0, NotText::Refuse(NAME_NOT_TEXT))),
        ("prefix", Query("prefix")),
        ("cursor", Query("cursor")),
        ("page_size", Query("limit")),
    ],
);
pub static KV_GROUPS: Function = Function::new(
    "kv_groups",
    &[
        ("token", Token),
        ("prefix", Query("prefix")),
        ("cursor", Query("cursor")),
        ("page_size", Query("limit")),
    ],
);
pub static WEBHOOK_SET: Function = Function::new(
    "webhook_set",
    &[
        ("token", Token),
        ("body", Body("Bad Request: body must be a JSON object")),
    ],
);
pub static WEBHOOK_GET: Function = Function::new("webhook_get", &[("token", Token)]);
pub static WEBHOOK_DELETE: Function = Function::new("webhook_delete", &[("token", Token)]);
// A webhookId that is not text names no webhook: the function answers (400 or 404).
pub static WEBHOOK_SHOW: Function = Function::new(
    "webhook_show",
    &[("token", Token), ("webhook_id", Segment(0, NotText::Empty))],
);
pub static WEBHOOK_PUT: Function = Function::new(
    "webhook_put",
    &[
        ("token", Token),
        ("webhook_id", Segment(0, NotText::Empty)),
        ("body", Body("Bad Request: body must be a JSON object")),
    ],
);
pub static WEBHOOK_PATCH: Function = Function::new(
    "webhook_patch",
    &[
        ("token", Token),
        ("webhook_id", Segment(0, NotText::Empty)),
        ("body", Body("Bad Request: body must be a JSON object")),
    ],
);
pub static WEBHOOK_REMOVE: Function = Function::new(
    "webhook_remove",
    &[("token", Token), ("webhook_id", Segment(0, NotText::Empty))],
);
/// Its outcome names the worker's answer to wait for (see [`crate::awaits`]).
pub static WEBHOOK_TEST: Function = Function::new(
    "webhook_test",
    &[("token", Token), ("webhook_id", Segment(1, NotText::Empty))],
);

pub static SETTINGS_GET: Function = Function::new("settings_get", &[("token", Token)]);
pub static SETTINGS_PUT: Function = Function::new(
    "settings_put",
    &[
        ("token", Token),
        ("body", Body("Bad Request: body must be a JSON object")),
    ],
);

// The calls the handler makes itself (their arguments are not simply taken from the request).
/// `POST /token` (a form), with the client's address.
pub static TOKEN_NEW: Function = Function::new("token_new", &[("client_addr", Given)]);
/// A Stripe webhook body whose signature the proxy verified.
pub static STRIPE_EVENT_RECORD: Function =
    Function::new("stripe_event_record", &[("payload", Given)]);
/// A request the proxy refused itself after seeing a well-formed token; the extension decides
/// which operation's price it pays from the route pattern and the method.
pub static REQUEST_REFUSE: Function = Function::new(
    "request_refuse",
    &[
        ("token", Token),
        ("route", Given),
        ("status", Given),
        ("error", Given),
    ],
);

/// One bound parameter, owned so a statement can wait in a queue after its request's borrows
/// end. It encodes exactly as the value it holds would (type checks included).
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(Option<String>),
    Int(i32),
    Inet(IpAddr),
}

impl ToSql for Arg {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        // The inner value's own check, so a variant never encodes as another variant's type.
        match self {
            Arg::Text(v) => v.to_sql_checked(ty, out),
            Arg::Int(v) => v.to_sql_checked(ty, out),
            Arg::Inet(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <Option<String> as ToSql>::accepts(ty)
            || <i32 as ToSql>::accepts(ty)
            || <IpAddr as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}

/// One API function call ready to run: its statement text, owned parameters, and the token
/// whose calls may share a transaction (see [`crate::batch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: &'static str,
    pub args: Vec<Arg>,
    pub token: Option<String>,
}

impl Statement {
    /// The parameters as `tokio-postgres` takes them.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
    }
}

/// A request's text as Postgres can hold it: UTF-8 without NUL, else `None`.
pub fn sql_text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_every_argument() {
        assert_eq!(
            KV_SET.sql(),
            "select status, body, content_type, cost, balance, headers from echovalue.kv_set(token => $1, grp => $2, key => $3, value => $4, ttl => $5, http_method => $6, http_path => $7, wallet => echovalue.token_wallet($1))"
        );
        let s = KV_SET.statement(
            Some("t"),
            vec![
                Arg::from("t"),
                Arg::from("g"),
                Arg::from("k"),
                Arg::from("v"),
                Arg::from(Some("5")),
            ],
            "POST",
            "/kv/g/k?ttl=5",
        );
        assert_eq!(s.args.len(), 7);
        assert_eq!(s.args[6], Arg::Text(Some("/kv/g/k?ttl=5".into())));
        assert_eq!(s.token.as_deref(), Some("t"));
        for f in [
            &WALLET_GET,
            &RECHARGE_LINK,
            &LOGS_GET,
            &TOKEN_KEY_CREATE,
            &TOKEN_KEY_LIST,
            &TOKEN_KEY_REVOKE,
            &KV_SET,
            &KV_GET,
            &KV_DELETE,
            &KV_LIST,
            &KV_GROUPS,
            &WEBHOOK_SET,
            &WEBHOOK_GET,
            &WEBHOOK_DELETE,
            &WEBHOOK_SHOW,
            &WEBHOOK_PUT,
            &WEBHOOK_PATCH,
            &WEBHOOK_REMOVE,
            &WEBHOOK_TEST,
            &TOKEN_NEW,
            &STRIPE_EVENT_RECORD,
            &REQUEST_REFUSE,
        ] {
            let sql = f.sql();
            let routed = f.args.iter().any(|(_, s)| *s == Token);
            assert_eq!(
                sql.matches('$').count(),
                f.args.len() + 2 + usize::from(routed),
                "{sql}"
            );
            assert_eq!(
                sql.matches("=>").count(),
                f.args.len() + 2 + usize::from(routed),
                "{sql}"
            );
            assert_eq!(
                sql.contains("wallet => echovalue.token_wallet($1)"),
                routed,
                "{sql}"
            );
            assert!(sql.contains(&format!("echovalue.{}(", f.name)), "{sql}");
        }
    }

    #[test]
    fn texts_sql_can_hold() {
        assert_eq!(sql_text(b"v \xc3\xa9"), Some("v é"));
        assert_eq!(sql_text(b""), Some(""));
        assert_eq!(sql_text(b"a\0b"), None);
        assert_eq!(sql_text(b"\xff"), None);
    }
}
