//! The configuration read whole: each kind of bad value, with and without a routes file.

use super::*;
use std::time::Duration;

const SID: &str = "AC0123456789abcdef0123456789abcdef";

fn vars(pairs: &[(&str, &str)]) -> Vars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_seed_env_file_works_unchanged() {
    let settings = Settings::from_vars(&vars(&[
        ("AGENT_LOCATION", "us-central1"),
        ("DF_ENDPOINT", "us-central1-dialogflow.googleapis.com"),
        ("AGENT_TYPE", "CX"),
        ("AGENT_ID", "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"),
        ("LANGUAGE_CODE", "en"),
        ("SESSION_TTL", "12h"),
        ("GCP_PROJECT", "my-project"),
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", "token"),
    ]))
    .unwrap();
    assert_eq!(settings.port, 8080);
    assert_eq!(
        settings.routes[0].agent.kind,
        AgentKind::Cx {
            agent_id: "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab".into(),
            session_ttl: Some(Duration::from_secs(12 * 3600))
        }
    );
    assert_eq!(
        settings.routes[0].agent.endpoint.url(),
        "https://us-central1-dialogflow.googleapis.com"
    );
    assert_eq!(settings.twilio.trust_proxy, None);
    assert_eq!(
        settings.routes[0].fallback_message,
        DEFAULT_FALLBACK_MESSAGE
    );
}

#[test]
fn defaults_follow_the_location_and_cloud_run() {
    let settings = Settings::from_vars(&vars(&[
        ("AGENT_TYPE", "es"),
        ("GOOGLE_CLOUD_PROJECT", "p"),
        ("AGENT_LOCATION", "europe-west2"),
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", "token"),
        ("TWILIO_AUTH_TOKEN_SECONDARY", "next"),
        ("K_SERVICE", "bridge"),
        ("PORT", "9000"),
    ]))
    .unwrap();
    assert_eq!(settings.routes[0].agent.kind, AgentKind::Es);
    assert_eq!(
        settings.routes[0].agent.endpoint.url(),
        "https://europe-west2-dialogflow.googleapis.com"
    );
    assert_eq!(settings.twilio.trust_proxy, std::num::NonZeroUsize::new(1));
    assert_eq!(settings.port, 9000);
    assert_eq!(settings.twilio.auth_tokens.len(), 2);
}

#[test]
fn the_emulator_host_wins_over_the_endpoint() {
    let settings = Settings::from_vars(&vars(&[
        ("AGENT_TYPE", "CX"),
        ("AGENT_ID", "pizza"),
        ("GCP_PROJECT", "p"),
        ("DF_ENDPOINT", "dialogflow.googleapis.com"),
        ("DIALOGFLOW_EMULATOR_HOST", "127.0.0.1:8085"),
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", "token"),
    ]))
    .unwrap();
    assert_eq!(
        settings.routes[0].agent.endpoint,
        Endpoint::Emulator {
            host: "127.0.0.1:8085".into()
        }
    );
}

#[test]
fn every_problem_is_reported_at_once_naming_the_variable() {
    let errors = Settings::from_vars(&vars(&[
        ("PORT", "eighty"),
        ("AGENT_TYPE", "DX"),
        ("SESSION_TTL", "forever"),
        ("TWILIO_ACCOUNT_SID", "SK123"),
        ("TRUST_PROXY", "maybe"),
        ("TWILIO_WEBHOOK_URL", "example.com/hook"),
        ("AGENT_TIMEOUT", "30s"),
        ("REPLY_MODE", "twiml"),
        ("TWILIO_API_KEY_SID", "SK1"),
    ]))
    .unwrap_err();
    let names: Vec<String> = errors.0.iter().map(|e| e.place.to_string()).collect();
    assert_eq!(
        names,
        vec![
            "PORT",
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "TWILIO_WEBHOOK_URL",
            "TRUST_PROXY",
            "GCP_PROJECT",
            "AGENT_TYPE",
            "SESSION_TTL",
            "AGENT_ID",
            "AGENT_TIMEOUT",
            "TWILIO_API_KEY_SECRET"
        ]
    );
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let settings = Settings::from_vars(&vars(&[
        ("AGENT_TYPE", "ES"),
        ("GCP_PROJECT", "p"),
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", "super-secret-token"),
    ]))
    .unwrap();
    assert!(!format!("{settings:?}").contains("super-secret-token"));
}

