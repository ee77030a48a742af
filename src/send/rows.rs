//! A batch file read into the `/outbound` requests it asks for: one per row, the
//! person in column `to` (and the sender in `from`, when there is one), the other
//! columns the event's parameters or the template's variables, and each with the
//! idempotency key that makes a batch run twice send once. Pure: no I/O but the
//! reader it is given.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// What every row of the batch sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The agent is asked with this event; the columns are its parameters.
    Event(String),
    /// This approved template (`HX…`); the columns are its variables.
    Template(String),
    /// This text, as is.
    Text(String),
}

impl Message {
    /// `--event`, `--template` or `--text`, checked as the bridge will check them.
    pub fn parse(
        event: Option<String>,
        template: Option<String>,
        text: Option<String>,
    ) -> Result<Self, BatchError> {
        match (event, template, text) {
            (Some(name), None, None) if !name.trim().is_empty() => Ok(Self::Event(name)),
            (None, Some(sid), None) if is_content_sid(&sid) => Ok(Self::Template(sid)),
            (None, Some(sid), None) => Err(BatchError::NotAContentSid(sid)),
            (None, None, Some(text)) if !text.trim().is_empty() => Ok(Self::Text(text)),
            _ => Err(BatchError::WhatToSend),
        }
    }

    /// How the message is written into a row's key: another message to the same
    /// person is another send.
    fn fingerprint(&self) -> String {
        match self {
            Self::Event(name) => format!("event:{name}"),
            Self::Template(sid) => format!("template:{sid}"),
            Self::Text(text) => format!("text:{text}"),
        }
    }
}

/// A batch that cannot be sent at all.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("say what to send: exactly one of --event NAME, --template HX…, --text \"…\"")]
    WhatToSend,
    #[error("--template {0:?} is not a Content SID (HX and 32 hexadecimal digits)")]
    NotAContentSid(String),
    #[error(
        "the CSV has no column `to` (the person: +E164 or whatsapp:+E164); its columns are {0:?}"
    )]
    NoToColumn(Vec<String>),
    #[error("the CSV cannot be read: {0}")]
    Csv(#[from] csv::Error),
}

/// One row, read into what to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's number in the file, the header being row 1, as a spreadsheet shows it.
    pub number: usize,
    pub to: String,
    /// The JSON body of `POST /outbound`.
    pub body: Value,
    pub idempotency_key: String,
}

/// A row that is not sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub number: usize,
    pub to: String,
    pub why: String,
}

/// Reads the CSV from `reader`: `file` names the batch in its rows' keys (the file's
/// canonical path), `message` is what each row sends.
pub fn read(
    file: &str,
    message: &Message,
    reader: impl std::io::Read,
) -> Result<Vec<Result<Row, Invalid>>, BatchError> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(reader);
    let headers: Vec<String> = csv.headers()?.iter().map(str::to_owned).collect();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let to_column = column("to").ok_or_else(|| BatchError::NoToColumn(headers.clone()))?;
    let from_column = column("from");
    let mut rows = Vec::new();
    for (index, record) in csv.records().enumerate() {
        let record = record?;
        let number = index + 2;
        let to = record.get(to_column).unwrap_or_default().to_owned();
        if !is_address(&to) {
            rows.push(Err(Invalid {
                number,
                why: format!("`to` {to:?} is not +E164 or whatsapp:+E164"),
                to,
            }));
            continue;
        }
        let from = from_column
            .and_then(|c| record.get(c))
            .filter(|v| !v.is_empty());
        // The other columns, empty cells left out: an empty parameter or variable
        // says nothing, and Twilio refuses an empty variable.
        let values: Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .enumerate()
            .filter(|(i, (_, value))| {
                Some(*i) != Some(to_column) && Some(*i) != from_column && !value.is_empty()
            })
            .map(|(_, (name, value))| (name.clone(), json!(value)))
            .collect();
        let mut body = json!({ "to": to });
        if let Some(from) = from {
            body["from"] = json!(from);
        }
        match message {
            Message::Event(name) => body["event"] = json!({"name": name, "parameters": values}),
            Message::Template(sid) => {
                body["template"] = json!({"content_sid": sid, "variables": values})
            }
            Message::Text(text) => body["text"] = json!(text),
        }
        let idempotency_key = key(file, number, message, &record);
        body["idempotency_key"] = json!(idempotency_key);
        rows.push(Ok(Row {
            number,
            to,
            body,
            idempotency_key,
        }));
    }
    Ok(rows)
}

