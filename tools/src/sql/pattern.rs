//! `LIKE` and `GLOB` for the embedded SQLite backend, replacing SQLite's built-ins so that a
//! statement deadline can stop them.
//!
//! SQLite evaluates one `x LIKE p` as a single VM step: its matcher is O(len(x) × len(p)) in the
//! worst case and checks neither the progress handler nor `sqlite3_interrupt`, so one `LIKE` on a
//! 16 MiB value ran for minutes past the statement timeout. This matcher has the same semantics
//! (SQLite's UTF-8 reading, ASCII-only case folding for `LIKE`, `ESCAPE`, `GLOB` classes, text
//! ending at the first NUL as `sqlite3_value_text` gives it) and polls a flag that the statement
//! watchdog raises, so it stops within microseconds of the deadline. Its cost is also bounded
//! without the flag: a greedy match that backtracks only to the last `%`/`*` is at most
//! O(len(x) × len(p)), and the pattern length is capped.

use std::sync::atomic::{AtomicBool, Ordering};

/// Longest `LIKE`/`GLOB` pattern, in bytes (SQLite's default is 50 000). AgentBench patterns are
/// a few words (`'%Smith%'`); the cap keeps one comparison's worst case small.
pub const MAX_PATTERN_BYTES: usize = 1000;

/// Matching steps between two looks at the interrupt flag.
const STEPS_PER_INTERRUPT_CHECK: u32 = 4096;

/// Why a match did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// The pattern is longer than [`MAX_PATTERN_BYTES`] (SQLite's own message).
    TooComplex,
    /// The `ESCAPE` operand is not exactly one character (SQLite's own message).
    BadEscape,
    /// The statement watchdog fired while matching.
    Interrupted,
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PatternError::TooComplex => "LIKE or GLOB pattern too complex",
            PatternError::BadEscape => "ESCAPE expression must be a single character",
            PatternError::Interrupted => "interrupted",
        })
    }
}

/// Which operator: they differ in wildcards, case folding and classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `%`, `_`, ASCII case-insensitive, optional `ESCAPE`.
    Like,
    /// `*`, `?`, `[...]` classes, case-sensitive.
    Glob,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// `%` or `*`: any run of characters.
    AnyRun,
    /// `_` or `?`: exactly one character.
    AnyOne,
    /// One literal character (case-folded for `LIKE` when ASCII).
    Literal(u32),
    /// A `GLOB` class `[...]`.
    Class { items: Vec<(u32, u32)>, inverted: bool },
    /// A pattern that SQLite can never match (an escape or class cut off by the pattern's end).
    Never,
}

/// Reads one character the way SQLite's `sqlite3Utf8Read` does: a lead byte takes every
/// following continuation byte, and overlong, surrogate or non-characters become U+FFFD. Invalid
/// UTF-8 is read, never rejected, as SQLite reads it.
fn read_char(bytes: &[u8], pos: usize) -> (u32, usize) {
    let lead = bytes[pos];
    if lead < 0xC0 {
        return (u32::from(lead), 1);
    }
    let mut c = match lead {
        0xC0..=0xDF => u32::from(lead - 0xC0),
        0xE0..=0xEF => u32::from(lead - 0xE0),
        0xF0..=0xF7 => u32::from(lead - 0xF0),
        0xF8..=0xFB => u32::from(lead - 0xF8),
        0xFC..=0xFD => u32::from(lead - 0xFC),
        _ => 0,
    };
    let mut len = 1;
    while pos + len < bytes.len() && bytes[pos + len] & 0xC0 == 0x80 {
        c = c.wrapping_shl(6).wrapping_add(u32::from(bytes[pos + len] & 0x3F));
        len += 1;
    }
    if c < 0x80 || (c & 0xFFFF_F800) == 0xD800 || (c & 0xFFFF_FFFE) == 0xFFFE {
        c = 0xFFFD;
    }
    (c, len)
}

/// The bytes SQLite's C string would hold: everything before the first NUL.
fn c_string(bytes: &[u8]) -> &[u8] {
    bytes.iter().position(|&b| b == 0).map_or(bytes, |nul| &bytes[..nul])
}

fn chars(bytes: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let (c, len) = read_char(bytes, pos);
        out.push(c);
        pos += len;
    }
    out
}

