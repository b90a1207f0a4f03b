"""Offline default: bAbI tasks 1-3 (Weston et al. 2015) simulated per the paper and cast as SQuAD v1.1.

A story is a sequence of statements about a small world: four actors (Mary, John, Sandra, Daniel),
six locations (bathroom, hallway, garden, office, bedroom, kitchen) and, for tasks 2 and 3, three
objects (football, apple, milk). Questions are interleaved with the statements and answered by a
location word, computed from a simulated world state, never from templates:

- task 1, single supporting fact: moves only ("Mary went to the kitchen."); a question
  "Where is Mary?" after every 2 statements, 5 per story. Only actors that have moved are asked about.
- task 2, two supporting facts: moves, pick-ups ("John picked up the apple there.") and drops
  ("Daniel dropped the milk."); "Where is the football?" after 3-8 statements, 5 per story.
- task 3, three supporting facts: as task 2 with 10-25 statements between questions, so stories run
  to 100+ sentences, most of them distractors; "Where was the football before the kitchen?".

Simulation rules: an actor acts (picks up, drops) only once a move has stated where they are, and a
move always changes their room. Objects start in hidden rooms; an actor picks up an object only in
the room where it is and only if nobody holds it, holds it (several at a time allowed) until dropping
it, and carries it when moving. Questions only ask what the text determines: task 2 objects that have
been picked up (held: the holder's room; dropped: the room of the drop); task 3 a room ``X`` that
occurs exactly once in the object's room trail (consecutive distinct rooms, as the text shows them)
and not first, the answer being the room before it. The extra statements needed to make a question
askable are added before it.

Schema (SQuAD v1.1, as the hub's ``squad``) plus ``babi_task`` and ``support_spans``: one row per question; ``context`` is
the story up to that question (sentences joined by single spaces, no line numbers); ``answers`` holds
one location word whose ``answer_start`` is its character offset in the supporting fact, the sentence
that establishes the answer: task 1 the actor's most recent move, task 2 the move that put the
holder (or the dropper, at the drop) in that room, task 3 the move that put the carrier in the earlier
room before it carried the object on to ``X``. ``support_spans`` ({start: [...], end: [...]}, character
spans in the context) are bAbI's supporting facts, the sentences the answer follows from: task 1 the
move; task 2 the object's latest pick-up or drop and the move above; task 3 the carrier's pick-up,
the move above and the carrier's move into ``X``. Models may train on them as strong supervision
(Weston et al. 2015's strongly supervised setting; `data.support_column`).

Splits: ``size`` "10k" (bAbI en-10k) gives 10,000 training questions per task, "1k" gives 1,000;
validation 10% of that, test 1,000 per task. Each (split, task) draws its stories from its own
seeded ``random.Random``, and a story already drawn for an earlier split is skipped, so splits hold
disjoint stories. The same arguments give the identical dataset.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from datasets import Dataset, DatasetDict, Features, Value
from datasets import Sequence as HFSequence

ACTORS = ("Mary", "John", "Sandra", "Daniel")
LOCATIONS = ("bathroom", "hallway", "garden", "office", "bedroom", "kitchen")
OBJECTS = ("football", "apple", "milk")
MOVE_VERBS = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
PICK_VERBS = ("got", "picked up", "grabbed", "took")
DROP_VERBS = ("dropped", "discarded", "put down", "left")
TASKS = (1, 2, 3)
SIZES = {"1k": 1_000, "10k": 10_000}
TEST_QUESTIONS = 1_000
QUESTIONS_PER_STORY = 5
# Statements before each question (inclusive range), extended until the question is askable.
GAPS = {1: (2, 2), 2: (3, 8), 3: (10, 25)}
MAX_EXTRA_STATEMENTS = 200
SPLITS = ("train", "validation", "test")

FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": HFSequence({"text": Value("string"), "answer_start": Value("int32")}),
        "babi_task": Value("int32"),
        "support_spans": HFSequence({"start": Value("int32"), "end": Value("int32")}),
    }
)


@dataclass(frozen=True)
class Question:
    position: int  # story sentences before the question: its context is sentences[:position]
    text: str
    answer: str
    support: int  # index of the sentence ending "the <answer>." that establishes the answer
    supports: tuple[int, ...]  # every supporting fact (bAbI's line ids), in story order, ``support`` among them


@dataclass(frozen=True)
class Story:
    task: int
    sentences: tuple[str, ...]
    questions: tuple[Question, ...]

    def context(self, question: Question) -> str:
        return " ".join(self.sentences[: question.position])

    def answer_start(self, question: Question) -> int:
        """Character offset of the answer word at the end of the supporting sentence."""
        offset = sum(len(s) + 1 for s in self.sentences[: question.support])
        return offset + len(self.sentences[question.support]) - len(question.answer) - 1

    def support_spans(self, question: Question) -> dict[str, list[int]]:
        """Character spans (start, end) of the question's supporting sentences in its context."""
        starts = [sum(len(s) + 1 for s in self.sentences[:index]) for index in question.supports]
        ends = [start + len(self.sentences[index]) for start, index in zip(starts, question.supports, strict=True)]
        return {"start": starts, "end": ends}


