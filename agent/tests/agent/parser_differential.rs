//! The OS and DB action parsers against Python's `re`, on generated replies.
//!
//! [`parse_os`] and [`parse_db`] reproduce AgentBench's regular expressions without a regex
//! engine (`agent/src/parse.rs` names them). This test writes those expressions out in Python
//! (`Think:\s*(.+)` and `Act:\s*(.+)` with the Act lines read from the last, the
//! ```` ```bash\n(.*?)\n``` ```` blocks under DOTALL, `action[6:].strip()` and the parentheses
//! of `answer(...)`; `Action: (.*?)\n`, the first ```` ```sql\n([\s\S]*?)\n``` ```` block
//! stripped with newlines made spaces, `\nFinal Answer:(.*)`), feeds both sides a few thousand
//! replies assembled from the protocol's fragments, odd whitespace (Python's `\s`, `.` and
//! `strip()` are Unicode-aware) and case, and compares what each extracts. Seeded
//! (`EDGEACT_PARSE_DIFF_SEED`, default 7; `EDGEACT_PARSE_DIFF_REPLIES`, default 4000);
//! skipped (with a message) where `python3` is not installed.

use super::python_oracle;
use edgeact_agent::{parse_db, parse_os, DbAction, OsAction};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Python's half: one JSON string per line in, `[thought, os kind, os content, db kind, db
/// content]` per line out.
const PYTHON: &str = r#"
import json, re, sys
sys.stdin.reconfigure(encoding="utf-8", errors="surrogatepass")
sys.stdout.reconfigure(encoding="utf-8")

def os_reply(raw):
    kind = content = None
    for act in reversed(re.findall(r"Act:\s*(.+)", raw)):
        low = act.lower()
        if low.startswith("bash"):
            kind, content = "bash", "\n\n".join(re.findall(r"```bash\n(.*?)\n```", raw, re.DOTALL))
            break
        if low.startswith("finish"):
            kind = "commit"
            break
        if low.startswith("answer"):
            rest = act[6:].strip()
            left, right = rest.find("("), rest.rfind(")")
            if left == -1 or right == -1:
                continue
            kind, content = "commit", rest[left + 1:right]
            break
    return ["\n".join(re.findall(r"Think:\s*(.+)", raw)), kind, content]

def db_reply(raw):
    label = re.search(r"Action: (.*?)\n", raw)
    if label and label.group(1) == "Operation":
        sql = re.search(r"```sql\n([\s\S]*?)\n```", raw)
        if sql:
            return ["operation", sql.group(1).strip().replace("\n", " ")]
        return ["operation_without_sql", None]
    answer = re.search(r"\nFinal Answer:(.*)", raw)
    return ["answer", answer.group(1)] if answer else ["no_answer", None]

for line in sys.stdin:
    raw = json.loads(line)
    print(json.dumps(os_reply(raw) + db_reply(raw), ensure_ascii=False), flush=True)
"#;

/// What this crate's parsers extract, in the Python side's shape.
fn ours(raw: &str) -> Value {
    let os = parse_os(raw);
    let (kind, content) = match &os.action {
        Some(OsAction::Bash(code)) => (json!("bash"), json!(code)),
        Some(OsAction::Commit(answer)) => (json!("commit"), json!(answer)),
        None => (Value::Null, Value::Null),
    };
    let (db_kind, db_content) = match parse_db(raw) {
        DbAction::Operation(sql) => ("operation", json!(sql)),
        DbAction::OperationWithoutSql => ("operation_without_sql", Value::Null),
        DbAction::Answer(a) => ("answer", json!(a)),
        DbAction::NoAnswer => ("no_answer", Value::Null),
    };
    json!([os.thought, kind, content, db_kind, db_content])
}

/// A reply: fragments of both protocols in random order, with whitespace that ASCII-only
/// matching would get wrong.
fn reply(rng: &mut StdRng) -> String {
    const FRAGMENTS: &[&str] = &[
        "Think:",
        "Think: ",
        "Act:",
        "Act: ",
        "bash",
        "BASH",
        "Bash!",
        "finish",
        "FINISH",
        "answer",
        "Answer",
        "answer(",
        "answer(220)",
        "(",
        ")",
        ")(",
        "```bash\n",
        "```bash",
        "\n```",
        "```",
        "ls /etc",
        "echo 'a(b)'",
        "Action: ",
        "Action:",
        "Action: Operation\n",
        "Operation",
        "Answer",
        "```sql\n",
        "```sql",
        "SELECT 1\nFROM t;",
        "\nFinal Answer:",
        "Final Answer: ",
        "[\"x\", 2]",
        "I think",
        "İ",
        "ſ",
        "é",
        "😀",
        "K",
        "Act: bash\n\n```bash\n",
        "\nAct: finish",
        "Act: answer(",
        "Act:\n answer (x)",
        "Act: \u{a0}bash",
        "Think: x\n\nAct: ",
        "Action: Operation\n```sql\n",
        "Action: Answer\nFinal Answer: ",
        "\n```\n",
    ];
    const SPACE: &[&str] = &[
        " ", "  ", "\n", "\n\n", "\t", "\r", "\r\n", "\x0b", "\x0c", "\u{1c}", "\u{1f}", "\u{85}", "\u{a0}",
        "\u{2028}", "\u{2029}", "\u{3000}", "\u{200b}", "\u{feff}",
    ];
    let n = rng.random_range(1..14);
    let mut out = String::new();
    for _ in 0..n {
        if rng.random_bool(0.4) {
            out.push_str(SPACE[rng.random_range(0..SPACE.len())]);
        }
        out.push_str(FRAGMENTS[rng.random_range(0..FRAGMENTS.len())]);
    }
    if rng.random_bool(0.3) {
        out.push_str(SPACE[rng.random_range(0..SPACE.len())]);
    }
    out
}

#[test]
fn parsers_agree_with_python_re_on_generated_replies() {
    let mut rng = StdRng::seed_from_u64(python_oracle::env_or("EDGEACT_PARSE_DIFF_SEED", 7));
    let replies: Vec<String> = (0..python_oracle::env_or("EDGEACT_PARSE_DIFF_REPLIES", 4000))
        .map(|_| reply(&mut rng))
        .collect();
    let Some(answers) = python_oracle::answers(PYTHON, &replies) else {
        return;
    };
    let expected: Vec<Value> = answers.iter().map(|l| serde_json::from_str(l).unwrap()).collect();

    let mismatches: Vec<String> = replies
        .iter()
        .zip(&expected)
        .filter(|(raw, want)| ours(raw) != **want)
        .map(|(raw, want)| format!("{raw:?}\n  python: {want}\n  edgeact: {}", ours(raw)))
        .collect();
    let count = |i: usize, kind: &str| expected.iter().filter(|v| v[i] == kind).count();
    eprintln!(
        "compared {} replies (OS: {} bash, {} commit; DB: {} operation, {} answer)",
        replies.len(),
        count(1, "bash"),
        count(1, "commit"),
        count(3, "operation"),
        count(3, "answer")
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        replies.len(),
        mismatches.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}
