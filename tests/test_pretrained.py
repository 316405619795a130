"""Porting torchvision/timm ResNet weights: parity with torchvision, strictness, safe reading,
finding files offline, the convert command, and torch's BatchNorm running-variance rule.

Tests that need torch/torchvision skip without them; the rest run on a synthetic state dict.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from cnnjax.models.layers import TorchBatchNorm, torch_batch_norm
from cnnjax.pretrained import (IMAGENET_MEAN, IMAGENET_STD, WeightsError, convert,
                               converted_file_name, flatten_variables, guess_arch,
                               load_converted, load_torchvision, resolve_weights, torch_name)
from cnnjax.pretrained.__main__ import main as cli_main
from cnnjax.pretrained.files import write_safetensors
from cnnjax.pretrained.locate import download_file

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("resnet18", "resnet34", "resnet50")
# max|diff| <= RTOL * max|reference|: README's bounds. Measured on a 2-core Intel Xeon: eval
# logits and stages <= 1.5e-6; train mode (BatchNorm on a batch of two) up to 1.34e-5 (logits)
# and 1.47e-5 (running statistics) for ResNet-50, whose torchvision float32 logits are
# themselves 1.8e-5 from float64 ones: train mode is held to about twice that, so another
# CPU's summation order cannot fail it.
RTOL = 1.5e-5
RTOL_TRAIN = 4e-5


def max_rel_error(actual, reference) -> float:
    reference = np.asarray(reference)
    return float(np.max(np.abs(np.asarray(actual) - reference)) / np.max(np.abs(reference)))


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def clean_env(monkeypatch, tmp_path: Path) -> None:
    """No weights folder of the real user can be found, and downloads go nowhere."""
    for name in ("CNNJAX_WEIGHTS_DIR", "CNNJAX_WEIGHTS_URL", "CNNJAX_OFFLINE", "TORCH_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNJAX_WEIGHTS_URL", (tmp_path / "no-server").as_uri())


# --- without torch: a synthetic torchvision-layout state dict --------------------------------

def synthetic_state_dict(arch: str = "resnet18", seed: int = 0) -> dict[str, np.ndarray]:
    """Random values in torchvision's names and layouts (OIHW, fc (out, in)) for `arch`."""
    shapes = jax.eval_shape(getattr(models, arch)().init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 32, 32, 3)))
    rng = np.random.default_rng(seed)
    state = {}
    for key_path, spec in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        path = tuple(entry.key for entry in key_path)
        if path[-1] == "kernel":  # He-scaled, so activations stay finite through the network
            value = rng.normal(size=spec.shape) * np.sqrt(2.0 / np.prod(spec.shape[:-1]))
        elif path[-1] in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, size=spec.shape)
        else:
            value = rng.normal(0.0, 0.2, size=spec.shape)
        value = value.astype(np.float32)
        layout = {4: (3, 2, 0, 1), 2: (1, 0)}.get(value.ndim)
        state[torch_name(path)] = value.transpose(layout) if layout else value
    return state


@pytest.fixture(scope="module")
def r18_state() -> dict[str, np.ndarray]:
    return synthetic_state_dict("resnet18")


def test_torch_names_follow_the_flax_tree():
    assert torch_name(("params", "layer2_0", "downsample_0", "kernel")) == \
        "layer2.0.downsample.0.weight"
    assert torch_name(("params", "layer2_0", "downsample_1", "scale")) == \
        "layer2.0.downsample.1.weight"
    assert torch_name(("batch_stats", "bn1", "var")) == "bn1.running_var"
    assert torch_name(("params", "fc", "kernel")) == "fc.weight"


def test_load_transposes_and_renames_exactly(r18_state):
    variables = load_torchvision(r18_state, "resnet18")
    params, stats = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(params["conv1"]["kernel"],
                                  r18_state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["layer2_0"]["downsample_0"]["kernel"],
                                  r18_state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["layer2_0"]["downsample_1"]["scale"],
                                  r18_state["layer2.0.downsample.1.weight"])
    np.testing.assert_array_equal(stats["layer4_1"]["bn2"]["var"],
                                  r18_state["layer4.1.bn2.running_var"])
    np.testing.assert_array_equal(params["fc"]["kernel"], r18_state["fc.weight"].T)
    np.testing.assert_array_equal(params["fc"]["bias"], r18_state["fc.bias"])
    # Same tree as the model's own init, leaf for leaf.
    init = jax.eval_shape(models.resnet18().init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, 3)))
    init = {k: init[k] for k in ("params", "batch_stats")}
    assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, init)


