//! `POST /token`, `GET /token`, 401s and the token rate limit.

use anyhow::Result;
use echovalue_tests::token::{self, random_client_addr};
use echovalue_tests::{setup, Admin, TestProxy};
use reqwest::Method;

fn trusted(c: &mut echovalue_proxy::Config) {
    c.trust_forwarded = true;
}

#[tokio::test]
async fn post_token_new_returns_a_well_formed_token_with_100_credits() -> Result<()> {
    let proxy = TestProxy::start_with(trusted).await?;
    let r = proxy.api().token_new_from(&random_client_addr()).await?;
    assert_eq!(r.status, 200, "body {:?}", r.text());
    let tok = r.text();
    assert!(
        token::is_well_formed(&tok),
        "not a well-formed token: {tok:?}"
    );
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "content-type {:?}",
        r.header("content-type")
    );
    let b = proxy.api().get("/token", Some(&tok)).await?;
    assert_eq!(b.status, 200);
    assert_eq!(
        b.json()?["wallet"],
        99,
        "100 credits minus the balance check"
    );
    Ok(())
}

#[tokio::test]
async fn post_token_with_other_bodies_is_400() -> Result<()> {
    let proxy = TestProxy::start_with(trusted).await?;
    for body in ["", "token=old", "token=", "tok=new", "token=NEW", "new"] {
        let r = proxy
            .api()
            .send(
                Method::POST,
                "/token",
                None,
                Some(body.as_bytes().to_vec()),
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("x-forwarded-for", &random_client_addr()),
                ],
            )
            .await?;
        assert_eq!(r.status, 400, "body {body:?} -> {:?}", r.text());
        assert!(r.text().starts_with("Bad Request"), "{:?}", r.text());
    }
    Ok(())
}

#[tokio::test]
async fn get_token_returns_balance_created_and_hash() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    let r = proxy.api().get("/token", w.t()).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    let j = r.json()?;
    assert_eq!(j["wallet"], 99);
    assert_eq!(j["wallet"].as_i64(), r.balance(), "wallet = x-balance");
    assert_eq!(r.cost(), Some(1));
    assert_eq!(j["hash"], token::sha256_hex(&w.token));
    assert!(
        !r.text().contains(&w.token),
        "the balance never shows the token"
    );
    let created = j["created"].as_str().unwrap_or_default();
    assert!(
        created.ends_with('Z'),
        "created not in UTC with Z: {created:?}"
    );
    assert!(
        created.contains('.'),
        "created without fractional seconds: {created:?}"
    );
    let t = chrono::DateTime::parse_from_rfc3339(created)?;
    let age = chrono::Utc::now().signed_duration_since(t);
    assert!(age.num_seconds().abs() < 60, "created {created} is not now");
    assert_eq!(admin.balance(&w).await?, 99);
    Ok(())
}

#[tokio::test]
async fn bad_tokens_get_401_without_cost() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("malformed", Some("abc".into())),
        ("bad checksum", Some(token::with_bad_checksum(&w.token))),
        ("unknown", Some(token::random_unknown())),
        ("uppercase", Some(w.token.to_uppercase())),
    ];
    for (what, tok) in &cases {
        for path in [
            "/token",
            "/kv/g/k",
            "/token/logs",
            "/recharge?amount=1",
            "/a/b",
        ] {
            let r = proxy.api().get(path, tok.as_deref()).await?;
            assert_eq!(r.status, 401, "{what} token on {path}: {:?}", r.text());
            assert_eq!(r.text(), "Unauthorized", "{what} on {path}");
            assert_eq!(r.header("x-cost"), None, "{what} on {path}");
            assert_eq!(r.header("x-balance"), None, "{what} on {path}");
        }
    }
    assert_eq!(
        admin.balance(&w).await?,
        100,
        "nothing charged to the real wallet"
    );
    Ok(())
}

