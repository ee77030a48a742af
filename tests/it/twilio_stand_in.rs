//! The Messages API stand-in refuses what Twilio refuses, with Twilio's codes and
//! error JSON, and answers Twilio's Message resource: over HTTP, as the bridge and
//! Twilio's libraries meet it.

use crate::helpers::{ACCOUNT_SID, AUTH_TOKEN, OUR_NUMBER, USER};
use serde_json::Value;
use stand_ins::messages_api::MessagesEmulator;

struct Api {
    twilio: MessagesEmulator,
    client: reqwest::Client,
}

impl Api {
    async fn start() -> Self {
        let twilio = MessagesEmulator::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            ACCOUNT_SID,
            AUTH_TOKEN,
        )
        .unwrap();
        Self {
            twilio,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.twilio.base_url())
    }

    fn messages(&self) -> String {
        self.url(&format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"))
    }

    /// A create with `form`: the status and the JSON answered.
    async fn create(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let request = self
            .client
            .post(self.messages())
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .form(form);
        answer(request).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let request = self
            .client
            .get(self.url(path))
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN));
        answer(request).await
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the stand-in answers");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("HTTP {status} answered with no JSON: {body:?}"));
    (status, json)
}

/// Twilio's error JSON, with `code` and `status`.
fn assert_twilio_error(answer: &(u16, Value), status: u16, code: u64) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}"),
        "{body}"
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

fn sms(body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("To", USER.to_owned()),
        ("From", OUR_NUMBER.to_owned()),
        ("Body", body.to_owned()),
    ]
}

fn pairs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn a_create_answers_twilios_message_resource_and_the_message_can_be_fetched() {
    let api = Api::start().await;
    let (status, created) = api.create(&pairs(&sms(&"x".repeat(1600)))).await;
    assert_eq!(status, 201, "{created}");
    let sid = created["sid"].as_str().unwrap().to_owned();
    assert!(
        sid.len() == 34 && sid.starts_with("SM") && sid[2..].chars().all(|c| c.is_ascii_hexdigit()),
        "{sid}"
    );
    for (field, value) in [
        ("account_sid", ACCOUNT_SID),
        ("api_version", "2010-04-01"),
        ("direction", "outbound-api"),
        ("status", "queued"),
        ("num_media", "0"),
        // 1 600 GSM-7 characters: 153 to a segment.
        ("num_segments", "11"),
        ("price_unit", "USD"),
        ("to", USER),
        ("from", OUR_NUMBER),
    ] {
        assert_eq!(created[field], value, "{field}: {created}");
    }
    let uri = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json");
    assert_eq!(created["uri"], uri);
    assert!(created["subresource_uris"]["media"].is_string());
    for field in ["error_code", "error_message", "price", "date_sent"] {
        assert!(created[field].is_null(), "{field}: {created}");
    }
    // RFC 2822, as Twilio writes dates: "Thu, 24 Aug 2023 05:01:45 +0000".
    let date = created["date_created"].as_str().unwrap();
    assert!(date.ends_with(" +0000") && date.len() == 31, "{date}");
    assert_eq!(created["date_updated"], date);

    let (status, fetched) = api.get(&uri).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["sid"], sid.as_str());
    assert_eq!(fetched["body"], "x".repeat(1600));
    assert_eq!(fetched["date_created"], date);
    assert_eq!(fetched["status"], "delivered");
    assert_eq!(fetched["date_sent"], date);
}

#[tokio::test]
async fn a_whatsapp_message_is_one_segment() {
    let api = Api::start().await;
    let (status, created) = api
        .create(&[
            ("To", "whatsapp:+15551230001"),
            ("From", "whatsapp:+15557770000"),
            ("Body", &"ł".repeat(500)),
        ])
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["num_segments"], "1");
}

