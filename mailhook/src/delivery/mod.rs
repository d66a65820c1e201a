//! Webhook delivery (SPEC §7): the dispatcher claims due deliveries from the queue in
//! Postgres, POSTs each signed payload and records the outcome.
//!
//! `dispatch.rs` is the loop (woken through `crate::listen` on `echovalue_mail`), `http.rs` one
//! POST, its host's addresses checked by the extension (`echovalue.delivery_addresses_error`,
//! the only copy of the rule), `sign.rs` Standard Webhooks signing, `retry.rs` the pure retry
//! policy.

pub mod dispatch;
pub mod http;
pub mod retry;
pub mod sign;
