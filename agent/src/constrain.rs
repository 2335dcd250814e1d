//! Protocol-constrained decoding: a byte-level prefix automaton of the reply shapes that the
//! AgentBench parsers accept, and the token mask it induces over a vocabulary.
//!
//! Shapes (leading spaces allowed, since SentencePiece pieces start with one):
//! - OS: `Think: <one line>\n\nAct: bash\n\n```bash\n<code>\n```` | `… Act: finish` |
//!   `… Act: answer(<text ending in ')'>)`, the `Think:` line optional.
//! - DB: `<free text>Action: Operation\n```sql\n<sql>\n```` |
//!   `<free text>Action: Answer\nFinal Answer: ` and a list literal, where the free text ends
//!   at its first `Action: ` (the one the parser reads) and holds no `\nFinal Answer:` (the
//!   parser would read that one), and the answer is a well-formed Python list literal of the
//!   values a DB answer holds: strings (single or double quoted, one line, one-character
//!   escapes), ints of at most 38 digits, floats, `None`, `True`, `False`, separated by commas
//!   and spaces (a trailing comma allowed). So every constrained answer is one the judge's
//!   `eval` (`edgeact_runtime::py::eval`) evaluates to a list, never text that merely ends in a bracket
//!   (issue #12).
//!
//! Every string the automaton accepts parses to a valid action (tested below); the mask lets a
//! token through when all its bytes keep the automaton alive, and end-of-generation only in an
//! accepting state. Working on bytes keeps multi-byte characters split over byte-fallback
//! tokens correct: free-text states accept any byte except the newline.

use super::react::Protocol;

/// Fixed byte strings the automaton must follow literally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lit {
    ThinkPrefix,
    ActPrefix,
    ActSep,
    BashKw,
    FinishKw,
    AnswerKw,
    DbOpKw,
    DbAnsKw,
}

impl Lit {
    fn bytes(self) -> &'static [u8] {
        match self {
            Lit::ThinkPrefix => b"Think: ",
            Lit::ActPrefix => b"Act: ",
            Lit::ActSep => b"\n\nAct: ",
            Lit::BashKw => b"bash\n\n```bash\n",
            Lit::FinishKw => b"finish",
            Lit::AnswerKw => b"answer(",
            Lit::DbOpKw => b"Operation\n```sql\n",
            Lit::DbAnsKw => b"Answer\nFinal Answer: [",
        }
    }

    fn then(self) -> State {
        match self {
            Lit::ThinkPrefix => State::Thought {
                nonempty: false,
                act: 0,
            },
            Lit::ActPrefix | Lit::ActSep => State::ActChoice,
            Lit::BashKw | Lit::DbOpKw => State::Code { tail: 0 },
            Lit::FinishKw => State::Done,
            Lit::AnswerKw => State::Bracketed {
                close: b')',
                closed: false,
            },
            Lit::DbAnsKw => State::DbList(ListState(ListPos::ItemOrClose)),
        }
    }
}

const DB_ACTION: &[u8] = b"Action: ";
const DB_FINAL_ANSWER: &[u8] = b"\nFinal Answer:";

/// How many bytes of `pattern` are matched after byte `b`, given `matched` before it. Both
/// patterns start with a byte they hold only once, so a mismatch restarts at that byte.
fn match_step(pattern: &[u8], matched: u8, b: u8) -> u8 {
    if b == pattern[matched as usize] {
        matched + 1
    } else if b == pattern[0] {
        1
    } else {
        0
    }
}

/// "Act:" inside an OS thought (see [`State::Thought`]).
const THOUGHT_ACT: &[u8] = b"Act:";

/// Extra tokens kept in reserve before forcing the closing path: one token can lengthen the
/// path by at most 11 bytes (`b` after `Act: `: from `finish` to the rest of `bash`, its
/// code fence and the fence's end), so forcing this early always leaves enough tokens (each
/// forced token advances the path by at least one byte). Checked by
/// `closing_paths_grow_by_at_most_the_margin`.
const CLOSING_MARGIN: usize = 11;
const CODE_END: &[u8] = b"\n```";

