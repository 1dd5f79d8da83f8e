"""`clipdepth caption --dataset`: the frames' data settings as data.<field>=<value> overrides, as the
docs/tr2m.md ("Running it") writes them (the captioning model itself is replaced: none is available offline)."""

from __future__ import annotations

import pytest

from clipdepth.cli.main import main
from clipdepth.data import captioning


@pytest.fixture
def captioned(monkeypatch):
    """The (name, image) jobs `caption` hands to the captioning step, which is not run."""
    seen: dict = {}

    def record(jobs, out, model_name, **options):
        seen.update(jobs={job.name: job.load for job in jobs}, model=model_name, lines=options["lines"])
        return captioning.CaptionReport(written=len(jobs))

    monkeypatch.setattr(captioning, "caption_to_folder", record)
    return seen


def test_the_readme_caption_line_takes_data_overrides(rgbd_samples, captioned, tmp_path, capsys):
    listing = tmp_path / "nyu_train.txt"
    listing.write_text("".join(f"nyu/rgb_{i}.jpg nyu/sync_depth_{i}.png 518.8579\n" for i in ("00000", "00050", "00100")))
    # docs/tr2m.md: clipdepth caption --dataset nyu --split train data.root=/data/nyu data.train_list=... --model ... --lines 5
    assert (
        main(
            [
                "caption",
                "--dataset",
                "nyu",
                "--split",
                "train",
                f"data.root={rgbd_samples}",
                f"data.train_list={listing}",
                "data.val_fraction=0.34",
                "--model",
                "Salesforce/blip-image-captioning-large",
                "--out",
                str(tmp_path / "captions"),
                "--lines",
                "5",
            ]
        )
        == 0
    )
    # 3 listed frames, round(0.34 * 3) = 1 held out for validation
    assert len(captioned["jobs"]) == 2 and all(name.startswith("nyu_rgb_") for name in captioned["jobs"])
    assert captioned["model"] == "Salesforce/blip-image-captioning-large" and captioned["lines"] == 5
    assert "wrote captions for 2 image(s)" in capsys.readouterr().out


def test_data_overrides_before_and_after_the_options_and_bare_fields(captioned, tmp_path):
    assert (
        main(
            [
                "caption",
                "--dataset",
                "synthetic_indoor",
                "--split",
                "val",
                "data.val_size=2",
                "height=24",
                "--model",
                "m",
                "--out",
                str(tmp_path / "c"),
                "data.width=32",
            ]
        )
        == 0
    )
    assert sorted(captioned["jobs"]) == ["indoor_val_00000", "indoor_val_00001"]
    assert captioned["jobs"]["indoor_val_00001"]().shape == (24, 32, 3)  # every override reached the frames


@pytest.mark.parametrize("word", ["train.max_epochs=2", "photos/"])
def test_a_word_that_is_not_a_data_setting_is_one_line(captioned, tmp_path, capsys, word):
    assert main(["caption", "--dataset", "synthetic_indoor", word, "--model", "m", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{word!r}" in err and "data.<field>=<value>" in err
    assert "jobs" not in captioned