#[tokio::test]
async fn token_rate_limit_per_forwarded_address() -> Result<()> {
    let proxy = TestProxy::start_with(trusted).await?;
    let addr = random_client_addr();
    let first = proxy.api().token_new_from(&addr).await?;
    assert_eq!(first.status, 200, "{:?}", first.text());
    let second = proxy.api().token_new_from(&addr).await?;
    assert_eq!(second.status, 429, "{:?}", second.text());
    assert_eq!(second.text(), "Too Many Requests");
    let retry: u64 = second
        .header("retry-after")
        .unwrap_or("")
        .parse()
        .map_err(|_| anyhow::anyhow!("retry-after {:?}", second.header("retry-after")))?;
    assert!((1..=10).contains(&retry), "retry-after {retry}");
    let other = proxy.api().token_new_from(&random_client_addr()).await?;
    assert_eq!(other.status, 200, "another address is not limited");
    Ok(())
}

/// `POST /token` with this `X-Forwarded-For`.
async fn token_new_forwarded(proxy: &TestProxy, forwarded: &str) -> Result<u16> {
    let r = proxy
        .api()
        .send(
            Method::POST,
            "/token",
            None,
            Some(b"token=new".to_vec()),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", forwarded),
            ],
        )
        .await?;
    Ok(r.status)
}

#[tokio::test]
async fn a_spoofed_forwarded_entry_or_another_address_of_a_64_is_the_same_client() -> Result<()> {
    // One trusted proxy appends the address it saw; what the client wrote stays on the left.
    let proxy = TestProxy::start_with(|c| c.trusted_proxies = "1".parse().unwrap()).await?;
    let real = random_client_addr();
    assert_eq!(
        token_new_forwarded(&proxy, &format!("1.1.1.1, {real}")).await?,
        200
    );
    assert_eq!(
        token_new_forwarded(&proxy, &format!("2.2.2.2, {real}")).await?,
        429
    );
    // An IPv6 client holds a /64: a new address in it does not make a new client.
    let net = format!(
        "2001:db8:{:x}:{:x}",
        rand::random::<u16>(),
        rand::random::<u16>()
    );
    assert_eq!(
        token_new_forwarded(&proxy, &format!("{net}::1")).await?,
        200
    );
    assert_eq!(
        token_new_forwarded(&proxy, &format!("{net}:ffff::2")).await?,
        429
    );
    // Trusted by network: the first address from the right outside them is the client.
    let proxy =
        TestProxy::start_with(|c| c.trusted_proxies = "127.0.0.0/8, 10.0.0.0/8".parse().unwrap())
            .await?;
    let real = format!("192.0.2.{}", rand::random::<u8>() % 250 + 1);
    let hop = random_client_addr();
    assert_eq!(
        token_new_forwarded(&proxy, &format!("3.3.3.3, {real}, {hop}")).await?,
        200
    );
    assert_eq!(
        token_new_forwarded(&proxy, &format!("4.4.4.4, {real}")).await?,
        429
    );
    Ok(())
}

#[tokio::test]
async fn token_rate_limit_holds_across_proxies() -> Result<()> {
    // The limit lives in the database, so two proxies share it.
    let a = TestProxy::start_with(trusted).await?;
    let b = TestProxy::start_with(trusted).await?;
    let addr = random_client_addr();
    assert_eq!(a.api().token_new_from(&addr).await?.status, 200);
    assert_eq!(b.api().token_new_from(&addr).await?.status, 429);
    Ok(())
}

#[tokio::test]
async fn admin_can_reach_the_database() -> Result<()> {
    // Fails first, with the run.sh hint, when the environment is missing.
    let admin = Admin::connect().await?;
    let v: String = admin
        .client()
        .query_one(
            "select extversion::text from pg_extension where extname = 'echovalue'",
            &[],
        )
        .await?
        .get(0);
    assert!(!v.is_empty());
    Ok(())
}

#[tokio::test]
async fn legacy_root_post_creates_a_token() -> Result<()> {
    let proxy = TestProxy::start_with(trusted).await?;
    let r = proxy
        .api()
        .send(
            Method::POST,
            "/",
            None,
            Some(b"token=new".to_vec()),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", &random_client_addr()),
            ],
        )
        .await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert!(token::is_well_formed(&r.text()));
    let b = proxy.api().get("/", Some(&r.text())).await?;
    assert_eq!(b.json()?["wallet"], 99);
    Ok(())
}