/// A state of the reply automaton.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    OsStart,
    /// `pos` bytes of the literal matched.
    Lit(LitState),
    /// `act` bytes of "Act:" matched in the thought; 4 while only (possibly) whitespace has
    /// followed it, when the thought must not end: the parser's `Act:\s*(.+)` would run on
    /// from there across the newlines and take the real action line as its text.
    Thought {
        nonempty: bool,
        act: u8,
    },
    ActChoice,
    /// Inside a code block; `tail` bytes of "\n```" matched.
    Code {
        tail: u8,
    },
    /// One line that must end with `close` (`)`, for an OS answer).
    Bracketed {
        close: u8,
        closed: bool,
    },
    /// DB free text; `m` bytes of "Action: " and `f` bytes of "\nFinal Answer:" matched.
    DbFree {
        m: u8,
        f: u8,
    },
    DbChoice,
    /// Inside the DB final answer's list literal.
    DbList(ListState),
    /// A complete action: only end-of-generation may follow.
    Done,
}

/// A literal and how far into it the automaton is (kept opaque).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LitState {
    lit: Lit,
    pos: u8,
}

/// Where the automaton is inside the DB answer's list literal (kept opaque).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListState(ListPos);

/// The keywords a DB answer item may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    None,
    True,
    False,
}

impl Keyword {
    fn bytes(self) -> &'static [u8] {
        match self {
            Keyword::None => b"None",
            Keyword::True => b"True",
            Keyword::False => b"False",
        }
    }
}

/// Digits an int item may have: every 38-digit integer fits the judge's 128-bit ints.
const MAX_INT_DIGITS: u8 = 38;

/// Bytes a string item may hold after a backslash: the one-character escapes (no octal,
/// `\x`, `\u` or `\N` escapes, whose values could be out of range or unsupported).
const SIMPLE_ESCAPES: &[u8] = b"\\'\"abfnrtv";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListPos {
    /// After `[` or a comma: an item, a space, or `]`.
    ItemOrClose,
    /// After an item: a comma, a space, or `]`.
    AfterItem,
    /// Inside a string item closed by `quote`; `escape` right after a backslash.
    Str {
        quote: u8,
        escape: bool,
    },
    /// After a leading `-`: a digit must follow.
    Sign,
    /// An int item `0`.
    Zero,
    /// An int starting with a non-zero digit, `digits` long.
    Int {
        digits: u8,
    },
    /// After the decimal point, with or without fraction digits (`1.` is a float).
    Fraction,
    /// After `e`/`E`: a sign or a digit must follow.
    ExponentStart,
    /// After the exponent's sign: a digit must follow.
    ExponentSign,
    ExponentDigits,
    /// `pos` bytes of a keyword matched.
    Word {
        word: Keyword,
        pos: u8,
    },
}

impl ListPos {
    /// What may follow a complete item: a comma, a space, or the closing `]`.
    fn after_item(b: u8) -> Option<State> {
        Some(match b {
            b',' => State::DbList(ListState(ListPos::ItemOrClose)),
            b' ' => State::DbList(ListState(ListPos::AfterItem)),
            b']' => State::Done,
            _ => return None,
        })
    }

