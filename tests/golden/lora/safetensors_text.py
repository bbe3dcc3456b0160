#!/usr/bin/env python3
"""Safetensors goldens as text: repository policy allows no binary files in git, so each
.safetensors golden is committed as FILE.safetensors.json, from which the exact bytes are
reassembled.

    safetensors_text.py to-text FILE.safetensors [FILE.safetensors.json]
    safetensors_text.py to-binary FILE.safetensors.json [FILE.safetensors]

(The output defaults to the input's name with ".json" added or removed.) Standard library only.

A safetensors file is an 8-byte little-endian header length N, N bytes of header JSON (padded
with spaces), then the data section. The text form is one JSON object:

  "format"     "safetensors-text/1"
  "sha256"     sha256 of the whole binary file (lowercase hex)
  "num_bytes"  size of the whole binary file
  "header"     the N header bytes (UTF-8) verbatim, padding included, as a list of strings
               whose concatenation is the header: split after each "}," so each tensor's entry
               ends a line and a diff shows which tensors changed
  "data_hex"   the data section as lowercase hex, 32 bytes (64 digits) per string

The binary is the 8-byte N, the concatenated header, then the data: nothing is re-serialized,
so it is the original byte for byte, and to-binary (like tests/golden_safetensors.h, which does
the same in the C++ tests) refuses a result whose size or sha256 differs from the recorded ones.
"""

import hashlib
import json
import re
import struct
import sys

FORMAT = "safetensors-text/1"
BYTES_PER_LINE = 32


def to_text(binary):
    """The text form (a JSON string ending in a newline) of the safetensors bytes `binary`."""
    if len(binary) < 8:
        raise ValueError("not a safetensors file: shorter than 8 bytes")
    (n,) = struct.unpack("<Q", binary[:8])
    if 8 + n > len(binary):
        raise ValueError(f"header length {n} runs past the end of the file ({len(binary)} bytes)")
    header = binary[8 : 8 + n].decode("utf-8")
    data = binary[8 + n :]
    doc = {
        "format": FORMAT,
        "sha256": hashlib.sha256(binary).hexdigest(),
        "num_bytes": len(binary),
        "header": [p for p in re.split(r"(?<=\},)", header) if p],
        "data_hex": [
            data[i : i + BYTES_PER_LINE].hex() for i in range(0, len(data), BYTES_PER_LINE)
        ],
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if to_binary(text) != binary:  # cannot happen; guards this function against itself
        raise AssertionError("the text form does not reassemble the file")
    return text


def to_binary(text):
    """The safetensors bytes that the text form `text` holds; ValueError if they do not match
    the recorded size and sha256."""
    doc = json.loads(text)
    if doc.get("format") != FORMAT:
        raise ValueError(f"format is {doc.get('format')!r}, not {FORMAT!r}")
    header = "".join(doc["header"]).encode("utf-8")
    binary = struct.pack("<Q", len(header)) + header + bytes.fromhex("".join(doc["data_hex"]))
    if len(binary) != doc["num_bytes"]:
        raise ValueError(f"reassembled {len(binary)} bytes; the file records {doc['num_bytes']}")
    sha = hashlib.sha256(binary).hexdigest()
    if sha != doc["sha256"]:
        raise ValueError(f"reassembled sha256 {sha}; the file records {doc['sha256']}")
    return binary


def write_text_file(src, dst):
    """Writes the safetensors file `src` in text form to `dst`."""
    with open(src, "rb") as f:
        text = to_text(f.read())
    with open(dst, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main(argv):
    if len(argv) not in (3, 4) or argv[1] not in ("to-text", "to-binary"):
        sys.exit(__doc__.split("\n\n")[1])
    src = argv[2]
    if argv[1] == "to-text":
        write_text_file(src, argv[3] if len(argv) == 4 else src + ".json")
    else:
        dst = argv[3] if len(argv) == 4 else re.sub(r"\.json$", "", src)
        if dst == src:
            sys.exit(f"{src}: name the output (the input does not end in .json)")
        with open(src, encoding="utf-8") as f:
            binary = to_binary(f.read())
        with open(dst, "wb") as f:
            f.write(binary)


if __name__ == "__main__":
    main(sys.argv)
