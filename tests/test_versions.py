"""The QEMU version table: syntax per version, and which known defects apply when."""

from __future__ import annotations

from colospec.versions import defects_for, supported_versions, syntax_for


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


def test_every_release_line_the_issue_names_has_a_row():
    assert {"7.2", "8.2", "9.2", "10.0", "10.1", "10.2", "11.0", "11.1"} <= set(
        supported_versions()
    )


def test_the_differences_between_lines_are_data():
    # chardev reconnect: seconds until 9.2 added reconnect-ms (and 10.2 removed reconnect)
    assert syntax_for("8.2").chardev_reconnect == ("reconnect", "1")
    assert syntax_for("9.2").chardev_reconnect == syntax_for("10.2").chardev_reconnect == (
        "reconnect-ms", "1000")  # fmt: skip
    # 11.x refuses x-colo without return-path
    assert syntax_for("10.2").colo_capabilities == ("x-colo",)
    assert syntax_for("11.1").colo_capabilities == ("return-path", "x-colo")
    # the secondary sets x-colo (refused without from 8.1)
    assert all(syntax_for(v).secondary_sets_x_colo for v in supported_versions())


def test_rows_say_what_they_rest_on():
    assert syntax_for("7.2").basis == "ran" and syntax_for("7.2").recorded == "7.2.22"
    assert syntax_for("10.0").recorded == "10.0.13" and syntax_for("11.1").recorded == "11.1.3"
    assert syntax_for("10.0").basis == syntax_for("11.1").basis == "ran"
    assert syntax_for("8.2").recorded is None and syntax_for("8.2").basis == "docs"


def test_the_10_0_defect_is_refused_by_the_runner_not_just_warned():
    (defect,) = [d for d in defects_for("10.0.2", "kvm") if d.id == "colo-never-entered-10.0"]
    assert defect.refuse


def test_the_vm_ft_fork_has_its_own_row_and_only_vm_ft_uses_it():
    fork = syntax_for("2.7", "vm-ft")
    assert (fork.nbd_export, fork.replication_child, fork.secondary_sets_x_colo) == (
        "nbd-server-add", "drive_add", False)  # fmt: skip
    assert syntax_for("2.7") is None  # not upstream's 2.7 for the colo flavour
    assert syntax_for("7.2", "vm-ft") is None
    assert supported_versions("vm-ft") == ["2.7"]
