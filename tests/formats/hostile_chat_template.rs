//! Chat templates come from the model file, so they are untrusted code. Each test here is a
//! template that used to run until the process was killed (or aborted on a failed allocation)
//! and must now stop with `ChatError::Budget`, plus checks that real conversations still fit.

use edgeact_runtime::chat::{render_template, ChatError, ChatTemplate, Message, TemplateBudget};

fn conversation() -> Vec<Message> {
    vec![
        Message::system("be brief"),
        Message::user("hi"),
        Message::assistant("hello"),
        Message::user("bye"),
    ]
}

fn expect_budget_error(source: &str) -> String {
    match render_template(source, &conversation()) {
        Err(ChatError::Budget(msg)) => msg,
        Err(other) => panic!("expected a budget error, got another error: {other}"),
        Ok(out) => panic!("expected a budget error, rendered {} bytes", out.len()),
    }
}

#[test]
fn nested_loops_run_out_of_fuel() {
    // 10^10 iterations: without fuel this renders for hours and writes 10 GB.
    let msg = expect_budget_error("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
    assert!(msg.contains("fuel"), "{msg}");
}

#[test]
fn loop_over_a_huge_range_is_an_error() {
    // The review's template; minijinja refuses ranges this long outright, which is fine too.
    let err = render_template("{% for i in range(10**9) %}x{% endfor %}", &conversation()).unwrap_err();
    assert!(matches!(err, ChatError::Budget(_) | ChatError::Render(_)), "{err}");
}

#[test]
fn string_multiplication_blow_up_is_stopped() {
    // A 1 GB string, then printed 100000 times.
    let msg = expect_budget_error("{% set s = 'x' * 1000000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}");
    assert!(msg.contains("fuel"), "{msg}");
}

#[test]
fn string_doubling_is_stopped() {
    // 2^60 bytes by repeated concatenation: each step is one instruction.
    expect_budget_error(
        "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    );
}

#[test]
fn unbounded_recursion_is_a_budget_error() {
    let msg = expect_budget_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(msg.contains("nested"), "{msg}");
}

#[test]
fn output_is_capped() {
    // Each message repeated 1000 times: cheap in fuel (little data created per byte written),
    // but far more output than the budget's 1 MiB plus 8 bytes per input byte.
    let big = vec![Message::user("y".repeat(100_000))];
    let err = render_template(
        "{% for i in range(1000) %}{% for m in messages %}{{ m.content }}{% endfor %}{% endfor %}",
        &big,
    )
    .unwrap_err();
    match err {
        ChatError::Budget(msg) => assert!(msg.contains("output") || msg.contains("fuel"), "{msg}"),
        other => panic!("expected a budget error, got {other}"),
    }
}

#[test]
fn budget_error_message_is_clear() {
    let err = render_template(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("chat template exceeded its budget"),
        "{err}"
    );
}

#[test]
fn a_long_real_conversation_fits_the_budget() {
    // A ChatML template over 200 turns of 10 KB each (2 MB of text, far more than any context).
    let chatml = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let mut turns = Vec::new();
    for i in 0..200 {
        let text = format!("turn {i} ") + &"z".repeat(10_000);
        turns.push(if i % 2 == 0 {
            Message::user(text)
        } else {
            Message::assistant(text)
        });
    }
    let out = render_template(chatml, &turns).expect("a long conversation renders");
    assert!(out.len() > 2_000_000);
    assert!(out.ends_with("<|im_start|>assistant\n"));
}

#[test]
fn a_smaller_budget_can_be_set() {
    let tight = TemplateBudget {
        base_fuel: 100,
        fuel_per_input_byte: 0,
        ..TemplateBudget::default()
    };
    let t = ChatTemplate::from_jinja("{% for i in range(1000) %}x{% endfor %}", "", "")
        .unwrap()
        .with_budget(tight);
    assert!(matches!(t.render(&[], false), Err(ChatError::Budget(_))));
    let roomy = ChatTemplate::from_jinja("{% for i in range(1000) %}x{% endfor %}", "", "").unwrap();
    assert_eq!(roomy.render(&[], false).unwrap().len(), 1000);
}

#[test]
fn a_hostile_template_inside_a_model_file_is_budgeted_too() {
    // `agent`, `eval`, `run --chat` and `chat` take the template from the GGUF by default.
    let mut w = edgeact_quantize::GgufWriter::new();
    w.set_str("general.architecture", "llama").unwrap();
    w.set_str(
        "tokenizer.chat_template",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ messages[0].content }}{% endfor %}{% endfor %}",
    )
    .unwrap();
    let bytes = w.write_to_vec(|_, _, _| std::io::Result::Ok(())).unwrap();
    let file = edgeact_runtime::gguf::GgufFile::from_bytes(bytes).unwrap();
    let template = ChatTemplate::from_gguf(&file).unwrap();
    assert!(matches!(
        template.render(&conversation(), true),
        Err(ChatError::Budget(_))
    ));
}
