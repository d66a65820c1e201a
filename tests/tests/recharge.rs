//! `GET /recharge` and the 2023 `POST /` form. The payment links are global settings, so
//! every assertion that depends on them lives in the one test below.

use anyhow::Result;
use echovalue_tests::{setup, Api, Wallet};

async fn legacy_recharge(api: &Api, w: &Wallet, body: &str) -> Result<echovalue_tests::Reply> {
    api.post("/", w.t(), body).await
}

#[tokio::test]
async fn recharge_links() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet().await?;
    admin.set_recharge_link(1, None).await?;
    admin.set_recharge_link(3, None).await?;

    let r = api.get("/recharge?amount=1", w.t()).await?;
    assert_eq!(r.status, 501, "no link configured: {:?}", r.text());
    assert_eq!((r.cost(), r.balance()), (Some(0), Some(100)));

    admin
        .set_recharge_link(1, Some("https://buy.stripe.com/test_one"))
        .await?;
    admin
        .set_recharge_link(3, Some("https://buy.stripe.com/test_three?locale=it"))
        .await?;

    let link1 = format!(
        "https://buy.stripe.com/test_one?client_reference_id={}",
        w.hash
    );
    let link3 = format!(
        "https://buy.stripe.com/test_three?locale=it&client_reference_id={}",
        w.hash
    );
    for (path, want) in [
        ("/recharge?amount=1", &link1),
        ("/recharge", &link1),
        ("/recharge?amount=3", &link3),
    ] {
        let r = api.get(path, w.t()).await?;
        assert_eq!(r.status, 200, "{path}: {:?}", r.text());
        assert_eq!(&r.text(), want, "{path}");
        assert!(!r.text().contains(&w.token), "never the raw token");
        assert!(r
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"));
        assert_eq!(
            (r.cost(), r.balance()),
            (Some(0), Some(100)),
            "{path} is free"
        );
    }

    for path in [
        "/recharge?amount=2",
        "/recharge?amount=0",
        "/recharge?amount=abc",
    ] {
        let r = api.get(path, w.t()).await?;
        assert_eq!(r.status, 400, "{path}: {:?}", r.text());
        assert!(
            r.text().starts_with("Bad Request: "),
            "{path}: {:?}",
            r.text()
        );
        assert_eq!(r.cost(), Some(0), "{path}");
    }

    // 2023: POST / with token=recharge, amount defaulting to 1.
    let r = legacy_recharge(api, &w, "token=recharge&amount=3").await?;
    assert_eq!((r.status, r.text()), (200, link3.clone()));
    let r = legacy_recharge(api, &w, "token=recharge").await?;
    assert_eq!((r.status, r.text()), (200, link1.clone()));
    assert_eq!(
        legacy_recharge(api, &w, "token=recharge&amount=2")
            .await?
            .status,
        400
    );

    let r = api.get("/recharge?amount=1", None).await?;
    assert_eq!(r.status, 401, "needs a token");
    Ok(())
}

#[tokio::test]
async fn legacy_root_get_is_the_balance() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let w = admin.new_wallet().await?;
    let r = proxy.api().get("/", w.t()).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());
    let j = r.json()?;
    assert_eq!(j["wallet"], 99);
    assert_eq!(r.cost(), Some(1));
    assert!(j["created"].as_str().is_some_and(|c| c.ends_with('Z')));
    Ok(())
}
