"""The study file: which spec, which data, which variants, how many seeds.

Read and validated like a spec (safe YAML with positions, pydantic, located messages). Each
variant is a list of `--set` overrides; they are checked against the spec when the study is
loaded, so a misspelt layer is reported at its line in the study file before anything trains.
Paths in the file are relative to the file.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from netspec.errors import Problem, SpecError, UsageError
from netspec.spec.document import Document, read_yaml
from netspec.spec.model import Spec, load_spec, validate_as
from netspec.spec.settings import Strict

FOLDER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # names become folder names
SET_BY_THE_STUDY = {"train.seed": "seeds", "train.epochs": "epochs"}
OUTPUTS = ("results.csv", "summary.md", "curves.png")  # beside the variants' folders
MAX_SEEDS = 1000  # per variant: more is a typo, and a count becomes a list of that length
SEED_LIMIT = 2**63  # train.seed is below it


def _overrides(items: list[str]) -> list[str]:
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"must be KEY=VALUE, e.g. layers.norm1=null, got {item!r}")
        if key.strip() in SET_BY_THE_STUDY:
            raise ValueError(
                f"{key.strip()} is set by the study's `{SET_BY_THE_STUDY[key.strip()]}`; "
                "remove it from the variant"
            )
    return items


def check_seeds(seeds: int | list[int]) -> int | list[int]:
    """The study file's `seeds` and the command line's `--seeds` alike: a count is checked
    before the list it stands for is made, a list holds distinct seeds train.seed takes."""
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_SEEDS:
            raise ValueError(f"must be a count from 1 to {MAX_SEEDS}, or a list, got {seeds}")
        return seeds
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise ValueError(f"must list 1 to {MAX_SEEDS} seeds, got {len(seeds)}")
    outside = [s for s in seeds if not 0 <= s < SEED_LIMIT]
    if outside:
        raise ValueError(f"lists seed {outside[0]}; a seed is from 0 to 2**63 - 1")
    repeated = sorted(s for s, n in Counter(seeds).items() if n > 1)
    if repeated:
        raise ValueError(f"lists seed {', '.join(map(str, repeated))} more than once")
    return seeds


def _not_an_output(name: str) -> str:
    """A variant's folder sits beside the files the study writes, so it must not be one."""
    if name.lower() in OUTPUTS:
        raise ValueError(
            f"is the name of a file the study writes beside the variants' folders "
            f"({', '.join(OUTPUTS)}): rename the variant"
        )
    return name


Overrides = Annotated[list[str], AfterValidator(_overrides)]
VariantName = Annotated[str, Field(pattern=FOLDER_NAME), AfterValidator(_not_an_output)]


class Study(Strict):
    """Variants of one spec, each trained with every seed; the first variant is the baseline."""

    name: Annotated[str, Field(pattern=FOLDER_NAME)]
    description: str = ""
    spec: str = Field(description="the spec file, relative to the study file")
    data: str = Field(description="'shapes', or an image folder relative to the study file")
    epochs: Annotated[int, Field(ge=1)] | None = Field(
        None, description="default: the spec's train.epochs"
    )
    seeds: Annotated[
        Annotated[int, Field(ge=1)] | Annotated[list[int], Field(min_length=1)],
        AfterValidator(check_seeds),
    ] = Field(3, description=f"a count (seeds 0, 1, …) or a list of seeds; at most {MAX_SEEDS}")
    target_train_error: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.25, description="report the epochs each run takes to reach this training error"
    )
    variants: Annotated[dict[VariantName, Overrides], Field(min_length=1)] = Field(
        description="name: list of --set overrides, in order; the first is the baseline"
    )


@dataclass(frozen=True)
class Plan:
    """A study with everything resolved: paths, seeds, epochs, the command line's choices."""

    study: Study
    path: Path
    spec_path: Path
    data: str  # 'shapes' or a folder path
    epochs: int
    seeds: list[int]
    out: Path
    doc: Document | None = field(default=None, compare=False, repr=False)  # the study file

    @property
    def baseline(self) -> str:
        return next(iter(self.study.variants))

    def overrides(self, variant: str) -> list[str]:
        return self.study.variants[variant]

    def in_variant(self, variant: str, problem: Problem) -> Problem:
        """A problem found in a variant's spec, in the study's terms; it names the variant
        when the variant's overrides may have caused it."""
        if not self.overrides(variant):  # the spec's own, or the data's
            return Problem(problem.where, study_terms(problem.message), problem.context)
        return _in_study(self.doc, variant, self.overrides(variant), problem)


