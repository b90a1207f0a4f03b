"""Translation and summarization end to end: WMT / xsum schemas from disk, the tokenizer through a checkpoint,
fast_dev_run of the Bahdanau experiments, eval.py and predict.py with cross-attention maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from hydra.utils import instantiate
from tasks.summarization.data import SummarizationDataModule, derived_entities, swap_entities
from tasks.translation.data import TranslationDataModule
from tests.conftest import QUIET, TINY_TASK, compose_config

from attnlab import cli
from attnlab.checkpoints import load_checkpoint
from attnlab.data import TextTokenizer

WMT_ROWS = [
    {"de": "Das Haus ist klein.", "en": "The house is small."},
    {"de": "Ich habe drei Katzen.", "en": "I have three cats."},
    {"de": "Wir fahren morgen nach Berlin.", "en": "We are going to Berlin tomorrow."},
    {"de": "Das Wetter ist schön.", "en": "The weather is nice."},
    {"de": "Er liest ein Buch über Käse.", "en": "He is reading a book about cheese."},
]


def wmt_like(path: Path, *, splits: tuple[str, ...] = ("train", "validation", "test")) -> Path:
    """A tiny dataset in WMT's hub schema (translation: {de, en}), saved to disk."""
    DatasetDict({s: Dataset.from_dict({"translation": WMT_ROWS * 4}) for s in splits}).save_to_disk(str(path))
    return path


def test_translation_reads_the_wmt_schema_from_disk(tmp_path):
    data = TranslationDataModule(source="disk", path=str(wmt_like(tmp_path / "wmt")), src_lang="de", tgt_lang="en",
                                 vocab_size=300, batch_size=4)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    tokenizer = batch["tokenizer"]
    assert batch["sources"][0] == "Das Haus ist klein." and batch["references"][0] == "The house is small."
    assert tokenizer.decode(batch["source_tokens"][0]) == "Das Haus ist klein."
    assert batch["decoder_input"][0, 0] == tokenizer.bos_id  # teacher forcing: BOS + target ...
    labels = batch["labels"][0][batch["labels"][0] != -100]
    assert labels[-1] == tokenizer.eos_id and tokenizer.decode(labels) == "The house is small."  # ... target + EOS
    torch.testing.assert_close(batch["decoder_input"][0, 1 : len(labels)], labels[:-1])

    wrong = TranslationDataModule(source="disk", path=str(tmp_path / "wmt"), src_lang="fr", vocab_size=300)
    with pytest.raises(ValueError, match=r"data\.src_lang=fr"):
        wrong.setup("fit")
    with pytest.raises(ValueError, match="data.name=mul-en"):
        TranslationDataModule(source="builder", name="de-en")


def test_the_tokenizer_travels_in_the_datamodule_state_and_wins_over_a_fresh_one(tmp_path):
    trained = TranslationDataModule(source="disk", path=str(wmt_like(tmp_path / "wmt")), src_lang="de",
                                    vocab_size=300)
    trained.setup("fit")
    state = json.loads(json.dumps(trained.state_dict()))  # what a checkpoint stores (JSON-safe)
    other = SummarizationDataModule(source="disk", path=str(tmp_path / "wmt"))  # any text module
    other.tokenizer = TextTokenizer.train(["something else entirely"] * 5, vocab_size=270)
    other.load_state_dict(state)
    text = "Wir lesen morgen über Käse – und Ünïcödé ✓"
    assert other.tokenizer.encode(text) == trained.tokenizer.encode(text)
    assert other.tokenizer.decode(other.tokenizer.encode(text)) == text


def test_summarization_column_map_and_derived_entities(tmp_path):
    article = "Lyon, 3 May. Marta Kowalska, chief of Banco de Lisboa, resigned on Tuesday. The weather was fine."
    summary = "Marta Kowalska resigned as chief of Banco de Lisboa. Markets in Paris fell."
    assert derived_entities(summary, article) == ["Marta Kowalska", "Banco de Lisboa"]  # Paris: not in the article
    rows = {"document": [article] * 6, "summary": [summary] * 6, "id": [str(i) for i in range(6)]}
    path = tmp_path / "xsum"
    DatasetDict({s: Dataset.from_dict(rows) for s in ("train", "validation", "test")}).save_to_disk(str(path))
    data = SummarizationDataModule(source="disk", path=str(path), column_map={"document": "article", "summary": "highlights"},
                                   vocab_size=300, max_source_len=8, batch_size=2)
    data.setup("fit")
    batch = next(iter(data.test_dataloader()))
    assert batch["entities"] == [["Marta Kowalska", "Banco de Lisboa"]] * 2
    assert batch["source_tokens"].shape[1] == 8  # truncated to max_source_len, EOS kept last
    assert (batch["source_tokens"][:, -1] == data.tokenizer.eos_id).all()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_dir) -> dict[str, Path]:
    """Two-step checkpoints: translation (transformer), summarization (Bahdanau, with the default's selective
    read and prefix-space tokenizer switched back on, so predict and eval cover them too)."""
    found = {}
    for name, task, extra in (("translation", "translation", []),
                              ("summarization_bahdanau", "summarization", [
                                  "experiment=summarization_bahdanau", "backbone.dim=64",
                                  "model.tasks.summarization.head.selective_read=true",
                                  "data.tokenizer_prefix_space=true"])):
        out = tmp_path_factory.mktemp(name) / "run"
        cfg = compose_config("train", [*QUIET, *TINY_TASK[task], *extra, "debug=limit", "trainer.max_epochs=1",
                                       "trainer.limit_train_batches=2", "test=false"], out, data_dir)
        cli.train(cfg)
        found[name] = out / "checkpoints" / "last.ckpt"
    return found


