//! KV listing over HTTP (SPEC section 17): `GET /kv/{group}` and `GET /kv`, pages that cover a
//! changing group exactly once, and the refusals, charged like any KV error.

use std::collections::{BTreeSet, HashMap};

use anyhow::{ensure, Result};
use echovalue_tests::{setup, Api, Wallet};
use reqwest::Method;

/// The keys of one page and the cursor of the next (`None` on the last page).
async fn page(api: &Api, w: &Wallet, path: &str) -> Result<(Vec<String>, Option<String>)> {
    let r = api.get(path, w.t()).await?;
    ensure!(r.status == 200, "{path}: {} {}", r.status, r.text());
    ensure!(
        r.header("content-type") == Some("application/json"),
        "{path}"
    );
    ensure!(
        r.cost() == Some(1),
        "{path}: a page costs 1, whatever its size"
    );
    let body = r.json()?;
    let keys = body["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| k["key"].as_str().unwrap_or_default().to_owned())
        .collect();
    Ok((keys, body["cursor"].as_str().map(str::to_owned)))
}

#[tokio::test]
async fn pages_cover_a_changing_group_of_2500_keys_exactly_once() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet_with(1_000_000).await?;
    let keys: Vec<String> = (0..2500).map(|i| format!("key-{i:05}")).collect();
    admin.kv_fill(&w, "big", &keys).await?;

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut deleted_ahead = BTreeSet::new();
    let mut added_ahead = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut last: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/kv/big?limit=100".to_owned(),
            Some(c) => format!("/kv/big?limit=100&cursor={c}"),
        };
        let (page_keys, next) = page(api, &w, &path).await?;
        pages += 1;
        assert!(pages <= 40, "the listing does not end");
        assert!(page_keys.len() <= 100);
        for k in &page_keys {
            assert!(
                last.as_deref() < Some(k.as_str()),
                "{k} after {last:?}: not in order"
            );
            last = Some(k.clone());
            *seen.entry(k.clone()).or_default() += 1;
        }
        let Some(next) = next else { break };
        // Between pages: delete a key behind and one ahead, add one behind and one ahead.
        let at: usize = last.as_deref().unwrap_or("key-00000")[4..9].parse()?;
        for k in [format!("key-{:05}", at / 2), format!("key-{:05}", at + 37)] {
            let r = api.delete(&format!("/kv/big/{k}"), w.t()).await?;
            if r.status == 200 && Some(k.as_str()) > last.as_deref() {
                deleted_ahead.insert(k);
            }
        }
        let ahead = format!("key-{at:05}-added");
        let behind = format!("key-{:05}-added", at / 3);
        for k in [&ahead, &behind] {
            let r = api.post(&format!("/kv/big/{k}"), w.t(), "v").await?;
            assert_eq!(r.status, 200);
        }
        added_ahead.insert(ahead);
        cursor = Some(next);
    }

    assert!(pages >= 25, "{pages} pages");
    assert!(seen.values().all(|&n| n == 1), "a key was listed twice");
    assert!(!deleted_ahead.is_empty());
    for k in &keys {
        // a key deleted before its page came is never listed; every other key is, once
        assert_eq!(seen.contains_key(k), !deleted_ahead.contains(k), "{k}");
    }
    for k in &added_ahead {
        assert!(
            seen.contains_key(k),
            "{k}, added ahead of the cursor, was not listed"
        );
    }
    assert!(!seen
        .keys()
        .any(|k| k.ends_with("-added") && !added_ahead.contains(k)));
    Ok(())
}

