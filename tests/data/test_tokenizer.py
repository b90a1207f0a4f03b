"""TextTokenizer: lossless byte-level round trips, fixed special ids, checkpoint state, determinism."""

from __future__ import annotations

import json
import random

import pytest
import torch

from attnlab.data import TextTokenizer

# bytes the training corpus (ASCII letters and punctuation) never holds
UNSEEN = [
    "Straße, niño, façade, Ærøskøbing",
    "emoji 😀🚀 and CJK 中文字符 日本語 한국어",
    "control \x00\x01\x7f tabs\tand\nnewlines\r\n",
    "  leading, double  and trailing spaces  ",
    "a literal <eos> or <pad> in the text stays text",
    "",
]


def corpus(seed: int = 0, count: int = 400) -> list[str]:
    """English-like sentences of ASCII words built from shared stems and endings (subwords to learn)."""
    rng = random.Random(seed)
    stems = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 6))) for _ in range(40)
    ]
    endings = ["", "s", "ed", "ing", "er", "ers", "ly", "ness"]
    return [
        " ".join(rng.choice(stems) + rng.choice(endings) for _ in range(rng.randint(3, 20)))
        + rng.choice(".?!")
        for _ in range(count)
    ]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tokenizer(request) -> TextTokenizer:
    return TextTokenizer.train(corpus(), vocab_size=500, model=request.param)


@pytest.mark.parametrize("text", UNSEEN)
def test_unseen_characters_round_trip_exactly(tokenizer, text):
    ids = tokenizer.encode(text, add_bos=True, add_eos=True)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.unk_id not in ids
    assert tokenizer.decode(ids) == text


def test_special_ids_are_fixed(tokenizer):
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert [tokenizer.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    ids = tokenizer.encode("the cat", add_bos=True, add_eos=True)
    assert ids[0] == 2 and ids[-1] == 3 and not set(ids[1:-1]) & {0, 1, 2, 3}
    assert tokenizer.encode("the cat") == ids[1:-1]
    assert tokenizer.decode(ids, skip_special=False) == "<bos>the cat<eos>"
    # special ids are never produced from text: "<eos>" typed in a text is plain bytes
    assert not set(tokenizer.encode("<pad><unk><bos><eos>")) & {0, 1, 2, 3}


def test_extra_special_tokens_follow_the_fixed_ones():
    tok = TextTokenizer.train(corpus(count=50), vocab_size=300, extra_special_tokens=["<de>", "<en>"])
    assert [tok.id_to_token(i) for i in (4, 5)] == ["<de>", "<en>"]
    assert tok.decode([4, *tok.encode("abc"), 5]) == "abc"
    assert TextTokenizer.from_state_dict(tok.state_dict()).special_tokens == tok.special_tokens


def test_state_dict_round_trip_gives_identical_encodings(tokenizer):
    state = json.loads(json.dumps(tokenizer.state_dict()))  # what a checkpoint stores
    restored = TextTokenizer.from_state_dict(state)
    texts = corpus(seed=1, count=50) + UNSEEN
    assert restored.vocab_size == tokenizer.vocab_size
    assert restored.encode_batch(texts, add_bos=True) == tokenizer.encode_batch(texts, add_bos=True)
    assert [restored.id_to_token(i) for i in range(restored.vocab_size)] == [
        tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)
    ]


@pytest.mark.parametrize("model", ["bpe", "unigram"])
def test_training_is_deterministic(model):
    texts = corpus(seed=2)
    first = TextTokenizer.train(texts, vocab_size=450, model=model)
    again = TextTokenizer.train(iter(texts), vocab_size=450, model=model)  # a generator works too
    assert first.state_dict() == again.state_dict()
    other = TextTokenizer.train(corpus(seed=3), vocab_size=450, model=model)
    assert other.state_dict() != first.state_dict()


def test_unigram_and_bpe_learn_subwords():
    texts = corpus()
    for model, name in (("bpe", "BPE"), ("unigram", "Unigram")):
        tok = TextTokenizer.train(texts, vocab_size=500, model=model)
        assert name in repr(tok)
        assert 260 < tok.vocab_size <= 500
        text = texts[0]
        assert len(tok.encode(text)) < len(text.encode()) / 2  # merges learned: far fewer ids than bytes


def test_lowercase_option():
    tok = TextTokenizer.train(corpus(count=50), vocab_size=300, lowercase=True)
    assert tok.encode("The CAT") == tok.encode("the cat")
    assert tok.decode(tok.encode("ÄÖÜ Straße")) == "äöü straße"


