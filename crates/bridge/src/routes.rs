//! Many numbers, many agents: which route a webhook takes. The routes file
//! (`ROUTES_FILE`) that lists them is read with the rest of the configuration
//! (`config::routes_file`).
//!
//! A route matches on the number written to (`To`; written without `whatsapp:` it
//! matches the SMS number and the WhatsApp sender alike), the `MessagingServiceSid` and
//! the `AccountSid`, each optional, all given ones required; the first route that
//! matches wins. Today's variables (`AGENT_ID`, …) make the last, catch-all route, so a
//! `.env` without a routes file works as it always did. Secrets never sit in the file:
//! an account names the variables that hold its tokens.
//!
//! Matching is an index lookup, not a scan: a thousand routes cost what one does.

use std::collections::HashMap;

/// What a route matches on; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    pub to: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub account_sid: Option<String>,
}

/// What of a webhook routes it.
#[derive(Debug, Clone, Copy)]
pub struct Addressed<'a> {
    pub to: &'a str,
    pub messaging_service_sid: Option<&'a str>,
    pub account_sid: &'a str,
}

impl Matcher {
    pub fn matches(&self, webhook: &Addressed<'_>) -> bool {
        let to = self
            .to
            .as_deref()
            .is_none_or(|to| to == webhook.to || webhook.to.strip_prefix("whatsapp:") == Some(to));
        to && self
            .messaging_service_sid
            .as_deref()
            .is_none_or(|sid| webhook.messaging_service_sid == Some(sid))
            && self
                .account_sid
                .as_deref()
                .is_none_or(|sid| sid == webhook.account_sid)
    }
}

/// Finds the first matching route among many without looking at each: every route is
/// filed under the most selective thing it matches on.
#[derive(Debug, Default)]
pub struct Index {
    matchers: Vec<Matcher>,
    by_to: HashMap<String, Vec<usize>>,
    by_service: HashMap<String, Vec<usize>>,
    by_account: HashMap<String, Vec<usize>>,
    /// Routes that match on nothing (the default).
    anything: Vec<usize>,
}

impl Index {
    pub fn new(matchers: Vec<Matcher>) -> Self {
        let mut index = Index::default();
        for (i, matcher) in matchers.iter().enumerate() {
            let filed = match (
                &matcher.to,
                &matcher.messaging_service_sid,
                &matcher.account_sid,
            ) {
                (Some(to), _, _) => index.by_to.entry(to.clone()),
                (None, Some(sid), _) => index.by_service.entry(sid.clone()),
                (None, None, Some(sid)) => index.by_account.entry(sid.clone()),
                (None, None, None) => {
                    index.anything.push(i);
                    continue;
                }
            };
            filed.or_default().push(i);
        }
        index.matchers = matchers;
        index
    }

    /// The first route (by its place in the file) that matches `webhook`.
    pub fn find(&self, webhook: &Addressed<'_>) -> Option<usize> {
        let candidates = [
            self.by_to.get(webhook.to),
            webhook
                .to
                .strip_prefix("whatsapp:")
                .and_then(|bare| self.by_to.get(bare)),
            webhook
                .messaging_service_sid
                .and_then(|sid| self.by_service.get(sid)),
            self.by_account.get(webhook.account_sid),
            Some(&self.anything),
        ];
        candidates
            .into_iter()
            .flatten()
            .filter_map(|list| {
                list.iter()
                    .copied()
                    .find(|&i| self.matchers[i].matches(webhook))
            })
            .min()
    }

    pub fn len(&self) -> usize {
        self.matchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(number: &str) -> Matcher {
        Matcher {
            to: Some(number.into()),
            ..Matcher::default()
        }
    }

    fn webhook<'a>(to: &'a str, service: Option<&'a str>) -> Addressed<'a> {
        Addressed {
            to,
            messaging_service_sid: service,
            account_sid: "AC1",
        }
    }

    #[test]
    fn a_bare_number_matches_sms_and_whatsapp_and_a_whatsapp_one_only_whatsapp() {
        let index = Index::new(vec![
            to("whatsapp:+33100"),
            to("+33100"),
            Matcher::default(),
        ]);
        assert_eq!(index.find(&webhook("whatsapp:+33100", None)), Some(0));
        assert_eq!(index.find(&webhook("+33100", None)), Some(1));
        assert_eq!(index.find(&webhook("+44200", None)), Some(2));
    }

    #[test]
    fn the_first_route_that_matches_wins_and_every_criterion_counts() {
        let index = Index::new(vec![
            Matcher {
                to: Some("+33100".into()),
                messaging_service_sid: Some("MG1".into()),
                account_sid: None,
            },
            Matcher {
                messaging_service_sid: Some("MG1".into()),
                ..Matcher::default()
            },
            Matcher {
                account_sid: Some("AC1".into()),
                ..Matcher::default()
            },
            to("+33100"),
        ]);
        assert_eq!(index.find(&webhook("+33100", Some("MG1"))), Some(0));
        assert_eq!(index.find(&webhook("+33999", Some("MG1"))), Some(1));
        assert_eq!(index.find(&webhook("+33100", None)), Some(2));
        let other_account = Addressed {
            account_sid: "AC2",
            ..webhook("+33100", None)
        };
        assert_eq!(index.find(&other_account), Some(3));
        let nothing = Addressed {
            account_sid: "AC2",
            ..webhook("+1", None)
        };
        assert_eq!(index.find(&nothing), None);
    }
}
