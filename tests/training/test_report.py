import json

from ecanet.cli import main


def test_report_renders_from_a_tiny_run(trained_run, capsys):
    out = trained_run
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert str(out / "report.html") in capsys.readouterr().out
    assert page.count('src="data:image/png;base64,') == 2  # curves and the attention figure, inlined
    assert page.count("<tr>") >= 2 + 1 + 2  # metrics header + 2 epochs, summary, config
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['params']}" in page and "eca_resnet20" in page


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a training output folder (no config.json)" in capsys.readouterr().err
