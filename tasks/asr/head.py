"""CTC over characters (Graves et al. 2006): the speech task's head, its text normalisation, greedy and
beam-search decoding, and WER / CER (overall and per utterance type) from torchmetrics.

Batch contract (what `ASRDataModule.collate` gives):
    audio (B, S) float, audio_lengths (B,) long     waveforms (the adapter's input)
    targets (B, L) long, target_lengths (B,) long  character ids (1..V-1; 0 is the CTC blank), zero-padded
    texts list[B] of str                           normalised reference transcripts
    groups list[B] of str | None                   utterance types (digits / sentence) for per-type WER
    ids list[B] of str, index (B,) long
"""

from __future__ import annotations

import logging
import re
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.text import CharErrorRate, WordErrorRate

from attnlab.training.head import TaskHead
from tasks.asr.lm import NgramCounts, WordNgramLM

log = logging.getLogger(__name__)

#: LibriSpeech's character set, lowercase: space, a..z and the apostrophe
DEFAULT_ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
Decoding = Literal["greedy", "beam"]


def normalize_transcript(text: str) -> str:
    """Lowercase, punctuation and symbols to spaces (the apostrophe stays), whitespace collapsed.

    LibriSpeech's ``"HE'S GONE."`` and ``"he's gone"`` compare equal; accents are kept ("café").
    """
    text = unicodedata.normalize("NFC", text.lower())
    text = "".join(c if c == "'" or not unicodedata.category(c).startswith(("P", "S")) else " " for c in text)
    return re.sub(r"\s+", " ", text).strip()


