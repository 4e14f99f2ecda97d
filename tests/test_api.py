"""The collection-level API (:mod:`otpipe.api`): every command's options equal its function's parameters (names,
defaults, choices, ranges, how lists are spelled), so the command line and the API cannot drift apart; the
registry of workflow steps; the former top-level names warn and give identical results."""
from __future__ import annotations

import warnings

import click
import numpy as np
import pytest

import otpipe
from otpipe import api
from otpipe.cli import cli
from otpipe.cli.options import cluster_options
from otpipe.params import Listed, Range, convert, parameters

#: the command line's options that only say what it prints
CLI_ONLY = {"json", "quiet", "no_progress", "help"}
#: the API's parameters that the command line fills otherwise (cluster options -> ``cluster``, ``--quiet`` and
#: ``--no-progress`` -> ``progress``) or that only a Python caller has (``client``, ``notes``)
API_ONLY = {"cluster", "client", "progress", "notes"}
#: arguments the commands still accept in a deprecated spelling (``otpipe synth OUT``)
DEPRECATED_ARGUMENTS = {"out_arg"}
#: the smallest command lines each command parses (its required arguments and options)
REQUIRED_ARGS = {"synth": ["--out", "o"], "ingest": ["s", "--out", "o"], "distances": ["c", "--out", "o"],
                 "two-sample": ["c", "--out", "o"], "barycenter": ["c", "--out", "o"], "complexity": ["--out", "o"],
                 "report": ["r", "--out", "o"]}


def _cluster_option_names() -> set[str]:
    @cluster_options
    def f(**kw):
        return kw

    return {_long(p) for p in f.__click_params__}


def _long(p: click.Parameter) -> str:
    """The API name of a Click parameter: its long option without dashes (``--n-measures`` -> ``n_measures``)."""
    if isinstance(p, click.Argument):
        return p.name
    return next(o for o in p.opts if o.startswith("--"))[2:].replace("-", "_")


def _command(name: str) -> click.Command:
    with click.Context(cli) as ctx:
        return cli.get_command(ctx, name)


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("name", sorted(api.COMMANDS))
def test_command_options_equal_the_function_parameters(name):
    cmd, schema = _command(name), parameters(api.COMMANDS[name])
    cluster = _cluster_option_names()
    options = {_long(p): p for p in cmd.params if _long(p) not in CLI_ONLY | cluster and p.name not in DEPRECATED_ARGUMENTS}
    assert set(options) == set(schema) - API_ONLY, f"otpipe {name} and otpipe.api.{api.COMMANDS[name].__name__} differ"
    if cluster & {_long(p) for p in cmd.params}:  # a distributed command: its cluster options fill ``cluster``
        assert {"cluster", "client", "progress"} <= set(schema)
    ctx = cmd.make_context(name, list(REQUIRED_ARGS[name]))  # every default, converted as the command converts it
    for key, opt in options.items():
        p = schema[key]
        if key == "out":  # required by the command; the API computes in memory without it where it can
            assert p.required or p.default is None, key
            continue
        if isinstance(opt, click.Argument):
            assert opt.required == p.required, key
            continue
        assert _plain(ctx.params[opt.name]) == _plain(p.default), f"default of --{key}"
        assert opt.multiple == (p.listed is Listed.REPEATED), f"--{key}: repeated option <-> Listed.REPEATED"
        if opt.is_flag:
            assert p.kind == "bool", key
        elif isinstance(opt.type, click.Choice):
            assert p.kind == "choice" and tuple(opt.type.choices) == p.choices, key
        elif isinstance(opt.type, (click.IntRange, click.FloatRange)):
            assert p.range is not None and p.range.min == opt.type.min and p.range.max == opt.type.max, key
        elif isinstance(opt.type, click.types.IntParamType):
            assert p.kind == "int" and p.range is None, key
        elif isinstance(opt.type, click.types.FloatParamType):
            assert p.kind == "float" and p.range is None, key


def test_steps_are_commands_with_their_inputs():
    import otpipe.cli

    for name, entry in api.STEPS.items():
        assert name in otpipe.cli._COMMANDS
        assert entry.function is api.COMMANDS[name]
        schema = parameters(entry.function)
        assert all(i in schema for i in entry.inputs) and "out" in schema
    assert [n for n, e in api.STEPS.items() if e.collection] == ["synth", "ingest", "barycenter"]


