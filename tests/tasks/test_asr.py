"""Speech recognition end to end: audio reading and resampling (soundfile, 22.05 / 8 kHz, bad files), the
log-mel front end, SpecAugment and 4x subsampling (lengths and masks), CTC greedy and beam decoding,
per-type WER, the Conformer preset, fast_dev_run with both encoders, eval.py on disk datasets at other
sampling rates, predict.py with the CTC alignment picture."""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from datasets import Audio, Dataset, DatasetDict, Value
from tasks.asr.builder import SAMPLE_RATE, UtteranceSpec, render_utterance
from tasks.asr.data import ASRDataModule
from tasks.asr.head import CharVocabulary, CTCBeamSearch, CTCHead, ctc_greedy_ids, normalize_transcript
from tasks.asr.lm import NgramCounts
from tests.conftest import TINY_TASK, compose_config, train_tiny_checkpoint
from torchmetrics.text import WordErrorRate

from attnlab import cli
from attnlab.backbones import ConformerEncoder
from attnlab.data.audio import AudioReadError, audio_info, read_audio
from attnlab.embed import AudioFrameEmbed
from attnlab.embed.audio import ConvSubsampling, LogMelFrontend, SpecAugment, lengths_to_mask

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _tone(frequency: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


# ---- text, vocabulary, decoding -------------------------------------------------------------------------
def test_transcripts_normalise_like_librispeech():
    assert normalize_transcript("HE'S GONE, MISTER QUILTER!  ") == "he's gone mister quilter"
    assert normalize_transcript("turn on the kitchen lights") == "turn on the kitchen lights"
    assert normalize_transcript("Café—au-lait.") == "café au lait"
    vocabulary = CharVocabulary()
    assert len(vocabulary) == 29  # blank + space + a..z + '
    ids = vocabulary.encode("he's gone")
    assert 0 not in ids and vocabulary.decode(ids) == "he's gone"
    assert vocabulary.decode(vocabulary.encode("café au lait")) == "caf au lait"  # é is outside the alphabet
    assert vocabulary.unknown("café") == {"é"}


def test_ctc_greedy_collapses_repeats_then_removes_blanks():
    vocabulary = CharVocabulary("ab")  # ids: 0 blank, 1 a, 2 b
    paths = [[1, 1, 0, 1, 2, 2, 0, 0, 2, 0], [0, 0, 2, 2, 2, 1, 0, 0, 0, 0], [0] * 10]
    log_probs = torch.nn.functional.one_hot(torch.tensor(paths), 3).float().log()  # (3, 10, 3)
    ids = ctc_greedy_ids(log_probs, torch.tensor([10, 6, 10]))
    assert ids == [[1, 1, 2, 2], [2, 1], []]  # "a a" kept apart by a blank, "b b" too; repeats merge
    assert [vocabulary.decode(row) for row in ids] == ["aabb", "ba", ""]
    assert ctc_greedy_ids(log_probs, torch.tensor([3, 3, 10]))[:2] == [[1], [2]]  # only the valid frames


def test_beam_search_finds_the_likelier_labelling_that_greedy_misses():
    """Two frames of P(a) = 0.4, P(blank) = 0.6: the best path is blank-blank (0.36), but the labelling "a"
    sums paths a-, -a and aa to 0.64. Best-path decoding says "", prefix beam search "a"."""
    vocabulary = CharVocabulary(" a")
    probs = torch.tensor([[[0.6, 0.0, 0.4], [0.6, 0.0, 0.4]]]).clamp(min=1e-6)  # (1, 2, V): blank, space, a
    log_probs = probs.log()
    assert ctc_greedy_ids(log_probs, torch.tensor([2])) == [[]]
    beam = CTCBeamSearch(vocabulary, beam_size=4)
    assert beam(log_probs, torch.tensor([2])) == [[2]]
    # on confident posteriors beam search and greedy agree
    torch.manual_seed(0)
    paths = torch.randint(0, 3, (4, 12))
    peaked = (torch.nn.functional.one_hot(paths, 3).float() * 8).log_softmax(-1)
    lengths = torch.tensor([12, 9, 5, 12])
    decode = lambda rows: [vocabulary.decode(row) for row in rows]
    assert decode(beam(peaked, lengths)) == decode(ctc_greedy_ids(peaked, lengths))


def _spelled(vocabulary: CharVocabulary, texts: list[str], *, sharpness: float = 20.0) -> dict[str, torch.Tensor]:
    """Head outputs whose best path spells each text, one character every other token (blanks between)."""
    width = max(len(t) for t in texts) * 2 + 2
    paths = torch.zeros(len(texts), width, dtype=torch.long)
    for b, text in enumerate(texts):
        paths[b, 1 : 2 * len(text) + 1 : 2] = torch.tensor(vocabulary.encode(text))
    log_probs = (torch.nn.functional.one_hot(paths, len(vocabulary)).float() * sharpness).log_softmax(-1)
    return {"log_probs": log_probs, "lengths": torch.full((len(texts),), width)}


def test_lexicon_beam_search_spells_only_known_words_and_travels_in_the_checkpoint(tmp_path):
    class Words:  # what the head reads from the datamodule under lexicon=train
        def transcript_words(self, split):
            return ["lights", "on", "the", "turn", "kitchen"]

    head = CTCHead(dim=8, decoding="beam", lexicon="train")
    outputs = _spelled(head.vocabulary, ["turn on the lihts", "turn on the kitchen lights"], sharpness=3.0)
    assert ctc_greedy_ids(outputs["log_probs"], outputs["lengths"])  # greedy keeps the slip:
    assert head.vocabulary.decode(ctc_greedy_ids(outputs["log_probs"], outputs["lengths"])[0]) == "turn on the lihts"
    head.bind_data(Words())
    assert head.transcribe(outputs) == ["turn on the lights", "turn on the kitchen lights"]
    restored = CTCHead(dim=8, decoding="beam", lexicon="train")
    restored.load_state_dict(head.state_dict())  # the words come with the weights (extra state)
    assert restored.words == head.words and restored.transcribe(outputs) == head.transcribe(outputs)
    restored.bind_data(None)  # a checkpoint's words win: no datamodule needed (eval.py on a test-only set)
    words_file = tmp_path / "words.txt"
    words_file.write_text("turn\non\nthe\nlights\n")
    assert CTCHead(dim=8, decoding="beam", lexicon=str(words_file)).transcribe(outputs)[0] == "turn on the lights"
    with pytest.raises(ValueError, match="transcript_words"):
        CTCHead(dim=8, decoding="beam", lexicon="train").bind_data(object())
    with pytest.raises(FileNotFoundError, match="head.lexicon"):
        CTCHead(dim=8, lexicon=str(tmp_path / "missing.txt"))


def test_witten_bell_ngrams_are_distributions_and_match_the_formula():
    sentences = ["turn on the lamp", "turn on the light", "turn off the lamp", "see the lamb"]
    words = sorted({w for s in sentences for w in s.split()} | {"unseen"})
    for order in (1, 2, 3):
        counts = NgramCounts(sentences, words, order=order)
        for history in [(), ("<s>",), ("turn", "on", "the"), ("see", "the"), ("unseen",), ("lamp",)]:
            total = sum(counts.prob(w, history) for w in [*words, "</s>"])
            assert total == pytest.approx(1.0, abs=1e-12), (order, history)
        assert counts.prob("unseen", ("on", "the")) > 0  # every lexicon word stays possible
        restored = NgramCounts.from_state_dict(json.loads(json.dumps(counts.state_dict())))
        assert restored.prob("lamp", ("on", "the")) == counts.prob("lamp", ("on", "the"))
    bigram = NgramCounts(sentences, words, order=2)
    # P(lamp | the): c(the) = 4, T(the) = 3 (lamp, light, lamb), c(the, lamp) = 2, unigram add-one: (2 + 1) / (17 + 10)
    unigram = (2 + 1) / (sum(len(s.split()) + 1 for s in sentences) + len(words) + 1)
    assert bigram.prob("lamp", ("the",)) == pytest.approx((2 + 3 * unigram) / (4 + 3))


@pytest.mark.parametrize(("corpus", "expected"), [(["turn on the lamp"] * 5 + ["see the lamb"], "turn on the lamp"),
                                                  (["turn on the lamb"] * 5 + ["see the lamp"], "turn on the lamb")])
def test_the_word_language_model_settles_what_the_sounds_leave_open(corpus, expected):
    """The last letter is p or b with equal probability: the lexicon allows both words, the trigram of the
    training transcripts picks the one that followed "on the"."""
    vocabulary = CharVocabulary()
    outputs = _spelled(vocabulary, ["turn on the lamp"])
    frame = 2 * len("turn on the lam") + 1
    outputs["log_probs"][0, frame] = -30.0
    outputs["log_probs"][0, frame, [vocabulary.ids["p"], vocabulary.ids["b"]]] = math.log(0.5)
    words = ["turn", "on", "the", "lamp", "lamb", "see"]
    beam = CTCBeamSearch(vocabulary, beam_size=16, words=words, language_model=NgramCounts(corpus, words, order=3),
                         lm_weight=1.0)
    assert vocabulary.decode(beam(outputs["log_probs"], outputs["lengths"])[0]) == expected
    with pytest.raises(ValueError, match="needs a lexicon"):
        CTCBeamSearch(vocabulary, language_model=NgramCounts(corpus, words))


def test_per_type_wer_scores_each_utterance_type_on_its_own():
    head = CTCHead(dim=8, groups=["digits", "sentence"])
    metrics = head.build_metrics()
    texts = ["one two three", "turn on the lights", "five", "open the door"]
    hypotheses = ["one two three", "turn off the lights", "five", "open the door now"]
    outputs = _spelled(head.vocabulary, hypotheses)
    assert head.transcribe(outputs) == hypotheses
    head.update_metrics(metrics, outputs, {"texts": texts, "groups": ["digits", "sentence", "digits", "sentence"]})
    scores = {k: float(v) for k, v in metrics.compute().items()}
    assert scores["wer_digits"] == 0.0
    assert scores["wer_sentence"] == pytest.approx(2 / 7)  # one substitution in 4 words, one insertion in 3
    assert scores["wer"] == pytest.approx(float(WordErrorRate()(hypotheses, texts)))
    assert 0 < scores["cer"] < scores["wer"]


# ---- audio files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [22_050, 8_000, 16_000])
def test_read_audio_resamples_any_rate_to_16khz(tmp_path, rate):
    tone = _tone(440.0, 1.0, rate)
    path = tmp_path / "tone.flac"
    soundfile.write(path, np.stack([tone, tone], axis=1), rate)  # stereo FLAC
    samples = read_audio(path, sample_rate=16_000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 16_000) <= 1
    assert _peak_hz(samples, 16_000) == pytest.approx(440.0, abs=2.0)
    assert np.sqrt(np.mean(samples**2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.03)  # loudness kept
    assert audio_info(str(path)) == (len(tone), rate)
    from_bytes = read_audio({"bytes": path.read_bytes(), "path": "tone.flac"})
    np.testing.assert_array_equal(from_bytes, samples)
    decoded = read_audio({"array": tone, "sampling_rate": rate, "path": None})
    np.testing.assert_allclose(decoded, samples, atol=1e-4)
    assert read_audio("tone.flac", root=tmp_path).shape == samples.shape


def test_bad_audio_names_the_file(tmp_path):
    (tmp_path / "text.wav").write_text("not audio at all")
    (tmp_path / "zero.wav").write_bytes(b"")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16_000)
    good = io.BytesIO()
    soundfile.write(good, _tone(300, 0.5, 16_000), 16_000, format="WAV")
    (tmp_path / "cut.wav").write_bytes(good.getvalue()[:30])
    for name, message in [("missing.wav", "does not exist"), ("text.wav", "cannot decode"), ("zero.wav", "cannot decode"),
                          ("empty.wav", "no samples"), ("cut.wav", "cannot decode")]:
        with pytest.raises(AudioReadError, match=message) as error:
            read_audio(tmp_path / name)
        assert name in str(error.value)


# ---- front end ------------------------------------------------------------------------------------------
def test_feature_token_and_mask_lengths_agree_after_subsampling():
    adapter = AudioFrameEmbed(dim=32).eval()
    lengths = torch.tensor([16_000, 12_345, 4_001, 800, 159])
    batch = {"audio": torch.randn(5, 16_000) * 0.1, "audio_lengths": lengths}
    features, frames = adapter.features(batch)
    assert features.shape == (5, 101, 80)
    assert frames.tolist() == [n // 160 + 1 for n in lengths.tolist()]
    assert (features[1, frames[1]:] == 0).all() and features[1, : frames[1]].abs().sum() > 0
    tokens, mask = adapter(batch)
    expected = [math.ceil(math.ceil(f / 2) / 2) for f in frames.tolist()]
    assert mask.sum(1).tolist() == expected == adapter.token_lengths(lengths).tolist()
    assert tokens.shape == (5, expected[0], 32) and mask[:, 0].all()
    for b in range(5):  # each utterance alone gives that many tokens
        alone, alone_mask = adapter({"audio": batch["audio"][b : b + 1, : lengths[b]], "audio_lengths": lengths[b : b + 1]})
        assert alone.shape[1] == expected[b] and alone_mask.all()


def test_subsampling_tokens_do_not_depend_on_the_padding():
    torch.manual_seed(0)
    subsample = ConvSubsampling(n_mels=16, dim=8, channels=4).double()
    features = torch.randn(1, 37, 16, dtype=torch.float64)
    alone, alone_lengths = subsample(features, torch.tensor([37]))
    padded, padded_lengths = subsample(torch.cat([features, torch.zeros(1, 30, 16, dtype=torch.float64)], 1), torch.tensor([37]))
    assert alone_lengths.tolist() == padded_lengths.tolist() == [10] and padded.shape[1] == 17
    torch.testing.assert_close(padded[:, :10], alone, rtol=1e-12, atol=1e-12)


def test_log_mel_normalisation_uses_each_utterance_alone():
    frontend = LogMelFrontend()
    waveform = torch.randn(2, 8000) * torch.tensor([[0.01], [1.0]])  # the same shape at two loudness levels
    waveform[1, 4000:] = 0.0
    features, frames = frontend(waveform, torch.tensor([8000, 4000]))
    valid = features[1, : frames[1]]
    torch.testing.assert_close(valid.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(80), atol=1e-2, rtol=0)


def test_spec_augment_masks_and_warps_only_in_training():
    augment = SpecAugment(freq_masks=2, freq_width=10, time_masks=2, time_width=10, freq_warp=0.2)
    features = torch.randn(4, 60, 80) + 5.0  # no zeros of its own
    assert torch.equal(augment.eval()(features), features)
    torch.manual_seed(0)
    masked = augment.train()(features)
    assert masked.shape == features.shape and (masked == 0).any()
    assert not torch.equal((masked[0] == 0), (masked[1] == 0))  # every utterance draws its own masks
    augment.active = False  # what the module sets under trainer.overfit_batches: one fixed batch stays fixed
    assert torch.equal(augment(features), features)
    # warping moves a spectral peak: bin 40 lands at 40 x factor
    peak = torch.zeros(1, 5, 80)
    peak[..., 40] = 1.0
    torch.manual_seed(1)
    warp = SpecAugment(freq_warp=0.2)
    factors = 1.0 + (torch.rand(1, 1) * 2 - 1) * 0.2
    torch.manual_seed(1)
    moved = warp.warp(peak)[0, 0]
    assert moved.argmax().item() == pytest.approx(40 * factors.item(), abs=1)


def test_conformer_preset_ignores_padding():
    torch.manual_seed(0)
    encoder = ConformerEncoder(dim=16, depth=2, num_heads=2, ffn_dim=32, kernel_size=5, dropout=0.0).eval()
    tokens = torch.randn(1, 9, 16)
    alone = encoder(tokens, torch.ones(1, 9, dtype=torch.bool))
    padded = encoder(torch.cat([tokens, torch.randn(1, 6, 16)], 1), lengths_to_mask(torch.tensor([9]), 15))
    torch.testing.assert_close(padded[:, :9], alone, atol=1e-5, rtol=1e-5)
    assert (padded[:, 9:] == 0).all()
    with pytest.raises(ValueError, match="kernel_size"):
        ConformerEncoder(dim=16, kernel_size=4)


# ---- datamodule -----------------------------------------------------------------------------------------
def _speech_dataset(directory: Path, rate: int, *, count: int = 4, write: bool = True) -> Dataset:
    """LibriSpeech-shaped rows (audio path, TEXT IN CAPITALS, speaker_id, id) of espeak-ng speech at `rate`."""
    texts = ["SEVEN THREE ONE", "TURN ON THE KITCHEN LIGHTS.", "OH FIVE", "OPEN THE DOOR"][:count]
    rows = {"audio": [], "text": [], "speaker_id": [], "id": []}
    for i, text in enumerate(texts):
        spec = UtteranceSpec(text=text.lower().strip("."), utterance_type="sentence", speaker_id=i, rate=160,
                             pitch=50, snr_db=30.0, noise_seed=i)
        samples = render_utterance(spec).astype(np.float32) / 32768  # 16 kHz
        if rate != SAMPLE_RATE:
            samples = torch.from_numpy(samples)
            import torchaudio.functional as AF
            samples = AF.resample(samples, SAMPLE_RATE, rate).numpy()
        name = f"{i}.flac"
        if write:
            (directory / "audio").mkdir(parents=True, exist_ok=True)
            soundfile.write(directory / "audio" / name, samples, rate)
        rows["audio"].append(f"audio/{name}")
        rows["text"].append(text)
        rows["speaker_id"].append(i)
        rows["id"].append(f"utt-{i}")
    return Dataset.from_dict(rows)


@needs_espeak
def test_bad_recordings_name_their_sample_or_are_skipped_with_a_count(tmp_path, caplog):
    split = _speech_dataset(tmp_path, 16_000)
    (tmp_path / "audio" / "2.flac").write_bytes(b"junk")
    DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(tmp_path))
    module = ASRDataModule(source="disk", path=str(tmp_path), group_column=None, batch_size=2)
    with pytest.raises(ValueError, match=r"sample 2 of split 'train'.*2\.flac.*skip_bad_samples"):
        module.setup("fit")
    module = ASRDataModule(source="disk", path=str(tmp_path), group_column=None, batch_size=2, skip_bad_samples=True)
    with caplog.at_level(logging.WARNING):
        module.setup("fit")
    assert "skipped 1 of 4 recordings of split 'train'" in caplog.text
    assert len(module.splits["train"]) == 3 and len(module.durations["train"]) == 3
    item = module.splits["test"][2]  # row 3 of the original: "OPEN THE DOOR"
    assert item["text"] == "open the door" and item["audio"].dtype == torch.float32
    # a row whose recording breaks after set-up (duration column present: headers not read) names its sample
    with_duration = split.add_column("duration", [1.0] * 4)
    (tmp_path / "d").mkdir()
    DatasetDict({"train": with_duration, "validation": with_duration, "test": with_duration}).save_to_disk(str(tmp_path / "d"))
    module = ASRDataModule(source="disk", path=str(tmp_path / "d"), audio_root=str(tmp_path), group_column=None)
    module.setup("fit")
    with pytest.raises(ValueError, match=r"cannot read sample 2 of split 'test'.*2\.flac"):
        module.splits["test"][2]


@needs_espeak
def test_empty_transcripts_name_their_row(tmp_path):
    split = _speech_dataset(tmp_path, 16_000, count=2).map(lambda row, i: {"text": "..." if i == 1 else row["text"]},
                                                           with_indices=True)
    DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(tmp_path))
    with pytest.raises(ValueError, match=r"sample 1 \(id utt-1\) of split 'train'.*no transcript characters"):
        ASRDataModule(source="disk", path=str(tmp_path), group_column=None).setup("fit")


