#!/usr/bin/env python3
"""Makes the tokenizer goldens under tests/golden/tokenizer/ with independent implementations:
Hugging Face `tokenizers` (byte-level BPE, pre-tokenizer splits) and `sentencepiece` (SPM BPE).

Usage (from the repository root, in a venv with `pip install gguf tokenizers sentencepiece`):
  python3 tests/golden/tokenizer/make_goldens.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

Writes:
  smollm2_vocab.json   SmolLM2's vocabulary from the GGUF, compact: tokens, non-normal token
                       types, special ids, and merges (see encode_merges below).
  smollm2_cases.json   the corpus with HF's ids (special tokens parsed, and not), decodes, and
                       the ids of the same vocabulary behind the "llama-bpe" (ignore_merges)
                       and "qwen2" pre-tokenizers.
  pretok_splits.json   byte end offsets of the pieces that HF's pre-tokenizers make of each
                       corpus string, for "gpt2", "smollm", "llama-bpe" and "qwen2".
  spm_model.json       a small SentencePiece BPE model (byte_fallback) trained here: pieces,
                       scores, types, flags, and sentencepiece's ids for every corpus string.
"""
import json
import os
import random
import sys
import tempfile

import sentencepiece as spm
from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GGUF = os.path.expanduser("~/.cache/spillway/models/SmolLM2-135M-Instruct.Q4_1.gguf")

GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
                r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
               r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------

HANDWRITTEN = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "\t\t\tx", "a", "A", "Hello",
    "Hello world", " Hello world", "Hello  world", "Hello   world  ", "hello\nworld",
    "hello \n world", "hello\t\tworld", "Hello, world! How are you?",
    "The quick brown fox jumps over the lazy dog.",
    "don't", "I'LL", "I'll", "you're", "we've", "she'd", "it's", "It'S", "they'RE", "'s'", "'",
    "''", "'hello'", "rock'n'roll", "y'all'd've", "'m 'd 'll 're 've 's 't", "Don’t (curly)",
    "ſ 'ſ 'ſt", "'K 'k", "1", "12", "123", "1234", "12345", "123456789012345678901234567890",
    "3.14159", "-42", "1,000,000", "0x7fffffff", "1e-9", "v1.2.3", "2024-05-01T12:34:56Z",
    "phone: +1 (555) 123-4567", "Room 101, floor 3", "a1b2c3", "abc123def", "٣٤٥ arabic digits",
    "१२३ devanagari digits", "Ⅻ roman numeral", "½ ¾ ² ³", "①②③",
    "def foo(x):\n    return x * 2\n", "if (a && b) { return c; }",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; }",
    "SELECT * FROM users WHERE id = 42;", "<div class=\"x\">text</div>",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}", "path/to/file.txt",
    "https://example.com/a?b=c&d=e#frag", "user@example.com", "$HOME && echo ${PATH}",
    "x += 1; y -= 2; z *= 3;", "a==b!=c<=d>=e", "...", "?!?!", "--- *** ___", "~~~```",
    "    indented with four spaces", "trailing spaces    ", "\t\tindented with tabs",
    "line1\nline2\r\nline3\rline4", "mixed \t \n whitespace \n\n\n end",
    "café", "naïve façade", "Crème brûlée", "e\u0301", "Ångström", "Ελληνικά κείμενο",
    "Привет, мир!", "Съешь же ещё этих мягких французских булок", "日本語のテキスト",
    "中文文本测试", "한국어 텍스트", "ภาษาไทย", "עברית", "مرحبا بالعالم", "नमस्ते दुनिया",
    "Hello мир 世界 مرحبا", "English then العربية then हिन्दी then русский",
    "emoji 😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "🇫🇷🇩🇪", "❤️", "a😀b",
    "🧑‍💻 coding", "text with\u00a0nbsp", "zero\u200bwidth", "bom\ufeffhere", "\u3000ideographic",
    "para\u2029graph", "line\u2028sep", "nel\u0085char", "fs\u001cgs\u001drs\u001eus\u001f",
    "vt\u000bff\u000c", "\u2003em space", "tab\u00a0\u00a0nbsp", "control\u0001\u0002chars",
    "<|im_start|>user\nHello<|im_end|>\n",
    "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "text<|endoftext|>text", "<|im_start|><|im_end|>", "<|im_start|", "<|im_end",
    "< |im_start| >", "<repo_name>spillway<file_sep>main.cc", "<jupyter_code>print(1)",
    "<empty_output>", "<|IM_START|>", "x <|im_start|> y",
    "Ünïcödé wörds ärë fün", "ǅ title case", "ʰ modifier", "ⓐ circled", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚 math digits",
    "ＡＢＣ１２３ fullwidth", "ﬁ ligature", "Ⓐ", "x\u0300\u0301\u0302", "ab\u0308cd",
    "\U00040000 plane 4", "snake_case_name", "camelCaseName", "SCREAMING_CASE", "kebab-case-name",
    "C++ and C#", "a\\nb", "tab\\tescape", "50% off!", "#hashtag @mention", "(parenthesized)",
    "[bracketed] {braced}", "«quoted»", "„German“", "‘single’", "—em dash—", "…ellipsis",
    "•bullet", "©®™", "€100 £50 ¥1000 ₹500", "∑∫√∞≠≈", "→←↑↓", "♠♣♥♦", "☃ snowman",
]

