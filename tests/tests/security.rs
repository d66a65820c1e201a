//! The proxy's role can call the API functions and nothing else (SPEC section 11).

use anyhow::{bail, Result};
use echovalue_tests::{env, Admin};

#[tokio::test]
async fn proxy_role_cannot_touch_tables() -> Result<()> {
    let admin = Admin::connect().await?;
    let proxy = Admin::connect_to(&env::proxy_url()?).await?;
    let tables: Vec<String> = admin
        .client()
        .query(
            "select format('%I.%I', schemaname, tablename) from pg_tables where schemaname = 'echovalue'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if tables.is_empty() {
        bail!("the echovalue schema has no tables");
    }
    for t in &tables {
        for sql in [
            format!("select * from {t} limit 1"),
            format!("delete from {t}"),
            format!("update {t} set wallet_id = wallet_id"),
        ] {
            match proxy.client().simple_query(&sql).await {
                Ok(_) => bail!("the proxy role ran `{sql}`"),
                Err(e) => {
                    let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
                    // 42501 insufficient_privilege; 42703 only when the column does not exist,
                    // which is checked before privileges: the select and delete still decide.
                    assert!(
                        code == "42501" || (code == "42703" && sql.starts_with("update")),
                        "`{sql}`: expected permission denied, got {code} {e}"
                    );
                }
            }
        }
    }
    // The API itself works for that role.
    let row = proxy
        .client()
        .query_one("select status from echovalue.wallet_get(token => 'x')", &[])
        .await?;
    assert_eq!(row.get::<_, i32>(0), 401);
    Ok(())
}

#[tokio::test]
async fn tokens_are_stored_only_as_hashes() -> Result<()> {
    let admin = Admin::connect().await?;
    let w = admin.new_wallet().await?;
    // Search every text-like column of every echovalue table for the raw token.
    let rows = admin
        .client()
        .query(
            "select format('%I.%I', table_schema, table_name), quote_ident(column_name) \
             from information_schema.columns where table_schema = 'echovalue' \
             and data_type in ('text', 'character varying', 'jsonb', 'json', 'bytea')",
            &[],
        )
        .await?;
    for r in rows {
        let (table, column): (String, String) = (r.get(0), r.get(1));
        let sql = format!(
            "select count(*) from {table} where strpos({column}::text, $1) > 0 \
             or strpos(encode(convert_to({column}::text, 'UTF8'), 'escape'), $1) > 0"
        );
        let n: i64 = admin.client().query_one(&sql, &[&w.token]).await?.get(0);
        assert_eq!(n, 0, "raw token found in {table}.{column}");
    }
    Ok(())
}
