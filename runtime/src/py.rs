//! Small emulations of the Python built-ins that the AgentBench harness applies to texts, so
//! that our results match its results character for character: `str.isspace`/`str.strip`,
//! slicing by code points, and a safe `eval` of the expressions DB answers are written in
//! ([`eval`]: a parser and evaluator of a Python expression subset, never a Python process).

/// Python's `str.isspace()` for one character: Rust's `White_Space` plus the ASCII information
/// separators U+001C..U+001F, which Python also treats as whitespace.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Python's `len(s)`: the number of code points.
pub fn len(s: &str) -> usize {
    s.chars().count()
}

/// Python's `s[:n]`: the first `n` code points (all of `s` if shorter).
pub fn prefix(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A value of the Python subset that `eval` turns DB answers into (see [`eval`]).
#[derive(Clone, Debug)]
pub enum PyValue {
    None,
    Bool(bool),
    /// Python's `int`, limited to 128 bits (larger results are an [`EvalError`]).
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    /// Distinct (by Python's `==`) hashable items, in insertion order.
    Set(Vec<PyValue>),
    /// Distinct hashable keys with their values, in insertion order.
    Dict(Vec<(PyValue, PyValue)>),
}

/// A number as Python compares it: `bool` and `int` are integers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Number {
    Int(i128),
    Float(f64),
}

impl Number {
    pub(crate) fn to_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// The integer a float equals exactly, if any (so `2**60 + 1 != 2.0**60`, as in Python).
    fn float_as_int(f: f64) -> Option<i128> {
        // 2^127 is exactly representable; every integral float below it in magnitude fits.
        (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.7014118346046923e38).then_some(f as i128)
    }

    fn eq(self, other: Number) -> bool {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => a == b,
            (Number::Float(a), Number::Float(b)) => a == b,
            (Number::Int(i), Number::Float(f)) | (Number::Float(f), Number::Int(i)) => {
                Number::float_as_int(f) == Some(i)
            }
        }
    }
}

impl PartialEq for PyValue {
    /// Python's `==`: numbers compare by value across bool/int/float, sequences element-wise
    /// (a list never equals a tuple, `str` never equals `bytes`), sets and dicts regardless
    /// of order, everything else by type and value.
    fn eq(&self, other: &Self) -> bool {
        match (self.as_number(), other.as_number()) {
            (Some(a), Some(b)) => return a.eq(b),
            (Some(_), Option::None) | (Option::None, Some(_)) => return false,
            _ => {}
        }
        use PyValue::*;
        match (self, other) {
            (None, None) => true,
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => a == b,
            (Set(a), Set(b)) => {
                let items: Vec<&PyValue> = b.iter().collect();
                let index = ItemIndex::new(items.iter().copied());
                a.len() == b.len() && a.iter().all(|x| index.position(&items, x).is_some())
            }
            (Dict(a), Dict(b)) => {
                let keys: Vec<&PyValue> = b.iter().map(|(k, _)| k).collect();
                let index = ItemIndex::new(keys.iter().copied());
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| index.position(&keys, k).is_some_and(|i| b[i].1 == *v))
            }
            _ => false,
        }
    }
}

impl PyValue {
    pub(crate) fn as_number(&self) -> Option<Number> {
        match self {
            PyValue::Bool(b) => Some(Number::Int(*b as i128)),
            PyValue::Int(i) => Some(Number::Int(*i)),
            PyValue::Float(f) => Some(Number::Float(*f)),
            _ => None,
        }
    }

