"""The study file: which spec, which data, which variants, how many seeds, what to tune.

Read and validated like a spec (safe YAML with positions, pydantic, located messages). Each
variant is a list of `--set` overrides, or a mapping with the list (`set`) and a smaller
number of seeds; they are checked against the spec when the study is loaded, so a misspelt
layer is reported at its line in the study file before anything trains. Paths in the file are
relative to the file.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, model_validator

from netspec.errors import Problem, SpecError, UsageError
from netspec.spec.document import Document, read_yaml
from netspec.spec.model import load_spec, validate_as
from netspec.spec.settings import Strict

FOLDER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # names become folder names
SET_BY_THE_STUDY = {"train.seed": "seeds", "train.epochs": "epochs"}
OUTPUTS = ("results.csv", "summary.md", "curves.png")  # beside the variants' folders
MAX_SEEDS = 1000  # per variant: more is a typo, and a count becomes a list of that length
SEED_LIMIT = 2**63  # train.seed is below it
# a tuning seed count n stands for seeds 1000 … 1000 + n − 1: a count of reporting seeds is at
# most MAX_SEEDS, so the two never meet, and the tuning runs stay put when --seeds changes
TUNE_SEEDS_FROM = MAX_SEEDS


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
Seeds = Annotated[
    Annotated[int, Field(ge=1)] | Annotated[list[int], Field(min_length=1)],
    AfterValidator(check_seeds),
]


class Variant(Strict):
    """A variant that runs fewer seeds than the study: where its effect is far above the
    noise, or its claim cannot show on the data, the study's time is better spent elsewhere."""

    set: Overrides = Field(default_factory=list, description="--set overrides, in order")
    seeds: Annotated[int, Field(ge=1, le=MAX_SEEDS)] = Field(
        description="the study's first N seeds"
    )


VariantEntry = Annotated[
    Annotated[Overrides, Tag("list")] | Annotated[Variant, Tag("mapping")],
    Discriminator(lambda given: "mapping" if isinstance(given, dict | Variant) else "list"),
]
TuneBy = Literal["epochs_to_target", "final_val_top1"]


