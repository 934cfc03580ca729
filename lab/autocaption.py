"""Auto-captioning rules, pure: which tags a WD14-style tagger's scores keep, and the
lab's post-processing of any first-pass caption (tagger tags or a captioner sentence).

The order of :func:`apply_rules` follows the seed guides: tags spelled the way the base
family expects (``_`` → space, kaomoji such as ``^_^`` kept), blacklisted tags dropped,
tags implied by a more specific tag dropped ("german shepherd" implies "dog": keeping
both spreads the training between them), at most ``max_tags`` tags (most confident
first), then the trigger word first and the class token second (:func:`enforce_trigger`).
The models themselves live in :mod:`trainer.captioners`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lab.captions import enforce_trigger, split_tags

__all__ = [
    "BUILTIN_IMPLICATIONS",
    "KAOMOJI",
    "BaseStyle",
    "CaptionRules",
    "CaptionSettings",
    "CaptionerConfig",
    "CaptionerKind",
    "Implications",
    "Prediction",
    "TagCategory",
    "apply_rules",
    "parse_implications",
    "rules_for",
    "select_tags",
    "style_for_base",
    "tag_key",
    "tag_text",
]


class CaptionerKind(StrEnum):
    TAGGER = "tagger"
    """An ONNX image → tag-probability model of the WD14 family (booru tags)."""
    CAPTIONER = "captioner"
    """A transformers image-to-text model (BLIP, Florence-2…): natural sentences."""


class TagCategory(IntEnum):
    """The ``category`` column of a WD14 ``selected_tags.csv`` (Danbooru's categories)."""

    GENERAL = 0
    CHARACTER = 4
    RATING = 9


@dataclass(frozen=True, slots=True)
class Prediction:
    """One tag of a tagger's tag list with the probability the model gave it."""

    name: str
    category: int
    score: float


def select_tags(
    predictions: Iterable[Prediction],
    *,
    general_threshold: float = 0.35,
    character_threshold: float = 0.85,
    include_rating: bool = False,
) -> list[str]:
    """The tags a tagger keeps, most confident first: character tags at or above
    ``character_threshold`` (they name *who* it is, so a stricter bar), then general
    tags at or above ``general_threshold``, then (optionally) the single most likely
    rating tag. Names are returned as the CSV spells them (underscores and all)."""
    general: list[Prediction] = []
    character: list[Prediction] = []
    rating: list[Prediction] = []
    for p in predictions:
        if p.category == TagCategory.CHARACTER:
            if p.score >= character_threshold:
                character.append(p)
        elif p.category == TagCategory.RATING:
            rating.append(p)
        elif p.score >= general_threshold:
            general.append(p)
    ordered = sorted(character, key=lambda p: -p.score) + sorted(general, key=lambda p: -p.score)
    if include_rating and rating:
        ordered.append(max(rating, key=lambda p: p.score))
    return [p.name for p in ordered]


# Danbooru's kaomoji tags: their underscores are the face, not word separators
# (the same list kohya sd-scripts' WD14 script keeps with --remove_underscore).
KAOMOJI = frozenset([
    "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
    ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
])  # fmt: skip


def tag_text(tag: str, *, replace_underscores: bool = True) -> str:
    """``tag`` spelled for the caption: ``long_hair`` → ``long hair`` (kaomoji kept)."""
    tag = tag.strip()
    if replace_underscores and tag not in KAOMOJI:
        tag = " ".join(tag.replace("_", " ").split())
    return tag


def tag_key(tag: str) -> str:
    """The comparison key of a tag: case, underscores and spacing do not matter."""
    return " ".join(tag.replace("_", " ").split()).casefold() if tag not in KAOMOJI else tag


class Implications:
    """Tag implications (``german shepherd`` → ``dog``), followed transitively."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._direct: dict[str, set[str]] = {}
        for antecedent, consequent in pairs:
            self.add(antecedent, consequent)

    def add(self, antecedent: str, consequent: str) -> None:
        a, c = tag_key(antecedent), tag_key(consequent)
        if a and c and a != c:
            self._direct.setdefault(a, set()).add(c)

    def __len__(self) -> int:
        return sum(len(v) for v in self._direct.values())

    def implied_by(self, tag: str) -> set[str]:
        """Every tag key that ``tag`` implies, directly or through others."""
        seen: set[str] = set()
        todo = list(self._direct.get(tag_key(tag), ()))
        while todo:
            key = todo.pop()
            if key not in seen:
                seen.add(key)
                todo.extend(self._direct.get(key, ()))
        return seen

    def merged(self, other: Implications) -> Implications:
        both = Implications()
        for source in (self, other):
            for a, cs in source._direct.items():
                both._direct.setdefault(a, set()).update(cs)
        return both

    def drop_implied(self, tags: list[str]) -> list[str]:
        """``tags`` without those another tag of the list implies (order kept)."""
        implied: set[str] = set()
        for tag in tags:
            implied |= self.implied_by(tag)
        return [tag for tag in tags if tag_key(tag) not in implied]


def parse_implications(text: str) -> Implications:
    """Implications from CSV text: Danbooru's ``tag_implications`` export (columns
    ``antecedent_name``, ``consequent_name``, optional ``status`` — only ``active``
    rows count) or plain ``antecedent,consequent`` rows; ``#`` starts a comment."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if not rows:
        return Implications()
    header = [cell.strip().lower() for cell in rows[0]]
    if "antecedent_name" in header and "consequent_name" in header:
        a, c = header.index("antecedent_name"), header.index("consequent_name")
        s = header.index("status") if "status" in header else None
        return Implications(
            (row[a], row[c])
            for row in rows[1:]
            if len(row) > max(a, c) and (s is None or row[s].strip() in ("active", ""))
        )
    return Implications((row[0], row[1]) for row in rows if len(row) >= 2)


