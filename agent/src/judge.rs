//! The AgentBench judges: OS `match` (exact answer or regex search, optionally stripped) and
//! `check` scripts (run in the task's machine with the answer and earlier outputs as
//! arguments), and the dbbench answer comparison (Python-literal list, floats for single
//! values, sets otherwise) and table-hash comparison for INSERT/DELETE/UPDATE tasks.

use crate::tasks::{Evaluation, MatchSpec, Script};
use edgeact_runtime::py::{self, PyValue};
use edgeact_tools::os::{decode_utf8_strict, ShellSession};
use serde_json::Value;

/// `evaluation.match`. An answer of `None` (no valid action, round limit, `finish`) fails, as
/// it did in the harness (a `None == str` comparison, or a `TypeError` in `re.search`).
pub fn judge_os_match(answer: Option<&str>, spec: &MatchSpec) -> anyhow::Result<bool> {
    let Some(answer) = answer else {
        return Ok(false);
    };
    let answer = if spec.strip { py::strip(answer) } else { answer };
    if let Some(expected) = &spec.answer {
        return Ok(answer == expected);
    }
    if let Some(pattern) = &spec.regex {
        // fancy-regex (backtracking, with look-around and backreferences) follows Python's
        // `re` search semantics closely; a pattern it cannot compile is a clear error.
        let re = fancy_regex::Regex::new(pattern).map_err(|e| anyhow::anyhow!("match regex {pattern:?}: {e}"))?;
        return re
            .is_match(answer)
            .map_err(|e| anyhow::anyhow!("match regex {pattern:?}: {e}"));
    }
    Ok(false)
}

/// `evaluation.check`: each script runs as a separate process on the task's machine; the first
/// gets `str(answer)` (`None` when there is none), each later one also the outputs of the
/// earlier ones. All must exit 0. A missing example script, or a script that exits 0 with
/// output that is not UTF-8, fails the task: the harness crashed on it (no script; the strict
/// `output.decode("utf-8")`) and counted the task as failed.
pub fn judge_os_check(
    answer: Option<&str>,
    scripts: &[Option<Script>],
    example: Option<&Script>,
    machine: &mut dyn ShellSession,
) -> anyhow::Result<bool> {
    let mut params = vec![answer.unwrap_or("None").to_string()];
    for s in scripts {
        let Some(script) = s.as_ref().or(example) else {
            return Ok(false);
        };
        let args: Vec<&str> = params.iter().map(String::as_str).collect();
        let out = machine.run_script(script, &args)?;
        if !out.success() {
            return Ok(false);
        }
        let cut = out.output.len() >= machine.limits().output_cap;
        let Some(text) = decode_utf8_strict(&out.output, cut) else {
            return Ok(false);
        };
        params.push(text.to_string());
    }
    Ok(true)
}

/// Judges an OS task's answer with its evaluation (the one OS judge: `eval os`, `agent os` and
/// `sandbox --task` all come here).
pub fn judge_os(answer: Option<&str>, eval: &Evaluation, machine: &mut dyn ShellSession) -> anyhow::Result<bool> {
    match eval {
        Evaluation::Match(m) => judge_os_match(answer, m),
        Evaluation::Check { scripts, example } => judge_os_check(answer, scripts, example.as_ref(), machine),
    }
}

/// A JSON label value as the Python value `json.loads` gives.
pub fn json_to_py(v: &Value) -> PyValue {
    match v {
        Value::Null => PyValue::None,
        Value::Bool(b) => PyValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => PyValue::Int(i as i128),
            None => PyValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => PyValue::Str(s.clone()),
        Value::Array(a) => PyValue::List(a.iter().map(json_to_py).collect()),
        Value::Object(o) => PyValue::Dict(
            o.iter()
                .map(|(k, v)| (PyValue::Str(k.clone()), json_to_py(v)))
                .collect(),
        ),
    }
}

/// dbbench's answer check for non-mutating tasks: `ans = list(eval(answer))` (or `[answer]`
/// when that raises); one value each → compared as floats when both convert, else with `==`;
/// otherwise compared as sets (unhashable values → wrong). `eval` is [`py::eval`], a safe
/// evaluator of the Python expressions answers are written in (comments, sets, dicts,
/// arithmetic, bytes, raw strings, hex…); where it fails (a Python exception, or one of its
/// limits such as `2**10**10`), the raw text is compared, as the harness did on an exception.
pub fn judge_db_answer(answer: &str, label: &[Value]) -> bool {
    let cor: Vec<PyValue> = label.iter().map(json_to_py).collect();
    let ans: Vec<PyValue> = py::eval(answer)
        .ok()
        .and_then(|v| v.to_list())
        .unwrap_or_else(|| vec![PyValue::Str(answer.to_string())]);
    if ans.len() == 1 && cor.len() == 1 {
        return match (ans[0].to_float(), cor[0].to_float()) {
            (Some(a), Some(b)) => a == b,
            _ => ans[0] == cor[0],
        };
    }
    match (py::distinct_items(ans), py::distinct_items(cor)) {
        (Ok(a), Ok(c)) => PyValue::Set(a) == PyValue::Set(c),
        // `set()` of an unhashable item raised; the harness counted the answer wrong.
        _ => false,
    }
}