    /// Python's type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Set(_) => "set",
            PyValue::Dict(_) => "dict",
        }
    }

    /// Whether Python could put the value in a `set` (lists, sets and dicts are unhashable).
    pub fn is_hashable(&self) -> bool {
        self.py_hash().is_some()
    }

    /// A hash consistent with [`PartialEq`] (equal values hash alike, e.g. `1`, `1.0` and
    /// `True`), or `None` for an unhashable value.
    pub(crate) fn py_hash(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match self {
            PyValue::None => 0u8.hash(&mut h),
            PyValue::Bool(_) | PyValue::Int(_) | PyValue::Float(_) => {
                1u8.hash(&mut h);
                match self.as_number()? {
                    Number::Int(i) => i.hash(&mut h),
                    Number::Float(f) => match Number::float_as_int(f) {
                        Some(i) => i.hash(&mut h),
                        None => f.to_bits().hash(&mut h),
                    },
                }
            }
            PyValue::Str(s) => {
                2u8.hash(&mut h);
                s.hash(&mut h);
            }
            PyValue::Bytes(b) => {
                3u8.hash(&mut h);
                b.hash(&mut h);
            }
            PyValue::Tuple(items) => {
                4u8.hash(&mut h);
                for item in items {
                    item.py_hash()?.hash(&mut h);
                }
            }
            PyValue::List(_) | PyValue::Set(_) | PyValue::Dict(_) => return None,
        }
        Some(h.finish())
    }

    /// Python's truth value (`bool(x)`).
    pub fn is_truthy(&self) -> bool {
        match self {
            PyValue::None => false,
            PyValue::Bool(b) => *b,
            PyValue::Int(i) => *i != 0,
            PyValue::Float(f) => *f != 0.0,
            PyValue::Str(s) => !s.is_empty(),
            PyValue::Bytes(b) => !b.is_empty(),
            PyValue::List(v) | PyValue::Tuple(v) | PyValue::Set(v) => !v.is_empty(),
            PyValue::Dict(d) => !d.is_empty(),
        }
    }

    /// Python's `float(x)`; `None` where Python raises `ValueError`/`TypeError`.
    pub fn to_float(&self) -> Option<f64> {
        match self {
            PyValue::Str(s) => parse_float(s),
            // float(b"1.5") parses the bytes as ASCII text.
            PyValue::Bytes(b) => std::str::from_utf8(b)
                .ok()
                .filter(|s| s.is_ascii())
                .and_then(parse_float),
            _ => self.as_number().map(Number::to_f64),
        }
    }

    /// Python's `list(x)`: sequences and sets give their items, dicts their keys, strings
    /// their characters, bytes their byte values; `None` where Python raises `TypeError`
    /// (numbers, `None`, booleans).
    pub fn to_list(&self) -> Option<Vec<PyValue>> {
        match self {
            PyValue::List(v) | PyValue::Tuple(v) | PyValue::Set(v) => Some(v.clone()),
            PyValue::Dict(d) => Some(d.iter().map(|(k, _)| k.clone()).collect()),
            PyValue::Str(s) => Some(s.chars().map(|c| PyValue::Str(c.to_string())).collect()),
            PyValue::Bytes(b) => Some(b.iter().map(|&x| PyValue::Int(x as i128)).collect()),
            _ => None,
        }
    }
}

/// Python's `set(items)`: the distinct items in first-seen order, or `Err` with the type name
/// of the first unhashable item (where Python raises `TypeError`).
pub fn distinct_items(items: impl IntoIterator<Item = PyValue>) -> Result<Vec<PyValue>, &'static str> {
    let mut out: Vec<PyValue> = Vec::new();
    let mut buckets: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
    for item in items {
        let hash = item.py_hash().ok_or(item.type_name())?;
        let bucket = buckets.entry(hash).or_default();
        if !bucket.iter().any(|&i| out[i] == item) {
            bucket.push(out.len());
            out.push(item);
        }
    }
    Ok(out)
}

/// A hash index over hashable items, for Python's `in` on sets and dict keys in linear time.
pub(crate) struct ItemIndex {
    buckets: std::collections::HashMap<u64, Vec<usize>>,
}

impl ItemIndex {
    pub(crate) fn new<'a>(items: impl Iterator<Item = &'a PyValue>) -> ItemIndex {
        let mut buckets: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
        for (i, item) in items.enumerate() {
            if let Some(h) = item.py_hash() {
                buckets.entry(h).or_default().push(i);
            }
        }
        ItemIndex { buckets }
    }

    /// The index in `items` (the slice the index was built from) of an item equal to `x`.
    pub(crate) fn position(&self, items: &[&PyValue], x: &PyValue) -> Option<usize> {
        let bucket = self.buckets.get(&x.py_hash()?)?;
        bucket.iter().copied().find(|&i| items[i] == x)
    }
}

/// The first code point of each run of ten Unicode decimal digits (category Nd, values 0..9 in
/// order), as of Unicode 14 (CPython 3.11): what `float()` reads as digits besides ASCII's.
const DECIMAL_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6, 0xE50, 0xED0,
    0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620,
    0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10, 0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0,
    0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60,
    0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of a Unicode decimal digit (`'7'`, `'٧'`, `'７'`), as Python's `unicodedata.decimal`.
fn decimal_digit(c: char) -> Option<u32> {
    let u = c as u32;
    let run = DECIMAL_ZEROS.partition_point(|&zero| zero <= u).checked_sub(1)?;
    let value = u - DECIMAL_ZEROS[run];
    (value < 10).then_some(value)
}

