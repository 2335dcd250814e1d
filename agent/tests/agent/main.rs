//! Agent tests, one binary: the AgentBench protocol byte for byte ([`protocol`]: prompts,
//! parsers, judges against the harness), DB judge parity with Python's `eval`
//! ([`judge_parity`], and on random expressions [`judge_differential`]), the parsers against
//! Python's `re` on random replies ([`parser_differential`]), the strict UTF-8 read of OS
//! output against Python's decoder ([`utf8_differential`]) and the OS dev tasks set up and
//! judged in the sandbox ([`dev_tasks`]).

mod dev_tasks;
mod judge_differential;
mod judge_parity;
mod parser_differential;
mod protocol;
mod python_oracle;
mod utf8_differential;
