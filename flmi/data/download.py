"""MedMNIST v2 by name: the official file, downloaded only when allowed, checked by MD5.

The table holds the URL and MD5 of every single-label 28-pixel MedMNIST v2
file as the ``medmnist`` package's ``INFO`` table gives them (Zenodo record
10519652). A file is looked for in the cache folder first; it is downloaded
only when the user allows it, to a temporary name, and kept only when its MD5
is the official one. Offline or not allowed, the error says where to put the
file by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flmi.core.errors import ConfigError, DataError

log = logging.getLogger("flmi.data")

ZENODO_RECORD = "https://zenodo.org/records/10519652/files"
DEFAULT_CACHE = Path("~/.cache/flmi/medmnist")
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class MedMNISTFile:
    """One official MedMNIST v2 file.

    Parameters
    ----------
    name
        The data set's name, e.g. ``"breastmnist"``; the file is ``NAME.npz``.
    md5
        The official MD5 of the file.
    """

    name: str
    md5: str

    @property
    def filename(self) -> str:
        """The file's name, ``NAME.npz``."""
        return f"{self.name}.npz"

    @property
    def url(self) -> str:
        """The official download address."""
        return f"{ZENODO_RECORD}/{self.filename}?download=1"


MEDMNIST_FILES: dict[str, MedMNISTFile] = {
    f.name: f
    for f in (
        MedMNISTFile(name="pathmnist", md5="a8b06965200029087d5bd730944a56c1"),
        MedMNISTFile(name="dermamnist", md5="0744692d530f8e62ec473284d019b0c7"),
        MedMNISTFile(name="octmnist", md5="c68d92d5b585d8d81f7112f81e2d0842"),
        MedMNISTFile(name="pneumoniamnist", md5="28209eda62fecd6e6a2d98b1501bb15f"),
        MedMNISTFile(name="retinamnist", md5="bd4c0672f1bba3e3a89f0e4e876791e4"),
        MedMNISTFile(name="breastmnist", md5="750601b1f35ba3300ea97c75c52ff8f6"),
        MedMNISTFile(name="bloodmnist", md5="7053d0359d879ad8a5505303e11de1dc"),
        MedMNISTFile(name="tissuemnist", md5="ebe78ee8b05294063de985d821c1c34b"),
        MedMNISTFile(name="organamnist", md5="68e3f8846a6bd62f0c9bf841c0d9eacc"),
        MedMNISTFile(name="organcmnist", md5="b9ceb9546e10131b32923c5bbeaea2b1"),
        MedMNISTFile(name="organsmnist", md5="9ab87b696fb54e2a387ebe992d6ed5f1"),
        MedMNISTFile(name="organmnist3d", md5="a0c5a1ff56af4f155c46d46fbb45a2fe"),
        MedMNISTFile(name="nodulemnist3d", md5="8755a7e9e05a4d9ce80a24c3e7a256f3"),
        MedMNISTFile(name="adrenalmnist3d", md5="bbd3c5a5576322bc4cdfea780653b1ce"),
        MedMNISTFile(name="fracturemnist3d", md5="6aa7b0143a6b42da40027a9dda61302f"),
        MedMNISTFile(name="vesselmnist3d", md5="b41fd4f7e7e2feedddb201585ecafa1b"),
        MedMNISTFile(name="synapsemnist3d", md5="1235b78a3cd6280881dd7850a78eadb6"),
    )
}


def file_md5(path: Path) -> str:
    """The MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def medmnist_file(name: str) -> MedMNISTFile:
    """The official file of the data set ``name``.

    Raises
    ------
    ConfigError
        ``name`` is not a single-label MedMNIST v2 data set; the message lists them.
    """
    entry = MEDMNIST_FILES.get(name.lower())
    if entry is None:
        raise ConfigError(
            f"data.name: unknown MedMNIST data set '{name}'; choose one of "
            f"{', '.join(sorted(MEDMNIST_FILES))}, or give the file itself as data.path"
        )
    return entry


def fetch_medmnist(
    *,
    name: str,
    cache_dir: Path,
    allow_download: bool,
    url: str = "",
    timeout_s: float = 60.0,
) -> Path:
    """Return the path of the official ``NAME.npz``, downloading it only when allowed.

    Parameters
    ----------
    name
        The data set, e.g. ``"breastmnist"``, ``"organamnist"``, ``"nodulemnist3d"``.
    cache_dir
        Where the file is kept (``~`` is expanded; created when a download starts).
    allow_download
        Whether the file may be fetched when it is not in ``cache_dir`` (or is
        there with a wrong MD5).
    url
        Where to download from (``""``: the official Zenodo address), e.g. a
        hospital's own mirror.
    timeout_s
        Network timeout of each read, in seconds.

    Returns
    -------
    Path
        ``cache_dir / NAME.npz``, whose MD5 is the official one.

    Raises
    ------
    ConfigError
        ``name`` is unknown.
    DataError
        The file is absent (or has a wrong MD5) and downloads are not allowed;
        the download failed (offline, bad address); or the downloaded file's
        MD5 is not the official one (nothing is kept). Each message names the
        folder to put the file in by hand and the setting to change.
    """
    entry = medmnist_file(name)
    folder = cache_dir.expanduser()
    target = folder / entry.filename
    by_hand = (
        f"download {entry.url} yourself and put it at {target} "
        f"(MD5 {entry.md5}), or set data.path to your copy"
    )
    if target.is_file():
        found = file_md5(target)
        if found == entry.md5:
            return target
        if not allow_download:
            raise DataError(
                f"{target}: MD5 {found} is not the official {entry.md5} (a damaged or "
                f"different file); delete it and set data.allow_download = true, or {by_hand}"
            )
        log.warning("%s has MD5 %s, not %s: downloading it again", target, found, entry.md5)
    elif not allow_download:
        raise DataError(
            f"MedMNIST '{entry.name}' is not in {folder} and downloads are off; set "
            f"data.allow_download = true to fetch it, or {by_hand}"
        )
    source = url or entry.url
    _download(source=source, target=target, md5=entry.md5, timeout_s=timeout_s, by_hand=by_hand)
    return target


def _download(*, source: str, target: Path, md5: str, timeout_s: float, by_hand: str) -> None:
    """Download ``source`` to ``target`` through a temporary file; keep it only if the MD5 fits."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.md5(usedforsecurity=False)
    log.info("downloading %s to %s", source, target)
    try:
        with (
            urllib.request.urlopen(source, timeout=timeout_s) as response,
            partial.open("wb") as out,
        ):
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"could not download {source} ({exc}); {by_hand}") from None
    found = digest.hexdigest()
    if found != md5:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"the file downloaded from {source} has MD5 {found}, not the official {md5}; "
            f"nothing was kept. Try again later, or {by_hand}"
        )
    partial.replace(target)
