"""The QEMU version table: syntax per version, and which known defects apply when."""

from __future__ import annotations

from colospec.versions import defects_for, syntax_for


def ids(*args) -> list[str]:
    return [d.id for d in defects_for(*args)]


def test_syntax_is_looked_up_by_major_and_minor():
    assert syntax_for("7.2") is syntax_for("7.2.22")
    assert syntax_for("7.2").nbd_export == "block-export-add"
    assert syntax_for("6.2") is None


def test_tcg_deadlock_applies_to_tcg_and_auto_but_not_kvm():
    assert ids("7.2", "tcg") == ["colo-tcg-checkpoint-deadlock"]
    assert ids("7.2", "auto") == ["colo-tcg-checkpoint-deadlock"]
    assert ids("7.2", "kvm") == []


def test_a_build_carrying_the_fix_is_exempt():
    fixed = "Debian 1:7.2+dfsg-7+deb12u18 + colospec colo-tcg"
    assert ids("7.2.22", "tcg", fixed) == []
    assert ids("7.2.22", "tcg", "Debian 1:7.2+dfsg-7+deb12u18") == ["colo-tcg-checkpoint-deadlock"]


def test_the_10_0_regression_covers_10_0_0_to_10_0_6():
    assert "colo-never-entered-10.0" in ids("10.0.3", "kvm")
    assert "colo-never-entered-10.0" in ids("10.0", "kvm")  # may be any 10.0.x
    assert "colo-never-entered-10.0" not in ids("10.0.7", "kvm")
    assert "colo-never-entered-10.0" not in ids("9.2.0", "kvm")
