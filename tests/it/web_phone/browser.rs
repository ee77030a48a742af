//! A real headless Chromium, driven through chromedriver's WebDriver: the page's
//! selectors, the browser's log, and a picture of the page when a step fails.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::time::Duration;

/// How long a step waits for the page to show what it expects: the agent's replies
/// through the Messages API, and the fallback after the agent's 3 s deadline.
const PATIENCE: Duration = Duration::from_secs(30);

/// chromedriver, on a free port, stopped when dropped.
pub struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Driver {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian: apt-get install chromium-driver)");
        let driver = Self { child, port };
        let status = format!("http://127.0.0.1:{port}/status");
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(response) = client.get(&status).send().await {
                if response.status().is_success() {
                    return driver;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start on port {port}");
    }

    /// A new headless browser showing pages `width` by `height` CSS pixels (a
    /// phone's screen, through Chromium's device metrics: a headless window is never
    /// narrower than 500 px), with its console log kept for [`Page::script_errors`].
    pub async fn browser(&self, width: u32, height: u32) -> Page {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--hide-scrollbars",
                     format!("--window-size={},{}", width.max(500), height)],
        });
        if width < 500 {
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}});
        }
        capabilities.insert("goog:chromeOptions".into(), options);
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session starts");
        Page { client }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser's view of the web phone.
pub struct Page {
    pub client: Client,
}

/// What a step expected and did not find.
pub type Step = Result<(), String>;

/// A visible agent's, human's or person's bubble that contains `text`.
pub fn bubble(author: &str, text: &str) -> String {
    format!("//div[@data-testid='screen' and not(@hidden)]//div[@data-testid='message' and @data-author='{author}' and contains(., \"{text}\")]")
}

impl Page {
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
    }

    /// Waits for the element at `xpath`.
    pub async fn find(&self, xpath: &str) -> Result<fantoccini::elements::Element, String> {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::XPath(xpath))
            .await
            .map_err(|e| format!("not on the page: {xpath} ({e})"))
    }

    pub async fn click(&self, xpath: &str) -> Step {
        let element = self.find(xpath).await?;
        element
            .click()
            .await
            .map_err(|e| format!("cannot click {xpath}: {e}"))
    }

    /// Types `text` into the element at `xpath` and presses Enter.
    pub async fn type_and_enter(&self, xpath: &str, text: &str) -> Step {
        let element = self.find(xpath).await?;
        element
            .send_keys(&format!("{text}\u{E007}"))
            .await
            .map_err(|e| format!("cannot type into {xpath}: {e}"))
    }

    /// Types `text` into the phone's composer and clicks Send.
    pub async fn send(&self, text: &str) -> Step {
        let composer = self.find("//*[@data-testid='composer']").await?;
        composer
            .send_keys(text)
            .await
            .map_err(|e| format!("cannot type: {e}"))?;
        self.click("//*[@data-testid='send']").await
    }

    /// Selects the phone on `channel`.
    pub async fn phone(&self, channel: &str) -> Step {
        self.click(&format!(
            "//*[@data-testid='phone-tab' and @data-channel='{channel}']"
        ))
        .await
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or(Value::Null)
    }

    /// The browser's log entries that are errors of the page's own scripts (a picture
    /// on the internet that cannot load offline is the network's, not the page's).
    pub async fn script_errors(&self) -> Vec<Value> {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("chromedriver reads the browser's log");
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE" && entry["source"] != "network")
            .cloned()
            .collect()
    }

    /// Saves a picture of the page at `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        if let Ok(png) = self.client.screenshot().await {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(path, png);
        }
    }

    /// Fails with `outcome`'s reason, and a picture of the page kept as test output.
    pub async fn pass(&self, name: &str, outcome: Step) {
        if let Err(why) = outcome {
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("web-phone-failures")
                .join(format!("{name}.png"));
            self.screenshot(&path).await;
            panic!("{why}\n(the page then: {})", path.display());
        }
    }
}

/// chromedriver's read of the browser's console (`goog:loggingPrefs`), not in the W3C
/// protocol.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}
