"""Extractive QA end to end: windows over long contexts, span decoding, BiDAF against its formulas, bad rows,
fast_dev_run of every model variant, eval.py on a SQuAD-schema disk dataset, predict.py with attention."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from tasks.qa.data import QADataModule
from tests.conftest import TINY_TASK, compose_config, train_tiny_checkpoint

from attnlab import cli
from attnlab.attention import BiDAFAttention
from attnlab.training.span import SpanHead, best_spans, squad_scores

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau"]


def squad_rows(count: int, *, words_per_context: int = 60, seed: int = 0) -> list[dict]:
    """SQuAD-schema rows whose answers (two words, anywhere in a long context) are recoverable from the text."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        picks = torch.randint(len(WORDS), (words_per_context,), generator=generator).tolist()
        context = " ".join(WORDS[p] for p in picks) + "."
        first = int(torch.randint(words_per_context - 1, (1,), generator=generator))
        answer = f"{WORDS[picks[first]]} {WORDS[picks[first + 1]]}"
        start = len(" ".join(WORDS[p] for p in picks[:first])) + (1 if first else 0)
        assert context[start : start + len(answer)] == answer
        rows.append({"id": f"q{i}", "title": "greek", "context": context, "question": f"Which words follow {i}?",
                     "answers": {"text": [answer], "answer_start": [start]}})
    return rows


def squad_like(path: Path, rows: list[dict], *, splits: tuple[str, ...] = ("train", "validation", "test")) -> Path:
    DatasetDict({s: Dataset.from_list(rows) for s in splits}).save_to_disk(str(path))
    return path


def disk_module(path: Path, *, defer_setup: bool = False, **overrides) -> QADataModule:
    settings = {"source": "disk", "path": str(path), "group_column": None, "vocab_size": 300, "max_question_len": 8,
                "max_length": 40, "doc_stride": 10, "batch_size": 4, **overrides}
    data = QADataModule(**settings)
    if not defer_setup:
        data.setup("fit")
    return data


def test_windows_cover_long_contexts_and_recover_spans_across_window_borders(tmp_path):
    data = disk_module(squad_like(tmp_path / "squad", squad_rows(40)))
    questions = data.splits["train"].questions
    assert all(len(q.windows) > 2 for q in questions), "contexts must exceed one window for this test"
    crossing = 0
    for q, raw in zip(questions, data.raw_splits["train"]["answers"], strict=True):
        holding = [w for w in q.windows if w.start > 0]
        assert holding, f"{q.id}: no window holds the answer"
        for window in holding:  # the gold token span of every window that holds it maps back to the answer
            first = window.offsets[window.start - data.question_slots]
            last = window.offsets[window.end - data.question_slots]
            assert q.context[first[0] : last[1]] == q.answers[0]
        # windows that a border cuts through the answer exist, and the answer is still whole in another one
        answer_start = raw["answer_start"][0]
        answer_end = answer_start + len(q.answers[0])
        crossing += sum(
            w.offsets[0][0] < answer_end <= w.offsets[-1][1] and w.offsets[0][0] > answer_start
            or w.offsets[0][0] <= answer_start < w.offsets[-1][1] < answer_end
            for w in q.windows
        )
        assert q.windows[-1].offsets[-1][1] == len(q.context)  # the last window reaches the end of the context
    assert crossing > 0, "no window border cut an answer; the test data should produce some"

    # perfect logits: each window points at its gold span (or [CLS]); decoding returns every answer
    head = SpanHead(dim=8)
    batch = data.collate([data.splits["train"][i] for i in range(len(questions))])
    big = 20.0
    start_logits = torch.zeros(batch["input_ids"].shape)
    end_logits = torch.zeros(batch["input_ids"].shape)
    start_logits[torch.arange(len(start_logits)), batch["start_positions"]] = big
    end_logits[torch.arange(len(end_logits)), batch["end_positions"]] = big
    answers = head.decode({"start_logits": start_logits, "end_logits": end_logits}, batch)
    assert [a["text"] for a in answers] == [q.answers[0] for q in questions]
    assert all(q.context[a["answer_start"] :].startswith(a["text"]) for a, q in zip(answers, questions))


