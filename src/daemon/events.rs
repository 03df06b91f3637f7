//! `POST /v1/events` on the API socket: the events the volume manager recorded (see
//! `volume::events`), one JSON object a line: with `since`, first those kept that match; then
//! the new ones as they happen, until `until` passes, the client goes or the daemon stops.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::{broadcast, mpsc, watch};

use super::api_routes::ApiError;
use super::request_body::read_json;
use crate::api::{EventsRequest, routes};
use crate::volume::events::{Event, EventFilter, EventLog, EventType, now_nanos};

struct Events {
    log: Arc<EventLog>,
    /// True once the daemon stops: every stream ends then, so that the server's graceful
    /// shutdown does not wait for streams that never end.
    stopping: watch::Receiver<bool>,
}

pub fn router(log: Arc<EventLog>, stopping: watch::Receiver<bool>) -> Router {
    Router::new()
        .route(routes::EVENTS, post(events))
        .with_state(Arc::new(Events { log, stopping }))
}

/// The filter a request asks for; a bad one is an error naming the valid choices.
pub fn filter_of(req: EventsRequest) -> Result<EventFilter, String> {
    let types = req
        .types
        .iter()
        .map(|t| EventType::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    if let (Some(since), Some(until)) = (req.since, req.until)
        && since > until
    {
        return Err("since is after until: nothing can match".into());
    }
    Ok(EventFilter {
        volumes: req.volumes,
        types,
        since: req.since,
        until: req.until,
    })
}

fn line(event: &Event) -> Result<Bytes, Infallible> {
    let mut text = serde_json::to_vec(event).unwrap_or_default();
    text.push(b'\n');
    Ok(Bytes::from(text))
}

async fn events(State(state): State<Arc<Events>>, body: Body) -> Result<Response, ApiError> {
    let req: EventsRequest = read_json(body).await?;
    let filter = filter_of(req).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let (history, live) = state.log.subscribe();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(stream_events(
        history,
        live,
        filter,
        tx,
        state.stopping.clone(),
    ));
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

async fn stream_events(
    history: Vec<Event>,
    mut live: broadcast::Receiver<Event>,
    filter: EventFilter,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    mut stopping: watch::Receiver<bool>,
) {
    // Without `since`, only what happens from now on (as `docker events`).
    let kept = history.iter().filter(|_| filter.since.is_some());
    for event in kept.filter(|e| filter.matches(e)) {
        if tx.send(line(event)).await.is_err() {
            return;
        }
    }
    let deadline = filter.until.map(|until| {
        let left = Duration::from_nanos(until.saturating_sub(now_nanos()));
        tokio::time::Instant::now() + left
    });
    if filter.until.is_some_and(|until| until <= now_nanos()) {
        return;
    }
    let until_passes = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_passes);
    let stopped = async move {
        // An error means the sender is gone, which happens only after it sent.
        let _ = stopping.wait_for(|s| *s).await.map(|_| ());
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = &mut until_passes => return,
            () = tx.closed() => return,
            received = live.recv() => match received {
                Ok(event) if filter.matches(&event) => {
                    if tx.send(line(&event)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    log::warn!("an events reader fell behind and lost {lost} events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filters_name_the_valid_choices() {
        let req = |types: &[&str], since, until| EventsRequest {
            since,
            until,
            volumes: vec![],
            types: types.iter().map(|t| t.to_string()).collect(),
        };
        assert!(filter_of(req(&["mount", "quota-full"], None, None)).is_ok());
        let e = filter_of(req(&["mounted"], None, None)).unwrap_err();
        assert!(
            e.contains("valid types are:") && e.contains("handler-restart"),
            "{e}"
        );
        assert!(filter_of(req(&[], Some(2), Some(1))).is_err());
    }
}
