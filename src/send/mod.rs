//! `twilio-dialogflow send --csv people.csv`: a batch of messages the business starts,
//! one a row, through a running bridge's `POST /outbound`.
//!
//! Each row carries its own idempotency key ([`rows`]), so that a batch run again
//! (after a crash, a lost connection, a second click) sends nothing twice: the bridge
//! answers a key it has seen with its first answer. Rows go out a few at a time;
//! a progress bar shows on a terminal; a summary and a CSV of results say how each
//! row ended.

mod rows;

use anyhow::Context;
use futures_util::stream::{self, StreamExt};
pub use rows::Message;
use rows::{Invalid, Row};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How a batch is sent.
pub struct Options {
    pub csv: PathBuf,
    pub message: Message,
    /// The bridge's `/outbound` URL.
    pub outbound_url: String,
    /// `OUTBOUND_TOKEN`; needed unless `dry_run`.
    pub token: Option<String>,
    /// Where the results go [default: beside the CSV, `NAME.results.csv`].
    pub results: Option<PathBuf>,
    pub concurrency: usize,
    pub dry_run: bool,
}

/// How one row ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The bridge took it (202), with the id `GET /outbound/{id}` follows.
    Queued { id: String },
    /// The bridge refused it (4xx), with its error code and words.
    Refused { code: String, message: String },
    /// It could not be handed over (the bridge unreachable, or failing).
    Failed { why: String },
    /// Not sent: the row itself is wrong.
    Invalid { why: String },
}

/// How many times a row is tried while the bridge cannot be reached or fails.
const ATTEMPTS: u32 = 3;