def test_support_labels_mark_exactly_the_supporting_facts_tokens(data_dir, tmp_path):
    data = QADataModule(source="builder", data_dir=str(data_dir), babi_tasks=[2, 3], size=12, test_size=2,
                        support_column="support_spans", vocab_size=300, max_length=96, doc_stride=40, batch_size=4)
    data.setup("fit")
    raw = data.raw_splits["train"]
    items = [data.splits["train"][i] for i in range(len(raw))]
    batch = data.collate(items)
    assert batch["support_labels"].shape == batch["input_ids"].shape
    assert not batch["support_labels"][~batch["context_mask"]].any()  # never on the question region or padding
    feature = 0
    windowed = 0
    for item, spans in zip(items, raw["support_spans"], strict=True):
        question = item["question"]
        windowed += len(question.windows) > 1
        pairs = list(zip(spans["start"], spans["end"], strict=True))
        assert all(question.context[a:b].endswith(".") for a, b in pairs)
        for window in question.windows:
            labels = batch["support_labels"][feature, data.question_slots : data.question_slots + len(window.offsets)]
            tagged = "".join(question.context[a:b] for (a, b), flag in zip(window.offsets, labels.tolist(), strict=True)
                             if flag)
            # the tagged tokens spell the supporting sentences inside this window, and nothing else
            inside = "".join(question.context[a:b] for (a, b) in window.offsets
                             if any(start <= a < end for start, end in pairs))
            assert tagged.replace(" ", "") == inside.replace(" ", "")
            feature += 1
    assert windowed > 0, "task-3 contexts should exceed the 78-token window here"
    # a split without the column gets no labels; a training split without it is an error naming the key
    plain = QADataModule(source="builder", data_dir=str(data_dir), babi_tasks=[1], size=6, test_size=2,
                         vocab_size=300, max_length=96, doc_stride=40, batch_size=4)
    plain.setup("fit")
    assert "support_labels" not in plain.collate([plain.splits["train"][0]])
    rows = data.raw_splits["train"].to_list()
    rows[2]["support_spans"] = {"start": [5], "end": [len(rows[2]["context"]) + 1]}
    bad = disk_module(squad_like(tmp_path / "bad_support", rows), support_column="support_spans", max_length=96,
                      doc_stride=40, defer_setup=True)
    with pytest.raises(ValueError, match=r"row 2 \(id babi2-train-s00000-q2\) of split 'train'.*support_spans"):
        bad.setup("fit")
    missing = QADataModule(source="builder", data_dir=str(data_dir), babi_tasks=[1], size=6, test_size=2,
                           support_column="facts", vocab_size=300, max_length=96, doc_stride=40)
    with pytest.raises(ValueError, match="data.support_column=facts"):
        missing.setup("fit")


def test_support_loss_adds_the_weighted_tagging_cross_entropy(tmp_path):
    data = disk_module(squad_like(tmp_path / "squad", squad_rows(4)))
    batch = data.collate([data.splits["train"][i] for i in range(4)])
    generator = torch.Generator().manual_seed(0)
    batch["support_labels"] = (torch.rand(batch["input_ids"].shape, generator=generator) > 0.7).float()
    torch.manual_seed(0)
    plain, tagged = SpanHead(dim=8), SpanHead(dim=8, support_weight=2.0)
    tagged.span.load_state_dict(plain.span.state_dict())
    hidden = torch.randn(*batch["input_ids"].shape, 8)
    outputs = tagged(hidden, None, batch)
    logits, labels = outputs["support_logits"].double(), batch["support_labels"].double()
    context = batch["context_mask"]
    probs = logits.sigmoid()
    expected = -(labels * probs.log() + (1 - labels) * (1 - probs).log())[context].mean()
    span_only = plain.loss(plain(hidden, None, batch), batch)
    torch.testing.assert_close(tagged.loss(outputs, batch).double(), span_only.double() + 2.0 * expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="support_weight"):
        SpanHead(dim=8, support_weight=-1.0)


def test_span_decoding_stays_valid_on_random_scores():
    generator = torch.Generator().manual_seed(0)
    for trial in range(200):
        rows, length = 3, int(torch.randint(2, 40, (1,), generator=generator))
        allowed = torch.zeros(rows, length, dtype=torch.bool)
        for r in range(rows):  # one contiguous context region per row, maybe with blank (whitespace) tokens
            a = int(torch.randint(0, length, (1,), generator=generator))
            b = int(torch.randint(a, length, (1,), generator=generator)) + 1
            allowed[r, a:b] = torch.rand(b - a, generator=generator) > 0.2
        start, end = torch.randn(rows, length, generator=generator) * 5, torch.randn(rows, length, generator=generator) * 5
        max_len = int(torch.randint(1, 8, (1,), generator=generator))
        scores, starts, ends = best_spans(start, end, allowed, max_answer_len=max_len)
        for r in range(rows):
            if not allowed[r].any():
                assert scores[r] == float("-inf")
                continue
            i, j = int(starts[r]), int(ends[r])
            assert i <= j < i + max_len and allowed[r, i] and allowed[r, j], (trial, r, i, j)
            # it is the optimum: brute force over every valid pair
            best = max(float(start[r, a] + end[r, b]) for a in range(length) for b in range(a, min(length, a + max_len))
                       if allowed[r, a] and allowed[r, b])
            assert float(scores[r]) == pytest.approx(best)


