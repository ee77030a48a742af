//! What lets anyone run the bridge with no phone and no cloud project: a local Dialogflow
//! (`emulator`), a stand-in for Twilio's Messages and Content APIs (`messages_api`), a
//! terminal phone (`chat`), a terminal helpdesk (`desk`), a phone in the browser
//! (`phone`, with a helpdesk pane) and the `demo` that plays them together.
//!
//! The stand-ins hold Google and Twilio to their documented behaviour by themselves, so
//! that a wrong limit in the bridge fails a test instead of being copied into the test.
//!
//! What a stand-in may import:
//! - `hardened-http`, to serve and to stop (it is nobody's domain);
//! - the bridge's public API to *start* it (`bridge::config`, `bridge::startup`: the
//!   demo, the tests' stacks), to *sign* as Twilio signs (`bridge::twilio::signature`:
//!   the phone's webhooks, the Messages API stand-in's status callbacks), and the plain
//!   data types the terminal phone shows and sends (`bridge::reply::ReplyMessage`,
//!   `bridge::twilio::webhook::FormParams`).
//!
//! What it may not: the bridge's limits (`bridge::whatsapp::MAX_*`,
//! `bridge::reply::MAX_*`, …), its error codes or its validation. A stand-in that checks
//! a length, a code, a webhook's shape or a signature does it with its own code, from
//! the vendor's documentation, citing it (`messages_api::limits`,
//! `emulator`'s `TEXT_INPUT_CHARS`); the measure of its fidelity is the vendor's
//! official clients (Google's Rust clients, Twilio's Python library, in `tests/it`).

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

use anyhow::Context;
use std::time::Duration;

pub mod chat;
pub mod demo;
pub mod desk;
pub mod emulator;
pub mod messages_api;
pub mod phone;

/// An HTTP client of the terminal tools that gives up on a call after `timeout`.
fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("cannot create the HTTP client")
}
