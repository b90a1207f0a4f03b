"""The sentence-memory route of extractive QA: sentence ids from the data, pooling into memories newest first,
the backbone over [question; memories], and token features back for the span head."""

from __future__ import annotations

import math
import re
from functools import partial

import pytest
import torch
from tasks.qa.data import QADataModule, _sentence_index

from attnlab.backbones import TransformerEncoder
from attnlab.embed import TokenEmbed
from attnlab.training import SentenceMemoryRoute


def whitespace_offsets(text: str) -> list[tuple[int, int]]:
    offsets, start = [], 0
    for word in text.split(" "):
        offsets.append((start, start + len(word)))
        start += len(word) + 1
    return offsets


def test_sentence_index_counts_sentences_and_positions_inside_them():
    text = 'Mary went home. John left! Why? He said "stop." Then 3.5 km'
    ids, positions = _sentence_index(text, whitespace_offsets(text))
    assert ids == [0, 0, 0, 1, 1, 2, 3, 3, 3, 4, 4, 4]  # "3.5" is no sentence end: no space after the dot
    assert positions == [0, 1, 2, 0, 1, 0, 0, 1, 2, 0, 1, 2]


@pytest.fixture(scope="module")
def babi(tmp_path_factory) -> QADataModule:
    data = QADataModule(source="builder", data_dir=str(tmp_path_factory.mktemp("babi")), babi_tasks=[1, 3], size=10,
                        test_size=2, vocab_size=300, max_length=96, doc_stride=40, batch_size=4, support_column="support_spans")
    data.setup("fit")
    return data


def test_window_sentences_are_the_story_sentences_counted_from_the_window(babi):
    windowed = 0
    for index in range(len(babi.splits["train"])):
        question = babi.splits["train"][index]["question"]
        story = question.context.split(". ")  # bAbI: sentences end with "." and are joined by single spaces
        windowed += len(question.windows) > 1
        for window in question.windows:
            assert window.sentences[0] == 0 and all(b - a in (0, 1) for a, b in zip(window.sentences, window.sentences[1:]))
            # a sentence whose first token is in the window and that ends inside it is one whole story sentence
            for k in range(1, max(window.sentences)):
                tokens = [t for t, s in enumerate(window.sentences) if s == k]
                assert [window.sentence_positions[t] for t in tokens] == list(range(len(tokens)))
                text = question.context[window.offsets[tokens[0]][0] : window.offsets[tokens[-1]][1]].strip()
                assert text.rstrip(".") in story
    assert windowed > 0, "task-3 stories should need several 78-token windows here"


def tiny_route(dim: int = 16) -> tuple[SentenceMemoryRoute, TokenEmbed, TransformerEncoder]:
    torch.manual_seed(0)
    adapter = TokenEmbed(dim=dim, vocab_size=300, tokens_key="input_ids", num_segments=2, positions="none")
    backbone = TransformerEncoder(dim=dim, depth=2, num_heads=2, pos_encoding="rope", weight_init="xavier")
    return SentenceMemoryRoute(dim=dim, max_sentence_tokens=4), adapter, backbone


def test_memories_pool_each_sentence_in_order_newest_first(babi):
    route, adapter, _ = tiny_route()
    route, adapter = route.double(), adapter.double()
    batch = babi.collate([babi.splits["train"][0]])
    tokens, _ = adapter(batch)  # (F, N, D)
    memories, memory_mask, memory_slot = route.memories(tokens, batch)
    sentence_ids, positions = batch["sentence_ids"][0], batch["sentence_positions"][0]
    count = int(sentence_ids.max()) + 1
    assert memory_mask[0].tolist() == [True] * count
    for sentence in range(count):
        grid = torch.zeros(4, tokens.shape[-1], dtype=torch.float64)
        for t in torch.nonzero(sentence_ids == sentence).flatten().tolist():
            grid[min(int(positions[t]), 3)] += tokens[0, t]  # tokens past the last slot add into it
        expected = route.pool(grid.flatten())
        torch.testing.assert_close(memories[0, count - 1 - sentence], expected)  # the newest sentence comes first
    assert torch.equal(memory_slot[0][sentence_ids >= 0], count - 1 - sentence_ids[sentence_ids >= 0])
    assert torch.all(memory_slot[0][sentence_ids < 0] == -1)


