//! Twilio's error codes that the bridge's sends meet, each with a one-line hint for the
//! log: what it means and what to do. The full list is Twilio's error dictionary
//! (https://www.twilio.com/docs/api/errors).

/// What to do about Twilio error `code`, when the bridge knows.
pub fn hint(code: u32) -> Option<&'static str> {
    Some(match code {
        20003 => "the credentials were refused: check TWILIO_AUTH_TOKEN or the API key",
        21211 => "the recipient's number is not valid",
        21408 => "the account may not send to this region: enable it in the Console's geo permissions",
        21610 => "the person replied STOP: Twilio sends nothing more until they reply START",
        21614 => "the recipient's number cannot receive SMS",
        21654 => "ContentVariables were sent without a ContentSid",
        21655 => "the ContentSid is not valid here: a typo, deleted, or of another account",
        21656 => "the ContentVariables are not valid: a JSON object of non-empty strings",
        30034 => "US A2P 10DLC: the sending number is not in a registered campaign",
        63003 => "WhatsApp: the recipient cannot be reached on WhatsApp",
        63005 => "WhatsApp did not accept the content: check the media or the session-only parts",
        63006 => "the content cannot be shown on this channel",
        63016 => "WhatsApp: outside the 24-hour window only an approved template can be sent (contentSid)",
        63021 => "WhatsApp refused the content as invalid, e.g. over 1,024 characters",
        63024 => "WhatsApp: the recipient is not valid",
        63027 => "the template does not exist in this language, or its parameters are wrong",
        63028 => "the number of ContentVariables does not match the template's placeholders",
        63030 => "a parameter this channel does not take, e.g. media with a template",
        63032 => "WhatsApp does not deliver to this user (Meta's experiment group)",
        _ => return None,
    })
}

/// Whether a message refused with `code` could go out as plain text: the content was
/// the problem, not the recipient, the window or the account.
pub fn content_refused(code: u32) -> bool {
    matches!(
        code,
        21654 | 21655 | 21656 | 63005 | 63006 | 63021 | 63027 | 63028 | 63030
    )
}
