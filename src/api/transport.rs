//! The client side of HTTP/1.1 over a unix socket: one request on a fresh connection, its
//! answer read whole. The CLI talks to the daemon with it, and the daemon's tests to its
//! servers.
use std::io;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Covers connecting and the HTTP handshake only: requests themselves (a mount, a create) may
/// legitimately take long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum SendError {
    Connect(io::Error),
    ConnectTimeout,
    Http(hyper::Error),
}

/// A response read whole.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Sends one request on a fresh connection to `socket` and reads the whole response.
pub async fn send(socket: &Path, request: Request<Full<Bytes>>) -> Result<RawResponse, SendError> {
    let connect = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(SendError::Connect)?;
        hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)
    };
    let (mut sender, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| SendError::ConnectTimeout)??;
    // Drives the connection; its errors also surface through `send_request`.
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(SendError::Http)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(SendError::Http)?
        .to_bytes();
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}
