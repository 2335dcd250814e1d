//! `instr`, `replace` and the two-argument `trim`/`ltrim`/`rtrim` for the embedded SQLite
//! backend, replacing SQLite's built-ins for the same reason as [`super::pattern`]: each is one
//! VM step that SQLite never interrupts, and each is quadratic in SQLite (a naive `memcmp` at
//! every position, or every input character against every trim character), so one call on 16 MB
//! values could run for hours. These give SQLite's results in linear time (a Knuth–Morris–Pratt
//! search, a hash set of trim characters) and also stop when the statement watchdog fires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a function produced no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// The statement watchdog fired.
    Interrupted,
    /// The result would exceed the largest value allowed.
    TooBig,
}

/// Work units between two looks at the interrupt flag.
const STEPS_PER_INTERRUPT_CHECK: usize = 1 << 14;

/// Counts work (bytes scanned or hashed) and looks at the interrupt flag at the first spend and
/// then each time [`STEPS_PER_INTERRUPT_CHECK`] units have been spent.
struct Meter(usize);

impl Meter {
    fn new() -> Meter {
        Meter(STEPS_PER_INTERRUPT_CHECK)
    }

    fn spend(&mut self, units: usize, interrupted: &AtomicBool) -> Result<(), TextError> {
        self.0 += units;
        if self.0 >= STEPS_PER_INTERRUPT_CHECK {
            self.0 = 0;
            if interrupted.load(Ordering::Relaxed) {
                return Err(TextError::Interrupted);
            }
        }
        Ok(())
    }
}

/// A Knuth–Morris–Pratt searcher for one non-empty needle.
struct Searcher<'a> {
    needle: &'a [u8],
    /// `fail[i]`: length of the longest proper border of `needle[..=i]`.
    fail: Vec<usize>,
}

impl<'a> Searcher<'a> {
    fn new(needle: &'a [u8]) -> Self {
        let mut fail = vec![0; needle.len()];
        let mut k = 0;
        for i in 1..needle.len() {
            while k > 0 && needle[i] != needle[k] {
                k = fail[k - 1];
            }
            if needle[i] == needle[k] {
                k += 1;
            }
            fail[i] = k;
        }
        Self { needle, fail }
    }

