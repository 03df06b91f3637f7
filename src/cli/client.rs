//! The daemon's client: JSON over HTTP/1.1 on `ROOT/fvol.sock`.
use std::io;
use std::path::{Path, PathBuf};

use http_body_util::Full;
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CliError;
use crate::api::transport::{CONNECT_TIMEOUT, RawResponse, SendError, send};
use crate::api::{self, ErrorBody};

pub struct DaemonClient {
    root: PathBuf,
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl DaemonClient {
    pub fn new(root: &Path) -> Result<DaemonClient, CliError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Message(format!("starting the async runtime: {e}")))?;
        Ok(DaemonClient {
            root: root.to_owned(),
            socket: api::socket_path(root),
            runtime,
        })
    }

    /// POSTs `request` to `route` and decodes the answer, turning an error answer into its
    /// message.
    /// The daemon's state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        route: &str,
        request: &Req,
    ) -> Result<Resp, CliError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| CliError::Message(format!("encoding the request: {e}")))?;
        let request = Request::post(route)
            .header(HOST, "fvol")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CliError::Message(format!("building the request: {e}")))?;
        let response = self
            .runtime
            .block_on(send(&self.socket, request))
            .map_err(|err| self.describe(err))?;
        decode_response(&response)
    }

    /// GETs `route` and returns its text (`/metrics`).
    pub fn get_text(&self, route: &str) -> Result<String, CliError> {
        let request = Request::get(route)
            .header(HOST, "fvol")
            .body(Full::new(Bytes::new()))
            .map_err(|e| CliError::Message(format!("building the request: {e}")))?;
        let response = self
            .runtime
            .block_on(send(&self.socket, request))
            .map_err(|err| self.describe(err))?;
        if !response.status.is_success() {
            return decode_response::<api::Empty>(&response).map(|_| String::new());
        }
        Ok(String::from_utf8_lossy(&response.body).into_owned())
    }

    /// POSTs `request` to `route` and hands each line of the answer to `on_line` as it
    /// arrives (a streamed answer, as `/v1/events`); an error answer becomes its message.
    pub fn stream_lines<Req: Serialize>(
        &self,
        route: &str,
        request: &Req,
        on_line: &mut dyn FnMut(&str) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        use http_body_util::BodyExt;
        let body = serde_json::to_vec(request)
            .map_err(|e| CliError::Message(format!("encoding the request: {e}")))?;
        let request = Request::post(route)
            .header(HOST, "fvol")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CliError::Message(format!("building the request: {e}")))?;
        self.runtime.block_on(async {
            let connect = async {
                let stream = tokio::net::UnixStream::connect(&self.socket)
                    .await
                    .map_err(SendError::Connect)?;
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(SendError::Http)
            };
            let (mut sender, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| self.describe(SendError::ConnectTimeout))?
                .map_err(|e| self.describe(e))?;
            tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| self.describe(SendError::Http(e)))?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = response.into_body();
            if !status.is_success() {
                let body = body
                    .collect()
                    .await
                    .map_err(|e| self.describe(SendError::Http(e)))?
                    .to_bytes();
                let raw = RawResponse {
                    status,
                    headers,
                    body,
                };
                return decode_response::<api::Empty>(&raw).map(drop);
            }
            let mut pending = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| self.describe(SendError::Http(e)))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    on_line(String::from_utf8_lossy(&line[..end]).as_ref())?;
                }
            }
            Ok(())
        })
    }

    fn describe(&self, err: SendError) -> CliError {
        let socket = self.socket.display();
        match err {
            SendError::Connect(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                CliError::unreachable(&self.socket, &self.root)
            }
            SendError::Connect(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                CliError::Message(format!(
                    "cannot connect to the fvol daemon at {socket}: {e} (only root may use it)"
                ))
            }
            SendError::Connect(e) => CliError::Message(format!(
                "cannot connect to the fvol daemon at {socket}: {e}"
            )),
            SendError::ConnectTimeout => CliError::Message(format!(
                "timed out after {}s connecting to the fvol daemon at {socket}",
                CONNECT_TIMEOUT.as_secs()
            )),
            // Closed without an answer: most likely the daemon serves as many connections as
            // it takes at once (see docs/cli.md, Limits on requests).
            SendError::Http(e) if closed_by_daemon(&e) => CliError::Message(format!(
                "the fvol daemon at {socket} closed the connection without answering: it may be \
                 serving as many clients as it takes at once; try again ({e})"
            )),
            SendError::Http(e) => {
                CliError::Message(format!("talking to the fvol daemon at {socket}: {e}"))
            }
        }
    }
}

/// The daemon closed the connection before answering: it never read the request (a write
/// found the connection gone) or never sent an answer.
fn closed_by_daemon(err: &hyper::Error) -> bool {
    let io_kind = std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<io::Error>())
        .map(io::Error::kind);
    err.is_incomplete_message()
        || matches!(
            io_kind,
            Some(io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
        )
}

fn decode_response<Resp: DeserializeOwned>(response: &RawResponse) -> Result<Resp, CliError> {
    if response.status.is_success() {
        return serde_json::from_slice(&response.body).map_err(|e| {
            CliError::Message(format!("unexpected answer from the fvol daemon: {e}"))
        });
    }
    match serde_json::from_slice::<ErrorBody>(&response.body) {
        Ok(ErrorBody { error }) => Err(CliError::Message(error)),
        Err(_) => Err(CliError::Message(format!(
            "the fvol daemon answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body).trim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use hyper::StatusCode;

    use super::*;
    use crate::api::{PathRequest, PathResponse, routes};
    use crate::daemon::test_support::TestServer;

    fn raw(status: u16, body: &'static str) -> RawResponse {
        RawResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn error_answer_becomes_its_message() {
        let err = decode_response::<api::Empty>(&raw(404, r#"{"error":"no such volume: x"}"#))
            .unwrap_err();
        assert_eq!(err.to_string(), "no such volume: x");
    }

    #[test]
    fn error_answer_without_json_shows_status_and_text() {
        let err = decode_response::<api::Empty>(&raw(405, "nope\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the fvol daemon answered 405 Method Not Allowed: nope"
        );
    }

    #[test]
    fn missing_socket_means_the_daemon_is_not_running() {
        let root = tempfile::tempdir().unwrap();
        let client = DaemonClient::new(root.path()).unwrap();
        let err = client
            .call::<_, api::Empty>(routes::LIST, &api::Empty {})
            .unwrap_err();
        assert!(matches!(err, CliError::DaemonUnreachable { .. }), "{err:?}");
    }

    #[test]
    fn stale_socket_means_the_daemon_is_not_running() {
        let root = tempfile::tempdir().unwrap();
        // Bound then closed: the file stays, connecting is refused.
        drop(std::os::unix::net::UnixListener::bind(api::socket_path(root.path())).unwrap());
        let client = DaemonClient::new(root.path()).unwrap();
        let err = client
            .call::<_, api::Empty>(routes::LIST, &api::Empty {})
            .unwrap_err();
        assert!(matches!(err, CliError::DaemonUnreachable { .. }), "{err:?}");
    }

    #[test]
    fn round_trip_through_the_api() {
        let server = TestServer::start();
        let client = DaemonClient::new(server.root.path()).unwrap();
        let answer: PathResponse = client
            .call(
                routes::PATH,
                &PathRequest {
                    name: "data".into(),
                },
            )
            .unwrap();
        assert_eq!(answer.path, PathBuf::from("/fvol/volumes/data/mnt"));
        let err = client
            .call::<_, PathResponse>(
                routes::PATH,
                &PathRequest {
                    name: "gone".into(),
                },
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "no such volume: gone");
    }
}
