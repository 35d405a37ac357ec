"""Camera language in motion prompts: which move, which way, how hard.

A phrase counts as a camera move only when it is written the way cinematographers write one:
as an order at the start of a clause ("Slow push in on her face"), with the camera or the
shot as its subject ("the camera orbits the statue", "tracking shot of a runner"), or with a
verb that only cameras do ("zoom in", "dolly out", "rack focus"). So "hair blowing in the
wind", "she tilts her head", "waves crashing" or "the moon orbits the planet" are subject
motion and do not fire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapters.base import CameraMove

# Speed words -> intensity (0..1).
_INTENSITY = [
    (
        r"barely|very slow(?:ly)?|subtle|subtly|slight(?:ly)?|imperceptibl[ey]|gentl[ey]|slow(?:ly)?|soft(?:ly)?|gradual(?:ly)?|lazy|lazily|creeping",
        0.25,
    ),
    (r"steady|steadily|smooth(?:ly)?|moderate(?:ly)?|continuous(?:ly)?", 0.5),
    (
        r"fast|quick(?:ly)?|rapid(?:ly)?|swift(?:ly)?|dramatic(?:ally)?|sudden(?:ly)?|aggressive(?:ly)?|whip|crash|snap",
        0.85,
    ),
]

_DIR = r"(?:\s+(?:to\s+the\s+|towards?\s+the\s+|to\s+)?(?P<dir>left|right|up|upward|upwards|down|downward|downwards|in|out|inward|outward|forward|back|backward|clockwise|counter-?clockwise|anti-?clockwise))?"

# (type, regex of the verb phrase). Order matters: more specific phrases first.
_MOVES: list[tuple[str, str]] = [
    (
        "static",
        r"static (?:camera|shot|frame)|locked[- ]off(?: camera| shot)?|fixed camera|camera (?:holds|stays|remains) (?:still|static|steady|fixed)|(?:the )?camera does not move|no camera move(?:ment)?|hold(?:s)? (?:still|steady) on",
    ),
    ("rack_focus", r"rack[- ]focus(?:es|ing)?|focus pull|pull(?:s)? focus"),
    (
        "push_in",
        r"push(?:es|ing)?[- ](?:in|forward)|dolly(?:ing)?[- ]in|dollies in|move(?:s)? in(?:to)? (?:close|closer)|creep(?:s|ing)? (?:in|forward)",
    ),
    (
        "pull_back",
        r"pull(?:s|ing)?[- ](?:back|out)(?!\s+(?:her|his|their|its|the|a|an)\b)|dolly(?:ing)?[- ]out|dollies out|dolly(?:ing)? back|back(?:s|ing)? away|reveal(?:s|ing)? shot",
    ),
    ("zoom_in", r"zoom(?:s|ing)?[- ]in|crash zoom|snap zoom"),
    ("zoom_out", r"zoom(?:s|ing)?[- ]out"),
    (
        "orbit",
        r"orbit(?:s|ing)?|arc(?:s|ing)?(?= (?:around|left|right|shot))|circl(?:es|ing) around|360(?:-degree)? (?:shot|turn|rotation)|revolv(?:es|ing) around",
    ),
    ("pan", r"(?:whip[- ])?pan(?:s|ning|ned)?(?! of\b)"),
    ("tilt", r"tilt(?:s|ing|ed)?"),
    (
        "crane",
        r"crane(?:s|ing)?(?: shot)?|boom(?:s|ing)?|jib(?:s|bing)?|aerial rise|rises? above|drone (?:shot|rise|ascend)",
    ),
    (
        "tracking",
        r"tracking(?: shot)?|track(?:s)?(?= (?:alongside|with|behind|beside|the|her|him|them|left|right))|follow(?:s|ing)? (?:shot|cam)|steadicam",
    ),
    ("truck", r"truck(?:s|ing)?(?= (?:left|right))"),
    ("pedestal", r"pedestal(?:s|ing)?"),
    ("roll", r"dutch (?:tilt|angle)|barrel roll|camera rolls?"),
    ("dolly", r"dolly(?:ing)?|dollies"),
]

_CAMERA_SUBJECT = (
    r"(?:the\s+)?(?:camera|cam|shot|lens|view|viewpoint|pov|we)\s+(?:\w+ly\s+)?(?:begins to\s+|starts to\s+|then\s+)?"
)
_LEAD = r"(?:(?:then|and|with|now)\s+)?(?:(?:\w+ly|slow|gentle|subtle|slight|fast|quick|rapid|smooth|steady|dramatic|sudden|whip|crash|snap|long|wide|close|low|high|cinematic|handheld)[\s,-]+){0,3}"
# Verbs that only a camera does: these count anywhere in a clause.
_CAMERA_ONLY = {"static", "rack_focus", "push_in", "zoom_in", "zoom_out", "tracking", "dolly", "roll"}
# Everything else (pull back, orbit, pan, tilt, crane, ...) is also something people and things
# do ("she pulls back", "the moon orbits"), so it needs the camera as subject or the order form.

_CLAUSE_SPLIT = re.compile(
    r"[.;!?\n]+|,\s*(?:and\s+|while\s+|as\s+|then\s+)?|\s+(?:while|as|then|and then|before|after)\s+"
)


@dataclass(frozen=True)
class Found:
    move: CameraMove
    phrase: str


def _direction(kind: str, word: str | None) -> str | None:
    if word is None:
        return {"push_in": "in", "zoom_in": "in", "pull_back": "out", "zoom_out": "out"}.get(kind)
    w = word.lower().replace("-", "")
    if w in ("counterclockwise", "anticlockwise"):
        return "ccw"
    if w == "clockwise":
        return "cw"
    return {
        "upward": "up",
        "upwards": "up",
        "downward": "down",
        "downwards": "down",
        "inward": "in",
        "forward": "in",
        "outward": "out",
        "back": "out",
        "backward": "out",
    }.get(w, w)


_LATER = {
    "orbit": r"clockwise|counter-?clockwise|anti-?clockwise|to the left|to the right",
    "pan": r"to the left|to the right|leftwards?|rightwards?",
    "tilt": r"upwards?|downwards?",
}


def _later_direction(kind: str, rest: str) -> str | None:
    """A direction a few words after the verb ("orbits the statue clockwise")."""
    pattern = _LATER.get(kind)
    m = re.search(rf"\b({pattern})\b", rest) if pattern else None
    if m is None:
        return None
    return m.group(1).removeprefix("to the ").removesuffix("wards").removesuffix("ward")


def _intensity(clause: str) -> float:
    for pattern, value in _INTENSITY:
        if re.search(rf"\b(?:{pattern})\b", clause):
            return value
    return 0.5


def _clause_moves(clause: str) -> list[Found]:
    found: list[Found] = []
    taken: list[tuple[int, int]] = []
    for kind, verb in _MOVES:
        for lead in ("anywhere", "subject", "start"):
            if lead == "anywhere" and kind not in _CAMERA_ONLY:
                continue
            prefix = {"anywhere": r"\b", "subject": _CAMERA_SUBJECT, "start": r"^\s*" + _LEAD}[lead]
            m = re.search(prefix + rf"(?P<verb>{verb})\b" + _DIR, clause)
            if not m or any(a <= m.start("verb") < b for a, b in taken):
                continue
            taken.append((m.start("verb"), m.end()))
            word = m.group("dir") or _later_direction(kind, clause[m.end() :])
            move = CameraMove(type=kind, direction=_direction(kind, word), intensity=_intensity(clause))  # type: ignore[arg-type]
            found.append(Found(move=move, phrase=m.group(0).strip()))
            break
    return found


def camera_moves(prompt: str) -> list[Found]:
    """Every camera move in the prompt, in order of appearance."""
    out: list[Found] = []
    for clause in _CLAUSE_SPLIT.split(prompt.lower()):
        if clause and clause.strip():
            out.extend(_clause_moves(clause))
    return out


def camera_move(prompt: str, explicit: CameraMove | None = None) -> CameraMove | None:
    """The request's camera move: the structured field when given, else the prompt's first."""
    if explicit is not None:
        return explicit
    moves = camera_moves(prompt)
    return moves[0].move if moves else None