def test_bidaf_matches_its_formulas_in_float64():
    torch.manual_seed(0)
    layer = BiDAFAttention(dim=6).double()
    context, question = torch.randn(2, 7, 6, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)
    context_mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    question_mask = torch.tensor([[True] * 4, [True, True, False, False]])
    flow, c2q_weights, q2c_weights = layer(context, question, context_mask=context_mask, question_mask=question_mask,
                                           need_weights=True)
    sim = layer.similarity.requires_grad_(False)
    for b in range(2):
        m = int(question_mask[b].sum())
        n = int(context_mask[b].sum())
        scores = torch.tensor([[float(sim.context_weight @ context[b, i] + sim.question_weight @ question[b, j]
                                      + sim.product_weight @ (context[b, i] * question[b, j]) + sim.bias)
                                for j in range(m)] for i in range(7)], dtype=torch.float64)  # (N, m)
        a = scores.softmax(-1)
        c2q = a @ question[b, :m]
        weights = scores[:n].max(-1).values.softmax(0)
        q2c = weights @ context[b, :n]
        expected = torch.cat([context[b], c2q, context[b] * c2q, context[b] * q2c.expand(7, 6)], dim=-1)
        torch.testing.assert_close(flow[b], expected)
        torch.testing.assert_close(c2q_weights[b, :, :m], a)
        assert torch.all(c2q_weights[b, :, m:] == 0) and torch.all(q2c_weights[b, n:] == 0)
        torch.testing.assert_close(q2c_weights[b, :n], weights)


def test_squad_scores_use_the_official_normalisation():
    scores = squad_scores(["the Kitchen.", "garden", "office hallway"], [["kitchen"], ["hallway", "garden"], ["office"]])
    assert scores["exact_match"].tolist() == [100.0, 100.0, 0.0]
    assert scores["f1"][2] == pytest.approx(100 * 2 * (1 / 2 * 1) / (1 / 2 + 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda row: {**row, "context": "   "}, r"row 3 \(id q3\) of split 'train'.*empty context"),
        (lambda row: {**row, "answers": {"text": ["omega"], "answer_start": [0]}},
         r"row 3 \(id q3\) of split 'train'.*answer 'omega' is not at answer_start=0.*does not occur"),
        (lambda row: {**row, "answers": {"text": [row["answers"]["text"][0]], "answer_start": [row["answers"]["answer_start"][0] + 1]}},
         r"row 3 \(id q3\) of split 'train'.*is not at answer_start"),
    ],
    ids=["empty context", "answer not in context", "answer_start off"],
)
def test_bad_rows_name_the_row(tmp_path, change, message):
    rows = squad_rows(6)
    rows[3] = change(rows[3])
    with pytest.raises(ValueError, match=message):
        disk_module(squad_like(tmp_path / "bad", rows))


def test_question_region_is_the_sliding_window_global_prefix(train_cfg):
    cfg = train_cfg(*TINY_TASK["qa"], "attention=sliding_window")
    assert cfg.attention.num_global == cfg.data.max_question_len + 2
    assert cfg.backbone.pos_encoding == "rope" and cfg.model.tasks.qa.adapter.positions == "none"  # never twice
    sinusoidal = train_cfg(*TINY_TASK["qa"], "backbone.pos_encoding=none")
    assert sinusoidal.model.tasks.qa.adapter.positions == "sinusoidal"  # the adapter adds them instead


@pytest.mark.parametrize(
    "variant",
    [[], ["model.tasks.qa.head.interaction=bidaf"], ["attention=sliding_window", "attention.window=8"],
     ["backbone.pos_encoding=none"], ["data.support_column=support_spans", "model.tasks.qa.head.support_weight=1.0"],
     ["model.tasks.qa.route=null"], ["model.tasks.qa.route=null", "attention=sliding_window", "attention.window=8"],
     ["model.tasks.qa.route.stick_heads=1", "model.tasks.qa.route.memory_positions=sinusoidal"]],
    ids=["full_rope", "bidaf", "sliding_window", "sinusoidal", "strong_supervision", "token_route",
         "token_route_sliding_window", "stick_heads_memory_ages"],
)
def test_fast_dev_run(train_cfg, variant):
    cfg = train_cfg(*TINY_TASK["qa"], *variant, "debug=fdr")
    cli.train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())["test"]
    assert {"test/qa/exact_match", "test/qa/f1", "test/qa/exact_match_task1", "test/qa/f1_task3"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 100.0 for k in ("test/qa/exact_match", "test/qa/f1"))


def test_squad_experiment_trains_on_a_squad_disk_dataset(train_cfg, tmp_path):
    path = squad_like(tmp_path / "squad", squad_rows(12, words_per_context=150))
    cfg = train_cfg(*TINY_TASK["qa"], "experiment=qa_squad", "data.source=disk", f"data.path={path}",
                    "data.vocab_size=300", "data.max_length=128", "data.doc_stride=32", "debug=fdr")
    cli.train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())["test"]
    assert set(metrics) == {"test/qa/exact_match", "test/qa/f1", "test/qa/loss"}  # no per-group metrics