@needs_espeak
def test_librispeech_split_names_map_onto_train(tmp_path):
    split = _speech_dataset(tmp_path, 16_000, count=2)
    DatasetDict({"train.100": split, "validation": split, "test": split}).save_to_disk(str(tmp_path))
    with pytest.raises(ValueError, match=r"has no 'train' split.*data.split_map='\{train: <split>\}'"):
        ASRDataModule(source="disk", path=str(tmp_path), group_column=None).setup("fit")
    module = ASRDataModule(source="disk", path=str(tmp_path), group_column=None, split_map={"train": "train.100"})
    module.setup("fit")
    assert sorted(module.splits) == ["test", "train", "validation"] and len(module.splits["train"]) == 2
    with pytest.raises(ValueError, match=r"names split\(s\) \['train.360'\]"):
        ASRDataModule(source="disk", path=str(tmp_path), split_map={"train": "train.360"}).setup("fit")


@needs_espeak
def test_hub_audio_columns_are_decoded_by_soundfile(tmp_path):
    """A hub Audio column (here a {bytes, path} struct cast to Audio, which needs no decoder until read) is
    read with decode=False and decoded by soundfile, resampled from 8 kHz."""
    split = _speech_dataset(tmp_path, 8_000, count=2)
    as_bytes = [{"bytes": (tmp_path / p).read_bytes(), "path": Path(p).name} for p in split["audio"]]
    split = split.remove_columns("audio").add_column("audio", as_bytes).cast_column("audio", Audio(sampling_rate=8_000))
    DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(tmp_path / "hub"))
    module = ASRDataModule(source="disk", path=str(tmp_path / "hub"), group_column=None)
    module.setup("fit")
    assert isinstance(module.raw_splits["train"].features["audio"], Audio)
    assert not module.raw_splits["train"].features["audio"].decode
    item = module.splits["train"][1]
    assert abs(len(item["audio"]) - 2 * len(soundfile.read(tmp_path / "audio" / "1.flac")[0])) <= 2
    assert module.durations["train"][1] == pytest.approx(len(item["audio"]) / 16_000, abs=1e-3)