    fn step(self, b: u8) -> Option<State> {
        let next = match self {
            ListPos::ItemOrClose => match b {
                b' ' => ListPos::ItemOrClose,
                b']' => return Some(State::Done),
                b'\'' | b'"' => ListPos::Str {
                    quote: b,
                    escape: false,
                },
                b'-' => ListPos::Sign,
                b'0' => ListPos::Zero,
                b'1'..=b'9' => ListPos::Int { digits: 1 },
                b'N' => ListPos::Word {
                    word: Keyword::None,
                    pos: 1,
                },
                b'T' => ListPos::Word {
                    word: Keyword::True,
                    pos: 1,
                },
                b'F' => ListPos::Word {
                    word: Keyword::False,
                    pos: 1,
                },
                _ => return None,
            },
            ListPos::AfterItem => return ListPos::after_item(b),
            ListPos::Str { quote, escape: true } => {
                if !SIMPLE_ESCAPES.contains(&b) {
                    return None;
                }
                ListPos::Str { quote, escape: false }
            }
            ListPos::Str { quote, escape: false } => match b {
                _ if b == quote => ListPos::AfterItem,
                b'\\' => ListPos::Str { quote, escape: true },
                // A newline would end the answer line; Python reads `\r` as one too; a NUL
                // byte is not allowed in Python source.
                b'\n' | b'\r' | 0 => return None,
                _ => ListPos::Str { quote, escape: false },
            },
            ListPos::Sign => match b {
                b'0' => ListPos::Zero,
                b'1'..=b'9' => ListPos::Int { digits: 1 },
                _ => return None,
            },
            // Python refuses leading zeros (`01`), so no digit may follow a leading `0`.
            ListPos::Zero => match b {
                b'.' => ListPos::Fraction,
                b'e' | b'E' => ListPos::ExponentStart,
                _ => return ListPos::after_item(b),
            },
            ListPos::Int { digits } => match b {
                b'0'..=b'9' if digits < MAX_INT_DIGITS => ListPos::Int { digits: digits + 1 },
                b'.' => ListPos::Fraction,
                b'e' | b'E' => ListPos::ExponentStart,
                _ => return ListPos::after_item(b),
            },
            ListPos::Fraction => match b {
                b'0'..=b'9' => ListPos::Fraction,
                b'e' | b'E' => ListPos::ExponentStart,
                _ => return ListPos::after_item(b),
            },
            ListPos::ExponentStart => match b {
                b'+' | b'-' => ListPos::ExponentSign,
                b'0'..=b'9' => ListPos::ExponentDigits,
                _ => return None,
            },
            ListPos::ExponentSign => match b {
                b'0'..=b'9' => ListPos::ExponentDigits,
                _ => return None,
            },
            ListPos::ExponentDigits => match b {
                b'0'..=b'9' => ListPos::ExponentDigits,
                _ => return ListPos::after_item(b),
            },
            ListPos::Word { word, pos } => {
                let text = word.bytes();
                if pos as usize == text.len() {
                    return ListPos::after_item(b);
                }
                if text[pos as usize] != b {
                    return None;
                }
                ListPos::Word { word, pos: pos + 1 }
            }
        };
        Some(State::DbList(ListState(next)))
    }

    /// The shortest bytes that close the list from here.
    fn closing_path(self) -> Vec<u8> {
        let mut v = match self {
            ListPos::Str { quote, escape } => {
                if escape {
                    vec![b'\\', quote]
                } else {
                    vec![quote]
                }
            }
            ListPos::Sign | ListPos::ExponentStart | ListPos::ExponentSign => vec![b'0'],
            ListPos::Word { word, pos } => word.bytes()[pos as usize..].to_vec(),
            _ => Vec::new(),
        };
        v.push(b']');
        v
    }
}

fn lit(l: Lit, pos: u8) -> State {
    State::Lit(LitState { lit: l, pos })
}

impl State {
    pub fn start(protocol: Protocol) -> State {
        match protocol {
            Protocol::Os => State::OsStart,
            Protocol::Db => State::DbFree { m: 0, f: 0 },
        }
    }