fn tokenize(pattern: &[u8], dialect: Dialect, escape: Option<u32>) -> Vec<Token> {
    let pat = chars(pattern);
    let (mut any_run, mut any_one) = match dialect {
        Dialect::Like => (Some(u32::from(b'%')), Some(u32::from(b'_'))),
        Dialect::Glob => (Some(u32::from(b'*')), Some(u32::from(b'?'))),
    };
    // As SQLite does: an ESCAPE equal to a wildcard turns that wildcard off.
    if escape.is_some() && escape == any_run {
        any_run = None;
    }
    if escape.is_some() && escape == any_one {
        any_one = None;
    }
    let mut tokens = Vec::with_capacity(pat.len());
    let mut i = 0;
    while i < pat.len() {
        let c = pat[i];
        i += 1;
        if Some(c) == any_run {
            tokens.push(Token::AnyRun);
        } else if dialect == Dialect::Like && Some(c) == escape {
            match pat.get(i) {
                Some(&lit) => {
                    tokens.push(Token::Literal(lit));
                    i += 1;
                }
                None => return vec![Token::Never],
            }
        } else if Some(c) == any_one {
            tokens.push(Token::AnyOne);
        } else if dialect == Dialect::Glob && c == u32::from(b'[') {
            match parse_class(&pat, &mut i) {
                Some(class) => tokens.push(class),
                None => return vec![Token::Never],
            }
        } else {
            tokens.push(Token::Literal(c));
        }
    }
    tokens
}

/// Parses a `GLOB` class after its `[` (SQLite's rules: `^` first inverts, `]` first is a
/// member, `a-z` is a range unless `-` is last); `None` when no `]` closes it.
fn parse_class(pat: &[u32], i: &mut usize) -> Option<Token> {
    fn next(pat: &[u32], i: &mut usize) -> Option<u32> {
        let c = pat.get(*i).copied();
        *i += 1;
        c
    }
    let close = u32::from(b']');
    let mut items = Vec::new();
    let mut inverted = false;
    let mut c = next(pat, i)?;
    if c == u32::from(b'^') {
        inverted = true;
        c = next(pat, i)?;
    }
    if c == close {
        items.push((close, close));
        c = next(pat, i)?;
    }
    let mut prior: Option<u32> = None;
    while c != close {
        let following = pat.get(*i).copied();
        match prior {
            Some(lo) if c == u32::from(b'-') && following.is_some_and(|f| f != close) => {
                let hi = next(pat, i)?;
                items.push((lo, hi));
                prior = None;
            }
            _ => {
                items.push((c, c));
                prior = Some(c);
            }
        }
        c = next(pat, i)?;
    }
    Some(Token::Class { items, inverted })
}

fn fold(c: u32) -> u32 {
    if (u32::from(b'A')..=u32::from(b'Z')).contains(&c) {
        c + 32
    } else {
        c
    }
}

fn token_matches(token: &Token, c: u32, dialect: Dialect) -> bool {
    match token {
        Token::AnyOne => true,
        Token::Literal(l) => *l == c || (dialect == Dialect::Like && *l < 0x80 && c < 0x80 && fold(*l) == fold(c)),
        Token::Class { items, inverted } => items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *inverted,
        Token::AnyRun | Token::Never => false,
    }
}

