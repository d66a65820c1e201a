//! `keys create|list|revoke` and `settings get|put`: the wallet's tokens and alerts.

use reqwest::Method;

use super::{path, Ctx};
use crate::args::{KeysCommand, SettingsCommand};
use crate::body;
use crate::client::{Failure, Request};
use crate::output::Render;

pub fn run(ctx: &Ctx, command: KeysCommand) -> Result<u8, Failure> {
    match command {
        KeysCommand::Create { fields, save } => {
            ctx.check_save(save)?;
            let req = Request::new(Method::POST, "/token/keys").json(body::key(&fields)?);
            let resp = ctx.send(&req)?;
            let code = ctx.finish(&resp, Render::Auto);
            if code == 0 && save.save {
                let value = resp.value();
                let token = value.as_ref().and_then(|v| v.get("token")?.as_str());
                match token {
                    Some(token) => ctx.save_token(token)?,
                    None => return Err(Failure("the answer holds no token to save".into())),
                }
            }
            Ok(code)
        }
        KeysCommand::List => ctx.run(Request::get("/token/keys"), Render::Auto),
        KeysCommand::Revoke { id } => ctx.run(
            Request::new(Method::DELETE, path(&["token", "keys", &id])?),
            Render::Auto,
        ),
    }
}

pub fn settings(ctx: &Ctx, command: SettingsCommand) -> Result<u8, Failure> {
    let req = match command {
        SettingsCommand::Get => Request::get("/token/settings"),
        SettingsCommand::Put { body } => {
            Request::new(Method::PUT, "/token/settings").json(body::from_arg(&body)?)
        }
    };
    ctx.run(req, Render::Auto)
}