    /// Start of the first occurrence at or after `from`.
    fn find(&self, hay: &[u8], from: usize, interrupted: &AtomicBool) -> Result<Option<usize>, TextError> {
        let mut k = 0;
        let mut meter = Meter::new();
        for (i, &b) in hay.iter().enumerate().skip(from) {
            meter.spend(1, interrupted)?;
            while k > 0 && b != self.needle[k] {
                k = self.fail[k - 1];
            }
            if b == self.needle[k] {
                k += 1;
            }
            if k == self.needle.len() {
                return Ok(Some(i + 1 - k));
            }
        }
        Ok(None)
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// SQLite's `instr(haystack, needle)`: the 1-based position of the first occurrence, counted in
/// characters for text (`as_text`) and bytes for two blobs; 1 for an empty needle, 0 when absent.
/// For text, SQLite only tries positions that start a character (and position 0).
pub fn instr(hay: &[u8], needle: &[u8], as_text: bool, interrupted: &AtomicBool) -> Result<i64, TextError> {
    if needle.is_empty() {
        return Ok(1);
    }
    let searcher = Searcher::new(needle);
    let mut from = 0;
    loop {
        let Some(at) = searcher.find(hay, from, interrupted)? else {
            return Ok(0);
        };
        if !as_text {
            return Ok(at as i64 + 1);
        }
        if at == 0 || !is_continuation(hay[at]) {
            let skipped = hay[1..=at].iter().filter(|&&b| !is_continuation(b)).count();
            return Ok(if at == 0 { 1 } else { skipped as i64 + 1 });
        }
        from = at + 1;
    }
}

/// SQLite's `replace(text, pattern, replacement)` over bytes: every non-overlapping occurrence,
/// left to right; an empty pattern (or one starting with NUL) leaves the text as it is.
pub fn replace(
    text: &[u8],
    pattern: &[u8],
    replacement: &[u8],
    max_len: usize,
    interrupted: &AtomicBool,
) -> Result<Vec<u8>, TextError> {
    if pattern.first().is_none_or(|&b| b == 0) {
        return Ok(text.to_vec());
    }
    let searcher = Searcher::new(pattern);
    let mut out = Vec::with_capacity(text.len().min(max_len));
    let mut from = 0;
    while let Some(at) = searcher.find(text, from, interrupted)? {
        out.extend_from_slice(&text[from..at]);
        if out.len() + replacement.len() > max_len {
            return Err(TextError::TooBig);
        }
        out.extend_from_slice(replacement);
        from = at + pattern.len();
    }
    out.extend_from_slice(&text[from..]);
    if out.len() > max_len {
        return Err(TextError::TooBig);
    }
    Ok(out)
}

/// Which ends `trim` works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimEnds {
    /// `ltrim`.
    Left,
    /// `rtrim`.
    Right,
    /// `trim`.
    Both,
}

/// SQLite's two-argument `trim`: removes from the chosen ends every character of `set` (a lead
/// byte with its continuation bytes; `set` ends at its first NUL). Where several characters of
/// `set` match, SQLite takes the first one in `set`, which this reproduces.
pub fn trim<'a>(text: &'a [u8], set: &[u8], ends: TrimEnds, interrupted: &AtomicBool) -> Result<&'a [u8], TextError> {
    let set = set.iter().position(|&b| b == 0).map_or(set, |nul| &set[..nul]);
    // Each character of the set → its first index in the set; and the distinct lengths.
    let mut first_index: HashMap<&[u8], usize> = HashMap::new();
    let mut lengths: Vec<usize> = Vec::new();
    let mut seen_lengths = std::collections::HashSet::new();
    let mut pos = 0;
    while pos < set.len() {
        let mut end = pos + 1;
        if set[pos] >= 0xC0 {
            while end < set.len() && is_continuation(set[end]) {
                end += 1;
            }
        }
        let index = first_index.len();
        first_index.entry(&set[pos..end]).or_insert(index);
        // A set of a few thousand long "characters" then millions of bytes made a linear
        // `contains` here billions of comparisons before the first interrupt check.
        if seen_lengths.insert(end - pos) {
            lengths.push(end - pos);
        }
        pos = end;
    }
    if first_index.is_empty() {
        return Ok(text);
    }
    // The length of the character of the set that SQLite would match at one end, if any.
    let matched = |piece_at: &dyn Fn(usize) -> Option<&'a [u8]>| {
        lengths
            .iter()
            .filter_map(|&len| piece_at(len).and_then(|p| first_index.get(p)).map(|&i| (i, len)))
            .min()
            .map(|(_, len)| len)
    };
    // Each position hashes one piece per distinct length: that many bytes of work (invalid
    // UTF-8 "characters" of thousands of lengths made it gigabytes between two checks).
    let work_per_position: usize = lengths.iter().sum();
    let mut meter = Meter::new();
    let (mut start, mut end) = (0, text.len());
    if ends != TrimEnds::Right {
        while start < end {
            meter.spend(work_per_position, interrupted)?;
            let s = start;
            let piece = |len: usize| (s + len <= end).then(|| &text[s..s + len]);
            match matched(&piece) {
                Some(len) => start += len,
                None => break,
            }
        }
    }
    if ends != TrimEnds::Left {
        while start < end {
            meter.spend(work_per_position, interrupted)?;
            let e = end;
            let piece = |len: usize| (len <= e - start).then(|| &text[e - len..e]);
            match matched(&piece) {
                Some(len) => end -= len,
                None => break,
            }
        }
    }
    Ok(&text[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no() -> AtomicBool {
        AtomicBool::new(false)
    }

    #[test]
    fn instr_like_sqlite() {
        assert_eq!(instr(b"hello", b"ll", true, &no()), Ok(3));
        assert_eq!(instr(b"hello", b"", true, &no()), Ok(1));
        assert_eq!(instr(b"", b"", true, &no()), Ok(1));
        assert_eq!(instr(b"hello", b"z", true, &no()), Ok(0));
        assert_eq!(instr("héllo".as_bytes(), b"l", true, &no()), Ok(3), "characters");
        assert_eq!(instr("héllo".as_bytes(), b"l", false, &no()), Ok(4), "bytes");
        assert_eq!(instr(b"aaab", b"aab", true, &no()), Ok(2));
        assert_eq!(
            instr(&[0xC3, 0xA9, 0xA9], &[0xA9], true, &no()),
            Ok(0),
            "no match inside a character"
        );
    }

    #[test]
    fn replace_like_sqlite() {
        let r = |t: &str, p: &str, s: &str| {
            String::from_utf8(replace(t.as_bytes(), p.as_bytes(), s.as_bytes(), 1000, &no()).unwrap()).unwrap()
        };
        assert_eq!(r("aaaa", "aa", "b"), "bb");
        assert_eq!(r("abcabc", "bc", "XYZ"), "aXYZaXYZ");
        assert_eq!(r("abc", "", "x"), "abc");
        assert_eq!(r("abc", "abcd", "x"), "abc");
        assert_eq!(r("aaa", "a", ""), "");
        assert_eq!(replace(b"aaaa", b"a", b"xxxxxxxxxx", 20, &no()), Err(TextError::TooBig));
    }

    /// A set of characters of thousands of lengths (invalid UTF-8: a lead byte and any number of
    /// continuation bytes) costs that many bytes hashed at each position: the interrupt flag is
    /// looked at by work done, not by positions (16384 positions were gigabytes of hashing).
    #[test]
    fn trim_checks_the_interrupt_by_work_done() {
        let mut set = Vec::new();
        for k in 1..300 {
            set.push(0xC0);
            set.extend(std::iter::repeat_n(0x80, k));
        }
        let text: Vec<u8> = [0xC0, 0x80].repeat(10);
        let fired = AtomicBool::new(true);
        assert_eq!(trim(&text, &set, TrimEnds::Left, &fired), Err(TextError::Interrupted));
        assert_eq!(trim(&text, &set, TrimEnds::Left, &no()), Ok(&b""[..]));
    }

    #[test]
    fn trim_like_sqlite() {
        let t = |s: &str, set: &str, e| {
            String::from_utf8(trim(s.as_bytes(), set.as_bytes(), e, &no()).unwrap().to_vec()).unwrap()
        };
        assert_eq!(t("xxhixx", "x", TrimEnds::Both), "hi");
        assert_eq!(t("xyhiyx", "yx", TrimEnds::Left), "hiyx");
        assert_eq!(t("xyhiyx", "yx", TrimEnds::Right), "xyhi");
        assert_eq!(t("éhié", "é", TrimEnds::Both), "hi");
        assert_eq!(t("abc", "", TrimEnds::Both), "abc");
        assert_eq!(t("aaa", "a", TrimEnds::Both), "");
    }

    #[test]
    fn quadratic_inputs_are_fast_and_interruptible() {
        let hay = vec![b'a'; 4 << 20];
        let mut needle = vec![b'a'; 2 << 20];
        needle.push(b'b');
        assert_eq!(instr(&hay, &needle, true, &no()), Ok(0));
        assert_eq!(
            instr(&hay, &needle, true, &AtomicBool::new(true)),
            Err(TextError::Interrupted)
        );
        let mut set = vec![b'b'; 1 << 20];
        set.push(b'a');
        assert_eq!(trim(&hay, &set, TrimEnds::Both, &no()), Ok(&b""[..]));
    }
}
