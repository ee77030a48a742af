//! The messages of a TwiML answer, read as the phone shows them.

use anyhow::{bail, Context};
use bridge::reply::ReplyMessage;
use quick_xml::events::Event;
use quick_xml::Reader;

/// The messages a TwiML `<Response>` sends back to the sender.
pub fn parse_twiml(xml: &str) -> anyhow::Result<Vec<ReplyMessage>> {
    let mut reader = Reader::from_str(xml);
    let mut messages = Vec::new();
    let mut current: Option<ReplyMessage> = None;
    let mut element: Option<Element> = None;
    let mut saw_response = false;
    loop {
        match reader
            .read_event()
            .context("the bridge's answer is not well-formed XML")?
        {
            Event::Start(start) | Event::Empty(start) if start.name().as_ref() == b"Response" => {
                saw_response = true
            }
            Event::Start(start) => match start.name().as_ref() {
                b"Message" => current = Some(ReplyMessage::default()),
                b"Body" => element = Some(Element::Body),
                b"Media" => {
                    element = Some(Element::Media);
                    if let Some(message) = current.as_mut() {
                        message.media.push(String::new());
                    }
                }
                _ => {}
            },
            Event::Text(text) => {
                let text = text.xml_content().context("bad text in TwiML")?;
                append(&mut current, element, &text);
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference
                    .resolve_char_ref()
                    .context("bad character reference in TwiML")?
                {
                    Some(c) => c.to_string(),
                    None => match reference.as_ref() {
                        b"amp" => "&".into(),
                        b"lt" => "<".into(),
                        b"gt" => ">".into(),
                        b"quot" => "\"".into(),
                        b"apos" => "'".into(),
                        other => bail!("unknown entity &{};", String::from_utf8_lossy(other)),
                    },
                };
                append(&mut current, element, &resolved);
            }
            Event::CData(data) => append(&mut current, element, &String::from_utf8_lossy(&data)),
            Event::End(end) => match end.name().as_ref() {
                b"Message" => messages.extend(current.take()),
                b"Body" | b"Media" => element = None,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_response {
        bail!("the bridge's answer is not TwiML: no <Response>");
    }
    Ok(messages)
}

#[derive(Debug, Clone, Copy)]
enum Element {
    Body,
    Media,
}

/// Text arrives in pieces (split at entities); each piece joins the body or the URL of
/// the `<Media>` being read.
fn append(current: &mut Option<ReplyMessage>, element: Option<Element>, text: &str) {
    let Some(message) = current.as_mut() else {
        return;
    };
    match (element, message.media.last_mut()) {
        (Some(Element::Media), Some(url)) => url.push_str(text),
        // Plain text directly in <Message> is its body, as Twilio reads it.
        _ => message.body.push_str(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_twiml_as_the_phone_shows_it() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message><Body>Fish &amp; chips &#x1F35F;</Body><Media>https://x/a.jpg?w=1&amp;h=2</Media></Message><Message>plain</Message></Response>"#;
        assert_eq!(
            parse_twiml(xml).unwrap(),
            vec![
                ReplyMessage {
                    body: "Fish & chips 🍟".into(),
                    media: vec!["https://x/a.jpg?w=1&h=2".into()],
                    ..ReplyMessage::default()
                },
                ReplyMessage::text("plain"),
            ]
        );
        assert_eq!(parse_twiml("<Response/>").unwrap(), vec![]);
        assert!(parse_twiml("<html>oops</html>").is_err());
        assert!(parse_twiml("<Response><Message>").is_ok_and(|m| m.is_empty()));
    }
}