def test_training_augmentation_changes_speed_and_adds_noise():
    module = ASRDataModule(speed_factors=(0.8,), noise_prob=1.0, noise_snr_db=(10.0, 10.0))
    tone = _tone(500.0, 1.0, 16_000)
    out = module._augment(tone)
    assert abs(len(out) - 20_000) <= 2  # 0.8x speed: 1.25x as long
    clean = ASRDataModule(speed_factors=(0.8,), noise_prob=0.0)._augment(tone)
    assert _peak_hz(clean, 16_000) == pytest.approx(400.0, abs=3.0)  # and 0.8x the pitch
    noise = out - clean
    snr = 10 * np.log10(np.mean(clean**2) / np.mean(noise**2))
    assert snr == pytest.approx(10.0, abs=0.5)


# ---- runs -----------------------------------------------------------------------------------------------
@needs_espeak
@pytest.mark.parametrize("backbone", ["shared", "conformer"])
def test_fast_dev_run(train_cfg, backbone):
    extra = [] if backbone == "shared" else ["backbone=conformer", "backbone.dim=32", "backbone.ffn_dim=64", "backbone.depth=2"]
    cfg = train_cfg(*TINY_TASK["asr"], *extra, "debug=fdr")
    cli.train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())["test"]
    assert set(metrics) >= {"test/asr/wer", "test/asr/cer", "test/asr/wer_digits", "test/asr/wer_sentence"}
    assert metrics["test/asr/wer"] >= 0.0


