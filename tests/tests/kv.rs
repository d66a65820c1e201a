//! The key-value endpoints: round trips, names, values, TTLs, errors and the 2023 paths.

use anyhow::Result;
use echovalue_tests::{setup, Api, Wallet};
use reqwest::Method;

async fn set(api: &Api, w: &Wallet, path: &str, value: &str) -> Result<echovalue_tests::Reply> {
    api.post(path, w.t(), value.as_bytes().to_vec()).await
}

#[tokio::test]
async fn set_get_overwrite_delete_round_trip() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;

    let r = set(api, &w, "/kv/default/mykey", "hello world").await?;
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(99)));

    let r = api.get("/kv/default/mykey", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(98)));

    let r = set(api, &w, "/kv/default/mykey", "second").await?;
    assert_eq!(r.status, 200);
    assert_eq!(api.get("/kv/default/mykey", w.t()).await?.text(), "second");

    let r = api.delete("/kv/default/mykey", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    assert_eq!(r.cost(), Some(1));

    let r = api.get("/kv/default/mykey", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Key Not Found"));
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(94)));
    assert_eq!(admin.balance(&w).await?, 94);
    Ok(())
}

#[tokio::test]
async fn wallets_do_not_see_each_others_keys() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let a = admin.new_wallet().await?;
    let b = admin.new_wallet().await?;
    assert_eq!(set(api, &a, "/kv/g/k", "a's").await?.status, 200);
    assert_eq!(api.get("/kv/g/k", b.t()).await?.status, 404);
    assert_eq!(set(api, &b, "/kv/g/k", "b's").await?.status, 200);
    assert_eq!(api.get("/kv/g/k", a.t()).await?.text(), "a's");
    Ok(())
}

#[tokio::test]
async fn value_is_stored_byte_for_byte_whatever_the_content_type() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    for (ct, value) in [
        ("application/x-www-form-urlencoded", "a=b&c=d+e%20"),
        ("text/plain", "  spaces, tabs\tand\nnewlines\r\n "),
        ("application/json", "{\"x\": [1, 2]}"),
        ("application/octet-stream", "déjà vu ✓ 🦀"),
    ] {
        let r = api
            .send(
                Method::POST,
                "/kv/g/bytes",
                w.t(),
                Some(value.as_bytes().to_vec()),
                &[("content-type", ct)],
            )
            .await?;
        assert_eq!(r.status, 200, "{ct}: {:?}", r.text());
        let got = api.get("/kv/g/bytes", w.t()).await?;
        assert_eq!(got.body, value.as_bytes(), "{ct}");
    }
    // No content type at all.
    let r = api
        .send(
            Method::POST,
            "/kv/g/none",
            w.t(),
            Some(b"x=1".to_vec()),
            &[],
        )
        .await?;
    assert_eq!(r.status, 200);
    assert_eq!(api.get("/kv/g/none", w.t()).await?.text(), "x=1");
    Ok(())
}

#[tokio::test]
async fn empty_value_is_allowed() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(set(api, &w, "/kv/g/empty", "").await?.status, 200);
    let r = api.get("/kv/g/empty", w.t()).await?;
    assert_eq!((r.status, r.body.len()), (200, 0));
    Ok(())
}

#[tokio::test]
async fn value_length_counts_characters_not_bytes() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let ok = "é".repeat(1000);
    let r = set(api, &w, "/kv/g/long", &ok).await?;
    assert_eq!(r.status, 200, "1000 two-byte chars: {:?}", r.text());
    assert_eq!(api.get("/kv/g/long", w.t()).await?.text(), ok);

    let crabs = "🦀".repeat(1000);
    assert_eq!(set(api, &w, "/kv/g/crabs", &crabs).await?.status, 200);

    let over = "é".repeat(1001);
    let r = set(api, &w, "/kv/g/long", &over).await?;
    assert_eq!(r.status, 400);
    assert!(r.text().starts_with("Bad Request: "), "{:?}", r.text());
    assert_eq!(r.cost(), Some(1), "errors are charged");
    assert_eq!(
        api.get("/kv/g/long", w.t()).await?.text(),
        ok,
        "old value kept"
    );
    Ok(())
}

