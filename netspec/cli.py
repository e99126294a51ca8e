"""The `netspec` command: build · draw · pack · train · eval · export · ablate · schema.

A user's mistake (spec, flag, data folder) prints located one-line messages and exits with
status 2; `--debug` shows the traceback instead. Flags are checked here, where only the
standard library is loaded: a mistake in one is reported at once, not after the seconds it
takes a command to import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from netspec import outputs
from netspec.errors import SpecError, UsageError, tell
from netspec.versions import installed, torch_version

if TYPE_CHECKING:
    from netspec.ir.records import NetGraph
    from netspec.spec.model import Spec

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str, target: str) -> Callable:
    """Register a subcommand; `target` is `module:function`, imported only when it runs."""

    def register(add_arguments: Callable[[argparse.ArgumentParser], None]) -> Callable:
        COMMANDS[name] = (help, add_arguments, target)
        return add_arguments

    return register


class Parser(argparse.ArgumentParser):
    """argparse's refusals as netspec's: one line naming the command, exit status 2 (argparse
    alone prints the usage too, and exits inside parse_args)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def whole(minimum: int, what: str, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number of `what`, from `minimum` (to `maximum`)."""
    allowed = f"{minimum} or more" if maximum is None else f"{minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"give {allowed} {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"give {allowed} {what}, got {value}")
        return value

    return parse


def _fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"give a number between 0 and 1, e.g. 0.25; got {text}")
    return value


def _output(check: Callable[[Path], None]) -> Callable[[str], str]:
    """An argparse type for a path the command writes: checked before any work."""

    def parse(text: str) -> str:
        try:
            check(Path(text))
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


output_file = _output(outputs.check_file)
output_folder = _output(outputs.check_folder)


class Version(argparse.Action):
    """`--version`: netspec's and torch's, found without importing torch, which takes
    seconds."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="print netspec's and torch's versions and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        print(f"netspec {installed('netspec')} (torch {torch_version()})")
        parser.exit()


def _spec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the spec file, e.g. specs/alexnet.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value (repeatable): layers.conv1.filters=64, train.lr=0.02",
    )


@command("build", "validate a spec, infer shapes, print the layer table", "netspec.cli:run_build")
def _build_arguments(p: argparse.ArgumentParser) -> None:
    _spec_arguments(p)
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the table as one JSON object")
    shown.add_argument(
        "--expand",
        action="store_true",
        help="print the spec with every block use expanded into plain layers (YAML that "
        "builds the same network), validated but not built",
    )
    p.add_argument(
        "--check-module",
        action="store_true",
        help="also build the torch module (on the meta device, no weights) and check that it "
        "runs and gives the graph's output shape; imports torch, which takes seconds",
    )


@command("schema", "print the JSON Schema of the spec language", "netspec.cli:run_schema")
def _schema_arguments(p: argparse.ArgumentParser) -> None:
    pass


@command("draw", "draw the network with graphviz", "netspec.cli:run_draw")
def _draw_arguments(p: argparse.ArgumentParser) -> None:
    _spec_arguments(p)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=output_file,
        help="file to write; the format comes from the extension: svg, png, pdf, dot",
    )
    p.add_argument(
        "--rankdir",
        choices=["TB", "LR"],
        default="TB",
        help="top to bottom (default) or left to right",
    )
    p.add_argument(
        "--compact",
        action="store_true",
        help="fold activations, LRN, pooling and dropout into the layer they follow",
    )


def _allow_stale_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-stale",
        action="store_true",
        help="use a packed store even if its source folder changed since it was packed",
    )


PACK_WORKERS_PER_CORE = 2  # more decoding processes than this only compete for the cores


