//! A safe `eval` of the Python expressions DB answers are written in, so that the judge
//! accepts what AgentBench's `eval(answer)` accepted, without ever running Python.
//!
//! Supported: `None`/`True`/`False`; ints (decimal, `0x`/`0o`/`0b`, underscores) up to 128
//! bits; floats (`1.`, `.5`, exponents); str and bytes literals with the `r`/`u`/`b`/`rb`
//! prefixes, escapes, triple quotes and implicit concatenation (f-strings without
//! replacement fields); tuples, lists, sets and dicts; unary `+ - ~ not`; binary
//! `+ - * / // % ** << >> & | ^` with Python's semantics (floor division and modulo by the
//! divisor's sign, true division giving floats, sequence concatenation and repetition, set
//! and dict operators); comparisons (chained, `in`/`not in`); `and`/`or` (short-circuit,
//! returning an operand); `x if c else y`; comments and line continuations.
//!
//! Names other than the three constants are a `NameError` (bare text such as `none` or
//! `March 19, 1998` fails in Python too). Not supported, reported as
//! [`EvalErrorKind::Unsupported`]: calls (builtins such as `len`), subscripts, attributes,
//! comprehensions, `lambda`, `is`, `...`, `:=`, complex numbers, `\N{…}` escapes, lone surrogates,
//! `%`-formatting. The judge treats every error as the harness treated an exception from
//! `eval`: the answer is then compared as raw text.
//!
//! Limits against hostile answers (each a clear [`EvalErrorKind::Limit`] or `Overflow`
//! error, never a hang): [`MAX_SOURCE_CHARS`] characters, [`MAX_DEPTH`] levels of nesting,
//! 128-bit ints (`2**10**10` overflows at once instead of computing 10^10 bits), and
//! [`MAX_WORK`] items and bytes built by operators (`'a' * 10**12` is refused before it
//! allocates).

use super::{distinct_items, ItemIndex, Number, PyValue};
use std::cmp::Ordering;
use std::collections::HashMap;

/// The longest source text evaluated, in characters (model answers are far shorter).
pub const MAX_SOURCE_CHARS: usize = 100_000;
/// The deepest nesting of brackets and unary/power operators (Python's parser allows ~200).
pub const MAX_DEPTH: usize = 100;
/// The most items plus string/bytes length that operators may build in one evaluation.
pub const MAX_WORK: usize = 1 << 24;

/// What went wrong, named after the Python exception where there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalErrorKind {
    Syntax,
    Name,
    Type,
    Value,
    ZeroDivision,
    Overflow,
    /// Valid Python that this evaluator does not implement.
    Unsupported,
    /// A resource limit of this evaluator (source length, nesting, work).
    Limit,
}

impl EvalErrorKind {
    fn label(self) -> &'static str {
        match self {
            EvalErrorKind::Syntax => "SyntaxError",
            EvalErrorKind::Name => "NameError",
            EvalErrorKind::Type => "TypeError",
            EvalErrorKind::Value => "ValueError",
            EvalErrorKind::ZeroDivision => "ZeroDivisionError",
            EvalErrorKind::Overflow => "OverflowError",
            EvalErrorKind::Unsupported => "not supported by edgeact's evaluator",
            EvalErrorKind::Limit => "evaluation limit exceeded",
        }
    }
}

/// An `eval` failure: where Python raises, or where this evaluator stops.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", .kind.label(), .message)]
pub struct EvalError {
    pub kind: EvalErrorKind,
    pub message: String,
}

type Result<T> = std::result::Result<T, EvalError>;

fn fail<T>(kind: EvalErrorKind, message: impl Into<String>) -> Result<T> {
    Err(EvalError {
        kind,
        message: message.into(),
    })
}

use EvalErrorKind as K;

/// Python's `eval(src)` for the subset described in the module documentation. Leading
/// spaces and tabs are skipped, as `eval` skips them.
pub fn eval(src: &str) -> Result<PyValue> {
    if src.chars().nth(MAX_SOURCE_CHARS).is_some() {
        return fail(
            K::Limit,
            format!("expression longer than {MAX_SOURCE_CHARS} characters"),
        );
    }
    if src.contains('\0') {
        return fail(K::Syntax, "source code cannot contain null bytes");
    }
    let chars: Vec<char> = src.trim_start_matches([' ', '\t']).chars().collect();
    let tokens = Lexer {
        s: &chars,
        i: 0,
        depth: 0,
        out: Vec::new(),
    }
    .run()?;
    let node = Parser {
        toks: tokens,
        pos: 0,
        depth: 0,
    }
    .eval_input()?;
    Machine { work: 0 }.eval(&node)
}

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Name(String),
    Op(&'static str),
    Newline,
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    /// Character offset in the source, for error messages.
    at: usize,
}

/// Operator and delimiter tokens, longest first so that `**` wins over `*`.
const OPERATORS: &[&str] = &[
    "...", ":=", "**", "//", "<<", ">>", "<=", ">=", "==", "!=", "+", "-", "*", "/", "%", "@", "~", "&", "|", "^", "<",
    ">", "(", ")", "[", "]", "{", "}", ",", ":", ".", ";", "=",
];

const STRING_PREFIXES: &[&str] = &["r", "u", "b", "f", "br", "rb", "fr", "rf"];