/// The row's idempotency key: a hash of the file, the row's number and content, and
/// the message, so that the same batch run again is the same sends, and a changed
/// row or another message is a new one.
fn key(file: &str, number: usize, message: &Message, record: &csv::StringRecord) -> String {
    let mut hash = Sha256::new();
    for part in [file, &number.to_string(), &message.fingerprint()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    for field in record {
        hash.update(field.as_bytes());
        hash.update([0x1f]);
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("csv-{hex}")
}

/// `+E164` or `whatsapp:+E164`.
fn is_address(to: &str) -> bool {
    let number = to.strip_prefix("whatsapp:").unwrap_or(to);
    number.strip_prefix('+').is_some_and(|digits| {
        (1..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// `HX` and 32 hexadecimal digits.
fn is_content_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("HX") && sid[2..].chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEOPLE: &str = "to,from,time,name\n\
        +15550001111,,7 pm,Ada\n\
        whatsapp:+15550002222,whatsapp:+14155238886,8 pm,\n\
        not-a-number,,9 pm,Bob\n";

    fn rows(message: &Message, csv: &str) -> Vec<Result<Row, Invalid>> {
        read("/batches/people.csv", message, csv.as_bytes()).unwrap()
    }

    #[test]
    fn columns_become_an_events_parameters() {
        let rows = rows(&Message::Event("appointment_reminder".into()), PEOPLE);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.number, 2);
        assert_eq!(
            first.body,
            json!({
                "to": "+15550001111",
                "event": {"name": "appointment_reminder", "parameters": {"time": "7 pm", "name": "Ada"}},
                "idempotency_key": first.idempotency_key,
            })
        );
        let second = rows[1].as_ref().unwrap();
        assert_eq!(second.body["from"], "whatsapp:+14155238886");
        assert_eq!(
            second.body["event"]["parameters"],
            json!({"time": "8 pm"}),
            "an empty cell is no parameter"
        );
        assert_eq!(
            rows[2],
            Err(Invalid {
                number: 4,
                to: "not-a-number".into(),
                why: "`to` \"not-a-number\" is not +E164 or whatsapp:+E164".into()
            })
        );
    }

    #[test]
    fn columns_become_a_templates_variables_and_text_is_sent_as_is() {
        let sid = format!("HX{}", "0".repeat(32));
        let rows_of = rows(
            &Message::Template(sid.clone()),
            "to,1,2\n+15550001111,Ada,7 pm\n",
        );
        assert_eq!(
            rows_of[0].as_ref().unwrap().body["template"],
            json!({"content_sid": sid, "variables": {"1": "Ada", "2": "7 pm"}})
        );
        let rows_of = rows(&Message::Text("We open at 9.".into()), "to\n+15550001111\n");
        let body = &rows_of[0].as_ref().unwrap().body;
        assert_eq!(body["text"], "We open at 9.");
        assert!(body.get("event").is_none() && body.get("template").is_none());
    }

    #[test]
    fn a_rows_key_depends_on_the_file_the_row_its_content_and_the_message() {
        let event = Message::Event("appointment_reminder".into());
        let key_of = |file: &str, message: &Message, csv: &str, row: usize| {
            read(file, message, csv.as_bytes()).unwrap()[row]
                .as_ref()
                .unwrap()
                .idempotency_key
                .clone()
        };
        let csv = "to,time\n+15550001111,7 pm\n+15550001111,7 pm\n";
        let key = key_of("/b/people.csv", &event, csv, 0);
        assert_eq!(key, key_of("/b/people.csv", &event, csv, 0), "stable");
        assert!(key.starts_with("csv-") && key.len() == 36, "{key}");
        assert_ne!(key, key_of("/b/people.csv", &event, csv, 1), "another row");
        assert_ne!(key, key_of("/b/other.csv", &event, csv, 0), "another file");
        let changed = "to,time\n+15550001111,8 pm\n";
        assert_ne!(
            key,
            key_of("/b/people.csv", &event, changed, 0),
            "changed row"
        );
        let other = Message::Event("order_update".into());
        assert_ne!(
            key,
            key_of("/b/people.csv", &other, csv, 0),
            "another message"
        );
    }

    #[test]
    fn a_batch_that_cannot_be_sent() {
        assert!(matches!(
            read(
                "f",
                &Message::Text("hi".into()),
                "phone,name\n+1555,A\n".as_bytes()
            ),
            Err(BatchError::NoToColumn(_))
        ));
        assert!(matches!(
            read(
                "f",
                &Message::Text("hi".into()),
                "to,name\n+15550001111\n".as_bytes()
            ),
            Err(BatchError::Csv(_))
        ));
        assert!(matches!(
            Message::parse(None, Some("HX12".into()), None),
            Err(BatchError::NotAContentSid(_))
        ));
        assert!(matches!(
            Message::parse(Some("a".into()), None, Some("b".into())),
            Err(BatchError::WhatToSend)
        ));
        assert!(matches!(
            Message::parse(None, None, None),
            Err(BatchError::WhatToSend)
        ));
        assert_eq!(
            Message::parse(Some("appointment_reminder".into()), None, None).unwrap(),
            Message::Event("appointment_reminder".into())
        );
    }

    #[test]
    fn addresses() {
        for good in ["+15550001111", "whatsapp:+442071838750", "+1"] {
            assert!(is_address(good), "{good}");
        }
        for bad in [
            "15550001111",
            "+0123",
            "+1234567890123456",
            "sms:+1555",
            "",
            "+1 555",
        ] {
            assert!(!is_address(bad), "{bad}");
        }
    }
}
