"""disk.json: which epoch each host's disk belongs to, and when a normal bring-up must not go on."""

from __future__ import annotations

import pytest

from colospec.runner.diskstate import DisksDiffer, DiskState, compare

CASES = [
    # (mine, peer's report, refused?, words the refusal has)
    (DiskState(0), {"epoch": 0, "stale": False}, None),
    (DiskState(3), {"epoch": 3, "stale": False}, None),
    (DiskState(0), {"epoch": 2, "stale": False}, "peer's disk served at epoch 2"),
    (DiskState(2), {"epoch": 1, "stale": False}, "start this host with `colospec run --force-primary`"),
    (DiskState(2, stale=True), {"epoch": 2, "stale": False}, "this host's disk is stale"),
    (DiskState(2), {"epoch": 2, "stale": True}, "peer's disk is stale"),
    (DiskState(1), {}, "start this host with"),  # a peer without a record is at epoch 0
]  # fmt: skip


@pytest.mark.parametrize("mine, theirs, refusal", CASES)
def test_compare(mine, theirs, refusal):
    if refusal is None:
        compare(mine, theirs, "peer")
        return
    with pytest.raises(DisksDiffer, match=refusal.replace("`", ".").replace("-", ".")):
        compare(mine, theirs, "peer")


def test_both_hosts_refuse_when_their_disks_differ():
    """Each host checks from its own side: the two answers never let either one go on."""
    for a in (DiskState(0), DiskState(1), DiskState(1, stale=True), DiskState(2)):
        for b in (DiskState(0), DiskState(1), DiskState(1, stale=True), DiskState(2)):
            verdicts = []
            for mine, theirs in ((a, b), (b, a)):
                try:
                    compare(mine, theirs.report(), "peer")
                    verdicts.append(True)
                except DisksDiffer:
                    verdicts.append(False)
            assert verdicts[0] == verdicts[1], (a, b)
            assert verdicts[0] == (a == b and not a.stale), (a, b)


def test_no_file_is_a_first_bring_up(tmp_path):
    assert DiskState.load(tmp_path / "none") == DiskState(0, stale=False)


def test_saved_state_survives_and_is_private(tmp_path):
    where = tmp_path / "var/lib/colospec/p/h"
    DiskState(4, stale=True).save(where)
    assert DiskState.load(where) == DiskState(4, stale=True)
    assert (where.stat().st_mode & 0o777) == 0o700
    assert [p.name for p in where.iterdir()] == ["disk.json"]  # no temporary file left


@pytest.mark.parametrize("text", ["", "{", '{"epoch": "x", "stale": false}', '{"epoch": 1}'])
def test_an_unreadable_file_refuses_rather_than_guesses(tmp_path, text):
    (tmp_path / "disk.json").write_text(text)
    with pytest.raises(DisksDiffer, match="unreadable"):
        DiskState.load(tmp_path)