def test_max_length_keeps_bos_and_eos(tokenizer):
    text = corpus(seed=4, count=1)[0]
    ids = tokenizer.encode(text, add_bos=True, add_eos=True, max_length=5)
    full = tokenizer.encode(text)
    assert ids == [2, *full[:3], 3]
    assert tokenizer.encode(text, max_length=2) == full[:2]
    assert [len(x) for x in tokenizer.encode_batch([text, "a"], add_eos=True, max_length=4)] == [4, 2]


def test_id_to_token_labels_read_as_text(tokenizer):
    text = "the cat sat"
    ids = tokenizer.encode(text)
    assert "".join(tokenizer.id_to_token(i) for i in ids) == text
    labels = [tokenizer.id_to_token(i) for i in tokenizer.encode("中")]  # 3 bytes, never seen in training
    assert labels == ["<0xE4>", "<0xB8>", "<0xAD>"]


def test_decode_accepts_tensors_and_skips_ignore_labels(tokenizer):
    ids = tokenizer.encode("the cat", add_bos=True)
    labels = torch.tensor([*ids, -100, -100])  # loss-ignored positions
    assert tokenizer.decode(labels) == "the cat"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"vocab_size": 100}, "vocab_size"),
        ({"vocab_size": 500, "model": "wordpiece"}, "model"),
        ({"vocab_size": 500, "min_frequency": 0}, "min_frequency"),
        ({"vocab_size": 500, "extra_special_tokens": ["<bos>"]}, "extra_special_tokens"),
    ],
)
def test_bad_training_arguments_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TextTokenizer.train(["a b c"], **kwargs)


def test_bad_use_raises(tokenizer):
    with pytest.raises(ValueError, match="max_length"):
        tokenizer.encode("abc", add_bos=True, add_eos=True, max_length=1)
    with pytest.raises(ValueError, match="token_id"):
        tokenizer.id_to_token(tokenizer.vocab_size)
    with pytest.raises(ValueError, match="state"):
        TextTokenizer.from_state_dict({"words": ["a"]})
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        TextTokenizer.train(["a", None], vocab_size=300)
    with pytest.raises(TypeError, match="one string"):
        tokenizer.encode_batch("abc")


def test_offsets_map_tokens_back_to_the_characters_they_cover(tokenizer):
    texts = ["Mary went to the kitchen.", "  héllo   wörld \n ünseen 🙂 ", ""]
    for text, (ids, spans) in zip(texts, tokenizer.encode_with_offsets(texts), strict=True):
        assert ids == tokenizer.encode(text)
        assert len(spans) == len(ids)
        for start, end in spans:  # trimmed: no span starts or ends on whitespace
            assert 0 <= start <= end <= len(text)
            assert start == end or not (text[start].isspace() or text[end - 1].isspace())
        # the non-empty spans, in order, cover every non-space character of the text
        covered = {i for start, end in spans for i in range(start, end)}
        assert {i for i, ch in enumerate(text) if not ch.isspace()} <= covered


def test_prefix_space_gives_a_word_opening_the_text_its_inner_tokens_and_round_trips():
    texts = corpus()
    tokenizer = TextTokenizer.train(texts, vocab_size=500, prefix_space=True)
    plain = TextTokenizer.train(texts, vocab_size=500)
    sentence = texts[0]
    first, rest = sentence.split(" ", 1)
    inner = tokenizer.encode(f"{rest} {first}")  # the first word again, now after a space
    assert tokenizer.encode(sentence)[: len(tokenizer.encode(first))] == tokenizer.encode(first)
    assert inner[-len(tokenizer.encode(first)) :] == tokenizer.encode(first)
    assert plain.encode(f"{rest} {first}")[-len(plain.encode(first)) :] != plain.encode(first)  # what it fixes
    for text in UNSEEN + texts[:20]:  # leading spaces included: exactly one is added and removed
        assert tokenizer.decode(tokenizer.encode(text)) == text
    restored = TextTokenizer.from_state_dict(json.loads(json.dumps(tokenizer.state_dict())))
    assert restored.prefix_space and restored.encode(sentence) == tokenizer.encode(sentence)
    old_state = {k: v for k, v in plain.state_dict().items() if k != "prefix_space"}  # saved before the option
    assert not TextTokenizer.from_state_dict(old_state).prefix_space
    (_, spans), = tokenizer.encode_with_offsets([sentence])
    first_ids = len(tokenizer.encode(first))
    assert (spans[0][0], spans[first_ids - 1][1]) == (0, len(first))  # offsets into the text itself
