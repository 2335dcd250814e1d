//! Rendering of query results exactly as AgentBench shows them to the model: Python's `str()`
//! of the list of tuples that the MySQL cursor's `fetchall()` returns, e.g. `[('March 19, 1998',)]`,
//! `[(28,)]`, `[(Decimal('59.5'), None)]`.
//!
//! The observation is what the model was trained on, so every byte matters: string quoting
//! follows `repr()` (single quotes unless the text holds `'` and no `"`), floats use Python's
//! shortest round-trip `repr`, and one-element tuples keep their trailing comma.

use std::borrow::Borrow;

/// One cell of a result row, typed as the Python client would have typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None` (SQL NULL).
    None,
    /// A Python `int`.
    Int(i128),
    /// A Python `float`.
    Float(f64),
    /// A Python `str`.
    Str(String),
    /// A Python `bytes` value.
    Bytes(Vec<u8>),
    /// `Decimal('…')` with the server's text.
    Decimal(String),
    /// `datetime.date(y, m, d)`.
    Date { year: u16, month: u8, day: u8 },
    /// `datetime.datetime(y, m, d, h, mi, s[, us])`.
    DateTime {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        micros: u32,
    },
    /// `datetime.timedelta(…)` (MySQL TIME), as a signed number of microseconds.
    TimeDelta(i64),
}

/// Appends Python's `repr()` of one value.
pub fn repr_value(v: &PyValue, out: &mut String) {
    repr_value_upto(v, out, usize::MAX)
}

/// [`repr_value`], except that a text or bytes value stops once `out` holds more than `cap`
/// bytes (what comes before is exact: the quote is chosen from the whole value).
fn repr_value_upto(v: &PyValue, out: &mut String, cap: usize) {
    match v {
        PyValue::None => out.push_str("None"),
        PyValue::Int(i) => out.push_str(&i.to_string()),
        PyValue::Float(f) => out.push_str(&repr_float(*f)),
        PyValue::Str(s) => repr_str_upto(s, out, cap),
        PyValue::Bytes(b) => repr_bytes_upto(b, out, cap),
        PyValue::Decimal(d) => {
            out.push_str("Decimal('");
            out.push_str(d);
            out.push_str("')");
        }
        PyValue::Date { year, month, day } => out.push_str(&format!("datetime.date({year}, {month}, {day})")),
        PyValue::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => {
            // datetime.__repr__ drops trailing zero fields: seconds and microseconds when zero.
            out.push_str(&format!("datetime.datetime({year}, {month}, {day}, {hour}, {minute}"));
            if *micros != 0 {
                out.push_str(&format!(", {second}, {micros}"));
            } else if *second != 0 {
                out.push_str(&format!(", {second}"));
            }
            out.push(')');
        }
        PyValue::TimeDelta(us) => out.push_str(&repr_timedelta(*us)),
    }
}

/// Python's `repr(timedelta(microseconds=us))`, normalised as Python does (days may be negative,
/// seconds and microseconds never are).
fn repr_timedelta(us: i64) -> String {
    let total = us as i128;
    let day_us: i128 = 86_400_000_000;
    let days = total.div_euclid(day_us);
    let rem = total.rem_euclid(day_us);
    let seconds = rem / 1_000_000;
    let micros = rem % 1_000_000;
    let mut parts = Vec::new();
    if days != 0 {
        parts.push(format!("days={days}"));
    }
    if seconds != 0 {
        parts.push(format!("seconds={seconds}"));
    }
    if micros != 0 {
        parts.push(format!("microseconds={micros}"));
    }
    if parts.is_empty() {
        return "datetime.timedelta(0)".to_string();
    }
    format!("datetime.timedelta({})", parts.join(", "))
}

/// Python's `repr(float)`: the shortest digits that round-trip, fixed notation when the decimal
/// exponent is in `-4..16`, scientific (`1e+16`, `1.5e-05`) otherwise, always with a `.0` or an
/// exponent so that it reads back as a float.
pub fn repr_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".to_string() } else { "-inf".to_string() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".to_string()
        } else {
            "0.0".to_string()
        };
    }
    // Rust's `{:e}` gives the shortest digit count that round-trips, as `d.ddde±x`; where two
    // such strings lie equally close to the float (233115890514796.125: ...796.12 or ...796.13)
    // it rounds up, Python to even. Rounding the exact value to that many digits (`{:.Ne}`
    // rounds half to even) gives Python's choice, and the nearest string round-trips whenever
    // one does.
    let shortest = format!("{:e}", f.abs());
    let n_digits = shortest
        .split_once('e')
        .map_or(1, |(m, _)| m.chars().filter(char::is_ascii_digit).count());
    let sci = format!("{:.*e}", n_digits - 1, f.abs());
    let (mant, exp) = sci.split_once('e').expect("LowerExp output always has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// Whether Python's `str.isprintable()` holds for `c`. Python uses the Unicode database; this
/// lists every code point of the categories Cc, Cf (through Unicode 15), Zs other than space,
/// Zl, Zp and private use without carrying Unicode tables; unassigned code points (Cn, which
/// Python escapes as its own Unicode version has them) print as they are. Compared with
/// CPython 3.11 over every code point, only Cn differs.
fn py_printable(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() {
        return false;
    }
    !matches!(u,
        0xA0 | 0xAD | 0x1680 | 0x180E | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x206F | 0x3000 | 0xFEFF
        | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF | 0x110BD | 0x1D173..=0x1D17A | 0xE0001
        | 0xE0020..=0xE007F | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890 | 0x891 | 0x8E2 | 0x110CD
        | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3)
}

/// Appends Python's `repr()` of a `str`.
pub fn repr_str(s: &str, out: &mut String) {
    repr_str_upto(s, out, usize::MAX)
}

fn repr_str_upto(s: &str, out: &mut String, cap: usize) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        if out.len() > cap {
            return;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if py_printable(c) => out.push(c),
            c => {
                let u = c as u32;
                if u < 0x100 {
                    out.push_str(&format!("\\x{u:02x}"));
                } else if u < 0x10000 {
                    out.push_str(&format!("\\u{u:04x}"));
                } else {
                    out.push_str(&format!("\\U{u:08x}"));
                }
            }
        }
    }
    out.push(quote);
}