def test_memory_positions_add_each_memory_age_newest_first(babi):
    plain, adapter, _ = tiny_route()
    timed = SentenceMemoryRoute(dim=16, max_sentence_tokens=4, memory_positions="sinusoidal")
    timed.pool.load_state_dict(plain.pool.state_dict())
    batch = babi.collate([babi.splits["train"][0]])
    tokens, _ = adapter(batch)
    without, mask, _ = plain.memories(tokens, batch)
    with_age, _, _ = timed.memories(tokens, batch)
    count = int(mask[0].sum())
    age = with_age[0, :count] - without[0, :count]  # (S, D): the encoding of slots 0.. (0 = the newest sentence)
    torch.testing.assert_close(age[0, 1::2], torch.ones(8))  # cos(0) at age 0
    torch.testing.assert_close(age[1, 0], torch.sin(torch.tensor(1.0)))  # sin(1 * the first frequency) at age 1
    short = SentenceMemoryRoute(dim=16, max_sentence_tokens=4, memory_positions="learned", max_memories=count - 1)
    with pytest.raises(ValueError, match="raise model.tasks.qa.route.max_memories"):
        short.memories(tokens, batch)
    with pytest.raises(ValueError, match="memory_positions='rope' is unknown"):
        SentenceMemoryRoute(dim=16, memory_positions="rope")


def test_route_features_do_not_depend_on_the_rest_of_the_batch(babi):
    route, adapter, backbone = tiny_route()
    items = [babi.splits["train"][i] for i in range(len(babi.splits["train"]))]
    lengths = [len(item["question"].context) for item in items]
    short, long = items[lengths.index(min(lengths))], items[lengths.index(max(lengths))]
    alone, _ = route(backbone, adapter, babi.collate([short]))
    together, mask = route(backbone, adapter, babi.collate([short, long]))
    width = alone.shape[1]
    assert together.shape[1] > width and mask.shape == together.shape[:2]
    torch.testing.assert_close(together[0, :width], alone[0], rtol=1e-4, atol=1e-5)
    assert torch.all(together[0, width:] == 0)  # padding tokens get no feature
    context = babi.collate([short])["sentence_ids"][0] >= 0
    assert alone[0, context].abs().sum(-1).gt(0).all()  # every context token gets one


def test_token_view_gives_each_context_token_its_sentence_value(babi):
    route, *_ = tiny_route()
    batch = babi.collate([babi.splits["train"][0]])
    slots, sentence_ids = int(batch["question_slots"]), batch["sentence_ids"]
    count = int(sentence_ids.max()) + 1
    values = torch.arange(slots + count, dtype=torch.float32)[None]  # (1, slots + S)
    per_token = route.token_view(values, batch)  # (1, N)
    assert per_token[0, :slots].tolist() == values[0, :slots].tolist()
    inside = sentence_ids[0] >= 0
    assert torch.equal(per_token[0, inside], (slots + count - 1 - sentence_ids[0, inside]).float())
    assert torch.all(per_token[0, ~inside][slots:] == 0)


def test_route_names_the_missing_sentence_field(babi):
    route, adapter, backbone = tiny_route()
    batch = babi.collate([babi.splits["train"][0]])
    del batch["sentence_ids"]
    with pytest.raises(ValueError, match=r"batch\['sentence_ids'\].*route=null"):
        route(backbone, adapter, batch)
    with pytest.raises(ValueError, match="max_sentence_tokens=0"):
        SentenceMemoryRoute(dim=8, max_sentence_tokens=0)