#[tokio::test]
async fn an_unknown_sid_url_or_method_is_answered_with_twilios_error_json() {
    let api = Api::start().await;
    let path = format!(
        "/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/SM{}.json",
        "f".repeat(32)
    );
    let unknown = api.get(&path).await;
    assert_twilio_error(&unknown, 404, 20404);
    assert_eq!(
        unknown.1["message"],
        format!("The requested resource {path} was not found")
    );
    // Another account's message is not found either.
    let (_, created) = api.create(&pairs(&sms("hi"))).await;
    let sid = created["sid"].as_str().unwrap();
    assert_twilio_error(
        &api.get(&format!(
            "/2010-04-01/Accounts/AC{}/Messages/{sid}.json",
            "0".repeat(32)
        ))
        .await,
        404,
        20404,
    );
    assert_twilio_error(&api.get("/2010-04-01/Accounts/nowhere").await, 404, 20404);
    assert_twilio_error(&api.get("/v1/Content/HXnope").await, 404, 20404);
    let delete = api
        .client
        .delete(api.messages())
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN));
    assert_twilio_error(&answer(delete).await, 405, 20004);
    let stranger = api
        .client
        .get(api.messages())
        .basic_auth(ACCOUNT_SID, Some("wrong"));
    assert_twilio_error(&answer(stranger).await, 401, 20003);
}

#[tokio::test]
async fn a_body_over_1600_characters_is_refused_with_21617() {
    let api = Api::start().await;
    assert_twilio_error(
        &api.create(&pairs(&sms(&"x".repeat(1601)))).await,
        400,
        21617,
    );
    // Characters, not bytes: 1 600 emoji are 6 400 bytes, and taken.
    let (status, _) = api.create(&pairs(&sms(&"🍕".repeat(1600)))).await;
    assert_eq!(status, 201);
    assert_eq!(api.twilio.sent().len(), 1);
}

#[tokio::test]
async fn a_to_that_is_not_a_number_is_refused_with_21211() {
    let api = Api::start().await;
    for to in [
        "not-a-number",
        "15551230001",
        "whatsapp:not-a-number",
        "+1555abc",
    ] {
        let answer = api
            .create(&[("To", to), ("From", OUR_NUMBER), ("Body", "hi")])
            .await;
        assert_twilio_error(&answer, 400, 21211);
    }
    assert_twilio_error(
        &api.create(&[("From", OUR_NUMBER), ("Body", "hi")]).await,
        400,
        21604,
    );
    assert!(api.twilio.sent().is_empty());
}

#[tokio::test]
async fn more_than_ten_media_are_refused_with_21623() {
    let api = Api::start().await;
    let mut form = sms("pictures");
    form.extend((1..=10).map(|i| ("MediaUrl", format!("https://example.com/{i}.jpg"))));
    let (status, created) = api.create(&pairs(&form)).await;
    assert_eq!(status, 201);
    assert_eq!(created["num_media"], "10");
    form.push(("MediaUrl", "https://example.com/11.jpg".into()));
    assert_twilio_error(&api.create(&pairs(&form)).await, 400, 21623);
}

