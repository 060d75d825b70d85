"""How much the ill-conditioned proxies move from one CPU to another, measured by emulating other CPUs here.

Each *variant* is a fresh Python process (the settings must be in place before torch loads) that
scores the official test vectors (``../shared/data/reference``: the five NB201 reference cells with
their weights and inputs) and the committed benchmark cells that
``tests/benchmark/test_benchmark.py::test_committed_sota_rows_reproduce_with_the_stated_protocol``
recomputes. The variants:

- one thread (``OMP_NUM_THREADS`` and ``torch.set_num_threads``) with each of the settings below, and
  two threads with the first of each kind (``TWO_THREADS``):
- torch's kernel dispatch ``ATEN_CPU_CAPABILITY=default`` (no vector kernels; ``avx2`` is this CPU's own),
- MKL's instruction set ``MKL_ENABLE_INSTRUCTIONS=SSE4_2|AVX|AVX2`` and ``MKL_CBWR=COMPATIBLE``
  (BLAS and LAPACK: the eigen/singular value solvers, matrix products),
- oneDNN's ``ONEDNN_MAX_CPU_ISA=SSE41|AVX|AVX2`` (the convolutions);
- and ``--perturb`` seeds: the inputs and the loaded weights times ``1 + 1e-7 * N(0, 1)`` (about one
  float32 ulp), which stands in for any other CPU's rounding (an AVX-512 machine rounds differently
  from every setting above).

For each value the table gives the official value (if any), this machine's value with one thread and
no setting (``base``), the largest relative deviation from ``base`` over the kernel/thread variants
and over the perturbations, and the largest relative deviation from the official value over all
variants (what a parity tolerance must cover). ``flip``: some variants finite, others not.

    python bench/cpu_spread.py run --out docs/benchmarks/cpu_spread.md
    python bench/cpu_spread.py worker --perturb 0          # one variant's values as JSON (internal)
    python bench/cpu_spread.py tests -- tests/scores/test_vkdnw.py   # pytest under every setting, 1 and 2 threads
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "reference"
TAGS = ("best_c10", "resnet", "pool_1x1", "all_skip", "all_none")
KERNEL_ENVS = {
    "base": {},
    "aten=default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl=SSE4_2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "mkl=AVX": {"MKL_ENABLE_INSTRUCTIONS": "AVX"},
    "mkl=AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl_cbwr=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "onednn=SSE41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "onednn=AVX": {"ONEDNN_MAX_CPU_ISA": "AVX"},
    "onednn=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
}
PERTURB_REL = 1e-7
FAMILIES = ("sota", "epe")


# ------------------------------------------------------------------------------------------ worker
def _perturbed(t, generator):
    import torch

    if not t.is_floating_point():
        return t
    return t * (1 + PERTURB_REL * torch.randn(t.shape, generator=generator, dtype=torch.float64)).to(t.dtype)


def _variant_inputs(perturb: int):
    """This variant's threads, its perturbation (``noisy``: identity for seed 0), the reference folder, its cells
    and the (perturbed) inputs."""
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    generator = torch.Generator().manual_seed(perturb)
    noisy = (lambda t: _perturbed(t, generator)) if perturb else (lambda t: t)
    base = REFERENCE / "epe_official_seed0"
    archs = json.loads((base / "expected.json").read_text())["archs"]
    inputs = np.load(base / "inputs.npz")
    return noisy, base, archs, noisy(torch.from_numpy(inputs["x"])), torch.from_numpy(inputs["y"])


def measure_epe_family(perturb: int, tags=TAGS) -> dict[str, float]:
    """EPE (the reference path, both class-count branches), NASWOT v1 (jacob_cov) and v2, and the input gradient
    of the official test vectors, for one variant: ``{"score | official | where": value}``. ``input_gradient``
    is the largest deviation of any entry from the official gradient, over the gradient's largest entry."""
    import numpy as np
    import torch

    from lightning_epe.scores import epe_score, jacob_cov_score, naswot_score
    from lightning_epe.scores._gradients import input_gradient
    from lightning_epe.scores._isolation import scoring_context
    from lightning_epe.spaces import NB201Space

    noisy, base, archs, x, y = _variant_inputs(perturb)
    values: dict[str, float] = {}
    for tag in tags:
        state = {k: noisy(torch.from_numpy(v)) for k, v in np.load(base / f"state_dict_{tag}.npz").items()}
        net = NB201Space().build(archs[tag]["arch_str"], num_classes=10)
        net.load_state_dict(state, strict=True)
        values[f"epe | official | {tag}"] = epe_score(net, x, y, reference=True)
        values[f"epe | official | {tag} n120"] = epe_score(net, x, y, class_count=120, reference=True)
        if tag == "best_c10":
            official = torch.from_numpy(np.load(base / "jacobian_best_c10.npz")["jacobian"])
            with scoring_context(net, torch.device("cpu")):
                gradient, _ = input_gradient(net, x)
            values[f"input_gradient | official | {tag}"] = float((gradient - official).abs().max()
                                                                  / official.abs().max())
        with torch.random.fork_rng(devices=[]):  # the official NASWOT nets: one class, built under seed 0
            torch.manual_seed(0)
            one_class = NB201Space().build(archs[tag]["arch_str"], num_classes=1)
        one_class.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")}, strict=False)
        values[f"jacob_cov | official | {tag}"] = jacob_cov_score(one_class, x)
        values[f"naswot | official | {tag}"] = naswot_score(one_class, x, mode="official")
    return values