def test_occurrence_targets_mark_every_whole_word_mention_of_the_answer(babi):
    from tasks.qa.data import _occurrences

    context = "The art of it. Art starts here; art, then art."
    assert _occurrences(context, (15, 18)) == [(15, 18)]  # case-sensitive: "Art" only at 15
    assert _occurrences(context, (32, 35)) == [(32, 35), (4, 7), (42, 45)]  # not "starts"; the labelled one first
    items = [babi.splits["train"][i] for i in range(len(babi.splits["train"]))]
    batch = babi.collate(items)
    feature = 0
    for item in items:
        question = item["question"]
        mentions = [m.span() for m in re.finditer(rf"\b{question.answers[0]}\b", question.context)]
        assert len(mentions) >= 1
        for window in question.windows:
            starts = torch.nonzero(batch["start_targets"][feature]).flatten().tolist()
            ends = torch.nonzero(batch["end_targets"][feature]).flatten().tolist()
            # the tokens holding each mention's first and last character, for mentions wholly in the window
            holding = [([t for t, (a, b) in enumerate(window.offsets) if a <= first < b],
                        [t for t, (a, b) in enumerate(window.offsets) if a < last <= b]) for first, last in mentions]
            whole = [(s[0], e[0]) for s, e in holding if s and e]
            assert starts == sorted(babi.question_slots + s for s, _ in whole) or (not whole and starts == [0])
            assert ends == sorted(babi.question_slots + e for _, e in whole) or (not whole and ends == [0])
            if window.start > 0:
                assert window.start in starts  # the labelled span is one of them
            feature += 1


def test_all_occurrence_loss_is_minus_the_log_of_the_summed_probability(babi):
    from attnlab.training import SpanHead

    batch = babi.collate([babi.splits["train"][i] for i in range(6)])
    torch.manual_seed(0)
    labelled, anywhere = SpanHead(dim=8), SpanHead(dim=8, answer_targets="all_occurrences")
    anywhere.load_state_dict(labelled.state_dict())
    hidden = torch.randn(*batch["input_ids"].shape, 8)
    outputs = anywhere(hidden, None, batch)
    allowed = batch["context_mask"].clone()
    allowed[:, 0] = True
    expected = 0.0
    for side in ("start", "end"):
        probs = outputs[f"{side}_logits"].double().masked_fill(~allowed, float("-inf")).softmax(-1)  # (F, N)
        expected += -(probs * batch[f"{side}_targets"]).sum(-1).log().mean() / 2
    torch.testing.assert_close(anywhere.loss(outputs, batch).double(), expected, rtol=1e-5, atol=1e-6)
    assert (batch["start_targets"].sum(-1) > 1).any(), "some window should mention the answer twice"
    assert anywhere.loss(outputs, batch) < labelled.loss(outputs, batch)  # more targets, more probability
    single = {**batch, "start_targets": torch.zeros_like(batch["start_targets"]),
              "end_targets": torch.zeros_like(batch["end_targets"])}
    rows = torch.arange(len(batch["start_positions"]))
    single["start_targets"][rows, batch["start_positions"]] = True
    single["end_targets"][rows, batch["end_positions"]] = True
    torch.testing.assert_close(anywhere.loss(outputs, single), labelled.loss(outputs, batch))  # one target: SQuAD's CE
    del batch["start_targets"]
    with pytest.raises(ValueError, match="answer_targets=labelled"):
        anywhere.loss(outputs, batch)
    with pytest.raises(ValueError, match="answer_targets='first'"):
        SpanHead(dim=8, answer_targets="first")