@pytest.fixture(scope="module")
def asr_checkpoint(tmp_path_factory, data_dir) -> Path:
    return train_tiny_checkpoint("asr", tmp_path_factory.mktemp("asr") / "run", data_dir)


@needs_espeak
@pytest.mark.parametrize("rate", [22_050, 8_000])
def test_eval_on_a_librispeech_shaped_disk_dataset_resamples_and_writes_transcripts(asr_checkpoint, eval_cfg, tmp_path, rate):
    path = tmp_path / f"speech{rate}"
    split = _speech_dataset(path, rate)
    DatasetDict({"test": split}).save_to_disk(str(path))
    cfg = eval_cfg(f"ckpt_path={asr_checkpoint}", "data.source=disk", f"data.path={path}")  # no utterance_type column
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True)
    metrics = cli.evaluate(cfg)
    records = sorted((json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()),
                     key=lambda r: r["index"])
    assert [r["id"] for r in records] == [f"utt-{i}" for i in range(4)]
    assert [r["target"] for r in records] == ["seven three one", "turn on the kitchen lights", "oh five", "open the door"]
    assert all(isinstance(r["prediction_text"], str) and 0 < r["confidence"] <= 1 for r in records)
    assert metrics["test/asr/wer"] >= 0.0
    assert math.isnan(metrics["test/asr/wer_digits"])  # the checkpoint scores types this data does not have


