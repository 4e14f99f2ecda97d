"""YAML workflow specs -> reproducible runs with provenance (``otpipe run WORKFLOW.yaml``).

A spec (``workflows/README.md`` documents the format)::

    version: 1
    name: quickstart
    run_dir: runs/quickstart          # relative to the current directory (default runs/<name>)
    cluster: {n_workers: 2}           # one Dask cluster shared by every distributed step
    steps:
      - {step: synth, id: shapes, params: {kind: [circle, gaussian], n_measures: 16}}
      - {step: two-sample, id: tests, inputs: [shapes], params: {statistic: energy}}
      - {step: report, id: report, inputs: [shapes, tests]}

Every step except ``report`` calls the function of the same name in :data:`otpipe.api.STEPS`
(``two-sample`` -> :func:`otpipe.api.two_sample`), whose keyword parameters are the options of
``otpipe <step> --help`` (``n_measures`` is ``--n-measures``): params are checked against the function's
annotations (names, types, choices, ranges) and passed to it, ``inputs`` fill its collection parameters
(collections produced by earlier steps), ``out`` is ``run_dir/<id>/<id>.zarr``. ``report`` writes
``run_dir/<id>/index.html`` (steps, provenance, the figures of its inputs).

The whole spec is validated before any work (unknown step or option, missing required option,
wrong type, unknown input, YAML syntax, a key given twice in a mapping, a name or step id that is not
an identifier of at most :data:`MAX_ID` characters, aliases that expand the spec by more than
:data:`MAX_ALIAS_NODES` values): ``ValueError("spec.yaml line N: ...")``, quoting at most
:data:`MAX_SHOWN` characters of any value.

Provenance (``run_dir/provenance.json``): the resolved spec, every step's parameters and its equivalent
command line (``argv``),
package versions, git commit, host, seeds, input content hashes, timings, and per step a
*fingerprint* ``sha256(step, params, input hashes)`` and the *content* hash of its outputs (arrays,
parameters and input hashes; never timings, worker addresses, hosts, paths or dates). ``--resume``
skips a step whose fingerprint is unchanged and whose outputs still hash as recorded; a changed
parameter or input changes the fingerprint, so that step and its dependants are recomputed (and
reported as changed). A step interrupted part-way (Ctrl-C) leaves an unfinished output: under
``--resume``, a distances, two-sample, complexity or barycenter step whose fingerprint is unchanged
continues it (its function gets ``resume=True`` instead of ``overwrite=True``: finished tiles, tests,
cells or groups are kept); the step folder's hidden ``.otpipe-step.json`` records the
fingerprint of the step that started it.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import html
import io
import json
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from otpipe import _rundir, api
from otpipe._made import mark_dir
from otpipe.params import Listed, convert, parameters
from otpipe.store.locks import output_lock

__all__ = ["load_spec", "Workflow", "Step", "run_workflow", "tree_hash", "STEP_TYPES", "STEP_RECORD", "MAX_ID", "MAX_ALIAS_NODES",
           "MAX_SHOWN"]

#: the steps a spec may name: those of :data:`otpipe.api.STEPS` and the built-in run ``report``
STEP_TYPES = (*api.STEPS, "report")
#: hidden file of a step folder: the fingerprint of the step that last started writing there
#: (hidden files are left out of the content hashes)
STEP_RECORD = ".otpipe-step.json"
_TOP_KEYS = {"version", "name", "run_dir", "cluster", "steps", "description"}
_STEP_KEYS = {"step", "id", "params", "inputs", "description"}
#: parameters the runner sets itself (the step's output, replace or continue it, the cluster)
_RESERVED = {"out", "overwrite", "dry_run", "resume", "cluster", "client", "progress", "notes"}
#: options of the command line only (what it prints), not parameters of a step
_CLI_ONLY = {"json", "as_json", "quiet", "no_progress", "help"}
_CLUSTER_KEYS = {"n_workers", "threads_per_worker", "memory_limit", "scheduler", "scheduler_file",
                 "tls_ca_file", "tls_cert", "tls_key"}  # certificates of a tls:// scheduler
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
#: most characters of a workflow name or step id: ids name folders and files (``run_dir/<id>/<id>.zarr``),
#: and a file name has at most 255 bytes
MAX_ID = 64
#: most YAML values (nodes) that aliases (``*name``) may add to a spec: plenty for shared blocks of
#: params, while nested aliases of a 1 kB file would otherwise expand to billions of values
MAX_ALIAS_NODES = 10_000
#: most characters of a value quoted in an error message
MAX_SHOWN = 200
#: metadata keys that record when, where, how fast or with which libraries rather than what: left out of
#: :func:`tree_hash` (JSON files and Zarr attributes), as are keys ending in :data:`VOLATILE_SUFFIXES`
VOLATILE_KEYS = {"created", "created_at", "created_by", "modified", "completed", "started", "finished", "timestamp",
                 "date", "seconds", "elapsed", "wall_time", "timings", "host", "hostname", "duration", "time",
                 "workers", "cluster", "scheduler", "address", "pid", "user", "versions", "path", "run_dir", "lock",
                 "owner"}
VOLATILE_SUFFIXES = ("_seconds", "_at", "_time", "_computed", "_resumed", "_path", "_dir", "_collection")
_ADDRESS = re.compile(r"^[a-z]+://")


# ------------------------------------------------------------------------------------------------
# loading and validation
# ------------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One step of a spec.

    Parameters
    ----------
    type : str
        The step (a key of :data:`otpipe.api.STEPS`, or ``"report"``).
    id : str
        Its identifier (the folder ``run_dir/<id>``).
    params : dict
        The params as the spec gives them.
    inputs : list of str
        Ids of the earlier steps whose outputs it reads.
    line : int
        Its line in the spec.
    argv : list of str
        The equivalent command line (with ``{out}`` and ``{input:ID}`` for the stores of the run).
    call : dict
        The keyword arguments of its function (the checked params).
    """

    type: str
    id: str
    params: dict
    inputs: list
    line: int
    argv: list = field(default_factory=list)
    call: dict = field(default_factory=dict)


