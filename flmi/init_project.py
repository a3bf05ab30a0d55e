"""``flmi init DIR --template NAME`` and ``flmi examples``: a new project from a shipped template.

Each template is a folder of package data under ``flmi/templates/NAME``
(configs, a manifest, a ``README.md``), copied as it is into ``DIR``.
:data:`TEMPLATES` says what each is and which command runs it; a test checks
that it names exactly the folders shipped.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TypeAlias

from flmi.core.errors import FlmiError
from flmi.core.suggest import one_line, suggest


@dataclass(frozen=True)
class Template:
    """A project template.

    Parameters
    ----------
    summary
        One line: what the project does and what it needs.
    config
        The file ``flmi run`` (or ``flmi server``) takes, inside the project.
    next_step
        What to do after ``flmi init``, printed then.
    """

    summary: str
    config: str
    next_step: str


#: Every template, by the name ``--template`` takes.
TEMPLATES: dict[str, Template] = {
    "demo": Template(
        summary="4 generated hospitals, FedAvg vs pooled vs local; no data, offline",
        config="config.toml",
        next_step="flmi run config.toml",
    ),
    "breastmnist": Template(
        summary="BreastMNIST ultrasound over 4 simulated hospitals (Dirichlet label skew)",
        config="config.toml",
        next_step="put breastmnist.npz in data/ (README.md), then flmi run config.toml",
    ),
    "heart-disease": Template(
        summary="Fed-Heart-Disease: 4 real hospitals, FLamby's split, logistic regression",
        config="config.toml",
        next_step="put the four UCI processed.*.data files in data/, then flmi run config.toml",
    ),
    "dicom-manifest": Template(
        summary="your own DICOM images listed in manifest.csv, one site per hospital",
        config="config.toml",
        next_step="list your images in manifest.csv (README.md), then flmi run config.toml",
    ),
    "deploy": Template(
        summary="a deployment kit: fed.toml, one SITE.toml per hospital, certs/server/client",
        config="fed.toml",
        next_step="follow README.md: flmi certs init ca, flmi server, then flmi client per site",
    ),
}


class InitError(FlmiError):
    """``flmi init`` cannot create the project (unknown template, a non-empty folder)."""


def template_files(name: str) -> Traversable:
    """The shipped folder of template ``name``.

    Raises
    ------
    InitError
        No template has that name; the message suggests the nearest.
    """
    if name not in TEMPLATES:
        raise InitError(
            f"flmi init: no template '{name}'; "
            + suggest(name, TEMPLATES, f"choose one of {one_line(TEMPLATES)} (flmi examples)")
        )
    return resources.files("flmi").joinpath("templates", name)


def _copy(source: Traversable, target: Path) -> list[Path]:
    written = []
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        path = target / entry.name
        if entry.is_dir():
            path.mkdir(exist_ok=True)
            written += _copy(entry, path)
        else:
            path.write_bytes(entry.read_bytes())
            written.append(path)
    return written


def init_project(*, directory: Path, template: str, force: bool = False) -> list[Path]:
    """Copy template ``template`` into ``directory`` and return the files written.

    Parameters
    ----------
    directory
        The project folder; created if absent.
    template
        A name of :data:`TEMPLATES`.
    force
        Write into a folder that already holds files (a file of the template's
        name is replaced; other files are left as they are).

    Raises
    ------
    InitError
        An unknown template, ``directory`` is a file, or it is not empty and
        ``force`` is not set. Nothing is written then.
    """
    source = template_files(template)
    if directory.exists() and not directory.is_dir():
        raise InitError(f"flmi init: {directory} is a file; give a folder for the project")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InitError(
            f"flmi init: {directory} is not empty; choose a new or empty folder, or add "
            "--force to write the template's files into it (files of the same name are replaced)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return _copy(source, directory)


def listing() -> str:
    """``flmi examples``: one line per template, then how to use one."""
    width = max(map(len, TEMPLATES)) + 2
    lines = [f"{name:<{width}}{t.summary}" for name, t in TEMPLATES.items()]
    lines.append("")
    lines.append("flmi init DIR --template NAME  writes one into DIR (with a README.md)")
    return "\n".join(lines) + "\n"


#: What ``add_subparsers()`` returns: the ``flmi`` subcommands.
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_commands(sub: _Commands) -> None:
    """Add ``flmi init`` and ``flmi examples`` to the ``flmi`` parser."""
    init = sub.add_parser("init", help="start a project from a template (flmi examples lists them)")
    init.add_argument("directory", type=Path, help="the project folder to create")
    init.add_argument(
        "--template",
        default="demo",
        metavar="NAME",
        help=f"one of {', '.join(TEMPLATES)} (default: demo)",
    )
    init.add_argument(
        "--force", action="store_true", help="write into a folder that already holds files"
    )
    sub.add_parser("examples", help="list the project templates flmi init takes")


def run_command(args: argparse.Namespace) -> int:
    """Run ``flmi init`` or ``flmi examples``; return the exit status."""
    if args.command == "examples":
        print(listing(), end="")
        return 0
    files = init_project(directory=args.directory, template=args.template, force=args.force)
    template = TEMPLATES[args.template]
    print(f"{args.template} project in {args.directory}: {len(files)} files")
    for path in files:
        print(f"  {path.relative_to(args.directory)}")
    print(f"next: cd {args.directory} && {template.next_step}")
    return 0
