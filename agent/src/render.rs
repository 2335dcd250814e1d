//! Building the message history the way AgentBench does (OS one-shot prompt, DB prompt,
//! observations), trimming it before each model call, and rendering it into the FastChat
//! `llama-2` prompt string that AgentLM saw.

use super::protocol_text as text;
use edgeact_runtime::py;
use serde::{Deserialize, Serialize};

/// Who wrote a message. AgentBench calls the model's side `agent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Agent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn agent(content: impl Into<String>) -> Message {
        Message {
            role: Role::Agent,
            content: content.into(),
        }
    }
}

/// The one-shot exchange of the OS task (user question first).
pub fn os_one_shot() -> Vec<Message> {
    // The JSON is a compile-time constant checked by the tests, so failing to parse it is a
    // build defect; an empty example is the least harmful fallback.
    serde_json::from_str(text::OS_ONE_SHOT_JSON).unwrap_or_default()
}

/// The OS history before the first model call: instruction + one-shot question, the injected
/// one-shot turns, then the task description.
pub fn os_initial_history(description: &str) -> Vec<Message> {
    let shot = os_one_shot();
    let mut out = Vec::with_capacity(shot.len() + 1);
    let question = shot.first().map(|m| m.content.as_str()).unwrap_or_default();
    out.push(Message::user(format!(
        "{}{}{}",
        text::OS_INSTRUCTION,
        text::OS_PROBLEM_PREFIX,
        question
    )));
    out.extend(shot.into_iter().skip(1));
    out.push(Message::user(format!("{}{}", text::OS_NEW_PROBLEM_PREFIX, description)));
    out
}

/// The DB history before the first model call.
pub fn db_initial_history(description: &str, add_description: &str) -> Vec<Message> {
    vec![
        Message::user(text::DB_INSTRUCTION),
        Message::agent(text::DB_ACK),
        Message::user(format!("{description}\n{add_description}")),
    ]
}

/// The user turn that reports a bash command's output (characters counted as Python does).
pub fn os_observation(output: &str) -> String {
    if output.is_empty() {
        return text::OS_OUTPUT_EMPTY.to_string();
    }
    let body = if py::len(output) > text::OS_TRUNCATE_OVER {
        format!(
            "{}{}",
            py::prefix(output, text::OS_TRUNCATE_KEEP),
            text::OS_TRUNCATED_NOTE
        )
    } else {
        output.to_string()
    };
    format!("{}{}", text::OS_OUTPUT_PREFIX, body)
}

/// The DB result cut to 800 characters + `[TRUNCATED]` (idempotent, so applying it to an
/// already truncated result changes nothing). An empty result stays empty: AgentBench then
/// injects an empty user turn.
pub fn db_observation(result: &str) -> String {
    if py::len(result) > text::DB_TRUNCATE_AT {
        format!(
            "{}{}",
            py::prefix(result, text::DB_TRUNCATE_AT),
            text::DB_TRUNCATED_NOTE
        )
    } else {
        result.to_string()
    }
}

/// AgentBench's segment count: a run of letters counts 1 per started 7-letter chunk, every
/// other character except space and newline counts 1.
pub fn segments(msg: &str) -> usize {
    let mut segs = 0;
    let mut run = 0usize;
    for c in msg.chars() {
        // Python's isalpha(); Rust's Alphabetic property is a close superset (it adds some
        // combining marks), which only matters for exotic scripts.
        if c.is_alphabetic() {
            run += 1;
            if run >= 7 {
                segs += 1;
                run = 0;
            }
        } else {
            if run > 0 {
                segs += 1;
                run = 0;
            }
            if c != ' ' && c != '\n' {
                segs += 1;
            }
        }
    }
    if run > 0 {
        segs += 1;
    }
    segs
}

/// The history actually sent to the model: the first message always; then messages from the
/// newest backwards while the running segment count (first message included) stays below
/// 3500; a user message at the old end of the kept tail is dropped so turns still alternate;
/// if anything was left out, the first message gets the `[NOTICE]` line.
pub fn trim_history(messages: &[Message]) -> Vec<Message> {
    let Some(first) = messages.first() else {
        return Vec::new();
    };
    let mut total = segments(&first.content);
    let mut kept: Vec<&Message> = Vec::new();
    for m in messages[1..].iter().rev() {
        total += segments(&m.content);
        if total >= text::TRIM_SEGMENT_THRESHOLD {
            break;
        }
        kept.push(m);
    }
    if kept.last().is_some_and(|m| m.role == Role::User) {
        kept.pop();
    }
    let omitted = messages.len() - kept.len() - 1;
    let mut head = first.clone();
    if omitted > 0 {
        head.content.push_str(&text::omitted_notice(omitted));
    }
    let mut out = Vec::with_capacity(kept.len() + 1);
    out.push(head);
    out.extend(kept.into_iter().rev().cloned());
    out
}