class Tune(Strict):
    """One setting each variant picks for itself, on seeds of its own, before the reporting
    runs: written `tune: {train.lr: [0.01, 0.03, 0.1], seeds: 2, by: epochs_to_target}`."""

    key: str
    values: Annotated[list[Any], Field(min_length=2)]
    seeds: Seeds = Field(2, description="a count (seeds 1000, 1001, …) or a list of seeds")
    by: TuneBy = Field(
        "epochs_to_target",
        description="epochs_to_target: fewest epochs to the target training error; "
        "final_val_top1: best validation top-1, the mean of the last 3 epochs",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_setting(cls, data: Any) -> Any:
        """The setting is the one key that is neither `seeds` nor `by`."""
        if not isinstance(data, dict) or "key" in data:
            return data
        named = [k for k in data if k not in ("seeds", "by")]
        if len(named) != 1:
            raise ValueError(
                "must name one setting and its values, e.g. {train.lr: [0.01, 0.03, 0.1], "
                f"seeds: 2}}; got {', '.join(map(str, named)) or 'none'}"
            )
        key = str(named[0])
        if key in SET_BY_THE_STUDY:
            raise ValueError(
                f"names {key}, which the study sets ({SET_BY_THE_STUDY[key]}): tune another setting"
            )
        rest = {k: v for k, v in data.items() if k in ("seeds", "by")}
        return {"key": key, "values": data[named[0]], **rest}

    def override(self, value: Any) -> str:
        """`key=value` as --set reads it (JSON is YAML)."""
        return f"{self.key}={json.dumps(value)}"

    def seed_list(self) -> list[int]:
        if isinstance(self.seeds, int):
            return list(range(TUNE_SEEDS_FROM, TUNE_SEEDS_FROM + self.seeds))
        return list(self.seeds)


class Study(Strict):
    """Variants of one spec, each trained with every seed; the first variant is the baseline."""

    name: Annotated[str, Field(pattern=FOLDER_NAME)]
    description: str = ""
    spec: str = Field(description="the spec file, relative to the study file")
    data: str = Field(description="'shapes', or an image folder relative to the study file")
    epochs: Annotated[int, Field(ge=1)] | None = Field(
        None, description="default: the spec's train.epochs"
    )
    seeds: Seeds = Field(
        3, description=f"a count (seeds 0, 1, …) or a list of seeds; at most {MAX_SEEDS}"
    )
    target_train_error: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.25, description="report the epochs each run takes to reach this training error"
    )
    tune: Tune | None = Field(
        None, description="a setting each variant picks for itself before the reporting runs"
    )
    variants: Annotated[dict[VariantName, VariantEntry], Field(min_length=1)] = Field(
        description="name: list of --set overrides, in order, or {set: [...], seeds: N}; "
        "the first is the baseline"
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
    # the training error whose epochs the summary reports: the file's, or --target's; the
    # tuning runs are always scored at the file's, so that --target can read the same runs
    # again at another mark without changing what they were picked by
    target: float
    doc: Document | None = field(default=None, compare=False, repr=False)  # the study file

    @property
    def baseline(self) -> str:
        return next(iter(self.study.variants))

    def overrides(self, variant: str) -> list[str]:
        given = self.study.variants[variant]
        return given.set if isinstance(given, Variant) else given

    def seeds_of(self, variant: str) -> list[int]:
        """The variant's reporting seeds: the study's, or the first N of them."""
        given = self.study.variants[variant]
        return self.seeds[: given.seeds] if isinstance(given, Variant) else self.seeds

    def variant_path(self, variant: str) -> tuple[str | int, ...]:
        """Where the variant's overrides sit in the study file."""
        given = self.study.variants[variant]
        return ("variants", variant, "set") if isinstance(given, Variant) else ("variants", variant)

    def tuned(self) -> list[str]:
        """The tuning runs' overrides, one per value; none without `tune`."""
        tune = self.study.tune
        return [tune.override(v) for v in tune.values] if tune else []

    def variations(self, variant: str) -> list[list[str]]:
        """The variant's overrides with each tuned value, or alone without `tune`."""
        own = self.overrides(variant)
        return [[*own, tuned] for tuned in self.tuned()] or [own]

    def in_variant(self, variant: str, problem: Problem) -> Problem:
        """A problem found in a variant's spec, in the study's terms; it names the variant
        when the variant's overrides or a tuned value may have caused it, and is moved to
        that override's line in the study file."""
        if not self.overrides(variant) and not self.tuned():  # the spec's own, or the data's
            return Problem(problem.where, study_terms(problem.message), problem.context)
        where = problem.where
        if self.doc is not None:
            places = {text: (*self.variant_path(variant), k)
                      for k, text in enumerate(self.overrides(variant))}  # fmt: skip
            if self.study.tune is not None:
                places |= {text: ("tune", self.study.tune.key, k)
                           for k, text in enumerate(self.tuned())}  # fmt: skip
            for text, loc in places.items():
                if where == f"--set {text}":
                    where = self.doc.where(loc)
        context = f"variant {variant}" + (f": {problem.context}" if problem.context else "")
        return Problem(where, study_terms(problem.message), context)


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
    here = Path(path).parent
    spec_path = Path(os.path.normpath(here / study.spec))  # studies/../specs/x → specs/x
    if not spec_path.is_file():
        raise SpecError([Problem(doc.where(("spec",)), f"spec file {spec_path} not found")])
    if data is None:
        data = study.data if study.data == "shapes" else os.path.normpath(here / study.data)
        if data != "shapes" and not Path(data).is_dir():
            message = f"data folder {data} not found; give 'shapes' or a folder with train/, val/"
            raise SpecError([Problem(doc.where(("data",)), message)])
    chosen = study.seeds if seeds is None else _command_line_seeds(seeds)
    plan = Plan(
        study=study,
        path=Path(path),
        spec_path=spec_path,
        data=data,
        epochs=epochs or study.epochs or load_spec(spec_path).train.epochs,
        seeds=list(range(chosen)) if isinstance(chosen, int) else list(chosen),
        out=Path(out) if out is not None else Path("runs") / f"ablate-{study.name}",
        target=study.target_train_error if target is None else target,
        doc=doc,
    )
    _check_variants(plan)
    _check_tune(plan)
    return plan


def _command_line_seeds(seeds: Sequence[int] | int) -> int | list[int]:
    try:
        return check_seeds(seeds if isinstance(seeds, int) else list(seeds))
    except ValueError as exc:
        raise UsageError(f"--seeds {exc}") from None


def _check_variants(plan: Plan) -> None:
    """Build the spec, then every variant's graph, with each tuned value; a mistake an
    override makes is located at that override in the study file."""
    from netspec.ir.graph import build_graph

    build_graph(load_spec(plan.spec_path))  # the spec's own mistakes, once, in the spec file
    problems: list[Problem] = []
    for name in plan.study.variants:
        for overrides in plan.variations(name):
            try:
                build_graph(load_spec(plan.spec_path, overrides))
            except SpecError as exc:
                problems += [plan.in_variant(name, p) for p in exc.problems]
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))


def _check_tune(plan: Plan) -> None:
    """A variant may not set what the study tunes, and the tuning seeds are not reporting
    seeds: a value picked on a seed would otherwise be reported on that same seed."""
    tune, doc = plan.study.tune, plan.doc
    if tune is None or doc is None:
        return
    problems = [
        Problem(
            doc.where((*plan.variant_path(name), k)),
            f"variant {name} sets {tune.key}, which the study tunes: remove the override, "
            "or tune something else",
        )
        for name in plan.study.variants
        for k, text in enumerate(plan.overrides(name))
        if text.partition("=")[0].strip() == tune.key
    ]
    shared = sorted(set(tune.seed_list()) & set(plan.seeds))
    if shared:
        loc = ("tune", "seeds") if "seeds" in doc.data["tune"] else ("tune",)
        problems.append(
            Problem(
                doc.where(loc),
                f"tune.seeds and the reporting seeds share seed {', '.join(map(str, shared))}: "
                "a value must be picked on seeds that are not reported",
            )
        )
    if problems:
        raise SpecError(problems)


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
