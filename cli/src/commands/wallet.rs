//! The wallet: a new one, its balance, a recharge link, its logs.

use reqwest::Method;
use serde_json::Value;

use super::Ctx;
use crate::args::Save;
use crate::client::{Failure, Request};
use crate::encode;
use crate::json::cell;
use crate::output::{line, report, Render};

/// `token new`: `POST /token` with the form `token=new`, no token sent.
pub fn token_new(ctx: &Ctx, save: Save) -> Result<u8, Failure> {
    ctx.check_save(save)?;
    let req = Request::new(Method::POST, "/token")
        .without_token()
        .body(b"token=new".to_vec(), "application/x-www-form-urlencoded");
    let resp = ctx.send(&req)?;
    if !resp.status.is_success() {
        return Ok(report(&resp, true));
    }
    let token = resp.text().trim().to_owned();
    line(&token);
    if save.save {
        ctx.save_token(&token)?;
    }
    Ok(0)
}

/// `balance`: `GET /token`, shown as the number.
pub fn balance(ctx: &Ctx) -> Result<u8, Failure> {
    ctx.run(Request::get("/token"), Render::Lines(balance_line))
}

fn balance_line(v: &Value) -> Option<Vec<String>> {
    v.get("wallet").map(|w| vec![cell(Some(w))])
}

/// `recharge`: `GET /recharge?amount=`, the payment link.
pub fn recharge(ctx: &Ctx, amount: &str) -> Result<u8, Failure> {
    let path = format!("/recharge{}", encode::query(&[("amount", Some(amount))]));
    ctx.run(Request::get(path), Render::Auto)
}

/// `logs`: `GET /token/logs?n=&type=`, one line per entry.
pub fn logs(ctx: &Ctx, n: Option<&str>, kind: Option<&str>) -> Result<u8, Failure> {
    let path = format!("/token/logs{}", encode::query(&[("n", n), ("type", kind)]));
    ctx.run(Request::get(path), Render::Lines(log_lines))
}

/// `timestamp method path status cost balance [error]`, tab-separated.
fn log_lines(v: &Value) -> Option<Vec<String>> {
    let entries = v.get("logs")?.as_array()?;
    Some(
        entries
            .iter()
            .map(|e| {
                let mut cells: Vec<String> = [
                    "timestamp",
                    "method",
                    "path",
                    "status_code",
                    "cost",
                    "balance",
                ]
                .iter()
                .map(|k| cell(e.get(k)))
                .collect();
                if let Some(error) = e.get("error").filter(|x| !x.is_null()) {
                    cells.push(cell(Some(error)));
                }
                cells.join("\t")
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_and_log_lines() {
        let v: Value = serde_json::from_str(r#"{"wallet":97,"created":"x","hash":"h"}"#).unwrap();
        assert_eq!(balance_line(&v), Some(vec!["97".to_owned()]));
        assert_eq!(balance_line(&serde_json::json!({"other": 1})), None);

        let v: Value = serde_json::from_str(
            r#"{"logs":[{"timestamp":"2026-01-02T03:04:05.000006Z","method":"GET","path":"/kv/g/missing","endpoint":"kv","status_code":404,"cost":1,"balance":98,"error":"Key Not Found"},
                        {"timestamp":"t","method":"POST","path":"/kv/g/k?ttl=60","status_code":200,"cost":1,"balance":99}],"n":2}"#,
        )
        .unwrap();
        assert_eq!(
            log_lines(&v).unwrap(),
            [
                "2026-01-02T03:04:05.000006Z\tGET\t/kv/g/missing\t404\t1\t98\tKey Not Found",
                "t\tPOST\t/kv/g/k?ttl=60\t200\t1\t99",
            ]
        );
        assert_eq!(log_lines(&serde_json::json!([])), None);
    }
}
