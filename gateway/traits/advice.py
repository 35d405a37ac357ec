"""Prompt advice: warnings that tell the user how to get a better clip, never refusals.

They follow how image-to-video prompts work best: the image already shows the scene, so the
prompt should say what moves and how; one clear motion beats several competing ones; a
portrait keeps its identity under gentle expression changes, not dramatic ones; models are
trained on >= 1024 px inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_STEMS = (
    "mov|walk|run|turn|smil|blink|wav|sway|blow|flow|fall|fell|ris|rose|drift|spin|danc|jump|fly|flie|flew|swim|ripple|"
    "flicker|flutter|rustl|crash|roll|glid|nod|laugh|breath|look|rais|lift|open|clos|pour|splash|swirl|shak|trembl|"
    "bounc|float|rotat|reach|step|lean|tilt|pan|zoom|push|pull|orbit|track|follow|sink|grow|shrink|melt|burn|glow|"
    "sparkl|shimmer|twinkl|pulse|puls|wag|stretch|climb|sit|stand|kneel|hug|kiss|talk|sing|speak|shout|cry|chew|"
    "drink|eat|throw|catch|kick|ride|driv|sail|wander|stroll|march|hover|dart|dive|leap|crawl|slid|shift|sweep|"
    "swing|spill|rain|snow|pour|flap|unfold|emerge|approach|advance|retreat|dolly|crane|arc|circl|wobbl|ripp|stir|"
    "billow|flash|fad|dissolv|chang|transform|blossom|bloom|morph|wink|gaze|glanc|frown|grin|sigh|yawn|bow|shrug"
)
_MOTION = re.compile(rf"\b(?:{_STEMS})(?:e|es|s|ing|ed|d|ning|ped|ted|ting|ling|led|ged|ging)?\b", re.IGNORECASE)
_DRAMATIC = re.compile(
    r"\b(?:burst(?:s|ing)? into (?:tears|laughter)|scream(?:s|ing)?|sob(?:s|bing)?|wail(?:s|ing)?|"
    r"(?:goes|turns|changes) from \w+ to \w+|expression (?:changes|shifts|transforms) (?:dramatically|completely)|"
    r"furious(?:ly)?|terrified|horrified|rage|enraged|hysterical(?:ly)?|shocked|screaming)\b",
    re.IGNORECASE,
)
# Chinese: no word boundaries, so whole motion words (verbs of what moves in a clip).
_ZH_MOTION = re.compile(
    "走|跑|奔|转身|转头|回头|微笑|笑|眨眼|挥手|招手|摇摆|摆动|飘|流动|流淌|落下|飘落|升起|飞|游|跳|旋转|点头|"
    "摇头|呼吸|看向|望向|抬头|低头|抬起|举起|打开|关上|倒入|溅|漂浮|伸手|站起|坐下|说话|唱歌|哭|吃|喝|扔|"
    "踢|骑|开车|航行|移动|闪烁|吹动|吹拂|晃动|波动|涌动|翻滚|盛开|绽放|融化|燃烧|发光|飘动|飞舞|舞动|跳舞|"
    "奔跑|行走|漫步|拥抱|亲吻|挥舞|拍打|滚动|滑动|下雨|下雪|起伏|荡漾|摇曳|推进|拉远|环绕"
)
_ZH_DRAMATIC = re.compile("尖叫|嚎啕大哭|号啕大哭|暴怒|勃然大怒|惊恐万分|歇斯底里|狂笑|大哭|怒吼|表情(?:剧烈|彻底)变化")
MIN_GOOD_WIDTH = 1024


def prompt_warnings(prompt: str, traits: Mapping[str, Any], *, loops_natively: bool) -> list[str]:
    """Advice for this request. Reads `portrait` (and so runs the face detector) only when the
    prompt asks for a dramatic expression."""
    out: list[str] = []
    motions = len(_MOTION.findall(prompt)) + len(_ZH_MOTION.findall(prompt))
    if motions == 0 and not traits.get("camera_move"):
        out.append(
            "prompt: it describes the scene, not the motion. The image already shows the scene; say what "
            "moves and how (e.g. 'she turns toward the camera and smiles, slow push in')."
        )
    if (traits.get("camera_moves") or 0) >= 2 or motions >= 5:
        out.append(
            "prompt: several competing motions. Image-to-video models follow one clear subject motion and at "
            "most one camera move best; keep the one that matters."
        )
    if (_DRAMATIC.search(prompt) or _ZH_DRAMATIC.search(prompt)) and traits.get("portrait"):
        out.append(
            "prompt: a dramatic expression change asked of a portrait tends to distort the face; ask for a "
            "gentle change (a slight smile, a slow blink) to keep the likeness."
        )
    width = traits.get("input_width") or 0
    if width and width < MIN_GOOD_WIDTH:
        out.append(
            f"image: {width} px wide; inputs under {MIN_GOOD_WIDTH} px wide lose detail. Send a larger image "
            "if you have one."
        )
    if traits.get("loop") and not loops_natively:
        out.append("loop: the model cannot loop, so the gateway makes the clip loop seamlessly (crossfade).")
    return out