def test_sentence_support_loss_is_a_softmax_over_each_windows_sentences(babi):
    from attnlab.training import SpanHead

    batch = babi.collate([babi.splits["train"][i] for i in range(len(babi.splits["train"]))])  # tasks 1 and 3
    assert "support_labels" in batch
    torch.manual_seed(0)
    tokens_head = SpanHead(dim=8, support_weight=2.0)
    sentences_head = SpanHead(dim=8, support_weight=2.0, support_loss="sentences")
    sentences_head.load_state_dict(tokens_head.state_dict())
    hidden = torch.randn(*batch["input_ids"].shape, 8)
    outputs = sentences_head(hidden, None, batch)
    expected, windows, most_facts = 0.0, 0, 0
    for f in range(len(batch["input_ids"])):  # float64, one window and one sentence at a time
        ids, logits = batch["sentence_ids"][f], outputs["support_logits"][f].double()
        sentences = sorted(set(ids[ids >= 0].tolist()))
        scores = torch.stack([logits[ids == s].mean() for s in sentences])
        facts = [i for i, s in enumerate(sentences) if batch["support_labels"][f][ids == s].any()]
        if facts:
            expected += -scores.log_softmax(0)[facts].mean()
            windows, most_facts = windows + 1, max(most_facts, len(facts))
    assert most_facts > 1, "some window should hold several supporting facts"
    span_only = SpanHead(dim=8)
    span_only.span.load_state_dict(tokens_head.span.state_dict())
    span_loss = span_only.loss(span_only(hidden, None, batch), batch).double()
    torch.testing.assert_close(sentences_head.loss(outputs, batch).double(), span_loss + 2.0 * expected / windows,
                               rtol=1e-5, atol=1e-6)
    # the per-token BCE of the same logits differs: the two options are really two losses
    assert not torch.isclose(tokens_head.loss(outputs, batch), sentences_head.loss(outputs, batch))
    # a model ranking the facts first beats one that calls every sentence a distractor
    ranked = {**outputs, "support_logits": batch["support_labels"] * 10.0}
    flat = {**outputs, "support_logits": torch.full_like(outputs["support_logits"], -10.0)}
    assert sentences_head.loss(ranked, batch) < sentences_head.loss(flat, batch)
    without_sentences = {key: value for key, value in batch.items() if key != "sentence_ids"}
    with pytest.raises(ValueError, match="support_loss=tokens"):
        sentences_head.loss(outputs, without_sentences)
    with pytest.raises(ValueError, match="support_loss='sentence'"):
        SpanHead(dim=8, support_loss="sentence")


def test_forgetting_bias_matches_the_gate_products_in_story_order():
    torch.manual_seed(0)
    backbone = TransformerEncoder(dim=12, depth=2, num_heads=3, pos_encoding="rope", weight_init="xavier")
    route = SentenceMemoryRoute(dim=12, backbone=backbone, max_sentence_tokens=2, forget_heads=2).double()
    slots, counts = 3, [4, 2]
    normed = torch.randn(2, slots + 4, 12, dtype=torch.float64)
    memory_mask = torch.arange(4)[None] < torch.tensor(counts)[:, None]
    every_slot = torch.ones(2, slots, dtype=torch.bool)
    with torch.no_grad():
        bias = route.attention_bias(1, normed, slots=slots, memory_mask=memory_mask, question_mask=every_slot)  # (F, H, L, L)
    assert bias.shape == (2, 3, slots + 4, slots + 4)
    assert torch.all(bias[:, 2] == 0)  # the third head is free
    log_f = torch.nn.functional.logsigmoid(route.forget_gates[1](normed[:, slots:])).detach()  # (F, S, K): ask starts at 0
    for feature, count in enumerate(counts):
        for head in range(2):
            gates = log_f[feature, :, head]
            for i in range(slots + 4):
                for j in range(slots + 4):
                    got = float(bias[feature, head, i, j])
                    if j < slots:  # the question is read freely
                        expected = 0.0
                    elif i < slots:  # the question reads memory b with the gates of the memories newer than b
                        b = j - slots
                        expected = float(sum(gates[t] for t in range(b) if t < count))
                    else:
                        a, b = i - slots, j - slots
                        if b < a:
                            expected = float("-inf")  # a newer memory is hidden
                        else:
                            expected = float(sum(gates[t] for t in range(a + 1, b) if t < count))
                    assert got == pytest.approx(expected, abs=1e-12), (feature, head, i, j)
    # a closed gate hides everything older than its memory from newer memories and from the question
    with torch.no_grad():
        route.forget_gates[0].weight.zero_()
        route.forget_gates[0].bias.fill_(-60.0)
    closed = route.forgetting_bias(0, normed, slots=slots, memory_mask=memory_mask, question_mask=every_slot)
    assert closed.shape == (2, 2, slots + 4, slots + 4)
    assert closed[0, 0, 0, slots] == 0 and closed[0, 0, 0, slots + 1] < -50  # question: newest only
    assert closed[0, 0, slots, slots + 1] == 0 and closed[0, 0, slots, slots + 2] < -50  # memory: its predecessor only