    /// The state after byte `b`, or `None` if no valid reply continues this way.
    pub fn step(self, b: u8) -> Option<State> {
        Some(match self {
            State::OsStart => match b {
                b' ' => State::OsStart,
                b'T' => lit(Lit::ThinkPrefix, 1),
                b'A' => lit(Lit::ActPrefix, 1),
                _ => return None,
            },
            State::Lit(LitState { lit: l, pos }) => {
                let text = l.bytes();
                if text[pos as usize] != b {
                    return None;
                }
                if pos as usize + 1 == text.len() {
                    l.then()
                } else {
                    lit(l, pos + 1)
                }
            }
            State::Thought { nonempty, act } => match b {
                b'\n' if nonempty && act < 4 => lit(Lit::ActSep, 1),
                b'\n' => return None,
                // After "Act:", ASCII whitespace and any non-ASCII byte (it may belong to a
                // Unicode space, which Python's `\s` matches) keep it open.
                _ if act == 4
                    && (b.is_ascii_whitespace() || b == 0x0b || (0x1c..=0x1f).contains(&b) || !b.is_ascii()) =>
                {
                    State::Thought { nonempty: true, act }
                }
                _ => State::Thought {
                    nonempty: true,
                    act: match_step(THOUGHT_ACT, if act == 4 { 0 } else { act }, b),
                },
            },
            State::ActChoice => match b {
                b'b' => lit(Lit::BashKw, 1),
                b'f' => lit(Lit::FinishKw, 1),
                b'a' => lit(Lit::AnswerKw, 1),
                _ => return None,
            },
            State::Code { tail } => {
                let t = if b == CODE_END[0] {
                    1
                } else if (1..4).contains(&tail) && b == CODE_END[tail as usize] {
                    tail + 1
                } else {
                    0
                };
                if t as usize == CODE_END.len() {
                    State::Done
                } else {
                    State::Code { tail: t }
                }
            }
            State::Bracketed { close, .. } => match b {
                b'\n' => return None,
                _ => State::Bracketed {
                    close,
                    closed: b == close,
                },
            },
            State::DbFree { m, f } => {
                let f = match_step(DB_FINAL_ANSWER, f, b);
                if f as usize == DB_FINAL_ANSWER.len() {
                    // The parser reads the first `\nFinal Answer:` of the reply: one in the
                    // free text would be judged instead of the constrained answer.
                    return None;
                }
                let m = match_step(DB_ACTION, m, b);
                if m as usize == DB_ACTION.len() {
                    State::DbChoice
                } else {
                    State::DbFree { m, f }
                }
            }
            State::DbChoice => match b {
                b'O' => lit(Lit::DbOpKw, 1),
                b'A' => lit(Lit::DbAnsKw, 1),
                _ => return None,
            },
            State::DbList(ListState(pos)) => return pos.step(b),
            State::Done => return None,
        })
    }

    /// Runs all of `bytes`; `None` if any byte is rejected.
    pub fn feed(self, bytes: &[u8]) -> Option<State> {
        bytes.iter().try_fold(self, |s, &b| s.step(b))
    }

    /// Whether the reply may end here.
    pub fn can_end(self) -> bool {
        matches!(self, State::Done | State::Bracketed { closed: true, .. })
    }

    /// Whether nothing but the end may follow.
    pub fn is_done(self) -> bool {
        self == State::Done
    }

    /// The shortest bytes that take this state to an accepting one: closes an open block or
    /// bracket, ends a thought with `Act: finish`, ends DB free text with an empty final
    /// answer. Used when the token budget is about to run out.
    pub fn closing_path(self) -> Vec<u8> {
        let tail: &[u8] = match self {
            State::OsStart | State::ActChoice => b"",
            State::Lit(LitState { lit: l, pos }) => {
                let mut v = l.bytes()[pos as usize..].to_vec();
                v.extend(l.then().closing_path());
                return v;
            }
            State::Thought { nonempty: true, act } if act < 4 => b"\n\nAct: finish",
            State::Thought { .. } => b".\n\nAct: finish",
            State::Code { tail } => return CODE_END[tail as usize..].to_vec(),
            State::Bracketed { close, closed } => return if closed { Vec::new() } else { vec![close] },
            State::DbFree { m, .. } => {
                let mut v = DB_ACTION[m as usize..].to_vec();
                v.extend_from_slice(b"Answer\nFinal Answer: []");
                return v;
            }
            State::DbChoice => b"Answer\nFinal Answer: []",
            State::DbList(ListState(pos)) => return pos.closing_path(),
            State::Done => b"",
        };
        match self {
            State::OsStart => b"Act: finish".to_vec(),
            State::ActChoice => b"finish".to_vec(),
            _ => tail.to_vec(),
        }
    }
}

/// The decoding constraint of one reply.
#[derive(Clone, Debug)]
pub struct Constraint {
    state: State,
}

impl Constraint {
    pub fn new(protocol: Protocol) -> Constraint {
        Constraint {
            state: State::start(protocol),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Advances over a chosen token's bytes; `false` (state unchanged) if they are rejected.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        match self.state.feed(bytes) {
            Some(s) => {
                self.state = s;
                true
            }
            None => false,
        }
    }

    pub fn can_end(&self) -> bool {
        self.state.can_end()
    }