/// dbbench's check for INSERT/DELETE/UPDATE: the `str()` of the hash query's result
/// (`[('…',)]`) must equal `answer_md5`.
pub fn judge_db_hash(hash_answer: &str, answer_md5: &str) -> bool {
    hash_answer == answer_md5
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn os_match() {
        let m = MatchSpec {
            answer: Some("Awesome-AgentBench".into()),
            regex: None,
            strip: true,
        };
        assert!(judge_os_match(Some(" Awesome-AgentBench\n"), &m).unwrap());
        assert!(!judge_os_match(Some("awesome-agentbench"), &m).unwrap());
        assert!(!judge_os_match(None, &m).unwrap());
        let r = MatchSpec {
            answer: None,
            regex: Some(r"^\d+ files$".into()),
            strip: false,
        };
        assert!(judge_os_match(Some("12 files"), &r).unwrap());
        assert!(!judge_os_match(Some(" 12 files"), &r).unwrap());
    }

    /// A machine that records the scripts it runs and exits with `code`, printing `out<n>` for
    /// its n-th script or, where set, the bytes of the third field.
    struct Fake(Vec<(Script, Vec<String>)>, i32, Option<Vec<u8>>);
    impl ShellSession for Fake {
        fn run(&mut self, _: &str) -> edgeact_tools::os::Result<edgeact_tools::os::CommandOutput> {
            unreachable!("the judge never types into the agent's shell")
        }
        fn run_script(
            &mut self,
            s: &Script,
            args: &[&str],
        ) -> edgeact_tools::os::Result<edgeact_tools::os::ScriptOutput> {
            self.0.push((s.clone(), args.iter().map(|a| a.to_string()).collect()));
            Ok(edgeact_tools::os::ScriptOutput {
                code: self.1,
                output: self
                    .2
                    .clone()
                    .unwrap_or_else(|| format!("out{}", self.0.len()).into_bytes()),
            })
        }
        fn hostname(&self) -> &str {
            "fake"
        }
        fn limits(&self) -> edgeact_tools::os::ShellLimits {
            edgeact_tools::os::SandboxConfig::default().limits()
        }
    }

    #[test]
    fn os_check_passes_answer_and_outputs() {
        let ex = Script::bash("nproc");
        let chk = Script {
            language: edgeact_tools::os::ScriptLanguage::Python,
            code: "import sys".into(),
        };
        let mut f = Fake(Vec::new(), 0, None);
        assert!(judge_os_check(Some("4"), &[None, Some(chk.clone())], Some(&ex), &mut f).unwrap());
        assert_eq!(f.0[0].1, vec!["4"]);
        assert_eq!(f.0[1].0, chk);
        assert_eq!(f.0[1].1, vec!["4", "out1"]);
        let mut f = Fake(Vec::new(), 1, None);
        assert!(!judge_os_check(None, &[None], Some(&ex), &mut f).unwrap());
        assert_eq!(f.0[0].1, vec!["None"]);
        assert!(!judge_os_check(Some("1"), &[None], None, &mut Fake(Vec::new(), 0, None)).unwrap());
    }

    #[test]
    fn os_check_output_must_be_utf8() {
        let ex = Script::bash("nproc");
        let judge = |output: &[u8]| {
            let mut f = Fake(Vec::new(), 0, Some(output.to_vec()));
            judge_os_check(Some("4"), &[None, None], Some(&ex), &mut f).unwrap()
        };
        assert!(judge("4\n".as_bytes()));
        assert!(judge("é\n".as_bytes()));
        // AgentBench's `output.decode("utf-8")` raised, so the task counted as failed.
        assert!(!judge(b"4\xff\n"));
        assert!(!judge(&"é".as_bytes()[..1]));
    }

    #[test]
    fn db_answers() {
        assert!(judge_db_answer(" [\"March 19, 1998\"]", &[json!("March 19, 1998")]));
        assert!(judge_db_answer(" [1]", &[json!("1.0")]));
        assert!(judge_db_answer(" 26", &[json!("26")])); // list(26) fails → [" 26"] → float
        assert!(!judge_db_answer(" \"Giza\"", &[json!("Giza")])); // list("Giza") = chars
        assert!(judge_db_answer(" ['1–0', '2–0']", &[json!("2–0"), json!("1–0")]));
        assert!(!judge_db_answer(" ['1–0']", &[json!("2–0"), json!("1–0")]));
        assert!(!judge_db_answer(" [[1], 2]", &[json!("1"), json!("2")]));
        // eval(" none") fails, so the raw text (leading space included) is compared.
        assert!(!judge_db_answer(" none", &[json!("none")]));
        assert!(judge_db_answer("none", &[json!("none")]));
        assert!(!judge_db_answer("", &[json!("none")]));
        assert!(judge_db_hash("[('ab',)]", "[('ab',)]"));
        // What AgentBench's `eval` accepted beyond plain literals (issue #12, gap (a)).
        assert!(judge_db_answer(" [\"Giza\"]  # the largest", &[json!("Giza")]));
        assert!(judge_db_answer(" {'1–0', '2–0'}", &[json!("2–0"), json!("1–0")]));
        assert!(judge_db_answer(" [1.0 + 1]", &[json!("2")]));
        assert!(judge_db_answer(" [0x1A]", &[json!("26")]));
        assert!(judge_db_answer(" [b'26']", &[json!("26")]));
        assert!(judge_db_answer(" [r'a\\b']", &[json!("a\\b")]));
        // Beyond the evaluator's limits: compared as raw text, promptly.
        assert!(!judge_db_answer(" [2**10**10]", &[json!("1")]));
    }
}
