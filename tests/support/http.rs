//! A plain HTTP/1.1 client over a `TcpStream`, for requests a well-behaved client would
//! not send (truncated bodies, lying lengths) as well as ordinary ones.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

/// A response: status, raw header block, body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// How the body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` matching the body.
    Length,
    /// `Content-Length: n` but only the body sent, then the write side closed.
    Truncated { declared: usize },
    /// `Transfer-Encoding: chunked`, one chunk.
    Chunked,
}

/// Sends one request (`Connection: close`) and reads the whole response; `Err` when the
/// connection fails (a daemon that is down).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    framing: Framing,
) -> std::io::Result<HttpResponse> {
    let stream = std::net::TcpStream::connect(addr)?;
    exchange(stream, method, path, headers, body, framing)
}

/// [`request`] from another loopback address (`127.0.0.2`, say): a second client as the
/// daemon's per-address limits see it.
pub fn request_from(
    source: std::net::Ipv4Addr,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    framing: Framing,
) -> std::io::Result<HttpResponse> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let target: std::net::SocketAddrV4 = addr
        .parse()
        .map_err(|_| std::io::Error::other(format!("{addr} is not an IPv4 address")))?;
    let socket = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0)),
    )?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &SockaddrIn::from(target),
    )?;
    exchange(
        std::net::TcpStream::from(socket),
        method,
        path,
        headers,
        body,
        framing,
    )
}

fn exchange(
    mut stream: std::net::TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    framing: Framing,
) -> std::io::Result<HttpResponse> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match framing {
        Framing::Length => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
        Framing::Truncated { declared } => {
            head.push_str(&format!("Content-Length: {declared}\r\n"));
        }
        Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    match framing {
        Framing::Chunked => {
            write!(stream, "{:x}\r\n", body.len())?;
            // A server that refuses early may close before the body is all sent.
            let _ = stream.write_all(body);
            let _ = stream.write_all(b"\r\n0\r\n\r\n");
        }
        _ => {
            let _ = stream.write_all(body);
        }
    }
    if let Framing::Truncated { .. } = framing {
        stream.shutdown(Shutdown::Write)?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    Ok(HttpResponse {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    })
}

/// A JSON POST with `Content-Length`.
pub fn post_json(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpResponse> {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, body.as_bytes(), Framing::Length)
}

/// `GET path` with `Authorization: Bearer token`: the status and the JSON body.
pub fn get_json(addr: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    let bearer = format!("Bearer {token}");
    let response = request(
        addr,
        "GET",
        path,
        &[("authorization", &bearer)],
        b"",
        Framing::Length,
    )
    .expect("GET");
    (response.status, response.json())
}