def measure(perturb: int, tags=TAGS, committed: bool = True) -> dict[str, float]:
    """Every measured value of one variant: ``{"score | setting | where": value}``."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from lightning_epe.scores import get_score
    from lightning_epe.scores import vkdnw as V
    from lightning_epe.scores.az_nas import az_nas_components
    from lightning_epe.spaces import NB201Space

    noisy, base, archs, x, y = _variant_inputs(perturb)
    space = NB201Space()
    values: dict[str, float] = {}

    def vkdnw_both(net, where, init):
        """vkdnw_entropy in both modes from one Jacobian (the library's own code path, official mode,
        its Jacobian kept to compute the clean mode's float64 statistic on it)."""
        kept = []
        original = V.vkdnw_from_jacobian

        def keep(jacobian, logits, dtype=None):
            kept.append((jacobian, logits))
            return original(jacobian, logits, dtype)

        V.vkdnw_from_jacobian = keep
        try:
            torch.manual_seed(0)
            values[f"vkdnw_entropy | official | {where}"] = V.vkdnw_entropy_score(net, x[:64], init=init,
                                                                                  mode="official")
        finally:
            V.vkdnw_from_jacobian = original
        values[f"vkdnw_entropy | clean | {where}"] = original(*kept[-1], V.MODE_DTYPE["clean"])

    for tag in tags:
        net = space.build(archs[tag]["arch_str"], num_classes=10)
        state = np.load(base / f"state_dict_{tag}.npz")
        net.load_state_dict({k: noisy(torch.from_numpy(v)) for k, v in state.items()}, strict=True)
        vkdnw_both(net, f"{tag} loaded_p1", None)
        vkdnw_both(net, f"{tag} reinit_kaiming_seed0_p1", "official")
        values[f"zico | official | {tag}"] = get_score("zico")(net, x[:128], y[:128])
        values[f"meco | official | {tag} meco"] = get_score("meco")(net, x[:1], mode="official")
        values[f"meco | official | {tag} meco_if_batch64"] = get_score("meco")(net, x[:64], mode="official")
        values[f"meco | clean | {tag} x[:1]"] = get_score("meco")(net, x[:1])
        for init, key in ((None, "loaded"), ("official", "reinit_kaiming_seed0")):
            torch.manual_seed(0)
            for name, value in az_nas_components(net, x[:64], init=init).items():
                values[f"az_{name} | official | {tag} {key}"] = value
        for name, value in az_nas_components(net, x[:64], init=None, mode="clean").items():
            if name != "trainability":  # the same in both modes
                values[f"az_{name} | clean | {tag} loaded"] = value
    if committed:
        values.update(_committed_cells(noisy))
    return values


def _committed_cells(noisy, per_sample: int = 3) -> dict[str, float]:
    """The ``per_sample`` cheapest cells of each committed sample (the committed-rows test rescores one),
    with bench/nb201_sota.py's protocol."""
    import csv

    import torch
    from _common import CIFAR10_SAMPLE
    from nb201_sota import CLASSIC, NEW, load_batch, output_path, score_cell

    from lightning_epe.spaces import NB201Space

    x, y = load_batch(str(ROOT / CIFAR10_SAMPLE), 128)
    x = noisy(x)
    values = {}
    for sample, names in ((0, NEW), (1, CLASSIC + NEW)):
        rows = list(csv.DictReader((ROOT / output_path(sample)).open()))
        finite = [r for r in rows if all(math.isfinite(float(r[n])) for n in names)]
        finite.sort(key=lambda r: (r["arch_str"].count("nor_conv_3x3"), r["arch_str"].count("nor_conv_1x1")))
        for row in finite[:per_sample]:
            index = int(row["index"])
            torch.manual_seed(index)
            net = NB201Space().build(index, num_classes=10, C=16, N=5).train()
            with torch.no_grad():
                for p in net.parameters():
                    p.copy_(noisy(p))
            for name, value in score_cell(net, x, y, index, names).items():
                values[f"{name} | committed | sample{sample} cell {index}"] = value
                values[f"_committed | sample{sample} cell {index} | {name}"] = float(row[name])
    return values


# ------------------------------------------------------------------------------------------ runner
#: The settings also run with 2 threads (the others are this CPU's own kernels or close to them).
TWO_THREADS = ("base", "aten=default", "mkl=SSE4_2", "onednn=SSE41")


def variants(seeds: int) -> list[tuple[str, dict[str, str], int]]:
    out = [(f"1t {name}", {"OMP_NUM_THREADS": "1", **env}, 0) for name, env in KERNEL_ENVS.items()]
    out += [(f"2t {name}", {"OMP_NUM_THREADS": "2", **KERNEL_ENVS[name]}, 0) for name in TWO_THREADS]
    out += [(f"1t perturb seed {s}", {"OMP_NUM_THREADS": "1"}, s) for s in range(1, seeds + 1)]
    return out


def run_variant(env: dict[str, str], perturb: int, extra: list[str], cache: Path | None = None) -> dict[str, float]:
    """One variant's values from a fresh process (or from ``cache``, a JSON file a previous run left)."""
    if cache is not None and cache.exists():
        return json.loads(cache.read_text())
    clean = {k: v for k, v in os.environ.items() if k not in
             {"ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS"}}
    done = subprocess.run([sys.executable, __file__, "worker", "--perturb", str(perturb), *extra],
                          env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"variant {env} failed:\n{done.stderr[-3000:]}")
    values = json.loads(done.stdout.strip().splitlines()[-1])
    if cache is not None:
        cache.write_text(json.dumps(values))
    return values


def test_matrix(pytest_args: list[str], jobs: int) -> str:
    """Run ``pytest pytest_args`` under every kernel setting with 1 and 2 threads; a Markdown table of the outcomes."""
    clean = {k: v for k, v in os.environ.items() if k not in
             {"ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS"}}

    def one(threads: int, env: dict[str, str]) -> str:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
                              env={**clean, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), **env},
                              cwd=ROOT, capture_output=True, text=True, check=False)
        tail = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
        return summary.strip("= ") + "".join(f"<br>{line}" for line in tail)

    cases = [(t, name, env) for name, env in KERNEL_ENVS.items() for t in (1, 2)]
    with ThreadPoolExecutor(jobs) as pool:
        outcomes = list(pool.map(lambda case: one(case[0], case[2]), cases))
    lines = [f"`python -m pytest -q {' '.join(pytest_args)}` under each setting:", "",
             "| setting | threads | outcome |", "|---|---|---|"]
    lines += [f"| {name} | {t} | {outcome} |" for (t, name, _), outcome in zip(cases, outcomes)]
    return "\n".join(lines)


