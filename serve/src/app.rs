//! The router, its shared state, and the server's life: bind, serve, graceful shutdown.

use crate::auth;
use crate::errors::{Api, ApiError};
use crate::generation::{unix_time, Engine};
use crate::{openai, tgi};
use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use edgeact_runtime::batching::Handle;
use std::fmt::Write;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Default request body limit (4 MiB): far above any prompt that fits a context.
pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;
/// Default `--max-best-of` (TGI's default).
pub const DEFAULT_MAX_BEST_OF: usize = 2;
/// Default time in-flight requests get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long connections get to close once the remaining requests were aborted.
const ABORT_WAIT: Duration = Duration::from_secs(3);

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// `--api-key`: required as `Authorization: Bearer <key>` on every route but `/health`.
    pub api_key: Option<String>,
    /// `--seed`: the seed of requests that give none (default: a random one per request).
    pub default_seed: Option<u64>,
    /// Largest request body accepted (bytes); larger ones get 413.
    pub body_limit: usize,
    /// Time in-flight requests get to finish after a shutdown signal before they are aborted.
    pub shutdown_grace: Duration,
    /// `--max-best-of`: the largest TGI `best_of` accepted (1 refuses `best_of` > 1).
    pub max_best_of: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            api_key: None,
            default_seed: None,
            body_limit: DEFAULT_BODY_LIMIT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_best_of: DEFAULT_MAX_BEST_OF,
        }
    }
}

/// HTTP responses by status class, for `/metrics`.
#[derive(Default)]
pub struct HttpCounters {
    by_class: [AtomicU64; 5],
}

impl HttpCounters {
    fn record(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP edgeact_http_requests_total HTTP responses sent, by status class."
        );
        let _ = writeln!(out, "# TYPE edgeact_http_requests_total counter");
        for (i, c) in self.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "edgeact_http_requests_total{{code=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// What every handler sees.
pub struct AppState {
    pub engine: Engine,
    pub opts: ServeOptions,
    /// When the server started (Unix seconds).
    pub started: u64,
    pub http: HttpCounters,
}

/// 200 while the batching loop runs, 503 once it has ended (as TGI's `/health` answers an
/// unhealthy shard), so a load balancer stops sending requests that would never be answered.
async fn health(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.engine.handle.is_running() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.engine.handle.metrics().to_prometheus();
    text.push_str(&state.http.to_prometheus());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found(req: Request) -> ApiError {
    let path = req.uri().path();
    ApiError::not_found(Api::of_path(path), format!("no route for {} {path}", req.method()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    let path = req.uri().path();
    ApiError::method_not_allowed(Api::of_path(path), format!("{path} does not take {}", req.method()))
}

async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    state.http.record(res.status());
    res
}

/// The application: TGI routes, OpenAI routes under `/v1`, `/health` and `/metrics`.
pub fn router(engine: Engine, opts: ServeOptions) -> Router {
    let body_limit = opts.body_limit;
    let state = Arc::new(AppState {
        engine,
        opts,
        started: unix_time(),
        http: HttpCounters::default(),
    });
    Router::new()
        .route("/", post(tgi::compat))
        .route("/generate", post(tgi::generate))
        .route("/generate_stream", post(tgi::generate_stream))
        .route("/info", get(tgi::info))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth::require_key))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count))
        .with_state(state)
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    trigger: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    handle: Handle,
    grace: Duration,
}

impl Server {
    /// Binds `addr` (port 0: the OS picks one) and starts serving on the current Tokio runtime.
    pub async fn bind(addr: impl ToSocketAddrs, engine: Engine, opts: ServeOptions) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(addr).await.context("binding the listening socket")?;
        Server::from_listener(listener, engine, opts)
    }

    /// Serves on an already bound listener.
    pub fn from_listener(listener: TcpListener, engine: Engine, opts: ServeOptions) -> anyhow::Result<Server> {
        let addr = listener.local_addr().context("reading the listening address")?;
        let handle = engine.handle.clone();
        let grace = opts.shutdown_grace;
        let app = router(engine, opts);
        let (trigger, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .await
        });
        Ok(Server {
            addr,
            trigger: Some(trigger),
            task,
            handle,
            grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and requests (new ones get 503), lets in-flight requests
    /// finish within the grace period, then aborts the rest and returns.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(t) = self.trigger.take() {
            let _ = t.send(());
        }
        self.handle.shutdown();
        match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(r) => return flatten(r),
            Err(_) => {
                eprintln!(
                    "edgeact: requests still running {} s after the shutdown signal; aborting them",
                    self.grace.as_secs_f64()
                );
                self.handle.abort();
            }
        }
        match tokio::time::timeout(ABORT_WAIT, &mut self.task).await {
            Ok(r) => flatten(r),
            Err(_) => {
                self.task.abort();
                Ok(())
            }
        }
    }

    /// Serves until `signal` completes (or the server fails), then shuts down gracefully.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            _ = signal => {}
            r = &mut self.task => return flatten(r),
        }
        self.shutdown().await
    }
}

fn flatten(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    r.context("the server task failed")?.context("serving HTTP")
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("edgeact: shutting down: no new requests; waiting for the running ones");
}

/// Runs the server on `host:port` until Ctrl-C or SIGTERM, printing
/// `edgeact: listening on http://ADDR` on stderr once bound. Blocks; builds its own runtime.
pub fn serve(engine: Engine, opts: ServeOptions, host: &str, port: u16) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("edgeact-http")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let server = Server::bind((host, port), engine, opts)
            .await
            .with_context(|| format!("listening on {host}:{port}"))?;
        eprintln!("edgeact: listening on http://{}", server.local_addr());
        server.run_until(shutdown_signal()).await
    })
}
