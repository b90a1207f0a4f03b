"""Real-time factor of a trained speech recognizer: seconds of compute per second of audio.

    python scripts/bench_asr.py ckpt_path=logs/asr/<run>/checkpoints/best.ckpt [utterances=200] [threads=2]

Reads the checkpoint's test split (its datamodule and vocabulary come from the checkpoint), then, in one
run, times the whole inference path (reading and resampling the file, log-mel features, subsampling,
encoder, CTC head, decoding) one utterance at a time and in length-bucketed batches, with greedy and with
the checkpoint's beam search. RTF < 1 is faster than real time. Prints one table row per setting.
"""

from __future__ import annotations

import sys
import time

import torch

from attnlab.checkpoints import restore_from_checkpoint


def _args(argv: list[str]) -> dict[str, str]:
    args = dict(a.split("=", 1) for a in argv)
    if "ckpt_path" not in args:
        raise SystemExit(__doc__)
    return args


def _timed_pass(model, datamodule, indices: list[list[int]], split) -> tuple[float, list[str]]:
    """Seconds to read, featurize, encode and decode these batches of the split, and the transcripts."""
    head = model.heads["asr"]
    transcripts: list[str] = []
    start = time.perf_counter()
    with torch.no_grad():
        for batch_indices in indices:
            batch = datamodule.collate([split[i] for i in batch_indices])
            transcripts += head.transcribe(model(batch, "asr"))
    return time.perf_counter() - start, transcripts


def main() -> None:
    args = _args(sys.argv[1:])
    torch.set_num_threads(int(args.get("threads", 2)))
    model, datamodule, _ = restore_from_checkpoint(args["ckpt_path"])
    model.eval()
    datamodule.setup("test")
    split = datamodule.splits["test"]
    count = min(int(args.get("utterances", 200)), len(split))
    seconds = float(sum(datamodule.durations["test"][:count]))
    head = model.heads["asr"]
    beam = head.decoding
    print(f"{count} test utterances, {seconds:.1f} s of audio, {torch.get_num_threads()} threads")
    print("| decoding | batching | compute s | RTF |")
    print("| --- | --- | --- | --- |")
    sampler = datamodule.batch_sampler("test", split, shuffle=False)
    batched = [[i for i in batch if i < count] for batch in sampler]
    batched = [b for b in batched if b]
    one_by_one = [[i] for i in range(count)]
    _timed_pass(model, datamodule, one_by_one[:5], split)  # warm-up
    for decoding in dict.fromkeys(["greedy", beam]):
        head.decoding, head._beam = decoding, None
        label = decoding if decoding == "greedy" else f"beam {head.beam_size}" + (
            f" + lexicon ({len(head.words)} words)" if head.words else "") + (
            f" + {head.language_model.order}-gram LM" if head.language_model is not None else "")
        for name, batches in (("one utterance at a time", one_by_one), ("length-bucketed batches", batched)):
            elapsed, _ = _timed_pass(model, datamodule, batches, split)
            print(f"| {label} | {name} | {elapsed:.2f} | {elapsed / seconds:.4f} |", flush=True)


if __name__ == "__main__":
    main()