WORDS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "model",
         "token", "server", "request", "cache", "block", "tensor", "Hello", "World", "SPILLWAY",
         "naïve", "Zürich", "日本", "Москва", "مرحبا", "नमस्ते", "😀", "🚀", "don't", "WE'LL",
         "it's", "x", "y2k", "v2", "42", "3.14", "1000000", "0", "__init__", "std::vector",
         "<|im_end|>", "(", ")", "{", "}", ";", ",", ".", "!", "?", "'", "\"", "-", "—"]
SEPS = [" ", " ", " ", "", "  ", "\n", "\t", " \n", "\n\n", "   ", "\r\n", "\u00a0"]


def make_corpus():
    rng = random.Random(20240601)
    corpus = list(HANDWRITTEN)
    for _ in range(170):
        n = rng.randint(1, 14)
        parts = []
        for _ in range(n):
            parts.append(rng.choice(WORDS))
            parts.append(rng.choice(SEPS))
        if rng.random() < 0.5:
            parts.pop()
        corpus.append("".join(parts))
    for n in (1, 2, 3, 4, 5, 6, 7, 8, 16, 33):
        corpus.append("".join(str(rng.randint(0, 9)) for _ in range(n)))
    for _ in range(20):  # whitespace soups
        corpus.append("".join(rng.choice([" ", "\t", "\n", "\r", "a", "1", "."]) for _ in range(12)))
    seen, out = set(), []
    for s in corpus:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def training_sentences(corpus):
    rng = random.Random(7)
    lines = [s.replace("\n", " ").replace("\r", " ") for s in corpus if s.strip()]
    for _ in range(3000):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))))
    return lines


# --------------------------------------------------------------------------------------------
# SmolLM2 from the GGUF
# --------------------------------------------------------------------------------------------

def read_gguf(path):
    r = GGUFReader(path)
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = f["tokenizer.ggml.merges"].contents()
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    assert f["tokenizer.ggml.pre"].contents() == "smollm"

    def get(key, default):
        return f[key].contents() if key in f else default

    return {
        "tokens": tokens, "types": types, "merges": merges,
        "bos_id": get("tokenizer.ggml.bos_token_id", -1),
        "eos_id": get("tokenizer.ggml.eos_token_id", -1),
        "unk_id": get("tokenizer.ggml.unknown_token_id", -1),
        "pad_id": get("tokenizer.ggml.padding_token_id", -1),
        "add_bos": bool(get("tokenizer.ggml.add_bos_token", False)),
        "add_eos": bool(get("tokenizer.ggml.add_eos_token", False)),
    }


def encode_merges(tokens, merges):
    """Merge r of SmolLM2 makes token offset + r, so a merge is stored as the byte length of its
    left part in that token; merges that break the pattern are stored literally."""
    index = {t: i for i, t in enumerate(tokens)}
    a, b = merges[0].split(" ")
    offset = index[a + b]
    left_lengths, literal = [], {}
    for r, m in enumerate(merges):
        left, right = m.split(" ")
        if index.get(left + right) == offset + r:
            left_lengths.append(len(left.encode()))
        else:
            left_lengths.append(-1)
            literal[str(r)] = m
    return {"merge_result_offset": offset, "merge_left_bytes": left_lengths,
            "literal_merges": literal}


