//! What lets anyone run the bridge with no phone and no cloud project: a local Dialogflow
//! (`emulator`), a stand-in for Twilio's Messages and Content APIs (`messages_api`), a
//! terminal phone (`chat`), a terminal helpdesk (`desk`) and the `demo` that plays them
//! together.
//!
//! The stand-ins hold Google and Twilio to their documented behaviour by themselves: they
//! use the bridge's public API to start it and to sign as Twilio does, never its limits,
//! so a wrong limit in the bridge fails a test.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod chat;
pub mod demo;
pub mod desk;
pub mod emulator;
pub mod messages_api;