@command(
    "pack",
    "decode a data folder once into a packed store that train, eval and ablate read",
    "netspec.train.pack:run_pack",
)
def _pack_arguments(p: argparse.ArgumentParser) -> None:
    from netspec.spec.settings import DataConfig

    p.add_argument(
        "data",
        help="an image folder with train/<class>/ and val/<class>/ (or ImageNet's layout with "
        "its devkit), or 'shapes'",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=output_folder,
        help="the store's folder (new or empty)",
    )
    p.add_argument(
        "--resize",
        type=whole(1, "pixels"),
        default=256,
        help="shorter side in pixels, then the central square is kept (default 256, the "
        "paper's; must equal the spec's data.resize)",
    )
    cores = os.cpu_count() or 1
    p.add_argument(
        "--workers",
        type=whole(0, f"processes ({cores} CPU cores here)", PACK_WORKERS_PER_CORE * cores),
        metavar="N",
        help="decoding processes (default: one per CPU core)",
    )
    p.add_argument(
        "--stats-images",
        type=whole(1, "images"),
        default=DataConfig.model_fields["stats_images"].default,
        metavar="N",
        help="fit the mean image and PCA on at most N training images, as train does "
        "(default: the spec language's data.stats_images)",
    )


def _workers_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers", type=whole(0, "loader processes"), metavar="N", help="override data.workers"
    )


@command("train", "train a spec on an image folder", "netspec.train.commands:run_train")
def _train_arguments(p: argparse.ArgumentParser) -> None:
    _spec_arguments(p)
    p.add_argument(
        "--data",
        required=True,
        help="an image folder with train/<class>/ and val/<class>/, a store netspec pack "
        "wrote, or 'shapes'",
    )
    _allow_stale_argument(p)
    p.add_argument("--out", type=output_folder, help="run folder (default runs/<spec name>-<time>)")
    p.add_argument(
        "--resume",
        metavar="DIR",
        type=output_folder,
        help="continue the run in DIR from its last.pt",
    )
    p.add_argument(
        "--init-from",
        metavar="FILE",
        help="start from the weights in FILE (a run's checkpoint or a state_dict) wherever "
        "a layer's name and shape match; the other layers keep the spec's initialisation",
    )
    p.add_argument("--epochs", type=whole(1, "epochs"), help="override train.epochs")
    p.add_argument("--batch-size", type=whole(1, "images"), help="override train.batch_size")
    _workers_argument(p)
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: the best available")
    p.add_argument(
        "--nproc",
        type=whole(1, "processes"),
        default=1,
        metavar="N",
        help="train in N local processes, started by torch's elastic launcher (default 1)",
    )
    p.add_argument(
        "--parallel",
        metavar="MODE",
        help="how N processes share the work: data (DDP replicas, the default), towers (one "
        "process per device group) or towers,data (groups × replicas)",
    )
    p.add_argument(
        "--max-restarts",
        type=whole(0, "restarts"),
        default=0,
        metavar="K",
        help="with --nproc: restart the processes up to K times after a failure; they resume "
        "from last.pt",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard scalars into the run folder's tb/ (train.tensorboard)",
    )


@command("eval", "evaluate a checkpoint on the validation split", "netspec.train.commands:run_eval")
def _eval_arguments(p: argparse.ArgumentParser) -> None:
    _spec_arguments(p)
    p.add_argument("--checkpoint", required=True, help="a best.pt or last.pt written by train")
    p.add_argument(
        "--data",
        required=True,
        help="the image folder (its val/ split), a store netspec pack wrote, or 'shapes'",
    )
    _allow_stale_argument(p)
    p.add_argument("--ten-crop", action="store_true", help="average over ten crops, as the paper")
    _workers_argument(p)
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: the best available")
    _look_arguments(p)


@command(
    "export", "write a spec and its weights as ONNX or PyTorch source", "netspec.export:run_export"
)
def _export_arguments(p: argparse.ArgumentParser) -> None:
    _spec_arguments(p)
    p.add_argument(
        "--checkpoint",
        help="a run's last.pt or best.pt, or a state_dict file; default: the spec's own "
        "initialisation (train.seed)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=output_file,
        help="file to write; the format comes from the extension: .onnx (ONNX), "
        ".py (PyTorch source, with its weights beside it as .pt)",
    )