def test_stick_bias_breaks_the_stick_from_the_query_outwards():
    torch.manual_seed(0)
    backbone = TransformerEncoder(dim=12, depth=2, num_heads=3, pos_encoding="rope", weight_init="xavier")
    route = SentenceMemoryRoute(dim=12, backbone=backbone, max_sentence_tokens=2, forget_heads=1, stick_heads=1).double()
    slots, counts = 2, [4, 3]
    normed = torch.randn(2, slots + 4, 12, dtype=torch.float64)
    memory_mask = torch.arange(4)[None] < torch.tensor(counts)[:, None]
    every_slot = torch.ones(2, slots, dtype=torch.bool)
    with torch.no_grad():
        bias = route.attention_bias(0, normed, slots=slots, memory_mask=memory_mask, question_mask=every_slot)
        stick = route.stick_bias(0, normed, slots=slots, memory_mask=memory_mask)[:, 0]  # (F, L, L)
        queries = route.stick_queries[0](normed)  # (F, L, d)
        keys = route.stick_keys[0](normed[:, slots:])  # (F, S, d)
    assert bias.shape == (2, 3, slots + 4, slots + 4) and torch.equal(bias[:, 1], stick) and torch.all(bias[:, 2] == 0)
    offset = float(route.stick_offsets[0, 0].detach())
    for feature, count in enumerate(counts):
        for i in range(slots + 4):
            nearest = 0 if i < slots else i - slots  # the question starts at the newest memory, a memory at itself
            readable = [m for m in range(nearest, count)]
            remaining, expected = 1.0, {}
            for m in readable:  # walk outwards: newest first is older and older
                share = 1 / (1 + math.exp(-(float(queries[feature, i] @ keys[feature, m]) / 2.0 + offset)))  # d = 4
                expected[slots + m] = remaining * share
                remaining *= 1 - share
            for j in range(slots + 4):
                got = math.exp(float(stick[feature, i, j]))
                want = remaining if j < slots else expected.get(j, 0.0)
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (feature, i, j)
            # every row is a distribution over one question token's share and the readable memories
            assert sum(expected.values()) + remaining == pytest.approx(1.0, rel=1e-9)
    # a query matching its nearest memory takes the whole stick there: the nearest match wins
    with torch.no_grad():
        route.stick_offsets.fill_(60.0)
        greedy = route.stick_bias(0, normed, slots=slots, memory_mask=memory_mask)[0, 0]
    assert greedy[0, slots] == pytest.approx(0.0, abs=1e-12) and greedy[0, slots + 1] < -50  # question: newest
    assert greedy[slots + 1, slots + 1] == pytest.approx(0.0, abs=1e-12) and greedy[slots + 1, slots + 2] < -50
    assert greedy[slots + 1, slots] == float("-inf")  # never a newer memory