#[tokio::test]
async fn groups_prefixes_and_limits() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet_with(1000).await?;
    for path in [
        "/kv/a/x",
        "/kv/a/y",
        "/kv/b/user-1",
        "/kv/b/user-2",
        "/kv/b/other",
        "/kv/c%20d/z",
    ] {
        assert_eq!(api.post(path, w.t(), "v").await?.status, 200, "{path}");
    }
    let r = api.get("/kv", w.t()).await?;
    assert_eq!((r.status, r.cost()), (200, Some(1)));
    assert_eq!(
        r.json()?,
        serde_json::json!({"groups":[{"group":"a","keys":2},{"group":"b","keys":3},{"group":"c d","keys":1}],"cursor":null})
    );
    let first = api.get("/kv?limit=2", w.t()).await?.json()?;
    assert_eq!(first["groups"].as_array().map(Vec::len), Some(2));
    let cursor = first["cursor"].as_str().unwrap_or_default();
    let rest = api
        .get(&format!("/kv?limit=2&cursor={cursor}"), w.t())
        .await?
        .json()?;
    assert_eq!(
        rest,
        serde_json::json!({"groups":[{"group":"c d","keys":1}],"cursor":null})
    );

    let (keys, next) = page(api, &w, "/kv/b?prefix=user-").await?;
    assert_eq!(
        (keys, next),
        (vec!["user-1".to_owned(), "user-2".to_owned()], None)
    );
    let body = api.get("/kv/a?limit=1", w.t()).await?.json()?;
    let expires = body["keys"][0]["expires"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(expires.ends_with('Z') && expires.contains('T'), "{expires}");
    // an expired key is never listed
    admin.expire_key(&w, "a", "x").await?;
    assert_eq!(page(api, &w, "/kv/a").await?.0, vec!["y".to_owned()]);
    // the 2023 paths are untouched: /{group}/{key} still reads a key
    assert_eq!(api.post("/b/k", w.t(), "legacy").await?.status, 200);
    assert_eq!(api.get("/b/k", w.t()).await?.text(), "legacy");
    Ok(())
}

#[tokio::test]
async fn refusals_are_charged_400s_with_the_rule() -> Result<()> {
    let (proxy, admin) = setup().await?;
    let api = proxy.api();
    let w = admin.new_wallet_with(1000).await?;
    let other = admin.new_wallet_with(1000).await?;
    assert_eq!(api.post("/kv/g/k", w.t(), "v").await?.status, 200);
    assert_eq!(api.post("/kv/g/l", w.t(), "v").await?.status, 200);
    let (_, cursor) = page(api, &w, "/kv/g?limit=1").await?;
    let cursor = cursor.unwrap_or_default();
    let cases = [
        ("/kv/g?cursor=garbage", "Bad Request: cursor must be one a page of this listing returned"),
        (&*format!("/kv/h?cursor={cursor}"), "Bad Request: cursor must be one a page of this listing returned"),
        (&*format!("/kv?cursor={cursor}"), "Bad Request: cursor must be one a page of this listing returned"),
        ("/kv/g?limit=0", "Bad Request: limit must be an integer from 1 to 1000"),
        ("/kv/g?limit=1001", "Bad Request: limit must be an integer from 1 to 1000"),
        ("/kv/g?limit=abc", "Bad Request: limit must be an integer from 1 to 1000"),
        ("/kv?limit=-5", "Bad Request: limit must be an integer from 1 to 1000"),
        ("/kv/g?prefix=a%2Fb", "Bad Request: prefix must be at most 30 characters, without '/' or control characters"),
        ("/kv/g?prefix=%07", "Bad Request: prefix must be at most 30 characters, without '/' or control characters"),
        ("/kv/g?prefix=a%00", "Bad Request: prefix must not hold a NUL character"),
        ("/kv/g?cursor=%00", "Bad Request: cursor must not hold a NUL character"),
        ("/kv?limit=%00", "Bad Request: limit must not hold a NUL character"),
        ("/kv/reserved-x", "Bad Request: group must not start with 'reserved-'"),
        ("/kv/a%00b", "Bad Request: group and key must be UTF-8 text without NUL characters after percent-decoding"),
    ];
    let before = admin.balance(&w).await?;
    for (path, error) in cases {
        let r = api.get(path, w.t()).await?;
        assert_eq!((r.status, r.text().as_str()), (400, error), "{path}");
        assert_eq!(r.cost(), Some(1), "{path}");
    }
    assert_eq!(admin.balance(&w).await?, before - cases.len() as i64);
    // someone else's cursor names no place in this wallet's group
    let r = api
        .get(&format!("/kv/g?cursor={cursor}"), other.t())
        .await?;
    assert_eq!(
        r.status, 200,
        "a cursor is a position, not a key to another wallet"
    );
    assert_eq!(r.json()?["keys"], serde_json::json!([]));
    let r = api
        .send(Method::POST, "/kv/g", w.t(), Some(b"v".to_vec()), &[])
        .await?;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, OPTIONS")));
    assert_eq!(r.cost(), Some(1));
    let r = api.get("/kv/g", None).await?;
    assert_eq!((r.status, r.text().as_str()), (401, "Unauthorized"));
    admin.set_balance(&w, 0).await?;
    let r = api.get("/kv", w.t()).await?;
    assert_eq!(
        (r.status, r.text().as_str(), r.cost()),
        (402, "Insufficient credits", Some(0))
    );
    Ok(())
}
