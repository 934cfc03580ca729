"""Our trainer beside kohya's own ``train_network.py`` / ``sdxl_train_network.py``.

    .venv/bin/python -m bench.kohya_side_by_side --sd-scripts ~/sd-scripts \\
        --kohya-venv /tmp/kohya-venv --wheels wheels/ --arch sd15 --batch 4 --rank 32

Both train the same base model (the architecture's real shapes with random weights,
built in code: kohya's UNet classes have the SD1.5 and SDXL shapes built in, so the
tiny test models cannot be used), the same generated dataset, resolution, batch,
rank, optimizer (AdamW), precision (bf16 on CUDA, fp32 on CPUs) and caching (latents;
text-encoder outputs for SDXL, which is the only one kohya caches them for), UNet only,
no gradient checkpointing unless ``--gradient-checkpointing``. They alternate
``--repeat`` times and each keeps its best; :mod:`bench.step_clock` times the optimizer
steps of both the same way, from outside, after ``--warmup`` steps.

kohya runs in its own virtualenv, made from its repository's ``requirements.txt``
(nothing of kohya is in this repository): with ``--wheels DIR`` from those wheels only
(``--no-index``, for a machine without network), else from the package index. The venv
sees the system's packages (``--system-site-packages``): the CUDA build of torch there
is used as it is, and a pin whose wheel is not in DIR keeps the system's version
(printed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLOCK = REPO / "bench" / "step_clock.py"
# kohya loads its tokenizers from the hub unless --tokenizer_cache_dir holds them.
KOHYA_TOKENIZERS = ("openai/clip-vit-large-patch14", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k")
# Installed by the base interpreter's own build: never replaced from kohya's pins.
KEEP_SYSTEM = {"torch", "torchvision", "xformers", "triton"}


@dataclass
class Setup:
    arch: str
    resolution: int
    batch: int
    rank: int
    steps: int
    warmup: int
    cuda: bool
    gradient_checkpointing: bool = False
    compile: bool = False

    @property
    def cache_text(self) -> bool:
        return self.arch == "sdxl"


def kohya_python(sd_scripts: Path, venv_dir: Path, wheels: Path | None) -> Path:
    """The virtualenv's python, made from kohya's requirements if it is not there yet."""
    python = venv_dir / "bin" / "python"
    if python.exists():
        return python
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(venv_dir)
    pins = [line.split("#")[0].strip() for line in (sd_scripts / "requirements.txt").open()]
    pins = [p for p in pins if p and not p.startswith("-")]  # "-e ." is the checkout itself
    for pin in pins:
        name = re.split(r"[\[=<>~! ]", pin, maxsplit=1)[0].lower()
        if name in KEEP_SYSTEM:
            continue
        source = ["--no-index", "--find-links", str(wheels)] if wheels else []
        # --no-deps: the pins are kohya's whole set; the rest comes from the system.
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", *source, pin],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            why = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"kohya venv: {pin} not installed; the system's version, if any, is used ({why})")
    return python


def prepare(root: Path, setup: Setup) -> tuple[Path, Path, Path]:
    """The model folder, the dataset folder and kohya's tokenizer cache."""
    from transformers import CLIPTokenizer

    from bench.train_throughput import build_data, build_model
    from trainer.tiny import write_tokenizer

    built, data = root / "model.path", root / "data"
    if built.exists():  # a kept --work folder is reused
        model = Path(built.read_text())
    else:
        model = build_model(setup.arch, root / "model")
        built.write_text(str(model))
    if not data.exists():
        build_data(root, setup.resolution, max(2 * setup.batch, 4))
    tokenizers = root / "tokenizers"
    tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
    for name in KOHYA_TOKENIZERS:
        folder = tokenizers / name.replace("/", "_")
        tokenizer.save_pretrained(folder)
        # kohya's pinned transformers reads the slow tokenizer's vocab.json/merges.txt,
        # which newer versions no longer save: write the model's own vocabulary.
        write_tokenizer(folder)
    return model, data, tokenizers


