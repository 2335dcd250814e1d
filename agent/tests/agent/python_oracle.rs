//! `python3` as the oracle of the differential tests ([`judge_differential`](super::judge_differential),
//! [`parser_differential`](super::parser_differential)): a script reads one JSON string per line
//! and prints one line per input.

use std::io::Write;
use std::process::{Command, Stdio};

/// The lines `script` prints for `inputs` (each sent as a JSON string on a line of its own), or
/// `None` (with a message) where `python3` cannot be started.
pub fn answers(script: &str, inputs: &[String]) -> Option<Vec<String>> {
    let mut python = match Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped: no python3 to compare with ({e})");
            return None;
        }
    };
    let mut text = String::new();
    for input in inputs {
        text.push_str(&serde_json::to_string(input).unwrap());
        text.push('\n');
    }
    // Written from a thread: Python answers while it reads, and both pipes are bounded.
    let mut stdin = python.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = python.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "python3 failed");
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), inputs.len(), "python3 answers every input");
    Some(lines)
}

/// A number from the environment (to draw other or more inputs), else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
