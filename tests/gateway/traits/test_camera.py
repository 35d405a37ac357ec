"""The camera lexicon over a table of prompts: strong camera language, subject motion that must
not fire, and scene descriptions with no motion at all."""

from __future__ import annotations

import pytest

from adapters.base import CameraMove
from gateway.traits.camera import camera_move, camera_moves

CAMERA = [
    ("Slow push in on her face", "push_in", "in", 0.25),
    ("The camera slowly orbits the statue clockwise", "orbit", "cw", 0.25),
    ("Tracking shot of a runner on the beach", "tracking", None, 0.5),
    ("Pan left across the skyline at dusk", "pan", "left", 0.5),
    ("Rapid zoom in on the eyes", "zoom_in", "in", 0.85),
    ("Gentle dolly out from the table", "pull_back", "out", 0.25),
    ("crane shot rising above the city", "crane", None, 0.5),
    ("rack focus from the flower to the woman", "rack_focus", None, 0.5),
    ("locked-off shot of a waterfall, mist drifting", "static", None, 0.5),
    ("Whip pan to the door", "pan", None, 0.85),
    ("The camera pulls back slowly to reveal the valley", "pull_back", "out", 0.25),
    ("The camera tracks alongside the car", "tracking", None, 0.5),
    ("Tilt up from the street to the rooftops", "tilt", "up", 0.5),
    ("A man reads; the camera arcs around him", "orbit", None, 0.5),
    ("Zoom out to show the whole orchestra", "zoom_out", "out", 0.5),
]

SUBJECT_MOTION = [
    "hair blowing in the wind",
    "waves crashing against the rocks",
    "She tilts her head and smiles",
    "The moon orbits the planet",
    "She pulls back her hair",
    "she pulls back from the window",
    "A pan of eggs sizzling on the stove",
    "The dog runs and jumps into the lake",
    "A man zooms past on a bike",
    "Leaves fall slowly while the river flows",
    "The crane lifts a steel beam",  # the machine, not the shot
]


@pytest.mark.parametrize(("prompt", "kind", "direction", "intensity"), CAMERA)
def test_camera_language_is_found(prompt: str, kind: str, direction: str | None, intensity: float) -> None:
    move = camera_move(prompt)
    assert move is not None, prompt
    assert (move.type, move.direction, move.intensity) == (kind, direction, intensity)


@pytest.mark.parametrize("prompt", SUBJECT_MOTION)
def test_subject_motion_is_not_a_camera_move(prompt: str) -> None:
    assert camera_moves(prompt) == [], prompt


def test_several_moves_are_all_found_in_order() -> None:
    found = camera_moves("Camera pans right, then tilts up to reveal the sky, then a slow zoom in")
    assert [f.move.type for f in found] == ["pan", "tilt", "zoom_in"]


def test_the_structured_field_wins_over_the_prompt() -> None:
    explicit = CameraMove(type="orbit", direction="ccw", intensity=0.9)
    assert camera_move("slow push in", explicit) == explicit