#[tokio::test]
async fn non_utf8_value_is_400_and_charged() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let r = api
        .post("/kv/g/bin", w.t(), vec![0x66, 0xff, 0xfe, 0x00, 0x80])
        .await?;
    assert_eq!(r.status, 400, "{:?}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    assert!(r.text().starts_with("Bad Request: "), "{:?}", r.text());
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(99)));
    assert_eq!(admin.balance(&w).await?, 99);
    assert_eq!(
        api.get("/kv/g/bin", w.t()).await?.status,
        404,
        "nothing stored"
    );
    // UTF-8 with a NUL: no Postgres text can hold it, so it is refused the same way (not 500).
    let r = api.post("/kv/g/bin", w.t(), b"a\0b".to_vec()).await?;
    assert_eq!((r.status, r.cost()), (400, Some(1)), "{:?}", r.text());
    Ok(())
}

#[tokio::test]
async fn names_are_percent_decoded() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(
        set(api, &w, "/kv/my%20group/hello%20w%C3%B6rld", "v")
            .await?
            .status,
        200
    );
    // The database holds the decoded names.
    assert_eq!(
        admin.sql_kv_get(&w, "my group", "hello wörld").await?,
        (200, "v".into())
    );
    // Any encoding of the same name finds it.
    assert_eq!(
        api.get("/kv/my%20group/hello%20w%c3%b6rld", w.t())
            .await?
            .text(),
        "v"
    );
    // The 30-character limit applies after decoding: 30 "A"s spelled as %41 are 90 bytes.
    let enc30 = "%41".repeat(30);
    assert_eq!(
        set(api, &w, &format!("/kv/{enc30}/{enc30}"), "x")
            .await?
            .status,
        200
    );
    let a30 = "A".repeat(30);
    assert_eq!(
        api.get(&format!("/kv/{a30}/{a30}"), w.t()).await?.text(),
        "x"
    );
    // 30 two-byte characters.
    let e30 = "%C3%A9".repeat(30);
    assert_eq!(
        set(api, &w, &format!("/kv/g/{e30}"), "y").await?.status,
        200
    );
    Ok(())
}

#[tokio::test]
async fn name_length_limits() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let n30 = "a".repeat(30);
    let n31 = "a".repeat(31);
    assert_eq!(
        set(api, &w, &format!("/kv/{n30}/{n30}"), "v").await?.status,
        200
    );
    assert_eq!(
        api.get(&format!("/kv/{n30}/{n30}"), w.t()).await?.text(),
        "v"
    );
    for path in [format!("/kv/{n31}/k"), format!("/kv/g/{n31}")] {
        for method in [Method::POST, Method::GET, Method::DELETE] {
            let body = (method == Method::POST).then(|| b"v".to_vec());
            let r = api.send(method.clone(), &path, w.t(), body, &[]).await?;
            assert_eq!(r.status, 400, "{method} {path}: {:?}", r.text());
            assert!(r.text().starts_with("Bad Request: "), "{:?}", r.text());
            assert_eq!(r.cost(), Some(1), "{method} {path}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn bad_names_are_400() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    for path in [
        "/kv/reserved-x/k",
        "/kv/reserved-/k",
        "/kv/abc---/k",
        "/kv/---/k",
        "/kv/g/a%01b",
        "/kv/g%7F/k",
        "/kv/g/a%0Ab",
        "/kv/g/a%2Fb",
        "/kv/g%2Fh/k",
        "/kv/g/%FF",
    ] {
        let r = set(api, &w, path, "v").await?;
        assert_eq!(r.status, 400, "{path}: {:?}", r.text());
        assert!(
            r.text().starts_with("Bad Request: "),
            "{path}: {:?}",
            r.text()
        );
        assert_eq!(r.cost(), Some(1), "{path} charged");
    }
    // Only groups are restricted that way; such keys and inner dashes are fine.
    for path in [
        "/kv/g/reserved-x",
        "/kv/g/abc---",
        "/kv/a---b/k",
        "/kv/xreserved-/k",
    ] {
        let r = set(api, &w, path, "v").await?;
        assert_eq!(r.status, 200, "{path}: {:?}", r.text());
    }
    Ok(())
}

#[tokio::test]
async fn ttl_values() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let month = 2_592_000.0;
    let cases = [
        ("", month),
        ("?ttl=0", month),
        ("?ttl=1", 1.0),
        ("?ttl=60", 60.0),
        ("?ttl=2592000", month),
    ];
    for (i, (q, expect)) in cases.into_iter().enumerate() {
        let key = format!("t{i}");
        let r = set(api, &w, &format!("/kv/ttl/{key}{q}"), "v").await?;
        assert_eq!(r.status, 200, "{q}: {:?}", r.text());
        let left = admin
            .key_ttl_seconds(&w, "ttl", &key)
            .await?
            .unwrap_or(-1.0);
        assert!(
            left <= expect && left > expect - 30.0,
            "{q}: expires in {left} s, want {expect}"
        );
    }
    for q in [
        "?ttl=-1",
        "?ttl=1.5",
        "?ttl=abc",
        "?ttl=2592001",
        "?ttl=1e3",
        "?ttl=99999999999999999999",
    ] {
        let r = set(api, &w, &format!("/kv/ttl/bad{q}"), "v").await?;
        assert_eq!(r.status, 400, "{q}: {:?}", r.text());
        assert!(r.text().starts_with("Bad Request: "), "{q}: {:?}", r.text());
        assert_eq!(r.cost(), Some(1), "{q} charged");
    }
    assert_eq!(
        api.get("/kv/ttl/bad", w.t()).await?.status,
        404,
        "nothing stored on bad ttl"
    );
    Ok(())
}