class _World:
    """Ground truth of one story, plus what the text reveals so far."""

    def __init__(self, rng: random.Random, task: int):
        self.rng = rng
        self.task = task
        self.sentences: list[str] = []
        self.actor_room: dict[str, str | None] = {a: None for a in ACTORS}  # None: not stated yet
        self.last_move: dict[str, int] = {}  # actor -> index of the move that put them in their room
        self.object_room = {o: rng.choice(LOCATIONS) for o in OBJECTS}  # hidden until first picked up
        self.holder: dict[str, str | None] = {o: None for o in OBJECTS}
        self.drop_support: dict[str, int] = {}  # object -> move that put its dropper in the drop room
        self.last_event: dict[str, int] = {}  # object -> its latest pick-up or drop
        self.last_pickup: dict[str, int] = {}  # object -> its latest pick-up
        # per object, the rooms it has been in: [room, supporting move, move that carried it in, that carrier's pick-up]
        self.trail: dict[str, list[list]] = {o: [] for o in OBJECTS}

    # statements -------------------------------------------------------------------------------------
    def move(self, actor: str, room: str) -> None:
        index = len(self.sentences)
        self.sentences.append(f"{actor} {self.rng.choice(MOVE_VERBS)} the {room}.")
        for obj in OBJECTS:
            if self.holder[obj] == actor:
                self.trail[obj][-1][1] = self.last_move[actor]  # the carrier's move into the room it leaves
                self.trail[obj].append([room, index, index, self.last_pickup[obj]])
                self.object_room[obj] = room
        self.actor_room[actor] = room
        self.last_move[actor] = index

    def pick_up(self, actor: str, obj: str) -> None:
        room = self.actor_room[actor]
        assert room is not None and self.holder[obj] is None and self.object_room[obj] == room
        self.last_event[obj] = self.last_pickup[obj] = len(self.sentences)
        self.sentences.append(f"{actor} {self.rng.choice(PICK_VERBS)} the {obj} there.")
        self.holder[obj] = actor
        if not self.trail[obj]:
            self.trail[obj].append([room, self.last_move[actor], None, self.last_pickup[obj]])

    def drop(self, actor: str, obj: str) -> None:
        assert self.holder[obj] == actor
        self.last_event[obj] = len(self.sentences)
        self.sentences.append(f"{actor} {self.rng.choice(DROP_VERBS)} the {obj}.")
        self.holder[obj] = None
        self.drop_support[obj] = self.last_move[actor]

    def step(self) -> None:
        """One random statement that the world state allows."""
        rng = self.rng
        pickups = [
            (a, o)
            for a in ACTORS
            for o in OBJECTS
            if self.actor_room[a] is not None
            and self.holder[o] is None
            and self.object_room[o] == self.actor_room[a]
        ]
        drops = [(self.holder[o], o) for o in OBJECTS if self.holder[o] is not None]
        if self.task == 1:
            kind = "move"
        else:
            kinds, weights = ["move"], [0.6]
            if pickups:
                kinds.append("pick")
                weights.append(0.25)
            if drops:
                kinds.append("drop")
                weights.append(0.15)
            kind = rng.choices(kinds, weights)[0]
        if kind == "pick":
            self.pick_up(*rng.choice(pickups))
        elif kind == "drop":
            self.drop(*rng.choice(drops))
        else:
            actor = rng.choice(ACTORS)
            rooms = [r for r in LOCATIONS if r != self.actor_room[actor]]
            self.move(actor, rng.choice(rooms))

    # questions --------------------------------------------------------------------------------------
    def candidates(self) -> list[Question]:
        position = len(self.sentences)
        if self.task == 1:
            return [
                Question(position, f"Where is {a}?", self.actor_room[a], self.last_move[a], (self.last_move[a],))
                for a in ACTORS
                if self.actor_room[a] is not None
            ]
        if self.task == 2:
            out = []
            for obj in OBJECTS:
                if not self.trail[obj]:
                    continue
                holder = self.holder[obj]
                support = self.last_move[holder] if holder is not None else self.drop_support[obj]
                supports = tuple(sorted((self.last_event[obj], support)))
                out.append(Question(position, f"Where is the {obj}?", self.object_room[obj], support, supports))
            return out
        out = []
        for obj in OBJECTS:
            rooms = [entry[0] for entry in self.trail[obj]]
            for i in range(1, len(rooms)):
                if rooms.count(rooms[i]) == 1:
                    room, support = self.trail[obj][i - 1][:2]
                    _, _, carried_in, pickup = self.trail[obj][i]
                    text = f"Where was the {obj} before the {rooms[i]}?"
                    supports = tuple(sorted({pickup, support, carried_in}))
                    out.append(Question(position, text, room, support, supports))
        return out