@pytest.fixture(scope="module")
def qa_checkpoint(tmp_path_factory, data_dir) -> Path:
    return train_tiny_checkpoint("qa", tmp_path_factory.mktemp("qa") / "run", data_dir)


def test_eval_on_a_squad_disk_dataset_writes_one_prediction_per_question(qa_checkpoint, eval_cfg, tmp_path):
    rows = squad_rows(7, words_per_context=200)  # longer than one window of the tiny model's max_length
    path = squad_like(tmp_path / "squad", rows, splits=("test",))
    cfg = eval_cfg(f"ckpt_path={qa_checkpoint}", "data.source=disk", f"data.path={path}", "+data.group_column=null",
                   "+data.max_length=128", "+data.doc_stride=64")
    Path(cfg.paths.output_dir).mkdir(parents=True)
    metrics = cli.evaluate(cfg)
    records = [json.loads(line) for line in (Path(cfg.paths.output_dir) / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(len(rows)))
    for record in records:
        row = rows[record["index"]]
        assert record["id"] == row["id"] and record["answers"] == row["answers"]["text"]
        assert row["context"][record["answer_start"] :].startswith(record["prediction_text"])
    assert {"test/qa/exact_match", "test/qa/f1"} <= set(metrics)


def test_predict_prints_the_answer_and_draws_question_to_context_attention(qa_checkpoint, tmp_path, data_dir, caplog):
    context = "Mary went to the kitchen. John moved to the garden. Mary travelled to the office."
    cfg = compose_config("predict", [f"ckpt_path={qa_checkpoint}", f"context='{context}'", "question='Where is Mary?'",
                                     "viz=true"], tmp_path / "predict", data_dir)
    with caplog.at_level("INFO", logger="attnlab.cli"):
        (record,) = cli.predict(cfg)
    assert record["prediction_text"] and context[record["answer_start"] :].startswith(record["prediction_text"])
    (picture,) = Path(cfg.paths.output_dir).glob("*.png")
    assert picture.stat().st_size > 5_000
    assert re.search(rf"Where is Mary\?.*{re.escape(record['prediction_text'])}", caplog.text, re.DOTALL)  # the printed table


def test_segment_embeddings_tell_question_from_context():
    from attnlab.embed import TokenEmbed

    torch.manual_seed(0)
    adapter = TokenEmbed(dim=16, vocab_size=20, tokens_key="input_ids", num_segments=2, positions="none")
    ids = torch.tensor([[5, 6, 7, 0]])
    same_ids = {"input_ids": ids, "segments": torch.tensor([[0, 0, 0, 0]])}
    other = {"input_ids": ids, "segments": torch.tensor([[0, 1, 1, 1]])}
    tokens_a, mask = adapter(same_ids)
    tokens_b, _ = adapter(other)
    assert torch.equal(tokens_a[:, 0], tokens_b[:, 0]) and not torch.equal(tokens_a[:, 1], tokens_b[:, 1])
    torch.testing.assert_close(tokens_b[0, 1] - tokens_a[0, 1], adapter.segments.weight[1] - adapter.segments.weight[0])
    assert mask.tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="no 'segments' field"):
        adapter({"input_ids": ids})


def test_memory_benchmark_runs_and_reports_the_ratio(tmp_path):
    from tests.conftest import run_script

    out = tmp_path / "qa_memory.json"
    run = run_script("scripts/bench_qa_memory.py", "--length", "256", "--window", "32", "--json", str(out), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    peaks = {row["variant"]: row["peak_mb"] for row in report["results"]}
    assert set(peaks) == {"full[sdpa:auto]", "full[sdpa:math]", "full[reference]", "sliding_window[w=32]"}
    assert all(peak > 0 for peak in peaks.values())
    assert {row["variant"]: row["num_global"] for row in report["results"]}["sliding_window[w=32]"] == 18
    assert "peak memory" in run.stdout


def test_bidaf_head_returns_its_question_to_context_weights_over_the_context(tmp_path):
    data = disk_module(squad_like(tmp_path / "squad", squad_rows(4)))
    batch = data.collate([data.splits["train"][i] for i in range(4)])
    head = SpanHead(dim=8, interaction="bidaf", num_heads=2)
    hidden = torch.randn(*batch["input_ids"].shape, 8)
    outputs = head(hidden, batch["input_ids"] != 0, batch)
    q2c = outputs["question_to_context"]  # (F, N)
    torch.testing.assert_close(q2c.sum(-1), torch.ones(len(q2c)))
    assert torch.all(q2c[~batch["context_mask"]] == 0)
    assert "question_to_context" not in SpanHead(dim=8)(hidden, None, batch)
