"""The bAbI (tasks 1-3) SQuAD builder: schema, sizes, determinism, spans, and every answer re-solved.

The solver here reads only the context text (regexes for moves, pick-ups and drops), rebuilds the
world from it, checks that every statement is possible in that world, and answers each question; it
must agree with the builder on the answer, on the supporting sentence the span points into and on
every supporting fact.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import defaultdict

import pytest
from datasets import Features, Sequence, Value
from tasks.qa.builder import FEATURES, build_babi

ACTORS = {"Mary", "John", "Sandra", "Daniel"}
ROOMS = {"bathroom", "hallway", "garden", "office", "bedroom", "kitchen"}
OBJECTS = {"football", "apple", "milk"}
MOVE = re.compile(r"^(\w+) (?:moved to|went to|journeyed to|travelled to|went back to) the (\w+)\.$")
PICK = re.compile(r"^(\w+) (?:got|picked up|grabbed|took) the (\w+) there\.$")
DROP = re.compile(r"^(\w+) (?:dropped|discarded|put down|left) the (\w+)\.$")
Q1 = re.compile(r"^Where is (\w+)\?$")
Q2 = re.compile(r"^Where is the (\w+)\?$")
Q3 = re.compile(r"^Where was the (\w+) before the (\w+)\?$")
COUNTS = {"train": 1000, "validation": 100, "test": 1000}


@pytest.fixture(scope="module")
def dataset():
    return build_babi(size="1k", seed=0)


@pytest.fixture(scope="module")
def rows(dataset):
    return {split: dataset[split].to_list() for split in dataset}


def parse(context: str) -> list[tuple[str, int, tuple]]:
    """Sentences of a context as (sentence, start offset, event)."""
    out, offset = [], 0
    for sentence in re.split(r"(?<=\.) ", context):
        if m := MOVE.match(sentence):
            event = ("move", m[1], m[2])
            assert m[1] in ACTORS and m[2] in ROOMS, sentence
        elif m := PICK.match(sentence):
            event = ("pick", m[1], m[2])
            assert m[1] in ACTORS and m[2] in OBJECTS, sentence
        elif m := DROP.match(sentence):
            event = ("drop", m[1], m[2])
            assert m[1] in ACTORS and m[2] in OBJECTS, sentence
        else:
            raise AssertionError(f"unparsed sentence {sentence!r}")
        out.append((sentence, offset, event))
        offset += len(sentence) + 1
    assert offset - 1 == len(context)
    return out


def last_move_before(sentences, actor: str, end: int) -> int:
    """Index of ``actor``'s most recent move among sentences[:end]."""
    for i in range(end - 1, -1, -1):
        kind, who, _ = sentences[i][2]
        if kind == "move" and who == actor:
            return i
    raise AssertionError(f"{actor} acts before any move states where they are")


def solve(context: str, question: str) -> tuple[str, int, list[int]]:
    """(answer, offset of the answer word in its supporting sentence, supporting sentences in order) from
    the text alone."""
    sentences = parse(context)
    room: dict[str, str] = {}  # actor -> room
    holder: dict[str, str | None] = {}  # object -> actor or None (dropped); absent: never seen
    dropped_at: dict[str, str] = {}
    trail: dict[str, list[tuple[str, int, str]]] = defaultdict(list)  # (room, entry sentence, carrier)
    for i, (_, _, (kind, actor, arg)) in enumerate(sentences):
        if kind == "move":
            assert room.get(actor) != arg, "a move must change room"
            room[actor] = arg
            for obj, who in holder.items():
                if who == actor:
                    trail[obj].append((arg, i, actor))
        elif kind == "pick":
            assert actor in room, "pick-up before the actor's room is known"
            assert holder.get(arg) is None, f"{arg} is held by {holder.get(arg)}"
            if arg in dropped_at:
                assert dropped_at[arg] == room[actor], (
                    f"{arg} is in the {dropped_at[arg]}, not the {room[actor]}"
                )
            holder[arg] = actor
            if not trail[arg]:
                trail[arg].append((room[actor], i, actor))
        else:
            assert holder.get(arg) == actor, f"{actor} drops {arg} without holding it"
            holder[arg] = None
            dropped_at[arg] = room[actor]

    def word_at(index: int, word: str) -> int:
        sentence, start, _ = sentences[index]
        assert sentence.endswith(f" the {word}.")
        return start + len(sentence) - len(word) - 1

    if m := Q3.match(question):
        obj, later = m[1], m[2]
        rooms = [r for r, _, _ in trail[obj]]
        assert all(a != b for a, b in itertools.pairwise(rooms))
        assert rooms.count(later) == 1 and rooms.index(later) > 0, f"'{question}' is ambiguous or unknown"
        i = rooms.index(later)
        _, entry, carrier = trail[obj][i]  # the carrier moved it from rooms[i-1] into `later` at `entry`
        support = last_move_before(sentences, carrier, entry)
        pickup = max(j for j in range(entry) if sentences[j][2][0] == "pick" and sentences[j][2][2] == obj)
        assert sentences[pickup][2][1] == carrier
        return rooms[i - 1], word_at(support, rooms[i - 1]), sorted({pickup, support, entry})
    if m := Q2.match(question):
        obj = m[1]
        assert obj in holder, f"{obj} never picked up: its room is unknown"
        event = max(i for i, (_, _, e) in enumerate(sentences) if e[0] != "move" and e[2] == obj)
        if holder[obj] is not None:
            support = last_move_before(sentences, holder[obj], len(sentences))
            answer = room[holder[obj]]
        else:
            support = last_move_before(sentences, sentences[event][2][1], event)
            answer = dropped_at[obj]
        return answer, word_at(support, answer), sorted({event, support})
    if m := Q1.match(question):
        actor = m[1]
        assert actor in ACTORS and actor in room, f"{actor}'s room is unknown"
        support = last_move_before(sentences, actor, len(sentences))
        return room[actor], word_at(support, room[actor]), [support]
    raise AssertionError(f"unparsed question {question!r}")


