"""Offline default: "espeak-ng speech", spoken digit strings and commands synthesized as 16 kHz WAV files.

Every utterance is a short English text read aloud by the ``espeak-ng`` synthesizer (a Debian package,
run as a subprocess; see :func:`espeak_executable`) in one of many voices, resampled to 16 kHz, optionally
mixed with white noise and written once as a 16-bit PCM mono WAV file. The transcript is the text itself:
lowercase words of ``a``..``z`` separated by single spaces, no digits and no punctuation.

Texts (:func:`sample_text`). An utterance is of one of two types (column ``utterance_type``):

- ``digits`` (TIDIGITS-style, :func:`sample_digits`): a digit string of ``1``..``7`` digits (length
  uniform), each digit uniform over 0..9, spoken digit by digit as words: ``"seven three one"``. A 0 is
  written (and so spoken) ``"oh"`` with probability 1/2, else ``"zero"``; the digit vocabulary is the
  eleven words of :data:`DIGIT_WORDS`.
- ``sentence`` (:func:`sample_sentence`): a command from a small grammar, :data:`TEMPLATES` with slots
  filled from :data:`SLOTS` (``"turn {onoff} the {room} {device}"`` -> ``"turn on the kitchen lights"``). A
  template is uniform over the templates, then each ``{slot}`` left to right is uniform over its values
  (a slot that occurs twice is drawn twice, independently). The grammar has a few hundred distinct words
  (:func:`sentence_vocabulary`) and about 190,000 distinct sentences (:func:`count_sentences`).

In a split of ``size`` utterances exactly ``round(digit_fraction * size)`` are digit strings (default
half), at positions given by a random permutation; the rest are sentences.

Speakers. A speaker is one (voice, variant) pair of espeak-ng: the eight English accents of
:data:`VOICES` (British, American, Scottish, Lancaster, received pronunciation, West Midlands, Caribbean,
New York City) crossed with the 32 voice variants of :data:`VARIANTS` (espeak-ng's ``m1``..``m8``,
``f1``..``f5``, three Klatt-synthesizer variants, four Klatt-based named voices and twelve named
formant voices): 256 speakers. ``speaker_id`` indexes :data:`SPEAKERS` (voice-major: ``voice_index * 32 +
variant_index``) and the ``voice`` column is ``"<voice>+<variant>"`` (:func:`speaker_name`, e.g.
``"en-gb+m3"``). The accents are passed to espeak-ng by their voice *file* (``gmw/en`` for ``en-gb``, ...):
espeak-ng 1.51 resolves ``-v en-gb+m3`` to its MBROLA voice ``en-uk``, which is not installed, and then
silently ignores the variant (every ``en-gb+<variant>`` sounds the same), while ``gmw/en+m3`` applies it.

Speaker splits (:func:`speaker_splits`): the 32 variants are permuted by a Generator seeded by ``seed``
and cut 70/10/20 % (22/4/6 variants) into train, validation and test; a speaker belongs to its
variant's split. So the splits hold 176/32/48 speakers, every accent occurs in every split, no (voice,
variant) pair occurs in two splits, and a validation or test speaker's variant (its pitch range and
formants, the voice's timbre) is never heard in training, in any accent. Holding out whole variants
matters: ``en-us-nyc`` differs from ``en-us`` only in a few vowels (``"seven"``, ``"oh zero seven"``
come out sample for sample the same), so ``en-us-nyc+m3`` must not be tested when ``en-us+m3`` was
trained on. Each utterance's speaker is uniform over its split's speakers.

Prosody: a speaking rate uniform over the integers ``rate`` = [130, 200] words per minute (espeak-ng
``-s``) and a base pitch uniform over the integers ``pitch`` = [30, 70] (``-p``, 0..99 on espeak-ng's
scale; a variant sets its own pitch range around it). Amplitude is espeak-ng's default (``-a 100``).

Audio (:func:`render_utterance`): espeak-ng's output, 22,050 Hz 16-bit mono, is scaled to float in
[-1, 1) (``/ 32768``) and resampled to 16 kHz by ``scipy.signal.resample_poly(x, 320, 441)`` (a
polyphase Kaiser-windowed low-pass; ``ceil(n * 320 / 441)`` samples). With ``noise_snr_db = (low,
high)`` white Gaussian noise is added at an SNR uniform in [low, high] dB relative to the mean power of
the whole resampled utterance (its leading and trailing silence included), drawn from
``default_rng(noise_seed)``; ``noise_snr_db=None`` leaves the audio clean. The result is clipped to
[-1, 1], scaled by 32767, rounded and stored as int16. espeak-ng is deterministic, so the same spec
gives the same samples. Speech starts within ~0.05 s and is followed by 0.2..0.5 s of silence
(espeak-ng's sentence-final pause, longer at slower rates); utterances last 0.5..4 s, about 1.9 s on
average (1.6 s for digit strings, 2.1 s for sentences).

Random draws: each split draws from its own numpy Generator seeded by ``[seed, zlib.crc32(split)]``:
first the permutation of utterance types, then per utterance, in order, the text, the speaker, the
rate, the pitch, the SNR and a ``noise_seed`` (an integer below 2**63); the SNR and seed are drawn even
when ``noise_snr_db`` is None, so that switching the noise off gives the same utterances, clean.
:func:`utterance_specs` yields these :class:`UtteranceSpec` again without synthesizing anything.

Dataset (:func:`build_speech`): utterance ``i`` of a split is written to
``directory/audio/<split>/<i:06d>.wav`` (16 kHz, int16, mono); the rows hold ``audio`` (that path,
relative to ``directory``), ``text``, ``speaker_id``, ``id`` (``"<split>-<i:06d>"``),
``utterance_type``, ``voice`` and ``duration`` (seconds). The same arguments give identical files.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Features, Value
from scipy.io import wavfile
from scipy.signal import resample_poly

SPLITS = ("train", "validation", "test")
SPEAKER_FRACTIONS = (0.7, 0.1, 0.2)
SAMPLE_RATE = 16_000
ESPEAK_PACKAGE = "espeak-ng"
INSTALL_COMMAND = "apt-get install espeak-ng"

# accent label (the ``voice`` column) -> espeak-ng voice file passed to ``-v`` (see the module doc)
VOICES: dict[str, str] = {
    "en-gb": "gmw/en",
    "en-us": "gmw/en-US",
    "en-gb-scotland": "gmw/en-GB-scotland",
    "en-gb-x-gbclan": "gmw/en-GB-x-gbclan",
    "en-gb-x-rp": "gmw/en-GB-x-rp",
    "en-gb-x-gbcwmd": "gmw/en-GB-x-gbcwmd",
    "en-029": "gmw/en-029",
    "en-us-nyc": "gmw/en-US-nyc",
}
# espeak-ng variant files (voices/!v/<name>); outlandish ones (whisper, robots, "Demonic", ...) are left out
VARIANTS: tuple[str, ...] = (
    *(f"m{k}" for k in range(1, 9)),
    *(f"f{k}" for k in range(1, 6)),
    "klatt",
    "klatt2",
    "klatt3",
    "adam",
    "benjamin",
    "david",
    "edward",
    "Andy",
    "Annie",
    "aunty",
    "belinda",
    "ed",
    "grandpa",
    "linda",
    "paul",
    "rob",
    "robert",
    "steph",
    "travis",
)
SPEAKERS: tuple[tuple[str, str], ...] = tuple((voice, variant) for voice in VOICES for variant in VARIANTS)

RATE = (130, 200)  # words per minute, inclusive
PITCH = (30, 70)  # espeak-ng base pitch 0..99, inclusive
NOISE_SNR_DB = (20.0, 40.0)
DIGIT_LENGTH = (1, 7)  # digits per digit string, inclusive
OH_PROBABILITY = 0.5  # a 0 is spoken "oh" with this probability, else "zero"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh")

# The command grammar's slots, one per line: ``name: value | value | ...`` (a value may be several words);
# an indented line continues the slot above.
_SLOT_TABLE = """
onoff: on | off
room: kitchen | bedroom | bathroom | garage | office | hallway | basement | garden | attic | porch | nursery
    | study | living room | dining room | guest room
