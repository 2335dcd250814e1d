//! Trajectories as training data: `eval`/`agent` `--log` transcripts ([`crate::transcript`])
//! turned into rows of AgentInstruct's schema (THUDM/AgentInstruct, the data AgentLM was
//! fine-tuned on), `{"conversations": [{"from", "loss", "value"}, ...], "id"}`.
//!
//! The layout follows the published `os` and `db` splits: the instruction (for OS merged with
//! the one-shot question in the first human turn), the one-shot answers (OS) or the `Ok.`
//! acknowledgement (DB) as `gpt` turns with `loss: false`, the task as a human turn, then the
//! agent's replies (`loss: true`) alternating with the observations (`loss: null`, like every
//! human turn). Values are stripped as AgentBench strips each message before rendering, so a
//! conversation rendered with FastChat's `llama-2` template is exactly the prompt the model
//! was given. An observation after the last reply never reached the model and is left out.
//!
//! Everything here but [`read_transcript`] and [`write_rows`] is a pure function over parsed
//! records; the `edgeact export` command only parses flags and prints.

use crate::react::Protocol;
use crate::render::{db_initial_history, os_initial_history, Message, Role};
use crate::transcript::{RunEnd, RunStart};
use anyhow::Context;
use edgeact_runtime::files::AtomicOutput;
use edgeact_runtime::py;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Who speaks a turn, in FastChat's/ShareGPT's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    Human,
    Gpt,
}

/// One turn of a conversation. `loss`: `null` for human turns, `false` for the protocol's own
/// `gpt` turns (one-shot answers, `Ok.`), `true` for the agent's replies (trained on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub from: Speaker,
    pub loss: Option<bool>,
    pub value: String,
}

/// One AgentInstruct row (fields in the dataset's order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub conversations: Vec<Turn>,
    pub id: String,
}

/// A record's place: the transcript's name and the 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A line that is not a transcript record, or records out of order.
    #[error("{at}: {what}")]
    Malformed { at: Location, what: String },
    /// Two exported runs would get the same id.
    #[error(
        "two runs would both be exported as {id:?} ({first} and {second}): the same task and seed \
         appear in two transcripts; export them to separate files"
    )]
    DuplicateId {
        id: String,
        first: Location,
        second: Location,
    },
}

fn malformed(at: &Location, what: impl Into<String>) -> ExportError {
    ExportError::Malformed {
        at: at.clone(),
        what: what.into(),
    }
}

/// One run read back from a transcript.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Where its `start` record is.
    pub at: Location,
    /// `eval`'s tags: the task's index in its task file and the seed (`None` for `agent`).
    pub task: Option<u64>,
    pub seed: Option<u64>,
    pub start: RunStart,
    /// The agent's replies and the observations, in order (agent, user, agent, ...).
    pub turns: Vec<Message>,
    /// `None` when the transcript ends before the run's `end` record (a crash).
    pub end: Option<RunEnd>,
}

impl RunRecord {
    fn last_role(&self) -> Role {
        self.turns
            .last()
            .or(self.start.history.last())
            .map_or(Role::Agent, |m| m.role)
    }

    fn describe(&self) -> String {
        let family = protocol_name(self.start.protocol);
        match (self.task, self.seed) {
            (Some(t), Some(s)) => format!("{family} task {t} seed {s}"),
            (Some(t), None) => format!("{family} task {t}"),
            _ => format!("{family} run"),
        }
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Os => "os",
        Protocol::Db => "db",
    }
}

/// A `start` record as read back: today's fields, and the ones `agent` wrote before starts
/// carried the history (`task`: the OS task's text; `question` and `add_description`).
#[derive(Deserialize)]
struct StartFields {
    protocol: Protocol,
    #[serde(default)]
    history: Option<Vec<Message>>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    chat_template: Option<String>,
    #[serde(default)]
    seeds: Option<u64>,
    #[serde(default)]
    task: Option<Value>,
    #[serde(default)]
    question: Option<String>,
    #[serde(default)]
    add_description: Option<String>,
}

