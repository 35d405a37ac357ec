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


# A negation just before a move cancels it ("do not zoom in", "no pan, she smiles").
_NEGATED = re.compile(r"(?:\bno|\bnot|n't|\bnever|\bwithout|\bavoid(?:s|ing)?|\bstop)\s+(?:\w+\s+){0,2}$")

# --- Chinese ------------------------------------------------------------------------------------
# Chinese prompts (the norm for Wan, Kling and Hailuo users) name camera moves with fixed terms,
# several of them MiniMax's own bracket commands ([左移] truck left, [左摇] pan left, [推进] push
# in, [上升] pedestal up, [变焦推近] zoom in, [跟随] tracking, [固定] static). The direction is
# part of the term. No word boundaries: a term counts inside [brackets], in a clause that names
# the camera (镜头, 摄像机, 机位, 运镜), or when it is camera-only (推镜头, 变焦, 跟拍, 航拍).
_ZH_CAMERA = re.compile(r"镜头|摄像机|摄影机|相机|机位|运镜|画面")
# (type, direction, term regex, camera-only). More specific terms first.
_ZH_MOVES: list[tuple[str, str | None, str, bool]] = [
    (
        "static",
        None,
        r"^(?:固定|静止)$|固定镜头|镜头(?:保持)?(?:固定|静止|不动)|静止镜头|机位固定|不(?:要)?(?:移动|晃动)镜头|无(?:镜头)?运镜|没有(?:镜头)?运动",
        True,
    ),
    ("zoom_in", "in", r"变焦推近|变焦放大|镜头放大|zoom ?in", True),
    ("zoom_out", "out", r"变焦拉远|变焦缩小|镜头缩小", True),
    ("push_in", "in", r"推镜头|推进|推近|拉近|向前推|前推|逐渐靠近|缓缓靠近", False),
    ("pull_back", "out", r"拉镜头|拉远|后拉|后退|远离|拉开", False),
    ("orbit", "cw", r"顺时针(?:环绕|旋转|绕)", False),
    ("orbit", "ccw", r"逆时针(?:环绕|旋转|绕)", False),
    ("orbit", None, r"环绕|绕拍|360度|围绕.{0,6}旋转", False),
    ("pan", "left", r"向?左摇|左摇镜头|向左(?:转动|扫)", False),
    ("pan", "right", r"向?右摇|右摇镜头|向右(?:转动|扫)", False),
    ("tilt", "up", r"向?上摇|仰拍上摇|向上(?:倾斜|扫)", False),
    ("tilt", "down", r"向?下摇|向下(?:倾斜|扫)", False),
    ("truck", "left", r"向?左(?:移|平移)", False),
    ("truck", "right", r"向?右(?:移|平移)", False),
    ("pedestal", "up", r"(?<!画面)上升|向上(?:移动|升)", False),
    ("pedestal", "down", r"下降|向下(?:移动|降)", False),
    ("crane", None, r"摇臂|升降镜头|航拍(?:上升|镜头)?", True),
    ("tracking", None, r"跟拍|跟随镜头|跟镜头", True),
    ("tracking", None, r"跟随", False),
    ("roll", None, r"荷兰角|镜头(?:翻滚|旋转)", True),
    ("rack_focus", None, r"焦点转移|移焦|转焦", True),
    ("dolly", None, r"移动镜头|移镜头", True),
]
_ZH_INTENSITY = [
    (r"缓慢|缓缓|慢慢|慢速|轻微|轻轻|微微|轻柔|逐渐|徐徐", 0.25),
    (r"平稳|匀速|稳定", 0.5),
    (r"快速|迅速|急速|猛然|突然|飞快|极速", 0.85),
]
_ZH_NEGATION = re.compile(r"(?:不要|不|别|没有|无|禁止|避免|勿)[^，。；,;]{0,3}$")
_BRACKETS = re.compile(r"\[([^\]]{1,40})\]")
_ZH_CLAUSE_SPLIT = re.compile(r"[，。；！？、,.;!?\n]+|然后|同时|接着|随后")


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
            if kind != "static" and _NEGATED.search(clause[: m.start("verb")]):
                taken.append((m.start("verb"), m.end()))
                break
            taken.append((m.start("verb"), m.end()))
            word = m.group("dir") or _later_direction(kind, clause[m.end() :])
            move = CameraMove(type=kind, direction=_direction(kind, word), intensity=_intensity(clause))  # type: ignore[arg-type]
            found.append(Found(move=move, phrase=m.group(0).strip()))
            break
    return found


def _zh_clause_moves(clause: str, bracketed: bool = False) -> list[Found]:
    """A Chinese clause's camera moves, each term once, negated terms dropped. `bracketed`: a
    term of a MiniMax camera command ("[左移,上摇]"), a camera move whatever it says."""
    found: list[tuple[int, Found]] = []
    taken: list[tuple[int, int]] = []
    names_camera = bracketed or bool(_ZH_CAMERA.search(clause))
    speed = next((v for pattern, v in _ZH_INTENSITY if re.search(pattern, clause)), 0.5)
    for kind, direction, term, camera_only in _ZH_MOVES:
        for m in re.finditer(term, clause):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            if not (camera_only or names_camera):
                continue
            taken.append((m.start(), m.end()))
            if kind != "static" and _ZH_NEGATION.search(clause[: m.start()]):
                continue
            move = CameraMove(type=kind, direction=direction, intensity=speed)  # type: ignore[arg-type]
            found.append((m.start(), Found(move=move, phrase=m.group(0))))
    return [f for _, f in sorted(found, key=lambda x: x[0])]


def has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def camera_moves(prompt: str) -> list[Found]:
    """Every camera move in the prompt, in order of appearance (English and Chinese)."""
    out: list[Found] = []
    for clause in _CLAUSE_SPLIT.split(prompt.lower()):
        if clause and clause.strip():
            out.extend(_clause_moves(clause))
    if has_chinese(prompt):
        text = prompt.lower()
        for command in _BRACKETS.findall(text):  # MiniMax's "[左移,上摇]": each term a move
            for term in re.split(r"[,，、]", command):
                out.extend(_zh_clause_moves(term.strip(), bracketed=True))
        for clause in _ZH_CLAUSE_SPLIT.split(_BRACKETS.sub(" ", text)):
            if clause.strip():
                out.extend(_zh_clause_moves(clause))
    return out


def camera_move(prompt: str, explicit: CameraMove | None = None) -> CameraMove | None:
    """The request's camera move: the structured field when given, else the prompt's first."""
    if explicit is not None:
        return explicit
    moves = camera_moves(prompt)
    return moves[0].move if moves else None