device: lights | lamp | fan | heater | radio | television | dishwasher | oven | speaker | computer | printer
    | kettle | air conditioner | coffee machine | washing machine
percent: ten | twenty | thirty | forty | fifty | sixty | seventy | eighty | ninety
number: one | two | three | four | five | six | seven | eight | nine | ten | eleven | twelve | thirteen
    | fourteen | fifteen | sixteen | seventeen | eighteen | nineteen | twenty | twenty five | thirty | forty
    | forty five | fifty | sixty | ninety
unit: seconds | minutes | hours
hour: one | two | three | four | five | six | seven | eight | nine | ten | eleven | twelve
daypart: in the morning | in the afternoon | in the evening | at night
order: next | previous | first | last | same | new
media: song | track | album | playlist | episode | video | chapter | podcast
genre: jazz | rock | classical | country | pop | folk | blues | reggae | piano | dance | relaxing | happy
playback: pause | stop | resume | restart | shuffle | repeat
updown: up | down
person: my brother | my sister | my boss | the doctor | the dentist | the plumber | mom | dad | grandma
    | grandpa | anna | peter | maria | john | david | sarah | emma | james | lucy | tom | kate | laura | nina
    | oscar | henry | sophie | daniel | olivia
place: work | home | school | the office | the hospital | the gym | the hotel
status: running late | on my way | almost home | at the store | stuck in traffic | going to bed
    | feeling sick | still at work | waiting outside