def test_checkpoint_tokenizer_encodes_like_training(checkpoints, train_cfg):
    checkpoint = load_checkpoint(checkpoints["translation"])
    (state,) = [v for k, v in checkpoint.items() if k.endswith("DataModule")]
    restored = TextTokenizer.from_state_dict(state["tokenizer"])
    data = instantiate(train_cfg(*TINY_TASK["translation"]).data)
    data.setup("fit")
    sources = data.raw_splits["test"]["translation"]
    for pair in sources:
        assert restored.encode(pair["mul"]) == data.tokenizer.encode(pair["mul"])


def test_eval_on_a_disk_dataset_writes_one_prediction_per_item(checkpoints, eval_cfg, tmp_path):
    path = tmp_path / "wmt"
    DatasetDict({"test": Dataset.from_dict({"translation": [{"fr": r["de"], "en": r["en"]} for r in WMT_ROWS]})}
                ).save_to_disk(str(path))
    cfg = eval_cfg(f"ckpt_path={checkpoints['translation']}", "data.source=disk", f"data.path={path}",
                   "+data.src_lang=fr")
    Path(cfg.paths.output_dir).mkdir(parents=True)  # Hydra makes it when eval.py runs as a script
    metrics = cli.evaluate(cfg)
    records = [json.loads(line) for line in (Path(cfg.paths.output_dir) / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(len(WMT_ROWS)))
    assert [r["reference"] for r in sorted(records, key=lambda r: r["index"])] == [r["en"] for r in WMT_ROWS]
    assert all(isinstance(r["prediction"], str) for r in records)
    assert {"test/translation/bleu", "test/translation/chrf", "test/translation/exact_match"} <= set(metrics)


@pytest.mark.parametrize("run", ["translation", "summarization_bahdanau"])
def test_predict_generates_text_and_draws_its_cross_attention(checkpoints, tmp_path, data_dir, run):
    text = "samedi 21 novembre 2026" if run == "translation" else "Marta Kowalska, chief of Banco de Lisboa, resigned."
    guard = ["task=translation"] if run == "translation" else []  # the guard composes the task's preset overrides
    cfg = compose_config("predict", [f"ckpt_path={checkpoints[run]}", f"input='{text}'", "viz=true", *guard],
                         tmp_path / "predict", data_dir)
    records = cli.predict(cfg)
    assert len(records) == 1 and records[0]["source"] == text and isinstance(records[0]["prediction"], str)
    (picture,) = Path(cfg.paths.output_dir).glob("*.png")
    assert picture.stat().st_size > 5_000


@pytest.mark.parametrize("task", ["translation", "summarization"])
def test_fast_dev_run_of_the_bahdanau_experiment(train_cfg, task):
    cfg = train_cfg(*TINY_TASK[task], f"experiment={task}_bahdanau", "backbone.dim=64", "debug=fdr")
    cli.train(cfg)
    model = instantiate(cfg.model, _partial_=True)(run_config=None)
    assert type(model.backbone).__name__ == "RecurrentEncoder"
    assert type(model.heads[task].decoder).__name__ == "AttentiveGRUDecoder"


def test_entity_swap_renames_names_consistently_and_keeps_shared_words():
    def word(i: int, stem: str) -> str:  # a distinct name per row, as in the builder's data
        return stem + "".join(chr(97 + (i // 26**k) % 26) for k in range(3))

    rows = [(word(i, "Mar"), word(i, "Kowal"), word(i, "Lis"), word(i, "Ly")) for i in range(400)]
    data = Dataset.from_dict({
        "article": [f"{f} {s} of {o} Holdings spoke in {c} on 3 May. {s} smiled." for f, s, o, c in rows],
        "highlights": [f"{f} {s} of {o} Holdings spoke in {c} on 3 May." for f, s, o, c in rows],
        "id": [str(i) for i in range(400)],
        "entities": [[f"{f} {s}", f"{o} Holdings", c, "3 May"] for f, s, o, c in rows],
    })
    swapped = swap_entities(data, seed=0)
    for i in (0, 1):
        row, (first_name, surname, org, city) = swapped[i], rows[i]
        assert not any(w in row["article"] for w in (first_name, surname, org, city))
        assert "Holdings" in row["article"] and "3 May" in row["article"]  # shared words stay
        assert all(e in row["article"] and e in row["highlights"] for e in row["entities"])
        new_surname = row["entities"][0].split()[1]
        assert row["article"].count(new_surname) == 2  # every mention renamed the same way
    assert swapped[0]["entities"][0] != swapped[1]["entities"][0]
    assert swap_entities(data, seed=0)[0] == swapped[0]  # seeded