/// Python's `float(str)`: surrounding whitespace allowed, `inf`/`nan` spellings, underscores
/// between digits. As CPython, non-ASCII decimal digits read as their ASCII twins and
/// non-ASCII whitespace as a space first; only ASCII whitespace is then stripped, so the
/// information separators U+001C..U+001F, whitespace to `str.strip()`, make `float()` fail.
pub fn parse_float(s: &str) -> Option<f64> {
    let ascii: String = s
        .chars()
        .map(|c| match c {
            c if c.is_ascii() => c,
            c if is_space(c) => ' ',
            // Any other character fails the parse below, as Python's `?` stand-in does.
            c => decimal_digit(c).map_or('?', |d| char::from(b'0' + d as u8)),
        })
        .collect();
    let t = ascii.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r'));
    if t.is_empty() {
        return None;
    }
    let cleaned: String = if t.contains('_') {
        // Python accepts single underscores between digits only.
        let b: Vec<char> = t.chars().collect();
        for (i, &c) in b.iter().enumerate() {
            if c == '_' {
                let ok = i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit();
                if !ok {
                    return None;
                }
            }
        }
        t.chars().filter(|&c| c != '_').collect()
    } else {
        t.to_string()
    };
    let lower = cleaned.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if lower.len() - body.len() > 1 {
        return None;
    }
    if matches!(body, "inf" | "infinity" | "nan") {
        return cleaned.parse::<f64>().ok();
    }
    // Rust also accepts forms Python rejects? Both take digits, '.', exponent; Rust rejects
    // hex and Python does too, so a digit check keeps us to the shared grammar.
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-'))
    {
        return None;
    }
    cleaned.parse::<f64>().ok()
}

mod eval;
pub use eval::{eval, EvalError, EvalErrorKind, MAX_DEPTH, MAX_SOURCE_CHARS, MAX_WORK};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_float_reads_what_python_float_reads() {
        // Expected values from CPython 3.11's `float()`.
        let cases: [(&str, Option<f64>); 11] = [
            (" 1_0 ", Some(10.0)),
            ("\u{a0}1", Some(1.0)),
            ("\u{85}0", Some(0.0)),
            ("\u{661}\u{662}", Some(12.0)),
            ("\u{ff11}.\u{ff15}", Some(1.5)),
            ("\u{661}_\u{662}", Some(12.0)),
            ("\u{1d7d9}1", Some(11.0)),
            ("-iNfinity", Some(f64::NEG_INFINITY)),
            ("\u{1c}0", None),
            ("\u{200b}1", None),
            ("1\u{a0}2", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_float(text), want, "{text:?}");
        }
        assert!(parse_float("+nan").is_some_and(f64::is_nan));
        assert_eq!(decimal_digit('\u{1fbf9}'), Some(9));
        assert_eq!(decimal_digit('\u{1fbfa}'), None);
        assert_eq!(decimal_digit('/'), None);
    }

    #[test]
    fn strip_matches_python() {
        assert_eq!(strip("\x1c a b \n\x1f"), "a b");
        assert_eq!(prefix("héllo", 2), "hé");
        assert_eq!(prefix("ab", 5), "ab");
    }

    #[test]
    fn equality_and_sets_follow_python() {
        // Exact int/float comparison: 2**60 + 1 != 2.0**60, but 2**60 == 2.0**60.
        let big = 1i128 << 60;
        assert!(PyValue::Int(big + 1) != PyValue::Float(big as f64));
        assert!(PyValue::Int(big) == PyValue::Float(big as f64));
        assert!(PyValue::Str("a".into()) != PyValue::Bytes(b"a".to_vec()));
        let items = vec![
            PyValue::Int(1),
            PyValue::Float(1.0),
            PyValue::Bool(true),
            PyValue::Int(2),
        ];
        assert_eq!(distinct_items(items).unwrap(), vec![PyValue::Int(1), PyValue::Int(2)]);
        assert_eq!(distinct_items(vec![PyValue::List(vec![])]), Err("list"));
        let a = PyValue::Set(vec![PyValue::Int(1), PyValue::Int(2)]);
        let b = PyValue::Set(vec![PyValue::Float(2.0), PyValue::Bool(true)]);
        assert!(a == b);
        assert_eq!(PyValue::Bytes(b"1.5".to_vec()).to_float(), Some(1.5));
        assert_eq!(
            PyValue::Dict(vec![(PyValue::Str("k".into()), PyValue::None)]).to_list(),
            Some(vec![PyValue::Str("k".into())])
        );
    }

    #[test]
    fn floats() {
        assert_eq!(parse_float(" 1.5 "), Some(1.5));
        assert_eq!(parse_float("1_000"), Some(1000.0));
        assert_eq!(parse_float("1,000"), None);
        assert_eq!(parse_float("inf"), Some(f64::INFINITY));
        assert_eq!(parse_float("none"), None);
        assert_eq!(parse_float("0x10"), None);
        assert!(PyValue::Int(1) == PyValue::Float(1.0));
        assert!(PyValue::Str("1".into()) != PyValue::Int(1));
    }
}
