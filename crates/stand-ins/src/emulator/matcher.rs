//! Picks the intent for a query: a test double's matching, not an NLU.
//!
//! Text is normalised (lower case, letters and digits only); an exact phrase wins,
//! otherwise the phrase sharing the largest part of its words with the text, if it
//! shares at least half. Events match the intents that list them.

use super::agent_file::Intent;
use std::collections::HashSet;

/// The index of the matched intent and the confidence, or `None` for no match.
pub fn match_text(intents: &[Intent], text: &str) -> Option<(usize, f32)> {
    let query = normalise(text);
    let query_words: HashSet<&str> = query.split(' ').filter(|w| !w.is_empty()).collect();
    let mut best: Option<(usize, f32)> = None;
    for (index, intent) in intents.iter().enumerate() {
        for phrase in &intent.phrases {
            let phrase = normalise(phrase);
            let score = if phrase == query {
                1.0
            } else {
                let words: HashSet<&str> = phrase.split(' ').filter(|w| !w.is_empty()).collect();
                let shared = words.intersection(&query_words).count() as f32;
                let size = words.len().max(query_words.len()).max(1) as f32;
                // Below 1.0, so that an exact phrase elsewhere still wins.
                0.99 * shared / size
            };
            if score >= 0.5 && best.is_none_or(|(_, b)| score > b) {
                best = Some((index, score));
            }
        }
    }
    best
}

pub fn match_event(intents: &[Intent], event: &str) -> Option<usize> {
    intents
        .iter()
        .position(|i| i.events.iter().any(|e| e == event))
}

pub fn normalise(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first of `values` that appears as a word of `text`.
pub fn capture<'a>(values: &'a [String], text: &str) -> Option<&'a String> {
    let text = normalise(text);
    let words: HashSet<&str> = text.split(' ').collect();
    values
        .iter()
        .find(|v| words.contains(normalise(v).as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(name: &str, phrases: &[&str]) -> Intent {
        Intent {
            name: name.into(),
            phrases: phrases.iter().map(|p| p.to_string()).collect(),
            events: vec![],
            replies: vec![],
            capture: None,
            delay_ms: None,
            error: None,
            fault: None,
            fail_first: None,
        }
    }

    #[test]
    fn exact_phrases_win_then_overlap_then_nothing() {
        let intents = vec![
            intent("menu", &["menu"]),
            intent("es", &["es menu"]),
            intent("order", &["I want a pizza"]),
        ];
        assert_eq!(match_text(&intents, "ES Menu!"), Some((1, 1.0)));
        assert_eq!(match_text(&intents, "menu"), Some((0, 1.0)));
        assert_eq!(
            match_text(&intents, "i want a big pizza").map(|m| m.0),
            Some(2)
        );
        assert_eq!(match_text(&intents, "what is the weather"), None);
    }

    #[test]
    fn captures_a_value_by_word() {
        let values = vec!["small".to_string(), "large".to_string()];
        assert_eq!(capture(&values, "A LARGE one please"), Some(&values[1]));
        assert_eq!(capture(&values, "largest"), None);
    }
}
