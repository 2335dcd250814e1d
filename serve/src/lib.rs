//! `edgeact serve`: an HTTP server over the continuous-batching scheduler
//! (`edgeact_runtime::batching`), speaking two APIs at once:
//!
//! - Text Generation Inference's (`POST /generate`, `POST /generate_stream`, `GET /info`), with
//!   the semantics AgentBench's `TGIAgent` relied on (see [`tgi`]);
//! - OpenAI's (`POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`), with
//!   messages rendered by the model's chat template (see [`openai`]);
//!
//! plus `GET /health` and `GET /metrics` (Prometheus text). The HTTP layer validates requests
//! at the edge, builds token prompts, and talks to the model only through a
//! [`edgeact_runtime::batching::Handle`]: the queue bound, prefix reuse and cancellation live in
//! the scheduler. A client that disconnects drops its event receiver, which cancels its
//! generation. Errors come back in each API's JSON shape ([`errors`]).
//!
//! [`serve`] runs it from the command line (Ctrl-C / SIGTERM shut it down gracefully);
//! [`Server`] runs it inside an existing Tokio runtime (tests).

mod app;
mod auth;
pub mod errors;
mod generation;
pub mod openai;
pub mod prompt;
mod stream;
pub mod tgi;

pub use app::{
    router, serve, shutdown_signal, ServeOptions, Server, DEFAULT_BODY_LIMIT, DEFAULT_MAX_BEST_OF,
    DEFAULT_SHUTDOWN_GRACE,
};
pub use generation::Engine;
pub use prompt::ChatPrompt;