#[tokio::test]
async fn content_variables_need_a_content_sid_21654() {
    let api = Api::start().await;
    let mut form = sms("hi");
    form.push(("ContentVariables", r#"{"1": "x"}"#.into()));
    assert_twilio_error(&api.create(&pairs(&form)).await, 400, 21654);
}

#[tokio::test]
async fn a_content_over_twilios_limits_is_refused_in_twilios_shape() {
    let api = Api::start().await;
    let create = |types: Value| {
        let request = api
            .client
            .post(api.url("/v1/Content"))
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .json(&serde_json::json!({"friendly_name": "t", "language": "en", "types": types}));
        answer(request)
    };
    let list = |id: &str, button: &str| {
        serde_json::json!({"twilio/list-picker": {"body": "Pick", "button": button,
            "items": [{"item": "One", "id": id}]}})
    };
    assert_eq!(create(list("one", "Choose")).await.0, 201);
    assert_twilio_error(&create(list(&"i".repeat(201), "Choose")).await, 400, 20001);
    assert_twilio_error(&create(list("one", &"c".repeat(21))).await, 400, 20001);
    let not_json = api
        .client
        .post(api.url("/v1/Content"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .body(vec![0xff, 0xfe]);
    assert_twilio_error(&answer(not_json).await, 400, 20001);
}

/// A listener for status callbacks: each arrives as its form and whether its
/// `X-Twilio-Signature` is Twilio's for the URL and form.
async fn callbacks() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Vec<(String, String)>, bool)>,
) {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/status", listener.local_addr().unwrap());
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    let signed_url = url.clone();
    let app = axum::Router::new().route(
        "/status",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (sender, url) = (sender.clone(), signed_url.clone());
            async move {
                let form: Vec<(String, String)> = form_urlencoded_pairs(&body);
                let signature = headers
                    .get("x-twilio-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let signed =
                    bridge::twilio::signature::compute(AUTH_TOKEN, &url, &form) == signature;
                let _ = sender.send((form, signed));
                ""
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn form_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    bridge::twilio::webhook::FormParams::parse(body)
        .pairs()
        .to_vec()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The statuses reported for message `sid`, with their error codes, until `last`.
async fn statuses_until(
    received: &mut tokio::sync::mpsc::UnboundedReceiver<(Vec<(String, String)>, bool)>,
    sid: &str,
    last: &str,
) -> Vec<(String, Option<String>)> {
    let mut seen = Vec::new();
    let wait = async {
        while let Some((form, signed)) = received.recv().await {
            assert!(signed, "every callback is signed as Twilio signs: {form:?}");
            assert_eq!(field(&form, "AccountSid"), Some(ACCOUNT_SID));
            if field(&form, "MessageSid") != Some(sid) {
                continue;
            }
            let status = field(&form, "MessageStatus").unwrap_or_default().to_owned();
            let done = status == last;
            seen.push((status, field(&form, "ErrorCode").map(str::to_owned)));
            if done {
                return;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("no {last} callback for {sid}; saw {seen:?}"));
    seen
}

fn statuses(names: &[&str]) -> Vec<(String, Option<String>)> {
    names.iter().map(|s| (s.to_string(), None)).collect()
}

#[tokio::test]
async fn status_callbacks_follow_each_message_signed_as_twilio_signs() {
    let api = Api::start().await;
    let (url, mut received) = callbacks().await;
    let (status, sms) = api
        .create(&[
            ("To", USER),
            ("From", OUR_NUMBER),
            ("Body", "hi"),
            ("StatusCallback", &url),
        ])
        .await;
    assert_eq!(status, 201);
    let sid = sms["sid"].as_str().unwrap();
    assert_eq!(
        statuses_until(&mut received, sid, "delivered").await,
        statuses(&["queued", "sent", "delivered"])
    );
    // WhatsApp tells when the person read it.
    let (_, whatsapp) = api
        .create(&[
            ("To", &format!("whatsapp:{USER}")),
            ("From", &format!("whatsapp:{OUR_NUMBER}")),
            ("Body", "hi"),
            ("StatusCallback", &url),
        ])
        .await;
    let sid = whatsapp["sid"].as_str().unwrap();
    assert_eq!(
        statuses_until(&mut received, sid, "read").await,
        statuses(&["queued", "sent", "delivered", "read"])
    );
    // A message the channel refuses after Twilio took it.
    api.twilio
        .misbehave_next(&[stand_ins::messages_api::Misbehaviour::FailLater { code: 63024 }]);
    let (_, refused) = api
        .create(&[
            ("To", USER),
            ("From", OUR_NUMBER),
            ("Body", "hi"),
            ("StatusCallback", &url),
        ])
        .await;
    let sid = refused["sid"].as_str().unwrap();
    let mut expected = statuses(&["queued", "sent", "undelivered"]);
    expected[2].1 = Some("63024".into());
    assert_eq!(
        statuses_until(&mut received, sid, "undelivered").await,
        expected
    );
}

/// The SID of the message a create took, and its status and error code when fetched.
async fn fetched_status(api: &Api, answer: (u16, Value)) -> (String, Value, Value) {
    assert_eq!(answer.0, 201, "{answer:?}");
    let sid = answer.1["sid"].as_str().unwrap().to_owned();
    let (_, fetched) = api
        .get(&format!(
            "/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"
        ))
        .await;
    (
        sid,
        fetched["status"].clone(),
        fetched["error_code"].clone(),
    )
}

/// Tells the stand-in over HTTP, as the terminal phone does, that a person wrote.
async fn person_wrote(api: &Api, from: &str, to: &str, body: &str) -> u16 {
    api.client
        .post(api.url("/stand-in/Inbound"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .form(&[("From", from), ("To", to), ("Body", body)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_person_who_sent_stop_is_refused_with_21610_until_start() {
    let api = Api::start().await;
    let send = [("To", USER), ("From", OUR_NUMBER), ("Body", "news")];
    assert_eq!(api.create(&send).await.0, 201);
    assert_eq!(person_wrote(&api, USER, OUR_NUMBER, "Stop").await, 204);
    assert_twilio_error(&api.create(&send).await, 400, 21610);
    // Another sender of the account is not concerned.
    let other = [("To", USER), ("From", "+15557770001"), ("Body", "news")];
    assert_eq!(api.create(&other).await.0, 201);
    assert_eq!(person_wrote(&api, USER, OUR_NUMBER, "START").await, 204);
    assert_eq!(api.create(&send).await.0, 201);
    // Only the account's credentials may say so.
    let anonymous = api
        .client
        .post(api.url("/stand-in/Inbound"))
        .form(&[("From", USER), ("To", OUR_NUMBER), ("Body", "STOP")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(api.create(&send).await.0, 201);
}

#[tokio::test]
async fn whatsapp_free_text_outside_the_24_hour_window_fails_with_63016() {
    let api = Api::start().await;
    api.twilio.keep_session_windows();
    let template = format!("HX{}", "a".repeat(32));
    api.twilio
        .register_template(&template, "Your table is booked for {{1}}.");
    let (person, ours) = (format!("whatsapp:{USER}"), format!("whatsapp:{OUR_NUMBER}"));
    let (url, mut received) = callbacks().await;
    let free_text = [
        ("To", person.as_str()),
        ("From", ours.as_str()),
        ("Body", "hello"),
        ("StatusCallback", url.as_str()),
    ];
    // Never wrote: taken, then failed, as Twilio reports it.
    let (sid, status, code) = fetched_status(&api, api.create(&free_text).await).await;
    assert_eq!((status, code), (Value::from("failed"), Value::from(63016)));
    let mut expected = statuses(&["queued", "failed"]);
    expected[1].1 = Some("63016".into());
    assert_eq!(
        statuses_until(&mut received, &sid, "failed").await,
        expected
    );
    // An approved template may start the conversation.
    let by_template = [
        ("To", person.as_str()),
        ("From", ours.as_str()),
        ("ContentSid", template.as_str()),
        ("ContentVariables", r#"{"1": "7 pm"}"#),
    ];
    let (_, status, _) = fetched_status(&api, api.create(&by_template).await).await;
    assert_eq!(status, "delivered");
    assert_eq!(
        api.twilio.sent().last().unwrap().body,
        "Your table is booked for 7 pm."
    );
    // The person writes: free text for 24 hours.
    assert_eq!(person_wrote(&api, &person, &ours, "sure").await, 204);
    let (_, status, _) = fetched_status(&api, api.create(&free_text).await).await;
    assert_eq!(status, "delivered");
    api.twilio
        .advance_clock(std::time::Duration::from_secs(24 * 3600 - 60));
    let (_, status, _) = fetched_status(&api, api.create(&free_text).await).await;
    assert_eq!(status, "delivered");
    api.twilio.advance_clock(std::time::Duration::from_secs(60));
    let (_, status, code) = fetched_status(&api, api.create(&free_text).await).await;
    assert_eq!((status, code), (Value::from("failed"), Value::from(63016)));
    // SMS has no such window.
    let (_, status, _) = fetched_status(
        &api,
        api.create(&[("To", USER), ("From", OUR_NUMBER), ("Body", "hello")])
            .await,
    )
    .await;
    assert_eq!(status, "delivered");
}