/// Appends Python's `repr()` of a `bytes` value.
pub fn repr_bytes(b: &[u8], out: &mut String) {
    repr_bytes_upto(b, out, usize::MAX)
}

fn repr_bytes_upto(b: &[u8], out: &mut String, cap: usize) {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    out.push('b');
    out.push(quote as char);
    for &x in b {
        if out.len() > cap {
            return;
        }
        match x {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            x if x == quote => {
                out.push('\\');
                out.push(x as char);
            }
            0x20..=0x7e => out.push(x as char),
            x => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\x");
                out.push(HEX[usize::from(x >> 4)] as char);
                out.push(HEX[usize::from(x & 15)] as char);
            }
        }
    }
    out.push(quote as char);
}

/// Incrementally renders `str(list_of_tuples)`, stopping early once the text is longer than
/// `stop_after` characters: the observation is cut at 800 anyway, so neither a million-row
/// result nor a row of many 16 MB values ever has to be held in memory or rendered whole.
#[derive(Debug)]
pub struct RowsRenderer {
    out: String,
    rows: usize,
    stop_after: usize,
}

impl RowsRenderer {
    /// A renderer that may stop once more than `stop_after` characters are produced.
    pub fn new(stop_after: usize) -> Self {
        Self {
            out: String::from("["),
            rows: 0,
            stop_after,
        }
    }

    /// Adds one row; returns `false` once enough text exists and the caller may stop fetching.
    pub fn push_row(&mut self, row: &[PyValue]) -> bool {
        self.push_row_with(row.len(), |i| Ok::<_, std::convert::Infallible>(&row[i]))
            .unwrap_or_else(|never| match never {})
    }

    /// Adds one row of `n` values as Python's `repr()` of a tuple (`()`, `(x,)`, `(a, b)`),
    /// asking `value(i)` for each in turn, and no more once enough text exists (the rest would
    /// lie past the cut); returns `false` then, or `value`'s error.
    pub fn push_row_with<V: Borrow<PyValue>, E>(
        &mut self,
        n: usize,
        mut value: impl FnMut(usize) -> Result<V, E>,
    ) -> Result<bool, E> {
        // More bytes than four per character surely means more than `stop_after` characters.
        let cap = self.stop_after.saturating_mul(4);
        if self.rows > 0 {
            self.out.push_str(", ");
        }
        self.rows += 1;
        self.out.push('(');
        for i in 0..n {
            if self.out.len() > cap {
                return Ok(false);
            }
            if i > 0 {
                self.out.push_str(", ");
            }
            repr_value_upto(value(i)?.borrow(), &mut self.out, cap);
        }
        if n == 1 {
            self.out.push(',');
        }
        self.out.push(')');
        Ok(self.out.len() <= self.stop_after || self.out.chars().count() <= self.stop_after)
    }

    /// The rendered list (with its closing bracket).
    pub fn finish(mut self) -> String {
        self.out.push(']');
        self.out
    }
}

