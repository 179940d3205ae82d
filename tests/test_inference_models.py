"""Tests for the inference/ package: EKE preprocessing, EKEResNet, ResNet-50, export."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import (
    EKE_BATCH_SIZE,
    EKE_EPOCHS,
    EKE_LEARNING_RATE,
    EKE_PEAK_EPOCH,
    EKE_PREPROCESS_SCRIPT,
    EKE_SAMPLE_FRACTION,
    EKE_WEIGHT_DECAY,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRE_PROCESS_3CH_SCRIPT,
    SIGNED_LOG_C,
    EKEResNet,
    EKETrainingConfig,
    compile_script,
    count_parameters,
    export_eke_resnet,
    fit_standardization,
    fuse_batchnorm,
    inverse_density_weights,
    load_torchscript_bytes,
    log_transform,
    lr_factor,
    preprocess,
    preprocess_reference,
    resnet50,
    signed_log,
    signed_log_reference,
    torchscript_bytes,
    train_eke_resnet,
    write_script,
)
from inference.export import main as export_main

torch.set_num_threads(1)

# TorchScript is the project's model format by design (torch.jit.load, never pickle).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*:DeprecationWarning")


def raw_features(n: int, seed: int = 0, dtype: type = np.float64) -> np.ndarray:
    """Physically plausible raw (N, 4) features: positive MKE/slope, signed vorticity."""
    rng = np.random.default_rng(seed)
    mke = np.exp(rng.normal(-6.0, 2.0, n))
    vort = rng.normal(0.0, 1.0, n) * 10.0 ** rng.uniform(-12, -4, n)
    vort[:5] = 0.0
    slope = np.exp(rng.normal(-8.0, 1.5, n))
    rossby = rng.uniform(0.1, 5.0, n)
    return np.stack([mke, vort, slope, rossby], axis=1).astype(dtype)


# ---------------------------------------------------------------- preprocessing


def test_signed_log_zero_sign_symmetry_and_values() -> None:
    x = torch.tensor([0.0, 1e-10, -1e-10, 1.0, -1.0, 2.5e-5], dtype=torch.float64)
    y = signed_log(x)
    assert y[0].item() == 0.0
    assert torch.equal(signed_log(-x), -y)
    assert y[3].item() == pytest.approx(SIGNED_LOG_C)
    assert y[1].item() == pytest.approx(np.log(1e-10) + 36.0)
    assert y[2].item() == pytest.approx(-(np.log(1e-10) + 36.0))
    assert torch.isfinite(y).all()
    ref = signed_log_reference(x.numpy())
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12)
    assert signed_log_reference(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    # monotone on the positive and negative domain (injective away from 0 for |x| > e^-36)
    pos = torch.logspace(-15, 3, 50, dtype=torch.float64)
    assert (torch.diff(signed_log(pos)) > 0).all()
    assert (torch.diff(signed_log(-pos)) < 0).all()


@pytest.mark.parametrize(
    ("np_dtype", "torch_dtype", "rtol", "atol"),
    [
        (np.float32, torch.float32, 1e-5, 1e-5),
        (np.float64, torch.float64, 1e-12, 1e-12),
    ],
)
def test_preprocess_scripted_matches_reference(
    np_dtype: type, torch_dtype: torch.dtype, rtol: float, atol: float
) -> None:
    raw = raw_features(257, dtype=np_dtype)
    means, stds = fit_standardization(raw)
    ref = preprocess_reference(raw, means, stds)
    assert ref.dtype == np_dtype
    f = torch.from_numpy(raw)
    m = torch.from_numpy(means)
    s = torch.from_numpy(stds)
    scripted_fn = torch.jit.script(preprocess)
    cu = torch.jit.CompilationUnit(EKE_PREPROCESS_SCRIPT)
    for fn in (preprocess, scripted_fn, cu.preprocess):
        out = fn(f, m, s)
        assert out.dtype == torch_dtype and out.shape == (257, 4)
        np.testing.assert_allclose(out.numpy(), ref, rtol=rtol, atol=atol)
    # zero vorticity -> f_p = 0 -> exactly -mean/std after standardization
    out = cu.preprocess(f, m, s)
    expected = torch.tensor(-means[1] / stds[1], dtype=torch_dtype)
    torch.testing.assert_close(out[:5, 1], expected.expand(5), rtol=rtol, atol=atol)


def test_preprocess_as_export_program_and_onnx_matches_reference() -> None:
    """The EKE preprocessing shipped without TorchScript (inference.eke_preprocess_models): the
    torch.export program and the ONNX model equal the numpy and torch functions on float32,
    for any number of rows (dim 0 dynamic in both), zero vorticity included."""
    ort = pytest.importorskip("onnxruntime")
    from inference.eke_preprocess_models import eke_preprocess_onnx, eke_preprocess_program

    program = torch.export.load(io.BytesIO(eke_preprocess_program())).module()
    session = ort.InferenceSession(eke_preprocess_onnx(), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["rows", 4], [4], [4]]
    for n in (1, 257, 3000):
        raw = raw_features(n, seed=n, dtype=np.float32)
        means, stds = (v.astype(np.float32) for v in fit_standardization(raw))
        ref = preprocess_reference(raw, means, stds)
        eager = preprocess(*map(torch.from_numpy, (raw, means, stds))).numpy()
        served_pt2 = program(*map(torch.from_numpy, (raw, means, stds))).numpy()
        (served_onnx,) = session.run(None, {"x": raw, "means": means, "stds": stds})
        for out in (served_pt2, served_onnx):
            assert out.shape == (n, 4) and out.dtype == np.float32
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(out, eager, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 example rows"):
        eke_preprocess_program(1)


def test_log_transform_columns_and_standardization_fit() -> None:
    raw = raw_features(500)
    lt = log_transform(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(lt[:, 0], np.log(raw[:, 0]))
    np.testing.assert_allclose(lt[:, 2], np.log(raw[:, 2]))
    np.testing.assert_array_equal(lt[:, 3], raw[:, 3])
    means, stds = fit_standardization(raw)
    assert means.shape == (4,) and stds.shape == (4,)
    z = preprocess_reference(raw, means, stds)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-10)
    # a constant column gets std 1, not a division by zero
    const = raw.copy()
    const[:, 3] = 2.0
    _, s2 = fit_standardization(const)
    assert s2[3] == 1.0


def test_preprocess_script_on_written_file(tmp_path: Path) -> None:
    p = write_script(tmp_path / "pp.txt", EKE_PREPROCESS_SCRIPT)
    cu = compile_script(p.read_text())
    raw = torch.from_numpy(raw_features(10))
    means, stds = (
        torch.zeros(4, dtype=torch.float64),
        torch.ones(4, dtype=torch.float64),
    )
    torch.testing.assert_close(cu.preprocess(raw, means, stds), log_transform(raw))
    with pytest.raises(RuntimeError):
        write_script(tmp_path / "bad.txt", "def broken(x: Tensor) -> Tensor:\n    return y\n")
    assert not (tmp_path / "bad.txt").exists()


# ---------------------------------------------------------------- EKEResNet


def test_eke_resnet_architecture_shapes() -> None:
    torch.manual_seed(0)
    model = EKEResNet().eval()
    shapes: dict[str, tuple[int, ...]] = {}
    model.lift2.register_forward_hook(lambda m, i, o: shapes.__setitem__("lift", tuple(o.shape)))
    with torch.no_grad():
        out = model(torch.randn(6, 4))
    assert out.shape == (6, 1)
    assert shapes["lift"][2:] == (7, 7)
    assert len(model.blocks) == 3
    convt = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convt) == 2
    grouped = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(grouped) == 3
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 2 and linear[-1].out_features == 1
    assert 5_000 < count_parameters(model) < 200_000


def test_eke_resnet_script_and_trace_match_eager() -> None:
    torch.manual_seed(1)
    model = EKEResNet().eval()
    scripted = torch.jit.script(model)
    traced = torch.jit.trace(model, torch.randn(8, 4))
    x = torch.randn(50, 4)  # batch size different from the trace example
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(scripted(x), ref)
        torch.testing.assert_close(traced(x), ref)
        # rows are independent in eval mode: batching must not mix points
        torch.testing.assert_close(scripted(x[:7]), ref[:7])


def test_lift_matmul_equals_transposed_convolution() -> None:
    torch.manual_seed(2)
    model = EKEResNet().eval()
    x = torch.randn(10, 4)
    with torch.no_grad():
        ref = model.lift1(x.reshape(10, 4, 1, 1))  # the real ConvTranspose2d kernel
        w = model.lift1.weight
        mm = torch.mm(x, w.flatten(1)).reshape(-1, w.size(1), 4, 4)
    assert ref.shape == (10, model.lift1.out_channels, 4, 4)
    torch.testing.assert_close(mm, ref)


def _with_nontrivial_batchnorm(seed: int) -> EKEResNet:
    torch.manual_seed(seed)
    model = EKEResNet().train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, 4) * 2.0 + 1.0)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_fuse_batchnorm_preserves_outputs() -> None:
    model = _with_nontrivial_batchnorm(4)
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original untouched
    x = torch.randn(40, 4)
    with torch.no_grad():
        ref = model(x)
        assert ref.std() > 0
        torch.testing.assert_close(fused(x), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(fused)(x), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.jit.trace(fused, x[:3])(x), ref, rtol=1e-4, atol=1e-5)


def test_training_constants_match_paper() -> None:
    assert EKE_LEARNING_RATE == 4e-3
    assert EKE_PEAK_EPOCH == 5 and EKE_EPOCHS == 100
    assert EKE_WEIGHT_DECAY == 2e-4
    assert EKE_BATCH_SIZE == 512
    assert EKE_SAMPLE_FRACTION == 0.1
    cfg = EKETrainingConfig()
    assert (cfg.lr, cfg.peak_epoch, cfg.epochs, cfg.weight_decay) == (
        4e-3,
        5,
        100,
        2e-4,
    )


def test_lr_schedule_peaks_at_fifth_epoch() -> None:
    cfg = EKETrainingConfig()
    factors = [lr_factor(e, cfg) for e in range(cfg.epochs)]
    assert max(factors) == 1.0
    assert factors.index(1.0) == 4  # 0-based epoch 4 is the fifth epoch
    assert all(a < b for a, b in itertools.pairwise(factors[:5]))
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
    assert factors[-1] < factors[4]
    assert len(set(factors[4:])) <= 1 + cfg.epochs // cfg.decay_every  # step-wise


def test_inverse_density_weights_favour_tails() -> None:
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0.0, 0.1, 990), np.linspace(3.0, 4.0, 10)])
    w = inverse_density_weights(y, bins=20)
    assert w.shape == (1000,)
    assert torch.all(w > 0)
    assert float(w.sum()) == pytest.approx(1.0)
    assert float(w[990:].mean()) > 10 * float(w[:990].mean())


def test_train_eke_resnet_reduces_loss() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(384, 4)).astype(np.float32)
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.3 * x[:, 3]
    cfg = EKETrainingConfig(batch_size=32, sample_fraction=0.5, peak_epoch=2, decay_every=4)
    torch.manual_seed(0)
    before = EKEResNet().eval()
    with torch.no_grad():
        mse0 = float(((before(torch.from_numpy(x)).squeeze(1) - torch.from_numpy(y)) ** 2).mean())
    model, history = train_eke_resnet(x, y, epochs=8, config=cfg, seed=0)
    assert len(history) == 8
    assert all(np.isfinite(history))
    assert history[-1] < 0.5 * history[0]
    assert not model.training
    with torch.no_grad():
        mse1 = float(((model(torch.from_numpy(x)).squeeze(1) - torch.from_numpy(y)) ** 2).mean())
    assert mse1 < 0.5 * min(mse0, float(y.var()))
    with pytest.raises(ValueError):
        train_eke_resnet(x, y[:10], epochs=1, config=cfg)


# ---------------------------------------------------------------- ResNet-50 + pre_process_3ch


def test_pre_process_3ch_uint8_and_float() -> None:
    cu = compile_script(PRE_PROCESS_3CH_SCRIPT)
    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (5, 6, 3), dtype=torch.uint8, generator=gen)
    out = cu.pre_process_3ch(img)
    assert out.shape == (1, 3, 5, 6) and out.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (img.float().div(255).permute(2, 0, 1).unsqueeze(0) - mean) / std
    torch.testing.assert_close(out, expected)
    assert out[0, 1, 2, 3].item() == pytest.approx(
        (img[2, 3, 1].item() / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1], rel=1e-5
    )
    # float in [0, 1], float in 0..255 and float64 all give the same result
    torch.testing.assert_close(cu.pre_process_3ch(img.float() / 255), expected)
    torch.testing.assert_close(cu.pre_process_3ch(img.float()), expected)
    torch.testing.assert_close(cu.pre_process_3ch(img.double() / 255), expected)
    batch = torch.stack([img, img.flip(0)])
    out_b = cu.pre_process_3ch(batch)
    assert out_b.shape == (2, 3, 5, 6)
    torch.testing.assert_close(out_b[:1], expected)
    with pytest.raises(torch.jit.Error, match="pre_process_3ch expects"):
        cu.pre_process_3ch(torch.zeros(5, 6, 4))


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    return resnet50(seed=0)


def test_resnet50_forward_and_script(resnet: torch.nn.Module) -> None:
    assert count_parameters(resnet) == 25_557_032  # same as torchvision's resnet50
    assert not resnet.training
    cu = compile_script(PRE_PROCESS_3CH_SCRIPT)
    img = torch.randint(0, 256, (224, 224, 3), dtype=torch.uint8)
    x = cu.pre_process_3ch(img)
    scripted = torch.jit.script(resnet)
    with torch.no_grad():
        out = resnet(x)
        assert out.shape == (1, 1000) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.std() > 0
        torch.testing.assert_close(scripted(x), out)


# ---------------------------------------------------------------- export


def test_export_eke_resnet_roundtrip(tmp_path: Path) -> None:
    path = export_eke_resnet(tmp_path / "sub" / "eke.pt", seed=3)
    assert path.is_file()
    loaded = torch.jit.load(str(path))
    torch.manual_seed(3)
    eager = EKEResNet().eval()
    x = torch.randn(20, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), eager(x))
    # a trained model (non-trivial BatchNorm statistics) exports fused or not
    trained = _with_nontrivial_batchnorm(5)
    with torch.no_grad():
        ref = trained(x)
        for fuse in (True, False):
            p2 = export_eke_resnet(tmp_path / f"trained_{fuse}.pt", model=trained, fuse=fuse)
            torch.testing.assert_close(torch.jit.load(str(p2))(x), ref, rtol=1e-4, atol=1e-5)


def test_torchscript_bytes_roundtrip() -> None:
    torch.manual_seed(0)
    model = EKEResNet().eval()
    x = torch.randn(16, 4)
    data = torchscript_bytes(model)
    assert isinstance(data, bytes) and data[:2] == b"PK"  # zip archive
    traced = torchscript_bytes(model, torch.randn(4, 4))
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(load_torchscript_bytes(data)(x), ref)
        torch.testing.assert_close(torch.jit.load(io.BytesIO(traced))(x), ref)
        torch.testing.assert_close(load_torchscript_bytes(data, map_location="cpu")(x), ref)


def test_export_cli_writes_all_artifacts(tmp_path: Path, resnet: torch.nn.Module) -> None:
    out = tmp_path / "models"
    assert export_main(["--out", str(out), "--seed", "0"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "eke_preprocess.txt",
        "eke_resnet.pt",
        "pre_process_3ch.txt",
        "resnet50.pt",
    ]
    assert (out / "eke_preprocess.txt").read_text() == EKE_PREPROCESS_SCRIPT
    assert (out / "pre_process_3ch.txt").read_text() == PRE_PROCESS_3CH_SCRIPT
    loaded = torch.jit.load(str(out / "resnet50.pt"))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), resnet(x))
    eke = torch.jit.load(str(out / "eke_resnet.pt"))
    with torch.no_grad():
        xe = torch.randn(9, 4)
        torch.manual_seed(0)
        torch.testing.assert_close(eke(xe), EKEResNet().eval()(xe))
