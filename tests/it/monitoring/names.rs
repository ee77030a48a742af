//! The metric names a PromQL query reads, and whether `/metrics` has them.
//!
//! A query is parsed with `promql-parser` (the PromQL grammar, not a guess at it), and
//! every selector's metric name is taken: the bare name (`foo_total{…}`) or the
//! `__name__` matcher (`{__name__="foo_total"}`). Each name is then looked up among the
//! series the exposition's `# TYPE` lines promise, so a family that has not been touched
//! yet (no sample) still counts, and a histogram's `_bucket`, `_sum` and `_count` lead
//! back to it.

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{walk_expr, ExprVisitor};
use std::collections::{BTreeMap, BTreeSet};

/// The metric names `query` selects. Refuses a query that does not parse, a selector
/// with no exact name, and a `__name__` matched by a pattern: Managed Service for
/// Prometheus matches metric names exactly only, and a pattern could not be checked.
pub fn metric_names(query: &str) -> Result<BTreeSet<String>, String> {
    let expr = parser::parse(query).map_err(|error| format!("does not parse: {error}"))?;
    let mut names = Names::default();
    walk_expr(&mut names, &expr)?;
    Ok(names.0)
}

#[derive(Default)]
struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(selector) => self.0.insert(name_of(selector)?),
            Expr::MatrixSelector(matrix) => self.0.insert(name_of(&matrix.vs)?),
            _ => true,
        };
        Ok(true)
    }
}

