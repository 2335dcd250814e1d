//! The DB judge's `eval` (and its `float()`) against CPython's, on generated inputs.
//!
//! [`judge_parity`](super::judge_parity) holds hand-written cases; this test draws a few
//! thousand random expressions of the kinds DB answers are written in (literals of every type
//! and spelling, tuples, lists, sets, dicts, unary and binary operators, comparisons,
//! `and`/`or`, conditionals, comments), evaluates each with `python3` and with
//! [`py::eval`], and compares the two results by type and value all levels down (or the
//! exception's class). Where this evaluator stops by design (its 128-bit ints, its limits,
//! what it does not implement) the case is not compared. Seeded: a failure names the
//! expression, and the same seed draws it again (`EDGEACT_EVAL_DIFF_SEED`, default 12;
//! `EDGEACT_EVAL_DIFF_EXPRS`, default 4000, for a longer run). The same number of random texts
//! go through `float()`, which the judge applies to one-value answers. Skipped (with a
//! message) where `python3` is not installed.

use super::python_oracle;
use edgeact_runtime::py::{self, EvalErrorKind, PyValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Python's half of the comparison: one JSON string per line in, one encoding per line out,
/// in the format of [`encode`].
const PYTHON: &str = r#"
import json, struct, sys, warnings
warnings.simplefilter("ignore")  # SyntaxWarning for `1 is 1`, invalid escapes
sys.stdin.reconfigure(encoding="utf-8")
sys.stdout.reconfigure(encoding="utf-8")

def enc(v):
    if v is None: return "None"
    if isinstance(v, bool): return "bool:" + str(v)
    if isinstance(v, int): return "int:" + str(v)
    if isinstance(v, float):
        return "float:nan" if v != v else "float:" + str(struct.unpack("<Q", struct.pack("<d", v))[0])
    if isinstance(v, str): return "str:" + json.dumps(v, ensure_ascii=False)
    if isinstance(v, bytes): return "bytes:" + v.hex()
    if isinstance(v, list): return "list[" + ",".join(enc(x) for x in v) + "]"
    if isinstance(v, tuple): return "tuple[" + ",".join(enc(x) for x in v) + "]"
    if isinstance(v, (set, frozenset)): return "set[" + ",".join(sorted(enc(x) for x in v)) + "]"
    if isinstance(v, dict): return "dict[" + ",".join(enc(k) + ":" + enc(x) for k, x in v.items()) + "]"
    return "other:" + type(v).__name__

for line in sys.stdin:
    src = json.loads(line)
    try:
        out = enc(eval(src, {"__builtins__": {}}, {}))
    except SyntaxError:
        # IndentationError too: the evaluator has no statements, so no indentation.
        out = "error:SyntaxError"
    except Exception as e:
        out = "error:" + type(e).__name__
    print(out, flush=True)
"#;

/// A value's encoding: its type and value, all levels down (set members sorted, dicts in
/// insertion order), floats by their bits, so `1`, `1.0`, `True` and `-0.0`, `0.0` differ.
/// Also what [`judge_parity`](super::judge_parity) compares its hand-written values by.
pub fn encode(v: &PyValue) -> String {
    let join = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(",");
    match v {
        PyValue::None => "None".into(),
        PyValue::Bool(b) => format!("bool:{}", if *b { "True" } else { "False" }),
        PyValue::Int(i) => format!("int:{i}"),
        PyValue::Float(f) if f.is_nan() => "float:nan".into(),
        PyValue::Float(f) => format!("float:{}", f.to_bits()),
        PyValue::Str(s) => format!("str:{}", serde_json::to_string(s).unwrap()),
        PyValue::Bytes(b) => format!("bytes:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        PyValue::List(x) => format!("list[{}]", join(&mut x.iter().map(encode))),
        PyValue::Tuple(x) => format!("tuple[{}]", join(&mut x.iter().map(encode))),
        PyValue::Set(x) => {
            let mut items: Vec<String> = x.iter().map(encode).collect();
            items.sort();
            format!("set[{}]", items.join(","))
        }
        PyValue::Dict(x) => format!(
            "dict[{}]",
            join(&mut x.iter().map(|(k, v)| format!("{}:{}", encode(k), encode(v))))
        ),
    }
}

/// Python's exception class for an error of this evaluator, or `None` where it stopped by
/// design (the case is then not compared).
fn python_error(kind: EvalErrorKind) -> Option<&'static str> {
    Some(match kind {
        EvalErrorKind::Syntax => "SyntaxError",
        EvalErrorKind::Name => "NameError",
        EvalErrorKind::Type => "TypeError",
        EvalErrorKind::Value => "ValueError",
        EvalErrorKind::ZeroDivision => "ZeroDivisionError",
        // Ints past 128 bits overflow here and are exact in Python, so no overflow is
        // compared (float overflow, an OverflowError in both, goes with them).
        EvalErrorKind::Overflow => return None,
        EvalErrorKind::Unsupported | EvalErrorKind::Limit => return None,
    })
}

/// Random expressions in the shapes DB answers take, kept small enough for CPython to
/// evaluate at once: `**`, `<<`, `>>` and `*` get small literal right operands.
struct Gen(StdRng);

impl Gen {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.0.random_range(0..items.len())]
    }

    fn int(&mut self) -> String {
        match self.0.random_range(0..10) {
            0 => self
                .pick(&["0x1F", "0o17", "0b101", "1_000", "0X_ff", "00", "0_0", "-0"])
                .into(),
            1 => self
                .pick(&[
                    "9223372036854775807",
                    "9223372036854775808",
                    "170141183460469231731687303715884105727",
                    "18446744073709551616",
                    "4611686018427387904",
                ])
                .into(),
            2 => self.0.random_range(-1_000_000i64..1_000_000).to_string(),
            // Any magnitude up to 2^120: int/int division must round once, past 2^53 too.
            3 => {
                let bits = self.0.random_range(1..120);
                (self.0.random::<i128>() >> (127 - bits)).to_string()
            }
            _ => self.0.random_range(0..20).to_string(),
        }
    }

    fn float(&mut self) -> String {
        match self.0.random_range(0..6) {
            0 => self
                .pick(&[
                    "1.", ".5", "1e3", "1E-3", "2.5e+2", "1_0.5", "0.1", "1e308", "1e-320", "1e400",
                ])
                .into(),
            1 => format!("{}.{}", self.0.random_range(0..1000), self.0.random_range(0..1000)),
            2 => format!("{:e}", self.0.random_range(-1e6f64..1e6)),
            _ => format!("{:.2}", self.0.random_range(-100f64..100.0)),
        }
    }

    fn string(&mut self) -> String {
        let body = self.pick(&[
            "abc",
            "",
            "O'Brien",
            "a\\nb",
            "\\x41\\u00e9\\U0001F600",
            "\\t\\\\",
            "\\101",
            "1998-03-19",
            "Jo\\\"hn",
            "   x  ",
            "ü",
            "\\d+",
            "a\\\nb",
        ]);
        let (open, close) = match self.0.random_range(0..8) {
            0 => ("'''", "'''"),
            1 => ("\"\"\"", "\"\"\""),
            2 | 3 => ("'", "'"),
            _ => ("\"", "\""),
        };
        // Escape the body's quotes of the kind that delimits it (triple quotes escape `"`).
        let body = if open == "'" {
            body.replace('\'', "\\'")
        } else {
            body.replace('"', "\\\"")
        };
        let prefix = self.pick(&["", "", "", "r", "u", "b", "rb", "B", "R", "f"]);
        let body = if prefix.contains(['b', 'B']) {
            body.replace('ü', "u")
        } else {
            body
        };
        format!("{prefix}{open}{body}{close}")
    }

    /// Spellings and values at the edges of Python's grammar and arithmetic.
    fn edge(&mut self) -> String {
        self.pick(&[
            "9007199254740993",
            "9007199254740992.0",
            "2**53 + 1",
            "-0.0",
            "1e-400",
            "-1e400",
            "1e400 - 1e400",
            "1e308 * 10",
            "1_000.5e1_0",
            "0e0",
            "1__0",
            "01",
            "1_",
            "0x",
            ".e1",
            "'\\q'",
            "'\\x4'",
            "b'\\777'",
            "'\\777'",
            "b'\\x80'",
            "b'\\u00e9'",
            "'\\N{DASH}'",
            "b'\u{e9}'",
            "'\u{1F600}'",
            "\u{ff11}\u{ff12}",
            "\u{e9}",
            " 1",
            "\t1",
            "\n1",
            "1\n",
            "1,",
            "1, 2",
            "",
            "   ",
            "# c",
            "1 2",
            "(1",
            "[1",
            "1)",
            "{1: }",
            "{:1}",
            "(,)",
            "[,]",
            "170141183460469231731687303715884105727 / 3",
            "9007199254740993 / 3",
            "(-2)**127 / 7",
            "(2**64 + 1) / (2**64 - 1)",
            "12345678901234567890123 / 98765432109876543",
            "(2**100 + 1) / -3",
            "{1.0} & {1}",
            "0 / -(2**64)",
            "-0 / 2**64",
            "{1, 2} & {2.0}",
            "{2.0} & {1, 2}",
            "9007199254740993 < 9007199254740992.0",
            "9007199254740993 <= 9007199254740992.0",
            "-7 // 2",
            "-7 % 2",
            "7 % -2",
            "-7.5 % 2",
            "5 % 1e400",
            "-5 % 1e400",
            "-5.0 // 1e400",
            "1e308 ** 2",
            "10.0 ** 400",
            "2 ** 1e400",
            "(-1) ** 1e400",
            "0.0 ** -1",
            "0 ** -1",
            "1 << -1",
            "1 >> 200",
            "-1 >> 200",
            "True & False",
            "True | 2",
            "True ^ True",
            "~False",
            "97 in b'abc'",
            "256 in b'abc'",
            "[1] in {1}",
            "{1: 'a', 1.0: 'b', True: 'c'}",
            "{0, False, 0.0, -0.0}",
            "not 1 == 2",
            "-2 ** 2",
            "2 ** -1",
            "1 if 0 else 2 if 1 else 3",
            "1 == 1.0 == True",
            "{1, 2} - {2}",
            "{1: 2} | {3: 4}",
            "{1, 2} ^ {2, 3}",
            "{1} & {1.0}",
            "[1, 2] < [1, 3]",
            "{1} < {1, 2}",
            "{1: 2} < {1: 2}",
            "'a' * -1",
            "[1] * True",
            "b'a' < 'a'",
            "1 or 1 / 0",
            "0 and 1 / 0",
            "(2**63) * 2 ** 64",
            "-(2**127)",
            "-(2**127) - 1",
            "abs",
            "1 is 1",
            "lambda: 1",
            "[x for x in ()]",
            "(1).real",
            "'abc'[0]",
            "1j",
            "...",
            "x := 1",
            "0.1 + 0.2",
            "1 / 3 * 3",
            "2.0 ** 0.5",
            "7 // 2.0",
            "-7 // 2.0",
            "7.0 % -0.0",
            "7 // -0.0",
        ])
        .into()
    }

    fn atom(&mut self) -> String {
        match self.0.random_range(0..14) {
            12 | 13 => self.edge(),
            0..=2 => self.int(),
            3 | 4 => self.float(),
            5..=7 => self.string(),
            8 => self.pick(&["None", "True", "False"]).into(),
            9 => self.pick(&["none", "null", "x", "March", "NaN", "inf", "true"]).into(),
            10 => format!("{} {}", self.string(), self.string()),
            _ => self.pick(&["()", "[]", "{}", "(1,)", "[1, 2,]", "{1: 2,}"]).into(),
        }
    }

    fn items(&mut self, depth: usize, n: std::ops::Range<usize>) -> Vec<String> {
        let n = self.0.random_range(n);
        (0..n).map(|_| self.expr(depth)).collect()
    }

    fn small(&mut self) -> String {
        self.pick(&[
            "0", "1", "2", "3", "-1", "-2", "5", "2.5", "0.5", "-0.5", "True", "False", "0.0",
        ])
        .into()
    }

    fn expr(&mut self, depth: usize) -> String {
        if depth == 0 {
            return self.atom();
        }
        let d = depth - 1;
        match self.0.random_range(0..20) {
            0..=4 => self.atom(),
            5 => {
                let it = self.items(d, 0..4);
                let trailing = if it.len() == 1 || self.0.random_bool(0.2) {
                    ","
                } else {
                    ""
                };
                format!("({}{trailing})", it.join(", "))
            }
            6 => format!("[{}]", self.items(d, 0..4).join(", ")),
            7 => format!("{{{}}}", self.items(d, 1..4).join(", ")),
            8 => {
                let n = self.0.random_range(0..3);
                let pairs: Vec<String> = (0..n).map(|_| format!("{}: {}", self.expr(d), self.expr(d))).collect();
                format!("{{{}}}", pairs.join(", "))
            }
            9 => format!("{}{}", self.pick(&["-", "+", "~", "not ", "- -"]), self.expr(d)),
            10..=12 => {
                let op = self.pick(&[
                    "+", "-", "/", "//", "%", "&", "|", "^", "==", "!=", "<", "<=", ">", ">=",
                ]);
                format!("{} {op} {}", self.expr(d), self.expr(d))
            }
            13 => {
                let op = self.pick(&["*", "**", "<<", ">>", "*"]);
                format!("({}) {op} {}", self.expr(d), self.small())
            }
            14 => format!("{} {} {}", self.expr(d), self.pick(&["in", "not in"]), self.expr(d)),
            15 => format!("{} {} {}", self.expr(d), self.pick(&["and", "or"]), self.expr(d)),
            16 => format!("{} if {} else {}", self.expr(d), self.expr(d), self.expr(d)),
            17 => format!("{} < {} <= {}", self.expr(d), self.expr(d), self.expr(d)),
            18 => format!("({})  # comment", self.expr(d)),
            _ => format!("({})", self.expr(d)),
        }
    }
}

