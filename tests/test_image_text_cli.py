"""`mlret train` on image-text rows: a new dual encoder around a tiny text model, saved and evaluated on held-out
image rows; wrong combinations and bad rows fail with messages naming the fix or the line."""
from __future__ import annotations

import json

import pytest

from mlret_plugin.cli.main import main
from test_image_text import LANGS, write_rows
from tiny_models import tiny_model_dir


@pytest.fixture
def files(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    paths = {}
    for split, n in (("train", 8), ("test", 6)):
        rows = write_rows(tmp_path / split, n_groups=n)
        for r in rows:
            r["image"] = r["image"].rsplit("/", 1)[-1]  # relative to the JSONL's folder
        paths[split] = tmp_path / split / "rows.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def test_train_image_rows_saves_a_dual_encoder_and_evaluates(files, tmp_path):
    from mlret_plugin.multimodal import is_dual_encoder_dir, load_dual_encoder

    out = tmp_path / "run"
    args = ["train", "--train", str(files["train"]), "--eval", str(files["test"]), "--model",
            str(tiny_model_dir("bert", tmp_path)), "--image-tower", "16", "--max-steps", "2", "--batch-size", "3",
            "--out", str(out)]
    assert main(args) == 0
    assert is_dual_encoder_dir(out / "model")
    load_dual_encoder(out / "model")
    rows = [json.loads(line) for line in (out / "eval" / "results.jsonl").read_text().splitlines()]
    assert {r["qlang"] for r in rows if r["breakdown"] == "language"} == set(LANGS)
    assert {(r["setting"], r["measure"]) for r in rows if r["breakdown"] == "summary"} >= {
        ("mono", "AP"), ("multi", "AP"), ("multi", "MaxRankDist")}
    assert (out / "eval" / "heatmap.png").is_file() and "caption -> image" in (out / "eval" / "report.md").read_text()
    # The saved dual encoder trains on (continues from) its own weights: no --image-tower needed.
    args2 = [a if a != str(tiny_model_dir("bert", tmp_path)) else str(out / "model") for a in args]
    args2 = [a for i, a in enumerate(args2) if a != "--image-tower" and args2[i - 1] != "--image-tower"]
    assert main(args2[:-1] + [str(tmp_path / "run2"), "--no-eval"]) == 0


@pytest.mark.parametrize("extra,message", [
    ([], "(--image-tower DIM) to build a dual encoder"),
    (["--image-tower", "16", "--attention", "local", "--attention-option", "window=4"], "--attention) applies"),
    (["--lock-text"], "--lock-text applies"),
])
def test_image_rows_need_a_dual_encoder(files, tmp_path, capsys, extra, message):
    code = main(["train", "--train", str(files["train"]), "--no-eval", "--model", str(tiny_model_dir("bert", tmp_path)),
                 "--max-steps", "1", "--out", str(tmp_path / "o"), *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_image_row_names_the_line(files, tmp_path, capsys):
    (files["train"].parent / "img3.png").unlink()
    code = main(["train", "--train", str(files["train"]), "--no-eval", "--model", str(tiny_model_dir("bert", tmp_path)),
                 "--image-tower", "16", "--max-steps", "1", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "rows.jsonl:10 (group 'g3', lang 'de')" in capsys.readouterr().err


def test_image_tower_with_text_rows_is_an_error(tmp_path, capsys):
    path = tmp_path / "text.jsonl"
    path.write_text("".join(json.dumps({"group_id": f"g{g}", "lang": lang, "query": "q", "passage": "p"}) + "\n"
                            for g in range(4) for lang in ("de", "en")))
    code = main(["train", "--train", str(path), "--no-eval", "--model", str(tiny_model_dir("bert", tmp_path)),
                 "--image-tower", "16", "--max-steps", "1", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "(--image-tower DIM) needs image-text rows" in capsys.readouterr().err