/// Which system prompt the llama-2 rendering uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// The AgentBench harness: no system message.
    Eval,
    /// The AgentLM model card's system prompt.
    Agent,
    /// Any other system prompt.
    System(String),
}

impl ChatTemplate {
    pub fn system(&self) -> Option<&str> {
        match self {
            ChatTemplate::Eval => None,
            ChatTemplate::Agent => Some(text::MODEL_CARD_SYSTEM_PROMPT),
            ChatTemplate::System(s) => Some(s),
        }
    }

    /// `eval` or `agent`.
    pub fn from_name(name: &str) -> Option<ChatTemplate> {
        match name {
            "eval" => Some(ChatTemplate::Eval),
            "agent" => Some(ChatTemplate::Agent),
            _ => None,
        }
    }
}

/// FastChat's `llama-2` prompt of the history with `template`'s system prompt, ending with
/// `[/INST]` for the reply (see [`edgeact_runtime::chat`]'s renderer, shared with the chat templates).
pub fn render_llama2(messages: &[Message], template: &ChatTemplate) -> String {
    edgeact_runtime::chat::fastchat_llama2(template.system(), messages.iter().map(|m| m.content.as_str()), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_turn_rendering() {
        let msgs = vec![
            Message::user("  hello\n"),
            Message::agent("Think: hi\n\nAct: finish"),
            Message::user("The output of the OS:\n\nx\r\n"),
        ];
        assert_eq!(
            render_llama2(&msgs, &ChatTemplate::Eval),
            "[INST] hello [/INST] Think: hi\n\nAct: finish </s><s>[INST] The output of the OS:\n\nx [/INST]"
        );
        assert_eq!(
            render_llama2(&msgs[..1], &ChatTemplate::Agent),
            "[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.\n<</SYS>>\n\nhello [/INST]"
        );
    }

    #[test]
    fn empty_message_renders_tag_only() {
        let msgs = vec![Message::user("q"), Message::agent("a"), Message::user("")];
        assert_eq!(
            render_llama2(&msgs, &ChatTemplate::Eval),
            "[INST] q [/INST] a </s><s>[INST][/INST]"
        );
    }

    #[test]
    fn segment_count() {
        assert_eq!(segments("abcdefg"), 1);
        assert_eq!(segments("abcdefgh"), 2);
        assert_eq!(segments("ab cd\n"), 2);
        assert_eq!(segments("a1,b"), 4);
        assert_eq!(segments(""), 0);
    }

    #[test]
    fn observations() {
        assert_eq!(os_observation(""), "The output of the OS is empty.");
        let long = "é".repeat(801);
        let o = os_observation(&long);
        assert_eq!(
            o,
            format!(
                "The output of the OS:\n\n{}\n[truncated because the output is too long]",
                "é".repeat(780)
            )
        );
        assert_eq!(
            os_observation(&"a".repeat(800)),
            format!("The output of the OS:\n\n{}", "a".repeat(800))
        );
        let d = db_observation(&"x".repeat(900));
        assert_eq!(d, format!("{}[TRUNCATED]", "x".repeat(800)));
        assert_eq!(db_observation(&d), d);
    }

    #[test]
    fn trimming() {
        let big = "a, ".repeat(1000); // 1000 letters-runs + 1000 commas = 2000 segments
        let mut msgs = vec![Message::user("first")];
        for i in 0..4 {
            msgs.push(Message::agent(format!("reply {i} {big}")));
            msgs.push(Message::user(format!("obs {i}")));
        }
        let t = trim_history(&msgs);
        // Newest first: obs 3, reply 3, obs 2 fit (2007 segments with the first message);
        // reply 2 crosses 3500. The oldest kept (obs 2) is a user turn and is dropped.
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].content, "first\n\n[NOTICE] 6 messages are omitted.");
        assert_eq!(t[1].content, format!("reply 3 {big}"));
        assert_eq!(t[2].content, "obs 3");
        let short = vec![Message::user("a"), Message::agent("b"), Message::user("c")];
        assert_eq!(trim_history(&short), short);
    }

    #[test]
    fn histories() {
        let h = os_initial_history("count files");
        assert_eq!(h.len(), 7);
        assert!(h[0]
            .content
            .ends_with("turn.\n\nNow, my problem is:\n\ntell me how many files are in the directory \"/etc\"?"));
        assert_eq!(
            h[5].content,
            "Think: Now I get the answer, it is 220.\n\nAct: answer(220)"
        );
        assert_eq!(
            h[6].content,
            "Now, I will start a new problem in a new OS. My problem is:\n\ncount files"
        );
        let d = db_initial_history("Q?", "The name of this table is t.");
        assert_eq!(d[1].content, "Ok.");
        assert_eq!(d[2].content, "Q?\nThe name of this table is t.");
    }
}
