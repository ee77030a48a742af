//! TwiML: the XML answer to a messaging webhook, one `<Message>` per reply.

use crate::reply::ReplyMessage;

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
    push_escaped(xml, text);
    xml.push_str("</");
    xml.push_str(name);
    xml.push('>');
}

/// `text` as XML character data, in one pass into `xml`: `&`, `<`, `>`, `'` and `"`
/// escaped as quick-xml escapes them, and the characters XML 1.0 cannot carry even
/// escaped (most control characters) dropped, so that an agent that emits one does not
/// make the whole reply unreadable.
fn push_escaped(xml: &mut String, text: &str) {
    xml.reserve(text.len());
    for c in text.chars() {
        match c {
            '&' => xml.push_str("&amp;"),
            '<' => xml.push_str("&lt;"),
            '>' => xml.push_str("&gt;"),
            '\'' => xml.push_str("&apos;"),
            '"' => xml.push_str("&quot;"),
            '\t' | '\n' | '\r' => xml.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => xml.push(c),
        }
    }
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

    #[test]
    fn drops_what_xml_cannot_carry_and_keeps_line_breaks() {
        let xml = render(&[ReplyMessage::text("a\u{1}b\tc\r\nd\u{FFFE}\u{FFFF}\u{1F}é")]);
        assert!(xml.contains("<Body>ab\tc\r\ndé</Body>"), "{xml}");
    }

    #[test]
    fn escapes_as_quick_xml_does() {
        let text = "<a href=\"x\">Tom & 'Jerry'</a> ≥ 🍕";
        let mut ours = String::new();
        push_escaped(&mut ours, text);
        assert_eq!(ours, quick_xml::escape::escape(text));
    }
}
