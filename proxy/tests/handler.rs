//! The handler's answers that need no database: body limits, token format, routing, CORS and
//! metrics, with a pool whose database cannot be reached.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use echovalue_proxy::handler::{handle, State};
use echovalue_proxy::{db, Config};
use http::Request;
use http_body_util::BodyExt;

#[tokio::test]
async fn body_limit_and_bad_requests_without_database() {
    // These paths are decided before any SQL call, so an unreachable database is fine.
    let config = Config {
        database_url: "host=/nonexistent port=1 user=x dbname=x".into(),
        db_timeout_secs: 1,
        max_body_bytes: 8,
        ..Config::default()
    };
    let state = Arc::new(State::new(db::pool(&config).unwrap(), config));
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let send = |m: &str, p: &str, body: &'static str, token: Option<&str>| {
        let mut b = Request::builder().method(m).uri(p);
        if m == "PUT" {
            b = b.header("content-length", body.len().to_string());
        }
        if let Some(t) = token {
            b = b.header("x-token", t);
        }
        let req = b
            .body(http_body_util::Full::new(Bytes::from_static(
                body.as_bytes(),
            )))
            .unwrap();
        handle(state.clone(), peer, req)
    };
    // Declared too large: refused before routing or token checks.
    let r = send("PUT", "/kv/g/k", "123456789", None).await.unwrap();
    assert_eq!(r.status(), 413);
    // Not declared: the limited reader stops at the limit.
    let r = send("POST", "/token", "token=new&x=1", None).await.unwrap();
    assert_eq!(r.status(), 413);
    let r = send("GET", "/kv/g/k", "", None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = send("GET", "/kv/g/k", "", Some("ev_tok_sk_live_bad"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = send("POST", "/token", "token=x", None).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = send("PUT", "/kv/g/k", "", None).await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST, DELETE, OPTIONS");
    let r = send("GET", "/nope", "", None).await.unwrap();
    assert_eq!(r.status(), 404);
    let r = send("OPTIONS", "/token", "", None).await.unwrap();
    assert_eq!(r.status(), 204);
    let r = send("GET", "/healthz", "", None).await.unwrap();
    assert_eq!(r.status(), 503);
    let r = send("GET", "/metrics", "", None).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains(r#"route="/kv/{group}/{key}",method="PUT",status="405"} 1"#),
        "{text}"
    );
}
