"""Every subcommand answers bad input with one line naming what was wrong, exit 2, never a traceback."""

import pytest

from ecanet.cli import main


@pytest.fixture
def files(tmp_path):
    (tmp_path / "notes.txt").write_text("not weights")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{broken")
    return tmp_path


CASES = [
    (["info", "resnet7"], "unknown model 'resnet7'"),
    (["bench", "--models", "nonet"], "unknown model 'nonet'"),
    (["eval", "--weights", "{d}/missing.pt", "--val-dir", "{d}"], "missing.pt: no such checkpoint file"),
    (["eval", "--weights", "{d}/notes.txt", "--val-dir", "{d}"], "notes.txt: not a PyTorch or safetensors checkpoint"),
    (["export", "--weights", "{d}/missing.pt", "--output", "{d}/m.pt2"], "missing.pt: no such checkpoint file"),
    (["export", "--model", "resnet20", "--format", "exported", "--output", "{d}/m.pt"], "saved as a .pt2 file"),
    (["viz", "attention", "{d}/none.png", "--weights", "{d}/notes.txt"], "notes.txt: not a PyTorch"),
    (["report", "{d}/run"], "config.json: not valid JSON"),
    (["train", "--eca-k", "three"], "--eca-k: expected 'released', 'adaptive' or odd ints"),
    (["train", "--config", "{d}/notes.txt"], "--config: {d}/notes.txt: not valid JSON"),
    (["detect", "predict", "{d}/none.png", "--weights", "{d}/notes.txt"], "notes.txt: not a PyTorch"),
    (["segment", "eval", "--weights", "{d}/notes.txt"], "give --voc DIR, or --images DIR and --masks DIR"),
    (["segment", "predict", "{d}/none.png", "--weights", "{d}/notes.txt"], "notes.txt: not a PyTorch"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_bad_input_is_one_line(files, capsys, argv, message):
    assert main([a.format(d=files) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ecanet {argv[0]}: error: "), err
    assert message.format(d=files) in err[0]


def test_every_help_page_renders():
    """argparse formats help strings with %: a stray one breaks --help; every page is rendered here."""
    import argparse

    from ecanet.cli import build_parser

    def pages(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from pages(sub)

    rendered = [p.format_help() for p in pages(build_parser())]
    assert len(rendered) > 15 and all("usage:" in page for page in rendered)