def ours_command(setup: Setup, model: Path, data: Path, out: Path) -> list[str]:
    from trainer.tiny import write_toml

    values = {
        "pretrained_model_name_or_path": str(model), "train_data_dir": str(data),
        "output_dir": str(out), "output_name": "ours",
        "resolution": f"{setup.resolution},{setup.resolution}", "enable_bucket": False,
        "network_module": "networks.lora", "network_dim": setup.rank,
        "network_alpha": setup.rank, "network_train_unet_only": True,
        "train_batch_size": setup.batch, "max_train_steps": setup.warmup + setup.steps,
        "optimizer_type": "AdamW", "learning_rate": 1e-4,
        "mixed_precision": "bf16" if setup.cuda else "no", "save_precision": "fp16",
        "cache_latents": True, "cache_text_encoder_outputs": setup.cache_text,
        "gradient_checkpointing": setup.gradient_checkpointing,
        "torch_compile": setup.compile, "seed": 1,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    config = write_toml(out / "train.toml", values)
    return [sys.executable, str(CLOCK), str(out / "clock.json"), "-m", "trainer",
            str(config), "--quiet"]  # fmt: skip


def kohya_command(
    setup: Setup, python: Path, sd_scripts: Path, model: Path, data: Path, tokenizers: Path,
    out: Path,
) -> list[str]:  # fmt: skip
    script = "sdxl_train_network.py" if setup.arch == "sdxl" else "train_network.py"
    args = [
        "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data),
        "--output_dir", str(out), "--output_name", "kohya", "--caption_extension", ".txt",
        "--resolution", f"{setup.resolution},{setup.resolution}",
        "--network_module", "networks.lora", "--network_dim", str(setup.rank),
        "--network_alpha", str(setup.rank), "--network_train_unet_only",
        "--train_batch_size", str(setup.batch),
        "--max_train_steps", str(setup.warmup + setup.steps),
        "--optimizer_type", "AdamW", "--learning_rate", "1e-4",
        "--mixed_precision", "bf16" if setup.cuda else "no", "--save_precision", "fp16",
        "--cache_latents", "--sdpa", "--seed", "1", "--tokenizer_cache_dir", str(tokenizers),
        "--max_data_loader_n_workers", "0" if not setup.cuda else "2",
    ]  # fmt: skip
    if setup.cuda:
        args.append("--persistent_data_loader_workers")
    if setup.cache_text:
        args.append("--cache_text_encoder_outputs")
    if setup.arch == "sdxl":
        args.append("--no_half_vae")  # the VAE in fp32, as ours
    if setup.gradient_checkpointing:
        args.append("--gradient_checkpointing")
    return [str(python), str(CLOCK), str(out / "clock.json"), "--",
            str(sd_scripts / script), *args]  # fmt: skip


class SideFailed(Exception):
    """One side's run ended without step times."""


def side_env(side: str) -> dict[str, str]:
    """Ours sees this repository first; kohya sees only its venv and the system (a
    PYTHONPATH of carried wheels would shadow its pinned versions)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if side == "ours":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    else:
        env.pop("PYTHONPATH", None)
    return env


def measure(command: list[str], out: Path, setup: Setup, *, cwd: Path, log: Path) -> dict:
    """Run one side; its images/s after the warm-up steps and its peak memory."""
    env = side_env("ours" if cwd == REPO else "kohya")
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                              check=False)  # fmt: skip
    clock = out / "clock.json"
    if done.returncode or not clock.exists():
        tail = log.read_text(errors="replace")[-2000:]
        raise SideFailed(f"exited with {done.returncode}; the end of {log}:\n{tail}")
    figures = json.loads(clock.read_text())
    times = figures["step_times"]
    if len(times) <= setup.warmup:
        raise SideFailed(f"only {len(times)} optimizer steps ran; see {log}")
    steps = len(times) - setup.warmup
    figures["images_per_second"] = steps * setup.batch / (times[-1] - times[setup.warmup - 1])
    return figures


def compare(
    setup: Setup, *, sd_scripts: Path | None, python: Path | None, repeat: int, root: Path
) -> dict[str, dict]:
    """Alternate ours and kohya ``repeat`` times; each side's best run."""
    model, data, tokenizers = prepare(root, setup)
    best: dict[str, dict] = {}
    for attempt in range(repeat):
        sides = ["ours"] + (["kohya"] if python and sd_scripts else [])
        for side in sides:
            out = root / f"{side}-{attempt}"
            out.mkdir(parents=True, exist_ok=True)
            if side == "ours":
                command, cwd = ours_command(setup, model, data, out), REPO
            else:
                command = kohya_command(setup, python, sd_scripts, model, data, tokenizers, out)  # type: ignore[arg-type]
                cwd = sd_scripts  # type: ignore[assignment]
            try:
                figures = measure(command, out, setup, cwd=cwd, log=root / f"{side}-{attempt}.log")
            except SideFailed as failure:
                if side == "ours":
                    raise SystemExit(f"ours failed: {failure}") from failure
                # Ours is still measured and reported; kohya's failure is printed.
                best.setdefault("kohya", {"error": str(failure)})
                continue
            if "error" in best.get(side, {}):
                del best[side]
            if side not in best or figures["images_per_second"] > best[side]["images_per_second"]:
                best[side] = figures
    return best


def report(setup: Setup, best: dict[str, dict], repeat: int) -> None:
    mib = 2**20
    ours = best["ours"]
    kind = "peak CUDA memory" if setup.cuda else "peak RSS"
    print(f"{setup.arch} {setup.resolution}px batch {setup.batch} rank {setup.rank}, "
          f"{setup.steps} steps after {setup.warmup}, best of {repeat}, {ours['device']}, "
          f"load avg {os.getloadavg()[0]:.2f}")  # fmt: skip
    for side, figures in best.items():
        if "error" in figures:
            print(f"{side:6s} failed: {figures['error']}")
            continue
        rate, peak = figures["images_per_second"], figures["peak_bytes"] / mib
        print(f"{side:6s} {rate:9.3f} images/s   {kind} {peak:9.0f} MiB")
    kohya = best.get("kohya")
    if kohya and "error" not in kohya:
        print(f"ratio  {ours['images_per_second'] / kohya['images_per_second']:9.2f}x images/s"
              f"   peak memory {ours['peak_bytes'] / kohya['peak_bytes']:.2f}x")  # fmt: skip
    elif kohya is None:
        print("kohya  not run: pass --sd-scripts and --kohya-venv (or --kohya-python)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sd-scripts", type=Path, help="a checkout of kohya-ss/sd-scripts")
    p.add_argument("--kohya-venv", type=Path, help="kohya's virtualenv (made when missing)")
    p.add_argument("--kohya-python", type=Path, help="use this interpreter for kohya as is")
    p.add_argument("--wheels", type=Path, help="install kohya's pins from here, offline")
    p.add_argument("--arch", choices=["sd15", "sdxl"], default="sd15")
    p.add_argument("--resolution", type=int)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--compile", action="store_true", help="ours: regional torch.compile")
    p.add_argument("--work", type=Path, help="keep models, logs and outputs here")
    return p


def setup_from(args: argparse.Namespace) -> Setup:
    import torch

    return Setup(
        arch=args.arch,
        resolution=args.resolution or (1024 if args.arch == "sdxl" else 512),
        batch=args.batch,
        rank=args.rank,
        steps=args.steps,
        warmup=args.warmup,
        cuda=torch.cuda.is_available(),
        gradient_checkpointing=args.gradient_checkpointing,
        compile=args.compile,
    )


def kohya_from(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    if args.sd_scripts is None:
        print("kohya side skipped: no --sd-scripts checkout given")
        return None, None
    if not (args.sd_scripts / "train_network.py").exists():
        raise SystemExit(f"{args.sd_scripts} is not an sd-scripts checkout (no train_network.py)")
    if args.kohya_python:
        return args.sd_scripts.resolve(), args.kohya_python
    if args.kohya_venv is None:
        raise SystemExit("give --kohya-venv (made from kohya's requirements) or --kohya-python")
    return args.sd_scripts.resolve(), kohya_python(args.sd_scripts, args.kohya_venv, args.wheels)


def main() -> None:
    args = parser().parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    setup = setup_from(args)
    sd_scripts, python = kohya_from(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.work or Path(tmp)
        best = compare(setup, sd_scripts=sd_scripts, python=python, repeat=args.repeat, root=root)
    report(setup, best, args.repeat)


if __name__ == "__main__":
    main()