fn parse_start(record: Value, at: &Location) -> Result<RunStart, ExportError> {
    let f: StartFields = serde_json::from_value(record)
        .map_err(|e| malformed(at, format!("a start record that does not parse: {e}")))?;
    let history = match (f.history, f.protocol) {
        (Some(h), _) => h,
        (None, Protocol::Os) => match f.task.as_ref().and_then(Value::as_str) {
            Some(text) => os_initial_history(text),
            None => {
                return Err(malformed(
                    at,
                    "a start record with neither `history` nor the task's text",
                ))
            }
        },
        (None, Protocol::Db) => match f.question {
            Some(q) => db_initial_history(&q, f.add_description.as_deref().unwrap_or_default()),
            None => return Err(malformed(at, "a start record with neither `history` nor `question`")),
        },
    };
    if history.last().is_none_or(|m| m.role != Role::User) {
        return Err(malformed(
            at,
            "the start record's history does not end with a user turn",
        ));
    }
    Ok(RunStart {
        protocol: f.protocol,
        history,
        system: f.system,
        chat_template: f.chat_template,
        seeds: f.seeds,
    })
}

/// The `task`/`seed` tag of a record: a number, or absent. `agent`'s `start` records use
/// `task` for the task's text, which is no tag.
fn tag(
    record: &serde_json::Map<String, Value>,
    name: &str,
    event: &str,
    at: &Location,
) -> Result<Option<u64>, ExportError> {
    match record.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(_)) if event == "start" && name == "task" => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| malformed(at, format!("`{name}` is {v}, not a task index"))),
    }
}

/// Reads the runs of one transcript (`file` names it in errors). Records of kinds other than
/// `start`, `reply`, `observation` and `end` are ignored, so later additions stay readable.
pub fn parse_transcript(file: &str, text: &str) -> Result<Vec<RunRecord>, ExportError> {
    let mut runs: Vec<RunRecord> = Vec::new();
    // Runs started and not ended yet, by their tags.
    let mut open: HashMap<(Option<u64>, Option<u64>), usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let at = Location {
            file: file.to_string(),
            line: i + 1,
        };
        if line.trim().is_empty() {
            continue;
        }
        let record: Value =
            serde_json::from_str(line).map_err(|e| malformed(&at, format!("not a JSON record ({e})")))?;
        let Some(fields) = record.as_object() else {
            return Err(malformed(&at, "not a JSON object"));
        };
        let Some(event) = fields.get("event").and_then(Value::as_str) else {
            return Err(malformed(&at, "no `event` field"));
        };
        let event = event.to_string();
        let key = (tag(fields, "task", &event, &at)?, tag(fields, "seed", &event, &at)?);
        if event == "start" {
            let start = parse_start(record, &at)?;
            // A run of the same tags still open never ended: it stays without an end.
            open.insert(key, runs.len());
            runs.push(RunRecord {
                at,
                task: key.0,
                seed: key.1,
                start,
                turns: Vec::new(),
                end: None,
            });
            continue;
        }
        if !matches!(event.as_str(), "reply" | "observation" | "end") {
            continue;
        }
        let Some(&index) = open.get(&key) else {
            let whose = match key {
                (Some(t), Some(s)) => format!(" of task {t} seed {s}"),
                _ => String::new(),
            };
            return Err(malformed(
                &at,
                format!(
                    "a `{event}` record{whose} without a `start` record before it (transcripts \
                     written before edgeact recorded run starts cannot be exported)"
                ),
            ));
        };
        let run = &mut runs[index];
        match event.as_str() {
            "reply" => {
                let Some(text) = record.pointer("/reply/text").and_then(Value::as_str) else {
                    return Err(malformed(&at, "a reply record without `reply.text`"));
                };
                if run.last_role() != Role::User {
                    return Err(malformed(
                        &at,
                        "a reply that follows another reply without an observation",
                    ));
                }
                run.turns.push(Message::agent(text));
            }
            "observation" => {
                let Some(message) = record.get("message").and_then(Value::as_str) else {
                    return Err(malformed(&at, "an observation record without `message`"));
                };
                if run.last_role() != Role::Agent {
                    return Err(malformed(&at, "an observation without a reply before it"));
                }
                run.turns.push(Message::user(message));
            }
            _ => {
                let end: RunEnd = serde_json::from_value(record)
                    .map_err(|e| malformed(&at, format!("an end record that does not parse: {e}")))?;
                run.end = Some(end);
                open.remove(&key);
            }
        }
    }
    Ok(runs)
}