#[tokio::test]
async fn each_write_sets_a_new_expiry() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(set(api, &w, "/kv/g/k?ttl=100", "v").await?.status, 200);
    assert_eq!(set(api, &w, "/kv/g/k", "v2").await?.status, 200);
    let left = admin.key_ttl_seconds(&w, "g", "k").await?.unwrap_or(0.0);
    assert!(
        left > 2_500_000.0,
        "a write without ttl resets to 30 days, got {left}"
    );
    // A read does not extend it.
    assert_eq!(set(api, &w, "/kv/g/k?ttl=100", "v3").await?.status, 200);
    assert_eq!(api.get("/kv/g/k", w.t()).await?.status, 200);
    let left = admin.key_ttl_seconds(&w, "g", "k").await?.unwrap_or(1e9);
    assert!(left <= 100.0, "read extended the expiry to {left}");
    Ok(())
}

#[tokio::test]
async fn expired_keys_are_never_served() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(set(api, &w, "/kv/g/old?ttl=100", "v").await?.status, 200);
    admin.expire_key(&w, "g", "old").await?;
    let r = api.get("/kv/g/old", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Key Not Found"));
    assert_eq!(r.cost(), Some(1));
    let r = api.delete("/kv/g/old", w.t()).await?;
    assert_eq!(r.status, 404, "an expired key cannot be deleted either");
    // Setting it again brings it back.
    assert_eq!(set(api, &w, "/kv/g/old", "new").await?.status, 200);
    assert_eq!(api.get("/kv/g/old", w.t()).await?.text(), "new");
    Ok(())
}

#[tokio::test]
async fn ttl_one_second_expires_in_real_time() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    assert_eq!(set(api, &w, "/kv/g/short?ttl=1", "v").await?.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let r = api.get("/kv/g/short", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Key Not Found"));
    Ok(())
}

#[tokio::test]
async fn delete_missing_key_is_404_and_charged() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let r = api.delete("/kv/g/never", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Key Not Found"));
    assert_eq!((r.cost(), r.balance()), (Some(1), Some(99)));
    Ok(())
}

#[tokio::test]
async fn legacy_paths_share_data_with_kv_paths() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    let r = set(api, &w, "/default/mykey?ttl=30", "newdata").await?;
    assert_eq!(
        (r.status, r.text().as_str(), r.cost()),
        (200, "OK", Some(1))
    );
    assert_eq!(api.get("/kv/default/mykey", w.t()).await?.text(), "newdata");
    assert_eq!(set(api, &w, "/kv/default/other", "x").await?.status, 200);
    let r = api.get("/default/other", w.t()).await?;
    assert_eq!((r.status, r.text().as_str(), r.cost()), (200, "x", Some(1)));
    assert_eq!(api.delete("/default/other", w.t()).await?.status, 200);
    assert_eq!(api.get("/kv/default/other", w.t()).await?.status, 404);
    let r = api.get("/default/missing", w.t()).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Key Not Found"));
    Ok(())
}
