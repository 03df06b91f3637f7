//! Reading and checking request bodies, for both servers: at most `MAX_BODY_BYTES`, within
//! `BODY_TIMEOUT`, and always a JSON object of the endpoint's shape (`RequestBody::SHAPE`).
//! A body of another JSON type is refused even where serde would take it: it would read `[]`
//! as a create request with every field left out.
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::api::RequestBody;

/// The largest request body either server reads (a create request with the most labels
/// allowed is about 64 KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long a client may take to send a request's body once its header has arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a body was refused: the HTTP status and the message for the client.
#[derive(Debug, PartialEq, Eq)]
pub struct BodyError {
    pub status: StatusCode,
    pub message: String,
}

fn bad_request(message: String) -> BodyError {
    BodyError {
        status: StatusCode::BAD_REQUEST,
        message,
    }
}

/// Reads and parses a request body.
pub async fn read_json<T: RequestBody>(body: Body) -> Result<T, BodyError> {
    let bytes = read_body(body).await?;
    parse_json(&bytes)
}

/// Reads a whole body, refusing one over `MAX_BODY_BYTES` or slower than `BODY_TIMEOUT`.
pub async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    let collected =
        tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect());
    match collected.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "request body too large: at most {} KiB",
                MAX_BODY_BYTES / 1024
            ),
        }),
        Ok(Err(e)) => Err(bad_request(format!("reading the request body: {e}"))),
        Err(_) => Err(BodyError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive within {}s",
                BODY_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// Parses `body` as `T`, whatever the Content-Type (clients need not send one). An empty body
/// stands for `{}` (Docker sends none with `Plugin.Activate`).
pub fn parse_json<T: RequestBody>(body: &[u8]) -> Result<T, BodyError> {
    let trimmed = body.trim_ascii();
    let json: &[u8] = if trimmed.is_empty() { b"{}" } else { trimmed };
    if json[0] != b'{' {
        return Err(bad_request(format!(
            "invalid request body: expected a JSON object {}, not {}",
            T::SHAPE,
            json_kind(json[0])
        )));
    }
    serde_json::from_slice(json).map_err(|e| {
        bad_request(format!(
            "invalid request body: {e}; expected a JSON object {}",
            T::SHAPE
        ))
    })
}

/// What a JSON text starting with `first` is, for messages.
fn json_kind(first: u8) -> &'static str {
    match first {
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => "JSON",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{self, plugin};

    fn refused<T: RequestBody + std::fmt::Debug>(body: &str) -> String {
        let err = parse_json::<T>(body.as_bytes()).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
        err.message
    }

    #[test]
    fn other_json_types_are_refused_naming_the_shape() {
        for (body, kind) in [
            ("[]", "an array"),
            (" [\"v1\"] ", "an array"),
            ("\"v1\"", "a string"),
            ("1", "a number"),
            ("-1", "a number"),
            ("true", "a boolean"),
            ("null", "null"),
            ("x", "JSON"),
        ] {
            let message = refused::<api::CreateRequest>(body);
            assert_eq!(
                message,
                format!(
                    "invalid request body: expected a JSON object {}, not {kind}",
                    <api::CreateRequest as RequestBody>::SHAPE
                ),
                "{body}"
            );
        }
        // serde alone would read an array as the fields in order.
        let message = refused::<plugin::NameRequest>(r#"["v1"]"#);
        assert!(
            message.contains("not an array") && message.contains(r#"{"Name": string}"#),
            "{message}"
        );
    }

    #[test]
    fn empty_stands_for_an_empty_object() {
        for body in ["", "  \n", "{}"] {
            let req: api::CreateRequest = parse_json(body.as_bytes()).unwrap();
            assert_eq!(req, api::CreateRequest::default());
            let _: plugin::NoArguments = parse_json(body.as_bytes()).unwrap();
        }
        let message = refused::<api::PathRequest>("");
        assert!(message.contains("missing field `name`"), "{message}");
    }

    #[test]
    fn fields_are_checked() {
        // The CLI API is fvol's own: a misspelt field is an error, not a default.
        let message = refused::<api::CreateRequest>(r#"{"nmae": "v1"}"#);
        assert!(
            message.contains("unknown field `nmae`") && message.contains("expected a JSON object"),
            "{message}"
        );
        let message = refused::<api::CreateRequest>(r#"{"labels": ["a"]}"#);
        assert!(message.contains("invalid type: sequence"), "{message}");
        let message = refused::<api::RemoveRequest>(r#"{"names": "v1"}"#);
        assert!(message.contains("invalid type: string"), "{message}");
        // Docker's: fields it may add in later versions are ignored.
        let req: plugin::MountRequest =
            parse_json(br#"{"Name": "v1", "ID": "abc", "Later": 1}"#).unwrap();
        assert_eq!(req.id, "abc");
        let _: plugin::NoArguments = parse_json(br#"{"Anything": [1]}"#).unwrap();
        let message = refused::<plugin::CreateRequest>(r#"{"Name": "v1", "Opts": ["size"]}"#);
        assert!(message.contains("invalid type: sequence"), "{message}");
        let message = refused::<plugin::CreateRequest>(r#"{"Name": "v1"} {}"#);
        assert!(message.contains("trailing characters"), "{message}");
    }

    #[tokio::test]
    async fn large_bodies_are_refused() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let err = read_body(Body::from(big)).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.message, "request body too large: at most 1024 KiB");
        let fits = vec![b' '; MAX_BODY_BYTES];
        assert_eq!(
            read_body(Body::from(fits)).await.unwrap().len(),
            MAX_BODY_BYTES
        );
    }
}
