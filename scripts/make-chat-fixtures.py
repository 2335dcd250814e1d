#!/usr/bin/env python3
"""Writes tests/fixtures/chat/chat_fixtures.json: conversations rendered by the reference
implementations, compared byte for byte by tests/chat_templates.rs.

- `smollm2`: SmolLM2's `tokenizer.chat_template` (read from the GGUF) rendered by
  `transformers`' `apply_chat_template` (tokenizer only, built from the GGUF vocabulary).
- `llama2-hf`: Meta's Llama-2-chat Jinja template (the shared llama2 tokenizer_config.json has
  no chat_template, so the well-known template text is stored here) rendered by transformers
  with the shared Llama-2 tokenizer (bos `<s>`, eos `</s>`).
- `fastchat-eval` / `fastchat-agent`: FastChat 0.2.31's `llama-2` conversation template, the
  format AgentBench prompted AgentLM with (contents `.strip()`ped as AgentBench's client does),
  without and with AgentLM's model-card system prompt.

Needs: pip install transformers tokenizers gguf numpy; pip install --no-deps fschat==0.2.31;
scripts/fetch-smollm2.sh. Usage: python3 scripts/make-chat-fixtures.py
"""
import importlib.util
import json
import os

from transformers import AutoTokenizer, PreTrainedTokenizerFast
from fastchat.conversation import get_conv_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "models", "llama2-tokenizer")
OUT = os.path.join(ROOT, "tests", "fixtures", "chat", "chat_fixtures.json")

AGENTLM_SYSTEM = "You are a helpful, respectful and honest assistant."

LLAMA2_HF_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

OS_OBS = "The output of the OS:\n\n3\r\n\u001b]0;root@708762f582f8: /\u0007root@708762f582f8:/# \u001b[K"
CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is the capital of France?"}],
    "system": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Say hi."},
    ],
    "multi": [
        {"role": "user", "content": "  How many files are in /etc?  "},
        {"role": "assistant", "content": "Think: I should count.\n\nAct: bash\n\n```bash\nls /etc | wc -l\n```"},
        {"role": "user", "content": OS_OBS},
        {"role": "assistant", "content": "Think: Now I get the answer, it is 3.\n\nAct: answer(3)"},
        {"role": "user", "content": "Now, I will start a new problem in a new OS. My problem is:\n\nCount users."},
    ],
    "unicode": [
        {"role": "user", "content": "Crème brûlée 中文 😀\ttab"},
        {"role": "assistant", "content": "Oui ! 👍"},
        {"role": "user", "content": "Merci\n"},
    ],
}
# Templates that take a system turn; SmolLM2's also accepts any conversation.
CASES = {
    "smollm2": ["single", "system", "multi", "unicode"],
    "llama2-hf": ["single", "system", "multi", "unicode"],
    "fastchat-eval": ["single", "system", "multi", "unicode"],
    "fastchat-agent": ["single", "multi", "unicode"],
}


def fastchat(messages, system, add_generation_prompt):
    conv = get_conv_template("llama-2")
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"].strip(), messages[1:]
    if system:
        conv.set_system_message(system)
    for i, m in enumerate(messages):
        conv.append_message(conv.roles[i % 2], m["content"].strip())
    if add_generation_prompt:
        conv.append_message(conv.roles[len(messages) % 2], None)
    return conv.get_prompt()


def smollm2_hf():
    spec = importlib.util.spec_from_file_location("fx", os.path.join(ROOT, "scripts", "make-tokenizer-fixtures.py"))
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    tok, template = fx.smollm2_tokenizer()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", chat_template=template
    )
    return hf, template


def main():
    smol, smol_template = smollm2_hf()
    llama = AutoTokenizer.from_pretrained(SHARED)
    assert llama.bos_token == "<s>" and llama.eos_token == "</s>"
    cases = []
    for template, names in CASES.items():
        for name in names:
            for gen in (False, True):
                msgs = CONVERSATIONS[name]
                if template == "smollm2":
                    text = smol.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
                elif template == "llama2-hf":
                    text = llama.apply_chat_template(
                        msgs, chat_template=LLAMA2_HF_TEMPLATE, tokenize=False, add_generation_prompt=gen
                    )
                elif template == "fastchat-eval":
                    text = fastchat(msgs, None, gen)
                else:
                    text = fastchat(msgs, AGENTLM_SYSTEM, gen)
                cases.append({"template": template, "conversation": name, "add_generation_prompt": gen, "text": text})
    out = {
        "about": "made by scripts/make-chat-fixtures.py (transformers apply_chat_template, FastChat 0.2.31)",
        "templates": {
            "smollm2": {"source": smol_template, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
            "llama2-hf": {"source": LLAMA2_HF_TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"},
        },
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, indent=1)
        f.write("\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