/// The largest transcript read (an evaluation's `--log` of thousands of episodes is tens of MB).
pub const MAX_TRANSCRIPT_BYTES: u64 = 1 << 30;

/// Reads and parses a transcript file.
pub fn read_transcript(path: &Path) -> anyhow::Result<Vec<RunRecord>> {
    let text = edgeact_runtime::files::read_regular_text(path, MAX_TRANSCRIPT_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_transcript(&path.display().to_string(), &text)?)
}

fn turn(from: Speaker, loss: Option<bool>, content: &str) -> Turn {
    Turn {
        from,
        loss,
        value: py::strip(content).to_string(),
    }
}

/// A run's conversation in AgentInstruct's layout (see the module documentation).
pub fn conversation(run: &RunRecord) -> Vec<Turn> {
    let mut out = Vec::with_capacity(run.start.history.len() + run.turns.len());
    for m in &run.start.history {
        out.push(match m.role {
            Role::User => turn(Speaker::Human, None, &m.content),
            Role::Agent => turn(Speaker::Gpt, Some(false), &m.content),
        });
    }
    for m in &run.turns {
        out.push(match m.role {
            Role::User => turn(Speaker::Human, None, &m.content),
            Role::Agent => turn(Speaker::Gpt, Some(true), &m.content),
        });
    }
    // The tool's output after the last reply (round limit) never reached the model.
    if !run.turns.is_empty() && out.last().is_some_and(|t| t.from == Speaker::Human) {
        out.pop();
    }
    out
}

/// The history before a conversation's last reply (what the model was given on its last turn,
/// before AgentBench's trimming), as loop messages.
pub fn history_before_last_reply(conversations: &[Turn]) -> Vec<Message> {
    let end = conversations
        .iter()
        .rposition(|t| t.from == Speaker::Gpt && t.loss == Some(true))
        .unwrap_or(conversations.len());
    conversations[..end]
        .iter()
        .map(|t| match t.from {
            Speaker::Human => Message::user(t.value.clone()),
            Speaker::Gpt => Message::agent(t.value.clone()),
        })
        .collect()
}

/// Which runs become rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportOptions {
    /// Only runs the judge accepted (AgentTuning's reward filter).
    pub only_correct: bool,
    /// Only this task family.
    pub protocol: Option<Protocol>,
}

/// The rows of an export and what was left out.
#[derive(Debug, Default)]
pub struct Export {
    pub rows: Vec<Row>,
    /// One line per run left out because it is incomplete (no `end`, or ended on an error).
    pub notes: Vec<String>,
    /// Rows per family (`os`, `db`).
    pub rows_by_family: BTreeMap<&'static str, usize>,
    pub incomplete: usize,
    /// Runs the judge rejected, or no judge saw (`agent`), under `only_correct`.
    pub not_correct: usize,
    /// Runs of the other family under `protocol`.
    pub other_family: usize,
}

