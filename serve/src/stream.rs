//! Server-sent events from a request's scheduler events. The stream owns the event receiver:
//! when the client disconnects, hyper drops the response body, the receiver goes with it, and
//! the scheduler cancels the generation at its next step.

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use edgeact_runtime::batching::Event;
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use tokio::sync::mpsc::UnboundedReceiver;

/// Turns one API's view of the scheduler's events into SSE `data:` payloads.
pub trait Translator: Send + 'static {
    /// Events sent before any token (OpenAI's role chunk).
    fn start(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }
    /// Events for one scheduler event; `true` once the stream is complete.
    fn event(&mut self, event: Event) -> (Vec<SseEvent>, bool);
    /// Events when the scheduler's channel closed without a final event.
    fn closed(&mut self) -> Vec<SseEvent>;
}

/// A JSON `data:` event.
pub fn data(value: &serde_json::Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

struct State<T> {
    rx: UnboundedReceiver<Event>,
    translator: T,
    queue: VecDeque<SseEvent>,
    finished: bool,
}

/// The SSE response for a submitted request (comments every 15 s keep idle connections, such
/// as a request waiting in the queue, checked for a vanished client).
pub fn sse<T: Translator>(
    rx: UnboundedReceiver<Event>,
    mut translator: T,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let queue = translator.start().into();
    let state = State {
        rx,
        translator,
        queue,
        finished: false,
    };
    let s = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok(e), st));
            }
            if st.finished {
                return None;
            }
            match st.rx.recv().await {
                Some(event) => {
                    let (events, done) = st.translator.event(event);
                    st.queue.extend(events);
                    st.finished = done;
                }
                None => {
                    let events = st.translator.closed();
                    st.queue.extend(events);
                    st.finished = true;
                }
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}
