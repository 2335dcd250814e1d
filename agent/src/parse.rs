//! The action parsers of AgentBench's OS and DB tasks, reproducing the Python regular
//! expressions' results exactly (including their corner cases) without a regex engine.
//!
//! OS (`extract_action`): `Think:\s*(.+)` and `Act:\s*(.+)` line matches; the Act lines are
//! scanned from the last: `bash…` runs every ```` ```bash\n(.*?)\n``` ```` block (DOTALL) joined
//! by a blank line, `finish…` commits without an answer, `answer…` commits the text between
//! the first `(` and the last `)` (skipping the line if either is missing).
//!
//! DB: `Action: (.*?)\n` (first match; the capture must be exactly `Operation`), the first
//! ```` ```sql\n([\s\S]*?)\n``` ```` block (stripped, newlines to spaces), and
//! `\nFinal Answer:(.*)`.

use edgeact_runtime::py;
use serde::{Deserialize, Serialize};

/// A parsed OS action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "content", rename_all = "lowercase")]
pub enum OsAction {
    /// Bash code to type into the shell (possibly empty when no block was found).
    Bash(String),
    /// `finish` (no answer) or `answer(...)`.
    Commit(Option<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsParse {
    /// All `Think:` lines joined by `\n`.
    pub thought: String,
    /// `None`: no valid action (the task ends as an invalid action).
    pub action: Option<OsAction>,
}

/// Python `re.findall(r"<label>\s*(.+)", text)`: the captured group of every match.
fn findall_label_line(text: &str, label: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(rel) = text[from..].find(label) {
        let p = from + rel + label.len();
        // `\s*` is greedy: it eats all whitespace (newlines too); `.+` then needs one
        // non-newline character. If the whitespace runs to the end, the regex backtracks to the
        // last whitespace character that is not a newline and lets `.+` start there.
        let rest = &text[p..];
        let ws_end = rest.find(|c: char| !py::is_space(c)).map(|i| p + i);
        let start = match ws_end {
            Some(e) => Some(e),
            None => text[p..]
                .char_indices()
                .rev()
                .find(|&(_, c)| c != '\n')
                .map(|(i, _)| p + i),
        };
        match start {
            Some(s) => {
                let end = text[s..].find('\n').map_or(text.len(), |i| s + i);
                out.push(text[s..end].to_string());
                from = end;
            }
            None => {
                // No match starting at this occurrence; the next one lies after it.
                from = p;
            }
        }
        if from >= text.len() {
            break;
        }
    }
    out
}

/// Python `re.findall(r"```bash\n(.*?)\n```", text, re.DOTALL)`.
fn findall_bash_blocks(text: &str) -> Vec<&str> {
    let open = "```bash\n";
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(rel) = text[from..].find(open) {
        let body = from + rel + open.len();
        match text[body..].find("\n```") {
            Some(i) => {
                out.push(&text[body..body + i]);
                from = body + i + 4;
            }
            None => break,
        }
    }
    out
}

/// AgentBench's OS `extract_action`.
pub fn parse_os(raw: &str) -> OsParse {
    let thought = findall_label_line(raw, "Think:").join("\n");
    let mut action = None;
    for act in findall_label_line(raw, "Act:").iter().rev() {
        let lower = act.to_lowercase();
        if lower.starts_with("bash") {
            action = Some(OsAction::Bash(findall_bash_blocks(raw).join("\n\n")));
            break;
        }
        if lower.starts_with("finish") {
            action = Some(OsAction::Commit(None));
            break;
        }
        if lower.starts_with("answer") {
            // `action[6:].strip()`, by code points.
            let after: String = act.chars().skip(6).collect();
            let content = py::strip(&after);
            let (Some(l), Some(r)) = (content.find('('), content.rfind(')')) else {
                continue;
            };
            // Python slicing yields "" when the `)` comes before the `(`.
            let ans = if r > l { &content[l + 1..r] } else { "" };
            action = Some(OsAction::Commit(Some(ans.to_string())));
            break;
        }
    }
    OsParse { thought, action }
}

/// A parsed DB reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "content", rename_all = "snake_case")]
pub enum DbAction {
    /// `Action: Operation` with its first SQL block (stripped, newlines replaced by spaces).
    Operation(String),
    /// `Action: Operation` without a SQL block: the task ends with an empty answer.
    OperationWithoutSql,
    /// Not an operation, and `\nFinal Answer:` found: the rest of that line.
    Answer(String),
    /// Not an operation and no final answer: the task ends with an empty answer.
    NoAnswer,
}

/// `re.search(r"Action: (.*?)\n", res).group(1)`.
pub fn db_action_label(raw: &str) -> Option<&str> {
    // Only the first "Action: " can match: `.*?` cannot cross a newline, and if no newline
    // follows the first occurrence none follows a later one either.
    let p = raw.find("Action: ")? + "Action: ".len();
    let nl = raw[p..].find('\n')?;
    Some(&raw[p..p + nl])
}

/// `re.search(r"```sql\n([\s\S]*?)\n```", res).group(1).strip().replace("\n", " ")`.
pub fn db_sql_block(raw: &str) -> Option<String> {
    let open = "```sql\n";
    let body = raw.find(open)? + open.len();
    let end = raw[body..].find("\n```")?;
    Some(py::strip(&raw[body..body + end]).replace('\n', " "))
}

/// `re.search(r"\nFinal Answer:(.*)", res).group(1)`.
pub fn db_final_answer(raw: &str) -> Option<&str> {
    let key = "\nFinal Answer:";
    let p = raw.find(key)? + key.len();
    let end = raw[p..].find('\n').map_or(raw.len(), |i| p + i);
    Some(&raw[p..end])
}

/// One DB reply as the dbbench loop reads it.
pub fn parse_db(raw: &str) -> DbAction {
    if db_action_label(raw) == Some("Operation") {
        return match db_sql_block(raw) {
            Some(sql) => DbAction::Operation(sql),
            None => DbAction::OperationWithoutSql,
        };
    }
    match db_final_answer(raw) {
        Some(a) => DbAction::Answer(a.to_string()),
        None => DbAction::NoAnswer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_basic() {
        let p = parse_os("Think: list\n\nAct: bash\n\n```bash\nls /etc\n```");
        assert_eq!(p.thought, "list");
        assert_eq!(p.action, Some(OsAction::Bash("ls /etc".into())));
        let p = parse_os("Think: done.\n\nAct: answer(220)");
        assert_eq!(p.action, Some(OsAction::Commit(Some("220".into()))));
        assert_eq!(parse_os("Act: finish").action, Some(OsAction::Commit(None)));
        assert_eq!(parse_os("Act: answer").action, None);
        assert_eq!(parse_os("nothing").action, None);
    }

    #[test]
    fn db_basic() {
        assert_eq!(
            parse_db("x\nAction: Operation\n```sql\nSELECT 1\nFROM t;\n```"),
            DbAction::Operation("SELECT 1 FROM t;".into())
        );
        assert_eq!(parse_db("Action: Operation\nSELECT 1"), DbAction::OperationWithoutSql);
        assert_eq!(
            parse_db("Action: Answer\nFinal Answer: [\"a\"]"),
            DbAction::Answer(" [\"a\"]".into())
        );
        assert_eq!(parse_db("Action: Operation"), DbAction::NoAnswer);
    }
}