def test_schema_sizes_and_ids(dataset, rows):
    expected = Features(
        {
            "id": Value("string"),
            "title": Value("string"),
            "context": Value("string"),
            "question": Value("string"),
            "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")}),
            "babi_task": Value("int32"),
            "support_spans": Sequence({"start": Value("int32"), "end": Value("int32")}),
        }
    )
    assert FEATURES == expected
    assert set(dataset) == {"train", "validation", "test"}
    ids = []
    for split, split_rows in rows.items():
        assert dataset[split].features == expected
        assert dataset[split].column_names == ["id", "title", "context", "question", "answers", "babi_task", "support_spans"]
        per_task = defaultdict(int)
        for row in split_rows:
            per_task[row["babi_task"]] += 1
            assert row["title"] == f"babi-task{row['babi_task']}"
            assert len(row["answers"]["text"]) == len(row["answers"]["answer_start"]) == 1
        assert dict(per_task) == {1: COUNTS[split], 2: COUNTS[split], 3: COUNTS[split]}
        ids += [row["id"] for row in split_rows]
    assert len(ids) == len(set(ids))


def test_splits_hold_disjoint_stories(rows):
    stories = {}
    for split, split_rows in rows.items():
        longest = {}
        for row in split_rows:
            key = row["id"].rsplit("-q", 1)[0]
            if len(row["context"]) > len(longest.get(key, "")):
                longest[key] = row["context"]
        stories[split] = set(longest.values())
    assert not stories["train"] & stories["validation"]
    assert not stories["train"] & stories["test"]
    assert not stories["validation"] & stories["test"]


def test_deterministic(dataset):
    again = build_babi(size="1k", seed=0)
    other = build_babi(tasks=(1, 3), size="1k", seed=1)
    for split in dataset:
        assert again[split].to_list() == dataset[split].to_list()
    assert other["train"]["context"][:5] != dataset["train"]["context"][:5]
    assert set(other["test"]["babi_task"]) == {1, 3}


def test_spans_point_at_whole_words(rows):
    for split_rows in rows.values():
        for row in split_rows:
            context = row["context"]
            for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
                assert context[start : start + len(text)] == text
                assert start == 0 or not context[start - 1].isalnum()
                end = start + len(text)
                assert end == len(context) or not context[end].isalnum()


def test_answers_resolved_from_text(rows):
    for split, split_rows in rows.items():
        for row in split_rows:
            answer, start, supports = solve(row["context"], row["question"])
            assert row["answers"]["text"] == [answer], (split, row["id"])
            assert row["answers"]["answer_start"] == [start], (split, row["id"])
            sentences = parse(row["context"])
            expected = {"start": [sentences[i][1] for i in supports],
                        "end": [sentences[i][1] + len(sentences[i][0]) for i in supports]}
            assert row["support_spans"] == expected, (split, row["id"])


def test_solver_catches_errors():
    context = "Mary went to the kitchen. Mary got the milk there. Mary moved to the office."
    assert solve(context, "Where is the milk?") == ("office", context.index("office"), [1, 2])
    assert solve(context, "Where was the milk before the office?") == ("kitchen", context.index("kitchen"), [0, 1, 2])
    with pytest.raises(AssertionError):
        solve("John got the milk there.", "Where is the milk?")  # John's room unknown
    with pytest.raises(AssertionError):
        solve(
            context + " John went to the office. John took the milk there.", "Where is John?"
        )  # Mary holds it


def test_task3_contexts_are_long(rows):
    words = defaultdict(list)
    for row in rows["train"]:
        words[row["babi_task"]].append(len(row["context"].split()))
    means = {task: statistics.mean(lengths) for task, lengths in words.items()}
    assert means[3] > 2 * max(means[1], means[2])
    assert sum(n > 300 for n in words[3]) > 50


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"size": "5k"}, "data.size"),
        ({"size": "10K"}, "data.size"),
        ({"tasks": (4,)}, "data.babi_tasks"),
        ({"tasks": (0, 1)}, "data.babi_tasks"),
        ({"tasks": ()}, "data.babi_tasks"),
    ],
)
def test_bad_arguments(kwargs, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        build_babi(**kwargs)
