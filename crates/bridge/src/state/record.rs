//! What the state layer keeps, as typed records: every value is a serde type that
//! names its kind and is written with its version: a record with fields gets a field
//! `v` beside them, `{"v":1,…}` (so that an instance of the previous version, which
//! ignores fields it does not know, still reads it during a rolling deploy); any other
//! value is wrapped, `{"v":1,"record":…}`.
//!
//! "None" is the absence of a record, never an empty one. A record this bridge cannot
//! read (garbage, a newer version, a shape it does not know) is an [`Unreadable`]
//! error: the store logs and counts it (`state_records_unreadable_total{kind}`), and
//! the caller goes on without it; it is never taken for an empty value and written
//! back over what is there.
//!
//! Records written before versions existed (the bare JSON of the type) still read:
//! they are tried only when the versioned form does not parse.

use super::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A value the state layer keeps.
pub trait Record: Serialize + DeserializeOwned {
    /// What the record is, for logs and metrics: a fixed name, never data.
    const KIND: &'static str;
    /// The version written; records up to it are read.
    const VERSION: u32 = 1;
}

/// A record with fields as written: its version beside them.
#[derive(Serialize)]
struct Beside<'a, T> {
    v: u32,
    #[serde(flatten)]
    record: &'a T,
}

/// Any other record as written: its version, then the record.
#[derive(Serialize)]
struct Wrapped<'a, T> {
    v: u32,
    record: &'a T,
}

/// A record with fields as read back (without `v`: written before versions).
#[derive(Deserialize)]
struct BesideRead<T> {
    v: Option<u32>,
    #[serde(flatten)]
    record: T,
}

/// Any other record as read back.
#[derive(Deserialize)]
struct WrappedRead<T> {
    v: u32,
    record: T,
}

/// Only the version of a record, whatever its shape.
#[derive(Deserialize)]
struct Version {
    v: Option<u32>,
}

/// A record in its stored form, opaque to the store: made from a [`Record`], read back
/// as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored(Json);

impl Stored {
    /// `record` in its stored form.
    pub fn of<T: Record>(record: &T) -> Result<Self, Unwritable> {
        let v = T::VERSION;
        // Only a value with fields can have `v` beside them.
        let json = match serde_json::to_string(&Beside { v, record }) {
            Ok(json) => Ok(json),
            Err(_) => serde_json::to_string(&Wrapped { v, record }),
        };
        json.map(|json| Stored(json.into()))
            .map_err(|error| Unwritable {
                kind: T::KIND,
                reason: error.to_string(),
            })
    }

    /// What the store holds, as it holds it (nothing is there when it is empty).
    pub(super) fn from_text(text: Json) -> Option<Self> {
        (!text.is_empty()).then_some(Stored(text))
    }

    pub(super) fn text(&self) -> &Json {
        &self.0
    }

    /// The record this holds, read as a `T`.
    pub fn read<T: Record>(&self) -> Result<T, Unreadable> {
        let version = |v: Option<u32>| match v {
            Some(v) if v > T::VERSION => Err(Unreadable::newer(T::KIND, v)),
            _ => Ok(()),
        };
        // Most records: fields, `v` beside them (or, written before versions, not).
        let error = match serde_json::from_str::<BesideRead<T>>(&self.0) {
            Ok(read) => return version(read.v).map(|()| read.record),
            Err(error) => error,
        };
        if let Ok(read) = serde_json::from_str::<WrappedRead<T>>(&self.0) {
            return version(Some(read.v)).map(|()| read.record);
        }
        // A value without fields, written before versions.
        if let Ok(record) = serde_json::from_str::<T>(&self.0) {
            return Ok(record);
        }
        match serde_json::from_str::<Version>(&self.0) {
            // Versioned, and not a `T`: a newer shape, or a broken one.
            Ok(Version { v: Some(v) }) if v > T::VERSION => Err(Unreadable::newer(T::KIND, v)),
            _ => Err(Unreadable::malformed(T::KIND, &error)),
        }
    }
}

