//! The phone in the browser (`demo --web`), in a real headless Chromium: every kind of
//! conversation typed, tapped and answered on the page, as a person would.
//!
//! Each test runs one `demo --web` (emulator, Messages API stand-in, bridge, desk and
//! phone) and one browser session, and walks through its steps in order.

mod browser;

use crate::helpers::{Output, Running, WorkDir};
use browser::{bubble, Driver, Page, Step};

/// `demo --web` on a free port, and the page's address it prints.
async fn demo_web(dir: &WorkDir) -> (Running, String) {
    let mut demo = Running::spawn(
        &mut dir.command(&["demo", "--web", "--web-port", "0"], &[]),
        Output::Stdout,
    );
    let url = demo
        .find_line(|line| line.strip_prefix("open ").map(str::to_owned))
        .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (demo, url)
}

/// SMS and WhatsApp typed and tapped, a picture, a location, a hand-over answered from
/// the desk pane, the agent's failure; no script error; and the README's picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conversation_in_a_real_browser() {
    let dir = WorkDir::with_dotenv("");
    let (_demo, url) = demo_web(&dir).await;
    let driver = Driver::start().await;
    let page = driver.browser(1280, 860).await;
    page.open(&url).await;
    let outcome = conversations(&page).await;
    page.pass("every_conversation", outcome).await;

    let errors = page.script_errors().await;
    assert!(errors.is_empty(), "the page's scripts failed: {errors:?}");

    // The README shows the WhatsApp phone, its reply buttons, beside the desk.
    let shown = async {
        page.phone("whatsapp").await?;
        page.send("order a pizza").await?;
        page.find("(//div[@data-testid='screen' and not(@hidden)]//div[@data-author='agent'])[last()]//button[@data-testid='choice']")
            .await
            .map(|_| ())
    };
    page.pass("screenshot", shown.await).await;
    page.screenshot(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/web-phone.png"))
        .await;
    let _ = page.client.clone().close().await;
}

async fn conversations(page: &Page) -> Step {
    // The demo opens with one SMS phone and one WhatsApp phone.
    page.find("//*[@data-testid='phone-tab' and @data-channel='sms']")
        .await?;
    page.find("//*[@data-testid='phone-tab' and @data-channel='whatsapp']")
        .await?;

    // SMS: typed and sent; a numbered menu answered with "2".
    page.phone("sms").await?;
    page.send("hi").await?;
    page.find(&bubble("person", "hi")).await?;
    page.find(&bubble("agent", "Pizzabot")).await?;
    page.send("I'd like to order a pizza").await?;
    page.find(&bubble("agent", "2")).await?;
    page.send("2").await?;
    page.find(&bubble("agent", "A medium pizza.")).await?;

    // WhatsApp: reply buttons, then a list, tapped.
    page.phone("whatsapp").await?;
    page.send("order a pizza").await?;
    page.click("//div[@data-testid='screen' and not(@hidden)]//button[@data-testid='choice' and contains(., 'Large')]")
        .await?;
    page.find(&bubble("person", "Large")).await?;
    page.find(&bubble("agent", "A large pizza.")).await?;
    page.click("//div[@data-testid='screen' and not(@hidden)]//button[@data-testid='list-button']")
        .await?;
    page.click("//div[@data-testid='screen' and not(@hidden)]//button[@data-testid='choice' and contains(., 'Pepperoni')]")
        .await?;
    page.find(&bubble("agent", "one large pepperoni pizza"))
        .await?;
    // The stand-in's delivery marks.
    page.find("//div[@data-testid='screen' and not(@hidden)]//*[@data-testid='status' and @aria-label='delivered']")
        .await?;

    // Pictures: the agent's shown as a picture, and one the person sends.
    page.send("menu").await?;
    page.find("//div[@data-testid='screen' and not(@hidden)]//div[@data-author='agent']//img[@data-testid='picture' and starts-with(@src, 'https://')]")
        .await?;
    page.click("//summary").await?;
    page.click("//*[@data-testid='send-picture']").await?;
    page.find("//div[@data-testid='screen' and not(@hidden)]//div[@data-author='person']//img[contains(@src, '/media/pizza.svg')]")
        .await?;
    page.find(&bubble("agent", "Thanks for the picture"))
        .await?;
    let loaded = page
        .eval("return [...document.querySelectorAll('img[src*=\"/media/pizza.svg\"]')].every(i => i.complete && i.naturalWidth > 0)")
        .await;
    if loaded != serde_json::Value::Bool(true) {
        return Err("the person's picture is not shown".into());
    }
    // A location, shared.
    page.click("//*[@data-testid='share-location']").await?;
    page.find(&bubble("agent", "We deliver there")).await?;

    // A hand-over on SMS, answered and ended from the desk pane.
    page.phone("sms").await?;
    page.send("talk to a person").await?;
    page.find(&bubble("agent", "Let me get a person")).await?;
    page.find("//*[@data-testid='desk-event' and @data-type='handoff.started']")
        .await?;
    page.send("my pizza is late").await?;
    page.find("//*[@data-testid='desk-event' and @data-type='message.received' and contains(., 'my pizza is late')]")
        .await?;
    page.type_and_enter(
        "//*[@data-testid='desk-composer']",
        "So sorry! It leaves the oven now.",
    )
    .await?;
    page.find(&bubble("human", "It leaves the oven now"))
        .await?;
    page.click("//*[@data-testid='desk-end']").await?;
    page.find("//*[@data-testid='desk-event' and @data-type='handoff.ended']")
        .await?;
    page.send("thanks").await?;
    page.find(&bubble("agent", "You're welcome")).await?;

    // The agent fails: the bridge's fallback.
    page.send("break").await?;
    page.find(&bubble("agent", "Sorry, I can't answer right now"))
        .await?;
    Ok(())
}

