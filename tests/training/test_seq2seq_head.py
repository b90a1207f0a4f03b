"""Seq2SeqHead with both decoders: causality, generation equivalences, tied embeddings, metrics."""

from __future__ import annotations

from functools import partial

import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from attnlab.backbones import AttentiveGRUDecoder, GenerationConfig, RecurrentEncoder, TransformerDecoder
from attnlab.embed import TokenEmbed
from attnlab.training import Seq2SeqHead
from attnlab.training.text_metrics import CorpusBLEU, CorpusChrF, EntityCopy, ExactMatch, RougeF

DIM, VOCAB = 32, 50
DECODERS = {
    "transformer": partial(TransformerDecoder, depth=2, num_heads=4, pos_encoding="sinusoidal"),
    "gru_additive": partial(AttentiveGRUDecoder, score="additive"),
    "gru_general": partial(AttentiveGRUDecoder, score="general"),
    "transformer_copy": partial(TransformerDecoder, depth=2, num_heads=4, pos_encoding="sinusoidal"),
    "gru_copy": partial(AttentiveGRUDecoder, score="additive"),
    "transformer_copy_read": partial(TransformerDecoder, depth=2, num_heads=4, pos_encoding="sinusoidal"),
    "gru_copy_read": partial(AttentiveGRUDecoder, score="additive"),
    "transformer_copy_tracked": partial(TransformerDecoder, depth=2, num_heads=4, pos_encoding="sinusoidal"),
    "gru_copy_read_tracked": partial(AttentiveGRUDecoder, score="additive"),
}
SOURCE = torch.randint(4, VOCAB, (3, 7), generator=torch.Generator().manual_seed(2))  # (B, S) ids a pointer copies


def make_head(kind: str, **generation) -> Seq2SeqHead:
    torch.manual_seed(0)
    head = Seq2SeqHead(dim=DIM, vocab_size=VOCAB, decoder=DECODERS[kind], generation=GenerationConfig(**generation),
                       copy="_copy" in kind, selective_read="_read" in kind,
                       copy_continuation="tracked" if kind.endswith("_tracked") else "any")
    with torch.no_grad():  # a sharper output distribution than the init's, so ties never decide a search
        head.output_bias.normal_(0, 2.0)
        if head.copy:
            head.copy_follow.fill_(1.5)  # the continuation bonus in play (it starts at 0 in training)
        if head.selective_read:
            head.read_proj.weight.normal_(0, DIM**-0.5)  # the read in play (it starts closed in training)
    return head.eval()


def memory(batch: int = 3, length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 5:] = False  # a padded source row
    return torch.randn(batch, length, DIM), mask


@pytest.mark.parametrize("kind", DECODERS)
def test_changing_a_future_target_token_never_changes_earlier_logits(kind):
    head = make_head(kind)
    states, mask = memory()
    target = torch.randint(4, VOCAB, (3, 9))
    changed = target.clone()
    changed[:, 6] = (changed[:, 6] + 1 - 4) % (VOCAB - 4) + 4
    logits = head(states, mask, {"decoder_input": target, "source_tokens": SOURCE})["logits"]
    logits_changed = head(states, mask, {"decoder_input": changed, "source_tokens": SOURCE})["logits"]
    torch.testing.assert_close(logits[:, :6], logits_changed[:, :6], rtol=0, atol=1e-5)
    assert not torch.allclose(logits[:, 6:], logits_changed[:, 6:], atol=1e-4)  # the change does reach later steps