def _seeds(text: str) -> int | list[int]:
    """`--seeds 5` (seeds 0 to 4) or `--seeds 0,1,7`, held to the study file's rules."""
    from netspec.ablate.study import check_seeds  # no torch: pydantic, loaded already

    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count or a list like 0,1,7, got {text!r}"
        ) from None
    if "," not in text and seeds[0] < 1:
        raise argparse.ArgumentTypeError(f"a count of seeds must be ≥ 1, got {text}")
    try:
        return check_seeds(seeds if "," in text else seeds[0])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@command(
    "ablate",
    "train every variant × seed of a study; write results.csv, summary.md, curves.png",
    "netspec.ablate.command:run_ablate",
)
def _ablate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="the study file, e.g. studies/paper.yaml")
    p.add_argument(
        "--data", help="override the study's data: 'shapes', an image folder or a packed store"
    )
    _allow_stale_argument(p)
    p.add_argument("--epochs", type=whole(1, "epochs"), help="override the study's epochs")
    p.add_argument("--seeds", type=_seeds, help="a count (5: seeds 0-4) or a list (0,1,7)")
    p.add_argument(
        "--out", type=output_folder, help="the study's folder (default runs/ablate-<name>)"
    )
    p.add_argument(
        "--jobs", type=whole(1, "runs"), default=1, help="runs at once, sharing the CPU cores"
    )
    p.add_argument(
        "--target",
        type=_fraction,
        help="override target_train_error (the mark for 'epochs to reach it'), e.g. 0.25",
    )


def _look_arguments(p: argparse.ArgumentParser) -> None:
    """eval's flags that look at where the network errs (netspec.inspect.confusion)."""
    p.add_argument(
        "--confusion",
        action="store_true",
        help="also print each class's top-1 and the ten most confused pairs; with -o, draw "
        "the confusion matrix, normalised per true class",
    )
    p.add_argument(
        "--errors",
        type=whole(1, "images"),
        metavar="N",
        help="also list the N most confidently wrong validation images; with -o, draw them",
    )
    p.add_argument(
        "-o",
        "--output",
        type=output_file,
        help="the picture of --confusion or --errors (.png, .pdf, .svg); with both, the "
        "errors go beside it as NAME-errors.png",
    )


def _debug_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )


def _device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: the best available")


@command(
    "inspect",
    "look inside a trained network: its kernels, or its nearest training images",
    "netspec.inspect.command:run_inspect",
)
def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run", metavar="RUN_OR_CHECKPOINT", help="a run folder (its best.pt) or a checkpoint"
    )
    views = p.add_subparsers(dest="view", required=True, metavar="VIEW")
    filters = views.add_parser(
        "filters",
        help="a layer's kernels, one band per device group, and each group's colour fraction",
        description="A layer's kernels, one band per device group, each kernel scaled on its "
        "own, and each group's colour fraction: the mean share of a kernel's energy outside "
        "its grey (channel-mean) component.",
    )
    _debug_argument(filters)
    filters.add_argument("--layer", default="conv1", help="a convolution (default conv1)")
    filters.add_argument(
        "--channel",
        type=whole(0, "channel"),
        default=0,
        metavar="C",
        help="for kernels that read more than 3 channels: the input channel shown (default 0)",
    )
    filters.add_argument(
        "-o", "--output", type=output_file, help="the picture to write (.png, .pdf, .svg)"
    )
    filters.add_argument("--json", action="store_true", help="print the figures as JSON")
    near = views.add_parser(
        "neighbours",
        help="validation images and the training images nearest them at a hidden layer",
        description="Validation images, each beside the training images whose activations "
        "at a hidden layer are nearest by Euclidean distance (an exact search).",
    )
    _debug_argument(near)
    near.add_argument("--data", required=True, help="the image folder or packed store, or 'shapes'")
    _allow_stale_argument(near)
    near.add_argument(
        "--layer", help="the layer compared (default: the output layer's input, the last hidden)"
    )
    near.add_argument(
        "--images", type=whole(1, "images"), default=8, help="validation images (default 8)"
    )
    near.add_argument(
        "--k", type=whole(1, "neighbours"), default=6, help="neighbours of each (default 6)"
    )
    near.add_argument("--seed", type=int, default=0, help="picks the validation images (default 0)")
    near.add_argument(
        "-o", "--output", type=output_file, help="the picture to write (.png, .pdf, .svg)"
    )
    near.add_argument("--json", action="store_true", help="print the neighbours as JSON")
    near.add_argument("--workers", type=whole(0, "loader processes"), help="override data.workers")
    _device_argument(near)


