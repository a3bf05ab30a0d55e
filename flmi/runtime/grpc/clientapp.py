"""Wiring ``flmi client``: a site's data, task, bounds and credentials into a client."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from flmi.config import Config, load_config
from flmi.core.errors import ConfigError
from flmi.data.arrays import SiteSplits
from flmi.data.sources import load_data
from flmi.data.unlabeled import semi_supervised_data
from flmi.privacy.noise_source import refuse_in_deployment
from flmi.runtime.grpc.audit import AuditLog
from flmi.runtime.grpc.client import ClientSettings, SiteClient
from flmi.runtime.grpc.provisioning import SITE_CERT, site_identity
from flmi.runtime.grpc.secure import exit_at_stage, site_he_trust
from flmi.runtime.grpc.siteconf import SiteSettings, load_site_settings
from flmi.runtime.grpc.sitedata import load_site_data, site_data_config
from flmi.runtime.grpc.tls import site_credentials
from flmi.runtime.inprocess import SiteEndpoint
from flmi.site.site import Site, SitePolicy
from flmi.tasks.base import Task
from flmi.tasks.device import resolve_device
from flmi.tasks.registry import build_task
from flmi.tasks.torch_params import params_copy


def build_client(*, server: str, site: str, certs: Path, data: Path) -> SiteClient:
    """A client for ``site`` from its bundle and ``SITE.toml``; every check runs first.

    The site's data is its own files when ``SITE.toml``'s ``[data]`` names a
    source (:mod:`flmi.runtime.grpc.sitedata`); otherwise the partition of
    ``data.federation_config`` is built, its ``[sites.NAME]`` label settings
    (``labeled``, ``labeled_fraction``, ``train_fraction``) are applied, and
    only this site's split is kept, so the client holds exactly what the
    simulation gives this site (a simulation convenience).
    """
    _check_certificate(certs=certs, site=site)
    settings = load_site_settings(data, site=site)
    config = load_config(settings.federation_config)
    refuse_in_deployment(
        insecure_reproducible=config.privacy.insecure_reproducible_noise, command="flmi client"
    )
    torch.set_num_threads(settings.torch_threads or config.runtime.torch_threads)
    device = resolve_device(settings.device or config.runtime.device)
    config, task, splits = _site_task_and_splits(
        config=config, settings=settings, site=site, data=data
    )
    seed = config.federation.seed
    policy = SitePolicy(
        max_local_epochs=settings.bounds.max_local_epochs or None,
        max_local_steps=settings.bounds.max_local_steps or None,
        min_count=config.report.min_count,
    )

    def make_site(resume_round: int | None) -> SiteEndpoint:
        return Site(
            name=site,
            data=splits,
            task=task,
            seed=seed,
            device=device,
            policy=policy,
            state_dir=settings.state_dir,
            resume_round=resume_round,
        )

    return SiteClient(
        settings=ClientSettings(
            server=server,
            task=config.task.name,
            schema=params_copy(task.build_model(seed=seed)),
            bounds=settings.bounds,
            reconnect_timeout_s=settings.reconnect_timeout_s,
            max_message_bytes=config.deploy.max_message_bytes,
            exit_at_stage=exit_at_stage(os.environ),
            he_trust=site_he_trust(config, site=site, certs=certs),
        ),
        credentials=site_credentials(certs),
        make_site=make_site,
        audit=AuditLog(path=settings.audit_log),
    )


def _check_certificate(*, certs: Path, site: str) -> None:
    """Refuse a bundle without a site certificate, or one issued to another site."""
    cert = certs / SITE_CERT
    if not cert.is_file():
        raise ConfigError(
            f"--certs {certs}: no {SITE_CERT}; use the bundle `flmi certs add-site` wrote"
        )
    named = site_identity(cert.read_bytes())
    if named != site:
        raise ConfigError(f"--site {site}: the certificate in {certs} is for '{named}'")


def _site_task_and_splits(
    *, config: Config, settings: SiteSettings, site: str, data: Path
) -> tuple[Config, Task, SiteSplits]:
    """This site's config, its task and its splits: its own files, or its share of the partition.

    Only this site's splits are kept; the other sites' data is released at once.
    """
    if settings.data:
        config = site_data_config(config, table=settings.data, where=data)
        federated = load_site_data(config, site=site, where=data)
    else:
        federated, left_out = semi_supervised_data(config, load_data(config))
        if site in left_out:
            raise _nothing_to_train(site, where=f"[sites.{site}] of {settings.federation_config}")
    if site not in federated.sites:
        raise ConfigError(
            f"--site {site}: the partition of {settings.federation_config} has no such site; "
            f"its sites are {', '.join(sorted(federated.sites))}"
        )
    try:
        task = build_task(config, federated)
    except ConfigError as exc:
        if not settings.data:
            raise
        raise ConfigError(f"{data}: this site's own data does not fit the task: {exc}") from None
    splits = federated.sites[site]
    del federated
    if config.federation.semi_supervised == "none" and len(splits.train) == 0:
        where = (
            f"its own data ({data})"
            if settings.data
            else f"the partition of {settings.federation_config}"
        )
        raise _nothing_to_train(site, where=where)
    return config, task, splits


def _nothing_to_train(site: str, *, where: str) -> ConfigError:
    """The error for a site with no labeled training image in a federation that needs one."""
    return ConfigError(
        f"--site {site}: {where} leaves it no labeled training example and "
        "federation.semi_supervised = 'none', so it has nothing to train on; set "
        f"federation.semi_supervised = 'fixmatch' (or 'pseudo_label'), or take {site} out of "
        "deploy.sites"
    )
