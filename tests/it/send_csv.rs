//! `twilio-dialogflow send --csv`: a batch through a real bridge's `/outbound`, as an
//! operator runs it; run twice, it sends once.

use crate::helpers::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

const OUTBOUND_TOKEN: &str = "batch-token-0123456789";

/// The people of the batch: `count` SMS numbers, then a WhatsApp number that never
/// wrote (free text there needs a template) and a number that is not one.
fn people(count: usize) -> String {
    let mut csv = String::from("to,from,name\n");
    for i in 0..count {
        csv.push_str(&format!("+1555{i:07},{OUR_NUMBER},Person {i}\n"));
    }
    csv.push_str(&format!(
        "whatsapp:+15559990000,whatsapp:{OUR_NUMBER},Silent\n"
    ));
    csv.push_str(&format!("12345,{OUR_NUMBER},Nobody\n"));
    csv
}

/// The command `send` of `people.csv` in `dir` with `extra`, to `bridge`.
fn send(dir: &WorkDir, bridge: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "send",
        "--csv",
        "people.csv",
        "--text",
        "Our opening hours change on Monday.",
        "--url",
        bridge,
    ];
    args.extend_from_slice(extra);
    dir.command(&args, &[("OUTBOUND_TOKEN", OUTBOUND_TOKEN)])
}

/// `row` → (outcome, id, error) from the results CSV.
fn results(dir: &WorkDir) -> HashMap<String, (String, String, String)> {
    let text = std::fs::read_to_string(dir.0.join("people.results.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.splitn(6, ',').collect();
            (
                fields[0].to_owned(),
                (fields[2].into(), fields[3].into(), fields[4].into()),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_batch_of_a_thousand_is_queued_once_even_run_twice() {
    const PEOPLE: usize = 1000;
    let stack = start(
        "CX",
        set(&[("REPLY_MODE", "api"), ("OUTBOUND_TOKEN", OUTBOUND_TOKEN)]),
    )
    .await;
    let dir = WorkDir::with_dotenv("");
    dir.write("people.csv", &people(PEOPLE));
    let bridge = stack.bridge.url();

    // A dry run checks and shows, and sends nothing.
    let (code, shown) = output_of(send(&dir, &bridge, &["--dry-run"])).await;
    assert_eq!(code, 1, "a row is not a number: {shown}");
    assert!(
        shown.contains("dry run: 1001 rows would be sent, 1 not (nothing was sent)"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            r#"row 2: POST /outbound {{"from":"{OUR_NUMBER}","idempotency_key":"csv-"#
        )),
        "{shown}"
    );
    assert!(
        shown.contains("row 1003: not sent: `to` \"12345\" is not +E164"),
        "{shown}"
    );
    assert!(stack.twilio.sent().is_empty());

    let (code, summary) = output_of(send(&dir, &bridge, &[])).await;
    assert_eq!(code, 0, "refusals are answers, not failures: {summary}");
    assert!(
        summary.contains(&format!(
            "{} rows of {} to {bridge}outbound\n  queued: {PEOPLE}\n  refused: 1 (template_required: 1)\n  failed: 0\n  invalid: 1\n",
            PEOPLE + 2,
            std::fs::canonicalize(dir.0.join("people.csv")).unwrap().display()
        )),
        "{summary}"
    );
    let first = results(&dir);
    assert_eq!(first.len(), PEOPLE + 2);
    assert_eq!(first["1002"].0, "refused");
    assert_eq!(first["1002"].2, "template_required");
    assert_eq!(first["1003"].0, "invalid");
    let settled = every_row_settled(&stack, &first, PEOPLE).await;

    // The same batch again: the bridge knows every key, and sends nothing new.
    let (code, again) = output_of(send(&dir, &bridge, &[])).await;
    assert_eq!(code, 0, "{again}");
    assert!(again.contains(&format!("queued: {PEOPLE}\n")), "{again}");
    let second = results(&dir);
    for (row, (outcome, id, _)) in &first {
        if outcome == "queued" {
            assert_eq!(&second[row].1, id, "row {row} is the first run's send");
        }
    }
    quiet_window(Duration::from_secs(2)).await;
    let sent = stack.twilio.sent();
    let mut people: Vec<&str> = sent.iter().map(|m| m.to.as_str()).collect();
    people.sort_unstable();
    people.dedup();
    assert_eq!(
        (sent.len(), people.len()),
        (settled, settled),
        "the second run sent nothing, and nobody got the message twice"
    );
    assert!(sent
        .iter()
        .all(|m| m.body == "Our opening hours change on Monday."));
}

#[tokio::test]
async fn a_wrong_token_stops_the_batch() {
    let stack = start(
        "CX",
        set(&[("REPLY_MODE", "api"), ("OUTBOUND_TOKEN", OUTBOUND_TOKEN)]),
    )
    .await;
    let dir = WorkDir::with_dotenv("OUTBOUND_TOKEN=not-the-token-0123456789\n");
    dir.write("people.csv", &people(20));
    let bridge = stack.bridge.url();
    // The token from `.env`, as the command reads every setting.
    let command = dir.command(
        &[
            "send",
            "--csv",
            "people.csv",
            "--text",
            "hi",
            "--url",
            &bridge,
        ],
        &[],
    );
    let output = command_output(command).await;
    assert_eq!(output.0, 1);
    assert!(
        output.1.contains("the bridge refused OUTBOUND_TOKEN (401)"),
        "{}",
        output.1
    );
    assert!(stack.twilio.sent().is_empty());
}

/// Waits until every queued row was sent, or the bridge gave it up (`failed`, with
/// its reason: a request to Twilio that went unanswered is never repeated); fails
/// naming any row that is neither, with what `GET /outbound/{id}` says of it.
/// Returns how many were sent.
async fn every_row_settled(
    stack: &Stack,
    results: &HashMap<String, (String, String, String)>,
    count: usize,
) -> usize {
    // Until all are sent, or a minute passes with none sent.
    let mut before = 0;
    loop {
        let now = stack.twilio.wait_for(count).await.len();
        if now >= count || now == before {
            break;
        }
        before = now;
    }
    let sent: Vec<String> = stack.twilio.sent().into_iter().map(|m| m.to).collect();
    let csv = people(count);
    let mut unsettled = Vec::new();
    for (row, line) in csv.lines().enumerate().skip(1) {
        let to = line.split(',').next().unwrap_or_default();
        let (outcome, id, _) = &results[&(row + 1).to_string()];
        if outcome == "queued" && !sent.iter().any(|s| s == to) {
            let status: serde_json::Value = reqwest::Client::new()
                .get(format!("{}outbound/{id}", stack.bridge.url()))
                .bearer_auth(OUTBOUND_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            if status["status"] != "failed" || !status["reason"].is_string() {
                unsettled.push(format!("row {}: {status}", row + 1));
            }
        }
    }
    assert!(
        unsettled.is_empty(),
        "{} of {count} rows sent; neither sent nor failed: {unsettled:#?}",
        sent.len()
    );
    sent.len()
}

/// The exit code of `command` and all it printed, standard error included.
async fn command_output(mut command: Command) -> (i32, String) {
    let output = tokio::task::spawn_blocking(move || command.output().expect("send runs"))
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}