def test_safetensors_npz_and_module_prefix_load_identically(r18_state, tmp_path):
    direct = load_torchvision(r18_state, "resnet18")
    write_safetensors(tmp_path / "r18.safetensors", r18_state, {"format": "pt"})
    assert_trees_equal(load_torchvision(tmp_path / "r18.safetensors", "resnet18"), direct)
    np.savez(tmp_path / "r18.npz", **r18_state)
    assert_trees_equal(load_torchvision(str(tmp_path / "r18.npz"), "resnet18"), direct)
    # A DataParallel 'module.' prefix is undone.
    assert_trees_equal(load_torchvision({"module." + k: v for k, v in r18_state.items()},
                                        "resnet18"), direct)


def test_one_channel_stem_sums_rgb(r18_state):
    grey = load_torchvision(r18_state, "resnet18", in_channels=1)
    rgb = load_torchvision(r18_state, "resnet18")
    kernel = rgb["params"]["conv1"]["kernel"]
    np.testing.assert_allclose(grey["params"]["conv1"]["kernel"],
                               kernel.sum(axis=2, keepdims=True), rtol=1e-6)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 40, 48, 1))
    model_rgb, model_grey = models.resnet18(), models.resnet18(in_channels=1)
    assert max_rel_error(model_grey.apply(grey, x), model_rgb.apply(rgb, jnp.tile(x, 3))) <= RTOL
    two = load_torchvision(r18_state, "resnet18", in_channels=4)  # timm's tile-and-rescale
    assert two["params"]["conv1"]["kernel"].shape == (7, 7, 4, 64)


def test_new_num_classes_gives_a_seeded_fresh_head(r18_state):
    full = load_torchvision(r18_state, "resnet18")
    five = load_torchvision(r18_state, "resnet18", num_classes=5, seed=0)
    assert five["params"]["fc"]["kernel"].shape == (512, 5)
    for name in ("params", "batch_stats"):
        rest = {k: v for k, v in five[name].items() if k != "fc"}
        assert_trees_equal(rest, {k: v for k, v in full[name].items() if k != "fc"})
    own_init = models.resnet18(num_classes=5).init(jax.random.PRNGKey(0),
                                                    jnp.zeros((1, 32, 32, 3)))
    assert_trees_equal(five["params"]["fc"], own_init["params"]["fc"])
    assert_trees_equal(load_torchvision(r18_state, "resnet18", num_classes=5, seed=0),
                       five)
    other = load_torchvision(r18_state, "resnet18", num_classes=5, seed=1)
    assert not np.array_equal(other["params"]["fc"]["kernel"], five["params"]["fc"]["kernel"])
    # The file's own class count keeps the file's classifier.
    assert_trees_equal(load_torchvision(r18_state, "resnet18", num_classes=1000), full)
    # A headless file (no fc) loads when a class count is given, and fails otherwise.
    headless = {k: v for k, v in r18_state.items() if not k.startswith("fc.")}
    assert load_torchvision(headless, "resnet18", num_classes=3)["params"]["fc"]["bias"].shape \
        == (3,)
    with pytest.raises(WeightsError, match=r"missing: fc\.bias \(1000,\); fc\.weight"):
        load_torchvision(headless, "resnet18")