def generate_story(task: int, rng: random.Random, *, questions: int = QUESTIONS_PER_STORY) -> Story:
    """One story of ``task`` with ``questions`` questions, each asked about what the text determines."""
    if task not in TASKS:
        raise ValueError(f"data.babi_tasks: task {task!r} is not one of {TASKS}")
    low, high = GAPS[task]
    while True:  # restart in the (rare) case a question stays unaskable
        world = _World(rng, task)
        asked: list[Question] = []
        for _ in range(questions):
            for _ in range(rng.randint(low, high)):
                world.step()
            for _ in range(MAX_EXTRA_STATEMENTS):
                options = world.candidates()
                if options:
                    break
                world.step()
            if not options:
                break
            asked.append(rng.choice(options))
        if len(asked) == questions:
            return Story(task, tuple(world.sentences), tuple(asked))


def story_rows(story: Story, *, id_prefix: str) -> list[dict]:
    """SQuAD rows of one story, one per question."""
    rows = []
    for q_index, question in enumerate(story.questions):
        rows.append(
            {
                "id": f"{id_prefix}-q{q_index}",
                "title": f"babi-task{story.task}",
                "context": story.context(question),
                "question": question.text,
                "answers": {"text": [question.answer], "answer_start": [story.answer_start(question)]},
                "babi_task": story.task,
                "support_spans": story.support_spans(question),
            }
        )
    return rows


def _split_rows(split: str, task: int, num_questions: int, *, seed: int, seen: set[str]) -> list[dict]:
    rng = random.Random(f"babi/seed={seed}/split={split}/task={task}")
    rows: list[dict] = []
    story_index = 0
    while len(rows) < num_questions:
        story = generate_story(task, rng, questions=min(QUESTIONS_PER_STORY, num_questions - len(rows)))
        text = " ".join(story.sentences)
        if text in seen:  # keep splits' stories disjoint
            continue
        seen.add(text)
        rows.extend(story_rows(story, id_prefix=f"babi{task}-{split}-s{story_index:05d}"))
        story_index += 1
    return rows


def build_babi(
    *, tasks: Sequence[int] = (1, 2, 3), size: str | int = "10k", seed: int = 0, test_size: int = TEST_QUESTIONS
) -> DatasetDict:
    """bAbI tasks ``tasks`` in SQuAD form: train ``size`` (10k / 1k, or a number: tiny builds for tests)
    questions per task, validation 10% of that (at least 1), test ``test_size`` per task."""
    if isinstance(size, bool) or not (size in SIZES or (isinstance(size, int) and size >= 1)):
        raise ValueError(f"data.size={size!r}: use one of {tuple(SIZES)} (or a positive number of questions)")
    if not isinstance(test_size, int) or test_size < 1:
        raise ValueError(f"data.test_size={test_size!r} must be a positive number of questions per task")
    train_size = SIZES[size] if isinstance(size, str) else size
    chosen = list(tasks) if not isinstance(tasks, (str, bytes)) else [tasks]
    bad = [t for t in chosen if isinstance(t, bool) or t not in TASKS]
    if bad or not chosen:
        raise ValueError(f"data.babi_tasks={list(chosen)!r}: give a non-empty subset of {TASKS}")
    chosen = sorted(set(chosen))
    counts = {"train": train_size, "validation": max(1, train_size // 10), "test": test_size}
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for task in chosen:
        seen: set[str] = set()
        for split in SPLITS:
            rows[split].extend(_split_rows(split, task, counts[split], seed=seed, seen=seen))
    return DatasetDict({split: Dataset.from_list(rows[split], features=FEATURES) for split in SPLITS})