@command(
    "predict",
    "a trained network's top classes for image files",
    "netspec.inspect.predict:run_predict",
)
def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="a checkpoint, or a run folder (its best.pt)"
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument(
        "--top",
        type=whole(1, "classes"),
        default=5,
        help="classes shown for each image (default 5)",
    )
    p.add_argument("--ten-crop", action="store_true", help="average over ten crops, as the paper")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    _device_argument(p)


def run_build(args: argparse.Namespace) -> int:
    from netspec import build_graph, load_spec
    from netspec.ir.summary import format_table, to_json

    spec = load_spec(args.spec, args.overrides)
    if args.expand:
        print(spec.expanded_yaml(), end="")
        return 0
    graph = build_graph(spec)
    if args.check_module:
        _prove_it_compiles(spec, graph)
    if args.json:
        print(json.dumps(to_json(graph), indent=2))
    else:
        print(format_table(graph))
    print_warnings(spec, graph)
    return 0


def run_draw(args: argparse.Namespace) -> int:
    from netspec import build_graph, load_spec
    from netspec.backends import diagram

    path = Path(args.output)
    diagram.output_format(path)  # before reading the spec: a wrong extension is found at once
    spec = load_spec(args.spec, args.overrides)
    graph = build_graph(spec)
    diagram.render(diagram.to_dot(graph, args.rankdir, args.compact), path)
    print_warnings(spec, graph)
    print(f"wrote {path}")
    return 0


def _prove_it_compiles(spec: Spec, graph: NetGraph) -> None:
    """Build the torch module on the meta device and run it: no weights are allocated."""
    import torch

    from netspec import compile

    model = compile(spec, device="meta")
    with torch.no_grad():
        out = model(torch.empty(2, *spec.input, device="meta"))
    expected = (2, *graph.node(graph.net.output).shape)
    if tuple(out.shape) != expected:
        raise RuntimeError(f"torch gives {tuple(out.shape)}, the graph {expected}: a netspec bug")


def print_warnings(spec: Spec, graph: NetGraph) -> None:
    from netspec.ir.graph import located_warnings

    for line in located_warnings(spec, graph):
        print(line, file=sys.stderr)


def run_schema(args: argparse.Namespace) -> int:
    from netspec.spec.schema import spec_schema

    print(json.dumps(spec_schema(), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="netspec", description=__doc__.splitlines()[0])
    p.add_argument("--version", action=Version)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks for errors",
        )
        add_arguments(sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from netspec.interrupt import deferred, describe, exit_status, sigterm_as_interrupt

    try:
        args = parser().parse_args(argv)
    except UsageError as exc:  # a mistake in the flags, found before any import
        tell(str(exc))
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a launcher passes on
    module, _, function = COMMANDS[args.command][2].partition(":")
    try:
        with sigterm_as_interrupt():
            with deferred():  # the command's imports include torch's C++ extensions
                run: Command = getattr(__import__(module, fromlist=[function]), function)
            return run(args)
    except SpecError as exc:
        if args.debug:
            raise
        for line in [*exc.warnings, *exc.problems]:
            print(line, file=sys.stderr)
        return 2
    except UsageError as exc:
        if args.debug:
            raise
        tell(f"netspec {args.command}: {exc}")
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM where no command handles it
        if args.debug:
            raise
        print(f"\nnetspec {args.command}: {describe(exc)}", file=sys.stderr)
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
