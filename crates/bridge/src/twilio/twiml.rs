//! TwiML: the XML answer to a messaging webhook, one `<Message>` per reply.

use crate::reply::ReplyMessage;
use quick_xml::escape::escape;

pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The TwiML that makes Twilio send `messages` back to the sender; `<Response/>`
/// when there is nothing to send.
pub fn render(messages: &[ReplyMessage]) -> String {
    let mut xml = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    if messages.is_empty() {
        xml.push_str("<Response/>");
        return xml;
    }
    xml.push_str("<Response>");
    for message in messages {
        xml.push_str("<Message>");
        if !message.body.is_empty() {
            push_element(&mut xml, "Body", &message.body);
        }
        for url in &message.media {
            push_element(&mut xml, "Media", url);
        }
        xml.push_str("</Message>");
    }
    xml.push_str("</Response>");
    xml
}

fn push_element(xml: &mut String, name: &str, text: &str) {
    xml.push('<');
    xml.push_str(name);
    xml.push('>');
    xml.push_str(&escape(xml_chars(text).as_str()));
    xml.push_str("</");
    xml.push_str(name);
    xml.push('>');
}

/// XML 1.0 cannot carry most control characters, even escaped; an agent that emits one
/// must not make the whole reply unreadable, so they are dropped.
fn xml_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r')
                || !(c.is_control() && (c as u32) < 0x20) && c != '\u{FFFE}' && c != '\u{FFFF}'
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_say_is_an_empty_response() {
        assert_eq!(
            render(&[]),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
        );
    }

    #[test]
    fn escapes_what_the_agent_says() {
        let xml = render(&[
            ReplyMessage::text("Fish & <chips> \"for\" 'you' 🍟\u{0}"),
            ReplyMessage {
                body: String::new(),
                media: vec!["https://x.test/a.jpg?w=1&h=2".into()],
                ..ReplyMessage::default()
            },
        ]);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Message><Body>Fish &amp; &lt;chips&gt; &quot;for&quot; &apos;you&apos; 🍟</Body></Message>\
             <Message><Media>https://x.test/a.jpg?w=1&amp;h=2</Media></Message></Response>"
        );
    }
}