def test_misfit_is_one_error_listing_everything(r18_state):
    assert guess_arch(r18_state) == "resnet18"
    with pytest.raises(WeightsError) as error:
        load_torchvision(r18_state, "resnet34")
    message = str(error.value)
    assert "does not fit cnnjax's resnet34 (it looks like resnet18" in message
    assert "layer1.2.conv1.weight (64, 64, 3, 3)" in message
    assert "layer4.2.bn2.running_var (512,)" in message
    assert message.count("\n") == 1  # the sentence, then the one 'missing' line

    bad = dict(r18_state)
    bad["conv1.weight"] = np.zeros((64, 3, 5, 5), np.float32)
    bad["layer5.0.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    bad["bn1.num_batches_tracked"] = np.array(7)  # ignored
    del bad["layer3.1.bn2.bias"]
    with pytest.raises(WeightsError) as error:
        load_torchvision(bad, "resnet18")
    message = str(error.value)
    assert "1 missing, 1 unexpected, 1 with the wrong shape" in message
    assert "missing: layer3.1.bn2.bias (256,)" in message
    assert "unexpected: layer5.0.conv1.weight (8, 8, 3, 3)" in message
    assert "wrong shape: conv1.weight: file (64, 3, 5, 5), model (64, 3, 7, 7)" in message
    with pytest.raises(WeightsError,
                       match="resnet18, resnet34, resnet50, inception_v3, not 'vgg16'"):
        load_torchvision(r18_state, "vgg16")


def test_unreadable_files_are_one_sentence_naming_the_file(r18_state, tmp_path, monkeypatch):
    text = "this is a note, not weights\n"
    cases = {"notes.safetensors": text, "notes.npz": text, "notes.pth": text, "w.h5": text}
    for name, content in cases.items():
        (tmp_path / name).write_text(content)
    write_safetensors(tmp_path / "ok.safetensors", r18_state, {})
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    np.savez(tmp_path / "ok.npz", **r18_state)
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    for name in [*cases, "cut.safetensors", "cut.npz", "objects.npz", "absent.pth"]:
        with pytest.raises(WeightsError) as error:
            load_torchvision(tmp_path / name, "resnet18")
        message = str(error.value)
        assert str(tmp_path / name) in message and "\n" not in message, message
    # A .pth without torch installed: a clear way out.
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(WeightsError, match=r"needs PyTorch.*cnnjax\[torch\].*convert"):
        load_torchvision(tmp_path / "zip.pth", "resnet18")


def test_convert_writes_flax_tree_that_loads_back(r18_state, tmp_path):
    out = tmp_path / "r18.cnnjax.safetensors"
    assert convert(r18_state, out) == "resnet18"  # arch told from the keys
    from safetensors import safe_open
    with safe_open(str(out), framework="np") as file:
        assert file.metadata()["arch"] == "resnet18"
        assert "params/layer1_0/conv1/kernel" in file.keys()
        assert "batch_stats/layer2_0/downsample_1/var" in file.keys()
    direct = load_torchvision(r18_state, "resnet18")
    assert_trees_equal(load_converted(out), direct)
    assert_trees_equal(load_torchvision(out, "resnet18"), direct)
    fresh = load_converted(out, num_classes=2, in_channels=1)
    assert fresh["params"]["fc"]["kernel"].shape == (512, 2)
    assert fresh["params"]["conv1"]["kernel"].shape == (7, 7, 1, 64)
    with pytest.raises(WeightsError, match="resnet34"):
        load_converted(out, "resnet34")


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    assert cli_main(["convert", str(tmp_path / "absent.pth"), str(tmp_path / "o.safetensors")]) \
        == 1
    err = capsys.readouterr().err
    assert err.startswith("cnnjax.pretrained: error: No weights file at") and err.count("\n") == 1


def test_importing_pretrained_does_not_import_torch():
    code = "import sys, cnnjax.pretrained; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert result.stdout.strip() == "False"


def test_imagenet_constants():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


# --- finding weight files ---------------------------------------------------------------------

def test_resolve_offline_says_which_file_to_put_where(tmp_path, monkeypatch):
    clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("CNNJAX_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(WeightsError) as error:
        resolve_weights("torchvision:resnet34")
    message = str(error.value)
    assert "resnet34-b627a593.pth" in message and str(tmp_path / "weights") in message
    assert "download.pytorch.org" not in message and "\n" not in message
    monkeypatch.setenv("CNNJAX_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"downloads are off.*resnet34-b627a593\.pth"):
        resolve_weights("torchvision:resnet34")
    with pytest.raises(WeightsError, match="torchvision:resnet18, torchvision:resnet34"):
        resolve_weights("torchvision:resnet101")


def test_resolve_searches_folders_in_order(tmp_path, monkeypatch):
    clean_env(monkeypatch, tmp_path)
    torch_hub = tmp_path / "cache" / "torch" / "hub" / "checkpoints"
    torch_hub.mkdir(parents=True)
    (torch_hub / "resnet18-f37072fd.pth").write_bytes(b"x")
    assert resolve_weights("torchvision:resnet18") == torch_hub / "resnet18-f37072fd.pth"
    cache = tmp_path / "cache" / "cnnjax"
    cache.mkdir(parents=True)
    (cache / converted_file_name("resnet18")).write_bytes(b"x")
    assert resolve_weights("torchvision:resnet18") == cache / "resnet18-f37072fd.cnnjax.safetensors"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "resnet18-f37072fd.pth").write_bytes(b"x")
    monkeypatch.setenv("CNNJAX_WEIGHTS_DIR", str(mine))
    assert resolve_weights("torchvision:resnet18") == mine / "resnet18-f37072fd.pth"
    assert resolve_weights(str(mine / "resnet18-f37072fd.pth")) == mine / "resnet18-f37072fd.pth"


def test_download_checks_the_sha256_prefix(tmp_path, monkeypatch):
    clean_env(monkeypatch, tmp_path)
    server = tmp_path / "server"
    server.mkdir()
    payload = b"weights bytes"
    (server / "resnet18-f37072fd.pth").write_bytes(payload)  # content does not match the name
    monkeypatch.setenv("CNNJAX_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(WeightsError, match="SHA-256 .* not f37072fd"):
        resolve_weights("torchvision:resnet18", base_url=server.as_uri())
    assert not list((tmp_path / "weights").iterdir())  # nothing half-written is left
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    dest = download_file((server / "resnet18-f37072fd.pth").as_uri(),
                         tmp_path / "weights" / f"resnet18-{prefix}.pth")
    assert dest.read_bytes() == payload


def test_load_by_name_uses_a_converted_file_without_torch(r18_state, tmp_path, monkeypatch):
    clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("CNNJAX_WEIGHTS_DIR", str(tmp_path / "weights"))
    convert(r18_state, tmp_path / "weights" / converted_file_name("resnet18"))
    monkeypatch.setitem(sys.modules, "torch", None)
    assert_trees_equal(load_torchvision("torchvision:resnet18", "resnet18"),
                       load_torchvision(r18_state, "resnet18"))


# --- torch's BatchNorm update rule -------------------------------------------------------------

def test_torch_batch_norm_updates_running_var_with_unbiased_variance():
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 4, 6)) * 2 + 1
    bn = torch_batch_norm(train=True)
    assert isinstance(bn, TorchBatchNorm)
    variables = bn.init(jax.random.PRNGKey(0), x)
    assert variables["batch_stats"]["var"].tolist() == [1.0] * 6  # init does not update
    y, updates = bn.apply(variables, x, mutable=["batch_stats"])
    flat = np.asarray(x).reshape(-1, 6).astype(np.float64)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["var"],
                               0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
    # Normalises with the biased variance, like torch.
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 6),
                               (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5), atol=1e-5)
    y_eval = torch_batch_norm(train=False).apply({**variables, **updates}, x)
    stats = updates["batch_stats"]
    np.testing.assert_allclose(y_eval, (x - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5),
                               rtol=1e-5, atol=1e-5)


