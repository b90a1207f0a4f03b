"""VQA model parts: the image + question adapter, the three fusions, and the route that runs them.

Data flow for a batch of B images with Q questions of L tokens each (see `VQARoute.forward`):

- ``cross``:  image tokens (B, N, D) -> backbone once per image; question tokens -> question encoder
  (optional) once per distinct question; then per (image, question) pair stacked bidirectional
  `CrossModalBlock`s -> the question's state + max-pooled token evidence (B, Q, D).
- ``joint``:  [question tokens; image tokens] per question (B*Q, L+N, D) with modality embeddings ->
  backbone -> CLS token per question.
- ``concat``: no attention anywhere: pooled image tokens ++ GRU question encoding -> MLP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnlab.attention import MultiHeadAttention
from attnlab.backbones.transformer import EncoderBlock, FeedForward, LayerScale
from attnlab.training import TaskRoute

Fusion = Literal["cross", "joint", "concat"]
FUSIONS = ("cross", "joint", "concat")


def sincos_2d(grid: int, dim: int) -> Tensor:
    """(grid*grid, dim) fixed 2-D sine-cosine position features: half the channels per axis."""
    if dim % 4 != 0:
        raise ValueError(f"2-D sine-cosine positions need dim divisible by 4, got {dim}")
    coords = torch.arange(grid, dtype=torch.float64) / grid  # (G,) in [0, 1)
    freqs = torch.pi * 2.0 ** torch.arange(dim // 4, dtype=torch.float64) / 2.0  # low frequencies first
    angles = coords[:, None] * freqs[None]  # (G, dim/4)
    axis = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (G, dim/2)
    rows = axis[:, None, :].expand(grid, grid, -1)
    cols = axis[None, :, :].expand(grid, grid, -1)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, dim).float()


class ConvSceneTokenizer(nn.Module):
    """Image (B, 3, S, S) in [0, 1] -> (B, G*G, D) tokens from a grid-halving conv stem with coordinates.

    Two coordinate channels (CoordConv, Liu et al. 2018) join the RGB input so every token knows
    where it is to sub-token precision; each 3x3 conv + BatchNorm + GELU stage halves the grid
    (75 -> 38 -> 19 -> 10 with three stages), keeping a 10-pixel object's shape inside a token's
    receptive field. Fixed 2-D sine-cosine positions are added to the tokens.

    Args:
        dim: token width D.
        image_size: input side S.
        channels: conv widths, one grid-halving stage each.
        downsample: ``stride`` (stride-2 convs) or ``maxpool`` (stride-1 convs, then 2x2 max
            pooling: every pixel position is filtered, so a corner is detected wherever it falls;
            ~3.7x the stem's FLOPs).
    """

    def __init__(
        self,
        *,
        dim: int,
        image_size: int = 75,
        channels: tuple[int, ...] = (32, 64, 128),
        downsample: Literal["stride", "maxpool"] = "stride",
    ) -> None:
        super().__init__()
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample='{downsample}' is unknown; choose stride or maxpool")
        self.image_size = image_size
        layers: list[nn.Module] = []
        width, side = 5, image_size  # RGB + (x, y)
        stride = 2 if downsample == "stride" else 1
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out), nn.GELU()]
            if downsample == "maxpool":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            width, side = out, (side + 1) // 2
        layers.append(nn.Conv2d(width, dim, 1))
        self.stem = nn.Sequential(*layers)
        self.grid = side
        ramp = torch.linspace(-1.0, 1.0, image_size)
        self.register_buffer("coords", torch.stack(torch.meshgrid(ramp, ramp, indexing="xy"))[None], persistent=False)
        self.register_buffer("positions", sincos_2d(side, dim)[None], persistent=False)  # (1, N, D)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"images are {tuple(images.shape[-2:])}, the tokenizer expects {self.image_size}x{self.image_size}; "
                "set data.image_size to match"
            )
        coords = self.coords.expand(images.shape[0], -1, -1, -1).to(images.dtype)
        features = self.stem(torch.cat([(images - self.mean) * 2.0, coords], dim=1))  # (B, D, G, G)
        return features.flatten(2).transpose(1, 2) + self.positions  # (B, N, D)


def grid_coordinates(num_tokens: int) -> Tensor:
    """(N, 2) (x, y) centres of a square token grid in token units, row-major like `ConvSceneTokenizer`."""
    side = round(num_tokens**0.5)
    if side * side != num_tokens:
        raise ValueError(f"a geometric relation layer needs a square token grid, got {num_tokens} image tokens")
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1).float()


class GeometricRelationLayer(nn.Module):
    """Self-attention over image tokens whose heads add a learned, signed 2-D distance bias.

    Head h adds ``slope_h * |p_i - p_j|`` to its scores (ALiBi in two dimensions with signed,
    learned slopes, after Press et al. 2022): a negative slope makes a head read the nearest tokens,
    a positive one the furthest, so "the object closest to / furthest from me" is one attention step,
    with content scores free to skip background and the token's own object. Positions are the grid
    centres moved by a learned, content-dependent offset of at most half a token: a token covering
    part of an object can place itself at that object's centre, so distances are between objects,
    not between grid cells. Pre-norm residual branches with LayerScale, as in the backbone.

    Args:
        dim: width D.
        num_heads: heads; their slopes start evenly spread over [-max_slope, max_slope].
        mlp_ratio: feed-forward width multiple.
        max_slope: initial largest |slope| (score change per token of distance).
        layer_scale_init: start value of both residual branches' LayerScale.
    """

    def __init__(
        self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, max_slope: float = 3.0, layer_scale_init: float = 0.1
    ) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim=dim, num_heads=num_heads)
        self.slopes = nn.Parameter(torch.linspace(-max_slope, max_slope, num_heads))  # (H,)
        self.offset = nn.Linear(dim, 2)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.attn_scale = LayerScale(dim, layer_scale_init)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim=dim, hidden_dim=int(dim * mlp_ratio))
        self.mlp_scale = LayerScale(dim, layer_scale_init)

    def distance_bias(self, tokens: Tensor) -> Tensor:
        """(B, H, N, N) additive scores ``slope_h * |p_i - p_j|`` for normed tokens (B, N, D)."""
        grid = grid_coordinates(tokens.shape[1]).to(tokens)  # (N, 2)
        positions = grid + 0.5 * torch.tanh(self.offset(tokens))  # (B, N, 2)
        offsets = positions[:, :, None] - positions[:, None]  # (B, N, N, 2)
        distance = (offsets.square().sum(-1) + 1e-6).sqrt()  # (B, N, N); eps keeps the gradient finite at 0
        return self.slopes.view(1, -1, 1, 1) * distance[:, None]

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, N, D) on a square grid -> (B, N, D)."""
        normed = self.attn_norm(tokens)
        tokens = tokens + self.attn_scale(self.attn(normed, attn_mask=self.distance_bias(normed)))
        return tokens + self.mlp_scale(self.mlp(self.mlp_norm(tokens)))


class VQAInputs(nn.Module):
    """The task adapter: image tokens and question-token embeddings (word + position).

    What the fusion adds on top (relation layers, modality embeddings, fusion blocks) belongs to
    `VQARoute`, so each fusion builds only the layers it uses.

    Args:
        dim: the backbone width D.
        vocab_size: question-word embedding rows (capacity; the data vocabulary must fit).
        max_question_len: longest question in tokens, CLS included.
        image_size / channels / downsample: see `ConvSceneTokenizer`.
    """

    def __init__(
        self,
        *,
        dim: int,
        vocab_size: int = 128,
        max_question_len: int = 32,
        image_size: int = 75,
        channels: tuple[int, ...] = (32, 64, 128),
        downsample: Literal["stride", "maxpool"] = "stride",
    ) -> None:
        super().__init__()
        self.vocab_size, self.max_question_len = vocab_size, max_question_len
        self.image = ConvSceneTokenizer(
            dim=dim, image_size=image_size, channels=tuple(channels), downsample=downsample
        )
        # unit-scale word embeddings (nn.Embedding's default): a word's identity must not drown under
        # the first residual updates of the fusion blocks, or the colour word is lost before it can
        # query the image
        self.words = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.word_positions = nn.Parameter(torch.randn(max_question_len, dim) * 0.02)

    def image_tokens(self, batch: dict[str, Any]) -> Tensor:
        return self.image(batch["image"])  # (B, N, D)

    def question_tokens(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(B, Q, L, D) question embeddings and their (B, Q, L) token mask (True = real token)."""
        tokens = batch["question_tokens"]  # (B, Q, L)
        length = tokens.shape[-1]
        if length > self.max_question_len:
            raise ValueError(
                f"a question has {length} tokens, more than model.tasks.vqa.adapter.max_question_len="
                f"{self.max_question_len}; raise it"
            )
        return self.words(tokens) + self.word_positions[:length], tokens != 0

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, None]:
        return self.image_tokens(batch), None


def per_distinct_question(
    encode: Callable[[Tensor, Tensor], Tensor], text: Tensor, text_mask: Tensor, token_ids: Tensor
) -> Tensor:
    """Run ``encode(x (U, L, D), mask (U, L)) -> (U, *S)`` once per distinct question; returns (B, Q, *S).

    Datasets ask the same question about many images (Sort-of-CLEVR has 36 distinct questions), so
    question-only computation is shared by every image that asks it.
    """
    batch, questions, length, dim = text.shape
    distinct, inverse = torch.unique(token_ids.reshape(-1, length), dim=0, return_inverse=True)  # (U, L), (B*Q,)
    first = torch.zeros(len(distinct), dtype=torch.long, device=text.device)
    first.scatter_(0, inverse, torch.arange(len(inverse), device=text.device))  # one (B*Q) row per distinct question
    encoded = encode(text.reshape(-1, length, dim)[first], text_mask.reshape(-1, length)[first])  # (U, *S)
    return encoded[inverse].reshape(batch, questions, *encoded.shape[1:])


class QuestionEncoder(nn.Module):
    """Self-attention over each distinct question's tokens: (B, Q, L, D) -> (B, Q, L, D)."""

    def __init__(
        self, *, dim: int, depth: int, num_heads: int, mlp_ratio: float, layer_scale_init: float | None = None
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            EncoderBlock(
                dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=0.0, attention=MultiHeadAttention,
                layer_scale_init=layer_scale_init,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def encode(self, x: Tensor, mask: Tensor) -> Tensor:
        for block in self.blocks:
            x, _ = block(x, mask=mask, positions=None)
        return self.norm(x)

    def forward(self, text: Tensor, text_mask: Tensor, token_ids: Tensor) -> Tensor:
        return per_distinct_question(self.encode, text, text_mask, token_ids)


class CrossModalBlock(nn.Module):
    """One bidirectional fusion block (pre-norm, residual, each direction with its feed-forward).

    image <- text (``update_image``): every image token attends to the question's words, then a
        feed-forward whose input is FiLM-modulated by the question (Perez et al. 2018):
        ``relu(norm(x) * (1 + gamma(q)) + beta(q))``. The multiplicative conditioning lets a token
        tell at once whether it is what the question is about; the feed-forward's output is the
        token's *evidence*. The image stream is per question from here.
    text <- image: the question's state attends to the image tokens, then a feed-forward.

    The image is updated first, so the question reads tokens that already know what is asked.
    """

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, update_image: bool) -> None:
        super().__init__()
        self.update_image = update_image
        if update_image:
            self.image_norm, self.words_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.image_attn = MultiHeadAttention(dim=dim, num_heads=num_heads, cross=True)
            self.film = nn.Linear(dim, 2 * dim)
            self.film_norm = nn.LayerNorm(dim)
            self.image_mlp = FeedForward(dim=dim, hidden_dim=int(dim * mlp_ratio))
        self.text_norm, self.context_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.text_attn = MultiHeadAttention(dim=dim, num_heads=num_heads, cross=True)
        self.text_mlp_norm = nn.LayerNorm(dim)
        self.text_mlp = FeedForward(dim=dim, hidden_dim=int(dim * mlp_ratio))

    def forward(
        self, state: Tensor, summary: Tensor, words: Tensor, words_mask: Tensor, image: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """state / summary (B*Q, 1, D), words (B*Q, L, D) + mask (B*Q, L), image (B*Q, N, D).

        Returns the new state, the new image stream and the image tokens' evidence (None without
        an image update).
        """
        evidence = None
        if self.update_image:
            image = image + self.image_attn(
                self.image_norm(image), context=self.words_norm(words), key_padding_mask=words_mask
            )
            gamma, beta = self.film(summary).chunk(2, dim=-1)  # (B*Q, 1, D) each
            evidence = self.image_mlp(torch.relu(self.film_norm(image) * (1 + gamma) + beta))  # (B*Q, N, D)
            image = image + evidence
        state = state + self.text_attn(self.text_norm(state), context=self.context_norm(image))
        state = state + self.text_mlp(self.text_mlp_norm(state))
        return state, image, evidence


class CrossModalFusion(nn.Module):
    """Encoded questions x encoded images through stacked `CrossModalBlock`s -> one vector per question.

    The question encoder runs once per distinct question and the backbone once per image; only the
    fusion blocks run per (image, question) pair, over the image's N tokens and one question state.
    The output adds the last block's evidence, max-pooled over the image tokens, to the question's
    state: a per-channel max passes the one token that matches the question at full strength, where
    an average (or a softmax that has not learned where to look yet) dilutes it among N tokens.

    Args:
        dim: width D.
        depth: number of fusion blocks.
        text_depth: self-attention blocks of the question encoder (0: word embeddings go straight in).
        num_heads: heads per attention.
        mlp_ratio: feed-forward width multiple.
        bidirectional: update the image stream from the question in every block (False: the
            question only reads the image).
        layer_scale_init: LayerScale start value of the question encoder's residual branches (None:
            off); small values keep each word's own embedding dominant early on.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int = 1,
        text_depth: int = 0,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        bidirectional: bool = True,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        self.question_encoder = (
            QuestionEncoder(
                dim=dim, depth=text_depth, num_heads=num_heads, mlp_ratio=mlp_ratio, layer_scale_init=layer_scale_init
            )
            if text_depth > 0
            else None
        )
        self.blocks = nn.ModuleList(
            CrossModalBlock(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, update_image=bidirectional)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, text: Tensor, text_mask: Tensor, token_ids: Tensor, image: Tensor) -> Tensor:
        """text (B, Q, L, D) embeddings, text_mask / token_ids (B, Q, L), image (B, N, D) -> (B, Q, D)."""
        batch, questions, length, dim = text.shape
        weights = text_mask.unsqueeze(-1).to(text.dtype)  # (B, Q, L, 1)
        # bag of words: every word at full strength (an average would shrink the one word that
        # names the object by the question's length)
        summary = (text * weights).sum(2).reshape(batch * questions, 1, dim)
        if self.question_encoder is not None:
            text = self.question_encoder(text, text_mask, token_ids)
        words = text.reshape(batch * questions, length, dim)
        words_mask = text_mask.reshape(batch * questions, length)
        state = (words * weights.reshape(batch * questions, length, 1)).sum(1, keepdim=True)
        state = state / words_mask.sum(1).clamp(min=1).reshape(-1, 1, 1)  # mean of the words: (B*Q, 1, D)
        image = image.repeat_interleave(questions, dim=0)  # (B*Q, N, D)
        evidence = None
        for block in self.blocks:
            state, image, block_evidence = block(state, summary, words, words_mask, image)
            evidence = block_evidence if block_evidence is not None else evidence
        fused = state[:, 0] if evidence is None else state[:, 0] + evidence.amax(dim=1)
        return self.norm(fused).reshape(batch, questions, dim)


class ConcatFusion(nn.Module):
    """The no-attention baseline (the paper's CNN+MLP): mean- and max-pooled image tokens ++ the GRU
    encoding of the question -> (B, Q, 2D+D) features for the classifier MLP."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.out_dim = 3 * dim

    def encode(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(-1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed)  # (1, U, D)
        return last[0]

    def forward(self, text: Tensor, text_mask: Tensor, token_ids: Tensor, image: Tensor) -> Tensor:
        """text (B, Q, L, D), text_mask / token_ids (B, Q, L), image (B, N, D) -> (B, Q, 3D)."""
        question = per_distinct_question(self.encode, text, text_mask, token_ids)  # (B, Q, D)
        pooled = torch.cat([image.mean(1), image.amax(1)], dim=-1)  # (B, 2D)
        return torch.cat([pooled[:, None].expand(-1, question.shape[1], -1), question], dim=-1)


def joint_sequence(text: Tensor, text_mask: Tensor, image: Tensor, modality: Tensor) -> tuple[Tensor, Tensor]:
    """[question tokens; image tokens] per question: (B*Q, L+N, D) and its (B*Q, L+N) mask."""
    batch, questions, length, dim = text.shape
    image = (image + modality[1]).repeat_interleave(questions, dim=0)  # (B*Q, N, D)
    text = (text + modality[0]).reshape(batch * questions, length, dim)
    mask = torch.cat([text_mask.reshape(batch * questions, length), text_mask.new_ones(image.shape[:2])], dim=1)
    return torch.cat([text, image], dim=1), mask


class VQARoute(TaskRoute):
    """How VQA runs the shared backbone: image and question through the chosen fusion -> (B, Q, F).

    - ``cross``: relation layers and the backbone once per image, then `CrossModalFusion` per
      (image, question) pair;
    - ``joint``: relation layers once per image, then the backbone over [question; image] tokens
      per question with modality embeddings; the CLS (first question token) is the output;
    - ``concat``: the no-attention baseline: `ConcatFusion` of the conv stem's tokens and a GRU
      question encoding; no relation layer, no backbone.

    Only the chosen fusion's layers are built, so every parameter gets a gradient (DDP).

    Args:
        dim: backbone width D.
        fusion: ``cross`` | ``joint`` | ``concat`` (``task.fusion``).
        relation_layers / relation_heads: `GeometricRelationLayer`s on the image tokens before the
            backbone (cross and joint; 0: none).
        fusion_depth / text_depth / num_heads / mlp_ratio / bidirectional / layer_scale_init:
            `CrossModalFusion` options (cross only).
    """

    def __init__(
        self,
        *,
        dim: int,
        fusion: Fusion = "cross",
        relation_layers: int = 0,
        relation_heads: int = 8,
        fusion_depth: int = 1,
        text_depth: int = 0,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        bidirectional: bool = True,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"task.fusion='{fusion}' is unknown; choose one of {', '.join(FUSIONS)}")
        self.fusion_kind, self.out_dim, self.uses_backbone = fusion, dim, fusion != "concat"
        self.relations = nn.Sequential(
            *(GeometricRelationLayer(dim=dim, num_heads=relation_heads)
              for _ in range(relation_layers if fusion != "concat" else 0))
        )
        if fusion == "cross":
            self.fusion = CrossModalFusion(
                dim=dim, depth=fusion_depth, text_depth=text_depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                bidirectional=bidirectional, layer_scale_init=layer_scale_init,
            )
        elif fusion == "joint":
            self.modality = nn.Parameter(torch.randn(2, dim) * 0.02)  # 0: question, 1: image
        else:
            self.fusion = ConcatFusion(dim=dim)
            self.out_dim = self.fusion.out_dim

    def forward(self, backbone: nn.Module, adapter: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        if not isinstance(adapter, VQAInputs):
            raise TypeError(
                f"VQARoute needs the VQAInputs adapter, got {type(adapter).__name__}; "
                "set model.tasks.<task>.adapter._target_=tasks.vqa.model.VQAInputs"
            )
        text, text_mask = adapter.question_tokens(batch)  # (B, Q, L, D), (B, Q, L)
        image = self.relations(adapter.image_tokens(batch))  # (B, N, D), once per image
        if self.fusion_kind == "joint":
            tokens, mask = joint_sequence(text, text_mask, image, self.modality)
            hidden = backbone(tokens, mask)  # (B*Q, L+N, D)
            fused = hidden[:, 0].reshape(*text.shape[:2], -1)  # CLS of each question: (B, Q, D)
        else:
            if self.fusion_kind == "cross":
                image = backbone(image)  # each image encoded once: (B, N, D)
            fused = self.fusion(text, text_mask, batch["question_tokens"], image)  # (B, Q, F)
        return fused, batch["question_mask"]