def build_hf(v):
    vocab = {t: i for i, t in enumerate(v["tokens"])}
    merges = [tuple(m.split(" ")) for m in v["merges"]]
    # NOTE: like SmolLM2's tokenizer.json: no unk token, merges always applied.
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=None, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False)
                for t, ty in zip(v["tokens"], v["types"]) if ty == 3]
    tok.add_special_tokens(specials)
    for t in specials:
        assert tok.token_to_id(t.content) == vocab[t.content]
    return tok


def build_hf_with_regex(v, regex, ignore_merges):
    """SmolLM2's vocabulary behind another pre-tokenizer, as Llama 3 / Qwen2 tokenizer.json
    files spell theirs: Split(regex, isolated) then ByteLevel without its own regex."""
    vocab = {t: i for i, t in enumerate(v["tokens"])}
    merges = [tuple(m.split(" ")) for m in v["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=None, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(v["tokens"], v["types"]) if ty == 3])
    return tok


def split_offsets(pre, text):
    ends, pos = [], 0
    for piece, _ in pre.pre_tokenize_str(text):
        pos += len(piece.encode())
        ends.append(pos)
    assert pos == len(text.encode()), (text, ends)
    return ends


def main():
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_GGUF
    corpus = make_corpus()
    assert len(corpus) >= 300, len(corpus)
    v = read_gguf(gguf_path)

    vocab_json = {
        "model": "gpt2", "pre": "smollm", "tokens": v["tokens"],
        "non_normal_types": [[i, int(t)] for i, t in enumerate(v["types"]) if t != 1],
        "bos_id": v["bos_id"], "eos_id": v["eos_id"], "unk_id": v["unk_id"],
        "pad_id": v["pad_id"], "add_bos": v["add_bos"], "add_eos": v["add_eos"],
    }
    vocab_json.update(encode_merges(v["tokens"], v["merges"]))
    write("smollm2_vocab.json", vocab_json)

    tok = build_hf(v)
    llama3 = build_hf_with_regex(v, LLAMA3_REGEX, ignore_merges=True)
    qwen2 = build_hf_with_regex(v, QWEN2_REGEX, ignore_merges=False)
    cases = []
    for text in corpus:
        ids = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = True
        plain = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        case = {"text": text, "ids": ids,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip": tok.decode(ids, skip_special_tokens=True)}
        if plain != ids:
            case["ids_plain"] = plain
        # The same vocabulary behind the Llama 3 (with ignore_merges) and Qwen2 pre-tokenizers.
        case["ids_llama_bpe"] = llama3.encode(text, add_special_tokens=False).ids
        case["ids_qwen2"] = qwen2.encode(text, add_special_tokens=False).ids
        cases.append(case)
    write("smollm2_cases.json", {"cases": cases})

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    gpt2 = pre_tokenizers.Split(Regex(GPT2_REGEX), behavior="isolated")
    splitters = {
        "gpt2": gpt2,
        "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2]),
        "llama-bpe": pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        "qwen2": pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
    }
    splits = {"texts": corpus}
    for name, pre in splitters.items():
        splits[name] = [split_offsets(pre, t) for t in corpus]
    # The Split(GPT-2 regex) above must agree with ByteLevel's own regex.
    for t in corpus:
        assert len(byte_level.pre_tokenize_str(t)) == len(gpt2.pre_tokenize_str(t)), t
    write("pretok_splits.json", splits)

    write("spm_model.json", make_spm(corpus))


def make_spm(corpus):
    with tempfile.TemporaryDirectory() as d:
        prefix = os.path.join(d, "m")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(training_sentences(corpus)), model_prefix=prefix,
            model_type="bpe", vocab_size=800, byte_fallback=True, split_digits=True,
            normalization_rule_name="identity", add_dummy_prefix=True,
            remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
            character_coverage=0.995, num_threads=1, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        t = 1
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_unused(i):
            t = 5
        elif sp.is_byte(i):
            t = 6
        types.append(t)
    cases = []
    for text in corpus:
        ids = sp.encode(text)
        cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids)})
    return {"model": "llama", "tokens": pieces, "scores": scores, "types": types,
            "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id(),
            "add_space_prefix": True, "cases": cases}


def write(name, obj):
    path = os.path.join(HERE, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"{name}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