@dataclass
class Workflow:
    """A validated spec (:func:`load_spec`).

    Parameters
    ----------
    path : str
        The spec file.
    name : str
        The workflow's name.
    run_dir : pathlib.Path
        The folder of the run.
    cluster : dict
        The spec's cluster settings.
    steps : list of Step
        The steps, in order.
    raw : dict
        The spec as read.
    """

    path: str
    name: str
    run_dir: Path
    cluster: dict
    steps: list
    raw: dict


class _Lines:
    """Line numbers (1-based) of the YAML nodes, addressed by key paths."""

    def __init__(self, node):
        self.node = node

    def line(self, *path) -> int:
        node = self.node
        best = node.start_mark.line + 1 if node is not None else 1
        for key in path:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == key:
                        nxt = v if not isinstance(v, yaml.ScalarNode) or key != path[-1] else k
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                nxt = node.value[key]
            if nxt is None:
                break
            node = nxt
            best = node.start_mark.line + 1
        return best


def _clip(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was (values quoted in an error message)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _show(value) -> str:
    """``repr(value)`` for an error message, at most :data:`MAX_SHOWN` characters and the value's length."""
    text = repr(value)
    if len(text) <= MAX_SHOWN:
        return text
    n = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters written out"
    return f"{text[:MAX_SHOWN]}... ({n})"


def _err(path: str, line: int, msg: str) -> ValueError:
    # values in ``msg`` are quoted with _show/_clip; this bounds what a caller forgot to clip
    return ValueError(f"{path} line {line}: {_clip(msg, 5 * MAX_SHOWN)}")


def _is_id(value) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ID and bool(_ID.match(value))


class _SpecError(Exception):
    """A spec problem found while reading the YAML (line, message): turned into :func:`_err`."""

    def __init__(self, line: int, msg: str):
        super().__init__(msg)
        self.line, self.msg = line, msg


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (the same tags and values as ``yaml.safe_load``) that also refuses a key
    given twice in one mapping (YAML would keep the last silently), an alias inside the list or
    mapping it names (a recursive value), and aliases that add more than :data:`MAX_ALIAS_NODES`
    values to the document (an alias bomb), counted while composing, before anything is expanded."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> values in the expanded node (nodes stay alive)
        self._aliased = 0  # values added by aliases so far
        self._open: set = set()  # anchors of the collections being composed

    def _size(self, node) -> int:
        """Values in ``node`` once its aliases are expanded (memoised: linear in the distinct nodes)."""
        if isinstance(node, yaml.ScalarNode):
            return 1
        got = self._sizes.get(id(node))
        if got is None:
            children = [c for kv in node.value for c in kv] if isinstance(node, yaml.MappingNode) else node.value
            got = 1
            for c in children:
                got += self._size(c)
                if got > MAX_ALIAS_NODES:
                    break  # the caller refuses anyway; stop counting
            self._sizes[id(node)] = got
        return got

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            line = event.start_mark.line + 1
            if target is not None:
                if event.anchor in self._open:
                    raise _SpecError(line, f"alias *{_clip(event.anchor, 40)} is inside the value it names "
                                           "(a recursive value): write the value out")
                self._aliased += self._size(target)
                if self._aliased > MAX_ALIAS_NODES:
                    raise _SpecError(line, f"aliases expand the spec to more than {MAX_ALIAS_NODES:,} values "
                                           f"(at *{_clip(event.anchor, 40)}): write the values out or use fewer "
                                           "nested aliases")
        return super().compose_node(parent, index)

    def compose_sequence_node(self, anchor):
        self._open.add(anchor)
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self._open.discard(anchor)

    def compose_mapping_node(self, anchor):
        self._open.add(anchor)
        try:
            node = super().compose_mapping_node(anchor)
        finally:
            self._open.discard(anchor)
        first: dict = {}
        for k, _ in node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *base`` merges: its keys may be overridden, that is what it is for
            ident = (k.tag, k.value)
            if ident in first:
                raise _SpecError(k.start_mark.line + 1, f"key {_show(k.value)} given twice in the same mapping "
                                                        f"(first on line {first[ident]}): keep one")
            first[ident] = k.start_mark.line + 1
        return node


def load_spec(path, *, run_dir=None) -> Workflow:
    """Read and validate a workflow spec; nothing is computed or written.

    Parameters
    ----------
    path : path
        The YAML spec.
    run_dir : path, optional
        The run's folder instead of the spec's ``run_dir``.

    Returns
    -------
    Workflow
        The spec with its steps checked (their params converted for their functions).

    Raises
    ------
    ValueError
        ``"<spec> line N: ..."`` for the first problem found.
    """
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"workflow spec not found: {path}") from None
    try:
        node = yaml.compose(text, Loader=_SpecLoader)
        raw = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader (safe_load's tags and values)
    except _SpecError as exc:
        raise _err(path, exc.line, exc.msg) from None
    except RecursionError:
        raise _err(path, 1, "the YAML nests lists or mappings too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = _clip(getattr(exc, "problem", None) or str(exc).splitlines()[0])
        ctx, cm = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if ctx and cm is not None and cm.line + 1 != line:
            problem += f" ({_clip(ctx)} started on line {cm.line + 1})"
        raise _err(path, line, f"YAML syntax error: {problem}") from None
    L = _Lines(node)
    if not isinstance(raw, dict):
        raise _err(path, 1, "a workflow spec is a mapping with 'version', 'name' and 'steps'")
    for k in raw:
        if k not in _TOP_KEYS:
            raise _err(path, L.line(k), f"unknown key {_show(k)} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    if raw.get("version", 1) != 1:
        raise _err(path, L.line("version"), f"unsupported version {_show(raw.get('version'))} (this otpipe reads version 1)")
    name = raw.get("name")
    if not _is_id(name):
        raise _err(path, L.line("name"), f"'name' must be an identifier of at most {MAX_ID} characters (a letter, "
                                         f"then letters, digits, _ or -), got {_show(name)}")
    rd = os.fspath(run_dir) if run_dir is not None else raw.get("run_dir", f"runs/{name}")
    if not isinstance(rd, str) or not rd:
        raise _err(path, L.line("run_dir"), f"'run_dir' must be a path, got {_show(rd)}")
    cluster = raw.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise _err(path, L.line("cluster"), "'cluster' must be a mapping (n_workers, threads_per_worker, scheduler, ...)")
    for k in cluster:
        if k not in _CLUSTER_KEYS:
            raise _err(path, L.line("cluster", k), f"unknown cluster key {_show(k)} (allowed: {', '.join(sorted(_CLUSTER_KEYS))})")
    for k in ("n_workers", "threads_per_worker"):
        v = cluster.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise _err(path, L.line("cluster", k), f"cluster {k} must be a whole number >= 1, got {_show(v)}")
    if not (cluster.get("scheduler") or cluster.get("scheduler_file")):
        from otpipe.engine.preflight import check_local_size

        try:  # the embedded cluster the run would start: refused by --dry-run too
            check_local_size(cluster.get("n_workers"), cluster.get("threads_per_worker", 1))
        except ValueError as exc:
            raise _err(path, L.line("cluster"), f"cluster: {exc}") from None
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise _err(path, L.line("steps"), "'steps' must be a non-empty list")
    steps: list[Step] = []
    seen: dict[str, Step] = {}
    for i, s in enumerate(steps_raw):
        ln = L.line("steps", i)
        if not isinstance(s, dict):
            raise _err(path, ln, f"step {i + 1} must be a mapping with 'step' and 'id'")
        for k in s:
            if k not in _STEP_KEYS:
                raise _err(path, L.line("steps", i, k), f"unknown key {_show(k)} in step {i + 1} (allowed: {', '.join(sorted(_STEP_KEYS))})")
        typ = s.get("step")
        known = (*api.STEPS, "report")
        if typ not in known and typ not in STEP_TYPES:
            raise _err(path, L.line("steps", i, "step"), f"unknown step {_show(typ)} (known: {', '.join(known)})")
        sid = s.get("id", typ.replace("-", "_") if isinstance(typ, str) else None)
        if not _is_id(sid):
            raise _err(path, L.line("steps", i, "id"), f"step id must be an identifier of at most {MAX_ID} characters "
                                                       f"(a letter, then letters, digits, _ or -), got {_show(sid)}")
        if sid in seen:
            raise _err(path, L.line("steps", i, "id"), f"duplicate step id {_show(sid)}")
        params = s.get("params") or {}
        if not isinstance(params, dict):
            raise _err(path, L.line("steps", i, "params"), f"params of step {sid!r} must be a mapping")
        inputs = s.get("inputs") or []
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list):
            raise _err(path, L.line("steps", i, "inputs"), f"inputs of step {sid!r} must be a list of step ids")
        for j, ref in enumerate(inputs):
            if ref not in seen:
                later = any(isinstance(t, dict) and t.get("id") == ref for t in steps_raw[i:])
                why = "is defined later (inputs must refer to earlier steps)" if later else "is not a step id"
                raise _err(path, L.line("steps", i, "inputs"), f"input {_show(ref)} of step {sid!r} {why}")
        step = Step(typ, sid, dict(params), list(inputs), ln)
        _check_step(path, L, i, step, seen)
        steps.append(step)
        seen[sid] = step
    return Workflow(path, name, Path(rd), dict(cluster), steps, raw)


def _cluster_keys() -> set[str]:
    """Names of the cluster options (the fields of ``ClusterSpec`` and ``no_tls``): set in the spec's ``cluster``."""
    import dataclasses

    from otpipe.engine.cluster import ClusterSpec

    return {f.name for f in dataclasses.fields(ClusterSpec)} | {"no_tls", "cluster_kind"}


def _check_step(path: str, L: _Lines, i: int, step: Step, seen: dict) -> None:
    """Check a step's params against its API function (or the built-in report), raising on any problem;
    sets ``step.call`` (the function's keyword arguments) and ``step.argv`` (the equivalent command line)."""
    if step.type == "report":
        bad = [k for k in step.params if k not in ("title",)]
        if bad:
            raise _err(path, L.line("steps", i, "params", bad[0]), f"unknown param {_show(bad[0])} of step 'report' (allowed: title)")
        return
    entry = api.STEPS.get(step.type)
    if entry is None:
        raise _err(path, L.line("steps", i, "step"),
                   f"step {step.id!r}: command 'otpipe {step.type}' is not available in this installation")
    schema = parameters(entry.function)
    argv: list[str] = [step.type]
    call: dict = {}
    # positional: SOURCES (ingest, from params), then the collections of earlier steps (from inputs)
    if "sources" in schema:
        src = step.params.get("sources")
        if not src:
            raise _err(path, L.line("steps", i, "params"), f"step {step.id!r} needs params.sources (files, folders or globs)")
        call["sources"] = [str(v) for v in (src if isinstance(src, list) else [src])]
        argv += call["sources"]
    inputs = list(step.inputs)
    for name in entry.inputs:
        if inputs:
            ref = inputs.pop(0)
            made = api.STEPS.get(seen[ref].type)
            if made is None or not made.collection:
                raise _err(path, L.line("steps", i, "inputs"),
                           f"input {_show(ref)} of step {step.id!r} is a {seen[ref].type} result, not a collection")
            argv.append("{input:" + str(ref) + "}")
        elif schema[name].required:
            raise _err(path, L.line("steps", i), f"step {step.id!r} needs an input for {name.upper()} (inputs: [...])")
    if inputs:
        raise _err(path, L.line("steps", i, "inputs"), f"step {step.id!r} takes fewer inputs than given: {_show(inputs)}")
    argv += ["--out", "{out}"]
    allowed = [n for n in schema if n not in _RESERVED and n not in entry.inputs and n != "sources"]
    for k, v in step.params.items():
        if k == "sources" and "sources" in schema:
            continue
        ln = L.line("steps", i, "params", k)
        key = str(k).replace("-", "_")
        if key not in allowed:
            if key in _CLI_ONLY:
                why = "an option of the command line only (what it prints), not a step parameter"
            elif key in _cluster_keys() and key not in schema:
                why = "a cluster option: give it in the spec's top-level 'cluster' mapping"
            else:
                why = None
            if why:
                raise _err(path, ln, f"param {_show(k)} of step {step.type!r} is {why}")
            raise _err(path, ln, f"unknown param {_show(k)} of step {step.type!r} (see 'otpipe {step.type} --help'; "
                                 f"allowed: {', '.join(sorted(allowed))})")
        p = schema[key]
        if p.kind == "bool":
            if not isinstance(v, bool):
                raise _err(path, ln, f"param {_show(k)} of step {step.id!r} is a flag: use true or false, got {_show(v)}")
            call[key] = v
            if v:
                argv.append(p.flag)
            continue
        try:
            call[key] = convert(p, v)
        except ValueError as exc:
            raise _err(path, ln, f"param {_show(k)} of step {step.id!r}: {_clip(str(exc))}") from None
        argv += _flags(p, v)
    missing = [n for n in allowed if schema[n].required and n not in call]
    if missing:
        raise _err(path, L.line("steps", i), f"step {step.id!r} misses the required param {missing[0]!r}")
    if "overwrite" in schema:
        argv.append("--overwrite")
    step.argv, step.call = argv, call


def _flags(p, value) -> list[str]:
    """The command line's spelling of ``value`` for the parameter ``p``: the option repeated per value
    (``--kind a --kind b``) or once with the values comma-joined (``--eps 0.1,1``)."""
    if p.listed is Listed.REPEATED and isinstance(value, list):
        return [a for v in value for a in (p.flag, str(v))]
    if isinstance(value, list):
        return [p.flag, ",".join(str(v) for v in value)]
    return [p.flag, str(value)]


# ------------------------------------------------------------------------------------------------
# hashing and provenance
# ------------------------------------------------------------------------------------------------


def _volatile(key) -> bool:
    k = str(key)
    return k in VOLATILE_KEYS or k.endswith(VOLATILE_SUFFIXES) or bool(_ADDRESS.match(k))


def _strip(obj):
    """``obj`` without its volatile keys (:func:`_volatile`) and network addresses, recursively."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in sorted(obj.items()) if not _volatile(k)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj if not (isinstance(v, str) and _ADDRESS.match(v))]
    return obj


def _json_bytes(obj) -> bytes:
    return json.dumps(_strip(obj), sort_keys=True, default=str).encode()


def _zarr_root(d: Path) -> bool:
    """Whether ``d`` is the root of a Zarr v3 store (a ``zarr.json`` with a ``node_type``)."""
    try:
        return "node_type" in json.loads((d / "zarr.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _array_digest(a) -> bytes:
    """sha256 of an array's dtype, shape, stripped attrs and decoded values, read in blocks of chunks."""
    import numpy as np

    h = hashlib.sha256(f"{a.dtype}|{a.shape}|".encode() + _json_bytes(dict(a.attrs)))
    if a.ndim == 0:
        blocks = [()]
    else:
        step = max(1, int(a.chunks[0]) * max(1, (1 << 24) // max(1, int(np.prod(a.chunks)))))
        blocks = [slice(s, s + step) for s in range(0, a.shape[0], step)]
    for b in blocks:
        v = np.asarray(a[b])
        if v.dtype.kind in "OTU":  # strings (NumPy StringDType, object or fixed-width unicode)
            h.update("\0".join(str(t) for t in v.ravel()).encode() + b"\1")
        else:
            h.update(np.ascontiguousarray(v).tobytes())
    return h.digest()


def _zarr_digest(d: Path) -> bytes:
    """Content digest of a Zarr store: every array's values (:func:`_array_digest`) and every node's
    attributes without the volatile ones; chunking, compression and metadata layout do not count."""
    import zarr

    node = zarr.open(store=str(d), mode="r")
    h = hashlib.sha256(b"zarr\0")
    if isinstance(node, zarr.Array):
        return hashlib.sha256(h.digest() + _array_digest(node)).digest()
    h.update(_json_bytes(dict(node.attrs)))
    for name, member in sorted(node.members(max_depth=None), key=lambda t: t[0]):
        h.update(name.encode() + b"\0")
        h.update(_array_digest(member) if isinstance(member, zarr.Array) else _json_bytes(dict(member.attrs)))
    return h.digest()


def tree_hash(path) -> str:
    """Content hash (``sha256``) of a file or a directory tree.

    Names and contents; Zarr stores by their decoded arrays and attributes (:func:`_zarr_digest`),
    JSON files without their volatile keys (:data:`VOLATILE_KEYS`: creation times, timings, worker
    addresses, hosts, paths, versions); logs and hidden files (locks, temporary stores) are skipped.
    Re-running a step that writes the same arrays with the same parameters gives the same hash.

    Parameters
    ----------
    path : path
        A file or a folder.

    Returns
    -------
    str
        ``"sha256:<hex>"``.
    """
    return "sha256:" + _digest(Path(path), zarr_aware=True).hex()


def _digest(p: Path, *, zarr_aware: bool) -> bytes:
    if p.is_file():
        data = p.read_bytes()
        if p.name.endswith(".json") or p.name in (".zattrs", ".zmetadata"):
            try:
                data = _json_bytes(json.loads(data))
            except ValueError:
                pass
        return hashlib.sha256(data).digest()
    if zarr_aware and _zarr_root(p):
        try:
            return _zarr_digest(p)
        except Exception:  # not readable as Zarr: hash its files instead
            return _digest(p, zarr_aware=False)
    h = hashlib.sha256(b"dir\0")
    for c in sorted(p.iterdir()):
        if c.name.startswith(".") or c.name.endswith(".log") or not (c.is_file() or c.is_dir()):
            continue
        h.update(c.name.encode() + b"\0" + _digest(c, zarr_aware=zarr_aware))
    return h.digest()


def _collection_hash(path: Path) -> str | None:
    try:
        from otpipe.store import open as _open

        return str(_open(str(path)).content_hash)
    except Exception:
        return None


def _external_hashes(step: Step) -> dict:
    """Content hashes of the files a step reads from outside the run (ingest sources, manifest)."""
    import glob

    out = {}
    if step.type != "ingest":
        return out
    src = step.params.get("sources")
    src = src if isinstance(src, list) else [src]
    for s in [*src, step.params.get("manifest")]:
        if not s:
            continue
        for m in sorted(glob.glob(str(s), recursive=True)) or [str(s)]:
            out[m] = tree_hash(m) if os.path.exists(m) else "missing"
    return out


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    from importlib import metadata

    from otpipe._version import __version__

    v = {"otpipe": __version__, "python": platform.python_version()}
    for pkg in ("torch", "numpy", "scipy", "dask", "distributed", "zarr", "xarray", "pykeops", "click", "pyyaml"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    return v


def _fingerprint(step: Step, input_hashes: dict) -> str:
    blob = json.dumps({"step": step.type, "argv": step.argv, "params": step.params, "inputs": input_hashes},
                      sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# execution
# ------------------------------------------------------------------------------------------------


def _step_dir(wf: Workflow, step: Step) -> Path:
    return wf.run_dir / step.id


def _resolve_argv(wf: Workflow, step: Step) -> list[str]:
    out = str(_step_dir(wf, step) / f"{step.id}.zarr")
    res = []
    for a in step.argv:
        if a == "{out}":
            res.append(out)
        elif a.startswith("{input:"):
            ref = a[len("{input:"):-1]
            res.append(str(_step_dir(wf, _by_id(wf, ref)) / f"{ref}.zarr"))
        else:
            res.append(a)
    return res


def _by_id(wf: Workflow, sid: str) -> Step:
    return next(s for s in wf.steps if s.id == sid)


def _step_output_hash(wf: Workflow, step: Step) -> str | None:
    d = _step_dir(wf, step)
    if not d.exists():
        return None
    if step.type in api.STEPS and api.STEPS[step.type].collection:
        h = _collection_hash(d / f"{step.id}.zarr")
        if h:
            return h
    return tree_hash(d)


def dry_run_lines(wf: Workflow) -> list[str]:
    """What a dry run prints: one line per step with its command line."""
    lines = [f"workflow {wf.name!r}: {len(wf.steps)} steps -> {wf.run_dir}"]
    for s in wf.steps:
        cmd = "built-in run report (index.html)" if s.type == "report" else "otpipe " + " ".join(_resolve_argv(wf, s))
        lines.append(f"  [{s.id}] {s.type}{' <- ' + ', '.join(s.inputs) if s.inputs else ''}: {cmd}")
    return lines


def run_workflow(path, *, dry_run: bool = False, resume: bool = False, run_dir=None, client=None, echo=print) -> dict | None:
    """Validate and run a workflow spec.

    Parameters
    ----------
    path : path
        The YAML spec.
    dry_run : bool
        Print the plan (``echo``) and what the run would replace; compute and write nothing.
    resume : bool
        Keep the outputs of steps whose fingerprint (params + input hashes) and output hash are unchanged
        since the last run in the same ``run_dir``; everything else is recomputed.
    run_dir : path, optional
        The run's folder instead of the spec's ``run_dir``.
    client : distributed.Client, optional
        Run the distributed steps on this client (default: a cluster from the spec's ``cluster``).
    echo : callable
        Called with each line of progress.

    Returns
    -------
    dict or None
        The provenance (also written to ``run_dir/provenance.json``); ``None`` for a dry run.
    """
    wf = load_spec(path, run_dir=run_dir)
    if dry_run:
        for line in dry_run_lines(wf):
            echo(line)
        lines, refused = _rundir.list_replacements(wf.run_dir, [(s.id, s.type) for s in wf.steps])
        for line in lines + [f"refused: {r}" for r in refused]:
            echo(f"  {line}")
        echo("dry run: nothing computed, nothing written")
        _rundir.check_run_dir(wf.run_dir, [(s.id, s.type) for s in wf.steps])
        return None
    from otpipe.engine.cluster import ClusterSpec, describe, open_client

    prov_path = wf.run_dir / "provenance.json"
    previous = {}
    if prov_path.exists():
        try:
            previous = {s["id"]: s for s in json.loads(prov_path.read_text()).get("steps", [])}
        except (ValueError, KeyError, TypeError):
            previous = {}
    _rundir.check_run_dir(wf.run_dir, [(s.id, s.type) for s in wf.steps])  # refuse before any work
    if not wf.run_dir.exists():
        mark_dir(wf.run_dir, "workflow run")
    t_start = time.perf_counter()
    prov = {
        "workflow": wf.name,
        "spec_path": str(Path(wf.path).resolve()),
        "spec_sha256": hashlib.sha256(Path(wf.path).read_bytes()).hexdigest(),
        "spec": wf.raw,
        "run_dir": str(wf.run_dir.resolve()),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"hostname": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": _versions(),
        "git_commit": _git_commit(),
        "resume": resume,
        "steps": [],
    }
    spec = ClusterSpec(
        scheduler=wf.cluster.get("scheduler"), scheduler_file=wf.cluster.get("scheduler_file"),
        n_workers=wf.cluster.get("n_workers"), threads_per_worker=wf.cluster.get("threads_per_worker", 1),
        memory_limit=wf.cluster.get("memory_limit", "auto"),
        **{k: wf.cluster[k] for k in ("tls_ca_file", "tls_cert", "tls_key") if wf.cluster.get(k)},
    )
    hashes: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(output_lock(wf.run_dir, inside=True))  # one run per run folder
        _rundir.check_run_dir(wf.run_dir, [(s.id, s.type) for s in wf.steps])
        opened = None

        def _client():  # one cluster for the whole run, started when a step first needs it
            nonlocal opened
            if opened is None:
                opened = stack.enter_context(open_client(spec, client=client))
                prov["cluster"] = describe(opened)
            return opened

        try:
            _run_steps(wf, prov, previous, hashes, resume, _client, echo)
        finally:
            prov["complete"] = len(prov["steps"]) == len(wf.steps)
            prov["seconds"] = round(time.perf_counter() - t_start, 3)
            tmp = prov_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(prov, indent=2, default=str))
            os.replace(tmp, prov_path)
    return prov


def _run_steps(wf: Workflow, prov: dict, previous: dict, hashes: dict, resume: bool, _client, echo) -> None:
    """Run (or keep, with ``resume``) every step in order, appending its record to ``prov["steps"]``."""
    for step in wf.steps:
        in_hashes = {ref: hashes[ref] for ref in step.inputs}
        in_hashes.update(_external_hashes(step))
        fp = _fingerprint(step, in_hashes)
        old = previous.get(step.id)
        rec = {"id": step.id, "step": step.type, "line": step.line, "params": step.params, "inputs": in_hashes,
               "seed": step.params.get("seed"), "fingerprint": fp}
        current = _step_output_hash(wf, step)
        if old is not None:
            rec["changed"] = ("unchanged" if old.get("fingerprint") == fp else
                              _what_changed(old, rec))
        if resume and step.type != "report" and old and old.get("fingerprint") == fp and current and current == old.get("output_hash"):
            rec.update(status="skipped (unchanged)", argv=old.get("argv"), seconds=0.0, output_hash=current)
            echo(f"[{step.id}] unchanged: kept {_step_dir(wf, step)}")
        else:
            t0 = time.perf_counter()
            if step.type == "report":
                rec["argv"] = ["report (built-in)"]
                _write_report(wf, step, prov, hashes)
            else:
                argv, kwargs = _resolve_argv(wf, step), _resolve_call(wf, step)
                if resume and _unfinished(wf, step, fp):
                    argv = ["--resume" if a == "--overwrite" else a for a in argv]
                    kwargs.update(overwrite=False, resume=True)
                    echo(f"[{step.id}] continuing the unfinished {_step_dir(wf, step) / f'{step.id}.zarr'}")
                if _distributed(step):
                    kwargs["client"] = _client()
                    argv += ["--scheduler", kwargs["client"].scheduler.address]
                    argv += [a for k in ("tls_ca_file", "tls_cert", "tls_key") if wf.cluster.get(k)
                             for a in (f"--{k.replace('_', '-')}", str(wf.cluster[k]))]
                rec["argv"] = argv
                echo(f"[{step.id}] otpipe {' '.join(argv)}")
                _record_start(wf, step, fp)
                _call(step, kwargs, argv, _step_dir(wf, step))
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            rec["status"] = "ran"
            rec["output_hash"] = _step_output_hash(wf, step)
            if old is not None and old.get("output_hash") and rec["changed"] == "unchanged":
                rec["reproduced"] = old.get("output_hash") == rec["output_hash"]
            echo(f"[{step.id}] done in {rec['seconds']:.1f} s: {rec['output_hash']}")
        hashes[step.id] = rec["output_hash"]
        prov["steps"].append(rec)


def _record_start(wf: Workflow, step: Step, fp: str) -> None:
    """Write the step's fingerprint into its folder before its command runs (see :data:`STEP_RECORD`)."""
    d = _rundir.ensure_step_dir(_step_dir(wf, step), wf.run_dir)
    tmp = d / (STEP_RECORD + ".tmp")
    tmp.write_text(json.dumps({"step": step.type, "fingerprint": fp}) + "\n")
    os.replace(tmp, d / STEP_RECORD)


def _unfinished(wf: Workflow, step: Step, fp: str) -> bool:
    """Whether the step's output is an unfinished store (``complete: false``) that a step with the
    same fingerprint ``fp`` started, and the step's function can continue it."""
    if step.type not in api.STEPS or not api.STEPS[step.type].resumable:
        return False
    d = _step_dir(wf, step)
    try:
        started = json.loads((d / STEP_RECORD).read_text())
        attrs = json.loads((d / f"{step.id}.zarr" / "zarr.json").read_text()).get("attributes") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(started, dict) and started.get("fingerprint") == fp and attrs.get("complete") is False


def _what_changed(old: dict, new: dict) -> str:
    what = []
    if old.get("params") != new.get("params"):
        keys = sorted(set(old.get("params") or {}) | set(new["params"]))
        what += [f"param {k}" for k in keys if (old.get("params") or {}).get(k) != new["params"].get(k)]
    oi, ni = old.get("inputs") or {}, new["inputs"]
    what += [f"input {k}" for k in sorted(set(oi) | set(ni)) if oi.get(k) != ni.get(k)]
    return "changed: " + (", ".join(what) if what else "command or version")


def _distributed(step: Step) -> bool:
    """Whether the step's function runs on the run's Dask cluster (takes a ``client``)."""
    entry = api.STEPS.get(step.type)
    return entry is not None and "client" in parameters(entry.function)


def _resolve_call(wf: Workflow, step: Step) -> dict:
    """The keyword arguments of the step's function: its params, its inputs' stores, its output store."""
    entry = api.STEPS[step.type]
    kwargs = dict(step.call)
    for name, ref in zip(entry.inputs, step.inputs):
        kwargs[name] = str(_step_dir(wf, _by_id(wf, ref)) / f"{ref}.zarr")
    kwargs["out"] = str(_step_dir(wf, step) / f"{step.id}.zarr")
    if "overwrite" in parameters(entry.function):
        kwargs["overwrite"] = True
    return kwargs


def _call(step: Step, kwargs: dict, argv: list[str], step_dir: Path) -> None:
    """Call the step's function; ``step_dir/<step>.log`` gets the command line, anything printed and a summary."""
    _rundir.ensure_step_dir(step_dir, step_dir.parent)
    buf = io.StringIO()
    buf.write(f"otpipe {' '.join(argv)}\n")
    try:
        with contextlib.redirect_stdout(buf):
            result = api.STEPS[step.type].function(**kwargs)
        buf.write(json.dumps(_summary(result), default=str) + "\n")
    finally:
        (step_dir / f"{step.type}.log").write_text(buf.getvalue())


def _summary(result) -> dict:
    """A short JSON-able description of a step's result (a collection, a Dataset or a summary dict)."""
    if isinstance(result, dict):
        return result
    if hasattr(result, "content_hash"):  # a collection
        return {"path": str(result.path), "n_measures": len(result), "hash": str(result.content_hash)}
    if hasattr(result, "sizes") and hasattr(result, "attrs"):  # an xarray Dataset
        keys = ("complete", "marginal_error_median", "marginal_error_max", "convergence_warning", "n_tests")
        return {"sizes": dict(result.sizes), **{k: result.attrs[k] for k in keys if k in result.attrs}}
    return {"result": repr(result)[:MAX_SHOWN]}


def _write_report(wf: Workflow, step: Step, prov: dict, hashes: dict) -> None:
    """``run_dir/<id>/index.html``: steps, provenance, and the figures and tables of the inputs."""
    d = _step_dir(wf, step)
    if d.exists():
        _rundir.ensure_step_dir(d, wf.run_dir)  # refuses a folder otpipe did not make
        shutil.rmtree(d)
    mark_dir(d, "workflow report")
    title = step.params.get("title", f"otpipe run: {wf.name}")
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}code{font-size:90%}</style>",
             f"</head><body><h1>{e(title)}</h1>",
             f"<p>spec <code>{e(prov['spec_path'])}</code> (sha256 {e(prov['spec_sha256'][:16])}...), "
             f"otpipe {e(str(prov['versions']['otpipe']))}, git {e(str(prov['git_commit'] or 'n/a'))}; "
             "timings and the full provenance: <code>provenance.json</code> in the run directory.</p>",
             "<h2>Steps</h2><table><tr><th>id</th><th>step</th><th>inputs</th><th>output hash</th></tr>"]
    for r in prov["steps"]:
        parts.append(f"<tr><td>{e(r['id'])}</td><td>{e(r['step'])}</td><td>{e(', '.join(r.get('inputs') or {}))}</td>"
                     f"<td><code>{e(str(r.get('output_hash'))[:23])}</code></td></tr>")
    parts.append("</table>")
    for ref in step.inputs:
        src = _step_dir(wf, _by_id(wf, ref))
        typ = _by_id(wf, ref).type
        parts.append(f"<h2>{e(ref)} ({e(typ)})</h2>")
        parts += _input_report(wf, src / f"{ref}.zarr", d, ref, typ)
    parts.append("<h2>Provenance</h2><pre>" + e(json.dumps(
        {k: prov[k] for k in ("versions", "git_commit", "host")}, indent=2)) + "</pre></body></html>")
    (d / "index.html").write_text("\n".join(parts))


def _input_report(wf: Workflow, store: Path, d: Path, ref: str, typ: str) -> list[str]:
    """HTML of one input of the run report: its ``otpipe report`` (written to ``d/<ref>/``: summary,
    notes, figures, a link to the full page); without one, its tables and PNGs as the step left them."""
    e = html.escape
    try:
        from otpipe.report import write_report

        files = write_report(store, d / ref, title=f"{ref} ({typ})")
    except Exception as exc:  # the run report still shows the rest
        parts = [f"<p>(no report for {e(store.name)}: {e(str(exc))})</p>"]
        src = store.parent
        for md in sorted(src.rglob("*.md")):
            parts.append(_md_table_html(md.read_text()))
        for k, png in enumerate(sorted(src.rglob("*.png"))):
            name = f"{ref}-{k}-{png.name}"
            shutil.copyfile(png, d / name)
            parts.append(f"<figure><img src='{e(name)}'><figcaption>{e(png.relative_to(wf.run_dir).as_posix())}"
                         "</figcaption></figure>")
        return parts
    parts = [f"<p>{e(line)}</p>" for line in files.lines]
    parts += [f"<p style='background:#fff4e0;padding:.5em'>{e(line)}</p>" for line in files.notes]
    parts += [f"<figure><img src='{e(ref)}/{e(png.name)}'></figure>" for png in files.pngs]
    parts.append(f"<p>Full report with tables and parameters: <a href='{e(ref)}/{e(files.html.name)}'>"
                 f"{e(ref)}/{e(files.html.name)}</a></p>")
    return parts


def _md_table_html(text: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in text.strip().splitlines() if r.strip().startswith("|")]
    rows = [r for r in rows if not all(set(c.strip()) <= set("-:") for c in r)]
    if not rows:
        return ""
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(c.strip())}</th>" for c in rows[0]) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:]]
    return "\n".join(out + ["</table>"])