#[test]
fn eval_agrees_with_cpython_on_generated_expressions() {
    let mut gen = Gen(StdRng::seed_from_u64(python_oracle::env_or(
        "EDGEACT_EVAL_DIFF_SEED",
        12,
    )));
    let exprs: Vec<String> = (0..python_oracle::env_or("EDGEACT_EVAL_DIFF_EXPRS", 4000))
        .map(|i| gen.expr(1 + i % 5))
        .collect();
    let Some(expected) = python_oracle::answers(PYTHON, &exprs) else {
        return;
    };

    let (mut compared, mut mismatches) = (0, Vec::new());
    for (src, want) in exprs.iter().zip(&expected) {
        let got = match py::eval(src) {
            Ok(v) => encode(&v),
            Err(e) => match python_error(e.kind) {
                Some(class) => format!("error:{class}"),
                None => continue,
            },
        };
        compared += 1;
        if got != *want {
            mismatches.push(format!("{src:?}\n  python: {want}\n  edgeact: {got}"));
        }
    }
    let raised = expected.iter().filter(|e| e.starts_with("error:")).count();
    eprintln!(
        "compared {compared} of {} expressions ({raised} raise in Python)",
        exprs.len()
    );
    assert!(
        compared > exprs.len() / 2,
        "only {compared} of {} compared",
        exprs.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {compared} differ:\n{}",
        mismatches.len(),
        mismatches.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Python's half of the `float()` comparison: the float's bits (`nan` for any NaN) or `error`.
const PYTHON_FLOAT: &str = r#"
import json, struct, sys
sys.stdin.reconfigure(encoding="utf-8")
for line in sys.stdin:
    try:
        f = float(json.loads(line))
        print("nan" if f != f else struct.unpack("<Q", struct.pack("<d", f))[0], flush=True)
    except ValueError:
        print("error", flush=True)
"#;

/// The judge compares one-value answers with `float()` where both convert: [`py::parse_float`]
/// against CPython's on texts made of digits (ASCII and other scripts'), signs, points,
/// exponents, underscores, `inf`/`nan` spellings and every kind of whitespace.
#[test]
fn float_agrees_with_cpython_on_generated_texts() {
    const PARTS: &[&str] = &[
        "1",
        "0",
        "9",
        "_",
        ".",
        " ",
        "e",
        "E",
        "+",
        "-",
        "inf",
        "nan",
        "Infinity",
        "INF",
        "x",
        "5",
        "\t",
        "\n",
        "\r",
        "\x0b",
        "\u{a0}",
        "\u{3000}",
        "\u{85}",
        "\u{2028}",
        "\u{200b}",
        "\x1c",
        "\x1f",
        "1_000",
        "e1_0",
        "\u{661}",
        "\u{966}",
        "\u{e53}",
        "\u{ff19}",
        "\u{1d7d9}",
        "0x1",
        "j",
    ];
    let mut rng = StdRng::seed_from_u64(python_oracle::env_or("EDGEACT_EVAL_DIFF_SEED", 12));
    let texts: Vec<String> = (0..python_oracle::env_or("EDGEACT_EVAL_DIFF_EXPRS", 4000))
        .map(|_| {
            (0..rng.random_range(1..7))
                .map(|_| PARTS[rng.random_range(0..PARTS.len())])
                .collect()
        })
        .collect();
    let Some(expected) = python_oracle::answers(PYTHON_FLOAT, &texts) else {
        return;
    };
    let mismatches: Vec<String> = texts
        .iter()
        .zip(&expected)
        .filter_map(|(text, want)| {
            let got = match py::parse_float(text) {
                Some(f) if f.is_nan() => "nan".to_string(),
                Some(f) => f.to_bits().to_string(),
                None => "error".to_string(),
            };
            (got != *want).then(|| format!("{text:?}: python {want}, edgeact {got}"))
        })
        .collect();
    let floats = expected.iter().filter(|e| *e != "error").count();
    eprintln!("compared {} texts ({floats} are floats to Python)", texts.len());
    assert!(
        mismatches.is_empty(),
        "{} differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
