//! The files of `deploy/monitoring/`, read as their importers read them: the shape each
//! must have, and the PromQL queries in it, each with where it stands.
//!
//! - Cloud Monitoring's dashboard: the `Dashboard` resource (`displayName`, a
//!   `mosaicLayout` of at most 48 columns whose `tiles` hold `xyChart` widgets, each data
//!   set a `timeSeriesQuery.prometheusQuery`).
//! - Cloud Monitoring's alert policies: an `AlertPolicy` each, its conditions
//!   `conditionPrometheusQueryLanguage` with a `query`, a `duration` and an
//!   `evaluationInterval` as protobuf durations (`"600s"`), and `documentation`.
//! - Grafana's dashboard: the JSON model as exported for sharing, its data source the
//!   input `DS_PROMETHEUS`, panels on a 24-column grid.
//! - Prometheus' alerting rules: `groups` of `rules` with `alert`, `expr`, `for`.

use serde_json::Value;
use std::path::Path;

/// One PromQL query, and where it stands (file and tile, panel or alert).
#[derive(Debug)]
pub struct Query {
    pub place: String,
    pub promql: String,
}

/// A tile of Cloud Monitoring's dashboard, or a panel of Grafana's.
#[derive(Debug)]
pub struct Panel {
    pub title: String,
    pub queries: Vec<Query>,
}

/// An alert, as a policy's condition or a Prometheus rule.
#[derive(Debug)]
pub struct Alert {
    /// The Prometheus rule's `alert`, and a condition's `alertRule`: the one name both
    /// files give the same alert.
    pub name: String,
    pub query: Query,
    /// What the alert says to whoever it wakes.
    pub documentation: String,
}

/// The text of `file`, parsed as JSON or (`.yaml`) YAML.
pub fn read(file: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let parsed = match file.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => serde_yaml_ng::from_str(&text).map_err(|e| e.to_string()),
        _ => serde_json::from_str(&text).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| format!("{}: {e}", file.display()))
}

/// `json[key]`, or where it is missing.
fn at<'a>(json: &'a Value, place: &str, key: &str) -> Result<&'a Value, String> {
    json.get(key)
        .filter(|value| !value.is_null())
        .ok_or_else(|| format!("{place}: no `{key}`"))
}

/// `json[key]`, a string that says something.
fn text<'a>(json: &'a Value, place: &str, key: &str) -> Result<&'a str, String> {
    at(json, place, key)?
        .as_str()
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| format!("{place}: `{key}` is not a text"))
}

/// `json[key]`, a list with something in it.
fn list<'a>(json: &'a Value, place: &str, key: &str) -> Result<&'a Vec<Value>, String> {
    at(json, place, key)?
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or_else(|| format!("{place}: `{key}` is not a list with something in it"))
}

/// `json[key]`, a whole number; `default` if it is absent (the API's zero).
fn number(json: &Value, place: &str, key: &str, default: Option<u64>) -> Result<u64, String> {
    match (json.get(key), default) {
        (None, Some(default)) => Ok(default),
        (value, _) => value
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{place}: `{key}` is not a whole number")),
    }
}

/// A protobuf `Duration` in JSON: seconds, with an `s` (`"600s"`, `"0.5s"`).
fn protobuf_duration(json: &Value, place: &str, key: &str) -> Result<(), String> {
    let duration = text(json, place, key)?;
    let seconds = duration.strip_suffix('s').unwrap_or("x");
    match seconds.parse::<f64>() {
        Ok(seconds) if seconds >= 0.0 => Ok(()),
        _ => Err(format!(
            "{place}: `{key}` {duration:?} is not a duration like \"600s\""
        )),
    }
}

/// A Prometheus duration (`10m`, `0s`, `1h30m`).
fn prometheus_duration(json: &Value, place: &str, key: &str) -> Result<(), String> {
    let duration = text(json, place, key)?;
    let mut rest = duration;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|unit| rest[digits..].starts_with(unit));
        match (digits, unit) {
            (1.., Some(unit)) => rest = &rest[digits + unit.len()..],
            _ => {
                return Err(format!(
                    "{place}: `{key}` {duration:?} is not a duration like 10m"
                ))
            }
        }
    }
    Ok(())
}

