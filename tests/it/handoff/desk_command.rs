//! The terminal desk, the `desk` command, against the bridge.

use super::*;

#[tokio::test]
async fn the_terminal_desk_checks_signatures_and_answers_through_the_bridge() {
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let desk_url = format!("http://{}/", listener.local_addr().unwrap());
    let _desk = stand_ins::desk::receive(listener, SECRET, sender).unwrap();
    let stack = people_stack("CX", &desk_url, &[]).await;
    say(&stack, "talk to a person", 1).await;
    let started = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        stand_ins::desk::show(&started).contains("hand-over started (sms, live_agent_handoff)"),
        "{started}"
    );
    // A forged event is refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let forged = reqwest::Client::new()
        .post(&desk_url)
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", now)
        .header("webhook-signature", "v1,AAAA")
        .body(r#"{"type":"handoff.started"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let human = stand_ins::desk::HumanSide::new(&stack.bridge.url(), TOKEN).unwrap();
    let conversation = conversation_of(&started);
    human.say(&conversation, "Hi, I'm Sam", &[]).await.unwrap();
    assert_eq!(stack.twilio.wait_for(2).await[1].body, "Hi, I'm Sam");
    human.end(&conversation).await.unwrap();
    assert!(human.end(&conversation).await.is_err(), "ended already");
}

#[tokio::test]
async fn the_desk_command_shows_events_and_answers_through_the_bridge() {
    // Each needs the other's address: the bridge's port is taken first, the desk takes
    // one of its own (port 0) and says which, and the bridge then starts, told it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = format!("http://{}/", listener.local_addr().unwrap());
    let dir = WorkDir::with_dotenv(&format!("HANDOFF_TOKEN={TOKEN}\nHANDOFF_SECRET={SECRET}\n"));
    let mut command = dir.command(&["desk", "--listen", "0", "--bridge", &bridge], &[]);
    command.stdin(std::process::Stdio::piped());
    let mut desk = Running::spawn(&mut command, Output::Stdout);
    let desk_url = desk
        .find_line(|l| {
            let rest = l.split_once("Helpdesk listening on ")?.1;
            Some(rest.split_whitespace().next()?.to_owned())
        })
        .await;
    let stack = start_on(listener, AGENT_WITH_PEOPLE, "CX", with_people(&desk_url)).await;
    assert_eq!(stack.bridge.url(), bridge);
    say(&stack, "talk to a person", 1).await;
    desk.find_line(|l| {
        l.contains("hand-over started (sms, live_agent_handoff)")
            .then_some(())
    })
    .await;
    desk.find_line(|l| l.contains("person: talk to a person").then_some(()))
        .await;
    say(&stack, "my order is late", 0).await;
    desk.find_line(|l| l.contains("] person: my order is late").then_some(()))
        .await;
    desk.write_line("Hi, Sam from the shop here");
    desk.find_line(|l| l.contains("(sent)").then_some(())).await;
    assert_eq!(
        stack.twilio.wait_for(2).await[1].body,
        "Hi, Sam from the shop here"
    );
    desk.write_line("/end");
    desk.find_line(|l| l.contains("given back to the agent").then_some(()))
        .await;
    desk.find_line(|l| l.contains("hand-over ended (desk)").then_some(()))
        .await;
    assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
}
