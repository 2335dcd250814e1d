//! Judge parity with AgentBench's `eval` (issue #12, item 6 and judge gaps (a) and (e)).
//!
//! AgentBench's DB judge ran `list(eval(answer))` on the model's `Final Answer:` text. The
//! evaluator here ([`py::eval`]) is a safe parser and evaluator of the Python expression
//! subset answers are written in. The expected values below were written from Python 3.11's
//! behaviour (checked once against `python3` while writing them; the test runs no Python).
//! Then: the judge's findings (comments, sets, dicts, arithmetic, bytes, raw strings, hex),
//! resource limits that must fail at once rather than hang, and the constrained DB answer,
//! which must always be a list literal the evaluator accepts.

use super::judge_differential::encode;
use edgeact_agent::constrain::Constraint;
use edgeact_agent::judge::judge_db_answer;
use edgeact_agent::{parse_db, DbAction, Protocol};
use edgeact_runtime::py::{self, EvalErrorKind, PyValue};
use serde_json::json;

#[allow(non_snake_case)]
fn S(s: &str) -> PyValue {
    PyValue::Str(s.to_string())
}
#[allow(non_snake_case)]
fn Y(b: &[u8]) -> PyValue {
    PyValue::Bytes(b.to_vec())
}
#[allow(non_snake_case)]
fn I(i: i128) -> PyValue {
    PyValue::Int(i)
}
#[allow(non_snake_case)]
fn F(f: f64) -> PyValue {
    PyValue::Float(f)
}
#[allow(non_snake_case)]
fn B(b: bool) -> PyValue {
    PyValue::Bool(b)
}
#[allow(non_snake_case)]
fn L(v: Vec<PyValue>) -> PyValue {
    PyValue::List(v)
}
#[allow(non_snake_case)]
fn T(v: Vec<PyValue>) -> PyValue {
    PyValue::Tuple(v)
}
#[allow(non_snake_case)]
fn St(v: Vec<PyValue>) -> PyValue {
    PyValue::Set(v)
}
#[allow(non_snake_case)]
fn D(v: Vec<(PyValue, PyValue)>) -> PyValue {
    PyValue::Dict(v)
}
const N: PyValue = PyValue::None;