/// `text LIKE pattern [ESCAPE escape]` or `text GLOB pattern`, as SQLite evaluates it.
/// `escape` is the raw `ESCAPE` operand (only for `LIKE`). `interrupted` is polled while
/// matching; when it is raised the match stops with [`PatternError::Interrupted`].
pub fn pattern_match(
    dialect: Dialect,
    pattern: &[u8],
    text: &[u8],
    escape: Option<&[u8]>,
    interrupted: &AtomicBool,
) -> Result<bool, PatternError> {
    // SQLite measures the pattern's bytes before anything else.
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(PatternError::TooComplex);
    }
    let escape = match escape {
        None => None,
        Some(e) => {
            let e = chars(c_string(e));
            if e.len() != 1 {
                return Err(PatternError::BadEscape);
            }
            Some(e[0])
        }
    };
    let tokens = tokenize(c_string(pattern), dialect, escape);
    let text = c_string(text);

    // Greedy match, backtracking only to the most recent run wildcard: each text position is
    // retried at most once per wildcard, so the work is at most len(text) × len(tokens).
    let (mut tok, mut pos) = (0usize, 0usize);
    let mut last_run: Option<(usize, usize)> = None;
    let mut steps: u32 = 0;
    while pos < text.len() {
        steps = steps.wrapping_add(1);
        if steps.is_multiple_of(STEPS_PER_INTERRUPT_CHECK) && interrupted.load(Ordering::Relaxed) {
            return Err(PatternError::Interrupted);
        }
        let (c, len) = read_char(text, pos);
        match tokens.get(tok) {
            Some(Token::AnyRun) => {
                last_run = Some((tok, pos));
                tok += 1;
            }
            Some(t) if token_matches(t, c, dialect) => {
                tok += 1;
                pos += len;
            }
            _ => match last_run {
                Some((run_tok, run_pos)) => {
                    let (_, skipped) = read_char(text, run_pos);
                    last_run = Some((run_tok, run_pos + skipped));
                    tok = run_tok + 1;
                    pos = run_pos + skipped;
                }
                None => return Ok(false),
            },
        }
    }
    Ok(tokens[tok..].iter().all(|t| *t == Token::AnyRun))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(p: &str, t: &str) -> bool {
        pattern_match(Dialect::Like, p.as_bytes(), t.as_bytes(), None, &AtomicBool::new(false)).unwrap()
    }

    fn like_esc(p: &str, t: &str, e: &str) -> Result<bool, PatternError> {
        pattern_match(
            Dialect::Like,
            p.as_bytes(),
            t.as_bytes(),
            Some(e.as_bytes()),
            &AtomicBool::new(false),
        )
    }

    fn glob(p: &str, t: &str) -> bool {
        pattern_match(Dialect::Glob, p.as_bytes(), t.as_bytes(), None, &AtomicBool::new(false)).unwrap()
    }

    #[test]
    fn like_semantics() {
        assert!(like("%smith%", "John SMITH jr"));
        assert!(like("a_c", "abc") && !like("a_c", "abbc"));
        assert!(like("", "") && !like("", "x") && like("%", ""));
        assert!(like("%a%b%c", "xxaxxbxxc") && !like("%a%b%c", "xxaxxcxxb"));
        assert!(like("ü%", "ü123") && !like("Ü%", "ü123"), "only ASCII folds");
        assert!(like("_", "é"), "_ takes one UTF-8 character");
        assert!(like("a%", "a\0zzz") && !like("%z%", "a\0zzz"), "text ends at NUL");
        assert!(like("%", "") && like("%%", "x") && !like("_", ""));
    }

    #[test]
    fn like_escape() {
        assert_eq!(like_esc("10!%", "10%", "!"), Ok(true));
        assert_eq!(like_esc("10!%", "100", "!"), Ok(false));
        assert_eq!(like_esc("a!", "a", "!"), Ok(false), "escape at the end never matches");
        assert_eq!(
            like_esc("a%", "a%", "%"),
            Ok(false),
            "ESCAPE '%' makes % literal-escaping"
        );
        assert_eq!(like_esc("a%%", "a%", "%"), Ok(true));
        assert_eq!(like_esc("x", "x", "ab"), Err(PatternError::BadEscape));
        assert_eq!(like_esc("x", "x", ""), Err(PatternError::BadEscape));
    }

    #[test]
    fn glob_semantics() {
        assert!(glob("*.txt", "a.txt") && !glob("*.TXT", "a.txt"));
        assert!(glob("[a-c]x", "bx") && !glob("[a-c]x", "dx"));
        assert!(glob("[^a-c]x", "dx") && !glob("[^a-c]x", "ax"));
        assert!(glob("[]]", "]") && glob("[a-]", "-") && glob("[a-]", "a"));
        assert!(!glob("[abc", "a"), "unterminated class never matches");
        assert!(glob("?", "é") && glob("*[0-9]", "abc7"));
    }

    #[test]
    fn long_patterns_are_refused() {
        let p = "%".repeat(MAX_PATTERN_BYTES + 1);
        let r = pattern_match(Dialect::Like, p.as_bytes(), b"x", None, &AtomicBool::new(false));
        assert_eq!(r, Err(PatternError::TooComplex));
        assert_eq!(PatternError::TooComplex.to_string(), "LIKE or GLOB pattern too complex");
    }

    #[test]
    fn a_raised_flag_stops_a_long_match() {
        let text = vec![b'a'; 1 << 20];
        let r = pattern_match(Dialect::Like, b"%aaaaaaaab", &text, None, &AtomicBool::new(true));
        assert_eq!(r, Err(PatternError::Interrupted));
    }
}
