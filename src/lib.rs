//! twilio-dialogflow: a bridge between Twilio Messaging (SMS, MMS, WhatsApp) and a
//! Google Dialogflow CX or ES agent, with the tools to try it locally.
//!
//! See ARCHITECTURE.md for the map of the code.

pub mod agent;
pub mod chat;
pub mod check;
pub mod config;
pub mod conversation;
pub mod demo;
pub mod emulator;
pub mod http;
pub mod ledger;
pub mod logging;
pub mod messages_emulator;
pub mod metrics;
pub mod outbox;
pub mod reply;
pub mod session;
pub mod twilio;
