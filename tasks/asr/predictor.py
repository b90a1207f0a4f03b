"""predict.py for speech recognition: audio files in; the transcript out, and with viz=true the CTC
alignment over the log-mel spectrogram (which character each 40 ms token emits, and the per-character
posteriors), plus the encoder's last-block self-attention when the encoder is attnlab's transformer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset, Value
from torch import Tensor, nn

from attnlab.attention import AttentionRecord
from attnlab.data.inputs import read_media_rows
from attnlab.training.predictor import TaskPredictor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class ASRPredictor(TaskPredictor):
    accepts = "an audio file (wav, flac, ogg, mp3), a directory of them, or a saved dataset directory (audio[, text] columns)"

    def read(self, source: str, options: dict[str, Any]) -> tuple[Dataset, list[str]]:
        return read_media_rows(
            source, column="audio", suffixes=AUDIO_SUFFIXES, accepts=self.accepts, defaults={"text": (Value("string"), None)}
        )

    def capture_pattern(self, model: nn.Module) -> str:
        blocks = getattr(model.backbone, "blocks", None)
        if blocks is None:  # a Conformer: torchaudio's attention is not captured; the alignment is still drawn
            return r"^$"
        return rf"^backbone\.blocks\.{len(blocks) - 1}\.attn$"

    def draw(
        self,
        *,
        model: nn.Module,
        batch: dict[str, Any],
        outputs: dict[str, Tensor],
        captured: dict[str, list[AttentionRecord]],
        records: list[dict[str, Any]],
    ) -> list[tuple[str, Figure]]:
        from matplotlib.figure import Figure

        adapter, head = model.adapters[self.task], model.heads[self.task]
        features, frame_lengths = adapter.features(batch)  # (B, F, M), (B,)
        probs = outputs["log_probs"].float().exp()  # (B, N, V)
        attention = next(iter(captured.values()))[0].weights.float().mean(1) if captured else None  # (B, N, N)
        alphabet = ["_"] + ["␣" if c == " " else c for c in head.vocabulary.alphabet]  # id 0: the blank
        figures = []
        for b, record in enumerate(records):
            tokens, frames = int(outputs["lengths"][b]), int(frame_lengths[b])
            spectrogram = features[b, :frames].T.cpu().numpy()  # (M, F)
            posteriors = probs[b, :tokens].T.cpu().numpy()  # (V, N)
            frames_per_token = frames / max(tokens, 1)
            panels = 3 if attention is not None else 2
            figure = Figure(figsize=(max(8.0, frames / 30), 2.6 * panels + 0.4), layout="constrained")
            axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
            title = f"{Path(record['input']).name}: {record['prediction_text']!r}"
            if record.get("target") is not None:
                title += f"  (reference {record['target']!r})"
            figure.suptitle(title, fontsize=10)
            ax = axes[0]
            ax.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
            best = posteriors.argmax(0)  # (N,)
            for t, char in enumerate(best):  # an emission: a non-blank token that differs from the one before
                if char != 0 and (t == 0 or best[t - 1] != char):
                    x = (t + 0.5) * frames_per_token
                    ax.axvline(x, color="cyan", linewidth=0.6)
                    ax.text(x, spectrogram.shape[0] * 0.92, alphabet[char], color="white", ha="center", fontsize=8)
            ax.set(title="log-mel spectrogram with the CTC alignment (greedy path's emissions)", xlabel="10 ms frame", ylabel="mel bin")
            ax = axes[1]
            ax.imshow(posteriors, origin="upper", aspect="auto", cmap="viridis", interpolation="nearest", vmin=0, vmax=1)
            ax.set_yticks(range(len(alphabet)), alphabet, fontsize=6)
            ax.set(title="CTC posteriors per 40 ms token", xlabel="token", ylabel="character")
            if attention is not None:
                ax = axes[2]
                ax.imshow(attention[b, :tokens, :tokens].cpu().numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
                ax.set(title="encoder's last block: self-attention (heads averaged)", xlabel="key token", ylabel="query token")
            stem = re.sub(r"[^\w-]+", "_", Path(record["input"]).stem).strip("_")[:40] or "audio"
            figures.append((f"{stem}_{self.row_of(record)}", figure))
        return figures
