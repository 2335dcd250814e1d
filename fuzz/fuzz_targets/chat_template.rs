//! libFuzzer target: an arbitrary Jinja chat template (as a GGUF's `tokenizer.chat_template`
//! would carry) rendered over a fixed conversation must give a string or an error within its
//! fuel and output budget: no panic, no hang, no unbounded output. Seed corpus in
//! `corpus/chat_template` (real Hugging Face templates and small loops and macros).
#![no_main]

use edgeact_runtime::chat::{ChatTemplate, Message, TemplateBudget};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let messages = [
        Message::system("You are a helpful assistant."),
        Message::user("List the files in /tmp."),
        Message::assistant("Think: I should run ls.\nAct: bash\n```bash\nls /tmp\n```"),
        Message::user("The output of the OS:\na.txt b.txt"),
    ];
    let Ok(template) = ChatTemplate::from_jinja(source, "<s>", "</s>") else {
        return;
    };
    // A tenth of the default budget keeps each run short; exceeding it must still be an error.
    let budget = TemplateBudget {
        base_fuel: 100_000,
        base_output_bytes: 64 << 10,
        ..TemplateBudget::default()
    };
    let input_bytes: usize = messages.iter().map(|m| m.content.len()).sum();
    if let Ok(out) = template.with_budget(budget).render(&messages, true) {
        let cap = budget.base_output_bytes + budget.output_per_input_byte * input_bytes;
        // The budget is checked as output is produced, so allow one last write past it.
        assert!(
            out.len() <= 2 * cap + 4096,
            "{} bytes of output past the budget",
            out.len()
        );
    }
});
