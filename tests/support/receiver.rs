//! A notification receiver on loopback: records every request (headers and body) and
//! answers 200, or 503 while it is "down". The alert tests point channels at it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request the receiver took (answered 200).
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON notification")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Whether `x-betalogs-signature` is the HMAC-SHA256 of `timestamp.body` with
    /// `secret`, computed here independently of the daemon.
    pub fn signed_with(&self, secret: &str) -> bool {
        let (Some(timestamp), Some(signature)) = (
            self.header("x-betalogs-timestamp"),
            self.header("x-betalogs-signature"),
        ) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        signature == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// The receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<usize>>,
    down: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let receiver = Self {
            url,
            received: Arc::default(),
            refused: Arc::default(),
            down: Arc::default(),
        };
        let serving = receiver.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let serving = serving.clone();
                std::thread::spawn(move || serving.answer(stream));
            }
        });
        receiver
    }

    fn answer(&self, mut stream: std::net::TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer = if self.down.load(Ordering::SeqCst) {
            *self.refused.lock().expect("refused") += 1;
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        } else {
            self.received.lock().expect("received").push(Received {
                path,
                headers,
                body,
            });
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        };
        let _ = stream.write_all(answer.as_bytes());
    }

    /// Answer 503 (`true`) or 200.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Requests answered 200, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }

    /// Requests answered 503.
    pub fn refused(&self) -> usize {
        *self.refused.lock().expect("refused")
    }

    /// The `betalogs` notifications received, as (kind, rule, alert id, idempotency key).
    pub fn notifications(&self) -> Vec<(String, String, String, String)> {
        self.received()
            .iter()
            .map(|r| {
                let body = r.json();
                (
                    body["kind"].as_str().unwrap_or("").to_owned(),
                    body["alert"]["rule"].as_str().unwrap_or("").to_owned(),
                    body["alert"]["id"].as_str().unwrap_or("").to_owned(),
                    r.header("idempotency-key").unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}