struct Lexer<'a> {
    s: &'a [char],
    i: usize,
    /// Open brackets: newlines inside them are not significant.
    depth: usize,
    out: Vec<Token>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.s.get(self.i + ahead).copied()
    }

    fn push(&mut self, tok: Tok, at: usize) {
        self.out.push(Token { tok, at });
    }

    fn run(mut self) -> Result<Vec<Token>> {
        // Python refuses indented lines (`eval` strips only the leading spaces and tabs of
        // its input, which the caller did): spaces or tabs at a line start, then anything
        // but a comment or the line's end.
        let mut line_start = true;
        let mut indented = false;
        let unexpected_indent = || fail(K::Syntax, "unexpected indent");
        while let Some(c) = self.peek() {
            let at = self.i;
            if !matches!(c, ' ' | '\t' | '\x0c' | '#' | '\n' | '\r') {
                if indented {
                    return unexpected_indent();
                }
                line_start = false;
            }
            match c {
                ' ' | '\t' => {
                    indented |= line_start;
                    self.i += 1;
                }
                // A form feed resets the indentation count.
                '\x0c' => {
                    indented = false;
                    self.i += 1;
                }
                '#' => {
                    indented = false;
                    while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
                        self.i += 1;
                    }
                }
                '\\' => {
                    self.i += 1;
                    if !self.newline() {
                        return fail(K::Syntax, "unexpected character after line continuation character");
                    }
                }
                '\n' | '\r' => {
                    self.newline();
                    if self.depth == 0 {
                        line_start = true;
                        indented = false;
                    }
                    let after_token = self.out.last().is_some_and(|t| t.tok != Tok::Newline);
                    if self.depth == 0 && after_token {
                        self.push(Tok::Newline, at);
                    }
                }
                '\'' | '"' => {
                    let tok = self.string("")?;
                    self.push(tok, at);
                }
                c if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) => {
                    let tok = self.number()?;
                    self.push(tok, at);
                }
                c if c == '_' || c.is_alphabetic() => {
                    while self.peek().is_some_and(|c| c == '_' || c.is_alphanumeric()) {
                        self.i += 1;
                    }
                    let word: String = self.s[at..self.i].iter().collect();
                    let is_prefix = STRING_PREFIXES.contains(&word.to_ascii_lowercase().as_str());
                    if is_prefix && matches!(self.peek(), Some('\'' | '"')) {
                        let tok = self.string(&word)?;
                        self.push(tok, at);
                    } else {
                        self.push(Tok::Name(word), at);
                    }
                }
                _ => {
                    let Some(op) = OPERATORS
                        .iter()
                        .copied()
                        .find(|op| op.chars().enumerate().all(|(k, oc)| self.peek_at(k) == Some(oc)))
                    else {
                        return fail(K::Syntax, format!("invalid character {c:?} at offset {at}"));
                    };
                    self.i += op.chars().count();
                    // Inside brackets, `(x := 1)` is valid Python (its value is 1); unbracketed
                    // at the top it is a SyntaxError, reported by the parser.
                    if op == ":=" && self.depth > 0 {
                        return fail(K::Unsupported, "assignment expressions (':=')");
                    }
                    match op {
                        "(" | "[" | "{" => self.depth += 1,
                        ")" | "]" | "}" => self.depth = self.depth.saturating_sub(1),
                        _ => {}
                    }
                    self.push(Tok::Op(op), at);
                }
            }
        }
        if indented {
            return unexpected_indent();
        }
        let end = self.s.len();
        self.push(Tok::End, end);
        Ok(self.out)
    }

    /// Consumes one newline (`\n`, `\r\n` or `\r`, which Python's tokenizer all reads as a
    /// newline); `false` if there is none here.
    fn newline(&mut self) -> bool {
        match self.peek() {
            Some('\n') => self.i += 1,
            Some('\r') => {
                self.i += 1;
                if self.peek() == Some('\n') {
                    self.i += 1;
                }
            }
            _ => return false,
        }
        true
    }

    /// Digits of `radix`, each optionally preceded by one underscore (Python's `digitpart`);
    /// the first without one unless `leading_underscore` (as after `0x`).
    fn digits(&mut self, radix: u32, leading_underscore: bool, out: &mut String) -> Result<()> {
        let mut first = true;
        loop {
            let underscore = self.peek() == Some('_') && (leading_underscore || !first);
            let d = self.peek_at(underscore as usize);
            match d.filter(|d| d.is_digit(radix)) {
                Some(d) => {
                    out.push(d);
                    self.i += 1 + underscore as usize;
                    first = false;
                }
                None if underscore || first => {
                    return fail(K::Syntax, format!("invalid number literal at offset {}", self.i))
                }
                None => return Ok(()),
            }
        }
    }

    fn number(&mut self) -> Result<Tok> {
        let start = self.i;
        let radix = match (self.peek(), self.peek_at(1).map(|c| c.to_ascii_lowercase())) {
            (Some('0'), Some('x')) => 16,
            (Some('0'), Some('o')) => 8,
            (Some('0'), Some('b')) => 2,
            _ => 10,
        };
        let mut text = String::new();
        let tok = if radix != 10 {
            self.i += 2;
            self.digits(radix, true, &mut text)?;
            match i128::from_str_radix(&text, radix) {
                Ok(v) => Tok::Int(v),
                Err(_) => return fail(K::Limit, "integer literal wider than 128 bits"),
            }
        } else {
            let mut is_float = false;
            if self.peek() != Some('.') {
                self.digits(10, false, &mut text)?;
            }
            if self.peek() == Some('.') {
                is_float = true;
                self.i += 1;
                text.push('.');
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.digits(10, false, &mut text)?;
                }
            }
            let sign_then_digit =
                matches!(self.peek_at(1), Some('+' | '-')) && self.peek_at(2).is_some_and(|c| c.is_ascii_digit());
            if matches!(self.peek(), Some('e' | 'E'))
                && (self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) || sign_then_digit)
            {
                is_float = true;
                text.push('e');
                self.i += 1;
                if let Some(sign @ ('+' | '-')) = self.peek() {
                    text.push(sign);
                    self.i += 1;
                }
                self.digits(10, false, &mut text)?;
            }
            if matches!(self.peek(), Some('j' | 'J')) {
                return fail(K::Unsupported, "complex numbers");
            }
            if is_float {
                match text.parse::<f64>() {
                    Ok(f) => Tok::Float(f),
                    Err(_) => return fail(K::Syntax, format!("invalid float literal at offset {start}")),
                }
            } else {
                if text.starts_with('0') && text.chars().any(|c| c != '0') {
                    return fail(K::Syntax, "leading zeros in decimal integer literals are not permitted");
                }
                match text.parse::<i128>() {
                    Ok(v) => Tok::Int(v),
                    Err(_) => return fail(K::Limit, "integer literal wider than 128 bits"),
                }
            }
        };
        if self.peek().is_some_and(|c| c == '_' || c.is_alphanumeric()) {
            return fail(K::Syntax, format!("invalid number literal at offset {start}"));
        }
        Ok(tok)
    }

    /// A string or bytes literal starting at the opening quote, after `prefix`.
    fn string(&mut self, prefix: &str) -> Result<Tok> {
        let prefix = prefix.to_ascii_lowercase();
        let raw = prefix.contains('r');
        let bytes = prefix.contains('b');
        let format = prefix.contains('f');
        let start = self.i;
        let quote = self.peek().unwrap_or('"');
        let triple = self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote);
        self.i += if triple { 3 } else { 1 };
        let unterminated = || fail(K::Syntax, format!("unterminated string literal at offset {start}"));
        // Code points for str, byte values for bytes.
        let mut units: Vec<u32> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return unterminated();
            };
            if c == quote {
                if !triple {
                    self.i += 1;
                    break;
                }
                if self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote) {
                    self.i += 3;
                    break;
                }
            }
            if c == '\n' || c == '\r' {
                if !triple {
                    return unterminated();
                }
                self.newline();
                units.push('\n' as u32);
                continue;
            }
            if bytes && !c.is_ascii() {
                return fail(K::Syntax, "bytes can only contain ASCII literal characters");
            }
            if c == '\\' {
                self.i += 1;
                let Some(e) = self.peek() else {
                    return unterminated();
                };
                if raw {
                    // The backslash stays, and the next character (even a quote) cannot end
                    // the literal.
                    units.push('\\' as u32);
                    if e == '\n' || e == '\r' {
                        self.newline();
                        units.push('\n' as u32);
                    } else {
                        units.push(e as u32);
                        self.i += 1;
                    }
                    continue;
                }
                self.escape(e, bytes, &mut units)?;
                continue;
            }
            if format && (c == '{' || c == '}') {
                if self.peek_at(1) == Some(c) {
                    units.push(c as u32);
                    self.i += 2;
                    continue;
                }
                return fail(K::Unsupported, "f-string replacement fields");
            }
            units.push(c as u32);
            self.i += 1;
        }
        if bytes {
            // Every unit is below 256: ASCII characters and escapes masked to a byte.
            return Ok(Tok::Bytes(units.into_iter().map(|u| u as u8).collect()));
        }
        let mut out = String::with_capacity(units.len());
        for u in units {
            match char::from_u32(u) {
                Some(ch) => out.push(ch),
                None => return fail(K::Unsupported, format!("lone surrogate \\u{u:04x} in a string")),
            }
        }
        Ok(Tok::Str(out))
    }

    /// The escape after a backslash (the backslash already consumed, `e` not yet).
    fn escape(&mut self, e: char, bytes: bool, units: &mut Vec<u32>) -> Result<()> {
        self.i += 1;
        let simple = match e {
            '\n' => return Ok(()),
            '\r' => {
                if self.peek() == Some('\n') {
                    self.i += 1;
                }
                return Ok(());
            }
            '\\' | '\'' | '"' => Some(e as u32),
            'a' => Some(7),
            'b' => Some(8),
            'f' => Some(12),
            'n' => Some(10),
            'r' => Some(13),
            't' => Some(9),
            'v' => Some(11),
            _ => None,
        };
        if let Some(v) = simple {
            units.push(v);
            return Ok(());
        }
        match e {
            '0'..='7' => {
                let mut v = e as u32 - '0' as u32;
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            self.i += 1;
                        }
                        None => break,
                    }
                }
                // Python masks octal escapes above \377 to a byte in bytes literals.
                units.push(if bytes { v & 0xff } else { v });
            }
            'x' => units.push(self.hex_escape(2)?),
            'u' | 'U' if !bytes => {
                let v = self.hex_escape(if e == 'u' { 4 } else { 8 })?;
                if v > 0x10ffff {
                    return fail(K::Syntax, "illegal Unicode character in \\U escape");
                }
                units.push(v);
            }
            'N' if !bytes => return fail(K::Unsupported, "\\N{...} escapes"),
            // Unknown escapes keep their backslash, as Python does.
            other => {
                units.push('\\' as u32);
                units.push(other as u32);
            }
        }
        Ok(())
    }

    fn hex_escape(&mut self, n: usize) -> Result<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let Some(d) = self.peek().and_then(|c| c.to_digit(16)) else {
                return fail(K::Syntax, format!("truncated escape: {n} hex digits expected"));
            };
            v = v * 16 + d;
            self.i += 1;
        }
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------
// Syntax tree

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnaryOp {
    Plus,
    Minus,
    Invert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Pow,
    LShift,
    RShift,
    BitAnd,
    BitOr,
    BitXor,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
            BinOp::Pow => "**",
            BinOp::LShift => "<<",
            BinOp::RShift => ">>",
            BinOp::BitAnd => "&",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    NotIn,
}

