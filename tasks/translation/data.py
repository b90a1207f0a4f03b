"""Translation data: WMT's schema (``translation: {<src_lang>: ..., <tgt_lang>: ...}``) from the offline
builder (``data.name=mul-en``: French, German and Spanish dates, numbers and phrases to English) or from
the hub / disk (``data.source=hub data.path=wmt16 data.name=de-en data.src_lang=de data.tgt_lang=en``)."""

from __future__ import annotations

from typing import Any

from datasets import Dataset, DatasetDict

from attnlab.data.seq2seq import Seq2SeqDataModule

BUILDER_NAME = "mul-en"


class TranslationDataModule(Seq2SeqDataModule):
    """Source sentence -> English (or any ``tgt_lang``) sentence.

    Args:
        src_lang / tgt_lang: keys of the ``translation`` dict to read (``mul`` / ``en`` for the builder).
        train_size / validation_size / test_size: rows the offline builder writes per split.
        **kwargs: `Seq2SeqDataModule` / `HFDataModule` arguments.
    """

    task_name = "translation"
    required_columns = ("translation",)

    def __init__(
        self,
        *,
        src_lang: str = "mul",
        tgt_lang: str = "en",
        train_size: int = 200_000,
        validation_size: int = 1_000,
        test_size: int = 3_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.source == "builder" and self.name not in (None, BUILDER_NAME):
            raise ValueError(
                f"data.name={self.name} has no offline builder; the embedded dataset is data.name={BUILDER_NAME} "
                "(for WMT use data.source=hub data.path=wmt16 data.name=de-en data.src_lang=de data.tgt_lang=en)"
            )
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.train_size, self.validation_size, self.test_size = train_size, validation_size, test_size

    def builder_params(self) -> dict[str, Any]:
        return {"name": BUILDER_NAME, "train_size": self.train_size, "validation_size": self.validation_size,
                "test_size": self.test_size, "seed": self.seed}

    def build(self) -> DatasetDict:
        from tasks.translation.builder import build_mul_en

        return build_mul_en(train_size=self.train_size, validation_size=self.validation_size,
                            test_size=self.test_size, seed=self.seed)

    def _side(self, split: Dataset, lang: str, key: str) -> list[str]:
        pairs = split["translation"]
        for index, pair in enumerate(pairs):
            if lang not in pair:
                raise ValueError(
                    f"row {index} of {self.origin} has translation keys {sorted(pair)}, not data.{key}={lang}; "
                    f"set data.{key} to one of them"
                )
        return [pair[lang] or "" for pair in pairs]

    def source_texts(self, split: Dataset) -> list[str]:
        return self._side(split, self.src_lang, "src_lang")

    def target_texts(self, split: Dataset) -> list[str]:
        return self._side(split, self.tgt_lang, "tgt_lang")