chore: buy milk | call the dentist | water the plants | feed the cat | walk the dog | take out the trash
    | pay the bills | clean the kitchen | pick up the kids | book a table | charge my phone | lock the door
    | send the letter | wash the car | read the report
when: today | tomorrow | tonight | this morning | this afternoon | this evening | this weekend | next week
    | after lunch | before dinner | on monday | on tuesday | on wednesday | on thursday | on friday
    | on saturday | on sunday
food: milk | eggs | bread | butter | cheese | apples | bananas | oranges | tomatoes | potatoes | onions
    | carrots | rice | pasta | coffee | tea | sugar | flour | chicken | fish | yogurt | juice | cereal | honey
    | salt | pepper | lemons | grapes | olive oil | peanut butter | orange juice
color: red | green | blue | yellow | orange | purple | black | white | pink | brown | grey | silver
shape: block | cube | ball | box | cylinder | pyramid | ring | star | triangle | square | circle | cone
size: big | small | large | tiny | tall | short | little | heavy
direction: left | right | top | bottom | front | back | middle | corner | edge
relation: on | under | next to | behind | in front of | above | below | inside | beside
city: london | paris | berlin | madrid | rome | boston | chicago | denver | seattle | dallas | tokyo
    | sydney | toronto | dublin | vienna | lisbon | oslo | cairo | miami | atlanta
day: today | tomorrow | tonight | this weekend | next week
poi: pharmacy | bakery | hospital | airport | library | supermarket | restaurant | park | museum | bank
    | hotel | cinema | gas station | train station | post office | bus stop
cuisine: italian | chinese | indian | mexican | thai | greek | french | japanese | korean | spanish
landmark: me | the station | the park | work | home | the river | the center
change: warmer | cooler | brighter | darker | quieter
opening: garage door | front door | back door | windows | window | curtains | blinds | gate
openclose: open | close
topic: sports | politics | science | business | music | movies | technology | health | art | travel
    | the economy | the election
story: joke | story | riddle | fun fact | poem
topping: mushrooms | olives | onions | peppers | cheese | ham | pineapple | spinach | sausage
pizza: small | medium | large | family
sport: football | tennis | basketball | baseball | hockey | golf | rugby | cricket
appliance: dishwasher | washing machine | oven | coffee machine | vacuum cleaner | dryer
"""


def _parse_slots(table: str) -> dict[str, tuple[str, ...]]:
    """``{name: values}`` of a slot table (see _SLOT_TABLE)."""
    lines: list[str] = []
    for line in table.strip().splitlines():
        if line.startswith(" ") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    slots = {}
    for line in lines:
        name, values = line.split(":", 1)
        slots[name.strip()] = tuple(" ".join(value.split()) for value in values.split("|"))
    return slots


SLOTS: dict[str, tuple[str, ...]] = _parse_slots(_SLOT_TABLE)
TEMPLATES: tuple[str, ...] = (
    "turn {onoff} the {room} {device}",
    "switch {onoff} the {device} in the {room}",
    "dim the {room} lights to {percent} percent",
    "set a timer for {number} {unit}",
    "set an alarm for {hour} {daypart}",
    "wake me up at {hour} {daypart}",
    "play the {order} {media}",
    "play some {genre} music in the {room}",
    "{playback} the music",
    "turn the volume {updown}",
    "turn the volume {updown} in the {room}",
    "call {person} at {place}",
    "send a message to {person}",
    "text {person} that i am {status}",
    "remind me to {chore} {when}",
    "add {food} to the shopping list",
    "move the {color} {shape} to the {direction}",
    "put the {color} {shape} {relation} the {color} {shape}",
    "pick up the {size} {color} {shape}",
    "what is the weather {day} in {city}",
    "what time is it in {city}",
    "how far is the nearest {poi}",
    "navigate to the {poi}",
    "find a {cuisine} restaurant near {landmark}",
    "set the temperature to {number} degrees",
    "make the {room} {change}",
    "{openclose} the {opening}",
    "read me the news about {topic}",
    "tell me a {story}",
    "order a {pizza} pizza with {topping}",
    "what is the score of the {sport} game",
    "start the {appliance} {when}",
    "what is on my calendar {when}",
    "schedule a meeting with {person} {when}",
)
_SLOT = re.compile(r"\{(\w+)\}")

FEATURES = Features(
    {
        "audio": Value("string"),
        "text": Value("string"),
        "speaker_id": Value("int64"),
        "id": Value("string"),
        "utterance_type": Value("string"),
        "voice": Value("string"),
        "duration": Value("float64"),
    }
)


class EspeakNotFoundError(RuntimeError):
    """espeak-ng is not installed (not on PATH)."""


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything that fixes one utterance's audio (see the module doc)."""

    text: str
    utterance_type: str  # "digits" or "sentence"
    speaker_id: int  # index into SPEAKERS
    rate: int  # words per minute
    pitch: int  # espeak-ng base pitch, 0..99
    snr_db: float | None  # None: no noise
    noise_seed: int

    @property
    def voice(self) -> str:
        return speaker_name(self.speaker_id)