# A small built-in table of common Danbooru implications a WD14 tagger produces
# together; operators add Danbooru's full export with `CaptionSettings.implications`.
BUILTIN_IMPLICATIONS = parse_implications(
    """
german_shepherd,dog
golden_retriever,dog
shiba_inu,dog
siberian_husky,dog
corgi,dog
dog_ears,animal_ears
cat_ears,animal_ears
fox_ears,animal_ears
wolf_ears,animal_ears
rabbit_ears,animal_ears
dog_tail,tail
cat_tail,tail
fox_tail,tail
wolf_tail,tail
very_long_hair,long_hair
absurdly_long_hair,very_long_hair
black_thighhighs,thighhighs
white_thighhighs,thighhighs
pleated_skirt,skirt
miniskirt,skirt
white_shirt,shirt
black_shirt,shirt
"""
)


@dataclass(frozen=True, slots=True)
class CaptionRules:
    """How a first-pass caption becomes the lab's caption for one ticket."""

    trigger: str | None = None
    class_token: str | None = None
    blacklist: frozenset[str] = frozenset()
    """Tag keys (see :func:`tag_key`) never written."""
    max_tags: int | None = None
    """Tags kept after the trigger word and class token (most confident first)."""
    replace_underscores: bool = True
    implications: Implications = field(default_factory=lambda: BUILTIN_IMPLICATIONS)

    @classmethod
    def build(
        cls,
        *,
        trigger: str | None = None,
        class_token: str | None = None,
        blacklist: Iterable[str] = (),
        max_tags: int | None = None,
        replace_underscores: bool = True,
        extra_implications: Implications | None = None,
    ) -> CaptionRules:
        implications = BUILTIN_IMPLICATIONS
        if extra_implications is not None:
            implications = implications.merged(extra_implications)
        return cls(
            trigger=trigger.strip() if trigger and trigger.strip() else None,
            class_token=class_token.strip() if class_token and class_token.strip() else None,
            blacklist=frozenset(tag_key(t) for t in blacklist if t.strip()),
            max_tags=max_tags,
            replace_underscores=replace_underscores,
            implications=implications,
        )


def apply_rules(tags: Iterable[str], rules: CaptionRules) -> list[str]:
    """The lab's caption of a first pass (``tags`` most confident first; a captioner's
    sentence is one tag, or several when it has commas)."""
    kept: list[str] = []
    seen: set[str] = set()
    for raw in tags:
        for tag in split_tags(raw):
            text = tag_text(tag, replace_underscores=rules.replace_underscores)
            key = tag_key(text)
            if text and key not in seen and key not in rules.blacklist:
                seen.add(key)
                kept.append(text)
    kept = rules.implications.drop_implied(kept)
    if rules.max_tags is not None:
        head = {tag_key(t) for t in (rules.trigger, rules.class_token) if t}
        kept = [t for t in kept if tag_key(t) not in head][: rules.max_tags]
    if rules.trigger:
        kept = enforce_trigger(kept, rules.trigger, rules.class_token)
    elif rules.class_token:
        kept = [rules.class_token, *(t for t in kept if tag_key(t) != tag_key(rules.class_token))]
    return kept