    pub fn is_done(&self) -> bool {
        self.state.is_done()
    }

    /// Whether, with `remaining` tokens left, only the closing path is allowed (see
    /// [`Constraint::allowed_tokens`]): with the state, all the allowed set depends on.
    pub fn closing_forced(&self, remaining: usize) -> bool {
        !self.can_end() && remaining <= self.state.closing_path().len() + CLOSING_MARGIN
    }

    /// The ids in `0..n_vocab` whose bytes (by `token_bytes`) keep the reply valid, plus
    /// `end_ids` when the reply may end here. Tokens without bytes (control tokens) are never
    /// allowed: they would not advance the reply. When no more than `remaining` tokens are
    /// left (plus a margin) and the reply is still open, only tokens along
    /// [`State::closing_path`] are allowed (each advances at least one byte), so a complete
    /// action always fits in the budget.
    pub fn allowed_tokens<'v>(
        &self,
        n_vocab: usize,
        token_bytes: impl Fn(u32) -> &'v [u8],
        end_ids: &[u32],
        remaining: usize,
    ) -> Vec<u32> {
        let closing = self.state.closing_path();
        let forced = self.closing_forced(remaining);
        let mut out: Vec<u32> = (0..n_vocab as u32)
            .filter(|&id| {
                let b = token_bytes(id);
                if b.is_empty() {
                    return false;
                }
                if forced {
                    closing.starts_with(b)
                } else {
                    self.state.feed(b).is_some()
                }
            })
            .collect();
        if self.can_end() {
            out.extend_from_slice(end_ids);
        }
        out
    }
}

/// Allowed-token sets of one vocabulary by automaton state. Within a reply the automaton stays
/// in a few states (free text, code) for most tokens, and the set depends only on the state and
/// [`Constraint::closing_forced`], so each set is computed once (a pass over the whole
/// vocabulary, which took about a sixth of a 135M model's decode) and reused. Bounded: the
/// oldest set goes first.
#[derive(Debug, Default)]
pub struct MaskCache {
    entries: std::collections::VecDeque<(State, bool, Vec<u32>)>,
}

impl MaskCache {
    /// Sets kept (a free-text set of a 49K vocabulary is ~200 KB).
    const CAPACITY: usize = 32;