# ---------------------------------------------------------------- texts


def normalize_text(text: str) -> str:
    """Lowercase words of a..z separated by single spaces: anything else (digits, punctuation) is a space."""
    return " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())


def sample_digits(rng: np.random.Generator) -> str:
    """A digit string of DIGIT_LENGTH digits spoken as words, 0 as "oh" or "zero" (1/2 each)."""
    length = int(rng.integers(DIGIT_LENGTH[0], DIGIT_LENGTH[1] + 1))
    words = []
    for digit in rng.integers(0, 10, size=length).tolist():
        if digit == 0:
            words.append("oh" if rng.random() < OH_PROBABILITY else "zero")
        else:
            words.append(DIGIT_WORDS[digit])
    return " ".join(words)


def sample_sentence(rng: np.random.Generator) -> str:
    """A uniform template of TEMPLATES with each slot, left to right, uniform over its SLOTS values."""
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return _SLOT.sub(lambda match: _choice(rng, SLOTS[match.group(1)]), template)


def sample_text(rng: np.random.Generator, utterance_type: str) -> str:
    """The normalized text of an utterance of `utterance_type` ("digits" or "sentence")."""
    if utterance_type == "digits":
        return normalize_text(sample_digits(rng))
    if utterance_type == "sentence":
        return normalize_text(sample_sentence(rng))
    raise ValueError(f"utterance_type={utterance_type!r} must be 'digits' or 'sentence'")


def sentence_vocabulary() -> set[str]:
    """Every word a sentence of the grammar can contain."""
    words = set()
    for template in TEMPLATES:
        words.update(_SLOT.sub(" ", template).split())
        for slot in _SLOT.findall(template):
            for value in SLOTS[slot]:
                words.update(value.split())
    return words


def count_sentences() -> int:
    """Number of (template, slot values) combinations of the grammar (distinct up to rare coincidences)."""
    return sum(math.prod(len(SLOTS[slot]) for slot in _SLOT.findall(template)) for template in TEMPLATES)


def _choice(rng: np.random.Generator, values: tuple[str, ...]) -> str:
    return values[int(rng.integers(len(values)))]


# ---------------------------------------------------------------- speakers


def speaker_name(speaker_id: int) -> str:
    """``"<voice>+<variant>"`` of a speaker id, e.g. ``"en-gb+m3"``."""
    voice, variant = SPEAKERS[speaker_id]
    return f"{voice}+{variant}"


def speaker_splits(seed: int = 0) -> dict[str, np.ndarray]:
    """Sorted speaker ids of each split; disjoint, covering all of SPEAKERS.

    The variants are permuted by a Generator seeded by `seed` and cut 70/10/20 % (22/4/6) into the
    splits; every voice with a split's variants is in that split.
    """
    rng = np.random.default_rng(seed)
    cuts = np.rint(np.cumsum(SPEAKER_FRACTIONS)[:-1] * len(VARIANTS)).astype(int)
    voices = np.arange(len(VOICES))[:, None] * len(VARIANTS)  # (V, 1): id of each voice's first speaker
    parts = np.split(rng.permutation(len(VARIANTS)), cuts)
    return {
        split: np.sort((voices + part[None, :]).ravel()) for split, part in zip(SPLITS, parts, strict=True)
    }


