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
    /// Only the first N matches fail with `error`; later ones answer normally.
    pub fail_first: Option<u32>,
}

/// One response message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub text: Option<String>,
    pub payload: Option<Map<String, Value>>,
    /// CX only: sent only when the request's `queryParams.channel` matches.
    pub channel: Option<String>,
    /// ES only: the platform of the message (`SLACK`, `FACEBOOK`, …); none is the
    /// default platform.
    pub platform: Option<String>,
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
        let problem = |message: String| {
            Err(EmulatorError::Parse {
                source_name: "agent definition".into(),
                message,
            })
        };
        for intent in &self.intents {
            if intent.phrases.is_empty() && intent.events.is_empty() {
                return problem(format!(
                    "intent {:?} has neither phrases nor events",
                    intent.name
                ));
            }
            if intent.fail_first.is_some() && intent.error.is_none() {
                return problem(format!(
                    "intent {:?} has fail_first without error",
                    intent.name
                ));
            }
            for reply in intent.replies.iter().chain(&self.fallback.replies) {
                if reply.text.is_none() && reply.payload.is_none() {
                    return problem(format!(
                        "a reply of intent {:?} has neither text nor payload",
                        intent.name
                    ));
                }
                if let Some(platform) = &reply.platform {
                    if super::wire::platform_number(platform).is_none() {
                        return problem(format!(
                            "unknown platform {platform:?} in intent {:?}",
                            intent.name
                        ));
                    }
                }
            }
        }
        Ok(self)
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
