"""Commands that help set things up: shell completion, the pipeline schema, a starter folder."""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from orchestrator.cli.parser import EXIT_BAD_INPUT, EXIT_OK, build_parser
from orchestrator.cli.session import err, out

__all__ = ["STARTER_FILES", "cmd_completion", "cmd_init", "cmd_schema", "schema_text"]

STARTER_FILES = ("pipeline.yaml", "data/train.jsonl", "data/validation.jsonl",
                 "config/orchestrator.toml")
"""What `init` writes (from the package's `cli/starter/`), plus `pipeline.schema.json`."""


def cmd_completion(args: argparse.Namespace) -> int:
    from orchestrator.cli.completion import script  # noqa: PLC0415

    print(script(build_parser(), args.shell), end="")
    return EXIT_OK


def schema_text() -> str:
    """The JSON Schema of pipeline files using the built-in step types, as a document."""
    from orchestrator.steps.builtin import BUILTIN  # noqa: PLC0415
    from orchestrator.steps.schema import pipeline_schema  # noqa: PLC0415

    return json.dumps(pipeline_schema(BUILTIN), indent=2) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    print(schema_text(), end="")
    return EXIT_OK


IGNORED = (".orchestrator/", ".env")
"""What a starter folder keeps out of version control: the state database, the local API's
files and the runs' artifacts (`.orchestrator/`), and the secrets (`.env`)."""


def _ignore_state(folder: Path) -> bool:
    """A `.gitignore` in `folder` that names IGNORED: written, or (one being there) the lines
    it lacks added at its end; never anything of its own taken away."""
    target = folder / ".gitignore"
    try:
        had = target.read_text(encoding="utf-8") if target.is_file() else None
        present = set((had or "").split())
        missing = [line for line in IGNORED if line not in present]
        if not missing:
            return True
        start = "" if not had or had.endswith("\n") else "\n"
        with target.open("a", encoding="utf-8") as file:
            file.write(start + "\n".join(missing) + "\n")
    except (OSError, UnicodeDecodeError) as exc:
        err(f"error: cannot write {target}: {getattr(exc, 'strerror', None) or exc}")
        return False
    out(f"{'wrote' if had is None else 'added ' + ', '.join(missing) + ' to'} {target}")
    return True


def cmd_init(args: argparse.Namespace) -> int:
    """Write the starter files into DIR; refuse (writing nothing) where one is already there,
    unless --force."""
    folder = Path(args.dir)
    if folder.exists() and not folder.is_dir():
        err(f"error: {folder} exists and is not a folder")
        return EXIT_BAD_INPUT
    starter = resources.files("orchestrator.cli").joinpath("starter")
    contents = {name: starter.joinpath(name).read_text(encoding="utf-8")
                for name in STARTER_FILES}
    contents["pipeline.schema.json"] = schema_text()
    taken = [name for name in contents if (folder / name).exists()]
    if taken and not args.force:
        err(f"error: {folder / taken[0]} already exists ({len(taken)} of the starter files "
            "are there); nothing was written (--force overwrites them)")
        return EXIT_BAD_INPUT
    for name, text in contents.items():
        target = folder / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            err(f"error: cannot write {target}: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
        out(f"wrote {target}")
    if not _ignore_state(folder):
        return EXIT_BAD_INPUT
    where = "" if folder.resolve() == Path.cwd().resolve() else f"cd {folder} && "
    err(f"next: {where}orchestrator validate pipeline.yaml && orchestrator run pipeline.yaml")
    return EXIT_OK
