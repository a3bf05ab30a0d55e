"""``flmi init DIR --template NAME`` writes a project whose config runs; ``flmi examples``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from flmi.cli import main
from flmi.config import load_config
from flmi.init_project import TEMPLATES, InitError, init_project, listing
from tests.conftest import SHARED_DATA

HEART = SHARED_DATA / "heart_disease"
DICOM = SHARED_DATA / "dicom"

#: Each template's quick run: overrides that keep it to seconds, and the real data it needs.
QUICK: dict[str, tuple[list[str], Path | None]] = {
    "demo": (
        [
            "federation.rounds=1",
            "data.n_patients=400",
            "data.image_size=16",
            "task.width=4",
            "baselines.pooled=false",
            "baselines.local=false",
        ],
        None,
    ),
    "breastmnist": (
        [
            f"data.path={SHARED_DATA / 'medmnist' / 'breastmnist.npz'}",
            "federation.rounds=1",
            "task.width=4",
            "baselines.pooled=false",
            "baselines.local=false",
            "report.bootstrap_resamples=0",
        ],
        SHARED_DATA / "medmnist" / "breastmnist.npz",
    ),
    "heart-disease": (
        [
            f"data.path={HEART}",
            "federation.rounds=1",
            "federation.local_steps=5",
            "baselines.pooled=false",
            "baselines.local=false",
            "report.bootstrap_resamples=0",
        ],
        HEART,
    ),
}


def _summary(run: Path) -> dict[str, object]:
    summary = json.loads((run / "summary.json").read_text())
    assert isinstance(summary, dict)
    return summary


def test_the_templates_listed_are_exactly_the_folders_shipped() -> None:
    shipped = {e.name for e in resources.files("flmi").joinpath("templates").iterdir()}

    assert shipped - {"__pycache__"} == set(TEMPLATES)
    for name in TEMPLATES:
        files = {e.name for e in resources.files("flmi").joinpath("templates", name).iterdir()}
        assert "README.md" in files and TEMPLATES[name].config in files, name


def test_flmi_examples_gives_one_line_per_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["examples"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[: len(TEMPLATES)]] == list(TEMPLATES)
    assert lines[0].startswith("demo") and TEMPLATES["demo"].summary in lines[0]
    assert "flmi init DIR --template NAME" in listing()


def test_init_refuses_a_folder_that_holds_files_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    with pytest.raises(InitError, match=r"is not empty; .*--force"):
        init_project(directory=tmp_path, template="demo")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_with_force_writes_beside_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    written = init_project(directory=tmp_path, template="demo", force=True)

    assert sorted(p.name for p in written) == ["README.md", "config.toml"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_init_on_the_command_line_names_the_problem_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")

    assert main(["init", str(tmp_path / "taken")]) == 2
    assert main(["init", str(tmp_path / "new"), "--template", "heart-disase"]) == 2

    err = capsys.readouterr().out
    assert "is not empty" in err
    assert "did you mean 'heart-disease'?" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(QUICK))
def test_an_initialised_project_runs_its_config(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides, needs = QUICK[name]
    if needs is not None and not needs.exists():
        pytest.skip(f"{name}: the real data is not at {needs} (the shared data folder is absent)")
    project = tmp_path / "project"
    assert main(["init", str(project), "--template", name]) == 0
    config = project / TEMPLATES[name].config

    sets = [arg for key in overrides for arg in ("--set", key)]
    assert main(["run", str(config), "--out", str(tmp_path / "run"), *sets]) == 0

    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert "federated" in _summary(tmp_path / "run")["arms"]  # type: ignore[operator]
    if name == "heart-disease":  # partition.num_sites is left to the data
        assert "fedavg on 4 sites" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not DICOM.is_dir(), reason=f"no sample DICOM files at {DICOM}")
def test_the_dicom_template_runs_on_real_dicom_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    init_project(directory=project, template="dicom-manifest")
    header = (project / "manifest.csv").read_text().splitlines()[0]
    files = sorted(DICOM.glob("*.dcm"))
    rows = [
        f"{files[i % len(files)]},{i % 2},{site}"
        for site in ("hospital_a", "hospital_b")
        for i in range(4)
    ]
    (project / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")

    run = ["run", str(project / "config.toml"), "--out", str(tmp_path / "run")]
    code = main([*run, "--set", "federation.rounds=1"])

    assert code == 0
    assert "fedavg on 2 sites" in capsys.readouterr().out  # counted from the site column
    per_site = _summary(tmp_path / "run")["arms"]["federated"]["per_site"]  # type: ignore[index]
    assert sorted(per_site) == ["hospital_a", "hospital_b"]


def test_the_dicom_template_as_shipped_names_its_missing_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_project(directory=tmp_path / "p", template="dicom-manifest")

    code = main(["run", str(tmp_path / "p" / "config.toml"), "--out", str(tmp_path / "run")])

    assert code == 2
    assert "patient_001.dcm" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_the_deploy_kit_passes_the_config_and_site_checks(tmp_path: Path) -> None:
    pytest.importorskip("grpc")
    from flmi.runtime.grpc.siteconf import load_site_settings

    init_project(directory=tmp_path, template="deploy")

    fed = load_config(tmp_path / "fed.toml")
    assert fed.deploy.sites == ["hospital_1", "hospital_2"]
    assert fed.deploy.revocation_list == str(tmp_path / "revoked.txt")
    for site in fed.deploy.sites:
        settings = load_site_settings(tmp_path / f"{site}.toml", site=site)
        assert settings.federation_config == tmp_path / "fed.toml"
        plan = {"lr": fed.federation.lr, "optimizer": fed.federation.optimizer, "local_epochs": 1}
        assert (
            settings.bounds.check_plan(
                strategy=fed.strategy.name, rounds=fed.federation.rounds, hparams=plan
            )
            is None
        )


@pytest.mark.slow
def test_the_deploy_kit_runs_a_real_round_on_127_0_0_1(tmp_path: Path) -> None:
    pytest.importorskip("grpc")
    from flmi.runtime.grpc.provisioning import init_ca
    from tests.runtime.deploy_support import Deployment, metrics, output, wait

    kit = tmp_path / "kit"
    init_project(directory=kit, template="deploy")
    fed = kit / "fed.toml"
    fed.write_text(fed.read_text().replace("rounds = 5", "rounds = 1"))
    init_ca(ca_dir=kit / "ca", server_name="127.0.0.1")
    dep = Deployment(root=kit, ca=kit / "ca", fed=fed)
    try:
        server, address = dep.start_server(out=kit / "run")
        clients = [
            dep.start_client(site, address, data=kit / f"{site}.toml")
            for site in ("hospital_1", "hospital_2")
        ]

        assert [wait(c) for c in clients] == [0, 0], [output(c) for c in clients]
        assert wait(server) == 0
    finally:
        for process in dep.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    (line,) = metrics(kit / "run")
    assert sorted(line["per_site"]) == ["hospital_1", "hospital_2"]
    assert (kit / "state" / "hospital_1" / "audit.jsonl").is_file()


def test_the_demo_and_deploy_templates_match_the_repository_examples() -> None:
    from tests.conftest import REPO

    templates = REPO / "flmi" / "templates"
    assert (templates / "demo" / "config.toml").read_text() == (
        REPO / "examples" / "demo.toml"
    ).read_text()
    for name in ("hospital_1.toml", "hospital_2.toml", "revoked.txt"):
        assert (templates / "deploy" / name).read_text() == (
            REPO / "examples" / "deploy" / name
        ).read_text(), name
