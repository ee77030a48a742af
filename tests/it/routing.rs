//! One deployment, many numbers and agents: environments, languages, accounts, opt-out
//! keywords, Twilio's shared-key signatures and routes.

use crate::helpers::*;
use twilio_dialogflow::chat::Outgoing;

fn with(body: &str, params: &[(&str, &str)]) -> Outgoing {
    Outgoing {
        body: body.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_environment_is_in_the_session_path_of_cx_and_es() {
    for (agent_type, path) in [
        (
            "CX",
            "/v3/projects/test-project/locations/global/agents/test-agent/environments/prod/sessions/",
        ),
        ("ES", "/v2/projects/test-project/agent/environments/prod/users/-/sessions/"),
    ] {
        let stack = start(agent_type, |vars| {
            vars.insert("AGENT_ENVIRONMENT".into(), "prod".into());
        })
        .await;
        assert_eq!(texts(&stack.say("hi").await), vec!["Hello from the agent"]);
        let asked = &stack.agent_requests()[0].path;
        assert!(asked.starts_with(path), "{agent_type}: {asked}");
    }
}

#[tokio::test]
async fn opt_out_keywords_are_twilios_to_answer_by_default() {
    let stack = start("CX", |_| {}).await;
    for keyword in ["STOP", "START", "HELP"] {
        let replies = stack.send(&with(keyword, &[("OptOutType", keyword)])).await;
        assert!(replies.is_empty(), "{keyword}: {replies:?}");
    }
    assert!(stack.agent_requests().is_empty());
    assert!(stack
        .metrics()
        .await
        .contains(r#"twilio_dialogflow_webhooks_total{outcome="opt_out"} 3"#));
    // A word that merely looks like one is a message like any other.
    assert_eq!(texts(&stack.say("hi").await), vec!["Hello from the agent"]);
}

#[tokio::test]
async fn opt_out_keywords_can_go_to_the_agent_as_events() {
    let stack = start("CX", |vars| {
        vars.insert("OPT_OUT_TO_AGENT".into(), "true".into());
    })
    .await;
    for (keyword, event) in [
        ("STOP", "twilio_opt_out"),
        ("START", "twilio_opt_in"),
        ("HELP", "twilio_help"),
    ] {
        stack.send(&with(keyword, &[("OptOutType", keyword)])).await;
        let asked = stack.agent_requests();
        let body = &asked.last().unwrap().body;
        assert_eq!(body["queryInput"]["event"]["event"], event, "{keyword}");
        assert_eq!(body["queryParams"]["payload"]["OptOutType"], keyword);
    }
}