class CharVocabulary:
    """Characters <-> CTC ids: 0 is the blank, the alphabet's characters are 1..len(alphabet).

    Characters outside the alphabet are dropped by `encode` (and counted by `unknown`).
    """

    blank = 0

    def __init__(self, alphabet: str = DEFAULT_ALPHABET) -> None:
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise ValueError(f"alphabet={alphabet!r} must be non-empty characters without repeats")
        self.alphabet = alphabet
        self.ids = {c: i + 1 for i, c in enumerate(alphabet)}

    def __len__(self) -> int:
        return len(self.alphabet) + 1  # with the blank

    def unknown(self, text: str) -> set[str]:
        return {c for c in text if c not in self.ids}

    def encode(self, text: str) -> list[int]:
        """Normalised text -> ids (unknown characters dropped; spaces around them collapsed)."""
        kept = re.sub(r" +", " ", "".join(c for c in text if c in self.ids)).strip()
        return [self.ids[c] for c in kept]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids (no blanks) -> text, with repeated and edge spaces removed."""
        return re.sub(r" +", " ", "".join(self.alphabet[i - 1] for i in ids if i != self.blank)).strip()


def ctc_greedy_ids(log_probs: Tensor, lengths: Tensor, *, blank: int = 0) -> list[list[int]]:
    """Best path decoding: per frame argmax, repeats merged, then blanks removed.

    Args:
        log_probs: (B, N, V) per-frame scores.
        lengths: (B,) valid frames of each row.
    """
    best = log_probs.argmax(-1)  # (B, N)
    results = []
    for row, length in zip(best.tolist(), lengths.tolist(), strict=True):
        path = row[: int(length)]
        results.append([c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])])
    return results


class CTCBeamSearch:
    """torchaudio's CTC beam search (flashlight-text) over the character vocabulary, without a language model.

    Lexicon-free, it returns the likeliest labelling it finds (summing the paths that collapse to it,
    which best-path decoding does not). With ``words``, a lexicon, it only spells those words: a
    character slip inside a known word ("lihts") comes out as the word ("lights").

    With ``language_model`` as well (a lexicon is needed), each word a hypothesis appends is scored by it:
    hypothesis score = acoustic log-probability + lm_weight x LM log-probability + word_score per word.

    Args:
        vocabulary: the head's characters; the space is the word separator.
        beam_size: hypotheses kept per frame.
        words: the lexicon (None or empty: lexicon-free).
        language_model: word n-gram counts (`NgramCounts`) or None.
        lm_weight / word_score: the LM's weight and the per-word bonus.
    """

    def __init__(
        self,
        vocabulary: CharVocabulary,
        *,
        beam_size: int = 8,
        words: Sequence[str] | None = None,
        language_model: NgramCounts | None = None,
        lm_weight: float = 0.5,
        word_score: float = 0.0,
    ) -> None:
        try:
            from torchaudio.models.decoder import ctc_decoder
        except ImportError as err:  # flashlight-text missing
            raise ImportError(
                f"decoding=beam needs torchaudio's CTC decoder, which needs the flashlight-text package "
                f"({err}); pip install flashlight-text, or use decoding=greedy"
            ) from err
        if " " not in vocabulary.ids:
            raise ValueError("decoding=beam needs the space (the word separator) in the alphabet")
        self.vocabulary, self.lexicon = vocabulary, bool(words)
        tokens = ["<blank>"] + ["|" if c == " " else c for c in vocabulary.alphabet]
        if language_model is not None and not words:
            raise ValueError("a word language model needs a lexicon: set head.lexicon (train or a words file)")
        lexicon_words = list(dict.fromkeys(w for w in words or [] if w and " " not in w))  # unique, in order
        # the LM scores words by the decoder's word index: number them ourselves (an lm_dict file, in order)
        lm = WordNgramLM(language_model, [*lexicon_words, "<unk>"]) if language_model is not None else None
        with tempfile.TemporaryDirectory() as folder:
            lexicon = word_list = None
            if lexicon_words:  # flashlight's lexicon file: a word, a tab, its spelling in tokens ending with the word separator
                lexicon = Path(folder) / "lexicon.txt"
                lexicon.write_text("".join(f"{w}\t{' '.join(w)} |\n" for w in lexicon_words), encoding="utf-8")
            if lm is not None:
                word_list = Path(folder) / "words.txt"
                word_list.write_text("".join(f"{w}\n" for w in lm.words), encoding="utf-8")
            self.decoder = ctc_decoder(
                lexicon=None if lexicon is None else str(lexicon), tokens=tokens, lm=lm, beam_size=beam_size,
                blank_token="<blank>", sil_token="|", unk_word="<unk>", log_add=True,
                lm_dict=None if word_list is None else str(word_list),
                lm_weight=lm_weight if lm is not None else 0.0, word_score=word_score,
            )
        if lm is not None:
            lm.context_free = False  # the trie is built: from now on words are scored in context
            decoder_words = self.decoder.word_dict
            assert [decoder_words.get_entry(i) for i in range(decoder_words.index_size())] == lm.words

    def __call__(self, log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
        hypotheses = self.decoder(log_probs.detach().float().cpu().contiguous(), lengths.detach().cpu().int())
        if self.lexicon:  # words from the lexicon, spelled back into ids
            return [self.vocabulary.encode(" ".join(best[0].words)) if best else [] for best in hypotheses]
        # the decoder's tokens have repeats merged and blanks removed, and silences (spaces) around the words
        space = self.vocabulary.ids[" "]
        results = []
        for best in hypotheses:
            ids = [int(t) for t in best[0].tokens if int(t) != self.vocabulary.blank] if best else []
            ids = [t for i, t in enumerate(ids) if t != space or (i > 0 and ids[i - 1] != space)]  # one space at most
            while ids and ids[0] == space:
                ids.pop(0)
            while ids and ids[-1] == space:
                ids.pop()
            results.append(ids)
        return results


class CTCHead(TaskHead):
    """Per-token character scores and the CTC loss; transcripts by greedy or beam-search decoding.

    Args:
        dim: encoder width D.
        alphabet: output characters (the blank is added as id 0).
        dropout: on the encoder states before the projection.
        decoding: ``greedy`` (best path) or ``beam`` (torchaudio's CTC beam search).
        beam_size: hypotheses kept by beam search.
        lexicon: words beam search may spell: ``train`` (every word of the training transcripts, read from
            the datamodule when training starts and kept in the checkpoint), a text file of one word per
            line, or None (lexicon-free: any character string). Greedy decoding ignores it.
        lm_order: with a lexicon, score words by a word n-gram model of this order estimated from the
            training transcripts (`tasks.asr.lm`, Witten-Bell; kept in the checkpoint); 0: no LM.
        lm_weight / word_score: the LM's weight and a per-word score in beam search.
        groups: utterance types scored separately (``wer_<group>``); None for data without the column.
    """

    metric_stages = ("val", "test")  # decoding and edit distances at every training step would cost more than they tell

    def __init__(
        self,
        *,
        dim: int,
        alphabet: str = DEFAULT_ALPHABET,
        dropout: float = 0.1,
        decoding: Decoding = "greedy",
        beam_size: int = 8,
        lexicon: str | None = None,
        lm_order: int = 0,
        lm_weight: float = 0.5,
        word_score: float = 0.0,
        groups: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if decoding not in ("greedy", "beam"):
            raise ValueError(f"decoding='{decoding}' is unknown; choose greedy or beam")
        self.vocabulary = CharVocabulary(alphabet)
        self.groups = list(groups or [])
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, len(self.vocabulary))
        if lm_order and lexicon != "train":
            raise ValueError(f"head.lm_order={lm_order} estimates the LM from the training transcripts: set head.lexicon=train")
        self.decoding, self.beam_size, self.lexicon = decoding, beam_size, lexicon
        self.lm_order, self.lm_weight, self.word_score = lm_order, lm_weight, word_score
        self.words: list[str] = []  # the lexicon's words (checkpointed as the module's extra state)
        self.language_model: NgramCounts | None = None  # (checkpointed too)
        if lexicon not in (None, "train"):
            path = Path(lexicon)
            if not path.is_file():
                raise FileNotFoundError(f"head.lexicon={lexicon} is not a file; give a file of one word per line, train or null")
            self.words = sorted({w.strip().lower() for w in path.read_text(encoding="utf-8").split() if w.strip()})
        self._beam: CTCBeamSearch | None = None

    def bind_data(self, datamodule: Any) -> None:
        if self.lexicon != "train" or self.words:  # a checkpoint's words win
            return
        words = getattr(datamodule, "transcript_words", None)
        if words is None:
            raise ValueError(
                "head.lexicon=train reads the training transcripts' words from the datamodule, but "
                f"{type(datamodule).__name__} has no transcript_words(); give head.lexicon=<words file> or null"
            )
        self.words = words("train")
        if self.lm_order:
            self.language_model = NgramCounts(datamodule.transcripts("train"), self.words, order=self.lm_order)
        self._beam = None

    def get_extra_state(self) -> dict[str, Any]:
        return {"words": self.words, "language_model": self.language_model.state_dict() if self.language_model else None}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.words, self._beam = list(state.get("words", [])), None
        lm_state = state.get("language_model")
        self.language_model = NgramCounts.from_state_dict(lm_state) if lm_state else None

    @property
    def beam(self) -> CTCBeamSearch | None:
        """The beam-search decoder (built on first use, with the current lexicon), or None for greedy."""
        if self.decoding != "beam":
            return None
        if self._beam is None:
            self._beam = CTCBeamSearch(
                self.vocabulary, beam_size=self.beam_size, words=self.words or None, language_model=self.language_model,
                lm_weight=self.lm_weight, word_score=self.word_score,
            )
        return self._beam

    def forward(self, hidden: Tensor, mask: Tensor | None, batch: dict[str, Any]) -> dict[str, Tensor]:
        logits = self.proj(self.drop(hidden)).float()  # (B, N, V)
        lengths = mask.sum(1) if mask is not None else torch.full(logits.shape[:1], logits.shape[1], device=logits.device)
        return {"log_probs": logits.log_softmax(-1), "lengths": lengths}  # (B, N, V), (B,)

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        # mean over the batch of each utterance's loss / its target length; an utterance too long for
        # its frames (infinite loss) contributes 0 instead of a NaN gradient
        return F.ctc_loss(
            outputs["log_probs"].transpose(0, 1),  # (N, B, V)
            batch["targets"],
            outputs["lengths"],
            batch["target_lengths"],
            blank=self.vocabulary.blank,
            zero_infinity=True,
        )

    def transcribe(self, outputs: dict[str, Tensor]) -> list[str]:
        if self.beam is not None:
            ids = self.beam(outputs["log_probs"], outputs["lengths"])
        else:
            ids = ctc_greedy_ids(outputs["log_probs"], outputs["lengths"], blank=self.vocabulary.blank)
        return [self.vocabulary.decode(row) for row in ids]

    def predict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> list[dict[str, Any]]:
        records = []
        # confidence: the mean per-token probability of the best path over the utterance's tokens
        best, lengths = outputs["log_probs"].max(-1).values, outputs["lengths"]  # (B, N), (B,)
        mask = torch.arange(best.shape[1], device=best.device)[None] < lengths[:, None]
        confidence = ((best * mask).sum(1) / lengths.clamp(min=1)).exp()  # (B,)
        for b, transcript in enumerate(self.transcribe(outputs)):
            record: dict[str, Any] = {
                "index": int(batch["index"][b]), "prediction_text": transcript, "confidence": round(float(confidence[b]), 4),
            }
            if batch.get("ids"):
                record["id"] = batch["ids"][b]
            if batch.get("texts") and batch["texts"][b] is not None:
                record["target"] = batch["texts"][b]
            if batch.get("groups") and batch["groups"][b] is not None:
                record["group"] = batch["groups"][b]
            records.append(record)
        return records

    def build_metrics(self) -> MetricCollection:
        metrics: dict[str, Metric] = {"wer": WordErrorRate(), "cer": CharErrorRate()}
        for group in self.groups:
            metrics[f"wer_{group}"] = WordErrorRate()
            metrics[f"wer_{group}"].group = group
        # no compute groups: the per-type WERs share WordErrorRate's state names but not its data
        return MetricCollection(metrics, compute_groups=False)

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Tensor], batch: dict[str, Any]) -> None:
        hypotheses, references = self.transcribe(outputs), batch["texts"]
        groups = batch.get("groups") or [None] * len(references)
        for metric in metrics.values():
            group = getattr(metric, "group", None)
            pairs = [(h, r) for h, r, g in zip(hypotheses, references, groups, strict=True) if group is None or g == group]
            if pairs:
                metric.update([h for h, _ in pairs], [r for _, r in pairs])