@needs_espeak
def test_predict_prints_the_transcript_and_with_viz_draws_the_alignment(asr_checkpoint, tmp_path, data_dir):
    _speech_dataset(tmp_path, 22_050, count=1)
    file = tmp_path / "audio" / "0.flac"
    cfg = compose_config("predict", [f"ckpt_path={asr_checkpoint}", f"input={file}"], tmp_path / "p", data_dir)
    (record,) = cli.predict(cfg)
    assert isinstance(record["prediction_text"], str) and record["input"] == str(file)
    assert not list(Path(cfg.paths.output_dir).glob("*.png"))
    cfg = compose_config("predict", [f"ckpt_path={asr_checkpoint}", f"input={tmp_path / 'audio'}", "viz=true"],
                         tmp_path / "viz", data_dir)
    cli.predict(cfg)
    (picture,) = Path(cfg.paths.output_dir).glob("*.png")
    assert picture.stat().st_size > 20_000  # spectrogram, posteriors and attention
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.predict(compose_config("predict", [f"ckpt_path={asr_checkpoint}", f"input={tmp_path / 'no.wav'}"],
                                   tmp_path / "missing", data_dir))


@needs_espeak
def test_features_and_types_of_the_builder_dataset(data_dir, train_cfg):
    cfg = train_cfg(*TINY_TASK["asr"])
    from hydra.utils import instantiate

    module = instantiate(cfg.data)
    module.prepare_data()
    module.setup("fit")
    features = module.raw_splits["train"].features
    assert features["audio"] == Value("string") and features["utterance_type"] == Value("string")
    batch = module.collate([module.splits["validation"][i] for i in range(3)])
    assert batch["audio"].shape[0] == 3 and batch["audio_lengths"].max() == batch["audio"].shape[1]
    assert set(batch["groups"]) <= {"digits", "sentence"}
    assert (batch["target_lengths"] == torch.tensor([len(t) for t in batch["texts"]])).all()
    sampler = module.batch_sampler("train", module.splits["train"], shuffle=True)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(module.splits["train"])))
