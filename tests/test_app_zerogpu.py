"""The demo under the ``spaces`` package's ZeroGPU mode (``SPACES_ZERO_GPU=true``), in a subprocess.

In that mode ``import spaces`` puts torch into ZeroGPU's CUDA emulation (``torch.cuda.is_available()``
is True, tensors moved to "cuda" stay in host memory) and ``spaces.GPU`` registers the functions that
will run in a GPU worker. The script builds the demo there, and checks: every model loads in the main
process onto the emulated CUDA device without a real CUDA initialisation; switching models works; the
request is checked and the video decoded before the GPU function is called; that call asks ZeroGPU
for our measured duration with arguments that pickle (they cross to the worker); and the GPU function
itself, run as the worker runs it, generates audio for both guidance modes. The worker's own step, moving
the emulated tensors onto a real GPU, needs CUDA and is replaced here by moving them to the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("spaces")
REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import pickle, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import spaces  # ZeroGPU mode: CUDA emulation from here on
    import torch
    from spaces.config import Config
    from spaces.zero import client, decorator
    from spaces.zero.torch import patching

    assert Config.zero_gpu and torch.cuda.is_available()
    import app
    from stacks import small_random_pipeline
    from mfmjt.pipeline import Pipeline
    from test_app import write_clip

    built = []
    def loader(name):
        def load():
            built.append(name)
            cpu = small_random_pipeline(max_duration=3.0)
            # the default device: "cuda", emulated
            return Pipeline(cpu.network, cpu.features, name=name, max_duration=3.0)
        return load

    demo = app.build_demo({{"first": loader("first"), "second": loader("second")}})
    service = demo.mfmjt_startup.get()
    service.allowed_roots = None  # called directly here, not through an upload
    assert built == ["first"], built  # loaded at start, in the main process
    second = service.pipeline("second")  # what selecting it in the dropdown does
    assert built == ["first", "second"], built
    for name in ("first", "second"):
        pipe = service.models.peek(name)
        assert pipe.device.type == "cuda", pipe.device
        assert all(p.device.type == "cuda" for p in pipe.network.parameters())
    assert service.run_model in decorator.decorated_cache.values()
    assert service.run_sweep in decorator.decorated_cache.values()

    clip = write_clip(__import__("pathlib").Path({tmp!r}) / "clip.mp4", 2.0)
    asked = {{}}
    def schedule(task_id, request=None, duration=None, gpu_size=None, **kwargs):
        asked["duration"] = duration
        raise RuntimeError("no ZeroGPU scheduler here")
    client.schedule = schedule
    try:
        service.video_to_audio(str(clip), "", "", 0, 1, 1.5, "both", 3, False, "second")
    except RuntimeError as exc:
        assert "no ZeroGPU scheduler" in str(exc), exc
    prepared = service.check(str(clip), "", "", 0, 1, 1.5, "both", 3, False, "second")
    assert prepared.decoded is not None and len(service._decoded) == 1  # decoded before the GPU call
    expected = service._request_seconds("second", prepared.request)
    assert 10 <= expected <= 120
    assert asked["duration"].total_seconds() == expected, (asked, expected)
    pickle.dumps(("second", prepared.request, prepared.decoded))  # what crosses to the worker

    # the worker: ZeroGPU moves the emulated tensors onto its GPU; here, onto the CPU
    patching.unpatch()
    for fake, original in patching.cuda_aliases.items():  # as spaces.zero.torch.patching._move does
        if original is not None:
            fake.data = torch.Tensor(original)
    for name in ("first", "second"):
        service.models.peek(name).device = torch.device("cpu")
    import spaces.zero.wrappers as wrappers
    wrappers.forked = True  # inside the worker the decorated function runs its body
    result = service.run_model("second", prepared.request, prepared.decoded)
    assert set(result.audio) == {{"standard", "scaled"}}, result.audio.keys()
    for wave in result.audio.values():
        assert len(wave) >= int(result.duration * 16000), wave.shape
        assert torch.isfinite(torch.from_numpy(wave)).all() and wave.std() > 0
    print("ZEROGPU OK", expected)
    """
)


@pytest.mark.slow  # a fresh interpreter importing torch and gradio: ~40 s on the shared machine
def test_the_demo_under_zerogpu_loads_models_in_the_main_process_and_generates(tmp_path):
    env = {
        **os.environ,
        "SPACES_ZERO_GPU": "true",
        "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9/",  # never reached: scheduling is intercepted
        "ZEROGPU_OFFLOAD_DIR": str(tmp_path / "offload"),
        "MFMJT_APP_BUILD": "0",
        "OMP_NUM_THREADS": "1",
    }
    script = SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), tmp=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ZEROGPU OK" in proc.stdout
