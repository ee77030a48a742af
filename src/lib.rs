//! twilio-dialogflow: a bridge between Twilio Messaging (SMS, MMS, WhatsApp) and a
//! Google Dialogflow CX or ES agent, with the tools to try it locally.
//!
//! See ARCHITECTURE.md for the map of the code.

// Every dependency in the manifest is used here (the binary adds only its allocator):
// CI keeps it so. Test builds also see the dev-dependencies, which the library does not use.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
// The binary's allocator: a dependency of the package that only `main.rs` uses.
#[cfg(feature = "jemalloc")]
use tikv_jemallocator as _;

pub mod agent;
pub mod chat;
pub mod check;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod demo;
pub mod desk;
pub mod emulator;
pub mod gcp_metadata;
pub mod handoff;
pub mod http;
pub mod ledger;
pub mod logging;
pub mod menu;
pub mod messages_emulator;
pub mod metrics;
pub mod outbox;
pub mod rate_limit;
pub mod reply;
pub mod routes;
pub mod session;
pub mod state;
pub mod twilio;
pub mod whatsapp;