/// Where a row goes in the output: the transcript's position, the family, the task's number
/// and the seed.
type RowOrder = (usize, &'static str, u64, u64);

/// Turns the runs of several transcripts (in the order given) into rows.
///
/// Ids: `os_N`/`db_N` with `N` the task's index in its task file, plus `_sK` for seed `K`
/// when the run's command ran several seeds; `agent` runs (no index) are numbered in the order
/// they come, per family. Ids do not depend on the filters. Two rows with one id are an error.
pub fn export(transcripts: &[Vec<RunRecord>], options: ExportOptions) -> Result<Export, ExportError> {
    let mut out = Export::default();
    let mut untagged: HashMap<&'static str, u64> = HashMap::new();
    let mut keyed: Vec<(RowOrder, Row)> = Vec::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    for (file_index, runs) in transcripts.iter().enumerate() {
        for run in runs {
            let family = protocol_name(run.start.protocol);
            let number = match run.task {
                Some(t) => t,
                None => {
                    let n = untagged.entry(family).or_default();
                    *n += 1;
                    *n - 1
                }
            };
            let mut id = format!("{family}_{number}");
            if run.start.seeds.unwrap_or(1) > 1 {
                id.push_str(&format!("_s{}", run.seed.unwrap_or(0)));
            }
            if options.protocol.is_some_and(|p| p != run.start.protocol) {
                out.other_family += 1;
                continue;
            }
            let end = match &run.end {
                None => {
                    out.incomplete += 1;
                    out.notes.push(format!(
                        "{}: {} has no end record (the run crashed or is still running); skipped",
                        run.at,
                        run.describe()
                    ));
                    continue;
                }
                Some(RunEnd { error: Some(e), .. }) => {
                    out.incomplete += 1;
                    out.notes.push(format!(
                        "{}: {} ended with an error ({e}); skipped",
                        run.at,
                        run.describe()
                    ));
                    continue;
                }
                Some(end) => end,
            };
            if options.only_correct && end.correct != Some(true) {
                out.not_correct += 1;
                continue;
            }
            let conversations = conversation(run);
            if !conversations.iter().any(|t| t.loss == Some(true)) {
                out.incomplete += 1;
                out.notes.push(format!(
                    "{}: {} has no reply of the agent; skipped",
                    run.at,
                    run.describe()
                ));
                continue;
            }
            if let Some(first) = seen.insert(id.clone(), run.at.clone()) {
                return Err(ExportError::DuplicateId {
                    id,
                    first,
                    second: run.at.clone(),
                });
            }
            *out.rows_by_family.entry(family).or_default() += 1;
            let key = (file_index, family, number, run.seed.unwrap_or(0));
            keyed.push((key, Row { conversations, id }));
        }
    }
    // `eval --jobs` interleaves runs; rows come in task order per file.
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    out.rows = keyed.into_iter().map(|(_, row)| row).collect();
    Ok(out)
}

/// Reads the transcripts at `inputs` and exports them.
pub fn export_files(inputs: &[PathBuf], options: ExportOptions) -> anyhow::Result<Export> {
    let transcripts = inputs
        .iter()
        .map(|p| read_transcript(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(export(&transcripts, options)?)
}

/// Writes `rows` as JSON Lines to `dest` atomically (a temporary file beside it, synced, then
/// renamed; removed on error or signal), refusing to write over any of `inputs`.
pub fn write_rows(dest: &Path, rows: &[Row], inputs: &[PathBuf]) -> anyhow::Result<()> {
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let tmp = AtomicOutput::create(dest, &inputs)?;
    let mut out = std::io::BufWriter::new(tmp.file());
    for row in rows {
        serde_json::to_writer(&mut out, row)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", tmp.dest().display()))?;
    drop(out);
    tmp.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::react::Status;
    use crate::render::{render_llama2, trim_history, ChatTemplate};
    use serde_json::json;

    fn lines(records: &[Value]) -> String {
        records.iter().map(|r| r.to_string() + "\n").collect()
    }

    fn db_start(task: u64, seed: u64, seeds: u64) -> Value {
        json!({"event": "start", "task": task, "seed": seed, "protocol": "db", "seeds": seeds,
            "history": db_initial_history("Q?", "The name of this table is t."),
            "system": null, "chat_template": "llama2"})
    }

    fn reply(task: u64, seed: u64, text: &str) -> Value {
        json!({"event": "reply", "task": task, "seed": seed, "round": 0,
            "reply": {"text": text, "stats": {}}, "action": {}})
    }

    fn observation(task: u64, seed: u64, message: &str) -> Value {
        json!({"event": "observation", "task": task, "seed": seed, "round": 0, "raw": message, "message": message})
    }

    fn end(task: u64, seed: u64, correct: bool) -> Value {
        json!({"event": "end", "task": task, "seed": seed, "status": "completed", "answer": "1",
            "correct": correct, "final_prompt": null})
    }

    /// Two DB runs interleaved as `eval --jobs 2` writes them: task 1 right, task 0 wrong.
    fn two_db_runs(seeds: u64) -> String {
        lines(&[
            db_start(1, 0, seeds),
            db_start(0, 0, seeds),
            reply(1, 0, "Action: Operation\n```sql\nSELECT 1\n```\n"),
            reply(0, 0, "Action: Answer\nFinal Answer: [\"2\"]"),
            observation(1, 0, "[('1',)]"),
            end(0, 0, false),
            reply(1, 0, "  Action: Answer\nFinal Answer: [\"1\"]  "),
            end(1, 0, true),
        ])
    }

    #[test]
    fn db_layout_loss_flags_and_ids() {
        let runs = parse_transcript("t.jsonl", &two_db_runs(1)).unwrap();
        let ex = export(&[runs], ExportOptions::default()).unwrap();
        let ids: Vec<&str> = ex.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["db_0", "db_1"]);
        let c = &ex.rows[1].conversations;
        let shape: Vec<(Speaker, Option<bool>)> = c.iter().map(|t| (t.from, t.loss)).collect();
        use Speaker::{Gpt, Human};
        assert_eq!(
            shape,
            [
                (Human, None),
                (Gpt, Some(false)),
                (Human, None),
                (Gpt, Some(true)),
                (Human, None),
                (Gpt, Some(true))
            ]
        );
        assert!(c[0].value.starts_with("I will ask you a question"));
        assert_eq!(c[1].value, "Ok.");
        assert_eq!(c[2].value, "Q?\nThe name of this table is t.");
        assert_eq!(c[3].value, "Action: Operation\n```sql\nSELECT 1\n```");
        assert_eq!(c[4].value, "[('1',)]");
        // Stripped as AgentBench strips before rendering.
        assert_eq!(c[5].value, "Action: Answer\nFinal Answer: [\"1\"]");
        let row = serde_json::to_value(&ex.rows[1]).unwrap();
        assert_eq!(
            row["conversations"][0],
            json!({"from": "human", "loss": null, "value": c[0].value})
        );
        assert_eq!(ex.rows_by_family["db"], 2);
    }

    #[test]
    fn only_correct_and_family_filters() {
        let runs = parse_transcript("t.jsonl", &two_db_runs(1)).unwrap();
        let only = ExportOptions {
            only_correct: true,
            ..Default::default()
        };
        let ex = export(std::slice::from_ref(&runs), only).unwrap();
        assert_eq!(ex.rows.len(), 1);
        assert_eq!(ex.rows[0].id, "db_1");
        assert_eq!(ex.not_correct, 1);
        let os = ExportOptions {
            protocol: Some(Protocol::Os),
            ..Default::default()
        };
        let ex = export(&[runs], os).unwrap();
        assert!(ex.rows.is_empty());
        assert_eq!(ex.other_family, 2);
    }

    #[test]
    fn seeds_suffix_and_duplicates() {
        let runs = parse_transcript("a.jsonl", &two_db_runs(2)).unwrap();
        let ex = export(std::slice::from_ref(&runs), ExportOptions::default()).unwrap();
        let ids: Vec<&str> = ex.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["db_0_s0", "db_1_s0"]);
        let again = parse_transcript("b.jsonl", &two_db_runs(2)).unwrap();
        let err = export(&[runs, again], ExportOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"db_1_s0\"") && text.contains("a.jsonl:1") && text.contains("b.jsonl:1"),
            "{text}"
        );
    }

    #[test]
    fn crashed_and_failed_runs_are_skipped_with_a_note() {
        let mut text = two_db_runs(1);
        // Task 2 starts and never ends; task 3 ends on an error.
        text.push_str(&lines(&[
            db_start(2, 0, 1),
            reply(2, 0, "Action: Operation\n```sql\nSELECT 1\n```"),
            db_start(3, 0, 1),
            json!({"event": "end", "task": 3, "seed": 0, "status": null, "answer": null,
                "correct": false, "error": "the table could not be created"}),
        ]));
        let runs = parse_transcript("t.jsonl", &text).unwrap();
        let ex = export(&[runs], ExportOptions::default()).unwrap();
        assert_eq!(ex.rows.len(), 2);
        assert_eq!(ex.incomplete, 2);
        assert!(
            ex.notes[0].starts_with("t.jsonl:9: db task 2 seed 0 has no end record"),
            "{:?}",
            ex.notes
        );
        assert!(ex.notes[1].contains("the table could not be created"), "{:?}", ex.notes);
    }

    #[test]
    fn os_round_limit_drops_the_unseen_observation_and_round_trips() {
        let history = os_initial_history("count files");
        let records = [
            json!({"event": "start", "protocol": "os", "task": "count files", "history": history,
                "system": "You are a helpful, respectful and honest assistant.", "chat_template": "llama2"}),
            json!({"event": "reply", "round": 0, "reply": {"text": "Think: a\n\nAct: bash\n\n```bash\nls\n```"}}),
            json!({"event": "observation", "round": 0, "raw": "x", "message": "The output of the OS:\n\nx\r\n\u{1b}]0;root@h: /\u{7}root@h:/# "}),
            json!({"event": "reply", "round": 1, "reply": {"text": "Think: b\n\nAct: bash\n\n```bash\nls\n```"}}),
            json!({"event": "observation", "round": 1, "raw": "y", "message": "The output of the OS:\n\ny"}),
            json!({"event": "end", "status": "round_limit", "answer": null, "extra": null}),
        ];
        let runs = parse_transcript("agent.jsonl", &lines(&records)).unwrap();
        assert_eq!(runs[0].task, None);
        let ex = export(&[runs], ExportOptions::default()).unwrap();
        let c = &ex.rows[0].conversations;
        assert_eq!(ex.rows[0].id, "os_0");
        // Instruction + one-shot question, 3 one-shot answers and 2 outputs, the task, then
        // reply, observation, reply (the last output never reached the model).
        assert_eq!(c.len(), 10);
        assert!(c[0]
            .value
            .ends_with("Now, my problem is:\n\ntell me how many files are in the directory \"/etc\"?"));
        let one_shot: Vec<Option<bool>> = c[1..6].iter().map(|t| t.loss).collect();
        assert_eq!(one_shot, [Some(false), None, Some(false), None, Some(false)]);
        assert_eq!(
            c[8].value,
            "The output of the OS:\n\nx\r\n\u{1b}]0;root@h: /\u{7}root@h:/#"
        );
        assert_eq!(c[9].loss, Some(true));
        // The prompt of the last call is the export before its last reply, rendered.
        let system = ChatTemplate::System("You are a helpful, respectful and honest assistant.".into());
        let mut loop_history = os_initial_history("count files");
        loop_history.push(Message::agent("Think: a\n\nAct: bash\n\n```bash\nls\n```"));
        loop_history.push(Message::user(
            "The output of the OS:\n\nx\r\n\u{1b}]0;root@h: /\u{7}root@h:/# ",
        ));
        assert_eq!(
            render_llama2(&trim_history(&history_before_last_reply(c)), &system),
            render_llama2(&trim_history(&loop_history), &system)
        );
    }

    /// A long run: AgentBench trimmed the history of the last call (the prompt has the
    /// `[NOTICE]` line); the export keeps every turn, and trimming it again gives that prompt
    /// (given the first message unstripped, see below).
    #[test]
    fn trimmed_history_is_exported_whole_and_trims_to_the_prompt() {
        let big = "a, ".repeat(700);
        let mut records = vec![db_start(0, 0, 1)];
        let mut loop_history = db_initial_history("Q?", "The name of this table is t.");
        for k in 0..4 {
            let text = format!("Step {k}: {big}\nAction: Operation\n```sql\nSELECT {k}\n```");
            records.push(reply(0, 0, &text));
            loop_history.push(Message::agent(text));
            records.push(observation(0, 0, &format!("[('{k}',)]")));
            loop_history.push(Message::user(format!("[('{k}',)]")));
        }
        let last = format!("{big}\nAction: Answer\nFinal Answer: [\"3\"]");
        records.push(reply(0, 0, &last));
        records.push(end(0, 0, true));
        let runs = parse_transcript("long.jsonl", &lines(&records)).unwrap();
        let ex = export(&[runs], ExportOptions::default()).unwrap();
        let c = &ex.rows[0].conversations;
        assert_eq!(c.len(), 3 + 8 + 1);
        let prompt = render_llama2(&trim_history(&loop_history), &ChatTemplate::Eval);
        assert!(
            prompt.contains("[NOTICE]"),
            "the history was not long enough to be trimmed"
        );
        let mut before = history_before_last_reply(c);
        assert_eq!(before.len(), loop_history.len());
        assert_ne!(render_llama2(&before, &ChatTemplate::Eval), prompt);
        // The `[NOTICE]` line follows the first message as the loop held it: the DB
        // instruction's final newline, which the export strips, stays before it. With that
        // message as the start record has it, trimming the export gives the prompt exactly.
        let stripped = render_llama2(&trim_history(&before), &ChatTemplate::Eval);
        assert_eq!(stripped.replacen("\n\n[NOTICE]", "\n\n\n[NOTICE]", 1), prompt);
        before[0] = loop_history[0].clone();
        assert_eq!(render_llama2(&trim_history(&before), &ChatTemplate::Eval), prompt);
    }

    #[test]
    fn legacy_agent_db_start_is_rebuilt() {
        let records = [
            json!({"event": "start", "protocol": "db", "question": "Q?", "add_description": "T.",
                "model": "m.gguf", "chat_template": "llama2"}),
            json!({"event": "reply", "round": 0, "reply": {"text": "Action: Answer\nFinal Answer: [1]"}}),
            json!({"event": "end", "status": "completed", "answer": "[1]"}),
        ];
        let runs = parse_transcript("old.jsonl", &lines(&records)).unwrap();
        assert_eq!(runs[0].start.history, db_initial_history("Q?", "T."));
        assert_eq!(runs[0].end.as_ref().unwrap().status, Some(Status::Completed));
        // Not judged: left out under --only-correct.
        let only = ExportOptions {
            only_correct: true,
            ..Default::default()
        };
        let ex = export(&[runs], only).unwrap();
        assert!(ex.rows.is_empty());
        assert_eq!(ex.not_correct, 1);
    }

    #[test]
    fn malformed_input_names_file_and_line() {
        let err = |text: &str| parse_transcript("bad.jsonl", text).unwrap_err().to_string();
        let start = db_start(0, 0, 1).to_string();
        assert!(err(&format!("{start}\n{{not json\n")).starts_with("bad.jsonl:2: not a JSON record"));
        assert!(err("[1, 2]\n").starts_with("bad.jsonl:1: not a JSON object"));
        assert!(err("{\"task\": 1}\n").starts_with("bad.jsonl:1: no `event`"));
        let e = err(&lines(&[reply(0, 0, "x")]));
        assert!(
            e.starts_with("bad.jsonl:1: a `reply` record of task 0 seed 0 without a `start`"),
            "{e}"
        );
        let e = err(&format!(
            "{start}\n{}\n",
            json!({"event": "reply", "task": 0, "seed": 0})
        ));
        assert!(e.starts_with("bad.jsonl:2: a reply record without `reply.text`"), "{e}");
        let e = err(&lines(&[db_start(0, 0, 1), reply(0, 0, "a"), reply(0, 0, "b")]));
        assert!(e.starts_with("bad.jsonl:3: a reply that follows another reply"), "{e}");
        let e = err(&lines(&[db_start(0, 0, 1), observation(0, 0, "o")]));
        assert!(e.starts_with("bad.jsonl:2: an observation without a reply"), "{e}");
        let e = err(&format!("{}\n", json!({"event": "start", "protocol": "sql"})));
        assert!(e.starts_with("bad.jsonl:1: a start record that does not parse"), "{e}");
        let e = err(&format!("{}\n", json!({"event": "end", "task": "x"})));
        assert!(e.starts_with("bad.jsonl:1: `task` is \"x\""), "{e}");
        // Unknown record kinds and blank lines are skipped.
        let ok = format!("{start}\n\n{}\n", json!({"event": "progress", "task": 0, "seed": 0}));
        assert_eq!(parse_transcript("ok.jsonl", &ok).unwrap().len(), 1);
    }

    #[test]
    fn writer_is_atomic_and_never_overwrites_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("runs.jsonl");
        std::fs::write(&input, two_db_runs(1)).unwrap();
        let rows = export(&[read_transcript(&input).unwrap()], ExportOptions::default())
            .unwrap()
            .rows;
        let err = write_rows(&input, &rows, std::slice::from_ref(&input)).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        let link = dir.path().join("link.jsonl");
        std::fs::hard_link(&input, &link).unwrap();
        assert!(write_rows(&link, &rows, std::slice::from_ref(&input)).is_err());
        assert_eq!(std::fs::read_to_string(&input).unwrap(), two_db_runs(1));
        let out = dir.path().join("data.jsonl");
        std::fs::write(&out, "old").unwrap();
        write_rows(&out, &rows, &[input]).unwrap();
        let back: Vec<Row> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, rows);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    }
}
