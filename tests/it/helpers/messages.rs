//! What a test's phone sends: a text, a message with the parameters Twilio adds, a
//! WhatsApp tap; and forms signed some other way than the phone's own token.

use super::{post, FORM};
use bridge::twilio::signature::{self, Algorithm};
use bridge::twilio::webhook::FormParams;
use stand_ins::chat::{Outgoing, Phone};

/// A plain text message.
pub fn says(text: &str) -> Outgoing {
    with(text, &[])
}

/// A message with the parameters Twilio adds (`OptOutType`, `ButtonPayload`, …).
pub fn with(body: &str, params: &[(&str, &str)]) -> Outgoing {
    Outgoing {
        body: body.into(),
        params: pairs(params),
        ..Default::default()
    }
}

/// What WhatsApp sends for a reply button tapped: its title as the body.
pub fn tap_button(title: &str, payload: &str) -> Outgoing {
    with(
        title,
        &[
            ("MessageType", "button"),
            ("ButtonText", title),
            ("ButtonPayload", payload),
        ],
    )
}

/// What WhatsApp sends for a list item picked: its title as the body.
pub fn pick_item(title: &str, id: &str) -> Outgoing {
    with(
        title,
        &[
            ("MessageType", "interactive"),
            ("ListId", id),
            ("ListTitle", title),
        ],
    )
}

/// Borrowed name/value pairs as the owned ones a form is made of.
pub fn pairs(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// A form of `params`, signed with `auth_token` as Twilio signs a request it sends to
/// `signed_url`, posted to `url`: the raw answer.
pub async fn post_signed_as(
    url: &str,
    signed_url: &str,
    auth_token: &str,
    params: Vec<(String, String)>,
) -> (u16, String) {
    let signature = signature::compute(auth_token, signed_url, &params);
    let body = FormParams::from_pairs(params).encode();
    post(url, &[FORM, ("x-twilio-signature", &signature)], body).await
}

/// "hi" from `phone`'s webhook, signed with the SharedKey `key` by `algorithm` and
/// announced by `settings` (`key=NAME,algorithm=…`), posted to the phone's bridge: the
/// raw answer.
pub async fn post_with_shared_key(
    phone: &Phone,
    settings: &str,
    algorithm: Algorithm,
    key: &str,
) -> (u16, String) {
    let (params, _) = phone.webhook(&says("hi"));
    let signature = signature::compute_with(algorithm, key, &phone.url, params.pairs());
    post(
        &phone.url,
        &[
            FORM,
            ("x-twilio-signature", &signature),
            ("x-twilio-webhooks-signature-settings", settings),
        ],
        params.encode(),
    )
    .await
}
