//! The JSONL transcript written by `--log FILE`: one JSON object per line (`start`, each
//! `reply` and `observation` event of the loop, `end`), flushed as it goes so a crash keeps
//! what happened so far.

use anyhow::Context;
use edgeact_runtime::agent::Event;
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub struct Transcript {
    out: BufWriter<File>,
}

impl Transcript {
    pub fn create(path: &Path) -> anyhow::Result<Transcript> {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Transcript { out: BufWriter::new(f) })
    }

    /// Writes any serializable record as one line.
    pub fn write<T: Serialize>(&mut self, record: &T) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }

    /// Writes a loop event tagged with the task it belongs to.
    pub fn event(&mut self, task: Option<usize>, seed: Option<u64>, ev: &Event<'_>) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct Tagged<'a, 'b> {
            #[serde(skip_serializing_if = "Option::is_none")]
            task: Option<usize>,
            #[serde(skip_serializing_if = "Option::is_none")]
            seed: Option<u64>,
            #[serde(flatten)]
            ev: &'a Event<'b>,
        }
        self.write(&Tagged { task, seed, ev })
    }
}