#[test]
fn expressions_evaluate_as_python_does() {
    let table: Vec<(&str, PyValue)> = vec![
        ("[1] # trailing comment", L(vec![I(1)])),
        (" [\"March 19, 1998\"]", L(vec![S("March 19, 1998")])),
        ("{'a', 'b'}", St(vec![S("b"), S("a")])),
        ("{1, 1.0, True, 2}", St(vec![I(1), I(2)])),
        ("{'x': 1, 'y': 2}", D(vec![(S("x"), I(1)), (S("y"), I(2))])),
        ("{1: 'a', 1.0: 'b'}", D(vec![(I(1), S("b"))])),
        ("{}", D(vec![])),
        ("[1.0 + 1]", L(vec![F(2.0)])),
        (
            "[2 * 3, 7 - 10, 7 / 2, 7 // 2, -7 // 2, 7 % -3, -7 % 3, 2 ** 10, 2 ** -1]",
            L(vec![I(6), I(-3), F(3.5), I(3), I(-4), I(-2), I(2), I(1024), F(0.5)]),
        ),
        (
            "[7.5 // -2, -0.0 // 1, 7 % -0.5, 5.5 % 2, 1e308 * 10]",
            L(vec![F(-4.0), F(-0.0), F(-0.0), F(1.5), F(f64::INFINITY)]),
        ),
        ("b'abc'", Y(&[97, 98, 99])),
        (
            "[b'\\x00\\xff', rb'\\x', B\"a\" b'b']",
            L(vec![Y(&[0, 255]), Y(&[92, 120]), Y(&[97, 98])]),
        ),
        ("r'a\\b\\n'", S("a\\b\\n")),
        ("[R\"\\d+\", r'\\'', u'x']", L(vec![S("\\d+"), S("\\'"), S("x")])),
        (
            "[0x1F, 0o17, 0b101, 0X_ff, 1_000_000, 0_0, 00]",
            L(vec![I(31), I(15), I(5), I(255), I(1000000), I(0), I(0)]),
        ),
        (
            "[1., .5, 1e3, 1.5E-3, 1_0.5_0e1_0, 1e999]",
            L(vec![
                F(1.0),
                F(0.5),
                F(1000.0),
                F(0.0015),
                F(105000000000.0),
                F(f64::INFINITY),
            ]),
        ),
        ("'a' 'b' \"c\"", S("abc")),
        ("'\\x41\\u00e9\\U0001F600\\101\\0\\q'", S("A\u{e9}\u{1f600}A\u{0}\\q")),
        ("b'\\777'", Y(&[255])),
        ("f'a{{b}}c'", S("a{b}c")),
        ("(1,)", T(vec![I(1)])),
        ("(1)", I(1)),
        ("()", T(vec![])),
        ("1, 2", T(vec![I(1), I(2)])),
        ("1,", T(vec![I(1)])),
        (
            "[(1, 'a'), (2, 'b')]",
            L(vec![T(vec![I(1), S("a")]), T(vec![I(2), S("b")])]),
        ),
        ("[[1, 2], [3]]", L(vec![L(vec![I(1), I(2)]), L(vec![I(3)])])),
        ("-5", I(-5)),
        ("+True", I(1)),
        ("-True", I(-1)),
        ("~5", I(-6)),
        ("~True", I(-2)),
        ("not 0", B(true)),
        ("1 < 2 < 3", B(true)),
        ("1 < 2 > 3", B(false)),
        ("1 == 1.0", B(true)),
        ("'a' in 'cat'", B(true)),
        ("2 not in [1, 2]", B(false)),
        ("[1, 2] < [1, 3]", B(true)),
        ("(1, 2) <= (1, 2)", B(true)),
        ("{1} < {1, 2}", B(true)),
        ("{1, 2} == {2, 1}", B(true)),
        ("{'a': 1} == {'a': 1.0}", B(true)),
        ("0 and 1/0", I(0)),
        ("1 or 1/0", I(1)),
        ("[] or 'x'", S("x")),
        ("'yes' if 1 else 'no'", S("yes")),
        ("True + True", I(2)),
        ("True & False", B(false)),
        ("3 & 5 | 8 ^ 1", I(9)),
        ("1 << 100", I(1267650600228229401496703205376)),
        ("-8 >> 1", I(-4)),
        ("'ab' * 3", S("ababab")),
        ("3 * [0]", L(vec![I(0), I(0), I(0)])),
        ("[1] * 0", L(vec![])),
        ("(1, 2) + (3,)", T(vec![I(1), I(2), I(3)])),
        ("[1] + [2]", L(vec![I(1), I(2)])),
        ("'x' + 'y'", S("xy")),
        ("b'x' * 2", Y(&[120, 120])),
        ("{1, 2} | {3}", St(vec![I(1), I(2), I(3)])),
        ("{1, 2} & {2, 3}", St(vec![I(2)])),
        ("{1, 2} - {2}", St(vec![I(1)])),
        ("{1, 2} ^ {2, 3}", St(vec![I(1), I(3)])),
        // The smaller set's items (the right one's on a tie), as CPython walks it.
        (
            "[{1} & {1.0}, {1.0, 2} & {1}, {1} & {1.0, 2}]",
            L(vec![St(vec![F(1.0)]), St(vec![I(1)]), St(vec![I(1)])]),
        ),
        // Ints divide with one rounding, as Python's `/` (converting first rounds twice).
        (
            "[(2**53 + 1) / 3, (2**64 + 1) / (2**64 - 1), (-2)**127 / 7, 7 / -2, 0 / -(2**64)]",
            L(vec![
                F(3002399751580331.0),
                F(1.0),
                F(-2.4305883351495603e37),
                F(-3.5),
                F(-0.0),
            ]),
        ),
        ("{'a': 1} | {'b': 2}", D(vec![(S("a"), I(1)), (S("b"), I(2))])),
        ("2 ** 3 ** 2", I(512)),
        ("-2 ** 2", I(-4)),
        ("(-2) ** 3", I(-8)),
        ("2 ** 0.5", F(std::f64::consts::SQRT_2)),
        ("10 / 4", F(2.5)),
        ("1 / 3", F(0.3333333333333333)),
        ("0.1 + 0.2", F(0.30000000000000004)),
        (
            "170141183460469231731687303715884105727",
            I(170141183460469231731687303715884105727),
        ),
        ("-170141183460469231731687303715884105727 - 1", I(i128::MIN)),
        ("\"it's\"", S("it's")),
        ("[None, True, False]", L(vec![N, B(true), B(false)])),
        ("  [1]", L(vec![I(1)])),
        ("\u{9}[1]", L(vec![I(1)])),
        ("1 if 0 else 2 if 1 else 3", I(2)),
        // Written by hand: forms the one-line table above cannot hold.
        ("[1, # a comment inside the brackets\n 2]", L(vec![I(1), I(2)])),
        ("\"\"\"tri\nple\"\"\"", S("tri\nple")),
        ("[1]\\\n + [2]", L(vec![I(1), I(2)])),
        ("[1]\n\n", L(vec![I(1)])),
        ("[1]\r\n", L(vec![I(1)])),
        ("'a\\\nb'", S("ab")),
        ("{'a': 1, 'a': 2}", D(vec![(S("a"), I(2))])),
        ("[1,]", L(vec![I(1)])),
        ("{1, 2,}", St(vec![I(1), I(2)])),
        ("2**126 - 1 + 2**126", I(i128::MAX)),
        (
            "[0.1 * 3, 1e-5, 2.5e+3]",
            L(vec![F(0.30000000000000004), F(1e-5), F(2500.0)]),
        ),
        ("1 < 2.5 <= 2.5 != 3", B(true)),
        ("'b' > 'a' and b'b' > b'a'", B(true)),
        ("# comment\n[1]\n  # indented comment\n \n", L(vec![I(1)])),
        ("{1} in {1, 2}", B(false)), // Python looks sets up as frozensets
        ("'bc' in 'abcd' and 98 in b'abc' and 'a' in {'a': 1}", B(true)),
    ];
    for (src, want) in table {
        let got = py::eval(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        assert_eq!(got, want, "{src:?}");
        // `==` equates `1`, `1.0` and `True`, and `-0.0` with `0.0`: types and bits too.
        assert_eq!(encode(&got), encode(&want), "{src:?}");
    }
}

#[test]
fn errors_are_reported_as_python_raises_them() {
    use EvalErrorKind::*;
    // `None`: Python raises something this evaluator reports as unsupported syntax.
    let table: Vec<(&str, Option<EvalErrorKind>)> = vec![
        ("[1, 2", Some(Syntax)),           // Python: SyntaxError
        ("1/0", Some(ZeroDivision)),       // Python: ZeroDivisionError
        ("1 // 0", Some(ZeroDivision)),    // Python: ZeroDivisionError
        ("1 % 0", Some(ZeroDivision)),     // Python: ZeroDivisionError
        ("1.0 / 0", Some(ZeroDivision)),   // Python: ZeroDivisionError
        ("0.0 ** -1", Some(ZeroDivision)), // Python: ZeroDivisionError
        ("0 ** -1", Some(ZeroDivision)),   // Python: ZeroDivisionError
        ("x", Some(Name)),                 // Python: NameError
        ("none", Some(Name)),              // Python: NameError
        ("March 19, 1998", Some(Syntax)),  // Python: SyntaxError
        ("012", Some(Syntax)),             // Python: SyntaxError
        ("1__0", Some(Syntax)),            // Python: SyntaxError
        ("0x", Some(Syntax)),              // Python: SyntaxError
        ("1_", Some(Syntax)),              // Python: SyntaxError
        ("[1] [2]", None),                 // Python: IndexError
        ("len([1])", None),                // builtins are not evaluated here
        ("[1].x", None),                   // Python: AttributeError
        ("[x for x in y]", None),          // Python: NameError
        ("{[1]}", Some(Type)),             // Python: TypeError
        ("{[1]: 2}", Some(Type)),          // Python: TypeError
        ("[1] < 'a'", Some(Type)),         // Python: TypeError
        ("'a' + 1", Some(Type)),           // Python: TypeError
        ("-'a'", Some(Type)),              // Python: TypeError
        ("~1.5", Some(Type)),              // Python: TypeError
        ("1 << -1", Some(Value)),          // Python: ValueError
        ("'a' in 1", Some(Type)),          // Python: TypeError
        ("1 in 'a'", Some(Type)),          // Python: TypeError
        ("1\u{a}2", Some(Syntax)),         // Python: SyntaxError
        ("'abc", Some(Syntax)),            // Python: SyntaxError
        ("b'\u{e9}'", Some(Syntax)),       // Python: SyntaxError
        ("'a' b'b'", Some(Syntax)),        // Python: SyntaxError
        ("*a", None),                      // Python: SyntaxError
        ("10.0 ** 400", Some(Overflow)),   // Python: OverflowError
        ("'\\N{DASH}'", None),             // Python: SyntaxError (no name table here: unsupported)
        ("1j", Some(Unsupported)),
        ("f'{x}'", Some(Unsupported)),
        ("'\\ud800'", Some(Unsupported)),  // valid Python, but not a Rust string
        ("[1]\n ", Some(Syntax)),          // Python: IndentationError
        ("# comment\n [1]", Some(Syntax)), // Python: IndentationError
        ("[1] in {1}", Some(Type)),        // unhashable: a list cannot be a member
        ("lambda: 1", Some(Unsupported)),
        ("[1] is [1]", Some(Unsupported)),
        ("'%d' % 1", Some(Unsupported)),
        ("", Some(Syntax)),
        ("# only a comment", Some(Syntax)),
        ("(-8) ** 0.5", Some(Unsupported)), // a complex result in Python
        ("...", Some(Unsupported)),         // Python: Ellipsis
        ("[1, ...]", Some(Unsupported)),    // Python: [1, Ellipsis]
        ("(x := 1)", Some(Unsupported)),    // Python: 1
        ("[y := 2, 3]", Some(Unsupported)), // Python: [2, 3]
        ("x := 1", Some(Syntax)),           // Python: SyntaxError
        ("1 ... 2", Some(Syntax)),          // Python: SyntaxError
    ];
    for (src, want) in table {
        let err = py::eval(src).expect_err(src);
        if let Some(kind) = want {
            assert_eq!(err.kind, kind, "{src:?}: {err}");
        }
        assert!(!err.to_string().is_empty());
    }
}

/// Each of these would take Python minutes or all memory; the evaluator refuses at once.
#[test]
fn hostile_answers_fail_promptly_with_a_clear_error() {
    let deep_list = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_parens = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let minuses = format!("{}1", "-".repeat(10_000));
    let nots = format!("{}1", "not ".repeat(10_000));
    let power_tower = format!("{}2", "2**".repeat(10_000));
    let too_long = format!("[{}]", "1,".repeat(60_000));
    let cases: Vec<(&str, EvalErrorKind, &str)> = vec![
        ("2**10**10", EvalErrorKind::Overflow, "128 bits"),
        ("[2**10**10]", EvalErrorKind::Overflow, "128 bits"),
        ("10**100", EvalErrorKind::Overflow, "128 bits"),
        ("1 << 10**9", EvalErrorKind::Overflow, "128 bits"),
        ("1", EvalErrorKind::Limit, ""), // placeholder replaced below
        ("'a' * 10**12", EvalErrorKind::Limit, "builds more than"),
        ("[0] * 10**9", EvalErrorKind::Limit, "builds more than"),
        ("[[0] * 10**4] * 10**4", EvalErrorKind::Limit, "builds more than"),
        ("b'ab' * 2**62", EvalErrorKind::Limit, "builds more than"),
        (
            "99999999999999999999999999999999999999999",
            EvalErrorKind::Limit,
            "128 bits",
        ),
        (&deep_list, EvalErrorKind::Limit, "nested more than"),
        (&deep_parens, EvalErrorKind::Limit, "nested more than"),
        (&minuses, EvalErrorKind::Limit, "nested more than"),
        (&nots, EvalErrorKind::Limit, "nested more than"),
        (&power_tower, EvalErrorKind::Limit, "nested more than"),
        (&too_long, EvalErrorKind::Limit, "longer than"),
    ];
    for (src, kind, message) in cases.into_iter().filter(|c| c.0 != "1") {
        let err = py::eval(src).expect_err(&src[..src.len().min(40)]);
        assert_eq!(err.kind, kind, "{}: {err}", &src[..src.len().min(40)]);
        assert!(err.to_string().contains(message), "{err}");
    }
    // Repetition within the budget, and long flat chains, still work (no recursion per term).
    let sum = format!("{}1", "1+".repeat(40_000));
    assert_eq!(py::eval(&sum).unwrap(), I(40_001));
    assert_eq!(py::eval("'ab' * 1000").unwrap(), S(&"ab".repeat(1000)));
    // The judge compares such answers as raw text, as the harness did on an exception.
    assert!(!judge_db_answer(" 2**10**10", &[json!("1")]));
    assert!(!judge_db_answer(" ['a'] * 10**12", &[json!("a")]));
}

/// Gap (a): answers AgentBench's `eval` accepted and our literal-only judge refused.
#[test]
fn judge_accepts_what_agentbench_eval_accepts() {
    let cases: Vec<(&str, Vec<serde_json::Value>)> = vec![
        (" [\"March 19, 1998\"] # from the table", vec![json!("March 19, 1998")]),
        (" ['1–0', '2–0']  # both rows", vec![json!("2–0"), json!("1–0")]),
        (" {'1–0', '2–0'}", vec![json!("2–0"), json!("1–0")]),
        (" {'Giza'}", vec![json!("Giza")]),
        (" {'Giza': 3}", vec![json!("Giza")]), // list(dict) is its keys
        (" [1.0 + 1]", vec![json!("2")]),
        (" [2011.0 * 1]", vec![json!("2011.0")]),
        (" [65 / 2]", vec![json!("32.5")]),
        (" [b'1999']", vec![json!("1999")]), // float(b'1999') == 1999.0
        (" [r'C:\\dir']", vec![json!("C:\\dir")]),
        (" [0x10]", vec![json!("16")]),
        (" [0b11]", vec![json!("3")]),
        (" [0o17]", vec![json!("15")]),
        (" [1_000]", vec![json!("1000.0")]),
        (" ['Dick ' 'Murdoch']", vec![json!("Dick Murdoch")]),
        (" [u'K255AZ', 'K228EE']", vec![json!("K228EE"), json!("K255AZ")]),
        (" ('a', 'b')", vec![json!("a"), json!("b")]),
        (" 'a', 'b'", vec![json!("a"), json!("b")]),
        (" [None]", vec![json!(null)]),
    ];
    for (answer, label) in &cases {
        assert!(judge_db_answer(answer, label), "{answer:?} vs {label:?}");
    }
    // Still wrong where Python's comparison says so.
    let wrong: Vec<(&str, Vec<serde_json::Value>)> = vec![
        (" [1.0 + 2]", vec![json!("2")]),
        (" {'Giza', 'Cairo'}", vec![json!("Giza")]),
        (" [b'Giza']", vec![json!("Giza")]),         // bytes never equal str
        (" [[1], 2]", vec![json!("1"), json!("2")]), // unhashable: set() raises
        (" {'a': [1]} | {'b': 2}", vec![json!("a"), json!("c")]),
        (" [1/0]", vec![json!("1")]),
    ];
    for (answer, label) in &wrong {
        assert!(!judge_db_answer(answer, label), "{answer:?} vs {label:?}");
    }
}

/// A tiny deterministic generator (xorshift), so the property test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A vocabulary like a real one for this purpose: single bytes, short random pieces over
/// the bytes that matter to the answer grammar, UTF-8 pieces, and the protocol's keywords.
fn vocabulary(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut vocab: Vec<Vec<u8>> = (1..=255u8).map(|b| vec![b]).collect();
    let interesting: &[u8] = b"[]()'\"\\,. -+0123456789eExjNoneTrueFalsAction: \n#:;{}";
    for _ in 0..600 {
        let len = 1 + rng.below(5);
        vocab.push((0..len).map(|_| interesting[rng.below(interesting.len())]).collect());
    }
    for piece in [
        "Action: ",
        "Action",
        ": ",
        "Answer",
        "\nFinal Answer: [",
        "Final",
        " Answer",
        "None",
        "True",
        "False",
        " None",
        "\"]",
        "']",
        "é",
        "日本",
        "\u{fffd}",
        "\\'",
        "\\\"",
        "\\n",
        "\\x41",
        "::::",
        "]A",
        ", ",
        "1.5e-3",
        "\"Giza\"",
        "'K255AZ'",
        " [",
        "[\"",
        "0x10",
        "1e",
        "--",
        "00",
    ] {
        vocab.push(piece.as_bytes().to_vec());
    }
    vocab
}

/// Gap (e): random token streams under the constraint never give an answer the evaluator
/// refuses, and the reply of the finding cannot be produced.
#[test]
fn constrained_db_answers_always_evaluate_to_a_list() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vocab = vocabulary(&mut rng);
    let end = vocab.len() as u32;
    let mut answers = 0;
    for walk in 0..400 {
        let mut c = Constraint::new(Protocol::Db);
        let mut text: Vec<u8> = Vec::new();
        // At least the longest closing path (from the start of the free text), as in the engine.
        let budget = 32 + rng.below(60);
        let mut remaining = budget;
        // Free text rarely spells `Action: Answer` by chance: sometimes start with it.
        if walk % 2 == 0 {
            assert!(c.advance(b"Action: Answer\nFinal Answer: ["));
            text.extend_from_slice(b"Action: Answer\nFinal Answer: [");
        }
        loop {
            let allowed = c.allowed_tokens(vocab.len(), |id| &vocab[id as usize], &[end], remaining);
            assert!(
                !allowed.is_empty(),
                "walk {walk}: no token allowed after {:?}",
                String::from_utf8_lossy(&text)
            );
            if remaining == 0 {
                break;
            }
            // Favour tokens that are not the end, so that answers grow long.
            let pick = allowed[rng.below(allowed.len())];
            if pick == end {
                if rng.below(4) == 0 || allowed.len() == 1 {
                    break;
                }
                continue;
            }
            let piece = &vocab[pick as usize];
            assert!(c.advance(piece));
            text.extend_from_slice(piece);
            remaining -= 1;
            if c.is_done() {
                break;
            }
        }
        let reply = String::from_utf8_lossy(&text);
        assert!(
            c.can_end(),
            "walk {walk}: budget {budget} spent on an open reply {reply:?}"
        );
        match parse_db(&reply) {
            DbAction::Answer(answer) => {
                answers += 1;
                match py::eval(&answer) {
                    Ok(PyValue::List(_)) => {}
                    other => panic!("walk {walk}: answer {answer:?} evaluates to {other:?}"),
                }
            }
            DbAction::Operation(_) => {}
            other => panic!("walk {walk}: {reply:?} parses to {other:?}"),
        }
    }
    assert!(answers >= 150, "only {answers} of 400 walks gave a final answer");

    // The finding's reply, and the same shape token by token: refused at the first ':'.
    let mut c = Constraint::new(Protocol::Db);
    assert!(c.advance(b"Action: Answer\nFinal Answer: ["));
    assert!(!c.advance(b"::::::::::]A]A]A]A]"));
    assert!(!c.advance(b":"));
    assert!(c.advance(b"]"));
    assert!(!c.advance(b"A"));
    assert!(c.is_done());
}
