//! What one typed line of the terminal phone means.

use super::Outgoing;

/// What one line typed into the terminal phone means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Send(Outgoing),
    /// `/tap N`: the Nth WhatsApp button or list item last shown.
    Tap(usize),
    Quit,
    Help,
    /// A `/word` the phone does not know: not sent, so a typo never reaches the agent.
    Unknown(String),
}

pub const USAGE: &str = "Type a message; /media URL [text] sends a picture; /tap N taps a WhatsApp button or list item; /location LAT LON [label] shares a place; /help; /quit ends.";

/// Reads one line of the terminal phone: `/media URL [text]` sends an MMS, `/quit` and
/// `/help` are the phone's own, any other `/word` is refused, and anything else is the
/// text of an SMS (`//text` sends `/text`).
pub fn parse_line(line: &str) -> Line {
    if let Some(text) = line.strip_prefix("//") {
        return Line::Send(Outgoing {
            body: format!("/{text}"),
            ..Outgoing::default()
        });
    }
    let Some(command) = line.strip_prefix('/') else {
        return Line::Send(Outgoing {
            body: line.to_owned(),
            ..Outgoing::default()
        });
    };
    let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
    match word {
        "media" if !rest.trim().is_empty() => {
            let rest = rest.trim();
            let (url, body) = rest.split_once(' ').unwrap_or((rest, ""));
            Line::Send(Outgoing {
                body: body.trim().to_owned(),
                media: vec![url.to_owned()],
                ..Outgoing::default()
            })
        }
        "tap" => match rest.trim().parse::<usize>() {
            Ok(number) => Line::Tap(number),
            Err(_) => Line::Unknown(line.to_owned()),
        },
        "location" => {
            let mut words = rest.split_whitespace();
            let (Some(latitude), Some(longitude)) = (words.next(), words.next()) else {
                return Line::Unknown(line.to_owned());
            };
            let (Ok(latitude), Ok(longitude)) = (latitude.parse::<f64>(), longitude.parse::<f64>())
            else {
                return Line::Unknown(line.to_owned());
            };
            let label = words.collect::<Vec<_>>().join(" ");
            Line::Send(Outgoing::location(latitude, longitude, &label))
        }
        "quit" | "exit" => Line::Quit,
        "help" => Line::Help,
        _ => Line::Unknown(line.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::new_message_sid;
    use super::*;
    #[test]
    fn lines_become_sms_mms_or_the_phones_own_commands() {
        let Line::Send(mms) = parse_line("/media https://m/p.jpg look at this") else {
            panic!("an MMS")
        };
        assert_eq!(
            (mms.body.as_str(), mms.media),
            ("look at this", vec!["https://m/p.jpg".to_owned()])
        );
        let text = |line| match parse_line(line) {
            Line::Send(message) => message.body,
            other => panic!("{other:?}"),
        };
        assert_eq!(text("hello"), "hello");
        assert_eq!(text("//start"), "/start");
        assert_eq!(parse_line("/quit"), Line::Quit);
        assert_eq!(parse_line("/help"), Line::Help);
        assert_eq!(parse_line("/foo bar"), Line::Unknown("/foo bar".into()));
        assert_eq!(parse_line("/media"), Line::Unknown("/media".into()));
        assert_eq!(parse_line("/tap 2"), Line::Tap(2));
        assert_eq!(parse_line("/tap x"), Line::Unknown("/tap x".into()));
        let Line::Send(place) = parse_line("/location 52.37 4.89 Our shop") else {
            panic!("a location")
        };
        assert!(place.params.contains(&("Label".into(), "Our shop".into())));
        assert_ne!(new_message_sid(), new_message_sid());
    }
}
