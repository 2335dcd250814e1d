//! The JSONL transcript written by `--log FILE`: one JSON object per line, flushed as it goes
//! so a crash keeps what happened so far.
//!
//! Each run writes a `start` record ([`RunStart`]: the protocol, the history before the first
//! model call, the system prompt and the prompt format), each `reply` and `observation` event
//! of the loop ([`Event`]), then an `end` record ([`RunEnd`]: status, answer, the judge's
//! verdict where there is one, and the prompt of the last model call). `eval` tags every
//! record of a run with `task` (the task's index in the task file) and `seed`, since runs of
//! many tasks share one file; `agent` writes one untagged run. The format is documented in
//! `docs/agent.md` ("Transcript format"); [`crate::export`] reads it back.

use crate::prompt::PromptFormat;
use crate::react::{LanguageModel, ModelReply, ModelRequest, Protocol, Status};
use crate::render::{ChatTemplate, Message};
use crate::Event;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub struct Transcript {
    out: BufWriter<File>,
}

/// A run's `start` record, beside its tags and any command-specific fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    pub protocol: Protocol,
    /// The history before the first model call: the instruction (with the one-shot question
    /// for OS), the injected one-shot or acknowledgement turns, and the task (unstripped, as
    /// the loop holds it).
    pub history: Vec<Message>,
    /// The system prompt of the rendering (`None`: none, AgentBench's eval setting).
    pub system: Option<String>,
    /// The prompt format the model was given (`llama2` or `gguf`); `None` when no model
    /// rendered anything (scripted replies with `--chat-template gguf`).
    pub chat_template: Option<String>,
    /// `eval`: how many seeds the run's command ran (ids of exports get `_sK` when above 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<u64>,
}

/// A run's `end` record, beside its tags and any command-specific fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    /// `None` when the run stopped on an error (see `error`).
    pub status: Option<Status>,
    pub answer: Option<String>,
    /// The judge's verdict (`eval`); absent where nothing judged the run (`agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
    /// Why the run stopped early (a tool or model failure); the run is then incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub prefilled_tokens: usize,
    #[serde(default)]
    pub generated_tokens: usize,
    /// The prompt string of the last model call, rendered in the run's format from the
    /// (trimmed) history the loop sent; `None` when there was no call or no format.
    #[serde(default)]
    pub final_prompt: Option<String>,
}

impl Transcript {
    /// Creates the transcript at `path`, written a line at a time as the run goes (so a run cut
    /// short keeps what it did); never over one of the run's `inputs`.
    pub fn create(path: &Path, inputs: &[&Path]) -> anyhow::Result<Transcript> {
        let dest = edgeact_runtime::files::partial::output_target(path, inputs)?;
        let f = File::create(&dest).with_context(|| format!("creating {}", path.display()))?;
        Ok(Transcript { out: BufWriter::new(f) })
    }

    /// Writes any serializable record as one line.
    pub fn write<T: Serialize>(&mut self, record: &T) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }

    /// Writes `record` as an `event` record tagged with the task and seed it belongs to,
    /// with `extra`'s fields (an object, or null for none) added.
    fn tagged<T: Serialize>(
        &mut self,
        event: &str,
        task: Option<usize>,
        seed: Option<u64>,
        record: &T,
        extra: serde_json::Value,
    ) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct Tagged<'a, T> {
            event: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            task: Option<usize>,
            #[serde(skip_serializing_if = "Option::is_none")]
            seed: Option<u64>,
            #[serde(flatten)]
            record: &'a T,
            #[serde(flatten)]
            extra: serde_json::Map<String, serde_json::Value>,
        }
        let extra = match extra {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => serde_json::Map::new(),
            other => anyhow::bail!("transcript: extra fields must be an object, not {other}"),
        };
        self.write(&Tagged {
            event,
            task,
            seed,
            record,
            extra,
        })
    }

    /// Writes a run's `start` record; `extra` (an object or null) adds command-specific fields.
    pub fn start(
        &mut self,
        task: Option<usize>,
        seed: Option<u64>,
        start: &RunStart,
        extra: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.tagged("start", task, seed, start, extra)
    }

    /// Writes a run's `end` record; `extra` (an object or null) adds command-specific fields.
    pub fn end(
        &mut self,
        task: Option<usize>,
        seed: Option<u64>,
        end: &RunEnd,
        extra: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.tagged("end", task, seed, end, extra)
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

/// A [`LanguageModel`] in front of another that keeps the history of the latest call, so the
/// `end` record can hold the exact prompt of the last turn.
pub struct RecordingModel<'a> {
    inner: &'a mut dyn LanguageModel,
    last_request: Option<Vec<Message>>,
}

