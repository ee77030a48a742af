//! The routes file (`ROUTES_FILE`) as written: YAML (of which JSON is a part), every
//! field a string as the operator typed it, unknown fields refused. What the fields
//! mean, and whether they are right, is [`super::routes_file`]'s to say.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The routes file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub accounts: Vec<AccountSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchSpec,
    pub agent: AgentSpec,
    pub language: Option<String>,
    /// The sender's country (`FromCountry`, ISO 3166 alpha-2) to a language code.
    #[serde(default)]
    pub languages: BTreeMap<String, String>,
    pub session_ttl: Option<String>,
    pub fallback_message: Option<String>,
    pub reply_mode: Option<String>,
    /// Whether the route answers the webhooks of every account the bridge takes. By
    /// default a route is its own account's: `match.account_sid`, else
    /// `TWILIO_ACCOUNT_SID`'s; a sub-account writing to its number is not its to answer.
    #[serde(default)]
    pub any_account: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    pub to: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub account_sid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub project: Option<String>,
    pub location: Option<String>,
    pub id: Option<String>,
    pub environment: Option<String>,
    /// The Dialogflow API host (`DF_ENDPOINT` of this route).
    pub endpoint: Option<String>,
    /// `host:port` of a local emulator, for trying routes without Google.
    pub emulator_host: Option<String>,
}

/// A Twilio account (or sub-account) whose webhooks the bridge takes, by the names of
/// the variables that hold its secrets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub sid: String,
    pub auth_token_env: String,
    pub auth_token_secondary_env: Option<String>,
    pub api_key_sid: Option<String>,
    pub api_key_secret_env: Option<String>,
}

impl RoutesFile {
    /// Reads a routes file: YAML, of which JSON is a part.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_reads_the_documented_shape() {
        let file = RoutesFile::parse(
            r#"
routes:
  - name: france
    match: { to: "+33170000001" }
    agent: { type: CX, project: proj-fr, location: europe-west1, id: agent-fr, environment: prod }
    language: fr
    languages: { CA: en }
accounts:
  - sid: AC0123456789abcdef0123456789abcdef
    auth_token_env: TOKEN_FR
"#,
        )
        .unwrap();
        assert_eq!(file.routes[0].name.as_deref(), Some("france"));
        assert_eq!(file.routes[0].agent.environment.as_deref(), Some("prod"));
        assert_eq!(file.accounts[0].auth_token_env, "TOKEN_FR");
        assert!(RoutesFile::parse("routes: [{ agent: {}, colour: blue }]").is_err());
    }
}
