"""A subword tokenizer trained on a task's training texts, lossless on any input, checkpointed as JSON.

`TextTokenizer` wraps a Hugging Face `tokenizers.Tokenizer` with a byte-level alphabet (GPT-2 style): text
is split into UTF-8 bytes before BPE / Unigram runs, and all 256 bytes are in the vocabulary, so any
string -- characters never seen in training, emoji, CJK, control characters -- survives
``decode(encode(text)) == text`` exactly (unless ``lowercase=True``, which lowercases first).

Special tokens have fixed ids, the same for every trained tokenizer::

    0 <pad>   padding; collate pads token tensors with `pad_id` (= 0, like the rest of attnlab)
    1 <unk>   unknown; never produced by the byte-level models, kept so ids keep one layout
    2 <bos>   beginning of sequence (`encode(..., add_bos=True)`)
    3 <eos>   end of sequence (`encode(..., add_eos=True)`)
    4...      `extra_special_tokens`, in the order given (e.g. language tags)

With ``prefix_space=True`` every text is read as if a space preceded it (GPT-2 / RoBERTa's
``add_prefix_space``), so a word gets the same tokens at the start of a text as inside one: "Anna" opening a
summary is " Anna" as in the article it is copied from. Decoding removes that one space again.

Special tokens are only ever produced by ``add_bos`` / ``add_eos`` (or by id): the literal text "<eos>" in
an input is encoded as ordinary bytes, so user text cannot inject control tokens.

A datamodule trains one on its training split in `setup`, stores `state_dict()` in its own `state_dict`
(Lightning writes it into every checkpoint) and restores it with `TextTokenizer.from_state_dict`, so
evaluation maps text with the exact vocabulary the model was trained on (as VQA does with its word list).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3
STATE_FORMAT = "attnlab.TextTokenizer/1"
_BYTE_ALPHABET = 256  # every byte is one base symbol of the vocabulary
_UNIGRAM_SCORE_DECIMALS = 6  # see `_canonical_unigram`
_PLACEHOLDER_BAND = 0.05  # > 256 placeholder scores 1e-4 apart


class TextTokenizer:
    """Byte-level BPE or Unigram tokenizer with fixed special ids (module docstring: id layout).

    Build one with `TextTokenizer.train(texts, vocab_size=...)` or `TextTokenizer.from_state_dict(state)`;
    the constructor takes an already configured `tokenizers.Tokenizer`.

    Attributes:
        pad_id / unk_id / bos_id / eos_id: 0 / 1 / 2 / 3.
        vocab_size: number of ids, specials included (can be below the requested size on a small corpus).
        special_tokens: all special token strings in id order, extras included.
        prefix_space: texts are tokenized as " " + text (module docstring).
    """

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    def __init__(
        self, tokenizer: Tokenizer, *, special_tokens: Sequence[str] = SPECIAL_TOKENS, prefix_space: bool = False
    ) -> None:
        self.special_tokens = tuple(special_tokens)
        self.prefix_space = bool(prefix_space)
        if self.special_tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"special_tokens must start with {SPECIAL_TOKENS}, got {self.special_tokens}")
        for expected_id, token in enumerate(self.special_tokens):
            if tokenizer.token_to_id(token) != expected_id:
                raise ValueError(
                    f"tokenizer maps special token {token!r} to id {tokenizer.token_to_id(token)}, not {expected_id}; "
                    "build it with TextTokenizer.train (or from a TextTokenizer.state_dict)"
                )
        tokenizer.encode_special_tokens = True  # "<eos>" typed in a text is plain bytes, not the eos id
        self._tokenizer = tokenizer
        self._num_special = len(self.special_tokens)

    # ---- building ------------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        *,
        vocab_size: int,
        model: Literal["bpe", "unigram"] = "bpe",
        lowercase: bool = False,
        min_frequency: int = 2,
        extra_special_tokens: Sequence[str] = (),
        prefix_space: bool = False,
    ) -> TextTokenizer:
        """Learn a vocabulary from `texts` (the training split only; a generator is read once).

        Args:
            texts: training strings.
            vocab_size: target number of ids including specials and the 256 byte symbols, so at least
                ``260 + len(extra_special_tokens)``; a small corpus may yield fewer.
            model: ``bpe`` (merges, GPT-2 style) or ``unigram`` (SentencePiece-style likelihood pruning).
            lowercase: lowercase texts before tokenizing (then decode returns lowercased text).
            min_frequency: BPE merges a pair only if it occurs at least this often (ignored by unigram).
            extra_special_tokens: more special tokens, ids 4, 5, ... in this order.
            prefix_space: read every text as " " + text, in training and after (module docstring).

        Deterministic: the same texts and arguments give the same ids, run after run (BPE breaks count
        ties by pair; Unigram's float scores are rounded and pieces sorted, see `_canonical_unigram`).
        """
        if model not in ("bpe", "unigram"):
            raise ValueError(f"model={model!r} is unknown; choose 'bpe' or 'unigram'")
        special = SPECIAL_TOKENS + tuple(extra_special_tokens)
        if len(set(special)) != len(special) or not all(isinstance(t, str) and t for t in special):
            raise ValueError(
                f"extra_special_tokens={list(extra_special_tokens)} must be distinct non-empty strings, none of "
                f"{SPECIAL_TOKENS}"
            )
        smallest = len(special) + _BYTE_ALPHABET
        if not isinstance(vocab_size, int) or vocab_size < smallest:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: {len(special)} special tokens + {_BYTE_ALPHABET} byte "
                f"symbols need vocab_size >= {smallest} (typical: 8000-32000)"
            )
        if not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"min_frequency={min_frequency} must be an integer >= 1")

        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if model == "bpe":
            tokenizer = Tokenizer(models.BPE(unk_token=UNK))
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=list(special),
                initial_alphabet=alphabet,
                show_progress=False,
            )
        else:
            tokenizer = Tokenizer(models.Unigram())
            trainer = trainers.UnigramTrainer(
                vocab_size=vocab_size,
                special_tokens=list(special),
                unk_token=UNK,
                initial_alphabet=alphabet,
                show_progress=False,
            )
        if lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        prefix = " " if prefix_space else ""
        tokenizer.train_from_iterator((prefix + text for text in _checked_texts(texts)), trainer=trainer)
        if model == "unigram":
            tokenizer = _canonical_unigram(tokenizer, special)
        return cls(tokenizer, special_tokens=special, prefix_space=prefix_space)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: ``{"format", "special_tokens", "prefix_space", "tokenizer"}`` (the last is
        the HF tokenizer's JSON)."""
        return {
            "format": STATE_FORMAT,
            "special_tokens": list(self.special_tokens),
            "prefix_space": self.prefix_space,
            "tokenizer": self._tokenizer.to_str(),  # the whole HF tokenizer: normalizer, model, decoder
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TextTokenizer:
        """Rebuild the tokenizer `state_dict` returned; encodings are identical to the original's."""
        keys = ("format", "special_tokens", "tokenizer")
        if (
            not isinstance(state, dict)
            or state.get("format") != STATE_FORMAT
            or not all(k in state for k in keys)
        ):
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"state is not a TextTokenizer.state_dict() (format {found!r}, expected {STATE_FORMAT!r}); "
                "pass the dict that TextTokenizer.state_dict() returned"
            )
        return cls(  # states saved before prefix_space existed have none
            Tokenizer.from_str(state["tokenizer"]),
            special_tokens=state["special_tokens"],
            prefix_space=state.get("prefix_space", False),
        )

    # ---- using ---------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(
        self, text: str, *, add_bos: bool = False, add_eos: bool = False, max_length: int | None = None
    ) -> list[int]:
        """Text -> ids, (L,) with L <= max_length: [bos] + text tokens + [eos].

        ``max_length`` counts the bos / eos ids: the text's tokens are cut so both still fit (a cut can split
        a multi-byte character; decode then shows U+FFFD for its remaining bytes).
        """
        return self.encode_batch([text], add_bos=add_bos, add_eos=add_eos, max_length=max_length)[0]

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        max_length: int | None = None,
    ) -> list[list[int]]:
        """B texts -> B id lists (unpadded; pad with `pad_id`), each as `encode` returns it."""
        texts = list(_checked_texts(texts))
        added = int(add_bos) + int(add_eos)
        if max_length is not None and (not isinstance(max_length, int) or max_length < max(added, 1)):
            raise ValueError(
                f"max_length={max_length} leaves no room: it counts the {added} bos/eos id(s) and must be >= "
                f"{max(added, 1)} (or None for no limit)"
            )
        keep = None if max_length is None else max_length - added
        head, tail = [self.bos_id] if add_bos else [], [self.eos_id] if add_eos else []
        encodings = self._tokenizer.encode_batch(self._prefixed(texts), add_special_tokens=False)
        return [head + encoding.ids[:keep] + tail for encoding in encodings]

    def encode_with_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """B texts -> per text (ids, character spans): token i covers ``text[start:end]``, leading and
        trailing whitespace trimmed (byte-level tokens carry the space before a word), so a span of
        tokens maps back to exact character offsets (extractive QA). No bos / eos, no cut."""
        texts = list(_checked_texts(texts))
        out, shift = [], int(self.prefix_space)  # offsets into " " + text -> into text
        for text, encoding in zip(texts, self._tokenizer.encode_batch(self._prefixed(texts), add_special_tokens=False)):
            spans = []
            for start, end in encoding.offsets:
                start, end = max(start - shift, 0), max(end - shift, 0)
                while start < end and text[start].isspace():
                    start += 1
                while end > start and text[end - 1].isspace():
                    end -= 1
                spans.append((start, end))
            out.append((list(encoding.ids), spans))
        return out

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Ids (a list or a 1-D tensor) -> text; special ids are dropped when ``skip_special``.

        Negative ids (e.g. -100 loss-ignore labels) and ids >= vocab_size are skipped.
        """
        kept = [i for i in (int(i) for i in ids) if 0 <= i < self.vocab_size]
        if skip_special:
            kept = [i for i in kept if i >= self._num_special]
        text = self._tokenizer.decode(kept, skip_special_tokens=skip_special)
        return text.removeprefix(" ") if self.prefix_space else text

    def _prefixed(self, texts: list[str]) -> list[str]:
        return [" " + text for text in texts] if self.prefix_space else texts

    def id_to_token(self, token_id: int) -> str:
        """One id -> a readable label (attention-map axes): special tokens as written, others as their
        text (" the", "ñ") with bytes that do not form a whole UTF-8 character shown as ``<0xE4>``."""
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token_id={token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        if token_id < self._num_special:
            return self.special_tokens[token_id]
        symbols = self._tokenizer.id_to_token(token_id)
        byte_of = _byte_of_symbol()
        if not all(symbol in byte_of for symbol in symbols):  # an added (non-byte-level) token
            return symbols
        return _readable(bytes(byte_of[symbol] for symbol in symbols))

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        model = type(self._tokenizer.model).__name__
        return (
            f"TextTokenizer(model={model}, vocab_size={self.vocab_size}, special_tokens={list(self.special_tokens)}, "
            f"prefix_space={self.prefix_space})"
        )


def _checked_texts(texts: Iterable[str]) -> Iterator[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not one string; wrap it: [text]")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, not str; convert or drop it")
        yield text


def _canonical_unigram(tokenizer: Tokenizer, special: Sequence[str]) -> Tokenizer:
    """The same Unigram model with a reproducible id order.

    Two things in the trainer's output vary from run to run: its EM sums in a varying order (scores differ
    in the last bits), and single symbols it keeps without a learned score (bytes absent from the texts,
    or only ever inside longer pieces) get placeholder scores min_score + k * 1e-4 in hash-set order. So
    scores are rounded to 1e-6, single symbols within `_PLACEHOLDER_BAND` of the lowest score all get the
    lowest score, and pieces are ordered by (score desc, piece) after the specials: the ids are then a
    function of the texts alone.
    """
    config = json.loads(tokenizer.to_str())
    scores = {piece: round(score, _UNIGRAM_SCORE_DECIMALS) for piece, score in config["model"]["vocab"]}
    for piece in special:
        scores.pop(piece, None)
    lowest = min(scores.values(), default=0.0)
    for piece, score in scores.items():
        if len(piece) == 1 and score <= lowest + _PLACEHOLDER_BAND:
            scores[piece] = lowest
    pieces = sorted(scores, key=lambda p: (-scores[p], p))
    config["model"]["vocab"] = [[t, 0.0] for t in special] + [[p, scores[p]] for p in pieces]
    config["model"]["unk_id"] = SPECIAL_TOKENS.index(UNK)
    for added in config["added_tokens"]:  # specials keep their ids 0..k-1
        added["id"] = list(special).index(added["content"])
    return Tokenizer.from_str(json.dumps(config))


@lru_cache(maxsize=1)
def _byte_of_symbol() -> dict[str, int]:
    """Inverse of the byte-level alphabet: printable stand-in character -> byte value (GPT-2's table)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def _readable(raw: bytes) -> str:
    """Bytes -> text, each byte that is not part of a whole UTF-8 character written as <0xHH>."""
    parts, start = [], 0
    while start < len(raw):
        for end in range(min(len(raw), start + 4), start, -1):  # a UTF-8 character has 1-4 bytes
            try:
                parts.append(raw[start:end].decode("utf-8"))
                start = end
                break
            except UnicodeDecodeError:
                continue
        else:
            parts.append(f"<0x{raw[start]:02X}>")
            start += 1
    return "".join(parts)