/// An expression. Left-associative operators of one precedence level are kept as a flat
/// chain, so the tree's depth is bounded by the source's nesting, not its length.
#[derive(Debug)]
enum Node {
    Const(PyValue),
    /// A name other than `None`/`True`/`False`: a `NameError` when evaluated (after the
    /// whole text parsed, so a syntax error anywhere is reported first, as in Python).
    Name(String),
    List(Vec<Node>),
    Tuple(Vec<Node>),
    Set(Vec<Node>),
    Dict(Vec<(Node, Node)>),
    Unary(UnaryOp, Box<Node>),
    Not(Box<Node>),
    Chain(Box<Node>, Vec<(BinOp, Node)>),
    Power(Box<Node>, Box<Node>),
    Compare(Box<Node>, Vec<(CmpOp, Node)>),
    /// `and` (true) or `or` (false) over two or more operands.
    BoolChain(bool, Vec<Node>),
    /// `body if test else orelse`.
    IfElse(Box<Node>, Box<Node>, Box<Node>),
}

// ---------------------------------------------------------------------------------------
// Parser (Python's expression grammar, precedence lowest first)

const KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif", "else", "except",
    "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise",
    "return", "try", "while", "with", "yield",
];

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].tok
    }

    fn peek_second(&self) -> &Tok {
        &self.toks[(self.pos + 1).min(self.toks.len() - 1)].tok
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn at_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }

    fn at_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Name(n) if n == word)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let at = self.at_op(op);
        if at {
            self.next();
        }
        at
    }

    fn unexpected<T>(&self) -> Result<T> {
        let t = &self.toks[self.pos.min(self.toks.len() - 1)];

        let what = match &t.tok {
            Tok::End => "end of input".to_string(),
            Tok::Newline => "a second line".to_string(),
            Tok::Op(o) => format!("'{o}'"),
            Tok::Name(n) => format!("'{n}'"),
            _ => "a literal".to_string(),
        };
        fail(
            K::Syntax,
            format!("invalid syntax: unexpected {what} at offset {}", t.at),
        )
    }

    fn expect_op(&mut self, op: &str) -> Result<()> {
        if self.eat_op(op) {
            Ok(())
        } else {
            self.unexpected()
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Parser) -> Result<T>) -> Result<T> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return fail(K::Limit, format!("expression nested more than {MAX_DEPTH} levels deep"));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// `eval`'s input: an expression list (a tuple when it has a comma), then only newlines.
    fn eval_input(mut self) -> Result<Node> {
        let first = self.expression()?;
        let node = if self.at_op(",") {
            let mut items = vec![first];
            while self.eat_op(",") {
                if matches!(self.peek(), Tok::Newline | Tok::End) {
                    break;
                }
                items.push(self.expression()?);
            }
            Node::Tuple(items)
        } else {
            first
        };
        while *self.peek() == Tok::Newline {
            self.next();
        }
        if *self.peek() != Tok::End {
            return self.unexpected();
        }
        Ok(node)
    }

    fn expression(&mut self) -> Result<Node> {
        self.nested(|p| {
            if p.at_word("lambda") {
                return fail(K::Unsupported, "lambda");
            }
            let body = p.disjunction()?;
            if !p.at_word("if") {
                return Ok(body);
            }
            p.next();
            let test = p.disjunction()?;
            if !p.at_word("else") {
                return p.unexpected();
            }
            p.next();
            let orelse = p.expression()?;
            Ok(Node::IfElse(Box::new(body), Box::new(test), Box::new(orelse)))
        })
    }

    fn bool_chain(&mut self, word: &str, is_and: bool, operand: fn(&mut Parser) -> Result<Node>) -> Result<Node> {
        let first = operand(self)?;
        if !self.at_word(word) {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_word(word) {
            self.next();
            items.push(operand(self)?);
        }
        Ok(Node::BoolChain(is_and, items))
    }

    fn disjunction(&mut self) -> Result<Node> {
        self.bool_chain("or", false, Parser::conjunction)
    }

    fn conjunction(&mut self) -> Result<Node> {
        self.bool_chain("and", true, Parser::inversion)
    }

    fn inversion(&mut self) -> Result<Node> {
        if self.at_word("not") {
            self.next();
            return self.nested(|p| Ok(Node::Not(Box::new(p.inversion()?))));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Node> {
        let first = self.bitwise_or()?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::Op("==") => CmpOp::Eq,
                Tok::Op("!=") => CmpOp::Ne,
                Tok::Op("<") => CmpOp::Lt,
                Tok::Op(">") => CmpOp::Gt,
                Tok::Op("<=") => CmpOp::Le,
                Tok::Op(">=") => CmpOp::Ge,
                Tok::Name(n) if n == "in" => CmpOp::In,
                Tok::Name(n) if n == "not" && matches!(self.peek_second(), Tok::Name(m) if m == "in") => {
                    self.next();
                    CmpOp::NotIn
                }
                Tok::Name(n) if n == "is" => return fail(K::Unsupported, "the 'is' operator"),
                _ => break,
            };
            self.next();
            rest.push((op, self.bitwise_or()?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Node::Compare(Box::new(first), rest)
        })
    }

    /// One left-associative level: `operand (op operand)*` with the operators in `ops`.
    fn chain(&mut self, ops: &[(&str, BinOp)], operand: fn(&mut Parser) -> Result<Node>) -> Result<Node> {
        let first = operand(self)?;
        let mut rest = Vec::new();
        while let Some(&(_, op)) = ops.iter().find(|(sym, _)| self.at_op(sym)) {
            self.next();
            rest.push((op, operand(self)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Node::Chain(Box::new(first), rest)
        })
    }

    fn bitwise_or(&mut self) -> Result<Node> {
        self.chain(&[("|", BinOp::BitOr)], Parser::bitwise_xor)
    }

    fn bitwise_xor(&mut self) -> Result<Node> {
        self.chain(&[("^", BinOp::BitXor)], Parser::bitwise_and)
    }

    fn bitwise_and(&mut self) -> Result<Node> {
        self.chain(&[("&", BinOp::BitAnd)], Parser::shift)
    }

    fn shift(&mut self) -> Result<Node> {
        self.chain(&[("<<", BinOp::LShift), (">>", BinOp::RShift)], Parser::sum)
    }

    fn sum(&mut self) -> Result<Node> {
        self.chain(&[("+", BinOp::Add), ("-", BinOp::Sub)], Parser::term)
    }

    fn term(&mut self) -> Result<Node> {
        if self.at_op("@") {
            return fail(K::Unsupported, "the '@' operator");
        }
        let node = self.chain(
            &[
                ("*", BinOp::Mul),
                ("/", BinOp::Div),
                ("//", BinOp::FloorDiv),
                ("%", BinOp::Mod),
            ],
            Parser::factor,
        )?;
        if self.at_op("@") {
            return fail(K::Unsupported, "the '@' operator");
        }
        Ok(node)
    }

    fn factor(&mut self) -> Result<Node> {
        let op = match self.peek() {
            Tok::Op("+") => UnaryOp::Plus,
            Tok::Op("-") => UnaryOp::Minus,
            Tok::Op("~") => UnaryOp::Invert,
            _ => return self.power(),
        };
        self.next();
        self.nested(|p| Ok(Node::Unary(op, Box::new(p.factor()?))))
    }

    fn power(&mut self) -> Result<Node> {
        let base = self.primary()?;
        if !self.eat_op("**") {
            return Ok(base);
        }
        // Right-associative, and binds tighter than a unary minus on its left only.
        let exponent = self.nested(Parser::factor)?;
        Ok(Node::Power(Box::new(base), Box::new(exponent)))
    }

    fn primary(&mut self) -> Result<Node> {
        let atom = self.atom()?;
        if self.at_op("(") || self.at_op("[") || self.at_op(".") {
            return fail(K::Unsupported, "calls, subscripts and attributes");
        }
        Ok(atom)
    }

    fn atom(&mut self) -> Result<Node> {
        match self.peek().clone() {
            Tok::Int(v) => {
                self.next();
                Ok(Node::Const(PyValue::Int(v)))
            }
            Tok::Float(v) => {
                self.next();
                Ok(Node::Const(PyValue::Float(v)))
            }
            Tok::Str(_) | Tok::Bytes(_) => self.strings(),
            Tok::Name(name) => {
                let value = match name.as_str() {
                    "None" => PyValue::None,
                    "True" => PyValue::Bool(true),
                    "False" => PyValue::Bool(false),
                    "await" | "yield" => return fail(K::Unsupported, format!("'{name}'")),
                    _ if KEYWORDS.contains(&name.as_str()) => return self.unexpected(),
                    _ => {
                        self.next();
                        return Ok(Node::Name(name));
                    }
                };
                self.next();
                Ok(Node::Const(value))
            }
            Tok::Op("(") => {
                self.next();
                if self.eat_op(")") {
                    return Ok(Node::Tuple(Vec::new()));
                }
                let first = self.expression()?;
                self.no_comprehension()?;
                if self.eat_op(")") {
                    return Ok(first);
                }
                Ok(Node::Tuple(self.items_after(first, ")")?))
            }
            Tok::Op("[") => {
                self.next();
                if self.eat_op("]") {
                    return Ok(Node::List(Vec::new()));
                }
                let first = self.expression()?;
                self.no_comprehension()?;
                if self.eat_op("]") {
                    return Ok(Node::List(vec![first]));
                }
                Ok(Node::List(self.items_after(first, "]")?))
            }
            Tok::Op("{") => {
                self.next();
                if self.eat_op("}") {
                    return Ok(Node::Dict(Vec::new()));
                }
                if self.at_op("**") {
                    return fail(K::Unsupported, "dict unpacking");
                }
                let first = self.expression()?;
                if !self.eat_op(":") {
                    self.no_comprehension()?;
                    if self.eat_op("}") {
                        return Ok(Node::Set(vec![first]));
                    }
                    return Ok(Node::Set(self.items_after(first, "}")?));
                }
                let value = self.expression()?;
                self.no_comprehension()?;
                let mut pairs = vec![(first, value)];
                while self.eat_op(",") {
                    if self.at_op("}") {
                        break;
                    }
                    let key = self.expression()?;
                    self.expect_op(":")?;
                    pairs.push((key, self.expression()?));
                }
                self.expect_op("}")?;
                Ok(Node::Dict(pairs))
            }
            Tok::Op("*") => fail(K::Unsupported, "starred expressions"),
            Tok::Op("...") => fail(K::Unsupported, "Ellipsis ('...')"),
            _ => self.unexpected(),
        }
    }

    fn no_comprehension(&self) -> Result<()> {
        if self.at_word("for") || self.at_word("async") {
            return fail(K::Unsupported, "comprehensions");
        }
        Ok(())
    }

    /// The rest of a comma-separated display after its first item, through `close`; a
    /// trailing comma is allowed.
    fn items_after(&mut self, first: Node, close: &str) -> Result<Vec<Node>> {
        let mut items = vec![first];
        loop {
            if self.eat_op(close) {
                return Ok(items);
            }
            self.expect_op(",")?;
            if self.eat_op(close) {
                return Ok(items);
            }
            items.push(self.expression()?);
        }
    }

    /// Adjacent string literals concatenate; str and bytes do not mix.
    fn strings(&mut self) -> Result<Node> {
        let mut text: Option<String> = None;
        let mut bytes: Option<Vec<u8>> = None;
        loop {
            match self.peek().clone() {
                Tok::Str(s) if bytes.is_none() => text.get_or_insert_with(String::new).push_str(&s),
                Tok::Bytes(b) if text.is_none() => bytes.get_or_insert_with(Vec::new).extend_from_slice(&b),
                Tok::Str(_) | Tok::Bytes(_) => return fail(K::Syntax, "cannot mix bytes and nonbytes literals"),
                _ => break,
            }
            self.next();
        }
        Ok(Node::Const(match (text, bytes) {
            (_, Some(b)) => PyValue::Bytes(b),
            (t, None) => PyValue::Str(t.unwrap_or_default()),
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation

/// The items and bytes a value holds, all levels counted: what copying it costs.
fn weight(v: &PyValue) -> usize {
    match v {
        PyValue::Str(s) => s.len(),
        PyValue::Bytes(b) => b.len(),
        PyValue::List(items) | PyValue::Tuple(items) | PyValue::Set(items) => {
            items.len() + items.iter().map(weight).sum::<usize>()
        }
        PyValue::Dict(pairs) => pairs.len() * 2 + pairs.iter().map(|(k, v)| weight(k) + weight(v)).sum::<usize>(),
        _ => 0,
    }
}

fn unhashable(type_name: &str) -> EvalError {
    EvalError {
        kind: K::Type,
        message: format!("unhashable type: '{type_name}'"),
    }
}

fn int_overflow() -> EvalError {
    EvalError {
        kind: K::Overflow,
        message: "integer result wider than 128 bits (edgeact's evaluator limit)".into(),
    }
}

/// Builds a dict as Python does: a repeated key keeps its first spelling and its last value.
fn build_dict(pairs: Vec<(PyValue, PyValue)>) -> Result<Vec<(PyValue, PyValue)>> {
    let mut out: Vec<(PyValue, PyValue)> = Vec::new();
    let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
    for (key, value) in pairs {
        let hash = key.py_hash().ok_or_else(|| unhashable(key.type_name()))?;
        let bucket = buckets.entry(hash).or_default();
        match bucket.iter().copied().find(|&i| out[i].0 == key) {
            Some(i) => out[i].1 = value,
            None => {
                bucket.push(out.len());
                out.push((key, value));
            }
        }
    }
    Ok(out)
}

fn to_set(items: Vec<PyValue>) -> Result<Vec<PyValue>> {
    distinct_items(items).map_err(unhashable)
}

/// Python's float `divmod`: the floor quotient and a remainder with the divisor's sign.
fn float_divmod(x: f64, y: f64) -> (f64, f64) {
    let mut rem = x % y;
    let mut div = (x - rem) / y;
    if rem != 0.0 {
        if (y < 0.0) != (rem < 0.0) {
            rem += y;
            div -= 1.0;
        }
    } else {
        rem = 0.0f64.copysign(y);
    }
    let floor = if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0f64.copysign(x / y)
    };
    (floor, rem)
}

fn float_pow(x: f64, y: f64) -> Result<f64> {
    if x == 0.0 && y < 0.0 {
        return fail(K::ZeroDivision, "0.0 cannot be raised to a negative power");
    }
    if x < 0.0 && x.is_finite() && y.is_finite() && y.fract() != 0.0 {
        return fail(
            K::Unsupported,
            "a negative number raised to a fractional power (a complex result)",
        );
    }
    let r = x.powf(y);
    if r.is_infinite() && x.is_finite() && y.is_finite() {
        return fail(K::Overflow, "(34, 'Numerical result out of range')");
    }
    Ok(r)
}

fn int_pow(base: i128, exp: i128) -> Result<i128> {
    match base {
        0 => return Ok((exp == 0) as i128),
        1 => return Ok(1),
        -1 => return Ok(if exp % 2 == 0 { 1 } else { -1 }),
        _ => {}
    }
    // |base| >= 2: anything past 127 doubles overflows, so the loop below stays short.
    if exp > 127 {
        return Err(int_overflow());
    }
    let mut result: i128 = 1;
    for _ in 0..exp {
        result = result.checked_mul(base).ok_or_else(int_overflow)?;
    }
    Ok(result)
}

/// `a / b` for ints (`b != 0`) rounded once to the nearest float (ties to even), as Python
/// divides ints: converting both first rounds twice past 2^53 (`(2**53 + 1) / 3` is
/// 3002399751580331.0, not ...330.7).
fn int_true_div(a: i128, b: i128) -> f64 {
    const EXACT: u128 = 1 << 53;
    let (n, d) = (a.unsigned_abs(), b.unsigned_abs());
    let magnitude = if n == 0 || (n <= EXACT && d <= EXACT) {
        // Both exact as floats: IEEE division rounds the true quotient once.
        n as f64 / d as f64
    } else {
        // Long division to at least 55 significant bits (53, a rounding bit and one more);
        // the remainder is the sticky rest. |a / b| lies in [2^-127, 2^127]: no subnormal,
        // no overflow.
        let (mut q, mut r, mut exp) = (n / d, n % d, 0i32);
        while q < 1 << 54 {
            // r < d <= 2^127, so 2r fits.
            r <<= 1;
            q <<= 1;
            if r >= d {
                q |= 1;
                r -= d;
            }
            exp -= 1;
        }
        let shift = 128 - q.leading_zeros() - 53;
        let (mut mant, dropped, half) = (q >> shift, q & ((1 << shift) - 1), 1u128 << (shift - 1));
        if dropped > half || (dropped == half && (r != 0 || mant & 1 == 1)) {
            mant += 1;
        }
        // mant <= 2^53 and the power of two is a normal float: both exact, so is the product.
        let scale = f64::from_bits(((1023 + exp + shift as i32) as u64) << 52);
        mant as f64 * scale
    };
    if (a < 0) != (b < 0) {
        -magnitude
    } else {
        magnitude
    }
}

fn int_op(op: BinOp, a: i128, b: i128) -> Result<PyValue> {
    let zero_division = || fail(K::ZeroDivision, "integer division or modulo by zero");
    let v = match op {
        BinOp::Add => a.checked_add(b).ok_or_else(int_overflow)?,
        BinOp::Sub => a.checked_sub(b).ok_or_else(int_overflow)?,
        BinOp::Mul => a.checked_mul(b).ok_or_else(int_overflow)?,
        BinOp::Div => {
            if b == 0 {
                return fail(K::ZeroDivision, "division by zero");
            }
            return Ok(PyValue::Float(int_true_div(a, b)));
        }
        BinOp::FloorDiv | BinOp::Mod => {
            if b == 0 {
                return zero_division();
            }
            let mut q = a.checked_div(b).ok_or_else(int_overflow)?;
            let mut r = a - q * b;
            if r != 0 && ((r < 0) != (b < 0)) {
                q -= 1;
                r += b;
            }
            if op == BinOp::FloorDiv {
                q
            } else {
                r
            }
        }
        BinOp::Pow => {
            if b < 0 {
                if a == 0 {
                    return fail(K::ZeroDivision, "0.0 cannot be raised to a negative power");
                }
                return Ok(PyValue::Float(float_pow(a as f64, b as f64)?));
            }
            int_pow(a, b)?
        }
        BinOp::LShift => {
            if b < 0 {
                return fail(K::Value, "negative shift count");
            }
            if a == 0 {
                0
            } else if b >= 127 {
                return Err(int_overflow());
            } else {
                let shifted = a << b;
                if shifted >> b != a {
                    return Err(int_overflow());
                }
                shifted
            }
        }
        BinOp::RShift => {
            if b < 0 {
                return fail(K::Value, "negative shift count");
            }
            a >> b.min(127)
        }
        BinOp::BitAnd => a & b,
        BinOp::BitOr => a | b,
        BinOp::BitXor => a ^ b,
    };
    Ok(PyValue::Int(v))
}

fn float_op(op: BinOp, x: f64, y: f64) -> Result<PyValue> {
    let v = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => {
            if y == 0.0 {
                return fail(K::ZeroDivision, "float division by zero");
            }
            x / y
        }
        BinOp::FloorDiv | BinOp::Mod => {
            if y == 0.0 {
                return fail(K::ZeroDivision, "float floor division or modulo by zero");
            }
            let (q, r) = float_divmod(x, y);
            if op == BinOp::FloorDiv {
                q
            } else {
                r
            }
        }
        BinOp::Pow => float_pow(x, y)?,
        _ => {
            return fail(
                K::Type,
                format!("unsupported operand type(s) for {}: 'float'", op.symbol()),
            )
        }
    };
    Ok(PyValue::Float(v))
}

/// Exact ordering of two numbers (Python compares int with float exactly).
fn number_order(a: Number, b: Number) -> Option<Ordering> {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => Some(x.cmp(&y)),
        (Number::Float(x), Number::Float(y)) => x.partial_cmp(&y),
        (Number::Int(i), Number::Float(f)) => int_float_order(i, f),
        (Number::Float(f), Number::Int(i)) => int_float_order(i, f).map(Ordering::reverse),
    }
}

fn int_float_order(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    let approx = (i as f64).partial_cmp(&f)?;
    if approx != Ordering::Equal {
        return Some(approx);
    }
    // `i as f64 == f` with f finite and integral; compare exactly (f fits i128 here unless
    // it is 2^127, which exceeds every i128).
    if f >= 1.7014118346046923e38 {
        return Some(Ordering::Less);
    }
    Some(i.cmp(&(f as i128)))
}

struct Machine {
    work: usize,
}

impl Machine {
    fn charge(&mut self, units: usize) -> Result<()> {
        self.work = self.work.saturating_add(units);
        if self.work > MAX_WORK {
            return fail(
                K::Limit,
                format!("the expression builds more than {MAX_WORK} items and bytes"),
            );
        }
        Ok(())
    }

    fn eval_all(&mut self, nodes: &[Node]) -> Result<Vec<PyValue>> {
        nodes.iter().map(|n| self.eval(n)).collect()
    }

    fn eval(&mut self, node: &Node) -> Result<PyValue> {
        Ok(match node {
            Node::Const(v) => v.clone(),
            Node::Name(name) => return fail(K::Name, format!("name '{name}' is not defined")),
            Node::List(items) => PyValue::List(self.eval_all(items)?),
            Node::Tuple(items) => PyValue::Tuple(self.eval_all(items)?),
            Node::Set(items) => PyValue::Set(to_set(self.eval_all(items)?)?),
            Node::Dict(pairs) => {
                let mut values = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let key = self.eval(k)?;
                    values.push((key, self.eval(v)?));
                }
                PyValue::Dict(build_dict(values)?)
            }
            Node::Unary(op, operand) => unary(*op, self.eval(operand)?)?,
            Node::Not(operand) => PyValue::Bool(!self.eval(operand)?.is_truthy()),
            Node::Chain(first, rest) => {
                let mut acc = self.eval(first)?;
                for (op, operand) in rest {
                    let rhs = self.eval(operand)?;
                    acc = self.binary(*op, acc, rhs)?;
                }
                acc
            }
            Node::Power(base, exponent) => {
                let base = self.eval(base)?;
                let exponent = self.eval(exponent)?;
                self.binary(BinOp::Pow, base, exponent)?
            }
            Node::Compare(first, rest) => {
                let mut left = self.eval(first)?;
                for (op, operand) in rest {
                    let right = self.eval(operand)?;
                    if !compare(*op, &left, &right)? {
                        return Ok(PyValue::Bool(false));
                    }
                    left = right;
                }
                PyValue::Bool(true)
            }
            Node::BoolChain(is_and, items) => {
                let mut value = PyValue::None;
                for (i, item) in items.iter().enumerate() {
                    value = self.eval(item)?;
                    // `and` stops at the first falsy operand, `or` at the first truthy one;
                    // the last operand is the result either way.
                    if i + 1 < items.len() && value.is_truthy() != *is_and {
                        break;
                    }
                }
                value
            }
            Node::IfElse(body, test, orelse) => {
                if self.eval(test)?.is_truthy() {
                    self.eval(body)?
                } else {
                    self.eval(orelse)?
                }
            }
        })
    }

    fn binary(&mut self, op: BinOp, a: PyValue, b: PyValue) -> Result<PyValue> {
        if let (Some(x), Some(y)) = (a.as_number(), b.as_number()) {
            if let (PyValue::Bool(p), PyValue::Bool(q)) = (&a, &b) {
                match op {
                    BinOp::BitAnd => return Ok(PyValue::Bool(*p & *q)),
                    BinOp::BitOr => return Ok(PyValue::Bool(*p | *q)),
                    BinOp::BitXor => return Ok(PyValue::Bool(*p ^ *q)),
                    _ => {}
                }
            }
            return match (x, y) {
                (Number::Int(i), Number::Int(j)) => int_op(op, i, j),
                _ => float_op(op, x.to_f64(), y.to_f64()),
            };
        }
        use PyValue as V;
        let type_error = |a: &PyValue, b: &PyValue| {
            fail(
                K::Type,
                format!(
                    "unsupported operand type(s) for {}: '{}' and '{}'",
                    op.symbol(),
                    a.type_name(),
                    b.type_name()
                ),
            )
        };
        match (op, a, b) {
            (BinOp::Add, V::Str(mut x), V::Str(y)) => {
                self.charge(x.len() + y.len())?;
                x.push_str(&y);
                Ok(V::Str(x))
            }
            (BinOp::Add, V::Bytes(mut x), V::Bytes(y)) => {
                self.charge(x.len() + y.len())?;
                x.extend_from_slice(&y);
                Ok(V::Bytes(x))
            }
            (BinOp::Add, V::List(mut x), V::List(y)) => {
                self.charge(x.len() + y.len())?;
                x.extend(y);
                Ok(V::List(x))
            }
            (BinOp::Add, V::Tuple(mut x), V::Tuple(y)) => {
                self.charge(x.len() + y.len())?;
                x.extend(y);
                Ok(V::Tuple(x))
            }
            (BinOp::Mul, seq, V::Int(n)) | (BinOp::Mul, V::Int(n), seq) if is_sequence(&seq) => self.repeat(seq, n),
            (BinOp::Mul, seq, V::Bool(n)) | (BinOp::Mul, V::Bool(n), seq) if is_sequence(&seq) => {
                self.repeat(seq, n as i128)
            }
            (BinOp::Mod, a @ (V::Str(_) | V::Bytes(_)), _) => {
                fail(K::Unsupported, format!("'%'-formatting of {}", a.type_name()))
            }
            (op @ (BinOp::Sub | BinOp::BitOr | BinOp::BitAnd | BinOp::BitXor), V::Set(x), V::Set(y)) => {
                self.charge(x.len() + y.len())?;
                Ok(V::Set(set_op(op, x, y)))
            }
            (BinOp::BitOr, V::Dict(mut x), V::Dict(y)) => {
                self.charge(2 * (x.len() + y.len()))?;
                x.extend(y);
                Ok(V::Dict(build_dict(x)?))
            }
            (_, a, b) => type_error(&a, &b),
        }
    }

    /// `seq * n`: refused before allocating when the copies would exceed the work budget.
    fn repeat(&mut self, seq: PyValue, n: i128) -> Result<PyValue> {
        let count = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
        let unit = weight(&seq);
        if unit == 0 || count == 0 {
            return Ok(match seq {
                PyValue::Str(_) => PyValue::Str(String::new()),
                PyValue::Bytes(_) => PyValue::Bytes(Vec::new()),
                PyValue::Tuple(_) => PyValue::Tuple(Vec::new()),
                _ => PyValue::List(Vec::new()),
            });
        }
        self.charge(unit.saturating_mul(count))?;
        Ok(match seq {
            PyValue::Str(s) => PyValue::Str(s.repeat(count)),
            PyValue::Bytes(b) => PyValue::Bytes(b.repeat(count)),
            PyValue::List(v) => PyValue::List(repeat_items(&v, count)),
            PyValue::Tuple(v) => PyValue::Tuple(repeat_items(&v, count)),
            other => other,
        })
    }
}

fn is_sequence(v: &PyValue) -> bool {
    matches!(
        v,
        PyValue::Str(_) | PyValue::Bytes(_) | PyValue::List(_) | PyValue::Tuple(_)
    )
}

fn repeat_items(items: &[PyValue], count: usize) -> Vec<PyValue> {
    let mut out = Vec::with_capacity(items.len() * count);
    for _ in 0..count {
        out.extend(items.iter().cloned());
    }
    out
}

/// Set difference, union, intersection or symmetric difference: the items CPython's set
/// operations keep (the left operand's first).
fn set_op(op: BinOp, x: Vec<PyValue>, y: Vec<PyValue>) -> Vec<PyValue> {
    let x_refs: Vec<&PyValue> = x.iter().collect();
    let y_refs: Vec<&PyValue> = y.iter().collect();
    let in_x = ItemIndex::new(x_refs.iter().copied());
    let in_y = ItemIndex::new(y_refs.iter().copied());
    let x_only = || x.iter().filter(|v| in_y.position(&y_refs, v).is_none()).cloned();
    let y_only = || y.iter().filter(|v| in_x.position(&x_refs, v).is_none()).cloned();
    match op {
        BinOp::Sub => x_only().collect(),
        BinOp::BitAnd => {
            // CPython walks the smaller set (the right one on a tie) and keeps its items:
            // `{1} & {1.0}` is `{1.0}`.
            let (walked, other, other_refs) = if y.len() <= x.len() {
                (&y, &in_x, &x_refs)
            } else {
                (&x, &in_y, &y_refs)
            };
            walked
                .iter()
                .filter(|v| other.position(other_refs, v).is_some())
                .cloned()
                .collect()
        }
        BinOp::BitOr => x.iter().cloned().chain(y_only()).collect(),
        _ => x_only().chain(y_only()).collect(),
    }
}

fn unary(op: UnaryOp, v: PyValue) -> Result<PyValue> {
    let number = v.as_number();
    Ok(match (op, number) {
        (UnaryOp::Plus, Some(Number::Int(i))) => PyValue::Int(i),
        (UnaryOp::Plus, Some(Number::Float(f))) => PyValue::Float(f),
        (UnaryOp::Minus, Some(Number::Int(i))) => PyValue::Int(i.checked_neg().ok_or_else(int_overflow)?),
        (UnaryOp::Minus, Some(Number::Float(f))) => PyValue::Float(-f),
        (UnaryOp::Invert, Some(Number::Int(i))) => PyValue::Int(!i),
        _ => {
            let symbol = match op {
                UnaryOp::Plus => "+",
                UnaryOp::Minus => "-",
                UnaryOp::Invert => "~",
            };
            return fail(
                K::Type,
                format!("bad operand type for unary {symbol}: '{}'", v.type_name()),
            );
        }
    })
}

fn compare(op: CmpOp, a: &PyValue, b: &PyValue) -> Result<bool> {
    let order = match op {
        CmpOp::Eq => return Ok(a == b),
        CmpOp::Ne => return Ok(a != b),
        CmpOp::In => return contains(b, a),
        CmpOp::NotIn => return Ok(!contains(b, a)?),
        _ => order(op, a, b)?,
    };
    Ok(match op {
        CmpOp::Lt => order == Some(Ordering::Less),
        CmpOp::Gt => order == Some(Ordering::Greater),
        CmpOp::Le => matches!(order, Some(Ordering::Less | Ordering::Equal)),
        _ => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
    })
}

/// The ordering `<`, `>`, `<=`, `>=` use; `None` when unordered (NaN). Sets order by
/// inclusion: `Less` for a proper subset, `Equal` for equal sets, `None` otherwise.
fn order(op: CmpOp, a: &PyValue, b: &PyValue) -> Result<Option<Ordering>> {
    if let (Some(x), Some(y)) = (a.as_number(), b.as_number()) {
        return Ok(number_order(x, y));
    }
    use PyValue as V;
    Ok(match (a, b) {
        (V::Str(x), V::Str(y)) => Some(x.cmp(y)),
        (V::Bytes(x), V::Bytes(y)) => Some(x.cmp(y)),
        (V::List(x), V::List(y)) | (V::Tuple(x), V::Tuple(y)) => match x.iter().zip(y).position(|(p, q)| p != q) {
            Some(i) => order(op, &x[i], &y[i])?,
            None => Some(x.len().cmp(&y.len())),
        },
        (V::Set(x), V::Set(y)) => {
            let subset = |p: &[PyValue], q: &[PyValue]| {
                let q_refs: Vec<&PyValue> = q.iter().collect();
                let index = ItemIndex::new(q_refs.iter().copied());
                p.iter().all(|v| index.position(&q_refs, v).is_some())
            };
            match (subset(x, y), subset(y, x)) {
                (true, true) => Some(Ordering::Equal),
                (true, false) => Some(Ordering::Less),
                (false, true) => Some(Ordering::Greater),
                (false, false) => None,
            }
        }
        _ => {
            let symbol = match op {
                CmpOp::Lt => "<",
                CmpOp::Gt => ">",
                CmpOp::Le => "<=",
                _ => ">=",
            };
            return fail(
                K::Type,
                format!(
                    "'{symbol}' not supported between instances of '{}' and '{}'",
                    a.type_name(),
                    b.type_name()
                ),
            );
        }
    })
}

/// Python's `item in container`.
fn contains(container: &PyValue, item: &PyValue) -> Result<bool> {
    use PyValue as V;
    match (container, item) {
        (V::Str(s), V::Str(sub)) => Ok(s.contains(sub.as_str())),
        (V::Str(_), other) => fail(
            K::Type,
            format!(
                "'in <string>' requires string as left operand, not {}",
                other.type_name()
            ),
        ),
        (V::Bytes(b), V::Bytes(sub)) => Ok(sub.is_empty() || b.windows(sub.len()).any(|w| w == sub.as_slice())),
        (V::Bytes(b), other) => match other.as_number() {
            Some(Number::Int(i)) if (0..256).contains(&i) => Ok(b.contains(&(i as u8))),
            Some(Number::Int(_)) => fail(K::Value, "byte must be in range(0, 256)"),
            _ => fail(
                K::Type,
                format!("a bytes-like object is required, not '{}'", other.type_name()),
            ),
        },
        (V::List(items) | V::Tuple(items), _) => Ok(items.iter().any(|v| v == item)),
        // Python looks a set up as a frozenset; values here never hold frozensets.
        (V::Set(_), V::Set(_)) => Ok(false),
        (V::Set(items), _) => {
            if !item.is_hashable() {
                return Err(unhashable(item.type_name()));
            }
            Ok(items.iter().any(|v| v == item))
        }
        (V::Dict(pairs), _) => {
            if !item.is_hashable() {
                return Err(unhashable(item.type_name()));
            }
            Ok(pairs.iter().any(|(k, _)| k == item))
        }
        (other, _) => fail(
            K::Type,
            format!("argument of type '{}' is not iterable", other.type_name()),
        ),
    }
}
