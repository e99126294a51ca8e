"""Study files: read like specs, so every mistake is one located line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspec.ablate.study import load_study, study_terms
from netspec.cli import main
from netspec.errors import SpecError, UsageError
from tests.conftest import ROOT

TINY = ROOT / "tests" / "nets" / "tiny.yaml"

GOOD = f"""\
name: tiny-study
spec: {TINY}
data: shapes
epochs: 2
seeds: 2
variants:
  baseline: []
  no-lrn: [layers.norm1=null]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_study(write(tmp_path, text))
    return [str(p) for p in info.value.problems]


def test_a_good_study_resolves_paths_seeds_and_epochs(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "net.yaml").write_text(TINY.read_text())
    (tmp_path / "folder").mkdir()
    text = GOOD.replace(str(TINY), "specs/net.yaml").replace("shapes", "folder")
    plan = load_study(write(tmp_path, text))
    assert plan.spec_path == tmp_path / "specs" / "net.yaml"  # beside the study, not the cwd
    assert plan.data == str(tmp_path / "folder")
    assert (plan.epochs, plan.seeds, plan.baseline) == (2, [0, 1], "baseline")
    assert plan.out == Path("runs/ablate-tiny-study")
    assert plan.overrides("no-lrn") == ["layers.norm1=null"]


def test_the_command_line_replaces_the_files_choices(tmp_path):
    plan = load_study(write(tmp_path, GOOD), data="/d", epochs=5, seeds=[3, 7], out="o", target=0.1)
    assert (plan.data, plan.epochs, plan.seeds, plan.out) == ("/d", 5, [3, 7], Path("o"))
    assert plan.target == 0.1  # the report's; the tuning runs are scored at the file's
    assert plan.study.target_train_error == load_study(write(tmp_path, GOOD)).target == 0.25
    assert load_study(write(tmp_path, GOOD), seeds=4).seeds == [0, 1, 2, 3]


def test_epochs_default_to_the_specs(tmp_path):
    plan = load_study(write(tmp_path, GOOD.replace("epochs: 2\n", "")))
    assert plan.epochs == 3  # tests/nets/tiny.yaml's train.epochs


def test_unknown_key_did_you_mean(tmp_path):
    (line,) = problems(tmp_path, GOOD.replace("seeds: 2", "seed: 2"))
    assert line == (
        f"{tmp_path / 'study.yaml'}:5:1: unknown key 'seed' (did you mean 'seeds'?); "
        "a study takes: name, description, spec, data, epochs, seeds, target_train_error, "
        "tune, variants"
    )


def test_several_mistakes_at_once(tmp_path):
    text = GOOD.replace("seeds: 2", "seeds: [1, 1]").replace("epochs: 2", "epochs: 0")
    text = text.replace("variants:", "target_train_error: 1.5\nvariants:")
    got = problems(tmp_path, text)
    at = tmp_path / "study.yaml"
    assert got == [
        f"{at}:4:9: epochs must be ≥ 1, got 0",
        f"{at}:5:8: seeds lists seed 1 more than once",
        f"{at}:6:21: target_train_error must be < 1.0, got 1.5",
    ]


def test_an_override_needs_an_equals_sign(tmp_path):
    (line,) = problems(tmp_path, GOOD.replace("[layers.norm1=null]", "[layers.norm1]"))
    assert line == (
        f"{tmp_path / 'study.yaml'}:8:11: variants.no-lrn must be KEY=VALUE, "
        "e.g. layers.norm1=null, got 'layers.norm1'"
    )


def test_the_seed_is_the_studys(tmp_path):
    (line,) = problems(tmp_path, GOOD.replace("[layers.norm1=null]", "[train.seed=4]"))
    assert line.endswith("train.seed is set by the study's `seeds`; remove it from the variant")


def test_a_misspelt_layer_is_located_at_the_override(tmp_path):
    text = GOOD.replace("[layers.norm1=null]", "[layers.conv1.filters=8, layers.nrom1=null]")
    (line,) = problems(tmp_path, text)
    assert line.startswith(
        f"{tmp_path / 'study.yaml'}:8:36: variant no-lrn: no layer named 'nrom1' in layers"
    )
    assert "(did you mean 'norm1'?)" in line