def test_route_with_forgetting_heads_trains_the_gates(babi):
    torch.manual_seed(0)
    _, adapter, backbone = tiny_route()
    route = SentenceMemoryRoute(dim=16, backbone=backbone, max_sentence_tokens=4, forget_heads=1)
    items = [babi.splits["train"][i] for i in range(len(babi.splits["train"]))]
    lengths = [len(item["question"].context) for item in items]
    short, long = items[lengths.index(min(lengths))], items[lengths.index(max(lengths))]
    alone, _ = route(backbone, adapter, babi.collate([short]))
    together, _ = route(backbone, adapter, babi.collate([short, long]))
    torch.testing.assert_close(together[0, : alone.shape[1]], alone[0], rtol=1e-4, atol=1e-5)
    together.square().sum().backward()
    assert all(gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0 for gate in route.forget_gates)
    with pytest.raises(ValueError, match="forget_heads=1 stick_heads=2 must together be at most backbone.num_heads=2"):
        SentenceMemoryRoute(dim=16, backbone=backbone, forget_heads=1, stick_heads=2)
    from attnlab.attention import LinearAttention
    from attnlab.backbones import RecurrentEncoder

    with pytest.raises(ValueError, match="forget_heads=0 stick_heads=0 hop_weight=0 to use this backbone"):
        SentenceMemoryRoute(dim=16, backbone=RecurrentEncoder(dim=16), forget_heads=1)
    linear = TransformerEncoder(dim=16, depth=1, num_heads=2, attention=partial(LinearAttention, chunk_size=4))
    with pytest.raises(ValueError, match="LinearAttention cannot take.*forget_heads=0"):
        SentenceMemoryRoute(dim=16, backbone=linear, stick_heads=1)


def test_hop_supervision_walks_the_supporting_facts_newest_first(babi):
    _, adapter, _ = tiny_route()
    backbone = TransformerEncoder(dim=16, depth=3, num_heads=2, pos_encoding="rope", weight_init="xavier")
    route = SentenceMemoryRoute(dim=16, backbone=backbone, max_sentence_tokens=4, stick_heads=1, hop_weight=2.0)
    items = [babi.splits["train"][i] for i in range(len(babi.splits["train"]))]
    batch = babi.collate(items)  # tasks 1 and 3: one fact, and chains of up to three
    slots = int(batch["question_slots"])
    tokens, _ = adapter(batch)
    memories, _, memory_slot = route.memories(tokens, batch)
    hops = route.hop_targets(batch, memory_slot, memories.shape[1])
    for feature in range(memory_slot.shape[0]):
        flagged = (batch["support_labels"][feature] > 0) & (memory_slot[feature] >= 0)
        facts = sorted(set(memory_slot[feature][flagged].tolist()))  # slot 0 is the newest sentence
        expected = [(0 if k == 0 else slots + facts[k - 1], slots + fact) for k, fact in enumerate(facts)]
        got = [tuple(pair) for pair in hops[feature].tolist() if pair[1] >= 0]
        assert got == expected, feature
    assert any(len([p for p in hops[f].tolist() if p[1] >= 0]) >= 2 for f in range(hops.shape[0]))  # real chains
    sticks = []  # the stick bias of each block, in block order
    original = route.stick_bias
    route.stick_bias = lambda *args, **kwargs: sticks.append(original(*args, **kwargs)) or sticks[-1]
    route(backbone, adapter, batch)
    per_block = []
    for block, stick in enumerate(sticks):
        hop = len(sticks) - 1 - block  # the last block holds hop 0
        if hop >= hops.shape[1]:
            continue
        rows = [(f, *hops[f, hop].tolist()) for f in range(hops.shape[0]) if hops[f, hop, 1] >= 0]
        if rows:
            per_block.append(-torch.stack([stick[f, 0, q, t] for f, q, t in rows]).mean())
    torch.testing.assert_close(route.aux_loss, 2.0 * torch.stack(per_block).mean())
    route.aux_loss.backward()
    assert route.stick_queries[-1].weight.grad.abs().sum() > 0  # hop 0 trains the last block's stick head
    no_labels = {key: value for key, value in batch.items() if key != "support_labels"}
    route.stick_bias = original
    route(backbone, adapter, no_labels)
    assert route.aux_loss is None  # evaluation without supporting facts adds nothing
    with pytest.raises(ValueError, match="hop_weight=1.0 supervises a stick head; set stick_heads >= 1"):
        SentenceMemoryRoute(dim=16, backbone=backbone, hop_weight=1.0)
