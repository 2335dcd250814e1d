#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/corpus.json: token ids from Hugging Face `tokenizers` for a
test corpus, used by tests/tokenizer_*.rs to check edgeact's tokenizers id for id.

- Llama-2: /work/shared/models/llama2-tokenizer/tokenizer.json (checkout-relative ../shared).
- SmolLM2: its tokenizer.json is rebuilt from the GGUF's vocabulary and merges (the `gguf`
  package reads them) with SmolLM2's pre-tokenizer (individual digits + GPT-2 ByteLevel regex)
  and its special tokens; run scripts/fetch-smollm2.sh first.

Needs: pip install tokenizers gguf numpy. Usage: python3 scripts/make-tokenizer-fixtures.py
"""
import json
import os
import sys

from tokenizers import Tokenizer, AddedToken, Regex, decoders, models, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "models", "llama2-tokenizer")
SMOLLM2 = os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "corpus.json")

CORPUS = [
    "Hello world",
    "The capital of France is",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you've heard they'll say it's fine, we'd LOVE IT'S DONE",
    "Crème brûlée, naïve café, Ångström, Straße, ÀÉÎÕÜ",
    "Ελληνικά και русский язык",
    "中文分词测试：我爱北京天安门。",
    "日本語のテキスト、カタカナとひらがな",
    "한국어 문장입니다",
    "हिन्दी और العربية ٣٤٥",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "   leading spaces",
    "trailing spaces   ",
    "multiple    spaces     between",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four\n",
    "windows\r\nnewlines\r\n",
    " \n \n\t \t",
    "\n\n\n",
    "numbers 0 1 12 123 1234 12345 3.14159 -42 1e10 ½ ⅔",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "ls -la /etc | grep -c '^-' && echo \"done\" > /tmp/out.txt",
    "The output of the OS:\n\n3\r\n\u001b]0;root@708762f582f8: /\u0007root@708762f582f8:/# \u001b[K",
    "Think: I should count the files.\n\nAct: bash\n\n```bash\nls /etc | wc -l\n```",
    "Act: answer(220)",
    "https://example.com/path?query=1&other=two#frag",
    "email@example.org, @user #hashtag $100 50% 3*4=12",
    "zero\u200bwidth and non\u00a0breaking and combining e\u0301",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "!!!???...,,,;;;:::---___===+++",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "{\"key\": [1, 2, {\"nested\": null}], \"b\": true}",
    "control \u0001\u0002\u007f chars",
    "",
    " ",
    "a",
]

# Llama-3's pre-tokenizer regex (HF tokenizer.json of Meta-Llama-3).
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Texts with literal special tokens, encoded with special-token parsing on.
LLAMA2_SPECIAL = [
    "[INST] hi [/INST] Hello! </s><s>[INST] ls [/INST]",
    "[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.\n<</SYS>>\n\nhi [/INST]",
    "a</s>b<s>c<unk>d",
    "</s></s> x",
]
SMOLLM2_SPECIAL = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<file_sep>x",
]


def llama2():
    tok = Tokenizer.from_file(os.path.join(SHARED, "tokenizer.json"))
    return {
        "corpus": [tok.encode(t, add_special_tokens=False).ids for t in CORPUS],
        "special": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in LLAMA2_SPECIAL],
    }


def smollm2_tokenizer(pre="smollm"):
    """SmolLM2's vocabulary with the pre-tokenizer of `pre` (a tokenizer.ggml.pre name):
    `smollm` is SmolLM2's own; `gpt2` and `llama-bpe` exercise the other presets on a real
    vocabulary (Llama-3's HF tokenizer: Split(regex, isolated) + ByteLevel without regex,
    ignore_merges)."""
    from gguf import GGUFReader

    r = GGUFReader(SMOLLM2)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    assert r.fields["tokenizer.ggml.pre"].contents() == "smollm"
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(
        vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], ignore_merges=(pre == "llama-bpe")
    )
    tok = Tokenizer(bpe)
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    elif pre == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pre == "llama-bpe":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        raise ValueError(pre)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True) for i in range(len(tokens)) if types[i] == 3])
    return tok, r.fields["tokenizer.chat_template"].contents()


def smollm2():
    tok, _ = smollm2_tokenizer()
    ids = tok.encode("The capital of France is", add_special_tokens=False).ids
    assert ids == [504, 3575, 282, 4649, 314], ids
    other = {}
    for pre in ("gpt2", "llama-bpe"):
        t, _ = smollm2_tokenizer(pre)
        other[pre] = [t.encode(x, add_special_tokens=False).ids for x in CORPUS]
    return {
        "corpus": [tok.encode(t, add_special_tokens=False).ids for t in CORPUS],
        "special": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in SMOLLM2_SPECIAL],
        "other_pre": other,
    }


def main():
    if not os.path.exists(SMOLLM2):
        sys.exit(f"{SMOLLM2} is missing: run scripts/fetch-smollm2.sh first")
    out = {
        "about": "ids from Hugging Face tokenizers (no BOS, add_special_tokens=False); made by "
        "scripts/make-tokenizer-fixtures.py",
        "corpus": CORPUS,
        "llama2": llama2(),
        "smollm2": smollm2(),
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, indent=None)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
