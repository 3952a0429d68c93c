"""The GPU fast path, measured: per-stage times and real-time factors of the paper-size V2A stack.

One command, one run, one markdown table (printed and written to ``--out``):

    python benchmarks/gpu.py                   # CUDA: every configuration, ~5 min on an H100/H200
    python benchmarks/gpu.py --device cpu --quick --duration 1 --out docs/benchmark_gpu_cpu_dryrun.md

Every module is built at its real size with random weights (CLIP ViT-H/14 at 384 px from open_clip
without pretrained weights, Synchformer ViT-B, the small_16k network, the 16 kHz VAE and BigVGAN);
random weights cost the same time as trained ones and nothing is downloaded. Stages are timed one by
one (``torch.cuda.synchronize`` around each call, warm-up runs, median of N):

* decode (PyAV, a synthetic 640x360 25 fps H.264 clip), CLIP (8 fps frames in one batch), Synchformer (all
  16-frame segments in one batch), text, network (conditions + sampler), VAE decode, vocoder, mux;
* variants: ``fp32`` (TF32 matmuls, as MMAudio enables), ``bf16``, ``bf16+compile`` (the network under
  ``torch.compile(mode="reduce-overhead")``, i.e. CUDA graphs; VAE decoder and vocoder compiled), and
  ``mmaudio`` (how MMAudio's demo runs the same shapes: bf16, eager, 25 Euler steps, CFG as two
  separate batch-1 forwards per step);
* 1 vs 25 steps, guidance standard / scaled / both (ω = 1.5 at one step, 4.5 at 25), batch 1 and 8.

RTF = seconds of compute / seconds of audio produced (batch 8 produces 8 clips). A configuration that
fails is recorded with its error and the run goes on; ``--budget-s`` skips what would not fit.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mfmjt, installed or not

from mfmjt import media  # noqa: E402
from mfmjt.acceleration import cast_features, compile_codec, compile_network, disable_compile  # noqa: E402
from mfmjt.config import SequenceLengths  # noqa: E402
from mfmjt.features.audio import MMAudioCodec  # noqa: E402
from mfmjt.features.base import FeatureStack  # noqa: E402
from mfmjt.guidance import guide  # noqa: E402
from mfmjt.model import MFMJTNetwork, NetworkConfig  # noqa: E402
from mfmjt.sampler import sample, time_grid  # noqa: E402

logger = logging.getLogger("benchmarks.gpu")

TARGETS = (
    ("generator RTF at one step (network + VAE + vocoder, scaled, batch 1)", "gen_rtf", "<=", 0.0035),
    ("end-to-end V2A RTF at one step (decode ... mux, scaled, batch 1)", "e2e_rtf", "<=", 0.03),
    ("generator speed-up, one step vs 25 steps (scaled, batch 1)", "speedup", ">=", 15.0),
)
PROMPT = "a ball bounces on a wooden floor"


# ------------------------------------------------------------------------------------------ timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measurement:
    seconds: float | None = None  # median
    peak_bytes: int | None = None  # CUDA memory allocated at the peak beyond what was allocated before
    error: str = ""


@dataclass
class Timer:
    device: torch.device
    repeats: int
    warmup: int
    deadline: float  # time.perf_counter() after which configurations are skipped
    results: dict[tuple, Measurement] = field(default_factory=dict)

    def __call__(self, key: tuple, fn: Callable[[], object], repeats: int | None = None) -> Measurement:
        """Median seconds of ``fn`` over ``repeats`` runs after the warm-up; errors are recorded."""
        if time.perf_counter() > self.deadline:
            m = Measurement(error="skipped (budget)")
        else:
            m = Measurement()
            try:
                with torch.inference_mode():
                    for _ in range(self.warmup):
                        fn()
                    synchronize(self.device)
                    if self.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(self.device)
                        resident = torch.cuda.memory_allocated(self.device)
                    times = []
                    for _ in range(repeats or self.repeats):
                        synchronize(self.device)
                        start = time.perf_counter()
                        fn()
                        synchronize(self.device)
                        times.append(time.perf_counter() - start)
                m.seconds = statistics.median(times)
                if self.device.type == "cuda":
                    m.peak_bytes = torch.cuda.max_memory_allocated(self.device) - resident
            except Exception as err:  # one broken configuration must not end the run
                m.error = f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
                logger.warning("%s failed:\n%s", key, traceback.format_exc(limit=3))
        self.results[key] = m
        logger.info("%-60s %s", key, f"{m.seconds * 1e3:.2f} ms" if m.seconds is not None else m.error)
        return m


# ---------------------------------------------------------------------------------------- the stack
def build_stack(device: torch.device) -> tuple[MFMJTNetwork, FeatureStack]:
    """Full-size modules with random weights, built directly on ``device`` in fp32."""
    import open_clip

    from mfmjt.features.clip import ClipTextEncoder, ClipVisualEncoder
    from mfmjt.features.mel import MelConfig, MelConverter
    from mfmjt.features.synchformer import SynchformerEncoder
    from mfmjt.features.vae import VAE
    from mfmjt.features.vocoder import BigVGANVocoder

    torch.manual_seed(0)
    start = time.perf_counter()
    clip_model = open_clip.create_model("ViT-H-14-378-quickgelu", pretrained=None, device=device).eval()
    with torch.device(device):
        sync = SynchformerEncoder().eval()
        vae = VAE("16k").remove_weight_norm()
        codec = MMAudioCodec(MelConverter(MelConfig.preset("16k")), vae, BigVGANVocoder("16k")).eval()
        net = MFMJTNetwork(NetworkConfig.variant("small_16k")).eval()
        # adaLN-zero init would make every block an identity: give the blocks work like trained weights
        for p in net.parameters():
            if p.dim() >= 2 and p.abs().max() == 0:
                torch.nn.init.normal_(p, std=0.02)
    features = FeatureStack(ClipVisualEncoder(clip_model), sync, ClipTextEncoder(clip_model), codec)
    features.clip.to(device)
    codec.to(device)  # the mel filterbank is made on the CPU
    for module in (clip_model, sync, codec):
        module.requires_grad_(False)
    logger.info("built the full-size random stack in %.1f s", time.perf_counter() - start)
    return net.requires_grad_(False), features


@dataclass
class Variant:
    name: str
    net: MFMJTNetwork
    features: FeatureStack
    dtype: torch.dtype
    two_pass: bool = False  # MMAudio's CFG: two batch-1 forwards per step, Euler, no Δt
    stages_from: str = ""  # a two-pass variant shares the encoders and codec of this variant


def make_variant(name: str, base: tuple[MFMJTNetwork, FeatureStack], dtype: torch.dtype) -> Variant:
    """The base modules (fp32) or a copy cast to ``dtype`` as the pipeline's precision option does."""
    net, features = base if dtype == torch.float32 else copy.deepcopy(base)
    if dtype != torch.float32:
        net.to(dtype)
        cast_features(features, dtype)
    return Variant(name, net, features, dtype)


