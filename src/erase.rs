//! `twilio-dialogflow erase PERSON [--sender S] [--url URL]`: erases a person through a
//! running bridge's `POST /privacy/erase` (token: `PRIVACY_TOKEN`) and prints what was
//! removed, by kind. It holds no erasure logic: the bridge that keeps the data removes
//! it, with its store, its processes and its hand-over destination.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

/// How long the bridge may take: an erasure scans the store.
const TIMEOUT: Duration = Duration::from_secs(120);

/// What to erase, and where.
pub struct Options {
    pub person: String,
    pub sender: Option<String>,
    /// The bridge's `/privacy/erase` URL.
    pub erase_url: String,
    /// `PRIVACY_TOKEN`.
    pub token: Option<String>,
}

pub async fn run(options: Options) -> anyhow::Result<ExitCode> {
    let Some(token) = options.token else {
        bail!("PRIVACY_TOKEN is not set (in the environment or .env): the bridge's /privacy/erase needs it");
    };
    let mut body = json!({"person": options.person.trim()});
    if let Some(sender) = &options.sender {
        body["sender"] = json!(sender.trim());
    }
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .context("cannot create an HTTP client")?;
    let response = client
        .post(&options.erase_url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the bridge at {} (is it running? --url sets where)",
                options.erase_url
            )
        })?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    match status.as_u16() {
        200 => {}
        401 => bail!("the bridge refused PRIVACY_TOKEN (401): it is not the one the bridge has"),
        404 => bail!(
            "the bridge at {} has no /privacy/erase (404): set PRIVACY_TOKEN where it runs",
            options.erase_url
        ),
        code => bail!(
            "the bridge refused the erasure ({code}): {}",
            answer["message"].as_str().unwrap_or("no reason given")
        ),
    }
    print!("{}", summary(&answer));
    Ok(ExitCode::SUCCESS)
}

/// The bridge's answer, for people.
fn summary(answer: &Value) -> String {
    let mut lines = String::new();
    let total = answer["total"].as_u64().unwrap_or(0);
    if total == 0 {
        lines.push_str("Nothing was kept of this person: nothing was removed.\n");
    } else {
        lines.push_str(&format!(
            "Removed {total} item(s) from {} conversation(s):\n",
            answer["conversations"].as_u64().unwrap_or(0)
        ));
        for (kind, n) in answer["removed"].as_object().into_iter().flatten() {
            lines.push_str(&format!("  {kind:<26} {n}\n"));
        }
    }
    if answer["opt_out_kept"].as_bool() == Some(true) {
        lines.push_str(
            "The opt-out was kept (as a keyed hash): they must not be written to until they send START.\n",
        );
    }
    let events = answer["events"].as_u64().unwrap_or(0);
    if events > 0 {
        lines.push_str(&format!(
            "The hand-over destination is told ({events} person.erased event(s)).\n"
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_each_kind_and_says_when_nothing_went() {
        let shown = summary(&json!({
            "removed": {"pending_menus": 1, "turns": 2},
            "total": 3, "conversations": 1, "opt_out_kept": true, "events": 1
        }));
        assert!(
            shown.contains("Removed 3 item(s) from 1 conversation(s)"),
            "{shown}"
        );
        assert!(shown.contains("pending_menus"), "{shown}");
        assert!(shown.contains("opt-out was kept"), "{shown}");
        assert!(shown.contains("1 person.erased"), "{shown}");
        let none = summary(&json!({"removed": {}, "total": 0, "conversations": 0}));
        assert!(none.starts_with("Nothing was kept"), "{none}");
    }
}
