"""benchmarks/readme_figures.py: every group's commands exist and parse, every README section that
quotes measured numbers has a group, and a run's summary names its date and hardware.

Nothing here trains: commands are parsed by fastssl's own parser and config, never run (except
one `python -c` stand-in for the summary writer).
"""

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from fastssl.cli import _NO_OVERRIDES, build_parser, resolve_config

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("readme_figures", REPO / "benchmarks" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    # The registry fills itself by importing its home module, this one, by name.
    sys.modules["readme_figures"] = module
    spec.loader.exec_module(module)
    return module


rf = _load()
PLACEHOLDERS = rf.Ctx("DATA", "OUT", update=False)


def _sections(path: Path) -> dict[str, str]:
    """Heading (## or ###, without the hashes) -> the text up to the next heading of any level."""
    parts = re.split(r"^(#{2,3} .*)$", path.read_text(), flags=re.M)
    return {parts[i].lstrip("#").strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _section(path: Path, heading: str) -> str:
    found = [body for h, body in _sections(path).items() if h.startswith(heading)]
    assert len(found) == 1, f"{path.name}: {len(found)} headings start with {heading!r}"
    return found[0]


def _fastssl_words(argv: list[str]) -> list[str] | None:
    """The arguments after `-m fastssl` (python -m or torchrun -m), or None for a script."""
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] == "fastssl":
            return argv[i + 2:]
    return None


def _check_script(argv: list[str]) -> None:
    script = Path(argv[1])
    assert script.is_file(), f"{script} does not exist"
    source = script.read_text()
    for flag in (w.split("=")[0] for w in argv[2:] if w.startswith("--")):
        assert f'"{flag}"' in source, f"{script.name} has no option {flag}"


def _check_fastssl(words: list[str]) -> None:
    """The subcommand exists and takes these options: the CLI's own parser, then for `train` the
    config's key and value checks (what `fastssl train` runs before it trains)."""
    args, rest = build_parser().parse_known_args(words)
    if args.command in _NO_OVERRIDES:
        assert rest == [], f"fastssl {' '.join(words[:2])}: unknown arguments {rest}"
    else:
        resolve_config(args.recipe, rest, args.config)


def check_commands(name: str) -> None:
    for update in (False, True):
        for command in rf.commands(name, rf.Ctx("DATA", "OUT", update)):
            _, argv = rf.argv_of(command)
            words = _fastssl_words(argv)
            if words is None:
                _check_script(argv)
            else:
                _check_fastssl(words)


@pytest.mark.parametrize("name", rf.FIGURES.names())
def test_group_commands_exist_and_parse(name):
    check_commands(name)


def test_a_group_whose_script_is_missing_fails(monkeypatch):
    monkeypatch.setattr(rf, "commands", lambda name, ctx: ["python benchmarks/no_such_script.py --runs X"])
    with pytest.raises(AssertionError, match="does not exist"):
        check_commands("quickstart")
    monkeypatch.setattr(rf, "commands", lambda name, ctx: ["fastssl bench stepp --model vit_small"])
    with pytest.raises(SystemExit):
        check_commands("quickstart")


def check_feeds(groups: list[str]) -> None:
    """Each feed's heading, quoted text and group name are in its README; every README.md section quoting
    measured numbers (a % figure, or a table row with a decimal or an images/s column) is fed by a group."""
    fed = set()
    for name in groups:
        for file, heading, quote in rf.FIGURES.entry(name).meta["feeds"]:
            body = _section(REPO / file, heading)
            assert quote in body, f"{name}: {quote!r} not under {file} {heading!r}"
            assert f"`{name}`" in body, f"{file} {heading!r} does not name its group `{name}`"
            fed.add((file, heading))
    measured = re.compile(r"\d%|^\|.*(\d\.\d|img/s|images/s).*\|$", re.M)
    for heading, body in _sections(REPO / "README.md").items():
        if measured.search(body):
            assert any(f == "README.md" and heading.startswith(h) for f, h in fed), \
                f"README.md section {heading!r} quotes measured numbers but no figure group feeds it"


def test_every_readme_figure_section_has_a_group():
    check_feeds(rf.FIGURES.names())


def test_a_section_left_out_of_the_registry_fails():
    without = [n for n in rf.FIGURES.names() if n != "time-budgets"]  # the only feed of "CLI reference"
    with pytest.raises(AssertionError, match="CLI reference"):
        check_feeds(without)


def test_readmes_name_the_one_command():
    for file in ("README.md", "benchmarks/README.md"):
        assert "python benchmarks/readme_figures.py --only" in (REPO / file).read_text(), file


def test_list_and_dry_run(capsys, tmp_path):
    assert rf.main(["--list"]) == 0
    listing = capsys.readouterr().out
    for name in rf.FIGURES.names():
        assert f"{name}  (~" in listing
    assert "feeds README.md \"Set up\"" in listing and "$ python benchmarks/cpu_recipes.py" in listing
    out = tmp_path / "figs"
    assert rf.main(["--only", "strategies,bench-loss", "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"--csv {out}/strategies/step.csv" in printed and "benchmarks/results" not in printed
    assert not out.exists(), "a dry run writes nothing"
    assert rf.main(["--only", "bench-loss", "--dry-run", "--update-results", "--out", str(out)]) == 0
    assert "--csv benchmarks/results/loss.csv" in capsys.readouterr().out
    assert rf.main(["--only", "quickstar", "--list"]) == 2
    assert "Did you mean 'quickstart'" in capsys.readouterr().err


def test_header_names_date_hardware_load_versions_commit():
    m = rf.machine()
    text = "\n".join(rf.header(m, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0)))
    for needed in ("date (UTC): ", m["date"], m["cpu_model"], f"{m['cpu_cores']} cores", "GiB RAM", "GPU: ",
                   "1.0 / 2.0 / 3.0 at start, 4.0 / 5.0 / 6.0 at end", f"torch {m['torch']}",
                   f"python {m['python']}", f"commit {m['commit']}"):
        assert needed in text


def test_run_writes_summary_in_the_run_folder(monkeypatch, tmp_path):
    """The runner with a stand-in command: summary.md with the header and the group's output."""
    stand_in = "python -c \"open('x.csv', 'w').write('a\\n'); print('row 1')\""
    monkeypatch.setattr(rf, "commands", lambda name, ctx: [stand_in])
    args = argparse.Namespace(out=str(tmp_path / "run"), data=str(tmp_path), update_results=False, dry_run=False)
    assert rf.run(["quickstart"], args) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "- date (UTC): " in summary and "- hardware: " in summary and "## quickstart" in summary
    assert "row 1" in summary and "`x.csv`" in summary
    assert (tmp_path / "run" / "quickstart" / "x.csv").is_file(), "a script's relative output lands in the group folder"


def test_missing_data_is_a_one_line_error(capsys, tmp_path):
    assert rf.main(["--only", "lightly", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "cifar10 not found; pass --data" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
