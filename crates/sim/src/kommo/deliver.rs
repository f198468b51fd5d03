//! The delivery worker: one queue, one POST at a time, 2 s each (§5: "answer within 2 s").
//! HTTP/1.1 is written by hand over a TCP stream so the simulator needs no HTTP client; that
//! limits it to `http://` destinations (an `https://` one is a failed delivery).

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Delivery, Inner};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) destination: String,
    pub(crate) body: String,
}

pub(crate) async fn run(inner: Weak<Inner>, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(job) = queue.recv().await {
        let status = tokio::time::timeout(TIMEOUT, post(&job.destination, &job.body)).await.ok().flatten();
        let Some(inner) = inner.upgrade() else { return };
        let now = inner.now_millis();
        {
            let mut state = inner.lock();
            state.hooks.record(&job.destination, status, now);
            state.deliveries.push(Delivery { destination: job.destination, body: job.body, status });
        }
        inner.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// POSTs the form and returns the answer's status, or `None` if there is none.
async fn post(destination: &str, body: &str) -> Option<u16> {
    let url = url::Url::parse(destination).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: amoCRM-WebHook-client/1.0\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream =
        tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}
