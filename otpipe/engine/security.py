"""Who may talk to the cluster: TLS for everything that listens beyond 127.0.0.1.

* ``--cluster slurm|pbs`` and ``--gpus``: mutual TLS with throw-away certificates made for the
  run (``distributed.security.Security.temporary()``, needs the ``cryptography`` package, part of
  the ``cluster`` and ``gpu`` extras); ``--no-tls`` turns it off for trusted networks, with a warning.
* ``--scheduler tls://...`` / a scheduler file with a ``tls://`` address: the certificates of that
  cluster (``--tls-ca-file``, ``--tls-cert``, ``--tls-key``; the key may be inside the cert file).
* The embedded ``LocalCluster`` listens on 127.0.0.1 only and stays plain TCP.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
from urllib.parse import urlsplit

__all__ = ["temporary", "for_address", "check_interface", "scheduler_address", "NO_TLS_WARNING"]

log = logging.getLogger("otpipe.cluster")

NO_TLS_WARNING = ("--no-tls: the scheduler and its workers talk plain TCP; anyone who can reach the scheduler's "
                  "port can run code as you (use it on trusted networks only)")


def temporary(what: str):
    """``Security.temporary()``: a fresh CA, certificate and key, in memory.

    Parameters
    ----------
    what : str
        The option that asked for TLS (``"--gpus"``), for the message.

    Returns
    -------
    distributed.Security
        The TLS settings of a cluster started here.

    Raises
    ------
    ValueError
        If the ``cryptography`` package is missing (the message says how to install it or opt out).
    """
    try:
        from distributed.security import Security

        return Security.temporary()
    except ImportError:
        raise ValueError(f"{what} uses TLS with temporary certificates, which needs the 'cryptography' package "
                         "(pip install cryptography, or 'otpipe[cluster]'); or pass --no-tls on a trusted network") from None


def scheduler_address(scheduler: str | None, scheduler_file: str | None) -> str | None:
    """The scheduler's address: ``scheduler`` itself, or the address written in ``scheduler_file``.

    Parameters
    ----------
    scheduler : str or None
        An address.
    scheduler_file : str or None
        A Dask scheduler file (JSON with an ``address``).

    Returns
    -------
    str or None
        The address; ``None`` when neither is given.

    Raises
    ------
    ValueError
        If the scheduler file cannot be read as one.
    """
    if scheduler:
        return scheduler
    if scheduler_file:
        try:
            with open(scheduler_file) as fh:
                return str(json.load(fh).get("address", ""))
        except (OSError, ValueError, AttributeError):
            raise ValueError(f"scheduler file {scheduler_file} is not a Dask scheduler file (JSON with an 'address')") from None
    return None


def _loopback(address: str) -> bool:
    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def for_address(scheduler: str | None, scheduler_file: str | None, ca: str | None, cert: str | None, key: str | None):
    """The ``Security`` to connect to an existing scheduler.

    ``tls://`` needs ``ca`` and ``cert`` (``key`` unless inside ``cert``); certificates with a
    ``tcp://`` address are an error; a plain ``tcp://`` address beyond loopback gets a warning.

    Parameters
    ----------
    scheduler : str or None
        The scheduler's address.
    scheduler_file : str or None
        Its scheduler file.
    ca : str or None
        CA certificate file (``--tls-ca-file``).
    cert : str or None
        Client certificate file (``--tls-cert``).
    key : str or None
        Client key file (``--tls-key``).

    Returns
    -------
    distributed.Security or None
        The TLS settings of a ``tls://`` address; ``None``: plain TCP.

    Raises
    ------
    ValueError
        Certificates missing for ``tls://``, or given for a ``tcp://`` address or without a scheduler.
    FileNotFoundError
        A certificate or key file that does not exist.
    """
    address = scheduler_address(scheduler, scheduler_file)
    if address is None:
        if ca or cert or key:
            raise ValueError("--tls-ca-file/--tls-cert/--tls-key apply to --scheduler/--scheduler-file tls://... only")
        return None
    given = [n for n, v in (("--tls-ca-file", ca), ("--tls-cert", cert), ("--tls-key", key)) if v]
    if address.startswith("tls://"):
        if not (ca and cert):
            raise ValueError(f"scheduler {address} uses TLS: give its --tls-ca-file and --tls-cert (and --tls-key unless "
                             "the key is in the cert file)")
        for name, f in (("--tls-ca-file", ca), ("--tls-cert", cert), ("--tls-key", key)):
            if f and not os.path.isfile(f):
                raise FileNotFoundError(f"{name}: no such file: {f}")
        from distributed.security import Security

        return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
    if given:
        raise ValueError(f"{', '.join(given)} given but scheduler {address} is not a tls:// address")
    if not _loopback(address):
        log.warning("scheduler %s: plain TCP beyond this machine; prefer a tls:// scheduler (--tls-ca-file, "
                    "--tls-cert, --tls-key)", address)
    return None


def check_interface(interface: str | None) -> None:
    """A one-line error if ``interface`` is not a network interface of this host.

    Parameters
    ----------
    interface : str or None
        The interface name (``None``: nothing to check).

    Raises
    ------
    ValueError
        Listing the interfaces this host has.
    """
    if not interface:
        return
    import psutil

    have = sorted(psutil.net_if_addrs())
    if interface not in have:
        raise ValueError(f"--interface {interface!r}: no such network interface here (have: {', '.join(have)})")
