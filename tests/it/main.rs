//! The black-box tests: one binary, a module per area. Each test starts the real bridge
//! and the emulators on free local ports and talks to them over HTTP, as Twilio and
//! Google would; nothing reaches the real Twilio or Google.

mod agent_transport;
mod api_replies;
mod bridge_cx;
mod bridge_es;
mod cli;
mod cluster;
mod emulator_cx;
mod emulator_es;
mod emulator_refusals;
mod faults;
mod handoff;
mod helpers;
mod metrics;
mod monitoring;
mod newcomer;
mod outbound;
mod privacy;
mod python;
mod refusals;
mod rich;
mod routing;
mod security;
mod send_csv;
mod shared_state;
mod state_auth;
mod traces;
mod twilio_fidelity;
mod twilio_stand_in;
mod web_phone;
