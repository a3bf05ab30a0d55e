"""MedMNIST by name: download only when allowed, MD5 checked, clear message offline."""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flmi.config import config_from_dict, load_config
from flmi.core.errors import ConfigError, DataError
from flmi.data.download import MEDMNIST_FILES, fetch_medmnist, file_md5, medmnist_file
from flmi.data.medmnist import load_medmnist_npz
from flmi.data.sources import load_data
from tests.conftest import BREASTMNIST, SHARED_DATA, requires_breastmnist, tiny_tables, write_config

OFFICIAL_BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """Serve ``tmp_path/served`` on 127.0.0.1: the real BreastMNIST file and a corrupt copy."""
    if not BREASTMNIST.is_file():
        pytest.skip(
            f"real BreastMNIST not found at {BREASTMNIST} (the shared data folder is absent)"
        )
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(BREASTMNIST, served / "breastmnist.npz")
    corrupt = bytearray(BREASTMNIST.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    (served / "corrupt.npz").write_bytes(bytes(corrupt))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens: what "offline" looks like."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/breastmnist.npz"


def test_good_file_is_downloaded_checked_and_kept(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    path = fetch_medmnist(
        name="breastmnist",
        cache_dir=cache,
        allow_download=True,
        url=f"{server}/breastmnist.npz",
    )

    assert path == cache / "breastmnist.npz"
    assert file_md5(path) == OFFICIAL_BREAST_MD5
    assert len(load_medmnist_npz(path=path).train) == 546
    assert sorted(p.name for p in cache.iterdir()) == ["breastmnist.npz"]  # no partial file left


def test_corrupt_download_is_refused_and_nothing_is_kept(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    with pytest.raises(
        DataError, match=rf"not the official {OFFICIAL_BREAST_MD5}.*nothing was kept"
    ):
        fetch_medmnist(
            name="breastmnist", cache_dir=cache, allow_download=True, url=f"{server}/corrupt.npz"
        )

    assert list(cache.iterdir()) == []


def test_download_not_allowed_says_where_to_put_the_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    with pytest.raises(DataError) as caught:
        fetch_medmnist(name="breastmnist", cache_dir=cache, allow_download=False)

    message = str(caught.value)
    assert "data.allow_download = true" in message
    assert str(cache / "breastmnist.npz") in message
    assert "zenodo.org/records/10519652/files/breastmnist.npz" in message
    assert not cache.exists()  # nothing was created


def test_offline_download_fails_with_where_to_put_the_file(
    tmp_path: Path, closed_port_url: str
) -> None:
    cache = tmp_path / "cache"

    with pytest.raises(DataError, match=r"could not download .* put it at .*breastmnist\.npz"):
        fetch_medmnist(
            name="breastmnist", cache_dir=cache, allow_download=True, url=closed_port_url
        )

    assert list(cache.iterdir()) == []


def test_missing_file_on_the_server_is_a_clear_error(server: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="could not download .*404"):
        fetch_medmnist(
            name="breastmnist",
            cache_dir=tmp_path / "cache",
            allow_download=True,
            url=f"{server}/nothing.npz",
        )


@requires_breastmnist
def test_cached_file_with_the_official_md5_is_used_without_any_download(
    tmp_path: Path, closed_port_url: str
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(BREASTMNIST, cache / "breastmnist.npz")

    path = fetch_medmnist(
        name="breastmnist", cache_dir=cache, allow_download=True, url=closed_port_url
    )

    assert path == cache / "breastmnist.npz"


def test_cached_file_with_a_wrong_md5_is_refused_when_downloads_are_off(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "breastmnist.npz").write_bytes(b"truncated")

    with pytest.raises(DataError, match="is not the official .* delete it"):
        fetch_medmnist(name="breastmnist", cache_dir=cache, allow_download=False)

    assert (cache / "breastmnist.npz").read_bytes() == b"truncated"  # left for the user to see


def test_cached_file_with_a_wrong_md5_is_replaced_when_downloads_are_on(
    server: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "breastmnist.npz").write_bytes(b"truncated")

    path = fetch_medmnist(
        name="breastmnist", cache_dir=cache, allow_download=True, url=f"{server}/breastmnist.npz"
    )

    assert file_md5(path) == OFFICIAL_BREAST_MD5


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown MedMNIST data set 'breast'.*breastmnist"):
        fetch_medmnist(name="breast", cache_dir=tmp_path, allow_download=True)


def test_table_covers_2d_and_3d_sets_with_zenodo_urls() -> None:
    for name in ("breastmnist", "pneumoniamnist", "dermamnist", "organamnist", "nodulemnist3d"):
        entry = medmnist_file(name)
        assert re.fullmatch(r"[0-9a-f]{32}", entry.md5)
        assert entry.url == f"https://zenodo.org/records/10519652/files/{name}.npz?download=1"
    assert len({f.md5 for f in MEDMNIST_FILES.values()}) == len(MEDMNIST_FILES)


def test_breastmnist_md5_matches_the_shared_data_readme() -> None:
    readme = SHARED_DATA / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} not found (the shared data folder is absent)")

    listed = re.search(r"^([0-9a-f]{32})\s+medmnist/breastmnist\.npz$", readme.read_text(), re.M)

    assert listed is not None
    assert medmnist_file("breastmnist").md5 == listed.group(1) == OFFICIAL_BREAST_MD5


@requires_breastmnist
def test_real_breastmnist_file_has_the_tabled_md5() -> None:
    assert file_md5(BREASTMNIST) == medmnist_file("breastmnist").md5


def test_config_by_name_downloads_into_a_cache_dir_relative_to_the_config(
    server: str, tmp_path: Path
) -> None:
    tables = tiny_tables(
        data={
            "source": "medmnist",
            "name": "breastmnist",
            "allow_download": True,
            "cache_dir": "cache",
            "download_url": f"{server}/breastmnist.npz",
        },
        partition={"method": "iid", "num_sites": 2},
    )
    config = load_config(write_config(tmp_path / "run.toml", tables))

    data = load_data(config)

    assert config.data.cache_dir == str(tmp_path / "cache")
    assert (tmp_path / "cache" / "breastmnist.npz").is_file()
    assert sum(len(s.train) for s in data.sites.values()) == 546


def test_config_by_name_without_download_permission_fails_before_anything_runs(
    tmp_path: Path,
) -> None:
    tables = tiny_tables(
        data={"source": "medmnist", "name": "breastmnist", "cache_dir": str(tmp_path)},
        partition={"method": "iid", "num_sites": 2},
    )

    with pytest.raises(DataError, match="downloads are off"):
        load_data(config_from_dict(tables))


def test_medmnist_needs_a_path_or_a_name() -> None:
    tables = tiny_tables(data={"source": "medmnist"}, partition={"method": "iid"})

    with pytest.raises(ConfigError, match="needs data.path .* or data.name"):
        config_from_dict(tables)


def test_path_with_a_name_must_have_that_data_sets_official_md5(tmp_path: Path) -> None:
    fake = tmp_path / "breastmnist.npz"
    fake.write_bytes(b"not the official file")
    tables = tiny_tables(
        data={"source": "medmnist", "name": "breastmnist", "path": str(fake)},
        partition={"method": "iid", "num_sites": 2},
    )

    with pytest.raises(DataError, match="is not the official MD5 of 'breastmnist'"):
        load_data(config_from_dict(tables))


def test_unknown_name_is_refused_when_the_config_is_read() -> None:
    tables = tiny_tables(
        data={"source": "medmnist", "name": "breastmnst"}, partition={"method": "iid"}
    )

    with pytest.raises(ConfigError, match="unknown MedMNIST data set 'breastmnst'"):
        config_from_dict(tables)


def test_name_without_the_medmnist_source_is_refused() -> None:
    with pytest.raises(ConfigError, match="set data.source = 'medmnist'"):
        config_from_dict(tiny_tables(data={"name": "breastmnist"}))
