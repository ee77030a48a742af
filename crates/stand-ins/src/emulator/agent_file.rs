//! The agent file: what the emulated agent knows, in YAML or JSON.
//!
//! Small on purpose: intents with training phrases or events, their replies, an
//! optional session parameter to capture, and fault injection (delay, error). The
//! format is documented in docs/agent-file.md.

use super::EmulatorError;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::Path;

/// A parsed agent file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefinition {
    pub(crate) project: String,
    #[serde(default = "global")]
    pub(crate) location: String,
    pub(crate) agent_id: String,
    #[serde(default = "english")]
    pub(crate) language: String,
    #[serde(default)]
    pub(crate) intents: Vec<Intent>,
    #[serde(default)]
    pub(crate) fallback: Fallback,
}

fn global() -> String {
    "global".to_owned()
}

fn english() -> String {
    "en".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    pub name: String,
    #[serde(default)]
    pub phrases: Vec<String>,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub replies: Vec<Reply>,
    pub capture: Option<Capture>,
    /// Answer only after this many milliseconds.
    pub delay_ms: Option<u64>,
    /// Answer with this Google error instead.
    pub error: Option<InjectedError>,
    /// Answer with this misbehaviour instead (a front end's HTML page, garbage, a
    /// connection closed mid-answer, no answer at all).
    pub fault: Option<Fault>,
    /// Only the first N matches fail with `error` or `fault`; later ones answer normally.
    pub fail_first: Option<u32>,
}

/// How an agent can misbehave beyond a Google error, for fault tests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// An HTTP status with a body that is not Google's error JSON, as Google's front
    /// ends answer during incidents (`502` with an HTML page).
    Http {
        status: u16,
        #[serde(default)]
        body: String,
    },
    /// 200 with a body that is not Dialogflow's JSON.
    Garbage,
    /// The start of an answer, then the connection closes.
    Close,
    /// No answer at all.
    Hang,
}

/// One response message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub text: Option<String>,
    pub payload: Option<Map<String, Value>>,
    /// A question with answers to pick: ES `quickReplies`; in CX, Messenger
    /// `richContent` chips.
    pub quick_replies: Option<QuickReplies>,
    /// A card: ES `card`; in CX, Messenger `richContent` (image, info, chips).
    pub card: Option<Card>,
    /// A hand-over to a person, with its metadata: CX `liveAgentHandoff`; in ES, a
    /// custom payload `{"twilio": {"handoff": ...}}`.
    pub handoff: Option<Map<String, Value>>,
    /// CX only: sent only when the request's `queryParams.channel` matches.
    pub channel: Option<String>,
    /// ES only: the platform of the message (`SLACK`, `FACEBOOK`, …); none is the
    /// default platform.
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickReplies {
    #[serde(default)]
    pub title: String,
    pub replies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub subtitle: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub buttons: Vec<CardButton>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardButton {
    pub text: String,
    /// What the agent gets when the button is tapped (ES), or a link to open.
    #[serde(default)]
    pub postback: String,
}

/// Sets a session parameter to the first of `values` that the text contains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    pub parameter: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectedError {
    pub code: u16,
    pub status: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    #[serde(default)]
    pub replies: Vec<Reply>,
}

impl AgentDefinition {
    /// Reads a `.json` file as JSON, anything else as YAML.
    pub fn load(path: &Path) -> Result<Self, EmulatorError> {
        let text = std::fs::read_to_string(path).map_err(|e| EmulatorError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        let parsed = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())
        };
        parsed
            .map_err(|message| EmulatorError::Parse {
                source_name: path.display().to_string(),
                message,
            })
            .and_then(Self::checked)
    }

    pub fn from_yaml_str(text: &str) -> Result<Self, EmulatorError> {
        serde_yaml_ng::from_str(text)
            .map_err(|e| EmulatorError::Parse {
                source_name: "agent definition".into(),
                message: e.to_string(),
            })
            .and_then(Self::checked)
    }

    fn checked(self) -> Result<Self, EmulatorError> {
        let invalid = |message: String| {
            Err(EmulatorError::Parse {
                source_name: "agent definition".into(),
                message,
            })
        };
        for intent in &self.intents {
            if intent.phrases.is_empty() && intent.events.is_empty() {
                return invalid(format!(
                    "intent {:?} has neither phrases nor events",
                    intent.name
                ));
            }
            if intent.fail_first.is_some() && intent.error.is_none() && intent.fault.is_none() {
                return invalid(format!(
                    "intent {:?} has fail_first without error or fault",
                    intent.name
                ));
            }
            if let Some(problem) = Self::reply_problem(&intent.replies) {
                return invalid(format!("intent {:?}: {problem}", intent.name));
            }
        }
        if let Some(problem) = Self::reply_problem(&self.fallback.replies) {
            return invalid(format!("the fallback: {problem}"));
        }
        Ok(self)
    }

    /// What is wrong with one of `replies`, if anything.
    fn reply_problem(replies: &[Reply]) -> Option<String> {
        replies.iter().find_map(|reply| {
            let kinds = [
                reply.text.is_some(),
                reply.payload.is_some(),
                reply.quick_replies.is_some(),
                reply.card.is_some(),
                reply.handoff.is_some(),
            ];
            match kinds.iter().filter(|k| **k).count() {
                0 => {
                    return Some(
                        "a reply has neither text nor payload (nor quick_replies, card, handoff)"
                            .to_owned(),
                    )
                }
                1 => {}
                _ => return Some(
                    "a reply has more than one of text, payload, quick_replies, card and handoff"
                        .to_owned(),
                ),
            }
            let platform = reply.platform.as_ref()?;
            super::wire::platform_number(platform)
                .is_none()
                .then(|| format!("unknown platform {platform:?}"))
        })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub fn language(&self) -> &str {
        &self.language
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(yaml: &str) -> String {
        match AgentDefinition::from_yaml_str(yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(error) => error.to_string(),
        }
    }

    const HEAD: &str = "project: p\nlocation: global\nagent_id: a\nlanguage: en\n";

    #[test]
    fn the_fallback_is_checked_even_with_no_intents_and_is_named() {
        let error = problem(&format!(
            "{HEAD}intents: []\nfallback:\n  replies:\n    - text: ok\n      platform: MYSPACE\n"
        ));
        assert!(
            error.contains("the fallback: unknown platform \"MYSPACE\""),
            "{error}"
        );
    }

    #[test]
    fn an_intents_bad_reply_names_the_intent() {
        let error = problem(&format!(
            "{HEAD}intents:\n  - name: hello\n    phrases: [hi]\n    replies:\n      - channel: TWILIO\n"
        ));
        assert!(
            error.contains("intent \"hello\": a reply has neither text nor payload"),
            "{error}"
        );
    }
}
