//! Everything that speaks Twilio's side of the wire: webhook signatures, the webhook's
//! form, TwiML, the Messages API and its errors.

pub mod errors;
pub mod messages_api;
pub mod signature;
pub mod twiml;
pub mod webhook;