pub async fn run(options: Options) -> anyhow::Result<ExitCode> {
    let file = std::fs::canonicalize(&options.csv)
        .with_context(|| format!("cannot read {}", options.csv.display()))?;
    let reader =
        std::fs::File::open(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let rows = rows::read(&file.to_string_lossy(), &options.message, reader)?;
    if options.dry_run {
        return Ok(dry_run(&rows));
    }
    let token = options.token.clone().context(
        "OUTBOUND_TOKEN is not set (in the environment or .env): the bridge's /outbound needs it",
    )?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot create the HTTP client")?;
    let progress = progress_bar(rows.len() as u64);
    let unauthorized = AtomicBool::new(false);
    let sender = Sender {
        client: &client,
        url: &options.outbound_url,
        token: &token,
        unauthorized: &unauthorized,
    };
    let mut outcomes: Vec<(usize, String, Outcome)> = stream::iter(rows)
        .map(|row| {
            let (sender, progress) = (&sender, &progress);
            async move {
                let ended = match row {
                    Ok(row) => (row.number, row.to.clone(), sender.send(&row).await),
                    Err(Invalid { number, to, why }) => (number, to, Outcome::Invalid { why }),
                };
                progress.inc(1);
                ended
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    progress.finish_and_clear();
    outcomes.sort_by_key(|(number, _, _)| *number);
    let results = options
        .results
        .clone()
        .unwrap_or_else(|| results_beside(&file));
    write_results(&results, &outcomes)?;
    print!(
        "{}",
        summary(&file, &options.outbound_url, &outcomes, &results)
    );
    if unauthorized.load(Ordering::Relaxed) {
        anyhow::bail!("the bridge refused OUTBOUND_TOKEN (401): nothing more was sent");
    }
    let failed = outcomes
        .iter()
        .any(|(_, _, o)| matches!(o, Outcome::Failed { .. }));
    // Refusals are answers; a failure is a row to send again, which a second run
    // does without sending the others twice.
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints what each row would send, and how many.
fn dry_run(rows: &[Result<Row, Invalid>]) -> ExitCode {
    let mut invalid = 0;
    for row in rows {
        match row {
            Ok(row) => println!("row {}: POST /outbound {}", row.number, row.body),
            Err(Invalid { number, why, .. }) => {
                invalid += 1;
                println!("row {number}: not sent: {why}");
            }
        }
    }
    println!(
        "dry run: {} rows would be sent, {invalid} not (nothing was sent)",
        rows.len() - invalid
    );
    if invalid > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A bar on a terminal (standard error), none elsewhere.
fn progress_bar(rows: u64) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(rows);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} rows sent ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

struct Sender<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    token: &'a str,
    unauthorized: &'a AtomicBool,
}

impl Sender<'_> {
    /// Sends `row`, again after a failure that may not have reached the bridge or a
    /// failure of the bridge: the row's key makes the repeat safe.
    async fn send(&self, row: &Row) -> Outcome {
        let mut attempt = 0;
        loop {
            if self.unauthorized.load(Ordering::Relaxed) {
                return Outcome::Failed {
                    why: "not sent: the bridge refused OUTBOUND_TOKEN".into(),
                };
            }
            attempt += 1;
            let outcome = self.once(row).await;
            let again = match &outcome {
                Outcome::Failed { .. } => true,
                Outcome::Refused { code, .. } => code == "too_many_requests",
                _ => false,
            };
            if !again || attempt >= ATTEMPTS {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
    }

    async fn once(&self, row: &Row) -> Outcome {
        let response = self
            .client
            .post(self.url)
            .bearer_auth(self.token)
            .header("idempotency-key", &row.idempotency_key)
            .json(&row.body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Outcome::Failed {
                    why: format!("cannot reach {}: {error}", self.url),
                }
            }
        };
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let text = |name: &str| answer[name].as_str().unwrap_or_default().to_owned();
        match status.as_u16() {
            200..=299 => Outcome::Queued { id: text("id") },
            401 => {
                self.unauthorized.store(true, Ordering::Relaxed);
                Outcome::Refused {
                    code: "unauthorized".into(),
                    message: text("message"),
                }
            }
            429 => Outcome::Refused {
                code: "too_many_requests".into(),
                message: text("message"),
            },
            400..=499 => Outcome::Refused {
                code: match text("error") {
                    code if code.is_empty() => format!("http_{}", status.as_u16()),
                    code => code,
                },
                message: text("message"),
            },
            _ => Outcome::Failed {
                why: format!("the bridge answered HTTP {status}"),
            },
        }
    }
}

/// `people.csv` → `people.results.csv`, beside it.
fn results_beside(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or_else(|| "batch".into(), |s| s.to_string_lossy().into_owned());
    file.with_file_name(format!("{stem}.results.csv"))
}

fn write_results(path: &Path, outcomes: &[(usize, String, Outcome)]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path)
        .with_context(|| format!("cannot write the results to {}", path.display()))?;
    writer.write_record(["row", "to", "outcome", "id", "error", "message"])?;
    for (number, to, outcome) in outcomes {
        let number = number.to_string();
        let record: [&str; 6] = match outcome {
            Outcome::Queued { id } => [&number, to, "queued", id, "", ""],
            Outcome::Refused { code, message } => [&number, to, "refused", "", code, message],
            Outcome::Failed { why } => [&number, to, "failed", "", "", why],
            Outcome::Invalid { why } => [&number, to, "invalid", "", "", why],
        };
        writer.write_record(record)?;
    }
    writer
        .flush()
        .with_context(|| format!("cannot write the results to {}", path.display()))?;
    Ok(())
}

/// What the batch came to: counts by outcome, refusals by reason.
fn summary(
    file: &Path,
    url: &str,
    outcomes: &[(usize, String, Outcome)],
    results: &Path,
) -> String {
    let mut queued = 0;
    let mut failed = 0;
    let mut invalid = 0;
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, outcome) in outcomes {
        match outcome {
            Outcome::Queued { .. } => queued += 1,
            Outcome::Refused { code, .. } => *refused.entry(code).or_default() += 1,
            Outcome::Failed { .. } => failed += 1,
            Outcome::Invalid { .. } => invalid += 1,
        }
    }
    let reasons: Vec<String> = refused
        .iter()
        .map(|(code, count)| format!("{code}: {count}"))
        .collect();
    let refused_total: usize = refused.values().sum();
    let mut text = format!(
        "{} rows of {} to {url}\n  queued: {queued}\n  refused: {refused_total}",
        outcomes.len(),
        file.display()
    );
    if !reasons.is_empty() {
        text.push_str(&format!(" ({})", reasons.join(", ")));
    }
    text.push_str(&format!(
        "\n  failed: {failed}\n  invalid: {invalid}\nresults in {}\n",
        results.display()
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_refusals_by_reason() {
        let outcomes = vec![
            (2, "+1".into(), Outcome::Queued { id: "a".into() }),
            (
                3,
                "+2".into(),
                Outcome::Refused {
                    code: "opted_out".into(),
                    message: String::new(),
                },
            ),
            (
                4,
                "+3".into(),
                Outcome::Refused {
                    code: "opted_out".into(),
                    message: String::new(),
                },
            ),
            (
                5,
                "+4".into(),
                Outcome::Refused {
                    code: "template_required".into(),
                    message: String::new(),
                },
            ),
            (6, "x".into(), Outcome::Invalid { why: "bad".into() }),
            (7, "+5".into(), Outcome::Failed { why: "down".into() }),
        ];
        let text = summary(
            Path::new("/b/people.csv"),
            "http://127.0.0.1:8080/outbound",
            &outcomes,
            Path::new("/b/people.results.csv"),
        );
        assert_eq!(
            text,
            "6 rows of /b/people.csv to http://127.0.0.1:8080/outbound\n  queued: 1\n  refused: 3 (opted_out: 2, template_required: 1)\n  failed: 1\n  invalid: 1\nresults in /b/people.results.csv\n"
        );
    }

    #[test]
    fn results_go_beside_the_batch() {
        assert_eq!(
            results_beside(Path::new("/b/people.csv")),
            PathBuf::from("/b/people.results.csv")
        );
    }
}
