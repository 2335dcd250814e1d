//! Counters of a scheduler, read without locks and rendered in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters (monotonic) and gauges of one scheduler.
#[derive(Debug)]
pub struct Metrics {
    parallel: u64,
    requests: AtomicU64,
    rejected: AtomicU64,
    finished: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    prompt_tokens: AtomicU64,
    prefilled_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    prefix_hits: AtomicU64,
    generated_tokens: AtomicU64,
    steps: AtomicU64,
    draft_tokens: AtomicU64,
    draft_accepted: AtomicU64,
    queue_depth: AtomicU64,
    busy_sequences: AtomicU64,
}

/// The values at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    pub parallel: u64,
    /// Requests accepted into the queue.
    pub requests: u64,
    /// Requests refused because the queue was full.
    pub rejected: u64,
    pub finished: u64,
    pub cancelled: u64,
    pub failed: u64,
    /// Prompt tokens of admitted requests (cached or evaluated).
    pub prompt_tokens: u64,
    /// Prompt tokens evaluated.
    pub prefilled_tokens: u64,
    /// Prompt tokens reused from the prefix cache.
    pub cached_tokens: u64,
    /// Requests that reused a cached prefix.
    pub prefix_hits: u64,
    pub generated_tokens: u64,
    /// Forward passes.
    pub steps: u64,
    /// Draft tokens verified (speculative decoding), and those accepted.
    pub draft_tokens: u64,
    pub draft_accepted: u64,
    pub queue_depth: u64,
    pub busy_sequences: u64,
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn new(parallel: usize) -> Metrics {
        let z = || AtomicU64::new(0);
        Metrics {
            parallel: parallel as u64,
            requests: z(),
            rejected: z(),
            finished: z(),
            cancelled: z(),
            failed: z(),
            prompt_tokens: z(),
            prefilled_tokens: z(),
            cached_tokens: z(),
            prefix_hits: z(),
            generated_tokens: z(),
            steps: z(),
            draft_tokens: z(),
            draft_accepted: z(),
            queue_depth: z(),
            busy_sequences: z(),
        }
    }

    pub(crate) fn submitted(&self) {
        add(&self.requests, 1);
    }
    pub(crate) fn rejected(&self) {
        add(&self.rejected, 1);
    }
    pub(crate) fn admitted(&self, prompt: usize, cached: usize) {
        add(&self.prompt_tokens, prompt);
        add(&self.cached_tokens, cached);
        if cached > 0 {
            add(&self.prefix_hits, 1);
        }
    }
    /// A forward pass that prefilled `prefilled` prompt tokens.
    pub(crate) fn step(&self, prefilled: usize) {
        add(&self.steps, 1);
        add(&self.prefilled_tokens, prefilled);
    }
    pub(crate) fn generated(&self, tokens: usize) {
        add(&self.generated_tokens, tokens);
    }
    pub(crate) fn drafts(&self, verified: usize, accepted: usize) {
        add(&self.draft_tokens, verified);
        add(&self.draft_accepted, accepted);
    }
    pub(crate) fn ended(&self, cancelled: bool, failed: bool) {
        match (cancelled, failed) {
            (_, true) => add(&self.failed, 1),
            (true, _) => add(&self.cancelled, 1),
            _ => add(&self.finished, 1),
        }
    }
    pub(crate) fn set_gauges(&self, queue_depth: usize, busy: usize) {
        self.queue_depth.store(queue_depth as u64, Ordering::Relaxed);
        self.busy_sequences.store(busy as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            parallel: self.parallel,
            requests: g(&self.requests),
            rejected: g(&self.rejected),
            finished: g(&self.finished),
            cancelled: g(&self.cancelled),
            failed: g(&self.failed),
            prompt_tokens: g(&self.prompt_tokens),
            prefilled_tokens: g(&self.prefilled_tokens),
            cached_tokens: g(&self.cached_tokens),
            prefix_hits: g(&self.prefix_hits),
            generated_tokens: g(&self.generated_tokens),
            steps: g(&self.steps),
            draft_tokens: g(&self.draft_tokens),
            draft_accepted: g(&self.draft_accepted),
            queue_depth: g(&self.queue_depth),
            busy_sequences: g(&self.busy_sequences),
        }
    }
}

impl MetricsSnapshot {
    /// The Prometheus text exposition format (version 0.0.4), names prefixed `edgeact_`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP edgeact_{name} {help}");
            let _ = writeln!(out, "# TYPE edgeact_{name} {kind}");
            let _ = writeln!(out, "edgeact_{name} {value}");
        };
        metric(
            "requests_total",
            "counter",
            "Requests accepted into the queue.",
            self.requests,
        );
        metric(
            "requests_rejected_total",
            "counter",
            "Requests refused because the queue was full.",
            self.rejected,
        );
        metric(
            "requests_finished_total",
            "counter",
            "Requests that ended normally.",
            self.finished,
        );
        metric(
            "requests_cancelled_total",
            "counter",
            "Requests cancelled by their client or a shutdown.",
            self.cancelled,
        );
        metric(
            "requests_failed_total",
            "counter",
            "Requests that ended with an error.",
            self.failed,
        );
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens of admitted requests.",
            self.prompt_tokens,
        );
        metric(
            "prefill_tokens_total",
            "counter",
            "Prompt tokens evaluated.",
            self.prefilled_tokens,
        );
        metric(
            "prefix_cache_tokens_total",
            "counter",
            "Prompt tokens reused from the prefix cache.",
            self.cached_tokens,
        );
        metric(
            "prefix_cache_hits_total",
            "counter",
            "Requests that reused a cached prefix.",
            self.prefix_hits,
        );
        metric(
            "generated_tokens_total",
            "counter",
            "Tokens generated.",
            self.generated_tokens,
        );
        metric(
            "forward_passes_total",
            "counter",
            "Batched forward passes run.",
            self.steps,
        );
        metric(
            "draft_tokens_total",
            "counter",
            "Draft tokens verified by speculative decoding.",
            self.draft_tokens,
        );
        metric(
            "draft_tokens_accepted_total",
            "counter",
            "Draft tokens the model accepted.",
            self.draft_accepted,
        );
        metric(
            "queue_depth",
            "gauge",
            "Requests waiting for a sequence.",
            self.queue_depth,
        );
        metric(
            "busy_sequences",
            "gauge",
            "Sequences running a request.",
            self.busy_sequences,
        );
        metric(
            "parallel_sequences",
            "gauge",
            "Sequences decoded at once (--parallel).",
            self.parallel,
        );
        out
    }
}
