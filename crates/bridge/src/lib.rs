//! The bridge between Twilio Messaging (SMS, MMS, WhatsApp) and a Google Dialogflow CX or
//! ES agent, as a library: the `twilio-dialogflow` command serves it, and the local
//! stand-ins (crate `stand-ins`) put it in front of their emulators.
//!
//! See ARCHITECTURE.md for the map of the code.

// Every dependency in the manifest is used: CI keeps it so. Test builds also see the
// dev-dependencies, which the library does not use.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod agent;
pub mod config;
pub mod conversation;
pub mod gcp_metadata;
pub mod handoff;
pub mod http;
pub mod ledger;
pub mod logging;
pub mod menu;
pub mod metrics;
pub mod outbound;
pub mod outbox;
pub mod privacy;
pub mod rate_limit;
pub mod render;
pub mod reply;
pub mod retry;
pub mod routes;
pub mod session;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod twilio;
pub mod whatsapp;