def test_a_bad_value_is_located_at_the_override(tmp_path):
    (line,) = problems(tmp_path, GOOD.replace("[layers.norm1=null]", "[layers.conv1.filters=0]"))
    assert line == (
        f"{tmp_path / 'study.yaml'}:8:12: variant no-lrn: layers[0] (conv1): "
        f"filters must be ≥ 1, got 0 (overriding {TINY}:8:31)"
    )


def test_a_removal_that_breaks_a_shape_names_the_variant_and_the_override(tmp_path):
    text = GOOD.replace("[layers.norm1=null]", "[layers.pool1=null]").replace(
        str(TINY), str(tmp_path / "net.yaml")
    )
    (tmp_path / "net.yaml").write_text(
        TINY.read_text().replace("units: classes}", "units: classes, in_features: 392}")
    )
    (line,) = problems(tmp_path, text)
    assert line == (
        f"{tmp_path / 'net.yaml'}:15:5: variant no-lrn: layers[6] (fc): in_features is 392, "
        "but 'drop' gives 8×14×14 = 1568; set in_features: 1568 or change the layers before "
        "it (upstream of it, the override layers.pool1=null removed 'pool1')"
    )


def test_missing_spec_and_data_are_located(tmp_path):
    (line,) = problems(tmp_path, GOOD.replace(str(TINY), "nowhere.yaml"))
    assert line == f"{tmp_path / 'study.yaml'}:2:7: spec file {tmp_path / 'nowhere.yaml'} not found"
    (line,) = problems(tmp_path, GOOD.replace("data: shapes", "data: nodata"))
    assert line.startswith(f"{tmp_path / 'study.yaml'}:3:7: data folder {tmp_path / 'nodata'}")


def test_empty_and_list_files(tmp_path):
    assert problems(tmp_path, "") == [
        f"{tmp_path / 'study.yaml'}: the file is empty; a study needs name, spec, data, variants"
    ]
    assert problems(tmp_path, "- a\n") == [
        f"{tmp_path / 'study.yaml'}:1:1: a study is a mapping with name, spec, data, variants"
    ]


def test_cli_prints_located_lines_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("seeds: 2", "seeds: 0"))
    assert main(["ablate", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:5:8: seeds must be ≥ 1 or a list, got 0"
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--jobs", "0"], "netspec ablate: argument --jobs: give 1 or more runs, got 0"),
        (["--epochs", "0"], "netspec ablate: argument --epochs: give 1 or more epochs, got 0"),
        (
            ["--target", "25"],
            "netspec ablate: argument --target: give a number between 0 and 1, e.g. 0.25; got 25",
        ),
    ],
)
def test_cli_bad_flags(tmp_path, capsys, flags, message):
    assert main(["ablate", str(write(tmp_path, GOOD)), *flags]) == 2
    assert capsys.readouterr().err.splitlines() == [message]


def test_seeds_are_bounded_before_the_list_is_made(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["ablate", str(path), "--seeds", "1000000000000"]) == 2  # 8 TB as a list
    assert capsys.readouterr().err.splitlines() == [
        "netspec ablate: argument --seeds: must be a count from 1 to 1000, or a list, "
        "got 1000000000000"
    ]
    (line,) = problems(tmp_path, GOOD.replace("seeds: 2", "seeds: 1000000000000"))
    assert line == (
        f"{path}:5:8: seeds must be a count from 1 to 1000, or a list, got 1000000000000"
    )
    listed = ", ".join(map(str, range(1001)))
    (line,) = problems(tmp_path, GOOD.replace("seeds: 2", f"seeds: [{listed}]"))
    assert line == f"{path}:5:8: seeds must list 1 to 1000 seeds, got 1001"
    assert load_study(write(tmp_path, GOOD), seeds=1000).seeds == list(range(1000))
    with pytest.raises(UsageError) as info:
        load_study(path, seeds=10**12)  # as a library call: the same rule
    assert str(info.value) == "--seeds must be a count from 1 to 1000, or a list, got 1000000000000"


SEED_MISTAKES = {
    "1,1": "lists seed 1 more than once",
    "3,5,3,5,7": "lists seed 3, 5 more than once",
    "-1,2": "lists seed -1; a seed is from 0 to 2**63 - 1",
    f"0,{2**63}": f"lists seed {2**63}; a seed is from 0 to 2**63 - 1",
}


