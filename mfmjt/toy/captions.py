"""Captions: one clause per sounding object in order of its first sound, off-screen sounds, background."""

from __future__ import annotations

import math

from mfmjt.toy.specs import ContinuousSound, ObjectSpec, SoundEvent
from mfmjt.toy.vocabulary import BACKGROUNDS, COLOURS, COUNT_WORDS, OFFSCREEN_SOUNDS, SHAPES


def caption_vocabulary() -> list[str]:
    """Every word a caption can contain, sorted."""
    words = set(COLOURS) | set(SHAPES)
    phrases = [
        *BACKGROUNDS.values(),
        *OFFSCREEN_SOUNDS.values(),
        *COUNT_WORDS.values(),
        "a an the and then falls hits ground bounces several times is thrown lands rolls along floor",
        "wall walls hovers hums flies across humming still room quiet silence",
    ]
    for phrase in phrases:
        words.update(phrase.replace(",", " ").split())
    return sorted(words)


# --------------------------------------------------------------------------------------------------
# Scene generation
# --------------------------------------------------------------------------------------------------


def _count_phrase(n: int) -> str:
    return COUNT_WORDS.get(n, "several times")


def caption(
    objects: list[ObjectSpec],
    events: list[SoundEvent],
    continuous: list[ContinuousSound],
    offscreen: list[SoundEvent],
    background: str | None,
) -> str:
    """The caption of a scene from its objects, their events and sustained sounds."""
    clauses: list[tuple[float, str]] = []
    mentioned: set[frozenset[int]] = set()
    for o in sorted(
        objects, key=lambda ob: min([e.time for e in events if e.object_id == ob.id], default=math.inf)
    ):
        mine = [e for e in events if e.object_id == o.id]
        srcs = {c.kind: c for c in continuous if c.object_id == o.id}
        subject = f"{'an' if o.colour[0] in 'aeiou' else 'a'} {o.name}"
        if o.motion == "hover":
            if "hum" in srcs:
                verb = "hovers and hums" if srcs["hum"].start == 0.0 else "flies across, humming"
                clauses.append((srcs["hum"].start, f"{subject} {verb}"))
            continue
        n_floor = sum(e.kind == "floor" for e in mine)
        n_wall = sum(e.kind == "wall" for e in mine)
        partners = [e.other_id for e in mine if e.kind == "object"]
        parts: list[str] = []
        if o.motion == "roll":
            parts.append("rolls along the floor")
        elif n_floor:
            lead = "is thrown and " if o.motion == "throw" else ""
            if n_floor == 1:
                parts.append(lead + ("lands" if o.motion == "throw" else "falls and hits the ground"))
            else:
                parts.append(f"{lead}bounces {_count_phrase(n_floor)}")
            if "roll" in srcs:
                parts.append("rolls")
        if n_wall:
            parts.append("hits the wall" if n_wall == 1 else "hits the walls")
        fresh = [p for p in partners if frozenset((o.id, p)) not in mentioned]
        if fresh:  # name each colliding pair once, in the clause of the object listed first
            mentioned.add(frozenset((o.id, fresh[0])))
            parts.append(f"hits the {objects[fresh[0]].name}")
        if parts:
            start = min([e.time for e in mine] + [c.start for c in srcs.values()])
            body = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
            clauses.append((start, f"{subject} {body}"))
    clauses.sort(key=lambda c: c[0])
    if offscreen:
        clauses.append((offscreen[0].time, OFFSCREEN_SOUNDS[offscreen[0].material]))
    text = ", ".join(c[1] for c in clauses) if clauses else "a quiet room"
    if background is not None:
        text += ", " + BACKGROUNDS[background] if clauses else " " + BACKGROUNDS[background]
    return text
