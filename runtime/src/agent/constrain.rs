//! Protocol-constrained decoding: a byte-level prefix automaton of the reply shapes that the
//! AgentBench parsers accept, and the token mask it induces over a vocabulary.
//!
//! Shapes (leading spaces allowed, since SentencePiece pieces start with one):
//! - OS: `Think: <one line>\n\nAct: bash\n\n```bash\n<code>\n```` | `… Act: finish` |
//!   `… Act: answer(<text ending in ')'>)`, the `Think:` line optional.
//! - DB: `<free text>Action: Operation\n```sql\n<sql>\n```` |
//!   `<free text>Action: Answer\nFinal Answer: [<text ending in ']'>`, where the free text ends
//!   at its first `Action: ` (the one the parser reads).
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
            Lit::ThinkPrefix => State::Thought { nonempty: false },
            Lit::ActPrefix | Lit::ActSep => State::ActChoice,
            Lit::BashKw | Lit::DbOpKw => State::Code { tail: 0 },
            Lit::FinishKw => State::Done,
            Lit::AnswerKw => State::Bracketed {
                close: b')',
                closed: false,
            },
            Lit::DbAnsKw => State::Bracketed {
                close: b']',
                closed: false,
            },
        }
    }
}

const DB_ACTION: &[u8] = b"Action: ";

/// Extra tokens kept in reserve before forcing the closing path: one byte of free text can
/// lengthen the path by at most a restarted `Action: ` (8 bytes), so forcing this early
/// always leaves enough tokens (each forced token advances the path by at least one byte).
const CLOSING_MARGIN: usize = DB_ACTION.len();
const CODE_END: &[u8] = b"\n```";

/// A state of the reply automaton.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    OsStart,
    /// `pos` bytes of the literal matched.
    Lit(LitState),
    Thought {
        nonempty: bool,
    },
    ActChoice,
    /// Inside a code block; `tail` bytes of "\n```" matched.
    Code {
        tail: u8,
    },
    /// One line that must end with `close` (`)` for an OS answer, `]` for a DB answer).
    Bracketed {
        close: u8,
        closed: bool,
    },
    /// DB free text; `m` bytes of "Action: " matched.
    DbFree {
        m: u8,
    },
    DbChoice,
    /// A complete action: only end-of-generation may follow.
    Done,
}

/// A literal and how far into it the automaton is (kept opaque).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LitState {
    lit: Lit,
    pos: u8,
}

fn lit(l: Lit, pos: u8) -> State {
    State::Lit(LitState { lit: l, pos })
}

impl State {
    pub fn start(protocol: Protocol) -> State {
        match protocol {
            Protocol::Os => State::OsStart,
            Protocol::Db => State::DbFree { m: 0 },
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
            State::Thought { nonempty } => match b {
                b'\n' if nonempty => lit(Lit::ActSep, 1),
                b'\n' => return None,
                _ => State::Thought { nonempty: true },
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
            State::DbFree { m } => {
                let m2 = if b == DB_ACTION[m as usize] {
                    m + 1
                } else if b == DB_ACTION[0] {
                    1
                } else {
                    0
                };
                if m2 as usize == DB_ACTION.len() {
                    State::DbChoice
                } else {
                    State::DbFree { m: m2 }
                }
            }
            State::DbChoice => match b {
                b'O' => lit(Lit::DbOpKw, 1),
                b'A' => lit(Lit::DbAnsKw, 1),
                _ => return None,
            },
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
            State::Thought { nonempty: true } => b"\n\nAct: finish",
            State::Thought { nonempty: false } => b".\n\nAct: finish",
            State::Code { tail } => return CODE_END[tail as usize..].to_vec(),
            State::Bracketed { close, closed } => return if closed { Vec::new() } else { vec![close] },
            State::DbFree { m } => {
                let mut v = DB_ACTION[m as usize..].to_vec();
                v.extend_from_slice(b"Answer\nFinal Answer: []");
                return v;
            }
            State::DbChoice => b"Answer\nFinal Answer: []",
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
        let forced = !self.can_end() && remaining <= closing.len() + CLOSING_MARGIN;
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

    /// Random walks through the automaton: every accepted string parses to a valid action.
    #[test]
    fn accepted_strings_parse() {
        let alphabet: &[u8] = b" \nTAabcfhiklnorstw:`()[]\"OFpeqSELCT;x";
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
                        )
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
        ] {
            let s = State::start(p).feed(prefix.as_bytes()).unwrap();
            let end = s.feed(&s.closing_path()).unwrap();
            assert!(end.can_end(), "{prefix:?}");
            let text = format!("{prefix}{}", String::from_utf8_lossy(&s.closing_path()));
            match p {
                Protocol::Os => assert!(parse_os(&text).action.is_some(), "{text:?}"),
                Protocol::Db => assert!(matches!(parse_db(&text), DbAction::Operation(_) | DbAction::Answer(_))),
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
}
