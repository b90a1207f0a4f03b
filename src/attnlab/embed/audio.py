"""Audio adapter: waveforms -> log-mel frames (torchaudio) -> SpecAugment in training -> 4x convolutional
subsampling -> tokens for the shared encoder, with masks that carry every utterance's true length."""

from __future__ import annotations

from typing import Any

import torch
import torchaudio.transforms as AT
from torch import Tensor, nn

from attnlab.attention import build_positional_encoding
from attnlab.embed.text import ADAPTER_POSITIONS


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on the first ``lengths[b]`` positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class LogMelFrontend(nn.Module):
    """(B, S) waveforms and (B,) sample counts -> (B, F, M) normalised log-mel frames and (B,) frame counts.

    Frames are ``win_ms`` long every ``hop_ms`` (centred, so an utterance of S samples gives ``S // hop + 1``
    frames); log(mel power + 1e-6). With ``normalize="utterance"`` every mel bin is shifted and scaled to
    zero mean and unit variance over the utterance's own frames (its padding excluded); padded frames are 0.

    Args:
        sample_rate: input rate (Hz).
        n_mels: mel bins M.
        win_ms / hop_ms: window and hop (ms).
        n_fft: FFT size (None: the next power of two above the window).
        normalize: ``utterance`` (per-utterance mean/variance normalisation) or ``none``.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16_000,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        normalize: str = "utterance",
    ) -> None:
        super().__init__()
        if normalize not in ("utterance", "none"):
            raise ValueError(f"normalize='{normalize}' is unknown; choose utterance or none")
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        n_fft = n_fft or 1 << (self.win_length - 1).bit_length()
        self.n_mels, self.normalize = n_mels, normalize
        self.mel = AT.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=self.win_length, hop_length=self.hop_length, n_mels=n_mels,
            pad_mode="constant",  # zeros past the ends, as batch padding: any length works, even under n_fft / 2
        )

    def frame_lengths(self, sample_lengths: Tensor) -> Tensor:
        """(B,) samples -> (B,) frames (centred STFT)."""
        return torch.div(sample_lengths, self.hop_length, rounding_mode="floor") + 1

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(waveform.device.type, enabled=False):  # the FFT wants float32
            power = self.mel(waveform.float())  # (B, M, F)
        features = torch.log(power + 1e-6).transpose(1, 2)  # (B, F, M)
        frame_lengths = self.frame_lengths(lengths).clamp(max=features.shape[1])  # (B,)
        mask = lengths_to_mask(frame_lengths, features.shape[1])[..., None]  # (B, F, 1)
        if self.normalize == "utterance":
            count = frame_lengths.clamp(min=1)[:, None, None].to(features.dtype)  # (B, 1, 1)
            mean = (features * mask).sum(1, keepdim=True) / count  # (B, 1, M)
            var = (((features - mean) * mask) ** 2).sum(1, keepdim=True) / count
            features = (features - mean) / (var + 1e-5).sqrt()
        return features.masked_fill(~mask, 0.0), frame_lengths


class SpecAugment(nn.Module):
    """Training-time masking (Park et al. 2019) and frequency warping of (B, F, M) log-mel frames.

    Each utterance draws its own masks (torchaudio `FrequencyMasking` / `TimeMasking` with ``iid_masks``);
    before masking, a random warp of the mel axis by a factor in [1 - freq_warp, 1 + freq_warp] moves
    every formant and the pitch together (vocal tract length perturbation, Jaitly & Hinton 2013): the
    augmentation aimed at voices never heard in training. Identity in eval mode, and while ``active`` is
    False (`AttnLabModule` clears it under ``trainer.overfit_batches``: one fixed batch must stay fixed).

    Args:
        freq_masks / freq_width: number of frequency masks and the widest (mel bins).
        time_masks / time_width: number of time masks and the widest (frames); each is at most
            ``time_fraction`` of the batch's frames.
        freq_warp: largest relative warp of the mel axis (0: off).
    """

    augments_in_training = True

    def __init__(
        self,
        *,
        freq_masks: int = 2,
        freq_width: int = 15,
        time_masks: int = 2,
        time_width: int = 20,
        time_fraction: float = 0.1,
        freq_warp: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= freq_warp < 0.5:
            raise ValueError(f"freq_warp={freq_warp} must be in [0, 0.5)")
        self.freq_masks, self.time_masks, self.freq_warp = freq_masks, time_masks, freq_warp
        self.active = True
        self.freq_mask = AT.FrequencyMasking(freq_width, iid_masks=True)
        self.time_mask = AT.TimeMasking(time_width, iid_masks=True, p=time_fraction)

    def warp(self, features: Tensor) -> Tensor:
        """(B, F, M) -> the same frames with each utterance's mel axis stretched by its own factor."""
        batch, _, bins = features.shape
        factor = 1.0 + (torch.rand(batch, 1, device=features.device) * 2 - 1) * self.freq_warp  # (B, 1)
        source = (torch.arange(bins, device=features.device)[None, :] / factor).clamp(max=bins - 1)  # (B, M)
        low = source.floor().long()
        high = (low + 1).clamp(max=bins - 1)
        weight = (source - low)[:, None, :].to(features.dtype)  # (B, 1, M)
        gather = lambda index: features.gather(2, index[:, None, :].expand_as(features))
        return gather(low) * (1 - weight) + gather(high) * weight

    def forward(self, features: Tensor) -> Tensor:
        if not (self.training and self.active):
            return features
        if self.freq_warp > 0:
            features = self.warp(features)
        spec = features.transpose(1, 2)[:, None]  # (B, 1, M, F): torchaudio's (..., freq, time)
        for _ in range(self.freq_masks):
            spec = self.freq_mask(spec)
        for _ in range(self.time_masks):
            spec = self.time_mask(spec)
        return spec[:, 0].transpose(1, 2)  # (B, F, M)