#[test]
fn ids_are_keyed_with_session_key_or_a_key_derived_from_the_token() {
    use crate::session::{KeyOrigin, SessionId};
    let derived = Settings::from_vars(&with_agent()).unwrap();
    assert_eq!(
        derived.session_key.origin(),
        KeyOrigin::DerivedFromAuthToken
    );
    assert!(derived
        .warnings()
        .iter()
        .any(|w| w.starts_with("SESSION_KEY is not set")));
    let mut vars = with_agent();
    vars.insert("SESSION_KEY".into(), "k".repeat(32));
    let configured = Settings::from_vars(&vars).unwrap();
    assert_eq!(configured.session_key.origin(), KeyOrigin::Configured);
    assert!(
        !configured
            .warnings()
            .iter()
            .any(|w| w.contains("SESSION_KEY")),
        "{:?}",
        configured.warnings()
    );
    let id = |settings: &Settings| {
        SessionId::for_conversation(&settings.session_key, SID, "+15551234567", "+18005550000")
    };
    assert_ne!(id(&derived), id(&configured));
    // Every instance with the same settings derives the same ids.
    assert_eq!(
        id(&derived),
        id(&Settings::from_vars(&with_agent()).unwrap())
    );
}

/// The variables of a bridge with one CX agent, and no routes file.
fn with_agent() -> Vars {
    vars(&[
        ("AGENT_TYPE", "CX"),
        ("AGENT_ID", "agent"),
        ("GCP_PROJECT", "p"),
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", "token"),
    ])
}

/// A routes file of the test's own (tests run in parallel), removed when dropped.
struct RoutesFile(std::path::PathBuf);

