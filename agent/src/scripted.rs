//! `--scripted FILE`: fixed replies per task, replayed instead of a model (tests, demos).
//!
//! Format: JSON Lines, one `{"index": N, "replies": ["…", …]}` per task (index = position in
//! the task file). A task without a line gets no reply, so its first model call fails.

use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;

#[derive(serde::Deserialize)]
struct Line {
    index: usize,
    replies: Vec<String>,
}

/// Replies by task index.
pub fn load(path: &Path) -> anyhow::Result<HashMap<usize, Vec<String>>> {
    let text = edgeact_runtime::files::read_regular_text(path, crate::tasks::MAX_TASK_FILE_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for (n, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        out.insert(line.index, line.replies);
    }
    Ok(out)
}
