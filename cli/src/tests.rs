//! The grammar: clap's own consistency check, where options may stand, and (in the one test
//! that touches the process environment) the flag before the environment.

use clap::{CommandFactory, Parser};

use crate::args::{parse_header, Cli, Command, KvCommand, WebhookCommand};
use crate::config::{resolve, FileConfig};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("echovalue").chain(args.iter().copied()))
}

#[test]
fn the_grammar_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let cli = parse(&["kv", "get", "g", "k", "--json", "-v", "--token", "t1"]).unwrap();
    assert!(cli.global.json && cli.global.verbose);
    assert_eq!(cli.global.token.as_deref(), Some("t1"));
    let cli = parse(&["--json", "--config", "/c.toml", "balance"]).unwrap();
    assert!(cli.global.json);
    assert_eq!(cli.global.config.as_deref(), Some("/c.toml".as_ref()));
}

#[test]
fn webhook_url_is_the_webhooks_and_the_base_url_comes_first() {
    let cli = parse(&[
        "--url",
        "http://base:1",
        "webhook",
        "set",
        "--url",
        "https://example.com/hook",
        "--header",
        "Authorization: Bearer a:b",
    ])
    .unwrap();
    assert_eq!(cli.url.as_deref(), Some("http://base:1"));
    match cli.command {
        Command::Webhook(WebhookCommand::Set { fields, .. }) => {
            assert_eq!(fields.url.as_deref(), Some("https://example.com/hook"));
            assert_eq!(
                fields.headers,
                [("Authorization".to_owned(), "Bearer a:b".to_owned())]
            );
        }
        other => panic!("{other:?}"),
    }
    let err = parse(&["webhook", "set", "--url", "https://x", "--body", "{}"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn values_may_start_with_a_hyphen_and_are_taken_as_text() {
    let cli = parse(&["kv", "set", "g", "k", "-5", "--ttl", "abc"]).unwrap();
    match cli.command {
        Command::Kv(KvCommand::Set { value, ttl, .. }) => {
            assert_eq!(value.as_deref(), Some("-5".as_ref()));
            assert_eq!(ttl.as_deref(), Some("abc"), "the server judges a ttl");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn usage_errors_are_clap_errors() {
    assert!(parse(&["kv"]).is_err());
    assert!(parse(&["nope"]).is_err());
    assert!(
        parse(&["token", "new", "--force"]).is_err(),
        "--force needs --save"
    );
    assert!(parse(&["webhook", "set", "--header", "no colon"]).is_err());
    assert_eq!(parse(&["kv"]).unwrap_err().exit_code(), 2);
}

#[test]
fn headers_split_at_the_first_colon() {
    assert_eq!(
        parse_header("X-A:  b: c "),
        Ok(("X-A".to_owned(), "b: c".to_owned()))
    );
    assert!(parse_header(": v").is_err());
    assert!(parse_header("X-A").is_err());
}

/// The only test that sets ECHOVALUE_URL / ECHOVALUE_TOKEN; no other test reads them.
#[test]
fn the_flag_beats_the_environment_which_beats_the_file() {
    let file = FileConfig {
        url: Some("http://file:3".into()),
        token: Some("file-token".into()),
    };
    std::env::set_var("ECHOVALUE_URL", "http://env:2");
    std::env::set_var("ECHOVALUE_TOKEN", "env-token");
    let from_env = parse(&["balance"]).unwrap();
    let from_flags =
        parse(&["--url", "http://flag:1", "balance", "--token", "flag-token"]).unwrap();
    std::env::remove_var("ECHOVALUE_URL");
    std::env::remove_var("ECHOVALUE_TOKEN");
    let from_file = parse(&["balance"]).unwrap();

    let s = resolve(from_flags.url, from_flags.global.token, &file);
    assert_eq!(
        (s.url.as_str(), s.token.as_deref()),
        ("http://flag:1", Some("flag-token"))
    );
    let s = resolve(from_env.url, from_env.global.token, &file);
    assert_eq!(
        (s.url.as_str(), s.token.as_deref()),
        ("http://env:2", Some("env-token"))
    );
    let s = resolve(from_file.url, from_file.global.token, &file);
    assert_eq!(
        (s.url.as_str(), s.token.as_deref()),
        ("http://file:3", Some("file-token"))
    );

    // --help never shows the token's value from the environment
    std::env::set_var("ECHOVALUE_TOKEN", "env-secret");
    let help = Cli::command().render_long_help().to_string();
    std::env::remove_var("ECHOVALUE_TOKEN");
    assert!(!help.contains("env-secret"), "{help}");
    assert!(help.contains("ECHOVALUE_TOKEN"));
}