@pytest.mark.parametrize(("flag", "reason"), SEED_MISTAKES.items())
def test_command_line_seeds_are_held_to_the_study_files_rules(tmp_path, capsys, flag, reason):
    out = tmp_path / "out"
    assert main(["ablate", str(write(tmp_path, GOOD)), f"--seeds={flag}", "--out", str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"netspec ablate: argument --seeds: {reason}"]
    assert not out.exists()
    (line,) = problems(tmp_path, GOOD.replace("seeds: 2", f"seeds: [{flag}]"))
    assert line == f"{tmp_path / 'study.yaml'}:5:8: seeds {reason}"


@pytest.mark.slow
def test_seed_mistakes_are_said_before_torch_is_imported(tmp_path):
    from tests.test_cli_flags import in_fresh_process

    study = str(write(tmp_path, GOOD))
    argvs = [["ablate", study, f"--seeds={flag}"] for flag in [*SEED_MISTAKES, "5000"]]
    answers, imported = in_fresh_process(argvs)
    said = [f"netspec ablate: argument --seeds: {reason}\n" for reason in SEED_MISTAKES.values()]
    bound = "must be a count from 1 to 1000, or a list, got 5000"
    assert answers == [
        (2, line) for line in [*said, f"netspec ablate: argument --seeds: {bound}\n"]
    ]
    assert imported == []


@pytest.mark.parametrize("name", ["results.csv", "summary.md", "curves.png", "Results.CSV"])
def test_a_variant_named_like_an_output_file_is_refused(tmp_path, capsys, name):
    path, out = write(tmp_path, GOOD.replace("no-lrn:", f"{name}:")), tmp_path / "out"
    assert main(["ablate", str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:8:{len(name) + 5}: variants.{name} is the name of a file the study writes "
        "beside the variants' folders (results.csv, summary.md, curves.png): rename the variant"
    ]
    assert not out.exists()


# netspec train's advice (netspec/train), and what ablate says instead
ADVICE = {
    "Try a lower learning rate, e.g. --set train.lr=0.002": (
        "Try a lower learning rate, e.g. the override train.lr=0.002"
    ),
    "pack again with --resize 224, or train with --set data.resize=256": (
        "pack again with --resize 224, or train with the override data.resize=256"
    ),
    "add --set classes=7": "add the override classes=7",
    "use at most 16 (8 per core), e.g. --workers 2": (
        "use at most 16 (8 per core), e.g. the override data.workers=2"
    ),
    "lower --batch-size, data.resize or the layers' sizes": (
        "lower train.batch_size, data.resize or the layers' sizes"
    ),
    "fewer than one batch (128): lower --batch-size": (
        "fewer than one batch (128): lower train.batch_size"
    ),
}


@pytest.mark.parametrize(("advice", "in_a_study"), ADVICE.items())
def test_trains_advice_is_given_as_overrides(advice, in_a_study):
    assert study_terms(advice) == in_a_study


FEWER = GOOD.replace("seeds: 2", "seeds: 4") + (
    "  no-drop:\n    set: [layers.drop=null]\n    seeds: 2\n"
)


def test_a_variant_may_run_fewer_seeds(tmp_path):
    plan = load_study(write(tmp_path, FEWER))
    assert [plan.seeds_of(v) for v in plan.study.variants] == [[0, 1, 2, 3]] * 2 + [[0, 1]]
    assert plan.overrides("no-drop") == ["layers.drop=null"]
    assert load_study(write(tmp_path, FEWER), seeds=[5, 9, 11]).seeds_of("no-drop") == [5, 9]


def test_a_mistake_in_a_variants_mapping_is_located(tmp_path):
    (line,) = problems(tmp_path, FEWER.replace("[layers.drop=null]", "[layers.dorp=null]"))
    assert line.startswith(
        f"{tmp_path / 'study.yaml'}:10:11: variant no-drop: no layer named 'dorp' in layers"
    )
    (line,) = problems(tmp_path, FEWER.replace("    seeds: 2\n", ""))
    assert line == f"{tmp_path / 'study.yaml'}:10:5: missing required key 'seeds'"
    (line,) = problems(tmp_path, FEWER.replace("    seeds: 2\n", "    seeds: 0\n"))
    assert line == f"{tmp_path / 'study.yaml'}:11:12: variants.no-drop.seeds must be ≥ 1, got 0"


TUNED = GOOD.replace("variants:", "tune: {train.lr: [0.01, 0.1], seeds: 2}\nvariants:")


def test_tune_names_one_setting_and_keeps_its_seeds_apart(tmp_path):
    plan = load_study(write(tmp_path, TUNED))
    assert plan.tuned() == ["train.lr=0.01", "train.lr=0.1"]
    assert plan.study.tune is not None and plan.study.tune.seed_list() == [1000, 1001]
    assert plan.study.tune.by == "epochs_to_target"
    assert plan.variations("no-lrn") == [
        ["layers.norm1=null", "train.lr=0.01"],
        ["layers.norm1=null", "train.lr=0.1"],
    ]
    at = tmp_path / "study.yaml"
    (line,) = problems(tmp_path, TUNED.replace("seeds: 2}", "seeds: [1, 7]}"))
    assert line == (
        f"{at}:6:38: tune.seeds and the reporting seeds share seed 1: a value must be picked "
        "on seeds that are not reported"
    )


@pytest.mark.parametrize(
    ("tune", "said"),
    [
        ("{seeds: 2}", "6:7: tune must name one setting and its values, e.g. {train.lr: "
         "[0.01, 0.03, 0.1], seeds: 2}; got none"),
        ("{train.lr: [0.1], seeds: 2}", "6:7: tune.values needs at least 2 items, got 1"),
        ("{train.lr: [0.1, 0.2], by: fastest}", "6:34: tune.by must be one of "
         "'epochs_to_target' or 'final_val_top1', got 'fastest'"),
        ("{train.seed: [1, 2]}", "6:7: tune names train.seed, which the study sets (seeds): "
         "tune another setting"),
    ],
)  # fmt: skip
def test_tune_mistakes_are_located(tmp_path, tune, said):
    text = GOOD.replace("variants:", f"tune: {tune}\nvariants:")
    (line,) = problems(tmp_path, text)
    assert line == f"{tmp_path / 'study.yaml'}:{said}"


def test_a_tuned_value_that_breaks_a_variant_is_located_at_the_value(tmp_path):
    text = GOOD.replace("variants:", "tune: {layers.conv1.filters: [4, 0]}\nvariants:")
    got = problems(tmp_path, text)
    assert [line.split(": layers[0]")[0] for line in got] == [
        f"{tmp_path / 'study.yaml'}:6:34: variant baseline",
        f"{tmp_path / 'study.yaml'}:6:34: variant no-lrn",
    ]
    (line,) = problems(tmp_path, TUNED.replace("[layers.norm1=null]", "[train.lr=0.5]"))
    assert line == (
        f"{tmp_path / 'study.yaml'}:9:12: variant no-lrn sets train.lr, which the study tunes: "
        "remove the override, or tune something else"
    )


def test_the_paper_studys_pooling_variant_changes_nothing_but_the_overlap():
    """3/2 pooling rounded up and plain 2/2 pooling give the same maps, the same parameters
    and no warning about pixels left out, so `no-overlap` measures overlap alone."""
    from netspec.ir.graph import build_graph
    from netspec.spec.model import load_spec

    plan = load_study(ROOT / "studies" / "paper.yaml")
    specs = [load_spec(plan.spec_path, plan.overrides(v)) for v in ("baseline", "no-overlap")]
    pools = [{layer.name: layer for layer in s.layers if layer.type == "maxpool"} for s in specs]
    assert [(p.kernel, p.stride, p.ceil) for p in pools[0].values()] == [((3, 3), (2, 2), True)] * 3
    assert [(p.kernel, p.stride) for p in pools[1].values()] == [((2, 2), (2, 2))] * 3
    base, flat = (build_graph(s) for s in specs)
    shapes = [{n.name: n.shape for n in g.layers()} for g in (base, flat)]
    assert shapes[0] == shapes[1]
    assert [shapes[0][p] for p in ("pool1", "pool2", "pool5")] == [
        (32, 8, 8),
        (64, 4, 4),
        (64, 2, 2),
    ]
    assert base.net.params == flat.net.params == 286_058
    assert base.net.macs == flat.net.macs
    assert base.net.warnings == flat.net.warnings == []
