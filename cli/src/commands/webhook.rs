//! `webhook set|get|delete|show|put|patch|remove|test`.

use reqwest::Method;

use super::{path, Ctx};
use crate::args::WebhookCommand;
use crate::body;
use crate::client::{Failure, Request};
use crate::output::Render;

pub fn run(ctx: &Ctx, command: WebhookCommand) -> Result<u8, Failure> {
    let one = |id: &str| path(&["webhook", id]);
    let req = match command {
        WebhookCommand::Set { id, fields } => {
            Request::new(Method::POST, "/webhook").json(body::webhook(id.as_deref(), &fields)?)
        }
        WebhookCommand::Get => Request::get("/webhook"),
        WebhookCommand::Delete => Request::new(Method::DELETE, "/webhook"),
        WebhookCommand::Show { id } => Request::get(one(&id)?),
        WebhookCommand::Put { id, fields } => {
            Request::new(Method::PUT, one(&id)?).json(body::webhook(None, &fields)?)
        }
        WebhookCommand::Patch { id, fields } => {
            Request::new(Method::PATCH, one(&id)?).json(body::webhook(None, &fields)?)
        }
        WebhookCommand::Remove { id } => Request::new(Method::DELETE, one(&id)?),
        WebhookCommand::Test { id } => Request::new(Method::POST, path(&["webhook", &id, "test"])?),
    };
    ctx.run(req, Render::Auto)
}
