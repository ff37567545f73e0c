"""The bf16-vs-fp32 accuracy record (analysis/studies/precision.py): its arms, its checks on load, and
its table's intervals and verdicts against hand-computed values."""

from __future__ import annotations

import json

import pytest

from analysis.core.errors import CheckpointError, ConfigError
from analysis.studies import precision


def _rec(fp32, bf16, n=450):
    def runs(w):
        return [{"seed": s, "wrong": x, "n": n, "seconds": 10.0 + s, "recipe": {}} for s, x in enumerate(w)]

    return {"format": precision.FORMAT, "seeds": list(range(len(fp32))), "machine": {},
            "nets": {"digits_resnet20": {"dataset": "digits16", "model": "cifar_resnet20",
                                         "arms": {"fp32": runs(fp32), "bf16": runs(bf16)}}}}


def test_arms_are_the_shipped_recipe_in_fp32_and_in_bf16():
    net = precision.NETS["digits_resnet56"]
    fp32, bf16 = precision.config(net, "fp32", 3), precision.config(net, "bf16", 3)
    assert (fp32.epochs, fp32.batch_size, fp32.lr, fp32.seed) == (40, 32, 0.05, 3)  # checkpoints/README.md
    assert fp32.amp == "off" and not fp32.channels_last
    assert bf16.amp == "bf16" and bf16.channels_last and bf16.lr == 0.05
    one_d = precision.config(precision.NETS["mnist1d_resnet56"], "bf16", 0)
    assert one_d.amp == "bf16" and not one_d.channels_last  # 1-D nets have no channels-last layout
    # the painters study's file name for the same fp32 seed, so one cache serves both
    assert precision.cache_name(net, "fp32", 3) == "digits_resnet56_s3.pt"
    assert precision.cache_name(net, "bf16", 3) == "digits_resnet56_bf16_s3.pt"
    with pytest.raises(ConfigError, match="unknown arm"):
        precision.config(net, "fp8", 0)


def test_table_reads_intervals_and_verdicts():
    # fp32 errors 4,5,6,5,5 of 450: mean 5/450 = 1.111 %, sd = sqrt(0.5)/450, t(0.975, 4) = 2.776445
    # half width = 2.776445 * 0.707107 / sqrt(5) / 450 = 0.1951 % -> "1.11 ± 0.20"
    df = precision.table(_rec([4, 5, 6, 5, 5], [5, 5, 5, 5, 5]))
    row = df.iloc[0]
    assert row["fp32 error (%)"].startswith("1.11 ± 0.20 ")
    assert row["bf16 error (%)"].startswith("1.11 ± 0.00 ")
    assert row["bf16 vs fp32"] == "within the fp32 interval; paired difference includes 0"
    assert row["fp32 s/run"] == 12.0 and row["seeds"] == 5
    # paired differences 1, 0, -1, 0, 0 images: sd = sqrt(2/4); (t(.975, 4) + t(.8, 4)) * sd / sqrt(5)
    # = (2.776445 + 0.940965) * 0.707107 / 2.236068 = 1.1755 test images
    assert row["detectable (test images)"] == 1.2
    far = precision.table(_rec([4, 5, 6, 5, 5], [20, 21, 22, 21, 21])).iloc[0]
    assert far["bf16 vs fp32"] == "outside the fp32 interval; paired difference excludes 0"


def test_one_seed_is_said_to_be_one_run():
    row = precision.table(_rec([4], [5])).iloc[0]
    assert row["fp32 error (%)"].endswith("(one run)") and row["bf16 vs fp32"].startswith("one run")


@pytest.mark.parametrize(("damage", "match"), [
    (lambda r: r.update(format="x"), "not a precision record"),
    (lambda r: r["nets"]["digits_resnet20"]["arms"]["bf16"].pop(), "not over the record's seeds"),
    (lambda r: r["nets"]["digits_resnet20"]["arms"]["fp32"][0].update(wrong=451), "451 wrong of 450"),
    (lambda r: r["nets"]["digits_resnet20"]["arms"]["fp32"][0].update(wrong=True), "True wrong"),
    (lambda r: r["nets"]["digits_resnet20"]["arms"].pop("bf16"), "not a complete precision record"),
])
def test_a_damaged_record_is_refused(tmp_path, damage, match):
    rec = _rec([4, 5], [5, 6])
    damage(rec)
    p = tmp_path / "precision.json"
    p.write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match=match):
        precision.load(p)


def test_a_sound_record_round_trips(tmp_path):
    rec = _rec([4, 5, 6], [5, 6, 4])
    p = precision.save(tmp_path / "p.json", rec)
    assert precision.load(p)["nets"] == rec["nets"]
