//! Everything that speaks Twilio's side of the wire: webhook signatures, the webhook's
//! form, and TwiML.

pub mod signature;
pub mod twiml;
pub mod webhook;