# ------------------------------------------------------------------------------------- the stages
@dataclass
class Inputs:
    lengths: SequenceLengths
    clip_frames: torch.Tensor  # uint8 [1, Nc, 3, 384, 384] on the CPU, as decoded
    sync_frames: torch.Tensor  # uint8 [1, T, 3, 224, 224]


def network_fn(v: Variant, inputs: Inputs, batch: int, steps: int, guidance: str) -> Callable[[], object]:
    """Conditions + sampling for ``batch`` clips (random features of the real shapes)."""
    cfg, n = v.net.config, inputs.lengths
    g = torch.Generator(device=v.net.device).manual_seed(0)
    dev = v.net.device
    clip_f = torch.randn(batch, n.clip, cfg.clip_dim, generator=g, device=dev)
    sync_f = torch.randn(batch, n.sync, cfg.sync_dim, generator=g, device=dev)
    text_f = torch.randn(batch, cfg.text_seq_len, cfg.text_dim, generator=g, device=dev)
    noise = torch.randn(batch, n.latent, cfg.latent_dim, generator=g, device=dev)
    w = 1.5 if steps == 1 else 4.5

    def run() -> object:
        cond = v.net.preprocess_conditions(clip_f, sync_f, text_f, n.latent)
        uncond = v.net.empty_conditions(batch, n.latent, n.clip, n.sync)
        if not v.two_pass:
            return sample(v.net, noise, cond, uncond, steps=steps, cfg_strength=w, guidance=guidance)
        grid, z = time_grid(steps), noise.float()
        for i in range(steps):  # MMAudio: Euler, conditional and unconditional forwards one after the other
            t, h = grid[i], (grid[i] - grid[i + 1]).item()
            u_c = v.net.predict(z, t, None, cond).float()
            u_u = v.net.predict(z, t, None, uncond).float()
            z = z - h * guide(u_c, u_u, w, "standard")
        return {"standard": z}

    return run