@dataclass(frozen=True, slots=True)
class BaseStyle:
    """How captions for a named base are best written."""

    kind: CaptionerKind
    """SD1.5/SDXL base models learned from natural sentences; anime and furry bases
    (Pony, Illustrious, NoobAI) from booru/e621 tags."""
    replace_underscores: bool = True
    """Booru tags are prompted with spaces (``long hair``) on the bases the lab knows."""


_STYLES: dict[str, BaseStyle] = {
    "sd15": BaseStyle(CaptionerKind.CAPTIONER),
    "sdxl": BaseStyle(CaptionerKind.CAPTIONER),
    "pony": BaseStyle(CaptionerKind.TAGGER),
    "illustrious": BaseStyle(CaptionerKind.TAGGER),
    "noobai": BaseStyle(CaptionerKind.TAGGER),
}


def style_for_base(base: str, keep_underscores: Iterable[str] = ()) -> BaseStyle:
    """The caption style of a named base (unknown bases: sentences, spaces);
    ``keep_underscores`` names bases the operator wants spelled ``long_hair``."""
    name = base.strip().lower()
    style = _STYLES.get(name, BaseStyle(CaptionerKind.CAPTIONER))
    if name in {b.strip().lower() for b in keep_underscores}:
        style = BaseStyle(style.kind, replace_underscores=False)
    return style


class CaptionerConfig(BaseModel):
    """One auto-captioning model an operator configured (by local path; a hub id only
    with ``allow_download`` and network access)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: CaptionerKind
    model: str
    """Tagger: a ``.onnx`` file or a folder with ``model.onnx`` and ``selected_tags.csv``.
    Captioner: a transformers folder (``config.json``, processor, weights) or a hub id."""
    tags_csv: Path | None = None
    """Tagger tag list; defaults to ``selected_tags.csv`` beside the model."""
    general_threshold: float = Field(0.35, ge=0, le=1)
    character_threshold: float = Field(0.85, ge=0, le=1)
    include_rating: bool = False
    prompt: str | None = None
    """Captioner text prompt: BLIP's conditional prefix, Florence-2's task token
    (``<MORE_DETAILED_CAPTION>``)."""
    max_new_tokens: int = Field(60, ge=1, le=1024)
    batch_size: int = Field(8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    allow_download: bool = False
    trust_remote_code: bool = False


class CaptionSettings(BaseModel):
    """The worker's auto-captioning models and the lab's post-processing rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, CaptionerConfig] = Field(default_factory=dict)
    """Name → model, e.g. ``{"wd14": {"kind": "tagger", "model": "/models/wd-vit-tagger-v3"}}``."""
    default: dict[CaptionerKind, str] = Field(default_factory=dict)
    """Which named model a request for a kind uses (else the first of that kind)."""
    blacklist: tuple[str, ...] = ()
    max_tags: int | None = Field(30, ge=1)
    implications: Path | None = None
    """A CSV of more implications (Danbooru's export or ``antecedent,consequent``)."""
    keep_underscores: tuple[str, ...] = ()
    """Named bases whose tags keep Danbooru's underscores."""

    def resolve(self, kind: CaptionerKind | None, name: str | None) -> tuple[str, CaptionerConfig]:
        """The (name, model) a request asks for; `KeyError` with a message if none fits."""
        if name:
            if name not in self.models:
                known = ", ".join(sorted(self.models)) or "none"
                raise KeyError(f"No captioning model named {name!r} (configured: {known}).")
            return name, self.models[name]
        wanted = [kind] if kind else [CaptionerKind.TAGGER, CaptionerKind.CAPTIONER]
        for k in wanted:
            chosen = self.default.get(k)
            if chosen in self.models:
                return chosen, self.models[chosen]
            for model_name, config in self.models.items():
                if config.kind is k:
                    return model_name, config
        what = kind.value if kind else "captioning"
        raise KeyError(f"No {what} model is configured on this worker.")

    def load_implications(self) -> Implications | None:
        if self.implications is None:
            return None
        return parse_implications(self.implications.read_text(encoding="utf-8"))


def rules_for(
    settings: CaptionSettings,
    *,
    base: str,
    trigger: str | None,
    class_token: str | None,
) -> CaptionRules:
    """The rules for one ticket (its base's spelling, its trigger and class token)."""
    style = style_for_base(base, settings.keep_underscores)
    return CaptionRules.build(
        trigger=trigger,
        class_token=class_token,
        blacklist=settings.blacklist,
        max_tags=settings.max_tags,
        replace_underscores=style.replace_underscores,
        extra_implications=settings.load_implications(),
    )