fn name_of(selector: &VectorSelector) -> Result<String, String> {
    let by_matcher = selector
        .matchers
        .matchers
        .iter()
        .chain(selector.matchers.or_matchers.iter().flatten())
        .filter(|matcher| matcher.name == "__name__")
        .map(|matcher| match matcher.op {
            MatchOp::Equal => Ok(matcher.value.clone()),
            _ => Err(format!(
                "matches __name__ with `{}`: Managed Service for Prometheus takes exact names only",
                matcher.op
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    match (&selector.name, by_matcher.as_slice()) {
        (Some(name), []) => Ok(name.clone()),
        (None, [name]) => Ok(name.clone()),
        _ => Err(format!("selector `{selector}` names no single metric")),
    }
}

/// What a scrape of `/metrics` offers: each series name a family's `# TYPE` promises,
/// and the family it belongs to.
pub struct Exposition {
    /// Series name → (family, type).
    series: BTreeMap<String, (String, String)>,
}

impl Exposition {
    /// Reads the `# TYPE` lines of the text exposition format (Prometheus' and
    /// OpenMetrics'). Samples are not needed: a family is declared before its samples,
    /// and declared even when it has none yet.
    pub fn parse(text: &str) -> Self {
        let mut series = BTreeMap::new();
        for line in text.lines() {
            let Some(declaration) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let mut words = declaration.split_whitespace();
            let (Some(family), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            for name in series_of(family, kind) {
                series.insert(name, (family.to_owned(), kind.to_owned()));
            }
        }
        Self { series }
    }

    /// The families declared, for messages.
    pub fn families(&self) -> BTreeSet<&str> {
        self.series
            .values()
            .map(|(family, _)| family.as_str())
            .collect()
    }

    /// The family a query's metric `name` reads, if the exposition has it. Besides the
    /// series names a scrape shows, takes the name Cloud Monitoring stores a Managed
    /// Service for Prometheus metric under, `prometheus.googleapis.com/NAME/KIND`
    /// (`KIND` as its exporter writes it: `counter` after a counter's `_total` series,
    /// `histogram` after the family's own name).
    pub fn family_of(&self, name: &str) -> Option<&str> {
        let (base, kind) = match name.strip_prefix("prometheus.googleapis.com/") {
            None => (name, None),
            Some(stored) => {
                let (base, kind) = stored.rsplit_once('/')?;
                (base, Some(kind))
            }
        };
        match kind {
            None => self.series.get(base).map(|(family, _)| family.as_str()),
            // A histogram is stored under the family's own name, which is no series.
            Some("histogram") => self
                .series
                .get(&format!("{base}_count"))
                .filter(|(family, declared)| family == base && declared == "histogram")
                .map(|(family, _)| family.as_str()),
            Some(kind) => {
                let (family, declared) = self.series.get(base)?;
                let fits = match kind.split(':').next() {
                    Some("counter") => declared == "counter",
                    Some("gauge") => declared == "gauge",
                    Some("summary") => declared == "summary",
                    Some("unknown") => declared == "unknown" || declared == "untyped",
                    _ => false,
                };
                fits.then_some(family.as_str())
            }
        }
    }
}

/// The series names a family of `kind` is scraped as, per the exposition formats: a
/// counter's samples end in `_total` (prometheus-client declares the family without
/// it), a histogram's in `_bucket`, `_sum` and `_count`; `_created` is OpenMetrics'.
fn series_of(family: &str, kind: &str) -> Vec<String> {
    let with = |suffixes: &[&str]| {
        suffixes
            .iter()
            .map(|suffix| format!("{family}{suffix}"))
            .collect()
    };
    match kind {
        "counter" if family.ends_with("_total") => vec![family.to_owned()],
        "counter" => with(&["_total", "_created"]),
        "histogram" | "gaugehistogram" => with(&["_bucket", "_sum", "_count", "_created"]),
        "summary" => with(&["", "_sum", "_count", "_created"]),
        "info" => with(&["_info"]),
        _ => with(&[""]),
    }
}

/// Grafana's own interval variables replaced by a duration, so the query parses as
/// PromQL; any other variable is refused (the dashboard declares none).
pub fn without_grafana_variables(query: &str) -> Result<String, String> {
    let mut expanded = query.to_owned();
    for variable in [
        "$__rate_interval",
        "${__rate_interval}",
        "$__interval",
        "$__range",
    ] {
        expanded = expanded.replace(variable, "5m");
    }
    match expanded.contains('$') {
        true => Err(format!(
            "`{query}` uses a variable the dashboard does not declare"
        )),
        false => Ok(expanded),
    }
}

/// The `docs/NAME.md#anchor` references in `text`.
pub fn doc_links(text: &str) -> Vec<(String, String)> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("docs/") {
        rest = &rest[start + "docs/".len()..];
        let Some((file, after)) = rest.split_once(".md#") else {
            break;
        };
        if !file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            continue;
        }
        let anchor: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        links.push((format!("docs/{file}.md"), anchor));
    }
    links
}

/// The anchors GitHub gives a Markdown file's headings: lower case, punctuation but `-`
/// and `_` dropped, spaces as `-`.
pub fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter(|line| line.starts_with('#'))
        .filter_map(|line| line.trim_start_matches('#').strip_prefix(' '))
        .map(|heading| {
            heading
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# HELP twilio_dialogflow_webhooks Incoming-message webhooks by outcome.
# TYPE twilio_dialogflow_webhooks counter
twilio_dialogflow_webhooks_total{outcome=\"answered\"} 3
# HELP twilio_dialogflow_agent_latency_seconds Time waiting for Dialogflow.
# TYPE twilio_dialogflow_agent_latency_seconds histogram
twilio_dialogflow_agent_latency_seconds_sum 0.5
twilio_dialogflow_agent_latency_seconds_count 3
twilio_dialogflow_agent_latency_seconds_bucket{le=\"0.005\"} 1
# HELP twilio_dialogflow_connections_open HTTP connections open now.
# TYPE twilio_dialogflow_connections_open gauge
twilio_dialogflow_connections_open 1
# HELP twilio_dialogflow_handoff_events Hand-over events, by result.
# TYPE twilio_dialogflow_handoff_events counter
# EOF
";

    fn names(query: &str) -> Vec<String> {
        metric_names(query).unwrap().into_iter().collect()
    }

    #[test]
    fn names_come_from_every_selector_and_nothing_else() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.95, sum by (le) (rate(a_bucket{job="x"}[5m])))
                   / on() group_left sum(rate(b_total{reason=~"shed|refused"}[5m] offset 1h))
                   and {__name__="c"} > 0.5 or vector(1) unless count(d) by (status)"#
            ),
            ["a_bucket", "b_total", "c", "d"]
        );
    }

    #[test]
    fn a_query_that_does_not_parse_or_names_no_metric_is_refused() {
        assert!(metric_names("sum(rate(a_total[5m])").is_err());
        assert!(metric_names(r#"{job="x"}"#).is_err());
        assert!(metric_names(r#"{__name__=~"twilio_.*"}"#)
            .unwrap_err()
            .contains("exact names only"));
    }

    #[test]
    fn series_lead_back_to_their_family_even_without_samples() {
        let scrape = Exposition::parse(SCRAPE);
        for (name, family) in [
            (
                "twilio_dialogflow_webhooks_total",
                "twilio_dialogflow_webhooks",
            ),
            (
                "twilio_dialogflow_agent_latency_seconds_bucket",
                "twilio_dialogflow_agent_latency_seconds",
            ),
            (
                "twilio_dialogflow_agent_latency_seconds_count",
                "twilio_dialogflow_agent_latency_seconds",
            ),
            (
                "twilio_dialogflow_connections_open",
                "twilio_dialogflow_connections_open",
            ),
            // Declared, never touched: no sample, still there.
            (
                "twilio_dialogflow_handoff_events_total",
                "twilio_dialogflow_handoff_events",
            ),
        ] {
            assert_eq!(scrape.family_of(name), Some(family), "{name}");
        }
    }

    #[test]
    fn a_wrong_name_is_not_found() {
        let scrape = Exposition::parse(SCRAPE);
        for wrong in [
            // Misspelt, as a dashboard might.
            "twilio_dialogflow_webhook_total",
            // The family's own name is not a counter's series.
            "twilio_dialogflow_webhooks",
            // A counter has no buckets, a gauge no `_total`.
            "twilio_dialogflow_webhooks_bucket",
            "twilio_dialogflow_connections_open_total",
            "twilio_dialogflow_agent_latency_seconds",
        ] {
            assert_eq!(scrape.family_of(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn managed_prometheus_stored_names_lead_back_to_their_family() {
        let scrape = Exposition::parse(SCRAPE);
        assert_eq!(
            scrape.family_of("prometheus.googleapis.com/twilio_dialogflow_webhooks_total/counter"),
            Some("twilio_dialogflow_webhooks")
        );
        assert_eq!(
            scrape.family_of(
                "prometheus.googleapis.com/twilio_dialogflow_agent_latency_seconds/histogram"
            ),
            Some("twilio_dialogflow_agent_latency_seconds")
        );
        assert_eq!(
            scrape.family_of("prometheus.googleapis.com/twilio_dialogflow_connections_open/gauge"),
            Some("twilio_dialogflow_connections_open")
        );
        // The right name with the wrong kind is another metric.
        assert_eq!(
            scrape
                .family_of("prometheus.googleapis.com/twilio_dialogflow_connections_open/counter"),
            None
        );
        assert_eq!(
            scrape
                .family_of("prometheus.googleapis.com/twilio_dialogflow_webhooks_total/histogram"),
            None
        );
    }

    #[test]
    fn grafana_intervals_become_durations_and_other_variables_are_refused() {
        assert_eq!(
            without_grafana_variables("rate(a_total[$__rate_interval])").unwrap(),
            "rate(a_total[5m])"
        );
        assert!(without_grafana_variables(r#"a_total{job="$job"}"#).is_err());
    }

    #[test]
    fn doc_links_and_heading_anchors_match_as_github_makes_them() {
        let anchors = heading_anchors(
            "# Title\n## Hand-over: the helpdesk gets nothing, or the person hears \"no one can take over\"\n\
             ## Replies never arrive with `REPLY_MODE=api` or `auto`\nnot # a heading\n",
        );
        assert!(anchors.contains(
            "hand-over-the-helpdesk-gets-nothing-or-the-person-hears-no-one-can-take-over"
        ));
        assert!(anchors.contains("replies-never-arrive-with-reply_modeapi-or-auto"));
        assert!(!anchors.contains("not-a-heading"));
        assert_eq!(
            doc_links("see docs/troubleshooting.md#the-store, then docs/monitoring.md#alerts."),
            [
                ("docs/troubleshooting.md".to_owned(), "the-store".to_owned()),
                ("docs/monitoring.md".to_owned(), "alerts".to_owned())
            ]
        );
    }
}
