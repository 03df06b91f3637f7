//! A minimal client of the Docker volume plugin protocol, sending requests as dockerd does
//! (HTTP/1.1 POST on a unix socket, `Accept: application/vnd.docker.plugins.v1.2+json`, no
//! Content-Type), so tests see exactly what the daemon answers.
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The Content-Type of every plugin answer.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// One answer, read whole.
#[derive(Debug)]
pub struct PluginResponse {
    /// The HTTP status, or `RESET` when the server reset the connection before the whole
    /// answer could be read.
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// `PluginResponse::status` of a connection reset before the whole answer was read. A server that refuses a
/// request it has not read whole (over its size limit) answers and closes; on a unix socket,
/// closing with unread bytes resets the connection, and the client may see the reset first.
pub const RESET: u16 = 0;

impl PluginResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.body))
    }
}

/// Talks to the plugin socket at `socket`.
#[derive(Clone, Debug)]
pub struct PluginClient {
    pub socket: PathBuf,
}

impl PluginClient {
    pub fn new(socket: impl Into<PathBuf>) -> PluginClient {
        PluginClient {
            socket: socket.into(),
        }
    }

    /// POSTs `body` to `route` with no Content-Type and reads the answer.
    pub fn post(&self, route: &str, body: &str) -> PluginResponse {
        self.post_with_headers(route, body, &[])
    }

    /// POSTs with extra header lines (`"Name: value"`).
    pub fn post_with_headers(&self, route: &str, body: &str, headers: &[&str]) -> PluginResponse {
        raw_post(&self.socket, route, body, headers)
    }

    /// POSTs and expects 200 with the plugin Content-Type; returns the JSON answer.
    pub fn ok(&self, route: &str, body: &str) -> Value {
        let response = self.post(route, body);
        assert_eq!(
            response.status, 200,
            "{route} {body}: expected 200, got {response:?}"
        );
        assert_eq!(
            response.content_type.as_deref(),
            Some(CONTENT_TYPE),
            "{route}"
        );
        response.json()
    }

    /// POSTs and expects `status` with `{"Err": "..."}` (and nothing else); returns the
    /// message. The status is the error's class, as on the CLI's API: 400 bad input, 404 not
    /// found, 409 conflict, 503 backend unavailable, 500 internal.
    pub fn err(&self, route: &str, body: &str, status: u16) -> String {
        self.err_with_status(route, body, status)
    }

    /// POSTs and expects 400 with `{"Err": "..."}`: a request the daemon refused (a body that
    /// is not JSON or not of the endpoint's shape, or bad values); returns the message.
    pub fn bad_request(&self, route: &str, body: &str) -> String {
        self.err_with_status(route, body, 400)
    }

    fn err_with_status(&self, route: &str, body: &str, status: u16) -> String {
        let response = self.post(route, body);
        assert_eq!(
            response.status, status,
            "{route} {body}: expected {status}, got {response:?}"
        );
        assert_eq!(
            response.content_type.as_deref(),
            Some(CONTENT_TYPE),
            "{route}"
        );
        let json = response.json();
        let object = json.as_object().expect("error answer is an object");
        assert_eq!(object.len(), 1, "error answer has only Err: {json}");
        let message = object["Err"].as_str().expect("Err is a string").to_owned();
        assert!(!message.is_empty(), "{route}: empty Err");
        message
    }
}

fn raw_post(socket: &Path, route: &str, body: &str, headers: &[&str]) -> PluginResponse {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut request = format!(
        "POST {route} HTTP/1.1\r\nHost: plugin\r\nUser-Agent: fuse-tests\r\n\
         Accept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    // A server may answer (and close) before it has read a whole request it refuses, such as
    // one over its size limit: its answer is still there to read.
    if let Err(e) = stream.write_all(request.as_bytes()) {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "sending to {}: {e}",
            socket.display()
        );
    }
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return PluginResponse {
                status: RESET,
                content_type: None,
                body: format!("reset after {} bytes of the answer: {e}", raw.len()),
            };
        }
        other => {
            other.unwrap_or_else(|e| panic!("reading from {}: {e}", socket.display()));
        }
    }
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut content_type = None;
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line");
        let name = name.to_ascii_lowercase();
        assert_ne!(
            name, "transfer-encoding",
            "chunked answers are not expected"
        );
        if name == "content-type" {
            content_type = Some(value.trim().to_owned());
        }
    }
    PluginResponse {
        status,
        content_type,
        body: body.to_owned(),
    }
}