    /// [`Constraint::allowed_tokens`] for `c` now, from the cache when its state was seen.
    /// One cache must serve one vocabulary (`n_vocab`, `token_bytes` and `end_ids` fixed).
    pub fn allowed<'v>(
        &mut self,
        c: &Constraint,
        n_vocab: usize,
        token_bytes: impl Fn(u32) -> &'v [u8],
        end_ids: &[u32],
        remaining: usize,
    ) -> &[u32] {
        let key = (c.state(), c.closing_forced(remaining));
        let at = match self.entries.iter().position(|(s, f, _)| (*s, *f) == key) {
            Some(at) => at,
            None => {
                if self.entries.len() == Self::CAPACITY {
                    self.entries.pop_front();
                }
                let ids = c.allowed_tokens(n_vocab, token_bytes, end_ids, remaining);
                self.entries.push_back((key.0, key.1, ids));
                self.entries.len() - 1
            }
        };
        &self.entries[at].2
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse_db, parse_os, DbAction, OsAction};
    use super::*;

    fn accepts(p: Protocol, s: &str) -> bool {
        State::start(p).feed(s.as_bytes()).is_some_and(State::can_end)
    }

    #[test]
    fn os_shapes() {
        assert!(accepts(
            Protocol::Os,
            " Think: list\n\nAct: bash\n\n```bash\nls /etc\n```"
        ));
        assert!(accepts(Protocol::Os, "Think: done\n\nAct: finish"));
        assert!(accepts(Protocol::Os, "Think: got it\n\nAct: answer(220)"));
        assert!(accepts(Protocol::Os, "Act: answer(f(x))"));
        assert!(!accepts(Protocol::Os, "Think: x\n\nAct: answer(220"));
        assert!(!accepts(Protocol::Os, "Think: x\n\nAct: bash\n\n```bash\nls"));
        assert!(State::start(Protocol::Os).feed(b"Hello").is_none());
        assert!(State::start(Protocol::Os).feed(b"Think: \n").is_none());
        assert!(State::start(Protocol::Os).feed(b"Act: finish!").is_none());
    }

    #[test]
    fn db_shapes() {
        assert!(accepts(
            Protocol::Db,
            "Let me query.\nAction: Operation\n```sql\nSELECT 1;\n```"
        ));
        assert!(accepts(Protocol::Db, "AAction: Answer\nFinal Answer: [\"a\"]"));
        assert!(!accepts(Protocol::Db, "Action: Answer\nFinal Answer: [\"a\""));
        assert!(State::start(Protocol::Db).feed(b"Action: Run").is_none());
    }

    /// Issue #12 (e): the DB answer must be a list literal the judge can evaluate.
    #[test]
    fn db_answer_is_a_python_list_literal() {
        let answer = |items: &str| format!("Action: Answer\nFinal Answer: [{items}");
        for ok in [
            "]",
            "\"March 19, 1998\"]",
            "'it\\'s', \"a\\\\b\\n\"]",
            "1, -2, 0, 0.5, 1., -0.0e-3, 1E+5, 12345678901234567890123456789012345678]",
            "None, True, False,]",
            " 'é'  ,  \"日本\" ]",
        ] {
            let text = answer(ok);
            assert!(accepts(Protocol::Db, &text), "{text:?}");
            let DbAction::Answer(a) = parse_db(&text) else {
                panic!("{text:?} does not parse to an answer")
            };
            let value = edgeact_runtime::py::eval(&a).unwrap_or_else(|e| panic!("{a:?}: {e}"));
            assert!(matches!(value, edgeact_runtime::py::PyValue::List(_)), "{a:?}");
        }
        // A `\nFinal Answer:` in the free text would be the one the parser reads.
        assert!(State::start(Protocol::Db)
            .feed(b"Hmm.\nFinal Answer: no\nAction: Answer\nFinal Answer: [1]")
            .is_none());
        assert!(accepts(
            Protocol::Db,
            "Final Answer: no\nAction: Answer\nFinal Answer: [1]"
        ));
        // The reply of the finding, and other text that ends in `]` but is no list literal.
        for bad in [
            "::::::::::]A]A]A]A]",
            "\"a\"]]",
            "\"a\"] and more",
            "01]",
            "1 2]",
            "-]",
            "1e]",
            "Nonе]",
            "none]",
            "\"a\\x41\"]",
            "\"a\\\n\"]",
            "'a\"]",
            "123456789012345678901234567890123456789]",
            "[1]]",
            "(1,)]",
        ] {
            assert!(!accepts(Protocol::Db, &answer(bad)), "{bad:?}");
        }
    }

    /// Random walks through the automaton: every accepted string parses to a valid action.
    #[test]
    fn accepted_strings_parse() {
        let alphabet: &[u8] = b" \nTAabcfhiklnorstw:`()[]\"'\\,.-+0159eENuOFpeqSELCT;x";
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for protocol in [Protocol::Os, Protocol::Db] {
            let mut accepted = 0;
            for _ in 0..3000 {
                let mut s = State::start(protocol);
                let mut text = Vec::new();
                for _ in 0..200 {
                    if s.can_end() && rnd() % 4 == 0 {
                        break;
                    }
                    // Free DB text rarely spells "Action: " by chance; sometimes write it whole.
                    if matches!(s, State::DbFree { .. }) && rnd() % 8 == 0 {
                        if let Some(n) = s.feed(b"Action: ") {
                            s = n;
                            text.extend_from_slice(b"Action: ");
                            continue;
                        }
                    }
                    // Nor does a thought spell "Act:"; sometimes write it, with spaces.
                    if matches!(s, State::Thought { .. }) && rnd() % 16 == 0 {
                        if let Some(n) = s.feed(b" Act: ") {
                            s = n;
                            text.extend_from_slice(b" Act: ");
                            continue;
                        }
                    }
                    // Prefer bytes that keep the string alive, as a masked sampler would.
                    let ok: Vec<u8> = alphabet.iter().copied().filter(|&b| s.step(b).is_some()).collect();
                    let lits: Vec<u8> = (0..=255u8).filter(|&b| s.step(b).is_some()).collect();
                    let pool = if ok.is_empty() || rnd() % 3 == 0 { &lits } else { &ok };
                    if pool.is_empty() {
                        break;
                    }
                    let b = pool[(rnd() % pool.len() as u64) as usize];
                    s = s.step(b).unwrap_or(s);
                    text.push(b);
                }
                if !s.can_end() {
                    continue;
                }
                accepted += 1;
                let t = String::from_utf8_lossy(&text);
                match protocol {
                    Protocol::Os => assert!(parse_os(&t).action.is_some(), "{t:?}"),
                    Protocol::Db => {
                        let a = parse_db(&t);
                        assert!(
                            matches!(a, DbAction::Operation(_) | DbAction::Answer(_)),
                            "{t:?} -> {a:?}"
                        );
                        if let DbAction::Answer(answer) = a {
                            let v = edgeact_runtime::py::eval(&answer);
                            assert!(
                                matches!(v, Ok(edgeact_runtime::py::PyValue::List(_))),
                                "{answer:?} -> {v:?}"
                            );
                        }
                    }
                }
                if protocol == Protocol::Os {
                    if let Some(OsAction::Bash(code)) = parse_os(&t).action {
                        assert!(!t.is_empty() && t.contains(&format!("```bash\n{code}\n```")));
                    }
                }
            }
            assert!(accepted > 100, "{protocol:?}: only {accepted} accepted walks");
        }
    }

    #[test]
    fn an_act_label_inside_a_thought_cannot_swallow_the_action_line() {
        // `Act:\s*(.+)` would match from the thought's `Act:` across the newlines: no action.
        for reply in [
            "Think: go Act:\n\nAct: finish",
            "Think: use Act: \t\n\nAct: finish",
            "Think: Act:\u{a0}\n\nAct: finish",
        ] {
            assert!(parse_os(reply).action.is_none(), "{reply:?}");
            assert!(!accepts(Protocol::Os, reply), "{reply:?}");
        }
        // Text after it on the line keeps the real action line a match of its own.
        let ok = "Think: I will Act: now\n\nAct: finish";
        assert!(parse_os(ok).action.is_some() && accepts(Protocol::Os, ok));
        // The closing path from there is valid.
        let s = State::start(Protocol::Os).feed(b"Think: x Act: ").unwrap();
        let closed = s.feed(&s.closing_path()).unwrap();
        assert!(closed.can_end());
    }

    /// [`CLOSING_MARGIN`] bounds how much one token lengthens the closing path, on random
    /// walks of both protocols with tokens of 1 to 6 bytes.
    #[test]
    fn closing_paths_grow_by_at_most_the_margin() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: &[u8] = b" \nTAabcfhiklnorstw:`()[]\"'\\,.-+0159eENuOFpeqSELCT;x";
        let mut worst = 0;
        for protocol in [Protocol::Os, Protocol::Db] {
            for _ in 0..2000 {
                let mut s = State::start(protocol);
                for _ in 0..60 {
                    // A token of 1 to 6 bytes the reply admits, mostly from the alphabet.
                    let mut token = Vec::new();
                    let mut at = s;
                    for _ in 0..1 + rnd() % 6 {
                        let ok: Vec<u8> = alphabet.iter().copied().filter(|&b| at.step(b).is_some()).collect();
                        let any: Vec<u8> = (0..=255u8).filter(|&b| at.step(b).is_some()).collect();
                        let pool = if ok.is_empty() || rnd() % 4 == 0 { &any } else { &ok };
                        let Some(&b) = pool.get((rnd() % pool.len().max(1) as u64) as usize) else {
                            break;
                        };
                        at = at.step(b).unwrap();
                        token.push(b);
                    }
                    let Some(next) = s.feed(&token).filter(|_| !token.is_empty()) else {
                        break;
                    };
                    let grew = next.closing_path().len().saturating_sub(s.closing_path().len());
                    assert!(
                        grew <= CLOSING_MARGIN,
                        "{s:?} + {:?}: +{grew}",
                        String::from_utf8_lossy(&token)
                    );
                    worst = worst.max(grew);
                    s = next;
                }
            }
        }
        assert!(worst >= 9, "the walks never reached the worst cases: {worst}");
    }

    #[test]
    fn closing_paths_complete_the_reply() {
        for (p, prefix) in [
            (Protocol::Os, ""),
            (Protocol::Os, "Thi"),
            (Protocol::Os, "Think: "),
            (Protocol::Os, "Think: hmm"),
            (Protocol::Os, "Think: hmm\n\nAct: bash\n\n```bash\nls\n`"),
            (Protocol::Os, "Act: answer(4"),
            (Protocol::Db, "Let me see. Acti"),
            (Protocol::Db, "Action: Operation\n```sql\nSELECT"),
            (Protocol::Db, "Action: Answer\nFinal Answer: [\"x\""),
            (Protocol::Db, "Action: Answer\nFinal Answer: [\"x"),
            (Protocol::Db, "Action: Answer\nFinal Answer: ['x\\"),
            (Protocol::Db, "Action: Answer\nFinal Answer: [1, -"),
            (Protocol::Db, "Action: Answer\nFinal Answer: [1.5e"),
            (Protocol::Db, "Action: Answer\nFinal Answer: [1.5e+"),
            (Protocol::Db, "Action: Answer\nFinal Answer: [Fa"),
            (Protocol::Db, "Action: Answer\nFinal Answer: [None, "),
        ] {
            let s = State::start(p).feed(prefix.as_bytes()).unwrap();
            let end = s.feed(&s.closing_path()).unwrap();
            assert!(end.can_end(), "{prefix:?}");
            let text = format!("{prefix}{}", String::from_utf8_lossy(&s.closing_path()));
            match p {
                Protocol::Os => assert!(parse_os(&text).action.is_some(), "{text:?}"),
                Protocol::Db => match parse_db(&text) {
                    DbAction::Operation(_) => {}
                    DbAction::Answer(a) => assert!(edgeact_runtime::py::eval(&a).is_ok(), "{text:?}"),
                    other => panic!("{text:?} -> {other:?}"),
                },
            }
        }
    }

    #[test]
    fn token_mask() {
        let vocab: Vec<&[u8]> = vec![b"", b" Think", b":", b" ", b"Hello", b"Act", b"\n", b"x"];
        let c = Constraint::new(Protocol::Os);
        assert_eq!(
            c.allowed_tokens(vocab.len(), |i| vocab[i as usize], &[0], 100),
            vec![1, 3, 5]
        );
        // Budget nearly spent: only the way to `Act: finish` is open.
        assert_eq!(c.allowed_tokens(vocab.len(), |i| vocab[i as usize], &[0], 19), vec![5]);
        let mut c = Constraint::new(Protocol::Os);
        assert!(c.advance(b"Act: answer(x)"));
        assert!(c.can_end());
        let allowed = c.allowed_tokens(vocab.len(), |i| vocab[i as usize], &[0], 100);
        assert!(allowed.contains(&0) && allowed.contains(&7) && !allowed.contains(&6));
    }

    #[test]
    fn the_mask_cache_gives_the_uncached_sets() {
        let vocab: Vec<&[u8]> = vec![
            b"", b" Think", b":", b" ", b"Hello", b"Act", b"\n", b"x", b"```", b"bash",
        ];
        let bytes = |i: u32| vocab[i as usize];
        let mut cache = MaskCache::default();
        // Every state along a whole reply, each with a roomy and a nearly spent budget, twice
        // over (the second round from the cache), and the sets must equal the uncached ones.
        let reply = b" Think: list\n\nAct: bash\n\n```bash\nls /etc\n```";
        for round in 0..2 {
            let mut c = Constraint::new(Protocol::Os);
            for (i, &b) in reply.iter().enumerate() {
                for remaining in [1000, 30, 3] {
                    let want = c.allowed_tokens(vocab.len(), bytes, &[0], remaining);
                    let got = cache.allowed(&c, vocab.len(), bytes, &[0], remaining);
                    assert_eq!(got, want.as_slice(), "round {round}, byte {i}, remaining {remaining}");
                }
                assert!(c.advance(&[b]));
            }
        }
        assert!(cache.entries.len() <= MaskCache::CAPACITY);
    }
}