def load_study(
    path: str | Path,
    data: str | None = None,
    epochs: int | None = None,
    seeds: Sequence[int] | int | None = None,
    out: str | Path | None = None,
    target: float | None = None,
) -> Plan:
    """Read and check a study file; the arguments, when given, replace the file's values."""
    doc = read_yaml(path)
    if doc.data is None:
        raise SpecError(
            [Problem(doc.source, "the file is empty; a study needs name, spec, data, variants")]
        )
    if not isinstance(doc.data, dict):
        raise SpecError(
            [Problem(doc.where(()), "a study is a mapping with name, spec, data, variants")]
        )
    study = validate_as(doc, Study)
    if target is not None:
        study = study.model_copy(update={"target_train_error": target})
    here = Path(path).parent
    spec_path = Path(os.path.normpath(here / study.spec))  # studies/../specs/x → specs/x
    if not spec_path.is_file():
        raise SpecError([Problem(doc.where(("spec",)), f"spec file {spec_path} not found")])
    base = _check_variants(doc, study, spec_path)
    if data is None:
        data = study.data if study.data == "shapes" else os.path.normpath(here / study.data)
        if data != "shapes" and not Path(data).is_dir():
            message = f"data folder {data} not found; give 'shapes' or a folder with train/, val/"
            raise SpecError([Problem(doc.where(("data",)), message)])
    chosen = study.seeds if seeds is None else _command_line_seeds(seeds)
    return Plan(
        study=study,
        path=Path(path),
        spec_path=spec_path,
        data=data,
        epochs=epochs or study.epochs or base.train.epochs,
        seeds=list(range(chosen)) if isinstance(chosen, int) else list(chosen),
        out=Path(out) if out is not None else Path("runs") / f"ablate-{study.name}",
        doc=doc,
    )


def _command_line_seeds(seeds: Sequence[int] | int) -> int | list[int]:
    try:
        return check_seeds(seeds if isinstance(seeds, int) else list(seeds))
    except ValueError as exc:
        raise UsageError(f"--seeds {exc}") from None


def _check_variants(doc: Document, study: Study, spec_path: Path) -> Spec:
    """Build the spec, then every variant's graph; a mistake an override makes is located
    at that override in the study file."""
    from netspec.ir.graph import build_graph

    base = load_spec(spec_path)
    build_graph(base)  # the spec's own mistakes, reported once, in the spec file
    problems: list[Problem] = []
    for name, overrides in study.variants.items():
        try:
            build_graph(load_spec(spec_path, overrides))
        except SpecError as exc:
            problems += [_in_study(doc, name, overrides, p) for p in exc.problems]
    if problems:
        raise SpecError(problems)
    return base


def _in_study(
    doc: Document | None, variant: str, overrides: list[str], problem: Problem
) -> Problem:
    """A problem an override caused, moved to that override's line in the study file."""
    where = problem.where
    for k, text in enumerate(overrides):
        if doc is not None and where == f"--set {text}":
            where = doc.where(("variants", variant, k))
    context = f"variant {variant}" + (f": {problem.context}" if problem.context else "")
    return Problem(where, study_terms(problem.message), context)


TRAIN_FLAGS = [  # what netspec train's advice names, and where a study says it
    (re.compile(r"--set (\S+)"), r"the override \1"),
    (re.compile(r"--workers (\d+)"), r"the override data.workers=\1"),
    (re.compile(r"--batch-size (\d+)"), r"the override train.batch_size=\1"),
    (re.compile(r"--batch-size\b"), "train.batch_size"),
]


def study_terms(message: str) -> str:
    """netspec train's advice as a study takes it: ablate has no --set, --workers or
    --batch-size; a variant's overrides are where those settings go."""
    for flag, override in TRAIN_FLAGS:
        message = flag.sub(override, message)
    return message
