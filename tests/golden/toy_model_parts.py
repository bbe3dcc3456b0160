"""Shared pieces of the tiny-model generators (tests/golden/hf/make_tiny_models.py and
tests/golden/gguf/make_gguf_models.py): deterministic numbers and the toy byte-level BPE.

Both scripts' outputs are pinned by sha256 lists (tiny_models.sha256, gguf_models.sha256), so
any change here that changes a byte of their models shows up at setup.
"""

import re

import numpy as np

# Text the toy BPE merges are learned from.
CORPUS = """the cat sat on the mat. the dog sat on the log. then the cat and the dog ran
to the hat in the hall. that is the thing: they sat and then they ran. hello there, hello
world! the end of the story is the start of another one, as the saying goes."""


# ---- Deterministic numbers. -------------------------------------------------------------------

def splitmix64(counters):
    z = counters + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Numbers:
    """Uniform numbers from splitmix64 over a running counter: same bytes on every machine."""

    def __init__(self, seed):
        self.next = np.uint64(seed) << np.uint64(32)

    def uniform(self, shape, low, high):
        n = int(np.prod(shape)) if shape else 1
        counters = self.next + np.arange(n, dtype=np.uint64)
        self.next += np.uint64(n)
        unit = (splitmix64(counters) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
        return (low + (high - low) * unit).astype(np.float32).reshape(shape)


# ---- Tokenizer (byte-level BPE, GPT-2 style). ---------------------------------------------------

def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def learn_merges(num_merges):
    """Plain BPE on CORPUS split GPT-2 style into words with their leading space."""
    byte_map = bytes_to_unicode()
    words = {}
    for word in re.findall(r" ?[A-Za-z]+| ?[^A-Za-z\s]+|\s+", CORPUS):
        symbols = tuple(byte_map[b] for b in word.encode("utf-8"))
        words[symbols] = words.get(symbols, 0) + 1
    merges = []
    for _ in range(num_merges):
        pairs = {}
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] = pairs.get(pair, 0) + count
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent, then lexicographic
        merges.append(best)
        merged = {}
        for symbols, count in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged
    return merges