# --- parity with real torchvision ------------------------------------------------------------

def torchvision_resnet(arch: str, seed: int = 0):
    """torchvision's `arch` with seeded random weights and non-trivial BatchNorm state."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(seed)
    return randomize_batch_norm(getattr(torchvision.models, arch)(weights=None), seed + 1)


def randomize_batch_norm(model, seed: int):
    """`model` in eval mode with seeded random BatchNorm parameters and statistics: fresh ones
    are the identity, and timm zeroes each residual block's last scale, which would leave
    every residual branch out of a comparison."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


@pytest.fixture(scope="module", params=ARCHS)
def ported(request):
    model = torchvision_resnet(request.param)
    return request.param, model, load_torchvision(model.state_dict(), request.param)


def torch_forward(model, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits and layer1..layer4 outputs (NHWC) of a torchvision model on NHWC `x`."""
    import torch
    stages = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda _m, _i, out, name=name: stages.__setitem__(name, out.detach()))
        for name in ("layer1", "layer2", "layer3", "layer4")]
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return logits, {k: v.numpy().transpose(0, 2, 3, 1) for k, v in stages.items()}


@pytest.mark.parametrize("size", [(224, 224), (97, 131)], ids=["224x224", "97x131"])
def test_eval_logits_and_stages_match_torchvision(ported, size):
    arch, torch_model, variables = ported
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    ref_logits, ref_stages = torch_forward(torch_model, x)
    model = getattr(models, arch)()
    logits, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(
        variables, x)
    errors = {"logits": max_rel_error(logits, ref_logits)}
    for name, ref in ref_stages.items():
        errors[name] = max_rel_error(state["intermediates"][name][0], ref)
    print(f"\nparity {arch} {size[0]}x{size[1]} eval: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    assert max(errors.values()) <= RTOL, errors


def test_train_mode_outputs_and_running_stats_match_torchvision(ported):
    import torch
    arch, torch_model, variables = ported
    x = np.random.default_rng(1).normal(size=(2, 97, 131, 3)).astype(np.float32)
    trained = copy.deepcopy(torch_model).train()
    with torch.no_grad():
        ref = trained(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    model = getattr(models, arch)()
    out, updates = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                    mutable=["batch_stats"]))(variables, x)
    expected = load_torchvision(trained.state_dict(), arch)["batch_stats"]
    errors = jax.tree.leaves(jax.tree.map(max_rel_error, updates["batch_stats"], expected))
    print(f"\nparity {arch} 97x131 train: logits {max_rel_error(out, ref):.1e}, "
          f"running stats {max(errors):.1e}")
    assert max_rel_error(out, ref) <= RTOL_TRAIN
    assert max(errors) <= RTOL_TRAIN


def test_one_channel_input_matches_torchvision_on_grey_rgb():
    torch = pytest.importorskip("torch")
    torch_model = torchvision_resnet("resnet18", seed=3)
    variables = load_torchvision(torch_model.state_dict(), "resnet18", in_channels=1)
    x = np.random.default_rng(2).normal(size=(2, 64, 80, 1)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).repeat(1, 3, 1, 1))
    out = models.resnet18(in_channels=1).apply(variables, x)
    assert max_rel_error(out, ref.numpy()) <= RTOL


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])  # both block kinds
def test_timm_files_load_and_match_timm(arch, tmp_path):
    """A file as timm writes it for the Hugging Face hub (`model.safetensors`, timm's own
    names) gives timm's logits, and other input channel counts get timm's stem."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from timm.models import adapt_input_conv, save_for_hf
    torch.manual_seed(0)
    timm_model = randomize_batch_norm(timm.create_model(arch, pretrained=False), seed=1)
    save_for_hf(timm_model, tmp_path, safe_serialization=True)
    variables = load_torchvision(tmp_path / "model.safetensors", arch)
    x = np.random.default_rng(0).normal(size=(2, 64, 80, 3)).astype(np.float32)
    with torch.no_grad():
        ref = timm_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert max_rel_error(getattr(models, arch)().apply(variables, x), ref) <= RTOL
    stem = timm_model.conv1.weight.detach()
    for channels in (1, 2, 4):
        kernel = load_torchvision(tmp_path / "model.safetensors", arch,
                                  in_channels=channels)["params"]["conv1"]["kernel"]
        np.testing.assert_allclose(kernel, adapt_input_conv(channels, stem).numpy()
                                   .transpose(2, 3, 1, 0), rtol=1e-6, atol=1e-7)


def test_pth_files_load_and_bad_ones_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch_model = torchvision_resnet("resnet18")
    torch.save(torch_model.state_dict(), tmp_path / "r18.pth")
    direct = load_torchvision(torch_model.state_dict(), "resnet18")
    assert_trees_equal(load_torchvision(tmp_path / "r18.pth", "resnet18"), direct)
    torch.save({"epoch": 3, "state_dict": torch_model.state_dict()}, tmp_path / "ckpt.pt")
    assert_trees_equal(load_torchvision(tmp_path / "ckpt.pt", "resnet18"), direct)

    with pytest.raises(WeightsError, match="does not fit cnnjax's resnet34 .*missing"):
        load_torchvision(tmp_path / "r18.pth", "resnet34")
    data = (tmp_path / "r18.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, tmp_path / "evil.pth")
    import pickle
    (tmp_path / "evil_legacy.pth").write_bytes(pickle.dumps(Payload()))
    expected = {"cut.pth": "truncated or damaged", "evil.pth": "refused unread",
                "evil_legacy.pth": "refused unread"}
    messages = {}
    for name, words in expected.items():
        with pytest.raises(WeightsError) as error:
            load_torchvision(tmp_path / name, "resnet18")
        messages[name] = str(error.value)
        assert str(tmp_path / name) in messages[name] and words in messages[name]
        assert "\n" not in messages[name]
    assert "posix.system" in messages["evil.pth"]
    assert not marker.exists()


def test_cli_convert_round_trip_loads_without_torch(tmp_path):
    torch = pytest.importorskip("torch")
    torch_model = torchvision_resnet("resnet18")
    torch.save(torch_model.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / converted_file_name("resnet18")
    result = subprocess.run([sys.executable, "-m", "cnnjax.pretrained", "convert",
                             str(tmp_path / "resnet18-f37072fd.pth"), str(out)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "wrote resnet18 weights" in result.stdout
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch fails
        import numpy as np
        from cnnjax.pretrained import flatten_variables, load_converted
        variables = load_converted({str(out)!r})
        np.savez({str(tmp_path / 'loaded.npz')!r}, **flatten_variables(variables))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "loaded.npz") as loaded:
        flat = {name: loaded[name] for name in loaded.files}
    direct = flatten_variables(load_torchvision(torch_model.state_dict(), "resnet18"))
    assert flat.keys() == direct.keys()
    for name in flat:
        np.testing.assert_array_equal(flat[name], direct[name])


# --- configs: the weights a fresh run starts from ---------------------------------------------

def warm_start_config(**init):
    from experiments.heartbeat_synthetic import get_config
    config = get_config()
    config.model.name = "resnet18"
    config.init.pretrained = init.get("pretrained", "")
    config.init_from = init.get("init_from", "")
    return config


def resnet18_state(num_classes, in_channels):
    import optax
    from cnnjax.train import create_train_state
    return create_train_state(models.resnet18(num_classes=num_classes, in_channels=in_channels),
                              optax.adam(1e-3), (32, 32, in_channels), jax.random.PRNGKey(5))


def test_config_pretrained_and_converted_init_from_start_a_run(r18_state, tmp_path):
    from cnnjax.errors import ConfigError
    from cnnjax.train.warm_start import initial_state
    weights = tmp_path / "r18.safetensors"
    write_safetensors(weights, r18_state, {})
    state, said = initial_state(warm_start_config(pretrained=str(weights)),
                                resnet18_state(3, 1), num_classes=3, in_channels=1)
    expected = load_torchvision(r18_state, "resnet18", num_classes=3, in_channels=1, seed=0)
    assert_trees_equal(state.params, expected["params"])
    assert_trees_equal(state.batch_stats, expected["batch_stats"])
    np.testing.assert_allclose(state.params["conv1"]["kernel"][:, :, 0],
                               r18_state["conv1.weight"].sum(1).transpose(1, 2, 0), rtol=1e-6)
    assert int(state.step) == 0 and str(weights) in said
    converted = tmp_path / "r18.cnnjax.safetensors"
    convert(r18_state, converted, "resnet18")
    from_file, _ = initial_state(warm_start_config(init_from=str(converted)),
                                 resnet18_state(3, 1), num_classes=3, in_channels=1)
    assert_trees_equal(from_file.params, state.params)
    with pytest.raises(ConfigError, match="keep one"):
        initial_state(warm_start_config(pretrained=str(weights), init_from=str(converted)),
                      resnet18_state(3, 1), num_classes=3, in_channels=1)
    fresh = resnet18_state(3, 1)
    unchanged, said = initial_state(warm_start_config(), fresh, num_classes=3, in_channels=1)
    assert unchanged is fresh and "random" in said


def test_pretrained_body_with_a_fastai_head_keeps_the_fresh_head(r18_state, tmp_path):
    import optax
    from cnnjax.train import create_train_state
    from cnnjax.train.warm_start import initial_state
    model = models.resnet18(num_classes=3, in_channels=1, head="fastai")
    fresh = create_train_state(model, optax.adam(1e-3), (32, 32, 1), jax.random.PRNGKey(5))
    weights = tmp_path / "r18.safetensors"
    write_safetensors(weights, r18_state, {})
    state, _ = initial_state(warm_start_config(pretrained=str(weights)), fresh,
                             num_classes=3, in_channels=1)
    body = load_torchvision(r18_state, "resnet18", in_channels=1)
    assert "fc" not in state.params
    assert_trees_equal(state.params["head"], fresh.params["head"])
    assert_trees_equal(state.batch_stats["head"], fresh.batch_stats["head"])
    assert_trees_equal(state.params["layer4_1"], body["params"]["layer4_1"])
    assert_trees_equal(state.batch_stats["bn1"], body["batch_stats"]["bn1"])