class ConvSubsampling(nn.Module):
    """(B, F, M) frames -> (B, ceil(ceil(F/2)/2), D): two 3x3 stride-2 convolutions over (time, mel), then a
    linear projection of (channels x mel/4) to D (the 4x subsampling of Conformer and ESPnet).

    Between the convolutions, positions past each utterance's length are zeroed, so an utterance's tokens
    do not depend on how much padding its batch adds (the second convolution sees what it would see at
    the end of the utterance alone: zeros).
    """

    def __init__(self, *, n_mels: int, dim: int, channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.GELU())
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GELU())
        reduced_mels = self.output_lengths(self.output_lengths(torch.tensor(n_mels)))  # two halvings, rounded up
        self.proj = nn.Linear(channels * int(reduced_mels), dim)

    @staticmethod
    def output_lengths(lengths: Tensor) -> Tensor:
        """Length after one 3x3 stride-2 convolution with padding 1: floor((L - 1) / 2) + 1."""
        return torch.div(lengths - 1, 2, rounding_mode="floor") + 1

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, F, M) zero past ``lengths`` (B,) -> tokens (B, N, D), token lengths (B,)."""
        half_lengths = self.output_lengths(lengths)
        hidden = self.conv1(features[:, None])  # (B, C, F/2, M/2)
        valid = lengths_to_mask(half_lengths, hidden.shape[2])[:, None, :, None]  # (B, 1, F/2, 1)
        hidden = self.conv2(hidden.masked_fill(~valid, 0.0))  # (B, C, F/4, M/4)
        batch, channels, frames, bins = hidden.shape
        tokens = self.proj(hidden.permute(0, 2, 1, 3).reshape(batch, frames, channels * bins))  # (B, N, D)
        return tokens, self.output_lengths(half_lengths)


class AudioFrameEmbed(nn.Module):
    """Waveforms -> (tokens (B, N, D), mask (B, N) bool): log-mel frames, SpecAugment (training), 4x conv
    subsampling, optional absolute positions. One token per 40 ms at the default 10 ms hop.

    Reads ``batch[audio_key]`` (B, S) float waveforms (padded with zeros) and ``batch[lengths_key]`` (B,)
    true sample counts; the mask marks each utterance's true tokens, so padding never reaches attention.

    Args:
        dim: token width D (the backbone's).
        sample_rate / n_mels / win_ms / hop_ms / normalize: the `LogMelFrontend`.
        subsampling_channels: channels of the two subsampling convolutions.
        freq_masks / freq_width / time_masks / time_width / time_fraction / freq_warp: `SpecAugment`.
        positions: ``none`` (the backbone positions tokens: rope, relative, alibi) | ``sinusoidal`` | ``learned``.
        max_len: most tokens the absolute positions cover.
        dropout: dropout on the tokens.
    """

    def __init__(
        self,
        *,
        dim: int,
        sample_rate: int = 16_000,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        normalize: str = "utterance",
        subsampling_channels: int = 64,
        freq_masks: int = 2,
        freq_width: int = 15,
        time_masks: int = 2,
        time_width: int = 20,
        time_fraction: float = 0.1,
        freq_warp: float = 0.0,
        positions: str = "none",
        max_len: int = 4096,
        dropout: float = 0.0,
        audio_key: str = "audio",
        lengths_key: str = "audio_lengths",
    ) -> None:
        super().__init__()
        if positions not in ADAPTER_POSITIONS:
            raise ValueError(f"adapter positions='{positions}' is unknown; choose one of {', '.join(ADAPTER_POSITIONS)}")
        self.dim, self.audio_key, self.lengths_key = dim, audio_key, lengths_key
        self.frontend = LogMelFrontend(sample_rate=sample_rate, n_mels=n_mels, win_ms=win_ms, hop_ms=hop_ms, normalize=normalize)
        self.augment = SpecAugment(
            freq_masks=freq_masks, freq_width=freq_width, time_masks=time_masks, time_width=time_width,
            time_fraction=time_fraction, freq_warp=freq_warp,
        )
        self.subsample = ConvSubsampling(n_mels=n_mels, dim=dim, channels=subsampling_channels)
        self.positions = build_positional_encoding(positions, dim=dim, num_heads=1, max_len=max_len)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def features(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The (B, F, M) normalised log-mel frames (before augmentation) and (B,) frame counts."""
        waveform, lengths = batch[self.audio_key], batch[self.lengths_key]
        if waveform.dim() != 2:
            raise ValueError(f"batch['{self.audio_key}'] must be (B, S) mono waveforms, got shape {tuple(waveform.shape)}")
        return self.frontend(waveform, lengths)

    def token_lengths(self, sample_lengths: Tensor) -> Tensor:
        """(B,) samples -> (B,) tokens after the front end and subsampling."""
        frames = self.frontend.frame_lengths(sample_lengths)
        return self.subsample.output_lengths(self.subsample.output_lengths(frames))

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        features, frame_lengths = self.features(batch)  # (B, F, M), (B,)
        tokens, token_lengths = self.subsample(self.augment(features), frame_lengths)  # (B, N, D), (B,)
        tokens = self.drop(self.positions.embed(tokens))
        return tokens, lengths_to_mask(token_lengths, tokens.shape[1])  # (B, N, D), (B, N)