def official_values() -> dict[str, float]:
    """The official value of each reference key (sota_official_seed0/expected.json)."""
    archs = json.loads((REFERENCE / "sota_official_seed0" / "expected.json").read_text())["archs"]
    out = {}
    epe = json.loads((REFERENCE / "epe_official_seed0" / "expected.json").read_text())["archs"]
    for tag in TAGS:
        out[f"epe | official | {tag}"] = epe[tag]["epe"]
        out[f"epe | official | {tag} n120"] = epe[tag]["epe_if_n_classes_120"]
        out[f"jacob_cov | official | {tag}"] = epe[tag]["naswot_v1"]
        out[f"naswot | official | {tag}"] = epe[tag]["naswot_v2"]
        if tag == "best_c10":
            out[f"input_gradient | official | {tag}"] = 0.0
        a = archs[tag]
        for key in ("loaded_p1", "reinit_kaiming_seed0_p1"):
            out[f"vkdnw_entropy | official | {tag} {key}"] = a["vkdnw"][key]["vkdnw_entropy"]
        out[f"zico | official | {tag}"] = a["zico"]["zico"]
        for key in ("meco", "meco_if_batch64"):
            out[f"meco | official | {tag} {key}"] = a["meco"][key]
        for key in ("loaded", "reinit_kaiming_seed0"):
            for name in ("expressivity", "progressivity", "trainability"):
                out[f"az_{name} | official | {tag} {key}"] = a["az_nas"][key][name]
    return out