def test_schema_converts_and_refuses():
    s = parameters(api.synth)
    assert convert(s["n_measures"], "7") == 7 and convert(s["kind"], "circle") == ["circle"]
    assert convert(parameters(api.complexity)["eps"], "0.1, 10") == [0.1, 10.0]
    for p, bad, msg in [(s["n_measures"], 0, "must be >= 1"), (s["n_measures"], "many", "not a valid integer"),
                        (s["n_measures"], 2.5, "not a valid integer"), (s["weights"], "heavy", "is not one of"),
                        (s["noise"], None, "expected a number"), (s["dim"], True, "expected an integer")]:
        with pytest.raises(ValueError, match=msg):
            convert(p, bad)
    with pytest.raises(ValueError, match="must be <= 1"):
        Range(0, 1).check(2)


# ------------------------------------------------------------------------------------------------
# the former names: a FutureWarning naming the replacement, and the same results
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    from otpipe.engine.cluster import ClusterSpec, open_client

    with open_client(ClusterSpec(n_workers=1, threads_per_worker=1, memory_limit="1GiB")) as c:
        yield c


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "c.zarr"
    return api.synth(out=path, kind=["circle", "gaussian"], n_measures=4, n_points=12, seed=1)


def _former(name, *args, **kw):
    with pytest.warns(FutureWarning, match=rf"otpipe\.{name} is deprecated .*: use otpipe\.") as rec:
        res = getattr(otpipe, name)(*args, **kw)
    assert len([w for w in rec if issubclass(w.category, FutureWarning)]) == 1
    return res


def _new(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        return fn(*args, **kw)


def test_former_names_are_not_exported():
    for name in ("pairwise", "pairwise_two_sample", "group_barycenters", "complexity_study"):
        assert name not in otpipe.__all__
    assert {"distances", "two_sample", "api"} <= set(otpipe.__all__)
    assert otpipe.distances is api.distances and otpipe.two_sample is api.two_sample


def test_pairwise_is_distances(client, coll):
    old = _former("pairwise", coll.path, client=client, loss="energy", progress=False)
    new = _new(otpipe.distances, coll.path, client=client, loss="energy", progress=False)
    np.testing.assert_array_equal(old["divergence"].values, new["divergence"].values)
    assert old["divergence"].values[0, 1] > 0


def test_pairwise_two_sample_is_two_sample(client, coll, tmp_path):
    kw = dict(statistic="energy", n_permutations=19, seed=2, client=client, progress=False)
    old = _former("pairwise_two_sample", coll.path, **kw)
    new = _new(otpipe.two_sample, coll.path, **kw)
    np.testing.assert_array_equal(old["pvalue"].values, new["pvalue"].values)
    stored = _new(otpipe.two_sample, coll.path, out=tmp_path / "t.zarr", **kw)  # with out=: the store and its PNG
    np.testing.assert_array_equal(stored["pvalue"].values, new["pvalue"].values)
    assert (tmp_path / "t.png").stat().st_size > 0


@pytest.mark.filterwarnings("ignore:barycenter of group")  # 3 iterations: not converged, on purpose
def test_group_barycenters_is_api_barycenter(client, coll):
    kw = dict(method="free", max_iter=3, seed=1, n_points=5, client=client)
    old = _former("group_barycenters", coll.path, **kw)
    new = _new(api.barycenter, coll.path, **kw)
    assert list(old) == list(new) == ["circle", "gaussian"]
    for g in old:
        np.testing.assert_array_equal(old[g].points, new[g].points)


def test_complexity_study_is_api_complexity(client):
    grid = dict(eps=[1.0], dims=[2], reps=2, seed=0, client=client)
    old = _former("complexity_study", ns=[10, 20], divergences=("sinkhorn",), figures=None, **grid)
    new = _new(api.complexity, n=[10, 20], only=True, no_figures=True, **grid)
    np.testing.assert_array_equal(old["sinkhorn"].values, new["sinkhorn"].values)
