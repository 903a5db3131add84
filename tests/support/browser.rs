//! Headless Chromium (Debian's `chromium`), driven over the DevTools protocol: one
//! page, JavaScript evaluated in it, keys typed into it, every request it made, and
//! screenshots. The tests and the dashboard bench use it to see the dashboard as a
//! person's browser does.
//!
//! Waiting is done in the page: [`Page::wait_for`] resolves on the DOM mutation that
//! makes its condition true (a `MutationObserver`), or fails after its limit naming
//! what it waited for.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// Where Debian installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A running headless Chromium with one page attached.
#[derive(Debug)]
pub struct Page {
    child: Child,
    socket: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Events received while waiting for answers, oldest first.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

/// The flags the probe of this machine kind found needed: without the background
/// networking ones Chromium dials Google's hosts at every start.
const FLAGS: [&str; 12] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
];

impl Page {
    /// Starts Chromium with a new empty profile and opens a blank page `width` x
    /// `height` CSS pixels.
    pub fn launch(width: u32, height: u32) -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: scripts/test installs Debian's chromium package"
        );
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(CHROMIUM)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port and the browser's path once it listens.
        let active = profile.path().join("DevToolsActivePort");
        let address = crate::wait_for("chromium's DevTools port", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&active).ok()?;
            let mut lines = text.lines();
            let (port, path) = (lines.next()?, lines.next()?);
            Some(format!("127.0.0.1:{port}{path}"))
        });
        let stream = TcpStream::connect(address.split_once('/').map_or(&*address, |(a, _)| a))
            .expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let (socket, _) =
            tungstenite::client(format!("ws://{address}"), stream).expect("DevTools handshake");
        let mut page = Self {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        };
        let target = page.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = page.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        page.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        page.call("Page.enable", json!({}));
        page.call("Network.enable", json!({}));
        page.call("Runtime.enable", json!({}));
        page.resize(width, height, false);
        page
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::String(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send to DevTools");
        loop {
            let frame = self.socket.read().expect("read from DevTools");
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if value["id"] == id {
                assert!(
                    value.get("error").is_none(),
                    "{method} failed: {}",
                    value["error"]
                );
                return value["result"].clone();
            }
            if value.get("method").is_some() {
                self.events.push(value);
            }
        }
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A DevTools command to the page; its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session))
    }

    /// The viewport, as a laptop or (`mobile`) a phone.
    pub fn resize(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// `prefers-color-scheme: dark` (or light).
    pub fn color_scheme(&mut self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
    }

    /// Goes to `url` and waits for its `load` event.
    pub fn goto(&mut self, url: &str) {
        let before = self.events.len();
        let answer = self.call("Page.navigate", json!({"url": url}));
        assert!(
            answer.get("errorText").is_none(),
            "navigating to {url}: {}",
            answer["errorText"]
        );
        self.wait_event("Page.loadEventFired", before);
    }

    /// Reloads the page and waits for its `load` event.
    pub fn reload(&mut self) {
        let before = self.events.len();
        self.call("Page.reload", json!({"ignoreCache": true}));
        self.wait_event("Page.loadEventFired", before);
    }

    /// Reads what Chromium sends until event `method` has arrived (since event number
    /// `after`); the socket's read timeout bounds the wait.
    fn wait_event(&mut self, method: &str, after: usize) {
        while !self.events[after..].iter().any(|e| e["method"] == method) {
            let frame = self
                .socket
                .read()
                .unwrap_or_else(|err| panic!("waiting for {method}: {err}"));
            if let Message::Text(text) = frame {
                let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if value.get("method").is_some() {
                    self.events.push(value);
                }
            }
        }
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        );
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!(
                "evaluating `{expression}` threw: {}",
                exception["exception"]["description"]
                    .as_str()
                    .unwrap_or(&exception.to_string())
            );
        }
        answer["result"]["value"].clone()
    }

    /// Resolves with the value of `condition` (a JavaScript expression) once it is
    /// truthy: checked now and after every change to the document, for at most
    /// `limit`. Panics naming `what` if it never is.
    pub fn wait_for(&mut self, what: &str, condition: &str, limit: Duration) -> Value {
        let script = format!(
            r"new Promise((resolve, reject) => {{
                const check = () => {{
                  let value;
                  try {{ value = ({condition}); }} catch (e) {{ value = undefined; }}
                  if (value) {{ observer.disconnect(); clearTimeout(timer); resolve(value); return true; }}
                  return false;
                }};
                const observer = new MutationObserver(check);
                const timer = setTimeout(() => {{ observer.disconnect(); reject(new Error('timed out')); }}, {ms});
                if (!check()) observer.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}});
            }})",
            ms = limit.as_millis()
        );
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": script, "awaitPromise": true, "returnByValue": true}),
        );
        if answer.get("exceptionDetails").is_some() {
            let text = self.eval("document.body ? document.body.innerText : ''");
            panic!(
                "waited {limit:?} for {what} (`{condition}`); the page shows:\n{}",
                text.as_str().unwrap_or_default()
            );
        }
        answer["result"]["value"].clone()
    }

    /// Types `text` into the focused element, as a keyboard would insert it.
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Presses and releases a key (`Tab`, `Enter`), with Shift if `shift`.
    pub fn press(&mut self, key: &str, shift: bool) {
        let (code, text) = match key {
            "Tab" => (9, ""),
            "Enter" => (13, "\r"),
            other => panic!("no key code for {other}"),
        };
        let modifiers = if shift { 8 } else { 0 };
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({
                "type": kind, "key": key, "code": key,
                "windowsVirtualKeyCode": code, "modifiers": modifiers,
            });
            if kind == "keyDown" && !text.is_empty() {
                event["text"] = Value::String(text.to_owned());
            }
            self.call("Input.dispatchKeyEvent", event);
        }
    }

    /// Every URL the page requested since it started, in order.
    pub fn requested_urls(&mut self) -> Vec<String> {
        self.call("Runtime.evaluate", json!({"expression": "0"}));
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_owned))
            .collect()
    }

    /// Header `name` of the latest response to a URL ending with `suffix`, as the
    /// browser received it (before it decoded the body).
    pub fn response_header(&mut self, suffix: &str, name: &str) -> Option<String> {
        self.call("Runtime.evaluate", json!({"expression": "0"}));
        self.events
            .iter()
            .rev()
            .filter(|e| e["method"] == "Network.responseReceived")
            .map(|e| &e["params"]["response"])
            .find(|r| r["url"].as_str().is_some_and(|u| u.ends_with(suffix)))
            .and_then(|r| {
                r["headers"].as_object()?.iter().find_map(|(key, value)| {
                    key.eq_ignore_ascii_case(name)
                        .then(|| value.as_str().unwrap_or_default().to_owned())
                })
            })
    }

    /// The bytes received over the network since event `after` (for page weight).
    pub fn received_bytes_since(&mut self, after: usize) -> (u64, Vec<(String, u64)>) {
        self.call("Runtime.evaluate", json!({"expression": "0"}));
        let mut urls = std::collections::HashMap::new();
        for event in &self.events[after..] {
            if event["method"] == "Network.requestWillBeSent" {
                urls.insert(
                    event["params"]["requestId"].to_string(),
                    event["params"]["request"]["url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
        let mut each = Vec::new();
        for event in &self.events[after..] {
            if event["method"] == "Network.loadingFinished" {
                let id = event["params"]["requestId"].to_string();
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let bytes = event["params"]["encodedDataLength"].as_f64().unwrap_or(0.0) as u64;
                each.push((urls.get(&id).cloned().unwrap_or(id), bytes));
            }
        }
        (each.iter().map(|(_, b)| b).sum(), each)
    }

    /// How many events have arrived (a mark for [`Self::received_bytes_since`]).
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Writes a PNG of the whole page to `path`.
    pub fn screenshot(&mut self, path: &Path) -> PathBuf {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 png");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, &png).expect("write screenshot");
        path.to_owned()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the tests write screenshots for a person to look at: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    crate::bin_dir()
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("screenshots")
}