# ---------------------------------------------------------------- specs


def utterance_specs(
    split: str,
    size: int,
    *,
    seed: int = 0,
    digit_fraction: float = 0.5,
    rate: tuple[int, int] = RATE,
    pitch: tuple[int, int] = PITCH,
    noise_snr_db: tuple[float, float] | None = NOISE_SNR_DB,
) -> Iterator[UtteranceSpec]:
    """The specs of utterances 0..size-1 of `split`, exactly as :func:`build_speech` synthesizes them."""
    speakers = speaker_splits(seed)[split]
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    num_digits = round(digit_fraction * size)
    is_digits = rng.permutation(np.arange(size) < num_digits)  # (size,) bool
    for digits in is_digits.tolist():
        utterance_type = "digits" if digits else "sentence"
        text = sample_text(rng, utterance_type)
        speaker_id = int(speakers[rng.integers(len(speakers))])
        rate_wpm = int(rng.integers(rate[0], rate[1] + 1))
        base_pitch = int(rng.integers(pitch[0], pitch[1] + 1))
        snr_unit = float(rng.random())  # drawn in any case: the noise setting changes nothing else
        snr_db = (
            None if noise_snr_db is None else noise_snr_db[0] + snr_unit * (noise_snr_db[1] - noise_snr_db[0])
        )
        noise_seed = int(rng.integers(2**63))
        yield UtteranceSpec(text, utterance_type, speaker_id, rate_wpm, base_pitch, snr_db, noise_seed)


# ---------------------------------------------------------------- audio


