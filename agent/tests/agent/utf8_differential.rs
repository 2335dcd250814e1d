//! The strict UTF-8 read of command and check-script output against Python's
//! `bytes.decode("utf-8")`, which AgentBench's OS task applied (a task whose bytes raised there
//! counted as failed; `edgeact_tools::os::decode_utf8_strict` decides the same).
//!
//! Random byte strings built from the decoder's edges (ASCII, lead bytes of every length, lone
//! and extra continuation bytes, surrogates, overlong forms, code points past U+10FFFF, cut
//! sequences) go to both sides; whether each decodes, and to what, must agree. Seeded
//! (`EDGEACT_UTF8_DIFF_SEED`, default 11; `EDGEACT_UTF8_DIFF_INPUTS`, default 4000); skipped (with
//! a message) where `python3` is not installed.

use super::python_oracle;
use edgeact_tools::os::decode_utf8_strict;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Python's half: hex bytes per line in, the decoded text as a JSON string (or `null`) out.
const PYTHON: &str = r#"
import json, sys
for line in sys.stdin:
    raw = bytes.fromhex(json.loads(line))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    print(json.dumps(text), flush=True)
"#;

/// One piece of an input: a valid character of 1-4 bytes or one of the invalid forms.
fn piece(rng: &mut StdRng) -> Vec<u8> {
    let valid = |c: u32| {
        char::from_u32(c)
            .map(|c| c.to_string().into_bytes())
            .unwrap_or_default()
    };
    match rng.random_range(0..12) {
        0..=2 => vec![rng.random_range(0x20..0x7f)],
        3 => valid(rng.random_range(0x80..0x800)),
        4 => valid(rng.random_range(0x800..0xd800)),
        5 => valid(rng.random_range(0x1_0000..0x11_0000)),
        // A lone continuation byte, a lead byte without its tail, bytes never valid.
        6 => vec![rng.random_range(0x80..0xc0)],
        7 => vec![rng.random_range(0xc0..0xf8)],
        8 => vec![[0xfe, 0xff, 0xc0, 0xc1, 0xf5][rng.random_range(0..5)]],
        // Surrogates, overlong forms, past U+10FFFF: well-formed bit patterns, all invalid.
        9 => vec![0xed, rng.random_range(0xa0..0xc0), rng.random_range(0x80..0xc0)],
        10 => [vec![0xc0, 0xaf], vec![0xe0, 0x80, 0xaf], vec![0xf0, 0x80, 0x80, 0xaf]][rng.random_range(0..3)].clone(),
        _ => vec![0xf4, rng.random_range(0x90..0xc0), 0x80, 0x80],
    }
}

#[test]
fn strict_utf8_decodes_as_python() {
    let seed = python_oracle::env_or("EDGEACT_UTF8_DIFF_SEED", 11u64);
    let count = python_oracle::env_or("EDGEACT_UTF8_DIFF_INPUTS", 4000usize);
    let mut rng = StdRng::seed_from_u64(seed);
    let inputs: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let mut bytes: Vec<u8> = (0..rng.random_range(0..6)).flat_map(|_| piece(&mut rng)).collect();
            // Sometimes cut anywhere, as a read might.
            if rng.random_bool(0.2) && !bytes.is_empty() {
                bytes.truncate(rng.random_range(0..bytes.len()));
            }
            bytes
        })
        .collect();
    let hex: Vec<String> = inputs
        .iter()
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
        .collect();
    let Some(python) = python_oracle::answers(PYTHON, &hex) else {
        return;
    };
    let mut invalid = 0;
    for (bytes, expected) in inputs.iter().zip(&python) {
        let expected: Option<String> = serde_json::from_str(expected).unwrap();
        invalid += usize::from(expected.is_none());
        let ours = decode_utf8_strict(bytes, false).map(str::to_string);
        assert_eq!(ours, expected, "{bytes:02x?} (seed {seed})");
    }
    // Both outcomes are well represented, or the comparison says little.
    assert!(
        invalid > count / 5 && invalid < count * 4 / 5,
        "{invalid} of {count} invalid"
    );
}