def measure_variant(
    timer: Timer, v: Variant, inputs: Inputs, batches: list[int], configs: list[tuple[int, str]]
) -> None:
    dev, n = v.net.device, inputs.lengths
    for batch in batches:
        if v.two_pass:  # same encoders and codec as the variant it shares them with
            for steps, guidance in configs:
                timer(
                    (v.name, batch, f"network {steps} {guidance}"),
                    network_fn(v, inputs, batch, steps, guidance),
                    max(1, timer.repeats // 2) if steps > 1 else None,
                )
            continue
        if not v.stages_from:  # a compiled variant shares the (uncompiled) encoders of its owner
            clip_frames = inputs.clip_frames.expand(batch, -1, -1, -1, -1)
            sync_frames = inputs.sync_frames.expand(batch, -1, -1, -1, -1)
            timer((v.name, batch, "clip"), lambda f=clip_frames: v.features.clip(f.to(dev)))
            timer((v.name, batch, "sync"), lambda f=sync_frames: v.features.sync(f.to(dev)))
            timer((v.name, batch, "text"), lambda b=batch: v.features.text([PROMPT] * b))
        for modes in (1, 2):  # one guidance mode, or both
            latent = torch.randn(batch * modes, v.net.config.latent_dim, n.latent, device=dev, dtype=v.dtype)
            vae = v.features.codec.vae
            timer((v.name, batch, f"vae x{modes}"), lambda z=latent, vae=vae: vae.decode(z))
            with torch.inference_mode():
                mel = vae.decode(latent).to(v.features.codec.vocoder.conv_pre.weight.dtype)
            timer((v.name, batch, f"vocoder x{modes}"), lambda m=mel: v.features.codec.vocoder(m))
        for steps, guidance in configs:
            repeats = max(1, timer.repeats // 2) if steps > 1 else None
            timer(
                (v.name, batch, f"network {steps} {guidance}"),
                network_fn(v, inputs, batch, steps, guidance),
                repeats,
            )


def measure_pipeline(timer: Timer, v: Variant, video: Path, duration: float) -> None:
    """Whole one-step requests through ``Pipeline.generate`` with ``precision="bf16", compile=True``:
    the warm-up a demo pays at start, then warm requests (video cache emptied before each)."""
    from mfmjt.pipeline import Pipeline

    if time.perf_counter() > timer.deadline:
        timer.results[("pipeline", 1, "warm-up")] = Measurement(error="skipped (budget)")
        return
    try:
        pipe = Pipeline(v.net, v.features, device=v.net.device, precision="bf16", compile=True)
    except Exception as err:
        timer.results[("pipeline", 1, "build")] = Measurement(error=f"{type(err).__name__}: {err}")
        return
    try:
        once = Timer(timer.device, 1, 0, timer.deadline, timer.results)
        once(("pipeline", 1, "warm-up"), lambda: pipe.warm_up(duration))
        seeds = iter(range(1, 1_000_000))

        def request() -> object:
            pipe._video_cache.clear()  # a new video each time
            return pipe.generate(video=video, prompt=PROMPT, duration=duration, seed=next(seeds))

        timer(("pipeline", 1, f"generate, 1 step, scaled ({pipe.acceleration.describe()})"), request)
    finally:
        disable_compile(v.net, v.features)


# ------------------------------------------------------------------------------------------ report
def weight_gib(v: Variant) -> float:
    modules = (v.net, v.features.clip.clip, v.features.sync, v.features.codec)
    return sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values()) / 2**30


def ms(m: Measurement | None) -> str:
    if m is None:
        return "–"
    return f"{m.seconds * 1e3:.1f}" if m.seconds is not None else m.error


def fmt(value: float | None, scale: float, spec: str) -> str:
    return "–" if value is None else format(value * scale, spec)


def total(results: dict[tuple, Measurement], keys: list[tuple]) -> float | None:
    values = [results.get(k) for k in keys]
    if any(v is None or v.seconds is None for v in values):
        return None
    return sum(v.seconds for v in values)  # type: ignore[union-attr]


def report(
    args: argparse.Namespace,
    timer: Timer,
    variants: dict[str, str],
    batches: list[int],
    configs: list[tuple[int, str]],
    header: str,
) -> str:
    """``variants``: name -> the variant whose encoder and codec timings it uses (itself, or for the
    MMAudio-style run the variant it shares modules with)."""
    r, d = timer.results, args.duration
    lines = [header, ""]
    lines += ["## Stages (ms per call, median)", ""]
    lines += [
        "| variant | batch | decode | CLIP | Synchformer | text | VAE decode | vocoder | mux | work GiB |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|---|"]
    for name, stages in variants.items():
        for b in batches:
            if (name, b, "vae x1") not in r:
                continue
            cells = [ms(r.get((stages, b, k))) for k in ("clip", "sync", "text")]
            peaks = [m.peak_bytes for k, m in r.items() if k[0] == name and k[1] == b and m.peak_bytes]
            peak = f"{max(peaks) / 2**30:.1f}" if peaks else "–"
            decode = ms(r.get(("cpu", 1, "decode")))
            mux = ms(r.get(("cpu", 1, "mux")))
            if b > 1:
                decode, mux = f"{decode} ×{b}", f"{mux} ×{b}"
            lines.append(
                f"| {name} | {b} | {decode} | {' | '.join(cells)} | {ms(r.get((name, b, 'vae x1')))} | "
                f"{ms(r.get((name, b, 'vocoder x1')))} | {mux} | {peak} |"
            )
    lines += [
        "",
        "Decode and mux run on the CPU (PyAV / ffmpeg), once per clip (batch 8: 8 times); the clip is as "
        "long as the request, so the mux copies its H.264 stream (a longer one would be re-encoded). "
        "bf16+compile and the MMAudio-style run use the encoders of the bf16 row (the dry run: fp32). "
        "Work GiB: the most CUDA memory any stage of the row allocated beyond the resident weights "
        "(the weights of every variant stay loaded; see the header).",
        "",
    ]
    lines += [
        "## Generator and end to end (ms per request of `batch` clips; RTF = time / (batch × duration))",
        "",
    ]
    lines += [
        "| variant | batch | steps | guidance | network | generator | generator RTF | end-to-end | e2e RTF |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    summary: dict[str, float | None] = {}
    for name, enc_name in variants.items():
        for b in batches:
            for steps, guidance in configs:
                net_key = (name, b, f"network {steps} {guidance}")
                if net_key not in r:
                    continue
                modes = 2 if guidance == "both" else 1
                codec = name if (name, b, f"vae x{modes}") in r else enc_name
                gen = total(r, [net_key, (codec, b, f"vae x{modes}"), (codec, b, f"vocoder x{modes}")])
                e2e_parts = [(enc_name, b, k) for k in ("clip", "sync", "text")]
                e2e = total(r, e2e_parts)
                decode, mux = total(r, [("cpu", 1, "decode")]), total(r, [("cpu", 1, "mux")])
                # per clip: one decode, one mp4 per guidance mode
                ok = None not in (e2e, gen, decode, mux)
                e2e = e2e + gen + b * (decode + modes * mux) if ok else None
                gen_rtf = None if gen is None else gen / (b * d)
                e2e_rtf = None if e2e is None else e2e / (b * d)
                lines.append(
                    f"| {name} | {b} | {steps} | {guidance} | {ms(r[net_key])} | "
                    f"{fmt(gen, 1e3, '.1f')} | {fmt(gen_rtf, 1, '.4f')} | "
                    f"{fmt(e2e, 1e3, '.1f')} | {fmt(e2e_rtf, 1, '.4f')} |"
                )
                summary[f"{name}/{b}/{steps}/{guidance}/gen"] = gen
                summary[f"{name}/{b}/{steps}/{guidance}/e2e"] = e2e
    # targets: the fastest variant measured at batch 1
    fast = [n for n, stages in variants.items() if n == stages or n.startswith("bf16")]
    best = {}
    for kind in ("gen", "e2e"):
        values = [(summary.get(f"{n}/1/1/scaled/{kind}"), n) for n in fast]
        values = [(s, n) for s, n in values if s is not None]
        best[kind] = min(values) if values else (None, "")
    one, name_one = best["gen"]
    many = summary.get(f"{name_one}/1/25/scaled/gen") if name_one else None
    got = {
        "gen_rtf": None if one is None else one / d,
        "e2e_rtf": None if best["e2e"][0] is None else best["e2e"][0] / d,
        "speedup": None if one is None or many is None else many / one,
    }
    lines += ["", f"## Targets (H100/H200-class GPU; fastest variant at batch 1: {name_one or '–'})", ""]
    lines += ["| target | measured | met |", "|---|---|---|"]
    for text, key, op, bound in TARGETS:
        value = got[key]
        met = (
            "–"
            if value is None
            else ("met" if (value <= bound if op == "<=" else value >= bound) else "not met")
        )
        lines.append(f"| {text} {op} {bound:g} | {'–' if value is None else f'{value:.4g}'} | {met} |")
    mm_gen, mm_e2e = summary.get("mmaudio/1/25/standard/gen"), summary.get("mmaudio/1/25/standard/e2e")
    lines += [
        "",
        "## Against MMAudio's way of running the same shapes (eager, 25 Euler steps, two-pass CFG)",
        "",
        "In the precision MMAudio's demo uses on a GPU, bf16 (the dry run: fp32), with TF32 enabled.",
        "",
    ]
    lines += ["| | MMAudio-style ms | ours (fastest, one step, scaled) ms | ratio |", "|---|---|---|---|"]
    for label, mm, ours in (("generator", mm_gen, one), ("end to end", mm_e2e, best["e2e"][0])):
        ratio = "–" if mm is None or not ours else f"{mm / ours:.1f}×"
        lines.append(f"| {label} | {fmt(mm, 1e3, '.1f')} | {fmt(ours, 1e3, '.1f')} | {ratio} |")
    rows = [(k, m) for k, m in r.items() if k[0] == "pipeline"]
    if rows:
        lines += ["", "## Whole requests: `Pipeline.generate` (CPU decode included, mux not)", ""]
        lines += ["| what | ms | RTF |", "|---|---|---|"]
        for k, m in rows:
            rtf = "–" if m.seconds is None or k[2] == "warm-up" else f"{m.seconds / d:.4f}"
            lines.append(f"| {k[2]} | {ms(m)} | {rtf} |")
    failed = [f"{k}: {m.error}" for k, m in r.items() if m.error and not m.error.startswith("skipped")]
    skipped = sum(1 for m in r.values() if m.error.startswith("skipped"))
    lines += ["", f"Failed configurations: {len(failed)}; skipped for the time budget: {skipped}."]
    lines += [f"- {f}" for f in failed]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--quick", action="store_true", help="CPU dry run: fp32 only, batch 1, 1 repeat, no warm-up"
    )
    parser.add_argument("--duration", type=float, default=8.0, help="clip seconds")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per configuration (median)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs before each configuration")
    parser.add_argument(
        "--budget-s", type=float, default=330.0, help="skip configurations after this many seconds"
    )
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,8; quick: 1)")
    parser.add_argument("--out", default="docs/benchmark_gpu.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    t0 = time.perf_counter()
    device = torch.device(args.device)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 10)
    warmup = args.warmup if args.warmup is not None else (0 if quick else 3)
    batches = [int(b) for b in (args.batches or ("1" if quick else "1,8")).split(",")]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as MMAudio's entry points do
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    timer = Timer(device, repeats, warmup, deadline=t0 + args.budget_s)

    base = build_stack(device)
    inputs, video = None, None
    with tempfile.TemporaryDirectory(prefix="mfmjt-bench-") as tmp:
        from mfmjt.synthetic import SceneConfig, make_scene, write_scene_mp4

        # exactly the request's length at 25 fps: every sync target has its frame and the mux copies
        # the video stream instead of re-encoding a cut
        scene = make_scene(3, SceneConfig(duration=args.duration, fps=25.0, width=640, height=360))
        video = write_scene_mp4(scene, Path(tmp) / "clip.mp4")
        decoded = media.decode_video(video, args.duration)
        inputs = Inputs(
            SequenceLengths.for_duration(decoded.duration),
            decoded.clip_frames[None],
            decoded.sync_frames[None],
        )
        cpu_timer = Timer(torch.device("cpu"), repeats, min(warmup, 1), timer.deadline, timer.results)
        cpu_timer(("cpu", 1, "decode"), lambda: media.decode_video(video, args.duration))
        wave = torch.zeros(inputs.lengths.latent * 512).numpy()
        cpu_timer(
            ("cpu", 1, "mux"),
            lambda: media.mux_audio_into_video(video, wave, 16_000, Path(tmp) / "out.mp4", decoded.duration),
        )

        one_step = [(1, "standard"), (1, "scaled"), (1, "both")]
        if quick:
            plan = [
                ("fp32", torch.float32, False, batches, [*one_step, (25, "scaled")]),
                ("mmaudio", torch.float32, False, batches, [(25, "standard")]),
            ]
        else:
            # most important first: whatever the budget cuts comes last
            plan = [
                ("bf16", torch.bfloat16, False, [1], [*one_step, (25, "scaled")]),
                ("mmaudio", torch.bfloat16, False, [1], [(25, "standard")]),
                ("bf16+compile", torch.bfloat16, True, [1], [*one_step, (25, "scaled")]),
                ("fp32", torch.float32, False, [1], [*one_step, (25, "scaled")]),
                ("pipeline", torch.bfloat16, True, [1], [(1, "scaled")]),
                ("bf16", torch.bfloat16, False, [b for b in batches if b > 1], [*one_step, (25, "scaled")]),
                (
                    "bf16+compile",
                    torch.bfloat16,
                    True,
                    [b for b in batches if b > 1],
                    [*one_step, (25, "scaled")],
                ),
                ("fp32", torch.float32, False, [b for b in batches if b > 1], [(1, "scaled")]),
                ("bf16", torch.bfloat16, False, [1], [(25, "standard"), (25, "both")]),
            ]
        built: dict[str, Variant] = {}
        for name, dtype, compiled, plan_batches, configs in plan:
            if not plan_batches:
                continue
            if name == "pipeline":
                if "bf16" in built:
                    measure_pipeline(timer, built["bf16"], video, args.duration)
                continue
            if name not in built:
                try:
                    owner = "bf16" if dtype == torch.bfloat16 else "fp32"
                    if owner not in built:
                        built[owner] = make_variant(owner, base, dtype)
                    v = built[owner]
                    if name != owner:  # compiled in place below, or run the MMAudio way
                        built[name] = Variant(name, v.net, v.features, v.dtype, name == "mmaudio", owner)
                except Exception as err:
                    timer.results[(name, 0, "build")] = Measurement(error=f"{type(err).__name__}: {err}")
                    continue
            v = built[name]
            try:
                if compiled:
                    compile_network(v.net, "reduce-overhead" if device.type == "cuda" else "default")
                    compile_codec(v.features, "default")
                measure_variant(timer, v, inputs, plan_batches, configs)
            except Exception as err:  # whatever breaks, the table of what was measured is still written
                timer.results[(name, plan_batches[0], "plan")] = Measurement(
                    error=f"{type(err).__name__}: {err}"
                )
                logger.exception("%s failed", name)
            finally:
                if compiled:
                    disable_compile(v.net, v.features)

    variants = {n: (built[n].stages_from or n) for n in dict.fromkeys(p[0] for p in plan) if n in built}
    configs_all = list(dict.fromkeys(c for p in plan for c in p[4]))
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    weights = ", ".join(f"{n} {weight_gib(v):.2f} GiB" for n, v in built.items() if not v.stages_from)
    params = {
        "CLIP": sum(p.numel() for p in base[1].clip.parameters()),
        "Synchformer": sum(p.numel() for p in base[1].sync.parameters()),
        "VAE+BigVGAN": sum(p.numel() for p in base[1].codec.parameters()),
        "network": sum(p.numel() for p in base[0].parameters()),
    }
    header = (
        f"# GPU fast path benchmark: {name}\n\n"
        + (
            "**CPU DRY RUN — not GPU figures.** It only shows that the script works end to end; the "
            "numbers are CPU seconds on a shared development machine.\n\n"
            if device.type == "cpu"
            else ""
        )
        + f"torch {torch.__version__}; {args.duration:g} s clip ({inputs.lengths.latent} latents, "
        + f"{inputs.lengths.clip} CLIP frames, {inputs.lengths.sync} sync tokens); median of {repeats} "
        + f"(25-step rows: {max(1, repeats // 2)}) after {warmup} warm-up runs; random weights, full size: "
        + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in params.items())
        + f". Weights resident per precision: {weights}"
        + f".\nCommand: `python benchmarks/gpu.py {' '.join(_argv())}`; "
        + f"wall time {time.perf_counter() - t0:.0f} s.\n"
        + "\nTargets on an H100/H200-class GPU: generator RTF <= 0.0035 at one step; end-to-end V2A RTF "
        + "<= 0.03 at one step; one step >= 15x faster than 25 steps for the generator."
    )
    text = report(args, timer, variants, batches, configs_all, header)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    logger.info("wrote %s", out)


def _argv() -> list[str]:
    return sys.argv[1:]


if __name__ == "__main__":
    main()