def espeak_executable() -> str:
    """Path of the espeak-ng program; :class:`EspeakNotFoundError` (with the install command) if absent."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakNotFoundError(
            "espeak-ng was not found on PATH: the offline speech dataset (task=asr) is synthesized with it. "
            f"Install the Debian package {ESPEAK_PACKAGE!r}: `{INSTALL_COMMAND}` (as root; "
            f"`sudo {INSTALL_COMMAND}` otherwise)."
        )
    return path


@functools.cache
def check_espeak(executable: str) -> None:
    """Raises RuntimeError unless `executable` knows every voice of VOICES and every variant of VARIANTS.

    espeak-ng falls back silently to its default for an unknown variant, which would mislabel speakers.
    """
    listed = set()
    for which in ("en", "variant"):
        result = subprocess.run([executable, f"--voices={which}"], capture_output=True, text=True, check=True)
        listed.update(result.stdout.split())
    missing = [f for f in VOICES.values() if f not in listed]
    missing += [f"!v/{variant}" for variant in VARIANTS if f"!v/{variant}" not in listed]
    if missing:
        version = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        raise RuntimeError(
            f"{executable} ({version}) lacks the voice files {missing}; espeak-ng 1.51 has them"
        )


def synthesize(
    text: str, *, speaker_id: int, rate: int = 175, pitch: int = 50, executable: str | None = None
) -> tuple[np.ndarray, int]:
    """espeak-ng's raw audio of `text`: int16 samples (n,) and their sample rate (22,050 Hz)."""
    voice, variant = SPEAKERS[speaker_id]
    command = [
        executable or espeak_executable(),
        "-v",
        f"{VOICES[voice]}+{variant}",
        "-s",
        str(rate),
        "-p",
        str(pitch),
        "--stdout",
        "--stdin",
    ]
    result = subprocess.run(command, input=text.encode(), capture_output=True, check=False)
    if result.returncode != 0 or len(result.stdout) <= 44:
        raise RuntimeError(
            f"{' '.join(command)} failed on {text!r} (exit {result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return _parse_wav(result.stdout)


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Samples (n,) int16 and sample rate of espeak-ng's ``--stdout`` WAV (16-bit PCM mono).

    Its RIFF and data sizes are placeholders (about 2**31, written before the length is known), so the
    data chunk is taken as everything after its header.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng output is not a RIFF/WAVE stream")
    position, sample_rate = 12, None
    while position + 8 <= len(data):
        chunk, size = data[position : position + 4], struct.unpack("<I", data[position + 4 : position + 8])[0]
        body = position + 8
        if chunk == b"fmt ":
            encoding, channels, sample_rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            if (encoding, channels, bits) != (1, 1, 16):
                raise ValueError(f"espeak-ng output is not 16-bit PCM mono: {encoding=} {channels=} {bits=}")
        elif chunk == b"data":
            if sample_rate is None:
                raise ValueError("espeak-ng output has no fmt chunk before its data")
            samples = data[body : body + (len(data) - body) // 2 * 2]
            return np.frombuffer(samples, "<i2").astype(np.int16), sample_rate
        position = body + size + size % 2
    raise ValueError("espeak-ng output has no data chunk")


def resample(waveform: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Float waveform (n,) at `orig_rate` -> (ceil(n * new / orig),) at `new_rate` (polyphase filter)."""
    divisor = math.gcd(orig_rate, new_rate)
    return resample_poly(waveform, new_rate // divisor, orig_rate // divisor)


def render_utterance(spec: UtteranceSpec, *, executable: str | None = None) -> np.ndarray:
    """The int16 samples (n,) at SAMPLE_RATE of `spec`: synthesized, resampled, noised, quantized."""
    raw, raw_rate = synthesize(
        spec.text, speaker_id=spec.speaker_id, rate=spec.rate, pitch=spec.pitch, executable=executable
    )
    audio = resample(raw.astype(np.float64) / 32768.0, raw_rate)  # (n16,) in about [-1, 1]
    if spec.snr_db is not None:
        power = float(np.mean(audio**2))
        std = math.sqrt(power / 10.0 ** (spec.snr_db / 10.0))
        audio = audio + np.random.default_rng(spec.noise_seed).normal(0.0, std, audio.shape)
    return np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


# ---------------------------------------------------------------- dataset


def build_speech(
    directory: str | Path,
    *,
    train_size: int = 5000,
    validation_size: int = 500,
    test_size: int = 1000,
    seed: int = 0,
    digit_fraction: float = 0.5,
    rate: tuple[int, int] = RATE,
    pitch: tuple[int, int] = PITCH,
    noise_snr_db: tuple[float, float] | None = NOISE_SNR_DB,
) -> DatasetDict:
    """Synthesize the espeak-ng speech utterances as WAV files under `directory` (see the module doc).

    Returns train/validation/test splits whose ``audio`` column is relative to `directory`.
    """
    sizes = {"train": train_size, "validation": validation_size, "test": test_size}
    for split, size in sizes.items():
        if size < 1:
            raise ValueError(f"{split}_size={size} must be >= 1")
    if not 0.0 <= digit_fraction <= 1.0:
        raise ValueError(f"digit_fraction={digit_fraction} must be in [0, 1]")
    if not 80 <= rate[0] <= rate[1] <= 450:
        raise ValueError(f"rate={rate} must be an ordered (low, high) in [80, 450] words per minute")
    if not 0 <= pitch[0] <= pitch[1] <= 99:
        raise ValueError(f"pitch={pitch} must be an ordered (low, high) in [0, 99]")
    if noise_snr_db is not None and not noise_snr_db[0] <= noise_snr_db[1]:
        raise ValueError(f"noise_snr_db={noise_snr_db} must be an ordered (low, high) or None")
    executable = espeak_executable()
    check_espeak(executable)
    directory = Path(directory)
    splits = {}
    for split, size in sizes.items():
        folder = directory / "audio" / split
        folder.mkdir(parents=True, exist_ok=True)
        columns: dict[str, list[Any]] = {name: [] for name in FEATURES}
        specs = utterance_specs(
            split,
            size,
            seed=seed,
            digit_fraction=digit_fraction,
            rate=rate,
            pitch=pitch,
            noise_snr_db=noise_snr_db,
        )
        for i, spec in enumerate(specs):
            relative = f"audio/{split}/{i:06d}.wav"
            samples = render_utterance(spec, executable=executable)  # (n,) int16
            wavfile.write(directory / relative, SAMPLE_RATE, samples)
            columns["audio"].append(relative)
            columns["text"].append(spec.text)
            columns["speaker_id"].append(spec.speaker_id)
            columns["id"].append(f"{split}-{i:06d}")
            columns["utterance_type"].append(spec.utterance_type)
            columns["voice"].append(spec.voice)
            columns["duration"].append(len(samples) / SAMPLE_RATE)
        splits[split] = Dataset.from_dict(columns, features=FEATURES)
    return DatasetDict(splits)