/// Cuts a DB observation as AgentBench does: more than 800 characters → the first 800 +
/// `[TRUNCATED]`.
pub fn truncate_db_output(s: &str) -> String {
    const LIMIT: usize = 800;
    match s.char_indices().nth(LIMIT) {
        Some((idx, _)) => format!("{}[TRUNCATED]", &s[..idx]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(rows: &[Vec<PyValue>]) -> String {
        let mut rr = RowsRenderer::new(usize::MAX);
        for row in rows {
            rr.push_row(row);
        }
        rr.finish()
    }

    #[test]
    fn python_float_repr() {
        // Expected strings produced by CPython 3.11 `repr(float)`.
        // Halfway between two shortest strings: Python rounds to even.
        // Exactly 233115890514796.125 and -2020163013628192.25.
        assert_eq!(repr_float(233115890514796.0 + 0.125), "233115890514796.12");
        assert_eq!(repr_float(-2020163013628192.0 - 0.25), "-2020163013628192.2");
        assert_eq!(repr_float(f64::from_bits(4834724727068684697)), "1716481631878246.2");
        let cases = [
            (1.0, "1.0"),
            (28.0, "28.0"),
            (0.1, "0.1"),
            (59.555, "59.555"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345.6, "123456789012345.6"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5, "-2.5"),
            (-0.0, "-0.0"),
            (2.0 / 3.0, "0.6666666666666666"),
            (1e300, "1e+300"),
            (f64::INFINITY, "inf"),
            (5e-324, "5e-324"),
            (100.0, "100.0"),
            (1234.5, "1234.5"),
        ];
        for (f, want) in cases {
            assert_eq!(repr_float(f), want, "repr of {f:e}");
        }
    }

    #[test]
    fn python_str_repr() {
        let mut s = String::new();
        repr_str("March 19, 1998", &mut s);
        assert_eq!(s, "'March 19, 1998'");
        let mut s = String::new();
        repr_str("Checco D'Angelo", &mut s);
        assert_eq!(s, "\"Checco D'Angelo\"");
        let mut s = String::new();
        repr_str("both ' and \"", &mut s);
        assert_eq!(s, r#"'both \' and "'"#);
        let mut s = String::new();
        repr_str("a\\b\nc\td\x01é–\u{a0}", &mut s);
        assert_eq!(s, r"'a\\b\nc\td\x01é–\xa0'");
        // Format characters (Cf) outside the first planes, as CPython 3.11 escapes them.
        let mut s = String::new();
        repr_str("\u{890}\u{110cd}\u{13430}\u{1bca3}", &mut s);
        assert_eq!(s, r"'\u0890\U000110cd\U00013430\U0001bca3'");
        let mut s = String::new();
        repr_bytes(b"x'\x00\xff", &mut s);
        assert_eq!(s, r#"b"x'\x00\xff""#);
    }

    #[test]
    fn list_of_tuples() {
        assert_eq!(r(&[]), "[]");
        assert_eq!(
            r(&[vec![PyValue::Str("March 19, 1998".into())]]),
            "[('March 19, 1998',)]"
        );
        assert_eq!(r(&[vec![PyValue::Int(28)]]), "[(28,)]");
        assert_eq!(
            r(&[
                vec![PyValue::Decimal("59.555".into()), PyValue::None],
                vec![PyValue::Float(2.0), PyValue::Int(-1)]
            ]),
            "[(Decimal('59.555'), None), (2.0, -1)]"
        );
        assert_eq!(r(&[vec![]]), "[()]");
        assert_eq!(
            r(&[vec![
                PyValue::Date {
                    year: 2020,
                    month: 1,
                    day: 2
                },
                PyValue::DateTime {
                    year: 2020,
                    month: 1,
                    day: 2,
                    hour: 3,
                    minute: 4,
                    second: 0,
                    micros: 0
                },
                PyValue::TimeDelta(-1),
                PyValue::TimeDelta(3_600_000_000),
            ]]),
            "[(datetime.date(2020, 1, 2), datetime.datetime(2020, 1, 2, 3, 4), \
             datetime.timedelta(days=-1, seconds=86399, microseconds=999999), datetime.timedelta(seconds=3600))]"
        );
    }

    #[test]
    fn truncation_rule() {
        let short = "x".repeat(800);
        assert_eq!(truncate_db_output(&short), short);
        let long = "é".repeat(801);
        let t = truncate_db_output(&long);
        assert_eq!(t, format!("{}[TRUNCATED]", "é".repeat(800)));
    }

    #[test]
    fn renderer_stops_early() {
        let mut rr = RowsRenderer::new(20);
        let mut n = 0;
        while rr.push_row(&[PyValue::Int(12345)]) {
            n += 1;
        }
        assert!(n < 5);
        assert!(rr.finish().len() > 20);
    }

    #[test]
    fn a_cut_render_is_a_prefix_of_the_whole_and_asks_for_no_more_values() {
        let long_str = format!("{}'é\n\u{0}", "x\t".repeat(3000));
        let long_bytes: Vec<u8> = (0..=255u8).cycle().take(9000).collect();
        let row = vec![
            PyValue::Int(7),
            PyValue::Str(long_str),
            PyValue::Bytes(long_bytes),
            PyValue::Str("never read".into()),
        ];
        let whole = r(std::slice::from_ref(&row));
        for stop_after in [1, 10, 100, 1000, 5000] {
            let mut rr = RowsRenderer::new(stop_after);
            let mut asked = Vec::new();
            let more = rr
                .push_row_with(row.len(), |i| {
                    asked.push(i);
                    Ok::<_, ()>(&row[i])
                })
                .unwrap();
            let cut = rr.finish();
            assert!(!more);
            assert!(cut.chars().count() > stop_after, "{stop_after}");
            let shown: String = cut.chars().take(stop_after).collect();
            assert!(whole.starts_with(&shown), "{stop_after}");
            assert!(!asked.contains(&3), "{stop_after}: asked for {asked:?}");
        }
    }
}
