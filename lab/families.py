"""Base-model families and their dataset and resolution defaults (from the seed guides)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BaseFamily(StrEnum):
    SD15 = "sd15"
    SDXL = "sdxl"


@dataclass(frozen=True, slots=True)
class FamilyDefaults:
    family: BaseFamily
    resolution: int
    """Training resolution (square side) the guides use for this family."""
    min_images: int
    """Below this, a dataset may not leave the DATASET phase."""
    comfortable_images: int
    """Below this, the dataset report warns that results may be weak."""
    min_side: int
    """Shortest image side under which an upload is too small to train on."""
    kohya_version: str
    """The `ss_base_model_version` value A1111 and Civitai read."""


FAMILIES: dict[BaseFamily, FamilyDefaults] = {
    BaseFamily.SD15: FamilyDefaults(BaseFamily.SD15, 512, 15, 25, 384, "sd_v1"),
    BaseFamily.SDXL: FamilyDefaults(BaseFamily.SDXL, 1024, 12, 25, 768, "sdxl_base_v1-0"),
}

# Named bases people ask for by name; each trains as a variant of its family.
NAMED_BASES: dict[str, BaseFamily] = {
    "sd15": BaseFamily.SD15,
    "sdxl": BaseFamily.SDXL,
    "pony": BaseFamily.SDXL,
    "illustrious": BaseFamily.SDXL,
    "noobai": BaseFamily.SDXL,
}


def family_of(base: str) -> BaseFamily:
    """The family a named base (``pony``, ``sd15``…) trains as; raises ``KeyError``."""
    return NAMED_BASES[base.strip().lower()]