def rel(a: float, b: float) -> float:
    """|a - b| / |b| (absolute when b is 0); inf when exactly one is finite; 0 for equal non-finite values."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return 0.0 if a == b or (math.isnan(a) and math.isnan(b)) else math.inf
    return abs(a - b) / abs(b) if b else abs(a - b)


def fmt(v: float) -> str:
    if v is None:
        return ""
    if not math.isfinite(v):
        return "flip" if v == math.inf else str(v)
    return "0" if v == 0 else f"{v:.1e}"


def report(results: dict[str, dict[str, float]], command: str) -> str:
    official = official_values()
    base = results["1t base"]
    names = [n for n in base if not n.startswith("_")]
    committed = {n: v for n, v in base.items() if n.startswith("_committed")}
    kernel = [v for k, v in results.items() if "perturb" not in k]
    perturbed = [v for k, v in results.items() if "perturb" in k]
    lines = [
        "# Spread of the proxies across CPUs (emulated)", "",
        f"Generated by `{command}` on {_cpu()} (torch {_torch_version()}; {len(results)} variants, each a "
        f"fresh process: {', '.join(results)}).", "",
        "Relative deviations (absolute where the reference value is 0). `kernels/threads`: the largest over "
        "threads 1 and 2 times the torch/MKL/oneDNN settings, from this machine's one-thread value `base`; "
        f"`perturbed`: the largest over {len(perturbed)} runs with inputs and loaded weights times "
        f"1 + {PERTURB_REL:g} N(0, 1); `vs official`: the largest deviation of any variant from the official "
        "value (what a parity tolerance must cover); `flip`: finite in some variants, not in others.", "",
        "| score | mode | cell / key | official | base | kernels/threads | perturbed | vs official |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        score, mode, where = (part.strip() for part in n.split("|"))
        ref = committed.get(_committed_key(n)) if mode == "committed" else official.get(n)
        k = max(rel(v[n], base[n]) for v in kernel)
        p = max((rel(v[n], base[n]) for v in perturbed), default=None)
        o = None if ref is None else max(rel(v[n], ref) for v in results.values())
        lines.append(f"| {score} | {mode} | {where} | {'' if ref is None else f'{ref:.6g}'} | {base[n]:.6g} | "
                     f"{fmt(k)} | {fmt(p)} | {fmt(o)} |")
    lines += ["", "`official` of a committed cell: the value in the committed CSV (made with the float32 official "
              "paths on the machine that ran the benchmark; `vs official` is then what the committed-rows test must "
              "cover).", "", "## Largest over the cells", "",
              "| score | mode | kernels/threads | perturbed | vs official | flips |", "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[str]] = {}
    for n in names:
        score, mode, _ = (part.strip() for part in n.split("|"))
        groups.setdefault((score, mode), []).append(n)
    for (score, mode), members in groups.items():
        def largest(values):
            finite = [v for v in values if v is not None and math.isfinite(v)]
            return max(finite, default=None)

        k = largest(rel(v[n], base[n]) for v in kernel for n in members)
        p = largest(rel(v[n], base[n]) for v in perturbed for n in members)
        refs = {n: official.get(n, committed.get(_committed_key(n))) for n in members}
        o = largest(rel(v[n], refs[n]) for v in results.values() for n in members if refs[n] is not None)
        flips = sum(any(math.isinf(rel(v[n], base[n])) for v in results.values())
                    or (refs[n] is not None and any(math.isinf(rel(v[n], refs[n])) for v in results.values()))
                    for n in members)
        lines.append(f"| {score} | {mode} | {fmt(k)} | {fmt(p)} | {fmt(o)} | {flips} of {len(members)} |")
    lines += ["", "`flips`: values that are finite in some variants (or the reference) and not in others; the "
              "other columns leave them out. The committed cells' AZ-NAS and VKDNW columns follow the benchmark "
              "protocol (their own re-initialisation and a Gaussian-noise input), which the perturbation does not "
              "reach: only the kernel/thread settings move them.", ""]
    return "\n".join(lines)


def _committed_key(name: str) -> str:
    score, _, where = (part.strip() for part in name.split("|"))
    return f"_committed | {where} | {score}"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + (" (AVX-512)" if "avx512f" in Path(
                    "/proc/cpuinfo").read_text() else " (AVX2, no AVX-512)")
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--perturb", type=int, default=0)
    w.add_argument("--tags", nargs="*", default=list(TAGS))
    w.add_argument("--no-committed", action="store_true")
    w.add_argument("--family", choices=FAMILIES, default="sota")
    r = sub.add_parser("run")
    r.add_argument("--out", default="docs/benchmarks/cpu_spread.md")
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--jobs", type=int, default=2, help="variants run at once")
    r.add_argument("--only", nargs="*", help="run only these variants (names as in the report)")
    r.add_argument("--reverse", action="store_true", help="last variant first (a second runner on one cache)")
    r.add_argument("--cache", type=Path, help="a folder keeping each variant's values (a rerun reuses them)")
    r.add_argument("--tags", nargs="*", default=list(TAGS))
    r.add_argument("--no-committed", action="store_true")
    r.add_argument("--family", choices=FAMILIES, default="sota",
                   help="sota: the state-of-the-art proxies and committed cells; epe: EPE, NASWOT v1/v2, the gradient")
    t = sub.add_parser("tests", help="run pytest under every kernel setting with 1 and 2 threads")
    t.add_argument("--jobs", type=int, default=2)
    t.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "tests":
        print(test_matrix(args.pytest_args, args.jobs))
        return 0
    extra = ["--tags", *args.tags, "--family", args.family] + (["--no-committed"] if args.no_committed else [])
    if args.cmd == "worker":
        values = (measure_epe_family(args.perturb, tuple(args.tags)) if args.family == "epe"
                  else measure(args.perturb, tuple(args.tags), not args.no_committed))
        print(json.dumps(values))
        return 0
    todo = variants(args.seeds)
    if args.only:  # in the order given
        todo = [v for name in args.only for v in todo if v[0] == name]
    todo = todo[::-1] if args.reverse else todo
    with ThreadPoolExecutor(args.jobs) as pool:  # each variant is its own process
        futures = {name: pool.submit(run_variant, env, perturb, extra,
                                     args.cache / f"{name.replace(' ', '_')}.json" if args.cache else None)
                   for name, env, perturb in todo}
        results = {name: futures[name].result() for name, _, _ in variants(args.seeds) if name in futures}
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=0))  # the raw values
    text = report(results, "python bench/cpu_spread.py run " + " ".join(sys.argv[2:]))
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