/// Cloud Monitoring's dashboard: its tiles, each with its queries.
pub fn cloud_monitoring_dashboard(json: &Value, file: &str) -> Result<Vec<Panel>, String> {
    text(json, file, "displayName")?;
    let layout = at(json, file, "mosaicLayout")?;
    let columns = number(layout, file, "columns", None)?;
    if !(1..=48).contains(&columns) {
        return Err(format!(
            "{file}: a mosaic has 1 to 48 columns, not {columns}"
        ));
    }
    let mut taken: Vec<(u64, u64, u64, u64, String)> = Vec::new();
    let mut panels = Vec::new();
    for (i, tile) in list(layout, file, "tiles")?.iter().enumerate() {
        let place = format!("{file}: tile {i}");
        let widget = at(tile, &place, "widget")?;
        let title = text(widget, &place, "title")?.to_owned();
        let place = format!("{file}: tile {title:?}");
        let (x, y) = (
            number(tile, &place, "xPos", Some(0))?,
            number(tile, &place, "yPos", Some(0))?,
        );
        let (width, height) = (
            number(tile, &place, "width", None)?,
            number(tile, &place, "height", None)?,
        );
        if width == 0 || height == 0 || x + width > columns {
            return Err(format!("{place}: does not fit the {columns} columns"));
        }
        if let Some((.., other)) = taken.iter().find(|(ox, oy, ow, oh, _)| {
            x < ox + ow && *ox < x + width && y < oy + oh && *oy < y + height
        }) {
            return Err(format!("{place}: overlaps tile {other:?}"));
        }
        taken.push((x, y, width, height, title.clone()));
        let chart = at(widget, &place, "xyChart")?;
        let queries = list(chart, &place, "dataSets")?
            .iter()
            .map(|set| {
                let query = at(set, &place, "timeSeriesQuery")?;
                Ok(Query {
                    place: place.clone(),
                    promql: text(query, &place, "prometheusQuery")?.to_owned(),
                })
            })
            .collect::<Result<_, String>>()?;
        panels.push(Panel { title, queries });
    }
    Ok(panels)
}

/// Grafana's dashboard: its panels, each with its queries as written (Grafana's own
/// interval variables still in them).
pub fn grafana_dashboard(json: &Value, file: &str) -> Result<Vec<Panel>, String> {
    let declares_source = list(json, file, "__inputs")?.iter().any(|input| {
        input["name"] == "DS_PROMETHEUS"
            && input["type"] == "datasource"
            && input["pluginId"] == "prometheus"
    });
    if !declares_source {
        return Err(format!(
            "{file}: no `__inputs` data source DS_PROMETHEUS of Prometheus"
        ));
    }
    text(json, file, "title")?;
    text(json, file, "uid")?;
    number(json, file, "schemaVersion", None)?;
    let source = |json: &Value, place: &str| -> Result<(), String> {
        let source = at(json, place, "datasource")?;
        match source["type"] == "prometheus" && source["uid"] == "${DS_PROMETHEUS}" {
            true => Ok(()),
            false => Err(format!(
                "{place}: its data source is not ${{DS_PROMETHEUS}}"
            )),
        }
    };
    let mut panels = Vec::new();
    for (i, panel) in list(json, file, "panels")?.iter().enumerate() {
        let title = text(panel, &format!("{file}: panel {i}"), "title")?.to_owned();
        let place = format!("{file}: panel {title:?}");
        text(panel, &place, "type")?;
        source(panel, &place)?;
        let grid = at(panel, &place, "gridPos")?;
        let (x, width) = (
            number(grid, &place, "x", None)?,
            number(grid, &place, "w", None)?,
        );
        number(grid, &place, "y", None)?;
        if width == 0 || x + width > 24 || number(grid, &place, "h", None)? == 0 {
            return Err(format!("{place}: does not fit Grafana's 24 columns"));
        }
        let mut queries = Vec::new();
        for target in list(panel, &place, "targets")? {
            source(target, &place)?;
            text(target, &place, "refId")?;
            queries.push(Query {
                place: place.clone(),
                promql: text(target, &place, "expr")?.to_owned(),
            });
        }
        panels.push(Panel { title, queries });
    }
    Ok(panels)
}

