"""Every example runs end to end (smoke tests: a few seconds each), with its extra requirements
(`pip install "fastopt[examples]"`, torch for ddp_zero.py, numba for rule_signum.py); where one
is missing the example is skipped with the requirement and the command that installs it."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

import fastopt

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the examples import the same fastopt as these tests (the installed one in CI, the checkout in
# development)
PACKAGE_PARENT = str(pathlib.Path(fastopt.__file__).resolve().parents[1])

#: example -> {module it imports: the pip requirement that provides it}
REQUIRES: dict[str, dict[str, str]] = {
    "quickstart.py": {},
    "linear_regression.py": {},
    "digits_mlp.py": {"sklearn": "scikit-learn", "threadpoolctl": "threadpoolctl"},
    "ddp_zero.py": {"torch": "torch"},
    "rule_signum.py": {"numba": "numba"},
}


def run(name: str, *args: str, launcher: tuple[str, ...] = (sys.executable,)) -> str:
    for module, requirement in REQUIRES[name].items():
        extra = requirement if requirement in ("torch", "numba") else "examples"
        pytest.importorskip(module, reason=f"examples/{name} needs {requirement}: "
                            f"pip install \"fastopt[{extra}]\"")
    path = os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    proc = subprocess.run([*launcher, str(ROOT / "examples" / name), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_every_example_is_tested():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(REQUIRES)


def test_linear_regression():
    out = run("linear_regression.py")
    assert "fastopt: loss" in out
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert "agree to 1e-6" in out


def test_digits_mlp():
    out = run("digits_mlp.py")
    # the example promises >= 95 % after its last epoch
    assert float(re.findall(r"test accuracy ([\d.]+)%", out)[-1]) >= 95, out


def test_digits_mlp_in_bfloat16_keeps_small_updates_with_stochastic_rounding():
    """bfloat16 params, grads and state: round to nearest loses the updates below half an ulp
    (the end of the cosine schedule), stochastic rounding keeps them on average: a lower final
    loss, and the example's 95 %."""
    pytest.importorskip("ml_dtypes")
    loss = {}
    for flags in ((), ("--stochastic-rounding",)):
        out = run("digits_mlp.py", "--precision", "bf16", *flags)
        assert "params and grads in bfloat16, state in bfloat16" in out, out
        assert float(re.findall(r"test accuracy ([\d.]+)%", out)[-1]) >= 95, out
        loss[flags] = float(re.findall(r"loss ([\d.]+)", out)[-1])
    assert loss[("--stochastic-rounding",)] < loss[()], loss


def test_digits_mlp_with_8bit_state():
    """bfloat16 params with AdamW's moments in 8 bits still reach the example's 95 %."""
    pytest.importorskip("ml_dtypes")
    out = run("digits_mlp.py", "--precision", "bf16", "--state", "8bit")
    assert "state in 8bit" in out, out
    assert float(re.findall(r"test accuracy ([\d.]+)%", out)[-1]) >= 95, out


def test_quickstart():
    out = run("quickstart.py")
    final = out.strip().splitlines()[-2]
    assert final.startswith("step  299")
    assert float(final.split("loss")[1].split()[0]) < 1e-3, out


def test_rule_signum():
    out = run("rule_signum.py")
    diff = float(re.search(r"max \|difference\| = ([\d.e+-]+)", out).group(1))
    assert diff <= 1e-12, out  # the kernel agrees with the reference (float64)
    assert float(re.search(r"final loss ([\d.]+)", out).group(1)) < 1e-2, out


@pytest.mark.slow  # two processes and a rendezvous: about 20 s on a busy 2-core machine
def test_ddp_zero():
    out = run("ddp_zero.py", "--steps", "3", launcher=(
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"))
    assert "step    2  loss" in out, out
    # ZeRO stage 1: the two ranks step disjoint shards that together cover every parameter
    shards = re.findall(r"rank (\d): steps (\d+) of (\d+) parameters", out)
    assert sorted(rank for rank, *_ in shards) == ["0", "1"], out
    assert sum(int(mine) for _, mine, _ in shards) == int(shards[0][2]), out
