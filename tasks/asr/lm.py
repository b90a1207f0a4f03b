"""A word n-gram language model for CTC beam search, estimated from the training transcripts.

Interpolated Witten-Bell smoothing (Witten & Bell 1991, as in SRILM's ``-wbdiscount -interpolate``):

    P(w | h) = (c(h, w) + T(h) P(w | h')) / (c(h) + T(h))

where h' drops the oldest word of the history h, c counts n-grams in the training transcripts, and T(h) is
the number of distinct words seen after h; the recursion ends in the add-one unigram distribution over
the lexicon plus the sentence end ``</s>``. Every lexicon word keeps a non-zero probability, so the LM
prefers the word sequences training used without forbidding new ones.

`WordNgramLM` plugs it into torchaudio's CTC decoder (flashlight-text) as a `CTCDecoderLM`: the decoder
asks for the score of each word it appends to a hypothesis, and for the sentence end at the finish.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

START, END = "<s>", "</s>"


class NgramCounts:
    """Word n-gram counts of sentences and their Witten-Bell probabilities.

    Args:
        sentences: training transcripts (words separated by spaces).
        vocabulary: the words the decoder may spell (the lexicon); the unigram distribution covers them.
        order: n (2: bigram, 3: trigram).
    """

    def __init__(self, sentences: Iterable[str], vocabulary: Sequence[str], *, order: int = 3) -> None:
        if order < 1:
            raise ValueError(f"lm_order={order} must be >= 1")
        self.order, self.vocabulary = order, sorted(set(vocabulary))
        self.counts: Counter[tuple[str, ...]] = Counter()  # n-grams of every length 1..order
        for sentence in sentences:
            words = [START] * (order - 1) + sentence.split() + [END]
            for n in range(1, order + 1):
                for i in range(max(0, order - 1 - (n - 1)), len(words) - n + 1):
                    self.counts[tuple(words[i : i + n])] += 1
        self._build()

    def _build(self) -> None:
        self.context_total: Counter[tuple[str, ...]] = Counter()  # c(h): n-grams starting with h
        self.context_types: Counter[tuple[str, ...]] = Counter()  # T(h): distinct words after h
        for gram, count in self.counts.items():
            self.context_total[gram[:-1]] += count
            self.context_types[gram[:-1]] += 1
        unigram_total = sum(c for g, c in self.counts.items() if len(g) == 1)
        outcomes = len(self.vocabulary) + 1  # the words and </s>
        self.unigram_denominator = unigram_total + outcomes  # add-one

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "vocabulary": self.vocabulary, "counts": [[list(g), c] for g, c in self.counts.items()]}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> NgramCounts:
        model = cls.__new__(cls)
        model.order, model.vocabulary = int(state["order"]), list(state["vocabulary"])
        model.counts = Counter({tuple(g): int(c) for g, c in state["counts"]})
        model._build()
        return model

    def prob(self, word: str, history: tuple[str, ...]) -> float:
        """P(word | the last order - 1 words of history)."""
        probability = (self.counts[(word,)] + 1) / self.unigram_denominator
        history = history[-(self.order - 1) :] if self.order > 1 else ()
        for n in range(1, len(history) + 1):  # shortest context first, so each step interpolates the one below
            context = history[-n:]
            total = self.context_total[context]
            if total:
                types = self.context_types[context]
                probability = (self.counts[(*context, word)] + types * probability) / (total + types)
        return probability

    def log10_prob(self, word: str, history: tuple[str, ...]) -> float:
        return math.log10(self.prob(word, history))


class WordNgramLM(CTCDecoderLM):
    """`NgramCounts` as torchaudio's custom decoder LM: natural-log word scores, the decoder's states
    mapped to their word histories.

    Args:
        counts: the n-gram model.
        words: the decoder's word dictionary, index -> word (its lexicon order).
    """

    def __init__(self, counts: NgramCounts, words: Sequence[str]) -> None:
        CTCDecoderLM.__init__(self)
        self.model, self.words = counts, list(words)
        self.histories: dict[CTCDecoderLMState, tuple[str, ...]] = {}
        self.start_history = (START,) * (counts.order - 1)
        # True while the decoder builds its lexicon trie: it smears each word's score from the start state
        # over the word's prefixes as a look-ahead, and P(w | <s>) would all but prune the words that rarely
        # open a sentence ("the") before they are complete; the context-free unigram is the look-ahead
        self.context_free = True

    def start(self, start_with_nothing: bool) -> CTCDecoderLMState:
        self.histories.clear()  # one utterance at a time: drop the last one's states
        state = CTCDecoderLMState()
        self.histories[state] = self.start_history
        return state

    def _extend(self, state: CTCDecoderLMState, index: int, word: str) -> tuple[CTCDecoderLMState, float]:
        history = () if self.context_free else self.histories[state]
        child = state.child(index)
        self.histories[child] = (*history, word)[-(self.model.order - 1) :] if self.model.order > 1 else ()
        return child, math.log(self.model.prob(word, history))

    def score(self, state: CTCDecoderLMState, usr_token_idx: int) -> tuple[CTCDecoderLMState, float]:
        word = self.words[usr_token_idx] if 0 <= usr_token_idx < len(self.words) else None
        if word is None or word not in self.model.counts and word not in self.model.vocabulary:
            return state.child(usr_token_idx), -1e9  # not a lexicon word (the decoder's <unk>)
        return self._extend(state, usr_token_idx, word)

    def finish(self, state: CTCDecoderLMState) -> tuple[CTCDecoderLMState, float]:
        return self._extend(state, -1, END)
