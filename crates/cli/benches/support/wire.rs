//! Raw HTTP/1.1 on loopback for the benches' load generators (shared through `#[path]`): one
//! request and its answer, read without a client library so that the generator costs little.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request on a connection of its own: the status and the body.
pub async fn fetch(addr: SocketAddr, request: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = Vec::new();
    let (status, body_at) = read_response(&mut stream, &mut buf).await?;
    Ok((status, String::from_utf8_lossy(&buf[body_at..]).into_owned()))
}

/// Reads one response with a `Content-Length` into `buf`: its status, and where the body starts.
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(u16, usize)> {
    buf.clear();
    loop {
        if stream.read_buf(buf).await? == 0 {
            bail!("connection closed mid-response");
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = std::str::from_utf8(&buf[..end])?;
        let status = head.get(9..12).and_then(|code| code.parse().ok()).context("no status line")?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .context("response without Content-Length")?;
        let body_at = end + 4;
        while buf.len() < body_at + length {
            if stream.read_buf(buf).await? == 0 {
                bail!("connection closed mid-body");
            }
        }
        return Ok((status, body_at));
    }
}