impl<'a> RecordingModel<'a> {
    pub fn new(inner: &'a mut dyn LanguageModel) -> RecordingModel<'a> {
        RecordingModel {
            inner,
            last_request: None,
        }
    }

    /// The (trimmed) history the loop sent on the latest call.
    pub fn last_request(&self) -> Option<&[Message]> {
        self.last_request.as_deref()
    }

    /// The latest call's prompt rendered in `format` with `template`'s system prompt, as the
    /// engine renders it (`None` without a call or when the template fails to render).
    pub fn last_prompt(&self, format: &PromptFormat, template: &ChatTemplate) -> Option<String> {
        format.render(self.last_request()?, template).ok()
    }
}

impl LanguageModel for RecordingModel<'_> {
    fn reply(&mut self, request: &ModelRequest<'_>) -> anyhow::Result<ModelReply> {
        self.last_request = Some(request.messages.to_vec());
        self.inner.reply(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::react::{run_db, LoopLimits, ScriptedModel, Tool};
    use crate::render::{db_initial_history, render_llama2, trim_history};

    struct Echo;
    impl Tool for Echo {
        fn execute(&mut self, input: &str) -> anyhow::Result<String> {
            Ok(format!("[('{input}',)]"))
        }
    }

    #[test]
    fn recorder_keeps_the_last_history_sent() {
        let mut inner = ScriptedModel::new([
            "Action: Operation\n```sql\nSELECT 1\n```",
            "Action: Answer\nFinal Answer: [\"1\"]",
        ]);
        let mut model = RecordingModel::new(&mut inner);
        let run = run_db(&mut model, &mut Echo, "Q?", "T.", LoopLimits::default(), &mut |_| {}).unwrap();
        let sent = model.last_request().unwrap().to_vec();
        assert_eq!(sent, trim_history(&run.history[..run.history.len() - 1]));
        assert_eq!(
            model.last_prompt(&PromptFormat::Llama2, &ChatTemplate::Eval).unwrap(),
            render_llama2(&sent, &ChatTemplate::Eval)
        );
        assert_eq!(sent[..3], db_initial_history("Q?", "T.")[..]);
    }

    #[test]
    fn start_and_end_records_carry_tags_and_extra_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut t = Transcript::create(&path, &[]).unwrap();
        let start = RunStart {
            protocol: Protocol::Db,
            history: db_initial_history("Q?", "T."),
            system: None,
            chat_template: Some("llama2".into()),
            seeds: Some(2),
        };
        t.start(Some(3), Some(1), &start, serde_json::json!({"description": "Q?"}))
            .unwrap();
        let end = RunEnd {
            status: Some(Status::Completed),
            answer: Some("1".into()),
            correct: Some(true),
            ..Default::default()
        };
        t.end(None, None, &end, serde_json::Value::Null).unwrap();
        assert!(t.end(None, None, &end, serde_json::json!([1])).is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "start");
        assert_eq!(lines[0]["task"], 3);
        assert_eq!(lines[0]["seed"], 1);
        assert_eq!(lines[0]["description"], "Q?");
        let back: RunStart = serde_json::from_value(lines[0].clone()).unwrap();
        assert_eq!(back, start);
        assert_eq!(lines[1]["event"], "end");
        assert!(lines[1].get("task").is_none());
        let back: RunEnd = serde_json::from_value(lines[1].clone()).unwrap();
        assert_eq!(back, end);
    }
}