/// A Cloud Monitoring alert policy: an alert per condition, each with the policy's
/// documentation.
pub fn alert_policy(json: &Value, file: &str) -> Result<Vec<Alert>, String> {
    text(json, file, "displayName")?;
    let documentation = at(json, file, "documentation")?;
    let content = text(documentation, file, "content")?;
    if documentation["mimeType"] != "text/markdown" {
        return Err(format!("{file}: documentation is not text/markdown"));
    }
    let combiner = text(json, file, "combiner")?;
    if !["OR", "AND", "AND_WITH_MATCHING_RESOURCE"].contains(&combiner) {
        return Err(format!("{file}: no combiner {combiner:?}"));
    }
    list(json, file, "conditions")?
        .iter()
        .map(|condition| {
            let place = format!(
                "{file}: condition {:?}",
                text(condition, file, "displayName")?
            );
            let promql = at(condition, &place, "conditionPrometheusQueryLanguage")?;
            protobuf_duration(promql, &place, "duration")?;
            protobuf_duration(promql, &place, "evaluationInterval")?;
            Ok(Alert {
                name: text(promql, &place, "alertRule")?.to_owned(),
                query: Query {
                    promql: text(promql, &place, "query")?.to_owned(),
                    place,
                },
                documentation: content.to_owned(),
            })
        })
        .collect()
}

/// Prometheus' alerting rules: every rule of every group.
pub fn prometheus_rules(yaml: &Value, file: &str) -> Result<Vec<Alert>, String> {
    let mut alerts = Vec::new();
    for group in list(yaml, file, "groups")? {
        let place = format!("{file}: group {:?}", text(group, file, "name")?);
        for rule in list(group, &place, "rules")? {
            let name = text(rule, &place, "alert")?.to_owned();
            let place = format!("{place}: alert {name:?}");
            prometheus_duration(rule, &place, "for")?;
            text(at(rule, &place, "labels")?, &place, "severity")?;
            let annotations = at(rule, &place, "annotations")?;
            text(annotations, &place, "summary")?;
            alerts.push(Alert {
                name,
                documentation: text(annotations, &place, "description")?.to_owned(),
                query: Query {
                    promql: text(rule, &place, "expr")?.to_owned(),
                    place,
                },
            });
        }
    }
    Ok(alerts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tile_without_a_query_is_refused() {
        let dashboard = json!({
            "displayName": "d",
            "mosaicLayout": {"columns": 48, "tiles": [
                {"width": 24, "height": 16, "widget": {"title": "t", "xyChart": {"dataSets": [
                    {"timeSeriesQuery": {"timeSeriesFilter": {"filter": "metric.type=\"x\""}}}
                ]}}}
            ]}
        });
        let refused = cloud_monitoring_dashboard(&dashboard, "d.json").unwrap_err();
        assert!(refused.contains("prometheusQuery"), "{refused}");
    }

    #[test]
    fn overlapping_tiles_are_refused() {
        let tile = |x: u64| {
            json!({"xPos": x, "width": 24, "height": 16, "widget": {"title": format!("t{x}"),
                "xyChart": {"dataSets": [{"timeSeriesQuery": {"prometheusQuery": "up"}}]}}})
        };
        let dashboard =
            |tiles| json!({"displayName": "d", "mosaicLayout": {"columns": 48, "tiles": tiles}});
        assert!(cloud_monitoring_dashboard(&dashboard(vec![tile(0), tile(24)]), "d").is_ok());
        let refused =
            cloud_monitoring_dashboard(&dashboard(vec![tile(0), tile(12)]), "d").unwrap_err();
        assert!(refused.contains("overlaps"), "{refused}");
    }

    #[test]
    fn a_condition_without_a_duration_is_refused() {
        let policy = |condition: Value| {
            json!({"displayName": "p", "combiner": "OR",
                "documentation": {"content": "what to do", "mimeType": "text/markdown"},
                "conditions": [{"displayName": "c", "conditionPrometheusQueryLanguage": condition}]})
        };
        let good = json!({"query": "up == 0", "duration": "300s", "evaluationInterval": "60s", "alertRule": "Down"});
        assert_eq!(alert_policy(&policy(good), "p").unwrap()[0].name, "Down");
        for bad in [
            json!({"query": "up == 0", "evaluationInterval": "60s", "alertRule": "Down"}),
            json!({"query": "up == 0", "duration": "5m", "evaluationInterval": "60s", "alertRule": "Down"}),
            json!({"duration": "300s", "evaluationInterval": "60s", "alertRule": "Down"}),
        ] {
            assert!(alert_policy(&policy(bad.clone()), "p").is_err(), "{bad}");
        }
    }

    #[test]
    fn prometheus_durations_are_read_as_prometheus_reads_them() {
        for good in ["0s", "10m", "1h30m", "500ms"] {
            assert!(
                prometheus_duration(&json!({"for": good}), "r", "for").is_ok(),
                "{good}"
            );
        }
        for bad in ["10", "m", "10 m", "600s5"] {
            assert!(
                prometheus_duration(&json!({"for": bad}), "r", "for").is_err(),
                "{bad}"
            );
        }
    }
}