@pytest.mark.parametrize("kind", DECODERS)
def test_beam_of_one_equals_greedy(kind):
    states, mask = memory()
    greedy, greedy_scores = make_head(kind, strategy="greedy", max_length=12).generate(states, mask, source_ids=SOURCE)
    beam, beam_scores = make_head(kind, strategy="beam", beam_size=1, max_length=12, length_penalty=0.0).generate(
        states, mask, source_ids=SOURCE
    )
    assert torch.equal(greedy, beam)
    torch.testing.assert_close(greedy_scores, beam_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("kind", DECODERS)
def test_generation_with_the_cache_equals_generation_without_it(kind, strategy):
    head = make_head(kind, strategy=strategy, beam_size=3, max_length=10)
    states, mask = memory()
    cached, cached_scores = head.generate(states, mask, source_ids=SOURCE, use_cache=True)
    full, full_scores = head.generate(states, mask, source_ids=SOURCE, use_cache=False)
    assert torch.equal(cached, full)
    torch.testing.assert_close(cached_scores, full_scores, rtol=1e-4, atol=1e-4)


def test_source_target_and_output_embeddings_are_one_table():
    adapter = TokenEmbed(dim=DIM, vocab_size=VOCAB)
    head = Seq2SeqHead(dim=DIM, vocab_size=VOCAB, decoder=DECODERS["transformer"])
    head.tie_to_adapter(adapter)
    assert head.embedding.weight is adapter.embedding.weight
    logits = head.logits(torch.randn(2, DIM))
    logits.sum().backward()
    assert adapter.embedding.weight.grad is not None
    untied = Seq2SeqHead(dim=DIM, vocab_size=VOCAB + 1, decoder=DECODERS["transformer"])
    with pytest.raises(ValueError, match="vocab_size"):
        untied.tie_to_adapter(adapter)


@pytest.mark.parametrize("kind", ["transformer", "gru_additive"])
def test_cross_attention_covers_each_generated_token_over_real_source_tokens(kind):
    head = make_head(kind, max_length=6)
    states, mask = memory()
    generated, _ = head.generate(states, mask)
    with torch.no_grad():
        layers = head.cross_attention(states, mask, generated)
    weights = layers[-1]  # (B, H, T, S)
    assert weights.shape[0] == 3 and weights.shape[2:] == (generated.shape[1], 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)), rtol=1e-4, atol=1e-4)
    assert float(weights[0, ..., 5:].abs().max()) == 0.0  # padded source tokens get no attention


def test_recurrent_encoder_ignores_padding():
    torch.manual_seed(0)
    encoder = RecurrentEncoder(dim=DIM, depth=2).eval()
    tokens = torch.randn(1, 5, DIM)
    padded = torch.cat([tokens, torch.randn(1, 3, DIM)], 1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    alone = encoder(tokens, torch.ones(1, 5, dtype=torch.bool))
    torch.testing.assert_close(encoder(padded, mask)[:, :5], alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="even"):
        RecurrentEncoder(dim=33)


def test_text_metrics_match_sacrebleu_and_rouge_score():
    preds = ["the cat sat on the mat", "nine hundred and two", "Marta Kowalska joined Acme Group in Lyon"]
    refs = ["the cat sat on a mat", "nine hundred and two", "Marta Kowalska joined Acme Group in Lyon today"]
    bleu, chrf = CorpusBLEU(), CorpusChrF()
    bleu.update(preds, refs, None)
    chrf.update(preds, refs, None)
    assert float(bleu.compute()) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-3)
    assert float(chrf.compute()) == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score, abs=1e-2)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)) / 3
    rouge = RougeF("rougeL")
    rouge.update(preds, refs, None)
    assert float(rouge.compute()) == pytest.approx(expected, abs=1e-4)
    exact = ExactMatch()
    exact.update(preds, refs, None)
    assert float(exact.compute()) == pytest.approx(1 / 3)
    copy = EntityCopy()
    copy.update(preds, refs, [[], ["nine"], ["Marta Kowalska", "Acme Group", "Lyon", "Paris"]])
    assert float(copy.compute()) == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="entities"):
        EntityCopy().update(preds, refs, None)


def test_the_pointer_mixes_a_copy_distribution_over_source_ids():
    head = make_head("transformer_copy")
    states, mask = memory()
    scores = head(states, mask, {"decoder_input": torch.randint(4, VOCAB, (3, 5)), "source_tokens": SOURCE})["logits"]
    torch.testing.assert_close(scores.exp().sum(-1), torch.ones(3, 5), rtol=1e-4, atol=1e-4)  # a distribution
    with torch.no_grad():  # gate closed: all mass on the source ids, split by the copy attention
        head.copy_gate.bias.fill_(-50.0)
    probs = head(states, mask, {"decoder_input": torch.randint(4, VOCAB, (3, 5)), "source_tokens": SOURCE})["logits"].exp()
    for b in range(3):
        real = SOURCE[b][mask[b]].unique()
        torch.testing.assert_close(probs[b][:, real].sum(-1), torch.ones(5), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="source_tokens"):
        head(states, mask, {"decoder_input": torch.randint(4, VOCAB, (3, 5)), "source_tokens": SOURCE[:, :3]})