/// Keyboard only (Enter sends, Tab reaches the choices) and a 360 px wide screen with
/// nothing wider than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_only_on_a_narrow_screen() {
    let dir = WorkDir::with_dotenv("");
    let (_demo, url) = demo_web(&dir).await;
    let driver = Driver::start().await;
    let page = driver.browser(360, 780).await;
    page.open(&url).await;
    let outcome = keyboard(&page).await;
    page.pass("keyboard_only", outcome).await;
    let errors = page.script_errors().await;
    assert!(errors.is_empty(), "the page's scripts failed: {errors:?}");
    let _ = page.client.clone().close().await;
}

async fn keyboard(page: &Page) -> Step {
    let width = page.eval("return window.innerWidth").await;
    if width.as_u64().is_none_or(|w| w > 400) {
        return Err(format!("the window is not narrow: {width}"));
    }
    // Labels for screen readers.
    page.find("//label[@for='composer']").await?;
    page.find("//*[@data-testid='send' and @aria-label='Send']")
        .await?;
    page.find("//*[@role='tablist' and @aria-label='Phones']")
        .await?;

    // Enter sends.
    page.phone("whatsapp").await?;
    page.type_and_enter("//*[@data-testid='composer']", "order a pizza")
        .await?;
    page.find(&bubble("agent", "What size?")).await?;
    page.find("//div[@data-testid='screen' and not(@hidden)]//button[@data-testid='choice']")
        .await?;
    // Shift+Tab from the composer reaches the last choice; Enter taps it.
    let composer = page.find("//*[@data-testid='composer']").await?;
    composer
        .send_keys("\u{E008}\u{E004}\u{E000}")
        .await
        .map_err(|e| e.to_string())?;
    let focused = page
        .eval("const a = document.activeElement; return [a.dataset.testid || '', a.textContent]")
        .await;
    if focused[0] != "choice" {
        return Err(format!(
            "Shift+Tab from the composer focused {focused}, not a choice"
        ));
    }
    let active = page
        .client
        .active_element()
        .await
        .map_err(|e| e.to_string())?;
    active
        .send_keys("\u{E007}")
        .await
        .map_err(|e| e.to_string())?;
    page.find(&bubble("agent", "A large pizza.")).await?;

    // Nothing is wider than the screen: no horizontal scroll.
    let overflow = page
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .await;
    if overflow.as_i64() != Some(0) {
        return Err(format!(
            "the page scrolls sideways by {overflow} px at 360 px"
        ));
    }
    Ok(())
}

/// `phone` alone, against a bridge configured in `.env`: it serves its page and its
/// two phones, and answers only requests for its own host.
#[tokio::test]
async fn the_phone_command_serves_its_page_to_its_own_host_only() {
    let dir = WorkDir::with_dotenv(&format!(
        "TWILIO_ACCOUNT_SID={}\nTWILIO_AUTH_TOKEN=phone-token\nPORT=9\n",
        crate::helpers::sid("AC", 23)
    ));
    let mut phone = Running::spawn(
        &mut dir.command(&["phone", "--listen", "127.0.0.1:0"], &[]),
        Output::Stdout,
    );
    let url = phone
        .find_line(|line| line.strip_prefix("open ").map(str::to_owned))
        .await;
    let client = reqwest::Client::new();
    let page = client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    for hook in [
        "data-testid=\"composer\"",
        "data-testid=\"send\"",
        "/phone.js",
    ] {
        assert!(html.contains(hook), "{hook} is not on the page");
    }
    let events: serde_json::Value = client
        .get(format!("{url}api/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let channels: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "phone")
        .map(|e| e["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["sms", "whatsapp"]);
    // No desk without --desk-port.
    assert_eq!(events["desk"], false);
    let elsewhere = client
        .get(&url)
        .header("host", "phone.attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 421);
    // The bridge is not there: the page says so, the phone keeps serving.
    let sent = client
        .post(format!("{url}api/phones/0/messages"))
        .json(&serde_json::json!({"text": {"body": "hi"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let events: serde_json::Value = client
        .get(format!("{url}api/events?after=3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"][0]["kind"], "notice", "{events}");
    assert!(events["events"][0]["text"]
        .as_str()
        .unwrap()
        .contains("cannot reach"));
}