/// A stored record this bridge cannot read. Says where and what kind of fault, never
/// the value: records hold messages and numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("a stored {kind} record is of version {found}, newer than this bridge reads")]
    Newer { kind: &'static str, found: u32 },
    #[error("a stored {kind} record cannot be read: {fault} at line {line}, column {column}")]
    Malformed {
        kind: &'static str,
        fault: &'static str,
        line: usize,
        column: usize,
    },
}

impl Unreadable {
    fn newer(kind: &'static str, found: u32) -> Self {
        Unreadable::Newer { kind, found }
    }

    pub(super) fn malformed(kind: &'static str, error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let fault = match error.classify() {
            Category::Io => "input",
            Category::Syntax => "not JSON",
            Category::Data => "not the expected shape",
            Category::Eof => "cut short",
        };
        Unreadable::Malformed {
            kind,
            fault,
            line: error.line(),
            column: error.column(),
        }
    }

    /// The kind of record, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Unreadable::Newer { kind, .. } | Unreadable::Malformed { kind, .. } => kind,
        }
    }
}

/// A record that could not be put in its stored form (a bug: our types serialize).
#[derive(Debug, Clone, thiserror::Error)]
#[error("a {kind} record cannot be written: {reason}")]
pub struct Unwritable {
    pub kind: &'static str,
    reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Menu {
        choices: Vec<String>,
    }

    impl Record for Menu {
        const KIND: &'static str = "menu";
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(transparent)]
    struct Sid(String);

    impl Record for Sid {
        const KIND: &'static str = "content";
    }

    fn stored(text: &str) -> Stored {
        Stored::from_text(text.into()).unwrap()
    }

    #[test]
    fn a_record_reads_back_as_written_with_its_version() {
        let menu = Menu {
            choices: vec!["Small".into()],
        };
        let written = Stored::of(&menu).unwrap();
        assert_eq!(&**written.text(), r#"{"v":1,"choices":["Small"]}"#);
        assert_eq!(written.read::<Menu>(), Ok(menu));
        let sid = Stored::of(&Sid("HX1".into())).unwrap();
        assert_eq!(&**sid.text(), r#"{"v":1,"record":"HX1"}"#);
        assert_eq!(sid.read::<Sid>(), Ok(Sid("HX1".into())));
    }

    #[test]
    fn records_written_before_versions_still_read() {
        assert_eq!(
            stored(r#"{"choices":["Large"]}"#).read::<Menu>(),
            Ok(Menu {
                choices: vec!["Large".into()]
            })
        );
        assert_eq!(stored(r#""HX9""#).read::<Sid>(), Ok(Sid("HX9".into())));
    }

    #[test]
    fn the_previous_version_reads_a_record_with_fields_by_ignoring_v() {
        let written = Stored::of(&Menu {
            choices: vec!["Small".into()],
        })
        .unwrap();
        // What the previous version does: the bare type, unknown fields ignored.
        let read: Menu = serde_json::from_str(written.text()).unwrap();
        assert_eq!(read.choices, vec!["Small".to_owned()]);
    }

    #[test]
    fn nothing_stored_is_none_not_an_empty_record() {
        assert_eq!(Stored::from_text("".into()), None);
    }

    #[test]
    fn what_cannot_be_read_is_an_error_that_names_no_value() {
        let newer = stored(r#"{"v":7,"menu":{"other":"shape"}}"#).read::<Menu>();
        assert_eq!(newer, Err(Unreadable::newer("menu", 7)));
        let newer_same_shape = stored(r#"{"v":7,"choices":[]}"#).read::<Menu>();
        assert_eq!(newer_same_shape, Err(Unreadable::newer("menu", 7)));
        let broken = stored(r#"{"v":1,"choices":"+15551234567"}"#).read::<Menu>();
        let Err(error) = broken else {
            panic!("read a broken record")
        };
        assert_eq!(error.kind(), "menu");
        assert!(!error.to_string().contains("555"), "{error}");
        let garbage = stored("{not json").read::<Menu>();
        assert!(
            matches!(
                garbage,
                Err(Unreadable::Malformed {
                    fault: "not JSON",
                    ..
                })
            ),
            "{garbage:?}"
        );
    }
}