impl RoutesFile {
    fn new(text: &str) -> Self {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "twilio-dialogflow-routes-{}-{}.yaml",
            std::process::id(),
            FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for RoutesFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const ONE_ROUTE: &str = r#"
routes:
  - name: france
    match: { to: "+33170000001" }
    agent: { type: CX, project: p, id: agent-fr }
"#;

/// The variables of a bridge whose only agent is in a routes file: no agent variables.
fn with_routes_file(file: &RoutesFile) -> Vars {
    vars(&[
        ("ROUTES_FILE", &file.0.display().to_string()),
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", "token"),
    ])
}

/// What kind of problem a bad value is, for the table below.
#[derive(Debug, PartialEq)]
enum Kind {
    Missing,
    Invalid,
    /// Invalid, and its value never shown: it may hold a secret.
    Secret,
    Conflict,
}

fn kind_of(problem: &Problem) -> Kind {
    match problem {
        Problem::Missing { .. } => Kind::Missing,
        Problem::Invalid { got: Some(_), .. } => Kind::Invalid,
        Problem::Invalid { got: None, .. } => Kind::Secret,
        Problem::Conflict(_) | Problem::Unreadable(_) => Kind::Conflict,
    }
}

/// Each kind of bad value, by the variable it is set in: `None` unsets the variable.
const BAD_VALUES: &[(&str, Option<&str>, Kind)] = &[
    // Durations.
    ("SESSION_TTL", Some("banana"), Kind::Invalid),
    ("SESSION_TTL", Some("48h"), Kind::Invalid),
    ("AGENT_TIMEOUT", Some("999h"), Kind::Invalid),
    ("AGENT_TIMEOUT", Some("200s"), Kind::Invalid),
    ("AGENT_RETRY_WINDOW", Some("0s"), Kind::Invalid),
    ("STATE_TIMEOUT", Some("soon"), Kind::Invalid),
    ("HANDOFF_TTL", Some("forever"), Kind::Invalid),
    ("REPLY_DEADLINE", Some("20s"), Kind::Invalid),
    ("MENU_TTL", Some("-1"), Kind::Invalid),
    ("REQUEST_TIMEOUT", Some("banana"), Kind::Invalid),
    ("REPLAY_WINDOW", Some("a day"), Kind::Invalid),
    ("REPLAY_WINDOW", Some("1m"), Kind::Conflict),
    // Numbers.
    ("PORT", Some("eighty"), Kind::Invalid),
    ("MAX_CONNECTIONS", Some("0"), Kind::Invalid),
    ("MAX_HEADER_BYTES", Some("4096"), Kind::Invalid),
    ("METRICS_PORT", Some("eighty"), Kind::Invalid),
    ("RATE_LIMIT_PER_CONVERSATION", Some("lots"), Kind::Invalid),
    // Modes and kinds.
    ("REPLY_MODE", Some("sometimes"), Kind::Invalid),
    ("AGENT_TYPE", Some("DX"), Kind::Invalid),
    ("TRUST_PROXY", Some("maybe"), Kind::Invalid),
    ("STATE_AUTH", Some("token"), Kind::Invalid),
    // URLs.
    ("TWILIO_WEBHOOK_URL", Some("bot.example.com"), Kind::Invalid),
    ("TWILIO_API_BASE_URL", Some("api.twilio.com"), Kind::Invalid),
    ("STATE_URL", Some("http://:pw@redis"), Kind::Secret),
    // Ids.
    ("AGENT_LOCATION", Some("europe west"), Kind::Invalid),
    ("AGENT_ENVIRONMENT", Some("envs/prod"), Kind::Invalid),
    ("TWILIO_ACCOUNT_SID", Some("SK123"), Kind::Invalid),
    ("TWILIO_MESSAGING_SERVICE_SID", Some("MG1"), Kind::Invalid),
    ("LANGUAGE_BY_COUNTRY", Some("France:fr"), Kind::Invalid),
    // Missing.
    ("TWILIO_AUTH_TOKEN", None, Kind::Missing),
    ("TWILIO_API_KEY_SECRET", None, Kind::Missing),
    // Secrets and keys: never shown.
    ("TWILIO_WEBHOOK_KEYS", Some("k1:s3cret"), Kind::Secret),
    (
        "TWILIO_AUTH_TOKEN__ACnot-a-sid",
        Some("s3cret"),
        Kind::Secret,
    ),
    ("HANDOFF_SECRET", Some("whsec_c2hvcnQ="), Kind::Secret),
    ("HANDOFF_TOKEN", Some("short"), Kind::Secret),
    ("METRICS_TOKEN", Some("s3cret"), Kind::Secret),
    (
        "SESSION_KEY",
        Some("thirty-one-bytes-is-one-too-few"),
        Kind::Secret,
    ),
    // Fine alone, not with the rest.
    ("STATE_CA_FILE", Some("Cargo.toml"), Kind::Conflict),
    ("METRICS_PORT", Some("8080"), Kind::Conflict),
    ("STATE_AUTH", Some("iam"), Kind::Conflict),
];

/// Sets `(name, value)` over `base`, with what some values need besides.
fn bad(base: &Vars, name: &str, value: Option<&str>) -> Vars {
    let mut vars = base.clone();
    match value {
        Some(value) => vars.insert(name.to_owned(), value.to_owned()),
        None => vars.remove(name),
    };
    match name {
        "TWILIO_API_KEY_SECRET" => {
            vars.insert("TWILIO_API_KEY_SID".into(), format!("SK{}", &SID[2..]));
        }
        _ if name.starts_with("HANDOFF_") => {
            vars.insert("HANDOFF_URL".into(), "https://desk.example".into());
            vars.insert(
                "HANDOFF_SECRET".into(),
                value
                    .filter(|_| name == "HANDOFF_SECRET")
                    .unwrap_or("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3")
                    .into(),
            );
            vars.insert(
                "HANDOFF_TOKEN".into(),
                value
                    .filter(|_| name == "HANDOFF_TOKEN")
                    .unwrap_or("a-long-enough-token")
                    .into(),
            );
        }
        "STATE_CA_FILE" => {
            let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
            vars.insert(name.into(), manifest.into());
            vars.insert("STATE_URL".into(), "redis://127.0.0.1".into());
        }
        _ => {}
    }
    vars
}

fn assert_each_bad_value_is_named(base: &Vars, setup: &str) {
    for (name, value, kind) in BAD_VALUES {
        let vars = bad(base, name, *value);
        let errors = match Settings::from_vars(&vars) {
            Ok(_) => panic!("{setup}: {name}={value:?} was taken"),
            Err(errors) => errors,
        };
        let error = errors
            .at(&Place::var(*name))
            .unwrap_or_else(|| panic!("{setup}: {name}={value:?} not named in:\n{errors}"));
        assert_eq!(kind_of(&error.problem), *kind, "{setup}: {error}");
        // AGENT_TYPE makes a default route, which then needs its project and id too.
        if *name != "AGENT_TYPE" {
            assert_eq!(errors.0.len(), 1, "{setup}: {name}={value:?}:\n{errors}");
        }
        if *kind == Kind::Secret {
            assert!(
                !errors.to_string().contains("s3cret") && !errors.to_string().contains(":pw@"),
                "{errors}"
            );
        }
    }
}

#[test]
fn each_kind_of_bad_value_is_named_without_a_routes_file() {
    assert!(Settings::from_vars(&with_agent()).is_ok());
    assert_each_bad_value_is_named(&with_agent(), "without a routes file");
}

#[test]
fn each_kind_of_bad_value_is_named_with_a_routes_file_and_no_agent_variables() {
    let file = RoutesFile::new(ONE_ROUTE);
    assert!(Settings::from_vars(&with_routes_file(&file)).is_ok());
    assert_each_bad_value_is_named(&with_routes_file(&file), "with a routes file");
}

/// The bug of the settings read twice: with a routes file and no agent variables, a
/// bad `SESSION_TTL` or `AGENT_TIMEOUT` started the bridge without a word.
#[test]
fn with_a_routes_file_the_agent_variables_are_still_checked() {
    let file = RoutesFile::new(ONE_ROUTE);
    let mut vars = with_routes_file(&file);
    vars.insert("SESSION_TTL".into(), "banana".into());
    vars.insert("AGENT_TIMEOUT".into(), "999h".into());
    let errors = Settings::from_vars(&vars).unwrap_err();
    let places: Vec<String> = errors.0.iter().map(|e| e.place.to_string()).collect();
    assert_eq!(places, ["SESSION_TTL", "AGENT_TIMEOUT"], "{errors}");
}

#[test]
fn a_route_takes_the_agent_variables_as_they_were_parsed() {
    let file = RoutesFile::new(ONE_ROUTE);
    let mut vars = with_routes_file(&file);
    vars.insert("SESSION_TTL".into(), "2h".into());
    vars.insert("AGENT_TIMEOUT".into(), "60s".into());
    vars.insert("AGENT_RETRY_WINDOW".into(), "5s".into());
    vars.insert("LANGUAGE_CODE".into(), "fr".into());
    let settings = Settings::from_vars(&vars).unwrap();
    assert!(settings.default_route().is_none());
    let agent = &settings.routes[0].agent;
    assert_eq!(
        agent.kind,
        AgentKind::Cx {
            agent_id: "agent-fr".into(),
            session_ttl: Some(Duration::from_secs(7200))
        }
    );
    assert_eq!(agent.timeout, Duration::from_secs(60));
    assert_eq!(agent.retry_window, Duration::from_secs(5));
    assert_eq!(agent.language_code, "fr");
}

#[test]
fn a_twiml_route_holds_the_inherited_timeout_to_what_twilio_waits() {
    let file = RoutesFile::new(
        r#"
routes:
  - match: { to: "+33170000001" }
    agent: { type: ES, project: p }
    reply_mode: twiml
"#,
    );
    let mut vars = with_routes_file(&file);
    vars.insert("AGENT_TIMEOUT".into(), "60s".into());
    let settings = Settings::from_vars(&vars).unwrap();
    assert_eq!(settings.routes[0].agent.timeout, Duration::from_secs(14));
}

#[test]
fn a_routes_fields_go_through_the_variables_parsers() {
    let file = RoutesFile::new(
        r#"
routes:
  - name: "bad name"
    match: { to: "33170000001", messaging_service_sid: MG1 }
    agent: { type: DX, location: "europe west", id: "a/b", environment: "e/f" }
    session_ttl: banana
    reply_mode: sometimes
    languages: { France: fr }
  - name: two
    match: { account_sid: AC0123456789abcdef0123456789abcdef }
    agent: { project: p }
"#,
    );
    let errors = Settings::from_vars(&with_routes_file(&file)).unwrap_err();
    let field = |index, field| Place::RouteField { index, field };
    for (place, kind) in [
        (field(0, "name"), Kind::Invalid),
        (field(0, "match.to"), Kind::Invalid),
        (field(0, "match.messaging_service_sid"), Kind::Invalid),
        (field(0, "reply_mode"), Kind::Invalid),
        (field(0, "agent.type"), Kind::Invalid),
        (field(0, "agent.project"), Kind::Missing),
        (field(0, "agent.location"), Kind::Invalid),
        (field(0, "agent.id"), Kind::Invalid),
        (field(0, "agent.environment"), Kind::Invalid),
        (field(0, "session_ttl"), Kind::Invalid),
        (field(0, "languages"), Kind::Invalid),
        (field(1, "agent.type"), Kind::Missing),
    ] {
        let error = errors
            .at(&place)
            .unwrap_or_else(|| panic!("{place} not in:\n{errors}"));
        assert_eq!(kind_of(&error.problem), kind, "{error}");
    }
    // The same parser, the same words: a route's session_ttl and SESSION_TTL.
    let of_route = errors.at(&field(0, "session_ttl")).unwrap();
    let mut vars = with_agent();
    vars.insert("SESSION_TTL".into(), "banana".into());
    let of_var = Settings::from_vars(&vars).unwrap_err();
    assert_eq!(of_route.problem, of_var.0[0].problem);
}

#[test]
fn a_routes_file_that_cannot_be_read_is_named_once() {
    let mut vars = with_agent();
    vars.insert("ROUTES_FILE".into(), "/nonexistent/routes.yaml".into());
    let errors = Settings::from_vars(&vars).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert!(errors.0[0].place.is_var("ROUTES_FILE"), "{errors}");
    let file = RoutesFile::new("routes: [{ agent: {}, colour: blue }]");
    let mut vars = with_agent();
    vars.insert("ROUTES_FILE".into(), file.0.display().to_string());
    let errors = Settings::from_vars(&vars).unwrap_err();
    assert!(errors.0[0].place.is_var("ROUTES_FILE"), "{errors}");
}

#[test]
fn an_accounts_problems_are_named_by_its_place_in_the_file() {
    let file = RoutesFile::new(&format!(
        "{ONE_ROUTE}accounts:\n  - {{ sid: AC1, auth_token_env: ACME_TOKEN }}\n  - {{ sid: ACffffffffffffffffffffffffffffffff, auth_token_env: \"s3cret token\" }}\n"
    ));
    let errors = Settings::from_vars(&with_routes_file(&file)).unwrap_err();
    let sid = Place::AccountField {
        index: 0,
        field: "sid",
    };
    assert_eq!(kind_of(&errors.at(&sid).unwrap().problem), Kind::Invalid);
    let token = Place::AccountField {
        index: 1,
        field: "auth_token_env",
    };
    assert_eq!(kind_of(&errors.at(&token).unwrap().problem), Kind::Secret);
    assert!(!errors.to_string().contains("s3cret"), "{errors}");
}

#[test]
fn every_problem_is_listed_even_when_the_default_agent_cannot_be_built() {
    let mut vars = with_agent();
    vars.remove("GCP_PROJECT");
    vars.insert("MAX_CONNECTIONS".into(), "0".into());
    vars.insert("HANDOFF_TOKEN".into(), "a-long-enough-token".into());
    let errors = Settings::from_vars(&vars).unwrap_err();
    let places: Vec<String> = errors.0.iter().map(|e| e.place.to_string()).collect();
    assert_eq!(
        places,
        ["GCP_PROJECT", "MAX_CONNECTIONS", "HANDOFF_TOKEN"],
        "{errors}"
    );
}

#[test]
fn the_project_error_says_why_the_metadata_server_could_not_tell_it() {
    let mut vars = with_agent();
    vars.remove("GCP_PROJECT");
    let why = crate::gcp_metadata::MetadataError::Empty {
        host: "127.0.0.1:9".into(),
        what: "project id".into(),
    };
    let errors = load(&vars, &ProjectLookup::Failed(why)).unwrap_err();
    let error = errors.at(&Place::var("GCP_PROJECT")).unwrap();
    assert!(error.because.is_some(), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("GCP_PROJECT: is required but not set"),
        "{error}"
    );
}

#[test]
fn trust_proxy_says_how_many_proxies_of_ours_append() {
    let hops = |value: &str| {
        let mut vars = with_agent();
        vars.insert("TRUST_PROXY".into(), value.into());
        Settings::from_vars(&vars).map(|s| s.twilio.trust_proxy.map(|h| h.get()))
    };
    assert_eq!(hops("true").unwrap(), Some(1));
    assert_eq!(hops("false").unwrap(), None);
    assert_eq!(hops("2").unwrap(), Some(2));
    for bad in ["11", "-1", "maybe"] {
        let errors = hops(bad).unwrap_err();
        assert!(errors.at(&Place::var("TRUST_PROXY")).is_some(), "{bad}");
    }
}

#[test]
fn webhook_hosts_are_host_names() {
    let mut vars = with_agent();
    vars.insert(
        "TWILIO_WEBHOOK_HOSTS".into(),
        "Bot.Example.com, b.example".into(),
    );
    let settings = Settings::from_vars(&vars).unwrap();
    assert_eq!(
        settings.twilio.webhook_hosts,
        ["bot.example.com", "b.example"]
    );
    assert!(settings.twilio.host_is_pinned());
    for bad in ["https://bot.example.com/", "bot.example.com:443", "a/b"] {
        vars.insert("TWILIO_WEBHOOK_HOSTS".into(), bad.into());
        let errors = Settings::from_vars(&vars).unwrap_err();
        assert!(
            errors.at(&Place::var("TWILIO_WEBHOOK_HOSTS")).is_some(),
            "{bad}"
        );
    }
}

#[test]
fn an_unpinned_url_is_warned_of_unless_on_cloud_run() {
    let warned = |extra: &[(&str, &str)]| {
        let mut vars = with_agent();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = Settings::from_vars(&vars).unwrap();
        settings
            .warnings()
            .iter()
            .any(|w| w.starts_with("nothing pins the URL"))
    };
    assert!(warned(&[]));
    assert!(!warned(&[(
        "TWILIO_WEBHOOK_URL",
        "https://bot.example.com/"
    )]));
    assert!(!warned(&[("TWILIO_WEBHOOK_HOSTS", "bot.example.com")]));
    assert!(!warned(&[("K_SERVICE", "bridge")]));
}

#[test]
fn a_key_name_is_one_key_per_account() {
    const SUB: &str = "AC11111111111111111111111111111111";
    let mut vars = with_agent();
    vars.insert("TWILIO_WEBHOOK_KEYS".into(), "support=a".into());
    vars.insert(format!("TWILIO_WEBHOOK_KEYS__{SUB}"), "support=b".into());
    let settings = Settings::from_vars(&vars).unwrap();
    let twilio = &settings.twilio;
    assert_eq!(twilio.webhook_key(SID, "support").unwrap().expose(), "a");
    assert_eq!(twilio.webhook_key(SUB, "support").unwrap().expose(), "b");
    vars.insert(format!("TWILIO_WEBHOOK_KEYS__{SID}"), "support=c".into());
    let errors = Settings::from_vars(&vars).unwrap_err();
    let error = errors
        .at(&Place::var(format!("TWILIO_WEBHOOK_KEYS__{SID}")))
        .unwrap()
        .to_string();
    assert!(error.contains("as TWILIO_WEBHOOK_KEYS does"), "{error}");
    assert!(!error.contains("=c"), "{error}");
}

#[test]
fn a_route_is_its_own_accounts_unless_it_takes_any() {
    let dir = std::env::temp_dir().join(format!("routes-accounts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routes.yaml");
    let matchers = |extra: &str| {
        std::fs::write(
            &file,
            format!(
                "routes:\n  - name: a\n    match: {{ to: \"+33170000001\" {extra} }}\n    agent: {{ type: ES }}\n"
            ),
        )
        .unwrap();
        let mut vars = with_agent();
        vars.insert("ROUTES_FILE".into(), file.display().to_string());
        Settings::from_vars(&vars).map(|s| s.routes[0].matcher.account_sid.clone())
    };
    assert_eq!(matchers("").unwrap().as_deref(), Some(SID));
    let sub = "AC11111111111111111111111111111111";
    assert_eq!(
        matchers(&format!(", account_sid: {sub}"))
            .unwrap()
            .as_deref(),
        Some(sub)
    );
    std::fs::write(
        &file,
        "routes:\n  - name: a\n    match: { to: \"+33170000001\" }\n    any_account: true\n    agent: { type: ES }\n",
    )
    .unwrap();
    let mut vars = with_agent();
    vars.insert("ROUTES_FILE".into(), file.display().to_string());
    let settings = Settings::from_vars(&vars).unwrap();
    assert_eq!(settings.routes[0].matcher.account_sid, None);
    std::fs::write(
        &file,
        format!("routes:\n  - name: a\n    match: {{ account_sid: {sub} }}\n    any_account: true\n    agent: {{ type: ES }}\n"),
    )
    .unwrap();
    let errors = Settings::from_vars(&vars).unwrap_err();
    assert!(errors
        .at(&Place::RouteField {
            index: 0,
            field: "any_account"
        })
        .is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_request_deadline_follows_the_body_timeout_unless_set() {
    let mut vars = with_agent();
    vars.insert("BODY_TIMEOUT".into(), "3s".into());
    let settings = Settings::from_vars(&vars).unwrap();
    assert_eq!(settings.limits.request, Duration::from_secs(8));
    assert_eq!(settings.limits.max_header_bytes, 32 * 1024);
    assert!(matches!(
        settings.connection_cap,
        CapChoice::Derived(cap) if cap.max == settings.limits.max_connections
    ));
    vars.insert("REQUEST_TIMEOUT".into(), "5s".into());
    vars.insert("MAX_CONNECTIONS".into(), "4".into());
    let settings = Settings::from_vars(&vars).unwrap();
    assert_eq!(settings.limits.request, Duration::from_secs(5));
    assert_eq!(settings.limits.max_connections, 4);
    assert!(matches!(
        settings.connection_cap,
        CapChoice::Set { max: 4, .. }
    ));
}

#[test]
fn open_metrics_are_a_warning_and_a_port_or_a_token_closes_them() {
    let warns = |extra: &[(&str, &str)]| {
        let mut vars = with_agent();
        for (name, value) in extra {
            vars.insert(name.to_string(), value.to_string());
        }
        Settings::from_vars(&vars)
            .unwrap()
            .warnings()
            .iter()
            .any(|warning| warning.starts_with("/metrics is open"))
    };
    assert!(warns(&[]));
    assert!(!warns(&[("METRICS_PORT", "9090")]));
    assert!(!warns(&[("METRICS_TOKEN", "a-long-enough-metrics-token")]));
}

#[test]
fn a_hand_over_setting_without_handoff_url_is_a_conflict() {
    // Each alone, and all at once: every one is named, none silently ignored.
    let only = [
        ("HANDOFF_RATE_LIMIT", "50"),
        ("HANDOFF_TTL", "1h"),
        ("HANDOFF_RETRY_FOR", "30s"),
        ("HANDOFF_HISTORY", "5"),
        ("HANDOFF_RETURN_EVENT", "true"),
        ("HANDOFF_INCLUDE_ADDRESS", "true"),
        ("HANDOFF_STARTED_MESSAGE", "One moment"),
        ("HANDOFF_UNAVAILABLE_MESSAGE", "No one is here"),
        ("HANDOFF_KEYWORDS", "agent"),
    ];
    let mut all = with_agent();
    for (name, value) in only {
        let mut vars = with_agent();
        vars.insert(name.into(), value.into());
        all.insert(name.into(), value.into());
        let errors = Settings::from_vars(&vars).unwrap_err();
        let error = errors
            .at(&Place::var(name))
            .unwrap_or_else(|| panic!("{name}: {errors}"));
        assert_eq!(kind_of(&error.problem), Kind::Conflict, "{name}: {error}");
        assert!(error.to_string().contains("HANDOFF_URL"), "{error}");
    }
    let errors = Settings::from_vars(&all).unwrap_err();
    assert_eq!(errors.0.len(), only.len(), "{errors}");
    // With HANDOFF_URL, the same settings are hand-over's own.
    all.extend(
        [
            ("HANDOFF_URL", "https://desk.example"),
            ("HANDOFF_SECRET", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"),
            ("HANDOFF_TOKEN", "a-long-enough-token"),
            ("REPLY_MODE", "api"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let settings = Settings::from_vars(&all).unwrap();
    assert_eq!(settings.handoff.map(|h| h.rate_limit), Some(50));
}

/// `STATE_AUTH=iam` sends a token as the password: a password in the URL is refused
/// (without showing it), a user in it is kept, and the default stays today's password.
#[test]
fn iam_authentication_takes_no_password_in_the_url() {
    let with_state = |url: &str, auth: Option<&str>| {
        let mut all = with_agent();
        all.insert("STATE_URL".into(), url.into());
        if let Some(auth) = auth {
            all.insert("STATE_AUTH".into(), auth.into());
        }
        Settings::from_vars(&all)
    };
    let errors = with_state("rediss://default:s3cret@10.0.0.3:6378", Some("iam")).unwrap_err();
    let error = errors
        .at(&Place::var("STATE_AUTH"))
        .expect("STATE_AUTH named");
    assert_eq!(kind_of(&error.problem), Kind::Conflict, "{errors}");
    assert!(!errors.to_string().contains("s3cret"), "{errors}");
    let iam = with_state("rediss://bridge-sa@10.0.0.3:6378", Some("IAM")).unwrap();
    assert_eq!(iam.state.auth, StateAuth::Iam);
    let default = with_state("redis://:s3cret@127.0.0.1", None).unwrap();
    assert_eq!(default.state.auth, StateAuth::Password);
}

#[test]
fn the_outbound_endpoint_needs_a_long_token_and_the_messages_api() {
    let with = |extra: &[(&str, &str)]| {
        let mut all = with_agent();
        for (name, value) in extra {
            all.insert(name.to_string(), value.to_string());
        }
        Settings::from_vars(&all)
    };
    assert!(with(&[]).unwrap().outbound.is_none(), "off by default");
    let on = with(&[("OUTBOUND_TOKEN", "outbound-token-0123")]).unwrap();
    let outbound = on.outbound.unwrap();
    assert_eq!(outbound.per_second, None, "unlimited by default");
    assert!(!format!("{outbound:?}").contains("outbound-token-0123"));
    let paced = with(&[
        ("OUTBOUND_TOKEN", "outbound-token-0123"),
        ("OUTBOUND_PER_SECOND", "5"),
    ])
    .unwrap();
    assert_eq!(paced.outbound.unwrap().per_second.map(|n| n.get()), Some(5));
    let places = |extra: &[(&str, &str)]| -> Vec<String> {
        let errors = with(extra).unwrap_err();
        assert!(!errors.to_string().contains("short-token"), "{errors}");
        errors.0.iter().map(|e| e.place.to_string()).collect()
    };
    assert_eq!(
        places(&[("OUTBOUND_TOKEN", "short-token")]),
        ["OUTBOUND_TOKEN"]
    );
    assert_eq!(
        places(&[
            ("OUTBOUND_TOKEN", "outbound-token-0123"),
            ("REPLY_MODE", "twiml")
        ]),
        ["OUTBOUND_TOKEN"]
    );
    assert_eq!(
        places(&[("OUTBOUND_PER_SECOND", "5")]),
        ["OUTBOUND_PER_SECOND"]
    );
    assert_eq!(
        places(&[
            ("OUTBOUND_TOKEN", "outbound-token-0123"),
            ("OUTBOUND_PER_SECOND", "0")
        ]),
        ["OUTBOUND_PER_SECOND"]
    );
}

#[test]
fn the_privacy_endpoint_needs_a_long_token() {
    let with = |extra: &[(&str, &str)]| {
        let mut all = with_agent();
        for (name, value) in extra {
            all.insert(name.to_string(), value.to_string());
        }
        Settings::from_vars(&all)
    };
    assert!(with(&[]).unwrap().privacy_token.is_none(), "off by default");
    let on = with(&[("PRIVACY_TOKEN", "privacy-token-0123")]).unwrap();
    assert_eq!(
        on.privacy_token.as_ref().map(|t| t.expose()),
        Some("privacy-token-0123")
    );
    assert!(!format!("{:?}", on.privacy_token).contains("privacy-token-0123"));
    let errors = with(&[("PRIVACY_TOKEN", "short-token")]).unwrap_err();
    assert!(!errors.to_string().contains("short-token"), "{errors}");
    let places: Vec<String> = errors.0.iter().map(|e| e.place.to_string()).collect();
    assert_eq!(places, ["PRIVACY_TOKEN"]);
}