def test_the_continuation_bonus_favours_the_source_token_after_the_one_just_emitted():
    head = make_head("transformer_copy")
    states, mask = memory()
    with torch.no_grad():
        head.copy_gate.bias.fill_(-50.0)  # copy only
    source = torch.tensor([[10, 11, 12, 13, 14, 15, 16]] * 3)
    previous = torch.tensor([[12], [15], [40]])  # emitted 12 -> 13 follows; 15 -> 16; 40 is not in the source
    inputs = {"decoder_input": previous, "source_tokens": source}
    base = head(states, mask, inputs)["logits"].exp()[:, 0]  # (B, V)
    with torch.no_grad():
        head.copy_follow.fill_(5.0)
    boosted = head(states, mask, inputs)["logits"].exp()[:, 0]
    assert boosted[0, 13] > base[0, 13] and boosted[1, 16] > base[1, 16]
    torch.testing.assert_close(boosted[2], base[2])  # nothing to continue: unchanged


def test_selective_read_feeds_the_mean_encoder_state_after_each_occurrence_of_the_fed_token():
    head = make_head("transformer_copy_read")
    states, mask = memory()
    source = torch.tensor([[10, 11, 12, 11, 14, 11, 16]] * 3)  # 11 -> 12, 14, 16 (row 0 pads position 6)
    fed = torch.tensor([[11, 40, 14, 11]] * 3)  # (B, T)
    inputs = head.decoder_inputs(fed, states, mask, source)  # (B, T, D)
    for b in range(3):
        for t, token in enumerate(fed[b].tolist()):
            after = [j for j in range(1, 7) if source[b, j - 1] == token and mask[b, j]]  # checked one by one
            read = states[b, after].mean(0) if after else torch.zeros(DIM)
            expected = head.embed(fed[b, t : t + 1])[0] + head.read_proj(read)
            torch.testing.assert_close(inputs[b, t], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="copy=true"):
        Seq2SeqHead(dim=DIM, vocab_size=VOCAB, decoder=DECODERS["transformer"], selective_read=True)


def test_tracked_continuation_follows_the_occurrence_the_pointer_read_at_the_previous_step():
    head = make_head("transformer_copy_tracked")
    with torch.no_grad():
        head.copy_gate.bias.fill_(-50.0)  # copy only: the output is the pointer's distribution
        head.copy_follow.fill_(4.0)
    memory_states, mask = memory()
    decoder_states = torch.randn(3, 5, DIM, generator=torch.Generator().manual_seed(3))  # (B, T, D)
    source = torch.tensor([[10, 11, 12, 11, 14, 11, 16]] * 3)  # 11 occurs three times (row 0 pads position 6)
    fed = torch.tensor([[11, 11, 40, 14, 11]] * 3)  # (B, T)
    probs = head.output_scores(decoder_states, memory_states, mask, source, previous_ids=fed).exp()  # (B, T, V)
    raw = head.copy_query(decoder_states) @ head.copy_key(memory_states).transpose(1, 2) / DIM**0.5  # (B, T, S)
    raw = raw.masked_fill(~mask[:, None, :], float("-inf"))
    read = raw.softmax(-1)
    for b in range(3):
        for t in range(5):  # one step at a time: a_{t-1, j-1} on the positions after the fed token, normalised
            bonus = torch.zeros(7)
            for j in range(1, 7):
                if t > 0 and source[b, j - 1] == fed[b, t]:
                    bonus[j] = read[b, t - 1, j - 1]
            bonus = bonus / bonus.sum() if bonus.sum() > 0 else bonus
            attention = (raw[b, t] + 4.0 * bonus).softmax(-1)
            expected = torch.zeros(VOCAB).index_add_(0, source[b], attention)
            torch.testing.assert_close(probs[b, t], expected, rtol=1e-4, atol=1e-5)
    # the bonus is split by where the pointer read, not evenly over the three positions after an 11
    with torch.no_grad():
        head.copy_continuation = "any"
        even = head.output_scores(decoder_states, memory_states, mask, source, previous_ids=fed).exp()
    assert not torch.allclose(even[:, 1], probs[:, 1], atol=1e-3)
    with pytest.raises(ValueError, match="copy_continuation='last'"):
        Seq2SeqHead(dim=DIM, vocab_size=VOCAB, decoder=DECODERS["transformer"], copy=True, copy_continuation="last")
