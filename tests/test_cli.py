from trainset.cli import flag, main


def test_flag_adds_the_plans_underscore_alias():
    assert flag("--raw-root") == ["--raw-root", "--raw_root"]
    assert flag("--seed") == ["--seed"]


def test_no_command_is_a_usage_error(capsys):
    code: int | str | None
    try:
        code = main([])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_group_without_subcommand_prints_help_and_exits_2(capsys):
    assert main(["ptycho"]) == 2
    assert "usage: trainset ptycho" in capsys.readouterr().err


def test_doctor_reports_torch_and_exits_0(cli, tmp_path):
    result = cli("doctor", "--out_root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "torch" in result.stdout and "free disk" in result.stdout
    assert result.stdout.strip().endswith("usable")


def test_demo_into_an_unwritable_place_exits_2_naming_the_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["demo", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{blocker / 'out'}: key '--out': cannot create the demo output folder" in err
    assert "found Not a directory" in err


def test_os_error_in_a_command_is_one_line_and_exit_2(monkeypatch, capsys):
    from trainset import doctor

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", "/data/out/depth_0001.npz")

    monkeypatch.setattr(doctor, "run_doctor", full_disk)
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "trainset: error: [Errno 28] No space left on device: '/data/out/depth_0001.npz'\n"
    )
