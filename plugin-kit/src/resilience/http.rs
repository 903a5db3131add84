//! [`Resilience`] around reqwest: timeouts on every request, and the verdict taken from
//! the status and the rate-limit headers.

use std::time::Duration;

use super::{CallError, Resilience, Verdict, http_verdict};

/// An HTTP client for one dependency.
#[derive(Debug)]
pub struct ResilientHttp {
    client: reqwest::Client,
    resilience: Resilience,
}

use crate::clock::now_secs as now_unix;

impl ResilientHttp {
    /// A client with `timeout` on each request (connect included).
    pub fn new(resilience: Resilience, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Self { client, resilience })
    }

    pub fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    /// Sends the request `build` makes (again for each attempt).
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError<reqwest::Error>> {
        self.resilience
            .run(
                || build(&self.client).send(),
                |result| match result {
                    Ok(response) => http_verdict(
                        response.status().as_u16(),
                        |name| {
                            response
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        },
                        now_unix(),
                    ),
                    Err(err) if err.is_timeout() || err.is_connect() || err.is_request() => {
                        Verdict::Transient { after: None }
                    }
                    Err(_) => Verdict::Permanent,
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::super::{BreakerSettings, RetryPolicy};
    use super::*;

    /// A server answering `script` in turn (then 200), counting requests.
    fn server(script: Vec<&'static str>) -> (String, Arc<Mutex<usize>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let count = Arc::new(Mutex::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                *seen.lock().expect("count") += 1;
                let answer = script.next().unwrap_or(
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (url, count)
    }

    fn client(attempts: u32, threshold: u32) -> ResilientHttp {
        ResilientHttp::new(
            Resilience::new(
                "stub",
                RetryPolicy {
                    max_attempts: attempts,
                    base: Duration::from_millis(10),
                    cap: Duration::from_millis(50),
                    max_wait: Duration::from_secs(5),
                },
                BreakerSettings {
                    failure_threshold: threshold,
                    cool_down: Duration::from_secs(60),
                },
            ),
            Duration::from_secs(5),
        )
        .expect("client")
    }

    const UNAVAILABLE: &str =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

    #[tokio::test]
    async fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let (url, count) = server(vec![UNAVAILABLE, UNAVAILABLE]);
        let http = client(5, 10);
        let response = http.send(|c| c.get(&url)).await.expect("third time");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(*count.lock().expect("count"), 3);
        // Every attempt is counted and timed in the reported status.
        let calls = http.resilience().status().calls.expect("calls");
        assert_eq!(calls.attempts["retryable_error"], 2);
        assert_eq!(calls.attempts["ok"], 1);
        assert_eq!(calls.latency_counts.iter().sum::<u64>(), 3);

        let (url, count) = server(vec![
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ]);
        let response = client(5, 10)
            .send(|c| c.get(&url))
            .await
            .expect("a response");
        assert_eq!(response.status().as_u16(), 404);
        assert_eq!(*count.lock().expect("count"), 1, "a 404 is not retried");
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let (url, count) = server(vec![
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ]);
        let started = Instant::now();
        client(3, 10)
            .send(|c| c.get(&url))
            .await
            .expect("after the wait");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "waited as told"
        );
        assert_eq!(*count.lock().expect("count"), 2);
    }

    #[tokio::test]
    async fn the_breaker_opens_and_then_spares_the_service() {
        let (url, count) = server(vec![UNAVAILABLE; 10]);
        let http = client(2, 2);
        let last = http
            .send(|c| c.get(&url))
            .await
            .expect("the 503 is returned");
        assert_eq!(last.status().as_u16(), 503);
        assert_eq!(http.resilience().breaker_state().as_str(), "open");
        let refused = http.send(|c| c.get(&url)).await.expect_err("open");
        assert!(
            matches!(refused, CallError::BreakerOpen { .. }),
            "{refused}"
        );
        assert_eq!(*count.lock().expect("count"), 2, "no request while open");
        let calls = http.resilience().status().calls.expect("calls");
        assert_eq!(calls.attempts["refused_by_breaker"], 1);
        assert_eq!(
            calls.latency_counts.iter().sum::<u64>(),
            2,
            "a refused call has no latency"
        );
    }

    #[tokio::test]
    async fn a_shared_budget_spaces_requests() {
        let (url, count) = server(Vec::new());
        let budget = super::super::rate_budget(20, 1);
        let http = ResilientHttp::new(
            Resilience::new("a", RetryPolicy::default(), BreakerSettings::default())
                .with_budget(budget.clone()),
            Duration::from_secs(5),
        )
        .expect("client");
        let other = ResilientHttp::new(
            Resilience::new("b", RetryPolicy::default(), BreakerSettings::default())
                .with_budget(budget),
            Duration::from_secs(5),
        )
        .expect("client");
        let started = Instant::now();
        for _ in 0..3 {
            http.send(|c| c.get(&url)).await.expect("ok");
            other.send(|c| c.get(&url)).await.expect("ok");
        }
        // Six requests at 20/s with a burst of one: at least five intervals of 50 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(240),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(*count.lock().expect("count"), 6);
    }
}
